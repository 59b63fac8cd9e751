"""End-to-end tests of the transports of lipsync-server and lipsync-client:
TLS 1.3 (the default, with the key derived from the secret, or with
certificates), --plaintext, and --stdio / --connect-command, locally and
through a real sshd on loopback.

A relay between the two programs records every byte each way: under TLS
no row, table or column name, nor the secret, may appear in it; in
plaintext the rows do (so the check can fail). The relay can also flip a
bit after the handshake, or be a man in the middle with a certificate the
client trusts. Every failure must leave both databases as they were.

Needs the openssl command (test certificates) and, for the ssh test,
Debian's openssh-server and openssh-client (tools/deps.sh installs them).
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lipsync_harness import (  # noqa: E402
    CLIENT, EXIT_AUTH, EXIT_OK, EXIT_PEER, SANITIZER_RE, SERVER, CITY_SCHEMA,
    SyncTestCase, cities, clean_env, parse_summary, stop_process)
from test_cli import PairTestCase  # noqa: E402

EXIT_TLS = 9
EXIT_TRANSPORT = 10
MARKER = "Zqx-marker-7c1e9f"
SSHD = "/usr/sbin/sshd"


# ---- certificates -----------------------------------------------------------


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=60)


def make_ca(directory, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.pem", "-days", "2", "-subj",
            f"/CN=LipSync test {name}", cwd=directory)
    return directory / f"{name}.pem"


def make_cert(directory, ca, name, hosts=("DNS:localhost", "IP:127.0.0.1"),
              days="2"):
    """A certificate for |hosts| signed by the CA |ca|; returns (cert,
    key)."""
    (directory / f"{name}.ext").write_text(
        "subjectAltName=" + ",".join(hosts) + "\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", "/CN=lipsync test server", cwd=directory)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem",
            "-CAkey", f"{ca}.key", "-CAcreateserial", "-out", f"{name}.pem",
            "-days", days, "-extfile", f"{name}.ext", cwd=directory)
    return directory / f"{name}.pem", directory / f"{name}.key"


# ---- relays -----------------------------------------------------------------


def _close(*socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


class Relay:
    """Forwards connections from 127.0.0.1:port to 127.0.0.1:target and
    records every byte each way. With flip=True it flips one bit in the
    first TLS application-data record of more than 1,000 bytes that the
    client sends: that record carries rows, after the handshake."""

    def __init__(self, target, flip=False):
        self.target = target
        self.flip = flip
        self.flipped = False
        self.up = bytearray()    # client to server
        self.down = bytearray()  # server to client
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.threads = []
        self.sockets = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, server]
            for src, dst, log, flip in ((client, server, self.up, self.flip),
                                        (server, client, self.down, False)):
                t = threading.Thread(target=self._pump,
                                     args=(src, dst, log, flip), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src, dst, log, flip):
        pending = bytearray()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            with self.lock:
                log += data
            if not flip:
                try:
                    dst.sendall(data)
                except OSError:
                    break
                continue
            pending += data
            out = self._records(pending)
            try:
                dst.sendall(out)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _records(self, pending):
        """Takes the complete TLS records off |pending|, flipping a bit in
        the first large application-data one."""
        out = bytearray()
        while len(pending) >= 5:
            length = int.from_bytes(pending[3:5], "big")
            if len(pending) < 5 + length:
                break
            record = bytearray(pending[:5 + length])
            del pending[:5 + length]
            if not self.flipped and record[0] == 23 and length > 1000:
                record[5 + length // 2] ^= 0x10
                self.flipped = True
            out += record
        return bytes(out)

    def recording(self):
        with self.lock:
            return bytes(self.up) + bytes(self.down)

    def close(self):
        _close(self.listener, *self.sockets)


class Mitm:
    """A man in the middle: terminates the client's TLS with its own
    certificate (which the client trusts) and opens its own TLS connection
    to the server, then relays the frames unchanged both ways."""

    def __init__(self, target, cert, key):
        self.target = target
        self.seen = bytearray()  # plaintext frames it relayed
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.server_ctx.load_cert_chain(cert, key)
        self.server_ctx.set_alpn_protocols(["lipsync/1"])
        self.client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.client_ctx.check_hostname = False
        self.client_ctx.verify_mode = ssl.CERT_NONE
        self.client_ctx.set_alpn_protocols(["lipsync/1"])
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            raw, _ = self.listener.accept()
            inner = self.server_ctx.wrap_socket(raw, server_side=True)
            outer = self.client_ctx.wrap_socket(
                socket.create_connection(("127.0.0.1", self.target)),
                server_hostname="localhost")
        except (OSError, ssl.SSLError):
            return
        self.sockets += [inner, outer]
        for src, dst in ((inner, outer), (outer, inner)):
            threading.Thread(target=self._pump, args=(src, dst),
                             daemon=True).start()

    def _pump(self, src, dst):
        while True:
            try:
                data = src.recv(65536)
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                break
            self.seen += data
            try:
                dst.sendall(data)
            except (OSError, ssl.SSLError):
                break
        _close(dst)

    def close(self):
        _close(self.listener, *self.sockets)


# ---- tests --------------------------------------------------------------------


class TransportCase(PairTestCase):
    """Certificates made once per class, marker rows, and a sync through a
    relay."""

    @classmethod
    def setUpClass(cls):
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("the openssl command is missing "
                                    "(Debian package openssl)")
        cls._certs = __import__("tempfile").TemporaryDirectory(
            prefix="lipsync-certs-")
        d = Path(cls._certs.name)
        cls.ca = make_ca(d, "ca")
        cls.other_ca = make_ca(d, "otherca")
        cls.cert, cls.key = make_cert(d, "ca", "server")
        cls.mitm_cert, cls.mitm_key = make_cert(d, "ca", "mitm")
        cls.expired_cert, cls.expired_key = make_cert(d, "ca", "expired",
                                                      days="-1")
        cls.wrong_host_cert, cls.wrong_host_key = make_cert(
            d, "ca", "wronghost", hosts=("DNS:other.example",))

    @classmethod
    def tearDownClass(cls):
        cls._certs.cleanup()

    def setUp(self):
        super().setUp()
        rows = self.cities[:150]
        marked = [(r[0] + 10_000_000, f"{MARKER} {r[1]}", *r[2:])
                  for r in self.cities[150:160]]
        self.client_db.create_table("cities", rows=rows + marked)
        self.server_db.create_table("cities", rows=self.cities[200:300])

    def relay(self, server, **kwargs):
        relay = Relay(server.port, **kwargs)
        self.addCleanup(relay.close)
        return relay

    def sync_via(self, address, expect=EXIT_OK, extra=(), server=None):
        args = [str(CLIENT), "--db", str(self.client_db), "--connect",
                address, "--secret-file", str(self.secret_file), "--table",
                "cities", "--timeout", "10", *extra]
        r = subprocess.run(args, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, env=clean_env(),
                           timeout=60)
        self.assertNotRegex(r.stderr, SANITIZER_RE)
        self.assertEqual(
            r.returncode, expect,
            f"client exit {r.returncode}, expected {expect}\nclient stderr: "
            f"{r.stderr}\nserver log: {server.stderr() if server else ''}")
        return r

    def assertSecret(self, recording):
        """Nothing of the rows, the schema or the secret crossed in clear."""
        for text in (MARKER, "cities", "admin_code", "population",
                     "feature_code", self.secret):
            self.assertNotIn(text.encode(), recording, f"{text!r} in clear")
        self.assertNotIn(bytes.fromhex(self.secret), recording)
        self.assertEqual(recording[:2], b"\x16\x03", "not a TLS record")

    def failed_cleanly(self, before, r, pattern):
        self.assertEqual(self.snapshot(), before, "a database changed")
        self.assertRegex(r.stderr, pattern)


class TransportPairTests:
    """Encryption, tampering and channel binding, on a backend pair."""

    def test_default_tls_hides_everything(self):
        server = self.start_server(self.server_db)
        relay = self.relay(server)
        r = self.sync_via(relay.address, server=server)
        self.assertEqual(parse_summary(r.stdout), {"cities": (160, 100)})
        self.assertSynced(self.client_db, self.server_db)
        recording = relay.recording()
        self.assertGreater(len(recording), 10_000)
        self.assertSecret(recording)

    def test_certificates_hide_everything(self):
        server = self.start_server(
            self.server_db, extra=["--tls-cert", str(self.cert),
                                   "--tls-key", str(self.key)])
        relay = self.relay(server)
        # The relay's address is 127.0.0.1: the certificate holds it.
        self.sync_via(relay.address, extra=["--tls-ca", str(self.ca)],
                      server=server)
        self.assertSynced(self.client_db, self.server_db)
        self.assertSecret(relay.recording())

    def test_plaintext_shows_the_rows(self):
        server = self.start_server(self.server_db, extra=["--plaintext"])
        relay = self.relay(server)
        self.sync_via(relay.address, extra=["--plaintext"], server=server)
        self.assertSynced(self.client_db, self.server_db)
        self.assertIn(MARKER.encode(), relay.recording())

    def test_flipped_bit_fails_and_changes_nothing(self):
        server = self.start_server(self.server_db)
        relay = self.relay(server, flip=True)
        before = self.snapshot()
        r = self.sync_via(relay.address, expect=EXIT_PEER, server=server)
        self.assertTrue(relay.flipped, "the relay flipped nothing")
        self.failed_cleanly(before, r, r"tampered with or failed")

    def test_man_in_the_middle_fails_authentication(self):
        server = self.start_server(
            self.server_db, extra=["--tls-cert", str(self.cert),
                                   "--tls-key", str(self.key)])
        mitm = Mitm(server.port, self.mitm_cert, self.mitm_key)
        self.addCleanup(mitm.close)
        before = self.snapshot()
        r = self.sync_via(mitm.address, expect=EXIT_AUTH,
                          extra=["--tls-ca", str(self.ca),
                                 "--tls-server-name", "localhost"],
                          server=server)
        # TLS itself succeeded on both legs: the relay read the frames.
        self.assertGreater(len(mitm.seen), 0)
        self.failed_cleanly(before, r, r"could not prove it holds the "
                            r"secret.*relay.*TLS")

    def test_connect_command_syncs(self):
        command = (f"exec {SERVER} --stdio --db '{self.server_db}' "
                   f"--table cities --secret-file {self.secret_file}")
        args = [str(CLIENT), "--db", str(self.client_db),
                "--connect-command", command, "--secret-file",
                str(self.secret_file), "--table", "cities"]
        r = subprocess.run(args, capture_output=True, text=True,
                           env=clean_env(), timeout=60)
        self.assertEqual(r.returncode, EXIT_OK, r.stderr)
        self.assertNotRegex(r.stderr, SANITIZER_RE)
        self.assertEqual(parse_summary(r.stdout), {"cities": (160, 100)})
        self.assertSynced(self.client_db, self.server_db)
        # TLS over the command too, when both sides ask for it.
        self.client_db.insert("cities", CITY_SCHEMA, self.cities[400:410])
        r = subprocess.run(args[:4] + [command + " --tls"] + args[5:]
                           + ["--tls"],
                           capture_output=True, text=True, env=clean_env(),
                           timeout=60)
        self.assertEqual(r.returncode, EXIT_OK, r.stderr)
        self.assertEqual(parse_summary(r.stdout), {"cities": (10, 0)})
        self.assertSynced(self.client_db, self.server_db)


class TransportFailureTests:
    """TLS that must fail, fast, with its own message and exit status."""

    def expect(self, server, status, pattern, extra=(), server_pattern=None):
        before = self.snapshot()
        start = time.monotonic()
        r = self.sync_via(server.address, expect=status, extra=extra,
                          server=server)
        self.assertLess(time.monotonic() - start, 5, "not fast")
        self.failed_cleanly(before, r, pattern)
        self.assertEqual(r.stdout, "")
        if server_pattern:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and \
                    not __import__("re").search(server_pattern,
                                                server.stderr()):
                time.sleep(0.05)
            self.assertRegex(server.stderr(), server_pattern)
        return r

    def cert_server(self, cert, key):
        return self.start_server(self.server_db,
                                 extra=["--tls-cert", str(cert),
                                        "--tls-key", str(key)])

    def test_unknown_authority(self):
        server = self.cert_server(self.cert, self.key)
        self.expect(server, EXIT_TLS,
                    r"certificate was not accepted: unable to get local "
                    r"issuer certificate",
                    extra=["--tls-ca", str(self.other_ca)])

    def test_expired_certificate(self):
        server = self.cert_server(self.expired_cert, self.expired_key)
        self.expect(server, EXIT_TLS, r"certificate was not accepted: "
                    r"certificate has expired",
                    extra=["--tls-ca", str(self.ca)])

    def test_certificate_for_another_host(self):
        server = self.cert_server(self.wrong_host_cert, self.wrong_host_key)
        self.expect(server, EXIT_TLS, r"certificate was not accepted: .*"
                    r"mismatch", extra=["--tls-ca", str(self.ca)])
        # The name it was issued for is accepted.
        self.sync_via(server.address,
                      extra=["--tls-ca", str(self.ca), "--tls-server-name",
                             "other.example"], server=server)

    def test_tls_client_plaintext_server(self):
        server = self.start_server(self.server_db, extra=["--plaintext"])
        self.expect(server, EXIT_TRANSPORT,
                    r"server does not speak TLS.*--plaintext",
                    server_pattern=r"client speaks TLS.*--plaintext")

    def test_plaintext_client_tls_server(self):
        server = self.start_server(self.server_db)
        self.expect(server, EXIT_TRANSPORT,
                    r"server speaks TLS.*--plaintext",
                    extra=["--plaintext"],
                    server_pattern=r"client does not speak TLS")

    def test_wrong_secret_under_tls(self):
        server = self.start_server(self.server_db)
        other = self.path("other-secret")
        other.write_text("another secret entirely\n")
        other.chmod(0o600)
        before = self.snapshot()
        args = [str(CLIENT), "--db", str(self.client_db), "--connect",
                server.address, "--secret-file", str(other), "--table",
                "cities"]
        r = subprocess.run(args, capture_output=True, text=True,
                           env=clean_env(), timeout=30)
        self.assertEqual(r.returncode, EXIT_AUTH, r.stderr)
        self.failed_cleanly(before, r, r"authentication failed: the server "
                            r"does not hold the same secret")

    def test_connect_command_that_does_not_exist(self):
        before = self.snapshot()
        r = subprocess.run(
            [str(CLIENT), "--db", str(self.client_db), "--connect-command",
             "/nonexistent/lipsync-server --stdio", "--secret-file",
             str(self.secret_file), "--table", "cities"],
            capture_output=True, text=True, env=clean_env(), timeout=30)
        self.assertEqual(r.returncode, EXIT_PEER, r.stderr)
        self.failed_cleanly(before, r, r"the command exited with status 127"
                            r".*not found")

    def test_connect_command_that_exits_at_once(self):
        before = self.snapshot()
        r = subprocess.run(
            [str(CLIENT), "--db", str(self.client_db), "--connect-command",
             "echo refused by policy >&2; exit 3", "--secret-file",
             str(self.secret_file), "--table", "cities"],
            capture_output=True, text=True, env=clean_env(), timeout=30)
        self.assertEqual(r.returncode, EXIT_PEER, r.stderr)
        self.failed_cleanly(before, r, r"the command exited with status 3: "
                            r"refused by policy")


def _pair(name, client, server, *mixins):
    return type(name, (*mixins, TransportCase),
                {"client_backend": client, "server_backend": server,
                 "__module__": __name__})


Transport_sqlite_sqlite = _pair("Transport_sqlite_sqlite", "sqlite",
                                "sqlite", TransportPairTests)
Transport_pg_pg = _pair("Transport_pg_pg", "pg", "pg", TransportPairTests)
TransportFailure_sqlite_sqlite = _pair(
    "TransportFailure_sqlite_sqlite", "sqlite", "sqlite",
    TransportFailureTests)
TransportFailure_sqlite_pg = _pair(
    "TransportFailure_sqlite_pg", "sqlite", "pg", TransportFailureTests)


# ---- ssh ------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SshTest(SyncTestCase):
    """lipsync-server --stdio run by a real sshd on loopback, with its own
    host key and an authorized key made for the test."""

    def setUp(self):
        super().setUp()
        if not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None:
            self.skipTest("sshd or ssh is missing (Debian packages "
                          "openssh-server, openssh-client)")
        d = self.dir
        for name in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "",
                            "-f", str(d / name)], check=True, timeout=30)
        (d / "authorized_keys").write_text((d / "user.pub").read_text())
        (d / "authorized_keys").chmod(0o600)
        if os.geteuid() == 0:
            # sshd run as root needs its privilege separation directory.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.port = free_port()
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\n"
            f"HostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            f"PidFile {d / 'sshd.pid'}\nUsePAM no\nStrictModes no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nLogLevel ERROR\n")
        self.sshd_log = open(d / "sshd.log", "wb")
        self.addCleanup(self.sshd_log.close)
        self.sshd = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
            stdin=subprocess.DEVNULL, stdout=self.sshd_log,
            stderr=self.sshd_log)
        self.addCleanup(stop_process, self.sshd)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                if self.sshd.poll() is not None or \
                        time.monotonic() > deadline:
                    self.fail("sshd did not start: " +
                              (d / "sshd.log").read_text())
                time.sleep(0.05)

    def ssh_command(self, remote):
        d = self.dir
        return (f"ssh -p {self.port} -i {d / 'user'} -o BatchMode=yes "
                f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                f"-o LogLevel=ERROR 127.0.0.1 {remote}")

    def test_sync_through_ssh(self):
        c = cities()
        from lipsync_harness import create_cities_table, typed_rows
        client_db, server_db = self.path("client.db"), self.path("server.db")
        create_cities_table(client_db, rows=c[:300])
        create_cities_table(server_db, rows=c[300:500])
        remote = (f"{SERVER} --stdio --db {server_db} --table cities "
                  f"--secret-file {self.secret_file}")
        args = [str(CLIENT), "--db", str(client_db), "--connect-command",
                self.ssh_command(remote), "--secret-file",
                str(self.secret_file), "--table", "cities"]
        r = subprocess.run(args, capture_output=True, text=True,
                           env=clean_env(), timeout=120)
        self.assertEqual(r.returncode, EXIT_OK, r.stderr + "\nsshd: " +
                         (self.dir / "sshd.log").read_text())
        self.assertEqual(parse_summary(r.stdout), {"cities": (300, 200)})
        self.assertEqual(typed_rows(client_db), typed_rows(server_db))
        self.assertEqual(len(typed_rows(client_db)), 500)
        # A remote command that does not exist: a clear error, no change.
        before = (client_db.read_bytes(), server_db.read_bytes())
        args[args.index("--connect-command") + 1] = self.ssh_command(
            "/nonexistent/lipsync-server --stdio")
        r = subprocess.run(args, capture_output=True, text=True,
                           env=clean_env(), timeout=120)
        self.assertEqual(r.returncode, EXIT_PEER, r.stderr)
        self.assertRegex(r.stderr, r"the command exited with status 127")
        self.assertEqual((client_db.read_bytes(), server_db.read_bytes()),
                         before)


if __name__ == "__main__":
    unittest.main()
