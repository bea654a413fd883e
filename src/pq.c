/*
 * pq.c - the libpq layer's core (with pq_stream.c, the only files that
 * call libpq; pq_internal.h is what they share).
 *
 * Owns: opening a connection without blocking past a deadline (each host
 * of a multi-host conninfo on its own, within its connect_timeout), the
 * liveness check, rollback, statement execution with a bounded server-side
 * cancel, the statement cache, pipelines, server notices, ending a stream
 * or COPY left open, and the translation of libpq failures into pq_error.
 *
 * Invariants:
 *  - every PGresult is PQclear'ed on every path (or handed out as pq_result);
 *  - every PGconn ends in PQfinish, except in a forked child (pq_abandon);
 *  - a message never contains the connection's password, nor any text of a
 *    conninfo that libpq could not parse;
 *  - every wait ends at its deadline: the socket is non-blocking once
 *    connected, and a cancel runs on its own thread, waited for only until
 *    the statement's deadline; a connection whose deadline passed with the
 *    statement or its cancel unanswered is marked broken, never reused;
 *  - a double becomes an int or time_t only clamped to an hour ahead
 *    (poll_ms, settle_cancel).
 *
 * Locking: none on a pq_conn (one thread uses it at a time; pool.c ensures
 * it). A cancel job has its own mutex, shared by the waiter and the cancel
 * thread; cancels_in_flight is an atomic counter. Neither is held across
 * anything that blocks.
 */
#define _POSIX_C_SOURCE 200809L
#include "pq.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "clock.h"
#include "log.h"
#include "pq_internal.h"

/* A named prepared statement in the connection's cache (statement_cache).
 * Keyed by the SQL text and which parameters are binary bytea; its name is
 * derived from the same key (stmt_name). */
struct pq_stmt {
    uint64_t hash;
    char *key;                   /* sql, NUL, one byte per parameter type */
    size_t key_len;
    char name[64];
    struct pq_stmt *chain;       /* hash bucket */
    struct pq_stmt *newer, *older;   /* LRU list */
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

/* Skip a leading severity ("ERROR:  ", "FATAL:  ", localized too: a word
 * followed by ":  ") and the SQLSTATE that verbose messages put after it
 * ("28P01: "). With sqlstate non-NULL, the SQLSTATE found is copied there. */
static const char *skip_severity(const char *msg, char sqlstate[6])
{
    const char *p = msg, *colon = strstr(msg, ":  ");
    int i;

    if (colon && colon > msg && colon - msg <= 16) {
        for (p = msg; p < colon && *p != ' '; p++)
            ;
        p = p == colon ? colon + 3 : msg;
    }
    for (i = 0; i < 5; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'Z')))
            break;
    if (p != msg && i == 5 && p[5] == ':' && p[6] == ' ') {
        if (sqlstate) {
            memcpy(sqlstate, p, 5);
            sqlstate[5] = '\0';
        }
        p += 7;
    }
    return p;
}

/* The first line of msg, without a severity prefix or trailing blanks. */
static void first_line(char *dst, size_t size, const char *msg)
{
    size_t n;
    msg = skip_severity(msg, NULL);
    n = strcspn(msg, "\r\n");
    if (n >= size)
        n = size - 1;
    memcpy(dst, msg, n);
    dst[n] = '\0';
    while (n && dst[n - 1] == ' ')
        dst[--n] = '\0';
}

/* Replace every newline of msg with a space. */
static void flatten(char *msg)
{
    for (; *msg; msg++)
        if (*msg == '\n' || *msg == '\r' || *msg == '\t')
            *msg = ' ';
}

/* Replace every occurrence of secret in msg (of buffer size) with "***". */
static void redact(char *msg, size_t size, const char *secret)
{
    size_t slen = secret ? strlen(secret) : 0;
    char *from = msg, *hit;

    if (!slen)
        return;
    while ((hit = strstr(from, secret)) != NULL) {
        if (strlen(msg) + 1 - slen + 3 > size) {
            /* no room for "***" in place of a shorter secret: stars of
             * its own length, so that it is never left as it was */
            memset(hit, '*', slen);
            from = hit + slen;
            continue;
        }
        memmove(hit + 3, hit + slen, strlen(hit + slen) + 1);
        memcpy(hit, "***", 3);
        from = hit + 3;
    }
}

/* Keep every password c knows of out of err. */
static void redact_error(pq_error *err, pq_conn *c)
{
    int i;
    if (!c)
        return;
    for (i = -1; i < PQ_FIELD_COUNT; i++) {
        char *text = i < 0 ? err->message : err->fields[i];
        size_t size = i < 0 ? sizeof err->message : sizeof err->fields[i];
        redact(text, size, c->password);
        if (c->pg)
            redact(text, size, PQpass(c->pg));
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
    err->safe_to_retry = 0;
    err->outcome_unknown = 0;
    return 0;
}

/* The server ended the session before running anything more: an
 * administrator's terminate, a crash restart, a shutdown. */
static int is_termination(const char *code)
{
    return strcmp(code, "57P01") == 0 || strcmp(code, "57P02") == 0 ||
           strcmp(code, "57P03") == 0;
}

/* Fill err from an error result the server sent (SQLSTATE and fields). */
static void error_from_server(pq_error *err, const PGresult *res)
{
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    int i;

    pq_error_set(err, PQ_CODE_CLOSED, "%s",
                 primary && *primary ? primary : "server error");
    flatten(err->message);
    copy_text(err->code, sizeof err->code,
              PQresultErrorField(res, PG_DIAG_SQLSTATE));
    for (i = 0; i < PQ_FIELD_COUNT; i++)
        copy_text(err->fields[i], sizeof err->fields[i],
                  PQresultErrorField(res, pq_field_codes[i]));
}

/* Keep the server's FATAL: a connection failure reported later says it. */
static void remember_fatal(pq_conn *c, const PGresult *res)
{
    error_from_server(&c->last_fatal, res);
    c->fatal_known = 1;
}

static int is_fatal(const PGresult *res)
{
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    return severity && (strcmp(severity, "FATAL") == 0 ||
                        strcmp(severity, "PANIC") == 0);
}

void pqi_error_from_conn(pq_error *err, pq_conn *c, const char *code)
{
    if (c->fatal_known && PQstatus(c->pg) == CONNECTION_BAD) {
        *err = c->last_fatal;
    } else {
        const char *msg = PQerrorMessage(c->pg);
        pq_error_set(err, code, "connection lost");
        if (msg && *msg)
            first_line(err->message, sizeof err->message, msg);
        if (!err->message[0])
            copy_text(err->message, sizeof err->message, "connection lost");
    }
    redact_error(err, c);
}

/* Fill err from an error result; code is the SQLSTATE when there is one
 * (libpq's own results, for a lost connection, have none). */
static void error_from_result(pq_error *err, pq_conn *c, const PGresult *res)
{
    const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (sqlstate && *sqlstate) {
        error_from_server(err, res);
        if (is_fatal(res))
            remember_fatal(c, res);
        redact_error(err, c);
    } else {
        pqi_error_from_conn(err, c, PQ_CODE_CLOSED);
    }
}

/* Failure flags of a statement that was sent: answered tells whether a
 * result of it came before the failure. */
static void set_failure_flags(pq_error *err, pq_conn *c, int answered)
{
    if (is_termination(err->code) && !answered)
        err->safe_to_retry = 1;
    else if (PQstatus(c->pg) == CONNECTION_BAD)
        err->outcome_unknown = 1;
}

/* The statement could not be sent: it did not run. */
static void error_not_sent(pq_error *err, pq_conn *c)
{
    pqi_error_from_conn(err, c, PQ_CODE_CLOSED);
    err->safe_to_retry = 1;
}

/* ---- waiting ----------------------------------------------------------- */

/* The longest single poll (ms): a far deadline is waited for in slices. */
#define POLL_SLICE_MS 3600000

static int has_limit(double deadline)
{
    return deadline > 0 && isfinite(deadline);
}

double pqi_deadline_after(double timeout)
{
    return timeout > 0 && isfinite(timeout) ? clock_now() + timeout : 0;
}

/* The poll timeout (ms) towards deadline: -1 without a limit, 0 once it
 * passed, else at most POLL_SLICE_MS. */
static int poll_ms(double deadline)
{
    double left;
    if (!has_limit(deadline))
        return -1;
    left = deadline - clock_now();
    if (!(left > 0))
        return 0;
    if (left >= POLL_SLICE_MS / 1000.0)
        return POLL_SLICE_MS;
    return (int)(left * 1000.0) + 1;
}

int pqi_wait_fd(int fd, short events, double deadline)
{
    if (fd < 0)
        return -1;
    for (;;) {
        struct pollfd pfd;
        int timeout_ms = poll_ms(deadline), rc;

        if (timeout_ms == 0)
            return 0;
        pfd.fd = fd;
        pfd.events = events;
        pfd.revents = 0;
        rc = poll(&pfd, 1, timeout_ms);
        if (rc > 0)
            return 1;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

/* ---- notices ----------------------------------------------------------- */

/* enum pool_log_level of a notice's severity. */
static int notice_level(const char *severity)
{
    if (!severity)
        return POOL_LOG_INFO;
    if (strncmp(severity, "DEBUG", 5) == 0 || strcmp(severity, "LOG") == 0)
        return POOL_LOG_DEBUG;
    if (strcmp(severity, "WARNING") == 0 || strcmp(severity, "ERROR") == 0 ||
        strcmp(severity, "FATAL") == 0)
        return POOL_LOG_WARN;
    if (strcmp(severity, "PANIC") == 0)
        return POOL_LOG_ERROR;
    return POOL_LOG_INFO;
}

/* libpq hands notices, and an ErrorResponse that arrives on an idle
 * connection (the FATAL of pg_terminate_backend, say), to the notice
 * receiver: remember a FATAL, and pass each on as one line, never to
 * stderr. */
static void on_notice(void *arg, const PGresult *res)
{
    pq_conn *c = (pq_conn *)arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    char line[1024];

    if (is_fatal(res)) {
        c->fatal_seen = 1;
        remember_fatal(c, res);
    }
    if (!c->notice_fn)
        return;
    if (primary)
        copy_text(line, sizeof line, primary);
    else
        first_line(line, sizeof line, PQresultErrorMessage(res));
    flatten(line);
    redact(line, sizeof line, c->password);
    c->notice_fn(c->notice_arg, notice_level(severity), line);
}

void pq_set_notice_handler(pq_conn *c, pq_notice_fn fn, void *arg)
{
    c->notice_fn = fn;
    c->notice_arg = arg;
}

/* ---- connecting -------------------------------------------------------- */

/* TCP keepalive defaults, given before the user's conninfo so that its own
 * settings win: a peer that vanished is noticed after about a minute on an
 * idle connection (30 s idle, then 3 probes 10 s apart) and after 30 s of
 * unacknowledged data on a busy one. */
static const char *const tcp_defaults[][2] = {
    { "keepalives_idle", "30" },
    { "keepalives_interval", "10" },
    { "keepalives_count", "3" },
    { "tcp_user_timeout", "30000" },
};
#define N_TCP_DEFAULTS (sizeof tcp_defaults / sizeof tcp_defaults[0])

/* libpq's own test: a URI or a string with '=' is a connection string;
 * anything else is a database name. */
static int is_connection_string(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 ||
           strncmp(s, "postgres://", 11) == 0 || strchr(s, '=') != NULL;
}

static const char *option_value(const PQconninfoOption *opts, const char *key)
{
    for (; opts && opts->keyword; opts++)
        if (strcmp(opts->keyword, key) == 0)
            return opts->val;
    return NULL;
}

/* Whether word (n bytes, quoted in a libpq message) may be shown: a
 * connection option's name, one punctuation character ("=", "]"), or one
 * of the conninfo's hosts, never the password. */
static int quotable(const char *word, size_t n, const PQconninfoOption *known,
                    const PQconninfoOption *parsed)
{
    const char *hosts = option_value(parsed, "host");
    const char *password = option_value(parsed, "password");

    if (password && strlen(password) == n && memcmp(password, word, n) == 0)
        return 0;
    if (n == 1 && word[0] == '=')      /* libpq's own: missing "=" */
        return 1;
    for (; known && known->keyword; known++)
        if (strlen(known->keyword) == n && memcmp(known->keyword, word, n) == 0)
            return 1;
    while (hosts && *hosts) {
        size_t len = strcspn(hosts, ",");
        if (len == n && memcmp(hosts, word, n) == 0)
            return 1;
        hosts += len + (hosts[len] == ',');
    }
    return 0;
}

/* The first line of a libpq message about a conninfo it parsed (so that
 * its password is known, and redact_error takes it out of anything this
 * lets through), with every quoted word that could be the user's text
 * replaced by "***". A conninfo libpq could not parse goes through
 * scrub_unparsed_message instead. */
/* Where libpq's messages about a conninfo it could not parse quote fixed
 * punctuation of their own before the user's text. */
static const char *const fixed_quotes[] = {
    "missing \"=\" after ",
    "extra key/value separator \"=\" in URI query parameter: ",
    "missing key/value separator \"=\" in URI query parameter: ",
    "end of string reached when looking for matching \"]\" in IPv6 host "
    "address in URI: ",
    NULL,
};

/* A message about a conninfo libpq could not parse: its own words up to
 * the first quote that is not in fixed_quotes, then "***" and nothing more.
 * The password is not known (the conninfo did not parse), libpq quotes the
 * user's text as it is, and that text may hold quotes, keywords and
 * punctuation of its own: no pairing of quotes can tell it from libpq's. */
static void scrub_unparsed_message(char *dst, size_t size, const char *msg)
{
    size_t len = strcspn(msg, "\r\n"), keep = 0, quote;
    int i;

    for (i = 0; fixed_quotes[i]; i++)
        if (strncmp(msg, fixed_quotes[i], strlen(fixed_quotes[i])) == 0)
            keep = strlen(fixed_quotes[i]);
    quote = keep + strcspn(msg + keep, "\"");
    if (quote > len)
        quote = len;
    snprintf(dst, size, "%.*s%s", (int)quote, msg,
             quote < len ? "\"***\"" : "");
}

static void scrub_conninfo_message(char *dst, size_t size, const char *msg,
                                   const PQconninfoOption *parsed)
{
    PQconninfoOption *known = PQconndefaults();
    size_t n = 0, len = strcspn(msg, "\r\n");
    const char *p = msg, *end = msg + len;

    while (p < end && n + 1 < size) {
        const char *close = *p == '"' ? memchr(p + 1, '"', (size_t)(end - p - 1))
                                      : NULL;
        if (close) {
            size_t w = (size_t)(close - p - 1);
            int shown = quotable(p + 1, w, known, parsed);
            size_t shown_len = shown ? w : 3;
            if (n + shown_len + 3 > size)
                break;
            dst[n++] = '"';
            memcpy(dst + n, shown ? p + 1 : "***", shown_len);
            n += shown_len;
            dst[n++] = '"';
            p = close + 1;
        } else if (*p == '"') {
            break;                    /* an unterminated quote: stop here */
        } else {
            dst[n++] = *p++;
        }
    }
    dst[n] = '\0';
    PQconninfoFree(known);
}

/* Parse conninfo before libpq sees it, so that a malformed one is reported
 * without its text. *parsed is set (free with PQconninfoFree). 0 and err
 * when malformed. */
static int parse_conninfo(const char *conninfo, PQconninfoOption **parsed,
                          pq_error *err)
{
    char *why = NULL;
    char reason[512];

    *parsed = PQconninfoParse(conninfo, &why);
    if (*parsed)
        return 1;
    if (!why)
        return pq_error_set(err, PQ_CODE_CONNECT, "out of memory");
    scrub_unparsed_message(reason, sizeof reason, why);
    PQfreemem(why);
    return pq_error_set(err, PQ_CODE_CONNECT, "malformed conninfo: %s", reason);
}

/* Copy the lines that follow a server's error in a connect failure
 * ("DETAIL:  ...", "HINT:  ...", a tab-indented hint) into err's fields,
 * up to the next "connection to server" line. */
static void connect_fields(pq_error *err, const char *p)
{
    while (*p && strncmp(p, "connection to server ", 21) != 0) {
        size_t n = strcspn(p, "\n");
        int field = -1;
        const char *text = p;
        if (strncmp(p, "DETAIL:  ", 9) == 0) {
            field = PQ_FIELD_DETAIL;
            text = p + 9;
        } else if (strncmp(p, "HINT:  ", 7) == 0) {
            field = PQ_FIELD_HINT;
            text = p + 7;
        } else if (*p == '\t' && !err->fields[PQ_FIELD_HINT][0]) {
            field = PQ_FIELD_HINT;
            text = p + 1;
        }
        if (field >= 0) {
            size_t len = n - (size_t)(text - p);
            if (len >= sizeof err->fields[field])
                len = sizeof err->fields[field] - 1;
            memcpy(err->fields[field], text, len);
            err->fields[field][len] = '\0';
        }
        p += n + (p[n] == '\n');
    }
}

/* A failed attempt as one line: "could not connect to server at "h", port
 * N: <reason>" for the last server tried, its SQLSTATE and fields kept
 * (libpq's message is verbose here, so it carries the SQLSTATE); a message
 * about the conninfo itself is scrubbed of the user's text. */
static void connect_error(pq_error *err, pq_conn *c,
                          const PQconninfoOption *parsed)
{
    const char *msg = PQerrorMessage(c->pg), *line = NULL, *p;
    char reason[512];

    for (p = msg; p && *p; ) {
        if (strncmp(p, "connection to server ", 21) == 0)
            line = p;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (line) {
        const char *host = line + 21, *failed = strstr(host, " failed: ");
        size_t eol = strcspn(line, "\n");
        char sqlstate[6] = "";
        int has_reason = failed && failed < line + eol;
        if (!has_reason)
            failed = line + eol;
        first_line(reason, sizeof reason,
                   has_reason ? skip_severity(failed + 9, sqlstate) : "failed");
        pq_error_set(err, PQ_CODE_CONNECT, "could not connect to server %.*s: %s",
                     (int)(failed - host), host, reason);
        copy_text(err->fields[PQ_FIELD_SQLSTATE], sizeof err->fields[0], sqlstate);
        if (sqlstate[0])
            copy_text(err->fields[PQ_FIELD_SEVERITY], sizeof err->fields[0],
                      "FATAL");
        connect_fields(err, line + eol + (line[eol] == '\n'));
    } else {
        scrub_conninfo_message(reason, sizeof reason, msg && *msg ? msg
                               : "could not connect", parsed);
        pq_error_set(err, PQ_CODE_CONNECT, "%s", reason);
    }
    redact_error(err, c);
}

static void conn_free(pq_conn *c);

/* A failed attempt: its error, then PQfinish. */
static void connect_failed(pq_conn *c, const PQconninfoOption *parsed,
                           pq_error *err)
{
    connect_error(err, c, parsed);
    conn_free(c);
}

/* ---- hosts: one attempt per server ------------------------------------- */

/*
 * libpq's non-blocking connect ignores connect_timeout, and with several
 * hosts one deadline would all go to a first host that never answers. So
 * pq_connect tries the hosts of a conninfo itself, one libpq connection per
 * host (every other option kept), each until the earlier of the conninfo's
 * connect_timeout (per host, as libpq's blocking connect has it) and the
 * caller's deadline (all hosts together). target_session_attrs is checked
 * by libpq on each host; prefer-standby is two passes, as in libpq: the
 * hosts for a standby, then the hosts for any server.
 */

/* The options set for each attempt, after the conninfo's other ones. */
static const char *const per_attempt_keys[] = {
    "host", "hostaddr", "port", "target_session_attrs",
};
enum { ATTEMPT_HOST, ATTEMPT_HOSTADDR, ATTEMPT_PORT, ATTEMPT_SESSION_ATTRS,
       N_PER_ATTEMPT };

typedef struct connect_plan {
    const char **keywords, **values;   /* for PQconnectStartParams */
    int first_per_attempt;             /* index of the "host" entry */
    const char *lists[N_PER_ATTEMPT];  /* the conninfo's, else the PG* env */
    int n_hosts;         /* > 1: tried one by one; 1: the lists go whole */
    int single_port;     /* one port for every host */
    int passes;          /* 2 for prefer-standby */
    double per_host;     /* connect_timeout (s); 0: none */
    char host[1025], hostaddr[1025], port[64];   /* the current attempt's */
} connect_plan;

/* A setting of the conninfo, else of the environment variable libpq reads
 * for it; NULL for neither. */
static const char *setting(const PQconninfoOption *parsed, const char *key,
                           const char *env)
{
    const char *v = option_value(parsed, key);
    return v ? v : getenv(env);
}

/* How many items a comma-separated list has (0 for none). */
static int list_count(const char *list)
{
    int n = 1;
    if (!list)
        return 0;
    for (; *list; list++)
        n += *list == ',';
    return n;
}

/* Item i of a comma-separated list, "" when there is none. */
static void list_item(char *dst, size_t size, const char *list, int i)
{
    size_t n;
    dst[0] = '\0';
    while (list && i-- > 0) {
        list = strchr(list, ',');
        if (list)
            list++;
    }
    if (!list)
        return;
    n = strcspn(list, ",");
    if (n >= size)
        n = size - 1;
    memcpy(dst, list, n);
    dst[n] = '\0';
}

/* connect_timeout as libpq's blocking connect reads it: whole seconds, at
 * least 2; 0 or less (or none) is no limit. 0 and err when malformed. */
static int parse_connect_timeout(const char *text, double *seconds,
                                 pq_error *err)
{
    char *end;
    long v;

    *seconds = 0;
    if (!text || !*text)
        return 1;
    errno = 0;
    v = strtol(text, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    if (end == text || *end || errno == ERANGE || v > 2147483647L)
        return pq_error_set(err, PQ_CODE_CONNECT, "malformed conninfo: invalid "
                            "integer value for connection option "
                            "\"connect_timeout\"");
    *seconds = v <= 0 ? 0 : v < 2 ? 2 : (double)v;
    return 1;
}

/* The hosts of pl (pl->lists set): one by one when their lists agree in
 * length as libpq wants, else whole, for libpq to judge. */
static void plan_hosts(connect_plan *pl)
{
    int hosts = list_count(pl->lists[ATTEMPT_HOST]);
    int addrs = list_count(pl->lists[ATTEMPT_HOSTADDR]);
    int ports = list_count(pl->lists[ATTEMPT_PORT]);
    int n = hosts > addrs ? hosts : addrs;

    pl->n_hosts = 1;
    pl->single_port = ports <= 1;
    if (n > 1 && (!hosts || !addrs || hosts == addrs) &&
        (ports <= 1 || ports == n))
        pl->n_hosts = n;
}

static int is_per_attempt(const char *keyword)
{
    int i;
    for (i = 0; i < N_PER_ATTEMPT; i++)
        if (strcmp(keyword, per_attempt_keys[i]) == 0)
            return 1;
    return 0;
}

/* The options of every attempt: the TCP defaults, then the conninfo's (or
 * conninfo as a database name), then the per-attempt ones, then the
 * fallback name (later entries win). 0 and err on failure. */
static int plan_build(connect_plan *pl, const char *conninfo,
                      const PQconninfoOption *parsed, pq_error *err)
{
    static const char *const env_names[N_PER_ATTEMPT] = {
        "PGHOST", "PGHOSTADDR", "PGPORT", "PGTARGETSESSIONATTRS",
    };
    const PQconninfoOption *o;
    size_t n = 0, cap = N_TCP_DEFAULTS + 1 + N_PER_ATTEMPT + 2;
    int i;

    memset(pl, 0, sizeof *pl);
    for (o = parsed; o && o->keyword; o++)
        cap++;
    pl->keywords = calloc(cap, sizeof *pl->keywords);
    pl->values = calloc(cap, sizeof *pl->values);
    if (!pl->keywords || !pl->values)
        return pq_error_set(err, PQ_CODE_CONNECT, "out of memory");
    for (i = 0; i < (int)N_TCP_DEFAULTS; i++, n++) {
        pl->keywords[n] = tcp_defaults[i][0];
        pl->values[n] = tcp_defaults[i][1];
    }
    for (o = parsed; o && o->keyword; o++)
        if (o->val && !is_per_attempt(o->keyword)) {
            pl->keywords[n] = o->keyword;
            pl->values[n++] = o->val;
        }
    /* Not a connection string: a database name; none: the PG* environment. */
    if (!parsed && conninfo && *conninfo) {
        pl->keywords[n] = "dbname";
        pl->values[n++] = conninfo;
    }
    pl->first_per_attempt = (int)n;
    for (i = 0; i < N_PER_ATTEMPT; i++, n++) {
        pl->keywords[n] = per_attempt_keys[i];
        pl->lists[i] = setting(parsed, per_attempt_keys[i], env_names[i]);
    }
    pl->keywords[n] = "fallback_application_name";
    pl->values[n] = "pgpool";
    plan_hosts(pl);
    pl->passes = pl->lists[ATTEMPT_SESSION_ATTRS] &&
                 strcmp(pl->lists[ATTEMPT_SESSION_ATTRS], "prefer-standby") == 0
                 ? 2 : 1;
    return parse_connect_timeout(setting(parsed, "connect_timeout",
                                         "PGCONNECT_TIMEOUT"),
                                 &pl->per_host, err);
}

/* Set the per-attempt options for host i in the given pass. */
static void plan_select(connect_plan *pl, int i, int pass)
{
    const char **v = pl->values + pl->first_per_attempt;
    int k;

    for (k = 0; k < N_PER_ATTEMPT; k++)
        v[k] = pl->lists[k];
    if (pl->n_hosts > 1) {
        list_item(pl->host, sizeof pl->host, pl->lists[ATTEMPT_HOST], i);
        list_item(pl->hostaddr, sizeof pl->hostaddr,
                  pl->lists[ATTEMPT_HOSTADDR], i);
        list_item(pl->port, sizeof pl->port, pl->lists[ATTEMPT_PORT],
                  pl->single_port ? 0 : i);
        v[ATTEMPT_HOST] = pl->host;
        v[ATTEMPT_HOSTADDR] = pl->hostaddr;
        v[ATTEMPT_PORT] = pl->port;
    }
    if (pl->passes == 2)
        v[ATTEMPT_SESSION_ATTRS] = pass == 0 ? "standby" : "any";
}

static void plan_free(connect_plan *pl)
{
    free(pl->keywords);
    free(pl->values);
}

/* The server pg is trying, named as libpq's messages do: at "host"
 * (address), port N; or on socket "path". */
static void server_identity(char *dst, size_t size, PGconn *pg,
                            const char *hostaddr)
{
    const char *host = hostaddr && *hostaddr ? hostaddr : PQhost(pg);
    const char *port = PQport(pg), *ip = PQhostaddr(pg);

    if (!host)
        host = "";
    if (!port || !*port)
        port = "5432";
    if (host[0] == '/' || host[0] == '@')
        snprintf(dst, size, "on socket \"%s/.s.PGSQL.%s\"", host, port);
    else if (ip && *ip && strcmp(ip, host) != 0)
        snprintf(dst, size, "at \"%s\" (%s), port %s", host, ip, port);
    else
        snprintf(dst, size, "at \"%s\", port %s", host, port);
}

/* One attempt with pl's current options, until the earlier of deadline and
 * the per-host connect_timeout: the connection, or NULL and err. */
static pq_conn *connect_server(const connect_plan *pl,
                               const PQconninfoOption *parsed,
                               double deadline, pq_error *err)
{
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    double start = clock_now(), limit = deadline;
    pq_conn *c = calloc(1, sizeof *c);

    if (pl->per_host > 0 && !(has_limit(deadline) && deadline < start + pl->per_host))
        limit = start + pl->per_host;
    if (c && option_value(parsed, "password"))
        c->password = strdup(option_value(parsed, "password"));
    if (c)
        c->pg = PQconnectStartParams(pl->keywords, pl->values, 0);
    if (!c || !c->pg) {
        if (c)
            conn_free(c);
        pq_error_set(err, PQ_CODE_CONNECT, "out of memory");
        return NULL;
    }
    PQsetNoticeReceiver(c->pg, on_notice, c);
    /* Verbose while connecting: the server's SQLSTATE then is in the text. */
    PQsetErrorVerbosity(c->pg, PQERRORS_VERBOSE);
    while (st != PGRES_POLLING_OK) {
        int ready;
        if (st == PGRES_POLLING_FAILED || PQstatus(c->pg) == CONNECTION_BAD) {
            connect_failed(c, parsed, err);
            return NULL;
        }
        ready = pqi_wait_fd(PQsocket(c->pg),
                        st == PGRES_POLLING_READING ? POLLIN : POLLOUT, limit);
        if (ready == 0) {
            char server[1200];
            server_identity(server, sizeof server, c->pg,
                            pl->values[pl->first_per_attempt + ATTEMPT_HOSTADDR]);
            pq_error_set(err, PQ_CODE_CONNECT, "could not connect to server "
                         "%s: timed out after %g s", server,
                         floor((limit - start) * 10 + 0.5) / 10);
            conn_free(c);
            return NULL;
        }
        st = PQconnectPoll(c->pg);
    }
    PQsetErrorVerbosity(c->pg, PQERRORS_DEFAULT);
    /* Non-blocking from here on: no send waits past a deadline. */
    PQsetnonblocking(c->pg, 1);
    c->backend_pid = PQbackendPID(c->pg);
    return c;
}

/* Add a failed attempt's message to the list of them (n before it). */
static void note_failure(char *list, size_t size, const char *message, int n)
{
    static const char prefix[] = "could not connect to ";
    size_t used = strlen(list);

    if (n > 0) {
        if (strncmp(message, prefix, sizeof prefix - 1) == 0)
            message += sizeof prefix - 1;
        copy_text(list + used, size - used, "; ");
        used = strlen(list);
    }
    copy_text(list + used, size - used, message);
}

pq_conn *pq_connect(const char *conninfo, double deadline, pq_error *err)
{
    PQconninfoOption *parsed = NULL;
    connect_plan pl;
    pq_conn *c = NULL;
    char failures[sizeof err->message] = "";
    int pass, i, tried = 0;

    if (conninfo && *conninfo && is_connection_string(conninfo) &&
        !parse_conninfo(conninfo, &parsed, err))
        return NULL;
    if (plan_build(&pl, conninfo, parsed, err)) {
        for (pass = 0; !c && pass < pl.passes; pass++)
            for (i = 0; !c && i < pl.n_hosts; i++) {
                /* The caller's deadline ends the round, after one try. */
                if (tried && has_limit(deadline) && clock_now() >= deadline)
                    break;
                plan_select(&pl, i, pass);
                c = connect_server(&pl, parsed, deadline, err);
                if (!c)
                    note_failure(failures, sizeof failures, err->message,
                                 tried++);
            }
        if (!c && tried > 1)
            copy_text(err->message, sizeof err->message, failures);
    }
    plan_free(&pl);
    PQconninfoFree(parsed);
    return c;
}

/* ---- cancel ------------------------------------------------------------ */

/*
 * PQcancel blocks until the server answers (libpq 15 has no asynchronous
 * cancel), so each cancel runs on a short detached thread that owns its
 * own copy of the cancel key. The statement's waiter waits for it only
 * until its deadline; whichever of the two is done last frees the job.
 * At most MAX_CANCELS run at once; past that a cancel is skipped (the
 * statement then ends at its grace deadline, its connection given up).
 */
struct cancel_job {
    PGcancel *cancel;
    pthread_mutex_t mu;          /* guards done, abandoned */
    pthread_cond_t done_cond;
    int done;                    /* PQcancel returned */
    int abandoned;               /* the waiter left: the thread frees */
};

#define MAX_CANCELS 32
static int cancels_in_flight;    /* atomic */

static void cancel_job_free(cancel_job *job)
{
    PQfreeCancel(job->cancel);
    pthread_mutex_destroy(&job->mu);
    pthread_cond_destroy(&job->done_cond);
    free(job);
}

static void *cancel_main(void *arg)
{
    cancel_job *job = (cancel_job *)arg;
    char why[256];
    int abandoned;

    PQcancel(job->cancel, why, sizeof why);
    pthread_mutex_lock(&job->mu);
    job->done = 1;
    abandoned = job->abandoned;
    pthread_cond_signal(&job->done_cond);
    pthread_mutex_unlock(&job->mu);
    if (abandoned)
        cancel_job_free(job);
    __atomic_sub_fetch(&cancels_in_flight, 1, __ATOMIC_ACQ_REL);
    return NULL;
}

/* Ask the server to cancel c's running statement, without waiting. */
static void start_cancel(pq_conn *c)
{
    cancel_job *job = NULL;
    pthread_attr_t attr;
    pthread_t thread;
    int started = 0;

    if (c->cancel)
        return;
    if (__atomic_add_fetch(&cancels_in_flight, 1, __ATOMIC_ACQ_REL) <= MAX_CANCELS)
        job = calloc(1, sizeof *job);
    if (job && (job->cancel = PQgetCancel(c->pg)) != NULL) {
        pthread_mutex_init(&job->mu, NULL);
        clock_cond_init(&job->done_cond);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        started = pthread_create(&thread, &attr, cancel_main, job) == 0;
        pthread_attr_destroy(&attr);
        if (!started)
            cancel_job_free(job);
    } else {
        free(job);
    }
    if (started)
        c->cancel = job;
    else
        __atomic_sub_fetch(&cancels_in_flight, 1, __ATOMIC_ACQ_REL);
}

/* A cancel still on its way could hit the connection's next statement:
 * wait for c's cancel to end, until deadline (not a finite number > 0: do
 * not wait). 1 when it ended or none ran; 0 when it was abandoned, and the
 * connection with it. */
static int settle_cancel(pq_conn *c, double deadline)
{
    cancel_job *job = c->cancel;
    int done;

    if (!job)
        return 1;
    c->cancel = NULL;
    pthread_mutex_lock(&job->mu);
    while (!job->done && has_limit(deadline) && clock_now() < deadline) {
        double slice_end = clock_now() + POLL_SLICE_MS / 1000.0;
        struct timespec until = clock_timespec(deadline < slice_end ? deadline
                                                                    : slice_end);
        pthread_cond_timedwait(&job->done_cond, &job->mu, &until);
    }
    done = job->done;
    job->abandoned = !done;
    pthread_mutex_unlock(&job->mu);
    if (done)
        cancel_job_free(job);
    else
        c->broken = 1;
    return done;
}

/* ---- closing and state ------------------------------------------------- */

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

static void conn_free(pq_conn *c)
{
    settle_cancel(c, 0);
    stmt_free_all(c);
    if (c->pg)
        PQfinish(c->pg);
    free(c->password);
    free(c);
}

void pq_close(pq_conn *c)
{
    if (c)
        conn_free(c);
}

void pq_abandon(pq_conn *c)
{
    int fd;
    if (!c)
        return;
    fd = PQsocket(c->pg);
    if (fd >= 0)
        close(fd);
    /* The PGconn is leaked on purpose: freeing it would make libpq write a
     * Terminate on the parent's session. A cancel job belongs to a thread
     * of the parent, which the child does not have: leaked too. */
    stmt_free_all(c);
    free(c->password);
    free(c);
}

int pq_backend_pid(const pq_conn *c)
{
    return c->backend_pid;
}

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

        if (c->broken || PQstatus(c->pg) != CONNECTION_OK || c->fatal_seen)
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
    if (c->broken || PQstatus(c->pg) != CONNECTION_OK)
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

int pqi_usable(pq_conn *c, pq_error *err)
{
    if (c->streaming)
        pqi_stream_abandon(c);
    if (c->copying)
        pq_copy_abort(c);
    if (!c->broken)
        return 1;
    pq_error_set(err, PQ_CODE_CLOSED,
                 "connection given up after a timeout; release it");
    err->safe_to_retry = 1;
    return 0;
}

/* ---- statements -------------------------------------------------------- */




void pqi_run_init(run_state *rs, double deadline, double grace,
                     double timeout)
{
    rs->deadline = deadline;
    rs->grace = grace;
    rs->timeout = timeout;
    rs->cancelled = 0;
    rs->answered = 0;
}

int pqi_wait_input(pq_conn *c, run_state *rs)
{
    for (;;) {
        int ready = pqi_wait_fd(PQsocket(c->pg), POLLIN, rs->deadline);
        if (ready > 0)
            return PQconsumeInput(c->pg) ? 1 : 0;
        if (ready < 0)
            return 0;
        if (rs->cancelled || !(rs->grace > 0)) {
            settle_cancel(c, 0);
            c->broken = 1;
            return -1;
        }
        start_cancel(c);
        rs->cancelled = 1;
        rs->deadline = clock_now() + rs->grace;
    }
}

int pqi_await_result(pq_conn *c, run_state *rs)
{
    while (PQisBusy(c->pg)) {
        int waited = pqi_wait_input(c, rs);
        /* A lost connection may still hold the server's last words (the
         * FATAL of a terminate): PQgetResult returns them without waiting. */
        if (waited == 0)
            return PQstatus(c->pg) == CONNECTION_BAD ? 1 : 0;
        if (waited < 0)
            return -1;
    }
    return 1;
}

int pqi_flush_all(pq_conn *c, run_state *rs)
{
    int pending;
    while ((pending = PQflush(c->pg)) == 1) {
        int ready = pqi_wait_fd(PQsocket(c->pg), POLLIN | POLLOUT, rs->deadline);
        if (ready == 0) {
            c->broken = 1;
            return -1;
        }
        if (ready < 0 || !PQconsumeInput(c->pg))
            return 0;
    }
    return pending == 0;
}

int pqi_refuse_copy(pq_conn *c, ExecStatusType status, run_state *rs)
{
    char *data;
    int n;

    switch (status) {
    case PGRES_COPY_IN:
        while ((n = PQputCopyEnd(c->pg, COPY_REFUSED)) == 0) {
            int flushed = pqi_flush_all(c, rs);
            if (flushed <= 0)
                return flushed;
        }
        return n < 0 ? 0 : pqi_flush_all(c, rs);
    case PGRES_COPY_OUT:
        while ((n = PQgetCopyData(c->pg, &data, 1)) != -1) {
            if (n > 0) {
                PQfreemem(data);
            } else if (n == -2) {
                return 0;
            } else {
                int waited = pqi_wait_input(c, rs);
                if (waited <= 0)
                    return waited;
            }
        }
        return 1;
    default:
        c->broken = 1;
        return 0;
    }
}

void pqi_error_wait_failed(pq_error *err, pq_conn *c, const run_state *rs,
                              int waited)
{
    if (waited < 0) {
        if (rs->cancelled)
            pq_error_set(err, PQ_CODE_TIMEOUT,
                         "query timeout, and no answer from the server %g s "
                         "after the cancel: the connection is given up",
                         rs->grace);
        else
            pq_error_set(err, PQ_CODE_TIMEOUT, "no answer from the server "
                         "by the deadline: the connection is given up");
        err->outcome_unknown = 1;
    } else {
        pqi_error_from_conn(err, c, PQ_CODE_CLOSED);
        set_failure_flags(err, c, rs->answered);
    }
}

PGresult *pqi_collect_results(pq_conn *c, run_state *rs, pq_error *err)
{
    PGresult *kept = NULL, *res;
    int waited, copied = 0, seen = 0;

    rs->answered = 0;
    for (;;) {
        waited = pqi_await_result(c, rs);
        if (waited <= 0)
            break;
        res = PQgetResult(c->pg);
        if (!res)
            break;
        switch (PQresultStatus(res)) {
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
            copied = 1;
            waited = pqi_refuse_copy(c, PQresultStatus(res), rs);
            PQclear(res);
            if (waited <= 0)
                goto done;
            continue;
        case PGRES_FATAL_ERROR:
            if (!kept || PQresultStatus(kept) != PGRES_FATAL_ERROR)
                rs->answered = seen > 0;
            break;
        default:
            break;
        }
        seen++;
        if (kept && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
            PQclear(res);
        } else {
            PQclear(kept);
            kept = res;
        }
        if (PQstatus(c->pg) == CONNECTION_BAD)
            break;
    }
done:
    settle_cancel(c, waited > 0 ? rs->deadline : 0);
    if (waited <= 0 || copied || !kept) {
        PQclear(kept);
        if (copied && (waited > 0 || (waited == 0 && c->broken)))
            pq_error_set(err, PQ_CODE_UNSUPPORTED, "%s", COPY_REFUSED);
        else
            pqi_error_wait_failed(err, c, rs, waited);
        return NULL;
    }
    return kept;
}

pq_result *pqi_check_result(pq_conn *c, PGresult *res, const run_state *rs,
                               pq_error *err)
{
    switch (PQresultStatus(res)) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
    case PGRES_SINGLE_TUPLE:
        return (pq_result *)res;
    default:
        error_from_result(err, c, res);
        set_failure_flags(err, c, rs->answered);
        PQclear(res);
        if (rs->cancelled && strcmp(err->code, "57014") == 0) {
            char msg[sizeof err->message];
            copy_text(msg, sizeof msg, err->message);
            snprintf(err->message, sizeof err->message,
                     "query timeout after %g s (%.900s)", rs->timeout, msg);
            copy_text(err->code, sizeof err->code, PQ_CODE_TIMEOUT);
        }
        return NULL;
    }
}

void pqi_error_send_failed(pq_error *err, pq_conn *c, int flushed)
{
    if (flushed < 0)
        pq_error_set(err, PQ_CODE_TIMEOUT, "query timeout while sending: "
                     "the connection is given up");
    else
        pqi_error_from_conn(err, c, PQ_CODE_CLOSED);
}

/* After a PQsend* (sent: its return): push it out and read its results
 * (collect_results). A statement not wholly sent did not run. */
static PGresult *sent_results(pq_conn *c, int sent, run_state *rs,
                              pq_error *err)
{
    int flushed = sent ? pqi_flush_all(c, rs) : 0;
    if (flushed > 0)
        return pqi_collect_results(c, rs, err);
    pqi_error_send_failed(err, c, flushed);
    err->safe_to_retry = 1;
    return NULL;
}

/* Run one statement, unnamed (name NULL) or prepared, and read its result. */
static PGresult *run_statement(pq_conn *c, const char *name, const char *sql,
                               const pq_params *pp, run_state *rs,
                               pq_error *err)
{
    int sent = name ? PQsendQueryPrepared(c->pg, name, pp->n, pp->values,
                                          pp->lengths, pp->formats, 0)
                    : PQsendQueryParams(c->pg, sql, pp->n,
                                        (const Oid *)pp->types, pp->values,
                                        pp->lengths, pp->formats, 0);
    return sent_results(c, sent, rs, err);
}

/* ---- statement cache --------------------------------------------------- */

/* The cache key: the SQL, a NUL, then each parameter's type OID (4 bytes,
 * big-endian). Lookups hash and compare it in place (no allocation). */
#define FNV_BASIS 1469598103934665603ULL
#define FNV_PRIME 1099511628211ULL

static uint64_t fnv1a(uint64_t h, const unsigned char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= s[i];
        h *= FNV_PRIME;
    }
    return h;
}

static void type_bytes(const pq_params *pp, int i, unsigned char out[4])
{
    unsigned t = pp->types ? pp->types[i] : 0;
    out[0] = (unsigned char)(t >> 24);
    out[1] = (unsigned char)(t >> 16);
    out[2] = (unsigned char)(t >> 8);
    out[3] = (unsigned char)t;
}

static size_t key_length(size_t sql_len, const pq_params *pp)
{
    return sql_len + 1 + 4 * (size_t)pp->n;
}

static uint64_t key_hash(const char *sql, size_t sql_len, const pq_params *pp)
{
    uint64_t h = fnv1a(FNV_BASIS, (const unsigned char *)sql, sql_len + 1);
    unsigned char t[4];
    int i;
    for (i = 0; i < pp->n; i++) {
        type_bytes(pp, i, t);
        h = fnv1a(h, t, 4);
    }
    return h;
}

static int key_equals(const pq_stmt *st, const char *sql, size_t sql_len,
                      const pq_params *pp)
{
    unsigned char t[4];
    int i;
    if (st->key_len != key_length(sql_len, pp) ||
        memcmp(st->key, sql, sql_len + 1) != 0)
        return 0;
    for (i = 0; i < pp->n; i++) {
        type_bytes(pp, i, t);
        if (memcmp(st->key + sql_len + 1 + 4 * (size_t)i, t, 4) != 0)
            return 0;
    }
    return 1;
}

static char *key_make(const char *sql, size_t sql_len, const pq_params *pp)
{
    char *key = malloc(key_length(sql_len, pp));
    int i;
    if (!key)
        return NULL;
    memcpy(key, sql, sql_len + 1);
    for (i = 0; i < pp->n; i++)
        type_bytes(pp, i, (unsigned char *)key + sql_len + 1 + 4 * (size_t)i);
    return key;
}

/* A second 64-bit hash of the key, built unlike FNV-1a (multiply-xorshift
 * per byte, then a final avalanche), so that a collision of one says
 * nothing about the other. */
static uint64_t mix_hash(const unsigned char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    size_t i;
    for (i = 0; i < n; i++) {
        h = (h ^ s[i]) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* The statement's server-side name, the same in every session for the same
 * key: two independent 64-bit hashes and the length. Behind a pooler that
 * shares server connections (PgBouncer in transaction mode) a name then
 * always means the same SQL. */
static void stmt_name(char *name, size_t size, const char *key, size_t len)
{
    const unsigned char *k = (const unsigned char *)key;
    snprintf(name, size, "pgpool_%016llx%016llx_%lx",
             (unsigned long long)fnv1a(FNV_BASIS, k, len),
             (unsigned long long)mix_hash(k, len), (unsigned long)len);
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

static void forget_deallocations(pq_conn *c)
{
    free(c->to_deallocate);
    c->to_deallocate = NULL;
    c->to_deallocate_len = 0;
}

int pqi_deallocate_dropped(pq_conn *c, run_state *rs, pq_error *err)
{
    PGresult *res;

    if (!c->to_deallocate || PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        return 1;
    res = sent_results(c, PQsendQuery(c->pg, c->to_deallocate), rs, err);
    forget_deallocations(c);
    if (res || pq_txn_status(c) == PQ_TXN_IDLE) {
        PQclear(res);
        return 1;
    }
    err->safe_to_retry = 1;
    err->outcome_unknown = 0;
    return 0;
}

/* A DEALLOCATE of name still waiting to be sent is taken back: the server
 * still has the statement. 1 when there was one. */
static int undo_deallocate(pq_conn *c, const char *name)
{
    char sql[96];
    size_t n;
    char *hit;

    if (!c->to_deallocate)
        return 0;
    n = (size_t)snprintf(sql, sizeof sql, "DEALLOCATE %s;", name);
    hit = strstr(c->to_deallocate, sql);
    if (!hit)
        return 0;
    memmove(hit, hit + n, strlen(hit + n) + 1);
    c->to_deallocate_len -= n;
    if (!c->to_deallocate_len)
        forget_deallocations(c);
    return 1;
}

/* Forget a statement; with deallocate, also on the server (now or, inside
 * a transaction block, once it ends). */
static void stmt_drop(pq_conn *c, pq_stmt *st, int deallocate)
{
    stmt_unlink(c, st);
    if (deallocate) {
        char sql[96];
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

/* Prepare st on the server. A statement of that name already there is the
 * same statement (stmt_name), so "already exists" (42P05) counts as done,
 * unless it aborted the transaction block. 0 and err on failure. */
static int stmt_prepare(pq_conn *c, pq_stmt *st, const char *sql,
                        const pq_params *pp, run_state *rs, pq_error *err)
{
    PGresult *res;
    pq_result *ok;

    if (!pqi_deallocate_dropped(c, rs, err))
        return 0;
    res = sent_results(c, PQsendPrepare(c->pg, st->name, sql, pp->n,
                                        (const Oid *)pp->types), rs, err);
    if (!res)
        return 0;
    ok = pqi_check_result(c, res, rs, err);
    if (ok) {
        PQclear((PGresult *)ok);
        return 1;
    }
    return strcmp(err->code, "42P05") == 0 &&
           PQtransactionStatus(c->pg) == PQTRANS_IDLE;
}

/* The cached statement for sql, prepared now if needed; NULL and err when
 * preparing failed. */
static pq_stmt *stmt_get(pq_conn *c, const char *sql, const pq_params *pp,
                         int cache_size, run_state *rs, pq_error *err)
{
    size_t sql_len = strlen(sql);
    uint64_t hash = key_hash(sql, sql_len, pp);
    pq_stmt *st;

    for (st = c->buckets[hash % STMT_BUCKETS]; st; st = st->chain) {
        if (st->hash == hash && key_equals(st, sql, sql_len, pp)) {
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
    st = calloc(1, sizeof *st);
    if (st)
        st->key = key_make(sql, sql_len, pp);
    if (!st || !st->key) {
        free(st);
        pq_error_set(err, PQ_CODE_BUSY, "out of memory");
        err->safe_to_retry = 1;
        return NULL;
    }
    st->key_len = key_length(sql_len, pp);
    stmt_name(st->name, sizeof st->name, st->key, st->key_len);
    if (!undo_deallocate(c, st->name) &&
        !stmt_prepare(c, st, sql, pp, rs, err)) {
        free(st->key);
        free(st);
        return NULL;
    }
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
                    double timeout, int cache_size, int cache_in_blocks,
                    pq_error *err)
{
    run_state rs;
    PGresult *res;
    pq_result *ok;
    int attempt;

    if (!pqi_usable(c, err))
        return NULL;
    pqi_run_init(&rs, pqi_deadline_after(timeout), CANCEL_GRACE, timeout);
    if (!cache_in_blocks && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        cache_size = 0;
    if (c->to_deallocate && !pqi_deallocate_dropped(c, &rs, err))
        return NULL;
    /* Cached: at most twice (stale or missing: prepared again once), then
     * unnamed, which needs nothing from the server's session. */
    for (attempt = 0; attempt < 3; attempt++) {
        pq_stmt *st = NULL;
        if (cache_size > 0 && attempt < 2) {
            st = stmt_get(c, sql, params, cache_size, &rs, err);
            if (!st)
                return NULL;
        }
        res = run_statement(c, st ? st->name : NULL, sql, params, &rs, err);
        if (!res)
            return NULL;
        ok = pqi_check_result(c, res, &rs, err);
        if (ok || !st || !stmt_is_stale(err))
            return ok;
        /* Forget it and, outside a transaction block (where the failed
         * statement aborted nothing), try again; a stale plan is
         * deallocated first, its name being the same. */
        stmt_drop(c, st, strcmp(err->code, "0A000") == 0);
        if (PQtransactionStatus(c->pg) != PQTRANS_IDLE ||
            !pqi_deallocate_dropped(c, &rs, err))
            return NULL;
    }
    return NULL;
}

int pq_exec(pq_conn *c, const char *script, double timeout, pq_error *err)
{
    run_state rs;
    PGresult *res;
    pq_result *ok;

    if (!pqi_usable(c, err))
        return 0;
    pqi_run_init(&rs, pqi_deadline_after(timeout), CANCEL_GRACE, timeout);
    res = sent_results(c, PQsendQuery(c->pg, script), &rs, err);
    if (!res)
        return 0;
    ok = pqi_check_result(c, res, &rs, err);
    if (!ok)
        return 0;
    PQclear((PGresult *)ok);
    return 1;
}

int pq_server_slots(pq_conn *c, double deadline, int *max_connections,
                    int *reserved)
{
    run_state rs;
    PGresult *res;
    pq_error err;
    int slots = -1;

    if (!pqi_usable(c, &err))
        return -1;
    pqi_run_init(&rs, deadline, 0, 0);
    res = sent_results(c, PQsendQuery(c->pg,
        "select current_setting('max_connections')::int, "
        "current_setting('superuser_reserved_connections')::int"), &rs, &err);
    res = res ? (PGresult *)pqi_check_result(c, res, &rs, &err) : NULL;
    if (res && PQntuples(res) == 1 && PQnfields(res) == 2 &&
        !PQgetisnull(res, 0, 0) && !PQgetisnull(res, 0, 1)) {
        *max_connections = atoi(PQgetvalue(res, 0, 0));
        *reserved = atoi(PQgetvalue(res, 0, 1));
        slots = *max_connections - *reserved;
    }
    PQclear(res);
    return slots;
}

int pq_rollback(pq_conn *c, double deadline)
{
    run_state rs;
    PGresult *res;
    pq_error err;

    if (c->broken)
        return 0;
    pqi_run_init(&rs, deadline, 0, 0);
    res = sent_results(c, PQsendQuery(c->pg, "ROLLBACK"), &rs, &err);
    if (!res)
        return 0;
    PQclear(res);
    return pq_txn_status(c) == PQ_TXN_IDLE;
}

/* ---- ending what pq_stream.c left open ---------------------------------- */

/*
 * A row stream or a COPY (pq_stream.c) keeps its connection busy between
 * the caller's steps. Anything else run on the connection ends it first,
 * here: the statement cancelled, what is left read and dropped, within
 * CANCEL_GRACE (pqi_usable calls these, so pq.c never calls pq_stream.c).
 */

int pqi_drain_results(pq_conn *c, run_state *rs)
{
    PGresult *res;
    int waited;

    for (;;) {
        waited = pqi_await_result(c, rs);
        if (waited <= 0)
            break;
        res = PQgetResult(c->pg);
        if (!res)
            break;
        if (PQresultStatus(res) == PGRES_COPY_IN ||
            PQresultStatus(res) == PGRES_COPY_OUT ||
            PQresultStatus(res) == PGRES_COPY_BOTH) {
            waited = pqi_refuse_copy(c, PQresultStatus(res), rs);
            PQclear(res);
            if (waited <= 0)
                break;
            continue;
        }
        PQclear(res);
    }
    settle_cancel(c, waited > 0 ? rs->deadline : 0);
    c->streaming = 0;
    c->copying = 0;
    if (waited <= 0)
        c->broken = 1;
    return waited > 0 && PQstatus(c->pg) == CONNECTION_OK;
}

int pqi_stream_abandon(pq_conn *c)
{
    run_state rs;
    if (c->stream_in_block) {
        /* A cancel would abort the caller's transaction (every statement
         * after it failing with 25P02): read the rest and drop it, and
         * cancel only when it has not come within CANCEL_GRACE. */
        pqi_run_init(&rs, clock_now() + CANCEL_GRACE, CANCEL_GRACE, 0);
        return pqi_drain_results(c, &rs);
    }
    pqi_run_init(&rs, clock_now() + CANCEL_GRACE, 0, 0);
    start_cancel(c);
    rs.cancelled = 1;
    return pqi_drain_results(c, &rs);
}

int pq_copy_abort(pq_conn *c)
{
    run_state rs;
    int direction = c->copying;

    if (!direction)
        return 1;
    c->copying = 0;
    pqi_run_init(&rs, clock_now() + CANCEL_GRACE, 0, 0);
    if (direction == PQ_COPY_OUT) {
        start_cancel(c);
        rs.cancelled = 1;
    }
    if (pqi_refuse_copy(c, direction == PQ_COPY_IN ? PGRES_COPY_IN
                                               : PGRES_COPY_OUT, &rs) <= 0) {
        settle_cancel(c, 0);
        c->broken = 1;
        return 0;
    }
    return pqi_drain_results(c, &rs);
}

/* ---- pipelines --------------------------------------------------------- */

static void item_fail(pq_batch_item *item, pq_conn *c, const PGresult *res,
                      const char *code, const char *message)
{
    if (item->err)
        return;
    item->err = malloc(sizeof *item->err);
    if (!item->err)
        return;
    if (res)
        error_from_result(item->err, c, res);
    else
        pq_error_set(item->err, code, "%s", message);
}

int pq_pipeline(pq_conn *c, pq_batch_item *items, int count, int sync_each,
                double timeout, pq_error *err)
{
    run_state rs;
    int i, syncs = 0, syncs_seen = 0, current = 0, got_result = 0, ok = 1;

    if (count == 0)
        return 1;
    if (!pqi_usable(c, err))
        return 0;
    pqi_run_init(&rs, pqi_deadline_after(timeout), CANCEL_GRACE, timeout);
    if (!PQenterPipelineMode(c->pg)) {
        error_not_sent(err, c);
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
    if (!ok || (ok = pqi_flush_all(c, &rs)) <= 0) {
        /* Part of the batch may have gone out: the connection's state is
         * unknown, so it is given up. */
        c->broken = 1;
        pqi_error_send_failed(err, c, ok);
        err->outcome_unknown = 1;
        return 0;
    }
    while (syncs_seen < syncs) {
        PGresult *res;
        int waited = pqi_await_result(c, &rs);
        if (waited <= 0) {
            settle_cancel(c, 0);
            pqi_error_wait_failed(err, c, &rs, waited);
            err->safe_to_retry = 0;
            err->outcome_unknown = 1;
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
                item_fail(&items[current], c, NULL, "aborted",
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
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
            PQclear(res);
            c->broken = 1;       /* a COPY inside a pipeline: no way back */
            pq_error_set(err, PQ_CODE_UNSUPPORTED, "%s", COPY_REFUSED);
            err->outcome_unknown = 1;
            return 0;
        default:
            if (current < count)
                item_fail(&items[current], c, res, PQ_CODE_CLOSED, "");
            got_result = 1;
            PQclear(res);
            if (PQstatus(c->pg) == CONNECTION_BAD) {
                pqi_error_from_conn(err, c, PQ_CODE_CLOSED);
                err->outcome_unknown = 1;
                return 0;
            }
        }
    }
    PQexitPipelineMode(c->pg);
    settle_cancel(c, rs.deadline);
    if (rs.cancelled)
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
        pqi_error_from_conn(err, c, "22021");
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
