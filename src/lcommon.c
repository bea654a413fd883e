/*
 * lcommon.c - the helpers the binding files share: the shared upvalues and
 * how functions get them, handle and argument checks, and the per-state
 * context with its log delivery.
 *
 * The shared upvalues live in one registry table (LUPV_REGISTRY_KEY), in
 * LUPV_* order, made once per Lua state by lcommon_open; lcommon_setfuncs
 * adds each registration's own two. Argument errors are all worded here:
 * "bad argument #n to '<name as called>' (...)" at the user's line. The
 * context's __gc stops the state's log listening; it does no I/O and never
 * raises.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lcommon.h"
#include "pool.h"

/* ---- per-state context ------------------------------------------------- */

static int lctx_gc(lua_State *L)
{
    lctx *ctx = (lctx *)lua_touserdata(L, 1);
    if (ctx->log_fn != LUA_NOREF) {
        ctx->log_fn = LUA_NOREF;
        pool_log_listeners(-1);
    }
    return 0;
}

/* The on_log function raised (its error on the stack, popped here): said
 * once on stderr, since the log cannot carry news of its own failure, and
 * a failing handler never breaks the call that flushed the log. */
static void report_log_fn_error(lua_State *L, lctx *ctx)
{
    const char *msg = lua_tostring(L, -1);
    if (!ctx->log_fn_failed) {
        ctx->log_fn_failed = 1;
        fprintf(stderr, "pgpool: [error] on_log handler raised: %s (its later "
                "errors are not reported)\n",
                msg ? msg : luaL_typename(L, -1));
    }
    lua_pop(L, 1);
}

void lctx_flush_log(lua_State *L)
{
    lctx *ctx = lctx_get(L);
    char line[512];
    uint64_t seq;
    int level;

    if (ctx->log_fn == LUA_NOREF || pool_log_seq() == ctx->log_seq)
        return;
    while ((seq = pool_log_read(ctx->log_seq, &level, line, sizeof line))) {
        ctx->log_seq = seq;
        lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->log_fn);
        lua_pushstring(L, pool_log_level_names[level]);
        lua_pushstring(L, line);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK)
            report_log_fn_error(L, ctx);
    }
}

/* ---- shared upvalues ---------------------------------------------------- */

#define LUPV_REGISTRY_KEY "pgpool.upvalues"

void lcommon_open(lua_State *L)
{
    lctx *ctx;

    lua_createtable(L, LUPV_COUNT, 0);
    ctx = (lctx *)lua_newuserdata(L, sizeof *ctx);
    ctx->log_seq = 0;
    ctx->log_fn = LUA_NOREF;
    ctx->log_fn_failed = 0;
    luaL_newmetatable(L, LCTX_MT);
    lua_pushcfunction(L, lctx_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawseti(L, -2, LUPV_CTX);
    luaL_newmetatable(L, LPOOL_MT);
    lua_rawseti(L, -2, LUPV_POOL_MT);
    luaL_newmetatable(L, LCONN_MT);
    lua_rawseti(L, -2, LUPV_CONN_MT);
    lua_pushstring(L, "columns");
    lua_rawseti(L, -2, LUPV_KEY_COLUMNS);
    lua_pushstring(L, "affected");
    lua_rawseti(L, -2, LUPV_KEY_AFFECTED);
    lua_pushstring(L, "command");
    lua_rawseti(L, -2, LUPV_KEY_COMMAND);
    lua_setfield(L, LUA_REGISTRYINDEX, LUPV_REGISTRY_KEY);
}

void lcommon_setfuncs(lua_State *L, const luaL_Reg *fns, const char *prefix,
                      int wrapped)
{
    int i;
    lua_getfield(L, LUA_REGISTRYINDEX, LUPV_REGISTRY_KEY);
    for (i = 1; i <= LUPV_SHARED; i++)
        lua_rawgeti(L, -i, i);
    lua_remove(L, -(LUPV_SHARED + 1));
    lua_pushstring(L, prefix);
    lua_pushboolean(L, wrapped);
    luaL_setfuncs(L, fns, LUPV_COUNT);
}

/* ---- misuse ------------------------------------------------------------- */

int lcommon_wrapped(lua_State *L)
{
    return lua_toboolean(L, lua_upvalueindex(LUPV_WRAPPED));
}

/* Push "<file:line:> " of the user's call and the name as the user called
 * it; the message goes between them and the caller concatenates. */
static void push_where_and_name(lua_State *L, const char *name)
{
    const char *prefix = lua_tostring(L, lua_upvalueindex(LUPV_PREFIX));
    luaL_where(L, 1 + lcommon_wrapped(L));
    if (!prefix || strpbrk(name, ":."))
        prefix = "";
    lua_pushfstring(L, "%s%s", prefix, name);
}

int lcommon_argerror(lua_State *L, int arg, const char *name,
                     const char *fmt, ...)
{
    va_list ap;
    push_where_and_name(L, name);
    lua_pushfstring(L, "bad argument #%d to '%s' (", arg, lua_tostring(L, -1));
    lua_remove(L, -2);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_pushliteral(L, ")");
    lua_concat(L, 4);
    return lua_error(L);
}

const char *lcommon_check_cstring(lua_State *L, int idx, int arg,
                                  const char *name, const char *what,
                                  size_t *len)
{
    size_t n;
    const char *s;

    if (lua_type(L, idx) != LUA_TSTRING)
        lcommon_argerror(L, arg, name, "%s must be a string, got %s", what,
                         luaL_typename(L, idx));
    s = lua_tolstring(L, idx, &n);
    if (memchr(s, '\0', n))
        lcommon_argerror(L, arg, name, "%s contains a NUL byte", what);
    if (len)
        *len = n;
    return s;
}

void *lcommon_check(lua_State *L, int idx, int mt_upvalue, const char *tname,
                    const char *name)
{
    void *p = lua_touserdata(L, idx);
    if (p && lua_getmetatable(L, idx)) {
        int same = lua_rawequal(L, -1, lua_upvalueindex(mt_upvalue));
        if (!same) {       /* called without the upvalues */
            luaL_getmetatable(L, tname);
            same = lua_rawequal(L, -1, -2);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        if (same)
            return p;
    }
    push_where_and_name(L, name);
    lua_pushfstring(L, "calling '%s' on bad self (%s expected, got %s)",
                    lua_tostring(L, -1), tname, luaL_typename(L, idx));
    lua_remove(L, -2);
    lua_concat(L, 2);
    lua_error(L);
    return NULL;
}
