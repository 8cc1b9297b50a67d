#!/usr/bin/env bash
# Fails when a library or CLI source file includes a header of a layer above its own,
# or of a sibling at its own level (one pass family including another). The layers are
# DESIGN.md's, one folder each, bottom to top:
#   0 compress/base                       errors
#   1 compress/ir  compress/data  compress/dist   the graph IR; datasets; c10d collectives
#   2 compress/report                     the report model and writers
#   3 compress/runtime                    op kernels, executor, threads, CPU features
#   4 compress/io  compress/zoo           import/export, ONNX Runtime, verify; builder, zoo
#   5 compress/train                      trainer, evaluator
#   6 compress/pass                       Pass interface, options, layer selection, schedules
#   7 distill/objective.* distill/losses.*  the distillation objective (files, not a folder)
#   8 training pruning quantization distill   the pass families
#   9 compress/registry                   the one table of passes
#  10 compress/engine                     recipes, model sources, exports, runs
#  11 cli                                 the command line
# A file may include its own folder and any folder of a lower layer. Tests, benchmarks
# and tools may include anything.
# Layer 7 is the one rule by file: the distillation objective and its losses are training
# machinery that other families train with (quantize-qat's `distill` option), as the
# trainer is, while the distill pass beside them stays a sibling family. Any family may
# include distill/objective.h and distill/losses.h; they include nothing of layer 8
# (distill/distill.h included).
# Usage: tools/check_layers.sh [SOURCE_DIR]   (exit 1 and one line per violation)
set -u
cd "${1:-$(dirname "$0")/..}" || exit 2

rank() {
  case "$1" in
    compress/base) echo 0 ;;
    compress/ir | compress/data | compress/dist) echo 1 ;;
    compress/report) echo 2 ;;
    compress/runtime) echo 3 ;;
    compress/io | compress/zoo) echo 4 ;;
    compress/train) echo 5 ;;
    compress/pass) echo 6 ;;
    training | pruning | quantization | distill) echo 8 ;;
    compress/registry) echo 9 ;;
    compress/engine) echo 10 ;;
    cli) echo 11 ;;
    *) echo "" ;;
  esac
}

# A file's layer: its folder's, but for the shared distillation objective (layer 7).
file_rank() {
  case "$1" in
    distill/objective.h | distill/objective.cpp | distill/losses.h | distill/losses.cpp) echo 7 ;;
    *) rank "$(dirname "$1")" ;;
  esac
}

status=0
checked=0
while IFS= read -r file; do
  dir=$(dirname "$file")
  own=$(file_rank "$file")
  if [[ -z $own ]]; then
    [[ $file == compress/pch.h ]] && continue
    echo "check_layers: $file: folder '$dir' is not a layer (add it to tools/check_layers.sh and DESIGN.md)"
    status=1
    continue
  fi
  checked=$((checked + 1))
  while IFS=: read -r line inc; do
    inc_dir=$(dirname "$inc")
    theirs=$(file_rank "$inc")
    # The own folder is fine, unless the header ranks above the file (layer 7 files).
    [[ $inc_dir == "$dir" ]] && [[ -n $theirs ]] && ((theirs <= own)) && continue
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
