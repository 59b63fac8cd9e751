/*
 * storepool.h: the database connections lipsync-server keeps open between
 * sessions (--idle-connections). A PostgreSQL connection costs a server
 * process, its authentication and cold catalog caches, more than a
 * no-change sync itself; a session takes the connection the last one left
 * (warm caches first) and gives it back when it succeeded. A connection
 * unused for the idle time is closed. One that PostgreSQL closed
 * meanwhile is made again by the store when the next session begins. Safe
 * to use from every session thread and the main thread.
 */
#ifndef LIPSYNC_STOREPOOL_H
#define LIPSYNC_STOREPOOL_H

#include <stddef.h>

#include "lipsync.h"

typedef struct store_pool store_pool;

/* A pool that keeps up to |max_idle| stores (0: none) for |idle_ms| each.
 * NULL when out of memory. */
store_pool *store_pool_new(size_t max_idle, int idle_ms);
/* Closes every store kept, and the pool. */
void store_pool_free(store_pool *pool);
/* The store given back last, or NULL: then the caller opens one. */
lipsync_store *store_pool_take(store_pool *pool);
/* Keeps |store| for a next session, or frees it when the pool is full. */
void store_pool_give(store_pool *pool, lipsync_store *store);
/* Closes the stores idle for longer than the idle time at |now| (seconds,
 * cli_now()). Returns the milliseconds until the next one is due, or -1
 * when none is kept. */
int store_pool_expire(store_pool *pool, double now);

#endif
