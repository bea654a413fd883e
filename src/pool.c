/*
 * pool.c - one pool: slot lists, FIFO waiters, acquire, release, statements
 * on a checkout, drain and close, figures. No Lua here; the connections are
 * reached through pq.c only.
 *
 * The invariants it keeps are stated in pool_internal.h; the lock order of
 * the core in registry.c. Within this file: a pool's mutex is taken for a
 * few pointer moves and counters at a time, and never across network I/O
 * (the slot is taken into CONNECTING or IN_USE, and marked busy while its
 * connection is used, so that shutdown leaves it to its user).
 */
#define _GNU_SOURCE
#include "pool_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "connector.h"
#include "hk_thread.h"
#include <math.h>

static uint64_t ticket_counter;    /* atomic */

/* Every pool not yet freed, configured or shut down: fork and exit reach
 * the ones that handles still hold after their shutdown. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static pool *live_head;

static uint64_t new_ticket(void)
{
    return __atomic_add_fetch(&ticket_counter, 1, __ATOMIC_RELAXED);
}

void pool_log(pool *p, int level, const char *fmt, ...)
{
    va_list ap;
    if (level < (p ? p->cfg.log_level : POOL_LOG_INFO))
        return;
    va_start(ap, fmt);
    log_vwrite(level, p ? p->cfg.name : NULL, fmt, ap);
    va_end(ap);
}

/* ---- slot lists (pool mutex held) -------------------------------------- */

static void idle_push(pool *p, pool_slot *s)
{
    s->state = SLOT_IDLE;
    s->prev = NULL;
    s->next = p->idle_head;
    if (p->idle_head)
        p->idle_head->prev = s;
    else
        p->idle_tail = s;
    p->idle_head = s;
    p->n_idle++;
}

void pool_idle_remove(pool *p, pool_slot *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        p->idle_head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        p->idle_tail = s->prev;
    s->prev = s->next = NULL;
    p->n_idle--;
}

int pool_total(const pool *p)
{
    return p->n_idle + p->n_in_use + p->n_connecting;
}

pool_slot *pool_take_free_slot(pool *p)
{
    pool_slot *s = p->free_head;
    if (!s || (p->shared && !shared_cap_take(p->shared)))
        return NULL;
    p->free_head = s->next;
    s->next = NULL;
    s->state = SLOT_CONNECTING;
    p->n_connecting++;
    return s;
}

static waiter *waiter_pop(pool *p)
{
    waiter *w = p->wait_head;
    if (w) {
        p->wait_head = w->next;
        if (!p->wait_head)
            p->wait_tail = NULL;
        w->next = NULL;
        p->n_queued--;
    }
    return w;
}

static void waiter_remove(pool *p, waiter *w)
{
    waiter **link = &p->wait_head, *prev = NULL;
    while (*link && *link != w) {
        prev = *link;
        link = &(*link)->next;
    }
    if (*link) {
        *link = w->next;
        if (p->wait_tail == w)
            p->wait_tail = prev;
        p->n_queued--;
    }
}

/* ---- connection attempts (connector.c runs them) ----------------------- */

static void attempt_done(void *arg, pq_conn *conn, const pq_error *err);

static double connect_deadline_at(pool *p, double t)
{
    /* connect_timeout 0: no limit, as in libpq */
    return p->cfg.connect_timeout > 0 ? clock_deadline(t, p->cfg.connect_timeout)
                                      : HUGE_VAL;
}

/* The end of the attempt for s (mutex held): the new connection goes to the
 * oldest waiter or the idle list; a failure to the oldest waiter, who gets
 * its error. Returns a connection to close once the mutex is released. */
static pq_conn *attempt_end(pool *p, pool_slot *s, pq_conn *conn,
                            const pq_error *err)
{
    double t = clock_now();
    p->n_connecting--;
    if (!conn) {
        waiter *w = waiter_pop(p);
        p->counters.connect_errors++;
        p->counters.connect_failures++;
        p->reconnect_after = t + 1.0;
        if (w) {
            *w->err = *err;
            w->failed = 1;
            pthread_cond_signal(&w->cond);
        }
        pool_slot_vacate(p, s);
        return NULL;
    }
    if (p->closing) {
        p->counters.closed++;
        pool_slot_vacate(p, s);
        return conn;
    }
    s->conn = conn;
    s->created_at = t;
    s->expires_at = pool_lifetime_end(p, t);
    p->counters.created++;
    p->counters.connect_failures = 0;
    pool_slot_return(p, s, t);
    return NULL;
}

/* Connect for the CONNECTING slot s (mutex held). The attempt holds a
 * reference to the pool until it has ended. */
static void start_attempt(pool *p, pool_slot *s)
{
    pq_error err;
    pool_ref(p);
    if (connector_start(p->cfg.conninfo, connect_deadline_at(p, clock_now()),
                        attempt_done, s))
        return;
    pq_error_set(&err, PQ_CODE_CONNECT,
                 "could not start a connection attempt (no thread)");
    attempt_end(p, s, NULL, &err);
    __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);  /* not the last */
}

static void attempt_done(void *arg, pq_conn *conn, const pq_error *err)
{
    pool_slot *s = arg;
    pool *p = s->owner;
    pq_conn *doomed;

    /* Logged before a waiter hears of it (and may close the connection). */
    if (!conn) {
        pool_log(p, POOL_LOG_ERROR, "connection error: %s", err->message);
    } else {
        int tot;
        pthread_mutex_lock(&p->mu);
        tot = pool_total(p);          /* this slot counts as connecting */
        pthread_mutex_unlock(&p->mu);
        pool_log(p, POOL_LOG_INFO, "new connection (backend %d, %d/%d)",
                 pq_backend_pid(conn), tot, p->cfg.max);
    }
    pthread_mutex_lock(&p->mu);
    doomed = attempt_end(p, s, conn, err);
    pthread_mutex_unlock(&p->mu);
    if (doomed)
        pq_close(doomed);
    pool_unref(p);
}

/* Start attempts while the queue is longer than the attempts under way
 * and there is capacity (mutex held). */
static void start_attempts(pool *p)
{
    pool_slot *s;
    while (p->n_queued > p->n_connecting &&
           (s = pool_take_free_slot(p)) != NULL)
        start_attempt(p, s);
}

void pool_top_up(pool *p, int target)
{
    pool_slot *s;
    while (pool_total(p) < target && (s = pool_take_free_slot(p)) != NULL)
        start_attempt(p, s);
}

/* The slot's connection is gone and not counted anywhere yet. */
void pool_slot_vacate(pool *p, pool_slot *s)
{
    s->conn = NULL;
    s->busy = s->revoke_pending = s->leak_warned = 0;
    free(s->origin);
    s->origin = NULL;
    if (!p->closing && p->n_queued > p->n_connecting) {
        s->state = SLOT_CONNECTING;
        p->n_connecting++;
        start_attempt(p, s);
    } else {
        s->state = SLOT_EMPTY;
        s->next = p->free_head;
        s->prev = NULL;
        p->free_head = s;
        if (p->shared)
            shared_cap_give(p->shared);
    }
    pthread_cond_broadcast(&p->drained);
}

/* Take an in-use slot away from its holder for shutdown (mutex held, slot
 * not busy): the holder's handle answers "shutdown" from now on. Returns
 * the connection to close once the mutex is released. */
static pq_conn *revoke_slot(pool *p, pool_slot *s)
{
    pq_conn *conn = s->conn;
    s->revoked_ticket = s->ticket;
    s->ticket = new_ticket();
    p->n_in_use--;
    p->counters.closed++;
    pool_slot_vacate(p, s);
    return conn;
}

void pool_slot_return(pool *p, pool_slot *s, double t)
{
    waiter *w = waiter_pop(p);
    s->idle_since = t;
    if (w) {
        s->state = SLOT_IN_USE;
        p->n_in_use++;
        w->granted = s;
        pthread_cond_signal(&w->cond);
    } else {
        idle_push(p, s);
        /* A short idle_timeout may fall before the housekeeper's next tick. */
        if (p->cfg.idle_timeout > 0)
            hk_poke_before(t + p->cfg.idle_timeout);
    }
}

double pool_lifetime_end(pool *p, double created)
{
    double jitter;
    if (p->cfg.max_lifetime <= 0)
        return 1e300;
    /* xorshift64: a different end for each connection, so they do not all
     * expire together; up to 2.5% earlier than max_lifetime. */
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    jitter = (double)(p->rng % 10000) / 10000.0 * 0.025;
    return created + p->cfg.max_lifetime * (1.0 - jitter);
}

void pool_count_close(pool *p, const char *reason)
{
    p->counters.closed++;
    if (strcmp(reason, "idle timeout") == 0)
        p->counters.closed_idle++;
    else if (strcmp(reason, "lifetime over") == 0)
        p->counters.closed_lifetime++;
    else if (strcmp(reason, "discarded") == 0)
        p->counters.closed_discarded++;
    else if (strcmp(reason, "broken") == 0)
        p->counters.closed_broken++;
}

void pool_close_conn(pool *p, pq_conn *c, const char *reason, int level)
{
    pool_log(p, level, "connection closed (%s, backend %d)", reason,
             pq_backend_pid(c));
    pq_close(c);
}
/* ---- the pool object --------------------------------------------------- */

/* The pool mutex guards a few pointer moves and counters at a time: an
 * adaptive mutex spins that long before it sleeps, sparing the futex sleep
 * and wake-up (two context switches) a contended lock would cost. */
static void init_pool_mutex(pthread_mutex_t *mu)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(mu, &attr);
    pthread_mutexattr_destroy(&attr);
}

static void free_parts(pool *p)
{
    free(p->slots);
    free(p->name);
    free(p->conninfo);
    free(p);
}

pool *pool_new(const pool_config *cfg)
{
    pool *p = calloc(1, sizeof *p);
    int i;

    if (!p)
        return NULL;
    p->slots = calloc((size_t)cfg->max, sizeof *p->slots);
    p->name = strdup(cfg->name);
    p->conninfo = cfg->conninfo ? strdup(cfg->conninfo) : NULL;
    p->cfg = *cfg;
    p->cfg.name = p->name;
    p->cfg.conninfo = p->conninfo;
    p->cfg.replicas = NULL;       /* the caller's; see p->replicas */
    if (!p->slots || !p->name || (cfg->conninfo && !p->conninfo) ||
        (cfg->max_shared > 0 &&
         (p->shared = shared_cap_new(cfg->max_shared)) == NULL)) {
        free_parts(p);
        return NULL;
    }
    init_pool_mutex(&p->mu);
    clock_cond_init(&p->drained);
    for (i = cfg->max - 1; i >= 0; i--) {
        p->slots[i].owner = p;
        p->slots[i].next = p->free_head;
        p->free_head = &p->slots[i];
    }
    p->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^
             (uint64_t)(uintptr_t)p;
    if (!p->rng)
        p->rng = 88172645463325252ULL;
    p->refs = 1;
    pthread_mutex_lock(&live_mu);
    p->next_live = live_head;
    live_head = p;
    pthread_mutex_unlock(&live_mu);
    return p;
}

/* The end of a pool whose last reference is gone. */
static void pool_destroy(pool *p)
{
    pool **link;
    retired *r;
    int i;

    pthread_mutex_lock(&live_mu);
    for (link = &live_head; *link != p; link = &(*link)->next_live) {
    }
    *link = p->next_live;
    pthread_mutex_unlock(&live_mu);
    for (i = 0; i < p->n_replicas; i++)
        pool_unref(p->replicas[i]);
    free(p->replicas);

    for (i = 0; i < p->cfg.max; i++) {
        if (p->slots[i].conn)
            pq_close(p->slots[i].conn);
        free(p->slots[i].origin);
    }
    while ((r = p->retired_head) != NULL) {
        p->retired_head = r->next;
        pq_close(r->conn);
        free(r);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->drained);
    shared_cap_free(p->shared);
    free_parts(p);
}

void pool_ref(pool *p)
{
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
}

void pool_unref(pool *p)
{
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
        pool_destroy(p);
}

/* A reference to p unless its last one is already gone (live_mu held). */
static int ref_if_alive(pool *p)
{
    int n = __atomic_load_n(&p->refs, __ATOMIC_RELAXED);
    while (n > 0)
        if (__atomic_compare_exchange_n(&p->refs, &n, n + 1, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return 1;
    return 0;
}

void pool_each_live(void (*fn)(pool *p, void *ud), void *ud)
{
    pool *p, **list = NULL;
    int n = 0, i;

    pthread_mutex_lock(&live_mu);
    for (p = live_head; p; p = p->next_live)
        n++;
    list = calloc((size_t)n + 1, sizeof *list);
    n = 0;
    for (p = live_head; list && p; p = p->next_live)
        if (ref_if_alive(p))
            list[n++] = p;
    pthread_mutex_unlock(&live_mu);
    for (i = 0; i < n; i++) {
        fn(list[i], ud);
        pool_unref(list[i]);
    }
    free(list);
}

const pool_config *pool_get_config(const pool *p)
{
    return &p->cfg;
}

int pool_is_closing(pool *p)
{
    int closing;
    pthread_mutex_lock(&p->mu);
    closing = p->closing;
    pthread_mutex_unlock(&p->mu);
    return closing;
}

/* ---- acquire ----------------------------------------------------------- */

/* The slot this thread returned last. A thread gets it back when it is
 * still idle (as HikariCP's per-thread lists do): the thread and that
 * server backend keep talking to each other, which on a loaded machine
 * saves the scheduler's wake-ups of connections hopping between threads. */
static __thread pool *thread_last_pool;
static __thread pool_slot *thread_last_slot;

/* The idle slot to hand out (mutex held, someone idle, nobody waiting). */
static pool_slot *pick_idle(pool *p)
{
    pool_slot *s = thread_last_slot;
    if (thread_last_pool != p || s < p->slots || s >= p->slots + p->cfg.max ||
        s->state != SLOT_IDLE)
        s = p->idle_head;
    pool_idle_remove(p, s);
    return s;
}

static int shutdown_error(pool *p, pq_error *err)
{
    return pq_error_set(err, PQ_CODE_SHUTDOWN, "pool \"%s\" is shut down",
                        p->cfg.name);
}

/* Take ownership of s for a new checkout (mutex held); returns the wait
 * counted. */
static double start_checkout(pool *p, pool_slot *s, double started, double t)
{
    double waited = t - started;
    s->busy = 1;                  /* ours to check and use; see pool_acquire */
    s->ticket = new_ticket();
    s->checkout_at = t;
    s->leak_warned = 0;
    p->counters.acquired++;
    p->counters.wait_time_total += waited;
    if (waited > p->counters.wait_time_max)
        p->counters.wait_time_max = waited;
    return waited;
}

/* A checkout whose connection turned out unusable is not counted. */
static void uncount_checkout(pool *p, double waited)
{
    p->counters.acquired--;
    p->counters.wait_time_total -= waited;
}

/* How often a waiter looks for a token freed by another process (nothing
 * signals it across processes). */
#define SHARED_POLL 0.02

static void timeout_error(pool *p, double timeout, pq_error *err)
{
    char connecting[32] = "", shared[48] = "";
    if (p->n_connecting)
        snprintf(connecting, sizeof connecting, ", %d connecting",
                 p->n_connecting);
    if (p->shared)
        snprintf(shared, sizeof shared, ", %d/%d in use across processes",
                 shared_cap_used(p->shared), p->cfg.max_shared);
    pq_error_set(err, PQ_CODE_TIMEOUT,
                 "timeout after %g s waiting for a connection (pool \"%s\": "
                 "%d/%d in use%s, %d waiting%s)", timeout, p->cfg.name,
                 p->n_in_use, p->cfg.max, connecting, p->n_waiting, shared);
}

/* Wait in the FIFO queue (mutex held), starting a connection attempt when
 * there is capacity. Returns the granted slot (IN_USE, with a connection),
 * or NULL with err (timeout, shutdown, the error of a failed attempt). */
static pool_slot *wait_in_line(pool *p, double timeout, double deadline,
                               pq_error *err)
{
    waiter w;

    memset(&w, 0, sizeof w);
    clock_cond_init(&w.cond);
    w.err = err;
    if (p->wait_tail)
        p->wait_tail->next = &w;
    else
        p->wait_head = &w;
    p->wait_tail = &w;
    p->n_queued++;
    p->n_waiting++;
    start_attempts(p);
    while (!w.granted && !w.shut_down && !w.failed) {
        double until = deadline;
        struct timespec ts;
        if (p->shared && clock_now() + SHARED_POLL < deadline)
            until = clock_now() + SHARED_POLL;
        ts = clock_timespec(until);
        pthread_cond_timedwait(&w.cond, &p->mu, &ts);
        if (w.granted || w.shut_down || w.failed)
            break;
        if (p->shared)
            start_attempts(p);
        if (clock_now() >= deadline) {
            waiter_remove(p, &w);
            break;
        }
    }
    p->n_waiting--;
    pthread_cond_destroy(&w.cond);
    if (w.granted)
        return w.granted;
    if (w.shut_down) {
        p->counters.shutdown_rejects++;
        shutdown_error(p, err);
    } else if (!w.failed) {
        p->counters.timeouts++;
        timeout_error(p, timeout, err);
    }
    return NULL;
}

/* A connection returned less than this long ago (seconds) is handed out
 * without the liveness check: a release/acquire cycle of a busy pool then
 * costs no system call. Like HikariCP's aliveBypassWindow, much shorter. */
#define LIVENESS_BYPASS 0.005

/* Why the connection of a slot we own cannot be handed out, or NULL: past
 * its lifetime, closed by the server, or stuck in a transaction. */
static const char *unusable_reason(pool_slot *s)
{
    double t = clock_now();
    if (t >= s->expires_at)
        return "lifetime over";
    if (t - s->idle_since >= LIVENESS_BYPASS && !pq_is_alive(s->conn))
        return "broken";
    return pq_txn_status(s->conn) == PQ_TXN_IDLE ? NULL : "broken";
}

/* Callers that would wait for a release rather than for a connection
 * attempt (mutex held): the queue less what attempts under way and free
 * capacity will serve. */
static int waiting_for_release(const pool *p)
{
    return p->n_queued - p->n_connecting - (p->cfg.max - pool_total(p));
}

int pool_acquire(pool *p, double timeout, int hold_busy, pool_slot **slot,
                 uint64_t *ticket, pq_error *err)
{
    double started = clock_now(), deadline = clock_deadline(started, timeout);
    pool_slot *s;
    pq_conn *revoked;

    hk_ensure();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        const char *reason;
        double waited;

        if (p->closing) {
            p->counters.shutdown_rejects++;
            pthread_mutex_unlock(&p->mu);
            return shutdown_error(p, err);
        }
        if (!p->wait_head && p->idle_head) {
            s = pick_idle(p);
            s->state = SLOT_IN_USE;
            p->n_in_use++;
        } else if (p->cfg.max_waiting > 0 &&
                   waiting_for_release(p) >= p->cfg.max_waiting) {
            p->counters.full_rejects++;
            pq_error_set(err, PQ_CODE_FULL,
                         "too many waiting for a connection (pool \"%s\": "
                         "%d/%d in use, %d waiting, max_waiting %d)",
                         p->cfg.name, p->n_in_use, p->cfg.max, p->n_waiting,
                         p->cfg.max_waiting);
            pthread_mutex_unlock(&p->mu);
            return 0;
        } else if ((s = wait_in_line(p, timeout, deadline, err)) == NULL) {
            pthread_mutex_unlock(&p->mu);
            return 0;
        }
        waited = start_checkout(p, s, started, clock_now());
        *ticket = s->ticket;
        pthread_mutex_unlock(&p->mu);

        /* busy while we check the connection: a shutdown revoking
         * checkouts meanwhile leaves it to us (revoke_pending). */
        reason = unusable_reason(s);
        if (!reason)
            break;
        pthread_mutex_lock(&p->mu);
        revoked = s->conn;
        uncount_checkout(p, waited);
        p->n_in_use--;
        pool_count_close(p, reason);
        pool_slot_vacate(p, s);
        pthread_mutex_unlock(&p->mu);
        pool_close_conn(p, revoked, reason, POOL_LOG_INFO);
        pthread_mutex_lock(&p->mu);
    }
    *slot = s;
    if (hold_busy)
        return 1;
    pthread_mutex_lock(&p->mu);
    s->busy = 0;
    revoked = s->revoke_pending ? revoke_slot(p, s) : NULL;
    pthread_mutex_unlock(&p->mu);
    if (revoked) {
        pool_close_conn(p, revoked, "pool closed", POOL_LOG_DEBUG);
        return shutdown_error(p, err);
    }
    return 1;
}

/* ---- release ----------------------------------------------------------- */

/* Leave conn to the housekeeper to close (no network I/O inside __gc). */
static void retire_later(pool *p, pq_conn *conn)
{
    retired *r = malloc(sizeof *r);
    if (!r) {              /* out of memory: close here rather than leak */
        pq_close(conn);
        return;
    }
    r->conn = conn;
    r->slot = NULL;
    pthread_mutex_lock(&p->mu);
    r->next = p->retired_head;
    p->retired_head = r;
    pthread_mutex_unlock(&p->mu);
    hk_poke();
}

/* A checkout collected inside a transaction (mutex held, slot busy): the
 * housekeeper rolls it back, with a deadline, and releases it
 * (pool_finish_collected), so that its locks go at once and not when the
 * connection is next used. 0 when out of memory. */
static int roll_back_later(pool *p, pool_slot *s)
{
    retired *r = malloc(sizeof *r);
    if (!r)
        return 0;
    r->conn = s->conn;
    r->slot = s;
    r->next = p->retired_head;
    p->retired_head = r;
    p->counters.leaked++;
    return 1;
}

/* The second half of every release (mutex held): count it, then give the
 * connection to the next waiter or the idle list, or, with a reason (or a
 * pending revoke), vacate the slot. Returns the connection to close once
 * the mutex is released, or NULL. */
static pq_conn *finish_release(pool *p, pool_slot *s, const char *reason,
                               enum pool_release_how how, double t)
{
    pq_conn *conn = s->conn;

    thread_last_pool = p;
    thread_last_slot = s;
    s->busy = 0;
    p->counters.released++;
    if (how == POOL_COLLECTED)
        p->counters.leaked++;
    if (!reason && (p->closing || s->revoke_pending))
        reason = "pool closed";
    if (!reason && t >= s->expires_at)
        reason = "lifetime over";
    free(s->origin);
    s->origin = NULL;
    p->n_in_use--;
    if (!reason) {
        pool_slot_return(p, s, t);
        pthread_cond_broadcast(&p->drained);
        return NULL;
    }
    pool_count_close(p, reason);
    pool_slot_vacate(p, s);
    return conn;
}

/* Close what finish_release handed back (no mutex held). */
static void close_released(pool *p, pq_conn *conn, const char *reason,
                           enum pool_release_how how)
{
    if (!conn)
        return;
    if (how == POOL_COLLECTED)
        retire_later(p, conn);    /* no network I/O inside __gc */
    else
        pool_close_conn(p, conn, reason ? reason : "pool closed",
                   reason && strcmp(reason, "broken") == 0 ? POOL_LOG_WARN
                                                           : POOL_LOG_DEBUG);
}

int pool_release(pool *p, pool_slot *s, uint64_t ticket,
                 enum pool_release_how how)
{
    const char *reason = NULL;
    pq_conn *conn;
    int rolled_back = 0;

    pthread_mutex_lock(&p->mu);
    if (s->state != SLOT_IN_USE || s->ticket != ticket) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    s->ticket = new_ticket();     /* the handle is stale from here on */
    s->busy = 1;                  /* we use the connection below */
    conn = s->conn;
    pthread_mutex_unlock(&p->mu);

    if (how == POOL_DISCARD) {
        reason = "discarded";
    } else {
        switch (pq_txn_status(conn)) {
        case PQ_TXN_IDLE:
            break;
        case PQ_TXN_INBLOCK:
            if (how == POOL_COLLECTED) {
                int later;
                pool_log(p, POOL_LOG_WARN, "connection garbage-collected "
                         "without release (leaked) inside a transaction; "
                         "rolled back in the background");
                pthread_mutex_lock(&p->mu);
                later = roll_back_later(p, s);
                pthread_mutex_unlock(&p->mu);
                if (later) {
                    hk_poke();
                    return 1;
                }
                reason = "broken";
            } else if (pq_rollback(conn, clock_deadline(clock_now(), ROLLBACK_TIMEOUT))) {
                rolled_back = 1;
            } else {
                reason = "broken";
            }
            break;
        default:
            reason = "broken";
        }
    }

    if (how == POOL_COLLECTED && !reason)
        pool_log(p, POOL_LOG_WARN, "connection garbage-collected without "
                 "release (leaked); returned to the pool");
    pthread_mutex_lock(&p->mu);
    p->counters.rollbacks += (uint64_t)rolled_back;
    conn = finish_release(p, s, reason, how, clock_now());
    pthread_mutex_unlock(&p->mu);
    close_released(p, conn, reason, how);
    return 1;
}

void pool_finish_collected(pool *p, pool_slot *s)
{
    int ok = pq_rollback(s->conn, clock_deadline(clock_now(), ROLLBACK_TIMEOUT));
    const char *reason = ok ? NULL : "broken";
    pq_conn *conn;

    pthread_mutex_lock(&p->mu);
    p->counters.rollbacks += (uint64_t)ok;
    conn = finish_release(p, s, reason, POOL_RELEASE, clock_now());
    pthread_mutex_unlock(&p->mu);
    if (conn)
        pool_close_conn(p, conn, reason ? reason : "pool closed",
                        POOL_LOG_WARN);
}

/* ---- statements on a checkout ------------------------------------------ */

pq_conn *pool_slot_conn(pool_slot *s)
{
    return s->conn;
}

int pool_checkout_valid(pool_slot *s, uint64_t ticket)
{
    pool *p = s->owner;
    int ok;
    pthread_mutex_lock(&p->mu);
    ok = s->state == SLOT_IN_USE && s->ticket == ticket;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

pq_conn *pool_begin_use(pool *p, pool_slot *s, uint64_t ticket, pq_error *err)
{
    pq_conn *conn = NULL;

    pthread_mutex_lock(&p->mu);
    if (s->state == SLOT_IN_USE && s->ticket == ticket) {
        s->busy = 1;
        conn = s->conn;
    } else if (s->revoked_ticket == ticket) {
        shutdown_error(p, err);
    } else {
        pq_error_set(err, PQ_CODE_CLOSED, "connection released");
    }
    pthread_mutex_unlock(&p->mu);
    return conn;
}

/* Count a statement (mutex held); 1 when it was slow. */
static int count_statement(pool *p, const char *sql, double took, int queries,
                           int failed)
{
    int slow = p->cfg.slow_query > 0 && took >= p->cfg.slow_query;
    if (!sql)
        return 0;
    p->counters.queries += (uint64_t)queries;
    p->counters.query_errors += (uint64_t)failed;
    p->counters.slow_queries += (uint64_t)slow;
    p->counters.query_time_total += took;
    return slow;
}

static void log_slow(pool *p, const char *sql, double took)
{
    pool_log(p, POOL_LOG_WARN, "slow query (%.3f s): %.200s", took, sql);
}

void pool_end_use(pool *p, pool_slot *s, const char *sql, double started,
                  int queries, int failed)
{
    double took = sql ? clock_now() - started : 0;
    pq_conn *revoked = NULL;
    int slow;

    pthread_mutex_lock(&p->mu);
    s->busy = 0;
    slow = count_statement(p, sql, took, queries, failed);
    if (s->revoke_pending)
        revoked = revoke_slot(p, s);
    pthread_mutex_unlock(&p->mu);
    if (slow)
        log_slow(p, sql, took);
    if (revoked)
        pool_close_conn(p, revoked, "pool closed", POOL_LOG_DEBUG);
}

void pool_end_use_release(pool *p, pool_slot *s, uint64_t ticket,
                          const char *sql, double started, int failed)
{
    double t = clock_now(), took = t - started;
    pq_conn *conn;
    int slow;

    if (pq_txn_status(s->conn) != PQ_TXN_IDLE) {
        /* The general path: it rolls back or closes. */
        pool_end_use(p, s, sql, started, 1, failed);
        pool_release(p, s, ticket, POOL_RELEASE);
        return;
    }
    pthread_mutex_lock(&p->mu);
    slow = count_statement(p, sql, took, 1, failed);
    s->ticket = new_ticket();
    conn = finish_release(p, s, NULL, POOL_RELEASE, t);
    pthread_mutex_unlock(&p->mu);
    if (slow)
        log_slow(p, sql, took);
    close_released(p, conn, NULL, POOL_RELEASE);
}

void pool_set_origin(pool_slot *s, uint64_t ticket, const char *origin)
{
    pool *p = s->owner;
    char *copy = strdup(origin);
    pthread_mutex_lock(&p->mu);
    if (s->state == SLOT_IN_USE && s->ticket == ticket) {
        free(s->origin);
        s->origin = copy;
        copy = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    free(copy);
}

/* ---- shutdown ---------------------------------------------------------- */

/* Detach every idle connection into out[] (mutex held); returns the count. */
static int take_idle(pool *p, pq_conn **out)
{
    int n = 0;
    while (p->idle_head) {
        pool_slot *s = p->idle_head;
        pool_idle_remove(p, s);
        out[n++] = s->conn;
        p->counters.closed++;
        pool_slot_vacate(p, s);
    }
    return n;
}

/* Take in-use connections away from their holders (mutex held): the ones not
 * running a statement now, the others when their statement ends. */
static int revoke_in_use(pool *p, pq_conn **out)
{
    int i, n = 0;
    for (i = 0; i < p->cfg.max; i++) {
        pool_slot *s = &p->slots[i];
        if (s->state != SLOT_IN_USE)
            continue;
        if (s->busy) {
            s->revoke_pending = 1;
            continue;
        }
        out[n++] = revoke_slot(p, s);
    }
    return n;
}

static void close_all(pool *p, pq_conn **conns, int n, const char *reason)
{
    int i;
    for (i = 0; i < n; i++)
        if (conns[i])
            pool_close_conn(p, conns[i], reason, POOL_LOG_DEBUG);
}

/* Stop acquires and turn every waiter away (mutex held). */
static void start_closing(pool *p)
{
    waiter *w;
    p->closing = 1;
    while ((w = waiter_pop(p)) != NULL) {
        w->shut_down = 1;
        pthread_cond_signal(&w->cond);
    }
}

int pool_drain(pool *p, double deadline)
{
    pq_conn **conns = calloc((size_t)p->cfg.max, sizeof *conns);
    int n, clean;
    struct timespec until = clock_timespec(deadline);

    pthread_mutex_lock(&p->mu);
    start_closing(p);
    n = conns ? take_idle(p, conns) : 0;
    pthread_mutex_unlock(&p->mu);
    close_all(p, conns, n, "pool closed");

    pthread_mutex_lock(&p->mu);
    while (p->n_in_use + p->n_connecting > 0 &&
           pthread_cond_timedwait(&p->drained, &p->mu, &until) != ETIMEDOUT) {
    }
    clean = p->n_in_use + p->n_connecting == 0;
    n = conns ? revoke_in_use(p, conns) : 0;
    pthread_mutex_unlock(&p->mu);
    close_all(p, conns, n, "pool closed");
    free(conns);
    return clean;
}

void pool_close_now(pool *p, int in_use, const char *reason)
{
    pq_conn **conns = calloc((size_t)p->cfg.max, sizeof *conns);
    int n = 0;

    pthread_mutex_lock(&p->mu);
    if (conns) {
        p->closing = 1;
        n = take_idle(p, conns);
        if (in_use)
            n += revoke_in_use(p, conns + n);
    }
    pthread_mutex_unlock(&p->mu);
    close_all(p, conns, n, reason);
    free(conns);
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
    out->total = pool_total(p);
    out->waiting = p->n_waiting;
    out->closing = p->closing;
    out->max_shared = p->cfg.max_shared;
    out->shared_used = p->shared ? shared_cap_used(p->shared) : 0;
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

/* ---- fork -------------------------------------------------------------- */

void pool_fork_prepare(void)
{
    pool *p;
    pthread_mutex_lock(&live_mu);
    for (p = live_head; p; p = p->next_live)
        pthread_mutex_lock(&p->mu);
}

void pool_fork_parent(void)
{
    pool *p;
    for (p = live_head; p; p = p->next_live)
        pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&live_mu);
}

/* The child: empty every pool without touching the parent's sessions. */
static void forget_in_child(pool *p)
{
    retired *r;
    int i;

    p->idle_head = p->idle_tail = p->free_head = NULL;
    for (i = p->cfg.max - 1; i >= 0; i--) {
        pool_slot *s = &p->slots[i];
        pq_abandon(s->conn);
        s->conn = NULL;
        s->state = SLOT_EMPTY;
        s->ticket = new_ticket();
        s->busy = s->revoke_pending = 0;
        s->next = p->free_head;
        s->prev = NULL;
        p->free_head = s;
    }
    while ((r = p->retired_head) != NULL) {
        p->retired_head = r->next;
        pq_abandon(r->conn);
        free(r);
    }
    p->n_idle = p->n_in_use = p->n_connecting = p->n_waiting = 0;
    p->wait_head = p->wait_tail = NULL;   /* their threads are gone */
    memset(&p->counters, 0, sizeof p->counters);
    p->reconnect_after = 0;
    clock_cond_init(&p->drained);
}

void pool_fork_child(void)
{
    pool *p;
    for (p = live_head; p; p = p->next_live) {
        forget_in_child(p);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&live_mu);
}
