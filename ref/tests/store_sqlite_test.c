/*
 * store_sqlite_test.c: the SQLite backend (store_sqlite.c) through its
 * methods table, as the session uses it, checked against what SQLite
 * itself stores.
 */
#include "store.h"
#include "test_util.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A store over a private in-memory database the test can also query. */
typedef struct fixture {
  sqlite3 *db;
  lipsync_store *store;
} fixture;

static bool fx_open(fixture *fx, const char *setup_sql) {
  fx->store = NULL;
  fx->db = TU_DB_OPEN(":memory:");
  if (!fx->db)
    return false;
  if (setup_sql && !TU_EXEC(fx->db, setup_sql))
    return false;
  CU_ASSERT_EQUAL(lipsync_store_sqlite_wrap(&fx->store, fx->db), 0);
  return fx->store != NULL;
}

static void fx_close(fixture *fx) {
  lipsync_store_free(fx->store);
  sqlite3_close(fx->db);
}

/* Begins, opens |name| and prepares it. NULL (failure recorded) if any
 * step fails. */
static lipsync_table *begin_prepared(fixture *fx, const char *name) {
  lipsync_table *t = NULL;
  int rc = store_begin(fx->store);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc == 0)
    rc = store_open_table(fx->store, name, &t);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc == 0)
    rc = store_prepare_table(fx->store, t);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc)
    fprintf(stderr, "\n  %s: %s\n", name, store_errmsg(fx->store));
  return rc == 0 ? t : NULL;
}

static int insert_row(fixture *fx, lipsync_table *t, const uint8_t *uuid,
                      const lipsync_value *values, size_t n) {
  lipsync_row row = {.nvalues = 0};
  memcpy(row.uuid, uuid, LIPSYNC_UUID_LEN);
  row.nvalues = n;
  row.values = values;
  return store_insert(fx->store, t, &row);
}

static bool contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

/* Records a failure at |line| unless |got| is |want|, naming both. */
static void check_value(const lipsync_value *got, const lipsync_value *want,
                        const char *what, int line) {
  char g[96], w[96], msg[300];
  if (tu_value_eq(got, want)) {
    CU_assertImplementation(CU_TRUE, (unsigned)line, what, __FILE__, "",
                            CU_FALSE);
    return;
  }
  tu_value_str(got, g, sizeof g);
  tu_value_str(want, w, sizeof w);
  snprintf(msg, sizeof msg, "%s: got %s, want %s", what, g, w);
  CU_assertImplementation(CU_FALSE, (unsigned)line, msg, __FILE__, "",
                          CU_FALSE);
}

/* A UUID whose every byte is |b|, so rows are easy to order. */
static void uuid_fill(uint8_t uuid[LIPSYNC_UUID_LEN], uint8_t b) {
  memset(uuid, b, LIPSYNC_UUID_LEN);
}

static size_t count_rows(fixture *fx, lipsync_table *t, const uint8_t *lower,
                         const uint8_t *upper) {
  lipsync_cursor *c = NULL;
  lipsync_row row = {.nvalues = 0};
  size_t n = 0;
  int rc = store_scan(fx->store, t, lower, upper, &c);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc)
    return 0;
  while ((rc = store_next(fx->store, c, &row)) == 1)
    n++;
  CU_ASSERT_EQUAL(rc, 0);
  store_close_cursor(fx->store, c);
  return n;
}

/* ------------------------------------------------------------------ */
/* Tables and columns                                                   */
/* ------------------------------------------------------------------ */

static void test_open_unknown_table(void) {
  fixture fx;
  lipsync_table *t = NULL;
  if (!fx_open(&fx, "CREATE TABLE cities(name TEXT);"
                    "CREATE VIEW big AS SELECT * FROM cities;"
                    "CREATE TABLE seq(id INTEGER PRIMARY KEY AUTOINCREMENT);"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "nope", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_PTR_NULL(t);
  CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store), "no table nope");
  /* Views are not tables; names match exactly, case included. */
  CU_ASSERT_EQUAL(store_open_table(fx.store, "big", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store), "no table big");
  CU_ASSERT_EQUAL(store_open_table(fx.store, "Cities", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
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
  fx_close(&fx);
}

static void test_describe_columns(void) {
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
  fixture fx;
  lipsync_table *t = NULL, *again = NULL;
  if (!fx_open(&fx, "CREATE TABLE types(c_integer INTEGER, c_int int,"
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
  CU_ASSERT_STRING_EQUAL(t->name, "types");
  CU_ASSERT_EQUAL(t->ncolumns, nwant);
  for (size_t i = 0; i < nwant && i < t->ncolumns; i++) {
    CU_ASSERT_STRING_EQUAL(t->columns[i].name, want[i].name);
    CU_ASSERT_STRING_EQUAL(t->columns[i].type, want[i].type);
  }
  /* A second open in the same transaction is the same handle. */
  CU_ASSERT_EQUAL(store_open_table(fx.store, "types", &again), 0);
  CU_ASSERT_PTR_EQUAL(again, t);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  /* Once the UUID column exists it is still not a column of the table. */
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "types", &t), 0);
  CU_ASSERT_EQUAL(t->ncolumns, nwant);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_uuid_column_any_case(void) {
  fixture fx;
  lipsync_table *t;
  /* SQLite column names ignore ASCII case: this is the UUID column. */
  if (!fx_open(&fx, "CREATE TABLE t(a, \"_LipSync_UUID\" TEXT);"
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
  fx_close(&fx);
}

/* Generated columns are not synced: each side computes its own, and the
 * rows read and written leave them out. */
static void test_generated_column_skipped(void) {
  fixture fx;
  lipsync_table *t = NULL;
  lipsync_row row = {.nvalues = 0};
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(21);
  if (!fx_open(&fx, "CREATE TABLE g(a INTEGER, twice INTEGER AS (a * 2),"
                    " stored INTEGER AS (a + 1) STORED)"))
    goto out;
  t = begin_prepared(&fx, "g");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL_FATAL(t->ncolumns, 1);
  CU_ASSERT_STRING_EQUAL(t->columns[0].name, "a");
  uuid_fill(uuid, 9);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, &v, 1), 0);
  CU_ASSERT_EQUAL(fx.store->methods->fetch(fx.store, t, uuid, &row), 0);
  CU_ASSERT_EQUAL(row.nvalues, 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT twice + stored FROM g", -1), 64);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_quoted_names(void) {
  static const char *const want[] = {"Col \"x\"", "Zeta", "alpha", "two words",
                                     "ñame"};
  const char *name = "we\"ird Tåble";
  fixture fx;
  lipsync_table *t;
  lipsync_row row = {.nvalues = 0};
  lipsync_cursor *c = NULL;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[5];
  const char *const *names;
  size_t count;

  if (!fx_open(&fx, "CREATE TABLE \"we\"\"ird Tåble\"(\"Col \"\"x\"\"\" "
                    "INTEGER, \"ñame\" TEXT, \"Zeta\", \"alpha\" REAL,"
                    " \"two words\" BLOB);"
                    "INSERT INTO \"we\"\"ird Tåble\" VALUES"
                    " (1, 'one', 'z', 1.5, x'01');"))
    goto out;
  t = begin_prepared(&fx, name);
  if (!t)
    goto out;
  CU_ASSERT_STRING_EQUAL(t->name, name);
  CU_ASSERT_EQUAL(t->ncolumns, 5);
  for (size_t i = 0; i < 5 && i < t->ncolumns; i++)
    CU_ASSERT_STRING_EQUAL(t->columns[i].name, want[i]);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM pragma_index_list("
                               "'we\"ird Tåble') WHERE \"unique\"",
                               -1),
                  1);

  uuid_fill(uuid, 0x42);
  v[0] = tu_int(2);
  v[1] = tu_text("zz");
  v[2] = tu_real(2.5);
  v[3] = tu_blob("\x02", 1);
  v[4] = tu_text("two");
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 5), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  for (size_t i = 0; i < 5 && row.nvalues == 5; i++)
    check_value(&row.values[i], &v[i], "quoted column", __LINE__);
  CU_ASSERT_EQUAL(count_rows(&fx, t, NULL, NULL), 2);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, uuid, NULL, &c), 0);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &row), 1);
  CU_ASSERT_EQUAL(memcmp(row.uuid, uuid, LIPSYNC_UUID_LEN), 0);
  store_close_cursor(fx.store, c);

  CU_ASSERT_EQUAL(store_list_tables(fx.store, &names, &count), 0);
  CU_ASSERT_EQUAL(count, 1);
  if (count == 1)
    CU_ASSERT_STRING_EQUAL(names[0], name);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_temp_table_does_not_shadow(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(7);
  if (!fx_open(&fx, "CREATE TABLE t(a INTEGER);"
                    "CREATE TEMP TABLE t(b TEXT, c TEXT);"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, 1);
  if (t->ncolumns == 1)
    CU_ASSERT_STRING_EQUAL(t->columns[0].name, "a");
  uuid_fill(uuid, 1);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, &v, 1), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM main.t", -1), 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM pragma_table_xinfo('t',"
                               " 'temp') WHERE name = '_lipsync_uuid'",
                               -1),
                  0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_list_tables(void) {
  static const char *const want[] = {"Zed", "a", "auto", "b", "ä"};
  fixture fx;
  const char *const *names = NULL;
  size_t count = 0;
  if (!fx_open(&fx, "CREATE TABLE b(x); CREATE TABLE \"Zed\"(x);"
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
  fx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* prepare_table                                                        */
/* ------------------------------------------------------------------ */

static void test_prepare_adds_uuids_and_rollback_undoes(void) {
  fixture fx;
  lipsync_table *t;
  sqlite3_stmt *st = NULL;
  int seen = 0, good = 0;
  if (!fx_open(&fx,
               "CREATE TABLE cities(name TEXT, pop INTEGER);"
               "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
               "FROM n WHERE i < 100) INSERT INTO cities SELECT 'c' || i, i "
               "FROM n;"))
    goto out;
  t = begin_prepared(&fx, "cities");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, 2);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM pragma_table_xinfo("
                               "'cities') WHERE name = '_lipsync_uuid'",
                               -1),
                  1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM pragma_index_list("
                               "'cities') WHERE \"unique\" AND name = "
                               "'cities__lipsync_uuid'",
                               -1),
                  1);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(DISTINCT _lipsync_uuid) FROM cities",
                   -1),
      100);
  /* Every UUID is a valid random (version 4, RFC 9562 variant) one. */
  if (sqlite3_prepare_v2(fx.db, "SELECT _lipsync_uuid FROM cities", -1, &st,
                         NULL) == SQLITE_OK) {
    while (sqlite3_step(st) == SQLITE_ROW) {
      uint8_t u[LIPSYNC_UUID_LEN];
      const char *text = (const char *)sqlite3_column_text(st, 0);
      seen++;
      if (text && lipsync_uuid_parse(text, strlen(text), u) == 0 &&
          (u[6] >> 4) == 4 && (u[8] & 0xC0) == 0x80)
        good++;
    }
  }
  sqlite3_finalize(st);
  CU_ASSERT_EQUAL(seen, 100);
  CU_ASSERT_EQUAL(good, 100);
  CU_ASSERT_EQUAL(count_rows(&fx, t, NULL, NULL), 100);

  /* Preparing again changes nothing. */
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM pragma_index_list("
                               "'cities')",
                               -1),
                  1);

  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM pragma_table_xinfo("
                               "'cities') WHERE name = '_lipsync_uuid'",
                               -1),
                  0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM pragma_index_list("
                               "'cities')",
                               -1),
                  0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM cities", -1), 100);
out:
  fx_close(&fx);
}

static void test_prepare_keeps_uuids_and_existing_index(void) {
  fixture fx;
  lipsync_table *t;
  char *kept;
  if (!fx_open(&fx, "CREATE TABLE p(a, _lipsync_uuid TEXT);"
                    "CREATE UNIQUE INDEX my_uuid_index ON p(_lipsync_uuid);"
                    "INSERT INTO p VALUES"
                    " (1, '00000000-0000-4000-8000-000000000001'),"
                    " (2, NULL), (3, NULL);"))
    goto out;
  t = begin_prepared(&fx, "p");
  if (!t)
    goto out;
  kept = TU_QUERY_TEXT(fx.db, "SELECT _lipsync_uuid FROM p WHERE a = 1");
  CU_ASSERT(kept && strcmp(kept, "00000000-0000-4000-8000-000000000001") == 0);
  free(kept);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(DISTINCT _lipsync_uuid) FROM p", -1),
      3);
  /* The caller's unique index serves: no second one. */
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM pragma_index_list('p')", -1),
      1);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

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
    fixture fx;
    lipsync_table *t = NULL;
    char sql[512];
    snprintf(sql, sizeof sql,
             "CREATE TABLE m(a, _lipsync_uuid);" /* no affinity */
             "INSERT INTO m VALUES (1, '00000000-0000-4000-8000-000000000001');"
             "INSERT INTO m VALUES (2, %s);",
             cases[i].value);
    if (fx_open(&fx, sql)) {
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
    fx_close(&fx);
  }
}

static void test_prepare_malformed_without_rowid(void) {
  fixture fx;
  lipsync_table *t = NULL;
  /* No rowid to point at: the message still names the value. */
  if (fx_open(&fx, "CREATE TABLE w(k TEXT PRIMARY KEY, _lipsync_uuid TEXT)"
                   " WITHOUT ROWID; INSERT INTO w VALUES ('a', 'ABC');")) {
    CU_ASSERT_EQUAL(store_begin(fx.store), 0);
    CU_ASSERT_EQUAL(store_open_table(fx.store, "w", &t), 0);
    CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), LIPSYNC_ERR_STORAGE);
    CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store),
                           "table w: a row has a malformed _lipsync_uuid "
                           "'ABC'");
  }
  fx_close(&fx);
  /* A column called rowid hides the rowid, not the row number. */
  if (fx_open(&fx, "CREATE TABLE r(rowid TEXT, _lipsync_uuid TEXT);"
                   "INSERT INTO r VALUES ('x', NULL), ('y', 'bad');")) {
    CU_ASSERT_EQUAL(store_begin(fx.store), 0);
    CU_ASSERT_EQUAL(store_open_table(fx.store, "r", &t), 0);
    CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), LIPSYNC_ERR_STORAGE);
    CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store),
                           "table r: row 2 has a malformed _lipsync_uuid "
                           "'bad'");
  }
  fx_close(&fx);
}

static void test_prepare_refuses_duplicate_uuids(void) {
  fixture fx;
  lipsync_table *t = NULL;
  if (!fx_open(&fx, "CREATE TABLE d(a, _lipsync_uuid TEXT);"
                    "INSERT INTO d VALUES"
                    " (1, '00000000-0000-4000-8000-000000000001'),"
                    " (2, '00000000-0000-4000-8000-000000000002'),"
                    " (3, '00000000-0000-4000-8000-000000000001');"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "d", &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_STRING_EQUAL(
      store_errmsg(fx.store),
      "table d: duplicate _lipsync_uuid values "
      "('00000000-0000-4000-8000-000000000001' appears 2 times)");
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* scan and fetch                                                       */
/* ------------------------------------------------------------------ */

#define NSCAN 18
/* Row k has UUID scan_uuid(k): 00.., 10.., 20.., ..., f0.., then ff..ff,
 * and 00..00 + 1. */
static void scan_uuid(int k, uint8_t out[LIPSYNC_UUID_LEN]) {
  if (k < 16) {
    uuid_fill(out, (uint8_t)(k * 16));
  } else if (k == 16) {
    uuid_fill(out, 0xFF);
  } else {
    uuid_fill(out, 0);
    out[LIPSYNC_UUID_LEN - 1] = 1;
  }
}

static lipsync_table *scan_fixture(fixture *fx) {
  lipsync_table *t;
  if (!fx_open(fx, "CREATE TABLE s(k INTEGER, label TEXT)"))
    return NULL;
  t = begin_prepared(fx, "s");
  for (int k = 0; t && k < NSCAN; k++) {
    uint8_t uuid[LIPSYNC_UUID_LEN];
    char label[16];
    lipsync_value v[2];
    snprintf(label, sizeof label, "row%d", k);
    scan_uuid(k, uuid);
    v[0] = tu_int(k);
    v[1] = tu_text(label);
    CU_ASSERT_EQUAL(insert_row(fx, t, uuid, v, 2), 0);
  }
  return t;
}

/* Scans [lower, upper) and checks it returns exactly the rows in it. */
static void check_range(fixture *fx, lipsync_table *t, const uint8_t *lower,
                        const uint8_t *upper, int line) {
  bool seen[NSCAN] = {false};
  lipsync_cursor *c = NULL;
  lipsync_row row = {.nvalues = 0};
  int rc, wrong = 0;
  if (store_scan(fx->store, t, lower, upper, &c) != 0) {
    CU_assertImplementation(CU_FALSE, (unsigned)line, "scan", __FILE__, "",
                            CU_FALSE);
    return;
  }
  while ((rc = store_next(fx->store, c, &row)) == 1) {
    int k = row.nvalues == 2 && row.values[0].type == LIPSYNC_INTEGER
                ? (int)row.values[0].u.integer
                : -1;
    uint8_t want[LIPSYNC_UUID_LEN];
    if (k < 0 || k >= NSCAN || seen[k]) {
      wrong++;
      continue;
    }
    seen[k] = true;
    scan_uuid(k, want);
    if (memcmp(want, row.uuid, LIPSYNC_UUID_LEN) != 0)
      wrong++;
  }
  store_close_cursor(fx->store, c);
  for (int k = 0; k < NSCAN; k++) {
    uint8_t u[LIPSYNC_UUID_LEN];
    scan_uuid(k, u);
    bool in = (!lower || memcmp(u, lower, LIPSYNC_UUID_LEN) >= 0) &&
              (!upper || memcmp(u, upper, LIPSYNC_UUID_LEN) < 0);
    if (in != seen[k])
      wrong++;
  }
  CU_assertImplementation(rc == 0 && wrong == 0, (unsigned)line,
                          "range returns exactly its rows", __FILE__, "",
                          CU_FALSE);
}

static void test_scan_ranges(void) {
  fixture fx;
  lipsync_table *t = scan_fixture(&fx);
  uint8_t zero[LIPSYNC_UUID_LEN], ones[LIPSYNC_UUID_LEN], r3[LIPSYNC_UUID_LEN],
      r7[LIPSYNC_UUID_LEN], mid[LIPSYNC_UUID_LEN];
  if (!t)
    goto out;
  uuid_fill(zero, 0);
  uuid_fill(ones, 0xFF);
  scan_uuid(3, r3);
  scan_uuid(7, r7);
  uuid_fill(mid, 0x35);
  check_range(&fx, t, NULL, NULL, __LINE__);
  check_range(&fx, t, r3, NULL, __LINE__);
  check_range(&fx, t, NULL, r3, __LINE__);
  check_range(&fx, t, r3, r7, __LINE__); /* lower in, upper out */
  check_range(&fx, t, mid, r7, __LINE__);
  check_range(&fx, t, zero, NULL, __LINE__);
  check_range(&fx, t, NULL, zero, __LINE__); /* empty */
  check_range(&fx, t, zero, ones, __LINE__); /* all but ff..ff */
  check_range(&fx, t, ones, NULL, __LINE__);
  check_range(&fx, t, r7, r7, __LINE__); /* empty */
  CU_ASSERT_EQUAL(count_rows(&fx, t, NULL, NULL), NSCAN);
  CU_ASSERT_EQUAL(count_rows(&fx, t, r3, r7), 4);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_scan_cursors_interleave(void) {
  fixture fx;
  lipsync_table *t = scan_fixture(&fx);
  lipsync_cursor *a = NULL, *b = NULL, *c = NULL;
  lipsync_row ra, rb;
  uint8_t r8[LIPSYNC_UUID_LEN];
  int na = 0, nb = 0, rca = 1, rcb = 1;
  if (!t)
    goto out;
  scan_uuid(8, r8);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &a), 0);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, r8, NULL, &b), 0);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (a && b && (rca == 1 || rcb == 1)) {
    if (rca == 1 && (rca = store_next(fx.store, a, &ra)) == 1)
      na++;
    if (rcb == 1 && (rcb = store_next(fx.store, b, &rb)) == 1)
      nb++;
    /* Each cursor's row stays valid while the other one moves. */
    if (rca == 1 && rcb == 1)
      CU_ASSERT(ra.nvalues == 2 && rb.nvalues == 2 &&
                ra.values[1].type == LIPSYNC_TEXT &&
                memcmp(ra.values[1].u.bytes.data, "row", 3) == 0);
  }
  CU_ASSERT_EQUAL(rca, 0);
  CU_ASSERT_EQUAL(rcb, 0);
  CU_ASSERT_EQUAL(na, NSCAN);
  CU_ASSERT_EQUAL(nb, 9); /* 80.., 90.., ..., f0.., ff..ff */
  /* The end is sticky: no restart. */
  CU_ASSERT_EQUAL(store_next(fx.store, a, &ra), 0);
  store_close_cursor(fx.store, a);
  store_close_cursor(fx.store, b);
  store_close_cursor(fx.store, NULL);
  /* Cursor |c| is left open: commit frees it. Cached statements serve the
   * next scans. */
  CU_ASSERT_EQUAL(count_rows(&fx, t, r8, NULL), 9);
  CU_ASSERT_EQUAL(count_rows(&fx, t, NULL, NULL), NSCAN);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_fetch(void) {
  fixture fx;
  lipsync_table *t = scan_fixture(&fx);
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_row row = {.nvalues = 0};
  if (!t)
    goto out;
  scan_uuid(5, uuid);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  CU_ASSERT_EQUAL(memcmp(row.uuid, uuid, LIPSYNC_UUID_LEN), 0);
  CU_ASSERT_EQUAL(row.nvalues, 2);
  if (row.nvalues == 2) {
    lipsync_value k = tu_int(5), label = tu_text("row5");
    check_value(&row.values[0], &k, "k", __LINE__);
    check_value(&row.values[1], &label, "label", __LINE__);
  }
  uuid_fill(uuid, 0x77);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), LIPSYNC_ERR_NOT_FOUND);
  CU_ASSERT(contains(store_errmsg(fx.store),
                     "table s: no row 77777777-7777-7777-7777-777777777777"));
  scan_uuid(16, uuid);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  CU_ASSERT(row.nvalues == 2 && row.values[0].u.integer == 16);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
}

/* The core may read one table while it prepares the next. */
static void test_prepare_while_reading_another_table(void) {
  fixture fx;
  lipsync_table *a, *b = NULL;
  lipsync_cursor *c = NULL;
  lipsync_row fetched, scanned;
  uint8_t uuid[LIPSYNC_UUID_LEN], other[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_text("first");
  if (!fx_open(&fx, "CREATE TABLE a(x TEXT); CREATE TABLE b(y);"
                    "INSERT INTO b VALUES (1), (2);"))
    goto out;
  a = begin_prepared(&fx, "a");
  if (!a)
    goto out;
  uuid_fill(uuid, 7);
  uuid_fill(other, 8);
  CU_ASSERT_EQUAL(insert_row(&fx, a, uuid, &v, 1), 0);
  CU_ASSERT_EQUAL(insert_row(&fx, a, other, &v, 1), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, a, uuid, &fetched), 0);
  CU_ASSERT_EQUAL(store_scan(fx.store, a, NULL, NULL, &c), 0);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &scanned), 1);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "b", &b), 0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, b), 0);
  if (b)
    CU_ASSERT_EQUAL(count_rows(&fx, b, NULL, NULL), 2);
  if (fetched.nvalues == 1)
    check_value(&fetched.values[0], &v, "fetched row still valid", __LINE__);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &scanned), 1);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &scanned), 0);
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_scan_before_prepare_fails_cleanly(void) {
  fixture fx;
  lipsync_table *t = NULL;
  lipsync_cursor *c = NULL;
  lipsync_row row = {.nvalues = 0};
  uint8_t uuid[LIPSYNC_UUID_LEN];
  if (!fx_open(&fx, "CREATE TABLE n(a)"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "n", &t), 0);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT(contains(store_errmsg(fx.store), "table n: "));
  CU_ASSERT(contains(store_errmsg(fx.store), "no such"));
  uuid_fill(uuid, 1);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  /* Rows are read with their items: a table with a UUID column but no
   * change capture yet has none to read. */
  if (TU_EXEC(fx.db, "CREATE TABLE u(a, _lipsync_uuid);"
                     "INSERT INTO u VALUES (1, 'nope');")) {
    CU_ASSERT_EQUAL(store_begin(fx.store), 0);
    CU_ASSERT_EQUAL(store_open_table(fx.store, "u", &t), 0);
    CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c),
                    LIPSYNC_ERR_STORAGE);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT(contains(store_errmsg(fx.store), "no such table"));
    CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  }
out:
  fx_close(&fx);
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
  fixture fx;
  lipsync_table *t = NULL;
  lipsync_value rows[NROWS][NCOLS];
  uint8_t uuids[NROWS][LIPSYNC_UUID_LEN];
  lipsync_cursor *c = NULL;
  lipsync_row row = {.nvalues = 0};
  int rc, scanned = 0;

  if (!big || !fx_open(&fx, "CREATE TABLE e(i INTEGER, r REAL, x TEXT,"
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
    rc = insert_row(&fx, t, uuids[r], rows[r], NCOLS);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc)
      fprintf(stderr, "\n  row %d: %s\n", r, store_errmsg(fx.store));
  }
  for (int r = 0; r < NROWS; r++) {
    CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuids[r], &row), 0);
    for (int i = 0; i < NCOLS && row.nvalues == NCOLS; i++)
      check_value(&row.values[i], &rows[r][i], "fetched", __LINE__);
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
      check_value(&row.values[i], &rows[r][i], "scanned", __LINE__);
  }
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(scanned, NROWS);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
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
  fixture fx;
  lipsync_table *t;
  if (!fx_open(&fx, "CREATE TABLE f(i INTEGER, r REAL, n NUMERIC, x TEXT, u)"))
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
    CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 5), LIPSYNC_ERR_INVALID_VALUE);
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
    CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 5), 0);
  }
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
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
    fixture fx;
    lipsync_table *t;
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE TABLE o(c %s)%s", decl,
             strict ? " STRICT" : "");
    if (!fx_open(&fx, sql)) {
      fx_close(&fx);
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
      int rc = insert_row(&fx, t, uuid, v, 1);
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
          check_value(&row.values[0], v, what, __LINE__);
      } else {
        CU_ASSERT_EQUAL(rc, LIPSYNC_ERR_INVALID_VALUE);
      }
      checked++;
    }
    fx_close(&fx);
  }
  CU_ASSERT(checked >= (int)(nv * ndecl));
  sqlite3_close(oracle);
}

static void test_rowid_alias(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2];
  if (!fx_open(&fx, "CREATE TABLE r(id INTEGER PRIMARY KEY, v);"
                    "CREATE TABLE d(id INTEGER PRIMARY KEY DESC, v);"))
    goto out;
  t = begin_prepared(&fx, "r");
  if (!t)
    goto out;
  uuid_fill(uuid, 1);
  v[0] = tu_null();
  v[1] = tu_int(1);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), LIPSYNC_ERR_INVALID_VALUE);
  CU_ASSERT(contains(store_errmsg(fx.store), "new rowid"));
  v[0] = tu_text("abc");
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), LIPSYNC_ERR_INVALID_VALUE);
  CU_ASSERT(contains(store_errmsg(fx.store), "holds only integers"));
  v[0] = tu_int(-5);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), 0);
  /* "INTEGER PRIMARY KEY DESC" is an ordinary column (an SQLite quirk):
   * NULL stays NULL there. */
  CU_ASSERT_EQUAL(store_open_table(fx.store, "d", &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), 0);
  v[0] = tu_null();
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM d WHERE id IS NULL", -1), 1);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_strict_table(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2];
  lipsync_row row = {.nvalues = 0};
  if (sqlite3_libversion_number() < 3037000)
    return; /* no STRICT tables */
  if (!fx_open(&fx, "CREATE TABLE s(a ANY, i INT) STRICT"))
    goto out;
  t = begin_prepared(&fx, "s");
  if (!t)
    goto out;
  CU_ASSERT_STRING_EQUAL(t->columns[0].type, "numeric");
  /* ANY keeps every value as given, though its canonical type is numeric. */
  uuid_fill(uuid, 1);
  v[0] = tu_real(-0.0);
  v[1] = tu_int(1);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  if (row.nvalues == 2)
    check_value(&row.values[0], &v[0], "ANY keeps -0.0", __LINE__);
  /* STRICT refuses what affinity would have kept: still an invalid value. */
  uuid_fill(uuid, 2);
  v[0] = tu_text("12");
  v[1] = tu_real(3.5);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), LIPSYNC_ERR_INVALID_VALUE);
  CU_ASSERT(contains(store_errmsg(fx.store), "table s: row "));
  CU_ASSERT(contains(store_errmsg(fx.store), "cannot store REAL value"));
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_constraint_violation(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2];
  /* Not empty, so the UUID index exists from prepare_table on. */
  if (!fx_open(&fx, "CREATE TABLE c(id INTEGER UNIQUE, name TEXT NOT NULL);"
                    "INSERT INTO c VALUES (0, 'zero')"))
    goto out;
  t = begin_prepared(&fx, "c");
  if (!t)
    goto out;
  v[0] = tu_int(1);
  v[1] = tu_text("one");
  uuid_fill(uuid, 1);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), 0);
  uuid_fill(uuid, 2);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store),
                         "table c: row 02020202-0202-0202-0202-020202020202: "
                         "UNIQUE constraint failed: c.id");
  v[0] = tu_int(2);
  v[1] = tu_null();
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "NOT NULL constraint failed"));
  /* The same UUID twice: a row the items do not know of (a change that
   * escaped capture), which the next sync recounts. */
  v[1] = tu_text("two");
  uuid_fill(uuid, 1);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), LIPSYNC_ERR_VERIFY_FAILED);
  CU_ASSERT(contains(store_errmsg(fx.store), "without its item"));
  /* The transaction goes on. */
  uuid_fill(uuid, 2);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM c", -1), 3);
  /* A row of the wrong width is the caller's bug. */
  CU_ASSERT_EQUAL(fx.store->methods->insert(
                      fx.store, t, &(lipsync_row){.nvalues = 1, .values = v}),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

/* An empty table's indexes are set aside at its first insert and built
 * once, when a lookup first needs them or at commit; their constraints
 * still hold, and a rollback brings them back. */
static void test_deferred_index(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[1] = {{0}};
  lipsync_row row = {.nvalues = 0};
  const char *count_index = "SELECT count(*) FROM sqlite_schema WHERE "
                            "type = 'index' AND tbl_name = 'd'";
  if (!fx_open(&fx, "CREATE TABLE d(x INTEGER);"
                    "CREATE UNIQUE INDEX d_x ON d(x);"))
    goto out;
  t = begin_prepared(&fx, "d");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, count_index, -1), 2);
  for (int i = 1; i <= 3; i++) {
    v[0] = tu_int(i);
    uuid_fill(uuid, (uint8_t)i);
    CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 1), 0);
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
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 1), 0);
  v[0] = tu_int(8);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 1), 0);
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
    CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 1), 0);
  }
  CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "UNIQUE constraint failed"));
  store_rollback(fx.store);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, count_index, -1), 2);
out:
  fx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Transactions                                                         */
/* ------------------------------------------------------------------ */

static void test_rollback_undoes_inserts(void) {
  fixture fx;
  lipsync_table *t;
  if (!fx_open(&fx, "CREATE TABLE t(a INTEGER); INSERT INTO t VALUES (1);"))
    goto out;
  /* Rollback with nothing open is harmless, commit is not. */
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_INTERNAL);
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), LIPSYNC_ERR_INTERNAL);
  for (int i = 0; i < 10; i++) {
    uint8_t uuid[LIPSYNC_UUID_LEN];
    lipsync_value v = tu_int(i + 100);
    uuid_fill(uuid, (uint8_t)(i + 1));
    CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, &v, 1), 0);
  }
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM t", -1), 11);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM t", -1), 1);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM pragma_table_xinfo('t')", -1),
      1);
out:
  fx_close(&fx);
}

static void test_begin_inside_callers_transaction(void) {
  fixture fx;
  if (!fx_open(&fx, "CREATE TABLE t(a); BEGIN; INSERT INTO t VALUES (1);"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "begin: "));
  /* The failed begin's rollback leaves the caller's transaction alone. */
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(sqlite3_get_autocommit(fx.db), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM t", -1), 1);
  TU_EXEC(fx.db, "ROLLBACK");
out:
  fx_close(&fx);
}

static void test_commit_persists(void) {
  char dir[256], path[512], errbuf[256] = "";
  lipsync_store *store = NULL;
  lipsync_table *t = NULL;
  sqlite3 *db;
  char *mode;
  lipsync_value v[2] = {tu_real(-2.5), tu_text("kept")}; /* a, b */
  uint8_t uuid[LIPSYNC_UUID_LEN];

  if (!tu_tmpdir(dir, sizeof dir))
    return;
  tu_path(path, sizeof path, dir, "commit.db");
  db = TU_DB_OPEN(path);
  if (!db)
    goto out;
  TU_EXEC(db, "CREATE TABLE t(b TEXT, a REAL)");
  sqlite3_close(db);

  CU_ASSERT_EQUAL(
      lipsync_store_sqlite_open(&store, path, errbuf, sizeof errbuf), 0);
  if (!store)
    goto out;
  CU_ASSERT_STRING_EQUAL(store->methods->name, "sqlite");
  CU_ASSERT_EQUAL(store_begin(store), 0);
  CU_ASSERT_EQUAL(store_open_table(store, "t", &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(store, t), 0);
  TU_UUID("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0", uuid);
  {
    lipsync_row row = {.nvalues = 2, .values = v};
    memcpy(row.uuid, uuid, LIPSYNC_UUID_LEN);
    CU_ASSERT_EQUAL(store_insert(store, t, &row), 0);
  }
  CU_ASSERT_EQUAL(store_commit(store), 0);
  lipsync_store_free(store);

  db = TU_DB_OPEN(path);
  if (!db)
    goto out;
  mode = TU_QUERY_TEXT(db, "PRAGMA journal_mode");
  CU_ASSERT(mode && strcmp(mode, "wal") == 0);
  free(mode);
  CU_ASSERT_EQUAL(TU_QUERY_INT(db,
                               "SELECT count(*) FROM t WHERE b = 'kept' AND "
                               "a = -2.5 AND _lipsync_uuid = "
                               "'0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0'",
                               -1),
                  1);
  sqlite3_close(db);
out:
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

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

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
  fixture fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_text("k9"), tu_real(0.5)};
  lipsync_row row = {.nvalues = 0};
  if (!fx_open(&fx, "CREATE TABLE w(k TEXT PRIMARY KEY, v REAL) WITHOUT ROWID;"
                    "INSERT INTO w VALUES ('k1', 1.5), ('k2', NULL);"))
    goto out;
  t = begin_prepared(&fx, "w");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(count_rows(&fx, t, NULL, NULL), 2);
  uuid_fill(uuid, 0xFF); /* above every random (version 4) UUID */
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  if (row.nvalues == 2)
    check_value(&row.values[0], &v[0], "key", __LINE__);
  CU_ASSERT_EQUAL(count_rows(&fx, t, uuid, NULL), 1);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_utf16_database(void) {
  static const char text[] = "nul\0inside \xf0\x9f\x98\x80 \xc3\xa9";
  fixture fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_textn(text, sizeof text - 1), tu_text("")};
  lipsync_row row = {.nvalues = 0};
  /* Text is stored as UTF-16 and comes back as the same UTF-8. */
  if (!fx_open(&fx, "PRAGMA encoding = 'UTF-16le'; CREATE TABLE x(a TEXT, b)"))
    goto out;
  t = begin_prepared(&fx, "x");
  if (!t)
    goto out;
  uuid_fill(uuid, 3);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  for (int i = 0; i < 2 && row.nvalues == 2; i++)
    check_value(&row.values[i], &v[i], "UTF-16 text", __LINE__);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_many_rows(void) {
  enum { N = 20000 };
  fixture fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_row row = {.nvalues = 0};
  int64_t sum = 0;
  size_t n = 0, in_ranges = 0;
  if (!fx_open(&fx, "CREATE TABLE big(v INTEGER, name TEXT)"))
    goto out;
  t = begin_prepared(&fx, "big");
  if (!t)
    goto out;
  for (int i = 0; i < N; i++) {
    uint8_t uuid[LIPSYNC_UUID_LEN];
    char name[32];
    lipsync_value v[2];
    snprintf(name, sizeof name, "name %d", i);
    v[0] = tu_text(name);
    v[1] = tu_int(i);
    lipsync_uuid_generate(uuid);
    if (insert_row(&fx, t, uuid, v, 2) != 0) {
      fprintf(stderr, "\n  %s\n", store_errmsg(fx.store));
      CU_FAIL("insert");
      break;
    }
  }
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (c && store_next(fx.store, c, &row) == 1) {
    sum += row.values[1].u.integer;
    n++;
  }
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(n, N);
  CU_ASSERT_EQUAL(sum, (int64_t)N * (N - 1) / 2);
  /* Sixteen ranges partition the space. */
  for (int k = 0; k < 16; k++) {
    uint8_t lo[LIPSYNC_UUID_LEN], hi[LIPSYNC_UUID_LEN];
    memset(lo, 0, sizeof lo);
    memset(hi, 0, sizeof hi);
    lo[0] = (uint8_t)(k * 16);
    hi[0] = (uint8_t)((k + 1) * 16);
    in_ranges += count_rows(&fx, t, k ? lo : NULL, k < 15 ? hi : NULL);
  }
  CU_ASSERT_EQUAL(in_ranges, N);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Change capture (version 2)                                           */
/* ------------------------------------------------------------------ */

static lipsync_version version_of(uint64_t clock, uint8_t site_byte) {
  lipsync_version v;
  v.clock = clock;
  memset(v.site, site_byte, sizeof v.site);
  return v;
}

/* Applies a row through insert (|update| false) or update. */
static int apply_row(lipsync_store *store, lipsync_table *t,
                     const uint8_t *uuid, const lipsync_value *values, size_t n,
                     lipsync_version v, int deleted, bool update) {
  lipsync_row row = {.nvalues = deleted ? 0 : n};
  memcpy(row.uuid, uuid, LIPSYNC_UUID_LEN);
  row.values = deleted ? NULL : values;
  row.version = v;
  row.deleted = deleted;
  int rc = update ? store_update(store, t, &row) : store_insert(store, t, &row);
  if (rc)
    fprintf(stderr, "\n  apply: %s\n", store_errmsg(store));
  return rc;
}

/* An integer from the item of table |table| selected by |where|. */
static int64_t item_int(sqlite3 *db, const char *table, const char *expr,
                        const char *where, int64_t dflt) {
  char *sql = sqlite3_mprintf("SELECT %s FROM \"_lipsync_meta_%w\" WHERE %s",
                              expr, table, where);
  int64_t v = TU_QUERY_INT(db, sql, dflt);
  sqlite3_free(sql);
  return v;
}

static int64_t state_clock(sqlite3 *db) {
  return TU_QUERY_INT(db, "SELECT clock FROM _lipsync_state", -1);
}

/* Begins, opens, prepares and commits |name| in |store|. */
static bool prepare_commit(lipsync_store *store, const char *name) {
  lipsync_table *t = NULL;
  int rc = store_begin(store);
  if (!rc)
    rc = store_open_table(store, name, &t);
  if (!rc)
    rc = store_prepare_table(store, t);
  if (!rc)
    rc = store_commit(store);
  if (rc) {
    fprintf(stderr, "\n  %s: %s\n", name, store_errmsg(store));
    store_rollback(store);
  }
  CU_ASSERT_EQUAL(rc, 0);
  return rc == 0;
}

/* A file database seen by the store's connection and by a second, plain
 * one (no LipSync SQL functions): the application. */
typedef struct two_conns {
  char dir[256];
  sqlite3 *db, *app;
  lipsync_store *store;
} two_conns;

static bool tc_open(two_conns *tc, const char *setup_sql) {
  char path[512];
  tc->db = tc->app = NULL;
  tc->store = NULL;
  if (!tu_tmpdir(tc->dir, sizeof tc->dir))
    return false;
  tu_path(path, sizeof path, tc->dir, "capture.db");
  tc->db = TU_DB_OPEN(path);
  tc->app = TU_DB_OPEN(path);
  if (!tc->db || !tc->app || !TU_EXEC(tc->app, setup_sql))
    return false;
  CU_ASSERT_EQUAL(lipsync_store_sqlite_wrap(&tc->store, tc->db), 0);
  return tc->store != NULL;
}

static void tc_close(two_conns *tc) {
  lipsync_store_free(tc->store);
  sqlite3_close(tc->db);
  sqlite3_close(tc->app);
  tu_rmdir(tc->dir);
}

/* Every INSERT, UPDATE and DELETE of another connection gets a new version
 * in its own transaction; no-op updates and rolled-back writes none. */
static void test_capture_other_connection(void) {
  two_conns tc;
  int64_t c1, c2, c3, c4;
  char *uuid = NULL, where[80];
  if (!tc_open(&tc, "CREATE TABLE t(a INTEGER, b);"
                    "INSERT INTO t(a, b) VALUES (1, 'one');"))
    goto out;
  if (!prepare_commit(tc.store, "t"))
    goto out;
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(tc.app, "SELECT applying FROM _lipsync_state", -1), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(tc.app,
                               "SELECT length(site) FROM"
                               " _lipsync_state",
                               -1),
                  16);

  /* INSERT without a UUID: the trigger gives one (version 4) and an item. */
  TU_EXEC(tc.app, "INSERT INTO t(a, b) VALUES (2, 'two')");
  uuid = TU_QUERY_TEXT(tc.app, "SELECT _lipsync_uuid FROM t WHERE a = 2");
  CU_ASSERT_PTR_NOT_NULL_FATAL(uuid);
  uint8_t raw[LIPSYNC_UUID_LEN];
  CU_ASSERT_EQUAL(lipsync_uuid_parse(uuid, strlen(uuid), raw), 0);
  CU_ASSERT_EQUAL(raw[6] >> 4, 4);
  CU_ASSERT_EQUAL(raw[8] >> 6, 2);
  snprintf(where, sizeof where, "uuid = '%s'", uuid);
  c1 = item_int(tc.app, "t", "clock", where, -1);
  CU_ASSERT(c1 > 0);
  CU_ASSERT_EQUAL(c1, state_clock(tc.app));
  CU_ASSERT_EQUAL(item_int(tc.app, "t", "deleted", where, -1), 0);
  CU_ASSERT_EQUAL(item_int(tc.app, "t", "base_clock", where, -1), 0);
  CU_ASSERT_EQUAL(item_int(tc.app, "t", "base_site IS NULL", where, -1), 1);
  CU_ASSERT_EQUAL(item_int(tc.app, "t",
                           "site = (SELECT site FROM _lipsync_state)", where,
                           -1),
                  1);
  /* The clock follows the wall clock: ms << 16. */
  CU_ASSERT((c1 >> 16) > 1700000000000LL);

  /* One tick per insert, though the trigger gives the row its UUID with an
   * UPDATE: with the clock ahead of the wall clock, exactly one more. */
  TU_EXEC(tc.app, "UPDATE _lipsync_state SET clock = 1 << 61;"
                  "INSERT INTO t(a) VALUES (9)");
  CU_ASSERT_EQUAL(TU_QUERY_INT(tc.app,
                               "SELECT m.clock = (1 << 61) + 1 FROM"
                               " _lipsync_meta_t m JOIN t ON m.uuid ="
                               " t._lipsync_uuid WHERE t.a = 9",
                               -1),
                  1);
  CU_ASSERT_EQUAL(state_clock(tc.app), ((int64_t)1 << 61) + 1);
  c1 = state_clock(tc.app);

  /* UPDATE that changes a value: a later version. */
  TU_EXEC(tc.app, "UPDATE t SET b = 'deux' WHERE a = 2");
  c2 = item_int(tc.app, "t", "clock", where, -1);
  CU_ASSERT(c2 > c1);
  /* UPDATE that changes nothing: no new version. */
  TU_EXEC(tc.app, "UPDATE t SET b = 'deux', a = 2 WHERE a = 2");
  CU_ASSERT_EQUAL(item_int(tc.app, "t", "clock", where, -1), c2);
  CU_ASSERT_EQUAL(state_clock(tc.app), c2);
  /* 2 and 2.0 are equal in SQL but not the same value. */
  TU_EXEC(tc.app, "UPDATE t SET b = 2 WHERE a = 2");
  c3 = item_int(tc.app, "t", "clock", where, -1);
  TU_EXEC(tc.app, "UPDATE t SET b = 2.0 WHERE a = 2");
  c4 = item_int(tc.app, "t", "clock", where, -1);
  CU_ASSERT(c3 > c2 && c4 > c3);

  /* A rolled-back write leaves the item and clock as they were. */
  TU_EXEC(tc.app, "BEGIN; UPDATE t SET b = 'x' WHERE a = 2;"
                  " DELETE FROM t WHERE a = 1; ROLLBACK");
  CU_ASSERT_EQUAL(item_int(tc.app, "t", "clock", where, -1), c4);
  CU_ASSERT_EQUAL(state_clock(tc.app), c4);

  /* DELETE: a tombstone with a later version. */
  TU_EXEC(tc.app, "DELETE FROM t WHERE a = 2");
  CU_ASSERT(item_int(tc.app, "t", "clock", where, -1) > c4);
  CU_ASSERT_EQUAL(item_int(tc.app, "t", "deleted", where, -1), 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(tc.app, "SELECT count(*) FROM t", -1), 2);

  /* INSERT with the UUID of the tombstone: live again, later version. */
  c1 = item_int(tc.app, "t", "clock", where, -1);
  char *sql = sqlite3_mprintf(
      "INSERT INTO t(a, b, _lipsync_uuid) VALUES (3, 'three', %Q)", uuid);
  TU_EXEC(tc.app, sql);
  sqlite3_free(sql);
  CU_ASSERT(item_int(tc.app, "t", "clock", where, -1) > c1);
  CU_ASSERT_EQUAL(item_int(tc.app, "t", "deleted", where, -1), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(tc.app, "SELECT count(*) FROM _lipsync_meta_t", -1), 3);
out:
  free(uuid);
  tc_close(&tc);
}

/* A row's UUID never changes, even while the store applies rows; setting
 * one from NULL is allowed. */
static void test_uuid_change_refused(void) {
  fixture fx;
  lipsync_table *t;
  sqlite3_stmt *st = NULL;
  if (!fx_open(&fx, "CREATE TABLE t(a)"))
    goto out;
  TU_EXEC(fx.db, "INSERT INTO t VALUES (1)");
  if (!prepare_commit(fx.store, "t"))
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
  fx_close(&fx);
}

/* Rows existing when capture is installed get (clock 0, row digest). */
static void test_initial_versions(void) {
  fixture fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_row row = {.nvalues = 0};
  size_t n = 0;
  if (!fx_open(&fx, "CREATE TABLE t(a INTEGER, b TEXT);"
                    "INSERT INTO t VALUES (1, 'x'), (2, NULL), (3, 'z');"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t"
                               " WHERE clock = 0 AND deleted = 0"
                               " AND base_clock = 0",
                               -1),
                  3);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (c && store_next(fx.store, c, &row) == 1) {
    uint8_t digest[LIPSYNC_DIGEST_LEN];
    char text[37], hex[33], where[64];
    lipsync_row_digest(&row, digest);
    lipsync_uuid_format(row.uuid, text);
    tu_hex(digest, sizeof digest, hex);
    snprintf(where, sizeof where, "uuid = '%s'", text);
    char *expr = sqlite3_mprintf("lower(hex(site)) = lower('%s')", hex);
    CU_ASSERT_EQUAL(item_int(fx.db, "t", expr, where, -1), 1);
    sqlite3_free(expr);
    n++;
  }
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  /* The state was created with a clock that never ticked. */
  CU_ASSERT_EQUAL(state_clock(fx.db), 0);
out:
  fx_close(&fx);
}

/* insert and update keep the peer's version and make none of their own;
 * applying is set only inside the store's transaction. */
static void test_apply_not_captured(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_int(7), tu_text("seven")};
  lipsync_version v1 = version_of(1000, 0xA1), v2 = version_of(2000, 0xB2);
  if (!fx_open(&fx, "CREATE TABLE t(a INTEGER, b TEXT)"))
    goto out;
  if (!prepare_commit(fx.store, "t"))
    goto out;
  int64_t clock0 = state_clock(fx.db);
  uuid_fill(u1, 0x11);
  uuid_fill(u2, 0x22);
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT applying FROM _lipsync_state", -1), 1);
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u1, v, 2, v1, 0, false), 0);
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u2, NULL, 0, v2, 1, false), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT applying FROM _lipsync_state", -1), 0);
  CU_ASSERT_EQUAL(state_clock(fx.db), clock0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM t", -1), 1);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db,
                   "SELECT clock FROM _lipsync_meta_t WHERE uuid ="
                   " '11111111-1111-1111-1111-111111111111' AND deleted = 0"
                   " AND site = x'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1'"
                   /* never synced as a client: stored as the version,
                    * reported as zero (scan items) */
                   " AND base_clock = clock AND base_site = site",
                   -1),
      1000);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db,
                   "SELECT clock FROM _lipsync_meta_t WHERE uuid ="
                   " '22222222-2222-2222-2222-222222222222' AND deleted = 1"
                   " AND site = x'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2'",
                   -1),
      2000);

  /* update: the row changes, the item takes the version, no tick. */
  v[1] = tu_text("SEVEN");
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u1, v, 2, v2, 0, true), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(state_clock(fx.db), clock0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM t WHERE b = 'SEVEN'", -1), 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT clock FROM _lipsync_meta_t WHERE uuid ="
                               " '11111111-1111-1111-1111-111111111111'",
                               -1),
                  2000);
  /* A clock SQLite cannot order is refused. */
  t = begin_prepared(&fx, "t");
  if (t) {
    lipsync_row row = {.nvalues = 2, .values = v};
    memcpy(row.uuid, u1, LIPSYNC_UUID_LEN);
    row.version = version_of(UINT64_MAX, 1);
    CU_ASSERT_EQUAL(store_update(fx.store, t, &row), LIPSYNC_ERR_INVALID_VALUE);
    CU_ASSERT(contains(store_errmsg(fx.store), "out of range"));
  }
  store_rollback(fx.store);
out:
  fx_close(&fx);
}

/* update writes the user row only when a value differs (no UPDATE
 * trigger fires otherwise), deletes it for a tombstone, and re-inserts it
 * after one; the base is kept. */
static void test_update_rows(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_int(1), tu_text("abc")};
  if (!fx_open(&fx, "CREATE TABLE t(a INTEGER, b COLLATE NOCASE);"
                    "CREATE TABLE counts(updates INTEGER, inserts INTEGER);"
                    "INSERT INTO counts VALUES (0, 0);"
                    "CREATE TRIGGER cu AFTER UPDATE ON t BEGIN"
                    " UPDATE counts SET updates = updates + 1; END;"
                    "CREATE TRIGGER ci AFTER INSERT ON t BEGIN"
                    " UPDATE counts SET inserts = inserts + 1; END;"))
    goto out;
  uuid_fill(u, 0x33);
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u, v, 2, version_of(10, 1), 0, false),
                  0);
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t,
                                     &(lipsync_finish){.max_clock = 10,
                                                       .as_client = 1,
                                                       .server_clock = 5}),
                  0);
  /* Equal values: no user UPDATE, but the item takes the version. */
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u, v, 2, version_of(11, 2), 0, true),
                  0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT updates FROM counts", -1), 0);
  CU_ASSERT_EQUAL(item_int(fx.db, "t", "clock", "1", -1), 11);
  CU_ASSERT_EQUAL(item_int(fx.db, "t", "base_clock", "1", -1), 10);
  /* 'ABC' equals 'abc' under NOCASE, but it is another value. */
  v[1] = tu_text("ABC");
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u, v, 2, version_of(12, 2), 0, true),
                  0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT updates FROM counts", -1), 1);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM t WHERE b = 'ABC' COLLATE"
                               " BINARY",
                               -1),
                  1);
  /* 1 and 1.0 compare equal, but 1.0 is a REAL. */
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
  /* A tombstone deletes the row and keeps the base. */
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u, NULL, 0, version_of(15, 3), 1, true), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT count(*) FROM t", -1), 0);
  CU_ASSERT_EQUAL(item_int(fx.db, "t", "deleted", "1", -1), 1);
  CU_ASSERT_EQUAL(item_int(fx.db, "t", "clock", "1", -1), 15);
  CU_ASSERT_EQUAL(item_int(fx.db, "t", "base_clock", "1", -1), 10);
  /* A second tombstone for a row already gone is fine. */
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u, NULL, 0, version_of(16, 3), 1, true), 0);
  /* Live again: the row is inserted. */
  v[1] = tu_text("back");
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u, v, 2, version_of(17, 4), 0, true),
                  0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM t WHERE b ="
                               " 'back' AND _lipsync_uuid ="
                               " '33333333-3333-3333-3333-333333333333'",
                               -1),
                  1);
  CU_ASSERT_EQUAL(item_int(fx.db, "t", "deleted", "1", -1), 0);
  CU_ASSERT_EQUAL(item_int(fx.db, "t", "clock", "1", -1), 17);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "SELECT inserts FROM counts", -1), 2);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM _lipsync_meta_t", -1), 1);
out:
  fx_close(&fx);
}

/* scan_items lists every item, tombstones and bases included. */
static void test_scan_items(void) {
  fixture fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_item item;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(5);
  int rc, live = 0, dead = 0, based = 0;
  if (!fx_open(&fx, "CREATE TABLE t(a INTEGER)"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  for (int i = 1; i <= 4; i++) {
    uuid_fill(u, (uint8_t)i);
    CU_ASSERT_EQUAL(apply_row(fx.store, t, u, &v, 1,
                              version_of((uint64_t)i << 20, (uint8_t)i), i == 4,
                              false),
                    0);
  }
  /* Items inserted into an empty table wait in a staging table: a scan
   * sees them all the same. */
  CU_ASSERT_EQUAL(store_scan_items(fx.store, t, &c), 0);
  while (c && (rc = store_next_item(fx.store, c, &item)) == 1) {
    CU_ASSERT_EQUAL(item.version.clock, (uint64_t)item.uuid[0] << 20);
    CU_ASSERT_EQUAL(item.version.site[15], item.uuid[0]);
    CU_ASSERT_EQUAL(item.base.clock, 0);
    CU_ASSERT_EQUAL(item.base.site[0], 0);
    if (item.deleted)
      dead++;
    else
      live++;
  }
  store_close_cursor(fx.store, c);
  CU_ASSERT(live == 3 && dead == 1);
  CU_ASSERT_EQUAL(
      store_finish_table(fx.store, t,
                         &(lipsync_finish){.as_client = 1, .server_clock = 9}),
      0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->last_sync, 9);
  /* Twice, so the statement goes back to the table and is reused. */
  for (int pass = 0; pass < 2; pass++) {
    live = dead = based = 0;
    CU_ASSERT_EQUAL(store_scan_items(fx.store, t, &c), 0);
    while (c && store_next_item(fx.store, c, &item) == 1) {
      based += lipsync_version_cmp(&item.base, &item.version) == 0;
      live += !item.deleted;
    }
    store_close_cursor(fx.store, c);
    CU_ASSERT(based == 4 && live == 3);
  }
  /* A corrupt item is an error, not a crash. */
  TU_EXEC(fx.db, "UPDATE _lipsync_meta_t SET site = x'00' WHERE clock ="
                 " 1048576");
  CU_ASSERT_EQUAL(store_scan_items(fx.store, t, &c), 0);
  while (c && (rc = store_next_item(fx.store, c, &item)) == 1)
    ;
  CU_ASSERT_EQUAL(rc, LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "16 bytes"));
  store_close_cursor(fx.store, c);
  store_rollback(fx.store);
out:
  fx_close(&fx);
}

/* Rows changed while capture was off (triggers quiet): the recount gives
 * a row without an item the initial version capture would have given it,
 * and every other disagreeing item a fresh version. */
static void test_repair_items(void) {
  fixture fx;
  int64_t before, after;
  if (!fx_open(&fx, "CREATE TABLE t(k TEXT PRIMARY KEY, a);"
                    "INSERT INTO t(k) VALUES ('r1'), ('r2'), ('r3'), ('x');"))
    goto out;
  if (!prepare_commit(fx.store, "t"))
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
  if (!prepare_commit(fx.store, "t"))
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
  if (!prepare_commit(fx.store, "t"))
    goto out;
  CU_ASSERT_EQUAL(state_clock(fx.db), after);
out:
  fx_close(&fx);
}

/* finish_table: observe, purge, and as a client record base and
 * last_sync; as a server the base stays. */
static void test_finish_table(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(1);
  uint64_t far = (uint64_t)1 << 60;
  if (!fx_open(&fx, "CREATE TABLE t(a INTEGER); INSERT INTO t VALUES (0)"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->last_sync, 0);
  for (int i = 1; i <= 4; i++) {
    uuid_fill(u, (uint8_t)i);
    CU_ASSERT_EQUAL(apply_row(fx.store, t, u, &v, 1,
                              version_of((uint64_t)i * 100, 1), i <= 2, false),
                    0);
  }
  /* As a server: tombstones below 150 go (clock 100), the clock observes,
   * the base stays as it was stored (the version, in a table never synced
   * as a client: reported as zero). */
  CU_ASSERT_EQUAL(
      store_finish_table(fx.store, t,
                         &(lipsync_finish){.max_clock = far, .horizon = 150}),
      0);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM _lipsync_meta_t", -1), 4);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t"
                               " WHERE deleted",
                               -1),
                  1);
  CU_ASSERT_EQUAL(state_clock(fx.db), (int64_t)far);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t"
                               " WHERE base_clock IS NOT clock",
                               -1),
                  0);
  /* The clock never goes back. */
  CU_ASSERT_EQUAL(
      store_finish_table(fx.store, t, &(lipsync_finish){.max_clock = 5}), 0);
  CU_ASSERT_EQUAL(state_clock(fx.db), (int64_t)far);
  /* As a client: base := version for every item, last_sync recorded. */
  CU_ASSERT_EQUAL(
      store_finish_table(
          fx.store, t,
          &(lipsync_finish){.horizon = 0, .as_client = 1, .server_clock = 777}),
      0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t"
                               " WHERE base_clock = clock AND"
                               " base_site IS site",
                               -1),
                  4);
  CU_ASSERT_EQUAL(t->last_sync, 777);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT last_sync FROM _lipsync_tables"
                               " WHERE name = 't'",
                               -1),
                  777);
  /* A later local write ticks past the observed clock. */
  TU_EXEC(fx.db, "UPDATE t SET a = 2 WHERE a = 0");
  CU_ASSERT(state_clock(fx.db) > (int64_t)far);
  /* Purging every tombstone: a huge horizon. */
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->last_sync, 777);
  CU_ASSERT_EQUAL(
      store_finish_table(fx.store, t, &(lipsync_finish){.horizon = UINT64_MAX}),
      0);
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db,
                               "SELECT count(*) FROM _lipsync_meta_t"
                               " WHERE deleted",
                               -1),
                  0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

/* tick: the clock the next local change would take, later than every
 * version made or observed, with the site; read without moving the clock
 * (a server reports it, spec LS-TOMB-2, without writing); it creates the
 * state in a database that has none. */
static void test_tick(void) {
  fixture fx;
  lipsync_version a, b;
  if (!fx_open(&fx, NULL))
    goto out;
  CU_ASSERT_EQUAL(store_tick(fx.store, &a), 0);
  CU_ASSERT((a.clock >> 16) > 1700000000000ULL);
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db, "SELECT count(*) FROM _lipsync_state", -1), 1);
  for (int i = 0; i < 100; i++) {
    CU_ASSERT_EQUAL(store_tick(fx.store, &b), 0);
    CU_ASSERT(b.clock >= a.clock);
    CU_ASSERT_EQUAL(memcmp(a.site, b.site, LIPSYNC_SITE_LEN), 0);
    a = b;
  }
  CU_ASSERT(state_clock(fx.db) < (int64_t)a.clock);
  /* A clock ahead of the wall clock: the counter goes on from it. */
  TU_EXEC(fx.db, "UPDATE _lipsync_state SET clock = 1 << 61");
  CU_ASSERT_EQUAL(store_tick(fx.store, &b), 0);
  CU_ASSERT_EQUAL(b.clock, ((uint64_t)1 << 61) + 1);
  CU_ASSERT_EQUAL(state_clock(fx.db), (int64_t)1 << 61);
  /* The site is random, not zero. */
  CU_ASSERT_EQUAL(
      TU_QUERY_INT(fx.db,
                   "SELECT hex(site) = hex(x'00000000000000000000000000000000')"
                   " FROM _lipsync_state",
                   -1),
      0);
out:
  fx_close(&fx);
}

/* A WITHOUT ROWID table is captured through its primary key. */
static void test_capture_without_rowid(void) {
  fixture fx;
  if (!fx_open(&fx, "CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
                    "INSERT INTO w VALUES ('a', 1);"))
    goto out;
  if (!prepare_commit(fx.store, "w"))
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
  fx_close(&fx);
}

/* The capture tables stay out of list_tables and open_table, and a second
 * prepare of an unchanged table leaves the schema alone; a new column is
 * compared by the UPDATE trigger once prepare has run again. */
static void test_capture_schema(void) {
  fixture fx;
  lipsync_table *t = NULL;
  const char *const *names;
  size_t n;
  if (!fx_open(&fx, "CREATE TABLE t(a); INSERT INTO t VALUES (1)"))
    goto out;
  if (!prepare_commit(fx.store, "t"))
    goto out;
  CU_ASSERT_EQUAL(store_list_tables(fx.store, &names, &n), 0);
  CU_ASSERT(n == 1 && strcmp(names[0], "t") == 0);
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
  int64_t version = TU_QUERY_INT(fx.db, "PRAGMA schema_version", -1);
  if (!prepare_commit(fx.store, "t"))
    goto out;
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, "PRAGMA schema_version", -1), version);

  TU_EXEC(fx.db, "ALTER TABLE t ADD COLUMN b");
  if (!prepare_commit(fx.store, "t"))
    goto out;
  int64_t c = item_int(fx.db, "t", "clock", "1", -1);
  TU_EXEC(fx.db, "UPDATE t SET b = 'new'");
  CU_ASSERT(item_int(fx.db, "t", "clock", "1", -1) > c);
out:
  fx_close(&fx);
}

/* The first sync into an empty table: items staged, then joined in UUID
 * order; a duplicate item is reported by flush. */
static void test_bulk_items(void) {
  enum { N = 5000 };
  fixture fx;
  lipsync_table *t;
  lipsync_value v = tu_int(1);
  uint8_t u[LIPSYNC_UUID_LEN];
  if (!fx_open(&fx, "CREATE TABLE t(a INTEGER)"))
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
  fx_close(&fx);
}

/* A bulk load the session begins by scanning the (empty) items, as a
 * first sync does: the indexes stay set aside and the items staged (in a
 * TEMP table) through the load and a second scan, then a lookup builds the
 * indexes, the items join the metadata table, and update and the triggers
 * work on them. */
static void test_bulk_items_after_scan(void) {
  enum { N = 3000, M = 1000 };
  fixture fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_item item;
  lipsync_row row = {.nvalues = 0};
  uint8_t(*uuids)[LIPSYNC_UUID_LEN] = calloc(N + M, LIPSYNC_UUID_LEN);
  int n, live = 0;
  CU_ASSERT_PTR_NOT_NULL_FATAL(uuids);
  if (!fx_open(&fx, "CREATE TABLE t(a INTEGER); CREATE INDEX t_a ON t(a)"))
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
  fx_close(&fx);
}

int register_store_sqlite_tests(void) {
  static const tu_test tests[] = {
      {"open unknown table", test_open_unknown_table},
      {"describe columns", test_describe_columns},
      {"UUID column in any case", test_uuid_column_any_case},
      {"generated columns are skipped", test_generated_column_skipped},
      {"quoted names", test_quoted_names},
      {"temp table does not shadow", test_temp_table_does_not_shadow},
      {"list tables", test_list_tables},
      {"prepare adds UUIDs, rollback undoes",
       test_prepare_adds_uuids_and_rollback_undoes},
      {"prepare keeps UUIDs and index",
       test_prepare_keeps_uuids_and_existing_index},
      {"prepare refuses malformed UUIDs", test_prepare_refuses_malformed_uuids},
      {"malformed UUID without rowid", test_prepare_malformed_without_rowid},
      {"prepare refuses duplicate UUIDs", test_prepare_refuses_duplicate_uuids},
      {"scan ranges", test_scan_ranges},
      {"cursors interleave", test_scan_cursors_interleave},
      {"fetch", test_fetch},
      {"scan before prepare", test_scan_before_prepare_fails_cleanly},
      {"prepare while reading another table",
       test_prepare_while_reading_another_table},
      {"insert edge values", test_insert_edge_values},
      {"insert refusals", test_insert_refusals},
      {"affinity matches SQLite", test_affinity_matches_sqlite},
      {"INTEGER PRIMARY KEY", test_rowid_alias},
      {"STRICT table", test_strict_table},
      {"constraint violation", test_constraint_violation},
      {"indexes of an empty table are built once", test_deferred_index},
      {"rollback undoes inserts", test_rollback_undoes_inserts},
      {"begin inside caller's transaction",
       test_begin_inside_callers_transaction},
      {"commit persists", test_commit_persists},
      {"open errors", test_open_errors},
      {"second writer waits", test_second_writer_waits},
      {"WITHOUT ROWID table", test_without_rowid_table},
      {"UTF-16 database", test_utf16_database},
      {"many rows", test_many_rows},
      {"capture from another connection", test_capture_other_connection},
      {"UUID change refused", test_uuid_change_refused},
      {"initial versions", test_initial_versions},
      {"applied rows are not captured", test_apply_not_captured},
      {"update rows", test_update_rows},
      {"scan items", test_scan_items},
      {"repair items", test_repair_items},
      {"finish table", test_finish_table},
      {"tick", test_tick},
      {"capture WITHOUT ROWID", test_capture_without_rowid},
      {"capture schema", test_capture_schema},
      {"bulk items", test_bulk_items},
      {"bulk items after a scan", test_bulk_items_after_scan},
      {NULL, NULL},
  };
  return tu_add_suite("store_sqlite", tests);
}
