#!/usr/bin/env bash
# find-mlir-opt.sh — prints the path of an upstream mlir-opt, or nothing.
# Debian's mlir-N-tools install it in LLVM's own bin folder, not on PATH.
set -u
if [ -n "${LLMIR_MLIR_OPT:-}" ] && [ -x "$LLMIR_MLIR_OPT" ]; then echo "$LLMIR_MLIR_OPT"; exit 0; fi
for c in mlir-opt mlir-opt-19 mlir-opt-18 mlir-opt-17 mlir-opt-16; do
  p=$(command -v "$c" 2>/dev/null) && { echo "$p"; exit 0; }
done
for p in /usr/lib/llvm-*/bin/mlir-opt; do
  [ -x "$p" ] && { echo "$p"; exit 0; }
done
exit 1
