# incv3 - `make` builds everything; `make check` installs what is missing and runs all tests.
PREFIX  ?= /usr/local
BUILD   ?= build
CC      ?= cc
OPT     ?= -O3 -march=native
PKGS    := libzstd libpng libjpeg libcjson libarchive
# OpenBLAS's OpenMP build shares our OpenMP threads; the pthreads build would
# spin its own threads against ours (2 cores: a third of the time lost).
BLAS    := /usr/lib/x86_64-linux-gnu/openblas-openmp
CFLAGS  += -std=gnu11 $(OPT) -g -fopenmp -Wall -Wextra -Wno-unused-parameter -Ilib \
           -I/usr/include/x86_64-linux-gnu/openblas-openmp $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += -L$(BLAS) -Wl,-rpath,$(BLAS) -lopenblas -ldnnl $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
LDFLAGS += -fopenmp
# OpenMPI, for allreduce-merge --mpi only
MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null)
ifneq ($(MPI_LIBS),)
$(BUILD)/lib/allreduce.o: CFLAGS += -DHAVE_MPI $(MPI_CFLAGS)
$(BUILD)/allreduce-merge: LDLIBS += $(MPI_LIBS)
endif

# torchvision's image operations round after every multiply and add: no fused ones
$(BUILD)/lib/imageops.o: CFLAGS += -ffp-contract=off
# PIL's resize weights are doubles rounded once each: no fused multiply-adds either
$(BUILD)/lib/images.o: CFLAGS += -ffp-contract=off

TOOLS   := cifar-decode image-decode augment tensor incv3-step evaluate incv3-ckpt allreduce-merge
LIB_SRC := $(wildcard lib/*.c)
LIB_OBJ := $(LIB_SRC:lib/%.c=$(BUILD)/lib/%.o)
UNIT    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/*.c))

.PHONY: all deps test-deps test check check-kernels check-asan unit bats demo bench fuzz install clean
all: $(TOOLS:%=$(BUILD)/%) $(UNIT) $(BUILD)/bench-sgemm

# Missing Debian packages are installed (as root); nothing happens when all are there.
deps:
	@sh pipelines/setup
test-deps:
	@sh pipelines/setup --tests

$(BUILD)/lib/%.o: lib/%.c $(wildcard lib/*.h) | $(BUILD)/lib
	$(CC) $(CFLAGS) -c -o $@ $<
$(BUILD)/libincv3.a: $(LIB_OBJ)
	$(AR) rcs $@ $^
$(BUILD)/%: tools/%.c $(BUILD)/libincv3.a $(wildcard lib/*.h)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libincv3.a $(LDLIBS)
$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(BUILD)/libincv3.a $(wildcard lib/*.h) | $(BUILD)/tests
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libincv3.a $(LDLIBS)
$(BUILD)/bench-sgemm: bench/sgemm.c $(BUILD)/libincv3.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libincv3.a $(LDLIBS)
# libxsmm links statically; BLIS is opened at run time (its BLAS symbols clash with OpenBLAS's).
$(BUILD)/bench-gemm: bench/gemm.c $(BUILD)/libincv3.a $(wildcard lib/*.h)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libincv3.a -lxsmm $(LDLIBS) -ldl -lpthread -lrt
$(BUILD)/bench-peak: bench/peak.c
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lxsmm -lm -ldl -lpthread -lrt $(LDLIBS)
$(BUILD)/bench-winograd: bench/winograd.c $(BUILD)/libincv3.a $(wildcard lib/*.h)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libincv3.a $(LDLIBS)
$(BUILD)/lib $(BUILD)/tests:
	mkdir -p $@

unit: all
	@set -e; for t in $(UNIT); do $$t; done
bats: all
	INCV3_BUILD=$(BUILD) bats tests/
test: unit bats
# The README's test command: install what is missing, build, run every test, the
# numeric ones again under another set of OpenBLAS kernels, then all of them again
# under AddressSanitizer and UndefinedBehaviorSanitizer.
check: test-deps
	$(MAKE) test
	$(MAKE) check-kernels
	$(MAKE) check-asan

# Bounds must hold for every correct set of kernels, not the one this machine or its
# environment happens to pick (tests/helpers/other-kernels chooses the other).
check-kernels: all
	@kernels=$$(sh tests/helpers/other-kernels); \
	echo "== numeric tests again with $$kernels"; \
	set -e; for t in $(UNIT); do env $$kernels $$t; done; \
	env $$kernels INCV3_BUILD=$(BUILD) bats tests/parallel.bats

SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# Leaks are checked in the unit tests; the tools keep their buffers until exit.
check-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -march=native $(SANITIZE)" LDFLAGS="-fopenmp $(SANITIZE)" unit
	ASAN_OPTIONS=detect_leaks=0 $(MAKE) BUILD=build-asan OPT="-O1 -march=native $(SANITIZE)" \
	    LDFLAGS="-fopenmp $(SANITIZE)" bats

# libFuzzer (clang): each target for FUZZ_SECONDS from its committed seed corpus;
# new finds land in build-fuzz/corpus-*, crashes in build-fuzz/crash-*.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := stream cifar safetensors pickle npy checkpoint evaluate image
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Ilib \
              -I/usr/include/x86_64-linux-gnu/openblas-openmp $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
build-fuzz/%: tests/fuzz/fuzz_%.c tests/fuzz/memstream.h $(LIB_SRC) $(wildcard lib/*.h)
	@mkdir -p build-fuzz
	clang $(FUZZ_FLAGS) -fopenmp -o $@ $< $(LIB_SRC) $(LDLIBS)
fuzz: test-deps $(FUZZ_TARGETS:%=build-fuzz/%)
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p build-fuzz/corpus-$$t; \
	    echo "== fuzzing $$t for $(FUZZ_SECONDS) s"; \
	    (cd build-fuzz && ./$$t -max_total_time=$(FUZZ_SECONDS) -detect_leaks=0 -rss_limit_mb=4096 \
	        -max_len=1048576 -print_final_stats=1 corpus-$$t ../tests/fuzz/corpus/$$t 2>&1 \
	        | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR)" ); \
	done

# The README's main job: a real training on the embedded sample
# (width 0.125, 8 epochs over its 4000 images: about 6 minutes on 2 cores).
demo: deps
	$(MAKE) all
	pipelines/train --data data/sample --run train --width 0.125 --batch 64 --epochs 8 \
	    --schedule cosine $(DEMO_FLAGS)

bench: deps
	@sh pipelines/setup --bench
	$(MAKE) all $(BUILD)/bench-gemm $(BUILD)/bench-winograd $(BUILD)/bench-peak
	$(BUILD)/bench-peak
	bench/run
	bench/augment
	bench/taps
	bench/images

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 755 $(TOOLS:%=$(BUILD)/%) $(DESTDIR)$(PREFIX)/bin/
	install -m 755 pipelines/train $(DESTDIR)$(PREFIX)/bin/incv3-train
	install -m 755 pipelines/run_incv3 $(DESTDIR)$(PREFIX)/bin/run_incv3
	install -m 755 pipelines/plot-stats $(DESTDIR)$(PREFIX)/bin/incv3-plot-stats
	install -m 755 pipelines/predict $(DESTDIR)$(PREFIX)/bin/incv3-predict
	install -d $(DESTDIR)$(PREFIX)/share/incv3
	install -m 644 models/incv3-cifar10-w025.safetensors $(DESTDIR)$(PREFIX)/share/incv3/
	install -m 644 man/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/*.5 $(DESTDIR)$(PREFIX)/share/man/man5/

clean:
	rm -rf $(BUILD) build-asan build-fuzz
