/* frame.c: length-prefixed protobuf frames (spec section 4). */
#include "frame.h"
#include "fault.h"

#include "lipsync.h"

#include <stdbool.h>
#include <string.h>

void frame_reader_init(frame_reader *r) {
  memset(r, 0, sizeof *r);
}

void frame_reader_free(frame_reader *r) {
  bytebuf_free(&r->payload);
}

ssize_t frame_reader_feed(frame_reader *r, const uint8_t *data, size_t len,
                          int *complete) {
  size_t used = 0;
  *complete = 0;
  if (r->header_len < FRAME_HEADER_LEN) {
    size_t take = FRAME_HEADER_LEN - r->header_len;
    if (take > len)
      take = len;
    memcpy(r->header + r->header_len, data, take);
    r->header_len += take;
    used += take;
    if (r->header_len < FRAME_HEADER_LEN)
      return (ssize_t)used;
    r->length = (uint32_t)r->header[0] << 24 | (uint32_t)r->header[1] << 16 |
                (uint32_t)r->header[2] << 8 | r->header[3];
    if (r->length > LIPSYNC_MAX_FRAME &&
        !(fault_on("no-frame-limit") && r->length <= FAULT_FRAME_CAP))
      return LIPSYNC_ERR_FRAME_TOO_LARGE; /* ^ fault injection: self-test */
    r->payload.len = 0;
  }
  size_t take = r->length - r->payload.len;
  if (take > len - used)
    take = len - used;
  if (bytebuf_append(&r->payload, data + used, take))
    return LIPSYNC_ERR_NOMEM;
  used += take;
  *complete = r->payload.len == r->length;
  return (ssize_t)used;
}

/* Whether |m| or a message in it holds a field numbered 0, which protobuf
 * forbids: protobuf-c refuses one whose tag is the single byte 0x00, but
 * keeps it as an unknown field when its tag is a longer varint (0x80 0x00),
 * and would then write it back as 0x00, which no decoder takes. The schema
 * is not recursive, so neither is this, deeper than it. */
static bool has_field_zero(const ProtobufCMessage *m) {
  for (unsigned i = 0; i < m->n_unknown_fields; i++)
    if (m->unknown_fields[i].tag == 0)
      return true;
  const char *base = (const char *)m;
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_MESSAGE)
      continue;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      ProtobufCMessage *const *v =
          *(ProtobufCMessage *const *const *)(base + f->offset);
      for (size_t k = 0; k < n; k++)
        if (has_field_zero(v[k]))
          return true;
      continue;
    }
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
        *(const uint32_t *)(base + f->quantifier_offset) != f->id)
      continue;
    const ProtobufCMessage *sub =
        *(ProtobufCMessage *const *)(base + f->offset);
    if (sub && has_field_zero(sub))
      return true;
  }
  return false;
}

Lipsync__Frame *frame_reader_decode(frame_reader *r, arena *a) {
  Lipsync__Frame *f =
      lipsync__frame__unpack(&a->pb, r->payload.len, r->payload.data);
  /* Undecodable (spec LS-FRAME-7); its memory goes with the arena. */
  return f && has_field_zero(&f->base) ? NULL : f;
}

size_t frame_reader_size(const frame_reader *r) {
  return FRAME_HEADER_LEN + r->payload.len;
}

int frame_reader_copy(const frame_reader *r, bytebuf *out) {
  int rc = bytebuf_append(out, r->header, FRAME_HEADER_LEN);
  return rc ? rc : bytebuf_append(out, r->payload.data, r->payload.len);
}

void frame_reader_reset(frame_reader *r) {
  r->header_len = 0;
  r->length = 0;
  r->payload.len = 0;
}

int frame_reader_partial(const frame_reader *r) {
  return r->header_len > 0;
}

ssize_t frame_append(bytebuf *out, const Lipsync__Frame *f) {
  size_t n = lipsync__frame__get_packed_size(f);
  if (n > LIPSYNC_MAX_FRAME)
    return LIPSYNC_ERR_FRAME_TOO_LARGE;
  if (bytebuf_reserve(out, FRAME_HEADER_LEN + n))
    return LIPSYNC_ERR_NOMEM;
  uint8_t *p = out->data + out->len;
  p[0] = (uint8_t)(n >> 24);
  p[1] = (uint8_t)(n >> 16);
  p[2] = (uint8_t)(n >> 8);
  p[3] = (uint8_t)n;
  lipsync__frame__pack(f, p + FRAME_HEADER_LEN);
  out->len += FRAME_HEADER_LEN + n;
  return (ssize_t)(FRAME_HEADER_LEN + n);
}

const char *frame_body_name(Lipsync__Frame__BodyCase body) {
  switch (body) {
  case LIPSYNC__FRAME__BODY_CLIENT_HELLO:
    return "ClientHello";
  case LIPSYNC__FRAME__BODY_SERVER_HELLO:
    return "ServerHello";
  case LIPSYNC__FRAME__BODY_CLIENT_AUTH:
    return "client_auth";
  case LIPSYNC__FRAME__BODY_SERVER_AUTH:
    return "server_auth";
  case LIPSYNC__FRAME__BODY_OPEN_TABLES:
    return "OpenTables";
  case LIPSYNC__FRAME__BODY_TABLES_OPENED:
    return "TablesOpened";
  case LIPSYNC__FRAME__BODY_RANGES:
    return "Ranges";
  case LIPSYNC__FRAME__BODY_ROWS:
    return "Rows";
  case LIPSYNC__FRAME__BODY_NEED:
    return "Need";
  case LIPSYNC__FRAME__BODY_END_TURN:
    return "EndTurn";
  case LIPSYNC__FRAME__BODY_VERIFY:
    return "Verify";
  case LIPSYNC__FRAME__BODY_COMMITTED:
    return "Committed";
  case LIPSYNC__FRAME__BODY_ERROR:
    return "Error";
  default:
    return "unknown frame";
  }
}
