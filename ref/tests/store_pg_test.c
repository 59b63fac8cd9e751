/*
 * store_pg_test.c: the PostgreSQL backend (store_pg.c) through its methods
 * table, as the session uses it, against a live server; and the canonical
 * forms of PostgreSQL values (pg_types.c), alone and checked against what
 * the server itself accepts and prints.
 *
 * The server is the one LIPSYNC_PG_CONNINFO names (make check starts a
 * throwaway one). Without it every server test fails: CI always has one.
 * Each test works in a schema of its own, dropped at the end, so tests can
 * share a database.
 */
#include "canon.h"
#include "pg_types.h"
#include "store.h"
#include "store_pg_int.h"
#include "test_util.h"

#include <float.h>
#include <libpq-fe.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CONNINFO_ENV "LIPSYNC_PG_CONNINFO"

/* ------------------------------------------------------------------ */
/* Helpers                                                              */
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

/* Runs |sql| (any number of statements), recording a failure on error. */
#define PG_EXEC(conn, sql) pg_exec_at((conn), (sql), __FILE__, __LINE__)
static bool pg_exec_at(PGconn *conn, const char *sql, const char *file,
                       int line) {
  PGresult *r = PQexec(conn, sql);
  ExecStatusType st = PQresultStatus(r);
  bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok) {
    char msg[1200];
    snprintf(msg, sizeof msg, "SQL failed: %.600s: %s", sql,
             PQerrorMessage(conn));
    record_failure(msg, file, line);
  }
  PQclear(r);
  return ok;
}

/* The first column of the first row of |sql| as text, malloc'd; NULL if
 * there is none (or it is NULL). */
#define PG_TEXT(conn, sql) pg_text_at((conn), (sql), __FILE__, __LINE__)
static char *pg_text_at(PGconn *conn, const char *sql, const char *file,
                        int line) {
  PGresult *r = PQexec(conn, sql);
  char *v = NULL;
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    char msg[1200];
    snprintf(msg, sizeof msg, "SQL failed: %.600s: %s", sql,
             PQerrorMessage(conn));
    record_failure(msg, file, line);
  } else if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
    v = strdup(PQgetvalue(r, 0, 0));
  }
  PQclear(r);
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

static bool contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

/* A store over a connection of its own, in a schema of the test's own. */
typedef struct fixture {
  PGconn *conn;
  lipsync_store *store;
  char schema[64];   /* its name */
  char qschema[200]; /* quoted */
} fixture;

static unsigned schema_seq;

/* |sql| with every "{S}" replaced by the fixture's quoted schema. */
static char *expand(const fixture *fx, const char *sql) {
  size_t n = 1;
  for (const char *p = sql; *p; p++)
    n += strncmp(p, "{S}", 3) == 0 ? strlen(fx->qschema) : 1;
  char *out = malloc(n), *o = out;
  if (!out)
    return NULL;
  for (const char *p = sql; *p;) {
    if (strncmp(p, "{S}", 3) == 0) {
      strcpy(o, fx->qschema);
      o += strlen(fx->qschema);
      p += 3;
    } else {
      *o++ = *p++;
    }
  }
  *o = '\0';
  return out;
}

#define FX_EXEC(fx, sql) fx_exec_at((fx), (sql), __FILE__, __LINE__)
static bool fx_exec_at(fixture *fx, const char *sql, const char *file,
                       int line) {
  char *full = expand(fx, sql);
  bool ok = full && pg_exec_at(fx->conn, full, file, line);
  free(full);
  return ok;
}

#define FX_INT(fx, sql, dflt) fx_int_at((fx), (sql), (dflt), __FILE__, __LINE__)
static long long fx_int_at(fixture *fx, const char *sql, long long dflt,
                           const char *file, int line) {
  char *full = expand(fx, sql);
  long long v = full ? pg_int_at(fx->conn, full, dflt, file, line) : dflt;
  free(full);
  return v;
}

#define FX_TEXT(fx, sql) fx_text_at((fx), (sql), __FILE__, __LINE__)
static char *fx_text_at(fixture *fx, const char *sql, const char *file,
                        int line) {
  char *full = expand(fx, sql);
  char *v = full ? pg_text_at(fx->conn, full, file, line) : NULL;
  free(full);
  return v;
}

/* Opens a fixture in the schema |schema| (created afresh), runs |setup|. */
static bool fx_open_schema(fixture *fx, const char *schema, const char *setup) {
  memset(fx, 0, sizeof *fx);
  snprintf(fx->schema, sizeof fx->schema, "%s", schema);
  fx->conn = PG_CONNECT();
  if (!fx->conn)
    return false;
  char *q = PQescapeIdentifier(fx->conn, schema, strlen(schema));
  if (!q)
    return false;
  snprintf(fx->qschema, sizeof fx->qschema, "%s", q);
  PQfreemem(q);
  if (!FX_EXEC(fx, "DROP SCHEMA IF EXISTS {S} CASCADE; CREATE SCHEMA {S}"))
    return false;
  if (setup && !FX_EXEC(fx, setup))
    return false;
  CU_ASSERT_EQUAL(lipsync_store_pg_wrap(&fx->store, fx->conn), 0);
  return fx->store != NULL;
}

static bool fx_open(fixture *fx, const char *setup) {
  char schema[64];
  snprintf(schema, sizeof schema, "lipsync_test_%ld_%u", (long)getpid(),
           ++schema_seq);
  return fx_open_schema(fx, schema, setup);
}

static void fx_close(fixture *fx) {
  lipsync_store_free(fx->store);
  fx->store = NULL;
  if (!fx->conn)
    return;
  if (PQtransactionStatus(fx->conn) != PQTRANS_IDLE)
    PQclear(PQexec(fx->conn, "ROLLBACK"));
  if (fx->qschema[0])
    FX_EXEC(fx, "DROP SCHEMA IF EXISTS {S} CASCADE");
  PQfinish(fx->conn);
  fx->conn = NULL;
}

/* "schema.table" for the store. */
static const char *tname(const fixture *fx, const char *table, char *out,
                         size_t outlen) {
  snprintf(out, outlen, "%s.%s", fx->schema, table);
  return out;
}

/* Begins, opens |table| of the fixture's schema and prepares it. NULL
 * (failure recorded) if any step fails. */
static lipsync_table *begin_prepared(fixture *fx, const char *table) {
  char name[512];
  lipsync_table *t = NULL;
  int rc = store_begin(fx->store);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc == 0)
    rc = store_open_table(fx->store, tname(fx, table, name, sizeof name), &t);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc == 0)
    rc = store_prepare_table(fx->store, t);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc)
    fprintf(stderr, "\n  %s: %s\n", table, store_errmsg(fx->store));
  return rc == 0 ? t : NULL;
}

static int insert_row(lipsync_store *store, lipsync_table *t,
                      const uint8_t *uuid, const lipsync_value *values,
                      size_t n) {
  lipsync_row row = {.nvalues = n, .values = values};
  memcpy(row.uuid, uuid, LIPSYNC_UUID_LEN);
  return store_insert(store, t, &row);
}

/* Records a failure at |line| unless |got| is |want|, naming both. */
static void check_value(const lipsync_value *got, const lipsync_value *want,
                        const char *what, int line) {
  char g[96], w[96], msg[400];
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

static size_t count_rows(lipsync_store *store, lipsync_table *t,
                         const uint8_t *lower, const uint8_t *upper) {
  lipsync_cursor *c = NULL;
  lipsync_row row;
  size_t n = 0;
  int rc = store_scan(store, t, lower, upper, &c);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc) {
    fprintf(stderr, "\n  scan: %s\n", store_errmsg(store));
    return 0;
  }
  while ((rc = store_next(store, c, &row)) == 1)
    n++;
  CU_ASSERT_EQUAL(rc, 0);
  if (rc)
    fprintf(stderr, "\n  next: %s\n", store_errmsg(store));
  store_close_cursor(store, c);
  return n;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
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
  fixture fx;
  lipsync_table *t = NULL, *again = NULL;
  char name[512];
  if (!fx_open(&fx,
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
  CU_ASSERT_STRING_EQUAL(t->name, tname(&fx, "types", name, sizeof name));
  CU_ASSERT_EQUAL(t->ncolumns, nwant);
  for (size_t i = 0; i < nwant && i < t->ncolumns; i++) {
    CU_ASSERT_STRING_EQUAL(t->columns[i].name, want[i].name);
    CU_ASSERT_STRING_EQUAL(t->columns[i].type, want[i].type);
  }
  /* A second open in the same transaction is the same handle. */
  CU_ASSERT_EQUAL(store_open_table(fx.store, name, &again), 0);
  CU_ASSERT_PTR_EQUAL(again, t);
  CU_ASSERT_STRING_EQUAL(fx.store->methods->name, "postgresql");
  CU_ASSERT_EQUAL(fx.store->methods->version, LIPSYNC_STORE_METHODS_VERSION);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  /* Once the UUID column exists it is still not a column of the table. */
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(store_open_table(fx.store, name, &t), 0);
  if (t)
    CU_ASSERT_EQUAL(t->ncolumns, nwant);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
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
  fixture fx;
  char sql[256], name[512];
  lipsync_table *t = NULL;
  if (!fx_open(&fx, "CREATE TYPE {S}.mood AS ENUM ('sad', 'ok');"
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
  fx_close(&fx);
}

static void test_open_unknown_table(void) {
  fixture fx;
  lipsync_table *t = NULL;
  char name[512], want[1024];
  if (!fx_open(&fx, "CREATE TABLE {S}.cities(name text);"
                    "CREATE VIEW {S}.big AS SELECT * FROM {S}.cities;"
                    "CREATE SEQUENCE {S}.seq;"))
    goto out;
  /* Outside a transaction a table cannot be locked. */
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "cities", name, sizeof name), &t),
      LIPSYNC_ERR_INTERNAL);
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "nope", name, sizeof name), &t),
      LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_PTR_NULL(t);
  snprintf(want, sizeof want, "no table %s", name);
  CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store), want);
  /* A name without a schema is in public. */
  snprintf(name, sizeof name, "nope_%ld", (long)getpid());
  CU_ASSERT_EQUAL(store_open_table(fx.store, name, &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  /* Views are not tables; names match exactly, case included. */
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "big", name, sizeof name), &t),
      LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT(contains(store_errmsg(fx.store), "a view cannot be synced"));
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "seq", name, sizeof name), &t),
      LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "Cities", name, sizeof name), &t),
      LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store,
                                   tname(&fx, "\"cities\"", name, sizeof name),
                                   &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "", name, sizeof name), &t),
      LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, ".cities", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT_EQUAL(store_open_table(fx.store, "pg_catalog.pg_class", &t),
                  LIPSYNC_ERR_UNKNOWN_TABLE);
  CU_ASSERT(contains(store_errmsg(fx.store), "system tables"));
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, "information_schema.sql_features", &t),
      LIPSYNC_ERR_UNKNOWN_TABLE);
  /* None of this broke the transaction. */
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "cities", name, sizeof name), &t),
      0);
  CU_ASSERT_PTR_NOT_NULL(t);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_quoted_names(void) {
  static const char *const want[] = {"Col \"x\"", "Zeta",      "a.b",
                                     "alpha",     "two words", "\303\261ame"};
  char schema[64], name[256];
  fixture fx;
  lipsync_table *t;
  lipsync_row row;
  lipsync_cursor *c = NULL;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_value v[6];
  const char *const *names;
  size_t count;
  bool listed = false;

  snprintf(schema, sizeof schema, "Geo Data %ld_%u", (long)getpid(),
           ++schema_seq);
  if (!fx_open_schema(&fx, schema,
                      "CREATE TABLE {S}.\"My\"\"Table\"(\"Col \"\"x\"\"\" "
                      "integer, \"\303\261ame\" text, \"Zeta\" text,"
                      " alpha double precision, \"two words\" bytea,"
                      " \"a.b\" date);"
                      "INSERT INTO {S}.\"My\"\"Table\" VALUES"
                      " (1, 'one', 'z', 1.5, '\\x01', '2024-01-01');"
                      "CREATE TABLE {S}.\"my\"\"table\"(x int)"))
    goto out;
  t = begin_prepared(&fx, "My\"Table");
  if (!t)
    goto out;
  snprintf(name, sizeof name, "%s.My\"Table", schema);
  CU_ASSERT_STRING_EQUAL(t->name, name);
  CU_ASSERT_EQUAL(t->ncolumns, 6);
  for (size_t i = 0; i < 6 && i < t->ncolumns; i++)
    CU_ASSERT_STRING_EQUAL(t->columns[i].name, want[i]);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_index i JOIN pg_class c"
                         " ON c.oid = i.indexrelid WHERE i.indrelid ="
                         " '{S}.\"My\"\"Table\"'::regclass AND i.indisunique"
                         " AND c.relname = 'My\"Table__lipsync_uuid'",
                         -1),
                  1);

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
    check_value(&row.values[i], &v[i], "quoted column", __LINE__);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 2);
  uint8_t after[LIPSYNC_UUID_LEN];
  memcpy(after, uuid, sizeof after);
  after[15]++;
  CU_ASSERT_EQUAL(store_scan(fx.store, t, uuid, after, &c), 0);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &row), 1);
  CU_ASSERT_EQUAL(memcmp(row.uuid, uuid, LIPSYNC_UUID_LEN), 0);
  CU_ASSERT_EQUAL(store_next(fx.store, c, &row), 0);
  store_close_cursor(fx.store, c);

  CU_ASSERT_EQUAL(store_list_tables(fx.store, &names, &count), 0);
  for (size_t i = 0; i < count; i++)
    listed |= strcmp(names[i], name) == 0;
  CU_ASSERT_TRUE(listed);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.\"My\"\"Table\"", -1),
                  2);
out:
  fx_close(&fx);
}

static void test_list_tables(void) {
  fixture fx;
  const char *const *names = NULL;
  size_t count = 0;
  char want[4][160], pub[2][64], sql[400];
  bool seen[4] = {false};
  if (!fx_open(&fx,
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
  fx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* prepare_table                                                        */
/* ------------------------------------------------------------------ */

static void test_prepare_adds_uuids_and_rollback_undoes(void) {
  fixture fx;
  lipsync_table *t;
  if (!fx_open(&fx, "CREATE TABLE {S}.cities(name text, pop int);"
                    "INSERT INTO {S}.cities SELECT 'c' || i, i"
                    " FROM generate_series(1, 100) i;"))
    goto out;
  t = begin_prepared(&fx, "cities");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, 2);
  char *type = FX_TEXT(&fx, "SELECT format_type(atttypid, atttypmod)"
                            " FROM pg_attribute WHERE attrelid ="
                            " '{S}.cities'::regclass"
                            " AND attname = '_lipsync_uuid'");
  CU_ASSERT_PTR_NOT_NULL(type);
  if (type)
    CU_ASSERT_STRING_EQUAL(type, "uuid");
  free(type);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_index i JOIN pg_class c"
                         " ON c.oid = i.indexrelid WHERE i.indrelid ="
                         " '{S}.cities'::regclass AND i.indisunique AND"
                         " c.relname = 'cities__lipsync_uuid'",
                         -1),
                  1);
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(DISTINCT _lipsync_uuid) FROM {S}.cities", -1),
      100);
  /* Every UUID is a random one: version 4, RFC 9562 variant. */
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}.cities WHERE"
                         " substr(_lipsync_uuid::text, 15, 1) = '4' AND"
                         " substr(_lipsync_uuid::text, 20, 1) IN"
                         " ('8', '9', 'a', 'b')",
                         -1),
                  100);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 100);
  /* The column keeps its default, for rows inserted later. */
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_attrdef WHERE adrelid ="
                         " '{S}.cities'::regclass",
                         -1),
                  1);

  /* Preparing again changes nothing. */
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_index WHERE indrelid ="
                         " '{S}.cities'::regclass",
                         -1),
                  1);

  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_attribute WHERE attrelid ="
                         " '{S}.cities'::regclass AND attname ="
                         " '_lipsync_uuid' AND NOT attisdropped",
                         -1),
                  0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_index WHERE indrelid ="
                         " '{S}.cities'::regclass",
                         -1),
                  0);
out:
  fx_close(&fx);
}

static void test_prepare_keeps_uuids_and_index(void) {
  fixture fx;
  lipsync_table *t;
  if (!fx_open(&fx, "CREATE TABLE {S}.k(a int, _lipsync_uuid uuid);"
                    "CREATE UNIQUE INDEX my_index ON {S}.k(_lipsync_uuid);"
                    "INSERT INTO {S}.k VALUES"
                    " (1, '0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f'), (2, NULL);"))
    goto out;
  t = begin_prepared(&fx, "k");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->ncolumns, 1);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}.k WHERE _lipsync_uuid ="
                         " '0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f' AND a = 1",
                         -1),
                  1);
  CU_ASSERT_EQUAL(
      FX_INT(&fx, "SELECT count(*) FROM {S}.k WHERE _lipsync_uuid IS NULL", -1),
      0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_index WHERE indrelid ="
                         " '{S}.k'::regclass",
                         -1),
                  1);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_prepare_refusals(void) {
  fixture fx;
  lipsync_table *t = NULL;
  char name[512];
  if (!fx_open(&fx, "CREATE TABLE {S}.wrong(a int, _lipsync_uuid text);"
                    "CREATE TABLE {S}.dup(a int, _lipsync_uuid uuid);"
                    "INSERT INTO {S}.dup VALUES"
                    " (1, '0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f'),"
                    " (2, '0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f');"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "wrong", name, sizeof name), &t),
      0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store),
                     "column _lipsync_uuid has type text; it must be uuid"));
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "dup", name, sizeof name), &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "duplicate _lipsync_uuid values"));
  CU_ASSERT(contains(store_errmsg(fx.store),
                     "0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f) is duplicated"));
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_index WHERE indrelid ="
                         " '{S}.dup'::regclass",
                         -1),
                  0);
out:
  fx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Reading                                                              */
/* ------------------------------------------------------------------ */

static void test_scan_ranges(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t lo[LIPSYNC_UUID_LEN], hi[LIPSYNC_UUID_LEN], u[LIPSYNC_UUID_LEN];
  lipsync_cursor *c1 = NULL, *c2 = NULL;
  lipsync_row r1, r2;
  if (!fx_open(&fx, "CREATE TABLE {S}.r(i int)"))
    goto out;
  t = begin_prepared(&fx, "r");
  if (!t)
    goto out;
  /* Rows 0x00.., 0x10.., ..., 0xf0.. */
  for (int k = 0; k < 16; k++) {
    lipsync_value v = tu_int(k);
    uuid_fill(u, (uint8_t)(k * 16));
    CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), 0);
  }
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 16);
  uuid_fill(lo, 0x30);
  uuid_fill(hi, 0x70);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, lo, NULL), 13);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, hi), 7);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, lo, hi), 4);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, hi, hi), 0);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, hi, lo), 0);
  /* Bounds compare as bytes: 0x30.. < 0x30..01 < 0x40... */
  memset(lo, 0x30, sizeof lo);
  lo[15] = 0x31;
  CU_ASSERT_EQUAL(count_rows(fx.store, t, lo, NULL), 12);
  memset(hi, 0, sizeof hi);
  hi[15] = 1;
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, hi), 1);

  /* Two cursors interleave, each over its own rows. */
  uuid_fill(lo, 0x80);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, lo, &c1), 0);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, lo, NULL, &c2), 0);
  size_t n1 = 0, n2 = 0;
  int rc1 = 1, rc2 = 1;
  while (c1 && c2 && (rc1 == 1 || rc2 == 1)) {
    if (rc1 == 1 && (rc1 = store_next(fx.store, c1, &r1)) == 1) {
      n1++;
      CU_ASSERT(r1.uuid[0] < 0x80 && r1.values[0].u.integer < 8);
    }
    if (rc2 == 1 && (rc2 = store_next(fx.store, c2, &r2)) == 1) {
      n2++;
      CU_ASSERT(r2.uuid[0] >= 0x80 && r2.values[0].u.integer >= 8);
    }
  }
  CU_ASSERT_EQUAL(n1, 8);
  CU_ASSERT_EQUAL(n2, 8);
  CU_ASSERT_EQUAL(rc1, 0);
  CU_ASSERT_EQUAL(rc2, 0);
  /* The end stays the end. */
  if (c1)
    CU_ASSERT_EQUAL(store_next(fx.store, c1, &r1), 0);
  store_close_cursor(fx.store, c1);
  store_close_cursor(fx.store, c2);
  store_close_cursor(fx.store, NULL);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

/* A batch of lookups by UUID returns exactly the rows named, and skips a
 * UUID with no row. */
static void test_scan_uuids(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t u[LIPSYNC_UUID_LEN], want[5 * LIPSYNC_UUID_LEN];
  lipsync_cursor *c = NULL;
  lipsync_row r;
  if (!fx_open(&fx, "CREATE TABLE {S}.l(i int)"))
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
  CU_ASSERT_TRUE_FATAL(store_can_scan_uuids(fx.store));
  CU_ASSERT_EQUAL(store_scan_uuids(fx.store, t, want, 5, &c), 0);
  int seen = 0, rc;
  while (c && (rc = store_next(fx.store, c, &r)) == 1) {
    int64_t i = r.values[0].u.integer;
    CU_ASSERT(i == 3 || i == 9 || i == 0 || i == 15);
    CU_ASSERT_EQUAL(r.uuid[0], (uint8_t)(i * 16));
    seen |= 1 << i;
  }
  CU_ASSERT_EQUAL(seen, (1 << 3) | (1 << 9) | (1 << 0) | (1 << 15));
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_scan_batches(void) {
  enum { N = 2500 };
  fixture fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_row row;
  long long sum = 0;
  size_t n = 0;
  /* More rows than the first batch, rows inserted by SQL. */
  if (!fx_open(&fx, "CREATE TABLE {S}.b(i bigint, pad text);"
                    "INSERT INTO {S}.b SELECT i, repeat('x', i % 50)"
                    " FROM generate_series(1, 2500) i"))
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
  fx_close(&fx);
}

static void test_fetch(void) {
  fixture fx;
  lipsync_table *t;
  lipsync_row row;
  uint8_t u[LIPSYNC_UUID_LEN], missing[LIPSYNC_UUID_LEN];
  lipsync_value v[2] = {tu_int(7), tu_text("seven")};
  char want[1024], name[256];
  if (!fx_open(&fx, "CREATE TABLE {S}.f(a int, b text)"))
    goto out;
  t = begin_prepared(&fx, "f");
  if (!t)
    goto out;
  uuid_fill(u, 0x77);
  uuid_fill(missing, 0x78);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u, &row), 0);
  CU_ASSERT_EQUAL(memcmp(row.uuid, u, LIPSYNC_UUID_LEN), 0);
  CU_ASSERT_EQUAL(row.nvalues, 2);
  for (size_t i = 0; i < 2 && row.nvalues == 2; i++)
    check_value(&row.values[i], &v[i], "fetched", __LINE__);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, missing, &row),
                  LIPSYNC_ERR_NOT_FOUND);
  snprintf(want, sizeof want,
           "table %s: no row 78787878-7878-7878-7878-787878787878",
           tname(&fx, "f", name, sizeof name));
  CU_ASSERT_STRING_EQUAL(store_errmsg(fx.store), want);
  /* Not found is not a failure of the transaction. */
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u, &row), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

static void test_scan_before_prepare_fails_cleanly(void) {
  fixture fx;
  lipsync_table *t = NULL;
  lipsync_cursor *c = NULL;
  lipsync_row row;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(1);
  char name[512];
  if (!fx_open(&fx, "CREATE TABLE {S}.n(a int); INSERT INTO {S}.n VALUES (1)"))
    goto out;
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "n", name, sizeof name), &t), 0);
  CU_ASSERT_EQUAL(store_scan(fx.store, t, NULL, NULL, &c), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT(contains(store_errmsg(fx.store), "scan: the table has no "
                                             "_lipsync_uuid column"));
  uuid_fill(u, 1);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u, &row), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), LIPSYNC_ERR_STORAGE);
  /* The transaction is intact: preparing now works. */
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), 0);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 1);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
out:
  fx_close(&fx);
}

/* Inserts, reads, inserts again: each read ends the COPY in progress, and
 * sees what it inserted. */
static void test_interleaved_insert_and_read(void) {
  fixture fx;
  lipsync_table *a, *b = NULL;
  lipsync_row row;
  lipsync_cursor *c = NULL;
  uint8_t u[LIPSYNC_UUID_LEN];
  char name[512];
  if (!fx_open(&fx, "CREATE TABLE {S}.a(x text); CREATE TABLE {S}.b(y int);"
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
  fx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Values                                                               */
/* ------------------------------------------------------------------ */

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
  fixture fx;
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
  if (!fx_open(&fx, edge_table_sql))
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
        check_value(&row.values[c], &want, what, __LINE__);
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
  fx_close(&fx);
  free(big);
}

/* A caller's session settings (time zone, date style) change nothing the
 * store reads or writes, and come back after the sync. */
static void test_session_settings_do_not_matter(void) {
  fixture fx;
  lipsync_table *t;
  lipsync_row row;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v[4] = {tu_text("2024-02-29"), tu_real(1.5),
                        tu_text("\xe2\x9c\x93 \xc3\xa9"),
                        tu_text("2024-07-04 16:00:00+00")};
  lipsync_cursor *c = NULL;
  /* A caller's connection may be in nonblocking mode, too. */
  if (!fx_open(&fx, "CREATE TABLE {S}.z(d date, f double precision,"
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
    check_value(&row.values[0], &d, "date", __LINE__);
    check_value(&row.values[1], &f, "double", __LINE__);
    check_value(&row.values[3], &tz, "timestamptz", __LINE__);
  }
  store_close_cursor(fx.store, c);
  uuid_fill(u, 0x11);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 4), 0);
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u, &row), 0);
  for (int i = 0; i < 4 && row.nvalues == 4; i++)
    check_value(&row.values[i], &v[i], "read back", __LINE__);
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
  fx_close(&fx);
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
  fixture fx;
  lipsync_table *t;
  lipsync_value row[E_NCOLS];
  uint8_t u[LIPSYNC_UUID_LEN];
  char prefix[1024], name[256];
  if (!fx_open(&fx, edge_table_sql))
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
  fx_close(&fx);
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
  fixture fx;
  lipsync_table *t;
  char name[512];
  if (!fx_open(&fx, "CREATE TABLE {S}.j(k int, doc jsonb)"))
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
  fx_close(&fx);
}

/* citext and name are text too. */
static void test_other_text_types(void) {
  fixture fx;
  lipsync_table *t;
  lipsync_row row;
  uint8_t u[LIPSYNC_UUID_LEN];
  char long_name[65];
  lipsync_value v[2] = {tu_text("MiXeD Case"), tu_text("pg_\xc3\xa9")};
  /* The extension goes in the fixture's schema, dropped with it, unless
   * the database has it already. */
  if (!fx_open(&fx, NULL))
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
    check_value(&row.values[i], &v[i], "text types", __LINE__);
  /* A name longer than 63 bytes would be cut short. */
  memset(long_name, 'n', 64);
  long_name[64] = '\0';
  v[1] = tu_text(long_name);
  uuid_fill(u, 6);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, v, 2), LIPSYNC_ERR_INVALID_VALUE);
  CU_ASSERT(contains(store_errmsg(fx.store), "at most 63 bytes"));
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
}

/* The UUID index of an empty table is built once its rows are in: before
 * a lookup needs it, or at commit. */
static void test_index_of_empty_table(void) {
  fixture fx;
  lipsync_table *t;
  lipsync_row row;
  lipsync_cursor *c = NULL;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(1);
  static const char count_sql[] = "SELECT count(*) FROM pg_index WHERE"
                                  " indrelid = '{S}.e'::regclass AND"
                                  " indisunique";
  if (!fx_open(&fx, "CREATE TABLE {S}.e(a int)"))
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
  fx_close(&fx);
}

static void test_generated_and_partitioned(void) {
  fixture fx;
  lipsync_table *g, *p = NULL;
  lipsync_row row;
  uint8_t u[LIPSYNC_UUID_LEN];
  char name[512];
  if (!fx_open(&fx, "CREATE TABLE {S}.g(a int, twice int GENERATED ALWAYS AS"
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
  fx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Transactions                                                         */
/* ------------------------------------------------------------------ */

static void test_constraint_violation(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v[2];
  char want[1024], name[256];
  if (!fx_open(&fx, "CREATE TABLE {S}.c(id int PRIMARY KEY, name text NOT"
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
  fx_close(&fx);
}

static void test_rollback_undoes_inserts(void) {
  fixture fx;
  lipsync_table *t;
  PGconn *other = NULL;
  if (!fx_open(&fx, "CREATE TABLE {S}.r(a text)"))
    goto out;
  t = begin_prepared(&fx, "r");
  if (!t)
    goto out;
  for (int k = 0; k < 10; k++) {
    uint8_t u[LIPSYNC_UUID_LEN];
    lipsync_value v = tu_text("gone");
    uuid_fill(u, (uint8_t)(k + 1));
    CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), 0);
  }
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 10);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  /* Rolling back twice, or with nothing open, is harmless. */
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  other = PG_CONNECT();
  if (other) {
    char *full = expand(&fx, "SELECT count(*) FROM {S}.r");
    CU_ASSERT_EQUAL(PG_INT(other, full, -1), 0);
    free(full);
  }
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM pg_attribute WHERE attrelid ="
                         " '{S}.r'::regclass AND attname = '_lipsync_uuid'"
                         " AND NOT attisdropped",
                         -1),
                  0);
out:
  PQfinish(other);
  fx_close(&fx);
}

static void test_begin_inside_callers_transaction(void) {
  fixture fx;
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int)"))
    goto out;
  FX_EXEC(&fx, "BEGIN; INSERT INTO {S}.t VALUES (1)");
  CU_ASSERT_EQUAL(store_begin(fx.store), LIPSYNC_ERR_STORAGE);
  CU_ASSERT(contains(store_errmsg(fx.store), "begin: "));
  /* The failed begin's rollback leaves the caller's transaction alone. */
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  CU_ASSERT_EQUAL(PQtransactionStatus(fx.conn), PQTRANS_INTRANS);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.t", -1), 1);
  FX_EXEC(&fx, "ROLLBACK");
  /* commit without begin is the caller's bug. */
  CU_ASSERT_EQUAL(store_commit(fx.store), LIPSYNC_ERR_INTERNAL);
out:
  fx_close(&fx);
}

static void test_commit_persists(void) {
  fixture fx;
  lipsync_store *store = NULL;
  lipsync_table *t = NULL;
  char errbuf[256] = "", name[256];
  lipsync_value v[2] = {tu_real(-2.5), tu_text("kept")};
  uint8_t u[LIPSYNC_UUID_LEN];
  PGconn *other = NULL;
  if (!fx_open(&fx, "CREATE TABLE {S}.t(b text, a double precision)"))
    goto out;
  CU_ASSERT_EQUAL(lipsync_store_pg_open(&store, getenv(CONNINFO_ENV), errbuf,
                                        sizeof errbuf),
                  0);
  if (!store) {
    fprintf(stderr, "\n  %s\n", errbuf);
    goto out;
  }
  CU_ASSERT_STRING_EQUAL(store->methods->name, "postgresql");
  CU_ASSERT_STRING_EQUAL(lipsync_store_errmsg(store), "no error");
  CU_ASSERT_EQUAL(store_begin(store), 0);
  CU_ASSERT_EQUAL(
      store_open_table(store, tname(&fx, "t", name, sizeof name), &t), 0);
  CU_ASSERT_EQUAL(store_prepare_table(store, t), 0);
  uuid_fill(u, 0xC0);
  if (t)
    CU_ASSERT_EQUAL(insert_row(store, t, u, v, 2), 0);
  CU_ASSERT_EQUAL(store_commit(store), 0);
  lipsync_store_free(store);
  store = NULL;
  other = PG_CONNECT();
  if (other) {
    char *full = expand(&fx, "SELECT b || ' ' || a || ' ' || _lipsync_uuid"
                             " FROM {S}.t");
    char *got = full ? PG_TEXT(other, full) : NULL;
    CU_ASSERT(got && strcmp(got, "kept -2.5 c0c0c0c0-c0c0-c0c0-c0c0-"
                                 "c0c0c0c0c0c0") == 0);
    free(got);
    free(full);
  }
out:
  PQfinish(other);
  lipsync_store_free(store);
  fx_close(&fx);
}

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

/* ------------------------------------------------------------------ */
/* Volume and concurrency                                               */
/* ------------------------------------------------------------------ */

static long max_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

static void test_many_rows(void) {
  enum { N = 100000 };
  fixture fx;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_row row;
  int64_t sum = 0;
  size_t n = 0, in_ranges = 0;
  double started, insert_s, scan_s;
  long rss_before;
  if (!fx_open(&fx, "CREATE TABLE {S}.big(v bigint, name text, x double "
                    "precision, d numeric(12,2))"))
    goto out;
  t = begin_prepared(&fx, "big");
  if (!t)
    goto out;
  started = now_s();
  for (int i = 0; i < N; i++) {
    uint8_t u[LIPSYNC_UUID_LEN];
    char name[32], dec[32];
    lipsync_value v[4];
    snprintf(dec, sizeof dec, "%d.%02d", i / 100, i % 100);
    snprintf(name, sizeof name, "name %d", i);
    v[0] = tu_text(dec);
    v[1] = tu_text(name);
    v[2] = tu_int(i);
    v[3] = tu_real(i / 7.0);
    lipsync_uuid_generate(u);
    if (insert_row(fx.store, t, u, v, 4) != 0) {
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
    sum += row.values[2].u.integer;
    n++;
  }
  store_close_cursor(fx.store, c);
  scan_s = now_s() - started;
  CU_ASSERT_EQUAL(n, N);
  CU_ASSERT_EQUAL(sum, (int64_t)N * (N - 1) / 2);
  fprintf(stderr,
          "\n  100,000 rows: insert and commit %.2f s, full scan %.2f s"
          " (peak RSS grew %ld KiB during the scan) ",
          insert_s, scan_s, max_rss_kb() - rss_before);
  /* Sixteen ranges partition the space. */
  for (int k = 0; k < 16; k++) {
    uint8_t lo[LIPSYNC_UUID_LEN] = {0}, hi[LIPSYNC_UUID_LEN] = {0};
    lo[0] = (uint8_t)(k * 16);
    hi[0] = (uint8_t)((k + 1) * 16);
    in_ranges += count_rows(fx.store, t, k ? lo : NULL, k < 15 ? hi : NULL);
  }
  CU_ASSERT_EQUAL(in_ranges, N);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  fx_close(&fx);
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
  fixture fx;
  lipsync_store *second = NULL, *third = NULL;
  PGconn *conn2 = NULL, *conn3 = NULL;
  lipsync_table *t = NULL, *t2 = NULL, *t3 = NULL;
  lipsync_row row;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(99);
  char name[512];
  double started;

  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int); INSERT INTO {S}.t VALUES (1)"))
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
  fx_close(&fx);
}

/* interrupt() from another thread ends a lock wait at once: the second
 * sync of a table whose first sync is adding _lipsync_uuid waits for that
 * one's lock. */
static void test_interrupt_ends_lock_wait(void) {
  fixture fx;
  lipsync_store *second = NULL;
  PGconn *conn2 = NULL;
  lipsync_table *t = NULL, *t2 = NULL;
  lipsync_cursor *c = NULL;
  later_call later = {0};
  pthread_t thread;
  char name[512];
  double started, waited;

  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int)"))
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
  fx_close(&fx);
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

/* The item of the row with a = |a|: "clock deleted" as text. */
#define ITEM_OF(fx, a)                                                         \
  FX_TEXT((fx), "SELECT m.clock || ' ' || m.deleted FROM {S}._lipsync_meta_t"  \
                " m JOIN {S}.t USING (_lipsync_uuid) WHERE t.a = " a)

static long long clock_of(fixture *fx, const char *uuid) {
  char sql[300];
  snprintf(sql, sizeof sql,
           "SELECT clock FROM {S}._lipsync_meta_t WHERE uuid = '%s'", uuid);
  return FX_INT(fx, sql, -1);
}

static void test_capture_other_connection(void) {
  fixture fx;
  PGconn *app = NULL;
  char *u = NULL;
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int, b text)"))
    goto out;
  if (!begin_prepared(&fx, "t"))
    goto out;
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  app = PG_CONNECT();
  if (!app)
    goto out;
  char *q = expand(&fx, "INSERT INTO {S}.t(a, b) VALUES (1, 'x')");
  PG_EXEC(app, q);
  free(q);
  u = FX_TEXT(&fx, "SELECT _lipsync_uuid FROM {S}.t WHERE a = 1");
  CU_ASSERT_PTR_NOT_NULL_FATAL(u);
  long long c1 = clock_of(&fx, u);
  CU_ASSERT(c1 > 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t m,"
                         " _lipsync.state s WHERE m.site = s.site AND NOT"
                         " m.deleted AND m.base_clock = 0 AND m.base_site IS"
                         " NULL",
                         -1),
                  1);
  q = expand(&fx, "UPDATE {S}.t SET b = 'y'");
  PG_EXEC(app, q);
  free(q);
  long long c2 = clock_of(&fx, u);
  CU_ASSERT(c2 > c1);
  /* No value changes: no new version. */
  q = expand(&fx, "UPDATE {S}.t SET b = 'y'");
  PG_EXEC(app, q);
  free(q);
  CU_ASSERT_EQUAL(clock_of(&fx, u), c2);
  /* A rolled back change leaves the item alone. */
  q = expand(&fx, "BEGIN; UPDATE {S}.t SET b = 'z'; ROLLBACK");
  PG_EXEC(app, q);
  free(q);
  CU_ASSERT_EQUAL(clock_of(&fx, u), c2);
  /* The UUID cannot change. */
  q = expand(&fx, "UPDATE {S}.t SET _lipsync_uuid = gen_random_uuid()");
  PGresult *r = PQexec(app, q);
  free(q);
  CU_ASSERT_EQUAL(PQresultStatus(r), PGRES_FATAL_ERROR);
  CU_ASSERT(contains(PQresultErrorMessage(r),
                     "the _lipsync_uuid of a row cannot change"));
  PQclear(r);
  q = expand(&fx, "DELETE FROM {S}.t");
  PG_EXEC(app, q);
  free(q);
  CU_ASSERT(clock_of(&fx, u) > c2);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " deleted",
                         -1),
                  1);
  /* Two writers at once: neither waits for the other's commit. */
  PG_EXEC(app, "BEGIN");
  q = expand(&fx, "INSERT INTO {S}.t(a) VALUES (2)");
  PG_EXEC(app, q);
  free(q);
  q = expand(&fx, "INSERT INTO {S}.t(a) VALUES (3)");
  PG_EXEC(fx.conn, "SET statement_timeout = '5s'");
  CU_ASSERT(pg_exec_at(fx.conn, q, __FILE__, __LINE__));
  free(q);
  PG_EXEC(app, "COMMIT");
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(DISTINCT clock) FROM"
                         " {S}._lipsync_meta_t WHERE NOT deleted",
                         -1),
                  2);
  /* TRUNCATE fires no row trigger: every live item becomes a tombstone
   * all the same, in its transaction, later than the live versions. */
  long long live = FX_INT(&fx,
                          "SELECT max(clock) FROM {S}._lipsync_meta_t"
                          " WHERE NOT deleted",
                          -1);
  q = expand(&fx, "BEGIN; TRUNCATE {S}.t; ROLLBACK");
  PG_EXEC(app, q);
  free(q);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " NOT deleted",
                         -1),
                  2);
  q = expand(&fx, "TRUNCATE {S}.t");
  PG_EXEC(app, q);
  free(q);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " NOT deleted",
                         -1),
                  0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " deleted",
                         -1),
                  3);
  char sql[160];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM {S}._lipsync_meta_t WHERE deleted AND"
           " clock > %lld",
           live);
  CU_ASSERT_EQUAL(FX_INT(&fx, sql, -1), 2);
out:
  free(u);
  if (app)
    PQfinish(app);
  fx_close(&fx);
}

static lipsync_version version_of(uint64_t clock, uint8_t site_byte) {
  lipsync_version v;
  v.clock = clock;
  memset(v.site, site_byte, sizeof v.site);
  return v;
}

static void test_store_writes_not_captured(void) {
  fixture fx;
  lipsync_table *t;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN], u3[LIPSYNC_UUID_LEN];
  lipsync_value v1[2] = {tu_int(1), tu_text("one")};
  lipsync_value v2[2] = {tu_int(2), tu_text("two")};
  lipsync_value v2b[2] = {tu_int(2), tu_text("TWO")};
  uuid_fill(u1, 0x11);
  uuid_fill(u2, 0x22);
  uuid_fill(u3, 0x33);
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int, b text);"
                    " CREATE TABLE {S}.n(k int); INSERT INTO {S}.n VALUES (0);"
                    " CREATE FUNCTION {S}.cnt() RETURNS trigger LANGUAGE"
                    " plpgsql AS $$ BEGIN UPDATE {S}.n SET k = k + 1;"
                    " RETURN NULL; END $$;"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  FX_EXEC(&fx, "CREATE TRIGGER cnt AFTER UPDATE ON {S}.t FOR EACH ROW"
               " EXECUTE FUNCTION {S}.cnt()");
  lipsync_row row = {.nvalues = 2, .values = v1};
  memcpy(row.uuid, u1, 16);
  row.version = version_of(100, 0xA1);
  CU_ASSERT_EQUAL(store_insert(fx.store, t, &row), 0);
  row.values = v2;
  memcpy(row.uuid, u2, 16);
  row.version = version_of(200, 0xA2);
  CU_ASSERT_EQUAL(store_insert(fx.store, t, &row), 0);
  lipsync_row tomb = {.version = version_of(300, 0xA3), .deleted = 1};
  memcpy(tomb.uuid, u3, 16);
  CU_ASSERT_EQUAL(store_insert(fx.store, t, &tomb), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " (clock, deleted, get_byte(site, 0)) IN"
                         " ((100, false, 161), (200, false, 162),"
                         " (300, true, 163))",
                         -1),
                  3);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " clock IN (100, 200, 300) AND base_clock = 0",
                         -1),
                  3);

  /* Items and update. */
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  lipsync_cursor *c = NULL;
  lipsync_item item;
  size_t n = 0, dead = 0;
  CU_ASSERT_EQUAL_FATAL(store_scan_items(fx.store, t, &c), 0);
  while (store_next_item(fx.store, c, &item) == 1) {
    n++;
    dead += item.deleted != 0;
    if (item.uuid[0] == 0x22) {
      CU_ASSERT_EQUAL(item.version.clock, 200);
      CU_ASSERT_EQUAL(item.version.site[15], 0xA2);
      CU_ASSERT_EQUAL(item.base.clock, 0);
    }
  }
  store_close_cursor(fx.store, c);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_EQUAL(dead, 1);
  /* Equal values: no write; different: one; a tombstone deletes. */
  row.values = v1;
  memcpy(row.uuid, u1, 16);
  row.version = version_of(101, 0xB1);
  CU_ASSERT_EQUAL(store_update(fx.store, t, &row), 0);
  row.values = v2b;
  memcpy(row.uuid, u2, 16);
  row.version = version_of(201, 0xB2);
  CU_ASSERT_EQUAL(store_update(fx.store, t, &row), 0);
  row.values = v1;
  memcpy(row.uuid, u3, 16);
  row.version = version_of(301, 0xB3);
  CU_ASSERT_EQUAL(store_update(fx.store, t, &row), 0);
  tomb.version = version_of(102, 0xC1);
  memcpy(tomb.uuid, u1, 16);
  CU_ASSERT_EQUAL(store_update(fx.store, t, &tomb), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT k FROM {S}.n", -1), 1);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.t WHERE b = 'TWO'", -1),
                  1);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.t", -1), 2);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " (clock, deleted) IN ((102, true), (201, false),"
                         " (301, false)) AND base_clock = 0",
                         -1),
                  3);
out:
  fx_close(&fx);
}

static void test_initial_versions_and_repair(void) {
  fixture fx;
  lipsync_table *t;
  canon_hasher h;
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int, b text);"
                    " INSERT INTO {S}.t VALUES (1, 'x'), (2, NULL)"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL_FATAL(canon_hasher_init(&h), 0);
  lipsync_cursor *c = NULL;
  lipsync_row row;
  size_t n = 0;
  CU_ASSERT_EQUAL_FATAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (store_next(fx.store, c, &row) == 1) {
    uint8_t d[16];
    char sql[300], uuid[37], hex[33];
    CU_ASSERT_EQUAL(canon_row_digest(&h, &row, d), 0);
    lipsync_uuid_format(row.uuid, uuid);
    tu_hex(d, 16, hex);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM {S}._lipsync_meta_t WHERE uuid = '%s'"
             " AND clock = 0 AND site = '\\x%s' AND NOT deleted",
             uuid, hex);
    CU_ASSERT_EQUAL(FX_INT(&fx, sql, -1), 1);
    n++;
  }
  store_close_cursor(fx.store, c);
  canon_hasher_free(&h);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  /* Rows inserted without a UUID get one, and a version. */
  FX_EXEC(&fx, "INSERT INTO {S}.t(a) VALUES (3)");
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t m JOIN"
                         " {S}.t ON t._lipsync_uuid = m.uuid WHERE a = 3 AND"
                         " clock > 0",
                         -1),
                  1);
  /* Changes with capture off: a prepare does not read the table to find
   * them; a recount, due after a failed verification, repairs them. */
  FX_EXEC(&fx, "BEGIN; SET LOCAL lipsync.applying = 'on';"
               " DELETE FROM {S}.t WHERE a = 1;"
               " INSERT INTO {S}.t(a) VALUES (4); INSERT INTO {S}.t(a) VALUES"
               " (5); COMMIT");
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}._lipsync_meta_t", -1),
                  3);
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}._lipsync_meta_t", -1),
                  3);
  char name[256];
  CU_ASSERT_EQUAL(store_distrust(fx.store, tname(&fx, "t", name, sizeof name)),
                  0);
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " NOT deleted AND clock > 0",
                         -1),
                  3);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " deleted AND clock > 0",
                         -1),
                  1);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}.t LEFT JOIN"
                         " {S}._lipsync_meta_t m ON m.uuid = _lipsync_uuid"
                         " WHERE m.uuid IS NULL OR m.deleted",
                         -1),
                  0);
out:
  fx_close(&fx);
}

static void test_finish_and_tick(void) {
  fixture fx;
  lipsync_table *t;
  lipsync_version a, b;
  char name[256];
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int)"))
    goto out;
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(t->last_sync, 0);
  CU_ASSERT_EQUAL(store_tick(fx.store, &a), 0);
  CU_ASSERT_EQUAL(store_tick(fx.store, &b), 0);
  CU_ASSERT(b.clock >= a.clock); /* reading the clock does not move it */
  CU_ASSERT(memcmp(a.site, b.site, 16) == 0);
  /* Later than the wall clock's milliseconds << 16. */
  CU_ASSERT(a.clock >> 16 > 1700000000000ull);
  lipsync_row tomb = {.version = version_of(5, 1), .deleted = 1};
  uuid_fill(tomb.uuid, 0x44);
  CU_ASSERT_EQUAL(store_insert(fx.store, t, &tomb), 0);
  lipsync_value v = tu_int(7);
  lipsync_row row = {.nvalues = 1, .values = &v};
  row.version = version_of(b.clock + 1000000, 2);
  uuid_fill(row.uuid, 0x55);
  CU_ASSERT_EQUAL(store_insert(fx.store, t, &row), 0);
  lipsync_finish f = {.max_clock = b.clock + 5000000,
                      .horizon = 6,
                      .as_client = 1,
                      .server_clock = 4242};
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t, &f), 0);
  CU_ASSERT_EQUAL(store_tick(fx.store, &a), 0);
  CU_ASSERT(a.clock > b.clock + 5000000);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  /* The tombstone below the horizon is purged once the sync commits, in
   * a transaction of its own. */
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}._lipsync_meta_t", -1),
                  1);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " base_clock = clock AND base_site = site",
                         -1),
                  1);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " NOT deleted",
                         -1),
                  1);
  CU_ASSERT_EQUAL(store_begin(fx.store), 0);
  CU_ASSERT_EQUAL(
      store_open_table(fx.store, tname(&fx, "t", name, sizeof name), &t), 0);
  if (t)
    CU_ASSERT_EQUAL(t->last_sync, 4242);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);
  /* Neither the registry nor item tables are listed. */
  const char *const *names;
  size_t count;
  CU_ASSERT_EQUAL(store_list_tables(fx.store, &names, &count), 0);
  for (size_t i = 0; i < count; i++)
    CU_ASSERT(strstr(names[i], "_lipsync") == NULL);
out:
  fx_close(&fx);
}

static void test_long_name_refused(void) {
  fixture fx;
  lipsync_table *t = NULL;
  char name[256];
  if (!fx_open(&fx, "CREATE TABLE {S}.a123456789012345678901234567890123456789"
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
  fx_close(&fx);
}

/* ------------------------------------------------------------------ */
/* Incremental reconciliation (spec 8.8)                                */
/* ------------------------------------------------------------------ */

/* Runs |sql| (with {S} for the fixture's schema) on another connection. */
#define APP_EXEC(fx, conn, sql) app_exec_at((fx), (conn), (sql), __LINE__)
static bool app_exec_at(fixture *fx, PGconn *conn, const char *sql, int line) {
  char *full = expand(fx, sql);
  bool ok = full && pg_exec_at(conn, full, __FILE__, line);
  free(full);
  return ok;
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

/* Begins on |store|, opens table |table| of the fixture's schema and
 * prepares it. */
static lipsync_table *begin_on(lipsync_store *store, fixture *fx,
                               const char *table) {
  char name[512];
  lipsync_table *t = NULL;
  int rc = store_begin_read(store);
  if (rc == 0)
    rc = store_open_table(store, tname(fx, table, name, sizeof name), &t);
  if (rc == 0)
    rc = store_prepare_table(store, t);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc)
    fprintf(stderr, "\n  %s: %s\n", table, store_errmsg(store));
  return rc == 0 ? t : NULL;
}

/* Another connection, for the application's writes, and table t of the
 * fixture prepared (capture installed) by a sync of its own. */
static bool captured(fixture *fx, PGconn **app) {
  *app = PG_CONNECT();
  return *app && begin_prepared(fx, "t") && store_commit(fx->store) == 0;
}

/* The UUID of the row of table t where a = |a|. */
static bool uuid_of(fixture *fx, int a, uint8_t out[LIPSYNC_UUID_LEN]) {
  char sql[120];
  snprintf(sql, sizeof sql, "SELECT _lipsync_uuid FROM {S}.t WHERE a = %d", a);
  char *text = FX_TEXT(fx, sql);
  bool ok = text && lipsync_uuid_parse(text, strlen(text), out) == 0;
  free(text);
  CU_ASSERT(ok);
  return ok;
}

/* The item of |uuid| in |t|, through lookup_items: 1, 0 if none. */
static int item_of(lipsync_store *store, lipsync_table *t, const uint8_t *uuid,
                   lipsync_item *out) {
  lipsync_cursor *c = NULL;
  int rc = store_lookup_items(store, t, uuid, 1, &c);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc)
    return 0;
  rc = store_next_item(store, c, out);
  CU_ASSERT(rc >= 0);
  store_close_cursor(store, c);
  return rc == 1;
}

/* A row to apply, with the digests the core hands in: of its item, and of
 * the item |old| it replaces (NULL: none). */
static lipsync_row applied(const uint8_t *uuid, const lipsync_value *values,
                           size_t n, lipsync_version v, int deleted,
                           const lipsync_item *old) {
  lipsync_row row;
  canon_hasher h;
  memset(&row, 0, sizeof row);
  memcpy(row.uuid, uuid, LIPSYNC_UUID_LEN);
  row.values = deleted ? NULL : values;
  row.nvalues = deleted ? 0 : n;
  row.version = v;
  row.deleted = deleted;
  CU_ASSERT_EQUAL_FATAL(canon_hasher_init(&h), 0);
  canon_item_digest(&h, uuid, &v, deleted != 0, row.digest);
  if (old) {
    row.had_item = 1;
    canon_item_digest(&h, old->uuid, &old->version, old->deleted != 0,
                      row.old_digest);
  }
  canon_hasher_free(&h);
  return row;
}

/* The sum and count of the item digests of every item of |t|, read whole
 * through scan_items. */
static int sum_items(lipsync_store *store, lipsync_table *t,
                     lipsync_summary *out) {
  lipsync_cursor *c = NULL;
  lipsync_item it;
  canon_hasher h;
  canon_fp fp;
  uint8_t d[LIPSYNC_DIGEST_LEN];
  int rc;
  canon_fp_init(&fp);
  if (canon_hasher_init(&h) != 0)
    return LIPSYNC_ERR_NOMEM;
  if ((rc = store_scan_items(store, t, &c)) == 0) {
    while ((rc = store_next_item(store, c, &it)) == 1) {
      canon_item_digest(&h, it.uuid, &it.version, it.deleted != 0, d);
      canon_fp_add(&fp, d);
    }
    store_close_cursor(store, c);
  }
  canon_hasher_free(&h);
  canon_fp_store(&fp, out);
  return rc;
}

/* Records a failure at |line| unless the kept summary of |table| is the
 * sum of its items, in a session of its own. */
#define CHECK_SUMMARY(fx, table) check_summary_at((fx), (table), __LINE__)
static void check_summary_at(fixture *fx, const char *table, int line) {
  lipsync_summary kept, all;
  char msg[300];
  lipsync_table *t = begin_on(fx->store, fx, table);
  bool ok = t && store_summarize(fx->store, t, &kept) == 0 &&
            sum_items(fx->store, t, &all) == 0;
  snprintf(
      msg, sizeof msg, "kept summary: %llu items, sum %s equal; items: %llu",
      (unsigned long long)kept.count,
      ok && memcmp(kept.sum, all.sum, LIPSYNC_DIGEST_LEN) == 0 ? "" : "not",
      (unsigned long long)all.count);
  CU_assertImplementation(ok && kept.count == all.count &&
                              memcmp(kept.sum, all.sum, LIPSYNC_DIGEST_LEN) ==
                                  0,
                          (unsigned)line, msg, __FILE__, "", CU_FALSE);
  store_rollback(fx->store);
}

/* The UUIDs of the items changed since |since|, in the order read
 * (checked ascending), into |out| (up to |cap|); the count, or -1. */
static int changes_since(lipsync_store *store, lipsync_table *t,
                         const lipsync_position *since,
                         uint8_t (*out)[LIPSYNC_UUID_LEN], int cap) {
  lipsync_cursor *c = NULL;
  lipsync_item it;
  int n = 0, rc = store_scan_changes(store, t, since, &c);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc) {
    fprintf(stderr, "\n  changes: %s\n", store_errmsg(store));
    return -1;
  }
  while ((rc = store_next_item(store, c, &it)) == 1) {
    if (n > 0 && n <= cap)
      CU_ASSERT(memcmp(out[n - 1], it.uuid, LIPSYNC_UUID_LEN) < 0);
    if (n < cap)
      memcpy(out[n], it.uuid, LIPSYNC_UUID_LEN);
    n++;
  }
  CU_ASSERT_EQUAL(rc, 0);
  store_close_cursor(store, c);
  return n;
}

/* Whether |uuid| is among the |n| UUIDs at |set|. */
static bool has_uuid(uint8_t (*set)[LIPSYNC_UUID_LEN], int n,
                     const uint8_t *uuid) {
  for (int i = 0; i < n; i++)
    if (memcmp(set[i], uuid, LIPSYNC_UUID_LEN) == 0)
      return true;
  return false;
}

/* The rows of _lipsync.|table| about table t of the fixture's schema that
 * meet |cond|: registry rows (name) or tokens (tbl). */
static long long about_t(fixture *fx, const char *table, const char *key,
                         const char *cond) {
  char sql[400];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM _lipsync.%s WHERE %s AND %s = (SELECT"
           " nspname || '.t' FROM pg_namespace WHERE oid ="
           " '{S}'::regnamespace)",
           table, cond, key);
  return FX_INT(fx, sql, -1);
}

/* Rows read carry their live item's version, and come in UUID order. */
static void test_rows_carry_versions(void) {
  fixture fx;
  PGconn *app = NULL;
  lipsync_table *t;
  lipsync_cursor *c = NULL;
  lipsync_row row;
  uint8_t prev[LIPSYNC_UUID_LEN] = {0}, u[LIPSYNC_UUID_LEN];
  size_t n = 0;
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int);"
                    " INSERT INTO {S}.t SELECT i FROM generate_series(1, 300)"
                    " i"))
    goto out;
  if (!begin_prepared(&fx, "t") || store_commit(fx.store) != 0)
    goto out;
  FX_EXEC(&fx, "UPDATE {S}.t SET a = -a WHERE a <= 10");
  t = begin_prepared(&fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL_FATAL(store_scan(fx.store, t, NULL, NULL, &c), 0);
  while (store_next(fx.store, c, &row) == 1) {
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
  /* A row without a live item (written with capture off) is not read. */
  app = PG_CONNECT();
  if (app)
    APP_EXEC(&fx, app,
             "BEGIN; SET LOCAL lipsync.applying = 'on';"
             " INSERT INTO {S}.t VALUES (1000); COMMIT");
  t = begin_prepared(&fx, "t");
  if (t)
    CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 300);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  PQfinish(app);
  fx_close(&fx);
}

/* Change positions: the changes made by capture and by applied rows, each
 * listed once in UUID order since a position that does not cover it. */
static void test_positions_and_changes(void) {
  fixture fx;
  PGconn *app = NULL;
  lipsync_table *t;
  lipsync_position p1, p2, bad;
  uint8_t a[LIPSYNC_UUID_LEN], b[LIPSYNC_UUID_LEN], c[LIPSYNC_UUID_LEN];
  uint8_t d[LIPSYNC_UUID_LEN], got[16][LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(4);
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int);"
                    " INSERT INTO {S}.t VALUES (1), (2)"))
    goto out;
  if (!captured(&fx, &app))
    goto out;
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_position(fx.store, t, &p1), 0);
  CU_ASSERT(p1.len > 1 + LIPSYNC_SITE_LEN && p1.len <= LIPSYNC_POSITION_MAX);
  /* Nothing changed since the snapshot's own position. */
  CU_ASSERT_EQUAL(changes_since(fx.store, t, &p1, got, 16), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  APP_EXEC(&fx, app,
           "UPDATE {S}.t SET a = 10 WHERE a = 1;"
           " DELETE FROM {S}.t WHERE a = 2;"
           " INSERT INTO {S}.t VALUES (3)");
  if (!uuid_of(&fx, 10, a) || !uuid_of(&fx, 3, c))
    goto out;
  char *bt = FX_TEXT(&fx, "SELECT uuid FROM {S}._lipsync_meta_t WHERE deleted");
  CU_ASSERT_FATAL(bt && lipsync_uuid_parse(bt, strlen(bt), b) == 0);
  free(bt);
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  int n = changes_since(fx.store, t, &p1, got, 16);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT(has_uuid(got, n, a) && has_uuid(got, n, b) && has_uuid(got, n, c));
  /* A row applied by this session is covered by its own position. */
  uuid_fill(d, 0xDD);
  lipsync_row row = applied(d, &v, 1, version_of(77, 7), 0, NULL);
  CU_ASSERT_EQUAL(store_insert(fx.store, t, &row), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT_EQUAL(store_position(fx.store, t, &p2), 0);
  CU_ASSERT_EQUAL(changes_since(fx.store, t, &p2, got, 16), 0);
  lipsync_finish f = {.max_clock = 77};
  CU_ASSERT_EQUAL(store_finish_table(fx.store, t, &f), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);

  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(changes_since(fx.store, t, &p2, got, 16), 0);
  n = changes_since(fx.store, t, &p1, got, 16);
  CU_ASSERT_EQUAL(n, 4);
  CU_ASSERT(has_uuid(got, n, d));
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  APP_EXEC(&fx, app, "UPDATE {S}.t SET a = 30 WHERE a = 3");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  n = changes_since(fx.store, t, &p2, got, 16);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT(n == 1 && memcmp(got[0], c, LIPSYNC_UUID_LEN) == 0);

  /* Positions it cannot read as its own: malformed, another database's,
   * one it has not reached. */
  lipsync_cursor *cur = NULL;
  bad = p2;
  bad.len = 3;
  CU_ASSERT_EQUAL(store_scan_changes(fx.store, t, &bad, &cur),
                  LIPSYNC_ERR_NOT_FOUND);
  CU_ASSERT_PTR_NULL(cur);
  bad = p2;
  bad.data[1] ^= 1;
  CU_ASSERT_EQUAL(store_scan_changes(fx.store, t, &bad, &cur),
                  LIPSYNC_ERR_NOT_FOUND);
  bad = p2;
  bad.data[bad.len++] = 0;
  CU_ASSERT_EQUAL(store_scan_changes(fx.store, t, &bad, &cur),
                  LIPSYNC_ERR_NOT_FOUND);
  pg_position pp, far;
  CU_ASSERT_EQUAL_FATAL(pgs_position_decode(&p2, &pp), 0);
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
  /* Not an error of the transaction. */
  CU_ASSERT_EQUAL(changes_since(fx.store, t, &p2, got, 16), 1);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  PQfinish(app);
  fx_close(&fx);
}

/* A transaction in progress when a position is taken, which commits
 * later, is not covered: its change is listed since that position. */
static void test_position_and_concurrent_commit(void) {
  fixture fx;
  PGconn *app = NULL;
  lipsync_table *t;
  lipsync_position p;
  uint8_t u[LIPSYNC_UUID_LEN], got[4][LIPSYNC_UUID_LEN];
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int);"
                    " INSERT INTO {S}.t VALUES (1), (2)"))
    goto out;
  if (!captured(&fx, &app) || !uuid_of(&fx, 1, u))
    goto out;
  APP_EXEC(&fx, app, "BEGIN; UPDATE {S}.t SET a = 11 WHERE a = 1");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_position(fx.store, t, &p), 0);
  CU_ASSERT_EQUAL(changes_since(fx.store, t, &p, got, 4), 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  APP_EXEC(&fx, app, "COMMIT");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  int n = changes_since(fx.store, t, &p, got, 4);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT(n == 1 && memcmp(got[0], u, LIPSYNC_UUID_LEN) == 0);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
out:
  PQfinish(app);
  fx_close(&fx);
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
  fixture fx;
  PGconn *app = NULL;
  lipsync_table *t;
  lipsync_item it;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN], un[LIPSYNC_UUID_LEN];
  uint8_t ut[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(50);
  static const char deltas[] = "SELECT count(*) FROM _lipsync.deltas WHERE"
                               " tbl = '{S}.t'";
  char deltas_sql[200];
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int);"
                    " INSERT INTO {S}.t SELECT i FROM generate_series(1, 20)"
                    " i"))
    goto out;
  snprintf(deltas_sql, sizeof deltas_sql, "%s", deltas);
  /* '{S}' quoted is "schema": the registry name is plain. */
  char *q = strstr(deltas_sql, "'{S}");
  snprintf(q, sizeof deltas_sql - (size_t)(q - deltas_sql), "'%s.t'",
           fx.schema);
  if (!captured(&fx, &app))
    goto out;
  CHECK_SUMMARY(&fx, "t");
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 0);
  APP_EXEC(&fx, app,
           "INSERT INTO {S}.t VALUES (21), (22);"
           " UPDATE {S}.t SET a = a + 100 WHERE a <= 5;"
           " UPDATE {S}.t SET a = a WHERE a = 6;"
           " DELETE FROM {S}.t WHERE a BETWEEN 7 AND 9");
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 10);
  CHECK_SUMMARY(&fx, "t");
  /* A row deleted twice, and inserted again under the same UUID. */
  if (!uuid_of(&fx, 10, u1))
    goto out;
  APP_EXEC(&fx, app, "DELETE FROM {S}.t WHERE a = 10");
  char sql[200], text[37];
  lipsync_uuid_format(u1, text);
  snprintf(sql, sizeof sql, "INSERT INTO {S}.t VALUES (10, '%s')", text);
  APP_EXEC(&fx, app, sql);
  CHECK_SUMMARY(&fx, "t");
  APP_EXEC(&fx, app, "BEGIN; TRUNCATE {S}.t; ROLLBACK");
  CHECK_SUMMARY(&fx, "t");
  APP_EXEC(&fx, app, "TRUNCATE {S}.t; INSERT INTO {S}.t VALUES (1), (2)");
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
  APP_EXEC(&fx, app, "INSERT INTO {S}.t VALUES (60)");
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
  APP_EXEC(&fx, app, "INSERT INTO {S}.t VALUES (77)");
  char lock[300];
  snprintf(lock, sizeof lock,
           "BEGIN; SELECT pg_advisory_xact_lock(1818849395,"
           " hashtext('%s.t'))",
           fx.schema);
  PG_EXEC(app, lock);
  CU_ASSERT_EQUAL(lipsync_store_maintain(fx.store, 0), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 1);
  PG_EXEC(app, "ROLLBACK");
  CU_ASSERT_EQUAL(lipsync_store_maintain(fx.store, 0), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, deltas_sql, -1), 0);
  CHECK_SUMMARY(&fx, "t");
out:
  PQfinish(app);
  fx_close(&fx);
}

/* Two sessions apply different rows of one table at once: neither waits,
 * both commit. Two that write the same row: the second fails with
 * TRY_AGAIN, after waiting for the first when it is still open. */
static void test_concurrent_sessions(void) {
  fixture fx;
  PGconn *conn2 = NULL;
  lipsync_store *second = NULL;
  lipsync_table *t1, *t2;
  lipsync_item i1, i2;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN], n1[LIPSYNC_UUID_LEN];
  uint8_t n2[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(7);
  lipsync_finish f = {.max_clock = 1};
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int);"
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
  fx_close(&fx);
}

/* A session that reads blocks no writer; a writer's lock that the session
 * waits for longer than its lock timeout is TRY_AGAIN. */
static void test_reader_blocks_no_writer(void) {
  fixture fx;
  PGconn *app = NULL;
  lipsync_table *t;
  lipsync_item it;
  lipsync_summary before, after;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(5);
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int);"
                    " INSERT INTO {S}.t SELECT i FROM generate_series(1, 50)"
                    " i"))
    goto out;
  if (!captured(&fx, &app) || !uuid_of(&fx, 1, u))
    goto out;
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_summarize(fx.store, t, &before), 0);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 50);
  PG_EXEC(app, "SET statement_timeout = '5s'");
  double started = now_s();
  APP_EXEC(&fx, app,
           "UPDATE {S}.t SET a = 100 WHERE a = 1;"
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
  APP_EXEC(&fx, app, "BEGIN; UPDATE {S}.t SET a = 101 WHERE a = 100");
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
  PG_EXEC(app, "ROLLBACK");
out:
  PQfinish(app);
  fx_close(&fx);
}

/* A recount finds a row changed with capture off and gives it a new
 * version; so does the prepare that follows a distrust, which also drops
 * the checkpoint. */
static void test_recount(void) {
  fixture fx;
  PGconn *app = NULL;
  lipsync_table *t;
  lipsync_item it1, it2, now1, now2;
  lipsync_checkpoint ck;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN];
  char name[256];
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int, b text);"
                    " INSERT INTO {S}.t SELECT i, 'x' FROM"
                    " generate_series(1, 30) i"))
    goto out;
  if (!captured(&fx, &app) || !uuid_of(&fx, 1, u1) || !uuid_of(&fx, 2, u2))
    goto out;
  /* The first recount records every row's digest. */
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_recount(fx.store, t), 0);
  CU_ASSERT(item_of(fx.store, t, u1, &it1) && item_of(fx.store, t, u2, &it2));
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx,
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
                         " length(rowdig) = 16",
                         -1),
                  30);
  APP_EXEC(&fx, app,
           "BEGIN; SET LOCAL lipsync.applying = 'on';"
           " UPDATE {S}.t SET b = 'changed' WHERE a = 1; COMMIT");
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
  APP_EXEC(&fx, app,
           "BEGIN; SET LOCAL lipsync.applying = 'on';"
           " UPDATE {S}.t SET b = 'again' WHERE a = 2; COMMIT");
  CU_ASSERT_EQUAL(store_distrust(fx.store, tname(&fx, "t", name, sizeof name)),
                  0);
  CU_ASSERT_EQUAL(
      about_t(&fx, "tables", "name", "recount AND ck_token IS NULL"), 1);
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT(item_of(fx.store, t, u2, &now2));
  CU_ASSERT(lipsync_version_cmp(&now2.version, &it2.version) > 0);
  CU_ASSERT_EQUAL(store_load_checkpoint(fx.store, t, &ck), 0);
  CU_ASSERT(!ck.has);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(about_t(&fx, "tables", "name", "recount"), 0);
  CHECK_SUMMARY(&fx, "t");
  /* Nothing to distrust: no error. */
  CU_ASSERT_EQUAL(store_distrust(fx.store, "no_such_schema.no_such_table"), 0);
out:
  PQfinish(app);
  fx_close(&fx);
}

/* What finish_table keeps: the client's checkpoint and position, the
 * server's tokens, and bases only for the items the session covers. */
static void test_checkpoints_and_tokens(void) {
  fixture fx;
  PGconn *app = NULL;
  lipsync_table *t;
  lipsync_checkpoint ck, got;
  lipsync_item it;
  uint8_t u1[LIPSYNC_UUID_LEN], u2[LIPSYNC_UUID_LEN];
  uint8_t client[LIPSYNC_SITE_LEN], other[LIPSYNC_SITE_LEN];
  uint8_t token[LIPSYNC_SITE_LEN], seen[LIPSYNC_SITE_LEN];
  int found;
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int);"
                    " INSERT INTO {S}.t VALUES (1), (2)"))
    goto out;
  if (!captured(&fx, &app) || !uuid_of(&fx, 1, u1) || !uuid_of(&fx, 2, u2))
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
                         "SELECT count(*) FROM {S}._lipsync_meta_t WHERE"
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
  lipsync_row row;
  CU_ASSERT_EQUAL(store_fetch(fx.store, t, u1, &row), 0);
  CU_ASSERT_EQUAL(lipsync_version_cmp(&row.base, &row.version), 0);
  CU_ASSERT_EQUAL(store_rollback(fx.store), 0);

  /* A local change is dirty until the next session covers it; one made
   * while that session runs stays dirty. */
  APP_EXEC(&fx, app, "UPDATE {S}.t SET a = 10 WHERE a = 1");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  CU_ASSERT_EQUAL(store_position(fx.store, t, &ck.client_position), 0);
  APP_EXEC(&fx, app, "UPDATE {S}.t SET a = 20 WHERE a = 2");
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
  CU_ASSERT_EQUAL(about_t(&fx, "peers", "tbl", "get_byte(token, 0) = 100"), 1);
out:
  PQfinish(app);
  fx_close(&fx);
}

/* Installing capture on a table that has _lipsync_uuid already: a row
 * another connection commits after the session began, before its first
 * prepare, is counted (the table is locked before the snapshot), and no
 * recount is left due. */
static void test_install_sees_concurrent_rows(void) {
  fixture fx;
  PGconn *app = NULL;
  lipsync_table *t = NULL;
  char name[512];
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int, _lipsync_uuid uuid UNIQUE"
                    " DEFAULT gen_random_uuid());"
                    " INSERT INTO {S}.t(a) VALUES (1), (2)"))
    goto out;
  app = PG_CONNECT();
  if (!app)
    goto out;
  CU_ASSERT_EQUAL(store_begin_read(fx.store), 0);
  CU_ASSERT_EQUAL_FATAL(
      store_open_table(fx.store, tname(&fx, "t", name, sizeof name), &t), 0);
  APP_EXEC(&fx, app, "INSERT INTO {S}.t(a) VALUES (3)");
  CU_ASSERT_EQUAL(store_prepare_table(fx.store, t), 0);
  CU_ASSERT_EQUAL(count_rows(fx.store, t, NULL, NULL), 3);
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}._lipsync_meta_t", -1),
                  3);
  CU_ASSERT_EQUAL(about_t(&fx, "tables", "name", "recount"), 0);
  CHECK_SUMMARY(&fx, "t");
out:
  PQfinish(app);
  fx_close(&fx);
}

/* A load into a table that had no row and no item when prepared locks it
 * against other writers (its indexes are built after the load), not
 * against readers; a table that has rows is not locked. */
static void test_bulk_load_locks_writers(void) {
  fixture fx;
  PGconn *app = NULL;
  lipsync_table *t;
  uint8_t u[LIPSYNC_UUID_LEN];
  lipsync_value v = tu_int(1);
  if (!fx_open(&fx, "CREATE TABLE {S}.t(a int)") || !captured(&fx, &app))
    goto out;
  PG_EXEC(app, "SET lock_timeout = '200ms'");
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  /* Prepared, before its first insert: nothing is locked. */
  APP_EXEC(&fx, app, "SELECT count(*) FROM {S}.t");
  uuid_fill(u, 0x21);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  char *q = expand(&fx, "INSERT INTO {S}.t VALUES (2)");
  PGresult *r = PQexec(app, q);
  free(q);
  CU_ASSERT_STRING_EQUAL(pgs_sqlstate(r), "55P03");
  PQclear(r);
  CU_ASSERT(APP_EXEC(&fx, app, "SELECT count(*) FROM {S}.t"));
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  /* Now the table has a row: a sync that inserts locks nothing. */
  t = begin_on(fx.store, &fx, "t");
  if (!t)
    goto out;
  uuid_fill(u, 0x22);
  CU_ASSERT_EQUAL(insert_row(fx.store, t, u, &v, 1), 0);
  CU_ASSERT_EQUAL(store_flush(fx.store), 0);
  CU_ASSERT(APP_EXEC(&fx, app, "INSERT INTO {S}.t VALUES (3)"));
  CU_ASSERT_EQUAL(store_commit(fx.store), 0);
  CU_ASSERT_EQUAL(FX_INT(&fx, "SELECT count(*) FROM {S}.t", -1), 3);
out:
  PQfinish(app);
  fx_close(&fx);
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
  CU_ASSERT_EQUAL(PG_INT(conn,
                         "SELECT count(*) FROM pg_trigger WHERE tgrelid ="
                         " 't'::regclass AND tgnargs = 3",
                         -1),
                  4);
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
      {"open unknown table", test_open_unknown_table},
      {"quoted names", test_quoted_names},
      {"list tables", test_list_tables},
      {"prepare adds UUIDs, rollback undoes",
       test_prepare_adds_uuids_and_rollback_undoes},
      {"prepare keeps UUIDs and index", test_prepare_keeps_uuids_and_index},
      {"prepare refusals", test_prepare_refusals},
      {"scan ranges", test_scan_ranges},
      {"scan in batches", test_scan_batches},
      {"lookups by UUID in one batch", test_scan_uuids},
      {"fetch", test_fetch},
      {"scan before prepare", test_scan_before_prepare_fails_cleanly},
      {"interleaved insert and read", test_interleaved_insert_and_read},
      {"insert edge values", test_insert_edge_values},
      {"session settings do not matter", test_session_settings_do_not_matter},
      {"insert refusals", test_insert_refusals},
      {"jsonb normal form", test_jsonb_normal_form},
      {"citext and name", test_other_text_types},
      {"index of an empty table", test_index_of_empty_table},
      {"generated and partitioned", test_generated_and_partitioned},
      {"constraint violation", test_constraint_violation},
      {"rollback undoes inserts", test_rollback_undoes_inserts},
      {"begin inside caller's transaction",
       test_begin_inside_callers_transaction},
      {"commit persists", test_commit_persists},
      {"open errors", test_open_errors},
      {"canonical forms match the server", test_forms_match_server},
      {"many rows", test_many_rows},
      {"a second sync does not wait", test_second_sync_does_not_wait},
      {"interrupt ends a lock wait", test_interrupt_ends_lock_wait},
      {"capture from another connection", test_capture_other_connection},
      {"store writes are not captured", test_store_writes_not_captured},
      {"initial versions and repair", test_initial_versions_and_repair},
      {"finish_table and tick", test_finish_and_tick},
      {"name too long for capture", test_long_name_refused},
      {"rows carry versions, in UUID order", test_rows_carry_versions},
      {"positions and changes", test_positions_and_changes},
      {"position and a concurrent commit", test_position_and_concurrent_commit},
      {"position encoding", test_position_encoding},
      {"kept summary", test_kept_summary},
      {"concurrent sessions", test_concurrent_sessions},
      {"a reader blocks no writer", test_reader_blocks_no_writer},
      {"recount", test_recount},
      {"checkpoints and tokens", test_checkpoints_and_tokens},
      {"install sees concurrent rows", test_install_sees_concurrent_rows},
      {"a load into an empty table locks writers",
       test_bulk_load_locks_writers},
      {"copied database", test_copied_database},
      {"previous layout migrated", test_migrate_previous_layout},
      {NULL, NULL},
  };
  int rc = tu_add_suite("pg_types", forms);
  return rc != CUE_SUCCESS ? rc : tu_add_suite("store_pg", tests);
}
