/*
 * registry.h - the pools of this process, by name: configure, look up,
 * reference counts, replicas, shutdown, and walks over them.
 *
 * A name that was shut down and not configured again is remembered, so that
 * a lookup can tell "shut down" from "never configured".
 */
#ifndef PGPOOL_REGISTRY_H
#define PGPOOL_REGISTRY_H

#include <stddef.h>

#include "pool.h"

/* Create the pool cfg->name, or return the existing one when its options are
 * equal. Returns a new reference, or NULL with a message in errbuf.
 * start_now 0 leaves the housekeeping thread (and the min top-up) to the
 * first pool use: for nginx's master, which must open no connection and
 * whose workers are forked afterwards. */
pool *pool_configure(const pool_config *cfg, int start_now, char *errbuf,
                     size_t errlen);

/* A new reference to the configured pool name, or NULL; *was_shut_down tells
 * whether a pool of that name existed and was shut down. Starts the
 * housekeeping of this process if it was deferred. */
pool *pool_lookup(const char *name, int *was_shut_down);

/* The replicas of a pool (pools "<name>/replica-<i>" with its options,
 * configured with it and shut down with it): how many, and the one at
 * position i (modulo the count; the pool holds the reference). Each call of
 * pool_next_turn gives the next position, for taking them in turn. */
int pool_replica_count(const pool *p);
pool *pool_replica(pool *p, unsigned i);
unsigned pool_next_turn(pool *p);

/* Unregister, then drain (pool_drain) within timeout seconds; the same for
 * the pool's replicas. 1 when all closed within timeout. */
int pool_shutdown(pool *p, double timeout);
int pool_shutdown_all(double timeout);

/* Call fn for each configured pool (holding a reference during the call). */
void pool_each(void (*fn)(pool *p, void *ud), void *ud);

/* fork(): the registry's mutex is held across it (taken first). */
void registry_fork_lock(void);
void registry_fork_unlock(void);

#endif
