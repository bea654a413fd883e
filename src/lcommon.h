/*
 * lcommon.h - what every Lua binding file (l*.c) shares: the per-state
 * context, the shared upvalues, handle checks and the log flush.
 *
 * Every C function of the module gets the same upvalues (LUPV_*): the
 * per-Lua-state context (lctx, a userdata that keeps this state's log
 * listener), the two handle metatables and the result keys, so that the
 * hot path checks handles and fills results without looking names up.
 * Nothing per-state is kept in C globals, and no lua_State is stored in a
 * pool. Metamethods (__gc, __tostring) have no upvalues and use the slower
 * lookups by name.
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
} lctx;

enum {
    LUPV_CTX = 1, LUPV_POOL_MT, LUPV_CONN_MT,
    LUPV_KEY_COLUMNS, LUPV_KEY_AFFECTED, LUPV_KEY_COMMAND,
    LUPV_COUNT = LUPV_KEY_COMMAND
};

#define lctx_get(L) ((lctx *)lua_touserdata((L), lua_upvalueindex(LUPV_CTX)))

/* Create this state's context, the handle metatables (empty, for lpool_open
 * and lconn_open to fill) and the shared upvalues, kept in the registry
 * for lcommon_setfuncs. Leaves the stack as it found it. */
LPGPOOL_INTERNAL void lcommon_open(lua_State *L);

/* Register fns into the table on the stack top, each with the shared
 * upvalues. */
LPGPOOL_INTERNAL void lcommon_setfuncs(lua_State *L, const luaL_Reg *fns);

/* The userdata at idx if its metatable is the one in upvalue mt_upvalue
 * (falls back to luaL_checkudata by tname, which raises). */
LPGPOOL_INTERNAL void *lcommon_check(lua_State *L, int idx, int mt_upvalue,
                                     const char *tname);

/* Deliver pending log lines to this state's on_log function, if any. */
LPGPOOL_INTERNAL void lctx_flush_log(lua_State *L);

#endif
