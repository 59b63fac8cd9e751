/*
 * options.c: the table-driven command-line parser of both programs (see
 * options.h), and the parsers of the values its option kinds take.
 */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- values ----------------------------------------------------------- */

/* A decimal integer in [min, max]. Unlike strtol() alone, refuses leading
 * blanks and signs: "+5" and " 5" are typing errors, not numbers. */
static int parse_count(const char *text, long min, long max, long *out) {
  char *end;
  errno = 0;
  if (text[0] < '0' || text[0] > '9')
    return -1;
  long value = strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || value < min || value > max)
    return -1;
  *out = value;
  return 0;
}

static int parse_port(const char *text, int allow_zero, cli_hostport *out,
                      char *err, size_t errlen) {
  long port;
  if (parse_count(text, allow_zero ? 0 : 1, 65535, &port) < 0) {
    snprintf(err, errlen, "invalid port \"%s\" (%s..65535)", text,
             allow_zero ? "0" : "1");
    return -1;
  }
  snprintf(out->port, sizeof out->port, "%ld", port);
  return 0;
}

static int set_host(cli_hostport *out, const char *host, size_t len, char *err,
                    size_t errlen) {
  if (len == 0 || len >= sizeof out->host) {
    snprintf(err, errlen, "invalid host in address");
    return -1;
  }
  memcpy(out->host, host, len);
  out->host[len] = '\0';
  return 0;
}

/* HOST:PORT or [IPv6]:PORT into |out|; port 0 only if |allow_port_zero|.
 * Returns 0, or -1 with the reason in |err|. */
static int parse_hostport(const char *text, int allow_port_zero,
                          cli_hostport *out, char *err, size_t errlen) {
  const char *colon;
  const char *host = text;
  size_t hostlen;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (close == NULL || close[1] != ':') {
      snprintf(err, errlen, "invalid address \"%s\" (expected [IPv6]:PORT)",
               text);
      return -1;
    }
    host = text + 1;
    hostlen = (size_t)(close - host);
    colon = close + 1;
  } else {
    colon = strrchr(text, ':');
    /* An unbracketed IPv6 address has several colons: which one starts the
     * port is ambiguous, so refuse it rather than guess. */
    if (colon == NULL || memchr(text, ':', (size_t)(colon - text)) != NULL) {
      snprintf(err, errlen,
               "invalid address \"%s\" (expected HOST:PORT or [IPv6]:PORT)",
               text);
      return -1;
    }
    hostlen = (size_t)(colon - text);
  }
  if (set_host(out, host, hostlen, err, errlen) < 0)
    return -1;
  return parse_port(colon + 1, allow_port_zero, out, err, errlen);
}

/* Seconds, fractions allowed (0 = none), into milliseconds. */
static int parse_timeout(const char *text, int *timeout_ms) {
  char *end;
  errno = 0;
  double seconds = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !isfinite(seconds) ||
      seconds < 0 || seconds * 1000.0 > (double)INT_MAX)
    return -1;
  *timeout_ms = (int)(seconds * 1000.0);
  /* A positive timeout below a millisecond still means "a timeout". */
  if (*timeout_ms == 0 && seconds > 0)
    *timeout_ms = 1;
  return 0;
}

/* N (seconds), Nms, Ns, Nm, Nh or Nd into milliseconds. */
static int parse_duration_ms(const char *text, uint64_t *ms) {
  static const struct {
    const char *suffix;
    uint64_t ms;
  } units[] = {{"", 1000},   {"ms", 1},      {"s", 1000},
               {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  char *end;
  if (text[0] < '0' || text[0] > '9')
    return -1;
  errno = 0;
  unsigned long long n = strtoull(text, &end, 10);
  if (errno != 0)
    return -1;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcmp(end, units[i].suffix) == 0) {
      if (n > UINT64_MAX / units[i].ms)
        return -1;
      *ms = n * units[i].ms;
      return 0;
    }
  return -1;
}

/* ---- storing a value by its kind ---------------------------------------- */

/* Stores |arg| into |field| as |opt| says. Returns 0, or -1 with the
 * reason in |err| or, when the reason is the entry's own message, |err|
 * left empty. */
typedef int (*store_fn)(const cli_option *opt, void *field, const char *arg,
                        char *err, size_t errlen);

static int store_flag(const cli_option *opt, void *field, const char *arg,
                      char *err, size_t errlen) {
  *(int *)field = 1;
  return 0;
}

static int store_string(const cli_option *opt, void *field, const char *arg,
                        char *err, size_t errlen) {
  if (opt->nonempty && arg[0] == '\0')
    return -1;
  *(const char **)field = arg;
  return 0;
}

static int store_timeout(const cli_option *opt, void *field, const char *arg,
                         char *err, size_t errlen) {
  int ms;
  if (parse_timeout(arg, &ms) < 0 || ms < opt->min)
    return -1;
  *(int *)field = ms;
  return 0;
}

static int store_count(const cli_option *opt, void *field, const char *arg,
                       char *err, size_t errlen) {
  return parse_count(arg, opt->min, opt->max, field);
}

static int store_size(const cli_option *opt, void *field, const char *arg,
                      char *err, size_t errlen) {
  long count;
  if (parse_count(arg, opt->min, opt->max, &count) < 0)
    return -1;
  *(size_t *)field = (size_t)count;
  return 0;
}

static int store_memory(const cli_option *opt, void *field, const char *arg,
                        char *err, size_t errlen) {
  long mib;
  if (parse_count(arg, 0, CLI_MEMORY_MAX_MIB, &mib) < 0)
    return -1;
  *(size_t *)field = (size_t)mib * 1024 * 1024;
  return 0;
}

static int store_policy(const cli_option *opt, void *field, const char *arg,
                        char *err, size_t errlen) {
  return lipsync_policy_parse(arg, field) < 0 ? -1 : 0;
}

static int store_hostport(const cli_option *opt, void *field, const char *arg,
                          char *err, size_t errlen) {
  return parse_hostport(arg, opt->min == 0, field, err, errlen);
}

static int store_duration(const cli_option *opt, void *field, const char *arg,
                          char *err, size_t errlen) {
  return parse_duration_ms(arg, field);
}

static int store_list(const cli_option *opt, void *field, const char *arg,
                      char *err, size_t errlen) {
  cli_list *list = field;
  for (size_t i = 0; opt->repeated != NULL && i < list->count; i++) {
    if (strcmp(list->items[i], arg) == 0) {
      snprintf(err, errlen, "%s", opt->repeated);
      return -1;
    }
  }
  if (opt->nonempty && arg[0] == '\0')
    return -1;
  /* cli_options_parse() made room for every word of argv. */
  list->items[list->count++] = arg;
  return 0;
}

/* A CUSTOM entry leaves its offset 0, so its field is the whole config. */
static int store_custom(const cli_option *opt, void *field, const char *arg,
                        char *err, size_t errlen) {
  return opt->custom(field, arg, err, errlen);
}

static const struct {
  int has_arg; /* for getopt_long */
  store_fn store;
} kinds[] = {
    [CLI_OPT_FLAG] = {no_argument, store_flag},
    [CLI_OPT_STRING] = {required_argument, store_string},
    [CLI_OPT_TIMEOUT] = {required_argument, store_timeout},
    [CLI_OPT_COUNT] = {required_argument, store_count},
    [CLI_OPT_SIZE] = {required_argument, store_size},
    [CLI_OPT_MEMORY] = {required_argument, store_memory},
    [CLI_OPT_POLICY] = {required_argument, store_policy},
    [CLI_OPT_HOSTPORT] = {required_argument, store_hostport},
    [CLI_OPT_DURATION] = {required_argument, store_duration},
    [CLI_OPT_LIST] = {required_argument, store_list},
    [CLI_OPT_CUSTOM] = {required_argument, store_custom},
    /* No store: they end parsing (apply_option). */
    [CLI_OPT_HELP] = {no_argument, NULL},
    [CLI_OPT_VERSION] = {no_argument, NULL},
};

/* ---- the parser --------------------------------------------------------- */

/* getopt_long returns FIRST_ID + i for entry i of the table: above every
 * character, so never taken for its '?' (unknown option, missing value). */
#define FIRST_ID 256

int cli_usage_error(const cli_program *program, const char *message) {
  if (message != NULL)
    fprintf(stderr, "%s: %s\n", program->name, message);
  program->usage(stderr, 0);
  return CLI_EXIT_USAGE;
}

static void *field_of(const cli_option *opt, void *config) {
  return (char *)config + opt->offset;
}

/* The getopt_long table, in the order of |program|'s: getopt_long lists
 * the candidates of an ambiguous abbreviation in that order. */
static struct option *getopt_table(const cli_program *program) {
  struct option *longopts = calloc(program->noptions + 1, sizeof *longopts);
  for (size_t i = 0; longopts != NULL && i < program->noptions; i++) {
    const cli_option *opt = &program->options[i];
    longopts[i] = (struct option){opt->name, kinds[opt->kind].has_arg, NULL,
                                  FIRST_ID + (int)i};
  }
  return longopts;
}

/* Gives each list room for |argc| values up front: argv cannot hold more,
 * so appending never needs to grow (or fail). */
static int alloc_lists(const cli_program *program, void *config, int argc) {
  for (size_t i = 0; i < program->noptions; i++) {
    const cli_option *opt = &program->options[i];
    if (opt->kind != CLI_OPT_LIST)
      continue;
    cli_list *list = field_of(opt, config);
    list->items = calloc((size_t)argc, sizeof *list->items);
    if (list->items == NULL)
      return -1;
  }
  return 0;
}

/* Handles one option. Returns -1 to go on, else the exit status. */
static int apply_option(const cli_program *program, const cli_option *opt,
                        void *config, const char *arg) {
  if (opt->kind == CLI_OPT_HELP) {
    program->usage(stdout, 1);
    return CLI_EXIT_OK;
  }
  if (opt->kind == CLI_OPT_VERSION) {
    cli_print_version(program->name);
    return CLI_EXIT_OK;
  }
  /* A message that quotes the value (a long --connect, say) is cut to
   * fit: the value comes from the user, its length is unbounded. */
  char err[256] = "";
  if (kinds[opt->kind].store(opt, field_of(opt, config), arg, err,
                             sizeof err) == 0)
    return -1;
  return cli_usage_error(program, err[0] != '\0' ? err : opt->message);
}

int cli_options_parse(const cli_program *program, void *config, int argc,
                      char **argv) {
  struct option *longopts = getopt_table(program);
  if (longopts == NULL || alloc_lists(program, config, argc) < 0) {
    free(longopts);
    return CLI_EXIT_INTERNAL;
  }
  int rc = -1, id;
  while (rc < 0 && (id = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    /* Anything else is getopt_long's '?', the error already printed. */
    if (id >= FIRST_ID && (size_t)(id - FIRST_ID) < program->noptions)
      rc = apply_option(program, &program->options[id - FIRST_ID], config,
                        optarg);
    else
      rc = cli_usage_error(program, NULL);
  }
  free(longopts);
  if (rc < 0 && optind < argc)
    rc = cli_usage_error(program, "unexpected argument");
  return rc;
}

void cli_options_free(const cli_program *program, void *config) {
  for (size_t i = 0; i < program->noptions; i++) {
    if (program->options[i].kind != CLI_OPT_LIST)
      continue;
    cli_list *list = field_of(&program->options[i], config);
    free(list->items);
    list->items = NULL;
    list->count = 0;
  }
}
