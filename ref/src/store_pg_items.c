/*
 * store_pg_items.c: the items of the PostgreSQL backend (one row of a
 * table's "_lipsync_meta_<table>" per UUID) as a sync reads and writes
 * them, and the rows update() writes.
 *
 * Item cursors read the snapshot, in UUID order where the interface asks
 * for it (ranges, lookups, changes), through the item table's primary key.
 *
 * Writes wait in buffers for the next statement (pgs_copy_end): the rows
 * deleted by tombstones (one DELETE per batch), the items of new UUIDs
 * (one COPY), and the items update() replaces (a COPY into a temporary
 * table, then one UPDATE that keeps each base: an item that another
 * writer changed or purged since the snapshot makes it fail with a
 * serialization failure, TRY_AGAIN). Every item written records the
 * transaction (xid) and forgets its row digest. update()'s live rows
 * stream through a COPY into a temporary staging table shaped like the
 * user table; pgs_stage_merge then updates the rows whose text differs
 * (so an equal row is not written and fires no trigger) and inserts those
 * missing, with no ON CONFLICT, which a partitioned table's non-unique
 * UUID index could not serve.
 */
#include "store_pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITEM_STAGE "pg_temp._lipsync_item_stage"

int pgs_item_line(bytebuf *out, const uint8_t uuid[LIPSYNC_UUID_LEN],
                  const lipsync_version *v, bool deleted, bool with_base) {
  static const char hex[] = "0123456789abcdef";
  char key[37], site[2 * LIPSYNC_SITE_LEN + 1];
  lipsync_uuid_format(uuid, key);
  for (size_t i = 0; i < LIPSYNC_SITE_LEN; i++) {
    site[2 * i] = hex[v->site[i] >> 4];
    site[2 * i + 1] = hex[v->site[i] & 15];
  }
  site[2 * LIPSYNC_SITE_LEN] = '\0';
  /* COPY's text format: "\\x" is bytea's "\x". */
  if (with_base) /* base = version: the columns of pgs_item_columns() */
    return pgs_putf(out, "%s\t%llu\t\\\\x%s\t%c\t%llu\t\\\\x%s\n", key,
                    (unsigned long long)v->clock, site, deleted ? 't' : 'f',
                    (unsigned long long)v->clock, site);
  return pgs_putf(out, "%s\t%llu\t\\\\x%s\t%c\n", key,
                  (unsigned long long)v->clock, site, deleted ? 't' : 'f');
}

/* COPY's binary format (PostgreSQL's "COPY ... WITH (FORMAT binary)"): a
 * signature, flags and an empty header extension, then tuples, then -1. */
static const uint8_t binary_header[19] = {'P',  'G',  'C',  'O',  'P', 'Y',
                                          '\n', 0xff, '\r', '\n', 0};

static void put_be(uint8_t *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++)
    p[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

int pgs_item_binary(bytebuf *out, const uint8_t uuid[LIPSYNC_UUID_LEN],
                    const lipsync_version *v, bool deleted) {
  uint8_t
      tuple[2 + 4 + LIPSYNC_UUID_LEN + 4 + 8 + 4 + LIPSYNC_SITE_LEN + 4 + 1];
  uint8_t *p = tuple;
  if (out->len == 0 && bytebuf_append(out, binary_header, sizeof binary_header))
    return LIPSYNC_ERR_NOMEM;
  put_be(p, 4, 2), p += 2; /* fields: uuid, clock, site, deleted */
  put_be(p, LIPSYNC_UUID_LEN, 4), p += 4;
  memcpy(p, uuid, LIPSYNC_UUID_LEN), p += LIPSYNC_UUID_LEN;
  put_be(p, 8, 4), p += 4;
  put_be(p, v->clock, 8), p += 8;
  put_be(p, LIPSYNC_SITE_LEN, 4), p += 4;
  memcpy(p, v->site, LIPSYNC_SITE_LEN), p += LIPSYNC_SITE_LEN;
  put_be(p, 1, 4), p += 4;
  *p++ = deleted ? 1 : 0;
  return bytebuf_append(out, tuple, (size_t)(p - tuple)) ? LIPSYNC_ERR_NOMEM
                                                         : 0;
}

bool pgs_base_is_version(const pg_table *t) {
  return t->base.last_sync == 0;
}

const char *pgs_item_columns(const pg_table *t) {
  return pgs_base_is_version(t)
             ? "(uuid, clock, site, deleted, base_clock, base_site)"
             : "(uuid, clock, site, deleted)";
}

/* Deletes the rows of the buffered UUIDs. */
static int flush_deletes(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  int rc = pgs_writing(s, t);
  if (rc) {
    t->deletes.len = 0;
    return rc;
  }
  rc =
      pgs_putf(&sql, "DELETE FROM %s WHERE \"" LIPSYNC_UUID_COLUMN "\" = ANY (",
               t->qname);
  if (!rc)
    rc = pgs_put_uuid_array(&sql, t->deletes.data,
                            t->deletes.len / LIPSYNC_UUID_LEN);
  if (!rc)
    rc = pgs_put(&sql, ")");
  t->deletes.len = 0;
  return pgs_exec_buf(s, &sql, rc, t->name, "deleting rows");
}

static int flush_new(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  /* Received rows, in binary (nothing for the server to parse), with the
   * zero base (a first sync as a client gives every row it received its
   * base anyway). */
  static const uint8_t trailer[2] = {0xff, 0xff};
  int rc = pgs_putf(&sql,
                    "COPY %s (uuid, clock, site, deleted) FROM STDIN"
                    " WITH (FORMAT binary)",
                    t->meta_qname);
  if (!rc && bytebuf_append(&t->items_new, trailer, sizeof trailer))
    rc = LIPSYNC_ERR_NOMEM;
  if (rc || !pgs_cstr(&sql))
    rc = pgs_fail_nomem(s);
  else
    rc = pgs_copy_lines(s, t, (const char *)sql.data, &t->items_new,
                        "recording versions");
  t->items_new.len = 0;
  bytebuf_free(&sql);
  return rc;
}

static int flush_set(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  PGresult *r;
  size_t want = t->nset;
  int rc = 0;
  t->nset = 0;
  rc = pgs_temp_table(s, t, &s->item_stage_ready,
                      "_lipsync_item_stage (uuid uuid, clock bigint,"
                      " site bytea, deleted boolean)",
                      "recording versions");
  if (!rc)
    rc = pgs_copy_lines(s, t,
                        "COPY " ITEM_STAGE " (uuid, clock, site, deleted)"
                        " FROM STDIN",
                        &t->items_set, "recording versions");
  t->items_set.len = 0;
  /* One statement: the stage empties as the items are written. */
  if (!rc)
    rc = pgs_putf(&sql,
                  "WITH w AS (UPDATE %s AS m SET clock = s.clock,"
                  " site = s.site, deleted = s.deleted,"
                  " xid = pg_catalog.pg_current_xact_id(), rowdig = NULL"
                  " FROM " ITEM_STAGE " AS s WHERE m.uuid = s.uuid"
                  " RETURNING 1), e AS (DELETE FROM " ITEM_STAGE ")"
                  " SELECT pg_catalog.count(*) FROM w",
                  t->meta_qname);
  if (rc || (rc = pgs_query_row(s, t, &sql, rc, "recording versions", false,
                                &r)) != 0)
    return rc;
  /* update() is for UUIDs that have an item. */
  if (strtoull(PQgetvalue(r, 0, 0), NULL, 10) != want)
    rc = pgs_fail(s, LIPSYNC_ERR_STORAGE,
                  "table %s: recording versions: %zu items to replace, %s"
                  " found",
                  t->name, want, PQgetvalue(r, 0, 0));
  PQclear(r);
  return rc;
}

int pgs_items_flush(pg_store *s, pg_table *t) {
  int rc = 0;
  if (t->deletes.len)
    rc = flush_deletes(s, t);
  if (!rc && t->items_new.len)
    rc = flush_new(s, t);
  if (!rc && t->items_set.len)
    rc = flush_set(s, t);
  if (rc) {
    t->deletes.len = 0;
    t->items_new.len = 0;
    t->items_set.len = 0;
    t->nset = 0;
  }
  return rc;
}

/* ", " between the canonical columns, each as |prefix|"name". */
static int put_columns(pg_store *s, pg_table *t, bytebuf *b,
                       const char *prefix) {
  int rc = 0;
  for (size_t i = 0; i < t->base.ncolumns && !rc; i++) {
    rc = pgs_putf(b, "%s%s", i ? ", " : "", prefix);
    if (!rc)
      rc = pgs_put_ident(s, b, t->columns[i].name);
  }
  return rc;
}

int pgs_stage_ensure(pg_store *s, pg_table *t) {
  bytebuf sql = {0}, name = {0};
  int rc;

  if (t->stage_qname)
    return 0;
  /* One per table and transaction; the transaction's end drops it. */
  rc = pgs_putf(&name, "pg_temp.\"_lipsync_stage_%u\"", ++s->statement_seq);
  char *qname = pgs_take_cstr(&name, rc);
  if (!qname)
    return pgs_fail_nomem(s);
  rc = pgs_putf(&sql, "CREATE TEMPORARY TABLE %s ON COMMIT DROP AS SELECT ",
                qname + strlen("pg_temp."));
  if (!rc)
    rc = put_columns(s, t, &sql, "");
  if (!rc)
    rc = pgs_putf(&sql, "%s\"" LIPSYNC_UUID_COLUMN "\" FROM %s WITH NO DATA",
                  t->base.ncolumns ? ", " : "", t->qname);
  if (rc || !pgs_cstr(&sql)) {
    free(qname);
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  rc = pgs_exec_sql(s, (const char *)sql.data, t->name, "update");
  bytebuf_free(&sql);
  if (rc) {
    free(qname);
    return rc;
  }
  /* The COPY of the table with the staging table's name. */
  rc = pgs_putf(&sql, "COPY %s%s", qname,
                t->copy_sql + strlen("COPY ") + strlen(t->qname));
  t->stage_copy_sql = pgs_take_cstr(&sql, rc);
  t->stage_qname = qname;
  return t->stage_copy_sql ? 0 : pgs_fail_nomem(s);
}

int pgs_stage_merge(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  int rc = pgs_writing(s, t);
  if (rc)
    return rc;
  /* Only rows whose text differs: no write, no trigger for an equal row
   * (and text, unlike =, tells 1.0 from 1.00 and 'A' from 'a'). */
  if (t->base.ncolumns) {
    rc = pgs_putf(&sql, "UPDATE %s AS t SET ", t->qname);
    for (size_t i = 0; i < t->base.ncolumns && !rc; i++) {
      rc = pgs_put(&sql, i ? ", " : "");
      if (!rc)
        rc = pgs_put_ident(s, &sql, t->columns[i].name);
      if (!rc)
        rc = pgs_put(&sql, " = s.");
      if (!rc)
        rc = pgs_put_ident(s, &sql, t->columns[i].name);
    }
    if (!rc)
      rc = pgs_putf(&sql,
                    " FROM %s AS s WHERE t.\"" LIPSYNC_UUID_COLUMN
                    "\" = s.\"" LIPSYNC_UUID_COLUMN "\" AND ROW(",
                    t->stage_qname);
    if (!rc)
      rc = put_columns(s, t, &sql, "t.");
    if (!rc)
      rc = pgs_put(&sql, ")::pg_catalog.text IS DISTINCT FROM ROW(");
    if (!rc)
      rc = put_columns(s, t, &sql, "s.");
    if (!rc)
      rc = pgs_put(&sql, ")::pg_catalog.text; ");
  }
  if (!rc)
    rc = pgs_putf(&sql, "INSERT INTO %s (", t->qname);
  if (!rc)
    rc = put_columns(s, t, &sql, "");
  if (!rc)
    rc = pgs_putf(&sql, "%s\"" LIPSYNC_UUID_COLUMN "\") SELECT ",
                  t->base.ncolumns ? ", " : "");
  if (!rc)
    rc = put_columns(s, t, &sql, "s.");
  /* A row of the same UUID that another writer inserted after the
   * snapshot, which NOT EXISTS cannot see, is a serialization failure
   * with ON CONFLICT rather than a duplicate key; a partitioned table has
   * no unique index on the UUID for it, nor has a table loaded while
   * empty yet. */
  if (!rc)
    rc =
        pgs_putf(&sql,
                 "%ss.\"" LIPSYNC_UUID_COLUMN "\" FROM %s AS s WHERE NOT"
                 " EXISTS (SELECT 1 FROM %s AS t WHERE t.\"" LIPSYNC_UUID_COLUMN
                 "\" = s.\"" LIPSYNC_UUID_COLUMN "\")%s; TRUNCATE %s",
                 t->base.ncolumns ? ", " : "", t->stage_qname, t->qname,
                 t->partitioned || t->index_pending
                     ? ""
                     : " ON CONFLICT (\"" LIPSYNC_UUID_COLUMN "\") DO NOTHING",
                 t->stage_qname);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  rc = pgs_exec_sql(s, (const char *)sql.data, t->name, "update");
  bytebuf_free(&sql);
  return rc;
}

int pgs_items_where(pg_store *s, pg_table *t, bytebuf *where, int rc,
                    bool ordered, lipsync_cursor **out) {
  bytebuf sql = {0};
  if (!rc && (rc = pgs_put(&sql, " WHERE ")) == 0 &&
      (rc = bytebuf_append(&sql, where->data, where->len)) == 0 && ordered)
    rc = pgs_put(&sql, " ORDER BY uuid");
  bytebuf_free(where);
  return pgs_open_scan_buf(s, t, t->items_sql, &sql, rc, CURSOR_ITEMS, false,
                           out);
}

int pgs_scan_items(lipsync_store *store, lipsync_table *table,
                   lipsync_cursor **out) {
  pg_table *t = (pg_table *)table;
  return pgs_open_scan((pg_store *)store, t, t->items_sql, "", CURSOR_ITEMS,
                       false, out);
}

int pgs_scan_item_range(lipsync_store *store, lipsync_table *table,
                        const uint8_t *lower, const uint8_t *upper,
                        lipsync_cursor **out) {
  char bounds[160] = "true";
  bytebuf where = {0};
  pgs_uuid_bounds(bounds, sizeof bounds, "uuid", lower, upper);
  int rc = pgs_put(&where, bounds);
  return pgs_items_where((pg_store *)store, (pg_table *)table, &where, rc, true,
                         out);
}

int pgs_lookup_items(lipsync_store *store, lipsync_table *table,
                     const uint8_t *uuids, size_t n, lipsync_cursor **out) {
  bytebuf where = {0};
  int rc = pgs_put(&where, "uuid = ANY (");
  if (!rc)
    rc = pgs_put_uuid_array(&where, uuids, n);
  if (!rc)
    rc = pgs_put(&where, ")");
  return pgs_items_where((pg_store *)store, (pg_table *)table, &where, rc, true,
                         out);
}

/* Through the partial index on the clocks of tombstones, in any order. */
int pgs_scan_tombstones(lipsync_store *store, lipsync_table *table,
                        uint64_t clock, lipsync_cursor **out) {
  pg_table *t = (pg_table *)table;
  bytebuf where = {0};
  int rc =
      pgs_putf(&where, "deleted AND clock < %llu",
               (unsigned long long)(clock > INT64_MAX ? INT64_MAX : clock));
  rc = pgs_items_where((pg_store *)store, t, &where, rc, false, out);
  /* Some to purge once the session commits (pgs_upkeep_note). */
  if (rc == 0 && ((pg_cursor *)*out)->nrows > 0)
    t->old_tombstones = true;
  return rc;
}

static uint64_t be64(const char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | (uint8_t)p[i];
  return v;
}

bool pgs_read_version(const PGresult *r, int tup, int col, lipsync_version *v) {
  memset(v, 0, sizeof *v);
  if (PQgetisnull(r, tup, col))
    return true;
  if (PQgetlength(r, tup, col) != 8)
    return false;
  v->clock = be64(PQgetvalue(r, tup, col));
  if (PQgetisnull(r, tup, col + 1))
    return true;
  if (PQgetlength(r, tup, col + 1) != LIPSYNC_SITE_LEN)
    return false;
  memcpy(v->site, PQgetvalue(r, tup, col + 1), LIPSYNC_SITE_LEN);
  return true;
}

int pgs_next_item(lipsync_cursor *cursor, lipsync_item *item) {
  pg_cursor *c = (pg_cursor *)cursor;
  int rc = pgs_cursor_step(c);
  if (rc != 1)
    return rc;
  const PGresult *r = c->res;
  int tup = c->row++;
  memset(item, 0, sizeof *item);
  bool ok = !PQgetisnull(r, tup, 0) &&
            PQgetlength(r, tup, 0) == LIPSYNC_UUID_LEN &&
            PQgetlength(r, tup, 3) == 1 &&
            pgs_read_version(r, tup, 1, &item->version) &&
            pgs_read_version(r, tup, 4, &item->base);
  if (!ok)
    return c->status = pgs_fail(c->table->store, LIPSYNC_ERR_STORAGE,
                                "table %s: a malformed item", c->table->name);
  memcpy(item->uuid, PQgetvalue(r, tup, 0), LIPSYNC_UUID_LEN);
  item->deleted = PQgetvalue(r, tup, 3)[0] != 0;
  if (pgs_base_is_version(c->table)) /* never synced as a client */
    memset(&item->base, 0, sizeof item->base);
  return 1;
}
