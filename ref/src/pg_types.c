/*
 * pg_types.c: PostgreSQL column types and their canonical value forms
 * (pg_types.h).
 *
 * A sync must never let the database convert a value on its way in: a
 * value PostgreSQL would store differently from what it received (12.5
 * padded to 12.50 in a numeric(5,2), "2024-2-29" read as 2024-02-29, a
 * double rounded to float4, "ab" padded in a char(5)) is refused here,
 * before it enters the COPY stream, with the reason. The rules are those
 * of PostgreSQL's input functions and type modifiers; the tests hold them
 * against a live server.
 */
#include "pg_types.h"

#include "canon.h"
#include "errbuf.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PostgreSQL's VARHDRSZ: type modifiers of lengths and numerics are offset
 * by it. */
#define TYPMOD_OFFSET 4
/* numeric's limits: digits before and after the decimal point. */
#define NUMERIC_MAX_INT_DIGITS 131072
#define NUMERIC_MAX_FRAC_DIGITS 16383
/* NAMEDATALEN - 1: a longer name is cut short without an error. */
#define NAME_MAX_BYTES 63

static const struct {
  uint32_t oid;
  pgtype_kind kind;
} builtin_types[] = {
    {21, PGTYPE_INT2},          {23, PGTYPE_INT4},
    {20, PGTYPE_INT8},          {700, PGTYPE_FLOAT4},
    {701, PGTYPE_FLOAT8},       {1700, PGTYPE_NUMERIC},
    {16, PGTYPE_BOOL},          {25, PGTYPE_TEXT},
    {1043, PGTYPE_VARCHAR},     {1042, PGTYPE_BPCHAR},
    {19, PGTYPE_NAME},          {17, PGTYPE_BYTEA},
    {1082, PGTYPE_DATE},        {1114, PGTYPE_TIMESTAMP},
    {1184, PGTYPE_TIMESTAMPTZ}, {114, PGTYPE_JSON},
    {3802, PGTYPE_JSONB},       {PGTYPE_OID_UUID, PGTYPE_UUID},
};

bool pgtype_from_oid(uint32_t oid, int32_t typmod, bool is_citext,
                     pgtype *out) {
  out->typmod = typmod;
  if (is_citext) {
    out->kind = PGTYPE_TEXT;
    return true;
  }
  for (size_t i = 0; i < sizeof builtin_types / sizeof builtin_types[0]; i++) {
    if (builtin_types[i].oid == oid) {
      out->kind = builtin_types[i].kind;
      return true;
    }
  }
  return false;
}

const char *pgtype_canonical(pgtype_kind kind) {
  switch (kind) {
  case PGTYPE_INT2:
  case PGTYPE_INT4:
  case PGTYPE_INT8:
    return "integer";
  case PGTYPE_FLOAT4:
  case PGTYPE_FLOAT8:
    return "real";
  case PGTYPE_NUMERIC:
    return "decimal";
  case PGTYPE_BOOL:
    return "boolean";
  case PGTYPE_TEXT:
  case PGTYPE_VARCHAR:
  case PGTYPE_BPCHAR:
  case PGTYPE_NAME:
    return "text";
  case PGTYPE_BYTEA:
    return "blob";
  case PGTYPE_DATE:
    return "date";
  case PGTYPE_TIMESTAMP:
    return "timestamp";
  case PGTYPE_TIMESTAMPTZ:
    return "timestamptz";
  case PGTYPE_JSON:
    return "json";
  case PGTYPE_JSONB:
    return "jsonb";
  case PGTYPE_UUID:
    return "uuid";
  }
  return "none";
}

bool pgtype_select_as_text(pgtype_kind kind) {
  switch (kind) {
  case PGTYPE_NUMERIC:
  case PGTYPE_DATE:
  case PGTYPE_TIMESTAMP:
  case PGTYPE_TIMESTAMPTZ:
  case PGTYPE_JSON:
  case PGTYPE_JSONB:
  case PGTYPE_TEXT: /* citext's binary form is its own */
    return true;
  default:
    return false;
  }
}

/* ------------------------------------------------------------------ */
/* Messages                                                             */
/* ------------------------------------------------------------------ */

static bool refuse(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool refuse(char *why, size_t whylen, const char *fmt, ...) {
  va_list ap;
  if (why && whylen) {
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
  }
  return false;
}

void pgtype_format_double(double d, char out[32]) {
  char raw[40];
  size_t o = 0;
  if (isnan(d)) {
    strcpy(out, "NaN");
    return;
  }
  if (isinf(d)) {
    strcpy(out, d < 0 ? "-Infinity" : "Infinity");
    return;
  }
  /* 17 significant digits always read back as the same double. %g never
   * groups digits, so anything but a digit, sign or exponent is the
   * locale's decimal point, which PostgreSQL reads only as '.'. */
  snprintf(raw, sizeof raw, "%.17g", d);
  for (size_t i = 0; raw[i] && o < 31; i++) {
    char c = raw[i];
    if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e') {
      out[o++] = c;
    } else {
      out[o++] = '.';
      while (raw[i + 1] && !(raw[i + 1] >= '0' && raw[i + 1] <= '9'))
        i++;
    }
  }
  out[o] = '\0';
}

/* ------------------------------------------------------------------ */
/* Numbers                                                              */
/* ------------------------------------------------------------------ */

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

static bool text_is(const char *p, size_t len, const char *lit) {
  return len == strlen(lit) && memcmp(p, lit, len) == 0;
}

bool pgtype_float4_exact(double d) {
  if (isnan(d) || isinf(d))
    return true;
  /* Converting a double beyond FLT_MAX to float is undefined. */
  if (fabs(d) > FLT_MAX)
    return false;
  return (double)(float)d == d;
}

/*
 * numeric's output form: -?(0|[1-9][0-9]*)(\.[0-9]+)?, no negative zero,
 * or NaN, Infinity, -Infinity. A column with a type modifier
 * numeric(p,s) rounds every value to s decimal places and refuses one
 * whose most significant digit lies at or beyond 10^(p-s); so a value it
 * keeps unchanged has exactly max(s,0) decimals, and, for s < 0, ends in
 * -s zeros.
 */
bool pgtype_decimal_valid(const char *p, size_t len, int32_t typmod, char *why,
                          size_t whylen) {
  bool has_typmod = typmod >= TYPMOD_OFFSET;
  int precision = 0, scale = 0;
  size_t i = 0, int_start, int_len, frac_start = 0, frac_len = 0;
  bool neg = false, zero = true;

  if (has_typmod) {
    int32_t t = typmod - TYPMOD_OFFSET;
    precision = (t >> 16) & 0xFFFF;
    scale = ((t & 0x7FF) ^ 1024) - 1024; /* 11-bit signed, PostgreSQL 15 */
  }
  if (text_is(p, len, "NaN"))
    return true;
  if (text_is(p, len, "Infinity") || text_is(p, len, "-Infinity")) {
    if (has_typmod)
      return refuse(why, whylen, "numeric(%d,%d) cannot hold an infinity",
                    precision, scale);
    return true;
  }
  if (i < len && p[i] == '-') {
    neg = true;
    i++;
  }
  int_start = i;
  while (i < len && is_digit(p[i]))
    i++;
  int_len = i - int_start;
  if (i < len && p[i] == '.') {
    frac_start = ++i;
    while (i < len && is_digit(p[i]))
      i++;
    frac_len = i - frac_start;
    if (frac_len == 0)
      i = 0; /* "1." */
  }
  if (i != len || int_len == 0 || (int_len > 1 && p[int_start] == '0'))
    return refuse(why, whylen,
                  "it is not a decimal in canonical form (digits with an "
                  "optional '-' and decimal point: no '+', exponent, "
                  "spaces or leading zeros), or NaN, Infinity, -Infinity");
  for (size_t k = int_start; k < int_start + int_len && zero; k++)
    zero = p[k] == '0';
  for (size_t k = frac_start; k < frac_start + frac_len && zero; k++)
    zero = p[k] == '0';
  if (neg && zero)
    return refuse(why, whylen, "PostgreSQL stores a negative zero as zero");
  if (int_len > NUMERIC_MAX_INT_DIGITS || frac_len > NUMERIC_MAX_FRAC_DIGITS)
    return refuse(why, whylen,
                  "numeric holds at most %d digits before the decimal "
                  "point and %d after it",
                  NUMERIC_MAX_INT_DIGITS, NUMERIC_MAX_FRAC_DIGITS);
  if (!has_typmod)
    return true;

  size_t want_frac = scale > 0 ? (size_t)scale : 0;
  if (frac_len != want_frac)
    return refuse(why, whylen,
                  "numeric(%d,%d) stores exactly %zu digit%s after the "
                  "decimal point",
                  precision, scale, want_frac, want_frac == 1 ? "" : "s");
  if (zero)
    return true;
  if (scale < 0) {
    size_t tail = (size_t)-scale;
    bool round = int_len > tail;
    for (size_t k = int_len - (round ? tail : 0); k < int_len && round; k++)
      round = p[int_start + k] == '0';
    if (!round)
      return refuse(why, whylen,
                    "numeric(%d,%d) rounds every value to a multiple of "
                    "10^%zu",
                    precision, scale, tail);
  }
  /* The position of the most significant digit: 3 for 123.4, -1 for
   * 0.05. */
  long pos;
  if (!(int_len == 1 && p[int_start] == '0')) {
    pos = (long)int_len;
  } else {
    size_t k = 0;
    while (k < frac_len && p[frac_start + k] == '0')
      k++;
    pos = -(long)k;
  }
  if (pos > (long)precision - scale)
    return refuse(why, whylen,
                  "numeric(%d,%d) holds only absolute values below 10^%ld",
                  precision, scale, (long)precision - scale);
  return true;
}

/* ------------------------------------------------------------------ */
/* Dates and timestamps                                                 */
/* ------------------------------------------------------------------ */

/* The first date PostgreSQL stores (Julian day 0): 4714-11-24 BC, year
 * -4713 counted astronomically (1 BC is year 0). */
#define MIN_ASTRO_YEAR (-4713)
#define MAX_DATE_YEAR 5874897
#define MAX_TIMESTAMP_YEAR 294276

static bool is_leap(int64_t astro_year) {
  return astro_year % 4 == 0 &&
         (astro_year % 100 != 0 || astro_year % 400 == 0);
}

static int days_in_month(int64_t astro_year, int month) {
  static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && is_leap(astro_year) ? 29 : days[month - 1];
}

/* Reads |n| digits at |p|[*i] into |*out|. */
static bool digits(const char *p, size_t len, size_t *i, size_t n, int *out) {
  int v = 0;
  if (len - *i < n)
    return false;
  for (size_t k = 0; k < n; k++) {
    if (!is_digit(p[*i + k]))
      return false;
    v = v * 10 + (p[*i + k] - '0');
  }
  *i += n;
  *out = v;
  return true;
}

typedef struct civil_date {
  int64_t year; /* as written, >= 1 */
  int month, day;
} civil_date;

/* YYYY-MM-DD at the start of |p|: a year of at least four digits, with no
 * leading zero beyond four; a real month and day of that year (leap years
 * counted from the BC flag, which comes later: the day is checked by the
 * caller). */
static bool read_ymd(const char *p, size_t len, size_t *pos, civil_date *d) {
  size_t i = 0, ylen;
  int64_t year = 0;
  while (i < len && is_digit(p[i]) && i < 10)
    year = year * 10 + (p[i++] - '0');
  ylen = i;
  if (ylen < 4 || (ylen > 4 && p[0] == '0') || year == 0)
    return false;
  if (i >= len || p[i++] != '-' || !digits(p, len, &i, 2, &d->month))
    return false;
  if (i >= len || p[i++] != '-' || !digits(p, len, &i, 2, &d->day))
    return false;
  if (d->month < 1 || d->month > 12 || d->day < 1)
    return false;
  d->year = year;
  *pos = i;
  return true;
}

/* Checks the day against the month of the astronomical year and the range
 * [4714-11-24 BC, max_year-12-31]. */
static bool date_in_range(const civil_date *d, bool bc, int64_t max_year,
                          const char *type, char *why, size_t whylen) {
  int64_t astro = bc ? 1 - d->year : d->year;
  if (d->day > days_in_month(astro, d->month))
    return refuse(why, whylen, "there is no such day");
  if (astro < MIN_ASTRO_YEAR ||
      (astro == MIN_ASTRO_YEAR &&
       (d->month < 11 || (d->month == 11 && d->day < 24))) ||
      astro > max_year)
    return refuse(why, whylen,
                  "it is out of the range of %s (4714-11-24 BC to "
                  "%" PRId64 "-12-31)",
                  type, max_year);
  return true;
}

static bool is_infinity(const char *p, size_t len) {
  return text_is(p, len, "infinity") || text_is(p, len, "-infinity");
}

static bool bc_suffix(const char *p, size_t len, size_t *i) {
  if (len - *i == 3 && memcmp(p + *i, " BC", 3) == 0) {
    *i += 3;
    return true;
  }
  return false;
}

bool pgtype_date_valid(const char *p, size_t len, char *why, size_t whylen) {
  civil_date d;
  size_t i = 0;
  if (is_infinity(p, len))
    return true;
  bool ok = read_ymd(p, len, &i, &d);
  bool bc = ok && bc_suffix(p, len, &i);
  if (!ok || i != len)
    return refuse(why, whylen,
                  "it is not a date in canonical form (YYYY-MM-DD, with "
                  "' BC' after a BC date), infinity or -infinity");
  return date_in_range(&d, bc, MAX_DATE_YEAR, "date", why, whylen);
}

bool pgtype_timestamp_valid(const char *p, size_t len, bool with_tz,
                            int32_t typmod, char *why, size_t whylen) {
  civil_date d;
  size_t i, frac = 0;
  int hour = 0, minute = 0, second = 0;
  bool bc = false, ok;
  if (is_infinity(p, len))
    return true;
  ok = read_ymd(p, len, &i, &d) && i < len && p[i++] == ' ' &&
       digits(p, len, &i, 2, &hour) && i < len && p[i++] == ':' &&
       digits(p, len, &i, 2, &minute) && i < len && p[i++] == ':' &&
       digits(p, len, &i, 2, &second);
  if (ok && i < len && p[i] == '.') {
    size_t start = ++i;
    while (i < len && is_digit(p[i]))
      i++;
    frac = i - start;
    /* PostgreSQL prints no trailing zero, and keeps microseconds. */
    ok = frac >= 1 && frac <= 6 && p[i - 1] != '0';
  }
  if (ok && with_tz) {
    ok = len - i >= 3 && memcmp(p + i, "+00", 3) == 0;
    i += 3;
  }
  if (ok) {
    bc = bc_suffix(p, len, &i);
    ok = i == len;
  }
  if (!ok)
    return refuse(
        why, whylen,
        with_tz ? "it is not a UTC timestamp in canonical form (YYYY-MM-DD "
                  "HH:MM:SS, up to 6 decimals without trailing zeros, "
                  "'+00', then ' BC' for BC), infinity or -infinity"
                : "it is not a timestamp in canonical form (YYYY-MM-DD "
                  "HH:MM:SS, up to 6 decimals without trailing zeros, "
                  "' BC' for BC), infinity or -infinity");
  if (hour > 23 || minute > 59 || second > 59)
    return refuse(why, whylen, "there is no such time of day");
  if (!date_in_range(&d, bc, MAX_TIMESTAMP_YEAR,
                     with_tz ? "timestamptz" : "timestamp", why, whylen))
    return false;
  if (typmod >= 0 && frac > (size_t)typmod)
    return refuse(why, whylen,
                  "the column keeps %d fractional digit%s of seconds", typmod,
                  typmod == 1 ? "" : "s");
  return true;
}

/* ------------------------------------------------------------------ */
/* JSON                                                                 */
/* ------------------------------------------------------------------ */

static size_t json_space(const char *p, size_t len, size_t i) {
  while (i < len &&
         (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
    i++;
  return i;
}

static bool hex4(const char *p, size_t len, size_t i, unsigned *out) {
  unsigned v = 0;
  if (i > len || len - i < 4)
    return false;
  for (size_t k = 0; k < 4; k++) {
    char c = p[i + k];
    int h = is_digit(c)              ? c - '0'
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                     : -1;
    if (h < 0)
      return false;
    v = v << 4 | (unsigned)h;
  }
  *out = v;
  return true;
}

/* A string starting at the quote |p|[*i]. jsonb decodes the escapes, and
 * refuses \u0000 and unpaired surrogates; json keeps them as written. */
static bool json_string(const char *p, size_t len, size_t *pos, bool jsonb,
                        const char **why) {
  size_t i = *pos + 1;
  while (i < len) {
    unsigned char c = (unsigned char)p[i];
    if (c == '"') {
      *pos = i + 1;
      return true;
    }
    if (c < 0x20) {
      *why = "a control character in a string is not escaped";
      return false;
    }
    if (c != '\\') {
      i++;
      continue;
    }
    if (++i >= len)
      break;
    if (p[i] && strchr("\"\\/bfnrt", p[i])) {
      i++;
      continue;
    }
    unsigned cp, low;
    if (p[i] != 'u' || !hex4(p, len, i + 1, &cp)) {
      *why = "a string holds an invalid escape";
      return false;
    }
    i += 5;
    if (!jsonb)
      continue;
    if (cp == 0) {
      *why = "jsonb cannot hold \\u0000";
      return false;
    }
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
      *why = "a low surrogate escape follows no high surrogate";
      return false;
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (len - i < 6 || p[i] != '\\' || p[i + 1] != 'u' ||
          !hex4(p, len, i + 2, &low) || low < 0xDC00 || low > 0xDFFF) {
        *why = "a high surrogate escape is not followed by a low one";
        return false;
      }
      i += 6;
    }
  }
  *why = "a string is not terminated";
  return false;
}

static bool json_number(const char *p, size_t len, size_t *pos) {
  size_t i = *pos;
  if (i < len && p[i] == '-')
    i++;
  if (i < len && p[i] == '0') {
    i++;
  } else if (i < len && p[i] >= '1' && p[i] <= '9') {
    while (i < len && is_digit(p[i]))
      i++;
  } else {
    return false;
  }
  if (i < len && p[i] == '.') {
    size_t start = ++i;
    while (i < len && is_digit(p[i]))
      i++;
    if (i == start)
      return false;
  }
  if (i < len && (p[i] == 'e' || p[i] == 'E')) {
    i++;
    if (i < len && (p[i] == '+' || p[i] == '-'))
      i++;
    size_t start = i;
    while (i < len && is_digit(p[i]))
      i++;
    if (i == start)
      return false;
  }
  /* PostgreSQL reads "1x" or "01" as one invalid token. */
  if (i < len && (is_digit(p[i]) || (p[i] >= 'a' && p[i] <= 'z') ||
                  (p[i] >= 'A' && p[i] <= 'Z') || p[i] == '_' ||
                  (unsigned char)p[i] >= 0x80))
    return false;
  *pos = i;
  return true;
}

static bool json_literal(const char *p, size_t len, size_t *pos) {
  static const char *const words[] = {"true", "false", "null"};
  for (size_t w = 0; w < 3; w++) {
    size_t n = strlen(words[w]);
    if (len - *pos >= n && memcmp(p + *pos, words[w], n) == 0) {
      size_t end = *pos + n;
      if (end < len && (is_digit(p[end]) || (p[end] >= 'a' && p[end] <= 'z') ||
                        (p[end] >= 'A' && p[end] <= 'Z') || p[end] == '_' ||
                        (unsigned char)p[end] >= 0x80))
        return false;
      *pos = end;
      return true;
    }
  }
  return false;
}

/* A key, its colon and the space before the value. */
static bool json_key(const char *p, size_t len, size_t *pos, bool jsonb,
                     const char **why) {
  size_t i = *pos;
  if (i >= len || p[i] != '"') {
    *why = "an object key is not a string";
    return false;
  }
  if (!json_string(p, len, &i, jsonb, why))
    return false;
  i = json_space(p, len, i);
  if (i >= len || p[i] != ':') {
    *why = "an object key is not followed by ':'";
    return false;
  }
  *pos = json_space(p, len, i + 1);
  return true;
}

/* The open containers of a JSON text, a bit each (set: an object): inline
 * for usual depths, on the heap beyond. */
typedef struct json_stack {
  uint8_t inline_bits[64];
  uint8_t *bits;
  size_t cap; /* in containers */
} json_stack;

static bool json_push(json_stack *st, size_t depth, bool object) {
  if (depth == st->cap) {
    size_t cap = st->cap * 2;
    uint8_t *bits = malloc(cap / 8);
    if (!bits)
      return false;
    memcpy(bits, st->bits, st->cap / 8);
    if (st->bits != st->inline_bits)
      free(st->bits);
    st->bits = bits;
    st->cap = cap;
  }
  if (object)
    st->bits[depth / 8] |= (uint8_t)(1u << (depth % 8));
  else
    st->bits[depth / 8] &= (uint8_t) ~(1u << (depth % 8));
  return true;
}

static bool json_is_object(const json_stack *st, size_t depth) {
  return st->bits[depth / 8] >> (depth % 8) & 1;
}

/* Where |p|[*pos] starts a value: past it, or past the opening of a
 * container (and the first key of an object), pushed. */
static bool json_value(const char *p, size_t len, size_t *pos, bool jsonb,
                       json_stack *st, size_t *depth, const char **why) {
  size_t i = *pos;
  if (i >= len) {
    *why = "a value is missing";
    return false;
  }
  if (p[i] == '{' || p[i] == '[') {
    bool object = p[i] == '{';
    if (!json_push(st, *depth, object)) {
      *why = "it is nested too deep to check (out of memory)";
      return false;
    }
    (*depth)++;
    i = json_space(p, len, i + 1);
    if (i < len && p[i] == (object ? '}' : ']')) {
      (*depth)--;
      i++;
    } else if (object && !json_key(p, len, &i, jsonb, why)) {
      *pos = i;
      return false;
    }
  } else if (p[i] == '"') {
    if (!json_string(p, len, &i, jsonb, why))
      return false;
  } else if (p[i] == '-' || is_digit(p[i])) {
    if (!json_number(p, len, &i)) {
      *why = "a number is malformed";
      return false;
    }
  } else if (!json_literal(p, len, &i)) {
    *why = "a token is invalid";
    return false;
  }
  *pos = i;
  return true;
}

/*
 * JSON as PostgreSQL's json and jsonb input accept it (RFC 8259: any
 * value at the top, whitespace only space, tab, CR and LF). Iterative, so
 * nesting costs no C stack: the server's own limit (max_stack_depth)
 * decides how deep is too deep.
 */
bool pgtype_json_valid(const char *p, size_t len, bool jsonb, char *why,
                       size_t whylen) {
  json_stack st;
  size_t depth = 0, i = json_space(p, len, 0);
  const char *reason = NULL;
  bool after_value = false;

  st.bits = st.inline_bits;
  st.cap = 8 * sizeof st.inline_bits;
  while (!reason) {
    size_t open = depth;
    if (!after_value) {
      if (!json_value(p, len, &i, jsonb, &st, &depth, &reason))
        break;
      /* A container just opened holds a value to read first. */
      after_value = depth <= open;
      continue;
    }
    /* After a value: close containers, or go on to the next element. */
    i = json_space(p, len, i);
    if (depth == 0) {
      if (i != len)
        reason = "characters follow the value";
      break;
    }
    bool object = json_is_object(&st, depth - 1);
    if (i < len && p[i] == (object ? '}' : ']')) {
      depth--;
      i++;
    } else if (i < len && p[i] == ',') {
      i = json_space(p, len, i + 1);
      if (object && !json_key(p, len, &i, jsonb, &reason))
        break;
      after_value = false;
    } else {
      reason = object ? "an object member is not followed by ',' or '}'"
                      : "an array element is not followed by ',' or ']'";
    }
  }
  if (st.bits != st.inline_bits)
    free(st.bits);
  if (!reason)
    return true;
  return refuse(why, whylen, "it is not valid JSON: %s (at byte %zu)", reason,
                i);
}

/* ------------------------------------------------------------------ */
/* Checking received values                                             */
/* ------------------------------------------------------------------ */

static const char *kind_name(lipsync_type type) {
  switch (type) {
  case LIPSYNC_INTEGER:
    return "INTEGER";
  case LIPSYNC_REAL:
    return "REAL";
  case LIPSYNC_TEXT:
    return "TEXT";
  case LIPSYNC_BLOB:
    return "BLOB";
  default:
    return "NULL";
  }
}

lipsync_type pgtype_value_kind(pgtype_kind kind) {
  switch (kind) {
  case PGTYPE_INT2:
  case PGTYPE_INT4:
  case PGTYPE_INT8:
  case PGTYPE_BOOL:
    return LIPSYNC_INTEGER;
  case PGTYPE_FLOAT4:
  case PGTYPE_FLOAT8:
    return LIPSYNC_REAL;
  case PGTYPE_BYTEA:
    return LIPSYNC_BLOB;
  default:
    return LIPSYNC_TEXT;
  }
}

static size_t utf8_chars(const uint8_t *p, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    n += (p[i] & 0xC0) != 0x80;
  return n;
}

static bool check_text(const pgtype *t, const char *p, size_t len, char *why,
                       size_t whylen) {
  const uint8_t *u = (const uint8_t *)p;
  if (!canon_utf8_valid(u, len))
    return refuse(why, whylen, "it is not valid UTF-8");
  if (len && memchr(p, '\0', len))
    return refuse(why, whylen, "PostgreSQL text cannot hold U+0000");
  switch (t->kind) {
  case PGTYPE_VARCHAR:
    if (t->typmod >= TYPMOD_OFFSET &&
        utf8_chars(u, len) > (size_t)(t->typmod - TYPMOD_OFFSET))
      return refuse(why, whylen, "it is longer than %d characters",
                    t->typmod - TYPMOD_OFFSET);
    return true;
  case PGTYPE_BPCHAR:
    /* char(n) pads a shorter value, and cuts trailing spaces off a longer
     * one, without an error. */
    if (t->typmod >= TYPMOD_OFFSET &&
        utf8_chars(u, len) != (size_t)(t->typmod - TYPMOD_OFFSET))
      return refuse(why, whylen,
                    "a char(%d) value has exactly %d characters, padded "
                    "with spaces",
                    t->typmod - TYPMOD_OFFSET, t->typmod - TYPMOD_OFFSET);
    return true;
  case PGTYPE_NAME:
    if (len > NAME_MAX_BYTES)
      return refuse(why, whylen, "a name holds at most %d bytes",
                    NAME_MAX_BYTES);
    return true;
  case PGTYPE_DATE:
    return pgtype_date_valid(p, len, why, whylen);
  case PGTYPE_TIMESTAMP:
  case PGTYPE_TIMESTAMPTZ:
    return pgtype_timestamp_valid(p, len, t->kind == PGTYPE_TIMESTAMPTZ,
                                  t->typmod, why, whylen);
  case PGTYPE_NUMERIC:
    return pgtype_decimal_valid(p, len, t->typmod, why, whylen);
  case PGTYPE_JSON:
  case PGTYPE_JSONB:
    return pgtype_json_valid(p, len, t->kind == PGTYPE_JSONB, why, whylen);
  case PGTYPE_UUID: {
    uint8_t raw[LIPSYNC_UUID_LEN];
    if (lipsync_uuid_parse(p, len, raw) != 0)
      return refuse(why, whylen,
                    "it is not a UUID in canonical form (36 characters, "
                    "lowercase hexadecimal 8-4-4-4-12)");
    return true;
  }
  default:
    return true;
  }
}

bool pgtype_check(const pgtype *t, const lipsync_value *v, char *why,
                  size_t whylen) {
  lipsync_type want = pgtype_value_kind(t->kind);
  if (v->type == LIPSYNC_NULL)
    return true;
  if ((unsigned)v->type > LIPSYNC_BLOB)
    return refuse(why, whylen, "its type %d is unknown", (int)v->type);
  if (v->type != want)
    return refuse(why, whylen, "a %s column takes %s values%s",
                  pgtype_canonical(t->kind), kind_name(want),
                  t->kind == PGTYPE_BOOL ? " (0 or 1)" : "");
  switch (t->kind) {
  case PGTYPE_INT2:
    if (v->u.integer < INT16_MIN || v->u.integer > INT16_MAX)
      return refuse(why, whylen, "it is out of the range of smallint");
    return true;
  case PGTYPE_INT4:
    if (v->u.integer < INT32_MIN || v->u.integer > INT32_MAX)
      return refuse(why, whylen, "it is out of the range of integer");
    return true;
  case PGTYPE_BOOL:
    if (v->u.integer != 0 && v->u.integer != 1)
      return refuse(why, whylen, "a boolean is 0 or 1");
    return true;
  case PGTYPE_FLOAT4:
    if (!pgtype_float4_exact(v->u.real))
      return refuse(why, whylen, "it is not exactly a float4 (real) value");
    return true;
  case PGTYPE_INT8:
  case PGTYPE_FLOAT8:
  case PGTYPE_BYTEA:
    return true;
  default:
    return check_text(t, v->u.bytes.data, v->u.bytes.len, why, whylen);
  }
}

/* ------------------------------------------------------------------ */
/* COPY text format                                                     */
/* ------------------------------------------------------------------ */

int pgtype_copy_escape(bytebuf *out, const void *data, size_t len) {
  const uint8_t *p = data;
  size_t start = 0;
  int rc = bytebuf_reserve(out, len + 16);
  if (rc)
    return rc;
  for (size_t i = 0; i < len; i++) {
    char esc;
    switch (p[i]) {
    case '\\':
      esc = '\\';
      break;
    case '\n':
      esc = 'n';
      break;
    case '\r':
      esc = 'r';
      break;
    case '\t':
      esc = 't';
      break;
    default:
      continue;
    }
    char pair[2] = {'\\', esc};
    if ((rc = bytebuf_append(out, p + start, i - start)) != 0 ||
        (rc = bytebuf_append(out, pair, 2)) != 0)
      return rc;
    start = i + 1;
  }
  return bytebuf_append(out, p + start, len - start);
}

int pgtype_copy_append(bytebuf *out, const pgtype *t, const lipsync_value *v) {
  static const char hex[] = "0123456789abcdef";
  char text[32];
  int rc;
  switch (v->type) {
  case LIPSYNC_NULL:
    return bytebuf_append(out, "\\N", 2);
  case LIPSYNC_INTEGER:
    if (t->kind == PGTYPE_BOOL)
      return bytebuf_append(out, v->u.integer ? "t" : "f", 1);
    snprintf(text, sizeof text, "%" PRId64, v->u.integer);
    return bytebuf_append(out, text, strlen(text));
  case LIPSYNC_REAL:
    pgtype_format_double(v->u.real, text);
    return bytebuf_append(out, text, strlen(text));
  case LIPSYNC_BLOB: {
    /* bytea's hex input, its backslash escaped for COPY. */
    const uint8_t *p = v->u.bytes.data;
    size_t n = v->u.bytes.len;
    if ((rc = bytebuf_reserve(out, 3 + 2 * n)) != 0)
      return rc;
    uint8_t *o = out->data + out->len;
    *o++ = '\\';
    *o++ = '\\';
    *o++ = 'x';
    for (size_t i = 0; i < n; i++) {
      *o++ = (uint8_t)hex[p[i] >> 4];
      *o++ = (uint8_t)hex[p[i] & 15];
    }
    out->len += 3 + 2 * n;
    return 0;
  }
  default:
    return pgtype_copy_escape(out, v->u.bytes.data, v->u.bytes.len);
  }
}

/* ------------------------------------------------------------------ */
/* Binary results                                                       */
/* ------------------------------------------------------------------ */

static uint64_t load_be(const char *data, size_t n) {
  const uint8_t *p = (const uint8_t *)data;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

int pgtype_from_binary(const pgtype *t, const char *data, size_t len,
                       char scratch[37], lipsync_value *v, char *why,
                       size_t whylen) {
  size_t want = 0;
  switch (t->kind) {
  case PGTYPE_INT2:
    want = 2;
    break;
  case PGTYPE_INT4:
  case PGTYPE_FLOAT4:
    want = 4;
    break;
  case PGTYPE_INT8:
  case PGTYPE_FLOAT8:
    want = 8;
    break;
  case PGTYPE_BOOL:
    want = 1;
    break;
  case PGTYPE_UUID:
    want = LIPSYNC_UUID_LEN;
    break;
  default:
    break;
  }
  if (want && len != want) {
    refuse(why, whylen, "the server sent a %s of %zu bytes",
           pgtype_canonical(t->kind), len);
    return LIPSYNC_ERR_STORAGE;
  }
  switch (t->kind) {
  case PGTYPE_INT2:
    v->type = LIPSYNC_INTEGER;
    v->u.integer = (int16_t)load_be(data, 2);
    return 0;
  case PGTYPE_INT4:
    v->type = LIPSYNC_INTEGER;
    v->u.integer = (int32_t)load_be(data, 4);
    return 0;
  case PGTYPE_INT8:
    v->type = LIPSYNC_INTEGER;
    v->u.integer = (int64_t)load_be(data, 8);
    return 0;
  case PGTYPE_BOOL:
    v->type = LIPSYNC_INTEGER;
    v->u.integer = data[0] != 0;
    return 0;
  case PGTYPE_FLOAT4: {
    uint32_t bits = (uint32_t)load_be(data, 4);
    float f;
    memcpy(&f, &bits, sizeof f);
    v->type = LIPSYNC_REAL;
    v->u.real = f; /* exact */
    return 0;
  }
  case PGTYPE_FLOAT8: {
    uint64_t bits = load_be(data, 8);
    v->type = LIPSYNC_REAL;
    memcpy(&v->u.real, &bits, sizeof v->u.real);
    return 0;
  }
  case PGTYPE_UUID:
    lipsync_uuid_format((const uint8_t *)data, scratch);
    v->type = LIPSYNC_TEXT;
    v->u.bytes.data = scratch;
    v->u.bytes.len = 36;
    return 0;
  case PGTYPE_BYTEA:
    v->type = LIPSYNC_BLOB;
    v->u.bytes.data = data;
    v->u.bytes.len = len;
    return 0;
  default:
    /* The text kinds arrive in the client encoding, UTF-8; a SQL_ASCII
     * database may still hold other bytes. */
    if (!canon_utf8_valid((const uint8_t *)data, len)) {
      refuse(why, whylen, "it holds text that is not valid UTF-8");
      return LIPSYNC_ERR_INVALID_VALUE;
    }
    v->type = LIPSYNC_TEXT;
    v->u.bytes.data = data;
    v->u.bytes.len = len;
    return 0;
  }
}
