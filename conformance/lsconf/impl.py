"""The .impl file: how to run one LipSync implementation from its CLI.

Format: one `key = value` per line; blank lines and lines starting with `#`
are ignored; a value runs to the end of the line (surrounding white space
removed). Unknown keys are an error, so a typo never goes unnoticed.

  name          a short name for reports (letters, digits, `-`, `_`, `.`)
  server        command template: run the implementation as a server
  client        command template: run it as a client syncing once
  table_option  how one table is passed, `{}` standing for its name,
                e.g. `--table {}`; {tables} expands to it once per table
  all_tables    what {tables} becomes when the server must offer every
                table (optional; without it such tests are unsupported)
  server_ready  a regular expression: the server is ready when a line of
                its stdout matches it (optional; without it the harness
                waits until the port accepts a TCP connection)
  backends      the databases it supports: `sqlite`, `postgres`, or both
  features      optional features of spec/ (5.4, 15.3) it implements,
                separated by spaces or commas (may be empty)
  env           extra environment variables, `NAME=VALUE` separated by
                spaces (repeatable key: every line adds)
  timeout       seconds one process may run before it is killed (default 60)
  policy_option optional: the client words that choose a conflict policy,
                `{}` standing for lww, server-wins or client-wins, e.g.
                `--policy {}`; added to the client command by a fixture's
                `sync ... policy P` (without it such fixtures are
                unsupported)
  retention_option  optional: the server words that set its tombstone
                retention, `{}` standing for an integer number of
                milliseconds, e.g. `--tombstone-retention {}ms`; added to
                the server command by `sync ... retention MS`
  client_init   optional: a command that installs change capture in a
                client database and exits 0, without network (placeholders
                {db} and {tables}); run by a fixture's `init client`
  server_init   optional: the same for a server database (`init server`)
  full_option   optional: the client words for a sync that presents no
                checkpoint and recounts what the client keeps of its
                tables (feature incremental, spec 8.8.6), e.g. `--full`;
                added to the client command by a fixture's `sync ... full`
  uncaptured_sql_sqlite, uncaptured_sql_postgres
                optional: how this implementation's database is written
                without change capture, on that backend: SQL with {sql}
                standing for the statement (the text is SQL, not split
                into words), e.g. `UPDATE state SET off = 1; {sql};
                UPDATE state SET off = 0`; run by a fixture's
                `sql SIDE uncaptured: STATEMENT`
  exit_codes    optional: what the client's exit status means, as
                `outcome:code` pairs, e.g. `conflict:7 schema:4` (outcomes
                may share a code). A sync expected to end in a listed
                outcome must exit with exactly its code; for an outcome
                not listed, any non-zero status will do.

A command template is split like a POSIX shell line (shlex, no shell runs)
and then each word has its placeholders filled in:

  {db}           the database: a SQLite file path, or for PostgreSQL a
                 libpq keyword/value string ("host=... port=... dbname=...")
  {listen}       server: the address to listen on, 127.0.0.1:PORT
  {connect}      client: the server's address, 127.0.0.1:PORT
  {secret_file}  a file (mode 0600) holding the shared secret plus one LF
  {tables}       the table options (a word that is exactly {tables} becomes
                 several words); tables are named as in the fixture
  {root}         the directory holding the .impl file's repository root
                 (the parent of the `conformance` directory it lives in, or
                 the .impl file's own directory otherwise)
  {impl_dir}     the directory holding the .impl file
  {{ and }}      literal braces

A relative program path (containing a `/`) is taken relative to {root}.
An implementation may leave out `server` or `client` if it implements one
role only: tests of the other role are then reported as unsupported.
"""

import os
import re
import shlex
from pathlib import Path

KEYS = {"name", "server", "client", "table_option", "all_tables",
        "server_ready", "backends", "features", "env", "timeout",
        "exit_codes", "policy_option", "retention_option", "client_init",
        "server_init", "full_option", "uncaptured_sql_sqlite",
        "uncaptured_sql_postgres"}
# optional keys a fixture may need, and the role whose program uses them
# (uncaptured_sql_*: the role of the database written, which a fixture's
# test names with the key)
OPTIONAL_KEYS = {"policy_option": "client", "retention_option": "server",
                 "client_init": "client", "server_init": "server",
                 "full_option": "client"}
UNCAPTURED_KEYS = ("uncaptured_sql_sqlite", "uncaptured_sql_postgres")
BACKENDS = ("sqlite", "postgres")
OUTCOMES = {"ok", "auth", "schema", "conflict", "invalid", "protocol",
            "storage", "usage", "error"}
PLACEHOLDERS = {"db", "listen", "connect", "secret_file", "tables", "root",
                "impl_dir"}


class ImplError(Exception):
    """The .impl file is unusable; the message says why and where."""


class Impl:
    def __init__(self, path, name, server, client, table_option,
                 all_tables, server_ready, backends, features, env, timeout,
                 exit_codes, policy_option=None, retention_option=None,
                 client_init=None, server_init=None, full_option=None,
                 uncaptured_sql=None):
        self.path = Path(path)
        self.name = name
        self.server = server
        self.client = client
        self.table_option = table_option
        self.all_tables = all_tables
        self.server_ready = server_ready
        self.backends = tuple(backends)
        self.features = frozenset(features)
        self.env = dict(env)
        self.timeout = timeout
        self.exit_codes = dict(exit_codes)
        self.policy_option = policy_option
        self.retention_option = retention_option
        self.client_init = client_init
        self.server_init = server_init
        self.full_option = full_option
        for b in BACKENDS:
            setattr(self, "uncaptured_sql_" + b,
                    (uncaptured_sql or {}).get(b))

    def __repr__(self):
        return f"Impl({self.name!r})"

    @property
    def impl_dir(self):
        return self.path.resolve().parent

    @property
    def root(self):
        d = self.impl_dir
        for p in [d, *d.parents]:
            if p.name == "conformance":
                return p.parent
        return d

    def has_role(self, role):
        if role == "server":
            return self.server is not None
        if role == "client":
            return self.client is not None
        return self.server is not None and self.client is not None

    def _expand(self, template, values, tables, all_tables=False):
        words = shlex.split(template)
        out = []
        values = dict(values, root=str(self.root),
                      impl_dir=str(self.impl_dir))
        for i, w in enumerate(words):
            if w == "{tables}":
                if all_tables:
                    out.extend(shlex.split(self.all_tables))
                else:
                    for t in tables:
                        out.extend(fill(x, {"": t}) if "{}" in x else x
                                   for x in shlex.split(self.table_option))
                continue
            w = fill(w, values)
            if i == 0 and "/" in w and not os.path.isabs(w):
                w = str(self.root / w)
            out.append(w)
        return out

    def _option(self, key, value):
        """The words of option |key| (policy_option, retention_option) with
        {} filled by |value|."""
        template = getattr(self, key)
        if template is None:
            raise ImplError(f"{self.name} declares no {key}")
        return [fill(x, {"": str(value)}) if "{}" in x else x
                for x in shlex.split(template)]

    def server_argv(self, db, listen, secret_file, tables, all_tables=False,
                    retention_ms=None):
        """retention_ms: an integer number of milliseconds: the words of
        retention_option are added at the end."""
        argv = self._expand(self.server, {"db": db, "listen": listen,
                                          "secret_file": str(secret_file)},
                            tables, all_tables)
        if retention_ms is not None:
            argv += self._option("retention_option", int(retention_ms))
        return argv

    def client_argv(self, db, connect, secret_file, tables, policy=None,
                    full=False):
        """policy: lww, server-wins or client-wins: the words of
        policy_option are added at the end; full: those of full_option."""
        argv = self._expand(self.client, {"db": db, "connect": connect,
                                          "secret_file": str(secret_file)},
                            tables)
        if policy is not None:
            argv += self._option("policy_option", policy)
        if full:
            if self.full_option is None:
                raise ImplError(f"{self.name} declares no full_option")
            argv += shlex.split(self.full_option)
        return argv

    def uncaptured_sql(self, backend, statement):
        """The SQL that runs |statement| without change capture on a
        |backend| database of this implementation."""
        template = getattr(self, "uncaptured_sql_" + backend, None)
        if template is None:
            raise ImplError(f"{self.name} declares no uncaptured_sql_"
                            f"{backend}")
        return fill(template, {"sql": statement})

    def init_argv(self, role, db, tables):
        """The client_init (role "client") or server_init command."""
        template = getattr(self, role + "_init")
        if template is None:
            raise ImplError(f"{self.name} declares no {role}_init")
        return self._expand(template, {"db": db}, tables)

    def outcome_of(self, status):
        """The outcome name of a client exit status: "ok" for 0, the name
        exit_codes gives it, or "error"."""
        if status == 0:
            return "ok"
        for name, code in self.exit_codes.items():
            if code == status:
                return name
        return "error"


_FIELD = re.compile(r"\{([a-z_]*)\}")


def fill(word, values):
    """Fills {name} placeholders of |word|; {{ and }} are literal braces."""
    out, i = [], 0
    while i < len(word):
        if word.startswith("{{", i):
            out.append("{")
            i += 2
        elif word.startswith("}}", i):
            out.append("}")
            i += 2
        elif word[i] == "{":
            m = _FIELD.match(word, i)
            if not m or m.group(1) not in values:
                raise ImplError(f"unknown placeholder in {word!r}")
            out.append(values[m.group(1)])
            i = m.end()
        else:
            out.append(word[i])
            i += 1
    return "".join(out)


def _check_template(key, template, lineno, path, allowed=PLACEHOLDERS):
    try:
        words = shlex.split(template)
    except ValueError as e:
        raise ImplError(f"{path}:{lineno}: {key}: {e}") from None
    if not words:
        raise ImplError(f"{path}:{lineno}: {key} is empty")
    for w in words:
        for name in _FIELD.findall(w.replace("{{", "").replace("}}", "")):
            if name not in allowed:
                raise ImplError(f"{path}:{lineno}: {key}: unknown "
                                f"placeholder {{{name}}}")


def parse(text, path="<impl>"):
    values, env, lines = {}, {}, {}
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        key, eq, value = s.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            raise ImplError(f"{path}:{lineno}: expected `key = value`, "
                            f"got {s!r}")
        if key not in KEYS:
            raise ImplError(f"{path}:{lineno}: unknown key {key!r} (known: "
                            f"{', '.join(sorted(KEYS))})")
        if key == "env":
            for item in shlex.split(value):
                n, e2, v = item.partition("=")
                if not e2 or not n:
                    raise ImplError(f"{path}:{lineno}: env wants NAME=VALUE,"
                                    f" got {item!r}")
                env[n] = v
            continue
        if key in values:
            raise ImplError(f"{path}:{lineno}: {key} given twice "
                            f"(first on line {lines[key]})")
        values[key], lines[key] = value, lineno
    name = values.get("name") or Path(path).stem
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ImplError(f"{path}: name {name!r}: use letters, digits, . _ -")
    server, client = values.get("server"), values.get("client")
    if not server and not client:
        raise ImplError(f"{path}: give at least one of server, client")
    for key in ("server", "client", "all_tables", "client_init",
                "server_init"):
        if values.get(key):
            _check_template(key, values[key], lines[key], path)
    for key in ("policy_option", "retention_option"):
        if values.get(key):
            _check_template(key, values[key], lines[key], path, {""})
    for key in ("policy_option", "retention_option"):
        if key in values and "{}" not in values[key]:
            raise ImplError(f"{path}:{lines[key]}: {key} must contain {{}}")
    if values.get("full_option"):
        _check_template("full_option", values["full_option"],
                        lines["full_option"], path, set())
    for key in UNCAPTURED_KEYS:
        if key in values:
            names = set(_FIELD.findall(values[key].replace(
                "{{", "").replace("}}", "")))
            if names != {"sql"}:
                raise ImplError(f"{path}:{lines[key]}: {key} must contain "
                                "{sql} and no other placeholder")
    table_option = values.get("table_option", "")
    if not table_option or "{}" not in table_option:
        raise ImplError(f"{path}: table_option must be given and contain {{}}"
                        " (e.g. `table_option = --table {}`)")
    for key, need in (("server", ("{listen}", "{db}", "{tables}")),
                      ("client", ("{connect}", "{db}", "{tables}")),
                      ("client_init", ("{db}", "{tables}")),
                      ("server_init", ("{db}", "{tables}"))):
        if values.get(key):
            for n in need:
                if n not in values[key]:
                    raise ImplError(f"{path}:{lines[key]}: {key} template "
                                    f"lacks {n}")
    backends = values.get("backends", "").replace(",", " ").split()
    if not backends:
        raise ImplError(f"{path}: backends is missing (sqlite, postgres)")
    for b in backends:
        if b not in BACKENDS:
            raise ImplError(f"{path}:{lines['backends']}: unknown backend "
                            f"{b!r} (known: {', '.join(BACKENDS)})")
    features = values.get("features", "").replace(",", " ").split()
    for f in features:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,63}", f):
            raise ImplError(f"{path}: bad feature name {f!r} (spec LS-FEAT-1)")
    try:
        timeout = float(values.get("timeout", "60"))
        if timeout <= 0:
            raise ValueError
    except ValueError:
        raise ImplError(f"{path}: timeout must be a positive number of "
                        "seconds") from None
    exit_codes = {}
    for item in values.get("exit_codes", "").replace(",", " ").split():
        n, colon, c = item.partition(":")
        if not colon or n not in OUTCOMES or not c.isdigit():
            raise ImplError(f"{path}: exit_codes wants outcome:code pairs "
                            f"with outcomes {sorted(OUTCOMES)}, got {item!r}")
        exit_codes[n] = int(c)
    ready = values.get("server_ready") or None
    if ready:
        try:
            re.compile(ready)
        except re.error as e:
            raise ImplError(f"{path}: server_ready: {e}") from None
    return Impl(path, name, server or None, client or None, table_option,
                values.get("all_tables") or None, ready,
                backends, features, env, timeout, exit_codes,
                values.get("policy_option") or None,
                values.get("retention_option") or None,
                values.get("client_init") or None,
                values.get("server_init") or None,
                values.get("full_option") or None,
                {b: values["uncaptured_sql_" + b] for b in BACKENDS
                 if values.get("uncaptured_sql_" + b)})


def load(path):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ImplError(f"cannot read {path}: {e.strerror}") from None
    return parse(text, str(path))
