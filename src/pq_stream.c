/*
 * pq_stream.c - the libpq layer's streams: a statement's rows one at a
 * time (single-row mode), COPY FROM STDIN / TO STDOUT a chunk at a time,
 * and LISTEN/NOTIFY notifications. Built on pq.c's waits, results and
 * errors (pq_internal.h); the rules of pq.c's opening comment hold here
 * too (every PGresult cleared or handed out, every wait with a deadline, a
 * connection whose deadline passed unanswered marked broken).
 *
 * A stream or a COPY left unfinished is ended by pq.c (pqi_usable) before
 * anything else runs on its connection: pq.c calls nothing here.
 */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "pq_internal.h"

/* ---- row streams ------------------------------------------------------- */

int pq_stream_open(pq_conn *c, const char *sql, const pq_params *pp,
                   double timeout, uint64_t *seq, pq_error *err)
{
    run_state rs;
    int sent, flushed;

    if (!pqi_usable(c, err))
        return 0;
    pqi_run_init(&rs, pqi_deadline_after(timeout), CANCEL_GRACE, timeout);
    if (c->to_deallocate && !pqi_deallocate_dropped(c, &rs, err))
        return 0;
    c->stream_in_block = PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    sent = PQsendQueryParams(c->pg, sql, pp->n, (const Oid *)pp->types,
                             pp->values, pp->lengths, pp->formats, 0) &&
           PQsetSingleRowMode(c->pg);
    flushed = sent ? pqi_flush_all(c, &rs) : 0;
    if (flushed <= 0) {
        pqi_error_send_failed(err, c, flushed);
        err->safe_to_retry = 1;
        return 0;
    }
    c->streaming = 1;
    c->stream_timeout = timeout;
    *seq = ++c->stream_seq;
    return 1;
}

int pq_stream_next(pq_conn *c, uint64_t seq, pq_result **row, pq_error *err)
{
    run_state rs;
    PGresult *res;
    pq_result *ok;
    int waited;

    *row = NULL;
    if (!c->streaming || c->stream_seq != seq) {
        if (c->stream_ended == seq)
            return 0;
        pq_error_set(err, PQ_CODE_CLOSED, "row stream closed before its end: "
                     "another statement ran on its connection");
        return -1;
    }
    /* Each wait for a row has the statement's timeout: the time the caller
     * spends between rows is not the server's. */
    pqi_run_init(&rs, pqi_deadline_after(c->stream_timeout), CANCEL_GRACE,
             c->stream_timeout);
    rs.answered = 1;
    waited = pqi_await_result(c, &rs);
    res = waited > 0 ? PQgetResult(c->pg) : NULL;
    if (res && PQresultStatus(res) == PGRES_SINGLE_TUPLE) {
        if (!rs.cancelled) {
            *row = (pq_result *)res;
            return 1;
        }
        /* The row came after this wait's deadline, when the statement was
         * already cancelled: the stream ends with the timeout, the rest
         * (more late rows, the server's 57014) read and dropped. */
        PQclear(res);
        c->stream_ended = seq;
        if (pqi_drain_results(c, &rs))
            pq_error_set(err, PQ_CODE_TIMEOUT, "query timeout after %g s: "
                         "the statement was cancelled", rs.timeout);
        else
            pqi_error_wait_failed(err, c, &rs, -1);
        return -1;
    }
    c->stream_ended = seq;
    if (!res) {
        if (waited > 0) {            /* ended without a final result */
            c->streaming = 0;
            return 0;
        }
        pqi_error_wait_failed(err, c, &rs, waited);
        c->streaming = 0;
        c->broken = 1;
        return -1;
    }
    switch (PQresultStatus(res)) {
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        waited = pqi_refuse_copy(c, PQresultStatus(res), &rs);
        PQclear(res);
        if (pqi_drain_results(c, &rs) && waited > 0)
            pq_error_set(err, PQ_CODE_UNSUPPORTED, "%s", COPY_REFUSED);
        else
            pqi_error_wait_failed(err, c, &rs, waited > 0 ? 0 : waited);
        return -1;
    default:
        break;
    }
    ok = pqi_check_result(c, res, &rs, err);   /* frees res on failure */
    PQclear((PGresult *)ok);
    if (!pqi_drain_results(c, &rs) && ok) {
        pqi_error_wait_failed(err, c, &rs, 0);
        return -1;
    }
    return ok ? 0 : -1;
}

int pq_stream_close(pq_conn *c, uint64_t seq)
{
    if (!c->streaming || (seq && c->stream_seq != seq))
        return 1;
    c->stream_ended = c->stream_seq;
    if (!seq)                  /* the release: its transaction is rolled */
        c->stream_in_block = 0;    /* back anyway, so cancel at once */
    return pqi_stream_abandon(c);
}

/* ---- COPY --------------------------------------------------------------- */

/*
 * COPY ... FROM STDIN and COPY ... TO STDOUT, driven by the caller a chunk
 * at a time (the bindings call Lua between chunks): begin, then put and
 * end, or get until the end. Each wait has the statement's timeout; past
 * it the statement is cancelled, as for any statement.
 */

int pq_copy_begin(pq_conn *c, const char *sql, int direction, double timeout,
                  pq_error *err)
{
    ExecStatusType want = direction == PQ_COPY_IN ? PGRES_COPY_IN
                                                  : PGRES_COPY_OUT;
    run_state rs;
    PGresult *res;
    pq_result *ok;
    int flushed, waited;

    if (!pqi_usable(c, err))
        return 0;
    pqi_run_init(&rs, pqi_deadline_after(timeout), CANCEL_GRACE, timeout);
    if (c->to_deallocate && !pqi_deallocate_dropped(c, &rs, err))
        return 0;
    flushed = PQsendQuery(c->pg, sql) ? pqi_flush_all(c, &rs) : 0;
    if (flushed <= 0) {
        pqi_error_send_failed(err, c, flushed);
        err->safe_to_retry = 1;
        return 0;
    }
    waited = pqi_await_result(c, &rs);
    res = waited > 0 ? PQgetResult(c->pg) : NULL;
    if (!res) {
        pqi_error_wait_failed(err, c, &rs, waited > 0 ? 0 : waited);
        return 0;
    }
    if (PQresultStatus(res) == want) {
        PQclear(res);
        c->copying = direction;
        c->copy_timeout = timeout;
        c->copy_cancelled = rs.cancelled;
        return 1;
    }
    switch (PQresultStatus(res)) {
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        pqi_refuse_copy(c, PQresultStatus(res), &rs);
        PQclear(res);
        ok = NULL;
        break;
    default:
        ok = pqi_check_result(c, res, &rs, err);   /* frees res on failure */
        if (!ok) {
            pqi_drain_results(c, &rs);
            return 0;
        }
        PQclear((PGresult *)ok);
    }
    pqi_drain_results(c, &rs);
    pq_error_set(err, PQ_CODE_UNSUPPORTED, "%s needs a COPY ... %s statement",
                 direction == PQ_COPY_IN ? "copy_in" : "copy_out",
                 direction == PQ_COPY_IN ? "FROM STDIN" : "TO STDOUT");
    return 0;
}

/* The end of a COPY: its final result, as pq_query gives it. */
static pq_result *copy_result(pq_conn *c, run_state *rs, pq_error *err)
{
    PGresult *res;
    c->copying = 0;
    rs->cancelled |= c->copy_cancelled;   /* a cancel of an earlier step */
    res = pqi_collect_results(c, rs, err);
    return res ? pqi_check_result(c, res, rs, err) : NULL;
}

/* 0 and err when the COPY the caller drives is no longer in progress. */
static int copy_going(pq_conn *c, int direction, pq_error *err)
{
    if (c->copying == direction)
        return 1;
    pq_error_set(err, PQ_CODE_CLOSED, "COPY ended before its end: another "
                 "statement ran on its connection");
    return 0;
}

int pq_copy_put(pq_conn *c, const char *data, size_t len, pq_error *err)
{
    run_state rs;

    if (!copy_going(c, PQ_COPY_IN, err))
        return 0;
    pqi_run_init(&rs, pqi_deadline_after(c->copy_timeout), 0, c->copy_timeout);
    while (len > 0) {
        int n = len > 65536 ? 65536 : (int)len;
        int put = PQputCopyData(c->pg, data, n);
        if (put < 0) {
            pqi_error_from_conn(err, c, PQ_CODE_CLOSED);
            return 0;
        }
        if (put == 0 || PQflush(c->pg) == 1) {
            int flushed = pqi_flush_all(c, &rs);
            if (flushed <= 0) {
                pqi_error_send_failed(err, c, flushed);
                return 0;
            }
        }
        if (put > 0) {
            data += n;
            len -= (size_t)n;
        }
    }
    return 1;
}

pq_result *pq_copy_end(pq_conn *c, const char *abort_reason, pq_error *err)
{
    run_state rs;
    int put, flushed;

    if (!copy_going(c, PQ_COPY_IN, err))
        return NULL;
    pqi_run_init(&rs, pqi_deadline_after(c->copy_timeout), CANCEL_GRACE,
             c->copy_timeout);
    while ((put = PQputCopyEnd(c->pg, abort_reason)) == 0) {
        flushed = pqi_flush_all(c, &rs);
        if (flushed <= 0) {
            c->copying = 0;
            pqi_error_send_failed(err, c, flushed);
            return NULL;
        }
    }
    flushed = put > 0 ? pqi_flush_all(c, &rs) : 0;
    if (flushed <= 0) {
        c->copying = 0;
        pqi_error_send_failed(err, c, flushed);
        return NULL;
    }
    return copy_result(c, &rs, err);
}

int pq_copy_get(pq_conn *c, char **chunk, int *len, pq_result **res,
                pq_error *err)
{
    run_state rs;

    *chunk = NULL;
    *res = NULL;
    if (!copy_going(c, PQ_COPY_OUT, err))
        return -1;
    pqi_run_init(&rs, pqi_deadline_after(c->copy_timeout), CANCEL_GRACE,
             c->copy_timeout);
    for (;;) {
        char *data;
        int n = PQgetCopyData(c->pg, &data, 1);
        if (n > 0) {
            *chunk = data;
            *len = n;
            return 1;
        }
        if (n == 0) {
            int waited = pqi_wait_input(c, &rs);
            if (waited > 0)
                continue;
            c->copying = 0;
            pqi_error_wait_failed(err, c, &rs, waited);
            return -1;
        }
        if (n == -2) {
            c->copying = 0;
            pqi_error_from_conn(err, c, PQ_CODE_CLOSED);
            return -1;
        }
        *res = copy_result(c, &rs, err);      /* n == -1: the end */
        return *res ? 0 : -1;
    }
}

void pq_free_chunk(char *chunk)
{
    PQfreemem(chunk);
}

/* ---- notifications ------------------------------------------------------ */

int pq_wait_notify(pq_conn *c, double timeout, pq_notify **n, pq_error *err)
{
    /* timeout 0 looks without waiting; past an hour's worth of slices,
     * math.huge waits for ever */
    double deadline = timeout > 0 ? pqi_deadline_after(timeout) : clock_now();

    *n = NULL;
    if (!pqi_usable(c, err))
        return -1;
    for (;;) {
        int ready;
        PGnotify *got;

        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK) {
            pqi_error_from_conn(err, c, PQ_CODE_CLOSED);
            return -1;
        }
        got = PQnotifies(c->pg);
        if (got) {
            *n = (pq_notify *)got;
            return 1;
        }
        ready = pqi_wait_fd(PQsocket(c->pg), POLLIN, deadline);
        if (ready == 0)
            return 0;
        if (ready < 0) {
            pqi_error_from_conn(err, c, PQ_CODE_CLOSED);
            return -1;
        }
    }
}

const char *pq_notify_channel(const pq_notify *n)
{
    return ((const PGnotify *)n)->relname;
}

const char *pq_notify_payload(const pq_notify *n)
{
    return ((const PGnotify *)n)->extra;
}

int pq_notify_pid(const pq_notify *n)
{
    return ((const PGnotify *)n)->be_pid;
}

void pq_notify_free(pq_notify *n)
{
    PQfreemem(n);
}
