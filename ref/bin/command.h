/*
 * command.h: lipsync-client --connect-command: runs a command through
 * /bin/sh -c with its standard input and output on one end of a socket
 * pair (the client syncs over the other end), and its standard error in
 * an unlinked temporary file, so that its failure can be reported.
 */
#ifndef LIPSYNC_COMMAND_H
#define LIPSYNC_COMMAND_H

#include <stddef.h>
#include <sys/types.h>

typedef struct cli_command {
  pid_t pid;
  int fd;     /* our end of the socket pair */
  int err_fd; /* the command's standard error */
  int status; /* from waitpid(), once it ended */
  int ended;
  char err_tail[640]; /* the end of its standard error, once it ended */
} cli_command;

/* Starts |command|. Returns 0, or -1 with the reason in |err|. */
int cli_command_start(cli_command *cmd, const char *command, char *err,
                      size_t errlen);

/* Closes our end, waits up to |wait_ms| for the command to exit (then
 * stops it), keeps the end of its standard error, and frees what it
 * holds. */
void cli_command_finish(cli_command *cmd, int wait_ms);

/* Describes how the command ended ("exited with status 255", ...) and the
 * end of what it wrote to standard error, sanitized, into |out|. Call
 * after cli_command_finish(). Returns nonzero when there is something to
 * report: a non-zero exit status, a signal, or output on standard error. */
int cli_command_report(const cli_command *cmd, char *out, size_t outlen);

#endif /* LIPSYNC_COMMAND_H */
