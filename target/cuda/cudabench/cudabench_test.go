package cudabench

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cuda"
	cudakernels "llmir/target/cuda/kernels"
)

func TestParseSDPA(t *testing.T) {
	good := `{"device": "NVIDIA H100", "results": [{"batch": 32, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "context": 4096, "median_s": 1.4e-4, "min_s": 1.3e-4, "samples": 900, "torch": "2.8.0", "backend": "flash", "gbps": 3800}]}`
	rs, err := ParseSDPA([]byte(good))
	if err != nil || len(rs) != 1 || rs[0].Backend != "flash" || rs[0].MedianS != 1.4e-4 {
		t.Fatalf("ParseSDPA = %+v, %v", rs, err)
	}
	for _, bad := range []string{`{"results": [{"batch": 32}]}`, `[1, 2]`, `{"results": [{"batch": 1, "q_heads": 1, "kv_heads": 1, "head_dim": 8, "context": 1, "median_s": -1}]}`} {
		if _, err := ParseSDPA([]byte(bad)); err == nil {
			t.Errorf("ParseSDPA(%s) accepted", bad)
		}
	}
}

func ok(median float64) target.Measurement {
	m := target.Measurement{Status: target.StatusOK}
	m.SetSamples([]float64{median, median, median})
	return m
}

// TestRelate checks the ratios the goals are stated in.
func TestRelate(t *testing.T) {
	a := cudakernels.PagedAttention{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: 16, Context: 4096}
	r := &Row{Kernel: a.Name(), Bytes: 4e8}
	r.Trials = []Trial{{ID: "t0", Default: true, Measurement: ok(2e-4)}, {ID: "t1", Measurement: ok(1e-4)}}
	r.Default, r.Best = &r.Trials[0], &r.Trials[1]
	o := Options{SDPA: []SDPAResult{
		{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, Context: 4096, MedianS: 1.5e-4, Backend: "default"},
		{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, Context: 4096, MedianS: 1.2e-4, Backend: "flash"},
		{Batch: 16, QHeads: 32, KVHeads: 8, HeadDim: 128, Context: 4096, MedianS: 1e-5},
	}}
	o.Bandwidth.CopyGBps = 5000
	relate(r, Task{Kernel: a}, o)
	if r.BestGBps != 4000 || r.CopyFraction != 0.8 || r.DefaultGBps != 2000 {
		t.Errorf("rates: %+v", r)
	}
	if r.SDPAMedian != 1.2e-4 || r.VsSDPA != 1.2 {
		t.Errorf("SDPA: median %g ratio %g, want the fastest backend 1.2e-4 and 1.2", r.SDPAMedian, r.VsSDPA)
	}
	g := cudakernels.GEMV{M: 1, N: 8, K: 8}
	rg := &Row{Kernel: g.Name(), Bytes: 1e6, Trials: []Trial{{ID: "t0", Default: true, Measurement: ok(1e-5)}}}
	rg.Default, rg.Best = &rg.Trials[0], &rg.Trials[0]
	rg.Baseline = &Trial{ID: "baseline", Measurement: ok(1.5e-5)}
	relate(rg, Task{Kernel: g}, Options{})
	if rg.VsBaseline != 1.5 || rg.CopyFraction != 0 {
		t.Errorf("baseline ratio %g, copy fraction %g", rg.VsBaseline, rg.CopyFraction)
	}
	// A GEMM's rate in TFLOP/s: 2·512·4096·4096 flops in 100 µs.
	gm := cudakernels.GEMM{M: 512, N: 4096, K: 4096}
	rm := &Row{Kernel: gm.Name(), Bytes: gm.Bytes(), Trials: []Trial{{ID: "t0", Default: true, Measurement: ok(1e-4)}}}
	rm.Default, rm.Best = &rm.Trials[0], &rm.Trials[0]
	relate(rm, Task{Kernel: gm}, Options{})
	if want := gm.FLOPs() / 1e-4 / 1e12; rm.BestTFLOPS != want || !strings.Contains(rm.Line(), "172 TFLOP/s") {
		t.Errorf("gemm: %g TFLOP/s, want %g; line %s", rm.BestTFLOPS, want, rm.Line())
	}
	rep := &Report{Rows: []Row{*r, *rg, *rm}}
	md := rep.Markdown()
	for _, want := range []string{"| " + a.Name() + " | 200.00 | 100.00 | 4000 | 80% |", "1.20×", "1.50×", "| 172 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if f := rep.Failed(); len(f) != 0 {
		t.Errorf("Failed() = %v", f)
	}
	rg.Failures = []string{"t3 (wrong_result): relative L2 error 0.5"}
	rep = &Report{Rows: []Row{*rg}}
	if f := rep.Failed(); len(f) != 1 || !strings.Contains(f[0], "wrong_result") {
		t.Errorf("Failed() = %v", f)
	}
}

func TestSuites(t *testing.T) {
	decode, err := Llama3Decode()
	if err != nil {
		t.Fatal(err)
	}
	prefill, err := Llama3Prefill()
	if err != nil {
		t.Fatal(err)
	}
	for name, tasks := range map[string][]Task{"llama3": decode, "prefill": prefill, "conformance": Conformance()} {
		seen := map[string]bool{}
		for _, task := range tasks {
			if _, err := task.Kernel.Def(); err != nil {
				t.Errorf("%s: %s: %v", name, task.Kernel.Name(), err)
			}
			if seen[task.Kernel.Name()] {
				t.Errorf("%s: %s twice", name, task.Kernel.Name())
			}
			seen[task.Kernel.Name()] = true
		}
	}
	// The suite's kernels answer with IR workloads; relate must still see
	// attention behind the wrapper to pair it with SDPA.
	for _, task := range decode {
		if _, ok := cudakernels.Unwrap(task.Kernel).(cudakernels.PagedAttention); !ok {
			continue
		}
		r := &Row{Kernel: task.Kernel.Name(), Bytes: 4e8, Trials: []Trial{{ID: "t0", Default: true, Measurement: ok(1e-4)}}}
		r.Default, r.Best = &r.Trials[0], &r.Trials[0]
		relate(r, task, Options{SDPA: []SDPAResult{{Batch: 32, QHeads: 32, KVHeads: 8, HeadDim: 128, Context: 4096, MedianS: 2e-4}}})
		if r.VsSDPA != 2 {
			t.Errorf("%s: vs SDPA %g, want 2", task.Kernel.Name(), r.VsSDPA)
		}
	}
	// Per batch (1, 16): rms_norm, add, silu, mul, five GEMVs (q/o, k/v,
	// gate/up, down, lm_head), rope of q and of k, append_kv, embedding,
	// argmax; attention at four block sizes.
	if n := len(decode); n != 32 {
		t.Errorf("llama3 decode suite has %d kernels, want 32", n)
	}
	kinds := map[string]int{}
	for _, task := range decode {
		kinds[fmt.Sprintf("%T", cudakernels.Unwrap(task.Kernel))]++
	}
	if kinds["cudakernels.Rope"] != 4 || kinds["cudakernels.AppendKV"] != 2 || kinds["cudakernels.Embedding"] != 2 || kinds["cudakernels.Argmax"] != 2 {
		t.Errorf("decode suite kernels by type %v: want 4 Rope, 2 AppendKV, 2 Embedding and 2 Argmax", kinds)
	}
	gemms, attn := 0, 0
	for _, task := range prefill {
		switch cudakernels.Unwrap(task.Kernel).(type) {
		case cudakernels.GEMM:
			gemms++
			if _, ok := task.Baseline.(cudakernels.GEMMCuBLAS); !ok {
				t.Errorf("%s: baseline %T, want cuBLAS", task.Kernel.Name(), task.Baseline)
			}
		case cudakernels.Rope, cudakernels.AppendKV:
		case cudakernels.PrefillAttention:
			attn++
			// Paired with SDPA's causal row of its prompt length only,
			// not with a decode row of the same heads and context.
			a := cudakernels.Unwrap(task.Kernel).(cudakernels.PrefillAttention)
			r := &Row{Kernel: task.Kernel.Name(), Trials: []Trial{{ID: "t0", Default: true, Measurement: ok(1e-4)}}}
			r.Default, r.Best = &r.Trials[0], &r.Trials[0]
			relate(r, task, Options{SDPA: []SDPAResult{
				{Batch: 1, QHeads: 32, KVHeads: 8, HeadDim: 128, Context: a.Seq, MedianS: 5e-4},
				{Batch: 1, QHeads: 32, KVHeads: 8, HeadDim: 128, Context: 512, Seq: 512, Causal: true, MedianS: 2e-4},
			}})
			if want := map[int64]float64{512: 2, 4096: 0}[a.Seq]; r.VsSDPA != want {
				t.Errorf("%s: vs SDPA %g, want %g", task.Kernel.Name(), r.VsSDPA, want)
			}
		default:
			t.Errorf("prefill suite has %s", task.Kernel.Name())
		}
	}
	if gemms != 17 || attn != 2 || len(prefill) != 25 {
		t.Errorf("prefill suite has %d kernels, %d GEMMs, %d attention; want 25: 17 GEMMs (4 M × 4 N×K, and the lm_head at M=512), rope q, rope k, append_kv and attention at 512 and 4096 tokens", len(prefill), gemms, attn)
	}
}

// TestSuiteKeysAreIRKeys: the suites' records must land under the keys a
// compile of the imported model looks up (the IR workload with threads=1),
// not under keys of hand-made shapes.
func TestSuiteKeysAreIRKeys(t *testing.T) {
	decode, err := Llama3Decode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := hf.ImportPreset("llama-3-8b", hf.Options{DType: "bf16"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ir.InferShapes(m); err != nil {
		t.Fatal(err)
	}
	groups, err := ir.Partition(m, map[string]int64{"batch": 1})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, task := range ir.GroupTasks(groups) {
		if k, err := cudakernels.FromWorkload(task.Workload); err == nil {
			want[search.WorkloadOf(k, 1).Key] = true
		}
	}
	found := 0
	for _, task := range decode {
		if want[search.WorkloadOf(task.Kernel, 1).Key] {
			found++
		}
	}
	// Every batch-1 decode workload with a CUDA kernel (rope of q and k,
	// append_kv, the embedding and argmax included) except attention
	// (measured at batch 32 in the suite) and the prefill ones.
	if found != 14 {
		t.Errorf("%d of the suite's tasks have IR keys of the batch-1 module, want 14", found)
	}
}

// TestPrepareSamplesValidPoints: the check's candidates are the default
// and samples of the valid points only, so no kernel of the conformance
// suite (whose shapes make generators refuse many points) hands a refused
// point to nvcc, and each row knows the size of its space. Runs without a
// GPU: prepare only prints sources.
func TestPrepareSamplesValidPoints(t *testing.T) {
	hw := cudakernels.Hardware(cuda.H100)
	refusing := 0
	for i, task := range Conformance() {
		pr, err := prepare(task, cuda.H100, hw, Options{Samples: 6, Seed: 1}, uint64(i))
		if err != nil {
			t.Fatalf("%s: %v", task.Kernel.Name(), err)
		}
		for _, tr := range pr.trials {
			if tr.Measurement.Status != "" {
				t.Errorf("%s %s: refused before the build: %s", task.Kernel.Name(), tr.ID, tr.Measurement.Error)
			}
		}
		if want := len(pr.trials); task.Baseline != nil {
			want++
			if len(pr.cands) != want {
				t.Errorf("%s: %d candidates for %d trials and a baseline", task.Kernel.Name(), len(pr.cands), len(pr.trials))
			}
		}
		if pr.spaceTotal > 0 && pr.spaceValid < pr.spaceTotal {
			refusing++
		}
		switch task.Kernel.(type) {
		case cudakernels.LoopNestGEMV, cudakernels.LoopNestGEMM, cudakernels.LoopNestElementwise:
			// Loop-nest spaces (tiles, not knobs) are not enumerated.
		default:
			if pr.spaceTotal == 0 {
				t.Errorf("%s: design space not counted", task.Kernel.Name())
			}
		}
	}
	if refusing < 5 {
		t.Errorf("only %d conformance kernels have refused points: the test shapes no longer exercise the predicate", refusing)
	}
}

func TestParsePoints(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []string
		err  string
	}{
		{"wg_m=128,wg_n=128", []string{"wg_m=128,wg_n=128"}, ""},
		{" stages=6 ; wg_n=256, wg_m=128 ;", []string{"stages=6", "wg_m=128,wg_n=256"}, ""},
		{"wg_m", nil, `"wg_m" is not name=value`},
		{"=3", nil, "not name=value"},
		{"wg_m=big", nil, `wg_m: value "big" is not an integer`},
		{"wg_m=64,wg_m=128", nil, "wg_m given twice"},
		{" ; ", nil, "none in"},
	} {
		ps, err := ParsePoints(tc.spec)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err = %v, want %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.spec, err)
		}
		var got []string
		for _, p := range ps {
			got = append(got, p.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: points %v, want %v", tc.spec, got, tc.want)
		}
	}
}

// TestKnobPoints: a point keeps the kernels that have its knobs, becomes a
// trial whose trace carries the point over the default's other values,
// labels the default when it equals it, and unknown knobs or values are
// errors that name them.
func TestKnobPoints(t *testing.T) {
	hw := cudakernels.Hardware(cuda.H100)
	gemm := cudakernels.GEMM{M: 1024, N: 14336, K: 4096}
	attn := cudakernels.PagedAttention{Batch: 2, QHeads: 8, KVHeads: 2, HeadDim: 64, BlockSize: 16, Context: 64}
	tasks := []Task{{Kernel: gemm}, {Kernel: attn}, {Kernel: cudakernels.LoopNestGEMM{GEMM: gemm}}}
	def := Point{"wg_m": 128, "wg_n": 256} // the default tile at this shape (448 blocks)
	pts := []Point{{"wg_m": 128, "wg_n": 128, "stages": 6}, def}
	keep, err := SelectPoints(tasks, pts, hw)
	if err != nil {
		t.Fatal(err)
	}
	if len(keep) != 1 || keep[0].Kernel.Name() != gemm.Name() {
		t.Fatalf("kept %d tasks, want only the wgmma GEMM (the loop-nest GEMM's schedules are not knob lists)", len(keep))
	}
	pr, err := prepare(keep[0], cuda.H100, hw, Options{Points: pts}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pr.trials) != 2 {
		t.Fatalf("%d trials, want the default and one point", len(pr.trials))
	}
	if d := pr.trials[0]; !d.Default || d.Point != def.String() {
		t.Errorf("default trial %+v: want it labelled %s", d, def)
	}
	ks, _ := cudakernels.NamedKnobs(gemm)
	tr, err := schedule.ParseTrace(pr.trials[1].Trace)
	if err != nil {
		t.Fatal(err)
	}
	s, err := schedule.Replay(mustDef(t, gemm), tr)
	if err != nil {
		t.Fatalf("replay point trace: %v", err)
	}
	got, err := ks.Read(s)
	if err != nil {
		t.Fatal(err)
	}
	if got["wg_m"] != 128 || got["wg_n"] != 128 || got["stages"] != 6 || got["mma"] != 2 || got["group_m"] != 8 {
		t.Errorf("point trial knobs %v: want wg 128×128, 6 stages over the default's mma=2, group_m=8", got)
	}
	if pr.trials[1].Point != "stages=6,wg_m=128,wg_n=128" {
		t.Errorf("point label %q", pr.trials[1].Point)
	}
	for _, tc := range []struct {
		p    Point
		want string
	}{
		{Point{"bm": 128}, `no kernel of the suite has a knob "bm"`},
		{Point{"wg_n": 96}, "wg_n=96 is not in the domain [64 128 256]"},
		{Point{"warps": 8, "wg_m": 64}, "no kernel of the suite has all the knobs"},
	} {
		if _, err := SelectPoints(tasks, []Point{tc.p}, hw); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.p, err, tc.want)
		}
	}
	// A point on attention knobs keeps the attention kernel.
	if keep, err := SelectPoints(tasks, []Point{{"warps": 8}}, hw); err != nil || len(keep) != 1 || keep[0].Kernel.Name() != attn.Name() {
		t.Errorf("warps=8: kept %v, %v; want the attention kernel", keep, err)
	}
}

func mustDef(t *testing.T, k cudakernels.Kernel) *schedule.Def {
	t.Helper()
	d, err := k.Def()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPointLines: each knob-override trial is reported with its ratio to
// the default and the baseline (a failed one with its status), in the log
// lines and in the Markdown report.
func TestPointLines(t *testing.T) {
	g := cudakernels.GEMM{M: 1024, N: 14336, K: 4096}
	r := Row{Kernel: g.Name(), Trials: []Trial{
		{ID: "t0", Default: true, Point: "wg_m=128,wg_n=256", Measurement: ok(2e-4)},
		{ID: "t1", Point: "stages=6,wg_m=128,wg_n=128", Measurement: ok(2.5e-4)},
		{ID: "t2", Measurement: ok(1e-4)},
		{ID: "t3", Point: "wg_m=64,wg_n=256", Measurement: target.Measurement{Status: target.StatusBuildError}},
	}}
	r.Default = &r.Trials[0]
	r.Baseline = &Trial{ID: "baseline", Measurement: ok(1.6e-4)}
	want := []string{
		"point wg_m=128,wg_n=256: 200.00us 1.000x default 0.800x baseline",
		"point stages=6,wg_m=128,wg_n=128: 250.00us 0.800x default 0.640x baseline",
		"point wg_m=64,wg_n=256: build_error",
	}
	if got := r.PointLines(); !slices.Equal(got, want) {
		t.Errorf("PointLines:\n%q\nwant\n%q", got, want)
	}
	md := (&Report{Rows: []Row{r}}).Markdown()
	if !strings.Contains(md, "Knob points (--knobs):") || !strings.Contains(md, "- "+g.Name()+" "+want[1]) {
		t.Errorf("markdown lacks the points:\n%s", md)
	}
	if md := (&Report{Rows: []Row{{Kernel: "k", Trials: []Trial{{ID: "t0", Default: true, Measurement: ok(1e-5)}}}}}).Markdown(); strings.Contains(md, "Knob points") {
		t.Errorf("markdown without points has a points section:\n%s", md)
	}
}

// TestReadBoundRow: a memory-bound row's plain read is related to the
// kernel (% read = read median / best median) and to the baseline
// (read÷base = baseline median / read median), and printed in the log
// line, the Markdown table, the knob-point lines and the JSON.
func TestReadBoundRow(t *testing.T) {
	g := cudakernels.GEMV{M: 16, N: 1024, K: 4096}
	rb := &cuda.ReadBound{Bytes: int64(g.Bytes()), BlocksPerSM: 4, Measurement: ok(6e-6)}
	rb.Measurement.SetSamples([]float64{6e-6, 6e-6, 6.2e-6})
	r := &Row{Kernel: g.Name(), Bytes: g.Bytes(), Read: rb, Trials: []Trial{
		{ID: "t0", Default: true, Measurement: ok(8e-6)},
		{ID: "t1", Point: "stages=6", Measurement: ok(7.5e-6)},
	}}
	r.Default, r.Best = &r.Trials[0], &r.Trials[1]
	r.Baseline = &Trial{ID: "baseline", Measurement: ok(9e-6)}
	relate(r, Task{Kernel: g}, Options{})
	if r.ReadFraction != 6e-6/7.5e-6 || r.ReadVsBaseline != 9e-6/6e-6 {
		t.Errorf("read fraction %g (want 0.8), read÷base %g (want 1.5)", r.ReadFraction, r.ReadVsBaseline)
	}
	if l := r.Line(); !strings.Contains(l, "read 6.00us (80.0% read) read/base 1.50x") {
		t.Errorf("line lacks the read bound: %s", l)
	}
	if pl := r.PointLines(); len(pl) != 1 || !strings.HasSuffix(pl[0], " 80.0% read") {
		t.Errorf("point lines %q lack the share of the read", pl)
	}
	md := (&Report{Rows: []Row{*r}}).Markdown()
	if !strings.Contains(md, "| read µs | % read | read÷base |") || !strings.Contains(md, "| 6.00 | 80.0% | 1.50× |") {
		t.Errorf("markdown lacks the read columns:\n%s", md)
	}
	js, err := json.Marshal((&Report{Rows: []Row{*r}}).WithoutSamples())
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	br := back.Rows[0]
	if br.Read == nil || br.Read.BlocksPerSM != 4 || br.Read.Measurement.Median != 6e-6 || br.Read.Measurement.Samples != nil ||
		br.ReadFraction != r.ReadFraction || br.ReadVsBaseline != r.ReadVsBaseline {
		t.Errorf("JSON round trip lost the read bound: %s", js)
	}
	if r.Read.Measurement.Samples == nil {
		t.Error("WithoutSamples stripped the report's own read samples")
	}
	// No baseline, no ratio to it; a failed read is said so, not dropped.
	r2 := &Row{Kernel: "cuda_rms_norm/M=1,H=4096/bf16", Bytes: 16400, Read: rb, Trials: []Trial{{ID: "t0", Default: true, Measurement: ok(3e-6)}}}
	r2.Default, r2.Best = &r2.Trials[0], &r2.Trials[0]
	relate(r2, Task{Kernel: cudakernels.RMSNorm{M: 1, H: 4096}}, Options{})
	if r2.ReadFraction != 2 || r2.ReadVsBaseline != 0 || strings.Contains(r2.Line(), "read/base") {
		t.Errorf("row without baseline: fraction %g, read÷base %g, line %s", r2.ReadFraction, r2.ReadVsBaseline, r2.Line())
	}
	r3 := Row{Kernel: "k", ReadError: "read bound of 16 bytes: harness: exit status 4", Trials: r2.Trials, Default: &r2.Trials[0]}
	if !strings.Contains(r3.Line(), "read failed: read bound of 16 bytes") {
		t.Errorf("line hides the failed read: %s", r3.Line())
	}
	if md := (&Report{Rows: []Row{r3}}).Markdown(); !strings.Contains(md, "| failed |") || !strings.Contains(md, "- k: read bound of 16 bytes") {
		t.Errorf("markdown hides the failed read:\n%s", md)
	}
}

// TestMemoryBound: the read bound is timed beside every decode kernel and
// the prefill rope/append_kv, not beside the compute-bound GEMMs.
func TestMemoryBound(t *testing.T) {
	decode, err := Llama3Decode()
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range decode {
		if !memoryBound(task.Kernel) {
			t.Errorf("%s: not memory-bound", task.Kernel.Name())
		}
	}
	prefill, err := Llama3Prefill()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range prefill {
		if memoryBound(task.Kernel) {
			n++
		}
	}
	if n != 6 {
		t.Errorf("%d memory-bound prefill kernels, want 6 (rope q, rope k, append_kv at 512 and 4096 tokens)", n)
	}
	if memoryBound(cudakernels.LoopNestGEMM{GEMM: cudakernels.GEMM{M: 16, N: 8, K: 16}}) {
		t.Error("LoopNestGEMM counted memory-bound")
	}
}
