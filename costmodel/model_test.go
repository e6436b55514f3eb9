package costmodel

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// synthTask draws n feature vectors and times from a latent function that
// mixes a few features non-linearly (a compute/memory max, a threshold and
// an interaction), as real schedules do; the task's scale multiplies every
// time, so only the order within a task is learnable across tasks.
func synthTask(rng *rand.Rand, n int, noise float64) ([][]float64, []float64) {
	scale := math.Exp(rng.NormFloat64() * 2)
	fs := make([][]float64, n)
	ts := make([]float64, n)
	for i := range fs {
		f := make([]float64, NumFeatures)
		for j := range f {
			f[j] = rng.Float64() * 10
		}
		compute := 1 + f[3]*f[3]/10
		memory := 2 + f[7]
		t := math.Max(compute, memory)
		if f[11] > 6 {
			t *= 1.8
		}
		t *= 1 + 0.05*f[20]*f[21]/10
		ts[i] = scale * t * math.Exp(noise*rng.NormFloat64())
		fs[i] = f
	}
	return fs, ts
}

func TestPairwiseAccuracy(t *testing.T) {
	cases := []struct {
		name    string
		scores  []float64
		seconds []float64
		want    float64
	}{
		{"perfect", []float64{3, 2, 1}, []float64{1, 2, 3}, 1},
		{"reversed", []float64{1, 2, 3}, []float64{1, 2, 3}, 0},
		{"one-wrong", []float64{3, 1, 2}, []float64{1, 2, 3}, 2.0 / 3},
		{"ties-in-time-skipped", []float64{1, 2, 3}, []float64{1, 1.01, 3}, 0},
		{"tied-scores-half", []float64{1, 1}, []float64{1, 2}, 0.5},
	}
	for _, c := range cases {
		if got := PairwiseAccuracy(c.scores, c.seconds); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if got := PairwiseAccuracy([]float64{1, 2}, []float64{1, 1}); !math.IsNaN(got) {
		t.Errorf("all ties: %v, want NaN", got)
	}
}

func TestTopKRecall(t *testing.T) {
	cases := []struct {
		scores, seconds []float64
		k               int
		want            float64
	}{
		{[]float64{4, 3, 2, 1}, []float64{1, 2, 3, 4}, 2, 1},
		{[]float64{1, 2, 3, 4}, []float64{1, 2, 3, 4}, 2, 0},
		{[]float64{4, 1, 3, 2}, []float64{1, 2, 3, 4}, 2, 0.5},
		{[]float64{1}, []float64{1}, 5, 1},
	}
	for i, c := range cases {
		if got := TopKRecall(c.scores, c.seconds, c.k); got != c.want {
			t.Errorf("case %d: %v, want %v", i, got, c.want)
		}
	}
}

// heldOut trains on train tasks and returns the mean pairwise accuracy on
// the test tasks.
func heldOut(t *testing.T, m Model, test [][2]any) float64 {
	t.Helper()
	acc := 0.0
	for _, tk := range test {
		fs, ts := tk[0].([][]float64), tk[1].([]float64)
		acc += PairwiseAccuracy(m.Predict(fs), ts)
	}
	return acc / float64(len(test))
}

func TestGBTBeatsRandomOnSyntheticRanking(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	m := NewGBT(DefaultGBTParams())
	for i := range 8 {
		fs, ts := synthTask(rng, 80, 0.05)
		if err := m.Update(string(rune('a'+i)), fs, ts); err != nil {
			t.Fatal(err)
		}
	}
	var test [][2]any
	for range 3 {
		fs, ts := synthTask(rng, 60, 0.05)
		test = append(test, [2]any{fs, ts})
	}
	got := heldOut(t, m, test)
	// A random scorer, seeded, for the same pairs.
	rnd := 0.0
	for _, tk := range test {
		ts := tk[1].([]float64)
		sc := make([]float64, len(ts))
		for i := range sc {
			sc[i] = rng.Float64()
		}
		rnd += PairwiseAccuracy(sc, ts)
	}
	rnd /= float64(len(test))
	if got < 0.8 || got < rnd+0.2 {
		t.Errorf("held-out pairwise accuracy %.3f, random %.3f: want ≥ 0.8 and 0.2 above random", got, rnd)
	}
}

func TestUpdateImprovesPredictions(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	var test [][2]any
	for range 3 {
		fs, ts := synthTask(rng, 60, 0.05)
		test = append(test, [2]any{fs, ts})
	}
	p := DefaultGBTParams()
	m := NewGBT(p)
	// Below MinTrain the model is the roofline.
	fs, ts := synthTask(rng, p.MinTrain-1, 0.05)
	if err := m.Update("t0", fs, ts); err != nil {
		t.Fatal(err)
	}
	if m.Trained() != 0 || !slices.Equal(m.Predict(fs), (&Roofline{}).Predict(fs)) {
		t.Fatalf("below MinTrain: trained on %d, predictions are not the roofline's", m.Trained())
	}
	fs, ts = synthTask(rng, 20, 0.05)
	if err := m.Update("t1", fs, ts); err != nil {
		t.Fatal(err)
	}
	early := heldOut(t, m, test)
	for i := range 8 {
		fs, ts := synthTask(rng, 80, 0.05)
		if err := m.Update(string(rune('a'+i)), fs, ts); err != nil {
			t.Fatal(err)
		}
	}
	late := heldOut(t, m, test)
	if late < early+0.05 {
		t.Errorf("held-out accuracy after 50 samples %.3f, after 690 %.3f: want an improvement of ≥ 0.05", early, late)
	}
}

func TestModelRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	g := NewGBT(DefaultGBTParams())
	for i := range 3 {
		fs, ts := synthTask(rng, 30, 0.1)
		if err := g.Update(string(rune('a'+i)), fs, ts); err != nil {
			t.Fatal(err)
		}
	}
	probe, probeT := synthTask(rng, 20, 0.1)
	for _, m := range []Model{g, &Roofline{}} {
		t.Run(m.Name(), func(t *testing.T) {
			data, err := m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			back, err := Unmarshal(m.Format(), data)
			if err != nil {
				t.Fatal(err)
			}
			if back.Name() != m.Name() || back.Trained() != m.Trained() {
				t.Fatalf("reloaded %s trained on %d, want %s on %d", back.Name(), back.Trained(), m.Name(), m.Trained())
			}
			if !slices.Equal(back.Predict(probe), m.Predict(probe)) {
				t.Fatal("reloaded model predicts differently")
			}
			again, err := back.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, data) {
				t.Error("marshal → unmarshal → marshal changed the bytes")
			}
			// Training continues after a reload exactly as without one.
			if err := back.Update("z", probe, probeT); err != nil {
				t.Fatal(err)
			}
			if err := m.Update("z", probe, probeT); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(back.Predict(probe), m.Predict(probe)) {
				t.Error("reloaded model learns differently from the original")
			}
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	g := NewGBT(DefaultGBTParams())
	good, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	fv := fmt.Sprintf(`"feature_version":%d`, FeatureVersion)
	cases := []struct {
		name, format string
		data         []byte
		errFormat    bool
	}{
		{"unknown-format", "mlp/v9", []byte(`{"format":"mlp/v9",` + fv + `}`), true},
		{"format-mismatch", "roofline/v1", good, true},
		{"old-features", "gbt/v1", []byte(strings.Replace(string(good), fv, `"feature_version":0`, 1)), true},
		{"not-json", "gbt/v1", []byte("\x00garbage"), false},
		{"bad-tree", "gbt/v1", []byte(`{"format":"gbt/v1",` + fv + `,"trees":[{"nodes":[{"f":0,"t":1,"l":5,"r":6}]}]}`), false},
		{"short-sample", "gbt/v1", []byte(`{"format":"gbt/v1",` + fv + `,"tasks":[{"task":"a","features":[[1,2]],"seconds":[1]}]}`), false},
	}
	for _, c := range cases {
		_, err := Unmarshal(c.format, c.data)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if errors.Is(err, ErrFormat) != c.errFormat {
			t.Errorf("%s: %v; errors.Is(ErrFormat) = %v, want %v", c.name, err, !c.errFormat, c.errFormat)
		}
	}
}

func TestUpdateRejectsBadInput(t *testing.T) {
	ok := make([]float64, NumFeatures)
	cases := []struct {
		name string
		fs   [][]float64
		ts   []float64
	}{
		{"length-mismatch", [][]float64{ok}, []float64{1, 2}},
		{"short-vector", [][]float64{{1}}, []float64{1}},
		{"zero-time", [][]float64{ok}, []float64{0}},
		{"nan-time", [][]float64{ok}, []float64{math.NaN()}},
	}
	for _, c := range cases {
		for _, m := range []Model{NewGBT(DefaultGBTParams()), &Roofline{}} {
			if err := m.Update("t", c.fs, c.ts); err == nil {
				t.Errorf("%s %s: no error", m.Name(), c.name)
			}
		}
	}
}

func TestReadDatasetErrorsNameLine(t *testing.T) {
	in := `{"workload":"linear/M=1,N=8,K=8/f32","median":0.001}` + "\n" + `{"workload":"x","median":-1}` + "\n"
	_, err := ReadDataset(strings.NewReader(in))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("error %v, want one naming line 2", err)
	}
	ex, err := ReadDataset(strings.NewReader(in[:strings.Index(in, "\n")+1]))
	if err != nil || len(ex) != 1 || ex[0].Task() != "linear/M=1,N=8,K=8/f32@1t" {
		t.Fatalf("got %+v, %v", ex, err)
	}
}

// BenchmarkGBTFit measures a full retrain at the buffer sizes search
// reaches (the brief: well under a second for a few thousand samples).
func BenchmarkGBTFit(b *testing.B) {
	for _, n := range []int{500, 3000} {
		b.Run("samples="+itoa(n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			g := NewGBT(DefaultGBTParams())
			for i := 0; i < n/100; i++ {
				fs, ts := synthTask(rng, 100, 0.05)
				g.tasks[itoa(i)] = &taskSamples{Task: itoa(i), Features: fs, Seconds: ts}
			}
			for b.Loop() {
				g.fit()
			}
			b.ReportMetric(float64(g.Trained()), "samples")
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestGBTRooflineBase: with the roofline as the trees' starting point and
// measurements that follow the roofline exactly, the residual is zero, so
// the model ranks unseen candidates as the roofline does, with or without
// trees; without the base, the model only knows what its trees learned.
func TestGBTRooflineBase(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	vec := func(lr float64) []float64 {
		f := make([]float64, NumFeatures)
		for i := range f {
			f[i] = rng.Float64()
		}
		f[rooflineIndex] = lr
		return f
	}
	p := DefaultGBTParams()
	p.RooflineBase, p.RooflineFit, p.MinTrain = 1, false, 8
	g := NewGBT(p)
	for task := range 3 {
		var fs [][]float64
		var ss []float64
		for range 16 {
			lr := -20 + 4*rng.Float64()
			fs = append(fs, vec(lr))
			ss = append(ss, math.Exp2(lr))
		}
		if err := g.Update(fmt.Sprint("t", task), fs, ss); err != nil {
			t.Fatal(err)
		}
	}
	if g.Trained() == 0 {
		t.Fatal("not trained")
	}
	var test [][]float64
	var secs []float64
	for range 20 {
		lr := -20 + 4*rng.Float64()
		test = append(test, vec(lr))
		secs = append(secs, math.Exp2(lr))
	}
	if acc := PairwiseAccuracy(g.Predict(test), secs); acc < 0.99 {
		t.Errorf("roofline-based GBT on roofline-exact data: pairwise %.3f, want ≈ 1", acc)
	}
}

// TestGBTFocusWeight: when the task updated last contradicts what the
// other tasks taught (its time grows with a knob's value, theirs shrinks),
// a focus weight makes its own samples decide its ranking; without one,
// the majority's (four tasks to one) rule wins.
func TestGBTFocusWeight(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	sample := func(n int, sign float64) ([][]float64, []float64) {
		var fs [][]float64
		var ss []float64
		for range n {
			f := make([]float64, NumFeatures)
			f[0] = float64(rng.IntN(5)) / 4 // a knob's position in its domain
			fs = append(fs, f)
			ss = append(ss, math.Exp(sign*2*f[0]))
		}
		return fs, ss
	}
	for _, c := range []struct {
		weight float64
		follow bool // ranks the focus task by its own rule
	}{{0, false}, {20, true}} {
		p := DefaultGBTParams()
		p.FocusWeight, p.MinTrain = c.weight, 8
		g := NewGBT(p)
		for task := range 4 {
			fs, ss := sample(40, -1)
			if err := g.Update(fmt.Sprint("other", task), fs, ss); err != nil {
				t.Fatal(err)
			}
		}
		fs, ss := sample(40, 1)
		if err := g.Update("focus", fs, ss); err != nil {
			t.Fatal(err)
		}
		test, secs := sample(30, 1)
		acc := PairwiseAccuracy(g.Predict(test), secs)
		t.Logf("focus weight %v: pairwise %.2f", c.weight, acc)
		if (c.follow && acc < 0.8) || (!c.follow && acc > 0.2) {
			t.Errorf("focus weight %v: pairwise %.2f on the focus task's rule, want following it: %v", c.weight, acc, c.follow)
		}
	}
}

// TestGBTSiblingWeight: a candidate whose kind and knob values were
// measured at another shape of the same kernel (a sibling task) is scored
// towards that sibling's speed: with weight 1 it ranks exactly as the
// sibling measured, although four tasks of another kernel teach the
// opposite rule; with weight 0.5 the score is halfway between the trees'
// and the sibling's; a kind nobody measured keeps the trees' score. With
// SiblingHalf 4, four measurements of the task itself halve the weight.
func TestGBTSiblingWeight(t *testing.T) {
	point := func(kind float64, d int) []float64 {
		f := make([]float64, NumFeatures)
		f[workOffset+4], f[workOffset+5] = 1, kind
		f[knobOffset], f[knobOffset+1] = lg(float64(int(1)<<d)), float64(d)/3
		return f
	}
	fit := func(w, half float64, own int) *GBT {
		p := DefaultGBTParams()
		p.MinTrain, p.SiblingWeight, p.SiblingHalf, p.Trees = 4*40+4, w, half, 60 // one fit, after op/a's update
		p.SiblingShare = false                                                    // the weight as given (TestGBTSiblingShare scales it)
		g := NewGBT(p)
		for task := range 4 {
			var fs [][]float64
			var ss []float64
			for rep := range 10 {
				for d := range 4 {
					fs, ss = append(fs, point(0.25, d)), append(ss, 1e-6*math.Exp(-float64(d))*(1+0.01*float64(rep)))
				}
			}
			if err := g.Update(fmt.Sprint("other/", task), fs, ss); err != nil {
				t.Fatal(err)
			}
		}
		var fs [][]float64
		var ss []float64
		for d := range 4 {
			fs, ss = append(fs, point(0.5, d)), append(ss, 1e-6*math.Exp(float64(d)))
		}
		if err := g.Update("op/a", fs, ss); err != nil {
			t.Fatal(err)
		}
		if err := g.Update("op/b", nil, nil); err != nil { // the shape search meets next
			t.Fatal(err)
		}
		fs, ss = nil, nil
		for d := range own {
			fs, ss = append(fs, point(0.5, d)), append(ss, 2e-6*math.Exp(-float64(d)))
		}
		if err := g.Update("op/b", fs, ss); err != nil {
			t.Fatal(err)
		}
		return g
	}
	var test [][]float64
	var secs []float64
	for d := range 4 {
		test, secs = append(test, point(0.5, d)), append(secs, math.Exp(float64(d)))
	}
	for d := range 4 {
		test = append(test, point(0.9, d))
	}
	g1 := fit(1, 0, 0)
	s0, s1, sHalf := fit(0, 0, 0).Predict(test), g1.Predict(test), fit(0.5, 0, 0).Predict(test)
	if acc := PairwiseAccuracy(s1[:4], secs); acc != 1 {
		t.Errorf("weight 1: pairwise %.2f on the sibling's rule, want 1 (scores %v)", acc, s1[:4])
	}
	// The prior is the trees' sibling input: one index serves both.
	for i := range 4 {
		if in := g1.siblings().augment(test[i], "op/b")[NumFeatures]; math.Abs(s1[i]-in) > 1e-12 {
			t.Errorf("candidate %d: weight 1 scores %v, the sibling input is %v", i, s1[i], in)
		}
	}
	for i := range test {
		want := s0[i]
		if i < 4 {
			want = (s0[i] + s1[i]) / 2
		}
		if math.Abs(sHalf[i]-want) > 1e-9 {
			t.Errorf("candidate %d: weight 0.5 scores %v, want %v", i, sHalf[i], want)
		}
		if i >= 4 && s1[i] != s0[i] {
			t.Errorf("candidate %d of an unmeasured kind: weight 1 scores %v, weight 0 %v", i, s1[i], s0[i])
		}
	}
	// Four of the task's own measurements (the trees refit with them, the
	// prior still comes from op/a only) halve a SiblingHalf of 4.
	o0, o1, oDecay := fit(0, 0, 4).Predict(test), fit(1, 0, 4).Predict(test), fit(1, 4, 4).Predict(test)
	for i := range 4 {
		if want := (o0[i] + o1[i]) / 2; math.Abs(oDecay[i]-want) > 1e-9 {
			t.Errorf("candidate %d after 4 own measurements: half 4 scores %v, want %v", i, oDecay[i], want)
		}
	}
}

// TestGBTRooflineFit: the fitted weight of the roofline base is the slope
// of the measurements on the roofline's prediction — 1 where times follow
// it, ½ where they follow it at half its range, 0 where they ignore or
// contradict it — and a reloaded model keeps it (predicts the same).
func TestGBTRooflineFit(t *testing.T) {
	for _, c := range []struct {
		name  string
		slope float64
		want  float64
	}{{"exact", 1, 1}, {"half", 0.5, 0.5}, {"none", 0, 0}, {"contrary", -1, 0}, {"steeper", 2, 1}} {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(11, 11))
			p := DefaultGBTParams()
			p.RooflineFit, p.MinTrain, p.Trees = true, 8, 20
			g := NewGBT(p)
			var test [][]float64
			for task := range 4 {
				var fs [][]float64
				var ss []float64
				for range 32 {
					f := make([]float64, NumFeatures)
					lr := -20 + 4*rng.Float64()
					f[rooflineIndex] = lr
					fs = append(fs, f)
					ss = append(ss, math.Exp2(c.slope*lr+0.05*rng.NormFloat64()+float64(task)))
				}
				if err := g.Update(fmt.Sprint("t", task), fs, ss); err != nil {
					t.Fatal(err)
				}
				test = fs
			}
			if math.Abs(g.baseW-c.want) > 0.05 {
				t.Errorf("fitted roofline weight %.3f, want %.2f", g.baseW, c.want)
			}
			data, err := g.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			m, err := Unmarshal(g.Format(), data)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := fmt.Sprint(g.Predict(test)), fmt.Sprint(m.Predict(test)); a != b {
				t.Error("reloaded model predicts differently")
			}
		})
	}
}

// TestGBTSiblingFeature: three kinds of kernel, each with its own
// arbitrary speed table over three knobs of four values, measured at two
// shapes each; a third shape of the first kind is held out. With the
// sibling inputs the trees read its table off the other shapes' samples
// at the same knob values; without them they must learn three tables of
// 64 cells from the knob features. The inputs of a training sample leave
// its own task out (augment), else they would leak its own time.
func TestGBTSiblingFeature(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	kinds := []float64{0.2, 0.5, 0.8}
	tables := make([][]float64, len(kinds))
	for k := range tables {
		for range 64 {
			tables[k] = append(tables[k], rng.Float64()*3)
		}
	}
	point := func(kind float64, c int) []float64 {
		f := make([]float64, NumFeatures)
		f[workOffset+4], f[workOffset+5] = 3, kind
		for j, d := range []int{c % 4, c / 4 % 4, c / 16} {
			f[knobOffset+2*j], f[knobOffset+2*j+1] = lg(float64(int(1)<<d)), float64(d)/3
		}
		return f
	}
	var test [][]float64
	var secs []float64
	for c := range 64 {
		test, secs = append(test, point(kinds[0], c)), append(secs, 1e-5*math.Exp(tables[0][c]))
	}
	for _, on := range []bool{true, false} {
		p := DefaultGBTParams()
		p.SiblingFeature, p.SiblingWeight, p.MinTrain = on, 0, 1<<20
		g := NewGBT(p)
		for k, kind := range kinds {
			for shape := range 2 {
				var fs [][]float64
				var ss []float64
				for c := range 64 {
					fs = append(fs, point(kind, c))
					ss = append(ss, 1e-6*float64(shape+1)*math.Exp(tables[k][c]+0.05*rng.NormFloat64()))
				}
				if err := g.Update(fmt.Sprintf("op%d/%d", k, shape), fs, ss); err != nil {
					t.Fatal(err)
				}
			}
		}
		g.Params.MinTrain = 1
		if err := g.Update("op0/held", nil, nil); err != nil {
			t.Fatal(err)
		}
		g.fit()
		acc := PairwiseAccuracy(g.Predict(test), secs)
		t.Logf("sibling inputs %v: held-out pairwise %.3f", on, acc)
		if on && acc < 0.95 {
			t.Errorf("with sibling inputs: held-out pairwise %.3f, want ≥ 0.95", acc)
		}
		if !on && acc > 0.9 {
			t.Errorf("without sibling inputs: held-out pairwise %.3f, want < 0.9 (the test no longer needs them)", acc)
		}
	}
	// augment: the other tasks' mean at the knob values, and their count.
	p := DefaultGBTParams()
	p.MinTrain = 1 << 20
	g := NewGBT(p)
	x := point(0.5, 7)
	// Normalized speed of x: +1 in t0 (e² times faster than its other
	// sample), -1 in t1.
	for i, ss := range [][]float64{{1, math.Exp(2)}, {math.Exp(2), 1}} {
		if err := g.Update(fmt.Sprint("t", i), [][]float64{x, point(0.5, 8)}, ss); err != nil {
			t.Fatal(err)
		}
	}
	ix := g.siblingIndex()
	for _, c := range []struct {
		task      string
		x         []float64
		mean, cnt float64
	}{
		{"t0", x, -1, 1}, {"t1", x, 1, 1}, {"new", x, 0, math.Log2(3)}, {"t0", point(0.5, 9), siblingNone, 0},
	} {
		a := ix.augment(c.x, c.task)
		if len(a) != NumFeatures+siblingInputs || math.Abs(a[NumFeatures]-c.mean) > 1e-9 || math.Abs(a[NumFeatures+1]-c.cnt) > 1e-9 {
			t.Errorf("augment for %s: sibling inputs %v, want [%v %v]", c.task, a[NumFeatures:], c.mean, c.cnt)
		}
	}
}

// knobPoint is a feature vector of kind kind at knob point c (three knobs
// of four values) whose roofline predicts 2^roof seconds.
func knobPoint(kind float64, c int, roof float64) []float64 {
	f := make([]float64, NumFeatures)
	f[workOffset+4], f[workOffset+5] = 3, kind
	for j, d := range []int{c % 4, c / 4 % 4, c / 16} {
		f[knobOffset+2*j], f[knobOffset+2*j+1] = lg(float64(int(1)<<d)), float64(d)/3
	}
	f[rooflineIndex] = roof
	return f
}

// TestGBTSiblingShare: the sibling prior's share comes from the other
// tasks of the buffer. Three shapes of kind "agree" measure 16 knob points
// with one speed table (and a little noise), three of kind "disagree" with
// a table, its reverse and a third: a fourth shape of the first gets most
// of SiblingWeight, one of the second none, its score left as the trees'.
// The roofline ranks every task's points half right (a noisy copy of
// the table), so the agreeing kind's share is ρs/(ρs+ρr) < 1. A kind with
// a single other shape has no pair of its own and gets the buffer's
// agreement. The held-out task's own samples never move its share, and a
// pair sharing few points counts for less than one sharing many.
func TestGBTSiblingShare(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	table := func() []float64 {
		var v []float64
		for range 16 {
			v = append(v, 2*rng.Float64())
		}
		return v
	}
	agreeTab, disTab, thirdTab, lone := table(), table(), table(), table()
	reverse := slices.Clone(disTab)
	slices.Reverse(reverse)
	const agree, disagree, single = 0.2, 0.5, 0.8
	p := DefaultGBTParams()
	p.MinTrain, p.Trees = 8, 20
	g := NewGBT(p)
	add := func(task string, kind float64, tab []float64) {
		var fs [][]float64
		var ss []float64
		for c, v := range tab {
			fs = append(fs, knobPoint(kind, c, -20+v+2*rng.Float64()))
			ss = append(ss, 1e-6*math.Exp(v+0.05*rng.NormFloat64()))
		}
		if err := g.Update(task, fs, ss); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		add(fmt.Sprint("agree/", i), agree, agreeTab)
	}
	for i, tab := range [][]float64{disTab, reverse, thirdTab} {
		add(fmt.Sprint("disagree/", i), disagree, tab)
	}
	add("single/0", single, lone)
	if err := g.Update("agree/held", nil, nil); err != nil {
		t.Fatal(err)
	}
	key := func(kind float64) string { return siblingKey(knobPoint(kind, 5, 0)) }
	ix := g.siblings()
	sAgree, sDis, sSingle := ix.share(key(agree), "agree/held"), ix.share(key(disagree), "disagree/held"), ix.share(key(single), "single/held")
	t.Logf("shares: agree %.3f, disagree %.3f, single %.3f", sAgree, sDis, sSingle)
	if sAgree < 0.5 || sAgree > 0.95 {
		t.Errorf("siblings that agree: share %.3f, want in [0.5, 0.95] (their agreement over theirs and the roofline's)", sAgree)
	}
	if sDis != 0 {
		t.Errorf("siblings that disagree: share %.3f, want 0", sDis)
	}
	// single/0 has no other shape: the buffer's pairs (all but
	// single/held's) answer, the same as for a kind nobody measured.
	if want := ix.share(siblingKey(knobPoint(0.9, 5, 0)), "single/held"); sSingle != want || sSingle <= 0 {
		t.Errorf("a kind with one other shape: share %.3f, want the buffer's %.3f (> 0)", sSingle, want)
	}

	// The blend follows the share: a disagreeing kind's candidates keep
	// the trees' scores, an agreeing kind's move towards the siblings.
	var test [][]float64
	for c := range 16 {
		test = append(test, knobPoint(agree, c, -19))
	}
	for c := range 16 {
		test = append(test, knobPoint(disagree, c, -19))
	}
	withPrior := g.Predict(test)
	g.Params.SiblingWeight = 0
	trees := g.Predict(test)
	g.Params.SiblingWeight = 1
	for i := range test {
		moved := withPrior[i] != trees[i]
		if i < 16 && !moved {
			t.Errorf("agreeing kind, point %d: the prior left the score %v as it was", i, trees[i])
		}
		if i >= 16 && moved {
			t.Errorf("disagreeing kind, point %d: scored %v, the trees alone %v", i-16, withPrior[i], trees[i])
		}
	}

	// Leave-one-task-out: agree/held's own samples, the reverse of its
	// siblings', do not enter its share (another task's would).
	backward := slices.Clone(agreeTab)
	slices.Reverse(backward)
	add("agree/held", agree, backward)
	if got := g.siblings().share(key(agree), "agree/held"); got != sAgree {
		t.Errorf("share after the held-out task's own samples: %.3f, want %.3f as before", got, sAgree)
	}
	if got := g.siblings().share(key(agree), "agree/other"); got >= sAgree {
		t.Errorf("share for another task once agree/held disagrees: %.3f, want below %.3f", got, sAgree)
	}

	// Shrinkage: the same perfect agreement on 4 shared points weighs
	// less than on 16 (z·I/(I+1), I = points - 3).
	few := NewGBT(p)
	for i := range 3 {
		var fs [][]float64
		var ss []float64
		for c := range 16 {
			if i > 0 && c >= 4 {
				break
			}
			fs, ss = append(fs, knobPoint(agree, c, -20)), append(ss, 1e-6*math.Exp(agreeTab[c]))
		}
		if err := few.Update(fmt.Sprint("agree/", i), fs, ss); err != nil {
			t.Fatal(err)
		}
	}
	fz, fi := few.siblings().agreement([]string{"agree/0", "agree/1"})
	az, ai := ix.agreement([]string{"agree/0", "agree/1"})
	if fi != 1 || ai != 13 || math.Tanh(fz*fi/(fi+1)) >= math.Tanh(az*ai/(ai+1)) {
		t.Errorf("agreement on 4 points: z %.2f weight %v; on 16: z %.2f weight %v: want weights 1 and 13 and less agreement from fewer points", fz, fi, az, ai)
	}
}

// TestGBTSiblingCentered: with the roofline base on, the prior is
// blended in the score's units: at weight 1 a candidate another shape
// measured scores the sibling mean plus the batch's mean base (the trees'
// target is centered per task, the base is not), so it does not drop
// below every candidate without a sibling measurement by the base's size.
func TestGBTSiblingCentered(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	p := DefaultGBTParams()
	p.MinTrain, p.Trees, p.SiblingShare = 8, 20, false
	g := NewGBT(p)
	for task := range 2 {
		var fs [][]float64
		var ss []float64
		for c := range 32 {
			roof := -20 + 4*rng.Float64()
			fs, ss = append(fs, knobPoint(0.3, c, roof)), append(ss, math.Exp2(roof+0.1*rng.NormFloat64()+float64(task)))
		}
		if err := g.Update(fmt.Sprint("op/", task), fs, ss); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Update("op/held", nil, nil); err != nil {
		t.Fatal(err)
	}
	var test [][]float64
	for c := range 64 { // 32 points the siblings measured, 32 they did not
		test = append(test, knobPoint(0.3, c, -20+4*rng.Float64()))
	}
	center := 0.0
	for _, x := range test {
		center += g.base(x)
	}
	center /= float64(len(test))
	if center < 5 {
		t.Fatalf("mean base %.2f: the test needs the roofline base well above 0 (fitted weight %.2f)", center, g.baseW)
	}
	sc := g.Predict(test)
	ix := g.siblings()
	for i, x := range test {
		mean, n := ix.others(x, "op/held")
		if n == 0 {
			continue
		}
		if want := mean + center; math.Abs(sc[i]-want) > 1e-9 {
			t.Errorf("point %d: scored %.3f, want the sibling mean %.3f + the batch's mean base %.3f", i, sc[i], mean, center)
		}
	}
}
