/*
 * pq.h - the one path into libpq.
 *
 * pq.c is the only file that includes libpq-fe.h. It opens connections
 * (non-blocking, with a deadline), checks liveness without a round trip,
 * rolls back, runs statements (with an optional server-side cancel after a
 * timeout), and turns libpq's failures into a pq_error: a readable message
 * in one line, without the "ERROR:" prefix or any password, a code (SQLSTATE
 * or a fixed word) and the server's error fields.
 *
 * Deadlines are absolute times on clock_now(). A deadline that is not a
 * finite number > 0 (0, INFINITY, NaN) means no limit; a timeout (seconds)
 * that is not a finite number > 0 means none. Past its deadline a statement
 * is cancelled (the cancel itself bounded too) and, if the server answers
 * neither, the connection is given up: pq_txn_status says PQ_TXN_BROKEN.
 *
 * Server notices (RAISE NOTICE, warnings, the FATAL of a terminated backend)
 * go to the connection's notice handler, never to stderr.
 *
 * Locking: none here but the cancel helper's own (a cancel runs on a short
 * detached thread). A pq_conn is used by one thread at a time; pool.c
 * guarantees that (a connection is owned by the pool or by one checkout).
 */
#ifndef PGPOOL_PQ_H
#define PGPOOL_PQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct pq_conn pq_conn;
typedef struct pq_result pq_result;   /* a PGresult, opaque above pq.c */

/* Fixed error codes used where the server sent no SQLSTATE. */
#define PQ_CODE_TIMEOUT  "timeout"
#define PQ_CODE_CONNECT  "connect"
#define PQ_CODE_CLOSED   "closed"
#define PQ_CODE_SHUTDOWN "shutdown"
#define PQ_CODE_BUSY     "busy"
#define PQ_CODE_FULL     "full"
#define PQ_CODE_UNSUPPORTED "unsupported"   /* COPY through query/exec */

/* Index of each optional server error field in pq_error.fields. */
enum pq_field {
    PQ_FIELD_SEVERITY, PQ_FIELD_DETAIL, PQ_FIELD_HINT, PQ_FIELD_POSITION,
    PQ_FIELD_SCHEMA, PQ_FIELD_TABLE, PQ_FIELD_COLUMN, PQ_FIELD_CONSTRAINT,
    PQ_FIELD_SQLSTATE,
    PQ_FIELD_COUNT
};
extern const char *const pq_field_names[PQ_FIELD_COUNT];

typedef struct pq_error {
    char code[16];                 /* SQLSTATE or one of PQ_CODE_* */
    char message[1024];            /* never empty once set; one line */
    char fields[PQ_FIELD_COUNT][256];
    /* 1 only when the statement certainly did not run: it could not be
     * sent, or the server's termination error (57P01, 57P02, 57P03) came
     * before any answer to it. */
    int safe_to_retry;
    /* 1 when the connection failed after the statement was sent and before
     * its answer: it may or may not have run (or committed). */
    int outcome_unknown;
} pq_error;

/* Set err to a fixed-word failure (fields empty, flags 0); fmt is
 * printf-like. Returns 0. */
int pq_error_set(pq_error *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Transaction state of a connection, as far as the pool cares. */
enum pq_txn {
    PQ_TXN_IDLE,      /* ready, outside a transaction */
    PQ_TXN_INBLOCK,   /* inside a transaction block (ok or failed) */
    PQ_TXN_BUSY,      /* a command in flight or results not read */
    PQ_TXN_BROKEN     /* connection lost or state unknown */
};

/* Result status seen by the bindings. */
enum pq_status { PQ_ROWS, PQ_COMMAND, PQ_EMPTY, PQ_COPY };

/* Connect to conninfo (URI or key=value; NULL or "" uses the PG* environment),
 * adding fallback_application_name=pgpool and, unless conninfo sets them,
 * TCP keepalive defaults (keepalives_idle=30, keepalives_interval=10,
 * keepalives_count=3, tcp_user_timeout=30000). Several hosts (host=a,b
 * port=pa,pb) are tried in order, each on its own; the conninfo's
 * connect_timeout (else PGCONNECT_TIMEOUT) bounds each host, as in libpq's
 * blocking connect, deadline all of them together; target_session_attrs
 * keeps libpq's meaning (prefer-standby: a pass for a standby, then one for
 * any server). NULL and err on failure: code "connect", a one-line message
 * that never quotes the conninfo's text (a malformed conninfo is named as
 * such, with the option at fault when known) and names each server tried
 * and why ("; " between them), the last server's SQLSTATE in the fields. */
pq_conn *pq_connect(const char *conninfo, double deadline, pq_error *err);

/* Server notices of c: level is an enum pool_log_level (log.h), message
 * one line without the severity prefix. Until a handler is set (fn NULL:
 * none), notices are dropped. Called on the thread using c, inside pq_*. */
typedef void (*pq_notice_fn)(void *arg, int level, const char *message);
void pq_set_notice_handler(pq_conn *c, pq_notice_fn fn, void *arg);

/* Close cleanly (Terminate is sent). */
void pq_close(pq_conn *c);

/* In a forked child: free nothing libpq owns, send nothing, close the socket
 * descriptor only (the parent's copy keeps the session). */
void pq_abandon(pq_conn *c);

int pq_backend_pid(const pq_conn *c);

/* Cheap liveness check, no round trip: reads what the server sent while the
 * connection sat idle (a FATAL from pg_terminate_backend, EOF). 1 if usable;
 * 0 also for a connection given up after a deadline. */
int pq_is_alive(pq_conn *c);

enum pq_txn pq_txn_status(pq_conn *c);

/* ROLLBACK; 1 when the connection ends up idle and usable. Every wait ends
 * at deadline (no cancel: past it the connection is given up). */
int pq_rollback(pq_conn *c, double deadline);

/* How many connections the server allows ordinary roles: max_connections
 * less superuser_reserved_connections (both set too), in one round trip
 * ending at deadline (past it the connection is given up); -1 when the
 * server would not say. */
int pq_server_slots(pq_conn *c, double deadline, int *max_connections,
                    int *reserved);

/* Statement parameters: values[i] NULL is SQL NULL; formats[i] 1 with
 * types[i] 17 sends binary bytea; types[i] 0 lets the server infer. */
typedef struct pq_params {
    int n;
    const char *const *values;
    const int *lengths, *formats;
    const unsigned *types;
} pq_params;

/* Run sql with its parameters. timeout > 0 cancels the statement
 * server-side once it runs longer (code "timeout"); if neither the statement
 * nor the cancel is answered within 5 s more, the connection is given up.
 * cache_size > 0 runs it as a named prepared statement kept in the
 * connection's LRU of that size (inside a transaction block only with
 * cache_in_blocks: behind a pooler in transaction mode, a transaction may
 * run on a server connection where the name means nothing or is taken,
 * and the error would abort it); otherwise unnamed. The name is derived
 * from the SQL and the parameter types, so behind a pooler that shares
 * server connections the same name is the same statement: "already exists"
 * counts as prepared, and a missing or stale statement is prepared again
 * once (then run unnamed).
 * COPY fails with code "unsupported" and leaves the connection idle.
 * Returns a result to free with pq_result_free, or NULL and err. */
pq_result *pq_query(pq_conn *c, const char *sql, const pq_params *params,
                    double timeout, int cache_size, int cache_in_blocks,
                    pq_error *err);

/* One statement of a pipeline; res or err is set by pq_pipeline. */
typedef struct pq_batch_item {
    const char *sql;
    pq_params params;
    pq_result *res;
    pq_error *err;      /* allocated on failure; freed by pq_batch_clear */
} pq_batch_item;

/* Send every item in one go (libpq pipeline mode) and read the results in
 * order. sync_each: a sync after every statement, so each runs in its own
 * implicit transaction and an error affects only its statement; otherwise
 * one sync at the end: the batch is one implicit transaction, an error
 * aborts the rest (code "aborted") and rolls back the earlier ones unless an
 * explicit BEGIN was sent. Returns 1 when every result was read (items may
 * still have failed), 0 and err when the connection failed. */
int pq_pipeline(pq_conn *c, pq_batch_item *items, int count, int sync_each,
                double timeout, pq_error *err);
void pq_batch_clear(pq_batch_item *items, int count);

/* Row streams: one statement (unnamed, whatever the statement cache) whose
 * rows are read one at a time, in the memory of one row. open sends it:
 * 1 and *seq, the stream's number; 0 and err when it could not be sent.
 * next: 1 and *row (a one-row result to free with pq_result_free), 0 at
 * the end (the connection idle again), -1 and err (the stream is over: its
 * statement failed, timeout waited for one row in vain, or the stream was
 * abandoned because another statement ran on the connection). close ends
 * an open stream early: cancelled, the rest read and dropped within 5 s
 * (inside a transaction block: read and dropped, cancelled only past 5 s);
 * 0 when the connection had to be given up. Any other statement on the
 * connection abandons an open stream the same way. */
int pq_stream_open(pq_conn *c, const char *sql, const pq_params *params,
                   double timeout, uint64_t *seq, pq_error *err);
int pq_stream_next(pq_conn *c, uint64_t seq, pq_result **row, pq_error *err);
/* seq 0: whichever, cancelled even inside a transaction block (the
 * release, which rolls that back) */
int pq_stream_close(pq_conn *c, uint64_t seq);

/* COPY, a chunk at a time. begin sends sql, which must be a COPY ... FROM
 * STDIN (PQ_COPY_IN) or TO STDOUT (PQ_COPY_OUT): 1 when the server is
 * ready for it, else 0 and err (its error, or code "unsupported" for
 * another statement; the connection idle again). Then for COPY IN, put
 * each chunk (1, or 0 and err) and end: the final result (affected = rows)
 * or NULL and err (the server's, for a bad row: nothing copied); an
 * abort_reason makes the server refuse the COPY with it. For COPY OUT, get
 * each chunk: 1 and *chunk (*len bytes, to free with pq_free_chunk), 0 at
 * the end with *res, -1 and err. timeout bounds each wait (the statement
 * is then cancelled). abort ends a COPY early, the connection idle again
 * (0 when it had to be given up); any other statement run meanwhile does
 * it first. */
enum { PQ_COPY_IN = 1, PQ_COPY_OUT = 2 };
int pq_copy_begin(pq_conn *c, const char *sql, int direction, double timeout,
                  pq_error *err);
int pq_copy_put(pq_conn *c, const char *data, size_t len, pq_error *err);
pq_result *pq_copy_end(pq_conn *c, const char *abort_reason, pq_error *err);
int pq_copy_get(pq_conn *c, char **chunk, int *len, pq_result **res,
                pq_error *err);
void pq_free_chunk(char *chunk);
int pq_copy_abort(pq_conn *c);

/* Notifications (LISTEN/NOTIFY) that arrived on c: 1 and *n (free with
 * pq_notify_free), waiting up to timeout seconds (0: only what has
 * arrived; math.huge: no limit); 0 when none came; -1 and err when the
 * connection failed. */
typedef struct pq_notify pq_notify;
int pq_wait_notify(pq_conn *c, double timeout, pq_notify **n, pq_error *err);
const char *pq_notify_channel(const pq_notify *n);
const char *pq_notify_payload(const pq_notify *n);
int pq_notify_pid(const pq_notify *n);
void pq_notify_free(pq_notify *n);

/* Run a script of several statements (simple protocol). 1 on success. */
int pq_exec(pq_conn *c, const char *script, double timeout, pq_error *err);

/* Result accessors (the bindings never see libpq). */
void pq_result_free(pq_result *r);
enum pq_status pq_result_status(const pq_result *r);
int pq_result_rows(const pq_result *r);
int pq_result_cols(const pq_result *r);
const char *pq_result_colname(const pq_result *r, int col);
unsigned pq_result_coltype(const pq_result *r, int col);
/* NULL for SQL NULL; *len set to the value's length. */
const char *pq_result_value(const pq_result *r, int row, int col, size_t *len);
const char *pq_result_command(pq_result *r);   /* "INSERT 0 1" */
const char *pq_result_affected(pq_result *r);  /* "1" or "" */

/* Quoting helpers; the returned string is freed with pq_freemem. NULL and err
 * on failure (invalid encoding). */
char *pq_escape_literal(pq_conn *c, const char *s, size_t len, pq_error *err);
char *pq_escape_identifier(pq_conn *c, const char *s, size_t len, pq_error *err);
void pq_freemem(void *p);

#endif
