package search_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
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
