/*
 * lpgpool.h - what the Lua binding files (l*.c) share.
 *
 * Every C function of the module gets the same upvalues (LUPV_*): the
 * per-Lua-state context (lctx, a userdata that keeps this state's log
 * listener), the two handle metatables and the result keys, so that the
 * hot path checks handles and fills results without looking names up.
 * Nothing per-state is kept in C globals, and no lua_State is stored in a
 * pool. Metamethods (__gc, __tostring) have no upvalues and use the slower
 * lookups by name.
 */
#ifndef PGPOOL_LPGPOOL_H
#define PGPOOL_LPGPOOL_H

#include <stdint.h>

#include "compat.h"
#include "pool.h"
#include "pq.h"

#define LPGPOOL_VERSION  "pgpool 1.0.0"
#define LPOOL_MT  "pgpool.pool"
#define LCONN_MT  "pgpool.conn"
#define LCTX_MT   "pgpool.context"

/* Per-Lua-state context, upvalue 1 of every module function. */
typedef struct lctx {
    uint64_t log_seq;     /* last log line delivered to this state */
    int log_fn;           /* registry ref of the on_log function, or LUA_NOREF */
} lctx;

enum {
    LUPV_CTX = 1, LUPV_POOL_MT, LUPV_CONN_MT,
    LUPV_KEY_COLUMNS, LUPV_KEY_AFFECTED, LUPV_KEY_COMMAND,
    LUPV_COUNT = LUPV_KEY_COMMAND
};

#define lctx_get(L) ((lctx *)lua_touserdata((L), lua_upvalueindex(LUPV_CTX)))

/* Register fns into the table on the stack top, each with the shared
 * upvalues. */
LPGPOOL_INTERNAL void lpgpool_setfuncs(lua_State *L, const luaL_Reg *fns);

/* The userdata at idx if its metatable is the one in upvalue mt_upvalue
 * (falls back to luaL_checkudata by tname, which raises). */
LPGPOOL_INTERNAL void *lpgpool_check(lua_State *L, int idx, int mt_upvalue,
                                     const char *tname);

/* Deliver pending log lines to this state's on_log function, if any. */
LPGPOOL_INTERNAL void lctx_flush_log(lua_State *L);

/* Parameters (lparam.c). */
#define LPARAM_INLINE 16
typedef struct lparam_set {
    pq_params pq;            /* the view pq_query takes; set by lparam_encode */
    int n;
    const char **values;
    int *lengths, *formats;
    unsigned *types;
    char (*numbers)[40];     /* text of number parameters */
    const char *values_inline[LPARAM_INLINE];
    int lengths_inline[LPARAM_INLINE], formats_inline[LPARAM_INLINE];
    unsigned types_inline[LPARAM_INLINE];
    char numbers_inline[LPARAM_INLINE][40];
} lparam_set;

/* Encode stack values first..first+n-1; raises on a bad parameter. May push
 * values (array literals) that must stay on the stack until the statement
 * has run. */
LPGPOOL_INTERNAL void lparam_encode(lua_State *L, int first, int n,
                                    lparam_set *ps);

/* Pool handles (lpool.c). lpool_push takes over one reference of p. */
/* lpool_open and lconn_open fill their metatable (created by
 * luaopen_pgpool_core) and leave the stack as they found it. */
LPGPOOL_INTERNAL void lpool_open(lua_State *L);
LPGPOOL_INTERNAL void lpool_push(lua_State *L, pool *p);
LPGPOOL_INTERNAL pool *lpool_check(lua_State *L, int idx);
/* true, or nil and a message when connections were still in use. */
LPGPOOL_INTERNAL int lpool_push_shutdown_outcome(lua_State *L, int clean);

/* Connection handles (lconn.c). */
LPGPOOL_INTERNAL void lconn_open(lua_State *L);
LPGPOOL_INTERNAL void lconn_push(lua_State *L, pool *p, pool_slot *slot,
                                 uint64_t ticket);

/* Run sql on conn, which the caller holds busy: with ps, as one statement
 * with those parameters (*res set on success); with ps NULL, as a script.
 * 1 on success, 0 with err. */
LPGPOOL_INTERNAL int lconn_run(pool *p, pq_conn *conn, const char *sql,
                               const lparam_set *ps, pq_result **res,
                               pq_error *err);

/* Run sql on the checkout (slot, ticket): with ps, as one statement with
 * those parameters (*res set on success); with ps NULL, as a script. No Lua
 * calls. Returns 1 on success, 0 with err on a runtime failure, -1 when the
 * checkout was already released (a misuse the caller raises for). */
LPGPOOL_INTERNAL int lconn_execute(pool *p, pool_slot *slot, uint64_t ticket,
                                   const char *sql, const lparam_set *ps,
                                   pq_result **res, pq_error *err);

/* The arguments of query (sql, params... from index 2) or exec (a script,
 * no parameters): returns the SQL and, for query, encodes ps. Raises on
 * misuse. */
LPGPOOL_INTERNAL const char *lconn_statement_args(lua_State *L, int exec,
                                                  lparam_set *ps);
/* Push what lconn_execute gave: the result (freed), true for exec, or
 * nil, msg, code, info. Delivers pending log lines first. */
LPGPOOL_INTERNAL int lconn_push_outcome(lua_State *L, int ok, int exec,
                                        pq_result *res, const pq_error *err);

/* Results and errors (lresult.c). lresult_push raises (after freeing r) on
 * a malformed value; it always frees r. */
LPGPOOL_INTERNAL void lresult_push(lua_State *L, pq_result *r);
LPGPOOL_INTERNAL int lresult_push_error(lua_State *L, const pq_error *err);
/* The error as one table { error = msg, code = code, info = {...} }. */
LPGPOOL_INTERNAL void lresult_push_error_table(lua_State *L,
                                               const pq_error *err);

#endif
