/*
 * pool_figures.c - a pool's figures as they are read: the copy stats()
 * gives (cumulative counters, durations, gauges), the per-second history
 * of the gauges, and the windows over the last seconds (health's, and the
 * recent longest wait), which the housekeeper's tick feeds.
 *
 * The counting itself happens where things happen (pool.c, pool_slots.c),
 * under the pool's mutex, into p->counters; histograms are histogram.h's.
 * Once a wall-clock second, pool_figures_tick stores what changed since
 * the last tick in a ring of POOL_WINDOW seconds; a window adds up the
 * ring's last seconds and what changed since the last tick. Every function
 * here takes the pool's mutex, or expects it held (the tick).
 */
#include "pool_internal.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* Record this second's gauges in the history ring (mutex held). */
static void sample_history(pool *p, int64_t wall)
{
    pool_sample *s = &p->history[p->history_next];
    s->time = wall;
    s->total = p->n_idle + p->n_in_use + p->n_connecting;
    s->idle = p->n_idle;
    s->in_use = p->n_in_use;
    s->connecting = p->n_connecting;
    s->waiting = p->n_waiting;
    p->history_next = (p->history_next + 1) % POOL_HISTORY;
    if (p->history_count < POOL_HISTORY)
        p->history_count++;
}

/* now - then, for a counter that may have been taken back by one (a
 * checkout undone after the tick counted it): never below 0. */
static uint32_t delta(uint64_t now, uint64_t then)
{
    uint64_t d = now > then ? now - then : 0;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

/* What changed since the last tick (mutex held). */
static void since_tick(const pool *p, pool_second *out)
{
    const pool_stats *c = &p->counters;
    const pool_ticked *t = &p->ticked;
    int i;

    out->timeouts = delta(c->waited_timeouts, t->timeouts);
    out->full_rejects = delta(c->full_rejects, t->full_rejects);
    out->connect_rejects = delta(c->connect_rejects, t->connect_rejects);
    for (i = 0; i < HISTOGRAM_BUCKETS; i++)
        out->acquire_wait[i] = delta(c->acquire_wait.counts[i],
                                     t->acquire_wait.counts[i]);
    out->acquire_wait_sum = c->acquire_wait.sum - t->acquire_wait.sum;
    if (out->acquire_wait_sum < 0)
        out->acquire_wait_sum = 0;
    out->wait_max = p->wait_max_second;
    out->waiting = p->n_waiting;
}

void pool_figures_tick(pool *p, int64_t wall)
{
    pool_second *s;

    if (p->history_count &&
        p->history[(p->history_next + POOL_HISTORY - 1) % POOL_HISTORY].time
            == wall)
        return;
    sample_history(p, wall);
    s = &p->seconds[p->seconds_next];
    since_tick(p, s);
    s->time = wall;
    p->ticked.timeouts = p->counters.waited_timeouts;
    p->ticked.full_rejects = p->counters.full_rejects;
    p->ticked.connect_rejects = p->counters.connect_rejects;
    p->ticked.acquire_wait = p->counters.acquire_wait;
    p->wait_max_second = 0;
    p->seconds_next = (p->seconds_next + 1) % POOL_WINDOW;
    if (p->seconds_count < POOL_WINDOW)
        p->seconds_count++;
}

/* Add one second's figures to a window. */
static void add_second(pool_window *w, const pool_second *s)
{
    int i;
    w->timeouts += s->timeouts;
    w->full_rejects += s->full_rejects;
    w->connect_rejects += s->connect_rejects;
    for (i = 0; i < HISTOGRAM_BUCKETS; i++)
        w->acquire_wait.counts[i] += s->acquire_wait[i];
    w->acquire_wait.sum += s->acquire_wait_sum;
}

/* The health window and the recent longest wait, as of wall (mutex
 * held): the ring's seconds after wall - length, and the partial second
 * since the last tick. */
static void window_figures(const pool *p, int64_t wall, pool_stats *out)
{
    pool_window *w = &out->window;
    pool_second now;
    int i;

    w->seconds = p->cfg.health.window;
    since_tick(p, &now);
    add_second(w, &now);
    out->wait_time_max_recent = now.wait_max;
    for (i = 0; i < p->seconds_count; i++) {
        const pool_second *s =
            &p->seconds[(p->seconds_next - 1 - i + POOL_WINDOW) % POOL_WINDOW];
        int64_t age = wall - s->time;
        if (age >= w->seconds && age >= POOL_WAIT_MAX_WINDOW)
            break;
        if (age < w->seconds) {
            add_second(w, s);
            w->waiting_seconds += s->waiting > 0;
        }
        if (age < POOL_WAIT_MAX_WINDOW && s->wait_max > out->wait_time_max_recent)
            out->wait_time_max_recent = s->wait_max;
    }
}

void pool_get_stats(pool *p, pool_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->counters;
    snprintf(out->name, sizeof out->name, "%s", p->cfg.name);
    out->pid = (int)getpid();
    out->max = p->cfg.max;
    out->min = p->cfg.min;
    out->idle = p->n_idle;
    out->in_use = p->n_in_use;
    out->connecting = p->n_connecting;
    out->total = p->n_idle + p->n_in_use + p->n_connecting;
    out->waiting = p->n_waiting;
    out->closing = p->closing;
    out->connect_failures = p->thr.failures;
    out->limit = p->thr.limit;
    out->server_slots = p->server_slots;
    out->backoff = p->thr.failures > 0 ? p->thr.step : 0;
    snprintf(out->limit_reason, sizeof out->limit_reason, "%s",
             p->thr.limit < p->cfg.max ? p->thr.reason : "");
    out->max_shared = p->cfg.max_shared;
    out->shared_used = p->shared ? shared_cap_used(p->shared) : 0;
    out->n_replicas = p->n_replicas;
    window_figures(p, (int64_t)time(NULL), out);
    pthread_mutex_unlock(&p->mu);
}

int pool_history(pool *p, pool_sample *out)
{
    int i, n, first;
    pthread_mutex_lock(&p->mu);
    n = p->history_count;
    first = (p->history_next - n + POOL_HISTORY) % POOL_HISTORY;
    for (i = 0; i < n; i++)
        out[i] = p->history[(first + i) % POOL_HISTORY];
    pthread_mutex_unlock(&p->mu);
    return n;
}
