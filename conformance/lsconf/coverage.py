"""Requirement coverage: every requirement of spec/lipsync.md with its
level (from its BCP 14 key words) and Appendix C's "outside" column, and
which MUSTs no test checks."""

import re
from pathlib import Path

SPEC = Path(__file__).resolve().parents[2] / "spec" / "lipsync.md"
_DEF = re.compile(r"\*\*\[(LS-[A-Z]+-[0-9]+)\]\*\*")
_ROW = re.compile(r"^\|\s*\[(LS-[A-Z]+-[0-9]+)\]\s*\|(.*)\|(.*)\|\s*$")


class Requirement:
    def __init__(self, rid, level, text):
        self.id, self.level, self.text = rid, level, text
        self.summary, self.outside = "", ""

    @property
    def retired(self):
        return self.summary.startswith("(retired)")

    @property
    def testable(self):
        return not self.outside.startswith("no") and not self.retired


def level_of(text):
    if re.search(r"\b(MUST|REQUIRED|SHALL)\b", text):
        return "MUST"
    if re.search(r"\b(SHOULD|RECOMMENDED)\b", text):
        return "SHOULD"
    if re.search(r"\b(MAY|OPTIONAL)\b", text):
        return "MAY"
    return "-"


def id_key(rid):
    _, area, n = rid.split("-")
    return (area, int(n))


def load(spec=SPEC):
    text = Path(spec).read_text(encoding="utf-8")
    cut = text.find("\n## Appendix A")
    body, appendix = (text[:cut], text[cut:]) if cut >= 0 else (text, "")
    reqs = {}
    matches = list(_DEF.finditer(body))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        stmt = body[m.end():end]
        h = re.search(r"\n#", stmt)
        if h:
            stmt = stmt[:h.start()]
        reqs[m.group(1)] = Requirement(m.group(1), level_of(stmt),
                                       " ".join(stmt.split()))
    c = appendix.find("## Appendix C")
    for line in appendix[c:].splitlines() if c >= 0 else []:
        m = _ROW.match(line)
        if m:
            r = reqs.setdefault(m.group(1), Requirement(m.group(1), "-", ""))
            r.summary, r.outside = m.group(2).strip(), m.group(3).strip()
    return reqs


def report(tests, spec=SPEC):
    """(uncovered testable MUSTs, MUSTs Appendix C marks not testable from
    outside, unknown IDs the tests cite), each a sorted list of
    Requirements (the last: of IDs)."""
    reqs = load(spec)
    cited = {r for t in tests for r in t.requirements}
    gaps, untestable = [], []
    for rid in sorted(reqs, key=id_key):
        r = reqs[rid]
        # A statement with an ID but no key word is a normative definition
        # (spec 1.1): binding like a MUST.
        if r.level not in ("MUST", "-") or r.retired or rid in cited:
            continue
        (gaps if r.testable else untestable).append(r)
    unknown = sorted((c for c in cited if c not in reqs), key=id_key)
    return gaps, untestable, unknown, reqs
