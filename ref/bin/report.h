/*
 * report.h: what a session did, for people and for programs: the JSON
 * objects of `lipsync-client --json` and of the server's log, and the
 * timestamps of the log. Field names are stable (README, "JSON output").
 *
 * A report is built in memory and written with one call, so that the
 * lines of a multi-threaded server never interleave.
 */
#ifndef LIPSYNC_REPORT_H
#define LIPSYNC_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lipsync.h"

/* A JSON text being written: values and keys are separated by commas as
 * they come. On out of memory the text is dropped (|failed|). */
typedef struct json_out {
  char *data;
  size_t len, cap;
  bool failed;
  bool need_comma;
} json_out;

void json_begin(json_out *j); /* "{" */
void json_end(json_out *j);   /* "}" */
void json_array(json_out *j); /* "[" */
void json_array_end(json_out *j);
/* "key": — the value follows. */
void json_key(json_out *j, const char *key);
void json_string(json_out *j, const char *s); /* NULL: null */
void json_uint(json_out *j, uint64_t v);
void json_int(json_out *j, long long v);
void json_seconds(json_out *j, double seconds); /* 3 decimals */
void json_bool(json_out *j, bool v);
void json_null(json_out *j);
/* Writes the text and a newline to |out| in one call, flushes, and frees
 * the text. Returns 0, or -1 if it was dropped or could not be written. */
int json_write(json_out *j, FILE *out);
void json_free(json_out *j);

/* The current time as RFC 3339 UTC with milliseconds,
 * "2026-12-04T05:06:07.089Z". */
#define REPORT_TIME_LEN 32
void report_time(char out[REPORT_TIME_LEN]);

/* "tables": [...], "bytes_sent", "bytes_received": the counters of
 * |session| (lipsync_table_stats), one object per table. */
void report_tables(json_out *j, lipsync_session *session);

/* "error": {"code", "message", "remote"}: |code| names the error
 * (lipsync_error_name(), or a name of the programs' own such as "TLS"). */
void report_error(json_out *j, const char *code, const char *message,
                  bool remote);

/* The sums of the counters over the tables of |session|. */
typedef struct report_totals {
  uint64_t rows_sent, rows_received, deletes_sent, deletes_received;
} report_totals;
void report_sum(lipsync_session *session, report_totals *out);

#endif /* LIPSYNC_REPORT_H */
