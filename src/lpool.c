/*
 * lpool.c - the pool handle: a userdata holding one reference to a pool.
 *
 * Methods: acquire, query, exec, stats, history, hogs, shutdown, name,
 * is_shut_down. The
 * facade (lua/pgpool.lua) adds transaction, with, health and metrics to the
 * same method table, and calls a second registration of these methods for
 * its module-level shortcuts (errors then name pgpool.query, not
 * pool:query). acquire hands out connection handles (lconn.c); query and
 * exec run through lstatement.c like the connection's. A handle is made
 * before the reference or checkout it will hold, so that a memory error
 * cannot strand either. With track_hogs, acquire and query/exec name the
 * user's line that made each checkout in the pool's hogs table (hogs.h).
 */
#include <string.h>

#include "lpool.h"

#include "lcommon.h"
#include "lconn.h"
#include "lparam.h"
#include "lresult.h"
#include "lstatement.h"
#include "clock.h"
#include "hogs.h"
#include "registry.h"

typedef struct lpool {
    pool *p;
} lpool;

static pool *lpool_check(lua_State *L, const char *name)
{
    return ((lpool *)lcommon_check(L, 1, LUPV_POOL_MT, LPOOL_MT, name))->p;
}

pool **lpool_new(lua_State *L)
{
    lpool *h = (lpool *)lua_newuserdata(L, sizeof *h);
    h->p = NULL;
    luaL_setmetatable(L, LPOOL_MT);
    return &h->p;
}

static int lpool_gc(lua_State *L)
{
    lpool *h = (lpool *)luaL_checkudata(L, 1, LPOOL_MT);
    if (h->p) {
        pool_unref(h->p);
        h->p = NULL;
    }
    return 0;
}

static int lpool_tostring(lua_State *L)
{
    pool *p = lpool_check(L, "__tostring");
    lua_pushfstring(L, "pgpool.pool \"%s\"", pool_get_config(p)->name);
    return 1;
}

/* The options of acquire and shutdown: nil (the defaults), seconds, or
 * { timeout = s } (and, for acquire, read_only = bool). */
typedef struct handle_opts {
    double timeout;
    int read_only;
} handle_opts;

static handle_opts opts_arg(lua_State *L, int idx, const char *name,
                            double fallback, int takes_read_only)
{
    handle_opts o;
    int arg = idx - 1;    /* self is not counted */

    o.timeout = fallback;
    o.read_only = 0;
    if (lua_isnoneornil(L, idx))
        return o;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        o.timeout = lua_tonumber(L, idx);
    } else if (lua_type(L, idx) != LUA_TTABLE) {
        lcommon_argerror(L, arg, name, "options must be a table or a number "
                         "of seconds, got %s", luaL_typename(L, idx));
    } else {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            const char *key = lua_type(L, -2) == LUA_TSTRING
                                  ? lua_tostring(L, -2) : NULL;
            if (key && strcmp(key, "timeout") == 0) {
                if (lua_type(L, -1) != LUA_TNUMBER)
                    lcommon_argerror(L, arg, name, "option 'timeout' must be "
                                     "a number, got %s", luaL_typename(L, -1));
                o.timeout = lua_tonumber(L, -1);
            } else if (key && takes_read_only &&
                       strcmp(key, "read_only") == 0) {
                if (lua_type(L, -1) != LUA_TBOOLEAN)
                    lcommon_argerror(L, arg, name, "option 'read_only' must "
                                     "be a boolean, got %s",
                                     luaL_typename(L, -1));
                o.read_only = lua_toboolean(L, -1);
            } else {
                lcommon_argerror(L, arg, name, "unknown option '%s'",
                                 key ? key : luaL_typename(L, -2));
            }
            lua_pop(L, 1);
        }
    }
    if (!(o.timeout >= 0))
        lcommon_argerror(L, arg, name, "option 'timeout' must be >= 0");
    return o;
}

/* The time left until deadline (HUGE_VAL for none), at least 0. */
static double time_left(double deadline)
{
    double left = deadline - clock_now();
    return left > 0 ? left : 0;
}

/* A connection of one of p's replicas, taken in turn, within `deadline`;
 * one that cannot connect, is shut down, has its queue full (max_waiting)
 * or cannot serve by the deadline (a frozen server, whose connection
 * attempt outlasts it) is skipped. 1 with
 * the checkout; 0 when none could serve; -1 with err on another failure. */
static int acquire_replica(pool *p, double deadline, pool **from,
                           pool_slot **slot, uint64_t *ticket, pq_error *err)
{
    int n = pool_replica_count(p), k;
    unsigned turn = n ? pool_next_turn(p) : 0;

    for (k = 0; k < n; k++) {
        pool *replica = pool_replica(p, turn + (unsigned)k);
        if (pool_acquire(replica, time_left(deadline), 0, slot, ticket,
                         err)) {
            *from = replica;
            return 1;
        }
        if (strcmp(err->code, PQ_CODE_CONNECT) != 0 &&
            strcmp(err->code, PQ_CODE_SHUTDOWN) != 0 &&
            strcmp(err->code, PQ_CODE_TIMEOUT) != 0 &&
            strcmp(err->code, PQ_CODE_FULL) != 0)
            return -1;
    }
    return 0;
}

/* Begin a checkout's hold in h at the user's line: the first Lua frame
 * from the caller up (one frame further when the facade called for the
 * user: pgpool.query, pool:with), so that pcall(pool.acquire, pool) names
 * the pcall's line too. One lua_getinfo per frame looked at, no traceback;
 * a frame with no line (C, stripped) is skipped, and after a few such the
 * site is "?". */
static hogs_mark hog_enter(lua_State *L, hogs *h)
{
    lua_Debug ar;
    int level, first = 1 + lcommon_wrapped(L);

    for (level = first; level < first + 4 && lua_getstack(L, level, &ar);
         level++)
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0)
            return hogs_enter(h, ar.short_src, ar.currentline);
    return hogs_enter(h, "?", 0);
}

static int lpool_acquire(lua_State *L)
{
    pool *p = lpool_check(L, "acquire");
    handle_opts o = opts_arg(L, 2, "acquire",
                             pool_get_config(p)->acquire_timeout, 1);
    lconn *c = lconn_new(L);
    pool *from = p;
    pool_slot *slot;
    uint64_t ticket;
    pq_error err;
    double started = clock_now();
    double deadline = clock_deadline(started, o.timeout);
    /* The replicas get half of the timeout at most, so that when none can
     * serve in time the pool itself still has the rest: a read_only
     * acquire waits no longer than any other. */
    int got = o.read_only
                  ? acquire_replica(p, clock_deadline(started, o.timeout / 2),
                                    &from, &slot, &ticket, &err)
                  : 0;

    /* With no replica to serve (or none configured), the pool itself does. */
    if (got == 0)
        got = pool_acquire(p, o.read_only ? time_left(deadline) : o.timeout,
                           0, &slot, &ticket, &err);
    if (got <= 0) {
        lctx_flush_log(L);
        return lresult_push_error(L, &err);
    }
    lconn_attach(c, from, slot, ticket);
    if (pool_get_config(from)->track_hogs)
        lconn_track(c, pool_hogs(from), hog_enter(L, pool_hogs(from)),
                    clock_now());
    if (pool_get_config(from)->leak_timeout > 0) {
        luaL_traceback(L, L, NULL, 1);
        pool_set_origin(slot, ticket, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lctx_flush_log(L);
    return 1;
}

/* query(sql, ...) and exec(script): acquire, run, release in one call. The
 * parameters are checked before anything is acquired, so a bad one raises
 * with nothing checked out. */
static int run_once(lua_State *L, int exec)
{
    pool *p = lpool_check(L, exec ? "exec" : "query");
    lparam_set ps;
    double timeout;
    const char *sql = lstatement_args(L, exec ? "exec" : "query", exec, &ps,
                                      &timeout);
    pool_slot *slot;
    uint64_t ticket;
    pq_error err;
    pq_result *res = NULL;
    hogs *h = pool_get_config(p)->track_hogs ? pool_hogs(p) : NULL;
    hogs_mark site = 0;
    int ok;

    double started;

    if (!pool_acquire(p, pool_get_config(p)->acquire_timeout, 1, &slot,
                      &ticket, &err)) {
        lctx_flush_log(L);
        return lresult_push_error(L, &err);
    }
    started = clock_now();
    if (h)
        site = hog_enter(L, h);
    ok = lstatement_run(p, slot, ticket, sql, timeout, exec ? NULL : &ps,
                        started, &res, &err);
    if (h)
        hogs_leave(h, site, clock_now() - started);
    pool_end_use_release(p, slot, ticket, sql, started, !ok);
    return lstatement_push_outcome(L, ok, exec, res, &err);
}

static int lpool_query(lua_State *L)
{
    return run_once(L, 0);
}

static int lpool_exec(lua_State *L)
{
    return run_once(L, 1);
}

/* A histogram as { bounds = {...}, counts = {...}, sum = s, count = n }:
 * counts[i] is the observations <= bounds[i] (cumulative, as Prometheus's
 * buckets), count all of them (the +Inf bucket). Plain arrays and finite
 * numbers, so that it survives a JSON round trip. */
static void push_histogram(lua_State *L, const histogram *h)
{
    uint64_t seen = 0;
    int i;

    lua_createtable(L, 0, 4);
    lua_createtable(L, HISTOGRAM_BOUNDS, 0);
    for (i = 0; i < HISTOGRAM_BOUNDS; i++) {
        lua_pushnumber(L, histogram_bounds[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "bounds");
    lua_createtable(L, HISTOGRAM_BOUNDS, 0);
    for (i = 0; i < HISTOGRAM_BOUNDS; i++) {
        seen += h->counts[i];
        lua_pushinteger(L, (lua_Integer)seen);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "counts");
    lua_pushinteger(L, (lua_Integer)(seen + h->counts[HISTOGRAM_BOUNDS]));
    lua_setfield(L, -2, "count");
    lua_pushnumber(L, h->sum);
    lua_setfield(L, -2, "sum");
}

/* The durations: histograms = { acquire_wait, query, connect, hold }. */
static void push_histograms(lua_State *L, const pool_stats *st)
{
    lua_createtable(L, 0, 4);
    push_histogram(L, &st->acquire_wait);
    lua_setfield(L, -2, "acquire_wait");
    push_histogram(L, &st->query_time);
    lua_setfield(L, -2, "query");
    push_histogram(L, &st->connect_time);
    lua_setfield(L, -2, "connect");
    push_histogram(L, &st->hold_time);
    lua_setfield(L, -2, "hold");
    lua_setfield(L, -2, "histograms");
}

/* connect_errors_by_class = { ["08"] = n, timeout = n, ... } */
static void push_error_classes(lua_State *L, const pool_stats *st)
{
    int i;
    lua_createtable(L, 0, st->n_connect_error_classes);
    for (i = 0; i < st->n_connect_error_classes; i++) {
        lua_pushinteger(L, (lua_Integer)st->connect_error_classes[i].count);
        lua_setfield(L, -2, st->connect_error_classes[i].name);
    }
    lua_setfield(L, -2, "connect_errors_by_class");
}

/* window = what the health window saw; health_options = its thresholds. */
static void push_window(lua_State *L, const pool_stats *st,
                        const pool_health_config *h)
{
    const pool_window *w = &st->window;
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, w->seconds);
    lua_setfield(L, -2, "seconds");
    lua_pushinteger(L, w->waiting_seconds);
    lua_setfield(L, -2, "waiting_seconds");
    lua_pushinteger(L, (lua_Integer)w->timeouts);
    lua_setfield(L, -2, "timeouts");
    lua_pushinteger(L, (lua_Integer)w->full_rejects);
    lua_setfield(L, -2, "full_rejects");
    lua_pushinteger(L, (lua_Integer)w->connect_rejects);
    lua_setfield(L, -2, "connect_rejects");
    push_histogram(L, &w->acquire_wait);
    lua_setfield(L, -2, "acquire_wait");
    lua_setfield(L, -2, "window");

    lua_createtable(L, 0, 5);
    lua_pushinteger(L, h->window);
    lua_setfield(L, -2, "window");
    lua_pushnumber(L, h->waiting_ratio);
    lua_setfield(L, -2, "waiting_ratio");
    lua_pushnumber(L, h->wait_p95);
    lua_setfield(L, -2, "wait_p95");
    lua_pushinteger(L, h->timeouts);
    lua_setfield(L, -2, "timeouts");
    lua_pushinteger(L, h->connect_failures);
    lua_setfield(L, -2, "connect_failures");
    lua_setfield(L, -2, "health_options");
}

#define SET_INT(field) \
    (lua_pushinteger(L, (lua_Integer)st.field), lua_setfield(L, -2, #field))
#define SET_NUM(field) \
    (lua_pushnumber(L, st.field), lua_setfield(L, -2, #field))

static int lpool_stats(lua_State *L)
{
    pool *p = lpool_check(L, "stats");
    pool_stats st;

    pool_get_stats(p, &st);
    lua_createtable(L, 0, 56);
    lua_pushstring(L, st.name);
    lua_setfield(L, -2, "name");
    SET_INT(pid); SET_INT(max); SET_INT(min);
    SET_INT(total); SET_INT(idle); SET_INT(in_use); SET_INT(connecting);
    SET_INT(waiting);
    SET_INT(acquired); SET_INT(released); SET_INT(created); SET_INT(closed);
    SET_INT(timeouts); SET_INT(connect_errors); SET_INT(leaked);
    SET_INT(queries); SET_INT(query_errors); SET_INT(slow_queries);
    SET_INT(rollbacks); SET_INT(closed_idle); SET_INT(closed_lent); SET_INT(closed_lifetime);
    SET_INT(closed_broken); SET_INT(closed_discarded); SET_INT(closed_shutdown);
    SET_INT(shutdown_rejects); SET_INT(full_rejects); SET_INT(connect_rejects);
    SET_INT(acquired_waited);
    SET_INT(connect_failures); SET_INT(connect_attempts); SET_INT(limit);
    SET_INT(retries);
    if (st.server_slots >= 0)
        SET_INT(server_slots);
    SET_NUM(backoff);
    if (st.limit_reason[0]) {
        lua_pushstring(L, st.limit_reason);
        lua_setfield(L, -2, "limit_reason");
    }
    if (st.max_shared > 0) {
        SET_INT(max_shared);
        SET_INT(shared_used);
    }
    SET_NUM(wait_time_total); SET_NUM(wait_time_max);
    SET_NUM(wait_time_max_recent); SET_NUM(query_time_total);
    lua_pushinteger(L, st.n_replicas);
    lua_setfield(L, -2, "replicas");
    push_histograms(L, &st);
    push_error_classes(L, &st);
    push_window(L, &st, &pool_get_config(p)->health);
    lua_pushboolean(L, st.closing);
    lua_setfield(L, -2, "shut_down");
    lctx_flush_log(L);
    return 1;
}

/* history(): per-second samples of the gauges, oldest first. */
static int lpool_history(lua_State *L)
{
    pool *p = lpool_check(L, "history");
    pool_sample *samples = (pool_sample *)lua_newuserdata(
        L, sizeof *samples * POOL_HISTORY);    /* the GC frees it */
    int n, i;

    n = pool_history(p, samples);
    lua_createtable(L, n, 0);
    for (i = 0; i < n; i++) {
        lua_createtable(L, 0, 6);
        lua_pushinteger(L, (lua_Integer)samples[i].time);
        lua_setfield(L, -2, "time");
#define SAMPLE(field) \
        (lua_pushinteger(L, samples[i].field), lua_setfield(L, -2, #field))
        SAMPLE(total); SAMPLE(idle); SAMPLE(in_use); SAMPLE(connecting);
        SAMPLE(waiting);
#undef SAMPLE
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* hogs(n): the n sites (default 10) with the longest total hold, longest
 * first, as { site, count, total, max, held }; nil and a message when the
 * pool does not track them. */
static int lpool_hogs(lua_State *L)
{
    pool *p = lpool_check(L, "hogs");
    hogs *h = pool_hogs(p);
    hogs_site *sites;
    lua_Number want = 10;
    int n, i;

    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TNUMBER)
            return lcommon_argerror(L, 1, "hogs", "n must be a number, got %s",
                                    luaL_typename(L, 2));
        want = lua_tonumber(L, 2);
        if (!(want >= 0))
            return lcommon_argerror(L, 1, "hogs", "n must be >= 0");
    }
    if (!h) {
        lua_pushnil(L);
        lua_pushfstring(L, "pool \"%s\" does not track hogs (configure it "
                        "with track_hogs = true)", pool_get_config(p)->name);
        return 2;
    }
    sites = (hogs_site *)lua_newuserdata(
        L, sizeof *sites * (HOGS_MAX_SITES + 1));    /* the GC frees it */
    n = hogs_top(h, sites);
    if (want < n)
        n = (int)want;
    lua_createtable(L, n, 0);
    for (i = 0; i < n; i++) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, sites[i].where);
        lua_setfield(L, -2, "site");
        lua_pushinteger(L, (lua_Integer)sites[i].count);
        lua_setfield(L, -2, "count");
        lua_pushnumber(L, sites[i].total);
        lua_setfield(L, -2, "total");
        lua_pushnumber(L, sites[i].max);
        lua_setfield(L, -2, "max");
        lua_pushinteger(L, sites[i].held);
        lua_setfield(L, -2, "held");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

int lpool_push_shutdown_outcome(lua_State *L, int clean)
{
    lctx_flush_log(L);
    if (clean) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, "connections still in use at the deadline were closed");
    return 2;
}

static int lpool_shutdown(lua_State *L)
{
    pool *p = lpool_check(L, "shutdown");
    handle_opts o = opts_arg(L, 2, "shutdown", 10.0, 0);
    return lpool_push_shutdown_outcome(L, pool_shutdown(p, o.timeout));
}

static int lpool_name(lua_State *L)
{
    lua_pushstring(L, pool_get_config(lpool_check(L, "name"))->name);
    return 1;
}

static int lpool_is_shut_down(lua_State *L)
{
    lua_pushboolean(L, pool_is_closing(lpool_check(L, "is_shut_down")));
    return 1;
}

static const luaL_Reg lpool_methods[] = {
    { "acquire", lpool_acquire },
    { "query", lpool_query },
    { "exec", lpool_exec },
    { "stats", lpool_stats },
    { "history", lpool_history },
    { "hogs", lpool_hogs },
    { "shutdown", lpool_shutdown },
    { "name", lpool_name },
    { "is_shut_down", lpool_is_shut_down },
    { NULL, NULL },
};

void lpool_setfuncs(lua_State *L, const char *prefix, int wrapped)
{
    lcommon_setfuncs(L, lpool_methods, prefix, wrapped);
}

void lpool_open(lua_State *L)
{
    luaL_getmetatable(L, LPOOL_MT);
    lua_newtable(L);
    lpool_setfuncs(L, "pool:", 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lpool_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lpool_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
