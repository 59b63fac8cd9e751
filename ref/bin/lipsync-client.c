/*
 * lipsync-client: syncs tables of a local SQLite database with a
 * lipsync-server over TCP, then reports what moved.
 *
 * The flow is linear: options, secret, store, session (which copies the
 * secret, so ours is wiped at once), connect, lipsync_session_run_fd(),
 * report. Either both databases end up with the union of their rows or,
 * on any failure, neither changes.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "lipsync.h"

#define PROG "lipsync-client"
#define DEFAULT_TIMEOUT_MS 60000
/* How long to wait for the server to close after the session ended. */
#define LINGER_MS 200

typedef struct client_config {
  const char *db_path;
  const char *secret_file;
  cli_hostport server;
  const char **tables;
  size_t ntables;
  int timeout_ms;
  int quiet;
  int init;
  lipsync_policy policy;
} client_config;

/* ---- options ---------------------------------------------------------- */

static void usage(FILE *out, int full) {
  fprintf(out,
          "Usage: " PROG " --db DB --connect HOST:PORT --secret-file FILE\n"
          "         --table NAME [--table NAME]... [--policy POLICY]\n"
          "         [--timeout SECONDS] [--quiet]\n"
          "       " PROG " --db DB --init --table NAME [--table NAME]...\n"
          "       " PROG " --help | --version\n");
  if (!full) {
    fprintf(out, "Run '" PROG " --help' for details.\n");
    return;
  }
  fprintf(out,
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
          "  --secret-file FILE   the shared secret: the file's contents\n"
          "                       without one trailing newline. Without this\n"
          "                       option the secret is taken from "
          "$" CLI_SECRET_ENV ".\n"
          "  --table NAME         a table to sync (repeat for several; all\n"
          "                       are synced in one transaction; on\n"
          "                       PostgreSQL SCHEMA.NAME, else public)\n"
          "  --policy POLICY      a row changed on both sides since they\n"
          "                       last synced keeps: lww, the later change\n"
          "                       (default); server-wins, the server's;\n"
          "                       client-wins, this side's\n"
          "  --init               install change capture on the tables (as\n"
          "                       the first sync would) and exit, without\n"
          "                       connecting\n"
          "  --timeout SECONDS    give up when connecting takes, or the\n"
          "                       server stays silent, this long (default\n"
          "                       60; 0 = wait forever)\n"
          "  --quiet              print nothing but errors\n"
          "\n"
          "On success prints one line per table:\n"
          "  TABLE: sent N rows, received M rows, X bytes out, Y bytes in, "
          "T.TTs\n"
          "where T is the wall time of the whole session.\n"
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
  if (config->server.host[0] == '\0' && !config->init)
    return usage_error("missing --connect");
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
           " bytes out, %" PRIu64 " bytes in, %.2fs\n",
           stats.name, stats.rows_sent, stats.rows_received, stats.bytes_sent,
           stats.bytes_received, seconds);
  }
  fflush(stdout);
}

static int report_failure(lipsync_session *session, int result) {
  char message[1024];
  const char *text = lipsync_session_errmsg(session);
  snprintf(message, sizeof message, "%s",
           text[0] != '\0' ? text : lipsync_strerror(result));
  cli_sanitize(message);
  fprintf(stderr, PROG ": %s\n", message);
  return cli_exit_code(result);
}

/* Connects and runs |session| to its end. Returns the exit status. */
static int sync_over_network(const client_config *config,
                             lipsync_session *session) {
  cli_progress progress;
  cli_progress_init(&progress, stderr);
  if (!config->quiet && isatty(STDERR_FILENO))
    lipsync_session_set_progress(session, cli_progress_update, &progress);
  double started = cli_now();
  char err[512];
  int fd = connect_to(&config->server, config->timeout_ms, err, sizeof err);
  if (fd < 0) {
    fprintf(stderr, PROG ": %s\n", err);
    return CLI_EXIT_PEER;
  }
  int result = lipsync_session_run_fd(session, fd, config->timeout_ms, -1);
  double seconds = cli_now() - started;
  cli_progress_clear(&progress);
  cli_close_connection(fd, LINGER_MS);
  if (result != 0)
    return report_failure(session, result);
  if (!config->quiet)
    print_summary(session, seconds);
  return CLI_EXIT_OK;
}

static int run(const client_config *config, cli_secret *secret) {
  lipsync_store *store = NULL;
  if (cli_open_store(PROG, config->db_path, &store) < 0)
    return CLI_EXIT_DATABASE;
  lipsync_session *session = NULL;
  int rc =
      lipsync_session_client_new(&session, store, secret->data, secret->len,
                                 config->tables, config->ntables);
  /* The session keeps its own copy; ours has served its purpose. */
  cli_secret_wipe(secret);
  if (rc == 0)
    rc = lipsync_session_set_policy(session, config->policy);
  if (rc < 0) {
    fprintf(stderr, PROG ": cannot start session: %s\n", lipsync_strerror(rc));
    lipsync_store_free(store);
    return cli_exit_code(rc);
  }
  rc = sync_over_network(config, session);
  lipsync_session_free(session);
  lipsync_store_free(store);
  return rc;
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
    } else {
      rc = run(&config, &secret);
    }
    cli_secret_wipe(&secret);
  }
  free(config.tables);
  return rc;
}
