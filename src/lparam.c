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
 *   array table           -> array literal
 *   anything else         -> raises, naming the parameter and its type
 *
 * Numbers and array tables are written by the value codec (lvalue.c); this
 * file fills the parameter set that pq_query takes.
 *
 * Pointers in the set point into Lua strings that stay on the stack (or in
 * their parent table) until the statement has run.
 */
#include <string.h>

#include "lparam.h"

#include "lvalue.h"

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
            lvalue_format_number(L, idx, ps->numbers[i]);
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
            if (lvalue_is_bytea(L, idx)) {
                lua_rawgeti(L, idx, 1);   /* stays alive in the marker */
                s = lua_tolstring(L, -1, &len);
                lua_pop(L, 1);
                if (len > 0x7fffffff)
                    luaL_error(L, "pgpool: parameter %d: bytea too large",
                               i + 1);
                ps->values[i] = s;
                ps->lengths[i] = (int)len;
                ps->formats[i] = 1;
                ps->types[i] = LVALUE_OID_BYTEA;
            } else {
                luaL_checkstack(L, 4, "pgpool: too many array parameters");
                /* Leaves the literal pushed. */
                lvalue_encode_array(L, idx, i + 1);
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
