package sim

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"

	"github.com/sourcegraph/conc/pool"

	"llmir/kvcache"
)

// Config is one simulated engine: a pool and a scheduler.
type Config struct {
	BlockSize  int
	PoolBlocks int
	// Watermark is the fraction of blocks admission keeps free (vLLM
	// uses 0.01).
	Watermark float64
	// MaxSeqs caps the running batch (default 256, as vLLM's max_num_seqs).
	MaxSeqs int
	// MaxPrefillTokens caps the prompt tokens admitted per step (default
	// 8192); a longer prompt is admitted alone.
	MaxPrefillTokens     int
	DisablePrefixCaching bool
}

func (c Config) withDefaults() Config {
	if c.MaxSeqs == 0 {
		c.MaxSeqs = 256
	}
	if c.MaxPrefillTokens == 0 {
		c.MaxPrefillTokens = 8192
	}
	return c
}

// Result is what one replay measured.
type Result struct {
	BlockSize  int `json:"block_size"`
	PoolBlocks int `json:"pool_blocks"`
	PoolTokens int `json:"pool_tokens"`
	Requests   int `json:"requests"`
	Completed  int `json:"completed"`
	// Rejected requests could never fit the pool: a prompt (plus output
	// so far, after preemption) above pool minus watermark, or a sequence
	// that cannot grow even when it runs alone.
	Rejected int `json:"rejected"`
	Steps    int `json:"steps"`
	// WastePct is internal fragmentation, allocated slots holding no
	// token as a percentage of allocated slots, averaged over busy steps.
	WastePct float64 `json:"waste_pct"`
	// PeakWastePct is the largest per-step value of the same.
	PeakWastePct float64 `json:"peak_waste_pct"`
	// UtilizationPct is the mean fraction of blocks in use over busy steps.
	UtilizationPct float64 `json:"utilization_pct"`
	PeakSeqs       int     `json:"peak_seqs"`
	MeanSeqs       float64 `json:"mean_seqs"`
	Preemptions    int     `json:"preemptions"`
	PrefixHitPct   float64 `json:"prefix_hit_pct"`
	// TokensPerStep is generated tokens per step over the whole replay.
	TokensPerStep float64 `json:"tokens_per_step"`
}

// request is a trace request's progress through the engine.
type request struct {
	Request
	generated int
}

// tokens is the request's prompt and output so far. Token ids are a hash
// of (group, position) inside a shared prefix and of (id, position)
// elsewhere, so equal prefixes hash equal and nothing else does.
func (r *request) tokens(dst []int32) []int32 {
	n := r.PromptLen + r.generated
	for p := range n {
		if p < r.PrefixLen {
			dst = append(dst, token(1, uint64(r.PrefixGroup), p))
		} else {
			dst = append(dst, token(2, uint64(r.ID), p))
		}
	}
	return dst
}

func token(domain, owner uint64, pos int) int32 {
	x := domain<<62 ^ owner<<24 ^ uint64(pos)
	x ^= x >> 31
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 29
	x *= 0x94d049bb133111eb
	x ^= x >> 32
	return int32(x & 0x7fffffff)
}

// Run replays the trace through a kvcache.Manager with continuous batching.
// Every step, first each running sequence appends one generated token in
// admission order; when the pool is full the latest admitted sequence is
// preempted (freed, and requeued at the front to be recomputed from its
// prompt and output so far) until the append fits. Then, if nothing was
// preempted, waiting requests are admitted in arrival order while the
// watermark, MaxSeqs and MaxPrefillTokens allow. A sequence leaves when it
// has produced OutputLen tokens. Statistics are sampled after every step
// in which blocks are in use.
func Run(ctx context.Context, trace []Request, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	m, err := kvcache.NewManager(kvcache.Config{
		Layout: kvcache.Layout{NumBlocks: cfg.PoolBlocks, BlockSize: cfg.BlockSize,
			NumLayers: 1, NumKVHeads: 1, HeadDim: 1, DType: kvcache.F16},
		Watermark:            cfg.Watermark,
		DisablePrefixCaching: cfg.DisablePrefixCaching,
	})
	if err != nil {
		return Result{}, fmt.Errorf("simulate block size %d: %w", cfg.BlockSize, err)
	}
	if err := checkTrace(trace); err != nil {
		return Result{}, fmt.Errorf("simulate: %w", err)
	}
	reqs := make([]*request, len(trace))
	totalTokens := 0
	for i, r := range trace {
		if err := r.Validate(); err != nil {
			return Result{}, fmt.Errorf("simulate: request %d (id %d): %w", i, r.ID, err)
		}
		reqs[i] = &request{Request: r}
		totalTokens += r.PromptLen + r.OutputLen
	}
	slices.SortStableFunc(reqs, func(a, b *request) int { return a.Arrival - b.Arrival })

	res := Result{BlockSize: cfg.BlockSize, PoolBlocks: cfg.PoolBlocks, PoolTokens: cfg.PoolBlocks * cfg.BlockSize, Requests: len(reqs)}
	var (
		waiting, running []*request
		next             int // first request not yet arrived
		generated        int
		samples          int
		wasteSum, util   float64
		seqSum           int
		buf              []int32
	)
	// A replay that runs longer than this is a bug, not a workload: every
	// busy step appends at least one token, and generated tokens survive
	// preemption (recompute repeats only the prefill, inside one step).
	limit := 4*totalTokens + reqs[len(reqs)-1].Arrival + 1000
	step := 0
	for ; res.Completed+res.Rejected < len(reqs); step++ {
		if step%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("simulate block size %d at step %d: %w", cfg.BlockSize, step, err)
			}
		}
		if step > limit {
			return res, fmt.Errorf("simulate block size %d: no end after %d steps (%d of %d requests done)",
				cfg.BlockSize, step, res.Completed+res.Rejected, len(reqs))
		}
		// An idle engine skips to the next arrival.
		if len(running) == 0 && len(waiting) == 0 && next < len(reqs) {
			step = max(step, reqs[next].Arrival)
		}
		for ; next < len(reqs) && reqs[next].Arrival <= step; next++ {
			waiting = append(waiting, reqs[next])
		}

		preempted := false
		for i := 0; i < len(running); i++ {
			r := running[i]
			for {
				id := kvcache.SeqID(r.ID)
				err := m.Append(id, token(2, uint64(r.ID), r.PromptLen+r.generated))
				if err == nil {
					r.generated++
					generated++
					// The step computes the token's keys and values.
					if err := m.Commit(id, r.PromptLen+r.generated); err != nil {
						return res, fmt.Errorf("simulate step %d: %w", step, err)
					}
					break
				}
				if !errors.Is(err, kvcache.ErrCacheFull) {
					return res, fmt.Errorf("simulate step %d: %w", step, err)
				}
				// Preempt the newest sequence, possibly r itself.
				preempted = true
				v := running[len(running)-1]
				running = running[:len(running)-1]
				if err := m.Free(kvcache.SeqID(v.ID)); err != nil {
					panic(err) // a running request always has a sequence
				}
				if v == r && len(running) == 0 {
					res.Rejected++ // it failed alone: it will never fit
					break
				}
				waiting = slices.Insert(waiting, 0, v)
				res.Preemptions++
				if v == r {
					break
				}
			}
		}
		// Finished sequences leave; preempted ones are no longer in running.
		running = slices.DeleteFunc(running, func(r *request) bool {
			if r.generated < r.OutputLen {
				return false
			}
			if err := m.Free(kvcache.SeqID(r.ID)); err != nil {
				panic(err)
			}
			res.Completed++
			return true
		})

		budget := cfg.MaxPrefillTokens
		for !preempted && len(waiting) > 0 && len(running) < cfg.MaxSeqs {
			r := waiting[0]
			n := r.PromptLen + r.generated
			if n > budget && budget < cfg.MaxPrefillTokens {
				break
			}
			buf = r.tokens(buf[:0])
			_, err := m.Add(kvcache.SeqID(r.ID), buf, nil)
			if errors.Is(err, kvcache.ErrCacheFull) {
				break
			}
			waiting = waiting[1:]
			if errors.Is(err, kvcache.ErrExceedsCapacity) {
				res.Rejected++
				continue
			}
			if err == nil {
				err = m.Commit(kvcache.SeqID(r.ID), n) // prefill computes the prompt
			}
			if err != nil {
				return res, fmt.Errorf("simulate step %d: %w", step, err)
			}
			running = append(running, r)
			budget -= n
		}

		st := m.Stats()
		if st.UsedBlocks > 0 {
			samples++
			f := st.Fragmentation()
			wasteSum += f
			res.PeakWastePct = max(res.PeakWastePct, 100*f)
			util += st.Utilization()
			seqSum += len(running)
		}
		res.PeakSeqs = max(res.PeakSeqs, len(running))
	}
	st := m.Stats()
	res.Steps = step
	res.PrefixHitPct = 100 * st.PrefixHitRate()
	if samples > 0 {
		res.WastePct = 100 * wasteSum / float64(samples)
		res.UtilizationPct = 100 * util / float64(samples)
		res.MeanSeqs = float64(seqSum) / float64(samples)
	}
	if step > 0 {
		res.TokensPerStep = float64(generated) / float64(step)
	}
	return res, nil
}

// Sweep runs the same trace at each block size, in parallel, with results
// in the order of sizes. With poolTokens > 0 every size gets
// poolTokens/size blocks (the same memory, so rows compare); otherwise
// every size gets base.PoolBlocks blocks.
func Sweep(ctx context.Context, trace []Request, sizes []int, poolTokens int, base Config) ([]Result, error) {
	results := make([]Result, len(sizes))
	p := pool.New().WithContext(ctx).WithCancelOnError().WithMaxGoroutines(runtime.GOMAXPROCS(0))
	for i, bs := range sizes {
		p.Go(func(ctx context.Context) error {
			cfg := base
			cfg.BlockSize = bs
			if poolTokens > 0 {
				cfg.PoolBlocks = poolTokens / bs
			}
			r, err := Run(ctx, trace, cfg)
			results[i] = r
			return err
		})
	}
	return results, p.Wait()
}
