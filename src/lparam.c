/*
 * lparam.c - Lua values to statement parameters ($1..$n), sent separately
 * from the SQL text, never interpolated.
 *
 *   nil, pgpool.null      -> NULL
 *   boolean               -> "true" / "false"
 *   integer               -> decimal text
 *   float                 -> shortest text that reads back exactly;
 *                            Infinity, -Infinity, NaN
 *   string                -> text (a NUL byte raises: use pgpool.bytea)
 *   pgpool.bytea(s)       -> binary bytea (format 1, type bytea)
 *   array table           -> array literal (larray.c)
 *   anything else         -> raises, naming the parameter and its type
 *
 * Pointers in the set point into Lua strings that stay on the stack (or in
 * their parent table) until the statement has run.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpgpool.h"

#define OID_BYTEA 17

/* Decimal text of an integer, without printf (the hot path). */
static void format_integer(long long v, char buf[40])
{
    char digits[24];
    int n = 0, i = 0;
    /* Work with the negative value: it also holds the minimum integer. */
    long long neg = v < 0 ? v : -v;

    do {
        digits[n++] = (char)('0' - (int)(neg % 10));
        neg /= 10;
    } while (neg);
    if (v < 0)
        buf[i++] = '-';
    while (n)
        buf[i++] = digits[--n];
    buf[i] = '\0';
}

void lparam_format_number(lua_State *L, int idx, char buf[40])
{
    lua_Number d;
    int prec;

#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        format_integer(lua_tointeger(L, idx), buf);
        return;
    }
#endif
    d = lua_tonumber(L, idx);
    if (isnan(d)) {
        strcpy(buf, "NaN");
    } else if (isinf(d)) {
        strcpy(buf, d > 0 ? "Infinity" : "-Infinity");
    } else if (d == floor(d) && fabs(d) < 9e18 && (d != 0 || !signbit(d))) {
        /* Whole numbers in plain digits, as int8 parameters need them
         * (LuaJIT has no integer subtype). */
        format_integer((long long)d, buf);
    } else if (d == floor(d) && fabs(d) < 1e21) {
        snprintf(buf, 40, "%.0f", (double)d);     /* beyond int8; "-0" */
    } else {
        /* 15 digits always read back the same decimal; subnormals have
         * fewer significant digits, so start lower for them. */
        for (prec = fabs(d) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
            snprintf(buf, 40, "%.*g", prec, (double)d);
            if (strtod(buf, NULL) == d)
                break;
        }
    }
}

static int is_bytea(lua_State *L, int idx)
{
    int same = 0;
    if (lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, LBYTEA_MT);
        same = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return same;
}

/* Room for n parameters: inline in ps, or in a userdata left on the stack. */
static void reserve(lua_State *L, int n, lparam_set *ps)
{
    ps->n = n;
    if (n <= LPARAM_INLINE) {
        ps->values = ps->values_inline;
        ps->lengths = ps->lengths_inline;
        ps->formats = ps->formats_inline;
        ps->types = ps->types_inline;
        ps->numbers = ps->numbers_inline;
    } else {
        size_t each = sizeof(char *) + 2 * sizeof(int) + sizeof(unsigned) + 40;
        char *block;
        if (n > 65535)
            luaL_error(L, "pgpool: too many parameters (%d, at most 65535)", n);
        block = (char *)lua_newuserdata(L, each * (size_t)n);
        ps->numbers = (char (*)[40])block;
        ps->values = (const char **)(block + 40 * (size_t)n);
        ps->lengths = (int *)(block + (40 + sizeof(char *)) * (size_t)n);
        ps->formats = ps->lengths + n;
        ps->types = (unsigned *)(ps->formats + n);
    }
}

void lparam_encode(lua_State *L, int first, int n, lparam_set *ps)
{
    int i;

    if (n < 0)
        n = 0;
    reserve(L, n, ps);
    for (i = 0; i < n; i++) {
        int idx = first + i;
        size_t len = 0;
        const char *s;

        ps->lengths[i] = 0;
        ps->formats[i] = 0;
        ps->types[i] = 0;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
            ps->values[i] = NULL;
            break;
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, idx) != NULL)
                luaL_error(L, "pgpool: parameter %d: cannot send a userdata",
                           i + 1);
            ps->values[i] = NULL;
            break;
        case LUA_TBOOLEAN:
            ps->values[i] = lua_toboolean(L, idx) ? "true" : "false";
            break;
        case LUA_TNUMBER:
            lparam_format_number(L, idx, ps->numbers[i]);
            ps->values[i] = ps->numbers[i];
            break;
        case LUA_TSTRING:
            s = lua_tolstring(L, idx, &len);
            if (memchr(s, '\0', len))
                luaL_error(L, "pgpool: parameter %d: string contains a NUL "
                           "byte (send binary data with pgpool.bytea)", i + 1);
            ps->values[i] = s;
            break;
        case LUA_TTABLE:
            if (is_bytea(L, idx)) {
                lua_rawgeti(L, idx, 1);   /* stays alive in the marker */
                s = lua_tolstring(L, -1, &len);
                lua_pop(L, 1);
                if (len > 0x7fffffff)
                    luaL_error(L, "pgpool: parameter %d: bytea too large",
                               i + 1);
                ps->values[i] = s;
                ps->lengths[i] = (int)len;
                ps->formats[i] = 1;
                ps->types[i] = OID_BYTEA;
            } else {
                luaL_checkstack(L, 4, "pgpool: too many array parameters");
                larray_encode(L, idx, i + 1);  /* leaves the literal pushed */
                ps->values[i] = lua_tostring(L, -1);
            }
            break;
        default:
            luaL_error(L, "pgpool: parameter %d: cannot send a %s", i + 1,
                       luaL_typename(L, idx));
        }
    }
    ps->pq.n = n;
    ps->pq.values = ps->values;
    ps->pq.lengths = ps->lengths;
    ps->pq.formats = ps->formats;
    ps->pq.types = ps->types;
}
