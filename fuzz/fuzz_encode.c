/*
 * fuzz_encode.c - libFuzzer target: parameter encoding (src/lparam.c over
 * src/lvalue.c), Lua values to what pq_query sends.
 *
 * Input: byte 0, when not 0, lets only that many allocations succeed while
 * encoding (Lua then raises out of memory halfway, and nothing may leak:
 * LeakSanitizer); the rest is a little program that builds the parameters
 * on the Lua stack (see build). lparam_encode runs protected and
 * must either raise ("bad argument #n to 'query' (parameter k: ...)", or
 * out of memory) or fill a set where every value is what its Lua value
 * says: NULL, true/false, number text that reads back as the same number,
 * the string itself (never with a NUL), bytea bytes with their length, and
 * for a table an array literal that the decoder reads back as the same
 * elements whenever the table is regular (rectangular, no empty sub-array).
 */
#define FUZZ_LUA
#include "fuzz.h"

#include <math.h>
#include <string.h>

#include "arraytext.h"
#include "lparam.h"
#include "lvalue.h"

#define MAX_VALUES 40

typedef struct program {
    const uint8_t *p, *end;
} program;

static int next_byte(program *pg)
{
    return pg->p < pg->end ? *pg->p++ : 0;
}

/* A length-prefixed string of the program, pushed. */
static void push_bytes(lua_State *L, program *pg)
{
    size_t n = (size_t)next_byte(pg);
    if (n > (size_t)(pg->end - pg->p))
        n = (size_t)(pg->end - pg->p);
    lua_pushlstring(L, (const char *)pg->p, n);
    pg->p += n;
}

static void push_marker(lua_State *L)
{
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    luaL_setmetatable(L, LBYTEA_MT);
}

/* Build values from the program, each op a byte: push nil, a boolean, an
 * integer, a float, a string, pgpool.null, a bytea marker (of a string, or
 * of a number: refused), a new table, a function (refused); or append the
 * top value to the table below it, or store it there under a string key
 * (the table is then no sequence). */
static void build(lua_State *L, program *pg, int base)
{
    while (pg->p < pg->end) {
        int op = next_byte(pg) % 12, top = lua_gettop(L);
        uint64_t bits = 0;
        double d;
        int i;

        if (top - base >= MAX_VALUES && op != 8 && op != 9)
            continue;
        switch (op) {
        case 0: lua_pushnil(L); break;
        case 1: lua_pushboolean(L, next_byte(pg) & 1); break;
        case 2:
        case 3:
            for (i = 0; i < 8; i++)
                bits |= (uint64_t)next_byte(pg) << (8 * i);
            if (op == 2) {
                lua_pushinteger(L, (lua_Integer)bits);
            } else {
                memcpy(&d, &bits, sizeof d);
                lua_pushnumber(L, d);
            }
            break;
        case 4: push_bytes(L, pg); break;
        case 5: lua_pushlightuserdata(L, NULL); break;
        case 6: push_bytes(L, pg); push_marker(L); break;
        case 7: lua_newtable(L); break;
        case 8:
        case 9:
            if (top - base < 2 || !lua_istable(L, -2) ||
                lua_getmetatable(L, -2)) {
                if (top - base >= 2 && lua_istable(L, -2))
                    lua_pop(L, 1);     /* the marker's metatable */
                break;
            }
            if (op == 8)
                lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
            else
                lua_setfield(L, -2, "key");
            break;
        case 10: lua_pushnumber(L, 1234567.5); push_marker(L); break;
        default: lua_pushcfunction(L, lua_error); break;
        }
    }
}

/* Whether the array at idx is what an array literal can hold, the rules
 * of arraytext_read: at most ARRAYTEXT_MAX_DIMS deep; at each depth, every
 * array of one length (sizes) and all arrays or all elements (nested); no
 * empty array but the whole. */
static int regular_at(lua_State *L, int idx, int depth, long sizes[],
                      int nested[])
{
    long n = (long)lua_rawlen(L, idx), i;
    int ok = 1;

    if (depth >= ARRAYTEXT_MAX_DIMS || (n == 0 && depth > 0))
        return 0;
    if (sizes[depth] < 0)
        sizes[depth] = n;
    if (sizes[depth] != n)
        return 0;
    for (i = 1; ok && i <= n; i++) {
        int is_table;
        lua_rawgeti(L, idx, (lua_Integer)i);
        is_table = lua_istable(L, -1) && !lvalue_is_bytea(L, -1);
        if (nested[depth] < 0)
            nested[depth] = is_table;
        ok = nested[depth] == is_table &&
             (!is_table || regular_at(L, lua_gettop(L), depth + 1, sizes,
                                      nested));
        lua_pop(L, 1);
    }
    return ok;
}

static int regular(lua_State *L, int idx)
{
    long sizes[ARRAYTEXT_MAX_DIMS];
    int nested[ARRAYTEXT_MAX_DIMS], i;
    for (i = 0; i < ARRAYTEXT_MAX_DIMS; i++)
        sizes[i] = nested[i] = -1;
    return regular_at(L, idx, 0, sizes, nested);
}

/* The decoded literal at idx (text[]) against the Lua array at orig. */
static void same_elements(lua_State *L, int orig, int decoded)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = (size_t)lua_rawlen(L, orig), i, len, blen;
    char num[40];

    CHECK(lua_istable(L, decoded) && (size_t)lua_rawlen(L, decoded) == n);
    for (i = 1; i <= n; i++) {
        const char *s, *b;
        int o, d;
        lua_rawgeti(L, orig, (lua_Integer)i);
        lua_rawgeti(L, decoded, (lua_Integer)i);
        o = lua_gettop(L) - 1;
        d = o + 1;
        switch (lua_type(L, o)) {
        case LUA_TLIGHTUSERDATA:
            CHECK(lua_type(L, d) == LUA_TLIGHTUSERDATA);
            break;
        case LUA_TBOOLEAN:
            CHECK(strcmp(lua_tostring(L, d), lua_toboolean(L, o) ? "t" : "f")
                  == 0);
            break;
        case LUA_TNUMBER:
            lvalue_format_number(L, o, num);
            CHECK(strcmp(lua_tostring(L, d), num) == 0);
            break;
        case LUA_TSTRING:
            s = lua_tolstring(L, d, &len);
            CHECK(len == lua_rawlen(L, o) &&
                  memcmp(s, lua_tostring(L, o), len) == 0);
            break;
        default:
            if (lvalue_is_bytea(L, o)) {
                lua_rawgeti(L, o, 1);
                b = lua_tolstring(L, -1, &blen);
                s = lua_tolstring(L, d, &len);
                CHECK(len == 2 + 2 * blen && memcmp(s, "\\x", 2) == 0);
                for (len = 0; len < blen; len++)
                    CHECK(s[2 + 2 * len] == hex[(unsigned char)b[len] >> 4] &&
                          s[3 + 2 * len] == hex[(unsigned char)b[len] & 15]);
                lua_pop(L, 1);
            } else {
                same_elements(L, o, d);
            }
        }
        lua_pop(L, 2);
    }
}

/* Each encoded value against its Lua value at first + i. */
static void check_set(lua_State *L, int first, const lparam_set *ps)
{
    int i;
    for (i = 0; i < ps->n; i++) {
        int idx = first + i;
        const char *v = ps->pq.values[i];
        size_t len;
        double d;

        switch (lua_type(L, idx)) {
        case LUA_TNIL:
        case LUA_TLIGHTUSERDATA:
            CHECK(v == NULL);
            break;
        case LUA_TBOOLEAN:
            CHECK(strcmp(v, lua_toboolean(L, idx) ? "true" : "false") == 0);
            break;
        case LUA_TNUMBER:
            d = lua_tonumber(L, idx);
            if (lua_isinteger(L, idx))
                CHECK(strtoll(v, NULL, 10) == lua_tointeger(L, idx));
            else if (isnan(d))
                CHECK(strcmp(v, "NaN") == 0);
            else if (isinf(d))
                CHECK(strcmp(v, d > 0 ? "Infinity" : "-Infinity") == 0);
            else
                CHECK(strtod(v, NULL) == d &&
                      !signbit(strtod(v, NULL)) == !signbit(d));
            break;
        case LUA_TSTRING:
            CHECK(v == lua_tolstring(L, idx, &len) && strlen(v) == len);
            break;
        default:
            if (lvalue_is_bytea(L, idx)) {
                lua_rawgeti(L, idx, 1);
                CHECK(v == lua_tolstring(L, -1, &len));
                CHECK(ps->pq.formats[i] == 1 && ps->pq.types[i] == 17 &&
                      (size_t)ps->pq.lengths[i] == len);
                lua_pop(L, 1);
            } else if (regular(L, idx)) {
                CHECK(lvalue_push_array(L, v, strlen(v), 25));
                same_elements(L, idx, lua_gettop(L));
                lua_pop(L, 1);
            }
        }
    }
}

/* Build the parameters (no allocation limit yet), then encode them. */
static int encode(lua_State *L)
{
    program *pg = (program *)lua_touserdata(L, 1);
    int first = 2, n;
    lparam_who who;
    lparam_set ps;

    build(L, pg, 1);
    n = lua_gettop(L) - 1;
    who.name = "query";
    who.statement = 0;
    who.arg = 0;
    fuzz_begin(L);
    lparam_encode(L, first, n, &ps, &who);
    fuzz_end();
    check_set(L, first, &ps);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fuzz_state();
    program pg;
    int status;

    if (size < 1)
        return 0;
    pg.p = data + 1;
    pg.end = data + size;
    status = fuzz_pcall(L, encode, &pg, data[0]);
    if (status == LUA_ERRRUN) {
        const char *msg = lua_tostring(L, -1);
        CHECK(msg && (strncmp(msg, "bad argument #", 14) == 0 ||
                      strstr(msg, "stack overflow") ||
                      strstr(msg, "too many")));
    } else {
        CHECK(status == LUA_OK || status == LUA_ERRMEM);
    }
    fuzz_settle(L);
    return 0;
}
