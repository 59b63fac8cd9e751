/*
 * conn.h: the byte stream a session runs over, for lipsync-server and
 * lipsync-client: a TCP socket or a pair of descriptors (standard input
 * and output, a command's socket), in plaintext or under TLS 1.3 (spec
 * 2.1), and the loop that runs a session over it.
 *
 * TLS runs through memory buffers: the loop moves raw bytes between the
 * descriptors and OpenSSL, and plaintext between OpenSSL and the session,
 * so it sees every byte the peer sends (to tell a peer that does not
 * speak TLS from one that tampers with it) and never blocks in OpenSSL.
 *
 * TLS authenticates with a pre-shared key derived from the shared secret
 * (lipsync_tls_psk, spec LS-TLS-5), or with the server's certificate; the
 * server accepts both. Either way the session's own handshake runs inside,
 * bound to the connection (feature tls-exporter, spec 5.5).
 */
#ifndef LIPSYNC_CONN_H
#define LIPSYNC_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "lipsync.h"

/* How a program uses TLS. */
typedef struct conn_tls_options {
  int enabled;
  /* server: a certificate chain and its key (PEM), or NULL: the
   * pre-shared key only */
  const char *cert_file;
  const char *key_file;
  /* client: verify the server's certificate (against |ca_file|, or the
   * system's trust store when NULL) instead of offering the pre-shared
   * key; |server_name| is the name or address it must be issued for */
  int verify_cert;
  const char *ca_file;
  const char *server_name;
} conn_tls_options;

/* The TLS settings shared by every connection of a program (an SSL_CTX
 * and the pre-shared key); NULL means plaintext. */
typedef struct conn_tls conn_tls;

/* Prepares TLS for the client or server side. Returns 0, or -1 with the
 * reason in |err| (a certificate or key that cannot be read, say). */
int conn_tls_new(conn_tls **out, int is_server, const conn_tls_options *opts,
                 const void *secret, size_t secret_len, char *err,
                 size_t errlen);
void conn_tls_free(conn_tls *tls);

/* What went wrong with a connection, beyond the session's own result. */
typedef enum conn_failure {
  CONN_OK = 0,
  CONN_FAIL_IO,       /* lost, timed out, tampered with, or cancelled */
  CONN_FAIL_AUTH,     /* TLS refused the pre-shared key: another secret */
  CONN_FAIL_TLS,      /* a certificate not accepted, or TLS failed */
  CONN_FAIL_MISMATCH, /* one side speaks TLS and the other plaintext */
  CONN_FAIL_CANCEL    /* |cancel_fd| became readable */
} conn_failure;

typedef struct cli_conn cli_conn;

/* A connection over |rfd| (read) and |wfd| (write), which may be the same
 * descriptor; both are made non-blocking and are not closed by conn_free.
 * |tls| NULL: plaintext. Returns NULL when out of memory. */
cli_conn *conn_new(conn_tls *tls, int is_server, int rfd, int wfd);
void conn_free(cli_conn *c);

/* What one byte written to a connection's cancel descriptor means: the
 * loops below read it and end the session with that reason. */
#define CONN_CANCEL_SHUTDOWN 'S'     /* SHUTTING_DOWN */
#define CONN_CANCEL_AUTH_TIMEOUT 'A' /* TIMEOUT: not authenticated in time */
#define CONN_CANCEL_EVICTED 'E'      /* TRY_AGAIN: too many unauthenticated */

/* TLS: runs the handshake, giving up after |timeout_ms| without progress
 * (<= 0: never) or when |cancel_fd| (or -1) becomes readable. Plaintext:
 * does nothing. Returns 0, or -1 with conn_failure() and conn_errmsg()
 * set. */
int conn_handshake(cli_conn *c, int timeout_ms, int cancel_fd);

/* Runs |session| to its end over the connection, as
 * lipsync_session_run_fd() does over a socket; binds its authentication
 * to the TLS connection first. A plaintext side that receives TLS, and a
 * TLS record that fails to authenticate, end the session with
 * LIPSYNC_ERR_IO and set conn_failure(). Returns the session's result. */
int conn_run(cli_conn *c, lipsync_session *session, int timeout_ms,
             int cancel_fd);

/* TLS: sends close_notify, best effort. */
void conn_close_notify(cli_conn *c);

conn_failure conn_failure_of(const cli_conn *c);
const char *conn_errmsg(const cli_conn *c);

#endif /* LIPSYNC_CONN_H */
