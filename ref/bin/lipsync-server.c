/*
 * lipsync-server: accepts LipSync clients over TCP (TLS 1.3 unless told
 * otherwise) and syncs the tables they name with one database; or, with
 * --stdio, serves one client on its standard input and output (under
 * ssh, say).
 *
 * The main thread owns the listening socket and every connection record; it
 * sleeps in poll() on the listener and on a wake pipe. Each connection runs
 * in its own thread with its own store (an SQLite connection must not be
 * shared between threads; a PostgreSQL one may pass from a session that
 * ended to the next, storepool.h) and its own cancel pipe, which the main
 * thread writes to on shutdown so lipsync_session_run_fd() ends the session
 * with SHUTTING_DOWN. Signal handlers and finishing threads only write a byte
 * to the wake pipe; all real work happens in the main thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "conn.h"
#include "lipsync.h"
#include "options.h"
#include "serverlog.h"
#include "storepool.h"

#define PROG "lipsync-server"
#define DEFAULT_TIMEOUT_MS 60000
#define DEFAULT_MAX_CLIENTS 64
#define MAX_MAX_CLIENTS 4096
/* Connections not yet authenticated: how many at once (the oldest is
 * closed for a new one), and how long each may take (spec LS-SEC-2). */
#define DEFAULT_MAX_UNAUTHENTICATED 64
#define DEFAULT_AUTH_TIMEOUT_MS 10000
/* PostgreSQL connections kept between sessions, and for how long. */
#define DEFAULT_IDLE_CONNECTIONS 8
#define DEFAULT_IDLE_TIMEOUT_MS 60000
/* How long a finished session waits for the client to close first, so the
 * client reads our last frame (say, SHUTTING_DOWN) instead of a reset. */
#define LINGER_MS 500
/* How long to stop accepting when out of file descriptors. */
#define ACCEPT_BACKOFF_MS 100
/* At most how often a finished session folds the changes applications made
 * into the summaries the store keeps, and purges old tombstones
 * (lipsync_store_maintain): cheap, and never needed for correctness. */
#define MAINTAIN_INTERVAL_MS 10000

typedef struct server_config {
  const char *db_path;
  const char *secret_file;
  cli_hostport listen;
  cli_list tables; /* --table */
  int all_tables;
  int once;
  int quiet;
  int timeout_ms;
  size_t max_clients;
  size_t max_unauthenticated;
  size_t idle_connections; /* --idle-connections */
  int idle_timeout_ms;     /* --idle-timeout */
  size_t max_session_memory;
  int auth_timeout_ms;
  uint64_t retention_ms;
  int init;
  int drop_capture;
  int no_incremental;
  int plaintext;               /* --plaintext */
  int stdio;                   /* --stdio */
  int tls_stdio;               /* --tls: TLS over --stdio too */
  serverlog_format log_format; /* --log-format */
  const char *log_file;        /* --log-file */
  int json;                    /* --json */
  conn_tls_options tls_options;
  conn_tls *tls; /* NULL: plaintext */
  cli_secret secret;
} server_config;

typedef struct connection {
  const server_config *config;
  int fd;
  int wfd;            /* where to write: |fd|, except with --stdio */
  int cancel_pipe[2]; /* written once by the main thread to cancel */
  int wake_fd;        /* the main thread's wake pipe */
  char peer[CLI_ADDRESS_MAX];
  pthread_t thread;
  atomic_int finished; /* set by the thread as its last act */
  /* The thread's store while it exists, so shutdown can interrupt a wait
   * for the database lock; |lock| guards it against the thread freeing
   * the store meanwhile. */
  pthread_mutex_t lock;
  lipsync_store *store;
  int exit_code;
  struct server *srv;       /* for the session permits */
  double accepted_at;       /* cli_now() at accept */
  atomic_int authenticated; /* set once the client's proof verified */
  int cancelled;            /* main thread: a cancel byte was written */
  int has_permit;           /* thread: holds one of the session permits */
} connection;

typedef struct server {
  server_config config;
  int listen_fd;
  int wake_pipe[2];
  /* config.max_clients + config.max_unauthenticated entries, NULL when
   * free: each connection, authenticated or not, has its thread. */
  connection **slots;
  size_t nslots;
  size_t active;
  /* Session permits: at most config.max_clients authenticated sessions
   * use the database at once; others wait for a permit. */
  pthread_mutex_t permit_lock;
  pthread_cond_t permit_freed;
  size_t permits_used;
  int stopping;
  int accepted;  /* connections accepted so far, for --once */
  int once_exit; /* exit status of the --once session */
  double accept_paused_until;
  store_pool *pool; /* the database connections between sessions */
} server;

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t reopen_requested; /* SIGHUP */
/* When a session last ran lipsync_store_maintain (cli_now() in ms). */
static atomic_llong last_maintain_ms;
static int signal_wake_fd = -1;

/* ---- options ---------------------------------------------------------- */

static void usage(FILE *out, int full) {
  fprintf(
      out,
      "Usage: " PROG " --db DB (--listen HOST:PORT | --stdio)\n"
      "         --secret-file FILE (--table NAME... | --all-tables)\n"
      "         [--tls-cert FILE --tls-key FILE | --plaintext] [--tls]\n"
      "         [--once] [--timeout SECONDS] [--max-clients N]\n"
      "         [--auth-timeout SECONDS] [--max-unauthenticated N]\n"
      "         [--idle-connections N] [--idle-timeout SECONDS]\n"
      "         [--max-session-memory MIB]\n"
      "         [--tombstone-retention DURATION] [--no-incremental]\n"
      "         [--log-format text|json] [--log-file FILE] [--json] [--quiet]\n"
      "       " PROG " --db DB (--init | --drop-capture)\n"
      "         (--table NAME... | --all-tables)\n"
      "         [--timeout SECONDS] [--quiet]\n"
      "       " PROG " --help | --version\n");
  if (!full) {
    fprintf(out, "Run '" PROG " --help' for details.\n");
    return;
  }
  fprintf(
      out,
      "\n"
      "Serves LipSync clients: each client that proves it holds the shared\n"
      "secret syncs the tables it names with the database DB: the rows\n"
      "inserted, updated and deleted on either side travel, so that both\n"
      "sides end up the same.\n"
      "\n"
      "  --db DB             the database to serve: a SQLite file (must\n"
      "                      exist), or PostgreSQL as a postgresql:// URI\n"
      "                      or a libpq conninfo (\"host=... dbname=...\")\n"
      "  --listen HOST:PORT  address to listen on: an IPv4 address, [IPv6]\n"
      "                      or a host name (its first address); port 0\n"
      "                      picks a free port. The line \"listening on\n"
      "                      HOST:PORT\" on stdout tells the address in use.\n"
      "  --stdio             serve one session on standard input and output\n"
      "                      instead (for ssh HOST " PROG " --stdio ...);\n"
      "                      messages go to stderr. No TLS unless --tls.\n"
      "  --secret-file FILE  the shared secret: the file's contents without\n"
      "                      one trailing newline. Without this option the\n"
      "                      secret is taken from $" CLI_SECRET_ENV ".\n"
      "  --table NAME        offer table NAME (repeat for several tables);\n"
      "                      on PostgreSQL SCHEMA.NAME, else schema public\n"
      "  --all-tables        offer every table of the database (but\n"
      "                      SQLite's sqlite_* and LipSync's _lipsync*)\n"
      "  --tls-cert FILE     present this certificate chain (PEM) to clients\n"
      "  --tls-key FILE      that verify one; its private key (PEM). Clients\n"
      "                      are also accepted with the TLS key derived from\n"
      "                      the secret, which needs no certificate (the\n"
      "                      default: TLS 1.3 with that key)\n"
      "  --plaintext         no TLS: rows cross the network in clear (for a\n"
      "                      network you trust, or a tunnel)\n"
      "  --tls               with --stdio: TLS all the same\n"
      "  --once              serve one connection, then exit with the status\n"
      "                      of that session (even when a signal ends it)\n"
      "  --timeout SECONDS   end a session whose client stays silent this\n"
      "                      long (default 60; 0 = wait forever), or that\n"
      "                      waits half as long for another writer's lock\n"
      "                      on the database (the client is told to sync\n"
      "                      again)\n"
      "  --max-clients N     serve at most N authenticated sessions at once\n"
      "                      (default 64), each with its database connection;\n"
      "                      further authenticated clients wait for one to\n"
      "                      end (at most --timeout, then they are told to\n"
      "                      sync again)\n"
      "  --auth-timeout SECONDS\n"
      "                      close a connection that has not proved it holds\n"
      "                      the secret (TLS and the handshake) this long\n"
      "                      after it opened (default 10)\n"
      "  --max-unauthenticated N\n"
      "                      keep at most N connections that have not yet\n"
      "                      authenticated (default 64): a new one closes\n"
      "                      the oldest. None of them touches the "
      "database.\n"
      "  --idle-connections N\n"
      "                      with PostgreSQL, keep up to N database\n"
      "                      connections open between sessions for the next\n"
      "                      ones (default 8; 0: a session opens its own and\n"
      "                      closes it)\n"
      "  --idle-timeout SECONDS\n"
      "                      close a connection kept that long unused\n"
      "                      (default 60)\n" CLI_SERVER_MEMORY_HELP
      "  --tombstone-retention DURATION\n"
      "                      keep the mark a deleted row leaves this long\n"
      "                      (N seconds, or Nms, Ns, Nm, Nh, Nd; default\n"
      "                      30d); a client that stays away longer has its\n"
      "                      rows deleted here since removed, not restored\n"
      "  --no-incremental    do not offer the incremental exchange: every\n"
      "                      client reconciles whole tables\n"
      "  --init              install change capture on the tables (as the\n"
      "                      first sync would) and exit, without listening\n"
      "  --drop-capture      remove change capture from the tables and\n"
      "                      exit, without listening: triggers and metadata\n"
      "                      go, rows and their _lipsync_uuid stay (the next\n"
      "                      sync installs it again); with --all-tables,\n"
      "                      also the metadata of tables since dropped and\n"
      "                      the database's own (site id, clients' tokens)\n"
      "  --log-format FORMAT the log's format: text (default), one line per\n"
      "                      session, \"TIME " PROG ": PEER [TABLES] OUTCOME;\n"
      "                      ROWS and BYTES each way, SECONDS\", or json, one\n"
      "                      object per session (README, \"JSON output\")\n"
      "  --log-file FILE     append the log to FILE instead of stderr (\"-\":\n"
      "                      stdout); SIGHUP reopens it, for log rotation\n"
      "  --json              --log-format json on stdout; the \"listening "
      "on\"\n"
      "                      line is then a JSON object too\n"
      "  --quiet             log nothing (no line per session)\n"
      "\n"
      "SIGINT or SIGTERM stops the server: it stops accepting, ends every\n"
      "session in progress (its client receives SHUTTING_DOWN and neither\n"
      "database changes), waits for them and exits 0. SIGHUP reopens\n"
      "--log-file.\n"
      "\n" CLI_EXIT_STATUS_HELP);
}

static int set_log_format(void *config, const char *arg, char *err,
                          size_t errlen) {
  server_config *c = config;
  if (strcmp(arg, "text") == 0)
    c->log_format = SERVERLOG_TEXT;
  else if (strcmp(arg, "json") == 0)
    c->log_format = SERVERLOG_JSON;
  else
    return -1;
  return 0;
}

/* Keep the order: getopt_long lists an ambiguous abbreviation's
 * candidates in it. */
static const cli_option options[] = {
    {"db", CLI_STRING(server_config, db_path)},
    {"listen", CLI_HOSTPORT(server_config, listen, 0)},
    {"secret-file", CLI_STRING(server_config, secret_file)},
    {"table", CLI_LIST(server_config, tables)},
    {"all-tables", CLI_FLAG(server_config, all_tables)},
    {"once", CLI_FLAG(server_config, once)},
    {"timeout", CLI_TIMEOUT(server_config, timeout_ms, 0),
     .message = "--timeout takes a number of seconds"},
    {"max-clients", CLI_SIZE(server_config, max_clients, 1, MAX_MAX_CLIENTS),
     .message = "--max-clients takes a number from 1 to 4096"},
    {"auth-timeout", CLI_TIMEOUT(server_config, auth_timeout_ms, 1),
     .message = "--auth-timeout takes a number of seconds above 0"},
    {"max-unauthenticated",
     CLI_SIZE(server_config, max_unauthenticated, 1, MAX_MAX_CLIENTS),
     .message = "--max-unauthenticated takes a number from 1 to 4096"},
    {"idle-connections",
     CLI_SIZE(server_config, idle_connections, 0, MAX_MAX_CLIENTS),
     .message = "--idle-connections takes a number from 0 to 4096"},
    {"idle-timeout", CLI_TIMEOUT(server_config, idle_timeout_ms, 1),
     .message = "--idle-timeout takes a number of seconds above 0"},
    {"max-session-memory", CLI_MEMORY(server_config, max_session_memory),
     .message = CLI_MEMORY_USAGE},
    {"quiet", CLI_FLAG(server_config, quiet)},
    {"tombstone-retention", CLI_DURATION(server_config, retention_ms),
     .message = "--tombstone-retention takes a duration such as 30d, 12h or "
                "500ms"},
    {"init", CLI_FLAG(server_config, init)},
    {"drop-capture", CLI_FLAG(server_config, drop_capture)},
    {"no-incremental", CLI_FLAG(server_config, no_incremental)},
    {"stdio", CLI_FLAG(server_config, stdio)},
    {"plaintext", CLI_FLAG(server_config, plaintext)},
    {"tls", CLI_FLAG(server_config, tls_stdio)},
    {"tls-cert", CLI_STRING(server_config, tls_options.cert_file)},
    {"tls-key", CLI_STRING(server_config, tls_options.key_file)},
    {"log-format", CLI_CUSTOM(set_log_format),
     .message = "--log-format takes text or json"},
    {"log-file", CLI_STRING(server_config, log_file), .nonempty = 1,
     .message = "--log-file takes a file name"},
    {"json", CLI_FLAG(server_config, json)},
    {"help", CLI_HELP},
    {"version", CLI_VERSION}};

static const cli_program program = {PROG, usage, options,
                                    sizeof options / sizeof options[0]};

static int usage_error(const char *message) {
  return cli_usage_error(&program, message);
}

/* The checks that span several options, once all are read. Returns -1 to
 * go on, else the exit status. */
static int check_options(server_config *config) {
  if (config->db_path == NULL)
    return usage_error("missing --db");
  if (config->init && config->drop_capture)
    return usage_error("--init and --drop-capture exclude each other");
  if (config->listen.host[0] == '\0' && !config->init &&
      !config->drop_capture && !config->stdio)
    return usage_error("missing --listen (or --stdio)");
  if (config->listen.host[0] != '\0' && config->stdio)
    return usage_error("--listen and --stdio exclude each other");
  if (!config->tls_options.cert_file != !config->tls_options.key_file)
    return usage_error("--tls-cert and --tls-key go together");
  if (config->plaintext && (config->tls_options.cert_file || config->tls_stdio))
    return usage_error("--plaintext excludes --tls, --tls-cert and "
                       "--tls-key");
  if (config->tls_stdio && !config->stdio)
    return usage_error("--tls goes with --stdio (TLS is the default "
                       "with --listen)");
  config->tls_options.enabled =
      !config->plaintext && (!config->stdio || config->tls_stdio);
  if (config->tables.count == 0 && !config->all_tables)
    return usage_error("name the tables to offer with --table or give "
                       "--all-tables");
  if (config->tables.count > 0 && config->all_tables)
    return usage_error("--table and --all-tables exclude each other");
  if (config->json && config->log_file)
    return usage_error("--json logs to stdout: it excludes --log-file");
  if (config->json && config->stdio)
    return usage_error("--json excludes --stdio (stdout carries the "
                       "session)");
  if (config->json) {
    config->log_format = SERVERLOG_JSON;
    config->log_file = "-";
  }
  return -1;
}

/* Fills |config| from the command line. Returns -1 to go on, else the
 * exit status. */
static int parse_options(server_config *config, int argc, char **argv) {
  config->timeout_ms = DEFAULT_TIMEOUT_MS;
  config->max_clients = DEFAULT_MAX_CLIENTS;
  config->idle_connections = DEFAULT_IDLE_CONNECTIONS;
  config->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
  config->max_session_memory = LIPSYNC_DEFAULT_MEMORY_LIMIT;
  config->max_unauthenticated = DEFAULT_MAX_UNAUTHENTICATED;
  config->auth_timeout_ms = DEFAULT_AUTH_TIMEOUT_MS;
  config->retention_ms = LIPSYNC_DEFAULT_RETENTION_MS;
  int rc = cli_options_parse(&program, config, argc, argv);
  return rc >= 0 ? rc : check_options(config);
}

/* ---- signals ---------------------------------------------------------- */

static void wake(int fd) {
  char byte = 0;
  /* The pipe is non-blocking: when it is full a wake-up is pending anyway. */
  ssize_t rc = write(fd, &byte, 1);
  (void)rc;
}

static void on_stop_signal(int signo) {
  (void)signo;
  int saved_errno = errno;
  stop_requested = 1;
  if (signal_wake_fd >= 0)
    wake(signal_wake_fd);
  errno = saved_errno;
}

static void on_hup_signal(int signo) {
  (void)signo;
  int saved_errno = errno;
  reopen_requested = 1;
  if (signal_wake_fd >= 0)
    wake(signal_wake_fd);
  errno = saved_errno;
}

static void install_signal_handlers(int wake_fd) {
  signal_wake_fd = wake_fd;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_hup_signal;
  sigaction(SIGHUP, &sa, NULL);
  cli_ignore_sigpipe();
}

static int make_pipe(int fds[2], int nonblocking) {
  if (pipe(fds) < 0)
    return -1;
  for (int i = 0; i < 2; i++) {
    fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    if (nonblocking)
      cli_set_nonblocking(fds[i], 1);
  }
  return 0;
}

static void drain(int fd) {
  char buf[256];
  while (read(fd, buf, sizeof buf) > 0) {
  }
}

/* ---- one session per thread --------------------------------------------- */

/* Joins the table names of |session| with commas into |out|. */
/* Lets one finished session in MAINTAIN_INTERVAL_MS keep the store's
 * summaries folded and its old tombstones purged. Returns -1 if that
 * failed. */
static int maybe_maintain(const connection *conn, lipsync_store *store) {
  long long now = (long long)(cli_now() * 1000.0);
  long long last = atomic_load(&last_maintain_ms);
  if (stop_requested || now - last < MAINTAIN_INTERVAL_MS ||
      !atomic_compare_exchange_strong(&last_maintain_ms, &last, now))
    return 0;
  if (lipsync_store_maintain(store, conn->config->retention_ms) == 0)
    return 0;
  serverlog_message(NULL, "maintenance failed: %s",
                    lipsync_store_errmsg(store));
  return -1;
}

/* Runs one session over |conn|, after the TLS handshake. Returns its exit
 * status. */
static int serve_session(connection *conn, cli_conn *link);

static int serve_connection(connection *conn) {
  cli_conn *link = conn_new(conn->config->tls, 1, conn->fd, conn->wfd);
  if (!link) {
    serverlog_message(conn->peer, "failed: out of memory");
    return CLI_EXIT_INTERNAL;
  }
  int rc;
  /* Nothing touches the database before the client has proved it holds
   * the secret: with TLS, the handshake comes first. */
  if (conn_handshake(link, conn->config->timeout_ms, conn->cancel_pipe[0]) <
      0) {
    serverlog_message(conn->peer, "failed: %s", conn_errmsg(link));
    rc = cli_conn_exit(conn_failure_of(link));
  } else {
    rc = serve_session(conn, link);
  }
  conn_free(link);
  return rc;
}

/* ---- session permits ---------------------------------------------------- */

/* Waits up to |timeout_ms| (0: forever) for one of the max_clients
 * permits. Returns 0, or -1 when it timed out or the server is stopping. */
static int permit_take(server *srv, int timeout_ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  int rc = 0;
  pthread_mutex_lock(&srv->permit_lock);
  while (rc == 0 && !srv->stopping &&
         srv->permits_used >= srv->config.max_clients)
    rc = timeout_ms > 0
             ? pthread_cond_timedwait(&srv->permit_freed, &srv->permit_lock,
                                      &until)
             : pthread_cond_wait(&srv->permit_freed, &srv->permit_lock);
  int ok = !srv->stopping && srv->permits_used < srv->config.max_clients;
  if (ok)
    srv->permits_used++;
  pthread_mutex_unlock(&srv->permit_lock);
  return ok ? 0 : -1;
}

static void permit_give(server *srv) {
  pthread_mutex_lock(&srv->permit_lock);
  srv->permits_used--;
  pthread_cond_signal(&srv->permit_freed);
  pthread_mutex_unlock(&srv->permit_lock);
}

/* The session's lipsync_store_opener: runs once the client's proof has
 * verified (spec LS-SEC-3). Takes a permit, then opens the database. */
static int open_store(void *user, lipsync_store **out, char *err,
                      size_t errlen) {
  connection *conn = user;
  const server_config *config = conn->config;
  atomic_store(&conn->authenticated, 1);
  wake(conn->wake_fd); /* no longer under the authentication bounds */
  if (permit_take(conn->srv, config->timeout_ms) < 0) {
    snprintf(err, errlen,
             "the server serves its maximum of %zu sessions; sync again",
             config->max_clients);
    return LIPSYNC_ERR_TRY_AGAIN;
  }
  conn->has_permit = 1;
  lipsync_store *store = store_pool_take(conn->srv->pool);
  if (!store && lipsync_store_open(&store, config->db_path, err, errlen) < 0)
    return LIPSYNC_ERR_STORAGE;
  lipsync_store_set_lock_timeout(store, cli_lock_timeout(config->timeout_ms));
  pthread_mutex_lock(&conn->lock);
  conn->store = store;
  pthread_mutex_unlock(&conn->lock);
  *out = store;
  return 0;
}

static int serve_session(connection *conn, cli_conn *link) {
  const server_config *config = conn->config;
  double started = cli_now();
  lipsync_session *session = NULL;
  int rc = lipsync_session_server_new(&session, NULL, config->secret.data,
                                      config->secret.len,
                                      (const char *const *)config->tables.items,
                                      config->tables.count, config->all_tables);
  if (rc == 0)
    rc = lipsync_session_set_store_opener(session, open_store, conn);
  if (rc == 0)
    rc = lipsync_session_set_tombstone_retention(session, config->retention_ms);
  if (rc == 0)
    rc = lipsync_session_set_incremental(session, !config->no_incremental);
  if (rc == 0)
    rc = lipsync_session_set_memory_limit(session, config->max_session_memory);
  if (rc < 0) {
    serverlog_message(conn->peer, "failed: cannot start session: %s",
                      lipsync_strerror(rc));
    lipsync_session_free(session);
    return cli_exit_code(rc);
  }
  rc = conn_run(link, session, config->timeout_ms, conn->cancel_pipe[0]);
  conn_close_notify(link);
  /* Nothing more to send: the client need not wait for what follows (the
   * log, maintenance, the store's checkpoint). */
  shutdown(conn->wfd, SHUT_WR);
  serverlog_session(conn->peer, session, rc, cli_now() - started);
  lipsync_session_free(session);
  pthread_mutex_lock(&conn->lock);
  lipsync_store *store = conn->store;
  conn->store = NULL;
  pthread_mutex_unlock(&conn->lock);
  /* After a failed session the store may have lost its database (a
   * PostgreSQL restart): the next session maintains instead. Only a store
   * that ended well serves another session. */
  if (store && rc == 0 && maybe_maintain(conn, store) == 0)
    store_pool_give(conn->srv->pool, store);
  else
    lipsync_store_free(store);
  if (conn->has_permit)
    permit_give(conn->srv);
  conn->has_permit = 0;
  if (rc < 0 && conn_failure_of(link) == CONN_FAIL_MISMATCH)
    return CLI_EXIT_TRANSPORT;
  return cli_exit_code(rc);
}

static void *connection_thread(void *arg) {
  connection *conn = arg;
  conn->exit_code = serve_connection(conn);
  cli_close_connection(conn->fd, LINGER_MS);
  conn->fd = -1;
  atomic_store(&conn->finished, 1);
  wake(conn->wake_fd);
  return NULL;
}

/* ---- the main thread: accept, reap, shut down --------------------------- */

static void connection_free(connection *conn) {
  if (conn->fd >= 0)
    close(conn->fd);
  if (conn->cancel_pipe[0] >= 0)
    close(conn->cancel_pipe[0]);
  if (conn->cancel_pipe[1] >= 0)
    close(conn->cancel_pipe[1]);
  pthread_mutex_destroy(&conn->lock);
  free(conn);
}

static connection *connection_new(server *srv, int fd,
                                  const struct sockaddr *addr,
                                  socklen_t addrlen) {
  connection *conn = calloc(1, sizeof *conn);
  if (conn == NULL)
    return NULL;
  conn->config = &srv->config;
  conn->srv = srv;
  conn->fd = fd;
  conn->wfd = fd;
  conn->accepted_at = cli_now();
  atomic_init(&conn->authenticated, 0);
  conn->wake_fd = srv->wake_pipe[1];
  atomic_init(&conn->finished, 0);
  pthread_mutex_init(&conn->lock, NULL);
  cli_format_address(addr, addrlen, conn->peer, sizeof conn->peer);
  if (make_pipe(conn->cancel_pipe, 1) < 0) {
    conn->cancel_pipe[0] = conn->cancel_pipe[1] = -1;
    conn->fd = -1;
    connection_free(conn);
    return NULL;
  }
  return conn;
}

static size_t free_slot(const server *srv) {
  size_t i = 0;
  while (i < srv->nslots && srv->slots[i] != NULL)
    i++;
  return i;
}

/* Writes the cancel byte |why| (conn.h, CONN_CANCEL_*) to |conn|. */
static void cancel(connection *conn, char why) {
  ssize_t rc = write(conn->cancel_pipe[1], &why, 1);
  (void)rc;
  conn->cancelled = 1;
}

/* Whether |conn| is still under the authentication bounds. */
static int unauthenticated(const connection *conn) {
  return conn && !conn->cancelled && !atomic_load(&conn->authenticated) &&
         !atomic_load(&conn->finished);
}

/* Closes the connections that did not authenticate in time; returns the
 * milliseconds until the next one's deadline (-1: none). */
static int enforce_auth_deadlines(server *srv) {
  double now = cli_now(), next = -1;
  double limit = srv->config.auth_timeout_ms / 1000.0;
  for (size_t i = 0; i < srv->nslots; i++) {
    connection *conn = srv->slots[i];
    if (!unauthenticated(conn))
      continue;
    double left = conn->accepted_at + limit - now;
    if (left <= 0)
      cancel(conn, CONN_CANCEL_AUTH_TIMEOUT);
    else if (next < 0 || left < next)
      next = left;
  }
  return next < 0 ? -1 : (int)(next * 1000.0) + 1;
}

/* Makes room for a new connection under --max-unauthenticated: closes
 * the oldest connection still waiting to authenticate when there are as
 * many as that. */
static void evict_if_full(server *srv) {
  size_t waiting = 0;
  connection *oldest = NULL;
  for (size_t i = 0; i < srv->nslots; i++) {
    connection *conn = srv->slots[i];
    if (!unauthenticated(conn))
      continue;
    waiting++;
    if (!oldest || conn->accepted_at < oldest->accepted_at)
      oldest = conn;
  }
  if (oldest && waiting >= srv->config.max_unauthenticated)
    cancel(oldest, CONN_CANCEL_EVICTED);
}

/* Joins every finished connection and frees its slot. */
static void reap_finished(server *srv) {
  for (size_t i = 0; i < srv->nslots; i++) {
    connection *conn = srv->slots[i];
    if (conn == NULL || !atomic_load(&conn->finished))
      continue;
    pthread_join(conn->thread, NULL);
    srv->once_exit = conn->exit_code;
    connection_free(conn);
    srv->slots[i] = NULL;
    srv->active--;
  }
}

static int is_resource_shortage(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* Starts |conn|'s thread with SIGINT and SIGTERM blocked, so that they are
 * always delivered to the main thread and never interrupt a session's
 * system calls. */
static int start_thread(connection *conn) {
  sigset_t stop_signals, saved;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, &saved);
  int rc = pthread_create(&conn->thread, NULL, connection_thread, conn);
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
  return rc;
}

static void accept_one(server *srv) {
  struct sockaddr_storage addr;
  socklen_t addrlen = sizeof addr;
  int fd = accept(srv->listen_fd, (struct sockaddr *)&addr, &addrlen);
  if (fd < 0) {
    if (is_resource_shortage(errno)) {
      /* The pending connection stays readable: back off instead of
       * spinning until a session ends and frees a descriptor. */
      fprintf(stderr, PROG ": accept: %s\n", strerror(errno));
      srv->accept_paused_until = cli_now() + ACCEPT_BACKOFF_MS / 1000.0;
    }
    return;
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  cli_set_nonblocking(fd, 0);
  cli_set_nodelay(fd);
  evict_if_full(srv);
  connection *conn = connection_new(srv, fd, (struct sockaddr *)&addr, addrlen);
  if (conn == NULL) {
    fprintf(stderr, PROG ": out of resources, dropping a connection\n");
    close(fd);
    return;
  }
  int rc = start_thread(conn);
  if (rc != 0) {
    fprintf(stderr, PROG ": cannot start a thread: %s\n", strerror(rc));
    connection_free(conn);
    return;
  }
  srv->slots[free_slot(srv)] = conn;
  srv->active++;
  srv->accepted++;
  if (srv->config.once) {
    /* Later clients should be refused at once, not left in the backlog. */
    close(srv->listen_fd);
    srv->listen_fd = -1;
  }
}

static int accepting(const server *srv) {
  return srv->listen_fd >= 0 && srv->active < srv->nslots;
}

/* Sleeps until something happens; returns 1 if the listener is readable. */
static int wait_for_event(server *srv) {
  struct pollfd fds[2] = {{srv->wake_pipe[0], POLLIN, 0},
                          {srv->listen_fd, POLLIN, 0}};
  nfds_t nfds = 1;
  int timeout = enforce_auth_deadlines(srv);
  int expiry = store_pool_expire(srv->pool, cli_now());
  if (expiry >= 0 && (timeout < 0 || expiry < timeout))
    timeout = expiry;
  double paused = srv->accept_paused_until - cli_now();
  if (accepting(srv) && paused <= 0)
    nfds = 2;
  else if (accepting(srv) && (timeout < 0 || paused * 1000.0 < timeout))
    timeout = (int)(paused * 1000.0) + 1;
  if (poll(fds, nfds, timeout) < 0)
    return 0; /* EINTR: the loop checks stop_requested */
  if (fds[0].revents != 0)
    drain(srv->wake_pipe[0]);
  return nfds == 2 && (fds[1].revents & POLLIN) != 0;
}

static void serve_until_stopped(server *srv) {
  while (!stop_requested) {
    int can_accept = wait_for_event(srv);
    if (reopen_requested) {
      reopen_requested = 0;
      serverlog_reopen();
    }
    reap_finished(srv);
    if (srv->config.once && srv->accepted > 0 && srv->active == 0)
      return;
    if (can_accept && !stop_requested)
      accept_one(srv);
  }
}

/* Ends every session in progress and waits for its thread. */
static void shut_down(server *srv) {
  if (srv->listen_fd >= 0)
    close(srv->listen_fd);
  srv->listen_fd = -1;
  pthread_mutex_lock(&srv->permit_lock);
  srv->stopping = 1; /* sessions waiting for a permit give up */
  pthread_cond_broadcast(&srv->permit_freed);
  pthread_mutex_unlock(&srv->permit_lock);
  for (size_t i = 0; i < srv->nslots; i++) {
    connection *conn = srv->slots[i];
    if (conn == NULL)
      continue;
    cancel(conn, CONN_CANCEL_SHUTDOWN);
    /* A session waiting for the database lock is inside a store call, not
     * polling its cancel pipe. */
    pthread_mutex_lock(&conn->lock);
    lipsync_store_interrupt(conn->store);
    pthread_mutex_unlock(&conn->lock);
  }
  for (size_t i = 0; i < srv->nslots; i++) {
    connection *conn = srv->slots[i];
    if (conn == NULL)
      continue;
    pthread_join(conn->thread, NULL);
    srv->once_exit = conn->exit_code;
    connection_free(conn);
    srv->slots[i] = NULL;
  }
  srv->active = 0;
}

/* ---- startup ------------------------------------------------------------ */

static int bind_first(const struct addrinfo *list, char *err, size_t errlen) {
  int last_errno = 0;
  for (const struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
        listen(fd, SOMAXCONN) == 0)
      return fd;
    last_errno = errno;
    close(fd);
  }
  snprintf(err, errlen, "%s", strerror(last_errno));
  return -1;
}

/* Opens the listening socket and prints the address in use. */
static int start_listening(server *srv) {
  const cli_hostport *where = &srv->config.listen;
  struct addrinfo hints, *list = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  int rc = getaddrinfo(where->host, where->port, &hints, &list);
  if (rc != 0) {
    fprintf(stderr, PROG ": cannot resolve %s: %s\n", where->host,
            gai_strerror(rc));
    return -1;
  }
  char err[256];
  srv->listen_fd = bind_first(list, err, sizeof err);
  freeaddrinfo(list);
  if (srv->listen_fd < 0) {
    fprintf(stderr, PROG ": cannot listen on %s:%s: %s\n", where->host,
            where->port, err);
    return -1;
  }
  fcntl(srv->listen_fd, F_SETFD, FD_CLOEXEC);
  /* A client may vanish between poll() and accept(): never block there. */
  cli_set_nonblocking(srv->listen_fd, 1);
  struct sockaddr_storage addr;
  socklen_t addrlen = sizeof addr;
  getsockname(srv->listen_fd, (struct sockaddr *)&addr, &addrlen);
  char text[CLI_ADDRESS_MAX];
  cli_format_address((struct sockaddr *)&addr, addrlen, text, sizeof text);
  serverlog_listening(text);
  return 0;
}

/* Fails early on a database that cannot be served, rather than once per
 * client. (Not kept for the first session: a server that has served
 * nobody holds no connection.) */
static int check_database(const char *db) {
  lipsync_store *store = NULL;
  if (cli_open_store(PROG, db, &store) < 0)
    return -1;
  lipsync_store_free(store);
  return 0;
}

/* --stdio: one session on standard input and output, in this thread; a
 * stop signal cancels it as it would a session of the listening server. */
static int serve_stdio(server *srv) {
  connection conn;
  memset(&conn, 0, sizeof conn);
  conn.config = &srv->config;
  conn.srv = srv;
  atomic_init(&conn.authenticated, 0);
  conn.fd = STDIN_FILENO;
  conn.wfd = STDOUT_FILENO;
  conn.wake_fd = -1;
  snprintf(conn.peer, sizeof conn.peer, "stdio");
  if (make_pipe(conn.cancel_pipe, 1) < 0) {
    fprintf(stderr, PROG ": out of resources\n");
    return CLI_EXIT_INTERNAL;
  }
  pthread_mutex_init(&conn.lock, NULL);
  install_signal_handlers(conn.cancel_pipe[1]);
  int rc = serve_connection(&conn);
  close(STDOUT_FILENO); /* the client sees the end of the stream */
  close(conn.cancel_pipe[0]);
  close(conn.cancel_pipe[1]);
  pthread_mutex_destroy(&conn.lock);
  return rc;
}

static int run(server *srv) {
  /* A SQLite database costs little to open, and a connection kept would
   * hold back its checkpoint: each session opens its own. */
  srv->pool = store_pool_new(lipsync_db_is_postgres(srv->config.db_path)
                                 ? srv->config.idle_connections
                                 : 0,
                             srv->config.idle_timeout_ms);
  if (!srv->pool) {
    fprintf(stderr, PROG ": out of memory\n");
    return CLI_EXIT_INTERNAL;
  }
  if (check_database(srv->config.db_path) < 0)
    return CLI_EXIT_DATABASE;
  if (srv->config.stdio)
    return serve_stdio(srv);
  srv->nslots = srv->config.max_clients + srv->config.max_unauthenticated;
  srv->slots = calloc(srv->nslots, sizeof *srv->slots);
  if (srv->slots == NULL || make_pipe(srv->wake_pipe, 1) < 0) {
    fprintf(stderr, PROG ": out of resources\n");
    return CLI_EXIT_INTERNAL;
  }
  install_signal_handlers(srv->wake_pipe[1]);
  if (start_listening(srv) < 0)
    return CLI_EXIT_INTERNAL;
  serve_until_stopped(srv);
  shut_down(srv);
  if (srv->config.once && srv->accepted > 0)
    return srv->once_exit;
  return CLI_EXIT_OK;
}

int main(int argc, char **argv) {
  server srv;
  memset(&srv, 0, sizeof srv);
  srv.listen_fd = -1;
  pthread_mutex_init(&srv.permit_lock, NULL);
  pthread_cond_init(&srv.permit_freed, NULL);
  srv.wake_pipe[0] = srv.wake_pipe[1] = -1;
  int rc = parse_options(&srv.config, argc, argv);
  const char *const *tables =
      srv.config.all_tables ? NULL
                            : (const char *const *)srv.config.tables.items;
  if (rc < 0 && srv.config.init) {
    rc = cli_init_tables(PROG, srv.config.db_path, tables,
                         srv.config.tables.count, srv.config.quiet,
                         srv.config.timeout_ms);
  } else if (rc < 0 && srv.config.drop_capture) {
    rc = cli_drop_capture(PROG, srv.config.db_path, tables,
                          srv.config.tables.count, srv.config.quiet,
                          srv.config.timeout_ms);
  } else if (rc < 0) {
    char err[256];
    if (cli_secret_load(&srv.config.secret, srv.config.secret_file, PROG, err,
                        sizeof err) < 0) {
      fprintf(stderr, PROG ": %s\n", err);
      rc = CLI_EXIT_USAGE;
    } else if (srv.config.tls_options.enabled &&
               conn_tls_new(&srv.config.tls, 1, &srv.config.tls_options,
                            srv.config.secret.data, srv.config.secret.len, err,
                            sizeof err) < 0) {
      fprintf(stderr, PROG ": TLS: %s\n", err);
      rc = CLI_EXIT_USAGE;
    } else if (serverlog_open(PROG, srv.config.log_file, srv.config.log_format,
                              srv.config.quiet, err, sizeof err) < 0) {
      fprintf(stderr, PROG ": %s\n", err);
      rc = CLI_EXIT_USAGE;
    } else {
      rc = run(&srv);
      serverlog_close();
    }
  }
  store_pool_free(srv.pool);
  conn_tls_free(srv.config.tls);
  cli_secret_wipe(&srv.config.secret);
  free(srv.slots);
  cli_options_free(&program, &srv.config);
  return rc;
}
