/* report.c: JSON reports and log timestamps (report.h). */
#include "report.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static void put(json_out *j, const char *s, size_t n) {
  if (j->failed)
    return;
  if (j->len + n + 1 > j->cap) {
    size_t cap = j->cap ? j->cap : 256;
    while (cap < j->len + n + 1)
      cap *= 2;
    char *p = realloc(j->data, cap);
    if (!p) {
      j->failed = true;
      return;
    }
    j->data = p;
    j->cap = cap;
  }
  memcpy(j->data + j->len, s, n);
  j->len += n;
  j->data[j->len] = '\0';
}

static void putf(json_out *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void putf(json_out *j, const char *fmt, ...) {
  char buf[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n > 0)
    put(j, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Before a value or a key: a comma if one came before it at this level. */
static void sep(json_out *j) {
  if (j->need_comma)
    put(j, ",", 1);
  j->need_comma = true;
}

void json_begin(json_out *j) {
  sep(j);
  put(j, "{", 1);
  j->need_comma = false;
}

void json_end(json_out *j) {
  put(j, "}", 1);
  j->need_comma = true;
}

void json_array(json_out *j) {
  sep(j);
  put(j, "[", 1);
  j->need_comma = false;
}

void json_array_end(json_out *j) {
  put(j, "]", 1);
  j->need_comma = true;
}

static void quoted(json_out *j, const char *s) {
  put(j, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') {
      char esc[2] = {'\\', (char)*p};
      put(j, esc, 2);
    } else if (*p < 0x20 || *p == 0x7f) {
      putf(j, "\\u%04x", *p);
    } else {
      put(j, (const char *)p, 1); /* UTF-8 passes as it is */
    }
  }
  put(j, "\"", 1);
}

void json_key(json_out *j, const char *key) {
  sep(j);
  quoted(j, key);
  put(j, ":", 1);
  j->need_comma = false;
}

void json_string(json_out *j, const char *s) {
  sep(j);
  if (s)
    quoted(j, s);
  else
    put(j, "null", 4);
}

void json_uint(json_out *j, uint64_t v) {
  sep(j);
  putf(j, "%" PRIu64, v);
}

void json_int(json_out *j, long long v) {
  sep(j);
  putf(j, "%lld", v);
}

void json_seconds(json_out *j, double seconds) {
  sep(j);
  putf(j, "%.3f", seconds >= 0 ? seconds : 0);
}

void json_bool(json_out *j, bool v) {
  sep(j);
  put(j, v ? "true" : "false", v ? 4 : 5);
}

void json_null(json_out *j) {
  sep(j);
  put(j, "null", 4);
}

int json_write(json_out *j, FILE *out) {
  int rc = -1;
  put(j, "\n", 1);
  if (!j->failed && fwrite(j->data, 1, j->len, out) == j->len &&
      fflush(out) == 0)
    rc = 0;
  json_free(j);
  return rc;
}

void json_free(json_out *j) {
  free(j->data);
  memset(j, 0, sizeof *j);
}

void report_time(char out[REPORT_TIME_LEN]) {
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  time_t secs = tv.tv_sec;
  gmtime_r(&secs, &tm);
  size_t n = strftime(out, REPORT_TIME_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, REPORT_TIME_LEN - n, ".%03dZ", (int)(tv.tv_usec / 1000));
}

void report_tables(json_out *j, lipsync_session *session) {
  uint64_t sent = 0, received = 0;
  json_key(j, "tables");
  json_array(j);
  for (size_t i = 0; i < lipsync_session_table_count(session); i++) {
    lipsync_table_stats st;
    if (lipsync_session_table_stats(session, i, &st) < 0)
      break;
    json_begin(j);
    json_key(j, "name");
    json_string(j, st.name);
    json_key(j, "remote");
    json_string(j, st.remote);
    json_key(j, "incremental");
    json_bool(j, lipsync_session_table_incremental(session, i) != 0);
    json_key(j, "rows_sent");
    json_uint(j, st.rows_sent);
    json_key(j, "rows_received");
    json_uint(j, st.rows_received);
    json_key(j, "deletes_sent");
    json_uint(j, st.deletes_sent);
    json_key(j, "deletes_received");
    json_uint(j, st.deletes_received);
    json_key(j, "changed_both_kept");
    json_uint(j, st.changed_both_kept);
    json_key(j, "changed_both_taken");
    json_uint(j, st.changed_both_taken);
    json_key(j, "conflicts");
    json_uint(j, st.conflicts);
    json_key(j, "bytes_sent");
    json_uint(j, st.bytes_sent);
    json_key(j, "bytes_received");
    json_uint(j, st.bytes_received);
    json_end(j);
  }
  json_array_end(j);
  lipsync_session_bytes(session, &sent, &received);
  json_key(j, "bytes_sent");
  json_uint(j, sent);
  json_key(j, "bytes_received");
  json_uint(j, received);
}

void report_error(json_out *j, const char *code, const char *message,
                  bool remote) {
  json_key(j, "error");
  json_begin(j);
  json_key(j, "code");
  json_string(j, code);
  json_key(j, "message");
  json_string(j, message);
  json_key(j, "remote");
  json_bool(j, remote);
  json_end(j);
}

void report_sum(lipsync_session *session, report_totals *out) {
  memset(out, 0, sizeof *out);
  for (size_t i = 0; i < lipsync_session_table_count(session); i++) {
    lipsync_table_stats st;
    if (lipsync_session_table_stats(session, i, &st) < 0)
      break;
    out->rows_sent += st.rows_sent;
    out->rows_received += st.rows_received;
    out->deletes_sent += st.deletes_sent;
    out->deletes_received += st.deletes_received;
  }
}
