/*
 * fuzz_server_preauth.c: a server session (ref/src/session.c) fed
 * arbitrary bytes as if from a client that does not hold the secret.
 *
 * Input: one byte of options (bit 0: offer every table rather than one
 * list; bit 1: a TLS channel binding, feature tls-exporter; bit 2: no
 * feature incremental), one byte that seeds the chunk sizes, then the
 * client's bytes.
 *
 * Checks: the session consumes every chunk, and after the input it has
 * ended or still wants input; after the end of the stream it has ended,
 * never with success, after whole frames. Nothing authenticates, so it
 * sends only ServerHello and Error frames, each at most once, Error last,
 * and it never touches the database: the database is byte for byte what
 * it was (spec LS-SEC-3).
 */
#include "fuzz_util.h"
#include "lipsync.h"

#include <stdlib.h>
#include <string.h>

static const char SECRET[] = "fuzz-preauth-secret";
static const char *const OFFERED[] = {"items"};

static sqlite3 *db;
static fuzz_image image;

static void setup(void) {
  fuzz_sqlite_init();
  db = fuzz_db_open();
  fuzz_db_exec(db, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT,"
                   " price REAL, photo BLOB);"
                   "CREATE TABLE secrets(k TEXT, v TEXT);"
                   "INSERT INTO secrets VALUES ('root', 'hunter2');");
  for (int i = 1; i <= 20; i++) {
    char *sql = sqlite3_mprintf("INSERT INTO items(name, price, photo)"
                                " VALUES ('item %d é', %d.25, x'00ff%02x')",
                                i, i, i);
    fuzz_db_exec(db, sql);
    sqlite3_free(sql);
  }
  /* As a server that has synced before: capture installed. */
  lipsync_store *store = NULL;
  char err[256];
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&store, db) == 0);
  FUZZ_CHECKF(lipsync_store_init_tables(store, OFFERED, 1, err, sizeof err) ==
                  0,
              "%s", err);
  lipsync_store_free(store);
  image = fuzz_image_take(db);
}

typedef struct sent {
  bytebuf pending; /* sent, not yet a whole frame */
  int hellos, errors;
} sent;

/* Takes what the server has to send; checks its frames are of the kinds
 * a server may send before the client proved itself. */
static void drain(lipsync_session *s, sent *out) {
  const uint8_t *d;
  ssize_t n;
  while ((n = lipsync_session_send(s, &d)) > 0) {
    FUZZ_CHECK(bytebuf_append(&out->pending, d, (size_t)n) == 0);
    size_t off = 0, size;
    while ((size = fuzz_frame_size(out->pending.data + off,
                                   out->pending.len - off)) > 0) {
      uint32_t body = fuzz_frame_body(out->pending.data + off, size);
      FUZZ_CHECKF(out->errors == 0, "the server sent a frame after Error");
      if (body == 2)
        out->hellos++;
      else if (body == 15)
        out->errors++;
      else
        FUZZ_CHECKF(false, "unauthenticated, the server sent body %u", body);
      FUZZ_CHECK(out->hellos <= 1);
      off += size;
    }
    bytebuf_consume(&out->pending, off);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint8_t binding[LIPSYNC_TLS_BINDING_LEN] = {1, 2, 3};
  fuzz_input in = {data, size};
  lipsync_store *store = NULL;
  lipsync_session *s = NULL;
  sent out = {{0}, 0, 0};

  if (!db)
    setup();
  fuzz_det_reset(0);
  uint8_t options = fuzz_byte(&in);
  uint32_t seed = fuzz_byte(&in);
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&store, db) == 0);
  bool all = options & 1;
  FUZZ_CHECK(lipsync_session_server_new(&s, store, SECRET, sizeof SECRET - 1,
                                        all ? NULL : OFFERED, all ? 0 : 1,
                                        all) == 0);
  if (options & 2)
    FUZZ_CHECK(
        lipsync_session_set_channel_binding(s, binding, sizeof binding) == 0);
  if (options & 4)
    FUZZ_CHECK(lipsync_session_set_incremental(s, 0) == 0);

  for (size_t pos = 0; pos < in.len;) {
    size_t n = fuzz_chunk(&seed, pos, in.len);
    ssize_t rc = lipsync_session_recv(s, in.data + pos, n);
    FUZZ_CHECKF(rc == (ssize_t)n || (rc < 0 && rc == lipsync_session_result(s)),
                "recv returned %zd for %zu bytes", rc, n);
    pos += n;
    drain(s, &out);
  }
  FUZZ_CHECK(lipsync_session_is_done(s) || lipsync_session_want_read(s));
  lipsync_session_recv_eof(s);
  drain(s, &out);
  FUZZ_CHECK(lipsync_session_is_done(s));
  FUZZ_CHECKF(out.pending.len == 0, "the server ended in the middle of a "
                                    "frame");
  bytebuf_free(&out.pending);
  FUZZ_CHECKF(lipsync_session_result(s) != 0, "a session without the secret "
                                              "succeeded");
  FUZZ_CHECK(lipsync_session_errmsg(s) != NULL);
  lipsync_session_free(s);
  lipsync_store_free(store);

  fuzz_image now = fuzz_image_take(db);
  FUZZ_CHECKF(fuzz_image_eq(&image, &now),
              "the database changed before authentication");
  fuzz_image_free(&now);
  return 0;
}
