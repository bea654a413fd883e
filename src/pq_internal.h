/*
 * pq_internal.h - what the two files of the libpq layer share: pq.c
 * (connections, cancels, statements, the statement cache, errors) and
 * pq_stream.c (row streams, COPY, notifications, which it builds on
 * pq.c's waits and results). Nothing outside them includes it; the rest of
 * pgpool sees pq.h.
 */
#ifndef PGPOOL_PQ_INTERNAL_H
#define PGPOOL_PQ_INTERNAL_H

#include <stdint.h>

#include <libpq-fe.h>

#include "pq.h"

typedef struct pq_stmt pq_stmt;           /* pq.c: the statement cache */
typedef struct cancel_job cancel_job;     /* pq.c: a running cancel */

#define STMT_BUCKETS 256

/* How long to wait for the server's answer to a cancel before giving the
 * connection up as broken. */
#define CANCEL_GRACE 5.0

#define COPY_REFUSED "COPY is not supported by query or exec"

struct pq_conn {
    PGconn *pg;
    int backend_pid;
    int fatal_seen;              /* the server sent a FATAL while idle */
    int broken;                  /* given up past a deadline: never reused */
    pq_error last_fatal;         /* the server's last FATAL, when fatal_known */
    int fatal_known;
    pq_notice_fn notice_fn;
    void *notice_arg;
    cancel_job *cancel;          /* a cancel still running, if any */
    int n_stmts;
    pq_stmt *newest, *oldest;
    pq_stmt *buckets[STMT_BUCKETS];
    char *to_deallocate;         /* "DEALLOCATE a;DEALLOCATE b;" not yet sent */
    size_t to_deallocate_len;
    char *password;              /* from the conninfo, for redaction */
    /* A row stream (pq_stream_open): its number, whether it is open, the
     * number of the last one that ended (read to its end, its error given,
     * or closed by its owner), and the timeout of each wait for a row. */
    uint64_t stream_seq, stream_ended;
    int streaming;
    int stream_in_block;         /* opened inside a transaction block */
    double stream_timeout;
    /* A COPY in progress (pq_copy_begin): its direction (PQ_COPY_IN or
     * PQ_COPY_OUT, 0 for none) and the timeout of each wait in it. */
    int copying;
    double copy_timeout;
    int copy_cancelled;          /* its timeout passed: a cancel was sent */
};

/* One call's wait budget and what happened to it. */
typedef struct run_state {
    double deadline;     /* absolute; no limit unless a finite number > 0 */
    double grace;        /* past the deadline: cancel, then wait this much
                          * more; 0: give up at the deadline */
    double timeout;      /* the statement's timeout, for messages */
    int cancelled;       /* the deadline passed and a cancel was started */
    int answered;        /* results of the statement came before its error */
} run_state;

/* Fill err from the connection's last failure (no server result): the
 * server's FATAL when it sent one, else libpq's first line. */
void pqi_error_from_conn(pq_error *err, pq_conn *c, const char *code);

/* The absolute deadline of a timeout in seconds from now; 0 (none) unless
 * timeout is a finite number > 0. */
double pqi_deadline_after(double timeout);

/* Wait until fd is ready for events or the deadline passes. 1 ready, 0 time
 * out, -1 error. */
int pqi_wait_fd(int fd, short events, double deadline);

/* 1 when c can run a statement; else 0 and err (nothing was sent). A row
 * stream left open is abandoned first (its owner, resumed, is told), and
 * so is a COPY left unfinished. */
int pqi_usable(pq_conn *c, pq_error *err);

/* ---- statements -------------------------------------------------------- */
void pqi_run_init(run_state *rs, double deadline, double grace,
                  double timeout);

/* Wait for input and read it. At the deadline, start the cancel and allow
 * the grace; past that (or with no grace) give the connection up. 1 input
 * read, 0 the connection failed, -1 given up. */
int pqi_wait_input(pq_conn *c, run_state *rs);

/* Wait until libpq holds a whole result (PQisBusy false). 1, or 0 when the
 * connection failed and holds no result, or -1 when given up. */
int pqi_await_result(pq_conn *c, run_state *rs);

/* Send what libpq has buffered, reading meanwhile so that neither side
 * blocks on a full socket. 1 once everything is sent, 0 when the
 * connection failed, -1 at the deadline (a message half sent cannot be
 * cancelled: the connection is given up). */
int pqi_flush_all(pq_conn *c, run_state *rs);

/* The statement started a COPY, which query and exec do not support: end
 * it so that its results follow (COPY IN: refuse the data; COPY OUT: read
 * and drop it; COPY BOTH: no way back, give the connection up). 1 ended,
 * 0 failed, -1 given up at the deadline. */
int pqi_refuse_copy(pq_conn *c, ExecStatusType status, run_state *rs);

/* Why reading results stopped without a result: the connection failed (0),
 * or the deadline passed with nothing answered (-1), which gives the
 * connection up. */
void pqi_error_wait_failed(pq_error *err, pq_conn *c, const run_state *rs,
                           int waited);

/*
 * Read every result of what was just sent, ending a COPY it started. Keeps
 * the first error (or the last success) and frees the rest; then waits
 * for a cancel it started (until the deadline). NULL and err when the
 * connection failed, was given up, or a COPY was refused.
 */
PGresult *pqi_collect_results(pq_conn *c, run_state *rs, pq_error *err);

/* Turn a finished PGresult into success (returned) or err (NULL). */
pq_result *pqi_check_result(pq_conn *c, PGresult *res, const run_state *rs,
                            pq_error *err);

/* Why sending failed: the connection (flushed 0) or the deadline (-1). */
void pqi_error_send_failed(pq_error *err, pq_conn *c, int flushed);

/* Send the DEALLOCATEs of dropped statements, in one round trip, once the
 * connection is outside a transaction block: there a failure (the user ran
 * DEALLOCATE ALL, say) cannot abort the user's transaction. 0 and err only
 * when the connection failed (the caller's statement was not sent). */
int pqi_deallocate_dropped(pq_conn *c, run_state *rs, pq_error *err);

/* Read and drop every result left of the statement, by rs's deadline. 1
 * when the connection is idle again, 0 when it failed or was given up. */
int pqi_drain_results(pq_conn *c, run_state *rs);

/* Stop the open stream: cancel its statement, read what is left (at most
 * CANCEL_GRACE), and leave the connection idle or broken. A stream opened
 * inside a transaction block is read to its end instead (the cancel would
 * abort the transaction), and cancelled only past CANCEL_GRACE. */
int pqi_stream_abandon(pq_conn *c);

#endif
