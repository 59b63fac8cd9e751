/* error.c: names of the error codes (lipsync.h). */
#include "lipsync.h"

const char *lipsync_strerror(int code) {
  switch (code) {
  case LIPSYNC_OK:
    return "success";
  case LIPSYNC_ERR_PROTOCOL:
    return "protocol error";
  case LIPSYNC_ERR_FRAME_TOO_LARGE:
    return "frame too large";
  case LIPSYNC_ERR_UNEXPECTED_MESSAGE:
    return "unexpected message";
  case LIPSYNC_ERR_VERSION_MISMATCH:
    return "no common protocol version";
  case LIPSYNC_ERR_AUTH_FAILED:
    return "authentication failed";
  case LIPSYNC_ERR_UNKNOWN_TABLE:
    return "unknown table";
  case LIPSYNC_ERR_TABLE_NOT_OFFERED:
    return "table not offered";
  case LIPSYNC_ERR_SCHEMA_MISMATCH:
    return "schema mismatch";
  case LIPSYNC_ERR_CONFLICT:
    return "conflicting rows";
  case LIPSYNC_ERR_VERIFY_FAILED:
    return "final table states differ";
  case LIPSYNC_ERR_STORAGE:
    return "storage error";
  case LIPSYNC_ERR_TIMEOUT:
    return "timeout";
  case LIPSYNC_ERR_INVALID_VALUE:
    return "invalid value";
  case LIPSYNC_ERR_SHUTTING_DOWN:
    return "server shutting down";
  case LIPSYNC_ERR_INTERNAL:
    return "internal error";
  case LIPSYNC_ERR_TRY_AGAIN:
    return "try again";
  case LIPSYNC_ERR_RESOURCE_LIMIT:
    return "resource limit exceeded";
  case LIPSYNC_ERR_NOMEM:
    return "out of memory";
  case LIPSYNC_ERR_INVALID_ARGUMENT:
    return "invalid argument";
  case LIPSYNC_ERR_IO:
    return "transport error";
  case LIPSYNC_ERR_CLOSED:
    return "connection closed by peer";
  case LIPSYNC_ERR_NOT_FOUND:
    return "not found";
  default:
    return "unknown error";
  }
}
