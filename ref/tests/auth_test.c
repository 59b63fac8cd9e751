/* auth_test.c: HMAC challenge-response (src/auth.c). */
#include "auth.h"
#include "test_util.h"

#include <CUnit/CUnit.h>
#include <string.h>

static const uint8_t SECRET[] = "correct horse battery staple";
#define SECRET_LEN (sizeof SECRET - 1)

static void transcript_of(uint8_t th[AUTH_TRANSCRIPT_LEN], uint8_t fill) {
  uint8_t ch[40], sh[40];
  memset(ch, fill, sizeof ch);
  memset(sh, (uint8_t)(fill + 1), sizeof sh);
  auth_transcript(ch, sizeof ch, sh, sizeof sh, NULL, th);
}

static void test_proof_verifies(void) {
  uint8_t th[AUTH_TRANSCRIPT_LEN], mac[LIPSYNC_MAC_LEN];
  transcript_of(th, 1);
  CU_ASSERT_EQUAL(auth_proof(SECRET, SECRET_LEN, AUTH_CLIENT, th, mac), 0);
  CU_ASSERT_EQUAL(
      auth_verify(SECRET, SECRET_LEN, AUTH_CLIENT, th, mac, sizeof mac), 0);
  CU_ASSERT_EQUAL(auth_proof(SECRET, SECRET_LEN, AUTH_SERVER, th, mac), 0);
  CU_ASSERT_EQUAL(
      auth_verify(SECRET, SECRET_LEN, AUTH_SERVER, th, mac, sizeof mac), 0);
}

static void test_wrong_secret(void) {
  uint8_t th[AUTH_TRANSCRIPT_LEN], mac[LIPSYNC_MAC_LEN];
  transcript_of(th, 1);
  auth_proof((const uint8_t *)"wrong", 5, AUTH_CLIENT, th, mac);
  CU_ASSERT_EQUAL(
      auth_verify(SECRET, SECRET_LEN, AUTH_CLIENT, th, mac, sizeof mac),
      LIPSYNC_ERR_AUTH_FAILED);
  /* A secret that is a prefix of the right one fails too. */
  auth_proof(SECRET, SECRET_LEN - 1, AUTH_CLIENT, th, mac);
  CU_ASSERT_EQUAL(
      auth_verify(SECRET, SECRET_LEN, AUTH_CLIENT, th, mac, sizeof mac),
      LIPSYNC_ERR_AUTH_FAILED);
}

static void test_replayed_proof(void) {
  /* A proof recorded in one session is worthless in another: the verifier's
   * fresh nonce changes the transcript. */
  uint8_t th1[AUTH_TRANSCRIPT_LEN], th2[AUTH_TRANSCRIPT_LEN];
  uint8_t mac[LIPSYNC_MAC_LEN];
  transcript_of(th1, 1);
  transcript_of(th2, 7);
  auth_proof(SECRET, SECRET_LEN, AUTH_CLIENT, th1, mac);
  CU_ASSERT_EQUAL(
      auth_verify(SECRET, SECRET_LEN, AUTH_CLIENT, th2, mac, sizeof mac),
      LIPSYNC_ERR_AUTH_FAILED);
}

static void test_reflected_proof(void) {
  /* The server's own proof sent back to it as the client's fails, and the
   * other way round. */
  uint8_t th[AUTH_TRANSCRIPT_LEN], mac[LIPSYNC_MAC_LEN];
  transcript_of(th, 3);
  auth_proof(SECRET, SECRET_LEN, AUTH_SERVER, th, mac);
  CU_ASSERT_EQUAL(
      auth_verify(SECRET, SECRET_LEN, AUTH_CLIENT, th, mac, sizeof mac),
      LIPSYNC_ERR_AUTH_FAILED);
  auth_proof(SECRET, SECRET_LEN, AUTH_CLIENT, th, mac);
  CU_ASSERT_EQUAL(
      auth_verify(SECRET, SECRET_LEN, AUTH_SERVER, th, mac, sizeof mac),
      LIPSYNC_ERR_AUTH_FAILED);
}

static void test_truncated_mac(void) {
  uint8_t th[AUTH_TRANSCRIPT_LEN], mac[LIPSYNC_MAC_LEN];
  transcript_of(th, 1);
  auth_proof(SECRET, SECRET_LEN, AUTH_CLIENT, th, mac);
  CU_ASSERT_EQUAL(auth_verify(SECRET, SECRET_LEN, AUTH_CLIENT, th, mac, 16),
                  LIPSYNC_ERR_AUTH_FAILED);
  CU_ASSERT_EQUAL(auth_verify(SECRET, SECRET_LEN, AUTH_CLIENT, th, mac, 0),
                  LIPSYNC_ERR_AUTH_FAILED);
}

static void test_nonces_are_fresh(void) {
  uint8_t a[LIPSYNC_NONCE_LEN], b[LIPSYNC_NONCE_LEN];
  CU_ASSERT_EQUAL(auth_nonce(a), 0);
  CU_ASSERT_EQUAL(auth_nonce(b), 0);
  CU_ASSERT_NOT_EQUAL(memcmp(a, b, sizeof a), 0);
}

int register_auth_tests(void) {
  static const tu_test tests[] = {
      {"proofs verify", test_proof_verifies},
      {"wrong secret fails", test_wrong_secret},
      {"replayed proof fails", test_replayed_proof},
      {"reflected proof fails", test_reflected_proof},
      {"truncated proof fails", test_truncated_mac},
      {"nonces are fresh", test_nonces_are_fresh},
      {NULL, NULL}};
  return tu_add_suite("auth", tests);
}
