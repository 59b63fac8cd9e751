/* serverlog.c: the server's log (serverlog.h). */
#include "serverlog.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "report.h"

static struct {
  pthread_mutex_t lock;
  FILE *out;
  const char *path; /* NULL: stderr; "-": stdout */
  const char *prog;
  serverlog_format format;
  int quiet;
} log_state = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, "", SERVERLOG_TEXT, 0};

static FILE *open_path(const char *path) {
  if (!path)
    return stderr;
  if (strcmp(path, "-") == 0)
    return stdout;
  FILE *f = fopen(path, "ae");
  if (f)
    setvbuf(f, NULL, _IOLBF, 0);
  return f;
}

int serverlog_open(const char *prog, const char *path, serverlog_format format,
                   int quiet, char *err, size_t errlen) {
  FILE *f = open_path(path);
  if (!f) {
    snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
    return -1;
  }
  log_state.out = f;
  log_state.path = path;
  log_state.prog = prog;
  log_state.format = format;
  log_state.quiet = quiet;
  return 0;
}

static void close_file(FILE *f) {
  if (f && f != stderr && f != stdout)
    fclose(f);
}

int serverlog_reopen(void) {
  if (!log_state.path || strcmp(log_state.path, "-") == 0)
    return 0;
  FILE *f = open_path(log_state.path);
  if (!f) {
    serverlog_message(NULL, "cannot reopen log file %s: %s", log_state.path,
                      strerror(errno));
    return -1;
  }
  pthread_mutex_lock(&log_state.lock);
  FILE *old = log_state.out;
  log_state.out = f;
  pthread_mutex_unlock(&log_state.lock);
  close_file(old);
  return 0;
}

void serverlog_close(void) {
  pthread_mutex_lock(&log_state.lock);
  close_file(log_state.out);
  log_state.out = NULL;
  pthread_mutex_unlock(&log_state.lock);
}

/* Writes one line (a JSON text, or "TIME PROG: |text|"). */
static void emit(json_out *j, const char *time, const char *text) {
  pthread_mutex_lock(&log_state.lock);
  FILE *out = log_state.out ? log_state.out : stderr;
  if (j)
    json_write(j, out);
  else {
    fprintf(out, "%s %s: %s\n", time, log_state.prog, text);
    fflush(out);
  }
  pthread_mutex_unlock(&log_state.lock);
}

/* A JSON line's first fields: "time", "event" and "peer". */
static void json_head(json_out *j, const char *time, const char *event,
                      const char *peer) {
  json_begin(j);
  json_key(j, "time");
  json_string(j, time);
  json_key(j, "event");
  json_string(j, event);
  json_key(j, "peer");
  json_string(j, peer);
}

void serverlog_message(const char *peer, const char *fmt, ...) {
  char time[REPORT_TIME_LEN], text[1024];
  size_t off = 0;
  va_list ap;
  if (log_state.quiet)
    return;
  report_time(time);
  if (peer && log_state.format == SERVERLOG_TEXT)
    off = (size_t)snprintf(text, sizeof text, "%s ", peer);
  va_start(ap, fmt);
  vsnprintf(text + off, sizeof text - off, fmt, ap);
  va_end(ap);
  /* Table names and error messages may come from the client. */
  cli_sanitize(text);
  if (log_state.format == SERVERLOG_TEXT) {
    emit(NULL, time, text);
    return;
  }
  json_out j = {0};
  json_head(&j, time, "message", peer);
  json_key(&j, "message");
  json_string(&j, text);
  json_end(&j);
  emit(&j, time, NULL);
}

/* The outcome of a session, as the log words it. */
static const char *outcome(lipsync_session *session, int result) {
  if (result == 0)
    return "ok";
  if (result == LIPSYNC_ERR_CANCELLED &&
      lipsync_session_error_is_remote(session))
    return "cancelled";
  return "failed";
}

static void session_json(json_out *j, const char *time, const char *peer,
                         lipsync_session *session, int result, double seconds) {
  json_head(j, time, "session", peer);
  json_key(j, "outcome");
  json_string(j, outcome(session, result));
  if (result != 0) {
    char message[600];
    snprintf(message, sizeof message, "%s", lipsync_session_errmsg(session));
    cli_sanitize(message);
    report_error(j, lipsync_error_name(result), message,
                 lipsync_session_error_is_remote(session) != 0);
  } else {
    json_key(j, "error");
    json_null(j);
  }
  json_key(j, "seconds");
  json_seconds(j, seconds);
  report_tables(j, session);
  json_end(j);
}

/* The tables of |session|, comma-separated, or "-". */
static void table_names(lipsync_session *session, char *out, size_t outlen) {
  size_t used = 0;
  out[0] = '\0';
  for (size_t i = 0; i < lipsync_session_table_count(session) && used < outlen;
       i++) {
    lipsync_table_stats st;
    if (lipsync_session_table_stats(session, i, &st) < 0)
      break;
    int n = snprintf(out + used, outlen - used, "%s%s", i ? "," : "",
                     st.name ? st.name : "?");
    if (n < 0)
      break;
    used += (size_t)n;
  }
  if (!out[0])
    snprintf(out, outlen, "-");
}

void serverlog_session(const char *peer, lipsync_session *session, int result,
                       double seconds) {
  if (log_state.quiet)
    return;
  char time[REPORT_TIME_LEN];
  report_time(time);
  if (log_state.format == SERVERLOG_JSON) {
    json_out j = {0};
    session_json(&j, time, peer, session, result, seconds);
    emit(&j, time, NULL);
    return;
  }
  char tables[256], why[700] = "";
  uint64_t bytes_out, bytes_in;
  report_totals sum;
  table_names(session, tables, sizeof tables);
  report_sum(session, &sum);
  lipsync_session_bytes(session, &bytes_out, &bytes_in);
  if (result != 0) {
    /* The message is one clause of the line: no full stop of its own (a
     * database's DETAIL has one). */
    snprintf(why, sizeof why, " (%s): %s", lipsync_strerror(result),
             lipsync_session_errmsg(session));
    size_t len = strlen(why);
    if (len > 0 && why[len - 1] == '.')
      why[len - 1] = '\0';
  }
  serverlog_message(peer,
                    "[%s] %s%s; %" PRIu64 " rows in, %" PRIu64
                    " rows out, %" PRIu64 " bytes in, %" PRIu64
                    " bytes out, %.2fs",
                    tables, outcome(session, result), why, sum.rows_received,
                    sum.rows_sent, bytes_in, bytes_out, seconds);
}

void serverlog_listening(const char *address) {
  if (log_state.format == SERVERLOG_JSON && log_state.out == stdout) {
    char time[REPORT_TIME_LEN];
    json_out j = {0};
    report_time(time);
    json_head(&j, time, "listening", NULL);
    json_key(&j, "address");
    json_string(&j, address);
    json_end(&j);
    emit(&j, time, NULL);
    return;
  }
  printf("listening on %s\n", address);
  fflush(stdout);
}
