/*
 * store_pg_stmt.c: the capture function of an ordinary PostgreSQL table,
 * which its AFTER INSERT, UPDATE and DELETE statement triggers call
 * (store_pg_capture.c): "s"."_lipsync_cap_t"(), written for that table.
 *
 * A generic function would have to build its statements at run time
 * (EXECUTE), planning them at every call; this one names the item table,
 * so PL/pgSQL keeps its plans for the session. Its statements read the
 * transition tables (_lipsync_new, _lipsync_old) only to collect the
 * UUIDs of the changed rows into an array: an UPDATE's rows are paired by
 * UUID (which cannot change once set) and one whose text did not change is
 * no change, as the row trigger's WHEN says. (The aliases of the
 * transition tables take the reserved prefix: a whole-row reference by an
 * alias that is also a column's name would mean the column.) Then:
 *
 *   - up to SMALL rows, one at a time, as capture() does for a row: a
 *     tick, the item locked and its old state read, updated (or inserted),
 *     one delta row each;
 *   - more, set-based: one tick moves the clock past the wall clock and the
 *     floor, each row then takes the next value of the sequence; the items
 *     are locked and read (an index lookup each, LATERAL), updated or
 *     inserted, and one delta row sums the statement. The joins are nested
 *     loops (hash and merge joins off in the function): the array's size is
 *     unknown when the plan is made, and index lookups suit one row and a
 *     million alike, where a plan made for a large statement would scan
 *     the whole item table for every later small one.
 *
 * Runs as the installer (SECURITY DEFINER), like capture().
 */
#include "store_pg_int.h"

#include <string.h>

/* Statements of at most this many changed rows take the row path. */
#define SMALL "8"

/* The function, with @FN@ (its quoted name), @META@ (the item table's)
 * and @REG@ (the registry name, a literal) to fill, and @Q@ the dollar
 * quote of its body. */
static const char capture_function[] =
    "CREATE OR REPLACE FUNCTION @FN@() RETURNS trigger"
    " LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp"
    " SET enable_hashjoin = off SET enable_mergejoin = off AS @Q@\n"
    "DECLARE us uuid[]; s bytea; d boolean := TG_OP = 'DELETE'; u uuid;"
    " c bigint; oc bigint; os bytea; od boolean; k bigint;\n"
    "BEGIN\n"
    "  IF TG_OP = 'INSERT' THEN\n"
    "    SELECT pg_catalog.array_agg(_lipsync_n._lipsync_uuid) INTO us"
    " FROM _lipsync_new AS _lipsync_n"
    " WHERE _lipsync_n._lipsync_uuid IS NOT NULL;\n"
    "  ELSIF TG_OP = 'DELETE' THEN\n"
    "    SELECT pg_catalog.array_agg(_lipsync_o._lipsync_uuid) INTO us"
    " FROM _lipsync_old AS _lipsync_o"
    " WHERE _lipsync_o._lipsync_uuid IS NOT NULL;\n"
    "  ELSE\n"
    "    SELECT pg_catalog.array_agg(_lipsync_x.u) INTO us FROM"
    " (SELECT _lipsync_n._lipsync_uuid AS u,"
    " _lipsync_n::pg_catalog.text AS r FROM _lipsync_new AS _lipsync_n"
    " WHERE _lipsync_n._lipsync_uuid IS NOT NULL"
    " EXCEPT SELECT _lipsync_o._lipsync_uuid, _lipsync_o::pg_catalog.text"
    " FROM _lipsync_old AS _lipsync_o) AS _lipsync_x;\n"
    "  END IF;\n"
    "  IF us IS NULL THEN\n"
    "    RETURN NULL;\n"
    "  END IF;\n"
    "  SELECT site INTO s FROM _lipsync.state;\n"
    "  IF pg_catalog.cardinality(us) <= " SMALL " THEN\n"
    "    FOREACH u IN ARRAY us LOOP\n"
    "      c := _lipsync.tick();\n"
    "      UPDATE @META@ AS m SET clock = c, site = s, deleted = d,"
    " xid = pg_catalog.pg_current_xact_id(), rowdig = NULL"
    " FROM (SELECT uuid, clock, site, deleted FROM @META@"
    " WHERE uuid = u FOR UPDATE) AS o WHERE m.uuid = o.uuid"
    " RETURNING o.clock, o.site, o.deleted INTO oc, os, od;\n"
    "      GET DIAGNOSTICS k = ROW_COUNT;\n"
    "      IF k = 0 THEN\n"
    "        INSERT INTO @META@ (uuid, clock, site, deleted)"
    " VALUES (u, c, s, d);\n"
    "      END IF;\n"
    "      INSERT INTO _lipsync.deltas (tbl, add_sum, sub_sum, count_delta)"
    " VALUES (@REG@, _lipsync.digest(u, c, s, d), CASE WHEN k > 0"
    " THEN _lipsync.digest(u, oc, os, od) END, CASE WHEN k > 0 THEN 0"
    " ELSE 1 END);\n"
    "    END LOOP;\n"
    "    RETURN NULL;\n"
    "  END IF;\n"
    "  PERFORM _lipsync.tick();\n"
    "  WITH v AS MATERIALIZED (SELECT x.u,"
    " pg_catalog.nextval('_lipsync.clock') AS c, o.uuid IS NOT NULL AS had,"
    " o.clock AS oc, o.site AS os, o.deleted AS od"
    " FROM pg_catalog.unnest(us) AS x(u) LEFT JOIN LATERAL"
    " (SELECT uuid, clock, site, deleted FROM @META@ WHERE uuid = x.u"
    " FOR UPDATE) AS o ON true),"
    " up AS (UPDATE @META@ AS m SET clock = v.c, site = s, deleted = d,"
    " xid = pg_catalog.pg_current_xact_id(), rowdig = NULL FROM v"
    " WHERE v.had AND m.uuid = v.u"
    " RETURNING _lipsync.digest(v.u, v.c, s, d) AS a,"
    " _lipsync.digest(v.u, v.oc, v.os, v.od) AS b),"
    " ins AS (INSERT INTO @META@ (uuid, clock, site, deleted)"
    " SELECT v.u, v.c, s, d FROM v WHERE NOT v.had"
    " RETURNING _lipsync.digest(uuid, clock, site, deleted) AS a),"
    " ch AS (SELECT a, b FROM up UNION ALL SELECT a, NULL FROM ins)"
    " INSERT INTO _lipsync.deltas (tbl, add_sum, sub_sum, count_delta)"
    " SELECT @REG@, _lipsync.sum128(sum(_lipsync.hi(a)),"
    " sum(_lipsync.lo(a))), _lipsync.sum128(sum(_lipsync.hi(b)),"
    " sum(_lipsync.lo(b))), (SELECT pg_catalog.count(*) FROM ins) FROM ch;\n"
    "  RETURN NULL;\n"
    "END @Q@;";

/* Appends |tmpl| to |b| with each @NAME@ of |names| replaced by the value
 * beside it. */
static int put_filled(bytebuf *b, const char *tmpl, const char *const *names,
                      const char *const *values, size_t n) {
  const char *p = tmpl;
  int rc = 0;
  while (!rc && *p) {
    const char *at = strchr(p, '@');
    size_t i = n;
    for (size_t j = 0; at && j < n && i == n; j++)
      if (strncmp(at, names[j], strlen(names[j])) == 0)
        i = j;
    size_t len = at ? (size_t)(at - p) + (i == n) : strlen(p);
    rc = bytebuf_append(b, (const uint8_t *)p, len);
    p += len;
    if (!rc && i < n) {
      rc = bytebuf_append(b, (const uint8_t *)values[i], strlen(values[i]));
      p += strlen(names[i]);
    }
  }
  return rc ? LIPSYNC_ERR_NOMEM : 0;
}

int pgs_put_capture_function(pg_store *s, pg_table *t, bytebuf *sql) {
  /* A dollar quote that no name inside the body contains. */
  char quote[32] = "$lipsync$";
  for (int i = 1; strstr(t->meta_qname, quote) || strstr(t->reg_lit, quote);
       i++)
    snprintf(quote, sizeof quote, "$lipsync%d$", i);
  static const char *const names[] = {"@FN@", "@META@", "@REG@", "@Q@"};
  const char *values[] = {t->cap_qname, t->meta_qname, t->reg_lit, quote};
  int rc = put_filled(sql, capture_function, names, values, 4);
  return rc ? pgs_fail_nomem(s) : pgs_put(sql, ";");
}
