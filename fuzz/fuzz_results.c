/*
 * fuzz_results.c - libFuzzer target: result building (src/lresult.c over
 * src/lvalue.c and the accessors of src/pq.c), a PGresult to the Lua table
 * of rows.
 *
 * Input: byte 0, when not 0, lets only that many allocations succeed
 * (Lua then raises out of memory halfway); byte 1 the column count (1..8);
 * then per column a type pick (as fuzz_decode.c's); then rows of length-prefixed values (255: NULL). The
 * PGresult is made with libpq's own constructors, as the server's would be
 * (this harness is test code: it knows that a pq_result is a PGresult).
 * lresult_push must push the table or raise (a malformed value, out of
 * memory), and free the PGresult either way: LeakSanitizer would report
 * it, and the Lua values built so far are Lua's to collect.
 */
#define FUZZ_LUA
#include "fuzz.h"

#include <string.h>

#include <libpq-fe.h>

#include "lcommon.h"
#include "lresult.h"

#define MAX_COLS 8
#define MAX_ROWS 16

typedef struct input {
    PGresult *res;
    int rows, cols;
} input;

static int push(lua_State *L)
{
    input *in = (input *)fuzz_begin(L);
    int top = lua_gettop(L);
    PGresult *res = in->res;

    in->res = NULL;      /* lresult_push's from here: it frees it, always */
    lresult_push(L, (pq_result *)res);
    fuzz_end();
    CHECK(lua_gettop(L) == top + 1 && lua_istable(L, -1));
    CHECK((int)lua_rawlen(L, -1) == in->rows);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned types[64];
    static int n_types;
    lua_State *L = fuzz_state();
    const uint8_t *p = data, *end = data + size;
    PGresAttDesc attrs[MAX_COLS];
    char names[MAX_COLS][8];
    input in;
    int limit, col, status;

    if (size < 3)
        return 0;
    if (!n_types) {
        lcommon_open(L);
        lresult_open(L);
        n_types = fuzz_types(types, 64);
    }
    limit = *p++;
    in.cols = 1 + *p++ % MAX_COLS;
    memset(attrs, 0, sizeof attrs);
    for (col = 0; col < in.cols; col++) {
        snprintf(names[col], sizeof names[col], "c%d", col);
        attrs[col].name = names[col];
        attrs[col].typid = types[(p < end ? *p++ : 0) % n_types];
        attrs[col].typlen = -1;
        attrs[col].atttypmod = -1;
    }
    in.res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    CHECK(in.res && PQsetResultAttrs(in.res, in.cols, attrs));
    for (in.rows = 0; p < end && in.rows < MAX_ROWS; in.rows++) {
        for (col = 0; col < in.cols; col++) {
            int len = p < end ? *p++ : 255;
            if (len == 255) {
                CHECK(PQsetvalue(in.res, in.rows, col, NULL, -1));
                continue;
            }
            if (len > end - p)
                len = (int)(end - p);
            CHECK(PQsetvalue(in.res, in.rows, col, (char *)(uintptr_t)p, len));
            p += len;
        }
    }
    status = fuzz_pcall(L, push, &in, limit);
    if (in.res) {        /* raised before lresult_push was called */
        CHECK(status != LUA_OK);
        PQclear(in.res);
    }
    fuzz_settle(L);
    return 0;
}
