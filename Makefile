# Attention variants in C. `make` installs missing Debian packages, builds every program and regenerates
# every figure; `make test` runs all tests. See README.md.

CC      ?= gcc
BUILD   ?= build
BINDIR  ?= .
# The kernels (common/simd.h) compile to AVX2/FMA on an x86-64 CPU that has them (-march=x86-64-v3,
# chosen by tools/cpu_flags.sh) and to plain C everywhere else, or with `make PORTABLE=1`; both give the
# same bits. -ffp-contract=off keeps a*b+c as two roundings wherever the code does not ask for a fused
# multiply-add, so weights and figures are the same bytes whatever OMP_NUM_THREADS is.
ifeq ($(PORTABLE),1)
ARCH_FLAGS :=
else
ARCH_FLAGS := $(shell tools/cpu_flags.sh)
endif
OPT     ?= -O3 $(ARCH_FLAGS) -ffp-contract=off
PKGS    := cairo libcjson stb
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra $(OPT) -fopenmp -Icommon -Ichapters \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -MMD -MP
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lstb -lm -fopenmp
PYTHON  ?= /usr/bin/python3
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

CHAPTER_DIRS := $(sort $(patsubst %/main.c,%,$(wildcard chapters/[0-9][0-9]_*/main.c)))
CHAPTERS     := $(foreach d,$(CHAPTER_DIRS),ch$(firstword $(subst _, ,$(notdir $(d)))))
COMMON_SRC   := $(sort $(wildcard common/*.c))
MECH_SRC     := $(sort $(filter-out %/main.c,$(wildcard chapters/*/*.c)) $(wildcard chapters/*.c))
TOOLS        := $(filter-out bench,$(basename $(notdir $(wildcard tools/*.c))))
TEST_SRC     := $(sort $(wildcard tests/*.c))

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
MECH_OBJ   := $(MECH_SRC:%.c=$(BUILD)/%.o)
LIBS       := $(BUILD)/libmech.a $(BUILD)/libcommon.a
# Programs land at the repository root (`./ch05`), or under BINDIR for the sanitizer build.
BIN        := $(if $(filter .,$(BINDIR)),,$(BINDIR)/)
BINS       := $(addprefix $(BIN),$(CHAPTERS) $(TOOLS))

.PHONY: all build deps figures configs-table test test-run sanitize fuzz bench golden weights experiments arm-check clean
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory figures

deps:
	@tools/deps.sh
	@if [ -n "$(ARCH_FLAGS)" ]; then echo "  kernels: AVX2 + FMA ($(ARCH_FLAGS))"; \
	 else echo "  kernels: plain C ($(if $(filter 1,$(PORTABLE)),PORTABLE=1,no AVX2 + FMA on this CPU))"; fi

build: $(BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libcommon.a: $(COMMON_OBJ)
	@rm -f $@; ar rcs $@ $^
$(BUILD)/libmech.a: $(MECH_OBJ)
	@rm -f $@; ar rcs $@ $^

# ./chNN from chapters/NN_name/main.c; `make ch05` builds just that one.
define chapter_rule
$(BIN)ch$(1): $(BUILD)/$(2)/main.o $(LIBS)
	@mkdir -p $(BINDIR)
	$(CC) $(CFLAGS) $$< $(LIBS) $(LDLIBS) -o $$@
endef
$(foreach d,$(CHAPTER_DIRS),$(eval $(call chapter_rule,$(firstword $(subst _, ,$(notdir $(d)))),$(d))))

define tool_rule
$(BIN)$(1): $(BUILD)/tools/$(1).o $(LIBS)
	@mkdir -p $(BINDIR)
	$(CC) $(CFLAGS) $$< $(LIBS) $(LDLIBS) -o $$@
endef
$(foreach t,$(TOOLS),$(eval $(call tool_rule,$(t))))

# Every chapter program regenerates its figures from the shipped weights, ./kvcache draws the layer
# strip of every shipped config; then the contact sheet (figures/README.md) is rewritten from the SVGs.
figures: $(addprefix $(BIN),$(CHAPTERS) contactsheet) $(BIN)kvcache
	@for c in $(CHAPTERS); do echo "== ./$$c"; ./$(BIN)$$c || exit 1; done
	@mkdir -p figures/configs && ./$(BIN)kvcache --layers-plot figures/configs/layer_strips.png data/configs/*.json >/dev/null
	@./$(BIN)contactsheet figures

# The table of every shipped config in data/configs/README.md, rewritten from ./kvcache --table between its
# marker lines (a test fails when the two differ).
configs-table: $(BIN)kvcache
	@mkdir -p $(BUILD) && ./$(BIN)kvcache --table data/configs/*.json > $(BUILD)/configs-table.md
	@awk -v t=$(BUILD)/configs-table.md '/^<!-- table:/ { print; while ((getline l < t) > 0) print l; skip = 1; next } \
	    /^<!-- end of table -->/ { skip = 0 } !skip' data/configs/README.md > $(BUILD)/configs-README.md
	@mv $(BUILD)/configs-README.md data/configs/README.md

# ---- tests ------------------------------------------------------------------------------------------
$(BUILD)/tests/run: $(TEST_SRC:%.c=$(BUILD)/%.o) $(LIBS)
	$(CC) $(CFLAGS) $(filter %.o,$^) $(LIBS) $(LDLIBS) -lcriterion -o $@

# Every test, then (on a machine whose default build uses the AVX2/FMA kernels) the same tests on the
# plain-C build, and a check that both builds train the same bytes.
test: deps
	@$(MAKE) --no-print-directory test-run
ifneq ($(ARCH_FLAGS),)
	@echo "== the plain-C build (PORTABLE=1): the same tests"
	@$(MAKE) --no-print-directory BUILD=build/portable BINDIR=build/portable/bin PORTABLE=1 test-run
	@echo "== the two builds compute the same bits"
	@tools/same_bits.sh $(BINDIR) build/portable/bin
endif
	@echo "== the exercises: every starter fails its checker, the reference passes"
	@$(MAKE) --no-print-directory exercises-check

# The tests' scratch folders live in one folder per run, removed afterwards whatever the result.
test-run: $(BUILD)/tests/run $(BINS)
	@tmp=$$(mktemp -d /tmp/attn-tests.XXXXXX) && \
	OMP_WAIT_POLICY=passive ATTN_TMP=$$tmp ATTN_BINDIR=$(abspath $(BINDIR)) ATTN_ROOT=$(CURDIR) \
	    $(BUILD)/tests/run -j2 --short-filename; rc=$$?; rm -rf "$$tmp"; exit $$rc

# The same tests, built and run under AddressSanitizer and UndefinedBehaviorSanitizer, then 30 s of
# each fuzz target.
sanitize: deps
	@UBSAN_OPTIONS=print_stacktrace=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp $(MAKE) --no-print-directory BUILD=build/san \
	    BINDIR=build/san/bin OPT="-O1 -g $(ARCH_FLAGS) -ffp-contract=off $(SAN)" test-run
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=30

# ---- fuzzing ------------------------------------------------------------------------------------------
# libFuzzer targets (tests/fuzz/): the safetensors reader, the config reader with the cache formulas,
# and model load + forward + decode, built with Debian's clang under AddressSanitizer and
# UndefinedBehaviorSanitizer; tools/fuzz.sh runs each for FUZZ_SECONDS from the seed corpus.
FUZZ_SECONDS ?= 300
FUZZ_DIR     := build/fuzz
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -Wall -Wextra -g -O1 $(ARCH_FLAGS) -ffp-contract=off -fopenmp \
                -Icommon -Ichapters $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -MMD -MP \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_OBJ     := $(COMMON_SRC:%.c=$(FUZZ_DIR)/%.o) $(MECH_SRC:%.c=$(FUZZ_DIR)/%.o)
FUZZ_BINS    := $(addprefix $(FUZZ_DIR)/fuzz_,safetensors config model)

$(FUZZ_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJ)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $(FUZZ_OBJ) $(LDLIBS) -o $@

fuzz:
	@tools/deps.sh --fuzz
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@tools/fuzz.sh $(FUZZ_SECONDS)

# ---- classroom exercises (chapters/NN_name/EXERCISES.md, tools/exercises.sh, tools/exercises.txt) ----
# `make exercises [CH=05] [OUT=dir]` writes a student tree; in it (or here) `make check EX=05.2` or
# `make ex05` builds the focused tests (tests/test_exercises.c) and prints a verdict per exercise.
EX_SRC   := $(shell grep -lE '^[[:space:]]*// EXERCISE ex[0-9][0-9]\.[0-9]+ begin' $(COMMON_SRC) $(MECH_SRC))
EX_LABS  := $(addprefix ex,$(patsubst ch%,%,$(CHAPTERS)))
EX_TESTS := $(BUILD)/tests/test_exercises.o $(BUILD)/tests/helpers.o
EXB      := $(BUILD)/exercises
OUT      ?= build/student
.PHONY: exercises check exercises-check $(EX_LABS)

exercises:
	@tools/exercises.sh student $(OUT) $(CH)

$(BUILD)/tests/exercises: $(EX_TESTS) $(LIBS)
	$(CC) $(CFLAGS) $(EX_TESTS) $(LIBS) $(LDLIBS) -lcriterion -o $@

check: deps
	@$(MAKE) -s --no-print-directory $(BUILD)/tests/exercises $(BIN)kvcache
	@EX_RUN=$(BUILD)/tests/exercises EX_KVCACHE=$(BINDIR)/kvcache tools/exercises.sh check $(EX)
$(EX_LABS): deps
	@$(MAKE) -s --no-print-directory $(BUILD)/tests/exercises $(BIN)kvcache
	@EX_RUN=$(BUILD)/tests/exercises EX_KVCACHE=$(BINDIR)/kvcache tools/exercises.sh check $(patsubst ex%,%,$@)

# The self-test (`make test` runs it): the marked files in their student form (every stub in place,
# compiled with -Werror) and in the self-test's form (the stub EXERCISE_STUB names, else the reference),
# each linked with the focused tests; then tools/exercises.sh selftest.
$(EXB)/student/%.c: %.c tools/exercises.sh
	@mkdir -p $(dir $@)
	@tools/exercises.sh stub $< > $@.tmp && mv $@.tmp $@
$(EXB)/select/%.c: %.c tools/exercises.sh
	@mkdir -p $(dir $@)
	@tools/exercises.sh select $< > $@.tmp && mv $@.tmp $@
$(EXB)/student/%.o: $(EXB)/student/%.c
	$(CC) $(CFLAGS) -O1 -Werror -I$(dir $*) -c $< -o $@
$(EXB)/select/%.o: $(EXB)/select/%.c
	$(CC) $(CFLAGS) -O1 -I$(dir $*) -c $< -o $@
$(EXB)/%/run: $(addprefix $(EXB)/%/,$(EX_SRC:.c=.o)) $(EX_TESTS) $(LIBS)
	$(CC) $(CFLAGS) $(filter %.o,$^) $(LIBS) $(LDLIBS) -lcriterion -o $@
.SECONDARY: $(foreach f,student select,$(addprefix $(EXB)/$(f)/,$(EX_SRC) $(EX_SRC:.c=.o)))

# One student's submission (tools/check_class.sh): the files with exercise regions taken from the folder
# SUB, compiled and linked with this tree's focused tests and everything else; `make SUB=dir NAME=x
# $(BUILD)/class/x/run`.
ifdef SUB
$(BUILD)/class/$(NAME)/%.o: $(SUB)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -O1 -I$(dir $*) -c $< -o $@
$(BUILD)/class/$(NAME)/run: $(EX_SRC:%.c=$(BUILD)/class/$(NAME)/%.o) $(EX_TESTS) $(LIBS)
	$(CC) $(CFLAGS) $(filter %.o,$^) $(LIBS) $(LDLIBS) -lcriterion -o $@
endif

exercises-check: $(EXB)/select/run $(EXB)/student/run $(BUILD)/tests/exercises $(BIN)kvcache
	@EX_KVCACHE=$(BINDIR)/kvcache tools/exercises.sh selftest $(EXB)/select/run $(EXB)/student/run $(BUILD)/tests/exercises

# ---- benchmarks, golden values, weights ---------------------------------------------------------------
# The benchmark links OpenBLAS as its peer; it is built under build/ and run by `make bench`.
$(BUILD)/bench: $(BUILD)/tools/bench.o $(LIBS)
	$(CC) $(CFLAGS) $< $(LIBS) $(LDLIBS) $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -o $@
$(BUILD)/tools/bench.o: CFLAGS += $(shell pkg-config --cflags openblas 2>/dev/null)

bench: deps
	@$(MAKE) --no-print-directory $(BUILD)/bench build
	@tools/deps.sh --golden
	$(BUILD)/bench
	PYTHON=$(PYTHON) tools/bench_train.sh

# The kernels built for 64-bit ARM and run under qemu compute the same bits as this machine's build.
arm-check: deps
	@tools/deps.sh --arm
	@tools/arm_check.sh

# The weights format, from data/weights/README.md alone: PyTorch loads the shipped attention models and
# matches ./infer's logits.
FORMAT_CHECK := ch02_recall ch03_induction ch04_recall_g1 ch05_recall_mla ch06_3to1_w4 ch08_gated

golden: deps build
	@tools/deps.sh --golden
	$(PYTHON) tests/reference/make_golden.py
	@for w in $(FORMAT_CHECK); do $(PYTHON) tools/load_in_pytorch.py data/weights/$$w.safetensors || exit 1; done

weights: deps build
	tools/make_weights.sh

# Every setting of tools/experiments.txt over its seeds: metrics in data/experiments/ (ONLY=REGEX: some groups).
experiments: deps build
	tools/experiments.sh

clean:
	rm -rf build $(CHAPTERS) $(TOOLS)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
