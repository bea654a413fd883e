/*
 * lcommon.h - what every Lua binding file (l*.c) shares: the per-state
 * context, the shared upvalues, handle and argument checks, the log flush.
 *
 * Every C function of the module gets the same upvalues (LUPV_*): the
 * per-Lua-state context (lctx, a userdata that keeps this state's log
 * listener), the two handle metatables and the result keys, so that the
 * hot path checks handles and fills results without looking names up; and
 * two of its registration: the prefix that makes its name in error
 * messages the one the user called ("pgpool.", "pool:", "conn:") and
 * whether the user reaches it through a function of the Lua facade (errors
 * then point one frame further up, at the user's line). Nothing per-state
 * is kept in C globals, and no lua_State is stored in a pool. Metamethods
 * (__gc, __tostring) have no upvalues and use the slower lookups by name.
 */
#ifndef PGPOOL_LCOMMON_H
#define PGPOOL_LCOMMON_H

#include <stdint.h>

#include "compat.h"

#define LPOOL_MT  "pgpool.pool"
#define LCONN_MT  "pgpool.conn"
#define LCTX_MT   "pgpool.context"

/* Per-Lua-state context, upvalue 1 of every module function. */
typedef struct lctx {
    uint64_t log_seq;     /* last log line delivered to this state */
    int log_fn;           /* registry ref of the on_log function, or LUA_NOREF */
    int log_fn_failed;    /* it raised once: reported, later raises not */
} lctx;

enum {
    LUPV_CTX = 1, LUPV_POOL_MT, LUPV_CONN_MT,
    LUPV_KEY_COLUMNS, LUPV_KEY_AFFECTED, LUPV_KEY_COMMAND,
    LUPV_SHARED = LUPV_KEY_COMMAND,   /* the same for every function */
    LUPV_PREFIX,                      /* its registration's name prefix */
    LUPV_WRAPPED,                     /* true: called from the facade */
    LUPV_COUNT = LUPV_WRAPPED
};

#define lctx_get(L) ((lctx *)lua_touserdata((L), lua_upvalueindex(LUPV_CTX)))

/* Create this state's context, the handle metatables (empty, for lpool_open
 * and lconn_open to fill) and the shared upvalues, kept in the registry
 * for lcommon_setfuncs. Leaves the stack as it found it. */
LPGPOOL_INTERNAL void lcommon_open(lua_State *L);

/* Register fns into the table on the stack top, each with the shared
 * upvalues, prefix ("pgpool.", "pool:", "conn:") and wrapped: 1 when the
 * user calls them through one function of the Lua facade that calls them
 * in turn (not as a tail call), 0 when the user calls them directly. */
LPGPOOL_INTERNAL void lcommon_setfuncs(lua_State *L, const luaL_Reg *fns,
                                       const char *prefix, int wrapped);

/* Whether the running function was registered as wrapped. */
LPGPOOL_INTERNAL int lcommon_wrapped(lua_State *L);

/* Raise "<file:line:> bad argument #arg to '<name>' (<fmt...>)" at the
 * user's line. name is the method ("query"), completed by the running
 * function's prefix into the name the user called ("pool:query"); a name
 * that holds ':' or '.' is taken as it is. arg counts as the user does:
 * self is not an argument. fmt as lua_pushfstring's. */
LPGPOOL_INTERNAL int lcommon_argerror(lua_State *L, int arg, const char *name,
                                      const char *fmt, ...);

/* The string at idx, which goes to an API that reads it up to a NUL byte:
 * raises, naming argument arg of name and calling it what ("sql"), when
 * it is not a string (a number is refused too: its conversion would not
 * stay on the stack) or holds a NUL. */
LPGPOOL_INTERNAL const char *lcommon_check_cstring(lua_State *L, int idx,
                                                   int arg, const char *name,
                                                   const char *what,
                                                   size_t *len);

/* The userdata at idx if its metatable is the one in upvalue mt_upvalue
 * (or, without the upvalues, the registry's tname); else raises "calling
 * '<name>' on bad self". */
LPGPOOL_INTERNAL void *lcommon_check(lua_State *L, int idx, int mt_upvalue,
                                     const char *tname, const char *name);

/* Deliver pending log lines to this state's on_log function, if any. */
LPGPOOL_INTERNAL void lctx_flush_log(lua_State *L);

#endif
