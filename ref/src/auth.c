/* auth.c: HMAC-SHA256 challenge-response (spec 5.3). */
#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

static const char CLIENT_LABEL[] = "LipSync v1 client auth";
static const char SERVER_LABEL[] = "LipSync v1 server auth";

int auth_nonce(uint8_t nonce[LIPSYNC_NONCE_LEN]) {
  return auth_nonce_bytes(nonce, LIPSYNC_NONCE_LEN);
}

int auth_nonce_bytes(uint8_t *out, size_t n) {
  return RAND_bytes(out, (int)n) == 1 ? 0 : LIPSYNC_ERR_INTERNAL;
}

void auth_transcript(const uint8_t *client_hello, size_t client_len,
                     const uint8_t *server_hello, size_t server_len,
                     const uint8_t *binding, uint8_t th[AUTH_TRANSCRIPT_LEN]) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  memset(th, 0, AUTH_TRANSCRIPT_LEN);
  if (!ctx)
    return;
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  EVP_DigestUpdate(ctx, client_hello, client_len);
  EVP_DigestUpdate(ctx, server_hello, server_len);
  if (binding)
    EVP_DigestUpdate(ctx, binding, LIPSYNC_TLS_BINDING_LEN);
  EVP_DigestFinal_ex(ctx, th, NULL);
  EVP_MD_CTX_free(ctx);
}

int auth_proof(const uint8_t *secret, size_t secret_len, auth_role role,
               const uint8_t th[AUTH_TRANSCRIPT_LEN],
               uint8_t mac[LIPSYNC_MAC_LEN]) {
  const char *label = role == AUTH_CLIENT ? CLIENT_LABEL : SERVER_LABEL;
  size_t label_len = strlen(label);
  uint8_t msg[64];
  unsigned int len = 0;
  memcpy(msg, label, label_len);
  memcpy(msg + label_len, th, AUTH_TRANSCRIPT_LEN);
  if (!HMAC(EVP_sha256(), secret, (int)secret_len, msg,
            label_len + AUTH_TRANSCRIPT_LEN, mac, &len) ||
      len != LIPSYNC_MAC_LEN)
    return LIPSYNC_ERR_INTERNAL;
  return 0;
}

int auth_verify(const uint8_t *secret, size_t secret_len, auth_role role,
                const uint8_t th[AUTH_TRANSCRIPT_LEN], const uint8_t *mac,
                size_t mac_len) {
  uint8_t expect[LIPSYNC_MAC_LEN];
  if (auth_proof(secret, secret_len, role, th, expect))
    return LIPSYNC_ERR_INTERNAL;
  int ok = mac_len == LIPSYNC_MAC_LEN &&
           CRYPTO_memcmp(expect, mac, LIPSYNC_MAC_LEN) == 0;
  OPENSSL_cleanse(expect, sizeof expect);
  return ok ? 0 : LIPSYNC_ERR_AUTH_FAILED;
}

/* HKDF-SHA256 (RFC 5869) of one output block: PRK = HMAC(salt, IKM), then
 * OKM = HMAC(PRK, info || 0x01). The salt is empty, which HKDF reads as 32
 * zero bytes. */
int lipsync_tls_psk(const void *secret, size_t secret_len,
                    uint8_t psk[LIPSYNC_TLS_PSK_LEN]) {
  static const char INFO[] = "LipSync v1 TLS 1.3 external PSK";
  uint8_t salt[32] = {0}, prk[32], info[sizeof INFO];
  unsigned int len = 0;
  if (!secret || secret_len == 0)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  memcpy(info, INFO, sizeof INFO - 1);
  info[sizeof INFO - 1] = 0x01;
  int ok = HMAC(EVP_sha256(), salt, sizeof salt, secret, secret_len, prk,
                &len) != NULL &&
           len == sizeof prk &&
           HMAC(EVP_sha256(), prk, sizeof prk, info, sizeof info, psk, &len) !=
               NULL &&
           len == LIPSYNC_TLS_PSK_LEN;
  OPENSSL_cleanse(prk, sizeof prk);
  return ok ? 0 : LIPSYNC_ERR_INTERNAL;
}
