/*
 * pool.h - the process-wide connection pools.
 *
 * pool.c owns every piece of process-wide state: the registry of named pools,
 * each pool's slots, waiters and counters, the housekeeping thread, the log
 * ring, fork and exit handling. It knows nothing of Lua.
 *
 * A pool has `max` slots. A slot is EMPTY, CONNECTING, IDLE or IN_USE, so
 * total = idle + in_use + connecting <= max always. Acquirers that find no
 * idle connection and no free slot wait in FIFO order; a released connection
 * (or the capacity freed by closing one) goes straight to the oldest waiter.
 *
 * A checkout is named by (slot, ticket): the ticket changes on every
 * checkout, release, fork and shutdown revoke, so a stale handle is detected
 * and never touches a connection it no longer owns.
 */
#ifndef PGPOOL_POOL_H
#define PGPOOL_POOL_H

#include <stdint.h>

#include "pq.h"

typedef struct pool pool;
typedef struct pool_slot pool_slot;

enum pool_log_level {
    POOL_LOG_DEBUG, POOL_LOG_INFO, POOL_LOG_WARN, POOL_LOG_ERROR, POOL_LOG_OFF
};
extern const char *const pool_log_level_names[];  /* "debug" .. "off" */

typedef struct pool_config {
    const char *name;
    const char *conninfo;     /* NULL: libpq environment */
    int max, min;
    double idle_timeout, acquire_timeout, connect_timeout, query_timeout;
    double max_lifetime, slow_query, leak_timeout;
    int max_waiting, statement_cache;
    int max_shared;           /* cap across forked processes; 0 = off */
    const char *const *replicas;  /* conninfo of each read-only replica */
    int n_replicas;
    int log_level;            /* enum pool_log_level */
} pool_config;

typedef struct pool_stats {
    char name[128];
    int pid, max, min;
    int total, idle, in_use, connecting, waiting;
    uint64_t acquired, released, created, closed, timeouts, connect_errors;
    uint64_t leaked, queries, query_errors, slow_queries, rollbacks;
    uint64_t closed_idle, closed_lifetime, closed_broken, closed_discarded;
    uint64_t shutdown_rejects, full_rejects;
    int connect_failures;     /* consecutive failed attempts, 0 after success */
    int max_shared, shared_used;  /* the cross-process cap, when on */
    double wait_time_total, wait_time_max, query_time_total;
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
    POOL_COLLECTED    /* __gc: no network I/O here; counted as leaked */
};

/* Create the pool cfg->name, or return the existing one when its options are
 * equal. Returns a new reference, or NULL with a message in errbuf.
 * start_now 0 leaves the housekeeping thread (and the min top-up) to the
 * first pool use: for nginx's master, which must open no connection and
 * whose workers are forked afterwards. */
pool *pool_configure(const pool_config *cfg, int start_now, char *errbuf,
                     size_t errlen);

/* The replicas of a pool (pools "<name>/replica-<i>" with its options,
 * configured with it and shut down with it): how many, and the one at
 * position i (modulo the count; the pool holds the reference). Each call of
 * pool_next_turn gives the next position, for taking them in turn. */
int pool_replica_count(const pool *p);
pool *pool_replica(pool *p, unsigned i);
unsigned pool_next_turn(pool *p);

/* A new reference to the configured pool name, or NULL; *was_shut_down tells
 * whether a pool of that name existed and was shut down. Starts the
 * housekeeping of this process if it was deferred. */
pool *pool_lookup(const char *name, int *was_shut_down);

void pool_ref(pool *p);
void pool_unref(pool *p);

const pool_config *pool_get_config(const pool *p);
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

/* The connection of a checkout held busy (hold_busy, or between
 * pool_begin_use and pool_end_use). */
pq_conn *pool_slot_conn(pool_slot *slot);

/* Whether (slot, ticket) is still a live checkout. */
int pool_checkout_valid(pool_slot *slot, uint64_t ticket);

/* Remember where a checkout was made (for leak_timeout warnings). */
void pool_set_origin(pool_slot *slot, uint64_t ticket, const char *origin);

/* Stop acquires, wake waiters, close idle connections, wait up to timeout
 * for the busy ones, close the rest; the same for the pool's replicas. 1
 * when all closed within timeout. */
int pool_shutdown(pool *p, double timeout);
int pool_shutdown_all(double timeout);

void pool_get_stats(pool *p, pool_stats *out);

/* The per-second samples taken by the housekeeper, oldest first, into out
 * (room for POOL_HISTORY); returns how many. */
int pool_history(pool *p, pool_sample *out);

/* Names of the configured pools, for metrics: calls fn for each. */
void pool_each(void (*fn)(pool *p, void *ud), void *ud);

/* SIGTERM and SIGINT close every idle connection cleanly (a Terminate each),
 * then end the process as the signal would have. Not for nginx, which has
 * its own handlers. 1 on success. */
int pool_close_on_signals(void);

/* Logging: lines go to stderr unless a listener is registered; every line is
 * also kept in a small ring that listeners read by sequence number. */
void pool_log(pool *p, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pool_log_listeners(int delta);
uint64_t pool_log_seq(void);
/* Copy the line after sequence `after` into buf; returns its sequence, or 0
 * when there is none newer. Lines lost to ring overflow are skipped. */
uint64_t pool_log_read(uint64_t after, int *level, char *buf, size_t len);

#endif
