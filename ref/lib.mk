# ref/lib.mk: the shared library, its pkg-config file, and make install.
# Included from the top Makefile, whose B, GEN, SRC, CSTD, CFLAGS_ALL, OPT,
# DEPLIBS, BINS and VERSION it uses.
#
#   make install   [PREFIX=/usr/local] [DESTDIR=] (also LIBDIR, BINDIR,
#                  INCLUDEDIR, MANDIR, PKGCONFIGDIR)
#   make uninstall the same variables: removes exactly what install put
#
# liblipsync.so.$(VERSION), soname liblipsync.so.$(SOMAJOR), exports the
# functions lipsync.h marks LIPSYNC_API and nothing else: it is built with
# -fvisibility=hidden (ref/tests/e2e/test_install.py checks the list).

SOMAJOR := 0
SONAME  := liblipsync.so.$(SOMAJOR)
SOFILE  := liblipsync.so.$(VERSION)

PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
MANDIR       ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
INSTALL      ?= install

PICOPT := $(OPT) -fPIC -fvisibility=hidden -DLIPSYNC_BUILDING
$(B)/pic/%.o: ref/src/%.c $(GEN)/lipsync.pb-c.h ref/include/lipsync.h $(wildcard ref/src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(PICOPT) -c -o $@ $<
$(B)/pic/lipsync.pb-c.o: $(GEN)/lipsync.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(PICOPT) -I$(GEN) -c -o $@ $<

PICOBJ := $(SRC:ref/src/%.c=$(B)/pic/%.o) $(B)/pic/lipsync.pb-c.o
$(B)/lib/$(SOFILE): $(PICOBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined -Wl,-z,relro \
	  -Wl,-z,now -o $@ $^ $(DEPLIBS)
	ln -sf $(SOFILE) $(B)/lib/$(SONAME)
	ln -sf $(SONAME) $(B)/lib/liblipsync.so

$(B)/lipsync.pc: ref/lipsync.pc.in ref/include/lipsync.h
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	  -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' $< >$@
# The prefix is baked into the file: make it again when it changes.
.PHONY: $(B)/lipsync.pc

MAN1 := lipsync-server.1 lipsync-client.1
MAN7 := lipsync.7

# What make install puts, relative to DESTDIR; make uninstall removes it.
INSTALLED := $(BINS:%=$(BINDIR)/%) $(LIBDIR)/liblipsync.a \
  $(LIBDIR)/$(SOFILE) $(LIBDIR)/$(SONAME) $(LIBDIR)/liblipsync.so \
  $(INCLUDEDIR)/lipsync.h $(PKGCONFIGDIR)/lipsync.pc \
  $(MAN1:%=$(MANDIR)/man1/%) $(MAN7:%=$(MANDIR)/man7/%)

.PHONY: install uninstall
install: all $(B)/lipsync.pc
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) \
	  $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7
	$(INSTALL) -m 755 $(BINS:%=$(B)/bin/%) $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 644 $(B)/lib/liblipsync.a $(DESTDIR)$(LIBDIR)
	$(INSTALL) -m 755 $(B)/lib/$(SOFILE) $(DESTDIR)$(LIBDIR)
	ln -sf $(SOFILE) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/liblipsync.so
	$(INSTALL) -m 644 ref/include/lipsync.h $(DESTDIR)$(INCLUDEDIR)
	$(INSTALL) -m 644 $(B)/lipsync.pc $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 644 $(MAN1:%=man/%) $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 644 $(MAN7:%=man/%) $(DESTDIR)$(MANDIR)/man7

uninstall:
	rm -f $(INSTALLED:%=$(DESTDIR)%)
