/*
 * conn_int.h: what conn.c needs of conn_tls.c.
 */
#ifndef LIPSYNC_CONN_INT_H
#define LIPSYNC_CONN_INT_H

#include <openssl/ssl.h>

#include "conn.h"

/* A new SSL object for one connection of |tls|, or NULL. */
SSL *conn_tls_ssl(conn_tls *tls);
/* Whether the client verifies a certificate (else: the pre-shared key). */
int conn_tls_verifies_cert(const conn_tls *tls);
/* Whether this side offers or accepts the pre-shared key. */
int conn_tls_has_psk(const conn_tls *tls);
/* The reason of the last OpenSSL error into |out|; clears the queue. */
void conn_tls_error(char *out, size_t outlen);

#endif /* LIPSYNC_CONN_INT_H */
