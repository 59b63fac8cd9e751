"""What every part of the conformance suite shares: tests, their outcomes,
and the context a test runs in.

A test is data plus a function. Its name is stable and hierarchical (never
a position): "data/<pair>/<fixture>" or "wire/<role>/<area>/<case>". It
lists the requirement IDs of spec/lipsync.md it checks, whether they are
MUSTs or SHOULDs, and what it needs from the implementation under test
(optional features, backends, roles). The runner decides what runs, calls
run(ctx), and reports.

Only the standard library is used, so the suite runs wherever python3 does.
"""

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

PASS, FAIL, UNSUPPORTED, ERROR = "pass", "fail", "unsupported", "error"


@dataclass
class FrameRecord:
    """One frame the harness exchanged with the implementation."""
    direction: str          # "sent" (harness -> impl) or "received"
    raw: bytes              # the whole frame, length prefix included
    decoded: str = ""       # a readable decoding, e.g. "Error{code: 5, ...}"


@dataclass
class Outcome:
    status: str                      # PASS, FAIL, UNSUPPORTED or ERROR
    message: str = ""                # one line: what went wrong, or why
    expected: str = ""               # for a failure: what the spec asks
    actual: str = ""                 # for a failure: what happened
    frames: List[FrameRecord] = field(default_factory=list)
    diff: str = ""                   # a readable table diff, if any


@dataclass
class Test:
    name: str                        # stable, hierarchical, unique
    requirements: Sequence[str]      # e.g. ("LS-AUTH-3", "LS-ERR-2")
    run: Callable[["Context"], Outcome]
    level: str = "MUST"              # "MUST" or "SHOULD" (fails only --strict)
    features: frozenset = frozenset()    # optional features of spec 5.4
    backends: Tuple[str, ...] = ()   # backends the impl must support
                                     # ("sqlite", "postgres"); () = any one
    role: str = "server"             # the impl runs as "server", "client",
                                     # or "both" (a whole sync, data plane)
    description: str = ""            # one sentence, for listings


class Context:
    """What a test can ask of the runner. The runner implements it; tests
    only call these methods.

    Attributes:
      impl          the implementation under test (its .name, .backends,
                    .features)
      peer          for data-plane tests: the implementation playing the
                    other role (impl itself unless a matrix run pairs two)
      backend_pair  (client_backend, server_backend), e.g. ("sqlite", "postgres")
      workdir       a fresh private directory (pathlib.Path) for this test
      secret        the shared secret (bytes); secret_file holds it (0600)
      timeout       seconds a test should wait for a response at most
    """

    impl = None
    peer = None
    backend_pair: Tuple[str, str] = ("sqlite", "sqlite")
    workdir = None
    secret: bytes = b""
    secret_file = None
    timeout: float = 10.0

    def database(self, backend: str, name: str):
        """A fresh, empty database of |backend| for this test, as a
        Database object (create_table, insert, rows, snapshot, spec()),
        removed after the test."""
        raise NotImplementedError

    def start_server(self, impl, database, tables: Sequence[str],
                     all_tables: bool = False, secret_file=None,
                     retention_ms: Optional[int] = None):
        """Starts |impl| as a server on 127.0.0.1 and a port the runner
        picks, serving |database|; returns an object with .address
        ("127.0.0.1:PORT"), .host, .port, .alive(), .stop() -> exit status,
        .stderr(). The runner stops it after the test in any case.
        |retention_ms| adds the impl's retention_option."""
        raise NotImplementedError

    def run_client(self, impl, database, address: str,
                   tables: Sequence[str], secret_file=None,
                   timeout: Optional[float] = None,
                   policy: Optional[str] = None, full: bool = False,
                   record: bool = False):
        """Runs |impl| as a client syncing |tables| of |database| with the
        server at |address|; returns an object with .status (exit code),
        .stdout, .stderr, .seconds. |policy| (lww, server-wins,
        client-wins) adds the impl's policy_option, |full| its
        full_option; |record| records the session's frames (in
        .last_frames) even when the run records none."""
        raise NotImplementedError

    def run_init(self, impl, role: str, database, tables: Sequence[str],
                 timeout: Optional[float] = None):
        """Runs |impl|'s client_init or server_init command (|role| is
        "client" or "server") on |database|; returns an object like
        run_client's."""
        raise NotImplementedError

    def start_client(self, impl, database, address: str,
                     tables: Sequence[str], secret_file=None):
        """Starts |impl| as a client without waiting: returns an object
        with .wait(timeout) -> exit status, .kill(), .stdout(), .stderr()."""
        raise NotImplementedError

    def listen(self):
        """A listening socket on 127.0.0.1, port picked by the system, for
        a scripted server; returns (socket, "127.0.0.1:PORT")."""
        raise NotImplementedError

    def rerun_command(self) -> str:
        """A one-line shell command that reruns only this test."""
        raise NotImplementedError


def passed(message: str = "") -> Outcome:
    return Outcome(PASS, message)


def failed(message: str, expected: str = "", actual: str = "",
           frames=None, diff: str = "") -> Outcome:
    return Outcome(FAIL, message, expected, actual, list(frames or []), diff)
