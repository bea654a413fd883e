/*
 * housekeeper.c - what the housekeeping thread (hk_thread.c) does, once a
 * second or whenever something falls due, to every configured pool:
 *  - records the second's gauges in the history ring;
 *  - closes idle connections past idle_timeout (above min, oldest first)
 *    and idle ones past their lifetime, counting the reason;
 *  - closes the connections that __gc returned broken (retired);
 *  - warns once about each checkout held past leak_timeout;
 *  - tops the pool up to min, backing off a second after a failed connect.
 * It works under each pool's mutex only to pick what to do; connects and
 * closes happen after the mutex is released (pool_internal.h).
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

/* Record this second's gauges, once per wall-clock second (mutex held). */
static void sample_history(pool *p, int64_t wall)
{
    pool_sample *last = p->history_count
        ? &p->history[(p->history_next + POOL_HISTORY - 1) % POOL_HISTORY]
        : NULL;
    pool_sample *s;

    if (last && last->time == wall)
        return;
    s = &p->history[p->history_next];
    s->time = wall;
    s->total = pool_total(p);
    s->idle = p->n_idle;
    s->in_use = p->n_in_use;
    s->connecting = p->n_connecting;
    s->waiting = p->n_waiting;
    p->history_next = (p->history_next + 1) % POOL_HISTORY;
    if (p->history_count < POOL_HISTORY)
        p->history_count++;
}

/* Seconds until just past the next wall-clock second. */
static double until_next_second(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return 1.0 - (double)ts.tv_nsec * 1e-9 + 0.002;
}

/* One pass over p: close idle connections past idle_timeout (above min) or
 * past their lifetime, close retired ones, warn about leaks, top up min.
 * Returns the time of the next thing to do. */
static double housekeep(pool *p, double t, int64_t wall)
{
    pq_conn **doomed = NULL;
    const char **why = NULL;
    pool_slot **opening = NULL;
    char **leaks = NULL;
    int n_doomed = 0, n_opening = 0, n_leaks = 0, i, spare;
    double next = t + until_next_second();
    retired *ret;
    pool_slot *s, *older;

    doomed = calloc((size_t)p->cfg.max, sizeof *doomed);
    why = calloc((size_t)p->cfg.max, sizeof *why);
    opening = calloc((size_t)p->cfg.max, sizeof *opening);
    leaks = calloc((size_t)p->cfg.max, sizeof *leaks);
    if (!doomed || !why || !opening || !leaks)
        goto done;

    pthread_mutex_lock(&p->mu);
    ret = p->retired_head;
    p->retired_head = NULL;
    if (p->closing) {
        pthread_mutex_unlock(&p->mu);
        goto close_retired;
    }
    sample_history(p, wall);
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
        pool_idle_remove(p, s);
        why[n_doomed] = reason;
        doomed[n_doomed++] = s->conn;
        pool_count_close(p, reason);
        pool_slot_vacate(p, s);
        spare--;
    }
    if (p->cfg.leak_timeout > 0) {
        for (i = 0; i < p->cfg.max; i++) {
            s = &p->slots[i];
            if (s->state != SLOT_IN_USE || s->leak_warned)
                continue;
            if (t - s->checkout_at >= p->cfg.leak_timeout) {
                char buf[2048];
                s->leak_warned = 1;
                snprintf(buf, sizeof buf,
                         "connection held for %.1f s (leak_timeout %g s)%s%s",
                         t - s->checkout_at, p->cfg.leak_timeout,
                         s->origin ? ", acquired at " : "",
                         s->origin ? s->origin : "");
                leaks[n_leaks++] = strdup(buf);
            } else if (s->checkout_at + p->cfg.leak_timeout < next) {
                next = s->checkout_at + p->cfg.leak_timeout;
            }
        }
    }
    while (pool_total(p) < p->cfg.min && t >= p->reconnect_after &&
           (s = pool_take_free_slot(p)) != NULL)
        opening[n_opening++] = s;
    if (pool_total(p) < p->cfg.min && p->reconnect_after > t &&
        p->reconnect_after < next)
        next = p->reconnect_after;
    pthread_mutex_unlock(&p->mu);

    for (i = 0; i < n_doomed; i++)
        pool_close_conn(p, doomed[i], why[i], POOL_LOG_INFO);
    for (i = 0; i < n_leaks; i++) {
        if (leaks[i])
            pool_log(p, POOL_LOG_WARN, "%s", leaks[i]);
        free(leaks[i]);
    }
    for (i = 0; i < n_opening; i++) {
        pq_error err;
        pq_conn *conn;
        s = opening[i];
        conn = pq_connect(p->cfg.conninfo, clock_now() + p->cfg.connect_timeout,
                          &err);
        if (conn)
            pq_set_notice_handler(conn, pool_log_server_notice, p);
        pthread_mutex_lock(&p->mu);
        p->n_connecting--;
        if (!conn || p->closing) {
            if (conn) {
                p->counters.closed++;
            } else {
                p->counters.connect_errors++;
                p->counters.connect_failures++;
            }
            p->reconnect_after = clock_now() + 1.0;
            pool_slot_vacate(p, s);
            pthread_mutex_unlock(&p->mu);
            if (conn)
                pq_close(conn);
            else
                pool_log(p, POOL_LOG_ERROR, "connection error: %s",
                         err.message);
            continue;
        }
        s->conn = conn;
        s->created_at = clock_now();
        s->expires_at = pool_lifetime_end(p, s->created_at);
        p->counters.created++;
        p->counters.connect_failures = 0;
        pool_slot_return(p, s, s->created_at);
        {
            int tot = pool_total(p);
            pthread_mutex_unlock(&p->mu);
            pool_log(p, POOL_LOG_INFO,
                     "new connection (backend %d, %d/%d, min top-up)",
                     pq_backend_pid(conn), tot, p->cfg.max);
        }
    }

close_retired:
    while (ret) {
        retired *r = ret;
        ret = r->next;
        pool_close_conn(p, r->conn, "broken", POOL_LOG_WARN);
        free(r);
    }
done:
    free(doomed);
    free(why);
    free(opening);
    free(leaks);
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
