# Fault-injection build of the reference, for the conformance suite's
# self-test (conformance/selftest/run.sh): the release build with
# -DLIPSYNC_FAULTS, into build/fault/. Faults are chosen at run time through
# LIPSYNC_FAULT (see ref/src/fault.h); without it the binaries behave like the
# release ones. Include it from the Makefile after the release rules:
#
#   include conformance/faults.mk
#
# or use it on its own: make -f Makefile -f conformance/faults.mk fault

FAULT_CFLAGS := -DLIPSYNC_FAULTS

$(B)/fault/obj/%.o: ref/src/%.c $(GEN)/lipsync.pb-c.h ref/include/lipsync.h $(wildcard ref/src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(FAULT_CFLAGS) $(OPT) -c -o $@ $<
$(B)/fault/obj/lipsync.pb-c.o: $(GEN)/lipsync.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(OPT) -I$(GEN) -c -o $@ $<
$(B)/fault/obj/bin/%.o: ref/bin/%.c $(BINHDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(FAULT_CFLAGS) $(OPT) -c -o $@ $<

FAULTOBJ := $(SRC:ref/src/%.c=$(B)/fault/obj/%.o) $(B)/fault/obj/lipsync.pb-c.o
$(B)/fault/bin/%: $(B)/fault/obj/bin/%.o $(CLIMODS:%=$(B)/fault/obj/bin/%.o) $(FAULTOBJ)
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -o $@ $^ $(BINLIBS)

# Keep the objects between runs (make would delete them as intermediates).
.SECONDARY: $(FAULTOBJ) $(BINS:%=$(B)/fault/obj/bin/%.o) $(CLIMODS:%=$(B)/fault/obj/bin/%.o)

.PHONY: fault
fault: $(BINS:%=$(B)/fault/bin/%)
