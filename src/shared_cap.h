/*
 * shared_cap.h - max_shared: one cap on a pool's connections across the
 * processes forked from the one that configured it.
 *
 * A region of shared memory, mapped when the pool is configured and
 * inherited by every process forked afterwards, counts the tokens taken by
 * each process; a pool slot leaves EMPTY only with a token and gives it
 * back when it becomes EMPTY again. Tokens of a process that died are
 * reclaimed when the cap is reached.
 */
#ifndef PGPOOL_SHARED_CAP_H
#define PGPOOL_SHARED_CAP_H

typedef struct shared_cap shared_cap;

/* A new region for a cap of max tokens, or NULL (mmap failed). */
shared_cap *shared_cap_new(int max);
void shared_cap_free(shared_cap *sc);

/* Take a token for this process; 1 if there was one. */
int shared_cap_take(shared_cap *sc);
/* Give back one of this process's tokens. */
void shared_cap_give(shared_cap *sc);
/* Tokens taken, by all processes. */
int shared_cap_used(shared_cap *sc);

#endif
