/*
 * conn_tls.c: the OpenSSL settings of spec 2.1: TLS 1.3 only, ALPN
 * lipsync/1, the external pre-shared key derived from the secret (in the
 * psk_dhe_ke mode only), and the server's certificate when it has one.
 */
#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "conn_int.h"

/* SHA-256 suites only: the pre-shared key's hash (spec LS-TLS-6). */
#define SUITES "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"
static const unsigned char ALPN_WIRE[] = "\x09" LIPSYNC_TLS_ALPN;
/* TLS_AES_128_GCM_SHA256, the suite the pre-shared key is declared with. */
static const unsigned char PSK_SUITE[] = {0x13, 0x01};

struct conn_tls {
  SSL_CTX *ctx;
  int is_server;
  int verify_cert;
  char *server_name;
  uint8_t psk[LIPSYNC_TLS_PSK_LEN];
};

/* The pre-shared key as the session OpenSSL resumes (it frees it). */
static SSL_SESSION *psk_session(SSL *ssl, const conn_tls *tls) {
  SSL_SESSION *sess = SSL_SESSION_new();
  const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, PSK_SUITE);
  if (!sess || !cipher ||
      !SSL_SESSION_set1_master_key(sess, tls->psk, sizeof tls->psk) ||
      !SSL_SESSION_set_cipher(sess, cipher) ||
      !SSL_SESSION_set_protocol_version(sess, TLS1_3_VERSION)) {
    SSL_SESSION_free(sess);
    return NULL;
  }
  return sess;
}

static int psk_use(SSL *ssl, const EVP_MD *md, const unsigned char **id,
                   size_t *idlen, SSL_SESSION **sess) {
  const conn_tls *tls = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  *sess = NULL;
  SSL_SESSION *s = psk_session(ssl, tls);
  if (!s)
    return 0;
  if (md && md != SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s))) {
    SSL_SESSION_free(s); /* after a HelloRetryRequest with another hash */
    return 1;
  }
  *sess = s;
  *id = (const unsigned char *)LIPSYNC_TLS_PSK_IDENTITY;
  *idlen = strlen(LIPSYNC_TLS_PSK_IDENTITY);
  return 1;
}

static int psk_find(SSL *ssl, const unsigned char *identity, size_t len,
                    SSL_SESSION **sess) {
  const conn_tls *tls = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  *sess = NULL;
  if (len != strlen(LIPSYNC_TLS_PSK_IDENTITY) ||
      memcmp(identity, LIPSYNC_TLS_PSK_IDENTITY, len) != 0)
    return 1; /* not ours: the certificate, if any, decides */
  *sess = psk_session(ssl, tls);
  return *sess ? 1 : 0;
}

/* Selects lipsync/1, or fails the handshake (spec LS-TLS-3). */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  (void)ssl;
  (void)arg;
  for (unsigned int i = 0; i < inlen; i += 1u + in[i]) {
    if (in[i] == ALPN_WIRE[0] && i + 1u + in[i] <= inlen &&
        memcmp(in + i + 1, ALPN_WIRE + 1, in[i]) == 0) {
      *out = in + i + 1;
      *outlen = in[i];
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* The last OpenSSL error as text, then clears the queue. */
void conn_tls_error(char *out, size_t outlen) {
  unsigned long e = ERR_peek_last_error();
  const char *reason = e ? ERR_reason_error_string(e) : NULL;
  snprintf(out, outlen, "%s", reason ? reason : "unknown TLS error");
  ERR_clear_error();
}

static int fail(conn_tls *tls, char *err, size_t errlen, const char *what,
                const char *file) {
  char why[256];
  conn_tls_error(why, sizeof why);
  snprintf(err, errlen, "%s%s%s: %s", what, file ? " " : "", file ? file : "",
           why);
  conn_tls_free(tls);
  return -1;
}

static int setup_server(conn_tls *tls, const conn_tls_options *o, char *err,
                        size_t errlen) {
  SSL_CTX_set_psk_find_session_callback(tls->ctx, psk_find);
  SSL_CTX_set_alpn_select_cb(tls->ctx, alpn_select, NULL);
  /* One session per connection, never resumed: no tickets to send. */
  SSL_CTX_set_num_tickets(tls->ctx, 0);
  if (!o->cert_file)
    return 0;
  if (SSL_CTX_use_certificate_chain_file(tls->ctx, o->cert_file) != 1)
    return fail(tls, err, errlen, "cannot use the certificate", o->cert_file);
  if (SSL_CTX_use_PrivateKey_file(tls->ctx, o->key_file, SSL_FILETYPE_PEM) != 1)
    return fail(tls, err, errlen, "cannot use the key", o->key_file);
  if (SSL_CTX_check_private_key(tls->ctx) != 1)
    return fail(tls, err, errlen, "the key does not match the certificate",
                NULL);
  return 0;
}

static int setup_client(conn_tls *tls, const conn_tls_options *o, char *err,
                        size_t errlen) {
  if (SSL_CTX_set_alpn_protos(tls->ctx, ALPN_WIRE, sizeof ALPN_WIRE - 1) != 0)
    return fail(tls, err, errlen, "cannot set ALPN", NULL);
  if (!o->verify_cert) {
    SSL_CTX_set_psk_use_session_callback(tls->ctx, psk_use);
    return 0;
  }
  tls->verify_cert = 1;
  SSL_CTX_set_verify(tls->ctx, SSL_VERIFY_PEER, NULL);
  if (o->ca_file
          ? SSL_CTX_load_verify_locations(tls->ctx, o->ca_file, NULL) != 1
          : SSL_CTX_set_default_verify_paths(tls->ctx) != 1)
    return fail(tls, err, errlen, "cannot load the trusted certificates",
                o->ca_file);
  tls->server_name = strdup(o->server_name ? o->server_name : "");
  if (!tls->server_name)
    return fail(tls, err, errlen, "out of memory", NULL);
  return 0;
}

int conn_tls_new(conn_tls **out, int is_server, const conn_tls_options *o,
                 const void *secret, size_t secret_len, char *err,
                 size_t errlen) {
  *out = NULL;
  conn_tls *tls = calloc(1, sizeof *tls);
  if (!tls) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  tls->is_server = is_server;
  if (lipsync_tls_psk(secret, secret_len, tls->psk) < 0) {
    snprintf(err, errlen, "cannot derive the TLS key from the secret");
    conn_tls_free(tls);
    return -1;
  }
  tls->ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
  if (!tls->ctx)
    return fail(tls, err, errlen, "cannot start TLS", NULL);
  SSL_CTX_set_app_data(tls->ctx, tls);
  /* TLS 1.3 only (LS-TLS-1); with the pre-shared key, psk_dhe_ke only
   * (LS-TLS-6): never the option that allows psk_ke. */
  SSL_CTX_set_min_proto_version(tls->ctx, TLS1_3_VERSION);
  SSL_CTX_clear_options(tls->ctx, SSL_OP_ALLOW_NO_DHE_KEX);
  SSL_CTX_set_options(tls->ctx, SSL_OP_NO_TICKET);
  if (SSL_CTX_set_ciphersuites(tls->ctx, SUITES) != 1)
    return fail(tls, err, errlen, "cannot set the cipher suites", NULL);
  int rc = is_server ? setup_server(tls, o, err, errlen)
                     : setup_client(tls, o, err, errlen);
  if (rc < 0)
    return -1; /* freed */
  *out = tls;
  return 0;
}

void conn_tls_free(conn_tls *tls) {
  if (!tls)
    return;
  SSL_CTX_free(tls->ctx);
  free(tls->server_name);
  OPENSSL_cleanse(tls->psk, sizeof tls->psk);
  free(tls);
}

/* A new SSL object for one connection, the client's checking the server's
 * name or address. Returns NULL on failure. */
SSL *conn_tls_ssl(conn_tls *tls) {
  SSL *ssl = SSL_new(tls->ctx);
  if (!ssl || tls->is_server || !tls->verify_cert)
    return ssl;
  const char *name = tls->server_name;
  unsigned char addr[16];
  int is_ip = inet_pton(AF_INET, name, addr) == 1 ||
              inet_pton(AF_INET6, name, addr) == 1;
  int ok =
      is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name)
            : SSL_set1_host(ssl, name) && SSL_set_tlsext_host_name(ssl, name);
  if (!ok) {
    SSL_free(ssl);
    return NULL;
  }
  return ssl;
}

int conn_tls_verifies_cert(const conn_tls *tls) {
  return tls->verify_cert;
}

int conn_tls_has_psk(const conn_tls *tls) {
  return tls->is_server || !tls->verify_cert;
}
