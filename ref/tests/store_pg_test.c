/*
 * store_pg_test.c: the PostgreSQL backend (store_pg.c) against a live
 * server, and the canonical forms of PostgreSQL values (pg_types.c), alone
 * and checked against what the server itself accepts and prints. Here are
 * its fixture, which runs the tests every backend shares
 * (store_common_test.c) as the suite "store/pg/shared", and the tests only
 * PostgreSQL has: its types, schemas, partitions, COPY, locks and
 * concurrent sessions, positions made of transaction ids, the delta rows
 * of its kept summaries, copies and older layouts of a database.
 *
 * The server is the one LIPSYNC_PG_CONNINFO names (make check starts a
 * throwaway one). Without it every server test fails: CI always has one.
 * Each fixture works in a schema of its own, dropped at the end, so tests
 * can share a database; its connections find the schema's tables by their
 * plain names (search_path).
 */
#include "canon.h"
#include "pg_types.h"
#include "store_fixture.h"
#include "store_pg_int.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONNINFO_ENV "LIPSYNC_PG_CONNINFO"

/* ------------------------------------------------------------------ */
/* Connections                                                          */
/* ------------------------------------------------------------------ */

static void record_failure(const char *msg, const char *file, int line) {
  CU_assertImplementation(CU_FALSE, (unsigned)line, msg, file, "", CU_FALSE);
}

static void quiet_notice(void *arg, const char *message) {}

/* A new connection to the test server, or NULL with a failure recorded. */
#define PG_CONNECT() pg_connect_at(__FILE__, __LINE__)
static PGconn *pg_connect_at(const char *file, int line) {
  const char *conninfo = getenv(CONNINFO_ENV);
  char msg[600];
  PGconn *conn;
  if (!conninfo || !*conninfo) {
    record_failure(CONNINFO_ENV " is not set: the PostgreSQL tests need a "
                                "server (make check starts one)",
                   file, line);
    return NULL;
  }
  conn = PQconnectdb(conninfo);
  if (PQstatus(conn) != CONNECTION_OK) {
    snprintf(msg, sizeof msg, "cannot connect to %s: %s", conninfo,
             PQerrorMessage(conn));
    record_failure(msg, file, line);
    PQfinish(conn);
    return NULL;
  }
  PQsetNoticeProcessor(conn, quiet_notice, NULL);
  return conn;
}

/* Runs |sql| on |conn|: NULL if it succeeded, else the error (malloc'd);
 * with |value|, the first column of the first row of the last statement
 * (malloc'd), NULL if none. */
static char *pg_run_on(PGconn *conn, const char *sql, char **value) {
  PGresult *r = PQexec(conn, sql);
  ExecStatusType st = PQresultStatus(r);
  char *err = NULL;
  if (value)
    *value = NULL;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    err = strdup(PQerrorMessage(conn));
  else if (value && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
    *value = strdup(PQgetvalue(r, 0, 0));
  PQclear(r);
  return err;
}

/* Runs |sql| (any number of statements), recording a failure on error. */
#define PG_EXEC(conn, sql) pg_exec_at((conn), (sql), __FILE__, __LINE__)
static bool pg_exec_at(PGconn *conn, const char *sql, const char *file,
                       int line) {
  char *err = pg_run_on(conn, sql, NULL), msg[1200];
  if (!err)
    return true;
  snprintf(msg, sizeof msg, "SQL failed: %.600s: %s", sql, err);
  record_failure(msg, file, line);
  free(err);
  return false;
}

/* The first column of the first row of |sql|: as text, malloc'd (NULL if
 * there is none or it is NULL), or as an integer (|dflt| then). */
#define PG_TEXT(conn, sql) pg_text_at((conn), (sql), __FILE__, __LINE__)
static char *pg_text_at(PGconn *conn, const char *sql, const char *file,
                        int line) {
  char *v = NULL, *err = pg_run_on(conn, sql, &v), msg[1200];
  if (err) {
    snprintf(msg, sizeof msg, "SQL failed: %.600s: %s", sql, err);
    record_failure(msg, file, line);
    free(err);
  }
  return v;
}

#define PG_INT(conn, sql, dflt)                                                \
  pg_int_at((conn), (sql), (dflt), __FILE__, __LINE__)
static long long pg_int_at(PGconn *conn, const char *sql, long long dflt,
                           const char *file, int line) {
  char *text = pg_text_at(conn, sql, file, line);
  long long v = text ? strtoll(text, NULL, 10) : dflt;
  free(text);
  return v;
}

/* ------------------------------------------------------------------ */
/* The fixture                                                          */
/* ------------------------------------------------------------------ */

static unsigned schema_seq;
/* The schema the next fixture uses, if not one of its own making. */
static const char *next_schema;

/* A connection whose plain names are the fixture's schema's. */
static PGconn *pg_connect_fixture(sfx *fx, const char *file, int line) {
  char sql[300];
  PGconn *conn = pg_connect_at(file, line);
  snprintf(sql, sizeof sql, "SET search_path = %s", fx->qschema);
  if (conn && !pg_exec_at(conn, sql, file, line)) {
    PQfinish(conn);
    return NULL;
  }
  return conn;
}

static bool pg_open(sfx *fx, const char *file, int line) {
  if (next_schema)
    snprintf(fx->schema, sizeof fx->schema, "%s", next_schema);
  else
    snprintf(fx->schema, sizeof fx->schema, "lipsync_test_%ld_%u",
             (long)getpid(), ++schema_seq);
  next_schema = NULL;
  fx->conn = pg_connect_at(file, line);
  if (!fx->conn)
    return false;
  char *q = PQescapeIdentifier(fx->conn, fx->schema, strlen(fx->schema));
  if (!q)
    return false;
  snprintf(fx->qschema, sizeof fx->qschema, "%s", q);
  PQfreemem(q);
  return sfx_exec_at(fx, false,
                     "DROP SCHEMA IF EXISTS {S} CASCADE; CREATE SCHEMA {S};"
                     " SET search_path = {S}",
                     file, line);
}

static bool pg_wrap(sfx *fx, const char *file, int line) {
  CU_ASSERT_EQUAL(lipsync_store_pg_wrap(&fx->store, fx->conn), 0);
  return fx->store != NULL;
}

static void pg_close(sfx *fx) {
  lipsync_store_free(fx->store);
  fx->store = NULL;
  PQfinish(fx->app_conn);
  fx->app_conn = NULL;
  if (!fx->conn)
    return;
  if (PQtransactionStatus(fx->conn) != PQTRANS_IDLE)
    PQclear(PQexec(fx->conn, "ROLLBACK"));
  if (fx->qschema[0])
    FX_EXEC(fx, "DROP SCHEMA IF EXISTS {S} CASCADE");
  PQfinish(fx->conn);
  fx->conn = NULL;
}

static void pg_table_name(const sfx *fx, const char *table, char *out,
                          size_t outlen) {
  snprintf(out, outlen, "%s.%s", fx->schema, table);
}

static bool pg_owns(const sfx *fx, const char *name) {
  size_t n = strlen(fx->schema);
  return strncmp(name, fx->schema, n) == 0 && name[n] == '.';
}

/* The application's connection, opened on first use. */
static PGconn *pg_app(sfx *fx) {
  if (!fx->app_conn)
    fx->app_conn = pg_connect_fixture(fx, __FILE__, __LINE__);
  return fx->app_conn;
}

static char *pg_run(sfx *fx, bool app, const char *sql, char **value) {
  PGconn *conn = app ? pg_app(fx) : fx->conn;
  if (!conn) {
    if (value)
      *value = NULL;
    return strdup("no connection");
  }
  return pg_run_on(conn, sql, value);
}

/* |text| as an SQL literal, into |out|. */
static void literal(sfx *fx, const char *text, char *out, size_t outlen) {
  char *lit = PQescapeLiteral(fx->conn, text, strlen(text));
  snprintf(out, outlen, "%s", lit ? lit : "NULL");
  PQfreemem(lit);
}

/* The fixture's |table|, qualified and quoted, as an SQL literal (for
 * to_regclass), into |out|. */
static void rel_literal(sfx *fx, const char *table, char *out, size_t outlen) {
  char rel[600];
  char *q = PQescapeIdentifier(fx->conn, table, strlen(table));
  snprintf(rel, sizeof rel, "%s.%s", fx->qschema, q ? q : "");
  PQfreemem(q);
  literal(fx, rel, out, outlen);
}

static long long pg_index_count(sfx *fx, const char *table) {
  char rel[700], sql[900];
  rel_literal(fx, table, rel, sizeof rel);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM pg_index WHERE indrelid = to_regclass(%s)",
           rel);
  return PG_INT(fx->conn, sql, -1);
}

static bool pg_unique_index(sfx *fx, const char *table, const char *index) {
  char rel[700], name[300], sql[1200];
  rel_literal(fx, table, rel, sizeof rel);
  literal(fx, index, name, sizeof name);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid ="
           " i.indexrelid WHERE i.indrelid = to_regclass(%s) AND"
           " i.indisunique AND c.relname = %s",
           rel, name);
  return PG_INT(fx->conn, sql, -1) == 1;
}

static char *pg_column_type(sfx *fx, const char *table, const char *column) {
  char rel[700], col[300], sql[1200];
  rel_literal(fx, table, rel, sizeof rel);
  literal(fx, column, col, sizeof col);
  snprintf(sql, sizeof sql,
           "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE"
           " attrelid = to_regclass(%s) AND attname = %s AND NOT"
           " attisdropped",
           rel, col);
  return PG_TEXT(fx->conn, sql);
}

static long long pg_registry(sfx *fx, const char *table, const char *cond) {
  char name[600], lit[700], sql[1200];
  literal(fx, tname(fx, table, name, sizeof name), lit, sizeof lit);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM _lipsync.tables WHERE name = %s AND %s", lit,
           cond);
  return PG_INT(fx->conn, sql, -1);
}

static bool pg_in_transaction(sfx *fx) {
  return PQtransactionStatus(fx->conn) == PQTRANS_INTRANS;
}

static int pg_open_store(sfx *fx, lipsync_store **out, char *err,
                         size_t errlen) {
  return lipsync_store_pg_open(out, getenv(CONNINFO_ENV), err, errlen);
}

static const sfx_backend pg_backend = {
    .name = "pg",
    .store_name = "postgresql",
    .real_type = "double precision",
    .blob_type = "bytea",
    .uuid_type = "uuid",
    .many_rows = 100000,
    .uncaptured_begin = "BEGIN; SET LOCAL lipsync.applying = 'on';",
    .uncaptured_end = "COMMIT",
    .count_writes_sql =
        "CREATE TABLE counts(updates int, inserts int);"
        "INSERT INTO counts VALUES (0, 0);"
        "CREATE FUNCTION count_update() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN UPDATE {S}.counts SET updates = updates + 1; RETURN NULL;"
        " END $$;"
        "CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN UPDATE {S}.counts SET inserts = inserts + 1; RETURN NULL;"
        " END $$;"
        "CREATE TRIGGER cu AFTER UPDATE ON t FOR EACH ROW EXECUTE FUNCTION"
        " count_update();"
        "CREATE TRIGGER ci AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION"
        " count_insert();",
    .open = pg_open,
    .wrap = pg_wrap,
    .close = pg_close,
    .table_name = pg_table_name,
    .owns = pg_owns,
    .run = pg_run,
    .index_count = pg_index_count,
    .unique_index = pg_unique_index,
    .column_type = pg_column_type,
    .registry = pg_registry,
    .in_transaction = pg_in_transaction,
    .open_store = pg_open_store,
};

static int use_pg(void) {
  sfx_use(&pg_backend);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Canonical forms, without a server                                    */
/* ------------------------------------------------------------------ */
static bool decimal_ok(const char *s, int32_t typmod) {
  char why[200];
  return pgtype_decimal_valid(s, strlen(s), typmod, why, sizeof why);
}

/* numeric(p,s)'s atttypmod. */
static int32_t numeric_typmod(int p, int s) {
  return ((p << 16) | (s & 0x7FF)) + 4;
}

static void test_decimal_forms(void) {
  static const char *const good[] = {
      "0",   "12.50",    "-0.001",
      "NaN", "Infinity", "-Infinity",
      "100", "0.00",     "123456789012345678901234567890.123456789",
      "-7"};
  static const char *const bad[] = {"1e3", "+1",  "01.5", "-0",  "-0.00", "1.",
                                    ".5",  " 1",  "1 ",   "",    "-",     "nan",
                                    "inf", "1,5", "0x10", "--1", "00"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    CU_ASSERT_TRUE(decimal_ok(good[i], -1));
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CU_ASSERT_FALSE(decimal_ok(bad[i], -1));
  /* numeric(5,2) keeps exactly 2 decimals and 3 integer digits. */
  int32_t m = numeric_typmod(5, 2);
  CU_ASSERT_TRUE(decimal_ok("12.50", m));
  CU_ASSERT_TRUE(decimal_ok("-999.99", m));
  CU_ASSERT_TRUE(decimal_ok("0.00", m));
  CU_ASSERT_TRUE(decimal_ok("NaN", m));
  CU_ASSERT_FALSE(decimal_ok("12.5", m));
  CU_ASSERT_FALSE(decimal_ok("1000.00", m));
  CU_ASSERT_FALSE(decimal_ok("Infinity", m));
  /* numeric(3,5): below 10^-2; numeric(2,-3): multiples of 1000. */
  CU_ASSERT_TRUE(decimal_ok("0.00999", numeric_typmod(3, 5)));
  CU_ASSERT_FALSE(decimal_ok("0.01000", numeric_typmod(3, 5)));
  CU_ASSERT_TRUE(decimal_ok("12000", numeric_typmod(2, -3)));
  CU_ASSERT_TRUE(decimal_ok("0", numeric_typmod(2, -3)));
  CU_ASSERT_FALSE(decimal_ok("12500", numeric_typmod(2, -3)));
  CU_ASSERT_FALSE(decimal_ok("500", numeric_typmod(2, -3)));
  CU_ASSERT_FALSE(decimal_ok("100000", numeric_typmod(2, -3)));
}

static bool date_ok(const char *s) {
  char why[200];
  return pgtype_date_valid(s, strlen(s), why, sizeof why);
}

static bool ts_ok(const char *s, bool tz, int32_t typmod) {
  char why[200];
  return pgtype_timestamp_valid(s, strlen(s), tz, typmod, why, sizeof why);
}

static void test_date_time_forms(void) {
  static const char *const good[] = {
      "1969-12-31",    "2038-01-20",  "2024-02-29",    "0001-01-01",
      "4713-01-01 BC", "infinity",    "-infinity",     "4714-11-24 BC",
      "5874897-12-31", "10000-01-01", "0001-01-01 BC", "2000-02-29",
      "0005-02-29 BC" /* astronomical year -4 */};
  static const char *const bad[] = {
      "2024-2-29",     "2023-02-29",    "1900-02-29",
      "24-01-01",      "0000-01-01",    "01000-01-01",
      "2024-01-01 AD", "4714-11-23 BC", "5874898-01-01",
      "2024-13-01",    "2024-00-10",    "2024-01-32",
      "Infinity",      "2024-01-01 bc", "0004-02-29 BC",
      " 2024-01-01",   "2024/01/01",    "",
      "2024-01-01 "};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    CU_ASSERT_TRUE(date_ok(good[i]));
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CU_ASSERT_FALSE(date_ok(bad[i]));

  CU_ASSERT_TRUE(ts_ok("2024-01-01 12:34:56", false, -1));
  CU_ASSERT_TRUE(ts_ok("2024-01-01 12:34:56.5", false, -1));
  CU_ASSERT_TRUE(ts_ok("1900-01-01 00:00:00.000001", false, -1));
  CU_ASSERT_TRUE(ts_ok("0044-03-15 12:00:00 BC", false, -1));
  CU_ASSERT_TRUE(ts_ok("294276-12-31 23:59:59.999999", false, -1));
  CU_ASSERT_TRUE(ts_ok("infinity", false, -1));
  CU_ASSERT_FALSE(ts_ok("294277-01-01 00:00:00", false, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 12:34:56.50", false, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 12:34:56.", false, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 12:34:56.1234567", false, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01T12:34:56", false, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 24:00:00", false, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 23:59:60", false, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 1:00:00", false, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 12:34:56+00", false, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01", false, -1));
  /* timestamp(0) keeps no fraction, timestamp(3) three digits. */
  CU_ASSERT_FALSE(ts_ok("2024-01-01 12:34:56.5", false, 0));
  CU_ASSERT_TRUE(ts_ok("2024-01-01 12:34:56.123", false, 3));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 12:34:56.1234", false, 3));

  CU_ASSERT_TRUE(ts_ok("2024-01-01 12:34:56+00", true, -1));
  CU_ASSERT_TRUE(ts_ok("2024-01-01 12:34:56.25+00", true, -1));
  CU_ASSERT_TRUE(ts_ok("0001-01-01 00:00:00+00 BC", true, -1));
  CU_ASSERT_TRUE(ts_ok("-infinity", true, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 12:34:56", true, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 12:34:56+01", true, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 12:34:56-00", true, -1));
  CU_ASSERT_FALSE(ts_ok("2024-01-01 12:34:56+00:00", true, -1));
  CU_ASSERT_FALSE(ts_ok("0001-01-01 00:00:00 BC+00", true, -1));
}

static bool json_ok(const char *s, bool jsonb) {
  char why[200];
  return pgtype_json_valid(s, strlen(s), jsonb, why, sizeof why);
}

static void test_json_forms(void) {
  static const char *const good[] = {"1",
                                     " 1 ",
                                     "{}",
                                     "[]",
                                     "\"x\"",
                                     "{\"a\": [1, 2.5, -0, 1e3, true]}",
                                     "{\"b\":1,\"a\":{\"c\":null}}",
                                     "[[[[[]]]]]",
                                     "\"\\u00e9\\n\\/\"",
                                     "\t\r\n[ 1 , 2 ]",
                                     "-0.5E-7",
                                     "false",
                                     "\"\\ud83d\\ude00\""};
  static const char *const bad[] = {
      "",        " ",         "01",      "+1",         "1.",       ".5",
      "1e",      "[1,]",      "{\"a\"}", "{\"a\":1,}", "{1: 2}",   "'x'",
      "tru",     "truex",     "nul",     "[1 2]",      "\"\x01\"", "\"a",
      "\"\\x\"", "\"\\u12\"", "\f1",     "1 1",        "NaN",      "[",
      "]",       "{\"a\" 1}"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    CU_ASSERT_TRUE(json_ok(good[i], false));
    CU_ASSERT_TRUE(json_ok(good[i], true));
  }
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_FALSE(json_ok(bad[i], false));
    CU_ASSERT_FALSE(json_ok(bad[i], true));
  }
  /* json keeps escapes jsonb must decode. */
  CU_ASSERT_TRUE(json_ok("\"\\u0000\"", false));
  CU_ASSERT_FALSE(json_ok("\"\\u0000\"", true));
  CU_ASSERT_TRUE(json_ok("\"\\ud800\"", false));
  CU_ASSERT_FALSE(json_ok("\"\\ud800\"", true));
  CU_ASSERT_FALSE(json_ok("\"\\udc00\"", true));
  CU_ASSERT_FALSE(json_ok("\"\\ud800\\u0041\"", true));
  /* Deep nesting costs no C stack. */
  enum { DEEP = 100000 };
  char *deep = malloc(2 * DEEP + 2);
  if (deep) {
    memset(deep, '[', DEEP);
    memset(deep + DEEP, ']', DEEP);
    deep[2 * DEEP] = '\0';
    CU_ASSERT_TRUE(json_ok(deep, true));
    deep[2 * DEEP - 1] = '\0';
    CU_ASSERT_FALSE(json_ok(deep, true));
    deep[DEEP] = '{';
    CU_ASSERT_FALSE(json_ok(deep, false));
    free(deep);
  }
}

static void test_value_checks(void) {
  pgtype t;
  char why[200];
  lipsync_value v;

  CU_ASSERT_TRUE(pgtype_float4_exact(0.5));
  CU_ASSERT_TRUE(pgtype_float4_exact((double)1.1f));
  CU_ASSERT_TRUE(pgtype_float4_exact(-0.0));
  CU_ASSERT_TRUE(pgtype_float4_exact(NAN));
  CU_ASSERT_TRUE(pgtype_float4_exact(-INFINITY));
  CU_ASSERT_TRUE(pgtype_float4_exact((double)FLT_MAX));
  CU_ASSERT_TRUE(pgtype_float4_exact((double)FLT_TRUE_MIN));
  CU_ASSERT_FALSE(pgtype_float4_exact(1.1));
  CU_ASSERT_FALSE(pgtype_float4_exact(1e300));
  CU_ASSERT_FALSE(pgtype_float4_exact(5e-324));

  CU_ASSERT_TRUE(pgtype_from_oid(21, -1, false, &t));
  CU_ASSERT_STRING_EQUAL(pgtype_canonical(t.kind), "integer");
  CU_ASSERT_FALSE(pgtype_from_oid(1186 /* interval */, -1, false, &t));
  CU_ASSERT_TRUE(pgtype_from_oid(99999, -1, true, &t));
  CU_ASSERT_STRING_EQUAL(pgtype_canonical(t.kind), "text");

  t.kind = PGTYPE_INT2;
  t.typmod = -1;
  v = tu_int(32767);
  CU_ASSERT_TRUE(pgtype_check(&t, &v, why, sizeof why));
  v = tu_int(32768);
  CU_ASSERT_FALSE(pgtype_check(&t, &v, why, sizeof why));
  v = tu_real(1);
  CU_ASSERT_FALSE(pgtype_check(&t, &v, why, sizeof why));
  CU_ASSERT(contains(why, "INTEGER"));
  v = tu_null();
  CU_ASSERT_TRUE(pgtype_check(&t, &v, why, sizeof why));

  t.kind = PGTYPE_BPCHAR;
  t.typmod = 5 + 4;
  v = tu_text("\303\261and\303\272"); /* five characters, seven bytes */
  CU_ASSERT_TRUE(pgtype_check(&t, &v, why, sizeof why));
  v = tu_text("ab");
  CU_ASSERT_FALSE(pgtype_check(&t, &v, why, sizeof why));
  t.kind = PGTYPE_TEXT;
  t.typmod = -1;
  v = tu_textn("a\0b", 3);
  CU_ASSERT_FALSE(pgtype_check(&t, &v, why, sizeof why));
  CU_ASSERT(contains(why, "U+0000"));
  v = tu_textn("\xff", 1);
  CU_ASSERT_FALSE(pgtype_check(&t, &v, why, sizeof why));

  /* COPY text format escapes exactly backslash, tab, newline and CR. */
  bytebuf b = {0};
  static const char raw[] = "a\\b\tc\nd\re\x01";
  CU_ASSERT_EQUAL(pgtype_copy_escape(&b, raw, sizeof raw - 1), 0);
  CU_ASSERT_EQUAL(b.len, 14);
  CU_ASSERT(b.len == 14 && memcmp(b.data, "a\\\\b\\tc\\nd\\re\x01", 14) == 0);
  bytebuf_free(&b);

  char text[32];
  pgtype_format_double(-0.0, text);
  CU_ASSERT_STRING_EQUAL(text, "-0");
  pgtype_format_double(5e-324, text);
  CU_ASSERT_EQUAL(strtod(text, NULL), 5e-324);
  pgtype_format_double(0.1, text);
  CU_ASSERT_EQUAL(strtod(text, NULL), 0.1);
  pgtype_format_double(-INFINITY, text);
  CU_ASSERT_STRING_EQUAL(text, "-Infinity");
}

/* ------------------------------------------------------------------ */
/* Tables and columns                                                   */
/* ------------------------------------------------------------------ */

/* The canonical type of every PostgreSQL type with one. */
static void test_open_every_type(void) {
  static const struct {
    const char *name, *type;
  } want[] = {
      {"Z_upper", "text"},        {"_a", "integer"},
      {"c_bigserial", "integer"}, {"c_bool", "boolean"},
      {"c_bytea", "blob"},        {"c_char", "text"},
      {"c_date", "date"},         {"c_decimal", "decimal"},
      {"c_float4", "real"},       {"c_float8", "real"},
      {"c_ident", "integer"},     {"c_int2", "integer"},
      {"c_int4", "integer"},      {"c_int8", "integer"},
      {"c_json", "json"},         {"c_jsonb", "jsonb"},
      {"c_name", "text"},         {"c_numeric", "decimal"},
      {"c_serial", "integer"},    {"c_text", "text"},
      {"c_ts", "timestamp"},      {"c_ts3", "timestamp"},
      {"c_tstz", "timestamptz"},  {"c_uuid", "uuid"},
      {"c_varchar", "text"},
  };
  size_t nwant = sizeof want / sizeof want[0];
  sfx fx;
  lipsync_table *t = NULL;
  if (!SFX_OPEN(&fx,
                "CREATE TABLE {S}.types(c_int2 smallint, c_int4 integer,"
                " c_int8 bigint, c_serial serial, c_bigserial bigserial,"
                " c_float4 real, c_float8 double precision, c_numeric numeric,"
                " c_decimal decimal(10,2), c_bool boolean, c_text text,"
                " c_varchar varchar(10), c_char char(5), c_name name,"
                " c_bytea bytea, c_date date, c_ts timestamp,"
                " c_ts3 timestamp(3), c_tstz timestamptz, c_json json,"
                " c_jsonb jsonb, c_uuid uuid, \"Z_upper\" text, \"_a\" int,"
                " c_gen int GENERATED ALWAYS AS (c_int4 * 2) STORED,"
                " c_ident bigint GENERATED ALWAYS AS IDENTITY)"))
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

static void test_unmapped_types_refused(void) {
  static const struct {
    const char *decl, *type_named;
  } cases[] = {
      {"interval", "interval"},
      {"int[]", "integer[]"},
      {"money", "money"},
      {"time", "time without time zone"},
      {"timetz", "time with time zone"},
      {"inet", "inet"},
      {"point", "point"},
      {"bit(3)", "bit(3)"},
      {"xml", "xml"},
      {"{S}.mood", "mood"},
      {"{S}.short_text", "short_text"},
      {"{S}.pair", "pair"},
  };
  sfx fx;
  char sql[256], name[512];
  lipsync_table *t = NULL;
  if (!SFX_OPEN(&fx, "CREATE TYPE {S}.mood AS ENUM ('sad', 'ok');"
                     "CREATE DOMAIN {S}.short_text AS text;"
                     "CREATE TYPE {S}.pair AS (a int, b int);"
                     "CREATE TABLE {S}.fine(a int)"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char want[1024];
    snprintf(sql, sizeof sql,
             "CREATE TABLE {S}.u%zu(ok int, \"Bad col\" %s, z text)", i,
             cases[i].decl);
    /* The store's connection is between statements: it can run ours. */
    FX_EXEC(&fx, sql);
    snprintf(sql, sizeof sql, "u%zu", i);
    CU_ASSERT_EQUAL(
        store_open_table(fx.store, tname(&fx, sql, name, sizeof name), &t),
        LIPSYNC_ERR_SCHEMA_MISMATCH);
    CU_ASSERT_PTR_NULL(t);
    snprintf(want, sizeof want, "table %s: column Bad col has type ", name);
    CU_ASSERT(contains(store_errmsg(fx.store), want));
    CU_ASSERT(contains(store_errmsg(fx.store), cases[i].type_named));
    if (!contains(store_errmsg(fx.store), cases[i].type_named))
      fprintf(stderr, "\n  %s\n", store_errmsg(fx.store));
  }
  /* The transaction goes on. */
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "fine", name, sizeof name), &t), 0);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* Names as PostgreSQL reads them: a table outside a transaction cannot
 * be locked; a plain name is in schema public; a view, a sequence, a name
 * quoted or empty, and system tables are no tables; none of this breaks
 * the transaction. */
static void test_pg_names(void) {
  sfx fx;
  lipsync_table *t = NULL;
  char name[512];
  if (!SFX_OPEN(&fx, "CREATE TABLE cities(name text);"
                     "CREATE VIEW big AS SELECT * FROM cities;"
                     "CREATE SEQUENCE seq;"))
    goto out;
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "cities"), &t),
                  LIPSYNC_ERR_INTERNAL);
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  snprintf(name, sizeof name, "nope_%ld", (long)getpid());
  CU_ASSERT_EQUAL(store_open_table(fx.store, name, &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "big"), &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT(contains(store_errmsg(fx.store), "a view cannot be synced"));
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "seq"), &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "\"cities\""), &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, ""), &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, ".cities", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "pg_catalog.pg_class", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT(contains(store_errmsg(fx.store), "system tables"));
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, "information_schema.sql_features", &t),
      LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "cities"), &t), 0);
  CU_ASSERT_PTR_NOT_NULL(t);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* A schema whose name has a space, and two tables whose names differ only
 * in case: each opens by its own name, and is listed so. */
static void test_quoted_schema(void) {
  char schema[64], upper[256], lower[256];
  sfx fx;
  lipsync_table *t, *other = NULL;
  const char *const *names;
  size_t count;
  int listed = 0;

  snprintf(schema, sizeof schema, "Geo Data %ld_%u", (long)getpid(),
           ++schema_seq);
  next_schema = schema;
  if (!SFX_OPEN(&fx, "CREATE TABLE \"My\"\"Table\"(a integer);"
                     "INSERT INTO \"My\"\"Table\" VALUES (1);"
                     "CREATE TABLE \"my\"\"table\"(x int, y int)"))
    goto out;
  snprintf(upper, sizeof upper, "%s.My\"Table", schema);
  snprintf(lower, sizeof lower, "%s.my\"table", schema);
  t = begin_prepared(&fx, "My\"Table");
  if (!t)
    goto out;
  CU_ASSERT_STRING_EQUAL(t->name, upper);
  CU_ASSERT_EQUAL(t->ncolumns, 1);
  CU_ASSERT_TRUE(
      fx.be->unique_index(&fx, "My\"Table", "My\"Table__lipsync_uuid"));
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 1);
  CU_ASSERT_EQUAL(store_open_table(fx.store, lower, &other), 0);
  CU_ASSERT(other && other != t && other->ncolumns == 2);
  CU_ASSERT_EQUAL(store_list_tables(fx.store, &names, &count), 0);
  for (size_t i = 0; i < count; i++)
    listed += strcmp(names[i], upper) == 0 || strcmp(names[i], lower) == 0;
  CU_ASSERT_EQUAL(listed, 2);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

static void test_list_tables(void) {
  sfx fx;
  const char *const *names = NULL;
  size_t count = 0;
  char want[4][160], pub[2][64], sql[400];
  bool seen[4] = {false};
  if (!SFX_OPEN(&fx,
                "CREATE TABLE {S}.b(x int); CREATE TABLE {S}.\"Zed\"(x int);"
                "CREATE TABLE {S}.\"d.e\"(x int);"
                "CREATE TABLE {S}.parts(k int) PARTITION BY RANGE (k);"
                "CREATE TABLE {S}.parts_1 PARTITION OF {S}.parts"
                " FOR VALUES FROM (0) TO (10);"
                "CREATE VIEW {S}.v AS SELECT * FROM {S}.b;"
                "CREATE MATERIALIZED VIEW {S}.mv AS SELECT * FROM {S}.b;"))
    goto out;
  /* In public, plain names; a name with a dot is qualified. */
  snprintf(pub[0], sizeof pub[0], "lipsync_list_%ld", (long)getpid());
  snprintf(pub[1], sizeof pub[1], "lipsync.dot_%ld", (long)getpid());
  snprintf(sql, sizeof sql,
           "CREATE TABLE public.\"%s\"(x int); CREATE TABLE public.\"%s\"(x "
           "int)",
           pub[0], pub[1]);
  if (!PG_EXEC(fx.conn, sql))
    goto out;
  snprintf(want[0], sizeof want[0], "%s.Zed", fx.schema);
  snprintf(want[1], sizeof want[1], "%s.d.e", fx.schema);
  snprintf(want[2], sizeof want[2], "%s", pub[0]);
  snprintf(want[3], sizeof want[3], "public.%s", pub[1]);
  for (int pass = 0; pass < 2; pass++) {
    int mine = 0;
    memset(seen, 0, sizeof seen);
    CU_ASSERT_EQUAL(store_list_tables(fx.store, &names, &count), 0);
    for (size_t i = 0; i < count; i++) {
      if (i > 0)
        CU_ASSERT(strcmp(names[i - 1], names[i]) < 0);
      for (int k = 0; k < 4; k++)
        seen[k] |= strcmp(names[i], want[k]) == 0;
      if (strncmp(names[i], fx.schema, strlen(fx.schema)) == 0 &&
          names[i][strlen(fx.schema)] == '.')
        mine++;
      CU_ASSERT(strncmp(names[i], "pg_", 3) != 0);
    }
    for (int k = 0; k < 4; k++)
      CU_ASSERT_TRUE(seen[k]);
    CU_ASSERT_EQUAL(mine, 4); /* b, Zed, d.e, parts; no partition or view */
  }
  /* Each listed name opens its table. */
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  for (int k = 0; k < 4; k++) {
    lipsync_table *t = NULL;
    CU_ASSERT_EQUAL(store_open_table(fx.store, want[k], &t), 0);
  }
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  if (fx.conn) {
    snprintf(sql, sizeof sql,
             "DROP TABLE IF EXISTS public.\"%s\"; DROP TABLE IF EXISTS "
             "public.\"%s\"",
             pub[0], pub[1]);
    PG_EXEC(fx.conn, sql);
  }
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* prepare_table                                                        */
/* ------------------------------------------------------------------ */

/* The UUID column prepare_table adds has a default, for rows inserted
 * later; a column _lipsync_uuid of another type than uuid is refused. */
static void test_uuid_column(void) {
  sfx fx;
  lipsync_table *t = NULL;
  if (!SFX_OPEN(&fx, "CREATE TABLE cities(name text);"
                     "INSERT INTO cities VALUES ('a');"
                     "CREATE TABLE wrong(a int, _lipsync_uuid text);"))
    goto out;
  if (!begin_prepared(&fx, "cities"))
    goto out;
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_attrdef WHERE adrelid ="
                         " 'cities'::regclass",
                         -1),
                  1);
  CU_ASSERT_EQUAL(store_open_table(fx.store, sfx_name(&fx, "wrong"), &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store),
                     "column _lipsync_uuid has type text; it must be uuid"));
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Reading and writing                                                  */
/* ------------------------------------------------------------------ */
/* Inserts, reads, inserts again: each read ends the COPY in progress, and
 * sees what it inserted. */
static void test_interleaved_insert_and_read(void) {
  sfx fx;
  lipsync_table *a, *b = NULL;
  lipsync_row row;
  lipsync_cursor *c = NULL;
  uint8_t u[LIPSYNC_UUID_LEN];
  char name[512];
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.a(x text); CREATE TABLE {S}.b(y int);"
                     "INSERT INTO {S}.b VALUES (1), (2);"))
    goto out;
  a = begin_prepared(&fx, "a");
  if (!a)
    goto out;
  for (int k = 0; k < 10; k++) {
    lipsync_value v = tu_text(k % 2 ? "odd" : "even");
    uuid_fill(u, (uint8_t)(k + 1));
    CU_ASSERT_EQUAL(insert_row(fx.store, a, u, &v, 1), 0);
    if (k == 4) {
      CU_ASSERT_EQUAL(store_fetch(fx.store, a, u, &row), 0);
      CU_ASSERT_EQUAL(count_rows(fx.store, a, NULL, NULL), 5);
    }
  }
  /* A cursor opened before more inserts does not see them (its snapshot
   * is its DECLARE's). */
  CU_ASSERT_EQUAL(store_scan(fx.store, a, NULL, NULL, &c), 0);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &row), 1);
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "b", name, sizeof name), &b), 0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, b), 0);
  for (int k = 0; k < 3 && b; k++) {
    lipsync_value v = tu_int(10 + k);
    uuid_fill(u, (uint8_t)(0xA0 + k));
    CU_ASSERT_EQUAL(insert_row(fx.store, b, u, &v, 1), 0);
    lipsync_value w = tu_text("late");
    uuid_fill(u, (uint8_t)(0xB0 + k));
    CU_ASSERT_EQUAL(insert_row(fx.store, a, u, &w, 1), 0);
  }
  size_t n = 1;
  while (c && store_next(fx.store, c, &row) == 1)
    n++;
  CU_ASSERT_EQUAL(n, 10);
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(count_rows(fx.store, a, NULL, NULL), 13);
  if (b)
    CU_ASSERT_EQUAL(count_rows(fx.store, b, NULL, NULL), 5);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.a", -1), 13);
out:
  sfx_close(&fx);
}

/* Column order of table e, canonical. */
enum {
  E_B,
  E_BY,
  E_C,
  E_D,
  E_F4,
  E_F8,
  E_I2,
  E_I4,
  E_I8,
  E_J,
  E_JB,
  E_N,
  E_N52,
  E_T,
  E_TS,
  E_TZ,
  E_U,
  E_V,
  E_NCOLS
};

static const char edge_table_sql[] =
    "CREATE TABLE {S}.e(b boolean, by bytea, c char(5), d date, f4 real,"
    " f8 double precision, i2 smallint, i4 integer, i8 bigint, j json,"
    " jb jsonb, n numeric, n52 numeric(5,2), t text, ts timestamp,"
    " tz timestamptz, u uuid, v varchar(10))";

static const char *const edge_names[E_NCOLS] = {
    "b", "by", "c", "d",   "f4", "f8", "i2", "i4", "i8",
    "j", "jb", "n", "n52", "t",  "ts", "tz", "u",  "v"};

typedef struct edge_values {
  lipsync_value v[24];
  size_t n;
} edge_values;

static void add(edge_values *e, lipsync_value v) {
  e->v[e->n++] = v;
}

static void add_texts(edge_values *e, const char *const *texts, size_t n) {
  for (size_t i = 0; i < n; i++)
    add(e, tu_text(texts[i]));
}

#define ADD_TEXTS(e, ...)                                                      \
  do {                                                                         \
    static const char *const texts_[] = {__VA_ARGS__};                         \
    add_texts((e), texts_, sizeof texts_ / sizeof texts_[0]);                  \
  } while (0)

static void test_insert_edge_values(void) {
  static const char nonascii[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 "
                                 "\xf0\x9d\x84\x9e";
  static uint8_t bytes256[256];
  enum { BIG = 1 << 20 };
  uint8_t *big = malloc(BIG);
  edge_values cols[E_NCOLS];
  sfx fx;
  lipsync_table *t;
  size_t nrows = 0;
  memset(cols, 0, sizeof cols);
  for (int i = 0; i < 256; i++)
    bytes256[i] = (uint8_t)i;
  for (size_t i = 0; big && i < BIG; i++)
    big[i] = (uint8_t)(i * 2654435761u >> 13);

  add(&cols[E_B], tu_int(0));
  add(&cols[E_B], tu_int(1));
  add(&cols[E_BY], tu_blob("", 0));
  add(&cols[E_BY], tu_blob(bytes256, 256));
  add(&cols[E_BY], tu_blob("\\x00\t\n", 5));
  if (big)
    add(&cols[E_BY], tu_blob(big, BIG));
  ADD_TEXTS(&cols[E_C], "ab   ", "abcde", "\303\261and\303\272", "     ");
  ADD_TEXTS(&cols[E_D], "1969-12-31", "2038-01-20", "2024-02-29", "0001-01-01",
            "4713-01-01 BC", "infinity", "-infinity", "4714-11-24 BC",
            "5874897-12-31", "10000-01-01", "0001-12-31 BC");
  add(&cols[E_F4], tu_real(0.5));
  add(&cols[E_F4], tu_real((double)1.1f));
  add(&cols[E_F4], tu_real(-0.0));
  add(&cols[E_F4], tu_real(INFINITY));
  add(&cols[E_F4], tu_real(-INFINITY));
  add(&cols[E_F4], tu_real(NAN));
  add(&cols[E_F4], tu_real((double)FLT_MAX));
  add(&cols[E_F4], tu_real((double)FLT_TRUE_MIN));
  add(&cols[E_F4], tu_real((double)-16777217.0f));
  add(&cols[E_F8], tu_real(-0.0));
  add(&cols[E_F8], tu_real(NAN));
  add(&cols[E_F8], tu_real(INFINITY));
  add(&cols[E_F8], tu_real(-INFINITY));
  add(&cols[E_F8], tu_real(1e-308));
  add(&cols[E_F8], tu_real(5e-324));
  add(&cols[E_F8], tu_real(0.1));
  add(&cols[E_F8], tu_real(DBL_MAX));
  add(&cols[E_F8], tu_real(-DBL_MIN));
  add(&cols[E_F8], tu_real(9007199254740993.0));
  add(&cols[E_F8], tu_real(1.0 / 3.0));
  add(&cols[E_I2], tu_int(-32768));
  add(&cols[E_I2], tu_int(32767));
  add(&cols[E_I4], tu_int(INT32_MIN));
  add(&cols[E_I4], tu_int(INT32_MAX));
  add(&cols[E_I8], tu_int(INT64_MIN));
  add(&cols[E_I8], tu_int(INT64_MAX));
  add(&cols[E_I8], tu_int(0));
  add(&cols[E_I8], tu_int(-1));
  /* json keeps the text: spaces, key order, duplicate keys, escapes. */
  ADD_TEXTS(&cols[E_J], "{\"b\":1,  \"a\":[1,2.50,1e2], \"a\":null}", "[ ]",
            "\"\\u00e9\\ud800 \\u0000\"", "  7 ", "\n{\"x\" :\t\"y\"}\r\n");
  ADD_TEXTS(&cols[E_JB], "{\"a\": 1, \"b\": [1, 2.50]}", "[]",
            "\"\xc3\xa9\\u001f\\\"\\\\/\"", "1000", "null",
            "{\"b\": 2, \"aa\": 1}", "{\"a\": {\"c\": [true, false]}}", "1.0",
            "-0.5", "\"\\n\\t\"");
  ADD_TEXTS(&cols[E_N], "12.50", "-0.001", "NaN", "Infinity", "-Infinity",
            "123456789012345678901234567890.123456789", "0", "0.00", "100",
            "12.5");
  ADD_TEXTS(&cols[E_N52], "12.50", "-999.99", "0.00", "NaN", "0.05");
  add(&cols[E_T], tu_text(""));
  add(&cols[E_T], tu_text(nonascii));
  add(&cols[E_T], tu_text("tab\there\nnew\\back\rcr \\N \\."));
  add(&cols[E_T], tu_text("\x01\x7f"));
  add(&cols[E_T], tu_text("\\N"));
  ADD_TEXTS(&cols[E_TS], "2024-01-01 12:34:56", "2024-01-01 12:34:56.5",
            "2024-01-01 12:34:56.123456", "1900-06-15 00:00:00.000001",
            "2100-12-31 23:59:59.999999", "0044-03-15 12:00:00 BC",
            "1969-12-31 23:59:59", "2038-01-19 03:14:08", "infinity",
            "-infinity", "294276-12-31 23:59:59.999999",
            "4714-11-24 00:00:00 BC");
  ADD_TEXTS(&cols[E_TZ], "2024-01-01 12:34:56+00", "1950-01-01 00:00:00.25+00",
            "2200-07-04 16:00:00+00", "0001-01-01 00:00:00+00 BC", "infinity",
            "-infinity", "1969-12-31 23:59:59.999999+00");
  ADD_TEXTS(&cols[E_U], "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "123e4567-e89b-12d3-a456-426614174000");
  ADD_TEXTS(&cols[E_V], "", "abcdefghij", "\303\261and\303\272", "trailing  ");

  for (int c = 0; c < E_NCOLS; c++)
    if (cols[c].n > nrows)
      nrows = cols[c].n;
  if (!SFX_OPEN(&fx, edge_table_sql))
    goto out;
  t = begin_prepared(&fx, "e");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, E_NCOLS);
  for (int c = 0; c < E_NCOLS && (size_t)c < t->ncolumns; c++)
    CU_ASSERT_STRING_EQUAL(t->columns[c].name, edge_names[c]);

  /* Row k holds the k-th value of each column, NULL past its last. */
  lipsync_value row_values[E_NCOLS];
  for (size_t k = 0; k < nrows; k++) {
    uint8_t u[LIPSYNC_UUID_LEN];
    for (int c = 0; c < E_NCOLS; c++)
      row_values[c] = k < cols[c].n ? cols[c].v[k] : tu_null();
    uuid_fill(u, (uint8_t)(k + 1));
    int rc = insert_row(fx.store, t, u, row_values, E_NCOLS);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc)
      fprintf(stderr, "\n  row %zu: %s\n", k, store_errmsg(fx.store));
  }
  /* Read back twice: by fetch, and by a scan. */
  for (int pass = 0; pass < 2; pass++) {
    lipsync_cursor *cur = NULL;
    if (pass == 1)
      CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &cur), 0);
    for (size_t k = 0; k < nrows; k++) {
      uint8_t u[LIPSYNC_UUID_LEN];
      lipsync_row row;
      int rc;
      uuid_fill(u, (uint8_t)(k + 1));
      if (pass == 0) {
        rc = store_fetch(fx.store, t, u, &row);
        CU_ASSERT_EQUAL(rc, 0);
      } else {
        rc = cur ? store_next(fx.store, cur, &row) : -1;
        CU_ASSERT_EQUAL(rc, 1);
        rc = rc == 1 ? 0 : rc;
        /* Rows come in any order: look the UUID up. */
        if (rc == 0)
          memcpy(u, row.uuid, LIPSYNC_UUID_LEN);
      }
      if (rc) {
        fprintf(stderr, "\n  read row %zu: %s\n", k, store_errmsg(fx.store));
        continue;
      }
      size_t idx = (size_t)u[0] - 1;
      for (int c = 0; c < E_NCOLS && row.nvalues == E_NCOLS; c++) {
        lipsync_value want = idx < cols[c].n ? cols[c].v[idx] : tu_null();
        char what[64];
        snprintf(what, sizeof what, "%s row %zu column %s",
                 pass ? "scan" : "fetch", idx, edge_names[c]);
        /* Every NaN is one value; PostgreSQL may keep another pattern. */
        if (want.type == LIPSYNC_REAL && isnan(want.u.real) &&
            row.values[c].type == LIPSYNC_REAL && isnan(row.values[c].u.real))
          continue;
        CHECK_VALUE(&row.values[c], &want, what);
      }
    }
    if (cur) {
      lipsync_row row;
      CU_ASSERT_EQUAL(store_next(fx.store, cur, &row), 0);
    }
    store_close_cursor(fx.store, cur);
  }
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  /* What the server holds, in its own words. */
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(*) FROM {S}.e WHERE n::text = '12.50'", -1), 1);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}.e WHERE d = '2024-02-29'"
                         " OR d = '4713-01-01 BC'::date",
                         -1),
                  2);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}.e WHERE f8 ="
                         " '-Infinity' OR f8 = 'NaN' OR f8 = 5e-324",
                         -1),
                  3);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT max(length(by)) FROM {S}.e", -1),
                  big ? BIG : 256);
out:
  sfx_close(&fx);
  free(big);
}

/* A caller's session settings (time zone, date style) change nothing the
 * store reads or writes, and come back after the sync. */
static void test_session_settings_do_not_matter(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_row row;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v[4] = {tu_text("2024-02-29"), tu_real(1.5),
                        tu_text("\xe2\x9c\x93 \xc3\xa9"),
                        tu_text("2024-07-04 16:00:00+00")};
  lipsync_cursor *c = NULL;
  /* A caller's connection may be in nonblocking mode, too. */
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.z(d date, f double precision,"
                     " t text, tz timestamptz);"
                     "SET TIME ZONE 'America/New_York';"
                     "SET DateStyle = 'SQL, DMY'; SET extra_float_digits = -10;"
                     "SET client_encoding = 'LATIN1';"
                     "INSERT INTO {S}.z VALUES"
                     " ('2024-01-15', 0.1, 'x', '2024-01-01 00:00:00-05')"))
    goto out;
  CU_ASSERT_EQUAL(PQsetnonblocking(fx.conn, 1), 0);
  t = begin_prepared(&fx, "z");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &row), 1);
  if (row.nvalues == 4) {
    lipsync_value d = tu_text("2024-01-15"), f = tu_real(0.1),
                  tz = tu_text("2024-01-01 05:00:00+00");
    CHECK_VALUE(&row.values[0], &d, "date");
    CHECK_VALUE(&row.values[1], &f, "double");
    CHECK_VALUE(&row.values[3], &tz, "timestamptz");
  }
  store_close_cursor(fx.store, c);
  uuid_fill(u, 0x11);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 4), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u, &row), 0);
  for (int i = 0; i < 4 && row.nvalues == 4; i++)
    CHECK_VALUE(&row.values[i], &v[i], "read back");
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  CU_ASSERT_EQUAL(PQisnonblocking(fx.conn), 1);
  PQsetnonblocking(fx.conn, 0);
  char *encoding = PG_TEXT(fx.conn, "SHOW client_encoding");
  CU_ASSERT(encoding && strcmp(encoding, "LATIN1") == 0);
  free(encoding);
  char *zone = PG_TEXT(fx.conn, "SHOW TimeZone");
  char *style = PG_TEXT(fx.conn, "SHOW DateStyle");
  char *local = FX_TEXT(&fx, "SELECT tz::text FROM {S}.z WHERE f = 1.5");
  CU_ASSERT(zone && strcmp(zone, "America/New_York") == 0);
  CU_ASSERT(style && strcmp(style, "SQL, DMY") == 0);
  CU_ASSERT(local && strcmp(local, "04/07/2024 12:00:00 EDT") == 0);
  if (local && strcmp(local, "04/07/2024 12:00:00 EDT") != 0)
    fprintf(stderr, "\n  stored as %s\n", local);
  free(zone);
  free(style);
  free(local);
out:
  sfx_close(&fx);
}

typedef struct refusal {
  int column;
  lipsync_value value;
  const char *why; /* part of the message */
} refusal;

static void test_insert_refusals(void) {
  static const char nul_text[] = "a\0b";
  const refusal cases[] = {
      {E_D, tu_text("2024-2-29"), "canonical form"},
      {E_D, tu_text("2023-02-29"), "no such day"},
      {E_D, tu_text("0000-01-01"), "canonical form"},
      {E_D, tu_text("4714-11-23 BC"), "out of the range"},
      {E_D, tu_text("2024-01-01 AD"), "canonical form"},
      {E_D, tu_int(20240101), "a date column takes TEXT values"},
      {E_N, tu_text("1e3"), "canonical form"},
      {E_N, tu_text("+1"), "canonical form"},
      {E_N, tu_text("01.5"), "canonical form"},
      {E_N, tu_text("-0"), "negative zero"},
      {E_N, tu_text("1."), "canonical form"},
      {E_N, tu_real(1.5), "a decimal column takes TEXT values"},
      {E_N52, tu_text("12.5"), "exactly 2 digits after the decimal point"},
      {E_N52, tu_text("1234.00"), "absolute values below 10^3"},
      {E_N52, tu_text("Infinity"), "infinity"},
      {E_I2, tu_int(40000), "out of the range of smallint"},
      {E_I4, tu_int(INT64_C(1) << 40), "out of the range of integer"},
      {E_I8, tu_text("1"), "takes INTEGER values"},
      {E_B, tu_int(2), "a boolean is 0 or 1"},
      {E_B, tu_text("t"), "takes INTEGER values (0 or 1)"},
      {E_F4, tu_real(0.1), "not exactly a float4"},
      {E_F4, tu_real(1e300), "not exactly a float4"},
      {E_F8, tu_int(1), "a real column takes REAL values"},
      {E_T, tu_textn(nul_text, 3), "cannot hold U+0000"},
      {E_T, tu_textn("\xff", 1), "not valid UTF-8"},
      {E_T, tu_blob("x", 1), "takes TEXT values"},
      {E_V, tu_text("abcdefghijk"), "longer than 10 characters"},
      {E_C, tu_text("ab"), "exactly 5 characters"},
      {E_C, tu_text("abcdef"), "exactly 5 characters"},
      {E_U, tu_text("123E4567-E89B-12D3-A456-426614174000"), "canonical form"},
      {E_U, tu_text("123e4567e89b12d3a456426614174000"), "canonical form"},
      {E_TS, tu_text("2024-01-01T12:00:00"), "canonical form"},
      {E_TS, tu_text("2024-01-01 12:00:00.500"), "canonical form"},
      {E_TS, tu_text("2024-01-01 24:00:00"), "no such time"},
      {E_TS, tu_text("2024-01-01 12:00:00+00"), "canonical form"},
      {E_TZ, tu_text("2024-01-01 12:00:00"), "UTC timestamp"},
      {E_TZ, tu_text("2024-01-01 12:00:00+01"), "UTC timestamp"},
      {E_J, tu_text("{bad"), "not valid JSON"},
      {E_J, tu_text(""), "not valid JSON"},
      {E_JB, tu_text("\"\\u0000\""), "\\u0000"},
      {E_BY, tu_text("x"), "a blob column takes BLOB values"},
  };
  sfx fx;
  lipsync_table *t;
  lipsync_value row[E_NCOLS];
  uint8_t u[LIPSYNC_UUID_LEN];
  char prefix[1024], name[256];
  if (!SFX_OPEN(&fx, edge_table_sql))
    goto out;
  t = begin_prepared(&fx, "e");
  if (!t)
    goto out;
  tname(&fx, "e", name, sizeof name);
  /* A good row first: the refusals must not disturb the COPY. */
  for (int c = 0; c < E_NCOLS; c++)
    row[c] = tu_null();
  row[E_I8] = tu_int(1);
  uuid_fill(u, 0xEE);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, row, E_NCOLS), 0);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (int c = 0; c < E_NCOLS; c++)
      row[c] = tu_null();
    row[cases[i].column] = cases[i].value;
    uuid_fill(u, (uint8_t)(i + 1));
    CU_ASSERT_EQUAL(insert_row(fx.store, t, u, row, E_NCOLS),
                    LIPSYNC_ERR_INVALID_VALUE);
    char uuid_text[37];
    lipsync_uuid_format(u, uuid_text);
    snprintf(prefix, sizeof prefix, "table %s: row %s: column %s (", name,
             uuid_text, edge_names[cases[i].column]);
    const char *msg = store_errmsg(fx.store);
    CU_ASSERT(strncmp(msg, prefix, strlen(prefix)) == 0);
    CU_ASSERT(contains(msg, cases[i].why));
    if (strncmp(msg, prefix, strlen(prefix)) != 0 ||
        !contains(msg, cases[i].why))
      fprintf(stderr, "\n  case %zu: %s\n", i, msg);
  }
  /* The transaction goes on, with only the good rows. */
  for (int c = 0; c < E_NCOLS; c++)
    row[c] = tu_null();
  row[E_I8] = tu_int(2);
  uuid_fill(u, 0xEF);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, row, E_NCOLS), 0);
  CU_ASSERT_EQUAL(fx.store->methods->insert(
                      fx.store, t, &(lipsync_row){.nvalues = 1, .values = row}),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT sum(i8) FROM {S}.e", -1), 3);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.e", -1), 2);
out:
  sfx_close(&fx);
}

/* jsonb's normalized form is the server's to say: values are checked in
 * one statement per batch, when the COPY ends. */
static void test_jsonb_normal_form(void) {
  static const char *const refused[] = {
      "{\"b\":1}",             /* spacing */
      "{\"aa\": 1, \"b\": 2}", /* key order: shorter keys first */
      "{\"a\": 1, \"a\": 2}",  /* duplicate keys */
      "1e2",                   /* number form */
      "\"\\u00e9\"",           /* escape jsonb decodes */
      " 1",                    /* space */
      "-0",                    /* negative zero */
  };
  sfx fx;
  lipsync_table *t;
  char name[512];
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.j(k int, doc jsonb)"))
    goto out;
  tname(&fx, "j", name, sizeof name);
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    lipsync_value v[2] = {tu_text("{\"ok\": true}"), tu_int(1)}; /* doc, k */
    uint8_t u[LIPSYNC_UUID_LEN];
    char uuid_text[37], want[1024];
    t = begin_prepared(&fx, "j");
    if (!t)
      goto out;
    uuid_fill(u, 1);
    CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0);
    v[0] = tu_text(refused[i]);
    uuid_fill(u, 2);
    CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0);
    lipsync_uuid_format(u, uuid_text);
    snprintf(want, sizeof want,
             "table %s: row %s: column doc (jsonb) cannot store its value "
             "exactly",
             name, uuid_text);
    /* The next statement ends the COPY, and reports it. */
    CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_INVALID_VALUE);
    CU_ASSERT(contains(store_errmsg(fx.store), want));
    if (!contains(store_errmsg(fx.store), want))
      fprintf(stderr, "\n  %s\n", store_errmsg(fx.store));
    CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  }
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.j", -1), 0);

  /* JSON nested deeper than the server's stack allows: its refusal, at
   * the end of the COPY, names the row. */
  enum { DEEP = 200000 };
  char *deep = malloc(2 * DEEP + 1);
  t = deep ? begin_prepared(&fx, "j") : NULL;
  if (t) {
    uint8_t u[LIPSYNC_UUID_LEN];
    memset(deep, '[', DEEP);
    memset(deep + DEEP, ']', DEEP);
    deep[2 * DEEP] = '\0';
    lipsync_value v[2] = {tu_text(deep), tu_int(3)};
    uuid_fill(u, 3);
    CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0);
    CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_INVALID_VALUE);
    CU_ASSERT(contains(store_errmsg(fx.store),
                       "row 03030303-0303-0303-0303-030303030303: "
                       "PostgreSQL: stack depth limit exceeded"));
    CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  }
  free(deep);

  /* Many values: the COPY ends and restarts to check them in batches. */
  t = begin_prepared(&fx, "j");
  if (!t)
    goto out;
  for (int k = 0; k < 25000; k++) {
    char doc[64];
    uint8_t u[LIPSYNC_UUID_LEN] = {0};
    snprintf(doc, sizeof doc, "{\"k\": %d, \"tag\": \"x\"}", k);
    lipsync_value v[2] = {tu_text(doc), tu_int(k)};
    memcpy(u, &k, sizeof k);
    u[15] = 1;
    if (insert_row(fx.store, t, u, v, 2) != 0) {
      fprintf(stderr, "\n  %s\n", store_errmsg(fx.store));
      CU_FAIL("insert");
      break;
    }
  }
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.j", -1), 25000);
out:
  sfx_close(&fx);
}

/* citext and name are text too. */
static void test_other_text_types(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_row row;
  uint8_t u[LIPSYNC_UUID_LEN];
  char long_name[65];
  lipsync_value v[2] = {tu_text("MiXeD Case"), tu_text("pg_\xc3\xa9")};
  /* The extension goes in the fixture's schema, dropped with it, unless
   * the database has it already. */
  if (!SFX_OPEN(&fx, NULL))
    goto out;
  char *where = PG_TEXT(fx.conn, "SELECT n.nspname FROM pg_extension e"
                                 " JOIN pg_namespace n ON n.oid ="
                                 " e.extnamespace WHERE e.extname = 'citext'");
  if (!where && !FX_EXEC(&fx, "CREATE EXTENSION citext SCHEMA {S}"))
    goto out;
  char *q = PQescapeIdentifier(fx.conn, where ? where : fx.schema,
                               strlen(where ? where : fx.schema));
  char sql[300];
  snprintf(sql, sizeof sql, "CREATE TABLE {S}.ci(ci %s.citext, n name)",
           q ? q : "public");
  PQfreemem(q);
  free(where);
  if (!FX_EXEC(&fx, sql))
    goto out;
  t = begin_prepared(&fx, "ci");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, 2);
  if (t->ncolumns == 2) {
    CU_ASSERT_STRING_EQUAL(t->columns[0].type, "text");
    CU_ASSERT_STRING_EQUAL(t->columns[1].type, "text");
  }
  uuid_fill(u, 5);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u, &row), 0);
  for (int i = 0; i < 2 && row.nvalues == 2; i++)
    CHECK_VALUE(&row.values[i], &v[i], "text types");
  /* A name longer than 63 bytes would be cut short. */
  memset(long_name, 'n', 64);
  long_name[64] = '\0';
  v[1] = tu_text(long_name);
  uuid_fill(u, 6);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), LIPSYNC_ERR_INVALID_VALUE);
  CU_ASSERT(contains(store_errmsg(fx.store), "at most 63 bytes"));
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* The UUID index of an empty table is built once its rows are in: before
 * a lookup needs it, or at commit. */
static void test_index_of_empty_table(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_row row;
  lipsync_cursor *c = NULL;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(1);
  static const char count_sql[] = "SELECT count(*) FROM pg_index WHERE"
                                  " indrelid = '{S}.e'::regclass AND"
                                  " indisunique";
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.e(a int)"))
    goto out;
  t = begin_prepared(&fx, "e");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(FX_INT(&fx, count_sql, -1), 0);
  for (int k = 0; k < 300; k++) {
    uint8_t w[LIPSYNC_UUID_LEN] = {0};
    w[0] = (uint8_t)k;
    w[1] = (uint8_t)(k >> 8);
    CU_ASSERT_EQUAL(insert_row(fx.store, t, w, &v, 1), 0);
  }
  /* A full scan needs no index, a lookup does; an open cursor is closed
   * once read to its end. */
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (c && store_next(fx.store, c, &row) == 1)
    ;
  memset(u, 0, sizeof u);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u, &row), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, count_sql, -1), 1);
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  /* Built at commit, where it finds duplicates. */
  FX_EXEC(&fx, "DROP TABLE {S}.e, {S}._lipsync_meta_e;"
               " CREATE TABLE {S}.e(a int)");
  t = begin_prepared(&fx, "e");
  if (!t)
    goto out;
  uuid_fill(u, 0x0D);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), 0);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "duplicate _lipsync_uuid values"));
  CU_ASSERT(contains(store_errmsg(fx.store), "(0d0d0d0d-0d0d-0d0d-0d0d-"
                                             "0d0d0d0d0d0d) is duplicated"));
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);

  /* A cursor still open on the table leaves lookups without the index;
   * commit closes it and builds the index. */
  t = begin_prepared(&fx, "e");
  if (!t)
    goto out;
  for (int k = 0; k < 300; k++) {
    uint8_t w[LIPSYNC_UUID_LEN] = {0};
    w[0] = (uint8_t)k;
    w[1] = (uint8_t)(k >> 8);
    CU_ASSERT_EQUAL(insert_row(fx.store, t, w, &v, 1), 0);
  }
  CU_ASSERT_EQUAL_FATAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &row), 1);
  memset(u, 0, sizeof u);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u, &row), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, count_sql, -1), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, count_sql, -1), 1);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.e", -1), 300);
out:
  sfx_close(&fx);
}

static void test_generated_and_partitioned(void) {
  sfx fx;
  lipsync_table *g, *p = NULL;
  lipsync_row row;
  uint8_t u[LIPSYNC_UUID_LEN];
  char name[512];
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.g(a int, twice int GENERATED ALWAYS AS"
                     " (a * 2) STORED, id int GENERATED ALWAYS AS IDENTITY);"
                     "CREATE TABLE {S}.p(k int, v text) PARTITION BY RANGE (k);"
                     "CREATE TABLE {S}.p_lo PARTITION OF {S}.p FOR VALUES"
                     " FROM (0) TO (100);"
                     "CREATE TABLE {S}.p_hi PARTITION OF {S}.p FOR VALUES"
                     " FROM (100) TO (200);"
                     "INSERT INTO {S}.p VALUES (1, 'one'), (150, 'many');"))
    goto out;
  g = begin_prepared(&fx, "g");
  if (!g)
    goto out;
  /* The generated column is no column of the sync; identity values are
   * written as given. */
  CU_ASSERT_EQUAL(g->ncolumns, 2);
  if (g->ncolumns == 2) {
    CU_ASSERT_STRING_EQUAL(g->columns[0].name, "a");
    CU_ASSERT_STRING_EQUAL(g->columns[1].name, "id");
  }
  lipsync_value gv[2] = {tu_int(21), tu_int(1000)};
  uuid_fill(u, 9);
  CU_ASSERT_EQUAL(insert_row(fx.store, g, u, gv, 2), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, g, u, &row), 0);

  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "p", name, sizeof name), &p), 0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, p), 0);
  if (p) {
    lipsync_value pv[2] = {tu_int(99), tu_text("ninety-nine")};
    uuid_fill(u, 0x99);
    CU_ASSERT_EQUAL(insert_row(fx.store, p, u, pv, 2), 0);
    CU_ASSERT_EQUAL(count_rows(fx.store, p, NULL, NULL), 3);
    uint8_t after[LIPSYNC_UUID_LEN];
    memcpy(after, u, sizeof after);
    after[15]++;
    CU_ASSERT_EQUAL(count_rows(fx.store, p, u, after), 1);
    CU_ASSERT_EQUAL(store_fetch(fx.store, p, u, &row), 0);
  }
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT twice FROM {S}.g WHERE id = 1000", -1),
                  42);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}.p_lo WHERE _lipsync_uuid"
                         " IS NOT NULL",
                         -1),
                  2);
  /* A plain index on the parent: PostgreSQL allows unique ones only over
   * the partition key. */
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_index WHERE indrelid ="
                         " '{S}.p'::regclass",
                         -1),
                  1);
out:
  sfx_close(&fx);
}

/* How many of the capture triggers of {S}.|table| are row triggers, and
 * how many statement triggers (TRUNCATE's aside). */
static void trigger_forms(sfx *fx, const char *table, long long *rows,
                          long long *statements) {
  long long *out[2] = {statements, rows};
  for (int row = 0; row < 2; row++) {
    char sql[400];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_trigger WHERE tgrelid ="
             " '{S}.%s'::regclass AND tgtype & 1 = %d AND tgname IN"
             " ('_lipsync_capture_insert', '_lipsync_capture_update',"
             " '_lipsync_capture_delete')",
             table, row);
    *out[row] = FX_INT(fx, sql, -1);
  }
}

/* Every row of {S}.|table| has a live item, every item without a row is
 * a tombstone, and no two items of a clock above |since| share it. */
static void check_items(sfx *fx, const char *table, long long since) {
  char sql[3][300];
  snprintf(sql[0], sizeof sql[0],
           "SELECT count(*) FROM {S}.%s r LEFT JOIN {S}._lipsync_meta_%s m"
           " ON m.uuid = r._lipsync_uuid WHERE m.deleted IS DISTINCT FROM"
           " false",
           table, table);
  snprintf(sql[1], sizeof sql[1],
           "SELECT (SELECT count(*) FROM {S}._lipsync_meta_%s WHERE NOT"
           " deleted) - (SELECT count(*) FROM {S}.%s)",
           table, table);
  snprintf(sql[2], sizeof sql[2],
           "SELECT count(*) - count(DISTINCT clock) FROM"
           " {S}._lipsync_meta_%s WHERE clock > %lld",
           table, since);
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(FX_INT(fx, sql[i], -1), 0);
  CHECK_SUMMARY(fx, table);
}

/* Capture by statement triggers on an ordinary table, by row triggers on
 * a partitioned table and in an inheritance tree: every kind of
 * application write is recorded, one version per changed row; a table
 * whose triggers are of the other form gets the right one at its next
 * prepare, recounted only when it goes to row triggers. */
static void test_capture_forms(void) {
  sfx fx;
  long long rows, statements;
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.t(k int PRIMARY KEY, v text);"
                     " INSERT INTO {S}.t SELECT i, 'v' || i FROM"
                     " generate_series(1, 300) i;"
                     "CREATE TABLE {S}.p(k int, v text) PARTITION BY RANGE"
                     " (k); CREATE TABLE {S}.p_lo PARTITION OF {S}.p FOR"
                     " VALUES FROM (0) TO (100); CREATE TABLE {S}.p_hi"
                     " PARTITION OF {S}.p FOR VALUES FROM (100) TO (1000);"
                     " INSERT INTO {S}.p SELECT i, 'p' FROM"
                     " generate_series(1, 200) i;"
                     "CREATE TABLE {S}.base(k int, v text);"
                     " CREATE TABLE {S}.kid(w int) INHERITS ({S}.base);"
                     " INSERT INTO {S}.kid VALUES (1, 'a', 1), (2, 'b', 2);"
                     "CREATE TABLE {S}.w(n int, o int, x int, u int, r int,"
                     " s text, d int, c int, us int, k int);"
                     " INSERT INTO {S}.w(n, o, s) SELECT i, i, 's' FROM"
                     " generate_series(1, 20) i"))
    goto out;
  if (!prepare_commit(&fx, "t") || !prepare_commit(&fx, "p") ||
      !prepare_commit(&fx, "kid") || !prepare_commit(&fx, "w"))
    goto out;
  /* Columns named like the function's aliases and variables: a change
   * of s alone is a change of the row. */
  long long wclock =
      FX_INT(&fx, "SELECT max(clock) FROM {S}._lipsync_meta_w", -1);
  APP_EXEC(&fx, "UPDATE {S}.w SET s = 'changed' WHERE n <= 3;"
                " UPDATE {S}.w SET s = 'changed too' WHERE n > 10");
  char wsql[200];
  snprintf(wsql, sizeof wsql,
           "SELECT count(*) FROM {S}._lipsync_meta_w WHERE clock > %lld",
           wclock);
  CU_ASSERT_EQUAL(FX_INT(&fx, wsql, -1), 13);
  check_items(&fx, "w", wclock);
  trigger_forms(&fx, "t", &rows, &statements);
  CU_ASSERT(rows == 0 && statements == 3);
  trigger_forms(&fx, "p", &rows, &statements);
  CU_ASSERT(rows == 3 && statements == 0);
  trigger_forms(&fx, "kid", &rows, &statements);
  CU_ASSERT(rows == 3 && statements == 0);

  /* A statement of up to 8 changed rows records them one by one, one
   * delta row each; a larger one, set-based, with one delta row. */
  char deltas[300];
  snprintf(deltas, sizeof deltas,
           "SELECT count(*) FROM _lipsync.deltas WHERE tbl = '%s.t'",
           fx.schema);
  long long before = FX_INT(&fx, deltas, -1);
  APP_EXEC(&fx, "UPDATE {S}.t SET v = v || '.' WHERE k BETWEEN 201 AND 208");
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas, -1), before + 8);
  APP_EXEC(&fx, "UPDATE {S}.t SET v = v || '.' WHERE k BETWEEN 201 AND 209");
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas, -1), before + 9);
  CHECK_SUMMARY(&fx, "t");

  /* Writes of every shape, several rows a statement. */
  long long clock =
                FX_INT(&fx, "SELECT max(clock) FROM {S}._lipsync_meta_t", -1),
            pclock =
                FX_INT(&fx, "SELECT max(clock) FROM {S}._lipsync_meta_p", -1),
            kclock =
                FX_INT(&fx, "SELECT max(clock) FROM {S}._lipsync_meta_kid", -1);
  APP_EXEC(&fx,
           "INSERT INTO {S}.t SELECT i, 'n' FROM generate_series(301,"
           " 400) i;"
           " UPDATE {S}.t SET v = v || '!' WHERE k % 3 = 0;"
           " UPDATE {S}.t SET v = v WHERE k < 50;"
           " DELETE FROM {S}.t WHERE k % 7 = 0;"
           " INSERT INTO {S}.t VALUES (1, 'up'), (7, 'again'), (500, 'new')"
           " ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v;"
           " WITH d AS (DELETE FROM {S}.t WHERE k BETWEEN 10 AND 12"
           " RETURNING k) INSERT INTO {S}.t SELECT k + 1000, 'moved'"
           " FROM d");
  check_items(&fx, "t", clock);
  /* Rows 1..49 not multiples of 3 or 7 were not changed: their items
   * kept their clocks. */
  char sql[600];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM {S}.t r JOIN {S}._lipsync_meta_t m ON"
           " m.uuid = r._lipsync_uuid WHERE r.k BETWEEN 2 AND 9 AND"
           " r.k %% 3 <> 0 AND r.k <> 7 AND m.clock <= %lld",
           clock);
  CU_ASSERT_EQUAL(FX_INT(&fx, sql, -1), 4); /* 2, 4, 5 and 8 */
  /* A write straight into a partition, one through the parent, and one
   * into an inheritance child. */
  APP_EXEC(&fx, "INSERT INTO {S}.p_lo VALUES (5, 'direct');"
                " UPDATE {S}.p_hi SET v = 'hi' WHERE k < 120;"
                " DELETE FROM {S}.p WHERE k BETWEEN 50 AND 60;"
                " UPDATE {S}.kid SET v = 'c' WHERE k = 1;"
                " INSERT INTO {S}.kid VALUES (3, 'c', 3)");
  check_items(&fx, "p", pclock);
  check_items(&fx, "kid", kclock);

  /* Row triggers on the ordinary table, as the previous layout had: they
   * go on recording, and the next prepare puts statement triggers back
   * with no recount. */
  snprintf(sql, sizeof sql,
           "DROP TRIGGER _lipsync_capture_insert ON {S}.t;"
           " CREATE TRIGGER _lipsync_capture_insert AFTER INSERT ON {S}.t"
           " FOR EACH ROW EXECUTE FUNCTION _lipsync.capture('%s',"
           " '_lipsync_meta_t', '%s.t')",
           fx.schema, fx.schema);
  APP_EXEC(&fx, sql);
  APP_EXEC(&fx, "INSERT INTO {S}.t VALUES (600, 'row-level')");
  check_items(&fx, "t", clock);
  if (!prepare_commit(&fx, "t"))
    goto out;
  trigger_forms(&fx, "t", &rows, &statements);
  CU_ASSERT(rows == 0 && statements == 3);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM _lipsync.tables WHERE"
                         " recount",
                         -1),
                  0);
  /* Every recorder, reinstalled, also records what the database does in
   * response to a sync's writes (spec LS-CAPTURE-10). */
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_trigger WHERE tgrelid ="
                         " '{S}.t'::regclass AND tgname LIKE"
                         " '\\_lipsync\\_capture\\_%' AND"
                         " pg_get_triggerdef(oid) LIKE"
                         " '%pg_trigger_depth() > 0%'",
                         -1),
                  4);
  APP_EXEC(&fx, "INSERT INTO {S}.t VALUES (601, 'statement')");
  check_items(&fx, "t", clock);
out:
  sfx_close(&fx);
}

static void test_constraint_violation(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v[2];
  char want[1024], name[256];
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.c(id int PRIMARY KEY, name text NOT"
                     " NULL); INSERT INTO {S}.c VALUES (0, 'zero')"))
    goto out;
  t = begin_prepared(&fx, "c");
  if (!t)
    goto out;
  v[0] = tu_int(1);
  v[1] = tu_text("one");
  uuid_fill(u, 1);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0);
  uuid_fill(u, 2);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0); /* still in the COPY */
  uuid_fill(u, 3);
  v[0] = tu_int(3);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_STORAGE);
  snprintf(
      want, sizeof want,
      "table %s: row 02020202-0202-0202-0202-020202020202: PostgreSQL: "
      "duplicate key value violates unique constraint \"c_pkey\": Key (id)=(1) "
      "already exists.",
      tname(&fx, "c", name, sizeof name));
  CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store), want);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);

  /* NOT NULL, reported when a read ends the COPY. */
  t = begin_prepared(&fx, "c");
  if (!t)
    goto out;
  v[0] = tu_int(5);
  v[1] = tu_null();
  uuid_fill(u, 5);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0);
  lipsync_cursor *c = NULL;
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT(contains(store_errmsg(fx.store), "row 05050505-0505-0505-0505-"
                                             "050505050505: PostgreSQL: null "
                                             "value in column \"name\""));
  /* The failed transaction refuses to commit. */
  CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);

  /* The same UUID twice. */
  t = begin_prepared(&fx, "c");
  if (!t)
    goto out;
  v[1] = tu_text("x");
  uuid_fill(u, 6);
  v[0] = tu_int(6);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0);
  v[0] = tu_int(7);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "c__lipsync_uuid"));
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.c", -1), 1);
out:
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Opening, volume and concurrency                                      */
/* ------------------------------------------------------------------ */
static void test_open_errors(void) {
  char errbuf[512] = "";
  lipsync_store *store = (lipsync_store *)&store; /* must come back NULL */
  CU_ASSERT_EQUAL(lipsync_store_pg_open(&store,
                                        "host=/nonexistent/lipsync port=1"
                                        " dbname=x password=secret",
                                        errbuf, sizeof errbuf),
                  LIPSYNC_ERR_STORAGE);
  CU_ASSERT_PTR_NULL(store);
  CU_ASSERT(contains(errbuf, "cannot connect to PostgreSQL: "));
  CU_ASSERT(!contains(errbuf, "secret"));
  CU_ASSERT_EQUAL(lipsync_store_pg_open(&store, "postgresql://%zz", NULL, 0),
                  LIPSYNC_ERR_STORAGE);
  CU_ASSERT_EQUAL(lipsync_store_pg_open(&store, NULL, errbuf, sizeof errbuf),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_EQUAL(lipsync_store_pg_wrap(&store, NULL),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NULL(store);
  lipsync_store_free(NULL);
}

typedef struct later_call {
  lipsync_store *store;
  long delay_ms;
  int rc;
} later_call;

static void *commit_later(void *arg) {
  later_call *c = arg;
  sleep_ms(c->delay_ms);
  c->rc = store_commit(c->store);
  return NULL;
}

static void *interrupt_later(void *arg) {
  later_call *c = arg;
  sleep_ms(c->delay_ms);
  lipsync_store_interrupt(c->store);
  return NULL;
}

/* Two stores on one table: the second reads while the first writes,
 * without waiting, and sees the snapshot it began with: not the first's
 * rows, even once they are committed. */
static void test_second_sync_does_not_wait(void) {
  sfx fx;
  lipsync_store *second = NULL, *third = NULL;
  PGconn *conn2 = NULL, *conn3 = NULL;
  lipsync_table *t = NULL, *t2 = NULL, *t3 = NULL;
  lipsync_row row;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(99);
  char name[512];
  double started;

  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.t(a int); INSERT INTO {S}.t VALUES (1)"))
    goto out;
  conn2 = PG_CONNECT();
  conn3 = PG_CONNECT();
  if (!conn2 || !conn3 || lipsync_store_pg_wrap(&second, conn2) != 0 ||
      lipsync_store_pg_wrap(&third, conn3) != 0)
    goto out;
  /* The first sync installs capture, which locks the table. */
  if (!begin_prepared(&fx, "t") || store_commit(fx.store) != 0)
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  uuid_fill(u, 0x5A);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);

  started = now_s();
  CU_ASSERT_EQUAL(store_begin_read(second), 0);
  CU_ASSERT_EQUAL(
      store_open_table(second, tname(&fx, "t", name, sizeof name), &t2), 0);
  CU_ASSERT_EQUAL_FATAL(store_prepare_table(second, t2), 0);
  CU_ASSERT_EQUAL(count_rows(second, t2, NULL, NULL), 1);
  CU_ASSERT(now_s() - started < 1.0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  /* Its snapshot still holds one row. */
  CU_ASSERT_EQUAL(store_fetch(second, t2, u, &row), LIPSYNC_ERR_NOT_FOUND);
  CU_ASSERT_EQUAL(count_rows(second, t2, NULL, NULL), 1);
  CU_ASSERT_EQUAL(store_commit(second), 0);
  /* A later one sees both. */
  CU_ASSERT_EQUAL(store_begin(third), 0);
  CU_ASSERT_EQUAL(
      store_open_table(third, tname(&fx, "t", name, sizeof name), &t3), 0);
  CU_ASSERT_EQUAL_FATAL(store_prepare_table(third, t3), 0);
  CU_ASSERT_EQUAL(store_fetch(third, t3, u, &row), 0);
  CU_ASSERT(row.nvalues == 1 && row.values[0].u.integer == 99);
  CU_ASSERT_EQUAL(count_rows(third, t3, NULL, NULL), 2);
  CU_ASSERT_EQUAL(store_commit(third), 0);
out:
  lipsync_store_free(second);
  lipsync_store_free(third);
  PQfinish(conn2);
  PQfinish(conn3);
  sfx_close(&fx);
}

/* interrupt() from another thread ends a lock wait at once: the second
 * sync of a table whose first sync is adding _lipsync_uuid waits for that
 * one's lock. */
static void test_interrupt_ends_lock_wait(void) {
  sfx fx;
  lipsync_store *second = NULL;
  PGconn *conn2 = NULL;
  lipsync_table *t = NULL, *t2 = NULL;
  lipsync_cursor *c = NULL;
  later_call later = {0};
  pthread_t thread;
  char name[512];
  double started, waited;

  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.t(a int)"))
    goto out;
  conn2 = PG_CONNECT();
  if (!conn2 || lipsync_store_pg_wrap(&second, conn2) != 0)
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_begin(second), 0);
  CU_ASSERT_EQUAL(
      store_open_table(second, tname(&fx, "t", name, sizeof name), &t2), 0);
  later.store = second;
  later.delay_ms = 300;
  started = now_s();
  if (pthread_create(&thread, NULL, interrupt_later, &later) != 0) {
    CU_FAIL("pthread_create");
    goto out;
  }
  if (t2)
    CU_ASSERT_EQUAL(store_prepare_table(second, t2), LIPSYNC_ERR_SHUTTING_DOWN);
  waited = now_s() - started;
  pthread_join(thread, NULL);
  CU_ASSERT(waited >= 0.25 && waited < 5);
  CU_ASSERT(contains(store_errmsg(second), "interrupted"));
  /* Every later call fails so, except rollback. */
  CU_ASSERT_EQUAL(store_open_table(second, name, &t2),
                  LIPSYNC_ERR_SHUTTING_DOWN);
  CU_ASSERT_EQUAL(store_commit(second), LIPSYNC_ERR_SHUTTING_DOWN);
  CU_ASSERT_EQUAL(store_rollback(second), 0);
  CU_ASSERT_EQUAL(store_begin(second), LIPSYNC_ERR_SHUTTING_DOWN);
  CU_ASSERT_EQUAL(PQtransactionStatus(conn2), PQTRANS_IDLE);
  /* The first store never noticed. */
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  /* An interrupt while a cursor is read ends the scan. */
  t = begin_prepared(&fx, "t");
  if (t) {
    CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
    lipsync_store_interrupt(fx.store);
    lipsync_row row;
    if (c)
      CU_ASSERT_EQUAL(store_next(fx.store, c, &row), LIPSYNC_ERR_SHUTTING_DOWN);
    store_close_cursor(fx.store, c);
    CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  }
out:
  lipsync_store_free(second);
  PQfinish(conn2);
  sfx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* The canonical-form checks against the server                         */
/* ------------------------------------------------------------------ */

/* What the server says of |text| as a |type|: 1 if it reads back
 * byte for byte, 0 if it reads back otherwise, -1 if refused. */
static int server_verdict(PGconn *conn, const char *type, const char *text) {
  char sql[200];
  const char *values[1] = {text};
  snprintf(sql, sizeof sql, "SELECT $1::text::%s::text", type);
  PGresult *r = PQexecParams(conn, sql, 1, NULL, values, NULL, NULL, 0);
  int verdict = -1;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
    verdict = strcmp(PQgetvalue(r, 0, 0), text) == 0;
  PQclear(r);
  return verdict;
}

static void test_forms_match_server(void) {
  static const struct {
    const char *type;
    pgtype t;
    const char *texts[40];
  } cases[] = {
      {"numeric",
       {PGTYPE_NUMERIC, -1},
       {"0",
        "-0",
        "12.50",
        "12.5",
        "1e3",
        "+1",
        "01.5",
        ".5",
        "1.",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "-0.001",
        " 1",
        "1 ",
        "0.00",
        "-0.00",
        "100",
        "1_000",
        "00",
        "12345678901234567890.000000001"}},
      {"numeric(5,2)",
       {PGTYPE_NUMERIC, ((5 << 16) | 2) + 4},
       {"12.50", "12.5", "999.99", "1000.00", "-999.99", "0.00", "0.05", "NaN",
        "Infinity", "12.500", "0"}},
      {"numeric(2,-3)",
       {PGTYPE_NUMERIC, ((2 << 16) | (-3 & 0x7FF)) + 4},
       {"12000", "12500", "500", "0", "99000", "100000", "1000"}},
      {"date",
       {PGTYPE_DATE, -1},
       {"2024-02-29",    "2023-02-29",    "2024-2-29",     "1969-12-31",
        "0001-01-01",    "0001-01-01 BC", "4713-01-01 BC", "4714-11-24 BC",
        "4714-11-23 BC", "5874897-12-31", "5874898-01-01", "10000-01-01",
        "infinity",      "-infinity",     "Infinity",      "0000-01-01",
        "01000-01-01",   "2024-01-01 AD", "20240101",      "0004-02-29 BC",
        "0005-02-29 BC", "1900-02-29",    "2000-02-29"}},
      {"timestamp",
       {PGTYPE_TIMESTAMP, -1},
       {"2024-01-01 12:34:56", "2024-01-01 12:34:56.5",
        "2024-01-01 12:34:56.50", "2024-01-01T12:34:56", "2024-01-01 24:00:00",
        "2024-01-01 23:59:60", "0044-03-15 12:00:00 BC",
        "294276-12-31 23:59:59.999999", "294277-01-01 00:00:00",
        "2024-01-01 12:34:56.1234567", "infinity", "2024-01-01",
        "2024-01-01 1:02:03", "2024-01-01 12:34:56+00"}},
      {"timestamp(0)",
       {PGTYPE_TIMESTAMP, 0},
       {"2024-01-01 12:34:56", "2024-01-01 12:34:56.5"}},
      {"timestamptz",
       {PGTYPE_TIMESTAMPTZ, -1},
       {"2024-01-01 12:34:56+00", "2024-01-01 12:34:56",
        "2024-01-01 12:34:56+01", "2024-01-01 12:34:56.25+00",
        "0001-01-01 00:00:00+00 BC", "infinity", "-infinity",
        "2024-01-01 12:34:56-00", "2024-01-01 12:34:56+00:00"}},
      {"uuid",
       {PGTYPE_UUID, -1},
       {"123e4567-e89b-12d3-a456-426614174000",
        "123E4567-E89B-12D3-A456-426614174000",
        "123e4567e89b12d3a456426614174000",
        "{123e4567-e89b-12d3-a456-426614174000}"}},
  };
  PGconn *conn = PG_CONNECT();
  if (!conn)
    return;
  PG_EXEC(conn, "SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (size_t k = 0; cases[i].texts[k]; k++) {
      const char *text = cases[i].texts[k];
      lipsync_value v = tu_text(text);
      char why[200], msg[300];
      bool ours = pgtype_check(&cases[i].t, &v, why, sizeof why);
      bool theirs = server_verdict(conn, cases[i].type, text) == 1;
      snprintf(msg, sizeof msg, "%s '%s': we say %d, the server %d",
               cases[i].type, text, ours, theirs);
      CU_assertImplementation(ours == theirs, __LINE__, msg, __FILE__, "",
                              CU_FALSE);
    }
  }
  /* JSON syntax: what json and jsonb accept. */
  static const char *const json_texts[] = {"1",
                                           " 1 ",
                                           "01",
                                           "-",
                                           "1.",
                                           "1e",
                                           "1e+",
                                           "[1,]",
                                           "{\"a\":1,}",
                                           "{\"a\" 1}",
                                           "\"\\u0000\"",
                                           "\"\\ud800\"",
                                           "\"\\udc00\"",
                                           "\"\\ud800\\udc00\"",
                                           "\"\\x\"",
                                           "\"\\u12g4\"",
                                           "\f1",
                                           "tru",
                                           "true1",
                                           "[1 2]",
                                           "\"\t\"",
                                           "{}",
                                           "[]",
                                           "NaN",
                                           "-0",
                                           "1E5",
                                           "{\"a\":{\"b\":[null]}}",
                                           "\"\\/\"",
                                           "1x",
                                           "[1]x",
                                           "nulls"};
  for (size_t k = 0; k < sizeof json_texts / sizeof json_texts[0]; k++) {
    for (int jsonb = 0; jsonb < 2; jsonb++) {
      const char *text = json_texts[k];
      char why[200], msg[300];
      const char *values[1] = {text};
      bool ours = pgtype_json_valid(text, strlen(text), jsonb, why, sizeof why);
      PGresult *r = PQexecParams(
          conn, jsonb ? "SELECT $1::text::jsonb" : "SELECT $1::text::json", 1,
          NULL, values, NULL, NULL, 0);
      bool theirs = PQresultStatus(r) == PGRES_TUPLES_OK;
      PQclear(r);
      snprintf(msg, sizeof msg, "%s '%s': we say %d, the server %d",
               jsonb ? "jsonb" : "json", text, ours, theirs);
      CU_assertImplementation(ours == theirs, __LINE__, msg, __FILE__, "",
                              CU_FALSE);
    }
  }
  PQfinish(conn);
}

/* ------------------------------------------------------------------ */
/* Change capture (spec 6.7)                                           */
/* ------------------------------------------------------------------ */

/* Two writers at once: neither waits for the other's commit. TRUNCATE
 * fires no row trigger: every live item becomes a tombstone all the same,
 * in its transaction, later than the live versions. */
static void test_capture_writers_and_truncate(void) {
  sfx fx;
  char sql[160];
  long long live;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a int, b text);"
                     "INSERT INTO t(a) VALUES (1)") ||
      !prepare_commit(&fx, "t"))
    goto out;
  APP_EXEC(&fx, "DELETE FROM t");
  APP_EXEC(&fx, "BEGIN; INSERT INTO t(a) VALUES (2)");
  FX_EXEC(&fx, "SET statement_timeout = '5s'");
  CU_ASSERT(FX_EXEC(&fx, "INSERT INTO t(a) VALUES (3)"));
  APP_EXEC(&fx, "COMMIT");
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(DISTINCT clock) FROM _lipsync_meta_t"
                         " WHERE NOT deleted",
                         -1),
                  2);
  live = FX_INT(&fx, "SELECT max(clock) FROM _lipsync_meta_t WHERE NOT deleted",
                -1);
  APP_EXEC(&fx, "BEGIN; TRUNCATE t; ROLLBACK");
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t WHERE NOT deleted", -1),
      2);
  APP_EXEC(&fx, "TRUNCATE t");
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t WHERE NOT deleted", -1),
      0);
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t WHERE deleted", -1), 3);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM _lipsync_meta_t WHERE deleted AND"
           " clock > %lld",
           live);
  CU_ASSERT_EQUAL(FX_INT(&fx, sql, -1), 2);
out:
  sfx_close(&fx);
}

/* Changes made with capture off: a prepare does not read the table to
 * find them, and a scan reads no row without a live item; the recount a
 * distrust makes due repairs them, giving rows without an item fresh
 * versions. */
static void test_repair_waits_for_recount(void) {
  sfx fx;
  lipsync_table *t;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a int, b text);"
                     "INSERT INTO t VALUES (1, 'x'), (2, NULL)") ||
      !prepare_commit(&fx, "t"))
    goto out;
  APP_EXEC(&fx, "INSERT INTO t(a) VALUES (3)");
  UNCAPTURED(&fx, "DELETE FROM t WHERE a = 1; INSERT INTO t(a) VALUES (4);"
                  " INSERT INTO t(a) VALUES (5)");
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t", -1), 3);
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 2);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM _lipsync_meta_t", -1), 3);
  CU_ASSERT_EQUAL(store_distrust(fx.store, sfx_name(&fx, "t")), 0);
  if (!prepare_commit(&fx, "t"))
    goto out;
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM _lipsync_meta_t WHERE"
                         " NOT deleted AND clock > 0",
                         -1),
                  3);
out:
  sfx_close(&fx);
}

static void test_long_name_refused(void) {
  sfx fx;
  lipsync_table *t = NULL;
  char name[256];
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.a123456789012345678901234567890123456789"
                     "0123456789012(a int)"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(
      store_open_table(fx.store,
                       tname(&fx,
                             "a1234567890123456789012345678901234567890123456"
                             "789012",
                             name, sizeof name),
                       &t),
      0);
  if (t) {
    CU_ASSERT_EQUAL(store_prepare_table(fx.store, t),
                    LIPSYNC_ERR_SCHEMA_MISMATCH);
    CU_ASSERT(contains(store_errmsg(fx.store), "too long"));
  }
  store_rollback(fx.store);
out:
  sfx_close(&fx);
}

/* A second store over a connection of its own; NULL (failure recorded) if
 * either cannot be made. */
static lipsync_store *other_store(PGconn **conn) {
  lipsync_store *store = NULL;
  *conn = PG_CONNECT();
  if (*conn && lipsync_store_pg_wrap(&store, *conn) != 0)
    CU_FAIL("lipsync_store_pg_wrap");
  return store;
}

/* ------------------------------------------------------------------ */
/* Incremental reconciliation (spec 8.8)                                */
/* ------------------------------------------------------------------ */

/* A position with transaction ids the database has not reached is not
 * one of its own. */
static void test_position_not_reached(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_position p, bad;
  lipsync_cursor *cur = NULL;
  pg_position pp, far;
  if (!SFX_OPEN(&fx, "CREATE TABLE t(a int)") || !prepare_commit(&fx, "t"))
    goto out;
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_position(fx.store, t, &p), 0);
  if (pgs_position_decode(&p, &pp) == 0) {
    far = pp;
    far.xmin += 1000000;
    far.xmax += 1000000;
    far.nxip = 0;
    pgs_position_encode(&far, &bad);
    CU_ASSERT_EQUAL(store_scan_changes(fx.store, t, &bad, &cur),
                    LIPSYNC_ERR_NOT_FOUND);
    CU_ASSERT(
        contains(store_errmsg(fx.store), "not a position of this database"));
    pgs_position_free(&pp);
  } else {
    CU_FAIL("cannot decode the position");
  }
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  sfx_close(&fx);
}

/* The encoding of positions, alone: a snapshot with more transactions in
 * progress than fit keeps the first ones and covers less. */
static void test_position_encoding(void) {
  enum { N = 3000 };
  pg_position p, q;
  lipsync_position out;
  memset(&p, 0, sizeof p);
  memset(p.site, 0xAB, sizeof p.site);
  p.xmin = 1000;
  p.xmax = 1000 + 100 * (uint64_t)N + 5;
  p.xip = malloc(N * sizeof *p.xip);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p.xip);
  for (size_t i = 0; i < N; i++)
    p.xip[i] = 1000 + 100 * i;
  p.has_own = true;
  p.own = p.xmax + 3;
  /* Few: exactly as given. */
  p.nxip = 5;
  pgs_position_encode(&p, &out);
  CU_ASSERT_EQUAL_FATAL(pgs_position_decode(&out, &q), 0);
  CU_ASSERT(q.xmin == p.xmin && q.xmax == p.xmax && q.nxip == 5 && q.has_own &&
            q.own == p.own && memcmp(q.site, p.site, LIPSYNC_SITE_LEN) == 0);
  for (size_t i = 0; i < q.nxip; i++)
    CU_ASSERT_EQUAL(q.xip[i], p.xip[i]);
  pgs_position_free(&q);
  /* Too many: a prefix, and xmax the first left out. */
  p.nxip = N;
  pgs_position_encode(&p, &out);
  CU_ASSERT(out.len <= LIPSYNC_POSITION_MAX);
  CU_ASSERT_EQUAL_FATAL(pgs_position_decode(&out, &q), 0);
  CU_ASSERT(q.nxip > 400 && q.nxip < N);
  CU_ASSERT_EQUAL(q.xmax, p.xip[q.nxip]);
  for (size_t i = 0; i < q.nxip; i++)
    CU_ASSERT_EQUAL(q.xip[i], p.xip[i]);
  CU_ASSERT(q.has_own && q.own == p.own);
  pgs_position_free(&q);
  /* No own transaction; none in progress. */
  p.nxip = 0;
  p.has_own = false;
  pgs_position_encode(&p, &out);
  CU_ASSERT_EQUAL_FATAL(pgs_position_decode(&out, &q), 0);
  CU_ASSERT(!q.has_own && q.nxip == 0 && q.xmax == p.xmax);
  pgs_position_free(&q);
  /* Out of order, or beyond xmax: not a position. */
  p.nxip = 2;
  p.xip[1] = p.xip[0];
  pgs_position_encode(&p, &out);
  CU_ASSERT_EQUAL(pgs_position_decode(&out, &q), LIPSYNC_ERR_NOT_FOUND);
  p.xip[1] = p.xmax;
  pgs_position_encode(&p, &out);
  CU_ASSERT_EQUAL(pgs_position_decode(&out, &q), LIPSYNC_ERR_NOT_FOUND);
  out.data[0] = 1;
  CU_ASSERT_EQUAL(pgs_position_decode(&out, &q), LIPSYNC_ERR_NOT_FOUND);
  free(p.xip);
}

/* The kept summary is the sum of the item digests after every kind of
 * change: captured inserts, updates, deletes and TRUNCATE, applied rows,
 * and maintenance's folds and purges. A session writes one delta row per
 * table it changed, and none when it changed nothing. */
static void test_kept_summary(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_item it;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN], un[LIPSYNC_UUID_LEN];
  uint8_t ut[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(50);
  static const char deltas[] = "SELECT count(*) FROM _lipsync.deltas WHERE"
                               " tbl = '{S}.t'";
  char deltas_sql[200];
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.t(a int);"
                     " INSERT INTO {S}.t SELECT i FROM generate_series(1, 20)"
                     " i"))
    goto out;
  snprintf(deltas_sql, sizeof deltas_sql, "%s", deltas);
  /* '{S}' quoted is "schema": the registry name is plain. */
  char *q = strstr(deltas_sql, "'{S}");
  snprintf(q, sizeof deltas_sql - (size_t)(q - deltas_sql), "'%s.t'",
           fx.schema);
  if (!prepare_commit(&fx, "t"))
    goto out;
  CHECK_SUMMARY(&fx, "t");
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 0);
  /* One delta row per changed row of a small statement (a large one
   * writes one for all: test_capture_forms); none for an UPDATE that
   * changed no value. */
  APP_EXEC(&fx, "INSERT INTO {S}.t VALUES (21), (22);"
                " UPDATE {S}.t SET a = a + 100 WHERE a <= 5;"
                " UPDATE {S}.t SET a = a WHERE a = 6;"
                " DELETE FROM {S}.t WHERE a BETWEEN 7 AND 9");
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 10);
  CHECK_SUMMARY(&fx, "t");
  /* A row deleted twice, and inserted again under the same UUID. */
  if (!uuid_of(&fx, 10, u1))
    goto out;
  APP_EXEC(&fx, "DELETE FROM {S}.t WHERE a = 10");
  char sql[200], text[37];
  lipsync_uuid_format(u1, text);
  snprintf(sql, sizeof sql, "INSERT INTO {S}.t VALUES (10, '%s')", text);
  APP_EXEC(&fx, sql);
  CHECK_SUMMARY(&fx, "t");
  APP_EXEC(&fx, "BEGIN; TRUNCATE {S}.t; ROLLBACK");
  CHECK_SUMMARY(&fx, "t");
  APP_EXEC(&fx, "TRUNCATE {S}.t; INSERT INTO {S}.t VALUES (1), (2)");
  CHECK_SUMMARY(&fx, "t");

  /* Applied rows: a new row, an update, a tombstone, a new tombstone. */
  long long before = FX_INT(&fx, deltas_sql, -1);
  if (!uuid_of(&fx, 1, u1) || !uuid_of(&fx, 2, u2))
    goto out;
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  uuid_fill(un, 0x42);
  uuid_fill(ut, 0x43);
  lipsync_row row = applied(un, &v, 1, version_of(1, 1), 0, NULL);
  CU_ASSERT_EQUAL(store_insert(fx.store, t, &row), 0);
  row = applied(ut, NULL, 0, version_of(2, 2), 1, NULL);
  CU_ASSERT_EQUAL(store_insert(fx.store, t, &row), 0);
  if (item_of(fx.store, t, u1, &it)) {
    row = applied(u1, &v, 1, version_of(it.version.clock + 1, 3), 0, &it);
    CU_ASSERT_EQUAL(store_update(fx.store, t, &row), 0);
  }
  if (item_of(fx.store, t, u2, &it)) {
    row = applied(u2, NULL, 0, version_of(it.version.clock + 1, 4), 1, &it);
    CU_ASSERT_EQUAL(store_update(fx.store, t, &row), 0);
  }
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  lipsync_finish f = {.max_clock = 10};
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t, &f), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), before + 1);
  /* Once it commits, the store folds the delta rows it saw. */
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 0);
  CHECK_SUMMARY(&fx, "t");
  /* A session that changed nothing writes no delta row. */
  t = begin_on(fx.store, &fx, "t");
  if (t)
    CU_ASSERT_EQUAL(store_finish_table(fx.store, t, &f), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  /* Maintenance folds every delta row, and purges old tombstones as one
   * more change. */
  APP_EXEC(&fx, "INSERT INTO {S}.t VALUES (60)");
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 1);
  CU_ASSERT_EQUAL(lipsync_store_maintain(fx.store, 0), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 0);
  CHECK_SUMMARY(&fx, "t");
  long long tombs = FX_INT(&fx,
                           "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                           " deleted",
                           -1);
  CU_ASSERT(tombs > 2);
  CU_ASSERT_EQUAL(fx.store->methods->maintain(fx.store, 3), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " deleted",
                         -1),
                  tombs - 1);
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 0);
  CHECK_SUMMARY(&fx, "t");
  /* A table another process maintains is left alone. */
  APP_EXEC(&fx, "INSERT INTO {S}.t VALUES (77)");
  char lock[300];
  snprintf(lock, sizeof lock,
           "BEGIN; SELECT pg_advisory_xact_lock(1818849395,"
           " hashtext('%s.t'))",
           fx.schema);
  APP_EXEC(&fx, lock);
  CU_ASSERT_EQUAL(lipsync_store_maintain(fx.store, 0), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 1);
  APP_EXEC(&fx, "ROLLBACK");
  CU_ASSERT_EQUAL(lipsync_store_maintain(fx.store, 0), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 0);
  CHECK_SUMMARY(&fx, "t");
out:
  sfx_close(&fx);
}

/* Two sessions apply different rows of one table at once: neither waits,
 * both commit. Two that write the same row: the second fails with
 * TRY_AGAIN, after waiting for the first when it is still open. */
static void test_concurrent_sessions(void) {
  sfx fx;
  PGconn *conn2 = NULL;
  lipsync_store *second = NULL;
  lipsync_table *t1, *t2;
  lipsync_item i1, i2;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN], n1[LIPSYNC_UUID_LEN];
  uint8_t n2[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(7);
  lipsync_finish f = {.max_clock = 1};
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.t(a int);"
                     " INSERT INTO {S}.t VALUES (1), (2)"))
    goto out;
  second = other_store(&conn2);
  if (!second || !begin_prepared(&fx, "t") || store_commit(fx.store) != 0 ||
      !uuid_of(&fx, 1, u1) || !uuid_of(&fx, 2, u2))
    goto out;
  t1 = begin_on(fx.store, &fx, "t");
  t2 = begin_on(second, &fx, "t");
  if (!t1 || !t2 || !item_of(fx.store, t1, u1, &i1) ||
      !item_of(second, t2, u2, &i2))
    goto out;
  uuid_fill(n1, 0x11);
  uuid_fill(n2, 0x22);
  lipsync_row r =
      applied(u1, &v, 1, version_of(i1.version.clock + 5, 1), 0, &i1);
  CU_ASSERT_EQUAL(store_update(fx.store, t1, &r), 0);
  r = applied(n1, &v, 1, version_of(5, 1), 0, NULL);
  CU_ASSERT_EQUAL(store_insert(fx.store, t1, &r), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  r = applied(u2, NULL, 0, version_of(i2.version.clock + 5, 2), 1, &i2);
  CU_ASSERT_EQUAL(store_update(second, t2, &r), 0);
  r = applied(n2, &v, 1, version_of(6, 2), 0, NULL);
  CU_ASSERT_EQUAL(store_insert(second, t2, &r), 0);
  CU_ASSERT_EQUAL(store_flush(second), 0);
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t1, &f), 0);
  CU_ASSERT_EQUAL(store_finish_table(second, t2, &f), 0);
  CU_ASSERT_EQUAL(store_commit(second), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.t", -1), 3);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " get_byte(site, 0) IN (1, 2)",
                         -1),
                  4);
  CHECK_SUMMARY(&fx, "t");

  /* The same row, one after the other. */
  t1 = begin_on(fx.store, &fx, "t");
  t2 = begin_on(second, &fx, "t");
  if (!t1 || !t2 || !item_of(fx.store, t1, u1, &i1) ||
      !item_of(second, t2, u1, &i2))
    goto out;
  r = applied(u1, &v, 1, version_of(i1.version.clock + 1, 3), 1, &i1);
  CU_ASSERT_EQUAL(store_update(fx.store, t1, &r), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t1, &f), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  lipsync_value w = tu_int(8);
  r = applied(u1, &w, 1, version_of(i2.version.clock + 2, 4), 0, &i2);
  CU_ASSERT_EQUAL(store_update(second, t2, &r), 0);
  CU_ASSERT_EQUAL(store_flush(second), LIPSYNC_ERR_TRY_AGAIN);
  CU_ASSERT(contains(store_errmsg(second), "another writer changed a row"));
  CU_ASSERT(contains(store_errmsg(second), "sync again"));
  CU_ASSERT_EQUAL(store_rollback(second), 0);

  /* The same row while the first is open: the second waits, then fails. */
  later_call later = {.store = fx.store, .delay_ms = 300, .rc = -1};
  pthread_t thread;
  t1 = begin_on(fx.store, &fx, "t");
  t2 = begin_on(second, &fx, "t");
  if (!t1 || !t2 || !item_of(fx.store, t1, u2, &i1) ||
      !item_of(second, t2, u2, &i2))
    goto out;
  r = applied(u2, &v, 1, version_of(i1.version.clock + 1, 5), 0, &i1);
  CU_ASSERT_EQUAL(store_update(fx.store, t1, &r), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t1, &f), 0);
  double started = now_s();
  if (pthread_create(&thread, NULL, commit_later, &later) != 0) {
    CU_FAIL("pthread_create");
    goto out;
  }
  r = applied(u2, &w, 1, version_of(i2.version.clock + 2, 6), 0, &i2);
  CU_ASSERT_EQUAL(store_update(second, t2, &r), 0);
  CU_ASSERT_EQUAL(store_flush(second), LIPSYNC_ERR_TRY_AGAIN);
  CU_ASSERT(now_s() - started >= 0.25);
  pthread_join(thread, NULL);
  CU_ASSERT_EQUAL(later.rc, 0);
  CU_ASSERT_EQUAL(store_rollback(second), 0);
  CHECK_SUMMARY(&fx, "t");
out:
  lipsync_store_free(second);
  PQfinish(conn2);
  sfx_close(&fx);
}

/* A session that reads blocks no writer; a writer's lock that the session
 * waits for longer than its lock timeout is TRY_AGAIN. */
static void test_reader_blocks_no_writer(void) {
  sfx fx;
  lipsync_table *t;
  lipsync_item it;
  lipsync_summary before, after;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(5);
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.t(a int);"
                     " INSERT INTO {S}.t SELECT i FROM generate_series(1, 50)"
                     " i"))
    goto out;
  if (!prepare_commit(&fx, "t") || !uuid_of(&fx, 1, u))
    goto out;
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_summarize(fx.store, t, &before), 0);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 50);
  APP_EXEC(&fx, "SET statement_timeout = '5s'");
  double started = now_s();
  APP_EXEC(&fx, "UPDATE {S}.t SET a = 100 WHERE a = 1;"
                " INSERT INTO {S}.t VALUES (51);"
                " DELETE FROM {S}.t WHERE a = 2");
  CU_ASSERT(now_s() - started < 2);
  /* The session still reads its snapshot. */
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 50);
  CU_ASSERT_EQUAL(store_summarize(fx.store, t, &after), 0);
  CU_ASSERT(after.count == before.count &&
            memcmp(after.sum, before.sum, LIPSYNC_DIGEST_LEN) == 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CHECK_SUMMARY(&fx, "t");

  /* A row another transaction holds: waited for, for the lock timeout. */
  APP_EXEC(&fx, "BEGIN; UPDATE {S}.t SET a = 101 WHERE a = 100");
  lipsync_store_set_lock_timeout(fx.store, 300);
  t = begin_on(fx.store, &fx, "t");
  if (t && item_of(fx.store, t, u, &it)) {
    lipsync_row r =
        applied(u, &v, 1, version_of(it.version.clock + 1, 9), 0, &it);
    started = now_s();
    CU_ASSERT_EQUAL(store_update(fx.store, t, &r), 0);
    CU_ASSERT_EQUAL(store_flush(fx.store), LIPSYNC_ERR_TRY_AGAIN);
    CU_ASSERT(now_s() - started >= 0.25 && now_s() - started < 5);
    CU_ASSERT(contains(store_errmsg(fx.store), "waited 0.3 s for a lock"));
  }
  store_rollback(fx.store);
  lipsync_store_set_lock_timeout(fx.store, 0);
  APP_EXEC(&fx, "ROLLBACK");
out:
  sfx_close(&fx);
}

/* Installing capture on a table that has _lipsync_uuid already: a row
 * another connection commits after the session began, before its first
 * prepare, is counted (the table is locked before the snapshot), and no
 * recount is left due. */
static void test_install_sees_concurrent_rows(void) {
  sfx fx;
  lipsync_table *t = NULL;
  char name[512];
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.t(a int, _lipsync_uuid uuid UNIQUE"
                     " DEFAULT gen_random_uuid());"
                     " INSERT INTO {S}.t(a) VALUES (1), (2)"))
    goto out;
  CU_ASSERT_EQUAL(store_begin_read(fx.store), 0);
  CU_ASSERT_EQUAL_FATAL(
      store_open_table(fx.store, tname(&fx, "t", name, sizeof name), &t), 0);
  APP_EXEC(&fx, "INSERT INTO {S}.t(a) VALUES (3)");
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), 0);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 3);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}._lipsync_meta_t", -1),
                  3);
  CU_ASSERT_EQUAL(pg_registry(&fx, "t", "recount"), 0);
  CHECK_SUMMARY(&fx, "t");
out:
  sfx_close(&fx);
}

/* A load into a table that had no row and no item when prepared locks it
 * against other writers (its indexes are built after the load), not
 * against readers; a table that has rows is not locked. */
static void test_bulk_load_locks_writers(void) {
  sfx fx;
  lipsync_table *t;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(1);
  if (!SFX_OPEN(&fx, "CREATE TABLE {S}.t(a int)") || !prepare_commit(&fx, "t"))
    goto out;
  APP_EXEC(&fx, "SET lock_timeout = '200ms'");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  /* Prepared, before its first insert: nothing is locked. */
  APP_EXEC(&fx, "SELECT count(*) FROM {S}.t");
  uuid_fill(u, 0x21);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  char *q = sfx_expand(&fx, "INSERT INTO {S}.t VALUES (2)");
  PGresult *r = PQexec(pg_app(&fx), q);
  free(q);
  CU_ASSERT_STRING_EQUAL(pgs_sqlstate(r), "55P03");
  PQclear(r);
  CU_ASSERT(APP_EXEC(&fx, "SELECT count(*) FROM {S}.t"));
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  /* Now the table has a row: a sync that inserts locks nothing. */
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  uuid_fill(u, 0x22);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT(APP_EXEC(&fx, "INSERT INTO {S}.t VALUES (3)"));
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.t", -1), 3);
out:
  sfx_close(&fx);
}

/* A database of its own, |name|, created afresh (and one connection to
 * it), for tests that change _lipsync or copy a database. */
static PGconn *scratch_db(PGconn *admin, const char *name,
                          const char *template) {
  char sql[300], conninfo[1024];
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", name);
  PG_EXEC(admin, sql);
  snprintf(sql, sizeof sql, "CREATE DATABASE %s%s%s", name,
           template ? " TEMPLATE " : "", template ? template : "");
  if (!PG_EXEC(admin, sql))
    return NULL;
  snprintf(conninfo, sizeof conninfo, "%s dbname=%s", getenv(CONNINFO_ENV),
           name);
  PGconn *conn = PQconnectdb(conninfo);
  if (PQstatus(conn) != CONNECTION_OK) {
    CU_FAIL("cannot connect to the scratch database");
    PQfinish(conn);
    return NULL;
  }
  PQsetNoticeProcessor(conn, quiet_notice, NULL);
  return conn;
}

static void drop_db(PGconn *admin, const char *name) {
  char sql[200];
  snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", name);
  if (admin)
    PG_EXEC(admin, sql);
}

/* The site id, and the table t ready, in a session on |store|. */
static bool site_of(lipsync_store *store, uint8_t site[LIPSYNC_SITE_LEN]) {
  lipsync_table *t = NULL;
  lipsync_version v;
  bool ok = store_begin(store) == 0 && store_open_table(store, "t", &t) == 0 &&
            store_prepare_table(store, t) == 0 && store_tick(store, &v) == 0;
  if (!ok)
    fprintf(stderr, "\n  %s\n", store_errmsg(store));
  memcpy(site, v.site, LIPSYNC_SITE_LEN);
  return store_commit(store) == 0 && ok;
}

/* A database created from another as a template is a copy: its first
 * session gives it a site id of its own and drops the original's
 * checkpoints and tokens. */
static void test_copied_database(void) {
  char src[64], dst[64];
  PGconn *admin = PG_CONNECT(), *a = NULL, *b = NULL;
  lipsync_store *sa = NULL, *sb = NULL;
  uint8_t site_a[LIPSYNC_SITE_LEN], site_b[LIPSYNC_SITE_LEN];
  uint8_t again[LIPSYNC_SITE_LEN];
  snprintf(src, sizeof src, "lipsync_src_%ld", (long)getpid());
  snprintf(dst, sizeof dst, "lipsync_dst_%ld", (long)getpid());
  if (!admin || !(a = scratch_db(admin, src, NULL)))
    goto out;
  PG_EXEC(a, "CREATE TABLE t(a int); INSERT INTO t VALUES (1)");
  if (lipsync_store_pg_wrap(&sa, a) != 0 || !site_of(sa, site_a))
    goto out;
  PG_EXEC(a, "UPDATE _lipsync.tables SET ck_token = '\\x01', ck_site ="
             " '\\x02'; INSERT INTO _lipsync.peers VALUES ('public.t',"
             " '\\x03', '\\x04')");
  lipsync_store_free(sa);
  sa = NULL;
  PQfinish(a);
  a = NULL;
  if (!(b = scratch_db(admin, dst, src)))
    goto out;
  CU_ASSERT_EQUAL(PG_INT(b, "SELECT count(*) FROM _lipsync.peers", -1), 1);
  if (lipsync_store_pg_wrap(&sb, b) != 0 || !site_of(sb, site_b))
    goto out;
  CU_ASSERT(memcmp(site_a, site_b, LIPSYNC_SITE_LEN) != 0);
  CU_ASSERT_EQUAL(PG_INT(b, "SELECT count(*) FROM _lipsync.peers", -1), 0);
  CU_ASSERT_EQUAL(PG_INT(b,
                         "SELECT count(*) FROM _lipsync.tables WHERE"
                         " ck_token IS NOT NULL OR ck_site IS NOT NULL",
                         -1),
                  0);
  /* It keeps it; the original keeps its own. */
  CU_ASSERT(site_of(sb, again) && memcmp(again, site_b, LIPSYNC_SITE_LEN) == 0);
  lipsync_store_free(sb);
  sb = NULL;
  PQfinish(b);
  b = NULL;
  char conninfo[1024];
  snprintf(conninfo, sizeof conninfo, "%s dbname=%s", getenv(CONNINFO_ENV),
           src);
  a = PQconnectdb(conninfo);
  if (PQstatus(a) == CONNECTION_OK && lipsync_store_pg_wrap(&sa, a) == 0)
    CU_ASSERT(site_of(sa, again) &&
              memcmp(again, site_a, LIPSYNC_SITE_LEN) == 0);
  CU_ASSERT_EQUAL(PG_INT(a, "SELECT count(*) FROM _lipsync.peers", -1), 1);
out:
  lipsync_store_free(sa);
  lipsync_store_free(sb);
  PQfinish(a);
  PQfinish(b);
  drop_db(admin, dst);
  drop_db(admin, src);
  PQfinish(admin);
}

#define RESERVED_OBJECTS                                                       \
  "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE"               \
  " '\\_lipsync%') + (SELECT count(*) FROM pg_class WHERE relname LIKE"        \
  " '\\_lipsync%') + (SELECT count(*) FROM pg_proc WHERE proname LIKE"         \
  " '\\_lipsync%') + (SELECT count(*) FROM pg_trigger WHERE tgname LIKE"       \
  " '\\_lipsync%')"

#define UUIDS_OF_T                                                             \
  "SELECT string_agg(_lipsync_uuid::text, ',' ORDER BY a) FROM t"

/* drop_capture of every table, in a database of its own: nothing under the
 * reserved prefix is left (a partitioned table's, a table's in another
 * schema and a table's since dropped included), the rows keep their UUIDs,
 * every table takes writes, and capture installed again has a new site id.
 * Another implementation's table is refused, and nothing changes. */
static void test_drop_all_capture(void) {
  char db[64], err[256];
  PGconn *admin = PG_CONNECT(), *conn = NULL;
  lipsync_store *store = NULL;
  char *uuids = NULL, *again = NULL;
  uint8_t site[LIPSYNC_SITE_LEN], site2[LIPSYNC_SITE_LEN];
  snprintf(db, sizeof db, "lipsync_drop_%ld", (long)getpid());
  if (!admin || !(conn = scratch_db(admin, db, NULL)))
    goto out;
  PG_EXEC(conn, "CREATE TABLE t(a int); INSERT INTO t VALUES (1), (2);"
                " CREATE TABLE p(a int) PARTITION BY RANGE (a);"
                " CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (9);"
                " INSERT INTO p VALUES (1); CREATE SCHEMA geo;"
                " CREATE TABLE geo.g(a int); CREATE TABLE gone(a int)");
  if (lipsync_store_pg_wrap(&store, conn) != 0 || !site_of(store, site))
    goto out;
  static const char *const names[] = {"p", "geo.g", "gone"};
  CU_ASSERT_EQUAL(lipsync_store_init_tables(store, names, 3, err, sizeof err),
                  0);
  PG_EXEC(conn, "DROP TABLE gone");
  uuids = PG_TEXT(conn, UUIDS_OF_T);

  PG_EXEC(conn, "CREATE TABLE _lipsync_items(x int)");
  long long objects = PG_INT(conn, RESERVED_OBJECTS, -1);
  CU_ASSERT(objects > 10);
  CU_ASSERT_EQUAL(lipsync_store_drop_capture(store, NULL, 0, err, sizeof err),
                  LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(err, "_lipsync_items"));
  CU_ASSERT_EQUAL(PG_INT(conn, RESERVED_OBJECTS, -1), objects);
  PG_EXEC(conn, "DROP TABLE _lipsync_items");

  CU_ASSERT_EQUAL(lipsync_store_drop_capture(store, NULL, 0, err, sizeof err),
                  4);
  CU_ASSERT_EQUAL(PG_INT(conn, RESERVED_OBJECTS, -1), 0);
  again = PG_TEXT(conn, UUIDS_OF_T);
  CU_ASSERT(uuids && again && strcmp(uuids, again) == 0);
  free(again);
  again = NULL;
  PG_EXEC(conn, "INSERT INTO t VALUES (3); UPDATE p SET a = 2;"
                " DELETE FROM geo.g; TRUNCATE t");
  PG_EXEC(conn, "INSERT INTO t VALUES (1), (2)");
  CU_ASSERT_EQUAL(PG_INT(conn,
                         "SELECT count(*) FROM t WHERE _lipsync_uuid"
                         " IS NULL",
                         -1),
                  0);
  CU_ASSERT_EQUAL(lipsync_store_drop_capture(store, NULL, 0, err, sizeof err),
                  0);
  if (!site_of(store, site2))
    goto out;
  CU_ASSERT(memcmp(site, site2, LIPSYNC_SITE_LEN) != 0);
  again = PG_TEXT(conn, "SELECT count(*) FROM _lipsync_meta_t");
  CU_ASSERT(again && strcmp(again, "2") == 0);
out:
  free(uuids);
  free(again);
  lipsync_store_free(store);
  PQfinish(conn);
  drop_db(admin, db);
  PQfinish(admin);
}

/* A database of the previous layout (no sums, positions, checkpoints or
 * tokens; triggers with two arguments) is brought up to date in place by
 * its next session, its kept summary computed from its items, and
 * recounted by the one after. */
static void test_migrate_previous_layout(void) {
  char db[64];
  PGconn *admin = PG_CONNECT(), *conn = NULL;
  lipsync_store *store = NULL;
  lipsync_table *t = NULL;
  lipsync_summary kept, all;
  snprintf(db, sizeof db, "lipsync_old_%ld", (long)getpid());
  if (!admin || !(conn = scratch_db(admin, db, NULL)))
    goto out;
  PG_EXEC(conn, "CREATE TABLE t(a int); INSERT INTO t VALUES (1), (2), (3)");
  uint8_t site[LIPSYNC_SITE_LEN];
  if (lipsync_store_pg_wrap(&store, conn) != 0 || !site_of(store, site))
    goto out;
  /* Back to the previous layout, capturing as it did. */
  static const char *const triggers[][2] = {
      {"_lipsync_capture_insert", "AFTER INSERT"},
      {"_lipsync_capture_update", "AFTER UPDATE"},
      {"_lipsync_capture_delete", "AFTER DELETE"}};
  PG_EXEC(conn, "ALTER TABLE _lipsync.state DROP COLUMN layout,"
                " DROP COLUMN home;"
                " ALTER TABLE _lipsync.tables DROP COLUMN sum, DROP COLUMN"
                " count, DROP COLUMN recount, DROP COLUMN position,"
                " DROP COLUMN ck_site, DROP COLUMN ck_token,"
                " DROP COLUMN ck_position;"
                " DROP TABLE _lipsync.peers, _lipsync.deltas;"
                " DROP FUNCTION _lipsync.sum128(numeric, numeric);"
                " ALTER TABLE _lipsync_meta_t DROP COLUMN xid,"
                " DROP COLUMN rowdig;"
                " DROP TRIGGER _lipsync_capture_truncate ON t;"
                " CREATE TRIGGER _lipsync_capture_truncate AFTER TRUNCATE ON"
                " t FOR EACH STATEMENT EXECUTE FUNCTION"
                " _lipsync.capture_truncate('public', '_lipsync_meta_t')");
  for (size_t i = 0; i < 3; i++) {
    char sql[400];
    snprintf(sql, sizeof sql,
             "DROP TRIGGER %s ON t; CREATE TRIGGER %s %s ON t FOR EACH ROW"
             " EXECUTE FUNCTION _lipsync.capture('public',"
             " '_lipsync_meta_t')",
             triggers[i][0], triggers[i][0], triggers[i][1]);
    PG_EXEC(conn, sql);
  }
  PG_EXEC(conn, "UPDATE t SET a = 10 WHERE a = 1; DELETE FROM t WHERE a = 2;"
                " INSERT INTO t VALUES (4)");
  CU_ASSERT_EQUAL(
      PG_INT(conn, "SELECT count(*) FROM _lipsync_meta_t WHERE clock > 0", -1),
      3);
  /* The next session migrates, the function of the old triggers still
   * capturing meanwhile. */
  if (store_begin(store) == 0 && store_open_table(store, "t", &t) == 0) {
    CU_ASSERT_EQUAL(store_prepare_table(store, t), 0);
    CU_ASSERT_EQUAL(store_summarize(store, t, &kept), 0);
    CU_ASSERT_EQUAL(sum_items(store, t, &all), 0);
    CU_ASSERT_EQUAL(kept.count, 4);
    CU_ASSERT_EQUAL(all.count, 4);
    CU_ASSERT(memcmp(kept.sum, all.sum, LIPSYNC_DIGEST_LEN) == 0);
  }
  CU_ASSERT_EQUAL(store_commit(store), 0);
  CU_ASSERT_EQUAL(PG_INT(conn, "SELECT layout FROM _lipsync.state", -1), 3);
  /* Statement triggers calling the table's function, on this ordinary
   * table; TRUNCATE's with its three arguments. */
  CU_ASSERT_EQUAL(PG_INT(conn,
                         "SELECT count(*) FROM pg_trigger WHERE tgrelid ="
                         " 't'::regclass AND tgtype & 1 = 0 AND tgfoid ="
                         " '_lipsync_cap_t()'::regprocedure",
                         -1),
                  3);
  CU_ASSERT_EQUAL(PG_INT(conn,
                         "SELECT count(*) FROM pg_trigger WHERE tgrelid ="
                         " 't'::regclass AND tgnargs = 3",
                         -1),
                  1);
  /* The table was locked before the session's snapshot: no change can
   * have escaped, no recount is due. */
  CU_ASSERT_EQUAL(PG_INT(conn,
                         "SELECT count(*) FROM _lipsync.tables WHERE"
                         " recount",
                         -1),
                  0);
  PG_EXEC(conn, "UPDATE t SET a = 40 WHERE a = 4");
  CU_ASSERT_EQUAL(PG_INT(conn, "SELECT count(*) FROM _lipsync.deltas", -1), 1);
  if (store_begin(store) == 0 && store_open_table(store, "t", &t) == 0) {
    CU_ASSERT_EQUAL(store_prepare_table(store, t), 0);
    CU_ASSERT_EQUAL(store_summarize(store, t, &kept), 0);
    CU_ASSERT_EQUAL(sum_items(store, t, &all), 0);
    CU_ASSERT(kept.count == 4 &&
              memcmp(kept.sum, all.sum, LIPSYNC_DIGEST_LEN) == 0);
  }
  CU_ASSERT_EQUAL(store_commit(store), 0);
out:
  lipsync_store_free(store);
  PQfinish(conn);
  drop_db(admin, db);
  PQfinish(admin);
}

int register_store_pg_tests(void) {
  static const tu_test forms[] = {
      {"decimal forms", test_decimal_forms},
      {"date and time forms", test_date_time_forms},
      {"JSON syntax", test_json_forms},
      {"value checks", test_value_checks},
      {NULL, NULL},
  };
  static const tu_test tests[] = {
      {"open every type", test_open_every_type},
      {"unmapped types refused", test_unmapped_types_refused},
      {"PostgreSQL names", test_pg_names},
      {"quoted schema, names in two cases", test_quoted_schema},
      {"list tables", test_list_tables},
      {"UUID column: default, type", test_uuid_column},
      {"interleaved insert and read", test_interleaved_insert_and_read},
      {"insert edge values", test_insert_edge_values},
      {"session settings do not matter", test_session_settings_do_not_matter},
      {"insert refusals", test_insert_refusals},
      {"jsonb normal form", test_jsonb_normal_form},
      {"citext and name", test_other_text_types},
      {"index of an empty table", test_index_of_empty_table},
      {"generated and partitioned", test_generated_and_partitioned},
      {"capture: statement and row triggers", test_capture_forms},
      {"constraint violation", test_constraint_violation},
      {"open errors", test_open_errors},
      {"canonical forms match the server", test_forms_match_server},
      {"a second sync does not wait", test_second_sync_does_not_wait},
      {"interrupt ends a lock wait", test_interrupt_ends_lock_wait},
      {"capture: two writers, TRUNCATE", test_capture_writers_and_truncate},
      {"repair waits for a recount", test_repair_waits_for_recount},
      {"name too long for capture", test_long_name_refused},
      {"position not reached", test_position_not_reached},
      {"position encoding", test_position_encoding},
      {"kept summary", test_kept_summary},
      {"concurrent sessions", test_concurrent_sessions},
      {"a reader blocks no writer", test_reader_blocks_no_writer},
      {"install sees concurrent rows", test_install_sees_concurrent_rows},
      {"a load into an empty table locks writers",
       test_bulk_load_locks_writers},
      {"copied database", test_copied_database},
      {"drop all capture", test_drop_all_capture},
      {"previous layout migrated", test_migrate_previous_layout},
      {NULL, NULL},
  };
  int rc = tu_add_suite("pg_types", forms);
  if (rc == CUE_SUCCESS)
    rc = tu_add_suite_init("store/pg/shared", use_pg, store_common_tests);
  return rc != CUE_SUCCESS
             ? rc
             : tu_add_suite_init("store/pg/specific", use_pg, tests);
}
