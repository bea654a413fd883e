/*
 * lpool.h - the pool handle (lpool.c).
 */
#ifndef PGPOOL_LPOOL_H
#define PGPOOL_LPOOL_H

#include "compat.h"
#include "pool.h"

/* Fill the pool metatable (created by lcommon_open); leaves the stack as it
 * found it. */
LPGPOOL_INTERNAL void lpool_open(lua_State *L);

/* Register the pool methods into the table on the stack top, with
 * lcommon_setfuncs' prefix and wrapped. */
LPGPOOL_INTERNAL void lpool_setfuncs(lua_State *L, const char *prefix,
                                     int wrapped);

/* Push a handle that holds no pool yet and return where its pool goes:
 * the caller stores there the reference it got (the handle then owns it),
 * after making the handle, so that a memory error cannot strand it. Never
 * returned to Lua empty. */
LPGPOOL_INTERNAL pool **lpool_new(lua_State *L);

/* true, or nil and a message when connections were still in use. */
LPGPOOL_INTERNAL int lpool_push_shutdown_outcome(lua_State *L, int clean);

#endif
