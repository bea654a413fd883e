/*
 * pool_internal.h - the pool object's insides, shared by the files of the
 * pool core that work on one pool: pool.c (slots, acquire, release,
 * shutdown) and housekeeper.c (what the housekeeping thread does to a
 * pool). Nothing outside the pool core includes it.
 *
 * Invariants (under the pool's mutex):
 *  - every slot is in exactly one state; EMPTY slots are on the free list,
 *    IDLE slots on the idle list (most recently returned first);
 *  - n_idle + n_in_use + n_connecting = total <= max;
 *  - an IDLE slot has a connection, an EMPTY or CONNECTING one has none;
 *  - a slot leaves EMPTY only with a token of the cross-process cap, when
 *    max_shared is on, and gives it back when it becomes EMPTY again;
 *  - a waiter is served only from the head of the queue, and nobody takes
 *    an idle connection or a free slot while someone is queued.
 *
 * Locking: no network I/O (connect, close, rollback, liveness check) ever
 * happens with a pool's mutex held: the slot is taken into CONNECTING or
 * IN_USE first, and the connection used once the mutex is released. The
 * lock order of the whole core is in registry.c.
 */
#ifndef PGPOOL_POOL_INTERNAL_H
#define PGPOOL_POOL_INTERNAL_H

#include <pthread.h>

#include "pool.h"
#include "shared_cap.h"

#define POOL_INTERNAL __attribute__((visibility("hidden")))

enum slot_state { SLOT_EMPTY, SLOT_CONNECTING, SLOT_IDLE, SLOT_IN_USE };

struct pool_slot {
    pool *owner;
    enum slot_state state;
    pq_conn *conn;
    uint64_t ticket;          /* the live checkout, when IN_USE */
    uint64_t revoked_ticket;  /* a checkout taken away by shutdown */
    double created_at, expires_at, idle_since, checkout_at;
    int busy;                 /* a statement is running on it */
    int revoke_pending;       /* shutdown wants it closed when not busy */
    int needs_rollback;       /* returned by __gc inside a transaction */
    int leak_warned;
    char *origin;             /* where it was acquired (leak_timeout) */
    pool_slot *prev, *next;   /* idle list or free list */
};

typedef struct waiter {
    pthread_cond_t cond;
    struct waiter *next;
    pool_slot *granted;       /* IN_USE with a connection, or CONNECTING */
    int shut_down;
} waiter;

typedef struct retired {      /* connections the housekeeper must close */
    pq_conn *conn;
    struct retired *next;
} retired;

struct pool {
    pool_config cfg;          /* name and conninfo point to the copies below */
    char *name, *conninfo;
    pthread_mutex_t mu;
    pthread_cond_t drained;   /* signalled when in_use + connecting drops */
    int refs;                 /* atomic; see registry.c */
    int closing;
    int in_registry;          /* guarded by the registry's mutex */
    pool_slot *slots;
    pool_slot *idle_head, *idle_tail, *free_head;
    int n_idle, n_in_use, n_connecting, n_waiting;
    waiter *wait_head, *wait_tail;
    retired *retired_head;
    double reconnect_after;   /* min top-up backs off after a failure */
    uint64_t rng;
    pool_stats counters;      /* the cumulative fields */
    pool_sample history[POOL_HISTORY];   /* a ring, one sample a second */
    int history_next, history_count;
    shared_cap *shared;       /* max_shared > 0 */
    pool **replicas;          /* references, fixed once published */
    int n_replicas;
    unsigned turn;            /* atomic: pool_next_turn */
    pool *next_all;           /* every live pool (registry.c) */
    pool *next_registered;    /* configured pools (registry.c) */
};

/* A new pool (no connection, not registered), or NULL when out of memory;
 * and its end, closing what it still holds (pool.c). */
POOL_INTERNAL pool *pool_new(const pool_config *cfg);
POOL_INTERNAL void pool_destroy(pool *p);

/* In a forked child, with the pool's mutex held since before fork(): empty
 * the pool without touching the parent's sessions (pool.c). */
POOL_INTERNAL void pool_forget_in_child(pool *p);

/* Slot moves, each with the pool's mutex held (pool.c). */
POOL_INTERNAL int pool_total(const pool *p);
POOL_INTERNAL void pool_idle_remove(pool *p, pool_slot *s);
/* Take a free slot into CONNECTING (with a cross-process token when the
 * cap is on); NULL when there is none. */
POOL_INTERNAL pool_slot *pool_take_free_slot(pool *p);
/* A slot whose connection is gone: its capacity goes to the oldest waiter,
 * or the slot to the free list. */
POOL_INTERNAL void pool_slot_vacate(pool *p, pool_slot *s);
/* A usable connection comes back: the oldest waiter gets it, or it goes on
 * the idle list. */
POOL_INTERNAL void pool_slot_return(pool *p, pool_slot *s, double t);
/* When a connection created at `created` reaches its max_lifetime. */
POOL_INTERNAL double pool_lifetime_end(pool *p, double created);
POOL_INTERNAL void pool_count_close(pool *p, const char *reason);

/* The notice handler of the pool's connections (pq_set_notice_handler,
 * arg the pool): a server notice becomes a log line "server: ...". */
POOL_INTERNAL void pool_log_server_notice(void *arg, int level,
                                          const char *message);

/* Close a connection detached from its slot (no mutex held), logging why. */
POOL_INTERNAL void pool_close_conn(pool *p, pq_conn *c, const char *reason,
                                   int level);

#endif
