/*
 * lpgpool.c - the module entry, luaopen_pgpool_core, and the functions of
 * the module table: configure, pool lookup, shutdown_all, the null
 * sentinel, bytea, on_log, close_on_signals; _facade, the registrations
 * the facade calls for its module-level shortcuts and conn:pipeline; and
 * the test hooks _decode, _decode_array and _type_table. The handles'
 * methods are lpool.c's and lconn.c's; what they all share, lcommon.c's.
 *
 * Options reach configure already checked and completed by the Lua facade
 * (lua/pgpool.lua validates in one place); here they are read raw (no
 * metamethod runs), and the strings that go on to C-string APIs are
 * checked again (a string, no NUL byte) and kept on the stack until the
 * pool has copied them.
 *
 * The shared object pins itself in memory (RTLD_NODELETE): the pools, their
 * housekeeping thread and the atexit handler live in this library, and must
 * outlive any lua_close that would otherwise dlclose it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <unistd.h>

#include "lpgpool.h"

#include "lcommon.h"
#include "lconn.h"
#include "lcopy.h"
#include "lnotify.h"
#include "lpool.h"
#include "lresult.h"
#include "lvalue.h"
#include "pool.h"
#include "process.h"
#include "registry.h"

#define LPGPOOL_VERSION  "pgpool 1.0.0"

/* ---- on_log ------------------------------------------------------------ */

/* on_log(fn): receive log lines in this Lua state; on_log(nil) stops. While
 * any state listens, lines are not written to stderr. */
static int lmodule_on_log(lua_State *L)
{
    lctx *ctx = lctx_get(L);
    if (!lua_isnoneornil(L, 1) && lua_type(L, 1) != LUA_TFUNCTION)
        return lcommon_argerror(L, 1, "on_log", "function or nil expected, "
                                "got %s", luaL_typename(L, 1));
    if (ctx->log_fn != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, ctx->log_fn);
        ctx->log_fn = LUA_NOREF;
        pool_log_listeners(-1);
    }
    if (!lua_isnoneornil(L, 1)) {
        lua_pushvalue(L, 1);
        ctx->log_fn = luaL_ref(L, LUA_REGISTRYINDEX);
        ctx->log_fn_failed = 0;
        ctx->log_seq = pool_log_seq();
        pool_log_listeners(1);
    }
    return 0;
}

/* ---- configure --------------------------------------------------------- */

/* Push options[key], read raw. */
static int opt_push(lua_State *L, const char *key)
{
    lua_pushstring(L, key);
    lua_rawget(L, 1);
    return lua_type(L, -1);
}

static double opt_number(lua_State *L, const char *key)
{
    double v;
    if (opt_push(L, key) != LUA_TNUMBER)
        lcommon_argerror(L, 1, "configure", "option '%s' must be a number, "
                         "got %s", key, luaL_typename(L, -1));
    v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* The boolean option key; absent is false. */
static int opt_boolean(lua_State *L, const char *key)
{
    int type = opt_push(L, key), v;
    if (type != LUA_TNIL && type != LUA_TBOOLEAN)
        lcommon_argerror(L, 1, "configure", "option '%s' must be a boolean, "
                         "got %s", key, luaL_typename(L, -1));
    v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* The string option key, NULL when absent; it stays on the stack. */
static const char *opt_string(lua_State *L, const char *key)
{
    char what[48];
    if (opt_push(L, key) == LUA_TNIL && strcmp(key, "name") != 0)
        return NULL;
    snprintf(what, sizeof what, "option '%s'", key);
    return lcommon_check_cstring(L, -1, 1, "configure", what, NULL);
}

/* The replicas option's conninfo strings, kept on the stack. */
static void opt_replicas(lua_State *L, pool_config *cfg)
{
    const char **replicas;
    char what[48];
    int n, i, list;

    if (opt_push(L, "replicas") == LUA_TNIL)
        return;
    if (!lua_istable(L, -1))
        lcommon_argerror(L, 1, "configure", "option 'replicas' must be a "
                         "list of conninfo strings, got %s",
                         luaL_typename(L, -1));
    list = lua_gettop(L);
    n = (int)lua_rawlen(L, list);
    replicas = (const char **)lua_newuserdata(
        L, sizeof *replicas * (size_t)(n + 1));
    luaL_checkstack(L, n + 8, "pgpool: too many replicas");
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, list, i + 1);
        snprintf(what, sizeof what, "option 'replicas' entry %d", i + 1);
        replicas[i] = lcommon_check_cstring(L, -1, 1, "configure", what,
                                            NULL);
    }
    cfg->replicas = replicas;
    cfg->n_replicas = n;
}

/* The health option's thresholds (the facade has checked and completed
 * them); 0 when one is missing or out of range. */
static int opt_health(lua_State *L, pool_health_config *h)
{
    static const char *const keys[] = { "window", "waiting_ratio",
                                        "wait_p95", "timeouts",
                                        "connect_failures" };
    double v[5];
    int i, ok = 1;

    if (opt_push(L, "health") != LUA_TTABLE) {
        lua_pop(L, 1);
        return 0;
    }
    for (i = 0; i < 5; i++) {
        lua_pushstring(L, keys[i]);
        lua_rawget(L, -2);
        v[i] = lua_tonumber(L, -1);   /* 0 for a non-number */
        ok = ok && lua_type(L, -1) == LUA_TNUMBER && v[i] >= 0 &&
             v[i] < 2147483647;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (!ok || v[0] < 1 || v[0] > POOL_WINDOW || v[1] > 1)
        return 0;
    h->window = (int)v[0];
    h->waiting_ratio = v[1];
    h->wait_p95 = v[2];
    h->timeouts = (int)v[3];
    h->connect_failures = (int)v[4];
    return 1;
}

static int lmodule_configure(lua_State *L)
{
    pool_config cfg;
    const char *level;
    char errbuf[256];
    pool **handle;
    int i;

    if (lua_type(L, 1) != LUA_TTABLE)
        return lcommon_argerror(L, 1, "configure", "options must be a table, "
                                "got %s", luaL_typename(L, 1));
    lua_settop(L, 1);
    handle = lpool_new(L);
    memset(&cfg, 0, sizeof cfg);
    cfg.name = opt_string(L, "name");
    cfg.conninfo = opt_string(L, "conninfo");
    cfg.on_connect = opt_string(L, "on_connect");
    cfg.max = (int)opt_number(L, "max");
    cfg.min = (int)opt_number(L, "min");
    cfg.idle_timeout = opt_number(L, "idle_timeout");
    cfg.acquire_timeout = opt_number(L, "acquire_timeout");
    cfg.connect_timeout = opt_number(L, "connect_timeout");
    cfg.query_timeout = opt_number(L, "query_timeout");
    cfg.max_lifetime = opt_number(L, "max_lifetime");
    cfg.max_waiting = (int)opt_number(L, "max_waiting");
    cfg.statement_cache = (int)opt_number(L, "statement_cache");
    cfg.max_shared = (int)opt_number(L, "max_shared");
    cfg.slow_query = opt_number(L, "slow_query");
    cfg.leak_timeout = opt_number(L, "leak_timeout");
    cfg.track_hogs = opt_boolean(L, "track_hogs");
    cfg.transaction_pooling = opt_boolean(L, "transaction_pooling");
    level = opt_string(L, "log_level");
    cfg.log_level = -1;
    for (i = 0; level && pool_log_level_names[i]; i++)
        if (strcmp(level, pool_log_level_names[i]) == 0)
            cfg.log_level = i;
    if (cfg.max < 1 || cfg.min < 0 || cfg.min > cfg.max || cfg.log_level < 0 ||
        !opt_health(L, &cfg.health))
        return lcommon_argerror(L, 1, "configure", "invalid options");
    opt_replicas(L, &cfg);
    opt_push(L, "defer_housekeeping");
    i = lua_toboolean(L, -1);
    lua_pop(L, 1);
    *handle = pool_configure(&cfg, !i, errbuf, sizeof errbuf);
    if (!*handle)
        return luaL_error(L, "%s", errbuf);
    lua_settop(L, 2);     /* the handle */
    lctx_flush_log(L);
    return 1;
}

/* pool(name): the handle of a configured pool, or nil, msg, code. */
static int lmodule_pool(lua_State *L)
{
    const char *name = lua_isnoneornil(L, 1) ? "default"
        : lcommon_check_cstring(L, 1, 1, "pool", "name", NULL);
    pool **handle = lpool_new(L);
    int was_shut_down;

    *handle = pool_lookup(name, &was_shut_down);
    if (*handle)
        return 1;
    lua_pushnil(L);
    if (was_shut_down) {
        lua_pushfstring(L, "pool \"%s\" is shut down", name);
        lua_pushstring(L, PQ_CODE_SHUTDOWN);
    } else {
        lua_pushfstring(L, "pool \"%s\" is not configured", name);
        lua_pushstring(L, "unknown");
    }
    return 3;
}

/* shutdown_all(timeout): true, or nil and a message when connections were
 * still in use at the deadline (they are closed anyway). */
static int lmodule_shutdown_all(lua_State *L)
{
    double timeout = 10.0;
    if (!lua_isnoneornil(L, 1) && lua_type(L, 1) != LUA_TNUMBER)
        return lcommon_argerror(L, 1, "shutdown_all", "timeout must be a "
                                "number, got %s", luaL_typename(L, 1));
    if (!lua_isnoneornil(L, 1))
        timeout = lua_tonumber(L, 1);
    if (!(timeout >= 0))
        return lcommon_argerror(L, 1, "shutdown_all",
                                "timeout must be >= 0");
    return lpool_push_shutdown_outcome(L, pool_shutdown_all(timeout));
}

static void add_name(pool *p, void *ud)
{
    lua_State *L = (lua_State *)ud;
    lua_pushstring(L, pool_get_config(p)->name);
    lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
}

/* pid(): this process's id (the label of its figures among a server's
 * processes; in a forked child, the child's). */
static int lmodule_pid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* pool_names(): the names of the configured pools. */
static int lmodule_pool_names(lua_State *L)
{
    lua_newtable(L);
    pool_each(add_name, L);
    return 1;
}

/* bytea(s): mark a string to be sent as binary bytea. */
static int lmodule_bytea(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return lcommon_argerror(L, 1, "bytea", "string expected, got %s",
                                luaL_typename(L, 1));
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    luaL_setmetatable(L, LBYTEA_MT);
    return 1;
}

/* close_on_signals(): SIGTERM and SIGINT close idle connections cleanly,
 * then end the process as the signal would have. */
static int lmodule_close_on_signals(lua_State *L)
{
    if (!pool_close_on_signals())
        return luaL_error(L, "pgpool: close_on_signals: cannot install");
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- test hooks ---------------------------------------------------------- */

/* The codec on its own, for the specs (the server only ever sends values
 * the codec reads). _decode(text, oid): the value as a result would hold
 * it; _decode_array(text, array_oid): the same, for array types only.
 * Either returns nil and "malformed" for a value the codec refuses. */
static int decode(lua_State *L, int arrays_only)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    unsigned oid = (unsigned)luaL_checkinteger(L, 2);

    if (arrays_only && !lvalue_element_type(oid))
        return luaL_argerror(L, 2, "not a known array type");
    if (lvalue_push(L, oid, text, len))
        return 1;
    lua_pushnil(L);
    lua_pushstring(L, "malformed");
    return 2;
}

static int lmodule_decode(lua_State *L)
{
    return decode(L, 0);
}

static int lmodule_decode_array(lua_State *L)
{
    return decode(L, 1);
}

/* _type_table(): the codec's OID tables, { arrays = { {array, element,
 * name}, ... }, scalars = { {oid, name}, ... } }, to check against pg_type. */
static int lmodule_type_table(lua_State *L)
{
    unsigned oid, element;
    const char *name;
    int i, list;

    lua_createtable(L, 0, 2);
    lua_newtable(L);                    /* -2: arrays */
    lua_newtable(L);                    /* -1: scalars */
    for (i = 0; lvalue_type(i, &oid, &element, &name); i++) {
        list = lua_gettop(L) - (element ? 1 : 0);
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, (lua_Integer)oid);
        lua_setfield(L, -2, element ? "array" : "oid");
        if (element) {
            lua_pushinteger(L, (lua_Integer)element);
            lua_setfield(L, -2, "element");
        }
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
        lua_rawseti(L, list, (int)lua_rawlen(L, list) + 1);
    }
    lua_setfield(L, -3, "scalars");
    lua_setfield(L, -2, "arrays");
    return 1;
}

static const luaL_Reg module_fns[] = {
    { "_decode", lmodule_decode },
    { "_decode_array", lmodule_decode_array },
    { "_type_table", lmodule_type_table },
    { "close_on_signals", lmodule_close_on_signals },
    { "configure", lmodule_configure },
    { "pool", lmodule_pool },
    { "pid", lmodule_pid },
    { "set_decoder", lresult_set_decoder },
    { "pool_names", lmodule_pool_names },
    { "shutdown_all", lmodule_shutdown_all },
    { "bytea", lmodule_bytea },
    { "on_log", lmodule_on_log },
    { NULL, NULL },
};

/* Keep this library loaded for the life of the process (see top). */
static const char pin_anchor = 0;

static void pin_library(void)
{
    Dl_info info;
    if (dladdr(&pin_anchor, &info) && info.dli_fname)
        dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
}

int luaopen_pgpool_core(lua_State *L)
{
    pin_library();
    pool_process_init();
    lcommon_open(L);
    lpool_open(L);
    lconn_open(L);
    lcopy_open(L);
    lnotify_open(L);
    lresult_open(L);
    luaL_newmetatable(L, LBYTEA_MT);
    lua_pop(L, 1);

    lua_newtable(L);
    lcommon_setfuncs(L, module_fns, "pgpool.", 0);
    /* What the facade calls on the user's behalf: the pool methods behind
     * pgpool.query and the rest (named so in errors), the run of
     * conn:pipeline (its statements' misuse named p:query) and the COMMIT
     * of transaction. */
    lua_newtable(L);
    lpool_setfuncs(L, "pgpool.", 1);
    lconn_setfuncs_facade(L);
    lua_setfield(L, -2, "_facade");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushstring(L, LPGPOOL_VERSION);
    lua_setfield(L, -2, "_VERSION");
    luaL_getmetatable(L, LPOOL_MT);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "pool_methods");
    lua_pop(L, 1);
    luaL_getmetatable(L, LCONN_MT);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "conn_methods");
    lua_pop(L, 1);
    return 1;
}
