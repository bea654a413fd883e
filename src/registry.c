/*
 * registry.c - the pools of this process by name (see registry.h).
 *
 * State: the configured pools (registry_head) and the names shut down
 * since.
 *
 * Lock order of the whole pool core, outermost first:
 *   registry_mu -> live_mu (pool.c) -> a pool's mu
 *               -> { a shared cap's mu, a hogs table's mu, hk_mu, log_mu }
 * The last four are leaves: nothing is taken under them. No network I/O
 * happens under any of them.
 */
#define _GNU_SOURCE
#include "registry.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "hk_thread.h"
#include "pool_internal.h"

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static pool *registry_head;        /* configured pools */
static char **shut_down_names;     /* names shut down and not reconfigured */
static int shut_down_count;

static void release_replicas(pool **replicas, int n)
{
    int i;
    for (i = 0; i < n; i++)
        pool_unref(replicas[i]);
    free(replicas);
}

/* ---- names ------------------------------------------------------------- */

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

/* ---- configure --------------------------------------------------------- */

static int same_string(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static int same_config(const pool_config *a, const pool_config *b)
{
    return same_string(a->name, b->name) &&
           same_string(a->conninfo, b->conninfo) &&
           same_string(a->on_connect, b->on_connect) && a->max == b->max &&
           a->min == b->min && a->idle_timeout == b->idle_timeout &&
           a->acquire_timeout == b->acquire_timeout &&
           a->connect_timeout == b->connect_timeout &&
           a->query_timeout == b->query_timeout &&
           a->max_lifetime == b->max_lifetime &&
           a->slow_query == b->slow_query &&
           a->leak_timeout == b->leak_timeout &&
           a->max_waiting == b->max_waiting &&
           a->statement_cache == b->statement_cache &&
           a->max_shared == b->max_shared && a->log_level == b->log_level &&
           a->track_hogs == b->track_hogs &&
           a->transaction_pooling == b->transaction_pooling &&
           a->health.window == b->health.window &&
           a->health.waiting_ratio == b->health.waiting_ratio &&
           a->health.wait_p95 == b->health.wait_p95 &&
           a->health.timeouts == b->health.timeouts &&
           a->health.connect_failures == b->health.connect_failures;
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

static void conflict_error(const char *name, char *errbuf, size_t errlen)
{
    snprintf(errbuf, errlen, "pgpool: pool \"%s\" is already configured with "
             "different options (call shutdown first)", name);
}

/* The registered pool cfg->name, referenced, when it has the options of
 * cfg (registry_mu held). NULL with *conflict 1 when it has others. */
static pool *find_same(const pool_config *cfg, int *conflict)
{
    pool *p = find_registered(cfg->name);
    *conflict = 0;
    if (!p)
        return NULL;
    if (same_config(&p->cfg, cfg) && same_replicas(p, cfg)) {
        pool_ref(p);
        return p;
    }
    *conflict = 1;
    return NULL;
}

static int shutdown_one(pool *p, double deadline);

/* Register a pool for cfg (no replicas of its own), or reference the one
 * registered with the same options. *created tells which. */
static pool *configure_one(const pool_config *cfg, pool **replicas,
                           int *created, char *errbuf, size_t errlen)
{
    int conflict;
    pool *p;

    *created = 0;
    pthread_mutex_lock(&registry_mu);
    p = find_same(cfg, &conflict);
    if (p || conflict) {
        pthread_mutex_unlock(&registry_mu);
        if (conflict)
            conflict_error(cfg->name, errbuf, errlen);
        return p;
    }
    p = pool_new(cfg);
    if (!p) {
        pthread_mutex_unlock(&registry_mu);
        snprintf(errbuf, errlen, "pgpool: out of memory");
        return NULL;
    }
    pool_ref(p);   /* the caller's, beside the registry's */
    p->in_registry = 1;
    p->replicas = replicas;
    p->n_replicas = replicas ? cfg->n_replicas : 0;
    p->next_registered = registry_head;
    registry_head = p;
    forget_shut_down_name(cfg->name);
    pthread_mutex_unlock(&registry_mu);
    *created = 1;
    pool_log(p, POOL_LOG_INFO, "pool initialized (max %d, min %d)", cfg->max,
             cfg->min);
    return p;
}

/* Undo configure_replicas for the first n: shut down the ones it created,
 * drop the references. */
static void unwind_replicas(pool **replicas, const int *created, int n)
{
    int i;
    for (i = 0; i < n; i++)
        if (created[i])
            shutdown_one(replicas[i], clock_now());
    release_replicas(replicas, n);
}

/* Configure the replicas of cfg (mutex not held): NULL and errbuf when one
 * cannot be (a name configured with other options); then none of them is
 * left registered by this call. */
static pool **configure_replicas(const pool_config *cfg, char *errbuf,
                                 size_t errlen)
{
    size_t len = strlen(cfg->name) + 32;
    char *name = malloc(len);
    pool **replicas = calloc((size_t)cfg->n_replicas, sizeof *replicas);
    int *created = calloc((size_t)cfg->n_replicas, sizeof *created);
    int i;

    if (!name || !replicas || !created) {
        free(name);
        free(replicas);
        free(created);
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
        replicas[i] = configure_one(&replica, NULL, &created[i], errbuf,
                                    errlen);
        if (!replicas[i]) {
            unwind_replicas(replicas, created, i);
            replicas = NULL;
            break;
        }
    }
    free(name);
    free(created);
    return replicas;
}

pool *pool_configure(const pool_config *cfg, int start_now, char *errbuf,
                     size_t errlen)
{
    pool **replicas = NULL;
    pool *p;
    int conflict, created;

    /* Nothing is created when the name is taken with other options. */
    pthread_mutex_lock(&registry_mu);
    p = find_same(cfg, &conflict);
    pthread_mutex_unlock(&registry_mu);
    if (p || conflict) {
        if (conflict)
            conflict_error(cfg->name, errbuf, errlen);
        return p;
    }
    if (cfg->n_replicas > 0) {
        replicas = configure_replicas(cfg, errbuf, errlen);
        if (!replicas)
            return NULL;
    }
    p = configure_one(cfg, replicas, &created, errbuf, errlen);
    if (!created) {     /* configured meanwhile by another thread (racing
                           with other options, its replicas stay: rare) */
        release_replicas(replicas, cfg->n_replicas);
        return p;
    }
    if (start_now) {
        hk_ensure();
        if (cfg->min > 0)
            hk_poke();
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
        hk_ensure();
    return p;
}

/* ---- shutdown and walks ------------------------------------------------ */

/* Unregister p, then drain it; drops the registry's reference. */
static int shutdown_one(pool *p, double deadline)
{
    int clean, was_registered = 0;

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

    clean = pool_drain(p, deadline);
    if (was_registered) {
        pool_log(p, POOL_LOG_INFO, "pool closed");
        pool_unref(p);   /* the registry's reference */
    }
    return clean;
}

int pool_shutdown(pool *p, double timeout)
{
    double deadline = clock_deadline(clock_now(), timeout);
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
    double deadline = clock_deadline(clock_now(), timeout);
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

/* ---- fork -------------------------------------------------------------- */

void registry_fork_lock(void)
{
    pthread_mutex_lock(&registry_mu);
}

void registry_fork_unlock(void)
{
    pthread_mutex_unlock(&registry_mu);
}
