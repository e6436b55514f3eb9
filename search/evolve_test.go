package search_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"llmir/costmodel"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cuda"
	cudakernels "llmir/target/cuda/kernels"
)

var testHW = kernels.Hardware{VectorBits: 512, Threads: 1, L1: 48 << 10, L2: 1 << 20, LLC: 32 << 20}

// fakeTrials draws n distinct schedules of k and gives them synthetic
// medians (the strategy only needs a ranking to breed from).
func fakeTrials(t *testing.T, k kernels.Kernel, n int, seed uint64) []search.Trial {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	seen := map[string]bool{}
	var out []search.Trial
	for i := 0; len(out) < n && i < 50*n; i++ {
		s, err := search.SampleSchedule(k, testHW, rng.Uint64())
		if err != nil {
			t.Fatal(err)
		}
		key, err := search.TraceKey(s)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(key)] {
			continue
		}
		seen[string(key)] = true
		m := target.Measurement{CandidateID: fmt.Sprint("t", len(out)), Status: target.StatusOK, Threads: 1}
		m.SetSamples([]float64{1e-6 * (1 + rng.Float64())})
		out = append(out, search.Trial{Index: len(out), Trace: json.RawMessage(key), Measurement: m})
	}
	return out
}

// TestEvolutionaryProposals: over prefill (GEMM) and decode (GEMV)
// linear spaces, every proposal replays to its key, proposals are
// distinct, and none is a trace already measured (observed) or in seen
// (the database); the model learns the observed trials.
func TestEvolutionaryProposals(t *testing.T) {
	for _, k := range []kernels.Linear{{M: 40, N: 96, K: 64}, {M: 3, N: 33, K: 16}} {
		t.Run(k.Name(), func(t *testing.T) {
			model := search.NewOnlineModel(nil)
			dev := search.CostDevice(testHW, nil)
			ev := search.NewEvolutionary(k, testHW, dev, "task", model, 5, search.EvolveOptions{Population: 48})
			obs := fakeTrials(t, k, 6, 1)
			ev.Observe(obs)
			if model.Trained() != 0 && model.Trained() != len(obs) {
				t.Errorf("model trained on %d, want 0 (below MinTrain) or %d", model.Trained(), len(obs))
			}
			seen := map[string]bool{}
			for _, tr := range obs {
				seen[string(tr.Trace)] = true
			}
			def, err := k.Def()
			if err != nil {
				t.Fatal(err)
			}
			all := map[string]bool{}
			for round := range 3 {
				props, err := ev.Propose(context.Background(), 6, seen)
				if err != nil {
					t.Fatal(err)
				}
				if len(props) == 0 {
					t.Fatalf("round %d: no proposals", round)
				}
				for _, p := range props {
					if seen[p.Key] || all[p.Key] {
						t.Fatalf("round %d: proposal repeats a measured or proposed trace", round)
					}
					all[p.Key] = true
					tr, err := schedule.ParseTrace([]byte(p.Key))
					if err != nil {
						t.Fatal(err)
					}
					s, err := schedule.Replay(def, tr)
					if err != nil {
						t.Fatalf("round %d: proposal does not replay: %v", round, err)
					}
					if key, _ := search.TraceKey(s); string(key) != p.Key {
						t.Fatalf("round %d: replayed key differs", round)
					}
					if _, err := search.NewCandidate("c", k, p.Schedule, testHW); err != nil {
						t.Fatalf("round %d: proposal does not lower: %v", round, err)
					}
				}
				// The tuner marks proposals seen once measured.
				for _, p := range props {
					seen[p.Key] = true
				}
			}
		})
	}
}

// TestEvolutionaryBreedsFromParents: with parents observed, most of a
// population differs from some parent in one or two decisions (mutation)
// or mixes two (crossover), i.e. it is not all fresh random draws.
func TestEvolutionaryBreedsFromParents(t *testing.T) {
	k := kernels.Linear{M: 40, N: 96, K: 64}
	obs := fakeTrials(t, k, 4, 2)
	ev := search.NewEvolutionary(k, testHW, search.CostDevice(testHW, nil), "task", nil, 9,
		search.EvolveOptions{Population: 64, RandomShare: 0.01, Epsilon: -1})
	ev.Observe(obs)
	props, err := ev.Propose(context.Background(), 16, map[string]bool{})
	if err != nil {
		t.Fatal(err)
	}
	decisions := func(key string) [][]int64 {
		tr, err := schedule.ParseTrace([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		var out [][]int64
		for _, in := range tr.Insts {
			if in.Decision != nil {
				out = append(out, in.Decision)
			}
		}
		return out
	}
	near := 0
	for _, p := range props {
		pd := decisions(p.Key)
		for _, o := range obs {
			od := decisions(string(o.Trace))
			if len(od) != len(pd) {
				continue
			}
			diff := 0
			for i := range od {
				if fmt.Sprint(od[i]) != fmt.Sprint(pd[i]) {
					diff++
				}
			}
			if diff <= 2 {
				near++
				break
			}
		}
	}
	if near < len(props)/2 {
		t.Errorf("%d of %d proposals within two decisions of a parent", near, len(props))
	}
}

// TestEvolutionaryTransfer: at cold start the first proposal leads with
// the sibling traces that lie in this kernel's space (another shape of the
// same op), skipping those that do not align (another op's trace) or are
// already measured, at most Opts.Transfer of them (in Transfer's order
// where the model scores them alike: the roofline cannot tell these
// schedules apart); later proposals and a
// strategy with parents of its own do not transfer; Transfer < 0 turns it
// off. BatchSize reports Opts.Batch (default DefaultEvolveBatch).
func TestEvolutionaryTransfer(t *testing.T) {
	k := kernels.RMSNorm{Rows: 16, H: 256, Eps: 1e-5}
	sibling := kernels.RMSNorm{Rows: 1, H: 256, Eps: 1e-5}
	key := func(k kernels.Kernel, seed uint64) json.RawMessage {
		s, err := search.SampleSchedule(k, testHW, seed)
		if err != nil {
			t.Fatal(err)
		}
		key, err := search.TraceKey(s)
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	other := key(kernels.Linear{M: 3, N: 33, K: 16}, 1) // another op: does not align
	sib1, sib2 := key(sibling, 1), key(sibling, 2)
	for seed := uint64(3); string(sib2) == string(sib1); seed++ {
		sib2 = key(sibling, seed)
	}
	dev := search.CostDevice(testHW, nil)
	for _, c := range []struct {
		name     string
		opts     search.EvolveOptions
		transfer []json.RawMessage
		seen     []json.RawMessage
		parents  bool
		want     []json.RawMessage
	}{
		{"default one", search.EvolveOptions{}, []json.RawMessage{other, sib1, sib2}, nil, false, []json.RawMessage{sib1}},
		{"two", search.EvolveOptions{Transfer: 2}, []json.RawMessage{sib1, other, sib2}, nil, false, []json.RawMessage{sib1, sib2}},
		{"seen skipped", search.EvolveOptions{}, []json.RawMessage{sib1, sib2}, []json.RawMessage{sib1}, false, []json.RawMessage{sib2}},
		{"off", search.EvolveOptions{Transfer: -1}, []json.RawMessage{sib1}, nil, false, nil},
		{"has parents", search.EvolveOptions{}, []json.RawMessage{sib1}, nil, true, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev := search.NewEvolutionary(k, testHW, dev, "task", nil, 7, c.opts)
			if ev.BatchSize() != search.DefaultEvolveBatch {
				t.Errorf("BatchSize %d, want %d", ev.BatchSize(), search.DefaultEvolveBatch)
			}
			ev.Transfer = c.transfer
			if c.parents {
				ev.Observe(fakeTrials(t, k, 3, 4))
			}
			seen := map[string]bool{}
			for _, s := range c.seen {
				seen[string(s)] = true
			}
			props, err := ev.Propose(context.Background(), 4, seen)
			if err != nil {
				t.Fatal(err)
			}
			if len(props) != 4 {
				t.Fatalf("%d proposals, want 4", len(props))
			}
			for i, w := range c.want {
				if props[i].Key != string(w) {
					t.Errorf("proposal %d is not transferred trace %d", i, i)
				}
			}
			if len(c.want) == 0 {
				// No transfer: the very proposals of a strategy without one.
				ref := search.NewEvolutionary(k, testHW, dev, "task", nil, 7, c.opts)
				if c.parents {
					ref.Observe(fakeTrials(t, k, 3, 4))
				}
				want, err := ref.Propose(context.Background(), 4, seen)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if props[i].Key != want[i].Key {
						t.Fatalf("proposal %d differs from a strategy without transfer", i)
					}
				}
			}
			again, err := ev.Propose(context.Background(), 4, map[string]bool{})
			if err != nil {
				t.Fatal(err)
			}
			if len(c.want) > 0 && again[0].Key == string(c.want[0]) {
				t.Error("second proposal leads with the transferred trace again")
			}
		})
	}
}

// TestEvolutionaryTransferRanked: of several transferred traces, the
// first proposal leads with the one the model scores highest on this
// kernel, wherever it stands in Transfer (the siblings come fastest
// first, and the fastest sibling is the smallest shape, not the nearest).
// GEMVs, whose schedules the roofline (a fresh model) tells apart.
func TestEvolutionaryTransferRanked(t *testing.T) {
	k := kernels.Linear{M: 1, N: 64, K: 64}
	sibling := kernels.Linear{M: 1, N: 128, K: 64}
	dev := search.CostDevice(testHW, nil)
	def, err := k.Def()
	if err != nil {
		t.Fatal(err)
	}
	// trace and score: a sibling's draw and the roofline's score of it
	// replayed on k.
	trace := func(seed uint64) (json.RawMessage, float64) {
		s, err := search.SampleSchedule(sibling, testHW, seed)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := search.TraceKey(s)
		if err != nil {
			t.Fatal(err)
		}
		r, err := schedule.Replay(def, s.Trace())
		if err != nil {
			t.Fatal(err)
		}
		f, err := costmodel.ScheduleFeatures(r, search.WorkOf(k), dev, k.Dims())
		if err != nil {
			t.Fatal(err)
		}
		return raw, (&costmodel.Roofline{}).Predict([][]float64{f})[0]
	}
	// Draws of distinct scores, worst first: the best comes last.
	var traces []json.RawMessage
	var scores []float64
	for seed := uint64(1); seed <= 16; seed++ {
		raw, sc := trace(seed)
		if !slices.Contains(scores, sc) {
			traces, scores = append(traces, raw), append(scores, sc)
		}
	}
	order := make([]int, len(traces))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(scores[a], scores[b]) })
	sorted := make([]json.RawMessage, len(order))
	for i, j := range order {
		sorted[i] = traces[j]
	}
	traces, best := sorted, len(sorted)-1
	if len(traces) < 3 {
		t.Fatalf("want 3 draws the roofline tells apart, got scores %v", scores)
	}
	ev := search.NewEvolutionary(k, testHW, dev, "task", search.NewOnlineModel(&costmodel.Roofline{}), 7, search.EvolveOptions{})
	ev.Transfer = traces
	props, err := ev.Propose(context.Background(), 4, map[string]bool{})
	if err != nil {
		t.Fatal(err)
	}
	if len(props) == 0 || props[0].Key != string(traces[best]) {
		t.Errorf("first proposal is not the best scored transferred trace (the last of %d)", len(traces))
	}
}

// TestEvolutionaryBreedsOnlyValidPoints: a kernel whose generator refuses
// part of its knob space (a CUDA paged attention: a cp.async ring with
// 4-wide vectors, rings over the shared-memory limit) samples only valid
// points, and mutation and crossover of its measured traces must not
// propose a refused one either: it would cost a trial as a build error.
func TestEvolutionaryBreedsOnlyValidPoints(t *testing.T) {
	k := cudakernels.Checked(cudakernels.PagedAttention{Batch: 4, QHeads: 8, KVHeads: 2, HeadDim: 128, BlockSize: 16, Context: 300})
	v, ok := k.(kernels.Validator)
	if !ok {
		t.Fatalf("%T is not a kernels.Validator", k)
	}
	hw := cudakernels.Hardware(cuda.H100)
	ev := search.NewEvolutionary(k, hw, search.CostDevice(hw, nil), "task", nil, 3,
		search.EvolveOptions{Population: 96, RandomShare: 0.01, Epsilon: -1})
	var obs []search.Trial
	rng := rand.New(rand.NewPCG(4, 4))
	for len(obs) < 8 {
		s, err := search.SampleSchedule(k, hw, rng.Uint64())
		if err != nil {
			t.Fatal(err)
		}
		key, err := search.TraceKey(s)
		if err != nil {
			t.Fatal(err)
		}
		m := target.Measurement{CandidateID: fmt.Sprint("t", len(obs)), Status: target.StatusOK, Threads: 1}
		m.SetSamples([]float64{1e-6 * (1 + rng.Float64())})
		obs = append(obs, search.Trial{Index: len(obs), Trace: json.RawMessage(key), Measurement: m})
	}
	ev.Observe(obs)
	seen := map[string]bool{}
	for round := range 4 {
		props, err := ev.Propose(context.Background(), 16, seen)
		if err != nil {
			t.Fatal(err)
		}
		if len(props) == 0 {
			t.Fatalf("round %d: no proposals", round)
		}
		for _, p := range props {
			seen[p.Key] = true
			if err := v.Valid(p.Schedule, hw); err != nil {
				t.Errorf("round %d: proposal %s is a refused point: %v", round, p.Key, err)
			}
		}
	}
}

// TestEvolutionarySiblingPrior: a shape the shared model has not measured
// is ranked by what another shape of the same kernel measured at the same
// knob values (costmodel.GBTParams.SiblingWeight, reached through
// OnlineModel.Focus): with weight 1 as given (SiblingShare off: with one
// sibling shape there is no pair whose agreement would earn it a share)
// and no exploration, the first proposals for silu rows=1 are the five
// points silu rows=16 measured fastest, in that order, though the times
// are arbitrary (no rule the trees could have learned).
func TestEvolutionarySiblingPrior(t *testing.T) {
	sib, cold := kernels.SiLU{Rows: 16, H: 256}, kernels.SiLU{Rows: 1, H: 256}
	p := costmodel.DefaultGBTParams()
	p.MinTrain, p.SiblingWeight, p.SiblingShare, p.Trees = 8, 1, false, 40
	model := search.NewOnlineModel(costmodel.NewGBT(p))
	dev := search.CostDevice(testHW, nil)
	trials := fakeTrials(t, sib, 48, 3) // the whole 4×3×4 space, arbitrary times
	search.NewEvolutionary(sib, testHW, dev, "rows=16", model, 1, search.EvolveOptions{}).Observe(trials)
	slices.SortFunc(trials, func(a, b search.Trial) int { return cmp.Compare(a.Measurement.Median, b.Measurement.Median) })
	decisions := func(trace []byte) string {
		tr, err := schedule.ParseTrace(trace)
		if err != nil {
			t.Fatal(err)
		}
		var ds []int64
		for _, in := range tr.Insts {
			ds = append(ds, in.Decision...)
		}
		return fmt.Sprint(ds)
	}
	ev := search.NewEvolutionary(cold, testHW, dev, "rows=1", model, 2, search.EvolveOptions{Population: 512, Epsilon: -1, Transfer: -1})
	props, err := ev.Propose(context.Background(), 5, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(props) != 5 {
		t.Fatalf("%d proposals, want 5", len(props))
	}
	for i, pr := range props {
		if got, want := decisions([]byte(pr.Key)), decisions(trials[i].Trace); got != want {
			t.Errorf("proposal %d: decisions %s, want the sibling's #%d fastest %s", i, got, i+1, want)
		}
	}
}

// TestExampleKernelRuntimeM: a dataset line whose IR holds the shape's
// bucket (M=96 keyed as 128) but whose name gives the M it was measured at
// rebuilds the kernel at that M (local2core-linear2's 41 lines of M=96 were
// replayed and featurized at M=128); a line at its bucket is unchanged.
func TestExampleKernelRuntimeM(t *testing.T) {
	ir128, err := json.Marshal(kernels.Linear{M: 128, N: 384, K: 384}.Workload())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		want int64
	}{{"linear/M=96,N=384,K=384/f32", 96}, {"linear/M=128,N=384,K=384/f32", 128}} {
		k, err := search.ExampleKernel(costmodel.Example{Workload: c.name, IR: ir128})
		if err != nil {
			t.Fatal(err)
		}
		if d := k.Dims(); len(d) != 1 || d[0] != c.want || k.Name() != c.name {
			t.Errorf("%s: kernel %s dims %v, want M=%d", c.name, k.Name(), d, c.want)
		}
	}
}
