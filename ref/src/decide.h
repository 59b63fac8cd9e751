/*
 * decide.h: which side's version of a row wins (spec 8.6, 8.7). A pure
 * function of the two items, the policy and the session's horizon, so the
 * two peers, each holding both items, reach the same answer.
 */
#ifndef LIPSYNC_DECIDE_H
#define LIPSYNC_DECIDE_H

#include "lipsync.h"

#include <stdbool.h>

typedef enum decision {
  DECIDE_NONE,    /* in sync: nothing moves */
  DECIDE_CLIENT,  /* the client's row or tombstone wins */
  DECIDE_SERVER,  /* the server's wins (possibly the implicit tombstone) */
  DECIDE_CONFLICT /* counted; nothing moves; the sync fails */
} decision;

/* One side's item of a UUID. |base| is the client's base (the version
 * itself when they are equal); unused for the server. */
typedef struct side_item {
  lipsync_version version;
  lipsync_version base;
  bool deleted;
} side_item;

/* What decides besides the items. */
typedef struct decide_ctx {
  lipsync_policy policy;
  uint64_t horizon;
  bool stale; /* the client's last sync of the table is below horizon */
} decide_ctx;

/* |c| and |s| are the client's and the server's items, NULL when that side
 * has none. */
decision decide(const decide_ctx *ctx, const side_item *c, const side_item *s);

/* Whether the client's item |c| and the server's |s| both changed since
 * the client's base: a row changed on both sides since they last agreed,
 * which the policy resolves (or, as DECIDE_CONFLICT, cannot). */
bool decide_both_changed(const side_item *c, const side_item *s);

/* The implicit tombstone T0 of a stale session (spec 8.7). */
void decide_implicit_tombstone(const decide_ctx *ctx, side_item *out);

/* True if the version is the zero version ("none"). */
bool version_is_zero(const lipsync_version *v);

#endif
