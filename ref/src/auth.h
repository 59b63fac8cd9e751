/*
 * auth.h: mutual authentication (spec 5.3). Each peer proves it knows the
 * shared secret with an HMAC-SHA256 over a role label and the hash of the
 * two hello frames, which carry a fresh nonce from each side: a proof is
 * useless in another session (replay) and in the other role (reflection).
 */
#ifndef LIPSYNC_AUTH_H
#define LIPSYNC_AUTH_H

#include "lipsync.h"

#define AUTH_TRANSCRIPT_LEN 32

typedef enum auth_role { AUTH_CLIENT, AUTH_SERVER } auth_role;

/* Fills |nonce| from the system CSPRNG. Returns 0 or LIPSYNC_ERR_INTERNAL. */
int auth_nonce(uint8_t nonce[LIPSYNC_NONCE_LEN]);
/* Fills |n| bytes at |out| from the system CSPRNG (tokens, spec LS-INC-4). */
int auth_nonce_bytes(uint8_t *out, size_t n);

/* TH = SHA-256(client hello frame || server hello frame), frames as sent;
 * with the feature "tls-exporter" (|binding| not NULL), the TLS exporter
 * value follows them: TH = SHA-256(CH || SH || binding) (spec LS-CB-3). */
void auth_transcript(const uint8_t *client_hello, size_t client_len,
                     const uint8_t *server_hello, size_t server_len,
                     const uint8_t *binding, uint8_t th[AUTH_TRANSCRIPT_LEN]);

/* The proof of |role|: HMAC-SHA256(secret, label(role) || TH). */
int auth_proof(const uint8_t *secret, size_t secret_len, auth_role role,
               const uint8_t th[AUTH_TRANSCRIPT_LEN],
               uint8_t mac[LIPSYNC_MAC_LEN]);

/* Checks |mac| (of |mac_len| bytes) in constant time. Returns 0 or
 * LIPSYNC_ERR_AUTH_FAILED. */
int auth_verify(const uint8_t *secret, size_t secret_len, auth_role role,
                const uint8_t th[AUTH_TRANSCRIPT_LEN], const uint8_t *mac,
                size_t mac_len);

#endif
