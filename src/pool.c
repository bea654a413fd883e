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
#include "hk_thread.h"

static uint64_t ticket_counter;    /* atomic */

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

void pool_log_server_notice(void *arg, int level, const char *message)
{
    pool_log((pool *)arg, level, "server: %s", message);
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
    }
}

/* The slot's connection is gone and not counted anywhere yet. */
void pool_slot_vacate(pool *p, pool_slot *s)
{
    waiter *w = p->closing ? NULL : waiter_pop(p);

    s->conn = NULL;
    s->busy = s->revoke_pending = s->needs_rollback = s->leak_warned = 0;
    free(s->origin);
    s->origin = NULL;
    if (w) {
        s->state = SLOT_CONNECTING;
        p->n_connecting++;
        w->granted = s;
        pthread_cond_signal(&w->cond);
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
    return p;
}

void pool_destroy(pool *p)
{
    retired *r;
    int i;

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

/* Take ownership of s for a new checkout (mutex held). */
static void start_checkout(pool *p, pool_slot *s, double started, double t)
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

/* Wait in the FIFO queue (mutex held). Returns the granted slot, or NULL
 * with err (timeout, shutdown). */
static pool_slot *wait_in_line(pool *p, double timeout, double deadline,
                               pq_error *err)
{
    waiter w;

    memset(&w, 0, sizeof w);
    clock_cond_init(&w.cond);
    if (p->wait_tail)
        p->wait_tail->next = &w;
    else
        p->wait_head = &w;
    p->wait_tail = &w;
    p->n_waiting++;
    while (!w.granted && !w.shut_down) {
        double until = deadline;
        struct timespec ts;
        if (p->shared && clock_now() + SHARED_POLL < deadline)
            until = clock_now() + SHARED_POLL;
        ts = clock_timespec(until);
        pthread_cond_timedwait(&w.cond, &p->mu, &ts);
        if (w.granted || w.shut_down)
            break;
        if (p->shared && p->wait_head == &w &&
            (w.granted = pool_take_free_slot(p)) != NULL) {
            waiter_pop(p);          /* the head of the line: that is us */
            break;
        }
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
    } else {
        p->counters.timeouts++;
        timeout_error(p, timeout, err);
    }
    return NULL;
}

/* Close the connection of a slot we own and keep the slot, now CONNECTING,
 * for a new connection. No mutex held. */
static void drop_for_reconnect(pool *p, pool_slot *s, const char *reason)
{
    pq_conn *conn;
    pthread_mutex_lock(&p->mu);
    conn = s->conn;
    s->conn = NULL;
    s->state = SLOT_CONNECTING;
    p->n_in_use--;
    p->n_connecting++;
    pool_count_close(p, reason);
    pthread_mutex_unlock(&p->mu);
    pool_close_conn(p, conn, reason, POOL_LOG_INFO);
}

/* A connection returned less than this long ago (seconds) is handed out
 * without the liveness check: a release/acquire cycle of a busy pool then
 * costs no system call. Like HikariCP's aliveBypassWindow, much shorter. */
#define LIVENESS_BYPASS 0.005

/* Why the connection of a slot we own cannot be handed out, or NULL: past
 * its lifetime, closed by the server, or stuck in a transaction. A
 * connection returned by __gc inside a transaction is rolled back here. */
static const char *unusable_reason(pool_slot *s)
{
    double t = clock_now();
    if (t >= s->expires_at)
        return "lifetime over";
    if (t - s->idle_since >= LIVENESS_BYPASS && !pq_is_alive(s->conn))
        return "broken";
    if (s->needs_rollback) {
        s->needs_rollback = 0;
        if (!pq_rollback(s->conn, clock_now() + 5.0))
            return "broken";
    }
    return pq_txn_status(s->conn) == PQ_TXN_IDLE ? NULL : "broken";
}

/* We own s (IN_USE with a connection, or CONNECTING without). Make it a
 * healthy idle connection or give the capacity back. No mutex held. */
static int make_ready(pool *p, pool_slot *s, double deadline, pq_error *err)
{
    pq_conn *conn;
    double t, connect_deadline;

    if (s->conn) {
        const char *reason = unusable_reason(s);
        if (!reason)
            return 1;
        drop_for_reconnect(p, s, reason);
    }

    t = clock_now();
    connect_deadline = t + p->cfg.connect_timeout;
    if (deadline < connect_deadline)
        connect_deadline = deadline;
    conn = pq_connect(p->cfg.conninfo, connect_deadline, err);
    if (conn)
        pq_set_notice_handler(conn, pool_log_server_notice, p);

    pthread_mutex_lock(&p->mu);
    p->n_connecting--;
    if (!conn || p->closing) {
        p->counters.acquired--;       /* counted in start_checkout */
        if (conn) {
            p->counters.closed++;
        } else {
            p->counters.connect_errors++;
            p->counters.connect_failures++;
        }
        pool_slot_vacate(p, s);
        if (conn) {
            pthread_mutex_unlock(&p->mu);
            pq_close(conn);
            return shutdown_error(p, err);
        }
        pthread_mutex_unlock(&p->mu);
        pool_log(p, POOL_LOG_ERROR, "connection error: %s", err->message);
        return 0;
    }
    t = clock_now();
    s->conn = conn;
    s->created_at = t;
    s->expires_at = pool_lifetime_end(p, t);
    s->state = SLOT_IN_USE;
    p->n_in_use++;
    p->counters.created++;
    p->counters.connect_failures = 0;
    {
        int tot = pool_total(p);
        pthread_mutex_unlock(&p->mu);
        pool_log(p, POOL_LOG_INFO, "new connection (backend %d, %d/%d)",
                 pq_backend_pid(conn), tot, p->cfg.max);
    }
    return 1;
}

int pool_acquire(pool *p, double timeout, int hold_busy, pool_slot **slot,
                 uint64_t *ticket, pq_error *err)
{
    double started = clock_now(), deadline = started + timeout;
    pool_slot *s;
    pq_conn *revoked;

    hk_ensure();
    pthread_mutex_lock(&p->mu);
    if (p->closing) {
        p->counters.shutdown_rejects++;
        pthread_mutex_unlock(&p->mu);
        return shutdown_error(p, err);
    }
    if (!p->wait_head && p->idle_head) {
        s = pick_idle(p);
        s->state = SLOT_IN_USE;
        p->n_in_use++;
    } else if (!p->wait_head && (s = pool_take_free_slot(p)) != NULL) {
        /* s is ours, CONNECTING */
    } else if (p->cfg.max_waiting > 0 && p->n_waiting >= p->cfg.max_waiting) {
        p->counters.full_rejects++;
        pq_error_set(err, PQ_CODE_FULL,
                     "too many waiting for a connection (pool \"%s\": %d/%d "
                     "in use, %d waiting, max_waiting %d)", p->cfg.name,
                     p->n_in_use, p->cfg.max, p->n_waiting,
                     p->cfg.max_waiting);
        pthread_mutex_unlock(&p->mu);
        return 0;
    } else {
        s = wait_in_line(p, timeout, deadline, err);
        if (!s) {
            pthread_mutex_unlock(&p->mu);
            return 0;
        }
    }
    start_checkout(p, s, started, clock_now());
    *ticket = s->ticket;
    pthread_mutex_unlock(&p->mu);

    /* busy while we check the connection: a shutdown revoking checkouts
     * meanwhile leaves it to us (revoke_pending) instead of closing it. */
    if (!make_ready(p, s, deadline, err))
        return 0;
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

static void retire_later(pool *p, pq_conn *conn)
{
    retired *r = malloc(sizeof *r);
    if (!r) {              /* out of memory: close here rather than leak */
        pq_close(conn);
        return;
    }
    r->conn = conn;
    pthread_mutex_lock(&p->mu);
    r->next = p->retired_head;
    p->retired_head = r;
    pthread_mutex_unlock(&p->mu);
    hk_poke();
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
                s->needs_rollback = 1;     /* the next acquirer rolls back */
            } else if (pq_rollback(conn, clock_now() + 5.0)) {
                rolled_back = 1;
            } else {
                reason = "broken";
            }
            break;
        default:
            reason = "broken";
        }
    }

    if (how == POOL_COLLECTED)
        pool_log(p, POOL_LOG_WARN, "connection garbage-collected without "
                 "release (leaked); returned to the pool");
    pthread_mutex_lock(&p->mu);
    p->counters.rollbacks += (uint64_t)rolled_back;
    conn = finish_release(p, s, reason, how, clock_now());
    pthread_mutex_unlock(&p->mu);
    close_released(p, conn, reason, how);
    return 1;
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

void pool_forget_in_child(pool *p)
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
        s->busy = s->revoke_pending = s->needs_rollback = 0;
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
