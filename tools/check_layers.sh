#!/usr/bin/env bash
# Fails when a library or CLI source file includes a header of a layer above its own,
# or of a sibling at its own level (one pass family including another). The layers are
# DESIGN.md's, one folder each, bottom to top:
#   0 compress/base                       errors
#   1 compress/ir  compress/data          the graph IR; datasets
#   2 compress/report                     the report model and writers
#   3 compress/runtime                    op kernels, executor, threads, CPU features
#   4 compress/io  compress/zoo           import/export, ONNX Runtime, verify; builder, zoo
#   5 compress/train                      trainer, evaluator
#   6 compress/pass                       Pass interface, options, layer selection, schedules
#   7 training pruning quantization distill   the pass families
#   8 compress/registry                   the one table of passes
#   9 compress/engine                     recipes, model sources, exports, runs
#  10 cli                                 the command line
# A file may include its own folder and any folder of a lower layer. Tests, benchmarks
# and tools may include anything.
# Usage: tools/check_layers.sh [SOURCE_DIR]   (exit 1 and one line per violation)
set -u
cd "${1:-$(dirname "$0")/..}" || exit 2

rank() {
  case "$1" in
    compress/base) echo 0 ;;
    compress/ir | compress/data) echo 1 ;;
    compress/report) echo 2 ;;
    compress/runtime) echo 3 ;;
    compress/io | compress/zoo) echo 4 ;;
    compress/train) echo 5 ;;
    compress/pass) echo 6 ;;
    training | pruning | quantization | distill) echo 7 ;;
    compress/registry) echo 8 ;;
    compress/engine) echo 9 ;;
    cli) echo 10 ;;
    *) echo "" ;;
  esac
}

status=0
checked=0
while IFS= read -r file; do
  dir=$(dirname "$file")
  own=$(rank "$dir")
  if [[ -z $own ]]; then
    [[ $file == compress/pch.h ]] && continue
    echo "check_layers: $file: folder '$dir' is not a layer (add it to tools/check_layers.sh and DESIGN.md)"
    status=1
    continue
  fi
  checked=$((checked + 1))
  while IFS=: read -r line inc; do
    inc_dir=$(dirname "$inc")
    [[ $inc_dir == "$dir" ]] && continue
    theirs=$(rank "$inc_dir")
    if [[ -z $theirs ]]; then
      echo "check_layers: $file:$line includes \"$inc\", which is in no layer"
      status=1
    elif ((theirs >= own)); then
      echo "check_layers: $file:$line includes \"$inc\" (layer $theirs, $inc_dir) from layer $own ($dir): a layer may include only lower layers"
      status=1
    fi
  done < <(grep -n -o '^#include "[^"]*"' "$file" | sed 's/#include "\(.*\)"/\1/')
done < <(find compress training pruning quantization distill cli -name '*.h' -o -name '*.cpp' 2>/dev/null | sort)
((status == 0)) && echo "check_layers: $checked files, no include against the layer order"
exit $status
