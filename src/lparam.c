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
 * Pointers in the set point into Lua strings that stay on the stack until
 * the statement has run: the arguments themselves, or what encoding pushed
 * (array literals, the strings of bytea markers). A bad parameter raises
 * "bad argument #n to '<function as called>' (parameter k: ...)".
 */
#include <string.h>

#include "lparam.h"

#include "lcommon.h"
#include "lvalue.h"

/* Raise for parameter param_no, why being pushed on the stack top. */
static void refuse(lua_State *L, const lparam_who *who, int param_no)
{
    const char *why = lua_tostring(L, -1);
    int arg = who->arg ? who->arg : param_no + 1;
    if (who->statement)
        lcommon_argerror(L, arg, who->name, "statement %d, parameter %d: %s",
                         who->statement, param_no, why);
    lcommon_argerror(L, arg, who->name, "parameter %d: %s", param_no, why);
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

void lparam_encode(lua_State *L, int first, int n, lparam_set *ps,
                   const lparam_who *who)
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
                goto unsupported;
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
            if (memchr(s, '\0', len)) {
                lua_pushliteral(L, "string contains a NUL byte (send binary "
                                "data with pgpool.bytea)");
                refuse(L, who, i + 1);
            }
            ps->values[i] = s;
            break;
        case LUA_TTABLE:
            luaL_checkstack(L, 4, "pgpool: too many table parameters");
            if (lvalue_is_bytea(L, idx)) {
                s = lvalue_push_bytea_value(L, idx, &len);   /* stays */
                if (!s) {
                    lua_pushfstring(L, "pgpool.bytea value must be a string, "
                                    "got %s", luaL_typename(L, -1));
                    refuse(L, who, i + 1);
                }
                if (len > 0x7fffffff) {
                    lua_pushliteral(L, "bytea too large");
                    refuse(L, who, i + 1);
                }
                ps->values[i] = s;
                ps->lengths[i] = (int)len;
                ps->formats[i] = 1;
                ps->types[i] = LVALUE_OID_BYTEA;
            } else if (lvalue_encode_array(L, idx)) {
                ps->values[i] = lua_tostring(L, -1);   /* stays */
            } else {
                refuse(L, who, i + 1);
            }
            break;
        default:
            goto unsupported;
        }
        continue;
unsupported:
        lua_pushfstring(L, "cannot send a %s", luaL_typename(L, idx));
        refuse(L, who, i + 1);
    }
    ps->pq.n = n;
    ps->pq.values = ps->values;
    ps->pq.lengths = ps->lengths;
    ps->pq.formats = ps->formats;
    ps->pq.types = ps->types;
}
