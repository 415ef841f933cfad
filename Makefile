# Attention variants in C. `make` installs missing Debian packages, builds every program and regenerates
# every figure; `make test` runs all tests. See README.md.

CC      ?= gcc
BUILD   ?= build
BINDIR  ?= .
# x86-64-v3 = AVX2 + FMA. -ffp-contract=off keeps a*b+c as two roundings everywhere, so weights and
# figures are the same bytes on every machine of this class, whatever OMP_NUM_THREADS is.
OPT     ?= -O3 -march=x86-64-v3 -ffp-contract=off
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

.PHONY: all build deps figures test test-run sanitize bench golden weights experiments clean
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory figures

deps:
	@tools/deps.sh

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

# Every chapter program regenerates its figures from the shipped weights.
figures: $(addprefix $(BIN),$(CHAPTERS))
	@for c in $(CHAPTERS); do echo "== ./$$c"; ./$(BIN)$$c || exit 1; done

# ---- tests ------------------------------------------------------------------------------------------
$(BUILD)/tests/run: $(TEST_SRC:%.c=$(BUILD)/%.o) $(LIBS)
	$(CC) $(CFLAGS) $(filter %.o,$^) $(LIBS) $(LDLIBS) -lcriterion -o $@

test: deps
	@$(MAKE) --no-print-directory test-run

test-run: $(BUILD)/tests/run $(BINS)
	OMP_WAIT_POLICY=passive ATTN_BINDIR=$(abspath $(BINDIR)) ATTN_ROOT=$(CURDIR) $(BUILD)/tests/run -j2 --short-filename

# The same tests, built and run under AddressSanitizer and UndefinedBehaviorSanitizer.
sanitize: deps
	@UBSAN_OPTIONS=print_stacktrace=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp $(MAKE) --no-print-directory BUILD=build/san \
	    BINDIR=build/san/bin OPT="-O1 -g -march=x86-64-v3 -ffp-contract=off $(SAN)" test-run

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

golden: deps build
	@tools/deps.sh --golden
	$(PYTHON) tests/reference/make_golden.py

weights: deps build
	tools/make_weights.sh

# Every setting of tools/experiments.txt over its seeds: metrics in data/experiments/ (ONLY=REGEX: some groups).
experiments: deps build
	tools/experiments.sh

clean:
	rm -rf build $(CHAPTERS) $(TOOLS)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
