/*
 * reconcile.c: turns of range-based reconciliation and row transfer (spec
 * sections 8 and 9).
 *
 * While the peer holds the turn, each frame it sends is answered with work
 * for my next turn, kept per table as small descriptions rather than bytes:
 * ranges to describe (intervals of my item index), UUIDs to ask for, and
 * spans of my items to send. When my turn comes, recon_produce() turns that
 * work into frames a megabyte at a time, reading rows from the store as the
 * transport drains, so no side holds a table's rows in memory.
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
#define FETCH_SPAN_MAX 64 /* longer spans are read with one range scan */
#define NOT_FOUND ((size_t)-1)
#define LOOKUP_BATCH 1024 /* UUIDs per batched lookup */
/* Live rows held back for after the tombstones, at most (spec 9.3); past
 * this they are applied as they come. */
#define DEFERRED_MAX (64u * 1024u * 1024u)

void recon_table_free(lipsync_session *s, sync_table *t) {
  (void)s;
  free(t->name);
  items_free(&t->items);
  free(t->ranges);
  free(t->needs);
  free(t->pushes);
  free(t->implicit);
  bytebuf_free(&t->deferred);
  memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------ */
/* work queues                                                          */
/* ------------------------------------------------------------------ */

static int add_push(lipsync_session *s, sync_table *t, size_t lo, size_t hi) {
  if (lo >= hi)
    return 0;
  if (t->npushes && t->pushes[t->npushes - 1].hi == lo) {
    t->pushes[t->npushes - 1].hi = hi;
    return 0;
  }
  if (vec_reserve((void **)&t->pushes, &t->cap_pushes, t->npushes + 1,
                  sizeof *t->pushes))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  t->pushes[t->npushes++] = (span){lo, hi};
  return 0;
}

static int add_need(lipsync_session *s, sync_table *t, const uint8_t *uuid) {
  if (vec_reserve((void **)&t->needs, &t->cap_needs, t->nneeds + 1,
                  sizeof *t->needs))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  memcpy(t->needs[t->nneeds++], uuid, LIPSYNC_UUID_LEN);
  return 0;
}

static int add_range(lipsync_session *s, sync_table *t, const uint8_t *lower,
                     const uint8_t *upper, pending_kind kind, size_t lo,
                     size_t hi) {
  if (vec_reserve((void **)&t->ranges, &t->cap_ranges, t->nranges + 1,
                  sizeof *t->ranges))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  pending_range *p = &t->ranges[t->nranges++];
  memset(p, 0, sizeof *p);
  p->has_lower = lower != NULL;
  p->has_upper = upper != NULL;
  if (lower)
    memcpy(p->lower, lower, LIPSYNC_UUID_LEN);
  if (upper)
    memcpy(p->upper, upper, LIPSYNC_UUID_LEN);
  p->kind = kind;
  p->lo = lo;
  p->hi = hi;
  return 0;
}

static int add_implicit(lipsync_session *s, sync_table *t,
                        const uint8_t *uuid) {
  if (vec_reserve((void **)&t->implicit, &t->cap_implicit, t->nimplicit + 1,
                  sizeof *t->implicit))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  memcpy(t->implicit[t->nimplicit++], uuid, LIPSYNC_UUID_LEN);
  return 0;
}

int recon_prepare(lipsync_session *s) {
  for (size_t i = 0; i < s->ntables; i++) {
    sync_table *t = &s->tables[i];
    t->ctx.policy = s->policy;
    t->ctx.horizon = s->horizon;
    t->ctx.stale = t->last_sync != 0 && t->last_sync < s->horizon;
    t->max_clock = s->server_clock; /* observed too (spec LS-VERSION-3) */
    if (items_hide_old_tombstones(&t->items, s->horizon, !s->is_server))
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  }
  return 0;
}

/* The client's first turn: every table's whole UUID space. */
int recon_start(lipsync_session *s) {
  pending_kind kind = s->split_threshold ? PENDING_FINGERPRINT : PENDING_ITEMS;
  for (size_t i = 0; i < s->ntables; i++) {
    sync_table *t = &s->tables[i];
    if (add_range(s, t, NULL, NULL, kind, 0, t->items.n))
      return s->result;
  }
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

static int only_mine(lipsync_session *s, sync_table *t, size_t lo, size_t hi);

static int on_fingerprint(lipsync_session *s, sync_table *t,
                          const uint8_t *lower, const uint8_t *upper, size_t lo,
                          size_t hi, const Lipsync__Fingerprint *fp) {
  canon_fp mine;
  uint8_t value[LIPSYNC_DIGEST_LEN];
  if (fp->value.len != LIPSYNC_DIGEST_LEN)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: fingerprint is %zu bytes, not %d", t->name,
                        fp->value.len, LIPSYNC_DIGEST_LEN);
  items_fingerprint(&t->items, lo, hi, &mine);
  canon_fp_final(&mine, value);
  if (mine.count == fp->count &&
      memcmp(value, fp->value.data, LIPSYNC_DIGEST_LEN) == 0)
    return 0; /* this range is in sync */
  if (fp->count == 0)
    return only_mine(s, t, lo, hi); /* the peer has nothing here */
  size_t n = hi - lo;
  pending_kind kind = (s->split_threshold == 0 || n <= s->split_threshold)
                          ? PENDING_ITEMS
                          : PENDING_SPLIT;
  return add_range(s, t, lower, upper, kind, lo, hi);
}

/* My item |it| as a side of the decision. */
static void my_side(const sync_table *t, const item *it, side_item *out) {
  item_version(it, &out->version);
  item_base(&t->items, it, &out->base);
  out->deleted = (it->flags & ITEM_DELETED) != 0;
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

/* The decision between my item |mine| and the peer's |peer| (either may
 * be NULL), from the client's and the server's points of view. */
static decision decide_pair(const lipsync_session *s, const sync_table *t,
                            const side_item *mine, const side_item *peer) {
  return s->is_server ? decide(&t->ctx, peer, mine)
                      : decide(&t->ctx, mine, peer);
}

static decision my_win(const lipsync_session *s) {
  return s->is_server ? DECIDE_SERVER : DECIDE_CLIENT;
}

/* Applies the implicit tombstone T0 to my item |k| (a stale client). */
static int apply_implicit(lipsync_session *s, sync_table *t, size_t k) {
  side_item t0;
  lipsync_row row;
  decide_implicit_tombstone(&t->ctx, &t0);
  memset(&row, 0, sizeof row);
  memcpy(row.uuid, t->items.v[k].uuid, LIPSYNC_UUID_LEN);
  row.version = t0.version;
  row.deleted = 1;
  int rc = store_update(s->store, t->handle, &row);
  if (rc)
    return session_fail(s, rc, "%s", store_errmsg(s->store));
  t->items.v[k].flags |= ITEM_APPLIED;
  return 0; /* below the horizon: not part of the final state */
}

/* My items [lo, hi), which the peer lacks: sent, unless a stale client's
 * item loses to the implicit tombstone. */
static int only_mine(lipsync_session *s, sync_table *t, size_t lo, size_t hi) {
  if (s->is_server || !t->ctx.stale)
    return add_push(s, t, lo, hi);
  for (size_t k = lo; k < hi; k++) {
    side_item mine;
    my_side(t, &t->items.v[k], &mine);
    int rc = decide_pair(s, t, &mine, NULL) == DECIDE_CLIENT
                 ? add_push(s, t, k, k + 1)
                 : apply_implicit(s, t, k);
    if (rc)
      return rc;
  }
  return 0;
}

/* Compares the peer's item list with my items [lo, hi) of the same range
 * and queues, for each UUID, what the decision asks of me: send my row,
 * ask for the peer's, or count a conflict (spec 8.3, 8.6). */
static int on_item_list(lipsync_session *s, sync_table *t, const uint8_t *lower,
                        const uint8_t *upper, size_t lo, size_t hi,
                        const Lipsync__ItemList *list) {
  size_t i = lo;
  const uint8_t *prev = NULL;
  for (size_t k = 0; k < list->n_items; k++) {
    const Lipsync__Item *it = list->items[k];
    const uint8_t *uuid = it->uuid.data;
    side_item peer, mine;
    if (it->uuid.len != LIPSYNC_UUID_LEN)
      return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                          "table %s: item with a %zu-byte UUID", t->name,
                          it->uuid.len);
    if (peer_side(s, t, it->version, it->deleted, it->base_version, &peer))
      return s->result;
    if ((prev && memcmp(prev, uuid, LIPSYNC_UUID_LEN) >= 0) ||
        (lower && memcmp(uuid, lower, LIPSYNC_UUID_LEN) < 0) ||
        !uuid_below(uuid, upper))
      return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                          "table %s: item list is not in ascending UUID "
                          "order inside its range",
                          t->name);
    prev = uuid;
    size_t start = i;
    while (i < hi && memcmp(t->items.v[i].uuid, uuid, LIPSYNC_UUID_LEN) < 0)
      i++;
    if (only_mine(s, t, start, i))
      return s->result;
    bool both =
        i < hi && memcmp(t->items.v[i].uuid, uuid, LIPSYNC_UUID_LEN) == 0;
    if (both)
      my_side(t, &t->items.v[i], &mine);
    decision d = decide_pair(s, t, both ? &mine : NULL, &peer);
    int rc = 0;
    if (d == DECIDE_CONFLICT)
      t->conflicts++;
    else if (d == my_win(s))
      rc = both ? add_push(s, t, i, i + 1) : add_implicit(s, t, uuid);
    else if (d != DECIDE_NONE)
      rc = add_need(s, t, uuid);
    if (rc)
      return rc;
    if (both)
      i++;
  }
  return only_mine(s, t, i, hi);
}

int recon_on_ranges(lipsync_session *s, const Lipsync__Ranges *m) {
  sync_table *t = frame_table(s, m->table, "Ranges");
  if (!t)
    return s->result;
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
    size_t lo = items_lower_bound(&t->items, lower);
    size_t hi = upper ? items_lower_bound(&t->items, upper) : t->items.n;
    int rc;
    if (rg->summary_case == LIPSYNC__RANGE__SUMMARY_FINGERPRINT)
      rc = on_fingerprint(s, t, lower, upper, lo, hi, rg->fingerprint);
    else if (rg->summary_case == LIPSYNC__RANGE__SUMMARY_ITEMS)
      rc = on_item_list(s, t, lower, upper, lo, hi, rg->items);
    else
      rc = session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: range without a summary", t->name);
    if (rc)
      return rc;
  }
  return 0;
}

int recon_on_need(lipsync_session *s, const Lipsync__Need *m) {
  sync_table *t = frame_table(s, m->table, "Need");
  if (!t)
    return s->result;
  s->peer_turn_requests = true;
  for (size_t k = 0; k < m->n_uuids; k++) {
    size_t pos = m->uuids[k].len == LIPSYNC_UUID_LEN
                     ? items_find(&t->items, m->uuids[k].data)
                     : NOT_FOUND;
    if (pos == NOT_FOUND)
      return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                          "table %s: Need names a row this side does not "
                          "have",
                          t->name);
    if (add_push(s, t, pos, pos + 1))
      return s->result;
  }
  return 0;
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

/* Writes the peer's row |in| (checked), its values decoded into |values|,
 * into the store. */
static int write_row(lipsync_session *s, sync_table *t, const Lipsync__Row *in,
                     const lipsync_value *values) {
  lipsync_row row;
  memset(&row, 0, sizeof row);
  memcpy(row.uuid, in->uuid.data, LIPSYNC_UUID_LEN);
  row.nvalues = in->n_values;
  row.values = values;
  version_from_wire(in->version, &row.version);
  row.deleted = in->deleted;
  int rc = items_find(&t->items, row.uuid) != NOT_FOUND ||
                   items_hidden(&t->items, row.uuid)
               ? store_update(s->store, t->handle, &row)
               : store_insert(s->store, t->handle, &row);
  return rc ? session_fail(s, rc, "%s", store_errmsg(s->store)) : 0;
}

/* Holds the live row |in| back until the end of the reconciliation: a row
 * deleted and another inserted with the same value of a UNIQUE column may
 * arrive in either order, in different turns, and the delete must come
 * first (spec 9.3). A table empty when the session began has no row to
 * delete, and so does not wait; nor does anything past DEFERRED_MAX. */
static bool defer_row(lipsync_session *s, sync_table *t, const Lipsync__Row *in,
                      int *rc) {
  *rc = 0;
  if (in->deleted || t->items.n == 0 || t->deferred.len >= DEFERRED_MAX)
    return false;
  size_t n = lipsync__row__get_packed_size(in);
  uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                    (uint8_t)n};
  if (bytebuf_append(&t->deferred, len, 4) ||
      bytebuf_reserve(&t->deferred, n)) {
    *rc = session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    return true;
  }
  t->deferred.len += lipsync__row__pack(in, t->deferred.data + t->deferred.len);
  return true;
}

int recon_apply_deferred(lipsync_session *s) {
  for (size_t i = 0; i < s->ntables; i++) {
    sync_table *t = &s->tables[i];
    lipsync_value *values = calloc(t->handle->ncolumns + 1, sizeof *values);
    size_t off = 0;
    if (!values)
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    while (off + 4 <= t->deferred.len) {
      const uint8_t *p = t->deferred.data + off;
      size_t n =
          (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
      Lipsync__Row *in = lipsync__row__unpack(NULL, n, p + 4);
      off += 4 + n;
      int rc = !in ? session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory")
               : decode_values(s, t, in, values) ? s->result
                                                 : write_row(s, t, in, values);
      if (in)
        lipsync__row__free_unpacked(in, NULL);
      if (rc) {
        free(values);
        return rc;
      }
    }
    free(values);
    bytebuf_free(&t->deferred);
  }
  return 0;
}

/* Checks that the peer's row |in| wins over what I hold (spec 8.6), and
 * applies it, or holds it back (defer_row). */
static int apply_row(lipsync_session *s, sync_table *t, const Lipsync__Row *in,
                     lipsync_value *values) {
  size_t ncol = t->handle->ncolumns;
  side_item peer, mine;
  uint8_t uuid[LIPSYNC_UUID_LEN];
  char text[37];
  if (in->uuid.len != LIPSYNC_UUID_LEN ||
      in->n_values != (in->deleted ? 0 : ncol))
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: %s with a %zu-byte UUID and %zu values "
                        "(expected 16 and %zu)",
                        t->name, in->deleted ? "tombstone" : "row",
                        in->uuid.len, in->n_values, in->deleted ? 0 : ncol);
  if (peer_side(s, t, in->version, in->deleted, in->base_version, &peer))
    return s->result;
  memcpy(uuid, in->uuid.data, LIPSYNC_UUID_LEN);
  lipsync_uuid_format(uuid, text);
  size_t k = items_find(&t->items, uuid);
  if (k != NOT_FOUND && (t->items.v[k].flags & ITEM_APPLIED))
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: received row %s twice", t->name, text);
  if (k != NOT_FOUND)
    my_side(t, &t->items.v[k], &mine);
  decision d = decide_pair(s, t, k != NOT_FOUND ? &mine : NULL, &peer);
  if (d != (s->is_server ? DECIDE_CLIENT : DECIDE_SERVER))
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "table %s: received row %s, whose version does not "
                        "win over this side's",
                        t->name, text);
  if (decode_values(s, t, in, values)) /* refused now, not later */
    return s->result;
  int rc;
  if (!defer_row(s, t, in, &rc) && write_row(s, t, in, values))
    return s->result;
  if (rc)
    return rc;
  if (k != NOT_FOUND)
    t->items.v[k].flags |= ITEM_APPLIED;
  if (!(in->deleted && peer.version.clock < s->horizon)) {
    uint8_t digest[LIPSYNC_DIGEST_LEN];
    if (canon_item_digest(&s->hasher, uuid, &peer.version, in->deleted, digest))
      return session_fail(s, LIPSYNC_ERR_INTERNAL, "hashing failed");
    canon_fp_add(&t->applied, digest);
  }
  t->rows_received++;
  return 0;
}

int recon_on_rows(lipsync_session *s, const Lipsync__Rows *m) {
  sync_table *t = frame_table(s, m->table, "Rows");
  if (!t)
    return s->result;
  lipsync_value *values =
      arena_alloc(&s->recv_arena, (t->handle->ncolumns + 1) * sizeof *values);
  if (!values)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  for (size_t r = 0; r < m->n_rows; r++)
    if (apply_row(s, t, m->rows[r], values))
      return s->result;
  if (s->progress)
    s->progress(s->progress_user, t->name, t->rows_sent, t->rows_received);
  return 0;
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

/* The version, deleted flag and (a client's, when it differs) base of my
 * item |it| into |r|. Returns 0 or -1 on no memory. */
static int encode_item_state(lipsync_session *s, const sync_table *t,
                             const item *it, Lipsync__Version **version,
                             protobuf_c_boolean *deleted,
                             Lipsync__Version **base) {
  lipsync_version v;
  item_version(it, &v);
  *version = encode_version(&s->send_arena, &v, false);
  *deleted = (it->flags & ITEM_DELETED) != 0;
  if (it->base && !s->is_server) {
    lipsync_version b;
    item_base(&t->items, it, &b);
    *base = encode_version(&s->send_arena, &b, true);
    if (!*base)
      return -1;
  }
  return *version ? 0 : -1;
}

static Lipsync__Range *new_range(lipsync_session *s, const uint8_t *lower,
                                 const uint8_t *upper) {
  Lipsync__Range *r = arena_alloc(&s->send_arena, sizeof *r);
  if (!r)
    return NULL;
  lipsync__range__init(r);
  if (lower) {
    r->lower.data = (uint8_t *)lower;
    r->lower.len = LIPSYNC_UUID_LEN;
  }
  if (upper) {
    r->upper.data = (uint8_t *)upper;
    r->upper.len = LIPSYNC_UUID_LEN;
  }
  return r;
}

static Lipsync__Range *fingerprint_range(lipsync_session *s, sync_table *t,
                                         const uint8_t *lower,
                                         const uint8_t *upper, size_t lo,
                                         size_t hi) {
  Lipsync__Range *r = new_range(s, lower, upper);
  Lipsync__Fingerprint *fp = arena_alloc(&s->send_arena, sizeof *fp);
  uint8_t *value = arena_alloc(&s->send_arena, LIPSYNC_DIGEST_LEN);
  canon_fp acc;
  if (!r || !fp || !value)
    return NULL;
  lipsync__fingerprint__init(fp);
  items_fingerprint(&t->items, lo, hi, &acc);
  canon_fp_final(&acc, value);
  fp->value.data = value;
  fp->value.len = LIPSYNC_DIGEST_LEN;
  fp->count = acc.count;
  r->summary_case = LIPSYNC__RANGE__SUMMARY_FINGERPRINT;
  r->fingerprint = fp;
  return r;
}

static Lipsync__Range *items_range(lipsync_session *s, sync_table *t,
                                   const uint8_t *lower, const uint8_t *upper,
                                   size_t lo, size_t hi) {
  Lipsync__Range *r = new_range(s, lower, upper);
  Lipsync__ItemList *list = arena_alloc(&s->send_arena, sizeof *list);
  Lipsync__Item *items =
      arena_alloc(&s->send_arena, (hi - lo + 1) * sizeof *items);
  Lipsync__Item **ptrs =
      arena_alloc(&s->send_arena, (hi - lo + 1) * sizeof *ptrs);
  if (!r || !list || !items || !ptrs)
    return NULL;
  lipsync__item_list__init(list);
  for (size_t i = lo; i < hi; i++) {
    Lipsync__Item *it = &items[i - lo];
    lipsync__item__init(it);
    it->uuid.data = t->items.v[i].uuid;
    it->uuid.len = LIPSYNC_UUID_LEN;
    if (encode_item_state(s, t, &t->items.v[i], &it->version, &it->deleted,
                          &it->base_version))
      return NULL;
    ptrs[i - lo] = it;
  }
  list->n_items = hi - lo;
  list->items = ptrs;
  r->summary_case = LIPSYNC__RANGE__SUMMARY_ITEMS;
  r->items = list;
  return r;
}

/* Appends to |out| the ranges describing |p|, from item gen.sub on, while
 * the frame has room. Returns the number of ranges added, -1 on no memory;
 * gen.sub_active stays set while |p| has more to describe. */
static int describe_pending(lipsync_session *s, sync_table *t,
                            const pending_range *p, Lipsync__Range **out,
                            size_t room, size_t *items_left) {
  turn_producer *g = &s->gen;
  const uint8_t *lower = p->has_lower ? p->lower : NULL;
  const uint8_t *upper = p->has_upper ? p->upper : NULL;
  const item *v = t->items.v;
  int added = 0;

  if (p->kind == PENDING_FINGERPRINT) {
    out[0] = fingerprint_range(s, t, lower, upper, p->lo, p->hi);
    return out[0] ? 1 : -1;
  }
  if (p->kind == PENDING_SPLIT) {
    size_t n = p->hi - p->lo, k = n < SPLIT_WAYS ? n : SPLIT_WAYS;
    if (room < k)
      return 0;
    for (size_t b = 0; b < k; b++) {
      size_t from = p->lo + b * n / k, to = p->lo + (b + 1) * n / k;
      out[b] = fingerprint_range(s, t, b == 0 ? lower : v[from].uuid,
                                 b == k - 1 ? upper : v[to].uuid, from, to);
      if (!out[b])
        return -1;
    }
    return (int)k;
  }
  /* Item lists: consecutive ranges of at most ITEMS_PER_FRAME items. */
  size_t from = g->sub_active ? g->sub : p->lo;
  do {
    size_t take = p->hi - from;
    if (take > *items_left)
      take = *items_left;
    if (take == 0 && p->hi > from)
      break; /* frame full */
    size_t to = from + take;
    out[added] = items_range(s, t, from == p->lo ? lower : v[from].uuid,
                             to == p->hi ? upper : v[to].uuid, from, to);
    if (!out[added])
      return -1;
    added++;
    *items_left -= take;
    from = to;
  } while (from < p->hi && (size_t)added < room);
  g->sub_active = from < p->hi;
  g->sub = from;
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
    int added = describe_pending(s, t, &t->ranges[g->pos], ranges + n,
                                 RANGES_PER_FRAME - n, &items_left);
    if (added < 0)
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
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

/* Copies |row| (a tombstone if |row| is NULL) of my item |it| into the
 * send arena as a protobuf Row. */
static Lipsync__Row *encode_row(lipsync_session *s, const sync_table *t,
                                const item *it, const lipsync_row *row,
                                size_t *size) {
  arena *a = &s->send_arena;
  Lipsync__Row *r = arena_alloc(a, sizeof *r);
  if (!r)
    return NULL;
  lipsync__row__init(r);
  if (encode_item_state(s, t, it, &r->version, &r->deleted, &r->base_version))
    return NULL;
  if (!row) {
    r->uuid.data = arena_memdup(a, it->uuid, LIPSYNC_UUID_LEN);
    r->uuid.len = LIPSYNC_UUID_LEN;
    *size = 2 * LIPSYNC_UUID_LEN + 64;
    return r->uuid.data ? r : NULL;
  }
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

/* Opens a cursor over the rows of the small spans from gen.pos on, up to
 * LOOKUP_BATCH of them, looked up by UUID in one go: one round trip for a
 * database across a network, where a fetch per row would cost one each. */
static int open_lookup(lipsync_session *s, sync_table *t) {
  turn_producer *g = &s->gen;
  size_t k = 0, end = g->pos;
  if (!s->lookup && !(s->lookup = malloc(LOOKUP_BATCH * LIPSYNC_UUID_LEN)))
    return LIPSYNC_ERR_NOMEM;
  while (end < t->npushes) {
    const span *sp = &t->pushes[end];
    size_t len = sp->hi - sp->lo;
    if (len > FETCH_SPAN_MAX || k + len > LOOKUP_BATCH)
      break;
    for (size_t i = sp->lo; i < sp->hi; i++)
      if (!(t->items.v[i].flags & ITEM_DELETED))
        memcpy(s->lookup + k++ * LIPSYNC_UUID_LEN, t->items.v[i].uuid,
               LIPSYNC_UUID_LEN);
    end++;
  }
  g->cursor_end = end;
  return store_scan_uuids(s->store, t->handle, s->lookup, k, &g->cursor);
}

/* My item of a row a cursor returned, if it is one to send: not a row the
 * peer sent in this session. */
static const item *pushed_item(const sync_table *t, const lipsync_row *row) {
  size_t k = items_find(&t->items, row->uuid);
  if (k == NOT_FOUND || (t->items.v[k].flags & (ITEM_APPLIED | ITEM_DELETED)))
    return NULL;
  return &t->items.v[k];
}

/* Reads the next live row to push into |row| and its item into |*it|: 1
 * if there is one, 0 when every span is sent, or an error. Long spans are
 * read with a range scan, short ones by UUID: in batches where the backend
 * can, else one by one. Tombstones are sent apart (produce_tombstones). */
static int next_push(lipsync_session *s, sync_table *t, lipsync_row *row,
                     const item **it) {
  turn_producer *g = &s->gen;
  int rc;
  for (;;) {
    if (g->cursor) {
      /* A range scan also meets rows the peer sent us in this session (a
       * Need answered late in a range); those it already has. */
      while ((rc = store_next(s->store, g->cursor, row)) > 0)
        if ((*it = pushed_item(t, row)) != NULL)
          return 1;
      if (rc < 0)
        return rc;
      store_close_cursor(s->store, g->cursor);
      g->cursor = NULL;
      g->pos = g->cursor_end;
    }
    if (g->pos >= t->npushes)
      return 0;
    const span *sp = &t->pushes[g->pos];
    if (sp->hi - sp->lo > FETCH_SPAN_MAX) {
      const item *v = t->items.v;
      rc = store_scan(s->store, t->handle, sp->lo ? v[sp->lo].uuid : NULL,
                      sp->hi < t->items.n ? v[sp->hi].uuid : NULL, &g->cursor);
      g->cursor_end = g->pos + 1;
      if (rc)
        return rc;
      continue;
    }
    if (store_can_scan_uuids(s->store)) {
      if ((rc = open_lookup(s, t)) != 0)
        return rc;
      continue;
    }
    if (!g->sub_active) {
      g->sub = sp->lo;
      g->sub_active = true;
    }
    while (g->sub < sp->hi) {
      *it = &t->items.v[g->sub++];
      if ((*it)->flags & ITEM_DELETED)
        continue;
      rc = store_fetch(s->store, t->handle, (*it)->uuid, row);
      return rc ? rc : 1;
    }
    g->sub_active = false;
    g->pos++;
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

/* The tombstones among the spans to push, then the implicit tombstones
 * (spec 8.7), before any live row of the turn (spec 9.1). */
static int produce_tombstones(lipsync_session *s, sync_table *t, size_t index) {
  turn_producer *g = &s->gen;
  Lipsync__Row **rows =
      arena_alloc(&s->send_arena, ROWS_PER_FRAME * sizeof *rows);
  size_t n = 0, size;
  if (!rows)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  while (n < ROWS_PER_FRAME && g->pos < t->npushes + t->nimplicit) {
    item tmp;
    const item *it = NULL;
    if (g->pos < t->npushes) {
      const span *sp = &t->pushes[g->pos];
      if (!g->sub_active) {
        g->sub = sp->lo;
        g->sub_active = true;
      }
      if (g->sub < sp->hi) {
        it = &t->items.v[g->sub++];
        if (!(it->flags & ITEM_DELETED))
          continue;
      } else {
        g->sub_active = false;
        g->pos++;
        continue;
      }
    } else {
      side_item t0;
      decide_implicit_tombstone(&t->ctx, &t0);
      memset(&tmp, 0, sizeof tmp);
      memcpy(tmp.uuid, t->implicit[g->pos++ - t->npushes], LIPSYNC_UUID_LEN);
      tmp.clock = t0.version.clock;
      tmp.flags = ITEM_DELETED;
      it = &tmp;
    }
    if (!(rows[n++] = encode_row(s, t, it, NULL, &size)))
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  }
  return emit_rows(s, t, index, rows, n);
}

static int produce_rows(lipsync_session *s, sync_table *t, size_t index) {
  Lipsync__Row **rows =
      arena_alloc(&s->send_arena, ROWS_PER_FRAME * sizeof *rows);
  size_t n = 0, bytes = 0;
  lipsync_row row;
  const item *it = NULL;
  int rc = 0;
  /* fault injection (conformance self-test): is this the table's first Rows
   * frame of the turn? Then its first row is dropped below. */
  bool skip = fault_on("skip-row") && !s->gen.pos && !s->gen.cursor &&
              !s->gen.sub_active;
  if (!rows)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  while (n < ROWS_PER_FRAME && bytes < ROW_BYTES_PER_FRAME &&
         (rc = next_push(s, t, &row, &it)) > 0) {
    size_t size;
    if (check_outgoing(s, t, &row))
      return s->result;
    if (!(rows[n] = encode_row(s, t, it, &row, &size)))
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    n++;
    bytes += size;
  }
  if (rc < 0)
    return session_fail(s, rc, "table %s: %s", t->name, store_errmsg(s->store));
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
  /* After a quiet turn the peer owes us its Verify, not another turn. */
  s->state = s->gen.sent_requests ? ST_PEER_TURN : ST_WAIT_VERIFY;
  s->peer_turn_requests = false;
  s->verify_sent = false;
  return 0;
}

int recon_produce(lipsync_session *s) {
  turn_producer *g = &s->gen;
  while (s->state == ST_MY_TURN && s->out.len < OUT_TARGET) {
    if (g->table == s->ntables)
      return end_turn(s);
    sync_table *t = &s->tables[g->table];
    size_t todo = g->stage == 0   ? t->nranges
                  : g->stage == 1 ? t->nneeds
                  : g->stage == 2 ? t->npushes + t->nimplicit
                                  : t->npushes;
    if (g->pos < todo) {
      int rc = g->stage == 0   ? produce_ranges(s, t, g->table)
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
