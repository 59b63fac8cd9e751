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
#include <limits.h>
#include <stdarg.h>
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
#include "options.h"
#include "report.h"

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
  cli_list tables;      /* --table, as given: NAME or LOCAL=REMOTE */
  char **locals;        /* the local names of |tables| */
  const char **remotes; /* the server's names of |tables| */
  int dry_run;
  int json;
  int timeout_ms;
  int quiet;
  int init;
  int drop_capture;
  int all_tables; /* with --init or --drop-capture */
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

/* The last error message printed, for --json. */
static char last_error[1024];

/* Prints "lipsync-client: MESSAGE" on stderr and remembers MESSAGE. */
static void complain(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static void complain(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  fprintf(stderr, PROG ": %s\n", last_error);
}

/* ---- options ---------------------------------------------------------- */

static void usage(FILE *out, int full) {
  fprintf(out,
          "Usage: " PROG
          " --db DB (--connect HOST:PORT | --connect-command CMD)\n"
          "         --secret-file FILE --table NAME[=REMOTE]...\n"
          "         [--tls-verify] [--tls-ca FILE] [--tls-server-name NAME]\n"
          "         [--plaintext] [--tls] [--policy POLICY] [--full]\n"
          "         [--no-incremental] [--retries N] [--timeout SECONDS]\n"
          "         [--max-session-memory MIB]\n"
          "         [--dry-run] [--json] [--quiet]\n"
          "       " PROG " --db DB (--init | --drop-capture)\n"
          "         (--table NAME [--table NAME]... | --all-tables)\n"
          "         [--timeout SECONDS] [--quiet]\n"
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
      "  --table LOCAL=REMOTE sync the local table LOCAL with the server's\n"
      "                       table REMOTE (e.g. cities=geo.cities)\n"
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
      "  --drop-capture       remove change capture from the tables and\n"
      "                       exit, without connecting: triggers and\n"
      "                       metadata go, rows and their _lipsync_uuid\n"
      "                       stay (the next sync installs it again)\n"
      "  --all-tables         with --init or --drop-capture: every table\n"
      "                       (--drop-capture: also the metadata of tables\n"
      "                       since dropped, and the database's own)\n"
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
      "  --dry-run            run the whole reconciliation, apply nothing\n"
      "                       on either side (both roll back), and print\n"
      "                       what the sync would do, per table\n"
      "  --json               print one JSON object for the run on stdout\n"
      "                       (counts per table, or the error), instead\n"
      "                       of the lines below\n"
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

/* --tls-ca and --tls-server-name each imply --tls-verify. */
static int set_tls_ca(void *config, const char *arg, char *err, size_t errlen) {
  client_config *c = config;
  c->tls_options.verify_cert = 1;
  c->tls_options.ca_file = arg;
  return 0;
}

static int set_tls_server_name(void *config, const char *arg, char *err,
                               size_t errlen) {
  client_config *c = config;
  c->tls_options.verify_cert = 1;
  c->tls_options.server_name = arg;
  return 0;
}

/* Keep the order: getopt_long lists an ambiguous abbreviation's
 * candidates in it. */
static const cli_option options[] = {
    {"db", CLI_STRING(client_config, db_path)},
    {"connect", CLI_HOSTPORT(client_config, server, 1)},
    {"secret-file", CLI_STRING(client_config, secret_file)},
    {"table", CLI_LIST(client_config, tables), .nonempty = 1,
     .message = "--table takes a table name",
     .repeated = "a table is named twice"},
    {"timeout", CLI_TIMEOUT(client_config, timeout_ms, 0),
     .message = "--timeout takes a number of seconds"},
    {"quiet", CLI_FLAG(client_config, quiet)},
    {"dry-run", CLI_FLAG(client_config, dry_run)},
    {"json", CLI_FLAG(client_config, json)},
    {"policy", CLI_POLICY(client_config, policy),
     .message = "--policy takes lww, server-wins or client-wins"},
    {"init", CLI_FLAG(client_config, init)},
    {"drop-capture", CLI_FLAG(client_config, drop_capture)},
    {"all-tables", CLI_FLAG(client_config, all_tables)},
    {"full", CLI_FLAG(client_config, full)},
    {"no-incremental", CLI_FLAG(client_config, no_incremental)},
    {"retries", CLI_COUNT(client_config, retries, 0, 100),
     .message = "--retries takes a number from 0 to 100"},
    {"max-session-memory", CLI_MEMORY(client_config, max_session_memory),
     .message = CLI_MEMORY_USAGE},
    {"connect-command", CLI_STRING(client_config, command), .nonempty = 1,
     .message = "--connect-command takes a command"},
    {"plaintext", CLI_FLAG(client_config, plaintext)},
    {"tls", CLI_FLAG(client_config, tls_command)},
    {"tls-verify", CLI_FLAG(client_config, tls_options.verify_cert)},
    {"tls-ca", CLI_CUSTOM(set_tls_ca)},
    {"tls-server-name", CLI_CUSTOM(set_tls_server_name)},
    {"help", CLI_HELP},
    {"version", CLI_VERSION}};

static const cli_program program = {PROG, usage, options,
                                    sizeof options / sizeof options[0]};

static int usage_error(const char *message) {
  return cli_usage_error(&program, message);
}

/* Splits each --table into its local and remote name (LOCAL=REMOTE, or
 * NAME for both). Returns -1 to go on, else the exit status. */
static int split_tables(client_config *config) {
  size_t n = config->tables.count;
  config->locals = calloc(n + 1, sizeof *config->locals);
  config->remotes = calloc(n + 1, sizeof *config->remotes);
  if (!config->locals || !config->remotes)
    return CLI_EXIT_INTERNAL;
  for (size_t i = 0; i < n; i++) {
    const char *arg = config->tables.items[i];
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    config->locals[i] = strndup(arg, len);
    config->remotes[i] = eq ? eq + 1 : arg;
    if (!config->locals[i])
      return CLI_EXIT_INTERNAL;
    if (len == 0 || config->remotes[i][0] == '\0')
      return usage_error("--table takes NAME or LOCAL=REMOTE");
    for (size_t j = 0; j < i; j++) {
      if (strcmp(config->locals[j], config->locals[i]) == 0)
        return usage_error("a table is named twice");
      if (strcmp(config->remotes[j], config->remotes[i]) == 0)
        return usage_error("two tables are mapped to one of the server's");
    }
  }
  return -1;
}

static void free_tables(client_config *config) {
  for (size_t i = 0; config->locals && i < config->tables.count; i++)
    free(config->locals[i]);
  free(config->locals);
  free(config->remotes);
}

/* The checks that span several options, once all are read. Returns -1 to
 * go on, else the exit status. */
static int check_options(client_config *config) {
  if (config->db_path == NULL)
    return usage_error("missing --db");
  if (config->init && config->drop_capture)
    return usage_error("--init and --drop-capture exclude each other");
  if (config->all_tables && !config->init && !config->drop_capture)
    return usage_error("--all-tables goes with --init or --drop-capture (a "
                       "sync names its tables with --table)");
  if (config->server.host[0] == '\0' && !config->command && !config->init &&
      !config->drop_capture)
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
  if (config->tables.count == 0 && !config->all_tables)
    return usage_error("missing --table");
  if (config->tables.count > 0 && config->all_tables)
    return usage_error("--table and --all-tables exclude each other");
  return split_tables(config);
}

/* Fills |config| from the command line. Returns -1 to go on, else the
 * exit status. */
static int parse_options(client_config *config, int argc, char **argv) {
  config->timeout_ms = DEFAULT_TIMEOUT_MS;
  config->retries = DEFAULT_RETRIES;
  config->max_session_memory = LIPSYNC_DEFAULT_MEMORY_LIMIT;
  int rc = cli_options_parse(&program, config, argc, argv);
  return rc >= 0 ? rc : check_options(config);
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

/* --dry-run, in text: per table, what the sync would do. */
static void print_dry_run(const client_config *config,
                          lipsync_session *session) {
  size_t count = lipsync_session_table_count(session);
  for (size_t i = 0; i < count; i++) {
    lipsync_table_stats st;
    if (lipsync_session_table_stats(session, i, &st) < 0)
      continue;
    printf("%s: would send %" PRIu64 " rows (%" PRIu64
           " deletes), receive %" PRIu64 " rows (%" PRIu64
           " deletes); changed on both sides: %" PRIu64
           " taken from the server, %" PRIu64 " kept (policy %s); %" PRIu64
           " conflicts\n",
           st.name, st.rows_sent, st.deletes_sent, st.rows_received,
           st.deletes_received, st.changed_both_taken, st.changed_both_kept,
           lipsync_policy_name(config->policy), st.conflicts);
  }
  int outcome = lipsync_session_dry_run_outcome(session);
  if (outcome == 0)
    printf("dry run: nothing was changed; the sync would succeed\n");
  else
    printf("dry run: nothing was changed; the sync would fail (%s): %s\n",
           lipsync_error_name(outcome), lipsync_session_errmsg(session));
  fflush(stdout);
}

/* The name --json gives the error that ended a run: the session's, or
 * the failure below it (|failed|, an exit status, or -1). */
static const char *error_code(int result, int failed) {
  switch (failed) {
  case CLI_EXIT_AUTH: /* the TLS key derived from the secret was refused */
    return lipsync_error_name(LIPSYNC_ERR_AUTH_FAILED);
  case CLI_EXIT_TLS:
    return "TLS";
  case CLI_EXIT_TRANSPORT:
    return "TRANSPORT_MISMATCH";
  default:
    return lipsync_error_name(result);
  }
}

/* --json: the run as one object on stdout (README, "JSON output").
 * |session| is NULL when the run failed before one started. */
static void print_json(const client_config *config, lipsync_session *session,
                       const char *started, int attempts, double seconds,
                       int status, const char *code) {
  json_out j = {0};
  json_begin(&j);
  json_key(&j, "program");
  json_string(&j, PROG);
  json_key(&j, "version");
  json_string(&j, LIPSYNC_VERSION_STRING);
  json_key(&j, "started");
  json_string(&j, started);
  json_key(&j, "server");
  json_string(&j, config->command ? NULL : config->server.host);
  json_key(&j, "dry_run");
  json_bool(&j, config->dry_run != 0);
  json_key(&j, "policy");
  json_string(&j, lipsync_policy_name(config->policy));
  json_key(&j, "outcome");
  json_string(&j, status != CLI_EXIT_OK ? "failed"
                  : config->dry_run     ? "dry-run"
                                        : "ok");
  json_key(&j, "exit_status");
  json_int(&j, status);
  if (status != CLI_EXIT_OK)
    report_error(&j, code, last_error,
                 session && lipsync_session_error_is_remote(session));
  else
    json_key(&j, "error"), json_null(&j);
  if (config->dry_run && status == CLI_EXIT_OK) {
    int outcome = lipsync_session_dry_run_outcome(session);
    json_key(&j, "would");
    json_begin(&j);
    json_key(&j, "outcome");
    json_string(&j, outcome ? "failed" : "ok");
    json_key(&j, "code");
    json_string(&j, outcome ? lipsync_error_name(outcome) : NULL);
    json_key(&j, "message");
    json_string(&j, outcome ? lipsync_session_errmsg(session) : NULL);
    json_end(&j);
  }
  json_key(&j, "attempts");
  json_int(&j, attempts);
  json_key(&j, "seconds");
  json_seconds(&j, seconds);
  if (session) {
    report_tables(&j, session);
  } else {
    json_key(&j, "tables");
    json_array(&j);
    json_array_end(&j);
  }
  json_end(&j);
  if (json_write(&j, stdout) < 0)
    fprintf(stderr, PROG ": cannot write the JSON report\n");
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
  complain("%s", message);
  return cli_exit_code(result);
}

/* Runs |session| over |link| after its TLS handshake. Returns the
 * session's result; sets *failed to an exit status when the connection
 * failed below the session (the reason printed). */
static int run_over(const client_config *config, cli_conn *link,
                    lipsync_session *session, int *failed) {
  if (conn_handshake(link, config->timeout_ms, -1) < 0) {
    complain("%s", conn_errmsg(link));
    *failed = cli_conn_exit(conn_failure_of(link));
    return LIPSYNC_ERR_IO;
  }
  int result = conn_run(link, session, config->timeout_ms, -1);
  conn_close_notify(link);
  if (result < 0 && conn_failure_of(link) == CONN_FAIL_MISMATCH) {
    complain("%s", conn_errmsg(link));
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
    complain("%s", err);
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
    complain("%s", report);
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
                    const char *started, enum next_step *next) {
  lipsync_session *session = NULL;
  double seconds = 0;
  int rc = lipsync_session_client_new(
      &session, store, secret->data, secret->len,
      (const char *const *)config->locals, config->tables.count);
  for (size_t i = 0; rc == 0 && i < config->tables.count; i++)
    rc = lipsync_session_map_table(session, config->locals[i],
                                   config->remotes[i]);
  if (rc == 0 && config->dry_run)
    rc = lipsync_session_set_dry_run(session, 1);
  if (rc == 0)
    rc = lipsync_session_set_policy(session, config->policy);
  if (rc == 0)
    rc = lipsync_session_set_incremental(session, !config->no_incremental);
  if (rc == 0 && full)
    rc = lipsync_session_set_full(session);
  if (rc == 0)
    rc = lipsync_session_set_memory_limit(session, config->max_session_memory);
  if (rc < 0) {
    complain("cannot start session: %s", lipsync_strerror(rc));
    if (config->json)
      print_json(config, NULL, started, attempt + 1, 0, cli_exit_code(rc),
                 lipsync_error_name(rc));
    lipsync_session_free(session);
    return cli_exit_code(rc);
  }
  int failed = -1;
  /* Before connecting: the server does not wait while this side gives a
   * large table its UUIDs and capture. */
  rc = lipsync_session_prepare(session);
  if (rc == 0)
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
  else if (rc == 0 && config->dry_run && !config->json)
    print_dry_run(config, session);
  else if (rc == 0 && !config->quiet && !config->json)
    print_summary(session, seconds);
  if (config->json && *next == STOP)
    print_json(config, session, started, attempt + 1, seconds, status,
               error_code(rc, failed));
  lipsync_session_free(session);
  return *next == STOP ? status : -1;
}

/* Syncs, and runs the sync again when it collided with another writer
 * (spec LS-ERR-10) or when an incremental sync failed its verification
 * (spec LS-INC-16: the next one reconciles whole tables). */
static int run(const client_config *config, cli_secret *secret) {
  lipsync_store *store = NULL;
  char started[REPORT_TIME_LEN];
  report_time(started);
  if (cli_open_store(PROG, config->db_path, &store) < 0) {
    if (config->json)
      print_json(config, NULL, started, 0, 0, CLI_EXIT_DATABASE,
                 lipsync_error_name(LIPSYNC_ERR_STORAGE));
    return CLI_EXIT_DATABASE;
  }
  lipsync_store_set_lock_timeout(store, cli_lock_timeout(config->timeout_ms));
  int full = config->full, status;
  enum next_step next = STOP;
  for (int attempt = 0;; attempt++) {
    status = one_sync(config, store, secret, full, attempt, started, &next);
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
  const char *const *locals =
      config.all_tables ? NULL : (const char *const *)config.locals;
  if (rc < 0 && config.init) {
    rc = cli_init_tables(PROG, config.db_path, locals, config.tables.count,
                         config.quiet, config.timeout_ms);
  } else if (rc < 0 && config.drop_capture) {
    rc = cli_drop_capture(PROG, config.db_path, locals, config.tables.count,
                          config.quiet, config.timeout_ms);
  } else if (rc < 0) {
    cli_secret secret = {NULL, 0};
    char err[256];
    cli_ignore_sigpipe();
    if (cli_secret_load(&secret, config.secret_file, PROG, err, sizeof err) <
        0) {
      complain("%s", err);
      rc = CLI_EXIT_USAGE;
    } else if (config.tls_options.enabled &&
               conn_tls_new(&config.tls, 0, &config.tls_options, secret.data,
                            secret.len, err, sizeof err) < 0) {
      complain("TLS: %s", err);
      rc = CLI_EXIT_USAGE;
    } else {
      rc = run(&config, &secret);
    }
    if (rc == CLI_EXIT_USAGE && config.json) {
      char started[REPORT_TIME_LEN];
      report_time(started);
      print_json(&config, NULL, started, 0, 0, rc, "USAGE");
    }
    conn_tls_free(config.tls);
    cli_secret_wipe(&secret);
  }
  free_tables(&config);
  cli_options_free(&program, &config);
  return rc;
}
