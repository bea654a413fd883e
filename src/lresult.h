/*
 * lresult.h - results and errors to Lua (lresult.c).
 */
#ifndef PGPOOL_LRESULT_H
#define PGPOOL_LRESULT_H

#include "compat.h"
#include "pq.h"

/* Push the result as a table of rows; always frees r, and raises (after
 * freeing it) on a malformed value. */
LPGPOOL_INTERNAL void lresult_push(lua_State *L, pq_result *r);

/* Push nil, msg, code, info; returns 4. */
LPGPOOL_INTERNAL int lresult_push_error(lua_State *L, const pq_error *err);

/* The error as one table { error = msg, code = code, info = {...} }. */
LPGPOOL_INTERNAL void lresult_push_error_table(lua_State *L,
                                               const pq_error *err);

#endif
