# LipSync: build, test, demo and benchmark.
#
#   make          liblipsync (static and shared) and the two binaries,
#                 into build/
#   make install  [PREFIX=/usr/local] [DESTDIR=]; make uninstall (ref/lib.mk)
#   make check    every test (unit tests under ASan+UBSan, end-to-end)
#   make demo     sync two small SQLite databases and show the result
#   make bench    the benchmark (1,000,000 rows) and the load test (100
#                 clients at once)
#   make fuzz     every libFuzzer harness for FUZZ_SECONDS (default 60)
#   make crash    the crash-fault matrix at full size (server and client
#                 killed at 40 moments each, SQLite and PostgreSQL)
#   make conformance [IMPL=conformance/impls/ref.impl] [PEER=other.impl]
#                 the conformance suite (conformance/README.md)
#
# `make check`, `make demo`, `make bench` and `make crash` first install
# missing build dependencies (tools/deps.sh).

CC      ?= cc
PROTOC_C ?= protoc-c
CSTD    := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
OPT     ?= -O2 -g
PGINC   := $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
DEPLIBS := -lprotobuf-c -lsqlite3 -lpq -lcrypto -lpthread -lm
# The programs add TLS (libssl); the library needs only libcrypto.
BINLIBS := -lssl $(DEPLIBS)

B       := build
# The library's version (lipsync.h): the shared library's file name.
VERSION := $(shell sed -n 's/^\#define LIPSYNC_VERSION_STRING "\(.*\)"/\1/p' ref/include/lipsync.h)
GEN     := $(B)/gen
SRC     := $(wildcard ref/src/*.c)
TESTSRC := $(wildcard ref/tests/*.c)
BINS    := lipsync-server lipsync-client
# What both programs share (ref/bin): options, the secret, the connection.
CLIMODS := cli conn conn_tls command options report serverlog storepool
BINHDR  := ref/include/lipsync.h $(wildcard ref/bin/*.h)

CFLAGS_ALL = $(CSTD) $(WARN) -Iref/include -Iref/src -I$(GEN) -I$(PGINC)

.PHONY: all deps check unit e2e demo bench crash clean format conformance
all: $(BINS:%=$(B)/bin/%) $(B)/lib/liblipsync.so.$(VERSION)

deps:
	@sh tools/deps.sh

# ---- generated protobuf code -------------------------------------------
$(GEN)/lipsync.pb-c.c $(GEN)/lipsync.pb-c.h: proto/lipsync.proto
	@mkdir -p $(GEN)
	$(PROTOC_C) --proto_path=proto --c_out=$(GEN) proto/lipsync.proto

# ---- release build -------------------------------------------------------
$(B)/obj/%.o: ref/src/%.c $(GEN)/lipsync.pb-c.h ref/include/lipsync.h $(wildcard ref/src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(OPT) -c -o $@ $<
$(B)/obj/lipsync.pb-c.o: $(GEN)/lipsync.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(OPT) -I$(GEN) -c -o $@ $<
$(B)/obj/bin/%.o: ref/bin/%.c $(BINHDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(OPT) -c -o $@ $<

OBJ := $(SRC:ref/src/%.c=$(B)/obj/%.o) $(B)/obj/lipsync.pb-c.o
$(B)/lib/liblipsync.a: $(OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/bin/%: $(B)/obj/bin/%.o $(CLIMODS:%=$(B)/obj/bin/%.o) $(B)/lib/liblipsync.a
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -o $@ $^ $(BINLIBS)

# ---- sanitizer build for tests ------------------------------------------
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
SOPT    := -O1 -g $(SAN)
$(B)/san/%.o: ref/src/%.c $(GEN)/lipsync.pb-c.h ref/include/lipsync.h $(wildcard ref/src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(SOPT) -c -o $@ $<
$(B)/san/lipsync.pb-c.o: $(GEN)/lipsync.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(SOPT) -I$(GEN) -c -o $@ $<
$(B)/san/tests/%.o: ref/tests/%.c $(GEN)/lipsync.pb-c.h ref/include/lipsync.h $(wildcard ref/tests/*.h) $(wildcard ref/src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Iref/tests $(SOPT) -c -o $@ $<
$(B)/san/bin/%.o: ref/bin/%.c $(BINHDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(SOPT) -c -o $@ $<

SANOBJ := $(SRC:ref/src/%.c=$(B)/san/%.o) $(B)/san/lipsync.pb-c.o
$(B)/san/unit-tests: $(SANOBJ) $(TESTSRC:ref/tests/%.c=$(B)/san/tests/%.o)
	$(CC) $(SOPT) -o $@ $^ $(DEPLIBS) -lcunit
$(B)/san/bin/%: $(B)/san/bin/%.o $(CLIMODS:%=$(B)/san/bin/%.o) $(SANOBJ)
	$(CC) $(SOPT) -o $@ $^ $(BINLIBS)

# ---- ThreadSanitizer build of the programs (the multi-threaded server) ----
TSOPT   := -O1 -g -fsanitize=thread
$(B)/tsan/%.o: ref/src/%.c $(GEN)/lipsync.pb-c.h ref/include/lipsync.h $(wildcard ref/src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(TSOPT) -c -o $@ $<
$(B)/tsan/lipsync.pb-c.o: $(GEN)/lipsync.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(TSOPT) -I$(GEN) -c -o $@ $<
$(B)/tsan/bin/%.o: ref/bin/%.c $(BINHDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(TSOPT) -c -o $@ $<
TSANOBJ := $(SRC:ref/src/%.c=$(B)/tsan/%.o) $(B)/tsan/lipsync.pb-c.o
$(B)/tsan/bin/%: $(B)/tsan/bin/%.o $(CLIMODS:%=$(B)/tsan/bin/%.o) $(TSANOBJ)
	$(CC) $(TSOPT) -o $@ $^ $(BINLIBS)
.SECONDARY: $(TSANOBJ) $(BINS:%=$(B)/tsan/bin/%.o) $(CLIMODS:%=$(B)/tsan/bin/%.o)

# Deliberately broken variants of the binaries, for the conformance
# suite's self-test (conformance/selftest).
include conformance/faults.mk
# libFuzzer harnesses (fuzz/README.md): make fuzz [FUZZ_SECONDS=60],
# make fuzz-regress (part of make check).
include fuzz/fuzz.mk
# The shared library, lipsync.pc, make install and make uninstall.
include ref/lib.mk

export ASAN_OPTIONS := abort_on_error=0:detect_leaks=1
export UBSAN_OPTIONS := print_stacktrace=1:halt_on_error=1

check: deps
	@$(MAKE) --no-print-directory all $(B)/san/unit-tests $(BINS:%=$(B)/san/bin/%) \
	  $(BINS:%=$(B)/tsan/bin/%) $(BINS:%=$(B)/fault/bin/%) fuzz-build
	@sh tools/check.sh

unit: $(B)/san/unit-tests
	$(B)/san/unit-tests

demo: deps
	@$(MAKE) --no-print-directory all
	@sh tools/demo.sh

bench: deps
	@$(MAKE) --no-print-directory all $(BINS:%=$(B)/tsan/bin/%)
	@sh tools/bench.sh

# The crash-fault matrix at full size: every place of cities.csv, 40
# moments a side (make check runs it reduced).
crash: deps
	@$(MAKE) --no-print-directory all $(BINS:%=$(B)/fault/bin/%)
	@LIPSYNC_CRASH_ROWS=135233 LIPSYNC_CRASH_MOMENTS=40 sh tools/pgtest.sh \
	  python3 -m unittest -v ref/tests/e2e/test_crash.py

# The conformance suite against IMPL (and, with PEER, each one's client
# against the other's server), inside a throwaway PostgreSQL server.
# CONFORMANCE_ARGS passes more options, e.g. --strict or --filter 'data/*'.
IMPL ?= conformance/impls/ref.impl
PEER ?=
CONFORMANCE_ARGS ?=
conformance: deps
	@$(MAKE) --no-print-directory all
	@sh tools/pgtest.sh python3 conformance/run.py --impl '$(IMPL)' \
	  $(if $(PEER),--peer '$(PEER)') -j 4 $(CONFORMANCE_ARGS)

format:
	clang-format -i ref/include/*.h ref/src/*.[ch] ref/bin/*.[ch] ref/tests/*.[ch] \
	  fuzz/*.[ch] examples/*.c

clean:
	rm -rf $(B)
