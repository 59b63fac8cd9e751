/*
 * fuzz_sqlite_types.c: the canonical type and the affinity of a SQLite
 * declared type (canon_type_from_declared, canon_affinity_from_declared in
 * ref/src/canon.c; spec 6.2.1, LS-TYPE-5) on arbitrary strings.
 *
 * Input: the declared type (up to its first NUL).
 *
 * Checks: the canonical type is one of the thirteen names of spec 15.4
 * and the affinity one of its five affinity names; both answer the same
 * for the same text in another buffer; both equal a model written from
 * the rules of LS-TYPE-5. When SQLite accepts the text as the type of a
 * column (texts of letters, digits, blanks, parentheses and commas only,
 * so that nothing but a column definition can run), the affinity of
 * the type SQLite reports for the column is the affinity SQLite gives it:
 * what it stores for '1.5', 1 and '1', and a CAST to tell INTEGER from
 * NUMERIC.
 */
#include "canon.h"
#include "fuzz_util.h"

#include <stdlib.h>
#include <string.h>

#define MAX_SQL_TYPE 120

static const char *const CANONICAL[] = {
    "integer", "real",    "text", "blob",      "numeric",
    "boolean", "decimal", "date", "timestamp", "timestamptz",
    "json",    "jsonb",   "uuid"};
#define NAFFINITIES 5 /* the first five */

static bool in_list(const char *name, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(name, CANONICAL[i]) == 0)
      return true;
  return false;
}

/* ------------------------------------------------------------------ */
/* the rules of LS-TYPE-5                                               */
/* ------------------------------------------------------------------ */

static bool ascii_space(char c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D);
}

/* The declared type prepared as LS-TYPE-5 says: leading blanks removed,
 * a-z upper-cased. */
static char *prepare(const char *declared) {
  while (ascii_space(*declared))
    declared++;
  char *p = strdup(declared);
  FUZZ_CHECK(p != NULL);
  for (char *c = p; *c; c++)
    if (*c >= 'a' && *c <= 'z')
      *c = (char)(*c - 'a' + 'A');
  return p;
}

static bool first_word(const char *prepared, const char *word) {
  size_t n = strcspn(prepared, " \t\n\v\f\r(");
  return n == strlen(word) && memcmp(prepared, word, n) == 0;
}

static const char *model_affinity(const char *declared) {
  char *p = prepare(declared);
  const char *name = "numeric";
  if (strstr(p, "INT"))
    name = "integer";
  else if (strstr(p, "CHAR") || strstr(p, "CLOB") || strstr(p, "TEXT"))
    name = "text";
  else if (strstr(p, "BLOB") || !*p)
    name = "blob";
  else if (strstr(p, "REAL") || strstr(p, "FLOA") || strstr(p, "DOUB"))
    name = "real";
  free(p);
  return name;
}

static const char *model_type(const char *declared) {
  char *p = prepare(declared);
  const char *name = NULL;
  if (first_word(p, "TIMESTAMPTZ") ||
      (first_word(p, "TIMESTAMP") && strstr(p, "WITH TIME ZONE")))
    name = "timestamptz";
  else if (first_word(p, "BOOLEAN") || first_word(p, "BOOL"))
    name = "boolean";
  else if (first_word(p, "DATE"))
    name = "date";
  else if (first_word(p, "DATETIME") || first_word(p, "TIMESTAMP"))
    name = "timestamp";
  else if (first_word(p, "JSON"))
    name = "json";
  else if (first_word(p, "JSONB"))
    name = "jsonb";
  else if (first_word(p, "UUID"))
    name = "uuid";
  else if (first_word(p, "DECIMAL") || first_word(p, "NUMERIC"))
    name = "decimal";
  free(p);
  return name ? name : model_affinity(declared);
}

static void check_mapping(const char *declared) {
  const char *type = canon_type_from_declared(declared);
  const char *affinity = canon_affinity_from_declared(declared);
  FUZZ_CHECKF(type && in_list(type, sizeof CANONICAL / sizeof *CANONICAL),
              "canonical type '%s'", type ? type : "(null)");
  FUZZ_CHECKF(affinity && in_list(affinity, NAFFINITIES), "affinity '%s'",
              affinity ? affinity : "(null)");

  char *copy = strdup(declared);
  FUZZ_CHECK(copy != NULL);
  FUZZ_CHECK(strcmp(canon_type_from_declared(copy), type) == 0);
  FUZZ_CHECK(strcmp(canon_affinity_from_declared(copy), affinity) == 0);
  free(copy);

  FUZZ_CHECKF(strcmp(type, model_type(declared)) == 0,
              "'%s' maps to %s, LS-TYPE-5 says %s", declared, type,
              model_type(declared));
  FUZZ_CHECKF(strcmp(affinity, model_affinity(declared)) == 0,
              "'%s' has affinity %s, LS-TYPE-5 says %s", declared, affinity,
              model_affinity(declared));
}

/* ------------------------------------------------------------------ */
/* SQLite's own affinity                                                */
/* ------------------------------------------------------------------ */

static sqlite3 *db;

/* Texts that can only be (part of) a column definition: no quotes, no
 * comments (which could hide the closing parenthesis and make the table
 * STRICT or WITHOUT ROWID). */
static bool harmless(const char *s) {
  size_t n = strlen(s);
  if (n > MAX_SQL_TYPE)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == ' ' || c == '\t' ||
          c == '\n' || c == '(' || c == ')' || c == ','))
      return false;
  }
  return true;
}

/* Prepares one whole statement, or returns NULL. */
static sqlite3_stmt *prepare_one(const char *sql) {
  sqlite3_stmt *st = NULL;
  const char *tail = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) != SQLITE_OK || !st)
    return NULL;
  while (tail && ascii_space(*tail))
    tail++;
  if (tail && *tail) {
    sqlite3_finalize(st);
    return NULL;
  }
  return st;
}

static bool run(const char *sql) {
  sqlite3_stmt *st = prepare_one(sql);
  if (!st)
    return false;
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE;
}

/* The affinity SQLite gives column x of t, by what it stores; "integer"
 * or "numeric" only if a CAST to |decl| tells them apart, else
 * "integer|numeric". NULL if the column cannot be tried. */
static const char *sqlite_affinity(const char *decl) {
  static const char *const classes[][2] = {
      {"text text text", "text"},
      {"text integer text", "blob"},
      {"real real real", "real"},
      {"real integer integer", "integer|numeric"},
  };
  char seen[64] = "";
  int rows = 0;
  sqlite3_stmt *st;
  if (!run("INSERT INTO t(x) VALUES ('1.5'), (1), ('1')") ||
      !(st = prepare_one("SELECT typeof(x) FROM t ORDER BY rowid")))
    return NULL;
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *type = (const char *)sqlite3_column_text(st, 0);
    if (strlen(seen) + strlen(type) + 2 < sizeof seen)
      strcat(strcat(seen, *seen ? " " : ""), type);
    rows++;
  }
  sqlite3_finalize(st);
  if (rows != 3)
    return NULL; /* a constraint replaced or ignored a row */
  const char *found = NULL;
  for (size_t i = 0; i < sizeof classes / sizeof *classes; i++)
    if (strcmp(seen, classes[i][0]) == 0)
      found = classes[i][1];
  FUZZ_CHECKF(found != NULL, "SQLite stored '%s' as %s", decl, seen);
  if (strcmp(found, "integer|numeric") != 0 || !*decl)
    return found;
  char *sql = sqlite3_mprintf("SELECT typeof(CAST('1.5' AS %s))", decl);
  FUZZ_CHECK(sql != NULL);
  st = prepare_one(sql);
  sqlite3_free(sql);
  if (st && sqlite3_step(st) == SQLITE_ROW) {
    const char *cast = (const char *)sqlite3_column_text(st, 0);
    found = strcmp(cast, "integer") == 0 ? "integer" : "numeric";
  }
  sqlite3_finalize(st);
  return found;
}

static void check_sqlite(const char *declared) {
  if (!db) {
    fuzz_sqlite_init();
    db = fuzz_db_open();
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 4096);
    sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, 4096);
  }
  char *create = sqlite3_mprintf("CREATE TABLE t(x %s)", declared);
  FUZZ_CHECK(create != NULL);
  bool made = run(create);
  sqlite3_free(create);
  if (!made)
    return;
  sqlite3_stmt *st =
      prepare_one("SELECT type FROM pragma_table_info('t') WHERE name = 'x'"
                  " AND NOT (SELECT strict FROM pragma_table_list('t'))");
  FUZZ_CHECK(st != NULL);
  if (sqlite3_step(st) == SQLITE_ROW) { /* a STRICT table keeps any value */
    char *decl = strdup((const char *)sqlite3_column_text(st, 0));
    FUZZ_CHECK(decl != NULL);
    check_mapping(decl);
    const char *theirs = sqlite_affinity(decl);
    const char *ours = canon_affinity_from_declared(decl);
    FUZZ_CHECKF(
        !theirs || strcmp(theirs, ours) == 0 ||
            (strcmp(theirs, "integer|numeric") == 0 &&
             (strcmp(ours, "integer") == 0 || strcmp(ours, "numeric") == 0)),
        "declared type '%s': SQLite's affinity is %s, ours %s", decl, theirs,
        ours);
    free(decl);
  }
  sqlite3_finalize(st);
  FUZZ_CHECK(run("DROP TABLE t"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *declared = malloc(size + 1);
  FUZZ_CHECK(declared != NULL);
  memcpy(declared, data, size);
  declared[size] = '\0';
  check_mapping(declared);
  if (harmless(declared))
    check_sqlite(declared);
  free(declared);
  return 0;
}
