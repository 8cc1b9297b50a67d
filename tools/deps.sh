#!/usr/bin/env bash
# Installs everything mcompress needs on Debian bookworm (DESIGN.md's dependency
# table) plus onnxruntime-node under tools/ort/. Idempotent: a no-op when all is present.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ccache pkg-config
  libtorch-dev libonnx-dev libprotobuf-dev protobuf-compiler
  libcli11-dev nlohmann-json3-dev zlib1g-dev libopenblas0-pthread libgloo-dev
  libpng-dev libjpeg62-turbo-dev time
  googletest libgtest-dev
  python3-torch python3-torchvision python3-onnx
  dataset-fashion-mnist libonnx-testdata
  chromium
)
# `make test-asan` and `make fuzz` (tools/deps.sh --sanitize): clang with libFuzzer and
# the sanitizer runtimes, llvm-symbolizer for the reports' stack traces.
if [ "${1:-}" = "--sanitize" ]; then
  PACKAGES+=(clang libclang-rt-14-dev llvm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# onnxruntime-node: the CPU library ships inside the package; its install script only
# fetches GPU add-ons from outside, hence --ignore-scripts.
if [ ! -f tools/ort/node_modules/onnxruntime-node/package.json ]; then
  echo "deps: installing onnxruntime-node into tools/ort"
  (cd tools/ort && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
fi
