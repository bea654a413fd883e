/*
 * lvalue.h - the value codec: Lua values <-> the text form of PostgreSQL
 * types, scalars and arrays.
 *
 * lvalue.c owns what a value becomes on each side: number formatting, the
 * decoding of each type OID, the table of array types, and arrays in terms
 * of Lua values (the literal's syntax itself is arraytext.c's). It knows
 * nothing of statements, results or handles: lparam.c and lresult.c call
 * it, and it calls back into neither.
 */
#ifndef PGPOOL_LVALUE_H
#define PGPOOL_LVALUE_H

#include <stddef.h>

#include "compat.h"

/* The metatable of pgpool.bytea(s) markers: a table { s } sent as bytes. */
#define LBYTEA_MT "pgpool.bytea"

/* Type OIDs the codec converts (pg_type.dat), besides the array types. */
enum {
    LVALUE_OID_BOOL = 16, LVALUE_OID_BYTEA = 17, LVALUE_OID_INT8 = 20,
    LVALUE_OID_INT2 = 21, LVALUE_OID_INT4 = 23, LVALUE_OID_OID = 26,
    LVALUE_OID_FLOAT4 = 700, LVALUE_OID_FLOAT8 = 701
};

/* ---- the types --------------------------------------------------------- */

/* The i-th (from 0) type the codec converts, array types first: its OID,
 * its element type's (0 for a scalar type) and the name of the element or
 * scalar type in pg_type. 0 past the end. For the specs, which check the
 * tables against the server's pg_type, and the fuzz targets. */
LPGPOOL_INTERNAL int lvalue_type(int i, unsigned *oid, unsigned *element,
                                 const char **name);

/* The element type of a known array type, or 0. */
LPGPOOL_INTERNAL unsigned lvalue_element_type(unsigned array_oid);

/* ---- PostgreSQL -> Lua -------------------------------------------------- */

/* Push one text-format value of type oid; v is '\0'-terminated at len.
 * Returns 0, pushing nothing, when the value is malformed: an array
 * literal or bytea text the decoder cannot read (the server never sends
 * one). Integer text that is not a 64-bit integer (or, on 5.1/LuaJIT, not
 * exact as a double) is pushed as the string it is. */
LPGPOOL_INTERNAL int lvalue_push(lua_State *L, unsigned oid, const char *v,
                                 size_t len);

/* Decode an array literal of elem_oid elements into a Lua array (nested for
 * several dimensions): pushes 1 value and returns 1, or pushes nothing and
 * returns 0 when the literal is malformed. */
LPGPOOL_INTERNAL int lvalue_push_array(lua_State *L, const char *text,
                                       size_t len, unsigned elem_oid);

/* The len bytes at v as decimal integer text ("-123", "+7", leading zeros
 * allowed; nothing else): 1 with *out when it fits in 64 bits (int8's -2^63
 * included), else 0. */
LPGPOOL_INTERNAL int lvalue_parse_integer(const char *v, size_t len,
                                          long long *out);

/* ---- Lua -> PostgreSQL -------------------------------------------------- */

/* Text of the number at idx as PostgreSQL reads it back exactly: integers
 * in decimal, floats in the shortest exact form, Infinity, NaN. */
LPGPOOL_INTERNAL void lvalue_format_number(lua_State *L, int idx,
                                           char buf[40]);

/* Whether the value at idx is a pgpool.bytea marker. */
LPGPOOL_INTERNAL int lvalue_is_bytea(lua_State *L, int idx);

/* Push the value of the pgpool.bytea marker at idx and return its bytes,
 * which stay valid while that value stays on the stack; NULL (the value
 * still pushed) when it is not a string. */
LPGPOOL_INTERNAL const char *lvalue_push_bytea_value(lua_State *L, int idx,
                                                     size_t *len);

/* Push the array literal of the Lua array at idx and return 1; or return 0
 * with the reason pushed instead (a table that is not a sequence, nested
 * too deep, an element it cannot send), for the caller to raise naming the
 * parameter. The stack is otherwise as it was. */
LPGPOOL_INTERNAL int lvalue_encode_array(lua_State *L, int idx);

#endif
