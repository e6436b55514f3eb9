package search_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"llmir/costmodel"
	"llmir/kernels"
	"llmir/search"
	"llmir/target/cpu/cgen"
	"llmir/tuningdb"
)

// openDB is an empty tuning database with one CPU device stored.
func openDB(t *testing.T) (*tuningdb.DB, tuningdb.Device) {
	t.Helper()
	ctx := context.Background()
	db, err := tuningdb.Open(ctx, filepath.Join(t.TempDir(), "tuning.db"), tuningdb.Options{LLMIRVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	fp := []byte(`{"name":"online-test","kind":"cpu"}`)
	dev := tuningdb.Device{Hash: tuningdb.HashJSON(fp), Kind: tuningdb.KindCPU, Compat: "x86_64/test", Fingerprint: fp}
	if err := db.PutDevice(ctx, dev); err != nil {
		t.Fatal(err)
	}
	return db, dev
}

// TestOnlineModelSavedAndReloaded: a model trained past MinTrain and saved
// for a device comes back from LoadOnlineModel with the same training count
// and the same scores; a device with no model gets a fresh (untrained)
// one; a stored model whose data is damaged is an error naming the
// device, not a panic and not a silently fresh model.
func TestOnlineModelSavedAndReloaded(t *testing.T) {
	ctx := context.Background()
	db, dev := openDB(t)
	k := kernels.Linear{M: 40, N: 96, K: 64}
	cdev := search.CostDevice(testHW, nil)
	trials := fakeTrials(t, k, 40, 3)
	if len(trials) < costmodel.DefaultGBTParams().MinTrain {
		t.Fatalf("%d distinct trials, want at least MinTrain %d", len(trials), costmodel.DefaultGBTParams().MinTrain)
	}
	m := search.NewOnlineModel(nil)
	if err := m.Learn(ctx, k, "task", cdev, trials); err != nil {
		t.Fatal(err)
	}
	if m.Trained() != len(trials) {
		t.Fatalf("trained on %d, want %d", m.Trained(), len(trials))
	}
	if err := m.Save(ctx, db, dev.Hash, "test"); err != nil {
		t.Fatal(err)
	}

	got, err := search.LoadOnlineModel(ctx, db, dev.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if got.Trained() != m.Trained() {
		t.Errorf("reloaded model trained on %d, saved %d", got.Trained(), m.Trained())
	}
	rng := rand.New(rand.NewPCG(9, 9))
	fs := make([][]float64, 16)
	for i := range fs {
		fs[i] = make([]float64, costmodel.NumFeatures)
		for j := range fs[i] {
			fs[i][j] = rng.Float64() * 8
		}
	}
	want, have := m.Predict(fs), got.Predict(fs)
	for i := range want {
		if want[i] != have[i] {
			t.Fatalf("score %d: reloaded %v, saved %v", i, have[i], want[i])
		}
	}

	fresh, err := search.LoadOnlineModel(ctx, db, strings.Repeat("0", 64))
	if err != nil || fresh.Trained() != 0 {
		t.Errorf("device without a model: trained %v, err %v; want a fresh model", fresh, err)
	}

	rec, err := db.Model(ctx, dev.Hash, search.ModelName, cgen.CodegenVersion)
	if err != nil {
		t.Fatal(err)
	}
	rec.Data = rec.Data[:len(rec.Data)/2]
	rec.CreatedAt = rec.CreatedAt.Add(1)
	if err := db.PutModel(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := search.LoadOnlineModel(ctx, db, dev.Hash); err == nil || !strings.Contains(err.Error(), dev.Hash) {
		t.Errorf("damaged stored model: err %v, want an error naming the device", err)
	}
}

// TestTuneProgressBar: a task's progress bar says its best so far and the
// speedup over the default (TestTuneModelEndToEnd checks the overall bar).
func TestTuneProgressBar(t *testing.T) {
	f := newFixture(t)
	var buf bytes.Buffer
	tu := f.tuner(search.Options{Budget: search.Budget{Trials: 6}, BatchSize: 2, Seed: 5, Confirm: -1, Progress: &buf})
	k := kernels.Linear{M: 3, N: 33, K: 13}
	if _, err := tu.Tune(context.Background(), search.Task{Kernel: k, Threads: 1}, nil); err != nil {
		t.Fatal(err)
	}
	// Each batch builds with gcc, longer than the bar's 100 ms throttle,
	// so the description after the first batch is drawn.
	if out := buf.String(); !strings.Contains(out, k.Name()+" t=1 best ") || !strings.Contains(out, "×") {
		t.Errorf("task bar does not show the best and speedup:\n%q", out)
	}
}
