/*
 * lresult.c - results and errors to Lua.
 *
 * A result is an array of rows, each row a table column name -> value (NULL
 * as pgpool.null, the NULL light userdata), plus res.columns, res.affected
 * and res.command. Only plain tables, strings, numbers, booleans and the
 * null sentinel are produced, so results cross ngx.run_worker_thread.
 *
 * Values arrive in text format and are converted by type OID:
 * bool -> boolean; int2/int4/oid -> integer; int8 -> integer (5.3+), or on
 * 5.1/LuaJIT a number when exact (|v| <= 2^53) else a string; float4/float8
 * -> number; bytea -> raw bytes; arrays -> Lua arrays; everything else, and
 * numeric, -> string.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lpgpool.h"

enum {
    OID_BOOL = 16, OID_BYTEA = 17, OID_INT8 = 20, OID_INT2 = 21,
    OID_INT4 = 23, OID_OID = 26, OID_FLOAT4 = 700, OID_FLOAT8 = 701
};

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode bytea text output: hex ("\x4142") or the old escape format. */
static void push_bytea(lua_State *L, const char *v, size_t len)
{
    char *out = malloc(len + 1);
    size_t i = 0, n = 0;

    if (!out) {
        luaL_error(L, "pgpool: out of memory");
        return;
    }
    if (len >= 2 && v[0] == '\\' && v[1] == 'x') {
        for (i = 2; i + 1 < len; i += 2) {
            int hi = hex_digit((unsigned char)v[i]);
            int lo = hex_digit((unsigned char)v[i + 1]);
            out[n++] = (char)((hi << 4) | lo);
        }
    } else {
        while (i < len) {
            if (v[i] == '\\' && i + 1 < len && v[i + 1] == '\\') {
                out[n++] = '\\';
                i += 2;
            } else if (v[i] == '\\' && i + 3 < len) {
                out[n++] = (char)(((v[i + 1] - '0') << 6) |
                                  ((v[i + 2] - '0') << 3) | (v[i + 3] - '0'));
                i += 4;
            } else {
                out[n++] = v[i++];
            }
        }
    }
    lua_pushlstring(L, out, n);
    free(out);
}

/* Decimal text as the server writes integers ("-123"); stops at the first
 * non-digit. Faster than strtoll on the hot path, and int8's -2^63 is
 * handled by accumulating negatively. */
static long long parse_integer(const char *v)
{
    long long n = 0;
    int negative = *v == '-';

    if (negative || *v == '+')
        v++;
    while (*v >= '0' && *v <= '9')
        n = n * 10 - (*v++ - '0');
    return negative ? n : -n;
}

static void push_int8(lua_State *L, const char *v, size_t len)
{
    long long n = parse_integer(v);
#if COMPAT_INT64
    (void)len;
    lua_pushinteger(L, (lua_Integer)n);
#else
    /* Doubles hold every integer up to 2^53 exactly; beyond, keep the text. */
    if (n <= 9007199254740992LL && n >= -9007199254740992LL)
        lua_pushnumber(L, (lua_Number)n);
    else
        lua_pushlstring(L, v, len);
#endif
}

int lresult_push_value(lua_State *L, unsigned oid, const char *v, size_t len)
{
    unsigned elem;

    switch (oid) {
    case OID_BOOL:
        lua_pushboolean(L, v[0] == 't');
        return 1;
    case OID_INT2:
    case OID_INT4:
    case OID_OID:
        lua_pushinteger(L, (lua_Integer)parse_integer(v));
        return 1;
    case OID_INT8:
        push_int8(L, v, len);
        return 1;
    case OID_FLOAT4:
    case OID_FLOAT8:
        /* strtod reads "Infinity", "-Infinity" and "NaN" too. */
        lua_pushnumber(L, (lua_Number)strtod(v, NULL));
        return 1;
    case OID_BYTEA:
        push_bytea(L, v, len);
        return 1;
    default:
        elem = larray_element_type(oid);
        if (elem)
            return larray_push(L, v, len, elem);
        lua_pushlstring(L, v, len);
        return 1;
    }
}

/* Push the result key kept in upvalue upv (literal when called without the
 * module's upvalues). */
static void push_key(lua_State *L, int upv, const char *literal)
{
    lua_pushvalue(L, lua_upvalueindex(upv));
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_pushstring(L, literal);
    }
}

/* The command tag without its counts: "INSERT 0 1" -> "INSERT". */
static void push_command(lua_State *L, const char *tag)
{
    size_t end = strlen(tag);
    for (;;) {
        size_t start = end;
        while (start > 0 && tag[start - 1] >= '0' && tag[start - 1] <= '9')
            start--;
        if (start == end || start == 0 || tag[start - 1] != ' ')
            break;
        end = start - 1;
    }
    lua_pushlstring(L, tag, end);
}

void lresult_push(lua_State *L, pq_result *r)
{
    int rows = pq_result_rows(r), cols = pq_result_cols(r);
    int res, names, row, col;
    unsigned types_inline[32], *types = types_inline;
    const char *affected;

    if (cols > 32) {
        types = malloc(sizeof *types * (size_t)cols);
        if (!types) {
            pq_result_free(r);
            luaL_error(L, "pgpool: out of memory");
            return;
        }
    }
    if (!lua_checkstack(L, cols + 8)) {
        if (types != types_inline)
            free(types);
        pq_result_free(r);
        luaL_error(L, "pgpool: too many columns");
        return;
    }
    lua_createtable(L, rows, 3);
    res = lua_gettop(L);
    names = res + 1;
    for (col = 0; col < cols; col++) {
        lua_pushstring(L, pq_result_colname(r, col));
        types[col] = pq_result_coltype(r, col);
    }
    for (row = 0; row < rows; row++) {
        lua_createtable(L, 0, cols);
        for (col = 0; col < cols; col++) {
            size_t len = 0;
            const char *v = pq_result_value(r, row, col, &len);
            lua_pushvalue(L, names + col);
            if (!v) {
                lua_pushlightuserdata(L, NULL);
            } else if (!lresult_push_value(L, types[col], v, len)) {
                if (types != types_inline)
                    free(types);
                pq_result_free(r);
                luaL_error(L, "pgpool: malformed array value in column %d",
                           col + 1);
                return;
            }
            lua_rawset(L, -3);
        }
        lua_rawseti(L, res, row + 1);
    }
    push_key(L, LUPV_KEY_COLUMNS, "columns");
    lua_createtable(L, cols, 0);
    for (col = 0; col < cols; col++) {
        lua_pushvalue(L, names + col);
        lua_rawseti(L, -2, col + 1);
    }
    lua_rawset(L, res);
    lua_settop(L, res);

    affected = pq_result_affected(r);
    if (affected && *affected) {
        push_key(L, LUPV_KEY_AFFECTED, "affected");
        lua_pushinteger(L, (lua_Integer)parse_integer(affected));
        lua_rawset(L, res);
    }
    push_key(L, LUPV_KEY_COMMAND, "command");
    push_command(L, pq_result_command(r));
    lua_rawset(L, res);
    if (types != types_inline)
        free(types);
    pq_result_free(r);
}

/* The server's error fields as a table. */
static void push_info(lua_State *L, const pq_error *err)
{
    int i;
    lua_createtable(L, 0, 4);
    for (i = 0; i < PQ_FIELD_COUNT; i++) {
        if (!err->fields[i][0])
            continue;
        if (i == PQ_FIELD_POSITION)
            lua_pushinteger(L, (lua_Integer)atoi(err->fields[i]));
        else
            lua_pushstring(L, err->fields[i]);
        lua_setfield(L, -2, pq_field_names[i]);
    }
}

int lresult_push_error(lua_State *L, const pq_error *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err->message[0] ? err->message : err->code);
    lua_pushstring(L, err->code);
    push_info(L, err);
    return 4;
}

void lresult_push_error_table(lua_State *L, const pq_error *err)
{
    lua_createtable(L, 0, 3);
    lua_pushstring(L, err->message[0] ? err->message : err->code);
    lua_setfield(L, -2, "error");
    lua_pushstring(L, err->code);
    lua_setfield(L, -2, "code");
    push_info(L, err);
    lua_setfield(L, -2, "info");
}
