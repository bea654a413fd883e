/*
 * pool_slots.c - the pool object and its slots: the object's lifetime
 * (references, the list of live pools, fork), the idle and free lists, the
 * waiter queue, and the connection attempts that fill slots (run by
 * connector.c). pool.c builds acquire, release and shutdown on these.
 *
 * Every function here that takes a pool expects its mutex held, except
 * pool_new, pool_ref/unref, pool_each_live, the fork handlers and the
 * attempt's completion (which takes it). Invariants: pool_internal.h.
 */
#define _GNU_SOURCE
#include "pool_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "connector.h"
#include "hk_thread.h"
#include "throttle.h"

static uint64_t ticket_counter;    /* atomic */

/* Every pool not yet freed, configured or shut down: fork and exit reach
 * the ones that handles still hold after their shutdown. */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static pool *live_head;

uint64_t pool_new_ticket(void)
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

/* The notice handler of the pool's connections (pq_set_notice_handler):
 * a server notice or warning becomes a log line "server: ...". */
static void log_server_notice(void *arg, int level, const char *message)
{
    pool_log((pool *)arg, level, "server: %s", message);
}

/* ---- slot lists (pool mutex held) -------------------------------------- */

/* A number in [0, 1) for jitter (mutex held). */
static double next_random(pool *p)
{
    /* xorshift64 */
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    return (double)(p->rng % 1000000) / 1000000.0;
}


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
    if (!s)
        return NULL;
    if (p->shared && !shared_cap_take(p->shared)) {
        p->cap_refused = 1;
        return NULL;
    }
    p->free_head = s->next;
    s->next = NULL;
    s->state = SLOT_CONNECTING;
    p->n_connecting++;
    return s;
}

/* Tell the region how many waiters lack only a shared token: the queue
 * beyond the attempts under way, within this process's free capacity,
 * when the last attempt was refused a token (mutex held). */
static void tell_wanting(pool *p)
{
    int n = 0, room = p->cfg.max - pool_total(p);
    if (!p->shared)
        return;
    if (p->cap_refused && !p->closing) {
        n = p->n_queued - p->n_connecting;
        if (n > room)
            n = room;
        if (n < 0)
            n = 0;
    }
    if (n != p->wanting_told) {
        shared_cap_want(p->shared, n - p->wanting_told);
        p->wanting_told = n;
    }
}

waiter *pool_waiter_pop(pool *p)
{
    waiter *w = p->wait_head;
    if (w) {
        p->wait_head = w->next;
        if (!p->wait_head)
            p->wait_tail = NULL;
        w->next = NULL;
        p->n_queued--;
        tell_wanting(p);
    }
    return w;
}

void pool_waiter_remove(pool *p, waiter *w)
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
        tell_wanting(p);
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

/* The SQLSTATE the server gave for a failed connect, or "". */
static const char *connect_sqlstate(const pq_error *err)
{
    return err->fields[PQ_FIELD_SQLSTATE];
}

/* The entry of connect-error class `name` in c, added if new; once the
 * table is full, the entry "other". */
static pool_error_class *error_class(pool_stats *c, const char *name)
{
    pool_error_class *e;
    int i;
    for (i = 0; i < c->n_connect_error_classes; i++)
        if (strcmp(c->connect_error_classes[i].name, name) == 0)
            return &c->connect_error_classes[i];
    if (i == POOL_ERROR_CLASSES - 1 && strcmp(name, "other") != 0)
        return error_class(c, "other");
    e = &c->connect_error_classes[c->n_connect_error_classes++];
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

/* Count a failed connect under its class (mutex held): the first two
 * characters of the server's SQLSTATE, else the fixed word of the error
 * ("timeout", "connect"). */
static void count_connect_error(pool *p, const pq_error *err)
{
    const char *state = connect_sqlstate(err);
    char name[8];

    if (strlen(state) == 5)
        snprintf(name, sizeof name, "%.2s", state);
    else if (strlen(err->code) == 5)       /* a SQLSTATE as the code */
        snprintf(name, sizeof name, "%.2s", err->code);
    else
        snprintf(name, sizeof name, "%.7s", err->code[0] ? err->code : "other");
    error_class(&p->counters, name)->count++;
}

/* Every waiter gets err at once (mutex held): the pool holds no
 * connection a release could bring them. */
static void fail_waiters(pool *p, const pq_error *err)
{
    waiter *w;
    while ((w = pool_waiter_pop(p)) != NULL) {
        *w->err = *err;
        w->failed = 1;
        pthread_cond_signal(&w->cond);
    }
}

/* The end of the attempt for s (mutex held), which connected (or failed)
 * at `ended`: the new connection goes to the oldest waiter or the idle
 * list. After a failure the throttle backs off; with no connection held,
 * every waiter gets the error at once, otherwise they wait on for the
 * connections held. Returns a connection to close once the mutex is
 * released. */
static pq_conn *attempt_end(pool *p, pool_slot *s, pq_conn *conn,
                            const pq_error *err, double ended)
{
    double t = clock_now();
    p->n_connecting--;
    if (!conn) {
        int held = p->n_idle + p->n_in_use;
        p->counters.connect_errors++;
        count_connect_error(p, err);
        throttle_failed(&p->thr, t, held, connect_sqlstate(err),
                        next_random(p));
        p->last_connect_error = *err;
        if (held == 0)
            fail_waiters(p, err);
        pool_slot_vacate(p, s);
        hk_poke_before(p->thr.next_attempt_at);
        return NULL;
    }
    if (p->closing) {
        pool_count_close(p, "pool closed");
        pool_slot_vacate(p, s);
        return conn;
    }
    s->conn = conn;
    s->created_at = t;
    s->expires_at = pool_lifetime_end(p, t);
    p->counters.created++;
    histogram_observe(&p->counters.connect_time, ended - s->connect_started);
    throttle_succeeded(&p->thr);
    pool_slot_return(p, s, t);
    return NULL;
}

/* Connect for the CONNECTING slot s (mutex held). The attempt holds a
 * reference to the pool until it has ended. */
static void start_attempt(pool *p, pool_slot *s)
{
    pq_error err;
    pool_ref(p);
    p->counters.connect_attempts++;
    s->connect_started = clock_now();
    if (connector_start(p->cfg.conninfo, p->cfg.on_connect,
                        connect_deadline_at(p, s->connect_started),
                        attempt_done, s))
        return;
    pq_error_set(&err, PQ_CODE_CONNECT,
                 "could not start a connection attempt (no thread)");
    attempt_end(p, s, NULL, &err, clock_now());
    __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);  /* not the last */
}

pq_conn *pool_connect_now(pool *p, pq_error *err)
{
    pq_conn *conn;
    pthread_mutex_lock(&p->mu);
    p->counters.connect_attempts++;
    pthread_mutex_unlock(&p->mu);
    conn = connector_connect(p->cfg.conninfo, p->cfg.on_connect,
                             connect_deadline_at(p, clock_now()), err);
    if (conn)
        pq_set_notice_handler(conn, log_server_notice, p);
    return conn;
}

/* On the pool's first connection (no mutex held): ask how many connections
 * the server allows ordinary roles, keep it for the figures, and warn when
 * the pool's cap (max_shared when set, else max) is more. */
static void check_server_slots(pool *p, pq_conn *conn)
{
    int first, slots, max_connections = 0, reserved = 0;
    int cap = p->cfg.max_shared > 0 ? p->cfg.max_shared : p->cfg.max;

    pthread_mutex_lock(&p->mu);
    first = !p->server_slots_asked;
    p->server_slots_asked = 1;
    pthread_mutex_unlock(&p->mu);
    if (!first)
        return;
    slots = pq_server_slots(conn, connect_deadline_at(p, clock_now()),
                            &max_connections, &reserved);
    if (slots < 0)
        return;
    pthread_mutex_lock(&p->mu);
    p->server_slots = slots;
    pthread_mutex_unlock(&p->mu);
    if (cap > slots)
        pool_log(p, POOL_LOG_WARN, "%s %d exceeds the %d connections the "
                 "server allows ordinary roles (max_connections %d - %d "
                 "reserved)", p->cfg.max_shared > 0 ? "max_shared" : "max",
                 cap, slots, max_connections, reserved);
}

static void attempt_done(void *arg, pq_conn *conn, const pq_error *err)
{
    pool_slot *s = arg;
    pool *p = s->owner;
    double ended = clock_now();
    pq_conn *doomed;

    if (conn) {
        pq_set_notice_handler(conn, log_server_notice, p);
        check_server_slots(p, conn);
    }
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
    doomed = attempt_end(p, s, conn, err, ended);
    pthread_mutex_unlock(&p->mu);
    if (doomed)
        pq_close(doomed);
    pool_unref(p);
}

/* A free slot for one more attempt, if the throttle allows it now. */
static pool_slot *take_for_attempt(pool *p, double t)
{
    if (!throttle_may_start(&p->thr, t, pool_total(p), p->n_connecting))
        return NULL;
    return pool_take_free_slot(p);
}

void pool_start_attempts(pool *p)
{
    double t = clock_now();
    pool_slot *s;
    p->cap_refused = 0;
    while (p->n_queued > p->n_connecting) {
        s = take_for_attempt(p, t);
        if (!s && p->free_head && throttle_probe(&p->thr, t))
            s = take_for_attempt(p, t);
        if (!s) {
            /* held back by the backoff: the housekeeper starts it when due */
            if (p->thr.failures > 0 && p->n_connecting == 0)
                hk_poke_before(p->thr.next_attempt_at);
            break;
        }
        start_attempt(p, s);
    }
    tell_wanting(p);
}

void pool_waiter_enqueue(pool *p, waiter *w)
{
    if (p->wait_tail)
        p->wait_tail->next = w;
    else
        p->wait_head = w;
    p->wait_tail = w;
    p->n_queued++;
    p->n_waiting++;
    pool_start_attempts(p);
}

void pool_top_up(pool *p, int target)
{
    double t = clock_now();
    pool_slot *s;
    while (pool_total(p) < target && (s = take_for_attempt(p, t)) != NULL)
        start_attempt(p, s);
}

/* The slot's connection is gone and not counted anywhere yet. */
void pool_slot_vacate(pool *p, pool_slot *s)
{
    s->conn = NULL;
    s->busy = s->revoke_pending = s->leak_warned = 0;
    free(s->origin);
    s->origin = NULL;
    s->state = SLOT_EMPTY;
    s->next = p->free_head;
    s->prev = NULL;
    p->free_head = s;
    if (p->shared)
        shared_cap_give(p->shared);
    if (!p->closing)
        pool_start_attempts(p);     /* the capacity, to whoever waits */
    pthread_cond_broadcast(&p->drained);
}

/* Take an in-use slot away from its holder for shutdown (mutex held, slot
 * not busy): the holder's handle answers "shutdown" from now on. Returns
 * the connection to close once the mutex is released. */
void pool_slot_return(pool *p, pool_slot *s, double t)
{
    waiter *w = pool_waiter_pop(p);
    s->idle_since = t;
    if (w) {
        s->state = SLOT_IN_USE;
        p->n_in_use++;
        w->granted = s;
        pthread_cond_signal(&w->cond);
    } else {
        idle_push(p, s);
        /* A short idle_timeout may fall before the housekeeper's next tick;
         * with max_shared, another process may wait for this one. */
        if (p->cfg.idle_timeout > 0)
            hk_poke_before(t + p->cfg.idle_timeout);
        if (p->shared)
            hk_poke_before(t + SHARED_LEND_POLL);
    }
}

double pool_lifetime_end(pool *p, double created)
{
    if (p->cfg.max_lifetime <= 0)
        return 1e300;
    /* A different end for each connection, so they do not all expire
     * together: up to 2.5% earlier than max_lifetime. */
    return created + p->cfg.max_lifetime * (1.0 - 0.025 * next_random(p));
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
    else if (strcmp(reason, "lent") == 0)
        p->counters.closed_lent++;
    else                          /* "pool closed", at shutdown or exit */
        p->counters.closed_shutdown++;
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
    hogs_free(p->hogs);
    free(p->slots);
    free(p->name);
    free(p->conninfo);
    free(p->on_connect);
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
    p->on_connect = cfg->on_connect ? strdup(cfg->on_connect) : NULL;
    p->cfg = *cfg;
    p->cfg.name = p->name;
    p->cfg.conninfo = p->conninfo;
    p->cfg.on_connect = p->on_connect;
    p->cfg.replicas = NULL;       /* the caller's; see p->replicas */
    if (!p->slots || !p->name || (cfg->conninfo && !p->conninfo) ||
        (cfg->on_connect && !p->on_connect) ||
        (cfg->track_hogs && (p->hogs = hogs_new()) == NULL) ||
        (cfg->max_shared > 0 &&
         (p->shared = shared_cap_for(cfg->name, cfg->max_shared)) == NULL)) {
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
    throttle_init(&p->thr, cfg->max);
    p->server_slots = -1;
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
    free_parts(p);
}

hogs *pool_hogs(const pool *p)
{
    return p->hogs;
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

/* ---- fork -------------------------------------------------------------- */

void pool_fork_prepare(void)
{
    pool *p;
    pthread_mutex_lock(&live_mu);
    for (p = live_head; p; p = p->next_live) {
        pthread_mutex_lock(&p->mu);
        hogs_fork_prepare(p->hogs);
    }
}

void pool_fork_parent(void)
{
    pool *p;
    for (p = live_head; p; p = p->next_live) {
        hogs_fork_parent(p->hogs);
        pthread_mutex_unlock(&p->mu);
    }
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
        s->ticket = pool_new_ticket();
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
    p->n_queued = 0;
    p->cap_refused = p->wanting_told = p->lend_on_release = 0;
    memset(&p->counters, 0, sizeof p->counters);
    memset(&p->ticked, 0, sizeof p->ticked);   /* the figures start afresh */
    p->history_next = p->history_count = 0;
    p->seconds_next = p->seconds_count = 0;
    p->wait_max_second = 0;
    throttle_init(&p->thr, p->cfg.max);
    clock_cond_init(&p->drained);
}

void pool_fork_child(void)
{
    pool *p;
    for (p = live_head; p; p = p->next_live) {
        forget_in_child(p);
        hogs_fork_child(p->hogs);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&live_mu);
}
