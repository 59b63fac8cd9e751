/*
 * store_pg_changes.c: what incremental reconciliation (spec 8.8) needs of
 * the PostgreSQL backend: change positions and the items changed since
 * one, kept summaries, the client's checkpoints and the server's tokens,
 * and the maintenance that folds summaries and purges old tombstones.
 *
 * Positions (spec 8.8.6). PostgreSQL commits concurrent transactions in
 * any order, so no counter is a position. Every item records the
 * transaction of its last change (xid); a position is this database's
 * site id, the session's snapshot (pg_current_snapshot(), which at
 * REPEATABLE READ is the transaction's) and the session's own transaction
 * if it wrote. It covers the changes of the transactions the snapshot
 * sees and its own: an item changed since is one whose xid is neither.
 * Encoding: a format byte, the site id, then unsigned LEB128 varints:
 * xmin, xmax - xmin, the number of transactions in progress, each as its
 * distance from the one before (the first from xmin), and the own
 * transaction plus one (0: none). A snapshot with so many transactions in
 * progress that this passes LIPSYNC_POSITION_MAX keeps the first ones that
 * fit and takes the first it drops as xmax: that position covers less
 * (every later transaction counts as a change), so the next session lists
 * a few items too many, never too few, and position() always succeeds.
 *
 * Summaries. The kept summary of a table is its registry row (sum, count)
 * plus the delta rows its snapshot holds: the capture triggers append one
 * per change, a sync one per table it changed (at finish, from the
 * digests the core hands in with each applied row), maintenance one per
 * purge. Appending never conflicts; a concurrent session's delta rows are
 * invisible until its items are. Maintenance folds the delta rows it sees
 * into the registry row and deletes exactly those, in short READ
 * COMMITTED transactions of its own: when the application calls maintain,
 * and for the tables of a sync right after it commits (upkeep, below).
 */
#include "store_pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POSITION_FORMAT 0x50 /* 'P' */
#define VARINT_MAX 10
/* The advisory lock key (with the registry name's hash) that keeps two
 * processes from maintaining one table at once: "lips". */
#define MAINTAIN_LOCK "1818849395"
/* Maintenance leaves a table another transaction holds for longer. */
#define MAINTAIN_LOCK_TIMEOUT_MS 200
/* The delta rows of a table (a FROM clause), summed: n, the count; h and
 * l, the two halves of the sum as numeric (see _lipsync.sum128). */
#define DELTA_SUMS                                                             \
  "COALESCE(sum(count_delta), 0) AS n,"                                        \
  " COALESCE(sum(_lipsync.hi(add_sum)), 0) -"                                  \
  " COALESCE(sum(_lipsync.hi(sub_sum)), 0) AS h,"                              \
  " COALESCE(sum(_lipsync.lo(add_sum)), 0) -"                                  \
  " COALESCE(sum(_lipsync.lo(sub_sum)), 0) AS l"

/* ------------------------------------------------------------------ */
/* Positions                                                            */
/* ------------------------------------------------------------------ */

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

static bool get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return shift < 63 || b <= 1;
  }
  return false;
}

void pgs_position_encode(const pg_position *p, lipsync_position *out) {
  uint8_t *d = out->data;
  size_t len = 1 + LIPSYNC_SITE_LEN, k = 0, used = 0;
  /* Room for everything but the transactions in progress, at most. */
  size_t budget =
      LIPSYNC_POSITION_MAX - len - varint_len(p->xmin) - 3 * VARINT_MAX;
  uint64_t prev = p->xmin, xmax = p->xmax;

  while (k < p->nxip && used + varint_len(p->xip[k] - prev) <= budget) {
    used += varint_len(p->xip[k] - prev);
    prev = p->xip[k++];
  }
  if (k < p->nxip) /* covers less: see the file's comment */
    xmax = p->xip[k];
  d[0] = POSITION_FORMAT;
  memcpy(d + 1, p->site, LIPSYNC_SITE_LEN);
  len += put_varint(d + len, p->xmin);
  len += put_varint(d + len, xmax - p->xmin);
  len += put_varint(d + len, k);
  prev = p->xmin;
  for (size_t i = 0; i < k; i++) {
    len += put_varint(d + len, p->xip[i] - prev);
    prev = p->xip[i];
  }
  len += put_varint(d + len, p->has_own ? p->own + 1 : 0);
  out->len = len;
}

void pgs_position_free(pg_position *p) {
  free(p->xip);
  p->xip = NULL;
  p->nxip = 0;
}

int pgs_position_decode(const lipsync_position *in, pg_position *out) {
  const uint8_t *p = in->data + 1 + LIPSYNC_SITE_LEN, *end = in->data + in->len;
  uint64_t span, n, own, prev;

  memset(out, 0, sizeof *out);
  if (in->len < 1 + LIPSYNC_SITE_LEN || in->len > LIPSYNC_POSITION_MAX ||
      in->data[0] != POSITION_FORMAT)
    return LIPSYNC_ERR_NOT_FOUND;
  memcpy(out->site, in->data + 1, LIPSYNC_SITE_LEN);
  if (!get_varint(&p, end, &out->xmin) || !get_varint(&p, end, &span) ||
      span > UINT64_MAX - out->xmin || !get_varint(&p, end, &n) ||
      n > (uint64_t)(end - p))
    return LIPSYNC_ERR_NOT_FOUND;
  out->xmax = out->xmin + span;
  if (n && !(out->xip = malloc(n * sizeof *out->xip)))
    return LIPSYNC_ERR_NOMEM;
  prev = out->xmin;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t step;
    /* Ascending, each in [xmin, xmax). */
    if (!get_varint(&p, end, &step) || (i && !step) ||
        step >= out->xmax - prev) {
      pgs_position_free(out);
      return LIPSYNC_ERR_NOT_FOUND;
    }
    prev += step;
    out->xip[out->nxip++] = prev;
  }
  if (!get_varint(&p, end, &own) || p != end) {
    pgs_position_free(out);
    return LIPSYNC_ERR_NOT_FOUND;
  }
  out->has_own = own != 0;
  out->own = own - 1;
  return 0;
}

int pgs_put_not_covered(bytebuf *b, const pg_position *p) {
  /* Ranges with two ends: without statistics (a table just loaded) the
   * planner then expects few rows and reads the xid index, rather than
   * the whole table in UUID order. The session's own writes (a whole
   * first load) are left out by the ranges, not by a filter. */
  static const char max[] = "'18446744073709551615'::pg_catalog.xid8";
  unsigned long long lo = p->xmin, own = p->own;
  int rc =
      p->has_own && own >= lo
          ? pgs_putf(b,
                     "(xid BETWEEN '%llu'::pg_catalog.xid8 AND"
                     " '%llu'::pg_catalog.xid8 OR xid BETWEEN"
                     " '%llu'::pg_catalog.xid8 AND %s)",
                     lo, own - 1, own + 1, max)
          : pgs_putf(b, "xid BETWEEN '%llu'::pg_catalog.xid8 AND %s", lo, max);
  if (!rc)
    rc = pgs_putf(b,
                  " AND NOT pg_catalog.pg_visible_in_snapshot(xid,"
                  " '%llu:%llu:",
                  lo, (unsigned long long)p->xmax);
  for (size_t i = 0; i < p->nxip && !rc; i++)
    rc = pgs_putf(b, "%s%llu", i ? "," : "", (unsigned long long)p->xip[i]);
  if (!rc)
    rc = pgs_put(b, "'::pg_catalog.pg_snapshot)");
  if (!rc && p->has_own && own < lo)
    rc = pgs_putf(b, " AND xid <> '%llu'::pg_catalog.xid8", own);
  return rc;
}

static int xid_cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Parses PostgreSQL's text form of a snapshot, "xmin:xmax:xip,xip" (its
 * transactions in progress ascending, in [xmin, xmax): checked). */
static bool parse_snapshot(const char *text, pg_position *p) {
  char *end;
  size_t cap = 0;
  p->xmin = strtoull(text, &end, 10);
  if (*end != ':')
    return false;
  p->xmax = strtoull(end + 1, &end, 10);
  if (*end != ':')
    return false;
  for (text = end + 1; *text; text = *end ? end + 1 : end) {
    if (vec_reserve((void **)&p->xip, &cap, p->nxip + 1, sizeof *p->xip))
      return false;
    p->xip[p->nxip++] = strtoull(text, &end, 10);
    if (*end && *end != ',')
      return false;
  }
  if (p->nxip > 1)
    qsort(p->xip, p->nxip, sizeof *p->xip, xid_cmp);
  for (size_t i = 0; i < p->nxip; i++)
    if (p->xip[i] < p->xmin || p->xip[i] >= p->xmax ||
        (i && p->xip[i] == p->xip[i - 1]))
      return false;
  return p->xmin <= p->xmax;
}

int pgs_position(lipsync_store *store, lipsync_table *table,
                 lipsync_position *out) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  pg_position p;
  PGresult *r;
  int rc;

  out->len = 0;
  memset(&p, 0, sizeof p);
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  s->fresh = false;
  if ((rc = pgs_copy_end(s)) != 0 || (rc = pgs_capture_site(s, p.site)) != 0)
    return rc;
  r = pgs_run(s, "SELECT pg_catalog.pg_current_snapshot(),"
                 " pg_catalog.pg_current_xact_id_if_assigned()");
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
    return pgs_expect(s, r, PGRES_TUPLES_OK, t->name, "reading the position");
  bool ok = parse_snapshot(PQgetvalue(r, 0, 0), &p);
  p.has_own = !PQgetisnull(r, 0, 1);
  p.own = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
  PQclear(r);
  if (ok)
    pgs_position_encode(&p, out);
  pgs_position_free(&p);
  return ok ? 0
            : pgs_fail(s, LIPSYNC_ERR_STORAGE,
                       "table %s: reading the position: unexpected snapshot",
                       t->name);
}

int pgs_read_position(pg_store *s, const lipsync_position *since,
                      pg_position *out) {
  uint8_t site[LIPSYNC_SITE_LEN];
  PGresult *r;
  int rc = pgs_position_decode(since, out);
  if (rc == LIPSYNC_ERR_NOMEM)
    return pgs_fail_nomem(s);
  if (rc == 0 && (rc = pgs_capture_site(s, site)) != 0) {
    pgs_position_free(out);
    return rc;
  }
  if (rc == 0 && memcmp(site, out->site, LIPSYNC_SITE_LEN) != 0)
    rc = LIPSYNC_ERR_NOT_FOUND;
  if (rc == 0) {
    r = pgs_run(s, "SELECT pg_catalog.pg_snapshot_xmax("
                   "pg_catalog.pg_current_snapshot()),"
                   " pg_catalog.pg_current_xact_id_if_assigned()");
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
      pgs_position_free(out);
      return pgs_expect(s, r, PGRES_TUPLES_OK, NULL, "reading a position");
    }
    uint64_t now = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    bool mine = !PQgetisnull(r, 0, 1) &&
                strtoull(PQgetvalue(r, 0, 1), NULL, 10) == out->own;
    PQclear(r);
    /* One this database has not reached: it was restored from a dump
     * since, or the position is not its own. (Its own transaction is past
     * the snapshot only when it is this one.) */
    if (out->xmax > now || (out->has_own && out->own >= now && !mine))
      rc = LIPSYNC_ERR_NOT_FOUND;
  }
  if (rc) {
    pgs_position_free(out);
    return pgs_fail(s, rc, "not a position of this database");
  }
  return 0;
}

int pgs_scan_changes(lipsync_store *store, lipsync_table *table,
                     const lipsync_position *since, lipsync_cursor **out) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  bytebuf where = {0};
  pg_position p;
  int rc;

  *out = NULL;
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((rc = pgs_need_prepared(s, t, "changes")) != 0 ||
      (rc = pgs_read_position(s, since, &p)) != 0)
    return rc;
  /* A cursor is planned for its first rows: the UUID index, in order, would
   * read the whole table for the few changed items. Materialized, they are
   * found through the xid index, then sorted. */
  bytebuf select = {0};
  rc = pgs_putf(&select, "WITH c AS MATERIALIZED (%s WHERE ", t->items_sql);
  if (!rc)
    rc = pgs_put_not_covered(&select, &p);
  if (!rc)
    rc = pgs_put(&select, ") SELECT * FROM c");
  pgs_position_free(&p);
  if (!rc)
    rc = pgs_put(&where, " ORDER BY uuid");
  if (rc || !pgs_cstr(&select)) {
    bytebuf_free(&select);
    bytebuf_free(&where);
    return pgs_fail_nomem(s);
  }
  rc = pgs_open_scan_buf(s, t, (const char *)select.data, &where, 0,
                         CURSOR_ITEMS, false, out);
  bytebuf_free(&select);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Summaries                                                            */
/* ------------------------------------------------------------------ */

int pgs_summarize(lipsync_store *store, lipsync_table *table,
                  lipsync_summary *out) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  bytebuf sql = {0};
  PGresult *r;
  int rc;

  memset(out, 0, sizeof *out);
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((rc = pgs_need_prepared(s, t, "summarize")) != 0)
    return rc;
  /* The snapshot's, before any delta row of this transaction's: read
   * once. */
  if (!t->summarized) {
    if ((rc = pgs_copy_end(s)) != 0)
      return rc;
    rc = pgs_putf(&sql,
                  "SELECT (b.count + d.n)::bigint, _lipsync.sum128("
                  "COALESCE(_lipsync.hi(b.sum), 0) + d.h,"
                  " COALESCE(_lipsync.lo(b.sum), 0) + d.l), d.k > 0 FROM"
                  " (SELECT sum, count FROM _lipsync.tables WHERE name = %s)"
                  " AS b, (SELECT pg_catalog.count(*) AS k, " DELTA_SUMS
                  " FROM _lipsync.deltas WHERE tbl = %s) AS d",
                  t->reg_lit, t->reg_lit);
    if ((rc = pgs_query_row(s, t, &sql, rc, "reading its summary", true, &r)) !=
        0)
      return rc;
    if (PQgetlength(r, 0, 0) != 8 ||
        PQgetlength(r, 0, 1) != LIPSYNC_DIGEST_LEN) {
      PQclear(r);
      return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                      "table %s: reading its summary: unexpected result",
                      t->name);
    }
    t->summary.count = canon_get_u64((const uint8_t *)PQgetvalue(r, 0, 0));
    memcpy(t->summary.sum, PQgetvalue(r, 0, 1), LIPSYNC_DIGEST_LEN);
    t->deltas_seen = PQgetvalue(r, 0, 2)[0] != 0;
    PQclear(r);
    t->summarized = true;
  }
  *out = t->summary;
  return 0;
}

int pgs_put_set_base(pg_store *s, pg_table *t, bytebuf *b) {
  (void)s;
  return pgs_putf(
      b,
      "WITH a AS (SELECT pg_catalog.count(*) AS n, sum(_lipsync.hi(d)) AS h,"
      " sum(_lipsync.lo(d)) AS l FROM (SELECT _lipsync.digest(uuid, clock,"
      " site, deleted) AS d FROM %s) AS x), e AS (DELETE FROM"
      " _lipsync.deltas WHERE tbl = %s) INSERT INTO _lipsync.tables (name,"
      " sum, count) SELECT %s, _lipsync.sum128(a.h, a.l), a.n FROM a"
      " ON CONFLICT (name) DO UPDATE SET sum = EXCLUDED.sum,"
      " count = EXCLUDED.count",
      t->meta_qname, t->reg_lit, t->reg_lit);
}

int pgs_put_applied_delta(pg_table *t, bytebuf *b) {
  lipsync_summary add, sub;
  int rc;
  if (!t->applied_add.count && !t->applied_sub.count)
    return 0;
  canon_fp_store(&t->applied_add, &add);
  canon_fp_store(&t->applied_sub, &sub);
  rc = pgs_putf(b,
                "; INSERT INTO _lipsync.deltas (tbl, add_sum, sub_sum,"
                " count_delta) VALUES (%s, ",
                t->reg_lit);
  if (!rc)
    rc = pgs_put_bytea(b, add.sum, LIPSYNC_DIGEST_LEN);
  if (!rc)
    rc = pgs_put(b, ", ");
  if (!rc)
    rc = pgs_put_bytea(b, sub.count ? sub.sum : NULL, LIPSYNC_DIGEST_LEN);
  if (!rc)
    rc = pgs_putf(b, ", %lld)", (long long)(add.count - sub.count));
  return rc;
}

/* ------------------------------------------------------------------ */
/* Checkpoints and tokens (spec 8.8.1)                                  */
/* ------------------------------------------------------------------ */

/* Copies binary field |col| of |r| into |out| if it fits in |max|. */
static void copy_field(const PGresult *r, int col, uint8_t *out, size_t max,
                       size_t *len) {
  size_t n = PQgetisnull(r, 0, col) ? 0 : (size_t)PQgetlength(r, 0, col);
  *len = n <= max ? n : 0;
  if (*len)
    memcpy(out, PQgetvalue(r, 0, col), *len);
}

int pgs_load_checkpoint(lipsync_store *store, lipsync_table *table,
                        lipsync_checkpoint *out) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  bytebuf sql = {0};
  size_t site_len, token_len;
  PGresult *r;
  int rc;

  memset(out, 0, sizeof *out);
  if ((rc = pgs_need_prepared(s, t, "reading the checkpoint")) != 0 ||
      (rc = pgs_copy_end(s)) != 0)
    return rc;
  rc = pgs_putf(&sql,
                "SELECT ck_site, ck_token, ck_position, position, recount"
                " FROM _lipsync.tables WHERE name = %s",
                t->reg_lit);
  if ((rc = pgs_query(s, t, &sql, rc, "reading the checkpoint", true, &r)) != 0)
    return rc;
  if (PQntuples(r) == 1) {
    copy_field(r, 0, out->server_site, LIPSYNC_SITE_LEN, &site_len);
    copy_field(r, 1, out->token, LIPSYNC_SITE_LEN, &token_len);
    copy_field(r, 2, out->server_position.data, LIPSYNC_POSITION_MAX,
               &out->server_position.len);
    copy_field(r, 3, out->client_position.data, LIPSYNC_POSITION_MAX,
               &out->client_position.len);
    out->has = site_len == LIPSYNC_SITE_LEN && token_len == LIPSYNC_SITE_LEN &&
               out->client_position.len > 0 && PQgetlength(r, 0, 4) == 1 &&
               PQgetvalue(r, 0, 4)[0] == 0;
  }
  PQclear(r);
  return 0;
}

int pgs_load_token(lipsync_store *store, lipsync_table *table,
                   const uint8_t client_site[LIPSYNC_SITE_LEN],
                   uint8_t token[LIPSYNC_SITE_LEN], int *found) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  bytebuf sql = {0};
  size_t len;
  PGresult *r;
  int rc;

  *found = 0;
  if ((rc = pgs_need_prepared(s, t, "reading a token")) != 0 ||
      (rc = pgs_copy_end(s)) != 0)
    return rc;
  rc = pgs_putf(&sql,
                "SELECT token FROM _lipsync.peers WHERE tbl = %s AND"
                " site = ",
                t->reg_lit);
  if (!rc)
    rc = pgs_put_bytea(&sql, client_site, LIPSYNC_SITE_LEN);
  if ((rc = pgs_query(s, t, &sql, rc, "reading a token", true, &r)) != 0)
    return rc;
  if (PQntuples(r) == 1) {
    copy_field(r, 0, token, LIPSYNC_SITE_LEN, &len);
    *found = len == LIPSYNC_SITE_LEN;
  }
  PQclear(r);
  return 0;
}

/* The client's items that the session covers become clean: those changed
 * since its previous position (all, without one) whose base differs
 * (spec LS-POLICY-5). Every item this UPDATE sees is covered by the new
 * position (the snapshot's, or this transaction's own); one that another
 * writer changed since the snapshot cannot be updated: the sync fails
 * with TRY_AGAIN rather than overwrite it (LS-STORE-4). */
int pgs_put_record_bases(pg_store *s, pg_table *t, bytebuf *b) {
  lipsync_checkpoint old;
  pg_position prev;
  bool since;
  int rc = pgs_load_checkpoint(&s->base, &t->base, &old);
  if (rc)
    return rc;
  since = old.client_position.len &&
          pgs_read_position(s, &old.client_position, &prev) == 0;
  rc = pgs_putf(b,
                "; UPDATE %s SET base_clock = clock, base_site = site"
                " WHERE (base_clock <> clock OR base_site IS DISTINCT FROM"
                " site)",
                t->meta_qname);
  if (!rc && since) {
    rc = pgs_put(b, " AND ");
    if (!rc)
      rc = pgs_put_not_covered(b, &prev);
  }
  if (since)
    pgs_position_free(&prev);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Maintenance                                                          */
/* ------------------------------------------------------------------ */

/* Purges the tombstones of |reg| (a literal) below |horizon|, whose item
 * table is |meta|, recording their digests as a delta row, then folds the
 * delta rows this statement sees into the registry row and deletes those.
 * A table synced as a client keeps its dirty tombstones (LS-TOMB-4). */
static int fold_table(pg_store *s, const char *reg, const char *meta,
                      uint64_t horizon) {
  bytebuf sql = {0};
  int rc = 0;
  if (horizon)
    rc = pgs_putf(
        &sql,
        "WITH p AS (DELETE FROM %s AS m WHERE m.deleted AND m.clock < %llu"
        " AND (COALESCE((SELECT last_sync = 0 FROM _lipsync.tables"
        " WHERE name = %s), true) OR (m.base_clock = m.clock AND"
        " m.base_site = m.site)) RETURNING _lipsync.digest(m.uuid, m.clock,"
        " m.site, true) AS d) INSERT INTO _lipsync.deltas (tbl, sub_sum,"
        " count_delta) SELECT %s, _lipsync.sum128(sum(_lipsync.hi(d)),"
        " sum(_lipsync.lo(d))), -pg_catalog.count(*) FROM p"
        " HAVING pg_catalog.count(*) > 0; ",
        meta, (unsigned long long)(horizon > INT64_MAX ? INT64_MAX : horizon),
        reg, reg);
  if (!rc)
    rc = pgs_putf(
        &sql,
        "WITH f AS (DELETE FROM _lipsync.deltas WHERE tbl = %s AND EXISTS"
        " (SELECT 1 FROM _lipsync.tables WHERE name = %s AND sum IS NOT"
        " NULL) RETURNING count_delta, add_sum, sub_sum),"
        " d AS (SELECT pg_catalog.count(*) AS k, " DELTA_SUMS " FROM f)"
        " UPDATE _lipsync.tables AS b SET sum = _lipsync.sum128("
        "_lipsync.hi(b.sum) + d.h, _lipsync.lo(b.sum) + d.l),"
        " count = b.count + d.n FROM d WHERE b.name = %s AND d.k > 0",
        reg, reg, reg);
  return pgs_exec_buf(s, &sql, rc, reg, "folding its changes");
}

/* The quoted name of the item table of the table registered as |reg|
 * ("schema.table"), or NULL. */
static char *meta_of(pg_store *s, const char *reg) {
  const char *dot = strchr(reg, '.');
  bytebuf q = {0};
  char *schema;
  int rc;
  if (!dot || !(schema = strndup(reg, (size_t)(dot - reg))))
    return NULL;
  size_t n = strlen(dot + 1) + sizeof "_lipsync_meta_";
  char *meta = malloc(n);
  rc = meta ? pgs_put_ident(s, &q, schema) : LIPSYNC_ERR_NOMEM;
  if (!rc) {
    snprintf(meta, n, "_lipsync_meta_%s", dot + 1);
    rc = pgs_put(&q, ".");
  }
  if (!rc)
    rc = pgs_put_ident(s, &q, meta);
  free(schema);
  free(meta);
  return pgs_take_cstr(&q, rc);
}

/* One table (|lit|, its registry name as a literal; |meta|, its item
 * table's quoted name), in a READ COMMITTED transaction of its own with a
 * short lock timeout: skipped when another process maintains it (the
 * advisory lock), when a lock it needs stays taken, or when the table is
 * gone. */
static int maintain_table(pg_store *s, const char *lit, const char *meta,
                          uint64_t horizon) {
  const lipsync_store_methods *m = s->base.methods;
  char *mlit = PQescapeLiteral(s->conn, meta, strlen(meta));
  int saved = s->lock_timeout_ms, rc;
  bytebuf sql = {0};
  bool go = false;

  s->lock_timeout_ms = MAINTAIN_LOCK_TIMEOUT_MS;
  rc = mlit ? pgs_begin(s, false) : pgs_fail_nomem(s);
  s->lock_timeout_ms = saved;
  if (!rc)
    rc = pgs_putf(&sql,
                  "SELECT pg_catalog.pg_try_advisory_xact_lock(" MAINTAIN_LOCK
                  ", pg_catalog.hashtext(%s)) AND pg_catalog.to_regclass(%s)"
                  " IS NOT NULL",
                  lit, mlit);
  PQfreemem(mlit);
  if (!rc)
    rc = pgs_query_bool(s, NULL, &sql, rc, "maintenance", &go);
  if (!rc && go)
    rc = fold_table(s, lit, meta, horizon);
  if (!rc && s->in_txn)
    rc = m->commit(&s->base);
  if (rc)
    m->rollback(&s->base);
  return rc == LIPSYNC_ERR_TRY_AGAIN ? 0 : rc;
}

int pgs_maintain(lipsync_store *store, uint64_t horizon) {
  pg_store *s = (pg_store *)store;
  const lipsync_store_methods *m = s->base.methods;
  char **names = NULL;
  size_t n = 0, cap = 0;
  bool present = false;
  bytebuf sql = {0};
  PGresult *r = NULL;
  int rc;

  if (s->in_txn)
    return pgs_fail(s, LIPSYNC_ERR_INTERNAL, "maintain: a transaction is open");
  rc = pgs_begin(s, false);
  if (!rc)
    rc = pgs_put(&sql, "SELECT pg_catalog.to_regclass('_lipsync.deltas')"
                       " IS NOT NULL");
  if (!rc)
    rc = pgs_query_bool(s, NULL, &sql, rc, "maintenance", &present);
  if (!rc && present) {
    r = pgs_run(s, "SELECT name FROM _lipsync.tables");
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
      rc = pgs_expect(s, r, PGRES_TUPLES_OK, NULL, "maintenance");
      r = NULL;
    }
  }
  for (int i = 0; r && !rc && i < PQntuples(r); i++) {
    if (vec_reserve((void **)&names, &cap, n + 1, sizeof *names) ||
        !(names[n] = strdup(PQgetvalue(r, i, 0))))
      rc = pgs_fail_nomem(s);
    else
      n++;
  }
  PQclear(r);
  if (s->in_txn)
    m->rollback(store); /* it only read */
  for (size_t i = 0; !rc && i < n; i++) {
    char *lit = PQescapeLiteral(s->conn, names[i], strlen(names[i]));
    char *meta = meta_of(s, names[i]);
    rc =
        lit && meta ? maintain_table(s, lit, meta, horizon) : pgs_fail_nomem(s);
    PQfreemem(lit);
    free(meta);
  }
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
  return rc;
}

/*
 * Upkeep after a sync: PostgreSQL sessions write no row that another
 * session may write, so none folds its table's delta rows into the kept
 * summary or purges the tombstones below its horizon (LS-TOMB-4); the
 * store does both right after the session commits, for the tables the
 * session finished, as maintenance does. So the delta log stays short
 * without an application calling maintain, and a tombstone left out of a
 * session is gone on both sides, as with SQLite. It never changes the
 * session's outcome: a failure is forgotten.
 */
int pgs_upkeep_note(pg_store *s, pg_table *t, uint64_t horizon) {
  pg_upkeep *u;
  if (!t->deltas_seen && !t->old_tombstones && !t->applied_add.count &&
      !t->applied_sub.count)
    return 0;
  if (vec_reserve((void **)&s->upkeep, &s->upkeep_cap, s->nupkeep + 1,
                  sizeof *s->upkeep))
    return pgs_fail_nomem(s);
  u = &s->upkeep[s->nupkeep];
  u->lit = strdup(t->reg_lit);
  u->meta = strdup(t->meta_qname);
  u->horizon = horizon;
  if (!u->lit || !u->meta) {
    free(u->lit);
    free(u->meta);
    return pgs_fail_nomem(s);
  }
  s->nupkeep++;
  return 0;
}

void pgs_upkeep_clear(pg_store *s) {
  for (size_t i = 0; i < s->nupkeep; i++) {
    free(s->upkeep[i].lit);
    free(s->upkeep[i].meta);
  }
  s->nupkeep = 0;
}

void pgs_upkeep_run(pg_store *s) {
  char errmsg[ERRMSG_SIZE];
  size_t n = s->nupkeep;
  memcpy(errmsg, s->errmsg, sizeof errmsg);
  s->nupkeep = 0; /* its own commits have none */
  for (size_t i = 0; i < n && !pgs_is_interrupted(s); i++)
    maintain_table(s, s->upkeep[i].lit, s->upkeep[i].meta,
                   s->upkeep[i].horizon);
  s->nupkeep = n;
  pgs_upkeep_clear(s);
  memcpy(s->errmsg, errmsg, sizeof errmsg);
}
