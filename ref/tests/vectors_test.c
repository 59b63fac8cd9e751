/*
 * vectors_test.c: the test vectors of spec/lipsync.md Appendix A, read from
 * the spec itself, so the reference implementation and the document cannot
 * drift apart: canonical values (src/canon.c), row digests, fingerprints,
 * schema fingerprints, column types, frames (src/frame.c), malformed input
 * (src/session.c), the handshake MACs (src/auth.c), and versions, their
 * order and item digests (src/canon.c).
 *
 * The spec is found at $LIPSYNC_SPEC, else spec/lipsync.md (tests run from
 * the repository root).
 */
#include "auth.h"
#include "canon.h"
#include "frame.h"
#include "hlc.h"
#include "test_util.h"

#include <CUnit/CUnit.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One vector: its ID and its "key  value" lines, continuation lines of
 * hex joined to the value before them. */
#define MAX_FIELDS 24
typedef struct vector {
  char id[32];
  char title[256];
  int nfields;
  char key[MAX_FIELDS][32];
  char *value[MAX_FIELDS];
} vector;

typedef struct vectors {
  vector *v;
  size_t n, cap;
  char **table_rows; /* "| V-..." lines of Markdown tables */
  size_t nrows, caprows;
} vectors;

static vectors V;

static const char *spec_path(void) {
  const char *p = getenv("LIPSYNC_SPEC");
  return p ? p : "spec/lipsync.md";
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s))
    s++;
  size_t n = strlen(s);
  while (n && isspace((unsigned char)s[n - 1]))
    s[--n] = '\0';
  return s;
}

static void append_value(char **dst, const char *more) {
  size_t a = *dst ? strlen(*dst) : 0, b = strlen(more);
  char *p = realloc(*dst, a + b + 1);
  if (!p)
    return;
  memcpy(p + a, more, b + 1);
  *dst = p;
}

static int load_vectors(void) {
  FILE *f = fopen(spec_path(), "r");
  char line[4096];
  vector *cur = NULL;
  int in_block = 0;
  if (!f)
    return -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "```", 3) == 0) {
      in_block = !in_block;
      cur = NULL;
      continue;
    }
    if (!in_block) {
      if (strncmp(line, "| V-", 4) == 0) {
        if (V.nrows == V.caprows) {
          size_t cap = V.caprows ? V.caprows * 2 : 64;
          char **rows = realloc(V.table_rows, cap * sizeof *rows);
          if (!rows)
            break;
          V.table_rows = rows;
          V.caprows = cap;
        }
        V.table_rows[V.nrows++] = strdup(trim(line));
      }
      continue;
    }
    if (strncmp(line, "V-", 2) == 0) {
      if (V.n == V.cap) {
        size_t cap = V.cap ? V.cap * 2 : 64;
        vector *v = realloc(V.v, cap * sizeof *v);
        if (!v)
          break;
        V.v = v;
        V.cap = cap;
      }
      cur = &V.v[V.n++];
      memset(cur, 0, sizeof *cur);
      sscanf(line, "%31s", cur->id);
      snprintf(cur->title, sizeof cur->title, "%s",
               trim(line + strlen(cur->id)));
      continue;
    }
    if (!cur)
      continue;
    if (line[0] == ' ') { /* continuation of the previous value */
      if (cur->nfields)
        append_value(&cur->value[cur->nfields - 1], trim(line));
      continue;
    }
    /* "key words<two or more spaces>value" */
    char *gap = strstr(line, "  ");
    if (!gap || cur->nfields == MAX_FIELDS)
      continue;
    *gap = '\0';
    snprintf(cur->key[cur->nfields], sizeof cur->key[0], "%s", trim(line));
    cur->value[cur->nfields] = NULL;
    append_value(&cur->value[cur->nfields], trim(gap + 1));
    cur->nfields++;
  }
  fclose(f);
  return 0;
}

static int suite_init(void) {
  return load_vectors() == 0 && V.n > 0 ? 0 : -1;
}

static int suite_clean(void) {
  for (size_t i = 0; i < V.n; i++)
    for (int k = 0; k < V.v[i].nfields; k++)
      free(V.v[i].value[k]);
  for (size_t i = 0; i < V.nrows; i++)
    free(V.table_rows[i]);
  free(V.v);
  free(V.table_rows);
  memset(&V, 0, sizeof V);
  return 0;
}

static const char *field(const vector *v, const char *key) {
  for (int k = 0; k < v->nfields; k++)
    if (strcmp(v->key[k], key) == 0)
      return v->value[k];
  return NULL;
}

/* Hex value of |key| into |out|; returns its length, failing the test if
 * the field is missing. */
static size_t field_hex(const vector *v, const char *key, uint8_t *out,
                        size_t cap) {
  const char *hex = field(v, key);
  CU_ASSERT_PTR_NOT_NULL_FATAL(hex);
  size_t n = tu_unhex(hex, out, cap);
  CU_ASSERT_FATAL(n != (size_t)-1);
  return n;
}

static int count_prefix(const char *prefix) {
  int n = 0;
  for (size_t i = 0; i < V.n; i++)
    n += strncmp(V.v[i].id, prefix, strlen(prefix)) == 0;
  return n;
}

/* Splits a "| a | `b` | `c` |" row into its cells, backquotes removed. */
static int table_cells(const char *row, char cells[][256], int max) {
  int n = 0;
  const char *p = row;
  while (*p == '|' && n < max) {
    const char *end = strchr(p + 1, '|');
    if (!end)
      break;
    size_t len = (size_t)(end - p - 1);
    char buf[256];
    if (len >= sizeof buf)
      len = sizeof buf - 1;
    memcpy(buf, p + 1, len);
    buf[len] = '\0';
    char *c = trim(buf);
    size_t cl = strlen(c);
    if (cl >= 2 && c[0] == '`' && c[cl - 1] == '`') {
      c[cl - 1] = '\0';
      c++;
    }
    snprintf(cells[n++], 256, "%s", c);
    p = end;
  }
  return n;
}

/* ------------------------------------------------------------------ */

static void value_from_pb(const Lipsync__Value *in, lipsync_value *out) {
  memset(out, 0, sizeof *out);
  switch (in->kind_case) {
  case LIPSYNC__VALUE__KIND_INTEGER:
    *out = tu_int(in->integer);
    break;
  case LIPSYNC__VALUE__KIND_REAL:
    *out = tu_real(in->real);
    break;
  case LIPSYNC__VALUE__KIND_TEXT:
    *out = tu_textn(in->text.data, in->text.len);
    break;
  case LIPSYNC__VALUE__KIND_BLOB:
    *out = tu_blob(in->blob.data, in->blob.len);
    break;
  default:
    *out = tu_null();
  }
}

/* A.1: the protobuf Value decodes, re-encodes to the same bytes, and its
 * canonical encoding is the spec's. */
static void test_values(void) {
  int seen = 0;
  for (size_t i = 0; i < V.nrows; i++) {
    char cells[6][256];
    if (strncmp(V.table_rows[i], "| V-VAL-", 8) != 0)
      continue;
    CU_ASSERT_EQUAL_FATAL(table_cells(V.table_rows[i], cells, 6), 4);
    uint8_t pb[256], canon[256], got[256];
    size_t pblen = tu_unhex(cells[2], pb, sizeof pb);
    size_t clen = tu_unhex(cells[3], canon, sizeof canon);
    CU_ASSERT_FATAL(pblen != (size_t)-1 && clen != (size_t)-1);
    Lipsync__Value *m = lipsync__value__unpack(NULL, pblen, pb);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    uint8_t repacked[256];
    CU_ASSERT_EQUAL(lipsync__value__pack(m, repacked), pblen);
    CU_ASSERT_EQUAL(memcmp(repacked, pb, pblen), 0);
    lipsync_value v;
    value_from_pb(m, &v);
    CU_ASSERT_EQUAL(canon_value_size(&v), clen);
    size_t n = canon_value_encode(&v, got);
    if (n != clen || memcmp(got, canon, clen) != 0)
      CU_FAIL(cells[0]);
    lipsync__value__free_unpacked(m, NULL);
    seen++;
  }
  CU_ASSERT(seen >= 20);
}

/* Parses a canonical row (the test's own decoder) into |row|. */
static int parse_canonical_row(const uint8_t *p, size_t len, lipsync_row *row,
                               lipsync_value *vals, size_t cap) {
  if (len < 20)
    return -1;
  memcpy(row->uuid, p, 16);
  size_t n =
      (size_t)p[16] << 24 | (size_t)p[17] << 16 | (size_t)p[18] << 8 | p[19];
  size_t off = 20;
  if (n > cap)
    return -1;
  for (size_t i = 0; i < n; i++) {
    uint8_t type = p[off++];
    uint64_t u = 0;
    if (type == 1 || type == 2) {
      for (int k = 0; k < 8; k++)
        u = u << 8 | p[off++];
      if (type == 1) {
        vals[i] = tu_int((int64_t)u);
      } else {
        double d;
        memcpy(&d, &u, sizeof d);
        vals[i] = tu_real(d);
      }
    } else if (type == 3 || type == 4) {
      size_t l = (size_t)p[off] << 24 | (size_t)p[off + 1] << 16 |
                 (size_t)p[off + 2] << 8 | p[off + 3];
      off += 4;
      vals[i] = type == 3 ? tu_textn(p + off, l) : tu_blob(p + off, l);
      off += l;
    } else {
      vals[i] = tu_null();
    }
  }
  row->nvalues = n;
  row->values = vals;
  return off == len ? 0 : -1;
}

/* A.2: canonical row encoding and digest. */
static void test_rows(void) {
  canon_hasher h;
  CU_ASSERT_EQUAL_FATAL(canon_hasher_init(&h), 0);
  for (size_t i = 0; i < V.n; i++) {
    const vector *v = &V.v[i];
    if (strncmp(v->id, "V-ROW-", 6) != 0)
      continue;
    uint8_t canon[512], digest[16], uuid[16], got[16];
    lipsync_value vals[16];
    lipsync_row row;
    size_t clen = field_hex(v, "canonical row", canon, sizeof canon);
    field_hex(v, "digest", digest, sizeof digest);
    field_hex(v, "uuid", uuid, sizeof uuid);
    CU_ASSERT_EQUAL_FATAL(parse_canonical_row(canon, clen, &row, vals, 16), 0);
    CU_ASSERT_EQUAL(memcmp(row.uuid, uuid, 16), 0);
    size_t n = canon_row_encode(&h, &row);
    CU_ASSERT_EQUAL(n, clen);
    CU_ASSERT_EQUAL(memcmp(h.buf, canon, clen), 0);
    CU_ASSERT_EQUAL(canon_row_digest(&h, &row, got), 0);
    CU_ASSERT_EQUAL(memcmp(got, digest, 16), 0);
    lipsync_row_digest(&row, got);
    CU_ASSERT_EQUAL(memcmp(got, digest, 16), 0);
  }
  CU_ASSERT(count_prefix("V-ROW-") >= 4);
  canon_hasher_free(&h);
}

/* A.3: fingerprints, incremental in any order, wrapping modulo 2^128. */
static void test_fingerprints(void) {
  for (size_t i = 0; i < V.n; i++) {
    const vector *v = &V.v[i];
    if (strncmp(v->id, "V-FP-", 5) != 0)
      continue;
    canon_fp fp;
    uint8_t expect[16], got[16], d[16], extra[16];
    canon_fp_init(&fp);
    for (int k = 0; k < v->nfields; k++) {
      if (strncmp(v->key[k], "digest[", 7) != 0)
        continue;
      CU_ASSERT_EQUAL_FATAL(tu_unhex(v->value[k], d, 16), 16);
      canon_fp_add(&fp, d);
    }
    CU_ASSERT_EQUAL(fp.count, strtoull(field(v, "count"), NULL, 10));
    field_hex(v, "fingerprint", expect, 16);
    canon_fp_final(&fp, got);
    CU_ASSERT_EQUAL(memcmp(got, expect, 16), 0);
    /* Adding then removing an item leaves the fingerprint as it was. */
    memset(extra, 0xee, sizeof extra);
    canon_fp_add(&fp, extra);
    canon_fp_sub(&fp, extra);
    canon_fp_final(&fp, got);
    CU_ASSERT_EQUAL(memcmp(got, expect, 16), 0);
  }
  CU_ASSERT(count_prefix("V-FP-") >= 5);
}

/* A.4: canonical column types from declared types. */
static void test_column_types(void) {
  int seen = 0;
  for (size_t i = 0; i < V.nrows; i++) {
    char cells[6][256];
    if (strncmp(V.table_rows[i], "| V-TYPE-", 9) != 0)
      continue;
    CU_ASSERT_EQUAL_FATAL(table_cells(V.table_rows[i], cells, 6), 3);
    char *declared = cells[1];
    size_t n = strlen(declared);
    CU_ASSERT_FATAL(n >= 2 && declared[0] == '"' && declared[n - 1] == '"');
    declared[n - 1] = '\0';
    CU_ASSERT_STRING_EQUAL(canon_type_from_declared(declared + 1), cells[2]);
    seen++;
  }
  CU_ASSERT(seen >= 20);
}

/* A.5: schema fingerprints, and the canonical column order. */
static void test_schemas(void) {
  for (size_t i = 0; i < V.n; i++) {
    const vector *v = &V.v[i];
    if (strncmp(v->id, "V-SCHEMA-", 9) != 0)
      continue;
    lipsync_column cols[16], shuffled[16];
    char names[16][64];
    char types[16][32];
    size_t n = 0;
    for (int k = 0; k < v->nfields && n < 16; k++) {
      if (strncmp(v->key[k], "column[", 7) != 0)
        continue;
      /* "area (61726561) real": the name is given in hex too. */
      const char *open = strchr(v->value[k], '(');
      const char *close = open ? strchr(open, ')') : NULL;
      CU_ASSERT_PTR_NOT_NULL_FATAL(close);
      char hex[128];
      snprintf(hex, sizeof hex, "%.*s", (int)(close - open - 1), open + 1);
      size_t len = tu_unhex(hex, (uint8_t *)names[n], sizeof names[n] - 1);
      CU_ASSERT_FATAL(len != (size_t)-1);
      names[n][len] = '\0';
      snprintf(types[n], sizeof types[n], "%s", close + 2);
      cols[n].name = names[n];
      cols[n].type = types[n];
      n++;
    }
    uint8_t expect[32], got[32];
    field_hex(v, "fingerprint", expect, 32);
    canon_schema_fingerprint(cols, n, got);
    CU_ASSERT_EQUAL(memcmp(got, expect, 32), 0);
    /* The columns come in canonical order: sorting them reversed
     * restores it. */
    for (size_t c = 0; c < n; c++)
      shuffled[c] = cols[n - 1 - c];
    canon_sort_columns(shuffled, n);
    for (size_t c = 0; c < n; c++)
      CU_ASSERT_STRING_EQUAL(shuffled[c].name, cols[c].name);
  }
  CU_ASSERT(count_prefix("V-SCHEMA-") >= 3);
}

/* A.6: every frame decodes to a known body and encodes back to the same
 * bytes. */
static void test_frames(void) {
  frame_reader r;
  arena a;
  frame_reader_init(&r);
  arena_init(&a);
  for (size_t i = 0; i < V.n; i++) {
    const vector *v = &V.v[i];
    if (strncmp(v->id, "V-FRAME-", 8) != 0)
      continue;
    uint8_t bytes[1024];
    size_t n = field_hex(v, "frame", bytes, sizeof bytes);
    int complete;
    CU_ASSERT_EQUAL(frame_reader_feed(&r, bytes, n, &complete), (ssize_t)n);
    CU_ASSERT_TRUE_FATAL(complete);
    Lipsync__Frame *f = frame_reader_decode(&r, &a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_NOT_EQUAL(f->body_case, LIPSYNC__FRAME__BODY__NOT_SET);
    bytebuf out = {0};
    CU_ASSERT_EQUAL(frame_append(&out, f), (ssize_t)n);
    CU_ASSERT_TRUE(out.len == n && memcmp(out.data, bytes, n) == 0);
    bytebuf_free(&out);
    frame_reader_reset(&r);
    arena_reset(&a);
  }
  CU_ASSERT(count_prefix("V-FRAME-") >= 10);
  frame_reader_free(&r);
  arena_free(&a);
}

/* A.7: a server fed each malformed input answers with the spec's code. */
static void test_malformed(void) {
  int seen = 0;
  for (size_t i = 0; i < V.nrows; i++) {
    char cells[6][256];
    if (strncmp(V.table_rows[i], "| V-BAD-", 8) != 0)
      continue;
    CU_ASSERT_EQUAL_FATAL(table_cells(V.table_rows[i], cells, 6), 3);
    uint8_t in[64];
    size_t n = tu_unhex(cells[1], in, sizeof in);
    const char *paren = strrchr(cells[2], '(');
    CU_ASSERT_PTR_NOT_NULL_FATAL(paren);
    int code = atoi(paren + 1);
    int truncated = strstr(cells[2], "stream ends") != NULL;

    sqlite3 *db = TU_DB_OPEN(":memory:");
    lipsync_store *store;
    lipsync_session *s;
    CU_ASSERT_EQUAL_FATAL(lipsync_store_sqlite_wrap(&store, db), 0);
    CU_ASSERT_EQUAL_FATAL(
        lipsync_session_server_new(&s, store, "k", 1, NULL, 0, 1), 0);
    lipsync_session_recv(s, in, n);
    if (truncated)
      lipsync_session_recv_eof(s);
    CU_ASSERT_EQUAL(lipsync_session_result(s), -code);
    if (lipsync_session_result(s) != -code)
      CU_FAIL(cells[0]);
    lipsync_session_free(s);
    lipsync_store_free(store);
    sqlite3_close(db);
    seen++;
  }
  CU_ASSERT(seen >= 6);
}

/* A.8: transcript hash and both proofs. */
static void test_auth(void) {
  for (size_t i = 0; i < V.n; i++) {
    const vector *v = &V.v[i];
    if (strncmp(v->id, "V-AUTH-", 7) != 0)
      continue;
    uint8_t k[128], ch[256], sh[256], th[32], cmac[32], smac[32], got[32];
    size_t klen = field_hex(v, "K", k, sizeof k);
    size_t chlen = field_hex(v, "CH", ch, sizeof ch);
    size_t shlen = field_hex(v, "SH", sh, sizeof sh);
    field_hex(v, "TH", th, sizeof th);
    field_hex(v, "client mac", cmac, sizeof cmac);
    field_hex(v, "server mac", smac, sizeof smac);
    /* With the feature tls-exporter, the TLS exporter value CB follows. */
    uint8_t cb[LIPSYNC_TLS_BINDING_LEN];
    int bound = field(v, "CB") != NULL;
    if (bound)
      CU_ASSERT_EQUAL_FATAL(field_hex(v, "CB", cb, sizeof cb), sizeof cb);
    auth_transcript(ch, chlen, sh, shlen, bound ? cb : NULL, got);
    CU_ASSERT_EQUAL(memcmp(got, th, 32), 0);
    CU_ASSERT_EQUAL(auth_proof(k, klen, AUTH_CLIENT, th, got), 0);
    CU_ASSERT_EQUAL(memcmp(got, cmac, 32), 0);
    CU_ASSERT_EQUAL(auth_proof(k, klen, AUTH_SERVER, th, got), 0);
    CU_ASSERT_EQUAL(memcmp(got, smac, 32), 0);
    CU_ASSERT_EQUAL(auth_verify(k, klen, AUTH_SERVER, th, smac, 32), 0);
    CU_ASSERT_EQUAL(auth_verify(k, klen, AUTH_CLIENT, th, smac, 32),
                    LIPSYNC_ERR_AUTH_FAILED);
  }
  CU_ASSERT(count_prefix("V-AUTH-") >= 1);
}

/* A.8: the TLS pre-shared key derived from the secret (spec LS-TLS-5). */
static void test_tls_psk(void) {
  for (size_t i = 0; i < V.n; i++) {
    const vector *v = &V.v[i];
    if (strncmp(v->id, "V-TLS-", 6) != 0)
      continue;
    uint8_t k[128], psk[LIPSYNC_TLS_PSK_LEN], got[LIPSYNC_TLS_PSK_LEN];
    size_t klen = field_hex(v, "K", k, sizeof k);
    CU_ASSERT_EQUAL_FATAL(field_hex(v, "PSK", psk, sizeof psk), sizeof psk);
    CU_ASSERT_EQUAL(lipsync_tls_psk(k, klen, got), 0);
    CU_ASSERT_EQUAL(memcmp(got, psk, sizeof psk), 0);
  }
  CU_ASSERT(count_prefix("V-TLS-") >= 1);
}

/* Reads an unsigned decimal into |out|; 0 on success. */
static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (!s || !*s)
    return -1;
  *out = strtoull(s, &end, 10);
  return *end == '\0' ? 0 : -1;
}

/* A.10: a version's clock layout, canonical encoding and Version message. */
static void test_versions(void) {
  for (size_t i = 0; i < V.n; i++) {
    const vector *v = &V.v[i];
    if (strncmp(v->id, "V-VERSION-", 10) != 0)
      continue;
    uint64_t ms, counter, clock;
    uint8_t site[16], enc[24], pb[64], u64[8];
    CU_ASSERT_EQUAL_FATAL(parse_u64(field(v, "wall ms"), &ms), 0);
    CU_ASSERT_EQUAL_FATAL(parse_u64(field(v, "counter"), &counter), 0);
    CU_ASSERT_EQUAL_FATAL(parse_u64(field(v, "clock"), &clock), 0);
    CU_ASSERT_EQUAL(clock, ms << 16 | counter);
    CU_ASSERT_EQUAL_FATAL(field_hex(v, "clock (u64be)", u64, sizeof u64), 8);
    CU_ASSERT_EQUAL_FATAL(field_hex(v, "site", site, sizeof site), 16);
    CU_ASSERT_EQUAL_FATAL(field_hex(v, "encoding", enc, sizeof enc), 24);
    for (int k = 0; k < 8; k++) {
      CU_ASSERT_EQUAL(u64[k], (uint8_t)(clock >> (56 - 8 * k)));
      CU_ASSERT_EQUAL(enc[k], u64[k]);
    }
    CU_ASSERT_EQUAL(memcmp(enc + 8, site, 16), 0);
    size_t pblen = field_hex(v, "Version", pb, sizeof pb);
    Lipsync__Version *m = lipsync__version__unpack(NULL, pblen, pb);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT_EQUAL(m->clock, clock);
    CU_ASSERT_TRUE(m->site.len == 16 && memcmp(m->site.data, site, 16) == 0);
    uint8_t repacked[64];
    CU_ASSERT_EQUAL(lipsync__version__pack(m, repacked), pblen);
    CU_ASSERT_EQUAL(memcmp(repacked, pb, pblen), 0);
    lipsync__version__free_unpacked(m, NULL);
  }
  CU_ASSERT(count_prefix("V-VERSION-") >= 4);
}

/* A.11: the order of versions (lipsync_version_cmp), both ways round. */
static void test_version_order(void) {
  int seen = 0;
  for (size_t i = 0; i < V.nrows; i++) {
    char cells[8][256];
    if (strncmp(V.table_rows[i], "| V-ORDER-", 10) != 0)
      continue;
    CU_ASSERT_EQUAL_FATAL(table_cells(V.table_rows[i], cells, 8), 7);
    lipsync_version a, b;
    CU_ASSERT_EQUAL_FATAL(parse_u64(cells[1], &a.clock), 0);
    CU_ASSERT_EQUAL_FATAL(tu_unhex(cells[2], a.site, 16), 16);
    CU_ASSERT_EQUAL_FATAL(parse_u64(cells[3], &b.clock), 0);
    CU_ASSERT_EQUAL_FATAL(tu_unhex(cells[4], b.site, 16), 16);
    int expect = cells[5][0] == '<' ? -1 : cells[5][0] == '>' ? 1 : 0;
    CU_ASSERT_FATAL(strchr("<=>", cells[5][0]) != NULL && cells[5][1] == 0);
    int got = lipsync_version_cmp(&a, &b), back = lipsync_version_cmp(&b, &a);
    if ((got > 0) - (got < 0) != expect || (back > 0) - (back < 0) != -expect)
      CU_FAIL(cells[0]);
    seen++;
  }
  CU_ASSERT(seen >= 5);
}

/* A.11: clock ticks (hlc_tick), the rule every backend's capture follows. */
static void test_ticks(void) {
  int seen = 0;
  for (size_t i = 0; i < V.nrows; i++) {
    char cells[8][256];
    if (strncmp(V.table_rows[i], "| V-TICK-", 9) != 0)
      continue;
    CU_ASSERT_EQUAL_FATAL(table_cells(V.table_rows[i], cells, 8), 5);
    uint64_t last, wall, next;
    CU_ASSERT_EQUAL_FATAL(parse_u64(cells[1], &last), 0);
    CU_ASSERT_EQUAL_FATAL(parse_u64(cells[2], &wall), 0);
    CU_ASSERT_EQUAL_FATAL(parse_u64(cells[3], &next), 0);
    if (hlc_tick(last, wall) != next)
      CU_FAIL(cells[0]);
    seen++;
  }
  CU_ASSERT(seen >= 5);
}

/* A.12: the item digest of live rows and tombstones; the base plays no
 * part. */
static void test_items(void) {
  for (size_t i = 0; i < V.n; i++) {
    const vector *v = &V.v[i];
    if (strncmp(v->id, "V-ITEM-", 7) != 0)
      continue;
    lipsync_item item;
    uint8_t input[41], digest[16], got[16];
    uint64_t deleted;
    memset(&item, 0, sizeof item);
    field_hex(v, "uuid", item.uuid, sizeof item.uuid);
    CU_ASSERT_EQUAL_FATAL(parse_u64(field(v, "clock"), &item.version.clock), 0);
    CU_ASSERT_EQUAL_FATAL(field_hex(v, "site", item.version.site, 16), 16);
    CU_ASSERT_EQUAL_FATAL(parse_u64(field(v, "deleted"), &deleted), 0);
    CU_ASSERT_FATAL(deleted <= 1);
    item.deleted = (int)deleted;
    CU_ASSERT_EQUAL_FATAL(field_hex(v, "input", input, sizeof input), 41);
    field_hex(v, "digest", digest, sizeof digest);
    /* The input is uuid || u64be(clock) || site || u8(deleted). */
    CU_ASSERT_EQUAL(memcmp(input, item.uuid, 16), 0);
    for (int k = 0; k < 8; k++)
      CU_ASSERT_EQUAL(input[16 + k],
                      (uint8_t)(item.version.clock >> (56 - 8 * k)));
    CU_ASSERT_EQUAL(memcmp(input + 24, item.version.site, 16), 0);
    CU_ASSERT_EQUAL(input[40], item.deleted);
    lipsync_item_digest(&item, got);
    if (memcmp(got, digest, 16) != 0)
      CU_FAIL(v->id);
    memset(item.base.site, 0x5a, sizeof item.base.site);
    item.base.clock = 12345;
    lipsync_item_digest(&item, got);
    CU_ASSERT_EQUAL(memcmp(got, digest, 16), 0);
  }
  CU_ASSERT(count_prefix("V-ITEM-") >= 2);
}

int register_vectors_tests(void) {
  static const tu_test tests[] = {
      {"A.1 canonical values", test_values},
      {"A.2 rows and row digests", test_rows},
      {"A.3 fingerprints", test_fingerprints},
      {"A.4 canonical column types", test_column_types},
      {"A.5 schema fingerprints and column order", test_schemas},
      {"A.6 frames decode and re-encode", test_frames},
      {"A.7 malformed input", test_malformed},
      {"A.8 handshake MACs", test_auth},
      {"A.8 TLS pre-shared key", test_tls_psk},
      {"A.10 versions", test_versions},
      {"A.11 version order", test_version_order},
      {"A.11 clock ticks", test_ticks},
      {"A.12 item digests", test_items},
      {NULL, NULL}};
  CU_pSuite s = CU_add_suite("vectors", suite_init, suite_clean);
  if (!s)
    return CU_get_error();
  for (const tu_test *t = tests; t->name; t++)
    if (!CU_add_test(s, t->name, t->fn))
      return CU_get_error();
  return CUE_SUCCESS;
}
