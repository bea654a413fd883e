/*
 * lpgpool.h - the module's one export (lpgpool.c).
 */
#ifndef PGPOOL_LPGPOOL_H
#define PGPOOL_LPGPOOL_H

#include "compat.h"

__attribute__((visibility("default"))) int luaopen_pgpool_core(lua_State *L);

#endif
