"""The scale check (spec LS-SCALE-1, SHOULD level): the same sync of a
generated table at two sizes, 20,000 and 80,000 rows of the cities data.
The client loads the table into the server's empty one (a first sync, not
timed), then updates a quarter of its rows and inserts a quarter more, and
syncs again, reconciling the whole table (the .impl's full_option, when it
has one): the server compares every item and writes updated and new rows,
mixed in UUID order. When four times the rows take more than SCALE_LIMIT
times as long, the test fails, which a SHOULD-level test reports as WARN:
the implementation has a quadratic path, which its users would meet on
tables of millions of rows.

The time is the client's, process start to exit (the harness's own work of
preparing the databases is not in it), as the data plane reports it."""

import re

from . import data
from .core import PASS, Test, failed, passed

SIZES = (20000, 80000)
SCALE_LIMIT = 6.0
_SECONDS = re.compile(r"sync client(?: full)?: client exit 0 \(ok\) in "
                      r"([0-9.]+)s")
_COLUMNS = ", ".join(n for n, _ in data.CITY_SCHEMA)


def _fixture(n, full):
    t = f"scale{n}"  # a table per size: both runs share the databases
    moved = _COLUMNS.replace("city_id", "city_id + 100000000", 1)
    text = (f"requirements: LS-SCALE-1\nlevel: SHOULD\n"
            f"description: {n} rows, a quarter updated, a quarter new\n"
            f"table {t}: cities\nclient {t}:\n  cities 0:{n}\n"
            f"sync client\n"
            f"sql client: UPDATE {t} SET population = population + 1"
            f" WHERE city_id % 4 = 0\n"
            f"sql client: INSERT INTO {t} ({_COLUMNS}) SELECT {moved}"
            f" FROM {t} WHERE city_id % 4 = 1\n"
            f"sync client{' full' if full else ''}\n")
    return data.parse_fixture(text, f"scale-{n}")


def run(ctx):
    impl = getattr(ctx, "client_impl", None) or ctx.impl
    full = impl.full_option is not None
    seconds = []
    for n in SIZES:
        out = data.run_fixture(_fixture(n, full), ctx)
        if out.status != PASS:
            return out
        times = _SECONDS.findall(out.message or "")
        if len(times) != 2:
            return failed("the syncs' times are missing from the log",
                          expected="two times", actual=out.message)
        seconds.append(max(float(times[1]), 0.01))
    ratio = seconds[1] / seconds[0]
    what = (f"{SIZES[0]:,} rows in {seconds[0]:.2f} s, {SIZES[1]:,} in "
            f"{seconds[1]:.2f} s: {ratio:.1f} times as long for "
            f"{SIZES[1] // SIZES[0]} times the rows")
    if ratio > SCALE_LIMIT:
        return failed(
            "quadratic behaviour: " + what,
            expected=f"at most {SCALE_LIMIT:g} times as long (LS-SCALE-1)",
            actual=what)
    return passed(what)


def tests(pairs):
    out = []
    for cb, sb in pairs:
        t = Test(name=f"scale/{cb}-{sb}/cities-{SIZES[0]}-{SIZES[1]}",
                 requirements=("LS-SCALE-1",), run=run, level="SHOULD",
                 backends=tuple(sorted({cb, sb})), role="both",
                 description=f"a sync of {SIZES[1]:,} rows takes at most "
                 f"{SCALE_LIMIT:g} times as long as one of {SIZES[0]:,}")
        t.backend_pair = (cb, sb)
        t.impl_keys = frozenset()
        t.fixture_backends = ("sqlite", "postgres")
        out.append(t)
    return out
