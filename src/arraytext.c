/*
 * arraytext.c - reading and writing PostgreSQL array literals as text.
 *
 * The reader is pgpool's one parser. It is strict and total: it accepts the
 * text output of array_out and nothing else (see arraytext_read), and it
 * never reads past the length it is given. It builds nothing: each '{', '}'
 * and element is handed to the caller's callbacks, so the caller decides
 * what an element becomes and the rules of the syntax stay here.
 *
 * The writer appends to a buffer grown with realloc or the caller's
 * allocator; elements are always quoted, NULL unquoted. It raises nothing:
 * running out of memory sets a flag for the caller to report.
 */
#include <stdlib.h>
#include <string.h>

#include "arraytext.h"

/* ---- reading ----------------------------------------------------------- */

typedef struct reader {
    const char *s, *end;
    const arraytext_reader *r;
    void *ud;
    int sizes[ARRAYTEXT_MAX_DIMS];   /* length seen at each depth; -1: none */
    int nested[ARRAYTEXT_MAX_DIMS];  /* 1: arrays at this depth, 0: elements */
} reader;

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

static void skip_space(reader *rd)
{
    while (rd->s < rd->end && is_space(*rd->s))
        rd->s++;
}

/* A quoted element: the text up to the closing quote, escapes kept. */
static int read_quoted(reader *rd, int position)
{
    const char *start = ++rd->s;   /* past the opening quote */

    for (;;) {
        if (rd->s >= rd->end)
            return 0;   /* unterminated */
        if (*rd->s == '"')
            break;
        if (*rd->s == '\\') {
            if (++rd->s >= rd->end)
                return 0;
        }
        rd->s++;
    }
    rd->s++;   /* the closing quote */
    return rd->r->element(rd->ud, start, (size_t)(rd->s - 1 - start),
                          ARRAYTEXT_QUOTED, position);
}

/* An unquoted element: up to the next ',' or '}' with surrounding blanks
 * trimmed; NULL (any case) is a NULL. */
static int read_unquoted(reader *rd, int position)
{
    const char *start = rd->s, *stop;
    size_t len;

    while (rd->s < rd->end && *rd->s != ',' && *rd->s != '}') {
        if (*rd->s == '"' || *rd->s == '{' || *rd->s == '\\')
            return 0;
        rd->s++;
    }
    stop = rd->s;
    while (stop > start && is_space(stop[-1]))
        stop--;
    len = (size_t)(stop - start);
    if (len == 0)
        return 0;
    if (len == 4 && (start[0] | 32) == 'n' && (start[1] | 32) == 'u' &&
        (start[2] | 32) == 'l' && (start[3] | 32) == 'l')
        return rd->r->element(rd->ud, start, len, ARRAYTEXT_NULL, position);
    return rd->r->element(rd->ud, start, len, ARRAYTEXT_UNQUOTED, position);
}

/* '{' ... '}' at depth, the position-th item of the array around it. */
static int read_array(reader *rd, int depth, int position)
{
    int count = 0;

    if (depth >= ARRAYTEXT_MAX_DIMS || !rd->r->open(rd->ud, depth))
        return 0;
    rd->s++;   /* '{' */
    skip_space(rd);
    if (rd->s < rd->end && *rd->s == '}') {
        rd->s++;
        /* An empty array is only valid as the whole literal. */
        return depth == 0 && rd->r->close(rd->ud, depth, position);
    }
    for (;;) {
        int ok, nested;
        skip_space(rd);
        if (rd->s >= rd->end)
            return 0;
        nested = *rd->s == '{';
        if (rd->nested[depth] < 0)
            rd->nested[depth] = nested;
        else if (rd->nested[depth] != nested)
            return 0;
        count++;
        if (nested)
            ok = read_array(rd, depth + 1, count);
        else if (*rd->s == '"')
            ok = read_quoted(rd, count);
        else
            ok = read_unquoted(rd, count);
        if (!ok)
            return 0;
        skip_space(rd);
        if (rd->s >= rd->end)
            return 0;
        if (*rd->s == '}') {
            rd->s++;
            break;
        }
        if (*rd->s != ',')
            return 0;
        rd->s++;
    }
    if (rd->sizes[depth] < 0)
        rd->sizes[depth] = count;
    else if (rd->sizes[depth] != count)
        return 0;    /* not rectangular */
    return rd->r->close(rd->ud, depth, position);
}

/* Skip "[lo:hi][lo:hi]=" dimension bounds. */
static int skip_bounds(reader *rd)
{
    if (rd->s >= rd->end || *rd->s != '[')
        return 1;
    while (rd->s < rd->end && *rd->s == '[') {
        rd->s++;
        while (rd->s < rd->end && *rd->s != ']') {
            char c = *rd->s;
            if (!(c == '-' || c == ':' || c == '+' || (c >= '0' && c <= '9')))
                return 0;
            rd->s++;
        }
        if (rd->s >= rd->end)
            return 0;
        rd->s++;   /* ']' */
    }
    if (rd->s >= rd->end || *rd->s != '=')
        return 0;
    rd->s++;
    return 1;
}

int arraytext_read(const char *text, size_t len, const arraytext_reader *r,
                   void *ud)
{
    reader rd;
    int i;

    rd.s = text;
    rd.end = text + len;
    rd.r = r;
    rd.ud = ud;
    for (i = 0; i < ARRAYTEXT_MAX_DIMS; i++)
        rd.sizes[i] = rd.nested[i] = -1;
    skip_space(&rd);
    if (!skip_bounds(&rd))
        return 0;
    skip_space(&rd);
    if (rd.s >= rd.end || *rd.s != '{' || !read_array(&rd, 0, 0))
        return 0;
    skip_space(&rd);
    return rd.s == rd.end;
}

size_t arraytext_element_value(const char *text, size_t len,
                               enum arraytext_kind kind, char *out)
{
    size_t i = 0, n = 0;

    if (kind != ARRAYTEXT_QUOTED) {
        memcpy(out, text, len);
        n = len;
    } else {
        /* arraytext_read saw to it that no escape ends the text. */
        while (i < len) {
            if (text[i] == '\\')
                i++;
            out[n++] = text[i++];
        }
    }
    out[n] = '\0';
    return n;
}

/* ---- writing ----------------------------------------------------------- */

int arraytext_grow(arraytext_out *o, size_t n)
{
    size_t cap = o->cap ? o->cap * 2 : 64;
    char *grown;

    while (cap < o->len + n)
        cap *= 2;
    grown = o->grow ? o->grow(o->ud, o->data, o->len, cap)
                    : realloc(o->data, cap);
    if (!grown) {
        o->failed = 1;
        return 0;
    }
    o->data = grown;
    o->cap = cap;
    return 1;
}

void arraytext_free(arraytext_out *o)
{
    if (!o->grow)
        free(o->data);
    o->data = NULL;
}

void arraytext_add_quoted(arraytext_out *o, const char *s, size_t n)
{
    size_t i, from = 0;
    arraytext_add(o, "\"", 1);
    for (i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            arraytext_add(o, s + from, i - from);
            arraytext_add(o, "\\", 1);
            from = i;
        }
    }
    arraytext_add(o, s + from, n - from);
    arraytext_add(o, "\"", 1);
}

void arraytext_add_bytea(arraytext_out *o, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    /* Inside a quoted element the backslash of \x is itself escaped. */
    arraytext_add(o, "\"\\\\x", 4);
    for (i = 0; i < n; i++) {
        char pair[2];
        pair[0] = hex[s[i] >> 4];
        pair[1] = hex[s[i] & 15];
        arraytext_add(o, pair, 2);
    }
    arraytext_add(o, "\"", 1);
}
