/*
 * store_sqlite_drop.c: removing change capture from a SQLite database
 * (lipsync_store_drop_capture): a table's triggers, item and change-log
 * tables and registry rows, or everything this code made under the
 * reserved prefix. The rows and their _lipsync_uuid column (with its
 * index) stay: they are the rows' identity, and capture installed again
 * gives each row the initial version of its contents (spec LS-CAPTURE-9).
 */
#include "store_sqlite_int.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Looks up the object called |name| (any case) of one of |types| (an SQL
 * list): sets |*found| and copies its type and exact name. */
static int find_object(sqlite_store *s, const char *table, const char *name,
                       const char *types, char type[16], char exact[512],
                       bool *found) {
  char *sql = sqlite3_mprintf("SELECT type, name FROM main.sqlite_schema"
                              " WHERE name = ?1 COLLATE NOCASE AND type IN"
                              " (%s)",
                              types);
  sqlite3_stmt *st;
  int rc;
  if (!sql)
    return sq_fail_nomem(s);
  rc = sq_prepare(s, sql, &st);
  sqlite3_free(sql);
  if (rc != SQLITE_OK)
    return sq_fail_db(s, table, "reading the schema");
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    snprintf(type, 16, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(exact, 512, "%s", (const char *)sqlite3_column_text(st, 1));
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return sq_fail_db(s, table, "reading the schema");
  *found = rc == SQLITE_ROW;
  return 0;
}

/* Drops the object of this code called |name| (any case) if there is one:
 * sets |*found|. */
static int drop_named(sqlite_store *s, const char *table, const char *name,
                      bool *found) {
  char type[16], exact[512];
  int rc =
      find_object(s, table, name, "'table', 'trigger'", type, exact, found);
  if (rc || !*found)
    return rc;
  return sq_exec_free(
      s, table,
      sqlite3_mprintf("DROP %s main.\"%w\"",
                      strcmp(type, "trigger") == 0 ? "TRIGGER" : "TABLE",
                      exact),
      "removing change capture");
}

/* Deletes the rows of |name| from the registry table |registry| (column
 * |column|), if that table exists: sets |*found| if there were any. */
static int forget(sqlite_store *s, const char *name, const char *registry,
                  const char *column, bool *found) {
  sqlite3_int64 n = 0;
  sqlite3_stmt *st;
  bool exists;
  int rc = sq_query_int(s, name,
                        "SELECT count(*) FROM main.sqlite_schema WHERE"
                        " type = 'table' AND name = ?1",
                        registry, &n, &exists);
  if (rc || n == 0)
    return rc;
  if ((rc = sq_prepare_mprintf(s, NULL, &st, "removing change capture",
                               "DELETE FROM main.\"%w\" WHERE \"%w\" = ?1"
                               " COLLATE NOCASE",
                               registry, column)) != 0)
    return rc;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE)
    return sq_fail_db(s, name, "removing change capture");
  *found = *found || sqlite3_changes(s->db) > 0;
  return 0;
}

/* The capture of table |name|, which need not exist any more: |*removed|
 * counts it if it had an item table. */
static int drop_table(sqlite_store *s, const char *name, int *removed) {
  char type[16], exact[512], object[600];
  bool table = false, any = false;
  int rc;
  if (strncasecmp(name, "_lipsync", 8) == 0)
    return sq_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE,
                   "no table %s (LipSync's own tables have no change capture)",
                   name);
  if ((rc = find_object(s, name, name, "'table'", type, exact, &table)) != 0)
    return rc;
  if (!table)
    snprintf(exact, sizeof exact, "%s", name);
  for (size_t i = 0; i < sq_nown_prefixes; i++) {
    bool found = false;
    snprintf(object, sizeof object, "%s%s", sq_own_prefixes[i], exact);
    if ((rc = drop_named(s, exact, object, &found)) != 0)
      return rc;
    if (found && strcmp(sq_own_prefixes[i], SQ_META_PREFIX) == 0)
      ++*removed;
    any = any || found;
  }
  if ((rc = forget(s, exact, "_lipsync_tables", "name", &any)) != 0 ||
      (rc = forget(s, exact, "_lipsync_peers", "tbl", &any)) != 0)
    return rc;
  if (!table && !any)
    return sq_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE,
                   "no table %s, and no change capture of one", name);
  return 0;
}

/* Everything of this code's (the owner check passed: every object under
 * the reserved prefix), triggers first. */
static int drop_all(sqlite_store *s, int *removed) {
  static const char q[] =
      "SELECT type, name FROM main.sqlite_schema WHERE name LIKE"
      " '\\_lipsync%' ESCAPE '\\' AND type IN ('table', 'trigger')"
      " ORDER BY type = 'table', name";
  sqlite3_str *sql = sqlite3_str_new(s->db);
  sqlite3_stmt *st;
  int rc;
  if (sq_prepare(s, q, &st) != SQLITE_OK) {
    sqlite3_free(sqlite3_str_finish(sql));
    return sq_fail_db(s, NULL, "reading the schema");
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *type = (const char *)sqlite3_column_text(st, 0);
    const char *name = (const char *)sqlite3_column_text(st, 1);
    bool trigger = strcmp(type, "trigger") == 0;
    sqlite3_str_appendf(sql, "DROP %s main.\"%w\";",
                        trigger ? "TRIGGER" : "TABLE", name);
    if (!trigger && strncmp(name, SQ_META_PREFIX, strlen(SQ_META_PREFIX)) == 0)
      ++*removed;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    sqlite3_free(sqlite3_str_finish(sql));
    return sq_fail_db(s, NULL, "reading the schema");
  }
  if (sqlite3_str_length(sql) == 0) {
    sqlite3_free(sqlite3_str_finish(sql));
    return 0;
  }
  return sq_exec_free(s, NULL, sqlite3_str_finish(sql),
                      "removing change capture");
}

int sq_drop_capture(sqlite_store *s, const char *const *names, size_t n) {
  int removed = 0, rc;
  if (s->in_txn)
    return sq_fail(s, LIPSYNC_ERR_INTERNAL,
                   "drop_capture: a transaction is open");
  if ((rc = sq_begin_immediate(s)) != 0)
    return rc;
  s->owner_checked = false;
  rc = sq_capture_check_owner(s); /* spec LS-CAPTURE-8 */
  if (!rc && !names)
    rc = drop_all(s, &removed);
  for (size_t i = 0; !rc && names && i < n; i++)
    rc = drop_table(s, names[i], &removed);
  if (!rc && (rc = sq_exec(s, NULL, "COMMIT", "commit")) == 0)
    return removed;
  if (!sqlite3_get_autocommit(s->db))
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}
