/*
 * store_sqlite_test.c: the SQLite backend (store_sqlite.c). Here are its
 * fixture (a database file of its own, in WAL mode, as
 * lipsync_store_sqlite_open makes it), which runs the tests every backend
 * shares (store_common_test.c) as the suite "store/sqlite/shared", and the
 * tests only SQLite has, checked against what SQLite itself stores: its
 * dynamic typing and affinity, rowids, STRICT and WITHOUT ROWID tables,
 * its own and virtual tables, its locking, and the state table that holds
 * its clock.
 */
#include "store_fixture.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* The fixture                                                          */
/* ------------------------------------------------------------------ */

static bool sq_open(sfx *fx, const char *file, int line) {
  snprintf(fx->qschema, sizeof fx->qschema, "main");
  if (!tu_tmpdir(fx->dir, sizeof fx->dir))
    return false;
  tu_path(fx->path, sizeof fx->path, fx->dir, "test.db");
  fx->db = tu_db_open_at(fx->path, file, line);
  return fx->db != NULL;
}

/* WAL mode, unless the setup left a transaction open (it cannot change
 * then): the application reads and writes while a sync reads. */
static bool sq_wrap(sfx *fx, const char *file, int line) {
  if (sqlite3_get_autocommit(fx->db) &&
      !tu_exec_at(fx->db, "PRAGMA journal_mode = WAL", file, line))
    return false;
  CU_ASSERT_EQUAL(lipsync_store_sqlite_wrap(&fx->store, fx->db), 0);
  return fx->store != NULL;
}

static void sq_close(sfx *fx) {
  lipsync_store_free(fx->store);
  sqlite3_close(fx->app_db);
  sqlite3_close(fx->db);
  if (fx->dir[0])
    tu_rmdir(fx->dir);
}

static void sq_table_name(const sfx *fx, const char *table, char *out,
                          size_t outlen) {
  snprintf(out, outlen, "%s", table);
}

static bool sq_owns(const sfx *fx, const char *name) {
  return true;
}

/* The connection |app| asks for, the application's opened on first use:
 * a plain one, without the store's SQL functions. */
static sqlite3 *sq_conn(sfx *fx, bool app) {
  if (!app)
    return fx->db;
  if (!fx->app_db && sqlite3_open(fx->path, &fx->app_db) == SQLITE_OK)
    sqlite3_busy_timeout(fx->app_db, 10000);
  return fx->app_db;
}

static char *sq_run(sfx *fx, bool app, const char *sql, char **value) {
  sqlite3 *db = sq_conn(fx, app);
  sqlite3_stmt *st = NULL;
  const char *tail = sql;
  int rc = SQLITE_OK;
  if (value)
    *value = NULL;
  if (!db)
    return strdup("cannot open the application's connection");
  /* Statement by statement: the first row of the first is the value. */
  while (rc == SQLITE_OK && tail && *tail) {
    rc = sqlite3_prepare_v2(db, tail, -1, &st, &tail);
    if (rc != SQLITE_OK || !st)
      break;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && value && !*value &&
        sqlite3_column_type(st, 0) != SQLITE_NULL)
      *value = strdup((const char *)sqlite3_column_text(st, 0));
    while (rc == SQLITE_ROW)
      rc = sqlite3_step(st);
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    sqlite3_finalize(st);
  }
  return rc == SQLITE_OK ? NULL : strdup(sqlite3_errmsg(db));
}

/* The integer |sql| (from sqlite3_mprintf, freed here) gives. */
static long long sq_count(sfx *fx, char *sql) {
  long long n = sql ? TU_QUERY_INT(fx->db, sql, -1) : -1;
  sqlite3_free(sql);
  return n;
}

static long long sq_index_count(sfx *fx, const char *table) {
  return sq_count(
      fx, sqlite3_mprintf("SELECT count(*) FROM pragma_index_list(%Q)", table));
}

static bool sq_unique_index(sfx *fx, const char *table, const char *index) {
  return sq_count(fx, sqlite3_mprintf("SELECT count(*) FROM"
                                      " pragma_index_list(%Q) WHERE"
                                      " \"unique\" AND name = %Q",
                                      table, index)) == 1;
}

static char *sq_column_type(sfx *fx, const char *table, const char *column) {
  char *sql = sqlite3_mprintf("SELECT type FROM pragma_table_xinfo(%Q)"
                              " WHERE name = %Q",
                              table, column);
  char *type = sql ? TU_QUERY_TEXT(fx->db, sql) : NULL;
  sqlite3_free(sql);
  return type;
}

static long long sq_registry(sfx *fx, const char *table, const char *cond) {
  return sq_count(fx, sqlite3_mprintf("SELECT count(*) FROM _lipsync_tables"
                                      " WHERE name = %Q AND %s",
                                      table, cond));
}

static bool sq_in_transaction(sfx *fx) {
  return sqlite3_get_autocommit(fx->db) == 0;
}

static int sq_open_store(sfx *fx, lipsync_store **out, char *err,
                         size_t errlen) {
  return lipsync_store_sqlite_open(out, fx->path, err, errlen);
}

static const sfx_backend sqlite_backend = {
    .name = "sqlite",
    .store_name = "sqlite",
    .real_type = "REAL",
    .blob_type = "BLOB",
    .uuid_type = "TEXT",
    .many_rows = 20000,
    .uncaptured_begin = "BEGIN; UPDATE _lipsync_state SET applying = 1;",
    .uncaptured_end = "UPDATE _lipsync_state SET applying = 0; COMMIT",
    .count_writes_sql = "CREATE TABLE counts(updates INTEGER, inserts INTEGER);"
                        "INSERT INTO counts VALUES (0, 0);"
                        "CREATE TRIGGER cu AFTER UPDATE ON t BEGIN"
                        " UPDATE counts SET updates = updates + 1; END;"
                        "CREATE TRIGGER ci AFTER INSERT ON t BEGIN"
                        " UPDATE counts SET inserts = inserts + 1; END;",
    .open = sq_open,
    .wrap = sq_wrap,
    .close = sq_close,
    .table_name = sq_table_name,
    .owns = sq_owns,
    .run = sq_run,
    .index_count = sq_index_count,
    .unique_index = sq_unique_index,
    .column_type = sq_column_type,
    .registry = sq_registry,
    .in_transaction = sq_in_transaction,
    .open_store = sq_open_store,
};

static int use_sqlite(void) {
  sfx_use(&sqlite_backend);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Tables and columns                                                   */
/* ------------------------------------------------------------------ */

/* SQLite's own tables and virtual tables are no tables to sync; nor is a
 * view, which the message calls no table. */
static void test_sqlite_tables_refused(void) {
  sfx fx;
  lipsync_table *t = NULL;
  if (!SFX_OPEN(&fx, "CREATE TABLE cities(name TEXT);"
                     "CREATE VIEW big AS SELECT * FROM cities;"
                     "CREATE TABLE seq(id INTEGER PRIMARY KEY AUTOINCREMENT);"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "big", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store), "no table big");
  CU_ASSERT_EQUAL(store_open_table(fx.store, "sqlite_sequence", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "sqlite_schema", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  /* A virtual table cannot take the UUID column. */
  if (sqlite3_exec(fx.db, "CREATE VIRTUAL TABLE ft USING fts5(body)", NULL,
                   NULL, NULL) == SQLITE_OK) {
    CU_ASSERT_EQUAL(store_open_table(fx.store, "ft", &t),
                    LIPSYNC_ERR_UNKNOWN_TABLE);
    CU_ASSERT(contains(store_errmsg(fx.store), "virtual"));
  }
  CU_ASSERT_EQUAL(store_open_table(fx.store, "cities", &t), 0);
  CU_ASSERT_PTR_NOT_NULL(t);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* The canonical type of every kind of declared type, by SQLite's rules
 * of affinity. */
static void test_declared_types(void) {
  static const struct {
    const char *name, *type;
  } want[] = {
      {"C_point", "integer"},
      {"Z_upper", "text"},
      {"_a", "integer"},
      {"c_bigint", "integer"},
      {"c_blob", "blob"},
      {"c_boolean", "boolean"},
      {"c_charint", "integer"},
      {"c_clob", "text"},
      {"c_date", "date"},
      {"c_decimal", "decimal"},
      {"c_double", "real"},
      {"c_float", "real"},
      {"c_floating_point", "integer"}, /* "FLOATING POINT" holds INT */
      {"c_int", "integer"},
      {"c_integer", "integer"},
      {"c_numeric", "decimal"},
      {"c_real", "real"},
      {"c_text", "text"},
      {"c_untyped", "blob"},
      {"c_varchar", "text"},
  };
  size_t nwant = sizeof want / sizeof want[0];
  sfx fx;
  lipsync_table *t = NULL;
  if (!SFX_OPEN(&fx, "CREATE TABLE types(c_integer INTEGER, c_int int,"
                     " c_bigint BIGINT, c_text TEXT, c_varchar VARCHAR(10),"
                     " c_clob CLOB, c_blob BLOB, c_untyped, c_real REAL,"
                     " c_double DOUBLE, c_float FLOAT, c_numeric NUMERIC,"
                     " c_decimal DECIMAL(10,2), c_boolean BOOLEAN, c_date DATE,"
                     " \"C_point\" POINT, c_floating_point \"FLOATING POINT\","
                     " c_charint CHARINT, \"Z_upper\" TEXT, \"_a\" INT)"))
    goto out;
  t = begin_prepared(&fx, "types");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, nwant);
  for (size_t i = 0; i < nwant && i < t->ncolumns; i++) {
    CU_ASSERT_STRING_EQUAL(t->columns[i].name, want[i].name);
    CU_ASSERT_STRING_EQUAL(t->columns[i].type, want[i].type);
  }
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

static void test_uuid_column_any_case(void) {
  sfx fx;
  lipsync_table *t;
  /* SQLite column names ignore ASCII case: this is the UUID column. */
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a, \"_LipSync_UUID\" TEXT);"
                     "INSERT INTO t VALUES (1, NULL);"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM t WHERE "
                               "length(\"_LipSync_UUID\") = 36",
                               -1),
                  1);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* Generated columns are not synced: each side computes its own, and the
 * rows read and written leave them out. */
static void test_generated_column_skipped(void) {
  sfx fx;
  lipsync_table *t = NULL;
  lipsync_row row = {.nvalues = 0};
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(21);
  if (!SFX_OPEN(&fx, "CREATE TABLE g(a INTEGER, twice INTEGER AS (a * 2),"
                     " stored INTEGER AS (a + 1) STORED)"))
    goto out;
  t = begin_prepared(&fx, "g");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL_FATAL(t->ncolumns, 1);
  CU_ASSERT_STRING_EQUAL(t->columns[0].name, "a");
  uuid_fill(uuid, 9);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, &v, 1), 0);
  CU_ASSERT_EQUAL(fx.store->methods->fetch(fx.store, t, uuid, &row), 0);
  CU_ASSERT_EQUAL(row.nvalues, 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT twice + stored FROM g", -1), 64);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

static void test_temp_table_does_not_shadow(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(7);
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a INTEGER);"
                     "CREATE TEMP TABLE t(b TEXT, c TEXT);"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, 1);
  if (t->ncolumns == 1)
    CU_ASSERT_STRING_EQUAL(t->columns[0].name, "a");
  uuid_fill(uuid, 1);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, &v, 1), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM main.t", -1), 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM pragma_table_xinfo('t',"
                               " 'temp') WHERE name = '_lipsync_uuid'",
                               -1),
                  0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

static void test_list_tables(void) {
  static const char *const want[] = {"Zed", "a", "auto", "b", "ä"};
  sfx fx;
  const char *const *names = NULL;
  size_t count = 0;
  if (!SFX_OPEN(&fx, "CREATE TABLE b(x); CREATE TABLE \"Zed\"(x);"
                     "CREATE TABLE a(x); CREATE TABLE \"ä\"(x);"
                     "CREATE TABLE auto(id INTEGER PRIMARY KEY AUTOINCREMENT);"
                     "INSERT INTO auto DEFAULT VALUES;"
                     "CREATE VIEW v AS SELECT * FROM a;"
                     "CREATE INDEX a_x ON a(x);"))
    goto out;
  /* Virtual tables and their shadow tables are not listed. */
  sqlite3_exec(fx.db, "CREATE VIRTUAL TABLE ft USING fts5(body)", NULL, NULL,
               NULL);
  for (int pass = 0; pass < 2; pass++) {
    CU_ASSERT_EQUAL(store_list_tables(fx.store, &names, &count), 0);
    CU_ASSERT_EQUAL(count, 5);
    for (size_t i = 0; i < count && i < 5; i++)
      CU_ASSERT_STRING_EQUAL(names[i], want[i]);
  }
out:
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* prepare_table                                                        */
/* ------------------------------------------------------------------ */
static void test_prepare_refuses_malformed_uuids(void) {
  static const struct {
    const char *value; /* SQL expression for row 2's UUID */
    const char *shown; /* how the message shows it */
  } cases[] = {
      {"'ABC'", "'ABC'"},
      {"'0123ABCD-0000-4000-8000-000000000000'", "'0123ABCD"},
      {"42", " 42"},
      {"42.5", " 42.5"},
      {"x'00112233445566778899aabbccddeeff'", " X'0011"},
      {"'0123456-70000-4000-8000-000000000000'", "'0123456-7"},
      {"'{0000000-0000-4000-8000-00000000000}'", "'{"},
      {"'00000000-0000-4000-8000-000000000000x'", "0000x'"},
      {"'00000000-0000-4000-8000-00000000000é'", "'00000000"},
      {"CAST(x'30303030303030302d303030302d343030302d383030302d"
       "303030303030303030003030' AS TEXT)",
       "'00000000"}, /* 36 bytes, a NUL inside */
      {"''", "''"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sfx fx;
    lipsync_table *t = NULL;
    char sql[512];
    snprintf(sql, sizeof sql,
             "CREATE TABLE m(a, _lipsync_uuid);" /* no affinity */
             "INSERT INTO m VALUES (1, '00000000-0000-4000-8000-000000000001');"
             "INSERT INTO m VALUES (2, %s);",
             cases[i].value);
    if (SFX_OPEN(&fx, sql)) {
      CU_ASSERT_EQUAL(store_begin(fx.store), 0);
      CU_ASSERT_EQUAL(store_open_table(fx.store, "m", &t), 0);
      CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), LIPSYNC_ERR_STORAGE);
      const char *msg = store_errmsg(fx.store);
      CU_ASSERT(contains(msg, "table m: row 2 has a malformed _lipsync_uuid"));
      CU_ASSERT(contains(msg, cases[i].shown));
      if (!contains(msg, cases[i].shown))
        fprintf(stderr, "\n  case %zu: %s\n", i, msg);
      CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
    }
    sfx_close(&fx);
  }
}

static void test_prepare_malformed_without_rowid(void) {
  sfx fx;
  lipsync_table *t = NULL;
  /* No rowid to point at: the message still names the value. */
  if (SFX_OPEN(&fx, "CREATE TABLE w(k TEXT PRIMARY KEY, _lipsync_uuid TEXT)"
                    " WITHOUT ROWID; INSERT INTO w VALUES ('a', 'ABC');")) {
    CU_ASSERT_EQUAL(store_begin(fx.store), 0);
    CU_ASSERT_EQUAL(store_open_table(fx.store, "w", &t), 0);
    CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), LIPSYNC_ERR_STORAGE);
    CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store),
                           "table w: a row has a malformed _lipsync_uuid "
                           "'ABC'");
  }
  sfx_close(&fx);
  /* A column called rowid hides the rowid, not the row number. */
  if (SFX_OPEN(&fx, "CREATE TABLE r(rowid TEXT, _lipsync_uuid TEXT);"
                    "INSERT INTO r VALUES ('x', NULL), ('y', 'bad');")) {
    CU_ASSERT_EQUAL(store_begin(fx.store), 0);
    CU_ASSERT_EQUAL(store_open_table(fx.store, "r", &t), 0);
    CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), LIPSYNC_ERR_STORAGE);
    CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store),
                           "table r: row 2 has a malformed _lipsync_uuid "
                           "'bad'");
  }
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* insert                                                               */
/* ------------------------------------------------------------------ */
static void test_insert_edge_values(void) {
  enum { NROWS = 6, NCOLS = 5 }; /* b BLOB, i INTEGER, r REAL, u, x TEXT */
  static const char nul_text[] = "a\0b";
  static const char utf8[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 "
                             "\xf0\x9d\x84\x9e";
  const size_t big_len = 1024 * 1024;
  uint8_t *big = malloc(big_len);
  sfx fx;
  lipsync_table *t = NULL;
  lipsync_value rows[NROWS][NCOLS];
  uint8_t uuids[NROWS][LIPSYNC_UUID_LEN];
  lipsync_cursor *c = NULL;
  lipsync_row row = {.nvalues = 0};
  int rc, scanned = 0;

  if (!big || !SFX_OPEN(&fx, "CREATE TABLE e(i INTEGER, r REAL, x TEXT,"
                             " b BLOB, u)"))
    goto out;
  for (size_t i = 0; i < big_len; i++)
    big[i] = (uint8_t)(i * 7 + (i >> 11));

  rows[0][0] = tu_blob("", 0);
  rows[0][1] = tu_int(INT64_MIN);
  rows[0][2] = tu_real(1e-308);
  rows[0][3] = tu_real(-0.0); /* an untyped column keeps -0.0 */
  rows[0][4] = tu_text("");

  rows[1][0] = tu_blob(big, big_len);
  rows[1][1] = tu_int(INT64_MAX);
  rows[1][2] = tu_real(5e-324);
  rows[1][3] = tu_int(INT64_MIN);
  rows[1][4] = tu_textn(nul_text, 3);

  rows[2][0] = tu_null();
  rows[2][1] = tu_int(0);
  rows[2][2] = tu_real(INFINITY);
  rows[2][3] = tu_real(-INFINITY);
  rows[2][4] = tu_text(utf8);

  rows[3][0] = tu_blob("\0\1\2", 3);
  rows[3][1] = tu_int(-1);
  rows[3][2] = tu_real(-INFINITY);
  rows[3][3] = tu_real(INFINITY);
  rows[3][4] = tu_null();

  rows[4][0] = tu_text("12"); /* TEXT in a BLOB column stays TEXT */
  rows[4][1] = tu_null();
  rows[4][2] = tu_real(3.0); /* integral REALs come back REAL */
  rows[4][3] = tu_text("12");
  rows[4][4] = tu_text("12");

  rows[5][0] = tu_int(5);
  rows[5][1] = tu_blob("\xff", 1);
  rows[5][2] = tu_real(-DBL_MAX);
  rows[5][3] = tu_blob("", 0);
  rows[5][4] = tu_text("2024-01-01");

  t = begin_prepared(&fx, "e");
  if (!t)
    goto out;
  for (int r = 0; r < NROWS; r++) {
    uuid_fill(uuids[r], (uint8_t)(0x10 * (r + 1)));
    rc = insert_row(fx.store, t, uuids[r], rows[r], NCOLS);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc)
      fprintf(stderr, "\n  row %d: %s\n", r, store_errmsg(fx.store));
  }
  for (int r = 0; r < NROWS; r++) {
    CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuids[r], &row), 0);
    for (int i = 0; i < NCOLS && row.nvalues == NCOLS; i++)
      CHECK_VALUE(&row.values[i], &rows[r][i], "fetched");
  }
  /* The empty blob is a blob, not NULL. */
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM e WHERE typeof(b) = "
                               "'blob' AND length(b) = 0",
                               -1),
                  1);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (c && (rc = store_next(fx.store, c, &row)) == 1) {
    int r = row.uuid[0] / 0x10 - 1;
    scanned++;
    CU_ASSERT(r >= 0 && r < NROWS);
    for (int i = 0; r >= 0 && r < NROWS && i < NCOLS; i++)
      CHECK_VALUE(&row.values[i], &rows[r][i], "scanned");
  }
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(scanned, NROWS);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
  free(big);
}

static void test_insert_refusals(void) {
  static const struct {
    const char *column;
    lipsync_value value;
    const char *why;
  } cases[] = {
      {"u", {LIPSYNC_REAL, {.real = NAN}}, "NaN"},
      {"i", {LIPSYNC_REAL, {.real = NAN}}, "NaN"},
      {"x", {LIPSYNC_REAL, {.real = -NAN}}, "NaN"},
      {"r", {LIPSYNC_REAL, {.real = -0.0}}, "stored as 0.0"},
      {"i", {LIPSYNC_REAL, {.real = -0.0}}, "stored as an INTEGER"},
      {"n", {LIPSYNC_REAL, {.real = -0.0}}, "stored as an INTEGER"},
      {"i", {LIPSYNC_REAL, {.real = 3.0}}, "stored as an INTEGER"},
      {"n", {LIPSYNC_REAL, {.real = 1e15}}, "stored as an INTEGER"},
      {"x", {LIPSYNC_REAL, {.real = 2.5}}, "stored as TEXT"},
      {"x", {LIPSYNC_INTEGER, {.integer = 5}}, "stored as TEXT"},
      {"r", {LIPSYNC_INTEGER, {.integer = 3}}, "stored as a REAL"},
      {"i", {LIPSYNC_TEXT, {.bytes = {"12", 2}}}, "stored as a number"},
      {"r", {LIPSYNC_TEXT, {.bytes = {".5", 2}}}, "stored as a number"},
      {"n", {LIPSYNC_TEXT, {.bytes = {" 1e3 ", 5}}}, "stored as a number"},
      {"x", {LIPSYNC_TEXT, {.bytes = {"\xff", 1}}}, "not valid UTF-8"},
      {"u", {LIPSYNC_TEXT, {.bytes = {"\xc0\x80", 2}}}, "not valid UTF-8"},
      {"x", {LIPSYNC_TEXT, {.bytes = {"\xed\xa0\x80", 3}}}, "not valid UTF-8"},
      {"x", {LIPSYNC_TEXT, {.bytes = {"ok\xe2\x82", 4}}}, "not valid UTF-8"},
      {"x",
       {LIPSYNC_TEXT, {.bytes = {"\xf4\x90\x80\x80", 4}}},
       "not valid UTF-8"},
  };
  static const char *const columns[] = {"i", "n", "r", "u", "x"};
  sfx fx;
  lipsync_table *t;
  if (!SFX_OPEN(&fx, "CREATE TABLE f(i INTEGER, r REAL, n NUMERIC, x TEXT, u)"))
    goto out;
  t = begin_prepared(&fx, "f");
  if (!t)
    goto out;
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    lipsync_value v[5];
    uint8_t uuid[LIPSYNC_UUID_LEN];
    char col[32];
    for (int i = 0; i < 5; i++)
      v[i] =
          strcmp(columns[i], cases[k].column) == 0 ? cases[k].value : tu_null();
    uuid_fill(uuid, (uint8_t)(0xA0 + k));
    CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 5),
                    LIPSYNC_ERR_INVALID_VALUE);
    const char *msg = store_errmsg(fx.store);
    char uuid_text[37];
    lipsync_uuid_format(uuid, uuid_text);
    snprintf(col, sizeof col, "column %s", cases[k].column);
    CU_ASSERT(contains(msg, "table f: "));
    CU_ASSERT(contains(msg, uuid_text));
    CU_ASSERT(contains(msg, col));
    CU_ASSERT(contains(msg, cases[k].why));
    if (!contains(msg, cases[k].why))
      fprintf(stderr, "\n  case %zu: %s\n", k, msg);
  }
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM f", -1), 0);
  /* The statement is still good after refusals. */
  {
    lipsync_value v[5] = {tu_int(1), tu_int(2), tu_real(2.5), tu_real(-0.0),
                          tu_text("t")};
    uint8_t uuid[LIPSYNC_UUID_LEN];
    uuid_fill(uuid, 1);
    CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 5), 0);
  }
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* Reads column 0 of |st|'s current row as a value (bytes point into |st|). */
static lipsync_value column_value(sqlite3_stmt *st) {
  switch (sqlite3_column_type(st, 0)) {
  case SQLITE_INTEGER:
    return tu_int(sqlite3_column_int64(st, 0));
  case SQLITE_FLOAT:
    return tu_real(sqlite3_column_double(st, 0));
  case SQLITE_TEXT: {
    const void *p = sqlite3_column_text(st, 0);
    return tu_textn(p, (size_t)sqlite3_column_bytes(st, 0));
  }
  case SQLITE_BLOB: {
    const void *p = sqlite3_column_blob(st, 0);
    return tu_blob(p ? p : "", (size_t)sqlite3_column_bytes(st, 0));
  }
  default:
    return tu_null();
  }
}

/* True if SQLite itself, given |v| for a column declared |decl| (in a
 * STRICT table if |strict|), stores it so that it reads back unchanged.
 * |db| is a connection of its own: the store's open statements would keep
 * DROP TABLE from running on the store's. */
static bool sqlite_keeps(sqlite3 *db, const char *decl, bool strict,
                         const lipsync_value *v) {
  char sql[256];
  sqlite3_stmt *ins = NULL, *sel = NULL;
  bool kept = false;
  const void *data = v->u.bytes.data ? v->u.bytes.data : "";
  snprintf(sql, sizeof sql,
           "DROP TABLE IF EXISTS raw; CREATE TABLE raw(c %s)%s", decl,
           strict ? " STRICT" : "");
  if (!TU_EXEC(db, sql))
    return false;
  if (sqlite3_prepare_v2(db, "INSERT INTO raw(c) VALUES (?)", -1, &ins, NULL) !=
      SQLITE_OK)
    goto out;
  switch (v->type) {
  case LIPSYNC_INTEGER:
    sqlite3_bind_int64(ins, 1, v->u.integer);
    break;
  case LIPSYNC_REAL:
    sqlite3_bind_double(ins, 1, v->u.real);
    break;
  case LIPSYNC_TEXT:
    sqlite3_bind_text64(ins, 1, data, v->u.bytes.len, SQLITE_STATIC,
                        SQLITE_UTF8);
    break;
  case LIPSYNC_BLOB:
    sqlite3_bind_blob64(ins, 1, data, v->u.bytes.len, SQLITE_STATIC);
    break;
  default:
    break;
  }
  if (sqlite3_step(ins) != SQLITE_DONE) /* refused (STRICT, rowid) */
    goto out;
  if (sqlite3_prepare_v2(db, "SELECT c FROM raw", -1, &sel, NULL) ==
          SQLITE_OK &&
      sqlite3_step(sel) == SQLITE_ROW) {
    lipsync_value got = column_value(sel);
    kept = tu_value_eq(&got, v);
  }
out:
  sqlite3_finalize(ins);
  sqlite3_finalize(sel);
  return kept;
}

/*
 * The oracle: for every declared type and every value of a corpus, the
 * backend accepts the value exactly when SQLite keeps it unchanged, and
 * then reads it back unchanged. This pins value_survives_affinity() to the
 * linked SQLite, whatever its version.
 */
static void test_affinity_matches_sqlite(void) {
  static const char *const decls[] = {
      "INTEGER", "REAL", "NUMERIC", "TEXT",   "",
      "BLOB",    "DATE", "INT",     "DOUBLE", "INTEGER PRIMARY KEY"};
  static const char *const strict_decls[] = {"INT",  "INTEGER", "REAL",
                                             "TEXT", "BLOB",    "ANY"};
  static const char *const texts[] = {
      "12",
      " 12 ",
      "1e3",
      "3.0",
      "0x10",
      "inf",
      "NaN",
      "1.",
      ".5",
      "+5",
      "-5",
      "1e",
      "12a",
      "9223372036854775808",
      "-9223372036854775809",
      "1e999",
      "\t7\n",
      "\v7",
      "\f7",
      "\r7\r",
      "",
      "abc",
      "2024-01-01",
      "-",
      ".",
      " ",
      "+",
      "e5",
      "1e+",
      "1e+5",
      "1E5",
      "5e-3",
      "\xd9\xa1\xd9\xa2",
      "\xc2\xa0\x37" /* NBSP 7 */,
      "5 5",
      "0000",
      "00.100",
      "1.5e3.2",
      "--5",
      "+-5",
      "+.5",
      "-.5e-5",
      "1_000",
      "0b101",
      "1,5",
      "3.14159265358979323846",
      "123456789012345678901234567890",
      "-0",
      "0.0",
      "-0.0",
      "1e-400",
      "12 ",
      "\n",
      "1e5x",
      ".e5",
  };
  static const double reals[] = {0.0,
                                 -0.0,
                                 1.0,
                                 3.0,
                                 3.5,
                                 -2.5,
                                 0.1,
                                 1e15,
                                 1e20,
                                 9007199254740992.0,
                                 4611686018427387904.0,
                                 9223372036854774784.0,
                                 9223372036854775808.0,
                                 -9223372036854774784.0,
                                 -9223372036854775808.0,
                                 1e-308,
                                 5e-324,
                                 DBL_MAX,
                                 -DBL_MAX,
                                 INFINITY,
                                 -INFINITY,
                                 NAN};
  static const int64_t ints[] = {
      0, 1, -1, 42, INT64_MIN, INT64_MAX, 9007199254740993};
  enum { MAXV = 128 };
  lipsync_value corpus[MAXV];
  sqlite3 *oracle = TU_DB_OPEN(":memory:");
  size_t nv = 0;
  int checked = 0;

  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
    corpus[nv++] = tu_text(texts[i]);
  corpus[nv++] = tu_textn("7\0", 2);
  corpus[nv++] = tu_textn("\0", 1);
  corpus[nv++] = tu_textn("1\0"
                          "2",
                          3);
  for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
    corpus[nv++] = tu_real(reals[i]);
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
    corpus[nv++] = tu_int(ints[i]);
  corpus[nv++] = tu_null();
  corpus[nv++] = tu_blob("", 0);
  corpus[nv++] = tu_blob("12", 2);
  corpus[nv++] = tu_blob("\0\xff", 2);
  CU_ASSERT(nv <= MAXV);

  bool have_strict = sqlite3_libversion_number() >= 3037000;
  size_t ndecl = sizeof decls / sizeof decls[0];
  size_t nstrict =
      have_strict ? sizeof strict_decls / sizeof strict_decls[0] : 0;
  for (size_t d = 0; d < ndecl + nstrict; d++) {
    bool strict = d >= ndecl;
    const char *decl = strict ? strict_decls[d - ndecl] : decls[d];
    sfx fx;
    lipsync_table *t;
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE TABLE o(c %s)%s", decl,
             strict ? " STRICT" : "");
    if (!SFX_OPEN(&fx, sql)) {
      sfx_close(&fx);
      continue;
    }
    t = begin_prepared(&fx, "o");
    for (size_t i = 0; t && i < nv; i++) {
      const lipsync_value *v = &corpus[i];
      uint8_t uuid[LIPSYNC_UUID_LEN];
      lipsync_row row = {.nvalues = 0};
      char what[160], vs[96];
      bool kept = oracle && sqlite_keeps(oracle, decl, strict, v);
      lipsync_uuid_generate(uuid);
      TU_EXEC(fx.db, "DELETE FROM o");
      int rc = insert_row(fx.store, t, uuid, v, 1);
      tu_value_str(v, vs, sizeof vs);
      snprintf(what, sizeof what, "%s%s column, %s: sqlite %s it, store %s",
               decl, strict ? " STRICT" : "", vs, kept ? "keeps" : "changes",
               rc == 0 ? "accepts" : "refuses");
      CU_assertImplementation(kept == (rc == 0), __LINE__, what, __FILE__, "",
                              CU_FALSE);
      if (kept != (rc == 0))
        fprintf(stderr, "\n  %s (%s)\n", what, store_errmsg(fx.store));
      if (rc == 0) {
        CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
        if (row.nvalues == 1)
          CHECK_VALUE(&row.values[0], v, what);
      } else {
        CU_ASSERT_EQUAL(rc, LIPSYNC_ERR_INVALID_VALUE);
      }
      checked++;
    }
    sfx_close(&fx);
  }
  CU_ASSERT(checked >= (int)(nv * ndecl));
  sqlite3_close(oracle);
}

static void test_rowid_alias(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2];
  if (!SFX_OPEN(&fx, "CREATE TABLE r(id INTEGER PRIMARY KEY, v);"
                     "CREATE TABLE d(id INTEGER PRIMARY KEY DESC, v);"))
    goto out;
  t = begin_prepared(&fx, "r");
  if (!t)
    goto out;
  uuid_fill(uuid, 1);
  v[0] = tu_null();
  v[1] = tu_int(1);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2),
                  LIPSYNC_ERR_INVALID_VALUE);
  CU_ASSERT(contains(store_errmsg(fx.store), "new rowid"));
  v[0] = tu_text("abc");
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2),
                  LIPSYNC_ERR_INVALID_VALUE);
  CU_ASSERT(contains(store_errmsg(fx.store), "holds only integers"));
  v[0] = tu_int(-5);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2), 0);
  /* "INTEGER PRIMARY KEY DESC" is an ordinary column (an SQLite quirk):
   * NULL stays NULL there. */
  CU_ASSERT_EQUAL(store_open_table(fx.store, "d", &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), 0);
  v[0] = tu_null();
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM d WHERE id IS NULL", -1), 1);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

static void test_strict_table(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2];
  lipsync_row row = {.nvalues = 0};
  if (sqlite3_libversion_number() < 3037000)
    return; /* no STRICT tables */
  if (!SFX_OPEN(&fx, "CREATE TABLE s(a ANY, i INT) STRICT"))
    goto out;
  t = begin_prepared(&fx, "s");
  if (!t)
    goto out;
  CU_ASSERT_STRING_EQUAL(t->columns[0].type, "numeric");
  /* ANY keeps every value as given, though its canonical type is numeric. */
  uuid_fill(uuid, 1);
  v[0] = tu_real(-0.0);
  v[1] = tu_int(1);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  if (row.nvalues == 2)
    CHECK_VALUE(&row.values[0], &v[0], "ANY keeps -0.0");
  /* STRICT refuses what affinity would have kept: still an invalid value. */
  uuid_fill(uuid, 2);
  v[0] = tu_text("12");
  v[1] = tu_real(3.5);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2),
                  LIPSYNC_ERR_INVALID_VALUE);
  CU_ASSERT(contains(store_errmsg(fx.store), "table s: row "));
  CU_ASSERT(contains(store_errmsg(fx.store), "cannot store REAL value"));
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

static void test_constraint_violation(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2];
  /* Not empty, so the UUID index exists from prepare_table on. */
  if (!SFX_OPEN(&fx, "CREATE TABLE c(id INTEGER UNIQUE, name TEXT NOT NULL);"
                     "INSERT INTO c VALUES (0, 'zero')"))
    goto out;
  t = begin_prepared(&fx, "c");
  if (!t)
    goto out;
  v[0] = tu_int(1);
  v[1] = tu_text("one");
  uuid_fill(uuid, 1);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2), 0);
  uuid_fill(uuid, 2);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store),
                         "table c: row 02020202-0202-0202-0202-020202020202: "
                         "UNIQUE constraint failed: c.id");
  v[0] = tu_int(2);
  v[1] = tu_null();
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "NOT NULL constraint failed"));
  /* The same UUID twice: a row the items do not know of (a change that
   * escaped capture), which the next sync recounts. */
  v[1] = tu_text("two");
  uuid_fill(uuid, 1);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2),
                  LIPSYNC_ERR_VERIFY_FAILED);
  CU_ASSERT(contains(store_errmsg(fx.store), "without its item"));
  /* The transaction goes on. */
  uuid_fill(uuid, 2);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM c", -1), 3);
  /* A row of the wrong width is the caller's bug. */
  CU_ASSERT_EQUAL(fx.store->methods->insert(
                      fx.store, t, &(lipsync_row){.nvalues = 1, .values = v}),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* The foreign keys a connection enforces hold for the state the sync
 * leaves, not at each write: a child may come before its parent, and a
 * missing parent fails flush, before Verify, naming the row. A wrapped
 * connection keeps the application's choice; a connection the store opens
 * enforces them. */
static void test_foreign_keys_deferred(void) {
  sfx fx;
  lipsync_table *p, *c;
  lipsync_store *own = NULL;
  char err[256] = "";
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2];
  if (!SFX_OPEN(&fx, "CREATE TABLE p(id INTEGER PRIMARY KEY);"
                     "CREATE TABLE c(id INTEGER, pid INTEGER REFERENCES p(id));"
                     "INSERT INTO p VALUES (1); INSERT INTO c VALUES (10, 1);"
                     "PRAGMA foreign_keys = ON"))
    goto out;
  if (!(c = begin_prepared(&fx, "c")) ||
      !(p = also_prepared(fx.store, &fx, "p")))
    goto out;
  v[0] = tu_int(20);
  v[1] = tu_int(2);
  uuid_fill(uuid, 20);
  CU_ASSERT_EQUAL(insert_row(fx.store, c, uuid, v, 2), 0);
  v[0] = tu_int(2);
  uuid_fill(uuid, 2);
  CU_ASSERT_EQUAL(insert_row(fx.store, p, uuid, v, 1), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  v[0] = tu_int(30);
  v[1] = tu_int(3);
  uuid_fill(uuid, 30);
  CU_ASSERT_EQUAL(insert_row(fx.store, c, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(
      contains(store_errmsg(fx.store),
               "table c: a row (rowid 3) refers by (pid) to no row of p"));
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM c", -1), 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM p", -1), 1);

  /* Off on the application's connection: its choice stands. */
  TU_EXEC(fx.db, "PRAGMA foreign_keys = OFF");
  if (!(c = begin_prepared(&fx, "c")))
    goto out;
  CU_ASSERT_EQUAL(insert_row(fx.store, c, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);

  /* On, on a connection the store opened. */
  CU_ASSERT_EQUAL(lipsync_store_sqlite_open(&own, fx.path, err, sizeof err), 0);
  if (!own || !(c = begin_on(own, &fx, "c")))
    goto out;
  CU_ASSERT_EQUAL(store_begin_write(own), 0);
  CU_ASSERT_EQUAL(insert_row(own, c, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(store_flush(own), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(own), "FOREIGN KEY constraint failed"));
  CU_ASSERT_EQUAL(store_rollback(own), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM c", -1), 1);
out:
  lipsync_store_free(own);
  sfx_close(&fx);
}

/* A bulk load sets an empty table's indexes aside, but not a unique index
 * that a foreign key refers to while foreign keys are enforced: without
 * it, SQLite refuses every write to both tables ("foreign key
 * mismatch"). */
static void test_foreign_key_parent_index_kept(void) {
  sfx fx;
  lipsync_table *q, *r;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[1];
  const char *count_index = "SELECT count(*) FROM sqlite_schema WHERE "
                            "type = 'index' AND name = 'q_k'";
  if (!SFX_OPEN(&fx, "CREATE TABLE q(k INTEGER);"
                     "CREATE UNIQUE INDEX q_k ON q(k);"
                     "CREATE INDEX q_k2 ON q(k * 2);"
                     "CREATE TABLE r(x INTEGER REFERENCES q(k));"
                     "PRAGMA foreign_keys = ON"))
    goto out;
  if (!(q = begin_prepared(&fx, "q")) ||
      !(r = also_prepared(fx.store, &fx, "r")))
    goto out;
  v[0] = tu_int(5);
  uuid_fill(uuid, 5);
  CU_ASSERT_EQUAL(insert_row(fx.store, q, uuid, v, 1), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, count_index, -1), 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM sqlite_schema WHERE "
                               "name = 'q_k2'",
                               -1),
                  0); /* the others are set aside as ever */
  uuid_fill(uuid, 6);
  CU_ASSERT_EQUAL(insert_row(fx.store, r, uuid, v, 1), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM r", -1), 1);
out:
  sfx_close(&fx);
}

/* An empty table's indexes are set aside at its first insert and built
 * once, when a lookup first needs them or at commit; their constraints
 * still hold, and a rollback brings them back. */
static void test_deferred_index(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[1] = {{0}};
  lipsync_row row = {.nvalues = 0};
  const char *count_index = "SELECT count(*) FROM sqlite_schema WHERE "
                            "type = 'index' AND tbl_name = 'd'";
  if (!SFX_OPEN(&fx, "CREATE TABLE d(x INTEGER);"
                     "CREATE UNIQUE INDEX d_x ON d(x);"))
    goto out;
  t = begin_prepared(&fx, "d");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, count_index, -1), 2);
  for (int i = 1; i <= 3; i++) {
    v[0] = tu_int(i);
    uuid_fill(uuid, (uint8_t)i);
    CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 1), 0);
  }
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, count_index, -1), 0);
  uuid_fill(uuid, 2);
  CU_ASSERT_EQUAL(fx.store->methods->fetch(fx.store, t, uuid, &row), 0);
  CU_ASSERT_EQUAL(row.values[0].u.integer, 2);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, count_index, -1), 2);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, count_index, -1), 2);

  /* Commit builds them too, and refuses a duplicate UUID ... */
  TU_EXEC(fx.db, "DELETE FROM d");
  t = begin_prepared(&fx, "d");
  if (!t)
    goto out;
  uuid_fill(uuid, 7);
  v[0] = tu_int(7);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 1), 0);
  v[0] = tu_int(8);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 1), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "duplicate"));
  store_rollback(fx.store);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM d", -1), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, count_index, -1), 2);

  /* ... and a row that breaks the table's own unique index. */
  t = begin_prepared(&fx, "d");
  if (!t)
    goto out;
  for (uint8_t i = 1; i <= 2; i++) {
    uuid_fill(uuid, (uint8_t)(10 + i)); /* 1 to 3 are tombstones now */
    CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 1), 0);
  }
  CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "UNIQUE constraint failed"));
  store_rollback(fx.store);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, count_index, -1), 2);
out:
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Opening, and other writers                                           */
/* ------------------------------------------------------------------ */

/* lipsync_store_sqlite_open puts the database in WAL mode, for good. */
static void test_open_sets_wal(void) {
  char dir[256], path[512], errbuf[256] = "";
  lipsync_store *store = NULL;
  sqlite3 *db;
  char *mode = NULL;
  if (!tu_tmpdir(dir, sizeof dir))
    return;
  tu_path(path, sizeof path, dir, "wal.db");
  CU_ASSERT_EQUAL(
      lipsync_store_sqlite_open(&store, path, errbuf, sizeof errbuf), 0);
  lipsync_store_free(store);
  db = TU_DB_OPEN(path);
  if (db)
    mode = TU_QUERY_TEXT(db, "PRAGMA journal_mode");
  CU_ASSERT(mode && strcmp(mode, "wal") == 0);
  free(mode);
  sqlite3_close(db);
  tu_rmdir(dir);
}

static void test_open_errors(void) {
  char dir[256], path[512], errbuf[256] = "";
  lipsync_store *store = (lipsync_store *)&store; /* must come back NULL */
  FILE *f;
  if (!tu_tmpdir(dir, sizeof dir))
    return;
  tu_path(path, sizeof path, dir, "garbage.db");
  f = fopen(path, "w");
  if (f) {
    for (int i = 0; i < 100; i++)
      fputs("this is not a database file ", f);
    fclose(f);
  }
  CU_ASSERT_EQUAL(
      lipsync_store_sqlite_open(&store, path, errbuf, sizeof errbuf),
      LIPSYNC_ERR_STORAGE);
  CU_ASSERT_PTR_NULL(store);
  CU_ASSERT(contains(errbuf, path));
  CU_ASSERT(contains(errbuf, "not a database"));

  tu_path(path, sizeof path, dir, "no/such/dir.db");
  CU_ASSERT_NOT_EQUAL(
      lipsync_store_sqlite_open(&store, path, errbuf, sizeof errbuf), 0);
  CU_ASSERT(contains(errbuf, "cannot open"));
  CU_ASSERT_EQUAL(lipsync_store_sqlite_open(&store, path, NULL, 0),
                  LIPSYNC_ERR_STORAGE);

  CU_ASSERT_EQUAL(lipsync_store_sqlite_open(&store, ":memory:", NULL, 0), 0);
  CU_ASSERT_STRING_EQUAL(lipsync_store_errmsg(store), "no error");
  lipsync_store_free(store);
  lipsync_store_free(NULL);
  CU_ASSERT_EQUAL(lipsync_store_sqlite_wrap(&store, NULL),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NULL(store);
  tu_rmdir(dir);
}

typedef struct committer {
  lipsync_store *store;
  int rc;
} committer;

static void *commit_later(void *arg) {
  committer *c = arg;
  sleep_ms(300);
  c->rc = store_commit(c->store);
  return NULL;
}

/* Two stores on one file: the second waits for the first's transaction. */
static void test_second_writer_waits(void) {
  char dir[256], path[512], errbuf[256];
  lipsync_store *first = NULL, *second = NULL;
  sqlite3 *db2 = NULL;
  lipsync_table *t = NULL;
  lipsync_row row = {.nvalues = 0};
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(99);
  committer later;
  pthread_t thread;
  double started;

  if (!tu_tmpdir(dir, sizeof dir))
    return;
  tu_path(path, sizeof path, dir, "shared.db");
  CU_ASSERT_EQUAL(
      lipsync_store_sqlite_open(&first, path, errbuf, sizeof errbuf), 0);
  db2 = TU_DB_OPEN(path);
  if (!first || !db2)
    goto out;
  TU_EXEC(db2, "CREATE TABLE t(a INTEGER)");
  CU_ASSERT_EQUAL(lipsync_store_sqlite_wrap(&second, db2), 0);
  if (!second)
    goto out;

  CU_ASSERT_EQUAL(store_begin(first), 0);
  CU_ASSERT_EQUAL(store_open_table(first, "t", &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(first, t), 0);
  uuid_fill(uuid, 0x5A);
  row.nvalues = 1;
  row.values = &v;
  memcpy(row.uuid, uuid, LIPSYNC_UUID_LEN);
  CU_ASSERT_EQUAL(store_insert(first, t, &row), 0);

  /* A short wait fails: the same sync may succeed later... */
  TU_EXEC(db2, "PRAGMA busy_timeout = 50");
  CU_ASSERT_EQUAL(store_begin(second), LIPSYNC_ERR_TRY_AGAIN);
  CU_ASSERT(contains(store_errmsg(second), "locked"));
  CU_ASSERT_EQUAL(store_rollback(second), 0);

  /* ...a long one lasts until the first commits, then succeeds. */
  TU_EXEC(db2, "PRAGMA busy_timeout = 10000");
  later.store = first;
  later.rc = -1;
  started = now_s();
  if (pthread_create(&thread, NULL, commit_later, &later) != 0) {
    CU_FAIL("pthread_create");
    store_rollback(first);
    goto out;
  }
  CU_ASSERT_EQUAL(store_begin(second), 0);
  CU_ASSERT(now_s() - started >= 0.2);
  pthread_join(thread, NULL);
  CU_ASSERT_EQUAL(later.rc, 0);

  /* The second sees the first's row. */
  CU_ASSERT_EQUAL(store_open_table(second, "t", &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(second, t), 0);
  CU_ASSERT_EQUAL(store_fetch(second, t, uuid, &row), 0);
  CU_ASSERT(row.nvalues == 1 && row.values[0].u.integer == 99);
  CU_ASSERT_EQUAL(store_rollback(second), 0);
out:
  lipsync_store_free(second);
  sqlite3_close(db2);
  lipsync_store_free(first);
  tu_rmdir(dir);
}

/* ------------------------------------------------------------------ */
/* Other databases                                                      */
/* ------------------------------------------------------------------ */
static void test_without_rowid_table(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_text("k9"), tu_real(0.5)};
  lipsync_row row = {.nvalues = 0};
  if (!SFX_OPEN(&fx, "CREATE TABLE w(k TEXT PRIMARY KEY, v REAL) WITHOUT ROWID;"
                     "INSERT INTO w VALUES ('k1', 1.5), ('k2', NULL);"))
    goto out;
  t = begin_prepared(&fx, "w");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 2);
  uuid_fill(uuid, 0xFF); /* above every random (version 4) UUID */
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  if (row.nvalues == 2)
    CHECK_VALUE(&row.values[0], &v[0], "key");
  CU_ASSERT_EQUAL(count_rows(fx.store, t, uuid, NULL), 1);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

static void test_utf16_database(void) {
  static const char text[] = "nul\0inside \xf0\x9f\x98\x80 \xc3\xa9";
  sfx fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_textn(text, sizeof text - 1), tu_text("")};
  lipsync_row row = {.nvalues = 0};
  /* Text is stored as UTF-16 and comes back as the same UTF-8. */
  if (!SFX_OPEN(&fx, "PRAGMA encoding = 'UTF-16le'; CREATE TABLE x(a TEXT, b)"))
    goto out;
  t = begin_prepared(&fx, "x");
  if (!t)
    goto out;
  uuid_fill(uuid, 3);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  for (int i = 0; i < 2 && row.nvalues == 2; i++)
    CHECK_VALUE(&row.values[i], &v[i], "UTF-16 text");
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Change capture: SQLite's state, triggers and values                  */
/* ------------------------------------------------------------------ */

/* An integer from the item of table |table| selected by |where|. */
static int64_t item_int(sqlite3 *db, const char *table, const char *expr,
                        const char *where, int64_t dflt) {
  char *sql = sqlite3_mprintf("SELECT %s FROM \"_lipsync_meta_%w\" WHERE %s",
                              expr, table, where);
  int64_t v = TU_QUERY_INT(db, sql, dflt);
  sqlite3_free(sql);
  return v;
}

/* The clock of _lipsync_state: the last version this database made or
 * observed. */
static int64_t state_clock(sqlite3 *db) {
  return TU_QUERY_INT(db, "SELECT clock FROM _lipsync_state", -1);
}

/* The state's clock: installing capture never ticks it; every captured
 * change takes its next tick, one per insert (though the trigger gives
 * the row its UUID with an UPDATE), none for a write that changes no value
 * or is rolled back; 2 and 2.0, equal in SQL, are different values. */
static void test_capture_ticks_state_clock(void) {
  sfx fx;
  int64_t c1, c2, c3, c4;
  char *uuid = NULL, where[80];
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a INTEGER, b);"
                     "INSERT INTO t(a, b) VALUES (1, 'one');") ||
      !prepare_commit(&fx, "t"))
    goto out;
  CU_ASSERT_EQUAL(state_clock(fx.db), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT applying FROM _lipsync_state", -1), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT length(site) FROM _lipsync_state", -1), 16);

  APP_EXEC(&fx, "INSERT INTO t(a, b) VALUES (2, 'two')");
  uuid = TU_QUERY_TEXT(fx.db, "SELECT _lipsync_uuid FROM t WHERE a = 2");
  if (!uuid)
    goto out;
  snprintf(where, sizeof where, "uuid = '%s'", uuid);
  c1 = item_int(fx.db, "t", "clock", where, -1);
  CU_ASSERT_EQUAL(c1, state_clock(fx.db));
  CU_ASSERT_EQUAL(item_int(fx.db, "t",
                           "site = (SELECT site FROM _lipsync_state)", where,
                           -1),
                  1);

  /* With the clock ahead of the wall clock, exactly one more. */
  APP_EXEC(&fx, "UPDATE _lipsync_state SET clock = 1 << 61;"
                "INSERT INTO t(a) VALUES (9)");
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT m.clock = (1 << 61) + 1 FROM"
                               " _lipsync_meta_t m JOIN t ON m.uuid ="
                               " t._lipsync_uuid WHERE t.a = 9",
                               -1),
                  1);
  CU_ASSERT_EQUAL(state_clock(fx.db), ((int64_t)1 << 61) + 1);
  c1 = state_clock(fx.db);

  APP_EXEC(&fx, "UPDATE t SET b = 'deux' WHERE a = 2");
  c2 = item_int(fx.db, "t", "clock", where, -1);
  CU_ASSERT(c2 > c1);
  APP_EXEC(&fx, "UPDATE t SET b = 'deux', a = 2 WHERE a = 2");
  CU_ASSERT_EQUAL(state_clock(fx.db), c2);
  APP_EXEC(&fx, "UPDATE t SET b = 2 WHERE a = 2");
  c3 = item_int(fx.db, "t", "clock", where, -1);
  APP_EXEC(&fx, "UPDATE t SET b = 2.0 WHERE a = 2");
  c4 = item_int(fx.db, "t", "clock", where, -1);
  CU_ASSERT(c3 > c2 && c4 > c3);
  APP_EXEC(&fx, "BEGIN; UPDATE t SET b = 'x' WHERE a = 2;"
                " DELETE FROM t WHERE a = 1; ROLLBACK");
  CU_ASSERT_EQUAL(item_int(fx.db, "t", "clock", where, -1), c4);
  CU_ASSERT_EQUAL(state_clock(fx.db), c4);
out:
  free(uuid);
  sfx_close(&fx);
}

/* Applying rows sets applying only inside the store's transaction, and
 * ticks no clock; finish_table makes the clock observe the highest clock
 * received, never going back. */
static void test_apply_and_finish_state(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t u1[LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_int(7), tu_text("seven")};
  uint64_t far = (uint64_t)1 << 60;
  int64_t clock0;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a INTEGER, b TEXT)") ||
      !prepare_commit(&fx, "t"))
    goto out;
  clock0 = state_clock(fx.db);
  uuid_fill(u1, 0x11);
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT applying FROM _lipsync_state", -1), 1);
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u1, v, 2, version_of(1000, 0xA1), 0, false), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT applying FROM _lipsync_state", -1), 0);
  CU_ASSERT_EQUAL(state_clock(fx.db), clock0);
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  v[1] = tu_text("SEVEN");
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u1, v, 2, version_of(2000, 0xB2), 0, true), 0);
  CU_ASSERT_EQUAL(
      store_finish_table(fx.store, t, &(lipsync_finish){.max_clock = far}), 0);
  CU_ASSERT_EQUAL(state_clock(fx.db), (int64_t)far);
  CU_ASSERT_EQUAL(
      store_finish_table(fx.store, t, &(lipsync_finish){.max_clock = 5}), 0);
  CU_ASSERT_EQUAL(state_clock(fx.db), (int64_t)far);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(state_clock(fx.db), (int64_t)far);
out:
  sfx_close(&fx);
}

/* tick reads the clock without moving it, and creates the state in a
 * database that has none; a clock ahead of the wall clock goes on from
 * itself. */
static void test_tick_reads_state(void) {
  sfx fx;
  lipsync_version a, b;
  if (!SFX_OPEN(&fx, NULL))
    goto out;
  CU_ASSERT_EQUAL(store_tick(fx.store, &a), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM _lipsync_state", -1), 1);
  CU_ASSERT(state_clock(fx.db) < (int64_t)a.clock);
  TU_EXEC(fx.db, "UPDATE _lipsync_state SET clock = 1 << 61");
  CU_ASSERT_EQUAL(store_tick(fx.store, &b), 0);
  CU_ASSERT_EQUAL(b.clock, ((uint64_t)1 << 61) + 1);
  CU_ASSERT_EQUAL(state_clock(fx.db), (int64_t)1 << 61);
out:
  sfx_close(&fx);
}

/* update compares values, not SQL equality: 'ABC' equals 'abc' under
 * NOCASE, and 1 equals 1.0, but each is another value, written. */
static void test_update_compares_values(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_int(1), tu_text("abc")};
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a INTEGER, b COLLATE NOCASE);"
                     "CREATE TABLE counts(updates INTEGER);"
                     "INSERT INTO counts VALUES (0);"
                     "CREATE TRIGGER cu AFTER UPDATE ON t BEGIN"
                     " UPDATE counts SET updates = updates + 1; END;"))
    goto out;
  uuid_fill(u, 0x33);
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u, v, 2, version_of(10, 1), 0, false),
                  0);
  v[1] = tu_text("ABC");
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u, v, 2, version_of(12, 2), 0, true),
                  0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT updates FROM counts", -1), 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM t WHERE b = 'ABC' COLLATE"
                               " BINARY",
                               -1),
                  1);
  v[1] = tu_real(1.0);
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u, v, 2, version_of(13, 2), 0, true),
                  0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT updates FROM counts", -1), 2);
  v[1] = tu_int(1);
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u, v, 2, version_of(14, 2), 0, true),
                  0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT updates FROM counts", -1), 3);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT typeof(b) = 'integer' FROM t", -1), 1);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* The state table and item tables in any case are no tables to sync; the
 * four triggers are installed once: a second prepare of an unchanged
 * table leaves the schema alone. */
static void test_capture_triggers(void) {
  sfx fx;
  lipsync_table *t = NULL;
  int64_t version;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a); INSERT INTO t VALUES (1)") ||
      !prepare_commit(&fx, "t"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "_lipsync_state", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "_LIPSYNC_META_t", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(
          fx.db,
          "SELECT (SELECT group_concat(name, ' ') FROM (SELECT name FROM"
          " sqlite_schema WHERE type = 'trigger' ORDER BY name))"
          " = '_lipsync_del_t _lipsync_ins_t _lipsync_upd_t"
          " _lipsync_uuid_t'",
          -1),
      1);
  version = TU_QUERY_INT(fx.db, "PRAGMA schema_version", -1);
  if (prepare_commit(&fx, "t"))
    CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "PRAGMA schema_version", -1), version);
out:
  sfx_close(&fx);
}

#define RESERVED_OBJECTS                                                       \
  "SELECT count(*) FROM sqlite_schema WHERE name LIKE '\\_lipsync%'"           \
  " ESCAPE '\\'"

/* drop_capture of every table: nothing under the reserved prefix is left
 * (the metadata of a table since dropped included), the rows, UUIDs and
 * UUID index stay, and capture installed again has a new site id. Another
 * implementation's metadata is refused, and nothing changes. */
static void test_drop_all_capture(void) {
  sfx fx;
  uint8_t u[LIPSYNC_UUID_LEN], again[LIPSYNC_UUID_LEN];
  char *site = NULL, *site2 = NULL;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer); INSERT INTO t VALUES (1);"
                     " CREATE TABLE gone(a integer)") ||
      !prepare_commit(&fx, "t") || !prepare_commit(&fx, "gone") ||
      !uuid_of(&fx, 1, u))
    goto out;
  FX_EXEC(&fx, "DROP TABLE gone");
  site = TU_QUERY_TEXT(fx.db, "SELECT hex(site) FROM _lipsync_state");
  CU_ASSERT(TU_QUERY_INT(fx.db, RESERVED_OBJECTS, -1) > 0);

  /* Refused while another implementation's table is there. */
  FX_EXEC(&fx, "CREATE TABLE _lipsync_items(x)");
  long long objects = TU_QUERY_INT(fx.db, RESERVED_OBJECTS, -1);
  CU_ASSERT_EQUAL(lipsync_store_drop_capture(fx.store, NULL, 0, NULL, 0),
                  LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(lipsync_store_errmsg(fx.store), "_lipsync_items"));
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, RESERVED_OBJECTS, -1), objects);
  FX_EXEC(&fx, "DROP TABLE _lipsync_items");

  CU_ASSERT_EQUAL(lipsync_store_drop_capture(fx.store, NULL, 0, NULL, 0), 2);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, RESERVED_OBJECTS, -1), 0);
  CU_ASSERT(uuid_of(&fx, 1, again) && memcmp(u, again, sizeof u) == 0);
  CU_ASSERT(sq_unique_index(&fx, "t", "t__lipsync_uuid"));
  CU_ASSERT_EQUAL(lipsync_store_drop_capture(fx.store, NULL, 0, NULL, 0), 0);
  if (!prepare_commit(&fx, "t"))
    goto out;
  site2 = TU_QUERY_TEXT(fx.db, "SELECT hex(site) FROM _lipsync_state");
  CU_ASSERT(site && site2 && strcmp(site, site2) != 0);
  CU_ASSERT(uuid_of(&fx, 1, again) && memcmp(u, again, sizeof u) == 0);
  /* A store with a transaction open is refused. */
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(lipsync_store_drop_capture(fx.store, NULL, 0, NULL, 0),
                  LIPSYNC_ERR_INTERNAL);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  free(site);
  free(site2);
  sfx_close(&fx);
}

/* A row's UUID never changes, even while the store applies rows; setting
 * one from NULL is allowed. */
static void test_uuid_change_refused(void) {
  sfx fx;
  lipsync_table *t;
  sqlite3_stmt *st = NULL;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a)"))
    goto out;
  TU_EXEC(fx.db, "INSERT INTO t VALUES (1)");
  if (!prepare_commit(&fx, "t"))
    goto out;
  CU_ASSERT_EQUAL(sqlite3_prepare_v2(fx.db,
                                     "UPDATE t SET _lipsync_uuid ="
                                     " '00000000-0000-4000-8000-000000000000'",
                                     -1, &st, NULL),
                  SQLITE_OK);
  CU_ASSERT_EQUAL(sqlite3_step(st), SQLITE_CONSTRAINT);
  CU_ASSERT(contains(sqlite3_errmsg(fx.db),
                     "lipsync: the _lipsync_uuid of a row cannot change"));
  sqlite3_finalize(st);
  /* Unchanged, and an equal value is no change. */
  TU_EXEC(fx.db, "UPDATE t SET _lipsync_uuid = _lipsync_uuid");
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_NOT_EQUAL(sqlite3_exec(fx.db,
                                   "UPDATE t SET _lipsync_uuid ="
                                   " '00000000-0000-4000-8000-000000000000'",
                                   NULL, NULL, NULL),
                      SQLITE_OK);
  /* A row written while applying may lack a UUID: setting one is fine. */
  TU_EXEC(fx.db, "INSERT INTO t(a) VALUES (2);"
                 "UPDATE t SET _lipsync_uuid ="
                 " '00000000-0000-4000-8000-000000000002' WHERE a = 2");
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM t WHERE _lipsync_uuid ="
                               " '00000000-0000-4000-8000-000000000002'",
                               -1),
                  1);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* Rows changed while capture was off (triggers quiet): the recount gives
 * a row without an item the initial version capture would have given it,
 * and every other disagreeing item a fresh version. */
static void test_repair_items(void) {
  sfx fx;
  int64_t before, after;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(k TEXT PRIMARY KEY, a);"
                     "INSERT INTO t(k) VALUES ('r1'), ('r2'), ('r3'), ('x');"))
    goto out;
  if (!prepare_commit(&fx, "t"))
    goto out;
  TU_EXEC(fx.db, "DELETE FROM t WHERE k = 'x'"); /* a tombstone */
  TU_EXEC(fx.db, "CREATE TABLE saved AS SELECT _lipsync_uuid AS u FROM t"
                 " WHERE 0;"
                 "INSERT INTO saved SELECT uuid FROM _lipsync_meta_t WHERE"
                 " deleted");
  before = state_clock(fx.db);
  /* Capture off: write as if applying, without items. */
  TU_EXEC(fx.db, "BEGIN; UPDATE _lipsync_state SET applying = 1;"
                 "INSERT INTO t(k, _lipsync_uuid) VALUES"
                 " ('r4', '44444444-4444-4444-8444-444444444444');"
                 "INSERT INTO t(k) VALUES ('nouuid');"
                 "DELETE FROM t WHERE k = 'r1';"
                 "INSERT INTO t(k, _lipsync_uuid) SELECT 'x', u FROM saved;"
                 "UPDATE _lipsync_state SET applying = 0; COMMIT;");
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM _lipsync_meta_t", -1), 4);
  if (!prepare_commit(&fx, "t"))
    goto out;
  after = state_clock(fx.db);
  CU_ASSERT(after > before);
  /* r4 and the row without a UUID: new items; r1: a tombstone; x: live. */
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t m JOIN t"
                               " ON t._lipsync_uuid = m.uuid WHERE NOT"
                               " m.deleted",
                               -1),
                  5);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM _lipsync_meta_t", -1), 6);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t WHERE"
                               " deleted AND uuid NOT IN (SELECT"
                               " _lipsync_uuid FROM t)",
                               -1),
                  1);
  char *sql = sqlite3_mprintf("SELECT count(*) FROM _lipsync_meta_t WHERE"
                              " clock = %lld",
                              (long long)after);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, sql, -1), 2); /* r1, x */
  sqlite3_free(sql);
  /* r2 and r3 keep their initial versions; r4 and nouuid get theirs. */
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t"
                               " WHERE clock = 0",
                               -1),
                  4);
  /* Agreeing again: the next prepare changes nothing. */
  if (!prepare_commit(&fx, "t"))
    goto out;
  CU_ASSERT_EQUAL(state_clock(fx.db), after);
out:
  sfx_close(&fx);
}

/* A WITHOUT ROWID table is captured through its primary key. */
static void test_capture_without_rowid(void) {
  sfx fx;
  if (!SFX_OPEN(&fx, "CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
                     "INSERT INTO w VALUES ('a', 1);"))
    goto out;
  if (!prepare_commit(&fx, "w"))
    goto out;
  TU_EXEC(fx.db, "INSERT INTO w(k, v) VALUES ('b', 2)");
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM w JOIN _lipsync_meta_w m"
                               " ON m.uuid = w._lipsync_uuid WHERE k = 'b'"
                               " AND m.clock > 0",
                               -1),
                  1);
  TU_EXEC(fx.db, "UPDATE w SET v = 3 WHERE k = 'a'");
  TU_EXEC(fx.db, "DELETE FROM w WHERE k = 'b'");
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_w WHERE"
                               " clock > 0",
                               -1),
                  2);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_w WHERE"
                               " deleted",
                               -1),
                  1);
out:
  sfx_close(&fx);
}

/* The first sync into an empty table: items staged, then joined in UUID
 * order; a duplicate item is reported by flush. */
static void test_bulk_items(void) {
  enum { N = 5000 };
  sfx fx;
  lipsync_table *t;
  lipsync_value v = tu_int(1);
  uint8_t u[LIPSYNC_UUID_LEN];
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a INTEGER)"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  for (int i = 0; i < N; i++) {
    lipsync_uuid_generate(u);
    if (apply_row(fx.store, t, u, &v, 1, version_of((uint64_t)i + 1, 7),
                  i % 10 == 0, false) != 0) {
      CU_FAIL("insert");
      break;
    }
  }
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM _lipsync_meta_t", -1), N);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM t", -1),
                  N - N / 10);
  /* The triggers set aside during the load are back, and capture. */
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM sqlite_schema WHERE"
                               " type = 'trigger' AND tbl_name = 't'",
                               -1),
                  4);
  TU_EXEC(fx.db, "INSERT INTO t(a) VALUES (2)");
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t m JOIN t"
                               " ON t._lipsync_uuid = m.uuid WHERE t.a = 2"
                               " AND m.clock > 1000000",
                               -1),
                  1);

  /* Into an empty table again (every row deleted): an item that exists. */
  TU_EXEC(fx.db, "DELETE FROM t");
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  char *text = TU_QUERY_TEXT(fx.db, "SELECT uuid FROM _lipsync_meta_t LIMIT 1");
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  CU_ASSERT_EQUAL(lipsync_uuid_parse(text, strlen(text), u), 0);
  free(text);
  /* Refused at once, or by flush: before the session would vouch for the
   * table. */
  int rc = apply_row(fx.store, t, u, &v, 1, version_of(1, 1), 0, false);
  if (rc == 0)
    rc = store_flush(fx.store);
  CU_ASSERT_EQUAL(rc, LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "UNIQUE"));
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM t", -1), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM sqlite_schema WHERE"
                               " type = 'trigger' AND tbl_name = 't'",
                               -1),
                  4);
out:
  sfx_close(&fx);
}

/* A bulk load the session begins by scanning the (empty) items, as a
 * first sync does: the indexes stay set aside and the items staged (in a
 * TEMP table) through the load and a second scan, then a lookup builds the
 * indexes, the items join the metadata table, and update and the triggers
 * work on them. */
static void test_bulk_items_after_scan(void) {
  enum { N = 3000, M = 1000 };
  sfx fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_item item;
  lipsync_row row = {.nvalues = 0};
  uint8_t(*uuids)[LIPSYNC_UUID_LEN] = calloc(N + M, LIPSYNC_UUID_LEN);
  int n, live = 0;
  CU_ASSERT_PTR_NOT_NULL_FATAL(uuids);
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a INTEGER); CREATE INDEX t_a ON t(a)"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_scan_items(fx.store, t, &c), 0);
  CU_ASSERT_EQUAL(c ? store_next_item(fx.store, c, &item) : -1, 0);
  store_close_cursor(fx.store, c);
  for (int i = 0; i < N + M; i++) {
    lipsync_value v = tu_int(i);
    lipsync_uuid_generate(uuids[i]);
    live += i % 7 != 0;
    if (apply_row(fx.store, t, uuids[i], &v, 1, version_of((uint64_t)i + 1, 7),
                  i % 7 == 0, false) != 0) {
      CU_FAIL("insert");
      goto rollback;
    }
    if (i != N - 1)
      continue;
    /* Midway: nothing indexed, the items staged; a scan sees them all
     * and the load goes on. */
    CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                                 "SELECT count(*) FROM sqlite_schema WHERE"
                                 " type IN ('index', 'trigger') AND"
                                 " tbl_name = 't'",
                                 -1),
                    0);
    /* In random UUID order: the items that came in order went straight
     * in, the rest wait in the stage. */
    int64_t staged =
        TU_QUERY_INT(fx.db, "SELECT count(*) FROM temp._lipsync_stage_t", -1);
    int64_t direct =
        TU_QUERY_INT(fx.db, "SELECT count(*) FROM _lipsync_meta_t", -1);
    CU_ASSERT(direct >= 1 && direct < 50 && staged + direct == N);
    n = 0;
    CU_ASSERT_EQUAL(store_scan_items(fx.store, t, &c), 0);
    while (c && store_next_item(fx.store, c, &item) == 1)
      n++;
    store_close_cursor(fx.store, c);
    CU_ASSERT_EQUAL(n, N);
  }
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM sqlite_schema WHERE"
                               " type = 'index' AND tbl_name = 't'",
                               -1),
                  0);
  /* A lookup builds the indexes and writes the staged items. */
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuids[N + 1], &row), 0);
  CU_ASSERT(row.nvalues == 1 && row.values[0].u.integer == N + 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM sqlite_schema WHERE"
                               " type = 'index' AND tbl_name = 't'",
                               -1),
                  2);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM sqlite_schema WHERE"
                               " type = 'trigger' AND tbl_name = 't'",
                               -1),
                  4);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM temp.sqlite_schema"
                               " WHERE name LIKE '_lipsync_stage%'",
                               -1),
                  0);
  /* update() of a loaded row and of a tombstone. */
  {
    lipsync_value v = tu_int(-5);
    CU_ASSERT_EQUAL(apply_row(fx.store, t, uuids[1], &v, 1,
                              version_of(1u << 30, 9), 0, true),
                    0);
    CU_ASSERT_EQUAL(apply_row(fx.store, t, uuids[7], &v, 1,
                              version_of(1u << 30, 9), 0, true),
                    0);
  }
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  live++; /* the tombstone uuids[7] came back */
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM _lipsync_meta_t", -1), N + M);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM t", -1), live);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t m JOIN t"
                               " ON t._lipsync_uuid = m.uuid WHERE NOT"
                               " m.deleted",
                               -1),
                  live);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t WHERE"
                               " clock = 1073741824 AND deleted = 0",
                               -1),
                  2);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM t WHERE a = -5", -1), 2);
  /* The triggers capture local writes to the loaded rows. */
  TU_EXEC(fx.db, "UPDATE t SET a = 100000 WHERE a = 2;"
                 " DELETE FROM t WHERE a = 3");
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t WHERE"
                               " clock > 1073741824 AND deleted = 0 AND uuid"
                               " = (SELECT _lipsync_uuid FROM t WHERE"
                               " a = 100000)",
                               -1),
                  1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t WHERE"
                               " clock > 1073741824 AND deleted = 1",
                               -1),
                  1);
  goto out;
rollback:
  store_rollback(fx.store);
out:
  free(uuids);
  sfx_close(&fx);
}

int register_store_sqlite_tests(void) {
  static const tu_test tests[] = {
      {"SQLite's tables, views and virtual tables", test_sqlite_tables_refused},
      {"declared types", test_declared_types},
      {"UUID column in any case", test_uuid_column_any_case},
      {"virtual and stored generated columns", test_generated_column_skipped},
      {"temp table does not shadow", test_temp_table_does_not_shadow},
      {"list tables", test_list_tables},
      {"prepare refuses malformed UUIDs", test_prepare_refuses_malformed_uuids},
      {"malformed UUID without rowid", test_prepare_malformed_without_rowid},
      {"insert edge values", test_insert_edge_values},
      {"insert refusals", test_insert_refusals},
      {"affinity matches SQLite", test_affinity_matches_sqlite},
      {"INTEGER PRIMARY KEY", test_rowid_alias},
      {"STRICT table", test_strict_table},
      {"constraint violation", test_constraint_violation},
      {"foreign keys are checked before Verify", test_foreign_keys_deferred},
      {"a foreign key's parent index is kept",
       test_foreign_key_parent_index_kept},
      {"indexes of an empty table are built once", test_deferred_index},
      {"open sets WAL mode", test_open_sets_wal},
      {"open errors", test_open_errors},
      {"second writer waits", test_second_writer_waits},
      {"WITHOUT ROWID table", test_without_rowid_table},
      {"UTF-16 database", test_utf16_database},
      {"capture ticks the state's clock", test_capture_ticks_state_clock},
      {"applying and finishing keep the state", test_apply_and_finish_state},
      {"tick reads the state", test_tick_reads_state},
      {"update compares values", test_update_compares_values},
      {"capture triggers", test_capture_triggers},
      {"drop all capture", test_drop_all_capture},
      {"UUID change refused", test_uuid_change_refused},
      {"repair items", test_repair_items},
      {"capture WITHOUT ROWID", test_capture_without_rowid},
      {"bulk items", test_bulk_items},
      {"bulk items after a scan", test_bulk_items_after_scan},
      {NULL, NULL},
  };
  int rc =
      tu_add_suite_init("store/sqlite/shared", use_sqlite, store_common_tests);
  return rc != CUE_SUCCESS
             ? rc
             : tu_add_suite_init("store/sqlite/specific", use_sqlite, tests);
}
