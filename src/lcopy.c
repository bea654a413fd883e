/*
 * lcopy.c - COPY on a connection handle: conn:copy_in(sql, source) feeds
 * COPY ... FROM STDIN from a string, a list of strings or a function giving
 * chunks; conn:copy_out(sql, sink) gives each chunk of COPY ... TO STDOUT
 * to a function. Lua runs between the chunks, with the connection not held
 * busy (as between the rows of conn:rows), so each chunk is one round of
 * pool_begin_use / pq / pool_end_use.
 *
 * If the source or the sink raises, the COPY is ended first (COPY IN
 * refused, so nothing is copied; COPY OUT cancelled and drained) and the
 * error goes on unchanged: the connection stays usable.
 */
#include <string.h>

#include "lcopy.h"

#include "clock.h"
#include "lcommon.h"
#include "lconn.h"
#include "lresult.h"
#include "lstatement.h"

/* The checkout a COPY runs on, and when it began. */
typedef struct copy_run {
    pool *p;
    pool_slot *slot;
    uint64_t ticket;
    const char *sql;
    double started;
} copy_run;

/* The connection for one step, or NULL with err (revoked by shutdown);
 * raises when the checkout has ended. */
static pq_conn *step_begin(lua_State *L, copy_run *run, pq_error *err)
{
    pq_conn *conn = pool_begin_use(run->p, run->slot, run->ticket, err);
    if (!conn && strcmp(err->code, PQ_CODE_SHUTDOWN) != 0)
        luaL_error(L, "pgpool: connection released");
    return conn;
}

static void step_end(copy_run *run)
{
    pool_end_use(run->p, run->slot, NULL, 0, 0, 0);
}

/* The COPY is over, its last step still begun: end that step counting
 * the COPY as one statement. */
static void step_end_counted(copy_run *run, int failed)
{
    pool_end_use(run->p, run->slot, run->sql, run->started, 1, failed);
}

/* The COPY failed between steps: count it (when the checkout holds). */
static void count_failed(copy_run *run)
{
    pq_error err;
    if (pool_begin_use(run->p, run->slot, run->ticket, &err))
        step_end_counted(run, 1);
}

/* Begin the COPY of sql (index 2 as lstatement_sql reads it). 1, or 0 with
 * nil, msg, code, info pushed. */
static int start(lua_State *L, copy_run *run, const char *name,
                 int direction, int *pushed)
{
    double timeout;
    pq_error err;
    pq_conn *conn;

    lconn_checkout(L, 1, name, &run->p, &run->slot, &run->ticket);
    run->sql = lstatement_sql(L, name, &timeout);
    if (timeout < 0)              /* no statement table: the pool's bound */
        timeout = pool_get_config(run->p)->query_timeout;
    conn = step_begin(L, run, &err);
    if (!conn) {
        *pushed = lresult_push_error(L, &err);
        return 0;
    }
    run->started = clock_now();
    if (pq_copy_begin(conn, run->sql, direction, timeout, &err)) {
        step_end(run);
        return 1;
    }
    step_end_counted(run, 1);
    *pushed = lresult_push_error(L, &err);
    return 0;
}

/* End a COPY IN early with reason (the server refuses it: nothing is
 * copied), then raise the error on the stack top unchanged. */
static int abort_in_and_raise(lua_State *L, copy_run *run, const char *reason)
{
    pq_error err;
    pq_conn *conn = pool_begin_use(run->p, run->slot, run->ticket, &err);
    if (conn) {
        pq_result *res = pq_copy_end(conn, reason, &err);
        pq_result_free(res);
        step_end_counted(run, 1);
    }
    return lua_error(L);
}

/* Send the chunk on the stack top (popped). 1, or 0 with err. */
static int put_chunk(lua_State *L, copy_run *run, pq_error *err)
{
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    pq_conn *conn = step_begin(L, run, err);
    int ok = conn && pq_copy_put(conn, s, len, err);
    if (conn)
        step_end(run);
    lua_pop(L, 1);
    return ok;
}

/* Push the next chunk of the source at index 3 (i counts a list's
 * entries); 0 at its end. A source that raises, or gives what is not a
 * string, ends the COPY and raises. */
static int next_chunk(lua_State *L, copy_run *run, int *i)
{
    switch (lua_type(L, 3)) {
    case LUA_TSTRING:
        if (*i > 0)
            return 0;
        (*i)++;
        lua_pushvalue(L, 3);
        return 1;
    case LUA_TTABLE:
        lua_rawgeti(L, 3, ++*i);
        break;
    default:                      /* a function */
        lua_pushvalue(L, 3);
        if (lua_pcall(L, 0, 1, 0) != LUA_OK)
            return abort_in_and_raise(L, run, "the copy_in source raised");
        ++*i;
        break;
    }
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TBOOLEAN &&
                             !lua_toboolean(L, -1))) {
        lua_pop(L, 1);
        return 0;
    }
    if (lua_type(L, -1) == LUA_TSTRING)
        return 1;
    lua_pushfstring(L, "bad chunk %d from the copy_in source (a string "
                    "expected, got %s)", *i, luaL_typename(L, -1));
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
    return abort_in_and_raise(L, run, "the copy_in source gave a non-string");
}

/* conn:copy_in(sql, source): sql a COPY ... FROM STDIN; source a string,
 * a list of strings, or a function returning the next chunk (nil at the
 * end). res (res.affected: rows copied), or nil, msg, code, info. */
static int lcopy_in(lua_State *L)
{
    copy_run run;
    pq_error err;
    pq_result *res = NULL;
    pq_conn *conn;
    int pushed = 0, i = 0, t = lua_type(L, 3);

    if (t != LUA_TSTRING && t != LUA_TTABLE && t != LUA_TFUNCTION)
        return lcommon_argerror(L, 2, "copy_in", "source must be a string, "
                                "a list of strings or a function, got %s",
                                luaL_typename(L, 3));
    lua_settop(L, 3);
    if (!start(L, &run, "copy_in", PQ_COPY_IN, &pushed))
        return pushed;
    while (next_chunk(L, &run, &i))
        if (!put_chunk(L, &run, &err))
            goto failed;
    conn = step_begin(L, &run, &err);
    if (!conn)
        return lresult_push_error(L, &err);
    res = pq_copy_end(conn, NULL, &err);
    step_end_counted(&run, res == NULL);
    return lstatement_push_outcome(L, res != NULL, 0, res, &err);
failed:
    /* the connection failed, or the COPY was ended under us (what is left
     * of it the next statement reads) */
    count_failed(&run);
    return lresult_push_error(L, &err);
}

/* Push the chunk (light userdata 1, length 2), protected by copy_out so
 * that a memory error cannot lose the chunk. */
static int push_chunk(lua_State *L)
{
    lua_pushlstring(L, (const char *)lua_touserdata(L, 1),
                    (size_t)lua_tointeger(L, 2));
    return 1;
}

/* conn:copy_out(sql, sink): sql a COPY ... TO STDOUT; sink(chunk) is
 * called with each chunk (a row, in COPY's text, csv or binary format).
 * res (res.affected: rows copied), or nil, msg, code, info. */
static int lcopy_out(lua_State *L)
{
    copy_run run;
    pq_error err;
    int pushed = 0;

    if (lua_type(L, 3) != LUA_TFUNCTION)
        return lcommon_argerror(L, 2, "copy_out", "sink must be a function, "
                                "got %s", luaL_typename(L, 3));
    lua_settop(L, 3);
    if (!start(L, &run, "copy_out", PQ_COPY_OUT, &pushed))
        return pushed;
    for (;;) {
        pq_result *res;
        char *chunk;
        int len, rc, status;
        pq_conn *conn;

        lua_settop(L, 3);
        lua_pushvalue(L, 3);
        lua_pushcfunction(L, push_chunk);   /* may allocate: before chunk */
        conn = step_begin(L, &run, &err);
        if (!conn)
            return lresult_push_error(L, &err);
        rc = pq_copy_get(conn, &chunk, &len, &res, &err);
        if (rc <= 0) {
            step_end_counted(&run, rc < 0);
            return lstatement_push_outcome(L, rc == 0, 0, res, &err);
        }
        step_end(&run);
        lua_pushlightuserdata(L, chunk);
        lua_pushinteger(L, len);
        status = lua_pcall(L, 2, 1, 0);
        pq_free_chunk(chunk);
        if (status == LUA_OK)
            status = lua_pcall(L, 1, 0, 0);
        if (status != LUA_OK) {
            conn = pool_begin_use(run.p, run.slot, run.ticket, &err);
            if (conn) {
                pq_copy_abort(conn);
                step_end_counted(&run, 1);
            }
            return lua_error(L);
        }
    }
}

void lcopy_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "copy_in", lcopy_in },
        { "copy_out", lcopy_out },
        { NULL, NULL },
    };
    lconn_add_methods(L, methods);
}
