/*
 * store_sqlite_capture.c: change capture for the SQLite backend (spec 8.1,
 * design of row versions): the schema that keeps a version beside every
 * row, the triggers that give every local change a new version, the clock,
 * and the repair of items that disagree with their rows.
 *
 * Per database:
 *   _lipsync_state(id = 1, site BLOB, clock INTEGER, applying INTEGER)
 *   _lipsync_tables(name TEXT PRIMARY KEY, last_sync INTEGER)
 * Per synced table T:
 *   "_lipsync_meta_T"(uuid TEXT PRIMARY KEY, clock, site, deleted,
 *                     base_clock, base_site) WITHOUT ROWID
 *   triggers "_lipsync_ins_T", "_lipsync_upd_T", "_lipsync_del_T" (capture)
 *   and "_lipsync_uuid_T" (a UUID never changes).
 *
 * The triggers are plain SQL, so they capture the writes of every
 * connection, including those that never loaded this library. They do
 * nothing while _lipsync_state.applying is 1: the sync connection sets it
 * inside its transaction and resets it before COMMIT, so no other
 * connection ever sees it set. Clocks are SQLite integers (signed 64-bit):
 * wall milliseconds << 16 stays far below 2^63 for millennia.
 */
#include "canon.h"
#include "hlc.h"
#include "store_sqlite_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The tick of the triggers: max(clock + 1, wall_ms << 16). */
#define TICK_SQL                                                               \
  "UPDATE _lipsync_state SET clock = max(clock + 1,"                           \
  " CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) << 16);"
#define NOT_APPLYING_SQL "(SELECT applying FROM _lipsync_state) = 0"
/* A random version 4 UUID in lowercase text form, for rows inserted
 * without one by a connection that lacks lipsync_uuid4(). */
#define UUID4_SQL                                                              \
  "lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' ||"   \
  " substr(lower(hex(randomblob(2))), 2) || '-' ||"                            \
  " substr('89ab', 1 + (random() & 3), 1) ||"                                  \
  " substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))"

static const char state_sql[] =
    "CREATE TABLE IF NOT EXISTS main._lipsync_state("
    "id INTEGER PRIMARY KEY CHECK (id = 1), site BLOB NOT NULL,"
    " clock INTEGER NOT NULL DEFAULT 0, applying INTEGER NOT NULL DEFAULT 0);"
    "INSERT OR IGNORE INTO main._lipsync_state(id, site)"
    " VALUES (1, randomblob(16));"
    "CREATE TABLE IF NOT EXISTS main._lipsync_tables("
    "name TEXT PRIMARY KEY, last_sync INTEGER NOT NULL DEFAULT 0);";

int sq_check_clock(sqlite_store *s, sqlite_table *t, uint64_t clock) {
  if (clock <= INT64_MAX)
    return 0;
  return sq_fail(s, LIPSYNC_ERR_INVALID_VALUE,
                 "table %s: clock %llu is out of range (at most 2^63 - 1)",
                 t ? t->name : "?", (unsigned long long)clock);
}

static int exec(sqlite_store *s, const char *table, const char *sql,
                const char *what) {
  if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return sq_fail_db(s, table, what);
  return 0;
}

static int ensure_state(sqlite_store *s) {
  return exec(s, NULL, state_sql, "creating _lipsync_state");
}

/* Whether main has a schema object of |type| called |name|; with |sql|,
 * also copies its CREATE statement (sqlite3_malloc'd, caller frees). */
static int schema_lookup(sqlite_store *s, const char *type, const char *name,
                         bool *found, char **sql) {
  static const char q[] = "SELECT sql FROM main.sqlite_schema"
                          " WHERE type = ?1 AND name = ?2";
  sqlite3_stmt *st;
  int rc;
  *found = false;
  if (sql)
    *sql = NULL;
  if (sq_prepare(s, q, &st) != SQLITE_OK)
    return sq_fail_db(s, name, "reading the schema");
  sqlite3_bind_text(st, 1, type, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *found = true;
    if (sql) {
      *sql = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
      if (!*sql)
        rc = SQLITE_NOMEM;
    }
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_NOMEM)
    return sq_fail_nomem(s);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return sq_fail_db(s, name, "reading the schema");
  return 0;
}

/* Reads the clock and site, ticks the clock (max(last + 1, wall)) and
 * writes it back. */
int sq_capture_tick(sqlite_store *s, lipsync_version *out) {
  static const char read_sql[] =
      "SELECT clock, site FROM main._lipsync_state WHERE id = 1";
  static const char write_sql[] =
      "UPDATE main._lipsync_state SET clock = ?1 WHERE id = 1";
  sqlite3_stmt *st;
  int rc;

  memset(out, 0, sizeof *out);
  if ((rc = ensure_state(s)) != 0)
    return rc;
  if (sq_prepare(s, read_sql, &st) != SQLITE_OK)
    return sq_fail_db(s, NULL, "reading the clock");
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    uint64_t last = (uint64_t)sqlite3_column_int64(st, 0);
    const void *site = sqlite3_column_blob(st, 1);
    if (sqlite3_column_bytes(st, 1) != LIPSYNC_SITE_LEN || !site) {
      sqlite3_finalize(st);
      return sq_fail(s, LIPSYNC_ERR_STORAGE,
                     "_lipsync_state: the site id is not 16 bytes");
    }
    memcpy(out->site, site, LIPSYNC_SITE_LEN);
    out->clock = hlc_tick(last, hlc_wall_ms());
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW)
    return rc == SQLITE_DONE
               ? sq_fail(s, LIPSYNC_ERR_STORAGE, "_lipsync_state has no row")
               : sq_fail_db(s, NULL, "reading the clock");
  if (out->clock > INT64_MAX)
    return sq_fail(s, LIPSYNC_ERR_STORAGE, "_lipsync_state: clock overflow");
  if (sq_prepare(s, write_sql, &st) != SQLITE_OK)
    return sq_fail_db(s, NULL, "writing the clock");
  sqlite3_bind_int64(st, 1, (sqlite3_int64)out->clock);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : sq_fail_db(s, NULL, "writing the clock");
}

int sq_capture_read_last_sync(sqlite_store *s, sqlite_table *t) {
  static const char sql[] =
      "SELECT last_sync FROM main._lipsync_tables WHERE name = ?1";
  sqlite3_stmt *st;
  bool found;
  int rc;

  t->base.last_sync = 0;
  if ((rc = schema_lookup(s, "table", "_lipsync_tables", &found, NULL)) != 0 ||
      !found)
    return rc;
  if (sq_prepare(s, sql, &st) != SQLITE_OK)
    return sq_fail_db(s, t->name, "reading _lipsync_tables");
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    t->base.last_sync = (uint64_t)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return sq_fail_db(s, t->name, "reading _lipsync_tables");
  return 0;
}

/* ------------------------------------------------------------------ */
/* Triggers                                                             */
/* ------------------------------------------------------------------ */

/* Whether |t| has a rowid the name |rowid| reaches (a WITHOUT ROWID table
 * has none). */
static bool has_rowid(sqlite_store *s, sqlite_table *t, const char *rowid) {
  sqlite3_stmt *st = NULL;
  char *sql;
  int rc;
  if (!rowid)
    return false;
  sql = sqlite3_mprintf("SELECT t.%s FROM main.\"%w\" AS t", rowid, t->name);
  if (!sql)
    return false;
  rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  sqlite3_free(sql);
  sqlite3_finalize(st);
  return rc == SQLITE_OK;
}

/* Appends to |out| a condition matching the row of |t| that NEW names: by
 * rowid, or by primary key for a WITHOUT ROWID table. */
static int append_row_key(sqlite_store *s, sqlite_table *t, sqlite3_str *out) {
  static const char pk_sql[] = "SELECT name FROM pragma_table_info(?1, 'main')"
                               " WHERE pk > 0 ORDER BY pk";
  const char *rowid = sq_rowid_name(t);
  sqlite3_stmt *st;
  int rc, n = 0;

  if (has_rowid(s, t, rowid)) {
    sqlite3_str_appendf(out, "\"%w\".%s = NEW.%s", t->name, rowid, rowid);
    return 0;
  }
  if (sq_prepare(s, pk_sql, &st) != SQLITE_OK)
    return sq_fail_db(s, t->name, "reading the primary key");
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const unsigned char *col = sqlite3_column_text(st, 0);
    sqlite3_str_appendf(out, "%s\"%w\".\"%w\" = NEW.\"%w\"", n++ ? " AND " : "",
                        t->name, col, col);
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE)
    return sq_fail_db(s, t->name, "reading the primary key");
  if (n == 0)
    return sq_fail(s, LIPSYNC_ERR_SCHEMA_MISMATCH,
                   "table %s: its rowid is hidden by columns named rowid,"
                   " _rowid_ and oid, and it has no primary key: change"
                   " capture cannot find its rows",
                   t->name);
  return 0;
}

/* Appends the upsert of the item of |uuid_expr| with the state's clock and
 * site (just ticked): a new item gets the zero base, an existing one keeps
 * its base. */
static void append_item_upsert(sqlite3_str *out, const sqlite_table *t,
                               const char *uuid_expr, int deleted) {
  sqlite3_str_appendf(out,
                      " INSERT INTO \"%w\"(uuid, clock, site, deleted)"
                      " SELECT %s, clock, site, %d FROM _lipsync_state"
                      " WHERE id = 1 ON CONFLICT(uuid) DO UPDATE SET"
                      " clock = excluded.clock, site = excluded.site,"
                      " deleted = excluded.deleted;",
                      t->meta_name, uuid_expr, deleted);
}

/* The four triggers of |t|, in |sql|[0..3], from sqlite3_str_finish. */
enum { TRIG_INSERT, TRIG_UPDATE, TRIG_DELETE, TRIG_UUID, NTRIGGERS };
static const char *const trigger_prefix[NTRIGGERS] = {
    "_lipsync_ins_", "_lipsync_upd_", "_lipsync_del_", "_lipsync_uuid_"};

static int build_triggers(sqlite_store *s, sqlite_table *t,
                          char *sql[NTRIGGERS]) {
  sqlite3_str *key = sqlite3_str_new(s->db), *str;
  char *key_sql, *uuid_expr;
  int rc = append_row_key(s, t, key);

  key_sql = sqlite3_str_finish(key);
  if (rc) {
    sqlite3_free(key_sql);
    return rc;
  }
  if (!key_sql)
    return sq_fail_nomem(s);

  /* INSERT: a UUID if the row has none (that UPDATE is not captured: its
   * OLD UUID is NULL), a tick, and the item. */
  str = sqlite3_str_new(s->db);
  sqlite3_str_appendf(
      str,
      "CREATE TRIGGER main.\"%w%w\" AFTER INSERT ON \"%w\" "
      "WHEN " NOT_APPLYING_SQL " BEGIN UPDATE \"%w\" SET \"%w\" = " UUID4_SQL
      " WHERE NEW.\"%w\" IS NULL AND %s AND \"%w\" IS NULL; " TICK_SQL,
      trigger_prefix[TRIG_INSERT], t->name, t->name, t->name,
      LIPSYNC_UUID_COLUMN, LIPSYNC_UUID_COLUMN, key_sql, LIPSYNC_UUID_COLUMN);
  uuid_expr = sqlite3_mprintf(
      "coalesce(NEW.\"%w\", (SELECT \"%w\" FROM \"%w\" WHERE %s))",
      LIPSYNC_UUID_COLUMN, LIPSYNC_UUID_COLUMN, t->name, key_sql);
  append_item_upsert(str, t, uuid_expr ? uuid_expr : "NULL", 0);
  sqlite3_str_appendall(str, " END");
  sql[TRIG_INSERT] = uuid_expr ? sqlite3_str_finish(str) : NULL;
  if (!uuid_expr)
    sqlite3_free(sqlite3_str_finish(str));
  sqlite3_free(uuid_expr);
  sqlite3_free(key_sql);

  /* UPDATE: only when a value changes, bytewise and in type (1 and 1.0,
   * or 'a' and 'A' under NOCASE, compare equal in SQL). */
  str = sqlite3_str_new(s->db);
  sqlite3_str_appendf(str,
                      "CREATE TRIGGER main.\"%w%w\" AFTER UPDATE ON \"%w\""
                      " WHEN OLD.\"%w\" IS NOT NULL AND (0",
                      trigger_prefix[TRIG_UPDATE], t->name, t->name,
                      LIPSYNC_UUID_COLUMN);
  for (size_t i = 0; i < t->base.ncolumns; i++) {
    const char *c = t->columns[i].name;
    sqlite3_str_appendf(str,
                        " OR NEW.\"%w\" IS NOT OLD.\"%w\" COLLATE BINARY"
                        " OR typeof(NEW.\"%w\") <> typeof(OLD.\"%w\")",
                        c, c, c, c);
  }
  sqlite3_str_appendall(str, ") AND " NOT_APPLYING_SQL " BEGIN " TICK_SQL);
  append_item_upsert(str, t, "NEW.\"" LIPSYNC_UUID_COLUMN "\"", 0);
  sqlite3_str_appendall(str, " END");
  sql[TRIG_UPDATE] = sqlite3_str_finish(str);

  str = sqlite3_str_new(s->db);
  sqlite3_str_appendf(
      str,
      "CREATE TRIGGER main.\"%w%w\" AFTER DELETE ON \"%w\""
      " WHEN OLD.\"%w\" IS NOT NULL AND " NOT_APPLYING_SQL " BEGIN " TICK_SQL,
      trigger_prefix[TRIG_DELETE], t->name, t->name, LIPSYNC_UUID_COLUMN);
  append_item_upsert(str, t, "OLD.\"" LIPSYNC_UUID_COLUMN "\"", 1);
  sqlite3_str_appendall(str, " END");
  sql[TRIG_DELETE] = sqlite3_str_finish(str);

  /* Also while applying: no write may move a row to another UUID. */
  sql[TRIG_UUID] = sqlite3_mprintf(
      "CREATE TRIGGER main.\"%w%w\" BEFORE UPDATE OF \"%w\" ON \"%w\""
      " WHEN OLD.\"%w\" IS NOT NULL AND NEW.\"%w\" IS NOT OLD.\"%w\""
      " COLLATE BINARY BEGIN SELECT RAISE(ABORT,"
      " 'lipsync: the " LIPSYNC_UUID_COLUMN " of a row cannot change'); END",
      trigger_prefix[TRIG_UUID], t->name, LIPSYNC_UUID_COLUMN, t->name,
      LIPSYNC_UUID_COLUMN, LIPSYNC_UUID_COLUMN, LIPSYNC_UUID_COLUMN);

  for (int i = 0; i < NTRIGGERS; i++)
    if (!sql[i])
      return sq_fail_nomem(s);
  return 0;
}

/* Whether the stored |have| is the statement |want|: SQLite keeps it as
 * written, less the schema name of the trigger. */
static bool same_trigger(const char *have, const char *want) {
  static const char prefix[] = "CREATE TRIGGER ";
  size_t n = sizeof prefix - 1;
  if (strncmp(have, prefix, n) != 0 || strncmp(want, prefix, n) != 0)
    return false;
  if (strncmp(want + n, "main.", 5) == 0)
    want += 5;
  return strcmp(have + n, want + n) == 0;
}

/* Creates each trigger that is missing, and replaces one whose text
 * differs from today's (the table gained a column, say). */
static int install_triggers(sqlite_store *s, sqlite_table *t) {
  char *sql[NTRIGGERS] = {NULL};
  int rc = build_triggers(s, t, sql);

  for (int i = 0; i < NTRIGGERS && !rc; i++) {
    char *name = sqlite3_mprintf("%s%s", trigger_prefix[i], t->name);
    char *have = NULL;
    bool found = false;
    if (!name) {
      rc = sq_fail_nomem(s);
      break;
    }
    rc = schema_lookup(s, "trigger", name, &found, &have);
    if (!rc && (!found || !have || !same_trigger(have, sql[i]))) {
      if (found)
        rc = sq_exec_for_table(
            s, t, sqlite3_mprintf("DROP TRIGGER main.\"%w\"", name),
            "replacing a trigger");
      if (!rc && sqlite3_exec(s->db, sql[i], NULL, NULL, NULL) != SQLITE_OK)
        rc = sq_fail_db(s, t->name, "creating a change capture trigger");
    }
    sqlite3_free(have);
    sqlite3_free(name);
  }
  for (int i = 0; i < NTRIGGERS; i++)
    sqlite3_free(sql[i]);
  return rc;
}

static int drop_triggers(sqlite_store *s, sqlite_table *t) {
  int rc = 0;
  for (int i = 0; i < NTRIGGERS && !rc; i++)
    rc = sq_exec_for_table(
        s, t,
        sqlite3_mprintf("DROP TRIGGER IF EXISTS main.\"%w%w\"",
                        trigger_prefix[i], t->name),
        "setting a trigger aside");
  return rc;
}

int sq_capture_resume(sqlite_store *s, sqlite_table *t) {
  return install_triggers(s, t);
}

/* ------------------------------------------------------------------ */
/* Items: initial versions and repair                                   */
/* ------------------------------------------------------------------ */

/* Gives every row of |t| its initial version (clock 0, site = the row
 * digest). The rows are read in table order and their items staged and
 * sorted, as a bulk load's are (items.c): a read in UUID order would visit
 * the table's pages at random. */
static int initial_versions(sqlite_store *s, sqlite_table *t) {
  sqlite3_stmt *rows = NULL;
  lipsync_value *values = NULL;
  canon_hasher h;
  int rc;

  if (canon_hasher_init(&h) != 0)
    return sq_fail_nomem(s);
  values = calloc(t->base.ncolumns + 1, sizeof *values);
  if (!values) {
    rc = sq_fail_nomem(s);
    goto out;
  }
  if (sq_prepare(s, t->select_sql, &rows) != SQLITE_OK) {
    rc = sq_fail_db(s, t->name, "reading the rows");
    goto out;
  }
  sq_set_big_cache(s, true);
  t->staging = true;
  rc = 0;
  while (!rc && (rc = sqlite3_step(rows)) == SQLITE_ROW) {
    lipsync_row row;
    memset(&row, 0, sizeof row);
    rc = sq_read_row(t, rows, values, &row);
    if (!rc && canon_row_digest(&h, &row, row.version.site) != 0)
      rc = sq_fail_nomem(s);
    if (!rc)
      rc = sq_items_insert(s, t, &row);
  }
  if (rc == SQLITE_DONE)
    rc = 0;
  else if (rc > 0)
    rc = sq_fail_db(s, t->name, "reading the rows");
  sqlite3_finalize(rows); /* before the items are written */
  rows = NULL;
  if (!rc) {
    sq_set_sort_cache(s, true);
    rc = sq_items_write_staged(s, t);
    sq_set_sort_cache(s, false);
  }
  t->staging = false;
out:
  sqlite3_finalize(rows);
  free(values);
  canon_hasher_free(&h);
  return rc;
}

/* Whether the live items of |t| may disagree with its rows: a cheap test
 * of the counts, which every captured write keeps equal. */
static int items_disagree(sqlite_store *s, sqlite_table *t, bool *out) {
  char *sql = sqlite3_mprintf("SELECT (SELECT count(*) FROM main.\"%w\") <>"
                              " (SELECT count(*) FROM main.\"%w\""
                              " WHERE NOT deleted)",
                              t->name, t->meta_name);
  sqlite3_stmt *st = NULL;
  int rc;
  *out = false;
  if (!sql)
    return sq_fail_nomem(s);
  rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  sqlite3_free(sql);
  if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
    *out = sqlite3_column_int(st, 0) != 0;
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? 0 : sq_fail_db(s, t->name, "checking the items");
}

/* Rows changed while capture was off: every item that disagrees with its
 * row gets one fresh version. */
static int repair_items(sqlite_store *s, sqlite_table *t) {
  const char *u = LIPSYNC_UUID_COLUMN;
  char *sql[3];
  lipsync_version v;
  int rc = sq_capture_tick(s, &v);
  if (rc)
    return rc;
  /* A tombstone whose row exists comes back to life. */
  sql[0] = sqlite3_mprintf("UPDATE main.\"%w\" AS m SET clock = ?1, site = ?2,"
                           " deleted = 0 WHERE deleted AND EXISTS (SELECT 1"
                           " FROM main.\"%w\" AS t WHERE t.\"%w\" = m.uuid)",
                           t->meta_name, t->name, u);
  /* A row without an item gets one. */
  sql[1] = sqlite3_mprintf(
      "INSERT INTO main.\"%w\"(uuid, clock, site, deleted)"
      " SELECT t.\"%w\", ?1, ?2, 0 FROM main.\"%w\" AS t WHERE t.\"%w\""
      " IS NOT NULL AND NOT EXISTS (SELECT 1 FROM main.\"%w\" AS m"
      " WHERE m.uuid = t.\"%w\")",
      t->meta_name, u, t->name, u, t->meta_name, u);
  /* A live item without a row is a deletion. */
  sql[2] = sqlite3_mprintf(
      "UPDATE main.\"%w\" AS m SET clock = ?1, site = ?2, deleted = 1"
      " WHERE NOT deleted AND NOT EXISTS (SELECT 1 FROM main.\"%w\" AS t"
      " WHERE t.\"%w\" = m.uuid)",
      t->meta_name, t->name, u);
  for (int i = 0; i < 3; i++) {
    sqlite3_stmt *st = NULL;
    if (!rc && !sql[i])
      rc = sq_fail_nomem(s);
    if (!rc && sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL) != SQLITE_OK)
      rc = sq_fail_db(s, t->name, "repairing the items");
    if (!rc) {
      sqlite3_bind_int64(st, 1, (sqlite3_int64)v.clock);
      sqlite3_bind_blob(st, 2, v.site, LIPSYNC_SITE_LEN, SQLITE_STATIC);
      if (sqlite3_step(st) != SQLITE_DONE)
        rc = sq_fail_db(s, t->name, "repairing the items");
    }
    sqlite3_finalize(st);
    sqlite3_free(sql[i]);
  }
  return rc;
}

int sq_capture_prepare(sqlite_store *s, sqlite_table *t) {
  bool found, disagree;
  int rc;

  if ((rc = ensure_state(s)) != 0)
    return rc;
  if ((rc = schema_lookup(s, "table", t->meta_name, &found, NULL)) != 0)
    return rc;
  if (!found) {
    rc = sq_exec_for_table(
        s, t,
        sqlite3_mprintf("CREATE TABLE main.\"%w\"(uuid TEXT PRIMARY KEY,"
                        " clock INTEGER NOT NULL, site BLOB NOT NULL,"
                        " deleted INTEGER NOT NULL DEFAULT 0,"
                        " base_clock INTEGER NOT NULL DEFAULT 0,"
                        " base_site BLOB) WITHOUT ROWID",
                        t->meta_name),
        "creating the metadata table");
    if (!rc)
      rc = initial_versions(s, t);
  } else if (!t->staging) {
    disagree = t->gave_uuids;
    if (!disagree)
      rc = items_disagree(s, t, &disagree);
    if (!rc && disagree)
      rc = repair_items(s, t);
  }
  /* A bulk load into an empty table runs without triggers (each would make
   * every insert open a statement journal), as without its indexes; both
   * come back before anything reads the table, at flush or commit: no other
   * connection can write meanwhile. */
  if (!rc && t->index_pending)
    rc = drop_triggers(s, t);
  else if (!rc)
    rc = install_triggers(s, t);
  if (!rc)
    rc = sq_exec_for_table(
        s, t,
        sqlite3_mprintf("INSERT OR IGNORE INTO main._lipsync_tables(name)"
                        " VALUES (%Q)",
                        t->name),
        "registering the table");
  if (!rc && !s->applying) {
    rc = exec(s, t->name,
              "UPDATE main._lipsync_state SET applying = 1 WHERE id = 1",
              "marking the sync");
    s->applying = rc == 0;
  }
  /* Items of rows bulk-loaded into an empty table wait in memory and join
   * the metadata table in UUID order (items.c). */
  if (!rc && t->index_pending)
    t->staging = true;
  return rc;
}

int sq_capture_end(sqlite_store *s) {
  if (!s->applying)
    return 0;
  s->applying = false;
  return exec(s, NULL,
              "UPDATE main._lipsync_state SET applying = 0 WHERE id = 1",
              "ending the sync");
}

/* ------------------------------------------------------------------ */
/* The end of a table's sync                                            */
/* ------------------------------------------------------------------ */

static int run_bound(sqlite_store *s, sqlite_table *t, char *sql,
                     sqlite3_int64 a, const char *what) {
  sqlite3_stmt *st = NULL;
  int rc;
  if (!sql)
    return sq_fail_nomem(s);
  rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  sqlite3_free(sql);
  if (rc == SQLITE_OK) {
    /* ?1 is |a|, ?2 the table's name, where the statement has them. */
    int n = sqlite3_bind_parameter_count(st);
    if (n >= 1)
      sqlite3_bind_int64(st, 1, a);
    if (n >= 2)
      sqlite3_bind_text(st, 2, t->name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : sq_fail_db(s, t->name, what);
}

int sq_capture_finish(sqlite_store *s, sqlite_table *t,
                      const lipsync_finish *f) {
  uint64_t horizon = f->horizon > INT64_MAX ? INT64_MAX : f->horizon;
  int rc;

  if ((rc = sq_check_clock(s, t, f->max_clock)) != 0 ||
      (f->as_client && (rc = sq_check_clock(s, t, f->server_clock)) != 0))
    return rc;
  if ((rc = sq_need_index(s, t)) != 0 || (rc = ensure_state(s)) != 0)
    return rc;
  rc = run_bound(s, t,
                 sqlite3_mprintf("UPDATE main._lipsync_state SET clock ="
                                 " max(clock, ?1) WHERE id = 1"),
                 (sqlite3_int64)f->max_clock, "observing the clock");
  if (!rc)
    rc = run_bound(s, t,
                   sqlite3_mprintf("DELETE FROM main.\"%w\" WHERE deleted"
                                   " AND clock < ?1",
                                   t->meta_name),
                   (sqlite3_int64)horizon, "purging tombstones");
  if (!rc && f->as_client)
    rc = run_bound(
        s, t,
        sqlite3_mprintf("UPDATE main.\"%w\" SET base_clock = clock,"
                        " base_site = site WHERE (base_clock IS NOT clock"
                        " OR base_site IS NOT site)",
                        t->meta_name),
        0, "recording the base versions");
  if (!rc && f->as_client)
    rc = run_bound(
        s, t,
        sqlite3_mprintf("INSERT INTO main._lipsync_tables(name, last_sync)"
                        " VALUES (?2, ?1) ON CONFLICT(name) DO UPDATE SET"
                        " last_sync = excluded.last_sync"),
        (sqlite3_int64)f->server_clock, "recording last_sync");
  if (!rc && f->as_client)
    t->base.last_sync = f->server_clock;
  return rc;
}
