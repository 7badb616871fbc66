# RaftKV: a thin wrapper over CMake/ctest. `make` builds, `make test` installs
# missing dependencies, builds and runs the test suite, `make demo` runs a
# local cluster (see README.md).
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
# ctest labels that `make test` runs; soaks and benchmarks are separate.
TEST_LABELS ?= unit|sim|integration|fuzz

.PHONY: all deps configure build test test-asan demo format format-check bench-engine clean

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

# Unit, simulation and fuzz tests once more under AddressSanitizer and UBSan,
# built with clang (whose libFuzzer the fuzz targets need).
test-asan: deps
	CC=clang cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	  -DRAFTKV_SANITIZE=address,undefined
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 \
	  ctest --output-on-failure -j $(JOBS) -L 'unit|sim|fuzz' -LE 'slow'

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
