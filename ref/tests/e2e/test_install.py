#!/usr/bin/env python3
"""End-to-end tests of the installed LipSync, as a user or an embedder
meets it:

- `make install DESTDIR=<tmp> PREFIX=/usr` puts exactly the files the
  README lists, and `make uninstall` removes exactly those;
- the shared library has the soname liblipsync.so.0 and exports exactly
  the functions lipsync.h declares (LIPSYNC_API), nothing else;
- examples/embed.c, built against the installed tree through
  `pkg-config --cflags --libs lipsync` (and with liblipsync.a), syncs two
  SQLite databases with its own poll loop and with
  lipsync_session_run_fd;
- every man page renders without a warning (`man -l`).

The build directory is $LIPSYNC_BUILD (default build), which `make` has
built. Run:  python3 ref/tests/e2e/test_install.py -v
"""

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lipsync_harness import REPO_ROOT, clean_env  # noqa: E402

BUILD = os.environ.get("LIPSYNC_BUILD", "build")
VERSION = re.search(r'#define LIPSYNC_VERSION_STRING "([^"]+)"',
                    (REPO_ROOT / "ref/include/lipsync.h").read_text()
                    ).group(1)
INSTALLED = sorted([
    "usr/bin/lipsync-client", "usr/bin/lipsync-server",
    "usr/include/lipsync.h", "usr/lib/liblipsync.a",
    f"usr/lib/liblipsync.so.{VERSION}", "usr/lib/liblipsync.so.0",
    "usr/lib/liblipsync.so", "usr/lib/pkgconfig/lipsync.pc",
    "usr/share/man/man1/lipsync-client.1",
    "usr/share/man/man1/lipsync-server.1", "usr/share/man/man7/lipsync.7"])


def run(args, **kwargs):
    kwargs.setdefault("env", clean_env())
    r = subprocess.run(args, capture_output=True, text=True, timeout=300,
                       **kwargs)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))}: exit "
                             f"{r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def make(*targets, **variables):
    env = clean_env()
    env.pop("MAKEFLAGS", None)  # not part of an outer make's job server
    return run(["make", "-s", "--no-print-directory", f"B={BUILD}",
                *targets, *(f"{k}={v}" for k, v in variables.items())],
               cwd=REPO_ROOT, env=env)


def files_under(root):
    """Every file and symbolic link under |root|, relative to it."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                  if p.is_file() or p.is_symlink())


def declared_api(header):
    """The functions lipsync.h declares as the API."""
    return sorted(set(re.findall(r"(?m)^LIPSYNC_API [^(]*?\b(lipsync_\w+)\(",
                                 header.read_text())))


class InstallTest(unittest.TestCase):
    """One installation into a temporary DESTDIR, shared by the tests."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="lipsync-install-")
        cls.dest = Path(cls.tmp.name) / "root"
        make("install", DESTDIR=cls.dest, PREFIX="/usr")
        cls.lib = cls.dest / "usr/lib"

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_installed_files(self):
        self.assertEqual(files_under(self.dest), INSTALLED)
        self.assertEqual(os.readlink(self.lib / "liblipsync.so.0"),
                         f"liblipsync.so.{VERSION}")
        self.assertEqual(os.readlink(self.lib / "liblipsync.so"),
                         "liblipsync.so.0")
        for prog in ("lipsync-client", "lipsync-server"):
            r = run([self.dest / "usr/bin" / prog, "--version"])
            self.assertIn(VERSION, r.stdout)
        pc = (self.lib / "pkgconfig/lipsync.pc").read_text()
        self.assertIn("prefix=/usr\n", pc)
        self.assertIn(f"Version: {VERSION}\n", pc)
        self.assertIn("Requires.private: libprotobuf-c sqlite3 libpq "
                      "libcrypto\n", pc)

    def test_soname_and_exported_symbols(self):
        so = self.lib / f"liblipsync.so.{VERSION}"
        dynamic = run(["objdump", "-p", so]).stdout
        self.assertRegex(dynamic, r"SONAME\s+liblipsync\.so\.0\n")
        symbols = run(["nm", "-D", "--defined-only", so]).stdout.split("\n")
        exported = sorted(line.split()[2] for line in symbols
                          if line.strip() and line.split()[1] != "A")
        api = declared_api(self.dest / "usr/include/lipsync.h")
        self.assertGreater(len(api), 50)
        self.assertEqual(exported, api)

    def pkg_config(self, *args):
        env = clean_env(PKG_CONFIG_PATH=str(self.lib / "pkgconfig"),
                        PKG_CONFIG_SYSROOT_DIR=str(self.dest))
        return run(["pkg-config", *args, "lipsync"], env=env).stdout.split()

    def build_example(self, name, static=False):
        flags = self.pkg_config("--cflags")
        libs = self.pkg_config("--libs")
        self.assertIn(f"-I{self.dest}/usr/include", flags)
        self.assertEqual(libs, [f"-L{self.dest}/usr/lib", "-llipsync"])
        if static:
            # liblipsync.a, and its dependencies (Requires.private) shared:
            # Debian's libpq names libraries for a static link that it does
            # not ship.
            self.assertIn("-lprotobuf-c",
                          self.pkg_config("--static", "--libs"))
            libs = [str(self.lib / "liblipsync.a"), "-lprotobuf-c",
                    "-lsqlite3", "-lpq", "-lcrypto", "-lm"]
        exe = Path(self.tmp.name) / name
        run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror",
             "-D_POSIX_C_SOURCE=200809L", "-o", exe,
             REPO_ROOT / "examples/embed.c", *flags, *libs, "-lpthread"])
        return exe

    def run_example(self, exe, mode):
        work = Path(tempfile.mkdtemp(dir=self.tmp.name))
        dbs = [work / "client.db", work / "server.db"]
        for i, path in enumerate(dbs):
            con = sqlite3.connect(path)
            con.execute("CREATE TABLE cities(name TEXT, population INTEGER)")
            con.executemany("INSERT INTO cities VALUES (?, ?)",
                            [(f"place {i}-{n} é", n) for n in range(40)])
            con.commit()
            con.close()
        env = clean_env(LIPSYNC_SECRET="an example secret",
                        LD_LIBRARY_PATH=str(self.lib))
        r = run([exe, mode, *dbs, "cities"], env=env)
        rows = []
        for path in dbs:
            con = sqlite3.connect(path)
            rows.append(con.execute(
                "SELECT _lipsync_uuid, name, population FROM cities "
                "ORDER BY _lipsync_uuid").fetchall())
            con.close()
        self.assertEqual(len(rows[0]), 80)
        self.assertEqual(rows[0], rows[1])
        return r

    def test_example_with_the_shared_library(self):
        exe = self.build_example("embed")
        env = clean_env(LD_LIBRARY_PATH=str(self.lib))
        ldd = run(["ldd", exe], env=env).stdout
        self.assertRegex(ldd, rf"liblipsync\.so\.0 => {re.escape(str(self.lib))}"
                         r"/liblipsync\.so\.0 ")
        for mode in ("poll", "run-fd"):
            with self.subTest(mode=mode):
                r = self.run_example(exe, mode)
                self.assertIn("sent 40 rows", r.stdout)
                self.assertIn("received 40 rows", r.stdout)

    def test_example_with_the_static_library(self):
        exe = self.build_example("embed-static", static=True)
        env = clean_env(LD_LIBRARY_PATH=str(self.lib))
        self.assertNotIn("liblipsync", run(["ldd", exe], env=env).stdout)
        self.run_example(exe, "poll")

    def test_man_pages_render_cleanly(self):
        pages = sorted((self.dest / "usr/share/man").rglob("*.[17]"))
        self.assertEqual(len(pages), 3)
        for page in pages:
            with self.subTest(page=page.name):
                env = clean_env(MANWIDTH="80", MANROFFSEQ="", LC_ALL="C.UTF-8")
                r = subprocess.run(["man", "-l", page], capture_output=True,
                                   text=True, env=env, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stderr, "", "man reports warnings")
                self.assertIn("NAME", r.stdout)
                r = subprocess.run(["groff", "-man", "-ww", "-z", page],
                                   capture_output=True, text=True,
                                   timeout=60)
                self.assertEqual(r.stderr, "", "groff reports warnings")
        client = run(["man", "-l", self.dest / "usr/share/man/man1/"
                      "lipsync-client.1"],
                     env=clean_env(MANWIDTH="80")).stdout
        # Every option of the program is documented.
        options = re.findall(r"(?m)^  (--[a-z-]+)", run(
            [self.dest / "usr/bin/lipsync-client", "--help"]).stdout)
        self.assertGreater(len(options), 15)
        for dash in ("\u2010", "\u2011", "\u2212"):
            client = client.replace(dash, "-")
        for option in options:
            self.assertIn(option, client)

    def test_uninstall_removes_exactly_what_was_installed(self):
        other = Path(self.tmp.name) / "other"
        make("install", DESTDIR=other, PREFIX="/usr")
        keep = other / "usr/lib/pkgconfig/somebody-else.pc"
        keep.write_text("not ours\n")
        make("uninstall", DESTDIR=other, PREFIX="/usr")
        self.assertEqual(files_under(other),
                         ["usr/lib/pkgconfig/somebody-else.pc"])


if __name__ == "__main__":
    unittest.main()
