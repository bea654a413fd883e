/*
 * lnotify.c - conn:wait_notify(timeout): the next notification of the
 * channels the connection LISTENs to, as channel, payload, pid. The
 * listener the facade builds on it (pgpool.listen) keeps the channels and
 * reconnects.
 */
#include <math.h>
#include <string.h>

#include "lnotify.h"

#include "clock.h"
#include "lcommon.h"
#include "lconn.h"
#include "lresult.h"

/* Push the notification at light userdata 1 as channel, payload, pid (run
 * protected by lnotify_wait, so that a memory error cannot lose it). */
static int push_notify(lua_State *L)
{
    const pq_notify *n = (const pq_notify *)lua_touserdata(L, 1);
    lua_pushstring(L, pq_notify_channel(n));
    lua_pushstring(L, pq_notify_payload(n));
    lua_pushinteger(L, pq_notify_pid(n));
    return 3;
}

/* A listener's connection runs no statement: a shutdown must not wait for
 * it (nor leave it waiting for ever). The wait goes in slices of at most
 * WAIT_SLICE seconds and ends with the pool's "shutdown" error once the
 * pool is closing; pq_wait_notify's result otherwise. */
#define WAIT_SLICE 0.1

static int wait_in_slices(pool *p, pq_conn *conn, double timeout,
                          pq_notify **n, pq_error *err)
{
    double deadline = clock_now() + timeout;     /* inf for math.huge */

    for (;;) {
        double left = deadline - clock_now();
        int rc = pq_wait_notify(conn, left < WAIT_SLICE ? left : WAIT_SLICE,
                                n, err);
        if (rc != 0 || left <= WAIT_SLICE)
            return rc;
        if (pool_is_closing(p)) {
            pq_error_set(err, PQ_CODE_SHUTDOWN, "pool \"%s\" is shut down",
                         pool_get_config(p)->name);
            return -1;
        }
    }
}

static int lnotify_wait(lua_State *L)
{
    pool *p;
    pool_slot *slot;
    uint64_t ticket;
    double timeout;
    pq_notify *n;
    pq_error err;
    pq_conn *conn;
    int rc, status;

    lconn_checkout(L, 1, "wait_notify", &p, &slot, &ticket);
    if (lua_type(L, 2) != LUA_TNUMBER)
        return lcommon_argerror(L, 1, "wait_notify", "timeout must be a "
                                "number, got %s", luaL_typename(L, 2));
    timeout = lua_tonumber(L, 2);
    if (!(timeout >= 0))
        return lcommon_argerror(L, 1, "wait_notify", "timeout must be >= 0 "
                                "(math.huge: no limit)");
    lua_settop(L, 1);
    lua_checkstack(L, 6);
    lua_pushcfunction(L, push_notify);    /* may allocate: before n */
    conn = pool_begin_use(p, slot, ticket, &err);
    if (!conn) {
        if (strcmp(err.code, PQ_CODE_SHUTDOWN) != 0)
            return luaL_error(L, "pgpool: connection released");
        return lresult_push_error(L, &err);
    }
    rc = wait_in_slices(p, conn, timeout, &n, &err);
    pool_end_use(p, slot, NULL, 0, 0, 0);
    if (rc > 0) {
        lua_pushlightuserdata(L, n);
        status = lua_pcall(L, 1, 3, 0);
        pq_notify_free(n);
        lctx_flush_log(L);        /* may raise: after n is freed */
        return status == LUA_OK ? 3 : lua_error(L);
    }
    lctx_flush_log(L);
    if (rc < 0)
        return lresult_push_error(L, &err);
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    lua_pushliteral(L, "timeout");
    return 3;
}

void lnotify_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "wait_notify", lnotify_wait },
        { NULL, NULL },
    };
    lconn_add_methods(L, methods);
}
