#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on the decode-attention shapes of
`llmir cuda bench`, with K and V stored contiguously ([batch, kv_heads,
context, head_dim], bf16): the baseline the paged kernels are compared to;
and on the causal prefill shapes (is_causal, q, k and v of the same prompt
length, [batch, heads, seq, head_dim]): the baseline of the prefill
attention kernel (cuda_attention).

Timed like llmir's harness: CUDA events around each call, the L2 flushed
(a 2×L2 buffer read, so that no dirty lines are written back during the
timed call) before every call, warm-up first, all samples kept. Every SDPA
backend PyTorch offers for the shape is timed and reported; `llmir cuda
bench --sdpa` compares with the fastest.

The backends are timed in --rounds rounds, one after another within each
round, and median_s is the median of the rounds' medians: on an H100 the
first timing of a process (or one right after other heavy work) came out
up to 15% slow (207 µs where later rounds gave 179), and a warm-up of 25 ms
did not cure it, so the warm-up is 200 ms and no single run decides.

Usage: python3 scripts/sdpa_baseline.py [--budget-ms 200] [--rounds 3] [--shapes all|decode|prefill] > sdpa.json
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

# (batch, q_heads, kv_heads, head_dim, context, causal prefill): llama-3-8b
# decode (one query per sequence), and its causal prefill of 512 and 4096
# tokens (context queries over context keys).
SHAPES = [(32, 32, 8, 128, 4096, False), (1, 32, 8, 128, 512, True), (1, 32, 8, 128, 4096, True)]


def time_fn(fn, flush, budget_s, warmup_s, min_samples=5):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples, total, warm = [], 0.0, 0.0
    while warm < warmup_s:
        flush.max()
        start.record()
        fn()
        end.record()
        end.synchronize()
        warm += start.elapsed_time(end) / 1e3
    while total < budget_s or len(samples) < min_samples:
        flush.max()
        start.record()
        fn()
        end.record()
        end.synchronize()
        s = start.elapsed_time(end) / 1e3
        samples.append(s)
        total += s
    return samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-ms", type=float, default=200, help="timed budget per backend and round")
    ap.add_argument("--warmup-ms", type=float, default=200, help="warm-up per backend and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all backends; median of the rounds' medians")
    ap.add_argument("--shapes", choices=["all", "decode", "prefill"], default="all", help="which shapes to time")
    args = ap.parse_args()
    if args.rounds < 1 or args.budget_ms <= 0 or args.warmup_ms < 0:
        ap.error("--rounds must be ≥ 1, --budget-ms > 0 and --warmup-ms ≥ 0")
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 50 << 20) or (50 << 20)
    flush = torch.ones(2 * l2 // 4, dtype=torch.int32, device=dev)
    results = []
    for b, qh, kvh, d, ctx, causal in SHAPES:
        if args.shapes != "all" and causal != (args.shapes == "prefill"):
            continue
        g = torch.Generator(device=dev).manual_seed(1)
        q = torch.rand(b, qh, ctx if causal else 1, d, device=dev, dtype=torch.bfloat16, generator=g) * 2 - 1
        k = torch.rand(b, kvh, ctx, d, device=dev, dtype=torch.bfloat16, generator=g) * 2 - 1
        v = torch.rand(b, kvh, ctx, d, device=dev, dtype=torch.bfloat16, generator=g) * 2 - 1
        backends = [("default", None)]
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            backends += [
                ("flash", SDPBackend.FLASH_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ]
        except ImportError:
            sdpa_kernel = None
        runnable = []
        for name, be in backends:
            def call(q=q, k=k, v=v, causal=causal):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)

            if be is None:
                fn = call
            else:
                def fn(be=be, call=call):
                    with sdpa_kernel(be):
                        return call()
            try:
                fn()
                torch.cuda.synchronize()
            except Exception as e:  # a backend that does not support the shape
                print(f"sdpa {name} causal={causal}: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
                continue
            runnable.append((name, fn))
        rounds = {name: [] for name, _ in runnable}
        for r in range(args.rounds):
            for name, fn in runnable:
                s = time_fn(fn, flush, args.budget_ms / 1e3, args.warmup_ms / 1e3)
                rounds[name].append(s)
                print(f"sdpa {name} ctx={ctx} causal={causal} round {r + 1}: {statistics.median(s) * 1e6:.1f} us", file=sys.stderr)
        for name, _ in runnable:
            meds = [statistics.median(s) for s in rounds[name]]
            med = statistics.median(meds)
            row = {
                "batch": b, "q_heads": qh, "kv_heads": kvh, "head_dim": d, "context": ctx,
                "median_s": med, "min_s": min(min(s) for s in rounds[name]),
                "samples": sum(len(s) for s in rounds[name]), "round_medians_s": meds,
                "torch": torch.__version__, "backend": name,
                "gbps": 2 * b * kvh * ctx * d * 2 / med / 1e9,
            }
            if causal:
                # q, k, v and out once; the causal pairs' multiply-adds.
                row.update(seq=ctx, causal=True, gbps=2 * b * ctx * d * (2 * qh + 2 * kvh) / med / 1e9,
                           tflops=4 * b * qh * d * (ctx * (ctx + 1) // 2) / med / 1e12)
            results.append(row)
            print(f"sdpa {name} ctx={ctx} causal={causal}: {med * 1e6:.1f} us (median of {len(meds)} rounds)", file=sys.stderr)
    json.dump({"device": props.name, "results": results}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
