package costmodel

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// synthPool is a task whose candidates are all 4×4×4 choices of three
// categorical knobs; the time is a product of per-knob factors with a
// unique optimum, and the roofline feature is that time exactly (perfect
// information) or noise (none).
func synthPool(task string, informative bool, rng *rand.Rand) []Example {
	return synthPoolAt(task, informative, rng, [3]int{2, 1, 0}, 1, 4)
}

// synthPoolAt is synthPool with the optimum at opt, times scaled by scale
// and the first knob's domain of size n (another size: traces that do not
// align with synthPool's).
func synthPoolAt(task string, informative bool, rng *rand.Rand, opt [3]int, scale float64, n int) []Example {
	var out []Example
	dom := "1"
	for v := 2; v <= n; v++ {
		dom += fmt.Sprint(",", v)
	}
	for a := range n {
		for b := range 4 {
			for c := range 4 {
				tr := fmt.Sprintf(`{"def":"x","insts":[`+
					`{"op":"sample_categorical","ints":[%s],"outputs":["t0"],"decision":[%d]},`+
					`{"op":"sample_categorical","ints":[1,2,3,4],"outputs":["t1"],"decision":[%d]},`+
					`{"op":"sample_categorical","ints":[1,2,3,4],"outputs":["t2"],"decision":[%d]}]}`, dom, a, b, c)
				sec := scale * 1e-6 * (1 + math.Abs(float64(a-opt[0]))) * (1 + math.Abs(float64(b-opt[1]))) * (1 + math.Abs(float64(c-opt[2])))
				f := make([]float64, NumFeatures)
				f[rooflineIndex] = math.Log2(sec)
				if !informative {
					f[rooflineIndex] = rng.Float64()
				}
				out = append(out, Example{Workload: task, Threads: 1, Trace: json.RawMessage(tr), Features: f, Median: sec})
			}
		}
	}
	return out
}

// withDefault adds to task's pool a rule-based default: a trace without
// sampling steps (as the linear kernels' defaults are), at seconds.
func withDefault(ex []Example, task string, seconds float64) []Example {
	f := make([]float64, NumFeatures)
	f[rooflineIndex] = math.Log2(seconds)
	tr := `{"def":"x","insts":[{"op":"split","args":["i"],"ints":[-1,4],"outputs":["i0","i1"]}]}`
	return append(ex, Example{Workload: task, Threads: 1, Trace: json.RawMessage(tr), Features: f, Median: seconds, Default: true})
}

// TestSimulateEvolution: with a model that knows the times, evolution
// measures the best within its first batch; with an uninformative one it
// still finds it (the neighbourhood walk) within the pool; results are
// deterministic and random order's mean is the same for both.
func TestSimulateEvolution(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	// With the population the whole pool, a perfect model's first batch
	// holds the best; a smaller one samples the pool and must walk to it.
	for _, c := range []struct {
		name        string
		informative bool
		population  int
	}{{"informative", true, 64}, {"noise", false, 16}} {
		t.Run(c.name, func(t *testing.T) {
			ex := append(synthPool("a", c.informative, rng), synthPool("b", c.informative, rng)...)
			run := func() []EvolutionSim {
				sims, err := SimulateEvolution(ex, 4, 5, func() Model { return &Roofline{} }, EvolveSim{Population: c.population})
				if err != nil {
					t.Fatal(err)
				}
				return sims
			}
			sims := run()
			if fmt.Sprint(sims) != fmt.Sprint(run()) {
				t.Fatal("not deterministic")
			}
			for _, s := range sims {
				if s.Pool != 64 || s.Evolution < 1 || s.Evolution > 64 || s.Random < 1 {
					t.Errorf("%+v", s)
				}
				if c.informative && s.Evolution > 4 {
					t.Errorf("%s: %v trials with a perfect model, want ≤ one batch of 4", s.Task, s.Evolution)
				}
			}
		})
	}
	if _, err := SimulateEvolution(synthPool("a", true, rng), 4, 1, func() Model { return &Roofline{} }, EvolveSim{}); err == nil {
		t.Error("one task accepted")
	}
}

// TestSimulateEvolutionTransfer: the first batch leads with the best of
// the other tasks of the same group (the name before '/'). With a model
// that knows nothing, a sibling with the same landscape hands over the
// optimum: one trial. A sibling's best that is not in the held-out pool
// costs a trial that missed, and one that is in it but slower too: with a
// perfect model the optimum then comes second. Transfer < 0 is the plain
// walk, and tasks of another group transfer nothing. Of several siblings,
// those whose traces align with the task's draws compete, ranked by the
// model.
func TestSimulateEvolutionTransfer(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	noise := append(synthPool("op/a", false, rng), synthPool("op/b", false, rng)...)
	for _, c := range []struct {
		name     string
		ex       []Example
		transfer int
		check    func(s EvolutionSim) bool
	}{
		{"same landscape", noise, 1, func(s EvolutionSim) bool { return s.Evolution == 1 }},
		{"off", noise, -1, func(s EvolutionSim) bool { return s.Evolution > 1 }},
		{"other group", append(synthPool("x/a", false, rng), synthPool("y/b", false, rng)...), 1, func(s EvolutionSim) bool { return s.Evolution > 1 }},
		{"absent or slower", withoutOptimum(append(synthPool("op/a", true, rng), synthPool("op/b", true, rng)...), "op/b"), 1,
			func(s EvolutionSim) bool { return s.Evolution == 2 }},
		// The fastest sibling (op/0, a quarter of the time) has another
		// first-knob domain: search skips it and transfers the next.
		{"first aligned", append(append(synthPool("op/a", false, rng), synthPool("op/b", false, rng)...),
			synthPoolAt("op/0", false, rng, [3]int{0, 0, 0}, 0.25, 5)...), 1,
			func(s EvolutionSim) bool { return s.Task == "op/0@1t" || s.Evolution == 1 }},
		// The fastest sibling's best is its rule-based default (no sampling
		// steps): it aligns with no draw, even though it matches op/a's own
		// default step for step, and op/b's best leads instead.
		{"default skipped", withDefault(withDefault(append(append(synthPool("op/a", false, rng), synthPool("op/b", false, rng)...),
			synthPoolAt("op/0", false, rng, [3]int{0, 0, 0}, 4, 4)...), "op/0", 1e-8), "op/a", 5e-5), 1,
			func(s EvolutionSim) bool { return s.Task != "op/a@1t" || s.Evolution == 1 }},
		// With a model that knows op/a's times, the sibling best it scores
		// highest there leads: op/c's (op/a's optimum), not the faster
		// op/b's (another optimum).
		{"model ranks", append(append(synthPool("op/a", true, rng), synthPoolAt("op/b", true, rng, [3]int{0, 3, 3}, 0.5, 4)...),
			synthPoolAt("op/c", true, rng, [3]int{2, 1, 0}, 2, 4)...), 1,
			func(s EvolutionSim) bool { return s.Task != "op/a@1t" || s.Evolution == 1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The population is the whole pool: a perfect model's first
			// picks hold the optimum.
			sims, err := SimulateEvolution(c.ex, 4, 3, func() Model { return &Roofline{} }, EvolveSim{Population: 64, Transfer: c.transfer})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sims {
				if !c.check(s) {
					t.Errorf("%s: %v trials", s.Task, s.Evolution)
				}
			}
		})
	}
}

// withoutOptimum drops task's fastest example.
func withoutOptimum(ex []Example, task string) []Example {
	best := -1
	for i, e := range ex {
		if e.Workload == task && (best < 0 || e.Median < ex[best].Median) {
			best = i
		}
	}
	return append(ex[:best:best], ex[best+1:]...)
}

// TestExplored: ε·n rounded, at least one from a batch of 4 when ε > 0,
// none with ε ≤ 0.
func TestExplored(t *testing.T) {
	for _, c := range []struct {
		eps  float64
		n    int
		want int
	}{{0, 8, 0}, {-1, 8, 0}, {0.1, 4, 1}, {0.1, 3, 0}, {0.25, 8, 2}, {0.1, 16, 2}} {
		if got := Explored(c.eps, c.n); got != c.want {
			t.Errorf("Explored(%v, %d) = %d, want %d", c.eps, c.n, got, c.want)
		}
	}
}

// TestRandomTrials: the exact expectation of random order, against a
// brute-force mean over every permutation of small pools, with and
// without the default measured first.
func TestRandomTrials(t *testing.T) {
	for _, c := range []struct {
		good []bool
		def  int
		want float64
	}{
		{[]bool{true}, -1, 1},
		{[]bool{true, false, false, false}, -1, 2.5},
		{[]bool{true, true, false, false, false}, -1, 2},
		{[]bool{false, true, false, false}, 0, 1 + 2},
		{[]bool{true, false, false, false}, 0, 1},
		{[]bool{false, false, true, true, false}, 4, 1 + 5.0/3},
		{[]bool{false, false}, -1, math.Inf(1)},
	} {
		got := RandomTrials(c.good, c.def)
		if got != c.want && math.Abs(got-c.want) > 1e-12 {
			t.Errorf("RandomTrials(%v, %d) = %v, want %v", c.good, c.def, got, c.want)
		}
		if math.IsInf(c.want, 0) {
			continue
		}
		if bf := bruteRandom(c.good, c.def); math.Abs(bf-got) > 1e-12 {
			t.Errorf("RandomTrials(%v, %d) = %v, all permutations give %v", c.good, c.def, got, bf)
		}
	}
}

// bruteRandom is the mean over all orders of the pool (def first when ≥ 0)
// of the position of the first good candidate.
func bruteRandom(good []bool, def int) float64 {
	var rest []int
	for i := range good {
		if i != def {
			rest = append(rest, i)
		}
	}
	sum, n := 0.0, 0
	var perm func(k int)
	perm = func(k int) {
		if k == len(rest) {
			order := rest
			if def >= 0 {
				order = append([]int{def}, rest...)
			}
			for pos, i := range order {
				if good[i] {
					sum += float64(pos + 1)
					break
				}
			}
			n++
			return
		}
		for i := k; i < len(rest); i++ {
			rest[k], rest[i] = rest[i], rest[k]
			perm(k + 1)
			rest[k], rest[i] = rest[i], rest[k]
		}
	}
	perm(0)
	return sum / float64(n)
}
