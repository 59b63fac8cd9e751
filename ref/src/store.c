/* store.c: the public entry points shared by every backend. */
#include "store.h"

#include "hlc.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lipsync_store_free(lipsync_store *store) {
  if (store)
    store->methods->destroy(store);
}

const char *lipsync_store_errmsg(lipsync_store *store) {
  return store ? store_errmsg(store) : "no store";
}

void lipsync_store_interrupt(lipsync_store *store) {
  if (store && store->methods->interrupt)
    store->methods->interrupt(store);
}

void lipsync_store_set_lock_timeout(lipsync_store *store, int ms) {
  if (store && store->methods->version >= 3 && store->methods->set_lock_timeout)
    store->methods->set_lock_timeout(store, ms);
}

int lipsync_store_maintain(lipsync_store *store, uint64_t retention_ms) {
  if (!store)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  if (store->methods->version < 3 || !store->methods->maintain)
    return 0;
  return store->methods->maintain(
      store, retention_ms ? hlc_horizon(hlc_wall_ms(), retention_ms) : 0);
}

int lipsync_db_is_postgres(const char *db) {
  if (!db)
    return 0;
  if (strncmp(db, "postgresql://", 13) == 0 ||
      strncmp(db, "postgres://", 11) == 0)
    return 1;
  /* A libpq keyword/value string starts with "keyword =" ("host=/tmp
   * dbname=x"); a SQLite path that must look like one is written "./a=b". */
  const char *p = db;
  while (isspace((unsigned char)*p))
    p++;
  const char *word = p;
  while (isalnum((unsigned char)*p) || *p == '_')
    p++;
  if (p == word)
    return 0;
  while (isspace((unsigned char)*p))
    p++;
  return *p == '=';
}

int lipsync_store_open(lipsync_store **out, const char *db, char *errbuf,
                       size_t errlen) {
  if (lipsync_db_is_postgres(db))
    return lipsync_store_pg_open(out, db, errbuf, errlen);
  return lipsync_store_sqlite_open(out, db, errbuf, errlen);
}

int lipsync_store_init_tables(lipsync_store *store, const char *const *tables,
                              size_t ntables, char *errbuf, size_t errlen) {
  int rc = store_begin(store);
  char **names = NULL;
  if (rc == 0 && !tables) { /* every table: copies, as opening may reuse */
    const char *const *all;
    if ((rc = store_list_tables(store, &all, &ntables)) == 0 &&
        !(names = calloc(ntables + 1, sizeof *names)))
      rc = LIPSYNC_ERR_NOMEM;
    for (size_t i = 0; rc == 0 && i < ntables; i++)
      if (!(names[i] = strdup(all[i])))
        rc = LIPSYNC_ERR_NOMEM;
    tables = (const char *const *)names;
  }
  for (size_t i = 0; rc == 0 && i < ntables; i++) {
    lipsync_table *t;
    if ((rc = store_open_table(store, tables[i], &t)) == 0)
      rc = store_prepare_table(store, t);
  }
  for (size_t i = 0; names && i < ntables; i++)
    free(names[i]);
  free(names);
  if (rc == 0)
    rc = store_flush(store);
  if (rc == 0)
    rc = store_commit(store);
  if (rc && errbuf && errlen)
    snprintf(errbuf, errlen, "%s", store_errmsg(store));
  if (rc)
    store_rollback(store);
  return rc;
}

int lipsync_store_drop_capture(lipsync_store *store, const char *const *tables,
                               size_t ntables, char *errbuf, size_t errlen) {
  int rc;
  if (!store) {
    if (errbuf && errlen)
      snprintf(errbuf, errlen, "no store");
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  }
  for (size_t i = 0; tables && i < ntables; i++)
    if (!tables[i]) {
      if (errbuf && errlen)
        snprintf(errbuf, errlen, "a table name is NULL");
      return LIPSYNC_ERR_INVALID_ARGUMENT;
    }
  if (store->methods->version < 4 || !store->methods->drop_capture) {
    if (errbuf && errlen)
      snprintf(errbuf, errlen,
               "the storage backend %s cannot remove change capture",
               store->methods->name ? store->methods->name : "(unnamed)");
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  }
  rc = store->methods->drop_capture(store, tables, tables ? ntables : 0);
  if (rc < 0 && errbuf && errlen)
    snprintf(errbuf, errlen, "%s", store_errmsg(store));
  return rc;
}
