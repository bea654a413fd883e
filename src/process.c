/*
 * process.c - the pool core's duties to the process (see process.h).
 *
 * Fork: the pthread_atfork handlers hold every mutex of the core across
 * fork() (in the lock order stated in registry.c); in the child every pool
 * is emptied, its connections abandoned (socket closed, nothing sent),
 * every checkout invalidated, and the housekeeper restarts on first use.
 *
 * Exit: the housekeeper is stopped (waiting up to a second for a pass
 * under way), then every idle connection and every checked-out one not
 * running a statement is closed, so each of those server sessions ends
 * with a Terminate message. A connection running a statement in another
 * thread at that moment is left to the operating system, which closes its
 * socket (the server logs an unexpected EOF for it): waiting for it could
 * hold the exit up for as long as the statement runs.
 *
 * Signals (close_on_signals, opt-in): the handler only posts a semaphore;
 * a thread of ours closes the idle connections, then re-raises with the
 * default action. A second signal meanwhile ends the process at once.
 */
#define _GNU_SOURCE
#include "process.h"

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "hk_thread.h"
#include "housekeeper.h"
#include "log.h"
#include "registry.h"

static pthread_once_t process_once = PTHREAD_ONCE_INIT;

/* How long exit waits for the housekeeper to end a pass under way. */
#define EXIT_HOUSEKEEPER_WAIT 1.0

/* ---- fork and exit ----------------------------------------------------- */

static void fork_prepare(void)
{
    registry_fork_lock();
    pool_fork_prepare();
    hk_fork_prepare();
    log_fork_prepare();
}

static void fork_parent(void)
{
    log_fork_release();
    hk_fork_parent();
    pool_fork_parent();
    registry_fork_unlock();
}

static void fork_child(void)
{
    log_fork_release();
    hk_fork_child();
    pool_fork_child();
    registry_fork_unlock();
}

static void close_for_exit(pool *p, void *ud)
{
    (void)ud;
    pool_close_now(p, 1, "process exit");
}

static void close_at_exit(void)
{
    hk_stop(clock_now() + EXIT_HOUSEKEEPER_WAIT);
    pool_each_live(close_for_exit, NULL);
}

static void process_init(void)
{
    hk_set_pass(housekeeper_pass);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    atexit(close_at_exit);
}

void pool_process_init(void)
{
    pthread_once(&process_once, process_init);
}

/* ---- close_on_signals -------------------------------------------------- */

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
    if (signal_caught) {
        /* A second signal while the first is being handled: end now. */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    signal_caught = sig;
    sem_post(&signal_sem);
}

static void close_idle(pool *p, void *ud)
{
    (void)ud;
    pool_close_now(p, 0, "signal");
}

static void *signal_main(void *arg)
{
    int sig;
    (void)arg;

    while (sem_wait(&signal_sem) != 0) {
    }
    sig = signal_caught;
    pool_each(close_idle, NULL);
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

    pool_process_init();
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
