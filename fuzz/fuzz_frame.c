/*
 * fuzz_frame.c: the frame reader (ref/src/frame.c) and the decoding of a
 * Frame into the per-frame arena, as the session does them, on arbitrary
 * bytes fed in arbitrary chunks.
 *
 * Input: one byte that seeds the chunk sizes (0: the stream in one
 * piece), then the byte stream. Every frame the reader completes must be
 * the next frame of the stream as a plain reading of spec section 4
 * splits it, and the reader must refuse an oversized length exactly where
 * that reading meets one. A frame that decodes must encode (frame_append)
 * to bytes that decode again and encode to the same bytes.
 */
#include "frame.h"
#include "fuzz_util.h"
#include "lipsync.h"

#include <stdlib.h>
#include <string.h>

/* Where the stream holds a frame, or an oversized length, or ends. */
typedef enum { PIECE_FRAME, PIECE_TOO_LARGE, PIECE_PARTIAL } piece_kind;

/* Splits |stream| at |pos| as spec section 4 does. */
static piece_kind next_piece(const uint8_t *stream, size_t len, size_t pos,
                             size_t *size) {
  size_t left = len - pos;
  if (left < FRAME_HEADER_LEN)
    return PIECE_PARTIAL;
  const uint8_t *p = stream + pos;
  uint32_t n =
      (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
  if (n > LIPSYNC_MAX_FRAME)
    return PIECE_TOO_LARGE;
  if (left - FRAME_HEADER_LEN < n)
    return PIECE_PARTIAL;
  *size = FRAME_HEADER_LEN + n;
  return PIECE_FRAME;
}

/* Encodes |f| as the session would send it, and checks that the encoding
 * decodes to a frame that encodes the same again. */
static void check_reencode(const Lipsync__Frame *f, arena *a) {
  bytebuf once = {0}, twice = {0};
  ssize_t n = frame_append(&once, f);
  FUZZ_CHECK(n > 0 && (size_t)n == once.len);
  FUZZ_CHECK(fuzz_frame_size(once.data, once.len) == once.len);
  Lipsync__Frame *g = lipsync__frame__unpack(
      &a->pb, once.len - FRAME_HEADER_LEN, once.data + FRAME_HEADER_LEN);
  FUZZ_CHECKF(g != NULL, "an encoded frame does not decode");
  FUZZ_CHECK(g->body_case == f->body_case);
  FUZZ_CHECK(frame_append(&twice, g) == n);
  FUZZ_CHECKF(fuzz_buf_eq(&once, &twice), "re-encoding is not stable");
  FUZZ_CHECK(frame_body_name(g->body_case) != NULL);
  bytebuf_free(&once);
  bytebuf_free(&twice);
}

/* A complete frame the reader holds, which should be the piece of
 * |size| bytes at |expect|. */
static void check_frame(frame_reader *r, arena *a, const uint8_t *expect,
                        size_t size) {
  bytebuf copy = {0};
  FUZZ_CHECK(frame_reader_size(r) == size);
  FUZZ_CHECK(frame_reader_copy(r, &copy) == 0);
  FUZZ_CHECKF(copy.len == size && memcmp(copy.data, expect, size) == 0,
              "the reader's frame is not the stream's");
  bytebuf_free(&copy);
  Lipsync__Frame *f = frame_reader_decode(r, a);
  if (f) {
    FUZZ_CHECK(frame_body_name(f->body_case) != NULL);
    check_reencode(f, a);
  } else {
    FUZZ_CHECK(!a->failed); /* a frame this small never runs out */
  }
  frame_reader_reset(r);
  arena_reset(a);
  FUZZ_CHECK(!frame_reader_partial(r));
}

/* Feeds |stream| in chunks drawn from |seed| (0: in one piece). */
static void feed_stream(const uint8_t *stream, size_t len, uint32_t seed) {
  frame_reader r;
  arena a;
  size_t pos = 0, frame_start = 0, size = 0;
  piece_kind kind = next_piece(stream, len, 0, &size);
  bool refused = false;

  frame_reader_init(&r);
  arena_init(&a);
  while (pos < len && !refused) {
    size_t chunk = seed ? fuzz_chunk(&seed, pos, len) : len - pos;
    size_t off = 0;
    while (off < chunk) {
      int complete = 0;
      ssize_t n =
          frame_reader_feed(&r, stream + pos + off, chunk - off, &complete);
      if (n < 0) {
        FUZZ_CHECKF(n == LIPSYNC_ERR_FRAME_TOO_LARGE, "feed returned %zd", n);
        FUZZ_CHECKF(kind == PIECE_TOO_LARGE, "a frame refused wrongly");
        FUZZ_CHECK(pos + off <= frame_start + FRAME_HEADER_LEN);
        refused = true;
        break;
      }
      FUZZ_CHECKF(n > 0 && (size_t)n <= chunk - off, "feed consumed %zd", n);
      off += (size_t)n;
      if (!complete)
        continue;
      FUZZ_CHECKF(kind == PIECE_FRAME && pos + off == frame_start + size,
                  "the reader completed a frame where the stream has none");
      check_frame(&r, &a, stream + frame_start, size);
      frame_start += size;
      kind = next_piece(stream, len, frame_start, &size);
    }
    pos += off;
  }
  if (!refused) {
    /* Every whole frame was delivered; what is left is part of one. */
    FUZZ_CHECKF(kind == PIECE_PARTIAL, "a whole frame was not completed, "
                                       "or an oversized one not refused");
    FUZZ_CHECK(frame_reader_partial(&r) == (len > frame_start));
  }
  frame_reader_free(&r);
  arena_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  feed_stream(data + 1, size - 1, data[0]);
  return 0;
}
