/*
 * pool.h - one connection pool: its slots, FIFO waiters, checkouts,
 * statements on a checkout, shutdown and figures. No Lua here.
 *
 * A pool has `max` slots. A slot is EMPTY, CONNECTING, IDLE or IN_USE, so
 * total = idle + in_use + connecting <= max always. Acquirers that find no
 * idle connection and no free slot wait in FIFO order; a released connection
 * (or the capacity freed by closing one) goes straight to the oldest waiter.
 *
 * A checkout is named by (slot, ticket): the ticket changes on every
 * checkout, release, fork and shutdown revoke, so a stale handle is detected
 * and never touches a connection it no longer owns.
 *
 * Pools are made, found, counted and shut down through the registry
 * (registry.h); the process-level duties are in process.h.
 */
#ifndef PGPOOL_POOL_H
#define PGPOOL_POOL_H

#include <stdint.h>

#include "histogram.h"
#include "log.h"
#include "pq.h"

typedef struct pool pool;
typedef struct pool_slot pool_slot;

/* How health() judges the pool (the `health` option; README "Observing"):
 * over the last `window` seconds. Each threshold 0 turns its rule off. */
typedef struct pool_health_config {
    int window;               /* seconds, 1..POOL_WINDOW */
    double waiting_ratio;     /* share of the window's seconds with waiters */
    double wait_p95;          /* seconds of acquire wait at the 95th pct */
    int timeouts;             /* acquires timed out or refused (full) */
    int connect_failures;     /* connection attempts failed in a row */
} pool_health_config;

typedef struct pool_config {
    const char *name;
    const char *conninfo;     /* NULL: libpq environment */
    const char *on_connect;   /* SQL run on each new connection before its
                                 first use (NULL: none); its failure is a
                                 failed connect */
    int max, min;
    double idle_timeout, acquire_timeout, connect_timeout, query_timeout;
    double max_lifetime, slow_query, leak_timeout;
    int max_waiting, statement_cache;
    int max_shared;           /* cap across forked processes; 0 = off */
    const char *const *replicas;  /* conninfo of each read-only replica */
    int n_replicas;
    int log_level;            /* enum pool_log_level */
    int track_hogs;           /* keep a hogs table (hogs.h) */
    int transaction_pooling;  /* the server is a pooler in transaction mode:
                                 statement_cache only outside transaction
                                 blocks */
    pool_health_config health;
} pool_config;

/* The seconds of figures a pool keeps for windows (health's, the recent
 * wait maximum's), and the window of that maximum. */
#define POOL_WINDOW 300
#define POOL_WAIT_MAX_WINDOW 60

/* Connect failures counted by SQLSTATE class: the first two characters of
 * the SQLSTATE, or the fixed word of an error without one ("timeout",
 * "connect"); past POOL_ERROR_CLASSES - 1 classes, "other". */
#define POOL_ERROR_CLASSES 16
typedef struct pool_error_class {
    char name[8];
    uint64_t count;
} pool_error_class;

/* What the last `seconds` (the health window) saw, the current partial
 * second included; its timeouts are waited_timeouts. */
typedef struct pool_window {
    int seconds;
    int waiting_seconds;      /* seconds whose sample found callers waiting */
    uint64_t timeouts, full_rejects, connect_rejects;
    histogram acquire_wait;
} pool_window;

typedef struct pool_stats {
    char name[128];
    int pid, max, min;
    int total, idle, in_use, connecting, waiting;
    uint64_t acquired, released, created, closed, timeouts, connect_errors;
    uint64_t leaked, queries, query_errors, slow_queries, rollbacks;
    uint64_t closed_idle, closed_lifetime, closed_broken, closed_discarded;
    uint64_t closed_lent;     /* idle, closed for another process (max_shared) */
    uint64_t closed_shutdown; /* at shutdown or process exit */
    uint64_t shutdown_rejects, full_rejects, retries;
    uint64_t connect_rejects; /* acquires answered with a connect error */
    uint64_t waited_timeouts; /* timeouts of acquires with a timeout > 0
                                 (timeout 0 is a try, not a wait) */
    uint64_t acquired_waited; /* acquires that found nothing idle and queued */
    uint64_t connect_attempts;
    int connect_failures;     /* consecutive failed attempts, 0 after success */
    int limit;                /* the effective cap (max unless the server
                                 refused for want of slots) */
    double backoff;           /* the current backoff step (s), 0 when none */
    char limit_reason[128];   /* why limit < max, or "" */
    int server_slots;         /* the server's connections for ordinary
                                 roles; -1 until the first connection */
    int max_shared, shared_used;  /* the cross-process cap, when on */
    double wait_time_total, wait_time_max, query_time_total;
    double wait_time_max_recent;  /* over the last POOL_WAIT_MAX_WINDOW s */
    /* Durations: acquires' waits, statements (a pipeline is one), new
     * connections (successful ones), checkouts from acquire to release. */
    histogram acquire_wait, query_time, connect_time, hold_time;
    pool_error_class connect_error_classes[POOL_ERROR_CLASSES];
    int n_connect_error_classes;
    pool_window window;
    int n_replicas;
    int closing;              /* shutdown started */
} pool_stats;

/* One per-second sample of the gauges (pool_history). */
typedef struct pool_sample {
    int64_t time;             /* wall clock, seconds since the epoch */
    int total, idle, in_use, connecting, waiting;
} pool_sample;
#define POOL_HISTORY 900      /* 15 minutes */

/* How a checkout ends. */
enum pool_release_how {
    POOL_RELEASE,     /* release/__close: roll back if needed, return */
    POOL_DISCARD,     /* close it instead of returning it */
    POOL_COLLECTED,   /* __gc: no network I/O here; counted as leaked */
    POOL_COLLECTED_DISCARD /* __gc of a checkout holding session state (a
                            * listener's LISTENs): closed in the background,
                            * never returned; not counted as leaked */
};

/* A pool lives while it has references: the registry's (from configure to
 * shutdown), every Lua handle's, and each connection attempt's. */
void pool_ref(pool *p);
void pool_unref(pool *p);

/* Call fn for every pool not yet freed, configured or shut down, holding a
 * reference during the call (process exit). */
void pool_each_live(void (*fn)(pool *p, void *ud), void *ud);

/* fork(): prepare holds every pool's mutex across it; the child empties
 * every pool without touching the parent's sessions (connections
 * abandoned, checkouts invalidated). */
void pool_fork_prepare(void);
void pool_fork_parent(void);
void pool_fork_child(void);

const pool_config *pool_get_config(const pool *p);

/* The pool's hogs table (hogs.h), NULL unless configured with track_hogs;
 * it lives as long as the pool. */
struct hogs *pool_hogs(const pool *p);
int pool_is_closing(pool *p);

/* Check out a healthy idle connection, waiting up to timeout seconds.
 * 1 and (*slot, *ticket) on success; 0 and err otherwise. With hold_busy
 * the checkout starts as if pool_begin_use had been called (for one
 * statement ended by pool_end_use_release; pool_slot_conn gives the
 * connection). */
int pool_acquire(pool *p, double timeout, int hold_busy, pool_slot **slot,
                 uint64_t *ticket, pq_error *err);

/* End the checkout (slot, ticket); a stale ticket is ignored. Returns 1 if
 * it ended a live checkout. */
int pool_release(pool *p, pool_slot *slot, uint64_t ticket,
                 enum pool_release_how how);

/* Around each statement on a checked-out connection: begin returns the
 * connection (NULL and err when the checkout is stale or was revoked by
 * shutdown); end reports the statement for the counters and the slow-query
 * log (sql NULL: the connection was used for something else, not counted);
 * queries and failed count the statements run and failed. */
pq_conn *pool_begin_use(pool *p, pool_slot *slot, uint64_t ticket,
                        pq_error *err);
void pool_end_use(pool *p, pool_slot *slot, const char *sql, double started,
                  int queries, int failed);

/* The end of a checkout made with hold_busy: pool_end_use and pool_release
 * in one step (one lock when the connection is idle, the common case). */
void pool_end_use_release(pool *p, pool_slot *slot, uint64_t ticket,
                          const char *sql, double started, int failed);

/* The first statement of a fresh checkout failed in a way that proves it
 * never ran (err->safe_to_retry: the send failed, or the server's
 * termination notice came before any answer) within 0.1 s of `started`,
 * when it was sent (so the connection died before the statement reached
 * it, not while it ran), and, being the first, inside no transaction:
 * replace the checkout's connection with a new one and
 * return it, for the caller to run the statement once more (counted in
 * retries). NULL (err stands) for anything else, or when no new
 * connection could be made. The checkout stays held busy. */
pq_conn *pool_retry_conn(pool *p, pool_slot *slot, uint64_t ticket,
                         double started, const pq_error *err);

/* The connection of a checkout held busy (hold_busy, or between
 * pool_begin_use and pool_end_use). */
pq_conn *pool_slot_conn(pool_slot *slot);

/* Whether (slot, ticket) is still a live checkout. */
int pool_checkout_valid(pool_slot *slot, uint64_t ticket);

/* Remember where a checkout was made (for leak_timeout warnings). */
void pool_set_origin(pool_slot *slot, uint64_t ticket, const char *origin);

/* Shutdown of one pool (the registry's pool_shutdown unregisters it first):
 * stop acquires, wake waiters, close idle connections, wait until the
 * monotonic time deadline for the busy ones, close the rest. 1 when all
 * closed in time. */
int pool_drain(pool *p, double deadline);

/* Close at once, with reason: every idle connection and, with in_use, every
 * checked-out one not running a statement (process exit, signals). The
 * pool accepts no acquire afterwards. */
void pool_close_now(pool *p, int in_use, const char *reason);

void pool_get_stats(pool *p, pool_stats *out);

/* The per-second samples taken by the housekeeper, oldest first, into out
 * (room for POOL_HISTORY); returns how many. */
int pool_history(pool *p, pool_sample *out);

/* A log line about pool p (NULL: about none), if its log_level allows. */
void pool_log(pool *p, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
