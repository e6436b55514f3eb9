#!/usr/bin/env bash
# GPU check: on the GPU machine (nvcc, an NVIDIA GPU, Python with PyTorch,
# no Go), with the static llmir built beforehand (`make gpu-bundle`, or
# `make static`), in one go:
#   1. environment and device fingerprint
#   2. CUDA conformance: every CUDA kernel's default and sampled schedules
#      validated against the Go reference (llmir cuda check)
#   3. PyTorch SDPA baseline on the attention shapes (scripts/sdpa_baseline.py)
#   4. llama-3-8b decode kernels: a short tune per kernel, cuBLAS in the same
#      harness run, results related to the measured copy bandwidth, every
#      measurement recorded in $OUT/tuning.db (llmir cuda bench)
#   5. llama-3-8b, whole model: llmir tune --target cuda --function F for
#      each F in TUNE_FUNCTIONS (default decode) with a short budget
#      (TUNE_ARGS) into its own database, merged into tuning.db; then llmir compile --target cuda from that database
#      (compile.log and manifest.json in the report say, per workload,
#      whether its schedule came from a record or the rule-based default)
# Results are written to $WORK/report (env.txt, summary.txt with every
# step's status and short logs, check.log, sdpa.json, bench.log, report.md,
# report.json, the emitted sources and their nvcc logs) and, at the end,
# whatever happened, land under $OUT (default ./gpu-out) as three files:
# report.tar.gz (that directory), tuning.db (every measurement of the
# bench and the tune; tuning.db.gz when over 15 MiB) and gpu-check.log
# (summary.txt): a device that returns only a few
# files returns all of it. Scratch goes to $WORK. A failing step is logged
# and the next one still runs. Exit status: non-zero if any step failed.
#
#   OUT=/tmp/o scripts/gpu-check.sh
#   BENCH_ARGS='--match attention --samples 24' scripts/gpu-check.sh
#   TUNE_ARGS='--trials 144 --time 8m' TUNE_TIMEOUT=600 scripts/gpu-check.sh
set -u
OUT=${OUT:-$PWD/gpu-out}
LLMIR=${LLMIR:-bin/llmir-linux-amd64}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-180}
SDPA_TIMEOUT=${SDPA_TIMEOUT:-90}
# Measured: the decode suite (28 kernels) with --samples 4 took 151 s on an
# H100, 156–206 s once the bench timed the read bound beside every row (the
# default 400 covers it; a caller giving less should allow about 260, or add
# --read=false to BENCH_ARGS); --suite all (then 42 kernels) with the default
# 12 samples did not finish in 400 s on an H200: give it BENCH_TIMEOUT=900.
BENCH_TIMEOUT=${BENCH_TIMEOUT:-400}
CHECK_ARGS=${CHECK_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:-}
TUNE_TIMEOUT=${TUNE_TIMEOUT:-420}
# 9 decode workloads with CUDA kernels at batch 1: a default and a batch of
# 7 draws each; --time ends the tune (between batches) before the timeout.
TUNE_ARGS=${TUNE_ARGS:---trials 72 --time 5m --confirm 0}
# The llama-3-8b functions tuned, one `llmir tune --function` each (TUNE_ARGS
# applies to each): e.g. TUNE_FUNCTIONS='decode prefill'; set and empty, no
# tune (nor the compile after it).
TUNE_FUNCTIONS=${TUNE_FUNCTIONS-decode}
# Objects stay outside $OUT: they are large and not results.
export LLMIR_CUDA_CACHE=${LLMIR_CUDA_CACHE:-/tmp/llmir-cuda-cache}
WORK=${WORK:-/tmp/llmir-gpu-check}
mkdir -p "$WORK"
for d in /usr/local/cuda/bin /usr/local/cuda-13.0/bin; do
  [ -d "$d" ] && PATH="$PATH:$d"
done
export PATH
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64
R=$WORK/report
rm -rf "$R"
mkdir -p "$OUT" "$R"
status=0
# pack puts the report into $OUT however the script ends (a step timing
# out, a kill by the caller's limit): the directory as one archive, the
# tuning DB and the summary beside it.
pack() {
  cp "$R/summary.txt" "$OUT/gpu-check.log" 2>/dev/null
  # Samples make the database large: above 15 MiB (a --suite all run) it
  # travels compressed, as tuning.db.gz.
  if [ -f "$WORK/tuning.db" ]; then
    if [ "$(stat -c %s "$WORK/tuning.db")" -gt $((15 << 20)) ]; then
      gzip -c "$WORK/tuning.db" >"$OUT/tuning.db.gz"
    else
      cp "$WORK/tuning.db" "$OUT/tuning.db"
    fi
  fi
  tar czf "$OUT/report.tar.gz" -C "$WORK" report 2>/dev/null
}
trap pack EXIT
trap 'exit 143' TERM INT
step() { # name logdir timeout command...
  local name=$1 dir=$2 t=$3
  shift 3
  local start=$SECONDS
  echo "== $name" | tee -a "$R/summary.txt"
  timeout --kill-after=10 "$t" "$@" >"$dir/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - start))s" | tee -a "$R/summary.txt"
  [ $rc -ne 0 ] && status=1
  tail -n 60 "$dir/$name.log"
  return 0
}
if [ ! -x "$LLMIR" ]; then
  echo "no llmir at $LLMIR: run 'make gpu-bundle' (or 'make static') first" >&2
  exit 2
fi
{
  date -u
  nvidia-smi
  nvcc --version
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  nproc
} >"$R/env.txt" 2>&1
step fingerprint "$WORK" 120 "$LLMIR" cuda fingerprint
cat "$WORK/fingerprint.log" >>"$R/summary.txt"
# Each generator's default source compiled on its own: pinpoints a source
# nvcc rejects even when the harness (and so everything after) cannot run.
emit_compile() {
  local dir=$R/emit i=0 pids=() spec arch
  mkdir -p "$dir"
  # The builder's own target flag (sm_90 builds for sm_90a, whose wgmma
  # the prefill GEMM uses), as the fingerprint lists it.
  arch=$(grep -oE '"-(gencode=[^"]+|arch=[^"]+)"' "$WORK/fingerprint.log" | head -1 | tr -d '"')
  arch=${arch:--gencode=arch=compute_90a,code=sm_90a}
  for spec in 'gemv:M=1,N=4096,K=4096' 'gemv:M=16,N=4096,K=14336' 'cublas_gemv:M=16,N=4096,K=4096' \
    'gemm:M=512,N=4096,K=4096' 'gemm:M=77,N=130,K=264' 'cublas_gemm:M=512,N=4096,K=4096' \
    'paged_attention:B=32,QH=32,KVH=8,D=128,BS=16,ctx=4096' 'paged_attention:B=5,QH=8,KVH=2,D=64,BS=7,ctx=300' \
    'rms_norm:M=16,H=4096' 'silu_mul:M=16,I=14336' 'rope:T=1,H=32,D=128' 'append_kv:T=16,KVH=8,D=128,BS=16'; do
    "$LLMIR" cuda emit "$spec" >"$dir/$i.cu" || return 1
    (nvcc -O3 "$arch" -std=c++17 -shared -Xcompiler -fPIC -o "/tmp/emit-$i.so" "$dir/$i.cu" -lcublas >"$dir/$i.log" 2>&1 &&
      echo "ok $spec" || { echo "FAIL $spec"; cat "$dir/$i.log"; }) &
    pids+=($!)
    i=$((i + 1))
  done
  wait "${pids[@]}"
}
echo "== emit-compile" | tee -a "$R/summary.txt"
emit_compile 2>&1 | head -c 20000 | tee -a "$R/summary.txt" >/dev/null
grep -E '^(ok|FAIL)' "$R/summary.txt"
step check "$R" "$CHECK_TIMEOUT" "$LLMIR" cuda check --out "$WORK/check" $CHECK_ARGS
echo "== sdpa" | tee -a "$R/summary.txt"
timeout "$SDPA_TIMEOUT" python3 scripts/sdpa_baseline.py >"$R/sdpa.json" 2>"$WORK/sdpa.log" || { echo "sdpa baseline failed" | tee -a "$R/summary.txt"; status=1; }
tee -a "$R/summary.txt" <"$WORK/sdpa.log"
sdpa=()
[ -s "$R/sdpa.json" ] && sdpa=(--sdpa "$R/sdpa.json")
rm -f "$WORK/tuning.db"
step bench "$R" "$BENCH_TIMEOUT" "$LLMIR" --db "$WORK/tuning.db" cuda bench --out "$WORK/bench" "${sdpa[@]}" $BENCH_ARGS
for f in report.md report.json; do [ -f "$WORK/bench/$f" ] && cp "$WORK/bench/$f" "$R/$f"; done
[ -f "$R/report.md" ] && cat "$R/report.md"
# Each tuned function gets its own database: the bench's records of the
# same workloads would count against its trial budget.
tuned=0
for fn in $TUNE_FUNCTIONS; do
  rm -f "$WORK/tune-$fn.db"
  step "tune-$fn" "$R" "$TUNE_TIMEOUT" "$LLMIR" --db "$WORK/tune-$fn.db" tune --target cuda --preset llama-3-8b --function "$fn" $TUNE_ARGS
  if [ -f "$WORK/tune-$fn.db" ]; then
    step "merge-$fn" "$R" 60 "$LLMIR" --db "$WORK/tuning.db" db merge "$WORK/tune-$fn.db"
    tuned=1
  fi
done
if [ $tuned = 1 ]; then
  step compile "$R" 120 "$LLMIR" --db "$WORK/tuning.db" compile --target cuda --preset llama-3-8b --no-precompiled --gpu sm_90 -o "$WORK/compile"
  [ -f "$WORK/compile/manifest.json" ] && cp "$WORK/compile/manifest.json" "$R/manifest.json"
fi
exit $status
