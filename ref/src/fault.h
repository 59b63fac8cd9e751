/*
 * fault.h: fault injection for the conformance suite's self-test
 * (conformance/selftest/). Compiled in only when LIPSYNC_FAULTS is defined
 * (the build/fault/ binaries of conformance/faults.mk); in every other build
 * fault_on() is the constant 0 and each hook compiles away.
 *
 * fault_on(NAME) is true when NAME is one of the comma-separated names in the
 * environment variable LIPSYNC_FAULT, read once per process. The faults:
 *
 *   skip-row             produce_rows() drops the first row of the first
 *                        Rows frame of each table in each turn (reconcile.c)
 *   accept-wrong-secret  the server accepts any client proof (session.c)
 *   ignore-verify        decide() ignores a Verify whose counts or
 *                        fingerprints differ, and commits (session.c)
 *   bad-error-code       every Error frame sent carries code 15,
 *                        INTERNAL_ERROR (session.c queue_error)
 *   no-frame-limit       the frame reader accepts length prefixes above
 *                        LIPSYNC_MAX_FRAME, up to FAULT_FRAME_CAP (frame.c)
 *   digest-no-deleted    item digests leave out the deleted byte (canon.c)
 *   text-tag-as-blob     TEXT values are encoded with BLOB's tag (canon.c)
 *   lww-no-site          lww orders equal clocks without the site
 *                        (decide.c)
 *   no-implicit-tombstone  a stale client's items never meet T0
 *                        (decide.c)
 *   accept-row-twice     a row received twice in a session is accepted
 *                        (reconcile.c)
 *   range-exclusive-lower  an item on a range's lower bound is left out
 *                        of the range (items.c)
 *   commit-early         the client commits once both Verify agree,
 *                        before Committed (session.c)
 *   offer-unlisted       the server opens a table it does not offer
 *                        (session.c)
 *
 * fault_point(NAME) marks a moment of a sync, for the crash-fault tests
 * (ref/tests/e2e/test_crash.py). The environment variable
 * LIPSYNC_FAULT_KILL="NAME:N" makes the process kill itself (SIGKILL) the
 * N-th time it passes point NAME; LIPSYNC_FAULT_STALL="NAME:N:MS" makes it
 * sleep MS milliseconds there instead. Either may list several, separated
 * by commas. Counts are per process, over all its sessions.
 * LIPSYNC_FAULT_COUNT=FILE appends to FILE, when the point "commit" is
 * passed and at exit, a line "commit|exit recv=N send=N ..." with the
 * number of times each point was passed so far. The points:
 *
 *   recv       a whole frame was received, before it is handled (session.c)
 *   send       a frame was queued for sending (session.c)
 *   write      a row or tombstone goes to the store (store.h)
 *   commit     both Verify frames agree; the store commits next (store.h)
 *   commit-sent PostgreSQL: COMMIT is on its way to the server, whose
 *              answer has not been read (store_pg.c)
 *   fswrite    SQLite: a write to a database, journal or WAL file, through
 *              a VFS that wraps the default one (fault.c)
 *   prepare    a client begins to prepare its tables: before connecting
 *              in lipsync-client (lipsync_session_prepare, session.c)
 */
#ifndef LIPSYNC_FAULT_H
#define LIPSYNC_FAULT_H

#ifdef LIPSYNC_FAULTS

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* no-frame-limit still refuses lengths above this, to bound allocation. */
#define FAULT_FRAME_CAP (64u * 1024u * 1024u)

static pthread_once_t fault_once_ = PTHREAD_ONCE_INIT;
static const char *fault_list_;

static inline void fault_load_(void) {
  fault_list_ = getenv("LIPSYNC_FAULT");
}

static inline int fault_on(const char *name) {
  pthread_once(&fault_once_, fault_load_);
  size_t n = strlen(name);
  for (const char *p = fault_list_; p && *p;) {
    size_t len = strcspn(p, ",");
    if (len == n && strncmp(p, name, n) == 0)
      return 1;
    p += len + (p[len] == ',');
  }
  return 0;
}

void fault_point(const char *name);
/* Registers the counting VFS of point "fswrite" as SQLite's default, when a
 * fault names that point. */
void fault_sqlite_init(void);

#else

#define FAULT_FRAME_CAP 0u
#define fault_on(name) 0
#define fault_point(name) ((void)0)
#define fault_sqlite_init() ((void)0)

#endif /* LIPSYNC_FAULTS */

#endif /* LIPSYNC_FAULT_H */
