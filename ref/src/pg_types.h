/*
 * pg_types.h: the PostgreSQL column types LipSync maps to canonical types,
 * and what a value of each looks like in both directions: the canonical
 * form a received value must have before it may enter a COPY stream, its
 * encoding in COPY's text format, and how a binary result field becomes a
 * canonical value.
 *
 * Nothing here talks to a server: store_pg.c does, and the unit tests
 * check these rules without one.
 */
#ifndef LIPSYNC_PG_TYPES_H
#define LIPSYNC_PG_TYPES_H

#include "buf.h"
#include "lipsync.h"

#include <stdbool.h>
#include <stdint.h>

/* Every PostgreSQL type with a canonical mapping (design table). */
typedef enum pgtype_kind {
  PGTYPE_INT2,
  PGTYPE_INT4,
  PGTYPE_INT8,
  PGTYPE_FLOAT4,
  PGTYPE_FLOAT8,
  PGTYPE_NUMERIC,
  PGTYPE_BOOL,
  PGTYPE_TEXT, /* text and citext */
  PGTYPE_VARCHAR,
  PGTYPE_BPCHAR,
  PGTYPE_NAME,
  PGTYPE_BYTEA,
  PGTYPE_DATE,
  PGTYPE_TIMESTAMP,
  PGTYPE_TIMESTAMPTZ,
  PGTYPE_JSON,
  PGTYPE_JSONB,
  PGTYPE_UUID
} pgtype_kind;

/* A column's type: its kind and PostgreSQL's atttypmod (-1 for none),
 * which bounds lengths, precisions and scales. */
typedef struct pgtype {
  pgtype_kind kind;
  int32_t typmod;
} pgtype;

/* Built-in type OIDs (fixed by PostgreSQL's catalog). */
#define PGTYPE_OID_UUID 2950u
#define PGTYPE_OID_TEXT 25u
#define PGTYPE_OID_TEXT_ARRAY 1009u

/* Maps the type |oid| (with |typmod|) of a column to |*out|. |is_citext|
 * says the type is the citext extension's, whose OID varies. Returns false
 * for a type with no canonical mapping. */
bool pgtype_from_oid(uint32_t oid, int32_t typmod, bool is_citext, pgtype *out);

/* The canonical type name of |kind| ("integer", "decimal", ...). */
const char *pgtype_canonical(pgtype_kind kind);
/* The kind of value a column of |kind| takes (spec 6.2.2). */
lipsync_type pgtype_value_kind(pgtype_kind kind);

/* True if a SELECT must read the column as ::text: its canonical form is
 * PostgreSQL's text output, not its binary send format. */
bool pgtype_select_as_text(pgtype_kind kind);

/* True if the value |v| is in the canonical form of a column of type |t|
 * (NULL always is). Otherwise writes the reason into |why|, phrased to
 * follow "cannot store <value>: ". Values of jsonb columns are checked for
 * JSON syntax only: whether they are jsonb's normalized form only the
 * server can say. */
bool pgtype_check(const pgtype *t, const lipsync_value *v, char *why,
                  size_t whylen);

/* Appends |v| (checked by pgtype_check) to |out| as one field of COPY's
 * text format, NULL as \N. Returns 0 or LIPSYNC_ERR_NOMEM. */
int pgtype_copy_append(bytebuf *out, const pgtype *t, const lipsync_value *v);

/* Appends the escaped COPY text form of |len| bytes at |p|. */
int pgtype_copy_escape(bytebuf *out, const void *p, size_t len);

/* Turns the binary result field |data| (|len| bytes) of a column of type
 * |t|, selected as pgtype_select_as_text() says, into |*v|, which points
 * into |data| or, for uuid columns, into |scratch| (37 bytes). Returns 0;
 * LIPSYNC_ERR_INVALID_VALUE for text that is not UTF-8 (LS-VALUE-5), or
 * LIPSYNC_ERR_STORAGE for a malformed field, with the reason in |why|. */
int pgtype_from_binary(const pgtype *t, const char *data, size_t len,
                       char scratch[37], lipsync_value *v, char *why,
                       size_t whylen);

/* The canonical-form checks, one per text form, for the tests. Each
 * returns true if |p|[0..len) is canonical. */
bool pgtype_decimal_valid(const char *p, size_t len, int32_t typmod, char *why,
                          size_t whylen);
bool pgtype_date_valid(const char *p, size_t len, char *why, size_t whylen);
bool pgtype_timestamp_valid(const char *p, size_t len, bool with_tz,
                            int32_t typmod, char *why, size_t whylen);
bool pgtype_json_valid(const char *p, size_t len, bool jsonb, char *why,
                       size_t whylen);
/* True if |d| is exactly a float4 value (NaN and the infinities are). */
bool pgtype_float4_exact(double d);

/* Writes |d| as decimal text that reads back exactly as |d| ("NaN",
 * "Infinity", "-Infinity" and "-0" included), whatever the C locale, as
 * PostgreSQL's float4 and float8 input take it. |out| has 32 bytes. */
void pgtype_format_double(double d, char out[32]);

#endif
