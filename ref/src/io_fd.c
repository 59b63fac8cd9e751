/*
 * io_fd.c: the thin loop that runs a session over a connected stream
 * (lipsync.h, lipsync_session_run_fd). The protocol takes turns, but the
 * loop still polls for input while it writes, so an Error from the peer,
 * a vanished peer or a cancel request is seen at once.
 */
#include "lipsync.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_MAX (256 * 1024)

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Before the session composes more of its turn: whatever the peer has
 * already sent is read first, so that a frame sent during this side's
 * turn is refused (spec LS-STATE-3), not taken for the next turn. */
static void read_ready(lipsync_session *s, int fd, uint8_t *buf, size_t size,
                       int *input_closed) {
  while (!*input_closed && lipsync_session_want_write(s) &&
         lipsync_session_want_read(s) && !lipsync_session_is_done(s)) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)))
      return;
    ssize_t r = read(fd, buf, size);
    if (r > 0) {
      lipsync_session_recv(s, buf, (size_t)r);
      continue;
    }
    if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
      *input_closed = 1;
      lipsync_session_recv_eof(s);
    }
    return;
  }
}

/* Writes what the session has to send, without blocking, at most
 * FLUSH_MAX bytes so that input is looked at now and then (a peer that
 * drains a long turn as fast as it comes may have sent an Error). Returns
 * the bytes written, or a negative errno. |pending|/|left| keep a partial
 * write. */
static ssize_t flush_some(lipsync_session *s, int fd, const uint8_t **pending,
                          size_t *left, uint8_t *buf, size_t size,
                          int *input_closed) {
  ssize_t total = 0;
  while (total < FLUSH_MAX) {
    if (*left == 0) {
      read_ready(s, fd, buf, size, input_closed);
      ssize_t n = lipsync_session_send(s, pending);
      if (n <= 0)
        return total;
      *left = (size_t)n;
    }
    ssize_t w = send(fd, *pending, *left, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno == ENOTSOCK)
      w = write(fd, *pending, *left);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return total;
      return -errno;
    }
    *pending += w;
    *left -= (size_t)w;
    total += w;
    if (*left)
      return total;
  }
  return total;
}

int lipsync_session_run_fd(lipsync_session *s, int fd, int timeout_ms,
                           int cancel_fd) {
  uint8_t buf[64 * 1024];
  const uint8_t *pending = NULL;
  size_t left = 0;
  /* The timeout runs while neither side makes progress: a long turn of
   * ours, with the peer silently reading, is not a stall. */
  int64_t last_progress = now_ms();
  int input_closed = 0;

  for (;;) {
    ssize_t wrote =
        flush_some(s, fd, &pending, &left, buf, sizeof buf, &input_closed);
    if (wrote > 0)
      last_progress = now_ms();
    if (wrote < 0) {
      /* The peer may have said why it closed (an Error frame): read what
       * arrived before blaming the write. */
      for (ssize_t r; !lipsync_session_is_done(s) && !input_closed &&
                      (r = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0;)
        lipsync_session_recv(s, buf, (size_t)r);
      char msg[160];
      snprintf(msg, sizeof msg, "write failed: %s", strerror((int)-wrote));
      if (!lipsync_session_is_done(s))
        lipsync_session_abort(s, LIPSYNC_ERR_IO, msg);
      break;
    }
    if (lipsync_session_is_done(s) && left == 0)
      break;

    struct pollfd p[2] = {{fd, 0, 0}, {cancel_fd, POLLIN, 0}};
    if (!input_closed && lipsync_session_want_read(s))
      p[0].events |= POLLIN;
    if (left || lipsync_session_want_write(s))
      p[0].events |= POLLOUT;
    int wait = -1;
    if (timeout_ms > 0) {
      int64_t remain = last_progress + timeout_ms - now_ms();
      wait = remain > 0 ? (int)remain : 0;
    }
    int n = poll(p, cancel_fd >= 0 ? 2 : 1, wait);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      lipsync_session_abort(s, LIPSYNC_ERR_IO, "poll failed");
      continue;
    }
    if (cancel_fd >= 0 && (p[1].revents & POLLIN)) {
      lipsync_session_abort(s, LIPSYNC_ERR_SHUTTING_DOWN,
                            "the server is shutting down");
      cancel_fd = -1;
      continue;
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = read(fd, buf, sizeof buf);
      if (r > 0) {
        lipsync_session_recv(s, buf, (size_t)r);
        last_progress = now_ms(); /* our own work is not the peer's stall */
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        input_closed = 1;
        lipsync_session_recv_eof(s);
        if (left && lipsync_session_is_done(s))
          left = 0; /* the peer is gone: nothing more can be delivered */
      }
      continue;
    }
    if (n == 0 && timeout_ms > 0 && now_ms() - last_progress >= timeout_ms &&
        !lipsync_session_is_done(s)) {
      char msg[96];
      snprintf(msg, sizeof msg, "the peer made no progress for %d ms",
               timeout_ms);
      lipsync_session_abort(s, LIPSYNC_ERR_TIMEOUT, msg);
    }
  }
  return lipsync_session_result(s);
}
