/*
 * histogram.h - a fixed-bucket histogram of durations in seconds, as
 * Prometheus histograms count them: bucket i holds the observations
 * <= histogram_bounds[i] (and above the bound before it), the last bucket
 * the ones above every bound (+Inf). The bounds are the same for every
 * histogram of the pool core, so that two can be added or subtracted
 * bucket by bucket.
 *
 * No lock of its own: a histogram lives in a pool's figures and is
 * updated under the pool's mutex, on paths that hold it already. An
 * observation is a few comparisons from the low end (the usual durations
 * sit in the first buckets) and two additions.
 */
#ifndef PGPOOL_HISTOGRAM_H
#define PGPOOL_HISTOGRAM_H

#include <stdint.h>

/* 100 us to 10 s: an in-process acquire is microseconds, a local query a
 * fraction of a millisecond, a connect a few milliseconds, and the
 * defaults' timeouts are 10 s. */
#define HISTOGRAM_BOUNDS 16
#define HISTOGRAM_BUCKETS (HISTOGRAM_BOUNDS + 1)

static const double histogram_bounds[HISTOGRAM_BOUNDS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

typedef struct histogram {
    uint64_t counts[HISTOGRAM_BUCKETS];   /* per bucket, not cumulative */
    double sum;                           /* seconds */
} histogram;

static inline int histogram_bucket(double seconds)
{
    int i = 0;
    while (i < HISTOGRAM_BOUNDS && seconds > histogram_bounds[i])
        i++;
    return i;
}

/* Count one duration (a negative or NaN one as 0: clock differences are
 * neither, but a sum must never become NaN). */
static inline void histogram_observe(histogram *h, double seconds)
{
    if (!(seconds >= 0))
        seconds = 0;
    h->counts[histogram_bucket(seconds)]++;
    h->sum += seconds;
}

/* Take back an observation of the same duration (a checkout undone). */
static inline void histogram_forget(histogram *h, double seconds)
{
    int i;
    if (!(seconds >= 0))
        seconds = 0;
    i = histogram_bucket(seconds);
    if (h->counts[i] > 0) {
        h->counts[i]--;
        h->sum -= seconds;
    }
}

static inline uint64_t histogram_count(const histogram *h)
{
    uint64_t n = 0;
    int i;
    for (i = 0; i < HISTOGRAM_BUCKETS; i++)
        n += h->counts[i];
    return n;
}

#endif
