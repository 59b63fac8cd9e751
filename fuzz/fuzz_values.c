/*
 * fuzz_values.c: canonical values and digests (ref/src/canon.c) and the
 * canonical forms of typed columns (ref/src/pg_types.c, spec 7.4) on
 * arbitrary input.
 *
 * Input: one byte picks what is tried, the rest is its argument. Each
 * function is held to a small model written here from the spec, not from
 * the code, or to a round trip:
 *
 *   row      values and a row from the input: the encoding has
 *            canon_value_size() bytes and is spec 7.2's; the row and item
 *            digests are SHA-256 of spec 8.1's bytes; fingerprints add
 *            and remove in any order
 *   utf8     canon_utf8_valid() against the table of well-formed
 *            sequences of Unicode (RFC 3629)
 *   decimal  pgtype_decimal_valid() against LS-FORM-3 and numeric(p,s)
 *   date     pgtype_date_valid() against LS-FORM-4 and PostgreSQL's range
 *   stamp    pgtype_timestamp_valid() against LS-FORM-5 and LS-FORM-6
 *   json     pgtype_json_valid() against a recursive reading of RFC 8259
 *            as PostgreSQL's json and jsonb take it; and a valid text stays
 *            valid inside an array, an object and whitespace
 *   uuid     lipsync_uuid_parse() against LS-FORM-9, and its round trip
 *            with lipsync_uuid_format()
 *   pgvalue  pgtype_check() of a value for every column kind: the reason
 *            fits its buffer; a value it accepts goes into COPY text that
 *            reads back as the value; pgtype_from_binary() gives values of
 *            the column's kind that pgtype_check() accepts
 *   double   pgtype_format_double() reads back as the same double
 */
#include "canon.h"
#include "fuzz_util.h"
#include "lipsync.h"
#include "pg_types.h"

#include <float.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* values, rows, digests                                                */
/* ------------------------------------------------------------------ */

#define MAX_VALUES 64

static uint64_t read_u64(fuzz_input *in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | fuzz_byte(in);
  return v;
}

/* The next value of the input; TEXT and BLOB point into it. */
static lipsync_value read_value(fuzz_input *in) {
  lipsync_value v;
  uint8_t kind = fuzz_byte(in);
  memset(&v, 0, sizeof v);
  switch (kind % 6) {
  case 1:
    v.type = LIPSYNC_INTEGER;
    v.u.integer = (int64_t)read_u64(in);
    break;
  case 2: {
    uint64_t bits = read_u64(in);
    v.type = LIPSYNC_REAL;
    memcpy(&v.u.real, &bits, sizeof bits);
    break;
  }
  case 3:
  case 4: {
    size_t n = fuzz_byte(in) % 48;
    if (n > in->len)
      n = in->len;
    v.type = kind % 6 == 3 ? LIPSYNC_TEXT : LIPSYNC_BLOB;
    v.u.bytes.data = in->data;
    v.u.bytes.len = n;
    in->data += n;
    in->len -= n;
    break;
  }
  case 5: /* a type no peer sends: encoded as NULL */
    v.type = (lipsync_type)(5 + kind / 6 % 100);
    break;
  default:
    v.type = LIPSYNC_NULL;
  }
  return v;
}

/* A type modifier: none, a small one (lengths, precisions of time), one
 * of numeric(p,s), or any. */
static int32_t read_typmod(fuzz_input *in) {
  uint8_t how = fuzz_byte(in);
  switch (how % 4) {
  case 1:
    return (int32_t)(fuzz_u16(in) % 70) - 1;
  case 2: {
    int32_t precision = fuzz_byte(in) % 40;
    int32_t scale = (int8_t)fuzz_byte(in);
    return (precision << 16 | (scale & 0x7FF)) + 4;
  }
  case 3:
    return (int32_t)(read_u64(in) >> 32);
  default:
    return -1;
  }
}

static void put_be(bytebuf *b, uint64_t v, int bytes) {
  uint8_t p[8];
  for (int i = 0; i < bytes; i++)
    p[i] = (uint8_t)(v >> 8 * (bytes - 1 - i));
  FUZZ_CHECK(bytebuf_append(b, p, (size_t)bytes) == 0);
}

/* Spec 7.2: a type byte, then the value. */
static void model_value(bytebuf *b, const lipsync_value *v) {
  uint8_t type = (uint8_t)v->type;
  switch (v->type) {
  case LIPSYNC_INTEGER:
    put_be(b, type, 1);
    put_be(b, (uint64_t)v->u.integer, 8);
    break;
  case LIPSYNC_REAL: {
    uint64_t bits = UINT64_C(0x7FF8000000000000); /* every NaN */
    if (!isnan(v->u.real))
      memcpy(&bits, &v->u.real, sizeof bits);
    put_be(b, type, 1);
    put_be(b, bits, 8);
    break;
  }
  case LIPSYNC_TEXT:
  case LIPSYNC_BLOB:
    put_be(b, type, 1);
    put_be(b, v->u.bytes.len, 4);
    FUZZ_CHECK(bytebuf_append(b, v->u.bytes.data, v->u.bytes.len) == 0);
    break;
  default:
    put_be(b, 0, 1);
  }
}

static void sha256_16(const bytebuf *b, uint8_t out[LIPSYNC_DIGEST_LEN]) {
  uint8_t full[EVP_MAX_MD_SIZE];
  FUZZ_CHECK(EVP_Digest(b->data, b->len, full, NULL, EVP_sha256(), NULL));
  memcpy(out, full, LIPSYNC_DIGEST_LEN);
}

static void fuzz_row(fuzz_input *in) {
  lipsync_value values[MAX_VALUES];
  lipsync_row row;
  bytebuf want = {0}, one = {0};
  uint8_t digest[LIPSYNC_DIGEST_LEN], expect[LIPSYNC_DIGEST_LEN];
  canon_hasher h;

  memset(&row, 0, sizeof row);
  for (int i = 0; i < LIPSYNC_UUID_LEN; i++)
    row.uuid[i] = fuzz_byte(in);
  row.version.clock = read_u64(in);
  for (int i = 0; i < LIPSYNC_SITE_LEN; i++)
    row.version.site[i] = fuzz_byte(in);
  FUZZ_CHECK(bytebuf_append(&want, row.uuid, LIPSYNC_UUID_LEN) == 0);
  while (fuzz_more(in) && row.nvalues < MAX_VALUES) {
    lipsync_value *v = &values[row.nvalues++];
    *v = read_value(in);
    /* Exactly canon_value_size() bytes, so ASan sees a byte too many. */
    size_t size = canon_value_size(v);
    uint8_t *enc = malloc(size);
    FUZZ_CHECK(enc != NULL);
    FUZZ_CHECK(canon_value_encode(v, enc) == size);
    one.len = 0;
    model_value(&one, v);
    FUZZ_CHECKF(one.len == size && memcmp(one.data, enc, size) == 0,
                "value %zu (type %d) is not encoded as spec 7.2 says",
                row.nvalues - 1, (int)v->type);
    free(enc);
  }
  row.values = values;
  put_be(&want, row.nvalues, 4);
  for (size_t i = 0; i < row.nvalues; i++)
    model_value(&want, &values[i]);

  FUZZ_CHECK(canon_hasher_init(&h) == 0);
  FUZZ_CHECK(canon_row_digest(&h, &row, digest) == 0);
  sha256_16(&want, expect);
  FUZZ_CHECKF(memcmp(digest, expect, sizeof digest) == 0, "row digest");
  lipsync_row_digest(&row, expect);
  FUZZ_CHECK(memcmp(digest, expect, sizeof digest) == 0);

  /* The item digest: uuid, u64be(clock), site, u8(deleted). */
  bool deleted = row.version.clock & 1;
  want.len = 0;
  FUZZ_CHECK(bytebuf_append(&want, row.uuid, LIPSYNC_UUID_LEN) == 0);
  put_be(&want, row.version.clock, 8);
  FUZZ_CHECK(bytebuf_append(&want, row.version.site, LIPSYNC_SITE_LEN) == 0);
  put_be(&want, deleted, 1);
  sha256_16(&want, expect);
  FUZZ_CHECK(canon_item_digest(&h, row.uuid, &row.version, deleted, digest) ==
             0);
  FUZZ_CHECKF(memcmp(digest, expect, sizeof digest) == 0, "item digest");

  /* Fingerprints: the digests of every prefix of the row, added in one
   * order and removed in another, or merged and unmerged, cancel. */
  canon_fp all, part, zero;
  uint8_t digests[MAX_VALUES + 1][LIPSYNC_DIGEST_LEN];
  uint8_t fa[LIPSYNC_DIGEST_LEN], fb[LIPSYNC_DIGEST_LEN];
  lipsync_summary sum;
  size_t n = row.nvalues;
  canon_fp_init(&all);
  canon_fp_init(&part);
  canon_fp_init(&zero);
  for (size_t i = 0; i <= n; i++) {
    row.nvalues = i;
    FUZZ_CHECK(canon_row_digest(&h, &row, digests[i]) == 0);
    canon_fp_add(&all, digests[i]);
    if (i % 2)
      canon_fp_add(&part, digests[i]);
  }
  canon_fp back;
  canon_fp_store(&all, &sum);
  canon_fp_load(&back, &sum);
  FUZZ_CHECK(back.hi == all.hi && back.lo == all.lo && back.count == all.count);
  canon_fp_unmerge(&all, &part);
  for (size_t i = n + 1; i-- > 0;)
    if (i % 2 == 0)
      canon_fp_sub(&all, digests[i]);
  FUZZ_CHECKF(all.hi == 0 && all.lo == 0 && all.count == 0,
              "fingerprint sums do not cancel");
  canon_fp_merge(&all, &part);
  canon_fp_final(&all, fa);
  canon_fp_final(&part, fb);
  FUZZ_CHECK(memcmp(fa, fb, sizeof fa) == 0);
  canon_fp_final(&zero, fb);
  FUZZ_CHECK(part.count == 0 || memcmp(fa, fb, sizeof fa) != 0);

  canon_hasher_free(&h);
  bytebuf_free(&want);
  bytebuf_free(&one);
}

/* ------------------------------------------------------------------ */
/* UTF-8                                                                */
/* ------------------------------------------------------------------ */

/* The well-formed byte sequences of Unicode's table 3-7. */
static bool model_utf8(const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = p[i], lo = 0x80, hi = 0xBF;
    size_t len;
    if (c <= 0x7F) {
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      lo = c == 0xE0 ? 0xA0 : 0x80;
      hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      lo = c == 0xF0 ? 0x90 : 0x80;
      hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
      return false;
    }
    if (n - i < len || p[i + 1] < lo || p[i + 1] > hi)
      return false;
    for (size_t k = 2; k < len; k++)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF)
        return false;
    i += len;
  }
  return true;
}

static void fuzz_utf8(const uint8_t *p, size_t n) {
  FUZZ_CHECKF(canon_utf8_valid(p, n) == model_utf8(p, n),
              "canon_utf8_valid says %d", canon_utf8_valid(p, n));
}

/* ------------------------------------------------------------------ */
/* decimal                                                              */
/* ------------------------------------------------------------------ */

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

static bool text_is(const char *p, size_t n, const char *lit) {
  return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

/* A decimal split as LS-FORM-3 reads it. */
typedef struct decimal {
  bool special, neg, zero;
  size_t int_at, int_len, frac_at, frac_len;
} decimal;

static bool model_decimal_parse(const char *p, size_t n, decimal *d) {
  size_t i = 0;
  memset(d, 0, sizeof *d);
  if (text_is(p, n, "NaN") || text_is(p, n, "Infinity") ||
      text_is(p, n, "-Infinity")) {
    d->special = true;
    return true;
  }
  d->neg = n > 0 && p[0] == '-';
  i = d->neg;
  d->int_at = i;
  while (i < n && is_digit(p[i]))
    i++;
  d->int_len = i - d->int_at;
  if (d->int_len == 0 || (d->int_len > 1 && p[d->int_at] == '0'))
    return false;
  if (i < n && p[i] == '.') {
    d->frac_at = ++i;
    while (i < n && is_digit(p[i]))
      i++;
    d->frac_len = i - d->frac_at;
    if (d->frac_len == 0)
      return false;
  }
  if (i != n)
    return false;
  d->zero = true;
  for (size_t k = d->int_at; k < n; k++)
    if (is_digit(p[k]) && p[k] != '0')
      d->zero = false;
  /* numeric's own limits: digits before and after the point. */
  return !(d->neg && d->zero) && d->int_len <= 131072 && d->frac_len <= 16383;
}

/* numeric(p,s) keeps the value unchanged: rounding it to s places leaves
 * it as written (exactly max(s,0) decimals; for s < 0, a multiple of
 * 10^-s), and its absolute value is below 10^(p-s). */
static bool model_decimal_typmod(const char *p, const decimal *d,
                                 int32_t typmod) {
  int32_t t = typmod - 4;
  int precision = (t >> 16) & 0xFFFF;
  int scale = ((t & 0x7FF) ^ 1024) - 1024;
  if (d->special)
    return p[0] == 'N'; /* NaN fits any numeric(p,s), infinities none */
  if (d->frac_len != (size_t)(scale > 0 ? scale : 0))
    return false;
  if (d->zero)
    return true;
  if (scale < 0) {
    size_t tail = (size_t)-scale;
    if (d->int_len <= tail)
      return false;
    for (size_t k = d->int_len - tail; k < d->int_len; k++)
      if (p[d->int_at + k] != '0')
        return false;
  }
  /* |v| < 10^e exactly when e is above the place of its first digit. */
  long first; /* 10^first is the place of the first nonzero digit */
  if (d->int_len > 1 || p[d->int_at] != '0') {
    first = (long)d->int_len - 1;
  } else {
    size_t k = 0;
    while (p[d->frac_at + k] == '0')
      k++;
    first = -(long)k - 1;
  }
  return first < (long)precision - scale;
}

static void fuzz_decimal(fuzz_input *in) {
  char why[128];
  int32_t typmod = read_typmod(in);
  const char *p = (const char *)in->data;
  size_t n = in->len;
  decimal d;
  bool plain = model_decimal_parse(p, n, &d);
  FUZZ_CHECKF(pgtype_decimal_valid(p, n, -1, why, sizeof why) == plain,
              "decimal without typmod: model says %d", plain);
  bool got = pgtype_decimal_valid(p, n, typmod, why, sizeof why);
  bool want = typmod < 4 ? plain : plain && model_decimal_typmod(p, &d, typmod);
  FUZZ_CHECKF(got == want, "decimal with typmod %d: model says %d", typmod,
              want);
}

/* ------------------------------------------------------------------ */
/* dates and timestamps                                                 */
/* ------------------------------------------------------------------ */

/* Days from 1970-01-01 of the proleptic Gregorian date y-m-d, y counted
 * astronomically (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  *d = (int)(doy - (153 * mp + 2) / 5 + 1);
  *m = (int)(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

/* Reads exactly |count| digits. */
static bool take_digits(const char *p, size_t n, size_t *i, size_t count,
                        int *out) {
  *out = 0;
  for (size_t k = 0; k < count; k++, (*i)++) {
    if (*i >= n || !is_digit(p[*i]))
      return false;
    *out = *out * 10 + (p[*i] - '0');
  }
  return true;
}

/* Y-MM-DD of LS-FORM-4 at the start of |p|, as written. */
static bool model_read_date(const char *p, size_t n, size_t *i, int64_t *y,
                            int *m, int *d) {
  size_t at = *i;
  *y = 0;
  while (*i < n && is_digit(p[*i])) {
    if (*y > INT64_C(100000000000))
      return false; /* far beyond any range */
    *y = *y * 10 + (p[(*i)++] - '0');
  }
  size_t len = *i - at;
  if (len < 4 || (len > 4 && p[at] == '0') || *y == 0)
    return false;
  return *i < n && p[(*i)++] == '-' && take_digits(p, n, i, 2, m) && *i < n &&
         p[(*i)++] == '-' && take_digits(p, n, i, 2, d);
}

static bool read_bc(const char *p, size_t n, size_t *i) {
  if (n - *i >= 3 && memcmp(p + *i, " BC", 3) == 0) {
    *i += 3;
    return true;
  }
  return false;
}

/* A real day of the proleptic Gregorian calendar, from 4714-11-24 BC
 * (Julian day 0, PostgreSQL's first) to the last day of |max_year|. */
static bool model_day_ok(int64_t y, int m, int d, bool bc, int64_t max_year) {
  int64_t astro = bc ? 1 - y : y, y2;
  int m2, d2;
  if (m < 1 || m > 12 || d < 1 || d > 31)
    return false;
  int64_t z = days_from_civil(astro, m, d);
  civil_from_days(z, &y2, &m2, &d2);
  if (y2 != astro || m2 != m || d2 != d)
    return false; /* the day does not exist: it rolled over */
  return z >= days_from_civil(-4713, 11, 24) &&
         z <= days_from_civil(max_year, 12, 31);
}

static bool model_date(const char *p, size_t n) {
  int64_t y;
  int m, d;
  size_t i = 0;
  if (text_is(p, n, "infinity") || text_is(p, n, "-infinity"))
    return true;
  if (!model_read_date(p, n, &i, &y, &m, &d))
    return false;
  bool bc = read_bc(p, n, &i);
  return i == n && model_day_ok(y, m, d, bc, 5874897);
}

static bool model_timestamp(const char *p, size_t n, bool tz, int typmod) {
  int64_t y;
  int m, d, hh, mi, ss;
  size_t i = 0, frac = 0;
  if (text_is(p, n, "infinity") || text_is(p, n, "-infinity"))
    return true;
  if (!model_read_date(p, n, &i, &y, &m, &d) || i >= n || p[i++] != ' ' ||
      !take_digits(p, n, &i, 2, &hh) || i >= n || p[i++] != ':' ||
      !take_digits(p, n, &i, 2, &mi) || i >= n || p[i++] != ':' ||
      !take_digits(p, n, &i, 2, &ss))
    return false;
  if (i < n && p[i] == '.') {
    i++;
    while (i < n && is_digit(p[i]) && frac < 7)
      frac++, i++;
    if (frac < 1 || frac > 6 || p[i - 1] == '0')
      return false;
  }
  if (tz) {
    if (n - i < 3 || memcmp(p + i, "+00", 3) != 0)
      return false;
    i += 3;
  }
  bool bc = read_bc(p, n, &i);
  return i == n && hh <= 23 && mi <= 59 && ss <= 59 &&
         model_day_ok(y, m, d, bc, 294276) &&
         (typmod < 0 || frac <= (size_t)typmod);
}

static void fuzz_date(const char *p, size_t n) {
  char why[128];
  bool want = model_date(p, n);
  FUZZ_CHECKF(pgtype_date_valid(p, n, why, sizeof why) == want,
              "date: model says %d", want);
}

static void fuzz_timestamp(fuzz_input *in) {
  char why[128];
  uint8_t flags = fuzz_byte(in);
  bool tz = flags & 1;
  int typmod = (flags >> 1) % 8 - 1; /* -1 (none) to 6 */
  const char *p = (const char *)in->data;
  bool want = model_timestamp(p, in->len, tz, typmod);
  FUZZ_CHECKF(pgtype_timestamp_valid(p, in->len, tz, typmod, why, sizeof why) ==
                  want,
              "timestamp (tz %d, typmod %d): model says %d", tz, typmod, want);
}

/* ------------------------------------------------------------------ */
/* JSON                                                                 */
/* ------------------------------------------------------------------ */

/* A recursive reading of RFC 8259 as PostgreSQL's json (and, with
 * |jsonb|, jsonb) input takes it. */
typedef struct json_model {
  const char *p;
  size_t n, i;
  bool jsonb;
  int depth;
  bool too_deep;
} json_model;

#define JSON_MODEL_DEPTH 2000

static void jm_space(json_model *m) {
  while (m->i < m->n && (m->p[m->i] == ' ' || m->p[m->i] == '\t' ||
                         m->p[m->i] == '\n' || m->p[m->i] == '\r'))
    m->i++;
}

/* PostgreSQL's lexer reads a token on while these follow. */
static bool jm_word_char(json_model *m) {
  if (m->i >= m->n)
    return false;
  unsigned char c = (unsigned char)m->p[m->i];
  return is_digit((char)c) || (c >= 'a' && c <= 'z') ||
         (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool jm_hex4(json_model *m, unsigned *out) {
  *out = 0;
  for (int k = 0; k < 4; k++, m->i++) {
    if (m->i >= m->n)
      return false;
    char c = m->p[m->i];
    unsigned v;
    if (is_digit(c))
      v = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v = (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v = (unsigned)(c - 'A' + 10);
    else
      return false;
    *out = *out << 4 | v;
  }
  return true;
}

static bool jm_string(json_model *m) {
  m->i++; /* the opening quote */
  while (m->i < m->n) {
    unsigned char c = (unsigned char)m->p[m->i++];
    if (c == '"')
      return true;
    if (c < 0x20)
      return false;
    if (c != '\\')
      continue;
    if (m->i >= m->n)
      return false;
    char e = m->p[m->i++];
    if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
        e == 'r' || e == 't')
      continue;
    unsigned cp, low;
    if (e != 'u' || !jm_hex4(m, &cp))
      return false;
    if (!m->jsonb)
      continue;
    if (cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
      return false;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (m->n - m->i < 2 || m->p[m->i] != '\\' || m->p[m->i + 1] != 'u')
        return false;
      m->i += 2;
      if (!jm_hex4(m, &low) || low < 0xDC00 || low > 0xDFFF)
        return false;
    }
  }
  return false;
}

static bool jm_digits(json_model *m) {
  size_t at = m->i;
  while (m->i < m->n && is_digit(m->p[m->i]))
    m->i++;
  return m->i > at;
}

static bool jm_number(json_model *m) {
  if (m->p[m->i] == '-')
    m->i++;
  if (m->i < m->n && m->p[m->i] == '0')
    m->i++;
  else if (!jm_digits(m))
    return false;
  if (m->i < m->n && m->p[m->i] == '.') {
    m->i++;
    if (!jm_digits(m))
      return false;
  }
  if (m->i < m->n && (m->p[m->i] == 'e' || m->p[m->i] == 'E')) {
    m->i++;
    if (m->i < m->n && (m->p[m->i] == '+' || m->p[m->i] == '-'))
      m->i++;
    if (!jm_digits(m))
      return false;
  }
  return !jm_word_char(m);
}

static bool jm_value(json_model *m);

/* The members of an object or elements of an array, after its opening. */
static bool jm_container(json_model *m, bool object) {
  char close = object ? '}' : ']';
  if (++m->depth > JSON_MODEL_DEPTH) {
    m->too_deep = true;
    return false;
  }
  m->i++;
  jm_space(m);
  if (m->i < m->n && m->p[m->i] == close) {
    m->i++;
    m->depth--;
    return true;
  }
  for (;;) {
    if (object) {
      if (m->i >= m->n || m->p[m->i] != '"' || !jm_string(m))
        return false;
      jm_space(m);
      if (m->i >= m->n || m->p[m->i++] != ':')
        return false;
      jm_space(m);
    }
    if (!jm_value(m))
      return false;
    jm_space(m);
    if (m->i >= m->n)
      return false;
    char c = m->p[m->i++];
    if (c == close) {
      m->depth--;
      return true;
    }
    if (c != ',')
      return false;
    jm_space(m);
  }
}

static bool jm_value(json_model *m) {
  if (m->i >= m->n)
    return false;
  char c = m->p[m->i];
  if (c == '{' || c == '[')
    return jm_container(m, c == '{');
  if (c == '"')
    return jm_string(m);
  if (c == '-' || is_digit(c))
    return jm_number(m);
  static const char *const words[] = {"true", "false", "null"};
  for (int w = 0; w < 3; w++) {
    size_t len = strlen(words[w]);
    if (m->n - m->i >= len && memcmp(m->p + m->i, words[w], len) == 0) {
      m->i += len;
      return !jm_word_char(m);
    }
  }
  return false;
}

/* -1 when the text nests too deep for the model. */
static int model_json(const char *p, size_t n, bool jsonb) {
  json_model m = {p, n, 0, jsonb, 0, false};
  jm_space(&m);
  bool ok = jm_value(&m);
  jm_space(&m);
  if (m.too_deep)
    return -1;
  return ok && m.i == n;
}

static bool json_wrapped(const char *pre, const char *p, size_t n,
                         const char *post, bool jsonb) {
  bytebuf b = {0};
  FUZZ_CHECK(bytebuf_append(&b, pre, strlen(pre)) == 0);
  FUZZ_CHECK(bytebuf_append(&b, p, n) == 0);
  FUZZ_CHECK(bytebuf_append(&b, post, strlen(post)) == 0);
  bool ok = pgtype_json_valid((const char *)b.data, b.len, jsonb, NULL, 0);
  bytebuf_free(&b);
  return ok;
}

static void fuzz_json(fuzz_input *in) {
  char why[128];
  bool jsonb = fuzz_byte(in) & 1;
  const char *p = (const char *)in->data;
  size_t n = in->len;
  bool got = pgtype_json_valid(p, n, jsonb, why, sizeof why);
  int want = model_json(p, n, jsonb);
  FUZZ_CHECKF(want < 0 || got == (bool)want, "json (jsonb %d): model says %d",
              jsonb, want);
  if (got && jsonb)
    FUZZ_CHECK(pgtype_json_valid(p, n, false, NULL, 0));
  if (!got)
    return;
  FUZZ_CHECK(json_wrapped("[", p, n, "]", jsonb));
  FUZZ_CHECK(json_wrapped("{\"k\": ", p, n, "}", jsonb));
  FUZZ_CHECK(json_wrapped(" \t\r\n", p, n, "\n", jsonb));
}

/* ------------------------------------------------------------------ */
/* UUIDs                                                                */
/* ------------------------------------------------------------------ */

static void fuzz_uuid(const char *p, size_t n) {
  uint8_t raw[LIPSYNC_UUID_LEN], again[LIPSYNC_UUID_LEN];
  char text[37];
  bool want = n == 36;
  for (size_t i = 0; i < n && want; i++)
    want = i == 8 || i == 13 || i == 18 || i == 23
               ? p[i] == '-'
               : is_digit(p[i]) || (p[i] >= 'a' && p[i] <= 'f');
  bool got = lipsync_uuid_parse(p, n, raw) == 0;
  FUZZ_CHECKF(got == want, "uuid: model says %d", want);
  if (got) {
    lipsync_uuid_format(raw, text);
    FUZZ_CHECK(memcmp(text, p, 36) == 0 && text[36] == '\0');
  }
  /* Any 16 bytes format to a text that parses back to them. */
  memset(raw, 0, sizeof raw);
  memcpy(raw, p, n < sizeof raw ? n : sizeof raw);
  lipsync_uuid_format(raw, text);
  FUZZ_CHECK(strlen(text) == 36);
  FUZZ_CHECK(lipsync_uuid_parse(text, 36, again) == 0);
  FUZZ_CHECK(memcmp(raw, again, sizeof raw) == 0);
}

/* ------------------------------------------------------------------ */
/* values of PostgreSQL columns                                         */
/* ------------------------------------------------------------------ */

#define NKINDS (PGTYPE_UUID + 1)

static int unhex(char c) {
  return is_digit(c) ? c - '0' : c - 'a' + 10;
}

/* Reads the COPY text field |f| (|n| bytes) back as the value it
 * carries into |out|. */
static void copy_unescape(const uint8_t *f, size_t n, bytebuf *out) {
  for (size_t i = 0; i < n; i++) {
    uint8_t c = f[i];
    FUZZ_CHECKF(c != '\t' && c != '\n' && c != '\r',
                "a COPY field holds a raw delimiter");
    if (c == '\\') {
      FUZZ_CHECK(i + 1 < n);
      char e = (char)f[++i];
      c = e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : (uint8_t)e;
      FUZZ_CHECKF(e == 'n' || e == 'r' || e == 't' || e == '\\',
                  "COPY escape \\%c", e);
    }
    FUZZ_CHECK(bytebuf_append(out, &c, 1) == 0);
  }
}

static void check_copy(const pgtype *t, const lipsync_value *v) {
  bytebuf field = {0}, back = {0};
  FUZZ_CHECK(pgtype_copy_append(&field, t, v) == 0);
  if (v->type == LIPSYNC_NULL) {
    FUZZ_CHECK(field.len == 2 && memcmp(field.data, "\\N", 2) == 0);
    bytebuf_free(&field);
    return;
  }
  copy_unescape(field.data, field.len, &back);
  switch (v->type) {
  case LIPSYNC_INTEGER: {
    char want[32];
    if (t->kind == PGTYPE_BOOL)
      snprintf(want, sizeof want, "%s", v->u.integer ? "t" : "f");
    else
      snprintf(want, sizeof want, "%lld", (long long)v->u.integer);
    FUZZ_CHECK(back.len == strlen(want) && !memcmp(back.data, want, back.len));
    break;
  }
  case LIPSYNC_REAL: {
    char text[64];
    FUZZ_CHECK(back.len < sizeof text);
    memcpy(text, back.data, back.len);
    text[back.len] = '\0';
    double d = strtod(text, NULL);
    FUZZ_CHECKF(isnan(v->u.real) ? isnan(d) : !memcmp(&d, &v->u.real, 8),
                "REAL as COPY text %s", text);
    break;
  }
  case LIPSYNC_BLOB: {
    const uint8_t *p = v->u.bytes.data;
    FUZZ_CHECK(back.len == 2 + 2 * v->u.bytes.len);
    FUZZ_CHECK(back.data[0] == '\\' && back.data[1] == 'x');
    for (size_t i = 0; i < v->u.bytes.len; i++)
      FUZZ_CHECK((unhex((char)back.data[2 + 2 * i]) << 4 |
                  unhex((char)back.data[3 + 2 * i])) == p[i]);
    break;
  }
  default:
    FUZZ_CHECK(
        back.len == v->u.bytes.len &&
        (back.len == 0 || memcmp(back.data, v->u.bytes.data, back.len) == 0));
  }
  bytebuf_free(&field);
  bytebuf_free(&back);
}

static void fuzz_pgvalue(fuzz_input *in) {
  uint8_t kind = fuzz_byte(in);
  uint8_t whylen = fuzz_byte(in) % 100;
  pgtype t = {(pgtype_kind)(kind % NKINDS), read_typmod(in)};
  lipsync_value v = read_value(in);

  /* The reason stays within |whylen| bytes and ends with a NUL. */
  char why[128];
  memset(why, 0x5A, sizeof why);
  bool ok = pgtype_check(&t, &v, whylen ? why : NULL, whylen);
  for (size_t i = whylen; i < sizeof why; i++)
    FUZZ_CHECKF(why[i] == 0x5A, "the reason overran its %u bytes", whylen);
  if (!ok && whylen)
    FUZZ_CHECK(memchr(why, '\0', whylen) != NULL);
  if (ok && v.type != LIPSYNC_NULL)
    FUZZ_CHECK(v.type == pgtype_value_kind(t.kind));
  if (ok)
    check_copy(&t, &v);

  /* A binary field of the column: the rest of the input. */
  char scratch[37];
  lipsync_value got;
  char reason[128];
  int rc = pgtype_from_binary(&t, (const char *)in->data, in->len, scratch,
                              &got, reason, sizeof reason);
  if (rc != 0) {
    FUZZ_CHECK(rc == LIPSYNC_ERR_STORAGE || rc == LIPSYNC_ERR_INVALID_VALUE);
    return;
  }
  FUZZ_CHECK(got.type == pgtype_value_kind(t.kind));
  if (got.type == LIPSYNC_TEXT) {
    FUZZ_CHECK(canon_utf8_valid(got.u.bytes.data, got.u.bytes.len));
    if (t.kind != PGTYPE_UUID)
      return; /* the server's text need not be canonical for a sender */
  }
  pgtype any = {t.kind, -1};
  FUZZ_CHECKF(pgtype_check(&any, &got, reason, sizeof reason),
              "a value read from a %s column fails its check: %s",
              pgtype_canonical(t.kind), reason);
}

/* ------------------------------------------------------------------ */
/* doubles                                                              */
/* ------------------------------------------------------------------ */

static void fuzz_double(fuzz_input *in) {
  uint64_t bits = read_u64(in);
  double d, back;
  memcpy(&d, &bits, sizeof d);
  char *text = malloc(32); /* exactly the 32 bytes it may write */
  FUZZ_CHECK(text != NULL);
  pgtype_format_double(d, text);
  FUZZ_CHECK(memchr(text, '\0', 32) != NULL);
  back = strtod(text, NULL);
  FUZZ_CHECKF(isnan(d) ? isnan(back) : !memcmp(&back, &d, sizeof d),
              "%a formats as %s", d, text);
  if (fabs(d) <= FLT_MAX) {
    float f = (float)d;
    FUZZ_CHECK(pgtype_float4_exact(d) == ((double)f == d));
  }
  free(text);
}

/* ------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_input in = {data, size};
  uint8_t what = fuzz_byte(&in);
  const char *text = (const char *)in.data;
  switch (what % 9) {
  case 0:
    fuzz_row(&in);
    break;
  case 1:
    fuzz_utf8(in.data, in.len);
    break;
  case 2:
    fuzz_decimal(&in);
    break;
  case 3:
    fuzz_date(text, in.len);
    break;
  case 4:
    fuzz_timestamp(&in);
    break;
  case 5:
    fuzz_json(&in);
    break;
  case 6:
    fuzz_uuid(text, in.len);
    break;
  case 7:
    fuzz_pgvalue(&in);
    break;
  default:
    fuzz_double(&in);
  }
  return 0;
}
