/*
 * fuzz_session_pair.c: a client and a server session (ref/src/session.c,
 * reconcile.c, the SQLite backend) in one process, over memory buffers,
 * with a man in the middle after the handshake.
 *
 * The two in-memory databases are built once: tables t (every kind of
 * value: integers at their edges, reals with infinities, subnormals and
 * -0.0, UTF-8 text, text with NUL, blobs, NULLs, typed columns, in another
 * column order on each side) and u (plain rows), a first clean sync, a
 * delete on each side and a second clean sync (tombstones), then
 * UPDATE, DELETE and INSERT on both sides, one row changed on both. Every
 * input starts from copies of them, with the same randomness and clock.
 *
 * Input: two bytes of configuration (below), then one operation per frame
 * after the handshake (after client_auth one way, server_auth the other):
 * pass, flip bytes, truncate, drop, duplicate, or swap with the next frame,
 * with its arguments. When the input runs out every frame passes.
 *
 * Checks: the exchange ends within MAX_SENDS, and then both sessions have
 * ended; a client succeeds only if the server did; a session that failed
 * left its database byte for byte as it was (after VERIFY_FAILED, but for
 * the marks spec LS-INC-16 asks for); without any operation both succeed;
 * when both succeed, both hold the same live items (the final Verify
 * compares them) unless a Verify frame itself was altered, and the same
 * rows and tombstones unless any frame was altered (frames carry no MAC:
 * an altered value in a Row is indistinguishable from a real one).
 */
#include "fuzz_util.h"
#include "lipsync.h"

#include <stdlib.h>
#include <string.h>

static const char SECRET[] = "fuzz-pair-secret";
static const char *const TABLES[] = {"t", "u"};
static const char *const TABLES_REVERSED[] = {"u", "t"};

#define MINUTE_MS (60u * 1000u)
/* Sends (calls of lipsync_session_send with output) before the exchange
 * counts as endless. */
#define MAX_SENDS 20000
/* The fields of the bodies that end the handshake, and of Verify. */
#define BODY_CLIENT_AUTH 3
#define BODY_SERVER_AUTH 4
#define BODY_VERIFY 11

/* ------------------------------------------------------------------ */
/* the databases                                                        */
/* ------------------------------------------------------------------ */

static const char SERVER_SCHEMA[] =
    "CREATE TABLE t(id INTEGER, i INTEGER, r REAL, s TEXT, b BLOB, v,"
    " flag BOOLEAN, amount DECIMAL TEXT, day DATE, doc JSON TEXT, ref UUID);"
    "CREATE TABLE u(k INTEGER UNIQUE, v TEXT);";
static const char CLIENT_SCHEMA[] =
    "CREATE TABLE t(ref UUID, doc JSON TEXT, v, b BLOB, s TEXT, r REAL,"
    " i INTEGER, id INTEGER, day DATE, amount DECIMAL TEXT, flag BOOLEAN);"
    "CREATE TABLE u(v TEXT, k INTEGER UNIQUE);";

static const char SERVER_ROWS[] =
    "INSERT INTO t(id, i, r, s, b, v, flag, amount, day, doc, ref) VALUES"
    " (1, -9223372036854775808, 1e-308, '', x'', -0.0, 0, '12.50',"
    "  '2024-02-29', '{\"a\": [1, 2.50]}',"
    "  '00000000-0000-0000-0000-000000000000'),"
    " (2, 9223372036854775807, 9e999, '東京 Zürich 😀', x'00ff', 'text',"
    "  1, '-0.001', '0044-03-15 BC', '[]',"
    "  'ffffffff-ffff-ffff-ffff-ffffffffffff'),"
    " (3, 0, -9e999, CAST(x'610062' AS TEXT), zeroblob(40), 5e-324, NULL,"
    "  'NaN', 'infinity', 'null', NULL),"
    " (4, -1, 0.1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
    " (5, 42, -2.5, 'tab\there' || char(10) || 'line', x'deadbeef', 7, 1,"
    "  '0', '1970-01-01', '\"x\"', '5f0c3a1e-8d2b-4c7f-9a61-0b2e4d6f8a10');"
    "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n"
    " WHERE k < 40) INSERT INTO u(k, v) SELECT k, 'server row ' || k FROM n;";
static const char CLIENT_ROWS[] =
    "INSERT INTO t(id, i, r, s, b, v, flag, amount, day, doc, ref) VALUES"
    " (7, -9223372036854775807, 1.7976931348623157e308, 'é', x'00',"
    "  x'ff00', 0, 'Infinity', '9999-12-31', '{\"deep\": {\"x\": [1]}}',"
    "  'abcdef00-0000-4000-8000-000000000000'),"
    " (8, 1, -0.5, 'client', x'0102', 2.5, 1, '-Infinity', '-infinity',"
    "  '12', NULL),"
    " (9, 2, 2.0, 'nine', NULL, -9223372036854775808, 0, '1', '2000-01-01',"
    "  'true', NULL);"
    "WITH RECURSIVE n(k) AS (SELECT 100 UNION ALL SELECT k + 1 FROM n"
    " WHERE k < 129) INSERT INTO u(k, v) SELECT k, 'client row ' || k FROM n;";

/* Ten minutes after the first sync, deleted on each side. */
static const char SERVER_EARLY[] = "DELETE FROM u WHERE k % 10 = 0;";
static const char CLIENT_EARLY[] = "DELETE FROM t WHERE id = 4;"
                                   "DELETE FROM u WHERE k = 125;";

/* An hour after, what the fuzzed session syncs. */
static const char CLIENT_CHANGES[] =
    "UPDATE t SET s = 'client edit', v = x'c0ffee' WHERE id = 1;"
    "UPDATE t SET i = i + 1, r = 3.25 WHERE id = 8;"
    "DELETE FROM t WHERE id = 9;"
    "UPDATE u SET v = 'changed on client' WHERE k IN (105, 12);"
    "DELETE FROM u WHERE k IN (110, 3);"
    "INSERT INTO u(k, v) VALUES (130, 'new on client');"
    "INSERT INTO t(id, i, s) VALUES (10, 10, 'new on client');";
static const char SERVER_CHANGES[] =
    "UPDATE t SET s = 'server edit', i = -42 WHERE id = 1;"
    "UPDATE t SET v = 1e-320 WHERE id = 3;"
    "DELETE FROM t WHERE id = 5;"
    "UPDATE u SET v = 'changed on server' WHERE k IN (5, 3);"
    "DELETE FROM u WHERE k IN (12, 7);"
    "INSERT INTO u(k, v) VALUES (41, 'new on server');";

/* What is compared between the two sides, in one column order. */
static const char T_ROWS[] =
    "SELECT _lipsync_uuid, id, i, r, s, b, v, flag, amount, day, doc, ref"
    " FROM t ORDER BY _lipsync_uuid";
static const char U_ROWS[] =
    "SELECT _lipsync_uuid, k, v FROM u ORDER BY _lipsync_uuid";

static fuzz_image client_image, server_image;
static bytebuf client_dump, server_dump; /* unmarked, of the images */

/* ------------------------------------------------------------------ */
/* configuration                                                        */
/* ------------------------------------------------------------------ */

typedef enum retention {
  KEEP_ALL,    /* no horizon */
  KEEP_MONTH,  /* the default 30 days: every tombstone above it */
  KEEP_RECENT, /* the old tombstones below, the client stale (LS-TOMB-5) */
  KEEP_NONE    /* every tombstone below */
} retention;

typedef struct config {
  size_t split;
  lipsync_policy policy;
  bool client_plain, server_plain, full, reversed, offer_all;
  retention keep;
} config;

static config read_config(fuzz_input *in) {
  static const size_t splits[4] = {32, 0, 2, 8};
  static const lipsync_policy policies[4] = {
      LIPSYNC_POLICY_LWW, LIPSYNC_POLICY_SERVER_WINS,
      LIPSYNC_POLICY_CLIENT_WINS, LIPSYNC_POLICY_LWW};
  uint8_t a = fuzz_byte(in), b = fuzz_byte(in);
  config c;
  c.split = splits[a & 3];
  c.policy = policies[(a >> 2) & 3];
  c.client_plain = a & 16;
  c.server_plain = a & 32;
  c.keep = (retention)(a >> 6);
  c.full = b & 1;
  c.reversed = b & 2;
  c.offer_all = b & 4;
  return c;
}

/* The time of the fuzzed session, and what the server keeps. */
#define SESSION_TIME (FUZZ_EPOCH_MS + 120 * MINUTE_MS)

static uint64_t retention_ms(retention keep) {
  switch (keep) {
  case KEEP_MONTH:
    return LIPSYNC_DEFAULT_RETENTION_MS;
  case KEEP_RECENT: /* the horizon at 30 minutes after the epoch */
    return SESSION_TIME - FUZZ_EPOCH_MS - 30 * MINUTE_MS;
  case KEEP_NONE:
    return 1;
  default:
    return UINT64_MAX;
  }
}

/* Which tombstones both sides must still hold after a success. */
static const char *tombstones_kept(retention keep) {
  switch (keep) {
  case KEEP_RECENT:
    return "clock >= (1767225600000 + 30 * 60000) << 16";
  case KEEP_NONE:
    return "0";
  default:
    return "1";
  }
}

/* ------------------------------------------------------------------ */
/* the man in the middle                                                */
/* ------------------------------------------------------------------ */

/* One direction of the stream. */
typedef struct link {
  lipsync_session *from, *to;
  uint32_t last_handshake; /* the body after which frames may change */
  bool open;
  bytebuf pending; /* sent, not yet a whole frame */
  bytebuf held;    /* a frame held back, to follow the next one */
  bool holding;
} link;

typedef struct pump {
  fuzz_input in;
  link links[2];
  bool mutated;        /* an operation other than pass */
  bool altered;        /* a frame delivered with other bytes */
  bool verify_altered; /* ... and it was, or became, a Verify */
  bytebuf scratch;
} pump;

static void deliver(link *l, const uint8_t *p, size_t n) {
  ssize_t rc = lipsync_session_recv(l->to, p, n);
  FUZZ_CHECKF(rc == (ssize_t)n ||
                  (rc < 0 && rc == lipsync_session_result(l->to)),
              "recv returned %zd for %zu bytes", rc, n);
}

/* Delivers the frame in p->scratch, which differs from |orig|. */
static void deliver_altered(pump *p, link *l, const uint8_t *orig,
                            size_t size) {
  const bytebuf *b = &p->scratch;
  p->altered = true;
  if (fuzz_frame_body(orig, size) == BODY_VERIFY ||
      fuzz_frame_body(b->data, b->len) == BODY_VERIFY)
    p->verify_altered = true;
  deliver(l, b->data, b->len);
}

/* Applies the next operation of the input to the frame |f|. */
static void on_frame(pump *p, link *l, const uint8_t *f, size_t size) {
  if (!l->open) {
    l->open = fuzz_frame_body(f, size) == l->last_handshake;
    deliver(l, f, size);
    return;
  }
  uint8_t op = fuzz_byte(&p->in);
  bytebuf *b = &p->scratch;
  b->len = 0;
  switch (op & 7) {
  case 3: { /* flip: 1 to 4 bytes of the frame, header included */
    FUZZ_CHECK(bytebuf_append(b, f, size) == 0);
    for (int k = 0; k <= (op >> 3 & 3); k++) {
      size_t at = fuzz_u16(&p->in) % size;
      uint8_t mask = fuzz_byte(&p->in);
      b->data[at] ^= mask ? mask : 1;
    }
    p->mutated = true;
    deliver_altered(p, l, f, size);
    break;
  }
  case 4: { /* truncate the payload; bit 3: keep the old length prefix */
    size_t keep = size > 4 ? fuzz_u16(&p->in) % (size - 4) : 0;
    uint8_t head[4] = {(uint8_t)(keep >> 24), (uint8_t)(keep >> 16),
                       (uint8_t)(keep >> 8), (uint8_t)keep};
    FUZZ_CHECK(bytebuf_append(b, op & 8 ? f : head, 4) == 0);
    FUZZ_CHECK(bytebuf_append(b, f + 4, keep) == 0);
    p->mutated = true;
    deliver_altered(p, l, f, size);
    break;
  }
  case 5: /* drop */
    p->mutated = true;
    break;
  case 6: /* duplicate */
    p->mutated = true;
    deliver(l, f, size);
    deliver(l, f, size);
    break;
  case 7: /* swap with the next frame this way */
    if (!l->holding) {
      p->mutated = true;
      l->held.len = 0;
      FUZZ_CHECK(bytebuf_append(&l->held, f, size) == 0);
      l->holding = true;
      return;
    }
    deliver(l, f, size);
    break;
  default:
    deliver(l, f, size);
    break;
  }
  if (l->holding) {
    l->holding = false;
    deliver(l, l->held.data, l->held.len);
  }
}

/* Takes what |l|'s sender has to send, frame by frame. */
static bool take_output(pump *p, link *l, int *sends) {
  const uint8_t *d;
  ssize_t n;
  bool any = false;
  while ((n = lipsync_session_send(l->from, &d)) > 0) {
    FUZZ_CHECKF(++*sends < MAX_SENDS, "the exchange does not end");
    FUZZ_CHECK(bytebuf_append(&l->pending, d, (size_t)n) == 0);
    any = true;
    size_t off = 0, size;
    while ((size = fuzz_frame_size(l->pending.data + off,
                                   l->pending.len - off)) > 0) {
      on_frame(p, l, l->pending.data + off, size);
      off += size;
    }
    bytebuf_consume(&l->pending, off);
  }
  return any;
}

/* When nothing else moves: the held frame goes alone, then the part of a
 * frame the sender left, as it is. */
static bool flush_link(link *l) {
  if (l->holding) {
    l->holding = false;
    deliver(l, l->held.data, l->held.len);
    return true;
  }
  if (l->pending.len) {
    deliver(l, l->pending.data, l->pending.len);
    l->pending.len = 0;
    return true;
  }
  return false;
}

/* Moves frames both ways through the operations until neither session
 * has more to say, then ends the stream for a session still waiting. */
static void run_pump(pump *p) {
  int sends = 0;
  bool closed = false;
  for (;;) {
    bool progress = false;
    for (int i = 0; i < 2; i++)
      progress |= take_output(p, &p->links[i], &sends);
    for (int i = 0; i < 2 && !progress; i++)
      progress = flush_link(&p->links[i]);
    if (progress)
      continue;
    if (closed)
      break;
    for (int i = 0; i < 2; i++)
      if (!lipsync_session_is_done(p->links[i].from))
        lipsync_session_recv_eof(p->links[i].from);
    closed = true;
  }
}

/* ------------------------------------------------------------------ */
/* sessions                                                             */
/* ------------------------------------------------------------------ */

typedef struct side {
  sqlite3 *db;
  lipsync_store *store;
  lipsync_session *session;
} side;

static void start(side *c, side *s, const config *cfg) {
  const char *const *tables = cfg->reversed ? TABLES_REVERSED : TABLES;
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&c->store, c->db) == 0);
  FUZZ_CHECK(lipsync_store_sqlite_wrap(&s->store, s->db) == 0);
  FUZZ_CHECK(lipsync_session_client_new(&c->session, c->store, SECRET,
                                        sizeof SECRET - 1, tables, 2) == 0);
  FUZZ_CHECK(lipsync_session_server_new(
                 &s->session, s->store, SECRET, sizeof SECRET - 1,
                 cfg->offer_all ? NULL : TABLES, cfg->offer_all ? 0 : 2,
                 cfg->offer_all) == 0);
  lipsync_session_set_split_threshold(c->session, cfg->split);
  lipsync_session_set_split_threshold(s->session, cfg->split);
  FUZZ_CHECK(lipsync_session_set_policy(c->session, cfg->policy) == 0);
  FUZZ_CHECK(lipsync_session_set_incremental(c->session, !cfg->client_plain) ==
             0);
  FUZZ_CHECK(lipsync_session_set_incremental(s->session, !cfg->server_plain) ==
             0);
  FUZZ_CHECK(lipsync_session_set_tombstone_retention(
                 s->session, retention_ms(cfg->keep)) == 0);
  if (cfg->full)
    FUZZ_CHECK(lipsync_session_set_full(c->session) == 0);
}

/* Connections kept from one input to the next while their database is
 * byte for byte its image: reading the schema of a new connection costs
 * more than many a session. */
static sqlite3 *kept[2];

static sqlite3 *open_db(int i, const fuzz_image *img) {
  sqlite3 *db = kept[i];
  kept[i] = NULL;
  return db ? db : fuzz_db_from_image(img);
}

/* Ends the session of |x|, and keeps its connection for the next input
 * when its database is |pristine| and nothing of the session is left in
 * the connection (a transaction, a TEMP table). */
static void finish(side *x, int i, bool pristine) {
  lipsync_session_free(x->session);
  lipsync_store_free(x->store);
  bytebuf temp = {0};
  fuzz_dump_query(x->db, "SELECT * FROM temp.sqlite_schema", &temp);
  if (pristine && sqlite3_get_autocommit(x->db) && temp.len == 0)
    kept[i] = x->db;
  else
    sqlite3_close(x->db);
  bytebuf_free(&temp);
  memset(x, 0, sizeof *x);
}

static void init_pump(pump *p, side *c, side *s, const uint8_t *data,
                      size_t size) {
  memset(p, 0, sizeof *p);
  p->in.data = data;
  p->in.len = size;
  p->links[0].from = c->session;
  p->links[0].to = s->session;
  p->links[0].last_handshake = BODY_CLIENT_AUTH;
  p->links[1].from = s->session;
  p->links[1].to = c->session;
  p->links[1].last_handshake = BODY_SERVER_AUTH;
}

static void free_pump(pump *p) {
  for (int i = 0; i < 2; i++) {
    bytebuf_free(&p->links[i].pending);
    bytebuf_free(&p->links[i].held);
  }
  bytebuf_free(&p->scratch);
}

/* A sync during setup, which must succeed. */
static void clean_sync(sqlite3 *client_db, sqlite3 *server_db) {
  static const config plain = {
      32, LIPSYNC_POLICY_LWW, false, false, false, false, false, KEEP_ALL};
  side c = {client_db, NULL, NULL}, s = {server_db, NULL, NULL};
  pump p;
  start(&c, &s, &plain);
  init_pump(&p, &c, &s, NULL, 0);
  run_pump(&p);
  free_pump(&p);
  FUZZ_CHECKF(lipsync_session_result(c.session) == 0, "setup sync: %s",
              lipsync_session_errmsg(c.session));
  FUZZ_CHECK(lipsync_session_result(s.session) == 0);
  lipsync_session_free(c.session);
  lipsync_session_free(s.session);
  lipsync_store_free(c.store);
  lipsync_store_free(s.store);
}

static void setup(void) {
  fuzz_sqlite_init();
  sqlite3 *c = fuzz_db_open(), *s = fuzz_db_open();
  fuzz_db_exec(c, CLIENT_SCHEMA);
  fuzz_db_exec(s, SERVER_SCHEMA);
  fuzz_db_exec(c, CLIENT_ROWS);
  fuzz_db_exec(s, SERVER_ROWS);
  clean_sync(c, s);
  fuzz_det_set_time(FUZZ_EPOCH_MS + 10 * MINUTE_MS);
  fuzz_db_exec(c, CLIENT_EARLY);
  fuzz_db_exec(s, SERVER_EARLY);
  clean_sync(c, s);
  fuzz_det_set_time(FUZZ_EPOCH_MS + 60 * MINUTE_MS);
  fuzz_db_exec(c, CLIENT_CHANGES);
  fuzz_det_set_time(FUZZ_EPOCH_MS + 61 * MINUTE_MS);
  fuzz_db_exec(s, SERVER_CHANGES);
  client_image = fuzz_image_take(c);
  server_image = fuzz_image_take(s);
  fuzz_db_dump(c, false, &client_dump);
  fuzz_db_dump(s, false, &server_dump);
  sqlite3_close(c);
  sqlite3_close(s);
}

/* ------------------------------------------------------------------ */
/* checks                                                               */
/* ------------------------------------------------------------------ */

/* A side whose session failed holds what it held before: the same bytes,
 * or after VERIFY_FAILED the same contents but for the marks. Returns true
 * in the first case. */
static bool check_unchanged(const char *who, side *x, const fuzz_image *img,
                            const bytebuf *dump) {
  int code = lipsync_session_result(x->session);
  if (code == LIPSYNC_ERR_VERIFY_FAILED) {
    bytebuf now = {0};
    fuzz_db_dump(x->db, false, &now);
    FUZZ_CHECKF(fuzz_buf_eq(&now, dump),
                "the %s changed its database in a session that failed (%s)",
                who, lipsync_session_errmsg(x->session));
    bytebuf_free(&now);
    return false;
  }
  fuzz_image now = fuzz_image_take(x->db);
  FUZZ_CHECKF(fuzz_image_eq(&now, img),
              "the %s changed its database in a session that failed (%s)", who,
              lipsync_session_errmsg(x->session));
  fuzz_image_free(&now);
  return true;
}

/* The rows of |sql| are the same on both sides. */
static void check_same(side *c, side *s, const char *sql, const char *what) {
  bytebuf a = {0}, b = {0};
  fuzz_dump_query(c->db, sql, &a);
  fuzz_dump_query(s->db, sql, &b);
  FUZZ_CHECKF(fuzz_buf_eq(&a, &b), "both succeeded with different %s", what);
  bytebuf_free(&a);
  bytebuf_free(&b);
}

static void check_items(side *c, side *s, const char *table,
                        const char *tombstones) {
  char *sql = sqlite3_mprintf("SELECT uuid, clock, site, deleted FROM"
                              " \"_lipsync_meta_%w\" WHERE NOT deleted OR (%s)"
                              " ORDER BY uuid",
                              table, tombstones);
  FUZZ_CHECK(sql != NULL);
  check_same(c, s, sql, "items");
  sqlite3_free(sql);
}

static bool known_result(int code) {
  return code == 0 ||
         (code <= LIPSYNC_ERR_PROTOCOL && code >= LIPSYNC_ERR_RESOURCE_LIMIT) ||
         (code <= LIPSYNC_ERR_NOMEM && code >= LIPSYNC_ERR_NOT_FOUND);
}

/* Checks how the sessions ended; sets |*pristine| for each side whose
 * database is byte for byte its image again. */
static void check_outcome(const pump *p, const config *cfg, side *c, side *s,
                          bool pristine[2]) {
  int crc = lipsync_session_result(c->session);
  int src = lipsync_session_result(s->session);
  FUZZ_CHECKF(lipsync_session_is_done(c->session) &&
                  lipsync_session_is_done(s->session),
              "a session has not ended after the end of the stream");
  FUZZ_CHECK(known_result(crc) && known_result(src));
  FUZZ_CHECKF(crc != 0 || src == 0,
              "the client committed, the server did not (%s)",
              lipsync_session_errmsg(s->session));
  FUZZ_CHECKF(p->mutated || (crc == 0 && src == 0),
              "a sync with nothing tampered failed: client %s; server %s",
              lipsync_session_errmsg(c->session),
              lipsync_session_errmsg(s->session));
  pristine[0] =
      crc != 0 && check_unchanged("client", c, &client_image, &client_dump);
  pristine[1] =
      src != 0 && check_unchanged("server", s, &server_image, &server_dump);
  if (crc != 0 || src != 0)
    return;
  if (!p->verify_altered) {
    check_items(c, s, "t", "0");
    check_items(c, s, "u", "0");
  }
  if (!p->altered) {
    check_same(c, s, T_ROWS, "rows of t");
    check_same(c, s, U_ROWS, "rows of u");
    check_items(c, s, "t", tombstones_kept(cfg->keep));
    check_items(c, s, "u", tombstones_kept(cfg->keep));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!client_image.data)
    setup();
  fuzz_det_reset(1);
  fuzz_det_set_time(SESSION_TIME);

  fuzz_input in = {data, size};
  config cfg = read_config(&in);
  side c = {open_db(0, &client_image), NULL, NULL};
  side s = {open_db(1, &server_image), NULL, NULL};
  bool pristine[2];
  pump p;
  start(&c, &s, &cfg);
  init_pump(&p, &c, &s, in.data, in.len);
  run_pump(&p);
  check_outcome(&p, &cfg, &c, &s, pristine);
  free_pump(&p);
  finish(&c, 0, pristine[0]);
  finish(&s, 1, pristine[1]);
  return 0;
}
