package tuningdb

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
)

var benchSizes = []struct {
	name    string
	records int
}{{"records=10k", 10_000}, {"records=1M", 1_000_000}}

// benchCorpus is the shape of a tuned database: many workloads, a few
// devices, about 125 records per (workload, device).
type benchCorpus struct {
	devices   []Device
	workloads []Workload
}

func newBenchCorpus(records int) benchCorpus {
	var c benchCorpus
	for i := range 4 {
		c.devices = append(c.devices, testDevice(fmt.Sprint("bench", i), KindCPU, "x86_64/avx2+fma"))
	}
	for i := range max(records/500, 1) {
		c.workloads = append(c.workloads, testWorkload(fmt.Sprint("bench", i/8), int64(1)<<(i%8)))
	}
	return c
}

func (c benchCorpus) records(rng *rand.Rand, n int, at time.Time) []Record {
	recs := make([]Record, n)
	for i := range recs {
		st := StatusOK
		if rng.IntN(10) == 0 {
			st = StatusBuildError
		}
		recs[i] = testRecord(c.workloads[rng.IntN(len(c.workloads))], c.devices[rng.IntN(len(c.devices))], 1,
			1e-5*(1+rng.Float64()), st, at.Add(time.Duration(i)*time.Microsecond))
	}
	return recs
}

// fill stores n records through the batch API, 10k per transaction.
func (c benchCorpus) fill(b *testing.B, db *DB, rng *rand.Rand, n int) {
	b.Helper()
	mustBatch(b, db, Batch{Devices: c.devices, Workloads: c.workloads})
	for done := 0; done < n; done += 10_000 {
		mustBatch(b, db, Batch{Records: c.records(rng, min(10_000, n-done), t0.Add(time.Duration(done)*time.Microsecond))})
	}
}

func openBench(b *testing.B) *DB {
	db, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func BenchmarkBestRecord(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(1, 1))
			db := openBench(b)
			c := newBenchCorpus(size.records)
			start := time.Now()
			c.fill(b, db, rng, size.records)
			b.Logf("built %d records in %v", size.records, time.Since(start).Round(time.Millisecond))
			b.ResetTimer()
			found := 0
			for b.Loop() {
				w, d := c.workloads[rng.IntN(len(c.workloads))], c.devices[rng.IntN(len(c.devices))]
				if _, err := db.BestRecord(ctx, w.Key, d.Hash, 1); err == nil {
					found++
				}
			}
			b.ReportMetric(float64(found)/float64(b.N), "found/op")
		})
	}
}

func BenchmarkRecordBatch(b *testing.B) {
	const batch = 1000
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("batch=%d/%s", batch, size.name), func(b *testing.B) {
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(2, 2))
			db := openBench(b)
			c := newBenchCorpus(size.records)
			c.fill(b, db, rng, size.records)
			at := t0.Add(time.Hour)
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				recs := c.records(rng, batch, at)
				at = at.Add(time.Second)
				b.StartTimer()
				if _, err := db.RecordBatch(ctx, Batch{Records: recs}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
