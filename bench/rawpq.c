/*
 * rawpq.c - the physical limit: libpq called directly on one connection.
 *
 *   rawpq CONNINFO MODE SECONDS [COUNT]
 *
 * Runs one kind of statement in a loop on one connection and prints
 *
 *   ops=<statements run> secs=<seconds in the timed loop> cpu=<CPU seconds>
 *
 * where cpu is the CPU time (user + system) this process used in the loop.
 * With COUNT it runs exactly COUNT statements (no warm-up; used under
 * callgrind, where only the instruction count matters); otherwise it warms up
 * for a fifth of SECONDS (at most 0.2 s) and then runs for SECONDS.
 *
 * Modes (every statement's value is read back and checked, as a client would):
 *   simple         PQexec("select 1")                      simple protocol
 *   select1        PQexecParams("select 1", no parameters) extended protocol,
 *                  the call pgpool's conn:query makes
 *   param          PQexecParams("select $1::int + 1", "41") unnamed statement
 *   prepared       PQprepare once, then PQexecPrepared("41")
 *   pipe_select1   pipeline mode, batches of 100 "select 1" and one Sync
 *   pipe_param     pipeline mode, batches of 100 "select $1::int + 1"
 *
 * For the pipeline modes ops counts statements, not batches, so rates compare
 * directly with the sequential modes.
 *
 * A benchmark tool of pgpool, not part of the module.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#define BATCH 100

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(PGconn *pg, const char *what)
{
    fprintf(stderr, "rawpq: %s: %s", what, pg ? PQerrorMessage(pg) : "?\n");
    exit(1);
}

/* Check a one-row, one-column result holding `expect`, then free it. */
static void check(PGconn *pg, PGresult *res, int expect)
{
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        die(pg, "unexpected result");
    if (atoi(PQgetvalue(res, 0, 0)) != expect)
        die(pg, "wrong value");
    PQclear(res);
}

enum mode { SIMPLE, SELECT1, PARAM, PREPARED, PIPE_SELECT1, PIPE_PARAM };

static const char *const mode_names[] = {
    "simple", "select1", "param", "prepared", "pipe_select1", "pipe_param",
    NULL,
};

static const char *const param_values[1] = { "41" };

/* One sequential statement. */
static void run_one(PGconn *pg, enum mode m)
{
    switch (m) {
    case SIMPLE:
        check(pg, PQexec(pg, "select 1"), 1);
        break;
    case SELECT1:
        check(pg, PQexecParams(pg, "select 1", 0, NULL, NULL, NULL, NULL, 0),
              1);
        break;
    case PARAM:
        check(pg, PQexecParams(pg, "select $1::int + 1", 1, NULL,
                               param_values, NULL, NULL, 0), 42);
        break;
    case PREPARED:
        check(pg, PQexecPrepared(pg, "s", 1, param_values, NULL, NULL, 0), 42);
        break;
    default:
        break;
    }
}

/* One pipelined batch of BATCH statements and a Sync: everything is sent
 * before the first result is read. The output (about 5 kB) fits in the
 * socket buffers, so blocking mode cannot deadlock here. */
static void run_batch(PGconn *pg, enum mode m)
{
    const char *sql = m == PIPE_PARAM ? "select $1::int + 1" : "select 1";
    int n = m == PIPE_PARAM ? 1 : 0, expect = m == PIPE_PARAM ? 42 : 1;
    PGresult *res;
    int i;

    for (i = 0; i < BATCH; i++)
        if (!PQsendQueryParams(pg, sql, n, NULL, n ? param_values : NULL, NULL,
                               NULL, 0))
            die(pg, "PQsendQueryParams");
    if (!PQpipelineSync(pg))
        die(pg, "PQpipelineSync");
    for (i = 0; i < BATCH; i++) {
        check(pg, PQgetResult(pg), expect);
        if (PQgetResult(pg) != NULL)   /* NULL ends each statement's results */
            die(pg, "missing end of statement");
    }
    res = PQgetResult(pg);
    if (!res || PQresultStatus(res) != PGRES_PIPELINE_SYNC)
        die(pg, "missing pipeline sync");
    PQclear(res);
}

/* Run until `count` statements are done or the clock passes `until`
 * (count 0: no count limit). Returns the number of statements run. */
static long run(PGconn *pg, enum mode m, long count, double until)
{
    int pipelined = m == PIPE_SELECT1 || m == PIPE_PARAM;
    int step = pipelined ? BATCH : 1;
    long done = 0;

    while (count ? done < count : now() < until) {
        if (pipelined)
            run_batch(pg, m);
        else
            run_one(pg, m);
        done += step;
    }
    return done;
}

int main(int argc, char **argv)
{
    enum mode m;
    double seconds, started, cpu_started;
    long count = 0, ops;
    PGconn *pg;
    int i;

    if (argc < 4) {
        fprintf(stderr, "usage: rawpq CONNINFO MODE SECONDS [COUNT]\n");
        return 2;
    }
    for (i = 0; mode_names[i] && strcmp(mode_names[i], argv[2]) != 0; i++)
        ;
    if (!mode_names[i]) {
        fprintf(stderr, "rawpq: unknown mode %s\n", argv[2]);
        return 2;
    }
    m = (enum mode)i;
    seconds = atof(argv[3]);
    if (argc > 4)
        count = atol(argv[4]);

    pg = PQconnectdb(argv[1]);
    if (PQstatus(pg) != CONNECTION_OK)
        die(pg, "connect");
    if (m == PREPARED) {
        PGresult *res = PQprepare(pg, "s", "select $1::int + 1", 1, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            die(pg, "PQprepare");
        PQclear(res);
    }
    if ((m == PIPE_SELECT1 || m == PIPE_PARAM) && !PQenterPipelineMode(pg))
        die(pg, "PQenterPipelineMode");

    if (!count) {
        double warm = seconds / 5 < 0.2 ? seconds / 5 : 0.2;
        run(pg, m, 0, now() + warm);
    }
    started = now();
    cpu_started = (double)clock() / CLOCKS_PER_SEC;
    ops = run(pg, m, count, started + seconds);
    printf("ops=%ld secs=%.6f cpu=%.6f\n", ops, now() - started,
           (double)clock() / CLOCKS_PER_SEC - cpu_started);

    if (m == PIPE_SELECT1 || m == PIPE_PARAM)
        PQexitPipelineMode(pg);
    PQfinish(pg);
    return 0;
}
