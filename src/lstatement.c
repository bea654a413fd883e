/*
 * lstatement.c - one statement, from the Lua arguments of query or exec to
 * what they return: the SQL and its parameters off the stack, the run on a
 * connection the caller holds busy, and the result or error pushed.
 *
 * Shared by the two handles: the pool's query/exec (acquire, run, release
 * in one call) and the connection's. Acquiring and releasing are theirs;
 * this file neither checks out nor releases anything.
 */
#include "lstatement.h"

#include <string.h>

#include "lcommon.h"
#include "lresult.h"

/* A statement table { sql, timeout = t } at index 2: its SQL replaces it
 * there (kept on the stack while C reads it), its timeout goes to *timeout. */
static void statement_table(lua_State *L, const char *name, double *timeout)
{
    double t;

    lua_pushnil(L);
    while (lua_next(L, 2)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING &&
            strcmp(lua_tostring(L, -1), "timeout") == 0)
            continue;
        if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) == 1)
            continue;
        lcommon_argerror(L, 1, name, "statement table takes [1] = sql and "
                         "timeout, not %s %s", luaL_typename(L, -1),
                         lua_type(L, -1) == LUA_TSTRING ?
                         lua_tostring(L, -1) : "");
    }
    lua_getfield(L, 2, "timeout");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            lcommon_argerror(L, 1, name, "timeout must be a number, got %s",
                             luaL_typename(L, -1));
        t = lua_tonumber(L, -1);
        if (!(t >= 0))   /* NaN too */
            lcommon_argerror(L, 1, name, "timeout must be >= 0 (0: none)");
        *timeout = t;
    }
    lua_pop(L, 1);
    lua_rawgeti(L, 2, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
        lcommon_argerror(L, 1, name, "statement table's [1] must be the sql "
                         "string, got %s", luaL_typename(L, -1));
    lua_replace(L, 2);
}

const char *lstatement_sql(lua_State *L, const char *name, double *timeout)
{
    *timeout = -1;
    if (lua_type(L, 2) == LUA_TTABLE)
        statement_table(L, name, timeout);
    return lcommon_check_cstring(L, 2, 1, name, "sql", NULL);
}

const char *lstatement_args(lua_State *L, const char *name, int exec,
                            lparam_set *ps, double *timeout)
{
    const char *sql = lstatement_sql(L, name, timeout);

    if (exec) {
        if (lua_gettop(L) > 2)
            lcommon_argerror(L, 2, name, "exec takes no parameters");
    } else {
        lparam_who who;
        who.name = name;
        who.statement = 0;
        who.arg = 0;
        lparam_encode(L, 3, lua_gettop(L) - 2, ps, &who);
    }
    return sql;
}

static int run_on(pool *p, pq_conn *conn, const char *sql, double timeout,
                  const lparam_set *ps, pq_result **res, pq_error *err)
{
    const pool_config *cfg = pool_get_config(p);
    if (timeout < 0)
        timeout = cfg->query_timeout;
    if (!ps)
        return pq_exec(conn, sql, timeout, err);
    *res = pq_query(conn, sql, &ps->pq, timeout, cfg->statement_cache,
                    !cfg->transaction_pooling, err);
    return *res != NULL;
}

int lstatement_run(pool *p, pool_slot *slot, uint64_t ticket, const char *sql,
                   double timeout, const lparam_set *ps, double started,
                   pq_result **res, pq_error *err)
{
    pq_conn *conn = pool_slot_conn(slot);
    int ok = run_on(p, conn, sql, timeout, ps, res, err);
    /* A connection that died before this checkout began: once more on a
     * new one, when the failure proves the statement never ran. */
    if (!ok &&
        (conn = pool_retry_conn(p, slot, ticket, started, err)) != NULL)
        ok = run_on(p, conn, sql, timeout, ps, res, err);
    return ok;
}

int lstatement_push_outcome(lua_State *L, int ok, int exec, pq_result *res,
                            const pq_error *err)
{
    int n = 1;
    /* The result first: it owns res until it is pushed (or freed). */
    if (!ok)
        n = lresult_push_error(L, err);
    else if (exec)
        lua_pushboolean(L, 1);
    else
        lresult_push(L, res);   /* frees res */
    lctx_flush_log(L);
    return n;
}
