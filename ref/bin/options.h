/*
 * options.h: the command line of lipsync-server and lipsync-client.
 *
 * Each program describes its options in one table of cli_option entries:
 * the long name, the kind, the config field the value goes to and the
 * usage error for a bad value. The kind says whether the option takes a
 * value, how the value is parsed and what type the field has; the CLI_*
 * entry macros below check that type at compile time. cli_options_parse()
 * runs getopt_long over the table, so both programs accept, refuse and
 * report options the same way; each program keeps only its defaults and
 * the checks that span several options.
 */
#ifndef LIPSYNC_OPTIONS_H
#define LIPSYNC_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cli.h"
#include "lipsync.h"

/* One HOST:PORT: HOST is an IPv4 address, a bracketed IPv6 address
 * ("[::1]", brackets removed here) or a host name. */
typedef struct cli_hostport {
  char host[CLI_HOST_MAX];
  char port[6];
} cli_hostport;

/* The values of a repeatable option, in command-line order. */
typedef struct cli_list {
  const char **items;
  size_t count;
} cli_list;

/* The option --max-session-memory MIB, shared by both programs. */
#define CLI_SERVER_MEMORY_HELP                                                 \
  "  --max-session-memory MIB\n"                                               \
  "                      fail a session that would buffer more than MIB\n"     \
  "                      MiB for its peer (default 256; 0 = no bound):\n"      \
  "                      rows held for the end, UUIDs received, asked\n"       \
  "                      for or to send, and the frame being read\n"
#define CLI_MEMORY_MAX_MIB (1024L * 1024L)
#define CLI_MEMORY_USAGE                                                       \
  "--max-session-memory takes a number of MiB from 0 to 1048576"

/* How an option's value is parsed, and the type of the field it is stored
 * in. */
typedef enum cli_option_kind {
  CLI_OPT_FLAG,     /* no value; int set to 1 */
  CLI_OPT_STRING,   /* const char *: the argument itself */
  CLI_OPT_TIMEOUT,  /* int: seconds (fractions allowed) in ms, >= min */
  CLI_OPT_COUNT,    /* long: a decimal number in [min, max] */
  CLI_OPT_SIZE,     /* size_t: a decimal number in [min, max] */
  CLI_OPT_MEMORY,   /* size_t: MiB (0..CLI_MEMORY_MAX_MIB) in bytes */
  CLI_OPT_POLICY,   /* lipsync_policy: lww, server-wins or client-wins */
  CLI_OPT_HOSTPORT, /* cli_hostport: HOST:PORT, the port at least min */
  CLI_OPT_DURATION, /* uint64_t: N, Nms, Ns, Nm, Nh or Nd in ms */
  CLI_OPT_LIST,     /* cli_list: each use appends its argument */
  CLI_OPT_CUSTOM,   /* a value handed to |custom| with the whole config */
  CLI_OPT_HELP,     /* no value; prints the full usage, exits 0 */
  CLI_OPT_VERSION   /* no value; prints the version, exits 0 */
} cli_option_kind;

typedef struct cli_option {
  const char *name; /* without the leading "--" */
  cli_option_kind kind;
  size_t offset; /* of the field in the program's config */
  long min, max; /* see cli_option_kind */
  int nonempty;  /* STRING, LIST: refuse "" */
  /* The usage error for a value the kind refuses. */
  const char *message;
  /* LIST: the usage error for a value given twice; NULL allows it. */
  const char *repeated;
  /* CUSTOM: stores |arg| into |config|. Returns 0, or -1 with the
   * message in |err| (or left empty: |message|). */
  int (*custom)(void *config, const char *arg, char *err, size_t errlen);
} cli_option;

/* The offset of |member| in |type|, refused at compile time unless the
 * member has type |ctype|: the parser stores through it as a |ctype|. */
#define CLI_FIELD(type, member, ctype)                                         \
  .offset = _Generic(((type *)0)->member, ctype : offsetof(type, member))

/* The kind and field of an entry: {"name", CLI_FLAG(config, field)}. */
#define CLI_FLAG(type, member)                                                 \
  .kind = CLI_OPT_FLAG, CLI_FIELD(type, member, int)
#define CLI_STRING(type, member)                                               \
  .kind = CLI_OPT_STRING, CLI_FIELD(type, member, const char *)
#define CLI_TIMEOUT(type, member, min_ms)                                      \
  .kind = CLI_OPT_TIMEOUT, CLI_FIELD(type, member, int), .min = (min_ms)
#define CLI_COUNT(type, member, lo, hi)                                        \
  .kind = CLI_OPT_COUNT, CLI_FIELD(type, member, long), .min = (lo), .max = (hi)
#define CLI_SIZE(type, member, lo, hi)                                         \
  .kind = CLI_OPT_SIZE, CLI_FIELD(type, member, size_t), .min = (lo),          \
  .max = (hi)
#define CLI_MEMORY(type, member)                                               \
  .kind = CLI_OPT_MEMORY, CLI_FIELD(type, member, size_t)
#define CLI_POLICY(type, member)                                               \
  .kind = CLI_OPT_POLICY, CLI_FIELD(type, member, lipsync_policy)
#define CLI_HOSTPORT(type, member, lowest_port)                                \
  .kind = CLI_OPT_HOSTPORT, CLI_FIELD(type, member, cli_hostport),             \
  .min = (lowest_port)
#define CLI_DURATION(type, member)                                             \
  .kind = CLI_OPT_DURATION, CLI_FIELD(type, member, uint64_t)
#define CLI_LIST(type, member)                                                 \
  .kind = CLI_OPT_LIST, CLI_FIELD(type, member, cli_list)
#define CLI_CUSTOM(function) .kind = CLI_OPT_CUSTOM, .custom = (function)
#define CLI_HELP .kind = CLI_OPT_HELP
#define CLI_VERSION .kind = CLI_OPT_VERSION

/* A program's command line. */
typedef struct cli_program {
  const char *name; /* prefixes every message */
  /* Prints the usage to |out|: all of it if |full|, else the synopsis
   * and a pointer to --help. */
  void (*usage)(FILE *out, int full);
  const cli_option *options;
  size_t noptions;
} cli_program;

/* Fills |config| from |argv| by the table of |program|: each option is
 * stored by its kind, in command-line order (a later use overrides an
 * earlier one, but for lists). Stops at --help or --version (printed to
 * stdout) or at the first bad option (reported on stderr with the short
 * usage); refuses, the same way, an argument that is not an option.
 * Returns -1 to go on, else the exit status. Call cli_options_free()
 * afterwards either way. */
int cli_options_parse(const cli_program *program, void *config, int argc,
                      char **argv);

/* Frees what cli_options_parse() allocated in |config| (the lists). */
void cli_options_free(const cli_program *program, void *config);

/* Prints "PROG: |message|" (unless |message| is NULL) and the short usage
 * on stderr. Returns CLI_EXIT_USAGE. */
int cli_usage_error(const cli_program *program, const char *message);

#endif /* LIPSYNC_OPTIONS_H */
