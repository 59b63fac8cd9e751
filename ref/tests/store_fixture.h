/*
 * store_fixture.h: one fixture over any storage backend, so that the
 * backends' tests are written once, as picotls runs one test suite per
 * crypto backend.
 *
 * A fixture (sfx) is a fresh database and a store over it. A backend
 * (sfx_backend) knows how to make one and look inside it: store_sqlite_test.c
 * and store_pg_test.c each define one, with the tests only that backend
 * has. store_common_test.c holds the tests every backend must pass
 * (store_common_tests), which each backend registers once, as the suite
 * "store/<backend>/shared"; a suite's init function (sfx_use) tells the
 * tests which backend they run on.
 *
 * SQL given to the fixture may hold placeholders, which the backend fills:
 * {S} the schema of the fixture's tables, {real} a column type of doubles,
 * {blob} one of bytes, and {uuid} the type prepare_table gives the
 * _lipsync_uuid column. Unqualified names are the fixture's tables on every
 * connection of the fixture.
 *
 * Helpers that can fail record a CUnit failure at the caller's line.
 */
#ifndef LIPSYNC_STORE_FIXTURE_H
#define LIPSYNC_STORE_FIXTURE_H

#include "store.h"
#include "test_util.h"

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct sfx sfx;

/* A storage backend as the tests see it. */
typedef struct sfx_backend {
  const char *name;       /* "sqlite", "pg": in suite names */
  const char *store_name; /* the methods->name of its stores */
  /* What {real}, {blob} and {uuid} stand for. */
  const char *real_type, *blob_type, *uuid_type;
  /* How many rows the volume test writes and reads. */
  int many_rows;
  /* SQL that starts, and SQL that ends, a transaction whose writes escape
   * change capture (as if the store applied them). */
  const char *uncaptured_begin, *uncaptured_end;
  /* SQL that makes table counts(updates, inserts) and triggers on table t
   * that count the UPDATEs and INSERTs of its rows. */
  const char *count_writes_sql;

  /* Creates a fresh, empty database, and fills in the fixture's
   * connection; false, with a failure recorded at |file|:|line|, if it
   * cannot. */
  bool (*open)(sfx *fx, const char *file, int line);
  /* Makes fx->store over the fixture's connection. */
  bool (*wrap)(sfx *fx, const char *file, int line);
  /* Frees the store, closes every connection, drops the database. */
  void (*close)(sfx *fx);
  /* Writes into |out| the name the store knows the fixture's |table| by. */
  void (*table_name)(const sfx *fx, const char *table, char *out,
                     size_t outlen);
  /* True if |name|, as list_tables gives it, is a table of the fixture. */
  bool (*owns)(const sfx *fx, const char *name);
  /* Runs |sql| (expanded) on the store's connection, or on the
   * application's (|app|: a connection of its own, opened on first use).
   * NULL if it succeeded, else the error message (malloc'd). With |value|,
   * also sets *value to the first column of the first row as text
   * (malloc'd), or NULL if there is none or it is NULL. */
  char *(*run)(sfx *fx, bool app, const char *sql, char **value);
  /* The number of indexes of |table|. */
  long long (*index_count)(sfx *fx, const char *table);
  /* True if |table| has a unique index called |index|. */
  bool (*unique_index)(sfx *fx, const char *table, const char *index);
  /* The declared type of |column| of |table| (malloc'd), NULL if none. */
  char *(*column_type)(sfx *fx, const char *table, const char *column);
  /* How many rows of the registry of synced tables (_lipsync_tables,
   * _lipsync.tables) are about |table| and meet |cond|. */
  long long (*registry)(sfx *fx, const char *table, const char *cond);
  /* True if the store's connection is in a transaction (the caller's). */
  bool (*in_transaction)(sfx *fx);
  /* Opens another store on the fixture's database the way an application
   * does, by path or connection string (lipsync_store_*_open). */
  int (*open_store)(sfx *fx, lipsync_store **out, char *err, size_t errlen);
} sfx_backend;

struct sfx {
  const sfx_backend *be;
  lipsync_store *store;
  char qschema[200]; /* what {S} stands for */
  /* SQLite: the database file in a directory of its own, the store's
   * connection and the application's. */
  char dir[256], path[512];
  sqlite3 *db, *app_db;
  /* PostgreSQL: the schema of the fixture's tables, and the connections. */
  char schema[64];
  PGconn *conn, *app_conn;
  /* Names handed out by sfx_name. */
  char names[4][512];
  unsigned next_name;
};

/* The backend the fixtures of the running suite use. A suite that uses
 * fixtures sets it in its init function. */
void sfx_use(const sfx_backend *be);
const sfx_backend *sfx_current(void);
/* The tests of store_common_test.c, for every backend. */
extern const tu_test store_common_tests[];

/* Opens a fixture on the current backend and runs |setup| (NULL: none)
 * before the store is made. False, with a failure recorded, on error;
 * sfx_close must follow either way. */
#define SFX_OPEN(fx, setup) sfx_open_at((fx), (setup), __FILE__, __LINE__)
bool sfx_open_at(sfx *fx, const char *setup, const char *file, int line);
void sfx_close(sfx *fx);

/* The name the store knows |table| by, valid until four more calls. */
const char *sfx_name(sfx *fx, const char *table);
/* The same, written into |out|. */
const char *tname(const sfx *fx, const char *table, char *out, size_t outlen);
/* True if the fixture's backend is |name| ("sqlite", "pg"). */
bool sfx_is(const sfx *fx, const char *name);
/* |sqlite| on the SQLite backend, |pg| on PostgreSQL's: for what each
 * words its own way. */
const char *sfx_pick(const sfx *fx, const char *sqlite, const char *pg);

/* |sql| with the placeholders filled (malloc'd). */
char *sfx_expand(const sfx *fx, const char *sql);

/* Runs |sql| on the store's connection (FX_*) or the application's
 * (APP_*), recording a failure if it fails. */
#define FX_EXEC(fx, sql) sfx_exec_at((fx), false, (sql), __FILE__, __LINE__)
#define APP_EXEC(fx, sql) sfx_exec_at((fx), true, (sql), __FILE__, __LINE__)
bool sfx_exec_at(sfx *fx, bool app, const char *sql, const char *file,
                 int line);
/* The first column of the first row of |sql|: as an integer (|dflt| if
 * none), or as text (malloc'd; NULL if none). */
#define FX_INT(fx, sql, dflt)                                                  \
  sfx_int_at((fx), false, (sql), (dflt), __FILE__, __LINE__)
#define APP_INT(fx, sql, dflt)                                                 \
  sfx_int_at((fx), true, (sql), (dflt), __FILE__, __LINE__)
long long sfx_int_at(sfx *fx, bool app, const char *sql, long long dflt,
                     const char *file, int line);
#define FX_TEXT(fx, sql) sfx_text_at((fx), false, (sql), __FILE__, __LINE__)
char *sfx_text_at(sfx *fx, bool app, const char *sql, const char *file,
                  int line);
/* Runs |sql| on the application's connection with change capture off. */
#define UNCAPTURED(fx, sql) sfx_uncaptured_at((fx), (sql), __FILE__, __LINE__)
bool sfx_uncaptured_at(sfx *fx, const char *sql, const char *file, int line);
/* Runs |sql|, expected to fail: its error message (malloc'd), or NULL,
 * with a failure recorded, if it succeeds. */
#define EXEC_FAILS(fx, app, sql)                                               \
  sfx_exec_fails_at((fx), (app), (sql), __FILE__, __LINE__)
char *sfx_exec_fails_at(sfx *fx, bool app, const char *sql, const char *file,
                        int line);

/* ---- Sessions ----------------------------------------------------- */

/* Begins (a write transaction), opens the fixture's |table| and prepares
 * it. NULL (failure recorded) if any step fails. */
lipsync_table *begin_prepared(sfx *fx, const char *table);
/* The same on |store| (another store on the fixture's database), with a
 * read transaction, as a session begins. */
lipsync_table *begin_on(lipsync_store *store, sfx *fx, const char *table);
/* Opens and prepares another |table| in the transaction |store| has open. */
lipsync_table *also_prepared(lipsync_store *store, sfx *fx, const char *table);
/* Begins, opens, prepares and commits |table|: capture installed. */
bool prepare_commit(sfx *fx, const char *table);

/* ---- Rows and items ----------------------------------------------- */

bool contains(const char *hay, const char *needle);
/* A UUID whose every byte is |b|, so rows are easy to order. */
void uuid_fill(uint8_t uuid[LIPSYNC_UUID_LEN], uint8_t b);
/* A version of clock |clock| whose site bytes are all |site_byte|. */
lipsync_version version_of(uint64_t clock, uint8_t site_byte);
/* Inserts a row with |uuid| and |n| |values| (version zero). */
int insert_row(lipsync_store *store, lipsync_table *t, const uint8_t *uuid,
               const lipsync_value *values, size_t n);
/* Applies a row (a tombstone if |deleted|) through insert or, with
 * |update|, update; prints the store's message if that fails. */
int apply_row(lipsync_store *store, lipsync_table *t, const uint8_t *uuid,
              const lipsync_value *values, size_t n, lipsync_version v,
              int deleted, bool update);
/* A row to apply, with the digests the core hands in: of its item, and of
 * the item |old| it replaces (NULL: none). */
lipsync_row applied(const uint8_t *uuid, const lipsync_value *values, size_t n,
                    lipsync_version v, int deleted, const lipsync_item *old);
/* The number of rows a scan of [lower, upper) returns. */
size_t count_rows(lipsync_store *store, lipsync_table *t, const uint8_t *lower,
                  const uint8_t *upper);
/* Records a failure unless |got| is |want|, naming both. */
#define CHECK_VALUE(got, want, what)                                           \
  check_value_at((got), (want), (what), __FILE__, __LINE__)
void check_value_at(const lipsync_value *got, const lipsync_value *want,
                    const char *what, const char *file, int line);
/* The item of |uuid| in |t|, through lookup_items: 1, 0 if none. */
int item_of(lipsync_store *store, lipsync_table *t, const uint8_t *uuid,
            lipsync_item *out);
/* The UUID of the row of the fixture's table t where a = |a|. */
bool uuid_of(sfx *fx, int a, uint8_t out[LIPSYNC_UUID_LEN]);
/* The sum and count of the item digests of every item of |t|, read whole
 * through scan_items. */
int sum_items(lipsync_store *store, lipsync_table *t, lipsync_summary *out);
/* Records a failure unless the kept summary of |table| is the sum of its
 * items, in a session of its own. */
#define CHECK_SUMMARY(fx, table)                                               \
  check_summary_at((fx), (table), __FILE__, __LINE__)
void check_summary_at(sfx *fx, const char *table, const char *file, int line);
/* The UUIDs of the items changed since |since|, in the order read
 * (checked ascending), into |out| (up to |cap|); the count, or -1. */
int changes_since(lipsync_store *store, lipsync_table *t,
                  const lipsync_position *since,
                  uint8_t (*out)[LIPSYNC_UUID_LEN], int cap);
/* Whether |uuid| is among the |n| UUIDs at |set|. */
bool has_uuid(uint8_t (*set)[LIPSYNC_UUID_LEN], int n, const uint8_t *uuid);

/* ---- Time ----------------------------------------------------------- */

double now_s(void);
void sleep_ms(long ms);

#endif
