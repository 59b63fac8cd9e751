/* frame_test.c: framing (src/frame.c): round trips of every message, and
 * truncated, oversized and garbage frames. */
#include "frame.h"
#include "lipsync.h"
#include "test_util.h"

#include <CUnit/CUnit.h>
#include <stdlib.h>
#include <string.h>

/* Encodes |f|, feeds the bytes to a reader in pieces of |step| bytes, and
 * returns the decoded frame (allocated from |a|). */
static Lipsync__Frame *round_trip(const Lipsync__Frame *f, size_t step,
                                  frame_reader *r, arena *a) {
  bytebuf out = {0};
  ssize_t n = frame_append(&out, f);
  CU_ASSERT_FATAL(n > 0);
  CU_ASSERT_EQUAL((size_t)n, out.len);
  size_t off = 0;
  int complete = 0;
  while (off < out.len && !complete) {
    size_t len = out.len - off < step ? out.len - off : step;
    ssize_t used = frame_reader_feed(r, out.data + off, len, &complete);
    CU_ASSERT_FATAL(used > 0);
    off += (size_t)used;
  }
  CU_ASSERT_TRUE(complete);
  CU_ASSERT_EQUAL(off, out.len);
  CU_ASSERT_EQUAL(frame_reader_size(r), out.len);
  Lipsync__Frame *d = frame_reader_decode(r, a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(d->body_case, f->body_case);
  bytebuf_free(&out);
  return d;
}

static void bin(ProtobufCBinaryData *b, const void *p, size_t n) {
  b->data = (uint8_t *)p;
  b->len = n;
}

static int bin_eq(ProtobufCBinaryData b, const void *p, size_t n) {
  return b.len == n && (n == 0 || memcmp(b.data, p, n) == 0);
}

static const uint8_t U1[16] = {1, 2,  3,  4,  5,  6,  7,  8,
                               9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t U2[16] = {0xff, 0xfe, 0xfd, 0xfc, 0, 0, 0, 0,
                               0,    0,    0,    0,    0, 0, 0, 1};

static void test_handshake_round_trip(void) {
  frame_reader r;
  arena a;
  frame_reader_init(&r);
  arena_init(&a);
  uint8_t nonce[32];
  memset(nonce, 0xa5, sizeof nonce);
  char *features[] = {"x-one", "x-two"};

  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__ClientHello ch = LIPSYNC__CLIENT_HELLO__INIT;
  ch.min_version = 1;
  ch.max_version = 7;
  ch.n_features = 2;
  ch.features = features;
  bin(&ch.nonce, nonce, 32);
  f.body_case = LIPSYNC__FRAME__BODY_CLIENT_HELLO;
  f.client_hello = &ch;
  Lipsync__Frame *d = round_trip(&f, 1, &r, &a);
  CU_ASSERT_EQUAL(d->client_hello->min_version, 1);
  CU_ASSERT_EQUAL(d->client_hello->max_version, 7);
  CU_ASSERT_EQUAL(d->client_hello->n_features, 2);
  CU_ASSERT_STRING_EQUAL(d->client_hello->features[1], "x-two");
  CU_ASSERT_TRUE(bin_eq(d->client_hello->nonce, nonce, 32));
  frame_reader_reset(&r);
  arena_reset(&a);

  Lipsync__ServerHello sh = LIPSYNC__SERVER_HELLO__INIT;
  sh.version = 1;
  bin(&sh.nonce, nonce, 32);
  f.body_case = LIPSYNC__FRAME__BODY_SERVER_HELLO;
  f.server_hello = &sh;
  d = round_trip(&f, 3, &r, &a);
  CU_ASSERT_EQUAL(d->server_hello->version, 1);
  CU_ASSERT_TRUE(bin_eq(d->server_hello->nonce, nonce, 32));
  frame_reader_reset(&r);
  arena_reset(&a);

  Lipsync__AuthProof ap = LIPSYNC__AUTH_PROOF__INIT;
  bin(&ap.mac, nonce, 32);
  for (int role = 0; role < 2; role++) {
    f.body_case = role ? LIPSYNC__FRAME__BODY_SERVER_AUTH
                       : LIPSYNC__FRAME__BODY_CLIENT_AUTH;
    f.client_auth = &ap; /* same union slot as server_auth */
    d = round_trip(&f, 1000, &r, &a);
    CU_ASSERT_TRUE(
        bin_eq(role ? d->server_auth->mac : d->client_auth->mac, nonce, 32));
    frame_reader_reset(&r);
    arena_reset(&a);
  }

  Lipsync__Error e = LIPSYNC__ERROR__INIT;
  e.code = 4;
  e.message = "no common version";
  e.min_version = 2;
  e.max_version = 3;
  f.body_case = LIPSYNC__FRAME__BODY_ERROR;
  f.error = &e;
  d = round_trip(&f, 2, &r, &a);
  CU_ASSERT_EQUAL(d->error->code, 4);
  CU_ASSERT_STRING_EQUAL(d->error->message, "no common version");
  CU_ASSERT_EQUAL(d->error->min_version, 2);
  CU_ASSERT_EQUAL(d->error->max_version, 3);
  frame_reader_free(&r);
  arena_free(&a);
}

static void test_table_messages_round_trip(void) {
  frame_reader r;
  arena a;
  frame_reader_init(&r);
  arena_init(&a);
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;

  Lipsync__Column c1 = LIPSYNC__COLUMN__INIT, c2 = LIPSYNC__COLUMN__INIT;
  c1.name = "name";
  c1.type = "text";
  c2.name = "population";
  c2.type = "integer";
  Lipsync__Column *cols[] = {&c1, &c2};
  Lipsync__TableSchema ts = LIPSYNC__TABLE_SCHEMA__INIT;
  ts.name = "cities";
  ts.n_columns = 2;
  ts.columns = cols;
  bin(&ts.fingerprint, U1, 16);
  Lipsync__TableSchema *tsp[] = {&ts};
  Lipsync__OpenTables ot = LIPSYNC__OPEN_TABLES__INIT;
  ot.n_tables = 1;
  ot.tables = tsp;
  f.body_case = LIPSYNC__FRAME__BODY_OPEN_TABLES;
  f.open_tables = &ot;
  Lipsync__Frame *d = round_trip(&f, 5, &r, &a);
  CU_ASSERT_EQUAL(d->open_tables->n_tables, 1);
  CU_ASSERT_STRING_EQUAL(d->open_tables->tables[0]->name, "cities");
  CU_ASSERT_EQUAL(d->open_tables->tables[0]->n_columns, 2);
  CU_ASSERT_STRING_EQUAL(d->open_tables->tables[0]->columns[1]->type,
                         "integer");
  frame_reader_reset(&r);
  arena_reset(&a);

  /* Empty messages still carry their body case. */
  Lipsync__TablesOpened to = LIPSYNC__TABLES_OPENED__INIT;
  Lipsync__EndTurn et = LIPSYNC__END_TURN__INIT;
  Lipsync__Committed cm = LIPSYNC__COMMITTED__INIT;
  struct {
    Lipsync__Frame__BodyCase body;
    void *msg;
  } empties[] = {{LIPSYNC__FRAME__BODY_TABLES_OPENED, &to},
                 {LIPSYNC__FRAME__BODY_END_TURN, &et},
                 {LIPSYNC__FRAME__BODY_COMMITTED, &cm}};
  for (size_t i = 0; i < 3; i++) {
    f.body_case = empties[i].body;
    f.tables_opened = empties[i].msg;
    round_trip(&f, 1, &r, &a);
    frame_reader_reset(&r);
    arena_reset(&a);
  }

  Lipsync__Fingerprint fp = LIPSYNC__FINGERPRINT__INIT;
  bin(&fp.value, U2, 16);
  fp.count = 123456789012ULL;
  Lipsync__Version ver = LIPSYNC__VERSION__INIT;
  ver.clock = 0x0123456789abcdefULL;
  bin(&ver.site, U2, 16);
  Lipsync__Item it = LIPSYNC__ITEM__INIT;
  bin(&it.uuid, U1, 16);
  it.version = &ver;
  it.deleted = 1;
  Lipsync__Item *itp[] = {&it};
  Lipsync__ItemList il = LIPSYNC__ITEM_LIST__INIT;
  il.n_items = 1;
  il.items = itp;
  Lipsync__Range r1 = LIPSYNC__RANGE__INIT, r2 = LIPSYNC__RANGE__INIT;
  bin(&r1.upper, U1, 16);
  r1.summary_case = LIPSYNC__RANGE__SUMMARY_FINGERPRINT;
  r1.fingerprint = &fp;
  bin(&r2.lower, U1, 16);
  r2.summary_case = LIPSYNC__RANGE__SUMMARY_ITEMS;
  r2.items = &il;
  Lipsync__Range *rp[] = {&r1, &r2};
  Lipsync__Ranges rs = LIPSYNC__RANGES__INIT;
  rs.table = 3;
  rs.n_ranges = 2;
  rs.ranges = rp;
  f.body_case = LIPSYNC__FRAME__BODY_RANGES;
  f.ranges = &rs;
  d = round_trip(&f, 7, &r, &a);
  CU_ASSERT_EQUAL(d->ranges->table, 3);
  CU_ASSERT_EQUAL_FATAL(d->ranges->n_ranges, 2);
  CU_ASSERT_EQUAL(d->ranges->ranges[0]->lower.len, 0);
  CU_ASSERT_TRUE(bin_eq(d->ranges->ranges[0]->upper, U1, 16));
  CU_ASSERT_EQUAL(d->ranges->ranges[0]->summary_case,
                  LIPSYNC__RANGE__SUMMARY_FINGERPRINT);
  CU_ASSERT_EQUAL(d->ranges->ranges[0]->fingerprint->count, 123456789012ULL);
  CU_ASSERT_EQUAL(d->ranges->ranges[1]->summary_case,
                  LIPSYNC__RANGE__SUMMARY_ITEMS);
  const Lipsync__Item *got = d->ranges->ranges[1]->items->items[0];
  CU_ASSERT_PTR_NOT_NULL_FATAL(got->version);
  CU_ASSERT_EQUAL(got->version->clock, 0x0123456789abcdefULL);
  CU_ASSERT_TRUE(bin_eq(got->version->site, U2, 16));
  CU_ASSERT_TRUE(got->deleted);
  CU_ASSERT_PTR_NULL(got->base_version);
  frame_reader_reset(&r);
  arena_reset(&a);

  ProtobufCBinaryData uu[2];
  bin(&uu[0], U1, 16);
  bin(&uu[1], U2, 16);
  Lipsync__Need nd = LIPSYNC__NEED__INIT;
  nd.table = 1;
  nd.n_uuids = 2;
  nd.uuids = uu;
  f.body_case = LIPSYNC__FRAME__BODY_NEED;
  f.need = &nd;
  d = round_trip(&f, 4, &r, &a);
  CU_ASSERT_EQUAL(d->need->table, 1);
  CU_ASSERT_EQUAL(d->need->n_uuids, 2);
  CU_ASSERT_TRUE(bin_eq(d->need->uuids[1], U2, 16));
  frame_reader_reset(&r);
  arena_reset(&a);

  Lipsync__TableState st = LIPSYNC__TABLE_STATE__INIT;
  st.count = 42;
  st.conflicts = 2;
  bin(&st.fingerprint, U2, 16);
  Lipsync__TableState *stp[] = {&st};
  Lipsync__Verify vf = LIPSYNC__VERIFY__INIT;
  vf.n_tables = 1;
  vf.tables = stp;
  f.body_case = LIPSYNC__FRAME__BODY_VERIFY;
  f.verify = &vf;
  d = round_trip(&f, 9, &r, &a);
  CU_ASSERT_EQUAL(d->verify->tables[0]->count, 42);
  CU_ASSERT_EQUAL(d->verify->tables[0]->conflicts, 2);
  CU_ASSERT_TRUE(bin_eq(d->verify->tables[0]->fingerprint, U2, 16));
  frame_reader_free(&r);
  arena_free(&a);
}

/* Every value kind, at its edges, survives the wire bit for bit. */
static void test_rows_round_trip(void) {
  frame_reader r;
  arena a;
  frame_reader_init(&r);
  arena_init(&a);
  static const char text[] = "a\0b\xc3\xbc";
  Lipsync__Value v[9];
  Lipsync__Value *vp[9];
  for (int i = 0; i < 9; i++) {
    lipsync__value__init(&v[i]);
    vp[i] = &v[i];
  }
  v[0].kind_case = LIPSYNC__VALUE__KIND_NULL;
  v[0].null = 1;
  v[1].kind_case = LIPSYNC__VALUE__KIND_INTEGER;
  v[1].integer = INT64_MIN;
  v[2].kind_case = LIPSYNC__VALUE__KIND_INTEGER;
  v[2].integer = INT64_MAX;
  v[3].kind_case = LIPSYNC__VALUE__KIND_REAL;
  v[3].real = -0.0;
  v[4].kind_case = LIPSYNC__VALUE__KIND_REAL;
  v[4].real = 1.0 / 0.0;
  v[5].kind_case = LIPSYNC__VALUE__KIND_TEXT;
  bin(&v[5].text, text, sizeof text - 1);
  v[6].kind_case = LIPSYNC__VALUE__KIND_TEXT; /* empty text */
  v[7].kind_case = LIPSYNC__VALUE__KIND_BLOB; /* empty blob */
  v[8].kind_case = LIPSYNC__VALUE__KIND_INTEGER;
  v[8].integer = 0; /* a zero in a oneof is still sent */
  Lipsync__Row row = LIPSYNC__ROW__INIT;
  bin(&row.uuid, U1, 16);
  row.n_values = 9;
  row.values = vp;
  Lipsync__Row *rowp[] = {&row};
  Lipsync__Rows rows = LIPSYNC__ROWS__INIT;
  rows.n_rows = 1;
  rows.rows = rowp;
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  f.body_case = LIPSYNC__FRAME__BODY_ROWS;
  f.rows = &rows;
  Lipsync__Frame *d = round_trip(&f, 1, &r, &a);
  Lipsync__Row *o = d->rows->rows[0];
  CU_ASSERT_EQUAL_FATAL(o->n_values, 9);
  CU_ASSERT_EQUAL(o->values[0]->kind_case, LIPSYNC__VALUE__KIND_NULL);
  CU_ASSERT_EQUAL(o->values[1]->integer, INT64_MIN);
  CU_ASSERT_EQUAL(o->values[2]->integer, INT64_MAX);
  double z = o->values[3]->real;
  CU_ASSERT_EQUAL(memcmp(&z, &v[3].real, sizeof z), 0);
  CU_ASSERT_EQUAL(o->values[4]->real, 1.0 / 0.0);
  CU_ASSERT_TRUE(bin_eq(o->values[5]->text, text, sizeof text - 1));
  CU_ASSERT_EQUAL(o->values[6]->kind_case, LIPSYNC__VALUE__KIND_TEXT);
  CU_ASSERT_EQUAL(o->values[6]->text.len, 0);
  CU_ASSERT_EQUAL(o->values[7]->kind_case, LIPSYNC__VALUE__KIND_BLOB);
  CU_ASSERT_EQUAL(o->values[8]->kind_case, LIPSYNC__VALUE__KIND_INTEGER);
  frame_reader_free(&r);
  arena_free(&a);
}

static void test_oversized_prefix(void) {
  frame_reader r;
  frame_reader_init(&r);
  int complete;
  uint8_t hdr[4] = {0x01, 0x00, 0x00, 0x01}; /* 16 MiB + 1 */
  CU_ASSERT_EQUAL(frame_reader_feed(&r, hdr, 4, &complete),
                  LIPSYNC_ERR_FRAME_TOO_LARGE);
  frame_reader_reset(&r);
  uint8_t max[4] = {0xff, 0xff, 0xff, 0xff};
  CU_ASSERT_EQUAL(frame_reader_feed(&r, max, 4, &complete),
                  LIPSYNC_ERR_FRAME_TOO_LARGE);
  frame_reader_reset(&r);
  /* Exactly the maximum is allowed: the reader waits for the body. */
  uint8_t ok[4] = {0x01, 0x00, 0x00, 0x00};
  CU_ASSERT_EQUAL(frame_reader_feed(&r, ok, 4, &complete), 4);
  CU_ASSERT_FALSE(complete);
  frame_reader_free(&r);
}

static void test_truncated_and_garbage(void) {
  frame_reader r;
  arena a;
  frame_reader_init(&r);
  arena_init(&a);
  int complete;
  /* Half a header, then half a body: never complete, always partial. */
  uint8_t part[] = {0, 0, 0, 10, 1, 2, 3};
  CU_ASSERT_FALSE(frame_reader_partial(&r));
  CU_ASSERT_EQUAL(frame_reader_feed(&r, part, 2, &complete), 2);
  CU_ASSERT_FALSE(complete);
  CU_ASSERT_TRUE(frame_reader_partial(&r));
  CU_ASSERT_EQUAL(frame_reader_feed(&r, part + 2, 5, &complete), 5);
  CU_ASSERT_FALSE(complete);
  frame_reader_reset(&r);

  /* A body that is not protobuf: a truncated length-delimited field. */
  uint8_t garbage[] = {0, 0, 0, 4, 0x0a, 0x7f, 0x01, 0x02};
  CU_ASSERT_EQUAL(frame_reader_feed(&r, garbage, sizeof garbage, &complete),
                  (ssize_t)sizeof garbage);
  CU_ASSERT_TRUE(complete);
  CU_ASSERT_PTR_NULL(frame_reader_decode(&r, &a));
  frame_reader_reset(&r);
  arena_reset(&a);

  /* Two frames in one buffer: the reader stops at the end of the first. */
  uint8_t two[] = {0, 0, 0, 2, 0x52, 0x00, 0, 0, 0, 2, 0x62, 0x00};
  ssize_t used = frame_reader_feed(&r, two, sizeof two, &complete);
  CU_ASSERT_EQUAL(used, 6);
  CU_ASSERT_TRUE(complete);
  Lipsync__Frame *d = frame_reader_decode(&r, &a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(d->body_case, LIPSYNC__FRAME__BODY_END_TURN);
  frame_reader_reset(&r);
  arena_reset(&a);
  CU_ASSERT_EQUAL(frame_reader_feed(&r, two + 6, 6, &complete), 6);
  d = frame_reader_decode(&r, &a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(d->body_case, LIPSYNC__FRAME__BODY_COMMITTED);
  frame_reader_reset(&r);
  arena_reset(&a);

  /* An unknown body field decodes, with no body set. */
  uint8_t unknown[] = {0, 0, 0, 3, 0xfa, 0x01, 0x00}; /* field 31, empty */
  frame_reader_feed(&r, unknown, sizeof unknown, &complete);
  d = frame_reader_decode(&r, &a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(d->body_case, LIPSYNC__FRAME__BODY__NOT_SET);
  frame_reader_reset(&r);
  arena_reset(&a);

  /* A field numbered 0, which protobuf forbids: refused as undecodable
   * when its tag is the byte 0x00 and when it is the varint 0x80 0x00 (at
   * the top, and inside an embedded message: Need{uuids, field 0}). */
  uint8_t zero[][12] = {
      {0, 0, 0, 4, 0x52, 0x00, 0x00, 0x05},
      {0, 0, 0, 5, 0x52, 0x00, 0x80, 0x00, 0x05},
      {0, 0, 0, 8, 0x4a, 0x06, 0x12, 0x01, 0xaa, 0x80, 0x00, 0x07}};
  size_t zero_len[] = {8, 9, 12};
  for (size_t i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL(frame_reader_feed(&r, zero[i], zero_len[i], &complete),
                    (ssize_t)zero_len[i]);
    CU_ASSERT_TRUE(complete);
    CU_ASSERT_PTR_NULL(frame_reader_decode(&r, &a));
    frame_reader_reset(&r);
    arena_reset(&a);
  }
  /* The same Need without the field 0 decodes. */
  uint8_t need[] = {0, 0, 0, 5, 0x4a, 0x03, 0x12, 0x01, 0xaa};
  frame_reader_feed(&r, need, sizeof need, &complete);
  d = frame_reader_decode(&r, &a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_EQUAL(d->body_case, LIPSYNC__FRAME__BODY_NEED);
  frame_reader_free(&r);
  arena_free(&a);
}

static void test_encode_too_large(void) {
  /* A frame whose encoding exceeds the maximum is refused, not sent. */
  size_t len = LIPSYNC_MAX_FRAME;
  uint8_t *big = calloc(1, len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(big);
  Lipsync__Value v = LIPSYNC__VALUE__INIT;
  v.kind_case = LIPSYNC__VALUE__KIND_BLOB;
  v.blob.data = big;
  v.blob.len = len;
  Lipsync__Value *vp[] = {&v};
  Lipsync__Row row = LIPSYNC__ROW__INIT;
  row.n_values = 1;
  row.values = vp;
  Lipsync__Row *rowp[] = {&row};
  Lipsync__Rows rows = LIPSYNC__ROWS__INIT;
  rows.n_rows = 1;
  rows.rows = rowp;
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  f.body_case = LIPSYNC__FRAME__BODY_ROWS;
  f.rows = &rows;
  bytebuf out = {0};
  CU_ASSERT_EQUAL(frame_append(&out, &f), LIPSYNC_ERR_FRAME_TOO_LARGE);
  CU_ASSERT_EQUAL(out.len, 0);
  bytebuf_free(&out);
  free(big);
}

int register_frame_tests(void) {
  static const tu_test tests[] = {
      {"handshake messages round trip", test_handshake_round_trip},
      {"table and turn messages round trip", test_table_messages_round_trip},
      {"rows with edge values round trip", test_rows_round_trip},
      {"oversized length prefix", test_oversized_prefix},
      {"truncated, garbage, back-to-back, unknown and field-0 frames",
       test_truncated_and_garbage},
      {"encoding over the maximum is refused", test_encode_too_large},
      {NULL, NULL}};
  return tu_add_suite("frame", tests);
}
