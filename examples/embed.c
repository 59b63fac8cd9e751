/*
 * embed.c: a program that embeds liblipsync, as an application would.
 *
 * It syncs table TABLE of two SQLite databases, one the client, one the
 * server, over a socketpair, in one of two ways:
 *
 *   embed poll   CLIENT.db SERVER.db TABLE   both sessions in one thread,
 *                                            driven by its own poll() loop
 *                                            through the sans-I/O API
 *   embed run-fd CLIENT.db SERVER.db TABLE   each session in its own
 *                                            thread, in
 *                                            lipsync_session_run_fd()
 *
 * The shared secret comes from the environment variable LIPSYNC_SECRET,
 * never from the command line. Build it against an installed LipSync:
 *
 *   cc -o embed embed.c $(pkg-config --cflags --libs lipsync) -lpthread
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <lipsync.h>

#define TIMEOUT_MS 30000

/* One side: its database, its session, and its end of the socketpair. */
typedef struct side {
  const char *name; /* "client", "server" */
  lipsync_store *store;
  lipsync_session *session;
  int fd;
  const uint8_t *pending; /* bytes the session gave us, not yet written */
  size_t npending;
  int shut; /* our sending direction is closed */
} side;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the poll loop ---------------------------------------------------- */

/* Writes what |s| has to send, as far as the socket takes it. Returns 1 if
 * it wrote something, 0 if not, -1 on a transport error (the session is
 * then aborted). */
static int pump_out(side *s) {
  int progress = 0;
  for (;;) {
    if (s->npending == 0) {
      ssize_t n = lipsync_session_send(s->session, &s->pending);
      if (n <= 0)
        break; /* nothing now, or the session failed: it says why */
      s->npending = (size_t)n;
    }
    ssize_t w = send(s->fd, s->pending, s->npending, MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return progress; /* the rest when the socket is writable */
    if (w < 0) {
      lipsync_session_abort(s->session, LIPSYNC_ERR_IO, strerror(errno));
      return -1;
    }
    s->pending += w;
    s->npending -= (size_t)w;
    progress = 1;
  }
  /* Done and nothing left to send: the peer may read the end. */
  if (!s->shut && s->npending == 0 && lipsync_session_is_done(s->session)) {
    shutdown(s->fd, SHUT_WR);
    s->shut = 1;
  }
  return progress;
}

/* Reads what arrived for |s|. Returns 1 if it read something (or the
 * end), 0 if nothing was there. */
static int pump_in(side *s) {
  uint8_t buf[65536];
  ssize_t n = recv(s->fd, buf, sizeof buf, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return 0;
  if (n < 0) {
    lipsync_session_abort(s->session, LIPSYNC_ERR_IO, strerror(errno));
    return 1;
  }
  if (n == 0)
    lipsync_session_recv_eof(s->session);
  else
    lipsync_session_recv(s->session, buf, (size_t)n);
  return 1;
}

static int finished(const side *s) {
  return lipsync_session_is_done(s->session) && s->npending == 0;
}

/* Runs both sessions to their end with one poll() loop. */
static void run_poll(side sides[2]) {
  long long last_progress = now_ms();
  for (int i = 0; i < 2; i++)
    fcntl(sides[i].fd, F_SETFL, fcntl(sides[i].fd, F_GETFL) | O_NONBLOCK);
  while (!finished(&sides[0]) || !finished(&sides[1])) {
    struct pollfd pfd[2];
    for (int i = 0; i < 2; i++) {
      side *s = &sides[i];
      pfd[i].fd = s->fd;
      pfd[i].events = 0;
      pfd[i].revents = 0;
      if (finished(s))
        pfd[i].fd = -1; /* poll() skips it */
      if (lipsync_session_want_read(s->session))
        pfd[i].events |= POLLIN;
      if (s->npending || lipsync_session_want_write(s->session))
        pfd[i].events |= POLLOUT;
    }
    if (poll(pfd, 2, 1000) < 0 && errno != EINTR) {
      perror("poll");
      break;
    }
    int progress = 0;
    for (int i = 0; i < 2; i++) {
      side *s = &sides[i];
      if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
        progress |= pump_in(s);
      progress |= pump_out(s) != 0;
    }
    if (progress)
      last_progress = now_ms();
    else if (now_ms() - last_progress > TIMEOUT_MS)
      for (int i = 0; i < 2; i++)
        lipsync_session_abort(sides[i].session, LIPSYNC_ERR_TIMEOUT,
                              "no progress for 30 s");
  }
}

/* ---- lipsync_session_run_fd ---------------------------------------------- */

static void *serve(void *arg) {
  side *s = arg;
  lipsync_session_run_fd(s->session, s->fd, TIMEOUT_MS, -1);
  shutdown(s->fd, SHUT_WR);
  return NULL;
}

static void run_threads(side sides[2]) {
  pthread_t server;
  if (pthread_create(&server, NULL, serve, &sides[1]) != 0) {
    fprintf(stderr, "cannot start a thread\n");
    lipsync_session_abort(sides[1].session, LIPSYNC_ERR_INTERNAL, "no thread");
    lipsync_session_abort(sides[0].session, LIPSYNC_ERR_INTERNAL, "no thread");
    return;
  }
  lipsync_session_run_fd(sides[0].session, sides[0].fd, TIMEOUT_MS, -1);
  shutdown(sides[0].fd, SHUT_WR);
  pthread_join(server, NULL);
}

/* ---- the program ------------------------------------------------------ */

static int open_side(side *s, const char *name, const char *path) {
  char err[256];
  memset(s, 0, sizeof *s);
  s->name = name;
  s->fd = -1;
  if (lipsync_store_open(&s->store, path, err, sizeof err) != 0) {
    fprintf(stderr, "%s: cannot open %s: %s\n", name, path, err);
    return -1;
  }
  return 0;
}

static int report(side *s) {
  int rc = lipsync_session_result(s->session);
  if (rc != 0) {
    fprintf(stderr, "%s: sync failed (%s): %s\n", s->name,
            lipsync_error_name(rc), lipsync_session_errmsg(s->session));
    return 1;
  }
  for (size_t i = 0; i < lipsync_session_table_count(s->session); i++) {
    lipsync_table_stats st;
    if (lipsync_session_table_stats(s->session, i, &st) == 0)
      printf("%s: %s: sent %" PRIu64 " rows, received %" PRIu64 " rows\n",
             s->name, st.name, st.rows_sent, st.rows_received);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 5 || (strcmp(argv[1], "poll") && strcmp(argv[1], "run-fd"))) {
    fprintf(stderr, "usage: %s poll|run-fd CLIENT.db SERVER.db TABLE\n",
            argv[0]);
    return 2;
  }
  const char *secret = getenv("LIPSYNC_SECRET");
  if (!secret || !*secret) {
    fprintf(stderr, "%s: set LIPSYNC_SECRET to the shared secret\n", argv[0]);
    return 2;
  }
  const char *tables[] = {argv[4]};
  side sides[2];
  int fds[2] = {-1, -1}, status = 1;
  int ok = open_side(&sides[0], "client", argv[2]) == 0;
  ok = open_side(&sides[1], "server", argv[3]) == 0 && ok;
  if (ok &&
      (lipsync_session_client_new(&sides[0].session, sides[0].store, secret,
                                  strlen(secret), tables, 1) != 0 ||
       lipsync_session_server_new(&sides[1].session, sides[1].store, secret,
                                  strlen(secret), tables, 1, 0) != 0)) {
    fprintf(stderr, "cannot create the sessions\n");
    ok = 0;
  }
  /* The client prepares its table before it connects: a real server would
   * otherwise wait for it. */
  if (ok && lipsync_session_prepare(sides[0].session) != 0) {
    fprintf(stderr, "client: %s\n", lipsync_session_errmsg(sides[0].session));
    ok = 0;
  }
  if (ok && socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
    perror("socketpair");
    ok = 0;
  }
  sides[0].fd = fds[0];
  sides[1].fd = fds[1];
  if (ok) {
    if (strcmp(argv[1], "poll") == 0)
      run_poll(sides);
    else
      run_threads(sides);
    status = report(&sides[0]) | report(&sides[1]);
  }
  for (int i = 0; i < 2; i++) {
    lipsync_session_free(sides[i].session);
    lipsync_store_free(sides[i].store);
    if (fds[i] >= 0)
      close(fds[i]);
  }
  return status;
}
