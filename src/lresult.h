/*
 * lresult.h - results and errors to Lua (lresult.c).
 */
#ifndef PGPOOL_LRESULT_H
#define PGPOOL_LRESULT_H

#include "compat.h"
#include "pq.h"

/* Keep the result builder in the registry; once per Lua state, before
 * lresult_push. */
LPGPOOL_INTERNAL void lresult_open(lua_State *L);

/* Push the result as a table of rows; always frees r, also when it raises
 * (a malformed value, Lua out of memory). */
LPGPOOL_INTERNAL void lresult_push(lua_State *L, pq_result *r);

/* Push the first row of r as a table (column name -> value), as a row of
 * lresult_push's result; always frees r, also when it raises. */
LPGPOOL_INTERNAL void lresult_push_row(lua_State *L, pq_result *r);

/* The registry table of decoders, type OID -> function(text) -> value, of
 * this Lua state: a column of such a type is decoded by it (NULL stays
 * pgpool.null); set_decoder(oid, fn or nil) is core.set_decoder. */
#define LRESULT_DECODERS "pgpool.decoders"
LPGPOOL_INTERNAL int lresult_set_decoder(lua_State *L);

/* Push nil, msg, code, info; returns 4. */
LPGPOOL_INTERNAL int lresult_push_error(lua_State *L, const pq_error *err);

/* The error as one table { error = msg, code = code, info = {...} }. */
LPGPOOL_INTERNAL void lresult_push_error_table(lua_State *L,
                                               const pq_error *err);

#endif
