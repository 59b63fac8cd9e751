/*
 * store_sqlite_int.h: what the files of the SQLite backend share: the store,
 * table and cursor handles, and the helpers for errors, statements and
 * values. store_sqlite.c holds the rows; store_sqlite_capture.c the change
 * capture schema (state, registry, metadata, triggers), clock and repair;
 * store_sqlite_items.c the items (metadata rows) that insert and update
 * write and scan_items reads.
 */
#ifndef LIPSYNC_STORE_SQLITE_INT_H
#define LIPSYNC_STORE_SQLITE_INT_H

#include "lipsync.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define UUID_TEXT_LEN 36
#define ERRMSG_SIZE 1024

/*
 * What a column does to a value stored in it, as far as that can change the
 * value. SQLite's INTEGER and NUMERIC affinities store values alike, so they
 * share KIND_NUMERIC.
 */
typedef enum column_kind {
  KIND_BLOB,    /* no affinity: every value is stored as given */
  KIND_TEXT,    /* numbers become text */
  KIND_NUMERIC, /* numeric text becomes a number, integral reals integers */
  KIND_REAL,    /* numeric text and integers become reals */
  KIND_ROWID    /* INTEGER PRIMARY KEY: an alias of the rowid */
} column_kind;

/* Scan statements by the bounds they take: bit 0 lower, bit 1 upper. */
#define SCAN_SHAPES 4
/* The shape of an item cursor (scan_items), kept beside the scans. */
#define ITEM_SHAPE SCAN_SHAPES

typedef struct sqlite_store sqlite_store;
typedef struct sqlite_table sqlite_table;
typedef struct sqlite_cursor sqlite_cursor;

struct sqlite_store {
  lipsync_store base;
  sqlite3 *db;
  bool owns_db;
  /* True while a transaction this store began is open: rollback must never
   * end a transaction that belongs to the caller of wrap. */
  bool in_txn;
  bool big_cache;         /* the insert-time page cache is in force */
  atomic_int interrupted; /* set by interrupt(), from any thread */
  sqlite_table *tables;   /* opened since the last commit or rollback */
  char **names;           /* the last list_tables answer */
  /* _lipsync_state.applying is 1 in this transaction: reset before
   * COMMIT. */
  bool applying;
  size_t nnames;
  char errmsg[ERRMSG_SIZE];
};

struct sqlite_table {
  lipsync_table base;
  sqlite_store *store;
  sqlite_table *next;
  char *name;
  lipsync_column *columns; /* canonical order; the names are owned */
  column_kind *kinds;      /* per canonical column */
  char *select_sql;        /* SELECT <columns>, _lipsync_uuid FROM <table> */
  /* Statements are prepared on first use: before prepare_table the table
   * may have no _lipsync_uuid to name. */
  sqlite3_stmt *idle_scan[SCAN_SHAPES + 1]; /* reset, ready for reuse */
  sqlite3_stmt *fetch_stmt;
  sqlite3_stmt *insert_stmt;
  /* Change capture (store_sqlite_capture.c, store_sqlite_items.c). */
  char *meta_name;           /* "_lipsync_meta_<name>" */
  sqlite3_stmt *meta_insert; /* a new item */
  sqlite3_stmt *meta_upsert; /* an item's version and deleted flag */
  sqlite3_stmt *update_stmt; /* a live row, written where it differs */
  sqlite3_stmt *delete_stmt; /* a tombstone's row */
  bool staging; /* new items wait in a staging table, see items.c */
  sqlite3_stmt *stage_insert; /* an item into the staging table, once open */
  lipsync_value *fetch_values;
  sqlite_cursor *cursors; /* open scans */
  /* The table was empty when prepared: its indexes were dropped, to be
   * built once before a lookup needs them or at commit (rebuild_indexes),
   * from the CREATE statements in |deferred|. */
  bool index_pending;
  bool gave_uuids; /* prepare gave rows a UUID: they have no item */
  char **deferred;
  size_t ndeferred;
  /* Bound with SQLITE_STATIC, so they live as long as the statements. */
  char fetch_key[UUID_TEXT_LEN + 1];
  char insert_key[UUID_TEXT_LEN + 1];
};

struct sqlite_cursor {
  lipsync_cursor base;
  sqlite_table *table;
  sqlite_cursor *next;
  sqlite3_stmt *stmt;
  int shape;
  int status; /* 0 while rows remain, 1 at the end, or the error */
  char lower[UUID_TEXT_LEN + 1];
  char upper[UUID_TEXT_LEN + 1];
  lipsync_value values[]; /* one per column, reused for every row */
};

/* ---- store_sqlite.c ------------------------------------------------- */

/* Keeps the message and returns |code|. */
int sq_fail(sqlite_store *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fails with SQLite's message for the last call on |s|'s connection. */
int sq_fail_db(sqlite_store *s, const char *table, const char *what);
int sq_fail_nomem(sqlite_store *s);
/* The lipsync_error for SQLite result code |rc|. */
int sq_code(int rc);
int sq_prepare(sqlite_store *s, const char *sql, sqlite3_stmt **out);
/* Runs |sql| (from sqlite3_mprintf, freed here) on behalf of |t|. */
int sq_exec_for_table(sqlite_store *s, sqlite_table *t, char *sql,
                      const char *what);
/* A name that reaches the rowid of |t|'s rows, or NULL. */
const char *sq_rowid_name(const sqlite_table *t);
/* Builds the indexes (and items) set aside while bulk loading. */
int sq_need_index(sqlite_store *s, sqlite_table *t);
/* Fills |row| from the current row of |st| (columns, then the UUID). */
int sq_read_row(sqlite_table *t, sqlite3_stmt *st, lipsync_value *values,
                lipsync_row *row);
/* Refuses a value column |i| of |t| cannot store exactly. */
int sq_check_value(sqlite_store *s, sqlite_table *t, size_t i,
                   const lipsync_value *v);
int sq_bind_value(sqlite3_stmt *st, int i, const lipsync_value *v);
int sq_insert_error(int rc);
/* Binds |row|'s values (checked) and t->insert_key to |st| (?1..?n, ?n+1),
 * steps and resets it. */
int sq_write_row(sqlite_store *s, sqlite_table *t, sqlite3_stmt *st,
                 const lipsync_row *row);
void sq_set_big_cache(sqlite_store *s, bool on);
/* While the big cache is in force, a smaller one for a large sort (the
 * sorter's memory follows the cache size), then the big one back. */
void sq_set_sort_cache(sqlite_store *s, bool on);

/* ---- store_sqlite_capture.c ----------------------------------------- */

/* Installs change capture on |t| if missing (state, registry, metadata
 * table with initial versions, triggers), else repairs items that
 * disagree with the rows; then marks the transaction as applying. */
int sq_capture_prepare(sqlite_store *s, sqlite_table *t);
/* Sets t->base.last_sync from the registry (0 if none). */
int sq_capture_read_last_sync(sqlite_store *s, sqlite_table *t);
/* Installs the triggers set aside during a bulk load (staging). */
int sq_capture_resume(sqlite_store *s, sqlite_table *t);
/* Resets the applying flag before COMMIT. */
int sq_capture_end(sqlite_store *s);
int sq_capture_tick(sqlite_store *s, lipsync_version *out);
int sq_capture_finish(sqlite_store *s, sqlite_table *t,
                      const lipsync_finish *f);
/* Refuses a clock SQLite's signed integers cannot order. */
int sq_check_clock(sqlite_store *s, sqlite_table *t, uint64_t clock);

/* ---- store_sqlite_items.c ------------------------------------------- */

/* Writes the item of a row insert() added (or a tombstone). */
int sq_items_insert(sqlite_store *s, sqlite_table *t, const lipsync_row *row);
/* Writes the staged items into the metadata table, in UUID order. */
int sq_items_write_staged(sqlite_store *s, sqlite_table *t);
/* Ends a bulk load: writes its staged items and installs the triggers. */
int sq_items_unstage(sqlite_store *s, sqlite_table *t);
int sq_items_update(sqlite_store *s, sqlite_table *t, const lipsync_row *row);
int sq_items_scan(sqlite_store *s, sqlite_table *t, sqlite_cursor **out);
int sq_items_next(sqlite_cursor *c, lipsync_item *item);
/* Finalizes the statements of |t| the items files prepared. */
void sq_items_free(sqlite_table *t);

#endif
