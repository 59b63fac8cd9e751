/* errbuf.c: messages for backends' handles (errbuf.h). */
#include "errbuf.h"

#include <inttypes.h>
#include <math.h>

#include <stdio.h>
#include <string.h>

/* A message cut short must not end inside a UTF-8 sequence. */
static void trim_partial_utf8(char *s) {
  size_t i = strlen(s), cont = 0;
  while (i > 0 && cont < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
    i--;
    cont++;
  }
  if (i == 0)
    return;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
  if (cont < need)
    s[i - 1] = '\0';
}

void errbuf_vformat(char *buf, size_t len, const char *fmt, va_list ap) {
  if (!buf || !len)
    return;
  int n = vsnprintf(buf, len, fmt, ap);
  if (n >= (int)len)
    trim_partial_utf8(buf);
}

void errbuf_format(char *buf, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  errbuf_vformat(buf, len, fmt, ap);
  va_end(ap);
}

void errbuf_describe_bytes(const uint8_t *p, size_t n, char *out,
                           size_t outlen) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (o + 8 >= outlen) {
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
    if (p[i] >= 0x20 && p[i] < 0x7F && p[i] != '\\') {
      out[o++] = (char)p[i];
    } else {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[p[i] >> 4];
      out[o++] = hex[p[i] & 15];
    }
  }
  out[o] = '\0';
}

void errbuf_describe_value(const lipsync_value *v, char *out, size_t outlen) {
  char text[64];
  switch (v->type) {
  case LIPSYNC_NULL:
    snprintf(out, outlen, "NULL");
    return;
  case LIPSYNC_INTEGER:
    snprintf(out, outlen, "the INTEGER %" PRId64, v->u.integer);
    return;
  case LIPSYNC_REAL:
    if (isnan(v->u.real))
      snprintf(text, sizeof text, "NaN");
    else if (isinf(v->u.real))
      snprintf(text, sizeof text, "%sInfinity", v->u.real < 0 ? "-" : "");
    else
      snprintf(text, sizeof text, "%.17g", v->u.real);
    /* Show that an integral REAL is a REAL. */
    if (strspn(text, "-0123456789") == strlen(text))
      strcat(text, ".0");
    snprintf(out, outlen, "the REAL %s", text);
    return;
  case LIPSYNC_TEXT:
    errbuf_describe_bytes(v->u.bytes.data, v->u.bytes.len, text, 48);
    snprintf(out, outlen, "the TEXT '%s'", text);
    return;
  case LIPSYNC_BLOB:
    snprintf(out, outlen, "a BLOB of %zu bytes", v->u.bytes.len);
    return;
  }
  snprintf(out, outlen, "a value of unknown type %d", (int)v->type);
}
