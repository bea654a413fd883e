/*
 * throttle.h - how fast a pool may open connections: backoff while
 * connects fail, and an effective limit below max while the server
 * refuses for want of slots. Pure decisions on a small record; the pool
 * (pool_slots.c) keeps one under its mutex and asks before each attempt.
 *
 * While connects fail, at most one attempt is in flight, and the next
 * starts no sooner than a backoff step after the last failure: the step
 * doubles from THROTTLE_FIRST_STEP up to THROTTLE_MAX_STEP, with jitter
 * (each step is drawn between half and all of it), and goes back to
 * nothing on the first success.
 *
 * When the server refuses because it is full (SQLSTATE 53300 too many
 * connections, 53400 configuration limit exceeded, 57P03 cannot connect
 * now), the limit drops to the connections the pool holds (at least one):
 * callers queue for those instead of getting the server's refusal. Once
 * connects succeed, the limit grows by one at most every
 * THROTTLE_PROBE_STEP while callers wait, back up to max (additive
 * increase, multiplicative decrease).
 */
#ifndef PGPOOL_THROTTLE_H
#define PGPOOL_THROTTLE_H

#define THROTTLE_FIRST_STEP 0.1
#define THROTTLE_MAX_STEP   5.0
#define THROTTLE_PROBE_STEP 1.0

typedef struct throttle {
    int max, limit;
    int failures;             /* in a row; 0 after a success */
    double step;              /* the current backoff step, 0 when none */
    double next_attempt_at;   /* monotonic; while failing */
    double probe_at;          /* monotonic; when the limit may grow next */
    char reason[128];         /* why limit < max ("" when it is not) */
} throttle;

void throttle_init(throttle *t, int max);

/* Whether one more attempt may start now, with `total` connections open
 * or being opened and `in_flight` attempts under way. */
int throttle_may_start(const throttle *t, double now, int total,
                       int in_flight);

/* Callers are waiting and no attempt may start for want of room under the
 * limit: raise it by one if it is below max and a probe is due. 1 when
 * raised. */
int throttle_probe(throttle *t, double now);

/* An attempt failed with SQLSTATE sqlstate ("" when none) while the pool
 * held `held` connections; jitter in [0, 1). */
void throttle_failed(throttle *t, double now, int held, const char *sqlstate,
                     double jitter);

void throttle_succeeded(throttle *t);

/* 1 when sqlstate says the server has no slot for us. */
int throttle_server_full(const char *sqlstate);

#endif
