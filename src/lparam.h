/*
 * lparam.h - statement parameters from Lua values (lparam.c).
 *
 * A parameter set is filled on the C stack of the caller; it holds up to
 * LPARAM_INLINE parameters inline and keeps more in a userdata it leaves on
 * the Lua stack. Its pointers are valid while the encoded values stay on
 * the stack (see lparam_encode).
 */
#ifndef PGPOOL_LPARAM_H
#define PGPOOL_LPARAM_H

#include "compat.h"
#include "pq.h"

#define LPARAM_INLINE 16
typedef struct lparam_set {
    pq_params pq;            /* the view pq_query takes; set by lparam_encode */
    int n;
    const char **values;
    int *lengths, *formats;
    unsigned *types;
    char (*numbers)[40];     /* text of number parameters */
    const char *values_inline[LPARAM_INLINE];
    int lengths_inline[LPARAM_INLINE], formats_inline[LPARAM_INLINE];
    unsigned types_inline[LPARAM_INLINE];
    char numbers_inline[LPARAM_INLINE][40];
} lparam_set;

/* Who encodes, for the error a bad parameter raises: "bad argument #<k+1>
 * to '<name>' (parameter <k>: ...)", or, in a pipeline, "(statement <s>,
 * parameter <k>: ...)" of argument arg when it holds every statement. */
typedef struct lparam_who {
    const char *name;    /* the method, as lcommon_argerror takes it */
    int statement;       /* the pipeline statement's number; 0: none */
    int arg;             /* the argument holding the parameters; 0: each
                            parameter k is argument k + 1 */
} lparam_who;

/* Encode stack values first..first+n-1; raises on a bad parameter. May push
 * values (array literals, bytea values) that must stay on the stack until
 * the statement has run. */
LPGPOOL_INTERNAL void lparam_encode(lua_State *L, int first, int n,
                                    lparam_set *ps, const lparam_who *who);

#endif
