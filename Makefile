# mcompress: `make demo` runs the main job, `make test` the test suite. Both install
# what is missing first (tools/deps.sh) and build with CMake into build/.
BUILD_DIR ?= build
JOBS ?= 2
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all deps configure build demo test bench clean

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

bench: configure
	@cmake -S . -B $(BUILD_DIR) -DMCOMPRESS_BUILD_BENCH=ON >/dev/null
	@cmake --build $(BUILD_DIR) -j$(JOBS)
	@bash bench/run.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR) out
