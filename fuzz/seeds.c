/*
 * seeds.c: writes the seed corpora of fuzz_frame and fuzz_server_preauth
 * from real sessions: a first sync of two small SQLite databases (by
 * ranges), changes on both sides, and a second sync (by changes, feature
 * incremental), each recorded frame by frame in both directions. The
 * world is fuzz_util's deterministic one, so the files come out the same
 * every time.
 *
 * Usage: seeds DIR (fuzz/corpus): writes DIR/fuzz_frame/... and
 * DIR/fuzz_server_preauth/..., which must exist.
 */
#include "fuzz_util.h"
#include "lipsync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SECRET[] = "seed-secret";
static const char *const TABLES[] = {"items"};

static const char SCHEMA[] =
    "CREATE TABLE items(id INTEGER, name TEXT, price REAL,"
    " photo BLOB, day DATE, doc JSON TEXT);";

static const char *dir;

static void write_file(const char *harness, const char *name,
                       const uint8_t *head, size_t nhead, const uint8_t *data,
                       size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s/%s", dir, harness, name);
  FILE *f = fopen(path, "wb");
  FUZZ_CHECKF(f != NULL, "cannot write %s", path);
  FUZZ_CHECK(fwrite(head, 1, nhead, f) == nhead);
  FUZZ_CHECK(len == 0 || fwrite(data, 1, len, f) == len);
  FUZZ_CHECK(fclose(f) == 0);
}

/* The bytes each way of one session, whole. */
typedef struct recording {
  bytebuf to_server, to_client;
} recording;

static void sync_recorded(sqlite3 *client_db, sqlite3 *server_db,
                          recording *rec) {
  lipsync_store *cs, *ss;
  lipsync_session *c, *s;
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&cs, client_db) == 0);
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&ss, server_db) == 0);
  FUZZ_CHECK(lipsync_session_client_new(&c, cs, SECRET, sizeof SECRET - 1,
                                        TABLES, 1) == 0);
  FUZZ_CHECK(lipsync_session_server_new(&s, ss, SECRET, sizeof SECRET - 1,
                                        TABLES, 1, 0) == 0);
  lipsync_session_set_split_threshold(c, 2);
  lipsync_session_set_split_threshold(s, 2);
  for (bool progress = true; progress;) {
    const uint8_t *d;
    ssize_t n;
    progress = false;
    while ((n = lipsync_session_send(c, &d)) > 0) {
      FUZZ_CHECK(bytebuf_append(&rec->to_server, d, (size_t)n) == 0);
      lipsync_session_recv(s, d, (size_t)n);
      progress = true;
    }
    while ((n = lipsync_session_send(s, &d)) > 0) {
      FUZZ_CHECK(bytebuf_append(&rec->to_client, d, (size_t)n) == 0);
      lipsync_session_recv(c, d, (size_t)n);
      progress = true;
    }
  }
  FUZZ_CHECKF(lipsync_session_result(c) == 0 && lipsync_session_result(s) == 0,
              "seed sync failed: %s", lipsync_session_errmsg(c));
  lipsync_session_free(c);
  lipsync_session_free(s);
  lipsync_store_free(cs);
  lipsync_store_free(ss);
}

static const char *body_name(uint32_t body) {
  static const char *const names[] = {
      "none",        "client-hello", "server-hello",  "client-auth",
      "server-auth", "open-tables",  "tables-opened", "ranges",
      "rows",        "need",         "end-turn",      "verify",
      "committed"};
  if (body < sizeof names / sizeof *names)
    return names[body];
  return body == 15 ? "error" : body == 1000 ? "changes" : "unknown";
}

/* One file per kind of frame of |stream| (the first of each kind). */
static void write_frames(const bytebuf *stream, const char *session) {
  static bool seen[1001];
  static const uint8_t whole[1] = {0};
  char name[128];
  for (size_t off = 0; off < stream->len;) {
    size_t size = fuzz_frame_size(stream->data + off, stream->len - off);
    FUZZ_CHECK(size > 0);
    uint32_t body = fuzz_frame_body(stream->data + off, size);
    if (body <= 1000 && !seen[body]) {
      seen[body] = true;
      snprintf(name, sizeof name, "frame-%s-%s", body_name(body), session);
      write_file("fuzz_frame", name, whole, 1, stream->data + off, size);
    }
    off += size;
  }
}

/* The first |count| frames of |stream|. */
static size_t frames_len(const bytebuf *stream, int count) {
  size_t off = 0;
  for (int i = 0; i < count && off < stream->len; i++)
    off += fuzz_frame_size(stream->data + off, stream->len - off);
  return off;
}

static void write_session(const recording *rec, const char *session) {
  static const uint8_t whole[1] = {0}, chunked[1] = {0x2A};
  char name[128];
  snprintf(name, sizeof name, "stream-client-%s", session);
  write_file("fuzz_frame", name, whole, 1, rec->to_server.data,
             rec->to_server.len);
  snprintf(name, sizeof name, "stream-server-%s", session);
  write_file("fuzz_frame", name, chunked, 1, rec->to_client.data,
             rec->to_client.len);
  write_frames(&rec->to_server, session);
  write_frames(&rec->to_client, session);
}

/* A client's ClientHello with or without the features it can offer. */
static void write_hello(const char *name, uint8_t options, bool binding,
                        bool incremental) {
  static const uint8_t value[LIPSYNC_TLS_BINDING_LEN] = {9, 9, 9};
  sqlite3 *db = fuzz_db_open();
  lipsync_store *store;
  lipsync_session *c;
  const uint8_t *d;
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&store, db) == 0);
  FUZZ_CHECK(lipsync_session_client_new(&c, store, SECRET, sizeof SECRET - 1,
                                        TABLES, 1) == 0);
  if (binding)
    FUZZ_CHECK(lipsync_session_set_channel_binding(c, value, sizeof value) ==
               0);
  FUZZ_CHECK(lipsync_session_set_incremental(c, incremental) == 0);
  ssize_t n = lipsync_session_send(c, &d);
  FUZZ_CHECK(n > 0);
  uint8_t head[2] = {options, 7};
  write_file("fuzz_server_preauth", name, head, 2, d, (size_t)n);
  lipsync_session_free(c);
  lipsync_store_free(store);
  sqlite3_close(db);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  dir = argv[1];
  fuzz_sqlite_init();
  fuzz_det_reset(7);

  sqlite3 *c = fuzz_db_open(), *s = fuzz_db_open();
  fuzz_db_exec(c, SCHEMA);
  fuzz_db_exec(s, SCHEMA);
  fuzz_db_exec(c, "INSERT INTO items(id, name, price, photo, day, doc) VALUES"
                  " (1, 'lamp é', 12.5, x'00ff', '2024-02-29', '{\"a\": 1}'),"
                  " (2, 'desk', -0.0, NULL, NULL, '[1, 2.50]'),"
                  " (3, CAST(x'610062' AS TEXT), 1e308, zeroblob(8), NULL,"
                  " NULL)");
  fuzz_db_exec(s, "INSERT INTO items(id, name, price, photo) VALUES"
                  " (4, 'chair', 3, x'01'), (5, '東京', NULL, x''),"
                  " (6, 'sofa', 9e999, NULL), (7, 'rug', 0.1, x'0203')");
  recording first = {{0}, {0}}, second = {{0}, {0}};
  sync_recorded(c, s, &first);
  fuzz_det_set_time(FUZZ_EPOCH_MS + 3600000);
  fuzz_db_exec(c, "UPDATE items SET price = 13 WHERE name = 'lamp é';"
                  "DELETE FROM items WHERE name = 'desk';"
                  "INSERT INTO items(name) VALUES ('new on client');");
  fuzz_db_exec(s, "UPDATE items SET photo = x'ffff' WHERE name = 'chair';"
                  "DELETE FROM items WHERE name = 'rug';");
  sync_recorded(c, s, &second);

  write_session(&first, "first");
  write_session(&second, "again");

  /* The server's side: hellos, and a client's whole stream (its proof
   * does not verify: another nonce, another secret). */
  write_hello("hello", 0x00, false, true);
  write_hello("hello-binding", 0x02, true, true);
  write_hello("hello-plain", 0x05, false, false);
  uint8_t head[2] = {0x00, 0x00};
  write_file("fuzz_server_preauth", "hello-auth", head, 2, first.to_server.data,
             frames_len(&first.to_server, 2));
  head[0] = 0x01;
  head[1] = 0x33;
  write_file("fuzz_server_preauth", "client-stream", head, 2,
             first.to_server.data, first.to_server.len);

  bytebuf_free(&first.to_server);
  bytebuf_free(&first.to_client);
  bytebuf_free(&second.to_server);
  bytebuf_free(&second.to_client);
  sqlite3_close(c);
  sqlite3_close(s);
  return 0;
}
