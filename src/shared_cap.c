/*
 * shared_cap.c - the cross-process cap (see shared_cap.h).
 *
 * Invariants (under the region's mutex): used is the sum of every holder's
 * count, lending the sum of their lending, wanting >= 0; a holder entry is
 * free when its count, wanting and lending are all 0. used may exceed max
 * only after max was lowered; no token is taken until it is below again.
 *
 * Locking: the region's mutex is process-shared and robust (a process that
 * died holding it left the counts between two whole updates, so the next
 * locker takes it over). Callers in the pool core take it under a pool's
 * mutex; nothing is taken under it. regions_mu guards this process's list
 * of regions by name; it is taken only by shared_cap_for, which the
 * registry calls under its own mutex, so it is never held across fork().
 */
#define _GNU_SOURCE
#include "shared_cap.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SHARED_HOLDERS 1024

typedef struct holder {
    pid_t pid;
    int count;      /* tokens taken */
    int wanting;    /* callers waiting for a token */
    int lending;    /* tokens it decided to give back for others */
} holder;

struct shared_cap {
    pthread_mutex_t mu;
    int max, used, lending;
    holder holders[SHARED_HOLDERS];
};

/* This process's regions by pool name (inherited across fork, mappings
 * included). */
typedef struct named_region {
    char *name;
    shared_cap *sc;
    struct named_region *next;
} named_region;

static pthread_mutex_t regions_mu = PTHREAD_MUTEX_INITIALIZER;
static named_region *regions;

static void shared_lock(shared_cap *sc)
{
    if (pthread_mutex_lock(&sc->mu) == EOWNERDEAD)
        pthread_mutex_consistent(&sc->mu);
}

static shared_cap *map_region(void)
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
    return sc;
}

shared_cap *shared_cap_for(const char *name, int max)
{
    named_region *r;
    shared_cap *sc = NULL;

    pthread_mutex_lock(&regions_mu);
    for (r = regions; r && !sc; r = r->next)
        if (strcmp(r->name, name) == 0)
            sc = r->sc;
    if (!sc) {
        r = malloc(sizeof *r);
        if (r && (r->name = strdup(name)) != NULL &&
            (sc = map_region()) != NULL) {
            r->sc = sc;
            r->next = regions;
            regions = r;
        } else {
            if (r)
                free(r->name);
            free(r);
        }
    }
    pthread_mutex_unlock(&regions_mu);
    if (sc) {
        shared_lock(sc);
        sc->max = max;
        pthread_mutex_unlock(&sc->mu);
    }
    return sc;
}

/* Give back the tokens of processes that no longer exist (locked). */
static void shared_reclaim(shared_cap *sc)
{
    int i;
    for (i = 0; i < SHARED_HOLDERS; i++) {
        holder *h = &sc->holders[i];
        if ((h->count > 0 || h->wanting > 0) && kill(h->pid, 0) != 0 &&
            errno == ESRCH) {
            sc->used -= h->count;
            sc->lending -= h->lending;
            h->count = h->wanting = h->lending = 0;
        }
    }
}

/* This process's entry, a free one taken for it when `claim`, or NULL
 * (locked). */
static holder *my_holder(shared_cap *sc, int claim)
{
    pid_t me = getpid();
    holder *free_one = NULL;
    int i;
    for (i = 0; i < SHARED_HOLDERS; i++) {
        holder *h = &sc->holders[i];
        if (h->pid == me)
            return h;
        if (!free_one && h->count == 0 && h->wanting == 0 && h->lending == 0)
            free_one = h;
    }
    if (!claim || !free_one)
        return NULL;
    free_one->pid = me;
    return free_one;
}

void shared_cap_give(shared_cap *sc)
{
    holder *h;

    shared_lock(sc);
    h = my_holder(sc, 0);
    if (h && h->count > 0) {
        h->count--;
        sc->used--;
        if (h->lending > 0) {
            h->lending--;
            sc->lending--;
        }
    }
    pthread_mutex_unlock(&sc->mu);
}

int shared_cap_used(shared_cap *sc)
{
    int used;
    shared_lock(sc);
    used = sc->used;
    pthread_mutex_unlock(&sc->mu);
    return used;
}

void shared_cap_want(shared_cap *sc, int delta)
{
    holder *h;

    shared_lock(sc);
    h = my_holder(sc, delta > 0);
    if (h) {
        h->wanting += delta;
        if (h->wanting < 0)
            h->wanting = 0;
    }
    pthread_mutex_unlock(&sc->mu);
}


/* Callers of processes other than this one waiting for a token (locked). */
static int others_wanting(shared_cap *sc)
{
    pid_t me = getpid();
    int i, n = 0;
    for (i = 0; i < SHARED_HOLDERS; i++)
        if (sc->holders[i].pid != me)
            n += sc->holders[i].wanting;
    return n;
}

/* The cap divided among the processes that hold or want tokens, this one
 * included, rounded up (locked). */
static int fair_share(shared_cap *sc, const holder *mine)
{
    int i, n = 0;
    for (i = 0; i < SHARED_HOLDERS; i++) {
        const holder *h = &sc->holders[i];
        if (h == mine || h->count > 0 || h->wanting > 0)
            n++;
    }
    return (sc->max + n - 1) / n;
}

/* While other processes wait, one holding its fair share or more takes no
 * token: what the others give back goes to them. */
int shared_cap_take(shared_cap *sc)
{
    holder *h;
    int got = 0;

    shared_lock(sc);
    if (sc->used >= sc->max)
        shared_reclaim(sc);
    if (sc->used < sc->max && (h = my_holder(sc, 1)) != NULL &&
        (others_wanting(sc) == 0 || h->count < fair_share(sc, h))) {
        h->count++;
        sc->used++;
        got = 1;
    }
    pthread_mutex_unlock(&sc->mu);
    return got;
}

int shared_cap_lend(shared_cap *sc, int idle, int *shed, int *others_want)
{
    holder *h;
    int others, short_by, lend = 0;

    shared_lock(sc);
    *shed = 0;
    others = others_wanting(sc);
    if (others > 0 || sc->used >= sc->max) {
        shared_reclaim(sc);
        others = others_wanting(sc);
    }
    /* tokens the waiters lack once the ones free and those on their way
     * back are taken */
    short_by = others - (sc->max - sc->used + sc->lending);
    h = my_holder(sc, 0);
    if (short_by > 0 && h) {
        int mine = h->count - h->lending;
        lend = short_by < idle ? short_by : idle;
        if (lend > mine)
            lend = mine;
        h->lending += lend;
        sc->lending += lend;
        /* beyond the idle ones, down to a fair share as they come back */
        *shed = mine - lend - fair_share(sc, h);
        if (*shed > short_by - lend)
            *shed = short_by - lend;
        if (*shed < 0)
            *shed = 0;
    }
    pthread_mutex_unlock(&sc->mu);
    *others_want = others;
    return lend;
}
