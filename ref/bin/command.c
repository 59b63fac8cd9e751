/*
 * command.c: a command the client syncs through (command.h).
 */
#define _GNU_SOURCE /* SOCK_CLOEXEC */
#include "command.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* How much of the command's standard error a report shows, at most. */
#define REPORT_TAIL (sizeof((cli_command *)0)->err_tail - 1)

/* An unlinked temporary file, or -1. */
static int temp_file(void) {
  const char *dir = getenv("TMPDIR");
  char path[512];
  snprintf(path, sizeof path, "%s/lipsync-command-XXXXXX",
           dir && *dir ? dir : "/tmp");
  int fd = mkstemp(path);
  if (fd >= 0)
    unlink(path);
  return fd;
}

int cli_command_start(cli_command *cmd, const char *command, char *err,
                      size_t errlen) {
  int sv[2];
  memset(cmd, 0, sizeof *cmd);
  cmd->fd = cmd->err_fd = -1;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    snprintf(err, errlen, "cannot run the command: %s", strerror(errno));
    return -1;
  }
  cmd->err_fd = temp_file();
  if (cmd->err_fd < 0) {
    snprintf(err, errlen, "cannot run the command: temporary file: %s",
             strerror(errno));
    close(sv[0]);
    close(sv[1]);
    return -1;
  }
  cmd->pid = fork();
  if (cmd->pid < 0) {
    snprintf(err, errlen, "cannot run the command: %s", strerror(errno));
    close(sv[0]);
    close(sv[1]);
    close(cmd->err_fd);
    cmd->err_fd = -1;
    return -1;
  }
  if (cmd->pid == 0) {
    /* The child: its own signal dispositions, stdin and stdout on the
     * socket, stderr in the file. */
    signal(SIGPIPE, SIG_DFL);
    if (dup2(sv[1], STDIN_FILENO) < 0 || dup2(sv[1], STDOUT_FILENO) < 0 ||
        dup2(cmd->err_fd, STDERR_FILENO) < 0)
      _exit(127);
    execl("/bin/sh", "sh", "-c", command, (char *)NULL);
    _exit(127);
  }
  close(sv[1]);
  cmd->fd = sv[0];
  return 0;
}

/* Keeps the end of what the command wrote to standard error. */
static void keep_err_tail(cli_command *cmd) {
  if (cmd->err_fd < 0)
    return;
  off_t size = lseek(cmd->err_fd, 0, SEEK_END);
  off_t from = size > (off_t)REPORT_TAIL ? size - (off_t)REPORT_TAIL : 0;
  ssize_t n = pread(cmd->err_fd, cmd->err_tail, REPORT_TAIL, from);
  cmd->err_tail[n > 0 ? n : 0] = '\0';
  close(cmd->err_fd);
  cmd->err_fd = -1;
}

static void wait_for_exit(cli_command *cmd, int wait_ms);

void cli_command_finish(cli_command *cmd, int wait_ms) {
  if (cmd->fd >= 0) {
    close(cmd->fd); /* the command sees the end of its input */
    cmd->fd = -1;
  }
  wait_for_exit(cmd, wait_ms);
  keep_err_tail(cmd);
}

static void wait_for_exit(cli_command *cmd, int wait_ms) {
  if (cmd->pid <= 0 || cmd->ended)
    return;
  double deadline = cli_now() + wait_ms / 1000.0;
  int signalled = 0;
  for (;;) {
    pid_t r = waitpid(cmd->pid, &cmd->status, WNOHANG);
    if (r == cmd->pid || (r < 0 && errno != EINTR)) {
      cmd->ended = r == cmd->pid;
      return;
    }
    if (cli_now() >= deadline && !signalled) {
      kill(cmd->pid, SIGTERM);
      signalled = 1;
      deadline = cli_now() + 1.0;
    } else if (cli_now() >= deadline) {
      kill(cmd->pid, SIGKILL);
      waitpid(cmd->pid, &cmd->status, 0);
      cmd->ended = 1;
      return;
    }
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

int cli_command_report(const cli_command *cmd, char *out, size_t outlen) {
  char how[64] = "";
  int bad = 0;
  if (cmd->ended && WIFEXITED(cmd->status)) {
    snprintf(how, sizeof how, "exited with status %d",
             WEXITSTATUS(cmd->status));
    bad = WEXITSTATUS(cmd->status) != 0;
  } else if (cmd->ended && WIFSIGNALED(cmd->status)) {
    snprintf(how, sizeof how, "was killed by signal %d", WTERMSIG(cmd->status));
    bad = 1;
  } else {
    snprintf(how, sizeof how, "did not exit");
  }
  char tail[sizeof cmd->err_tail];
  memcpy(tail, cmd->err_tail, sizeof tail);
  size_t len = strlen(tail);
  while (len > 0 && (tail[len - 1] == '\n' || tail[len - 1] == '\r'))
    tail[--len] = '\0';
  for (char *p = tail; *p; p++)
    if (*p == '\n')
      *p = ' '; /* one line */
  cli_sanitize(tail);
  snprintf(out, outlen, "the command %s%s%s", how, len ? ": " : "", tail);
  return bad || len > 0;
}
