/*
 * cli.c: helpers shared by lipsync-server and lipsync-client (see cli.h).
 */
#include "cli.h"
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lipsync.h"

extern char **environ;

int cli_lock_timeout(int timeout_ms) {
  return timeout_ms > 0 ? (timeout_ms + 1) / 2 : INT_MAX;
}

int cli_conn_exit(int failure) {
  switch (failure) {
  case CONN_FAIL_AUTH:
    return CLI_EXIT_AUTH;
  case CONN_FAIL_TLS:
    return CLI_EXIT_TLS;
  case CONN_FAIL_MISMATCH:
    return CLI_EXIT_TRANSPORT;
  default:
    return CLI_EXIT_PEER;
  }
}

int cli_exit_code(int error) {
  switch (error) {
  case LIPSYNC_OK:
    return CLI_EXIT_OK;
  case LIPSYNC_ERR_AUTH_FAILED:
    return CLI_EXIT_AUTH;
  case LIPSYNC_ERR_SCHEMA_MISMATCH:
  case LIPSYNC_ERR_UNKNOWN_TABLE:
  case LIPSYNC_ERR_TABLE_NOT_OFFERED:
    return CLI_EXIT_SCHEMA;
  case LIPSYNC_ERR_PROTOCOL:
  case LIPSYNC_ERR_FRAME_TOO_LARGE:
  case LIPSYNC_ERR_UNEXPECTED_MESSAGE:
  case LIPSYNC_ERR_VERSION_MISMATCH:
  case LIPSYNC_ERR_TIMEOUT:
  case LIPSYNC_ERR_CLOSED:
  case LIPSYNC_ERR_IO:
  case LIPSYNC_ERR_SHUTTING_DOWN:
  case LIPSYNC_ERR_VERIFY_FAILED:
    return CLI_EXIT_PEER;
  case LIPSYNC_ERR_STORAGE:
  case LIPSYNC_ERR_INVALID_VALUE:
    return CLI_EXIT_DATABASE;
  case LIPSYNC_ERR_CONFLICT:
    return CLI_EXIT_CONFLICT;
  case LIPSYNC_ERR_TRY_AGAIN:
    return CLI_EXIT_BUSY;
  case LIPSYNC_ERR_RESOURCE_LIMIT:
    return CLI_EXIT_LIMIT;
  default:
    return CLI_EXIT_INTERNAL;
  }
}

void cli_print_version(const char *prog) {
  if (LIPSYNC_PROTOCOL_MIN == LIPSYNC_PROTOCOL_MAX)
    printf("%s %s (protocol %d)\n", prog, LIPSYNC_VERSION_STRING,
           LIPSYNC_PROTOCOL_MAX);
  else
    printf("%s %s (protocols %d-%d)\n", prog, LIPSYNC_VERSION_STRING,
           LIPSYNC_PROTOCOL_MIN, LIPSYNC_PROTOCOL_MAX);
}

/* ---- the shared secret ------------------------------------------------ */

static int secret_alloc(cli_secret *secret, char *err, size_t errlen) {
  /* One byte more than the limit, to detect a file that exceeds it. */
  secret->data = malloc(CLI_SECRET_MAX + 1);
  secret->len = 0;
  if (secret->data == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

static void warn_if_exposed(const struct stat *st, const char *path,
                            const char *prog) {
  if (!S_ISREG(st->st_mode) || (st->st_mode & (S_IRGRP | S_IROTH)) == 0)
    return;
  fprintf(stderr,
          "%s: warning: secret file %s is readable by other users "
          "(mode %03o); chmod 600 it\n",
          prog, path, (unsigned)(st->st_mode & 0777));
}

/* Reads at most CLI_SECRET_MAX + 1 bytes of |fd| into |secret|. */
static int read_secret_fd(cli_secret *secret, int fd, const char *path,
                          char *err, size_t errlen) {
  for (;;) {
    ssize_t n =
        read(fd, secret->data + secret->len, CLI_SECRET_MAX + 1 - secret->len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      snprintf(err, errlen, "cannot read secret file %s: %s", path,
               strerror(errno));
      return -1;
    }
    secret->len += (size_t)n;
    if (n == 0 || secret->len > CLI_SECRET_MAX)
      break;
  }
  if (secret->len > CLI_SECRET_MAX) {
    snprintf(err, errlen, "secret file %s is larger than %d bytes", path,
             CLI_SECRET_MAX);
    return -1;
  }
  return 0;
}

static void strip_one_newline(cli_secret *secret) {
  if (secret->len > 0 && secret->data[secret->len - 1] == '\n') {
    secret->len--;
    if (secret->len > 0 && secret->data[secret->len - 1] == '\r')
      secret->len--;
  }
}

static int load_from_file(cli_secret *secret, const char *path,
                          const char *prog, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, "cannot open secret file %s: %s", path,
             strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "secret file %s is not a file", path);
    close(fd);
    return -1;
  }
  warn_if_exposed(&st, path, prog);
  int rc = read_secret_fd(secret, fd, path, err, errlen);
  close(fd);
  if (rc < 0)
    return -1;
  strip_one_newline(secret);
  if (secret->len == 0) {
    snprintf(err, errlen, "secret file %s is empty", path);
    return -1;
  }
  return 0;
}

/* Copies $LIPSYNC_SECRET, then overwrites it in place before unsetting it:
 * unsetenv() alone leaves the bytes in the initial environment block, where
 * /proc/PID/environ and core dumps would still show them. */
static int load_from_environment(cli_secret *secret, char *err, size_t errlen) {
  static const char prefix[] = CLI_SECRET_ENV "=";
  char *value = NULL;
  for (char **entry = environ; entry != NULL && *entry != NULL; entry++) {
    if (strncmp(*entry, prefix, sizeof prefix - 1) == 0) {
      value = *entry + sizeof prefix - 1;
      break;
    }
  }
  if (value == NULL) {
    snprintf(err, errlen, "no secret: give --secret-file FILE or set %s",
             CLI_SECRET_ENV);
    return -1;
  }
  size_t len = strlen(value);
  if (len == 0) {
    snprintf(err, errlen, "the secret in %s is empty", CLI_SECRET_ENV);
    return -1;
  }
  if (len > CLI_SECRET_MAX) {
    snprintf(err, errlen, "the secret in %s is longer than %d bytes",
             CLI_SECRET_ENV, CLI_SECRET_MAX);
    return -1;
  }
  memcpy(secret->data, value, len);
  secret->len = len;
  OPENSSL_cleanse(value, len);
  unsetenv(CLI_SECRET_ENV);
  return 0;
}

int cli_secret_load(cli_secret *secret, const char *path, const char *prog,
                    char *err, size_t errlen) {
  if (secret_alloc(secret, err, errlen) < 0)
    return -1;
  int rc = path != NULL ? load_from_file(secret, path, prog, err, errlen)
                        : load_from_environment(secret, err, errlen);
  if (rc < 0)
    cli_secret_wipe(secret);
  return rc;
}

void cli_secret_wipe(cli_secret *secret) {
  if (secret->data != NULL) {
    OPENSSL_cleanse(secret->data, CLI_SECRET_MAX + 1);
    free(secret->data);
  }
  secret->data = NULL;
  secret->len = 0;
}

/* ---- sockets and time ------------------------------------------------- */

void cli_format_address(const struct sockaddr *addr, socklen_t addrlen,
                        char *out, size_t outlen) {
  char host[CLI_HOST_MAX];
  char port[16];
  int rc = getnameinfo(addr, addrlen, host, sizeof host, port, sizeof port,
                       NI_NUMERICHOST | NI_NUMERICSERV);
  if (rc != 0)
    snprintf(out, outlen, "(unknown address)");
  else if (strchr(host, ':') != NULL)
    snprintf(out, outlen, "[%s]:%s", host, port);
  else
    snprintf(out, outlen, "%s:%s", host, port);
}

void cli_set_nodelay(int fd) {
  int on = 1;
  /* Only a matter of latency: failure (say, on a Unix socket) is fine. */
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

int cli_set_nonblocking(int fd, int on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0)
    return -1;
  flags = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  return fcntl(fd, F_SETFL, flags);
}

/* Waits until |fd| is readable or |deadline| passes. Returns 1 if it is
 * readable. */
static int wait_readable(int fd, double deadline) {
  struct pollfd pfd = {fd, POLLIN, 0};
  for (;;) {
    double left = deadline - cli_now();
    if (left <= 0)
      return 0;
    int rc = poll(&pfd, 1, (int)(left * 1000.0) + 1);
    if (rc < 0 && errno == EINTR)
      continue;
    return rc > 0;
  }
}

void cli_close_connection(int fd, int linger_ms) {
  if (fd < 0)
    return;
  if (shutdown(fd, SHUT_WR) == 0) {
    double deadline = cli_now() + linger_ms / 1000.0;
    char discard[4096];
    while (wait_readable(fd, deadline)) {
      ssize_t n = read(fd, discard, sizeof discard);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
        break;
    }
  }
  close(fd);
}

void cli_ignore_sigpipe(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, NULL);
}

double cli_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cli_sanitize(char *text) {
  for (unsigned char *p = (unsigned char *)text; *p != '\0'; p++) {
    if (*p < 0x20 || *p == 0x7f)
      *p = '?';
  }
}

/* ---- progress on a terminal ------------------------------------------- */

/* Keeps the line within a classic 80-column terminal, so the carriage
 * return always lands on the line's own start. */
#define PROGRESS_COLUMNS 79
#define PROGRESS_INTERVAL 0.1

void cli_progress_init(cli_progress *progress, FILE *out) {
  progress->out = out;
  progress->last_update = 0;
  progress->width = 0;
}

void cli_progress_update(void *user, const char *table, uint64_t rows_sent,
                         uint64_t rows_received) {
  cli_progress *progress = user;
  double now = cli_now();
  if (progress->width > 0 && now - progress->last_update < PROGRESS_INTERVAL)
    return;
  progress->last_update = now;
  char line[PROGRESS_COLUMNS + 1];
  int n = snprintf(line, sizeof line, "%s: %llu rows sent, %llu received",
                   table != NULL ? table : "?", (unsigned long long)rows_sent,
                   (unsigned long long)rows_received);
  if (n < 0)
    return;
  if (n > PROGRESS_COLUMNS)
    n = PROGRESS_COLUMNS;
  cli_sanitize(line);
  /* Pad with blanks over what is left of a longer previous line. */
  int pad = progress->width > n ? progress->width - n : 0;
  fprintf(progress->out, "\r%s%*s", line, pad, "");
  fflush(progress->out);
  progress->width = n;
}

void cli_progress_clear(cli_progress *progress) {
  if (progress->width == 0)
    return;
  fprintf(progress->out, "\r%*s\r", progress->width, "");
  fflush(progress->out);
  progress->width = 0;
}

/* ---- databases -------------------------------------------------------- */

int cli_open_store(const char *prog, const char *db, lipsync_store **out) {
  char err[512];
  struct stat st;
  *out = NULL;
  if (!lipsync_db_is_postgres(db) && stat(db, &st) < 0) {
    fprintf(stderr, "%s: cannot open database %s: %s\n", prog, db,
            strerror(errno));
    return -1;
  }
  if (lipsync_store_open(out, db, err, sizeof err) < 0) {
    /* The store's message names the database ("cannot open FILE: ...",
     * "cannot connect to PostgreSQL: ..."). */
    cli_sanitize(err);
    fprintf(stderr, "%s: %s\n", prog, err);
    return -1;
  }
  return 0;
}

/* Opens |db| and runs |op| (lipsync_store_init_tables or
 * lipsync_store_drop_capture) on |tables|, waiting at most |timeout_ms| (0:
 * without end) for another writer's lock: no peer waits on it, so the whole
 * of --timeout rather than the half a sync gets. Returns |op|'s result, or
 * -1 after printing the error, with the exit status in |*status|. */
typedef int (*capture_op)(lipsync_store *, const char *const *, size_t, char *,
                          size_t);
static int on_capture(const char *prog, const char *db, capture_op op,
                      const char *const *tables, size_t ntables, int timeout_ms,
                      int *status) {
  lipsync_store *store = NULL;
  char err[512];
  if (cli_open_store(prog, db, &store) < 0) {
    *status = CLI_EXIT_DATABASE;
    return -1;
  }
  lipsync_store_set_lock_timeout(store, timeout_ms > 0 ? timeout_ms : INT_MAX);
  int rc = op(store, tables, ntables, err, sizeof err);
  lipsync_store_free(store);
  if (rc < 0) {
    cli_sanitize(err);
    fprintf(stderr, "%s: %s\n", prog, err);
    *status = cli_exit_code(rc);
    return -1;
  }
  *status = CLI_EXIT_OK;
  return rc;
}

int cli_init_tables(const char *prog, const char *db, const char *const *tables,
                    size_t ntables, int quiet, int timeout_ms) {
  /* tables NULL: every table of the database */
  int status;
  if (on_capture(prog, db, lipsync_store_init_tables, tables, ntables,
                 timeout_ms, &status) < 0 ||
      quiet)
    return status;
  for (size_t i = 0; tables && i < ntables; i++)
    printf("%s: change capture installed\n", tables[i]);
  if (!tables)
    printf("change capture installed on every table\n");
  return status;
}

int cli_drop_capture(const char *prog, const char *db,
                     const char *const *tables, size_t ntables, int quiet,
                     int timeout_ms) {
  int status;
  int n = on_capture(prog, db, lipsync_store_drop_capture, tables, ntables,
                     timeout_ms, &status);
  if (n >= 0 && !quiet)
    printf("change capture removed from %d table%s%s\n", n, n == 1 ? "" : "s",
           tables ? "" : ", and the database's own metadata");
  return status;
}
