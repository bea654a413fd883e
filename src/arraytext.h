/*
 * arraytext.h - the text of PostgreSQL array literals, in plain C.
 *
 * arraytext.c owns the syntax of an array literal and nothing else: no Lua,
 * no types. Reading walks a literal and calls back at each '{', each '}'
 * and each element, leaving what the elements mean to the caller; writing
 * appends braces, separators and quoted elements to a growing buffer.
 * Neither side keeps any state between calls, so both are reentrant (an
 * element callback may read another literal).
 */
#ifndef PGPOOL_ARRAYTEXT_H
#define PGPOOL_ARRAYTEXT_H

#include <stddef.h>
#include <string.h>

/* Dimensions at most, as the server allows. */
#define ARRAYTEXT_MAX_DIMS 6

/* ---- reading ----------------------------------------------------------- */

enum arraytext_kind {
    ARRAYTEXT_NULL,       /* an unquoted NULL, in any case */
    ARRAYTEXT_UNQUOTED,   /* text is the element, blanks trimmed */
    ARRAYTEXT_QUOTED      /* text is between the quotes, still escaped */
};

/* The callbacks of arraytext_read; each returns 0 to stop the reading
 * (which then returns 0). position is the 1-based place of the element or
 * sub-array in the array around it; 0 for the literal's outermost array.
 *   open    a '{' at depth (0 the outermost)
 *   close   its '}', once the array is known to be well formed
 *   element an element of the array opened last */
typedef struct arraytext_reader {
    int (*open)(void *ud, int depth);
    int (*close)(void *ud, int depth, int position);
    int (*element)(void *ud, const char *text, size_t len,
                   enum arraytext_kind kind, int position);
} arraytext_reader;

/* Read the len bytes at text, which need no terminator, as the output of
 * array_out: optional "[lo:hi]..=" bounds, nested braces, quoted elements
 * with backslash escapes, unquoted elements and NULL. Every level must be
 * rectangular (siblings all arrays of one length, or all elements) and at
 * most ARRAYTEXT_MAX_DIMS deep; only the whole literal may be "{}". Returns
 * 1 when the literal is well formed and every callback returned 1, else 0,
 * having called back for a prefix of it. Never reads past text + len. */
int arraytext_read(const char *text, size_t len, const arraytext_reader *r,
                   void *ud);

/* The value of an element as arraytext_read gave it: writes it to out, which
 * has room for len + 1 bytes, with a terminating '\0' after it, and returns
 * its length. */
size_t arraytext_element_value(const char *text, size_t len,
                               enum arraytext_kind kind, char *out);

/* ---- writing ----------------------------------------------------------- */

/* A growing buffer; failed stays set once memory ran out, and the text is
 * then incomplete. Memory comes from realloc (release it with
 * arraytext_free) unless grow is set: then grow(ud, data, len, cap) returns
 * a block of cap bytes starting with the len bytes of data, or NULL, and
 * the blocks belong to whoever supplied grow (arraytext_free leaves them). */
typedef struct arraytext_out {
    char *data;
    size_t len, cap;
    int failed;
    char *(*grow)(void *ud, const char *data, size_t len, size_t cap);
    void *ud;
} arraytext_out;

/* Room for n more bytes: 1, or 0 with failed set. */
int arraytext_grow(arraytext_out *o, size_t n);
void arraytext_free(arraytext_out *o);

/* Append n bytes as they are (the hot path: inline). */
static inline void arraytext_add(arraytext_out *o, const char *s, size_t n)
{
    if (o->failed || (o->len + n > o->cap && !arraytext_grow(o, n)))
        return;
    memcpy(o->data + o->len, s, n);
    o->len += n;
}

static inline void arraytext_add_open(arraytext_out *o)
{
    arraytext_add(o, "{", 1);
}

static inline void arraytext_add_close(arraytext_out *o)
{
    arraytext_add(o, "}", 1);
}

static inline void arraytext_add_separator(arraytext_out *o)
{
    arraytext_add(o, ",", 1);
}

static inline void arraytext_add_null(arraytext_out *o)
{
    arraytext_add(o, "NULL", 4);
}

/* An element as a quoted string: '"' and '\' escaped. */
void arraytext_add_quoted(arraytext_out *o, const char *s, size_t n);

/* An element of bytes as quoted bytea hex input ("\\x0aff"). */
void arraytext_add_bytea(arraytext_out *o, const unsigned char *s, size_t n);

#endif
