/*
 * hogs.c - a pool's table of connection hogs (see hogs.h): checkout sites
 * interned in an open-addressing hash table, and their figures.
 *
 * Invariants (under the table's mutex): sites[0..n) are the interned
 * sites, sites[HOGS_MAX_SITES] is "(other)"; a site is never removed nor
 * moved while the table lives, so its string may be read without the
 * mutex once its index was seen under it. A mark is the site's index and
 * the table's epoch, which a forked child advances so that the checkouts
 * it inherited end without touching its figures.
 *
 * Locking: the mutex is a leaf (nothing is taken under it); it is held
 * for a lookup and a few additions, and for a malloc when a site is new.
 */
#define _GNU_SOURCE
#include "hogs.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct site {
    char *where;              /* "file:line" */
    size_t file_len;          /* the file part of where */
    int line;
    uint32_t hash;
    uint64_t count;
    double total, max;
    int held;
} site;

#define BUCKETS (2 * HOGS_MAX_SITES)   /* a power of two; at most half full */
#define OTHER HOGS_MAX_SITES

struct hogs {
    pthread_mutex_t mu;
    uint32_t epoch;           /* 16 bits */
    int n;                    /* interned sites, "(other)" aside */
    uint16_t buckets[BUCKETS];         /* index + 1; 0: empty */
    site sites[HOGS_MAX_SITES + 1];
};

static char other_name[] = HOGS_OTHER;

hogs *hogs_new(void)
{
    hogs *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    pthread_mutex_init(&h->mu, NULL);
    h->sites[OTHER].where = other_name;
    return h;
}

void hogs_free(hogs *h)
{
    int i;
    if (!h)
        return;
    for (i = 0; i < h->n; i++)
        free(h->sites[i].where);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* FNV-1a over the file name, then the line. */
static uint32_t site_hash(const char *file, size_t len, int line)
{
    uint32_t x = 2166136261u;
    size_t i;
    for (i = 0; i < len; i++)
        x = (x ^ (unsigned char)file[i]) * 16777619u;
    return (x ^ (uint32_t)line) * 16777619u;
}

/* The site file:line, interned when new; "(other)" when the table is full
 * or out of memory (mutex held). */
static int find_site(hogs *h, const char *file, size_t len, int line,
                     uint32_t hash)
{
    uint32_t b;
    size_t size;
    site *s;

    for (b = hash & (BUCKETS - 1); h->buckets[b];
         b = (b + 1) & (BUCKETS - 1)) {
        s = &h->sites[h->buckets[b] - 1];
        if (s->hash == hash && s->line == line && s->file_len == len &&
            memcmp(s->where, file, len) == 0)
            return h->buckets[b] - 1;
    }
    if (h->n == HOGS_MAX_SITES)
        return OTHER;
    s = &h->sites[h->n];
    size = len + 16;
    if ((s->where = malloc(size)) == NULL)
        return OTHER;
    memcpy(s->where, file, len);
    snprintf(s->where + len, size - len, ":%d", line);
    s->file_len = len;
    s->line = line;
    s->hash = hash;
    h->buckets[b] = (uint16_t)(++h->n);
    return h->n - 1;
}

hogs_mark hogs_enter(hogs *h, const char *file, int line)
{
    size_t len = strlen(file);
    uint32_t hash = site_hash(file, len, line);
    hogs_mark mark;
    int i;

    pthread_mutex_lock(&h->mu);
    i = find_site(h, file, len, line, hash);
    h->sites[i].count++;
    h->sites[i].held++;
    mark = h->epoch << 16 | (uint32_t)i;
    pthread_mutex_unlock(&h->mu);
    return mark;
}

void hogs_leave(hogs *h, hogs_mark mark, double held)
{
    site *s;
    pthread_mutex_lock(&h->mu);
    if (mark >> 16 == h->epoch) {
        s = &h->sites[mark & 0xffff];
        s->held--;
        s->total += held;
        if (held > s->max)
            s->max = held;
    }
    pthread_mutex_unlock(&h->mu);
}

static void copy_site(hogs_site *out, const site *s)
{
    out->where = s->where;
    out->count = s->count;
    out->total = s->total;
    out->max = s->max;
    out->held = s->held;
}

/* Longest total first; then the most checkouts, then by name, so that the
 * order is stable. */
static int by_total(const void *a, const void *b)
{
    const hogs_site *x = (const hogs_site *)a, *y = (const hogs_site *)b;
    if (x->total != y->total)
        return x->total > y->total ? -1 : 1;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->where, y->where);
}

int hogs_top(hogs *h, hogs_site *out)
{
    int i, n = 0;
    pthread_mutex_lock(&h->mu);
    for (i = 0; i < h->n; i++)
        if (h->sites[i].count > 0)
            copy_site(&out[n++], &h->sites[i]);
    if (h->sites[OTHER].count > 0)
        copy_site(&out[n++], &h->sites[OTHER]);
    pthread_mutex_unlock(&h->mu);
    qsort(out, (size_t)n, sizeof *out, by_total);
    return n;
}

/* ---- fork -------------------------------------------------------------- */

void hogs_fork_prepare(hogs *h)
{
    if (h)
        pthread_mutex_lock(&h->mu);
}

void hogs_fork_parent(hogs *h)
{
    if (h)
        pthread_mutex_unlock(&h->mu);
}

void hogs_fork_child(hogs *h)
{
    int i;
    if (!h)
        return;
    for (i = 0; i <= OTHER; i++) {
        site *s = &h->sites[i];
        s->count = 0;
        s->total = s->max = 0;
        s->held = 0;
    }
    h->epoch = (h->epoch + 1) & 0xffff;
    pthread_mutex_unlock(&h->mu);
}
