/*
 * shared_cap.h - max_shared: one cap on a pool's connections across the
 * processes forked from the one that configured it.
 *
 * A region of shared memory per pool name, mapped when the name is first
 * configured with max_shared and kept for the life of the process, counts
 * the tokens taken by each process. Every process forked afterwards
 * inherits it, and a later configure of the same name in this process (a
 * reload of nginx's master, after shutdown or with other options) finds it
 * again: the tokens of the processes still running on the old
 * configuration stay counted under the one cap. A pool slot leaves EMPTY
 * only with a token and gives it back when it becomes EMPTY again.
 *
 * Idle connections are lent, not hoarded: a process whose waiters find no
 * token says so in the region (shared_cap_want), and the housekeeper of a
 * process holding idle connections closes some (shared_cap_lend); one
 * holding more than its fair share closes connections as they are
 * released, and takes no token while others wait. Tokens
 * of a process that died are reclaimed when the cap is reached and at the
 * housekeeper's passes while anyone waits or the cap is full.
 */
#ifndef PGPOOL_SHARED_CAP_H
#define PGPOOL_SHARED_CAP_H

typedef struct shared_cap shared_cap;

/* How often (seconds) a process holding idle connections, or whose
 * connections other processes wait for, looks at the region to lend. */
#define SHARED_LEND_POLL 0.1

/* The region of pool `name`, its cap set to max: the one this process (or
 * the process it was forked from) mapped for that name, else a new one.
 * NULL when mmap fails. Regions are never unmapped. */
shared_cap *shared_cap_for(const char *name, int max);

/* Take a token for this process; 1 if there was one (none for a process
 * holding its fair share or more while other processes wait). */
int shared_cap_take(shared_cap *sc);
/* Give back one of this process's tokens. */
void shared_cap_give(shared_cap *sc);
/* Tokens taken, by all processes. */
int shared_cap_used(shared_cap *sc);

/* This process's callers waiting for a token change by delta. */
void shared_cap_want(shared_cap *sc, int delta);

/* The housekeeper's look at the region: reclaims the tokens of dead
 * processes when anyone waits or the cap is full, and returns how many of
 * this process's `idle` connections to close so that waiting processes get
 * their tokens (counted as being lent until this process gives them back
 * with shared_cap_give, which it must do at once). *shed: how many more
 * to close as they are released, to come down to a fair share (the cap
 * divided among the processes holding or wanting tokens). *others_want:
 * callers of other processes waiting for a token. */
int shared_cap_lend(shared_cap *sc, int idle, int *shed, int *others_want);

#endif
