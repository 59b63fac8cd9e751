/*
 * lipsync.h: the one public header of liblipsync, the LipSync reference
 * implementation (protocol version 1, spec/lipsync.md).
 *
 * Three layers, from the bottom up:
 *
 *   - a storage backend (lipsync_store): a versioned table of function
 *     pointers in the style of SQLite's VFS. The SQLite backend ships here;
 *     an application may write its own.
 *   - a sans-I/O session (lipsync_session): bytes in with
 *     lipsync_session_recv(), bytes out with lipsync_session_send(). It does
 *     no network I/O, so it runs over TCP, TLS, pipes or two memory buffers.
 *   - a thin socket loop (lipsync_session_run_fd) for the common case of a
 *     connected file descriptor.
 *
 * Every function that can fail returns 0 or a negative lipsync_error;
 * lipsync_strerror() names each code, and the handle keeps the detail of
 * the last failure (lipsync_session_errmsg, lipsync_store_errmsg).
 * Every exported name starts with lipsync_ / LIPSYNC_.
 */
#ifndef LIPSYNC_H
#define LIPSYNC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the library's API: the only symbols a shared liblipsync exports
 * (it is built with -fvisibility=hidden and LIPSYNC_BUILDING defined). */
#if defined(LIPSYNC_BUILDING) && defined(__GNUC__)
#define LIPSYNC_API __attribute__((visibility("default")))
#else
#define LIPSYNC_API
#endif

#define LIPSYNC_VERSION_STRING "0.1.0"
/* The protocol versions this library speaks. */
#define LIPSYNC_PROTOCOL_MIN 1
#define LIPSYNC_PROTOCOL_MAX 1

/* Largest frame payload (bytes after the 4-byte length prefix), spec 4. */
#define LIPSYNC_MAX_FRAME (16u * 1024u * 1024u)
#define LIPSYNC_UUID_LEN 16
#define LIPSYNC_DIGEST_LEN 16
#define LIPSYNC_NONCE_LEN 32
#define LIPSYNC_MAC_LEN 32
/* Name of the column holding each row's UUID. */
#define LIPSYNC_UUID_COLUMN "_lipsync_uuid"

/*
 * Error codes. Codes -1 .. -18 are the negated wire codes of the Error
 * frame (spec section 11); the others never cross the wire.
 */
typedef enum lipsync_error {
  LIPSYNC_OK = 0,
  LIPSYNC_ERR_PROTOCOL = -1,
  LIPSYNC_ERR_FRAME_TOO_LARGE = -2,
  LIPSYNC_ERR_UNEXPECTED_MESSAGE = -3,
  LIPSYNC_ERR_VERSION_MISMATCH = -4,
  LIPSYNC_ERR_AUTH_FAILED = -5,
  LIPSYNC_ERR_UNKNOWN_TABLE = -6,
  LIPSYNC_ERR_TABLE_NOT_OFFERED = -7,
  LIPSYNC_ERR_SCHEMA_MISMATCH = -8,
  LIPSYNC_ERR_CONFLICT = -9,
  LIPSYNC_ERR_VERIFY_FAILED = -10,
  LIPSYNC_ERR_STORAGE = -11,
  LIPSYNC_ERR_TIMEOUT = -12,
  LIPSYNC_ERR_INVALID_VALUE = -13,
  LIPSYNC_ERR_SHUTTING_DOWN = -14,
  LIPSYNC_ERR_INTERNAL = -15,
  /* Another writer of the database got in the way (a lock wait expired, a
   * row changed under the session): the same sync may succeed if run
   * again. */
  LIPSYNC_ERR_TRY_AGAIN = -16,
  /* the session would buffer more than its memory limit allows
   * (lipsync_session_set_memory_limit; spec LS-SEC-4) */
  LIPSYNC_ERR_RESOURCE_LIMIT = -17,
  /* the peer ended the session on purpose before it committed, for
   * example a client's dry run (lipsync_session_set_dry_run; spec
   * LS-DRY-1): nothing was committed */
  LIPSYNC_ERR_CANCELLED = -18,
  /* Local only. */
  LIPSYNC_ERR_NOMEM = -100,
  LIPSYNC_ERR_INVALID_ARGUMENT = -101,
  LIPSYNC_ERR_IO = -102,     /* the transport failed (read/write error) */
  LIPSYNC_ERR_CLOSED = -103, /* the peer closed the stream too early */
  LIPSYNC_ERR_NOT_FOUND = -104
} lipsync_error;

/* Returns a static English name for |code| ("auth failed", ...). */
LIPSYNC_API const char *lipsync_strerror(int code);
/* Returns the stable name of |code|: the spec's for codes with a wire
 * form ("AUTH_FAILED", "CONFLICT", ...; spec 11.1), else "NOMEM",
 * "INVALID_ARGUMENT", "IO", "CLOSED", "NOT_FOUND", "OK" for 0 and
 * "UNKNOWN" for any other value. For logs and machine-readable reports. */
LIPSYNC_API const char *lipsync_error_name(int code);

/* ------------------------------------------------------------------ */
/* Canonical values (spec section 7)                                    */
/* ------------------------------------------------------------------ */

typedef enum lipsync_type {
  LIPSYNC_NULL = 0,
  LIPSYNC_INTEGER = 1,
  LIPSYNC_REAL = 2,
  LIPSYNC_TEXT = 3,
  LIPSYNC_BLOB = 4
} lipsync_type;

/* One value. TEXT and BLOB point at bytes owned by whoever produced the
 * value; TEXT is UTF-8 and may contain NUL, so |len| is authoritative. */
typedef struct lipsync_value {
  lipsync_type type;
  union {
    int64_t integer;
    double real;
    struct {
      const void *data;
      size_t len;
    } bytes;
  } u;
} lipsync_value;

#define LIPSYNC_SITE_LEN 16

/* A row version (spec 8.1): a hybrid logical clock value (wall-clock
 * milliseconds << 16 | a counter) and the id of the site (database) that
 * made the change. Ordered by clock, then site bytewise. The zero version
 * (all zero) means "none"; clock 0 with a nonzero site is the initial
 * version of a row that existed when capture was installed. */
typedef struct lipsync_version {
  uint64_t clock;
  uint8_t site[LIPSYNC_SITE_LEN];
} lipsync_version;

/* <0, 0, >0 as |a| orders before, equal to, or after |b|. */
LIPSYNC_API int lipsync_version_cmp(const lipsync_version *a,
                                    const lipsync_version *b);

/* One row: its UUID and its values in canonical column order. Rows a
 * backend reads (scan, scan_uuids, fetch) carry their item's |version|
 * and |base| (|deleted| zero); rows the session applies (insert, update)
 * carry the version and deleted flag to store, and a tombstone (|deleted|
 * nonzero) has no values. */
typedef struct lipsync_row {
  uint8_t uuid[LIPSYNC_UUID_LEN];
  size_t nvalues;
  const lipsync_value *values;
  lipsync_version version;
  int deleted;
  /* Store methods version 3. */
  lipsync_version base; /* rows read: the item's base */
  /* Rows applied: the item digest (spec 8.1) of the item written, and of
   * the item it replaces (update only; zero when |had_item| is 0), for a
   * backend that keeps the sum of its item digests (summarize). */
  uint8_t digest[LIPSYNC_DIGEST_LEN];
  uint8_t old_digest[LIPSYNC_DIGEST_LEN];
  int had_item;
} lipsync_row;

/* What a database keeps of one row beside it (spec 8.1): the current
 * version, whether the row is deleted (a tombstone), and the version the
 * row had when this database last finished a sync of the table as a
 * client (the zero version if never). */
typedef struct lipsync_item {
  uint8_t uuid[LIPSYNC_UUID_LEN];
  lipsync_version version;
  lipsync_version base;
  int deleted;
} lipsync_item;

/* One column in canonical form: name, and canonical type name
 * ("integer", "real", "text", "blob", "numeric", "boolean", "decimal",
 * "date", "timestamp", "timestamptz", "json", "jsonb", "uuid"; spec section
 * 6.2). */
typedef struct lipsync_column {
  const char *name;
  const char *type;
} lipsync_column;

/* Computes the 16-byte row digest of |row| (spec 8.1) into |out|. */
LIPSYNC_API void lipsync_row_digest(const lipsync_row *row,
                                    uint8_t out[LIPSYNC_DIGEST_LEN]);

/* Computes the 16-byte item digest of |item| (spec 8.1) from its UUID,
 * version and deleted flag; the base plays no part. */
LIPSYNC_API void lipsync_item_digest(const lipsync_item *item,
                                     uint8_t out[LIPSYNC_DIGEST_LEN]);

/* Formats |uuid| as 36 lowercase characters plus NUL into |out|. */
LIPSYNC_API void lipsync_uuid_format(const uint8_t uuid[LIPSYNC_UUID_LEN],
                                     char out[37]);

/* Parses the 36-character lowercase form. Returns 0, or
 * LIPSYNC_ERR_INVALID_VALUE if |text| (of |len| bytes) is not one. */
LIPSYNC_API int lipsync_uuid_parse(const char *text, size_t len,
                                   uint8_t out[LIPSYNC_UUID_LEN]);

/* Fills |out| with a fresh random version 4 UUID (RFC 9562). Returns 0 or
 * LIPSYNC_ERR_INTERNAL if the system RNG fails. */
LIPSYNC_API int lipsync_uuid_generate(uint8_t out[LIPSYNC_UUID_LEN]);

/* ------------------------------------------------------------------ */
/* Storage backends                                                     */
/* ------------------------------------------------------------------ */

typedef struct lipsync_store lipsync_store;
typedef struct lipsync_table lipsync_table;
typedef struct lipsync_cursor lipsync_cursor;
typedef struct lipsync_store_methods lipsync_store_methods;

/* Base of every backend's store handle: a backend embeds it first. */
struct lipsync_store {
  const lipsync_store_methods *methods;
};

/* Base of a backend's per-table handle, valid from open_table until the
 * transaction ends. |columns| excludes _lipsync_uuid and is sorted in
 * canonical column order (bytewise by name). |last_sync| is the server
 * clock recorded by the last finish_table as a client (0 if none).
 * |is_server| is set by the core after open_table when a server's session
 * opened the table: a backend may skip what only a client keeps (bases). */
struct lipsync_table {
  const char *name;
  size_t ncolumns;
  const lipsync_column *columns;
  uint64_t last_sync;
  int is_server;
};

/* A change position (spec 8.8.1): opaque bytes that only the database
 * that made them reads. */
#define LIPSYNC_POSITION_MAX 1024
typedef struct lipsync_position {
  size_t len;
  uint8_t data[LIPSYNC_POSITION_MAX];
} lipsync_position;

/* What a client keeps of its last session of a table with a server (spec
 * 8.8.1): the server's site id, token and position (|has| 0: none), and
 * its own session position, which it keeps after any successful session
 * as a client (len 0: none). */
typedef struct lipsync_checkpoint {
  int has;
  uint8_t server_site[LIPSYNC_SITE_LEN];
  uint8_t token[LIPSYNC_SITE_LEN];
  lipsync_position server_position;
  lipsync_position client_position;
} lipsync_checkpoint;

/* The sum (mod 2^128, big-endian) and number of a set of item digests. */
typedef struct lipsync_summary {
  uint8_t sum[LIPSYNC_DIGEST_LEN];
  uint64_t count;
} lipsync_summary;

/* What finish_table records once every received row is applied. */
typedef struct lipsync_finish {
  uint64_t max_clock;    /* the highest clock received: the clock passes it */
  uint64_t horizon;      /* tombstones with a lower clock may be purged */
  int as_client;         /* this side is the client: bases := versions */
  uint64_t server_clock; /* as_client: the new last_sync */
  /* Version 3. */
  /* as_client: what to keep in place of the table's checkpoint; its
   * client_position is the session's (store method position). */
  const lipsync_checkpoint *checkpoint;
  /* Server: when |new_token| is not NULL, the token to keep for the client
   * database |client_site| and this table in place of the one it holds. */
  const uint8_t *client_site;
  const uint8_t *new_token;
} lipsync_finish;

/* Base of a backend's cursor. */
struct lipsync_cursor {
  lipsync_table *table;
};

#define LIPSYNC_STORE_METHODS_VERSION 4

/*
 * A storage backend. Methods are only ever appended; |version| says how many
 * a backend fills. All methods return 0 or a negative lipsync_error and keep
 * a message for errmsg(). The core calls them in this order for one sync:
 *   begin, open_table (each table), prepare_table (each), scan_items,
 *   scan/fetch/insert/update in any order, finish_table (each), flush, then
 *   commit or rollback. commit and rollback invalidate every lipsync_table
 *   and lipsync_cursor of the transaction.
 *
 * Change capture (spec 8.1, version 2): a backend keeps an item (version,
 * deleted flag, base) beside every row of a prepared table and gives every
 * INSERT, UPDATE and DELETE committed by any connection a new version in
 * the same transaction. Rows written by insert and update are the peer's
 * changes and get no new version.
 */
struct lipsync_store_methods {
  int version;
  const char *name; /* "sqlite", ... */

  /* Starts the one write transaction of a sync: from here the store reads a
   * consistent snapshot and no other writer interleaves. */
  int (*begin)(lipsync_store *store);
  /* Makes every change since begin durable, atomically. */
  int (*commit)(lipsync_store *store);
  /* Discards every change since begin. Must be safe to call after a failed
   * begin or commit, and when no transaction is open. */
  int (*rollback)(lipsync_store *store);

  /* Looks up table |name| and describes its columns. Returns
   * LIPSYNC_ERR_UNKNOWN_TABLE if there is none, LIPSYNC_ERR_SCHEMA_MISMATCH
   * if a column has a type with no canonical mapping (the message names the
   * column). The store owns |*out|. */
  int (*open_table)(lipsync_store *store, const char *name,
                    lipsync_table **out);
  /* Gives |table| its _lipsync_uuid column and unique index if missing, and
   * a fresh random UUID to every row that has none. Reports malformed UUIDs
   * already present with LIPSYNC_ERR_STORAGE. Installs change capture if
   * missing, giving every existing row its initial version, and repairs
   * items that disagree with the rows (a row changed with capture off). */
  int (*prepare_table)(lipsync_store *store, lipsync_table *table);

  /* Opens a cursor over the rows of |table| whose UUID is in [lower, upper)
   * (NULL means unbounded), in any order. */
  int (*scan)(lipsync_store *store, lipsync_table *table, const uint8_t *lower,
              const uint8_t *upper, lipsync_cursor **out);
  /* Advances |cursor|: returns 1 and fills |row| (valid until the next call
   * on the cursor), 0 at the end, or a negative error. */
  int (*next)(lipsync_cursor *cursor, lipsync_row *row);
  /* Closes |cursor|; NULL is a no-op. */
  void (*close_cursor)(lipsync_cursor *cursor);

  /* Reads the row with |uuid| into |row|, valid until the next call on the
   * store. Returns LIPSYNC_ERR_NOT_FOUND if there is none. */
  int (*fetch)(lipsync_store *store, lipsync_table *table,
               const uint8_t uuid[LIPSYNC_UUID_LEN], lipsync_row *row);
  /* Inserts |row|, whose UUID has no item yet, and its item (version,
   * deleted; base zero); a tombstone inserts the item alone. Returns
   * LIPSYNC_ERR_INVALID_VALUE for a value this database cannot store
   * exactly, LIPSYNC_ERR_STORAGE otherwise. */
  int (*insert)(lipsync_store *store, lipsync_table *table,
                const lipsync_row *row);

  /* Names every user table, for a server that offers all tables. The
   * store owns the array and strings until the next call. */
  int (*list_tables)(lipsync_store *store, const char *const **names,
                     size_t *count);

  /* The detail of the last failure, never NULL. */
  const char *(*errmsg)(lipsync_store *store);
  /* Rolls back anything open and frees the store. */
  void (*destroy)(lipsync_store *store);

  /* May be called from any thread while another thread uses the store:
   * makes a call waiting for a lock, or running a long statement, return
   * soon with LIPSYNC_ERR_SHUTTING_DOWN, and every later call fail so,
   * apart from rollback and destroy. NULL if the backend cannot. */
  void (*interrupt)(lipsync_store *store);

  /* Opens a cursor over the rows whose UUIDs are the |n| 16-byte UUIDs at
   * |uuids|, in any order (a UUID without a row is skipped): a batch of
   * lookups in one go, for a database across a network. NULL if the
   * backend has none; fetch is then used row by row. */
  int (*scan_uuids)(lipsync_store *store, lipsync_table *table,
                    const uint8_t *uuids, size_t n, lipsync_cursor **out);

  /* Makes every insert so far take effect in the transaction and reports
   * any error that causes (a deferred constraint or index, a batched
   * check): the session calls it before it vouches for its tables in
   * Verify, since after that the peer may commit. NULL if inserts report
   * their errors at once. */
  int (*flush)(lipsync_store *store);

  /* Version 2. */

  /* Replaces the row and item of a UUID that has an item: a live |row| is
   * inserted, or updated where a value differs (a row equal to the stored
   * one is left untouched); a tombstone deletes the row. The item takes
   * |row|'s version and deleted flag and keeps its base. Errors as insert. */
  int (*update)(lipsync_store *store, lipsync_table *table,
                const lipsync_row *row);
  /* Opens a cursor over every item of |table|, tombstones included, in any
   * order; next_item returns 1 and fills |item|, 0 at the end, or an error.
   * close_cursor closes it. */
  int (*scan_items)(lipsync_store *store, lipsync_table *table,
                    lipsync_cursor **out);
  int (*next_item)(lipsync_cursor *cursor, lipsync_item *item);
  /* Records the end of |table|'s sync (see lipsync_finish). */
  int (*finish_table)(lipsync_store *store, lipsync_table *table,
                      const lipsync_finish *finish);
  /* This database's clock now: a version later than every version it has
   * made or received, with its site id (created if none yet), for the
   * server's TablesOpened. A backend may or may not move its clock. */
  int (*tick)(lipsync_store *store, lipsync_version *out);

  /* Version 3: snapshots, change positions, summaries and checkpoints
   * (spec LS-STORE-4, 8.8). The core requires it. */

  /* Starts the one transaction of a sync for reading: everything read in it
   * comes from one snapshot of the database, and reading blocks no other
   * reader or writer. prepare_table may turn it into a write transaction
   * (capture to install, UUIDs to give) before anything else is read. */
  int (*begin_read)(lipsync_store *store);
  /* Lets the transaction write, waiting for whatever lock the backend
   * needs to write (SQLite: the database's write lock; PostgreSQL: none
   * here, row locks as it writes) for at most the lock timeout (then
   * LIPSYNC_ERR_TRY_AGAIN). What the session
   * reads stays its snapshot's (LS-STORE-4): writing, or reading again, an
   * item that another writer changed since then fails with
   * LIPSYNC_ERR_TRY_AGAIN. insert, update and finish_table call it when
   * they must write. */
  int (*begin_write)(lipsync_store *store);
  /* Bounds every later wait for a lock to |ms| milliseconds (<= 0: the
   * backend's default). */
  void (*set_lock_timeout)(lipsync_store *store, int ms);
  /* The session position of |table| (spec LS-INC-1): the changes this
   * transaction read, and its own writes so far. */
  int (*position)(lipsync_store *store, lipsync_table *table,
                  lipsync_position *out);
  /* Opens a cursor (next_item) over the items of |table| changed since
   * |since|, a position this database made for it, in ascending UUID
   * order, tombstones included. LIPSYNC_ERR_NOT_FOUND when it cannot read
   * |since| as one of its positions. */
  int (*scan_changes)(lipsync_store *store, lipsync_table *table,
                      const lipsync_position *since, lipsync_cursor **out);
  /* Opens a cursor (next_item) over the items whose UUID is in [lower,
   * upper) (NULL: unbounded), in ascending UUID order, tombstones
   * included. */
  int (*scan_item_range)(lipsync_store *store, lipsync_table *table,
                         const uint8_t *lower, const uint8_t *upper,
                         lipsync_cursor **out);
  /* Opens a cursor (next_item) over the items of the |n| UUIDs at |uuids|
   * (16 bytes each, ascending) that exist, in ascending UUID order. */
  int (*lookup_items)(lipsync_store *store, lipsync_table *table,
                      const uint8_t *uuids, size_t n, lipsync_cursor **out);
  /* Opens a cursor (next_item) over the tombstones of |table| whose clock
   * is below |clock|, in any order. */
  int (*scan_tombstones)(lipsync_store *store, lipsync_table *table,
                         uint64_t clock, lipsync_cursor **out);
  /* The sum and count of the item digests of every item of |table|,
   * tombstones included, in the snapshot, before the transaction wrote
   * any item: kept up to date by the backend, so that this costs what
   * changed since it last folded its changes in, not the table. */
  int (*summarize)(lipsync_store *store, lipsync_table *table,
                   lipsync_summary *out);
  /* The client's checkpoint of |table| (spec 8.8.1). */
  int (*load_checkpoint)(lipsync_store *store, lipsync_table *table,
                         lipsync_checkpoint *out);
  /* The token the server keeps for the client database |client_site| and
   * |table|: sets |*found| and copies it into |token|. */
  int (*load_token)(lipsync_store *store, lipsync_table *table,
                    const uint8_t client_site[LIPSYNC_SITE_LEN],
                    uint8_t token[LIPSYNC_SITE_LEN], int *found);
  /* Outside any transaction (after a rollback): forgets the checkpoint of
   * table |name| and makes its next prepare_table recount it, in a
   * transaction of its own (spec LS-INC-16, LS-INC-17). */
  int (*distrust)(lipsync_store *store, const char *name);
  /* Recomputes the kept summary of |table| from its items, gives every
   * item that disagrees with its row a new version (a change that escaped
   * capture), and forgets its checkpoint. Before anything else of the
   * table is read; it writes. */
  int (*recount)(lipsync_store *store, lipsync_table *table);
  /* Outside any transaction: folds the changes of every table into the
   * kept summaries and purges tombstones below |horizon| (0: none), in
   * transactions of its own; a backend whose sessions do this themselves
   * may do nothing. Never needed for correctness. */
  int (*maintain)(lipsync_store *store, uint64_t horizon);

  /* Version 4. */
  /* Outside any transaction, in one transaction of its own: removes the
   * change capture of the |n| tables |names| (NULL: of every table, those
   * since dropped included, and the database's own metadata: site id,
   * clock, tokens), every object it made under the reserved prefix, and
   * keeps each table's rows and _lipsync_uuid column. Capture metadata it
   * does not own or understand is refused as prepare_table refuses it, and
   * nothing changes. Returns the number of tables whose capture it removed,
   * or a negative lipsync_error; a name that is neither a table nor a
   * captured one is LIPSYNC_ERR_UNKNOWN_TABLE. */
  int (*drop_capture)(lipsync_store *store, const char *const *names, size_t n);
};

/* Frees |store| through its destroy method; NULL is a no-op. */
LIPSYNC_API void lipsync_store_free(lipsync_store *store);
/* The detail of |store|'s last failure. */
LIPSYNC_API const char *lipsync_store_errmsg(lipsync_store *store);
/* Interrupts |store| from any thread (see the interrupt method), for an
 * application that is stopping. The caller keeps |store| alive meanwhile. */
LIPSYNC_API void lipsync_store_interrupt(lipsync_store *store);
/* Bounds every later wait of |store| for a lock of its database to |ms|
 * milliseconds (<= 0: the backend's default, 60 s); a sync whose wait
 * expires fails with LIPSYNC_ERR_TRY_AGAIN. A connection the caller wraps
 * keeps its own busy handler (SQLite) or lock_timeout (PostgreSQL) for
 * the caller's transactions. */
LIPSYNC_API void lipsync_store_set_lock_timeout(lipsync_store *store, int ms);
/* Outside any sync: folds the changes the store's capture logged into the
 * summaries it keeps, and purges tombstones older than |retention_ms| (0:
 * none), in short transactions of its own; a busy database is left for
 * next time. Never needed for correctness: it keeps the next syncs cheap.
 * A server calls it now and then (lipsync-server: every 10 s at most). */
LIPSYNC_API int lipsync_store_maintain(lipsync_store *store,
                                       uint64_t retention_ms);

/* SQLite backend over an open connection |db| (a sqlite3 *). Does not take
 * ownership of |db|: the caller closes it after lipsync_store_free(). The
 * connection's settings (busy timeout, journal mode, foreign keys: a sync
 * defers those the connection enforces and checks them before Verify) and
 * its update hook stay the caller's: what the caller's triggers write when
 * a sync applies
 * rows (spec LS-CAPTURE-10) goes unseen until a recount, where a store
 * that opened its own connection watches for it. */
LIPSYNC_API int lipsync_store_sqlite_wrap(lipsync_store **out, void *db);
/* SQLite backend that opens (creating if needed) the database at |path| and
 * closes it when freed. It sets WAL mode (readers and the one writer do not
 * block each other), enforces the foreign keys the schema declares (a
 * sync checks them for the state it leaves), waits for another writer's
 * lock up to the lock timeout (lipsync_store_set_lock_timeout), and uses a
 * 32 MiB page cache
 * while it inserts. On failure *out
 * is NULL and, when |errbuf| is not NULL, the reason is copied into it. */
LIPSYNC_API int lipsync_store_sqlite_open(lipsync_store **out, const char *path,
                                          char *errbuf, size_t errlen);

/* PostgreSQL backend over an open connection |conn| (a PGconn *). Does not
 * take ownership of |conn|: the caller finishes it after
 * lipsync_store_free(). Session settings a sync needs (time zone, lock
 * timeout, ...) are set for its transaction only. */
LIPSYNC_API int lipsync_store_pg_wrap(lipsync_store **out, void *conn);
/* PostgreSQL backend that connects with |conninfo| (a postgresql:// URI or
 * a libpq keyword/value string) and disconnects when freed. The store may
 * serve one sync after another; when PostgreSQL has closed the connection
 * in between (a restart), the next sync's transaction connects again
 * (PQreset) before it begins. On failure
 * *out is NULL and, when |errbuf| is not NULL, the reason is copied into
 * it. */
LIPSYNC_API int lipsync_store_pg_open(lipsync_store **out, const char *conninfo,
                                      char *errbuf, size_t errlen);

/* Nonzero if |db| names a PostgreSQL database: a postgresql:// or
 * postgres:// URI, or a libpq keyword/value string ("host=... dbname=...").
 * Anything else is a SQLite path. */
LIPSYNC_API int lipsync_db_is_postgres(const char *db);
/* Opens |db| with the PostgreSQL backend or the SQLite one, as
 * lipsync_db_is_postgres() tells; same contract as the two open
 * functions. */
LIPSYNC_API int lipsync_store_open(lipsync_store **out, const char *db,
                                   char *errbuf, size_t errlen);

/* ------------------------------------------------------------------ */
/* Sessions (sans-I/O)                                                  */
/* ------------------------------------------------------------------ */

typedef struct lipsync_session lipsync_session;

/* Creates a client session that syncs |tables| (|ntables| >= 1, names
 * copied) of |store| using the shared |secret| (copied). Does not take
 * ownership of |store|, which must outlive the session. */
LIPSYNC_API int
lipsync_session_client_new(lipsync_session **out, lipsync_store *store,
                           const void *secret, size_t secret_len,
                           const char *const *tables, size_t ntables);

/* Creates a server session over |store|. It offers the |noffered| tables
 * named in |offered|, or every table of the store when |offer_all| is
 * nonzero. Does not take ownership of |store|. |store| may be NULL when
 * lipsync_session_set_store_opener() follows. */
LIPSYNC_API int lipsync_session_server_new(lipsync_session **out,
                                           lipsync_store *store,
                                           const void *secret,
                                           size_t secret_len,
                                           const char *const *offered,
                                           size_t noffered, int offer_all);

/* Frees |session|, rolling back a transaction still open. NULL is a no-op. */
LIPSYNC_API void lipsync_session_free(lipsync_session *session);

/* Feeds |len| received bytes. Consumes all of them and returns |len|, or
 * returns a negative error once the session has failed (the session has
 * then queued an Error frame to send, and rolled back). */
LIPSYNC_API ssize_t lipsync_session_recv(lipsync_session *session,
                                         const uint8_t *data, size_t len);

/* Tells the session the peer closed the stream (read returned 0). */
LIPSYNC_API void lipsync_session_recv_eof(lipsync_session *session);

/* Returns the next bytes to send and their length; 0 when there is
 * nothing to send now. The caller must send all of them before calling
 * again; the pointer is valid until the next call. A negative return is an
 * error (the session has failed). */
LIPSYNC_API ssize_t lipsync_session_send(lipsync_session *session,
                                         const uint8_t **data);

/* Nonzero while the session expects more input. */
LIPSYNC_API int lipsync_session_want_read(lipsync_session *session);
/* Nonzero while the session has or may produce output now. */
LIPSYNC_API int lipsync_session_want_write(lipsync_session *session);
/* Nonzero once the session has finished, successfully or not, and has
 * nothing more to send: the transport may be closed. */
LIPSYNC_API int lipsync_session_is_done(lipsync_session *session);

/* Fails the session with |code| (for example LIPSYNC_ERR_TIMEOUT or
 * LIPSYNC_ERR_SHUTTING_DOWN): rolls back and queues an Error frame. */
LIPSYNC_API void lipsync_session_abort(lipsync_session *session, int code,
                                       const char *message);

/* 0 after a successful sync, else the error that ended the session. */
LIPSYNC_API int lipsync_session_result(lipsync_session *session);
/* Nonzero if the error came from the peer's Error frame. */
LIPSYNC_API int lipsync_session_error_is_remote(lipsync_session *session);
/* A human-readable description of the result, never NULL. */
LIPSYNC_API const char *lipsync_session_errmsg(lipsync_session *session);

/* Per-table counters, for reports. */
typedef struct lipsync_table_stats {
  const char *name;   /* this side's name of the table */
  const char *remote; /* the name the session gives the peer: |name|
                         unless mapped (lipsync_session_map_table) */
  uint64_t rows_sent;
  uint64_t rows_received;
  uint64_t deletes_sent;     /* of rows_sent: tombstones (deleted rows) */
  uint64_t deletes_received; /* of rows_received: tombstones */
  /* Rows changed on both sides since they last agreed (spec 8.6), that
   * the conflict policy resolved for the peer's change (taken: every such
   * row received) or for this side's (kept: those whose decision this
   * side made, from the peer's item; the peer counts the others among
   * its taken rows). */
  uint64_t changed_both_kept;
  uint64_t changed_both_taken;
  /* Rows this side found the policy cannot resolve (spec LS-POLICY-3):
   * any makes the sync fail with LIPSYNC_ERR_CONFLICT. */
  uint64_t conflicts;
  uint64_t bytes_sent;     /* frames that name this table */
  uint64_t bytes_received; /* frames that name this table */
} lipsync_table_stats;

/* Number of tables in the session (known to a server once they are open). */
LIPSYNC_API size_t lipsync_session_table_count(lipsync_session *session);
/* Fills |out| for table |index|. Returns LIPSYNC_ERR_INVALID_ARGUMENT when
 * |index| is out of range. */
LIPSYNC_API int lipsync_session_table_stats(lipsync_session *session,
                                            size_t index,
                                            lipsync_table_stats *out);
/* Total bytes sent and received by the session, framing included. */
LIPSYNC_API void lipsync_session_bytes(lipsync_session *session, uint64_t *sent,
                                       uint64_t *received);

/* Called as rows are sent and received. */
typedef void (*lipsync_progress_cb)(void *user, const char *table,
                                    uint64_t rows_sent, uint64_t rows_received);
LIPSYNC_API void lipsync_session_set_progress(lipsync_session *session,
                                              lipsync_progress_cb cb,
                                              void *user);

/* How a row changed on both sides since they last agreed is resolved
 * (spec 8.6). The client chooses; the server follows the client's choice. */
typedef enum lipsync_policy {
  LIPSYNC_POLICY_LWW = 0,         /* the higher version wins (default) */
  LIPSYNC_POLICY_SERVER_WINS = 1, /* the server's change wins */
  LIPSYNC_POLICY_CLIENT_WINS = 2  /* the client's change wins */
} lipsync_policy;

/* Client only; call before the first recv/send. Returns
 * LIPSYNC_ERR_INVALID_ARGUMENT for a server session or an unknown policy. */
LIPSYNC_API int lipsync_session_set_policy(lipsync_session *session,
                                           lipsync_policy policy);
/* Parses "lww", "server-wins" or "client-wins". */
LIPSYNC_API int lipsync_policy_parse(const char *text, lipsync_policy *out);
/* The name lipsync_policy_parse() reads ("lww", ...), or "unknown". */
LIPSYNC_API const char *lipsync_policy_name(lipsync_policy policy);

/* Server only: tombstones older than |ms| milliseconds are left out of
 * syncs and purged (spec 8.7); default 30 days. */
LIPSYNC_API int
lipsync_session_set_tombstone_retention(lipsync_session *session, uint64_t ms);
#define LIPSYNC_DEFAULT_RETENTION_MS (30ull * 24 * 3600 * 1000)

/* Installs change capture on the |ntables| tables named by |tables| (NULL:
 * every table of the store) in one transaction (what the first sync would do):
 * UUIDs, items with initial versions, triggers. On failure nothing changes and,
 * when |errbuf| is not NULL, the reason is copied into it. */
LIPSYNC_API int lipsync_store_init_tables(lipsync_store *store,
                                          const char *const *tables,
                                          size_t ntables, char *errbuf,
                                          size_t errlen);

/* Removes LipSync's change capture from the |ntables| tables named by
 * |tables| (NULL: from every table, including the metadata of tables since
 * dropped, and the database's own: its site id, clock and the tokens a
 * server keeps) in one transaction: triggers, item tables, the registry's
 * rows. The rows and their _lipsync_uuid column stay: capture installed
 * again (lipsync_store_init_tables() or a sync) gives each row the initial
 * version of its contents, and the rows both sides hold alike still match
 * (spec LS-CAPTURE-9). Metadata of another implementation or a newer layout
 * is refused (spec LS-CAPTURE-8) and nothing changes. Returns the number of
 * tables whose capture was removed, or a negative lipsync_error
 * (LIPSYNC_ERR_UNKNOWN_TABLE for a name that is neither a table nor a captured
 * one) with the reason copied into |errbuf|. */
LIPSYNC_API int lipsync_store_drop_capture(lipsync_store *store,
                                           const char *const *tables,
                                           size_t ntables, char *errbuf,
                                           size_t errlen);

/* Server: opens the database only once the client has proved it holds
 * the secret (spec LS-SEC-3), so that connections that never authenticate
 * cost no database connection. Pass a NULL store to
 * lipsync_session_server_new() and set |open| before the first recv: the
 * session calls it once, right after the client's proof verified, and
 * uses the store it returns (which the caller frees after the session).
 * On failure |open| returns a negative lipsync_error and describes it in
 * |err|; the session fails with that code and tells the client. */
typedef int (*lipsync_store_opener)(void *user, lipsync_store **store,
                                    char *err, size_t errlen);
LIPSYNC_API int lipsync_session_set_store_opener(lipsync_session *session,
                                                 lipsync_store_opener open,
                                                 void *user);

/* Bounds the memory the session buffers for its peer to |bytes| (0: no
 * bound; default LIPSYNC_DEFAULT_MEMORY_LIMIT): the frame being read and
 * its decoded form, the frames queued to send, and what the peer's frames
 * make it remember (received rows held back until the peer's last turn,
 * the UUIDs received, asked for and to send). Past it the session fails
 * with LIPSYNC_ERR_RESOURCE_LIMIT and rolls back, as spec LS-SEC-4 says:
 * an authenticated peer that sends rows forever cannot exhaust the
 * process. The store's own memory (SQLite's page cache, libpq's results)
 * is not counted. Held rows are written through, rather than held, past
 * a quarter of the bound. A frame of LIPSYNC_MAX_FRAME bytes may decode
 * into some ten times its size, so a bound below 256 MiB can refuse
 * legitimate maximum-size frames; the reference's own frames are far
 * smaller. */
LIPSYNC_API int lipsync_session_set_memory_limit(lipsync_session *session,
                                                 size_t bytes);
#define LIPSYNC_DEFAULT_MEMORY_LIMIT ((size_t)256 * 1024 * 1024)
/* The memory the session buffers now, as the limit counts it. */
LIPSYNC_API size_t lipsync_session_memory(const lipsync_session *session);

/* Testing and tuning knobs; call before the first recv/send. */
LIPSYNC_API int lipsync_session_set_versions(lipsync_session *session,
                                             uint32_t min, uint32_t max);
/* Ranges holding at most |n| items are answered with item lists rather
 * than split (default 32; 0 disables splitting: the simple strategy). */
LIPSYNC_API void lipsync_session_set_split_threshold(lipsync_session *session,
                                                     size_t n);

/* Whether the session offers (client) or accepts (server) the feature
 * "incremental" (spec 8.8): a table synced before with the same peer
 * exchanges only what changed since (default: on). Call before the first
 * recv/send. */
LIPSYNC_API int lipsync_session_set_incremental(lipsync_session *session,
                                                int on);
/* Client only: the server knows local table |local| (one of the tables
 * the session was created with) as |remote| (copied), for example
 * "cities" as "geo.cities". The names in OpenTables are the server's;
 * everything local (the store, reports, messages) uses |local|. Returns
 * LIPSYNC_ERR_INVALID_ARGUMENT for a server session or an unknown local
 * table; a session in which two tables end up with one remote name fails
 * with it before it opens them. Call before the first recv/send. */
LIPSYNC_API int lipsync_session_map_table(lipsync_session *session,
                                          const char *local,
                                          const char *remote);

/* Client only: a dry run (spec LS-DRY-1). The session runs the whole
 * reconciliation, applies what it receives inside its transaction (so a
 * row this database would refuse is found), then, where it would send
 * its Verify, sends Error CANCELLED instead and rolls back; the server
 * rolls back too. Neither database changes. lipsync_session_result() is
 * then 0 and the table stats say what the sync would do;
 * lipsync_session_dry_run_outcome() tells how it would end. Call before
 * the first recv/send. */
LIPSYNC_API int lipsync_session_set_dry_run(lipsync_session *session, int on);
/* After a dry run: 0 if the sync would succeed as far as this side can
 * tell, LIPSYNC_ERR_CONFLICT if a row cannot be resolved, or
 * LIPSYNC_ERR_VERIFY_FAILED if the server sent its Verify first and the
 * final states differ. A message is in lipsync_session_errmsg(). */
LIPSYNC_API int lipsync_session_dry_run_outcome(lipsync_session *session);

/* Client only: presents no checkpoint, so that every table is reconciled
 * by ranges, and first recomputes what the store keeps of each table from
 * its items, repairing items that disagree with their rows (a change made
 * with capture off). Call before the first recv/send. */
LIPSYNC_API int lipsync_session_set_full(lipsync_session *session);
/* Client only, optional: prepares this side's tables now, before any byte
 * is exchanged: starts the session's transaction, gives rows their UUIDs,
 * installs or checks change capture (the first sync of a large table
 * spends most of its local time here), and with lipsync_session_set_full()
 * recounts. Without this call the session does it once the server has
 * authenticated, while the server waits with a session slot held and its
 * timeout running; a program that connects should call it first, then
 * connect (lipsync-client does). Nothing is committed before the sync
 * is: a session that fails later, or is freed unconnected, leaves the
 * database as it was. Returns 0, or the session's error (it has then
 * failed, with nothing to send: see lipsync_session_errmsg()); a second
 * call returns the same. Call after the other setters:
 * lipsync_session_set_full() refuses after it. */
LIPSYNC_API int lipsync_session_prepare(lipsync_session *session);
/* Nonzero once table |index| is known to be synced by its changes. */
LIPSYNC_API int lipsync_session_table_incremental(lipsync_session *session,
                                                  size_t index);

/* ------------------------------------------------------------------ */
/* TLS (spec 2.1, 5.5)                                                  */
/* ------------------------------------------------------------------ */

/* The library does no TLS itself; a program that runs a session over TLS
 * (as lipsync-server and lipsync-client do, with OpenSSL) uses these. */

/* The ALPN protocol identifier of this protocol version (spec LS-TLS-3). */
#define LIPSYNC_TLS_ALPN "lipsync/1"
/* The identity of the external pre-shared key (spec LS-TLS-5). */
#define LIPSYNC_TLS_PSK_IDENTITY "lipsync/1 psk"
#define LIPSYNC_TLS_PSK_LEN 32
/* The label of the TLS exporter value that binds the authentication to
 * the TLS connection, and its length (spec 5.5). */
#define LIPSYNC_TLS_EXPORTER_LABEL "EXPORTER-LipSync-channel-binding"
#define LIPSYNC_TLS_BINDING_LEN 32

/* Derives the TLS 1.3 external pre-shared key from the shared secret:
 * HKDF-SHA256 with the label of spec LS-TLS-5 (never the secret itself).
 * Returns 0 or LIPSYNC_ERR_INVALID_ARGUMENT (an empty secret). */
LIPSYNC_API int lipsync_tls_psk(const void *secret, size_t secret_len,
                                uint8_t psk[LIPSYNC_TLS_PSK_LEN]);

/* Binds the session's authentication to the TLS connection it runs over
 * (feature "tls-exporter", spec 5.5): |binding| is the connection's
 * exporter value for LIPSYNC_TLS_EXPORTER_LABEL with no context,
 * LIPSYNC_TLS_BINDING_LEN bytes. The client then offers the feature and
 * the server accepts it when offered; both MACs cover the value, so a man
 * in the middle who terminates TLS on each side fails authentication.
 * Call before the first recv/send. */
LIPSYNC_API int lipsync_session_set_channel_binding(lipsync_session *session,
                                                    const uint8_t *binding,
                                                    size_t len);
/* Nonzero once the authentication is known to cover the TLS connection
 * (the feature "tls-exporter" is in effect). */
LIPSYNC_API int lipsync_session_channel_bound(lipsync_session *session);

/* ------------------------------------------------------------------ */
/* Socket loop                                                          */
/* ------------------------------------------------------------------ */

/*
 * Runs |session| to completion over the connected stream |fd| (a socket or
 * a pipe; blocking or not, since every send is non-blocking), which it
 * neither closes nor takes ownership of. It only polls |cancel_fd|, never
 * reads it, so one byte written there cancels for good. Fails the session with
 * LIPSYNC_ERR_TIMEOUT when the peer sends nothing for |timeout_ms| (<= 0:
 * no timeout), and with LIPSYNC_ERR_SHUTTING_DOWN when |cancel_fd| (or -1)
 * becomes readable. Returns lipsync_session_result().
 */
LIPSYNC_API int lipsync_session_run_fd(lipsync_session *session, int fd,
                                       int timeout_ms, int cancel_fd);

#ifdef __cplusplus
}
#endif

#endif /* LIPSYNC_H */
