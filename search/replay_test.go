package search_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu/cgen"
	"llmir/tuningdb"
)

// otherDevice is another machine of class compat (tu's own: a sibling;
// another: a stranger), known to the database by its fingerprint only.
func otherDevice(name string, kind tuningdb.Kind, compat string) tuningdb.Device {
	fp := []byte(fmt.Sprintf(`{"name":%q}`, name))
	return tuningdb.Device{Hash: tuningdb.HashJSON(fp), Kind: kind, Compat: compat, Fingerprint: fp}
}

// distinctTraces draws n schedules of k with distinct traces, none the
// rule-based default's.
func distinctTraces(t *testing.T, k kernels.Kernel, hw kernels.Hardware, n int) []json.RawMessage {
	t.Helper()
	def, err := search.DefaultSchedule(k, hw)
	if err != nil {
		t.Fatal(err)
	}
	defKey, err := search.TraceKey(def)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{string(defKey): true}
	var out []json.RawMessage
	for seed := uint64(100); len(out) < n; seed++ {
		s, err := search.SampleSchedule(k, hw, seed)
		if err != nil {
			t.Fatal(err)
		}
		key, err := search.TraceKey(s)
		if err != nil {
			t.Fatal(err)
		}
		if !seen[string(key)] {
			seen[string(key)] = true
			out = append(out, key)
		}
	}
	return out
}

// okRecord is a record of trace on dev with a median of sec.
func okRecord(wl tuningdb.Workload, dev tuningdb.Device, trace json.RawMessage, sec float64) tuningdb.Record {
	return tuningdb.Record{WorkloadKey: wl.Key, DeviceHash: dev.Hash, CodegenVersion: cgen.CodegenVersion, Trace: trace,
		Status: tuningdb.StatusOK, Samples: []float64{sec, sec, sec}, CreatedAt: time.Now(), LLMIRVersion: "test"}
}

func putRecords(t *testing.T, db *tuningdb.DB, devs []tuningdb.Device, wl tuningdb.Workload, recs ...tuningdb.Record) {
	t.Helper()
	if _, err := db.RecordBatch(context.Background(), tuningdb.Batch{Devices: devs, Workloads: []tuningdb.Workload{wl}, Records: recs}); err != nil {
		t.Fatal(err)
	}
}

// TestTuneReplaysCompatibleRecords: a tune on a machine new to the
// workload measures, in its first batch, the schedules recorded for that
// workload on a compatible machine (the user's database) and in the
// precompiled database, ahead of the strategy's draws; a faster record
// of an incompatible machine is not measured, and neither is one the
// strategy is not asked for when Replay is off.
func TestTuneReplaysCompatibleRecords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	k := kernels.Linear{M: 3, N: 33, K: 13}
	var strat *batchedRandom
	opts := search.Options{Budget: search.Budget{Trials: 6}, BatchSize: 2, Seed: 3, Confirm: -1,
		NewStrategy: func(k kernels.Kernel, hw kernels.Hardware, seed uint64) search.Strategy {
			strat = &batchedRandom{Random: search.NewRandom(k, hw, seed), max: 2}
			return strat
		}}
	tu := f.tuner(opts)
	wl := search.WorkloadOf(k, 1)
	traces := distinctTraces(t, k, tu.Hardware(1), 3)
	sib, stranger := traces[0], traces[1]
	shipped := traces[2]
	sibling := otherDevice("sibling", tu.Device.Kind, tu.Device.Compat)
	foreign := otherDevice("stranger", tu.Device.Kind, tu.Device.Compat+"-not")
	putRecords(t, f.db, []tuningdb.Device{sibling, foreign}, wl,
		okRecord(wl, sibling, sib, 2e-6),
		okRecord(wl, foreign, stranger, 1e-7)) // the fastest, but of another class
	pre, err := tuningdb.OpenMemory(ctx, tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pre.Close()
	// Shipped from a machine with this very fingerprint, and again the
	// sibling's trace (replayed once).
	putRecords(t, pre, []tuningdb.Device{tu.Device, sibling}, wl,
		okRecord(wl, tu.Device, shipped, 3e-6),
		okRecord(wl, sibling, sib, 1e-6))
	tu.Precompiled = pre

	r, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Measured) != 6 {
		t.Fatalf("measured %d, want the budget's 6", len(r.Measured))
	}
	// The first batch: the default, the replays in the lookup's order (the
	// asked device's record first, then the compatible one), and the
	// strategy's batch of one on top of them.
	if want := []int{1, 2}; fmt.Sprint(strat.asked) != fmt.Sprint(want) {
		t.Errorf("strategy asked for %v, want %v (the first batch: default + 2 replays + a batch of 2 less the default; then the budget's last 2)", strat.asked, want)
	}
	if !r.Measured[0].Default {
		t.Errorf("trial 0 is not the default")
	}
	for i, want := range []json.RawMessage{shipped, sib} {
		tr := r.Measured[1+i]
		if string(tr.Trace) != string(want) || !tr.Replayed || !tr.Measurement.OK() {
			t.Errorf("trial %d: replayed %v, status %s, trace %.80s…; want the replay of record %d", tr.Index, tr.Replayed, tr.Measurement.Status, tr.Trace, i)
		}
	}
	for _, tr := range r.Measured[3:] {
		if tr.Replayed {
			t.Errorf("trial %d is marked replayed", tr.Index)
		}
		if string(tr.Trace) == string(stranger) {
			t.Errorf("trial %d measured the incompatible machine's record", tr.Index)
		}
	}

	// Measured now on this device, the replays are resumed records: a
	// second tune does not measure them again.
	tu.Options.Budget.Trials = 8
	r2, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range r2.Measured {
		if tr.Replayed {
			t.Errorf("second tune replayed trial %d again", tr.Index)
		}
	}

	// Off: the same records, a fresh workload (two threads), nothing replayed.
	wl2 := search.WorkloadOf(k, 2)
	putRecords(t, f.db, []tuningdb.Device{sibling}, wl2, okRecord(wl2, sibling, sib, 2e-6))
	tu.Options.Budget.Trials, tu.Options.Replay = 2, -1
	r3, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range r3.Measured {
		if tr.Replayed || string(tr.Trace) == string(sib) {
			t.Errorf("Replay -1: trial %d replayed the sibling's record", tr.Index)
		}
	}
}

// TestTuneSkipsRecordsThatDoNotReplay: records of the workload on a
// compatible machine whose traces do not replay on this kernel (another
// definition, an unknown primitive, an illegal decision, not a trace), or
// that the kernel refuses, are skipped without error; the next good one
// is replayed, and a replayed schedule that computes the wrong result is
// recorded as such and never becomes best.
func TestTuneSkipsRecordsThatDoNotReplay(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	lin := kernels.Linear{M: 2, N: 9, K: 16}
	tu := f.tuner(search.Options{Budget: search.Budget{Trials: 2}, BatchSize: 4, Seed: 5, Confirm: -1})
	traces := distinctTraces(t, lin, tu.Hardware(1), 2)
	refused, good := traces[0], traces[1]
	tr, err := schedule.ParseTrace(good)
	if err != nil {
		t.Fatal(err)
	}
	// A categorical decision past the end of its candidates.
	var illegal json.RawMessage
	for i, in := range tr.Insts {
		if in.Op == "sample_categorical" {
			bad, err := tr.WithDecision(i, []int64{int64(len(in.Ints))})
			if err != nil {
				t.Fatal(err)
			}
			if illegal, err = bad.JSON(); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if illegal == nil {
		t.Fatal("no categorical decision in the linear layer's trace")
	}
	k := refusing{wrongRef{lin}, string(refused)}
	wl := search.WorkloadOf(k, 1)
	sibling := otherDevice("sibling", tu.Device.Kind, tu.Device.Compat)
	putRecords(t, f.db, []tuningdb.Device{sibling}, wl,
		okRecord(wl, sibling, json.RawMessage(`{"def":"not_this_kernel","insts":[]}`), 1e-9),
		okRecord(wl, sibling, json.RawMessage(`{"insts":[{"op":"no_such_primitive"}]}`), 2e-9),
		okRecord(wl, sibling, illegal, 3e-9),
		okRecord(wl, sibling, json.RawMessage(`[1, 2, 3]`), 4e-9),
		okRecord(wl, sibling, refused, 5e-9),
		okRecord(wl, sibling, good, 1e-6))

	r, err := tu.Tune(ctx, search.Task{Kernel: k, Threads: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Measured) != 2 || !r.Measured[0].Default {
		t.Fatalf("measured %d trials, want the default and one replay", len(r.Measured))
	}
	rep := r.Measured[1]
	if !rep.Replayed || string(rep.Trace) != string(good) {
		t.Errorf("trial 1: replayed %v, trace %.80s…; want the replay of the one good record", rep.Replayed, rep.Trace)
	}
	if rep.Measurement.Status != target.StatusWrongResult {
		t.Errorf("replayed trial: status %s, want wrong_result (the kernel's reference is off)", rep.Measurement.Status)
	}
	if r.Best != nil {
		t.Errorf("a wrong result became best: %+v", r.Best)
	}
}

// refusing is a kernel whose validity predicate refuses one point.
type refusing struct {
	wrongRef
	refuse string
}

func (r refusing) Valid(s *schedule.Schedule, hw kernels.Hardware) error {
	key, err := search.TraceKey(s)
	if err != nil {
		return err
	}
	if string(key) == r.refuse {
		return fmt.Errorf("point refused")
	}
	return nil
}
