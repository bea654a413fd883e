/*
 * lstatement.h - one statement from Lua arguments to Lua results, shared by
 * pool:query/exec (lpool.c) and conn:query/exec (lconn.c).
 */
#ifndef PGPOOL_LSTATEMENT_H
#define PGPOOL_LSTATEMENT_H

#include "compat.h"
#include "lparam.h"
#include "pool.h"
#include "pq.h"

/* lstatement_sql: the SQL at index 2 alone (a string or a statement table,
 * as below), for the methods whose other arguments are their own.
 *
 * The arguments of query or rows (sql, params... from index 2) or exec (a
 * script, no parameters) of the method called name: returns the SQL and,
 * unless exec, encodes ps. The SQL may
 * come as a statement table { sql, timeout = t }: *timeout is then t (this
 * statement's bound instead of the pool's query_timeout; 0: none), else -1.
 * Raises on misuse, naming the function as called ("pool:query",
 * "pgpool.exec"). */
LPGPOOL_INTERNAL const char *lstatement_sql(lua_State *L, const char *name,
                                            double *timeout);
LPGPOOL_INTERNAL const char *lstatement_args(lua_State *L, const char *name,
                                             int exec, lparam_set *ps,
                                             double *timeout);

/* Run sql on the connection of the checkout (slot, ticket), which the
 * caller holds busy, bounded by timeout (-1: the pool's query_timeout): with ps, as one statement with those parameters (*res
 * set on success); with ps NULL, as a script. When the checkout's first
 * statement fails with proof it never ran, runs it once more on a new
 * connection (pool_retry_conn); started is when the caller began it
 * (clock_now). No Lua calls. 1 on success, 0 with err. */
LPGPOOL_INTERNAL int lstatement_run(pool *p, pool_slot *slot, uint64_t ticket,
                                    const char *sql, double timeout,
                                    const lparam_set *ps, double started,
                                    pq_result **res, pq_error *err);

/* Push what lstatement_run gave: the result (freed, even when pushing it
 * raises), true for exec, or nil, msg, code, info; then deliver pending
 * log lines. */
LPGPOOL_INTERNAL int lstatement_push_outcome(lua_State *L, int ok, int exec,
                                             pq_result *res,
                                             const pq_error *err);

#endif
