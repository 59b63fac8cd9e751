/*
 * session_int.h: the session's state, shared by session.c (handshake,
 * table open, verify and commit) and reconcile.c (turns: ranges, rows and
 * needs). Nothing here does I/O: frames arrive through
 * lipsync_session_recv() and leave through lipsync_session_send().
 */
#ifndef LIPSYNC_SESSION_INT_H
#define LIPSYNC_SESSION_INT_H

#include "auth.h"
#include "buf.h"
#include "canon.h"
#include "decide.h"
#include "frame.h"
#include "items.h"
#include "uuidset.h"

#include <stdbool.h>

typedef enum session_state {
  ST_WAIT_SERVER_HELLO,  /* client, ClientHello sent */
  ST_WAIT_SERVER_AUTH,   /* client, client_auth sent */
  ST_WAIT_TABLES_OPENED, /* client, OpenTables sent */
  ST_WAIT_CLIENT_HELLO,  /* server */
  ST_WAIT_CLIENT_AUTH,   /* server, ServerHello sent */
  ST_WAIT_OPEN_TABLES,   /* server, server_auth sent */
  ST_MY_TURN,            /* producing a turn, lazily, in send() */
  ST_PEER_TURN,          /* receiving the peer's turn */
  ST_WAIT_VERIFY,        /* reconciliation over; the peer's Verify is due */
  ST_WAIT_COMMITTED,     /* client: both Verify agree; Committed is due */
  ST_DONE,
  ST_FAILED
} session_state;

/* A range to describe to the peer in my next turn. */
typedef enum pending_kind {
  PENDING_FINGERPRINT, /* one Fingerprint over [lower, upper) */
  PENDING_SPLIT,       /* Fingerprints of buckets of [lower, upper) */
  PENDING_ITEMS        /* ItemList(s) of [lower, upper) */
} pending_kind;

typedef struct pending_range {
  uint8_t lower[LIPSYNC_UUID_LEN], upper[LIPSYNC_UUID_LEN];
  bool has_lower, has_upper;
  pending_kind kind;
  uint64_t count; /* my visible items in it (PENDING_SPLIT) */
} pending_range;

/* Something of mine to send the peer: every visible item of a range, or
 * one item, whose state the decision read (a tombstone is sent from it; a
 * live row is read again with the item the store holds for it). */
typedef struct push {
  bool range;
  bool has_lower, has_upper; /* range */
  uint8_t lower[LIPSYNC_UUID_LEN], upper[LIPSYNC_UUID_LEN];
  lipsync_item item; /* one item */
} push;

typedef struct sync_table {
  char *name;
  char *remote; /* client: the server's name for it (NULL: |name|) */
  lipsync_table *handle;
  item_view view; /* my items, through the store */

  pending_range *ranges; /* for my next turn */
  size_t nranges, cap_ranges;
  uint8_t (*needs)[LIPSYNC_UUID_LEN]; /* rows to ask the peer for */
  size_t nneeds, cap_needs;
  push *pushes; /* rows and tombstones to send the peer */
  size_t npushes, cap_pushes;
  uint8_t (*implicit)[LIPSYNC_UUID_LEN]; /* server: T0 tombstones to send */
  size_t nimplicit, cap_implicit;

  /* Received rows wait here, tombstones and live rows apart, each with
   * what it replaces, until the peer's last turn (spec LS-APPLY-4): then
   * the tombstones go first, and a session that applies nothing never
   * writes. A table empty when the session began has nothing to delete:
   * its rows go in as they come. */
  bytebuf held_tombstones, held_rows;
  uuid_set applied; /* UUIDs of the rows received */
  uuid_set sent;    /* UUIDs of the rows queued one by one to send */
  /* The bounds of the ranges whose rows were queued whole (spec
   * LS-NEED-4): a Need must not ask for one of their rows again. */
  struct sent_range {
    uint8_t lower[LIPSYNC_UUID_LEN], upper[LIPSYNC_UUID_LEN];
    bool has_lower, has_upper;
  } * sent_ranges;
  size_t nsent_ranges, cap_sent_ranges;
  bool sent_ranges_sorted;
  bool empty; /* no item when the session began */
  bool wrote; /* this side applied a row */

  /* Feature "incremental" (spec 8.8). */
  bool incremental;
  lipsync_checkpoint checkpoint; /* client: the one it holds */
  bool presented;                /* client: it sent it */
  lipsync_position since;        /* my changes since this position */
  uuid_set peer_changes;         /* server: the UUIDs the client listed */
  uint8_t last_change[LIPSYNC_UUID_LEN]; /* the last UUID of the peer's */
  bool token_ok;                   /* server: the client's token is mine */
  uint8_t token[LIPSYNC_SITE_LEN]; /* server: that token */

  decide_ctx ctx;     /* policy, horizon and staleness of this table */
  uint64_t last_sync; /* the client's, from its store or OpenTables */
  uint64_t max_clock; /* highest clock received */
  canon_fp final_add, final_sub; /* the final item set's changes */
  uint64_t conflicts;            /* found by me, in item lists the peer sent */
  uint64_t rows_sent, rows_received, bytes_sent, bytes_received;
  uint64_t deletes_sent, deletes_received; /* tombstones among the rows */
  uint64_t changed_both_kept, changed_both_taken; /* see lipsync.h */
  uint64_t final_count;
  uint8_t final_fp[LIPSYNC_DIGEST_LEN];
} sync_table;

/* Where the lazy producer of my turn stands. */
typedef struct turn_producer {
  size_t table;
  int stage; /* 0 ranges or changes, 1 needs, 2 tombstones, 3 rows, per
                table; then EndTurn */
  size_t pos;
  bool sub_active;
  item_cursor items; /* open over the range or changes being listed */
  lipsync_item peek; /* an item read ahead from |items| */
  bool has_peek;
  uint8_t bound[LIPSYNC_UUID_LEN]; /* where the next item list begins */
  bool has_bound;
  lipsync_cursor *cursor; /* open over rows being pushed */
  size_t cursor_end;      /* gen.pos once |cursor| is exhausted */
  bool sent_requests;     /* the turn so far holds Ranges, Need, Changes */
} turn_producer;

struct lipsync_session {
  bool is_server;
  session_state state;
  lipsync_store *store;
  uint8_t *secret;
  size_t secret_len;
  uint32_t min_version, max_version, version;

  /* server: which tables it offers */
  char **offered;
  size_t noffered;
  bool offer_all;

  /* handshake */
  uint8_t nonce[LIPSYNC_NONCE_LEN];
  bytebuf client_hello, server_hello; /* frames as sent, for the transcript */
  uint8_t transcript[AUTH_TRANSCRIPT_LEN];

  /* tables, in OpenTables order */
  sync_table *tables;
  size_t ntables;
  bool txn_open;

  /* versions (spec 8.6, 8.7) */
  lipsync_policy policy;
  uint64_t retention_ms; /* server */
  uint64_t horizon;
  uint64_t server_clock;

  /* server: the store, opened once the client authenticated */
  lipsync_store_opener opener;
  void *opener_user;

  /* feature "tls-exporter" (spec 5.5) */
  uint8_t binding[LIPSYNC_TLS_BINDING_LEN]; /* the TLS exporter value */
  bool has_binding;                         /* this side offers or accepts */
  bool bound;                               /* in effect in this session */

  /* feature "incremental" (spec 8.8) */
  bool incremental_enabled;       /* this side offers or accepts it */
  bool incremental;               /* in effect in this session */
  bool force_full;                /* client: present no checkpoint, recount */
  bool prepared;                  /* client: its tables are prepared */
  uint8_t site[LIPSYNC_SITE_LEN]; /* my database's */
  uint8_t peer_site[LIPSYNC_SITE_LEN]; /* the peer database's */
  bool first_turn;                     /* the client's first turn */
  unsigned turns_sent, turns_received; /* complete turns */

  /* reconciliation */
  bool peer_turn_requests; /* the peer's current turn held Ranges or Need */
  bool verify_sent;
  turn_producer gen;
  item_cursor scan; /* a scan of my items while the peer's turn is read */
  size_t split_threshold;
  canon_hasher hasher;
  uint8_t *lookup; /* LOOKUP_BATCH UUIDs, for store_scan_uuids */

  /* memory (spec LS-SEC-4) */
  size_t mem_limit;  /* bound on session_memory(), or 0 */
  size_t held_bytes; /* received rows held back, over all tables */

  /* transport */
  frame_reader reader;
  arena recv_arena, send_arena;
  bytebuf out;
  size_t out_handed; /* bytes of |out| returned by the last send() */
  uint64_t bytes_sent, bytes_received;
  size_t frame_size; /* of the frame being handled */

  /* dry run (client, spec LS-DRY-1) */
  bool dry_run;
  int dry_run_outcome;

  /* outcome */
  int result;
  bool remote_error;
  char errmsg[512];

  lipsync_progress_cb progress;
  void *progress_user;
};

/* Fails the session: rolls back, records |code| and the message, and (for
 * codes that have a wire form) queues an Error frame. Returns |code|. */
int session_fail(lipsync_session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends frame |f| to the output; |table| (or NULL) is charged for its
 * bytes. Fails the session on error. */
int session_emit(lipsync_session *s, Lipsync__Frame *f, sync_table *table);

/* Sends Verify after the peer's quiet turn or in answer to its Verify. */
int session_send_verify(lipsync_session *s);

/* What the session buffers, as its memory limit counts it (spec LS-SEC-4):
 * everything but the receive arena when |with_arena| is false. */
size_t session_memory(const lipsync_session *s, bool with_arena);

/* The decision between my item |mine| and the peer's |peer| (either may
 * be NULL), from the client's and the server's points of view. */
decision session_decide(const lipsync_session *s, const sync_table *t,
                        const side_item *mine, const side_item *peer);
/* Whether both items changed since the client's base (decide_both_changed),
 * from either point of view. */
bool session_both_changed(const lipsync_session *s, const side_item *mine,
                          const side_item *peer);

/* reconcile.c */
/* After TablesOpened: hides old tombstones and sets each table's decision
 * context from s->policy and s->horizon. */
int recon_prepare(lipsync_session *s);
int recon_start(lipsync_session *s);
int recon_on_ranges(lipsync_session *s, const Lipsync__Ranges *m);
int recon_on_rows(lipsync_session *s, const Lipsync__Rows *m);
int recon_on_need(lipsync_session *s, const Lipsync__Need *m);
int recon_on_changes(lipsync_session *s, const Lipsync__Changes *m);
/* Applies the live rows held back until every tombstone of the session was
 * applied (spec 9.3). Before Verify. */
int recon_apply_deferred(lipsync_session *s);
/* Produces more of my turn into s->out; ends it with EndTurn. */
int recon_produce(lipsync_session *s);
void recon_table_free(lipsync_session *s, sync_table *t);

#endif
