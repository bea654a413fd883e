/*
 * log.h - pgpool's log lines: levels, the ring that Lua listeners read, and
 * stderr when nobody listens.
 *
 * Every line is kept in a small ring (the newest LOG_RING lines) numbered by
 * a sequence; a Lua state with an on_log function reads the lines after the
 * last one it saw. While no listener is registered, lines also go to stderr.
 * Which lines are written at all is the caller's choice (pool_log in pool.c
 * applies the pool's log_level).
 */
#ifndef PGPOOL_LOG_H
#define PGPOOL_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum pool_log_level {
    POOL_LOG_DEBUG, POOL_LOG_INFO, POOL_LOG_WARN, POOL_LOG_ERROR, POOL_LOG_OFF
};
extern const char *const pool_log_level_names[];  /* "debug" .. "off" */

/* Write one line: "pgpool: [level] pool "name": text" (pool_name NULL:
 * no pool part). */
void log_vwrite(int level, const char *pool_name, const char *fmt,
                va_list ap);

/* Listeners: a registered listener stops the copy to stderr. */
void pool_log_listeners(int delta);
uint64_t pool_log_seq(void);
/* Copy the line after sequence `after` into buf; returns its sequence, or 0
 * when there is none newer. Lines lost to ring overflow are skipped. */
uint64_t pool_log_read(uint64_t after, int *level, char *buf, size_t len);

/* fork(): the ring's mutex is held across it (taken last, after every
 * other lock of the pool core), then released in both processes. */
void log_fork_prepare(void);
void log_fork_release(void);

#endif
