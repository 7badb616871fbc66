# RaftKV: a thin wrapper over CMake/ctest. `make` builds, `make test` installs
# missing dependencies, builds and runs the test suite, `make demo` runs a
# local cluster (see README.md).
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
# ctest labels that `make test` runs; soaks and benchmarks are separate.
TEST_LABELS ?= unit|sim|integration|fuzz

.PHONY: all deps configure build test test-asan mutation-check soak demo format format-check bench-engine clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

configure: $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: deps
	$(MAKE) build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L '$(TEST_LABELS)'

# Unit, simulation, integration and fuzz tests once more under AddressSanitizer and UBSan,
# built with clang, whose libFuzzer also runs every fuzz target for
# FUZZ_SECONDS each.
FUZZ_SECONDS ?= 20
test-asan: deps
	CC=clang cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	  -DRAFTKV_SANITIZE=address,undefined -DRAFTKV_FUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 \
	  ctest --output-on-failure -j $(JOBS) -L 'unit|sim|integration' -LE 'slow'
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS) -L 'fuzz'

# The simulation's own test: known bugs injected into a scratch copy of the
# Raft core must each be caught (prints "caught N/N").
mutation-check: build
	scripts/mutation-check.sh

# Long runs, not part of `make test`: many simulation seeds.
SOAK_SEEDS ?= 100000
soak: build
	$(BUILD)/tests/sim/raft_sim --seeds $(SOAK_SEEDS)

demo: deps
	$(MAKE) build
	$(BUILD)/raftkv demo $(DEMO_ARGS)

bench-engine: build
	$(BUILD)/raftkv bench-engine $(BENCH_ARGS)

format:
	find src tests -name '*.[ch]' | xargs clang-format -i

format-check:
	find src tests -name '*.[ch]' | xargs clang-format --dry-run --Werror

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
