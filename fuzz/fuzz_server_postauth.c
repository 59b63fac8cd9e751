/*
 * fuzz_server_postauth.c: a server session (ref/src/session.c,
 * reconcile.c, the SQLite backend) fed arbitrary bytes by a client that
 * holds the secret: the harness runs the handshake with a real client
 * session, then the input is everything the client sends after its
 * client_auth frame (OpenTables, Ranges, Changes, Rows, Need, EndTurn,
 * Verify...).
 *
 * The server's database is built once, with tables items (typed columns)
 * and notes: a clean sync with a client, deletes and a second sync, then
 * changes on both sides. Every input starts from it, with the same
 * randomness and clock, so a client's bytes recorded from a real session
 * replay exactly: FUZZ_RECORD_DIR=DIR makes the harness write such
 * recordings (the seeds) into DIR.
 *
 * Input: one byte of options (bit 0: offer every table; bit 1: no feature
 * incremental; bits 2-3: split threshold 32, 0, 2, 8; bit 4: keep every
 * tombstone), one byte that seeds the chunk sizes, then the client's bytes,
 * which the server reads in chunks that end at the latest with a frame,
 * answering as it can after each chunk.
 *
 * Checks: the session consumes every chunk; after the input it has ended
 * or still wants input; after the end of the stream it has ended, after
 * whole frames. A session that failed left the database byte for byte as
 * it was (after VERIFY_FAILED, but for the marks of LS-INC-16); one that
 * succeeded left it consistent: SQLite's integrity check passes, and every
 * row of a synced table has a live item and every live item a row.
 */
#include "fuzz_util.h"
#include "lipsync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SECRET[] = "fuzz-postauth-secret";
static const char *const TABLES[] = {"items", "notes"};

#define MINUTE_MS (60u * 1000u)
#define SESSION_TIME (FUZZ_EPOCH_MS + 120 * MINUTE_MS)
#define SEED 3
#define BODY_CLIENT_AUTH 3
#define BODY_SERVER_AUTH 4

static const char SCHEMA[] =
    "CREATE TABLE items(id INTEGER, name TEXT, price REAL, photo BLOB,"
    " day DATE, doc JSON TEXT, amount DECIMAL TEXT, flag BOOLEAN, v);"
    "CREATE TABLE notes(k INTEGER UNIQUE, note TEXT);";
static const char SERVER_ROWS[] =
    "INSERT INTO items VALUES"
    " (1, 'lamp é', 12.5, x'00ff', '2024-02-29', '{\"a\": 1}', '12.50', 1,"
    "  -0.0),"
    " (2, '東京', -1e308, zeroblob(16), '0044-03-15 BC', '[]', 'NaN', 0,"
    "  9223372036854775807),"
    " (3, CAST(x'610062' AS TEXT), 9e999, NULL, NULL, NULL, NULL, NULL, NULL),"
    " (4, '', 5e-324, x'', 'infinity', 'null', '-0.001', 1, 'text');"
    "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n"
    " WHERE k < 24) INSERT INTO notes SELECT k, 'server note ' || k FROM n;";
static const char CLIENT_ROWS[] =
    "INSERT INTO items VALUES"
    " (5, 'desk', 0.1, x'01', '2000-01-01', '12', '0', 0, x'ff'),"
    " (6, 'chair', -2.5, NULL, NULL, '\"x\"', 'Infinity', 1, NULL);"
    "WITH RECURSIVE n(k) AS (SELECT 100 UNION ALL SELECT k + 1 FROM n"
    " WHERE k < 109) INSERT INTO notes SELECT k, 'client note ' || k FROM n;";
static const char SERVER_EARLY[] = "DELETE FROM notes WHERE k % 7 = 0;";
static const char CLIENT_EARLY[] = "DELETE FROM items WHERE id = 6;";
static const char SERVER_CHANGES[] =
    "UPDATE items SET price = 13, v = x'c0ffee' WHERE id = 1;"
    "DELETE FROM items WHERE id = 4;"
    "UPDATE notes SET note = 'server edit' WHERE k IN (3, 103);"
    "INSERT INTO notes(k, note) VALUES (25, 'new on server');";
static const char CLIENT_CHANGES[] =
    "UPDATE items SET name = 'client edit' WHERE id IN (1, 5);"
    "DELETE FROM notes WHERE k IN (2, 104);"
    "UPDATE notes SET note = 'client edit' WHERE k = 3;"
    "INSERT INTO notes(k, note) VALUES (110, 'new on client');";

static fuzz_image server_image, client_image;
static bytebuf server_dump; /* unmarked, of the image */
static sqlite3 *kept;       /* the server's connection, while pristine */
static sqlite3 *hello_db;   /* the handshake client's (never touched) */

/* ------------------------------------------------------------------ */
/* sessions                                                             */
/* ------------------------------------------------------------------ */

typedef struct options {
  bool offer_all, plain, keep_all;
  size_t split;
} options;

static options read_options(uint8_t b) {
  static const size_t splits[4] = {32, 0, 2, 8};
  options o = {b & 1, b & 2, b & 16, splits[(b >> 2) & 3]};
  return o;
}

static lipsync_session *new_server(lipsync_store *store, const options *o) {
  lipsync_session *s = NULL;
  FUZZ_CHECK(lipsync_session_server_new(&s, store, SECRET, sizeof SECRET - 1,
                                        o->offer_all ? NULL : TABLES,
                                        o->offer_all ? 0 : 2,
                                        o->offer_all) == 0);
  FUZZ_CHECK(lipsync_session_set_incremental(s, !o->plain) == 0);
  lipsync_session_set_split_threshold(s, o->split);
  if (o->keep_all)
    FUZZ_CHECK(lipsync_session_set_tombstone_retention(s, UINT64_MAX) == 0);
  return s;
}

static lipsync_session *new_client(lipsync_store *store) {
  lipsync_session *c = NULL;
  FUZZ_CHECK(lipsync_session_client_new(&c, store, SECRET, sizeof SECRET - 1,
                                        TABLES, 2) == 0);
  return c;
}

/* Runs |c| against |s| to the end, keeping what |c| sent in |sent|. */
static void pump(lipsync_session *c, lipsync_session *s, bytebuf *sent) {
  for (bool progress = true; progress;) {
    const uint8_t *d;
    ssize_t n;
    progress = false;
    while ((n = lipsync_session_send(c, &d)) > 0) {
      if (sent)
        FUZZ_CHECK(bytebuf_append(sent, d, (size_t)n) == 0);
      lipsync_session_recv(s, d, (size_t)n);
      progress = true;
    }
    while ((n = lipsync_session_send(s, &d)) > 0) {
      lipsync_session_recv(c, d, (size_t)n);
      progress = true;
    }
  }
  FUZZ_CHECKF(lipsync_session_result(c) == 0 && lipsync_session_result(s) == 0,
              "a clean sync failed: %s / %s", lipsync_session_errmsg(c),
              lipsync_session_errmsg(s));
}

static void clean_sync(sqlite3 *client_db, sqlite3 *server_db) {
  static const options plain = {false, false, true, 32};
  lipsync_store *cs, *ss;
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&cs, client_db) == 0);
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&ss, server_db) == 0);
  lipsync_session *c = new_client(cs), *s = new_server(ss, &plain);
  pump(c, s, NULL);
  lipsync_session_free(c);
  lipsync_session_free(s);
  lipsync_store_free(cs);
  lipsync_store_free(ss);
}

/* ------------------------------------------------------------------ */
/* seeds                                                                */
/* ------------------------------------------------------------------ */

/* Records what a real client sends after its client_auth, in a session
 * set up as an input's, into |dir|/|name| as an input. */
static void record(const char *dir, const char *name, bool full, size_t split,
                   lipsync_policy policy) {
  static const options defaults = {false, false, false, 32};
  bytebuf sent = {0};
  lipsync_store *cs, *ss;
  sqlite3 *c_db = fuzz_db_from_image(&client_image);
  sqlite3 *s_db = fuzz_db_from_image(&server_image);
  fuzz_det_reset(SEED);
  fuzz_det_set_time(SESSION_TIME);
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&cs, c_db) == 0);
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&ss, s_db) == 0);
  lipsync_session *c = new_client(cs), *s = new_server(ss, &defaults);
  if (full)
    FUZZ_CHECK(lipsync_session_set_full(c) == 0);
  lipsync_session_set_split_threshold(c, split);
  FUZZ_CHECK(lipsync_session_set_policy(c, policy) == 0);
  pump(c, s, &sent);

  size_t off = 0, size;
  for (int frames = 0; frames < 2; frames++, off += size)
    size = fuzz_frame_size(sent.data + off, sent.len - off);
  FUZZ_CHECK(fuzz_frame_body(sent.data, sent.len) == 1);
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  FUZZ_CHECKF(f != NULL, "cannot write %s", path);
  FUZZ_CHECK(fwrite("\0\0", 1, 2, f) == 2);
  FUZZ_CHECK(fwrite(sent.data + off, 1, sent.len - off, f) == sent.len - off);
  FUZZ_CHECK(fclose(f) == 0);

  bytebuf_free(&sent);
  lipsync_session_free(c);
  lipsync_session_free(s);
  lipsync_store_free(cs);
  lipsync_store_free(ss);
  sqlite3_close(c_db);
  sqlite3_close(s_db);
}

static void setup(void) {
  fuzz_sqlite_init();
  sqlite3 *c = fuzz_db_open(), *s = fuzz_db_open();
  fuzz_db_exec(c, SCHEMA);
  fuzz_db_exec(s, SCHEMA);
  fuzz_db_exec(c, CLIENT_ROWS);
  fuzz_db_exec(s, SERVER_ROWS);
  clean_sync(c, s);
  fuzz_det_set_time(FUZZ_EPOCH_MS + 10 * MINUTE_MS);
  fuzz_db_exec(c, CLIENT_EARLY);
  fuzz_db_exec(s, SERVER_EARLY);
  clean_sync(c, s);
  fuzz_det_set_time(FUZZ_EPOCH_MS + 60 * MINUTE_MS);
  fuzz_db_exec(c, CLIENT_CHANGES);
  fuzz_db_exec(s, SERVER_CHANGES);
  server_image = fuzz_image_take(s);
  client_image = fuzz_image_take(c);
  fuzz_db_dump(s, false, &server_dump);
  sqlite3_close(c);
  sqlite3_close(s);
  hello_db = fuzz_db_open();

  const char *dir = getenv("FUZZ_RECORD_DIR");
  if (dir) {
    record(dir, "client-changes", false, 32, LIPSYNC_POLICY_LWW);
    record(dir, "client-ranges-full", true, 32, LIPSYNC_POLICY_LWW);
    record(dir, "client-ranges-split2", true, 2, LIPSYNC_POLICY_LWW);
    record(dir, "client-server-wins", false, 0, LIPSYNC_POLICY_SERVER_WINS);
  }
}

/* ------------------------------------------------------------------ */
/* the input                                                            */
/* ------------------------------------------------------------------ */

/* Hands |n| bytes of |from| to |to| (NULL: nowhere) and returns the body
 * of their first frame. */
static uint32_t relay(lipsync_session *from, lipsync_session *to) {
  const uint8_t *d;
  ssize_t n = lipsync_session_send(from, &d);
  FUZZ_CHECK(n > 0);
  if (to)
    FUZZ_CHECK(lipsync_session_recv(to, d, (size_t)n) == n);
  return fuzz_frame_body(d, (size_t)n);
}

/* Runs the handshake of |s| with a client holding the secret, up to the
 * server's proof, which the client never sees. */
static void authenticate(lipsync_session *s) {
  lipsync_store *store;
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&store, hello_db) == 0);
  lipsync_session *c = new_client(store);
  relay(c, s); /* ClientHello */
  relay(s, c); /* ServerHello */
  FUZZ_CHECK(relay(c, s) == BODY_CLIENT_AUTH);
  FUZZ_CHECK(relay(s, NULL) == BODY_SERVER_AUTH);
  lipsync_session_free(c);
  lipsync_store_free(store);
}

/* Takes what the server sends, keeping a part of a frame in |pending|. */
static void drain(lipsync_session *s, bytebuf *pending) {
  const uint8_t *d;
  ssize_t n;
  while ((n = lipsync_session_send(s, &d)) > 0) {
    FUZZ_CHECK(bytebuf_append(pending, d, (size_t)n) == 0);
    size_t off = 0, size;
    while ((size = fuzz_frame_size(pending->data + off, pending->len - off)))
      off += size;
    bytebuf_consume(pending, off);
  }
}

static int64_t count(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  FUZZ_CHECKF(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s",
              sql, sqlite3_errmsg(db));
  FUZZ_CHECK(sqlite3_step(st) == SQLITE_ROW);
  int64_t n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

/* What a successful session must leave: a sound database, a live item for
 * every row and a row for every live item. */
static void check_consistent(sqlite3 *db) {
  bytebuf out = {0};
  fuzz_dump_query(db, "PRAGMA integrity_check", &out);
  FUZZ_CHECKF(out.len == 8 && memcmp(out.data + 5, "ok\n", 3) == 0,
              "integrity check: %.*s", (int)out.len, (char *)out.data);
  bytebuf_free(&out);
  for (int i = 0; i < 2; i++) {
    char *sql = sqlite3_mprintf(
        "SELECT (SELECT count(*) FROM \"%w\" AS t WHERE NOT EXISTS (SELECT 1"
        " FROM \"_lipsync_meta_%w\" AS m WHERE m.uuid = t._lipsync_uuid AND"
        " NOT m.deleted)) + (SELECT count(*) FROM \"_lipsync_meta_%w\" AS m"
        " WHERE NOT m.deleted AND NOT EXISTS (SELECT 1 FROM \"%w\" AS t"
        " WHERE t._lipsync_uuid = m.uuid))",
        TABLES[i], TABLES[i], TABLES[i], TABLES[i]);
    FUZZ_CHECK(sql != NULL);
    int64_t bad = count(db, sql);
    FUZZ_CHECKF(bad == 0, "table %s: %lld rows and live items unpaired",
                TABLES[i], (long long)bad);
    sqlite3_free(sql);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!hello_db)
    setup();
  fuzz_det_reset(SEED);
  fuzz_det_set_time(SESSION_TIME);
  fuzz_input in = {data, size};
  options o = read_options(fuzz_byte(&in));
  uint32_t seed = fuzz_byte(&in);
  sqlite3 *db = kept ? kept : fuzz_db_from_image(&server_image);
  kept = NULL;
  lipsync_store *store;
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&store, db) == 0);
  lipsync_session *s = new_server(store, &o);
  authenticate(s);

  /* A chunk ends at the latest with a frame, after which the server may
   * answer: a client sends its next turn only once it has the server's. */
  bytebuf pending = {0};
  for (size_t pos = 0, end = 0; pos < in.len;) {
    if (pos == end) {
      size_t frame = fuzz_frame_size(in.data + pos, in.len - pos);
      end = frame ? pos + frame : in.len;
    }
    size_t n = fuzz_chunk(&seed, pos, end);
    ssize_t rc = lipsync_session_recv(s, in.data + pos, n);
    FUZZ_CHECKF(rc == (ssize_t)n || (rc < 0 && rc == lipsync_session_result(s)),
                "recv returned %zd for %zu bytes", rc, n);
    pos += n;
    drain(s, &pending);
  }
  FUZZ_CHECK(lipsync_session_is_done(s) || lipsync_session_want_read(s));
  lipsync_session_recv_eof(s);
  drain(s, &pending);
  FUZZ_CHECK(lipsync_session_is_done(s));
  FUZZ_CHECKF(pending.len == 0, "the server ended in the middle of a frame");
  bytebuf_free(&pending);

  int code = lipsync_session_result(s);
  lipsync_session_free(s);
  lipsync_store_free(store);
  bool pristine = false;
  if (code == 0) {
    check_consistent(db);
  } else if (code == LIPSYNC_ERR_VERIFY_FAILED) {
    bytebuf now = {0};
    fuzz_db_dump(db, false, &now);
    FUZZ_CHECKF(fuzz_buf_eq(&now, &server_dump),
                "a session that failed changed the database");
    bytebuf_free(&now);
  } else {
    fuzz_image now = fuzz_image_take(db);
    FUZZ_CHECKF(fuzz_image_eq(&now, &server_image),
                "a session that failed (%d) changed the database", code);
    fuzz_image_free(&now);
    pristine = sqlite3_get_autocommit(db) &&
               count(db, "SELECT count(*) FROM temp.sqlite_schema") == 0;
  }
  if (pristine)
    kept = db;
  else
    sqlite3_close(db);
  return 0;
}
