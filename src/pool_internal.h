/*
 * pool_internal.h - the pool object's insides, shared by the files of the
 * pool core that work on one pool: pool_slots.c (the object, its slots,
 * queue and connection attempts), pool.c (acquire, release, shutdown),
 * pool_figures.c (the figures), registry.c and housekeeper.c. Nothing
 * outside the pool core includes it.
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

#include "hogs.h"
#include "pool.h"
#include "shared_cap.h"
#include "throttle.h"

#define POOL_INTERNAL __attribute__((visibility("hidden")))

enum slot_state { SLOT_EMPTY, SLOT_CONNECTING, SLOT_IDLE, SLOT_IN_USE };

struct pool_slot {
    pool *owner;
    enum slot_state state;
    pq_conn *conn;
    uint64_t ticket;          /* the live checkout, when IN_USE */
    uint64_t revoked_ticket;  /* a checkout taken away by shutdown */
    double created_at, expires_at, idle_since, checkout_at;
    double connect_started;   /* the attempt for it, while CONNECTING */
    int busy;                 /* a statement is running on it */
    int uses;                 /* statements begun on this checkout */
    int revoke_pending;       /* shutdown wants it closed when not busy */
    int leak_warned;
    char *origin;             /* where it was acquired (leak_timeout) */
    pool_slot *prev, *next;   /* idle list or free list */
};

typedef struct waiter {
    pthread_cond_t cond;
    struct waiter *next;
    pool_slot *granted;       /* IN_USE, with a connection */
    int shut_down;
    int failed;               /* the attempt it waited for failed: *err */
    pq_error *err;
} waiter;

/* Work the housekeeper does after __gc (which may do no network I/O): a
 * connection to close (slot NULL), or a checkout collected inside a
 * transaction to roll back and release (pool_finish_collected). */
typedef struct retired {
    pq_conn *conn;
    pool_slot *slot;
    struct retired *next;
} retired;

/* One second of figures for the windows (pool_figures.c): what changed
 * between two ticks of the housekeeper, and the waiting gauge at the
 * tick. */
typedef struct pool_second {
    int64_t time;             /* wall clock of the tick */
    int waiting;
    double wait_max;          /* the longest acquire wait in the second */
    uint32_t timeouts, full_rejects, connect_rejects;
    uint32_t acquire_wait[HISTOGRAM_BUCKETS];
    double acquire_wait_sum;
} pool_second;

/* The cumulative figures as they were at the last tick, for its deltas
 * (timeouts: waited_timeouts). */
typedef struct pool_ticked {
    uint64_t timeouts, full_rejects, connect_rejects;
    histogram acquire_wait;
} pool_ticked;

/* How long a rollback on release may take before the connection is
 * counted broken and closed (seconds). */
#define ROLLBACK_TIMEOUT 5.0

struct pool {
    pool_config cfg;          /* name and conninfo point to the copies below */
    char *name, *conninfo, *on_connect;
    pthread_mutex_t mu;
    pthread_cond_t drained;   /* signalled when in_use + connecting drops */
    int refs;                 /* atomic */
    int closing;
    int in_registry;          /* guarded by the registry's mutex */
    pool_slot *slots;
    pool_slot *idle_head, *idle_tail, *free_head;
    int n_idle, n_in_use, n_connecting, n_waiting;
    int n_queued;             /* waiters in the queue (n_waiting counts them
                                 until they have woken up) */
    waiter *wait_head, *wait_tail;
    retired *retired_head;
    throttle thr;             /* backoff and the effective limit */
    pq_error last_connect_error;
    int server_slots_asked;   /* the first connection asked the server */
    int server_slots;         /* its slots for ordinary roles; -1 unknown */
    uint64_t rng;
    pool_stats counters;      /* the cumulative fields */
    pool_sample history[POOL_HISTORY];   /* a ring, one sample a second */
    int history_next, history_count;
    pool_second seconds[POOL_WINDOW];    /* a ring, one entry a tick */
    int seconds_next, seconds_count;
    pool_ticked ticked;
    double wait_max_second;   /* the longest acquire wait since the tick */
    shared_cap *shared;       /* max_shared > 0 */
    int cap_refused;          /* the last attempt found no shared token */
    int wanting_told;         /* waiters for a token, as told to the region */
    int lend_on_release;      /* releases to close for other processes */
    hogs *hogs;               /* track_hogs; fixed for the pool's life */
    pool **replicas;          /* references, fixed once published */
    int n_replicas;
    unsigned turn;            /* atomic: pool_next_turn */
    pool *next_live;          /* every pool not yet freed (pool.c) */
    pool *next_registered;    /* configured pools (registry.c) */
};

/* A new pool with one reference (no connection, not registered), or NULL
 * when out of memory. Its last pool_unref closes what it still holds and
 * releases its replicas. */
POOL_INTERNAL pool *pool_new(const pool_config *cfg);

/* A fresh checkout ticket (pool_slots.c). */
POOL_INTERNAL uint64_t pool_new_ticket(void);

/* The waiter queue (mutex held; pool_slots.c). Enqueueing starts a
 * connection attempt when capacity allows. */
POOL_INTERNAL void pool_waiter_enqueue(pool *p, waiter *w);
POOL_INTERNAL waiter *pool_waiter_pop(pool *p);
POOL_INTERNAL void pool_waiter_remove(pool *p, waiter *w);
/* Start attempts while the queue is longer than the attempts under way
 * and there is capacity. */
POOL_INTERNAL void pool_start_attempts(pool *p);

/* Slot moves, each with the pool's mutex held (pool_slots.c). */
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

/* Once per wall-clock second (mutex held; the housekeeper): the
 * history sample of the gauges and the second's figures for the windows
 * (pool_figures.c). */
POOL_INTERNAL void pool_figures_tick(pool *p, int64_t wall);

/* Connect now, on this thread, for pool p (no mutex held): counted as an
 * attempt, with the pool's notice handler. NULL and err on failure. */
POOL_INTERNAL pq_conn *pool_connect_now(pool *p, pq_error *err);

/* Start connection attempts until total reaches target, capacity allowing
 * (mutex held; the min top-up). */
POOL_INTERNAL void pool_top_up(pool *p, int target);

/* Roll back and release a checkout collected inside a transaction (no
 * mutex held; the housekeeper). */
POOL_INTERNAL void pool_finish_collected(pool *p, pool_slot *s);

/* Close a connection detached from its slot (no mutex held), logging why. */
POOL_INTERNAL void pool_close_conn(pool *p, pq_conn *c, const char *reason,
                                   int level);

#endif
