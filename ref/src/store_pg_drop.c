/*
 * store_pg_drop.c: removing change capture from a PostgreSQL database
 * (lipsync_store_drop_capture): a table's triggers, capture function,
 * item table and registry rows, or all of them and schema _lipsync. The
 * rows, their _lipsync_uuid column, its index and its default stay: they
 * are the rows' identity, and capture installed again gives each row the
 * initial version of its contents (spec LS-CAPTURE-9).
 */
#include "store_pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The statements that drop the capture objects of the table $1.$2 (both
 * NULL: of every table), triggers first; |meta| marks an item table. A
 * partition's triggers are clones of its parent's, and go with them. */
static const char objects_sql[] =
    "SELECT stmt, meta FROM ("
    " SELECT 1 AS ord, pg_catalog.format('DROP TRIGGER %I ON %I.%I',"
    " g.tgname, n.nspname, c.relname) AS stmt, false AS meta"
    " FROM pg_catalog.pg_trigger g"
    " JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE NOT g.tgisinternal AND g.tgparentid = 0"
    " AND g.tgname IN (" PG_TRIGGER_NAMES ")"
    " AND ($1::text IS NULL OR (n.nspname = $1::text AND"
    " c.relname = $2::text))"
    " UNION ALL SELECT 2, pg_catalog.format('DROP FUNCTION %I.%I()',"
    " n.nspname, p.proname), false"
    " FROM pg_catalog.pg_proc p"
    " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
    " WHERE p.proname LIKE '\\_lipsync\\_cap\\_%' AND p.pronargs = 0"
    " AND n.nspname <> '_lipsync'"
    " AND ($1::text IS NULL OR (n.nspname = $1::text AND"
    " p.proname = '" CAP_PREFIX "' || $2::text))"
    " UNION ALL SELECT 3, pg_catalog.format('DROP TABLE %I.%I',"
    " n.nspname, c.relname), true"
    " FROM pg_catalog.pg_class c"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
    " AND c.relname LIKE '\\_lipsync\\_meta\\_%' AND n.nspname <> '_lipsync'"
    " AND ($1::text IS NULL OR (n.nspname = $1::text AND"
    " c.relname = '" META_PREFIX "' || $2::text))"
    ") q ORDER BY ord, stmt";

/* Forgets table $1 ("schema.table") in the registry, if there is one: the
 * number of registry and token rows it had. */
static const char registry_sql[] =
    "WITH a AS (DELETE FROM _lipsync.tables WHERE name = $1::text"
    " RETURNING 1), b AS (DELETE FROM _lipsync.deltas WHERE tbl = $1::text"
    " RETURNING 1), c AS (DELETE FROM _lipsync.peers WHERE tbl = $1::text"
    " RETURNING 1)"
    " SELECT (SELECT pg_catalog.count(*) FROM a) +"
    " (SELECT pg_catalog.count(*) FROM c)";

/* Runs |sql| with up to two text parameters (NULL: SQL NULL). */
static PGresult *run2(pg_store *s, const char *sql, int n, const char *p1,
                      const char *p2) {
  const char *values[2] = {p1, p2};
  int lengths[2] = {p1 ? (int)strlen(p1) : 0, p2 ? (int)strlen(p2) : 0};
  return pgs_run_params(s, sql, n, NULL, values, lengths, 0);
}

/* Drops the objects |objects_sql| finds for |schema|.|relname| (NULL: all),
 * counting the item tables in |*removed|; |*found| if there were any. */
static int drop_objects(pg_store *s, const char *name, const char *schema,
                        const char *relname, int *removed, bool *found) {
  PGresult *r = run2(s, objects_sql, 2, schema, relname);
  bytebuf sql = {0};
  int rc = 0;
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, name,
                      "looking for change capture");
  for (int i = 0; i < PQntuples(r) && !rc; i++) {
    rc = pgs_putf(&sql, "%s;", PQgetvalue(r, i, 0));
    *removed += PQgetvalue(r, i, 1)[0] == 't';
  }
  *found = PQntuples(r) > 0;
  PQclear(r);
  if (!*found)
    return 0;
  return pgs_exec_buf(s, &sql, rc, name, "removing change capture");
}

/* Whether the table $1.$2 exists, and the registry. */
static const char facts_sql[] =
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = $1::text AND c.relname = $2::text),"
    " pg_catalog.to_regclass('_lipsync.tables') IS NOT NULL";

/* The capture of table |name| ("schema.table" or "table", in public),
 * which need not exist any more. */
static int drop_table(pg_store *s, const char *name, int *removed) {
  char *reg = pgs_registry_name(name), *schema = NULL;
  const char *relname = reg ? strchr(reg, '.') + 1 : NULL;
  PGresult *r = NULL;
  bool table, registry, found = false;
  int rc;
  if (!reg || !(schema = strndup(reg, (size_t)(relname - 1 - reg)))) {
    rc = pgs_fail_nomem(s);
    goto out;
  }
  if (strncasecmp(schema, "_lipsync", 8) == 0 ||
      strncasecmp(relname, "_lipsync", 8) == 0) {
    rc = pgs_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE,
                  "no table %s (LipSync's own tables have no change capture)",
                  name);
    goto out;
  }
  r = run2(s, facts_sql, 2, schema, relname);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
    rc = pgs_expect(s, r, PGRES_TUPLES_OK, name, "looking up the table");
    r = NULL;
    goto out;
  }
  table = PQgetvalue(r, 0, 0)[0] == 't';
  registry = PQgetvalue(r, 0, 1)[0] == 't';
  PQclear(r);
  r = NULL;
  if ((rc = drop_objects(s, name, schema, relname, removed, &found)) != 0)
    goto out;
  if (registry) {
    r = run2(s, registry_sql, 1, reg, NULL);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
      rc = pgs_expect(s, r, PGRES_TUPLES_OK, name, "removing change capture");
      r = NULL;
      goto out;
    }
    found = found || atoll(PQgetvalue(r, 0, 0)) > 0;
  }
  if (!table && !found)
    rc = pgs_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE,
                  "no table %s, and no change capture of one", name);
out:
  PQclear(r);
  free(schema);
  free(reg);
  return rc;
}

static int drop_all(pg_store *s, int *removed) {
  bool found;
  int rc = drop_objects(s, NULL, NULL, NULL, removed, &found);
  return rc ? rc
            : pgs_exec_sql(s, "DROP SCHEMA IF EXISTS _lipsync CASCADE", NULL,
                           "removing change capture");
}

int pgs_drop_capture(lipsync_store *store, const char *const *names, size_t n) {
  pg_store *s = (pg_store *)store;
  const lipsync_store_methods *m = s->base.methods;
  int removed = 0, rc;
  if (s->in_txn)
    return pgs_fail(s, LIPSYNC_ERR_INTERNAL,
                    "drop_capture: a transaction is open");
  if ((rc = pgs_begin(s, false)) == 0)
    rc = pgs_capture_check_owner(s); /* spec LS-CAPTURE-8 */
  if (!rc && !names)
    rc = drop_all(s, &removed);
  for (size_t i = 0; !rc && names && i < n; i++)
    rc = drop_table(s, names[i], &removed);
  if (!rc && (rc = m->commit(store)) == 0)
    return removed;
  m->rollback(store);
  return rc;
}
