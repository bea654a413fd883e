/*
 * fuzz_arraytext.c - libFuzzer target: the array-literal reader and writer
 * (src/arraytext.c), plain C.
 *
 * The input is read as a literal; the reader must never read outside it
 * (AddressSanitizer), call back in a consistent order (arrays open and
 * close in nesting order, positions count 1, 2, ... in each array), hand
 * out element text that lies inside the input, and succeed only with every
 * array closed. Then the writer must round-trip the input as data: written
 * as a quoted element, a NULL and a bytea element, the literal reads back
 * as exactly those three.
 */
#include "fuzz.h"

#include <string.h>

#include "arraytext.h"

typedef struct walk {
    const char *input;
    size_t size;
    int open;                              /* arrays open now */
    int count[ARRAYTEXT_MAX_DIMS];         /* items seen in each */
    /* For the round trip: the first three elements' values and kinds. */
    int elements;
    enum arraytext_kind kinds[3];
    char *values[3];
    size_t lengths[3];
} walk;

static int on_open(void *ud, int depth)
{
    walk *w = (walk *)ud;
    CHECK(depth == w->open);
    CHECK(depth < ARRAYTEXT_MAX_DIMS);
    w->count[depth] = 0;
    w->open++;
    return 1;
}

static int on_close(void *ud, int depth, int position)
{
    walk *w = (walk *)ud;
    CHECK(w->open > 0 && depth == w->open - 1);
    w->open--;
    if (depth == 0)
        CHECK(position == 0);
    else
        CHECK(position == ++w->count[depth - 1]);
    return 1;
}

static int on_element(void *ud, const char *text, size_t len,
                      enum arraytext_kind kind, int position)
{
    walk *w = (walk *)ud;
    char *value;
    size_t n;

    CHECK(w->open > 0);
    CHECK(position == ++w->count[w->open - 1]);
    CHECK(text >= w->input && len <= w->size &&
          (size_t)(text - w->input) <= w->size - len);
    CHECK(kind != ARRAYTEXT_NULL || len == 4);
    value = (char *)malloc(len + 1);
    CHECK(value);
    n = arraytext_element_value(text, len, kind, value);
    CHECK(n <= len && value[n] == '\0');
    if (w->elements < 3) {
        w->kinds[w->elements] = kind;
        w->values[w->elements] = value;
        w->lengths[w->elements] = n;
    } else {
        free(value);
    }
    w->elements++;
    return 1;
}

static const arraytext_reader reader = { on_open, on_close, on_element };

static int read_literal(walk *w, const char *text, size_t len)
{
    int ok;
    memset(w, 0, sizeof *w);
    w->input = text;
    w->size = len;
    ok = arraytext_read(text, len, &reader, w);
    if (ok)
        CHECK(w->open == 0 && w->elements >= 0);
    return ok;
}

static void forget(walk *w)
{
    int i;
    for (i = 0; i < 3 && i < w->elements; i++)
        free(w->values[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    const char *text = (const char *)data;
    arraytext_out o;
    walk w;
    size_t i;

    /* The input as a literal: anything goes, nothing may break. */
    read_literal(&w, text, size);
    forget(&w);

    /* The input as data: {"<input>",NULL,"\\x<hex of input>"}. */
    memset(&o, 0, sizeof o);
    arraytext_add_open(&o);
    arraytext_add_quoted(&o, text, size);
    arraytext_add_separator(&o);
    arraytext_add_null(&o);
    arraytext_add_separator(&o);
    arraytext_add_bytea(&o, data, size);
    arraytext_add_close(&o);
    CHECK(!o.failed);
    CHECK(read_literal(&w, o.data, o.len));
    CHECK(w.elements == 3);
    CHECK(w.kinds[0] == ARRAYTEXT_QUOTED && w.lengths[0] == size &&
          memcmp(w.values[0], text, size) == 0);
    CHECK(w.kinds[1] == ARRAYTEXT_NULL);
    CHECK(w.kinds[2] == ARRAYTEXT_QUOTED && w.lengths[2] == 2 + 2 * size);
    CHECK(memcmp(w.values[2], "\\x", 2) == 0);
    for (i = 0; i < size; i++)
        CHECK(w.values[2][2 + 2 * i] == hex[data[i] >> 4] &&
              w.values[2][3 + 2 * i] == hex[data[i] & 15]);
    forget(&w);
    arraytext_free(&o);
    return 0;
}
