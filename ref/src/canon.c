/*
 * canon.c: canonical encodings, digests and fingerprints (spec 6.3, 7, 8).
 * These bytes are the protocol's contract: Appendix A of the spec has test
 * vectors for every function here.
 */
#include "canon.h"
#include "fault.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

void canon_put_u64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (uint8_t)v;
    v >>= 8;
  }
}

uint64_t canon_get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = (v << 8) | p[i];
  return v;
}

size_t canon_value_size(const lipsync_value *v) {
  switch (v->type) {
  case LIPSYNC_INTEGER:
  case LIPSYNC_REAL:
    return 9;
  case LIPSYNC_TEXT:
  case LIPSYNC_BLOB:
    return 5 + v->u.bytes.len;
  default:
    return 1;
  }
}

size_t canon_value_encode(const lipsync_value *v, uint8_t *out) {
  out[0] = (uint8_t)v->type;
  if (v->type == LIPSYNC_TEXT && fault_on("text-tag-as-blob")) /* self-test */
    out[0] = (uint8_t)LIPSYNC_BLOB;
  switch (v->type) {
  case LIPSYNC_INTEGER:
    canon_put_u64(out + 1, (uint64_t)v->u.integer);
    return 9;
  case LIPSYNC_REAL: {
    uint64_t bits;
    double d = v->u.real;
    if (d != d)
      bits = UINT64_C(0x7FF8000000000000); /* every NaN is one value */
    else
      memcpy(&bits, &d, sizeof bits);
    canon_put_u64(out + 1, bits);
    return 9;
  }
  case LIPSYNC_TEXT:
  case LIPSYNC_BLOB:
    put_u32(out + 1, (uint32_t)v->u.bytes.len);
    if (v->u.bytes.len)
      memcpy(out + 5, v->u.bytes.data, v->u.bytes.len);
    return 5 + v->u.bytes.len;
  default:
    out[0] = 0;
    return 1;
  }
}

int canon_hasher_init(canon_hasher *h) {
  memset(h, 0, sizeof *h);
  /* Fetched once: EVP_sha256() would look the algorithm up, under a lock,
   * for every row. */
  h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
  h->md_ctx = EVP_MD_CTX_new();
  if (!h->md || !h->md_ctx) {
    canon_hasher_free(h);
    return LIPSYNC_ERR_NOMEM;
  }
  return 0;
}

void canon_hasher_free(canon_hasher *h) {
  if (!h)
    return;
  free(h->buf);
  EVP_MD_CTX_free(h->md_ctx);
  EVP_MD_free(h->md);
  memset(h, 0, sizeof *h);
}

size_t canon_row_encode(canon_hasher *h, const lipsync_row *row) {
  size_t need = LIPSYNC_UUID_LEN + 4;
  for (size_t i = 0; i < row->nvalues; i++)
    need += canon_value_size(&row->values[i]);
  if (need > h->cap) {
    size_t cap = h->cap ? h->cap : 256;
    while (cap < need)
      cap *= 2;
    uint8_t *buf = realloc(h->buf, cap);
    if (!buf)
      return 0;
    h->buf = buf;
    h->cap = cap;
  }
  uint8_t *p = h->buf;
  memcpy(p, row->uuid, LIPSYNC_UUID_LEN);
  p += LIPSYNC_UUID_LEN;
  put_u32(p, (uint32_t)row->nvalues);
  p += 4;
  for (size_t i = 0; i < row->nvalues; i++)
    p += canon_value_encode(&row->values[i], p);
  return need;
}

/* SHA-256(in)[0:16], the digests of spec 8.1. */
static int digest16(canon_hasher *h, const void *in, size_t len,
                    uint8_t out[LIPSYNC_DIGEST_LEN]) {
  uint8_t full[EVP_MAX_MD_SIZE];
  if (!EVP_DigestInit_ex2(h->md_ctx, h->md, NULL) ||
      !EVP_DigestUpdate(h->md_ctx, in, len) ||
      !EVP_DigestFinal_ex(h->md_ctx, full, NULL))
    return LIPSYNC_ERR_INTERNAL;
  memcpy(out, full, LIPSYNC_DIGEST_LEN);
  return 0;
}

int canon_row_digest(canon_hasher *h, const lipsync_row *row,
                     uint8_t out[LIPSYNC_DIGEST_LEN]) {
  size_t len = canon_row_encode(h, row);
  return len ? digest16(h, h->buf, len, out) : LIPSYNC_ERR_NOMEM;
}

void lipsync_row_digest(const lipsync_row *row,
                        uint8_t out[LIPSYNC_DIGEST_LEN]) {
  canon_hasher h;
  memset(out, 0, LIPSYNC_DIGEST_LEN);
  if (canon_hasher_init(&h) == 0)
    canon_row_digest(&h, row, out);
  canon_hasher_free(&h);
}

#define ITEM_ENCODED_LEN (LIPSYNC_UUID_LEN + 8 + LIPSYNC_SITE_LEN + 1)

int canon_item_digest(canon_hasher *h, const uint8_t *uuid,
                      const lipsync_version *v, bool deleted,
                      uint8_t out[LIPSYNC_DIGEST_LEN]) {
  uint8_t in[ITEM_ENCODED_LEN];
  memcpy(in, uuid, LIPSYNC_UUID_LEN);
  for (int i = 0; i < 8; i++)
    in[LIPSYNC_UUID_LEN + i] = (uint8_t)(v->clock >> (56 - 8 * i));
  memcpy(in + LIPSYNC_UUID_LEN + 8, v->site, LIPSYNC_SITE_LEN);
  /* fault injection (conformance self-test): no deleted byte */
  in[ITEM_ENCODED_LEN - 1] = deleted && !fault_on("digest-no-deleted") ? 1 : 0;
  return digest16(h, in, sizeof in, out);
}

void lipsync_item_digest(const lipsync_item *item,
                         uint8_t out[LIPSYNC_DIGEST_LEN]) {
  canon_hasher h;
  memset(out, 0, LIPSYNC_DIGEST_LEN);
  if (canon_hasher_init(&h) == 0)
    canon_item_digest(&h, item->uuid, &item->version, item->deleted != 0, out);
  canon_hasher_free(&h);
}

int lipsync_version_cmp(const lipsync_version *a, const lipsync_version *b) {
  if (a->clock != b->clock)
    return a->clock < b->clock ? -1 : 1;
  return memcmp(a->site, b->site, LIPSYNC_SITE_LEN);
}

void canon_fp_init(canon_fp *fp) {
  memset(fp, 0, sizeof *fp);
}

void canon_fp_add(canon_fp *fp, const uint8_t digest[LIPSYNC_DIGEST_LEN]) {
  uint64_t hi = canon_get_u64(digest), lo = canon_get_u64(digest + 8);
  uint64_t old = fp->lo;
  fp->lo += lo;
  fp->hi += hi + (fp->lo < old);
  fp->count++;
}

void canon_fp_sub(canon_fp *fp, const uint8_t digest[LIPSYNC_DIGEST_LEN]) {
  uint64_t hi = canon_get_u64(digest), lo = canon_get_u64(digest + 8);
  uint64_t old = fp->lo;
  fp->lo -= lo;
  fp->hi -= hi + (fp->lo > old);
  fp->count--;
}

void canon_fp_merge(canon_fp *fp, const canon_fp *other) {
  uint64_t old = fp->lo;
  fp->lo += other->lo;
  fp->hi += other->hi + (fp->lo < old);
  fp->count += other->count;
}

void canon_fp_unmerge(canon_fp *fp, const canon_fp *other) {
  uint64_t old = fp->lo;
  fp->lo -= other->lo;
  fp->hi -= other->hi + (fp->lo > old);
  fp->count -= other->count;
}

void canon_fp_store(const canon_fp *fp, lipsync_summary *out) {
  canon_put_u64(out->sum, fp->hi);
  canon_put_u64(out->sum + 8, fp->lo);
  out->count = fp->count;
}

void canon_fp_load(canon_fp *fp, const lipsync_summary *in) {
  fp->hi = canon_get_u64(in->sum);
  fp->lo = canon_get_u64(in->sum + 8);
  fp->count = in->count;
}

void canon_fp_final(const canon_fp *fp, uint8_t out[LIPSYNC_DIGEST_LEN]) {
  uint8_t in[24], full[EVP_MAX_MD_SIZE];
  canon_put_u64(in, fp->hi);
  canon_put_u64(in + 8, fp->lo);
  canon_put_u64(in + 16, fp->count);
  EVP_Digest(in, sizeof in, full, NULL, EVP_sha256(), NULL);
  memcpy(out, full, LIPSYNC_DIGEST_LEN);
}

void canon_schema_fingerprint(const lipsync_column *cols, size_t n,
                              uint8_t out[CANON_SCHEMA_FP_LEN]) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  uint8_t len[4];
  memset(out, 0, CANON_SCHEMA_FP_LEN);
  if (!ctx)
    return;
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  put_u32(len, (uint32_t)n);
  EVP_DigestUpdate(ctx, len, 4);
  for (size_t i = 0; i < n; i++) {
    const char *parts[2] = {cols[i].name, cols[i].type};
    for (int j = 0; j < 2; j++) {
      size_t l = strlen(parts[j]);
      put_u32(len, (uint32_t)l);
      EVP_DigestUpdate(ctx, len, 4);
      EVP_DigestUpdate(ctx, parts[j], l);
    }
  }
  EVP_DigestFinal_ex(ctx, out, NULL);
  EVP_MD_CTX_free(ctx);
}

static int column_cmp(const void *a, const void *b) {
  const lipsync_column *x = a, *y = b;
  return strcmp(x->name, y->name); /* strcmp compares as unsigned char */
}

void canon_sort_columns(lipsync_column *cols, size_t n) {
  if (n > 1)
    qsort(cols, n, sizeof *cols, column_cmp);
}

static int contains_ci(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++)
    if (strncasecmp(hay, needle, n) == 0)
      return 1;
  return 0;
}

/* True if the first word of |declared| (up to a space or '(') is |word|,
 * ignoring ASCII case. */
static int first_word_is(const char *declared, const char *word) {
  size_t n = strlen(word);
  if (strncasecmp(declared, word, n) != 0)
    return 0;
  char next = declared[n];
  return next == '\0' || next == '(' || isspace((unsigned char)next);
}

const char *canon_type_from_declared(const char *declared) {
  if (!declared)
    declared = "";
  while (isspace((unsigned char)*declared))
    declared++;
  /* Named types first (spec 6.2, rules 1 to 7): a column declared DATE or
   * BOOLEAN syncs with PostgreSQL's date or boolean. */
  if (first_word_is(declared, "TIMESTAMPTZ") ||
      (first_word_is(declared, "TIMESTAMP") &&
       contains_ci(declared, "WITH TIME ZONE")))
    return "timestamptz";
  if (first_word_is(declared, "BOOLEAN") || first_word_is(declared, "BOOL"))
    return "boolean";
  if (first_word_is(declared, "DATE"))
    return "date";
  if (first_word_is(declared, "DATETIME") ||
      first_word_is(declared, "TIMESTAMP"))
    return "timestamp";
  if (first_word_is(declared, "JSON"))
    return "json";
  if (first_word_is(declared, "JSONB"))
    return "jsonb";
  if (first_word_is(declared, "UUID"))
    return "uuid";
  if (first_word_is(declared, "DECIMAL") || first_word_is(declared, "NUMERIC"))
    return "decimal";
  return canon_affinity_from_declared(declared);
}

const char *canon_affinity_from_declared(const char *declared) {
  if (!declared)
    declared = "";
  while (isspace((unsigned char)*declared))
    declared++;
  if (contains_ci(declared, "INT"))
    return "integer";
  if (contains_ci(declared, "CHAR") || contains_ci(declared, "CLOB") ||
      contains_ci(declared, "TEXT"))
    return "text";
  if (contains_ci(declared, "BLOB") || declared[0] == '\0')
    return "blob";
  if (contains_ci(declared, "REAL") || contains_ci(declared, "FLOA") ||
      contains_ci(declared, "DOUB"))
    return "real";
  return "numeric";
}

bool canon_utf8_valid(const uint8_t *p, size_t len) {
  size_t i = 0;
  while (i < len) {
    uint8_t c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (len - i <= n)
      return false;
    for (size_t k = 1; k <= n; k++) {
      if ((p[i + k] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

void lipsync_uuid_format(const uint8_t uuid[LIPSYNC_UUID_LEN], char out[37]) {
  static const char hex[] = "0123456789abcdef";
  char *p = out;
  for (int i = 0; i < LIPSYNC_UUID_LEN; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      *p++ = '-';
    *p++ = hex[uuid[i] >> 4];
    *p++ = hex[uuid[i] & 15];
  }
  *p = '\0';
}

/* A lowercase hex digit's value plus one, else 0: uppercase is not
 * canonical, as it would break the equality of text and byte order. */
static const int8_t HEX[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,
    ['6'] = 7,  ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12,
    ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16};

int lipsync_uuid_parse(const char *text, size_t len,
                       uint8_t out[LIPSYNC_UUID_LEN]) {
  /* Offsets of the 16 digit pairs in 8-4-4-4-12. */
  static const uint8_t at[16] = {0,  2,  4,  6,  9,  11, 14, 16,
                                 19, 21, 24, 26, 28, 30, 32, 34};
  const unsigned char *p = (const unsigned char *)text;
  if (!text || len != 36 || p[8] != '-' || p[13] != '-' || p[18] != '-' ||
      p[23] != '-')
    return LIPSYNC_ERR_INVALID_VALUE;
  int bad = 0;
  for (int i = 0; i < 16; i++) {
    int h = HEX[p[at[i]]] - 1, l = HEX[p[at[i] + 1]] - 1;
    bad |= h | l; /* negative if either is not a digit */
    out[i] = (uint8_t)((h & 15) << 4 | (l & 15));
  }
  return bad < 0 ? LIPSYNC_ERR_INVALID_VALUE : 0;
}

int lipsync_uuid_generate(uint8_t out[LIPSYNC_UUID_LEN]) {
  if (RAND_bytes(out, LIPSYNC_UUID_LEN) != 1)
    return LIPSYNC_ERR_INTERNAL;
  out[6] = (uint8_t)((out[6] & 0x0F) | 0x40); /* version 4 */
  out[8] = (uint8_t)((out[8] & 0x3F) | 0x80); /* RFC 9562 variant */
  return 0;
}
