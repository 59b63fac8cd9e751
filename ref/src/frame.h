/*
 * frame.h: framing (spec section 4). A frame is a 4-byte big-endian length
 * and one protobuf Frame. The reader keeps half a frame between calls, so
 * the session can be fed bytes in any split; the writer appends whole
 * frames to a buffer.
 */
#ifndef LIPSYNC_FRAME_H
#define LIPSYNC_FRAME_H

#include "buf.h"
#include "lipsync.pb-c.h"

#include <sys/types.h>

#define FRAME_HEADER_LEN 4

typedef struct frame_reader {
  uint8_t header[FRAME_HEADER_LEN];
  size_t header_len;
  uint32_t length; /* payload length, once the header is complete */
  bytebuf payload;
} frame_reader;

void frame_reader_init(frame_reader *r);
void frame_reader_free(frame_reader *r);

/* Consumes bytes from |data| up to the end of one frame. Returns the number
 * consumed and sets *complete when a whole frame is buffered, or returns
 * LIPSYNC_ERR_FRAME_TOO_LARGE as soon as a length prefix exceeds
 * LIPSYNC_MAX_FRAME. */
ssize_t frame_reader_feed(frame_reader *r, const uint8_t *data, size_t len,
                          int *complete);

/* Decodes the buffered frame, allocating from |a|. NULL means the payload
 * is not a valid Frame (PROTOCOL_ERROR). */
Lipsync__Frame *frame_reader_decode(frame_reader *r, arena *a);

/* Total size of the buffered frame, header included. */
size_t frame_reader_size(const frame_reader *r);

/* Appends the whole buffered frame, header included, to |out|. */
int frame_reader_copy(const frame_reader *r, bytebuf *out);

/* Forgets the buffered frame, ready for the next. */
void frame_reader_reset(frame_reader *r);

/* Nonzero while part of a frame has been received. */
int frame_reader_partial(const frame_reader *r);

/* Appends the length prefix and the encoding of |f| to |out|. Returns the
 * frame's size, or a negative error (LIPSYNC_ERR_FRAME_TOO_LARGE when the
 * encoding exceeds LIPSYNC_MAX_FRAME). */
ssize_t frame_append(bytebuf *out, const Lipsync__Frame *f);

/* The name of a frame body ("ClientHello", ...) for messages. */
const char *frame_body_name(Lipsync__Frame__BodyCase body);

#endif
