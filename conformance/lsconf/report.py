"""What a run prints and writes: the table on stdout, a block per failure,
requirement coverage, the JSON results file and the JUnit XML file."""

import json
import textwrap
import xml.etree.ElementTree as ET

from .core import PASS, FAIL, UNSUPPORTED, ERROR
from .runner import XFAIL, XPASS, WARN

LABEL = {PASS: "PASS", FAIL: "FAIL", UNSUPPORTED: "UNSUP", ERROR: "ERROR",
         XFAIL: "XFAIL", XPASS: "XPASS", WARN: "WARN"}
BLOCK = {FAIL, ERROR, XPASS, WARN, XFAIL}
ORDER = [PASS, FAIL, XFAIL, XPASS, WARN, UNSUPPORTED, ERROR]


def line(r):
    reqs = " ".join(r.test.requirements)
    return (f"{LABEL[r.status]:<6} {r.test.name:<58} {r.seconds:6.2f}s  "
            f"{reqs}")


def hexdump(raw, width=32, limit=256):
    h = raw[:limit].hex()
    rows = [" ".join(h[i:i + 8] for i in range(j, min(j + width * 2, len(h)),
                                               8))
            for j in range(0, len(h), width * 2)]
    if len(raw) > limit:
        rows.append(f"... ({len(raw)} bytes in all)")
    return rows


def block(r):
    o, t = r.outcome, r.test
    out = [f"==== {LABEL[r.status]} {t.name}", f"  checks:   "
           f"{' '.join(t.requirements) or '-'} ({t.level})"]
    if r.status == XPASS:
        out.append("  listed in --known-failures, but passed: remove it "
                   "from the list")
    if r.status == XFAIL:
        out.append("  (a known failure, listed in --known-failures)")
    if r.status == WARN:
        out.append("  (a SHOULD: fails the run only with --strict)")
    if t.description:
        out.append(f"  what:     {t.description}")
    if o.message:
        out.append(f"  message:  {o.message}")
    for label, text in (("expected", o.expected), ("actual", o.actual)):
        if text:
            lines = text.splitlines() or [""]
            out.append(f"  {label + ':':<9} {lines[0]}")
            out.extend("            " + x for x in lines[1:])
    if o.frames:
        out.append(f"  frames ({len(o.frames)}):")
        for f in o.frames:
            if not f.raw:
                out.append(f"    {f.decoded}")
                continue
            out.append(f"    {f.direction} {len(f.raw)} bytes"
                       + (f": {f.decoded}" if f.decoded else ""))
            out.extend("      " + x for x in hexdump(f.raw))
    if o.diff:
        out.append("  diff:")
        out.extend("    " + x for x in o.diff.splitlines())
    out.append(f"  rerun:    {r.rerun}")
    return "\n".join(out)


def counts(results):
    c = {s: 0 for s in ORDER}
    for r in results:
        c[r.status] += 1
    return c


def summary_line(results, seconds):
    c = counts(results)
    parts = [f"{c[s]} {LABEL[s].lower()}" for s in ORDER if c[s]]
    return (f"{len(results)} tests: " + ", ".join(parts or ["none"])
            + f" in {seconds:.1f}s")


def coverage_text(gaps, untestable, unknown):
    out = [f"Requirement coverage: {len(gaps)} MUST requirement(s) testable "
           "from outside that no test checks (def = a normative definition "
           "without a key word):"]
    for r in gaps:
        mark = "def " if r.level == "-" else "    "
        out.append(f"  {r.id:<14} {mark}{r.summary}")
    out.append(f"{len(untestable)} MUST requirement(s) Appendix C marks as "
               "not testable from outside:")
    for r in untestable:
        mark = "def " if r.level == "-" else "    "
        out.append(f"  {r.id:<14} {mark}{r.summary}  [outside: {r.outside}]")
    if unknown:
        out.append("Tests cite IDs that spec/lipsync.md does not define: "
                   + " ".join(unknown))
    return "\n".join(out)


def matrix_text(results, names):
    """A client x server table of data-plane results: passed/ran."""
    cells = {}
    for r in results:
        ci = getattr(r.test, "client_impl", None)
        si = getattr(r.test, "server_impl", None)
        if ci is None or si is None or r.status == UNSUPPORTED:
            continue
        p, n = cells.get((ci.name, si.name), (0, 0))
        cells[(ci.name, si.name)] = (p + (r.status in (PASS, XFAIL, WARN)),
                                     n + 1)
    w = max(12, *(len(n) + 2 for n in names))
    out = ["Cross-implementation matrix (data-plane tests passed/run; rows "
           "client, columns server):",
           "client \\ server".ljust(w + 4) + "".join(n.ljust(w)
                                                     for n in names)]
    for c in names:
        row = c.ljust(w + 4)
        for s in names:
            v = cells.get((c, s))
            row += (f"{v[0]}/{v[1]}" if v else "-").ljust(w)
        out.append(row)
    return "\n".join(out)


def to_json(results, meta, coverage):
    gaps, untestable, unknown, _ = coverage
    tests = []
    for r in results:
        o, t = r.outcome, r.test
        tests.append({
            "name": t.name, "status": r.status, "level": t.level,
            "requirements": list(t.requirements),
            "features": sorted(t.features), "role": t.role,
            "backend_pair": list(r.pair) if r.pair else None,
            "description": t.description, "seconds": round(r.seconds, 3),
            "message": o.message, "expected": o.expected,
            "actual": o.actual, "diff": o.diff,
            "frames": [{"direction": f.direction, "hex": f.raw.hex(),
                        "decoded": f.decoded} for f in o.frames],
            "rerun": r.rerun,
        })
    return json.dumps({
        **meta, "counts": counts(results), "tests": tests,
        "coverage": {
            "uncovered_must": [{"id": r.id, "summary": r.summary}
                               for r in gaps],
            "not_testable_must": [{"id": r.id, "summary": r.summary,
                                   "reason": r.outside} for r in untestable],
            "unknown_ids": unknown,
        }}, indent=2, ensure_ascii=False)


def to_junit(results, suite_name, seconds):
    c = counts(results)
    suite = ET.Element("testsuite", {
        "name": suite_name, "tests": str(len(results)),
        "failures": str(c[FAIL] + c[XPASS]), "errors": str(c[ERROR]),
        "skipped": str(c[UNSUPPORTED] + c[XFAIL]),
        "time": f"{seconds:.3f}"})
    for r in results:
        name = r.test.name
        cls, _, short = name.rpartition("/")
        case = ET.SubElement(suite, "testcase", {
            "classname": cls.replace("/", ".") or suite_name, "name": short,
            "time": f"{r.seconds:.3f}"})
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", {
            "name": "requirements", "value": " ".join(r.test.requirements)})
        ET.SubElement(props, "property", {"name": "level",
                                          "value": r.test.level})
        msg = r.outcome.message
        if r.status in (FAIL, XPASS):
            el = ET.SubElement(case, "failure", {"message": msg or r.status,
                                                 "type": r.status})
            el.text = block(r)
        elif r.status == ERROR:
            el = ET.SubElement(case, "error", {"message": msg})
            el.text = block(r)
        elif r.status in (UNSUPPORTED, XFAIL):
            ET.SubElement(case, "skipped", {"message": f"{r.status}: {msg}"})
        elif r.status == WARN:
            out = ET.SubElement(case, "system-out")
            out.text = block(r)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def wrap(text, indent="  "):
    return textwrap.indent(text, indent)
