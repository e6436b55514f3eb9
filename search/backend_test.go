package search_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/tuningdb"
)

// markedBackend is the CPU backend with its own codegen version, a kernel
// registry that knows only linear, and a printer that counts candidates
// and marks every source: what a second target kind changes.
type markedBackend struct {
	*search.CPUBackend
	candidates atomic.Int64
}

const markedVersion = 977

func (b *markedBackend) CodegenVersion() int { return markedVersion }

func (b *markedBackend) Kernel(w ir.Workload) (kernels.Kernel, error) {
	if strings.Join(w.Group, "+") != "llmir.linear" {
		return nil, fmt.Errorf("%w: only linear here", kernels.ErrNoKernel)
	}
	return kernels.FromWorkload(w)
}

func (b *markedBackend) Source(k kernels.Kernel, s *schedule.Schedule, hw kernels.Hardware, entry string) (string, error) {
	src, err := b.CPUBackend.Source(k, s, hw, entry)
	return "/* marked */\n" + src, err
}

func (b *markedBackend) Candidate(id string, k kernels.Kernel, s *schedule.Schedule, hw kernels.Hardware) (target.Candidate, error) {
	b.candidates.Add(1)
	return b.CPUBackend.Candidate(id, k, s, hw)
}

// TestTunerBackend: a tuner made by NewTuner prints through its backend and
// records (and resumes) under the backend's codegen version.
func TestTunerBackend(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	be := &markedBackend{CPUBackend: search.NewCPUBackend(f.tg, nil)}
	tu, err := search.NewTuner(be, f.db, search.Options{Budget: search.Budget{Trials: 3}, BatchSize: 3, Seed: 3, Confirm: -1, Run: quick})
	if err != nil {
		t.Fatal(err)
	}
	k := kernels.Linear{M: 2, N: 9, K: 8}
	res, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := be.candidates.Load(); n != int64(len(res.Measured)) || n == 0 {
		t.Errorf("backend printed %d candidates for %d trials", n, len(res.Measured))
	}
	n := 0
	for r, err := range f.db.DeviceRecords(ctx, tu.Device.Hash, markedVersion) {
		if err != nil {
			t.Fatal(err)
		}
		if r.WorkloadKey == search.WorkloadOf(k, 1).Key {
			n++
		}
	}
	if n != len(res.Measured) {
		t.Errorf("%d records at version %d, want %d", n, markedVersion, len(res.Measured))
	}
	again, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Resumed != n || len(again.Measured) != 0 {
		t.Errorf("rerun resumed %d and measured %d, want %d and 0", again.Resumed, len(again.Measured), n)
	}
	if _, err := search.NewTuner(search.NewCPUSourceBackend(f.tg.CPU()), f.db, search.Options{}); err == nil {
		t.Error("a tuner for a backend without a target")
	}
}

// TestCompileModelBackend: compile takes the backend's kernels (the others
// are listed without one), its sources and its codegen version, with no
// target at all.
func TestCompileModelBackend(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	m, err := hf.ImportPreset("llama-tiny", hf.Options{DType: "f32"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ir.InferShapes(m); err != nil {
		t.Fatal(err)
	}
	be := &markedBackend{CPUBackend: search.NewCPUSourceBackend(f.tg.CPU())}
	cm, err := search.CompileModel(ctx, m, search.CompileOptions{Backend: be, Device: be.Device(),
		Lookup: tuningdb.NewLayered(f.db, nil), Dims: map[string]int64{"seq": 4}})
	if err != nil {
		t.Fatal(err)
	}
	if cm.CodegenVersion != markedVersion || cm.Target != "cpu" || len(cm.Kernels) == 0 || len(cm.NoKernel) == 0 {
		t.Fatalf("version %d, target %q, %d kernels, %d without", cm.CodegenVersion, cm.Target, len(cm.Kernels), len(cm.NoKernel))
	}
	for _, k := range cm.Kernels {
		if !strings.HasPrefix(k.Name, "linear/") || !strings.HasPrefix(k.Source, "/* marked */") || k.From != search.FromDefault {
			t.Errorf("%s: from %s, source %.20q", k.Name, k.From, k.Source)
		}
	}
	for _, nk := range cm.NoKernel {
		if !strings.Contains(nk.Reason, "only linear here") {
			t.Errorf("%s: reason %q", nk.Name, nk.Reason)
		}
	}
	if _, err := search.TuneModel(ctx, m, search.ModelOptions{DB: f.db}); err == nil || errors.Is(err, search.ErrNoTasks) {
		t.Errorf("TuneModel without a target or backend: %v", err)
	}
}
