#!/usr/bin/env python3
"""LipSync conformance suite: point it at an implementation's .impl file.

    python3 conformance/run.py --impl conformance/impls/ref.impl

See conformance/README.md. Exit status: 0 every test passed, 1 some test
failed, 2 harness error or no test ran.
"""

import argparse
import importlib.util
import os
import random
import shlex
import sys
import time
from fnmatch import fnmatchcase
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from lsconf import coverage, data, impl as implmod, report, scale  # noqa
from lsconf.core import UNSUPPORTED                         # noqa: E402
from lsconf.databases import HarnessError, pg_admin_conninfo  # noqa: E402
from lsconf.runner import (Runner, exit_code, load_known_failures,  # noqa
                           FAIL, ERROR, XPASS, WARN, XFAIL)

REPO = HERE.parent
GEN_SIZES = (40, 1000)
BACKENDS = ("sqlite", "postgres")


def load_gen():
    spec = importlib.util.spec_from_file_location("lsconf_gen",
                                                  REPO / "fixtures" / "gen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def import_wire(say):
    try:
        from lsconf import wire
    except ModuleNotFoundError as e:
        if e.name in ("lsconf.wire",):
            say("note: conformance/lsconf/wire.py is not there: running "
                "without the wire-plane tests")
            return None, None
        raise
    decode = None
    for mod, n in ((wire, "describe_frame"), (wire, "decode_frame")):
        if callable(getattr(mod, n, None)):
            decode = getattr(mod, n)
            break
    if decode is None:
        try:
            from lsconf import pbwire
            decode = getattr(pbwire, "render_bytes", None)
        except ImportError:
            pass
    return wire, decode


def all_pairs():
    return [(c, s) for c in BACKENDS for s in BACKENDS]


REFERENCE = REPO / "conformance" / "impls" / "ref.impl"


def reference_peer(impl, path):
    """The reference implementation as the default peer (LS conformance
    README, "Cross runs"): loaded from |path| when its programs are built
    and the implementation under test is another one (other programs,
    arguments or environment). Its client against the implementation's
    server and the other way round check every byte-level and ordering
    rule against code the implementation does not control. None when it
    does not apply."""
    try:
        ref = implmod.load(path)
    except implmod.ImplError:
        return None
    same = (ref.server, ref.client, ref.env) == (impl.server, impl.client,
                                                 impl.env)
    if same or ref.name == impl.name:
        return None
    for template in (ref.server, ref.client):
        words = shlex.split(template or "")
        prog = words[0] if words else ""
        if "/" in prog and not os.path.isabs(prog):
            prog = str(ref.root / prog)
        if not prog or not os.access(prog, os.X_OK):
            return None
    return ref


def build_tests(args, impl, peer, wire, say):
    fixtures = data.load_fixtures()
    gen = load_gen()
    for size in GEN_SIZES:
        fixtures.append(data.parse_fixture(
            gen.generate(args.seed, size), f"gen/split-{size}",
            f"fixtures/gen.py --seed {args.seed} --size {size}"))
    tests = data.fixture_tests(fixtures, all_pairs())
    tests += scale.tests(all_pairs())
    if wire is not None:
        wt = list(wire.tests())
        for t in wt:
            if not t.name.startswith("wire/"):
                raise HarnessError(f"wire test {t.name!r} is not named wire/...")
        tests += wt
    if peer is not None:
        for a, b in ((impl, peer), (peer, impl)):
            for t in data.fixture_tests(fixtures, all_pairs(),
                                        prefix=f"cross/{a.name}-{b.name}"):
                t.client_impl, t.server_impl = a, b
                tests.append(t)
        for t in tests:
            if t.name.startswith("data/"):
                t.client_impl = t.server_impl = impl
    names = [t.name for t in tests]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise HarnessError(f"duplicate test names: {', '.join(sorted(dup))}")
    return tests


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="conformance/run.py",
        description="Runs the LipSync conformance suite against an "
        "implementation described by an .impl file (conformance/README.md).")
    ap.add_argument("--impl", required=True, help="the implementation "
                    "under test (.impl file)")
    ap.add_argument("--peer", help="a second implementation: also run "
                    "each one's client against the other's server (default: "
                    "the reference, conformance/impls/ref.impl, when it is "
                    "built and is not the implementation under test)")
    ap.add_argument("--no-reference", action="store_true",
                    help="without --peer, do not run the fixtures against "
                    "the reference")
    ap.add_argument("--backends", help="comma-separated subset of "
                    "sqlite,postgres (default: those the .impl declares)")
    ap.add_argument("--filter", action="append", default=[],
                    metavar="GLOB", help="run only tests whose name matches "
                    "(repeatable; any match selects)")
    ap.add_argument("--known-failures", metavar="FILE",
                    help="glob patterns of tests expected to fail")
    ap.add_argument("--strict", action="store_true",
                    help="SHOULD failures fail the run too")
    ap.add_argument("--json", metavar="FILE", help="write results as JSON")
    ap.add_argument("--junit", metavar="FILE", help="write JUnit XML")
    ap.add_argument("--list", action="store_true",
                    help="list the selected tests and exit")
    ap.add_argument("--seed", default="1", help="seed of the generated "
                    "fixtures (an integer, or `random`; default 1)")
    ap.add_argument("--no-frames", action="store_true",
                    help="do not relay data-plane syncs to record frames")
    ap.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                    help="run N tests at a time (default 1)")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="print every test's line and message")
    args = ap.parse_args(argv)
    say = print
    t_start = time.monotonic()

    if args.seed == "random":
        args.seed = random.SystemRandom().randrange(1 << 31)
    try:
        args.seed = int(args.seed)
    except ValueError:
        ap.error("--seed takes an integer or `random`")

    try:
        impl = implmod.load(args.impl)
        peer = implmod.load(args.peer) if args.peer else None
    except implmod.ImplError as e:
        say(f"error: {e}")
        return 2
    explicit_peer = peer
    if peer is None and not args.no_reference:
        peer = reference_peer(impl, REFERENCE)
        if peer is not None:
            args.peer = str(REFERENCE)
            say(f"(also crossing the fixtures with the reference, "
                f"{REFERENCE.relative_to(REPO)}; --no-reference skips it)")
    if peer is not None and peer.name == impl.name:
        say(f"error: --impl and --peer are both named {impl.name!r}")
        return 2
    if args.backends:
        backends = tuple(b.strip() for b in args.backends.split(",") if b)
        bad = [b for b in backends if b not in BACKENDS]
        if bad:
            say(f"error: unknown backend(s) {', '.join(bad)}")
            return 2
    else:
        backends = tuple(b for b in BACKENDS if b in impl.backends
                         or (explicit_peer and b in explicit_peer.backends))
    known = []
    if args.known_failures:
        try:
            known = load_known_failures(args.known_failures)
        except OSError as e:
            say(f"error: --known-failures: {e}")
            return 2

    try:
        wire, decode = import_wire(say)
        tests = build_tests(args, impl, peer, wire, say)
    except (HarnessError, data.FixtureError) as e:
        say(f"error: {e}")
        return 2
    all_tests = list(tests)
    selected = [t for t in tests
                if set(getattr(t, "backend_pair", None) or t.backends)
                <= set(backends)]
    if args.filter:
        selected = [t for t in selected
                    if any(fnmatchcase(t.name, g) for g in args.filter)]
    if args.list:
        for t in selected:
            say(f"{t.name}  [{' '.join(t.requirements)}] {t.level}"
                + (f" features={','.join(sorted(t.features))}"
                   if t.features else "")
                + (f"  {t.description}" if t.description else ""))
        say(f"{len(selected)} tests")
        return 0 if selected else 2

    rerun = ["python3", "conformance/run.py", "--impl", args.impl]
    if args.peer:
        rerun += ["--peer", args.peer]
    rerun += ["--seed", str(args.seed)]
    if args.strict:
        rerun.append("--strict")
    runner = Runner(impl, peer, backends, args.strict, known,
                    record_frames=not args.no_frames, decode_frame=decode,
                    rerun_base=" ".join(shlex.quote(x) for x in rerun),
                    verbose=args.verbose)
    say(f"LipSync conformance: {impl.name}"
        + (f" with peer {peer.name}" if peer else "")
        + f"; backends {', '.join(backends)}; generated-fixture seed "
        f"{args.seed}; {len(selected)} tests")
    if not selected:
        say("error: no test selected")
        return 2
    try:
        if "postgres" in backends:
            pg_admin_conninfo()
        for im in [impl] + ([peer] if peer else []):
            msg = runner.probe(im)
            if msg:
                say(f"error: {im.path}: the implementation {im.name!r} does "
                    f"not start, so no test ran:\n  "
                    + msg.replace("\n", "\n  "))
                return 2
    except HarnessError as e:
        say(f"error: {e}")
        return 2

    def show(r):
        if args.verbose or r.status not in ("pass", UNSUPPORTED):
            say(report.line(r))
            if args.verbose and r.outcome.message and r.status == "pass":
                say(f"       {r.outcome.message}")
        sys.stdout.flush()

    say(f"{'STATUS':<6} {'TEST':<58} {'TIME':>7}  REQUIREMENTS")
    results = runner.run(selected, show, max(1, args.jobs))
    seconds = time.monotonic() - t_start
    if not args.verbose:
        say(f"({sum(r.status == 'pass' for r in results)} passed and "
            f"{sum(r.status == UNSUPPORTED for r in results)} unsupported "
            "not shown; -v shows them)")
    blocks = [r for r in results if r.status in report.BLOCK]
    if blocks:
        say("")
        for r in blocks:
            say(report.block(r))
            say("")
    unsup = [r for r in results if r.status == UNSUPPORTED]
    if unsup:
        reasons = {}
        for r in unsup:
            reasons.setdefault(r.outcome.message, []).append(r.test.name)
        say("Unsupported (not passed):")
        for why, names in sorted(reasons.items()):
            say(f"  {len(names)} test(s): {why} (e.g. {names[0]})")
    cov = coverage.report(all_tests)
    say("")
    say(report.coverage_text(*cov[:3]))
    if peer is not None:
        say("")
        say(report.matrix_text(results, [impl.name, peer.name]))
    say("")
    say(report.summary_line(results, seconds))
    code = exit_code(r.status for r in results)
    meta = {"impl": impl.name, "impl_file": args.impl,
            "peer": peer.name if peer else None,
            "backends": list(backends), "seed": args.seed,
            "strict": args.strict, "seconds": round(seconds, 3),
            "exit_status": code}
    try:
        if args.json:
            Path(args.json).write_text(report.to_json(results, meta, cov),
                                       encoding="utf-8")
        if args.junit:
            Path(args.junit).write_text(
                report.to_junit(results, f"lipsync-conformance.{impl.name}",
                                seconds), encoding="utf-8")
    except OSError as e:
        say(f"error: cannot write results: {e}")
        return 2
    verdict = {0: "PASSED", 1: "FAILED", 2: "HARNESS ERROR"}[code]
    say(f"verdict: {verdict} (exit status {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
