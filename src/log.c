/*
 * log.c - the log ring and stderr (see log.h).
 *
 * Locking: log_mu guards the ring; it is a leaf (taken with any other lock
 * held, none taken under it). The sequence and the listener count are
 * atomics, so a caller can test "anything new?" without the lock.
 */
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define LOG_RING 256
#define LOG_LINE 512

const char *const pool_log_level_names[] = {
    "debug", "info", "warn", "error", "off", NULL,
};

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    uint64_t seq;
    int level;
    char text[LOG_LINE];
} log_ring[LOG_RING];
static uint64_t log_seq;           /* last written; atomic reads */
static int log_listeners;          /* atomic */

void log_vwrite(int level, const char *pool_name, const char *fmt, va_list ap)
{
    char line[LOG_LINE];
    int n;

    n = snprintf(line, sizeof line, "pgpool: [%s] ", pool_log_level_names[level]);
    if (pool_name && n < (int)sizeof line)
        n += snprintf(line + n, sizeof line - (size_t)n, "pool \"%s\": ",
                      pool_name);
    if (n < (int)sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
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

void log_fork_prepare(void)
{
    pthread_mutex_lock(&log_mu);
}

void log_fork_release(void)
{
    pthread_mutex_unlock(&log_mu);
}
