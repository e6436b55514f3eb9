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

// TestSchedulerAllocation: one round-robin pass by decreasing weight, then the
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
				if order[0] != 1 || order[1] != 0 {
					t.Errorf("round robin order %v, want the heavy task 1 first, then 0", order[:2])
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

// TestSchedulerSizesStepsByCost: under a time budget the round-robin pass
// visits the heaviest task first, sizes each task's step to StepTime by
// its seconds per trial (a priori Cost, then as observed), never below
// MinStep nor above Step, and later picks divide the gain by those
// seconds.
func TestSchedulerSizesStepsByCost(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	cases := []struct {
		name      string
		tasks     []search.SchedTask
		perTrial  []float64 // true seconds per trial of each task
		budget    search.ModelBudget
		stepTime  time.Duration
		wantOrder []int // first len(wantOrder) steps
		wantFirst []int // trials of each task's first step
	}{
		{
			name: "decode-before-prefill",
			tasks: []search.SchedTask{
				{Name: "prefill-gemm", Weight: 0.125, Cost: 4},
				{Name: "prefill-lm-head", Weight: 0.002, Cost: 40},
				{Name: "decode-gemv", Weight: 64, Cost: 0.5},
			},
			perTrial:  []float64{4, 40, 0.5},
			budget:    search.ModelBudget{Time: 10 * time.Minute},
			stepTime:  16 * time.Second,
			wantOrder: []int{2, 0, 1},
			wantFirst: []int{4, search.MinStep, 8},
		},
		{
			name:      "default-step-time-half-the-budget",
			tasks:     []search.SchedTask{{Name: "a", Weight: 1, Cost: 10}, {Name: "b", Weight: 2, Cost: 1}},
			perTrial:  []float64{10, 1},
			budget:    search.ModelBudget{Time: 2 * time.Minute}, // StepTime 30 s
			wantOrder: []int{1, 0},
			wantFirst: []int{3, 8},
		},
		{
			name:      "trial-budget-unsized",
			tasks:     []search.SchedTask{{Name: "a", Weight: 1, Cost: 10}, {Name: "b", Weight: 1, Cost: 1}},
			perTrial:  []float64{10, 1},
			budget:    search.ModelBudget{Trials: 64},
			wantOrder: []int{0, 1},
			wantFirst: []int{8, 8},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sc := &search.Scheduler{Tasks: c.tasks, Budget: c.budget, Step: 8, StepTime: c.stepTime, Now: clock}
			var order []int
			first := make([]int, len(c.tasks))
			trials := make([]int, len(c.tasks))
			st, err := sc.Run(context.Background(), func(_ context.Context, i, target int) (search.StepResult, error) {
				order = append(order, i)
				n := target - trials[i]
				if first[i] == 0 {
					first[i] = n
				}
				trials[i] = target
				now = now.Add(time.Duration(float64(n) * c.perTrial[i] * float64(time.Second)))
				return search.StepResult{Best: 1 / float64(target), Trials: target}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for j, want := range c.wantOrder {
				if j >= len(order) || order[j] != want {
					t.Fatalf("steps %v, want %v first", order, c.wantOrder)
				}
			}
			for i, want := range c.wantFirst {
				if first[i] != want {
					t.Errorf("task %s: first step %d trials, want %d", c.tasks[i].Name, first[i], want)
				}
				if st[i].Steps > 0 && math.Abs(st[i].PerTrial-c.perTrial[i]) > 1e-9 {
					t.Errorf("task %s: observed %v s per trial, want %v", c.tasks[i].Name, st[i].PerTrial, c.perTrial[i])
				}
			}
		})
	}
}

// TestSchedulerSkipsStepsPastTheDeadline: under a time budget a task whose
// next step would run past the deadline is passed over — in the
// round-robin pass and after it — and the run ends when no step fits,
// instead of starting a long step (a prefill lm_head's trial takes
// minutes) just before the deadline.
func TestSchedulerSkipsStepsPastTheDeadline(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	tasks := []search.SchedTask{
		{Name: "decode", Weight: 64, Cost: 1},
		{Name: "prefill-lm-head", Weight: 0.002, Cost: 40},
	}
	perTrial := []float64{1, 40}
	sc := &search.Scheduler{Tasks: tasks, Budget: search.ModelBudget{Time: time.Minute}, Step: 8, StepTime: 8 * time.Second, Now: clock}
	trials := make([]int, len(tasks))
	steps := make([]int, len(tasks))
	st, err := sc.Run(context.Background(), func(_ context.Context, i, target int) (search.StepResult, error) {
		n := target - trials[i]
		steps[i]++
		trials[i] = target
		now = now.Add(time.Duration(float64(n) * perTrial[i] * float64(time.Second)))
		return search.StepResult{Best: 1 + 1/float64(target), Trials: target}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The decode task's 8-trial steps (8 s each) fill the minute; the
	// lm_head's first step (MinStep trials, 80 s) never fits after it.
	if steps[1] != 0 {
		t.Errorf("the lm_head task stepped %d times: a step of 80 s started with at most 52 s left", steps[1])
	}
	if elapsed := now.Sub(time.Unix(0, 0)); elapsed > time.Minute {
		t.Errorf("run took %v, past its one-minute budget", elapsed)
	}
	if st[0].Trials < 48 || st[1].Stopped != search.StopBudget {
		t.Errorf("states %+v: want the decode task to use the minute and the lm_head stopped by the budget", st)
	}
}

// The confirmation's trials (Reserve per stepped task) come out of the
// search's time: without the reserve the search fills the budget and the
// confirmation runs past it; with it, search and confirmation together end
// within the budget. Each step and the confirmation pay a task's fixed
// cost (its problem and harness) and then each trial's.
func TestSchedulerReservesConfirmationTime(t *testing.T) {
	tasks := []search.SchedTask{
		{Name: "decode-a", Weight: 64, Cost: 1},
		{Name: "decode-b", Weight: 32, Cost: 2},
		{Name: "prefill", Weight: 0.01, Cost: 10},
	}
	perTrial, fixed := []float64{0.5, 1, 8}, []float64{1, 4, 10}
	run := func(reserve int) (elapsed, confirm float64, st []search.TaskState) {
		now := time.Unix(0, 0)
		sc := &search.Scheduler{Tasks: tasks, Budget: search.ModelBudget{Time: 2 * time.Minute}, Step: 8,
			StepTime: 8 * time.Second, Reserve: reserve, Now: func() time.Time { return now }}
		trials := make([]int, len(tasks))
		st, err := sc.Run(context.Background(), func(_ context.Context, i, target int) (search.StepResult, error) {
			n := target - trials[i]
			trials[i] = target
			now = now.Add(time.Duration((fixed[i] + float64(n)*perTrial[i]) * float64(time.Second)))
			// A slowly improving best, so that no task converges.
			return search.StepResult{Best: 1 + 1/float64(target), Trials: target}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range st {
			if s.Trials > 0 { // what the confirmation will take: 4 trials at most
				confirm += fixed[i] + float64(min(4, s.Trials))*perTrial[i]
			}
		}
		return now.Sub(time.Unix(0, 0)).Seconds(), confirm, st
	}
	elapsed, confirm, _ := run(0)
	if elapsed+confirm <= 120 {
		t.Fatalf("without a reserve the search took %.0f s and the confirmation %.0f s: want the test's case to overrun 120 s", elapsed, confirm)
	}
	elapsed, confirm, st := run(4)
	if elapsed+confirm > 120 {
		t.Errorf("with a reserve of 4 trials the search took %.0f s and its confirmation %.0f s: past the 120 s budget", elapsed, confirm)
	}
	if elapsed+confirm < 60 {
		t.Errorf("with a reserve of 4 trials the search took %.0f s and its confirmation %.0f s: under half the budget", elapsed, confirm)
	}
	if st[0].Trials < 8 || st[1].Trials < 2 {
		t.Errorf("states %+v: want both decode tasks searched", st)
	}
}
