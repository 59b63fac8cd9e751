/* canon_test.c: UUID text forms, UTF-8 validation, canonical encoding at
 * the edges and fingerprint arithmetic (src/canon.c). The spec's own
 * vectors are checked by vectors_test.c. */
#include "canon.h"
#include "test_util.h"

#include <CUnit/CUnit.h>
#include <math.h>
#include <string.h>

static void test_uuid_round_trip(void) {
  uint8_t u[16], back[16];
  char text[37];
  for (int i = 0; i < 100; i++) {
    CU_ASSERT_EQUAL(lipsync_uuid_generate(u), 0);
    CU_ASSERT_EQUAL(u[6] >> 4, 4);      /* version 4 */
    CU_ASSERT_EQUAL(u[8] & 0xc0, 0x80); /* RFC 9562 variant */
    lipsync_uuid_format(u, text);
    CU_ASSERT_EQUAL(strlen(text), 36);
    CU_ASSERT_EQUAL(lipsync_uuid_parse(text, 36, back), 0);
    CU_ASSERT_EQUAL(memcmp(u, back, 16), 0);
  }
  const char *known = "00112233-4455-6677-8899-aabbccddeeff";
  CU_ASSERT_EQUAL(lipsync_uuid_parse(known, 36, u), 0);
  for (int i = 0; i < 16; i++)
    CU_ASSERT_EQUAL(u[i], (uint8_t)(i * 0x11));
  lipsync_uuid_format(u, text);
  CU_ASSERT_STRING_EQUAL(text, known);
}

static void test_uuid_rejects(void) {
  uint8_t u[16];
  const char *bad[] = {
      "00112233-4455-6677-8899-AABBCCDDEEFF", /* uppercase */
      "00112233-4455-6677-8899-aabbccddeef",  /* short */
      "00112233-4455-6677-8899-aabbccddeeff0",
      "0011223304455-6677-8899-aabbccddeeff", /* dash missing */
      "00112233-4455-6677-8899-aabbccddeefg",
      "{0112233-4455-6677-8899-aabbccddeeff",
      "00112233-4455-6677-8899-aabbccddee\xff\xff",
      "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CU_ASSERT_EQUAL(lipsync_uuid_parse(bad[i], strlen(bad[i]), u),
                    LIPSYNC_ERR_INVALID_VALUE);
  CU_ASSERT_EQUAL(lipsync_uuid_parse(NULL, 36, u), LIPSYNC_ERR_INVALID_VALUE);
  /* A NUL inside is caught by the explicit length. */
  CU_ASSERT_EQUAL(
      lipsync_uuid_parse("00112233-4455-6677-8899-aabbccdd\0eff", 36, u),
      LIPSYNC_ERR_INVALID_VALUE);
}

static void test_uuid_text_order_is_byte_order(void) {
  uint8_t a[16], b[16];
  char ta[37], tb[37];
  for (int i = 0; i < 1000; i++) {
    lipsync_uuid_generate(a);
    lipsync_uuid_generate(b);
    lipsync_uuid_format(a, ta);
    lipsync_uuid_format(b, tb);
    int bytes = memcmp(a, b, 16), text = strcmp(ta, tb);
    CU_ASSERT_EQUAL(bytes < 0, text < 0);
    CU_ASSERT_EQUAL(bytes == 0, text == 0);
  }
}

static void test_utf8(void) {
  struct {
    const char *s;
    size_t len;
    bool ok;
  } cases[] = {
      {"", 0, true},
      {"abc", 3, true},
      {"a\0b", 3, true},                     /* NUL is a character */
      {"Z\xc3\xbcrich", 7, true},            /* ü */
      {"\xe6\x9d\xb1\xe4\xba\xac", 6, true}, /* 東京 */
      {"\xf0\x9f\x98\x80", 4, true},         /* U+1F600 */
      {"\xf4\x8f\xbf\xbf", 4, true},         /* U+10FFFF */
      {"\xc3", 1, false},                    /* truncated */
      {"\xe6\x9d", 2, false},
      {"\x80", 1, false},             /* lone continuation */
      {"\xc0\xaf", 2, false},         /* overlong '/' */
      {"\xe0\x80\xaf", 3, false},     /* overlong */
      {"\xed\xa0\x80", 3, false},     /* surrogate U+D800 */
      {"\xf4\x90\x80\x80", 4, false}, /* past U+10FFFF */
      {"\xff", 1, false},
      {"ok\xc3(", 4, false}, /* bad continuation */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    CU_ASSERT_EQUAL(canon_utf8_valid((const uint8_t *)cases[i].s, cases[i].len),
                    cases[i].ok);
}

static void test_value_edges(void) {
  uint8_t out[32];
  lipsync_value v = tu_real(-0.0);
  CU_ASSERT_EQUAL(canon_value_encode(&v, out), 9);
  CU_ASSERT_EQUAL(out[1], 0x80); /* the sign bit survives */
  lipsync_value z = tu_real(0.0);
  uint8_t out2[32];
  canon_value_encode(&z, out2);
  CU_ASSERT_NOT_EQUAL(memcmp(out, out2, 9), 0);
  /* Every NaN is one value. */
  lipsync_value n1 = tu_real(NAN), n2 = tu_real(-NAN);
  canon_value_encode(&n1, out);
  canon_value_encode(&n2, out2);
  CU_ASSERT_EQUAL(memcmp(out, out2, 9), 0);
  CU_ASSERT_EQUAL(out[1], 0x7f);
  CU_ASSERT_EQUAL(out[2], 0xf8);
  /* TEXT and BLOB with the same bytes differ by their tag. */
  lipsync_value t = tu_textn("ab", 2), b = tu_blob("ab", 2);
  CU_ASSERT_EQUAL(canon_value_encode(&t, out), 7);
  CU_ASSERT_EQUAL(canon_value_encode(&b, out2), 7);
  CU_ASSERT_EQUAL(out[0], 3);
  CU_ASSERT_EQUAL(out2[0], 4);
  CU_ASSERT_EQUAL(memcmp(out + 1, out2 + 1, 6), 0);
}

/* The same values in another row order, or under another UUID, give
 * another digest: the UUID and the order are part of the row. */
static void test_row_digest_covers_uuid_and_order(void) {
  lipsync_value v1[2] = {tu_int(1), tu_text("x")};
  lipsync_value v2[2] = {tu_text("x"), tu_int(1)};
  lipsync_row a = {.uuid = {0}, .nvalues = 2, .values = v1};
  lipsync_row b = {.uuid = {0}, .nvalues = 2, .values = v2};
  lipsync_row c = {.uuid = {1}, .nvalues = 2, .values = v1};
  uint8_t da[16], db[16], dc[16];
  lipsync_row_digest(&a, da);
  lipsync_row_digest(&b, db);
  lipsync_row_digest(&c, dc);
  CU_ASSERT_NOT_EQUAL(memcmp(da, db, 16), 0);
  CU_ASSERT_NOT_EQUAL(memcmp(da, dc, 16), 0);
}

static void test_fingerprint_merge_and_carry(void) {
  uint8_t d[3][16];
  memset(d, 0, sizeof d);
  memset(d[0], 0xff, 16);
  d[1][15] = 1; /* d0 + d1 wraps to zero */
  d[2][7] = 0xff;
  d[2][8] = 0x01;
  canon_fp all, part, rest;
  canon_fp_init(&all);
  canon_fp_init(&part);
  canon_fp_init(&rest);
  for (int i = 0; i < 3; i++)
    canon_fp_add(&all, d[i]);
  canon_fp_add(&part, d[0]);
  canon_fp_add(&rest, d[1]);
  canon_fp_add(&rest, d[2]);
  canon_fp_merge(&part, &rest);
  CU_ASSERT_EQUAL(part.hi, all.hi);
  CU_ASSERT_EQUAL(part.lo, all.lo);
  CU_ASSERT_EQUAL(part.count, 3);
  /* d0 + d1 = 2^128 = 0 mod 2^128, so the sum is d2 alone. */
  CU_ASSERT_EQUAL(all.hi, 0xff);
  CU_ASSERT_EQUAL(all.lo, 0x0100000000000000ULL);
  canon_fp_sub(&all, d[2]);
  CU_ASSERT_EQUAL(all.hi, 0);
  CU_ASSERT_EQUAL(all.lo, 0);
  CU_ASSERT_EQUAL(all.count, 2);
}

int register_canon_tests(void) {
  static const tu_test tests[] = {
      {"UUID format and parse round trip", test_uuid_round_trip},
      {"UUID text that is not canonical is refused", test_uuid_rejects},
      {"UUID text order equals byte order", test_uuid_text_order_is_byte_order},
      {"UTF-8 validation", test_utf8},
      {"canonical values at the edges", test_value_edges},
      {"row digest covers UUID and column order",
       test_row_digest_covers_uuid_and_order},
      {"fingerprint merge, carry and removal",
       test_fingerprint_merge_and_carry},
      {NULL, NULL}};
  return tu_add_suite("canon", tests);
}
