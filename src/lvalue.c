/*
 * lvalue.c - the value codec: one value at a time, Lua <-> PostgreSQL text.
 *
 * PostgreSQL -> Lua, by type OID (values arrive in text format):
 * bool -> boolean; int2/int4/oid -> integer; int8 -> integer (5.3+), or on
 * 5.1/LuaJIT a number when exact (|v| <= 2^53) else a string; float4/float8
 * -> number; bytea -> raw bytes; arrays of the types in array_types -> Lua
 * arrays (nested for several dimensions, NULL elements as the NULL light
 * userdata); everything else, and numeric, -> string. Only plain tables,
 * strings, numbers, booleans and the null sentinel are produced.
 *
 * The decoder is total: integer text that does not fit (the server's
 * integer types never send any) stays the string it is, never another
 * number; malformed bytea text or array literals make lvalue_push return 0
 * with the stack as it was. It never raises for a value, only when Lua
 * runs out of memory, and then leaks nothing (its scratch space is Lua's).
 *
 * Lua -> PostgreSQL: numbers as text the server reads back exactly; a Lua
 * array (nested for several dimensions) as an array literal, elements
 * always quoted, NULL unquoted. A table that is not a sequence, a NUL byte
 * or an unsupported value is refused with a reason, which the caller
 * raises naming the parameter.
 *
 * Array literals are read and written by arraytext.c; this file decides
 * what each element becomes.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arraytext.h"
#include "lvalue.h"

/* ---- type OIDs --------------------------------------------------------- */

/* OIDs and names as in PostgreSQL's pg_type.dat; spec/hostile_input_spec.lua
 * checks each entry against the server's pg_type. */
static const struct {
    unsigned array, element;
    const char *name;   /* the element's typname */
} array_types[] = {
    { 1000, 16, "bool" },          { 1001, 17, "bytea" },
    { 1002, 18, "char" },          { 1003, 19, "name" },
    { 1005, 21, "int2" },          { 1007, 23, "int4" },
    { 1016, 20, "int8" },          { 1028, 26, "oid" },
    { 1021, 700, "float4" },       { 1022, 701, "float8" },
    { 1231, 1700, "numeric" },     { 1009, 25, "text" },
    { 1015, 1043, "varchar" },     { 1014, 1042, "bpchar" },
    { 2951, 2950, "uuid" },        { 199, 114, "json" },
    { 3807, 3802, "jsonb" },       { 1182, 1082, "date" },
    { 1183, 1083, "time" },        { 1115, 1114, "timestamp" },
    { 1185, 1184, "timestamptz" }, { 1270, 1266, "timetz" },
    { 1187, 1186, "interval" },    { 1041, 869, "inet" },
    { 651, 650, "cidr" },          { 1040, 829, "macaddr" },
    { 1561, 1560, "bit" },         { 1563, 1562, "varbit" },
    { 2201, 1790, "refcursor" },   { 0, 0, NULL },
};

static const struct {
    unsigned oid;
    const char *name;
} scalar_types[] = {
    { LVALUE_OID_BOOL, "bool" },     { LVALUE_OID_BYTEA, "bytea" },
    { LVALUE_OID_INT8, "int8" },     { LVALUE_OID_INT2, "int2" },
    { LVALUE_OID_INT4, "int4" },     { LVALUE_OID_OID, "oid" },
    { LVALUE_OID_FLOAT4, "float4" }, { LVALUE_OID_FLOAT8, "float8" },
    { 0, NULL },
};

int lvalue_type(int i, unsigned *oid, unsigned *element, const char **name)
{
    int arrays = (int)(sizeof array_types / sizeof *array_types) - 1;
    int scalars = (int)(sizeof scalar_types / sizeof *scalar_types) - 1;

    if (i < 0 || i >= arrays + scalars)
        return 0;
    if (i < arrays) {
        *oid = array_types[i].array;
        *element = array_types[i].element;
        *name = array_types[i].name;
    } else {
        *oid = scalar_types[i - arrays].oid;
        *element = 0;
        *name = scalar_types[i - arrays].name;
    }
    return 1;
}

unsigned lvalue_element_type(unsigned array_oid)
{
    int i;
    if (array_oid < 199)   /* every array type above has an OID >= 199 */
        return 0;
    for (i = 0; array_types[i].array; i++)
        if (array_types[i].array == array_oid)
            return array_types[i].element;
    return 0;
}

/* ---- PostgreSQL -> Lua: scalars ---------------------------------------- */

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

#define BYTEA_MALFORMED ((size_t)-1)

/* Decode bytea text output into out, which has room for len bytes: hex
 * ("\x4142", an even number of hex digits) or the escape format ("\\" for
 * a backslash, "\ooo" in octal up to \377, any other byte as is).
 * Returns the decoded length, or BYTEA_MALFORMED. */
static size_t decode_bytea(const char *v, size_t len, char *out)
{
    size_t i = 0, n = 0;

    if (len >= 2 && v[0] == '\\' && v[1] == 'x') {
        if (len % 2)
            return BYTEA_MALFORMED;
        for (i = 2; i < len; i += 2) {
            int hi = hex_digit((unsigned char)v[i]);
            int lo = hex_digit((unsigned char)v[i + 1]);
            if (hi < 0 || lo < 0)
                return BYTEA_MALFORMED;
            out[n++] = (char)((hi << 4) | lo);
        }
        return n;
    }
    while (i < len) {
        if (v[i] != '\\') {
            out[n++] = v[i++];
        } else if (i + 1 < len && v[i + 1] == '\\') {
            out[n++] = '\\';
            i += 2;
        } else if (i + 3 < len && v[i + 1] >= '0' && v[i + 1] <= '3' &&
                   v[i + 2] >= '0' && v[i + 2] <= '7' &&
                   v[i + 3] >= '0' && v[i + 3] <= '7') {
            out[n++] = (char)(((v[i + 1] - '0') << 6) |
                              ((v[i + 2] - '0') << 3) | (v[i + 3] - '0'));
            i += 4;
        } else {
            return BYTEA_MALFORMED;
        }
    }
    return n;
}

/* Push the bytes of bytea text; 0, pushing nothing, when it is malformed.
 * Long values are decoded into a userdata, which the GC frees even when
 * pushing the string raises. */
static int push_bytea(lua_State *L, const char *v, size_t len)
{
    char small[256], *out = small;
    size_t n;

    if (len > sizeof small)
        out = (char *)lua_newuserdata(L, len);
    n = decode_bytea(v, len, out);
    if (n != BYTEA_MALFORMED)
        lua_pushlstring(L, n ? out : "", n);   /* "": nothing was written */
    if (out != small)
        lua_remove(L, n != BYTEA_MALFORMED ? -2 : -1);
    return n != BYTEA_MALFORMED;
}

/* lvalue_parse_integer, inlined where each integer value is decoded. */
static inline int parse_integer(const char *v, size_t len, long long *out)
{
    const char *end = v + len;
    unsigned long long n = 0;
    int negative = 0;

    if (len && (*v == '-' || *v == '+'))
        negative = *v++ == '-';
    if (v == end)
        return 0;
    /* At most 19 digits, leading zeros aside: they cannot overflow the
     * unsigned accumulator (< 2^64). */
    while (end - v > 19 && *v == '0')
        v++;
    if (end - v > 19)
        return 0;
    for (; v < end; v++) {
        unsigned d = (unsigned)(unsigned char)*v - '0';
        if (d > 9)
            return 0;
        n = n * 10 + d;
    }
    if (n > (unsigned long long)LLONG_MAX + (unsigned)negative)
        return 0;
    /* -2^63 has no positive counterpart: negate n - 1, then subtract 1. */
    *out = negative && n ? -(long long)(n - 1) - 1 : (long long)n;
    return 1;
}

int lvalue_parse_integer(const char *v, size_t len, long long *out)
{
    return parse_integer(v, len, out);
}

/* Integer text as a Lua integer (5.3+), or on 5.1/LuaJIT a number when the
 * double holds it exactly (|v| <= 2^53); otherwise, or when the text is not
 * a 64-bit integer, the text itself. */
static void push_integer(lua_State *L, const char *v, size_t len)
{
    long long n;

    if (!parse_integer(v, len, &n)) {
        lua_pushlstring(L, v, len);
        return;
    }
#if COMPAT_INT64
    lua_pushinteger(L, (lua_Integer)n);
#else
    if (n <= 9007199254740992LL && n >= -9007199254740992LL)
        lua_pushnumber(L, (lua_Number)n);
    else
        lua_pushlstring(L, v, len);
#endif
}

int lvalue_push(lua_State *L, unsigned oid, const char *v, size_t len)
{
    unsigned elem;

    switch (oid) {
    case LVALUE_OID_BOOL:
        lua_pushboolean(L, v[0] == 't');
        return 1;
    case LVALUE_OID_INT2:
    case LVALUE_OID_INT4:
    case LVALUE_OID_OID:
    case LVALUE_OID_INT8:
        push_integer(L, v, len);
        return 1;
    case LVALUE_OID_FLOAT4:
    case LVALUE_OID_FLOAT8:
        /* strtod reads "Infinity", "-Infinity" and "NaN" too. */
        lua_pushnumber(L, (lua_Number)strtod(v, NULL));
        return 1;
    case LVALUE_OID_BYTEA:
        return push_bytea(L, v, len);
    default:
        elem = lvalue_element_type(oid);
        if (elem)
            return lvalue_push_array(L, v, len, elem);
        lua_pushlstring(L, v, len);
        return 1;
    }
}

/* ---- PostgreSQL -> Lua: arrays ----------------------------------------- */

/* The callbacks of arraytext_read build the Lua array on the stack: the
 * table of each open '{' above its parent's. */
typedef struct decoder {
    lua_State *L;
    unsigned elem;
} decoder;

static int decode_open(void *ud, int depth)
{
    lua_State *L = ((decoder *)ud)->L;
    (void)depth;
    /* The table, an element's scratch text and the element itself. */
    if (!lua_checkstack(L, 4))
        return 0;
    lua_newtable(L);
    return 1;
}

/* A sub-array goes into its parent; the outermost array stays pushed. */
static int decode_close(void *ud, int depth, int position)
{
    if (depth > 0)
        lua_rawseti(((decoder *)ud)->L, -2, position);
    return 1;
}

static int decode_element(void *ud, const char *text, size_t len,
                          enum arraytext_kind kind, int position)
{
    decoder *d = (decoder *)ud;
    lua_State *L = d->L;

    if (kind == ARRAYTEXT_NULL) {
        lua_pushlightuserdata(L, NULL);
    } else {
        /* The converters read numbers up to a terminator: give them one,
         * on the C stack when the element is short. */
        char small[64], *value = small;
        int ok;
        if (len >= sizeof small)
            value = (char *)lua_newuserdata(L, len + 1);
        len = arraytext_element_value(text, len, kind, value);
        ok = lvalue_push(L, d->elem, value, len);
        if (value != small) {
            if (ok)
                lua_remove(L, -2);
            else
                lua_pop(L, 1);
        }
        if (!ok)
            return 0;
    }
    lua_rawseti(L, -2, position);
    return 1;
}

int lvalue_push_array(lua_State *L, const char *text, size_t len,
                      unsigned elem_oid)
{
    static const arraytext_reader reader = {
        decode_open, decode_close, decode_element
    };
    decoder d;
    int top = lua_gettop(L);

    d.L = L;
    d.elem = elem_oid;
    if (arraytext_read(text, len, &reader, &d))
        return 1;
    lua_settop(L, top);
    return 0;
}

/* ---- Lua -> PostgreSQL: numbers ---------------------------------------- */

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

void lvalue_format_number(lua_State *L, int idx, char buf[40])
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

/* ---- Lua -> PostgreSQL: arrays ----------------------------------------- */

int lvalue_is_bytea(lua_State *L, int idx)
{
    int same = 0;
    if (lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, LBYTEA_MT);
        same = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return same;
}

const char *lvalue_push_bytea_value(lua_State *L, int idx, size_t *len)
{
    lua_rawgeti(L, idx, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
        return NULL;
    return lua_tolstring(L, -1, len);
}

/* Length of the sequence at idx, or -1 when it has other keys. */
static long sequence_length(lua_State *L, int idx)
{
    size_t n = (size_t)lua_rawlen(L, idx), keys = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        keys++;
        lua_pop(L, 1);
    }
    return keys == n && n <= (size_t)INT_MAX ? (long)n : -1;
}

/* Why an array cannot be sent: pushes the reason, returns 0. */
static int refuse(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return 0;
}

/* Append the Lua array at idx to o; 0 with the reason pushed (on top of
 * whatever the walk had pushed) when it cannot be sent. */
static int encode_table(lua_State *L, int idx, int depth, arraytext_out *o)
{
    long n, i;

    if (depth >= ARRAYTEXT_MAX_DIMS)
        return refuse(L, "array nested deeper than %d", ARRAYTEXT_MAX_DIMS);
    if (!lua_checkstack(L, 4))
        return refuse(L, "array too deep");
    n = sequence_length(L, idx);
    if (n < 0)
        return refuse(L, "table is not an array (use a sequence 1..n; "
                      "pgpool.null for NULL elements)");
    arraytext_add_open(o);
    for (i = 1; i <= n; i++) {
        char num[40];
        size_t len;
        const char *s;
        int el;

        if (i > 1)
            arraytext_add_separator(o);
        lua_rawgeti(L, idx, (int)i);
        el = lua_gettop(L);
        switch (lua_type(L, el)) {
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, el) != NULL)
                return refuse(L, "cannot send a userdata in an array");
            arraytext_add_null(o);
            break;
        case LUA_TBOOLEAN:
            arraytext_add(o, lua_toboolean(L, el) ? "t" : "f", 1);
            break;
        case LUA_TNUMBER:
            lvalue_format_number(L, el, num);
            arraytext_add(o, num, strlen(num));
            break;
        case LUA_TSTRING:
            s = lua_tolstring(L, el, &len);
            if (memchr(s, '\0', len))
                return refuse(L, "array element %d contains a NUL byte",
                              (int)i);
            arraytext_add_quoted(o, s, len);
            break;
        case LUA_TTABLE:
            if (lvalue_is_bytea(L, el)) {
                s = lvalue_push_bytea_value(L, el, &len);
                if (!s)
                    return refuse(L, "array element %d: pgpool.bytea value "
                                  "must be a string, got %s", (int)i,
                                  luaL_typename(L, -1));
                arraytext_add_bytea(o, (const unsigned char *)s, len);
                lua_pop(L, 1);
            } else if (!encode_table(L, el, depth + 1, o)) {
                return 0;
            }
            break;
        default:
            return refuse(L, "cannot send a %s in an array",
                          luaL_typename(L, el));
        }
        lua_pop(L, 1);
    }
    arraytext_add_close(o);
    return 1;
}

/* The output buffer is a Lua userdata held in one stack slot and replaced
 * by a bigger one as it grows: memory the collector owns outright, so that
 * neither a raise halfway nor a finaliser that cannot run (a __gc call
 * fails when memory is short) can leak it. */
typedef struct lua_buffer {
    lua_State *L;
    int slot;
} lua_buffer;

static char *grow_in_lua(void *ud, const char *data, size_t len, size_t cap)
{
    lua_buffer *b = (lua_buffer *)ud;
    char *block;

    if (!lua_checkstack(b->L, 1))
        return NULL;
    block = (char *)lua_newuserdata(b->L, cap);   /* raises when out */
    if (len)
        memcpy(block, data, len);
    lua_replace(b->L, b->slot);
    return block;
}

int lvalue_encode_array(lua_State *L, int idx)
{
    arraytext_out out;
    lua_buffer buffer;
    arraytext_out *o = &out;
    int top = lua_gettop(L);

    idx = idx < 0 ? top + idx + 1 : idx;
    lua_pushnil(L);                  /* top + 1: the buffer's slot */
    buffer.L = L;
    buffer.slot = top + 1;
    memset(o, 0, sizeof *o);
    o->grow = grow_in_lua;
    o->ud = &buffer;
    if (!encode_table(L, idx, 0, o)) {
        lua_replace(L, top + 1);   /* the reason, over the buffer */
        lua_settop(L, top + 1);
        return 0;
    }
    if (o->failed)
        luaL_error(L, "pgpool: out of memory");
    lua_pushlstring(L, o->data, o->len);
    lua_remove(L, -2);    /* the buffer; collected later */
    return 1;
}
