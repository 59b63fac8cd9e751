/*
 * store_common_test.c: what every storage backend must do, tested once
 * and run on each (store_fixture.h): tables and their columns, preparing
 * a table, reading rows by range and by UUID, transactions, the capture of
 * the application's writes, items and their versions, finishing a table's
 * sync, positions, kept summaries, checkpoints and tokens. Only the
 * store's methods table and SQL every backend runs alike are used.
 */
#include "store_fixture.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* ------------------------------------------------------------------ */
/* Tables and columns                                                   */
/* ------------------------------------------------------------------ */

/* An unknown name, a view and a name in another case are no table; none
 * of them breaks the transaction. */
static void test_open_unknown_table(void) {
  sfx fx;
  lipsync_table *t = NULL;
  char want[600];
  if (!SFX_OPEN(&fx, "CREATE TABLE cities(name text);"
                     "CREATE VIEW big AS SELECT * FROM cities;"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "nope"), &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_PTR_NULL(t);
  snprintf(want, sizeof want, "no table %s", sfx_name(&fx, "nope"));
  CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store), want);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "big"), &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "Cities"), &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "cities"), &t), 0);
  CU_ASSERT_PTR_NOT_NULL(t);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* Columns come in canonical order (bytewise by name) with their canonical
 * types; a second open is the same handle; the UUID column, once there,
 * is no column of the table. */
static void test_describe_columns(void) {
  static const lipsync_column want[] = {
      {"Z_upper", "text"},      {"_a", "integer"},  {"c_blob", "blob"},
      {"c_boolean", "boolean"}, {"c_date", "date"}, {"c_integer", "integer"},
      {"c_numeric", "decimal"}, {"c_real", "real"}, {"c_text", "text"},
  };
  size_t nwant = sizeof want / sizeof want[0];
  sfx fx;
  lipsync_table *t = NULL, *again = NULL;
  if (!SFX_OPEN(&fx, "CREATE TABLE types(c_integer integer, c_text text,"
                     " c_real {real}, c_blob {blob}, c_boolean boolean,"
                     " c_date date, c_numeric numeric, \"Z_upper\" text,"
                     " \"_a\" integer)"))
    goto out;
  t = begin_prepared(&fx, "types");
  if (!t)
    goto out;
  CU_ASSERT_STRING_EQUAL(t->name, sfx_name(&fx, "types"));
  CU_ASSERT_EQUAL(t->ncolumns, nwant);
  for (size_t i = 0; i < nwant && i < t->ncolumns; i++) {
    CU_ASSERT_STRING_EQUAL(t->columns[i].name, want[i].name);
    CU_ASSERT_STRING_EQUAL(t->columns[i].type, want[i].type);
  }
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "types"), &again),
                  0);
  CU_ASSERT_PTR_EQUAL(again, t);
  CU_ASSERT_STRING_EQUAL(fx.store->methods->name, fx.be->store_name);
  CU_ASSERT_EQUAL(fx.store->methods->version, LIPSYNC_STORE_METHODS_VERSION);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "types"), &t), 0);
  if (t)
    CU_ASSERT_EQUAL(t->ncolumns, nwant);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* A generated column is no column of the sync: each side computes its
 * own, and the rows read and written leave it out. */
static void test_generated_column_skipped(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_row row = {.nvalues = 0};
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(21);
  if (!SFX_OPEN(&fx, "CREATE TABLE g(a integer, twice integer GENERATED"
                     " ALWAYS AS (a * 2) STORED)"))
    goto out;
  t = begin_prepared(&fx, "g");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, 1);
  if (t->ncolumns == 1)
    CU_ASSERT_STRING_EQUAL(t->columns[0].name, "a");
  uuid_fill(uuid, 9);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, &v, 1), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  CU_ASSERT_EQUAL(row.nvalues, 1);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT twice FROM g", -1), 42);
out:
  sfx_close(&fx);
}

/* Quotes, spaces, dots and non-ASCII in table and column names. */
static void test_quoted_names(void) {
  static const char *const want[] = {"Col \"x\"", "Zeta",      "a.b",
                                     "alpha",     "two words", "\303\261ame"};
  sfx fx;
  lipsync_table *t;
  lipsync_row row = {.nvalues = 0};
  lipsync_cursor *c = NULL;
  uint8_t uuid[LIPSYNC_UUID_LEN], after[LIPSYNC_UUID_LEN];
  lipsync_value v[6];
  const char *const *names;
  char name[512], index[600];
  size_t count;
  int mine = 0;

  if (!SFX_OPEN(&fx, "CREATE TABLE \"we\"\"ird T\303\245ble\"(\"Col \"\"x\"\"\""
                     " integer, \"\303\261ame\" text, \"Zeta\" text,"
                     " alpha {real}, \"two words\" {blob}, \"a.b\" date);"
                     "INSERT INTO \"we\"\"ird T\303\245ble\" VALUES"
                     " (1, 'one', 'z', 1.5, NULL, '2024-01-01');"))
    goto out;
  tname(&fx, "we\"ird T\303\245ble", name, sizeof name);
  t = begin_prepared(&fx, "we\"ird T\303\245ble");
  if (!t)
    goto out;
  CU_ASSERT_STRING_EQUAL(t->name, name);
  CU_ASSERT_EQUAL(t->ncolumns, 6);
  for (size_t i = 0; i < 6 && i < t->ncolumns; i++)
    CU_ASSERT_STRING_EQUAL(t->columns[i].name, want[i]);
  snprintf(index, sizeof index, "we\"ird T\303\245ble__lipsync_uuid");
  CU_ASSERT_TRUE(fx.be->unique_index(&fx, "we\"ird T\303\245ble", index));

  uuid_fill(uuid, 0x42);
  v[0] = tu_int(2);
  v[1] = tu_text("zz");
  v[2] = tu_text("2024-02-29");
  v[3] = tu_real(2.5);
  v[4] = tu_blob("\x02", 1);
  v[5] = tu_text("two");
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, v, 6), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  for (size_t i = 0; i < 6 && row.nvalues == 6; i++)
    CHECK_VALUE(&row.values[i], &v[i], "quoted column");
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 2);
  memcpy(after, uuid, sizeof after);
  after[15]++;
  CU_ASSERT_EQUAL(store_scan(fx.store, t, uuid, after, &c), 0);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &row), 1);
  CU_ASSERT_EQUAL(memcmp(row.uuid, uuid, LIPSYNC_UUID_LEN), 0);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &row), 0);
  store_close_cursor(fx.store, c);

  /* Listed under the name that opens it, the fixture's only table. */
  CU_ASSERT_EQUAL(store_list_tables(fx.store, &names, &count), 0);
  for (size_t i = 0; i < count; i++) {
    if (!fx.be->owns(&fx, names[i]))
      continue;
    mine++;
    CU_ASSERT_STRING_EQUAL(names[i], name);
  }
  CU_ASSERT_EQUAL(mine, 1);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(*) FROM \"we\"\"ird T\303\245ble\"", -1), 2);
out:
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* prepare_table                                                        */
/* ------------------------------------------------------------------ */

/* prepare_table adds the UUID column, its unique index and a random UUID
 * per row; preparing again changes nothing; rollback undoes it all. */
static void test_prepare_adds_uuids_and_rollback_undoes(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_row row;
  int seen = 0, good = 0;
  char *type;
  if (!SFX_OPEN(&fx, "CREATE TABLE cities(name text, pop integer);"
                     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT"
                     " i + 1 FROM n WHERE i < 100) INSERT INTO cities"
                     " SELECT 'c' || i, i FROM n;"))
    goto out;
  t = begin_prepared(&fx, "cities");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, 2);
  type = fx.be->column_type(&fx, "cities", "_lipsync_uuid");
  CU_ASSERT(type && strcmp(type, fx.be->uuid_type) == 0);
  free(type);
  CU_ASSERT_TRUE(fx.be->unique_index(&fx, "cities", "cities__lipsync_uuid"));
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(DISTINCT _lipsync_uuid) FROM cities", -1), 100);
  /* Every UUID is a valid random (version 4, RFC 9562 variant) one. */
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (c && store_next(fx.store, c, &row) == 1) {
    seen++;
    good += (row.uuid[6] >> 4) == 4 && (row.uuid[8] & 0xC0) == 0x80;
  }
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(seen, 100);
  CU_ASSERT_EQUAL(good, 100);

  /* Preparing again changes nothing. */
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), 0);
  CU_ASSERT_EQUAL(fx.be->index_count(&fx, "cities"), 1);

  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  type = fx.be->column_type(&fx, "cities", "_lipsync_uuid");
  CU_ASSERT_PTR_NULL(type);
  free(type);
  CU_ASSERT_EQUAL(fx.be->index_count(&fx, "cities"), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM cities", -1), 100);
out:
  sfx_close(&fx);
}

/* UUIDs already there are kept, the others given; the caller's unique
 * index on the column serves, no second one is made. */
static void test_prepare_keeps_uuids_and_index(void) {
  sfx fx;
  lipsync_table *t;
  char *kept;
  if (!SFX_OPEN(&fx, "CREATE TABLE k(a integer, _lipsync_uuid {uuid});"
                     "CREATE UNIQUE INDEX my_index ON k(_lipsync_uuid);"
                     "INSERT INTO k VALUES"
                     " (1, '0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f'),"
                     " (2, NULL), (3, NULL);"))
    goto out;
  t = begin_prepared(&fx, "k");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, 1);
  kept = FX_TEXT(&fx, "SELECT _lipsync_uuid FROM k WHERE a = 1");
  CU_ASSERT(kept && strcmp(kept, "0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f") == 0);
  free(kept);
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(DISTINCT _lipsync_uuid) FROM k", -1), 3);
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(*) FROM k WHERE _lipsync_uuid IS NULL", -1), 0);
  CU_ASSERT_EQUAL(fx.be->index_count(&fx, "k"), 1);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* Two rows with one UUID: prepare_table refuses the table, names the
 * UUID, and leaves no index behind. */
static void test_prepare_refuses_duplicate_uuids(void) {
  sfx fx;
  lipsync_table *t = NULL;
  char prefix[600];
  if (!SFX_OPEN(&fx, "CREATE TABLE d(a integer, _lipsync_uuid {uuid});"
                     "INSERT INTO d VALUES"
                     " (1, '00000000-0000-4000-8000-000000000001'),"
                     " (2, '00000000-0000-4000-8000-000000000002'),"
                     " (3, '00000000-0000-4000-8000-000000000001');"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "d"), &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), LIPSYNC_ERR_STORAGE);
  const char *msg = store_errmsg(fx.store);
  snprintf(prefix, sizeof prefix, "table %s: duplicate _lipsync_uuid values",
           sfx_name(&fx, "d"));
  CU_ASSERT(strncmp(msg, prefix, strlen(prefix)) == 0);
  CU_ASSERT(contains(
      msg,
      sfx_pick(&fx, " ('00000000-0000-4000-8000-000000000001' appears 2 times)",
               "(00000000-0000-4000-8000-000000000001) is duplicated")));
  if (strncmp(msg, prefix, strlen(prefix)) != 0)
    fprintf(stderr, "\n  %s\n", msg);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(fx.be->index_count(&fx, "d"), 0);
out:
  sfx_close(&fx);
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

/* Table s(k, label) with the NSCAN rows "row<k>", in a transaction. */
static lipsync_table *scan_fixture(sfx *fx) {
  lipsync_table *t;
  if (!SFX_OPEN(fx, "CREATE TABLE s(k integer, label text)"))
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
    CU_ASSERT_EQUAL(insert_row(fx->store, t, uuid, v, 2), 0);
  }
  return t;
}

/* The k of a row of the scan fixture if it is that row (its UUID is
 * scan_uuid(k)) and in [lower, upper); -1 otherwise. */
static int scan_row_in(const lipsync_row *row, const uint8_t *lower,
                       const uint8_t *upper) {
  uint8_t want[LIPSYNC_UUID_LEN];
  int k = row->nvalues == 2 && row->values[0].type == LIPSYNC_INTEGER
              ? (int)row->values[0].u.integer
              : -1;
  if (k < 0 || k >= NSCAN)
    return -1;
  scan_uuid(k, want);
  if (memcmp(want, row->uuid, LIPSYNC_UUID_LEN) != 0 ||
      (lower && memcmp(want, lower, LIPSYNC_UUID_LEN) < 0) ||
      (upper && memcmp(want, upper, LIPSYNC_UUID_LEN) >= 0))
    return -1;
  return k;
}

/* Scans [lower, upper) and checks it returns exactly the rows in it. */
static void check_range(sfx *fx, lipsync_table *t, const uint8_t *lower,
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
    int k = scan_row_in(&row, lower, upper);
    if (k < 0 || seen[k])
      wrong++;
    else
      seen[k] = true;
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
  sfx fx;
  lipsync_table *t = scan_fixture(&fx);
  uint8_t zero[LIPSYNC_UUID_LEN], ones[LIPSYNC_UUID_LEN], r3[LIPSYNC_UUID_LEN],
      r7[LIPSYNC_UUID_LEN], mid[LIPSYNC_UUID_LEN], r3_1[LIPSYNC_UUID_LEN],
      one[LIPSYNC_UUID_LEN];
  if (!t)
    goto out;
  uuid_fill(zero, 0);
  uuid_fill(ones, 0xFF);
  scan_uuid(3, r3);
  scan_uuid(7, r7);
  uuid_fill(mid, 0x35);
  memcpy(r3_1, r3, sizeof r3_1);
  r3_1[15] = 0x31; /* bounds compare as bytes: 30.. < 30..31 < 40.. */
  scan_uuid(17, one);
  check_range(&fx, t, NULL, NULL, __LINE__);
  check_range(&fx, t, r3, NULL, __LINE__);
  check_range(&fx, t, NULL, r3, __LINE__);
  check_range(&fx, t, NULL, r7, __LINE__);
  check_range(&fx, t, r3, r7, __LINE__); /* lower in, upper out */
  check_range(&fx, t, mid, r7, __LINE__);
  check_range(&fx, t, r3_1, NULL, __LINE__);
  check_range(&fx, t, NULL, one, __LINE__);
  check_range(&fx, t, zero, NULL, __LINE__);
  check_range(&fx, t, NULL, zero, __LINE__); /* empty */
  check_range(&fx, t, zero, ones, __LINE__); /* all but ff..ff */
  check_range(&fx, t, ones, NULL, __LINE__);
  check_range(&fx, t, r7, r7, __LINE__); /* empty */
  check_range(&fx, t, r7, r3, __LINE__); /* upside down: empty */
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), NSCAN);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, r3, r7), 4);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* Cursors interleave, each over its own rows, each row valid while the
 * others move; the end is sticky; commit frees a cursor left open. */
static void test_scan_cursors_interleave(void) {
  sfx fx;
  lipsync_table *t = scan_fixture(&fx);
  lipsync_cursor *c[4] = {NULL};
  lipsync_row r[3];
  uint8_t r8[LIPSYNC_UUID_LEN];
  const uint8_t *lower[3], *upper[3];
  int n[3] = {0}, rc[3] = {1, 1, 1}, wrong = 0;
  if (!t)
    goto out;
  scan_uuid(8, r8);
  lower[0] = upper[0] = lower[2] = upper[1] = NULL;
  lower[1] = upper[2] = r8;
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(store_scan(fx.store, t, lower[i], upper[i], &c[i]), 0);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c[3]), 0);
  while (c[0] && c[1] && c[2] && (rc[0] == 1 || rc[1] == 1 || rc[2] == 1)) {
    for (int i = 0; i < 3; i++) {
      if (rc[i] != 1 || (rc[i] = store_next(fx.store, c[i], &r[i])) != 1)
        continue;
      n[i]++;
      wrong += scan_row_in(&r[i], lower[i], upper[i]) < 0;
    }
    /* Each cursor's row stays valid while the others move. */
    for (int i = 0; i < 3; i++)
      if (rc[i] == 1)
        wrong += r[i].values[1].type != LIPSYNC_TEXT ||
                 memcmp(r[i].values[1].u.bytes.data, "row", 3) != 0;
  }
  CU_ASSERT_EQUAL(wrong, 0);
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(rc[i], 0);
  CU_ASSERT_EQUAL(n[0], NSCAN);
  CU_ASSERT_EQUAL(n[1], 9); /* 80.., 90.., ..., f0.., ff..ff */
  CU_ASSERT_EQUAL(n[2], 9); /* 00..01, 00.., 10.., ..., 70.. */
  /* The end is sticky: no restart. */
  if (c[0])
    CU_ASSERT_EQUAL(store_next(fx.store, c[0], &r[0]), 0);
  for (int i = 0; i < 3; i++)
    store_close_cursor(fx.store, c[i]);
  store_close_cursor(fx.store, NULL);
  /* Cursor c[3] is left open: commit frees it. Later scans work. */
  CU_ASSERT_EQUAL(count_rows(fx.store, t, r8, NULL), 9);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), NSCAN);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* fetch reads one row by UUID; a missing one is NOT_FOUND, named, and no
 * failure of the transaction. */
static void test_fetch(void) {
  sfx fx;
  lipsync_table *t = scan_fixture(&fx);
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_row row = {.nvalues = 0};
  char want[600];
  if (!t)
    goto out;
  scan_uuid(5, uuid);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  CU_ASSERT_EQUAL(memcmp(row.uuid, uuid, LIPSYNC_UUID_LEN), 0);
  CU_ASSERT_EQUAL(row.nvalues, 2);
  if (row.nvalues == 2) {
    lipsync_value k = tu_int(5), label = tu_text("row5");
    CHECK_VALUE(&row.values[0], &k, "k");
    CHECK_VALUE(&row.values[1], &label, "label");
  }
  uuid_fill(uuid, 0x77);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), LIPSYNC_ERR_NOT_FOUND);
  snprintf(want, sizeof want,
           "table %s: no row 77777777-7777-7777-7777-777777777777",
           sfx_name(&fx, "s"));
  CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store), want);
  scan_uuid(16, uuid);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), 0);
  CU_ASSERT(row.nvalues == 2 && row.values[0].u.integer == 16);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* More rows than a backend reads at once, written by SQL. */
static void test_scan_batches(void) {
  enum { N = 2500 };
  sfx fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_row row;
  long long sum = 0;
  size_t n = 0;
  if (!SFX_OPEN(&fx,
                "CREATE TABLE b(i integer, pad text);"
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT"
                " i + 1 FROM n WHERE i < 2500) INSERT INTO b SELECT i,"
                " substr('xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx',"
                " 1, i % 50) FROM n"))
    goto out;
  t = begin_prepared(&fx, "b");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (c && store_next(fx.store, c, &row) == 1) {
    sum += row.values[0].u.integer;
    CU_ASSERT_EQUAL(row.values[1].u.bytes.len,
                    (size_t)(row.values[0].u.integer % 50));
    n++;
  }
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(n, N);
  CU_ASSERT_EQUAL(sum, (long long)N * (N + 1) / 2);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* A batch of lookups by UUID returns exactly the rows named, and skips a
 * UUID with no row. */
static void test_scan_uuids(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t u[LIPSYNC_UUID_LEN], want[5 * LIPSYNC_UUID_LEN];
  lipsync_cursor *c = NULL;
  lipsync_row r;
  int seen = 0;
  if (!SFX_OPEN(&fx, "CREATE TABLE l(i integer)"))
    goto out;
  t = begin_prepared(&fx, "l");
  if (!t)
    goto out;
  for (int k = 0; k < 16; k++) {
    lipsync_value v = tu_int(k);
    uuid_fill(u, (uint8_t)(k * 16));
    CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), 0);
  }
  const int pick[4] = {3, 9, 0, 15};
  for (int k = 0; k < 4; k++)
    uuid_fill(want + k * LIPSYNC_UUID_LEN, (uint8_t)(pick[k] * 16));
  uuid_fill(want + 4 * LIPSYNC_UUID_LEN, 0x01); /* no such row */
  CU_ASSERT_TRUE(store_can_scan_uuids(fx.store));
  if (store_can_scan_uuids(fx.store))
    CU_ASSERT_EQUAL(store_scan_uuids(fx.store, t, want, 5, &c), 0);
  while (c && store_next(fx.store, c, &r) == 1) {
    int64_t i = r.values[0].u.integer;
    CU_ASSERT(i == 3 || i == 9 || i == 0 || i == 15);
    CU_ASSERT_EQUAL(r.uuid[0], (uint8_t)(i * 16));
    seen |= 1 << i;
  }
  CU_ASSERT_EQUAL(seen, (1 << 3) | (1 << 9) | (1 << 0) | (1 << 15));
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* Before prepare_table, reading or writing rows fails cleanly: the
 * transaction goes on, and preparing then works. */
static void test_scan_before_prepare_fails_cleanly(void) {
  sfx fx;
  lipsync_table *t = NULL;
  lipsync_cursor *c = NULL;
  lipsync_row row = {.nvalues = 0};
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(1);
  char want[600];
  if (!SFX_OPEN(&fx, "CREATE TABLE n(a integer); INSERT INTO n VALUES (1)"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "n"), &t), 0);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_PTR_NULL(c);
  snprintf(want, sizeof want, "table %s: ", sfx_name(&fx, "n"));
  CU_ASSERT(contains(store_errmsg(fx.store), want));
  CU_ASSERT(contains(
      store_errmsg(fx.store),
      sfx_pick(&fx, "no such", "scan: the table has no _lipsync_uuid column")));
  uuid_fill(uuid, 1);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, uuid, &row), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, &v, 1), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), 0);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 1);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* The core may read one table while it prepares the next. */
static void test_prepare_while_reading_another_table(void) {
  sfx fx;
  lipsync_table *a, *b = NULL;
  lipsync_cursor *c = NULL;
  lipsync_row fetched, scanned;
  uint8_t uuid[LIPSYNC_UUID_LEN], other[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_text("first");
  if (!SFX_OPEN(&fx, "CREATE TABLE a(x text); CREATE TABLE b(y integer);"
                     "INSERT INTO b VALUES (1), (2);"))
    goto out;
  a = begin_prepared(&fx, "a");
  if (!a)
    goto out;
  uuid_fill(uuid, 7);
  uuid_fill(other, 8);
  CU_ASSERT_EQUAL(insert_row(fx.store, a, uuid, &v, 1), 0);
  CU_ASSERT_EQUAL(insert_row(fx.store, a, other, &v, 1), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, a, uuid, &fetched), 0);
  CU_ASSERT_EQUAL(store_scan(fx.store, a, NULL, NULL, &c), 0);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &scanned), 1);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "b"), &b), 0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, b), 0);
  if (b)
    CU_ASSERT_EQUAL(count_rows(fx.store, b, NULL, NULL), 2);
  if (fetched.nvalues == 1)
    CHECK_VALUE(&fetched.values[0], &v, "fetched row still valid");
  CU_ASSERT_EQUAL(store_next(fx.store, c, &scanned), 1);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &scanned), 0);
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Transactions                                                         */
/* ------------------------------------------------------------------ */

/* Rollback undoes the inserts and the UUID column; rollback with nothing
 * open is harmless, commit and a second begin are not. */
static void test_rollback_undoes_inserts(void) {
  sfx fx;
  lipsync_table *t;
  char *type;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer); INSERT INTO t VALUES (1);"))
    goto out;
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
    CU_ASSERT_EQUAL(insert_row(fx.store, t, uuid, &v, 1), 0);
  }
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 11);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM t", -1), 1);
  CU_ASSERT_EQUAL(APP_INT(&fx, "SELECT count(*) FROM t", -1), 1);
  type = fx.be->column_type(&fx, "t", "_lipsync_uuid");
  CU_ASSERT_PTR_NULL(type);
  free(type);
out:
  sfx_close(&fx);
}

/* begin fails in a transaction of the caller's, and the rollback that
 * follows leaves that transaction alone. */
static void test_begin_inside_callers_transaction(void) {
  sfx fx;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer)") ||
      !FX_EXEC(&fx, "BEGIN; INSERT INTO t VALUES (1)"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "begin: "));
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_TRUE(fx.be->in_transaction(&fx));
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM t", -1), 1);
  FX_EXEC(&fx, "ROLLBACK");
  CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_INTERNAL);
out:
  sfx_close(&fx);
}

/* A store opened the way an application opens one commits for good. */
static void test_commit_persists(void) {
  sfx fx;
  lipsync_store *store = NULL;
  lipsync_table *t = NULL;
  char errbuf[256] = "";
  lipsync_value v[2] = {tu_real(-2.5), tu_text("kept")}; /* a, b */
  lipsync_row row = {.nvalues = 2, .values = v};
  if (!SFX_OPEN(&fx, "CREATE TABLE t(b text, a {real})"))
    goto out;
  CU_ASSERT_EQUAL(fx.be->open_store(&fx, &store, errbuf, sizeof errbuf), 0);
  if (!store) {
    fprintf(stderr, "\n  %s\n", errbuf);
    goto out;
  }
  CU_ASSERT_STRING_EQUAL(store->methods->name, fx.be->store_name);
  CU_ASSERT_STRING_EQUAL(lipsync_store_errmsg(store), "no error");
  CU_ASSERT_EQUAL(store_begin(store), 0);
  CU_ASSERT_EQUAL(store_open_table(store, sfx_name(&fx, "t"), &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(store, t), 0);
  TU_UUID("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0", row.uuid);
  if (t)
    CU_ASSERT_EQUAL(store_insert(store, t, &row), 0);
  CU_ASSERT_EQUAL(store_commit(store), 0);
  lipsync_store_free(store);
  CU_ASSERT_EQUAL(APP_INT(&fx,
                          "SELECT count(*) FROM t WHERE b = 'kept' AND"
                          " a = -2.5 AND _lipsync_uuid ="
                          " '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0'",
                          -1),
                  1);
out:
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Volume                                                               */
/* ------------------------------------------------------------------ */

static long max_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* Many rows in, all of them out again, by one scan and by sixteen ranges
 * that partition the space; the time each takes is printed. */
static void test_many_rows(void) {
  const int n_rows = sfx_current()->many_rows;
  sfx fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_row row;
  int64_t sum = 0;
  size_t n = 0, in_ranges = 0;
  double started, insert_s, scan_s;
  long rss_before;
  if (!SFX_OPEN(&fx, "CREATE TABLE big(v integer, name text, x {real})"))
    goto out;
  t = begin_prepared(&fx, "big");
  if (!t)
    goto out;
  started = now_s();
  for (int i = 0; i < n_rows; i++) {
    uint8_t uuid[LIPSYNC_UUID_LEN];
    char name[32];
    lipsync_value v[3];
    snprintf(name, sizeof name, "name %d", i);
    v[0] = tu_text(name);
    v[1] = tu_int(i);
    v[2] = tu_real(i / 7.0);
    lipsync_uuid_generate(uuid);
    if (insert_row(fx.store, t, uuid, v, 3) != 0) {
      fprintf(stderr, "\n  %s\n", store_errmsg(fx.store));
      CU_FAIL("insert");
      break;
    }
  }
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  insert_s = now_s() - started;
  t = begin_prepared(&fx, "big");
  if (!t)
    goto out;
  rss_before = max_rss_kb();
  started = now_s();
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (c && store_next(fx.store, c, &row) == 1) {
    sum += row.values[1].u.integer;
    n++;
  }
  store_close_cursor(fx.store, c);
  scan_s = now_s() - started;
  CU_ASSERT_EQUAL(n, (size_t)n_rows);
  CU_ASSERT_EQUAL(sum, (int64_t)n_rows * (n_rows - 1) / 2);
  fprintf(stderr,
          "\n  %d rows: insert and commit %.2f s, full scan %.2f s"
          " (peak RSS grew %ld KiB during the scan) ",
          n_rows, insert_s, scan_s, max_rss_kb() - rss_before);
  for (int k = 0; k < 16; k++) {
    uint8_t lo[LIPSYNC_UUID_LEN] = {0}, hi[LIPSYNC_UUID_LEN] = {0};
    lo[0] = (uint8_t)(k * 16);
    hi[0] = (uint8_t)((k + 1) * 16);
    in_ranges += count_rows(fx.store, t, k ? lo : NULL, k < 15 ? hi : NULL);
  }
  CU_ASSERT_EQUAL(in_ranges, (size_t)n_rows);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Change capture                                                       */
/* ------------------------------------------------------------------ */

/* The clock of the item of |uuid| (text) in the item table of t. */
static long long clock_of(sfx *fx, const char *uuid) {
  char sql[200];
  snprintf(sql, sizeof sql,
           "SELECT clock FROM _lipsync_meta_t WHERE uuid = '%s'", uuid);
  return FX_INT(fx, sql, -1);
}

/* How many items of t |uuid| (text) has that meet |cond|. */
static long long item_count(sfx *fx, const char *uuid, const char *cond) {
  char sql[400];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM _lipsync_meta_t WHERE uuid = '%s' AND %s",
           uuid, cond);
  return FX_INT(fx, sql, -1);
}

/* Every INSERT, UPDATE and DELETE of another connection gets a new version
 * of this database in its own transaction; a write that changes no value
 * and a rolled-back one get none; a row's UUID cannot change. */
static void test_capture_other_connection(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_version now;
  lipsync_item it;
  uint8_t raw[LIPSYNC_UUID_LEN];
  char *uuid = NULL, *err, sql[200];
  long long c1, c2;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer, b text);"
                     "INSERT INTO t(a, b) VALUES (1, 'one');") ||
      !prepare_commit(&fx, "t"))
    goto out;

  /* INSERT without a UUID: the row gets one (version 4) and an item. */
  APP_EXEC(&fx, "INSERT INTO t(a, b) VALUES (2, 'two')");
  uuid = FX_TEXT(&fx, "SELECT _lipsync_uuid FROM t WHERE a = 2");
  if (!uuid || lipsync_uuid_parse(uuid, strlen(uuid), raw) != 0) {
    CU_FAIL("no UUID given");
    goto out;
  }
  CU_ASSERT_EQUAL(raw[6] >> 4, 4);
  CU_ASSERT_EQUAL(raw[8] >> 6, 2);
  c1 = clock_of(&fx, uuid);
  CU_ASSERT(c1 > 0);
  /* The clock follows the wall clock: ms << 16. */
  CU_ASSERT((c1 >> 16) > 1700000000000LL);
  CU_ASSERT_EQUAL(item_count(&fx, uuid,
                             "NOT deleted AND base_clock = 0 AND"
                             " base_site IS NULL"),
                  1);
  /* The version is this database's: its site is the one tick reports. */
  t = begin_on(fx.store, &fx, "t");
  if (t) {
    CU_ASSERT_EQUAL(store_tick(fx.store, &now), 0);
    CU_ASSERT(item_of(fx.store, t, raw, &it) &&
              memcmp(it.version.site, now.site, LIPSYNC_SITE_LEN) == 0);
  }
  store_rollback(fx.store);

  /* UPDATE that changes a value: a later version; one that changes
   * nothing: none. */
  APP_EXEC(&fx, "UPDATE t SET b = 'deux' WHERE a = 2");
  c2 = clock_of(&fx, uuid);
  CU_ASSERT(c2 > c1);
  APP_EXEC(&fx, "UPDATE t SET b = 'deux', a = 2 WHERE a = 2");
  CU_ASSERT_EQUAL(clock_of(&fx, uuid), c2);

  /* A rolled-back write leaves the item as it was. */
  APP_EXEC(&fx, "BEGIN; UPDATE t SET b = 'x' WHERE a = 2;"
                " DELETE FROM t WHERE a = 1; ROLLBACK");
  CU_ASSERT_EQUAL(clock_of(&fx, uuid), c2);

  /* The UUID cannot change. */
  err = EXEC_FAILS(&fx, true,
                   "UPDATE t SET _lipsync_uuid ="
                   " '00000000-0000-4000-8000-000000000000' WHERE a = 2");
  CU_ASSERT(err && contains(err, "the _lipsync_uuid of a row cannot change"));
  free(err);
  CU_ASSERT_EQUAL(clock_of(&fx, uuid), c2);

  /* DELETE: a tombstone with a later version. */
  APP_EXEC(&fx, "DELETE FROM t WHERE a = 2");
  c1 = clock_of(&fx, uuid);
  CU_ASSERT(c1 > c2);
  CU_ASSERT_EQUAL(item_count(&fx, uuid, "deleted"), 1);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM t", -1), 1);

  /* INSERT with the UUID of the tombstone: live again, later version. */
  snprintf(sql, sizeof sql,
           "INSERT INTO t(a, b, _lipsync_uuid) VALUES (3, 'three', '%s')",
           uuid);
  APP_EXEC(&fx, sql);
  CU_ASSERT(clock_of(&fx, uuid) > c1);
  CU_ASSERT_EQUAL(item_count(&fx, uuid, "NOT deleted"), 1);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t", -1), 2);
out:
  free(uuid);
  sfx_close(&fx);
}

/* Rows there when capture is installed get their initial versions: clock
 * 0 and, as site, the row digest. */
static void test_initial_versions(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_row row = {.nvalues = 0};
  size_t n = 0;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer, b text);"
                     "INSERT INTO t VALUES (1, 'x'), (2, NULL), (3, 'z');"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM _lipsync_meta_t WHERE"
                         " clock = 0 AND NOT deleted AND base_clock = 0",
                         -1),
                  3);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (c && store_next(fx.store, c, &row) == 1) {
    uint8_t digest[LIPSYNC_DIGEST_LEN];
    lipsync_item it;
    lipsync_row_digest(&row, digest);
    CU_ASSERT(row.version.clock == 0 &&
              memcmp(row.version.site, digest, LIPSYNC_DIGEST_LEN) == 0);
    CU_ASSERT(item_of(fx.store, t, row.uuid, &it) && it.version.clock == 0 &&
              memcmp(it.version.site, digest, LIPSYNC_DIGEST_LEN) == 0);
    n++;
  }
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* Reads the items of |t| and checks the version and deleted flag of the
 * item of each UUID that |want| names (UUID byte, clock, site byte,
 * deleted), with the base reported zero. Returns the number of items. */
typedef struct want_item {
  uint8_t uuid_byte;
  uint64_t clock;
  uint8_t site_byte;
  int deleted;
} want_item;

static size_t check_items(sfx *fx, lipsync_table *t, const want_item *want,
                          size_t nwant, int line) {
  lipsync_cursor *c = NULL;
  lipsync_item item;
  size_t n = 0, matched = 0;
  if (store_scan_items(fx->store, t, &c) != 0)
    return 0;
  while (store_next_item(fx->store, c, &item) == 1) {
    n++;
    for (size_t i = 0; i < nwant; i++) {
      if (item.uuid[0] != want[i].uuid_byte)
        continue;
      lipsync_version v = version_of(want[i].clock, want[i].site_byte);
      matched += lipsync_version_cmp(&item.version, &v) == 0 &&
                 !item.deleted == !want[i].deleted && item.base.clock == 0;
    }
  }
  store_close_cursor(fx->store, c);
  CU_assertImplementation(matched == nwant, (unsigned)line,
                          "items have the versions applied", __FILE__, "",
                          CU_FALSE);
  return n;
}

/* insert and update write the peer's rows with the peer's versions and
 * make none of their own; update writes a row only where a value
 * differs, deletes it for a tombstone, inserts it again after one. */
static void test_applied_rows_not_captured(void) {
  static const want_item inserted[] = {
      {0x11, 100, 0xA1, 0}, {0x22, 200, 0xA2, 0}, {0x33, 300, 0xA3, 1}};
  static const want_item updated[] = {
      {0x11, 102, 0xC1, 1}, {0x22, 201, 0xB2, 0}, {0x33, 301, 0xB3, 0}};
  sfx fx;
  lipsync_table *t;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN], u3[LIPSYNC_UUID_LEN];
  lipsync_value v1[2] = {tu_int(1), tu_text("one")};
  lipsync_value v2[2] = {tu_int(2), tu_text("two")};
  lipsync_value v2b[2] = {tu_int(2), tu_text("TWO")};
  uuid_fill(u1, 0x11);
  uuid_fill(u2, 0x22);
  uuid_fill(u3, 0x33);
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer, b text)") ||
      !prepare_commit(&fx, "t") || !FX_EXEC(&fx, fx.be->count_writes_sql))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u1, v1, 2, version_of(100, 0xA1), 0, false), 0);
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u2, v2, 2, version_of(200, 0xA2), 0, false), 0);
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u3, NULL, 0, version_of(300, 0xA3), 1, false), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM t", -1), 2);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM _lipsync_meta_t WHERE"
                         " clock IN (100, 200, 300)",
                         -1),
                  3);

  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(check_items(&fx, t, inserted, 3, __LINE__), 3);
  /* Equal values: no write; different: one; a tombstone deletes; a row
   * for a tombstone is inserted. */
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u1, v1, 2, version_of(101, 0xB1), 0, true), 0);
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u2, v2b, 2, version_of(201, 0xB2), 0, true), 0);
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u3, v1, 2, version_of(301, 0xB3), 0, true), 0);
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u1, NULL, 0, version_of(102, 0xC1), 1, true), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT updates FROM counts", -1), 1);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT inserts FROM counts", -1), 3);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM t WHERE b = 'TWO'", -1), 1);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM t", -1), 2);
  t = begin_prepared(&fx, "t");
  if (t)
    CU_ASSERT_EQUAL(check_items(&fx, t, updated, 3, __LINE__), 3);
  store_rollback(fx.store);
out:
  sfx_close(&fx);
}

/* update keeps the base that a sync as a client recorded: through equal
 * and different values, a tombstone, a second one, and a row again. */
static void test_update_keeps_base(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_item it;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_int(1), tu_text("abc")};
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer, b text)") ||
      !FX_EXEC(&fx, fx.be->count_writes_sql))
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
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT updates FROM counts", -1), 0);
  CU_ASSERT(item_of(fx.store, t, u, &it) && it.version.clock == 11 &&
            it.base.clock == 10 && !it.deleted);
  v[1] = tu_text("ABC");
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u, v, 2, version_of(12, 2), 0, true),
                  0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT updates FROM counts", -1), 1);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM t WHERE b = 'ABC'", -1), 1);
  /* A tombstone deletes the row and keeps the base. */
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u, NULL, 0, version_of(15, 3), 1, true), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM t", -1), 0);
  CU_ASSERT(item_of(fx.store, t, u, &it) && it.version.clock == 15 &&
            it.base.clock == 10 && it.deleted);
  /* A second tombstone for a row already gone is fine. */
  CU_ASSERT_EQUAL(
      apply_row(fx.store, t, u, NULL, 0, version_of(16, 3), 1, true), 0);
  /* Live again: the row is inserted. */
  v[1] = tu_text("back");
  CU_ASSERT_EQUAL(apply_row(fx.store, t, u, v, 2, version_of(17, 4), 0, true),
                  0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM t WHERE b = 'back' AND"
                         " _lipsync_uuid ="
                         " '33333333-3333-3333-3333-333333333333'",
                         -1),
                  1);
  CU_ASSERT(item_of(fx.store, t, u, &it) && it.version.clock == 17 &&
            !it.deleted);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT inserts FROM counts", -1), 2);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t", -1), 1);
out:
  sfx_close(&fx);
}

/* scan_items lists every item, tombstones included, with the versions
 * applied; bases are zero until a sync as a client, then the versions;
 * an item with a damaged site is an error, not a crash. */
static void test_scan_items(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_item item;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(5);
  int rc, live = 0, dead = 0, based = 0;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer)"))
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
  /* Items of a first load may wait somewhere: a scan sees them all. */
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
  /* Twice, so that whatever the first scan set up serves again. */
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
  /* A damaged item (a site of one byte) is an error, not a crash. */
  FX_EXEC(&fx, "UPDATE _lipsync_meta_t SET site = substr(site, 1, 1)"
               " WHERE clock = 1048576");
  CU_ASSERT_EQUAL(store_scan_items(fx.store, t, &c), 0);
  while (c && (rc = store_next_item(fx.store, c, &item)) == 1)
    ;
  CU_ASSERT_EQUAL(rc, LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store),
                     sfx_pick(&fx, "16 bytes", "a malformed item")));
  store_close_cursor(fx.store, c);
  store_rollback(fx.store);
out:
  sfx_close(&fx);
}

/* finish_table: as a server, tombstones below the horizon go, the clock
 * observes the highest clock received and never goes back, and bases stay;
 * as a client, every base becomes its version and last_sync is kept. */
static void test_finish_table(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_version now;
  lipsync_cursor *c = NULL;
  lipsync_item item;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(1);
  uint64_t far = (uint64_t)1 << 60;
  int zero_bases = 0;
  char sql[200];
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer); INSERT INTO t VALUES (0)"))
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
  /* As a server: the tombstone of clock 100 goes, 200 stays. */
  CU_ASSERT_EQUAL(
      store_finish_table(fx.store, t,
                         &(lipsync_finish){.max_clock = far, .horizon = 150}),
      0);
  CU_ASSERT_EQUAL(store_tick(fx.store, &now), 0);
  CU_ASSERT(now.clock > far);
  CU_ASSERT_EQUAL(
      store_finish_table(fx.store, t, &(lipsync_finish){.max_clock = 5}), 0);
  CU_ASSERT_EQUAL(store_tick(fx.store, &now), 0);
  CU_ASSERT(now.clock > far);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t", -1), 4);
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t WHERE deleted", -1), 1);

  /* Bases stay as they were: zero in a table never synced as a client. */
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_scan_items(fx.store, t, &c), 0);
  while (c && store_next_item(fx.store, c, &item) == 1)
    zero_bases += item.base.clock == 0;
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(zero_bases, 4);
  /* As a client: base := version for every item, last_sync recorded. */
  CU_ASSERT_EQUAL(
      store_finish_table(
          fx.store, t,
          &(lipsync_finish){.horizon = 0, .as_client = 1, .server_clock = 777}),
      0);
  CU_ASSERT_EQUAL(t->last_sync, 777);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM _lipsync_meta_t WHERE"
                         " base_clock = clock AND base_site = site",
                         -1),
                  4);
  /* A later local write ticks past the observed clock. */
  APP_EXEC(&fx, "UPDATE t SET a = 2 WHERE a = 0");
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM _lipsync_meta_t m JOIN t ON"
           " m.uuid = t._lipsync_uuid WHERE t.a = 2 AND m.clock > %lld",
           (long long)far);
  CU_ASSERT_EQUAL(FX_INT(&fx, sql, -1), 1);
  /* Purging every tombstone: a huge horizon. */
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->last_sync, 777);
  /* A session lists the tombstones below its horizon before it finishes
   * (PostgreSQL purges, after the commit, only what such a scan found). */
  CU_ASSERT_EQUAL(store_scan_tombstones(fx.store, t, UINT64_MAX, &c), 0);
  while (c && store_next_item(fx.store, c, &item) == 1)
    CU_ASSERT(item.deleted);
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(
      store_finish_table(fx.store, t, &(lipsync_finish){.horizon = UINT64_MAX}),
      0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t WHERE deleted", -1), 0);
out:
  sfx_close(&fx);
}

/* tick: a version later than the wall clock, not moving back, with this
 * database's site, random and kept; it works in a database with no
 * table prepared, outside any transaction. */
static void test_tick(void) {
  static const uint8_t zero[LIPSYNC_SITE_LEN];
  sfx fx;
  lipsync_version a, b;
  if (!SFX_OPEN(&fx, NULL))
    goto out;
  CU_ASSERT_EQUAL(store_tick(fx.store, &a), 0);
  CU_ASSERT((a.clock >> 16) > 1700000000000ULL);
  for (int i = 0; i < 100; i++) {
    CU_ASSERT_EQUAL(store_tick(fx.store, &b), 0);
    CU_ASSERT(b.clock >= a.clock);
    CU_ASSERT_EQUAL(memcmp(a.site, b.site, LIPSYNC_SITE_LEN), 0);
    a = b;
  }
  CU_ASSERT_NOT_EQUAL(memcmp(a.site, zero, LIPSYNC_SITE_LEN), 0);
out:
  sfx_close(&fx);
}

/* The tables of change capture are neither listed nor opened; a column
 * added later is compared by capture once prepare has run again. */
static void test_capture_schema(void) {
  sfx fx;
  lipsync_table *t = NULL;
  const char *const *names;
  size_t n;
  int mine = 0;
  long long c;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer); INSERT INTO t VALUES (1)") ||
      !prepare_commit(&fx, "t"))
    goto out;
  CU_ASSERT_EQUAL(store_list_tables(fx.store, &names, &n), 0);
  for (size_t i = 0; i < n; i++) {
    CU_ASSERT(strstr(names[i], "_lipsync") == NULL);
    if (fx.be->owns(&fx, names[i])) {
      mine++;
      CU_ASSERT_STRING_EQUAL(names[i], sfx_name(&fx, "t"));
    }
  }
  CU_ASSERT_EQUAL(mine, 1);
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, sfx_name(&fx, "_lipsync_meta_t"), &t),
      LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);

  FX_EXEC(&fx, "ALTER TABLE t ADD COLUMN b text");
  if (!prepare_commit(&fx, "t"))
    goto out;
  c = FX_INT(&fx, "SELECT clock FROM _lipsync_meta_t", -1);
  APP_EXEC(&fx, "UPDATE t SET b = 'new'");
  CU_ASSERT(FX_INT(&fx, "SELECT clock FROM _lipsync_meta_t", -1) > c);
out:
  sfx_close(&fx);
}

/* Rows changed with capture off, then distrust: the next prepare repairs
 * the items. Every row has a live item again, and the item of the row
 * deleted is a tombstone with a new version. */
static void test_distrust_repairs(void) {
  sfx fx;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer, b text);"
                     "INSERT INTO t VALUES (1, 'x'), (2, NULL)") ||
      !prepare_commit(&fx, "t"))
    goto out;
  APP_EXEC(&fx, "INSERT INTO t(a) VALUES (3)");
  UNCAPTURED(&fx, "DELETE FROM t WHERE a = 1; INSERT INTO t(a) VALUES (4);"
                  " INSERT INTO t(a) VALUES (5)");
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t", -1), 3);
  CU_ASSERT_EQUAL(store_distrust(fx.store, sfx_name(&fx, "t")), 0);
  if (!prepare_commit(&fx, "t"))
    goto out;
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM t LEFT JOIN _lipsync_meta_t m"
                         " ON m.uuid = t._lipsync_uuid WHERE m.uuid IS NULL"
                         " OR m.deleted",
                         -1),
                  0);
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t WHERE NOT deleted", -1),
      4);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM _lipsync_meta_t WHERE"
                         " deleted AND clock > 0",
                         -1),
                  1);
out:
  sfx_close(&fx);
}

/* The sum and count of the items of |table|, in a session of its own. */
static bool summary_of(sfx *fx, const char *table, lipsync_summary *out) {
  lipsync_table *t = begin_prepared(fx, table);
  bool ok = t && sum_items(fx->store, t, out) == 0;
  CU_ASSERT(ok);
  CU_ASSERT_EQUAL(store_rollback(fx->store), 0);
  return ok;
}

/* drop_capture of one table: its capture goes, the other table's stays,
 * the rows keep their UUIDs, and capture installed again gives each row
 * of unchanged contents the item it had. A name that is no table (or a
 * table of LipSync's) fails and changes nothing; the metadata of a table
 * since dropped can still be removed. */
static void test_drop_capture(void) {
  sfx fx;
  lipsync_summary before, after;
  const char *names[2];
  uint8_t u1[LIPSYNC_UUID_LEN], again[LIPSYNC_UUID_LEN];
  long long c;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a integer, b text);"
                     " INSERT INTO t VALUES (1, 'x'), (2, 'y');"
                     " CREATE TABLE u(a integer); INSERT INTO u VALUES (7)") ||
      !prepare_commit(&fx, "t") || !prepare_commit(&fx, "u") ||
      !summary_of(&fx, "t", &before) || !uuid_of(&fx, 1, u1))
    goto out;
  names[0] = sfx_name(&fx, "t");
  names[1] = sfx_name(&fx, "nosuch");
  CU_ASSERT_EQUAL(lipsync_store_drop_capture(fx.store, names, 2, NULL, 0),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT(contains(lipsync_store_errmsg(fx.store), "no table"));
  names[1] = sfx_name(&fx, "_lipsync_meta_t");
  CU_ASSERT_EQUAL(lipsync_store_drop_capture(fx.store, names, 2, NULL, 0),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t", -1), 2);
  CU_ASSERT_EQUAL(fx.be->registry(&fx, "t", "1 = 1"), 1);

  CU_ASSERT_EQUAL(lipsync_store_drop_capture(fx.store, names, 1, NULL, 0), 1);
  free(EXEC_FAILS(&fx, false, "SELECT count(*) FROM _lipsync_meta_t"));
  CU_ASSERT_EQUAL(fx.be->registry(&fx, "t", "1 = 1"), 0);
  CU_ASSERT_EQUAL(fx.be->registry(&fx, "u", "1 = 1"), 1);
  c = FX_INT(&fx, "SELECT max(clock) FROM _lipsync_meta_u", -1);
  APP_EXEC(&fx, "UPDATE t SET b = 'z' WHERE a = 2");
  APP_EXEC(&fx, "UPDATE u SET a = 8");
  CU_ASSERT(FX_INT(&fx, "SELECT max(clock) FROM _lipsync_meta_u", -1) > c);
  CU_ASSERT(uuid_of(&fx, 1, again) && memcmp(u1, again, sizeof u1) == 0);
  /* Nothing left to remove: no error, none removed. */
  CU_ASSERT_EQUAL(lipsync_store_drop_capture(fx.store, names, 1, NULL, 0), 0);

  /* Row 2 back to what it was: every item as before. */
  APP_EXEC(&fx, "UPDATE t SET b = 'y' WHERE a = 2");
  if (!prepare_commit(&fx, "t") || !summary_of(&fx, "t", &after))
    goto out;
  CU_ASSERT_EQUAL(after.count, 2);
  CU_ASSERT(after.count == before.count &&
            memcmp(after.sum, before.sum, sizeof after.sum) == 0);

  FX_EXEC(&fx, "DROP TABLE u");
  names[0] = sfx_name(&fx, "u");
  CU_ASSERT_EQUAL(lipsync_store_drop_capture(fx.store, names, 1, NULL, 0), 1);
  free(EXEC_FAILS(&fx, false, "SELECT count(*) FROM _lipsync_meta_u"));
  CU_ASSERT_EQUAL(fx.be->registry(&fx, "u", "1 = 1"), 0);
  CU_ASSERT_EQUAL(lipsync_store_drop_capture(fx.store, names, 1, NULL, 0),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT(FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t", -1) == 2);
out:
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Incremental reconciliation (spec 8.8)                                */
/* ------------------------------------------------------------------ */

/* Table t(a) with rows 1..|n| and capture installed. */
static bool captured(sfx *fx, int n) {
  char sql[300];
  snprintf(sql, sizeof sql,
           "CREATE TABLE t(a integer, b text); WITH RECURSIVE n(i) AS"
           " (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
           " INSERT INTO t SELECT i, 'x' FROM n",
           n);
  return SFX_OPEN(fx, sql) && prepare_commit(fx, "t");
}

/* Rows read carry their live item's version and a zero base, in UUID
 * order. */
static void test_rows_carry_versions(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_row row;
  uint8_t prev[LIPSYNC_UUID_LEN] = {0}, u[LIPSYNC_UUID_LEN];
  size_t n = 0;
  if (!captured(&fx, 300))
    goto out;
  APP_EXEC(&fx, "UPDATE t SET a = -a WHERE a <= 10");
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (c && store_next(fx.store, c, &row) == 1) {
    lipsync_item it;
    if (n)
      CU_ASSERT(memcmp(prev, row.uuid, LIPSYNC_UUID_LEN) < 0);
    memcpy(prev, row.uuid, LIPSYNC_UUID_LEN);
    memcpy(u, row.uuid, LIPSYNC_UUID_LEN);
    lipsync_version v = row.version;
    int64_t a = row.values[0].u.integer;
    /* Changed rows have a tick, the others their initial version. */
    CU_ASSERT(a < 0 ? v.clock >> 16 > 1700000000000ull : v.clock == 0);
    CU_ASSERT_EQUAL(row.deleted, 0);
    CU_ASSERT_EQUAL(row.base.clock, 0); /* never synced as a client */
    CU_ASSERT(item_of(fx.store, t, u, &it) &&
              lipsync_version_cmp(&it.version, &v) == 0);
    n++;
  }
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(n, 300);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u, &row), 0);
  CU_ASSERT(row.version.clock == 0 ||
            row.version.clock >> 16 > 1700000000000ull);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* Change positions: the changes made by capture and by applied rows, each
 * listed once in UUID order since a position that does not cover it; a
 * position the database cannot read as its own is NOT_FOUND. */
static void test_positions_and_changes(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_cursor *cur = NULL;
  lipsync_position p1, p2, bad;
  uint8_t a[LIPSYNC_UUID_LEN], b[LIPSYNC_UUID_LEN], c[LIPSYNC_UUID_LEN];
  uint8_t d[LIPSYNC_UUID_LEN], got[16][LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_int(4), tu_null()};
  int n;
  if (!captured(&fx, 2))
    goto out;
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_position(fx.store, t, &p1), 0);
  CU_ASSERT(p1.len > 1 + LIPSYNC_SITE_LEN && p1.len <= LIPSYNC_POSITION_MAX);
  /* Nothing changed since the snapshot's own position. */
  CU_ASSERT_EQUAL(changes_since(fx.store, t, &p1, got, 16), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  APP_EXEC(&fx, "UPDATE t SET a = 10 WHERE a = 1; DELETE FROM t WHERE a = 2;"
                " INSERT INTO t(a) VALUES (3)");
  if (!uuid_of(&fx, 10, a) || !uuid_of(&fx, 3, c))
    goto out;
  char *bt = FX_TEXT(&fx, "SELECT uuid FROM _lipsync_meta_t WHERE deleted");
  CU_ASSERT(bt && lipsync_uuid_parse(bt, strlen(bt), b) == 0);
  free(bt);
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  n = changes_since(fx.store, t, &p1, got, 16);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT(has_uuid(got, n, a) && has_uuid(got, n, b) && has_uuid(got, n, c));
  /* A row applied by this session is covered by its own position. */
  uuid_fill(d, 0xDD);
  lipsync_row row = applied(d, v, 2, version_of(77, 7), 0, NULL);
  CU_ASSERT_EQUAL(store_insert(fx.store, t, &row), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_position(fx.store, t, &p2), 0);
  /* PostgreSQL reads the position of the transaction in progress; SQLite
   * only once it has committed (its sequence number moves at commit). */
  if (sfx_is(&fx, "pg")) {
    CU_ASSERT_EQUAL(changes_since(fx.store, t, &p2, got, 16), 0);
  } else {
    CU_ASSERT_EQUAL(store_scan_changes(fx.store, t, &p2, &cur),
                    LIPSYNC_ERR_NOT_FOUND);
  }
  CU_ASSERT_EQUAL(
      store_finish_table(fx.store, t, &(lipsync_finish){.max_clock = 77}), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(changes_since(fx.store, t, &p2, got, 16), 0);
  n = changes_since(fx.store, t, &p1, got, 16);
  CU_ASSERT_EQUAL(n, 4);
  CU_ASSERT(has_uuid(got, n, d));
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  APP_EXEC(&fx, "UPDATE t SET a = 30 WHERE a = 3");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  n = changes_since(fx.store, t, &p2, got, 16);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT(n == 1 && memcmp(got[0], c, LIPSYNC_UUID_LEN) == 0);

  /* Malformed, or another database's. */
  bad = p2;
  bad.len = 3;
  CU_ASSERT_EQUAL(store_scan_changes(fx.store, t, &bad, &cur),
                  LIPSYNC_ERR_NOT_FOUND);
  CU_ASSERT_PTR_NULL(cur);
  bad = p2;
  bad.data[1] ^= 1;
  CU_ASSERT_EQUAL(store_scan_changes(fx.store, t, &bad, &cur),
                  LIPSYNC_ERR_NOT_FOUND);
  CU_ASSERT(
      contains(store_errmsg(fx.store), "not a position of this database"));
  bad = p2;
  bad.data[bad.len++] = 0;
  CU_ASSERT_EQUAL(store_scan_changes(fx.store, t, &bad, &cur),
                  LIPSYNC_ERR_NOT_FOUND);
  /* Not an error of the transaction. */
  CU_ASSERT_EQUAL(changes_since(fx.store, t, &p2, got, 16), 1);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* A transaction in progress when a position is taken, which commits
 * later, is not covered: its change is listed since that position. */
static void test_position_and_concurrent_commit(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_position p;
  uint8_t u[LIPSYNC_UUID_LEN], got[4][LIPSYNC_UUID_LEN];
  if (!captured(&fx, 2) || !uuid_of(&fx, 1, u))
    goto out;
  APP_EXEC(&fx, "BEGIN; UPDATE t SET a = 11 WHERE a = 1");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_position(fx.store, t, &p), 0);
  CU_ASSERT_EQUAL(changes_since(fx.store, t, &p, got, 4), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  APP_EXEC(&fx, "COMMIT");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  int n = changes_since(fx.store, t, &p, got, 4);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT(n == 1 && memcmp(got[0], u, LIPSYNC_UUID_LEN) == 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* A recount finds a row changed with capture off and gives it a new
 * version; so does the prepare that follows a distrust, which also drops
 * the checkpoint. The kept summary stays the sum of the items. */
static void test_recount(void) {
  sfx fx;
  char sql[200];
  lipsync_table *t;
  lipsync_item it1, it2, now1, now2;
  lipsync_checkpoint ck;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN];
  if (!captured(&fx, 30) || !uuid_of(&fx, 1, u1) || !uuid_of(&fx, 2, u2))
    goto out;
  /* The first recount records every row's digest. */
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_recount(fx.store, t), 0);
  CU_ASSERT(item_of(fx.store, t, u1, &it1) && item_of(fx.store, t, u2, &it2));
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  /* SQLite need not record it where the initial version's site is it. */
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM _lipsync_meta_t WHERE length(%s) = 16",
           sfx_pick(&fx, "coalesce(rowdig, CASE WHEN clock = 0 THEN site END)",
                    "rowdig"));
  CU_ASSERT_EQUAL(FX_INT(&fx, sql, -1), 30);
  UNCAPTURED(&fx, "UPDATE t SET b = 'changed' WHERE a = 1");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT(item_of(fx.store, t, u1, &now1));
  CU_ASSERT_EQUAL(lipsync_version_cmp(&now1.version, &it1.version), 0);
  CU_ASSERT_EQUAL(store_recount(fx.store, t), 0);
  CU_ASSERT(item_of(fx.store, t, u1, &now1) && item_of(fx.store, t, u2, &now2));
  CU_ASSERT(lipsync_version_cmp(&now1.version, &it1.version) > 0);
  CU_ASSERT(now1.version.clock >> 16 > 1700000000000ull);
  CU_ASSERT_EQUAL(lipsync_version_cmp(&now2.version, &it2.version), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CHECK_SUMMARY(&fx, "t");

  /* A client's checkpoint, then a failed verification. */
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  lipsync_checkpoint mine = {.has = 1};
  memset(mine.server_site, 1, LIPSYNC_SITE_LEN);
  memset(mine.token, 2, LIPSYNC_SITE_LEN);
  mine.server_position.len = 3;
  CU_ASSERT_EQUAL(store_position(fx.store, t, &mine.client_position), 0);
  lipsync_finish f = {.as_client = 1, .server_clock = 99, .checkpoint = &mine};
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t, &f), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  t = begin_on(fx.store, &fx, "t");
  if (t) {
    CU_ASSERT_EQUAL(store_load_checkpoint(fx.store, t, &ck), 0);
    CU_ASSERT(ck.has);
  }
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  UNCAPTURED(&fx, "UPDATE t SET b = 'again' WHERE a = 2");
  CU_ASSERT_EQUAL(store_distrust(fx.store, sfx_name(&fx, "t")), 0);
  CU_ASSERT_EQUAL(fx.be->registry(&fx, "t", "recount AND ck_token IS NULL"), 1);
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT(item_of(fx.store, t, u2, &now2));
  CU_ASSERT(lipsync_version_cmp(&now2.version, &it2.version) > 0);
  CU_ASSERT_EQUAL(store_load_checkpoint(fx.store, t, &ck), 0);
  CU_ASSERT(!ck.has);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(fx.be->registry(&fx, "t", "recount"), 0);
  CHECK_SUMMARY(&fx, "t");
  /* Nothing to distrust: no error. */
  CU_ASSERT_EQUAL(store_distrust(fx.store, sfx_name(&fx, "no_such_table")), 0);
out:
  sfx_close(&fx);
}

/* What finish_table keeps: the client's checkpoint and position, the
 * server's tokens, and bases only for the items the session covers. */
static void test_checkpoints_and_tokens(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_checkpoint ck, got;
  lipsync_item it;
  lipsync_row row;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN];
  uint8_t client[LIPSYNC_SITE_LEN], other[LIPSYNC_SITE_LEN];
  uint8_t token[LIPSYNC_SITE_LEN], seen[LIPSYNC_SITE_LEN];
  int found;
  if (!captured(&fx, 2) || !uuid_of(&fx, 1, u1) || !uuid_of(&fx, 2, u2))
    goto out;
  /* As a client. */
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_load_checkpoint(fx.store, t, &got), 0);
  CU_ASSERT(!got.has);
  memset(&ck, 0, sizeof ck);
  ck.has = 1;
  memset(ck.server_site, 0x51, LIPSYNC_SITE_LEN);
  memset(ck.token, 0x52, LIPSYNC_SITE_LEN);
  ck.server_position.len = 40;
  memset(ck.server_position.data, 0x53, 40);
  CU_ASSERT_EQUAL(store_position(fx.store, t, &ck.client_position), 0);
  lipsync_finish f = {.as_client = 1, .server_clock = 1234, .checkpoint = &ck};
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t, &f), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM _lipsync_meta_t WHERE"
                         " base_clock = clock AND base_site = site",
                         -1),
                  2);
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->last_sync, 1234);
  CU_ASSERT_EQUAL(store_load_checkpoint(fx.store, t, &got), 0);
  CU_ASSERT(got.has);
  CU_ASSERT(memcmp(got.server_site, ck.server_site, LIPSYNC_SITE_LEN) == 0 &&
            memcmp(got.token, ck.token, LIPSYNC_SITE_LEN) == 0);
  CU_ASSERT(got.server_position.len == 40 &&
            memcmp(got.server_position.data, ck.server_position.data, 40) == 0);
  CU_ASSERT(got.client_position.len == ck.client_position.len &&
            memcmp(got.client_position.data, ck.client_position.data,
                   ck.client_position.len) == 0);
  /* Rows read now report bases. */
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u1, &row), 0);
  CU_ASSERT_EQUAL(lipsync_version_cmp(&row.base, &row.version), 0);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);

  /* A local change is dirty until the next session covers it; one made
   * while that session runs stays dirty. */
  APP_EXEC(&fx, "UPDATE t SET a = 10 WHERE a = 1");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_position(fx.store, t, &ck.client_position), 0);
  /* The session reads, as every session does before it writes. */
  CU_ASSERT(item_of(fx.store, t, u1, &it));
  APP_EXEC(&fx, "UPDATE t SET a = 20 WHERE a = 2");
  f.server_clock = 1235;
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t, &f), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT(item_of(fx.store, t, u1, &it) &&
            lipsync_version_cmp(&it.base, &it.version) == 0);
  CU_ASSERT(item_of(fx.store, t, u2, &it) &&
            lipsync_version_cmp(&it.base, &it.version) != 0);
  /* Without a checkpoint, the registry keeps the position alone. */
  f.checkpoint = NULL;
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t, &f), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  t = begin_on(fx.store, &fx, "t");
  if (t) {
    CU_ASSERT_EQUAL(store_load_checkpoint(fx.store, t, &got), 0);
    CU_ASSERT(!got.has);
    CU_ASSERT(item_of(fx.store, t, u2, &it) &&
              lipsync_version_cmp(&it.base, &it.version) == 0);
  }
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  /* As a server: a token per client database and table. */
  memset(client, 0x61, sizeof client);
  memset(other, 0x62, sizeof other);
  memset(token, 0x63, sizeof token);
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_load_token(fx.store, t, client, seen, &found), 0);
  CU_ASSERT(!found);
  lipsync_finish g = {.client_site = client, .new_token = token};
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t, &g), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_load_token(fx.store, t, client, seen, &found), 0);
  CU_ASSERT(found && memcmp(seen, token, LIPSYNC_SITE_LEN) == 0);
  CU_ASSERT_EQUAL(store_load_token(fx.store, t, other, seen, &found), 0);
  CU_ASSERT(!found);
  token[0] = 0x64;
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t, &g), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  /* The new token replaces the old one. */
  t = begin_on(fx.store, &fx, "t");
  if (t) {
    CU_ASSERT_EQUAL(store_load_token(fx.store, t, client, seen, &found), 0);
    CU_ASSERT(found && memcmp(seen, token, LIPSYNC_SITE_LEN) == 0);
  }
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

const tu_test store_common_tests[] = {
    {"open unknown table", test_open_unknown_table},
    {"describe columns", test_describe_columns},
    {"generated columns are skipped", test_generated_column_skipped},
    {"quoted names", test_quoted_names},
    {"prepare adds UUIDs, rollback undoes",
     test_prepare_adds_uuids_and_rollback_undoes},
    {"prepare keeps UUIDs and index", test_prepare_keeps_uuids_and_index},
    {"prepare refuses duplicate UUIDs", test_prepare_refuses_duplicate_uuids},
    {"scan ranges", test_scan_ranges},
    {"cursors interleave", test_scan_cursors_interleave},
    {"scan in batches", test_scan_batches},
    {"lookups by UUID in one batch", test_scan_uuids},
    {"fetch", test_fetch},
    {"scan before prepare", test_scan_before_prepare_fails_cleanly},
    {"prepare while reading another table",
     test_prepare_while_reading_another_table},
    {"rollback undoes inserts", test_rollback_undoes_inserts},
    {"begin inside caller's transaction",
     test_begin_inside_callers_transaction},
    {"commit persists", test_commit_persists},
    {"many rows", test_many_rows},
    {"capture from another connection", test_capture_other_connection},
    {"initial versions", test_initial_versions},
    {"applied rows are not captured", test_applied_rows_not_captured},
    {"update keeps the base", test_update_keeps_base},
    {"scan items", test_scan_items},
    {"finish table", test_finish_table},
    {"tick", test_tick},
    {"capture schema", test_capture_schema},
    {"distrust repairs", test_distrust_repairs},
    {"drop capture", test_drop_capture},
    {"rows carry versions, in UUID order", test_rows_carry_versions},
    {"positions and changes", test_positions_and_changes},
    {"position and a concurrent commit", test_position_and_concurrent_commit},
    {"recount", test_recount},
    {"checkpoints and tokens", test_checkpoints_and_tokens},
    {NULL, NULL},
};
