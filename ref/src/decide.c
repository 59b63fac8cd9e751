/* decide.c: the decision rule of spec 8.6 and 8.7 (decide.h). */
#include "decide.h"
#include "fault.h"

#include <string.h>

bool version_is_zero(const lipsync_version *v) {
  static const uint8_t zero[LIPSYNC_SITE_LEN];
  return v->clock == 0 && memcmp(v->site, zero, LIPSYNC_SITE_LEN) == 0;
}

void decide_implicit_tombstone(const decide_ctx *ctx, side_item *out) {
  memset(out, 0, sizeof *out);
  out->version.clock = ctx->horizon ? ctx->horizon - 1 : 0;
  out->base = out->version;
  out->deleted = true;
}

static bool same(const lipsync_version *a, const lipsync_version *b) {
  return lipsync_version_cmp(a, b) == 0;
}

decision decide(const decide_ctx *ctx, const side_item *c, const side_item *s) {
  side_item t0;
  if (c && !s && ctx->stale && !version_is_zero(&c->base) &&
      !fault_on("no-implicit-tombstone")) { /* fault: conformance self-test */
    decide_implicit_tombstone(ctx, &t0);
    s = &t0;
  }
  if (!c)
    return s ? DECIDE_SERVER : DECIDE_NONE;
  if (!s)
    return DECIDE_CLIENT;
  if (same(&c->version, &s->version))
    return c->deleted == s->deleted ? DECIDE_NONE : DECIDE_CONFLICT;
  if (ctx->policy == LIPSYNC_POLICY_LWW) {
    if (c->version.clock == 0 && s->version.clock == 0)
      return DECIDE_CONFLICT;    /* two different initial versions */
    if (fault_on("lww-no-site")) /* fault injection: conformance self-test */
      return c->version.clock > s->version.clock ? DECIDE_CLIENT
                                                 : DECIDE_SERVER;
    return lipsync_version_cmp(&c->version, &s->version) > 0 ? DECIDE_CLIENT
                                                             : DECIDE_SERVER;
  }
  bool client_changed = !same(&c->version, &c->base);
  bool server_changed = !same(&s->version, &c->base);
  if (client_changed && server_changed)
    return ctx->policy == LIPSYNC_POLICY_SERVER_WINS ? DECIDE_SERVER
                                                     : DECIDE_CLIENT;
  return client_changed ? DECIDE_CLIENT : DECIDE_SERVER;
}

bool decide_both_changed(const side_item *c, const side_item *s) {
  return c && s && !same(&c->version, &s->version) &&
         !same(&c->version, &c->base) && !same(&s->version, &c->base);
}
