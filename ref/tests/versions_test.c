/*
 * versions_test.c: the hybrid logical clock (hlc.c), the order of
 * versions, item digests, and the decision rule of spec 8.6 and 8.7
 * (decide.c), case by case.
 */
#include "decide.h"
#include "hlc.h"
#include "items.h"
#include "test_util.h"

#include <CUnit/CUnit.h>
#include <string.h>

#define MS(x) ((uint64_t)(x) << HLC_COUNTER_BITS)

static void test_tick_follows_wall_clock(void) {
  CU_ASSERT_EQUAL(hlc_tick(0, 1000), MS(1000));
  CU_ASSERT_EQUAL(hlc_tick(MS(1000), 1005), MS(1005));
}

static void test_tick_counts_within_a_millisecond(void) {
  uint64_t c = hlc_tick(0, 1000);
  uint64_t d = hlc_tick(c, 1000);
  uint64_t e = hlc_tick(d, 1000);
  CU_ASSERT_EQUAL(d, MS(1000) + 1);
  CU_ASSERT_EQUAL(e, MS(1000) + 2);
}

static void test_tick_survives_wall_clock_going_back(void) {
  uint64_t last = 0;
  /* The wall clock jumps back an hour, then stalls, then catches up. */
  const uint64_t walls[] = {5000000, 5000001, 1400000, 1400000,
                            1400001, 5000001, 5000002, 9000000};
  for (size_t i = 0; i < sizeof walls / sizeof walls[0]; i++) {
    uint64_t next = hlc_tick(last, walls[i]);
    CU_ASSERT(next > last);
    CU_ASSERT(next >= MS(walls[i]) || next == last + 1);
    last = next;
  }
  /* Back to real time once the wall clock passes the logical clock. */
  CU_ASSERT_EQUAL(last, MS(9000000));
}

static void test_counter_overflow_carries_into_milliseconds(void) {
  uint64_t c = MS(7) + 0xffff;
  uint64_t d = hlc_tick(c, 7);
  CU_ASSERT_EQUAL(d, MS(8));
  CU_ASSERT(d > c);
}

static void test_observe_passes_received_clocks(void) {
  uint64_t last = MS(100);
  last = hlc_observe(last, MS(200) + 3);
  CU_ASSERT_EQUAL(last, MS(200) + 3);
  CU_ASSERT_EQUAL(hlc_observe(last, MS(50)), last);
  /* A local change after receiving is later than what was received, even
   * though the local wall clock is behind. */
  CU_ASSERT(hlc_tick(last, 100) > MS(200) + 3);
}

static void test_horizon(void) {
  CU_ASSERT_EQUAL(hlc_horizon(10000, 4000), MS(6000));
  CU_ASSERT_EQUAL(hlc_horizon(10000, 10000), 0);
  CU_ASSERT_EQUAL(hlc_horizon(10000, 20000), 0);
  CU_ASSERT_EQUAL(hlc_horizon(10000, 0), MS(10000));
}

static lipsync_version ver(uint64_t clock, uint8_t site) {
  lipsync_version v;
  v.clock = clock;
  memset(v.site, site, sizeof v.site);
  return v;
}

static void test_version_order(void) {
  lipsync_version a = ver(5, 9), b = ver(6, 0), c = ver(6, 1);
  CU_ASSERT(lipsync_version_cmp(&a, &b) < 0); /* clock first */
  CU_ASSERT(lipsync_version_cmp(&b, &c) < 0); /* then site */
  CU_ASSERT(lipsync_version_cmp(&c, &a) > 0);
  CU_ASSERT_EQUAL(lipsync_version_cmp(&c, &c), 0);
  c.site[15] = 2; /* the site compares bytewise, to its last byte */
  lipsync_version d = ver(6, 1);
  CU_ASSERT(lipsync_version_cmp(&d, &c) < 0);
}

static void test_item_digest_covers_version_and_deleted(void) {
  lipsync_item a, b;
  uint8_t da[16], db[16];
  memset(&a, 0, sizeof a);
  memset(a.uuid, 0x11, 16);
  a.version = ver(MS(1000), 3);
  b = a;
  lipsync_item_digest(&a, da);
  b.base = ver(77, 7); /* the base plays no part */
  lipsync_item_digest(&b, db);
  CU_ASSERT_EQUAL(memcmp(da, db, 16), 0);
  b.deleted = 1;
  lipsync_item_digest(&b, db);
  CU_ASSERT_NOT_EQUAL(memcmp(da, db, 16), 0);
  b = a;
  b.version.clock++;
  lipsync_item_digest(&b, db);
  CU_ASSERT_NOT_EQUAL(memcmp(da, db, 16), 0);
  b = a;
  b.version.site[0] ^= 1;
  lipsync_item_digest(&b, db);
  CU_ASSERT_NOT_EQUAL(memcmp(da, db, 16), 0);
}

/* ---- the decision ------------------------------------------------------ */

static side_item side(uint64_t clock, uint8_t site, bool deleted) {
  side_item s;
  s.version = ver(clock, site);
  s.base = s.version;
  s.deleted = deleted;
  return s;
}

static decide_ctx ctx(lipsync_policy p) {
  decide_ctx c = {p, 0, false};
  return c;
}

static void test_decide_one_side(void) {
  decide_ctx c = ctx(LIPSYNC_POLICY_LWW);
  side_item a = side(MS(5), 1, false), t = side(MS(5), 1, true);
  CU_ASSERT_EQUAL(decide(&c, &a, NULL), DECIDE_CLIENT);
  CU_ASSERT_EQUAL(decide(&c, NULL, &a), DECIDE_SERVER);
  CU_ASSERT_EQUAL(decide(&c, &t, NULL), DECIDE_CLIENT); /* tombstones too */
  CU_ASSERT_EQUAL(decide(&c, NULL, NULL), DECIDE_NONE);
}

static void test_decide_lww(void) {
  decide_ctx c = ctx(LIPSYNC_POLICY_LWW);
  side_item early = side(MS(5), 9, false), late = side(MS(6), 1, false);
  side_item late_delete = side(MS(6), 1, true);
  CU_ASSERT_EQUAL(decide(&c, &early, &late), DECIDE_SERVER);
  CU_ASSERT_EQUAL(decide(&c, &late, &early), DECIDE_CLIENT);
  /* update vs delete, both orders */
  CU_ASSERT_EQUAL(decide(&c, &early, &late_delete), DECIDE_SERVER);
  side_item early_delete = side(MS(5), 9, true);
  CU_ASSERT_EQUAL(decide(&c, &early_delete, &late), DECIDE_SERVER);
  /* same clock: the site decides */
  side_item s1 = side(MS(6), 1, false), s2 = side(MS(6), 2, false);
  CU_ASSERT_EQUAL(decide(&c, &s2, &s1), DECIDE_CLIENT);
  /* equal versions: in sync; differing flags: a conflict */
  CU_ASSERT_EQUAL(decide(&c, &s1, &s1), DECIDE_NONE);
  CU_ASSERT_EQUAL(decide(&c, &late, &late_delete), DECIDE_CONFLICT);
}

static void test_decide_initial_versions(void) {
  decide_ctx c = ctx(LIPSYNC_POLICY_LWW);
  side_item a = side(0, 1, false), b = side(0, 2, false);
  side_item later = side(MS(1), 1, false);
  CU_ASSERT_EQUAL(decide(&c, &a, &a), DECIDE_NONE);
  CU_ASSERT_EQUAL(decide(&c, &a, &b), DECIDE_CONFLICT);
  CU_ASSERT_EQUAL(decide(&c, &a, &later), DECIDE_SERVER);
  /* the other policies resolve what lww cannot order */
  a.base = ver(0, 0);
  c.policy = LIPSYNC_POLICY_CLIENT_WINS;
  CU_ASSERT_EQUAL(decide(&c, &a, &b), DECIDE_CLIENT);
  c.policy = LIPSYNC_POLICY_SERVER_WINS;
  CU_ASSERT_EQUAL(decide(&c, &a, &b), DECIDE_SERVER);
}

static void test_decide_policies(void) {
  side_item agreed = side(MS(10), 3, false);
  /* client changed since agreeing (its base), server changed too */
  side_item client = side(MS(30), 1, false), server = side(MS(20), 2, false);
  client.base = agreed.version;
  decide_ctx c = ctx(LIPSYNC_POLICY_SERVER_WINS);
  CU_ASSERT_EQUAL(decide(&c, &client, &server), DECIDE_SERVER);
  c.policy = LIPSYNC_POLICY_CLIENT_WINS;
  CU_ASSERT_EQUAL(decide(&c, &client, &server), DECIDE_CLIENT);
  c.policy = LIPSYNC_POLICY_LWW;
  CU_ASSERT_EQUAL(decide(&c, &client, &server), DECIDE_CLIENT);
  /* only the client changed: it wins under every policy */
  for (int p = 0; p < 3; p++) {
    c.policy = (lipsync_policy)p;
    CU_ASSERT_EQUAL(decide(&c, &client, &agreed), DECIDE_CLIENT);
  }
  /* only the server changed: the client's row is its base */
  side_item clean = agreed;
  for (int p = 0; p < 3; p++) {
    c.policy = (lipsync_policy)p;
    CU_ASSERT_EQUAL(decide(&c, &clean, &server), DECIDE_SERVER);
  }
  /* client-wins never lets an unchanged client undo the server's change */
  c.policy = LIPSYNC_POLICY_CLIENT_WINS;
  CU_ASSERT_EQUAL(decide(&c, &clean, &server), DECIDE_SERVER);
}

static void test_decide_stale_client(void) {
  decide_ctx c = {LIPSYNC_POLICY_LWW, MS(1000), true};
  side_item synced = side(MS(100), 1, false); /* clean, base not zero */
  side_item fresh = side(MS(2000), 1, false); /* changed after horizon */
  fresh.base = synced.version;
  side_item never = side(MS(100), 1, false); /* never synced */
  never.base = ver(0, 0);
  side_item old_change = side(MS(500), 1, false); /* changed before it */
  old_change.base = synced.version;
  /* the server lacks them: it deleted them, and purged the tombstones */
  CU_ASSERT_EQUAL(decide(&c, &synced, NULL), DECIDE_SERVER);
  CU_ASSERT_EQUAL(decide(&c, &old_change, NULL), DECIDE_SERVER);
  CU_ASSERT_EQUAL(decide(&c, &fresh, NULL), DECIDE_CLIENT);
  CU_ASSERT_EQUAL(decide(&c, &never, NULL), DECIDE_CLIENT);
  c.stale = false;
  CU_ASSERT_EQUAL(decide(&c, &synced, NULL), DECIDE_CLIENT);
  /* the implicit tombstone is below the horizon */
  side_item t0;
  c.stale = true;
  decide_implicit_tombstone(&c, &t0);
  CU_ASSERT(t0.deleted);
  CU_ASSERT_EQUAL(t0.version.clock, MS(1000) - 1);
  /* client-wins keeps a row the client changed; server-wins does not */
  c.policy = LIPSYNC_POLICY_CLIENT_WINS;
  CU_ASSERT_EQUAL(decide(&c, &old_change, NULL), DECIDE_CLIENT);
  CU_ASSERT_EQUAL(decide(&c, &synced, NULL), DECIDE_SERVER);
  c.policy = LIPSYNC_POLICY_SERVER_WINS;
  CU_ASSERT_EQUAL(decide(&c, &fresh, NULL), DECIDE_SERVER);
}

int register_versions_tests(void) {
  static const tu_test tests[] = {
      {"tick follows the wall clock", test_tick_follows_wall_clock},
      {"tick counts within a millisecond",
       test_tick_counts_within_a_millisecond},
      {"tick survives the wall clock going back",
       test_tick_survives_wall_clock_going_back},
      {"counter overflow carries",
       test_counter_overflow_carries_into_milliseconds},
      {"observe passes received clocks", test_observe_passes_received_clocks},
      {"horizon", test_horizon},
      {"version order", test_version_order},
      {"item digest covers version and deleted",
       test_item_digest_covers_version_and_deleted},
      {"decide: one side", test_decide_one_side},
      {"decide: lww", test_decide_lww},
      {"decide: initial versions", test_decide_initial_versions},
      {"decide: policies", test_decide_policies},
      {"decide: stale client", test_decide_stale_client},
      {NULL, NULL}};
  return tu_add_suite("versions", tests);
}
