/*
 * store_sqlite_int.h: what the files of the SQLite backend share: the store,
 * table and cursor handles, and the helpers for errors, statements and
 * values. store_sqlite.c holds the store, its transactions and the rows;
 * store_sqlite_capture.c the change capture schema (state, registry,
 * metadata, triggers), the clock, identity, recount and the end of a
 * table's sync; store_sqlite_items.c the items: their cursors, the writes
 * of applied rows, kept summaries and positions.
 */
#ifndef LIPSYNC_STORE_SQLITE_INT_H
#define LIPSYNC_STORE_SQLITE_INT_H

#include "canon.h"
#include "lipsync.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define UUID_TEXT_LEN 36
#define ERRMSG_SIZE 1024
/* The layout of the capture schema this code writes (_lipsync_state.layout):
 * 3 adds change sequence numbers, the state of changed items as of the last
 * fold (_lipsync_prev_T), kept summaries, checkpoints and tokens. */
#define SQ_LAYOUT 3

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

/* Statement shapes kept idle per table for reuse. Row scans by the bounds
 * they take (bit 0 lower, bit 1 upper), then item scans likewise. */
enum {
  SHAPE_ROWS = 0,  /* + bounds: 0..3 */
  SHAPE_ITEMS = 4, /* + bounds: 4..7 */
  SHAPE_ROW_BY_UUID = 8,
  SHAPE_ITEM_BY_UUID,
  SHAPE_CHANGES,
  SHAPE_TOMBSTONES,
  SHAPE_ALL_ITEMS,
  NSHAPES
};

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
  bool writing;    /* that transaction may write (it holds the write lock) */
  bool resnapshot; /* it began to write on a later snapshot than it read */
  bool big_cache;  /* the insert-time page cache is in force */
  atomic_int interrupted; /* set by interrupt(), from any thread */
  int lock_timeout_ms;
  /* Frames in the WAL after the last commit (a connection the store
   * opened checkpoints itself, after the sync, not inside its COMMIT). */
  int wal_frames;
  /* The last sq_begin_write() began a new snapshot to write on. */
  bool resnapshot_taken;
  sqlite_table *tables; /* opened since the last commit or rollback */
  char **names;         /* the last list_tables answer */
  size_t nnames;
  /* _lipsync_state.applying is 1 in this transaction: reset before
   * COMMIT. */
  bool applying;
  bool identity_checked; /* this transaction checked where the file is */
  bool owner_checked;    /* and that its capture metadata is this code's */
  bool snapshot_used;    /* the session read items or rows of it */
  /* Change sequence numbers: the highest one the snapshot read, and the
   * range this transaction's own writes took (own_lo > own_hi: none). */
  uint64_t read_seq;
  uint64_t own_lo, own_hi;
  /* Changes the database made in response to the rows applied
   * (store_sqlite_nested.c): the table the store writes now; the other
   * tables its writes changed. */
  sqlite_table *target;
  char **nested;
  size_t nnested;
  bool nested_nomem;
  canon_hasher hasher;
  char errmsg[ERRMSG_SIZE];
};

struct sqlite_table {
  lipsync_table base;
  sqlite_store *store;
  sqlite_table *next;
  char *name;
  lipsync_column *columns; /* canonical order; the names are owned */
  column_kind *kinds;      /* per canonical column */
  char *plain_sql;  /* SELECT <columns>, _lipsync_uuid FROM <table> AS t */
  char *select_sql; /* the same with the live item's clock, site, base */
  sqlite3_stmt *idle[NSHAPES]; /* reset, ready for reuse */
  sqlite3_stmt *insert_stmt;
  sqlite3_stmt *fetch_stmt;
  /* The table had no row when it was prepared: the first insert makes the
   * load a bulk load (see bulk). */
  bool empty;
  /* Change capture (store_sqlite_capture.c, store_sqlite_items.c). */
  char *meta_name;           /* "_lipsync_meta_<name>": the items */
  char *prev_name;           /* "_lipsync_prev_<name>": states at the fold */
  sqlite3_stmt *meta_insert; /* a new item */
  sqlite3_stmt *meta_upsert; /* an item's version, deleted flag, seq */
  sqlite3_stmt *prev_log;    /* an item's state, before it changes */
  sqlite3_stmt *prev_none;   /* "no item", before a new one appears */
  sqlite3_stmt *update_stmt; /* a live row, written where it differs */
  sqlite3_stmt *delete_stmt; /* a tombstone's row */
  bool staging; /* new items wait in a staging table, see items.c */
  sqlite3_stmt *stage_insert; /* an item into the staging table, once open */
  lipsync_value *fetch_values;
  sqlite_cursor *cursors; /* open cursors */
  /* The table was empty when prepared: its indexes were dropped, to be
   * built once before a lookup needs them or at commit (rebuild_indexes),
   * from the CREATE statements in |deferred|. */
  bool index_pending;
  bool gave_uuids; /* prepare gave rows a UUID: they have no item */
  char **deferred;
  size_t ndeferred;
  /* A bulk load: the table had no row when prepared. Its new items (insert
   * is for UUIDs without an item) log no "no item" state for the fold:
   * their digests add up here. */
  bool bulk;
  canon_fp bulk_fp;
  bool bulk_sorted; /* items arrived in ascending UUID order so far */
  bool bulk_done;   /* its indexes and triggers are back */
  uint8_t bulk_last[LIPSYNC_UUID_LEN];
  /* The sequence number of the table's last bulk load (0: none): the items
   * with seq 0 changed then (they stay out of the seq index). */
  uint64_t bulk_seq;
  /* The kept summary as the snapshot holds it (summarize), once read. */
  bool summarized;
  lipsync_summary summary;
  bool wrote; /* this transaction changed an item of the table */
  /* UUIDs of items another writer changed between the snapshot the session
   * read and the one it writes on (sorted): touching one is TRY_AGAIN. */
  uint8_t (*window)[LIPSYNC_UUID_LEN];
  size_t nwindow;
  /* Bound with SQLITE_STATIC, so they live as long as the statements. */
  char insert_key[UUID_TEXT_LEN + 1];
  char fetch_key[UUID_TEXT_LEN + 1];
};

/* What a cursor reads: rows (with their items) or items. */
typedef enum cursor_kind { CURSOR_ROWS, CURSOR_ITEMS } cursor_kind;

struct sqlite_cursor {
  lipsync_cursor base;
  sqlite_table *table;
  sqlite_cursor *next;
  sqlite3_stmt *stmt;
  int shape;
  cursor_kind kind;
  int status; /* 0 while rows remain, 1 at the end, or the error */
  char lower[UUID_TEXT_LEN + 1];
  char upper[UUID_TEXT_LEN + 1];
  /* A lookup by UUID: the UUIDs (owned), and the next to look up. */
  uint8_t *uuids;
  size_t nuuids, pos;
  char key[UUID_TEXT_LEN + 1];
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
/* Prepares the statement sqlite3_mprintf() formats from |fmt|. */
int sq_prepare_mprintf(sqlite_store *s, sqlite_table *t, sqlite3_stmt **out,
                       const char *what, const char *fmt, ...);
/* Runs |sql| (from sqlite3_mprintf, freed here; NULL: out of memory) on
 * behalf of the table called |table| (NULL: none), or of |t|. */
int sq_exec_free(sqlite_store *s, const char *table, char *sql,
                 const char *what);
int sq_exec_for_table(sqlite_store *s, sqlite_table *t, char *sql,
                      const char *what);
int sq_exec(sqlite_store *s, const char *table, const char *sql,
            const char *what);
/* A name that reaches the rowid of |t|'s rows, or NULL. */
const char *sq_rowid_name(const sqlite_table *t);
/* Runs the checkpoint the last commit left due, if any (store_sqlite.c). */
void sq_checkpoint_if_due(sqlite_store *s);
/* Builds the indexes (and items) set aside while bulk loading. */
int sq_need_index(sqlite_store *s, sqlite_table *t);
/* Fills |row| from the current row of |st| (columns, the UUID, then the
 * item's clock, site, base_clock and base_site). */
int sq_read_row(sqlite_table *t, sqlite3_stmt *st, lipsync_value *values,
                lipsync_row *row);
/* Copies a version's site from column |col| of |st|: 16 bytes, or NULL for
 * the zero version when |null_ok|. False if it is neither. */
bool sq_read_site(sqlite3_stmt *st, int col, bool null_ok, uint8_t *out);
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
/* Takes the statement of |shape| kept idle by |t|, or prepares |sql|. */
int sq_take_stmt(sqlite_store *s, sqlite_table *t, int shape, const char *sql,
                 sqlite3_stmt **out);
/* Opens a cursor of |kind| over |stmt| (taken for |shape|). */
int sq_cursor_open(sqlite_store *s, sqlite_table *t, int shape,
                   cursor_kind kind, sqlite3_stmt *stmt, sqlite_cursor **out);
/* Whether another writer changed the item of |uuid| since the snapshot the
 * session read (see window); then fails the store with TRY_AGAIN. */
int sq_check_window(sqlite_store *s, sqlite_table *t, const uint8_t *uuid);
/* BEGIN IMMEDIATE outside the store's transactions (which it does not
 * open): a lock wait that expires is TRY_AGAIN. */
int sq_begin_immediate(sqlite_store *s);
/* Makes the transaction a writer (begin_write). */
int sq_begin_write(sqlite_store *s);
/* Marks the snapshot as read: a later begin_write that needs a new one
 * must then keep track of what changed in between. */
void sq_snapshot_used(sqlite_store *s);
/* Reads one integer query with ?1 bound to |arg| (NULL: none). */
int sq_query_int(sqlite_store *s, const char *table, const char *sql,
                 const char *arg, sqlite3_int64 *out, bool *found);

/* ---- store_sqlite_capture.c ----------------------------------------- */

/* Whether the capture schema of this layout is in place for |t| and in
 * order (no install, migration, UUIDs, recount or new identity due), read
 * without writing. */
/* Fails with STORAGE, changing nothing, when the database holds change
 * capture metadata this code does not own or understand: objects under
 * the reserved prefix "_lipsync" that it does not make, or a state of a
 * newer layout (spec LS-CAPTURE-8). Once per transaction. */
int sq_capture_check_owner(sqlite_store *s);
/* The prefixes of the objects this code makes for a table T (followed by
 * T's name): its item table first. */
#define SQ_META_PREFIX "_lipsync_meta_"
extern const char *const sq_own_prefixes[];
extern const size_t sq_nown_prefixes;
int sq_capture_ready(sqlite_store *s, sqlite_table *t, bool *ready);
/* Installs change capture on |t| if missing (state, registry, metadata
 * table with initial versions, triggers), migrates an older layout, checks
 * where the database lives, recounts if due. Writes: the transaction must
 * be a writer. */
int sq_capture_prepare(sqlite_store *s, sqlite_table *t);
/* Sets t->base.last_sync and t->bulk_seq from the registry (0 if none). */
int sq_capture_read_last_sync(sqlite_store *s, sqlite_table *t);
/* Starts a bulk load of |t|: takes the sequence number all its items share
 * (they are written with seq 0) and records it. */
int sq_capture_mark_bulk(sqlite_store *s, sqlite_table *t);
/* Installs the triggers set aside during a bulk load (staging). */
int sq_capture_resume(sqlite_store *s, sqlite_table *t);
/* Before COMMIT: resets the applying flag, records the sequence numbers
 * taken. */
int sq_capture_end(sqlite_store *s);

/* store_sqlite_nested.c: changes the rows applied caused (spec
 * LS-CAPTURE-10). watch turns the connection's update hook on; begin and
 * end bracket each statement that writes rows of |t|; forget marks,
 * before COMMIT, the tables so changed for a recount; stop turns the hook
 * off and forgets them. */
void sq_nested_watch(sqlite_store *s);
void sq_nested_begin(sqlite_store *s, sqlite_table *t);
void sq_nested_end(sqlite_store *s);
int sq_nested_forget(sqlite_store *s);
void sq_nested_stop(sqlite_store *s);

/* ---- store_sqlite_fkeys.c ------------------------------------------- */

/* The connection enforces foreign keys. */
bool sq_fkeys_enforced(sqlite_store *s);
/* Defers the foreign keys the connection enforces to the end of the
 * transaction just begun. */
void sq_fkeys_defer(sqlite_store *s);
/* Fails with STORAGE, naming a row, when the transaction leaves a
 * foreign key broken. */
int sq_fkeys_check(sqlite_store *s);
/* Marks this transaction as applying (triggers quiet) and reads the
 * sequence number the next write takes. */
int sq_capture_begin_write(sqlite_store *s);
int sq_capture_tick(sqlite_store *s, lipsync_version *out);
/* A tick that moves the clock (and takes a sequence number), for repairs. */
int sq_capture_tick_write(sqlite_store *s, lipsync_version *out, uint64_t *seq);
int sq_capture_finish(sqlite_store *s, sqlite_table *t,
                      const lipsync_finish *f);
/* Refuses a clock SQLite's signed integers cannot order. */
int sq_check_clock(sqlite_store *s, sqlite_table *t, uint64_t clock);
int sq_capture_recount(sqlite_store *s, sqlite_table *t);
int sq_load_checkpoint(sqlite_store *s, sqlite_table *t,
                       lipsync_checkpoint *out);
int sq_load_token(sqlite_store *s, sqlite_table *t, const uint8_t *site,
                  uint8_t *token, int *found);
int sq_distrust(sqlite_store *s, const char *name);
int sq_maintain(sqlite_store *s, uint64_t horizon);

/* ---- store_sqlite_drop.c -------------------------------------------- */

/* The drop_capture method. */
int sq_drop_capture(sqlite_store *s, const char *const *names, size_t n);
/* The site id of this database (16 bytes), read in this transaction. */
int sq_capture_site(sqlite_store *s, uint8_t site[LIPSYNC_SITE_LEN]);

/* ---- store_sqlite_items.c ------------------------------------------- */

/* Writes the item of a row insert() added (or a tombstone). */
int sq_items_insert(sqlite_store *s, sqlite_table *t, const lipsync_row *row);
/* Writes the staged items into the metadata table, in UUID order. */
int sq_items_write_staged(sqlite_store *s, sqlite_table *t);
/* Ends a bulk load: writes its staged items and installs the triggers. */
int sq_items_unstage(sqlite_store *s, sqlite_table *t);
int sq_items_update(sqlite_store *s, sqlite_table *t, const lipsync_row *row);
/* Item cursors: every item (any order), a UUID range, a lookup of sorted
 * UUIDs, the changes since a position, the tombstones below a clock. */
int sq_items_scan(sqlite_store *s, sqlite_table *t, sqlite_cursor **out);
int sq_items_range(sqlite_store *s, sqlite_table *t, const uint8_t *lower,
                   const uint8_t *upper, sqlite_cursor **out);
int sq_items_lookup(sqlite_store *s, sqlite_table *t, const uint8_t *uuids,
                    size_t n, sqlite_cursor **out);
int sq_items_changes(sqlite_store *s, sqlite_table *t,
                     const lipsync_position *since, sqlite_cursor **out);
int sq_items_tombstones(sqlite_store *s, sqlite_table *t, uint64_t clock,
                        sqlite_cursor **out);
int sq_items_next(sqlite_cursor *c, lipsync_item *item);
/* The kept summary of |t| folded with the changes since its fold, as this
 * transaction sees it now (|write|: and record it as the new fold). */
int sq_items_fold(sqlite_store *s, sqlite_table *t, bool write,
                  lipsync_summary *out);
/* Recomputes the summary of every item from scratch (recount). */
int sq_items_sum_all(sqlite_store *s, sqlite_table *t, canon_fp *out);
int sq_items_position(sqlite_store *s, sqlite_table *t, lipsync_position *out);
/* Reads |p| (made by sq_items_position of this database): 0, or
 * LIPSYNC_ERR_NOT_FOUND. */
int sq_items_parse_position(sqlite_store *s, const lipsync_position *p,
                            uint64_t *read_seq, uint64_t *lo, uint64_t *hi);
/* Finalizes the statements of |t| the items files prepared. */
void sq_items_free(sqlite_table *t);

#endif
