package search

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// SchedTask is one task of the Scheduler: a workload and how much a second
// of it is worth.
type SchedTask struct {
	Name string
	// Weight is how often the task runs per token (occurrences per call
	// over tokens per call, summed over the model's functions).
	Weight float64
	// Bound is a lower bound on the task's time in seconds (its roofline
	// time; 0 when unknown): the opportunity left is best − Bound.
	Bound float64
	// Cost is the a-priori wall time of one trial in seconds (TrialCost;
	// 0 when unknown). After each step the scheduler uses the observed
	// seconds per trial instead.
	Cost float64
}

// ModelBudget bounds a model-level tune. Zero fields are unbounded; with
// neither Trials nor Time set, Trials is DefaultTrials per task.
type ModelBudget struct {
	// Trials counts every task's distinct traces on the device, records
	// from earlier runs included, so a rerun with the same budget resumes
	// and stops where the last one did.
	Trials int
	Time   time.Duration
	// PerTask caps one task's trials.
	PerTask int
}

// StepResult is what a task reports after a step.
type StepResult struct {
	Best      float64 // best median seconds so far (+Inf: none ok)
	Trials    int     // the task's trials now, resumed ones included
	Exhausted bool    // its strategy found nothing new
}

// Stop reasons of a task.
const (
	StopBudget    = "budget"    // the total budget ran out first
	StopPerTask   = "per-task"  // reached ModelBudget.PerTask
	StopConverged = "converged" // no gain in Patience steps
	StopExhausted = "exhausted" // the strategy found nothing new
)

// TaskState is the scheduler's view of one task.
type TaskState struct {
	Trials  int
	Best    float64
	Steps   int
	Stopped string // empty while it may still get trials
	// Seconds is the wall time the task's steps took; PerTrial the
	// seconds per trial of its last step that measured anything (0:
	// none yet), LastStep that step's seconds.
	Seconds  float64
	PerTrial float64
	LastStep float64
	// history is the best after each step, with the trials at that step.
	history []point
	stalled int
}

type point struct {
	trials int
	best   float64
}

// Scheduler divides a trial budget among tasks as TVM's gradient-based
// task scheduler does. One round-robin pass first gives every task its
// first step (the rule-based default and a first batch); after that each
// step goes to the task with the largest expected gain per trial,
//
//	gain_i = w_i · (α · back_i + (1 − α) · fwd_i)
//	back_i = (best_i(s−Δ) − best_i(s)) / (n_i(s) − n_i(s−Δ))
//	fwd_i  = max(best_i(s) − bound_i, 0) / n_i(s)
//
// where w_i is the task's weight (runs per token), best_i(s) its best
// seconds after its step s, n_i its trials, Δ = Window steps back (the
// first step when fewer), bound_i its roofline lower bound: back is the
// recent improvement slope (seconds per trial), fwd an optimistic slope
// assuming the remaining opportunity shrinks as fast as it did on average
// so far. gain_i is seconds per token saved per trial; ties go to the
// earlier task. Under a time budget the pick divides gain_i by the task's
// seconds per trial (observed, else SchedTask.Cost): a trial of a prefill
// GEMM takes seconds, one of a decode norm a fraction of one, and time,
// not trials, is what runs out. A task stops when it reaches PerTask trials, its strategy
// is exhausted, or Patience of its steps in a row improved its best by less
// than MinGain (early stop). The run ends when the total trials reach
// Budget.Trials, Budget.Time has passed (checked between steps), every
// task stopped, or the context ends. Under a time budget a step is not cut
// short, so after the first one a task whose next step is expected (its
// seconds per trial × the step's trials) to run past the deadline is
// passed over, and the run ends when no task's step fits; the deadline
// leaves room for Reserve trials of every stepped task after the search.
//
// The round-robin pass visits the tasks by decreasing weight, so that the
// workloads that run most per token (decode's, one call per token) are
// reached before a time budget can run out on prefill's. With StepTime
// set, a task's steps are sized to about that much wall time: between
// MinStep and Step trials, by its seconds per trial.
type Scheduler struct {
	Tasks  []SchedTask
	Budget ModelBudget
	// Step is the trials one step asks of a task (default 8).
	Step int
	// Alpha weighs the backward slope (default 0.2, TVM's); Window is Δ
	// (default 3).
	Alpha  float64
	Window int
	// Patience and MinGain define convergence (defaults 3 and 0.01: three
	// steps in a row under 1% better).
	Patience int
	MinGain  float64
	// Reserve is how many trials of each stepped task run after the
	// search (the confirmation: its fastest trials and its default
	// measured again). Under a time budget their expected time (see
	// reserveOf) is kept out of the search's deadline, so that the whole
	// run, confirmation included, ends near Budget.Time.
	Reserve int
	// StepTime is the wall time a step aims at (see above). Default: with
	// a time budget, Budget.Time / (2 × tasks), so that the round-robin
	// pass takes about half the budget; without one, 0 (every step Step
	// trials).
	StepTime time.Duration
	Now      func() time.Time
}

// MinStep is the fewest trials a sized step asks for: the default and one
// candidate on a task's first step.
const MinStep = 2

func (s *Scheduler) defaults() {
	if s.Step <= 0 {
		s.Step = 8
	}
	if s.Alpha <= 0 {
		s.Alpha = 0.2
	}
	if s.Window <= 0 {
		s.Window = 3
	}
	if s.Patience <= 0 {
		s.Patience = 3
	}
	if s.MinGain <= 0 {
		s.MinGain = 0.01
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Budget.Trials <= 0 && s.Budget.Time <= 0 {
		s.Budget.Trials = DefaultTrials * max(len(s.Tasks), 1)
	}
	if s.StepTime <= 0 && s.Budget.Time > 0 {
		s.StepTime = s.Budget.Time / time.Duration(2*max(len(s.Tasks), 1))
	}
}

// perTrial is the task's seconds per trial: observed, else a priori (0:
// unknown).
func (s *Scheduler) perTrial(i int, t TaskState) float64 {
	if t.PerTrial > 0 {
		return t.PerTrial
	}
	return s.Tasks[i].Cost
}

// reserveOf is the time kept for task i's Reserve trials after the search
// (the confirmation measures at most Reserve of them, and no more than the
// task has): at least the time of its last step, which like the
// confirmation makes the problem if it was dropped and starts a harness,
// and more when the confirmation measures more trials than that step
// did. On a --time 4m tune of llama-3-8b f32 (2-core machine) the tasks'
// last steps added up to 218 s and the confirmation took 163 s; Reserve ×
// seconds per trial added up to 320 s.
func (s *Scheduler) reserveOf(i int, t TaskState) float64 {
	if s.Reserve <= 0 {
		return 0
	}
	return max(t.LastStep, float64(min(s.Reserve, max(t.Trials, 1)))*s.perTrial(i, t))
}

// stepSize is how many trials task i's next step asks for.
func (s *Scheduler) stepSize(i int, t TaskState) int {
	c := s.perTrial(i, t)
	if s.StepTime <= 0 || c <= 0 {
		return s.Step
	}
	n := int(s.StepTime.Seconds() / c)
	return min(max(n, MinStep), s.Step)
}

// roundRobin is the order of the first pass: by decreasing weight, ties
// in task order.
func (s *Scheduler) roundRobin() []int {
	order := make([]int, len(s.Tasks))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(s.Tasks[b].Weight, s.Tasks[a].Weight) })
	return order
}

// StepFunc runs task i until it has (at least tried to reach) trials
// trials in all and reports its state. It is the scheduler's only contact
// with measurement, so the allocation logic is testable without a target.
type StepFunc func(ctx context.Context, task, trials int) (StepResult, error)

// Run allocates the budget; it returns the tasks' states (also on error,
// as far as they got) and the first error, wrapping the context's when
// cancelled.
func (s *Scheduler) Run(ctx context.Context, step StepFunc) ([]TaskState, error) {
	s.defaults()
	start := s.Now()
	st := make([]TaskState, len(s.Tasks))
	for i := range st {
		st[i].Best = math.Inf(1)
	}
	total := func() int {
		n := 0
		for _, t := range st {
			n += t.Trials
		}
		return n
	}
	// reserved is the expected time of the trials kept for after the
	// search, for the tasks stepped so far.
	reserved := func() float64 {
		var r float64
		for i, t := range st {
			if t.Trials > 0 {
				r += s.reserveOf(i, t)
			}
		}
		return r
	}
	// left is the search's time left: the budget less the time spent and
	// reserved.
	left := func() float64 { return (s.Budget.Time - s.Now().Sub(start)).Seconds() - reserved() }
	timeUp := func() bool { return s.Budget.Time > 0 && left() <= 0 }
	// fits: under a time budget, task i's next step of n trials is expected
	// to end before the deadline (a step is not cut short, and one trial
	// of a prefill lm_head takes minutes), with the task's own reserve if
	// it was not stepped yet; a task with no estimate fits. timeLeft is
	// left() at the decision (a pick weighs every task against one value).
	fits := func(i, n int, timeLeft float64) bool {
		if s.Budget.Time <= 0 {
			return true
		}
		c := s.perTrial(i, st[i]) * float64(n)
		if st[i].Trials == 0 && s.Reserve > 0 {
			c *= 2 // its own confirmation: about one more such step
		}
		return c <= timeLeft
	}
	do := func(i, target int) error {
		if s.Budget.PerTask > 0 {
			target = min(target, s.Budget.PerTask)
		}
		t0 := s.Now()
		r, err := step(ctx, i, target)
		dt := s.Now().Sub(t0).Seconds()
		t := &st[i]
		t.Steps++
		t.Seconds += dt
		if n := r.Trials - t.Trials; n > 0 && dt > 0 {
			t.PerTrial, t.LastStep = dt/float64(n), dt
		}
		prev := t.Best
		t.Trials, t.Best = max(r.Trials, t.Trials), min(r.Best, t.Best)
		t.history = append(t.history, point{t.Trials, t.Best})
		if err != nil {
			return fmt.Errorf("task %s: %w", s.Tasks[i].Name, err)
		}
		if !math.IsInf(prev, 1) && t.Best > prev*(1-s.MinGain) {
			t.stalled++
		} else if !math.IsInf(t.Best, 1) {
			t.stalled = 0
		}
		switch {
		case r.Exhausted:
			t.Stopped = StopExhausted
		case s.Budget.PerTask > 0 && t.Trials >= s.Budget.PerTask:
			t.Stopped = StopPerTask
		case t.stalled >= s.Patience:
			t.Stopped = StopConverged
		}
		return nil
	}
	// Round robin: every task's first step, the default included; a total
	// budget smaller than one step per task is shared evenly (at least
	// the default of each).
	share := s.Step
	if s.Budget.Trials > 0 && len(s.Tasks) > 0 {
		share = max(s.Budget.Trials/len(s.Tasks), 1)
	}
	for n, i := range s.roundRobin() {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if timeUp() && n > 0 {
			break
		}
		size := min(s.stepSize(i, st[i]), share)
		if n > 0 && !fits(i, size, left()) {
			continue
		}
		if err := do(i, size); err != nil {
			return st, err
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		trialsLeft := math.MaxInt
		if s.Budget.Trials > 0 {
			trialsLeft = s.Budget.Trials - total()
		}
		if trialsLeft <= 0 || timeUp() {
			break
		}
		size := func(i int) int { return min(s.stepSize(i, st[i]), trialsLeft) }
		timeLeft := left()
		i := s.pick(st, func(i int) bool { return fits(i, size(i), timeLeft) })
		if i < 0 {
			break // every task stopped, or none has a step that fits the time left
		}
		if err := do(i, st[i].Trials+size(i)); err != nil {
			return st, err
		}
	}
	for i := range st {
		if st[i].Stopped == "" {
			st[i].Stopped = StopBudget
		}
	}
	return st, nil
}

// Gain is gain_i of the formula above for a task's state.
func (s *Scheduler) Gain(i int, t TaskState) float64 {
	w := s.Tasks[i].Weight
	h := t.history
	if len(h) == 0 || math.IsInf(t.Best, 1) {
		// Nothing ok yet: worth one more step before anything that
		// already improves, but only after tasks with a known slope.
		return 0
	}
	cur := h[len(h)-1]
	back := 0.0
	if len(h) > 1 {
		old := h[max(len(h)-1-s.Window, 0)]
		if dn := cur.trials - old.trials; dn > 0 && !math.IsInf(old.best, 1) {
			back = (old.best - cur.best) / float64(dn)
		}
	}
	fwd := math.Max(cur.best-s.Tasks[i].Bound, 0) / float64(max(cur.trials, 1))
	return w * (s.Alpha*back + (1-s.Alpha)*fwd)
}

// pick is the running task with the largest gain among those ok accepts
// (-1: none).
func (s *Scheduler) pick(st []TaskState, ok func(i int) bool) int {
	best, bestGain := -1, math.Inf(-1)
	for i, t := range st {
		if t.Stopped != "" || !ok(i) {
			continue
		}
		g := s.Gain(i, t)
		if c := s.perTrial(i, t); s.Budget.Time > 0 && c > 0 {
			g /= c
		}
		if g > bestGain {
			best, bestGain = i, g
		}
	}
	return best
}
