/*
 * canon.h: the byte-exact encodings every implementation must agree on:
 * canonical values and rows (spec 7), row digests (8.1), range
 * fingerprints (8.2) and schema fingerprints (6.3).
 *
 * Nothing here does I/O or allocates per row: the session hashes every row
 * of a table through one canon_hasher.
 */
#ifndef LIPSYNC_CANON_H
#define LIPSYNC_CANON_H

#include "lipsync.h"

#include <stdbool.h>

#define CANON_SCHEMA_FP_LEN 32

/* Reusable row hasher: a scratch buffer and a digest context. */
typedef struct canon_hasher {
  uint8_t *buf;
  size_t cap;
  void *md_ctx; /* EVP_MD_CTX */
  void *md;     /* EVP_MD, SHA-256 */
} canon_hasher;

int canon_hasher_init(canon_hasher *h);
void canon_hasher_free(canon_hasher *h);

/* Appends the canonical encoding of |v| to |out| (which has room for
 * canon_value_size(v) bytes) and returns the bytes written. */
size_t canon_value_size(const lipsync_value *v);
size_t canon_value_encode(const lipsync_value *v, uint8_t *out);

/* Canonical encoding of |row| into |h|'s buffer; returns its length, or 0
 * on allocation failure. The bytes are at h->buf. */
size_t canon_row_encode(canon_hasher *h, const lipsync_row *row);

/* Row digest (spec 8.1). Returns 0 or LIPSYNC_ERR_NOMEM. */
int canon_row_digest(canon_hasher *h, const lipsync_row *row,
                     uint8_t out[LIPSYNC_DIGEST_LEN]);

/* Item digest (spec 8.1) of a row or tombstone with |uuid| and version
 * |v|. Returns 0 or LIPSYNC_ERR_INTERNAL. */
int canon_item_digest(canon_hasher *h, const uint8_t *uuid,
                      const lipsync_version *v, bool deleted,
                      uint8_t out[LIPSYNC_DIGEST_LEN]);

/* Range fingerprint accumulator (spec 8.2): a sum of digests mod 2^128 and
 * a count, so items can be added and removed in any order. */
typedef struct canon_fp {
  uint64_t hi, lo;
  uint64_t count;
} canon_fp;

void canon_fp_init(canon_fp *fp);
void canon_fp_add(canon_fp *fp, const uint8_t digest[LIPSYNC_DIGEST_LEN]);
void canon_fp_sub(canon_fp *fp, const uint8_t digest[LIPSYNC_DIGEST_LEN]);
/* Adds every item of |other| to |fp|. */
void canon_fp_merge(canon_fp *fp, const canon_fp *other);
void canon_fp_final(const canon_fp *fp, uint8_t out[LIPSYNC_DIGEST_LEN]);
/* Removes every item of |other| from |fp|. */
void canon_fp_unmerge(canon_fp *fp, const canon_fp *other);
/* The accumulator as a lipsync_summary (big-endian sum, count), and back. */
void canon_fp_store(const canon_fp *fp, lipsync_summary *out);
void canon_fp_load(canon_fp *fp, const lipsync_summary *in);

/* Big-endian 64-bit integers. */
void canon_put_u64(uint8_t *p, uint64_t v);
uint64_t canon_get_u64(const uint8_t *p);

/* Schema fingerprint (spec 6.3) over |n| columns in canonical order. */
void canon_schema_fingerprint(const lipsync_column *cols, size_t n,
                              uint8_t out[CANON_SCHEMA_FP_LEN]);

/* Sorts |cols| into canonical column order (bytewise by name). */
void canon_sort_columns(lipsync_column *cols, size_t n);

/* Maps a SQLite declared type to its canonical type name (spec 6.2): named
 * types (BOOLEAN, DATE, ...) first, then SQLite's affinity rules. Never
 * NULL. */
const char *canon_type_from_declared(const char *declared);

/* SQLite's own affinity of a declared type, named as the canonical types
 * "integer", "text", "blob", "real" or "numeric": what SQLite does to the
 * values stored in the column. Never NULL. */
const char *canon_affinity_from_declared(const char *declared);

/* True if |p|[0..len) is well-formed UTF-8 (RFC 3629: no surrogates, no
 * overlong forms, at most U+10FFFF). NUL is allowed. */
bool canon_utf8_valid(const uint8_t *p, size_t len);

#endif
