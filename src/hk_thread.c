/*
 * hk_thread.c - the housekeeping thread (see hk_thread.h).
 *
 * Locking: hk_mu guards stop and poked, and the thread sleeps on hk_cond
 * with it; it is a leaf (callers may hold a pool's mutex when they poke;
 * nothing is taken under it). The pass runs without it. `running` and the
 * next wake-up time are atomics, read without the lock.
 */
#include "hk_thread.h"

#include <pthread.h>
#include <stdint.h>

#include "clock.h"

#define HK_MAX_SLEEP 1.0      /* at least one pass a second (history) */
#define HK_MIN_SLEEP 0.005

static pthread_mutex_t hk_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hk_cond;
static pthread_once_t hk_once = PTHREAD_ONCE_INIT;
static hk_pass_fn hk_pass;
static int running;                /* atomic: the thread was started */
static int stopping, poked;
static uint64_t wake_us;           /* atomic: when it next wakes (µs) */

static void hk_init(void)
{
    clock_cond_init(&hk_cond);
}

void hk_set_pass(hk_pass_fn pass)
{
    pthread_once(&hk_once, hk_init);
    hk_pass = pass;
}

static void *hk_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&hk_mu);
    while (!stopping) {
        double next, t;
        struct timespec until;

        poked = 0;
        pthread_mutex_unlock(&hk_mu);
        next = hk_pass();
        t = clock_now();
        if (next > t + HK_MAX_SLEEP)
            next = t + HK_MAX_SLEEP;
        if (next < t + HK_MIN_SLEEP)
            next = t + HK_MIN_SLEEP;
        until = clock_timespec(next);
        __atomic_store_n(&wake_us, (uint64_t)(next * 1e6), __ATOMIC_RELAXED);
        pthread_mutex_lock(&hk_mu);
        if (!stopping && !poked)
            pthread_cond_timedwait(&hk_cond, &hk_mu, &until);
    }
    __atomic_store_n(&running, 0, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&hk_cond);     /* hk_stop may wait for this */
    pthread_mutex_unlock(&hk_mu);
    return NULL;
}

void hk_ensure(void)
{
    pthread_t thread;
    pthread_attr_t attr;

    if (__atomic_load_n(&running, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&hk_mu);
    if (!running && !stopping && hk_pass) {
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&thread, &attr, hk_main, NULL) == 0)
            __atomic_store_n(&running, 1, __ATOMIC_RELEASE);
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_unlock(&hk_mu);
}

void hk_poke(void)
{
    pthread_mutex_lock(&hk_mu);
    poked = 1;
    pthread_cond_signal(&hk_cond);
    pthread_mutex_unlock(&hk_mu);
}

void hk_poke_before(double t)
{
    if (t * 1e6 < (double)__atomic_load_n(&wake_us, __ATOMIC_RELAXED))
        hk_poke();
}

void hk_stop(double deadline)
{
    struct timespec until = clock_timespec(deadline);
    pthread_mutex_lock(&hk_mu);
    stopping = 1;
    pthread_cond_broadcast(&hk_cond);
    while (running &&
           pthread_cond_timedwait(&hk_cond, &hk_mu, &until) == 0) {
    }
    pthread_mutex_unlock(&hk_mu);
}

void hk_fork_prepare(void)
{
    pthread_mutex_lock(&hk_mu);
}

void hk_fork_parent(void)
{
    pthread_mutex_unlock(&hk_mu);
}

void hk_fork_child(void)
{
    clock_cond_init(&hk_cond);
    running = 0;
    poked = 0;
    wake_us = 0;
    pthread_mutex_unlock(&hk_mu);
}
