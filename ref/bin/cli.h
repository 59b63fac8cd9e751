/*
 * cli.h: what lipsync-server and lipsync-client share.
 *
 * The exit status of both programs, the shared secret (read from a file or
 * the environment, never from argv, and wiped after use), databases, socket
 * helpers, and the progress line the client draws on a terminal. The
 * command line is options.h's.
 * Helpers that can fail return 0 or -1 and describe the failure in a
 * caller-supplied buffer, so each program words its own messages.
 */
#ifndef LIPSYNC_CLI_H
#define LIPSYNC_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "lipsync.h"

/* Exit status of both programs. Scripts depend on these numbers: never
 * renumber them. */
enum cli_exit {
  CLI_EXIT_OK = 0,
  CLI_EXIT_INTERNAL = 1,   /* internal or any other error */
  CLI_EXIT_USAGE = 2,      /* bad or missing option, unusable secret */
  CLI_EXIT_AUTH = 3,       /* the peer does not hold the same secret */
  CLI_EXIT_SCHEMA = 4,     /* schema mismatch, table unknown or not offered */
  CLI_EXIT_PEER = 5,       /* protocol, network, timeout, peer went away */
  CLI_EXIT_DATABASE = 6,   /* the local database failed or refused a value */
  CLI_EXIT_CONFLICT = 7,   /* rows with the same UUID differ */
  CLI_EXIT_BUSY = 8,       /* another writer got in the way: sync again */
  CLI_EXIT_TLS = 9,        /* TLS failed: certificate not accepted, ... */
  CLI_EXIT_TRANSPORT = 10, /* one side speaks TLS, the other plaintext */
  CLI_EXIT_LIMIT = 11      /* a session outgrew a memory limit */
};

/* The exit status table, for --help. */
#define CLI_EXIT_STATUS_HELP                                                   \
  "Exit status:\n"                                                             \
  "  0  success\n"                                                             \
  "  1  internal or other error\n"                                             \
  "  2  usage error: bad or missing option, unusable secret\n"                 \
  "  3  authentication failed: the two sides hold different secrets\n"         \
  "  4  schema mismatch, or table unknown or not offered\n"                    \
  "  5  protocol or network error: connection refused or lost, timeout,\n"     \
  "     server shutting down, final verification failed\n"                     \
  "  6  database error, or a value the database cannot store exactly\n"        \
  "  7  conflict: rows with the same UUID differ between the two sides\n"      \
  "  8  busy: another writer of a database changed a row the sync had\n"       \
  "     to write, or kept it locked too long; nothing was changed, and\n"      \
  "     the same sync run again may succeed\n"                                 \
  "  9  TLS failed: the server's certificate was not accepted (unknown\n"      \
  "     issuer, expired, issued for another name) or the handshake failed\n"   \
  " 10  one side runs with --plaintext and the other with TLS\n"               \
  " 11  the session needed more memory than --max-session-memory allows\n"     \
  "     (on this side or the other)\n"

/* How long a program with idle timeout |timeout_ms| (0: none) waits for
 * a lock of its database: half as long, so that it tells its peer to sync
 * again (TRY_AGAIN) before the peer, which waits with the same timeout,
 * gives up on it. */
int cli_lock_timeout(int timeout_ms);

/* Maps a lipsync_error (0 or negative) to an exit status. */
int cli_exit_code(int error);

/* Maps a conn_failure (conn.h) to an exit status. */
int cli_conn_exit(int failure);

/* Prints "PROG VERSION (protocol N)" to stdout. */
void cli_print_version(const char *prog);

/* ---- the shared secret ------------------------------------------------ */

/* Longest secret accepted; a real one is 32 to 64 bytes. A fixed bound lets
 * the secret live in one buffer that is never reallocated, so no stale copy
 * is left behind in freed memory. */
#define CLI_SECRET_MAX 4096
#define CLI_SECRET_ENV "LIPSYNC_SECRET"

typedef struct cli_secret {
  unsigned char *data;
  size_t len;
} cli_secret;

/* Loads the secret from the file at |path| (its contents with one trailing
 * "\n" or "\r\n" removed) or, when |path| is NULL, from $LIPSYNC_SECRET,
 * which is then wiped from the environment. Refuses an empty or missing
 * secret. Warns on stderr, prefixed with |prog|, when the file is readable
 * by group or others. Returns 0, or -1 with the reason in |err|. */
int cli_secret_load(cli_secret *secret, const char *path, const char *prog,
                    char *err, size_t errlen);

/* Overwrites and frees the secret; safe to call twice. */
void cli_secret_wipe(cli_secret *secret);

/* ---- databases -------------------------------------------------------- */

/* Opens the database |db| (a SQLite path, or a PostgreSQL URI or conninfo)
 * into |*out|. Refuses a SQLite file that does not exist: opening would
 * create an empty database, which cannot hold the tables to sync. Prints
 * the reason, prefixed with |prog|, and returns -1 on failure; never
 * prints a PostgreSQL conninfo, which may hold a password. */
int cli_open_store(const char *prog, const char *db, lipsync_store **out);

/* Opens |db| and installs change capture on |tables| (--init). Waits at
 * most |timeout_ms| (0: without end) for another writer's lock. Prints
 * what it did unless |quiet|, or the error. Returns the exit status. */
int cli_init_tables(const char *prog, const char *db, const char *const *tables,
                    size_t ntables, int quiet, int timeout_ms);
/* Opens |db| and removes change capture from |tables| (NULL: all of it,
 * --drop-capture), waiting for a lock as cli_init_tables. Prints what it
 * did unless |quiet|, or the error. Returns the exit status. */
int cli_drop_capture(const char *prog, const char *db,
                     const char *const *tables, size_t ntables, int quiet,
                     int timeout_ms);

/* ---- sockets and time ------------------------------------------------- */

/* Longest host name or address accepted (options.h: cli_hostport). */
#define CLI_HOST_MAX 256

/* Longest text cli_format_address() writes: "[" host "]:" port. */
#define CLI_ADDRESS_MAX (CLI_HOST_MAX + 16)

/* Formats |addr| numerically as "1.2.3.4:5" or "[::1]:5". */
void cli_format_address(const struct sockaddr *addr, socklen_t addrlen,
                        char *out, size_t outlen);

/* Turns off Nagle's algorithm: the protocol is turn-based, so each turn's
 * last frame should leave at once rather than wait for an ACK. */
void cli_set_nodelay(int fd);

/* Sets or clears O_NONBLOCK. Returns 0 or -1. */
int cli_set_nonblocking(int fd, int on);

/* Closes the connection |fd| without losing what was last sent to the
 * peer: half-closes, then reads and discards until the peer closes or
 * |linger_ms| pass. Closing with unread input at once would make the kernel
 * reset the connection, which can destroy a final Error frame in flight. */
void cli_close_connection(int fd, int linger_ms);

/* Makes a write to a closed connection fail with EPIPE instead of killing
 * the process. */
void cli_ignore_sigpipe(void);

/* Seconds on a monotonic clock. */
double cli_now(void);

/* Replaces control characters in |text| with '?': messages may come from
 * the peer and must not drive the terminal that shows them. */
void cli_sanitize(char *text);

/* ---- progress on a terminal ------------------------------------------- */

typedef struct cli_progress {
  FILE *out;
  double last_update; /* cli_now() of the last line drawn */
  int width;          /* length of the line on screen, to blank it */
} cli_progress;

void cli_progress_init(cli_progress *progress, FILE *out);

/* A lipsync_progress_cb: |user| is a cli_progress. Redraws at most ten
 * times a second, since a redraw per row would cost more than the sync. */
void cli_progress_update(void *user, const char *table, uint64_t rows_sent,
                         uint64_t rows_received);

/* Erases the progress line, if one is shown. */
void cli_progress_clear(cli_progress *progress);

#endif /* LIPSYNC_CLI_H */
