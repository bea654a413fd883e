/*
 * shared_cap.c - the cross-process cap (see shared_cap.h).
 *
 * Invariant (under the region's mutex): used is the sum of every holder's
 * count, and used <= max.
 *
 * Locking: the mutex is process-shared and robust (a process that died
 * holding it left the counts between two whole updates, so the next locker
 * takes it over). Callers in pool.c take it under a pool's mutex; nothing is
 * taken under it.
 */
#define _GNU_SOURCE
#include "shared_cap.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SHARED_HOLDERS 1024

struct shared_cap {
    pthread_mutex_t mu;
    int max, used;
    struct {
        pid_t pid;
        int count;
    } holders[SHARED_HOLDERS];
};

shared_cap *shared_cap_new(int max)
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

void shared_cap_free(shared_cap *sc)
{
    if (sc)
        munmap(sc, sizeof *sc);
}

static void shared_lock(shared_cap *sc)
{
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

int shared_cap_take(shared_cap *sc)
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

void shared_cap_give(shared_cap *sc)
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

int shared_cap_used(shared_cap *sc)
{
    int used;
    shared_lock(sc);
    used = sc->used;
    pthread_mutex_unlock(&sc->mu);
    return used;
}
