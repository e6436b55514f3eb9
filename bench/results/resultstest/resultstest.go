// Package resultstest writes synthetic but realistic benchmark history into
// a tuning database: a device, several nights of results with seeded noisy
// samples, one benchmark deliberately slowed on the last night, and a
// tuning run with its trials. The regression, dashboard and CLI tests share
// it, so that they all check the same scenario.
package resultstest

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"llmir/tuningdb"
)

// Scenario configures History.
type Scenario struct {
	Seed   uint64
	Nights int       // ≥ 1
	Start  time.Time // the first night
	// Slowed names the benchmark whose kernel is slowed on the last night,
	// by SlowFactor (e.g. 1.3: 30% slower).
	Slowed     string
	SlowFactor float64
	// Noise is the relative spread of the samples (e.g. 0.01).
	Noise float64
}

// Written says what History stored.
type Written struct {
	Device  tuningdb.Device
	Results int // rows
	// Series is the number of (suite, name, metric, device) series.
	Series   int
	RunID    int64
	Trials   int
	Commits  []string // one per night
	Slowed   string   // the slowed benchmark's name
	LastDate time.Time
}

// Kernels are the synthetic benchmarks: name and median latency.
var Kernels = []struct {
	Name    string
	Seconds float64
	Bytes   float64 // bytes moved, for the bandwidth metric
}{
	{"Linear/M=1,N=4096,K=4096/f32/threads=1", 2.9e-3, 4 * 4096 * 4096},
	{"Linear/M=16,N=4096,K=4096/f32/threads=1", 4.1e-3, 4 * 4096 * 4096},
	{"Linear/M=512,N=4096,K=4096/f32/threads=2", 0.118, 4 * 3 * 4096 * 512},
	{"PagedAttention/B=8,ctx=2048,block=16/f32", 1.6e-3, 8 * 2048 * 2 * 4096},
}

// Device is the synthetic device.
func Device() tuningdb.Device {
	fp := []byte(`{"arch":"x86_64","vendor":"AuthenticAMD","model":"AMD EPYC 7B13","isa":["avx2","fma"],"cores":2}`)
	return tuningdb.Device{
		Hash: tuningdb.HashJSON(fp), Kind: tuningdb.KindCPU, Compat: "x86_64/avx2+fma", Fingerprint: fp,
		Roofline: tuningdb.Roofline{Points: []tuningdb.RooflinePoint{{Threads: 1, PeakGFLOPS: 70, ReadGBps: 25}, {Threads: 2, PeakGFLOPS: 140, ReadGBps: 48}}},
	}
}

// History writes the scenario into db.
func History(ctx context.Context, db *tuningdb.DB, sc Scenario) (Written, error) {
	if sc.Nights < 1 {
		return Written{}, fmt.Errorf("scenario: %d nights, want ≥ 1", sc.Nights)
	}
	if sc.Start.IsZero() {
		sc.Start = time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC)
	}
	if sc.Noise <= 0 {
		sc.Noise = 0.01
	}
	if sc.SlowFactor <= 0 {
		sc.SlowFactor = 1
	}
	rng := rand.New(rand.NewPCG(sc.Seed, sc.Seed))
	dev := Device()
	if err := db.PutDevice(ctx, dev); err != nil {
		return Written{}, err
	}
	w := Written{Device: dev, Slowed: sc.Slowed}
	for night := range sc.Nights {
		at := sc.Start.Add(time.Duration(night) * 24 * time.Hour)
		commit := fmt.Sprintf("%016x%016x%08x", rng.Uint64(), rng.Uint64(), rng.Uint32())
		w.Commits = append(w.Commits, commit)
		w.LastDate = at
		var rows []tuningdb.BenchResult
		for ki, k := range Kernels {
			median := k.Seconds
			if k.Name == sc.Slowed && night == sc.Nights-1 {
				median *= sc.SlowFactor
			}
			// Night-to-night drift well inside the floor.
			median *= 1 + 0.004*rng.NormFloat64()
			samples := make([]float64, 40)
			for i := range samples {
				samples[i] = median * math.Exp(sc.Noise*rng.NormFloat64())
			}
			s, err := tuningdb.Summarize(samples)
			if err != nil {
				return w, err
			}
			blas := k.Seconds * (1.05 + 0.1*float64(ki%2))
			bound := k.Bytes / 25e9
			extra, _ := json.Marshal(map[string]any{"night": night})
			rows = append(rows,
				tuningdb.BenchResult{Suite: "kernels", Name: k.Name, DeviceHash: dev.Hash, Metric: "median_s", Unit: "s",
					Samples: samples, Better: tuningdb.BetterLower, Baseline: "openblas", BaselineRatio: blas / s.Median,
					RooflineFraction: math.Min(bound/s.Median, 1), Extra: extra, CreatedAt: at, GitCommit: commit, LLMIRVersion: "0.1.0-test"},
				tuningdb.BenchResult{Suite: "kernels", Name: k.Name, DeviceHash: dev.Hash, Metric: "GB/s", Unit: "GB/s",
					Value: k.Bytes / s.Median / 1e9, CreatedAt: at, GitCommit: commit, LLMIRVersion: "0.1.0-test"},
			)
		}
		rows = append(rows, tuningdb.BenchResult{Suite: "tuning", Name: "search/llama-tiny", DeviceHash: dev.Hash,
			Metric: "trials_to_95pct", Unit: "trials", Better: tuningdb.BetterLower, Value: float64(40 + rng.IntN(3)),
			CreatedAt: at, GitCommit: commit, LLMIRVersion: "0.1.0-test"})
		if err := db.AddBenchResults(ctx, rows); err != nil {
			return w, fmt.Errorf("night %d: %w", night, err)
		}
		w.Results += len(rows)
		w.Series = len(rows)
	}
	id, n, err := tuningRun(ctx, db, dev, rng, w.LastDate.Add(time.Hour))
	if err != nil {
		return w, err
	}
	w.RunID, w.Trials = id, n
	return w, nil
}

// tuningRun stores one tune of a linear workload: 48 trials whose
// latencies fall as the search learns, a few of them failed.
func tuningRun(ctx context.Context, db *tuningdb.DB, dev tuningdb.Device, rng *rand.Rand, at time.Time) (int64, int, error) {
	js := []byte(`{"group":"linear","m":1,"n":4096,"k":4096,"dtype":"f32"}`)
	wl := tuningdb.Workload{Key: tuningdb.HashJSON(js), Family: tuningdb.HashJSON([]byte("linear n4096 k4096")), Bucket: 1, Group: "linear", JSON: js}
	id, err := db.StartRun(ctx, tuningdb.TuningRun{DeviceHash: dev.Hash, StartedAt: at, BudgetTrials: 48, Command: "llmir tune --preset llama-tiny --trials 48"})
	if err != nil {
		return 0, 0, err
	}
	const trials = 48
	recs := make([]tuningdb.Record, trials)
	for i := range recs {
		r := tuningdb.Record{
			WorkloadKey: wl.Key, DeviceHash: dev.Hash, CodegenVersion: 1, Status: tuningdb.StatusOK,
			Trace:     json.RawMessage(fmt.Sprintf(`{"trial":%d}`, i)),
			CreatedAt: at.Add(time.Duration(i) * time.Second), LLMIRVersion: "0.1.0-test", RunID: id,
		}
		if i%11 == 5 {
			r.Status, r.Error = tuningdb.StatusBuildError, "synthetic build error"
		} else {
			// Candidates get better on average as the search goes on.
			median := 2.9e-3 * (1 + 2.5*math.Exp(-float64(i)/12)*rng.Float64())
			r.Samples = []float64{median * 1.02, median, median * 0.99}
		}
		recs[i] = r
	}
	if _, err := db.RecordBatch(ctx, tuningdb.Batch{Workloads: []tuningdb.Workload{wl}, Records: recs}); err != nil {
		return 0, 0, err
	}
	if err := db.FinishRun(ctx, id, json.RawMessage(`{"best_s":0.0029}`)); err != nil {
		return 0, 0, err
	}
	return id, trials, nil
}
