/*
 * clock.c - monotonic deadlines and the condition variables that wait on
 * them (see clock.h). No state; no locks of its own.
 */
#define _GNU_SOURCE
#include "clock.h"

#include <math.h>

double clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double clock_deadline(double from, double timeout)
{
    if (timeout > CLOCK_FOREVER)
        return HUGE_VAL;
    return timeout > 0 ? from + timeout : from;
}

struct timespec clock_timespec(double t)
{
    struct timespec ts;
    if (!(t >= 0))
        t = clock_now();
    else if (t > 2 * CLOCK_FOREVER)
        t = 2 * CLOCK_FOREVER;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

void clock_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}
