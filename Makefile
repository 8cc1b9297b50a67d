# mcompress: `make demo` runs the main job, `make test` the test suite. Both install
# what is missing first (tools/deps.sh) and build with CMake into build/.
BUILD_DIR ?= build
JOBS ?= 2
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all deps configure build demo test bench san-configure test-asan fuzz clean

all: build

deps:
	@bash tools/deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS)

# The main job: the Fashion-MNIST demo recipe on the zoo convnet. The trained baseline
# is cached under build/cache, so a second run skips training.
demo: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS) --target mcompress
	$(BUILD_DIR)/bin/mcompress run recipes/fashion_mnist_demo.json --out out/demo \
	  --cache-dir $(BUILD_DIR)/cache

# The CPU line first: INT8 results depend on it (VNNI/AMX or not), and CI logs must say.
test: build
	@$(BUILD_DIR)/bin/mcompress cpu
	@cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS) --timeout 900

# QUICK=1: a reduced run (the Python peer side by side, the profile) in a few minutes.
QUICK ?= 0
bench: configure
	@cmake -S . -B $(BUILD_DIR) -DMCOMPRESS_BUILD_BENCH=ON >/dev/null
	@cmake --build $(BUILD_DIR) -j$(JOBS)
	@QUICK=$(QUICK) bash bench/run.sh $(BUILD_DIR)

# AddressSanitizer + UndefinedBehaviorSanitizer (clang, $(SAN_DIR)): the whole suite
# but the packaging test (a gcc-built consumer cannot link an instrumented library).
# A leak report fails the test unless tools/sanitizers/lsan.supp names it (a library we
# do not build, with the reason; none today, docs/security.md).
SAN_DIR ?= build-asan
SAN_ENV = ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=0 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tools/sanitizers/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
san-configure:
	@bash tools/deps.sh --sanitize
	@CXX=clang++ cmake -S . -B $(SAN_DIR) -DCMAKE_BUILD_TYPE=Release -DMCOMPRESS_FUZZ=ON >/dev/null

test-asan: san-configure
	@$(SAN_ENV) cmake --build $(SAN_DIR) -j$(JOBS)
	@$(SAN_ENV) $(SAN_DIR)/bin/mcompress cpu
	@cd $(SAN_DIR) && $(SAN_ENV) ctest --output-on-failure -j$(JOBS) --timeout 1800 \
	  -E '^consumer_find_package$$'

# libFuzzer on the four readers of untrusted input, FUZZ_SECONDS each (default 600),
# JOBS at a time; seeds from the tests, corpora kept in $(SAN_DIR)/fuzz/corpus.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= onnx recipe torchscript idx
fuzz: san-configure
	@$(SAN_ENV) cmake --build $(SAN_DIR) -j$(JOBS) --target fuzz_onnx fuzz_recipe fuzz_torchscript fuzz_idx fuzz_seeds
	@bash tools/run_fuzz.sh $(SAN_DIR) $(FUZZ_SECONDS) $(JOBS) "$(FUZZ_TARGETS)"

clean:
	rm -rf $(BUILD_DIR) $(SAN_DIR) out
