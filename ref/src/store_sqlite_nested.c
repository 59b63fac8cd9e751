/*
 * store_sqlite_nested.c: what the database does in response to the rows a
 * sync applies (spec LS-CAPTURE-10). An application's trigger that writes
 * a table when the sync writes another (a hand-made ON DELETE CASCADE), or
 * a foreign key action, runs inside the sync's statement, while the
 * capture triggers stand aside for the sync (_lipsync_state.applying): the
 * rows it changes would keep items that no longer describe them, and the
 * tables would part silently. SQLite tells triggers nothing of their
 * depth, so the store watches its own connection instead: an update hook
 * reports the tables each of its writes changes. A row of another table
 * than the one written is such a change; before COMMIT, each table that
 * had one is marked for a recount at its next sync (which gives the rows
 * their new versions, as for any change made with capture off) and loses
 * its checkpoint and its clients' tokens, so that its next sync compares
 * ranges and carries the change. What a trigger does to the table being
 * written (typically, stamping the row applied) is part of applying the
 * row and left alone, as on PostgreSQL: recorded, it would travel back
 * and be stamped again there, without end.
 *
 * The hook belongs to the connection: only a connection the store opened
 * itself is watched (an application's own hook on a wrapped one stays).
 * A WITHOUT ROWID table is not reported by the hook.
 */
#include "store_sqlite_int.h"

#include <stdlib.h>
#include <string.h>

static void note(sqlite_store *s, const char *table) {
  for (size_t i = 0; i < s->nnested; i++)
    if (sqlite3_stricmp(s->nested[i], table) == 0)
      return;
  char **grown = realloc(s->nested, (s->nnested + 1) * sizeof *grown);
  char *copy = grown ? strdup(table) : NULL;
  if (grown)
    s->nested = grown;
  if (!copy) {
    s->nested_nomem = true;
    return;
  }
  s->nested[s->nnested++] = copy;
}

static void on_change(void *arg, int op, const char *db, const char *table,
                      sqlite3_int64 rowid) {
  sqlite_store *s = arg;
  (void)op;
  (void)rowid;
  if (!s->target || strcmp(db, "main") != 0 ||
      sqlite3_strnicmp(table, "_lipsync", 8) == 0)
    return;
  if (sqlite3_stricmp(table, s->target->name) != 0)
    note(s, table);
}

void sq_nested_watch(sqlite_store *s) {
  if (s->owns_db)
    sqlite3_update_hook(s->db, on_change, s);
}

void sq_nested_begin(sqlite_store *s, sqlite_table *t) {
  s->target = t;
}

void sq_nested_end(sqlite_store *s) {
  s->target = NULL;
}

int sq_nested_forget(sqlite_store *s) {
  static const char *const sql[] = {
      "UPDATE main._lipsync_tables SET recount = 1, ck_token = NULL"
      " WHERE name = ?1 COLLATE NOCASE",
      "DELETE FROM main._lipsync_peers WHERE tbl = ?1 COLLATE NOCASE"};
  if (s->nested_nomem)
    return sq_fail_nomem(s);
  for (size_t i = 0; i < s->nnested; i++)
    for (size_t k = 0; k < sizeof sql / sizeof *sql; k++) {
      sqlite3_stmt *st;
      if (sq_prepare(s, sql[k], &st) != SQLITE_OK)
        return sq_fail_db(s, s->nested[i], "noting changes the rows caused");
      sqlite3_bind_text(st, 1, s->nested[i], -1, SQLITE_STATIC);
      int rc = sqlite3_step(st);
      sqlite3_finalize(st);
      if (rc != SQLITE_DONE)
        return sq_fail_db(s, s->nested[i], "noting changes the rows caused");
    }
  return 0;
}

void sq_nested_stop(sqlite_store *s) {
  if (s->owns_db)
    sqlite3_update_hook(s->db, NULL, NULL);
  for (size_t i = 0; i < s->nnested; i++)
    free(s->nested[i]);
  free(s->nested);
  s->nested = NULL;
  s->nnested = 0;
  s->nested_nomem = false;
  s->target = NULL;
}
