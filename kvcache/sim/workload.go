package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// Workload is a named, seeded generator of request traces. Arrivals are a
// Poisson process of Rate requests per decode step; lengths come from the
// workload's distributions.
type Workload struct {
	Name        string
	Description string
	Rate        float64 // mean arrivals per step
	// lengths draws one request's prompt and output lengths and prefix;
	// shared holds per-trace draws (the system prompts).
	lengths func(r *rand.Rand, shared []int) (prompt, output, group, prefix int)
	// setup draws the per-trace values lengths reads.
	setup func(r *rand.Rand) []int
}

// logNormal draws exp(N(mu, sigma²)) rounded and clamped to [lo, hi].
func logNormal(r *rand.Rand, mu, sigma float64, lo, hi int) int {
	v := int(math.Round(math.Exp(mu + sigma*r.NormFloat64())))
	return min(max(v, lo), hi)
}

// The shipped workloads. Their parameters are part of the documentation:
// change them and the numbers in README change.
var workloads = []Workload{
	{
		Name: "chat",
		Description: "short chat turns, ShareGPT-like: prompt lognormal(μ=4.6, σ=1.0) in [4, 4096] (median 100, mean ≈165), " +
			"output lognormal(μ=5.3, σ=0.9) in [8, 2048] (median 200, mean ≈300), 0.4 arrivals/step, no shared prefix",
		Rate: 0.4,
		lengths: func(r *rand.Rand, _ []int) (int, int, int, int) {
			return logNormal(r, 4.6, 1.0, 4, 4096), logNormal(r, 5.3, 0.9, 8, 2048), 0, 0
		},
	},
	{
		Name: "long",
		Description: "long documents with long answers: prompt lognormal(μ=7.4, σ=0.5) in [512, 16384] (median ≈1640), " +
			"output lognormal(μ=6.6, σ=0.5) in [64, 4096] (median ≈735), 0.02 arrivals/step, no shared prefix",
		Rate: 0.02,
		lengths: func(r *rand.Rand, _ []int) (int, int, int, int) {
			return logNormal(r, 7.4, 0.5, 512, 16384), logNormal(r, 6.6, 0.5, 64, 4096), 0, 0
		},
	},
	{
		Name: "shared-prefix",
		Description: "many requests behind a long system prompt: 4 system prompts of uniform [1024, 2048] tokens drawn per trace, " +
			"picked with probabilities 0.4/0.3/0.2/0.1; user turn lognormal(μ=4.0, σ=0.8) in [1, 1024] (median ≈55); " +
			"output lognormal(μ=4.8, σ=0.7) in [4, 1024] (median ≈120); 0.5 arrivals/step",
		Rate: 0.5,
		setup: func(r *rand.Rand) []int {
			sys := make([]int, 4)
			for i := range sys {
				sys[i] = 1024 + r.IntN(1025)
			}
			return sys
		},
		lengths: func(r *rand.Rand, sys []int) (int, int, int, int) {
			u, g := r.Float64(), 0
			for acc := 0.0; g < len(sys)-1; g++ {
				if acc += []float64{0.4, 0.3, 0.2, 0.1}[g]; u < acc {
					break
				}
			}
			user := logNormal(r, 4.0, 0.8, 1, 1024)
			return sys[g] + user, logNormal(r, 4.8, 0.7, 4, 1024), g + 1, sys[g]
		},
	},
}

// Workloads lists the shipped workloads.
func Workloads() []Workload { return append([]Workload(nil), workloads...) }

// LookupWorkload finds a shipped workload by name.
func LookupWorkload(name string) (Workload, error) {
	names := make([]string, len(workloads))
	for i, w := range workloads {
		if w.Name == name {
			return w, nil
		}
		names[i] = w.Name
	}
	return Workload{}, fmt.Errorf("unknown workload %q (have %s)", name, strings.Join(names, ", "))
}

// Generate draws a trace of n requests; the same seed gives the same trace.
func (w Workload) Generate(n int, seed uint64) []Request {
	r := rand.New(rand.NewPCG(seed, seed))
	var shared []int
	if w.setup != nil {
		shared = w.setup(r)
	}
	reqs := make([]Request, n)
	t := 0.0
	for i := range reqs {
		t += r.ExpFloat64() / w.Rate
		p, o, g, pre := w.lengths(r, shared)
		reqs[i] = Request{ID: i, Arrival: int(t), PromptLen: p, OutputLen: o, PrefixGroup: g, PrefixLen: pre}
	}
	return reqs
}
