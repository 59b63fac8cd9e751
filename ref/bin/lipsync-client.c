/*
 * lipsync-client: syncs tables of a local database with a lipsync-server
 * over TCP (TLS 1.3 unless told otherwise) or through a command (ssh, say),
 * then reports what moved.
 *
 * The flow is linear: options, secret, TLS settings, store, session (which
 * copies the secret), connect, TLS handshake, conn_run(), report. Either
 * both databases end up with the union of their rows or, on any failure,
 * neither changes.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "command.h"
#include "conn.h"
#include "lipsync.h"

#define PROG "lipsync-client"
#define DEFAULT_TIMEOUT_MS 60000
#define DEFAULT_RETRIES 3
/* The first pause before running a sync again; it doubles each time, with
 * a random part, so that clients that collided do not collide again. */
#define RETRY_PAUSE_MS 50
/* How long to wait for the server to close after the session ended. */
#define LINGER_MS 200
/* How long to wait for --connect-command to exit after the session. */
#define COMMAND_WAIT_MS 5000

typedef struct client_config {
  const char *db_path;
  const char *secret_file;
  cli_hostport server;
  const char **tables;
  size_t ntables;
  int timeout_ms;
  int quiet;
  int init;
  int full;
  int no_incremental;
  long retries;
  size_t max_session_memory;
  lipsync_policy policy;
  const char *command; /* --connect-command */
  int plaintext;       /* --plaintext */
  int tls_command;     /* --tls: TLS over --connect-command too */
  conn_tls_options tls_options;
  conn_tls *tls; /* NULL: plaintext */
} client_config;

/* ---- options ---------------------------------------------------------- */

static void usage(FILE *out, int full) {
  fprintf(out,
          "Usage: " PROG
          " --db DB (--connect HOST:PORT | --connect-command CMD)\n"
          "         --secret-file FILE --table NAME [--table NAME]...\n"
          "         [--tls-verify] [--tls-ca FILE] [--tls-server-name NAME]\n"
          "         [--plaintext] [--tls] [--policy POLICY] [--full]\n"
          "         [--no-incremental] [--retries N] [--timeout SECONDS]\n"
          "         [--max-session-memory MIB]\n"
          "         [--quiet]\n"
          "       " PROG " --db DB --init --table NAME [--table NAME]...\n"
          "       " PROG " --help | --version\n");
  if (!full) {
    fprintf(out, "Run '" PROG " --help' for details.\n");
    return;
  }
  fprintf(
      out,
      "\n"
      "Syncs tables of the database DB with a lipsync-server: every row\n"
      "inserted, updated or deleted on either side since the last sync\n"
      "is carried over, so that both end up the same. On any failure\n"
      "neither database changes.\n"
      "\n"
      "  --db DB              the database to sync: a SQLite file (must\n"
      "                       exist), or PostgreSQL as a postgresql://\n"
      "                       URI or a libpq conninfo (\"host=...\")\n"
      "  --connect HOST:PORT  the server: an IPv4 address, [IPv6] or a\n"
      "                       host name (every address it resolves to\n"
      "                       is tried in turn)\n"
      "  --connect-command CMD  run CMD with /bin/sh -c and sync over its\n"
      "                       standard input and output, e.g. 'ssh HOST\n"
      "                       lipsync-server --stdio --db ... --table ...'\n"
      "                       (no TLS unless --tls: ssh encrypts)\n"
      "  --secret-file FILE   the shared secret: the file's contents\n"
      "                       without one trailing newline. Without this\n"
      "                       option the secret is taken from "
      "$" CLI_SECRET_ENV ".\n"
      "  --table NAME         a table to sync (repeat for several; all\n"
      "                       are synced in one transaction; on\n"
      "                       PostgreSQL SCHEMA.NAME, else public)\n"
      "  --tls-verify         verify the server's certificate (TLS 1.3)\n"
      "                       against the system's trusted authorities,\n"
      "                       and its name: the HOST of --connect. By\n"
      "                       default TLS 1.3 runs with a key derived from\n"
      "                       the secret, which needs no certificate.\n"
      "  --tls-ca FILE        the same, trusting the authorities in FILE\n"
      "  --tls-server-name NAME  the name the certificate must hold\n"
      "                       (implies --tls-verify)\n"
      "  --plaintext          no TLS: rows cross the network in clear (the\n"
      "                       server must run with --plaintext too)\n"
      "  --tls                with --connect-command: TLS all the same\n"
      "  --policy POLICY      a row changed on both sides since they\n"
      "                       last synced keeps: lww, the later change\n"
      "                       (default); server-wins, the server's;\n"
      "                       client-wins, this side's\n"
      "  --init               install change capture on the tables (as\n"
      "                       the first sync would) and exit, without\n"
      "                       connecting\n"
      "  --full               reconcile every table whole (by ranges),\n"
      "                       not by what changed since the last sync,\n"
      "                       after recounting what this database keeps\n"
      "                       of each (a row changed with change capture\n"
      "                       off gets a new version, and travels)\n"
      "  --no-incremental     do not offer the incremental exchange\n"
      "                       (every sync reconciles whole tables)\n"
      "  --max-session-memory MIB\n"
      "                       fail the sync if it would buffer more than\n"
      "                       MIB MiB for the server (default 256; 0 = no\n"
      "                       bound): rows held for the end, UUIDs received,\n"
      "                       asked for or to send, the frame being read\n"
      "  --retries N          run a sync again, up to N times (default\n"
      "                       3), when another writer of either database\n"
      "                       got in its way; after a failed verification\n"
      "                       of an incremental sync, it runs once more,\n"
      "                       reconciling whole tables\n"
      "  --timeout SECONDS    give up when connecting takes, or the server\n"
      "                       stays silent, this long (default 60; 0 =\n"
      "                       wait forever), or when this database stays\n"
      "                       locked half as long\n"
      "  --quiet              print nothing but errors\n"
      "\n"
      "On success prints one line per table:\n"
      "  TABLE: sent N rows, received M rows, X bytes out, Y bytes in, "
      "T.TTs\n"
      "where T is the wall time of the whole session, followed by\n"
      "\" (incremental)\" when the table was synced by what changed since\n"
      "its last sync rather than whole.\n"
      "\n" CLI_EXIT_STATUS_HELP);
}

enum {
  OPT_DB = 256,
  OPT_CONNECT,
  OPT_SECRET_FILE,
  OPT_TABLE,
  OPT_TIMEOUT,
  OPT_QUIET,
  OPT_POLICY,
  OPT_INIT,
  OPT_FULL,
  OPT_NO_INCREMENTAL,
  OPT_RETRIES,
  OPT_MAX_SESSION_MEMORY,
  OPT_CONNECT_COMMAND,
  OPT_PLAINTEXT,
  OPT_TLS,
  OPT_TLS_VERIFY,
  OPT_TLS_CA,
  OPT_TLS_SERVER_NAME,
  OPT_HELP,
  OPT_VERSION
};

static const struct option long_options[] = {
    {"db", required_argument, NULL, OPT_DB},
    {"connect", required_argument, NULL, OPT_CONNECT},
    {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
    {"table", required_argument, NULL, OPT_TABLE},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"policy", required_argument, NULL, OPT_POLICY},
    {"init", no_argument, NULL, OPT_INIT},
    {"full", no_argument, NULL, OPT_FULL},
    {"no-incremental", no_argument, NULL, OPT_NO_INCREMENTAL},
    {"retries", required_argument, NULL, OPT_RETRIES},
    {"max-session-memory", required_argument, NULL, OPT_MAX_SESSION_MEMORY},
    {"connect-command", required_argument, NULL, OPT_CONNECT_COMMAND},
    {"plaintext", no_argument, NULL, OPT_PLAINTEXT},
    {"tls", no_argument, NULL, OPT_TLS},
    {"tls-verify", no_argument, NULL, OPT_TLS_VERIFY},
    {"tls-ca", required_argument, NULL, OPT_TLS_CA},
    {"tls-server-name", required_argument, NULL, OPT_TLS_SERVER_NAME},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0}};

static int usage_error(const char *message) {
  if (message != NULL)
    fprintf(stderr, PROG ": %s\n", message);
  usage(stderr, 0);
  return CLI_EXIT_USAGE;
}

static int add_table(client_config *config, const char *name) {
  for (size_t i = 0; i < config->ntables; i++) {
    if (strcmp(config->tables[i], name) == 0)
      return usage_error("a table is named twice");
  }
  if (name[0] == '\0')
    return usage_error("--table takes a table name");
  config->tables[config->ntables++] = name;
  return -1;
}

/* Handles one option. Returns -1 to go on, else the exit status. */
static int apply_option(client_config *config, int opt, const char *arg) {
  char err[256];
  switch (opt) {
  case OPT_DB:
    config->db_path = arg;
    return -1;
  case OPT_CONNECT:
    if (cli_parse_hostport(arg, 0, &config->server, err, sizeof err) < 0)
      return usage_error(err);
    return -1;
  case OPT_SECRET_FILE:
    config->secret_file = arg;
    return -1;
  case OPT_TABLE:
    return add_table(config, arg);
  case OPT_TIMEOUT:
    if (cli_parse_timeout(arg, &config->timeout_ms) < 0)
      return usage_error("--timeout takes a number of seconds");
    return -1;
  case OPT_QUIET:
    config->quiet = 1;
    return -1;
  case OPT_POLICY:
    if (lipsync_policy_parse(arg, &config->policy) < 0)
      return usage_error("--policy takes lww, server-wins or client-wins");
    return -1;
  case OPT_INIT:
    config->init = 1;
    return -1;
  case OPT_FULL:
    config->full = 1;
    return -1;
  case OPT_NO_INCREMENTAL:
    config->no_incremental = 1;
    return -1;
  case OPT_RETRIES:
    if (cli_parse_count(arg, 0, 100, &config->retries) < 0)
      return usage_error("--retries takes a number from 0 to 100");
    return -1;
  case OPT_MAX_SESSION_MEMORY:
    if (cli_parse_memory(arg, &config->max_session_memory) < 0)
      return usage_error("--max-session-memory takes a number of MiB from 0 "
                         "to 1048576");
    return -1;
  case OPT_CONNECT_COMMAND:
    if (arg[0] == '\0')
      return usage_error("--connect-command takes a command");
    config->command = arg;
    return -1;
  case OPT_PLAINTEXT:
    config->plaintext = 1;
    return -1;
  case OPT_TLS:
    config->tls_command = 1;
    return -1;
  case OPT_TLS_VERIFY:
    config->tls_options.verify_cert = 1;
    return -1;
  case OPT_TLS_CA:
    config->tls_options.verify_cert = 1;
    config->tls_options.ca_file = arg;
    return -1;
  case OPT_TLS_SERVER_NAME:
    config->tls_options.verify_cert = 1;
    config->tls_options.server_name = arg;
    return -1;
  case OPT_HELP:
    usage(stdout, 1);
    return CLI_EXIT_OK;
  case OPT_VERSION:
    cli_print_version(PROG);
    return CLI_EXIT_OK;
  default:
    return usage_error(NULL);
  }
}

/* Fills |config| from the command line. Returns -1 to go on, else the
 * exit status. */
static int parse_options(client_config *config, int argc, char **argv) {
  config->timeout_ms = DEFAULT_TIMEOUT_MS;
  config->retries = DEFAULT_RETRIES;
  config->max_session_memory = LIPSYNC_DEFAULT_MEMORY_LIMIT;
  config->tables = calloc((size_t)argc, sizeof *config->tables);
  if (config->tables == NULL)
    return CLI_EXIT_INTERNAL;
  int opt;
  while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
    int rc = apply_option(config, opt, optarg);
    if (rc >= 0)
      return rc;
  }
  if (optind < argc)
    return usage_error("unexpected argument");
  if (config->db_path == NULL)
    return usage_error("missing --db");
  if (config->server.host[0] == '\0' && !config->command && !config->init)
    return usage_error("missing --connect (or --connect-command)");
  if (config->server.host[0] != '\0' && config->command)
    return usage_error("--connect and --connect-command exclude each other");
  if (config->plaintext &&
      (config->tls_options.verify_cert || config->tls_command))
    return usage_error("--plaintext excludes --tls and the --tls-* options");
  if (config->tls_command && !config->command)
    return usage_error("--tls goes with --connect-command (TLS is the "
                       "default with --connect)");
  if (config->command && config->tls_options.verify_cert &&
      !config->tls_options.server_name)
    return usage_error("with --connect-command, --tls-verify needs "
                       "--tls-server-name");
  /* TLS unless --plaintext; over a command only when asked for. */
  config->tls_options.enabled =
      !config->plaintext && (!config->command || config->tls_command ||
                             config->tls_options.verify_cert);
  if (!config->tls_options.server_name)
    config->tls_options.server_name = config->server.host;
  if (config->ntables == 0)
    return usage_error("missing --table");
  return -1;
}

/* ---- connecting --------------------------------------------------------- */

/* Waits for a non-blocking connect() on |fd| to finish. Returns 0, or -1
 * with errno set. */
static int finish_connect(int fd, int timeout_ms) {
  struct pollfd pfd = {fd, POLLOUT, 0};
  double deadline = cli_now() + timeout_ms / 1000.0;
  for (;;) {
    int wait_ms = -1;
    if (timeout_ms > 0) {
      double left = deadline - cli_now();
      wait_ms = left > 0 ? (int)(left * 1000.0) + 1 : 0;
    }
    int rc = poll(&pfd, 1, wait_ms);
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc < 0)
      return -1;
    if (rc == 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
      return -1;
    errno = soerr;
    return soerr == 0 ? 0 : -1;
  }
}

/* Connects to one address within |timeout_ms|. Returns the blocking
 * socket, or -1 with errno set. */
static int connect_one(const struct addrinfo *ai, int timeout_ms) {
  int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
  if (fd < 0)
    return -1;
  if (cli_set_nonblocking(fd, 1) == 0 &&
      (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
       (errno == EINPROGRESS && finish_connect(fd, timeout_ms) == 0)) &&
      cli_set_nonblocking(fd, 0) == 0)
    return fd;
  int saved_errno = errno;
  close(fd);
  errno = saved_errno;
  return -1;
}

/* Tries every address |where| resolves to. Returns a connected socket, or
 * -1 with the reason in |err|. */
static int connect_to(const cli_hostport *where, int timeout_ms, char *err,
                      size_t errlen) {
  struct addrinfo hints, *list = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(where->host, where->port, &hints, &list);
  if (rc != 0) {
    snprintf(err, errlen, "cannot resolve %s: %s", where->host,
             gai_strerror(rc));
    return -1;
  }
  int fd = -1, last_errno = 0;
  for (const struct addrinfo *ai = list; ai != NULL && fd < 0;
       ai = ai->ai_next) {
    fd = connect_one(ai, timeout_ms);
    if (fd < 0)
      last_errno = errno;
  }
  freeaddrinfo(list);
  if (fd < 0) {
    int ipv6 = strchr(where->host, ':') != NULL;
    snprintf(err, errlen, "cannot connect to %s%s%s:%s: %s", ipv6 ? "[" : "",
             where->host, ipv6 ? "]" : "", where->port, strerror(last_errno));
    return -1;
  }
  cli_set_nodelay(fd);
  return fd;
}

/* ---- the session -------------------------------------------------------- */

static void print_summary(lipsync_session *session, double seconds) {
  size_t count = lipsync_session_table_count(session);
  for (size_t i = 0; i < count; i++) {
    lipsync_table_stats stats;
    if (lipsync_session_table_stats(session, i, &stats) < 0)
      continue;
    printf("%s: sent %" PRIu64 " rows, received %" PRIu64 " rows, %" PRIu64
           " bytes out, %" PRIu64 " bytes in, %.2fs%s\n",
           stats.name, stats.rows_sent, stats.rows_received, stats.bytes_sent,
           stats.bytes_received, seconds,
           lipsync_session_table_incremental(session, i) ? " (incremental)"
                                                         : "");
  }
  fflush(stdout);
}

static int report_failure(lipsync_session *session, int result) {
  char message[1024];
  const char *text = lipsync_session_errmsg(session);
  /* With the proofs bound to TLS (spec 5.5), a relay that terminates TLS
   * fails them as a wrong secret would. */
  int bound = result == LIPSYNC_ERR_AUTH_FAILED &&
              lipsync_session_channel_bound(session);
  snprintf(message, sizeof message, "%s%s",
           text[0] != '\0' ? text : lipsync_strerror(result),
           bound ? " (or a relay that terminates TLS sits between the two "
                   "sides: the proofs cover the TLS connection)"
                 : "");
  cli_sanitize(message);
  fprintf(stderr, PROG ": %s\n", message);
  return cli_exit_code(result);
}

/* Runs |session| over |link| after its TLS handshake. Returns the
 * session's result; sets *failed to an exit status when the connection
 * failed below the session (the reason printed). */
static int run_over(const client_config *config, cli_conn *link,
                    lipsync_session *session, int *failed) {
  if (conn_handshake(link, config->timeout_ms, -1) < 0) {
    fprintf(stderr, PROG ": %s\n", conn_errmsg(link));
    *failed = cli_conn_exit(conn_failure_of(link));
    return LIPSYNC_ERR_IO;
  }
  int result = conn_run(link, session, config->timeout_ms, -1);
  conn_close_notify(link);
  if (result < 0 && conn_failure_of(link) == CONN_FAIL_MISMATCH) {
    fprintf(stderr, PROG ": %s\n", conn_errmsg(link));
    *failed = CLI_EXIT_TRANSPORT;
  }
  return result;
}

/* Connects (or starts the command) and runs |session| to its end. Returns
 * the session's result; sets *failed to an exit status when it could not
 * connect or the connection failed below the session, the reason
 * printed. */
static int sync_over_network(const client_config *config,
                             lipsync_session *session, double *seconds,
                             int *failed) {
  cli_progress progress;
  cli_progress_init(&progress, stderr);
  if (!config->quiet && isatty(STDERR_FILENO))
    lipsync_session_set_progress(session, cli_progress_update, &progress);
  double started = cli_now();
  char err[512];
  cli_command cmd;
  int fd =
      config->command
          ? (cli_command_start(&cmd, config->command, err, sizeof err) < 0
                 ? -1
                 : cmd.fd)
          : connect_to(&config->server, config->timeout_ms, err, sizeof err);
  if (fd < 0) {
    fprintf(stderr, PROG ": %s\n", err);
    *failed = CLI_EXIT_PEER;
    return LIPSYNC_ERR_IO;
  }
  cli_conn *link = conn_new(config->tls, 0, fd, fd);
  int result =
      link ? run_over(config, link, session, failed) : LIPSYNC_ERR_NOMEM;
  *seconds = cli_now() - started;
  cli_progress_clear(&progress);
  conn_free(link);
  if (!config->command) {
    cli_close_connection(fd, LINGER_MS);
    return result;
  }
  /* The command ends once it has passed on the end of the stream. */
  cli_command_finish(&cmd, COMMAND_WAIT_MS);
  char report[800];
  if (result < 0 && cli_command_report(&cmd, report, sizeof report))
    fprintf(stderr, PROG ": %s\n", report);
  return result;
}

/* Whether a table of |session| was synced by its changes. */
static int any_incremental(lipsync_session *session) {
  for (size_t i = 0; i < lipsync_session_table_count(session); i++)
    if (lipsync_session_table_incremental(session, i))
      return 1;
  return 0;
}

/* Sleeps before attempt |attempt| (1, 2, ...) of a sync that collided. */
static void pause_before(int attempt) {
  unsigned char r = 0;
  long ms = RETRY_PAUSE_MS << (attempt > 6 ? 6 : attempt - 1);
  FILE *f = fopen("/dev/urandom", "rb");
  if (f) {
    if (fread(&r, 1, 1, f) != 1)
      r = 0;
    fclose(f);
  }
  ms += ms * r / 255;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* What a failed sync leads to: run it again (whole tables, or as it was),
 * or stop. */
enum next_step { STOP, AGAIN, AGAIN_FULL };

static enum next_step next_after(const client_config *config, int result,
                                 int incremental, int full, int attempt) {
  if (result == LIPSYNC_ERR_VERIFY_FAILED && incremental && !full)
    return AGAIN_FULL;
  if (result == LIPSYNC_ERR_TRY_AGAIN && attempt < config->retries)
    return AGAIN;
  return STOP;
}

/* Runs attempt |attempt| (0, 1, ...) of the sync with |store|. Returns
 * the exit status, or -1 with *next set when it must run again. */
static int one_sync(const client_config *config, lipsync_store *store,
                    const cli_secret *secret, int full, int attempt,
                    enum next_step *next) {
  lipsync_session *session = NULL;
  double seconds = 0;
  int rc =
      lipsync_session_client_new(&session, store, secret->data, secret->len,
                                 config->tables, config->ntables);
  if (rc == 0)
    rc = lipsync_session_set_policy(session, config->policy);
  if (rc == 0)
    rc = lipsync_session_set_incremental(session, !config->no_incremental);
  if (rc == 0 && full)
    rc = lipsync_session_set_full(session);
  if (rc == 0)
    rc = lipsync_session_set_memory_limit(session, config->max_session_memory);
  if (rc < 0) {
    fprintf(stderr, PROG ": cannot start session: %s\n", lipsync_strerror(rc));
    lipsync_session_free(session);
    return cli_exit_code(rc);
  }
  int failed = -1;
  rc = sync_over_network(config, session, &seconds, &failed);
  int status = CLI_EXIT_OK;
  *next = rc == 0 || failed >= 0
              ? STOP
              : next_after(config, rc, any_incremental(session), full, attempt);
  if (failed >= 0)
    status = failed; /* already reported */
  else if (rc != 0 && *next == STOP)
    status = report_failure(session, rc);
  else if (rc != 0 && !config->quiet)
    report_failure(session, rc); /* a warning: the sync runs again */
  else if (rc == 0 && !config->quiet)
    print_summary(session, seconds);
  lipsync_session_free(session);
  return *next == STOP ? status : -1;
}

/* Syncs, and runs the sync again when it collided with another writer
 * (spec LS-ERR-10) or when an incremental sync failed its verification
 * (spec LS-INC-16: the next one reconciles whole tables). */
static int run(const client_config *config, cli_secret *secret) {
  lipsync_store *store = NULL;
  if (cli_open_store(PROG, config->db_path, &store) < 0)
    return CLI_EXIT_DATABASE;
  lipsync_store_set_lock_timeout(store, cli_lock_timeout(config->timeout_ms));
  int full = config->full, status;
  enum next_step next = STOP;
  for (int attempt = 0;; attempt++) {
    status = one_sync(config, store, secret, full, attempt, &next);
    if (status >= 0)
      break;
    if (next == AGAIN_FULL) {
      if (!config->quiet)
        fprintf(stderr, PROG ": syncing again, reconciling whole tables\n");
      full = 1;
      continue;
    }
    if (!config->quiet)
      fprintf(stderr, PROG ": syncing again (attempt %d of %ld)\n", attempt + 2,
              config->retries + 1);
    pause_before(attempt + 1);
  }
  lipsync_store_free(store);
  return status;
}

int main(int argc, char **argv) {
  client_config config;
  memset(&config, 0, sizeof config);
  int rc = parse_options(&config, argc, argv);
  if (rc < 0 && config.init) {
    rc = cli_init_tables(PROG, config.db_path, config.tables, config.ntables,
                         config.quiet);
  } else if (rc < 0) {
    cli_secret secret = {NULL, 0};
    char err[256];
    cli_ignore_sigpipe();
    if (cli_secret_load(&secret, config.secret_file, PROG, err, sizeof err) <
        0) {
      fprintf(stderr, PROG ": %s\n", err);
      rc = CLI_EXIT_USAGE;
    } else if (config.tls_options.enabled &&
               conn_tls_new(&config.tls, 0, &config.tls_options, secret.data,
                            secret.len, err, sizeof err) < 0) {
      fprintf(stderr, PROG ": TLS: %s\n", err);
      rc = CLI_EXIT_USAGE;
    } else {
      rc = run(&config, &secret);
    }
    conn_tls_free(config.tls);
    cli_secret_wipe(&secret);
  }
  free(config.tables);
  return rc;
}
