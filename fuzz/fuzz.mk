# fuzz/fuzz.mk: coverage-guided fuzzing with libFuzzer (fuzz/README.md).
# Included from the top Makefile, whose B, GEN, SRC, CSTD, CFLAGS_ALL and
# DEPLIBS it uses.
#
#   make fuzz [FUZZ_SECONDS=60]   run every harness for FUZZ_SECONDS each
#   make fuzz-regress             run every harness once over its corpus
#   make fuzz-seeds               write the seed corpora again
#   make build/fuzz/fuzz_frame    build one harness
#
# Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev).

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_NAMES   := fuzz_frame fuzz_server_preauth fuzz_server_postauth \
                fuzz_session_pair fuzz_values fuzz_sqlite_types
FZ           := $(B)/fuzz
# The library and the harnesses carry coverage instrumentation; only the
# harness link pulls in libFuzzer's main.
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer
# The library's randomness and wall clock come from fuzz/fuzz_util.c, so
# that every input replays exactly.
FUZZ_WRAP    := -Wl,--wrap=RAND_bytes,--wrap=hlc_wall_ms
FUZZ_COPT    := -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link
FUZZ_LOPT    := -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer $(FUZZ_WRAP)
FUZZ_HDR     := ref/include/lipsync.h $(wildcard ref/src/*.h) \
                $(GEN)/lipsync.pb-c.h fuzz/fuzz_util.h
FUZZ_LIBOBJ  := $(SRC:ref/src/%.c=$(FZ)/obj/%.o) $(FZ)/obj/lipsync.pb-c.o \
                $(FZ)/obj/fuzz_util.o

.PHONY: fuzz fuzz-build fuzz-regress fuzz-seeds

fuzz-build: $(FUZZ_NAMES:%=$(FZ)/%)

$(FZ)/obj/%.o: ref/src/%.c $(FUZZ_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS_ALL) $(FUZZ_COPT) -c -o $@ $<
$(FZ)/obj/lipsync.pb-c.o: $(GEN)/lipsync.pb-c.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CSTD) $(FUZZ_COPT) -I$(GEN) -c -o $@ $<
$(FZ)/obj/%.o: fuzz/%.c $(FUZZ_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS_ALL) $(FUZZ_COPT) -c -o $@ $<
# The helpers carry no coverage: what they do is no news to the fuzzer.
$(FZ)/obj/fuzz_util.o: fuzz/fuzz_util.c $(FUZZ_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CFLAGS_ALL) -O2 -g $(FUZZ_SAN) -c -o $@ $<

$(FUZZ_NAMES:%=$(FZ)/%): $(FZ)/%: $(FZ)/obj/%.o $(FUZZ_LIBOBJ)
	$(FUZZ_CC) $(FUZZ_LOPT) -o $@ $^ $(DEPLIBS)

# The seed generator: a plain program (no libFuzzer) that records real
# sessions; fuzz/seeds.py adds the spec's vectors; fuzz_server_postauth
# records its own (a client's bytes replay only against its database).
$(FZ)/seeds: $(FZ)/obj/seeds.o $(FUZZ_LIBOBJ)
	$(FUZZ_CC) -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link $(FUZZ_WRAP) \
	  -o $@ $^ $(DEPLIBS)

fuzz-seeds: $(FZ)/seeds $(FZ)/fuzz_server_postauth
	mkdir -p $(FUZZ_NAMES:%=fuzz/corpus/%)
	$(FZ)/seeds fuzz/corpus
	python3 fuzz/seeds.py spec/lipsync.md fuzz/corpus
	FUZZ_RECORD_DIR=fuzz/corpus/fuzz_server_postauth \
	  $(FZ)/fuzz_server_postauth -runs=0 2>/dev/null

fuzz: fuzz-build
	@FUZZ_SECONDS='$(FUZZ_SECONDS)' sh fuzz/run.sh fuzz $(FZ) $(FUZZ_NAMES)

fuzz-regress: fuzz-build
	@sh fuzz/run.sh regress $(FZ) $(FUZZ_NAMES)
