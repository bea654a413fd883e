/*
 * lcopy.h - COPY on the connection handle (lcopy.c).
 */
#ifndef PGPOOL_LCOPY_H
#define PGPOOL_LCOPY_H

#include "compat.h"

/* Add copy_in and copy_out to the connection handle's methods (after
 * lconn_open); leaves the stack as it found it. */
LPGPOOL_INTERNAL void lcopy_open(lua_State *L);

#endif
