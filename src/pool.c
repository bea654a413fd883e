/*
 * pool.c - the process-wide pools: registry, slots, FIFO waiters, limits,
 * housekeeping, logging, fork and exit handling. No Lua here.
 *
 * Invariants (under the pool's mutex):
 *  - every slot is in exactly one state; EMPTY slots are on the free list,
 *    IDLE slots on the idle list (most recently returned first);
 *  - n_idle + n_in_use + n_connecting = total <= max;
 *  - an IDLE slot has a connection, an EMPTY or CONNECTING one has none;
 *  - a waiter is served only from the head of the queue, and nobody takes
 *    an idle connection or a free slot while someone is queued.
 *
 * Locking rules:
 *  - lock order: registry_mu, then a pool's mu, then log_mu;
 *  - no network I/O (connect, close, rollback, liveness check) ever happens
 *    with a mutex held: the slot is taken into CONNECTING or IN_USE first;
 *  - a pool is freed when its reference count drops to zero; the registry,
 *    every Lua handle and the housekeeper while it works hold references.
 *
 * max_shared: a region of shared memory, mapped when the pool is configured
 * and inherited by every process forked afterwards, counts the slots in use
 * (not EMPTY) of that pool in all those processes; a slot leaves EMPTY only
 * with a token from it, and gives the token back when it becomes EMPTY
 * again. Tokens of a process that died are reclaimed. Its mutex is
 * process-shared and robust, and taken only under the pool's mutex.
 *
 * Signals (close_on_signals, opt-in): the handler only posts a semaphore;
 * a thread of ours does the closing, then re-raises with the default action.
 *
 * Fork: the pthread_atfork handlers hold every mutex across fork(); in the
 * child every pool is emptied, its connections abandoned (socket closed,
 * nothing sent), every checkout invalidated, and the housekeeper restarts
 * on first use.
 */
#define _GNU_SOURCE
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum slot_state { SLOT_EMPTY, SLOT_CONNECTING, SLOT_IDLE, SLOT_IN_USE };

struct pool_slot {
    pool *owner;
    enum slot_state state;
    pq_conn *conn;
    uint64_t ticket;          /* the live checkout, when IN_USE */
    uint64_t revoked_ticket;  /* a checkout taken away by shutdown */
    double created_at, expires_at, idle_since, checkout_at;
    int busy;                 /* a statement is running on it */
    int revoke_pending;       /* shutdown wants it closed when not busy */
    int needs_rollback;       /* returned by __gc inside a transaction */
    int leak_warned;
    char *origin;             /* where it was acquired (leak_timeout) */
    pool_slot *prev, *next;   /* idle list or free list */
};

typedef struct waiter {
    pthread_cond_t cond;
    struct waiter *next;
    pool_slot *granted;       /* IN_USE with a connection, or CONNECTING */
    int shut_down;
} waiter;

typedef struct retired {      /* connections the housekeeper must close */
    pq_conn *conn;
    struct retired *next;
} retired;

#define SHARED_HOLDERS 1024

/* The cross-process cap (max_shared), in shared memory. */
typedef struct shared_cap {
    pthread_mutex_t mu;
    int max, used;
    struct {
        pid_t pid;
        int count;
    } holders[SHARED_HOLDERS];
} shared_cap;

struct pool {
    pool_config cfg;          /* name and conninfo point to the copies below */
    char *name, *conninfo;
    pthread_mutex_t mu;
    pthread_cond_t drained;   /* signalled when in_use + connecting drops */
    int refs;                 /* atomic */
    int closing;
    int in_registry;
    pool_slot *slots;
    pool_slot *idle_head, *idle_tail, *free_head;
    int n_idle, n_in_use, n_connecting, n_waiting;
    waiter *wait_head, *wait_tail;
    retired *retired_head;
    double reconnect_after;   /* min top-up backs off after a failure */
    uint64_t rng;
    pool_stats counters;      /* the cumulative fields */
    pool_sample history[POOL_HISTORY];   /* a ring, one sample a second */
    int history_next, history_count;
    shared_cap *shared;       /* max_shared > 0 */
    pool **replicas;          /* references, fixed once published */
    int n_replicas;
    unsigned turn;            /* atomic: pool_next_turn */
    pool *next_all;           /* every live pool, for fork and exit */
    pool *next_registered;
};

/* ---- process-wide state ------------------------------------------------ */

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static pool *registry_head;        /* configured pools */
static pool *all_head;             /* every pool not yet freed */
static char **shut_down_names;     /* names shut down and not reconfigured */
static int shut_down_count;

static pthread_cond_t hk_cond;
static int hk_running;             /* atomic: housekeeper thread started */
static int hk_stop;
static uint64_t hk_wake_us;        /* atomic: when it next wakes (µs) */
static pthread_once_t process_once = PTHREAD_ONCE_INIT;

static uint64_t ticket_counter;    /* atomic */

const char *const pool_log_level_names[] = {
    "debug", "info", "warn", "error", "off", NULL,
};

static double now(void)
{
    return pq_now();
}

static uint64_t new_ticket(void)
{
    return __atomic_add_fetch(&ticket_counter, 1, __ATOMIC_RELAXED);
}

static void init_monotonic_cond(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

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

static struct timespec abs_time(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static char *copy_string(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* ---- logging ----------------------------------------------------------- */

#define LOG_RING 256
#define LOG_LINE 512

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    uint64_t seq;
    int level;
    char text[LOG_LINE];
} log_ring[LOG_RING];
static uint64_t log_seq;           /* last written; atomic reads */
static int log_listeners;          /* atomic */

void pool_log(pool *p, int level, const char *fmt, ...)
{
    char line[LOG_LINE];
    int threshold = p ? p->cfg.log_level : POOL_LOG_INFO;
    int n;
    va_list ap;

    if (level < threshold)
        return;
    n = snprintf(line, sizeof line, "pgpool: [%s] ", pool_log_level_names[level]);
    if (p && n < (int)sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, "pool \"%s\": ",
                      p->cfg.name);
    if (n < (int)sizeof line) {
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_lock(&log_mu);
    log_seq++;
    log_ring[log_seq % LOG_RING].seq = log_seq;
    log_ring[log_seq % LOG_RING].level = level;
    memcpy(log_ring[log_seq % LOG_RING].text, line, sizeof line);
    pthread_mutex_unlock(&log_mu);
    if (__atomic_load_n(&log_listeners, __ATOMIC_RELAXED) == 0)
        fprintf(stderr, "%s\n", line);
}

void pool_log_listeners(int delta)
{
    __atomic_add_fetch(&log_listeners, delta, __ATOMIC_RELAXED);
}

uint64_t pool_log_seq(void)
{
    return __atomic_load_n(&log_seq, __ATOMIC_ACQUIRE);
}

uint64_t pool_log_read(uint64_t after, int *level, char *buf, size_t len)
{
    uint64_t seq = 0;

    pthread_mutex_lock(&log_mu);
    if (after < log_seq) {
        uint64_t next = after + 1;
        if (log_seq - next >= LOG_RING)    /* overwritten: skip ahead */
            next = log_seq - LOG_RING + 1;
        seq = next;
        *level = log_ring[next % LOG_RING].level;
        snprintf(buf, len, "%s", log_ring[next % LOG_RING].text);
    }
    pthread_mutex_unlock(&log_mu);
    return seq;
}

/* ---- the cross-process cap (max_shared) -------------------------------- */

static shared_cap *shared_new(int max)
{
    pthread_mutexattr_t attr;
    shared_cap *sc = mmap(NULL, sizeof *sc, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sc == MAP_FAILED)
        return NULL;
    memset(sc, 0, sizeof *sc);
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&sc->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    sc->max = max;
    return sc;
}

static void shared_lock(shared_cap *sc)
{
    /* A process that died holding the mutex left the counts as they were
     * between two whole updates: take it over. */
    if (pthread_mutex_lock(&sc->mu) == EOWNERDEAD)
        pthread_mutex_consistent(&sc->mu);
}

/* Give back the tokens of processes that no longer exist. */
static void shared_reclaim(shared_cap *sc)
{
    int i;
    for (i = 0; i < SHARED_HOLDERS; i++) {
        if (sc->holders[i].count > 0 && kill(sc->holders[i].pid, 0) != 0 &&
            errno == ESRCH) {
            sc->used -= sc->holders[i].count;
            sc->holders[i].count = 0;
        }
    }
}

/* Take a token for this process; 1 if there was one. */
static int shared_take(shared_cap *sc)
{
    pid_t me = getpid();
    int i, mine = -1, got = 0;

    shared_lock(sc);
    if (sc->used >= sc->max)
        shared_reclaim(sc);
    for (i = 0; i < SHARED_HOLDERS && mine < 0; i++)
        if (sc->holders[i].pid == me)
            mine = i;
    for (i = 0; i < SHARED_HOLDERS && mine < 0; i++)
        if (sc->holders[i].count == 0)
            mine = i;
    if (sc->used < sc->max && mine >= 0) {
        sc->holders[mine].pid = me;
        sc->holders[mine].count++;
        sc->used++;
        got = 1;
    }
    pthread_mutex_unlock(&sc->mu);
    return got;
}

static void shared_give(shared_cap *sc)
{
    pid_t me = getpid();
    int i;

    shared_lock(sc);
    for (i = 0; i < SHARED_HOLDERS; i++) {
        if (sc->holders[i].pid == me && sc->holders[i].count > 0) {
            sc->holders[i].count--;
            sc->used--;
            break;
        }
    }
    pthread_mutex_unlock(&sc->mu);
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

static void idle_remove(pool *p, pool_slot *s)
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

static int total(const pool *p)
{
    return p->n_idle + p->n_in_use + p->n_connecting;
}

/* Take a free slot into CONNECTING, if there is one (and a token of the
 * cross-process cap, when it is on); NULL otherwise. */
static pool_slot *take_free_slot(pool *p)
{
    pool_slot *s = p->free_head;
    if (!s || (p->shared && !shared_take(p->shared)))
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

/* A slot whose connection is gone (and not counted anywhere yet): give the
 * capacity to the oldest waiter, who will connect, or put it on the free
 * list. */
static void slot_vacate(pool *p, pool_slot *s)
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
            shared_give(p->shared);
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
    slot_vacate(p, s);
    return conn;
}

/* An idle-capable connection comes back: the oldest waiter gets it, else it
 * goes on the idle list. */
static void slot_return(pool *p, pool_slot *s, double t)
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
        if (p->cfg.idle_timeout > 0 &&
            (t + p->cfg.idle_timeout) * 1e6 <
                (double)__atomic_load_n(&hk_wake_us, __ATOMIC_RELAXED))
            pthread_cond_signal(&hk_cond);
    }
}

static double lifetime_end(pool *p, double created)
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

static void count_close(pool *p, const char *reason)
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

/* Close a connection detached from its slot (no mutex held). */
static void close_conn(pool *p, pq_conn *c, const char *reason, int level)
{
    pool_log(p, level, "connection closed (%s, backend %d)", reason,
             pq_backend_pid(c));
    pq_close(c);
}

/* ---- pool lifetime ----------------------------------------------------- */

static void process_init(void);
static void housekeeper_ensure(void);

static int same_string(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static int same_config(const pool_config *a, const pool_config *b)
{
    return same_string(a->name, b->name) &&
           same_string(a->conninfo, b->conninfo) && a->max == b->max &&
           a->min == b->min && a->idle_timeout == b->idle_timeout &&
           a->acquire_timeout == b->acquire_timeout &&
           a->connect_timeout == b->connect_timeout &&
           a->query_timeout == b->query_timeout &&
           a->max_lifetime == b->max_lifetime &&
           a->slow_query == b->slow_query &&
           a->leak_timeout == b->leak_timeout &&
           a->max_waiting == b->max_waiting &&
           a->statement_cache == b->statement_cache &&
           a->max_shared == b->max_shared && a->log_level == b->log_level;
}

static pool *pool_new(const pool_config *cfg)
{
    pool *p = calloc(1, sizeof *p);
    int i;

    if (!p)
        return NULL;
    p->slots = calloc((size_t)cfg->max, sizeof *p->slots);
    p->name = copy_string(cfg->name);
    p->conninfo = copy_string(cfg->conninfo);
    p->cfg = *cfg;
    p->cfg.name = p->name;
    p->cfg.conninfo = p->conninfo;
    p->cfg.replicas = NULL;       /* the caller's; see p->replicas */
    if (!p->slots || !p->name || (cfg->conninfo && !p->conninfo)) {
        free(p->slots);
        free(p->name);
        free(p->conninfo);
        free(p);
        return NULL;
    }
    if (cfg->max_shared > 0) {
        p->shared = shared_new(cfg->max_shared);
        if (!p->shared) {
            free(p->slots);
            free(p->name);
            free(p->conninfo);
            free(p);
            return NULL;
        }
    }
    init_pool_mutex(&p->mu);
    init_monotonic_cond(&p->drained);
    for (i = cfg->max - 1; i >= 0; i--) {
        p->slots[i].owner = p;
        p->slots[i].next = p->free_head;
        p->free_head = &p->slots[i];
    }
    p->refs = 1;   /* the registry's */
    p->in_registry = 1;
    p->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^
             (uint64_t)(uintptr_t)p;
    if (!p->rng)
        p->rng = 88172645463325252ULL;
    return p;
}

static void release_replicas(pool **replicas, int n)
{
    int i;
    for (i = 0; i < n; i++)
        pool_unref(replicas[i]);
    free(replicas);
}

static void pool_free(pool *p)
{
    pool **link;
    retired *r;
    int i;

    pthread_mutex_lock(&registry_mu);
    for (link = &all_head; *link; link = &(*link)->next_all) {
        if (*link == p) {
            *link = p->next_all;
            break;
        }
    }
    pthread_mutex_unlock(&registry_mu);
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
    if (p->shared)
        munmap(p->shared, sizeof *p->shared);
    release_replicas(p->replicas, p->n_replicas);
    free(p->slots);
    free(p->name);
    free(p->conninfo);
    free(p);
}

void pool_ref(pool *p)
{
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
}

void pool_unref(pool *p)
{
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
        pool_free(p);
}

static void forget_shut_down_name(const char *name)
{
    int i;
    for (i = 0; i < shut_down_count; i++) {
        if (strcmp(shut_down_names[i], name) == 0) {
            free(shut_down_names[i]);
            shut_down_names[i] = shut_down_names[--shut_down_count];
            return;
        }
    }
}

static void remember_shut_down_name(const char *name)
{
    char **grown = realloc(shut_down_names,
                           sizeof *grown * (size_t)(shut_down_count + 1));
    char *copy = strdup(name);
    if (!grown || !copy) {
        free(copy);
        if (grown)
            shut_down_names = grown;
        return;
    }
    shut_down_names = grown;
    shut_down_names[shut_down_count++] = copy;
}

static pool *find_registered(const char *name)
{
    pool *p;
    for (p = registry_head; p; p = p->next_registered)
        if (strcmp(p->cfg.name, name) == 0)
            return p;
    return NULL;
}

/* Configure the replicas of cfg (mutex not held): NULL and errbuf when one
 * cannot be (a name configured with other options). */
static pool **configure_replicas(const pool_config *cfg, int start_now,
                                 char *errbuf, size_t errlen)
{
    size_t len = strlen(cfg->name) + 32;
    char *name = malloc(len);
    pool **replicas = calloc((size_t)cfg->n_replicas, sizeof *replicas);
    int i;

    if (!name || !replicas) {
        free(name);
        free(replicas);
        snprintf(errbuf, errlen, "pgpool: out of memory");
        return NULL;
    }
    for (i = 0; i < cfg->n_replicas; i++) {
        pool_config replica = *cfg;
        snprintf(name, len, "%s/replica-%d", cfg->name, i + 1);
        replica.name = name;
        replica.conninfo = cfg->replicas[i];
        replica.replicas = NULL;
        replica.n_replicas = 0;
        replicas[i] = pool_configure(&replica, start_now, errbuf, errlen);
        if (!replicas[i]) {
            release_replicas(replicas, i);
            replicas = NULL;
            break;
        }
    }
    free(name);
    return replicas;
}

static int same_replicas(const pool *p, const pool_config *cfg)
{
    int i;
    if (p->n_replicas != cfg->n_replicas)
        return 0;
    for (i = 0; i < p->n_replicas; i++)
        if (!same_string(p->replicas[i]->cfg.conninfo, cfg->replicas[i]))
            return 0;
    return 1;
}

pool *pool_configure(const pool_config *cfg, int start_now, char *errbuf,
                     size_t errlen)
{
    pool **replicas = NULL;
    pool *p;

    pthread_once(&process_once, process_init);
    if (cfg->n_replicas > 0) {
        replicas = configure_replicas(cfg, start_now, errbuf, errlen);
        if (!replicas)
            return NULL;
    }
    pthread_mutex_lock(&registry_mu);
    p = find_registered(cfg->name);
    if (p) {
        int same = same_config(&p->cfg, cfg) && same_replicas(p, cfg);
        if (same)
            pool_ref(p);
        pthread_mutex_unlock(&registry_mu);
        release_replicas(replicas, cfg->n_replicas);
        if (same)
            return p;
        snprintf(errbuf, errlen,
                 "pgpool: pool \"%s\" is already configured with different "
                 "options (call shutdown first)", cfg->name);
        return NULL;
    }
    p = pool_new(cfg);
    if (!p) {
        pthread_mutex_unlock(&registry_mu);
        release_replicas(replicas, cfg->n_replicas);
        snprintf(errbuf, errlen, "pgpool: out of memory");
        return NULL;
    }
    p->replicas = replicas;
    p->n_replicas = cfg->n_replicas;
    p->next_registered = registry_head;
    registry_head = p;
    p->next_all = all_head;
    all_head = p;
    forget_shut_down_name(cfg->name);
    pool_ref(p);   /* the caller's */
    pthread_mutex_unlock(&registry_mu);

    pool_log(p, POOL_LOG_INFO, "pool initialized (max %d, min %d)", cfg->max,
             cfg->min);
    if (start_now) {
        housekeeper_ensure();
        if (cfg->min > 0)
            pthread_cond_signal(&hk_cond);
    }
    return p;
}

int pool_replica_count(const pool *p)
{
    return p->n_replicas;
}

pool *pool_replica(pool *p, unsigned i)
{
    return p->replicas[i % (unsigned)p->n_replicas];
}

unsigned pool_next_turn(pool *p)
{
    return __atomic_fetch_add(&p->turn, 1, __ATOMIC_RELAXED);
}

pool *pool_lookup(const char *name, int *was_shut_down)
{
    pool *p;
    int i;

    pthread_once(&process_once, process_init);
    pthread_mutex_lock(&registry_mu);
    p = find_registered(name);
    if (p)
        pool_ref(p);
    *was_shut_down = 0;
    for (i = 0; !p && i < shut_down_count; i++)
        if (strcmp(shut_down_names[i], name) == 0)
            *was_shut_down = 1;
    pthread_mutex_unlock(&registry_mu);
    if (p)
        housekeeper_ensure();
    return p;
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
    idle_remove(p, s);
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

/* Wait in the FIFO queue (mutex held). Returns the granted slot, or NULL
 * with err (timeout, shutdown). */
/* How often a waiter looks for a token freed by another process (nothing
 * signals it across processes). */
#define SHARED_POLL 0.02

static int shared_used(pool *p)
{
    int used;
    shared_lock(p->shared);
    used = p->shared->used;
    pthread_mutex_unlock(&p->shared->mu);
    return used;
}

static void timeout_error(pool *p, double timeout, pq_error *err)
{
    char connecting[32] = "", shared[48] = "";
    if (p->n_connecting)
        snprintf(connecting, sizeof connecting, ", %d connecting",
                 p->n_connecting);
    if (p->shared)
        snprintf(shared, sizeof shared, ", %d/%d in use across processes",
                 shared_used(p), p->cfg.max_shared);
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
    init_monotonic_cond(&w.cond);
    if (p->wait_tail)
        p->wait_tail->next = &w;
    else
        p->wait_head = &w;
    p->wait_tail = &w;
    p->n_waiting++;
    while (!w.granted && !w.shut_down) {
        double until = deadline;
        struct timespec ts;
        if (p->shared && now() + SHARED_POLL < deadline)
            until = now() + SHARED_POLL;
        ts = abs_time(until);
        pthread_cond_timedwait(&w.cond, &p->mu, &ts);
        if (w.granted || w.shut_down)
            break;
        if (p->shared && p->wait_head == &w &&
            (w.granted = take_free_slot(p)) != NULL) {
            waiter_pop(p);          /* the head of the line: that is us */
            break;
        }
        if (now() >= deadline) {
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
    count_close(p, reason);
    pthread_mutex_unlock(&p->mu);
    close_conn(p, conn, reason, POOL_LOG_INFO);
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
    double t = now();
    if (t >= s->expires_at)
        return "lifetime over";
    if (t - s->idle_since >= LIVENESS_BYPASS && !pq_is_alive(s->conn))
        return "broken";
    if (s->needs_rollback) {
        s->needs_rollback = 0;
        if (!pq_rollback(s->conn, now() + 5.0))
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

    t = now();
    connect_deadline = t + p->cfg.connect_timeout;
    if (deadline < connect_deadline)
        connect_deadline = deadline;
    conn = pq_connect(p->cfg.conninfo, connect_deadline, err);

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
        slot_vacate(p, s);
        if (conn) {
            pthread_mutex_unlock(&p->mu);
            pq_close(conn);
            return shutdown_error(p, err);
        }
        pthread_mutex_unlock(&p->mu);
        pool_log(p, POOL_LOG_ERROR, "connection error: %s", err->message);
        return 0;
    }
    t = now();
    s->conn = conn;
    s->created_at = t;
    s->expires_at = lifetime_end(p, t);
    s->state = SLOT_IN_USE;
    p->n_in_use++;
    p->counters.created++;
    p->counters.connect_failures = 0;
    {
        int tot = total(p);
        pthread_mutex_unlock(&p->mu);
        pool_log(p, POOL_LOG_INFO, "new connection (backend %d, %d/%d)",
                 pq_backend_pid(conn), tot, p->cfg.max);
    }
    return 1;
}

int pool_acquire(pool *p, double timeout, int hold_busy, pool_slot **slot,
                 uint64_t *ticket, pq_error *err)
{
    double started = now(), deadline = started + timeout;
    pool_slot *s;
    pq_conn *revoked;

    housekeeper_ensure();
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
    } else if (!p->wait_head && (s = take_free_slot(p)) != NULL) {
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
    start_checkout(p, s, started, now());
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
        close_conn(p, revoked, "pool closed", POOL_LOG_DEBUG);
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
    pthread_cond_signal(&hk_cond);
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
        slot_return(p, s, t);
        pthread_cond_broadcast(&p->drained);
        return NULL;
    }
    count_close(p, reason);
    slot_vacate(p, s);
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
        close_conn(p, conn, reason ? reason : "pool closed",
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
            } else if (pq_rollback(conn, now() + 5.0)) {
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
    conn = finish_release(p, s, reason, how, now());
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
    double took = sql ? now() - started : 0;
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
        close_conn(p, revoked, "pool closed", POOL_LOG_DEBUG);
}

void pool_end_use_release(pool *p, pool_slot *s, uint64_t ticket,
                          const char *sql, double started, int failed)
{
    double t = now(), took = t - started;
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
        idle_remove(p, s);
        out[n++] = s->conn;
        p->counters.closed++;
        slot_vacate(p, s);
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
            close_conn(p, conns[i], reason, POOL_LOG_DEBUG);
}

static int shutdown_one(pool *p, double deadline)
{
    pq_conn **conns = calloc((size_t)p->cfg.max, sizeof *conns);
    int n, clean, was_registered = 0;
    waiter *w;
    struct timespec until = abs_time(deadline);

    pthread_mutex_lock(&registry_mu);
    if (p->in_registry) {
        pool **link = &registry_head;
        while (*link != p)
            link = &(*link)->next_registered;
        *link = p->next_registered;
        p->in_registry = 0;
        was_registered = 1;
        remember_shut_down_name(p->cfg.name);
    }
    pthread_mutex_unlock(&registry_mu);

    pthread_mutex_lock(&p->mu);
    p->closing = 1;
    while ((w = waiter_pop(p)) != NULL) {
        w->shut_down = 1;
        pthread_cond_signal(&w->cond);
    }
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

    if (was_registered) {
        pool_log(p, POOL_LOG_INFO, "pool closed");
        pool_unref(p);   /* the registry's reference */
    }
    return clean;
}

int pool_shutdown(pool *p, double timeout)
{
    double deadline = now() + timeout;
    int clean = shutdown_one(p, deadline), i;
    for (i = 0; i < p->n_replicas; i++)
        clean &= shutdown_one(p->replicas[i], deadline);
    return clean;
}

/* References to every registered pool (caller unrefs and frees). */
static pool **registered_pools(int *count)
{
    pool *p, **list;
    int n = 0, i = 0;

    pthread_mutex_lock(&registry_mu);
    for (p = registry_head; p; p = p->next_registered)
        n++;
    list = calloc((size_t)n + 1, sizeof *list);
    for (p = registry_head; list && p; p = p->next_registered) {
        pool_ref(p);
        list[i++] = p;
    }
    pthread_mutex_unlock(&registry_mu);
    *count = i;
    return list;
}

int pool_shutdown_all(double timeout)
{
    double deadline = now() + timeout;
    int n, i, clean = 1;
    pool **list = registered_pools(&n);

    for (i = 0; i < n; i++) {
        clean &= shutdown_one(list[i], deadline);
        pool_unref(list[i]);
    }
    free(list);
    return clean;
}

void pool_each(void (*fn)(pool *p, void *ud), void *ud)
{
    int n, i;
    pool **list = registered_pools(&n);
    for (i = 0; i < n; i++) {
        fn(list[i], ud);
        pool_unref(list[i]);
    }
    free(list);
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
    out->total = total(p);
    out->waiting = p->n_waiting;
    out->closing = p->closing;
    out->max_shared = p->cfg.max_shared;
    out->shared_used = p->shared ? shared_used(p) : 0;
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

/* ---- housekeeping ------------------------------------------------------ */

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
    s->total = total(p);
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

#define HK_MAX_SLEEP 1.0      /* at least one pass a second (history) */
#define HK_MIN_SLEEP 0.005

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
    spare = total(p) - p->cfg.min;
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
        idle_remove(p, s);
        why[n_doomed] = reason;
        doomed[n_doomed++] = s->conn;
        count_close(p, reason);
        slot_vacate(p, s);
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
    while (total(p) < p->cfg.min && t >= p->reconnect_after &&
           (s = take_free_slot(p)) != NULL)
        opening[n_opening++] = s;
    if (total(p) < p->cfg.min && p->reconnect_after > t &&
        p->reconnect_after < next)
        next = p->reconnect_after;
    pthread_mutex_unlock(&p->mu);

    for (i = 0; i < n_doomed; i++)
        close_conn(p, doomed[i], why[i], POOL_LOG_INFO);
    for (i = 0; i < n_leaks; i++) {
        if (leaks[i])
            pool_log(p, POOL_LOG_WARN, "%s", leaks[i]);
        free(leaks[i]);
    }
    for (i = 0; i < n_opening; i++) {
        pq_error err;
        pq_conn *conn;
        s = opening[i];
        conn = pq_connect(p->cfg.conninfo, now() + p->cfg.connect_timeout,
                          &err);
        pthread_mutex_lock(&p->mu);
        p->n_connecting--;
        if (!conn || p->closing) {
            if (conn) {
                p->counters.closed++;
            } else {
                p->counters.connect_errors++;
                p->counters.connect_failures++;
            }
            p->reconnect_after = now() + 1.0;
            slot_vacate(p, s);
            pthread_mutex_unlock(&p->mu);
            if (conn)
                pq_close(conn);
            else
                pool_log(p, POOL_LOG_ERROR, "connection error: %s",
                         err.message);
            continue;
        }
        s->conn = conn;
        s->created_at = now();
        s->expires_at = lifetime_end(p, s->created_at);
        p->counters.created++;
        p->counters.connect_failures = 0;
        slot_return(p, s, s->created_at);
        {
            int tot = total(p);
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
        close_conn(p, r->conn, "broken", POOL_LOG_WARN);
        free(r);
    }
done:
    free(doomed);
    free(why);
    free(opening);
    free(leaks);
    return next;
}

static void *housekeeper_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&registry_mu);
    while (!hk_stop) {
        double t = now(), next = t + HK_MAX_SLEEP;
        int64_t wall = (int64_t)time(NULL);
        int n = 0, i;
        pool *p, **list;
        struct timespec until;

        for (p = registry_head; p; p = p->next_registered)
            n++;
        list = calloc((size_t)n + 1, sizeof *list);
        n = 0;
        for (p = registry_head; list && p; p = p->next_registered) {
            pool_ref(p);
            list[n++] = p;
        }
        pthread_mutex_unlock(&registry_mu);
        for (i = 0; i < n; i++) {
            double due = housekeep(list[i], t, wall);
            if (due < next)
                next = due;
            pool_unref(list[i]);
        }
        free(list);
        if (next < now() + HK_MIN_SLEEP)
            next = now() + HK_MIN_SLEEP;
        until = abs_time(next);
        __atomic_store_n(&hk_wake_us, (uint64_t)(next * 1e6), __ATOMIC_RELAXED);
        pthread_mutex_lock(&registry_mu);
        if (!hk_stop)
            pthread_cond_timedwait(&hk_cond, &registry_mu, &until);
    }
    pthread_mutex_unlock(&registry_mu);
    return NULL;
}

static void housekeeper_ensure(void)
{
    pthread_t thread;
    pthread_attr_t attr;

    if (__atomic_load_n(&hk_running, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&registry_mu);
    if (!hk_running && !hk_stop) {
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&thread, &attr, housekeeper_main, NULL) == 0)
            __atomic_store_n(&hk_running, 1, __ATOMIC_RELEASE);
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_unlock(&registry_mu);
}

/* ---- fork and exit ----------------------------------------------------- */

static void fork_prepare(void)
{
    pool *p;
    pthread_mutex_lock(&registry_mu);
    for (p = all_head; p; p = p->next_all)
        pthread_mutex_lock(&p->mu);
    pthread_mutex_lock(&log_mu);
}

static void fork_parent(void)
{
    pool *p;
    pthread_mutex_unlock(&log_mu);
    for (p = all_head; p; p = p->next_all)
        pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&registry_mu);
}

/* The child: empty every pool without touching the parent's sessions. */
static void fork_child(void)
{
    pool *p;
    int i;

    for (p = all_head; p; p = p->next_all) {
        retired *r;
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
        init_monotonic_cond(&p->drained);
    }
    init_monotonic_cond(&hk_cond);
    hk_running = 0;
    pthread_mutex_unlock(&log_mu);
    for (p = all_head; p; p = p->next_all)
        pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&registry_mu);
}

/* Normal process exit: close every idle connection and every checked-out one
 * that is not running a statement, so each server session ends with a
 * Terminate message rather than an unexpected EOF. */
static void close_at_exit(void)
{
    pool *p;
    pq_conn **conns;
    int n;

    pthread_mutex_lock(&registry_mu);
    hk_stop = 1;
    pthread_cond_broadcast(&hk_cond);
    for (p = all_head; p; p = p->next_all) {
        pthread_mutex_lock(&p->mu);
        conns = calloc((size_t)p->cfg.max, sizeof *conns);
        n = 0;
        if (conns) {
            p->closing = 1;
            n = take_idle(p, conns);
            n += revoke_in_use(p, conns + n);
        }
        pthread_mutex_unlock(&p->mu);
        close_all(p, conns, n, "process exit");
        free(conns);
    }
    pthread_mutex_unlock(&registry_mu);
}

/* ---- close_on_signals ---------------------------------------------------- */

static sem_t signal_sem;
static volatile sig_atomic_t signal_caught;
static pid_t signal_owner;          /* the process whose thread waits */
static pthread_mutex_t signal_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_signal(int sig)
{
    if (getpid() != signal_owner) {
        /* A forked child has no closer thread: just die as usual. */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    signal_caught = sig;
    sem_post(&signal_sem);
}

static void *signal_main(void *arg)
{
    pool **list;
    int sig, n, i;
    (void)arg;

    while (sem_wait(&signal_sem) != 0) {
    }
    sig = signal_caught;
    list = registered_pools(&n);
    for (i = 0; i < n; i++) {
        pool *p = list[i];
        pq_conn **conns = calloc((size_t)p->cfg.max, sizeof *conns);
        int closing = 0;
        pthread_mutex_lock(&p->mu);
        if (conns) {
            p->closing = 1;
            closing = take_idle(p, conns);
        }
        pthread_mutex_unlock(&p->mu);
        close_all(p, conns, closing, "signal");
        free(conns);
    }
    signal(sig, SIG_DFL);
    kill(getpid(), sig);
    return NULL;
}

int pool_close_on_signals(void)
{
    static int installed;
    struct sigaction sa;
    pthread_t thread;
    int ok = 1;

    pthread_once(&process_once, process_init);
    pthread_mutex_lock(&signal_mu);
    if (installed != (int)getpid()) {
        ok = sem_init(&signal_sem, 0, 0) == 0 &&
             pthread_create(&thread, NULL, signal_main, NULL) == 0;
        if (ok) {
            pthread_detach(thread);
            signal_owner = getpid();
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_signal;
            sigemptyset(&sa.sa_mask);
            sigaction(SIGTERM, &sa, NULL);
            sigaction(SIGINT, &sa, NULL);
            installed = (int)getpid();
        }
    }
    pthread_mutex_unlock(&signal_mu);
    return ok;
}

static void process_init(void)
{
    init_monotonic_cond(&hk_cond);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    atexit(close_at_exit);
}
