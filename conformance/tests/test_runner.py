"""Self-tests of the conformance runner's pure parts. Standard library only:
    python3 -m unittest discover conformance/tests
"""

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONF = HERE.parent
REPO = CONF.parent
sys.path.insert(0, str(CONF))

from lsconf import coverage, data, impl as implmod, values as V  # noqa: E402
from lsconf import report, runner                                 # noqa: E402
from lsconf.core import PASS, FAIL, UNSUPPORTED, ERROR, Outcome, Test  # noqa


class ValueNotation(unittest.TestCase):
    def roundtrip(self, word, value):
        self.assertEqual(V.parse_value(word), value)
        self.assertEqual(V.parse_value(V.format_value(value)), value)

    def test_kinds(self):
        self.roundtrip("null", V.NULL)
        self.roundtrip("int:-9223372036854775808", ("integer", -(1 << 63)))
        self.roundtrip("int:9223372036854775807", ("integer", (1 << 63) - 1))
        self.roundtrip("blob:00FF", ("blob", b"\x00\xff"))
        self.roundtrip("blob:", ("blob", b""))
        self.roundtrip('text:""', ("text", ""))

    def test_int_range_and_form(self):
        for bad in ("int:9223372036854775808", "int:-9223372036854775809",
                    "int:01", "int:+1", "int:1.0", "int:"):
            with self.assertRaises(V.NotationError, msg=bad):
                V.parse_value(bad)

    def test_reals_exact(self):
        self.roundtrip("real:-0.0", ("real", 0x8000000000000000))
        self.roundtrip("real:0.0", ("real", 0))
        self.roundtrip("real:inf", ("real", 0x7ff0000000000000))
        self.roundtrip("real:-inf", ("real", 0xfff0000000000000))
        self.roundtrip("real:nan", ("real", V.NAN_BITS))
        self.roundtrip("real:5e-324", ("real", 1))
        self.roundtrip("real:1e-308", ("real", V.real_bits(1e-308)))
        self.assertEqual(V.parse_value("real:0x0000000000000001"),
                         ("real", 1))
        # every NaN is one value (spec 7.2)
        self.assertEqual(V.parse_value("real:0xfff0000000000001"),
                         ("real", V.NAN_BITS))
        self.assertNotEqual(V.parse_value("real:-0.0"),
                            V.parse_value("real:0.0"))
        self.assertEqual(V.format_value(("real", V.real_bits(0.1))),
                         "real:0.1")
        for bad in ("real:1e400", "real:0x12", "real:abc", "real:"):
            with self.assertRaises(V.NotationError, msg=bad):
                V.parse_value(bad)

    def test_text_escapes(self):
        self.roundtrip(r'text:"a\nb\tc\\d\"e\0f\x01\u{1F600}"',
                       ("text", 'a\nb\tc\\d"e\0f\x01\U0001F600'))
        self.assertEqual(V.format_value(("text", "a\0\n\x7f")),
                         r'text:"a\0\n\x7f"')
        self.roundtrip('text:"日本語 é"', ("text", "日本語 é"))
        for bad in (r'text:"\u{D800}"', r'text:"\q"', 'text:"a"b"',
                    "text:abc", r'text:"\x4"', r'text:"\u{110000}"'):
            with self.assertRaises(V.NotationError, msg=bad):
                V.parse_value(bad)

    def test_split_words(self):
        self.assertEqual(V.split_words(r'@1 text:"a b \" c" int:1'),
                         ["@1", r'text:"a b \" c"', "int:1"])
        with self.assertRaises(V.NotationError):
            V.split_words('text:"open')

    def test_uuids(self):
        self.assertEqual(V.parse_uuid("@255"),
                         "00000000-0000-4000-8000-0000000000ff")
        self.assertEqual(V.parse_uuid("*"), "*")
        self.assertIsNone(V.parse_uuid("-"))
        with self.assertRaises(V.NotationError):
            V.parse_uuid("0000000A-0000-4000-8000-000000000000")


GOOD = """# a comment
requirements: LS-RECON-8 LS-APPLY-3
level: SHOULD
features: x-test
backends: sqlite
description: d
table t: a integer, b text
table u @client no-uuid: x real
table u @server: x real
client t:
  @1 int:1 text:"x y"
  cities 0:2
server u:
  @2 real:1.5
sync
sql both: INSERT INTO t VALUES (1)
sync expect conflict unchanged
expect both t:
  * int:1 text:"x y"
"""


class Fixtures(unittest.TestCase):
    def test_parse(self):
        fx = data.parse_fixture(GOOD, "good")
        self.assertEqual(fx.requirements, ["LS-RECON-8", "LS-APPLY-3"])
        self.assertEqual(fx.level, "SHOULD")
        self.assertEqual(fx.features, frozenset({"x-test"}))
        self.assertEqual(fx.backends, ("sqlite",))
        self.assertFalse(fx.tables["u"].with_uuid["client"])
        self.assertTrue(fx.tables["u"].with_uuid["server"])
        self.assertEqual(fx.initial[("client", "t")][0],
                         ("00000000-0000-4000-8000-000000000001",
                          (("integer", 1), ("text", "x y"))))
        self.assertEqual(fx.initial[("client", "t")][1], ("cities", 0, 2,
                                                          False, ()))
        self.assertEqual([s[0] for s in fx.steps],
                         ["sync", "sql", "sync", "expect"])
        self.assertEqual(fx.steps[2][1:3], ("conflict", True))
        self.assertEqual(fx.expect[0][0:2], ("both", "t"))
        self.assertEqual(fx.databases, ("client", "server"))
        self.assertEqual(fx.impl_keys, frozenset())

    def test_errors_name_the_line(self):
        cases = {
            "requirements: LS-A-1\ntable t: a integer\nclient t:\n"
            "  @1 int:1 int:2\nsync\n": ":4:",
            "requirements: LS-A-1\ntable t: a bogus\nsync\n": ":2:",
            "requirements: LS-A-1\ntable t: a integer\nfrobnicate\n": ":3:",
            "requirements: LS-A-1\ntable t: a integer\nclient t:\n"
            "  @1 int:x\nsync\n": ":4:",
        }
        for text, where in cases.items():
            with self.assertRaises(data.FixtureError) as cm:
                data.parse_fixture(text, "bad", "bad.fixture")
            self.assertIn("bad.fixture" + where, str(cm.exception))

    def test_no_uuid_rows_and_steps_required(self):
        with self.assertRaises(data.FixtureError):
            data.parse_fixture("requirements: LS-A-1\ntable t no-uuid: a "
                               "integer\nclient t:\n  @1 int:1\nsync\n", "x")
        with self.assertRaises(data.FixtureError):
            data.parse_fixture("requirements: LS-A-1\ntable t: a integer\n",
                               "x")

    def test_shipped_fixtures_parse_and_cite_spec_ids(self):
        reqs = coverage.load()
        if "LS-VERSION-1" not in reqs:
            self.skipTest("spec/lipsync.md predates row versions (issue 5): "
                          "the fixtures cite its new IDs")
        fixtures = data.load_fixtures()
        self.assertGreaterEqual(len(fixtures), 15)
        for fx in fixtures:
            for r in fx.requirements:
                self.assertTrue(r in reqs, f"{fx.name} cites {r}, which "
                                "spec/lipsync.md does not define")

    def test_cities(self):
        rows = data.expand_rows([("cities", 0, 3, False)])
        self.assertEqual(len(rows), 3)
        self.assertEqual(rows[0][1][0], ("integer", 3039154))
        self.assertEqual(rows[0][0], data.city_uuid(0))
        self.assertNotEqual(data.city_uuid(0), data.city_uuid(1))

    def test_generator_is_deterministic(self):
        gen = _load_gen()
        a, b = gen.generate(7, 50), gen.generate(7, 50)
        self.assertEqual(a, b)
        self.assertNotEqual(a, gen.generate(8, 50))
        fx = data.parse_fixture(a, "gen")
        union = fx.expect[0][2]
        self.assertEqual(len(union), 50)
        sides = [r[0] for r in fx.initial.get(("client", "gen"), [])] + \
            [r[0] for r in fx.initial.get(("server", "gen"), [])]
        self.assertEqual(set(sides), {r[0] for r in union})

    def test_generator_cli_prints_seed(self):
        r = subprocess.run([sys.executable, str(REPO / "fixtures/gen.py"),
                            "--seed", "3", "--size", "5"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stderr.strip(), "seed 3")
        self.assertIn("--seed 3 --size 5", r.stdout)


def _load_gen():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gen",
                                                  REPO / "fixtures/gen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Selection(unittest.TestCase):
    def impl(self, **kw):
        text = ("name = x\nserver = s {db} {listen} {tables}\n"
                "client = c {db} {connect} {tables}\ntable_option = -t {}\n"
                "backends = sqlite\n")
        for k, v in kw.items():
            text += f"{k} = {v}\n"
        return implmod.parse(text, "x.impl")

    def test_unsupported(self):
        im = self.impl()
        r = runner.Runner(im, backends=("sqlite", "postgres"))
        fx = data.parse_fixture("requirements: LS-A-1\nfeatures: x-foo\n"
                                "table t: a integer\nsync\n", "f")
        tests = data.fixture_tests([fx], [("sqlite", "sqlite"),
                                          ("sqlite", "postgres")])
        self.assertIn("x-foo", r.why_unsupported(tests[0]))
        fx.features = frozenset()
        tests = data.fixture_tests([fx], [("sqlite", "sqlite"),
                                          ("sqlite", "postgres")])
        self.assertIsNone(r.why_unsupported(tests[0]))
        self.assertIn("postgres", r.why_unsupported(tests[1]))
        res = r.run_one(tests[1])
        self.assertEqual(res.status, UNSUPPORTED)
        t = Test("wire/client/x", (), lambda c: None, role="client")
        only_server = implmod.parse(
            "name = s\nserver = s {db} {listen} {tables}\n"
            "table_option = -t {}\nbackends = sqlite\n", "s.impl")
        self.assertIn("no client", runner.Runner(only_server).why_unsupported(t))

    def test_pairs_and_backends(self):
        fx = data.parse_fixture("requirements: LS-A-1\npairs: sqlite-postgres"
                                "\ntable t: a integer\nsync\n", "f")
        names = [t.name for t in data.fixture_tests(fx and [fx], [
            ("sqlite", "sqlite"), ("sqlite", "postgres"),
            ("postgres", "sqlite")])]
        self.assertEqual(names, ["data/sqlite-postgres/f"])
        fx = data.parse_fixture("requirements: LS-A-1\nbackends: postgres"
                                "\ntable t: a integer\nsync\n", "g")
        names = [t.name for t in data.fixture_tests([fx], [
            ("sqlite", "sqlite"), ("postgres", "postgres")])]
        self.assertEqual(names, ["data/postgres-postgres/g"])


HUB = """requirements: LS-A-1
description: d
table t: k integer, v text
server t:
  @1 int:1 text:"one"
client2 t:
  @2 int:2 text:"two"
init client2
sync client policy server-wins
expect server t:
  @1 int:1 text:"one"
sql all: UPDATE t SET v = 'x' WHERE k = 1
sync client2 retention 0 expect ok
sync client2 unchanged
sync
sql all: UPDATE t SET v = 'y' WHERE k = 1
expect all t:
  @1 int:1 text:"y"
  @2 int:2 text:"two"
expect client2 t:
  @1 int:1 text:"y"
  @2 int:2 text:"two"
"""


class FakeSync:
    """A Context whose "implementation" is a naive sync: the client's rows
    are copied to the server and the server's to the client, by UUID (the
    client's row wins). Enough to test the fixture runner's plumbing."""

    class Proc:
        def __init__(self, status=0):
            self.status, self.stdout, self.stderr = status, "", ""
            self.seconds, self.address = 0.0, "127.0.0.1:1"

        def alive(self):
            return False

    def __init__(self, workdir, im, pair=("sqlite", "sqlite")):
        from lsconf.databases import new_database
        self.new_database = new_database
        self.workdir, self.impl, self.peer = Path(workdir), im, im
        self.backend_pair = pair
        self.calls, self.times, self.dbs = [], [], {}

    def database(self, backend, name):
        db = self.new_database(backend, self.workdir, name)
        self.dbs[name] = db
        return db

    def start_server(self, impl, db, tables, retention_ms=None):
        import time
        self.times.append(time.monotonic())
        self.calls.append(("server", tables, retention_ms))
        self.server_db = db
        return self.Proc()

    # what the fake server lists in TablesOpened.incremental
    incremental = ()

    def run_client(self, impl, db, address, tables, policy=None,
                   full=False, record=False):
        from lsconf import pbwire
        from lsconf.core import FrameRecord
        who = [n for n, d in self.dbs.items() if d is db][0]
        self.calls.append(("client", who, policy) + (("full",) if full
                                                     else ()))
        self.last_frames = [FrameRecord("server->client", pbwire.frame(
            "tables_opened", {"clock": 1, "incremental": list(
                self.incremental)}))] if record else []
        for t in tables:
            a = dict(db.canonical_rows(t)[1])
            b = dict(self.server_db.canonical_rows(t)[1])
            cols = [("k", "integer"), ("v", "text")]
            for src, dst, other in ((a, self.server_db, b), (b, db, a)):
                for u, vals in src.items():
                    if u not in other:
                        dst.insert(t, cols, [(u, vals)])
                    elif other[u] != vals and dst is self.server_db:
                        dst.execute(f"DELETE FROM {t} WHERE _lipsync_uuid"
                                    f" = '{u}'")
                        dst.insert(t, cols, [(u, vals)])
        return self.Proc()

    def run_init(self, impl, role, db, tables):
        who = [n for n, d in self.dbs.items() if d is db][0]
        self.calls.append(("init", role, who, tables))
        return self.Proc()


class FixtureRunner(unittest.TestCase):
    def impl(self, extra=""):
        return implmod.parse(
            "name = x\nserver = s {db} {listen} {tables}\n"
            "client = c {db} {connect} {tables}\ntable_option = -t {}\n"
            "backends = sqlite\n" + extra, "x.impl")

    def test_parse_two_servers(self):
        path = data.FIXTURES / "two-servers.fixture"
        fx = data.parse_fixture(path.read_text(encoding="utf-8"),
                                "two-servers", path)
        self.assertEqual(fx.databases, ("client", "server", "server2"))
        syncs = [s for s in fx.steps if isinstance(s, data.Sync)]
        self.assertEqual([(s.who, s.server) for s in syncs][:3],
                         [("client", "server"), ("client", "server2"),
                          ("client", "server")])
        with self.assertRaises(data.FixtureError):
            data.parse_fixture("requirements: LS-INC-25\ntable t: k integer"
                               "\nsync client to server3\n", "bad")

    def test_parse_hub_steps(self):
        fx = data.parse_fixture(HUB, "hub")
        self.assertEqual(fx.databases, ("client", "client2", "server"))
        self.assertEqual(fx.impl_keys, frozenset(
            {"policy_option", "retention_option", "client_init"}))
        syncs = [s for s in fx.steps if isinstance(s, data.Sync)]
        self.assertEqual([(s.who, s.policy, s.retention, s.unchanged)
                          for s in syncs],
                         [("client", "server-wins", None, False),
                          ("client2", None, 0, False),
                          ("client2", None, None, True),
                          ("client", None, None, False)])
        self.assertEqual(fx.steps[2][0], "expect")
        # all: every database; a run keeps those the fixture uses
        self.assertEqual(fx.steps[3][1], data.DATABASES)
        self.assertEqual(fx.steps[0], ("init", "client2", 8))
        self.assertEqual(fx.tables["t"].columns["client2"],
                         [("k", "integer"), ("v", "text")])

    def test_sync_words(self):
        for bad in ("sync policy", "sync policy first-wins",
                    "sync retention 1.5", "sync expect ok expect ok",
                    "sync unchanged client2", "sync client3", "sync now"):
            with self.assertRaises(data.FixtureError, msg=bad):
                data.parse_fixture("requirements: LS-A-1\ntable t: a "
                                   "integer\n" + bad + "\n", "x")

    def test_feature_words(self):
        fx = data.parse_fixture(
            "requirements: LS-A-1\nfeatures: incremental\ntable t: a "
            "integer\nsync mode incremental full\nsync client2 mode ranges"
            "\nsql server uncaptured: UPDATE t SET a = 1\n"
            "save server b1\nrestore server b1\ncopy client client2\n"
            "sync expect any\n", "x")
        syncs = [st for st in fx.steps if isinstance(st, data.Sync)]
        self.assertEqual([(st.mode, st.full, st.outcome) for st in syncs],
                         [("incremental", True, "ok"),
                          ("ranges", False, "ok"), (None, False, "any")])
        self.assertEqual(fx.steps[2], ("sql", ("server",),
                                       "UPDATE t SET a = 1", 6, False,
                                       True))
        self.assertEqual([st[:3] for st in fx.steps[3:6]],
                         [("save", "server", "b1"),
                          ("restore", "server", "b1"),
                          ("copy", "client", "client2")])
        self.assertEqual(fx.databases, ("client", "client2", "server"))
        self.assertEqual(fx.impl_keys, frozenset({"full_option"}))
        self.assertEqual(fx.pair_keys(("sqlite", "postgres")), frozenset(
            {("uncaptured_sql_postgres", "server")}))
        for bad in ("features: incremental\nsync mode fast",
                    "sync mode incremental",       # the feature missing
                    "features: incremental\nsync expect any unchanged",
                    "sync\nrestore client b1",
                    "sync\nsave client b1\nrestore server b1",
                    "sync\ncopy client client",
                    "sync\nsql client ignored: SELECT 1"):
            with self.assertRaises(data.FixtureError, msg=bad):
                data.parse_fixture("requirements: LS-A-1\ntable t: a "
                                   "integer\n" + bad + "\n", "x")

    def test_cities_adjust(self):
        fx = data.parse_fixture("requirements: LS-A-1\ntable c: cities\n"
                                "client c:\n  cities 0:3 population+1 "
                                "city_id-2\nsync\n", "x")
        rows = data.expand_rows(fx.initial[("client", "c")])
        plain = data.expand_rows([("cities", 0, 3, False)])
        self.assertEqual(rows[0][1][6][1], plain[0][1][6][1] + 1)
        self.assertEqual(rows[0][1][0][1], plain[0][1][0][1] - 2)
        self.assertEqual(rows[0][1][1:6], plain[0][1][1:6])
        with self.assertRaises(data.FixtureError):
            data.parse_fixture("requirements: LS-A-1\ntable c: cities\n"
                               "client c:\n  cities 0:3 name+1\nsync\n",
                               "x")

    def test_unsupported_without_keys(self):
        fx = data.parse_fixture(HUB, "hub")
        t = data.fixture_tests([fx], [("sqlite", "sqlite")])[0]
        r = runner.Runner(self.impl(), backends=("sqlite",))
        self.assertIn("declares no", r.why_unsupported(t))
        full = self.impl("policy_option = --policy {}\nretention_option = "
                         "--keep {}ms\nclient_init = c {db} --init "
                         "{tables}\n")
        self.assertIsNone(runner.Runner(full, backends=("sqlite",))
                          .why_unsupported(t))
        argv = full.client_argv("d", "a", "s", ["t"], policy="client-wins")
        self.assertEqual(argv[-2:], ["--policy", "client-wins"])
        argv = full.server_argv("d", "a", "s", ["t"], retention_ms=0)
        self.assertEqual(argv[-2:], ["--keep", "0ms"])
        self.assertEqual(full.init_argv("client", "d", ["t"]),
                         ["c", "d", "--init", "-t", "t"])
        with self.assertRaises(implmod.ImplError):
            full.init_argv("server", "d", ["t"])
        with self.assertRaises(implmod.ImplError):
            self.impl("policy_option = --policy\n")
        with self.assertRaises(implmod.ImplError):
            self.impl("server_init = s {tables}\n")

    def test_run_hub(self):
        import time
        fx = data.parse_fixture(HUB, "hub")
        with tempfile.TemporaryDirectory() as d:
            ctx = FakeSync(d, self.impl())
            t0 = time.monotonic()
            out = data.run_fixture(fx, ctx)
            took = time.monotonic() - t0
        self.assertEqual(out.status, PASS, out.message + out.diff)
        self.assertEqual(ctx.calls, [
            ("init", "client", "client2", ["t"]),
            ("server", ["t"], None), ("client", "client", "server-wins"),
            ("server", ["t"], 0), ("client", "client2", None),
            ("server", ["t"], None), ("client", "client2", None),
            ("server", ["t"], None), ("client", "client", None)])
        self.assertGreaterEqual(took, 6 * data.STEP_GAP)
        self.assertIn("line 10: expectation met", out.message)

    def test_run_detects_difference_and_change(self):
        text = HUB.replace('  @2 int:2 text:"two"\nexpect client2',
                           '  @2 int:2 text:"TWO"\nexpect client2')
        with tempfile.TemporaryDirectory() as d:
            out = data.run_fixture(data.parse_fixture(text, "hub"),
                                   FakeSync(d, self.impl()))
        self.assertEqual(out.status, FAIL)
        self.assertIn("at line", out.message)
        # an ok sync that changes rows fails `unchanged`
        text = HUB.replace("sync client2 unchanged\n",
                           "sql client2: UPDATE t SET v = 'z' WHERE k = 1\n"
                           "sync client2 unchanged\n")
        with tempfile.TemporaryDirectory() as d:
            out = data.run_fixture(data.parse_fixture(text, "hub"),
                                   FakeSync(d, self.impl()))
        self.assertEqual(out.status, FAIL)
        self.assertIn("changed the server's tables' rows", out.message)
        # `expect all` wants the three databases equal
        text = HUB.replace("sql all: UPDATE t SET v = 'y'",
                           "sql both: UPDATE t SET v = 'y'")
        with tempfile.TemporaryDirectory() as d:
            out = data.run_fixture(data.parse_fixture(text, "hub"),
                                   FakeSync(d, self.impl()))
        self.assertEqual(out.status, FAIL)
        self.assertIn("client2", out.message)

    def test_uncaptured_keys_by_pair_and_role(self):
        fx = data.parse_fixture(
            "requirements: LS-A-1\ntable t: a integer\nsync\n"
            "sql client uncaptured: UPDATE t SET a = 2\nsync\n", "x")
        t = data.fixture_tests([fx], [("sqlite", "sqlite")])[0]
        plain = self.impl()
        self.assertIn("uncaptured_sql_sqlite", runner.Runner(
            plain, backends=("sqlite",)).why_unsupported(t))
        keyed = self.impl("uncaptured_sql_sqlite = PRAGMA x; {sql}\n")
        self.assertIsNone(runner.Runner(keyed, backends=("sqlite",))
                          .why_unsupported(t))
        # the client's database: the server's implementation needs no key
        t.client_impl, t.server_impl = keyed, plain
        self.assertIsNone(runner.Runner(keyed, backends=("sqlite",))
                          .why_unsupported(t))
        t.client_impl, t.server_impl = plain, keyed
        self.assertIn("declares no uncaptured_sql_sqlite", runner.Runner(
            keyed, backends=("sqlite",)).why_unsupported(t))
        self.assertEqual(keyed.uncaptured_sql("sqlite", "UPDATE t"),
                         "PRAGMA x; UPDATE t")
        for bad in ("uncaptured_sql_sqlite = UPDATE t\n",
                    "uncaptured_sql_postgres = {sql}; {db}\n",
                    "full_option = --full {}\n"):
            with self.assertRaises(implmod.ImplError, msg=bad):
                self.impl(bad)
        full = self.impl("full_option = --full --really\n")
        self.assertEqual(full.client_argv("d", "a", "s", ["t"],
                                          full=True)[-2:],
                         ["--full", "--really"])
        with self.assertRaises(implmod.ImplError):
            self.impl().client_argv("d", "a", "s", ["t"], full=True)

    def test_run_feature_steps(self):
        """save/restore put a database back in place (the same file),
        copy makes a new file; uncaptured SQL goes through the .impl's
        template; `mode` reads TablesOpened from the recorded frames;
        `full` reaches the client command."""
        text = ("requirements: LS-A-1\nfeatures: incremental\n"
                "table t: k integer, v text\n"
                "client t:\n  @1 int:1 text:\"one\"\n"
                "sync\nsave client b\n"
                "sql client: UPDATE t SET v = 'two'\n"
                "restore client b\n"
                "expect client t:\n  @1 int:1 text:\"one\"\n"
                "copy client client2\n"
                "sql client2 uncaptured: UPDATE t SET v = 'three'\n"
                "expect client2 t:\n  @1 int:1 text:\"three\"\n"
                "expect client t:\n  @1 int:1 text:\"one\"\n"
                "sync mode incremental full\n")
        im = self.impl("uncaptured_sql_sqlite = CREATE TABLE marker (x); "
                       "{sql}\nfull_option = --full\n")
        with tempfile.TemporaryDirectory() as d:
            ctx = FakeSync(d, im)
            ctx.incremental = (0,)
            inodes = {}
            fx = data.parse_fixture(text, "x")
            orig = data._copy_step

            def spy(step, dbs):
                before = {k: os.stat(v.path).st_ino for k, v in dbs.items()}
                orig(step, dbs)
                inodes[step[0]] = (before, {k: os.stat(v.path).st_ino
                                            for k, v in dbs.items()})
            data._copy_step = spy
            try:
                out = data.run_fixture(fx, ctx)
            finally:
                data._copy_step = orig
            self.assertEqual(out.status, PASS, out.message + out.diff)
            self.assertEqual(ctx.calls[-1], ("client", "client", None,
                                             "full"))
            self.assertTrue(ctx.dbs["client2"].execute(
                "SELECT count(*) FROM marker"))
            before, after = inodes["restore"]
            self.assertEqual(before["client"], after["client"])
            before, after = inodes["copy"]
            self.assertNotEqual(before["client2"], after["client2"])
        with tempfile.TemporaryDirectory() as d:
            ctx = FakeSync(d, im)           # lists no table: not incremental
            out = data.run_fixture(data.parse_fixture(text, "x"), ctx)
            self.assertEqual(out.status, FAIL)
            self.assertIn("not incremental", out.message)

    def test_sql_fails(self):
        from lsconf.databases import HarnessError
        base = ("requirements: LS-A-1\ntable t: k integer, v text\n"
                "server t:\n  @1 int:1 text:\"one\"\n")
        cases = [("sql client fails: SELECT nonsense FROM nowhere\nsync\n",
                  PASS, ""),
                 ("sync\nsql client fails: SELECT 1\n", FAIL, "succeeded"),
                 ("sync\nsql server: INSERT INTO nowhere VALUES (1)\n", FAIL,
                  "had prepared")]
        for steps, status, words in cases:
            with self.subTest(steps), tempfile.TemporaryDirectory() as d:
                fx = data.parse_fixture(base + steps, "x")
                self.assertTrue(fx.steps[0][0] in ("sql", "sync"))
                out = data.run_fixture(fx, FakeSync(d, self.impl()))
                self.assertEqual(out.status, status, out.message)
                self.assertIn(words, out.message)
        with tempfile.TemporaryDirectory() as d:
            fx = data.parse_fixture(base + "sql client: bogus\nsync\n", "x")
            with self.assertRaises(HarnessError):
                data.run_fixture(fx, FakeSync(d, self.impl()))


class Diff(unittest.TestCase):
    U1, U2 = "00000000-0000-4000-8000-000000000001", \
        "00000000-0000-4000-8000-000000000002"

    def test_order_insensitive_equal(self):
        a = [(self.U1, (("integer", 1),)), (self.U2, (("integer", 2),))]
        self.assertEqual(data.compare_rows(a, list(reversed(a)), ["x"],
                                           ["x"]), "")

    def test_wildcard_uuid(self):
        exp = [("*", (("integer", 1),))]
        self.assertEqual(data.compare_rows(
            exp, [(self.U1, (("integer", 1),))], ["x"], ["x"]), "")
        self.assertNotEqual(data.compare_rows(
            exp, [(None, (("integer", 1),))], ["x"], ["x"]), "")

    def test_exact_values(self):
        exp = [(self.U1, (("real", 0x8000000000000000),))]
        act = [(self.U1, (("real", 0),))]
        d = data.compare_rows(exp, act, ["x"], ["x"])
        self.assertIn("- " + self.U1 + " real:-0.0", d)
        self.assertIn("+ " + self.U1 + " real:0.0", d)
        # 1 and 1.0 differ
        self.assertNotEqual(data.compare_rows(
            [(self.U1, (("integer", 1),))],
            [(self.U1, (("real", V.real_bits(1.0)),))], ["x"], ["x"]), "")

    def test_duplicates_count(self):
        row = (self.U1, (("integer", 1),))
        self.assertIn("1 unexpected", data.compare_rows([row], [row, row],
                                                        ["x"], ["x"]))

    def test_columns_and_missing_table(self):
        self.assertIn("columns differ", data.compare_rows([], [], ["a"],
                                                          ["b"]))
        self.assertEqual(data.compare_rows([], [], ["a"], None),
                         "table does not exist")

    def test_large_tables_by_hash(self):
        exp = [(f"00000000-0000-4000-8000-{i:012x}", (("integer", i),))
               for i in range(500)]
        d = data.compare_rows(exp, exp[:-1], ["x"], ["x"])
        self.assertIn("expected 500 rows (sha256", d)
        self.assertIn("got 499 rows", d)


class KnownFailuresAndExit(unittest.TestCase):
    def test_known_file(self):
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("# comment\ndata/*/conflict  # why\n\nwire/server/*\n")
        try:
            pats = runner.load_known_failures(f.name)
        finally:
            os.unlink(f.name)
        self.assertEqual(pats, ["data/*/conflict", "wire/server/*"])
        self.assertTrue(runner.is_known("data/sqlite-sqlite/conflict", pats))
        self.assertFalse(runner.is_known("data/sqlite-sqlite/overlap", pats))
        self.assertTrue(runner.is_known("wire/server/auth/x", pats))

    def test_classify(self):
        c = runner.classify
        self.assertEqual(c(FAIL, "MUST", False, False), FAIL)
        self.assertEqual(c(FAIL, "SHOULD", False, False), runner.WARN)
        self.assertEqual(c(FAIL, "SHOULD", True, False), FAIL)
        self.assertEqual(c(FAIL, "MUST", False, True), runner.XFAIL)
        self.assertEqual(c(PASS, "MUST", False, True), runner.XPASS)
        self.assertEqual(c(PASS, "MUST", False, False), PASS)
        self.assertEqual(c(UNSUPPORTED, "MUST", False, True), UNSUPPORTED)

    def test_exit_codes(self):
        e = runner.exit_code
        self.assertEqual(e([PASS, UNSUPPORTED, runner.XFAIL, runner.WARN]), 0)
        self.assertEqual(e([PASS, FAIL]), 1)
        self.assertEqual(e([PASS, runner.XPASS]), 1)
        self.assertEqual(e([PASS, ERROR]), 2)
        self.assertEqual(e([]), 2)
        self.assertEqual(e([UNSUPPORTED]), 2)
        self.assertEqual(e([PASS], harness_error=True), 2)


class ImplFile(unittest.TestCase):
    TEXT = """# x
name = demo
server = bin/srv --db {db} --listen {listen} --secret {secret_file} {tables}
client = /usr/bin/cli -d {db} -c {connect} -s {secret_file} {tables} --x={{y}}
table_option = -t {}
all_tables = --all
backends = sqlite, postgres
features = x-one
env = A=1 B='two words'
timeout = 5
exit_codes = conflict:7 schema:4
"""

    def test_parse_and_expand(self):
        im = implmod.parse(self.TEXT, "/r/conformance/impls/demo.impl")
        self.assertEqual(im.name, "demo")
        self.assertEqual(im.backends, ("sqlite", "postgres"))
        self.assertEqual(im.features, frozenset({"x-one"}))
        self.assertEqual(im.env, {"A": "1", "B": "two words"})
        self.assertEqual(im.timeout, 5.0)
        self.assertEqual(im.outcome_of(7), "conflict")
        self.assertEqual(im.outcome_of(0), "ok")
        self.assertEqual(im.outcome_of(9), "error")
        argv = im.client_argv("host=a dbname=b", "127.0.0.1:9", "/s",
                              ["t1", "t 2"])
        self.assertEqual(argv, ["/usr/bin/cli", "-d", "host=a dbname=b",
                                "-c", "127.0.0.1:9", "-s", "/s", "-t", "t1",
                                "-t", "t 2", "--x={y}"])
        argv = im.server_argv("db", "127.0.0.1:1", "/s", [], all_tables=True)
        self.assertEqual(argv[0], "/r/bin/srv")
        self.assertEqual(argv[-1], "--all")

    def test_errors(self):
        bad = [
            "name = x\nserver = s {db} {listen} {tables}\nbackends = sqlite\n",
            "name = x\nserver = s {db} {listen} {tables} {nope}\n"
            "table_option = -t {}\nbackends = sqlite\n",
            "name = x\nserver = s {db} {tables}\ntable_option = -t {}\n"
            "backends = sqlite\n",
            "name = x\nserver = s {db} {listen} {tables}\n"
            "table_option = -t {}\nbackends = mysql\n",
            "name = x\nbogus = 1\n",
            "name = x\ntable_option = -t {}\nbackends = sqlite\n",
            "name = x\nname = y\n",
        ]
        for text in bad:
            with self.assertRaises(implmod.ImplError, msg=text):
                implmod.parse(text, "t.impl")

    def test_ref_impl_parses(self):
        im = implmod.load(CONF / "impls" / "ref.impl")
        self.assertEqual(im.backends, ("sqlite", "postgres"))
        self.assertTrue(im.server_argv("d", "a", "s", ["t"])[0].endswith(
            "build/bin/lipsync-server"))
        self.assertEqual(im.features, frozenset({"incremental"}))
        self.assertIn("{sql}", im.uncaptured_sql_sqlite)
        self.assertIn("{sql}", im.uncaptured_sql_postgres)
        # the same programs without the feature, for --peer
        plain = implmod.load(CONF / "impls" / "ref-plain.impl")
        self.assertEqual(plain.features, frozenset())
        self.assertNotEqual(plain.name, im.name)
        for argv in (plain.server_argv("d", "a", "s", ["t"]),
                     plain.client_argv("d", "a", "s", ["t"])):
            self.assertIn("--no-incremental", argv)


class Coverage(unittest.TestCase):
    def test_levels_and_appendix(self):
        reqs = coverage.load()
        self.assertEqual(reqs["LS-FRAME-3"].level, "MUST")
        self.assertEqual(reqs["LS-TRANS-4"].level, "SHOULD")
        self.assertTrue(reqs["LS-TYPE-1"].retired)
        self.assertFalse(reqs["LS-STATE-1"].testable)
        self.assertTrue(reqs["LS-FRAME-3"].testable)

    def test_report(self):
        t = Test("x", ("LS-FRAME-3", "LS-NOPE-1"), lambda c: None)
        gaps, untestable, unknown, _ = coverage.report([t])
        ids = {r.id for r in gaps}
        self.assertNotIn("LS-FRAME-3", ids)
        self.assertIn("LS-FRAME-1", ids)
        self.assertIn("LS-STATE-1", {r.id for r in untestable})
        self.assertEqual(unknown, ["LS-NOPE-1"])


class Reports(unittest.TestCase):
    def result(self, status, outcome):
        t = Test("data/sqlite-sqlite/x", ("LS-A-1",), lambda c: None)
        return runner.Result(t, status, outcome, 0.5, "rerun-cmd",
                             ("sqlite", "sqlite"))

    def test_block_json_junit(self):
        from lsconf.core import FrameRecord
        o = Outcome(FAIL, "boom", "e", "a",
                    [FrameRecord("sent", b"\x00\x00\x00\x02\x52\x00",
                                 "EndTurn{}")], "- x\n+ y")
        r = self.result(FAIL, o)
        b = report.block(r)
        for part in ("FAIL data/sqlite-sqlite/x", "boom", "00000002 5200",
                     "EndTurn{}", "- x", "rerun:    rerun-cmd"):
            self.assertIn(part, b)
        import json
        import xml.etree.ElementTree as ET
        j = json.loads(report.to_json([r], {"impl": "x"}, ([], [], [], {})))
        self.assertEqual(j["tests"][0]["frames"][0]["hex"], "000000025200")
        x = ET.fromstring(report.to_junit([r, self.result(
            UNSUPPORTED, Outcome(UNSUPPORTED, "no"))], "s", 1.0))
        self.assertEqual(x.get("failures"), "1")
        self.assertEqual(x.get("skipped"), "1")


class RunExitStatus(unittest.TestCase):
    """The entry point's exit status on harness errors (no database or
    implementation needed)."""

    def run_py(self, *args):
        return subprocess.run([sys.executable, str(CONF / "run.py"), *args],
                              capture_output=True, text=True, cwd=REPO,
                              timeout=120)

    def test_missing_impl_file(self):
        r = self.run_py("--impl", "/nonexistent.impl")
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot read", r.stdout)

    def test_commands_that_do_not_start(self):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "broken.impl"
            p.write_text("name = broken\nserver = /nonexistent/srv {db} "
                         "{listen} {tables}\nclient = /nonexistent/cli {db} "
                         "{connect} {tables}\ntable_option = -t {}\n"
                         "backends = sqlite\n")
            r = self.run_py("--impl", str(p), "--filter", "data/*/disjoint")
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertIn("does not start", r.stdout)

    def test_no_test_selected(self):
        r = self.run_py("--impl", str(CONF / "impls/ref.impl"), "--backends",
                        "sqlite", "--filter", "no/such/test")
        self.assertEqual(r.returncode, 2)

    def test_list(self):
        r = self.run_py("--impl", str(CONF / "impls/ref.impl"), "--backends",
                        "sqlite", "--filter", "data/*", "--list")
        self.assertEqual(r.returncode, 0)
        self.assertIn("data/sqlite-sqlite/disjoint", r.stdout)
        self.assertNotIn("postgres", r.stdout)


if __name__ == "__main__":
    unittest.main()
