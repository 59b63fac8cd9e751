/*
 * conn.c: a session over a pair of descriptors, in plaintext or TLS
 * (conn.h). The loop is lipsync_session_run_fd()'s: it polls for input
 * while it writes, so an Error from the peer, a vanished peer or a cancel
 * request is seen at once; with TLS, OpenSSL sits between the descriptors
 * and the session, through memory buffers.
 */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn_int.h"

#define IO_CHUNK (64 * 1024)
#define FLUSH_MAX (256 * 1024)

struct cli_conn {
  conn_tls *tls;
  SSL *ssl;     /* NULL: plaintext */
  BIO *net_in;  /* bytes from the peer, for OpenSSL to read */
  BIO *net_out; /* bytes OpenSSL wrote, for the peer */
  int is_server;
  int rfd, wfd;
  uint8_t seen[2]; /* the first bytes from the peer */
  size_t nseen;
  const uint8_t *pending; /* raw bytes to write, |left| of them */
  size_t left;
  uint8_t out[IO_CHUNK];
  uint8_t in[IO_CHUNK]; /* what was read, for the session or OpenSSL */
  int input_closed;
  conn_failure failure;
  char msg[512];
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_failure(cli_conn *c, conn_failure kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_failure(cli_conn *c, conn_failure kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->msg, sizeof c->msg, fmt, ap);
  va_end(ap);
  c->failure = kind;
}

static void set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0)
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

cli_conn *conn_new(conn_tls *tls, int is_server, int rfd, int wfd) {
  cli_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->tls = tls;
  c->is_server = is_server;
  c->rfd = rfd;
  c->wfd = wfd;
  set_nonblocking(rfd);
  set_nonblocking(wfd);
  if (!tls)
    return c;
  c->ssl = conn_tls_ssl(tls);
  c->net_in = BIO_new(BIO_s_mem());
  c->net_out = BIO_new(BIO_s_mem());
  if (!c->ssl || !c->net_in || !c->net_out) {
    BIO_free(c->net_in);
    BIO_free(c->net_out);
    c->net_in = c->net_out = NULL;
    conn_free(c);
    return NULL;
  }
  /* An empty input buffer means "wait for more", not the end. */
  BIO_set_mem_eof_return(c->net_in, -1);
  SSL_set_bio(c->ssl, c->net_in, c->net_out);
  if (is_server)
    SSL_set_accept_state(c->ssl);
  else
    SSL_set_connect_state(c->ssl);
  return c;
}

void conn_free(cli_conn *c) {
  if (!c)
    return;
  SSL_free(c->ssl); /* frees both buffers */
  free(c);
}

conn_failure conn_failure_of(const cli_conn *c) {
  return c->failure;
}
const char *conn_errmsg(const cli_conn *c) {
  return c->msg;
}

/* ---- what the peer sends -------------------------------------------- */

static void note_input(cli_conn *c, const uint8_t *data, size_t n) {
  while (c->nseen < sizeof c->seen && n > 0) {
    c->seen[c->nseen++] = *data++;
    n--;
  }
}

/* Whether the first bytes received open a TLS record (spec LS-TLS-2). */
static int seen_tls(const cli_conn *c) {
  return c->nseen > 0 && c->seen[0] >= 20 && c->seen[0] <= 23 &&
         (c->nseen < 2 || c->seen[1] == 3);
}

static void mismatch(cli_conn *c) {
  if (c->ssl)
    set_failure(c, CONN_FAIL_MISMATCH,
                "the %s does not speak TLS: it may run with --plaintext "
                "(use --plaintext on both sides, or on neither)",
                c->is_server ? "client" : "server");
  else
    set_failure(c, CONN_FAIL_MISMATCH,
                "the %s speaks TLS, but this side runs with --plaintext "
                "(use --plaintext on both sides, or on neither)",
                c->is_server ? "client" : "server");
}

/* ---- what this side sends ------------------------------------------- */

static void deliver(cli_conn *c, lipsync_session *s, const uint8_t *data,
                    size_t len);

/* Reads once from the peer into the session: 1 if bytes came, 0 if not
 * (the input ended, or nothing was there). */
static int read_input(cli_conn *c, lipsync_session *s) {
  ssize_t r = read(c->rfd, c->in, sizeof c->in);
  if (r > 0) {
    deliver(c, s, c->in, (size_t)r);
    return 1;
  }
  if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
    c->input_closed = 1;
    lipsync_session_recv_eof(s);
    if (c->left && lipsync_session_is_done(s))
      c->left = 0; /* the peer is gone: nothing more can be delivered */
  }
  return 0;
}

/* Before the session composes more of its turn: whatever the peer has
 * already sent is read first, so that a frame sent during this side's
 * turn is refused (spec LS-STATE-3), not taken for the next turn. */
static void read_ready(cli_conn *c, lipsync_session *s) {
  while (!c->input_closed && lipsync_session_want_write(s) &&
         lipsync_session_want_read(s) && !lipsync_session_is_done(s)) {
    struct pollfd p = {c->rfd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)) ||
        !read_input(c, s))
      return;
  }
}

/* Points |pending| at the next raw bytes to write, if any: the session's
 * own (plaintext), or the records OpenSSL made of them. |s| NULL: only
 * what OpenSSL has (the handshake). Returns 0 or -1 (TLS failed). */
static int take_output(cli_conn *c, lipsync_session *s) {
  if (c->left)
    return 0;
  if (!c->ssl) {
    if (s)
      read_ready(c, s);
    ssize_t n = s ? lipsync_session_send(s, &c->pending) : 0;
    c->left = n > 0 ? (size_t)n : 0;
    return 0;
  }
  for (;;) {
    if (BIO_ctrl_pending(c->net_out) > 0) {
      int n = BIO_read(c->net_out, c->out, sizeof c->out);
      c->pending = c->out;
      c->left = n > 0 ? (size_t)n : 0;
      return 0;
    }
    const uint8_t *data;
    if (s)
      read_ready(c, s);
    ssize_t n = s ? lipsync_session_send(s, &data) : 0;
    if (n <= 0)
      return 0;
    if (SSL_write(c->ssl, data, (int)n) != (int)n) {
      char why[256];
      conn_tls_error(why, sizeof why);
      set_failure(c, CONN_FAIL_IO, "TLS failed: %s", why);
      return -1;
    }
  }
}

/* Writes what there is to write without blocking, at most FLUSH_MAX
 * bytes, so that the loop looks at the peer's input now and then even
 * while the peer drains a long turn as fast as it comes (an Error frame
 * from it must not wait for the end of the turn). Returns the bytes
 * written, or a negative errno (-EPROTO: TLS failed). */
static ssize_t flush_some(cli_conn *c, lipsync_session *s) {
  ssize_t total = 0;
  while (total < FLUSH_MAX) {
    if (take_output(c, s) < 0)
      return -EPROTO;
    if (!c->left)
      return total;
    ssize_t w = write(c->wfd, c->pending, c->left);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return total;
      return -errno;
    }
    c->pending += w;
    c->left -= (size_t)w;
    total += w;
  }
  return total;
}

/* ---- polling ----------------------------------------------------------- */

/* Polls for |want_in| on the read side and |want_out| on the write side
 * (one descriptor or two) and |cancel_fd|, at most |wait| ms (-1: no
 * limit). Returns a bit set: 1 readable, 2 writable, 4 cancelled; 0 on
 * timeout; -1 on error. */
static int wait_for(cli_conn *c, int want_in, int want_out, int cancel_fd,
                    int wait) {
  struct pollfd p[3];
  int n = 0, in = -1, out = -1, cancel = -1;
  p[n] = (struct pollfd){c->rfd, (short)(want_in ? POLLIN : 0), 0};
  in = n++;
  if (c->wfd == c->rfd) {
    p[in].events |= (short)(want_out ? POLLOUT : 0);
    out = in;
  } else {
    p[n] = (struct pollfd){c->wfd, (short)(want_out ? POLLOUT : 0), 0};
    out = n++;
  }
  if (cancel_fd >= 0) {
    p[n] = (struct pollfd){cancel_fd, POLLIN, 0};
    cancel = n++;
  }
  int rc = poll(p, (nfds_t)n, wait);
  if (rc < 0)
    return errno == EINTR ? 0 : -1;
  int bits = 0;
  if (want_in && (p[in].revents & (POLLIN | POLLHUP | POLLERR)))
    bits |= 1;
  if (want_out && (p[out].revents & (POLLOUT | POLLERR | POLLHUP)))
    bits |= 2;
  if (cancel >= 0 && (p[cancel].revents & POLLIN))
    bits |= 4;
  return bits;
}

static int time_left(int64_t last_progress, int timeout_ms) {
  if (timeout_ms <= 0)
    return -1;
  int64_t remain = last_progress + timeout_ms - now_ms();
  return remain > 0 ? (int)remain : 0;
}

/* ---- cancelling ---------------------------------------------------------- */

/* Reads why |cancel_fd| became readable (conn.h, CONN_CANCEL_*) into a
 * session error code and message. */
static void cancel_reason(int cancel_fd, int *code, const char **msg) {
  char why = CONN_CANCEL_SHUTDOWN;
  if (read(cancel_fd, &why, 1) != 1)
    why = CONN_CANCEL_SHUTDOWN;
  switch (why) {
  case CONN_CANCEL_AUTH_TIMEOUT:
    *code = LIPSYNC_ERR_TIMEOUT;
    *msg = "the client did not authenticate in time";
    break;
  case CONN_CANCEL_EVICTED:
    *code = LIPSYNC_ERR_TRY_AGAIN;
    *msg = "the server has too many connections waiting to authenticate; "
           "this one, the oldest, was closed";
    break;
  default:
    *code = LIPSYNC_ERR_SHUTTING_DOWN;
    *msg = "the server is shutting down";
  }
}

/* ---- the TLS handshake ------------------------------------------------- */

/* Words a failed handshake (spec LS-TLS-2, LS-TLS-7). */
static void handshake_failed(cli_conn *c, int peer_closed) {
  unsigned long e = ERR_peek_last_error();
  int reason = ERR_GET_REASON(e);
  char why[256];
  conn_tls_error(why, sizeof why);
  long verify = SSL_get_verify_result(c->ssl);
  if (c->nseen > 0 && !seen_tls(c))
    mismatch(c);
  else if (!c->is_server && conn_tls_verifies_cert(c->tls) &&
           verify != X509_V_OK)
    set_failure(c, CONN_FAIL_TLS,
                "the server's certificate was not "
                "accepted: %s",
                X509_verify_cert_error_string(verify));
  else if (conn_tls_has_psk(c->tls) &&
           ((c->is_server && reason == SSL_R_BINDER_DOES_NOT_VERIFY) ||
            (!c->is_server && (reason == SSL_R_TLSV1_ALERT_DECRYPT_ERROR ||
                               reason == SSL_R_SSLV3_ALERT_ILLEGAL_PARAMETER))))
    set_failure(c, CONN_FAIL_AUTH,
                "authentication failed: the %s does not hold the same "
                "secret (it refused the TLS key derived from it)",
                c->is_server ? "client" : "server");
  else if (peer_closed)
    set_failure(c, CONN_FAIL_IO,
                "the %s closed the connection during the TLS handshake%s",
                c->is_server ? "client" : "server",
                c->nseen || c->is_server ? ""
                                         : " (is it a lipsync-server, with "
                                           "TLS?)");
  else if (!c->is_server && conn_tls_verifies_cert(c->tls))
    set_failure(c, CONN_FAIL_TLS,
                "TLS handshake failed: %s (a server without a certificate "
                "accepts only the key derived from the secret: connect "
                "without --tls-verify and --tls-ca)",
                why);
  else
    set_failure(c, CONN_FAIL_TLS, "TLS handshake failed: %s", why);
}

/* The client checks that the server chose lipsync/1 (spec LS-TLS-3). */
static int check_alpn(cli_conn *c) {
  const unsigned char *alpn = NULL;
  unsigned int len = 0;
  if (c->is_server)
    return 0;
  SSL_get0_alpn_selected(c->ssl, &alpn, &len);
  if (len == strlen(LIPSYNC_TLS_ALPN) &&
      memcmp(alpn, LIPSYNC_TLS_ALPN, len) == 0)
    return 0;
  set_failure(c, CONN_FAIL_TLS,
              "the server did not select the TLS protocol " LIPSYNC_TLS_ALPN);
  return -1;
}

/* Writes everything OpenSSL has for the peer, waiting as needed. */
static int flush_all(cli_conn *c, int timeout_ms, int cancel_fd) {
  int64_t last = now_ms();
  for (;;) {
    ssize_t w = flush_some(c, NULL);
    if (w < 0) {
      set_failure(c, CONN_FAIL_IO, "write failed: %s", strerror((int)-w));
      return -1;
    }
    if (w > 0)
      last = now_ms();
    if (!c->left)
      return 0;
    int bits = wait_for(c, 0, 1, cancel_fd, time_left(last, timeout_ms));
    if (bits < 0 || (bits & 4) ||
        (bits == 0 && time_left(last, timeout_ms) == 0)) {
      set_failure(c, bits & 4 ? CONN_FAIL_CANCEL : CONN_FAIL_IO,
                  "cannot send the TLS handshake");
      return -1;
    }
  }
}

/* A peer that sent plaintext gets a TLS alert, protocol_version, in a
 * plaintext record (as before any handshake): a plaintext peer that checks
 * what it receives (LS-TLS-2) recognizes it and says why. */
static void refuse_plaintext(cli_conn *c, int timeout_ms) {
  static const uint8_t ALERT[] = {21, 3, 3, 0, 2, 2, 70};
  mismatch(c);
  BIO_reset(c->net_out);
  c->left = 0;
  BIO_write(c->net_out, ALERT, sizeof ALERT);
  conn_failure kept = c->failure;
  char msg[sizeof c->msg];
  memcpy(msg, c->msg, sizeof msg);
  flush_all(c, timeout_ms < 1000 && timeout_ms > 0 ? timeout_ms : 1000, -1);
  c->failure = kept;
  memcpy(c->msg, msg, sizeof msg);
}

int conn_handshake(cli_conn *c, int timeout_ms, int cancel_fd) {
  if (!c->ssl)
    return 0;
  uint8_t buf[IO_CHUNK];
  int64_t last = now_ms();
  for (;;) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
    /* Send what it produced, a final alert included. */
    int flushed = flush_all(c, timeout_ms, cancel_fd);
    if (r == 1)
      return flushed < 0 ? -1 : check_alpn(c);
    if (e != SSL_ERROR_WANT_READ) {
      handshake_failed(c, 0);
      return -1;
    }
    if (flushed < 0)
      return -1;
    int bits = wait_for(c, 1, 0, cancel_fd, time_left(last, timeout_ms));
    if (bits < 0) {
      set_failure(c, CONN_FAIL_IO, "poll failed");
      return -1;
    }
    if (bits & 4) {
      int code;
      const char *why;
      cancel_reason(cancel_fd, &code, &why);
      set_failure(c, CONN_FAIL_CANCEL, "%s", why);
      return -1;
    }
    if (!(bits & 1)) {
      if (time_left(last, timeout_ms) == 0) {
        set_failure(c, CONN_FAIL_IO,
                    "the TLS handshake made no progress for %d ms", timeout_ms);
        return -1;
      }
      continue;
    }
    ssize_t n = read(c->rfd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (n <= 0) {
      handshake_failed(c, 1);
      return -1;
    }
    last = now_ms();
    note_input(c, buf, (size_t)n);
    if (!seen_tls(c)) {
      refuse_plaintext(c, timeout_ms);
      return -1;
    }
    BIO_write(c->net_in, buf, (int)n);
  }
}

/* ---- the session ------------------------------------------------------- */

/* Hands |n| bytes from the peer to the session, through TLS or not (with
 * TLS, |n| 0 hands over what OpenSSL holds already). */
static void deliver(cli_conn *c, lipsync_session *s, const uint8_t *data,
                    size_t n) {
  if (!c->ssl) {
    note_input(c, data, n);
    if (seen_tls(c) && c->nseen == sizeof c->seen && !c->failure) {
      /* PROTOCOL_ERROR sends an Error frame: not a TLS record either, so
       * a TLS client says at once what is wrong (LS-TLS-2). */
      mismatch(c);
      lipsync_session_abort(s, LIPSYNC_ERR_PROTOCOL, c->msg);
      return;
    }
    lipsync_session_recv(s, data, n);
    return;
  }
  if (n)
    BIO_write(c->net_in, data, (int)n);
  uint8_t plain[IO_CHUNK];
  for (;;) {
    ERR_clear_error();
    int r = SSL_read(c->ssl, plain, sizeof plain);
    if (r > 0) {
      lipsync_session_recv(s, plain, (size_t)r);
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
      return;
    if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify */
      c->input_closed = 1;
      lipsync_session_recv_eof(s);
      return;
    }
    char why[256];
    conn_tls_error(why, sizeof why);
    c->input_closed = 1;
    if (lipsync_session_is_done(s))
      return;
    set_failure(c, CONN_FAIL_IO,
                "the connection was tampered with or failed: TLS: %s", why);
    lipsync_session_abort(s, LIPSYNC_ERR_IO, c->msg);
    return;
  }
}

/* Binds the session's authentication to the TLS connection (spec 5.5). */
static int bind_session(cli_conn *c, lipsync_session *s) {
  uint8_t cb[LIPSYNC_TLS_BINDING_LEN];
  const char *label = LIPSYNC_TLS_EXPORTER_LABEL;
  int ok = SSL_export_keying_material(c->ssl, cb, sizeof cb, label,
                                      strlen(label), NULL, 0, 0) == 1 &&
           lipsync_session_set_channel_binding(s, cb, sizeof cb) == 0;
  OPENSSL_cleanse(cb, sizeof cb);
  if (!ok)
    lipsync_session_abort(s, LIPSYNC_ERR_INTERNAL,
                          "cannot bind the session to the TLS connection");
  return ok ? 0 : -1;
}

int conn_run(cli_conn *c, lipsync_session *s, int timeout_ms, int cancel_fd) {
  uint8_t buf[IO_CHUNK];
  if (c->ssl && bind_session(c, s) < 0)
    return lipsync_session_result(s);
  /* What came with the end of the handshake is already in OpenSSL. */
  if (c->ssl)
    deliver(c, s, NULL, 0);
  /* The timeout runs while neither side makes progress: a long turn of
   * ours, with the peer silently reading, is not a stall. */
  int64_t last_progress = now_ms();
  for (;;) {
    ssize_t wrote = flush_some(c, s);
    if (wrote > 0)
      last_progress = now_ms();
    if (wrote < 0) {
      /* The peer may have said why it closed (an Error frame): read what
       * arrived before blaming the write. */
      for (ssize_t r; !lipsync_session_is_done(s) && !c->input_closed &&
                      (r = read(c->rfd, buf, sizeof buf)) > 0;)
        deliver(c, s, buf, (size_t)r);
      char msg[sizeof c->msg];
      if (wrote == -EPROTO)
        snprintf(msg, sizeof msg, "%s", c->msg);
      else
        snprintf(msg, sizeof msg, "write failed: %s", strerror((int)-wrote));
      if (!lipsync_session_is_done(s))
        lipsync_session_abort(s, LIPSYNC_ERR_IO, msg);
      c->left = 0;
      break;
    }
    if (lipsync_session_is_done(s) && c->left == 0)
      break;
    int want_in = !c->input_closed && lipsync_session_want_read(s);
    /* Records OpenSSL still holds count as output, as the session's do. */
    int want_out = c->left || lipsync_session_want_write(s) ||
                   (c->ssl && BIO_ctrl_pending(c->net_out) > 0);
    int bits = wait_for(c, want_in, want_out, cancel_fd,
                        time_left(last_progress, timeout_ms));
    if (bits < 0) {
      lipsync_session_abort(s, LIPSYNC_ERR_IO, "poll failed");
      continue;
    }
    if (bits & 4) {
      int code;
      const char *why;
      cancel_reason(cancel_fd, &code, &why);
      lipsync_session_abort(s, code, why);
      cancel_fd = -1;
      continue;
    }
    if (bits & 1) {
      if (read_input(c, s))
        last_progress = now_ms(); /* our own work is not the peer's stall */
      continue;
    }
    if (bits == 0 && timeout_ms > 0 && now_ms() - last_progress >= timeout_ms &&
        !lipsync_session_is_done(s)) {
      char msg[96];
      snprintf(msg, sizeof msg, "the peer made no progress for %d ms",
               timeout_ms);
      lipsync_session_abort(s, LIPSYNC_ERR_TIMEOUT, msg);
    }
  }
  return lipsync_session_result(s);
}

void conn_close_notify(cli_conn *c) {
  if (!c->ssl || c->failure)
    return;
  ERR_clear_error();
  if (SSL_shutdown(c->ssl) < 0) {
    ERR_clear_error();
    return;
  }
  flush_all(c, 200, -1);
  ERR_clear_error();
}
