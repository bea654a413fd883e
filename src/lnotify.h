/*
 * lnotify.h - waiting for notifications on the connection handle
 * (lnotify.c).
 */
#ifndef PGPOOL_LNOTIFY_H
#define PGPOOL_LNOTIFY_H

#include "compat.h"

/* Add wait_notify to the connection handle's methods (after lconn_open);
 * leaves the stack as it found it. */
LPGPOOL_INTERNAL void lnotify_open(lua_State *L);

#endif
