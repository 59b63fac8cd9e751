/*
 * test_util.h: what the unit tests share: the registration function of each
 * test module (called by main.c), and small helpers for SQLite databases,
 * temporary directories, hex and values. Helpers that can fail record a
 * CUnit failure at the caller's file and line.
 */
#ifndef LIPSYNC_TEST_UTIL_H
#define LIPSYNC_TEST_UTIL_H

#include "lipsync.h"

#include <CUnit/CUnit.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Each test module adds its suites to the registry and returns a CUnit
 * error code (CUE_SUCCESS, 0, when all went well). main.c calls them all. */
int register_auth_tests(void);
int register_canon_tests(void);
int register_frame_tests(void);
int register_incremental_tests(void);
int register_session_tests(void);
int register_store_sqlite_tests(void);
int register_store_pg_tests(void);
int register_vectors_tests(void);
int register_versions_tests(void);

/* One test of a suite; an array of them ends with {NULL, NULL}. */
typedef struct tu_test {
  const char *name;
  void (*fn)(void);
} tu_test;

/* Adds the suite |name| with |tests|. Returns a CUnit error code. */
int tu_add_suite(const char *name, const tu_test *tests);
/* The same, with |init| (NULL: none) run before the suite's tests, also
 * when one test of it runs alone. */
int tu_add_suite_init(const char *name, int (*init)(void),
                      const tu_test *tests);

/* ---- SQLite ---------------------------------------------------------- */

/* Opens (creating) the database at |path|, ":memory:" for a private
 * in-memory one. NULL, with a failure recorded, if that fails. */
#define TU_DB_OPEN(path) tu_db_open_at((path), __FILE__, __LINE__)
sqlite3 *tu_db_open_at(const char *path, const char *file, int line);

/* Runs |sql| (any number of statements), recording a failure on error. */
#define TU_EXEC(db, sql) tu_exec_at((db), (sql), __FILE__, __LINE__)
bool tu_exec_at(sqlite3 *db, const char *sql, const char *file, int line);

/* The first column of the first row of |sql| as an integer; |dflt| if there
 * is no row. A failure is recorded if |sql| fails. */
#define TU_QUERY_INT(db, sql, dflt)                                            \
  tu_query_int_at((db), (sql), (dflt), __FILE__, __LINE__)
int64_t tu_query_int_at(sqlite3 *db, const char *sql, int64_t dflt,
                        const char *file, int line);

/* The first column of the first row of |sql| as text, malloc'd (caller
 * frees); NULL if there is no row or it is NULL. */
#define TU_QUERY_TEXT(db, sql) tu_query_text_at((db), (sql), __FILE__, __LINE__)
char *tu_query_text_at(sqlite3 *db, const char *sql, const char *file,
                       int line);

/* Every schema object of |db| and every row of each of its tables but
 * |skip| (NULL: none) and SQLite's own, as text (malloc'd, caller frees):
 * two dumps are equal when the database holds the same. NULL, with a
 * failure recorded, on error. */
#define TU_DB_DUMP(db, skip) tu_db_dump_at((db), (skip), __FILE__, __LINE__)
char *tu_db_dump_at(sqlite3 *db, const char *skip, const char *file, int line);

/* ---- Files ----------------------------------------------------------- */

/* Creates a new private directory under $TMPDIR (or /tmp) and writes its
 * path into |out|. Returns false, with a failure recorded, on error. */
bool tu_tmpdir(char *out, size_t outlen);
/* Writes |dir|/|name| into |out|. */
void tu_path(char *out, size_t outlen, const char *dir, const char *name);
/* Copies the file |from| to |to|, overwriting it in place (as cp does).
 * Returns false, with a failure recorded, on error. */
#define TU_COPY_FILE(from, to) tu_copy_file_at((from), (to), __FILE__, __LINE__)
bool tu_copy_file_at(const char *from, const char *to, const char *file,
                     int line);
/* Removes |dir| and the files directly inside it. */
void tu_rmdir(const char *dir);

/* ---- Bytes and values ------------------------------------------------ */

/* Writes |len| bytes as lowercase hex plus NUL into |out| (2*len+1). */
void tu_hex(const void *data, size_t len, char *out);
/* Parses hex (either case, no separators) into |out|. Returns the number
 * of bytes, or (size_t)-1 if |hex| is malformed or longer than |cap|. */
size_t tu_unhex(const char *hex, uint8_t *out, size_t cap);

/* Parses the canonical text form of a UUID, recording a failure if it is
 * not one. */
#define TU_UUID(text, out) tu_uuid_at((text), (out), __FILE__, __LINE__)
void tu_uuid_at(const char *text, uint8_t out[LIPSYNC_UUID_LEN],
                const char *file, int line);

/* Values pointing at the caller's bytes. */
lipsync_value tu_null(void);
lipsync_value tu_int(int64_t i);
lipsync_value tu_real(double d);
lipsync_value tu_text(const char *s); /* NUL-terminated */
lipsync_value tu_textn(const void *p, size_t len);
lipsync_value tu_blob(const void *p, size_t len);

/* True if |a| and |b| are the same value: same type, REALs bit for bit
 * (so -0.0 differs from 0.0), bytes compared by length and content. */
bool tu_value_eq(const lipsync_value *a, const lipsync_value *b);
/* Describes |v| for failure messages ("REAL -0x1p+0", "TEXT(3) 616263"). */
void tu_value_str(const lipsync_value *v, char *out, size_t outlen);

#endif
