/*
 * fuzz_util.h: what the libFuzzer harnesses share: a check that survives
 * NDEBUG, a reader of decisions from the fuzzer's input, a deterministic
 * world (randomness and SQLite's clock), in-memory SQLite databases with
 * snapshots and dumps, and the framing of a byte stream.
 *
 * The harnesses are linked with -Wl,--wrap=RAND_bytes,--wrap=hlc_wall_ms
 * (fuzz.mk): the library's randomness (UUIDs, site ids, nonces, tokens)
 * and its wall clock come from here, and with SQLite's (fuzz_sqlite_init)
 * they restart with fuzz_det_reset(), so that one input always does the
 * same thing and a saved crash replays in another process.
 */
#ifndef LIPSYNC_FUZZ_UTIL_H
#define LIPSYNC_FUZZ_UTIL_H

#include "buf.h"
#include "lipsync.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Aborts with the place and |what| when |cond| is false: a finding. */
#define FUZZ_CHECK(cond)                                                       \
  ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, "%s", #cond))
#define FUZZ_CHECKF(cond, ...)                                                 \
  ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, __VA_ARGS__))
_Noreturn void fuzz_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- decisions from the input ---------------------------------------- */

/* The fuzzer's input, read front to back; reads past its end return 0. */
typedef struct fuzz_input {
  const uint8_t *data;
  size_t len;
} fuzz_input;

uint8_t fuzz_byte(fuzz_input *in);
uint16_t fuzz_u16(fuzz_input *in); /* big-endian */
bool fuzz_more(const fuzz_input *in);

/* Cuts |len| bytes into the chunks a peer might deliver, chosen by
 * |seed|: the size of the next chunk (at least 1) at |*pos| of |len|. */
size_t fuzz_chunk(uint32_t *seed, size_t pos, size_t len);

/* ---- a deterministic world ------------------------------------------- */

/* The wall clock until fuzz_det_set_time(): 2026-01-01 00:00 UTC. */
#define FUZZ_EPOCH_MS UINT64_C(1767225600000)

/* Prepares SQLite for a harness: its memory from a pool of its own rather
 * than ASan's allocator (fast; the pool's blocks stay visible to
 * LeakSanitizer), and as its default VFS one whose clock reads the time
 * set by fuzz_det_set_time() and whose randomness is the deterministic
 * stream. Call once, before any other use of SQLite. */
void fuzz_sqlite_init(void);
/* Restarts the stream of RAND_bytes() and SQLite's randomness. */
void fuzz_det_reset(uint64_t seed);
/* Sets the wall clock of SQLite ('now') and of the library, in ms since
 * the Unix epoch. */
void fuzz_det_set_time(uint64_t ms);
/* What the linker calls in place of RAND_bytes() and hlc_wall_ms(). */
int __wrap_RAND_bytes(unsigned char *buf, int num);
uint64_t __wrap_hlc_wall_ms(void);

/* ---- SQLite ----------------------------------------------------------- */

/* A private ":memory:" database; aborts on failure. */
sqlite3 *fuzz_db_open(void);
/* Runs |sql| (any number of statements); aborts on failure. */
void fuzz_db_exec(sqlite3 *db, const char *sql);

/* A database's bytes, as sqlite3_serialize() gives them. */
typedef struct fuzz_image {
  unsigned char *data;
  size_t len;
} fuzz_image;

fuzz_image fuzz_image_take(sqlite3 *db);
void fuzz_image_free(fuzz_image *img);
bool fuzz_image_eq(const fuzz_image *a, const fuzz_image *b);
/* A new connection to a private copy of |img|; aborts on failure. */
sqlite3 *fuzz_db_from_image(const fuzz_image *img);

/* Appends every row of |sql| to |out|, each value with its type, exactly
 * (REALs bit for bit). Aborts if |sql| fails. */
void fuzz_dump_query(sqlite3 *db, const char *sql, bytebuf *out);
/* The schema and every row of every table of |db| into |out| (emptied
 * first). With |marks| false, the columns recount and ck_token of
 * _lipsync_tables are left out: what a failed verification records on
 * purpose (spec LS-INC-16, LS-INC-17). */
void fuzz_db_dump(sqlite3 *db, bool marks, bytebuf *out);
bool fuzz_buf_eq(const bytebuf *a, const bytebuf *b);

/* ---- framing ------------------------------------------------------------ */

/* The size, header included, of the whole frame at the start of |p|, or
 * 0 when |len| bytes do not hold one yet. */
size_t fuzz_frame_size(const uint8_t *p, size_t len);
/* The field number of the body of the frame at |p| (its first tag: 3 for
 * client_auth, 11 for Verify), or 0 if there is none. */
uint32_t fuzz_frame_body(const uint8_t *p, size_t size);

#endif
