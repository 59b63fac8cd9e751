/*
 * session.c: the sans-I/O session (spec sections 3, 5, 6, 10). It owns the
 * state machine, the handshake, table open, and the final Verify/Committed
 * exchange; turns of reconciliation live in reconcile.c. Bytes come in
 * through lipsync_session_recv() and leave through lipsync_session_send();
 * storage is reached only through the store wrappers of store.h.
 */
#include "fault.h"
#include "hlc.h"
#include "session_int.h"
#include "store.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_SPLIT_THRESHOLD 32
/* The names of the features (spec 15.3): 8.8 and 5.5. */
#define FEATURE_INCREMENTAL "incremental"
#define FEATURE_TLS_EXPORTER "tls-exporter"

/* ------------------------------------------------------------------ */
/* construction                                                         */
/* ------------------------------------------------------------------ */

static lipsync_session *session_alloc(lipsync_store *store, const void *secret,
                                      size_t secret_len) {
  lipsync_session *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->store = store;
  s->min_version = LIPSYNC_PROTOCOL_MIN;
  s->max_version = LIPSYNC_PROTOCOL_MAX;
  s->split_threshold = DEFAULT_SPLIT_THRESHOLD;
  s->retention_ms = LIPSYNC_DEFAULT_RETENTION_MS;
  s->incremental_enabled = true;
  s->mem_limit = LIPSYNC_DEFAULT_MEMORY_LIMIT;
  frame_reader_init(&s->reader);
  arena_init(&s->recv_arena);
  arena_init(&s->send_arena);
  s->secret = malloc(secret_len);
  if (!s->secret || canon_hasher_init(&s->hasher)) {
    lipsync_session_free(s);
    return NULL;
  }
  memcpy(s->secret, secret, secret_len);
  s->secret_len = secret_len;
  return s;
}

static int add_tables(lipsync_session *s, const char *const *names, size_t n) {
  s->tables = calloc(n, sizeof *s->tables);
  if (!s->tables)
    return LIPSYNC_ERR_NOMEM;
  s->ntables = n;
  for (size_t i = 0; i < n; i++) {
    s->tables[i].name = strdup(names[i]);
    if (!s->tables[i].name)
      return LIPSYNC_ERR_NOMEM;
  }
  return 0;
}

/* The features this side offers (client) or would accept (server), into
 * |names| (room for 2). Returns how many. */
static size_t my_features(const lipsync_session *s, char *names[2]) {
  size_t n = 0;
  if (s->incremental_enabled)
    names[n++] = FEATURE_INCREMENTAL;
  if (s->has_binding)
    names[n++] = FEATURE_TLS_EXPORTER;
  return n;
}

/* The in-effect flag of feature |name|, or NULL if this side does not
 * offer or accept it. */
static bool *feature_flag(lipsync_session *s, const char *name) {
  if (name && strcmp(name, FEATURE_INCREMENTAL) == 0 && s->incremental_enabled)
    return &s->incremental;
  if (name && strcmp(name, FEATURE_TLS_EXPORTER) == 0 && s->has_binding)
    return &s->bound;
  return NULL;
}

/* Marks feature |name| in effect; returns -1 if this side does not offer
 * or accept it, or it is already in effect. */
static int use_feature(lipsync_session *s, const char *name) {
  bool *on = feature_flag(s, name);
  if (!on || *on)
    return -1;
  *on = true;
  return 0;
}

static int send_client_hello(lipsync_session *s) {
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__ClientHello m = LIPSYNC__CLIENT_HELLO__INIT;
  char *features[2];
  int rc = auth_nonce(s->nonce);
  if (rc)
    return rc;
  m.n_features = my_features(s, features);
  m.features = m.n_features ? features : NULL;
  m.min_version = s->min_version;
  m.max_version = s->max_version;
  m.nonce.data = s->nonce;
  m.nonce.len = LIPSYNC_NONCE_LEN;
  f.body_case = LIPSYNC__FRAME__BODY_CLIENT_HELLO;
  f.client_hello = &m;
  size_t start = s->out.len;
  rc = session_emit(s, &f, NULL);
  if (rc)
    return rc;
  s->client_hello.len = 0;
  return bytebuf_append(&s->client_hello, s->out.data + start,
                        s->out.len - start);
}

int lipsync_session_client_new(lipsync_session **out, lipsync_store *store,
                               const void *secret, size_t secret_len,
                               const char *const *tables, size_t ntables) {
  *out = NULL;
  if (!store || !secret || !secret_len || !tables || !ntables)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < ntables; i++)
    for (size_t j = 0; j < i; j++)
      if (strcmp(tables[i], tables[j]) == 0)
        return LIPSYNC_ERR_INVALID_ARGUMENT;
  lipsync_session *s = session_alloc(store, secret, secret_len);
  if (!s)
    return LIPSYNC_ERR_NOMEM;
  int rc = add_tables(s, tables, ntables);
  if (rc) {
    lipsync_session_free(s);
    return rc;
  }
  s->state = ST_WAIT_SERVER_HELLO;
  *out = s;
  return 0;
}

int lipsync_session_server_new(lipsync_session **out, lipsync_store *store,
                               const void *secret, size_t secret_len,
                               const char *const *offered, size_t noffered,
                               int offer_all) {
  *out = NULL;
  /* A NULL store: lipsync_session_set_store_opener() must follow. */
  if (!secret || !secret_len || (!offer_all && !noffered) ||
      (noffered && !offered))
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  lipsync_session *s = session_alloc(store, secret, secret_len);
  if (!s)
    return LIPSYNC_ERR_NOMEM;
  s->is_server = true;
  s->offer_all = offer_all != 0;
  s->state = ST_WAIT_CLIENT_HELLO;
  if (noffered) {
    s->offered = calloc(noffered, sizeof *s->offered);
    if (!s->offered) {
      lipsync_session_free(s);
      return LIPSYNC_ERR_NOMEM;
    }
    s->noffered = noffered;
    for (size_t i = 0; i < noffered; i++) {
      if (!(s->offered[i] = strdup(offered[i]))) {
        lipsync_session_free(s);
        return LIPSYNC_ERR_NOMEM;
      }
    }
  }
  *out = s;
  return 0;
}

static void end_transaction(lipsync_session *s, bool commit, int *rc) {
  if (!s->txn_open)
    return;
  if (s->gen.cursor)
    store_close_cursor(s->store, s->gen.cursor);
  s->gen.cursor = NULL;
  items_close(&s->gen.items);
  items_close(&s->scan);
  for (size_t i = 0; i < s->ntables; i++)
    s->tables[i].handle = NULL;
  s->txn_open = false;
  if (commit) {
    fault_point("commit");
    *rc = store_commit(s->store);
  } else
    store_rollback(s->store);
}

void lipsync_session_free(lipsync_session *s) {
  if (!s)
    return;
  int rc = 0;
  end_transaction(s, false, &rc);
  for (size_t i = 0; i < s->ntables; i++)
    recon_table_free(s, &s->tables[i]);
  free(s->tables);
  for (size_t i = 0; i < s->noffered; i++)
    free(s->offered[i]);
  free(s->offered);
  if (s->secret)
    OPENSSL_cleanse(s->secret, s->secret_len);
  free(s->secret);
  bytebuf_free(&s->client_hello);
  bytebuf_free(&s->server_hello);
  bytebuf_free(&s->out);
  frame_reader_free(&s->reader);
  arena_free(&s->recv_arena);
  arena_free(&s->send_arena);
  canon_hasher_free(&s->hasher);
  free(s->lookup);
  free(s);
}

/* ------------------------------------------------------------------ */
/* failure and output                                                   */
/* ------------------------------------------------------------------ */

static bool is_terminal(const lipsync_session *s) {
  return s->state == ST_DONE || s->state == ST_FAILED;
}

/* After a session that ended with VERIFY_FAILED (the peer's Verify, or a
 * store that found its items disagree with its rows), the checkpoints of
 * its tables are not to be trusted again (spec LS-INC-16), and the
 * summaries the store keeps are to be recounted (LS-INC-17): the store
 * records it, its transaction rolled back. */
static void distrust_after(lipsync_session *s, int code) {
  if (code != LIPSYNC_ERR_VERIFY_FAILED)
    return;
  for (size_t i = 0; i < s->ntables; i++)
    store_distrust(s->store, s->tables[i].name);
}

/* The last code with a wire form (spec 11.1): Error.code is its negation. */
#define WIRE_CODE_LAST LIPSYNC_ERR_CANCELLED

static void queue_error(lipsync_session *s, int code, const char *message) {
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__Error m = LIPSYNC__ERROR__INIT;
  m.code = (uint32_t)(code <= LIPSYNC_ERR_PROTOCOL && code >= WIRE_CODE_LAST
                          ? -code
                          : -LIPSYNC_ERR_INTERNAL);
  m.message = (char *)message;
  if (fault_on("bad-error-code")) /* fault injection: conformance self-test */
    m.code = (uint32_t)-LIPSYNC_ERR_INTERNAL;
  if (code == LIPSYNC_ERR_VERSION_MISMATCH) {
    m.min_version = s->min_version;
    m.max_version = s->max_version;
  }
  f.body_case = LIPSYNC__FRAME__BODY_ERROR;
  f.error = &m;
  frame_append(&s->out, &f); /* best effort: we are failing anyway */
}

static int fail_v(lipsync_session *s, int code, bool send_frame,
                  const char *fmt, va_list ap) {
  if (is_terminal(s))
    return s->result ? s->result : code;
  vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
  int rc = 0;
  end_transaction(s, false, &rc);
  s->result = code;
  s->state = ST_FAILED;
  if (send_frame)
    queue_error(s, code, s->errmsg);
  distrust_after(s, code);
  return code;
}

int session_fail(lipsync_session *s, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  /* A vanished or broken transport cannot carry an Error frame. */
  bool send_frame = code != LIPSYNC_ERR_CLOSED && code != LIPSYNC_ERR_IO;
  fail_v(s, code, send_frame, fmt, ap);
  va_end(ap);
  return code;
}

int session_emit(lipsync_session *s, Lipsync__Frame *f, sync_table *table) {
  ssize_t n = frame_append(&s->out, f);
  if (n < 0)
    return session_fail(s, (int)n, "cannot encode %s frame: %s",
                        frame_body_name(f->body_case),
                        lipsync_strerror((int)n));
  if (table)
    table->bytes_sent += (uint64_t)n;
  fault_point("send");
  return 0;
}

/* ------------------------------------------------------------------ */
/* handshake                                                            */
/* ------------------------------------------------------------------ */

static int on_client_hello(lipsync_session *s, const Lipsync__ClientHello *m) {
  /* Versions before the nonce: a later version may change the nonce. */
  if (m->min_version > m->max_version)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "ClientHello min_version %u exceeds max_version %u",
                        m->min_version, m->max_version);
  uint32_t v =
      m->max_version < s->max_version ? m->max_version : s->max_version;
  uint32_t floor =
      m->min_version > s->min_version ? m->min_version : s->min_version;
  if (v < floor)
    return session_fail(s, LIPSYNC_ERR_VERSION_MISMATCH,
                        "no common protocol version: client speaks %u..%u, "
                        "server speaks %u..%u",
                        m->min_version, m->max_version, s->min_version,
                        s->max_version);
  if (m->nonce.len != LIPSYNC_NONCE_LEN)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "ClientHello nonce is %zu bytes, not %d", m->nonce.len,
                        LIPSYNC_NONCE_LEN);
  s->version = v;
  if (frame_reader_copy(&s->reader, &s->client_hello))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");

  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__ServerHello sh = LIPSYNC__SERVER_HELLO__INIT;
  if (auth_nonce(s->nonce))
    return session_fail(s, LIPSYNC_ERR_INTERNAL, "random generator failed");
  sh.version = v;
  sh.nonce.data = s->nonce;
  sh.nonce.len = LIPSYNC_NONCE_LEN;
  /* The features this side knows, when offered (spec LS-FEAT-3), listed
   * in its own order. */
  char *mine[2], *features[2];
  size_t nmine = my_features(s, mine);
  for (size_t i = 0; i < m->n_features; i++)
    (void)use_feature(s, m->features[i]); /* unknown or repeated: ignored */
  for (size_t i = 0; i < nmine; i++)
    if (*feature_flag(s, mine[i]))
      features[sh.n_features++] = mine[i];
  sh.features = sh.n_features ? features : NULL;
  f.body_case = LIPSYNC__FRAME__BODY_SERVER_HELLO;
  f.server_hello = &sh;
  size_t start = s->out.len;
  if (session_emit(s, &f, NULL))
    return s->result;
  if (bytebuf_append(&s->server_hello, s->out.data + start, s->out.len - start))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  auth_transcript(s->client_hello.data, s->client_hello.len,
                  s->server_hello.data, s->server_hello.len,
                  s->bound ? s->binding : NULL, s->transcript);
  s->state = ST_WAIT_CLIENT_AUTH;
  return 0;
}

static int send_proof(lipsync_session *s, auth_role role) {
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__AuthProof m = LIPSYNC__AUTH_PROOF__INIT;
  uint8_t mac[LIPSYNC_MAC_LEN];
  if (auth_proof(s->secret, s->secret_len, role, s->transcript, mac))
    return session_fail(s, LIPSYNC_ERR_INTERNAL, "HMAC failed");
  m.mac.data = mac;
  m.mac.len = sizeof mac;
  if (role == AUTH_CLIENT) {
    f.body_case = LIPSYNC__FRAME__BODY_CLIENT_AUTH;
    f.client_auth = &m;
  } else {
    f.body_case = LIPSYNC__FRAME__BODY_SERVER_AUTH;
    f.server_auth = &m;
  }
  return session_emit(s, &f, NULL);
}

static int on_server_hello(lipsync_session *s, const Lipsync__ServerHello *m) {
  if (m->nonce.len != LIPSYNC_NONCE_LEN)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "ServerHello nonce is %zu bytes, not %d", m->nonce.len,
                        LIPSYNC_NONCE_LEN);
  if (m->version < s->min_version || m->version > s->max_version)
    return session_fail(s, LIPSYNC_ERR_VERSION_MISMATCH,
                        "server chose protocol version %u, outside %u..%u",
                        m->version, s->min_version, s->max_version);
  for (size_t i = 0; i < m->n_features; i++)
    if (use_feature(s, m->features[i]) < 0)
      return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                          "server accepted feature '%s', which was not "
                          "offered (or accepted it twice)",
                          m->features[i] ? m->features[i] : "");
  s->version = m->version;
  s->server_hello.len = 0;
  if (frame_reader_copy(&s->reader, &s->server_hello))
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  auth_transcript(s->client_hello.data, s->client_hello.len,
                  s->server_hello.data, s->server_hello.len,
                  s->bound ? s->binding : NULL, s->transcript);
  if (send_proof(s, AUTH_CLIENT))
    return s->result;
  s->state = ST_WAIT_SERVER_AUTH;
  return 0;
}

/* ------------------------------------------------------------------ */
/* table open (spec 6)                                                  */
/* ------------------------------------------------------------------ */

/* Starts the transaction (a snapshot, spec LS-STORE-4) and looks up
 * every table of the session. */
static int open_local_tables(lipsync_session *s) {
  if (!store_usable(s->store))
    return session_fail(s, LIPSYNC_ERR_INTERNAL,
                        "the storage backend is too old (store methods "
                        "version %d; this library needs %d)",
                        s->store->methods->version, STORE_SESSION_VERSION);
  int rc = store_begin_read(s->store);
  if (rc)
    return session_fail(s, rc, "cannot start a transaction: %s",
                        store_errmsg(s->store));
  s->txn_open = true;
  for (size_t i = 0; i < s->ntables; i++) {
    rc = store_open_table(s->store, s->tables[i].name, &s->tables[i].handle);
    if (rc)
      return session_fail(s, rc, "%s", store_errmsg(s->store));
    s->tables[i].handle->is_server = s->is_server;
  }
  return 0;
}

/* Gives every table its UUIDs and change capture (or checks them), and
 * recounts it when the user asked for a full sync; then reads this
 * database's site id. */
static int prepare_tables(lipsync_session *s) {
  lipsync_version now;
  int rc;
  for (size_t i = 0; i < s->ntables; i++) {
    sync_table *t = &s->tables[i];
    if ((rc = store_prepare_table(s->store, t->handle)) != 0 ||
        (s->force_full && (rc = store_recount(s->store, t->handle)) != 0))
      return session_fail(s, rc, "%s", store_errmsg(s->store));
  }
  if ((rc = store_tick(s->store, &now)) != 0)
    return session_fail(s, rc, "%s", store_errmsg(s->store));
  memcpy(s->site, now.site, LIPSYNC_SITE_LEN);
  s->server_clock = now.clock;
  return 0;
}

int lipsync_session_prepare(lipsync_session *s) {
  if (!s || s->is_server)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  if (s->prepared || is_terminal(s))
    return s->result;
  s->prepared = true;
  fault_point("prepare");
  if (open_local_tables(s) || prepare_tables(s)) {
    /* Before the first byte, the server is owed no Error frame. */
    if (!s->client_hello.len)
      s->out.len = 0;
    return s->result;
  }
  return 0;
}

/* The client's checkpoints, to present (spec LS-INC-7). */
static int load_checkpoints(lipsync_session *s) {
  for (size_t i = 0; i < s->ntables; i++) {
    sync_table *t = &s->tables[i];
    int rc = store_load_checkpoint(s->store, t->handle, &t->checkpoint);
    if (rc)
      return session_fail(s, rc, "%s", store_errmsg(s->store));
    t->presented = s->incremental && !s->force_full && t->checkpoint.has;
  }
  return 0;
}

/* The server's name of table |i|. */
static const char *remote_name(const lipsync_session *s, size_t i) {
  return s->tables[i].remote ? s->tables[i].remote : s->tables[i].name;
}

static int send_open_tables(lipsync_session *s) {
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__OpenTables m = LIPSYNC__OPEN_TABLES__INIT;
  arena *a = &s->send_arena;
  /* Two local tables mapped to one of the server's (spec LS-TABLE-7). */
  for (size_t i = 0; i < s->ntables; i++)
    for (size_t j = 0; j < i; j++)
      if (strcmp(remote_name(s, i), remote_name(s, j)) == 0)
        return session_fail(s, LIPSYNC_ERR_INVALID_ARGUMENT,
                            "tables %s and %s are both mapped to the "
                            "server's table %s",
                            s->tables[j].name, s->tables[i].name,
                            remote_name(s, i));
  m.n_tables = s->ntables;
  m.policy = (Lipsync__Policy)s->policy;
  if (s->incremental) {
    m.client_site.data = s->site;
    m.client_site.len = LIPSYNC_SITE_LEN;
  }
  m.tables = arena_alloc(a, s->ntables * sizeof *m.tables);
  for (size_t i = 0; m.tables && i < s->ntables; i++) {
    sync_table *st = &s->tables[i];
    const lipsync_table *t = st->handle;
    Lipsync__TableSchema *ts = arena_alloc(a, sizeof *ts);
    uint8_t *fp = arena_alloc(a, CANON_SCHEMA_FP_LEN);
    Lipsync__Column **cols = arena_alloc(a, (t->ncolumns + 1) * sizeof *cols);
    Lipsync__Checkpoint *ck = arena_alloc(a, sizeof *ck);
    if (!ts || !fp || !cols || !ck)
      break;
    lipsync__table_schema__init(ts);
    ts->name = (char *)remote_name(s, i);
    ts->n_columns = t->ncolumns;
    ts->columns = cols;
    for (size_t c = 0; c < t->ncolumns; c++) {
      cols[c] = arena_alloc(a, sizeof **cols);
      if (!cols[c])
        break;
      lipsync__column__init(cols[c]);
      cols[c]->name = (char *)t->columns[c].name;
      cols[c]->type = (char *)t->columns[c].type;
    }
    canon_schema_fingerprint(t->columns, t->ncolumns, fp);
    ts->fingerprint.data = fp;
    ts->fingerprint.len = CANON_SCHEMA_FP_LEN;
    ts->last_sync = st->last_sync = t->last_sync;
    if (st->presented) {
      lipsync__checkpoint__init(ck);
      ck->server_site.data = st->checkpoint.server_site;
      ck->server_site.len = LIPSYNC_SITE_LEN;
      ck->token.data = st->checkpoint.token;
      ck->token.len = LIPSYNC_SITE_LEN;
      ck->server_position.data = st->checkpoint.server_position.data;
      ck->server_position.len = st->checkpoint.server_position.len;
      ts->checkpoint = ck;
    }
    m.tables[i] = ts;
  }
  if (a->failed) {
    arena_reset(a);
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  }
  f.body_case = LIPSYNC__FRAME__BODY_OPEN_TABLES;
  f.open_tables = &m;
  int rc = session_emit(s, &f, NULL);
  arena_reset(a);
  return rc;
}

static int on_server_auth(lipsync_session *s, const Lipsync__AuthProof *m) {
  if (auth_verify(s->secret, s->secret_len, AUTH_SERVER, s->transcript,
                  m->mac.data, m->mac.len))
    return session_fail(s, LIPSYNC_ERR_AUTH_FAILED,
                        "the server could not prove it holds the secret");
  if (lipsync_session_prepare(s) || load_checkpoints(s) || send_open_tables(s))
    return s->result;
  s->state = ST_WAIT_TABLES_OPENED;
  return 0;
}

/* The client's TablesOpened (spec LS-OPEN-8, LS-INC-9): the horizon, the
 * server's clock, and which tables go by their changes. */
static int on_tables_opened(lipsync_session *s,
                            const Lipsync__TablesOpened *m) {
  s->horizon = m->horizon;
  s->server_clock = m->clock;
  if (s->incremental && m->server_site.len != LIPSYNC_SITE_LEN)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "TablesOpened: the server's site id is %zu bytes, "
                        "not %d",
                        m->server_site.len, LIPSYNC_SITE_LEN);
  if (s->incremental)
    memcpy(s->peer_site, m->server_site.data, LIPSYNC_SITE_LEN);
  for (size_t k = 0; k < m->n_incremental; k++) {
    uint32_t i = m->incremental[k];
    if (!s->incremental || i >= s->ntables || !s->tables[i].presented ||
        (k > 0 && i <= m->incremental[k - 1]))
      return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                          "TablesOpened lists table index %u as synced by "
                          "its changes: not a table the client presented a "
                          "checkpoint for, or not in ascending order",
                          i);
    s->tables[i].incremental = true;
    s->tables[i].since = s->tables[i].checkpoint.client_position;
  }
  /* My last sync of a table with another server says nothing of this
   * one's horizon (spec LS-INC-25): not stale. */
  for (size_t i = 0; s->incremental && i < s->ntables; i++)
    if (s->tables[i].presented && memcmp(s->tables[i].checkpoint.server_site,
                                         s->peer_site, LIPSYNC_SITE_LEN) != 0)
      s->tables[i].last_sync = 0;
  if (recon_prepare(s))
    return s->result;
  return recon_start(s);
}

static int on_client_auth(lipsync_session *s, const Lipsync__AuthProof *m) {
  if (auth_verify(s->secret, s->secret_len, AUTH_CLIENT, s->transcript,
                  m->mac.data, m->mac.len) &&
      !fault_on("accept-wrong-secret")) /* fault injection: self-test */
    return session_fail(s, LIPSYNC_ERR_AUTH_FAILED,
                        "the client could not prove it holds the secret");
  if (!s->store && s->opener) { /* only now (LS-SEC-3) */
    char err[256] = "";
    int rc = s->opener(s->opener_user, &s->store, err, sizeof err);
    if (rc < 0 || !s->store) {
      s->store = NULL;
      return session_fail(s, rc < 0 ? rc : LIPSYNC_ERR_INTERNAL,
                          "the server cannot open its database%s%s",
                          err[0] ? ": " : "", err);
    }
  }
  if (!s->store)
    return session_fail(s, LIPSYNC_ERR_INTERNAL, "the server has no store");
  if (send_proof(s, AUTH_SERVER))
    return s->result;
  s->state = ST_WAIT_OPEN_TABLES;
  return 0;
}

/* Whether |name| is reserved (spec LS-OPEN-4): SQLite's internal tables,
 * and every name whose table or schema part begins with "_lipsync". */
static bool is_reserved(const char *name) {
  if (strncasecmp(name, "sqlite_", 7) == 0)
    return true;
  for (const char *p = name; p; p = strchr(p, '.'), p = p ? p + 1 : NULL)
    if (strncasecmp(p, "_lipsync", 8) == 0)
      return true;
  return false;
}

static bool is_offered(const lipsync_session *s, const char *name) {
  if (s->offer_all) /* everything but the reserved names */
    return !is_reserved(name);
  if (fault_on("offer-unlisted")) /* fault injection: self-test */
    return true;
  for (size_t i = 0; i < s->noffered; i++)
    if (strcmp(s->offered[i], name) == 0)
      return true;
  return false;
}

/* Compares the client's columns |m| with ours; describes the first
 * difference in |msg|. Both lists are in canonical order. */
static bool schemas_match(const lipsync_table *t, const Lipsync__TableSchema *m,
                          char *msg, size_t len) {
  size_t i = 0, j = 0;
  while (i < t->ncolumns || j < m->n_columns) {
    int cmp = i == t->ncolumns ? 1
              : j == m->n_columns
                  ? -1
                  : strcmp(t->columns[i].name, m->columns[j]->name);
    if (cmp < 0) {
      snprintf(msg, len,
               "table %s: column %s (%s) exists on the server but not on "
               "the client",
               t->name, t->columns[i].name, t->columns[i].type);
      return false;
    }
    if (cmp > 0) {
      snprintf(msg, len,
               "table %s: column %s (%s) exists on the client but not on "
               "the server",
               t->name, m->columns[j]->name, m->columns[j]->type);
      return false;
    }
    if (strcmp(t->columns[i].type, m->columns[j]->type) != 0) {
      snprintf(msg, len,
               "table %s: column %s is %s on the server but %s on the "
               "client",
               t->name, t->columns[i].name, t->columns[i].type,
               m->columns[j]->type);
      return false;
    }
    i++, j++;
  }
  return true;
}

/* Checks the structure of OpenTables before touching the database. */
static int check_open_tables(lipsync_session *s, const Lipsync__OpenTables *m) {
  if (m->n_tables == 0)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL, "OpenTables names no table");
  if ((unsigned)m->policy > LIPSYNC_POLICY_CLIENT_WINS)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "OpenTables names conflict policy %d, which is not "
                        "defined",
                        (int)m->policy);
  for (size_t i = 0; i < m->n_tables; i++) {
    const Lipsync__TableSchema *ts = m->tables[i];
    lipsync_column *cols = calloc(ts->n_columns + 1, sizeof *cols);
    uint8_t fp[CANON_SCHEMA_FP_LEN];
    if (!cols)
      return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    bool uuid_column = false;
    for (size_t c = 0; c < ts->n_columns; c++) {
      cols[c].name = ts->columns[c]->name;
      cols[c].type = ts->columns[c]->type;
      uuid_column |= strcmp(cols[c].name, LIPSYNC_UUID_COLUMN) == 0;
    }
    canon_schema_fingerprint(cols, ts->n_columns, fp);
    bool sorted = true;
    for (size_t c = 1; c < ts->n_columns; c++)
      if (strcmp(cols[c - 1].name, cols[c].name) >= 0)
        sorted = false;
    free(cols);
    if (uuid_column)
      return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                          "table %s: %s is listed as a column", ts->name,
                          LIPSYNC_UUID_COLUMN);
    if (!sorted)
      return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                          "table %s: columns are not in canonical order",
                          ts->name);
    if (ts->fingerprint.len != CANON_SCHEMA_FP_LEN ||
        memcmp(ts->fingerprint.data, fp, CANON_SCHEMA_FP_LEN) != 0)
      return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                          "table %s: schema fingerprint does not match its "
                          "columns",
                          ts->name);
    for (size_t j = 0; j < i; j++)
      if (strcmp(m->tables[j]->name, ts->name) == 0)
        return session_fail(s, LIPSYNC_ERR_PROTOCOL, "table %s is named twice",
                            ts->name);
  }
  if (s->incremental && m->client_site.len != LIPSYNC_SITE_LEN)
    return session_fail(s, LIPSYNC_ERR_PROTOCOL,
                        "OpenTables: the client's site id is %zu bytes, not "
                        "%d",
                        m->client_site.len, LIPSYNC_SITE_LEN);
  return 0;
}

/* Whether the server takes the client's checkpoint of table |i| (spec
 * LS-INC-8): its own site, the token it keeps for that client and table, a
 * position of its own, and a session that is not stale. Any doubt leaves
 * the table to ranges. */
static int accept_checkpoint(lipsync_session *s, size_t i,
                             const Lipsync__Checkpoint *ck) {
  sync_table *t = &s->tables[i];
  uint8_t token[LIPSYNC_SITE_LEN];
  lipsync_cursor *c = NULL;
  int found, rc;
  if ((rc = store_load_token(s->store, t->handle, s->peer_site, token,
                             &found)) != 0)
    return session_fail(s, rc, "%s", store_errmsg(s->store));
  t->token_ok = found != 0;
  memcpy(t->token, token, LIPSYNC_SITE_LEN);
  if (!ck || !found || ck->server_site.len != LIPSYNC_SITE_LEN ||
      memcmp(ck->server_site.data, s->site, LIPSYNC_SITE_LEN) != 0 ||
      ck->token.len != LIPSYNC_SITE_LEN ||
      memcmp(ck->token.data, token, LIPSYNC_SITE_LEN) != 0 ||
      ck->server_position.len > LIPSYNC_POSITION_MAX || t->ctx.stale) {
    t->token_ok = false;
    return 0;
  }
  t->since.len = ck->server_position.len;
  if (t->since.len) /* an empty bytes field may come as NULL */
    memcpy(t->since.data, ck->server_position.data, t->since.len);
  /* A position this database cannot read (it was restored, or it is a
   * copy's) is refused, not an error. */
  rc = store_scan_changes(s->store, t->handle, &t->since, &c);
  store_close_cursor(s->store, c);
  if (rc == LIPSYNC_ERR_NOT_FOUND) {
    t->token_ok = false;
    return 0;
  }
  if (rc)
    return session_fail(s, rc, "%s", store_errmsg(s->store));
  t->incremental = true;
  return 0;
}

static int on_open_tables(lipsync_session *s, const Lipsync__OpenTables *m) {
  char msg[400];
  if (check_open_tables(s, m))
    return s->result;
  for (size_t i = 0; i < m->n_tables; i++)
    if (!is_offered(s, m->tables[i]->name))
      return session_fail(s, LIPSYNC_ERR_TABLE_NOT_OFFERED,
                          "table %s is not offered by this server",
                          m->tables[i]->name);
  const char **names = calloc(m->n_tables, sizeof *names);
  if (!names)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < m->n_tables; i++)
    names[i] = m->tables[i]->name;
  int rc = add_tables(s, names, m->n_tables);
  free(names);
  if (rc)
    return session_fail(s, rc, "out of memory");

  if (open_local_tables(s))
    return s->result;
  for (size_t i = 0; i < s->ntables; i++)
    if (!schemas_match(s->tables[i].handle, m->tables[i], msg, sizeof msg))
      return session_fail(s, LIPSYNC_ERR_SCHEMA_MISMATCH, "%s", msg);
  if (prepare_tables(s))
    return s->result;
  s->policy = (lipsync_policy)m->policy;
  s->horizon = hlc_horizon(hlc_wall_ms(), s->retention_ms);
  if (s->incremental)
    memcpy(s->peer_site, m->client_site.data, LIPSYNC_SITE_LEN);
  /* A last sync with another server says nothing of this one's horizon
   * (spec LS-INC-25): not stale. */
  for (size_t i = 0; i < s->ntables; i++) {
    const Lipsync__Checkpoint *ck = m->tables[i]->checkpoint;
    bool other = s->incremental && ck &&
                 (ck->server_site.len != LIPSYNC_SITE_LEN ||
                  memcmp(ck->server_site.data, s->site, LIPSYNC_SITE_LEN));
    s->tables[i].last_sync = other ? 0 : m->tables[i]->last_sync;
  }
  if (recon_prepare(s))
    return s->result;
  uint32_t *incremental = calloc(s->ntables + 1, sizeof *incremental);
  size_t nincremental = 0;
  if (!incremental)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  for (size_t i = 0; s->incremental && i < s->ntables; i++) {
    if (accept_checkpoint(s, i, m->tables[i]->checkpoint)) {
      free(incremental);
      return s->result;
    }
    if (s->tables[i].incremental)
      incremental[nincremental++] = (uint32_t)i;
  }
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__TablesOpened to = LIPSYNC__TABLES_OPENED__INIT;
  to.horizon = s->horizon;
  to.clock = s->server_clock;
  if (s->incremental) {
    to.server_site.data = s->site;
    to.server_site.len = LIPSYNC_SITE_LEN;
    to.n_incremental = nincremental;
    to.incremental = incremental;
  }
  f.body_case = LIPSYNC__FRAME__BODY_TABLES_OPENED;
  f.tables_opened = &to;
  rc = session_emit(s, &f, NULL);
  free(incremental);
  if (rc)
    return s->result;
  s->state = ST_PEER_TURN;
  s->peer_turn_requests = false;
  return 0;
}

/* ------------------------------------------------------------------ */
/* verify and commit (spec 10)                                          */
/* ------------------------------------------------------------------ */

/* The table's final item set (spec LS-VERIFY-5): the snapshot's, from the
 * store's kept summary, with every row applied. A backend stores each
 * value exactly or refuses it (lipsync_store_methods insert), so this is
 * the table as it now stands, without reading it back. */
static void final_state(sync_table *t) {
  canon_fp fp = t->view.final;
  canon_fp_merge(&fp, &t->final_add);
  canon_fp_unmerge(&fp, &t->final_sub);
  t->final_count = fp.count;
  canon_fp_final(&fp, t->final_fp);
}

int session_send_verify(lipsync_session *s) {
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__Verify m = LIPSYNC__VERIFY__INIT;
  Lipsync__TableState *states = calloc(s->ntables, sizeof *states);
  Lipsync__TableState **ptrs = calloc(s->ntables, sizeof *ptrs);
  int rc = 0;
  if (!states || !ptrs) {
    rc = session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    goto out;
  }
  /* Everything received must be in the transaction, checked, before this
   * side vouches for it: once both Verify agree, the server commits. */
  if (recon_apply_deferred(s)) {
    rc = s->result;
    goto out;
  }
  if ((rc = store_flush(s->store)) != 0) {
    rc = session_fail(s, rc, "%s", store_errmsg(s->store));
    goto out;
  }
  for (size_t i = 0; i < s->ntables; i++) {
    sync_table *t = &s->tables[i];
    final_state(t);
    lipsync__table_state__init(&states[i]);
    states[i].count = t->final_count;
    states[i].fingerprint.data = t->final_fp;
    states[i].fingerprint.len = LIPSYNC_DIGEST_LEN;
    states[i].conflicts = t->conflicts;
    ptrs[i] = &states[i];
  }
  m.n_tables = s->ntables;
  m.tables = ptrs;
  f.body_case = LIPSYNC__FRAME__BODY_VERIFY;
  f.verify = &m;
  rc = session_emit(s, &f, NULL);
  s->verify_sent = true;
  s->state = ST_WAIT_VERIFY;
out:
  free(states);
  free(ptrs);
  return rc;
}

/* The bookkeeping of a successful sync, in the transaction that commits
 * (spec 10.2): clocks observed, old tombstones purged, and the client's
 * bases, last_sync and checkpoint (|checkpoints|, one per table, from
 * Committed) or the server's tokens (|tokens|, NULL entries to keep the
 * one it holds). */
static int finish_tables(lipsync_session *s,
                         const lipsync_checkpoint *checkpoints,
                         uint8_t (*tokens)[LIPSYNC_SITE_LEN],
                         const bool *new_token) {
  for (size_t i = 0; i < s->ntables; i++) {
    sync_table *t = &s->tables[i];
    lipsync_checkpoint ck;
    lipsync_finish fin = {.max_clock = t->max_clock,
                          .horizon = s->horizon,
                          .as_client = !s->is_server,
                          .server_clock = s->server_clock};
    int rc = 0;
    if (!s->is_server) {
      ck = checkpoints ? checkpoints[i] : (lipsync_checkpoint){0};
      rc = store_position(s->store, t->handle, &ck.client_position);
      fin.checkpoint = &ck;
    } else if (s->incremental && new_token[i]) {
      fin.client_site = s->peer_site;
      fin.new_token = tokens[i];
    }
    if (rc || (rc = store_finish_table(s->store, t->handle, &fin)) != 0)
      return session_fail(s, rc, "%s", store_errmsg(s->store));
  }
  return 0;
}

/* The outcome of spec LS-COMMIT-1 from my Verify and the peer's |peer|
 * (NULL: not known, so from my conflicts alone): 0, or the code with its
 * message in |msg|. */
static int judge(const lipsync_session *s, const Lipsync__Verify *peer,
                 char *msg, size_t len) {
  size_t off = 0;
  if (peer && peer->n_tables != s->ntables) {
    snprintf(msg, len, "Verify describes %zu tables, the session has %zu",
             peer->n_tables, s->ntables);
    return LIPSYNC_ERR_PROTOCOL;
  }
  for (size_t i = 0; peer && i < s->ntables; i++)
    if (peer->tables[i]->fingerprint.len != LIPSYNC_DIGEST_LEN) {
      snprintf(msg, len,
               "Verify: the fingerprint of table %s is %zu bytes, not %d",
               s->tables[i].name, peer->tables[i]->fingerprint.len,
               LIPSYNC_DIGEST_LEN);
      return LIPSYNC_ERR_PROTOCOL;
    }
  msg[0] = '\0';
  for (size_t i = 0; i < s->ntables; i++) {
    uint64_t n =
        s->tables[i].conflicts + (peer ? peer->tables[i]->conflicts : 0);
    if (n && off < len)
      off += (size_t)snprintf(msg + off, len - off,
                              "%stable %s: %llu rows differ between client "
                              "and server (same _lipsync_uuid, different "
                              "contents)",
                              off ? "; " : "", s->tables[i].name,
                              (unsigned long long)n);
  }
  if (off)
    return LIPSYNC_ERR_CONFLICT;
  if (!peer || fault_on("ignore-verify")) /* fault: conformance self-test */
    return 0;
  for (size_t i = 0; i < s->ntables; i++) {
    const Lipsync__TableState *p = peer->tables[i];
    const sync_table *t = &s->tables[i];
    if (p->count != t->final_count ||
        memcmp(p->fingerprint.data, t->final_fp, LIPSYNC_DIGEST_LEN) != 0) {
      snprintf(msg, len,
               "table %s: final states differ (%llu rows here, %llu on the "
               "peer)",
               t->name, (unsigned long long)t->final_count,
               (unsigned long long)p->count);
      return LIPSYNC_ERR_VERIFY_FAILED;
    }
  }
  return 0;
}

/* Both Verify frames are known: decide, identically on both sides. */
static int decide_outcome(lipsync_session *s, const Lipsync__Verify *peer) {
  char msg[400];
  int code = judge(s, peer, msg, sizeof msg);
  return code ? session_fail(s, code, "%s", msg) : 0;
}

/* A client's dry run (spec LS-DRY-1) ends where it would send its Verify,
 * the peer's |peer| known or not (NULL): everything received applied,
 * so that the store has checked it, then Error CANCELLED instead, and a
 * rollback. The session has succeeded as a preview. */
static int end_dry_run(lipsync_session *s, const Lipsync__Verify *peer) {
  int rc = recon_apply_deferred(s);
  if (!rc && (rc = store_flush(s->store)) != 0)
    rc = session_fail(s, rc, "%s", store_errmsg(s->store));
  if (rc)
    return s->result;
  for (size_t i = 0; i < s->ntables; i++)
    final_state(&s->tables[i]);
  s->dry_run_outcome = judge(s, peer, s->errmsg, sizeof s->errmsg);
  end_transaction(s, false, &rc);
  queue_error(s, LIPSYNC_ERR_CANCELLED, "dry run: nothing is committed");
  s->state = ST_DONE;
  return 0;
}

static int commit(lipsync_session *s) {
  int rc = 0;
  end_transaction(s, true, &rc);
  if (rc) {
    /* The commit's reason, before the rollback can replace it. */
    char why[256];
    snprintf(why, sizeof why, "%s", store_errmsg(s->store));
    /* The transaction is gone either way; make sure nothing is left. */
    store_rollback(s->store);
    return session_fail(s, rc, "%s", why);
  }
  s->state = ST_DONE;
  return 0;
}

/* The server, on success: finishes, commits, and sends Committed with a
 * checkpoint per table (spec LS-INC-4): a new token where it wrote to the
 * table or took no checkpoint of the client's (LS-INC-5), else the one the
 * client presented; its position. */
static int commit_server(lipsync_session *s) {
  size_t n = s->ntables;
  lipsync_position *pos = calloc(n + 1, sizeof *pos);
  uint8_t(*tokens)[LIPSYNC_SITE_LEN] = calloc(n + 1, LIPSYNC_SITE_LEN);
  bool *fresh = calloc(n + 1, sizeof *fresh);
  Lipsync__Checkpoint *cks = calloc(n + 1, sizeof *cks);
  Lipsync__Checkpoint **ptrs = calloc(n + 1, sizeof *ptrs);
  int rc = 0;
  if (!pos || !tokens || !fresh || !cks || !ptrs) {
    rc = session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; s->incremental && i < n && !rc; i++) {
    sync_table *t = &s->tables[i];
    fresh[i] = t->wrote || !t->incremental;
    if (fresh[i] && auth_nonce_bytes(tokens[i], LIPSYNC_SITE_LEN))
      rc = session_fail(s, LIPSYNC_ERR_INTERNAL, "random generator failed");
    else if (!fresh[i])
      memcpy(tokens[i], t->token, LIPSYNC_SITE_LEN);
    if (!rc && (rc = store_position(s->store, t->handle, &pos[i])) != 0)
      rc = session_fail(s, rc, "%s", store_errmsg(s->store));
    lipsync__checkpoint__init(&cks[i]);
    cks[i].server_site.data = s->site;
    cks[i].server_site.len = LIPSYNC_SITE_LEN;
    cks[i].token.data = tokens[i];
    cks[i].token.len = LIPSYNC_SITE_LEN;
    cks[i].server_position.data = pos[i].data;
    cks[i].server_position.len = pos[i].len;
    ptrs[i] = &cks[i];
  }
  if (rc || finish_tables(s, NULL, tokens, fresh) || commit(s)) {
    rc = s->result;
    goto out;
  }
  Lipsync__Frame f = LIPSYNC__FRAME__INIT;
  Lipsync__Committed c = LIPSYNC__COMMITTED__INIT;
  if (s->incremental) {
    c.n_checkpoints = n;
    c.checkpoints = ptrs;
  }
  f.body_case = LIPSYNC__FRAME__BODY_COMMITTED;
  f.committed = &c;
  /* Committed, yet a failure now still reaches both sides: the client
   * rolls back, and reconciles what it misses at its next sync (10.3). */
  rc = session_emit(s, &f, NULL);
out:
  free(pos);
  free(tokens);
  free(fresh);
  free(cks);
  free(ptrs);
  return rc;
}

static int on_verify(lipsync_session *s, const Lipsync__Verify *m) {
  if (s->dry_run && !s->is_server)
    return end_dry_run(s, m);
  if (!s->verify_sent && session_send_verify(s))
    return s->result;
  if (decide_outcome(s, m))
    return s->result;
  if (!s->is_server && fault_on("commit-early")) { /* fault: self-test */
    lipsync_checkpoint *none = calloc(s->ntables + 1, sizeof *none);
    int rc = !none || finish_tables(s, none, NULL, NULL) || commit(s);
    free(none);
    return rc ? s->result : 0;
  }
  if (!s->is_server) {
    s->state = ST_WAIT_COMMITTED;
    return 0;
  }
  return commit_server(s);
}

/* The client, on Committed: keeps the checkpoints it carries (spec
 * LS-INC-3, LS-INC-6; a malformed one is no checkpoint), finishes and
 * commits. */
static int on_committed(lipsync_session *s, const Lipsync__Committed *m) {
  lipsync_checkpoint *cks = calloc(s->ntables + 1, sizeof *cks);
  if (!cks)
    return session_fail(s, LIPSYNC_ERR_NOMEM, "out of memory");
  for (size_t i = 0;
       s->incremental && m->n_checkpoints == s->ntables && i < s->ntables;
       i++) {
    const Lipsync__Checkpoint *ck = m->checkpoints[i];
    if (ck->server_site.len != LIPSYNC_SITE_LEN ||
        ck->token.len != LIPSYNC_SITE_LEN ||
        ck->server_position.len > LIPSYNC_POSITION_MAX)
      continue;
    cks[i].has = 1;
    memcpy(cks[i].server_site, ck->server_site.data, LIPSYNC_SITE_LEN);
    memcpy(cks[i].token, ck->token.data, LIPSYNC_SITE_LEN);
    cks[i].server_position.len = ck->server_position.len;
    if (ck->server_position.len) /* an empty field may come as NULL */
      memcpy(cks[i].server_position.data, ck->server_position.data,
             ck->server_position.len);
  }
  int rc = finish_tables(s, cks, NULL, NULL) || commit(s) ? s->result : 0;
  free(cks);
  return rc;
}

/* ------------------------------------------------------------------ */
/* dispatch                                                             */
/* ------------------------------------------------------------------ */

static int on_peer_error(lipsync_session *s, const Lipsync__Error *m) {
  int code = m->code >= 1 && m->code <= -WIRE_CODE_LAST ? -(int)m->code
                                                        : LIPSYNC_ERR_INTERNAL;
  const char *text = m->message ? m->message : "";
  int rc = 0;
  end_transaction(s, false, &rc);
  s->result = code;
  s->remote_error = true;
  s->state = ST_FAILED;
  if (code == LIPSYNC_ERR_VERSION_MISMATCH && m->max_version)
    snprintf(s->errmsg, sizeof s->errmsg,
             "peer: %s (peer speaks %u..%u, we speak %u..%u)", text,
             m->min_version, m->max_version, s->min_version, s->max_version);
  else
    snprintf(s->errmsg, sizeof s->errmsg, "peer: %s", text);
  distrust_after(s, code);
  return code;
}

static int unexpected(lipsync_session *s, const Lipsync__Frame *f) {
  return session_fail(s, LIPSYNC_ERR_UNEXPECTED_MESSAGE, "unexpected %s frame",
                      frame_body_name(f->body_case));
}

static int dispatch(lipsync_session *s, const Lipsync__Frame *f) {
  Lipsync__Frame__BodyCase b = f->body_case;
  if (b == LIPSYNC__FRAME__BODY_ERROR)
    return on_peer_error(s, f->error);
  switch (s->state) {
  case ST_WAIT_CLIENT_HELLO:
    if (b == LIPSYNC__FRAME__BODY_CLIENT_HELLO)
      return on_client_hello(s, f->client_hello);
    break;
  case ST_WAIT_SERVER_HELLO:
    if (b == LIPSYNC__FRAME__BODY_SERVER_HELLO)
      return on_server_hello(s, f->server_hello);
    break;
  case ST_WAIT_CLIENT_AUTH:
    if (b == LIPSYNC__FRAME__BODY_CLIENT_AUTH)
      return on_client_auth(s, f->client_auth);
    break;
  case ST_WAIT_SERVER_AUTH:
    if (b == LIPSYNC__FRAME__BODY_SERVER_AUTH)
      return on_server_auth(s, f->server_auth);
    break;
  case ST_WAIT_OPEN_TABLES:
    if (b == LIPSYNC__FRAME__BODY_OPEN_TABLES)
      return on_open_tables(s, f->open_tables);
    break;
  case ST_WAIT_TABLES_OPENED:
    if (b == LIPSYNC__FRAME__BODY_TABLES_OPENED)
      return on_tables_opened(s, f->tables_opened);
    break;
  case ST_PEER_TURN:
    if (b == LIPSYNC__FRAME__BODY_RANGES)
      return recon_on_ranges(s, f->ranges);
    if (b == LIPSYNC__FRAME__BODY_ROWS)
      return recon_on_rows(s, f->rows);
    if (b == LIPSYNC__FRAME__BODY_NEED)
      return recon_on_need(s, f->need);
    if (b == LIPSYNC__FRAME__BODY_CHANGES && s->incremental)
      return recon_on_changes(s, f->changes);
    if (b == LIPSYNC__FRAME__BODY_END_TURN) {
      /* The client's first turn is never quiet (spec LS-INC-11). */
      bool quiet =
          !s->peer_turn_requests && !(s->is_server && s->turns_received == 0);
      s->turns_received++;
      if (quiet && s->dry_run && !s->is_server)
        return end_dry_run(s, NULL);
      if (quiet)
        return session_send_verify(s); /* a quiet turn ends the talk */
      s->state = ST_MY_TURN;
      memset(&s->gen, 0, sizeof s->gen);
      return 0;
    }
    break;
  case ST_WAIT_VERIFY:
    if (b == LIPSYNC__FRAME__BODY_VERIFY)
      return on_verify(s, f->verify);
    break;
  case ST_WAIT_COMMITTED:
    if (b == LIPSYNC__FRAME__BODY_COMMITTED)
      return on_committed(s, f->committed);
    break;
  default:
    break;
  }
  return unexpected(s, f);
}

/* ------------------------------------------------------------------ */
/* public I/O                                                           */
/* ------------------------------------------------------------------ */

static size_t bytes_of_set(const uuid_set *u) {
  return u->cap * (LIPSYNC_UUID_LEN + 1);
}

size_t session_memory(const lipsync_session *s, bool with_arena) {
  size_t n = s->reader.payload.cap + s->out.cap + s->send_arena.bytes +
             s->client_hello.cap + s->server_hello.cap +
             (with_arena ? s->recv_arena.bytes : 0);
  for (size_t i = 0; i < s->ntables; i++) {
    const sync_table *t = &s->tables[i];
    n += t->cap_ranges * sizeof *t->ranges + t->cap_needs * sizeof *t->needs +
         t->cap_pushes * sizeof *t->pushes +
         t->cap_implicit * sizeof *t->implicit + t->held_tombstones.cap +
         t->held_rows.cap + bytes_of_set(&t->applied) + bytes_of_set(&t->sent) +
         bytes_of_set(&t->peer_changes) +
         t->cap_sent_ranges * sizeof *t->sent_ranges;
  }
  return n;
}

size_t lipsync_session_memory(const lipsync_session *s) {
  return session_memory(s, true);
}

int lipsync_session_set_memory_limit(lipsync_session *s, size_t bytes) {
  s->mem_limit = bytes;
  return 0;
}

#define MIB(n) ((double)(n) / (1024.0 * 1024.0))

/* Fails the session if it buffers more than its limit (spec LS-SEC-4). */
static int check_memory(lipsync_session *s) {
  size_t n = s->mem_limit ? session_memory(s, true) : 0;
  if (n <= s->mem_limit)
    return 0;
  return session_fail(s, LIPSYNC_ERR_RESOURCE_LIMIT,
                      "the session would buffer %.1f MiB for its peer, above "
                      "its memory limit of %.1f MiB",
                      MIB(n), MIB(s->mem_limit));
}

static int handle_frame(lipsync_session *s) {
  fault_point("recv");
  s->frame_size = frame_reader_size(&s->reader);
  s->bytes_received += s->frame_size;
  /* The decoded frame gets what the limit leaves (at least one byte, so
   * that 0 does not mean "no bound"). */
  if (s->mem_limit) {
    size_t rest = session_memory(s, false);
    s->recv_arena.limit = rest < s->mem_limit ? s->mem_limit - rest : 1;
  }
  Lipsync__Frame *f = frame_reader_decode(&s->reader, &s->recv_arena);
  int rc;
  if (!f && s->recv_arena.over_limit)
    rc = session_fail(s, LIPSYNC_ERR_RESOURCE_LIMIT,
                      "a received frame of %zu bytes decodes into more than "
                      "the %.1f MiB the session's memory limit of %.1f MiB "
                      "leaves",
                      s->frame_size, MIB(s->recv_arena.limit),
                      MIB(s->mem_limit));
  else if (!f)
    rc = session_fail(
        s, s->recv_arena.failed ? LIPSYNC_ERR_NOMEM : LIPSYNC_ERR_PROTOCOL,
        "received a frame that does not decode as a Frame "
        "message (%zu bytes)",
        frame_reader_size(&s->reader));
  else if (f->body_case == LIPSYNC__FRAME__BODY__NOT_SET)
    rc = session_fail(s, LIPSYNC_ERR_UNEXPECTED_MESSAGE,
                      "received a frame with no body this version knows");
  else
    rc = dispatch(s, f);
  if (rc == 0 && !is_terminal(s))
    rc = check_memory(s);
  frame_reader_reset(&s->reader);
  arena_reset(&s->recv_arena);
  return rc;
}

ssize_t lipsync_session_recv(lipsync_session *s, const uint8_t *data,
                             size_t len) {
  size_t off = 0;
  while (off < len) {
    if (is_terminal(s))
      return s->result ? s->result : (ssize_t)len; /* late bytes ignored */
    int complete;
    ssize_t n = frame_reader_feed(&s->reader, data + off, len - off, &complete);
    if (n < 0)
      return session_fail(s, (int)n,
                          n == LIPSYNC_ERR_FRAME_TOO_LARGE
                              ? "frame length %u exceeds the maximum of %u"
                              : "cannot buffer a frame of %u bytes (max %u)",
                          s->reader.length, LIPSYNC_MAX_FRAME);
    off += (size_t)n;
    if (complete && handle_frame(s) < 0)
      return s->result;
  }
  return is_terminal(s) && s->result ? s->result : (ssize_t)len;
}

void lipsync_session_recv_eof(lipsync_session *s) {
  if (is_terminal(s))
    return;
  if (frame_reader_partial(&s->reader))
    session_fail(s, LIPSYNC_ERR_PROTOCOL,
                 "the peer closed the connection in the middle of a frame");
  else if (s->state == ST_WAIT_COMMITTED)
    session_fail(s, LIPSYNC_ERR_CLOSED,
                 "the connection closed before the server confirmed its "
                 "commit; nothing was changed here");
  else
    session_fail(s, LIPSYNC_ERR_CLOSED,
                 "the peer closed the connection before the sync finished");
}

ssize_t lipsync_session_send(lipsync_session *s, const uint8_t **data) {
  bytebuf_consume(&s->out, s->out_handed);
  s->out_handed = 0;
  if (s->state == ST_WAIT_SERVER_HELLO && !s->client_hello.len &&
      send_client_hello(s))
    session_fail(s, LIPSYNC_ERR_INTERNAL, "cannot build ClientHello");
  if (s->state == ST_MY_TURN)
    recon_produce(s);
  if (!s->out.len)
    return 0;
  *data = s->out.data;
  s->out_handed = s->out.len;
  s->bytes_sent += s->out.len;
  return (ssize_t)s->out.len;
}

int lipsync_session_want_read(lipsync_session *s) {
  return !is_terminal(s);
}

int lipsync_session_want_write(lipsync_session *s) {
  return s->out.len > s->out_handed || s->state == ST_MY_TURN ||
         (s->state == ST_WAIT_SERVER_HELLO && !s->client_hello.len);
}

int lipsync_session_is_done(lipsync_session *s) {
  return is_terminal(s) && s->out.len <= s->out_handed;
}

void lipsync_session_abort(lipsync_session *s, int code, const char *message) {
  session_fail(s, code, "%s", message ? message : lipsync_strerror(code));
}

int lipsync_session_result(lipsync_session *s) {
  return s->result;
}

int lipsync_session_error_is_remote(lipsync_session *s) {
  return s->remote_error;
}

const char *lipsync_session_errmsg(lipsync_session *s) {
  if (s->errmsg[0])
    return s->errmsg;
  return s->state == ST_DONE ? "success" : lipsync_strerror(s->result);
}

size_t lipsync_session_table_count(lipsync_session *s) {
  return s->ntables;
}

int lipsync_session_table_stats(lipsync_session *s, size_t index,
                                lipsync_table_stats *out) {
  if (index >= s->ntables)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  const sync_table *t = &s->tables[index];
  out->name = t->name;
  out->remote = t->remote ? t->remote : t->name;
  out->rows_sent = t->rows_sent;
  out->rows_received = t->rows_received;
  out->deletes_sent = t->deletes_sent;
  out->deletes_received = t->deletes_received;
  out->changed_both_kept = t->changed_both_kept;
  out->changed_both_taken = t->changed_both_taken;
  out->conflicts = t->conflicts;
  out->bytes_sent = t->bytes_sent;
  out->bytes_received = t->bytes_received;
  return 0;
}

void lipsync_session_bytes(lipsync_session *s, uint64_t *sent,
                           uint64_t *received) {
  if (sent)
    *sent = s->bytes_sent;
  if (received)
    *received = s->bytes_received;
}

void lipsync_session_set_progress(lipsync_session *s, lipsync_progress_cb cb,
                                  void *user) {
  s->progress = cb;
  s->progress_user = user;
}

int lipsync_session_set_versions(lipsync_session *s, uint32_t min,
                                 uint32_t max) {
  if (min == 0 || min > max)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  s->min_version = min;
  s->max_version = max;
  return 0;
}

int lipsync_session_set_policy(lipsync_session *s, lipsync_policy policy) {
  if (s->is_server || (unsigned)policy > LIPSYNC_POLICY_CLIENT_WINS)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  s->policy = policy;
  return 0;
}

static const char *const policy_names[] = {"lww", "server-wins", "client-wins"};

const char *lipsync_policy_name(lipsync_policy policy) {
  return (unsigned)policy <= LIPSYNC_POLICY_CLIENT_WINS ? policy_names[policy]
                                                        : "unknown";
}

int lipsync_policy_parse(const char *text, lipsync_policy *out) {
  for (int i = 0; i < 3; i++)
    if (strcmp(text, policy_names[i]) == 0) {
      *out = (lipsync_policy)i;
      return 0;
    }
  return LIPSYNC_ERR_INVALID_ARGUMENT;
}

int lipsync_session_set_tombstone_retention(lipsync_session *s, uint64_t ms) {
  if (!s->is_server)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  s->retention_ms = ms;
  return 0;
}

void lipsync_session_set_split_threshold(lipsync_session *s, size_t n) {
  s->split_threshold = n;
}

int lipsync_session_set_incremental(lipsync_session *s, int on) {
  s->incremental_enabled = on != 0;
  return 0;
}

int lipsync_session_set_full(lipsync_session *s) {
  if (s->is_server || s->prepared) /* too late to recount */
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  s->force_full = true;
  return 0;
}

int lipsync_session_map_table(lipsync_session *s, const char *local,
                              const char *remote) {
  sync_table *t = NULL;
  if (!s || s->is_server || !local || !remote || !remote[0] ||
      s->client_hello.len)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  for (size_t i = 0; i < s->ntables; i++)
    if (strcmp(s->tables[i].name, local) == 0)
      t = &s->tables[i];
  if (!t)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  char *copy = strdup(remote);
  if (!copy)
    return LIPSYNC_ERR_NOMEM;
  free(t->remote);
  t->remote = copy;
  return 0;
}

int lipsync_session_set_dry_run(lipsync_session *s, int on) {
  if (!s || s->is_server || s->client_hello.len)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  s->dry_run = on != 0;
  return 0;
}

int lipsync_session_dry_run_outcome(lipsync_session *s) {
  return s->dry_run_outcome;
}

int lipsync_session_set_channel_binding(lipsync_session *s,
                                        const uint8_t *binding, size_t len) {
  if (!s || !binding || len != LIPSYNC_TLS_BINDING_LEN)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  /* Too late once the hello that would offer it is out. */
  if ((s->state != ST_WAIT_SERVER_HELLO && s->state != ST_WAIT_CLIENT_HELLO) ||
      s->client_hello.len)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  memcpy(s->binding, binding, len);
  s->has_binding = true;
  return 0;
}

int lipsync_session_set_store_opener(lipsync_session *s,
                                     lipsync_store_opener open, void *user) {
  if (!s || !open || !s->is_server || s->state != ST_WAIT_CLIENT_HELLO)
    return LIPSYNC_ERR_INVALID_ARGUMENT;
  s->opener = open;
  s->opener_user = user;
  return 0;
}

int lipsync_session_channel_bound(lipsync_session *s) {
  return s && s->bound;
}

int lipsync_session_table_incremental(lipsync_session *s, size_t index) {
  return index < s->ntables && s->tables[index].incremental;
}
