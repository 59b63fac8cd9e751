/* store_fixture.c: the fixture over any storage backend (store_fixture.h),
 * and helpers the backends' tests share. */
#include "store_fixture.h"

#include "canon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const sfx_backend *current;

void sfx_use(const sfx_backend *be) {
  current = be;
}

const sfx_backend *sfx_current(void) {
  return current;
}

static void record_failure(const char *msg, const char *file, int line) {
  CU_assertImplementation(CU_FALSE, (unsigned)line, msg, file, "", CU_FALSE);
}

/* ------------------------------------------------------------------ */
/* The fixture                                                          */
/* ------------------------------------------------------------------ */

bool sfx_open_at(sfx *fx, const char *setup, const char *file, int line) {
  memset(fx, 0, sizeof *fx);
  fx->be = current;
  if (!fx->be) {
    record_failure("no storage backend: the suite did not call sfx_use", file,
                   line);
    return false;
  }
  if (!fx->be->open(fx, file, line))
    return false;
  if (setup && !sfx_exec_at(fx, false, setup, file, line))
    return false;
  return fx->be->wrap(fx, file, line);
}

void sfx_close(sfx *fx) {
  if (fx->be)
    fx->be->close(fx);
  fx->store = NULL;
}

const char *tname(const sfx *fx, const char *table, char *out, size_t outlen) {
  fx->be->table_name(fx, table, out, outlen);
  return out;
}

const char *sfx_name(sfx *fx, const char *table) {
  char *out = fx->names[fx->next_name++ % 4];
  return tname(fx, table, out, sizeof fx->names[0]);
}

bool sfx_is(const sfx *fx, const char *name) {
  return strcmp(fx->be->name, name) == 0;
}

const char *sfx_pick(const sfx *fx, const char *sqlite, const char *pg) {
  return sfx_is(fx, "sqlite") ? sqlite : pg;
}

/* What placeholder |p| (at "{") stands for, and its length in |*len|;
 * NULL if none starts there. */
static const char *placeholder(const sfx *fx, const char *p, size_t *len) {
  const struct {
    const char *name, *value;
  } map[] = {
      {"{S}", fx->qschema},
      {"{real}", fx->be->real_type},
      {"{blob}", fx->be->blob_type},
      {"{uuid}", fx->be->uuid_type},
  };
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    *len = strlen(map[i].name);
    if (strncmp(p, map[i].name, *len) == 0)
      return map[i].value;
  }
  return NULL;
}

char *sfx_expand(const sfx *fx, const char *sql) {
  size_t n = 1, len;
  const char *v;
  for (const char *p = sql; *p;) {
    v = *p == '{' ? placeholder(fx, p, &len) : NULL;
    n += v ? strlen(v) : 1;
    p += v ? len : 1;
  }
  char *out = malloc(n), *o = out;
  if (!out)
    return NULL;
  for (const char *p = sql; *p;) {
    v = *p == '{' ? placeholder(fx, p, &len) : NULL;
    if (v) {
      memcpy(o, v, strlen(v));
      o += strlen(v);
      p += len;
    } else {
      *o++ = *p++;
    }
  }
  *o = '\0';
  return out;
}

/* Runs |sql| expanded; returns the backend's error (malloc'd) or NULL, and
 * the first value in |*value| if asked. */
static char *run(sfx *fx, bool app, const char *sql, char **value) {
  char *full = sfx_expand(fx, sql);
  char *err =
      full ? fx->be->run(fx, app, full, value) : strdup("out of memory");
  free(full);
  return err;
}

static bool report(char *err, const char *sql, const char *file, int line) {
  if (!err)
    return true;
  char msg[1200];
  snprintf(msg, sizeof msg, "SQL failed: %.600s: %s", sql, err);
  record_failure(msg, file, line);
  free(err);
  return false;
}

bool sfx_exec_at(sfx *fx, bool app, const char *sql, const char *file,
                 int line) {
  return report(run(fx, app, sql, NULL), sql, file, line);
}

char *sfx_text_at(sfx *fx, bool app, const char *sql, const char *file,
                  int line) {
  char *value = NULL;
  if (!report(run(fx, app, sql, &value), sql, file, line)) {
    free(value);
    return NULL;
  }
  return value;
}

long long sfx_int_at(sfx *fx, bool app, const char *sql, long long dflt,
                     const char *file, int line) {
  char *text = sfx_text_at(fx, app, sql, file, line);
  long long v = text ? strtoll(text, NULL, 10) : dflt;
  free(text);
  return v;
}

bool sfx_uncaptured_at(sfx *fx, const char *sql, const char *file, int line) {
  size_t n = strlen(fx->be->uncaptured_begin) + strlen(sql) +
             strlen(fx->be->uncaptured_end) + 4;
  char *full = malloc(n);
  if (!full)
    return false;
  snprintf(full, n, "%s %s; %s", fx->be->uncaptured_begin, sql,
           fx->be->uncaptured_end);
  bool ok = sfx_exec_at(fx, true, full, file, line);
  free(full);
  return ok;
}

char *sfx_exec_fails_at(sfx *fx, bool app, const char *sql, const char *file,
                        int line) {
  char *err = run(fx, app, sql, NULL);
  if (!err) {
    char msg[800];
    snprintf(msg, sizeof msg, "SQL succeeded, expected to fail: %.600s", sql);
    record_failure(msg, file, line);
  }
  return err;
}

/* ------------------------------------------------------------------ */
/* Sessions                                                             */
/* ------------------------------------------------------------------ */

static lipsync_table *open_prepared(lipsync_store *store, sfx *fx,
                                    const char *table, int rc) {
  lipsync_table *t = NULL;
  char name[512];
  CU_ASSERT_EQUAL(rc, 0);
  if (rc == 0)
    rc = store_open_table(store, tname(fx, table, name, sizeof name), &t);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc == 0)
    rc = store_prepare_table(store, t);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc)
    fprintf(stderr, "\n  %s: %s\n", table, store_errmsg(store));
  return rc == 0 ? t : NULL;
}

lipsync_table *begin_prepared(sfx *fx, const char *table) {
  return open_prepared(fx->store, fx, table, store_begin(fx->store));
}

lipsync_table *begin_on(lipsync_store *store, sfx *fx, const char *table) {
  return open_prepared(store, fx, table, store_begin_read(store));
}

lipsync_table *also_prepared(lipsync_store *store, sfx *fx, const char *table) {
  return open_prepared(store, fx, table, 0);
}

bool prepare_commit(sfx *fx, const char *table) {
  if (!begin_prepared(fx, table)) {
    store_rollback(fx->store);
    return false;
  }
  int rc = store_commit(fx->store);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc) {
    fprintf(stderr, "\n  %s: %s\n", table, store_errmsg(fx->store));
    store_rollback(fx->store);
  }
  return rc == 0;
}

/* ------------------------------------------------------------------ */
/* Rows and items                                                       */
/* ------------------------------------------------------------------ */

bool contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

void uuid_fill(uint8_t uuid[LIPSYNC_UUID_LEN], uint8_t b) {
  memset(uuid, b, LIPSYNC_UUID_LEN);
}

lipsync_version version_of(uint64_t clock, uint8_t site_byte) {
  lipsync_version v;
  v.clock = clock;
  memset(v.site, site_byte, sizeof v.site);
  return v;
}

int insert_row(lipsync_store *store, lipsync_table *t, const uint8_t *uuid,
               const lipsync_value *values, size_t n) {
  lipsync_row row = {.nvalues = n, .values = values};
  memcpy(row.uuid, uuid, LIPSYNC_UUID_LEN);
  return store_insert(store, t, &row);
}

int apply_row(lipsync_store *store, lipsync_table *t, const uint8_t *uuid,
              const lipsync_value *values, size_t n, lipsync_version v,
              int deleted, bool update) {
  lipsync_row row = {.nvalues = deleted ? 0 : n};
  memcpy(row.uuid, uuid, LIPSYNC_UUID_LEN);
  row.values = deleted ? NULL : values;
  row.version = v;
  row.deleted = deleted;
  int rc = update ? store_update(store, t, &row) : store_insert(store, t, &row);
  if (rc)
    fprintf(stderr, "\n  apply: %s\n", store_errmsg(store));
  return rc;
}

lipsync_row applied(const uint8_t *uuid, const lipsync_value *values, size_t n,
                    lipsync_version v, int deleted, const lipsync_item *old) {
  lipsync_row row;
  lipsync_item item;
  memset(&row, 0, sizeof row);
  memcpy(row.uuid, uuid, LIPSYNC_UUID_LEN);
  row.values = deleted ? NULL : values;
  row.nvalues = deleted ? 0 : n;
  row.version = v;
  row.deleted = deleted;
  memset(&item, 0, sizeof item);
  memcpy(item.uuid, uuid, LIPSYNC_UUID_LEN);
  item.version = v;
  item.deleted = deleted;
  lipsync_item_digest(&item, row.digest);
  if (old) {
    row.had_item = 1;
    lipsync_item_digest(old, row.old_digest);
  }
  return row;
}

size_t count_rows(lipsync_store *store, lipsync_table *t, const uint8_t *lower,
                  const uint8_t *upper) {
  lipsync_cursor *c = NULL;
  lipsync_row row;
  size_t n = 0;
  int rc = store_scan(store, t, lower, upper, &c);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc) {
    fprintf(stderr, "\n  scan: %s\n", store_errmsg(store));
    return 0;
  }
  while ((rc = store_next(store, c, &row)) == 1)
    n++;
  CU_ASSERT_EQUAL(rc, 0);
  if (rc)
    fprintf(stderr, "\n  next: %s\n", store_errmsg(store));
  store_close_cursor(store, c);
  return n;
}

void check_value_at(const lipsync_value *got, const lipsync_value *want,
                    const char *what, const char *file, int line) {
  char g[96], w[96], msg[400];
  if (tu_value_eq(got, want)) {
    CU_assertImplementation(CU_TRUE, (unsigned)line, what, file, "", CU_FALSE);
    return;
  }
  tu_value_str(got, g, sizeof g);
  tu_value_str(want, w, sizeof w);
  snprintf(msg, sizeof msg, "%s: got %s, want %s", what, g, w);
  record_failure(msg, file, line);
}

int item_of(lipsync_store *store, lipsync_table *t, const uint8_t *uuid,
            lipsync_item *out) {
  lipsync_cursor *c = NULL;
  int rc = store_lookup_items(store, t, uuid, 1, &c);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc)
    return 0;
  rc = store_next_item(store, c, out);
  CU_ASSERT(rc >= 0);
  store_close_cursor(store, c);
  return rc == 1;
}

bool uuid_of(sfx *fx, int a, uint8_t out[LIPSYNC_UUID_LEN]) {
  char sql[120];
  snprintf(sql, sizeof sql, "SELECT _lipsync_uuid FROM t WHERE a = %d", a);
  char *text = FX_TEXT(fx, sql);
  bool ok = text && lipsync_uuid_parse(text, strlen(text), out) == 0;
  free(text);
  CU_ASSERT(ok);
  return ok;
}

int sum_items(lipsync_store *store, lipsync_table *t, lipsync_summary *out) {
  lipsync_cursor *c = NULL;
  lipsync_item it;
  canon_fp fp;
  uint8_t d[LIPSYNC_DIGEST_LEN];
  int rc;
  canon_fp_init(&fp);
  if ((rc = store_scan_items(store, t, &c)) == 0) {
    while ((rc = store_next_item(store, c, &it)) == 1) {
      lipsync_item_digest(&it, d);
      canon_fp_add(&fp, d);
    }
    store_close_cursor(store, c);
  }
  canon_fp_store(&fp, out);
  return rc;
}

void check_summary_at(sfx *fx, const char *table, const char *file, int line) {
  lipsync_summary kept, all;
  char msg[300];
  lipsync_table *t = begin_on(fx->store, fx, table);
  bool ok = t && store_summarize(fx->store, t, &kept) == 0 &&
            sum_items(fx->store, t, &all) == 0;
  bool same = ok && kept.count == all.count &&
              memcmp(kept.sum, all.sum, LIPSYNC_DIGEST_LEN) == 0;
  snprintf(msg, sizeof msg,
           "kept summary: %llu items, sum %s equal; items: %llu",
           (unsigned long long)kept.count, same ? "" : "not",
           (unsigned long long)all.count);
  CU_assertImplementation(same, (unsigned)line, msg, file, "", CU_FALSE);
  store_rollback(fx->store);
}

int changes_since(lipsync_store *store, lipsync_table *t,
                  const lipsync_position *since,
                  uint8_t (*out)[LIPSYNC_UUID_LEN], int cap) {
  lipsync_cursor *c = NULL;
  lipsync_item it;
  int n = 0, rc = store_scan_changes(store, t, since, &c);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc) {
    fprintf(stderr, "\n  changes: %s\n", store_errmsg(store));
    return -1;
  }
  while ((rc = store_next_item(store, c, &it)) == 1) {
    if (n > 0 && n <= cap)
      CU_ASSERT(memcmp(out[n - 1], it.uuid, LIPSYNC_UUID_LEN) < 0);
    if (n < cap)
      memcpy(out[n], it.uuid, LIPSYNC_UUID_LEN);
    n++;
  }
  CU_ASSERT_EQUAL(rc, 0);
  store_close_cursor(store, c);
  return n;
}

bool has_uuid(uint8_t (*set)[LIPSYNC_UUID_LEN], int n, const uint8_t *uuid) {
  for (int i = 0; i < n; i++)
    if (memcmp(set[i], uuid, LIPSYNC_UUID_LEN) == 0)
      return true;
  return false;
}

/* ------------------------------------------------------------------ */
/* Time                                                                 */
/* ------------------------------------------------------------------ */

double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}
