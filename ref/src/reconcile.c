/*
 * reconcile.c: turns of reconciliation and row transfer (spec sections 8
 * and 9, and 8.8 for the feature "incremental").
 *
 * While the peer holds the turn, each frame it sends is answered with work
 * for my next turn, kept per table as small descriptions rather than bytes:
 * ranges to describe, UUIDs to ask for, items and ranges of my items to
 * send. When my turn comes, recon_produce() turns that work into frames a
 * megabyte at a time, reading items and rows from the store as the
 * transport drains. Nothing of a table is held in memory: a range is
 * summarized by a scan of it (the whole table by the store's kept summary),
 * an item list is a scan, a decision looks the UUIDs up. What the session
 * keeps grows with what differs between the two sides, not with the table.
 */
#include "fault.h"
#include "session_int.h"
#include "store.h"

#include <stdlib.h>
#include <string.h>

#define OUT_TARGET (1024u * 1024u) /* bytes produced per send() call */
#define ROWS_PER_FRAME 1000        /* and at most ROW_BYTES_PER_FRAME */
#define ROW_BYTES_PER_FRAME (1024u * 1024u)
#define ITEMS_PER_FRAME 4096 /* item list entries per Ranges frame */
#define RANGES_PER_FRAME 256
#define NEEDS_PER_FRAME 32768
#define SPLIT_WAYS 16
#define LOOKUP_BATCH 1024 /* UUIDs per batched lookup */
/* Received rows held back for after the tombstones, at most (spec 9.3);
 * past this they are applied as they come. */
#define HELD_MAX (64u * 1024u * 1024u)

/* Past this many bytes of held rows (over all tables), received rows are
 * written as they come: a quarter of the memory limit, at most HELD_MAX. */
static size_t held_max(const lipsync_session *s) {
  size_t quarter = s->mem_limit / 4;
  return s->mem_limit && quarter < HELD_MAX ? quarter : HELD_MAX;
}

void recon_table_free(lipsync_session *s, sync_table *t) {
  (void)s;
  free(t->name);
  free(t->remote);
  free(t->ranges);
  free(t->needs);
  free(t->pushes);
  free(t->implicit);
  bytebuf_free(&t->held_tombstones);
  bytebuf_free(&t->held_rows);
  uuid_set_free(&t->applied);
  uuid_set_free(&t->sent);
  free(t->sent_ranges);
  uuid_set_free(&t->peer_changes);
  memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------ */
/* work queues                                                          */
/* ------------------------------------------------------------------ */

static void set_bound(uint8_t *dst, bool *has, const uint8_t *src) {
  *has = src != NULL;
  if (src)
    memcpy(dst, src, LIPSYNC_UUID_LEN);
}

static push *new_push(lipsync_session *s, sync_table *t) {
  if (vec_reserve((void **)&t->pushes, &t->cap_pushes, t->npushes + 1,
                  sizeof *t->pushes)) {
    session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    return NULL;
  }
  push *p = &t->pushes[t->npushes++];
  memset(p, 0, sizeof *p);
  return p;
}

/* Each row at most once per session (spec LS-ROWS-1): one already queued
 * is not queued again. */
static int add_push_one(lipsync_session *s, sync_table *t,
                        const lipsync_item *it) {
  int rc = uuid_set_add(&t->sent, it->uuid);
  if (rc <= 0)
    return rc < 0 ? session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory") : 0;
  push *p = new_push(s, t);
  if (!p)
    return s->result;
  p->item = *it;
  return 0;
}

/* Every visible item of mine in [lower, upper). */
static int add_push_range(lipsync_session *s, sync_table *t,
                          const uint8_t *lower, const uint8_t *upper) {
  if (vec_reserve((void **)&t->sent_ranges, &t->cap_sent_ranges,
                  t->nsent_ranges + 1, sizeof *t->sent_ranges))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  struct sent_range *r = &t->sent_ranges[t->nsent_ranges++];
  set_bound(r->lower, &r->has_lower, lower);
  set_bound(r->upper, &r->has_upper, upper);
  t->sent_ranges_sorted = false;
  push *p = new_push(s, t);
  if (!p)
    return s->result;
  p->range = true;
  set_bound(p->lower, &p->has_lower, lower);
  set_bound(p->upper, &p->has_upper, upper);
  return 0;
}

static int add_uuid(lipsync_session *s, uint8_t (**v)[LIPSYNC_UUID_LEN],
                    size_t *n, size_t *cap, const uint8_t *uuid) {
  if (vec_reserve((void **)v, cap, *n + 1, LIPSYNC_UUID_LEN))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  memcpy((*v)[(*n)++], uuid, LIPSYNC_UUID_LEN);
  return 0;
}

static int add_need(lipsync_session *s, sync_table *t, const uint8_t *uuid) {
  return add_uuid(s, &t->needs, &t->nneeds, &t->cap_needs, uuid);
}

static int add_implicit(lipsync_session *s, sync_table *t,
                        const uint8_t *uuid) {
  return add_uuid(s, &t->implicit, &t->nimplicit, &t->cap_implicit, uuid);
}

static int add_range(lipsync_session *s, sync_table *t, const uint8_t *lower,
                     const uint8_t *upper, pending_kind kind, uint64_t count) {
  if (vec_reserve((void **)&t->ranges, &t->cap_ranges, t->nranges + 1,
                  sizeof *t->ranges))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  pending_range *p = &t->ranges[t->nranges++];
  memset(p, 0, sizeof *p);
  set_bound(p->lower, &p->has_lower, lower);
  set_bound(p->upper, &p->has_upper, upper);
  p->kind = kind;
  p->count = count;
  return 0;
}

/* A failure of the store, or of reading my items, ends the session with
 * the store's detail. */
static int store_failed(lipsync_session *s, sync_table *t, int rc) {
  const char *detail = store_errmsg(s->store);
  if (rc == LIPSYNC_ERR_NOMEM)
    return session_fail(s, rc, "out of memory");
  /* Backends name the table themselves, mostly; not always |t|: a batch
   * of another table's rows may fail when |t|'s writes end it. */
  if (strncmp(detail, "table ", 6) == 0)
    return session_fail(s, rc, "%s", detail);
  return session_fail(s, rc, "table %s: %s", t->name, detail);
}

int recon_prepare(lipsync_session *s) {
  char detail[400];
  for (size_t i = 0; i < s->ntables; i++) {
    sync_table *t = &s->tables[i];
    t->ctx.policy = s->policy;
    t->ctx.horizon = s->horizon;
    t->ctx.stale = t->last_sync != 0 && t->last_sync < s->horizon;
    /* A client observes the server's clock too (spec LS-VERSION-3); a
     * server only the clocks it receives, so that a session that receives
     * none writes nothing (LS-INC-5). */
    t->max_clock = s->is_server ? 0 : s->server_clock;
    int rc = items_open(&t->view, s->store, t->handle, &s->hasher,
                        !s->is_server, s->horizon, detail, sizeof detail);
    if (rc)
      return session_fail(s, rc, "%s", detail);
    t->empty = t->view.total == 0;
  }
  return 0;
}

/* The client's first turn: every table's whole UUID space, or its changes
 * (produced from the store when the turn is written). */
int recon_start(lipsync_session *s) {
  pending_kind kind = s->split_threshold ? PENDING_FINGERPRINT : PENDING_ITEMS;
  for (size_t i = 0; i < s->ntables; i++) {
    sync_table *t = &s->tables[i];
    if (!t->incremental && add_range(s, t, NULL, NULL, kind, 0))
      return s->result;
  }
  s->first_turn = true;
  s->state = ST_MY_TURN;
  memset(&s->gen, 0, sizeof s->gen);
  return 0;
}

/* ------------------------------------------------------------------ */
/* receiving the peer's turn                                            */
/* ------------------------------------------------------------------ */

static sync_table *frame_table(lipsync_session *s, uint32_t index,
                               const char *what) {
  if (index >= s->ntables) {
    session_fail(s, LIPSYNC_ERR_PROTOCOL,
                 "%s names table index %u; the session has %zu tables", what,
                 index, s->ntables);
    return NULL;
  }
  s->tables[index].bytes_received += s->frame_size;
  return &s->tables[index];
}

static bool uuid_below(const uint8_t *uuid, const uint8_t *upper) {
  return !upper || memcmp(uuid, upper, LIPSYNC_UUID_LEN) < 0;
}

/* My item |it| as a side of the decision. */
static void my_side(const lipsync_item *it, side_item *out) {
  out->version = it->version;
  out->base = it->base;
  out->deleted = it->deleted != 0;
}

static bool version_valid(const Lipsync__Version *v) {
  return v && v->site.len == LIPSYNC_SITE_LEN;
}

/* A base may also be the short form of the zero version: no field set
 * (spec LS-POLICY-5). */
static bool base_valid(const Lipsync__Version *v) {
  return version_valid(v) || (v && v->clock == 0 && v->site.len == 0);
}

static void version_from_wire(const Lipsync__Version *in,
                              lipsync_version *out) {
  out->clock = in->clock;
  if (in->site.len == LIPSYNC_SITE_LEN)
    memcpy(out->site, in->site.data, LIPSYNC_SITE_LEN);
  else
    memset(out->site, 0, LIPSYNC_SITE_LEN); /* the zero base, short form */
}

/* The peer's item or row as a side of the decision; its base counts only
 * when the peer is the client. */
static int peer_side(lipsync_session *s, sync_table *t,
                     const Lipsync__Version *version, bool deleted,
                     const Lipsync__Version *base, side_item *out) {
  if (!version_valid(version) || (base && !base_valid(base)))
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: an item or row without a version, or "
                        "with a site that is not %d bytes",
                        t->name, LIPSYNC_SITE_LEN);
  version_from_wire(version, &out->version);
  if (base && s->is_server)
    version_from_wire(base, &out->base);
  else
    out->base = out->version;
  out->deleted = deleted;
  if (version->clock > t->max_clock)
    t->max_clock = version->clock;
  return 0;
}

decision session_decide(const lipsync_session *s, const sync_table *t,
                        const side_item *mine, const side_item *peer) {
  return s->is_server ? decide(&t->ctx, peer, mine)
                      : decide(&t->ctx, mine, peer);
}

bool session_both_changed(const lipsync_session *s, const side_item *mine,
                          const side_item *peer) {
  return s->is_server ? decide_both_changed(peer, mine)
                      : decide_both_changed(mine, peer);
}

static decision my_win(const lipsync_session *s) {
  return s->is_server ? DECIDE_SERVER : DECIDE_CLIENT;
}

/* The digests of an item's state. */
static int digest_of(lipsync_session *s, const uint8_t *uuid,
                     const lipsync_version *v, bool deleted,
                     uint8_t out[LIPSYNC_DIGEST_LEN]) {
  if (canon_item_digest(&s->hasher, uuid, v, deleted, out))
    return session_fail(s, LIPSYNC_ERR_INTERNAL, "hashing failed");
  return 0;
}

/* Whether an item of this state is in the final item set (spec
 * LS-VERIFY-5): every item but the tombstones below the horizon. */
static bool in_final(const lipsync_session *s, uint64_t clock, bool deleted) {
  return !(deleted && clock < s->horizon);
}

/* Applies the implicit tombstone T0 to my item |it| (a stale client). */
static int apply_implicit(lipsync_session *s, sync_table *t,
                          const lipsync_item *it) {
  side_item t0;
  lipsync_row row;
  int rc;
  decide_implicit_tombstone(&t->ctx, &t0);
  memset(&row, 0, sizeof row);
  memcpy(row.uuid, it->uuid, LIPSYNC_UUID_LEN);
  row.version = t0.version;
  row.deleted = 1;
  row.had_item = 1;
  if (digest_of(s, it->uuid, &it->version, it->deleted != 0, row.old_digest) ||
      digest_of(s, it->uuid, &row.version, true, row.digest))
    return s->result;
  if ((rc = store_update(s->store, t->handle, &row)) != 0)
    return store_failed(s, t, rc);
  if (in_final(s, it->version.clock, it->deleted))
    canon_fp_add(&t->final_sub, row.old_digest);
  t->wrote = true;
  if (uuid_set_add(&t->applied, it->uuid) < 0)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  return 0; /* below the horizon: not part of the final state */
}

/* My item |it|, which the peer lacks: sent, unless a stale client's item
 * loses to the implicit tombstone. */
static int only_mine_item(lipsync_session *s, sync_table *t,
                          const lipsync_item *it) {
  side_item mine;
  my_side(it, &mine);
  return session_decide(s, t, &mine, NULL) == DECIDE_CLIENT
             ? add_push_one(s, t, it)
             : apply_implicit(s, t, it);
}

/* My items in [lower, upper), which the peer lacks: sent; for a stale
 * client, each decided against the implicit tombstone. */
static int only_mine(lipsync_session *s, sync_table *t, const uint8_t *lower,
                     const uint8_t *upper) {
  item_cursor *c = &s->scan; /* closed by the session if it fails */
  lipsync_item it;
  int rc;
  if (s->is_server || !t->ctx.stale)
    return add_push_range(s, t, lower, upper);
  if ((rc = items_scan(&t->view, lower, upper, c)) != 0)
    return store_failed(s, t, rc);
  while ((rc = items_next(c, &it, NULL)) > 0)
    if ((rc = only_mine_item(s, t, &it)) != 0)
      break;
  items_close(c);
  return rc < 0 ? (s->result ? s->result : store_failed(s, t, rc)) : 0;
}

static int on_fingerprint(lipsync_session *s, sync_table *t,
                          const uint8_t *lower, const uint8_t *upper,
                          const Lipsync__Fingerprint *fp) {
  canon_fp mine;
  uint8_t value[LIPSYNC_DIGEST_LEN];
  int rc;
  if (fp->value.len != LIPSYNC_DIGEST_LEN)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: fingerprint is %zu bytes, not %d", t->name,
                        fp->value.len, LIPSYNC_DIGEST_LEN);
  if ((rc = items_fingerprint(&t->view, lower, upper, &mine)) != 0)
    return store_failed(s, t, rc);
  canon_fp_final(&mine, value);
  if (mine.count == fp->count &&
      memcmp(value, fp->value.data, LIPSYNC_DIGEST_LEN) == 0)
    return 0; /* this range is in sync */
  if (fp->count == 0)
    return only_mine(s, t, lower, upper); /* the peer has nothing here */
  pending_kind kind =
      (s->split_threshold == 0 || mine.count <= s->split_threshold)
          ? PENDING_ITEMS
          : PENDING_SPLIT;
  return add_range(s, t, lower, upper, kind, mine.count);
}

/* What the decision for one UUID asks of me: send my row (|mine| is my
 * item), ask for the peer's, count a conflict, or send T0 (spec 8.3, 8.6,
 * 8.7). */
static int act_on(lipsync_session *s, sync_table *t, const uint8_t *uuid,
                  const lipsync_item *mine, const side_item *peer) {
  side_item me;
  if (mine)
    my_side(mine, &me);
  decision d = session_decide(s, t, mine ? &me : NULL, peer);
  if (d == DECIDE_CONFLICT) {
    t->conflicts++;
    return 0;
  }
  if (d == my_win(s) && mine && session_both_changed(s, &me, peer))
    t->changed_both_kept++;
  if (d == my_win(s))
    return mine ? add_push_one(s, t, mine) : add_implicit(s, t, uuid);
  return d == DECIDE_NONE ? 0 : add_need(s, t, uuid);
}

/* Checks one Item of the peer; |prev| is the UUID of the item before it
 * in the same list (NULL for the first). */
static int check_item(lipsync_session *s, sync_table *t,
                      const Lipsync__Item *it, const uint8_t *prev,
                      const uint8_t *lower, const uint8_t *upper,
                      side_item *out) {
  if (it->uuid.len != LIPSYNC_UUID_LEN)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: item with a %zu-byte UUID", t->name,
                        it->uuid.len);
  if (peer_side(s, t, it->version, it->deleted, it->base_version, out))
    return s->result;
  if ((prev && memcmp(prev, it->uuid.data, LIPSYNC_UUID_LEN) >= 0) ||
      (lower && memcmp(it->uuid.data, lower, LIPSYNC_UUID_LEN) < 0) ||
      !uuid_below(it->uuid.data, upper))
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: item list is not in ascending UUID "
                        "order inside its range",
                        t->name);
  return 0;
}

/* Compares the peer's item list with my items of the same range and
 * queues, for each UUID, what the decision asks of me. A run of my items
 * between two of the peer's is sent as a range (spec 8.3, 8.6). */
static int on_item_list(lipsync_session *s, sync_table *t, const uint8_t *lower,
                        const uint8_t *upper, const Lipsync__ItemList *list) {
  bool per_item = !s->is_server && t->ctx.stale;
  item_cursor *c = &s->scan; /* closed by the session if it fails */
  lipsync_item own;
  int have, rc;
  uint8_t run[LIPSYNC_UUID_LEN];
  bool in_run = false;

  if (list->n_items == 0 && !per_item)
    return add_push_range(s, t, lower, upper);
  if ((rc = items_scan(&t->view, lower, upper, c)) != 0)
    return store_failed(s, t, rc);
  have = items_next(c, &own, NULL);
  for (size_t k = 0; k <= list->n_items && have >= 0 && !s->result; k++) {
    const Lipsync__Item *it = k < list->n_items ? list->items[k] : NULL;
    side_item peer;
    if (it && check_item(s, t, it, k ? list->items[k - 1]->uuid.data : NULL,
                         lower, upper, &peer))
      break;
    /* My items before this one of the peer's (all that remain at the
     * end) are mine alone. */
    while (have > 0 &&
           (!it || memcmp(own.uuid, it->uuid.data, LIPSYNC_UUID_LEN) < 0)) {
      if (per_item) {
        if (only_mine_item(s, t, &own))
          break;
      } else if (!in_run) {
        memcpy(run, own.uuid, LIPSYNC_UUID_LEN);
        in_run = true;
      }
      have = items_next(c, &own, NULL);
    }
    if (s->result)
      break;
    if (in_run) {
      if (add_push_range(s, t, run, it ? it->uuid.data : upper))
        break;
      in_run = false;
    }
    if (!it || have < 0)
      break;
    bool both =
        have > 0 && memcmp(own.uuid, it->uuid.data, LIPSYNC_UUID_LEN) == 0;
    if (act_on(s, t, it->uuid.data, both ? &own : NULL, &peer))
      break;
    if (both)
      have = items_next(c, &own, NULL);
  }
  items_close(c);
  if (s->result)
    return s->result;
  return have < 0 ? store_failed(s, t, have) : 0;
}

int recon_on_ranges(lipsync_session *s, const Lipsync__Ranges *m) {
  sync_table *t = frame_table(s, m->table, "Ranges");
  if (!t)
    return s->result;
  if (t->incremental)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s is synced by its changes: Ranges are not "
                        "allowed for it",
                        t->name);
  s->peer_turn_requests = true;
  for (size_t r = 0; r < m->n_ranges; r++) {
    const Lipsync__Range *rg = m->ranges[r];
    const uint8_t *lower = rg->lower.len ? rg->lower.data : NULL;
    const uint8_t *upper = rg->upper.len ? rg->upper.data : NULL;
    if ((rg->lower.len && rg->lower.len != LIPSYNC_UUID_LEN) ||
        (rg->upper.len && rg->upper.len != LIPSYNC_UUID_LEN) ||
        (lower && upper && memcmp(lower, upper, LIPSYNC_UUID_LEN) >= 0))
      return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                          "table %s: invalid range bounds", t->name);
    int rc;
    if (rg->summary_case == LIPSYNC__RANGE__SUMMARY_FINGERPRINT)
      rc = on_fingerprint(s, t, lower, upper, rg->fingerprint);
    else if (rg->summary_case == LIPSYNC__RANGE__SUMMARY_ITEMS)
      rc = on_item_list(s, t, lower, upper, rg->items);
    else
      rc = session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: range without a summary", t->name);
    if (rc)
      return rc;
  }
  return 0;
}

/* The UUIDs of a received frame, copied and sorted, with my item of each:
 * none, one I show (visible), or one I hold but do not show (an old
 * tombstone, which a row replaces like any item, but which the decision
 * does not see). */
enum { MINE_NONE, MINE_VISIBLE, MINE_HIDDEN };
typedef struct lookup_batch {
  sync_table *t;
  uint8_t (*uuids)[LIPSYNC_UUID_LEN];
  lipsync_item *mine;
  uint8_t *state; /* MINE_* per UUID */
  size_t n;
} lookup_batch;

/* The index of |uuid| in the sorted batch, or b->n. */
static size_t batch_index(const lookup_batch *b, const uint8_t *uuid) {
  size_t lo = 0, hi = b->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = memcmp(b->uuids[mid], uuid, LIPSYNC_UUID_LEN);
    if (c == 0)
      return mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return b->n;
}

static int batch_found(void *arg, const lipsync_item *it) {
  lookup_batch *b = arg;
  size_t k = batch_index(b, it->uuid);
  if (k < b->n) {
    b->mine[k] = *it;
    b->state[k] = items_hidden(&b->t->view, it) ? MINE_HIDDEN : MINE_VISIBLE;
  }
  return 0;
}

/* My visible item of |uuid| in the batch, or NULL. */
static const lipsync_item *batch_visible(const lookup_batch *b,
                                         const uint8_t *uuid) {
  size_t k = batch_index(b, uuid);
  return k < b->n && b->state[k] == MINE_VISIBLE ? &b->mine[k] : NULL;
}

static void batch_free(lookup_batch *b) {
  free(b->uuids);
  free(b->mine);
  free(b->state);
}

/* Looks up my visible items for |n| UUIDs (sorted first). Returns 0 or
 * fails the session. */
static int batch_lookup(lipsync_session *s, sync_table *t, lookup_batch *b,
                        size_t n) {
  memset(b, 0, sizeof *b);
  b->t = t;
  b->n = n;
  b->uuids = malloc((n + 1) * LIPSYNC_UUID_LEN);
  b->mine = malloc((n + 1) * sizeof *b->mine);
  b->state = calloc(n + 1, 1);
  if (!b->uuids || !b->mine || !b->state)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  return 0;
}

static int batch_run(lipsync_session *s, sync_table *t, lookup_batch *b) {
  items_sort_uuids(b->uuids, b->n);
  int rc =
      items_lookup(&t->view, (const uint8_t *)b->uuids, b->n, batch_found, b);
  return rc ? store_failed(s, t, rc) : 0;
}

static int sent_range_cmp(const void *a, const void *b) {
  const struct sent_range *x = a, *y = b;
  if (!x->has_lower || !y->has_lower)
    return (int)x->has_lower - (int)y->has_lower;
  return memcmp(x->lower, y->lower, LIPSYNC_UUID_LEN);
}

/* Whether |uuid| lies in a range whose rows were queued whole. The ranges
 * are disjoint: the one with the greatest lower bound at or below |uuid|
 * is the only candidate. */
static bool in_sent_range(sync_table *t, const uint8_t *uuid) {
  if (!t->nsent_ranges)
    return false;
  if (!t->sent_ranges_sorted) {
    qsort(t->sent_ranges, t->nsent_ranges, sizeof *t->sent_ranges,
          sent_range_cmp);
    t->sent_ranges_sorted = true;
  }
  size_t lo = 0, hi = t->nsent_ranges; /* first range above |uuid| */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const struct sent_range *r = &t->sent_ranges[mid];
    if (!r->has_lower || memcmp(r->lower, uuid, LIPSYNC_UUID_LEN) <= 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo > 0 && uuid_below(uuid, t->sent_ranges[lo - 1].has_upper
                                        ? t->sent_ranges[lo - 1].upper
                                        : NULL);
}

int recon_on_need(lipsync_session *s, const Lipsync__Need *m) {
  sync_table *t = frame_table(s, m->table, "Need");
  lookup_batch b;
  if (!t)
    return s->result;
  s->peer_turn_requests = true;
  if (batch_lookup(s, t, &b, m->n_uuids))
    goto out;
  for (size_t k = 0; k < m->n_uuids; k++) {
    if (m->uuids[k].len != LIPSYNC_UUID_LEN) {
      session_fail(s, LIPSYNC_ERR_PROTOCOL,
                   "table %s: Need names a UUID of %zu bytes", t->name,
                   m->uuids[k].len);
      goto out;
    }
    memcpy(b.uuids[k], m->uuids[k].data, LIPSYNC_UUID_LEN);
  }
  if (batch_run(s, t, &b))
    goto out;
  for (size_t k = 0; k < b.n; k++) {
    char text[37];
    lipsync_uuid_format(b.uuids[k], text);
    if (b.state[k] != MINE_VISIBLE) {
      session_fail(s, LIPSYNC_ERR_PROTOCOL,
                   "table %s: Need names row %s, which this side does not "
                   "have",
                   t->name, text);
      goto out;
    }
    /* Asked for twice, or already sent (spec LS-NEED-4). */
    if ((k > 0 && memcmp(b.uuids[k - 1], b.uuids[k], LIPSYNC_UUID_LEN) == 0) ||
        uuid_set_has(&t->sent, b.uuids[k]) || in_sent_range(t, b.uuids[k])) {
      session_fail(s, LIPSYNC_ERR_PROTOCOL,
                   "table %s: Need names row %s, which this side already "
                   "sent or was asked for in this session",
                   t->name, text);
      goto out;
    }
    if (add_push_one(s, t, &b.mine[k]))
      goto out;
  }
out:
  batch_free(&b);
  return s->result;
}

/* The peer's Changes (spec LS-INC-12, LS-INC-13): each item decided
 * against mine, looked up. */
int recon_on_changes(lipsync_session *s, const Lipsync__Changes *m) {
  sync_table *t = frame_table(s, m->table, "Changes");
  lookup_batch b;
  if (!t)
    return s->result;
  /* Only in the client's first turn and the server's answer to it. */
  if (!t->incremental || !s->incremental || s->turns_received != 0)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: Changes are not allowed %s", t->name,
                        t->incremental ? "in this turn"
                                       : "for a table synced by ranges");
  s->peer_turn_requests = true;
  if (batch_lookup(s, t, &b, m->n_items))
    goto out;
  side_item *peer = calloc(m->n_items + 1, sizeof *peer);
  if (!peer) {
    session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (size_t k = 0; k < m->n_items && !s->result; k++) {
    const Lipsync__Item *it = m->items[k];
    const uint8_t *prev = k ? m->items[k - 1]->uuid.data
                            : (t->peer_changes.n ? t->last_change : NULL);
    if (check_item(s, t, it, prev, NULL, NULL, &peer[k]))
      break;
    memcpy(b.uuids[k], it->uuid.data, LIPSYNC_UUID_LEN);
    if (s->is_server && uuid_set_add(&t->peer_changes, it->uuid.data) < 0)
      session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  }
  if (!s->result && m->n_items)
    memcpy(t->last_change, m->items[m->n_items - 1]->uuid.data,
           LIPSYNC_UUID_LEN);
  if (!s->result && !batch_run(s, t, &b))
    for (size_t k = 0; k < m->n_items && !s->result; k++)
      act_on(s, t, m->items[k]->uuid.data,
             batch_visible(&b, m->items[k]->uuid.data), &peer[k]);
  free(peer);
out:
  batch_free(&b);
  return s->result;
}

static int decode_value(lipsync_session *s, const sync_table *t,
                        const Lipsync__Value *in, lipsync_value *out) {
  switch (in->kind_case) {
  case LIPSYNC__VALUE__KIND_NULL:
    out->type = LIPSYNC_NULL;
    return 0;
  case LIPSYNC__VALUE__KIND_INTEGER:
    out->type = LIPSYNC_INTEGER;
    out->u.integer = in->integer;
    return 0;
  case LIPSYNC__VALUE__KIND_REAL:
    out->type = LIPSYNC_REAL;
    out->u.real = in->real;
    return 0;
  case LIPSYNC__VALUE__KIND_TEXT:
    if (!canon_utf8_valid(in->text.data, in->text.len))
      return session_fail(s, LIPSYNC_ERR_INVALID_VALUE,
                          "table %s: a TEXT value is not valid UTF-8", t->name);
    out->type = LIPSYNC_TEXT;
    out->u.bytes.data = in->text.data;
    out->u.bytes.len = in->text.len;
    return 0;
  case LIPSYNC__VALUE__KIND_BLOB:
    out->type = LIPSYNC_BLOB;
    out->u.bytes.data = in->blob.data;
    out->u.bytes.len = in->blob.len;
    return 0;
  default:
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: a value has no kind", t->name);
  }
}

/* Decodes the values of the peer's row |in| into |values|, refusing any
 * that is not valid. */
static int decode_values(lipsync_session *s, const sync_table *t,
                         const Lipsync__Row *in, lipsync_value *values) {
  for (size_t c = 0; c < in->n_values; c++)
    if (decode_value(s, t, in->values[c], &values[c]))
      return s->result;
  return 0;
}

/* What a held row carries besides the row: whether an item of its UUID
 * existed, and the digests of that item and of the new one. */
typedef struct held_head {
  uint8_t had_item;
  uint8_t old_digest[LIPSYNC_DIGEST_LEN];
  uint8_t digest[LIPSYNC_DIGEST_LEN];
} held_head;

/* Writes the peer's row |in| (checked), its values decoded into |values|,
 * into the store, replacing the item |head| describes. */
static int write_row(lipsync_session *s, sync_table *t, const Lipsync__Row *in,
                     const lipsync_value *values, const held_head *head) {
  lipsync_row row;
  memset(&row, 0, sizeof row);
  memcpy(row.uuid, in->uuid.data, LIPSYNC_UUID_LEN);
  row.nvalues = in->n_values;
  row.values = values;
  version_from_wire(in->version, &row.version);
  row.deleted = in->deleted;
  row.had_item = head->had_item;
  memcpy(row.digest, head->digest, LIPSYNC_DIGEST_LEN);
  memcpy(row.old_digest, head->old_digest, LIPSYNC_DIGEST_LEN);
  int rc = head->had_item ? store_update(s->store, t->handle, &row)
                          : store_insert(s->store, t->handle, &row);
  t->wrote = true;
  return rc ? store_failed(s, t, rc) : 0;
}

/* Holds the row |in| back until the end of the reconciliation (spec 9.3):
 * a row deleted and another inserted with the same value of a UNIQUE
 * column may arrive in either order, in different turns, and the delete
 * must come first; and a side that writes late holds its database's write
 * lock for less. */
static int hold_row(lipsync_session *s, sync_table *t, const Lipsync__Row *in,
                    const held_head *head) {
  bytebuf *b = in->deleted ? &t->held_tombstones : &t->held_rows;
  size_t n = lipsync__row__get_packed_size(in);
  uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                    (uint8_t)n};
  if (bytebuf_append(b, len, 4) || bytebuf_append(b, head, sizeof *head) ||
      bytebuf_reserve(b, n))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  b->len += lipsync__row__pack(in, b->data + b->len);
  s->held_bytes += 4 + sizeof *head + n;
  return 0;
}

/* Applies the rows held in |b|. */
static int apply_held(lipsync_session *s, sync_table *t, bytebuf *b,
                      lipsync_value *values) {
  size_t off = 0;
  while (off + 4 + sizeof(held_head) <= b->len) {
    const uint8_t *p = b->data + off;
    size_t n =
        (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    held_head head;
    memcpy(&head, p + 4, sizeof head);
    Lipsync__Row *in = lipsync__row__unpack(NULL, n, p + 4 + sizeof(held_head));
    off += 4 + sizeof(held_head) + n;
    int rc = !in ? session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory")
             : decode_values(s, t, in, values)
                 ? s->result
                 : write_row(s, t, in, values, &head);
    if (in)
      lipsync__row__free_unpacked(in, NULL);
    if (rc)
      return rc;
  }
  s->held_bytes -= s->held_bytes < b->len ? s->held_bytes : b->len;
  bytebuf_free(b);
  return 0;
}

static int apply_table_held(lipsync_session *s, sync_table *t, bytebuf *b) {
  if (!b->len)
    return 0;
  lipsync_value *values = calloc(t->handle->ncolumns + 1, sizeof *values);
  int rc = values ? apply_held(s, t, b, values)
                  : session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  free(values);
  return rc;
}

/* Applies what the tables held back: every table's tombstones, the last
 * table's first, then every table's other rows, the first table's first.
 * Tables named parents before children (as a schema declares them) so
 * lose children before their parents and gain parents before their
 * children: a foreign key checked at each statement holds throughout, and
 * a parent's ON DELETE CASCADE finds none of the children the sync
 * deletes itself (which would count as a change of their own, spec
 * LS-CAPTURE-10). */
int recon_apply_deferred(lipsync_session *s) {
  for (size_t i = s->ntables; i-- > 0;)
    if (apply_table_held(s, &s->tables[i], &s->tables[i].held_tombstones))
      return s->result;
  for (size_t i = 0; i < s->ntables; i++)
    if (apply_table_held(s, &s->tables[i], &s->tables[i].held_rows))
      return s->result;
  return 0;
}

/* Checks that the peer's row |in| wins over |mine| (NULL: I show none)
 * (spec 8.6), and applies it in place of |old| (NULL: I hold none), or
 * holds it back. */
static int apply_row(lipsync_session *s, sync_table *t, const Lipsync__Row *in,
                     const lipsync_item *mine, const lipsync_item *old,
                     lipsync_value *values) {
  size_t ncol = t->handle->ncolumns;
  side_item peer, me;
  held_head head;
  char text[37];
  int rc;
  if (peer_side(s, t, in->version, in->deleted, in->base_version, &peer))
    return s->result;
  lipsync_uuid_format(in->uuid.data, text);
  /* A table that was empty pushes none of its rows, so it need not
   * remember what it received (a million UUIDs, in a first sync): the
   * store refuses a row received twice (spec LS-RECON-6). */
  if (!t->empty && (rc = uuid_set_add(&t->applied, in->uuid.data)) <= 0 &&
      !(rc == 0 && fault_on("accept-row-twice"))) /* fault: self-test */
    return rc < 0
               ? session_fail(s, rc, "out of memory")
               : session_fail(s, LIPSYNC_ERR_PROTOCOL,
                              "table %s: received row %s twice", t->name, text);
  if (mine)
    my_side(mine, &me);
  decision d = session_decide(s, t, mine ? &me : NULL, &peer);
  if (d != (s->is_server ? DECIDE_CLIENT : DECIDE_SERVER))
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: received row %s, whose version does not "
                        "win over this side's",
                        t->name, text);
  if (mine && session_both_changed(s, &me, &peer))
    t->changed_both_taken++;
  (void)ncol;
  if (decode_values(s, t, in, values)) /* refused now, not later */
    return s->result;
  memset(&head, 0, sizeof head);
  head.had_item = old != NULL;
  if (digest_of(s, in->uuid.data, &peer.version, in->deleted, head.digest))
    return s->result;
  /* The final item set: my item out (if it was in), the peer's in (spec
   * LS-VERIFY-5). */
  if (old && digest_of(s, old->uuid, &old->version, old->deleted != 0,
                       head.old_digest))
    return s->result;
  if (old && in_final(s, old->version.clock, old->deleted))
    canon_fp_add(&t->final_sub, head.old_digest);
  if (in_final(s, peer.version.clock, in->deleted))
    canon_fp_add(&t->final_add, head.digest);
  t->rows_received++;
  t->deletes_received += in->deleted != 0;
  if (t->empty || s->held_bytes >= held_max(s)) {
    /* Nothing to delete first, or too much to hold: write it now, after
     * the tombstones held so far. */
    if (t->held_tombstones.len) {
      lipsync_value *v = calloc(ncol + 1, sizeof *v);
      rc = v ? apply_held(s, t, &t->held_tombstones, v)
             : session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
      free(v);
      if (rc)
        return rc;
    }
    return write_row(s, t, in, values, &head);
  }
  return hold_row(s, t, in, &head);
}

int recon_on_rows(lipsync_session *s, const Lipsync__Rows *m) {
  sync_table *t = frame_table(s, m->table, "Rows");
  lookup_batch b;
  if (!t)
    return s->result;
  size_t ncol = t->handle->ncolumns;
  lipsync_value *values =
      arena_alloc(&s->recv_arena, (ncol + 1) * sizeof *values);
  if (!values)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  for (size_t r = 0; r < m->n_rows; r++) {
    const Lipsync__Row *in = m->rows[r];
    if (in->uuid.len != LIPSYNC_UUID_LEN ||
        in->n_values != (in->deleted ? 0 : ncol))
      return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                          "table %s: %s with a %zu-byte UUID and %zu values "
                          "(expected 16 and %zu)",
                          t->name, in->deleted ? "tombstone" : "row",
                          in->uuid.len, in->n_values, in->deleted ? 0 : ncol);
  }
  if (batch_lookup(s, t, &b, m->n_rows))
    goto out;
  for (size_t r = 0; r < m->n_rows; r++)
    memcpy(b.uuids[r], m->rows[r]->uuid.data, LIPSYNC_UUID_LEN);
  if (t->empty) {
    /* Nothing to look up: no item of mine existed. */
    items_sort_uuids(b.uuids, b.n);
  } else if (batch_run(s, t, &b)) {
    goto out;
  }
  for (size_t r = 0; r < m->n_rows && !s->result; r++) {
    const Lipsync__Row *in = m->rows[r];
    size_t i = batch_index(&b, in->uuid.data);
    apply_row(s, t, in, batch_visible(&b, in->uuid.data),
              i < b.n && b.state[i] != MINE_NONE ? &b.mine[i] : NULL, values);
  }
  if (!s->result && s->progress)
    s->progress(s->progress_user, t->name, t->rows_sent, t->rows_received);
out:
  batch_free(&b);
  return s->result;
}

/* ------------------------------------------------------------------ */
/* producing my turn                                                    */
/* ------------------------------------------------------------------ */

static Lipsync__Version *encode_version(arena *a, const lipsync_version *v,
                                        bool short_zero) {
  Lipsync__Version *out = arena_alloc(a, sizeof *out);
  if (!out)
    return NULL;
  lipsync__version__init(out);
  if (short_zero && version_is_zero(v))
    return out; /* the short form of a zero base (spec LS-POLICY-5) */
  uint8_t *site = arena_memdup(a, v->site, LIPSYNC_SITE_LEN);
  if (!site)
    return NULL;
  out->clock = v->clock;
  out->site.data = site;
  out->site.len = LIPSYNC_SITE_LEN;
  return out;
}

/* The version, deleted flag and (a client's, when it differs) base of a
 * state. Returns 0 or -1 on no memory. */
static int encode_state(lipsync_session *s, const lipsync_version *version,
                        const lipsync_version *base, bool deleted,
                        Lipsync__Version **v_out, protobuf_c_boolean *d_out,
                        Lipsync__Version **b_out) {
  *v_out = encode_version(&s->send_arena, version, false);
  *d_out = deleted;
  if (!s->is_server && lipsync_version_cmp(version, base) != 0) {
    *b_out = encode_version(&s->send_arena, base, true);
    if (!*b_out)
      return -1;
  }
  return *v_out ? 0 : -1;
}

static Lipsync__Range *new_range(lipsync_session *s, const uint8_t *lower,
                                 const uint8_t *upper) {
  Lipsync__Range *r = arena_alloc(&s->send_arena, sizeof *r);
  if (!r)
    return NULL;
  lipsync__range__init(r);
  if (lower) {
    r->lower.data = arena_memdup(&s->send_arena, lower, LIPSYNC_UUID_LEN);
    r->lower.len = LIPSYNC_UUID_LEN;
  }
  if (upper) {
    r->upper.data = arena_memdup(&s->send_arena, upper, LIPSYNC_UUID_LEN);
    r->upper.len = LIPSYNC_UUID_LEN;
  }
  return (lower && !r->lower.data) || (upper && !r->upper.data) ? NULL : r;
}

static Lipsync__Range *fingerprint_range(lipsync_session *s,
                                         const uint8_t *lower,
                                         const uint8_t *upper,
                                         const canon_fp *acc) {
  Lipsync__Range *r = new_range(s, lower, upper);
  Lipsync__Fingerprint *fp = arena_alloc(&s->send_arena, sizeof *fp);
  uint8_t *value = arena_alloc(&s->send_arena, LIPSYNC_DIGEST_LEN);
  if (!r || !fp || !value)
    return NULL;
  lipsync__fingerprint__init(fp);
  canon_fp_final(acc, value);
  fp->value.data = value;
  fp->value.len = LIPSYNC_DIGEST_LEN;
  fp->count = acc->count;
  r->summary_case = LIPSYNC__RANGE__SUMMARY_FINGERPRINT;
  r->fingerprint = fp;
  return r;
}

/* An Item message of my item |it|. */
static Lipsync__Item *encode_item(lipsync_session *s, const lipsync_item *it) {
  Lipsync__Item *out = arena_alloc(&s->send_arena, sizeof *out);
  if (!out)
    return NULL;
  lipsync__item__init(out);
  out->uuid.data = arena_memdup(&s->send_arena, it->uuid, LIPSYNC_UUID_LEN);
  out->uuid.len = LIPSYNC_UUID_LEN;
  if (!out->uuid.data ||
      encode_state(s, &it->version, &it->base, it->deleted != 0, &out->version,
                   &out->deleted, &out->base_version))
    return NULL;
  return out;
}

/* The next item of the open cursor into |*it|: 1, 0 at the end, or fails
 * the session. A peeked item, kept by the producer, comes first. */
static int next_item(lipsync_session *s, sync_table *t, lipsync_item *it) {
  turn_producer *g = &s->gen;
  if (g->has_peek) {
    *it = g->peek;
    g->has_peek = false;
    return 1;
  }
  int rc = items_next(&g->items, it, NULL);
  return rc < 0 ? store_failed(s, t, rc) : rc;
}

/* Splits |p| into up to SPLIT_WAYS ranges of nearly equal numbers of my
 * items, each with its fingerprint, in one scan. */
static int describe_split(lipsync_session *s, sync_table *t,
                          const pending_range *p, Lipsync__Range **out,
                          size_t room) {
  uint64_t n = p->count, k = n < SPLIT_WAYS ? n : SPLIT_WAYS;
  const uint8_t *lower = p->has_lower ? p->lower : NULL;
  const uint8_t *upper = p->has_upper ? p->upper : NULL;
  uint8_t bound[LIPSYNC_UUID_LEN];
  lipsync_item it;
  uint8_t digest[LIPSYNC_DIGEST_LEN];
  canon_fp acc;
  uint64_t seen = 0;
  size_t b = 0;
  int rc;
  if (room < k)
    return 0;
  if ((rc = items_scan(&t->view, lower, upper, &s->gen.items)) != 0)
    return store_failed(s, t, rc);
  canon_fp_init(&acc);
  while ((rc = items_next(&s->gen.items, &it, digest)) > 0) {
    /* Bucket b ends before item (b + 1) * n / k. */
    if (b + 1 < k && seen == (b + 1) * n / k && acc.count > 0) {
      if (!(out[b] = fingerprint_range(s, b ? bound : lower, it.uuid, &acc))) {
        items_close(&s->gen.items);
        return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
      }
      memcpy(bound, it.uuid, LIPSYNC_UUID_LEN);
      canon_fp_init(&acc);
      b++;
    }
    canon_fp_add(&acc, digest);
    seen++;
  }
  items_close(&s->gen.items);
  if (rc < 0)
    return store_failed(s, t, rc);
  if (!(out[b] = fingerprint_range(s, b ? bound : lower, upper, &acc)))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  return (int)b + 1;
}

/* Appends item lists of |p|, from where the producer stands, while the
 * frame has room: each at most |*items_left| items, consecutive ranges.
 * gen.sub_active stays set while |p| has more to list. */
static int describe_items(lipsync_session *s, sync_table *t,
                          const pending_range *p, Lipsync__Range **out,
                          size_t room, size_t *items_left) {
  turn_producer *g = &s->gen;
  const uint8_t *lower = p->has_lower ? p->lower : NULL;
  const uint8_t *upper = p->has_upper ? p->upper : NULL;
  int added = 0, rc;
  if (!g->sub_active) {
    if ((rc = items_scan(&t->view, lower, upper, &g->items)) != 0)
      return store_failed(s, t, rc);
    g->sub_active = true;
    g->has_peek = false;
    g->has_bound = false;
  }
  while ((size_t)added<room && * items_left> 0) {
    Lipsync__Item **ptrs =
        arena_alloc(&s->send_arena, (*items_left + 1) * sizeof *ptrs);
    Lipsync__ItemList *list = arena_alloc(&s->send_arena, sizeof *list);
    size_t n = 0;
    lipsync_item it;
    if (!ptrs || !list)
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    while (n < *items_left && (rc = next_item(s, t, &it)) > 0)
      if (!(ptrs[n++] = encode_item(s, &it)))
        return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    if (s->result)
      return s->result;
    /* The list ends at the next item, if any, which the next list begins
     * with. */
    bool more = n == *items_left && (rc = next_item(s, t, &it)) > 0;
    if (s->result)
      return s->result;
    Lipsync__Range *r =
        new_range(s, g->has_bound ? g->bound : lower, more ? it.uuid : upper);
    if (!r)
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    lipsync__item_list__init(list);
    list->n_items = n;
    list->items = ptrs;
    r->summary_case = LIPSYNC__RANGE__SUMMARY_ITEMS;
    r->items = list;
    out[added++] = r;
    *items_left -= n;
    if (!more) {
      items_close(&g->items);
      g->sub_active = false;
      break;
    }
    g->peek = it;
    g->has_peek = true;
    memcpy(g->bound, it.uuid, LIPSYNC_UUID_LEN);
    g->has_bound = true;
  }
  return added;
}

static int produce_ranges(lipsync_session *s, sync_table *t, size_t index) {
  turn_producer *g = &s->gen;
  Lipsync__Range **ranges =
      arena_alloc(&s->send_arena, RANGES_PER_FRAME * sizeof *ranges);
  size_t n = 0, items_left = ITEMS_PER_FRAME;
  if (!ranges)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  while (g->pos < t->nranges && n < RANGES_PER_FRAME && items_left > 0) {
    const pending_range *p = &t->ranges[g->pos];
    const uint8_t *lower = p->has_lower ? p->lower : NULL;
    const uint8_t *upper = p->has_upper ? p->upper : NULL;
    int added;
    if (p->kind == PENDING_FINGERPRINT) {
      canon_fp acc;
      int rc = items_fingerprint(&t->view, lower, upper, &acc);
      if (rc)
        return store_failed(s, t, rc);
      ranges[n] = fingerprint_range(s, lower, upper, &acc);
      added =
          ranges[n] ? 1 : session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    } else if (p->kind == PENDING_SPLIT) {
      added = describe_split(s, t, p, ranges + n, RANGES_PER_FRAME - n);
    } else {
      added = describe_items(s, t, p, ranges + n, RANGES_PER_FRAME - n,
                             &items_left);
    }
    if (added < 0)
      return s->result;
    if (added == 0 && n > 0)
      break; /* does not fit: next frame */
    n += (size_t)added;
    if (!g->sub_active)
      g->pos++;
  }
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__Ranges m = LIPSYNC__RANGES__INIT;
  m.table = (uint32_t)index;
  m.n_ranges = n;
  m.ranges = ranges;
  f.body_case = LIPSYNC__FRAME__BODY_RANGES;
  f.ranges = &m;
  g->sent_requests = true;
  return session_emit(s, &f, t);
}

/* My changed items (spec LS-INC-10 to LS-INC-12), a frame's worth: the
 * server leaves out those the client listed. Sets gen.pos once all are
 * listed. */
static int produce_changes(lipsync_session *s, sync_table *t, size_t index) {
  turn_producer *g = &s->gen;
  Lipsync__Item **items =
      arena_alloc(&s->send_arena, (ITEMS_PER_FRAME + 1) * sizeof *items);
  lipsync_item it;
  size_t n = 0;
  int rc = 0;
  if (!items)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  if (!g->sub_active) {
    if ((rc = items_changes(&t->view, &t->since, &g->items)) != 0)
      return store_failed(s, t, rc);
    g->sub_active = true;
    g->has_peek = false;
  }
  while (n < ITEMS_PER_FRAME && (rc = next_item(s, t, &it)) > 0) {
    if (s->is_server && uuid_set_has(&t->peer_changes, it.uuid))
      continue;
    if (!(items[n++] = encode_item(s, &it)))
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  }
  if (s->result)
    return s->result;
  if (rc == 0) { /* all listed */
    items_close(&g->items);
    g->sub_active = false;
    g->pos = 1;
  }
  if (n == 0)
    return 0; /* no change: the server's turn may be quiet */
  g->sent_requests = true;
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__Changes m = LIPSYNC__CHANGES__INIT;
  m.table = (uint32_t)index;
  m.n_items = n;
  m.items = items;
  f.body_case = LIPSYNC__FRAME__BODY_CHANGES;
  f.changes = &m;
  return session_emit(s, &f, t);
}

static int produce_needs(lipsync_session *s, sync_table *t, size_t index) {
  turn_producer *g = &s->gen;
  size_t n = t->nneeds - g->pos;
  if (n > NEEDS_PER_FRAME)
    n = NEEDS_PER_FRAME;
  ProtobufCBinaryData *uuids = arena_alloc(&s->send_arena, n * sizeof *uuids);
  if (!uuids)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    uuids[i].data = t->needs[g->pos + i];
    uuids[i].len = LIPSYNC_UUID_LEN;
  }
  g->pos += n;
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__Need m = LIPSYNC__NEED__INIT;
  m.table = (uint32_t)index;
  m.n_uuids = n;
  m.uuids = uuids;
  f.body_case = LIPSYNC__FRAME__BODY_NEED;
  f.need = &m;
  g->sent_requests = true;
  return session_emit(s, &f, t);
}

/* A Row of my row |row| (with its item's version and base), or of the
 * tombstone |it| when |row| is NULL, in the send arena. */
static Lipsync__Row *encode_row(lipsync_session *s, const lipsync_item *it,
                                const lipsync_row *row, size_t *size) {
  arena *a = &s->send_arena;
  Lipsync__Row *r = arena_alloc(a, sizeof *r);
  if (!r)
    return NULL;
  lipsync__row__init(r);
  if (!row) {
    if (encode_state(s, &it->version, &it->base, true, &r->version, &r->deleted,
                     &r->base_version))
      return NULL;
    r->uuid.data = arena_memdup(a, it->uuid, LIPSYNC_UUID_LEN);
    r->uuid.len = LIPSYNC_UUID_LEN;
    *size = 2 * LIPSYNC_UUID_LEN + 64;
    return r->uuid.data ? r : NULL;
  }
  if (encode_state(s, &row->version, &row->base, false, &r->version,
                   &r->deleted, &r->base_version))
    return NULL;
  Lipsync__Value *vals = arena_alloc(a, (row->nvalues + 1) * sizeof *vals);
  Lipsync__Value **ptrs = arena_alloc(a, (row->nvalues + 1) * sizeof *ptrs);
  uint8_t *uuid = arena_memdup(a, row->uuid, LIPSYNC_UUID_LEN);
  if (!vals || !ptrs || !uuid)
    return NULL;
  r->uuid.data = uuid;
  r->uuid.len = LIPSYNC_UUID_LEN;
  *size = LIPSYNC_UUID_LEN + 64;
  for (size_t i = 0; i < row->nvalues; i++) {
    const lipsync_value *v = &row->values[i];
    Lipsync__Value *out = &vals[i];
    lipsync__value__init(out);
    ptrs[i] = out;
    *size += canon_value_size(v) + 2;
    switch (v->type) {
    case LIPSYNC_INTEGER:
      out->kind_case = LIPSYNC__VALUE__KIND_INTEGER;
      out->integer = v->u.integer;
      break;
    case LIPSYNC_REAL:
      out->kind_case = LIPSYNC__VALUE__KIND_REAL;
      out->real = v->u.real;
      break;
    case LIPSYNC_TEXT:
    case LIPSYNC_BLOB: {
      ProtobufCBinaryData *d =
          v->type == LIPSYNC_TEXT ? &out->text : &out->blob;
      out->kind_case = v->type == LIPSYNC_TEXT ? LIPSYNC__VALUE__KIND_TEXT
                                               : LIPSYNC__VALUE__KIND_BLOB;
      d->len = v->u.bytes.len;
      d->data = arena_memdup(a, v->u.bytes.data, v->u.bytes.len);
      if (!d->data)
        return NULL;
      break;
    }
    default:
      out->kind_case = LIPSYNC__VALUE__KIND_NULL;
      out->null = 1;
      break;
    }
  }
  r->n_values = row->nvalues;
  r->values = ptrs;
  return r;
}

/* Opens a cursor over the rows to push from gen.pos on: a range push is one
 * scan; consecutive single pushes of live rows are one lookup of up to
 * LOOKUP_BATCH UUIDs (one round trip for a database across a network). */
static int open_pushes(lipsync_session *s, sync_table *t) {
  turn_producer *g = &s->gen;
  const push *p = &t->pushes[g->pos];
  if (p->range) {
    g->cursor_end = g->pos + 1;
    return store_scan(s->store, t->handle, p->has_lower ? p->lower : NULL,
                      p->has_upper ? p->upper : NULL, &g->cursor);
  }
  size_t k = 0, end = g->pos;
  if (!s->lookup && !(s->lookup = malloc(LOOKUP_BATCH * LIPSYNC_UUID_LEN)))
    return LIPSYNC_ERR_NOMEM;
  while (end < t->npushes && !t->pushes[end].range && k < LOOKUP_BATCH) {
    if (!t->pushes[end].item.deleted)
      memcpy(s->lookup + k++ * LIPSYNC_UUID_LEN, t->pushes[end].item.uuid,
             LIPSYNC_UUID_LEN);
    end++;
  }
  g->cursor_end = end;
  items_sort_uuids((uint8_t(*)[LIPSYNC_UUID_LEN])s->lookup, k);
  return store_scan_uuids(s->store, t->handle, s->lookup, k, &g->cursor);
}

/* Reads the next live row to push into |row|: 1 if there is one, 0 when
 * every push is sent, or an error. A range scan also meets rows the peer
 * sent in this session, once written: those it has. */
static int next_push(lipsync_session *s, sync_table *t, lipsync_row *row) {
  turn_producer *g = &s->gen;
  int rc;
  for (;;) {
    if (g->cursor) {
      while ((rc = store_next(s->store, g->cursor, row)) > 0)
        if (!uuid_set_has(&t->applied, row->uuid))
          return 1;
      if (rc < 0)
        return rc;
      store_close_cursor(s->store, g->cursor);
      g->cursor = NULL;
      g->pos = g->cursor_end;
    }
    if (g->pos >= t->npushes)
      return 0;
    if ((rc = open_pushes(s, t)) != 0)
      return rc;
  }
}

/* A row we cannot send intact fails the sync here, with the reason, rather
 * than at the peer (spec 7.3, 9.1). */
static int check_outgoing(lipsync_session *s, const sync_table *t,
                          const lipsync_row *row) {
  char text[37];
  size_t size = LIPSYNC_UUID_LEN + 4;
  for (size_t i = 0; i < row->nvalues; i++) {
    const lipsync_value *v = &row->values[i];
    size += canon_value_size(v) + 8;
    if (v->type == LIPSYNC_TEXT &&
        !canon_utf8_valid(v->u.bytes.data, v->u.bytes.len)) {
      lipsync_uuid_format(row->uuid, text);
      return session_fail(s, LIPSYNC_ERR_INVALID_VALUE,
                          "table %s: row %s: column %s holds TEXT that is "
                          "not valid UTF-8",
                          t->name, text, t->handle->columns[i].name);
    }
  }
  if (size > LIPSYNC_MAX_FRAME - 64) {
    lipsync_uuid_format(row->uuid, text);
    return session_fail(s, LIPSYNC_ERR_INVALID_VALUE,
                        "table %s: row %s is too large for one frame "
                        "(%zu bytes, at most %u)",
                        t->name, text, size, LIPSYNC_MAX_FRAME);
  }
  return 0;
}

static int emit_rows(lipsync_session *s, sync_table *t, size_t index,
                     Lipsync__Row **rows, size_t n);

/* A cursor over my items of the pushed range |p| that may be tombstones:
 * every tombstone of the table for the whole of it (an index of few
 * entries), else the range's items. */
static int open_range_tombstones(sync_table *t, const push *p,
                                 item_cursor *out) {
  if (p->has_lower || p->has_upper)
    return items_scan(&t->view, p->has_lower ? p->lower : NULL,
                      p->has_upper ? p->upper : NULL, out);
  out->view = &t->view;
  return store_scan_tombstones(t->view.store, t->handle, UINT64_MAX,
                               &out->cursor);
}

/* The next tombstone to send: those of single pushes, those in pushed
 * ranges (read from the store: all tombstones for the whole table, else
 * the range's items), then the implicit tombstones (spec 8.7). 1 with
 * |*out| set, 0 when done, or fails the session. */
static int next_tombstone(lipsync_session *s, sync_table *t,
                          lipsync_item *out) {
  turn_producer *g = &s->gen;
  int rc;
  while (g->pos < t->npushes) {
    const push *p = &t->pushes[g->pos];
    if (!p->range) {
      g->pos++;
      if (p->item.deleted) {
        *out = p->item;
        return 1;
      }
      continue;
    }
    if (!g->sub_active) {
      if ((rc = open_range_tombstones(t, p, &g->items)) != 0)
        return store_failed(s, t, rc);
      g->sub_active = true;
    }
    while ((rc = items_next(&g->items, out, NULL)) > 0)
      if (out->deleted && !uuid_set_has(&t->applied, out->uuid))
        return 1;
    items_close(&g->items);
    g->sub_active = false;
    if (rc < 0)
      return store_failed(s, t, rc);
    g->pos++;
  }
  if (g->pos < t->npushes + t->nimplicit) {
    side_item t0;
    decide_implicit_tombstone(&t->ctx, &t0);
    memset(out, 0, sizeof *out);
    memcpy(out->uuid, t->implicit[g->pos++ - t->npushes], LIPSYNC_UUID_LEN);
    out->version = t0.version;
    out->base = t0.version;
    out->deleted = 1;
    return 1;
  }
  return 0;
}

/* The tombstones to send, before any live row of the turn (spec 9.1). */
static int produce_tombstones(lipsync_session *s, sync_table *t, size_t index) {
  Lipsync__Row **rows =
      arena_alloc(&s->send_arena, ROWS_PER_FRAME * sizeof *rows);
  size_t n = 0, size;
  lipsync_item it;
  int rc = 1;
  if (!rows)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  while (n < ROWS_PER_FRAME && (rc = next_tombstone(s, t, &it)) > 0)
    if (!(rows[n++] = encode_row(s, &it, NULL, &size)))
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  if (rc < 0)
    return s->result;
  if (rc == 0)
    s->gen.pos = t->npushes + t->nimplicit; /* done */
  return emit_rows(s, t, index, rows, n);
}

static int produce_rows(lipsync_session *s, sync_table *t, size_t index) {
  Lipsync__Row **rows =
      arena_alloc(&s->send_arena, ROWS_PER_FRAME * sizeof *rows);
  size_t n = 0, bytes = 0;
  lipsync_row row;
  int rc = 0;
  /* fault injection (conformance self-test): is this the table's first Rows
   * frame of the turn? Then its first row is dropped below. */
  bool skip = fault_on("skip-row") && !s->gen.pos && !s->gen.cursor;
  if (!rows)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  while (n < ROWS_PER_FRAME && bytes < ROW_BYTES_PER_FRAME &&
         (rc = next_push(s, t, &row)) > 0) {
    size_t size;
    if (check_outgoing(s, t, &row))
      return s->result;
    if (!(rows[n] = encode_row(s, NULL, &row, &size)))
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    n++;
    bytes += size;
  }
  if (rc < 0)
    return store_failed(s, t, rc);
  if (skip && n > 0) /* fault injection: conformance self-test */
    rows++, n--;
  return emit_rows(s, t, index, rows, n);
}

static int emit_rows(lipsync_session *s, sync_table *t, size_t index,
                     Lipsync__Row **rows, size_t n) {
  if (n == 0)
    return 0;
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__Rows m = LIPSYNC__ROWS__INIT;
  m.table = (uint32_t)index;
  m.n_rows = n;
  m.rows = rows;
  f.body_case = LIPSYNC__FRAME__BODY_ROWS;
  f.rows = &m;
  if (session_emit(s, &f, t))
    return s->result;
  t->rows_sent += n;
  for (size_t i = 0; i < n; i++)
    t->deletes_sent += rows[i]->deleted != 0;
  if (s->progress)
    s->progress(s->progress_user, t->name, t->rows_sent, t->rows_received);
  return 0;
}

static int end_turn(lipsync_session *s) {
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__EndTurn m = LIPSYNC__END_TURN__INIT;
  f.body_case = LIPSYNC__FRAME__BODY_END_TURN;
  f.end_turn = &m;
  if (session_emit(s, &f, NULL))
    return s->result;
  for (size_t i = 0; i < s->ntables; i++) {
    s->tables[i].nranges = 0;
    s->tables[i].nneeds = 0;
    s->tables[i].npushes = 0;
    s->tables[i].nimplicit = 0;
  }
  /* The client's first turn is never quiet (spec LS-INC-11); after a
   * quiet turn the peer owes us its Verify, not another turn. */
  bool requests = s->gen.sent_requests || s->first_turn;
  s->first_turn = false;
  s->turns_sent++;
  s->state = requests ? ST_PEER_TURN : ST_WAIT_VERIFY;
  s->peer_turn_requests = false;
  s->verify_sent = false;
  return 0;
}

/* How many steps of |stage| table |t| has for this turn. */
static size_t stage_size(const lipsync_session *s, const sync_table *t,
                         int stage) {
  switch (stage) {
  case 0: /* the changes are one step, listed in the first turn only */
    return t->incremental ? (s->turns_sent == 0) : t->nranges;
  case 1:
    return t->nneeds;
  case 2:
    return t->npushes + t->nimplicit;
  default:
    return t->npushes;
  }
}

int recon_produce(lipsync_session *s) {
  turn_producer *g = &s->gen;
  while (s->state == ST_MY_TURN && s->out.len < OUT_TARGET) {
    if (g->table == s->ntables)
      return end_turn(s);
    sync_table *t = &s->tables[g->table];
    if (g->pos < stage_size(s, t, g->stage)) {
      int rc = g->stage == 0 ? (t->incremental ? produce_changes(s, t, g->table)
                                               : produce_ranges(s, t, g->table))
               : g->stage == 1 ? produce_needs(s, t, g->table)
               : g->stage == 2 ? produce_tombstones(s, t, g->table)
                               : produce_rows(s, t, g->table);
      arena_reset(&s->send_arena);
      if (rc)
        return rc;
      continue;
    }
    g->pos = 0;
    g->sub_active = false;
    if (++g->stage == 4) {
      g->stage = 0;
      g->table++;
    }
  }
  return 0;
}
