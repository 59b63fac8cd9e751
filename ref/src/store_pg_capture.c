/*
 * store_pg_capture.c: change capture in PostgreSQL (spec 6.7, 8.8.6): the
 * objects it needs, installed by the first sync of a table (which needs
 * the CREATE privilege on the database) and brought up to date from an
 * older layout in place, the recount that repairs what escaped capture,
 * the database's identity, the clock, and what a sync records at its end.
 *
 * Per database, in schema _lipsync (layout PG_LAYOUT):
 *   state (one row: site, 16 random bytes of a version 4 UUID; floor;
 *     layout; home, the OID of the database it was made in)
 *   clock, a sequence: the hybrid logical clock's last value
 *   tick() -> bigint: a new clock value, max(last + 1, wall_ms << 16)
 *   observe(bigint): moves the clock up to at least its argument
 *   now() -> bigint: the clock a tick would pass, without moving it
 *   tables (name "schema.table", last_sync; the kept summary sum (16
 *     bytes, big-endian, mod 2^128) and count as of the last fold;
 *     recount, a recount is due; the client's own position and its
 *     checkpoint ck_site, ck_token, ck_position)
 *   peers (tbl, site, token): a server's token per client database
 *   deltas (id, tbl, add_sum, sub_sum, count_delta): what changes since
 *     the fold added to and took away from a table's summary
 *   digest(), hi(), lo(), sum128(): item digests (spec LS-ITEM-1) and
 *     their sums in SQL
 *   capture(), capture_truncate(), keep_uuid(): the trigger functions
 * Per synced table "s"."t": the item table "s"."_lipsync_meta_t" (uuid,
 * clock, site, deleted, base_clock, base_site, xid: the transaction of
 * its last change, rowdig: the row digest the last recount saw), indexed
 * by xid and its tombstones by clock; a default gen_random_uuid() on
 * _lipsync_uuid; AFTER INSERT / UPDATE / DELETE triggers
 * _lipsync_capture_{insert,update,delete} and a statement trigger
 * _lipsync_capture_truncate that record a new version per changed row
 * but for the statements of a transaction that set lipsync.applying =
 * 'on' (every sync does; what runs in response to them is recorded),
 * and a BEFORE UPDATE trigger _lipsync_keep_uuid that refuses a change of
 * a row's _lipsync_uuid, even in a sync.
 *
 * On an ordinary table the three capture triggers are statement triggers
 * with transition tables, calling the table's own function
 * "s"."_lipsync_cap_t"() (store_pg_stmt.c), whose statements name the
 * item table and so keep their plans: a bulk write costs a few set-based
 * statements, not a PL/pgSQL call per row. A partitioned table, a
 * partition or a table in an inheritance tree keeps row triggers
 * (capture()): a statement trigger fires only on the table the statement
 * names, and a row written through a parent or straight into a partition
 * would escape it. A table whose triggers are of the other form gets the
 * right one at its next prepare; a recount follows only the change to
 * row triggers (a write through a parent may have escaped).
 *
 * Sessions run concurrently and at REPEATABLE READ, where updating a row
 * that another transaction updated since the snapshot fails: so nothing
 * that every writer would update is kept in one row. A change appends a
 * delta row; the kept summary of a table is its registry row plus the
 * delta rows the snapshot holds (store_pg_changes.c), and maintenance
 * folds them in, outside any sync. For the same reason the clock is a
 * sequence (ticks never wait on another transaction's commit) and a sync
 * observes clocks by moving the sequence, not by writing state.
 *
 * A row inserted with an explicit NULL _lipsync_uuid (the default covers
 * every other insert) is left without one, and without an item, until the
 * next sync's prepare gives it one and recounts: a BEFORE INSERT trigger
 * would cost every COPY its batching.
 */
#include "canon.h"
#include "store_pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAPTURE_TRIGGERS 5
/* The layout of schema _lipsync this code writes (state.layout): 3 adds
 * the item digests' sums, positions, checkpoints and tokens. */
#define PG_LAYOUT 3
/* The advisory lock key of the clock: "lipsync" as a big-endian integer. */
#define CLOCK_LOCK "30515229179342435"
/* The largest bigint. */
#define CLOCK_MAX 9223372036854775807ull
/* 2^64 and 2^128, for sums of digests as numeric. */
#define TWO_64 "18446744073709551616"
#define TWO_128 "340282366920938463463374607431768211456"
#define THIS_DATABASE                                                          \
  "(SELECT oid FROM pg_catalog.pg_database WHERE datname ="                    \
  " pg_catalog.current_database())"
/* PL/pgSQL: |body| holding the clock's session-level advisory lock, which
 * is let go whatever happens (a setval must never move the clock back). */
#define UNDER_CLOCK_LOCK(body)                                                 \
  "    PERFORM pg_catalog.pg_advisory_lock(" CLOCK_LOCK ");\n"                 \
  "    BEGIN\n" body "    EXCEPTION WHEN OTHERS THEN\n"                        \
  "      PERFORM pg_catalog.pg_advisory_unlock(" CLOCK_LOCK ");\n"             \
  "      RAISE;\n"                                                             \
  "    END;\n"                                                                 \
  "    PERFORM pg_catalog.pg_advisory_unlock(" CLOCK_LOCK ");\n"
/* The part of tick() and observe() that moves the clock up. */
#define TICK_LOCKED                                                            \
  UNDER_CLOCK_LOCK("      h := pg_catalog.nextval('_lipsync.clock');\n"        \
                   "      IF h < w THEN\n"                                     \
                   "        PERFORM pg_catalog.setval('_lipsync.clock', w);\n" \
                   "        h := w;\n"                                         \
                   "      END IF;\n")
#define OBSERVE_LOCKED                                                         \
  UNDER_CLOCK_LOCK(                                                            \
      "      IF (SELECT last_value FROM _lipsync.clock) < c THEN\n"            \
      "        PERFORM pg_catalog.setval('_lipsync.clock', c);\n"              \
      "      END IF;\n")
#define APPLYING_OFF                                                           \
  "pg_catalog.current_setting('lipsync.applying', true)"                       \
  " IS DISTINCT FROM 'on'"
/* When the capture triggers of table %s (its registry name, a literal)
 * record a write: always, but for the sync's own statements. What the
 * database does in response to them runs at a trigger depth above 0: in
 * another table (a foreign key's ON DELETE CASCADE or SET NULL, a
 * trigger) it is a local change like any other (spec LS-CAPTURE-10); in
 * the table the sync writes (lipsync.writing, pgs_writing), typically a
 * trigger that stamps the row it applies, it is part of applying the row,
 * as a BEFORE trigger's change would be, and left alone: recorded, it
 * would travel back and be stamped again there, without end. */
#define CAPTURING_FMT                                                          \
  "(" APPLYING_OFF " OR (pg_catalog.pg_trigger_depth() > 0 AND"                \
  " pg_catalog.current_setting('lipsync.writing', true) IS DISTINCT FROM"      \
  " %s))"
/* The mark of a trigger that CAPTURING_FMT guards, in its definition. */
#define CAPTURING_MARK "lipsync.writing"

static const char check_global_sql[] =
    "SELECT COALESCE((SELECT true FROM pg_catalog.pg_attribute"
    " WHERE attrelid = pg_catalog.to_regclass('_lipsync.state')"
    " AND attname = 'layout' AND NOT attisdropped), false)"
    " AND pg_catalog.to_regclass('_lipsync.clock') IS NOT NULL"
    " AND pg_catalog.to_regclass('_lipsync.tables') IS NOT NULL"
    " AND pg_catalog.to_regclass('_lipsync.peers') IS NOT NULL"
    " AND pg_catalog.to_regclass('_lipsync.deltas') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.tick()') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.observe(bigint)') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.now()') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.capture()') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.keep_uuid()') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.capture_truncate()')"
    " IS NOT NULL"
    " AND pg_catalog.to_regprocedure("
    "'_lipsync.digest(uuid, bigint, bytea, boolean)') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.hi(bytea)') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.lo(bytea)') IS NOT NULL"
    " AND pg_catalog.to_regprocedure('_lipsync.sum128(numeric, numeric)')"
    " IS NOT NULL";

/* Every statement is idempotent and brings an older layout up to this
 * one; the transaction-level lock makes a second installer wait for the
 * first. */
static const char install_global_sql[] =
    "SELECT pg_catalog.pg_advisory_xact_lock(" CLOCK_LOCK ");"
    "CREATE SCHEMA IF NOT EXISTS _lipsync;"
    "CREATE TABLE IF NOT EXISTS _lipsync.state ("
    " one boolean PRIMARY KEY DEFAULT true CHECK (one),"
    " site bytea NOT NULL CHECK (pg_catalog.length(site) = 16),"
    " floor bigint NOT NULL DEFAULT 0);"
    "ALTER TABLE _lipsync.state ADD COLUMN IF NOT EXISTS layout integer"
    " NOT NULL DEFAULT 0, ADD COLUMN IF NOT EXISTS home oid;"
    /* Another installer's row, committed after this snapshot, is a
     * serialization failure: TRY_AGAIN. */
    "INSERT INTO _lipsync.state (site, home) SELECT pg_catalog.decode("
    "pg_catalog.replace(pg_catalog.gen_random_uuid()::pg_catalog.text, '-',"
    " ''), 'hex'), " THIS_DATABASE " ON CONFLICT (one) DO NOTHING;"
    "UPDATE _lipsync.state SET home = " THIS_DATABASE " WHERE home IS NULL;"
    "CREATE SEQUENCE IF NOT EXISTS _lipsync.clock AS bigint MINVALUE 1;"
    "CREATE TABLE IF NOT EXISTS _lipsync.tables (name text PRIMARY KEY,"
    " last_sync bigint NOT NULL DEFAULT 0);"
    "ALTER TABLE _lipsync.tables ADD COLUMN IF NOT EXISTS sum bytea,"
    " ADD COLUMN IF NOT EXISTS count bigint NOT NULL DEFAULT 0,"
    " ADD COLUMN IF NOT EXISTS recount boolean NOT NULL DEFAULT false,"
    " ADD COLUMN IF NOT EXISTS position bytea,"
    " ADD COLUMN IF NOT EXISTS ck_site bytea,"
    " ADD COLUMN IF NOT EXISTS ck_token bytea,"
    " ADD COLUMN IF NOT EXISTS ck_position bytea;"
    "CREATE TABLE IF NOT EXISTS _lipsync.peers (tbl text, site bytea,"
    " token bytea NOT NULL, PRIMARY KEY (tbl, site));"
    "CREATE TABLE IF NOT EXISTS _lipsync.deltas (id bigserial PRIMARY KEY,"
    " tbl text NOT NULL, add_sum bytea, sub_sum bytea,"
    " count_delta bigint NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS deltas_tbl ON _lipsync.deltas (tbl);"
    /* A new clock value: strictly above every earlier one and every clock
     * a committed sync of an earlier layout observed (state.floor), and
     * at least the wall clock's milliseconds << 16. */
    "CREATE OR REPLACE FUNCTION _lipsync.tick() RETURNS bigint"
    " LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $f$\n"
    "DECLARE h bigint; w bigint;\n"
    "BEGIN\n"
    "  h := pg_catalog.nextval('_lipsync.clock');\n"
    "  w := GREATEST(pg_catalog.floor(pg_catalog.date_part("
    "'epoch', pg_catalog.clock_timestamp()) * 1000)::bigint << 16,"
    " (SELECT floor + 1 FROM _lipsync.state));\n"
    "  IF h < w THEN\n" TICK_LOCKED "  END IF;\n"
    "  RETURN h;\n"
    "END $f$;"
    /* Observing moves the sequence, which is not transactional: a sync
     * that fails afterwards leaves the clock ahead, which is harmless, and
     * concurrent syncs never wait on each other's state row. */
    "CREATE OR REPLACE FUNCTION _lipsync.observe(c bigint) RETURNS void"
    " LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $f$\n"
    "BEGIN\n"
    "  IF (SELECT last_value FROM _lipsync.clock) < c THEN\n" OBSERVE_LOCKED
    "  END IF;\n"
    "END $f$;"
    /* The clock now, without moving it: what a server reports. */
    "CREATE OR REPLACE FUNCTION _lipsync.now() RETURNS bigint"
    " LANGUAGE sql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $f$"
    " SELECT GREATEST((SELECT last_value + 1 FROM _lipsync.clock),"
    " (SELECT floor + 1 FROM _lipsync.state),"
    " pg_catalog.floor(pg_catalog.date_part('epoch',"
    " pg_catalog.clock_timestamp()) * 1000)::bigint << 16)"
    " $f$;"
    /* The item digest (spec LS-ITEM-1), and a digest's two halves: the
     * high one as a signed bigint (what it loses, a multiple of 2^128, the
     * sum mod 2^128 loses anyway), the low one unsigned, as numeric; sums
     * of halves make a sum mod 2^128 (sum128). Plain SQL, so that the
     * planner inlines them. */
    "CREATE OR REPLACE FUNCTION _lipsync.digest(u uuid, c bigint, s bytea,"
    " d boolean) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$"
    " SELECT pg_catalog.substr(pg_catalog.sha256(pg_catalog.uuid_send(u)"
    " OPERATOR(pg_catalog.||) pg_catalog.int8send(c) OPERATOR(pg_catalog.||)"
    " s OPERATOR(pg_catalog.||) pg_catalog.decode(CASE WHEN d THEN '01'"
    " ELSE '00' END, 'hex')), 1, 16) $f$;"
    "CREATE OR REPLACE FUNCTION _lipsync.hi(b bytea) RETURNS bigint"
    " LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$"
    " SELECT ('x' OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.substr("
    "b, 1, 8), 'hex'))::pg_catalog.bit(64)::bigint $f$;"
    "CREATE OR REPLACE FUNCTION _lipsync.lo(b bytea) RETURNS numeric"
    " LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$"
    " SELECT ('x' OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.substr("
    "b, 9, 8), 'hex'))::pg_catalog.bit(64)::bigint::numeric + CASE WHEN"
    " pg_catalog.get_byte(b, 8) >= 128 THEN " TWO_64 " ELSE 0 END $f$;"
    "CREATE OR REPLACE FUNCTION _lipsync.sum128(h numeric, l numeric)"
    " RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$"
    " SELECT pg_catalog.int8send((v.h - CASE WHEN v.h >= 9223372036854775808"
    " THEN " TWO_64 " ELSE 0 END)::bigint) OPERATOR(pg_catalog.||)"
    " pg_catalog.int8send((v.l - CASE WHEN v.l >= 9223372036854775808"
    " THEN " TWO_64 " ELSE 0 END)::bigint)"
    " FROM (SELECT pg_catalog.div(x.x, " TWO_64
    ") AS h, pg_catalog.mod(x.x, " TWO_64
    ") AS l FROM (SELECT pg_catalog.mod(pg_catalog.mod("
    "COALESCE(h, 0) * " TWO_64 " + COALESCE(l, 0), " TWO_128 ") + " TWO_128
    ", " TWO_128 ") AS x) AS x) AS v $f$;"
    /* TG_ARGV: the item table's schema and name, and the table's registry
     * name. Runs as the installer, so any role that may write the table
     * records its changes. The old state is locked first: a concurrent
     * change of the item is waited for, so that each delta row subtracts
     * the state the one before added. A table of an earlier layout (two
     * arguments) keeps its behaviour until its next sync migrates it. */
    "CREATE OR REPLACE FUNCTION _lipsync.capture() RETURNS trigger"
    " LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $f$\n"
    "DECLARE u uuid; d boolean; c bigint; s bytea; oc bigint; os bytea;"
    " od boolean; n bigint;\n"
    "BEGIN\n"
    "  IF TG_OP = 'DELETE' THEN u := OLD._lipsync_uuid;"
    " ELSE u := NEW._lipsync_uuid; END IF;\n"
    "  IF u IS NULL THEN RETURN NULL; END IF;\n"
    "  d := TG_OP = 'DELETE';\n"
    "  IF TG_NARGS < 3 THEN\n"
    "    EXECUTE format('INSERT INTO %I.%I AS m (uuid, clock, site, deleted)"
    " SELECT $1, _lipsync.tick(), s.site, $2 FROM _lipsync.state s"
    " ON CONFLICT (uuid) DO UPDATE SET clock = EXCLUDED.clock,"
    " site = EXCLUDED.site, deleted = EXCLUDED.deleted', TG_ARGV[0],"
    " TG_ARGV[1]) USING u, d;\n"
    "    RETURN NULL;\n"
    "  END IF;\n"
    "  c := _lipsync.tick();\n"
    "  SELECT site INTO s FROM _lipsync.state;\n"
    "  EXECUTE format('UPDATE %1$I.%2$I AS m SET clock = $2, site = $3,"
    " deleted = $4, xid = pg_catalog.pg_current_xact_id(), rowdig = NULL"
    " FROM (SELECT uuid, clock, site, deleted FROM %1$I.%2$I"
    " WHERE uuid = $1 FOR UPDATE) AS o WHERE m.uuid = o.uuid"
    " RETURNING o.clock, o.site, o.deleted', TG_ARGV[0], TG_ARGV[1])"
    " INTO oc, os, od USING u, c, s, d;\n"
    "  GET DIAGNOSTICS n = ROW_COUNT;\n"
    "  IF n = 0 THEN\n"
    "    EXECUTE format('INSERT INTO %I.%I (uuid, clock, site, deleted)"
    " VALUES ($1, $2, $3, $4)', TG_ARGV[0], TG_ARGV[1]) USING u, c, s, d;\n"
    "  END IF;\n"
    "  INSERT INTO _lipsync.deltas (tbl, add_sum, sub_sum, count_delta)"
    " VALUES (TG_ARGV[2], _lipsync.digest(u, c, s, d), CASE WHEN n > 0"
    " THEN _lipsync.digest(u, oc, os, od) END, CASE WHEN n > 0 THEN 0"
    " ELSE 1 END);\n"
    "  RETURN NULL;\n"
    "END $f$;"
    /* TRUNCATE fires no row trigger: every live item becomes a
     * tombstone, in the TRUNCATE's transaction, with one delta row. */
    "CREATE OR REPLACE FUNCTION _lipsync.capture_truncate() RETURNS trigger"
    " LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS $f$\n"
    "BEGIN\n"
    "  IF TG_NARGS < 3 THEN\n"
    "    EXECUTE format('UPDATE %I.%I SET clock = _lipsync.tick(),"
    " site = (SELECT site FROM _lipsync.state), deleted = true"
    " WHERE NOT deleted', TG_ARGV[0], TG_ARGV[1]);\n"
    "    RETURN NULL;\n"
    "  END IF;\n"
    "  EXECUTE format('WITH c AS (UPDATE %1$I.%2$I AS m"
    " SET clock = _lipsync.tick(), site = s.site, deleted = true,"
    " xid = pg_catalog.pg_current_xact_id(), rowdig = NULL"
    " FROM _lipsync.state AS s, (SELECT uuid, clock, site FROM %1$I.%2$I"
    " WHERE NOT deleted FOR UPDATE) AS o WHERE m.uuid = o.uuid"
    " RETURNING _lipsync.digest(m.uuid, m.clock, m.site, true) AS a,"
    " _lipsync.digest(o.uuid, o.clock, o.site, false) AS b)"
    " INSERT INTO _lipsync.deltas (tbl, add_sum, sub_sum)"
    " SELECT $1, _lipsync.sum128(sum(_lipsync.hi(a)), sum(_lipsync.lo(a))),"
    " _lipsync.sum128(sum(_lipsync.hi(b)), sum(_lipsync.lo(b))) FROM c"
    " HAVING pg_catalog.count(*) > 0', TG_ARGV[0], TG_ARGV[1])"
    " USING TG_ARGV[2];\n"
    "  RETURN NULL;\n"
    "END $f$;"
    "CREATE OR REPLACE FUNCTION _lipsync.keep_uuid() RETURNS trigger"
    " LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n"
    "  RAISE EXCEPTION 'lipsync: the _lipsync_uuid of a row cannot change'"
    " USING ERRCODE = 'integrity_constraint_violation';\n"
    "END $f$;"
    "UPDATE _lipsync.state SET layout = 3 WHERE layout < 3";

/* ------------------------------------------------------------------ */
/* The database                                                         */
/* ------------------------------------------------------------------ */

static int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* Reads 16 bytes from 32 hex digits. */
static bool parse_site(const char *hex, uint8_t site[LIPSYNC_SITE_LEN]) {
  if (strlen(hex) != 2 * LIPSYNC_SITE_LEN)
    return false;
  for (size_t i = 0; i < LIPSYNC_SITE_LEN; i++) {
    int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    site[i] = (uint8_t)(hi << 4 | lo);
  }
  return true;
}

/* The state row: its layout, whether the database is where it was made,
 * and the site id. No row in this snapshot: another sync made it since. */
static int read_state(pg_store *s, int *layout, bool *home) {
  bytebuf sql = {0};
  PGresult *r;
  int rc = pgs_put(&sql,
                   "SELECT s.layout, s.home IS NOT DISTINCT FROM " THIS_DATABASE
                   ", pg_catalog.encode(s.site, 'hex')"
                   " FROM _lipsync.state s");
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  r = pgs_run(s, (const char *)sql.data);
  bytebuf_free(&sql);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, NULL, "reading _lipsync.state");
  if (PQntuples(r) != 1) {
    PQclear(r);
    return pgs_fail(s, LIPSYNC_ERR_TRY_AGAIN,
                    "another sync installed change capture in this database"
                    " after this one began; nothing was changed, sync again");
  }
  *layout = atoi(PQgetvalue(r, 0, 0));
  *home = PQgetvalue(r, 0, 1)[0] == 't';
  s->site_known = parse_site(PQgetvalue(r, 0, 2), s->site);
  PQclear(r);
  return s->site_known ? 0
                       : pgs_fail(s, LIPSYNC_ERR_STORAGE,
                                  "_lipsync.state holds no 16-byte site id");
}

/* A database found elsewhere than where it made its site id (restored
 * from a dump into another database, or created from it as a template) is
 * a copy: it takes a new site id before it makes any version (spec
 * LS-VERSION-4), and its checkpoints and tokens, which name the old one,
 * go. */
static int settle_home(pg_store *s) {
  static const char sql[] =
      "UPDATE _lipsync.state SET site = pg_catalog.decode(pg_catalog.replace("
      "pg_catalog.gen_random_uuid()::pg_catalog.text, '-', ''), 'hex'),"
      " home = " THIS_DATABASE ";"
      "UPDATE _lipsync.tables SET position = NULL, ck_site = NULL,"
      " ck_token = NULL, ck_position = NULL;"
      "DELETE FROM _lipsync.peers";
  int layout, rc;
  bool home;
  if ((rc = pgs_exec_sql(s, sql, NULL, "giving a copied database a site id")) !=
          0 ||
      (rc = read_state(s, &layout, &home)) != 0)
    return rc;
  return home ? 0
              : pgs_fail(s, LIPSYNC_ERR_STORAGE,
                         "giving a copied database a site id: it did not"
                         " take");
}

/* The first object under the reserved prefix "_lipsync" (spec LS-OPEN-4,
 * any case) that this code does not make: a relation outside schema
 * _lipsync but for the items tables, a trigger other than capture's, a
 * schema other than _lipsync; or a state table without the site id every
 * layout of this code has. One row: the object, or NULL. */
static const char foreign_sql[] =
    "SELECT (SELECT o FROM ("
    " SELECT 'table ' || n.nspname || '.' || c.relname AS o"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
    " ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')"
    " AND n.nspname <> '_lipsync' AND n.nspname NOT LIKE 'pg\\_%'"
    " AND c.relname ILIKE '\\_lipsync%'"
    " AND c.relname NOT LIKE '\\_lipsync\\_meta\\_%'"
    " UNION ALL SELECT 'trigger ' || t.tgname FROM pg_catalog.pg_trigger t"
    " WHERE NOT t.tgisinternal AND t.tgname ILIKE '\\_lipsync%'"
    " AND t.tgname NOT IN (" PG_TRIGGER_NAMES ")"
    " UNION ALL SELECT 'schema ' || nspname FROM pg_catalog.pg_namespace"
    " WHERE nspname ILIKE '\\_lipsync%' AND nspname <> '_lipsync'"
    " UNION ALL SELECT 'table _lipsync.state without column site'"
    " WHERE pg_catalog.to_regclass('_lipsync.state') IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute"
    " WHERE attrelid = pg_catalog.to_regclass('_lipsync.state')"
    " AND attname = 'site' AND NOT attisdropped)) f ORDER BY o LIMIT 1)";

static int check_owner(pg_store *s) {
  bytebuf sql = {0};
  PGresult *r;
  int rc = pgs_put(&sql, foreign_sql);
  if ((rc = pgs_query_row(s, NULL, &sql, rc, "looking for foreign capture",
                          false, &r)) != 0)
    return rc;
  if (!PQgetisnull(r, 0, 0))
    rc = pgs_fail(s, LIPSYNC_ERR_STORAGE,
                  "the database holds %s: change-capture metadata that this "
                  "implementation does not own or understand (another "
                  "implementation's, or a newer version's); nothing was "
                  "changed",
                  PQgetvalue(r, 0, 0));
  PQclear(r);
  return rc;
}

/* Whether the global objects of this layout exist, and the database is
 * where it made its site id, read without writing, once per snapshot. */
static int global_ready(pg_store *s, bool *ready, bool *home) {
  bytebuf sql = {0};
  int layout = 0, rc;
  if (s->global_checked) {
    *ready = s->global_current;
    *home = s->global_home;
    return 0;
  }
  *home = true;
  if ((rc = check_owner(s)) != 0) /* spec LS-CAPTURE-8 */
    return rc;
  rc = pgs_put(&sql, check_global_sql);
  if ((rc = pgs_query_bool(s, NULL, &sql, rc, "looking for _lipsync", ready)) !=
          0 ||
      (*ready && (rc = read_state(s, &layout, home)) != 0))
    return rc;
  if (*ready && layout > PG_LAYOUT) /* spec LS-CAPTURE-8 */
    return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                    "the database holds schema _lipsync of layout %d (this "
                    "version knows layouts up to %d): change-capture "
                    "metadata that this implementation does not understand "
                    "(a newer version's); nothing was changed",
                    layout, PG_LAYOUT);
  *ready = *ready && layout >= PG_LAYOUT;
  s->global_checked = true;
  s->global_current = *ready;
  s->global_home = *home;
  return 0;
}

int pgs_capture_check_owner(pg_store *s) {
  bool ready, home;
  return global_ready(s, &ready, &home);
}

int pgs_capture_global(pg_store *s) {
  bool ready, home;
  int layout, rc;
  if (s->capture_ready)
    return 0;
  if ((rc = global_ready(s, &ready, &home)) != 0)
    return rc;
  if (!ready) {
    /* The last statement, an UPDATE, gives the status of all. */
    if ((rc = pgs_exec_sql(s, install_global_sql, NULL,
                           "installing change capture (schema _lipsync)")) !=
            0 ||
        (rc = read_state(s, &layout, &home)) != 0)
      return rc;
  }
  if (!home && (rc = settle_home(s)) != 0)
    return rc;
  s->capture_ready = true;
  return 0;
}

int pgs_capture_site(pg_store *s, uint8_t site[LIPSYNC_SITE_LEN]) {
  int rc;
  if (!s->site_known && (rc = pgs_capture_global(s)) != 0)
    return rc;
  memcpy(site, s->site, LIPSYNC_SITE_LEN);
  return 0;
}

/* The registry exists (of any layout). */
static int has_registry(pg_store *s, bool *found) {
  bytebuf sql = {0};
  int rc = pgs_put(&sql, "SELECT pg_catalog.to_regclass('_lipsync.tables')"
                         " IS NOT NULL");
  return pgs_query_bool(s, NULL, &sql, rc, "looking for _lipsync", found);
}

int pgs_capture_last_sync(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  PGresult *r;
  bool found;
  int rc;

  t->base.last_sync = 0;
  if ((rc = has_registry(s, &found)) != 0 || !found)
    return rc;
  rc = pgs_putf(&sql,
                "SELECT COALESCE((SELECT last_sync FROM _lipsync.tables"
                " WHERE name = %s), 0)",
                t->reg_lit);
  if ((rc = pgs_query_row(s, t, &sql, rc, "reading last_sync", false, &r)) != 0)
    return rc;
  t->base.last_sync = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return 0;
}

char *pgs_registry_name(const char *name) {
  const char *dot = strchr(name, '.');
  size_t n = strlen(name) + sizeof "public.";
  char *out = malloc(n);
  if (out)
    snprintf(out, n, "%s%s", dot ? "" : "public.", name);
  return out;
}

/* ------------------------------------------------------------------ */
/* A table's objects                                                    */
/* ------------------------------------------------------------------ */

/* "schema"."<prefix><table>" for |t|, quoted (malloc'd), or NULL. */
static char *beside(pg_store *s, const pg_table *t, const char *prefix) {
  char name[MAX_IDENTIFIER + 1];
  bytebuf q = {0};
  snprintf(name, sizeof name, "%s%s", prefix, t->relname);
  int rc = pgs_put_ident(s, &q, t->schema);
  if (!rc)
    rc = pgs_put(&q, ".");
  if (!rc)
    rc = pgs_put_ident(s, &q, name);
  return pgs_take_cstr(&q, rc);
}

/* The item table's quoted name, the SELECT of its items, and the quoted
 * name of the table's capture function (and its signature, a literal). */
static int name_items(pg_store *s, pg_table *t) {
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
  if (!(t->meta_qname = beside(s, t, META_PREFIX)) ||
      !(t->cap_qname = beside(s, t, CAP_PREFIX)))
    return pgs_fail_nomem(s);
  rc = pgs_putf(&q,
                "SELECT uuid, clock, site, deleted, base_clock, base_site"
                " FROM %s",
                t->meta_qname);
  if (!(t->items_sql = pgs_take_cstr(&q, rc)))
    return pgs_fail_nomem(s);
  rc = pgs_putf(&q, "%s()", t->cap_qname);
  char *sig = pgs_take_cstr(&q, rc);
  t->cap_lit = sig ? PQescapeLiteral(s->conn, sig, strlen(sig)) : NULL;
  free(sig);
  return t->cap_lit ? 0 : pgs_fail_nomem(s);
}

/* What prepare finds of a table's capture, in one round trip, once per
 * snapshot. */
static int check_table(pg_store *s, pg_table *t, pg_facts *f) {
  static const char names[] =
      "('_lipsync_capture_insert', '_lipsync_capture_update',"
      " '_lipsync_capture_delete', '_lipsync_capture_truncate')";
  bytebuf sql = {0};
  PGresult *r;
  char *lit;
  int rc;
  if (t->facts_known) {
    *f = t->facts;
    return 0;
  }
  lit = PQescapeLiteral(s->conn, t->meta_qname, strlen(t->meta_qname));
  rc = lit ? 0 : LIPSYNC_ERR_NOMEM;
  /* A capture trigger of this layout: the TRUNCATE one with three
   * arguments; the others, row triggers (tgtype's bit 0) with three, or
   * statement triggers calling the table's own function. Current: of the
   * right form (statement triggers exactly on an ordinary table outside
   * any partitioning or inheritance, p.plain) and guarded by CAPTURING_FMT
   * (older ones skipped every write of a sync, nested ones included). */
  if (!rc)
    rc = pgs_putf(
        &sql,
        "SELECT pg_catalog.to_regclass(%s) IS NOT NULL,"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE oid ="
        " pg_catalog.to_regclass(%s)),"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid ="
        " pg_catalog.to_regclass(%s) AND attname = 'xid' AND NOT"
        " attisdropped),"
        " pg_catalog.count(*) FILTER (WHERE (g.tgname IN"
        " ('_lipsync_keep_uuid', '_lipsync_capture_truncate') OR g.stmt ="
        " p.plain) AND g.guarded),"
        " COALESCE((SELECT sum IS NOT NULL AND NOT recount FROM"
        " _lipsync.tables WHERE name = %s), false),"
        " p.plain, pg_catalog.count(g.tgname)"
        " FROM (SELECT c.relkind = 'r' AND NOT c.relispartition AND NOT"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE"
        " i.inhrelid = c.oid OR i.inhparent = c.oid) AS plain"
        " FROM pg_catalog.pg_class c WHERE c.oid = %s) AS p"
        " LEFT JOIN (SELECT tgname, (tgtype::pg_catalog.int4 & 1) = 0 AS stmt,"
        " tgname = '_lipsync_keep_uuid' OR pg_catalog.strpos("
        "pg_catalog.pg_get_triggerdef(oid), '" CAPTURING_MARK "') > 0"
        " AS guarded FROM pg_catalog.pg_trigger WHERE tgrelid = %s AND"
        " (tgname = '_lipsync_keep_uuid' OR (tgname IN %s AND"
        " CASE WHEN (tgtype::pg_catalog.int4 & 1) = 0 AND tgname <>"
        " '_lipsync_capture_truncate' THEN tgfoid ="
        " pg_catalog.to_regprocedure(%s) ELSE tgnargs = 3 END))) AS g"
        " ON true GROUP BY p.plain",
        lit, lit, lit, t->reg_lit, t->oid, t->oid, names, t->cap_lit);
  PQfreemem(lit);
  if ((rc = pgs_query_row(s, t, &sql, rc, "looking for its items", false,
                          &r)) != 0)
    return rc;
  f->meta = PQgetvalue(r, 0, 0)[0] == 't';
  f->meta_visible = PQgetvalue(r, 0, 1)[0] == 't';
  f->layout = PQgetvalue(r, 0, 2)[0] == 't';
  f->current = atoi(PQgetvalue(r, 0, 3));
  f->summary = PQgetvalue(r, 0, 4)[0] == 't';
  f->plain = PQgetvalue(r, 0, 5)[0] == 't';
  f->present = atoi(PQgetvalue(r, 0, 6));
  PQclear(r);
  t->facts = *f;
  t->facts_known = true;
  return 0;
}

/* The triggers (again, if some were dropped, are of an older layout or of
 * the other form), the UUID default, and the registry row. |plain|: an
 * ordinary table outside any partitioning or inheritance, whose capture
 * triggers are statement triggers. */
static int install_triggers(pg_store *s, pg_table *t, bool plain) {
  /* The triggers that record rows: the transition tables of the statement
   * form, the condition the row form adds to CAPTURING_FMT. */
  static const struct {
    const char *name, *event, *transition, *changed;
  } recorders[] = {
      {"_lipsync_capture_insert", "INSERT", "NEW TABLE AS _lipsync_new", ""},
      {"_lipsync_capture_update", "UPDATE",
       "OLD TABLE AS _lipsync_old NEW TABLE AS _lipsync_new",
       " AND OLD::pg_catalog.text IS DISTINCT FROM NEW::pg_catalog.text"},
      {"_lipsync_capture_delete", "DELETE", "OLD TABLE AS _lipsync_old", ""}};
  static const char *const names[] = {
      "_lipsync_capture_insert", "_lipsync_capture_update",
      "_lipsync_capture_delete", "_lipsync_keep_uuid",
      "_lipsync_capture_truncate"};
  char meta[MAX_IDENTIFIER + 1], args[512];
  bytebuf sql = {0};
  int rc = 0;

  snprintf(meta, sizeof meta, "%s%s", META_PREFIX, t->relname);
  char *schema_lit = PQescapeLiteral(s->conn, t->schema, strlen(t->schema));
  char *meta_lit = PQescapeLiteral(s->conn, meta, strlen(meta));
  if (!schema_lit || !meta_lit)
    rc = LIPSYNC_ERR_NOMEM;
  else
    snprintf(args, sizeof args, "%s, %s, %s", schema_lit, meta_lit, t->reg_lit);
  PQfreemem(schema_lit);
  PQfreemem(meta_lit);
  bytebuf g = {0};
  char *guard =
      rc ? NULL : pgs_take_cstr(&g, pgs_putf(&g, CAPTURING_FMT, t->reg_lit));
  if (!guard)
    rc = LIPSYNC_ERR_NOMEM;
  for (size_t i = 0; i < CAPTURE_TRIGGERS && !rc; i++)
    rc = pgs_putf(&sql, "DROP TRIGGER IF EXISTS %s ON %s;", names[i], t->qname);
  if (!rc)
    rc = pgs_putf(&sql,
                  "ALTER TABLE %s ALTER COLUMN \"" LIPSYNC_UUID_COLUMN
                  "\" SET DEFAULT pg_catalog.gen_random_uuid();",
                  t->qname);
  if (!rc && plain)
    rc = pgs_put_capture_function(s, t, &sql);
  for (size_t i = 0; i < 3 && !rc; i++)
    rc = plain ? pgs_putf(&sql,
                          "CREATE TRIGGER %s AFTER %s ON %s REFERENCING %s"
                          " FOR EACH STATEMENT WHEN %s"
                          " EXECUTE FUNCTION %s();",
                          recorders[i].name, recorders[i].event, t->qname,
                          recorders[i].transition, guard, t->cap_qname)
               : pgs_putf(&sql,
                          "CREATE TRIGGER %s AFTER %s ON %s FOR EACH ROW"
                          " WHEN (%s%s)"
                          " EXECUTE FUNCTION _lipsync.capture(%s);",
                          recorders[i].name, recorders[i].event, t->qname,
                          guard, recorders[i].changed, args);
  if (!rc)
    rc = pgs_putf(
        &sql,
        "CREATE TRIGGER _lipsync_capture_truncate AFTER TRUNCATE ON %s"
        " FOR EACH STATEMENT WHEN %s"
        " EXECUTE FUNCTION _lipsync.capture_truncate(%s);"
        "CREATE TRIGGER _lipsync_keep_uuid BEFORE UPDATE ON %s FOR EACH ROW"
        " WHEN (OLD.\"" LIPSYNC_UUID_COLUMN
        "\" IS NOT NULL AND NEW.\"" LIPSYNC_UUID_COLUMN
        "\" IS DISTINCT FROM OLD.\"" LIPSYNC_UUID_COLUMN "\")"
        " EXECUTE FUNCTION _lipsync.keep_uuid();"
        "INSERT INTO _lipsync.tables (name) VALUES (%s)"
        " ON CONFLICT (name) DO NOTHING",
        t->qname, guard, args, t->qname, t->reg_lit);
  free(guard);
  return pgs_exec_buf(s, &sql, rc, t->name, "installing change capture");
}

/* Sets the kept summary of |t| to |sum| (NULL: the sum of its items, read
 * now) with an empty delta log; a new item table starts with neither a
 * checkpoint nor tokens. */
static int set_base(pg_store *s, pg_table *t, const lipsync_summary *sum,
                    bool fresh) {
  bytebuf sql = {0};
  int rc = 0;
  if (!sum)
    rc = pgs_put_set_base(s, t, &sql);
  else {
    rc = pgs_putf(&sql,
                  "DELETE FROM _lipsync.deltas WHERE tbl = %s;"
                  " INSERT INTO _lipsync.tables (name, sum, count) VALUES"
                  " (%s, ",
                  t->reg_lit, t->reg_lit);
    if (!rc)
      rc = pgs_put_bytea(&sql, sum->sum, LIPSYNC_DIGEST_LEN);
    if (!rc)
      rc = pgs_putf(&sql,
                    ", %llu) ON CONFLICT (name) DO UPDATE SET"
                    " sum = EXCLUDED.sum, count = EXCLUDED.count",
                    (unsigned long long)sum->count);
  }
  if (!rc && fresh)
    rc = pgs_putf(&sql,
                  "; UPDATE _lipsync.tables SET recount = false,"
                  " position = NULL, ck_site = NULL, ck_token = NULL,"
                  " ck_position = NULL WHERE name = %s;"
                  " DELETE FROM _lipsync.peers WHERE tbl = %s",
                  t->reg_lit, t->reg_lit);
  t->summarized = false;
  return pgs_exec_buf(s, &sql, rc, t->name, "recording its summary");
}

/* A recount is due at the next prepare. */
static int recount_later(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  int rc = pgs_putf(&sql,
                    "UPDATE _lipsync.tables SET recount = true WHERE"
                    " name = %s",
                    t->reg_lit);
  return pgs_exec_buf(s, &sql, rc, t->name, "recording its summary");
}

/* Gives every row its initial version (clock 0, site its row digest),
 * reading the rows as a scan does, and sums their item digests. */
static int initial_items(pg_store *s, pg_table *t) {
  const lipsync_store_methods *m = s->base.methods;
  lipsync_version v = {0};
  lipsync_cursor *c = NULL;
  lipsync_row row;
  lipsync_summary sum;
  uint8_t digest[LIPSYNC_DIGEST_LEN];
  bytebuf lines = {0}, copy = {0};
  canon_fp fp;
  int rc;

  canon_fp_init(&fp);
  rc = pgs_putf(&copy, "COPY %s %s FROM STDIN", t->meta_qname,
                pgs_item_columns(t));
  if (rc || !pgs_cstr(&copy))
    rc = pgs_fail_nomem(s);
  if (!rc)
    rc = pgs_open_scan(s, t, t->plain_sql, "", CURSOR_PLAIN, false, &c);
  while (!rc && (rc = m->next(c, &row)) == 1) {
    if (canon_row_digest(&s->hasher, &row, v.site) != 0 ||
        canon_item_digest(&s->hasher, row.uuid, &v, false, digest) != 0 ||
        pgs_item_line(&lines, row.uuid, &v, false, pgs_base_is_version(t)) !=
            0) {
      rc = pgs_fail_nomem(s);
      break;
    }
    canon_fp_add(&fp, digest);
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
  canon_fp_store(&fp, &sum);
  return rc ? rc : set_base(s, t, &sum, true);
}

/* The item table of a table that has none, its triggers, and the items of
 * its rows. */
static int install_items(pg_store *s, pg_table *t, bool plain) {
  bytebuf sql = {0};
  bool empty;
  int rc;
  /* The items of a table empty now get their key after the load
   * (pgs_build_meta_key): a key filled in random order is slow. */
  rc = pgs_putf(&sql, "SELECT NOT EXISTS (SELECT 1 FROM %s)", t->qname);
  if ((rc = pgs_query_bool(s, t, &sql, rc, "checking for rows", &empty)) != 0)
    return rc;
  t->meta_key_pending = empty;
  rc = pgs_putf(&sql,
                "CREATE TABLE %s (uuid uuid %s, clock bigint NOT NULL,"
                " site bytea NOT NULL, deleted boolean NOT NULL DEFAULT false,"
                " base_clock bigint NOT NULL DEFAULT 0, base_site bytea,"
                " xid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),"
                " rowdig bytea);"
                " CREATE INDEX ON %s (xid); CREATE INDEX ON %s (clock)"
                " WHERE deleted",
                t->meta_qname, empty ? "NOT NULL" : "PRIMARY KEY",
                t->meta_qname, t->meta_qname);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  PGresult *r = pgs_run(s, (const char *)sql.data);
  bytebuf_free(&sql);
  /* Another sync creating it at the same time. */
  const char *state = pgs_sqlstate(r);
  if (strcmp(state, "42P07") == 0 || strcmp(state, "23505") == 0) {
    PQclear(r);
    return pgs_fail(s, LIPSYNC_ERR_TRY_AGAIN,
                    "table %s: another sync installed change capture on the"
                    " table after this one began; nothing was changed, sync"
                    " again",
                    t->name);
  }
  if ((rc = pgs_expect(s, r, PGRES_COMMAND_OK, t->name,
                       "creating its item table")) != 0)
    return rc;
  /* The triggers first: the scan leaves its cursor open on the table
   * until the next statement, and CREATE TRIGGER would wait for it. */
  if ((rc = install_triggers(s, t, plain)) != 0 ||
      (rc = initial_items(s, t)) != 0)
    return rc;
  /* Unless the table was locked before the snapshot (restart_locked) or
   * rewritten by adding _lipsync_uuid, a write committed after the
   * snapshot, before the triggers, is in no item: the next sync's recount
   * finds it. */
  return t->locked_early || t->added_uuid ? 0 : recount_later(s, t);
}

/* Brings the items of a table captured by an older layout up to this one:
 * the transaction and row digest of each item, their indexes, triggers
 * that log deltas, a kept summary. Unless the table was locked before the
 * snapshot, a change committed after it by the old triggers logged no
 * delta: a recount at the next sync counts it. */
static int migrate_items(pg_store *s, pg_table *t, bool plain) {
  bytebuf sql = {0};
  int rc = pgs_putf(&sql,
                    "ALTER TABLE %s ADD COLUMN IF NOT EXISTS xid xid8 NOT NULL"
                    " DEFAULT pg_catalog.pg_current_xact_id(),"
                    " ADD COLUMN IF NOT EXISTS rowdig bytea;"
                    " CREATE INDEX ON %s (xid); CREATE INDEX ON %s (clock)"
                    " WHERE deleted",
                    t->meta_qname, t->meta_qname, t->meta_qname);
  if ((rc = pgs_exec_buf(s, &sql, rc, t->name, "updating its item table")) !=
          0 ||
      (rc = install_triggers(s, t, plain)) != 0 ||
      (rc = set_base(s, t, NULL, false)) != 0)
    return rc;
  return t->locked_early ? 0 : recount_later(s, t);
}

int pgs_build_meta_key(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  int rc;
  if (!t->meta_key_pending)
    return 0;
  t->meta_key_pending = false;
  rc = pgs_putf(&sql, "ALTER TABLE %s ADD PRIMARY KEY (uuid)", t->meta_qname);
  return pgs_exec_buf(s, &sql, rc, t->name, "indexing its items");
}

int pgs_capture_ready(pg_store *s, pg_table *t, bool *ready) {
  pg_facts f;
  bool home;
  int rc = 0;
  *ready = false;
  if (!t->has_uuid || (rc = global_ready(s, ready, &home)) != 0 || !*ready)
    return rc;
  /* A name too long for capture: its own prepare says so. */
  if (name_items(s, t) != 0)
    return 0;
  if ((rc = check_table(s, t, &f)) != 0) {
    *ready = false;
    return rc;
  }
  *ready =
      f.meta && f.meta_visible && f.layout && f.current == CAPTURE_TRIGGERS;
  return 0;
}

int pgs_capture_prepare(pg_store *s, pg_table *t) {
  pg_facts f;
  bytebuf sql = {0};
  int rc;

  if ((rc = name_items(s, t)) != 0 || (rc = check_table(s, t, &f)) != 0)
    return rc;
  /* Rows given a UUID now have no item (an install gives them theirs). */
  bool recount = f.meta && t->uuids_given;
  if (!f.meta) {
    rc = install_items(s, t, f.plain);
  } else if (!f.meta_visible) {
    return pgs_fail(s, LIPSYNC_ERR_TRY_AGAIN,
                    "table %s: another sync installed change capture on the"
                    " table after this one began; nothing was changed, sync"
                    " again",
                    t->name);
  } else if (!f.layout) {
    rc = migrate_items(s, t, f.plain);
  } else {
    /* Triggers dropped: changes made meanwhile went unrecorded. Row
     * triggers where statement triggers belong (an older layout, or a
     * table that left a hierarchy) recorded everything: no recount; the
     * other way round, a write through a parent may have escaped. No
     * kept summary, or a recount due (after a failed verification). */
    if (f.current != CAPTURE_TRIGGERS &&
        (rc = install_triggers(s, t, f.plain)) == 0)
      recount |= f.present != CAPTURE_TRIGGERS || !f.plain;
    recount |= !f.summary;
  }
  if (!rc && recount)
    rc = pgs_capture_recount(s, t);
  t->facts_known = false; /* what it did changed them */
  if (rc)
    return rc;
  /* A table with no row and no item loads in bulk (pg_store_insert). */
  rc = pgs_putf(&sql,
                "SELECT NOT EXISTS (SELECT 1 FROM %s) AND NOT EXISTS"
                " (SELECT 1 FROM %s)",
                t->qname, t->meta_qname);
  return pgs_query_bool(s, t, &sql, rc, "checking for rows", &t->empty);
}

/* ------------------------------------------------------------------ */
/* Recount (spec LS-INC-17)                                             */
/* ------------------------------------------------------------------ */

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
      " site = EXCLUDED.site, deleted = false,"
      " xid = pg_catalog.pg_current_xact_id(), rowdig = NULL;"
      "UPDATE %s i SET clock = _lipsync.tick(),"
      " site = (SELECT site FROM _lipsync.state), deleted = true,"
      " xid = pg_catalog.pg_current_xact_id(), rowdig = NULL"
      " WHERE NOT i.deleted AND NOT EXISTS (SELECT 1 FROM %s r"
      " WHERE r.\"" LIPSYNC_UUID_COLUMN "\" = i.uuid)",
      t->meta_qname, t->qname, t->meta_qname, t->meta_qname, t->qname);
  return pgs_exec_buf(s, &sql, rc, t->name, "repairing its items");
}

/* The row digests check_contents records, staged for one UPDATE. */
#define DIGEST_STAGE "pg_temp._lipsync_digest_stage"

static int stage_digests(pg_store *s, pg_table *t, const bytebuf *lines) {
  int rc = pgs_temp_table(s, t, &s->digest_stage_ready,
                          "_lipsync_digest_stage (uuid uuid, dig bytea,"
                          " changed boolean)",
                          "recording row digests");
  return rc ? rc
            : pgs_copy_lines(s, t,
                             "COPY " DIGEST_STAGE " (uuid, dig, changed)"
                             " FROM STDIN",
                             lines, "recording row digests");
}

/* Records the staged digests; the items of rows that changed with capture
 * off take one fresh version. */
static int write_digests(pg_store *s, pg_table *t, bool changed) {
  bytebuf sql = {0};
  int rc;
  if (changed)
    rc = pgs_putf(&sql,
                  "WITH f AS MATERIALIZED (SELECT _lipsync.tick() AS clock,"
                  " site FROM _lipsync.state) UPDATE %s AS m SET rowdig ="
                  " d.dig, clock = CASE WHEN d.changed THEN f.clock ELSE"
                  " m.clock END, site = CASE WHEN d.changed THEN f.site ELSE"
                  " m.site END, xid = CASE WHEN d.changed THEN"
                  " pg_catalog.pg_current_xact_id() ELSE m.xid END"
                  " FROM " DIGEST_STAGE " AS d, f WHERE m.uuid = d.uuid;"
                  " TRUNCATE " DIGEST_STAGE,
                  t->meta_qname);
  else
    rc = pgs_putf(&sql,
                  "UPDATE %s AS m SET rowdig = d.dig FROM " DIGEST_STAGE
                  " AS d WHERE m.uuid = d.uuid; TRUNCATE " DIGEST_STAGE,
                  t->meta_qname);
  return pgs_exec_buf(s, &sql, rc, t->name, "recording row digests");
}

/* Compares every live row with the digest its item recorded at the last
 * recount: a row whose values changed with capture off gets a fresh
 * version; rows recorded for the first time, or changed since through
 * capture or a sync (which forget the digest), record theirs now. */
static int check_contents(pg_store *s, pg_table *t) {
  const lipsync_store_methods *m = s->base.methods;
  lipsync_cursor *c = NULL;
  lipsync_row row;
  bytebuf sql = {0}, lines = {0};
  bool staged = false, changed = false;
  int n = (int)t->base.ncolumns + 1, rc;

  rc = pgs_putf(&sql,
                "SELECT %s, m.rowdig FROM %s AS t JOIN %s AS m ON m.uuid ="
                " t.\"" LIPSYNC_UUID_COLUMN "\" WHERE NOT m.deleted",
                t->columns_sql, t->qname, t->meta_qname);
  if (rc || !pgs_cstr(&sql))
    rc = pgs_fail_nomem(s);
  if (!rc)
    rc = pgs_open_scan(s, t, (const char *)sql.data, "", CURSOR_CONTENTS, false,
                       &c);
  bytebuf_free(&sql);
  while (!rc && (rc = m->next(c, &row)) == 1) {
    pg_cursor *pc = (pg_cursor *)c;
    const PGresult *r = pc->res;
    int tup = pc->row - 1;
    uint8_t digest[LIPSYNC_DIGEST_LEN];
    char uuid[37];
    bool known =
        !PQgetisnull(r, tup, n) && PQgetlength(r, tup, n) == LIPSYNC_DIGEST_LEN;
    rc = 0;
    if (canon_row_digest(&s->hasher, &row, digest) != 0) {
      rc = pgs_fail_nomem(s);
      break;
    }
    if (known && memcmp(PQgetvalue(r, tup, n), digest, sizeof digest) == 0)
      continue;
    changed |= known;
    lipsync_uuid_format(row.uuid, uuid);
    /* COPY's text format: "\\x" is bytea's "\x". */
    if (pgs_putf(&lines, "%s\t\\\\x", uuid) != 0 ||
        pgs_put_hex(&lines, digest, sizeof digest) != 0 ||
        pgs_putf(&lines, "\t%c\n", known ? 't' : 'f') != 0) {
      rc = pgs_fail_nomem(s);
      break;
    }
    if (lines.len >= (8u << 20)) {
      rc = stage_digests(s, t, &lines);
      lines.len = 0;
      staged = true;
    }
  }
  if (c)
    m->close_cursor(c);
  if (!rc && lines.len) {
    rc = stage_digests(s, t, &lines);
    staged = true;
  }
  bytebuf_free(&lines);
  bytebuf_free(&sql);
  return rc || !staged ? rc : write_digests(s, t, changed);
}

/* Recomputes the kept summary of |t| from its items and repairs what
 * disagrees with the rows; forgets the checkpoint (spec LS-INC-17). */
int pgs_capture_recount(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  int rc;
  /* The upserts of the repair need the item table's key. */
  if ((rc = pgs_build_pending(s, t)) != 0 || (rc = repair(s, t)) != 0 ||
      (rc = check_contents(s, t)) != 0 || (rc = set_base(s, t, NULL, false)))
    return rc;
  rc = pgs_putf(&sql,
                "UPDATE _lipsync.tables SET recount = false, ck_token = NULL"
                " WHERE name = %s",
                t->reg_lit);
  return pgs_exec_buf(s, &sql, rc, t->name, "recording the recount");
}

/* ------------------------------------------------------------------ */
/* The end of a table's sync                                            */
/* ------------------------------------------------------------------ */

/* An unsigned clock as a bigint literal (clamped). */
static unsigned long long clamp_clock(uint64_t c) {
  return c > CLOCK_MAX ? CLOCK_MAX : (unsigned long long)c;
}

/* The client's checkpoint, position and last_sync (spec LS-INC-6,
 * LS-TOMB-6). */
static int put_checkpoint(pg_table *t, const lipsync_finish *f, bytebuf *b) {
  static const lipsync_checkpoint none;
  const lipsync_checkpoint *ck = f->checkpoint ? f->checkpoint : &none;
  int rc = pgs_putf(b,
                    "; INSERT INTO _lipsync.tables (name, last_sync, position,"
                    " ck_site, ck_token, ck_position) VALUES (%s, %llu, ",
                    t->reg_lit, clamp_clock(f->server_clock));
  if (!rc)
    rc = pgs_put_bytea(
        b, ck->client_position.len ? ck->client_position.data : NULL,
        ck->client_position.len);
  if (!rc)
    rc = pgs_put(b, ", ");
  if (!rc)
    rc = pgs_put_bytea(b, ck->has ? ck->server_site : NULL, LIPSYNC_SITE_LEN);
  if (!rc)
    rc = pgs_put(b, ", ");
  if (!rc)
    rc = pgs_put_bytea(b, ck->has ? ck->token : NULL, LIPSYNC_SITE_LEN);
  if (!rc)
    rc = pgs_put(b, ", ");
  if (!rc)
    rc = pgs_put_bytea(b, ck->has ? ck->server_position.data : NULL,
                       ck->server_position.len);
  if (!rc)
    rc = pgs_put(b, ") ON CONFLICT (name) DO UPDATE SET"
                    " last_sync = EXCLUDED.last_sync,"
                    " position = EXCLUDED.position,"
                    " ck_site = EXCLUDED.ck_site,"
                    " ck_token = EXCLUDED.ck_token,"
                    " ck_position = EXCLUDED.ck_position");
  return rc;
}

/* The server's token for a client database and the table (spec
 * LS-INC-4). */
static int put_token(pg_table *t, const lipsync_finish *f, bytebuf *b) {
  int rc = pgs_putf(b,
                    "; INSERT INTO _lipsync.peers (tbl, site, token)"
                    " VALUES (%s, ",
                    t->reg_lit);
  if (!rc)
    rc = pgs_put_bytea(b, f->client_site, LIPSYNC_SITE_LEN);
  if (!rc)
    rc = pgs_put(b, ", ");
  if (!rc)
    rc = pgs_put_bytea(b, f->new_token, LIPSYNC_SITE_LEN);
  if (!rc)
    rc = pgs_put(b, ") ON CONFLICT (tbl, site) DO UPDATE SET"
                    " token = EXCLUDED.token");
  return rc;
}

/* Right before commit, once the outcome is known: observes the clock
 * (moving the sequence, never the state row), records the client's bases,
 * checkpoint and last_sync or the server's token, and one delta row for
 * the rows applied. A server session that changed nothing writes no row.
 * Old tombstones are purged after the commit (pgs_upkeep_note): purging
 * them here would make concurrent syncs that touch the same ones fail. */
int pgs_finish_table(lipsync_store *store, lipsync_table *table,
                     const lipsync_finish *finish) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  bytebuf sql = {0};
  int rc;

  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((rc = pgs_need_prepared(s, t, "finish")) != 0 ||
      (rc = pgs_copy_end(s)) != 0)
    return rc;
  rc = pgs_putf(&sql, "SELECT _lipsync.observe(%llu)",
                clamp_clock(finish->max_clock));
  if (!rc && finish->as_client)
    rc = pgs_put_record_bases(s, t, &sql);
  if (!rc && finish->as_client)
    rc = put_checkpoint(t, finish, &sql);
  if (!rc && !finish->as_client && finish->new_token && finish->client_site)
    rc = put_token(t, finish, &sql);
  if (!rc)
    rc = pgs_put_applied_delta(t, &sql);
  if ((rc = pgs_exec_buf(s, &sql, rc, t->name, "finish")) != 0 ||
      (rc = pgs_upkeep_note(s, t, finish->horizon)) != 0)
    return rc;
  t->finished = true;
  canon_fp_init(&t->applied_add);
  canon_fp_init(&t->applied_sub);
  if (finish->as_client)
    t->base.last_sync = finish->server_clock;
  return 0;
}

/* Reads the clock without moving it, and the site id: a server reports
 * both (spec LS-TOMB-2) without writing. */
int pgs_tick(lipsync_store *store, lipsync_version *out) {
  pg_store *s = (pg_store *)store;
  PGresult *r;
  int rc;

  memset(out, 0, sizeof *out);
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  s->fresh = false;
  if ((rc = pgs_copy_end(s)) != 0 || (rc = pgs_capture_global(s)) != 0)
    return rc;
  r = pgs_run(s, "SELECT _lipsync.now()");
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
    return pgs_expect(s, r, PGRES_TUPLES_OK, NULL, "tick");
  out->clock = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  memcpy(out->site, s->site, LIPSYNC_SITE_LEN);
  return 0;
}

/* In a transaction of its own, after a failed session: an older layout
 * (no such column) or no registry has nothing to distrust. */
int pgs_distrust(lipsync_store *store, const char *name) {
  pg_store *s = (pg_store *)store;
  const lipsync_store_methods *m = s->base.methods;
  bytebuf sql = {0};
  char *reg = name ? pgs_registry_name(name) : NULL;
  char *lit = reg ? PQescapeLiteral(s->conn, reg, strlen(reg)) : NULL;
  int rc;

  free(reg);
  if (s->in_txn) {
    PQfreemem(lit);
    return pgs_fail(s, LIPSYNC_ERR_INTERNAL, "distrust: a transaction is open");
  }
  if (!lit)
    return pgs_fail_nomem(s);
  rc = pgs_putf(&sql,
                "UPDATE _lipsync.tables SET recount = true, ck_token = NULL"
                " WHERE name = %s",
                lit);
  PQfreemem(lit);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  if ((rc = pgs_begin(s, true)) != 0) {
    bytebuf_free(&sql);
    m->rollback(store);
    return rc;
  }
  PGresult *r = pgs_run(s, (const char *)sql.data);
  bytebuf_free(&sql);
  const char *state = pgs_sqlstate(r);
  bool absent = strcmp(state, "42P01") == 0 || strcmp(state, "42703") == 0;
  rc = absent ? 0
              : pgs_expect(s, r, PGRES_COMMAND_OK, name,
                           "recording a failed verification");
  if (absent)
    PQclear(r);
  if (rc || absent) {
    m->rollback(store);
    return rc;
  }
  return m->commit(store);
}
