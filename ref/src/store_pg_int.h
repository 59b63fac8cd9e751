/*
 * store_pg_int.h: what the files of the PostgreSQL backend share: the
 * store, table and cursor handles, and store_pg.c's statement and error
 * helpers. store_pg.c is the store itself; store_pg_capture.c installs
 * and repairs change capture; store_pg_items.c reads and writes items.
 */
#ifndef LIPSYNC_STORE_PG_INT_H
#define LIPSYNC_STORE_PG_INT_H

#include "buf.h"
#include "lipsync.h"
#include "pg_types.h"

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UUID_TEXT_LEN 36
#define ERRMSG_SIZE 1024
/* NAMEDATALEN - 1. */
#define MAX_IDENTIFIER 63
/* uuid, clock, site, deleted, base_clock, base_site */
#define ITEM_FIELDS 6

typedef struct pg_store pg_store;
typedef struct pg_table pg_table;
typedef struct pg_cursor pg_cursor;

/* A jsonb value sent in the current COPY, to be checked at its end; the
 * k-th one's text is the k-th element of the store's |jsonb_array|. */
typedef struct jsonb_item {
  uint8_t uuid[LIPSYNC_UUID_LEN];
  size_t column;
} jsonb_item;

struct pg_store {
  lipsync_store base;
  PGconn *conn;
  bool owns_conn;
  /* True while a transaction this store began is open: rollback must never
   * end a transaction of the caller of wrap. */
  bool in_txn;
  bool no_cancel;       /* rolling back: never cancel that */
  bool was_nonblocking; /* the caller's mode, restored when the sync ends */
  PGcancel *cancel;
  atomic_int interrupted; /* set by interrupt(), from any thread */
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

  /* Change capture: the global objects (schema _lipsync) are known to
   * exist in this transaction; the temporary staging table of item
   * upserts exists in it. */
  bool capture_ready;
  bool item_stage_ready;
  bool copy_stage; /* the COPY in progress fills |copy_table|'s stage */

  char **names; /* the last list_tables answer */
  size_t nnames;
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
  char *select_sql;        /* SELECT <columns>, _lipsync_uuid FROM <table> */
  char *copy_sql;
  char fetch_stmt[32]; /* the prepared lookup by UUID, once there is one */
  size_t batch_rows;   /* rows the next FETCH asks for */
  lipsync_value *fetch_values;
  char *fetch_scratch;
  pg_cursor *cursors;

  /* Change capture (store_pg_capture.c, store_pg_items.c). */
  char *schema;         /* the schema part */
  bool uuids_given;     /* prepare gave rows without one a UUID */
  char *meta_qname;     /* "schema"."_lipsync_meta_<table>", quoted */
  char *items_sql;      /* SELECT of every item */
  char *stage_qname;    /* this transaction's staging table for update */
  char *stage_copy_sql; /* COPY into it */
  bytebuf items_new;    /* COPY lines of new items, not sent yet */
  bytebuf items_set;    /* COPY lines of items to upsert (update) */
  bytebuf deletes;      /* UUIDs (16 bytes each) of rows to delete */
};

#define NO_SLOT ((size_t)-1)

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
  bool items;         /* over items (scan_items), not rows */
  char *scratch;      /* uuid columns' text */
  lipsync_value values[];
};

/* Errors: each keeps its message on the store and returns |code|. */
int pgs_fail(pg_store *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int pgs_fail_nomem(pg_store *s);
/* PostgreSQL's message for |res| (NULL: the connection's). */
int pgs_fail_pg(pg_store *s, const PGresult *res, const char *table,
                const char *what);
bool pgs_is_interrupted(pg_store *s);
int pgs_fail_interrupted(pg_store *s);

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
/* Sends |len| bytes of COPY text lines into the table of |copy_sql|. */
int pgs_copy_lines(pg_store *s, pg_table *t, const char *copy_sql,
                   const bytebuf *lines, const char *what);

/* SQL text. */
int pgs_put(bytebuf *b, const char *text);
int pgs_putf(bytebuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *pgs_cstr(bytebuf *b);
char *pgs_take_cstr(bytebuf *b, int rc);
int pgs_put_ident(pg_store *s, bytebuf *b, const char *name);

/* Ends the COPY in progress and writes everything pending (items,
 * deletes, staged rows). */
int pgs_copy_end(pg_store *s);
/* Declares a cursor for |select| plus |where| (rows, or items when
 * |items|) and fetches its first batch. */
int pgs_open_scan(pg_store *s, pg_table *t, const char *select,
                  const char *where, bool items, bool needs_index,
                  lipsync_cursor **out);

/* Makes tuple c->row of c->res the cursor's next: 1, 0 at the end, or the
 * error (kept: later calls return it again). */
int pgs_cursor_step(pg_cursor *c);

/* store_pg_capture.c */
/* Creates schema _lipsync and its objects if missing. */
int pgs_capture_global(pg_store *s);
/* The table's last_sync from the registry, 0 if none. */
int pgs_capture_last_sync(pg_store *s, pg_table *t);
/* Installs the table's items and triggers if missing (giving every row
 * its initial version), else checks them and repairs if need be. */
/* Gives the item table of a table loaded while empty its primary key. */
int pgs_build_meta_key(pg_store *s, pg_table *t);
int pgs_capture_prepare(pg_store *s, pg_table *t);
int pgs_finish_table(lipsync_store *store, lipsync_table *table,
                     const lipsync_finish *finish);
int pgs_tick(lipsync_store *store, lipsync_version *out);

/* store_pg_items.c */
/* Appends the item of |row| as a COPY line to |out|. */
/* One COPY line of an item; |with_base| adds base = version, for the
 * columns pgs_item_columns() names. */
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

int pgs_item_line(bytebuf *out, const uint8_t uuid[LIPSYNC_UUID_LEN],
                  const lipsync_version *v, bool deleted, bool with_base);
/* Writes |t|'s pending deletes, new items and item upserts. */
int pgs_items_flush(pg_store *s, pg_table *t);
/* Applies |t|'s staged rows (update) to the table. */
int pgs_stage_merge(pg_store *s, pg_table *t);
/* Creates |t|'s staging table for this transaction if not yet. */
int pgs_stage_ensure(pg_store *s, pg_table *t);
int pgs_scan_items(lipsync_store *store, lipsync_table *table,
                   lipsync_cursor **out);
int pgs_next_item(lipsync_cursor *cursor, lipsync_item *item);

#endif
