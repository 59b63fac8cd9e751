"""Runs the unittest tests under a directory in several processes at once,
so that make check can run the end-to-end tests in less time: they mostly
wait (on sockets, timeouts and child programs), so two processes on two
cores take little more than half the time of one.

    python3 tools/unittest_shard.py DIR PATTERN QUEUE

Every process started with the same DIR, PATTERN and QUEUE (a file, empty
or absent at first) discovers the same tests, cut into units: a test class
that has class fixtures (setUpClass, tearDownClass) is one unit, any other
test one unit of its own. Each process takes the next unit nobody has
taken (a counter in QUEUE, under an exclusive lock) until none is left, and
prints what `python3 -m unittest -v` prints for the tests it ran. Exits 0
only if all of them passed (or skipped). Standard library only."""

import fcntl
import os
import sys
import unittest


def flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t


def units(suite):
    """The tests in discovery order, grouped as described above."""
    out, by_class = [], {}
    for t in flatten(suite):
        cls = type(t)
        fixtures = any(name in vars(c) for c in cls.__mro__
                       if c is not unittest.TestCase
                       for name in ("setUpClass", "tearDownClass"))
        if not fixtures:
            out.append([t])
        elif cls in by_class:
            by_class[cls].append(t)
        else:
            by_class[cls] = [t]
            out.append(by_class[cls])
    return out


def claim(queue):
    """The next unit's index: the counter in |queue|, then one more."""
    fd = os.open(queue, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = os.read(fd, 64).decode() or "0"
        n = int(text)
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(n + 1).encode())
        return n
    finally:
        os.close(fd)


class QueueSuite(unittest.TestSuite):
    """A suite whose tests are the units this process claims, one at a
    time, as it runs them."""

    def __init__(self, all_units, queue):
        super().__init__()
        self._cleanup = False  # the claimed tests are not in self._tests
        self.all_units, self.queue = all_units, queue

    def __iter__(self):
        while True:
            n = claim(self.queue)
            if n >= len(self.all_units):
                return
            yield from self.all_units[n]


def main(argv):
    if len(argv) != 4:
        sys.exit("usage: python3 tools/unittest_shard.py DIR PATTERN QUEUE")
    start, pattern, queue = argv[1:]
    sys.path.insert(0, start)
    suite = unittest.defaultTestLoader.discover(start, pattern=pattern)
    result = unittest.TextTestRunner(verbosity=2).run(
        QueueSuite(units(suite), queue))
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main(sys.argv)
