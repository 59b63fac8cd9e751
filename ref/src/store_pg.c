/*
 * store_pg.c: the PostgreSQL storage backend, one lipsync_store over one
 * libpq connection.
 *
 * A sync runs inside one REPEATABLE READ transaction (spec LS-STORE-4)
 * whose settings (time zone UTC, ISO dates, UTF-8, the lock timeout) are
 * SET LOCAL, so a caller's connection gets its own back at the end.
 * Everything the sync reads comes from the snapshot its first statement
 * takes, and it locks no table while it reads: other syncs, readers and
 * writers of its tables go on meanwhile. Its writes lock the rows they
 * write; a row that another transaction changed after the snapshot cannot
 * be written (PostgreSQL reports a serialization failure), and the sync
 * fails with TRY_AGAIN, changing nothing. Two things lock more: adding
 * _lipsync_uuid and installing capture (ALTER TABLE, CREATE TRIGGER, as
 * PostgreSQL does), and a bulk load into a table that was empty, items
 * included, when prepared (see pg_store_insert).
 *
 * Tables are named `schema.table` (split at the first '.'; no dot means
 * schema public), exactly, and every identifier is quoted. Reads go
 * through server-side BINARY cursors fetched in batches sized to about
 * 8 MiB, so memory stays bounded whatever the table; values whose
 * canonical form is PostgreSQL's text output (numeric, dates, json) are
 * selected as ::text. Rows are read with their live item (a JOIN with the
 * item table), in UUID order. Inserts of one table stream through one
 * COPY FROM STDIN in text format, ended before any other statement; every
 * value is checked against its column's canonical form (pg_types.c)
 * before it enters the stream, and jsonb values are checked in batches
 * once the COPY ends, since only the server knows jsonb's normalized
 * form.
 *
 * Every statement waits for its result in short polls, so interrupt()
 * from another thread cancels a lock wait at once (PQcancel).
 *
 * Change capture lives beside: its objects, the clock and the end of a
 * sync in store_pg_capture.c, items and update() in store_pg_items.c,
 * positions, summaries, checkpoints and maintenance in
 * store_pg_changes.c. The sync transaction sets lipsync.applying = 'on',
 * which the capture triggers check, so the rows it writes get no new
 * version.
 */
#include "buf.h"
#include "canon.h"
#include "errbuf.h"
#include "fault.h"
#include "pg_types.h"
#include "store_pg_int.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_SCHEMA "public"
/* A cursor's first batch is small, for tables of large rows; later ones
 * hold about FETCH_TARGET_BYTES. */
#define FETCH_FIRST_ROWS 100
#define FETCH_MAX_ROWS 10000
#define FETCH_TARGET_BYTES (8u << 20)
/* COPY data is handed to libpq in chunks of this size. */
#define COPY_CHUNK (256u << 10)
/* jsonb values awaiting the server's check; beyond either bound the COPY
 * ends early to check them. */
#define JSONB_BATCH_BYTES (4u << 20)
#define JSONB_BATCH_VALUES 10000
/* Items and deletes wait for the next statement, up to these bounds. */
#define ITEMS_BATCH_BYTES (8u << 20)
#define DELETE_BATCH 1000
/* Waiting for a result: poll interval, and how often an interrupted store
 * repeats its cancel request (one that reaches the server between two
 * statements is lost). */
#define POLL_MS 100
#define RECANCEL_POLLS 10
/* Binary array header: ndim, flags, element type, length, lower bound. */
#define ARRAY_HEADER 20

/* The transaction of a sync (REPEATABLE READ) or of maintenance (READ
 * COMMITTED), with the lock timeout in milliseconds. No statement here
 * takes the snapshot: the first that reads does. */
static const char begin_fmt[] =
    "BEGIN ISOLATION LEVEL %s;"
    " SET LOCAL lock_timeout = '%dms';"
    " SET LOCAL idle_in_transaction_session_timeout = 0;"
    " SET LOCAL TIME ZONE 'UTC';"
    " SET LOCAL DateStyle = 'ISO, YMD';"
    " SET LOCAL IntervalStyle = 'postgres';"
    " SET LOCAL extra_float_digits = 3;"
    " SET LOCAL client_encoding = 'UTF8';"
    /* The capture triggers leave alone the rows the sync writes. */
    " SET LOCAL lipsync.applying = 'on';"
    /* Deferrable constraints (a foreign key between two synced tables, a
     * UNIQUE two rows swap) hold for the state the sync leaves, whatever
     * order its rows come in: pg_store_flush checks them. */
    " SET CONSTRAINTS ALL DEFERRED";

/* ------------------------------------------------------------------ */
/* Errors                                                               */
/* ------------------------------------------------------------------ */

int pgs_fail(pg_store *s, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  errbuf_vformat(s->errmsg, sizeof s->errmsg, fmt, ap);
  va_end(ap);
  return code;
}

int pgs_fail_nomem(pg_store *s) {
  return pgs_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
}

/* Copies libpq's message for one line of ours: no newlines at the end,
 * spaces for those inside. */
static void one_line(const char *msg, char *out, size_t outlen) {
  size_t n = 0;
  if (!msg || !*msg)
    msg = "no message";
  /* libpq's messages span lines, some indented with tabs. */
  for (; *msg && n + 1 < outlen; msg++) {
    char c = *msg == '\n' || *msg == '\t' || *msg == '\r' ? ' ' : *msg;
    if (c != ' ' || (n > 0 && out[n - 1] != ' '))
      out[n++] = c;
  }
  while (n > 0 && out[n - 1] == ' ')
    n--;
  out[n] = '\0';
}

bool pgs_is_interrupted(pg_store *s) {
  return atomic_load(&s->interrupted) != 0;
}

int pgs_fail_interrupted(pg_store *s) {
  return pgs_fail(s, LIPSYNC_ERR_SHUTTING_DOWN, "interrupted: stopping");
}

/* "table t: what: " or "what: ". */
static void context_prefix(char *out, size_t outlen, const char *table,
                           const char *what) {
  if (table)
    snprintf(out, outlen, "table %s: %s", table, what);
  else
    snprintf(out, outlen, "%s", what);
}

const char *pgs_sqlstate(const PGresult *r) {
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  return state ? state : "";
}

/* What another writer's interference means for the sync, appended to
 * PostgreSQL's own message: LIPSYNC_ERR_TRY_AGAIN, or 0 for any other
 * error. */
static int interference(pg_store *s, const PGresult *res, const char *state,
                        char *msg, size_t len) {
  const char *table = res ? PQresultErrorField(res, PG_DIAG_TABLE_NAME) : NULL;
  size_t n = strlen(msg);
  if (strcmp(state, "23505") == 0 && table &&
      strncmp(table, "_lipsync_meta_", 14) == 0) /* a new item's UUID */
    snprintf(msg + n, len - n,
             " (another writer added a row of the same UUID during the"
             " sync; nothing was changed, sync again)");
  else if (strcmp(state, "40001") == 0) /* serialization_failure */
    snprintf(msg + n, len - n,
             " (another writer changed a row of the table after this sync"
             " read it; nothing was changed, sync again)");
  else if (strcmp(state, "40P01") == 0) /* deadlock_detected */
    snprintf(msg + n, len - n,
             " (this sync and another writer waited for each other;"
             " nothing was changed, sync again)");
  else if (strcmp(state, "55P03") == 0) /* lock_not_available */
    snprintf(msg + n, len - n,
             " (waited %d.%d s for a lock another transaction held;"
             " nothing was changed, try again)",
             s->lock_timeout_ms / 1000, s->lock_timeout_ms % 1000 / 100);
  else
    return 0;
  return LIPSYNC_ERR_TRY_AGAIN;
}

/* Fails with PostgreSQL's message for |res| (NULL: the connection's), its
 * primary message and DETAIL. */
int pgs_fail_pg(pg_store *s, const PGresult *res, const char *table,
                const char *what) {
  char prefix[256], msg[768];
  const char *state = pgs_sqlstate(res);
  const char *primary =
      res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  const char *detail =
      res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;

  context_prefix(prefix, sizeof prefix, table, what);
  if (pgs_is_interrupted(s))
    return pgs_fail(s, LIPSYNC_ERR_SHUTTING_DOWN, "%s: interrupted: stopping",
                    prefix);
  if (primary)
    one_line(primary, msg, sizeof msg);
  else if (res && PQresultStatus(res) != PGRES_FATAL_ERROR &&
           PQresultStatus(res) != PGRES_BAD_RESPONSE)
    snprintf(msg, sizeof msg, "unexpected result %s",
             PQresStatus(PQresultStatus(res)));
  else
    one_line(res ? PQresultErrorMessage(res) : PQerrorMessage(s->conn), msg,
             sizeof msg);
  int code = interference(s, res, state, msg, sizeof msg);
  if (!code)
    code =
        strcmp(state, "53200") == 0 ? LIPSYNC_ERR_NOMEM : LIPSYNC_ERR_STORAGE;
  /* "PostgreSQL:" says whose words follow: a peer that reads "terminating
   * connection" must not take it for its own connection. */
  if (detail && *detail) {
    char d[512];
    one_line(detail, d, sizeof d);
    return pgs_fail(s, code, "%s: PostgreSQL: %s: %s", prefix, msg, d);
  }
  return pgs_fail(s, code, "%s: PostgreSQL: %s", prefix, msg);
}

/* ------------------------------------------------------------------ */
/* Statements                                                           */
/* ------------------------------------------------------------------ */

/* The next result of the statement in flight, NULL after the last. Waits
 * in short polls: once the store is interrupted it cancels the statement
 * (again every second, in case the first request came too early). */
static PGresult *next_result(pg_store *s) {
  unsigned polls = 0;
  bool cancelled = false;
  while (PQisBusy(s->conn)) {
    if (pgs_is_interrupted(s) && !s->no_cancel && s->cancel &&
        (!cancelled || polls % RECANCEL_POLLS == 0)) {
      char buf[256];
      PQcancel(s->cancel, buf, sizeof buf);
      cancelled = true;
    }
    struct pollfd pfd = {.fd = PQsocket(s->conn), .events = POLLIN};
    if (pfd.fd < 0)
      break;
    if (poll(&pfd, 1, POLL_MS) < 0 && errno != EINTR)
      break;
    polls++;
    if (!PQconsumeInput(s->conn))
      break; /* PQgetResult reports the broken connection */
  }
  return PQgetResult(s->conn);
}

static bool failed(const PGresult *r) {
  if (!r)
    return true;
  ExecStatusType st = PQresultStatus(r);
  return st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE ||
         st == PGRES_NONFATAL_ERROR;
}

/* Collects the results of the statements in flight: the first failure, or
 * else the last result; a COPY's result as soon as it comes. */
static PGresult *finish(pg_store *s) {
  PGresult *keep = NULL, *r;
  while ((r = next_result(s)) != NULL) {
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      if (keep && failed(keep)) {
        /* Cannot happen: a failed statement ends the string. */
        PQclear(r);
        return keep;
      }
      PQclear(keep);
      return r;
    }
    if (keep && failed(keep)) {
      PQclear(r);
    } else {
      PQclear(keep);
      keep = r;
    }
  }
  return keep;
}

/* Runs |sql|, one or more statements, in text format. */
PGresult *pgs_run(pg_store *s, const char *sql) {
  if (!PQsendQuery(s->conn, sql))
    return NULL;
  return finish(s);
}

/* Runs the one statement |sql| with |n| binary parameters. */
PGresult *pgs_run_params(pg_store *s, const char *sql, int n, const Oid *types,
                         const char *const *values, const int *lengths,
                         int result_format) {
  int formats[2] = {1, 1};
  if (!PQsendQueryParams(s->conn, sql, n, types, values, lengths,
                         n ? formats : NULL, result_format))
    return NULL;
  return finish(s);
}

/* 0 if |r| has status |want|, else the failure, described. Clears |r|. */
int pgs_expect(pg_store *s, PGresult *r, ExecStatusType want, const char *table,
               const char *what) {
  int rc = 0;
  if (!r || PQresultStatus(r) != want)
    rc = pgs_fail_pg(s, r, table, what);
  PQclear(r);
  return rc;
}

/* Runs |sql| (statements returning no rows) on behalf of |table|. */
int pgs_exec_sql(pg_store *s, const char *sql, const char *table,
                 const char *what) {
  return pgs_expect(s, pgs_run(s, sql), PGRES_COMMAND_OK, table, what);
}

int pgs_exec_buf(pg_store *s, bytebuf *b, int rc, const char *table,
                 const char *what) {
  PGresult *r;
  if (rc || !pgs_cstr(b)) {
    bytebuf_free(b);
    return pgs_fail_nomem(s);
  }
  r = pgs_run(s, (const char *)b->data);
  bytebuf_free(b);
  /* The last statement may return rows (a SELECT of a function). */
  if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
    PQclear(r);
    return 0;
  }
  return pgs_expect(s, r, PGRES_COMMAND_OK, table, what);
}

int pgs_query(pg_store *s, pg_table *t, bytebuf *b, int rc, const char *what,
              bool binary, PGresult **out) {
  PGresult *r;
  *out = NULL;
  if (rc || !pgs_cstr(b)) {
    bytebuf_free(b);
    return pgs_fail_nomem(s);
  }
  r = binary ? pgs_run_params(s, (const char *)b->data, 0, NULL, NULL, NULL, 1)
             : pgs_run(s, (const char *)b->data);
  bytebuf_free(b);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, t ? t->name : NULL, what);
  *out = r;
  return 0;
}

int pgs_query_row(pg_store *s, pg_table *t, bytebuf *b, int rc,
                  const char *what, bool binary, PGresult **out) {
  PGresult *r;
  if ((rc = pgs_query(s, t, b, rc, what, binary, out)) != 0)
    return rc;
  r = *out;
  *out = NULL;
  if (PQntuples(r) != 1) {
    PQclear(r);
    return pgs_fail(s, LIPSYNC_ERR_STORAGE, "%s%s%s%s: unexpected result",
                    t ? "table " : "", t ? t->name : "", t ? ": " : "", what);
  }
  *out = r;
  return 0;
}

int pgs_query_bool(pg_store *s, pg_table *t, bytebuf *sql, int rc,
                   const char *what, bool *out) {
  PGresult *r;
  if ((rc = pgs_query_row(s, t, sql, rc, what, false, &r)) != 0)
    return rc;
  *out = PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  return 0;
}

/* ------------------------------------------------------------------ */
/* SQL text                                                             */
/* ------------------------------------------------------------------ */

int pgs_put(bytebuf *b, const char *text) {
  return bytebuf_append(b, text, strlen(text));
}

int pgs_putf(bytebuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return LIPSYNC_ERR_INTERNAL;
  /* Room for vsnprintf's NUL, which is not kept. */
  int rc = bytebuf_reserve(b, (size_t)n + 1);
  if (rc)
    return rc;
  va_start(ap, fmt);
  vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

/* The bytes of |b| as a string (NUL-terminated, not counted), or NULL if
 * no room was left for the NUL. */
const char *pgs_cstr(bytebuf *b) {
  if (bytebuf_append(b, "", 1) != 0)
    return NULL;
  b->len--;
  return (const char *)b->data;
}

/* A malloc'd copy of the string in |b|, which is freed; NULL if memory ran
 * out. */
char *pgs_take_cstr(bytebuf *b, int rc) {
  char *out = NULL;
  if (rc == 0 && pgs_cstr(b))
    out = strdup((const char *)b->data);
  bytebuf_free(b);
  return out;
}

/* Appends |name| quoted as an identifier. */
int pgs_put_ident(pg_store *s, bytebuf *b, const char *name) {
  char *q = PQescapeIdentifier(s->conn, name, strlen(name));
  if (!q)
    return LIPSYNC_ERR_NOMEM;
  int rc = pgs_put(b, q);
  PQfreemem(q);
  return rc;
}

int pgs_put_hex(bytebuf *b, const uint8_t *data, size_t len) {
  static const char hex[] = "0123456789abcdef";
  int rc = bytebuf_reserve(b, 2 * len);
  if (rc)
    return rc;
  for (size_t i = 0; i < len; i++) {
    b->data[b->len++] = (uint8_t)hex[data[i] >> 4];
    b->data[b->len++] = (uint8_t)hex[data[i] & 15];
  }
  return 0;
}

/* decode() rather than a bytea literal: the same text whatever
 * standard_conforming_strings says. */
int pgs_put_bytea(bytebuf *b, const uint8_t *data, size_t len) {
  int rc;
  if (!data)
    return pgs_put(b, "NULL");
  if ((rc = pgs_put(b, "pg_catalog.decode('")) != 0 ||
      (rc = pgs_put_hex(b, data, len)) != 0)
    return rc;
  return pgs_put(b, "', 'hex')");
}

int pgs_put_uuid_array(bytebuf *b, const uint8_t *uuids, size_t n) {
  char text[37];
  int rc = pgs_put(b, "'{");
  for (size_t i = 0; i < n && !rc; i++) {
    lipsync_uuid_format(uuids + i * LIPSYNC_UUID_LEN, text);
    rc = pgs_putf(b, "%s%s", i ? "," : "", text);
  }
  return rc ? rc : pgs_put(b, "}'::pg_catalog.uuid[]");
}

/* Notes that |c|'s server cursor is to be closed, with the next
 * statement. */
static void queue_close(pg_store *s, pg_cursor *c) {
  if (c->server_closed)
    return;
  c->server_closed = true;
  if (pgs_putf(&s->closes, "CLOSE \"%s\"; ", c->name) != 0)
    s->closes.len = 0; /* no memory: the transaction's end closes it */
}

/* Sends the CLOSE of cursors closed since the last statement. */
static int flush_closes(pg_store *s) {
  if (!s->closes.len)
    return 0;
  if (!pgs_cstr(&s->closes))
    return pgs_fail_nomem(s);
  int rc =
      pgs_exec_sql(s, (const char *)s->closes.data, NULL, "closing cursors");
  s->closes.len = 0;
  return rc;
}

/* ------------------------------------------------------------------ */
/* COPY                                                                 */
/* ------------------------------------------------------------------ */

static void copy_reset(pg_store *s) {
  s->copy_table = NULL;
  s->copy_stage = false;
  s->copy_buf.len = 0;
  s->copy_uuids.len = 0;
  s->copy_rows = 0;
  s->jsonb_array.len = 0;
  s->njsonb = 0;
}

int pgs_writing(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  PGresult *r;
  if (s->writing == t || !t->reg_lit)
    return 0;
  int rc = pgs_putf(&sql,
                    "SELECT pg_catalog.set_config('lipsync.writing', %s, true)",
                    t->reg_lit);
  if ((rc = pgs_query(s, t, &sql, rc, "write", false, &r)) != 0)
    return rc;
  PQclear(r);
  s->writing = t;
  return 0;
}

/* Starts a COPY into |t|, or into its staging table when |stage|, once
 * the one in progress, if another, has ended. */
static int copy_begin(pg_store *s, pg_table *t, bool stage) {
  int rc;
  if (s->copy_table == t && s->copy_stage == stage)
    return 0;
  if ((rc = pgs_copy_end(s)) != 0 ||
      (stage && (rc = pgs_stage_ensure(s, t)) != 0) ||
      (!stage && (rc = pgs_writing(s, t)) != 0))
    return rc;
  PGresult *r = pgs_run(s, stage ? t->stage_copy_sql : t->copy_sql);
  if (!r || PQresultStatus(r) != PGRES_COPY_IN)
    return pgs_expect(s, r, PGRES_COPY_IN, t->name,
                      stage ? "update" : "insert");
  PQclear(r);
  copy_reset(s);
  s->copy_table = t;
  s->copy_stage = stage;
  return 0;
}

/* Hands the buffered rows to libpq. Returns false if the COPY failed: the
 * server has reported an error, which pgs_copy_end() collects. */
static bool copy_send(pg_store *s) {
  if (s->copy_buf.len == 0)
    return true;
  int rc = PQputCopyData(s->conn, (const char *)s->copy_buf.data,
                         (int)s->copy_buf.len);
  s->copy_buf.len = 0;
  return rc == 1;
}

/* The row of line |line| of the COPY, formatted, if the COPY had one. */
static bool copy_row(pg_store *s, unsigned long line, char out[37]) {
  if (line == 0 || line > s->copy_rows)
    return false;
  lipsync_uuid_format(s->copy_uuids.data + (line - 1) * LIPSYNC_UUID_LEN, out);
  return true;
}

/* Fails with the error that ended the COPY into |t|: a value the server
 * refused (SQLSTATE class 22, data exception, or 54001, JSON nested beyond
 * its stack) is an invalid value, anything else (a constraint) a storage
 * error. The CONTEXT ("COPY t, line 7") names the row. */
static int fail_copy(pg_store *s, pg_table *t, const PGresult *r) {
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  const char *context = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
  const char *line = context ? strstr(context, ", line ") : NULL;
  char what[64] = "insert";
  char uuid[37];
  int rc;

  if (line && copy_row(s, strtoul(line + 7, NULL, 10), uuid))
    snprintf(what, sizeof what, "row %s", uuid);
  rc = pgs_fail_pg(s, r, t->name, what);
  if (rc == LIPSYNC_ERR_STORAGE && state &&
      (strncmp(state, "22", 2) == 0 || strcmp(state, "54001") == 0))
    rc = LIPSYNC_ERR_INVALID_VALUE;
  return rc;
}

/* Asks the server whether every jsonb value of the COPY reads back as it
 * was sent: one statement for the whole batch. */
static int check_jsonb(pg_store *s, pg_table *t) {
  static const char sql[] =
      "SELECT u.i, u.v::pg_catalog.jsonb::pg_catalog.text"
      " FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY"
      " AS u(v, i)"
      " WHERE u.v::pg_catalog.jsonb::pg_catalog.text COLLATE \"C\""
      " IS DISTINCT FROM u.v COLLATE \"C\" LIMIT 1";
  const Oid types[1] = {PGTYPE_OID_TEXT_ARRAY};
  uint8_t *h = s->jsonb_array.data;
  uint32_t header[5] = {1, 0, PGTYPE_OID_TEXT, (uint32_t)s->njsonb, 1};
  PGresult *r;
  int rc;

  for (size_t i = 0; i < 5; i++) {
    h[4 * i] = (uint8_t)(header[i] >> 24);
    h[4 * i + 1] = (uint8_t)(header[i] >> 16);
    h[4 * i + 2] = (uint8_t)(header[i] >> 8);
    h[4 * i + 3] = (uint8_t)header[i];
  }
  const char *values[1] = {(const char *)h};
  int lengths[1] = {(int)s->jsonb_array.len};
  r = pgs_run_params(s, sql, 1, types, values, lengths, 0);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, t->name, "checking jsonb values");
  rc = 0;
  if (PQntuples(r) > 0) {
    unsigned long index = strtoul(PQgetvalue(r, 0, 0), NULL, 10);
    char uuid[37], stored[64];
    if (index < 1 || index > s->njsonb) {
      PQclear(r);
      return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                      "table %s: checking jsonb values: unexpected result",
                      t->name);
    }
    const jsonb_item *item = &s->jsonb[index - 1];
    lipsync_value v = {.type = LIPSYNC_TEXT};
    const char *text = PQgetvalue(r, 0, 1);
    v.u.bytes.data = text;
    v.u.bytes.len = strlen(text);
    errbuf_describe_value(&v, stored, sizeof stored);
    lipsync_uuid_format(item->uuid, uuid);
    rc = pgs_fail(s, LIPSYNC_ERR_INVALID_VALUE,
                  "table %s: row %s: column %s (jsonb) cannot store its value "
                  "exactly: it is not in jsonb's normalized form (jsonb would "
                  "store %s)",
                  t->name, uuid, t->columns[item->column].name, stored);
  }
  PQclear(r);
  return rc;
}

/* Ends the COPY in progress, if any, before another statement: sends the
 * rest, then takes the server's verdict on the whole stream, then checks
 * its jsonb values, then applies staged rows. */
static int copy_end_stream(pg_store *s) {
  pg_table *t = s->copy_table;
  bool stage = s->copy_stage;
  PGresult *r;
  int rc = 0;
  if (!t)
    return 0;
  /* A stream that could not be sent whole must not be committed. */
  PQputCopyEnd(s->conn, copy_send(s) ? NULL : "incomplete COPY data");
  r = finish(s);
  if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
    rc = fail_copy(s, t, r);
  PQclear(r);
  if (rc == 0 && s->njsonb)
    rc = check_jsonb(s, t);
  copy_reset(s);
  if (rc == 0 && stage)
    rc = pgs_stage_merge(s, t);
  return rc;
}

int pgs_copy_end(pg_store *s) {
  int rc = copy_end_stream(s);
  for (pg_table *t = s->tables; t && !rc; t = t->next)
    rc = pgs_items_flush(s, t);
  return rc;
}

int pgs_copy_lines(pg_store *s, pg_table *t, const char *copy_sql,
                   const bytebuf *lines, const char *what) {
  PGresult *r = pgs_run(s, copy_sql);
  if (!r || PQresultStatus(r) != PGRES_COPY_IN)
    return pgs_expect(s, r, PGRES_COPY_IN, t->name, what);
  PQclear(r);
  int sent = 1;
  for (size_t off = 0; off < lines->len && sent == 1; off += COPY_CHUNK) {
    size_t n = lines->len - off < COPY_CHUNK ? lines->len - off : COPY_CHUNK;
    sent = PQputCopyData(s->conn, (const char *)lines->data + off, (int)n);
  }
  PQputCopyEnd(s->conn, sent == 1 ? NULL : "incomplete COPY data");
  return pgs_expect(s, finish(s), PGRES_COMMAND_OK, t->name, what);
}

/* Ends the COPY in progress with an error, for rollback. */
static void copy_abort(pg_store *s) {
  if (!s->copy_table)
    return;
  s->copy_buf.len = 0;
  PQputCopyEnd(s->conn, "rolled back");
  PQclear(finish(s));
  copy_reset(s);
}

/* ------------------------------------------------------------------ */
/* Tables                                                               */
/* ------------------------------------------------------------------ */

static void cursor_free(pg_cursor *c) {
  PQclear(c->res);
  free(c->scratch);
  free(c);
}

static void table_free(pg_table *t) {
  if (!t)
    return;
  while (t->cursors) {
    pg_cursor *c = t->cursors;
    t->cursors = c->next;
    cursor_free(c);
  }
  if (t->columns)
    for (size_t i = 0; i < t->base.ncolumns; i++)
      free((char *)t->columns[i].name);
  if (t->type_names)
    for (size_t i = 0; i < t->base.ncolumns; i++)
      free(t->type_names[i]);
  free(t->columns);
  free(t->types);
  free(t->type_names);
  free(t->uuid_slot);
  free(t->uuid_bad_type);
  free(t->columns_sql);
  free(t->plain_sql);
  free(t->select_sql);
  free(t->copy_sql);
  free(t->fetch_values);
  free(t->fetch_scratch);
  free(t->name);
  free(t->relname);
  free(t->qname);
  free(t->oid);
  free(t->schema);
  free(t->reg_lit);
  free(t->meta_qname);
  free(t->cap_qname);
  PQfreemem(t->cap_lit);
  free(t->items_sql);
  free(t->stage_qname);
  free(t->stage_copy_sql);
  bytebuf_free(&t->items_new);
  bytebuf_free(&t->items_set);
  bytebuf_free(&t->deletes);
  free(t);
}

/* Ends the life of every table handle and cursor of the transaction (its
 * end closes the cursors on the server). */
static void free_tables(pg_store *s) {
  while (s->tables) {
    pg_table *t = s->tables;
    s->tables = t->next;
    table_free(t);
  }
  s->closes.len = 0;
  s->writing = NULL;
  PQclear(s->fetched);
  s->fetched = NULL;
  /* A new transaction checks again; the staging tables went with the
   * last. */
  s->capture_ready = false;
  s->item_stage_ready = false;
  s->digest_stage_ready = false;
  s->site_known = false;
  s->global_checked = false;
}

/* Splits |name| at its first '.' into a schema and a table; no '.' means
 * schema public. */
static int split_name(pg_store *s, pg_table *t, char **schema) {
  const char *dot = strchr(t->name, '.');
  if (dot) {
    *schema = strndup(t->name, (size_t)(dot - t->name));
    t->relname = strdup(dot + 1);
  } else {
    *schema = strdup(DEFAULT_SCHEMA);
    t->relname = strdup(t->name);
  }
  return *schema && t->relname ? 0 : pgs_fail_nomem(s);
}

static bool is_system_schema(const char *schema) {
  return strncmp(schema, "pg_", 3) == 0 ||
         strcmp(schema, "information_schema") == 0;
}

static const char *relkind_name(char kind) {
  switch (kind) {
  case 'v':
    return "a view";
  case 'm':
    return "a materialized view";
  case 'f':
    return "a foreign table";
  case 'S':
    return "a sequence";
  default:
    return "not a table";
  }
}

/* Finds the table: its OID and kind. */
static int find_table(pg_store *s, pg_table *t, const char *schema) {
  static const char sql[] =
      "SELECT c.oid, c.relkind FROM pg_catalog.pg_class c"
      " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
      " WHERE n.nspname = $1 AND c.relname = $2";
  const char *values[2] = {schema, t->relname};
  int lengths[2] = {(int)strlen(schema), (int)strlen(t->relname)};
  PGresult *r;
  int rc = 0;

  if (is_system_schema(schema))
    return pgs_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE,
                    "no table %s (PostgreSQL's system tables cannot be synced)",
                    t->name);
  /* PostgreSQL would cut a longer name short, and find another table. */
  if (!*t->relname || !*schema || strlen(t->relname) > MAX_IDENTIFIER ||
      strlen(schema) > MAX_IDENTIFIER)
    return pgs_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE, "no table %s", t->name);
  /* Text parameters sent as binary: the same bytes. */
  r = pgs_run_params(s, sql, 2, NULL, values, lengths, 0);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, t->name, "looking up the table");
  if (PQntuples(r) == 0) {
    rc = pgs_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE, "no table %s", t->name);
  } else {
    char kind = PQgetvalue(r, 0, 1)[0];
    if (kind != 'r' && kind != 'p')
      rc = pgs_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE,
                    "no table %s (%s cannot be synced)", t->name,
                    relkind_name(kind));
    t->partitioned = kind == 'p';
    if (!rc && !(t->oid = strdup(PQgetvalue(r, 0, 0))))
      rc = pgs_fail_nomem(s);
  }
  PQclear(r);
  return rc;
}

/* Takes one column of the catalog's answer (row |i| of |r|) into
 * |cols|/|types|/|names| at |*n|, or notes the UUID column. */
static int take_column(pg_store *s, pg_table *t, PGresult *r, int i,
                       lipsync_column *cols, pgtype *types, char **names,
                       size_t *n) {
  const char *name = PQgetvalue(r, i, 0);
  uint32_t oid = (uint32_t)strtoul(PQgetvalue(r, i, 1), NULL, 10);
  int32_t typmod = (int32_t)strtol(PQgetvalue(r, i, 2), NULL, 10);
  bool generated = PQgetvalue(r, i, 3)[0] == 't';
  bool citext = PQgetvalue(r, i, 4)[0] == 't';
  const char *type_name = PQgetvalue(r, i, 5);
  pgtype type;

  if (strcmp(name, LIPSYNC_UUID_COLUMN) == 0) {
    if (oid == PGTYPE_OID_UUID)
      t->has_uuid = true;
    else if (!(t->uuid_bad_type = strdup(type_name)))
      return pgs_fail_nomem(s);
    return 0;
  }
  /* Generated columns are not canonical columns (LS-TABLE-3): the server
   * computes them from the others. */
  if (generated)
    return 0;
  if (!pgtype_from_oid(oid, typmod, citext, &type))
    return pgs_fail(s, LIPSYNC_ERR_SCHEMA_MISMATCH,
                    "table %s: column %s has type %s, which has no canonical "
                    "type and cannot be synced",
                    t->name, name, type_name);
  cols[*n].name = strdup(name);
  cols[*n].type = pgtype_canonical(type.kind);
  names[*n] = strdup(type_name);
  types[*n] = type;
  (*n)++;
  if (!cols[*n - 1].name || !names[*n - 1])
    return pgs_fail_nomem(s);
  return 0;
}

int pgs_temp_table(pg_store *s, pg_table *t, bool *ready, const char *def,
                   const char *what) {
  bytebuf sql = {0};
  int rc;
  if (*ready)
    return 0;
  rc = pgs_putf(&sql, "CREATE TEMPORARY TABLE IF NOT EXISTS %s ON COMMIT DROP",
                def);
  rc = pgs_exec_buf(s, &sql, rc, t->name, what);
  *ready = rc == 0;
  return rc;
}

/* Reads the table's columns into canonical order. No lock: the catalog
 * as the snapshot holds it. */
static int read_columns(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  PGresult *r;
  lipsync_column *cols = NULL;
  pgtype *types = NULL;
  char **names = NULL;
  size_t n = 0, total;
  int rc;

  rc = pgs_putf(&sql,
                "SELECT a.attname, a.atttypid, a.atttypmod,"
                " a.attgenerated <> '', ty.typname = 'citext' AND"
                " ty.typtype = 'b', pg_catalog.format_type(a.atttypid,"
                " a.atttypmod) FROM pg_catalog.pg_attribute a"
                " JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid"
                " WHERE a.attrelid = %s AND a.attnum > 0"
                " AND NOT a.attisdropped ORDER BY a.attnum",
                t->oid);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  r = pgs_run(s, (const char *)sql.data);
  bytebuf_free(&sql);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, t->name, "reading its columns");

  total = (size_t)PQntuples(r);
  cols = calloc(total + 1, sizeof *cols);
  types = calloc(total + 1, sizeof *types);
  names = calloc(total + 1, sizeof *names);
  if (!cols || !types || !names)
    rc = pgs_fail_nomem(s);
  for (size_t i = 0; i < total && !rc; i++)
    rc = take_column(s, t, r, (int)i, cols, types, names, &n);
  PQclear(r);

  /* Sort, then put types and type names in the same order: each sorted
   * column is found by its name's address. */
  t->base.ncolumns = n;
  t->columns = calloc(n + 1, sizeof *t->columns);
  t->types = calloc(n + 1, sizeof *t->types);
  t->type_names = calloc(n + 1, sizeof *t->type_names);
  if (!rc && (!t->columns || !t->types || !t->type_names))
    rc = pgs_fail_nomem(s);
  if (!rc) {
    memcpy(t->columns, cols, n * sizeof *cols);
    canon_sort_columns(t->columns, n);
    for (size_t i = 0; i < n; i++) {
      size_t j = 0;
      while (cols[j].name != t->columns[i].name)
        j++;
      t->types[i] = types[j];
      t->type_names[i] = names[j];
      names[j] = NULL;
    }
  } else {
    for (size_t i = 0; i < n; i++)
      free((char *)cols[i].name);
    t->base.ncolumns = 0;
  }
  if (names)
    for (size_t i = 0; i < n; i++)
      free(names[i]);
  free(cols);
  free(types);
  free(names);
  return rc;
}

/*
 * SELECT t."c1", t."c2"::pg_catalog.text, ..., t."_lipsync_uuid" FROM
 * "s"."t" AS t and COPY "s"."t" ("c1", ..., "_lipsync_uuid") FROM STDIN.
 * Columns are qualified: the join with the items (build_select) must not
 * take one of theirs.
 */
static int build_statements(pg_store *s, pg_table *t) {
  bytebuf cols = {0}, copy = {0}, plain = {0};
  int rc = pgs_putf(&copy, "COPY %s (", t->qname);
  t->nuuid = 0;
  for (size_t i = 0; i < t->base.ncolumns && !rc; i++) {
    t->uuid_slot[i] = t->types[i].kind == PGTYPE_UUID ? t->nuuid++ : NO_SLOT;
    rc = pgs_put(&cols, "t.");
    if (!rc)
      rc = pgs_put_ident(s, &cols, t->columns[i].name);
    if (!rc && pgtype_select_as_text(t->types[i].kind))
      rc = pgs_put(&cols, "::pg_catalog.text");
    if (!rc)
      rc = pgs_put(&cols, ", ");
    if (!rc)
      rc = pgs_put_ident(s, &copy, t->columns[i].name);
    if (!rc)
      rc = pgs_put(&copy, ", ");
  }
  if (!rc)
    rc = pgs_put(&cols, "t.\"" LIPSYNC_UUID_COLUMN "\"");
  if (!rc)
    rc = pgs_putf(&copy, "\"%s\") FROM STDIN", LIPSYNC_UUID_COLUMN);
  t->copy_sql = pgs_take_cstr(&copy, rc);
  if (!(t->columns_sql = pgs_take_cstr(&cols, rc)))
    return pgs_fail_nomem(s);
  rc = pgs_putf(&plain, "SELECT %s FROM %s AS t", t->columns_sql, t->qname);
  t->plain_sql = pgs_take_cstr(&plain, rc);
  return t->plain_sql && t->copy_sql ? 0 : pgs_fail_nomem(s);
}

/* The rows with their live items: a row without one (written with
 * capture off, until a recount repairs it) is not read. */
static int build_select(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  int rc;
  if (t->select_sql)
    return 0;
  rc = pgs_putf(&sql,
                "SELECT %s, m.clock, m.site, m.base_clock, m.base_site FROM"
                " %s AS t JOIN %s AS m ON m.uuid = t.\"" LIPSYNC_UUID_COLUMN
                "\" WHERE NOT m.deleted",
                t->columns_sql, t->qname, t->meta_qname);
  t->select_sql = pgs_take_cstr(&sql, rc);
  return t->select_sql ? 0 : pgs_fail_nomem(s);
}

/* The table's name in the registry, "schema.table", as a literal. */
static int registry_literal(pg_store *s, pg_table *t) {
  size_t n = strlen(t->schema) + strlen(t->relname) + 2;
  char *name = malloc(n), *lit;
  if (!name)
    return pgs_fail_nomem(s);
  snprintf(name, n, "%s.%s", t->schema, t->relname);
  lit = PQescapeLiteral(s->conn, name, strlen(name));
  free(name);
  if (lit && !(t->reg_lit = strdup(lit))) {
    PQfreemem(lit);
    lit = NULL;
  }
  PQfreemem(lit);
  return t->reg_lit ? 0 : pgs_fail_nomem(s);
}

static int pg_store_open_table(lipsync_store *store, const char *name,
                               lipsync_table **out) {
  pg_store *s = (pg_store *)store;
  pg_table *t;
  char *schema = NULL;
  bytebuf q = {0};
  int rc;

  *out = NULL;
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if (!name)
    return pgs_fail(s, LIPSYNC_ERR_INVALID_ARGUMENT, "no table name");
  for (t = s->tables; t; t = t->next) {
    if (strcmp(t->name, name) == 0) {
      *out = &t->base;
      return 0;
    }
  }
  if (!s->in_txn)
    return pgs_fail(s, LIPSYNC_ERR_INTERNAL,
                    "open_table %s: no transaction is open", name);
  if ((rc = pgs_copy_end(s)) != 0)
    return rc;

  t = calloc(1, sizeof *t);
  if (!t)
    return pgs_fail_nomem(s);
  t->store = s;
  t->batch_rows = FETCH_FIRST_ROWS;
  if (!(t->name = strdup(name))) {
    rc = pgs_fail_nomem(s);
    goto fail;
  }
  if ((rc = split_name(s, t, &schema)) != 0)
    goto fail;
  /* The tables of change capture, and every other reserved name (spec
   * LS-OPEN-4), are no tables of a sync, whatever their case. */
  if (strncasecmp(schema, "_lipsync", 8) == 0 ||
      strncasecmp(t->relname, "_lipsync", 8) == 0) {
    rc = pgs_fail(s, LIPSYNC_ERR_UNKNOWN_TABLE,
                  "no table %s (LipSync's own tables cannot be synced)", name);
    goto fail;
  }
  rc = pgs_put_ident(s, &q, schema);
  if (!rc)
    rc = pgs_put(&q, ".");
  if (!rc)
    rc = pgs_put_ident(s, &q, t->relname);
  if (!(t->qname = pgs_take_cstr(&q, rc))) {
    rc = pgs_fail_nomem(s);
    goto fail;
  }
  if ((rc = find_table(s, t, schema)) != 0)
    goto fail;
  if ((rc = read_columns(s, t)) != 0)
    goto fail;
  size_t n = t->base.ncolumns;
  t->uuid_slot = calloc(n + 1, sizeof *t->uuid_slot);
  t->fetch_values = calloc(n + 1, sizeof *t->fetch_values);
  if (!t->uuid_slot || !t->fetch_values) {
    rc = pgs_fail_nomem(s);
    goto fail;
  }
  if ((rc = build_statements(s, t)) != 0)
    goto fail;
  if (!(t->fetch_scratch = malloc(37 * (t->nuuid + 1)))) {
    rc = pgs_fail_nomem(s);
    goto fail;
  }
  t->schema = schema;
  schema = NULL;
  if ((rc = registry_literal(s, t)) != 0)
    goto fail;
  if ((rc = pgs_capture_last_sync(s, t)) != 0)
    goto fail;
  t->base.name = t->name;
  t->base.columns = t->columns;
  t->next = s->tables;
  s->tables = t;
  *out = &t->base;
  return 0;

fail:
  free(schema);
  table_free(t);
  return rc;
}

/* What ensure_uuid_index() needs to know, in one round trip: whether an
 * index on _lipsync_uuid alone exists (unique, unless the table is
 * partitioned), whether the name we would give one is free, whether the
 * table is empty, and whether it has deferrable constraint triggers (a
 * foreign key, a UNIQUE): PostgreSQL builds no index on a table whose
 * rows wait for a deferred check. */
typedef struct index_facts {
  bool found, name_free, empty, deferrable;
} index_facts;

static int find_uuid_index(pg_store *s, pg_table *t, const char *index_name,
                           index_facts *facts) {
  bytebuf sql = {0};
  PGresult *r;
  int rc = pgs_putf(
      &sql,
      "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i"
      " JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid"
      " AND a.attnum = i.indkey[0] WHERE i.indrelid = %s AND a.attname = '%s'"
      " AND i.indnkeyatts = 1 AND (i.indisunique OR %s) AND i.indisvalid"
      " AND i.indpred IS NULL AND i.indexprs IS NULL),"
      " NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
      " WHERE c.relname = $1 AND c.relnamespace = (SELECT"
      " relnamespace FROM pg_catalog.pg_class WHERE oid = %s)),"
      " NOT EXISTS (SELECT 1 FROM %s),"
      " EXISTS (SELECT 1 FROM pg_catalog.pg_trigger"
      " WHERE tgrelid = %s AND tgdeferrable)",
      t->oid, LIPSYNC_UUID_COLUMN, t->partitioned ? "true" : "false", t->oid,
      t->qname, t->oid);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  const char *values[1] = {index_name};
  int lengths[1] = {(int)strlen(index_name)};
  r = pgs_run_params(s, (const char *)sql.data, 1, NULL, values, lengths, 0);
  bytebuf_free(&sql);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, t->name,
                      "looking for the " LIPSYNC_UUID_COLUMN " index");
  if (PQntuples(r) != 1 || PQnfields(r) != 4) {
    PQclear(r);
    return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                    "table %s: looking for the " LIPSYNC_UUID_COLUMN
                    " index: unexpected result",
                    t->name);
  }
  facts->found = PQgetvalue(r, 0, 0)[0] == 't';
  facts->name_free = PQgetvalue(r, 0, 1)[0] == 't';
  facts->empty = PQgetvalue(r, 0, 2)[0] == 't';
  facts->deferrable = PQgetvalue(r, 0, 3)[0] == 't';
  PQclear(r);
  return 0;
}

/*
 * Creates the index on _lipsync_uuid if the table has none: unique, but
 * on a partitioned table, where PostgreSQL allows unique indexes only
 * over the partition key, a plain one (the session refuses duplicates as
 * it reads the table). Named <table>__lipsync_uuid when that name fits
 * and is free, else as PostgreSQL chooses.
 *
 * An empty table, when |may_defer|, gets it later (pgs_build_pending):
 * rows bulk-loaded into it arrive in random UUID order, and one index
 * build afterwards costs a third less than keeping the index up to date
 * through the COPY. Not one with deferrable constraints, whose checks
 * wait for pg_store_flush.
 */
static int ensure_uuid_index(pg_store *s, pg_table *t, bool may_defer) {
  char index_name[MAX_IDENTIFIER + 16];
  index_facts facts = {false, false, false, false};
  bytebuf sql = {0};
  PGresult *r;
  int rc;

  snprintf(index_name, sizeof index_name, "%s_%s", t->relname,
           LIPSYNC_UUID_COLUMN);
  bool fits = strlen(index_name) <= MAX_IDENTIFIER;
  if ((rc = find_uuid_index(s, t, fits ? index_name : "", &facts)) != 0)
    return rc;
  if (facts.found)
    return 0;
  if (may_defer && facts.empty && !t->partitioned && !facts.deferrable) {
    t->index_pending = true;
    return 0;
  }
  rc = pgs_put(&sql, t->partitioned ? "CREATE INDEX " : "CREATE UNIQUE INDEX ");
  if (!rc && facts.name_free && fits)
    rc = pgs_put_ident(s, &sql, index_name);
  if (!rc)
    rc = pgs_put(&sql, " ON ");
  if (!rc)
    rc = pgs_put(&sql, t->qname);
  if (!rc)
    rc = pgs_put(&sql, " (\"" LIPSYNC_UUID_COLUMN "\")");
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  r = pgs_run(s, (const char *)sql.data);
  bytebuf_free(&sql);
  if (r && PQresultStatus(r) == PGRES_COMMAND_OK) {
    PQclear(r);
    return 0;
  }
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  rc = pgs_fail_pg(s, r, t->name,
                   state && strcmp(state, "23505") == 0
                       ? "duplicate " LIPSYNC_UUID_COLUMN " values"
                       : "creating the " LIPSYNC_UUID_COLUMN " index");
  PQclear(r);
  return rc;
}

/* Builds the index deferred by ensure_uuid_index(): before a lookup by
 * UUID needs it, or at commit. PostgreSQL refuses to build it while a
 * cursor on the table is open: then lookups go without it until the
 * cursor is done (a full scan read halfway, which the session does not
 * leave to look rows up). */
int pgs_build_pending(pg_store *s, pg_table *t) {
  int rc;
  if (!t->index_pending && !t->meta_key_pending)
    return 0;
  for (pg_cursor *c = t->cursors; c; c = c->next)
    if (!c->server_closed)
      return 0;
  if ((rc = copy_end_stream(s)) != 0 || (rc = flush_closes(s)) != 0)
    return rc;
  /* The table's index first: it names a duplicate UUID best. */
  if (t->index_pending) {
    t->index_pending = false;
    if ((rc = ensure_uuid_index(s, t, false)) != 0)
      return rc;
  }
  if ((rc = pgs_copy_end(s)) != 0)
    return rc;
  return pgs_build_meta_key(s, t);
}

/* Whether the snapshot's catalog shows _lipsync_uuid (after this
 * transaction's own ALTER TABLE, which it sees). */
static int uuid_column_visible(pg_store *s, pg_table *t, bool *visible) {
  bytebuf sql = {0};
  int rc = pgs_putf(&sql,
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute"
                    " WHERE attrelid = %s AND attname = '" LIPSYNC_UUID_COLUMN
                    "' AND NOT attisdropped)",
                    t->oid);
  return pgs_query_bool(s, t, &sql, rc, "adding " LIPSYNC_UUID_COLUMN, visible);
}

/* Gives the table its _lipsync_uuid column, or a UUID to every row that
 * has none. */
static int give_uuids(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  bool visible = false;
  int rc;
  /* A new column gets a fresh UUID in every row as the table is rewritten
   * once, cheaper than adding it empty and updating every row. The
   * default stays: rows inserted later get one too. */
  if (!t->has_uuid) {
    /* IF NOT EXISTS: another sync may have added it since this one's
     * snapshot, and committed while this one waited for the lock. */
    rc = pgs_putf(&sql,
                  "ALTER TABLE %s ADD COLUMN IF NOT EXISTS"
                  " \"" LIPSYNC_UUID_COLUMN "\" pg_catalog.uuid"
                  " DEFAULT pg_catalog.gen_random_uuid()",
                  t->qname);
    if ((rc = pgs_exec_buf(s, &sql, rc, t->name,
                           "adding " LIPSYNC_UUID_COLUMN)) != 0 ||
        (rc = uuid_column_visible(s, t, &visible)) != 0)
      return rc;
    /* Then the rows it wrote are not in this one's snapshot. */
    if (!visible)
      return pgs_fail(s, LIPSYNC_ERR_TRY_AGAIN,
                      "table %s: another sync added " LIPSYNC_UUID_COLUMN
                      " to the table after this one began; nothing was"
                      " changed, sync again",
                      t->name);
    t->has_uuid = true;
    t->added_uuid = true;
    return 0;
  }
  rc = pgs_putf(&sql,
                "UPDATE %s SET \"" LIPSYNC_UUID_COLUMN
                "\" = pg_catalog.gen_random_uuid() WHERE \"" LIPSYNC_UUID_COLUMN
                "\" IS NULL",
                t->qname);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  PGresult *r = pgs_run(s, (const char *)sql.data);
  bytebuf_free(&sql);
  /* Rows given a UUID now were written with capture off: recount. */
  t->uuids_given = r && PQresultStatus(r) == PGRES_COMMAND_OK &&
                   strcmp(PQcmdTuples(r), "0") != 0;
  return pgs_expect(s, r, PGRES_COMMAND_OK, t->name, "giving rows a UUID");
}

/* Reads the description of |t| again, in the transaction begun since it
 * was opened: the same table with the same columns, or TRY_AGAIN (the
 * session core holds the columns it described). */
static int reread_table(pg_store *s, pg_table *t) {
  pg_table *now = calloc(1, sizeof *now);
  bool same;
  int rc;
  if (!now)
    return pgs_fail_nomem(s);
  now->store = s;
  now->name = strdup(t->name);
  now->relname = strdup(t->relname);
  rc = now->name && now->relname ? find_table(s, now, t->schema)
                                 : pgs_fail_nomem(s);
  if (!rc && strcmp(now->oid, t->oid) == 0)
    rc = read_columns(s, now);
  same = !rc && strcmp(now->oid, t->oid) == 0 &&
         now->base.ncolumns == t->base.ncolumns &&
         (now->uuid_bad_type != NULL) == (t->uuid_bad_type != NULL);
  for (size_t i = 0; same && i < t->base.ncolumns; i++)
    same = strcmp(now->columns[i].name, t->columns[i].name) == 0 &&
           strcmp(now->type_names[i], t->type_names[i]) == 0;
  if (!rc && !same)
    rc = pgs_fail(s, LIPSYNC_ERR_TRY_AGAIN,
                  "table %s: its columns changed as this sync began; nothing"
                  " was changed, sync again",
                  t->name);
  if (!rc)
    t->has_uuid = now->has_uuid;
  table_free(now);
  return rc ? rc : pgs_capture_last_sync(s, t);
}

/*
 * A table whose capture is to be installed or brought up to date must not
 * change between the snapshot and the moment its triggers take over: a
 * write committed then would be in no item, or logged by no delta. So the
 * first prepare_table of a transaction that has read nothing yet begins it
 * again, with every open table that needs it locked (ACCESS EXCLUSIVE:
 * installing takes that anyway) before the first statement takes the
 * snapshot. (A table prepared later, in a transaction that has read,
 * gets a recount at its next sync instead: see pgs_capture_prepare.)
 */
/* Rolls back the transaction that has done nothing yet and begins it
 * again, re-reading every open table; with |lock_sql|, that statement
 * first. */
static int begin_again(pg_store *s, const char *lock_sql) {
  int rc = pgs_exec_sql(s, "ROLLBACK", NULL, "beginning again");
  s->in_txn = PQtransactionStatus(s->conn) != PQTRANS_IDLE;
  s->capture_ready = s->site_known = s->global_checked = false;
  for (pg_table *t = s->tables; t; t = t->next)
    t->facts_known = false;
  if (!rc)
    rc = pgs_begin(s, true);
  s->fresh = false;
  if (!rc && lock_sql)
    rc = pgs_exec_sql(s, lock_sql, NULL,
                      "locking the tables to install change capture");
  for (pg_table *t = s->tables; t && !rc; t = t->next)
    rc = reread_table(s, t);
  return rc;
}

/* Whether every table locked to install capture has it by now (another
 * session installed it while this one waited for the lock). */
static int locked_ones_ready(pg_store *s, bool *all) {
  bool ready;
  int rc = 0;
  *all = true;
  for (pg_table *t = s->tables; t && !rc && *all; t = t->next)
    if (t->locked_early && (rc = pgs_capture_ready(s, t, &ready)) == 0)
      *all = ready;
  return rc;
}

static int restart_locked(pg_store *s) {
  bytebuf sql = {0};
  bool ready;
  int rc = 0;
  for (pg_table *t = s->tables; t && !rc; t = t->next) {
    if (t->uuid_bad_type)
      continue;
    if ((rc = pgs_capture_ready(s, t, &ready)) != 0 || ready)
      continue;
    rc = pgs_put(&sql, sql.len ? ", " : "LOCK TABLE ");
    if (!rc)
      rc = pgs_put(&sql, t->qname);
    t->locked_early = true;
  }
  if (rc || !sql.len) {
    bytebuf_free(&sql);
    return rc;
  }
  rc = pgs_put(&sql, " IN ACCESS EXCLUSIVE MODE");
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  rc = begin_again(s, (const char *)sql.data);
  bytebuf_free(&sql);
  /* Sessions of many clients arriving together all wait for the first
   * one's lock: those that find capture installed then go on without it,
   * side by side. */
  if (!rc && (rc = locked_ones_ready(s, &ready)) == 0 && ready) {
    for (pg_table *t = s->tables; t; t = t->next)
      t->locked_early = false;
    rc = begin_again(s, NULL);
  }
  return rc;
}

static int pg_store_prepare_table(lipsync_store *store, lipsync_table *table) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  int rc;

  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if (t->uuid_bad_type)
    return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                    "table %s: column " LIPSYNC_UUID_COLUMN
                    " has type %s; it must be uuid",
                    t->name, t->uuid_bad_type);
  if ((rc = pgs_copy_end(s)) != 0)
    return rc;
  if (s->fresh) {
    s->fresh = false;
    if ((rc = restart_locked(s)) != 0)
      return rc;
  }
  /* The global objects first: a copied database takes its own site id
   * before anything else. */
  if ((rc = pgs_capture_global(s)) != 0 || (rc = give_uuids(s, t)) != 0)
    return rc;
  if (!t->index_pending && (rc = ensure_uuid_index(s, t, true)) != 0)
    return rc;
  if ((rc = pgs_capture_prepare(s, t)) != 0 || (rc = build_select(s, t)) != 0)
    return rc;
  t->prepared = true;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Reading                                                              */
/* ------------------------------------------------------------------ */

int pgs_need_prepared(pg_store *s, pg_table *t, const char *what) {
  if (!t->has_uuid)
    return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                    "table %s: %s: the table has no " LIPSYNC_UUID_COLUMN
                    " column (prepare_table adds it)",
                    t->name, what);
  if (!t->prepared)
    return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                    "table %s: %s: the table is not prepared (prepare_table"
                    " installs its change capture)",
                    t->name, what);
  return 0;
}

/* Fills |row| from tuple |tup| of |r|: the columns in canonical order, then
 * the UUID, then, when |r| has them, its item's clock, site, base_clock and
 * base_site. Values point into |r| and |scratch|. */
int pgs_read_row(pg_table *t, const PGresult *r, int tup, lipsync_value *values,
                 char *scratch, lipsync_row *row) {
  pg_store *s = t->store;
  int n = (int)t->base.ncolumns;
  char uuid[37], why[160];

  memset(row, 0, sizeof *row);
  if (PQgetisnull(r, tup, n) || PQgetlength(r, tup, n) != LIPSYNC_UUID_LEN)
    return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                    "table %s: a row has no " LIPSYNC_UUID_COLUMN, t->name);
  memcpy(row->uuid, PQgetvalue(r, tup, n), LIPSYNC_UUID_LEN);
  for (int i = 0; i < n; i++) {
    lipsync_value *v = &values[i];
    if (PQgetisnull(r, tup, i)) {
      v->type = LIPSYNC_NULL;
      continue;
    }
    size_t slot = t->uuid_slot[i];
    int rc = pgtype_from_binary(
        &t->types[i], PQgetvalue(r, tup, i), (size_t)PQgetlength(r, tup, i),
        slot == NO_SLOT ? NULL : scratch + 37 * slot, v, why, sizeof why);
    if (rc) {
      lipsync_uuid_format(row->uuid, uuid);
      return pgs_fail(s, rc, "table %s: row %s: column %s: %s", t->name, uuid,
                      t->columns[i].name, why);
    }
  }
  row->nvalues = (size_t)n;
  row->values = values;
  if (PQnfields(r) == n + 1 + ROW_ITEM_FIELDS) {
    if (!pgs_read_version(r, tup, n + 1, &row->version) ||
        !pgs_read_version(r, tup, n + 3, &row->base)) {
      lipsync_uuid_format(row->uuid, uuid);
      return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                      "table %s: the item of row %s is malformed", t->name,
                      uuid);
    }
    if (pgs_base_is_version(t)) /* never synced as a client */
      memset(&row->base, 0, sizeof row->base);
  }
  return 0;
}

/* The fields of a tuple a cursor of |kind| reads. */
static int kind_fields(const pg_table *t, cursor_kind kind) {
  int n = (int)t->base.ncolumns + 1;
  switch (kind) {
  case CURSOR_ROWS:
    return n + ROW_ITEM_FIELDS;
  case CURSOR_CONTENTS:
    return n + 1;
  case CURSOR_ITEMS:
    return ITEM_FIELDS;
  default:
    return n;
  }
}

/* Takes the answer to a FETCH of |asked| rows, and sizes the table's next
 * batches from it. */
static int take_batch(pg_cursor *c, PGresult *r, size_t asked) {
  pg_table *t = c->table;
  pg_store *s = t->store;
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, t->name, "scan");
  if (PQnfields(r) != kind_fields(t, c->kind) ||
      (PQnfields(r) && PQfformat(r, 0) != 1)) {
    PQclear(r);
    return pgs_fail(s, LIPSYNC_ERR_STORAGE, "table %s: scan: unexpected result",
                    t->name);
  }
  c->res = r;
  c->row = 0;
  c->nrows = PQntuples(r);
  c->last_batch = (size_t)c->nrows < asked;
  /* Done on the server: its CLOSE goes with the next statement. An open
   * cursor would keep the index build of an empty table waiting. */
  if (c->last_batch)
    queue_close(s, c);
  if (c->nrows > 0 && c->kind != CURSOR_ITEMS) {
    size_t per_row = PQresultMemorySize(r) / (size_t)c->nrows;
    size_t rows = FETCH_TARGET_BYTES / (per_row ? per_row : 1);
    t->batch_rows = rows < 1                ? 1
                    : rows > FETCH_MAX_ROWS ? FETCH_MAX_ROWS
                                            : rows;
  }
  return 0;
}

/* Sends |sql| after the CLOSE of cursors closed since the last statement,
 * which costs them no round trip of their own. */
static PGresult *run_with_closes(pg_store *s, bytebuf *sql) {
  PGresult *r;
  if (s->closes.len) {
    size_t n = s->closes.len;
    if (bytebuf_reserve(&s->closes, sql->len + 1) != 0)
      return NULL;
    memcpy(s->closes.data + n, sql->data, sql->len);
    s->closes.data[n + sql->len] = '\0';
    r = pgs_run(s, (const char *)s->closes.data);
    s->closes.len = 0;
    return r;
  }
  if (!pgs_cstr(sql))
    return NULL;
  return pgs_run(s, (const char *)sql->data);
}

static int fetch_batch(pg_cursor *c) {
  pg_table *t = c->table;
  pg_store *s = t->store;
  bytebuf sql = {0};
  size_t asked = c->kind == CURSOR_ITEMS ? FETCH_MAX_ROWS : t->batch_rows;
  int rc;

  if ((rc = pgs_copy_end(s)) != 0)
    return rc;
  PQclear(c->res);
  c->res = NULL;
  if (pgs_putf(&sql, "FETCH %zu FROM \"%s\"", asked, c->name) != 0) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  PGresult *r = run_with_closes(s, &sql);
  bytebuf_free(&sql);
  return take_batch(c, r, asked);
}

/* Declares a cursor over the table's rows (or items) matching |where|
 * (SQL, may be empty) and fetches its first batch. Rows with their items,
 * and items, are there once the table is prepared; plain rows as soon as
 * it has its UUID column. */
int pgs_open_scan(pg_store *s, pg_table *t, const char *select,
                  const char *where, cursor_kind kind, bool needs_index,
                  lipsync_cursor **out) {
  size_t n = t->base.ncolumns;
  size_t asked = kind == CURSOR_ITEMS ? FETCH_MAX_ROWS : t->batch_rows;
  bytebuf sql = {0};
  pg_cursor *c;
  int rc;

  *out = NULL;
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((!t->has_uuid || kind == CURSOR_ROWS || kind == CURSOR_ITEMS) &&
      (rc = pgs_need_prepared(s, t, "scan")) != 0)
    return rc;
  if (needs_index && (rc = pgs_build_pending(s, t)) != 0)
    return rc;
  if ((rc = pgs_copy_end(s)) != 0)
    return rc;
  c = calloc(1, sizeof *c + n * sizeof c->values[0]);
  if (!c)
    return pgs_fail_nomem(s);
  c->base.table = &t->base;
  c->table = t;
  c->kind = kind;
  snprintf(c->name, sizeof c->name, "lipsync_cursor_%u", ++s->cursor_seq);
  c->scratch = malloc(37 * (t->nuuid + 1));
  rc = c->scratch
           ? pgs_putf(&sql, "DECLARE \"%s\" BINARY NO SCROLL CURSOR FOR ",
                      c->name)
           : LIPSYNC_ERR_NOMEM;
  if (!rc)
    rc = pgs_put(&sql, select);
  if (!rc)
    rc = pgs_put(&sql, where);
  if (!rc)
    rc = pgs_putf(&sql, "; FETCH %zu FROM \"%s\"", asked, c->name);
  if (rc) {
    bytebuf_free(&sql);
    cursor_free(c);
    return pgs_fail_nomem(s);
  }
  PGresult *r = run_with_closes(s, &sql);
  bytebuf_free(&sql);
  if ((rc = take_batch(c, r, asked)) != 0) {
    cursor_free(c);
    return rc;
  }
  c->next = t->cursors;
  t->cursors = c;
  *out = &c->base;
  return 0;
}

int pgs_open_scan_buf(pg_store *s, pg_table *t, const char *select,
                      bytebuf *where, int rc, cursor_kind kind,
                      bool needs_index, lipsync_cursor **out) {
  *out = NULL;
  if (rc || !pgs_cstr(where)) {
    bytebuf_free(where);
    return pgs_fail_nomem(s);
  }
  rc = pgs_open_scan(s, t, select, (const char *)where->data, kind, needs_index,
                     out);
  bytebuf_free(where);
  return rc;
}

void pgs_uuid_bounds(char *out, size_t outlen, const char *column,
                     const uint8_t *lower, const uint8_t *upper) {
  char bound[37];
  size_t len = strlen(out);
  if (lower) {
    lipsync_uuid_format(lower, bound);
    len += (size_t)snprintf(out + len, outlen - len, " AND %s >= '%s'", column,
                            bound);
  }
  if (upper && len < outlen) {
    lipsync_uuid_format(upper, bound);
    snprintf(out + len, outlen - len, " AND %s < '%s'", column, bound);
  }
}

/* Rows in UUID order, with their live items. */
static int pg_store_scan(lipsync_store *store, lipsync_table *table,
                         const uint8_t *lower, const uint8_t *upper,
                         lipsync_cursor **out) {
  char where[256] = "";
  pg_table *t = (pg_table *)table;
  pgs_uuid_bounds(where, sizeof where, "t.\"" LIPSYNC_UUID_COLUMN "\"", lower,
                  upper);
  snprintf(where + strlen(where), sizeof where - strlen(where),
           " ORDER BY t.\"" LIPSYNC_UUID_COLUMN "\"");
  return pgs_open_scan((pg_store *)store, t, t->select_sql, where, CURSOR_ROWS,
                       lower || upper, out);
}

/* One query for a batch of lookups: a round trip per row would dominate a
 * sync over a network. */
static int pg_store_scan_uuids(lipsync_store *store, lipsync_table *table,
                               const uint8_t *uuids, size_t n,
                               lipsync_cursor **out) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  bytebuf where = {0};
  int rc = pgs_put(&where, " AND t.\"" LIPSYNC_UUID_COLUMN "\" = ANY (");
  if (!rc)
    rc = pgs_put_uuid_array(&where, uuids, n);
  if (!rc)
    rc = pgs_put(&where, ")");
  return pgs_open_scan_buf(s, t, t->select_sql, &where, rc, CURSOR_ROWS, true,
                           out);
}

int pgs_cursor_step(pg_cursor *c) {
  pg_table *t = c->table;
  int rc;

  if (c->status)
    return c->status > 0 ? 0 : c->status;
  if (pgs_is_interrupted(t->store))
    return c->status = pgs_fail_interrupted(t->store);
  while (c->row >= c->nrows) {
    if (c->last_batch) {
      c->status = 1;
      return 0;
    }
    if ((rc = fetch_batch(c)) != 0)
      return c->status = rc;
  }
  return 1;
}

static int pg_store_next(lipsync_cursor *cursor, lipsync_row *row) {
  pg_cursor *c = (pg_cursor *)cursor;
  pg_table *t = c->table;
  int rc = pgs_cursor_step(c);
  if (rc != 1)
    return rc;
  rc = pgs_read_row(t, c->res, c->row++, c->values, c->scratch, row);
  if (rc)
    return c->status = rc;
  return 1;
}

static void pg_store_close_cursor(lipsync_cursor *cursor) {
  pg_cursor *c = (pg_cursor *)cursor, **p;
  if (!c)
    return;
  pg_store *s = c->table->store;
  for (p = &c->table->cursors; *p; p = &(*p)->next) {
    if (*p == c) {
      *p = c->next;
      break;
    }
  }
  /* The server's cursor goes with the next statement, or the
   * transaction. */
  queue_close(s, c);
  cursor_free(c);
}

/* Prepares |t|'s lookup by UUID once per transaction: it runs for every
 * row of a short span the session sends, and planning it each time would
 * double its cost. The statement outlives the transaction on the
 * connection, so its end deallocates it (end_statements). */
static int prepare_fetch(pg_store *s, pg_table *t) {
  const Oid types[1] = {PGTYPE_OID_UUID};
  char name[32];
  bytebuf sql = {0};
  int rc;
  snprintf(name, sizeof name, "lipsync_fetch_%u", ++s->statement_seq);
  rc = pgs_put(&sql, t->select_sql);
  if (!rc)
    rc = pgs_put(&sql, " AND t.\"" LIPSYNC_UUID_COLUMN "\" = $1");
  /* Room to note the DEALLOCATE, so that success cannot fail to. */
  if (!rc)
    rc = bytebuf_reserve(&s->deallocs, sizeof name + 16);
  if (rc || !pgs_cstr(&sql)) {
    bytebuf_free(&sql);
    return pgs_fail_nomem(s);
  }
  rc = PQsendPrepare(s->conn, name, (const char *)sql.data, 1, types)
           ? pgs_expect(s, finish(s), PGRES_COMMAND_OK, t->name, "fetch")
           : pgs_fail_pg(s, NULL, t->name, "fetch");
  bytebuf_free(&sql);
  if (rc == 0) {
    pgs_putf(&s->deallocs, "DEALLOCATE \"%s\"; ", name);
    memcpy(t->fetch_stmt, name, sizeof name);
  }
  return rc;
}

static int pg_store_fetch(lipsync_store *store, lipsync_table *table,
                          const uint8_t uuid[LIPSYNC_UUID_LEN],
                          lipsync_row *row) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  const char *values[1] = {(const char *)uuid};
  const int lengths[1] = {LIPSYNC_UUID_LEN};
  const int formats[1] = {1};
  PGresult *r;
  int rc;

  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((rc = pgs_need_prepared(s, t, "fetch")) != 0)
    return rc;
  if ((rc = pgs_build_pending(s, t)) != 0 || (rc = pgs_copy_end(s)) != 0)
    return rc;
  PQclear(s->fetched); /* the previous fetched row lives until here */
  s->fetched = NULL;
  if (!t->fetch_stmt[0] && (rc = prepare_fetch(s, t)) != 0)
    return rc;
  if (!PQsendQueryPrepared(s->conn, t->fetch_stmt, 1, values, lengths, formats,
                           1))
    r = NULL;
  else
    r = finish(s);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, t->name, "fetch");
  if (PQntuples(r) == 0) {
    char text[37];
    PQclear(r);
    lipsync_uuid_format(uuid, text);
    return pgs_fail(s, LIPSYNC_ERR_NOT_FOUND, "table %s: no row %s", t->name,
                    text);
  }
  s->fetched = r;
  return pgs_read_row(t, r, 0, t->fetch_values, t->fetch_scratch, row);
}

/* ------------------------------------------------------------------ */
/* Inserting                                                            */
/* ------------------------------------------------------------------ */

/* Queues the jsonb text of column |column| of the row being added. */
static int queue_jsonb(pg_store *s, const uint8_t *uuid, size_t column,
                       const lipsync_value *v) {
  bytebuf *a = &s->jsonb_array;
  uint8_t len[4];
  uint32_t n = (uint32_t)v->u.bytes.len;
  int rc;
  if (s->njsonb == s->jsonb_cap &&
      (rc = vec_reserve((void **)&s->jsonb, &s->jsonb_cap, s->njsonb + 1,
                        sizeof *s->jsonb)) != 0)
    return rc;
  if (a->len == 0) {
    if ((rc = bytebuf_reserve(a, ARRAY_HEADER)) != 0)
      return rc;
    a->len = ARRAY_HEADER; /* filled in by check_jsonb */
  }
  len[0] = (uint8_t)(n >> 24);
  len[1] = (uint8_t)(n >> 16);
  len[2] = (uint8_t)(n >> 8);
  len[3] = (uint8_t)n;
  if ((rc = bytebuf_append(a, len, 4)) != 0 ||
      (rc = bytebuf_append(a, v->u.bytes.data, v->u.bytes.len)) != 0)
    return rc;
  memcpy(s->jsonb[s->njsonb].uuid, uuid, LIPSYNC_UUID_LEN);
  s->jsonb[s->njsonb].column = column;
  s->njsonb++;
  return 0;
}

/* Appends |row| to the COPY buffer, or leaves the buffer as it was and
 * fails with the first value its column cannot take. */
static int encode_row(pg_store *s, pg_table *t, const lipsync_row *row,
                      const char *key) {
  size_t mark = s->copy_buf.len, jsonb_mark = s->jsonb_array.len;
  size_t jsonb_count = s->njsonb;
  char why[256], value[96];
  int rc = 0;

  for (size_t i = 0; i < t->base.ncolumns && !rc; i++) {
    const lipsync_value *v = &row->values[i];
    if (!pgtype_check(&t->types[i], v, why, sizeof why)) {
      errbuf_describe_value(v, value, sizeof value);
      rc = pgs_fail(s, LIPSYNC_ERR_INVALID_VALUE,
                    "table %s: row %s: column %s (%s) cannot store %s: %s",
                    t->name, key, t->columns[i].name, t->type_names[i], value,
                    why);
      break;
    }
    rc = pgtype_copy_append(&s->copy_buf, &t->types[i], v);
    if (!rc)
      rc = bytebuf_append(&s->copy_buf, "\t", 1);
    if (!rc && t->types[i].kind == PGTYPE_JSONB && v->type != LIPSYNC_NULL)
      rc = queue_jsonb(s, row->uuid, i, v);
    if (rc)
      rc = pgs_fail_nomem(s);
  }
  if (!rc && (bytebuf_append(&s->copy_buf, key, UUID_TEXT_LEN) != 0 ||
              bytebuf_append(&s->copy_buf, "\n", 1) != 0 ||
              bytebuf_append(&s->copy_uuids, row->uuid, LIPSYNC_UUID_LEN) != 0))
    rc = pgs_fail_nomem(s);
  if (rc) {
    s->copy_buf.len = mark;
    s->jsonb_array.len = jsonb_mark;
    s->njsonb = jsonb_count;
    if (s->copy_uuids.len > s->copy_rows * LIPSYNC_UUID_LEN)
      s->copy_uuids.len = s->copy_rows * LIPSYNC_UUID_LEN;
    return rc;
  }
  s->copy_rows++;
  return 0;
}

/* Adds |row| to the COPY into |t| (or its staging table, when |stage|),
 * and its item to |items|: those of new UUIDs (t->items_new, binary) or
 * those replaced (t->items_set). */
static int write_row(pg_store *s, pg_table *t, const lipsync_row *row,
                     bool stage, bytebuf *items) {
  const char *what = stage ? "update" : "insert";
  char key[37];
  int rc;

  if (row->nvalues != t->base.ncolumns)
    return pgs_fail(s, LIPSYNC_ERR_INVALID_ARGUMENT,
                    "table %s: a row of %zu values for %zu columns", t->name,
                    row->nvalues, t->base.ncolumns);
  if ((rc = copy_begin(s, t, stage)) != 0)
    return rc;
  lipsync_uuid_format(row->uuid, key);
  if ((rc = encode_row(s, t, row, key)) != 0)
    return rc;
  bool set = items == &t->items_set;
  if ((set ? pgs_item_line(items, row->uuid, &row->version, false, false)
           : pgs_item_binary(items, row->uuid, &row->version, false)) != 0)
    return pgs_fail_nomem(s);
  if (set)
    t->nset++;
  if (s->copy_buf.len >= COPY_CHUNK && !copy_send(s)) {
    /* The server has refused the stream: take its reason. */
    rc = pgs_copy_end(s);
    return rc ? rc
              : pgs_fail(s, LIPSYNC_ERR_STORAGE, "table %s: %s: COPY failed",
                         t->name, what);
  }
  if (s->jsonb_array.len >= JSONB_BATCH_BYTES ||
      s->njsonb >= JSONB_BATCH_VALUES || items->len >= ITEMS_BATCH_BYTES)
    return pgs_copy_end(s);
  return 0;
}

/*
 * The first row inserted into a table that had no row and no item when it
 * was prepared starts a bulk load (the first sync of a table, typically):
 * the table is locked IN SHARE ROW EXCLUSIVE MODE until the transaction
 * ends, so that no other writer adds rows while it loads and the indexes
 * set aside for it (ensure_uuid_index, pgs_capture_prepare) are built over
 * its rows alone. Readers go on.
 */
static int start_bulk(pg_store *s, pg_table *t) {
  bytebuf sql = {0};
  int rc;
  t->empty = false;
  if ((rc = pgs_copy_end(s)) != 0)
    return rc;
  rc = pgs_putf(&sql, "LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE", t->qname);
  return pgs_exec_buf(s, &sql, rc, t->name, "locking the table to load it");
}

/* What an applied row adds to the table's item digests and takes away,
 * for the delta row its finish writes (spec 8.8.6); and that the store
 * wrote rows, for pg_store_flush. */
static void note_applied(pg_table *t, const lipsync_row *row) {
  t->store->wrote_rows = true;
  canon_fp_add(&t->applied_add, row->digest);
  if (row->had_item)
    canon_fp_add(&t->applied_sub, row->old_digest);
}

/* A live row goes into the COPY of the table, its item into the next COPY
 * of items; a tombstone is an item alone. */
static int pg_store_insert(lipsync_store *store, lipsync_table *table,
                           const lipsync_row *row) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  int rc;

  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((rc = pgs_need_prepared(s, t, "insert")) != 0 ||
      (t->empty && (rc = start_bulk(s, t)) != 0))
    return rc;
  note_applied(t, row);
  /* Into the staging table while it streams (its merge inserts the rows
   * it misses): rows updated and inserted, which come mixed in UUID
   * order, then share one COPY rather than end one another's. */
  if (!row->deleted)
    return write_row(s, t, row, s->copy_table == t && s->copy_stage,
                     &t->items_new);
  if (pgs_item_binary(&t->items_new, row->uuid, &row->version, true) != 0)
    return pgs_fail_nomem(s);
  return t->items_new.len >= ITEMS_BATCH_BYTES ? pgs_copy_end(s) : 0;
}

/* A live row goes through the table's staging table (store_pg_items.c
 * merges it, writing only rows that differ); a tombstone's row is deleted
 * before any later row of the table is written. Items are replaced. */
static int pg_store_update(lipsync_store *store, lipsync_table *table,
                           const lipsync_row *row) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  int rc;

  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((rc = pgs_need_prepared(s, t, "update")) != 0)
    return rc;
  note_applied(t, row);
  if (!row->deleted)
    return write_row(s, t, row, true, &t->items_set);
  if (s->copy_table == t && (rc = pgs_copy_end(s)) != 0)
    return rc;
  /* The rows of the tables deleted in the order of the calls (the
   * session deletes children before parents). */
  for (pg_table *o = s->tables; o; o = o->next)
    if (o != t && o->deletes.len) {
      if ((rc = pgs_copy_end(s)) != 0)
        return rc;
      break;
    }
  if (bytebuf_append(&t->deletes, row->uuid, LIPSYNC_UUID_LEN) != 0 ||
      pgs_item_line(&t->items_set, row->uuid, &row->version, true, false) != 0)
    return pgs_fail_nomem(s);
  t->nset++;
  if (t->deletes.len >= DELETE_BATCH * LIPSYNC_UUID_LEN ||
      t->items_set.len >= ITEMS_BATCH_BYTES)
    return pgs_copy_end(s);
  return 0;
}

/* ------------------------------------------------------------------ */
/* The store                                                            */
/* ------------------------------------------------------------------ */

/* The store sends whole statements and COPY data, then waits for their
 * results: a caller's connection in nonblocking mode is made blocking
 * while a sync uses it, and given back as it was. */
static void use_blocking(pg_store *s) {
  if (!s->was_nonblocking && PQisnonblocking(s->conn) &&
      PQsetnonblocking(s->conn, 0) == 0)
    s->was_nonblocking = true;
}

static void restore_blocking(pg_store *s) {
  if (s->was_nonblocking && !s->in_txn) {
    PQsetnonblocking(s->conn, 1);
    s->was_nonblocking = false;
  }
}

/* Deallocates the statements the transaction prepared, once it has
 * ended: they would outlive it on the connection. */
static void end_statements(pg_store *s) {
  if (s->deallocs.len && PQtransactionStatus(s->conn) == PQTRANS_IDLE &&
      pgs_cstr(&s->deallocs))
    PQclear(pgs_run(s, (const char *)s->deallocs.data));
  s->deallocs.len = 0;
}

/* Makes the store's own connection again, with the same parameters, once
 * its server closed it while no transaction was open (a restart, an
 * administrator, an idle timeout): nothing is lost, and a store kept
 * between syncs (lipsync-server's idle connections) outlives a
 * PostgreSQL restart. Returns true if the connection is back. */
static bool reconnect(pg_store *s) {
  if (!s->owns_conn || PQstatus(s->conn) != CONNECTION_BAD)
    return false;
  PQreset(s->conn);
  PGcancel *fresh = PQgetCancel(s->conn), *old;
  pthread_mutex_lock(&s->cancel_lock);
  old = s->cancel;
  s->cancel = fresh;
  pthread_mutex_unlock(&s->cancel_lock);
  PQfreeCancel(old);
  return PQstatus(s->conn) == CONNECTION_OK;
}

int pgs_begin(pg_store *s, bool snapshot) {
  char sql[sizeof begin_fmt + 32];
  int rc;
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if (s->in_txn)
    return pgs_fail(s, LIPSYNC_ERR_INTERNAL, "a transaction is already open");
  reconnect(s);
  if (PQstatus(s->conn) != CONNECTION_OK)
    return pgs_fail_pg(s, NULL, NULL, "begin");
  /* The caller's own transaction is not ours to commit. */
  if (PQtransactionStatus(s->conn) != PQTRANS_IDLE)
    return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                    "begin: the connection is already in a transaction");
  snprintf(sql, sizeof sql, begin_fmt,
           snapshot ? "REPEATABLE READ" : "READ COMMITTED", s->lock_timeout_ms);
  use_blocking(s);
  rc = pgs_exec_sql(s, sql, NULL, "begin");
  /* The server may have closed the connection since its last use, which
   * only its first statement finds out. */
  if (rc && reconnect(s))
    rc = pgs_exec_sql(s, sql, NULL, "begin");
  /* A failed SET leaves an open transaction for rollback to end. */
  s->in_txn = PQtransactionStatus(s->conn) != PQTRANS_IDLE;
  s->fresh = snapshot;
  s->wrote_rows = false;
  s->writing = NULL;
  restore_blocking(s);
  return rc;
}

static int pg_store_begin(lipsync_store *store) {
  return pgs_begin((pg_store *)store, true);
}

/* The transaction reads one snapshot and writes without another lock: a
 * reader and a writer are the same transaction. */
static int pg_store_begin_write(lipsync_store *store) {
  pg_store *s = (pg_store *)store;
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  return s->in_txn ? 0
                   : pgs_fail(s, LIPSYNC_ERR_INTERNAL,
                              "write: no transaction is open");
}

static void pg_store_set_lock_timeout(lipsync_store *store, int ms) {
  ((pg_store *)store)->lock_timeout_ms = ms > 0 ? ms : DEFAULT_LOCK_TIMEOUT_MS;
}

/* Ends the COPY, builds the indexes set aside (whose duplicates are
 * clearer than those of items), then writes items. */
static int end_writes(pg_store *s) {
  int rc = copy_end_stream(s);
  for (pg_table *t = s->tables; t && !rc; t = t->next)
    rc = pgs_build_pending(s, t);
  return rc ? rc : pgs_copy_end(s);
}

/*
 * Checks the deferred constraints (spec LS-VALUE-9) and, in the same round
 * trip, finds the tables of this session that the database changed in
 * response to the rows applied (a foreign key's ON DELETE CASCADE, a
 * trigger). Those changes are captured as local ones (spec LS-CAPTURE-10)
 * and append delta rows in this transaction, which nothing else does
 * until finish writes a table's own. Such a change escapes the session's
 * accounting: the item it wrote may be replaced by a row applied later, or
 * stand for a change the peer has not seen while this side's position
 * covers it. Marks those tables |nested| (see forget_nested).
 */
static int check_applied(pg_store *s) {
  bytebuf sql = {0};
  PGresult *r;
  int rc = pgs_put(&sql, "SET CONSTRAINTS ALL IMMEDIATE; SELECT true");
  for (pg_table *t = s->tables; t && !rc; t = t->next)
    rc = t->reg_lit && !t->finished
             ? pgs_putf(&sql,
                        ", EXISTS (SELECT 1 FROM _lipsync.deltas AS d WHERE"
                        " d.tbl = %s AND d.xmin::pg_catalog.text::"
                        "pg_catalog.int8 = pg_catalog.pg_current_xact_id()::"
                        "pg_catalog.text::pg_catalog.int8 %% 4294967296)",
                        t->reg_lit)
             : pgs_put(&sql, ", false");
  if ((rc = pgs_query(s, NULL, &sql, rc, "checking deferred constraints", false,
                      &r)) != 0)
    return rc;
  int col = 1;
  for (pg_table *t = s->tables; t; t = t->next, col++)
    t->nested |= PQgetvalue(r, 0, col)[0] == 't';
  PQclear(r);
  return 0;
}

/* Before COMMIT, once finish has recorded positions and tokens: a table
 * |nested| is recounted at its next sync, which settles its summary, and
 * loses its checkpoint and the tokens of its clients, so that its next
 * sync compares ranges and carries those changes (spec LS-INC-17). */
static int forget_nested(pg_store *s) {
  bytebuf names = {0}, sql = {0};
  int rc = 0;
  for (pg_table *t = s->tables; t && !rc; t = t->next)
    if (t->nested)
      rc = pgs_putf(&names, "%s%s", names.len ? ", " : "", t->reg_lit);
  if (rc || !names.len) {
    bytebuf_free(&names);
    return rc ? pgs_fail_nomem(s) : 0;
  }
  rc = pgs_cstr(&names) ? 0 : LIPSYNC_ERR_NOMEM;
  if (!rc)
    rc = pgs_putf(&sql,
                  "UPDATE _lipsync.tables SET recount = true, ck_token = NULL"
                  " WHERE name IN (%s); DELETE FROM _lipsync.peers WHERE tbl"
                  " IN (%s)",
                  (const char *)names.data, (const char *)names.data);
  bytebuf_free(&names);
  return pgs_exec_buf(s, &sql, rc, NULL, "noting changes the rows caused");
}

/* Ends the COPY in progress (with its checks) and builds every index set
 * aside: whatever these find wrong is reported now, before the session
 * vouches for its tables in Verify, rather than at commit, when the peer
 * may already have committed. */
static int pg_store_flush(lipsync_store *store) {
  pg_store *s = (pg_store *)store;
  int rc;
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((rc = end_writes(s)) != 0 || !s->wrote_rows)
    return rc;
  /* The deferred constraints are checked here, not at COMMIT; any later
   * write is checked at once. */
  s->wrote_rows = false;
  return check_applied(s);
}

/* Runs COMMIT. Fault point "commit-sent" (fault.h) comes once the
 * statement has left for the server, before its answer is read. */
static PGresult *commit_statement(pg_store *s) {
  if (!PQsendQuery(s->conn, "COMMIT"))
    return NULL;
#ifdef LIPSYNC_FAULTS
  while (PQflush(s->conn) == 1) {
  }
  fault_point("commit-sent");
#endif
  return finish(s);
}

static int pg_store_commit(lipsync_store *store) {
  pg_store *s = (pg_store *)store;
  PGresult *r;
  int rc;

  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if (!s->in_txn)
    return pgs_fail(s, LIPSYNC_ERR_INTERNAL, "commit: no transaction is open");
  /* Commit ends every cursor: those still open must not keep an index
   * from being built first. */
  for (pg_table *t = s->tables; t; t = t->next)
    for (pg_cursor *c = t->cursors; c; c = c->next)
      queue_close(s, c);
  rc = end_writes(s);
  if (!rc)
    rc = forget_nested(s);
  free_tables(s);
  if (rc)
    return rc;
  /* COMMIT of a failed transaction rolls it back, and says so only in its
   * command tag. */
  if (PQtransactionStatus(s->conn) == PQTRANS_INERROR)
    return pgs_fail(s, LIPSYNC_ERR_STORAGE,
                    "commit: a statement of the transaction failed; it can "
                    "only be rolled back");
  r = commit_statement(s);
  if (r && PQresultStatus(r) == PGRES_COMMAND_OK &&
      strcmp(PQcmdStatus(r), "COMMIT") != 0) {
    PQclear(r);
    rc = pgs_fail(s, LIPSYNC_ERR_STORAGE,
                  "commit: the transaction was rolled "
                  "back");
  } else {
    rc = pgs_expect(s, r, PGRES_COMMAND_OK, NULL, "commit");
  }
  s->in_txn = PQtransactionStatus(s->conn) != PQTRANS_IDLE;
  if (!s->in_txn)
    end_statements(s);
  restore_blocking(s);
  if (rc == 0 && !s->in_txn)
    pgs_upkeep_run(s);
  pgs_upkeep_clear(s);
  return rc;
}

static int pg_store_rollback(lipsync_store *store) {
  pg_store *s = (pg_store *)store;
  int rc = 0;
  s->no_cancel = true;
  copy_abort(s);
  free_tables(s);
  if (s->in_txn) {
    PGTransactionStatusType st = PQtransactionStatus(s->conn);
    if (st == PQTRANS_INTRANS || st == PQTRANS_INERROR)
      rc = pgs_exec_sql(s, "ROLLBACK", NULL, "rollback");
    else if (st != PQTRANS_IDLE)
      rc = pgs_fail_pg(s, NULL, NULL, "rollback");
  }
  s->in_txn = false;
  end_statements(s);
  restore_blocking(s);
  s->no_cancel = false;
  pgs_upkeep_clear(s);
  return rc;
}

static void free_names(pg_store *s) {
  for (size_t i = 0; i < s->nnames; i++)
    free(s->names[i]);
  free(s->names);
  s->names = NULL;
  s->nnames = 0;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every ordinary and partitioned table (partitions sync as part of their
 * parent) outside the system schemas, named as open_table takes them:
 * schema public's unqualified unless the name holds a '.', the others as
 * schema.table. A schema whose name holds a '.' cannot be named so. */
static int pg_store_list_tables(lipsync_store *store, const char *const **names,
                                size_t *count) {
  static const char sql[] =
      "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c"
      " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
      " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
      " AND n.nspname <> 'information_schema'"
      " AND pg_catalog.left(n.nspname, 3) <> 'pg_'"
      /* change capture's own tables */
      " AND n.nspname <> '_lipsync'"
      " AND pg_catalog.left(c.relname, 8) <> '_lipsync'"
      " AND pg_catalog.strpos(n.nspname, '.') = 0";
  pg_store *s = (pg_store *)store;
  PGresult *r;
  int rc = 0;

  *names = NULL;
  *count = 0;
  free_names(s);
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((rc = pgs_copy_end(s)) != 0)
    return rc;
  use_blocking(s);
  r = pgs_run(s, sql);
  restore_blocking(s);
  if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
    return pgs_expect(s, r, PGRES_TUPLES_OK, NULL, "listing tables");
  size_t n = (size_t)PQntuples(r);
  s->names = calloc(n + 1, sizeof *s->names);
  if (!s->names)
    rc = pgs_fail_nomem(s);
  for (size_t i = 0; i < n && !rc; i++) {
    const char *schema = PQgetvalue(r, (int)i, 0);
    const char *rel = PQgetvalue(r, (int)i, 1);
    bool plain = strcmp(schema, DEFAULT_SCHEMA) == 0 && !strchr(rel, '.');
    size_t len = strlen(schema) + strlen(rel) + 2;
    char *name = malloc(len);
    if (!name) {
      rc = pgs_fail_nomem(s);
      break;
    }
    if (plain)
      snprintf(name, len, "%s", rel);
    else
      snprintf(name, len, "%s.%s", schema, rel);
    s->names[s->nnames++] = name;
  }
  PQclear(r);
  if (rc) {
    free_names(s);
    return rc;
  }
  qsort(s->names, s->nnames, sizeof *s->names, name_cmp);
  *names = (const char *const *)s->names;
  *count = s->nnames;
  return 0;
}

static const char *pg_store_errmsg(lipsync_store *store) {
  return ((pg_store *)store)->errmsg;
}

static void pg_store_destroy(lipsync_store *store) {
  pg_store *s = (pg_store *)store;
  pg_store_rollback(store);
  free_names(s);
  bytebuf_free(&s->closes);
  bytebuf_free(&s->deallocs);
  bytebuf_free(&s->copy_buf);
  bytebuf_free(&s->copy_uuids);
  bytebuf_free(&s->jsonb_array);
  free(s->jsonb);
  free(s->upkeep);
  canon_hasher_free(&s->hasher);
  PQfreeCancel(s->cancel);
  pthread_mutex_destroy(&s->cancel_lock);
  if (s->owns_conn)
    PQfinish(s->conn);
  free(s);
}

/* PQcancel is safe from any thread. The statement being waited for, if
 * any, ends with an error; next_result() repeats the request in case this
 * one reached the server between two statements. */
static void pg_store_interrupt(lipsync_store *store) {
  pg_store *s = (pg_store *)store;
  char buf[256];
  atomic_store(&s->interrupted, 1);
  pthread_mutex_lock(&s->cancel_lock);
  if (s->cancel)
    PQcancel(s->cancel, buf, sizeof buf);
  pthread_mutex_unlock(&s->cancel_lock);
}

/* A recount rewrites what the store keeps of the table: prepared, it is
 * in this transaction. */
static int pg_store_recount(lipsync_store *store, lipsync_table *table) {
  pg_store *s = (pg_store *)store;
  pg_table *t = (pg_table *)table;
  int rc;
  if (pgs_is_interrupted(s))
    return pgs_fail_interrupted(s);
  if ((rc = pgs_need_prepared(s, t, "recount")) != 0 ||
      (rc = pgs_copy_end(s)) != 0)
    return rc;
  return pgs_capture_recount(s, t);
}

static const lipsync_store_methods pg_store_methods = {
    .version = LIPSYNC_STORE_METHODS_VERSION,
    .name = "postgresql",
    .begin = pg_store_begin,
    .commit = pg_store_commit,
    .rollback = pg_store_rollback,
    .open_table = pg_store_open_table,
    .prepare_table = pg_store_prepare_table,
    .scan = pg_store_scan,
    .next = pg_store_next,
    .close_cursor = pg_store_close_cursor,
    .fetch = pg_store_fetch,
    .insert = pg_store_insert,
    .list_tables = pg_store_list_tables,
    .errmsg = pg_store_errmsg,
    .destroy = pg_store_destroy,
    .interrupt = pg_store_interrupt,
    .scan_uuids = pg_store_scan_uuids,
    .flush = pg_store_flush,
    .update = pg_store_update,
    .scan_items = pgs_scan_items,
    .next_item = pgs_next_item,
    .finish_table = pgs_finish_table,
    .tick = pgs_tick,
    .begin_read = pg_store_begin,
    .begin_write = pg_store_begin_write,
    .set_lock_timeout = pg_store_set_lock_timeout,
    .position = pgs_position,
    .scan_changes = pgs_scan_changes,
    .scan_item_range = pgs_scan_item_range,
    .lookup_items = pgs_lookup_items,
    .scan_tombstones = pgs_scan_tombstones,
    .summarize = pgs_summarize,
    .load_checkpoint = pgs_load_checkpoint,
    .load_token = pgs_load_token,
    .distrust = pgs_distrust,
    .recount = pg_store_recount,
    .maintain = pgs_maintain,
    .drop_capture = pgs_drop_capture,
};

static int store_new(PGconn *conn, bool owns_conn, pg_store **out) {
  pg_store *s = calloc(1, sizeof *s);
  *out = NULL;
  if (!s)
    return LIPSYNC_ERR_NOMEM;
  if (canon_hasher_init(&s->hasher) != 0) {
    free(s);
    return LIPSYNC_ERR_NOMEM;
  }
  s->base.methods = &pg_store_methods;
  s->conn = conn;
  s->owns_conn = owns_conn;
  s->lock_timeout_ms = DEFAULT_LOCK_TIMEOUT_MS;
  /* NULL for a connection that is not open: then nothing can be
   * cancelled. */
  s->cancel = PQgetCancel(conn);
  pthread_mutex_init(&s->cancel_lock, NULL);
  snprintf(s->errmsg, sizeof s->errmsg, "no error");
  *out = s;
  return 0;
}

int lipsync_store_pg_wrap(lipsync_store **out, void *conn) {
  pg_store *s;
  int rc;
  if (!out)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  *out = NULL;
  if (!conn)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  rc = store_new(conn, false, &s);
  if (rc == 0)
    *out = &s->base;
  return rc;
}

/* Notices (an identifier cut short, ...) are no concern of the
 * application's standard error. */
static void ignore_notice(void *arg, const char *message) {}

int lipsync_store_pg_open(lipsync_store **out, const char *conninfo,
                          char *errbuf, size_t errlen) {
  /* dbname is expanded: |conninfo| may be a URI or keyword/value pairs,
   * and names the application unless it does so itself. */
  const char *const keys[] = {"dbname", "fallback_application_name", NULL};
  const char *values[] = {conninfo, "lipsync", NULL};
  PGconn *conn;
  pg_store *s;
  char msg[512];
  int code;

  if (!out)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  *out = NULL;
  if (!conninfo) {
    errbuf_format(errbuf, errlen, "no connection string");
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  }
  conn = PQconnectdbParams(keys, values, 1);
  if (!conn) {
    errbuf_format(errbuf, errlen,
                  "cannot connect to PostgreSQL: out of memory");
    return LIPSYNC_ERR_NOMEM;
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    /* The connection string is not repeated: it may hold a password. */
    one_line(PQerrorMessage(conn), msg, sizeof msg);
    errbuf_format(errbuf, errlen, "cannot connect to PostgreSQL: %s", msg);
    code = LIPSYNC_ERR_STORAGE;
    goto fail_conn;
  }
  PQsetNoticeProcessor(conn, ignore_notice, NULL);
  code = store_new(conn, true, &s);
  if (code != 0) {
    errbuf_format(errbuf, errlen, "cannot connect to PostgreSQL: %s",
                  lipsync_strerror(code));
    goto fail_conn;
  }
  *out = &s->base;
  return 0;

fail_conn:
  PQfinish(conn);
  return code;
}
