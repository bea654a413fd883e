/*
 * process.h - the pool core's duties to the process: fork, exit and
 * signals.
 */
#ifndef PGPOOL_PROCESS_H
#define PGPOOL_PROCESS_H

/* Once per process, before any pool is configured (luaopen does it):
 * install the fork and exit handlers and give the housekeeping thread its
 * pass. */
void pool_process_init(void);

/* SIGTERM and SIGINT close every idle connection cleanly (a Terminate each),
 * then end the process as the signal would have. Not for nginx, which has
 * its own handlers. 1 on success. */
int pool_close_on_signals(void);

#endif
