/*
 * store_pg_capture.c: change capture in PostgreSQL (design5.md): the
 * objects it needs, installed by the first sync of a table (which needs
 * the CREATE privilege on the database), their repair, and the clock.
 *
 * Per database, in schema _lipsync:
 *   state (one row: site, 16 random bytes of a version 4 UUID)
 *   clock, a sequence: the hybrid logical clock's last value
 *   tick() -> bigint: a new clock value, max(last + 1, wall_ms << 16)
 *   observe(bigint): moves the clock up to at least its argument, in
 *     the transaction (state.floor): a sync that fails changes nothing
 *   now() -> bigint: the clock a tick would pass, without moving it
 *   tables (name "schema.table", last_sync)
 *   capture(), keep_uuid(): the trigger functions
 * Per synced table "s"."t": the item table "s"."_lipsync_meta_t" (uuid,
 * clock, site, deleted, base_clock, base_site), a default
 * gen_random_uuid() on _lipsync_uuid, AFTER INSERT / UPDATE / DELETE
 * triggers _lipsync_capture_{insert,update,delete} that record a new
 * version unless the transaction set lipsync.applying = 'on' (every sync
 * does), and a BEFORE UPDATE trigger _lipsync_keep_uuid that refuses a
 * change of a row's _lipsync_uuid, even in a sync.
 *
 * The clock is a sequence, so ticks never wait on another transaction's
 * commit. Only when the wall clock has passed it does a tick take a
 * session-level advisory lock, for the moment of a setval.
 *
 * A row inserted with an explicit NULL _lipsync_uuid (the default covers
 * every other insert) is left without one, and without an item, until the
 * next sync's prepare repairs it: a BEFORE INSERT trigger would cost every
 * COPY its batching.
 */
#include "canon.h"
#include "store_pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define META_PREFIX "_lipsync_meta_"
#define CAPTURE_TRIGGERS 5
/* The advisory lock key of the clock: "lipsync" as a big-endian integer. */
#define CLOCK_LOCK "30515229179342435"
/* The largest bigint. */
#define CLOCK_MAX 9223372036854775807ull

static const char check_global_sql[] =
    "SELECT pg_catalog.to_regclass('_lipsync.state') IS NOT NULL"
    " AND pg_catalog.to_regclass('_lipsync.clock') IS NOT NULL"
    " AND pg_catalog.to_regclass('_lipsync.tables') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.tick()') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.observe(bigint)') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.now()') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.capture()') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.keep_uuid()') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.capture_truncate()')"
    " IS NOT NULL";

/* Every statement is idempotent; the transaction-level lock makes a
 * second installer wait for the first, then find everything in place. */
static const char install_global_sql[] =
    "SELECT pg_catalog.pg_advisory_xact_lock(" CLOCK_LOCK ");"
    "CREATE SCHEMA IF NOT EXISTS _lipsync;"
    "CREATE TABLE IF NOT EXISTS _lipsync.state ("
    " one boolean PRIMARY KEY DEFAULT true CHECK (one),"
    " site bytea NOT NULL CHECK (pg_catalog.length(site) = 16),"
    " floor bigint NOT NULL DEFAULT 0);"
    "INSERT INTO _lipsync.state (site) SELECT pg_catalog.decode("
    "pg_catalog.replace(pg_catalog.gen_random_uuid()::pg_catalog.text, '-',"
    " ''), 'hex') WHERE NOT EXISTS (SELECT 1 FROM _lipsync.state);"
    "CREATE SEQUENCE IF NOT EXISTS _lipsync.clock AS bigint MINVALUE 1;"
    "CREATE TABLE IF NOT EXISTS _lipsync.tables (name text PRIMARY KEY,"
    " last_sync bigint NOT NULL DEFAULT 0);"
    /* A new clock value: strictly above every earlier one and every clock
     * a committed sync observed (state.floor), and at least the wall
     * clock's milliseconds << 16. */
    "CREATE OR REPLACE FUNCTION _lipsync.tick() RETURNS bigint"
    " LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $f$\n"
    "DECLARE h bigint; w bigint;\n"
    "BEGIN\n"
    "  h := pg_catalog.nextval('_lipsync.clock');\n"
    "  w := GREATEST(pg_catalog.floor(pg_catalog.date_part("
    "'epoch', pg_catalog.clock_timestamp()) * 1000)::bigint << 16,"
    " (SELECT floor + 1 FROM _lipsync.state));\n"
    "  IF h < w THEN\n"
    "    PERFORM pg_catalog.pg_advisory_lock(" CLOCK_LOCK ");\n"
    "    BEGIN\n"
    "      h := pg_catalog.nextval('_lipsync.clock');\n"
    "      IF h < w THEN\n"
    "        PERFORM pg_catalog.setval('_lipsync.clock', w);\n"
    "        h := w;\n"
    "      END IF;\n"
    "    EXCEPTION WHEN OTHERS THEN\n"
    "      PERFORM pg_catalog.pg_advisory_unlock(" CLOCK_LOCK ");\n"
    "      RAISE;\n"
    "    END;\n"
    "    PERFORM pg_catalog.pg_advisory_unlock(" CLOCK_LOCK ");\n"
    "  END IF;\n"
    "  RETURN h;\n"
    "END $f$;"
    /* Observing is transactional: a sync that fails changes nothing. */
    "CREATE OR REPLACE FUNCTION _lipsync.observe(c bigint) RETURNS void"
    " LANGUAGE sql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $f$"
    " UPDATE _lipsync.state SET floor = GREATEST(floor, c)"
    " $f$;"
    /* The clock now, without moving it: what a server reports. */
    "CREATE OR REPLACE FUNCTION _lipsync.now() RETURNS bigint"
    " LANGUAGE sql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $f$"
    " SELECT GREATEST((SELECT last_value + 1 FROM _lipsync.clock),"
    " (SELECT floor + 1 FROM _lipsync.state),"
    " pg_catalog.floor(pg_catalog.date_part('epoch',"
    " pg_catalog.clock_timestamp()) * 1000)::bigint << 16)"
    " $f$;"
    /* TG_ARGV: the item table's schema and name. Runs as the installer,
     * so any role that may write the table records its changes. */
    "CREATE OR REPLACE FUNCTION _lipsync.capture() RETURNS trigger"
    " LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $f$\n"
    "DECLARE u uuid;\n"
    "BEGIN\n"
    "  IF TG_OP = 'DELETE' THEN u := OLD._lipsync_uuid;"
    " ELSE u := NEW._lipsync_uuid; END IF;\n"
    "  IF u IS NULL THEN RETURN NULL; END IF;\n"
    "  EXECUTE pg_catalog.format('INSERT INTO %I.%I AS m"
    " (uuid, clock, site, deleted) SELECT $1, _lipsync.tick(), s.site, $2"
    " FROM _lipsync.state s ON CONFLICT (uuid) DO UPDATE SET"
    " clock = EXCLUDED.clock, site = EXCLUDED.site,"
    " deleted = EXCLUDED.deleted', TG_ARGV[0], TG_ARGV[1])"
    " USING u, TG_OP = 'DELETE';\n"
    "  RETURN NULL;\n"
    "END $f$;"
    /* TRUNCATE fires no row trigger: every live item becomes a
     * tombstone, in the TRUNCATE's transaction. */
    "CREATE OR REPLACE FUNCTION _lipsync.capture_truncate() RETURNS trigger"
    " LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $f$\n"
    "BEGIN\n"
    "  EXECUTE pg_catalog.format('UPDATE %I.%I SET clock = _lipsync.tick(),"
    " site = (SELECT site FROM _lipsync.state), deleted = true"
    " WHERE NOT deleted', TG_ARGV[0], TG_ARGV[1]);\n"
    "  RETURN NULL;\n"
    "END $f$;"
    "CREATE OR REPLACE FUNCTION _lipsync.keep_uuid() RETURNS trigger"
    " LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  RAISE EXCEPTION 'lipsync: the _lipsync_uuid of a row cannot change'"
    " USING ERRCODE = 'integrity_constraint_violation';\n"
    "END $f$";

/* Runs |sql|, which returns one row, into |*out| (cleared by the caller),
 * or fails. */
static int query_row(pg_store *s, pg_table *t, const char *sql,
                     const char *what, PGresult **out) {
  PGresult *r = pgs_run(s, sql);
  *out = NULL;
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, t ? t->name : NULL, what);
  if (PQntuples(r) != 1) {
    PQclear(r);
    return pgs_fail(s, LIPSYNC_ERR_STORAGE, "%s%s%s: unexpected result",
                    t ? "table " : "", t ? t->name : "", what);
  }
  *out = r;
  return 0;
}

/* Whether the global objects exist, into s->capture_ready. */
static int check_global(pg_store *s) {
  PGresult *r;
  int rc;
  if (s->capture_ready)
    return 0;
  if ((rc = query_row(s, NULL, check_global_sql, "looking for _lipsync", &r)) !=
      0)
    return rc;
  s->capture_ready = PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  return 0;
}

int pgs_capture_global(pg_store *s) {
  int rc = check_global(s);
  if (rc || s->capture_ready)
    return rc;
  /* The last statement, a CREATE, gives the status of all. */
  rc = pgs_exec_sql(s, install_global_sql, NULL,
                    "installing change capture (schema _lipsync)");
  s->capture_ready = rc == 0;
  return rc;
}

/* "schema.table" as a string literal, for the registry. */
static char *registry_name(pg_store *s, pg_table *t) {
  size_t n = strlen(t->schema) + strlen(t->relname) + 2;
  char *name = malloc(n);
  if (!name)
    return NULL;
  snprintf(name, n, "%s.%s", t->schema, t->relname);
  char *lit = PQescapeLiteral(s->conn, name, strlen(name));
  free(name);
  return lit;
}

int pgs_capture_last_sync(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  PGresult *r;
  int rc;

  t->base.last_sync = 0;
  if ((rc = check_global(s)) != 0 || !s->capture_ready)
    return rc;
  char *lit = registry_name(s, t);
  if (!lit)
    return pgs_fail_nomem(s);
  rc = pgs_putf(&sql,
                "SELECT COALESCE((SELECT last_sync FROM _lipsync.tables"
                " WHERE name = %s), 0)",
                lit);
  PQfreemem(lit);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  rc = query_row(s, t, (const char *)sql.data, "reading last_sync", &r);
  bytebuf_free(&sql);
  if (rc)
    return rc;
  t->base.last_sync = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return 0;
}

/* The item table's quoted name, and the SELECT of its items. */
static int name_items(pg_store *s, pg_table *t) {
  char meta[MAX_IDENTIFIER + 1];
  bytebuf q = {0};
  int rc;

  if (t->meta_qname)
    return 0;
  if (strlen(META_PREFIX) + strlen(t->relname) > MAX_IDENTIFIER)
    return pgs_fail(s, LIPSYNC_ERR_SCHEMA_MISMATCH,
                    "table %s: its name is too long for change capture: "
                    "%s<table> must fit in %d bytes (the name may have at "
                    "most %d)",
                    t->name, META_PREFIX, MAX_IDENTIFIER,
                    (int)(MAX_IDENTIFIER - strlen(META_PREFIX)));
  snprintf(meta, sizeof meta, "%s%s", META_PREFIX, t->relname);
  rc = pgs_put_ident(s, &q, t->schema);
  if (!rc)
    rc = pgs_put(&q, ".");
  if (!rc)
    rc = pgs_put_ident(s, &q, meta);
  if (!(t->meta_qname = pgs_take_cstr(&q, rc)))
    return pgs_fail_nomem(s);
  rc = pgs_putf(&q,
                "SELECT uuid, clock, site, deleted, base_clock, base_site"
                " FROM %s",
                t->meta_qname);
  if (!(t->items_sql = pgs_take_cstr(&q, rc)))
    return pgs_fail_nomem(s);
  return 0;
}

/* Whether the item table exists, and how many capture triggers. */
static int check_table(pg_store *s, pg_table *t, bool *has_meta,
                       int *triggers) {
  bytebuf sql = {0};
  PGresult *r;
  char *lit = PQescapeLiteral(s->conn, t->meta_qname, strlen(t->meta_qname));
  int rc = lit ? 0 : LIPSYNC_ERR_NOMEM;
  if (!rc)
    rc = pgs_putf(&sql,
                  "SELECT pg_catalog.to_regclass(%s) IS NOT NULL,"
                  " (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger"
                  " WHERE tgrelid = %s AND tgname IN"
                  " ('_lipsync_capture_insert', '_lipsync_capture_update',"
                  " '_lipsync_capture_delete', '_lipsync_keep_uuid',"
                  " '_lipsync_capture_truncate'))",
                  lit, t->oid);
  PQfreemem(lit);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  rc = query_row(s, t, (const char *)sql.data, "looking for its items", &r);
  bytebuf_free(&sql);
  if (rc)
    return rc;
  *has_meta = PQgetvalue(r, 0, 0)[0] == 't';
  *triggers = atoi(PQgetvalue(r, 0, 1));
  PQclear(r);
  return 0;
}

/* The triggers (again, if some were dropped), the UUID default, and the
 * registry row. */
static int install_triggers(pg_store *s, pg_table *t) {
  static const char *const names[] = {
      "_lipsync_capture_insert", "_lipsync_capture_update",
      "_lipsync_capture_delete", "_lipsync_keep_uuid",
      "_lipsync_capture_truncate"};
  static const char applying[] =
      "pg_catalog.current_setting('lipsync.applying', true)"
      " IS DISTINCT FROM 'on'";
  char meta[MAX_IDENTIFIER + 1];
  bytebuf sql = {0};
  int rc = 0;

  snprintf(meta, sizeof meta, "%s%s", META_PREFIX, t->relname);
  char *schema_lit = PQescapeLiteral(s->conn, t->schema, strlen(t->schema));
  char *meta_lit = PQescapeLiteral(s->conn, meta, strlen(meta));
  char *reg = registry_name(s, t);
  if (!schema_lit || !meta_lit || !reg)
    rc = LIPSYNC_ERR_NOMEM;
  for (size_t i = 0; i < CAPTURE_TRIGGERS && !rc; i++)
    rc = pgs_putf(&sql, "DROP TRIGGER IF EXISTS %s ON %s;", names[i], t->qname);
  if (!rc)
    rc = pgs_putf(
        &sql,
        "ALTER TABLE %s ALTER COLUMN \"" LIPSYNC_UUID_COLUMN
        "\" SET DEFAULT pg_catalog.gen_random_uuid();"
        "CREATE TRIGGER _lipsync_capture_insert AFTER INSERT ON %s"
        " FOR EACH ROW WHEN (%s) EXECUTE FUNCTION _lipsync.capture(%s, %s);"
        "CREATE TRIGGER _lipsync_capture_update AFTER UPDATE ON %s"
        " FOR EACH ROW WHEN (%s AND OLD::pg_catalog.text IS DISTINCT FROM"
        " NEW::pg_catalog.text) EXECUTE FUNCTION _lipsync.capture(%s, %s);"
        "CREATE TRIGGER _lipsync_capture_delete AFTER DELETE ON %s"
        " FOR EACH ROW WHEN (%s) EXECUTE FUNCTION _lipsync.capture(%s, %s);"
        "CREATE TRIGGER _lipsync_capture_truncate AFTER TRUNCATE ON %s"
        " FOR EACH STATEMENT WHEN (%s)"
        " EXECUTE FUNCTION _lipsync.capture_truncate(%s, %s);"
        "CREATE TRIGGER _lipsync_keep_uuid BEFORE UPDATE ON %s FOR EACH ROW"
        " WHEN (OLD.\"" LIPSYNC_UUID_COLUMN
        "\" IS NOT NULL AND NEW.\"" LIPSYNC_UUID_COLUMN
        "\" IS DISTINCT FROM OLD.\"" LIPSYNC_UUID_COLUMN "\")"
        " EXECUTE FUNCTION _lipsync.keep_uuid();"
        "INSERT INTO _lipsync.tables (name) VALUES (%s)"
        " ON CONFLICT (name) DO NOTHING",
        t->qname, t->qname, applying, schema_lit, meta_lit, t->qname, applying,
        schema_lit, meta_lit, t->qname, applying, schema_lit, meta_lit,
        t->qname, applying, schema_lit, meta_lit, t->qname, reg);
  PQfreemem(schema_lit);
  PQfreemem(meta_lit);
  PQfreemem(reg);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  rc = pgs_exec_sql(s, (const char *)sql.data, t->name,
                    "installing change capture");
  bytebuf_free(&sql);
  return rc;
}

/* Gives every row its initial version (clock 0, site its row digest),
 * reading the rows as a scan does. */
static int initial_items(pg_store *s, pg_table *t) {
  const lipsync_store_methods *m = s->base.methods;
  lipsync_version v = {0};
  canon_hasher h;
  lipsync_cursor *c = NULL;
  lipsync_row row;
  bytebuf lines = {0}, copy = {0};
  int rc;

  if (canon_hasher_init(&h) != 0)
    return pgs_fail_nomem(s);
  rc = pgs_putf(&copy, "COPY %s %s FROM STDIN", t->meta_qname,
                pgs_item_columns(t));
  if (rc || !pgs_cstr(&copy))
    rc = pgs_fail_nomem(s);
  if (!rc)
    rc = m->scan(&s->base, &t->base, NULL, NULL, &c);
  while (!rc && (rc = m->next(c, &row)) == 1) {
    if (canon_row_digest(&h, &row, v.site) != 0 ||
        pgs_item_line(&lines, row.uuid, &v, false, pgs_base_is_version(t)) !=
            0) {
      rc = pgs_fail_nomem(s);
      break;
    }
    rc = 0;
    /* A COPY between two FETCHes of the cursor. */
    if (lines.len >= (8u << 20)) {
      rc = pgs_copy_lines(s, t, (const char *)copy.data, &lines,
                          "giving rows their initial version");
      lines.len = 0;
    }
  }
  if (c)
    m->close_cursor(c);
  if (rc == 0 && lines.len)
    rc = pgs_copy_lines(s, t, (const char *)copy.data, &lines,
                        "giving rows their initial version");
  bytebuf_free(&lines);
  bytebuf_free(&copy);
  canon_hasher_free(&h);
  return rc;
}

/* Items that disagree with the rows (written with capture off) get a
 * fresh version: a row without a live item becomes live, a live item
 * without a row becomes a tombstone. */
static int repair(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  int rc = pgs_putf(
      &sql,
      "INSERT INTO %s AS m (uuid, clock, site, deleted)"
      " SELECT u.id, _lipsync.tick(), (SELECT site FROM _lipsync.state), false"
      " FROM (SELECT DISTINCT r.\"" LIPSYNC_UUID_COLUMN "\" AS id FROM %s r"
      " LEFT JOIN %s i ON i.uuid = r.\"" LIPSYNC_UUID_COLUMN "\""
      " WHERE r.\"" LIPSYNC_UUID_COLUMN "\" IS NOT NULL"
      " AND (i.uuid IS NULL OR i.deleted)) u"
      " ON CONFLICT (uuid) DO UPDATE SET clock = EXCLUDED.clock,"
      " site = EXCLUDED.site, deleted = false;"
      "UPDATE %s i SET clock = _lipsync.tick(),"
      " site = (SELECT site FROM _lipsync.state), deleted = true"
      " WHERE NOT i.deleted AND NOT EXISTS (SELECT 1 FROM %s r"
      " WHERE r.\"" LIPSYNC_UUID_COLUMN "\" = i.uuid)",
      t->meta_qname, t->qname, t->meta_qname, t->meta_qname, t->qname);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  rc = pgs_exec_sql(s, (const char *)sql.data, t->name, "repairing its items");
  bytebuf_free(&sql);
  return rc;
}

/* Runs |sql| (built with |rc| from pgs_putf), a query of one boolean,
 * into |out|; frees |sql|. */
static int query_bool(pg_store *s, pg_table *t, bytebuf *sql, int rc,
                      const char *what, bool *out) {
  PGresult *r;
  if (rc || !pgs_cstr(sql)) {
    bytebuf_free(sql);
    return pgs_fail_nomem(s);
  }
  rc = query_row(s, t, (const char *)sql->data, what, &r);
  bytebuf_free(sql);
  if (rc)
    return rc;
  *out = PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  return 0;
}

/* A cheap check: as many live items as rows. */
static int items_agree(pg_store *s, pg_table *t, bool *agree) {
  bytebuf sql = {0};
  int rc = pgs_putf(&sql,
                    "SELECT (SELECT pg_catalog.count(*) FROM %s) ="
                    " (SELECT pg_catalog.count(*) FROM %s WHERE NOT deleted)",
                    t->qname, t->meta_qname);
  return query_bool(s, t, &sql, rc, "checking its items", agree);
}

static int table_is_empty(pg_store *s, pg_table *t, bool *empty) {
  bytebuf sql = {0};
  int rc = pgs_putf(&sql, "SELECT NOT EXISTS (SELECT 1 FROM %s)", t->qname);
  return query_bool(s, t, &sql, rc, "checking for rows", empty);
}

int pgs_build_meta_key(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  int rc;
  if (!t->meta_key_pending)
    return 0;
  t->meta_key_pending = false;
  rc = pgs_putf(&sql, "ALTER TABLE %s ADD PRIMARY KEY (uuid)", t->meta_qname);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  rc = pgs_exec_sql(s, (const char *)sql.data, t->name, "indexing its items");
  bytebuf_free(&sql);
  return rc;
}

int pgs_capture_prepare(pg_store *s, pg_table *t) {
  bool has_meta = false, agree = true;
  bytebuf sql = {0};
  int triggers = 0, rc;

  if ((rc = name_items(s, t)) != 0 || (rc = pgs_capture_global(s)) != 0 ||
      (rc = check_table(s, t, &has_meta, &triggers)) != 0)
    return rc;
  if (!has_meta) {
    /* The items of a table empty now get their key after the load
     * (pgs_build_meta_key): a key filled in random order is slow. */
    if ((rc = table_is_empty(s, t, &t->meta_key_pending)) != 0)
      return rc;
    rc = pgs_putf(&sql,
                  "CREATE TABLE %s (uuid uuid %s,"
                  " clock bigint NOT NULL, site bytea NOT NULL,"
                  " deleted boolean NOT NULL DEFAULT false,"
                  " base_clock bigint NOT NULL DEFAULT 0, base_site bytea)",
                  t->meta_qname,
                  t->meta_key_pending ? "NOT NULL" : "PRIMARY KEY");
    if (rc || !pgs_cstr(&sql)) {
      bytebuf_free(&sql);
      return pgs_fail_nomem(s);
    }
    rc = pgs_exec_sql(s, (const char *)sql.data, t->name,
                      "creating its item table");
    bytebuf_free(&sql);
    /* The triggers first: the scan leaves its cursor open on the table
     * until the next statement, and ALTER TABLE would wait for it. */
    if (rc || (rc = install_triggers(s, t)) != 0)
      return rc;
    return initial_items(s, t);
  }
  if (triggers != CAPTURE_TRIGGERS) {
    /* Changes made meanwhile went unrecorded. */
    if ((rc = install_triggers(s, t)) != 0)
      return rc;
    agree = false;
  }
  if (agree && !t->uuids_given && (rc = items_agree(s, t, &agree)) != 0)
    return rc;
  return agree && !t->uuids_given ? 0 : repair(s, t);
}

/* An unsigned clock as a bigint literal (clamped). */
static unsigned long long clamp_clock(uint64_t c) {
  return c > CLOCK_MAX ? CLOCK_MAX : (unsigned long long)c;
}

int pgs_finish_table(lipsync_store *store, lipsync_table *table,
                     const lipsync_finish *finish) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  bytebuf sql = {0};
  char *reg = NULL;
  int rc;

  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if (!t->meta_qname)
    return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                    "table %s: finish: the table is not prepared", t->name);
  if ((rc = pgs_copy_end(s)) != 0)
    return rc;
  rc = pgs_putf(&sql, "DELETE FROM %s WHERE deleted AND clock < %llu",
                t->meta_qname, clamp_clock(finish->horizon));
  if (!rc && finish->max_clock)
    rc = pgs_putf(&sql, "; SELECT _lipsync.observe(%llu)",
                  clamp_clock(finish->max_clock));
  if (!rc && finish->as_client) {
    reg = registry_name(s, t);
    rc = reg ? pgs_putf(&sql,
                        "; UPDATE %s SET base_clock = clock, base_site = site"
                        " WHERE base_clock <> clock"
                        " OR base_site IS DISTINCT FROM site;"
                        " INSERT INTO _lipsync.tables (name, last_sync)"
                        " VALUES (%s, %llu) ON CONFLICT (name) DO UPDATE"
                        " SET last_sync = EXCLUDED.last_sync",
                        t->meta_qname, reg, clamp_clock(finish->server_clock))
             : LIPSYNC_ERR_NOMEM;
    PQfreemem(reg);
  }
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  PGresult *r = pgs_run(s, (const char *)sql.data);
  bytebuf_free(&sql);
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    PQclear(r);
    if (finish->as_client)
      t->base.last_sync = finish->server_clock;
    return 0;
  }
  return pgs_expect(s, r, PGRES_COMMAND_OK, t->name, "finish");
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

int pgs_tick(lipsync_store *store, lipsync_version *out) {
  pg_store *s = (pg_store *)store;
  PGresult *r;
  int rc;

  memset(out, 0, sizeof *out);
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((rc = pgs_copy_end(s)) != 0 || (rc = pgs_capture_global(s)) != 0)
    return rc;
  rc = query_row(s, NULL, "SELECT _lipsync.now(), site FROM _lipsync.state",
                 "tick", &r);
  if (rc)
    return rc;
  const char *site = PQgetvalue(r, 0, 1);
  bool ok = strlen(site) == 2 + 2 * LIPSYNC_SITE_LEN && site[0] == '\\' &&
            site[1] == 'x';
  for (size_t i = 0; ok && i < LIPSYNC_SITE_LEN; i++) {
    int hi = hex_digit(site[2 + 2 * i]), lo = hex_digit(site[3 + 2 * i]);
    ok = hi >= 0 && lo >= 0;
    out->site[i] = (uint8_t)(hi << 4 | lo);
  }
  out->clock = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  if (!ok)
    return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                    "tick: _lipsync.state holds no 16-byte site");
  return 0;
}
