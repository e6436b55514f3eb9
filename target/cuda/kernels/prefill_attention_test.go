package cudakernels

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/kernels"
	"llmir/search"
	"llmir/target/cuda"
)

// TestPrefillAttentionReference checks the kernel's reference (the CPU
// kernel's) against causal attention written out from the [B, S, H, D]
// layout, on a GQA shape.
func TestPrefillAttentionReference(t *testing.T) {
	a := PrefillAttention{Batch: 2, Seq: 7, QHeads: 6, KVHeads: 2, HeadDim: 32}
	B, S, HQ, HKV, D := int(a.Batch), int(a.Seq), int(a.QHeads), int(a.KVHeads), int(a.HeadDim)
	rng := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.Float64()*2 - 1
		}
		return v
	}
	q, k, v := rnd(B*S*HQ*D), rnd(B*S*HKV*D), rnd(B*S*HKV*D)
	got := a.Reference([][]float64{q, k, v})[0]
	for b := range B {
		for i := range S {
			for h := range HQ {
				kh := h / (HQ / HKV)
				w := make([]float64, i+1)
				var sum float64
				for j := range i + 1 {
					var s float64
					for e := range D {
						s += q[((b*S+i)*HQ+h)*D+e] * k[((b*S+j)*HKV+kh)*D+e]
					}
					w[j] = math.Exp(s / math.Sqrt(float64(D)))
					sum += w[j]
				}
				for e := range D {
					var o float64
					for j := range i + 1 {
						o += w[j] * v[((b*S+j)*HKV+kh)*D+e]
					}
					if g := got[((b*S+i)*HQ+h)*D+e]; math.Abs(g-o/sum) > 1e-5 {
						t.Fatalf("out[%d,%d,%d,%d] = %g, want %g", b, i, h, e, g, o/sum)
					}
				}
			}
		}
	}
}

// TestPrefillAttentionSpace: the design space's points the generator
// takes (at head_dim 128 the 128-key tiles are refused for their
// registers, and with 32 rows per warp all but 32 keys; at head_dim 64
// only 32 rows per warp with 128 keys), the default's source, and the
// refusals' reasons.
func TestPrefillAttentionSpace(t *testing.T) {
	hw := Hardware(cuda.H100)
	for _, tc := range []struct {
		a            PrefillAttention
		valid, total int
	}{
		{PrefillAttention{Batch: 1, Seq: 512, QHeads: 32, KVHeads: 8, HeadDim: 128}, 12, 24},
		{PrefillAttention{Batch: 2, Seq: 77, QHeads: 4, KVHeads: 1, HeadDim: 64}, 20, 24},
	} {
		valid, total, err := SpaceSize(tc.a, hw)
		if err != nil || valid != tc.valid || total != tc.total {
			t.Errorf("%s: %d of %d points valid (%v), want %d of %d", tc.a.Name(), valid, total, err, tc.valid, tc.total)
		}
	}
	a := PrefillAttention{Batch: 1, Seq: 512, QHeads: 32, KVHeads: 8, HeadDim: 128}
	s, err := search.DefaultSchedule(a, hw)
	if err != nil {
		t.Fatal(err)
	}
	src, err := a.EmitCUDA(s, cuda.H100, Entry)
	if err != nil {
		t.Fatal(err)
	}
	// 4 warps × 16 rows, 64 keys in 2 stages of K and V (64 KiB), a grid
	// of 32 heads × 8 query tiles.
	for _, w := range []string{"constexpr int WARPS = 4, MT = 1, BQ = 64, BK = 64, PF = 2;", "constexpr int QTILES = 8;",
		"MaxDynamicSharedMemorySize, 65536)", "dim3(QH, QTILES, B)", "mma.sync.aligned.m16n8k16", "ldmatrix.sync.aligned.m8n8.x4.trans"} {
		if !strings.Contains(src, w) {
			t.Errorf("default source has no %q", w)
		}
	}
	for _, tc := range []struct {
		k         map[string]int64
		err, want string
	}{
		{map[string]int64{"warps": 4, "keys": 128, "stages": 2, "rows_per_warp": 16}, "176 fragment registers", ""},
		{map[string]int64{"warps": 4, "keys": 64, "stages": 2, "rows_per_warp": 32}, "208 fragment registers", ""},
		{map[string]int64{"warps": 8, "keys": 32, "stages": 3, "rows_per_warp": 16}, "", "MaxDynamicSharedMemorySize, 49152)"},
		// 3 stages × 32 keys × K and V × 256 bytes, then Q's 256 rows × 256 bytes.
		{map[string]int64{"warps": 8, "keys": 32, "stages": 3, "rows_per_warp": 32}, "", "MaxDynamicSharedMemorySize, 114688)"},
	} {
		src, err := a.EmitCUDA(chosen(t, a, tc.k), cuda.H100, Entry)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: err %v, want %q", tc.k, err, tc.err)
		}
		if err == nil && !strings.Contains(src, tc.want) {
			t.Errorf("%v: no %q in the source", tc.k, tc.want)
		}
	}
	if _, err := (PrefillAttention{Batch: 1, Seq: 8, QHeads: 2, KVHeads: 1, HeadDim: 96}).Def(); err == nil {
		t.Error("head_dim 96 accepted")
	}
}

// TestPrefillAttentionFromWorkload: llama-3-8b's prefill attention maps to
// the kernel at its shape under the IR key; the variants it does not
// compute are ErrNoKernel.
func TestPrefillAttentionFromWorkload(t *testing.T) {
	var w ir.Workload
	for _, task := range llamaTasks(t, map[string]int64{"batch": 1, "seq": 512}) {
		if strings.Join(task.Workload.Group, "+") == "llmir.attention" {
			w = task.Workload
		}
	}
	k, err := FromWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Unwrap(k), (PrefillAttention{Batch: 1, Seq: 512, QHeads: 32, KVHeads: 8, HeadDim: 128}); got != want {
		t.Errorf("kernel %+v, want %+v", got, want)
	}
	if k.Workload().Key() != w.Key() {
		t.Errorf("kernel key %s, IR key %s", k.Workload().Key(), w.Key())
	}
	qkv := func(dt string, s, kv int64) []ir.TensorSig {
		return []ir.TensorSig{sig(dt, 1, s, 4, 64), sig(dt, 1, kv, 2, 64), sig(dt, 1, kv, 2, 64)}
	}
	for name, bad := range map[string]ir.Workload{
		"not causal": {Inputs: qkv("bf16", 16, 16), Attrs: map[string]string{}},
		"window":     {Inputs: qkv("bf16", 16, 16), Attrs: map[string]string{"causal": "true", "sliding_window": "8 : i64"}},
		"scale":      {Inputs: qkv("bf16", 16, 16), Attrs: map[string]string{"causal": "true", "scale": "5.000000e-01 : f32"}},
		"f32":        {Inputs: qkv("f32", 16, 16), Attrs: map[string]string{"causal": "true"}},
		"kv_len":     {Inputs: qkv("bf16", 16, 32), Attrs: map[string]string{"causal": "true"}},
		"head_dim":   {Inputs: []ir.TensorSig{sig("bf16", 1, 16, 4, 48), sig("bf16", 1, 16, 2, 48), sig("bf16", 1, 16, 2, 48)}, Attrs: map[string]string{"causal": "true"}},
	} {
		bad.Group = []string{"llmir.attention"}
		in := bad.Inputs[0].Shape
		bad.Output = []ir.TensorSig{sig(bad.Inputs[0].DType, in...)}
		if _, err := FromWorkload(bad); !errors.Is(err, kernels.ErrNoKernel) {
			t.Errorf("%s: err %v, want ErrNoKernel", name, err)
		}
	}
	ok := ir.Workload{Group: []string{"llmir.attention"}, Inputs: qkv("bf16", 16, 16), Output: []ir.TensorSig{sig("bf16", 1, 16, 4, 64)},
		Attrs: map[string]string{"causal": "true", "scale": "1.250000e-01 : f32"}}
	if _, err := FromWorkload(ok); err != nil {
		t.Errorf("causal, scale 1/sqrt(64): %v", err)
	}
}
