/*
 * fault.c: the moments of fault.h's fault_point(), and the counting SQLite
 * VFS behind its point "fswrite". Empty unless LIPSYNC_FAULTS is defined
 * (the build/fault/ binaries).
 */
#include "fault.h"

#ifdef LIPSYNC_FAULTS

#include <signal.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

/* The points, in the order LIPSYNC_FAULT_COUNT lists them. */
static const char *const point_names[] = {
    "recv", "send", "write", "commit", "commit-sent", "fswrite", "prepare"};
#define NPOINTS (sizeof point_names / sizeof point_names[0])
#define FAULT_MAX_SPECS 8

typedef struct fault_spec {
  size_t point;
  unsigned long at; /* the hit that acts */
  long stall_ms;    /* -1: kill */
} fault_spec;

static pthread_once_t point_once = PTHREAD_ONCE_INIT;
static fault_spec specs[FAULT_MAX_SPECS];
static int nspecs;
static atomic_ulong hits[NPOINTS];
static bool counting; /* LIPSYNC_FAULT_COUNT is set */

static size_t point_index(const char *name) {
  size_t i = 0;
  while (i < NPOINTS && strcmp(point_names[i], name) != 0)
    i++;
  return i;
}

/* Appends the counts so far to the file LIPSYNC_FAULT_COUNT names, on one
 * line that begins with |when|. */
static void write_counts(const char *when) {
  FILE *f = fopen(getenv("LIPSYNC_FAULT_COUNT"), "a");
  if (!f)
    return;
  fprintf(f, "%s", when);
  for (size_t i = 0; i < NPOINTS; i++)
    fprintf(f, " %s=%lu", point_names[i], atomic_load(&hits[i]));
  fprintf(f, "\n");
  fclose(f);
}

static void write_final_counts(void) {
  write_counts("exit");
}

/* Reads the list "NAME:N[:MS],..." of variable |var|; |stall| says
 * whether entries carry MS. */
static void parse_specs(const char *var, int stall) {
  const char *p = getenv(var);
  while (p && *p && nspecs < FAULT_MAX_SPECS) {
    size_t len = strcspn(p, ",");
    char item[64], name[16];
    unsigned long at = 0;
    long ms = -1;
    int n;
    snprintf(item, sizeof item, "%.*s", (int)(len < 63 ? len : 63), p);
    n = stall ? sscanf(item, "%15[a-z-]:%lu:%ld", name, &at, &ms)
              : sscanf(item, "%15[a-z-]:%lu", name, &at);
    size_t point = n == (stall ? 3 : 2) ? point_index(name) : NPOINTS;
    if (point < NPOINTS && at > 0 && (!stall || ms >= 0)) {
      specs[nspecs].point = point;
      specs[nspecs].at = at;
      specs[nspecs].stall_ms = stall ? ms : -1;
      nspecs++;
    } else {
      fprintf(stderr, "fault: ignoring %s entry \"%s\"\n", var, item);
    }
    p += len + (p[len] == ',');
  }
}

static void load_points(void) {
  parse_specs("LIPSYNC_FAULT_KILL", 0);
  parse_specs("LIPSYNC_FAULT_STALL", 1);
  counting = getenv("LIPSYNC_FAULT_COUNT") != NULL;
  if (counting)
    atexit(write_final_counts);
}

void fault_point(const char *name) {
  pthread_once(&point_once, load_points);
  size_t point = point_index(name);
  if (point == NPOINTS)
    abort(); /* a point fault.h does not list */
  unsigned long hit = atomic_fetch_add(&hits[point], 1) + 1;
  if (counting && strcmp(name, "commit") == 0)
    write_counts("commit");
  for (int i = 0; i < nspecs; i++) {
    const fault_spec *f = &specs[i];
    if (f->point != point || f->at != hit)
      continue;
    if (f->stall_ms < 0) {
      raise(SIGKILL);
    } else {
      struct timespec ts = {f->stall_ms / 1000, f->stall_ms % 1000 * 1000000};
      while (nanosleep(&ts, &ts) != 0) {
      }
    }
  }
}

/* The VFS of point "fswrite": the default VFS, whose files count writes. */
typedef struct fault_file {
  sqlite3_file base;
  sqlite3_file *real; /* follows this struct */
} fault_file;

static sqlite3_vfs fault_vfs;
static sqlite3_vfs *real_vfs;
static sqlite3_io_methods fault_io1, fault_io2, fault_io3;

static int ff_close(sqlite3_file *f) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods ? r->pMethods->xClose(r) : SQLITE_OK;
}
static int ff_read(sqlite3_file *f, void *b, int n, sqlite3_int64 off) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xRead(r, b, n, off);
}
static int ff_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 off) {
  sqlite3_file *r = ((fault_file *)f)->real;
  fault_point("fswrite");
  return r->pMethods->xWrite(r, b, n, off);
}
static int ff_truncate(sqlite3_file *f, sqlite3_int64 size) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xTruncate(r, size);
}
static int ff_sync(sqlite3_file *f, int flags) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xSync(r, flags);
}
static int ff_size(sqlite3_file *f, sqlite3_int64 *size) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xFileSize(r, size);
}
static int ff_lock(sqlite3_file *f, int lock) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xLock(r, lock);
}
static int ff_unlock(sqlite3_file *f, int lock) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xUnlock(r, lock);
}
static int ff_check(sqlite3_file *f, int *out) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xCheckReservedLock(r, out);
}
static int ff_control(sqlite3_file *f, int op, void *arg) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xFileControl(r, op, arg);
}
static int ff_sector(sqlite3_file *f) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xSectorSize(r);
}
static int ff_device(sqlite3_file *f) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xDeviceCharacteristics(r);
}
static int ff_shm_map(sqlite3_file *f, int pg, int sz, int ext,
                      void volatile **p) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xShmMap(r, pg, sz, ext, p);
}
static int ff_shm_lock(sqlite3_file *f, int off, int n, int flags) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xShmLock(r, off, n, flags);
}
static void ff_shm_barrier(sqlite3_file *f) {
  sqlite3_file *r = ((fault_file *)f)->real;
  r->pMethods->xShmBarrier(r);
}
static int ff_shm_unmap(sqlite3_file *f, int del) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xShmUnmap(r, del);
}
static int ff_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **p) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xFetch(r, off, n, p);
}
static int ff_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
  sqlite3_file *r = ((fault_file *)f)->real;
  return r->pMethods->xUnfetch(r, off, p);
}

static int fv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f,
                   int flags, int *out_flags) {
  fault_file *ff = (fault_file *)f;
  (void)vfs;
  ff->real = (sqlite3_file *)(ff + 1);
  int rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out_flags);
  const sqlite3_io_methods *m = ff->real->pMethods;
  ff->base.pMethods = !m                 ? NULL
                      : m->iVersion >= 3 ? &fault_io3
                      : m->iVersion == 2 ? &fault_io2
                                         : &fault_io1;
  return rc;
}

static void init_vfs(void) {
  real_vfs = sqlite3_vfs_find(NULL);
  fault_vfs = *real_vfs;
  fault_vfs.zName = "lipsync-fault";
  fault_vfs.szOsFile = (int)sizeof(fault_file) + real_vfs->szOsFile;
  fault_vfs.xOpen = fv_open;
  fault_vfs.pNext = NULL;
  sqlite3_io_methods m = {
      1,       ff_close,  ff_read,  ff_write,   ff_truncate, ff_sync,   ff_size,
      ff_lock, ff_unlock, ff_check, ff_control, ff_sector,   ff_device, NULL,
      NULL,    NULL,      NULL,     NULL,       NULL};
  fault_io1 = m;
  m.iVersion = 2;
  m.xShmMap = ff_shm_map;
  m.xShmLock = ff_shm_lock;
  m.xShmBarrier = ff_shm_barrier;
  m.xShmUnmap = ff_shm_unmap;
  fault_io2 = m;
  m.iVersion = 3;
  m.xFetch = ff_fetch;
  m.xUnfetch = ff_unfetch;
  fault_io3 = m;
  sqlite3_vfs_register(&fault_vfs, 1);
}

static pthread_once_t vfs_once = PTHREAD_ONCE_INIT;

void fault_sqlite_init(void) {
  pthread_once(&point_once, load_points);
  bool wanted = counting;
  for (int i = 0; i < nspecs; i++)
    wanted |= specs[i].point == point_index("fswrite");
  if (wanted)
    pthread_once(&vfs_once, init_vfs);
}

#else

typedef int fault_c_is_empty; /* ISO C wants a declaration in every file */

#endif /* LIPSYNC_FAULTS */
