/*
 * storepool.c: the idle database connections of lipsync-server (see
 * storepool.h): a stack under a lock, newest on top, each with the time
 * it was given back.
 */
#include "storepool.h"

#include <pthread.h>
#include <stdlib.h>

#include "cli.h"

typedef struct idle_store {
  lipsync_store *store;
  double since; /* cli_now() when given back */
} idle_store;

struct store_pool {
  pthread_mutex_t lock;
  idle_store *idle; /* idle[n - 1] was given back last */
  size_t n, max;
  double idle_s;
};

store_pool *store_pool_new(size_t max_idle, int idle_ms) {
  store_pool *pool = calloc(1, sizeof *pool);
  if (!pool)
    return NULL;
  if (max_idle && !(pool->idle = calloc(max_idle, sizeof *pool->idle))) {
    free(pool);
    return NULL;
  }
  pthread_mutex_init(&pool->lock, NULL);
  pool->max = max_idle;
  pool->idle_s = idle_ms / 1000.0;
  return pool;
}

void store_pool_free(store_pool *pool) {
  if (!pool)
    return;
  for (size_t i = 0; i < pool->n; i++)
    lipsync_store_free(pool->idle[i].store);
  pthread_mutex_destroy(&pool->lock);
  free(pool->idle);
  free(pool);
}

lipsync_store *store_pool_take(store_pool *pool) {
  lipsync_store *store = NULL;
  if (!pool)
    return NULL;
  pthread_mutex_lock(&pool->lock);
  if (pool->n)
    store = pool->idle[--pool->n].store;
  pthread_mutex_unlock(&pool->lock);
  return store;
}

void store_pool_give(store_pool *pool, lipsync_store *store) {
  if (!store)
    return;
  if (pool) {
    pthread_mutex_lock(&pool->lock);
    int kept = pool->n < pool->max;
    if (kept)
      pool->idle[pool->n++] = (idle_store){store, cli_now()};
    pthread_mutex_unlock(&pool->lock);
    if (kept)
      return;
  }
  lipsync_store_free(store);
}

int store_pool_expire(store_pool *pool, double now) {
  lipsync_store *expired[16];
  size_t nexpired = 0;
  int next_ms = -1;
  if (!pool)
    return -1;
  do {
    nexpired = 0;
    pthread_mutex_lock(&pool->lock);
    /* The oldest are at the bottom: take them off while they are due. */
    size_t due = 0;
    while (due < pool->n && due < sizeof expired / sizeof *expired &&
           now - pool->idle[due].since >= pool->idle_s)
      expired[nexpired++] = pool->idle[due++].store;
    for (size_t i = due; i < pool->n; i++)
      pool->idle[i - due] = pool->idle[i];
    pool->n -= due;
    next_ms =
        pool->n ? (int)((pool->idle[0].since + pool->idle_s - now) * 1000.0) + 1
                : -1;
    pthread_mutex_unlock(&pool->lock);
    /* Closed outside the lock: a session may take or give meanwhile. */
    for (size_t i = 0; i < nexpired; i++)
      lipsync_store_free(expired[i]);
  } while (nexpired == sizeof expired / sizeof *expired);
  return next_ms;
}
