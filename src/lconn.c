/*
 * lconn.c - the connection handle: one checkout of a pooled connection.
 *
 * The userdata holds (pool, slot, ticket) and a pool reference. It is made
 * before the checkout it will hold (lconn_new, then lconn_attach), so that
 * no memory error can leave a checkout without a handle. release, __close
 * and __gc end the checkout, each at most once; after that every method
 * but release/discard raises "pgpool: connection released". __gc never
 * raises and does no network I/O (pool.c defers the rollback or close).
 * query and exec run through lstatement.c like the pool's. With track_hogs
 * the handle carries its checkout's site (hogs.h), and the end of the
 * checkout ends the hold there: one branch when tracking is off.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lconn.h"

#include "lcommon.h"
#include "lparam.h"
#include "lresult.h"
#include "lstatement.h"
#include "clock.h"

struct lconn {
    pool *p;
    pool_slot *slot;
    uint64_t ticket;
    int released;
    int streamed;       /* rows() opened a stream on this checkout */
    int discard_collected;    /* __gc closes it rather than returning it */
    hogs *hogs;               /* the site's table, or NULL */
    hogs_mark site;
    double since;             /* when the checkout began */
};

lconn *lconn_new(lua_State *L)
{
    lconn *c = (lconn *)lua_newuserdata(L, sizeof *c);
    c->p = NULL;
    c->slot = NULL;
    c->ticket = 0;
    c->released = 1;
    c->streamed = 0;
    c->discard_collected = 0;
    c->hogs = NULL;
    lua_pushvalue(L, lua_upvalueindex(LUPV_CONN_MT));
    if (!lua_istable(L, -1)) {        /* called without the upvalues */
        lua_pop(L, 1);
        luaL_getmetatable(L, LCONN_MT);
    }
    lua_setmetatable(L, -2);
    return c;
}

void lconn_attach(lconn *c, pool *p, pool_slot *slot, uint64_t ticket)
{
    c->p = p;
    c->slot = slot;
    c->ticket = ticket;
    c->released = 0;
    pool_ref(p);
}

void lconn_track(lconn *c, hogs *h, hogs_mark mark, double since)
{
    c->hogs = h;
    c->site = mark;
    c->since = since;
}

static lconn *lconn_check(lua_State *L, int idx, const char *name)
{
    lconn *c = (lconn *)lcommon_check(L, idx, LUPV_CONN_MT, LCONN_MT, name);
    if (c->released)
        luaL_error(L, "pgpool: connection released");
    return c;
}

void lconn_add_methods(lua_State *L, const luaL_Reg *methods)
{
    luaL_getmetatable(L, LCONN_MT);
    lua_getfield(L, -1, "__index");
    lcommon_setfuncs(L, methods, "conn:", 0);
    lua_pop(L, 2);
}

void lconn_checkout(lua_State *L, int idx, const char *name, pool **p,
                    pool_slot **slot, uint64_t *ticket)
{
    lconn *c = lconn_check(L, idx, name);
    *p = c->p;
    *slot = c->slot;
    *ticket = c->ticket;
}

/* Run sql on the checkout: with ps, as one statement with those parameters
 * (*res set on success); with ps NULL, as a script. No Lua calls. Returns 1
 * on success, 0 with err on a runtime failure, -1 when the checkout was
 * already released (a misuse the caller raises for). */
static int lconn_execute(pool *p, pool_slot *slot, uint64_t ticket,
                         const char *sql, double timeout,
                         const lparam_set *ps, pq_result **res, pq_error *err)
{
    pq_conn *conn = pool_begin_use(p, slot, ticket, err);
    double started;
    int ok;

    if (!conn)
        return strcmp(err->code, PQ_CODE_SHUTDOWN) == 0 ? 0 : -1;
    started = clock_now();
    ok = lstatement_run(p, slot, ticket, sql, timeout, ps, started, res,
                        err);
    pool_end_use(p, slot, sql, started, 1, !ok);
    return ok;
}

/* End the checkout once; the handle is dead afterwards. */
static void end_checkout(lconn *c, enum pool_release_how how)
{
    if (c->released)
        return;
    c->released = 1;
    if (c->hogs)
        hogs_leave(c->hogs, c->site, clock_now() - c->since);
    pool_release(c->p, c->slot, c->ticket, how);
    pool_unref(c->p);
}

static int run(lua_State *L, int exec)
{
    lconn *c = lconn_check(L, 1, exec ? "exec" : "query");
    lparam_set ps;
    double timeout;
    const char *sql = lstatement_args(L, exec ? "exec" : "query", exec, &ps,
                                      &timeout);
    pq_result *res = NULL;
    pq_error err;
    int rc = lconn_execute(c->p, c->slot, c->ticket, sql, timeout,
                           exec ? NULL : &ps, &res, &err);

    if (rc < 0)
        return luaL_error(L, "pgpool: connection released");
    return lstatement_push_outcome(L, rc, exec, res, &err);
}

static int lconn_query(lua_State *L)
{
    return run(L, 0);
}

/* commit(conn), for the facade's transaction: COMMIT run as
 * conn:query("COMMIT") runs it, without building a result table. Returns
 * true when it committed, false when the server answered ROLLBACK (a
 * statement of the transaction had failed), or nil, msg, code, info. */
static int lconn_commit(lua_State *L)
{
    lconn *c = lconn_check(L, 1, "commit");
    lparam_set ps;
    lparam_who who;
    pq_result *res = NULL;
    pq_error err;
    int rc, rolled_back;

    who.name = "commit";
    who.statement = 0;
    who.arg = 0;
    lparam_encode(L, 2, 0, &ps, &who);
    rc = lconn_execute(c->p, c->slot, c->ticket, "COMMIT", -1, &ps, &res,
                       &err);
    if (rc < 0)
        return luaL_error(L, "pgpool: connection released");
    if (rc == 0)
        return lstatement_push_outcome(L, 0, 0, NULL, &err);
    rolled_back = strcmp(pq_result_command(res), "ROLLBACK") == 0;
    pq_result_free(res);
    lctx_flush_log(L);
    lua_pushboolean(L, !rolled_back);
    return 1;
}

/* discard_collected(conn), for the listener: the checkout holds session
 * state (LISTENs) the next user must not inherit, so __gc closes the
 * connection (in the background) instead of returning it. In Lua 5.4 the
 * connection's __gc runs before its listener's (finalizers run newest
 * first), and LuaJIT/5.1 run no __gc on the listener's table. */
static int lconn_discard_collected(lua_State *L)
{
    lconn *c = lconn_check(L, 1, "discard_collected");
    c->discard_collected = 1;
    return 0;
}

static int lconn_exec(lua_State *L)
{
    return run(L, 1);
}

/* A row stream still open on the checkout ends before it goes back (read
 * to its end or cancelled, bounded), so the connection is reused. */
static void close_stream(lconn *c)
{
    pq_error err;
    pq_conn *conn;

    if (c->released || !c->streamed)
        return;
    conn = pool_begin_use(c->p, c->slot, c->ticket, &err);
    if (!conn)
        return;
    pq_stream_close(conn, 0);
    pool_end_use(c->p, c->slot, NULL, 0, 0, 0);
}

static int lconn_release(lua_State *L)
{
    lconn *c = (lconn *)lcommon_check(L, 1, LUPV_CONN_MT, LCONN_MT,
                                      "release");
    close_stream(c);
    end_checkout(c, POOL_RELEASE);
    lctx_flush_log(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int lconn_discard(lua_State *L)
{
    lconn *c = (lconn *)lcommon_check(L, 1, LUPV_CONN_MT, LCONN_MT,
                                      "discard");
    end_checkout(c, POOL_DISCARD);
    lctx_flush_log(L);
    lua_pushboolean(L, 1);
    return 1;
}

static int lconn_gc(lua_State *L)
{
    lconn *c = (lconn *)lua_touserdata(L, 1);
    if (c)
        end_checkout(c, c->discard_collected ? POOL_COLLECTED_DISCARD
                                             : POOL_COLLECTED);
    return 0;
}

/* Pipeline storage: a userdata whose __gc frees what is left of the items
 * when the call raises halfway. */
typedef struct batch {
    int count;
    pq_batch_item *items;
    lparam_set *sets;
} batch;

static int batch_gc(lua_State *L)
{
    batch *b = (batch *)lua_touserdata(L, 1);
    if (b->items)
        pq_batch_clear(b->items, b->count);
    free(b->items);
    free(b->sets);
    b->items = NULL;
    b->sets = NULL;
    return 0;
}

/* The storage, owned by its __gc before anything is allocated. */
static batch *batch_new(lua_State *L, int count)
{
    batch *b = (batch *)lua_newuserdata(L, sizeof *b);
    b->count = 0;
    b->items = NULL;
    b->sets = NULL;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, batch_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    b->items = calloc((size_t)count + 1, sizeof *b->items);
    /* not zeroed (a set is ~1 kB): lparam_encode sets what it uses */
    b->sets = malloc(((size_t)count + 1) * sizeof *b->sets);
    if (!b->items || !b->sets)
        luaL_error(L, "pgpool: out of memory");
    b->count = count;
    return b;
}

/* The SQL of statement i + 1, on the stack top, for pq_pipeline (the
 * error's text is made only for an error). */
static const char *statement_sql(lua_State *L, int i, const lparam_who *who)
{
    char what[32];
    size_t len;
    const char *sql = lua_type(L, -1) == LUA_TSTRING
                          ? lua_tolstring(L, -1, &len) : NULL;

    if (sql && !memchr(sql, '\0', len))
        return sql;
    snprintf(what, sizeof what, "statement %d: sql", i + 1);
    return lcommon_check_cstring(L, -1, who->arg ? who->arg : 1, who->name,
                                 what, NULL);
}

/* run_pipeline(list, sync_each): list[i] = { sql, n = #params, params... }
 * as built by the facade's conn:pipeline. Returns an array with, for each
 * statement, its result or { error = msg, code = code, info = {...} }; or
 * nil, msg, code, info when the connection failed. Misuse in a statement is
 * reported as an argument of p:query when the facade calls (registered
 * wrapped, with the prefix "p:"), else as argument 1 of conn:run_pipeline.
 * The list is read raw: no Lua code runs until the batch has been sent. */
static int lconn_run_pipeline(lua_State *L)
{
    lconn *c = lconn_check(L, 1, "run_pipeline");
    int sync_each = lua_toboolean(L, 3);
    int count, i, anchors, failed = 0, ok;
    const pool_config *cfg = pool_get_config(c->p);
    lparam_who who;
    pq_error err;
    pq_conn *conn;
    double started;
    batch *b;

    if (lua_type(L, 2) != LUA_TTABLE)
        return lcommon_argerror(L, 1, "run_pipeline", "table expected, got %s",
                                luaL_typename(L, 2));
    who.name = lcommon_wrapped(L) ? "query" : "run_pipeline";
    who.arg = lcommon_wrapped(L) ? 0 : 1;
    count = (int)lua_rawlen(L, 2);
    lua_settop(L, 3);
    b = batch_new(L, count);              /* 4 */
    lua_createtable(L, 2 * count, 0);     /* 5: keeps encoded values alive */
    lua_pushliteral(L, "n");              /* 6: the key, made once */
    anchors = 0;
    for (i = 0; i < count; i++) {
        int n, k, item;
        lua_rawgeti(L, 2, i + 1);
        item = lua_gettop(L);
        if (!lua_istable(L, item))
            return lcommon_argerror(L, 1, "run_pipeline",
                                    "statement %d is not a table", i + 1);
        who.statement = i + 1;
        lua_rawgeti(L, item, 1);
        b->items[i].sql = statement_sql(L, i, &who);
        lua_pushvalue(L, 6);
        lua_rawget(L, item);
        n = lua_type(L, -1) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : 0;
        lua_pop(L, 1);
        luaL_checkstack(L, n + 8, "pgpool: too many parameters");
        for (k = 1; k <= n; k++)
            lua_rawgeti(L, item, k + 1);
        lparam_encode(L, item + 2, n, &b->sets[i], &who);
        b->items[i].params = b->sets[i].pq;
        /* Park the SQL and what encoding pushed (array literals, bytea
         * values, storage); the item keeps its parameters, and the
         * anchors keep the item. */
        while (lua_gettop(L) > item + 1 + n)
            lua_rawseti(L, 5, ++anchors);
        lua_settop(L, item + 1);
        lua_rawseti(L, 5, ++anchors);
        lua_rawseti(L, 5, ++anchors);
    }

    conn = pool_begin_use(c->p, c->slot, c->ticket, &err);
    if (!conn) {
        if (strcmp(err.code, PQ_CODE_SHUTDOWN) != 0)
            return luaL_error(L, "pgpool: connection released");
        return lresult_push_error(L, &err);
    }
    started = clock_now();
    ok = pq_pipeline(conn, b->items, count, sync_each, cfg->query_timeout,
                     &err);
    for (i = 0; i < count; i++)
        failed += b->items[i].err != NULL || (!ok && !b->items[i].res);
    pool_end_use(c->p, c->slot, b->items[0].sql ? b->items[0].sql : "",
                 started, count, failed);
    lctx_flush_log(L);
    if (!ok) {
        pq_batch_clear(b->items, count);
        return lresult_push_error(L, &err);
    }
    lua_createtable(L, count, 0);
    for (i = 0; i < count; i++) {
        pq_result *res = b->items[i].res;
        if (res) {
            b->items[i].res = NULL;      /* lresult_push frees it */
            lresult_push(L, res);
        } else if (b->items[i].err) {
            lresult_push_error_table(L, b->items[i].err);
        } else {
            pq_error none;
            pq_error_set(&none, PQ_CODE_CLOSED, "no result received");
            lresult_push_error_table(L, &none);
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* ---- row streams ------------------------------------------------------- */

#define LROWS_MT "pgpool.rows"

/* One conn:rows call: the loop's closing value. It holds a pool reference
 * of its own (the checkout may end first) and, when the statement could
 * not even be sent, the error its first iteration gives. */
typedef struct lrows {
    pool *p;
    pool_slot *slot;
    uint64_t ticket, seq;
    double busy;        /* the server's time so far: the send and each wait
                         * for a row, not the caller's loop (what the slow-
                         * query log and query_time measure) */
    int done, open_failed;
    pq_error err;
    char sql[201];      /* for the count of a stream closed early (the slow-
                         * query log shows 200 characters) */
} lrows;

/* The iteration's failure: false, msg, code, info (false, not nil, so that
 * the for loop runs once more and the caller sees it). */
static int rows_failure(lua_State *L, const pq_error *err)
{
    lresult_push_error(L, err);
    lua_pushboolean(L, 0);
    lua_replace(L, -5);
    return 4;
}

/* The iterator's upvalues: the state's context first, where lctx_get
 * looks for it (LUPV_CTX), then the lrows, the connection handle (kept
 * alive while the loop runs) and the SQL (for the slow-query log). */
enum { ROWS_UPV_STATE = LUPV_CTX + 1, ROWS_UPV_HANDLE, ROWS_UPV_SQL };

static int rows_next(lua_State *L)
{
    lrows *r = (lrows *)lua_touserdata(L, lua_upvalueindex(ROWS_UPV_STATE));
    pq_result *row;
    pq_conn *conn;
    pq_error err;
    double t0;
    int rc;

    if (r->done)
        return 0;
    if (r->open_failed) {
        r->done = 1;
        return rows_failure(L, &r->err);
    }
    conn = pool_begin_use(r->p, r->slot, r->ticket, &err);
    if (!conn) {
        r->done = 1;
        if (strcmp(err.code, PQ_CODE_SHUTDOWN) != 0)
            return luaL_error(L, "pgpool: connection released");
        return rows_failure(L, &err);
    }
    t0 = clock_now();
    rc = pq_stream_next(conn, r->seq, &row, &err);
    r->busy += clock_now() - t0;
    if (rc > 0) {
        pool_end_use(r->p, r->slot, NULL, 0, 0, 0);
        lresult_push_row(L, row);
        return 1;
    }
    r->done = 1;
    pool_end_use(r->p, r->slot, lua_tostring(L, lua_upvalueindex(ROWS_UPV_SQL)),
                 clock_now() - r->busy, 1, rc < 0);
    lctx_flush_log(L);
    return rc == 0 ? 0 : rows_failure(L, &err);
}

/* rows:close() and __close: end the stream early (cancelled, the rest
 * dropped, bounded); nothing when it is over. */
static int rows_close(lua_State *L)
{
    lrows *r = (lrows *)luaL_checkudata(L, 1, LROWS_MT);
    pq_error err;
    pq_conn *conn;

    if (r->done || r->open_failed || !r->p)
        return 0;
    r->done = 1;
    conn = pool_begin_use(r->p, r->slot, r->ticket, &err);
    if (conn) {
        double t0 = clock_now();
        pq_stream_close(conn, r->seq);
        r->busy += clock_now() - t0;
        pool_end_use(r->p, r->slot, r->sql, clock_now() - r->busy, 1, 0);
    }
    return 0;
}

static int rows_gc(lua_State *L)
{
    lrows *r = (lrows *)lua_touserdata(L, 1);
    if (r->p)
        pool_unref(r->p);
    r->p = NULL;
    return 0;
}

/* conn:rows(sql, ...): for row in conn:rows(sql, ...) do ... end. Returns
 * the iterator, nil, nil and the closing value (Lua 5.4 closes it when the
 * loop ends by break or error; elsewhere anything run on the connection,
 * or its release, ends the stream). */
static int lconn_rows(lua_State *L)
{
    lconn *c = lconn_check(L, 1, "rows");
    lparam_set ps;
    double timeout;
    const char *sql = lstatement_args(L, "rows", 0, &ps, &timeout);
    lrows *r;
    pq_conn *conn;
    int sql_idx = 2;

    r = (lrows *)lua_newuserdata(L, sizeof *r);
    memset(r, 0, sizeof *r);
    if (luaL_newmetatable(L, LROWS_MT)) {
        lua_pushcfunction(L, rows_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, rows_gc);
        lua_setfield(L, -2, "__gc");
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, rows_close);
        lua_setfield(L, -2, "close");
        lua_setfield(L, -2, "__index");
    }
    lua_setmetatable(L, -2);
    conn = pool_begin_use(c->p, c->slot, c->ticket, &r->err);
    if (!conn) {
        if (strcmp(r->err.code, PQ_CODE_SHUTDOWN) != 0)
            return luaL_error(L, "pgpool: connection released");
        r->open_failed = 1;
    } else {
        r->p = c->p;
        pool_ref(r->p);
        r->slot = c->slot;
        r->ticket = c->ticket;
        r->busy = clock_now();    /* until the statement is sent */
        snprintf(r->sql, sizeof r->sql, "%s", sql);
        c->streamed = 1;
        if (timeout < 0)          /* no statement table: the pool's bound */
            timeout = pool_get_config(c->p)->query_timeout;
        r->open_failed = !pq_stream_open(conn, sql, &ps.pq, timeout, &r->seq,
                                         &r->err);
        r->busy = clock_now() - r->busy;
        pool_end_use(c->p, c->slot, NULL, 0, 0, 0);
    }
    lua_pushvalue(L, lua_upvalueindex(LUPV_CTX));   /* upvalue 1 */
    lua_pushvalue(L, -2);             /* upvalue 2: r */
    lua_pushvalue(L, 1);              /* upvalue 3: the handle */
    lua_pushvalue(L, sql_idx);        /* upvalue 4: the SQL */
    lua_pushcclosure(L, rows_next, 4);
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushvalue(L, -4);             /* r, the closing value */
    return 4;
}

/* Push the C string at the light userdata 1 (run protected by escape). */
static int push_cstring(lua_State *L)
{
    lua_pushstring(L, (const char *)lua_touserdata(L, 1));
    return 1;
}

static int escape(lua_State *L, const char *name,
                  char *(*fn)(pq_conn *, const char *, size_t, pq_error *))
{
    lconn *c = lconn_check(L, 1, name);
    size_t len;
    const char *s = lcommon_check_cstring(L, 2, 1, name, "value", &len);
    pq_error err;
    pq_conn *conn;
    char *out;
    int status;

    lua_pushcfunction(L, push_cstring);   /* may allocate: before out */
    conn = pool_begin_use(c->p, c->slot, c->ticket, &err);
    if (!conn) {
        if (strcmp(err.code, PQ_CODE_SHUTDOWN) != 0)
            return luaL_error(L, "pgpool: connection released");
        return lresult_push_error(L, &err);
    }
    out = fn(conn, s, len, &err);
    pool_end_use(c->p, c->slot, NULL, 0, 0, 0);
    if (!out)
        return lresult_push_error(L, &err);
    lua_pushlightuserdata(L, out);
    status = lua_pcall(L, 1, 1, 0);
    pq_freemem(out);
    return status == LUA_OK ? 1 : lua_error(L);
}

static int lconn_escape_literal(lua_State *L)
{
    return escape(L, "escape_literal", pq_escape_literal);
}

static int lconn_escape_identifier(lua_State *L)
{
    return escape(L, "escape_identifier", pq_escape_identifier);
}

static int lconn_backend_pid(lua_State *L)
{
    lconn *c = lconn_check(L, 1, "backend_pid");
    pq_error err;
    pq_conn *conn = pool_begin_use(c->p, c->slot, c->ticket, &err);
    if (!conn)
        return luaL_error(L, "pgpool: connection released");
    lua_pushinteger(L, pq_backend_pid(conn));
    pool_end_use(c->p, c->slot, NULL, 0, 0, 0);
    return 1;
}

static int lconn_tostring(lua_State *L)
{
    lconn *c = (lconn *)luaL_checkudata(L, 1, LCONN_MT);
    if (c->released || !pool_checkout_valid(c->slot, c->ticket))
        lua_pushstring(L, "pgpool.conn (released)");
    else
        lua_pushfstring(L, "pgpool.conn (pool \"%s\")",
                        pool_get_config(c->p)->name);
    return 1;
}

static const luaL_Reg lconn_methods[] = {
    { "query", lconn_query },
    { "exec", lconn_exec },
    { "rows", lconn_rows },
    { "release", lconn_release },
    { "discard", lconn_discard },
    { "escape_literal", lconn_escape_literal },
    { "escape_identifier", lconn_escape_identifier },
    { "backend_pid", lconn_backend_pid },
    { "run_pipeline", lconn_run_pipeline },
    { NULL, NULL },
};

void lconn_open(lua_State *L)
{
    static const luaL_Reg close_fn[] = {
        { "__close", lconn_release },
        { NULL, NULL },
    };
    luaL_getmetatable(L, LCONN_MT);
    lua_newtable(L);
    lcommon_setfuncs(L, lconn_methods, "conn:", 0);
    lua_setfield(L, -2, "__index");
    lcommon_setfuncs(L, close_fn, "conn:", 0);
    lua_pushcfunction(L, lconn_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lconn_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

void lconn_setfuncs_facade(lua_State *L)
{
    static const luaL_Reg pipeline_fns[] = {
        { "run_pipeline", lconn_run_pipeline },
        { NULL, NULL },
    };
    static const luaL_Reg transaction_fns[] = {
        { "commit", lconn_commit },
        { "discard_collected", lconn_discard_collected },
        { NULL, NULL },
    };
    lcommon_setfuncs(L, pipeline_fns, "p:", 1);
    lcommon_setfuncs(L, transaction_fns, "conn:", 1);
}
