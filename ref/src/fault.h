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

#else

#define FAULT_FRAME_CAP 0u
#define fault_on(name) 0

#endif /* LIPSYNC_FAULTS */

#endif /* LIPSYNC_FAULT_H */
