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
  lipsync_row row;
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
  lipsync_row row;
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
  lipsync_row row;
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
  lipsync_row row;
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
  lipsync_row row;
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
  lipsync_row row;
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
  lipsync_row row;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  if (!fx_open(&fx, "CREATE TABLE n(a)"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "n", &t), 0);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT(contains(store_errmsg(fx.store), "table n: scan: no such column"));
  uuid_fill(uuid, 1);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  /* A UUID that is no longer canonical surfaces when read. */
  if (TU_EXEC(fx.db, "CREATE TABLE u(a, _lipsync_uuid);"
                     "INSERT INTO u VALUES (1, 'nope');")) {
    CU_ASSERT_EQUAL(store_begin(fx.store), 0);
    CU_ASSERT_EQUAL(store_open_table(fx.store, "u", &t), 0);
    CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
    CU_ASSERT_EQUAL(store_next(fx.store, c, &row), LIPSYNC_ERR_STORAGE);
    CU_ASSERT_EQUAL(store_next(fx.store, c, &row), LIPSYNC_ERR_STORAGE);
    CU_ASSERT(contains(store_errmsg(fx.store), "malformed _lipsync_uuid"));
    store_close_cursor(fx.store, c);
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
  lipsync_row row;
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
      lipsync_row row;
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
  lipsync_row row;
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
  /* The same UUID twice. */
  v[1] = tu_text("two");
  uuid_fill(uuid, 1);
  CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 2), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "c._lipsync_uuid"));
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

/* An empty table's indexes are set aside and built once, when a lookup
 * first needs them or at commit; their constraints still hold, and a
 * rollback brings them back. */
static void test_deferred_index(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[1] = {{0}};
  lipsync_row row;
  const char *count_index = "SELECT count(*) FROM sqlite_schema WHERE "
                            "type = 'index' AND tbl_name = 'd'";
  if (!fx_open(&fx, "CREATE TABLE d(x INTEGER);"
                    "CREATE UNIQUE INDEX d_x ON d(x);"))
    goto out;
  t = begin_prepared(&fx, "d");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(TU_QUERY_INT(fx.db, count_index, -1), 0);
  for (int i = 1; i <= 3; i++) {
    v[0] = tu_int(i);
    uuid_fill(uuid, (uint8_t)i);
    CU_ASSERT_EQUAL(insert_row(&fx, t, uuid, v, 1), 0);
  }
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
    uuid_fill(uuid, i);
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
  lipsync_row row;
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

  /* A short wait fails with a storage error... */
  TU_EXEC(db2, "PRAGMA busy_timeout = 50");
  CU_ASSERT_EQUAL(store_begin(second), LIPSYNC_ERR_STORAGE);
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
  lipsync_row row;
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
  lipsync_row row;
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
  lipsync_row row;
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
      {NULL, NULL},
  };
  return tu_add_suite("store_sqlite", tests);
}
