#!/usr/bin/env bash
# Paged-attention probe on the GPU machine: builds the variants of
# paged_attention_probe.cu (and the generator's default source, emitted by
# the static llmir, as the control), times them side by side in one process
# (probe_main.cu: L2 flushed before every call, CUDA events, ROUNDS rounds
# interleaved over the variants, each validated against a naive reference
# kernel), then PyTorch SDPA on the same shape. Logs land under $OUT.
#
#   OUT=/tmp/o LLMIR=bin/llmir-linux-amd64 bash target/cuda/csrc/probe/run.sh
#   VARIANTS='w8v8:16:-DWW=8 -DVV=8 -DMINB=2' ROUNDS=3 bash target/cuda/csrc/probe/run.sh
#
# VARIANTS is a ';'-separated list of name:block_size:nvcc flags.
set -u
OUT=${OUT:-$PWD/probe-out}
LLMIR=${LLMIR:-bin/llmir-linux-amd64}
ROUNDS=${ROUNDS:-5}
VARIANTS=${VARIANTS:-'base16:16:;h256_16:16:-DHINT=256;cl2_16:16:-DCL=2;row4_16:16:-DROW=1 -DNP=4;w8v8m2_16:16:-DWW=8 -DVV=8 -DMINB=2;stream16:16:-DSTREAM=1;base128:128:;w8v8m2_128:128:-DWW=8 -DVV=8 -DMINB=2;stream128:128:-DSTREAM=1'}
HERE=$(cd "$(dirname "$0")" && pwd)
for d in /usr/local/cuda/bin /usr/local/cuda-13.0/bin; do [ -d "$d" ] && PATH="$PATH:$d"; done
export PATH
ARCH=-gencode=arch=compute_90a,code=sm_90a
B=$(mktemp -d)
mkdir -p "$OUT/build"
nvcc -O2 -std=c++17 $ARCH -o "$B/probe" "$HERE/probe_main.cu" -ldl >"$OUT/build/probe_main.log" 2>&1 || { echo "probe_main: build failed"; cat "$OUT/build/probe_main.log"; exit 1; }
build() { # name bs src flags...
  local n=$1 bs=$2 src=$3
  shift 3
  nvcc -O3 $ARCH -std=c++17 -shared -Xcompiler -fPIC -Xptxas -v -DBSZ="$bs" "$@" -o "$B/$n.so" "$src" >"$OUT/build/$n.log" 2>&1 || echo "FAIL $n (see $OUT/build/$n.log)"
}
ARGS=()
# The generator's default at each block size named, as the control.
for bs in $(tr ';' '\n' <<<"$VARIANTS" | cut -d: -f2 | sort -un); do
  if "$LLMIR" cuda emit "paged_attention:B=32,QH=32,KVH=8,D=128,BS=$bs,ctx=4096" |
    sed 's/^int llmir_kernel(/extern "C" int llmir_kernel(/' >"$B/emit$bs.cu"; then
    build "emit$bs" "$bs" "$B/emit$bs.cu" &
    ARGS+=("emit$bs:$bs:$B/emit$bs.so")
  fi
done
IFS=';' read -ra VS <<<"$VARIANTS"
for v in "${VS[@]}"; do
  n=${v%%:*} rest=${v#*:}
  bs=${rest%%:*} flags=${rest#*:}
  # shellcheck disable=SC2086 # flags are words
  build "$n" "$bs" "$HERE/paged_attention_probe.cu" $flags &
  ARGS+=("$n:$bs:$B/$n.so")
done
wait
OK=()
for a in "${ARGS[@]}"; do [ -f "${a##*:}" ] && OK+=("$a"); done
grep -h "registers\|spill" "$OUT"/build/*.log >"$OUT/registers.txt" 2>/dev/null
timeout 300 "$B/probe" "$ROUNDS" "${OK[@]}" | tee "$OUT/probe.txt"
if command -v python3 >/dev/null; then
  timeout 90 python3 "$HERE/../../../../scripts/sdpa_baseline.py" >"$OUT/sdpa.json" 2>"$OUT/sdpa.log" &&
    grep '^sdpa' "$OUT/sdpa.log" | grep -v round
fi
rm -rf "$B"
