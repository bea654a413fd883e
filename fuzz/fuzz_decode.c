/*
 * fuzz_decode.c - libFuzzer target: value decoding (src/lvalue.c), text of
 * a type OID to a Lua value.
 *
 * Input: byte 0 picks the type (each array and scalar type of the codec's
 * tables, text, numeric); byte 1, when not 0, lets only that many
 * allocations succeed (Lua then raises out of memory halfway, and nothing
 * may leak: LeakSanitizer); the rest is the value's text. lvalue_push runs
 * protected and must push one value or, for a malformed value, nothing.
 * An integer type's text decoded to a number must be exactly that integer
 * (an independent strtoll check); anything else must stay its text.
 */
#define FUZZ_LUA
#include "fuzz.h"

#include <errno.h>
#include <string.h>

#include "lvalue.h"

typedef struct input {
    unsigned oid;
    const char *text;
    size_t len;
} input;

/* The text as a whole decimal integer, by strtoll: 1 with *out, else 0. */
static int reference_integer(const char *text, size_t len, long long *out)
{
    char *end;
    if (len == 0 || !(text[0] == '-' || text[0] == '+' ||
                      (text[0] >= '0' && text[0] <= '9')))
        return 0;
    errno = 0;
    *out = strtoll(text, &end, 10);
    return errno == 0 && end == text + len;
}

static int is_integer_type(unsigned oid)
{
    return oid == LVALUE_OID_INT2 || oid == LVALUE_OID_INT4 ||
           oid == LVALUE_OID_INT8 || oid == LVALUE_OID_OID;
}

static int decode(lua_State *L)
{
    const input *in = (const input *)fuzz_begin(L);
    int top = lua_gettop(L);
    int ok = lvalue_push(L, in->oid, in->text, in->len);
    long long expected;
    const char *s;
    size_t len;

    fuzz_end();
    CHECK(ok == 0 || ok == 1);
    CHECK(lua_gettop(L) == top + ok);
    if (!ok || !is_integer_type(in->oid))
        return ok;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        CHECK(lua_isinteger(L, -1));
        CHECK(reference_integer(in->text, in->len, &expected));
        CHECK(lua_tointeger(L, -1) == expected);
    } else {
        CHECK(lua_type(L, -1) == LUA_TSTRING);
        s = lua_tolstring(L, -1, &len);
        CHECK(len == in->len && memcmp(s, in->text, len) == 0);
        CHECK(!reference_integer(in->text, in->len, &expected));
    }
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned types[64];
    static int n_types;
    lua_State *L = fuzz_state();
    char *text;
    input in;

    if (size < 2)
        return 0;
    if (!n_types)
        n_types = fuzz_types(types, 64);
    text = (char *)malloc(size - 1);     /* lvalue_push wants a '\0' */
    CHECK(text);
    memcpy(text, data + 2, size - 2);
    text[size - 2] = '\0';
    in.oid = types[data[0] % n_types];
    in.text = text;
    in.len = size - 2;
    fuzz_pcall(L, decode, &in, data[1]);   /* out of memory is expected */
    fuzz_settle(L);
    free(text);
    return 0;
}
