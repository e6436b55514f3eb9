package search

import (
	"context"
	"math/rand/v2"

	"llmir/kernels"
	"llmir/schedule"
)

// Proposal is one schedule a strategy wants measured, with its trace key.
type Proposal struct {
	Schedule *schedule.Schedule
	Key      string // compacted trace JSON
}

// Strategy proposes schedules of one task. The tuner owns the set of
// traces already measured (this run and earlier ones in the database) and
// feeds back every measurement, so a strategy only decides what to try next.
type Strategy interface {
	// Name identifies the strategy in tuning-run summaries.
	Name() string
	// Propose returns up to n schedules whose keys are not in seen (and
	// distinct from each other). Fewer than n means the strategy could not
	// find more; none means the space is exhausted as far as it can tell.
	Propose(ctx context.Context, n int, seen map[string]bool) ([]Proposal, error)
	// Observe receives every finished trial, in measurement order.
	Observe(trials []Trial)
}

// Random draws from the kernel's design space with fresh seeds. Seeds come
// from a PCG seeded by Seed, so a tune is reproducible.
type Random struct {
	Kernel   kernels.Kernel
	Hardware kernels.Hardware
	rng      *rand.Rand
	// MaxMisses is how many duplicate draws in a row mean "exhausted"
	// (default 64): small spaces (a decode shape has ~100 points) run out.
	MaxMisses int
}

// NewRandom is a random strategy for k on hw.
func NewRandom(k kernels.Kernel, hw kernels.Hardware, seed uint64) *Random {
	return &Random{Kernel: k, Hardware: hw, rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
}

func (r *Random) Name() string { return "random" }

func (r *Random) Propose(ctx context.Context, n int, seen map[string]bool) ([]Proposal, error) {
	misses := r.MaxMisses
	if misses <= 0 {
		misses = 64
	}
	var out []Proposal
	local := map[string]bool{}
	for miss := 0; len(out) < n && miss < misses; {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		s, err := SampleSchedule(r.Kernel, r.Hardware, r.rng.Uint64())
		if err != nil {
			return out, err
		}
		key, err := TraceKey(s)
		if err != nil {
			return out, err
		}
		if seen[string(key)] || local[string(key)] {
			miss++
			continue
		}
		miss = 0
		local[string(key)] = true
		out = append(out, Proposal{Schedule: s, Key: string(key)})
	}
	return out, nil
}

// Observe is a no-op: random search does not learn.
func (r *Random) Observe([]Trial) {}
