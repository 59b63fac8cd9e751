/*
 * store_sqlite_capture.c: change capture for the SQLite backend (spec 6.7,
 * 8.8): the schema that keeps a version beside every row, the triggers that
 * give every local change a new version and a change sequence number, the
 * clock, where the database lives, the recount that repairs items that
 * disagree with their rows, and what a sync records at its end.
 *
 * Per database:
 *   _lipsync_state(id = 1, site BLOB, clock INTEGER, applying INTEGER,
 *                  seq INTEGER, layout INTEGER, home TEXT)
 *   _lipsync_tables(name TEXT PRIMARY KEY, last_sync INTEGER, sum BLOB,
 *                   count INTEGER, recount INTEGER, position BLOB,
 *                   ck_site BLOB, ck_token BLOB, ck_position BLOB,
 *                   bulk_seq INTEGER)
 *   _lipsync_peers(tbl TEXT, site BLOB, token BLOB) (a server's tokens)
 * Per synced table T:
 *   "_lipsync_meta_T"(uuid TEXT PRIMARY KEY, clock, site, deleted,
 *                     base_clock, base_site, seq, rowdig) WITHOUT ROWID,
 *     indexed by seq, and its tombstones by clock; the items of a bulk
 *     load (a first sync into an empty table, capture installed on a full
 *     one) share one sequence number, _lipsync_tables.bulk_seq, and are
 *     written with seq 0, outside the (partial) seq index;
 *   "_lipsync_prev_T"(uuid TEXT PRIMARY KEY, clock, site, deleted): for
 *     each item changed since the last fold, the state the kept summary
 *     (_lipsync_tables.sum, count) counts; clock NULL: none;
 *   triggers "_lipsync_ins_T", "_lipsync_upd_T", "_lipsync_del_T" (capture)
 *   and "_lipsync_uuid_T" (a UUID never changes).
 *
 * The triggers are plain SQL, so they capture the writes of every
 * connection, including those that never loaded this library; they cannot
 * hash, so they log the state an item had, and the next fold (items.c)
 * subtracts its digest and adds the new one. They do nothing while
 * _lipsync_state.applying is 1: the sync connection sets it inside its
 * transaction and resets it before COMMIT, so no other connection ever
 * sees it set (what the database does in response to the sync's writes:
 * store_sqlite_nested.c). Clocks are SQLite integers (signed 64-bit): wall
 * milliseconds << 16 stays far below 2^63 for millennia.
 */
#include "canon.h"
#include "hlc.h"
#include "buf.h"
#include "store_sqlite_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* The tick of the triggers: max(clock + 1, wall_ms << 16), and the next
 * change sequence number. */
#define TICK_SQL                                                               \
  "UPDATE _lipsync_state SET clock = max(clock + 1,"                           \
  " CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) << 16),"      \
  " seq = seq + 1;"
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
    " clock INTEGER NOT NULL DEFAULT 0, applying INTEGER NOT NULL DEFAULT 0,"
    " seq INTEGER NOT NULL DEFAULT 0, layout INTEGER NOT NULL DEFAULT 3,"
    " home TEXT);"
    "INSERT OR IGNORE INTO main._lipsync_state(id, site)"
    " VALUES (1, randomblob(16));"
    "CREATE TABLE IF NOT EXISTS main._lipsync_tables("
    "name TEXT PRIMARY KEY, last_sync INTEGER NOT NULL DEFAULT 0,"
    " sum BLOB, count INTEGER NOT NULL DEFAULT 0,"
    " recount INTEGER NOT NULL DEFAULT 0, position BLOB, ck_site BLOB,"
    " ck_token BLOB, ck_position BLOB, bulk_seq INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS main._lipsync_peers(tbl TEXT, site BLOB,"
    " token BLOB, PRIMARY KEY (tbl, site)) WITHOUT ROWID;";

/* Columns an older layout lacks, added in place. */
static const char *const state_columns[][2] = {
    {"_lipsync_state", "seq INTEGER NOT NULL DEFAULT 0"},
    {"_lipsync_state", "layout INTEGER NOT NULL DEFAULT 0"},
    {"_lipsync_state", "home TEXT"},
    {"_lipsync_tables", "sum BLOB"},
    {"_lipsync_tables", "count INTEGER NOT NULL DEFAULT 0"},
    {"_lipsync_tables", "recount INTEGER NOT NULL DEFAULT 0"},
    {"_lipsync_tables", "position BLOB"},
    {"_lipsync_tables", "ck_site BLOB"},
    {"_lipsync_tables", "ck_token BLOB"},
    {"_lipsync_tables", "ck_position BLOB"},
    {"_lipsync_tables", "bulk_seq INTEGER NOT NULL DEFAULT 0"},
};

/* Runs |sql| (from sqlite3_mprintf, freed here) with ?1 = |a| and ?2 the
 * table's name, where the statement has them. */
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

int sq_check_clock(sqlite_store *s, sqlite_table *t, uint64_t clock) {
  if (clock <= INT64_MAX)
    return 0;
  return sq_fail(s, LIPSYNC_ERR_INVALID_VALUE,
                 "table %s: clock %llu is out of range (at most 2^63 - 1)",
                 t ? t->name : "?", (unsigned long long)clock);
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

/* Whether table |table| of main has a column |column|. */
static int has_column(sqlite_store *s, const char *table, const char *column,
                      bool *found) {
  char *sql = sqlite3_mprintf("SELECT count(*) FROM pragma_table_info(%Q,"
                              " 'main') WHERE name = %Q",
                              table, column);
  sqlite3_int64 n;
  int rc;
  if (!sql)
    return sq_fail_nomem(s);
  rc = sq_query_int(s, table, sql, NULL, &n, NULL);
  sqlite3_free(sql);
  *found = n > 0;
  return rc;
}

/* The names this code gives its objects (spec LS-OPEN-4: all under the
 * reserved prefix): whole, or as a prefix followed by a table's name. */
static const char *const own_names[] = {"_lipsync_state", "_lipsync_tables",
                                        "_lipsync_peers"};
const char *const sq_own_prefixes[] = {SQ_META_PREFIX,  "_lipsync_prev_",
                                       "_lipsync_ins_", "_lipsync_upd_",
                                       "_lipsync_del_", "_lipsync_uuid_"};
const size_t sq_nown_prefixes =
    sizeof sq_own_prefixes / sizeof *sq_own_prefixes;

static bool own_name(const char *name) {
  for (size_t i = 0; i < sizeof own_names / sizeof *own_names; i++)
    if (strcmp(name, own_names[i]) == 0)
      return true;
  for (size_t i = 0; i < sq_nown_prefixes; i++)
    if (strncmp(name, sq_own_prefixes[i], strlen(sq_own_prefixes[i])) == 0 &&
        name[strlen(sq_own_prefixes[i])] != '\0')
      return true;
  return false;
}

static int foreign(sqlite_store *s, const char *what) {
  return sq_fail(s, LIPSYNC_ERR_STORAGE,
                 "the database holds %s: change-capture metadata that this "
                 "implementation does not own or understand (another "
                 "implementation's, or a newer version's); nothing was "
                 "changed",
                 what);
}

int sq_capture_check_owner(sqlite_store *s) {
  static const char q[] = "SELECT type, name FROM main.sqlite_schema"
                          " WHERE name LIKE '\\_lipsync%' ESCAPE '\\'"
                          " ORDER BY name";
  static const char *const state_columns_v1[] = {"site", "clock", "applying"};
  sqlite3_stmt *st;
  char what[300] = "";
  bool state = false, found;
  int rc;
  if (s->owner_checked)
    return 0;
  if (sq_prepare(s, q, &st) != SQLITE_OK)
    return sq_fail_db(s, NULL, "reading the schema");
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *type = (const char *)sqlite3_column_text(st, 0);
    const char *name = (const char *)sqlite3_column_text(st, 1);
    if (!type || !name)
      continue;
    if (!own_name(name)) {
      snprintf(what, sizeof what, "%s %s", type, name);
      break;
    }
    state = state || strcmp(name, "_lipsync_state") == 0;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return sq_fail_db(s, NULL, "reading the schema");
  if (what[0])
    return foreign(s, what);
  for (size_t i = 0;
       state && i < sizeof state_columns_v1 / sizeof *state_columns_v1; i++) {
    if ((rc = has_column(s, "_lipsync_state", state_columns_v1[i], &found)))
      return rc;
    if (!found) {
      snprintf(what, sizeof what, "table _lipsync_state without column %s",
               state_columns_v1[i]);
      return foreign(s, what);
    }
  }
  if (state && (rc = has_column(s, "_lipsync_state", "layout", &found)))
    return rc;
  if (state && found) {
    sqlite3_int64 v = 0;
    bool row;
    rc = sq_query_int(s, NULL,
                      "SELECT layout FROM main._lipsync_state WHERE id = 1",
                      NULL, &v, &row);
    if (rc)
      return rc;
    if (row && v > SQ_LAYOUT) {
      snprintf(what, sizeof what,
               "table _lipsync_state of layout %lld (this version knows "
               "layouts up to %d)",
               (long long)v, SQ_LAYOUT);
      return foreign(s, what);
    }
  }
  s->owner_checked = true;
  return 0;
}

/* Creates the state, registry and token tables, or brings those of an older
 * layout up to this one. */
static int ensure_state(sqlite_store *s) {
  int rc = sq_exec(s, NULL, state_sql, "creating _lipsync_state");
  for (size_t i = 0; !rc && i < sizeof state_columns / sizeof *state_columns;
       i++) {
    char name[32];
    bool found;
    sscanf(state_columns[i][1], "%31s", name);
    rc = has_column(s, state_columns[i][0], name, &found);
    if (!rc && !found) {
      char *sql = sqlite3_mprintf("ALTER TABLE main.\"%w\" ADD COLUMN %s",
                                  state_columns[i][0], state_columns[i][1]);
      rc = sql ? sq_exec(s, NULL, sql, "updating the capture schema")
               : sq_fail_nomem(s);
      sqlite3_free(sql);
    }
  }
  return rc;
}

int sq_capture_site(sqlite_store *s, uint8_t site[LIPSYNC_SITE_LEN]) {
  sqlite3_stmt *st;
  int rc;
  memset(site, 0, LIPSYNC_SITE_LEN);
  if (sq_prepare(s, "SELECT site FROM main._lipsync_state WHERE id = 1", &st) !=
      SQLITE_OK)
    return sq_fail_db(s, NULL, "reading the site id");
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && !sq_read_site(st, 0, false, site))
    rc = SQLITE_CORRUPT;
  sqlite3_finalize(st);
  if (rc == SQLITE_ROW)
    return 0;
  return sq_fail(s, LIPSYNC_ERR_STORAGE,
                 "_lipsync_state holds no 16-byte site id");
}

/* Reads the clock and site; |out| is the next tick (max(last + 1, wall)),
 * not recorded: a server reports it (spec LS-TOMB-2) without writing. */
static int read_clock(sqlite_store *s, lipsync_version *out, uint64_t *last) {
  sqlite3_stmt *st;
  int rc;
  memset(out, 0, sizeof *out);
  if (sq_prepare(s, "SELECT clock, site FROM main._lipsync_state WHERE id = 1",
                 &st) != SQLITE_OK)
    return sq_fail_db(s, NULL, "reading the clock");
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *last = (uint64_t)sqlite3_column_int64(st, 0);
    if (!sq_read_site(st, 1, false, out->site))
      rc = SQLITE_CORRUPT;
    out->clock = hlc_tick(*last, hlc_wall_ms());
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_ROW)
    return out->clock <= INT64_MAX ? 0
                                   : sq_fail(s, LIPSYNC_ERR_STORAGE,
                                             "_lipsync_state: clock overflow");
  if (rc == SQLITE_CORRUPT)
    return sq_fail(s, LIPSYNC_ERR_STORAGE,
                   "_lipsync_state: the site id is not 16 bytes");
  return rc == SQLITE_DONE
             ? sq_fail(s, LIPSYNC_ERR_STORAGE, "_lipsync_state has no row")
             : sq_fail_db(s, NULL, "reading the clock");
}

int sq_capture_tick(sqlite_store *s, lipsync_version *out) {
  bool found;
  uint64_t last;
  int rc = schema_lookup(s, "table", "_lipsync_state", &found, NULL);
  if (rc)
    return rc;
  if (!found) { /* a database that never synced: a site of its own */
    if ((s->in_txn && (rc = sq_begin_write(s)) != 0) ||
        (rc = ensure_state(s)) != 0)
      return rc;
  }
  return read_clock(s, out, &last);
}

int sq_capture_tick_write(sqlite_store *s, lipsync_version *out,
                          uint64_t *seq) {
  uint64_t last;
  sqlite3_stmt *st;
  int rc = read_clock(s, out, &last);
  if (rc)
    return rc;
  *seq = ++s->own_hi;
  if (sq_prepare(s, "UPDATE main._lipsync_state SET clock = ?1 WHERE id = 1",
                 &st) != SQLITE_OK)
    return sq_fail_db(s, NULL, "writing the clock");
  sqlite3_bind_int64(st, 1, (sqlite3_int64)out->clock);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : sq_fail_db(s, NULL, "writing the clock");
}

int sq_capture_read_last_sync(sqlite_store *s, sqlite_table *t) {
  sqlite3_stmt *st;
  bool found;
  int rc;

  t->base.last_sync = 0;
  t->bulk_seq = 0;
  if ((rc = schema_lookup(s, "table", "_lipsync_tables", &found, NULL)) != 0 ||
      !found)
    return rc;
  /* SELECT *: an older layout lacks bulk_seq until its migration. */
  if (sq_prepare(s, "SELECT * FROM main._lipsync_tables WHERE name = ?1",
                 &st) != SQLITE_OK)
    return sq_fail_db(s, t->name, "reading the table registry");
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  for (int i = 0; rc == SQLITE_ROW && i < sqlite3_column_count(st); i++) {
    const char *col = sqlite3_column_name(st, i);
    if (strcmp(col, "last_sync") == 0)
      t->base.last_sync = (uint64_t)sqlite3_column_int64(st, i);
    else if (strcmp(col, "bulk_seq") == 0)
      t->bulk_seq = (uint64_t)sqlite3_column_int64(st, i);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE
             ? 0
             : sq_fail_db(s, t->name, "reading the table registry");
}

int sq_capture_mark_bulk(sqlite_store *s, sqlite_table *t) {
  t->bulk_seq = ++s->own_hi;
  return run_bound(s, t,
                   sqlite3_mprintf("INSERT INTO main._lipsync_tables(name,"
                                   " bulk_seq) VALUES (%Q, ?1) ON"
                                   " CONFLICT(name) DO UPDATE SET bulk_seq ="
                                   " excluded.bulk_seq",
                                   t->name),
                   (sqlite3_int64)t->bulk_seq, "recording a bulk load");
}

/* ------------------------------------------------------------------ */
/* Where the database lives                                             */
/* ------------------------------------------------------------------ */

/* The device and inode of the database file ("" for a database with no
 * file), into |out|. A copy of the file is another file. */
static void file_home(sqlite_store *s, char *out, size_t len) {
  const char *path = sqlite3_db_filename(s->db, "main");
  struct stat st;
  out[0] = '\0';
  if (path && path[0] && stat(path, &st) == 0)
    snprintf(out, len, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
}

/* Whether the database is where its state says (or says nothing yet). */
static int home_matches(sqlite_store *s, bool *same) {
  char here[64];
  sqlite3_stmt *st;
  int rc;
  *same = true;
  file_home(s, here, sizeof here);
  if (!here[0])
    return 0;
  if (sq_prepare(s, "SELECT home FROM main._lipsync_state WHERE id = 1", &st) !=
      SQLITE_OK)
    return sq_fail_db(s, NULL, "reading _lipsync_state");
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
    *same = strcmp((const char *)sqlite3_column_text(st, 0), here) == 0;
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE
             ? 0
             : sq_fail_db(s, NULL, "reading _lipsync_state");
}

/* Records where the database lives. A database found elsewhere than where
 * it made its site id is a copy (or was moved): it takes a new site id
 * before it makes any version (spec LS-VERSION-4), and its checkpoints and
 * tokens, which name the old one, go. */
static int settle_home(sqlite_store *s) {
  char here[64];
  sqlite3_stmt *st;
  bool same;
  int rc;
  if (s->identity_checked)
    return 0;
  if ((rc = home_matches(s, &same)) != 0)
    return rc;
  file_home(s, here, sizeof here);
  if (!same && (rc = sq_exec(s, NULL,
                             "UPDATE main._lipsync_state SET site ="
                             " randomblob(16) WHERE id = 1;"
                             "UPDATE main._lipsync_tables SET ck_token = NULL,"
                             " ck_site = NULL, ck_position = NULL;"
                             "DELETE FROM main._lipsync_peers",
                             "giving a copied database a site id")) != 0)
    return rc;
  if (here[0]) {
    if (sq_prepare(s,
                   "UPDATE main._lipsync_state SET home = ?1 WHERE id = 1"
                   " AND home IS NOT ?1",
                   &st) != SQLITE_OK)
      return sq_fail_db(s, NULL, "writing _lipsync_state");
    sqlite3_bind_text(st, 1, here, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
      return sq_fail_db(s, NULL, "writing _lipsync_state");
  }
  s->identity_checked = true;
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

/* Appends the change of the item of |uuid_expr| (the state just ticked):
 * the state it had goes to the fold log unless one is there already, then
 * the item takes the clock, site and sequence number of the tick; a new
 * item gets the zero base, an existing one keeps its base. */
static void append_item_change(sqlite3_str *out, const sqlite_table *t,
                               const char *uuid_expr, int deleted) {
  sqlite3_str_appendf(
      out,
      " INSERT OR IGNORE INTO \"%w\"(uuid, clock, site, deleted)"
      " SELECT u.id, m.clock, m.site, m.deleted FROM (SELECT %s AS id) AS u"
      " LEFT JOIN \"%w\" AS m ON m.uuid = u.id WHERE u.id IS NOT NULL;"
      " INSERT INTO \"%w\"(uuid, clock, site, deleted, seq)"
      " SELECT %s, clock, site, %d, seq FROM _lipsync_state"
      " WHERE id = 1 ON CONFLICT(uuid) DO UPDATE SET"
      " clock = excluded.clock, site = excluded.site,"
      " deleted = excluded.deleted, seq = excluded.seq, rowdig = NULL;",
      t->prev_name, uuid_expr, t->meta_name, t->meta_name, uuid_expr, deleted);
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
  append_item_change(str, t, uuid_expr ? uuid_expr : "NULL", 0);
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
  append_item_change(str, t, "NEW.\"" LIPSYNC_UUID_COLUMN "\"", 0);
  sqlite3_str_appendall(str, " END");
  sql[TRIG_UPDATE] = sqlite3_str_finish(str);

  str = sqlite3_str_new(s->db);
  sqlite3_str_appendf(
      str,
      "CREATE TRIGGER main.\"%w%w\" AFTER DELETE ON \"%w\""
      " WHEN OLD.\"%w\" IS NOT NULL AND " NOT_APPLYING_SQL " BEGIN " TICK_SQL,
      trigger_prefix[TRIG_DELETE], t->name, t->name, LIPSYNC_UUID_COLUMN);
  append_item_change(str, t, "OLD.\"" LIPSYNC_UUID_COLUMN "\"", 1);
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

/* Whether every trigger of |t| is there and current; with |install|,
 * creates each that is missing and replaces one whose text differs from
 * today's (the table gained a column, say). */
static int check_triggers(sqlite_store *s, sqlite_table *t, bool install,
                          bool *current) {
  char *sql[NTRIGGERS] = {NULL};
  int rc = build_triggers(s, t, sql);

  *current = true;
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
      *current = false;
      if (install && found)
        rc = sq_exec_for_table(
            s, t, sqlite3_mprintf("DROP TRIGGER main.\"%w\"", name),
            "replacing a trigger");
      if (install && !rc &&
          sqlite3_exec(s->db, sql[i], NULL, NULL, NULL) != SQLITE_OK)
        rc = sq_fail_db(s, t->name, "creating a change capture trigger");
    }
    sqlite3_free(have);
    sqlite3_free(name);
  }
  for (int i = 0; i < NTRIGGERS; i++)
    sqlite3_free(sql[i]);
  return rc;
}

int sq_capture_resume(sqlite_store *s, sqlite_table *t) {
  bool current;
  return check_triggers(s, t, true, &current);
}

/* ------------------------------------------------------------------ */
/* Is the table ready?                                                  */
/* ------------------------------------------------------------------ */

/* Reads the registry row of |t|: whether it has a kept summary, and
 * whether a recount is due. */
static int registry_state(sqlite_store *s, sqlite_table *t, bool *has_sum,
                          bool *recount) {
  sqlite3_stmt *st;
  int rc;
  *has_sum = *recount = false;
  if (sq_prepare(s,
                 "SELECT sum IS NOT NULL, recount FROM main._lipsync_tables"
                 " WHERE name = ?1",
                 &st) != SQLITE_OK)
    return 0; /* an older layout */
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *has_sum = sqlite3_column_int(st, 0) != 0;
    *recount = sqlite3_column_int(st, 1) != 0;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE
             ? 0
             : sq_fail_db(s, t->name, "reading _lipsync_tables");
}

int sq_capture_ready(sqlite_store *s, sqlite_table *t, bool *ready) {
  sqlite3_int64 v;
  bool found, same, has_sum, recount, current;
  int rc;

  *ready = false;
  /* The state of this layout, in the file it names. */
  if (sq_query_int(s, NULL,
                   "SELECT layout FROM main._lipsync_state WHERE id = 1", NULL,
                   &v, &found) != 0 ||
      !found || v < SQ_LAYOUT) {
    snprintf(s->errmsg, sizeof s->errmsg, "no error");
    return 0;
  }
  if ((rc = home_matches(s, &same)) != 0 || !same)
    return rc;
  /* The table's registry row, with a summary and no recount due. */
  if ((rc = registry_state(s, t, &has_sum, &recount)) != 0 || !has_sum ||
      recount)
    return rc;
  /* Its items and fold log, and its triggers as today's code writes
   * them. */
  if ((rc = schema_lookup(s, "table", t->prev_name, &found, NULL)) != 0 ||
      !found)
    return rc;
  if ((rc = check_triggers(s, t, false, &current)) != 0 || !current)
    return rc;
  /* UUIDs: none missing (the insert trigger gives one; a row without
   * must have been written with capture off). */
  char *sql = sqlite3_mprintf("SELECT 1 FROM main.\"%w\" WHERE \"%w\" IS NULL"
                              " LIMIT 1",
                              t->name, LIPSYNC_UUID_COLUMN);
  if (!sql)
    return sq_fail_nomem(s);
  rc = sq_query_int(s, t->name, sql, NULL, &v, &found);
  sqlite3_free(sql);
  if (rc || found)
    return rc;
  *ready = true;
  s->identity_checked = true;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Items: initial versions, repair, recount                             */
/* ------------------------------------------------------------------ */

/* Writes the kept summary |fp| of |t|, as of now (the fold log empty). */
static int store_summary(sqlite_store *s, sqlite_table *t, const canon_fp *fp) {
  lipsync_summary sum;
  sqlite3_stmt *st;
  int rc;
  canon_fp_store(fp, &sum);
  if ((rc = sq_exec_for_table(
           s, t, sqlite3_mprintf("DELETE FROM main.\"%w\"", t->prev_name),
           "emptying the fold log")) != 0)
    return rc;
  if (sq_prepare(s,
                 "INSERT INTO main._lipsync_tables(name, sum, count)"
                 " VALUES (?1, ?2, ?3) ON CONFLICT(name) DO UPDATE SET"
                 " sum = excluded.sum, count = excluded.count",
                 &st) != SQLITE_OK)
    return sq_fail_db(s, t->name, "recording the summary");
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, sum.sum, LIPSYNC_DIGEST_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)sum.count);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0
                           : sq_fail_db(s, t->name, "recording the summary");
}

/* Gives every row of |t| its initial version (clock 0, site = the row
 * digest). The rows are read in table order and their items staged and
 * sorted, as a bulk load's are (items.c): a read in UUID order would visit
 * the table's pages at random. */
static int initial_versions(sqlite_store *s, sqlite_table *t) {
  sqlite3_stmt *rows = NULL;
  lipsync_value *values = NULL;
  int rc;

  values = calloc(t->base.ncolumns + 1, sizeof *values);
  if (!values)
    return sq_fail_nomem(s);
  if (sq_prepare(s, t->plain_sql, &rows) != SQLITE_OK) {
    rc = sq_fail_db(s, t->name, "reading the rows");
    goto out;
  }
  sq_set_big_cache(s, true);
  t->staging = true;
  t->bulk = true;
  canon_fp_init(&t->bulk_fp);
  rc = sq_capture_mark_bulk(s, t);
  while (!rc && (rc = sqlite3_step(rows)) == SQLITE_ROW) {
    lipsync_row row;
    memset(&row, 0, sizeof row);
    rc = sq_read_row(t, rows, values, &row);
    if (!rc && (canon_row_digest(&s->hasher, &row, row.version.site) != 0 ||
                canon_item_digest(&s->hasher, row.uuid, &row.version, false,
                                  row.digest) != 0))
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
  t->bulk = false;
  if (!rc)
    rc = store_summary(s, t, &t->bulk_fp);
  canon_fp_init(&t->bulk_fp);
out:
  sqlite3_finalize(rows);
  free(values);
  return rc;
}

/* Runs |sql| (from sqlite3_mprintf, freed here) with ?1 the clock, ?2 the
 * site, ?3 the sequence number of a fresh tick. */
static int run_with_tick(sqlite_store *s, sqlite_table *t, char *sql,
                         const lipsync_version *v, uint64_t seq,
                         const char *what) {
  sqlite3_stmt *st = NULL;
  int rc;
  if (!sql)
    return sq_fail_nomem(s);
  rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  sqlite3_free(sql);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, (sqlite3_int64)v->clock);
    sqlite3_bind_blob(st, 2, v->site, LIPSYNC_SITE_LEN, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)seq);
    rc = sqlite3_step(st);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : sq_fail_db(s, t->name, what);
}

/* Runs |fn| for each row |sql| returns (the table's columns, then
 * _lipsync_uuid, then any more), with the row's digest and |write|, a
 * statement prepared from |write_sql|. Both SQL texts come from
 * sqlite3_mprintf and are freed here. */
typedef int (*row_fn)(sqlite_store *s, sqlite_table *t, sqlite3_stmt *rows,
                      const uint8_t *digest, sqlite3_stmt *write, void *ctx);

static int each_row(sqlite_store *s, sqlite_table *t, char *sql,
                    char *write_sql, const char *what, row_fn fn, void *ctx) {
  sqlite3_stmt *rows = NULL, *write = NULL;
  lipsync_value *values = calloc(t->base.ncolumns + 1, sizeof *values);
  int rc = 0;

  if (!values || !sql || !write_sql)
    rc = sq_fail_nomem(s);
  else if (sq_prepare(s, sql, &rows) != SQLITE_OK)
    rc = sq_fail_db(s, t->name, "reading the rows");
  else if (sqlite3_prepare_v2(s->db, write_sql, -1, &write, NULL) != SQLITE_OK)
    rc = sq_fail_db(s, t->name, what);
  sqlite3_free(sql);
  sqlite3_free(write_sql);
  while (!rc && (rc = sqlite3_step(rows)) == SQLITE_ROW) {
    lipsync_row row;
    uint8_t digest[LIPSYNC_DIGEST_LEN];
    memset(&row, 0, sizeof row);
    if ((rc = sq_read_row(t, rows, values, &row)) != 0)
      break;
    if (canon_row_digest(&s->hasher, &row, digest) != 0)
      rc = sq_fail_nomem(s);
    else if ((rc = fn(s, t, rows, digest, write, ctx)) == 0 &&
             sqlite3_step(write) != SQLITE_DONE)
      rc = sq_fail_db(s, t->name, what);
    sqlite3_reset(write);
    if (rc < 0)
      break;
    rc = 0;
  }
  if (rc == SQLITE_DONE)
    rc = 0;
  else if (rc > 0)
    rc = sq_fail_db(s, t->name, "reading the rows");
  sqlite3_finalize(rows);
  sqlite3_finalize(write);
  free(values);
  return rc;
}

/* The UUID of the current row of |rows| (read by each_row). */
static void bind_row_uuid(sqlite_table *t, sqlite3_stmt *rows,
                          sqlite3_stmt *st) {
  sqlite3_bind_text(
      st, 1, (const char *)sqlite3_column_text(rows, (int)t->base.ncolumns),
      UUID_TEXT_LEN, SQLITE_TRANSIENT);
}

static int new_initial_item(sqlite_store *s, sqlite_table *t,
                            sqlite3_stmt *rows, const uint8_t *digest,
                            sqlite3_stmt *ins, void *ctx) {
  (void)s;
  bind_row_uuid(t, rows, ins);
  sqlite3_bind_blob(ins, 2, digest, LIPSYNC_DIGEST_LEN, SQLITE_TRANSIENT);
  sqlite3_bind_int64(ins, 3, (sqlite3_int64) * (const uint64_t *)ctx);
  return 0;
}

/* Gives every row of |t| that has no item the item of a row capture never
 * saw: its initial version (clock 0, site = the row digest, as capture
 * installed on a full table gives), sequence number |seq|. So it is new to
 * a peer that lacks it, equal to a peer's identical row, and older than
 * any change a peer made to it. */
static int items_for_rows(sqlite_store *s, sqlite_table *t, uint64_t seq) {
  return each_row(
      s, t,
      sqlite3_mprintf("SELECT * FROM (%s) AS t WHERE t.\"%w\" IS NOT NULL"
                      " AND NOT EXISTS (SELECT 1 FROM main.\"%w\" AS m"
                      " WHERE m.uuid = t.\"%w\")",
                      t->plain_sql, LIPSYNC_UUID_COLUMN, t->meta_name,
                      LIPSYNC_UUID_COLUMN),
      sqlite3_mprintf("INSERT INTO main.\"%w\"(uuid, clock, site, deleted,"
                      " seq, rowdig) VALUES (?1, 0, ?2, 0, ?3, ?2)",
                      t->meta_name),
      "repairing the items", new_initial_item, &seq);
}

/* Rows changed while capture was off: every item that disagrees with its
 * row as to whether it exists gets one fresh version. The kept summary is
 * recounted afterwards. */
static int repair_items(sqlite_store *s, sqlite_table *t) {
  const char *u = LIPSYNC_UUID_COLUMN;
  lipsync_version v;
  uint64_t seq;
  int rc = sq_capture_tick_write(s, &v, &seq);
  if (rc)
    return rc;
  t->wrote = true;
  /* A tombstone whose row exists comes back to life. */
  rc = run_with_tick(
      s, t,
      sqlite3_mprintf("UPDATE main.\"%w\" AS m SET clock = ?1, site = ?2,"
                      " deleted = 0, seq = ?3, rowdig = NULL WHERE deleted"
                      " AND EXISTS (SELECT 1 FROM main.\"%w\" AS t"
                      " WHERE t.\"%w\" = m.uuid)",
                      t->meta_name, t->name, u),
      &v, seq, "repairing the items");
  /* A row without an item gets one. */
  if (!rc)
    rc = items_for_rows(s, t, seq);
  /* A live item without a row is a deletion. */
  if (!rc)
    rc = run_with_tick(
        s, t,
        sqlite3_mprintf("UPDATE main.\"%w\" AS m SET clock = ?1, site = ?2,"
                        " deleted = 1, seq = ?3, rowdig = NULL WHERE NOT"
                        " deleted AND NOT EXISTS (SELECT 1 FROM main.\"%w\""
                        " AS t WHERE t.\"%w\" = m.uuid)",
                        t->meta_name, t->name, u),
        &v, seq, "repairing the items");
  return rc;
}

/* Where check_contents is: the fresh version it gives rows changed with
 * capture off, taken at the first one. */
typedef struct contents_check {
  lipsync_version fresh;
  uint64_t seq;
  bool ticked;
} contents_check;

static int check_row(sqlite_store *s, sqlite_table *t, sqlite3_stmt *rows,
                     const uint8_t *digest, sqlite3_stmt *upd, void *ctx) {
  contents_check *cc = ctx;
  int n = (int)t->base.ncolumns + 1, rc;
  const void *have = sqlite3_column_blob(rows, n);
  bool known = sqlite3_column_bytes(rows, n) == LIPSYNC_DIGEST_LEN;
  if (known && memcmp(have, digest, LIPSYNC_DIGEST_LEN) == 0)
    return 1;                 /* as recorded: nothing to write */
  if (known && !cc->ticked) { /* changed with capture off */
    if ((rc = sq_capture_tick_write(s, &cc->fresh, &cc->seq)) != 0)
      return rc;
    cc->ticked = true;
  }
  bind_row_uuid(t, rows, upd);
  sqlite3_bind_blob(upd, 2, digest, LIPSYNC_DIGEST_LEN, SQLITE_TRANSIENT);
  if (known) {
    sqlite3_bind_int64(upd, 3, (sqlite3_int64)cc->fresh.clock);
    sqlite3_bind_blob(upd, 4, cc->fresh.site, LIPSYNC_SITE_LEN,
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(upd, 5, (sqlite3_int64)cc->seq);
  } else {
    sqlite3_bind_null(upd, 3);
    sqlite3_bind_null(upd, 4);
    sqlite3_bind_null(upd, 5);
  }
  t->wrote = true;
  return 0;
}

/* Compares every live row with the digest its item recorded at the last
 * recount (or the digest an initial version carries as its site): a row
 * whose values changed with capture off gets a fresh version; rows
 * recorded for the first time, or changed since through capture, record
 * their digest now. */
static int check_contents(sqlite_store *s, sqlite_table *t) {
  contents_check cc;
  memset(&cc, 0, sizeof cc);
  /* An initial version's site is its row's digest. */
  return each_row(
      s, t,
      sqlite3_mprintf("SELECT t.*, coalesce(m.rowdig, CASE WHEN m.clock = 0"
                      " THEN m.site END) FROM (%s) AS t JOIN main.\"%w\""
                      " AS m ON m.uuid = t.\"%w\" WHERE NOT m.deleted",
                      t->plain_sql, t->meta_name, LIPSYNC_UUID_COLUMN),
      sqlite3_mprintf("UPDATE main.\"%w\" SET rowdig = ?2, clock ="
                      " coalesce(?3, clock), site = coalesce(?4, site), seq ="
                      " coalesce(?5, seq) WHERE uuid = ?1",
                      t->meta_name),
      "recording row digests", check_row, &cc);
}

/* Recomputes the kept summary of |t| from its items and repairs what
 * disagrees with the rows; forgets the checkpoint (spec LS-INC-17). */
int sq_capture_recount(sqlite_store *s, sqlite_table *t) {
  canon_fp fp;
  int rc;
  if ((rc = repair_items(s, t)) != 0 || (rc = check_contents(s, t)) != 0 ||
      (rc = sq_items_sum_all(s, t, &fp)) != 0 ||
      (rc = store_summary(s, t, &fp)) != 0)
    return rc;
  t->summarized = false;
  return sq_exec_for_table(
      s, t,
      sqlite3_mprintf("UPDATE main._lipsync_tables SET recount = 0,"
                      " ck_token = NULL WHERE name = %Q",
                      t->name),
      "recording the recount");
}

/* Brings the items of a table captured by an older layout up to this one:
 * sequence numbers, row digests, the fold log, the kept summary. */
static int migrate_items(sqlite_store *s, sqlite_table *t) {
  bool found;
  canon_fp fp;
  int rc = has_column(s, t->meta_name, "seq", &found);
  if (!rc && !found)
    rc = sq_exec_for_table(
        s, t,
        sqlite3_mprintf("ALTER TABLE main.\"%w\" ADD COLUMN seq INTEGER NOT"
                        " NULL DEFAULT 0; ALTER TABLE main.\"%w\" ADD COLUMN"
                        " rowdig BLOB",
                        t->meta_name, t->meta_name),
        "updating the item table");
  if (!rc)
    rc = sq_items_sum_all(s, t, &fp);
  return rc ? rc : store_summary(s, t, &fp);
}

/* The fold log and the indexes of the items of |t|. */
static int ensure_item_tables(sqlite_store *s, sqlite_table *t) {
  return sq_exec_for_table(
      s, t,
      sqlite3_mprintf(
          "CREATE TABLE IF NOT EXISTS main.\"%w\"(uuid TEXT PRIMARY KEY,"
          " clock INTEGER, site BLOB, deleted INTEGER) WITHOUT ROWID;"
          "CREATE INDEX IF NOT EXISTS main.\"%w_seq\" ON \"%w\"(seq)"
          " WHERE seq > 0;"
          "CREATE INDEX IF NOT EXISTS main.\"%w_tomb\" ON \"%w\"(clock)"
          " WHERE deleted",
          t->prev_name, t->meta_name, t->meta_name, t->meta_name, t->meta_name),
      "creating the item tables");
}

int sq_capture_prepare(sqlite_store *s, sqlite_table *t) {
  bool found, has_sum, recount;
  int rc;

  /* The state may be new: the sync's own writes are not captured. */
  if ((rc = ensure_state(s)) != 0 || (rc = sq_capture_begin_write(s)) != 0 ||
      (rc = settle_home(s)) != 0)
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
                        " base_site BLOB, seq INTEGER NOT NULL DEFAULT 0,"
                        " rowdig BLOB) WITHOUT ROWID",
                        t->meta_name),
        "creating the metadata table");
    if (!rc)
      rc = ensure_item_tables(s, t);
    if (!rc)
      rc = initial_versions(s, t);
    if (rc)
      return rc;
  } else {
    if ((rc = ensure_item_tables(s, t)) != 0 ||
        (rc = registry_state(s, t, &has_sum, &recount)) != 0)
      return rc;
    if (!has_sum && (rc = migrate_items(s, t)) != 0)
      return rc;
    if (recount || t->gave_uuids) {
      if ((rc = sq_capture_recount(s, t)) != 0)
        return rc;
    }
  }
  if ((rc = sq_capture_resume(s, t)) != 0)
    return rc;
  return sq_exec_for_table(
      s, t,
      sqlite3_mprintf("INSERT OR IGNORE INTO main._lipsync_tables(name)"
                      " VALUES (%Q); UPDATE main._lipsync_state SET"
                      " layout = %d WHERE id = 1 AND layout < %d",
                      t->name, SQ_LAYOUT, SQ_LAYOUT),
      "registering the table");
}

int sq_capture_begin_write(sqlite_store *s) {
  bool found;
  int rc;
  if ((rc = schema_lookup(s, "table", "_lipsync_state", &found, NULL)) != 0 ||
      !found)
    return rc;
  /* The own writes of the transaction take the numbers after the state's
   * (own_lo was set from it when the snapshot began). */
  if (!s->applying) {
    rc = sq_exec(s, NULL,
                 "UPDATE main._lipsync_state SET applying = 1 WHERE id = 1",
                 "marking the sync");
    s->applying = rc == 0;
  }
  return rc;
}

int sq_capture_end(sqlite_store *s) {
  sqlite3_stmt *st;
  int rc;
  if (!s->applying)
    return 0;
  s->applying = false;
  if (sq_prepare(s,
                 "UPDATE main._lipsync_state SET applying = 0, seq ="
                 " max(seq, ?1) WHERE id = 1",
                 &st) != SQLITE_OK)
    return sq_fail_db(s, NULL, "ending the sync");
  sqlite3_bind_int64(st, 1, (sqlite3_int64)s->own_hi);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : sq_fail_db(s, NULL, "ending the sync");
}

/* ------------------------------------------------------------------ */
/* Checkpoints and tokens (spec 8.8.1)                                  */
/* ------------------------------------------------------------------ */

static void copy_blob(sqlite3_stmt *st, int col, uint8_t *out, size_t max,
                      size_t *len) {
  size_t n = (size_t)sqlite3_column_bytes(st, col);
  const void *p = sqlite3_column_blob(st, col);
  *len = p && n <= max ? n : 0;
  if (*len)
    memcpy(out, p, *len);
}

int sq_load_checkpoint(sqlite_store *s, sqlite_table *t,
                       lipsync_checkpoint *out) {
  sqlite3_stmt *st;
  size_t site_len, token_len;
  int rc;
  memset(out, 0, sizeof *out);
  if (sq_prepare(s,
                 "SELECT ck_site, ck_token, ck_position, position, recount"
                 " FROM main._lipsync_tables WHERE name = ?1",
                 &st) != SQLITE_OK)
    return 0; /* never synced */
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    copy_blob(st, 0, out->server_site, LIPSYNC_SITE_LEN, &site_len);
    copy_blob(st, 1, out->token, LIPSYNC_SITE_LEN, &token_len);
    copy_blob(st, 2, out->server_position.data, LIPSYNC_POSITION_MAX,
              &out->server_position.len);
    copy_blob(st, 3, out->client_position.data, LIPSYNC_POSITION_MAX,
              &out->client_position.len);
    out->has = site_len == LIPSYNC_SITE_LEN && token_len == LIPSYNC_SITE_LEN &&
               out->client_position.len > 0 && sqlite3_column_int(st, 4) == 0;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE
             ? 0
             : sq_fail_db(s, t->name, "reading the checkpoint");
}

int sq_load_token(sqlite_store *s, sqlite_table *t, const uint8_t *site,
                  uint8_t *token, int *found) {
  sqlite3_stmt *st;
  size_t len;
  int rc;
  *found = 0;
  if (sq_prepare(s,
                 "SELECT token FROM main._lipsync_peers WHERE tbl = ?1"
                 " AND site = ?2",
                 &st) != SQLITE_OK)
    return 0; /* no token yet */
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, site, LIPSYNC_SITE_LEN, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    copy_blob(st, 0, token, LIPSYNC_SITE_LEN, &len);
    *found = len == LIPSYNC_SITE_LEN;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE
             ? 0
             : sq_fail_db(s, t->name, "reading a token");
}

int sq_distrust(sqlite_store *s, const char *name) {
  sqlite3_stmt *st;
  int rc;
  if (s->in_txn)
    return sq_fail(s, LIPSYNC_ERR_INTERNAL, "distrust: a transaction is open");
  if (sq_exec(s, NULL, "BEGIN IMMEDIATE", "begin") != 0)
    return LIPSYNC_ERR_STORAGE;
  if (sq_prepare(s,
                 "UPDATE main._lipsync_tables SET recount = 1, ck_token ="
                 " NULL WHERE name = ?1",
                 &st) != SQLITE_OK) {
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return 0; /* nothing recorded, nothing to distrust */
  }
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    rc = sq_fail_db(s, name, "recording a failed verification");
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
  }
  return sq_exec(s, NULL, "COMMIT", "commit");
}

/* ------------------------------------------------------------------ */
/* The end of a table's sync                                            */
/* ------------------------------------------------------------------ */

/* The client's items that the session covers become clean: those changed
 * since its previous position (all, without one) that its new position
 * covers (spec LS-POLICY-5; a change another writer made meanwhile stays
 * dirty, LS-STORE-4). */
static int record_bases(sqlite_store *s, sqlite_table *t) {
  lipsync_checkpoint old;
  uint64_t since = 0, lo, hi;
  sqlite3_stmt *st;
  int rc = sq_load_checkpoint(s, t, &old);
  if (rc)
    return rc;
  if (old.client_position.len &&
      sq_items_parse_position(s, &old.client_position, &since, &lo, &hi) != 0)
    since = 0;
  /* The items of a bulk load (seq 0) changed at bulk_seq. */
  uint64_t b = t->bulk_seq;
  bool bulk =
      b > since && (b <= s->read_seq || (b >= s->own_lo && b <= s->own_hi));
  for (int pass = 0; pass < (bulk ? 2 : 1); pass++) {
    if ((rc = sq_prepare_mprintf(
             s, t, &st, "recording the base versions",
             pass ? "UPDATE main.\"%w\" SET base_clock = clock, base_site ="
                    " site WHERE seq = 0 AND (base_clock IS NOT clock OR"
                    " base_site IS NOT site)"
                  : "UPDATE main.\"%w\" SET base_clock = clock, base_site ="
                    " site WHERE seq > ?1 AND seq > 0 AND (seq <= ?2 OR seq"
                    " BETWEEN ?3 AND ?4) AND (base_clock IS NOT clock OR"
                    " base_site IS NOT site)",
             t->meta_name)) != 0)
      return rc;
    if (!pass) {
      sqlite3_bind_int64(st, 1, (sqlite3_int64)since);
      sqlite3_bind_int64(st, 2, (sqlite3_int64)s->read_seq);
      sqlite3_bind_int64(st, 3, (sqlite3_int64)s->own_lo);
      sqlite3_bind_int64(st, 4, (sqlite3_int64)s->own_hi);
    }
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
      return sq_fail_db(s, t->name, "recording the base versions");
  }
  return 0;
}

/* The client's checkpoint and position of |t| (spec LS-INC-6). */
static int record_checkpoint(sqlite_store *s, sqlite_table *t,
                             const lipsync_checkpoint *ck, uint64_t last_sync) {
  sqlite3_stmt *st;
  int rc;
  if (sq_prepare(s,
                 "INSERT INTO main._lipsync_tables(name, last_sync, position,"
                 " ck_site, ck_token, ck_position) VALUES (?1, ?2, ?3, ?4,"
                 " ?5, ?6) ON CONFLICT(name) DO UPDATE SET"
                 " last_sync = excluded.last_sync, position ="
                 " excluded.position, ck_site = excluded.ck_site,"
                 " ck_token = excluded.ck_token, ck_position ="
                 " excluded.ck_position",
                 &st) != SQLITE_OK)
    return sq_fail_db(s, t->name, "recording the checkpoint");
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)last_sync);
  sqlite3_bind_blob(st, 3, ck->client_position.data,
                    (int)ck->client_position.len, SQLITE_STATIC);
  if (ck->has) {
    sqlite3_bind_blob(st, 4, ck->server_site, LIPSYNC_SITE_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, ck->token, LIPSYNC_SITE_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, ck->server_position.data,
                      (int)ck->server_position.len, SQLITE_STATIC);
  }
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0
                           : sq_fail_db(s, t->name, "recording the checkpoint");
}

static int record_token(sqlite_store *s, sqlite_table *t, const uint8_t *site,
                        const uint8_t *token) {
  sqlite3_stmt *st;
  int rc;
  if (sq_prepare(s,
                 "INSERT INTO main._lipsync_peers(tbl, site, token)"
                 " VALUES (?1, ?2, ?3) ON CONFLICT(tbl, site) DO UPDATE SET"
                 " token = excluded.token",
                 &st) != SQLITE_OK)
    return sq_fail_db(s, t->name, "recording a token");
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, site, LIPSYNC_SITE_LEN, SQLITE_STATIC);
  sqlite3_bind_blob(st, 3, token, LIPSYNC_SITE_LEN, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? 0 : sq_fail_db(s, t->name, "recording a token");
}

/* Purges the tombstones below |horizon|, through the fold log so that the
 * kept summary loses them too. */
static int purge(sqlite_store *s, sqlite_table *t, uint64_t horizon) {
  sqlite3_int64 h = horizon > INT64_MAX ? INT64_MAX : (sqlite3_int64)horizon;
  int rc = run_bound(s, t,
                     sqlite3_mprintf("INSERT OR IGNORE INTO main.\"%w\"(uuid,"
                                     " clock, site, deleted) SELECT uuid,"
                                     " clock, site, deleted FROM main.\"%w\""
                                     " WHERE deleted AND clock < ?1",
                                     t->prev_name, t->meta_name),
                     h, "purging tombstones");
  if (!rc)
    rc = run_bound(s, t,
                   sqlite3_mprintf("DELETE FROM main.\"%w\" WHERE deleted"
                                   " AND clock < ?1",
                                   t->meta_name),
                   h, "purging tombstones");
  if (!rc && sqlite3_changes(s->db) > 0)
    t->wrote = true;
  return rc;
}

int sq_capture_finish(sqlite_store *s, sqlite_table *t,
                      const lipsync_finish *f) {
  static const lipsync_checkpoint none;
  lipsync_version now;
  lipsync_summary fold;
  uint64_t last = 0;
  int rc;

  if ((rc = sq_check_clock(s, t, f->max_clock)) != 0 ||
      (f->as_client && (rc = sq_check_clock(s, t, f->server_clock)) != 0))
    return rc;
  if ((rc = sq_need_index(s, t)) != 0)
    return rc;
  /* A server session that changed nothing writes nothing (spec LS-INC-5):
   * only a clock it must pass, or a token to keep, makes it write. */
  if (!s->writing) {
    if ((rc = read_clock(s, &now, &last)) != 0)
      return rc;
    if (!f->as_client && !f->new_token && f->max_clock <= last)
      return 0;
    if ((rc = sq_begin_write(s)) != 0)
      return rc;
  }
  rc = run_bound(s, t,
                 sqlite3_mprintf("UPDATE main._lipsync_state SET clock ="
                                 " max(clock, ?1) WHERE id = 1"),
                 (sqlite3_int64)f->max_clock, "observing the clock");
  if (!rc && f->as_client)
    rc = record_bases(s, t);
  if (!rc && f->as_client)
    rc = record_checkpoint(s, t, f->checkpoint ? f->checkpoint : &none,
                           f->server_clock);
  if (!rc && f->as_client)
    t->base.last_sync = f->server_clock;
  if (!rc && !f->as_client && f->new_token && f->client_site)
    rc = record_token(s, t, f->client_site, f->new_token);
  if (!rc)
    rc = purge(s, t, f->horizon);
  if (!rc && t->wrote)
    rc = sq_items_fold(s, t, true, &fold);
  if (!rc)
    rc = settle_home(s);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Maintenance                                                          */
/* ------------------------------------------------------------------ */

static void free_names(char **names, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

/* Whether a table of |names| has changes to fold or tombstones below
 * |horizon|: two index probes each, without the write lock. */
static bool maintain_needed(sqlite_store *s, char **names, size_t n,
                            uint64_t horizon) {
  sqlite3_int64 h = horizon > INT64_MAX ? INT64_MAX : (sqlite3_int64)horizon;
  bool needed = false;
  for (size_t i = 0; i < n && !needed; i++) {
    sqlite3_stmt *st = NULL;
    char *sql = sqlite3_mprintf(
        "SELECT EXISTS (SELECT 1 FROM main.\"_lipsync_prev_%w\") OR EXISTS"
        " (SELECT 1 FROM main.\"_lipsync_meta_%w\" WHERE deleted AND clock"
        " < ?1)",
        names[i], names[i]);
    /* A table whose capture is not (or not fully) installed: the write
     * path decides. */
    if (!sql || sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
      needed = true;
    else {
      sqlite3_bind_int64(st, 1, h);
      needed = sqlite3_step(st) != SQLITE_ROW || sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_free(sql);
  }
  return needed;
}

/* Folds the changes of every captured table into its kept summary and
 * purges its old tombstones, in one short write transaction, when changes
 * are waiting: a server that only serves reads folds nothing otherwise.
 * Never blocks for long: a busy database is left for next time. */
int sq_maintain(sqlite_store *s, uint64_t horizon) {
  sqlite3_stmt *st;
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc, saved = s->lock_timeout_ms;

  if (s->in_txn)
    return sq_fail(s, LIPSYNC_ERR_INTERNAL, "maintain: a transaction is open");
  sq_checkpoint_if_due(s);
  if (sq_prepare(s, "SELECT name FROM main._lipsync_tables", &st) != SQLITE_OK)
    return 0; /* nothing captured */
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    if (vec_reserve((void **)&names, &cap, n + 1, sizeof *names) ||
        !(names[n] = strdup(name ? name : ""))) {
      rc = SQLITE_NOMEM;
      break;
    }
    n++;
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_DONE && !maintain_needed(s, names, n, horizon)) {
    free_names(names, n);
    return 0;
  }
  s->lock_timeout_ms = 200;
  rc = rc == SQLITE_DONE ? s->base.methods->begin(&s->base) : sq_fail_nomem(s);
  s->lock_timeout_ms = saved;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    lipsync_table *table;
    lipsync_summary fold;
    bool ready;
    if (s->base.methods->open_table(&s->base, names[i], &table) != 0)
      continue; /* dropped since */
    sqlite_table *t = (sqlite_table *)table;
    if ((rc = sq_capture_ready(s, t, &ready)) != 0 || !ready)
      continue;
    if (horizon)
      rc = purge(s, t, horizon);
    if (!rc)
      rc = sq_items_fold(s, t, true, &fold);
  }
  free_names(names, n);
  if (rc == 0)
    return s->base.methods->commit(&s->base);
  if (s->in_txn)
    s->base.methods->rollback(&s->base);
  return rc == LIPSYNC_ERR_TRY_AGAIN ? 0 : rc;
}
