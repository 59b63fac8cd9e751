/*
 * errbuf.h: the messages a backend keeps on its handle. They may travel in
 * an Error frame, so they stay valid UTF-8 when cut short, and bytes from
 * the database are shown printable.
 */
#ifndef LIPSYNC_ERRBUF_H
#define LIPSYNC_ERRBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "lipsync.h"

/* Formats into |buf| (of |len| bytes; nothing if |buf| is NULL or |len| 0),
 * never ending inside a UTF-8 sequence. */
void errbuf_vformat(char *buf, size_t len, const char *fmt, va_list ap);
void errbuf_format(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes |n| bytes of |p| into |out| as printable ASCII (other bytes as
 * \xNN), cut to fit with "...": values may hold anything, messages must
 * not. */
void errbuf_describe_bytes(const uint8_t *p, size_t n, char *out,
                           size_t outlen);

/* "NULL", "the REAL 3.0", "the TEXT '12'": a value as an error message
 * names it. */
void errbuf_describe_value(const lipsync_value *v, char *out, size_t outlen);

#endif
