/*
 * hk_thread.h - the housekeeping thread of this process and its wake-ups.
 *
 * One detached thread per process, started on first use (not in nginx's
 * master, which configures pools but must open nothing: its workers start
 * their own after fork). It runs the pass it was given, then sleeps until
 * the time that pass asked for (at least HK_MIN_SLEEP, at most a second
 * later) or until poked. It knows nothing of pools: housekeeper.c is the
 * pass.
 */
#ifndef PGPOOL_HK_THREAD_H
#define PGPOOL_HK_THREAD_H

/* One pass of housekeeping; returns the monotonic time of its next due. */
typedef double (*hk_pass_fn)(void);

/* Set once, before the first hk_ensure. */
void hk_set_pass(hk_pass_fn pass);

/* Start the thread unless it runs (a relaxed load when it does). */
void hk_ensure(void);

/* Run a pass now; or make sure one runs by the monotonic time t. */
void hk_poke(void);
void hk_poke_before(double t);

/* Process exit: the thread ends after its current pass; waits for that
 * until the monotonic time deadline. */
void hk_stop(double deadline);

/* fork(): hk_fork_prepare holds the thread's mutex across it; in the child
 * the thread is gone and starts again on first use. */
void hk_fork_prepare(void);
void hk_fork_parent(void);
void hk_fork_child(void);

#endif
