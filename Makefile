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

# Until the recipe engine lands: train the zoo convnet for one epoch on Fashion-MNIST,
# evaluate it on the test set and export it to ONNX.
demo: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS) --target mcompress
	@mkdir -p out/demo
	$(BUILD_DIR)/bin/mcompress train --model zoo:convnet --epochs 1 --optimizer sgd \
	  --lr 0.05 --momentum 0.9 --lr-schedule cosine --out out/demo/convnet.onnx
	$(BUILD_DIR)/bin/mcompress eval out/demo/convnet.onnx --latency

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS) --timeout 900

bench: configure
	@cmake -S . -B $(BUILD_DIR) -DMCOMPRESS_BUILD_BENCH=ON >/dev/null
	@cmake --build $(BUILD_DIR) -j$(JOBS)
	@bash bench/run.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR) out
