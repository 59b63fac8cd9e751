/*
 * incremental_test.c: the feature "incremental" (spec 8.8) on the SQLite
 * backend. Whole sessions: a client and a server session in one process,
 * over database files in a temporary directory, driven through the
 * sans-I/O API (src/session.c, src/reconcile.c) round by round, while other
 * connections write, files are copied and restored, and kept records are
 * tampered with. Then the store: the change sequence and the kept summary
 * (src/store_sqlite_items.c, src/store_sqlite_capture.c).
 */
#include "lipsync.h"
#include "store.h"
#include "test_util.h"

#include <CUnit/CUnit.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char SECRET[] = "incremental-tests";
#define SECRET_LEN (sizeof SECRET - 1)
#define TABLE "t"
static const char *const TABLES[] = {TABLE};

/* ------------------------------------------------------------------ */
/* databases                                                            */
/* ------------------------------------------------------------------ */

#define PATH_SIZE 512

/* A database file seen by two connections: the sync's (the store) and the
 * application's, a plain one whose writes the triggers capture. */
typedef struct node {
  char path[PATH_SIZE];
  sqlite3 *db;
  lipsync_store *store;
} node;

static bool node_open(node *n, const char *path) {
  char err[256];
  snprintf(n->path, sizeof n->path, "%s", path);
  n->db = NULL;
  /* The store first: it puts the file in WAL mode. */
  int rc = lipsync_store_sqlite_open(&n->store, n->path, err, sizeof err);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc) {
    fprintf(stderr, "\n  %s\n", err);
    return false;
  }
  n->db = TU_DB_OPEN(n->path);
  return n->db != NULL;
}

static void node_close(node *n) {
  lipsync_store_free(n->store);
  sqlite3_close(n->db);
  n->store = NULL;
  n->db = NULL;
}

/* Closes |n|, copies the file |from| over the file |to| (in place, as cp
 * does: a file that exists keeps its inode) and opens |n| again. One of
 * the two is |n|'s file: a copy of it is made, or it is restored. */
static bool node_copy_closed(node *n, const char *from, const char *to) {
  char path[sizeof n->path], src[sizeof n->path], dst[sizeof n->path];
  snprintf(path, sizeof path, "%s", n->path);
  snprintf(src, sizeof src, "%s", from);
  snprintf(dst, sizeof dst, "%s", to);
  node_close(n);
  bool copied = TU_COPY_FILE(src, dst);
  return node_open(n, path) && copied;
}

/* A temporary directory with a client and a server database, each with
 * the table t(k, v) and the rows |client_rows| and |server_rows| (k from 1
 * to the number, v 'row k'). */
typedef struct world {
  char dir[256];
  node client, server;
} world;

static const char SCHEMA[] = "CREATE TABLE t(k INTEGER, v TEXT)";

static bool add_rows(sqlite3 *db, int from, int to) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "WITH RECURSIVE n(i) AS (SELECT %d UNION ALL SELECT i + 1 FROM n"
           " WHERE i < %d) INSERT INTO t(k, v) SELECT i, 'row ' || i FROM n",
           from, to);
  return from > to || TU_EXEC(db, sql);
}

/* |w|'s file |name|, into |out| (of size PATH_SIZE). */
static void world_path(const world *w, const char *name, char *out) {
  tu_path(out, PATH_SIZE, w->dir, name);
}

static bool world_open(world *w, int client_rows, int server_rows) {
  char client[PATH_SIZE], server[PATH_SIZE];
  w->client.db = w->server.db = NULL;
  w->client.store = w->server.store = NULL;
  if (!tu_tmpdir(w->dir, sizeof w->dir))
    return false;
  world_path(w, "client.db", client);
  world_path(w, "server.db", server);
  return node_open(&w->client, client) && node_open(&w->server, server) &&
         TU_EXEC(w->client.db, SCHEMA) && TU_EXEC(w->server.db, SCHEMA) &&
         add_rows(w->client.db, 1, client_rows) &&
         add_rows(w->server.db, 1, server_rows);
}

static void world_close(world *w) {
  node_close(&w->client);
  node_close(&w->server);
  tu_rmdir(w->dir);
}

/* t's rows in UUID order, UUIDs included, as text (malloc'd). */
static char *table_text(sqlite3 *db) {
  char *text = TU_QUERY_TEXT(db, "SELECT group_concat(r, ' | ') FROM (SELECT"
                                 " quote(_lipsync_uuid) || ' ' || quote(k) || "
                                 "' ' || quote(v) AS r FROM t ORDER BY"
                                 " _lipsync_uuid)");
  return text ? text : strdup("");
}

/* Records a failure at |line| unless |a| and |b| are the same text. */
static void expect_same_text(const char *what, const char *a, const char *b,
                             int line) {
  char msg[600];
  bool same = a && b && strcmp(a, b) == 0;
  snprintf(msg, sizeof msg, "%s differ:\n    %.250s\n    %.250s", what,
           a ? a : "(null)", b ? b : "(null)");
  CU_assertImplementation(same, (unsigned)line, same ? what : msg, __FILE__, "",
                          CU_FALSE);
}

/* Both copies of t hold the same rows, with the same UUIDs. */
#define EXPECT_SAME_ROWS(a, b) expect_same_rows_at((a), (b), __LINE__)
static void expect_same_rows_at(const node *a, const node *b, int line) {
  char *x = table_text(a->db), *y = table_text(b->db);
  expect_same_text("the two tables", x, y, line);
  free(x);
  free(y);
}

/* t holds exactly |want|: "k=v" in k order, comma separated. */
#define EXPECT_ROWS(n, want) expect_rows_at((n), (want), __LINE__)
static void expect_rows_at(const node *n, const char *want, int line) {
  char *got = TU_QUERY_TEXT(n->db, "SELECT group_concat(k || '=' || v, ',')"
                                   " FROM (SELECT k, v FROM t ORDER BY k)");
  expect_same_text("rows", got ? got : "", want, line);
  free(got);
}

/* The whole database as text (malloc'd); with |marks| false, leaving out
 * of _lipsync_tables what a failed verification marks for the next
 * session (recount, ck_token, LS-INC-16): the data and what the store
 * keeps of it. */
static char *dump(sqlite3 *db, bool marks) {
  if (marks)
    return TU_DB_DUMP(db, NULL);
  char *rest = TU_DB_DUMP(db, "_lipsync_tables");
  char *tables = TU_QUERY_TEXT(
      db, "SELECT group_concat(r, ' | ') FROM (SELECT quote(name) || ' ' ||"
          " quote(last_sync) || ' ' || quote(sum) || ' ' || quote(count) ||"
          " ' ' || quote(position) || ' ' || quote(ck_site) || ' ' ||"
          " quote(ck_position) AS r FROM _lipsync_tables ORDER BY name)");
  size_t len = strlen(rest ? rest : "") + strlen(tables ? tables : "") + 2;
  char *out = malloc(len);
  if (out)
    snprintf(out, len, "%s\n%s", rest ? rest : "", tables ? tables : "");
  free(rest);
  free(tables);
  return out;
}

/* |db| dumps as it did when |before| was taken (which this frees). */
#define EXPECT_UNCHANGED(db, before, marks)                                    \
  expect_unchanged_at((db), (before), (marks), __LINE__)
static void expect_unchanged_at(sqlite3 *db, char *before, bool marks,
                                int line) {
  char *after = dump(db, marks);
  expect_same_text("database dumps", before, after, line);
  free(before);
  free(after);
}

/* ------------------------------------------------------------------ */
/* running a client and a server session against each other             */
/* ------------------------------------------------------------------ */

enum {
  CLIENT_PLAIN = 1, /* the client does not offer "incremental" */
  SERVER_PLAIN = 2, /* the server does not accept it */
  FULL = 4          /* lipsync_session_set_full on the client */
};

typedef struct run {
  lipsync_session *client, *server;
} run;

static void run_start(run *r, node *client, node *server, unsigned flags) {
  CU_ASSERT_EQUAL_FATAL(lipsync_session_client_new(&r->client, client->store,
                                                   SECRET, SECRET_LEN, TABLES,
                                                   1),
                        0);
  CU_ASSERT_EQUAL_FATAL(lipsync_session_server_new(&r->server, server->store,
                                                   SECRET, SECRET_LEN, TABLES,
                                                   1, 0),
                        0);
  if (flags & CLIENT_PLAIN)
    CU_ASSERT_EQUAL(lipsync_session_set_incremental(r->client, 0), 0);
  if (flags & SERVER_PLAIN)
    CU_ASSERT_EQUAL(lipsync_session_set_incremental(r->server, 0), 0);
  if (flags & FULL)
    CU_ASSERT_EQUAL(lipsync_session_set_full(r->client), 0);
}

/* Passes everything |from| has to send now to |to|. */
static bool move_bytes(lipsync_session *from, lipsync_session *to) {
  const uint8_t *d;
  ssize_t n;
  bool moved = false;
  while ((n = lipsync_session_send(from, &d)) > 0) {
    moved = true;
    lipsync_session_recv(to, d, (size_t)n);
  }
  return moved;
}

/* One round: what the client has to say goes to the server, then the
 * server's answer to the client. Whether anything moved. An incremental
 * sync of changes on both sides takes: 1 hellos, 2 proofs, 3 OpenTables
 * and TablesOpened, 4 the client's Changes and the server's Need and
 * Changes, 5 the client's Rows (which the server applies) and the
 * server's Rows, then Verify and Committed. */
static bool run_round(run *r) {
  bool a = move_bytes(r->client, r->server);
  bool b = move_bytes(r->server, r->client);
  return a || b;
}

static void run_rounds(run *r, int n) {
  for (int i = 0; i < n; i++)
    run_round(r);
}

static void run_to_end(run *r) {
  while (run_round(r))
    ;
  if (!lipsync_session_is_done(r->client))
    lipsync_session_recv_eof(r->client);
  if (!lipsync_session_is_done(r->server))
    lipsync_session_recv_eof(r->server);
}

/* What a sync did, as the client counts it. */
typedef struct outcome {
  int client_rc, server_rc;
  int client_incremental, server_incremental;
  uint64_t rows_sent, rows_received;
  uint64_t bytes_sent, bytes_received;
  char client_msg[200], server_msg[200];
} outcome;

static outcome run_end(run *r) {
  outcome o;
  lipsync_table_stats st;
  memset(&o, 0, sizeof o);
  run_to_end(r);
  o.client_rc = lipsync_session_result(r->client);
  o.server_rc = lipsync_session_result(r->server);
  o.client_incremental = lipsync_session_table_incremental(r->client, 0);
  o.server_incremental = lipsync_session_table_incremental(r->server, 0);
  if (lipsync_session_table_stats(r->client, 0, &st) == 0) {
    o.rows_sent = st.rows_sent;
    o.rows_received = st.rows_received;
  }
  lipsync_session_bytes(r->client, &o.bytes_sent, &o.bytes_received);
  snprintf(o.client_msg, sizeof o.client_msg, "%s",
           lipsync_session_errmsg(r->client));
  snprintf(o.server_msg, sizeof o.server_msg, "%s",
           lipsync_session_errmsg(r->server));
  lipsync_session_free(r->client);
  lipsync_session_free(r->server);
  r->client = r->server = NULL;
  return o;
}

static outcome sync_now(node *client, node *server, unsigned flags) {
  run r;
  run_start(&r, client, server, flags);
  return run_end(&r);
}

#define ANY UINT64_MAX

/* Both sessions ended with |rc|, both saw table t as incremental or not
 * as |incremental| says, and the client sent |sent| rows and received
 * |received| (ANY: not checked). */
#define EXPECT_SYNC(o, rc, incremental, sent, received)                        \
  expect_sync_at(&(o), (rc), (incremental), (sent), (received), __LINE__)
static void expect_sync_at(const outcome *o, int rc, int incremental,
                           uint64_t sent, uint64_t received, int line) {
  char msg[700];
  bool ok = o->client_rc == rc && o->server_rc == rc &&
            o->client_incremental == incremental &&
            o->server_incremental == incremental &&
            (sent == ANY || o->rows_sent == sent) &&
            (received == ANY || o->rows_received == received);
  snprintf(msg, sizeof msg,
           "sync: client %d (%s), server %d (%s), incremental %d/%d, rows"
           " %llu/%llu; want %d, incremental %d, rows %lld/%lld",
           o->client_rc, o->client_msg, o->server_rc, o->server_msg,
           o->client_incremental, o->server_incremental,
           (unsigned long long)o->rows_sent,
           (unsigned long long)o->rows_received, rc, incremental,
           sent == ANY ? -1 : (long long)sent,
           received == ANY ? -1 : (long long)received);
  CU_assertImplementation(ok, (unsigned)line, ok ? "sync" : msg, __FILE__, "",
                          CU_FALSE);
}

/* Syncs |client| with |server| (|flags|) and expects it to succeed, as
 * EXPECT_SYNC says. */
#define SYNC_OK(client, server, flags, incremental, sent, received)            \
  sync_ok_at((client), (server), (flags), (incremental), (sent), (received),   \
             __LINE__)
static outcome sync_ok_at(node *client, node *server, unsigned flags,
                          int incremental, uint64_t sent, uint64_t received,
                          int line) {
  outcome o = sync_now(client, server, flags);
  expect_sync_at(&o, 0, incremental, sent, received, line);
  return o;
}

/* ------------------------------------------------------------------ */
/* what the store keeps                                                 */
/* ------------------------------------------------------------------ */

/* The kept summary of t as a session reads it (summarize), in a read
 * transaction of its own. */
static bool kept_summary(lipsync_store *store, lipsync_summary *out) {
  lipsync_table *t = NULL;
  int rc = store_begin_read(store);
  if (!rc)
    rc = store_open_table(store, TABLE, &t);
  if (!rc)
    rc = store_prepare_table(store, t);
  if (!rc)
    rc = store_summarize(store, t, out);
  if (rc)
    fprintf(stderr, "\n  summarize: %s\n", store_errmsg(store));
  store_rollback(store);
  CU_ASSERT_EQUAL(rc, 0);
  return rc == 0;
}

/* Adds the 16-byte big-endian |digest| to |sum| modulo 2^128 (spec 8.2). */
static void add_digest(uint8_t sum[LIPSYNC_DIGEST_LEN],
                       const uint8_t digest[LIPSYNC_DIGEST_LEN]) {
  unsigned carry = 0;
  for (int i = LIPSYNC_DIGEST_LEN - 1; i >= 0; i--) {
    unsigned v = sum[i] + digest[i] + carry;
    sum[i] = (uint8_t)v;
    carry = v >> 8;
  }
}

/* The sum and count of the item digests of every item of t, tombstones
 * included, computed here from the item table "_lipsync_meta_t". */
static bool items_summary(sqlite3 *db, lipsync_summary *out) {
  sqlite3_stmt *st;
  int rc;
  memset(out, 0, sizeof *out);
  if (sqlite3_prepare_v2(db,
                         "SELECT uuid, clock, site, deleted FROM"
                         " _lipsync_meta_t",
                         -1, &st, NULL) != SQLITE_OK) {
    CU_FAIL("cannot read _lipsync_meta_t");
    return false;
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    lipsync_item it;
    uint8_t digest[LIPSYNC_DIGEST_LEN];
    memset(&it, 0, sizeof it);
    CU_ASSERT_EQUAL(sqlite3_column_bytes(st, 2), LIPSYNC_SITE_LEN);
    CU_ASSERT_EQUAL(lipsync_uuid_parse((const char *)sqlite3_column_text(st, 0),
                                       (size_t)sqlite3_column_bytes(st, 0),
                                       it.uuid),
                    0);
    it.version.clock = (uint64_t)sqlite3_column_int64(st, 1);
    if (sqlite3_column_bytes(st, 2) == LIPSYNC_SITE_LEN)
      memcpy(it.version.site, sqlite3_column_blob(st, 2), LIPSYNC_SITE_LEN);
    it.deleted = sqlite3_column_int(st, 3);
    lipsync_item_digest(&it, digest);
    add_digest(out->sum, digest);
    out->count++;
  }
  sqlite3_finalize(st);
  CU_ASSERT_EQUAL(rc, SQLITE_DONE);
  return rc == SQLITE_DONE;
}

/* Whether the kept summary of |n|'s table t is the sum of its items'
 * digests; |msg| tells both. */
static bool kept_summary_exact(node *n, char *msg, size_t len) {
  lipsync_summary kept, counted;
  char a[2 * LIPSYNC_DIGEST_LEN + 1], b[2 * LIPSYNC_DIGEST_LEN + 1];
  snprintf(msg, len, "cannot read the summaries");
  if (!kept_summary(n->store, &kept) || !items_summary(n->db, &counted))
    return false;
  tu_hex(kept.sum, LIPSYNC_DIGEST_LEN, a);
  tu_hex(counted.sum, LIPSYNC_DIGEST_LEN, b);
  snprintf(msg, len, "kept summary %s/%llu, items sum to %s/%llu", a,
           (unsigned long long)kept.count, b,
           (unsigned long long)counted.count);
  return kept.count == counted.count && strcmp(a, b) == 0;
}

#define EXPECT_KEPT_SUMMARY_EXACT(n) expect_kept_summary_at((n), __LINE__)
static void expect_kept_summary_at(node *n, int line) {
  char msg[300];
  bool exact = kept_summary_exact(n, msg, sizeof msg);
  CU_assertImplementation(exact, (unsigned)line, msg, __FILE__, "", CU_FALSE);
}

/* ------------------------------------------------------------------ */
/* sessions                                                             */
/* ------------------------------------------------------------------ */

/* The first sync has no checkpoint to present (ranges); the second, after
 * inserts, updates and deletes on both sides, is incremental on both
 * sessions, moves exactly the changed rows (tombstones are rows too) in
 * few bytes, and converges, UUIDs included; a third with nothing changed
 * moves under 1 KB in all. LS-INC-6, LS-INC-7, LS-INC-9, LS-INC-10 to
 * LS-INC-13, LS-INC-15. */
static void test_changes_only(void) {
  world w;
  if (!world_open(&w, 200, 0))
    goto out;
  outcome first = SYNC_OK(&w.client, &w.server, 0, 0, 200, 0);

  TU_EXEC(w.client.db, "INSERT INTO t(k, v) VALUES (1001, 'client new'),"
                       " (1002, 'client new');"
                       "UPDATE t SET v = 'client changed' WHERE k IN (1, 2);"
                       "DELETE FROM t WHERE k = 3");
  TU_EXEC(w.server.db, "INSERT INTO t(k, v) VALUES (2001, 'server new'),"
                       " (2002, 'server new'), (2003, 'server new');"
                       "UPDATE t SET v = 'server changed' WHERE k = 10;"
                       "DELETE FROM t WHERE k IN (11, 12)");
  outcome o = SYNC_OK(&w.client, &w.server, 0, 1, 5, 6);
  CU_ASSERT_TRUE(o.bytes_sent < 2048 && o.bytes_received < 2048);
  CU_ASSERT_TRUE(o.bytes_sent < first.bytes_sent / 5);
  EXPECT_SAME_ROWS(&w.client, &w.server);
  CU_ASSERT_EQUAL(TU_QUERY_INT(w.server.db, "SELECT count(*) FROM t", -1), 202);
  CU_ASSERT_EQUAL(TU_QUERY_INT(w.client.db,
                               "SELECT count(*) FROM t WHERE v LIKE 'server%'"
                               " OR v LIKE 'client%'",
                               -1),
                  8);

  o = SYNC_OK(&w.client, &w.server, 0, 1, 0, 0);
  CU_ASSERT_TRUE(o.bytes_sent + o.bytes_received < 1024);
  EXPECT_SAME_ROWS(&w.client, &w.server);
out:
  world_close(&w);
}

/* What a write to a database file changes: PRAGMA data_version as another
 * connection sees it, and the size and time of the file and its WAL. */
typedef struct file_state {
  int64_t data_version;
  struct stat db, wal;
} file_state;

static file_state file_state_of(const node *n) {
  file_state f;
  char wal[PATH_SIZE + 8];
  memset(&f, 0, sizeof f);
  f.data_version = TU_QUERY_INT(n->db, "PRAGMA data_version", -1);
  snprintf(wal, sizeof wal, "%s-wal", n->path);
  CU_ASSERT_EQUAL(stat(n->path, &f.db), 0);
  stat(wal, &f.wal); /* may not exist */
  return f;
}

static bool same_stat(const struct stat *a, const struct stat *b) {
  return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
         a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static bool same_file_state(const file_state *a, const file_state *b) {
  return a->data_version == b->data_version && same_stat(&a->db, &b->db) &&
         same_stat(&a->wal, &b->wal);
}

/* A server session that changes nothing writes nothing: neither an
 * incremental sync with nothing to do nor one that only sends the
 * server's change to the client touches the server's file, its WAL or
 * data_version; a sync that brings the server a row does (so the check
 * can fail). LS-INC-5. */
static void test_unchanged_server_writes_nothing(void) {
  world w;
  if (!world_open(&w, 50, 0))
    goto out;
  SYNC_OK(&w.client, &w.server, 0, 0, 50, 0);

  TU_EXEC(w.client.db, "UPDATE t SET v = 'client changed' WHERE k = 1");
  file_state before = file_state_of(&w.server);
  SYNC_OK(&w.client, &w.server, 0, 1, 1, 0);
  file_state after = file_state_of(&w.server);
  CU_ASSERT_FALSE(same_file_state(&before, &after));

  before = file_state_of(&w.server);
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 0);
  after = file_state_of(&w.server);
  CU_ASSERT_TRUE(same_file_state(&before, &after));

  TU_EXEC(w.server.db, "UPDATE t SET v = 'server changed' WHERE k = 2");
  before = file_state_of(&w.server);
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 1);
  after = file_state_of(&w.server);
  CU_ASSERT_TRUE(same_file_state(&before, &after));
  EXPECT_SAME_ROWS(&w.client, &w.server);
out:
  world_close(&w);
}

/* When one side does not take part in the feature (the client does not
 * offer it, then the server does not accept it), the table is reconciled
 * with ranges and converges, and the client, which got no checkpoint,
 * keeps none: the next sync with the feature on both sides is not
 * incremental either; the one after is. LS-INC-6, 8.8.5. */
static void test_feature_mismatch(void) {
  static const unsigned plain[] = {CLIENT_PLAIN, SERVER_PLAIN};
  world w;
  if (!world_open(&w, 20, 0))
    goto out;
  SYNC_OK(&w.client, &w.server, 0, 0, 20, 0);
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 0);
  for (size_t i = 0; i < 2; i++) {
    TU_EXEC(w.client.db, "UPDATE t SET v = v || ' c' WHERE k = 1;"
                         "INSERT INTO t(k, v) VALUES (100, 'from the client')");
    TU_EXEC(w.server.db, "UPDATE t SET v = v || ' s' WHERE k = 2;"
                         "DELETE FROM t WHERE k = (SELECT min(k) FROM t"
                         " WHERE k > 2)");
    SYNC_OK(&w.client, &w.server, plain[i], 0, 2, 2);
    EXPECT_SAME_ROWS(&w.client, &w.server);
    TU_EXEC(w.client.db, "DELETE FROM t WHERE k = 100");
    SYNC_OK(&w.client, &w.server, 0, 0, 1, 0);
    SYNC_OK(&w.client, &w.server, 0, 1, 0, 0);
  }
  EXPECT_SAME_ROWS(&w.client, &w.server);
  EXPECT_ROWS(&w.server, "1=row 1 c c,2=row 2 s s,5=row 5,6=row 6,"
                         "7=row 7,8=row 8,9=row 9,10=row 10,11=row 11,"
                         "12=row 12,13=row 13,14=row 14,15=row 15,16=row 16,"
                         "17=row 17,18=row 18,19=row 19,20=row 20");
out:
  world_close(&w);
}

/* The clock of the item of row k = 1 of |n|. */
static int64_t row1_clock(const node *n) {
  return TU_QUERY_INT(n->db,
                      "SELECT clock FROM _lipsync_meta_t WHERE uuid = (SELECT"
                      " _lipsync_uuid FROM t WHERE k = 1)",
                      -1);
}

/* A write made with capture off (drift) gives its row no new version: a
 * sync by changes does not carry it and still succeeds, since Verify
 * compares the kept summaries, which the write did not change. A full
 * sync (set_full) recounts the client: the row whose contents no longer
 * match the digest the last recount recorded gets a new version, travels,
 * and the tables are equal again. LS-INC-15, LS-INC-17. */
static void test_drift_repaired_by_full_sync(void) {
  world w;
  if (!world_open(&w, 5, 0))
    goto out;
  SYNC_OK(&w.client, &w.server, 0, 0, 5, 0);
  /* The recount of a full sync records each row's digest. */
  SYNC_OK(&w.client, &w.server, FULL, 0, 0, 0);

  TU_EXEC(w.client.db, "UPDATE _lipsync_state SET applying = 1;"
                       "UPDATE t SET v = 'changed without capture' WHERE k = 1;"
                       "UPDATE _lipsync_state SET applying = 0");
  int64_t clock = row1_clock(&w.client);
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 0);
  EXPECT_ROWS(&w.server, "1=row 1,2=row 2,3=row 3,4=row 4,5=row 5");

  SYNC_OK(&w.client, &w.server, FULL, 0, 1, 0);
  CU_ASSERT_TRUE(row1_clock(&w.client) > clock);
  EXPECT_SAME_ROWS(&w.client, &w.server);
  EXPECT_ROWS(&w.server,
              "1=changed without capture,2=row 2,3=row 3,4=row 4,5=row 5");
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 0);
out:
  world_close(&w);
}

/* A kept summary that disagrees with the items (tampered with on the
 * client, then on the server) makes the incremental sync's Verify fail on
 * both sides, and neither database's data nor kept records change: only
 * the marks that the table's records are not to be trusted. The next
 * session presents no checkpoint, recounts, repairs the summary and
 * converges; the one after is incremental again. LS-INC-15, LS-INC-16,
 * LS-INC-17. */
static void test_tampered_summary(void) {
  for (int side = 0; side < 2; side++) {
    world w;
    if (!world_open(&w, 30, 0))
      goto next;
    SYNC_OK(&w.client, &w.server, 0, 0, 30, 0);
    node *tampered = side ? &w.server : &w.client;
    TU_EXEC(tampered->db, "UPDATE _lipsync_tables SET sum = randomblob(16)"
                          " WHERE name = 't'");
    char msg[300];
    CU_ASSERT_FALSE(kept_summary_exact(tampered, msg, sizeof msg));
    TU_EXEC(w.client.db, "UPDATE t SET v = 'client changed' WHERE k = 1");
    TU_EXEC(w.server.db, "UPDATE t SET v = 'server changed' WHERE k = 2");
    char *client_before = dump(w.client.db, false);
    char *server_before = dump(w.server.db, false);

    outcome o = sync_now(&w.client, &w.server, 0);
    EXPECT_SYNC(o, LIPSYNC_ERR_VERIFY_FAILED, 1, ANY, ANY);
    EXPECT_UNCHANGED(w.client.db, client_before, false);
    EXPECT_UNCHANGED(w.server.db, server_before, false);
    CU_ASSERT_EQUAL(
        TU_QUERY_INT(w.client.db, "SELECT recount FROM _lipsync_tables", -1),
        1);

    SYNC_OK(&w.client, &w.server, 0, 0, 1, 1);
    EXPECT_SAME_ROWS(&w.client, &w.server);
    EXPECT_KEPT_SUMMARY_EXACT(tampered);
    SYNC_OK(&w.client, &w.server, 0, 1, 0, 0);
  next:
    world_close(&w);
  }
}

/* An item deleted from the client's item table by hand (an edit of the
 * metadata, which no trigger captures): its row stays, and the kept
 * summary still counts the item. When the server then changes that row,
 * the sync must not break on the row without an item: it converges, or
 * its Verify fails with nothing changed and the next session (no
 * checkpoint, a recount) converges, without a full sync asked for.
 * LS-INC-15, LS-INC-16, LS-INC-17, 8.8.6 (drift). */
static void test_deleted_item(void) {
  world w;
  if (!world_open(&w, 5, 0))
    goto out;
  SYNC_OK(&w.client, &w.server, 0, 0, 5, 0);
  TU_EXEC(w.client.db, "DELETE FROM _lipsync_meta_t WHERE uuid = (SELECT"
                       " _lipsync_uuid FROM t WHERE k = 5)");
  TU_EXEC(w.server.db, "UPDATE t SET v = 'server changed' WHERE k = 5");
  char *client_before = dump(w.client.db, false);
  char *server_before = dump(w.server.db, false);

  outcome o = sync_now(&w.client, &w.server, 0);
  if (o.client_rc == LIPSYNC_ERR_VERIFY_FAILED) {
    EXPECT_SYNC(o, LIPSYNC_ERR_VERIFY_FAILED, 1, ANY, ANY);
    EXPECT_UNCHANGED(w.client.db, client_before, false);
    EXPECT_UNCHANGED(w.server.db, server_before, false);
    SYNC_OK(&w.client, &w.server, 0, 0, ANY, ANY);
  } else {
    free(client_before);
    free(server_before);
    EXPECT_SYNC(o, 0, 1, ANY, ANY);
  }
  EXPECT_SAME_ROWS(&w.client, &w.server);
  EXPECT_ROWS(&w.client, "1=row 1,2=row 2,3=row 3,4=row 4,5=server changed");
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 0);
out:
  world_close(&w);
}

/* The site id of |n|'s database, as hex (malloc'd). */
static char *site_of(const node *n) {
  return TU_QUERY_TEXT(n->db, "SELECT hex(site) FROM _lipsync_state");
}

/* A copy of a client database file (a new file) takes a site id of its
 * own before it syncs, so it holds no checkpoint and its first sync is by
 * ranges, while the original keeps its site and syncs by its changes; the
 * changes of the original, the copy and the server reach all three.
 * LS-VERSION-4, LS-INC-7, LS-INC-8, 8.8.6 (copies). */
static void test_copied_client(void) {
  world w;
  node copy = {.db = NULL};
  char copy_path[PATH_SIZE], *site = NULL, *now = NULL;
  if (!world_open(&w, 0, 3))
    goto out;
  SYNC_OK(&w.client, &w.server, 0, 0, 0, 3);
  world_path(&w, "copy.db", copy_path);
  if (!node_copy_closed(&w.client, w.client.path, copy_path) ||
      !node_open(&copy, copy_path))
    goto out;
  site = site_of(&w.client);
  now = site_of(&copy);
  CU_ASSERT_TRUE(site && now && strcmp(site, now) == 0);
  free(now);

  TU_EXEC(w.client.db, "UPDATE t SET v = 'from the client' WHERE k = 1");
  TU_EXEC(copy.db, "UPDATE t SET v = 'from the copy' WHERE k = 2;"
                   "INSERT INTO t(k, v) VALUES (4, 'from the copy')");
  TU_EXEC(w.server.db, "UPDATE t SET v = 'from the server' WHERE k = 3");
  SYNC_OK(&w.client, &w.server, 0, 1, 1, 1);
  SYNC_OK(&copy, &w.server, 0, 0, 2, 2);
  now = site_of(&copy);
  CU_ASSERT_TRUE(site && now && strcmp(site, now) != 0);
  free(now);
  now = site_of(&w.client);
  CU_ASSERT_TRUE(site && now && strcmp(site, now) == 0);

  SYNC_OK(&w.client, &w.server, 0, 1, 0, 2);
  SYNC_OK(&copy, &w.server, 0, 1, 0, 0);
  EXPECT_SAME_ROWS(&w.client, &w.server);
  EXPECT_SAME_ROWS(&copy, &w.server);
  EXPECT_ROWS(&w.server, "1=from the client,2=from the copy,3=from the server,"
                         "4=from the copy");
out:
  free(site);
  free(now);
  node_close(&copy);
  world_close(&w);
}

/* Copies the server's closed database file to "backup.db" (its path into
 * |backup|), as a backup is taken. */
static bool backup_server(world *w, char backup[PATH_SIZE]) {
  world_path(w, "backup.db", backup);
  return node_copy_closed(&w->server, w->server.path, backup);
}

/* Copies |backup| over the server's closed database file. */
static bool restore_server(world *w, const char *backup) {
  return node_copy_closed(&w->server, backup, w->server.path);
}

/* The server's database restored from a backup taken before a sync that
 * changed it (so before the token the client holds): the server refuses
 * the client's checkpoint (ranges), and the syncs converge on the right
 * data: the client's changes the server lost come back (its own too,
 * through the client), the server's change made after the restore
 * reaches the client. LS-INC-5, LS-INC-8. */
static void test_restored_server(void) {
  world w;
  char backup[PATH_SIZE];
  if (!world_open(&w, 0, 3))
    goto out;
  SYNC_OK(&w.client, &w.server, 0, 0, 0, 3);
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 0);
  if (!backup_server(&w, backup))
    goto out;

  TU_EXEC(w.client.db, "UPDATE t SET v = 'from the client' WHERE k = 1;"
                       "INSERT INTO t(k, v) VALUES (4, 'from the client')");
  TU_EXEC(w.server.db, "UPDATE t SET v = 'from the server' WHERE k = 3");
  SYNC_OK(&w.client, &w.server, 0, 1, 2, 1);
  if (!restore_server(&w, backup))
    goto out;
  EXPECT_ROWS(&w.server, "1=row 1,2=row 2,3=row 3");

  TU_EXEC(w.server.db, "UPDATE t SET v = 'after the restore' WHERE k = 2");
  SYNC_OK(&w.client, &w.server, 0, 0, 3, 1);
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 0);
  EXPECT_SAME_ROWS(&w.client, &w.server);
  EXPECT_ROWS(&w.client, "1=from the client,2=after the restore,"
                         "3=from the server,4=from the client");
out:
  world_close(&w);
}

/* The server's database restored from a backup taken after the token the
 * client holds (the session since changed nothing there): the checkpoint
 * is accepted, but the restored database has since numbered other changes
 * as the lost ones were, so neither side lists what the other lacks;
 * Verify, over the whole tables, fails and nothing changes; the next sync
 * (ranges) converges. LS-INC-8, LS-INC-15, LS-INC-16. */
static void test_restored_server_same_token(void) {
  world w;
  char backup[PATH_SIZE];
  if (!world_open(&w, 0, 3))
    goto out;
  SYNC_OK(&w.client, &w.server, 0, 0, 0, 3);
  if (!backup_server(&w, backup))
    goto out;
  TU_EXEC(w.server.db, "UPDATE t SET v = 'lost by the restore' WHERE k = 1");
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 1);
  if (!restore_server(&w, backup))
    goto out;
  TU_EXEC(w.server.db, "UPDATE t SET v = 'after the restore' WHERE k = 2");

  outcome o = sync_now(&w.client, &w.server, 0);
  EXPECT_SYNC(o, LIPSYNC_ERR_VERIFY_FAILED, 1, ANY, ANY);
  EXPECT_ROWS(&w.server, "1=row 1,2=after the restore,3=row 3");
  EXPECT_ROWS(&w.client, "1=lost by the restore,2=row 2,3=row 3");
  SYNC_OK(&w.client, &w.server, 0, 0, 1, 1);
  EXPECT_SAME_ROWS(&w.client, &w.server);
  EXPECT_ROWS(&w.server, "1=lost by the restore,2=after the restore,3=row 3");
out:
  world_close(&w);
}

/* Another connection writes to the server between the session's reads and
 * its writes. A row the session must write too (same UUID): the session
 * fails with TRY_AGAIN and neither database keeps anything of it (the
 * server holds the other writer's change alone); the next session
 * converges, the later change winning. A different row: the session
 * succeeds, and as its position does not cover that change, the next
 * sync carries it to the client. LS-INC-1, LS-STORE-4. */
static void test_concurrent_writer(void) {
  world w;
  run r;
  if (!world_open(&w, 10, 0))
    goto out;
  SYNC_OK(&w.client, &w.server, 0, 0, 10, 0);

  TU_EXEC(w.client.db, "UPDATE t SET v = 'client' WHERE k = 1");
  run_start(&r, &w.client, &w.server, 0);
  run_rounds(&r, 4); /* the server has read, and asked for row 1 */
  CU_ASSERT_FALSE(lipsync_session_is_done(r.server));
  TU_EXEC(w.server.db, "UPDATE t SET v = 'other writer' WHERE k = 1");
  char *client_before = dump(w.client.db, true);
  char *server_before = dump(w.server.db, true);
  outcome o = run_end(&r);
  EXPECT_SYNC(o, LIPSYNC_ERR_TRY_AGAIN, 1, ANY, ANY);
  EXPECT_UNCHANGED(w.client.db, client_before, true);
  EXPECT_UNCHANGED(w.server.db, server_before, true);
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 1);
  EXPECT_SAME_ROWS(&w.client, &w.server);
  EXPECT_ROWS(&w.client, "1=other writer,2=row 2,3=row 3,4=row 4,5=row 5,"
                         "6=row 6,7=row 7,8=row 8,9=row 9,10=row 10");

  TU_EXEC(w.client.db, "UPDATE t SET v = 'client' WHERE k = 2");
  run_start(&r, &w.client, &w.server, 0);
  run_rounds(&r, 4);
  CU_ASSERT_FALSE(lipsync_session_is_done(r.server));
  TU_EXEC(w.server.db, "UPDATE t SET v = 'other writer' WHERE k = 3");
  o = run_end(&r);
  EXPECT_SYNC(o, 0, 1, 1, 0);
  EXPECT_ROWS(&w.server, "1=other writer,2=client,3=other writer,4=row 4,"
                         "5=row 5,6=row 6,7=row 7,8=row 8,9=row 9,10=row 10");
  SYNC_OK(&w.client, &w.server, 0, 1, 0, 1);
  EXPECT_SAME_ROWS(&w.client, &w.server);
  EXPECT_KEPT_SUMMARY_EXACT(&w.server);
out:
  world_close(&w);
}

/* A server session that applies nothing never takes the write lock:
 * after every round of an incremental sync that only sends the server's
 * change, another connection takes the write lock at once (it has no
 * busy timeout) and commits a row; the session still succeeds, and the
 * rows written after it took its snapshot come with the next sync.
 * LS-STORE-4, LS-INC-5. */
static void test_reader_takes_no_lock(void) {
  world w;
  run r;
  uint64_t written = 0;
  if (!world_open(&w, 0, 10))
    goto out;
  SYNC_OK(&w.client, &w.server, 0, 0, 0, 10);

  TU_EXEC(w.server.db, "UPDATE t SET v = 'server' WHERE k = 1");
  run_start(&r, &w.client, &w.server, 0);
  while (run_round(&r) && !lipsync_session_is_done(r.server)) {
    CU_ASSERT_TRUE(TU_EXEC(w.server.db,
                           "BEGIN IMMEDIATE;"
                           "INSERT INTO t(k, v) VALUES (100, 'meanwhile');"
                           "COMMIT"));
    written++;
  }
  outcome during = run_end(&r);
  EXPECT_SYNC(during, 0, 1, 0, ANY);
  CU_ASSERT_TRUE(written >= 4);
  outcome o = SYNC_OK(&w.client, &w.server, 0, 1, 0, ANY);
  CU_ASSERT_TRUE(o.rows_received > 0);
  CU_ASSERT_EQUAL(during.rows_received + o.rows_received, 1 + written);
  EXPECT_SAME_ROWS(&w.client, &w.server);
out:
  world_close(&w);
}

/* ------------------------------------------------------------------ */
/* the store: change sequence and kept summary                          */
/* ------------------------------------------------------------------ */

/* Records the sequence number of every item of t (TEMP tables of the
 * application's connection), and which rows are about to change (by k,
 * |changing|: an SQL list): the items of those rows, and items that
 * appear, must take a number above every recorded one; the others keep
 * theirs. */
static void seq_mark(sqlite3 *db, const char *changing) {
  char sql[512];
  TU_EXEC(db, "DROP TABLE IF EXISTS temp.seq_before;"
              "DROP TABLE IF EXISTS temp.seq_changing;"
              "CREATE TEMP TABLE seq_before AS SELECT uuid, seq FROM"
              " _lipsync_meta_t");
  snprintf(sql, sizeof sql,
           "CREATE TEMP TABLE seq_changing AS SELECT _lipsync_uuid AS uuid"
           " FROM t WHERE k IN (%s)",
           changing);
  TU_EXEC(db, sql);
}

#define EXPECT_SEQS(db, nchanged) expect_seqs_at((db), (nchanged), __LINE__)
static void expect_seqs_at(sqlite3 *db, int64_t nchanged, int line) {
  char msg[200];
  int64_t kept = tu_query_int_at(
      db,
      "SELECT count(*) FROM seq_before AS b JOIN _lipsync_meta_t AS m USING"
      " (uuid) WHERE b.uuid NOT IN (SELECT uuid FROM seq_changing) AND"
      " m.seq <> b.seq",
      -1, __FILE__, line);
  int64_t changed = tu_query_int_at(
      db,
      "SELECT count(*) FROM _lipsync_meta_t WHERE uuid IN (SELECT uuid FROM"
      " seq_changing) OR uuid NOT IN (SELECT uuid FROM seq_before)",
      -1, __FILE__, line);
  int64_t above = tu_query_int_at(
      db,
      "SELECT count(*) FROM _lipsync_meta_t WHERE (uuid IN (SELECT uuid FROM"
      " seq_changing) OR uuid NOT IN (SELECT uuid FROM seq_before)) AND seq >"
      " (SELECT max(seq) FROM seq_before)",
      -1, __FILE__, line);
  bool ok = kept == 0 && changed == nchanged && above == nchanged;
  snprintf(msg, sizeof msg,
           "seq: %lld unchanged items moved, %lld changed items of %lld want,"
           " %lld of them above the old numbers",
           (long long)kept, (long long)changed, (long long)nchanged,
           (long long)above);
  CU_assertImplementation(ok, (unsigned)line, msg, __FILE__, "", CU_FALSE);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* A world whose server database has change capture installed on t and
 * its 10 rows, as lipsync-server --init does. */
static bool captured_world(world *w) {
  char err[256];
  if (!world_open(w, 0, 10))
    return false;
  int rc =
      lipsync_store_init_tables(w->server.store, TABLES, 1, err, sizeof err);
  CU_ASSERT_EQUAL(rc, 0);
  return rc == 0;
}

/* Items changed since the last fold, whose state it logged. */
static int64_t fold_log_size(const node *n) {
  return TU_QUERY_INT(n->db, "SELECT count(*) FROM _lipsync_prev_t", -1);
}

static int64_t tombstones(const node *n) {
  return TU_QUERY_INT(n->db,
                      "SELECT count(*) FROM _lipsync_meta_t WHERE"
                      " deleted",
                      -1);
}

/* The kept summary of a table always equals the sum of its items' digests,
 * and the change sequence orders every change: after captured inserts,
 * updates and deletes of an application, rows a sync applied, tombstones
 * a server session purged, and lipsync_store_maintain folding and purging,
 * changed items take higher numbers and unchanged ones keep theirs.
 * LS-INC-1, LS-INC-2, LS-TOMB-4, 8.8.6 (positions and summaries). */
static void test_sequence_and_summary(void) {
  world w;
  node *n = &w.server;
  if (!captured_world(&w))
    goto out;
  EXPECT_KEPT_SUMMARY_EXACT(n);

  seq_mark(n->db, "3, 4, 5");
  TU_EXEC(n->db, "INSERT INTO t(k, v) VALUES (11, 'new'), (12, 'new');"
                 "UPDATE t SET v = 'changed' WHERE k = 3;"
                 "UPDATE t SET v = v WHERE k = 6;" /* no change: no seq */
                 "DELETE FROM t WHERE k IN (4, 5)");
  EXPECT_SEQS(n->db, 5);
  EXPECT_KEPT_SUMMARY_EXACT(n);

  /* Rows a sync applies: the client's five, then its update and delete. */
  add_rows(w.client.db, 101, 105);
  seq_mark(n->db, "0");
  SYNC_OK(&w.client, n, 0, 0, 5, ANY);
  EXPECT_SEQS(n->db, 5);
  EXPECT_KEPT_SUMMARY_EXACT(n);
  TU_EXEC(w.client.db, "UPDATE t SET v = 'client' WHERE k = 6;"
                       "DELETE FROM t WHERE k = 7");
  seq_mark(n->db, "6, 7");
  SYNC_OK(&w.client, n, 0, 1, 2, 0);
  EXPECT_SEQS(n->db, 2);
  EXPECT_KEPT_SUMMARY_EXACT(n);
  CU_ASSERT_EQUAL(tombstones(n), 3);

  /* A server with a short retention purges its tombstones (4, 5, 7); the
   * client's last sync is older than the horizon: ranges (LS-INC-8). */
  sleep_ms(20);
  run r;
  run_start(&r, &w.client, n, 0);
  lipsync_session_set_tombstone_retention(r.server, 5);
  outcome o = run_end(&r);
  EXPECT_SYNC(o, 0, 0, 0, 0);
  CU_ASSERT_EQUAL(tombstones(n), 0);
  EXPECT_KEPT_SUMMARY_EXACT(n);

  /* Maintenance folds the changes into the stored sum (with the fold log
   * empty, the kept summary is the stored one) and purges. */
  seq_mark(n->db, "8, 9");
  TU_EXEC(n->db, "DELETE FROM t WHERE k = 8; UPDATE t SET v = 'x' WHERE k = 9");
  EXPECT_SEQS(n->db, 2);
  CU_ASSERT_EQUAL(fold_log_size(n), 2);
  EXPECT_KEPT_SUMMARY_EXACT(n);
  sleep_ms(20);
  CU_ASSERT_EQUAL(lipsync_store_maintain(n->store, 5), 0);
  CU_ASSERT_EQUAL(fold_log_size(n), 0);
  CU_ASSERT_EQUAL(tombstones(n), 0);
  EXPECT_KEPT_SUMMARY_EXACT(n);
out:
  world_close(&w);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* lipsync_store_maintain with nothing to fold does not try the write lock:
 * while another connection holds it, it returns 0 at once (a try waits
 * for the lock some 200 ms). With changes to fold and the lock held, it
 * returns 0 and leaves them for next time; once the lock is free it folds
 * them: the fold log empties, the stored sum is exact. 8.8.6
 * (summaries). */
static void test_maintain_lock(void) {
  world w;
  node *n = &w.server;
  if (!captured_world(&w))
    goto out;
  CU_ASSERT_EQUAL(fold_log_size(n), 0);
  TU_EXEC(n->db, "BEGIN IMMEDIATE");
  double start = now_ms();
  CU_ASSERT_EQUAL(lipsync_store_maintain(n->store, 0), 0);
  CU_ASSERT_TRUE(now_ms() - start < 100);
  TU_EXEC(n->db, "COMMIT");

  TU_EXEC(n->db, "UPDATE t SET v = 'changed' WHERE k = 1");
  TU_EXEC(n->db, "BEGIN IMMEDIATE");
  CU_ASSERT_EQUAL(lipsync_store_maintain(n->store, 0), 0);
  TU_EXEC(n->db, "COMMIT");
  CU_ASSERT_EQUAL(fold_log_size(n), 1);

  CU_ASSERT_EQUAL(lipsync_store_maintain(n->store, 0), 0);
  CU_ASSERT_EQUAL(fold_log_size(n), 0);
  EXPECT_KEPT_SUMMARY_EXACT(n);
out:
  world_close(&w);
}

int register_incremental_tests(void) {
  static const tu_test tests[] = {
      {"second sync moves only the changes", test_changes_only},
      {"unchanged server writes nothing", test_unchanged_server_writes_nothing},
      {"feature off on either side: ranges, no checkpoint",
       test_feature_mismatch},
      {"drift: not carried by changes, repaired by a full sync",
       test_drift_repaired_by_full_sync},
      {"tampered kept summary: VERIFY_FAILED, then recount",
       test_tampered_summary},
      {"item deleted by hand: no lasting failure", test_deleted_item},
      {"copied client database gets a site of its own", test_copied_client},
      {"restored server refuses the checkpoint", test_restored_server},
      {"restored server with the same token: VERIFY_FAILED, then converge",
       test_restored_server_same_token},
      {"concurrent writer: same row TRY_AGAIN, other row carried next",
       test_concurrent_writer},
      {"read-only server session takes no write lock",
       test_reader_takes_no_lock},
      {"sequence numbers and kept summary stay exact",
       test_sequence_and_summary},
      {"maintain takes the write lock only when it must", test_maintain_lock},
      {NULL, NULL}};
  return tu_add_suite("incremental", tests);
}
