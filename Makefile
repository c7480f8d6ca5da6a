# incv3 - `make` builds everything; `make check` installs what is missing and runs all tests.
PREFIX  ?= /usr/local
BUILD   ?= build
CC      ?= cc
OPT     ?= -O3 -march=native
PKGS    := libzstd libpng libcjson
# OpenBLAS's OpenMP build shares our OpenMP threads; the pthreads build would
# spin its own threads against ours (2 cores: a third of the time lost).
BLAS    := /usr/lib/x86_64-linux-gnu/openblas-openmp
CFLAGS  += -std=gnu11 $(OPT) -g -fopenmp -Wall -Wextra -Wno-unused-parameter -Ilib \
           -I/usr/include/x86_64-linux-gnu/openblas-openmp $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += -L$(BLAS) -Wl,-rpath,$(BLAS) -lopenblas $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
LDFLAGS += -fopenmp
# OpenMPI, for allreduce-merge --mpi only
MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null)
ifneq ($(MPI_LIBS),)
$(BUILD)/lib/allreduce.o: CFLAGS += -DHAVE_MPI $(MPI_CFLAGS)
$(BUILD)/allreduce-merge: LDLIBS += $(MPI_LIBS)
endif

TOOLS   := cifar-decode augment tensor incv3-step evaluate incv3-ckpt allreduce-merge
LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(LIB_SRC:lib/%.c=$(BUILD)/lib/%.o)
UNIT    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/*.c))

# Debian packages the build, the tests and the pipelines need.
DEB_PKGS := gcc make pkg-config libopenblas-openmp-dev libzstd-dev zstd libpng-dev libcjson-dev \
            bats bats-support bats-assert gnuplot-nox python3 python3-numpy \
            libopenmpi-dev openmpi-bin

.PHONY: all deps test check unit bats demo bench install clean
all: $(TOOLS:%=$(BUILD)/%) $(UNIT)

# Installs missing Debian packages (needs root); does nothing when all are there.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

$(BUILD)/lib/%.o: lib/%.c $(wildcard lib/*.h) | $(BUILD)/lib
	$(CC) $(CFLAGS) -c -o $@ $<
$(BUILD)/libincv3.a: $(LIB_OBJ)
	$(AR) rcs $@ $^
$(BUILD)/%: tools/%.c $(BUILD)/libincv3.a $(wildcard lib/*.h)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libincv3.a $(LDLIBS)
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libincv3.a $(wildcard lib/*.h) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libincv3.a $(LDLIBS)
$(BUILD)/lib $(BUILD)/tests:
	mkdir -p $@

unit: all
	@set -e; for t in $(UNIT); do echo "== $$t"; $$t; done
bats: all
	bats tests/
test: unit bats
# The README's test command: install what is missing, build, run every test.
check: deps
	$(MAKE) test

# The README's main job: a real training on the embedded sample.
demo: deps
	$(MAKE) all
	pipelines/train --data data/sample --run train

bench: deps
	$(MAKE) all
	bench/run

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 $(TOOLS:%=$(BUILD)/%) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/*.5 $(DESTDIR)$(PREFIX)/share/man/man5/

clean:
	rm -rf $(BUILD)
