/*
 * store_sqlite.c: the SQLite storage backend, one lipsync_store over one
 * connection.
 *
 * A sync reads in a plain (deferred) transaction: in WAL mode that is a
 * snapshot, and it blocks no other reader or writer. It takes the write lock
 * only when it has something to write (begin_write): in place when nobody
 * committed since the snapshot, else in a new transaction (BEGIN IMMEDIATE,
 * waiting for the lock at most the lock timeout), remembering which items
 * other writers changed in between, so that touching one of them fails with
 * TRY_AGAIN instead of overwriting it (spec LS-STORE-4). Every table handle
 * and cursor lives until the transaction ends: commit and rollback finalize
 * their statements and free them. Statements name the columns in canonical
 * order, so a table's physical column order never matters, and quote every
 * identifier, so any name SQLite accepts works.
 *
 * _lipsync_uuid holds the 36-character lowercase text form of each UUID.
 * Its text order is the byte order of the 16 raw bytes, so a UUID range is a
 * range scan of the column's unique index.
 *
 * SQLite converts some values on their way into a column (type affinity:
 * 3.0 becomes 3 in an INTEGER column, 3 becomes '3' in a TEXT one, NaN
 * becomes NULL anywhere). A sync must never change a value silently, so
 * insert refuses every value that would not read back exactly as given; see
 * value_survives_affinity().
 *
 * Beside every row of a prepared table lives its item (version, deleted
 * flag, base): store_sqlite_capture.c installs the tables and triggers that
 * keep them, store_sqlite_items.c writes and reads them.
 */
#include "canon.h"
#include "errbuf.h"
#include "fault.h"
#include "buf.h"
#include "store_sqlite_int.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a sync waits for another writer's lock, unless told
 * (set_lock_timeout): as long as a client waits for an answer. */
#define DEFAULT_LOCK_TIMEOUT_MS 60000
/* Page cache of a connection the store opens while it inserts: 32 MiB.
 * With SQLite's default (2 MiB) a large sync spills its changes to the WAL
 * long before commit, and inserting a million rows with their UUID index
 * takes more than twice as long. Pages are only allocated as they are
 * used. */
#define BIG_CACHE_PRAGMA "PRAGMA cache_size = -32768"
#define DEFAULT_CACHE_PRAGMA "PRAGMA cache_size = -2000"
/* While the indexes set aside and the staged items are sorted (CREATE
 * INDEX, INSERT ... SELECT ... ORDER BY): SQLite's sorter keeps as much in
 * memory as the page cache may hold, on top of the cache itself; a
 * smaller cache keeps the peak down and the sorts no slower. */
#define SORT_CACHE_PRAGMA "PRAGMA cache_size = -12000"

/* The bounds of a scan of rows, after "... WHERE NOT m.deleted". */
static const char *const scan_where[4] = {
    "",
    " AND t.\"" LIPSYNC_UUID_COLUMN "\" >= ?1",
    " AND t.\"" LIPSYNC_UUID_COLUMN "\" < ?2",
    " AND t.\"" LIPSYNC_UUID_COLUMN "\" >= ?1 AND t.\"" LIPSYNC_UUID_COLUMN
    "\" < ?2",
};

static const uint8_t empty_bytes[1];

/* ------------------------------------------------------------------ */
/* Errors                                                               */
/* ------------------------------------------------------------------ */

int sq_fail(sqlite_store *s, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  errbuf_vformat(s->errmsg, sizeof s->errmsg, fmt, ap);
  va_end(ap);
  return code;
}

int sq_code(int rc) {
  return (rc & 0xFF) == SQLITE_NOMEM ? LIPSYNC_ERR_NOMEM : LIPSYNC_ERR_STORAGE;
}

/* Fails with SQLite's message for the last call on |s|'s connection. */
int sq_fail_db(sqlite_store *s, const char *table, const char *what) {
  int rc = sqlite3_extended_errcode(s->db);
  if (atomic_load(&s->interrupted))
    return sq_fail(s, LIPSYNC_ERR_SHUTTING_DOWN, "%s: interrupted: stopping",
                   what);
  const char *msg = sqlite3_errmsg(s->db);
  if (table)
    return sq_fail(s, sq_code(rc), "table %s: %s: %s", table, what, msg);
  return sq_fail(s, sq_code(rc), "%s: %s", what, msg);
}

int sq_fail_nomem(sqlite_store *s) {
  return sq_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
}

/* ------------------------------------------------------------------ */
/* Affinity                                                             */
/* ------------------------------------------------------------------ */

static bool is_sql_space(uint8_t c) {
  return c == ' ' || (c >= '\t' && c <= '\r');
}

static bool is_digit(uint8_t c) {
  return c >= '0' && c <= '9';
}

/*
 * True if a numeric affinity would turn this text into a number: SQLite's
 * sqlite3AtoF() accepts optional whitespace, a sign, digits with an optional
 * decimal point, an optional exponent and whitespace, and nothing else (no
 * hexadecimal, "inf" or "nan"; a NUL ends the number, so the text stays).
 */
static bool looks_numeric(const uint8_t *p, size_t len) {
  size_t i = 0, digits = 0;
  while (i < len && is_sql_space(p[i]))
    i++;
  if (i < len && (p[i] == '+' || p[i] == '-'))
    i++;
  for (; i < len && is_digit(p[i]); i++)
    digits++;
  if (i < len && p[i] == '.')
    for (i++; i < len && is_digit(p[i]); i++)
      digits++;
  if (digits == 0)
    return false;
  if (i < len && (p[i] == 'e' || p[i] == 'E')) {
    size_t exp_digits = 0;
    i++;
    if (i < len && (p[i] == '+' || p[i] == '-'))
      i++;
    for (; i < len && is_digit(p[i]); i++)
      exp_digits++;
    if (exp_digits == 0)
      return false;
  }
  while (i < len && is_sql_space(p[i]))
    i++;
  return i == len;
}

/* True if SQLite would store |d| in a numeric column as an integer: its
 * sqlite3VdbeIntegerAffinity() converts a real that survives the round trip
 * through int64, except at the two ends of the int64 range. -0.0 converts
 * to 0. */
static bool real_becomes_integer(double d) {
  return d > -9223372036854775808.0 && d < 9223372036854775808.0 &&
         d == (double)(int64_t)d;
}

/*
 * True if |v| reads back exactly as given from a column of kind |kind|.
 * Otherwise sets |*why| to the reason. Every rule mirrors a conversion
 * SQLite makes on the way in; the oracle test checks them against the
 * linked SQLite.
 */
static bool value_survives_affinity(column_kind kind, const lipsync_value *v,
                                    const char **why) {
  if (v->type == LIPSYNC_REAL && v->u.real != v->u.real) {
    *why = "SQLite stores NaN as NULL";
    return false;
  }
  if (kind == KIND_ROWID) {
    if (v->type == LIPSYNC_INTEGER)
      return true;
    *why = v->type == LIPSYNC_NULL
               ? "NULL in the INTEGER PRIMARY KEY column becomes a new rowid"
               : "the INTEGER PRIMARY KEY column holds only integers";
    return false;
  }
  switch (v->type) {
  case LIPSYNC_INTEGER:
    if (kind == KIND_TEXT) {
      *why = "it would be stored as TEXT";
      return false;
    }
    if (kind == KIND_REAL) {
      *why = "it would be stored as a REAL";
      return false;
    }
    return true;
  case LIPSYNC_REAL:
    if (kind == KIND_TEXT) {
      *why = "it would be stored as TEXT";
      return false;
    }
    /* A REAL column stores an integral real as an integer and turns it back
     * into the same real when read, except -0.0, which comes back as 0.0. */
    if (kind == KIND_REAL && v->u.real == 0 && signbit(v->u.real)) {
      *why = "it would be stored as 0.0";
      return false;
    }
    if (kind == KIND_NUMERIC && real_becomes_integer(v->u.real)) {
      *why = "it would be stored as an INTEGER";
      return false;
    }
    return true;
  case LIPSYNC_TEXT:
    if ((kind == KIND_NUMERIC || kind == KIND_REAL) &&
        looks_numeric(v->u.bytes.data, v->u.bytes.len)) {
      *why = "it would be stored as a number";
      return false;
    }
    return true;
  default:
    return true; /* NULL and BLOB are never converted */
  }
}

static column_kind kind_of(const char *type, bool strict) {
  if (strcmp(type, "text") == 0)
    return KIND_TEXT;
  if (strcmp(type, "real") == 0)
    return KIND_REAL;
  if (strcmp(type, "integer") == 0)
    return KIND_NUMERIC;
  /* In a STRICT table only ANY maps to numeric, and ANY stores every value
   * as given. */
  if (strcmp(type, "numeric") == 0)
    return strict ? KIND_BLOB : KIND_NUMERIC;
  return KIND_BLOB;
}

/* ------------------------------------------------------------------ */
/* Tables and cursors                                                   */
/* ------------------------------------------------------------------ */

int sq_prepare(sqlite_store *s, const char *sql, sqlite3_stmt **out) {
  return sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, out,
                            NULL);
}

int sq_prepare_mprintf(sqlite_store *s, sqlite_table *t, sqlite3_stmt **out,
                       const char *what, const char *fmt, ...) {
  va_list ap;
  char *sql;
  int rc;
  va_start(ap, fmt);
  sql = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  if (!sql)
    return sq_fail_nomem(s);
  rc = sq_prepare(s, sql, out);
  sqlite3_free(sql);
  return rc == SQLITE_OK ? 0 : sq_fail_db(s, t ? t->name : NULL, what);
}

int sq_take_stmt(sqlite_store *s, sqlite_table *t, int shape, const char *sql,
                 sqlite3_stmt **out) {
  *out = t->idle[shape];
  t->idle[shape] = NULL;
  if (*out)
    return 0;
  if (!sql)
    return sq_fail_nomem(s);
  if (sq_prepare(s, sql, out) != SQLITE_OK)
    return sq_fail_db(s, t->name, "preparing a query");
  return 0;
}

int sq_cursor_open(sqlite_store *s, sqlite_table *t, int shape,
                   cursor_kind kind, sqlite3_stmt *stmt, sqlite_cursor **out) {
  size_t n = kind == CURSOR_ROWS ? t->base.ncolumns : 0;
  sqlite_cursor *c = calloc(1, sizeof *c + n * sizeof c->values[0]);
  *out = c;
  if (!c) {
    sqlite3_finalize(stmt);
    return sq_fail_nomem(s);
  }
  c->base.table = &t->base;
  c->table = t;
  c->shape = shape;
  c->kind = kind;
  c->stmt = stmt;
  c->next = t->cursors;
  t->cursors = c;
  return 0;
}

/* Frees |c|. Its statement goes back to the table for the next cursor of
 * the same shape when |keep| and there is room; otherwise it is
 * finalized. */
static void cursor_free(sqlite_cursor *c, bool keep) {
  sqlite_table *t = c->table;
  if (keep && c->stmt && !t->idle[c->shape]) {
    sqlite3_reset(c->stmt);
    sqlite3_clear_bindings(c->stmt); /* the bounds live in |c| */
    t->idle[c->shape] = c->stmt;
  } else {
    sqlite3_finalize(c->stmt);
  }
  free(c->uuids);
  free(c);
}

static void free_deferred(sqlite_table *t);

static void table_free(sqlite_table *t) {
  if (!t)
    return;
  while (t->cursors) {
    sqlite_cursor *c = t->cursors;
    t->cursors = c->next;
    cursor_free(c, false);
  }
  for (int i = 0; i < NSHAPES; i++)
    sqlite3_finalize(t->idle[i]);
  sq_items_free(t);
  sqlite3_finalize(t->insert_stmt);
  sqlite3_finalize(t->fetch_stmt);
  free_deferred(t);
  if (t->columns)
    for (size_t i = 0; i < t->base.ncolumns; i++)
      free((char *)t->columns[i].name);
  free(t->columns);
  free(t->kinds);
  free(t->fetch_values);
  free(t->window);
  sqlite3_free(t->select_sql);
  sqlite3_free(t->plain_sql);
  sqlite3_free(t->meta_name);
  sqlite3_free(t->prev_name);
  free(t->name);
  free(t);
}

/* Ends the life of every table handle and cursor of the transaction. */
static void free_tables(sqlite_store *s) {
  while (s->tables) {
    sqlite_table *t = s->tables;
    s->tables = t->next;
    table_free(t);
  }
}

/* Resets every statement of the open tables (their transaction is about to
 * end), keeping the handles: the session goes on with them in a new
 * transaction. A cursor still open fails from now on. */
static void reset_tables(sqlite_store *s) {
  for (sqlite_table *t = s->tables; t; t = t->next)
    for (sqlite_cursor *c = t->cursors; c; c = c->next) {
      sqlite3_reset(c->stmt);
      if (!c->status)
        c->status = sq_fail(s, LIPSYNC_ERR_INTERNAL,
                            "table %s: a cursor was open when the "
                            "transaction began to write",
                            t->name);
    }
}

int sq_check_window(sqlite_store *s, sqlite_table *t, const uint8_t *uuid) {
  size_t lo = 0, hi = t->nwindow;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = memcmp(t->window[mid], uuid, LIPSYNC_UUID_LEN);
    if (c == 0) {
      char text[UUID_TEXT_LEN + 1];
      lipsync_uuid_format(uuid, text);
      return sq_fail(s, LIPSYNC_ERR_TRY_AGAIN,
                     "table %s: row %s was changed by another writer during "
                     "the sync; nothing was changed, sync again",
                     t->name, text);
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return 0;
}

int sq_query_int(sqlite_store *s, const char *table, const char *sql,
                 const char *arg, sqlite3_int64 *out, bool *found) {
  sqlite3_stmt *st;
  int rc;
  *out = 0;
  if (found)
    *found = false;
  if (sq_prepare(s, sql, &st) != SQLITE_OK)
    return sq_fail_db(s, table, "reading the database");
  if (arg)
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *out = sqlite3_column_int64(st, 0);
    if (found)
      *found = true;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    return sq_fail_db(s, table, "reading the database");
  return 0;
}

/* Checks that |name| is exactly the name of an ordinary table of "main". */
static int find_table(sqlite_store *s, const char *name) {
  static const char sql[] = "SELECT rootpage FROM main.sqlite_schema"
                            " WHERE type = 'table' AND name = ?1";
  sqlite3_stmt *st;
  int rc;
  sqlite3_int64 rootpage = 0;

  /* SQLite reserves these names whatever their case. */
  if (sqlite3_strnicmp(name, "sqlite_", 7) == 0)
    return sq_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE,
                   "no table %s (SQLite's internal tables cannot be synced)",
                   name);
  /* Nor can the tables of change capture. */
  if (sqlite3_strnicmp(name, "_lipsync_", 9) == 0)
    return sq_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE,
                   "no table %s (LipSync's own tables cannot be synced)", name);
  if (sq_prepare(s, sql, &st) != SQLITE_OK)
    return sq_fail_db(s, name, "looking up the table");
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    rootpage = sqlite3_column_int64(st, 0);
  else if (rc != SQLITE_DONE)
    sq_fail_db(s, name, "looking up the table");
  sqlite3_finalize(st);
  if (rc == SQLITE_DONE)
    return sq_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE, "no table %s", name);
  if (rc != SQLITE_ROW)
    return sq_code(rc);
  if (rootpage == 0)
    return sq_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE,
                   "no table %s (virtual tables cannot be synced)", name);
  return 0;
}

/* Runs the schema query |sql| with table |name| as ?1 and sets |*out| to
 * whether its first row's first column is nonzero. */
static int query_flag(sqlite_store *s, const char *name, const char *sql,
                      bool *out) {
  sqlite3_stmt *st;
  int rc;
  *out = false;
  if (sq_prepare(s, sql, &st) != SQLITE_OK)
    return sq_fail_db(s, name, "reading the schema");
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    *out = sqlite3_column_int(st, 0) != 0;
  else if (rc != SQLITE_DONE)
    sq_fail_db(s, name, "reading the schema");
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sq_code(rc);
}

/* True if the table is STRICT. SQLite without pragma_table_list (before
 * 3.37) has no STRICT tables either. */
static bool table_is_strict(sqlite_store *s, const char *name) {
  static const char sql[] = "SELECT strict FROM pragma_table_list(?1)"
                            " WHERE schema = 'main'";
  sqlite3_stmt *st;
  bool strict = false;
  if (sq_prepare(s, sql, &st) != SQLITE_OK)
    return false;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW)
    strict = sqlite3_column_int(st, 0) != 0;
  sqlite3_finalize(st);
  return strict;
}

/* Reads the columns of |t| into canonical order and works out what each
 * does to the values stored in it. */
static int read_columns(sqlite_store *s, sqlite_table *t) {
  static const char sql[] = "SELECT name, type, pk, hidden"
                            " FROM pragma_table_xinfo(?1, 'main')";
  sqlite3_stmt *st;
  size_t n = 0, cap = 0, npk = 0, acap = 0;
  const char *pk_name = NULL; /* the only primary key column, if one */
  /* SQLite's affinity of each column as read, for t->kinds: it follows
   * the declared type, not the canonical type (a DATE column has NUMERIC
   * affinity). */
  const char **affinity = NULL;
  int rc, err = 0;

  if (sq_prepare(s, sql, &st) != SQLITE_OK)
    return sq_fail_db(s, t->name, "reading the columns");
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    const char *type = (const char *)sqlite3_column_text(st, 1);
    int pk = sqlite3_column_int(st, 2), hidden = sqlite3_column_int(st, 3);
    if (!name) {
      err = sq_fail_nomem(s);
      break;
    }
    if (pk)
      npk++;
    /* SQLite matches column names without regard to ASCII case, so
     * "_LIPSYNC_UUID" is the UUID column too. */
    if (sqlite3_stricmp(name, LIPSYNC_UUID_COLUMN) == 0)
      continue;
    /* Hidden (virtual table) and generated columns are not synced: each
     * database computes its generated columns itself (spec LS-TABLE-3). */
    if (hidden)
      continue;
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      lipsync_column *cols = realloc(t->columns, ncap * sizeof *cols);
      if (!cols) {
        err = sq_fail_nomem(s);
        break;
      }
      t->columns = cols;
      cap = ncap;
    }
    t->columns[n].type = canon_type_from_declared(type);
    t->columns[n].name = strdup(name);
    if (n == acap) {
      acap = acap ? acap * 2 : 8;
      const char **grown = realloc(affinity, acap * sizeof *affinity);
      if (!grown) {
        free((char *)t->columns[n].name);
        err = sq_fail_nomem(s);
        break;
      }
      affinity = grown;
    }
    affinity[n] = canon_affinity_from_declared(type);
    if (!t->columns[n].name) {
      err = sq_fail_nomem(s);
      break;
    }
    if (pk)
      pk_name = t->columns[n].name;
    t->base.ncolumns = ++n;
  }
  if (!err && rc != SQLITE_DONE)
    err = sq_fail_db(s, t->name, "reading the columns");
  sqlite3_finalize(st);
  if (err) {
    free(affinity);
    return err;
  }

  /* An INTEGER PRIMARY KEY is the rowid itself: it replaces NULL with a new
   * rowid and refuses anything but integers. SQLite keeps no index for it,
   * while any other primary key (WITHOUT ROWID tables included) has one. */
  bool rowid_alias = false;
  if (npk == 1 && pk_name) {
    bool has_pk_index;
    err = query_flag(s, t->name,
                     "SELECT count(*) FROM pragma_index_list(?1, 'main')"
                     " WHERE origin = 'pk'",
                     &has_pk_index);
    if (err) {
      free(affinity);
      return err;
    }
    rowid_alias = !has_pk_index;
  }
  bool strict = table_is_strict(s, t->name);

  /* Sorting moves the columns; each keeps its name pointer, which finds
   * its affinity again. */
  const char **names = malloc((n ? n : 1) * sizeof *names);
  t->kinds = malloc((n ? n : 1) * sizeof *t->kinds);
  if (!names || !t->kinds) {
    free(names);
    free(affinity);
    return sq_fail_nomem(s);
  }
  for (size_t i = 0; i < n; i++)
    names[i] = t->columns[i].name;
  canon_sort_columns(t->columns, n);
  for (size_t i = 0; i < n; i++) {
    size_t j = 0;
    while (names[j] != t->columns[i].name)
      j++;
    t->kinds[i] = kind_of(affinity[j], strict);
    if (rowid_alias && t->columns[i].name == pk_name)
      t->kinds[i] = KIND_ROWID;
  }
  free(names);
  free(affinity);
  return 0;
}

/*
 * SELECT t."c1", ..., t."_lipsync_uuid" FROM main."name" AS t
 *
 * Column references in expressions are qualified: SQLite reads an
 * unqualified double-quoted name that matches no column as a string
 * literal, which would quietly select the text "_lipsync_uuid" from a table
 * that lacks the column. |with_item| joins the live item of each row
 * (clock, site, base_clock, base_site): a row without a live item (written
 * with capture off, until a recount repairs it) is not read.
 */
static char *build_select(sqlite_store *s, const sqlite_table *t,
                          bool with_item) {
  sqlite3_str *sql = sqlite3_str_new(s->db);
  sqlite3_str_appendall(sql, "SELECT ");
  for (size_t i = 0; i < t->base.ncolumns; i++)
    sqlite3_str_appendf(sql, "t.\"%w\", ", t->columns[i].name);
  sqlite3_str_appendf(sql, "t.\"%w\"", LIPSYNC_UUID_COLUMN);
  if (with_item)
    sqlite3_str_appendf(sql,
                        ", m.clock, m.site, m.base_clock, m.base_site FROM"
                        " main.\"%w\" AS t JOIN main.\"%w\" AS m ON m.uuid ="
                        " t.\"%w\" WHERE NOT m.deleted",
                        t->name, t->meta_name, LIPSYNC_UUID_COLUMN);
  else
    sqlite3_str_appendf(sql, " FROM main.\"%w\" AS t", t->name);
  return sqlite3_str_finish(sql);
}

static int sqlite_store_open_table(lipsync_store *store, const char *name,
                                   lipsync_table **out) {
  sqlite_store *s = (sqlite_store *)store;
  sqlite_table *t;
  int rc;

  *out = NULL;
  if (!name)
    return sq_fail(s, LIPSYNC_ERR_INVALID_ARGUMENT, "no table name");
  for (t = s->tables; t; t = t->next) {
    if (strcmp(t->name, name) == 0) {
      *out = &t->base;
      return 0;
    }
  }
  rc = find_table(s, name);
  if (rc)
    return rc;

  t = calloc(1, sizeof *t);
  if (!t)
    return sq_fail_nomem(s);
  t->store = s;
  t->name = strdup(name);
  if (!t->name) {
    rc = sq_fail_nomem(s);
    goto fail;
  }
  rc = read_columns(s, t);
  if (rc)
    goto fail;
  t->fetch_values = calloc(t->base.ncolumns + 1, sizeof *t->fetch_values);
  t->meta_name = sqlite3_mprintf("_lipsync_meta_%s", name);
  t->prev_name = sqlite3_mprintf("_lipsync_prev_%s", name);
  if (t->meta_name) {
    t->plain_sql = build_select(s, t, false);
    t->select_sql = build_select(s, t, true);
  }
  if (!t->fetch_values || !t->select_sql || !t->plain_sql || !t->meta_name ||
      !t->prev_name) {
    rc = sq_fail_nomem(s);
    goto fail;
  }
  rc = sq_capture_read_last_sync(s, t);
  if (rc)
    goto fail;
  t->base.name = t->name;
  t->base.columns = t->columns;
  t->next = s->tables;
  s->tables = t;
  *out = &t->base;
  return 0;

fail:
  table_free(t);
  return rc;
}

/* Runs |sql| (from sqlite3_mprintf, freed here) on behalf of |t|. */
int sq_exec_free(sqlite_store *s, const char *table, char *sql,
                 const char *what) {
  int rc;
  if (!sql)
    return sq_fail_nomem(s);
  rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
  sqlite3_free(sql);
  return rc == SQLITE_OK ? 0 : sq_fail_db(s, table, what);
}

int sq_exec_for_table(sqlite_store *s, sqlite_table *t, char *sql,
                      const char *what) {
  return sq_exec_free(s, t->name, sql, what);
}

/* A name that reaches the rowid of |t|'s rows, unless columns shadow all
 * three. Only used to point at a row in error messages. */
const char *sq_rowid_name(const sqlite_table *t) {
  static const char *const names[] = {"rowid", "_rowid_", "oid"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    bool taken = false;
    for (size_t j = 0; j < t->base.ncolumns && !taken; j++)
      taken = sqlite3_stricmp(t->columns[j].name, names[i]) == 0;
    if (!taken)
      return names[i];
  }
  return NULL;
}

/*
 * Finds one row whose UUID is not in canonical text form, in one pass of
 * SQL over the column (its index, when there is one). The test is
 * lipsync_uuid_valid(), the rule read_row applies: on a million rows it
 * takes a twentieth of the time of a GLOB pattern with 32 character
 * classes.
 */
static int check_uuids(sqlite_store *s, sqlite_table *t) {
  const char *rowid = sq_rowid_name(t);
  sqlite3_stmt *st = NULL;
  int rc;

  for (int with_rowid = rowid != NULL; with_rowid >= 0; with_rowid--) {
    char *sql = sqlite3_mprintf(
        "SELECT substr(quote(t.\"%w\"), 1, 60)%s%s FROM main.\"%w\" AS t"
        " WHERE NOT lipsync_uuid_valid(t.\"%w\") LIMIT 1",
        LIPSYNC_UUID_COLUMN, with_rowid ? ", t." : "", with_rowid ? rowid : "",
        t->name, LIPSYNC_UUID_COLUMN);
    if (!sql)
      return sq_fail_nomem(s);
    rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc == SQLITE_OK)
      break;
    /* A WITHOUT ROWID table has no rowid to name: retry without it. */
    if (!with_rowid)
      return sq_fail_db(s, t->name, "checking _lipsync_uuid");
  }
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    char value[128];
    const unsigned char *q = sqlite3_column_text(st, 0);
    errbuf_describe_bytes(q ? q : empty_bytes,
                          q ? (size_t)sqlite3_column_bytes(st, 0) : 0, value,
                          sizeof value);
    if (sqlite3_column_count(st) > 1)
      rc = sq_fail(s, LIPSYNC_ERR_STORAGE,
                   "table %s: row %lld has a malformed " LIPSYNC_UUID_COLUMN
                   " %s",
                   t->name, (long long)sqlite3_column_int64(st, 1), value);
    else
      rc = sq_fail(s, LIPSYNC_ERR_STORAGE,
                   "table %s: a row has a malformed " LIPSYNC_UUID_COLUMN " %s",
                   t->name, value);
  } else if (rc == SQLITE_DONE) {
    rc = 0;
  } else {
    rc = sq_fail_db(s, t->name, "checking _lipsync_uuid");
  }
  sqlite3_finalize(st);
  return rc;
}

/* After CREATE UNIQUE INDEX failed on a constraint: names one duplicate. */
static int fail_duplicates(sqlite_store *s, sqlite_table *t) {
  char *sql = sqlite3_mprintf("SELECT t.\"%w\", count(*) FROM main.\"%w\""
                              " AS t GROUP BY 1 HAVING count(*) > 1 LIMIT 1",
                              LIPSYNC_UUID_COLUMN, t->name);
  sqlite3_stmt *st = NULL;
  int rc = LIPSYNC_ERR_STORAGE;
  if (sql && sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    const unsigned char *u = sqlite3_column_text(st, 0);
    char value[64];
    errbuf_describe_bytes(u ? u : empty_bytes,
                          u ? (size_t)sqlite3_column_bytes(st, 0) : 0, value,
                          sizeof value);
    sq_fail(s, rc,
            "table %s: duplicate " LIPSYNC_UUID_COLUMN
            " values ('%s' appears %lld times)",
            t->name, value, (long long)sqlite3_column_int64(st, 1));
  } else {
    sq_fail(s, rc, "table %s: duplicate " LIPSYNC_UUID_COLUMN " values",
            t->name);
  }
  sqlite3_finalize(st);
  sqlite3_free(sql);
  return rc;
}

/* Whether a unique index on _lipsync_uuid alone exists, under any name: a
 * second would only slow every insert down. */
static int has_uuid_index(sqlite_store *s, sqlite_table *t, bool *found) {
  static const char find_sql[] =
      "SELECT count(*) FROM pragma_index_list(?1, 'main') AS il"
      " WHERE il.\"unique\" AND NOT il.partial"
      " AND (SELECT count(*) FROM pragma_index_info(il.name, 'main')) = 1"
      " AND (SELECT name FROM pragma_index_info(il.name, 'main'))"
      " = '" LIPSYNC_UUID_COLUMN "' COLLATE NOCASE";
  return query_flag(s, t->name, find_sql, found);
}

static int create_uuid_index(sqlite_store *s, sqlite_table *t) {
  char *sql = sqlite3_mprintf("CREATE UNIQUE INDEX main.\"%w_%w\""
                              " ON \"%w\"(\"%w\")",
                              t->name, LIPSYNC_UUID_COLUMN, t->name,
                              LIPSYNC_UUID_COLUMN);
  if (!sql)
    return sq_fail_nomem(s);
  int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
  sqlite3_free(sql);
  if (rc == SQLITE_OK)
    return 0;
  if ((rc & 0xFF) == SQLITE_CONSTRAINT)
    return fail_duplicates(s, t);
  return sq_fail_db(s, t->name, "creating the _lipsync_uuid index");
}

static void free_deferred(sqlite_table *t) {
  for (size_t i = 0; i < t->ndeferred; i++)
    sqlite3_free(t->deferred[i]);
  free(t->deferred);
  t->deferred = NULL;
  t->ndeferred = 0;
}

/* Drops the indexes of an empty table that can be dropped (not those of
 * its PRIMARY KEY and UNIQUE constraints, nor, while foreign keys are
 * enforced, a unique index another table's foreign key may need), keeping
 * their CREATE statements for rebuild_indexes(). */
static int defer_indexes(sqlite_store *s, sqlite_table *t) {
  static const char sql[] =
      "SELECT m.name, m.sql FROM main.sqlite_schema AS m"
      " WHERE m.type = 'index' AND m.sql IS NOT NULL"
      " AND m.tbl_name = ?1 COLLATE NOCASE AND NOT (?2 AND EXISTS"
      " (SELECT 1 FROM pragma_index_list(?1, 'main') AS i"
      "  WHERE i.name = m.name AND i.\"unique\") AND EXISTS"
      " (SELECT 1 FROM main.sqlite_schema AS c,"
      "  pragma_foreign_key_list(c.name, 'main') AS f"
      "  WHERE c.type = 'table' AND f.\"table\" = ?1 COLLATE NOCASE))";
  sqlite3_stmt *st;
  char **drops = NULL;
  int rc;
  if (sq_prepare(s, sql, &st) != SQLITE_OK)
    return sq_fail_db(s, t->name, "reading the schema");
  sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, sq_fkeys_enforced(s));
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    size_t n = t->ndeferred;
    char **grown = realloc(t->deferred, (n + 1) * sizeof *grown);
    char **grown_drops = realloc(drops, (n + 1) * sizeof *drops);
    if (grown)
      t->deferred = grown;
    if (grown_drops)
      drops = grown_drops;
    char *create = sqlite3_mprintf("%s", sqlite3_column_text(st, 1));
    char *drop =
        sqlite3_mprintf("DROP INDEX main.\"%w\"", sqlite3_column_text(st, 0));
    if (!grown || !grown_drops || !create || !drop) {
      sqlite3_free(create);
      sqlite3_free(drop);
      rc = SQLITE_NOMEM;
      break;
    }
    t->deferred[n] = create;
    drops[n] = drop;
    t->ndeferred++;
  }
  sqlite3_finalize(st); /* the schema cannot change under a live read */
  if (rc == SQLITE_NOMEM)
    rc = sq_fail_nomem(s);
  else if (rc != SQLITE_DONE)
    rc = sq_fail_db(s, t->name, "reading the schema");
  else
    rc = 0;
  for (size_t i = 0; i < t->ndeferred; i++) {
    if (!rc && sqlite3_exec(s->db, drops[i], NULL, NULL, NULL) != SQLITE_OK)
      rc = sq_fail_db(s, t->name, "setting an index aside");
    sqlite3_free(drops[i]);
  }
  free(drops);
  return rc;
}

/* Rebuilds what defer_indexes() set aside, and the UUID index if the table
 * had none: before a lookup needs them, or at commit. */
static int rebuild_indexes(sqlite_store *s, sqlite_table *t) {
  int rc = 0;
  if (!t->index_pending)
    return 0;
  t->index_pending = false;
  for (size_t i = 0; i < t->ndeferred && !rc; i++) {
    int e = sqlite3_exec(s->db, t->deferred[i], NULL, NULL, NULL);
    if (e == SQLITE_OK)
      continue;
    /* "UNIQUE constraint failed: t._lipsync_uuid": name the duplicate. */
    if ((e & 0xFF) == SQLITE_CONSTRAINT &&
        strstr(sqlite3_errmsg(s->db), "." LIPSYNC_UUID_COLUMN))
      rc = fail_duplicates(s, t);
    else
      rc = sq_fail_db(s, t->name, "rebuilding an index");
  }
  free_deferred(t);
  bool found = false;
  if (!rc && (rc = has_uuid_index(s, t, &found)) == 0 && !found)
    rc = create_uuid_index(s, t);
  return rc;
}

/* Builds the indexes set aside before a lookup by UUID. */
int sq_need_index(sqlite_store *s, sqlite_table *t) {
  bool sorting = s->big_cache && (t->index_pending || t->staging);
  int rc;
  if (sorting)
    sq_set_sort_cache(s, true);
  rc = rebuild_indexes(s, t);
  if (!rc)
    rc = sq_items_unstage(s, t);
  if (sorting)
    sq_set_sort_cache(s, false);
  return rc;
}

static int table_is_empty(sqlite_store *s, sqlite_table *t, bool *empty) {
  char *sql = sqlite3_mprintf("SELECT 1 FROM main.\"%w\" LIMIT 1", t->name);
  sqlite3_int64 one;
  bool found;
  int rc;
  if (!sql)
    return sq_fail_nomem(s);
  rc = sq_query_int(s, t->name, sql, NULL, &one, &found);
  sqlite3_free(sql);
  *empty = !found;
  return rc;
}

/*
 * The first row inserted into a table that was empty, items included, when
 * it was prepared starts a bulk load: rows arriving in random UUID order
 * would make every index a random walk, so the indexes and triggers are set
 * aside and built once, before anything reads the table again or at commit
 * (rebuild_indexes); items join their table in UUID order (items.c). No
 * other connection writes meanwhile: this one holds the write lock.
 */
static int start_bulk(sqlite_store *s, sqlite_table *t) {
  int rc;
  t->empty = false;
  t->bulk = true;
  t->bulk_sorted = true;
  canon_fp_init(&t->bulk_fp);
  if ((rc = sq_capture_mark_bulk(s, t)) != 0)
    return rc;
  if ((rc = sq_exec_for_table(
           s, t,
           sqlite3_mprintf("DROP TRIGGER IF EXISTS main.\"_lipsync_ins_%w\";"
                           "DROP TRIGGER IF EXISTS main.\"_lipsync_upd_%w\";"
                           "DROP TRIGGER IF EXISTS main.\"_lipsync_del_%w\";"
                           "DROP TRIGGER IF EXISTS main.\"_lipsync_uuid_%w\"",
                           t->name, t->name, t->name, t->name),
           "setting a trigger aside")) != 0)
    return rc;
  t->index_pending = true;
  return defer_indexes(s, t);
}

static int back_to_reading(sqlite_store *s);

static int sqlite_store_prepare_table(lipsync_store *store,
                                      lipsync_table *table) {
  sqlite_store *s = (sqlite_store *)store;
  sqlite_table *t = (sqlite_table *)table;
  bool has_column, ready = false, empty = false, found;
  int rc;

  if ((rc = sq_capture_check_owner(s)) != 0)
    return rc;
  /* A prepared table in order needs no write: the session stays a
   * reader. */
  if (!s->writing) {
    if ((rc = sq_capture_ready(s, t, &ready)) != 0)
      return rc;
    if (!ready && (rc = sq_begin_write(s)) != 0)
      return rc;
    /* While this session waited for the lock, another one (the sessions
     * of a hundred clients arriving together) may have prepared the table:
     * then it goes on reading, without the lock. */
    if (!ready && s->resnapshot_taken &&
        ((rc = sq_capture_ready(s, t, &ready)) != 0 ||
         (ready && (rc = back_to_reading(s)) != 0)))
      return rc;
  }
  if (!ready) {
    rc = query_flag(s, t->name,
                    "SELECT count(*) FROM pragma_table_xinfo(?1, 'main')"
                    " WHERE name = '" LIPSYNC_UUID_COLUMN "' COLLATE NOCASE",
                    &has_column);
    if (rc)
      return rc;
    if (!has_column) {
      rc = sq_exec_for_table(s, t,
                             sqlite3_mprintf("ALTER TABLE main.\"%w\""
                                             " ADD COLUMN \"%w\" TEXT",
                                             t->name, LIPSYNC_UUID_COLUMN),
                             "adding _lipsync_uuid");
      if (rc)
        return rc;
    }
    rc = sq_exec_for_table(
        s, t,
        sqlite3_mprintf("UPDATE main.\"%w\" SET \"%w\" ="
                        " lipsync_uuid4() WHERE \"%w\" IS NULL",
                        t->name, LIPSYNC_UUID_COLUMN, LIPSYNC_UUID_COLUMN),
        "giving rows a UUID");
    if (rc)
      return rc;
    /* Rows written with capture off: their items need repair. */
    t->gave_uuids = sqlite3_changes(s->db) > 0;
    if ((rc = check_uuids(s, t)) != 0)
      return rc;
    if (!t->index_pending) {
      rc = has_uuid_index(s, t, &found);
      if (rc == 0 && !found)
        rc = create_uuid_index(s, t);
      if (rc)
        return rc;
    }
    if ((rc = sq_capture_prepare(s, t)) != 0)
      return rc;
  }
  if (t->index_pending || t->wrote)
    return 0;
  rc = table_is_empty(s, t, &empty);
  t->empty = empty;
  return rc;
}

bool sq_read_site(sqlite3_stmt *st, int col, bool null_ok, uint8_t *out) {
  const void *p;
  if (sqlite3_column_type(st, col) == SQLITE_NULL) {
    memset(out, 0, LIPSYNC_SITE_LEN);
    return null_ok;
  }
  p = sqlite3_column_blob(st, col);
  if (!p || sqlite3_column_bytes(st, col) != LIPSYNC_SITE_LEN)
    return false;
  memcpy(out, p, LIPSYNC_SITE_LEN);
  return true;
}

/* Fills |row| from the current row of |st|: the columns in canonical order,
 * then the UUID, then (when |st| selects them) the item's version and
 * base. The values point into |st|. */
int sq_read_row(sqlite_table *t, sqlite3_stmt *st, lipsync_value *values,
                lipsync_row *row) {
  sqlite_store *s = t->store;
  int n = (int)t->base.ncolumns;

  for (int i = 0; i < n; i++) {
    lipsync_value *v = &values[i];
    const void *p;
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
      v->type = LIPSYNC_INTEGER;
      v->u.integer = sqlite3_column_int64(st, i);
      break;
    case SQLITE_FLOAT:
      v->type = LIPSYNC_REAL;
      v->u.real = sqlite3_column_double(st, i);
      break;
    case SQLITE_TEXT:
      /* Text first, then its length: the length of the UTF-8 form. */
      p = sqlite3_column_text(st, i);
      if (!p)
        return sq_fail_nomem(s);
      v->type = LIPSYNC_TEXT;
      v->u.bytes.data = p;
      v->u.bytes.len = (size_t)sqlite3_column_bytes(st, i);
      break;
    case SQLITE_BLOB:
      p = sqlite3_column_blob(st, i);
      v->type = LIPSYNC_BLOB;
      v->u.bytes.len = (size_t)sqlite3_column_bytes(st, i);
      /* An empty blob comes back as NULL; only a non-empty one means no
       * memory. */
      if (!p && v->u.bytes.len)
        return sq_fail_nomem(s);
      v->u.bytes.data = p ? p : empty_bytes;
      break;
    default:
      v->type = LIPSYNC_NULL;
      break;
    }
  }

  const char *u = NULL;
  size_t ulen = 0;
  if (sqlite3_column_type(st, n) == SQLITE_TEXT) {
    u = (const char *)sqlite3_column_text(st, n);
    ulen = (size_t)sqlite3_column_bytes(st, n);
  }
  if (!u || lipsync_uuid_parse(u, ulen, row->uuid) != 0) {
    char value[64];
    errbuf_describe_bytes((const uint8_t *)(u ? u : ""), u ? ulen : 0, value,
                          sizeof value);
    return sq_fail(s, LIPSYNC_ERR_STORAGE,
                   "table %s: a row has a malformed " LIPSYNC_UUID_COLUMN
                   " '%s'",
                   t->name, value);
  }
  row->nvalues = (size_t)n;
  row->values = values;
  row->deleted = 0;
  memset(&row->version, 0, sizeof row->version);
  memset(&row->base, 0, sizeof row->base);
  if (sqlite3_column_count(st) > n + 4) {
    row->version.clock = (uint64_t)sqlite3_column_int64(st, n + 1);
    row->base.clock = (uint64_t)sqlite3_column_int64(st, n + 3);
    if (!sq_read_site(st, n + 2, false, row->version.site) ||
        !sq_read_site(st, n + 4, true, row->base.site))
      return sq_fail(s, LIPSYNC_ERR_STORAGE,
                     "table %s: the item of row %.36s has a site that is not"
                     " 16 bytes",
                     t->name, u);
    if (t->base.last_sync == 0) /* never synced as a client */
      memset(&row->base, 0, sizeof row->base);
  }
  return 0;
}

static int sqlite_store_scan(lipsync_store *store, lipsync_table *table,
                             const uint8_t *lower, const uint8_t *upper,
                             lipsync_cursor **out) {
  sqlite_store *s = (sqlite_store *)store;
  sqlite_table *t = (sqlite_table *)table;
  int bounds = (lower ? 1 : 0) | (upper ? 2 : 0);
  sqlite_cursor *c;
  sqlite3_stmt *st;
  char *sql;
  int rc;

  *out = NULL;
  /* Rows in UUID order: through the UUID index. */
  if ((rc = sq_need_index(s, t)) != 0)
    return rc;
  sq_snapshot_used(s);
  sql = t->idle[SHAPE_ROWS + bounds]
            ? NULL
            : sqlite3_mprintf("%s%s ORDER BY t.\"%w\"", t->select_sql,
                              scan_where[bounds], LIPSYNC_UUID_COLUMN);
  rc = t->idle[SHAPE_ROWS + bounds] || sql
           ? sq_take_stmt(s, t, SHAPE_ROWS + bounds, sql, &st)
           : sq_fail_nomem(s);
  sqlite3_free(sql);
  if (rc || (rc = sq_cursor_open(s, t, SHAPE_ROWS + bounds, CURSOR_ROWS, st,
                                 &c)) != 0)
    return rc;
  /* Lowercase text order is the byte order of the UUIDs. */
  if (lower) {
    lipsync_uuid_format(lower, c->lower);
    sqlite3_bind_text(c->stmt, 1, c->lower, UUID_TEXT_LEN, SQLITE_STATIC);
  }
  if (upper) {
    lipsync_uuid_format(upper, c->upper);
    sqlite3_bind_text(c->stmt, 2, c->upper, UUID_TEXT_LEN, SQLITE_STATIC);
  }
  *out = &c->base;
  return 0;
}

/* The statement that reads the row (and live item) of one UUID, ?1. */
static char *by_uuid_sql(const sqlite_table *t) {
  return sqlite3_mprintf("%s AND t.\"%w\" = ?1", t->select_sql,
                         LIPSYNC_UUID_COLUMN);
}

static int sqlite_store_scan_uuids(lipsync_store *store, lipsync_table *table,
                                   const uint8_t *uuids, size_t n,
                                   lipsync_cursor **out) {
  sqlite_store *s = (sqlite_store *)store;
  sqlite_table *t = (sqlite_table *)table;
  sqlite_cursor *c;
  sqlite3_stmt *st;
  char *sql;
  int rc;

  *out = NULL;
  if ((rc = sq_need_index(s, t)) != 0)
    return rc;
  sq_snapshot_used(s);
  sql = t->idle[SHAPE_ROW_BY_UUID] ? NULL : by_uuid_sql(t);
  rc = t->idle[SHAPE_ROW_BY_UUID] || sql
           ? sq_take_stmt(s, t, SHAPE_ROW_BY_UUID, sql, &st)
           : sq_fail_nomem(s);
  sqlite3_free(sql);
  if (rc ||
      (rc = sq_cursor_open(s, t, SHAPE_ROW_BY_UUID, CURSOR_ROWS, st, &c)) != 0)
    return rc;
  if (n && !(c->uuids = malloc(n * LIPSYNC_UUID_LEN))) {
    c->status = sq_fail_nomem(s);
    *out = &c->base;
    return c->status;
  }
  if (n)
    memcpy(c->uuids, uuids, n * LIPSYNC_UUID_LEN);
  c->nuuids = n;
  *out = &c->base;
  return 0;
}

static int sqlite_store_next(lipsync_cursor *cursor, lipsync_row *row) {
  sqlite_cursor *c = (sqlite_cursor *)cursor;
  sqlite_table *t = c->table;
  int rc;

  for (;;) {
    if (c->status)
      return c->status > 0 ? 0 : c->status;
    if (c->uuids || c->shape == SHAPE_ROW_BY_UUID) {
      /* A lookup: the next UUID that has a live row. */
      if (c->pos == c->nuuids) {
        c->status = 1;
        continue;
      }
      sqlite3_reset(c->stmt);
      lipsync_uuid_format(c->uuids + c->pos++ * LIPSYNC_UUID_LEN, c->key);
      sqlite3_bind_text(c->stmt, 1, c->key, UUID_TEXT_LEN, SQLITE_STATIC);
    }
    rc = sqlite3_step(c->stmt);
    if (rc == SQLITE_ROW) {
      rc = sq_read_row(t, c->stmt, c->values, row);
      if (rc == 0 && t->nwindow)
        rc = sq_check_window(t->store, t, row->uuid);
      if (rc == 0)
        return 1;
      c->status = rc;
      continue;
    }
    if (rc == SQLITE_DONE && c->shape == SHAPE_ROW_BY_UUID)
      continue; /* no such row: the next UUID */
    /* Stepping again after the end would restart the scan. */
    c->status = rc == SQLITE_DONE ? 1 : sq_fail_db(t->store, t->name, "scan");
  }
}

static void sqlite_store_close_cursor(lipsync_cursor *cursor) {
  sqlite_cursor *c = (sqlite_cursor *)cursor, **p;
  if (!c)
    return;
  for (p = &c->table->cursors; *p; p = &(*p)->next) {
    if (*p == c) {
      *p = c->next;
      break;
    }
  }
  cursor_free(c, true);
}

static int sqlite_store_fetch(lipsync_store *store, lipsync_table *table,
                              const uint8_t uuid[LIPSYNC_UUID_LEN],
                              lipsync_row *row) {
  sqlite_store *s = (sqlite_store *)store;
  sqlite_table *t = (sqlite_table *)table;
  int rc;

  if ((rc = sq_need_index(s, t)) != 0)
    return rc;
  sq_snapshot_used(s);
  if (!t->fetch_stmt) {
    char *sql = by_uuid_sql(t);
    if (!sql)
      return sq_fail_nomem(s);
    rc = sq_prepare(s, sql, &t->fetch_stmt);
    sqlite3_free(sql);
    if (rc != SQLITE_OK)
      return sq_fail_db(s, t->name, "fetch");
  } else {
    /* The previous fetched row stays valid until this call. */
    sqlite3_reset(t->fetch_stmt);
  }
  lipsync_uuid_format(uuid, t->fetch_key);
  sqlite3_bind_text(t->fetch_stmt, 1, t->fetch_key, UUID_TEXT_LEN,
                    SQLITE_STATIC);
  rc = sqlite3_step(t->fetch_stmt);
  if (rc == SQLITE_ROW) {
    rc = sq_read_row(t, t->fetch_stmt, t->fetch_values, row);
    if (rc == 0 && t->nwindow)
      rc = sq_check_window(s, t, row->uuid);
    return rc;
  }
  if (rc == SQLITE_DONE) {
    sqlite3_reset(t->fetch_stmt);
    return sq_fail(s, LIPSYNC_ERR_NOT_FOUND, "table %s: no row %s", t->name,
                   t->fetch_key);
  }
  rc = sq_fail_db(s, t->name, "fetch");
  sqlite3_reset(t->fetch_stmt);
  return rc;
}

static int prepare_insert(sqlite_store *s, sqlite_table *t) {
  sqlite3_str *sql = sqlite3_str_new(s->db);
  char *text;
  int rc;

  sqlite3_str_appendf(sql, "INSERT INTO main.\"%w\"(", t->name);
  for (size_t i = 0; i < t->base.ncolumns; i++)
    sqlite3_str_appendf(sql, "\"%w\", ", t->columns[i].name);
  sqlite3_str_appendf(sql, "\"%w\") VALUES (", LIPSYNC_UUID_COLUMN);
  for (size_t i = 0; i < t->base.ncolumns; i++)
    sqlite3_str_appendall(sql, "?, ");
  sqlite3_str_appendall(sql, "?)");
  text = sqlite3_str_finish(sql);
  if (!text)
    return sq_fail_nomem(s);
  rc = sq_prepare(s, text, &t->insert_stmt);
  sqlite3_free(text);
  return rc == SQLITE_OK ? 0 : sq_fail_db(s, t->name, "insert");
}

/* Refuses a value |t|'s column |i| cannot store exactly. */
int sq_check_value(sqlite_store *s, sqlite_table *t, size_t i,
                   const lipsync_value *v) {
  const char *why;
  char value[96];

  if (v->type == LIPSYNC_TEXT &&
      !canon_utf8_valid(v->u.bytes.data, v->u.bytes.len))
    return sq_fail(s, LIPSYNC_ERR_INVALID_VALUE,
                   "table %s: row %s: column %s: TEXT is not valid UTF-8",
                   t->name, t->insert_key, t->columns[i].name);
  if ((unsigned)v->type > LIPSYNC_BLOB)
    return sq_fail(s, LIPSYNC_ERR_INVALID_ARGUMENT,
                   "table %s: row %s: column %s: unknown value type %d",
                   t->name, t->insert_key, t->columns[i].name, (int)v->type);
  if (value_survives_affinity(t->kinds[i], v, &why))
    return 0;
  errbuf_describe_value(v, value, sizeof value);
  return sq_fail(s, LIPSYNC_ERR_INVALID_VALUE,
                 "table %s: row %s: column %s (%s) cannot store %s exactly: %s",
                 t->name, t->insert_key, t->columns[i].name, t->columns[i].type,
                 value, why);
}

int sq_bind_value(sqlite3_stmt *st, int i, const lipsync_value *v) {
  const void *data = v->u.bytes.data ? v->u.bytes.data : empty_bytes;
  switch (v->type) {
  case LIPSYNC_INTEGER:
    return sqlite3_bind_int64(st, i, v->u.integer);
  case LIPSYNC_REAL:
    return sqlite3_bind_double(st, i, v->u.real);
  case LIPSYNC_TEXT:
    /* The length is authoritative: the text may hold NUL. */
    return sqlite3_bind_text64(st, i, data, v->u.bytes.len, SQLITE_STATIC,
                               SQLITE_UTF8);
  case LIPSYNC_BLOB:
    /* Never a NULL pointer, which would bind NULL instead of an empty
     * blob. */
    return sqlite3_bind_blob64(st, i, data, v->u.bytes.len, SQLITE_STATIC);
  default:
    return sqlite3_bind_null(st, i);
  }
}

/* The code for a failed insert: a value SQLite refused to store is an
 * invalid value, anything else a storage error. */
int sq_insert_error(int rc) {
#ifdef SQLITE_CONSTRAINT_DATATYPE
  if (rc == SQLITE_CONSTRAINT_DATATYPE) /* a STRICT column */
    return LIPSYNC_ERR_INVALID_VALUE;
#endif
  switch (rc & 0xFF) {
  case SQLITE_MISMATCH: /* a rowid that is not an integer */
  case SQLITE_TOOBIG:
    return LIPSYNC_ERR_INVALID_VALUE;
  default:
    return sq_code(rc);
  }
}

/* A store that opened its own database gives it a large page cache while
 * it inserts (a bulk load into an indexed table otherwise spills to the WAL
 * and reads its pages back), and SQLite's default the rest of the time, so
 * a sync that only reads stays small. A caller's connection is left as the
 * caller set it. */
void sq_set_big_cache(sqlite_store *s, bool on) {
  if (!s->owns_db || s->big_cache == on)
    return;
  sqlite3_exec(s->db, on ? BIG_CACHE_PRAGMA : DEFAULT_CACHE_PRAGMA, NULL, NULL,
               NULL); /* only a hint */
  s->big_cache = on;
}

void sq_set_sort_cache(sqlite_store *s, bool on) {
  if (!s->owns_db || !s->big_cache)
    return;
  sqlite3_exec(s->db, on ? SORT_CACHE_PRAGMA : BIG_CACHE_PRAGMA, NULL, NULL,
               NULL); /* only a hint */
}

static int sqlite_store_insert(lipsync_store *store, lipsync_table *table,
                               const lipsync_row *row) {
  sqlite_store *s = (sqlite_store *)store;
  sqlite_table *t = (sqlite_table *)table;
  size_t n = t->base.ncolumns;
  sqlite3_stmt *st;
  int rc;

  if ((rc = sq_begin_write(s)) != 0 ||
      (t->nwindow && (rc = sq_check_window(s, t, row->uuid)) != 0))
    return rc;
  if (t->empty && (rc = start_bulk(s, t)) != 0)
    return rc;
  if (row->deleted)
    return sq_items_insert(s, t, row); /* a tombstone: the item alone */
  if (row->nvalues != n)
    return sq_fail(s, LIPSYNC_ERR_INVALID_ARGUMENT,
                   "table %s: a row of %zu values for %zu columns", t->name,
                   row->nvalues, n);
  if ((rc = sq_check_clock(s, t, row->version.clock)) != 0)
    return rc;
  if (!t->insert_stmt && (rc = prepare_insert(s, t)) != 0)
    return rc;
  sq_set_big_cache(s, true);
  st = t->insert_stmt;
  lipsync_uuid_format(row->uuid, t->insert_key);
  if ((rc = sq_write_row(s, t, st, row)) != 0)
    return rc;
  return sq_items_insert(s, t, row);
}

int sq_write_row(sqlite_store *s, sqlite_table *t, sqlite3_stmt *st,
                 const lipsync_row *row) {
  size_t n = t->base.ncolumns;
  int rc;
  for (size_t i = 0; i < n; i++) {
    const lipsync_value *v = &row->values[i];
    if ((rc = sq_check_value(s, t, i, v)) != 0)
      return rc;
    rc = sq_bind_value(st, (int)i + 1, v);
    if (rc != SQLITE_OK)
      return sq_fail(s, sq_insert_error(rc), "table %s: row %s: column %s: %s",
                     t->name, t->insert_key, t->columns[i].name,
                     sqlite3_errstr(rc));
  }
  sqlite3_bind_text(st, (int)n + 1, t->insert_key, UUID_TEXT_LEN,
                    SQLITE_STATIC);
  sq_nested_begin(s, t);
  rc = sqlite3_step(st);
  sq_nested_end(s);
  if (rc != SQLITE_DONE &&
      sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_UNIQUE &&
      strstr(sqlite3_errmsg(s->db), "." LIPSYNC_UUID_COLUMN))
    /* The row is there but its item is not: a change escaped capture. */
    rc = sq_fail(s, LIPSYNC_ERR_VERIFY_FAILED,
                 "table %s: row %s is in the table without its item (a"
                 " change made with change capture off?); nothing was"
                 " changed, and the next sync recounts the table",
                 t->name, t->insert_key);
  else if (rc != SQLITE_DONE)
    rc = sq_fail(s, sq_insert_error(sqlite3_extended_errcode(s->db)),
                 "table %s: row %s: %s", t->name, t->insert_key,
                 sqlite3_errmsg(s->db));
  else
    rc = 0;
  sqlite3_reset(st);
  return rc;
}

/* ------------------------------------------------------------------ */
/* The store                                                            */
/* ------------------------------------------------------------------ */

int sq_exec(sqlite_store *s, const char *table, const char *sql,
            const char *what) {
  if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
    return sq_fail_db(s, table, what);
  return 0;
}

/* The change sequence number of the state as this transaction sees it (0
 * when the database has no capture state, or one of an older layout). Read
 * first in a transaction, it fixes the snapshot. */
static uint64_t state_seq(sqlite_store *s) {
  sqlite3_stmt *st;
  uint64_t seq = 0;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT seq FROM main._lipsync_state"
                         " WHERE id = 1",
                         -1, &st, NULL) != SQLITE_OK)
    return 0;
  if (sqlite3_step(st) == SQLITE_ROW)
    seq = (uint64_t)sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return seq;
}

/* Runs |sql|, a BEGIN: a lock wait that expires is TRY_AGAIN. */
static int exec_begin(sqlite_store *s, const char *sql) {
  if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK)
    return 0;
  if ((sqlite3_extended_errcode(s->db) & 0xFF) == SQLITE_BUSY &&
      !atomic_load(&s->interrupted))
    return sq_fail(s, LIPSYNC_ERR_TRY_AGAIN,
                   "another writer kept the database locked for %d.%d s;"
                   " nothing was changed, try again",
                   s->lock_timeout_ms / 1000, s->lock_timeout_ms % 1000 / 100);
  return sq_fail_db(s, NULL, "begin");
}

int sq_begin_immediate(sqlite_store *s) {
  return exec_begin(s, "BEGIN IMMEDIATE");
}

/* Starts a transaction with |sql| and records its snapshot. */
static int begin_txn(sqlite_store *s, const char *sql, bool writing) {
  int rc;
  if ((rc = exec_begin(s, sql)) != 0)
    return rc;
  s->in_txn = true;
  s->writing = writing;
  s->resnapshot = false;
  s->snapshot_used = false;
  s->identity_checked = false;
  s->owner_checked = false;
  s->read_seq = state_seq(s);
  s->own_lo = s->read_seq + 1;
  s->own_hi = s->read_seq;
  sq_fkeys_defer(s);
  if (writing && (rc = sq_capture_begin_write(s)) != 0)
    return rc;
  return 0;
}

/* The WAL size at which SQLite's automatic checkpoint would run. */
#define CHECKPOINT_FRAMES 1000

static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int frames) {
  (void)db;
  (void)name;
  ((sqlite_store *)arg)->wal_frames = frames;
  return SQLITE_OK;
}

/* The checkpoint SQLite would have run inside the last COMMIT, run later:
 * when the next transaction begins, at maintenance, or when the store is
 * freed, so that the peer does not wait for it. PASSIVE: it waits for no
 * reader or writer, and copies what it can. */
void sq_checkpoint_if_due(sqlite_store *s) {
  if (s->wal_frames < CHECKPOINT_FRAMES || s->in_txn)
    return;
  s->wal_frames = 0;
  sqlite3_wal_checkpoint_v2(s->db, "main", SQLITE_CHECKPOINT_PASSIVE, NULL,
                            NULL); /* best effort */
}

static int sqlite_store_begin(lipsync_store *store) {
  sqlite_store *s = (sqlite_store *)store;
  if (s->in_txn)
    return sq_fail(s, LIPSYNC_ERR_INTERNAL, "a transaction is already open");
  sq_checkpoint_if_due(s);
  /* IMMEDIATE takes the write lock now: syncs into one database take turns
   * (waiting up to the lock timeout) instead of failing midway. */
  return begin_txn(s, "BEGIN IMMEDIATE", true);
}

static int sqlite_store_begin_read(lipsync_store *store) {
  sqlite_store *s = (sqlite_store *)store;
  if (s->in_txn)
    return sq_fail(s, LIPSYNC_ERR_INTERNAL, "a transaction is already open");
  sq_checkpoint_if_due(s);
  return begin_txn(s, "BEGIN", false);
}

void sq_snapshot_used(sqlite_store *s) {
  s->snapshot_used = true;
}

/* After a new snapshot: the items of every open table that another writer
 * changed since the session's snapshot, which it must not touch. */
static int take_windows(sqlite_store *s, uint64_t since) {
  for (sqlite_table *t = s->tables; t; t = t->next) {
    sqlite3_stmt *st;
    size_t cap = 0;
    int rc;
    t->nwindow = 0;
    if (t->bulk_seq > since)
      return sq_fail(s, LIPSYNC_ERR_TRY_AGAIN,
                     "table %s was loaded by another writer during the sync;"
                     " nothing was changed, sync again",
                     t->name);
    if (sq_prepare_mprintf(s, t, &st, "reading concurrent changes",
                           "SELECT uuid FROM main.\"%w\" INDEXED BY"
                           " \"%w_seq\" WHERE seq > ?1 AND seq > 0"
                           " ORDER BY uuid",
                           t->meta_name, t->meta_name) != 0) {
      sqlite3_errcode(s->db); /* no items yet: nothing changed */
      continue;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64)since);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *u = (const char *)sqlite3_column_text(st, 0);
      if (vec_reserve((void **)&t->window, &cap, t->nwindow + 1,
                      sizeof *t->window)) {
        rc = SQLITE_NOMEM;
        break;
      }
      if (u && lipsync_uuid_parse(u, (size_t)sqlite3_column_bytes(st, 0),
                                  t->window[t->nwindow]) == 0)
        t->nwindow++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
      return rc == SQLITE_NOMEM
                 ? sq_fail_nomem(s)
                 : sq_fail_db(s, t->name, "reading concurrent changes");
  }
  return 0;
}

/* Ends the write transaction that has written nothing yet and begins a
 * read transaction in its place. */
static int back_to_reading(sqlite_store *s) {
  sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  s->in_txn = false;
  s->writing = false;
  s->applying = false;
  sq_nested_stop(s);
  for (sqlite_table *t = s->tables; t; t = t->next)
    t->nwindow = 0;
  return begin_txn(s, "BEGIN", false);
}

int sq_begin_write(sqlite_store *s) {
  uint64_t seq;
  int rc;
  s->resnapshot_taken = false;
  if (s->writing)
    return 0;
  if (!s->in_txn)
    return sq_fail(s, LIPSYNC_ERR_INTERNAL, "write: no transaction is open");
  /* In place, when nobody committed since the snapshot. */
  rc = sqlite3_exec(s->db,
                    "UPDATE main._lipsync_state SET applying = 1 WHERE id = 1",
                    NULL, NULL, NULL);
  if (rc == SQLITE_OK) {
    s->writing = true;
    s->applying = true;
    sq_nested_watch(s);
    return sq_capture_begin_write(s);
  }
  if ((sqlite3_extended_errcode(s->db) & 0xFF) != SQLITE_BUSY &&
      rc != SQLITE_ERROR) /* no state yet: a first install */
    return sq_fail_db(s, NULL, "taking the write lock");
  /* Else on a new snapshot, with the write lock. */
  s->resnapshot_taken = true;
  reset_tables(s);
  if (!sqlite3_get_autocommit(s->db))
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  s->in_txn = false;
  uint64_t read_seq = s->read_seq;
  bool used = s->snapshot_used;
  if ((rc = begin_txn(s, "BEGIN IMMEDIATE", true)) != 0)
    return rc;
  seq = s->read_seq;
  s->snapshot_used = used;
  s->resnapshot = used && seq > read_seq;
  if (s->resnapshot) {
    /* The session goes on with what it read: its position stays, and the
     * changes in between are not to be touched. */
    s->read_seq = read_seq;
    if ((rc = take_windows(s, read_seq)) != 0)
      return rc;
  }
  return 0;
}

static int sqlite_store_begin_write(lipsync_store *store) {
  return sq_begin_write((sqlite_store *)store);
}

static void sqlite_store_set_lock_timeout(lipsync_store *store, int ms) {
  ((sqlite_store *)store)->lock_timeout_ms =
      ms > 0 ? ms : DEFAULT_LOCK_TIMEOUT_MS;
}

/* Builds the indexes set aside and checks the deferred foreign keys, so
 * that a duplicate or a missing parent is reported before the session
 * vouches for its tables in Verify, not at commit. */
static int sqlite_store_flush(lipsync_store *store) {
  sqlite_store *s = (sqlite_store *)store;
  int rc = 0;
  for (sqlite_table *t = s->tables; t && !rc; t = t->next)
    rc = sq_need_index(s, t);
  return rc ? rc : sq_fkeys_check(s);
}

/* Forgets the state of the transaction that just ended. */
static void end_txn(sqlite_store *s) {
  s->in_txn = !sqlite3_get_autocommit(s->db);
  s->writing = false;
  s->applying = false;
  sq_nested_stop(s);
  s->resnapshot = false;
  sq_set_big_cache(s, false);
}

static int sqlite_store_commit(lipsync_store *store) {
  sqlite_store *s = (sqlite_store *)store;
  int rc = 0;
  for (sqlite_table *t = s->tables; t && !rc; t = t->next)
    rc = sq_need_index(s, t);
  free_tables(s);
  if (rc) {
    sq_set_big_cache(s, false);
    return rc;
  }
  if (!s->in_txn)
    return sq_fail(s, LIPSYNC_ERR_INTERNAL, "commit: no transaction is open");
  if (s->writing &&
      ((rc = sq_nested_forget(s)) != 0 || (rc = sq_capture_end(s)) != 0)) {
    sq_set_big_cache(s, false);
    return rc;
  }
  rc = sq_exec(s, NULL, "COMMIT", "commit");
  /* A failed COMMIT may leave the transaction open (busy) for rollback. */
  end_txn(s);
  return rc;
}

static int sqlite_store_rollback(lipsync_store *store) {
  sqlite_store *s = (sqlite_store *)store;
  int rc = 0;
  free_tables(s);
  /* SQLite itself rolls back on some errors; then there is nothing left. */
  if (s->in_txn && !sqlite3_get_autocommit(s->db))
    rc = sq_exec(s, NULL, "ROLLBACK", "rollback");
  end_txn(s);
  s->in_txn = false;
  return rc;
}

static void free_names(sqlite_store *s) {
  for (size_t i = 0; i < s->nnames; i++)
    free(s->names[i]);
  free(s->names);
  s->names = NULL;
  s->nnames = 0;
}

static int sqlite_store_list_tables(lipsync_store *store,
                                    const char *const **names, size_t *count) {
  /* pragma_table_list (3.37) also tells the shadow tables of virtual tables
   * apart; older SQLite has only sqlite_schema, where virtual tables have
   * no root page. */
  static const char *const queries[] = {
      "SELECT name FROM pragma_table_list WHERE schema = 'main'"
      " AND type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
      " AND name NOT LIKE '\\_lipsync\\_%' ESCAPE '\\'"
      " ORDER BY name",
      "SELECT name FROM main.sqlite_schema WHERE type = 'table'"
      " AND rootpage > 0 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
      " AND name NOT LIKE '\\_lipsync\\_%' ESCAPE '\\'"
      " ORDER BY name",
  };
  sqlite_store *s = (sqlite_store *)store;
  sqlite3_stmt *st = NULL;
  size_t cap = 0;
  int rc = SQLITE_ERROR;

  *names = NULL;
  *count = 0;
  free_names(s);
  for (size_t i = 0; i < 2 && rc != SQLITE_OK; i++)
    rc = sqlite3_prepare_v2(s->db, queries[i], -1, &st, NULL);
  if (rc != SQLITE_OK)
    return sq_fail_db(s, NULL, "listing tables");
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    if (s->nnames == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      char **grown = realloc(s->names, ncap * sizeof *grown);
      if (!grown)
        break;
      s->names = grown;
      cap = ncap;
    }
    if (!name || !(s->names[s->nnames] = strdup(name)))
      break;
    s->nnames++;
  }
  if (rc == SQLITE_DONE) {
    sqlite3_finalize(st);
    *names = (const char *const *)s->names;
    *count = s->nnames;
    return 0;
  }
  rc = rc == SQLITE_ROW ? sq_fail_nomem(s)
                        : sq_fail_db(s, NULL, "listing tables");
  sqlite3_finalize(st);
  free_names(s);
  return rc;
}

static const char *sqlite_store_errmsg(lipsync_store *store) {
  return ((sqlite_store *)store)->errmsg;
}

static void sqlite_store_destroy(lipsync_store *store) {
  sqlite_store *s = (sqlite_store *)store;
  sqlite_store_rollback(store);
  sq_checkpoint_if_due(s);
  free_names(s);
  canon_hasher_free(&s->hasher);
  if (s->owns_db)
    sqlite3_close_v2(s->db);
  free(s);
}

static void sqlite_store_interrupt(lipsync_store *store) {
  sqlite_store *s = (sqlite_store *)store;
  atomic_store(&s->interrupted, 1);
  sqlite3_interrupt(s->db); /* safe from another thread */
}

/* Waits for another writer's lock like sqlite3_busy_timeout(), in short
 * naps, for at most the lock timeout, but gives up at once when the store
 * is interrupted. */
static int busy_wait(void *arg, int attempt) {
  sqlite_store *s = arg;
  static _Thread_local struct timespec started;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (attempt == 0)
    started = now;
  double waited = (double)(now.tv_sec - started.tv_sec) +
                  (double)(now.tv_nsec - started.tv_nsec) / 1e9;
  if (atomic_load(&s->interrupted) || waited * 1000.0 >= s->lock_timeout_ms)
    return 0;
  sqlite3_sleep(attempt < 10 ? 1 : 10);
  return 1;
}

static int sqlite_store_update(lipsync_store *store, lipsync_table *table,
                               const lipsync_row *row) {
  sqlite_store *s = (sqlite_store *)store;
  sqlite_table *t = (sqlite_table *)table;
  int rc;
  if ((rc = sq_begin_write(s)) != 0 ||
      (t->nwindow && (rc = sq_check_window(s, t, row->uuid)) != 0))
    return rc;
  return sq_items_update(s, t, row);
}

static int item_cursor(int rc, sqlite_cursor *c, lipsync_cursor **out) {
  *out = c ? &c->base : NULL;
  return rc;
}

static int sqlite_store_scan_items(lipsync_store *store, lipsync_table *table,
                                   lipsync_cursor **out) {
  sqlite_cursor *c = NULL;
  int rc = sq_items_scan((sqlite_store *)store, (sqlite_table *)table, &c);
  return item_cursor(rc, c, out);
}

static int sqlite_store_next_item(lipsync_cursor *cursor, lipsync_item *item) {
  return sq_items_next((sqlite_cursor *)cursor, item);
}

static int sqlite_store_finish_table(lipsync_store *store, lipsync_table *table,
                                     const lipsync_finish *finish) {
  return sq_capture_finish((sqlite_store *)store, (sqlite_table *)table,
                           finish);
}

static int sqlite_store_tick(lipsync_store *store, lipsync_version *out) {
  return sq_capture_tick((sqlite_store *)store, out);
}

static int sqlite_store_position(lipsync_store *store, lipsync_table *table,
                                 lipsync_position *out) {
  return sq_items_position((sqlite_store *)store, (sqlite_table *)table, out);
}

static int sqlite_store_scan_changes(lipsync_store *store, lipsync_table *table,
                                     const lipsync_position *since,
                                     lipsync_cursor **out) {
  sqlite_cursor *c = NULL;
  int rc =
      sq_items_changes((sqlite_store *)store, (sqlite_table *)table, since, &c);
  return item_cursor(rc, c, out);
}

static int sqlite_store_scan_item_range(lipsync_store *store,
                                        lipsync_table *table,
                                        const uint8_t *lower,
                                        const uint8_t *upper,
                                        lipsync_cursor **out) {
  sqlite_cursor *c = NULL;
  int rc = sq_items_range((sqlite_store *)store, (sqlite_table *)table, lower,
                          upper, &c);
  return item_cursor(rc, c, out);
}

static int sqlite_store_lookup_items(lipsync_store *store, lipsync_table *table,
                                     const uint8_t *uuids, size_t n,
                                     lipsync_cursor **out) {
  sqlite_cursor *c = NULL;
  int rc = sq_items_lookup((sqlite_store *)store, (sqlite_table *)table, uuids,
                           n, &c);
  return item_cursor(rc, c, out);
}

static int sqlite_store_scan_tombstones(lipsync_store *store,
                                        lipsync_table *table, uint64_t clock,
                                        lipsync_cursor **out) {
  sqlite_cursor *c = NULL;
  int rc = sq_items_tombstones((sqlite_store *)store, (sqlite_table *)table,
                               clock, &c);
  return item_cursor(rc, c, out);
}

static int sqlite_store_summarize(lipsync_store *store, lipsync_table *table,
                                  lipsync_summary *out) {
  sqlite_store *s = (sqlite_store *)store;
  sqlite_table *t = (sqlite_table *)table;
  int rc = 0;
  if (!t->summarized) {
    sq_snapshot_used(s);
    if ((rc = sq_items_fold(s, t, false, &t->summary)) == 0)
      t->summarized = true;
  }
  *out = t->summary;
  return rc;
}

static int sqlite_store_load_checkpoint(lipsync_store *store,
                                        lipsync_table *table,
                                        lipsync_checkpoint *out) {
  return sq_load_checkpoint((sqlite_store *)store, (sqlite_table *)table, out);
}

static int sqlite_store_load_token(lipsync_store *store, lipsync_table *table,
                                   const uint8_t client_site[LIPSYNC_SITE_LEN],
                                   uint8_t token[LIPSYNC_SITE_LEN],
                                   int *found) {
  return sq_load_token((sqlite_store *)store, (sqlite_table *)table,
                       client_site, token, found);
}

static int sqlite_store_distrust(lipsync_store *store, const char *name) {
  return sq_distrust((sqlite_store *)store, name);
}

static int sqlite_store_recount(lipsync_store *store, lipsync_table *table) {
  sqlite_store *s = (sqlite_store *)store;
  int rc = sq_begin_write(s);
  return rc ? rc : sq_capture_recount(s, (sqlite_table *)table);
}

static int sqlite_store_maintain(lipsync_store *store, uint64_t horizon) {
  return sq_maintain((sqlite_store *)store, horizon);
}

static int sqlite_store_drop_capture(lipsync_store *store,
                                     const char *const *names, size_t n) {
  return sq_drop_capture((sqlite_store *)store, names, n);
}

static const lipsync_store_methods sqlite_store_methods = {
    .version = LIPSYNC_STORE_METHODS_VERSION,
    .name = "sqlite",
    .begin = sqlite_store_begin,
    .commit = sqlite_store_commit,
    .rollback = sqlite_store_rollback,
    .open_table = sqlite_store_open_table,
    .prepare_table = sqlite_store_prepare_table,
    .scan = sqlite_store_scan,
    .next = sqlite_store_next,
    .close_cursor = sqlite_store_close_cursor,
    .fetch = sqlite_store_fetch,
    .insert = sqlite_store_insert,
    .list_tables = sqlite_store_list_tables,
    .errmsg = sqlite_store_errmsg,
    .destroy = sqlite_store_destroy,
    .interrupt = sqlite_store_interrupt,
    .scan_uuids = sqlite_store_scan_uuids,
    .flush = sqlite_store_flush,
    .update = sqlite_store_update,
    .scan_items = sqlite_store_scan_items,
    .next_item = sqlite_store_next_item,
    .finish_table = sqlite_store_finish_table,
    .tick = sqlite_store_tick,
    .begin_read = sqlite_store_begin_read,
    .begin_write = sqlite_store_begin_write,
    .set_lock_timeout = sqlite_store_set_lock_timeout,
    .position = sqlite_store_position,
    .scan_changes = sqlite_store_scan_changes,
    .scan_item_range = sqlite_store_scan_item_range,
    .lookup_items = sqlite_store_lookup_items,
    .scan_tombstones = sqlite_store_scan_tombstones,
    .summarize = sqlite_store_summarize,
    .load_checkpoint = sqlite_store_load_checkpoint,
    .load_token = sqlite_store_load_token,
    .distrust = sqlite_store_distrust,
    .recount = sqlite_store_recount,
    .maintain = sqlite_store_maintain,
    .drop_capture = sqlite_store_drop_capture,
};

/* lipsync_uuid4(): a fresh random version 4 UUID in canonical text form,
 * for the rows prepare_table gives a UUID. */
static void sql_uuid4(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  uint8_t uuid[LIPSYNC_UUID_LEN];
  char text[UUID_TEXT_LEN + 1];
  if (lipsync_uuid_generate(uuid) != 0) {
    sqlite3_result_error(ctx, "lipsync_uuid4: the system RNG failed", -1);
    return;
  }
  lipsync_uuid_format(uuid, text);
  sqlite3_result_text(ctx, text, UUID_TEXT_LEN, SQLITE_TRANSIENT);
}

/* lipsync_uuid_valid(x): whether x is TEXT in canonical UUID form. */
static void sql_uuid_valid(sqlite3_context *ctx, int argc,
                           sqlite3_value **argv) {
  uint8_t uuid[LIPSYNC_UUID_LEN];
  const char *text;
  if (sqlite3_value_type(argv[0]) != SQLITE_TEXT) {
    sqlite3_result_int(ctx, 0);
    return;
  }
  text = (const char *)sqlite3_value_text(argv[0]);
  if (!text) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  sqlite3_result_int(
      ctx, lipsync_uuid_parse(text, (size_t)sqlite3_value_bytes(argv[0]),
                              uuid) == 0);
}

#ifndef SQLITE_INNOCUOUS
#define SQLITE_INNOCUOUS 0 /* before 3.31 */
#endif

static int store_new(sqlite3 *db, bool owns_db, sqlite_store **out) {
  sqlite_store *s = calloc(1, sizeof *s);
  int rc;
  *out = NULL;
  if (!s)
    return LIPSYNC_ERR_NOMEM;
  s->base.methods = &sqlite_store_methods;
  s->db = db;
  s->owns_db = owns_db;
  s->lock_timeout_ms = DEFAULT_LOCK_TIMEOUT_MS;
  snprintf(s->errmsg, sizeof s->errmsg, "no error");
  if (canon_hasher_init(&s->hasher) != 0) {
    free(s);
    return LIPSYNC_ERR_NOMEM;
  }
  /* lipsync_uuid4 is not SQLITE_DETERMINISTIC: every call must return a
   * new UUID. Neither function keeps a pointer to the store, so they may
   * outlive it on a caller's connection. */
  rc = sqlite3_create_function_v2(db, "lipsync_uuid4", 0, SQLITE_UTF8, NULL,
                                  sql_uuid4, NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_create_function_v2(db, "lipsync_uuid_valid", 1,
                                    SQLITE_UTF8 | SQLITE_DETERMINISTIC |
                                        SQLITE_INNOCUOUS,
                                    NULL, sql_uuid_valid, NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    canon_hasher_free(&s->hasher);
    free(s);
    return sq_code(rc);
  }
  *out = s;
  return 0;
}

int lipsync_store_sqlite_wrap(lipsync_store **out, void *db) {
  sqlite_store *s;
  int rc;
  if (!out)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  *out = NULL;
  if (!db)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  rc = store_new(db, false, &s);
  if (rc == 0)
    *out = &s->base;
  return rc;
}

/* WAL lets readers run during a sync and makes each commit cheaper;
 * synchronous=NORMAL is durable enough in WAL mode (a power loss may undo
 * the last commits, never corrupt). The switch needs every other
 * connection gone; while another one writes, SQLite refuses it at once
 * (waiting could deadlock), so the store keeps the rollback journal this
 * time, waits for that writer like any other, and switches at a later
 * open. */
static int use_wal(sqlite3 *db) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
  bool wal = false;
  if (rc != SQLITE_OK)
    return rc;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    const char *mode = (const char *)sqlite3_column_text(st, 0);
    wal = mode && sqlite3_stricmp(mode, "wal") == 0;
    rc = SQLITE_OK;
  } else if (rc == SQLITE_BUSY) {
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_OK && wal)
    rc = sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  return rc;
}

/* Describes why opening |path| failed with |rc|, with the reason the
 * file or its directory cannot be written when that is the cause: SQLite's
 * "unable to open database file" alone does not say that the file system
 * is read-only, and its last system error may be another file's. */
static void open_failed(sqlite3 *db, int rc, const char *path, char *errbuf,
                        size_t errlen) {
  const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  char dir[4096];
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(dir, sizeof dir, ".");
  else if (slash == path)
    snprintf(dir, sizeof dir, "/");
  else
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
  if (access(path, W_OK) != 0 && errno != ENOENT)
    errbuf_format(errbuf, errlen, "cannot open %s: %s (%s)", path, msg,
                  strerror(errno));
  else if (access(dir, W_OK) != 0)
    errbuf_format(errbuf, errlen, "cannot open %s: %s (directory %s: %s)", path,
                  msg, dir, strerror(errno));
  else
    errbuf_format(errbuf, errlen, "cannot open %s: %s", path, msg);
}

int lipsync_store_sqlite_open(lipsync_store **out, const char *path,
                              char *errbuf, size_t errlen) {
  sqlite3 *db = NULL;
  sqlite_store *s;
  int rc, code;

  if (!out)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  *out = NULL;
  if (!path) {
    errbuf_format(errbuf, errlen, "no database path");
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  }
  /* NOMUTEX: a store, and so its connection, is used by one thread at a
   * time. */
  fault_sqlite_init();
  rc = sqlite3_open_v2(
      path, &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    open_failed(db, rc, path, errbuf, errlen);
    code = sq_code(rc);
    goto fail_db;
  }
  /* Until the store's own busy handler takes over: another connection may
   * hold a lock while this one switches to WAL. */
  sqlite3_busy_timeout(db, DEFAULT_LOCK_TIMEOUT_MS);
  /* The foreign keys the schema declares hold for what a sync writes, as
   * they do for an application that turns them on
   * (store_sqlite_fkeys.c). */
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FKEY, 1, (int *)NULL);
  /* An in-memory database has no journal file to switch. */
  if (strcmp(path, ":memory:") != 0) {
    rc = use_wal(db);
    if (rc != SQLITE_OK) {
      open_failed(db, rc, path, errbuf, errlen);
      code = sq_code(rc);
      goto fail_db;
    }
  }
  code = store_new(db, true, &s);
  if (code != 0) {
    errbuf_format(errbuf, errlen, "cannot open %s: %s", path,
                  lipsync_strerror(code));
    goto fail_db;
  }
  sqlite3_busy_handler(db, busy_wait, s);
  /* Replaces SQLite's automatic checkpoint (sq_checkpoint_if_due). */
  sqlite3_wal_hook(db, on_wal_commit, s);
  *out = &s->base;
  return 0;

fail_db:
  sqlite3_close(db);
  return code;
}
