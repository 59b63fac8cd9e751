/*
 * serverlog.h: the log of lipsync-server: one line per session (and one
 * per event worth an operator's eye), with a timestamp, as text or as
 * JSON objects (--log-format), on stderr or appended to a file
 * (--log-file) that SIGHUP reopens. Safe to call from every session
 * thread: each line is written whole, under a lock.
 */
#ifndef LIPSYNC_SERVERLOG_H
#define LIPSYNC_SERVERLOG_H

#include <stddef.h>

#include "lipsync.h"

typedef enum serverlog_format {
  SERVERLOG_TEXT,
  SERVERLOG_JSON
} serverlog_format;

/* Starts the log: to |path| (appended; "-" is stdout; NULL is stderr),
 * in |format|, prefixing text lines with |prog|; |quiet| keeps it empty.
 * Returns 0, or -1 with the reason in |err|. */
int serverlog_open(const char *prog, const char *path, serverlog_format format,
                   int quiet, char *err, size_t errlen);
/* Reopens the file (after a log rotation). Returns 0, or -1 (the old file
 * is kept and the failure logged). */
int serverlog_reopen(void);
void serverlog_close(void);

/* Logs a message about the connection from |peer| (NULL: none). */
void serverlog_message(const char *peer, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Logs the end of a session: its peer, tables, outcome (|result|), rows,
 * deletes and bytes each way, and |seconds|. */
void serverlog_session(const char *peer, lipsync_session *session, int result,
                       double seconds);
/* Announces the address the server listens on, on stdout:
 * "listening on ADDRESS", or a JSON object when the log is JSON on
 * stdout. */
void serverlog_listening(const char *address);

#endif /* LIPSYNC_SERVERLOG_H */
