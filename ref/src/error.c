/* error.c: the names and descriptions of the error codes (lipsync.h). */
#include "lipsync.h"

#include <stddef.h>

static const struct {
  int code;
  const char *name; /* the spec's (11.1) where the code has a wire form */
  const char *text;
} errors[] = {
    {LIPSYNC_OK, "OK", "success"},
    {LIPSYNC_ERR_PROTOCOL, "PROTOCOL_ERROR", "protocol error"},
    {LIPSYNC_ERR_FRAME_TOO_LARGE, "FRAME_TOO_LARGE", "frame too large"},
    {LIPSYNC_ERR_UNEXPECTED_MESSAGE, "UNEXPECTED_MESSAGE",
     "unexpected message"},
    {LIPSYNC_ERR_VERSION_MISMATCH, "VERSION_MISMATCH",
     "no common protocol version"},
    {LIPSYNC_ERR_AUTH_FAILED, "AUTH_FAILED", "authentication failed"},
    {LIPSYNC_ERR_UNKNOWN_TABLE, "UNKNOWN_TABLE", "unknown table"},
    {LIPSYNC_ERR_TABLE_NOT_OFFERED, "TABLE_NOT_OFFERED", "table not offered"},
    {LIPSYNC_ERR_SCHEMA_MISMATCH, "SCHEMA_MISMATCH", "schema mismatch"},
    {LIPSYNC_ERR_CONFLICT, "CONFLICT", "conflicting rows"},
    {LIPSYNC_ERR_VERIFY_FAILED, "VERIFY_FAILED", "final table states differ"},
    {LIPSYNC_ERR_STORAGE, "STORAGE_ERROR", "storage error"},
    {LIPSYNC_ERR_TIMEOUT, "TIMEOUT", "timeout"},
    {LIPSYNC_ERR_INVALID_VALUE, "INVALID_VALUE", "invalid value"},
    {LIPSYNC_ERR_SHUTTING_DOWN, "SHUTTING_DOWN", "server shutting down"},
    {LIPSYNC_ERR_INTERNAL, "INTERNAL_ERROR", "internal error"},
    {LIPSYNC_ERR_TRY_AGAIN, "TRY_AGAIN", "try again"},
    {LIPSYNC_ERR_RESOURCE_LIMIT, "RESOURCE_LIMIT", "resource limit exceeded"},
    {LIPSYNC_ERR_CANCELLED, "CANCELLED", "cancelled by the peer"},
    {LIPSYNC_ERR_NOMEM, "NOMEM", "out of memory"},
    {LIPSYNC_ERR_INVALID_ARGUMENT, "INVALID_ARGUMENT", "invalid argument"},
    {LIPSYNC_ERR_IO, "IO", "transport error"},
    {LIPSYNC_ERR_CLOSED, "CLOSED", "connection closed by peer"},
    {LIPSYNC_ERR_NOT_FOUND, "NOT_FOUND", "not found"},
};

static size_t find(int code) {
  size_t i = 0;
  while (i < sizeof errors / sizeof errors[0] && errors[i].code != code)
    i++;
  return i;
}

const char *lipsync_strerror(int code) {
  size_t i = find(code);
  return i < sizeof errors / sizeof errors[0] ? errors[i].text
                                              : "unknown error";
}

const char *lipsync_error_name(int code) {
  size_t i = find(code);
  return i < sizeof errors / sizeof errors[0] ? errors[i].name : "UNKNOWN";
}
