package search_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"llmir/search"
)

// synthTask is a fake task: its best time after n trials follows
// floor + (start-floor)·exp(-n/rate), and it is exhausted at cap trials.
type synthTask struct {
	start, floor, rate float64
	cap                int
}

func (s synthTask) best(n int) float64 {
	return s.floor + (s.start-s.floor)*math.Exp(-float64(n)/s.rate)
}

func runSynth(t *testing.T, sc *search.Scheduler, tasks []synthTask) ([]search.TaskState, []int) {
	t.Helper()
	var order []int
	st, err := sc.Run(context.Background(), func(_ context.Context, i, trials int) (search.StepResult, error) {
		order = append(order, i)
		tk := tasks[i]
		n := trials
		ex := false
		if tk.cap > 0 && n >= tk.cap {
			n, ex = tk.cap, true
		}
		return search.StepResult{Best: tk.best(n), Trials: n, Exhausted: ex}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return st, order
}

// TestSchedulerAllocation: one round-robin pass in task order, then the
// budget goes where weight × slope is largest; budgets, per-task caps,
// exhaustion and convergence stop tasks.
func TestSchedulerAllocation(t *testing.T) {
	cases := []struct {
		name   string
		tasks  []search.SchedTask
		synth  []synthTask
		budget search.ModelBudget
		check  func(t *testing.T, st []search.TaskState, order []int)
	}{
		{
			name:   "weight-wins",
			tasks:  []search.SchedTask{{Name: "light", Weight: 1}, {Name: "heavy", Weight: 10}},
			synth:  []synthTask{{start: 1e-3, floor: 1e-4, rate: 40}, {start: 1e-3, floor: 1e-4, rate: 40}},
			budget: search.ModelBudget{Trials: 96},
			check: func(t *testing.T, st []search.TaskState, order []int) {
				if order[0] != 0 || order[1] != 1 {
					t.Errorf("round robin order %v, want 0 then 1 first", order[:2])
				}
				if st[1].Trials < 3*st[0].Trials {
					t.Errorf("heavy task got %d trials, light %d: want ≥ 3×", st[1].Trials, st[0].Trials)
				}
				if got := st[0].Trials + st[1].Trials; got != 96 {
					t.Errorf("total trials %d, want the budget 96", got)
				}
			},
		},
		{
			name:   "converged-task-stops",
			tasks:  []search.SchedTask{{Name: "flat", Weight: 100}, {Name: "improving", Weight: 1}},
			synth:  []synthTask{{start: 1e-3, floor: 1e-3, rate: 1}, {start: 1e-3, floor: 1e-5, rate: 30}},
			budget: search.ModelBudget{Trials: 120},
			check: func(t *testing.T, st []search.TaskState, _ []int) {
				if st[0].Stopped != search.StopConverged {
					t.Errorf("flat task stopped %q, want converged", st[0].Stopped)
				}
				if st[0].Trials > 8*4 {
					t.Errorf("flat task got %d trials after it stopped improving", st[0].Trials)
				}
				if st[1].Trials <= st[0].Trials {
					t.Errorf("improving task got %d trials, flat %d", st[1].Trials, st[0].Trials)
				}
			},
		},
		{
			name:   "per-task-and-exhausted",
			tasks:  []search.SchedTask{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}},
			synth:  []synthTask{{start: 1e-3, floor: 1e-5, rate: 100}, {start: 1e-3, floor: 1e-5, rate: 100, cap: 12}},
			budget: search.ModelBudget{Trials: 1000, PerTask: 40},
			check: func(t *testing.T, st []search.TaskState, _ []int) {
				if st[0].Trials != 40 || st[0].Stopped != search.StopPerTask {
					t.Errorf("task a: %d trials, stopped %q; want 40, per-task", st[0].Trials, st[0].Stopped)
				}
				if st[1].Trials != 12 || st[1].Stopped != search.StopExhausted {
					t.Errorf("task b: %d trials, stopped %q; want 12, exhausted", st[1].Trials, st[1].Stopped)
				}
			},
		},
		{
			name:   "small-budget-shared",
			tasks:  []search.SchedTask{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}, {Name: "c", Weight: 1}},
			synth:  []synthTask{{start: 1, floor: 0.1, rate: 5}, {start: 1, floor: 0.1, rate: 5}, {start: 1, floor: 0.1, rate: 5}},
			budget: search.ModelBudget{Trials: 6},
			check: func(t *testing.T, st []search.TaskState, _ []int) {
				for i, s := range st {
					if s.Trials != 2 {
						t.Errorf("task %d: %d trials, want 2 (6 shared by 3)", i, s.Trials)
					}
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := &search.Scheduler{Tasks: c.tasks, Budget: c.budget, Step: 8}
			st, order := runSynth(t, sc, c.synth)
			c.check(t, st, order)
		})
	}
}

// TestSchedulerGainFormula checks gain_i on a hand-computed history.
func TestSchedulerGainFormula(t *testing.T) {
	sc := &search.Scheduler{Tasks: []search.SchedTask{{Name: "x", Weight: 2, Bound: 1}}, Budget: search.ModelBudget{Trials: 16}, Step: 8}
	var gains []float64
	bests := []float64{10, 6}
	st, err := sc.Run(context.Background(), func(_ context.Context, i, trials int) (search.StepResult, error) {
		return search.StepResult{Best: bests[min(trials/8-1, 1)], Trials: trials}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	gains = append(gains, sc.Gain(0, st[0]))
	// After 16 trials: back = (10-6)/8 = 0.5, fwd = (6-1)/16; α = 0.2.
	want := 2 * (0.2*0.5 + 0.8*5.0/16)
	if math.Abs(gains[0]-want) > 1e-12 {
		t.Errorf("gain %v, want %v", gains[0], want)
	}
}

// TestSchedulerStopsOnTimeAndCancel: a time budget ends the run between
// steps; a cancelled context ends it with the context's error and the
// states so far.
func TestSchedulerStopsOnTimeAndCancel(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	tasks := []search.SchedTask{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}}
	sc := &search.Scheduler{Tasks: tasks, Budget: search.ModelBudget{Time: time.Minute}, Step: 4, Now: clock}
	steps := 0
	_, err := sc.Run(context.Background(), func(_ context.Context, i, trials int) (search.StepResult, error) {
		steps++
		now = now.Add(10 * time.Second)
		return search.StepResult{Best: 1 / float64(trials), Trials: trials}, nil
	})
	if err != nil || steps != 6 {
		t.Errorf("time budget: %d steps, err %v; want 6 steps of 10 s in a minute", steps, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sc = &search.Scheduler{Tasks: tasks, Budget: search.ModelBudget{Trials: 100}, Step: 4}
	st, err := sc.Run(ctx, func(_ context.Context, i, trials int) (search.StepResult, error) {
		if i == 1 {
			cancel()
		}
		return search.StepResult{Best: 1, Trials: trials}, nil
	})
	if !errors.Is(err, context.Canceled) || st[0].Trials != 4 || st[1].Trials != 4 {
		t.Errorf("cancel: err %v, states %+v", err, st)
	}
}
