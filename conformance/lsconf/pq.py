"""Runs SQL on PostgreSQL through libpq in this process (ctypes), without a
psql process a statement: a query costs a round trip, not a process start
and a connection. Each thread keeps one connection a connection string
until close() names its database. Without libpq, available() is False and
the harness runs psql instead."""

import ctypes
import ctypes.util
import threading

CONNECTION_OK = 0
PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_COPY_IN = 1, 2, 4

_lib = None
_local = threading.local()


class PqError(Exception):
    pass


def _load():
    global _lib
    if _lib is not None:
        return _lib or None
    name = ctypes.util.find_library("pq")
    try:
        lib = ctypes.CDLL(name or "libpq.so.5")
    except OSError:
        _lib = False
        return None
    vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for fn, res, args in (
            ("PQconnectdb", vp, [cp]), ("PQstatus", i, [vp]),
            ("PQfinish", None, [vp]), ("PQerrorMessage", cp, [vp]),
            ("PQexec", vp, [vp, cp]), ("PQresultStatus", i, [vp]),
            ("PQresultErrorMessage", cp, [vp]), ("PQclear", None, [vp]),
            ("PQntuples", i, [vp]), ("PQnfields", i, [vp]),
            ("PQgetvalue", cp, [vp, i, i]),
            ("PQputCopyData", i, [vp, cp, i]),
            ("PQputCopyEnd", i, [vp, cp]), ("PQgetResult", vp, [vp])):
        f = getattr(lib, fn)
        f.restype, f.argtypes = res, args
    _lib = lib
    return lib


def available():
    return _load() is not None


def _conns():
    if not hasattr(_local, "conns"):
        _local.conns = {}
    return _local.conns


def _open(conninfo, options):
    lib = _load()
    quoted = options.replace("\\", "\\\\").replace("'", "\\'")
    conn = lib.PQconnectdb(f"{conninfo} options='{quoted}'".encode())
    if not conn or lib.PQstatus(conn) != CONNECTION_OK:
        msg = lib.PQerrorMessage(conn).decode(errors="replace") if conn \
            else "out of memory"
        if conn:
            lib.PQfinish(conn)
        raise PqError(msg.strip())
    return conn


def close(dbname=None):
    """Closes this thread's connections to database dbname (all, without
    one): a database is dropped or cloned only without sessions."""
    lib = _load()
    for key in list(_conns()):
        if dbname is None or key[0].endswith(f" dbname={dbname}"):
            lib.PQfinish(_conns().pop(key))


def _result_error(lib, conn, res):
    msg = lib.PQresultErrorMessage(res) if res else lib.PQerrorMessage(conn)
    return (msg or b"").decode(errors="replace").strip()


def execute(conninfo, sql, options="", stdin=None, keep=True):
    """Runs sql (one statement or several; the last one's rows count) and
    returns its rows: tuples of str, "" for NULL as psql -At prints it (a
    PostgreSQL text holds no NUL, so a value is read up to its first). A
    COPY FROM STDIN is fed stdin. With keep, the connection stays open for
    the next statement of this thread; a kept connection the server has
    ended since (a restart) is replaced once, the statement never having
    reached it."""
    lib = _load()
    key = (conninfo, options)
    conn = _conns().pop(key, None) if keep else None
    if conn is not None:
        res = lib.PQexec(conn, sql.encode("utf-8"))
        if lib.PQstatus(conn) == CONNECTION_OK:
            return _finish(lib, conn, res, stdin, key)
        if res:
            lib.PQclear(res)
        lib.PQfinish(conn)
    conn = _open(conninfo, options)
    res = lib.PQexec(conn, sql.encode("utf-8"))
    return _finish(lib, conn, res, stdin, key if keep else None)


def _finish(lib, conn, res, stdin, key):
    """The rows of res; conn goes back to this thread's (under key) or is
    closed."""
    try:
        return _rows(lib, conn, res, stdin)
    finally:
        if res:
            lib.PQclear(res)
        if key is not None and lib.PQstatus(conn) == CONNECTION_OK:
            _conns()[key] = conn
        else:
            lib.PQfinish(conn)


def _rows(lib, conn, res, stdin):
    st = lib.PQresultStatus(res) if res else -1
    if st == PGRES_COPY_IN:
        data = stdin or b""
        ok = lib.PQputCopyData(conn, data, len(data)) == 1 and \
            lib.PQputCopyEnd(conn, None) == 1
        error = None if ok else _result_error(lib, conn, None)
        while True:
            r = lib.PQgetResult(conn)
            if not r:
                break
            if lib.PQresultStatus(r) != PGRES_COMMAND_OK and not error:
                error = _result_error(lib, conn, r)
            lib.PQclear(r)
        if error:
            raise PqError(error)
        return []
    if st not in (PGRES_COMMAND_OK, PGRES_TUPLES_OK):
        raise PqError(_result_error(lib, conn, res) or "the query failed")
    get, nf = lib.PQgetvalue, lib.PQnfields(res)
    return [tuple(get(res, r, c).decode("utf-8", "surrogateescape")
                  for c in range(nf))
            for r in range(lib.PQntuples(res))]
