/*
 * lcommon.c - the helpers the binding files share: the shared upvalues and
 * how functions get them, handle checks, and the per-state context with
 * its log delivery.
 *
 * The upvalues live in one registry table (LUPV_REGISTRY_KEY), in LUPV_*
 * order, made once per Lua state by lcommon_open. The context's __gc stops
 * the state's log listening; it does no I/O and never raises.
 */
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
            lua_pop(L, 1);    /* a failing log function must not break us */
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

void lcommon_setfuncs(lua_State *L, const luaL_Reg *fns)
{
    int i;
    lua_getfield(L, LUA_REGISTRYINDEX, LUPV_REGISTRY_KEY);
    for (i = 1; i <= LUPV_COUNT; i++)
        lua_rawgeti(L, -i, i);
    lua_remove(L, -(LUPV_COUNT + 1));
    luaL_setfuncs(L, fns, LUPV_COUNT);
}

void *lcommon_check(lua_State *L, int idx, int mt_upvalue, const char *tname)
{
    void *p = lua_touserdata(L, idx);
    if (p && lua_getmetatable(L, idx)) {
        int same = lua_rawequal(L, -1, lua_upvalueindex(mt_upvalue));
        lua_pop(L, 1);
        if (same)
            return p;
    }
    return luaL_checkudata(L, idx, tname);
}
