package search

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"

	"github.com/sourcegraph/conc/pool"

	"llmir/costmodel"
	"llmir/ir"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/target/cpu"
	"llmir/target/cpu/cgen"
	"llmir/tuningdb"
)

// EvolveOptions tunes the evolutionary strategy. The zero value is usable.
type EvolveOptions struct {
	// Population is how many new candidates are generated and scored per
	// round, of which Propose returns the n best (default 128).
	Population int
	// Parents is how many of the fastest measured trials breed (default 16).
	Parents int
	// RandomShare is the share of the population drawn fresh from the
	// design space rather than bred (default 0.25; all of it before any
	// trial is ok).
	RandomShare float64
	// CrossoverShare is the share of bred candidates made by crossover
	// rather than mutation, where two parents' traces align (default 0.3).
	CrossoverShare float64
	// Epsilon is the share of each batch taken at random from the scored
	// population instead of by score (default 0.1, at least one candidate
	// per batch of 4 or more; < 0: none): exploration that keeps a wrong
	// model from steering every batch.
	Epsilon float64
	// Workers bounds the goroutines generating, replaying and scoring
	// (default GOMAXPROCS).
	Workers int
	// Batch is the most candidates measured between two model updates
	// (default DefaultEvolveBatch): the tuner measures batches no larger
	// (Tuner.Tune asks the strategy), so the model learns from every few
	// measurements instead of once per scheduler step.
	Batch int
	// Transfer is how many of Evolutionary.Transfer's traces (the best of
	// other workloads of the same kernel group; the model's best scored on
	// this one) lead the task's first proposal, before it has a measured
	// parent of its own (default 1; < 0: none).
	Transfer int
}

// DefaultEvolveBatch is EvolveOptions.Batch's default, and the batch size
// of the tuning suite's simulated evolution (bench.SearchBatch), which
// mirrors this strategy.
const DefaultEvolveBatch = 4

func (o EvolveOptions) withDefaults() EvolveOptions {
	if o.Population <= 0 {
		o.Population = 128
	}
	if o.Parents <= 0 {
		o.Parents = 16
	}
	if o.RandomShare <= 0 {
		o.RandomShare = 0.25
	}
	if o.CrossoverShare <= 0 {
		o.CrossoverShare = 0.3
	}
	if o.Epsilon == 0 {
		o.Epsilon = 0.1
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Batch <= 0 {
		o.Batch = DefaultEvolveBatch
	}
	if o.Transfer == 0 {
		o.Transfer = 1
	}
	return o
}

// Evolutionary is model-guided evolutionary search (Ansor's and
// MetaSchedule's): each round it breeds a population from the fastest
// measured trials (the database's records of the workload arrive first
// through Observe, so a rerun starts from the best known), mutating one or
// two sampling decisions of a parent's trace or crossing two parents whose
// traces align, adds fresh random draws, replays every child (dropping
// those that do not replay), scores them with the cost model and proposes
// the best, with an ε share picked at random. Every measurement trains the
// model (Observe).
type Evolutionary struct {
	Kernel   kernels.Kernel
	Hardware kernels.Hardware
	Model    *OnlineModel
	// Device is what the features know of the machine.
	Device costmodel.Device
	// Task names the workload in the model's training data (its key).
	Task string
	Opts EvolveOptions
	// Transfer are the best traces of other workloads of the same kernel
	// group on the device, best first (TuneModel passes the tune's results
	// so far). A new shape of a known op is cold for the model, but its
	// sibling's best schedule is often near-best for it too (the decode and
	// prefill shapes of an elementwise op, say): the first proposal leads
	// with up to Opts.Transfer of them that replay on this kernel, those
	// the model scores highest here.
	Transfer []json.RawMessage

	rng         *rand.Rand
	def         *schedule.Def
	parents     []parent
	known       map[string]bool // ok or failed: observed keys
	transferred bool
}

type parent struct {
	trace  *schedule.Trace
	median float64
}

// NewEvolutionary is the strategy for one task. m is shared by all the
// tasks of a tune (nil: a fresh GBT that falls back to the roofline).
func NewEvolutionary(k kernels.Kernel, hw kernels.Hardware, dev costmodel.Device, task string, m *OnlineModel, seed uint64, o EvolveOptions) *Evolutionary {
	if m == nil {
		m = NewOnlineModel(nil)
	}
	return &Evolutionary{Kernel: k, Hardware: hw, Model: m, Device: dev, Task: task, Opts: o.withDefaults(),
		rng: rand.New(rand.NewPCG(seed, seed^0xe7017e)), known: map[string]bool{}}
}

func (e *Evolutionary) Name() string { return "evolutionary" }

// BatchSize is the most candidates the tuner should measure before the
// next Propose (Opts.Batch): the model learns between batches.
func (e *Evolutionary) BatchSize() int { return e.Opts.Batch }

// genKind is how one child of the population is made.
type genKind int

const (
	genRandom genKind = iota
	genMutate
	genCross
)

type child struct {
	s   *schedule.Schedule
	key string
}

// Propose breeds, replays and scores a population in parallel and returns
// up to n of its children not in seen, best scored first.
func (e *Evolutionary) Propose(ctx context.Context, n int, seen map[string]bool) ([]Proposal, error) {
	if n <= 0 {
		return nil, nil
	}
	o := e.Opts
	if e.def == nil {
		def, err := e.Kernel.Def()
		if err != nil {
			return nil, fmt.Errorf("evolve %s: %w", e.Kernel.Name(), err)
		}
		e.def = def
	}
	var lead []Proposal
	if !e.transferred && len(e.parents) == 0 {
		e.transferred = true
		var err error
		if lead, err = e.transfer(ctx, min(n, max(o.Transfer, 0)), seen); err != nil {
			return nil, err
		}
		if n -= len(lead); n == 0 {
			return lead, nil
		}
	}
	slices.SortStableFunc(e.parents, func(a, b parent) int { return cmp.Compare(a.median, b.median) })
	parents := e.parents[:min(len(e.parents), o.Parents)]

	// Every child's recipe (kind, parents, seed) is drawn here, in order,
	// so that the population does not depend on goroutine scheduling.
	type plan struct {
		kind genKind
		a, b int
		seed uint64
	}
	size := max(o.Population, n)
	plans := make([]plan, size)
	for i := range plans {
		p := plan{kind: genRandom, seed: e.rng.Uint64()}
		if len(parents) > 0 && e.rng.Float64() >= o.RandomShare {
			p.kind, p.a = genMutate, e.pickParent(len(parents))
			if len(parents) > 1 && e.rng.Float64() < o.CrossoverShare {
				p.kind, p.b = genCross, e.pickParent(len(parents))
			}
		}
		plans[i] = p
	}
	kids := make([]*child, size)
	gp := pool.New().WithMaxGoroutines(o.Workers).WithContext(ctx)
	for i, p := range plans {
		gp.Go(func(ctx context.Context) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			rng := rand.New(rand.NewPCG(p.seed, p.seed^0xc0ffee))
			var s *schedule.Schedule
			var err error
			switch p.kind {
			case genRandom:
				s, err = SampleSchedule(e.Kernel, e.Hardware, p.seed)
			case genMutate:
				s, err = e.mutate(rng, parents[p.a].trace)
			case genCross:
				s, err = e.crossover(rng, parents[p.a].trace, parents[p.b].trace)
			}
			if err != nil {
				// A child that does not replay is dropped: mutations may
				// leave the legal space, and that is the price of breeding
				// from traces.
				if errors.Is(err, schedule.ErrReplay) || errors.Is(err, errNoChild) {
					return nil
				}
				return err
			}
			key, err := TraceKey(s)
			if err != nil {
				return err
			}
			kids[i] = &child{s: s, key: string(key)}
			return nil
		})
	}
	if err := gp.Wait(); err != nil {
		return nil, fmt.Errorf("evolve %s: breed: %w", e.Kernel.Name(), err)
	}
	var pop []*child
	local := map[string]bool{}
	for _, p := range lead {
		local[p.Key] = true
	}
	for _, c := range kids {
		if c == nil || seen[c.key] || e.known[c.key] || local[c.key] {
			continue
		}
		local[c.key] = true
		pop = append(pop, c)
	}
	if len(pop) == 0 {
		return lead, nil
	}
	ss := make([]*schedule.Schedule, len(pop))
	for i, c := range pop {
		ss[i] = c.s
	}
	order, err := e.rank(ctx, ss)
	if err != nil {
		return nil, err
	}

	n = min(n, len(pop))
	explore := costmodel.Explored(o.Epsilon, n)
	picked := make([]int, 0, n)
	taken := map[int]bool{}
	for _, i := range order[:n-explore] {
		picked, taken[i] = append(picked, i), true
	}
	rest := make([]int, 0, len(order))
	for _, i := range order {
		if !taken[i] {
			rest = append(rest, i)
		}
	}
	e.rng.Shuffle(len(rest), func(a, b int) { rest[a], rest[b] = rest[b], rest[a] })
	picked = append(picked, rest[:min(explore, len(rest))]...)
	out := lead
	for _, i := range picked {
		out = append(out, Proposal{Schedule: pop[i].s, Key: pop[i].key})
	}
	return out, nil
}

// transfer is up to n of e.Transfer's traces that lie in this kernel's
// design space and are not in seen, those the model scores highest here
// first (ties in e.Transfer's order). A trace of another shape whose steps
// do not align with this kernel's own draws (another template, other knob
// domains) or that does not replay (a tile that does not divide) is
// skipped: it would be a schedule search could never propose. The model
// chooses among the siblings' bests rather than taking the fastest
// sibling's: that is the smallest shape's, often the least like this one,
// while the model has learned every sibling's measurements and reads the
// shape.
func (e *Evolutionary) transfer(ctx context.Context, n int, seen map[string]bool) ([]Proposal, error) {
	if n <= 0 || len(e.Transfer) == 0 {
		return nil, nil
	}
	var refs []*schedule.Trace
	for range 4 {
		if s, err := SampleSchedule(e.Kernel, e.Hardware, e.rng.Uint64()); err == nil {
			refs = append(refs, s.Trace())
		}
	}
	var cands []Proposal
	for _, raw := range e.Transfer {
		t, err := schedule.ParseTrace(raw)
		if err != nil || !slices.ContainsFunc(refs, func(r *schedule.Trace) bool { return aligned(t, r) }) {
			continue
		}
		s, err := e.replay(t)
		if err != nil {
			continue
		}
		key, err := TraceKey(s)
		if err != nil || seen[string(key)] || e.known[string(key)] || slices.ContainsFunc(cands, func(p Proposal) bool { return p.Key == string(key) }) {
			continue
		}
		cands = append(cands, Proposal{Schedule: s, Key: string(key)})
	}
	if len(cands) > n {
		ss := make([]*schedule.Schedule, len(cands))
		for i, c := range cands {
			ss[i] = c.Schedule
		}
		order, err := e.rank(ctx, ss)
		if err != nil {
			return nil, err
		}
		ranked := make([]Proposal, len(cands))
		for k, i := range order {
			ranked[k] = cands[i]
		}
		cands = ranked
	}
	return cands[:min(n, len(cands))], nil
}

// rank is the model's order of ss on this task, best first.
func (e *Evolutionary) rank(ctx context.Context, ss []*schedule.Schedule) ([]int, error) {
	fs, err := costmodel.ScheduleFeaturesBatch(ctx, ss, WorkOf(e.Kernel), e.Device, e.Kernel.Dims())
	if err != nil {
		return nil, fmt.Errorf("evolve %s: features: %w", e.Kernel.Name(), err)
	}
	e.Model.Focus(e.Task)
	return costmodel.ByScore(e.Model.Predict(fs)), nil
}

// pickParent favours the fastest: the minimum of two uniform draws
// (tournament selection of size 2).
func (e *Evolutionary) pickParent(n int) int { return min(e.rng.IntN(n), e.rng.IntN(n)) }

var errNoChild = errors.New("no child")

// samplingSteps are the indices of a trace's sampling instructions.
func samplingSteps(t *schedule.Trace) []int {
	var out []int
	for i, in := range t.Insts {
		if in.Decision != nil {
			out = append(out, i)
		}
	}
	return out
}

// mutate changes one sampling decision of the trace (two with
// probability 1/3) to another legal value of its domain and replays it.
func (e *Evolutionary) mutate(rng *rand.Rand, t *schedule.Trace) (*schedule.Schedule, error) {
	steps := samplingSteps(t)
	if len(steps) == 0 {
		return nil, errNoChild
	}
	times := 1
	if len(steps) > 1 && rng.IntN(3) == 0 {
		times = 2
	}
	cur := t
	changed := false
	for range times {
		i := steps[rng.IntN(len(steps))]
		d, ok := mutateDecision(rng, cur.Insts[i])
		if !ok {
			continue
		}
		next, err := cur.WithDecision(i, d)
		if err != nil {
			return nil, err
		}
		cur, changed = next, true
	}
	if !changed {
		return nil, errNoChild
	}
	return e.replay(cur)
}

// replay replays a bred trace and keeps it only if the kernel accepts its
// point: a kernel with a validity predicate (kernels.Validator, e.g. a
// CUDA template whose generator refuses a split that does not divide K)
// samples only valid points, but a mutation or a crossover may combine
// decisions into one it refuses, which would otherwise cost a trial as a
// build error.
func (e *Evolutionary) replay(t *schedule.Trace) (*schedule.Schedule, error) {
	s, err := schedule.Replay(e.def, t)
	if err != nil {
		return nil, err
	}
	if v, ok := e.Kernel.(kernels.Validator); ok {
		if err := v.Valid(s, e.Hardware); err != nil {
			return nil, errNoChild
		}
	}
	return s, nil
}

// mutateDecision draws another decision of a sampling step: another
// candidate index, or another factorization of a perfect tile's product
// with the innermost bound kept.
func mutateDecision(rng *rand.Rand, in schedule.Inst) ([]int64, bool) {
	switch in.Op {
	case "sample_categorical":
		if len(in.Ints) < 2 || len(in.Decision) != 1 {
			return nil, false
		}
		d := rng.Int64N(int64(len(in.Ints)) - 1)
		if d >= in.Decision[0] {
			d++
		}
		return []int64{d}, true
	case "sample_perfect_tile":
		if len(in.Ints) != 2 || len(in.Decision) < 2 {
			return nil, false
		}
		total := int64(1)
		for _, f := range in.Decision {
			total *= f
		}
		for range 8 {
			d := randomTile(rng, total, len(in.Decision), in.Ints[1].Lit)
			if !slices.Equal(d, in.Decision) {
				return d, true
			}
		}
	}
	return nil, false
}

// randomTile is n factors of ext (outermost first), the innermost at most
// maxInner when positive: SamplePerfectTile's draw.
func randomTile(rng *rand.Rand, ext int64, n int, maxInner int64) []int64 {
	fs := make([]int64, n)
	rem := ext
	for i := n - 1; i >= 1; i-- {
		var ds []int64
		for d := int64(1); d <= rem; d++ {
			if rem%d == 0 && (i != n-1 || maxInner <= 0 || d <= maxInner) {
				ds = append(ds, d)
			}
		}
		fs[i] = ds[rng.IntN(len(ds))]
		rem /= fs[i]
	}
	fs[0] = rem
	return fs
}

// crossover takes each sampling decision from either parent when their
// traces align (same instructions, same domains of every sampling step):
// then both parents' decisions are legal at every step.
func (e *Evolutionary) crossover(rng *rand.Rand, a, b *schedule.Trace) (*schedule.Schedule, error) {
	if !aligned(a, b) {
		return e.mutate(rng, a)
	}
	cur := a
	for _, i := range samplingSteps(a) {
		if rng.IntN(2) == 0 || slices.Equal(a.Insts[i].Decision, b.Insts[i].Decision) {
			continue
		}
		next, err := cur.WithDecision(i, b.Insts[i].Decision)
		if err != nil {
			return nil, err
		}
		cur = next
	}
	return e.replay(cur)
}

func aligned(a, b *schedule.Trace) bool {
	if len(a.Insts) != len(b.Insts) {
		return false
	}
	for i := range a.Insts {
		x, y := a.Insts[i], b.Insts[i]
		if x.Op != y.Op || (x.Decision == nil) != (y.Decision == nil) {
			return false
		}
		if x.Decision != nil && (!slices.Equal(x.Ints, y.Ints) || len(x.Decision) != len(y.Decision) || !slices.Equal(x.Args, y.Args)) {
			return false
		}
	}
	return true
}

// Observe keeps ok trials as parents and teaches the model every ok
// measurement.
func (e *Evolutionary) Observe(trials []Trial) {
	var learn []Trial
	for _, tr := range trials {
		key := string(tr.Trace)
		if e.known[key] {
			continue
		}
		e.known[key] = true
		if !tr.Measurement.OK() || !(tr.Measurement.Median > 0) {
			continue
		}
		t, err := schedule.ParseTrace(tr.Trace)
		if err != nil {
			continue // a record of another trace format cannot breed
		}
		e.parents = append(e.parents, parent{trace: t, median: tr.Measurement.Median})
		learn = append(learn, tr)
	}
	// Learning is best effort: a trace that no longer replays (an older
	// design space) teaches nothing but breaks nothing.
	_ = e.Model.Learn(context.Background(), e.Kernel, e.Task, e.Device, learn)
}

// ExampleKernel is the kernel an evaluation example was measured on:
// rebuilt from its IR workload (kernels.FromWorkload) when the example
// carries one, else the linear layer its name spells (datasets written
// before examples carried the workload).
func ExampleKernel(e costmodel.Example) (kernels.Kernel, error) {
	if len(e.IR) > 0 {
		var w ir.Workload
		if err := json.Unmarshal(e.IR, &w); err != nil {
			return nil, fmt.Errorf("example %s: ir workload: %w", e.Workload, err)
		}
		k, err := kernels.FromWorkload(w)
		if err != nil {
			return nil, fmt.Errorf("example %s: %w", e.Workload, err)
		}
		// The IR holds the shape's bucket (M=96 is keyed as 128), but a
		// linear the dataset generator built directly was measured, and its
		// trace sampled, at the M its name gives: rebuild that kernel.
		var m, n, kk int64
		if l, ok := k.(kernels.Linear); ok && l.MBucket == 0 {
			if _, err := fmt.Sscanf(e.Workload, "linear/M=%d,N=%d,K=%d/", &m, &n, &kk); err == nil && m < l.M && n == l.N && kk == l.K {
				l.M = m
				return l, nil
			}
		}
		return k, nil
	}
	var l kernels.Linear
	if _, err := fmt.Sscanf(e.Workload, "linear/M=%d,N=%d,K=%d/f32", &l.M, &l.N, &l.K); err != nil {
		return nil, fmt.Errorf("example %q: no ir workload and not a linear layer's name", e.Workload)
	}
	return l, nil
}

// ExampleFeatures replays an example's trace on its kernel and extracts
// the features search scores candidates by (costmodel.ScheduleFeatures)
// on the device it was measured on, so that evaluations see exactly what
// the tuner's model sees.
func ExampleFeatures(e costmodel.Example) ([]float64, error) {
	k, err := ExampleKernel(e)
	if err != nil {
		return nil, err
	}
	def, err := k.Def()
	if err != nil {
		return nil, fmt.Errorf("example %s: %w", e.Workload, err)
	}
	tr, err := schedule.ParseTrace(e.Trace)
	if err != nil {
		return nil, fmt.Errorf("example %s: %w", e.Workload, err)
	}
	s, err := schedule.Replay(def, tr)
	if err != nil {
		return nil, fmt.Errorf("example %s: %w", e.Workload, err)
	}
	f, err := costmodel.ScheduleFeatures(s, WorkOf(k), e.Device, k.Dims())
	if err != nil {
		return nil, fmt.Errorf("example %s: %w", e.Workload, err)
	}
	for i, v := range f {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("example %s: feature %s = %v", e.Workload, costmodel.FeatureNames()[i], v)
		}
	}
	return f, nil
}

// WorkOf is the kernel's schedule-independent cost for the features.
func WorkOf(k kernels.Kernel) costmodel.Work {
	return costmodel.Work{FLOPs: k.FLOPs(), Bytes: k.Bytes()}
}

// CostDevice is what the cost model knows of a CPU at a thread count: the
// hardware's vector width and caches and, when probed, the roofline's
// ceilings at that count.
func CostDevice(hw kernels.Hardware, roof *cpu.Roofline) costmodel.Device {
	d := costmodel.Device{VectorBits: hw.VectorBits, Threads: max(hw.Threads, 1), L1: hw.L1, L2: hw.L2, LLC: hw.LLC}
	if roof != nil {
		if p, ok := roof.At(d.Threads); ok {
			d.PeakGFLOPs, d.ReadGBs = p.PeakGFLOPs, p.ReadGBs
		}
	}
	return d
}

// OnlineModel is the cost model a tune shares across its tasks and
// strategies: it learns every ok measurement once (by task and trace), is
// safe for concurrent use, and is saved per device in the tuning database
// and reloaded by the next tune.
type OnlineModel struct {
	mu      sync.Mutex
	model   costmodel.Model
	learned map[string]bool
	// loaded models already learned the records of earlier runs, which
	// come back as resumed trials and must not be learned twice.
	loaded bool
	focus  string // the task announced or learned last
}

// ModelName is the name under which the model is stored per device.
const ModelName = "gbt"

// NewOnlineModel wraps m (nil: a GBT with default parameters, which ranks
// by the roofline until it has enough measurements).
func NewOnlineModel(m costmodel.Model) *OnlineModel {
	if m == nil {
		m = costmodel.NewGBT(costmodel.DefaultGBTParams())
	}
	return &OnlineModel{model: m, learned: map[string]bool{}}
}

// LoadOnlineModel reads the device's stored model; with none stored (or
// one of another feature version) it starts a fresh one.
func LoadOnlineModel(ctx context.Context, db *tuningdb.DB, device string) (*OnlineModel, error) {
	rec, err := db.Model(ctx, device, ModelName, cgen.CodegenVersion)
	if errors.Is(err, tuningdb.ErrNotFound) {
		return NewOnlineModel(nil), nil
	}
	if err != nil {
		return nil, fmt.Errorf("load cost model: %w", err)
	}
	m, err := costmodel.Unmarshal(rec.Format, rec.Data)
	if errors.Is(err, costmodel.ErrFormat) {
		return NewOnlineModel(nil), nil // trained on other features: retrain
	}
	if err != nil {
		return nil, fmt.Errorf("load cost model of device %s: %w", device, err)
	}
	o := NewOnlineModel(m)
	o.loaded = true
	return o, nil
}

// Save stores the model for the device (replacing the previous one).
func (o *OnlineModel) Save(ctx context.Context, db *tuningdb.DB, device, llmirVersion string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	data, err := o.model.MarshalBinary()
	if err != nil {
		return fmt.Errorf("save cost model: %w", err)
	}
	err = db.PutModel(ctx, tuningdb.Model{DeviceHash: device, Name: ModelName, CodegenVersion: cgen.CodegenVersion,
		Format: o.model.Format(), Data: data, TrainedOn: o.model.Trained(), LLMIRVersion: llmirVersion})
	if err != nil {
		return fmt.Errorf("save cost model: %w", err)
	}
	return nil
}

// Trained is the number of measurements the model was fitted on.
func (o *OnlineModel) Trained() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.model.Trained()
}

// Focus announces that the task's candidates are scored next (an empty
// costmodel.Model Update): a model that weighs the current task's own
// measurements (GBTParams.FocusWeight) refits around it. Best effort: an
// error leaves the model as it was.
func (o *OnlineModel) Focus(task string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.focus == task {
		return
	}
	o.focus = task
	_ = o.model.Update(task, nil, nil)
}

// Predict scores feature vectors (higher = faster).
func (o *OnlineModel) Predict(fs [][]float64) []float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.model.Predict(fs)
}

// Learn replays the ok trials' traces on k, extracts their features and
// updates the model with those not learned before (resumed trials are
// skipped when the model was loaded: it learned them in their run).
func (o *OnlineModel) Learn(ctx context.Context, k kernels.Kernel, task string, dev costmodel.Device, trials []Trial) error {
	o.mu.Lock()
	var todo []Trial
	for _, tr := range trials {
		id := task + "\x00" + string(tr.Trace)
		if o.learned[id] || !tr.Measurement.OK() || !(tr.Measurement.Median > 0) || math.IsInf(tr.Measurement.Median, 0) {
			continue
		}
		o.learned[id] = true
		if tr.Resumed && o.loaded {
			continue
		}
		todo = append(todo, tr)
	}
	o.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	def, err := k.Def()
	if err != nil {
		return err
	}
	var ss []*schedule.Schedule
	var secs []float64
	for _, tr := range todo {
		t, err := schedule.ParseTrace(tr.Trace)
		if err != nil {
			continue
		}
		s, err := schedule.Replay(def, t)
		if err != nil {
			continue
		}
		ss = append(ss, s)
		secs = append(secs, tr.Measurement.Median)
	}
	if len(ss) == 0 {
		return nil
	}
	fs, err := costmodel.ScheduleFeaturesBatch(ctx, ss, WorkOf(k), dev, k.Dims())
	if err != nil {
		return fmt.Errorf("learn %s: %w", k.Name(), err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.focus = task
	if err := o.model.Update(task, fs, secs); err != nil {
		return fmt.Errorf("learn %s: %w", k.Name(), err)
	}
	return nil
}
