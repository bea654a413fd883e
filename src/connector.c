/*
 * connector.c - connection attempts on detached threads (see connector.h).
 *
 * No shared state and no locks: each attempt owns its small record and
 * frees it when done has returned.
 */
#include "connector.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct attempt {
    const char *conninfo;
    double deadline;
    connector_done_fn done;
    void *arg;
} attempt;

static void *attempt_main(void *arg)
{
    attempt *a = arg;
    pq_error err;
    pq_conn *conn = pq_connect(a->conninfo, a->deadline, &err);
    a->done(a->arg, conn, conn ? NULL : &err);
    free(a);
    return NULL;
}

int connector_start(const char *conninfo, double deadline,
                    connector_done_fn done, void *arg)
{
    attempt *a = malloc(sizeof *a);
    pthread_attr_t attr;
    pthread_t thread;
    int ok;

    if (!a)
        return 0;
    a->conninfo = conninfo;
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
