/*
 * clock.h - time for the pool core: the monotonic clock, absolute deadlines
 * on it, and condition variables that wait on it.
 *
 * Every time in the pool core and in pq.c is a double in seconds on
 * CLOCK_MONOTONIC, so a change of the wall clock never stretches or cuts a
 * wait.
 */
#ifndef PGPOOL_CLOCK_H
#define PGPOOL_CLOCK_H

#include <pthread.h>
#include <time.h>

/* Now, in seconds on CLOCK_MONOTONIC. */
double clock_now(void);

/* Timeouts longer than this (about 30 years), and infinity, mean "no
 * deadline". */
#define CLOCK_FOREVER 1e9

/* The deadline `timeout` seconds after the monotonic time `from`: HUGE_VAL
 * for no deadline (timeout infinite or above CLOCK_FOREVER); `from` for NaN
 * or a negative timeout (callers validate those; this keeps them harmless). */
double clock_deadline(double from, double timeout);

/* The monotonic time t as a timespec for pthread_cond_timedwait; a time
 * beyond CLOCK_FOREVER (HUGE_VAL) becomes that far-off time, NaN now. */
struct timespec clock_timespec(double t);

/* A condition variable whose timed waits use CLOCK_MONOTONIC. */
void clock_cond_init(pthread_cond_t *cond);

#endif
