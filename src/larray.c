/*
 * larray.c - PostgreSQL array literals <-> Lua arrays.
 *
 * The decoder is pgpool's one parser. It is strict and total: it accepts the
 * text output of array_out (optional "[lo:hi]=" bounds, braces, quoted
 * elements with backslash escapes, unquoted elements, NULL), requires every
 * level to be rectangular (siblings all arrays of one length, or all
 * elements), allows at most 6 dimensions like the server, and returns 0 on
 * anything else. It never reads past len.
 *
 * The encoder writes a Lua array (nested for several dimensions) as a
 * literal: elements always quoted, NULL unquoted. A table that is not a
 * sequence, a NUL byte or an unsupported value raises, naming the parameter.
 */
#include <stdlib.h>
#include <string.h>

#include "lpgpool.h"

#define ARRAY_MAX_DIMS 6

static const struct {
    unsigned array, element;
} array_types[] = {
    { 1000, 16 },   /* bool */         { 1001, 17 },   /* bytea */
    { 1002, 18 },   /* char */         { 1003, 19 },   /* name */
    { 1005, 21 },   /* int2 */         { 1007, 23 },   /* int4 */
    { 1016, 20 },   /* int8 */         { 1028, 26 },   /* oid */
    { 1021, 700 },  /* float4 */       { 1022, 701 },  /* float8 */
    { 1231, 1700 }, /* numeric */      { 1009, 25 },   /* text */
    { 1015, 1043 }, /* varchar */      { 1014, 1042 }, /* bpchar */
    { 2951, 2950 }, /* uuid */         { 199, 114 },   /* json */
    { 3807, 3802 }, /* jsonb */        { 1182, 1082 }, /* date */
    { 1183, 1083 }, /* time */         { 1115, 1114 }, /* timestamp */
    { 1185, 1184 }, /* timestamptz */  { 1270, 1266 }, /* timetz */
    { 1187, 1186 }, /* interval */     { 1041, 869 },  /* inet */
    { 651, 650 },   /* cidr */         { 1040, 829 },  /* macaddr */
    { 1561, 1560 }, /* bit */          { 1563, 1562 }, /* varbit */
    { 1790, 1790 }, /* refcursor */    { 0, 0 },
};

unsigned larray_element_type(unsigned array_oid)
{
    int i;
    if (array_oid < 199)   /* every array type above has an OID >= 199 */
        return 0;
    for (i = 0; array_types[i].array; i++)
        if (array_types[i].array == array_oid)
            return array_types[i].element;
    return 0;
}

/* ---- decoding ---------------------------------------------------------- */

typedef struct parser {
    lua_State *L;
    const char *s, *end;
    unsigned elem;
    int sizes[ARRAY_MAX_DIMS];   /* length seen at each depth, -1 unknown */
    int nested[ARRAY_MAX_DIMS];  /* 1: arrays at this depth, 0: elements */
} parser;

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

static void skip_space(parser *ps)
{
    while (ps->s < ps->end && is_space(*ps->s))
        ps->s++;
}

/* A quoted element: unescape into a Lua string, then convert. */
static int parse_quoted(parser *ps)
{
    lua_State *L = ps->L;
    luaL_Buffer b;
    size_t len;
    const char *text;

    ps->s++;   /* the opening quote */
    luaL_buffinit(L, &b);
    for (;;) {
        if (ps->s >= ps->end)
            return 0;   /* unterminated: nothing left pushed below */
        if (*ps->s == '"')
            break;
        if (*ps->s == '\\') {
            if (++ps->s >= ps->end)
                return 0;
        }
        luaL_addchar(&b, *ps->s);
        ps->s++;
    }
    ps->s++;   /* the closing quote */
    luaL_pushresult(&b);
    text = lua_tolstring(L, -1, &len);
    if (!lresult_push_value(L, ps->elem, text, len)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_remove(L, -2);
    return 1;
}

/* An unquoted element: up to the next ',' or '}' with surrounding blanks
 * trimmed; NULL (any case) is the null sentinel. */
static int parse_unquoted(parser *ps)
{
    const char *start = ps->s, *stop;
    size_t len;

    while (ps->s < ps->end && *ps->s != ',' && *ps->s != '}') {
        if (*ps->s == '"' || *ps->s == '{' || *ps->s == '\\')
            return 0;
        ps->s++;
    }
    stop = ps->s;
    while (stop > start && is_space(stop[-1]))
        stop--;
    len = (size_t)(stop - start);
    if (len == 0)
        return 0;
    if (len == 4 && (start[0] | 32) == 'n' && (start[1] | 32) == 'u' &&
        (start[2] | 32) == 'l' && (start[3] | 32) == 'l') {
        lua_pushlightuserdata(ps->L, NULL);
        return 1;
    }
    {
        /* The converters read numbers up to a terminator: give them one. */
        char small[64];
        if (len < sizeof small) {
            memcpy(small, start, len);
            small[len] = '\0';
            return lresult_push_value(ps->L, ps->elem, small, len);
        }
        lua_pushlstring(ps->L, start, len);
        if (!lresult_push_value(ps->L, ps->elem, lua_tostring(ps->L, -1),
                                len)) {
            lua_pop(ps->L, 1);
            return 0;
        }
        lua_remove(ps->L, -2);
        return 1;
    }
}

/* '{' ... '}' at depth: pushes a Lua array or returns 0 (nothing pushed). */
static int parse_array(parser *ps, int depth)
{
    lua_State *L = ps->L;
    int count = 0, table;

    if (depth >= ARRAY_MAX_DIMS || !lua_checkstack(L, 4))
        return 0;
    ps->s++;   /* '{' */
    lua_newtable(L);
    table = lua_gettop(L);
    skip_space(ps);
    if (ps->s < ps->end && *ps->s == '}') {
        ps->s++;
        /* An empty array is only valid as the whole literal. */
        if (depth > 0)
            goto bad;
        return 1;
    }
    for (;;) {
        int ok, nested;
        skip_space(ps);
        if (ps->s >= ps->end)
            goto bad;
        nested = *ps->s == '{';
        if (ps->nested[depth] < 0)
            ps->nested[depth] = nested;
        else if (ps->nested[depth] != nested)
            goto bad;
        if (nested)
            ok = parse_array(ps, depth + 1);
        else if (*ps->s == '"')
            ok = parse_quoted(ps);
        else
            ok = parse_unquoted(ps);
        if (!ok)
            goto bad;
        lua_rawseti(L, table, ++count);
        skip_space(ps);
        if (ps->s >= ps->end)
            goto bad;
        if (*ps->s == '}') {
            ps->s++;
            break;
        }
        if (*ps->s != ',')
            goto bad;
        ps->s++;
    }
    if (ps->sizes[depth] < 0)
        ps->sizes[depth] = count;
    else if (ps->sizes[depth] != count)
        goto bad;    /* not rectangular */
    return 1;
bad:
    lua_settop(L, table - 1);
    return 0;
}

/* Skip "[lo:hi][lo:hi]=" dimension bounds. */
static int skip_bounds(parser *ps)
{
    if (ps->s >= ps->end || *ps->s != '[')
        return 1;
    while (ps->s < ps->end && *ps->s == '[') {
        ps->s++;
        while (ps->s < ps->end && *ps->s != ']') {
            char c = *ps->s;
            if (!(c == '-' || c == ':' || c == '+' || (c >= '0' && c <= '9')))
                return 0;
            ps->s++;
        }
        if (ps->s >= ps->end)
            return 0;
        ps->s++;   /* ']' */
    }
    if (ps->s >= ps->end || *ps->s != '=')
        return 0;
    ps->s++;
    return 1;
}

int larray_push(lua_State *L, const char *text, size_t len, unsigned elem_oid)
{
    parser ps;
    int i, top = lua_gettop(L);

    ps.L = L;
    ps.s = text;
    ps.end = text + len;
    ps.elem = elem_oid;
    for (i = 0; i < ARRAY_MAX_DIMS; i++)
        ps.sizes[i] = ps.nested[i] = -1;
    skip_space(&ps);
    if (!skip_bounds(&ps))
        return 0;
    skip_space(&ps);
    if (ps.s >= ps.end || *ps.s != '{' || !parse_array(&ps, 0))
        return 0;
    skip_space(&ps);
    if (ps.s != ps.end) {
        lua_settop(L, top);
        return 0;
    }
    return 1;
}

/* ---- encoding ---------------------------------------------------------- */

typedef struct outbuf {
    char *data;
    size_t len, cap;
    int failed;
} outbuf;

static void out_add(outbuf *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        char *grown;
        while (cap < o->len + n)
            cap *= 2;
        grown = realloc(o->data, cap);
        if (!grown) {
            o->failed = 1;
            return;
        }
        o->data = grown;
        o->cap = cap;
    }
    memcpy(o->data + o->len, s, n);
    o->len += n;
}

static void out_quoted(outbuf *o, const char *s, size_t n)
{
    size_t i, from = 0;
    out_add(o, "\"", 1);
    for (i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            out_add(o, s + from, i - from);
            out_add(o, "\\", 1);
            from = i;
        }
    }
    out_add(o, s + from, n - from);
    out_add(o, "\"", 1);
}

static void out_bytea(outbuf *o, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    /* Inside a quoted element the backslash of \x is itself escaped. */
    out_add(o, "\"\\\\x", 4);
    for (i = 0; i < n; i++) {
        char pair[2];
        pair[0] = hex[s[i] >> 4];
        pair[1] = hex[s[i] & 15];
        out_add(o, pair, 2);
    }
    out_add(o, "\"", 1);
}

/* Length of the sequence at idx, raising when it has other keys. */
static size_t sequence_length(lua_State *L, int idx, int param_no)
{
    size_t n = (size_t)lua_rawlen(L, idx), keys = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        keys++;
        lua_pop(L, 1);
    }
    if (keys != n)
        luaL_error(L, "pgpool: parameter %d: table is not an array (use a "
                   "sequence 1..n; pgpool.null for NULL elements)", param_no);
    return n;
}

static int is_marker(lua_State *L, int idx, const char *mt)
{
    int same = 0;
    if (lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, mt);
        same = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return same;
}

static void encode_table(lua_State *L, int idx, int param_no, int depth,
                         outbuf *o)
{
    size_t n, i;

    if (depth >= ARRAY_MAX_DIMS)
        luaL_error(L, "pgpool: parameter %d: array nested deeper than %d",
                   param_no, ARRAY_MAX_DIMS);
    luaL_checkstack(L, 4, "pgpool: array too deep");
    n = sequence_length(L, idx, param_no);
    out_add(o, "{", 1);
    for (i = 1; i <= n; i++) {
        char num[40];
        size_t len;
        const char *s;
        int el;

        if (i > 1)
            out_add(o, ",", 1);
        lua_rawgeti(L, idx, (int)i);
        el = lua_gettop(L);
        switch (lua_type(L, el)) {
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, el) != NULL)
                goto unsupported;
            out_add(o, "NULL", 4);
            break;
        case LUA_TBOOLEAN:
            out_add(o, lua_toboolean(L, el) ? "t" : "f", 1);
            break;
        case LUA_TNUMBER:
            lparam_format_number(L, el, num);
            out_add(o, num, strlen(num));
            break;
        case LUA_TSTRING:
            s = lua_tolstring(L, el, &len);
            if (memchr(s, '\0', len))
                luaL_error(L, "pgpool: parameter %d: array element %d "
                           "contains a NUL byte", param_no, (int)i);
            out_quoted(o, s, len);
            break;
        case LUA_TTABLE:
            if (is_marker(L, el, LBYTEA_MT)) {
                lua_rawgeti(L, el, 1);
                s = lua_tolstring(L, -1, &len);
                out_bytea(o, (const unsigned char *)s, len);
                lua_pop(L, 1);
            } else {
                encode_table(L, el, param_no, depth + 1, o);
            }
            break;
        default:
            goto unsupported;
        }
        lua_pop(L, 1);
    }
    out_add(o, "}", 1);
    return;
unsupported:
    luaL_error(L, "pgpool: parameter %d: cannot send a %s in an array",
               param_no, luaL_typename(L, -1));
}

/* The output buffer lives in a userdata so that a raise frees it. */
static int outbuf_gc(lua_State *L)
{
    outbuf *o = (outbuf *)lua_touserdata(L, 1);
    free(o->data);
    o->data = NULL;
    return 0;
}

void larray_encode(lua_State *L, int idx, int param_no)
{
    outbuf *o;

    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    o = (outbuf *)lua_newuserdata(L, sizeof *o);
    memset(o, 0, sizeof *o);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, outbuf_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    encode_table(L, idx, param_no, 0, o);
    if (o->failed)
        luaL_error(L, "pgpool: out of memory");
    lua_pushlstring(L, o->data, o->len);
    lua_remove(L, -2);    /* the buffer; collected later */
}
