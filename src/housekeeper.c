/*
 * housekeeper.c - what the housekeeping thread (hk_thread.c) does, once a
 * second or whenever something falls due, to every configured pool:
 *  - ticks the pool's figures once a second (pool_figures.c): the
 *    history sample of the gauges, the second's figures for the windows;
 *  - closes idle connections past idle_timeout (above min, oldest first)
 *    and idle ones past their lifetime, counting the reason;
 *  - with max_shared, lends: closes idle connections whose tokens other
 *    processes wait for (reason "lent"), and has connections above a fair
 *    share closed as they are released, looking every SHARED_LEND_POLL
 *    while it holds idle ones or others wait; reclaims the tokens of dead
 *    processes;
 *  - closes the connections that __gc returned broken, and rolls back
 *    (with a deadline) and releases the ones __gc returned inside a
 *    transaction, so their locks go at once;
 *  - warns once about each checkout held past leak_timeout;
 *  - starts the connection attempts the throttle held back (throttle.h)
 *    when they fall due, and tops the pool up to min (attempts run on
 *    connector.c's threads).
 * It works under each pool's mutex only to pick what to do; closes and
 * rollbacks happen after the mutex is released (pool_internal.h).
 */
#define _GNU_SOURCE
#include "housekeeper.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "pool_internal.h"
#include "registry.h"

/* Seconds until just past the next wall-clock second. */
static double until_next_second(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return 1.0 - (double)ts.tv_nsec * 1e-9 + 0.002;
}

/* At most this many closes and leak warnings per pool and pass; the pass
 * comes again at once while more are due (so its memory does not grow
 * with max). */
#define HK_BATCH 32

static int min_int(int a, int b)
{
    return a < b ? a : b;
}

/* Take the idle slot s out for closing with reason (mutex held): its
 * connection joins doomed, to be closed once the mutex is released. */
static void doom(pool *p, pool_slot *s, const char *reason, pq_conn **doomed,
                 const char **why, int *n_doomed)
{
    pool_idle_remove(p, s);
    why[*n_doomed] = reason;
    doomed[(*n_doomed)++] = s->conn;
    pool_count_close(p, reason);
    pool_slot_vacate(p, s);
}

/* One pass over p: close idle connections past idle_timeout (above min) or
 * past their lifetime, close retired ones, roll back collected ones, warn
 * about leaks, top up min. Returns the time of the next thing to do. */
static double housekeep(pool *p, double t, int64_t wall)
{
    pq_conn *doomed[HK_BATCH];
    const char *why[HK_BATCH];
    char leaks[HK_BATCH][512];
    int n_doomed = 0, n_leaks = 0, i, spare, top_up = 1;
    double next = t + until_next_second();
    retired *ret;
    pool_slot *s, *older;

    pthread_mutex_lock(&p->mu);
    ret = p->retired_head;
    p->retired_head = NULL;
    if (p->closing) {
        pthread_mutex_unlock(&p->mu);
        goto retired_work;
    }
    pool_figures_tick(p, wall);
    spare = pool_total(p) - p->cfg.min;
    for (s = p->idle_tail; s; s = older) {    /* oldest idle first */
        const char *reason = NULL;
        older = s->prev;
        if (t >= s->expires_at) {
            reason = "lifetime over";
        } else if (p->cfg.idle_timeout > 0 && spare > 0 &&
                   t - s->idle_since >= p->cfg.idle_timeout) {
            reason = "idle timeout";
        } else {
            if (spare > 0 && p->cfg.idle_timeout > 0 &&
                s->idle_since + p->cfg.idle_timeout < next)
                next = s->idle_since + p->cfg.idle_timeout;
            if (s->expires_at < next)
                next = s->expires_at;
            continue;
        }
        if (n_doomed == HK_BATCH) {
            next = t;
            break;
        }
        doom(p, s, reason, doomed, why, &n_doomed);
        spare--;
    }
    if (p->shared) {
        /* Lend: close the oldest idle connections other processes wait for
         * the tokens of, and leave them the tokens rather than topping up. */
        int others, shed,
            lend = shared_cap_lend(p->shared,
                                   min_int(p->n_idle, HK_BATCH - n_doomed),
                                   &shed, &others);
        while (lend-- > 0)
            doom(p, p->idle_tail, "lent", doomed, why, &n_doomed);
        p->lend_on_release = shed;
        if (others > 0)
            top_up = 0;
        if ((p->n_idle > 0 || others > 0) && t + SHARED_LEND_POLL < next)
            next = t + SHARED_LEND_POLL;
    }
    if (p->cfg.leak_timeout > 0) {
        for (i = 0; i < p->cfg.max; i++) {
            s = &p->slots[i];
            if (s->state != SLOT_IN_USE || s->leak_warned)
                continue;
            if (t - s->checkout_at < p->cfg.leak_timeout) {
                if (s->checkout_at + p->cfg.leak_timeout < next)
                    next = s->checkout_at + p->cfg.leak_timeout;
                continue;
            }
            if (n_leaks == HK_BATCH) {
                next = t;
                break;
            }
            s->leak_warned = 1;
            snprintf(leaks[n_leaks++], sizeof leaks[0],
                     "connection held for %.1f s (leak_timeout %g s)%s%.400s",
                     t - s->checkout_at, p->cfg.leak_timeout,
                     s->origin ? ", acquired at " : "",
                     s->origin ? s->origin : "");
        }
    }
    /* attempts the throttle held back: a due probe, the min top-up */
    pool_start_attempts(p);
    if (top_up)
        pool_top_up(p, p->cfg.min);
    if (p->thr.failures > 0 && p->thr.next_attempt_at < next &&
        (p->n_queued > 0 || pool_total(p) < p->cfg.min))
        next = p->thr.next_attempt_at;
    if (p->thr.limit < p->cfg.max && p->n_queued > 0 && p->thr.probe_at < next)
        next = p->thr.probe_at;
    pthread_mutex_unlock(&p->mu);

    for (i = 0; i < n_doomed; i++)
        pool_close_conn(p, doomed[i], why[i], POOL_LOG_INFO);
    for (i = 0; i < n_leaks; i++)
        pool_log(p, POOL_LOG_WARN, "%s", leaks[i]);

retired_work:
    while (ret) {
        retired *r = ret;
        ret = r->next;
        if (r->slot)
            pool_finish_collected(p, r->slot);
        else
            pool_close_conn(p, r->conn, "broken", POOL_LOG_WARN);
        free(r);
    }
    return next;
}

typedef struct pass {
    double t, next;
    int64_t wall;
} pass;

static void housekeep_one(pool *p, void *ud)
{
    pass *ps = ud;
    double due = housekeep(p, ps->t, ps->wall);
    if (due < ps->next)
        ps->next = due;
}

double housekeeper_pass(void)
{
    pass ps;
    ps.t = clock_now();
    ps.next = ps.t + 1.0;
    ps.wall = (int64_t)time(NULL);
    pool_each(housekeep_one, &ps);
    return ps.next;
}
