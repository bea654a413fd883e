/*
 * connector.h - connection attempts on threads of their own.
 *
 * A caller that waits for a new connection waits in the pool's queue, not
 * on the connect: the attempt runs here, bounded by its own deadline
 * (connect_timeout), and its result goes to the pool whether or not the
 * caller who asked for it still waits. So a caller with a short acquire
 * timeout never aborts an attempt another caller will want.
 *
 * It knows nothing of pools: done(arg, conn, err) is called on the
 * attempt's thread when it ends (conn NULL and err set on failure).
 */
#ifndef PGPOOL_CONNECTOR_H
#define PGPOOL_CONNECTOR_H

#include "pq.h"

typedef void (*connector_done_fn)(void *arg, pq_conn *conn,
                                  const pq_error *err);

/* Start connecting to conninfo (which must stay valid until done is
 * called), giving up at the monotonic time deadline (HUGE_VAL: none).
 * 1 when started; 0 when no thread could be made (done is not called). */
int connector_start(const char *conninfo, double deadline,
                    connector_done_fn done, void *arg);

#endif
