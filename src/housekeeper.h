/*
 * housekeeper.h - one housekeeping pass over every configured pool (see
 * housekeeper.c); process.c hands it to the housekeeping thread.
 */
#ifndef PGPOOL_HOUSEKEEPER_H
#define PGPOOL_HOUSEKEEPER_H

/* Returns the monotonic time at which something next falls due. */
double housekeeper_pass(void);

#endif
