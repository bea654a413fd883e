/*
 * hogs.h - connection hogs: where a pool's connections are checked out (a
 * site, the "file:line" of the caller) and, per site, how many checkouts,
 * how long they held their connection in all and at most, and how many
 * hold one now. No Lua here: the bindings find the site and the hold time.
 *
 * One table per pool configured with track_hogs (pool_hogs), process-wide
 * like its pool and freed with it. A site is interned once and named by a
 * small mark afterwards, so that a checkout carries no string. The table
 * is bounded: past HOGS_MAX_SITES sites, new ones count into "(other)".
 *
 * Locking: the table's own mutex, a leaf of the core's lock order
 * (registry.c): nothing is taken under it. Callers hold no other lock,
 * except the fork handlers, which take it under its pool's mutex.
 */
#ifndef PGPOOL_HOGS_H
#define PGPOOL_HOGS_H

#include <stdint.h>

typedef struct hogs hogs;

/* A checkout's site, valid in the table (and process) that gave it. */
typedef uint32_t hogs_mark;

#define HOGS_MAX_SITES 1024
#define HOGS_OTHER "(other)"

/* One site's figures (hogs_top). Times in seconds; total and max are over
 * the checkouts that have ended, count includes the held ones. */
typedef struct hogs_site {
    const char *where;        /* "file:line"; valid while the table lives */
    uint64_t count;
    double total, max;
    int held;
} hogs_site;

/* A new empty table, or NULL when out of memory. */
hogs *hogs_new(void);
void hogs_free(hogs *h);

/* A checkout made at file:line begins (file: a C string, copied when the
 * site is new). */
hogs_mark hogs_enter(hogs *h, const char *file, int line);

/* The checkout of mark ends after holding its connection `held` seconds. A
 * mark from before a fork is ignored in the child. */
void hogs_leave(hogs *h, hogs_mark mark, double held);

/* Every site with a checkout, by total hold time, longest first, into out
 * (room for HOGS_MAX_SITES + 1); returns how many. */
int hogs_top(hogs *h, hogs_site *out);

/* fork(): prepare holds the mutex (h may be NULL: no table); the parent
 * releases it; the child starts with every figure at zero (the sites stay
 * interned) and releases it. */
void hogs_fork_prepare(hogs *h);
void hogs_fork_parent(hogs *h);
void hogs_fork_child(hogs *h);

#endif
