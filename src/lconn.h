/*
 * lconn.h - the connection handle (lconn.c).
 */
#ifndef PGPOOL_LCONN_H
#define PGPOOL_LCONN_H

#include <stdint.h>

#include "compat.h"
#include "hogs.h"
#include "pool.h"

/* Fill the connection metatable (created by lcommon_open); leaves the stack
 * as it found it. */
LPGPOOL_INTERNAL void lconn_open(lua_State *L);

typedef struct lconn lconn;

/* Push a handle that holds no checkout yet (to its methods, a released
 * one). Made before the checkout, so that a memory error raised while
 * making it cannot leave a checkout that nothing releases. */
LPGPOOL_INTERNAL lconn *lconn_new(lua_State *L);

/* Give the handle c the checkout (slot, ticket) of p; it takes a reference
 * of p of its own. Raises nothing. */
LPGPOOL_INTERNAL void lconn_attach(lconn *c, pool *p, pool_slot *slot,
                                   uint64_t ticket);

/* Add methods (registered "conn:<name>") to the connection handle, for
 * the files that give it methods of their own (lcopy.c, lnotify.c); after
 * lconn_open, leaving the stack as it found it. */
LPGPOOL_INTERNAL void lconn_add_methods(lua_State *L, const luaL_Reg *methods);

/* The checkout of the handle at idx, for the methods other files add to
 * the handle (name: the method, for errors); raises "connection released"
 * when it has ended. */
LPGPOOL_INTERNAL void lconn_checkout(lua_State *L, int idx, const char *name,
                                     pool **p, pool_slot **slot,
                                     uint64_t *ticket);

/* Count the handle's checkout, begun at monotonic time `since`, in the hogs
 * table h under mark: its end (release, discard, __close, __gc) ends the
 * hold there. */
LPGPOOL_INTERNAL void lconn_track(lconn *c, hogs *h, hogs_mark mark,
                                  double since);

/* Register into the table on the stack top what the facade calls on a
 * connection: run_pipeline as conn:pipeline calls it (misuse in a
 * statement is reported as an argument of p:query, at the user's
 * conn:pipeline line), and commit, the end of transaction. */
LPGPOOL_INTERNAL void lconn_setfuncs_facade(lua_State *L);

#endif
