/*
 * throttle.c - backoff and the effective limit (see throttle.h). No state
 * of its own, no locks: the caller's mutex guards the record.
 */
#include "throttle.h"

#include <stdio.h>
#include <string.h>

void throttle_init(throttle *t, int max)
{
    memset(t, 0, sizeof *t);
    t->max = t->limit = max;
}

int throttle_may_start(const throttle *t, double now, int total,
                       int in_flight)
{
    if (total >= t->limit)
        return 0;
    if (t->failures == 0)
        return 1;
    return in_flight == 0 && now >= t->next_attempt_at;
}

int throttle_probe(throttle *t, double now)
{
    if (t->limit >= t->max || now < t->probe_at ||
        (t->failures > 0 && now < t->next_attempt_at))
        return 0;
    t->limit++;
    t->probe_at = now + THROTTLE_PROBE_STEP;
    if (t->limit >= t->max)
        t->reason[0] = '\0';
    return 1;
}

int throttle_server_full(const char *sqlstate)
{
    return strcmp(sqlstate, "53300") == 0 || strcmp(sqlstate, "53400") == 0 ||
           strcmp(sqlstate, "57P03") == 0;
}

void throttle_failed(throttle *t, double now, int held, const char *sqlstate,
                     double jitter)
{
    t->failures++;
    t->step = t->step > 0 ? t->step * 2 : THROTTLE_FIRST_STEP;
    if (t->step > THROTTLE_MAX_STEP)
        t->step = THROTTLE_MAX_STEP;
    t->next_attempt_at = now + t->step * (0.5 + 0.5 * jitter);
    if (throttle_server_full(sqlstate)) {
        int lowered = held > 0 ? held : 1;
        if (lowered < t->limit)
            t->limit = lowered;
        snprintf(t->reason, sizeof t->reason,
                 "the server refused a connection (SQLSTATE %s) with %d held",
                 sqlstate, held);
    }
    if (t->probe_at < t->next_attempt_at + THROTTLE_PROBE_STEP)
        t->probe_at = t->next_attempt_at + THROTTLE_PROBE_STEP;
}

void throttle_succeeded(throttle *t)
{
    t->failures = 0;
    t->step = 0;
    t->next_attempt_at = 0;
}
