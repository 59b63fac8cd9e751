/* fuzz_util.c: helpers shared by the harnesses (fuzz_util.h). */
#include "fuzz_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void fuzz_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "\n%s:%d: check failed: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  abort();
}

/* ------------------------------------------------------------------ */
/* decisions from the input                                             */
/* ------------------------------------------------------------------ */

uint8_t fuzz_byte(fuzz_input *in) {
  if (!in->len)
    return 0;
  in->len--;
  return *in->data++;
}

uint16_t fuzz_u16(fuzz_input *in) {
  uint16_t hi = fuzz_byte(in);
  return (uint16_t)(hi << 8 | fuzz_byte(in));
}

bool fuzz_more(const fuzz_input *in) {
  return in->len > 0;
}

size_t fuzz_chunk(uint32_t *seed, size_t pos, size_t len) {
  /* A small LCG: chunks of 1 to 32 bytes, sometimes the whole rest. */
  *seed = *seed * 1103515245u + 12345u;
  uint32_t r = *seed >> 16;
  size_t left = len - pos;
  size_t n = (r & 7) == 0 ? left : 1 + (r >> 3) % 32;
  return n < left ? n : left;
}

/* ------------------------------------------------------------------ */
/* a deterministic world                                                */
/* ------------------------------------------------------------------ */

static uint64_t det_state;
static uint64_t det_time_ms = FUZZ_EPOCH_MS;
static sqlite3_vfs det_vfs;

/* splitmix64: every seed gives a full-period stream. */
static uint64_t det_next(void) {
  uint64_t z = (det_state += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static void det_fill(unsigned char *out, size_t n) {
  while (n) {
    uint64_t v = det_next();
    size_t k = n < sizeof v ? n : sizeof v;
    memcpy(out, &v, k);
    out += k;
    n -= k;
  }
}

int __wrap_RAND_bytes(unsigned char *buf, int num) {
  if (num > 0)
    det_fill(buf, (size_t)num);
  return 1;
}

uint64_t __wrap_hlc_wall_ms(void) {
  return det_time_ms;
}

static int det_randomness(sqlite3_vfs *vfs, int n, char *out) {
  if (n > 0)
    det_fill((unsigned char *)out, (size_t)n);
  return n;
}

/* Milliseconds from the Julian day epoch to the Unix epoch. */
#define JULIAN_UNIX_MS INT64_C(210866760000000)

static int det_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
  *out = JULIAN_UNIX_MS + (sqlite3_int64)det_time_ms;
  return SQLITE_OK;
}

static int det_time(sqlite3_vfs *vfs, double *out) {
  *out = (double)(JULIAN_UNIX_MS + (sqlite3_int64)det_time_ms) / 86400000.0;
  return SQLITE_OK;
}

/* SQLite's memory comes from size classes carved out of large blocks:
 * a session makes SQLite allocate and free thousands of small objects, and
 * through ASan's allocator (quarantine, a stack trace each) that was the
 * harnesses' main cost. The blocks are ASan allocations that stay
 * reachable, so LeakSanitizer still sees the pointers SQLite holds. */
#define POOL_HEADER 16        /* keeps blocks 16-byte aligned */
#define POOL_CLASSES 16       /* 32 bytes << k, up to 1 MiB */
#define POOL_BLOCK (4u << 20) /* carved into pieces of one class */
#define POOL_MAX_BLOCKS 256

static void *pool_free[POOL_CLASSES];
static uint8_t *pool_blocks[POOL_MAX_BLOCKS];
static size_t pool_nblocks, pool_left;
static uint8_t *pool_next;

static size_t pool_class_size(int k) {
  return (size_t)32 << k;
}

static int pool_class(size_t n) {
  size_t need = n + POOL_HEADER;
  if (need <= 32)
    return 0;
  int k = 64 - __builtin_clzll((unsigned long long)need - 1) - 5;
  return k < POOL_CLASSES ? k : POOL_CLASSES;
}

static void *pool_malloc(int n) {
  size_t size = (size_t)n;
  int k = pool_class(size);
  uint8_t *p;
  if (k == POOL_CLASSES) {
    p = malloc(size + POOL_HEADER);
  } else if (pool_free[k]) {
    p = pool_free[k];
    memcpy(&pool_free[k], p + POOL_HEADER, sizeof(void *));
  } else {
    if (pool_left < pool_class_size(k)) {
      FUZZ_CHECKF(pool_nblocks < POOL_MAX_BLOCKS, "SQLite's pool is full");
      pool_next = pool_blocks[pool_nblocks++] = malloc(POOL_BLOCK);
      FUZZ_CHECK(pool_next != NULL);
      pool_left = POOL_BLOCK;
    }
    p = pool_next;
    pool_next += pool_class_size(k);
    pool_left -= pool_class_size(k);
  }
  if (!p)
    return NULL;
  memcpy(p, &size, sizeof size);
  return p + POOL_HEADER;
}

static int pool_size(void *q) {
  size_t size;
  memcpy(&size, (uint8_t *)q - POOL_HEADER, sizeof size);
  return (int)size;
}

static void pool_release(void *q) {
  if (!q)
    return;
  uint8_t *p = (uint8_t *)q - POOL_HEADER;
  int k = pool_class((size_t)pool_size(q));
  if (k == POOL_CLASSES) {
    free(p);
    return;
  }
  memcpy(p + POOL_HEADER, &pool_free[k], sizeof(void *));
  pool_free[k] = p;
}

static void *pool_realloc(void *q, int n) {
  void *r = pool_malloc(n);
  if (r && q) {
    int old = pool_size(q);
    memcpy(r, q, (size_t)(old < n ? old : n));
    pool_release(q);
  }
  return r;
}

static int pool_roundup(int n) {
  return (n + 7) & ~7;
}

static int pool_init(void *unused) {
  return SQLITE_OK;
}

static void pool_shutdown(void *unused) {}

void fuzz_sqlite_init(void) {
  static const sqlite3_mem_methods pool = {
      pool_malloc,  pool_release, pool_realloc,  pool_size,
      pool_roundup, pool_init,    pool_shutdown, NULL};
  FUZZ_CHECK(sqlite3_config(SQLITE_CONFIG_MALLOC, &pool) == SQLITE_OK);
  sqlite3_vfs *base = sqlite3_vfs_find(NULL);
  FUZZ_CHECK(base != NULL);
  det_vfs = *base;
  det_vfs.zName = "lipsync-fuzz";
  det_vfs.xRandomness = det_randomness;
  det_vfs.xCurrentTime = det_time;
  if (det_vfs.iVersion >= 2)
    det_vfs.xCurrentTimeInt64 = det_time_int64;
  FUZZ_CHECK(sqlite3_vfs_register(&det_vfs, 1) == SQLITE_OK);
  fuzz_det_reset(0);
}

void fuzz_det_reset(uint64_t seed) {
  det_state = seed;
  sqlite3_randomness(0, NULL); /* reseeds from the VFS at its next use */
}

void fuzz_det_set_time(uint64_t ms) {
  det_time_ms = ms;
}

/* ------------------------------------------------------------------ */
/* SQLite                                                               */
/* ------------------------------------------------------------------ */

sqlite3 *fuzz_db_open(void) {
  sqlite3 *db = NULL;
  int rc = sqlite3_open(":memory:", &db);
  FUZZ_CHECKF(rc == SQLITE_OK, "sqlite3_open: %s", sqlite3_errstr(rc));
  return db;
}

void fuzz_db_exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  FUZZ_CHECKF(rc == SQLITE_OK, "%s: %s", sql, err ? err : "?");
}

fuzz_image fuzz_image_take(sqlite3 *db) {
  fuzz_image img;
  sqlite3_int64 len = 0;
  img.data = sqlite3_serialize(db, "main", &len, 0);
  FUZZ_CHECKF(img.data != NULL, "sqlite3_serialize failed");
  img.len = (size_t)len;
  return img;
}

void fuzz_image_free(fuzz_image *img) {
  sqlite3_free(img->data);
  img->data = NULL;
  img->len = 0;
}

bool fuzz_image_eq(const fuzz_image *a, const fuzz_image *b) {
  return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

sqlite3 *fuzz_db_from_image(const fuzz_image *img) {
  sqlite3 *db = fuzz_db_open();
  unsigned char *copy = sqlite3_malloc64(img->len);
  FUZZ_CHECK(copy != NULL);
  memcpy(copy, img->data, img->len);
  int rc = sqlite3_deserialize(
      db, "main", copy, (sqlite3_int64)img->len, (sqlite3_int64)img->len,
      SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE);
  FUZZ_CHECKF(rc == SQLITE_OK, "sqlite3_deserialize: %s", sqlite3_errmsg(db));
  return db;
}

static void put_len(bytebuf *out, size_t n) {
  uint8_t b[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                  (uint8_t)n};
  FUZZ_CHECK(bytebuf_append(out, b, sizeof b) == 0);
}

void fuzz_dump_query(sqlite3 *db, const char *sql, bytebuf *out) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  FUZZ_CHECKF(rc == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    for (int c = 0; c < sqlite3_column_count(st); c++) {
      uint8_t type = (uint8_t)sqlite3_column_type(st, c);
      FUZZ_CHECK(bytebuf_append(out, &type, 1) == 0);
      if (type == SQLITE_INTEGER) {
        sqlite3_int64 i = sqlite3_column_int64(st, c);
        FUZZ_CHECK(bytebuf_append(out, &i, sizeof i) == 0);
      } else if (type == SQLITE_FLOAT) {
        double d = sqlite3_column_double(st, c);
        FUZZ_CHECK(bytebuf_append(out, &d, sizeof d) == 0);
      } else if (type != SQLITE_NULL) {
        const void *p = sqlite3_column_blob(st, c);
        size_t n = (size_t)sqlite3_column_bytes(st, c);
        put_len(out, n);
        FUZZ_CHECK(bytebuf_append(out, p, n) == 0);
      }
    }
    FUZZ_CHECK(bytebuf_append(out, "\n", 1) == 0);
  }
  FUZZ_CHECKF(rc == SQLITE_DONE, "%s: %s", sql, sqlite3_errmsg(db));
  sqlite3_finalize(st);
}

/* The columns of _lipsync_tables but the marks, as a SELECT list. */
static char *unmarked_columns(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  sqlite3_str *cols = sqlite3_str_new(db);
  int rc = sqlite3_prepare_v2(db,
                              "SELECT name FROM pragma_table_info("
                              "'_lipsync_tables') WHERE name NOT IN"
                              " ('recount', 'ck_token') ORDER BY cid",
                              -1, &st, NULL);
  FUZZ_CHECK(rc == SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW)
    sqlite3_str_appendf(cols, "%s\"%w\"", sqlite3_str_length(cols) ? "," : "",
                        (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  char *list = sqlite3_str_finish(cols);
  FUZZ_CHECK(list != NULL);
  return list;
}

void fuzz_db_dump(sqlite3 *db, bool marks, bytebuf *out) {
  sqlite3_stmt *st = NULL;
  out->len = 0;
  fuzz_dump_query(db,
                  "SELECT type, name, tbl_name, sql FROM main.sqlite_schema"
                  " ORDER BY type, name",
                  out);
  int rc = sqlite3_prepare_v2(db,
                              "SELECT name FROM main.sqlite_schema WHERE"
                              " type = 'table' ORDER BY name",
                              -1, &st, NULL);
  FUZZ_CHECK(rc == SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    char *cols = NULL;
    if (!marks && strcmp(name, "_lipsync_tables") == 0)
      cols = unmarked_columns(db);
    char *sql =
        sqlite3_mprintf("SELECT %s FROM main.\"%w\"", cols ? cols : "*", name);
    FUZZ_CHECK(sql != NULL);
    FUZZ_CHECK(bytebuf_append(out, name, strlen(name) + 1) == 0);
    fuzz_dump_query(db, sql, out);
    sqlite3_free(sql);
    sqlite3_free(cols);
  }
  sqlite3_finalize(st);
}

bool fuzz_buf_eq(const bytebuf *a, const bytebuf *b) {
  return a->len == b->len && (a->len == 0 || !memcmp(a->data, b->data, a->len));
}

/* ------------------------------------------------------------------ */
/* framing                                                              */
/* ------------------------------------------------------------------ */

size_t fuzz_frame_size(const uint8_t *p, size_t len) {
  if (len < 4)
    return 0;
  size_t n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
  return len - 4 >= n ? 4 + n : 0;
}

uint32_t fuzz_frame_body(const uint8_t *p, size_t size) {
  uint64_t tag = 0;
  for (size_t i = 4, shift = 0; i < size && shift < 35; i++, shift += 7) {
    tag |= (uint64_t)(p[i] & 0x7F) << shift;
    if (!(p[i] & 0x80))
      return (uint32_t)(tag >> 3);
  }
  return 0;
}
