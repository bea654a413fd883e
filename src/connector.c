/*
 * connector.c - connection attempts: connect, then run the pool's
 * on_connect, on detached threads (see connector.h).
 *
 * No shared state and no locks: each attempt owns its small record and
 * frees it when done has returned.
 */
#include "connector.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

typedef struct attempt {
    const char *conninfo, *on_connect;
    double deadline;
    connector_done_fn done;
    void *arg;
} attempt;

/* Put prefix before err's message (cut at the end if it no longer fits). */
static void prefix_message(pq_error *err, const char *prefix)
{
    size_t n = strlen(prefix), len = strlen(err->message);
    if (n + len >= sizeof err->message)
        len = sizeof err->message - n - 1;
    memmove(err->message + n, err->message, len);
    memcpy(err->message, prefix, n);
    err->message[n + len] = '\0';
}

pq_conn *connector_connect(const char *conninfo, const char *on_connect,
                           double deadline, pq_error *err)
{
    pq_conn *conn = pq_connect(conninfo, deadline, err);
    double left;

    if (!conn || !on_connect || !*on_connect)
        return conn;
    /* pq_exec takes a duration, 0 meaning none: what is left, at least a
     * moment when the connect used it all */
    left = 0;
    if (isfinite(deadline)) {
        left = deadline - clock_now();
        if (left < 0.001)
            left = 0.001;
    }
    if (pq_exec(conn, on_connect, left, err))
        return conn;
    pq_close(conn);
    prefix_message(err, "on_connect failed: ");
    if (!err->fields[PQ_FIELD_SQLSTATE][0] && strlen(err->code) == 5)
        memcpy(err->fields[PQ_FIELD_SQLSTATE], err->code, 6);
    strcpy(err->code, PQ_CODE_CONNECT);
    err->safe_to_retry = 0;
    err->outcome_unknown = 0;
    return NULL;
}

static void *attempt_main(void *arg)
{
    attempt *a = arg;
    pq_error err;
    pq_conn *conn = connector_connect(a->conninfo, a->on_connect, a->deadline,
                                      &err);
    a->done(a->arg, conn, conn ? NULL : &err);
    free(a);
    return NULL;
}

int connector_start(const char *conninfo, const char *on_connect,
                    double deadline, connector_done_fn done, void *arg)
{
    attempt *a = malloc(sizeof *a);
    pthread_attr_t attr;
    pthread_t thread;
    int ok;

    if (!a)
        return 0;
    a->conninfo = conninfo;
    a->on_connect = on_connect;
    a->deadline = deadline;
    a->done = done;
    a->arg = arg;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ok = pthread_create(&thread, &attr, attempt_main, a) == 0;
    pthread_attr_destroy(&attr);
    if (!ok)
        free(a);
    return ok;
}
