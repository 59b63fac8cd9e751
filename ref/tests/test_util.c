/* test_util.c: helpers shared by the unit tests (test_util.h). */
#include "test_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Records a failure with |msg| at |file|:|line|. */
static void record_failure(const char *msg, const char *file, int line) {
  CU_assertImplementation(CU_FALSE, (unsigned)line, msg, file, "", CU_FALSE);
}

int tu_add_suite(const char *name, const tu_test *tests) {
  return tu_add_suite_init(name, NULL, tests);
}

int tu_add_suite_init(const char *name, int (*init)(void),
                      const tu_test *tests) {
  CU_pSuite suite = CU_add_suite(name, init, NULL);
  if (!suite)
    return CU_get_error();
  for (; tests->name; tests++)
    if (!CU_add_test(suite, tests->name, tests->fn))
      return CU_get_error();
  return CUE_SUCCESS;
}

sqlite3 *tu_db_open_at(const char *path, const char *file, int line) {
  sqlite3 *db = NULL;
  char msg[512];
  int rc = sqlite3_open_v2(path, &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (rc == SQLITE_OK)
    return db;
  snprintf(msg, sizeof msg, "cannot open %s: %s", path,
           db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  record_failure(msg, file, line);
  sqlite3_close(db);
  return NULL;
}

bool tu_exec_at(sqlite3 *db, const char *sql, const char *file, int line) {
  char *err = NULL;
  char msg[1024];
  if (sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK)
    return true;
  snprintf(msg, sizeof msg, "SQL failed: %s: %s", sql, err ? err : "?");
  sqlite3_free(err);
  record_failure(msg, file, line);
  return false;
}

/* Prepares |sql| and steps to its first row. Returns the statement (on a
 * row or done), or NULL with a failure recorded. */
static sqlite3_stmt *first_row(sqlite3 *db, const char *sql, int *rc,
                               const char *file, int line) {
  sqlite3_stmt *st = NULL;
  char msg[1024];
  *rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (*rc == SQLITE_OK) {
    *rc = sqlite3_step(st);
    if (*rc == SQLITE_ROW || *rc == SQLITE_DONE)
      return st;
  }
  snprintf(msg, sizeof msg, "SQL failed: %s: %s", sql, sqlite3_errmsg(db));
  record_failure(msg, file, line);
  sqlite3_finalize(st);
  return NULL;
}

int64_t tu_query_int_at(sqlite3 *db, const char *sql, int64_t dflt,
                        const char *file, int line) {
  int rc;
  sqlite3_stmt *st = first_row(db, sql, &rc, file, line);
  int64_t v = dflt;
  if (st && rc == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

char *tu_query_text_at(sqlite3 *db, const char *sql, const char *file,
                       int line) {
  int rc;
  sqlite3_stmt *st = first_row(db, sql, &rc, file, line);
  char *v = NULL;
  if (st && rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
    const char *t = (const char *)sqlite3_column_text(st, 0);
    v = t ? strdup(t) : NULL;
  }
  sqlite3_finalize(st);
  return v;
}

/* Appends the rows of |sql| to |out|, a line each, every value in a form
 * that tells types apart. */
static bool dump_rows(sqlite3 *db, const char *sql, sqlite3_str *out) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  while (st && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    for (int c = 0; c < sqlite3_column_count(st); c++) {
      const unsigned char *p;
      int n;
      switch (sqlite3_column_type(st, c)) {
      case SQLITE_INTEGER:
        sqlite3_str_appendf(out, " %lld", sqlite3_column_int64(st, c));
        break;
      case SQLITE_FLOAT:
        sqlite3_str_appendf(out, " %!.17g", sqlite3_column_double(st, c));
        break;
      case SQLITE_TEXT:
        sqlite3_str_appendf(out, " %Q", sqlite3_column_text(st, c));
        break;
      case SQLITE_BLOB:
        p = sqlite3_column_blob(st, c);
        n = sqlite3_column_bytes(st, c);
        sqlite3_str_appendall(out, " x'");
        for (int i = 0; i < n; i++)
          sqlite3_str_appendf(out, "%02x", p[i]);
        sqlite3_str_appendall(out, "'");
        break;
      default:
        sqlite3_str_appendall(out, " NULL");
      }
    }
    sqlite3_str_appendall(out, "\n");
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE;
}

char *tu_db_dump_at(sqlite3 *db, const char *skip, const char *file, int line) {
  sqlite3_str *out = sqlite3_str_new(db);
  sqlite3_stmt *st = NULL;
  char msg[600];
  bool ok = dump_rows(db,
                      "SELECT type, name, sql FROM main.sqlite_schema"
                      " ORDER BY type, name",
                      out) &&
            sqlite3_prepare_v2(db,
                               "SELECT name FROM main.sqlite_schema WHERE"
                               " type = 'table' AND name NOT LIKE 'sqlite%'"
                               " AND name IS NOT ?1 ORDER BY name",
                               -1, &st, NULL) == SQLITE_OK;
  if (ok)
    sqlite3_bind_text(st, 1, skip, -1, SQLITE_STATIC);
  while (ok && sqlite3_step(st) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    char *sql = sqlite3_mprintf("SELECT * FROM main.\"%w\"", name);
    sqlite3_str_appendf(out, "table %s\n", name);
    ok = sql && dump_rows(db, sql, out);
    sqlite3_free(sql);
  }
  sqlite3_finalize(st);
  char *text = sqlite3_str_finish(out);
  char *copy = ok && text ? strdup(text) : NULL;
  sqlite3_free(text);
  if (!copy) {
    snprintf(msg, sizeof msg, "cannot dump the database: %s",
             sqlite3_errmsg(db));
    record_failure(msg, file, line);
  }
  return copy;
}

bool tu_tmpdir(char *out, size_t outlen) {
  const char *base = getenv("TMPDIR");
  if (!base || !*base)
    base = "/tmp";
  int n = snprintf(out, outlen, "%s/lipsync-test-XXXXXX", base);
  if (n < 0 || (size_t)n >= outlen || !mkdtemp(out)) {
    record_failure("cannot create a temporary directory", __FILE__, __LINE__);
    return false;
  }
  return true;
}

void tu_path(char *out, size_t outlen, const char *dir, const char *name) {
  snprintf(out, outlen, "%s/%s", dir, name);
}

bool tu_copy_file_at(const char *from, const char *to, const char *file,
                     int line) {
  char buf[65536], msg[1100];
  size_t n;
  FILE *in = fopen(from, "rb");
  FILE *out = in ? fopen(to, "wb") : NULL;
  bool ok = in && out;
  while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0)
    ok = fwrite(buf, 1, n, out) == n;
  ok = ok && !ferror(in);
  if (out && fclose(out) != 0)
    ok = false;
  if (in)
    fclose(in);
  if (!ok) {
    snprintf(msg, sizeof msg, "cannot copy %s to %s", from, to);
    record_failure(msg, file, line);
  }
  return ok;
}

void tu_rmdir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char path[4096];
  if (!d)
    return;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    tu_path(path, sizeof path, dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(dir);
}

void tu_hex(const void *data, size_t len, char *out) {
  static const char digits[] = "0123456789abcdef";
  const uint8_t *p = data;
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * len] = '\0';
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

size_t tu_unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t len = strlen(hex);
  if (len % 2 || len / 2 > cap)
    return (size_t)-1;
  for (size_t i = 0; i < len / 2; i++) {
    int h = hex_digit(hex[2 * i]), l = hex_digit(hex[2 * i + 1]);
    if (h < 0 || l < 0)
      return (size_t)-1;
    out[i] = (uint8_t)(h << 4 | l);
  }
  return len / 2;
}

void tu_uuid_at(const char *text, uint8_t out[LIPSYNC_UUID_LEN],
                const char *file, int line) {
  char msg[128];
  if (lipsync_uuid_parse(text, strlen(text), out) == 0)
    return;
  snprintf(msg, sizeof msg, "not a UUID: %.60s", text);
  record_failure(msg, file, line);
  memset(out, 0, LIPSYNC_UUID_LEN);
}

lipsync_value tu_null(void) {
  lipsync_value v;
  memset(&v, 0, sizeof v);
  v.type = LIPSYNC_NULL;
  return v;
}

lipsync_value tu_int(int64_t i) {
  lipsync_value v = tu_null();
  v.type = LIPSYNC_INTEGER;
  v.u.integer = i;
  return v;
}

lipsync_value tu_real(double d) {
  lipsync_value v = tu_null();
  v.type = LIPSYNC_REAL;
  v.u.real = d;
  return v;
}

lipsync_value tu_textn(const void *p, size_t len) {
  lipsync_value v = tu_null();
  v.type = LIPSYNC_TEXT;
  v.u.bytes.data = p;
  v.u.bytes.len = len;
  return v;
}

lipsync_value tu_text(const char *s) {
  return tu_textn(s, strlen(s));
}

lipsync_value tu_blob(const void *p, size_t len) {
  lipsync_value v = tu_textn(p, len);
  v.type = LIPSYNC_BLOB;
  return v;
}

bool tu_value_eq(const lipsync_value *a, const lipsync_value *b) {
  if (a->type != b->type)
    return false;
  switch (a->type) {
  case LIPSYNC_INTEGER:
    return a->u.integer == b->u.integer;
  case LIPSYNC_REAL:
    return memcmp(&a->u.real, &b->u.real, sizeof a->u.real) == 0;
  case LIPSYNC_TEXT:
  case LIPSYNC_BLOB:
    return a->u.bytes.len == b->u.bytes.len &&
           (a->u.bytes.len == 0 ||
            memcmp(a->u.bytes.data, b->u.bytes.data, a->u.bytes.len) == 0);
  default:
    return true;
  }
}

void tu_value_str(const lipsync_value *v, char *out, size_t outlen) {
  char hex[2 * 16 + 1];
  size_t shown;
  switch (v->type) {
  case LIPSYNC_NULL:
    snprintf(out, outlen, "NULL");
    break;
  case LIPSYNC_INTEGER:
    snprintf(out, outlen, "INTEGER %lld", (long long)v->u.integer);
    break;
  case LIPSYNC_REAL:
    snprintf(out, outlen, "REAL %a", v->u.real);
    break;
  case LIPSYNC_TEXT:
  case LIPSYNC_BLOB:
    shown = v->u.bytes.len < 16 ? v->u.bytes.len : 16;
    tu_hex(v->u.bytes.data, shown, hex);
    snprintf(out, outlen, "%s(%zu) %s%s",
             v->type == LIPSYNC_TEXT ? "TEXT" : "BLOB", v->u.bytes.len, hex,
             shown < v->u.bytes.len ? "..." : "");
    break;
  default:
    snprintf(out, outlen, "type %d", (int)v->type);
    break;
  }
}
