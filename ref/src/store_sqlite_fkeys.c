/*
 * store_sqlite_fkeys.c: the foreign keys of a SQLite database hold for the
 * state a sync leaves (spec LS-VALUE-9), as PostgreSQL's deferrable ones
 * do. SQLite enforces them on connections that turn them on: a connection
 * the store opens does (lipsync_store_sqlite_open), a wrapped one keeps
 * the application's choice. On either, a sync's transaction defers them
 * all (PRAGMA defer_foreign_keys), so that a parent and its children may
 * arrive in any order, and checks them before the session vouches for its
 * tables in Verify: a violation found only at COMMIT would come after the
 * peer committed. What a foreign key's action does (ON DELETE CASCADE,
 * SET NULL) happens at the statement, as ever; store_sqlite_nested.c
 * notes the tables it changes.
 */
#include "store_sqlite_int.h"

#include <stdio.h>
#include <string.h>

bool sq_fkeys_enforced(sqlite_store *s) {
  int on = 0;
  return sqlite3_db_config(s->db, SQLITE_DBCONFIG_ENABLE_FKEY, -1, &on) ==
             SQLITE_OK &&
         on;
}

void sq_fkeys_defer(sqlite_store *s) {
  /* Ends with the transaction; best effort: a connection that cannot
   * defer checks each statement, which is stricter, never looser. */
  if (sq_fkeys_enforced(s))
    sqlite3_exec(s->db, "PRAGMA defer_foreign_keys = ON", NULL, NULL, NULL);
}

static bool is_open_table(sqlite_store *s, const char *name) {
  for (sqlite_table *t = s->tables; t; t = t->next)
    if (sqlite3_stricmp(t->name, name) == 0)
      return true;
  return false;
}

/* The columns of foreign key |id| of |table| ("a, b"), or NULL. */
static char *key_columns(sqlite_store *s, const char *table, int id) {
  sqlite3_stmt *st;
  char *cols = NULL;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT group_concat(\"from\", ', ') FROM"
                         " pragma_foreign_key_list(?1) WHERE id = ?2",
                         -1, &st, NULL) != SQLITE_OK)
    return NULL;
  sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, id);
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
    cols = sqlite3_mprintf("%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  return cols;
}

/* Fails naming a row that breaks a foreign key, one of a table the
 * session writes when there is one: PRAGMA foreign_key_check also lists
 * what the database held broken before (SQLite counts only what the
 * transaction broke). */
static int describe(sqlite_store *s) {
  sqlite3_stmt *st;
  char *table = NULL, *parent = NULL;
  sqlite3_int64 rowid = 0;
  bool has_rowid = false;
  int id = 0, rc;
  if (sqlite3_prepare_v2(s->db, "PRAGMA main.foreign_key_check", -1, &st,
                         NULL) != SQLITE_OK)
    return sq_fail_db(s, NULL, "checking foreign keys");
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    bool ours = name && is_open_table(s, name);
    if (table && !ours)
      continue;
    sqlite3_free(table);
    sqlite3_free(parent);
    table = sqlite3_mprintf("%s", name ? name : "?");
    parent =
        sqlite3_mprintf("%s", sqlite3_column_text(st, 2)
                                  ? (const char *)sqlite3_column_text(st, 2)
                                  : "?");
    has_rowid = sqlite3_column_type(st, 1) != SQLITE_NULL;
    rowid = sqlite3_column_int64(st, 1);
    id = sqlite3_column_int(st, 3);
    if (ours)
      break;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    sqlite3_free(table);
    sqlite3_free(parent);
    return sq_fail_db(s, NULL, "checking foreign keys");
  }
  if (!table || !parent) {
    sqlite3_free(table);
    sqlite3_free(parent);
    return sq_fail(s, LIPSYNC_ERR_STORAGE,
                   "checking foreign keys: FOREIGN KEY constraint failed");
  }
  char *cols = key_columns(s, table, id);
  char row[40] = "";
  if (has_rowid)
    snprintf(row, sizeof row, " (rowid %lld)", (long long)rowid);
  rc = sq_fail(s, LIPSYNC_ERR_STORAGE,
               "checking foreign keys: table %s: a row%s refers by (%s) to no"
               " row of %s: FOREIGN KEY constraint failed",
               table, row, cols ? cols : "?", parent);
  sqlite3_free(cols);
  sqlite3_free(table);
  sqlite3_free(parent);
  return rc;
}

int sq_fkeys_check(sqlite_store *s) {
  int now = 0, high = 0;
  if (!s->writing ||
      sqlite3_db_status(s->db, SQLITE_DBSTATUS_DEFERRED_FKS, &now, &high, 0) !=
          SQLITE_OK ||
      now <= 0)
    return 0;
  return describe(s);
}
