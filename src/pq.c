/*
 * pq.c - the only file that calls libpq.
 *
 * Owns: opening a connection without blocking past a deadline, the liveness
 * check, rollback, statement execution with an optional server-side cancel,
 * and the translation of libpq failures into pq_error.
 *
 * Invariants:
 *  - every PGresult is PQclear'ed on every path (or handed out as pq_result);
 *  - every PGconn ends in PQfinish, except in a forked child (pq_abandon);
 *  - a message never contains the connection's password.
 *
 * Locking: none. One thread uses a pq_conn at a time (pool.c ensures it).
 */
#define _POSIX_C_SOURCE 200809L
#include "pq.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "clock.h"

/* A named prepared statement in the connection's cache (statement_cache).
 * Keyed by the SQL text and which parameters are binary bytea. */
typedef struct pq_stmt {
    uint64_t hash;
    char *key;                   /* sql, NUL, one byte per parameter type */
    size_t key_len;
    char name[32];
    struct pq_stmt *chain;       /* hash bucket */
    struct pq_stmt *newer, *older;   /* LRU list */
} pq_stmt;

#define STMT_BUCKETS 256

struct pq_conn {
    PGconn *pg;
    PGcancel *cancel;
    int backend_pid;
    int fatal_seen;              /* the server sent a FATAL while idle */
    int n_stmts;
    uint64_t stmt_serial;
    pq_stmt *newest, *oldest;
    pq_stmt *buckets[STMT_BUCKETS];
    char *to_deallocate;         /* "DEALLOCATE a;DEALLOCATE b;" not yet sent */
    size_t to_deallocate_len;
};

const char *const pq_field_names[PQ_FIELD_COUNT] = {
    "severity", "detail", "hint", "position",
    "schema", "table", "column", "constraint", "sqlstate",
};

static const int pq_field_codes[PQ_FIELD_COUNT] = {
    PG_DIAG_SEVERITY, PG_DIAG_MESSAGE_DETAIL, PG_DIAG_MESSAGE_HINT,
    PG_DIAG_STATEMENT_POSITION, PG_DIAG_SCHEMA_NAME, PG_DIAG_TABLE_NAME,
    PG_DIAG_COLUMN_NAME, PG_DIAG_CONSTRAINT_NAME, PG_DIAG_SQLSTATE,
};

/* ---- errors ------------------------------------------------------------ */

static void copy_text(char *dst, size_t size, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= size)
        n = size - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Drop a trailing newline and a leading "ERROR:  " / "FATAL:  " severity. */
static void tidy_message(char *msg)
{
    static const char *const prefixes[] = {
        "ERROR:", "FATAL:", "PANIC:", "WARNING:", NULL,
    };
    size_t n;
    int i;

    for (i = 0; prefixes[i]; i++) {
        size_t plen = strlen(prefixes[i]);
        if (strncmp(msg, prefixes[i], plen) == 0) {
            const char *rest = msg + plen;
            while (*rest == ' ')
                rest++;
            memmove(msg, rest, strlen(rest) + 1);
            break;
        }
    }
    n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
}

/* Replace every occurrence of secret in msg (of buffer size) with "***". */
static void redact(char *msg, size_t size, const char *secret)
{
    size_t slen = secret ? strlen(secret) : 0;
    char *from = msg, *hit;

    if (!slen)
        return;
    while ((hit = strstr(from, secret)) != NULL) {
        if (strlen(msg) + 1 - slen + 3 > size)
            break;
        memmove(hit + 3, hit + slen, strlen(hit + slen) + 1);
        memcpy(hit, "***", 3);
        from = hit + 3;
    }
}

int pq_error_set(pq_error *err, const char *code, const char *fmt, ...)
{
    va_list ap;
    int i;

    copy_text(err->code, sizeof err->code, code);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    if (!err->message[0])
        copy_text(err->message, sizeof err->message, code);
    for (i = 0; i < PQ_FIELD_COUNT; i++)
        err->fields[i][0] = '\0';
    return 0;
}

/* Fill err from the connection's last failure (no result available). */
static void error_from_conn(pq_error *err, PGconn *pg, const char *code)
{
    char *msg = pg ? PQerrorMessage(pg) : NULL;
    pq_error_set(err, code, "%s", msg && *msg ? msg : "connection failed");
    tidy_message(err->message);
    if (!err->message[0])
        copy_text(err->message, sizeof err->message, "connection lost");
    if (pg)
        redact(err->message, sizeof err->message, PQpass(pg));
}

/* Fill err from an error result; code is the SQLSTATE when there is one. */
static void error_from_result(pq_error *err, PGconn *pg, const PGresult *res)
{
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int i;

    if (primary && *primary) {
        pq_error_set(err, PQ_CODE_CLOSED, "%s", primary);
    } else {
        const char *msg = PQresultErrorMessage(res);
        if (!msg || !*msg)
            msg = PQerrorMessage(pg);
        pq_error_set(err, PQ_CODE_CLOSED, "%s",
                     msg && *msg ? msg : "server closed the connection");
        tidy_message(err->message);
        if (!err->message[0])
            copy_text(err->message, sizeof err->message,
                      "server closed the connection");
    }
    if (sqlstate && *sqlstate)
        copy_text(err->code, sizeof err->code, sqlstate);
    else if (PQstatus(pg) != CONNECTION_BAD)
        copy_text(err->code, sizeof err->code, PQ_CODE_CLOSED);
    for (i = 0; i < PQ_FIELD_COUNT; i++)
        copy_text(err->fields[i], sizeof err->fields[i],
                  PQresultErrorField(res, pq_field_codes[i]));
    redact(err->message, sizeof err->message, PQpass(pg));
}

/* ---- connecting -------------------------------------------------------- */

/* Wait until fd is ready for events or the deadline passes. 1 ready, 0 time
 * out, -1 error. deadline <= 0 waits without limit. */
static int wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        struct pollfd pfd;
        int timeout_ms = -1, rc;

        if (deadline > 0) {
            double left = deadline - clock_now();
            if (left <= 0)
                return 0;
            timeout_ms = (int)(left * 1000.0) + 1;
        }
        pfd.fd = fd;
        pfd.events = events;
        pfd.revents = 0;
        rc = poll(&pfd, 1, timeout_ms);
        if (rc > 0)
            return 1;
        if (rc == 0) {
            if (deadline > 0 && clock_now() >= deadline)
                return 0;
            continue;
        }
        if (errno != EINTR)
            return -1;
    }
}

/* Notices: libpq hands an ErrorResponse that arrives on an idle connection
 * (the FATAL of pg_terminate_backend, say) to the notice receiver. Remember
 * a FATAL; drop the rest rather than print them on stderr. */
static void on_notice(void *arg, const PGresult *res)
{
    pq_conn *c = (pq_conn *)arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (severity && (strcmp(severity, "FATAL") == 0 ||
                     strcmp(severity, "PANIC") == 0))
        c->fatal_seen = 1;
}

/* The password in a conninfo string, found by hand so that it can be kept out
 * of messages even when libpq cannot parse the string: "user:PASSWORD@" of
 * a URI, or "password=VALUE" (quoted or not) of key=value. */
static void conninfo_password(const char *conninfo, char *buf, size_t size)
{
    const char *p, *end;
    size_t n;

    buf[0] = '\0';
    if (!conninfo)
        return;
    p = strstr(conninfo, "://");
    if (p) {
        const char *at, *slash, *colon;
        p += 3;
        at = strchr(p, '@');
        slash = strchr(p, '/');
        if (!at || (slash && slash < at))
            return;
        colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return;
        p = colon + 1;
        end = at;
    } else {
        p = strstr(conninfo, "password");
        if (!p)
            return;
        p += 8;
        while (*p == ' ')
            p++;
        if (*p != '=')
            return;
        p++;
        while (*p == ' ')
            p++;
        if (*p == '\'') {
            p++;
            end = strchr(p, '\'');
            if (!end)
                end = p + strlen(p);
        } else {
            end = p;
            while (*end && *end != ' ')
                end++;
        }
    }
    n = (size_t)(end - p);
    if (n >= size)
        n = size - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
}

/* A failed attempt: the message, without the password, then PQfinish. */
static void connect_failed(pq_error *err, PGconn *pg, const char *conninfo)
{
    char password[256];
    error_from_conn(err, pg, PQ_CODE_CONNECT);
    conninfo_password(conninfo, password, sizeof password);
    redact(err->message, sizeof err->message, password);
    PQfinish(pg);
}

pq_conn *pq_connect(const char *conninfo, double deadline, pq_error *err)
{
    const char *keywords[] = { "dbname", "fallback_application_name", NULL };
    const char *values[] = { conninfo && *conninfo ? conninfo : NULL,
                             "pgpool", NULL };
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    PGconn *pg;
    pq_conn *c;

    /* With no conninfo, skip the dbname slot so the PG* environment rules. */
    pg = values[0] ? PQconnectStartParams(keywords, values, 1)
                   : PQconnectStartParams(keywords + 1, values + 1, 0);
    if (!pg) {
        pq_error_set(err, PQ_CODE_CONNECT, "out of memory");
        return NULL;
    }
    if (PQstatus(pg) == CONNECTION_BAD) {
        connect_failed(err, pg, conninfo);
        return NULL;
    }
    while (st != PGRES_POLLING_OK) {
        int ready;
        if (st == PGRES_POLLING_FAILED) {
            connect_failed(err, pg, conninfo);
            return NULL;
        }
        ready = wait_fd(PQsocket(pg),
                        st == PGRES_POLLING_READING ? POLLIN : POLLOUT,
                        deadline);
        if (ready == 0) {
            pq_error_set(err, PQ_CODE_CONNECT,
                         "could not connect: timed out");
            PQfinish(pg);
            return NULL;
        }
        st = PQconnectPoll(pg);
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        PQfinish(pg);
        pq_error_set(err, PQ_CODE_CONNECT, "out of memory");
        return NULL;
    }
    c->pg = pg;
    c->cancel = PQgetCancel(pg);
    c->backend_pid = PQbackendPID(pg);
    PQsetNoticeReceiver(pg, on_notice, c);
    return c;
}

static void stmt_free_all(pq_conn *c)
{
    pq_stmt *st = c->newest;
    while (st) {
        pq_stmt *older = st->older;
        free(st->key);
        free(st);
        st = older;
    }
    c->newest = c->oldest = NULL;
    c->n_stmts = 0;
    memset(c->buckets, 0, sizeof c->buckets);
    free(c->to_deallocate);
    c->to_deallocate = NULL;
    c->to_deallocate_len = 0;
}

void pq_close(pq_conn *c)
{
    if (!c)
        return;
    stmt_free_all(c);
    if (c->cancel)
        PQfreeCancel(c->cancel);
    PQfinish(c->pg);
    free(c);
}

void pq_abandon(pq_conn *c)
{
    int fd;
    if (!c)
        return;
    fd = PQsocket(c->pg);
    if (fd >= 0)
        close(fd);
    /* The PGconn and PGcancel are leaked on purpose: freeing them would make
     * libpq write a Terminate on the parent's session. */
    stmt_free_all(c);
    free(c);
}

int pq_backend_pid(const pq_conn *c)
{
    return c->backend_pid;
}

/* ---- state ------------------------------------------------------------- */

static void drop_notifications(PGconn *pg)
{
    PGnotify *n;
    while ((n = PQnotifies(pg)) != NULL)
        PQfreemem(n);
}

int pq_is_alive(pq_conn *c)
{
    int reads;

    /* Read whatever arrived while the connection sat idle: a notice, a
     * notification, the FATAL of a terminated backend and then EOF. libpq
     * notices EOF only on a read that returns nothing, hence the loop. */
    for (reads = 0; reads < 4; reads++) {
        struct pollfd pfd;
        int rc;

        if (PQstatus(c->pg) != CONNECTION_OK || c->fatal_seen)
            return 0;
        pfd.fd = PQsocket(c->pg);
        pfd.events = POLLIN;
        pfd.revents = 0;
        do {
            rc = poll(&pfd, 1, 0);
        } while (rc < 0 && errno == EINTR);
        if (rc < 0)
            return 0;
        if (rc == 0)
            break;
        if (!PQconsumeInput(c->pg))
            return 0;
        drop_notifications(c->pg);
        if (PQisBusy(c->pg))
            return 0;
    }
    return PQstatus(c->pg) == CONNECTION_OK && !c->fatal_seen;
}

enum pq_txn pq_txn_status(pq_conn *c)
{
    if (PQstatus(c->pg) != CONNECTION_OK)
        return PQ_TXN_BROKEN;
    switch (PQtransactionStatus(c->pg)) {
    case PQTRANS_IDLE:
        return PQ_TXN_IDLE;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR:
        return PQ_TXN_INBLOCK;
    case PQTRANS_ACTIVE:
        return PQ_TXN_BUSY;
    default:
        return PQ_TXN_BROKEN;
    }
}

/* ---- statements -------------------------------------------------------- */

/* Ask the server to cancel the running statement. */
static void send_cancel(pq_conn *c)
{
    char buf[256];
    if (c->cancel)
        PQcancel(c->cancel, buf, sizeof buf);
}

/* How long to wait for the server's answer to a cancel before giving the
 * connection up as broken. */
#define CANCEL_GRACE 5.0

/* The deadline of a statement (0: none) and whether it was cancelled. */
typedef struct deadline_state {
    double deadline;
    int cancelled;
} deadline_state;

/*
 * Wait until libpq holds a whole result (PQisBusy false). Past the deadline,
 * send a cancel once and allow CANCEL_GRACE more. Returns 1, or 0 when the
 * connection failed, or -1 when the server did not answer the cancel.
 */
static int await_result(pq_conn *c, deadline_state *ds)
{
    while (PQisBusy(c->pg)) {
        int ready = wait_fd(PQsocket(c->pg), POLLIN, ds->deadline);
        if (ready == 0) {
            if (ds->cancelled)
                return -1;
            send_cancel(c);
            ds->cancelled = 1;
            ds->deadline = clock_now() + CANCEL_GRACE;
            continue;
        }
        if (ready < 0 || !PQconsumeInput(c->pg))
            return 0;
    }
    return 1;
}

/* Why await_result gave up: the connection failed (0), or the server left a
 * cancel unanswered (-1), which leaves the connection busy: its release
 * closes it. */
static void error_wait_failed(pq_error *err, pq_conn *c, int waited)
{
    if (waited < 0)
        pq_error_set(err, PQ_CODE_TIMEOUT,
                     "query timeout, and no answer from the server %g s after "
                     "the cancel: the connection is given up", CANCEL_GRACE);
    else
        error_from_conn(err, c->pg, PQ_CODE_CLOSED);
}

/*
 * Read every result of the statement just sent. Keeps the first error (or
 * the last success) and frees the rest. When deadline passes, sends a
 * cancel once and keeps reading; *timed_out tells the caller.
 */
static PGresult *collect_results(pq_conn *c, double deadline, int *timed_out,
                                 pq_error *err)
{
    PGresult *kept = NULL, *res;
    deadline_state ds;

    ds.deadline = deadline;
    ds.cancelled = 0;
    for (;;) {
        int ok = await_result(c, &ds);
        *timed_out = ds.cancelled;
        if (ok <= 0) {
            PQclear(kept);
            error_wait_failed(err, c, ok);
            return NULL;
        }
        res = PQgetResult(c->pg);
        if (!res)
            break;
        if (kept && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
            PQclear(res);
        } else {
            PQclear(kept);
            kept = res;
        }
        if (PQstatus(c->pg) == CONNECTION_BAD)
            break;
    }
    if (!kept)
        error_from_conn(err, c->pg, PQ_CODE_CLOSED);
    return kept;
}

/* Turn a finished PGresult into success (returned) or err (NULL). */
static pq_result *check_result(pq_conn *c, PGresult *res, int timed_out,
                               double timeout, pq_error *err)
{
    switch (PQresultStatus(res)) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
    case PGRES_SINGLE_TUPLE:
        return (pq_result *)res;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        PQclear(res);
        pq_error_set(err, PQ_CODE_BUSY, "COPY is not supported by query");
        return NULL;
    default:
        error_from_result(err, c->pg, res);
        PQclear(res);
        if (timed_out && strcmp(err->code, "57014") == 0) {
            char msg[sizeof err->message];
            copy_text(msg, sizeof msg, err->message);
            snprintf(err->message, sizeof err->message,
                     "query timeout after %g s (%.900s)", timeout, msg);
            copy_text(err->code, sizeof err->code, PQ_CODE_TIMEOUT);
        }
        return NULL;
    }
}

/* Run one statement, unnamed (name NULL) or prepared, and read its result. */
static PGresult *run_statement(pq_conn *c, const char *name, const char *sql,
                               const pq_params *pp, double timeout,
                               int *timed_out, pq_error *err)
{
    PGresult *res;
    int sent;

    *timed_out = 0;
    if (timeout <= 0) {
        /* The plain path: exactly what a direct libpq user would call. */
        res = name ? PQexecPrepared(c->pg, name, pp->n, pp->values,
                                    pp->lengths, pp->formats, 0)
                   : PQexecParams(c->pg, sql, pp->n, (const Oid *)pp->types,
                                  pp->values, pp->lengths, pp->formats, 0);
        if (!res)
            error_from_conn(err, c->pg, PQ_CODE_CLOSED);
        return res;
    }
    sent = name ? PQsendQueryPrepared(c->pg, name, pp->n, pp->values,
                                      pp->lengths, pp->formats, 0)
                : PQsendQueryParams(c->pg, sql, pp->n, (const Oid *)pp->types,
                                    pp->values, pp->lengths, pp->formats, 0);
    if (!sent) {
        error_from_conn(err, c->pg, PQ_CODE_CLOSED);
        return NULL;
    }
    return collect_results(c, clock_now() + timeout, timed_out, err);
}

/* ---- statement cache --------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The cache key: the SQL, a NUL, then 'b' or '-' per parameter. */
static char *stmt_key(const char *sql, const pq_params *pp, size_t *len)
{
    size_t sql_len = strlen(sql);
    char *key = malloc(sql_len + 1 + (size_t)pp->n);
    int i;
    if (!key)
        return NULL;
    memcpy(key, sql, sql_len + 1);
    for (i = 0; i < pp->n; i++)
        key[sql_len + 1 + (size_t)i] = pp->types && pp->types[i] ? 'b' : '-';
    *len = sql_len + 1 + (size_t)pp->n;
    return key;
}

static void stmt_unlink(pq_conn *c, pq_stmt *st)
{
    pq_stmt **link = &c->buckets[st->hash % STMT_BUCKETS];
    while (*link != st)
        link = &(*link)->chain;
    *link = st->chain;
    if (st->newer)
        st->newer->older = st->older;
    else
        c->newest = st->older;
    if (st->older)
        st->older->newer = st->newer;
    else
        c->oldest = st->newer;
    c->n_stmts--;
}

static void stmt_push_newest(pq_conn *c, pq_stmt *st)
{
    st->newer = NULL;
    st->older = c->newest;
    if (c->newest)
        c->newest->newer = st;
    else
        c->oldest = st;
    c->newest = st;
}

/* Send the DEALLOCATEs of dropped statements, in one round trip, once the
 * connection is outside a transaction block: there a failure (the user ran
 * DEALLOCATE ALL, say) cannot abort the user's transaction. */
static void deallocate_dropped(pq_conn *c)
{
    if (!c->to_deallocate || PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        return;
    PQclear(PQexec(c->pg, c->to_deallocate));
    free(c->to_deallocate);
    c->to_deallocate = NULL;
    c->to_deallocate_len = 0;
}

/* Forget a statement; with deallocate, also on the server (now or, inside
 * a transaction block, once it ends). */
static void stmt_drop(pq_conn *c, pq_stmt *st, int deallocate)
{
    stmt_unlink(c, st);
    if (deallocate) {
        char sql[64];
        size_t n = (size_t)snprintf(sql, sizeof sql, "DEALLOCATE %s;", st->name);
        char *grown = realloc(c->to_deallocate, c->to_deallocate_len + n + 1);
        if (grown) {
            memcpy(grown + c->to_deallocate_len, sql, n + 1);
            c->to_deallocate = grown;
            c->to_deallocate_len += n;
        }
    }
    free(st->key);
    free(st);
}

/* The cached statement for sql, prepared now if needed; NULL and err when
 * preparing failed. */
static pq_stmt *stmt_get(pq_conn *c, const char *sql, const pq_params *pp,
                         int cache_size, double timeout, pq_error *err)
{
    size_t len;
    char *key = stmt_key(sql, pp, &len);
    uint64_t hash;
    pq_stmt *st;
    PGresult *res;
    int timed_out;

    if (!key) {
        pq_error_set(err, PQ_CODE_BUSY, "out of memory");
        return NULL;
    }
    hash = fnv1a(key, len);
    for (st = c->buckets[hash % STMT_BUCKETS]; st; st = st->chain) {
        if (st->hash == hash && st->key_len == len &&
            memcmp(st->key, key, len) == 0) {
            free(key);
            if (c->newest != st) {       /* most recently used first */
                if (st->newer)
                    st->newer->older = st->older;
                if (st->older)
                    st->older->newer = st->newer;
                else
                    c->oldest = st->newer;
                stmt_push_newest(c, st);
            }
            return st;
        }
    }
    while (c->n_stmts >= cache_size && c->oldest)
        stmt_drop(c, c->oldest, 1);
    deallocate_dropped(c);
    st = calloc(1, sizeof *st);
    if (!st) {
        free(key);
        pq_error_set(err, PQ_CODE_BUSY, "out of memory");
        return NULL;
    }
    snprintf(st->name, sizeof st->name, "pgpool_%llu",
             (unsigned long long)++c->stmt_serial);
    if (timeout <= 0) {
        res = PQprepare(c->pg, st->name, sql, pp->n, (const Oid *)pp->types);
        if (!res)
            error_from_conn(err, c->pg, PQ_CODE_CLOSED);
        timed_out = 0;
    } else if (PQsendPrepare(c->pg, st->name, sql, pp->n,
                             (const Oid *)pp->types)) {
        res = collect_results(c, clock_now() + timeout, &timed_out, err);
    } else {
        error_from_conn(err, c->pg, PQ_CODE_CLOSED);
        res = NULL;
    }
    if (!res || !check_result(c, res, timed_out, timeout, err)) {
        free(key);
        free(st);
        return NULL;
    }
    PQclear(res);
    st->key = key;
    st->key_len = len;
    st->hash = hash;
    st->chain = c->buckets[hash % STMT_BUCKETS];
    c->buckets[hash % STMT_BUCKETS] = st;
    stmt_push_newest(c, st);
    c->n_stmts++;
    return st;
}

/* The server no longer has the statement, or its plan went stale. */
static int stmt_is_stale(const pq_error *err)
{
    return strcmp(err->code, "0A000") == 0 || strcmp(err->code, "26000") == 0;
}

pq_result *pq_query(pq_conn *c, const char *sql, const pq_params *params,
                    double timeout, int cache_size, pq_error *err)
{
    PGresult *res;
    pq_result *ok;
    pq_stmt *st = NULL;
    int timed_out, attempt;

    if (c->to_deallocate)
        deallocate_dropped(c);
    for (attempt = 0; attempt < 2; attempt++) {
        if (cache_size > 0) {
            st = stmt_get(c, sql, params, cache_size, timeout, err);
            if (!st)
                return NULL;
        }
        res = run_statement(c, st ? st->name : NULL, sql, params, timeout,
                            &timed_out, err);
        if (!res)
            return NULL;
        ok = check_result(c, res, timed_out, timeout, err);
        if (ok || !st || !stmt_is_stale(err))
            return ok;
        /* Stale or missing: forget it and, outside a transaction block
         * (where the failed statement aborted nothing), prepare it again. */
        stmt_drop(c, st, strcmp(err->code, "0A000") == 0);
        if (PQtransactionStatus(c->pg) != PQTRANS_IDLE)
            return NULL;
    }
    return NULL;
}

int pq_exec(pq_conn *c, const char *script, double timeout, pq_error *err)
{
    PGresult *res;
    pq_result *ok;
    int timed_out = 0;

    if (!PQsendQuery(c->pg, script)) {
        error_from_conn(err, c->pg, PQ_CODE_CLOSED);
        return 0;
    }
    res = collect_results(c, timeout > 0 ? clock_now() + timeout : 0,
                          &timed_out, err);
    if (!res)
        return 0;
    ok = check_result(c, res, timed_out, timeout, err);
    if (!ok)
        return 0;
    PQclear((PGresult *)ok);
    return 1;
}

/* ---- pipelines --------------------------------------------------------- */

static void item_fail(pq_batch_item *item, PGconn *pg, const PGresult *res,
                      const char *code, const char *message)
{
    if (item->err)
        return;
    item->err = malloc(sizeof *item->err);
    if (!item->err)
        return;
    if (res)
        error_from_result(item->err, pg, res);
    else
        pq_error_set(item->err, code, "%s", message);
}

/* Send what libpq has buffered, reading meanwhile so that neither side
 * blocks on a full socket. 1 once everything is sent. */
static int flush_all(pq_conn *c, double deadline)
{
    int pending;
    while ((pending = PQflush(c->pg)) == 1) {
        int ready = wait_fd(PQsocket(c->pg), POLLIN | POLLOUT, deadline);
        if (ready <= 0 || !PQconsumeInput(c->pg))
            return 0;
    }
    return pending == 0;
}

int pq_pipeline(pq_conn *c, pq_batch_item *items, int count, int sync_each,
                double timeout, pq_error *err)
{
    deadline_state ds;
    int i, syncs = 0, syncs_seen = 0, current = 0, got_result = 0, ok = 1;

    ds.deadline = timeout > 0 ? clock_now() + timeout : 0;
    ds.cancelled = 0;

    if (count == 0)
        return 1;
    if (!PQenterPipelineMode(c->pg) || PQsetnonblocking(c->pg, 1) != 0) {
        error_from_conn(err, c->pg, PQ_CODE_BUSY);
        PQexitPipelineMode(c->pg);
        return 0;
    }
    for (i = 0; i < count && ok; i++) {
        const pq_params *pp = &items[i].params;
        ok = PQsendQueryParams(c->pg, items[i].sql, pp->n,
                               (const Oid *)pp->types, pp->values, pp->lengths,
                               pp->formats, 0);
        if (ok && (sync_each || i == count - 1)) {
            ok = PQpipelineSync(c->pg);
            syncs++;
        }
    }
    if (!ok || !flush_all(c, ds.deadline)) {
        error_from_conn(err, c->pg, PQ_CODE_CLOSED);
        return 0;
    }
    while (syncs_seen < syncs) {
        PGresult *res;
        int waited = await_result(c, &ds);
        if (waited <= 0) {
            error_wait_failed(err, c, waited);
            return 0;
        }
        res = PQgetResult(c->pg);
        if (!res) {              /* the end of one statement's results */
            if (got_result && current < count)
                current++;
            got_result = 0;
            continue;
        }
        switch (PQresultStatus(res)) {
        case PGRES_PIPELINE_SYNC:
            syncs_seen++;
            PQclear(res);
            break;
        case PGRES_PIPELINE_ABORTED:
            if (current < count)
                item_fail(&items[current], c->pg, NULL, "aborted",
                          "not run: an earlier statement of the pipeline "
                          "failed");
            got_result = 1;
            PQclear(res);
            break;
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
            if (current < count && !items[current].res && !items[current].err)
                items[current].res = (pq_result *)res;
            else
                PQclear(res);
            got_result = 1;
            break;
        default:
            if (current < count)
                item_fail(&items[current], c->pg, res, PQ_CODE_CLOSED, "");
            got_result = 1;
            PQclear(res);
            if (PQstatus(c->pg) == CONNECTION_BAD) {
                error_from_conn(err, c->pg, PQ_CODE_CLOSED);
                return 0;
            }
        }
    }
    PQexitPipelineMode(c->pg);
    PQsetnonblocking(c->pg, 0);
    if (ds.cancelled)
        for (i = 0; i < count; i++)
            if (items[i].err && strcmp(items[i].err->code, "57014") == 0)
                copy_text(items[i].err->code, sizeof items[i].err->code,
                          PQ_CODE_TIMEOUT);
    return 1;
}

void pq_batch_clear(pq_batch_item *items, int count)
{
    int i;
    for (i = 0; i < count; i++) {
        PQclear((PGresult *)items[i].res);
        free(items[i].err);
        items[i].res = NULL;
        items[i].err = NULL;
    }
}

int pq_rollback(pq_conn *c, double deadline)
{
    PGresult *res;
    int timed_out;
    pq_error err;

    if (!PQsendQuery(c->pg, "ROLLBACK"))
        return 0;
    res = collect_results(c, deadline, &timed_out, &err);
    if (!res)
        return 0;
    PQclear(res);
    return !timed_out && pq_txn_status(c) == PQ_TXN_IDLE;
}

/* ---- results ----------------------------------------------------------- */

void pq_result_free(pq_result *r)
{
    PQclear((PGresult *)r);
}

enum pq_status pq_result_status(const pq_result *r)
{
    switch (PQresultStatus((const PGresult *)r)) {
    case PGRES_TUPLES_OK:
    case PGRES_SINGLE_TUPLE:
        return PQ_ROWS;
    case PGRES_EMPTY_QUERY:
        return PQ_EMPTY;
    default:
        return PQ_COMMAND;
    }
}

int pq_result_rows(const pq_result *r)
{
    return PQntuples((const PGresult *)r);
}

int pq_result_cols(const pq_result *r)
{
    return PQnfields((const PGresult *)r);
}

const char *pq_result_colname(const pq_result *r, int col)
{
    return PQfname((const PGresult *)r, col);
}

unsigned pq_result_coltype(const pq_result *r, int col)
{
    return PQftype((const PGresult *)r, col);
}

const char *pq_result_value(const pq_result *r, int row, int col, size_t *len)
{
    const PGresult *res = (const PGresult *)r;
    if (PQgetisnull(res, row, col))
        return NULL;
    *len = (size_t)PQgetlength(res, row, col);
    return PQgetvalue(res, row, col);
}

const char *pq_result_command(pq_result *r)
{
    return PQcmdStatus((PGresult *)r);
}

const char *pq_result_affected(pq_result *r)
{
    return PQcmdTuples((PGresult *)r);
}

/* ---- quoting ----------------------------------------------------------- */

static char *escape_with(char *(*fn)(PGconn *, const char *, size_t),
                         pq_conn *c, const char *s, size_t len, pq_error *err)
{
    char *out = fn(c->pg, s, len);
    if (!out) {
        error_from_conn(err, c->pg, "22021");
        copy_text(err->code, sizeof err->code, "22021");
    }
    return out;
}

char *pq_escape_literal(pq_conn *c, const char *s, size_t len, pq_error *err)
{
    return escape_with(PQescapeLiteral, c, s, len, err);
}

char *pq_escape_identifier(pq_conn *c, const char *s, size_t len,
                           pq_error *err)
{
    return escape_with(PQescapeIdentifier, c, s, len, err);
}

void pq_freemem(void *p)
{
    PQfreemem(p);
}
