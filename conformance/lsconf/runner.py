"""Runs tests: the Context of lsconf.core, process handling, selection,
known failures, and the verdict."""

import os
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback
from fnmatch import fnmatchcase
from pathlib import Path

from . import core
from .core import Context, FrameRecord, Outcome, PASS, FAIL, UNSUPPORTED, \
    ERROR
from .databases import HarnessError, new_database
from .impl import OPTIONAL_KEYS

# Statuses in reports, beyond core's four.
XFAIL, XPASS, WARN = "xfail", "xpass", "warn"
FAILING = {FAIL, XPASS}
MAX_FRAMES = 40


class ImplStartError(Exception):
    """The implementation's process did not start or got ready: the test
    fails (it is the implementation's doing)."""


def free_port():
    """A port no one listens on, below Linux's ephemeral range (32768 and
    up), so that no outgoing connection takes it before the server binds
    it."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32768)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def child_env(impl):
    env = {k: v for k, v in os.environ.items() if k != "LIPSYNC_SECRET"}
    env.update(impl.env)
    return env


def _stop(proc, timeout=10):
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _dbspec(db):
    return db.spec() if hasattr(db, "spec") else str(db)


class _Reader(threading.Thread):
    """Drains a pipe into memory, so a chatty child never blocks."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.data, self.cond = pipe, b"", threading.Condition()
        self.done = False
        self.start()

    def run(self):
        while True:
            chunk = self.pipe.read1(65536) if hasattr(self.pipe, "read1") \
                else self.pipe.read(65536)
            with self.cond:
                if not chunk:
                    self.done = True
                    self.cond.notify_all()
                    return
                self.data += chunk
                self.cond.notify_all()

    def wait_line(self, regex, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.data.decode(errors="replace").splitlines():
                    if re.search(regex, line):
                        return True
                left = deadline - time.monotonic()
                if self.done or left <= 0:
                    return False
                self.cond.wait(left)

    def text(self):
        return self.data.decode("utf-8", "replace")


def start_server_process(impl, db, tables, all_tables, secret_file, workdir,
                         attempts=3, retention_ms=None):
    """Starts a server; when it exits before getting ready (its port may
    have been taken meanwhile), tries again on another port."""
    for i in range(attempts):
        try:
            return ServerProcess(impl, db, tables, all_tables, secret_file,
                                 workdir, retention_ms)
        except ImplStartError as e:
            if not getattr(e, "exited", False) or i == attempts - 1:
                raise


class ServerProcess:
    def __init__(self, impl, db, tables, all_tables, secret_file, workdir,
                 retention_ms=None):
        if impl.server is None:
            raise ImplStartError(f"{impl.name} has no server command")
        if all_tables and not impl.all_tables:
            raise ImplStartError(f"{impl.name} declares no all_tables")
        if retention_ms is not None and not impl.retention_option:
            raise ImplStartError(f"{impl.name} declares no retention_option")
        self.host, self.port = "127.0.0.1", free_port()
        self.address = f"{self.host}:{self.port}"
        self.argv = impl.server_argv(_dbspec(db), self.address, secret_file,
                                     tables, all_tables, retention_ms)
        self.errpath = Path(tempfile.mkstemp(prefix="server-", suffix=".err",
                                             dir=workdir)[1])
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=open(self.errpath, "wb"), env=child_env(impl),
                start_new_session=True)
        except OSError as e:
            raise ImplStartError(f"cannot run {self.argv[0]}: {e.strerror}")
        self.out = _Reader(self.proc.stdout)
        ready_in = min(impl.timeout, 20)
        if impl.server_ready:
            ok = self.out.wait_line(impl.server_ready, ready_in)
        else:
            ok = self._wait_port(ready_in)
        if not ok:
            exited = self.proc.poll() is not None
            self.stop()
            err = ImplStartError(
                (f"server exited with status {self.proc.returncode} before "
                 "it was ready" if exited else
                 f"server did not get ready within {ready_in:g}s")
                + f"\ncommand: "
                f"{' '.join(self.argv)}\nstdout: {self.out.text()[-800:]}\n"
                f"stderr: {self.stderr()[-800:]}")
            err.exited = exited
            raise err

    def _wait_port(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection((self.host, self.port), 0.5).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        return _stop(self.proc)

    def stderr(self):
        try:
            return self.errpath.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stdout(self):
        return self.out.text()


class ClientResult:
    def __init__(self, status, stdout, stderr, seconds):
        self.status, self.stdout, self.stderr = status, stdout, stderr
        self.seconds = seconds


class ClientProcess:
    def __init__(self, argv, env):
        self.argv = argv
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as e:
            raise ImplStartError(f"cannot run {argv[0]}: {e.strerror}")
        self.out, self.err = _Reader(self.proc.stdout), \
            _Reader(self.proc.stderr)

    def wait(self, timeout=None):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def stdout(self):
        self.out.join(2)
        return self.out.text()

    def stderr(self):
        self.err.join(2)
        return self.err.text()


class FrameProxy(threading.Thread):
    """A TCP relay between a client and a server that records the frames
    (u32be length prefix + body) going each way."""

    def __init__(self, target, decode=None):
        super().__init__(daemon=True)
        self.target = target
        self.decode = decode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.frames, self.lock = [], threading.Lock()
        self.count = 0
        self.relays = []
        self.start()

    def run(self):
        # One relay per connection: a client may open a second session
        # (say, a new one after VERIFY_FAILED, spec LS-INC-16).
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            relay = threading.Thread(target=self._relay, args=(conn,),
                                     daemon=True)
            with self.lock:
                self.relays.append(relay)
            relay.start()

    def _relay(self, conn):
        try:
            host, port = self.target.rsplit(":", 1)
            up = socket.create_connection((host, int(port)), 10)
            up.settimeout(None)
        except OSError:
            conn.close()
            return
        t1 = threading.Thread(target=self._pump, args=(conn, up, "sent"),
                              daemon=True)
        t2 = threading.Thread(target=self._pump, args=(up, conn, "received"),
                              daemon=True)
        t1.start(), t2.start()
        t1.join(), t2.join()
        conn.close(), up.close()

    # "sent" = client -> server. In a data test the harness is neither
    # side, so directions are named from the client's side.
    def _pump(self, src, dst, direction):
        buf = b""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                pass
            buf += data
            while len(buf) >= 4:
                n = int.from_bytes(buf[:4], "big")
                if n > (16 << 20) or len(buf) < 4 + n:
                    if n > (16 << 20):
                        buf = b""
                    break
                self._record(direction, buf[:4 + n])
                buf = buf[4 + n:]

    def _record(self, direction, raw):
        with self.lock:
            self.count += 1
            if len(self.frames) >= MAX_FRAMES:
                return
            decoded = ""
            if self.decode:
                try:
                    decoded = str(self.decode(raw))
                except Exception as e:   # noqa: BLE001 - best effort
                    decoded = f"(undecodable: {e})"
            self.frames.append(FrameRecord(
                "client->server" if direction == "sent" else
                "server->client", raw, decoded))

    def finish(self, timeout):
        """Once the client has exited: accepts no more connections and
        waits up to |timeout| seconds for the relays to end."""
        self.close()
        deadline = time.monotonic() + timeout
        self.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            relays = list(self.relays)
        for relay in relays:
            relay.join(max(0.0, deadline - time.monotonic()))

    def close(self):
        # shutdown() wakes the accept() of run(); close() alone does not.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class RunContext(Context):
    def __init__(self, runner, test, impl, peer, backend_pair, workdir,
                 client_impl=None, server_impl=None):
        self.runner = runner
        self.test = test
        self.impl = impl
        self.peer = peer or impl
        self.client_impl = client_impl or impl
        self.server_impl = server_impl or self.peer
        self.backend_pair = backend_pair
        self.workdir = workdir
        self.secret = os.urandom(24).hex().encode()
        self.secret_file = workdir / "secret"
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, self.secret + b"\n")
        os.close(fd)
        self.timeout = min(impl.timeout, 10.0)
        self.last_frames = []
        self._cleanups = []
        self._servers = {}

    def _later(self, fn):
        self._cleanups.append(fn)

    def cleanup(self):
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception:   # noqa: BLE001 - cleanup goes on
                pass
        self._cleanups.clear()

    def database(self, backend, name):
        db = new_database(backend, self.workdir, re.sub(r"\W", "_", name))
        self._later(db.drop)
        return db

    def start_server(self, impl, database, tables=(), all_tables=False,
                     secret_file=None, retention_ms=None):
        server = start_server_process(impl, database, list(tables),
                                      all_tables,
                                      secret_file or self.secret_file,
                                      self.workdir, retention_ms=retention_ms)
        self._later(server.stop)
        self._servers[server.address] = server
        return server

    def _client_argv(self, impl, database, address, tables, secret_file,
                     policy=None, full=False):
        if impl.client is None:
            raise ImplStartError(f"{impl.name} has no client command")
        if policy is not None and not impl.policy_option:
            raise ImplStartError(f"{impl.name} declares no policy_option")
        if full and not impl.full_option:
            raise ImplStartError(f"{impl.name} declares no full_option")
        return impl.client_argv(_dbspec(database), address,
                                secret_file or self.secret_file, list(tables),
                                policy, full)

    def run_init(self, impl, role, database, tables, timeout=None):
        """Runs |impl|'s client_init or server_init command (|role|) on
        |database|; returns a ClientResult."""
        if getattr(impl, role + "_init", None) is None:
            raise ImplStartError(f"{impl.name} declares no {role}_init")
        argv = impl.init_argv(role, _dbspec(database), list(tables))
        c = ClientProcess(argv, child_env(impl))
        limit = timeout or impl.timeout
        status = c.wait(limit)
        note = ""
        if status is None:
            c.kill()
            status = -9
            note = f"\n[harness: killed after {limit:g}s]"
        return ClientResult(status, c.stdout(), c.stderr() + note,
                            time.monotonic() - c.started)

    def run_client(self, impl, database, address, tables, secret_file=None,
                   timeout=None, policy=None, full=False, record=False):
        """|record|: relay the session to record its frames even when the
        run records none (--no-frames): a test reads them."""
        proxy = None
        self.last_frames = []
        if address in self._servers and (self.runner.record_frames or
                                         record):
            proxy = FrameProxy(address, self.runner.decode_frame)
            self._later(proxy.close)
            address = proxy.address
        argv = self._client_argv(impl, database, address, tables,
                                 secret_file, policy, full)
        c = ClientProcess(argv, child_env(impl))
        limit = timeout or impl.timeout
        status = c.wait(limit)
        note = ""
        if status is None:
            c.kill()
            status = -9
            note = f"\n[harness: killed after {limit:g}s]"
        seconds = time.monotonic() - c.started
        if proxy:
            proxy.finish(2)
            with proxy.lock:
                self.last_frames = list(proxy.frames)
                if proxy.count > len(proxy.frames):
                    self.last_frames.append(FrameRecord(
                        "note", b"", f"... {proxy.count - len(proxy.frames)}"
                        " more frames not shown"))
        return ClientResult(status, c.stdout(), c.stderr() + note, seconds)

    def start_client(self, impl, database, address, tables,
                     secret_file=None):
        argv = self._client_argv(impl, database, address, tables,
                                 secret_file)
        c = ClientProcess(argv, child_env(impl))
        self._later(c.kill)
        return c

    def listen(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        self._later(s.close)
        return s, f"127.0.0.1:{s.getsockname()[1]}"

    def rerun_command(self):
        return self.runner.rerun_command(self.test)


# ---- known failures ---------------------------------------------------------

def load_known_failures(path):
    """Glob patterns, one a line; `#` starts a comment."""
    patterns = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            patterns.append(line)
    return patterns


def is_known(name, patterns):
    return any(fnmatchcase(name, p) for p in patterns)


def classify(outcome_status, level, strict, known):
    """The reported status of a test from its outcome."""
    if outcome_status == FAIL:
        if level == "SHOULD" and not strict:
            return XFAIL if known else WARN
        return XFAIL if known else FAIL
    if outcome_status == PASS and known:
        return XPASS
    return outcome_status


def exit_code(statuses, harness_error=False):
    """0: every test passed; 1: some failed; 2: harness error or no test
    ran."""
    statuses = list(statuses)
    if harness_error or ERROR in statuses:
        return 2
    if not any(s in (PASS, FAIL, XFAIL, XPASS, WARN) for s in statuses):
        return 2
    if any(s in FAILING for s in statuses):
        return 1
    return 0


class Result:
    def __init__(self, test, status, outcome, seconds, rerun, pair=None):
        self.test, self.status, self.outcome = test, status, outcome
        self.seconds, self.rerun, self.pair = seconds, rerun, pair


class Runner:
    def __init__(self, impl, peer=None, backends=(), strict=False,
                 known=(), record_frames=True, decode_frame=None,
                 rerun_base="", verbose=False, out=None):
        self.impl, self.peer = impl, peer
        self.backends = tuple(backends)
        self.strict, self.known = strict, list(known)
        self.record_frames, self.decode_frame = record_frames, decode_frame
        self.rerun_base = rerun_base
        self.verbose = verbose
        self.out = out

    def rerun_command(self, test):
        """One line that reruns only |test|, on the backends it used."""
        used = sorted(set(getattr(test, "backend_pair", None) or
                          test.backends or self.pick_pair(test)))
        cmd = f"{self.rerun_base} --backends {','.join(used)} " \
              f"--filter '{test.name}'"
        if "postgres" in used:
            cmd = "sh tools/pgtest.sh " + cmd
        return cmd

    def why_unsupported(self, test):
        ci = getattr(test, "client_impl", None) or self.impl
        si = getattr(test, "server_impl", None) or self.impl
        sides = {"server": [(si, "server")], "client": [(ci, "client")]}.get(
            test.role, [(ci, "client"), (si, "server")])
        pair = getattr(test, "backend_pair", None)
        for im, role in sides:
            if getattr(im, role) is None:
                return f"{im.name} implements no {role} role"
            missing = set(test.features) - set(im.features)
            if missing:
                return (f"{im.name} does not declare feature(s) "
                        f"{', '.join(sorted(missing))}")
            for key in sorted(getattr(test, "impl_keys", ()) or (),
                              key=str):
                # a key, or (key, role) for a key of either role
                k, r = key if isinstance(key, tuple) else (
                    key, OPTIONAL_KEYS.get(key))
                if r == role and getattr(im, k, None) is None:
                    return (f"{im.name} declares no {k} (the test needs "
                            "it)")
            if pair:
                need = [pair[0] if role == "client" else pair[1]]
            else:
                need = list(test.backends)
            for b in need:
                if b not in im.backends:
                    return f"{im.name} does not support backend {b}"
        return None

    def pick_pair(self, test):
        pair = getattr(test, "backend_pair", None)
        if pair:
            return pair
        for b in (test.backends or self.backends):
            if b in self.backends and b in self.impl.backends:
                return (b, b)
        return (self.backends[0],) * 2 if self.backends else ("sqlite",) * 2

    def run_one(self, test):
        t0 = time.monotonic()
        rerun = self.rerun_command(test)
        why = self.why_unsupported(test)
        if why:
            return Result(test, UNSUPPORTED, Outcome(UNSUPPORTED, why), 0.0,
                          rerun)
        workdir = Path(tempfile.mkdtemp(prefix="lsconf-"))
        ctx = RunContext(self, test, self.impl, self.peer,
                         self.pick_pair(test), workdir,
                         getattr(test, "client_impl", None),
                         getattr(test, "server_impl", None))
        try:
            outcome = test.run(ctx)
            if not isinstance(outcome, Outcome):
                outcome = Outcome(ERROR, f"test returned {outcome!r}, not an "
                                  "Outcome")
        except ImplStartError as e:
            outcome = Outcome(FAIL, str(e).splitlines()[0],
                              actual=str(e), frames=ctx.last_frames)
        except HarnessError as e:
            outcome = Outcome(ERROR, f"harness error: {e}")
        except Exception as e:   # noqa: BLE001 - reported, never hidden
            outcome = Outcome(ERROR, f"harness error: {type(e).__name__}: "
                              f"{e}", actual=traceback.format_exc())
        finally:
            ctx.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)
        status = classify(outcome.status, test.level, self.strict,
                          is_known(test.name, self.known))
        return Result(test, status, outcome, time.monotonic() - t0, rerun,
                      ctx.backend_pair)

    def probe(self, impl):
        """Starts |impl|'s programs once on a tiny table; returns None or
        a message saying what did not start."""
        backend = next((b for b in self.backends if b in impl.backends),
                       None)
        if backend is None:
            return (f"{impl.name} supports {', '.join(impl.backends)}; none "
                    f"of them is selected ({', '.join(self.backends)})")
        workdir = Path(tempfile.mkdtemp(prefix="lsconf-probe-"))
        test = core.Test("probe", (), lambda c: None)
        ctx = RunContext(self, test, impl, impl, (backend, backend), workdir)
        try:
            dbs = [ctx.database(backend, "probe_s"),
                   ctx.database(backend, "probe_c")]
            for db in dbs:
                db.create_table("probe", [("x", "integer")], True)
            if impl.server:
                try:
                    server = ctx.start_server(impl, dbs[0], ["probe"])
                except ImplStartError as e:
                    return f"the server command does not start: {e}"
                if impl.client:
                    res = ctx.run_client(impl, dbs[1], server.address,
                                         ["probe"])
                    if res.status != 0:
                        return (f"the client command failed (exit status "
                                f"{res.status}) syncing an empty table with"
                                f" its own server\ncommand: "
                                f"{' '.join(impl.client_argv(dbs[1].spec(), server.address, ctx.secret_file, ['probe']))}"
                                f"\nstderr: {res.stderr.strip()[-800:]}\n"
                                f"server stderr: "
                                f"{server.stderr().strip()[-800:]}")
            else:
                argv = impl.client_argv("x", "127.0.0.1:1", "x", ["probe"])
                if shutil.which(argv[0]) is None:
                    return f"the client program {argv[0]} is not found"
            return None
        except ImplStartError as e:
            return str(e)
        finally:
            ctx.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)

    def run(self, tests, on_result=None, jobs=1):
        """Runs |tests| (|jobs| at a time); reports results in test order."""
        if jobs <= 1:
            results = []
            for t in tests:
                r = self.run_one(t)
                results.append(r)
                if on_result:
                    on_result(r)
            return results
        from concurrent.futures import ThreadPoolExecutor
        # Wire tests first: some wait for timeouts, and the rest fill the
        # other workers meanwhile. Results still come in test order.
        order = sorted(range(len(tests)),
                       key=lambda i: (tests[i].role == "both", i))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            by_index = {i: pool.submit(self.run_one, tests[i])
                        for i in order}
            futures = [by_index[i] for i in range(len(tests))]
            results = []
            for f in futures:
                r = f.result()
                results.append(r)
                if on_result:
                    on_result(r)
            return results
