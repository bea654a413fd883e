/*
 * pool.c - what callers do with a pool: acquire (FIFO waiting with a
 * deadline, the liveness check), release (rollback, return or close),
 * statements on a checkout, drain and close at shutdown, and the counting
 * of each (the figures are read in pool_figures.c). No Lua here; the
 * connections are reached through pq.c only.
 *
 * The invariants it keeps are stated in pool_internal.h, the slot moves
 * it builds on are in pool_slots.c, the lock order of the core in
 * registry.c. A pool's mutex is taken for a few pointer moves and counters
 * at a time, and never across network I/O: the slot is taken into IN_USE
 * and marked busy while its connection is used, so that shutdown leaves
 * it to its user.
 */
#define _GNU_SOURCE
#include "pool_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "hk_thread.h"

static pq_conn *revoke_slot(pool *p, pool_slot *s)
{
    pq_conn *conn = s->conn;
    s->revoked_ticket = s->ticket;
    s->ticket = pool_new_ticket();
    p->n_in_use--;
    pool_count_close(p, "pool closed");
    pool_slot_vacate(p, s);
    return conn;
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

/* Take ownership of s for a new checkout (mutex held), queued or not;
 * returns the wait counted. */
static double start_checkout(pool *p, pool_slot *s, double started, double t,
                             int queued)
{
    double waited = t - started;
    s->busy = 1;                  /* ours to check and use; see pool_acquire */
    s->uses = 0;
    s->ticket = pool_new_ticket();
    s->checkout_at = t;
    s->leak_warned = 0;
    p->counters.acquired++;
    p->counters.acquired_waited += (uint64_t)queued;
    p->counters.wait_time_total += waited;
    histogram_observe(&p->counters.acquire_wait, waited);
    if (waited > p->counters.wait_time_max)
        p->counters.wait_time_max = waited;
    if (waited > p->wait_max_second)
        p->wait_max_second = waited;
    return waited;
}

/* A checkout whose connection turned out unusable is not counted. */
static void uncount_checkout(pool *p, double waited, int queued)
{
    p->counters.acquired--;
    p->counters.acquired_waited -= (uint64_t)queued;
    p->counters.wait_time_total -= waited;
    histogram_forget(&p->counters.acquire_wait, waited);
}

/* How often a waiter looks for a token freed by another process (nothing
 * signals it across processes). */
#define SHARED_POLL 0.02

static void timeout_error(pool *p, double timeout, pq_error *err)
{
    char connecting[32] = "", shared[64] = "", limit[200] = "", last[300] = "";
    if (p->n_connecting)
        snprintf(connecting, sizeof connecting, ", %d connecting",
                 p->n_connecting);
    if (p->shared)
        snprintf(shared, sizeof shared, ", %d/%d taken across processes",
                 shared_cap_used(p->shared), p->cfg.max_shared);
    if (p->thr.limit < p->cfg.max)
        snprintf(limit, sizeof limit, ", limit lowered to %d: %s",
                 p->thr.limit, p->thr.reason);
    if (p->thr.failures > 0)
        snprintf(last, sizeof last, "; last connect error: %.250s",
                 p->last_connect_error.message);
    pq_error_set(err, PQ_CODE_TIMEOUT,
                 "timeout after %g s waiting for a connection (pool \"%s\": "
                 "%d/%d in use%s, %d waiting%s%s)%s", timeout, p->cfg.name,
                 p->n_in_use, p->cfg.max, connecting, p->n_waiting, shared,
                 limit, last);
}

/* While connects fail and the pool holds nothing, a caller arriving
 * before the next attempt is due gets the last connect error at once
 * (mutex held), as a circuit breaker would: the server refused moments
 * ago and no release can come. One arriving once the step has passed
 * starts that attempt and waits for it. */
static int fails_fast(pool *p, pq_error *err)
{
    if (p->thr.failures == 0 || p->n_idle + p->n_in_use > 0 ||
        p->n_connecting > 0 || clock_now() >= p->thr.next_attempt_at)
        return 0;
    *err = p->last_connect_error;
    p->counters.connect_rejects++;
    return 1;
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
    pool_waiter_enqueue(p, &w);
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
            pool_start_attempts(p);
        if (clock_now() >= deadline) {
            pool_waiter_remove(p, &w);
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
    } else if (w.failed) {
        p->counters.connect_rejects++;
    } else {
        p->counters.timeouts++;
        p->counters.waited_timeouts += timeout > 0;
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
        int queued = 0;

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
        } else if (fails_fast(p, err) ||
                   (s = wait_in_line(p, timeout, deadline, err)) == NULL) {
            pthread_mutex_unlock(&p->mu);
            return 0;
        } else {
            queued = 1;
        }
        waited = start_checkout(p, s, started, clock_now(), queued);
        *ticket = s->ticket;
        pthread_mutex_unlock(&p->mu);

        /* busy while we check the connection: a shutdown revoking
         * checkouts meanwhile leaves it to us (revoke_pending). */
        reason = unusable_reason(s);
        if (!reason)
            break;
        pthread_mutex_lock(&p->mu);
        revoked = s->conn;
        uncount_checkout(p, waited, queued);
        p->n_in_use--;
        pool_count_close(p, reason);
        pool_slot_vacate(p, s);
        pthread_mutex_unlock(&p->mu);
        pool_close_conn(p, revoked, reason, POOL_LOG_INFO);
        pthread_mutex_lock(&p->mu);
    }
    *slot = s;
    if (hold_busy) {
        s->uses = 1;              /* the statement it is held for */
        return 1;
    }
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
    histogram_observe(&p->counters.hold_time, t - s->checkout_at);
    if (how == POOL_COLLECTED)
        p->counters.leaked++;
    if (!reason && (p->closing || s->revoke_pending))
        reason = "pool closed";
    if (!reason && t >= s->expires_at)
        reason = "lifetime over";
    if (!reason && p->lend_on_release > 0) {    /* to another process */
        p->lend_on_release--;
        reason = "lent";
    }
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
    if (how == POOL_COLLECTED || how == POOL_COLLECTED_DISCARD)
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
    s->ticket = pool_new_ticket();     /* the handle is stale from here on */
    s->busy = 1;                  /* we use the connection below */
    conn = s->conn;
    pthread_mutex_unlock(&p->mu);

    if (how == POOL_DISCARD || how == POOL_COLLECTED_DISCARD) {
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
        s->uses++;
        conn = s->conn;
    } else if (s->revoked_ticket == ticket) {
        shutdown_error(p, err);
    } else {
        pq_error_set(err, PQ_CODE_CLOSED, "connection released");
    }
    pthread_mutex_unlock(&p->mu);
    return conn;
}

/* A retry is for a connection that died before its statement reached it:
 * the statement failed this soon after it was sent. One the server ended
 * later (an administrator terminating a long query, say) is never run
 * again. */
#define RETRY_WINDOW 0.1

pq_conn *pool_retry_conn(pool *p, pool_slot *s, uint64_t ticket,
                         double started, const pq_error *err)
{
    pq_error connect_err;
    pq_conn *fresh, *dead;
    double connect_started;
    int first;

    if (!err->safe_to_retry)
        return NULL;
    pthread_mutex_lock(&p->mu);
    first = s->state == SLOT_IN_USE && s->ticket == ticket && s->busy &&
            s->uses == 1 && !p->closing &&
            clock_now() - started < RETRY_WINDOW;
    if (first)
        s->uses++;                /* once */
    pthread_mutex_unlock(&p->mu);
    connect_started = clock_now();
    if (!first || (fresh = pool_connect_now(p, &connect_err)) == NULL)
        return NULL;
    pthread_mutex_lock(&p->mu);
    dead = s->conn;
    s->conn = fresh;
    s->created_at = clock_now();
    histogram_observe(&p->counters.connect_time,
                      s->created_at - connect_started);
    s->expires_at = pool_lifetime_end(p, s->created_at);
    p->counters.created++;
    p->counters.retries++;
    pool_count_close(p, "broken");
    pthread_mutex_unlock(&p->mu);
    pool_close_conn(p, dead, "broken", POOL_LOG_WARN);
    pool_log(p, POOL_LOG_INFO, "statement retried on a new connection (%s)",
             err->code);
    return fresh;
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
    histogram_observe(&p->counters.query_time, took);
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
    s->ticket = pool_new_ticket();
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
        pool_count_close(p, "pool closed");
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
    while ((w = pool_waiter_pop(p)) != NULL) {
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
