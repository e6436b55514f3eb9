package costmodel

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"

	"llmir/schedule"
)

// Example is one measured candidate of the evaluation dataset: a line of
// testdata/*.jsonl.
type Example struct {
	Workload string `json:"workload"`      // kernel name, e.g. linear/M=1,N=512,K=512/f32
	Key      string `json:"key,omitempty"` // tuningdb workload key
	// IR is the kernel's IR workload (ir.Workload JSON), from which the
	// kernel is rebuilt to replay the trace; absent in linear-only datasets
	// written before, whose Workload name says the shape.
	IR       json.RawMessage `json:"ir,omitempty"`
	Threads  int             `json:"threads"`           // threads it ran with
	Device   Device          `json:"device"`            // the machine it was measured on
	Trace    json.RawMessage `json:"trace"`             // schedule trace JSON
	Features []float64       `json:"features,omitzero"` // at FeatureVersion, when stored
	Median   float64         `json:"median"`            // seconds
	// Default marks the kernel's rule-based default schedule, which the
	// tuner measures first whatever the strategy (EvolveSim.DefaultFirst).
	Default bool `json:"default,omitempty"`
}

// Task is the example's task: its workload at its thread count (the same
// trace at another thread count is another measurement problem).
func (e Example) Task() string { return fmt.Sprintf("%s@%dt", e.Workload, max(e.Threads, 1)) }

// ReadDataset reads JSONL examples; errors name the line.
func ReadDataset(r io.Reader) ([]Example, error) {
	var out []Example
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e Example
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("dataset line %d: %w", line, err)
		}
		if e.Workload == "" {
			return nil, fmt.Errorf("dataset line %d: no workload", line)
		}
		if !(e.Median > 0) || math.IsInf(e.Median, 0) {
			return nil, fmt.Errorf("dataset line %d: median %v is not a positive time", line, e.Median)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	return out, nil
}

// ReadDatasetFile reads a JSONL dataset file.
func ReadDatasetFile(path string) ([]Example, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ex, err := ReadDataset(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ex, nil
}

// WriteDataset writes examples as JSONL, one per line.
func WriteDataset(w io.Writer, ex []Example) error {
	enc := json.NewEncoder(w)
	for i, e := range ex {
		if err := enc.Encode(e); err != nil {
			return fmt.Errorf("dataset example %d (%s): %w", i, e.Workload, err)
		}
	}
	return nil
}

// PairwiseAccuracy is the share of pairs of one task's candidates, among
// those whose measured times differ by more than 2% (the measurement
// protocol's tie rule), that the scores order correctly (higher score =
// lower time). NaN when there is no such pair.
func PairwiseAccuracy(scores, seconds []float64) float64 {
	right, all := 0.0, 0.0
	for i := range seconds {
		for j := i + 1; j < len(seconds); j++ {
			a, b := seconds[i], seconds[j]
			if math.Abs(a-b) <= 0.02*math.Min(a, b) {
				continue
			}
			all++
			switch {
			case scores[i] == scores[j]:
				right += 0.5
			case (scores[i] > scores[j]) == (a < b):
				right++
			}
		}
	}
	if all == 0 {
		return math.NaN()
	}
	return right / all
}

// TopKRecall is the share of the k truly fastest candidates that are among
// the k best scored (ties in scores broken by index, so the answer is
// deterministic).
func TopKRecall(scores, seconds []float64, k int) float64 {
	k = min(k, len(seconds))
	if k <= 0 {
		return math.NaN()
	}
	top := func(less func(i, j int) int) map[int]bool {
		idx := make([]int, len(seconds))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, less)
		m := map[int]bool{}
		for _, i := range idx[:k] {
			m[i] = true
		}
		return m
	}
	truth := top(func(i, j int) int { return cmp.Compare(seconds[i], seconds[j]) })
	pred := top(func(i, j int) int { return cmp.Compare(scores[j], scores[i]) })
	hit := 0
	for i := range pred {
		if truth[i] {
			hit++
		}
	}
	return float64(hit) / float64(k)
}

// TaskScore is one held-out task's result.
type TaskScore struct {
	Task     string
	N        int
	Pairwise float64
	TopK     float64
}

// EvalReport is a leave-one-task-out evaluation of one model.
type EvalReport struct {
	Model    string
	K        int
	Tasks    []TaskScore
	Pairwise float64 // mean over tasks
	TopK     float64 // mean over tasks
}

// ErrTooFewTasks is returned by LeaveOneTaskOut with fewer than 2 tasks.
var ErrTooFewTasks = errors.New("evaluation needs at least 2 tasks")

// groupTasks groups examples by task (Example.Task), the tasks sorted: the
// unit the leave-one-task-out evaluations hold out. Every example needs
// Features, and there must be at least 2 tasks (ErrTooFewTasks).
func groupTasks(ex []Example) ([]string, map[string][]Example, error) {
	byTask := map[string][]Example{}
	var tasks []string
	for i, e := range ex {
		if len(e.Features) != NumFeatures {
			return nil, nil, fmt.Errorf("example %d (%s): %d features, want %d", i, e.Workload, len(e.Features), NumFeatures)
		}
		if byTask[e.Task()] == nil {
			tasks = append(tasks, e.Task())
		}
		byTask[e.Task()] = append(byTask[e.Task()], e)
	}
	if len(tasks) < 2 {
		return nil, nil, ErrTooFewTasks
	}
	slices.Sort(tasks)
	return tasks, byTask, nil
}

// samplesOf is the features and median latencies of examples, the form
// Model.Update and Model.Predict take.
func samplesOf(ex []Example) ([][]float64, []float64) {
	var fs [][]float64
	var ss []float64
	for _, e := range ex {
		fs = append(fs, e.Features)
		ss = append(ss, e.Median)
	}
	return fs, ss
}

// trainExcept updates m with every task but held, in tasks' order, then
// announces held (an empty Update): the model search would have on
// meeting held. The error is Update's.
func trainExcept(m Model, tasks []string, byTask map[string][]Example, held string) error {
	for _, t := range tasks {
		if t == held {
			continue
		}
		fs, ss := samplesOf(byTask[t])
		if err := m.Update(t, fs, ss); err != nil {
			return err
		}
	}
	return m.Update(held, nil, nil)
}

// LeaveOneTaskOut trains a fresh model (from newModel) on every task but
// one and scores that one, for each task: the held-out workload setting of
// the issue, in which search meets a shape it has never measured. Examples
// need Features.
func LeaveOneTaskOut(ex []Example, k int, newModel func() Model) (EvalReport, error) {
	tasks, byTask, err := groupTasks(ex)
	if err != nil {
		return EvalReport{}, err
	}
	rep := EvalReport{K: k}
	for _, held := range tasks {
		m := newModel()
		rep.Model = m.Name()
		if err := trainExcept(m, tasks, byTask, held); err != nil {
			return EvalReport{}, fmt.Errorf("train for held-out %s: %w", held, err)
		}
		fs, ss := samplesOf(byTask[held])
		sc := m.Predict(fs)
		ts := TaskScore{Task: held, N: len(ss), Pairwise: PairwiseAccuracy(sc, ss), TopK: TopKRecall(sc, ss, k)}
		rep.Tasks = append(rep.Tasks, ts)
	}
	n := 0.0
	for _, t := range rep.Tasks {
		if !math.IsNaN(t.Pairwise) {
			rep.Pairwise += t.Pairwise
			rep.TopK += t.TopK
			n++
		}
	}
	if n > 0 {
		rep.Pairwise /= n
		rep.TopK /= n
	}
	return rep, nil
}

// SearchSim is the result of SimulateSearch for one held-out task.
type SearchSim struct {
	Task   string
	Pool   int     // measured candidates of the task
	Good   int     // of them within 95% of the pool's best
	Random float64 // expected trials of random order (RandomTrials)
	Guided int     // trials the model-guided order needs
}

// SimulateSearch replays search on the dataset's measured pools: for each
// held-out task, how many trials until a candidate within 95% of the
// pool's best latency (median ≤ best/0.95) is measured, (a) in random
// order, the exact expectation (RandomTrials), and (b) guided by a model
// trained on the other tasks that, each round, measures the batch best
// it scores among the unmeasured and learns from them (Update) before the
// next round — the loop evolutionary search runs, on a fixed candidate
// pool instead of mutated ones. Examples need Features.
func SimulateSearch(ex []Example, batch int, newModel func() Model) ([]SearchSim, error) {
	tasks, byTask, err := groupTasks(ex)
	if err != nil {
		return nil, err
	}
	batch = max(batch, 1)
	var out []SearchSim
	for _, held := range tasks {
		pool := byTask[held]
		good := goodOf(pool)
		sim := SearchSim{Task: held, Pool: len(pool), Good: countTrue(good), Random: RandomTrials(good, -1)}
		m := newModel()
		if err := trainExcept(m, tasks, byTask, held); err != nil {
			return nil, fmt.Errorf("simulate %s: %w", held, err)
		}
		left := make([]int, len(pool))
		for i := range left {
			left[i] = i
		}
		trials := 0
	rounds:
		for len(left) > 0 {
			fs := make([][]float64, len(left))
			for i, j := range left {
				fs[i] = pool[j].Features
			}
			sc := m.Predict(fs)
			order := ByScore(sc)
			var bf [][]float64
			var bs []float64
			picked := map[int]bool{}
			for _, o := range order[:min(batch, len(order))] {
				e := pool[left[o]]
				trials++
				if good[left[o]] {
					sim.Guided = trials
					break rounds
				}
				bf = append(bf, e.Features)
				bs = append(bs, e.Median)
				picked[o] = true
			}
			if err := m.Update(held, bf, bs); err != nil {
				return nil, fmt.Errorf("simulate %s: %w", held, err)
			}
			var rest []int
			for i, j := range left {
				if !picked[i] {
					rest = append(rest, j)
				}
			}
			left = rest
		}
		out = append(out, sim)
	}
	return out, nil
}

// Median is the median of xs (NaN when empty).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// EvolveSim configures SimulateEvolution; zero fields take the defaults of
// search.EvolveOptions (population 128, 16 parents, 25% random, ε 0.1).
type EvolveSim struct {
	Population  int
	Parents     int
	RandomShare float64
	Epsilon     float64
	// MaxDiff is how many sampling decisions a child may differ from its
	// parent in (default 2: search mutates one or two).
	MaxDiff int
	// Transfer is how many of the best traces of the other tasks of the
	// same kernel group lead the first batch (default 1, < 0: none), as
	// search.EvolveOptions.Transfer: of the siblings' bests (each its
	// pool's fastest) that align with the task's draws, those the model
	// scores highest on this task. One that is not in the task's pool
	// counts as a trial that missed (search would have measured it; its
	// time is unknown here): pessimistic for evolution.
	Transfer int
	// Features computes the features of a trace on example e's kernel (the
	// held-out task's), as search scores a transferred trace after
	// replaying it there; an error means it does not replay, and search
	// skips it. Nil: transferred traces outside the task's pool go after
	// those in it, unscored, in sibling order.
	Features func(e Example, trace json.RawMessage) ([]float64, error)
	// DefaultFirst makes a task's Default example its first trial, for
	// random order and evolution alike, as search.Tuner measures the
	// rule-based default first (in evolution's first batch, ahead of the
	// transferred traces and the model's picks).
	DefaultFirst bool
}

// EvolutionSim is the result of SimulateEvolution for one held-out task.
type EvolutionSim struct {
	Task string
	Pool int
	Good int // candidates within 95% of the pool's best
	// DefaultGood: the task's default is good and EvolveSim.DefaultFirst
	// put it first, so both strategies need exactly one trial.
	DefaultGood bool
	Random      float64 // expected trials in random order (RandomTrials)
	Evolution   float64 // mean trials of model-guided evolution (over the seeds)
}

// SimulateEvolution replays model-guided evolutionary search on the
// dataset's measured pools, as SimulateSearch does for pure ranking: for
// each held-out task (the model trained on the others first), each round
// the population is the unmeasured pool candidates that differ from one of
// the fastest measured (the parents) in at most MaxDiff sampling decisions
// — the pool's part of the mutation neighbourhood search would breed —
// plus a RandomShare of fresh unmeasured ones; the model ranks it, the
// batch's best are measured with an ε share at random, and the model
// learns them; the first batch leads with the best trace of another task
// of the same kernel group (EvolveSim.Transfer): of the siblings' bests
// that align with the task's draws, the one the model scores highest, as
// search's transfer picks among those TuneModel hands over. It counts
// trials until a candidate within 95% of the pool's best is measured,
// averaged over seeds 1..seeds (ε and the random share draw). Examples
// need Features and traces with sampling decisions.
func SimulateEvolution(ex []Example, batch, seeds int, newModel func() Model, o EvolveSim) ([]EvolutionSim, error) {
	if o.Population <= 0 {
		o.Population = 128
	}
	if o.Parents <= 0 {
		o.Parents = 16
	}
	if o.RandomShare <= 0 {
		o.RandomShare = 0.25
	}
	if o.Epsilon == 0 {
		o.Epsilon = 0.1
	}
	if o.MaxDiff <= 0 {
		o.MaxDiff = 2
	}
	if o.Transfer == 0 {
		o.Transfer = 1
	}
	batch, seeds = max(batch, 1), max(seeds, 1)
	tasks, byTask, err := groupTasks(ex)
	if err != nil {
		return nil, err
	}
	var out []EvolutionSim
	for _, held := range tasks {
		pool := byTask[held]
		decs := make([][]string, len(pool))
		for i, e := range pool {
			d, err := decisionsOf(e.Trace)
			if err != nil {
				return nil, fmt.Errorf("simulate %s: example %d: %w", held, i, err)
			}
			decs[i] = d
		}
		lead, err := transferLead(tasks, byTask, held, max(o.Transfer, 0))
		if err != nil {
			return nil, fmt.Errorf("simulate %s: %w", held, err)
		}
		lead = alignedLead(pool, lead)
		good := goodOf(pool)
		sim := EvolutionSim{Task: held, Pool: len(pool), Good: countTrue(good)}
		// Trained once on the other tasks, then copied per seed (through
		// its serialization) so that every seed starts from the same model.
		base := newModel()
		if err := trainExcept(base, tasks, byTask, held); err != nil {
			return nil, fmt.Errorf("simulate %s: %w", held, err)
		}
		data, err := base.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("simulate %s: %w", held, err)
		}
		if lead, err = rankLead(pool, decs, lead, base, o.Features); err != nil {
			return nil, fmt.Errorf("simulate %s: %w", held, err)
		}
		def := -1
		if o.DefaultFirst {
			def = slices.IndexFunc(pool, func(e Example) bool { return e.Default })
			sim.DefaultGood = def >= 0 && good[def]
		}
		sim.Random = RandomTrials(good, def)
		for seed := range seeds {
			rng := rand.New(rand.NewPCG(uint64(seed+1), uint64(seed+1)))
			m, err := Unmarshal(base.Format(), data)
			if err != nil {
				return nil, fmt.Errorf("simulate %s: %w", held, err)
			}
			n, err := evolveOnPool(pool, decs, def, lead, good, m, held, batch, o, rng)
			if err != nil {
				return nil, err
			}
			sim.Evolution += float64(n)
		}
		sim.Evolution /= float64(seeds)
		out = append(out, sim)
	}
	return out, nil
}

// evolveOnPool runs one seed of SimulateEvolution on one pool and returns
// the trials until a good candidate is measured.
func evolveOnPool(pool []Example, decs [][]string, def int, lead []leadTrace, good []bool, m Model, task string, batch int, o EvolveSim, rng *rand.Rand) (int, error) {
	measured := make([]bool, len(pool))
	var done []int
	trials := 0
	// The default (def ≥ 0) and the transferred traces lead the first
	// batch, as the tuner and search's first Propose put them: those in the
	// pool are measured (and learned), the others are trials that missed
	// (-1).
	var first []int
	if def >= 0 {
		first, measured[def] = append(first, def), true
	}
	// Search's transfer takes up to Transfer of the aligned traces, in
	// order, skipping one already measured (the default).
	for taken := 0; taken < max(o.Transfer, 0) && len(first) < batch && len(lead) > 0; lead = lead[1:] {
		l := lead[0]
		i := slices.IndexFunc(decs, func(d []string) bool { return slices.Equal(d, l.decs) })
		if i >= 0 && slices.Contains(first, i) {
			continue
		}
		first, taken = append(first, i), taken+1
		if i >= 0 {
			measured[i] = true // not proposed again in this batch
		}
	}
	for round := 0; len(done) < len(pool); round++ {
		pick := pickBatch(pool, decs, measured, done, m, batch, o, rng)
		if round == 0 && len(first) > 0 {
			pick = append(first, pickBatch(pool, decs, measured, done, m, batch-len(first), o, rng)...)
		}
		var bf [][]float64
		var bs []float64
		for _, i := range pick {
			trials++
			if i < 0 {
				continue
			}
			if good[i] {
				return trials, nil
			}
			measured[i] = true
			done = append(done, i)
			bf = append(bf, pool[i].Features)
			bs = append(bs, pool[i].Median)
		}
		if err := m.Update(task, bf, bs); err != nil {
			return 0, fmt.Errorf("simulate %s: %w", task, err)
		}
	}
	return trials, nil
}

// RandomTrials is the expected number of trials random order needs to
// measure a good candidate (good[i]) of a pool, exactly: def (≥ 0) is
// measured first, as the tuner measures the rule-based default before any
// strategy's pick, then the others in a uniformly random order, in which
// the first of G good among N comes on average at (N+1)/(G+1). Exact
// rather than averaged over seeds: for pools of a few dozen points a
// handful of seeds moves the median over tasks by a trial or more. +Inf
// when nothing is good.
func RandomTrials(good []bool, def int) float64 {
	n, g := len(good), countTrue(good)
	lead := 0.0
	if def >= 0 && def < n {
		if good[def] {
			return 1
		}
		n, lead = n-1, 1
	}
	if g == 0 {
		return math.Inf(1)
	}
	return lead + float64(n+1)/float64(g+1)
}

// goodOf marks the pool's candidates within 95% of its best latency
// (median ≤ best/0.95): the search simulations' target.
func goodOf(pool []Example) []bool {
	best := math.Inf(1)
	for _, e := range pool {
		best = min(best, e.Median)
	}
	good := make([]bool, len(pool))
	for i, e := range pool {
		good[i] = e.Median <= best/0.95
	}
	return good
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// pickBatch is one Propose of search's evolutionary strategy on the pool:
// the population is the unmeasured candidates near the parents (the
// fastest of done) plus a random share of far ones, ranked by m, the
// best n taken with an ε share at random. Pool indices, in measuring
// order.
func pickBatch(pool []Example, decs [][]string, measured []bool, done []int, m Model, n int, o EvolveSim, rng *rand.Rand) []int {
	if n <= 0 {
		return nil
	}
	parents := slices.Clone(done)
	slices.SortStableFunc(parents, func(a, b int) int { return cmp.Compare(pool[a].Median, pool[b].Median) })
	parents = parents[:min(len(parents), o.Parents)]
	var near, far []int
	for i := range pool {
		if measured[i] {
			continue
		}
		isNear := false
		for _, p := range parents {
			if diffCount(decs[i], decs[p]) <= o.MaxDiff {
				isNear = true
				break
			}
		}
		if isNear {
			near = append(near, i)
		} else {
			far = append(far, i)
		}
	}
	rng.Shuffle(len(near), func(a, b int) { near[a], near[b] = near[b], near[a] })
	rng.Shuffle(len(far), func(a, b int) { far[a], far[b] = far[b], far[a] })
	nRandom := int(math.Ceil(o.RandomShare * float64(o.Population)))
	if len(parents) == 0 {
		nRandom = o.Population
	}
	pop := append(near[:min(len(near), o.Population-min(nRandom, len(far)))], far[:min(len(far), nRandom)]...)
	if len(pop) == 0 {
		pop = append(near, far...)
	}
	fs := make([][]float64, len(pop))
	for j, i := range pop {
		fs[j] = pool[i].Features
	}
	sc := m.Predict(fs)
	order := ByScore(sc)
	n = min(n, len(pop))
	explore := Explored(o.Epsilon, n)
	pick := slices.Clone(order[:n-explore])
	rest := slices.Clone(order[n-explore:])
	rng.Shuffle(len(rest), func(a, b int) { rest[a], rest[b] = rest[b], rest[a] })
	pick = append(pick, rest[:min(explore, len(rest))]...)
	out := make([]int, len(pick))
	for k, j := range pick {
		out[k] = pop[j]
	}
	return out
}

// leadTrace is a transferred trace: its sampling decisions (decisionsOf)
// and its structure (alignOf).
type leadTrace struct {
	trace json.RawMessage
	decs  []string
	align string
}

// rankLead orders the transferred traces by m's score on the held-out
// task, best first, as search's transfer does before it takes
// EvolveOptions.Transfer of them: the features of one in the pool are its
// example's, of another features' (dropped when it does not replay; with
// features nil, kept after the scored ones in sibling order). Ties keep
// the sibling order.
func rankLead(pool []Example, decs [][]string, lead []leadTrace, m Model, features func(Example, json.RawMessage) ([]float64, error)) ([]leadTrace, error) {
	var scored, rest []leadTrace
	var fs [][]float64
	for _, l := range lead {
		if i := slices.IndexFunc(decs, func(d []string) bool { return slices.Equal(d, l.decs) }); i >= 0 {
			scored, fs = append(scored, l), append(fs, pool[i].Features)
			continue
		}
		if features == nil {
			rest = append(rest, l)
			continue
		}
		f, err := features(pool[0], l.trace)
		if err != nil {
			continue // does not replay here: search skips it
		}
		if len(f) != NumFeatures {
			return nil, fmt.Errorf("transferred trace: %d features, want %d", len(f), NumFeatures)
		}
		scored, fs = append(scored, l), append(fs, f)
	}
	if len(scored) > 1 {
		sc := m.Predict(fs)
		order := ByScore(sc)
		ranked := make([]leadTrace, len(scored))
		for k, i := range order {
			ranked[k] = scored[i]
		}
		scored = ranked
	}
	return append(scored, rest...), nil
}

// transferLead is the best trace of each other task of held's kernel
// group (the same IR op group, or for examples without IR the same name
// before the first '/'), the siblings ordered by their best time — what
// search.TuneModel hands Evolutionary.Transfer — all of them when n > 0:
// search skips those that do not align with the kernel's own draws
// (alignedLead) before it takes n.
func transferLead(tasks []string, byTask map[string][]Example, held string, n int) ([]leadTrace, error) {
	if n <= 0 {
		return nil, nil
	}
	g := groupOf(byTask[held][0])
	var bests []Example
	for _, t := range tasks {
		if t == held || groupOf(byTask[t][0]) != g {
			continue
		}
		bests = append(bests, slices.MinFunc(byTask[t], func(a, b Example) int { return cmp.Compare(a.Median, b.Median) }))
	}
	slices.SortStableFunc(bests, func(a, b Example) int { return cmp.Compare(a.Median, b.Median) })
	var out []leadTrace
	for _, e := range bests {
		d, err := decisionsOf(e.Trace)
		if err != nil {
			return nil, fmt.Errorf("transfer from %s: %w", e.Task(), err)
		}
		out = append(out, leadTrace{trace: e.Trace, decs: d, align: alignOf(e.Trace)})
	}
	return out, nil
}

// alignedLead keeps the transferred traces that align with one of the
// pool's random draws (its examples other than the default), as search's
// transfer keeps those that align with one of a few sampled schedules of
// the kernel: a sibling's rule-based default, whose trace has no sampling
// steps, aligns with no draw of a kernel that has knobs, even where it
// matches this pool's own default step for step.
func alignedLead(pool []Example, lead []leadTrace) []leadTrace {
	draws := map[string]bool{}
	for _, e := range pool {
		if !e.Default {
			draws[alignOf(e.Trace)] = true
		}
	}
	var out []leadTrace
	for _, l := range lead {
		if draws[l.align] {
			out = append(out, l)
		}
	}
	return out
}

// groupOf is the example's kernel group: its IR workload's op group, else
// its name up to the first '/'.
func groupOf(e Example) string {
	var w struct {
		Group []string `json:"group"`
	}
	if len(e.IR) > 0 && json.Unmarshal(e.IR, &w) == nil && len(w.Group) > 0 {
		return strings.Join(w.Group, "+")
	}
	name, _, _ := strings.Cut(e.Workload, "/")
	return name
}

// alignOf is a trace's structure with its decisions left out: two traces
// with the same one align as search's aligned requires (the same steps;
// the same operands, domains and decision lengths of every sampling step),
// so either's decisions are legal on the other's kernel. "" when it does
// not parse.
func alignOf(trace json.RawMessage) string {
	t, err := schedule.ParseTrace(trace)
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, in := range t.Insts {
		fmt.Fprint(&b, in.Op)
		if in.Decision != nil {
			fmt.Fprint(&b, in.Args, in.Ints, "#", len(in.Decision))
		}
		b.WriteByte(';')
	}
	return b.String()
}

// decisionsOf lists a trace's sampling decisions, each with its step's
// position and operands, so that two traces compare step by step.
func decisionsOf(trace json.RawMessage) ([]string, error) {
	t, err := schedule.ParseTrace(trace)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, in := range t.Insts {
		if in.Decision != nil {
			out = append(out, fmt.Sprint(i, in.Op, in.Ints, in.Decision))
		}
	}
	return out, nil
}

// diffCount is how many sampling decisions differ (steps that do not
// align count as different).
func diffCount(a, b []string) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// Explored is how many of a batch of n the ε-greedy step draws at random
// instead of taking the model's best: ε·n rounded, at least one in a batch
// of 4 or more when ε > 0. search.Evolutionary and SimulateEvolution share
// it so that the simulation stays a mirror of the search.
func Explored(epsilon float64, n int) int {
	if epsilon <= 0 {
		return 0
	}
	explore := int(math.Round(epsilon * float64(n)))
	if n >= 4 {
		explore = max(explore, 1)
	}
	return explore
}
