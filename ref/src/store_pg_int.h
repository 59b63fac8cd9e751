/*
 * store_pg_int.h: what the files of the PostgreSQL backend share: the
 * store, table and cursor handles, and store_pg.c's statement and error
 * helpers. store_pg.c is the store itself (transactions, rows, COPY);
 * store_pg_capture.c installs, migrates and repairs change capture and
 * records the end of a table's sync; store_pg_items.c reads and writes
 * items; store_pg_changes.c holds change positions, kept summaries,
 * checkpoints, tokens and maintenance (spec 8.8).
 */
#ifndef LIPSYNC_STORE_PG_INT_H
#define LIPSYNC_STORE_PG_INT_H

#include "buf.h"
#include "canon.h"
#include "lipsync.h"
#include "pg_types.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UUID_TEXT_LEN 36
#define ERRMSG_SIZE 1024
/* NAMEDATALEN - 1. */
#define MAX_IDENTIFIER 63
/* A captured table "s"."t" has the item table "s"."_lipsync_meta_t" and,
 * with statement triggers, the function "s"."_lipsync_cap_t"() (shorter
 * than META_PREFIX, so that a name that fits one fits the other); its
 * triggers are called PG_TRIGGER_NAMES (an SQL list). */
#define META_PREFIX "_lipsync_meta_"
#define CAP_PREFIX "_lipsync_cap_"
#define PG_TRIGGER_NAMES                                                       \
  "'_lipsync_capture_insert', '_lipsync_capture_update',"                      \
  " '_lipsync_capture_delete', '_lipsync_capture_truncate',"                   \
  " '_lipsync_keep_uuid'"
/* uuid, clock, site, deleted, base_clock, base_site */
#define ITEM_FIELDS 6
/* A row read with its live item: the values, the UUID, then clock, site,
 * base_clock, base_site. */
#define ROW_ITEM_FIELDS 4
/* How long a sync waits for a lock unless told (set_lock_timeout). */
#define DEFAULT_LOCK_TIMEOUT_MS 60000

/* What prepare finds of a table's capture, read without writing. */
typedef struct pg_facts {
  bool meta;         /* the item table exists (the catalog now) */
  bool meta_visible; /* and in this snapshot */
  bool layout;       /* with this layout's columns */
  int current;       /* how many of the triggers are this layout's */
  bool summary;      /* a kept summary, and no recount due */
  bool plain;        /* ordinary, outside partitioning and inheritance */
  int present;       /* how many are this layout's, of either form */
} pg_facts;

typedef struct pg_store pg_store;
typedef struct pg_table pg_table;
typedef struct pg_cursor pg_cursor;

/* A jsonb value sent in the current COPY, to be checked at its end; the
 * k-th one's text is the k-th element of the store's |jsonb_array|. */
typedef struct jsonb_item {
  uint8_t uuid[LIPSYNC_UUID_LEN];
  size_t column;
} jsonb_item;

/* A table to maintain once the transaction commits (pgs_upkeep_run). */
typedef struct pg_upkeep {
  char *lit;  /* its registry name, a literal */
  char *meta; /* its item table, quoted */
  uint64_t horizon;
} pg_upkeep;

struct pg_store {
  lipsync_store base;
  PGconn *conn;
  bool owns_conn;
  /* True while a transaction this store began is open: rollback must never
   * end a transaction of the caller of wrap. */
  bool in_txn;
  /* It has read no table's data yet (see restart_locked). */
  bool fresh;
  bool no_cancel;       /* rolling back: never cancel that */
  bool was_nonblocking; /* the caller's mode, restored when the sync ends */
  PGcancel *cancel;
  /* Guards |cancel| between interrupt(), from any thread, and a
   * reconnection, which replaces it. */
  pthread_mutex_t cancel_lock;
  atomic_int interrupted; /* set by interrupt(), from any thread */
  int lock_timeout_ms;
  pg_table *tables;       /* opened since the last commit or rollback */
  unsigned cursor_seq;    /* names cursors */
  unsigned statement_seq; /* names prepared statements */
  bytebuf deallocs;       /* "DEALLOCATE ...;" for them, at the end */
  bytebuf closes;         /* "CLOSE ...;" for closed cursors, sent later */
  PGresult *fetched;      /* the last fetch's row lives here */

  /* The COPY in progress, if |copy_table|. Row k of it is line k + 1 of
   * the stream; its UUID is at copy_uuids + 16 k, so that an error the
   * server reports for a line names the row. */
  pg_table *copy_table;
  bytebuf copy_buf;
  bytebuf copy_uuids;
  size_t copy_rows;
  bytebuf jsonb_array; /* binary text[]: header, then (length, bytes)... */
  jsonb_item *jsonb;
  size_t njsonb, jsonb_cap;

  /* Change capture, for this transaction: the global objects (schema
   * _lipsync) exist in the current layout and the database is where its
   * state says (settled); the temporary staging tables exist; the site
   * id, once read. */
  bool capture_ready;
  bool item_stage_ready;
  bool digest_stage_ready;
  bool copy_stage; /* the COPY in progress fills |copy_table|'s stage */
  bool site_known;
  bool wrote_rows;   /* rows written since begin or the last flush */
  pg_table *writing; /* the table lipsync.writing names (pgs_writing) */
  uint8_t site[LIPSYNC_SITE_LEN];
  /* The global objects, checked without writing in this snapshot: in the
   * current layout; the database where it made its site id. */
  bool global_checked, global_current, global_home;

  pg_upkeep *upkeep; /* the tables this transaction finished */
  size_t nupkeep, upkeep_cap;

  char **names; /* the last list_tables answer */
  size_t nnames;
  canon_hasher hasher;
  char errmsg[ERRMSG_SIZE];
};

struct pg_table {
  lipsync_table base;
  pg_store *store;
  pg_table *next;
  char *name;    /* the client's name */
  char *relname; /* the table part */
  char *qname;   /* "schema"."table", quoted */
  char *oid;     /* as text */
  bool partitioned;
  lipsync_column *columns; /* canonical order; the names are owned */
  pgtype *types;           /* per canonical column */
  char **type_names;       /* per canonical column: format_type() */
  size_t *uuid_slot;       /* per column: its scratch slot, or NO_SLOT */
  size_t nuuid;            /* columns of type uuid */
  bool has_uuid;           /* a _lipsync_uuid column of type uuid exists */
  bool index_pending;      /* its index is built later: the table was empty */
  bool meta_key_pending;   /* so is its item table's primary key */
  char *uuid_bad_type;     /* the type of a _lipsync_uuid that is not uuid */
  char *columns_sql;       /* t."c1", ..., t."_lipsync_uuid" */
  char *plain_sql;         /* SELECT <columns> FROM <table> AS t */
  char *select_sql;        /* the same joined with live items (prepared) */
  char *copy_sql;
  char fetch_stmt[32]; /* the prepared lookup by UUID, once there is one */
  size_t batch_rows;   /* rows the next FETCH asks for */
  lipsync_value *fetch_values;
  char *fetch_scratch;
  pg_cursor *cursors;

  /* Change capture (store_pg_capture.c, store_pg_items.c). */
  char *schema;      /* the schema part */
  char *reg_lit;     /* its registry name "schema.table", a literal */
  bool nested;       /* changed by the database in response to applied rows */
  bool finished;     /* its finish has written its own delta rows */
  bool prepared;     /* prepare_table found or made capture in order */
  bool uuids_given;  /* prepare gave rows without one a UUID */
  bool added_uuid;   /* prepare added _lipsync_uuid: it rewrote every row */
  bool locked_early; /* locked before the snapshot, to install capture */
  bool facts_known;  /* |facts| hold for this snapshot */
  pg_facts facts;
  bool empty;           /* no row and no item when prepared (see bulk) */
  char *meta_qname;     /* "schema"."_lipsync_meta_<table>", quoted */
  char *cap_qname;      /* "schema"."_lipsync_cap_<table>", its capture
                         * function (store_pg_stmt.c) */
  char *cap_lit;        /* its signature "...()", a literal */
  char *items_sql;      /* SELECT of every item */
  char *stage_qname;    /* this transaction's staging table for update */
  char *stage_copy_sql; /* COPY into it */
  bytebuf items_new;    /* COPY tuples of new items, not sent yet */
  bytebuf items_set;    /* COPY lines of items to replace (update) */
  size_t nset;          /* lines in |items_set| */
  bytebuf deletes;      /* UUIDs (16 bytes each) of rows to delete */

  /* Kept summaries (store_pg_changes.c): the snapshot's, once read; what
   * the rows this transaction applied add and take away, for its one
   * delta row at finish. */
  bool summarized;
  lipsync_summary summary;
  bool deltas_seen;    /* the summary counted delta rows */
  bool old_tombstones; /* scan_tombstones found some */
  canon_fp applied_add, applied_sub;
};

#define NO_SLOT ((size_t)-1)

/* What a cursor reads, and so how many fields each tuple has. */
typedef enum cursor_kind {
  CURSOR_ROWS,     /* values, UUID, then the live item's version and base */
  CURSOR_PLAIN,    /* values, UUID */
  CURSOR_CONTENTS, /* values, UUID, the row digest the item recorded */
  CURSOR_ITEMS     /* the ITEM_FIELDS of items */
} cursor_kind;

struct pg_cursor {
  lipsync_cursor base;
  pg_table *table;
  pg_cursor *next;
  char name[32];
  PGresult *res; /* the current batch */
  int row, nrows;
  bool last_batch;    /* the server has no more rows, and closes it */
  int status;         /* 0 while rows remain, 1 at the end, or the error */
  bool server_closed; /* its CLOSE is sent or queued */
  cursor_kind kind;
  char *scratch; /* uuid columns' text */
  lipsync_value values[];
};

/* Errors: each keeps its message on the store and returns |code|. */
int pgs_fail(pg_store *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int pgs_fail_nomem(pg_store *s);
/* PostgreSQL's message for |res| (NULL: the connection's). Another
 * writer's interference (serialization failure, deadlock, lock timeout)
 * is LIPSYNC_ERR_TRY_AGAIN. */
int pgs_fail_pg(pg_store *s, const PGresult *res, const char *table,
                const char *what);
bool pgs_is_interrupted(pg_store *s);
int pgs_fail_interrupted(pg_store *s);
/* The SQLSTATE of |r|'s error, "" if none. */
const char *pgs_sqlstate(const PGresult *r);

/* Statements: text results unless asked; parameters binary. */
PGresult *pgs_run(pg_store *s, const char *sql);
PGresult *pgs_run_params(pg_store *s, const char *sql, int n, const Oid *types,
                         const char *const *values, const int *lengths,
                         int result_format);
/* 0 if |r| has status |want|, else the failure. Clears |r|. */
int pgs_expect(pg_store *s, PGresult *r, ExecStatusType want, const char *table,
               const char *what);
int pgs_exec_sql(pg_store *s, const char *sql, const char *table,
                 const char *what);
/* Runs |sql| (built into |b| with pgs_putf etc., |rc| its result), one or
 * more statements returning no rows or whatever, and frees |b|. */
int pgs_exec_buf(pg_store *s, bytebuf *b, int rc, const char *table,
                 const char *what);
/* Runs the query |sql| (built into |b|, freed here) into |*out| (the
 * caller clears it); |binary| asks for binary results. pgs_query_row
 * fails unless it returns one row. */
int pgs_query(pg_store *s, pg_table *t, bytebuf *b, int rc, const char *what,
              bool binary, PGresult **out);
int pgs_query_row(pg_store *s, pg_table *t, bytebuf *b, int rc,
                  const char *what, bool binary, PGresult **out);
/* Runs |sql|, a query of one boolean, into |out|; frees |sql|. */
int pgs_query_bool(pg_store *s, pg_table *t, bytebuf *sql, int rc,
                   const char *what, bool *out);
/* Creates the temporary table |def| ("name (columns)"), dropped at
 * commit, unless |*ready| says this transaction has. */
int pgs_temp_table(pg_store *s, pg_table *t, bool *ready, const char *def,
                   const char *what);
/* Sends |len| bytes of COPY text lines into the table of |copy_sql|. */
int pgs_copy_lines(pg_store *s, pg_table *t, const char *copy_sql,
                   const bytebuf *lines, const char *what);

/* SQL text. */
/* Appends the CREATE OR REPLACE FUNCTION of |t|'s capture function, for
 * its statement triggers (store_pg_stmt.c). */
int pgs_put_capture_function(pg_store *s, pg_table *t, bytebuf *sql);
int pgs_put(bytebuf *b, const char *text);
int pgs_putf(bytebuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *pgs_cstr(bytebuf *b);
char *pgs_take_cstr(bytebuf *b, int rc);
int pgs_put_ident(pg_store *s, bytebuf *b, const char *name);
/* Appends |len| bytes as hex digits; as a bytea expression (NULL when
 * |data| is NULL). */
int pgs_put_hex(bytebuf *b, const uint8_t *data, size_t len);
int pgs_put_bytea(bytebuf *b, const uint8_t *data, size_t len);
/* Appends the quoted UUIDs |uuids| (|n| of them) as an array literal
 * '{...}'::pg_catalog.uuid[]: hex and dashes, safe in SQL text. */
int pgs_put_uuid_array(bytebuf *b, const uint8_t *uuids, size_t n);

/* Starts a transaction of the store with the sync's settings: REPEATABLE
 * READ (|snapshot|, a sync) or READ COMMITTED (maintenance). */
int pgs_begin(pg_store *s, bool snapshot);
/* Appends " AND |column| >= 'lower' AND |column| < 'upper'" to the
 * string |out| (NULL bounds: none). The bounds are literals, UUID text:
 * the planner sees the range. */
void pgs_uuid_bounds(char *out, size_t outlen, const char *column,
                     const uint8_t *lower, const uint8_t *upper);
/* Ends the COPY in progress and writes everything pending (items,
 * deletes, staged rows). */
int pgs_copy_end(pg_store *s);
/* Before a statement that writes rows of |t|: sets lipsync.writing to its
 * registry name, so that its capture triggers leave alone what its own
 * triggers do to it (spec LS-CAPTURE-10; store_pg_capture.c). */
int pgs_writing(pg_store *s, pg_table *t);
/* Declares a cursor of |kind| for |select| plus |where| and fetches its
 * first batch. */
int pgs_open_scan(pg_store *s, pg_table *t, const char *select,
                  const char *where, cursor_kind kind, bool needs_index,
                  lipsync_cursor **out);
/* The same with |where| built into a bytebuf (|rc| its result), freed
 * here. */
int pgs_open_scan_buf(pg_store *s, pg_table *t, const char *select,
                      bytebuf *where, int rc, cursor_kind kind,
                      bool needs_index, lipsync_cursor **out);
/* Makes tuple c->row of c->res the cursor's next: 1, 0 at the end, or the
 * error (kept: later calls return it again). */
int pgs_cursor_step(pg_cursor *c);
/* Fills |row| from tuple |tup| of |r| (values, UUID, and with |item| the
 * item's version and base). */
int pgs_read_row(pg_table *t, const PGresult *r, int tup, lipsync_value *values,
                 char *scratch, lipsync_row *row);
/* Builds the indexes of a table loaded while empty, set aside until now,
 * unless a cursor on the table is open. */
int pgs_build_pending(pg_store *s, pg_table *t);
/* Fails unless prepare_table made |t| ready for |what|. */
int pgs_need_prepared(pg_store *s, pg_table *t, const char *what);

/* store_pg_capture.c */
/* Creates schema _lipsync and its objects if missing, brings an older
 * layout up to date, and gives a copied database its own site id. */
/* Fails with STORAGE, changing nothing, when the database holds capture
 * metadata this code does not own or understand (spec LS-CAPTURE-8). */
int pgs_capture_check_owner(pg_store *s);
int pgs_capture_global(pg_store *s);
/* The site id of this database, read once per transaction. */
int pgs_capture_site(pg_store *s, uint8_t site[LIPSYNC_SITE_LEN]);
/* The table's last_sync from the registry, 0 if none. */
int pgs_capture_last_sync(pg_store *s, pg_table *t);
/* Whether |t| has capture in this layout, read without writing. */
int pgs_capture_ready(pg_store *s, pg_table *t, bool *ready);
/* Gives the item table of a table loaded while empty its primary key. */
int pgs_build_meta_key(pg_store *s, pg_table *t);
/* Installs the table's items and triggers if missing (giving every row
 * its initial version), brings an older layout up to date, recounts when
 * due; decides whether the table is empty. */
int pgs_capture_prepare(pg_store *s, pg_table *t);
int pgs_capture_recount(pg_store *s, pg_table *t);
int pgs_finish_table(lipsync_store *store, lipsync_table *table,
                     const lipsync_finish *finish);
int pgs_tick(lipsync_store *store, lipsync_version *out);
int pgs_distrust(lipsync_store *store, const char *name);
/* The drop_capture method (store_pg_drop.c). */
int pgs_drop_capture(lipsync_store *store, const char *const *names, size_t n);
/* The registry name ("schema.table") of the table a session calls
 * |name|, malloc'd, or NULL. */
char *pgs_registry_name(const char *name);

/* store_pg_items.c */
/* One tuple of a binary COPY of new items (uuid, clock, site, deleted),
 * after the format's header when |out| is empty. */
int pgs_item_binary(bytebuf *out, const uint8_t uuid[LIPSYNC_UUID_LEN],
                    const lipsync_version *v, bool deleted);
/* A table never synced as a client reports every base as zero; the items
 * capture installs store base = version, so that its first sync as a
 * client, which sets every base to its version, rewrites only the items
 * that differ. */
bool pgs_base_is_version(const pg_table *t);
/* The column list of the items a COPY of new items writes. */
const char *pgs_item_columns(const pg_table *t);
/* One COPY line of an item; |with_base| adds base = version, for the
 * columns pgs_item_columns() names. */
int pgs_item_line(bytebuf *out, const uint8_t uuid[LIPSYNC_UUID_LEN],
                  const lipsync_version *v, bool deleted, bool with_base);
/* Writes |t|'s pending deletes, new items and item replacements. */
int pgs_items_flush(pg_store *s, pg_table *t);
/* Applies |t|'s staged rows (update) to the table. */
int pgs_stage_merge(pg_store *s, pg_table *t);
/* Creates |t|'s staging table for this transaction if not yet. */
int pgs_stage_ensure(pg_store *s, pg_table *t);
/* Item cursors: every item (any order); a UUID range; the items of sorted
 * UUIDs; the tombstones below a clock; those matching |where| (SQL after
 * WHERE, built with result |rc|, freed here), in UUID order when
 * |ordered|. */
int pgs_scan_items(lipsync_store *store, lipsync_table *table,
                   lipsync_cursor **out);
int pgs_scan_item_range(lipsync_store *store, lipsync_table *table,
                        const uint8_t *lower, const uint8_t *upper,
                        lipsync_cursor **out);
int pgs_lookup_items(lipsync_store *store, lipsync_table *table,
                     const uint8_t *uuids, size_t n, lipsync_cursor **out);
int pgs_scan_tombstones(lipsync_store *store, lipsync_table *table,
                        uint64_t clock, lipsync_cursor **out);
int pgs_items_where(pg_store *s, pg_table *t, bytebuf *where, int rc,
                    bool ordered, lipsync_cursor **out);
int pgs_next_item(lipsync_cursor *cursor, lipsync_item *item);
/* A version from the binary bigint field |col| of |r| and the bytea after
 * it (NULL: the zero version); false if malformed. */
bool pgs_read_version(const PGresult *r, int tup, int col, lipsync_version *v);

/* store_pg_changes.c */
/* A change position (spec 8.8.1): this database's site id, a snapshot
 * (xmin, xmax and the transactions in progress, ascending) and the
 * session's own transaction. */
typedef struct pg_position {
  uint8_t site[LIPSYNC_SITE_LEN];
  uint64_t xmin, xmax;
  uint64_t *xip; /* malloc'd */
  size_t nxip;
  bool has_own;
  uint64_t own;
} pg_position;
/* Encodes |p| into |out|, covering less when it would not fit (see the
 * file's comment); decodes what pgs_position_encode made: 0, or
 * LIPSYNC_ERR_NOT_FOUND for anything else. */
void pgs_position_encode(const pg_position *p, lipsync_position *out);
int pgs_position_decode(const lipsync_position *in, pg_position *out);
void pgs_position_free(pg_position *p);
/* Appends a condition on an item's xid: its last change is not one |p|
 * covers. */
int pgs_put_not_covered(bytebuf *b, const pg_position *p);
/* Reads |since| as a position of this database (NOT_FOUND if it is not
 * one it could have made). */
int pgs_read_position(pg_store *s, const lipsync_position *since,
                      pg_position *out);
int pgs_position(lipsync_store *store, lipsync_table *table,
                 lipsync_position *out);
int pgs_scan_changes(lipsync_store *store, lipsync_table *table,
                     const lipsync_position *since, lipsync_cursor **out);
int pgs_summarize(lipsync_store *store, lipsync_table *table,
                  lipsync_summary *out);
/* SQL that sets |t|'s kept summary to the sum of its items (visible now)
 * and empties its delta log, into |b|. */
int pgs_put_set_base(pg_store *s, pg_table *t, bytebuf *b);
/* SQL that inserts the delta row of the rows this transaction applied to
 * |t|, if any, into |b|. */
int pgs_put_applied_delta(pg_table *t, bytebuf *b);
int pgs_load_checkpoint(lipsync_store *store, lipsync_table *table,
                        lipsync_checkpoint *out);
int pgs_load_token(lipsync_store *store, lipsync_table *table,
                   const uint8_t client_site[LIPSYNC_SITE_LEN],
                   uint8_t token[LIPSYNC_SITE_LEN], int *found);
/* SQL that records the client's bases of the items changed since its
 * previous position (spec LS-POLICY-5), into |b|. */
int pgs_put_record_bases(pg_store *s, pg_table *t, bytebuf *b);
int pgs_maintain(lipsync_store *store, uint64_t horizon);
/* After a sync: notes |t| for maintenance with |horizon| if it has delta
 * rows or old tombstones; runs (after COMMIT) or forgets (after ROLLBACK)
 * what was noted. */
int pgs_upkeep_note(pg_store *s, pg_table *t, uint64_t horizon);
void pgs_upkeep_run(pg_store *s);
void pgs_upkeep_clear(pg_store *s);

#endif
