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

/* A connection ready for use, made on the calling thread: connected to
 * conninfo, then on_connect run on it (NULL or "": nothing to run), all by
 * the monotonic time deadline (HUGE_VAL: none). NULL with err when either
 * fails: an on_connect failure is a failed connect (code "connect", the
 * server's SQLSTATE kept in the fields, the connection closed). */
pq_conn *connector_connect(const char *conninfo, const char *on_connect,
                           double deadline, pq_error *err);

/* Start connector_connect on a thread of its own (conninfo and on_connect
 * must stay valid until done is called). 1 when started; 0 when no thread
 * could be made (done is not called). */
int connector_start(const char *conninfo, const char *on_connect,
                    double deadline, connector_done_fn done, void *arg);

#endif
