/* session_test.c: whole sessions in one process: a client and a server
 * session pass buffers to each other over two SQLite databases (src/
 * session.c, src/reconcile.c), plus bad peers fed crafted frames. */
#include "frame.h"
#include "lipsync.h"
#include "test_util.h"

#include <CUnit/CUnit.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SECRET[] = "s3cret-for-tests";
#define SECRET_LEN (sizeof SECRET - 1)

/* ------------------------------------------------------------------ */
/* databases                                                            */
/* ------------------------------------------------------------------ */

static sqlite3 *mem_db(void) {
  sqlite3 *db = NULL;
  CU_ASSERT_EQUAL_FATAL(sqlite3_open(":memory:", &db), SQLITE_OK);
  return db;
}

static void exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK)
    fprintf(stderr, "SQL failed: %s: %s\n", sql, err);
  sqlite3_free(err);
  CU_ASSERT_EQUAL_FATAL(rc, SQLITE_OK);
}

static long long query_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  long long v = -1;
  CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  if (sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static double query_double(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  double v = 0;
  CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  if (sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_double(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* Appends a byte-exact rendering of every value of the query to |out|. */
static void dump_query(sqlite3 *db, const char *sql, bytebuf *out) {
  sqlite3_stmt *st;
  CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW) {
    for (int c = 0; c < sqlite3_column_count(st); c++) {
      int type = sqlite3_column_type(st, c);
      char head[64];
      bytebuf_append(out, head,
                     (size_t)snprintf(head, sizeof head, "|%d:", type));
      if (type == SQLITE_INTEGER) {
        sqlite3_int64 i = sqlite3_column_int64(st, c);
        bytebuf_append(out, &i, sizeof i);
      } else if (type == SQLITE_FLOAT) {
        double d = sqlite3_column_double(st, c);
        bytebuf_append(out, &d, sizeof d);
      } else if (type != SQLITE_NULL) {
        const void *p = sqlite3_column_blob(st, c);
        bytebuf_append(out, p, (size_t)sqlite3_column_bytes(st, c));
      }
    }
    bytebuf_append(out, "\n", 1);
  }
  sqlite3_finalize(st);
}

/* Schema and contents of every table, to prove a database unchanged. */
static bytebuf db_state(sqlite3 *db) {
  bytebuf out = {0};
  dump_query(db, "SELECT type, name, sql FROM sqlite_schema ORDER BY name",
             &out);
  sqlite3_stmt *st;
  sqlite3_prepare_v2(db,
                     "SELECT name FROM sqlite_schema WHERE type='table' "
                     "ORDER BY name",
                     -1, &st, NULL);
  while (sqlite3_step(st) == SQLITE_ROW) {
    char sql[256];
    /* In the table's own order: rowid, or the key of a table WITHOUT
     * ROWID (as the capture metadata's are). */
    snprintf(sql, sizeof sql, "SELECT * FROM \"%s\"",
             (const char *)sqlite3_column_text(st, 0));
    dump_query(db, sql, &out);
  }
  sqlite3_finalize(st);
  return out;
}

static int same_state(bytebuf a, bytebuf b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

/* The synced table's contents in UUID order, for comparing two sides. */
static bytebuf table_rows(sqlite3 *db, const char *table) {
  char sql[256];
  bytebuf out = {0};
  snprintf(sql, sizeof sql, "SELECT * FROM \"%s\" ORDER BY _lipsync_uuid",
           table);
  dump_query(db, sql, &out);
  return out;
}

static const char *CITY_SCHEMA =
    "CREATE TABLE cities(city_id INTEGER, name TEXT, country TEXT, "
    "admin_code TEXT, population INTEGER, lon REAL, lat REAL);";

static void add_cities(sqlite3 *db, int from, int to) {
  char sql[512];
  exec(db, "BEGIN");
  for (int i = from; i < to; i++) {
    snprintf(sql, sizeof sql,
             "INSERT INTO cities(city_id,name,country,admin_code,population,"
             "lon,lat) VALUES (%d, 'Città %d ü', 'IT', '%02d', %d, %d.125, "
             "-%d.5)",
             i, i, i % 100, i * 7, i % 180, i % 90);
    exec(db, sql);
  }
  exec(db, "COMMIT");
}

/* ------------------------------------------------------------------ */
/* running two sessions against each other                              */
/* ------------------------------------------------------------------ */

typedef struct peer {
  sqlite3 *db;
  lipsync_store *store;
  lipsync_session *session;
} peer;

static void peer_open(peer *p, sqlite3 *db) {
  p->db = db;
  CU_ASSERT_EQUAL_FATAL(lipsync_store_sqlite_wrap(&p->store, db), 0);
  p->session = NULL;
}

/* Two in-memory databases, each with an empty table cities. */
static void open_city_pair(peer *c, peer *s) {
  peer_open(c, mem_db());
  peer_open(s, mem_db());
  exec(c->db, CITY_SCHEMA);
  exec(s->db, CITY_SCHEMA);
}

static void peer_close(peer *p) {
  lipsync_session_free(p->session);
  lipsync_store_free(p->store);
  sqlite3_close(p->db);
}

static void start_client(peer *p, const char *const *tables, size_t n,
                         const char *secret) {
  CU_ASSERT_EQUAL_FATAL(lipsync_session_client_new(&p->session, p->store,
                                                   secret, strlen(secret),
                                                   tables, n),
                        0);
}

static void start_server(peer *p, const char *const *offered, size_t n) {
  CU_ASSERT_EQUAL_FATAL(lipsync_session_server_new(&p->session, p->store,
                                                   SECRET, SECRET_LEN, offered,
                                                   n, n == 0),
                        0);
}

/* Moves bytes both ways until neither side has anything to say, then tells
 * a side still waiting that the other closed. */
static void pump(lipsync_session *c, lipsync_session *s) {
  for (;;) {
    int progress = 0;
    const uint8_t *d;
    ssize_t n;
    while ((n = lipsync_session_send(c, &d)) > 0) {
      progress = 1;
      lipsync_session_recv(s, d, (size_t)n);
    }
    while ((n = lipsync_session_send(s, &d)) > 0) {
      progress = 1;
      lipsync_session_recv(c, d, (size_t)n);
    }
    if (!progress)
      break;
  }
  if (!lipsync_session_is_done(c))
    lipsync_session_recv_eof(c);
  if (!lipsync_session_is_done(s))
    lipsync_session_recv_eof(s);
}

static void sync_pair(peer *c, peer *s, const char *const *tables, size_t n) {
  start_client(c, tables, n, SECRET);
  start_server(s, NULL, 0);
  pump(c->session, s->session);
}

static void assert_tables_equal(sqlite3 *a, sqlite3 *b, const char *table) {
  bytebuf x = table_rows(a, table), y = table_rows(b, table);
  CU_ASSERT_TRUE(same_state(x, y));
  bytebuf_free(&x);
  bytebuf_free(&y);
}

/* ------------------------------------------------------------------ */
/* successful syncs                                                     */
/* ------------------------------------------------------------------ */

static void test_disjoint_without_uuid_column(void) {
  peer c, s;
  open_city_pair(&c, &s);
  add_cities(c.db, 0, 30);
  add_cities(s.db, 100, 120);
  const char *t[] = {"cities"};
  sync_pair(&c, &s, t, 1);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
  CU_ASSERT_EQUAL(lipsync_session_result(s.session), 0);
  CU_ASSERT_EQUAL(query_int(c.db, "SELECT count(*) FROM cities"), 50);
  CU_ASSERT_EQUAL(query_int(s.db, "SELECT count(*) FROM cities"), 50);
  CU_ASSERT_EQUAL(
      query_int(c.db, "SELECT count(DISTINCT _lipsync_uuid) FROM cities"), 50);
  assert_tables_equal(c.db, s.db, "cities");
  lipsync_table_stats st;
  CU_ASSERT_EQUAL(lipsync_session_table_stats(c.session, 0, &st), 0);
  CU_ASSERT_EQUAL(st.rows_sent, 30);
  CU_ASSERT_EQUAL(st.rows_received, 20);
  CU_ASSERT_EQUAL(lipsync_session_table_stats(c.session, 1, &st),
                  LIPSYNC_ERR_INVALID_ARGUMENT);

  /* A second sync finds nothing to do and moves no row. */
  lipsync_session_free(c.session);
  lipsync_session_free(s.session);
  sync_pair(&c, &s, t, 1);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
  lipsync_session_table_stats(c.session, 0, &st);
  CU_ASSERT_EQUAL(st.rows_sent + st.rows_received, 0);
  uint64_t sent, received;
  lipsync_session_bytes(c.session, &sent, &received);
  CU_ASSERT_TRUE(sent < 1024 && received < 1024);
  peer_close(&c);
  peer_close(&s);
}

/* Both sides share most rows and each has some of its own, so the ranges
 * are split and item lists exchanged, under several strategies. */
static void run_overlap(size_t threshold) {
  peer c, s;
  peer_open(&c, mem_db());
  peer_open(&s, mem_db());
  exec(c.db, CITY_SCHEMA);
  add_cities(c.db, 0, 6000);
  const char *t[] = {"cities"};
  exec(s.db, CITY_SCHEMA);
  sync_pair(&c, &s, t, 1); /* server gets a copy, UUIDs included */
  CU_ASSERT_EQUAL_FATAL(lipsync_session_result(c.session), 0);
  lipsync_session_free(c.session);
  lipsync_session_free(s.session);
  add_cities(c.db, 5000, 5400);
  add_cities(s.db, 7000, 7300);

  start_client(&c, t, 1, SECRET);
  start_server(&s, NULL, 0);
  lipsync_session_set_split_threshold(c.session, threshold);
  lipsync_session_set_split_threshold(s.session, threshold);
  pump(c.session, s.session);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
  CU_ASSERT_EQUAL(lipsync_session_result(s.session), 0);
  lipsync_table_stats st;
  lipsync_session_table_stats(c.session, 0, &st);
  CU_ASSERT_EQUAL(st.rows_sent, 400);
  CU_ASSERT_EQUAL(st.rows_received, 300);
  CU_ASSERT_EQUAL(query_int(s.db, "SELECT count(*) FROM cities"), 6700);
  assert_tables_equal(c.db, s.db, "cities");
  peer_close(&c);
  peer_close(&s);
}

static void test_overlap_split(void) {
  run_overlap(256);
}
static void test_overlap_fine_split(void) {
  run_overlap(1);
}
static void test_overlap_item_lists_only(void) {
  run_overlap(0);
}

static void test_one_side_empty_both_ways(void) {
  for (int dir = 0; dir < 2; dir++) {
    peer c, s;
    open_city_pair(&c, &s);
    add_cities(dir ? s.db : c.db, 0, 5000);
    const char *t[] = {"cities"};
    sync_pair(&c, &s, t, 1);
    CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
    CU_ASSERT_EQUAL(query_int(c.db, "SELECT count(*) FROM cities"), 5000);
    CU_ASSERT_EQUAL(query_int(s.db, "SELECT count(*) FROM cities"), 5000);
    assert_tables_equal(c.db, s.db, "cities");
    peer_close(&c);
    peer_close(&s);
  }
}

static void test_both_empty_and_several_tables(void) {
  peer c, s;
  peer_open(&c, mem_db());
  peer_open(&s, mem_db());
  const char *schema = "CREATE TABLE empty(a INTEGER, b TEXT);"
                       "CREATE TABLE notes(id INTEGER, body TEXT, data BLOB);";
  exec(c.db, schema);
  exec(s.db, schema);
  exec(c.db, "INSERT INTO notes VALUES (1, 'client', x'00ff')");
  exec(s.db, "INSERT INTO notes VALUES (2, 'server', NULL)");
  const char *t[] = {"empty", "notes"};
  sync_pair(&c, &s, t, 2);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
  CU_ASSERT_EQUAL(lipsync_session_result(s.session), 0);
  CU_ASSERT_EQUAL(lipsync_session_table_count(s.session), 2);
  CU_ASSERT_EQUAL(query_int(c.db, "SELECT count(*) FROM empty"), 0);
  CU_ASSERT_EQUAL(query_int(s.db, "SELECT count(*) FROM notes"), 2);
  assert_tables_equal(c.db, s.db, "notes");
  assert_tables_equal(c.db, s.db, "empty");
  peer_close(&c);
  peer_close(&s);
}

static void test_edge_values(void) {
  peer c, s;
  peer_open(&c, mem_db());
  peer_open(&s, mem_db());
  /* Untyped columns keep every value exactly as given. */
  const char *schema = "CREATE TABLE edge(k INTEGER, v);";
  exec(c.db, schema);
  exec(s.db, schema);
  exec(c.db, "INSERT INTO edge VALUES (1, -9223372036854775808),"
             "(2, 9223372036854775807), (3, -0.0), (4, 9e999), (5, -9e999),"
             "(6, 1e-308), (7, ''), (8, x''), (9, 'a' || char(0) || 'b'),"
             "(10, '東京 Zürich'), (11, NULL), (12, 5e-324)");
  exec(c.db, "UPDATE edge SET v = CAST(v AS BLOB) WHERE k = 9");
  exec(c.db, "UPDATE edge SET v = CAST(v AS TEXT) WHERE k = 9");
  const char *t[] = {"edge"};
  sync_pair(&c, &s, t, 1);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
  CU_ASSERT_EQUAL(query_int(s.db, "SELECT count(*) FROM edge"), 12);
  CU_ASSERT_EQUAL(query_int(s.db, "SELECT length(CAST(v AS BLOB)) FROM edge "
                                  "WHERE k = 9"),
                  3);
  CU_ASSERT_TRUE(signbit(query_double(s.db, "SELECT v FROM edge WHERE k=3")));
  CU_ASSERT_EQUAL(query_int(s.db, "SELECT typeof(v) = 'real' FROM edge "
                                  "WHERE k = 3"),
                  1);
  assert_tables_equal(c.db, s.db, "edge");
  peer_close(&c);
  peer_close(&s);
}

/* ------------------------------------------------------------------ */
/* refusals that change nothing                                         */
/* ------------------------------------------------------------------ */

typedef struct refusal {
  const char *client_sql, *server_sql, *table, *secret;
  const char *offered; /* NULL: all */
  uint32_t client_min, client_max;
  int expect;
} refusal;

static void run_refusal(const refusal *r) {
  peer c, s;
  peer_open(&c, mem_db());
  peer_open(&s, mem_db());
  exec(c.db, r->client_sql);
  exec(s.db, r->server_sql);
  bytebuf before_c = db_state(c.db), before_s = db_state(s.db);
  const char *t[] = {r->table};
  start_client(&c, t, 1, r->secret ? r->secret : SECRET);
  if (r->client_min)
    lipsync_session_set_versions(c.session, r->client_min, r->client_max);
  start_server(&s, r->offered ? &r->offered : NULL, r->offered ? 1 : 0);
  pump(c.session, s.session);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), r->expect);
  CU_ASSERT_EQUAL(lipsync_session_result(s.session), r->expect);
  /* One side detects the failure and tells the other, except a conflict,
   * which both decide alike from the two Verify frames. */
  if (r->expect != LIPSYNC_ERR_CONFLICT)
    CU_ASSERT_TRUE(lipsync_session_error_is_remote(c.session) ||
                   lipsync_session_error_is_remote(s.session));
  CU_ASSERT_TRUE(lipsync_session_is_done(c.session));
  CU_ASSERT_TRUE(lipsync_session_is_done(s.session));
  bytebuf after_c = db_state(c.db), after_s = db_state(s.db);
  CU_ASSERT_TRUE(same_state(before_c, after_c));
  CU_ASSERT_TRUE(same_state(before_s, after_s));
  bytebuf_free(&before_c);
  bytebuf_free(&before_s);
  bytebuf_free(&after_c);
  bytebuf_free(&after_s);
  peer_close(&c);
  peer_close(&s);
}

static const char *T1 = "CREATE TABLE t(a INTEGER, b TEXT);"
                        "INSERT INTO t VALUES (1, 'x'), (2, 'y');";

static void test_schema_mismatch(void) {
  refusal r = {T1,   "CREATE TABLE t(a INTEGER, b INTEGER);",
               "t",  NULL,
               NULL, 0,
               0,    LIPSYNC_ERR_SCHEMA_MISMATCH};
  run_refusal(&r);
  refusal missing = {T1, "CREATE TABLE t(a INTEGER);", "t", NULL, NULL, 0,
                     0,  LIPSYNC_ERR_SCHEMA_MISMATCH};
  run_refusal(&missing);
}

static void test_wrong_secret(void) {
  refusal r = {T1,   T1, "t", "not the secret",
               NULL, 0,  0,   LIPSYNC_ERR_AUTH_FAILED};
  run_refusal(&r);
}

static void test_version_mismatch(void) {
  refusal r = {T1, T1, "t", NULL, NULL, 2, 3, LIPSYNC_ERR_VERSION_MISMATCH};
  run_refusal(&r);
}

static void test_unknown_and_unoffered_tables(void) {
  refusal unknown = {T1, "CREATE TABLE other(a);", "t", NULL, NULL, 0,
                     0,  LIPSYNC_ERR_UNKNOWN_TABLE};
  run_refusal(&unknown);
  refusal unoffered = {T1,      T1, "t", NULL,
                       "other", 0,  0,   LIPSYNC_ERR_TABLE_NOT_OFFERED};
  run_refusal(&unoffered);
}

static void test_conflict(void) {
  const char *cs =
      "CREATE TABLE t(a INTEGER, b TEXT, _lipsync_uuid TEXT);"
      "INSERT INTO t VALUES (1, 'client', "
      "'00000000-0000-4000-8000-000000000001'),"
      "(2, 'same', '00000000-0000-4000-8000-000000000002'),"
      "(3, 'client', '00000000-0000-4000-8000-000000000003'),"
      "(4, 'only client', '00000000-0000-4000-8000-000000000004');";
  const char *ss = "CREATE TABLE t(a INTEGER, b TEXT, _lipsync_uuid TEXT);"
                   "INSERT INTO t VALUES (1, 'server', "
                   "'00000000-0000-4000-8000-000000000001'),"
                   "(2, 'same', '00000000-0000-4000-8000-000000000002'),"
                   "(3, 'server', '00000000-0000-4000-8000-000000000003');";
  refusal r = {cs, ss, "t", NULL, NULL, 0, 0, LIPSYNC_ERR_CONFLICT};
  run_refusal(&r);

  /* The report names the table and the number of conflicting rows. */
  peer c, s;
  peer_open(&c, mem_db());
  peer_open(&s, mem_db());
  exec(c.db, cs);
  exec(s.db, ss);
  const char *t[] = {"t"};
  sync_pair(&c, &s, t, 1);
  const char *msg = lipsync_session_errmsg(c.session);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "table t: 2 rows differ"));
  peer_close(&c);
  peer_close(&s);
}

/* The peer vanishes in the middle of the row transfer: neither database
 * keeps anything. */
static void test_peer_vanishes_mid_transfer(void) {
  peer c, s;
  open_city_pair(&c, &s);
  add_cities(c.db, 0, 20000);
  bytebuf before_s = db_state(s.db);
  const char *t[] = {"cities"};
  start_client(&c, t, 1, SECRET);
  start_server(&s, NULL, 0);
  const uint8_t *d;
  ssize_t n;
  size_t client_chunks = 0;
  int rows_seen = 0;
  /* Run until the server has applied some rows, then cut the client. */
  for (int round = 0; round < 100 && !rows_seen; round++) {
    while ((n = lipsync_session_send(c.session, &d)) > 0) {
      lipsync_session_recv(s.session, d, (size_t)n / 2); /* half a chunk */
      client_chunks++;
      rows_seen = client_chunks > 4;
      if (rows_seen)
        break;
      lipsync_session_recv(s.session, d + n / 2, (size_t)(n - n / 2));
    }
    while (!rows_seen && (n = lipsync_session_send(s.session, &d)) > 0)
      lipsync_session_recv(c.session, d, (size_t)n);
  }
  CU_ASSERT_TRUE_FATAL(rows_seen);
  lipsync_session_free(c.session); /* the client dies */
  c.session = NULL;
  lipsync_session_recv_eof(s.session);
  CU_ASSERT_EQUAL(lipsync_session_result(s.session), LIPSYNC_ERR_PROTOCOL);
  bytebuf after_s = db_state(s.db);
  CU_ASSERT_TRUE(same_state(before_s, after_s));
  CU_ASSERT_EQUAL(query_int(c.db, "SELECT count(*) FROM pragma_table_info("
                                  "'cities') WHERE name='_lipsync_uuid'"),
                  0);
  bytebuf_free(&before_s);
  bytebuf_free(&after_s);
  peer_close(&c);
  peer_close(&s);
}

/* Syncs 20000 client rows into a server table of 100 other rows with the
 * server's memory limit at |limit|; returns the server's result. A failed
 * sync must leave both databases as they were. */
static int sync_with_server_limit(size_t limit, size_t *peak, char *msg,
                                  size_t msglen) {
  peer c, s;
  open_city_pair(&c, &s);
  add_cities(c.db, 0, 20000);
  add_cities(s.db, 30000, 30100);
  const char *t[] = {"cities"};
  sync_pair(&c, &s, t, 1); /* capture installed on both, 100 rows moved */
  lipsync_session_free(c.session);
  lipsync_session_free(s.session);
  exec(c.db, "UPDATE cities SET population = population + 1");
  bytebuf before_c = db_state(c.db), before_s = db_state(s.db);
  start_client(&c, t, 1, SECRET);
  start_server(&s, NULL, 0);
  CU_ASSERT_EQUAL(lipsync_session_set_memory_limit(s.session, limit), 0);
  /* pump(), watching the server's memory between chunks. */
  *peak = 0;
  for (int progress = 1; progress;) {
    const uint8_t *d;
    ssize_t n;
    progress = 0;
    while ((n = lipsync_session_send(c.session, &d)) > 0) {
      progress = 1;
      lipsync_session_recv(s.session, d, (size_t)n);
      size_t m = lipsync_session_memory(s.session);
      *peak = m > *peak ? m : *peak;
    }
    while ((n = lipsync_session_send(s.session, &d)) > 0) {
      progress = 1;
      lipsync_session_recv(c.session, d, (size_t)n);
    }
  }
  if (!lipsync_session_is_done(c.session))
    lipsync_session_recv_eof(c.session);
  int rc = lipsync_session_result(s.session);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), rc);
  snprintf(msg, msglen, "%s", lipsync_session_errmsg(c.session));
  bytebuf after_c = db_state(c.db), after_s = db_state(s.db);
  if (rc) {
    CU_ASSERT_TRUE(same_state(before_c, after_c));
    CU_ASSERT_TRUE(same_state(before_s, after_s));
  } else {
    assert_tables_equal(c.db, s.db, "cities");
  }
  bytebuf_free(&before_c);
  bytebuf_free(&before_s);
  bytebuf_free(&after_c);
  bytebuf_free(&after_s);
  peer_close(&c);
  peer_close(&s);
  return rc;
}

/* The memory a session buffers for its peer is bounded (spec LS-SEC-4):
 * past the bound the session fails with RESOURCE_LIMIT, tells the peer,
 * and nothing changes; under it, held rows are written through so that
 * the same sync fits a bound well below what holding them all takes. */
static void test_memory_limit(void) {
  char msg[512];
  size_t unbounded, bounded, tiny;
  CU_ASSERT_EQUAL(sync_with_server_limit(0, &unbounded, msg, sizeof msg), 0);
  /* Holding every row takes more than 6 MiB; written through past a
   * quarter of the bound, they fit in 6. */
  CU_ASSERT_TRUE(unbounded > 6 * 1024 * 1024);
  CU_ASSERT_EQUAL(
      sync_with_server_limit(6 * 1024 * 1024, &bounded, msg, sizeof msg), 0);
  CU_ASSERT_TRUE(bounded <= 6 * 1024 * 1024);
  CU_ASSERT_EQUAL(sync_with_server_limit(256 * 1024, &tiny, msg, sizeof msg),
                  LIPSYNC_ERR_RESOURCE_LIMIT);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "memory limit"));
  CU_ASSERT_TRUE(tiny <= 256 * 1024);
  CU_ASSERT_EQUAL(sync_with_server_limit(LIPSYNC_DEFAULT_MEMORY_LIMIT, &bounded,
                                         msg, sizeof msg),
                  0);
}

/* ------------------------------------------------------------------ */
/* bad peers: crafted frames against a server session                   */
/* ------------------------------------------------------------------ */

/* Feeds |bytes| to a fresh server session and returns the code of the Error
 * frame it answers with (0 if none). */
static uint32_t server_answer(const uint8_t *bytes, size_t len, int *result) {
  peer s;
  peer_open(&s, mem_db());
  start_server(&s, NULL, 0);
  lipsync_session_recv(s.session, bytes, len);
  *result = lipsync_session_result(s.session);
  const uint8_t *d;
  ssize_t n = lipsync_session_send(s.session, &d);
  uint32_t code = 0;
  if (n > 0) {
    frame_reader r;
    arena a;
    int complete;
    frame_reader_init(&r);
    arena_init(&a);
    frame_reader_feed(&r, d, (size_t)n, &complete);
    Lipsync__Frame *f = complete ? frame_reader_decode(&r, &a) : NULL;
    if (f && f->body_case == LIPSYNC__FRAME__BODY_ERROR)
      code = f->error->code;
    frame_reader_free(&r);
    arena_free(&a);
  }
  CU_ASSERT_TRUE(lipsync_session_is_done(s.session));
  peer_close(&s);
  return code;
}

static void test_bad_frames(void) {
  int result;
  uint8_t oversized[] = {0x7f, 0, 0, 0};
  CU_ASSERT_EQUAL(server_answer(oversized, sizeof oversized, &result), 2);
  CU_ASSERT_EQUAL(result, LIPSYNC_ERR_FRAME_TOO_LARGE);
  uint8_t garbage[] = {0, 0, 0, 3, 0xff, 0xff, 0xff};
  CU_ASSERT_EQUAL(server_answer(garbage, sizeof garbage, &result), 1);
  CU_ASSERT_EQUAL(result, LIPSYNC_ERR_PROTOCOL);
  uint8_t unknown[] = {0, 0, 0, 3, 0xa2, 0x01, 0x00}; /* field 20 */
  CU_ASSERT_EQUAL(server_answer(unknown, sizeof unknown, &result), 3);
  CU_ASSERT_EQUAL(result, LIPSYNC_ERR_UNEXPECTED_MESSAGE);
  uint8_t end_turn_first[] = {0, 0, 0, 2, 0x52, 0x00};
  CU_ASSERT_EQUAL(server_answer(end_turn_first, sizeof end_turn_first, &result),
                  3);
  CU_ASSERT_EQUAL(result, LIPSYNC_ERR_UNEXPECTED_MESSAGE);
  uint8_t empty[] = {0, 0, 0, 0};
  CU_ASSERT_EQUAL(server_answer(empty, sizeof empty, &result), 3);
}

static void test_replayed_client_proof(void) {
  /* Record a real client's ClientHello and client_auth from session 1, then
   * replay them to a second server: its fresh nonce makes the proof fail. */
  peer c, s1, s2;
  peer_open(&c, mem_db());
  peer_open(&s1, mem_db());
  peer_open(&s2, mem_db());
  exec(c.db, T1);
  const char *t[] = {"t"};
  start_client(&c, t, 1, SECRET);
  start_server(&s1, NULL, 0);
  start_server(&s2, NULL, 0);
  bytebuf hello = {0}, proof = {0};
  const uint8_t *d;
  ssize_t n = lipsync_session_send(c.session, &d);
  bytebuf_append(&hello, d, (size_t)n);
  lipsync_session_recv(s1.session, hello.data, hello.len);
  n = lipsync_session_send(s1.session, &d);
  lipsync_session_recv(c.session, d, (size_t)n);
  n = lipsync_session_send(c.session, &d);
  bytebuf_append(&proof, d, (size_t)n);
  lipsync_session_recv(s1.session, proof.data, proof.len);
  CU_ASSERT_EQUAL(lipsync_session_result(s1.session), 0);

  lipsync_session_recv(s2.session, hello.data, hello.len);
  lipsync_session_send(s2.session, &d); /* its ServerHello, ignored */
  lipsync_session_recv(s2.session, proof.data, proof.len);
  CU_ASSERT_EQUAL(lipsync_session_result(s2.session), LIPSYNC_ERR_AUTH_FAILED);
  bytebuf_free(&hello);
  bytebuf_free(&proof);
  peer_close(&c);
  peer_close(&s1);
  peer_close(&s2);
}

static void test_reflected_proof(void) {
  /* A fake server that answers the client's proof with that same proof as
   * its own is caught: the roles' labels differ. */
  peer c, s;
  peer_open(&c, mem_db());
  peer_open(&s, mem_db());
  exec(c.db, T1);
  const char *t[] = {"t"};
  start_client(&c, t, 1, SECRET);
  start_server(&s, NULL, 0);
  const uint8_t *d;
  ssize_t n = lipsync_session_send(c.session, &d);
  lipsync_session_recv(s.session, d, (size_t)n);
  n = lipsync_session_send(s.session, &d);
  lipsync_session_recv(c.session, d, (size_t)n);
  n = lipsync_session_send(c.session, &d); /* client_auth */
  CU_ASSERT_FATAL(n > 5);
  bytebuf reflected = {0};
  bytebuf_append(&reflected, d, (size_t)n);
  reflected.data[4] = 0x22; /* field 3 -> field 4: client_auth -> server_auth */
  lipsync_session_recv(c.session, reflected.data, reflected.len);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), LIPSYNC_ERR_AUTH_FAILED);
  bytebuf_free(&reflected);
  peer_close(&c);
  peer_close(&s);
}

/* Feature tls-exporter (spec 5.5): one sync with the bindings |cb| (client)
 * and |sb| (server), either NULL for a side without TLS. Returns the
 * client's result; *bound gets whether the feature was in effect. */
static int sync_bound(const uint8_t *cb, const uint8_t *sb, int *bound) {
  peer c, s;
  peer_open(&c, mem_db());
  peer_open(&s, mem_db());
  exec(c.db, T1);
  exec(s.db, "CREATE TABLE t(a INTEGER, b TEXT);");
  bytebuf before = db_state(s.db);
  const char *t[] = {"t"};
  start_client(&c, t, 1, SECRET);
  start_server(&s, NULL, 0);
  if (cb)
    CU_ASSERT_EQUAL(lipsync_session_set_channel_binding(
                        c.session, cb, LIPSYNC_TLS_BINDING_LEN),
                    0);
  if (sb)
    CU_ASSERT_EQUAL(lipsync_session_set_channel_binding(
                        s.session, sb, LIPSYNC_TLS_BINDING_LEN),
                    0);
  pump(c.session, s.session);
  int rc = lipsync_session_result(c.session);
  CU_ASSERT_EQUAL(lipsync_session_result(s.session), rc);
  *bound = lipsync_session_channel_bound(c.session);
  CU_ASSERT_EQUAL(lipsync_session_channel_bound(s.session), *bound);
  if (rc == 0) {
    assert_tables_equal(c.db, s.db, "t");
  } else {
    bytebuf after = db_state(s.db);
    CU_ASSERT_TRUE(same_state(before, after));
    bytebuf_free(&after);
  }
  bytebuf_free(&before);
  peer_close(&c);
  peer_close(&s);
  return rc;
}

static void test_channel_binding(void) {
  uint8_t one[LIPSYNC_TLS_BINDING_LEN], two[LIPSYNC_TLS_BINDING_LEN];
  int bound;
  memset(one, 0xa5, sizeof one);
  memcpy(two, one, sizeof two);
  two[31] ^= 1;
  /* The same TLS connection on both sides: bound, and the sync works. */
  CU_ASSERT_EQUAL(sync_bound(one, one, &bound), 0);
  CU_ASSERT_TRUE(bound);
  /* Two TLS connections (a relay that terminates TLS on each side): the
   * proofs fail and nothing changes. */
  CU_ASSERT_EQUAL(sync_bound(one, two, &bound), LIPSYNC_ERR_AUTH_FAILED);
  /* A side without TLS, or without the feature: no binding, the sync
   * works as before (LS-FEAT-3). */
  CU_ASSERT_EQUAL(sync_bound(one, NULL, &bound), 0);
  CU_ASSERT_FALSE(bound);
  CU_ASSERT_EQUAL(sync_bound(NULL, one, &bound), 0);
  CU_ASSERT_FALSE(bound);
  /* Too late, or the wrong length: refused. */
  peer c;
  peer_open(&c, mem_db());
  const char *t[] = {"t"};
  start_client(&c, t, 1, SECRET);
  CU_ASSERT_EQUAL(lipsync_session_set_channel_binding(c.session, one, 16),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  const uint8_t *d;
  CU_ASSERT_TRUE(lipsync_session_send(c.session, &d) > 0);
  CU_ASSERT_EQUAL(
      lipsync_session_set_channel_binding(c.session, one, sizeof one),
      LIPSYNC_ERR_INVALID_ARGUMENT);
  peer_close(&c);
}

/* The server's store opener (spec LS-SEC-3): called once, right after the
 * client's proof verified; never for a client with the wrong secret. */
typedef struct opener_state {
  lipsync_store *store;
  int calls;
  int fail;
} opener_state;

static int count_open(void *user, lipsync_store **out, char *err, size_t len) {
  opener_state *o = user;
  o->calls++;
  if (o->fail) {
    snprintf(err, len, "disk on fire");
    return LIPSYNC_ERR_STORAGE;
  }
  *out = o->store;
  return 0;
}

static int sync_deferred(const char *secret, opener_state *o) {
  peer c, s;
  peer_open(&c, mem_db());
  peer_open(&s, mem_db());
  exec(c.db, T1);
  exec(s.db, "CREATE TABLE t(a INTEGER, b TEXT);");
  o->store = s.store;
  const char *t[] = {"t"};
  start_client(&c, t, 1, secret);
  CU_ASSERT_EQUAL_FATAL(lipsync_session_server_new(&s.session, NULL, SECRET,
                                                   SECRET_LEN, NULL, 0, 1),
                        0);
  CU_ASSERT_EQUAL(lipsync_session_set_store_opener(s.session, count_open, o),
                  0);
  pump(c.session, s.session);
  int rc = lipsync_session_result(c.session);
  if (rc == 0)
    assert_tables_equal(c.db, s.db, "t");
  else
    CU_ASSERT_EQUAL(query_int(s.db, "SELECT count(*) FROM t"), 0);
  peer_close(&c);
  peer_close(&s);
  return rc;
}

static void test_store_opened_after_authentication(void) {
  opener_state o = {NULL, 0, 0};
  CU_ASSERT_EQUAL(sync_deferred(SECRET, &o), 0);
  CU_ASSERT_EQUAL(o.calls, 1);
  opener_state wrong = {NULL, 0, 0};
  CU_ASSERT_EQUAL(sync_deferred("not the secret", &wrong),
                  LIPSYNC_ERR_AUTH_FAILED);
  CU_ASSERT_EQUAL(wrong.calls, 0);
  /* A database that cannot be opened: the client hears why. */
  opener_state failing = {NULL, 0, 1};
  CU_ASSERT_EQUAL(sync_deferred(SECRET, &failing), LIPSYNC_ERR_STORAGE);
  CU_ASSERT_EQUAL(failing.calls, 1);
}

/* ------------------------------------------------------------------ */
/* dry runs, counters and table mapping                                 */
/* ------------------------------------------------------------------ */

/* Two databases that synced 10 cities, then changed apart: the client
 * inserted 2, deleted city 1, updated city 2; the server inserted 3,
 * deleted city 3, updated city 2 too (a row changed on both sides) and
 * city 4. */
static void diverged_pair(peer *c, peer *s) {
  const char *t[] = {"cities"};
  open_city_pair(c, s);
  add_cities(c->db, 0, 10);
  sync_pair(c, s, t, 1);
  CU_ASSERT_EQUAL(lipsync_session_result(c->session), 0);
  lipsync_session_free(c->session);
  lipsync_session_free(s->session);
  c->session = s->session = NULL;
  add_cities(c->db, 100, 102);
  exec(c->db, "DELETE FROM cities WHERE city_id = 1;"
              "UPDATE cities SET name = 'client' WHERE city_id = 2");
  add_cities(s->db, 200, 203);
  exec(s->db, "DELETE FROM cities WHERE city_id = 3;"
              "UPDATE cities SET name = 'server' WHERE city_id = 2;"
              "UPDATE cities SET population = 1 WHERE city_id = 4");
}

static void check_counts(lipsync_session *session, uint64_t sent,
                         uint64_t deletes_sent, uint64_t received,
                         uint64_t deletes_received, uint64_t kept,
                         uint64_t taken) {
  lipsync_table_stats st;
  CU_ASSERT_EQUAL_FATAL(lipsync_session_table_stats(session, 0, &st), 0);
  CU_ASSERT_STRING_EQUAL(st.name, "cities");
  CU_ASSERT_EQUAL(st.rows_sent, sent);
  CU_ASSERT_EQUAL(st.deletes_sent, deletes_sent);
  CU_ASSERT_EQUAL(st.rows_received, received);
  CU_ASSERT_EQUAL(st.deletes_received, deletes_received);
  CU_ASSERT_EQUAL(st.changed_both_kept, kept);
  CU_ASSERT_EQUAL(st.changed_both_taken, taken);
  CU_ASSERT_EQUAL(st.conflicts, 0);
}

/* A dry run changes neither database, byte for byte, and counts what the
 * real sync that follows then does; the server sees CANCELLED. */
static void test_dry_run(void) {
  for (int p = LIPSYNC_POLICY_SERVER_WINS; p <= LIPSYNC_POLICY_CLIENT_WINS;
       p++) {
    peer c, s;
    const char *t[] = {"cities"};
    diverged_pair(&c, &s);
    bytebuf cb = db_state(c.db), sb = db_state(s.db);
    start_client(&c, t, 1, SECRET);
    CU_ASSERT_EQUAL(lipsync_session_set_policy(c.session, p), 0);
    CU_ASSERT_EQUAL(lipsync_session_set_dry_run(c.session, 1), 0);
    start_server(&s, NULL, 0);
    pump(c.session, s.session);
    CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
    CU_ASSERT_EQUAL(lipsync_session_dry_run_outcome(c.session), 0);
    CU_ASSERT_EQUAL(lipsync_session_result(s.session), LIPSYNC_ERR_CANCELLED);
    CU_ASSERT_TRUE(lipsync_session_error_is_remote(s.session));
    bool server_wins = p == LIPSYNC_POLICY_SERVER_WINS;
    /* 2 inserts and a delete out, 3 inserts, a delete and city 4 in; city
     * 2 goes the policy's way. A row changed on both sides is counted by
     * the side that decides it, and by the side that receives it: here
     * the server, which decides on the changes the client lists. */
    check_counts(c.session, 3 + !server_wins, 1, 5 + server_wins, 1, 0,
                 server_wins);
    bytebuf ca = db_state(c.db), sa = db_state(s.db);
    CU_ASSERT_TRUE(same_state(cb, ca));
    CU_ASSERT_TRUE(same_state(sb, sa));
    bytebuf_free(&ca);
    bytebuf_free(&sa);
    bytebuf_free(&cb);
    bytebuf_free(&sb);

    /* The real sync does what the dry run said. */
    lipsync_session_free(c.session);
    lipsync_session_free(s.session);
    start_client(&c, t, 1, SECRET);
    CU_ASSERT_EQUAL(lipsync_session_set_policy(c.session, p), 0);
    start_server(&s, NULL, 0);
    pump(c.session, s.session);
    CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
    check_counts(c.session, 3 + !server_wins, 1, 5 + server_wins, 1, 0,
                 server_wins);
    check_counts(s.session, 5 + server_wins, 1, 3 + !server_wins, 1,
                 server_wins, !server_wins);
    assert_tables_equal(c.db, s.db, "cities");
    CU_ASSERT_EQUAL(query_int(c.db, "SELECT count(*) FROM cities"), 13);
    CU_ASSERT_EQUAL(query_int(c.db, "SELECT count(*) FROM cities WHERE name ="
                                    " 'server' AND city_id = 2"),
                    server_wins);
    peer_close(&c);
    peer_close(&s);
  }
}

/* A dry run of a sync that would fail tells so, and changes nothing. */
static void test_dry_run_conflict(void) {
  peer c, s;
  const char *t[] = {"t"};
  peer_open(&c, mem_db());
  peer_open(&s, mem_db());
  exec(c.db,
       "CREATE TABLE t(a INTEGER, _lipsync_uuid TEXT);"
       "INSERT INTO t VALUES (1, '00000000-0000-4000-8000-000000000001')");
  exec(s.db,
       "CREATE TABLE t(a INTEGER, _lipsync_uuid TEXT);"
       "INSERT INTO t VALUES (2, '00000000-0000-4000-8000-000000000001')");
  bytebuf cb = db_state(c.db), sb = db_state(s.db);
  start_client(&c, t, 1, SECRET);
  CU_ASSERT_EQUAL(lipsync_session_set_dry_run(c.session, 1), 0);
  start_server(&s, NULL, 0);
  pump(c.session, s.session);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
  CU_ASSERT_EQUAL(lipsync_session_dry_run_outcome(c.session),
                  LIPSYNC_ERR_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(
      strstr(lipsync_session_errmsg(c.session), "table t: 1 rows differ"));
  lipsync_table_stats st;
  CU_ASSERT_EQUAL(lipsync_session_table_stats(c.session, 0, &st), 0);
  CU_ASSERT_EQUAL(st.conflicts, 1);
  bytebuf ca = db_state(c.db), sa = db_state(s.db);
  CU_ASSERT_TRUE(same_state(cb, ca));
  CU_ASSERT_TRUE(same_state(sb, sa));
  bytebuf_free(&ca);
  bytebuf_free(&sa);
  bytebuf_free(&cb);
  bytebuf_free(&sb);
  /* Only a client runs dry, and only before it starts. */
  CU_ASSERT_EQUAL(lipsync_session_set_dry_run(s.session, 1),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_EQUAL(lipsync_session_set_dry_run(c.session, 0),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  peer_close(&c);
  peer_close(&s);
}

/* A local table synced under the server's name for it. */
static void test_map_table(void) {
  peer c, s;
  const char *t[] = {"cities", "other"};
  peer_open(&c, mem_db());
  peer_open(&s, mem_db());
  exec(c.db, CITY_SCHEMA);
  exec(c.db, "CREATE TABLE other(x INTEGER); INSERT INTO other VALUES (1)");
  exec(s.db, "CREATE TABLE places(city_id INTEGER, name TEXT, country TEXT, "
             "admin_code TEXT, population INTEGER, lon REAL, lat REAL);"
             "CREATE TABLE other(x INTEGER)");
  add_cities(c.db, 0, 5);
  start_client(&c, t, 2, SECRET);
  CU_ASSERT_EQUAL(lipsync_session_map_table(c.session, "nope", "places"),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_EQUAL(lipsync_session_map_table(c.session, "cities", ""),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_EQUAL(lipsync_session_map_table(c.session, "cities", "places"), 0);
  start_server(&s, NULL, 0);
  CU_ASSERT_EQUAL(lipsync_session_map_table(s.session, "cities", "places"),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  pump(c.session, s.session);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
  CU_ASSERT_EQUAL(lipsync_session_result(s.session), 0);
  lipsync_table_stats st;
  CU_ASSERT_EQUAL(lipsync_session_table_stats(c.session, 0, &st), 0);
  CU_ASSERT_STRING_EQUAL(st.name, "cities");
  CU_ASSERT_STRING_EQUAL(st.remote, "places");
  CU_ASSERT_EQUAL(st.rows_sent, 5);
  CU_ASSERT_EQUAL(lipsync_session_table_stats(s.session, 0, &st), 0);
  CU_ASSERT_STRING_EQUAL(st.name, "places");
  CU_ASSERT_EQUAL(query_int(s.db, "SELECT count(*) FROM places"), 5);
  CU_ASSERT_EQUAL(query_int(s.db, "SELECT count(*) FROM other"), 1);
  CU_ASSERT_EQUAL(query_int(s.db,
                            "SELECT count(*) FROM sqlite_schema WHERE name = "
                            "'cities'"),
                  0);
  lipsync_session_free(c.session);
  lipsync_session_free(s.session);

  /* Two local tables mapped to one of the server's: refused before
   * anything is opened on either side. */
  start_client(&c, t, 2, SECRET);
  CU_ASSERT_EQUAL(lipsync_session_map_table(c.session, "cities", "other"), 0);
  start_server(&s, NULL, 0);
  pump(c.session, s.session);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(lipsync_session_errmsg(c.session),
                                "tables cities and other are both mapped"));
  CU_ASSERT_NOT_EQUAL(lipsync_session_result(s.session), 0);
  peer_close(&c);
  peer_close(&s);
}

/* lipsync_session_prepare(): the client's local work before the first
 * byte, in the session's transaction, undone when the session is freed
 * unconnected; a failure leaves nothing to send. */
static void test_prepare_before_connecting(void) {
  peer c, s;
  const char *t[] = {"cities"}, *missing[] = {"cities", "nope"};
  const uint8_t *d;
  open_city_pair(&c, &s);
  add_cities(c.db, 0, 20);
  add_cities(s.db, 50, 55);
  bytebuf before = db_state(c.db);

  start_server(&s, NULL, 0);
  CU_ASSERT_EQUAL(lipsync_session_prepare(s.session),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  CU_ASSERT_EQUAL(lipsync_session_prepare(NULL), LIPSYNC_ERR_INVALID_ARGUMENT);
  lipsync_session_free(s.session);

  start_client(&c, t, 1, SECRET);
  CU_ASSERT_EQUAL(lipsync_session_prepare(c.session), 0);
  /* Its rows have their UUIDs, inside the open transaction. */
  CU_ASSERT_EQUAL(query_int(c.db, "SELECT count(_lipsync_uuid) FROM cities"),
                  20);
  CU_ASSERT_EQUAL(lipsync_session_prepare(c.session), 0);
  CU_ASSERT_EQUAL(lipsync_session_set_full(c.session),
                  LIPSYNC_ERR_INVALID_ARGUMENT);
  lipsync_session_free(c.session);
  bytebuf after = db_state(c.db);
  CU_ASSERT_TRUE(same_state(before, after));
  bytebuf_free(&after);

  /* Prepared, then connected: the sync goes through. */
  start_client(&c, t, 1, SECRET);
  CU_ASSERT_EQUAL(lipsync_session_prepare(c.session), 0);
  start_server(&s, NULL, 0);
  pump(c.session, s.session);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), 0);
  CU_ASSERT_EQUAL(lipsync_session_result(s.session), 0);
  CU_ASSERT_EQUAL(query_int(c.db, "SELECT count(*) FROM cities"), 25);
  assert_tables_equal(c.db, s.db, "cities");
  lipsync_session_free(c.session);
  lipsync_session_free(s.session);
  s.session = NULL;

  /* A table this database lacks: the session fails with nothing to send,
   * not even its ClientHello. */
  bytebuf synced = db_state(c.db);
  start_client(&c, missing, 2, SECRET);
  int rc = lipsync_session_prepare(c.session);
  CU_ASSERT_TRUE(rc < 0);
  CU_ASSERT_EQUAL(lipsync_session_result(c.session), rc);
  CU_ASSERT_EQUAL(lipsync_session_prepare(c.session), rc);
  CU_ASSERT_PTR_NOT_NULL(strstr(lipsync_session_errmsg(c.session), "nope"));
  CU_ASSERT_EQUAL(lipsync_session_send(c.session, &d), 0);
  CU_ASSERT_TRUE(lipsync_session_is_done(c.session));
  lipsync_session_free(c.session);
  c.session = NULL;
  after = db_state(c.db);
  CU_ASSERT_TRUE(same_state(synced, after));
  bytebuf_free(&after);
  bytebuf_free(&synced);
  bytebuf_free(&before);
  peer_close(&c);
  peer_close(&s);
}

int register_session_tests(void) {
  static const tu_test tests[] = {
      {"disjoint rows, table without _lipsync_uuid, re-sync",
       test_disjoint_without_uuid_column},
      {"overlap, split ranges", test_overlap_split},
      {"overlap, split down to single items", test_overlap_fine_split},
      {"overlap, whole item lists only", test_overlap_item_lists_only},
      {"one side empty, both directions", test_one_side_empty_both_ways},
      {"empty table and several tables", test_both_empty_and_several_tables},
      {"edge values survive bit for bit", test_edge_values},
      {"schema mismatch changes nothing", test_schema_mismatch},
      {"wrong secret changes nothing", test_wrong_secret},
      {"no common version", test_version_mismatch},
      {"unknown and unoffered tables", test_unknown_and_unoffered_tables},
      {"conflicting rows are reported, nothing changes", test_conflict},
      {"peer vanishing mid-transfer changes nothing",
       test_peer_vanishes_mid_transfer},
      {"oversized, garbage, unknown and unexpected frames", test_bad_frames},
      {"replayed client proof fails", test_replayed_client_proof},
      {"reflected proof fails", test_reflected_proof},
      {"channel binding (tls-exporter)", test_channel_binding},
      {"memory limit of a session", test_memory_limit},
      {"store opened only after authentication",
       test_store_opened_after_authentication},
      {"dry run: nothing changes, counts match the sync", test_dry_run},
      {"dry run of a conflicting sync", test_dry_run_conflict},
      {"a table mapped to the server's name", test_map_table},
      {"a client prepares before connecting", test_prepare_before_connecting},
      {NULL, NULL}};
  return tu_add_suite("session", tests);
}
