package schedule_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"llmir/schedule"
	"llmir/schedule/schedtest"
)

// sampledGEMM builds a schedule whose tiles come from sampling steps, so
// mutating a decision changes the loop nest.
func sampledGEMM(t testing.TB, def *schedule.Def, seed uint64) *schedule.Schedule {
	t.Helper()
	s := must1[*schedule.Schedule](t)(schedule.New(def, seed))
	ti := must1[[]schedule.Ref](t)(s.SamplePerfectTile("i", 2, 4))
	tj := must1[[]schedule.Ref](t)(s.SamplePerfectTile("j", 2, 16))
	is := must1[[]string](t)(s.SplitBy("i", ti...))
	js := must1[[]string](t)(s.SplitBy("j", tj...))
	must(t, s.Reorder(is[0], js[0], "k", is[1], js[1]))
	u := must1[schedule.Ref](t)(s.SampleCategorical([]int64{0, 1}, []float64{0.5, 0.5}))
	if u.Value == 1 {
		must(t, s.Unroll(is[1]))
	}
	must(t, s.Vectorize(js[1]))
	return s
}

func TestTraceRoundTripAndReplay(t *testing.T) {
	def := linearDef(t, 12, 32, 8, false)
	s := sampledGEMM(t, def, 3)
	js := must1[[]byte](t)(s.Trace().JSON())
	tr := must1[*schedule.Trace](t)(schedule.ParseTrace(js))
	js2 := must1[[]byte](t)(tr.JSON())
	if string(js) != string(js2) {
		t.Fatalf("JSON round trip differs:\n%s\n%s", js, js2)
	}
	r := must1[*schedule.Schedule](t)(schedule.Replay(def, tr))
	if r.Nest().String() != s.Nest().String() {
		t.Fatal("replay differs from the recorded schedule")
	}
	if !strings.Contains(string(js), `"decision"`) || !strings.Contains(string(js), `"t0"`) {
		t.Fatalf("trace lacks decisions or sampled references:\n%s", js)
	}
}

// TestTraceMutation: a mutated tile decision replays to a different but
// correct nest (a neighbour), including a decision with a tail.
func TestTraceMutation(t *testing.T) {
	def := linearDef(t, 12, 32, 8, false)
	tr := sampledGEMM(t, def, 3).Trace()
	base := must1[*schedule.Schedule](t)(schedule.Replay(def, tr)).Nest().String()
	for _, d := range [][]int64{{3, 4}, {6, 2}, {12, 1}, {5, 3}} {
		m := must1[*schedule.Trace](t)(tr.WithDecision(0, d))
		r, err := schedule.Replay(def, m)
		if err != nil {
			t.Fatalf("decision %v: %v", d, err)
		}
		got := r.Nest().String()
		if got == base && d[1] != tr.Insts[0].Decision[1] {
			t.Fatalf("decision %v replays to the same nest", d)
		}
		sameResult(t, def, r.Nest(), nil)
	}
}

func TestReplayErrors(t *testing.T) {
	def := linearDef(t, 12, 32, 8, false)
	tr := sampledGEMM(t, def, 3).Trace()
	bad := func(f func(tr *schedule.Trace)) *schedule.Trace {
		js := must1[[]byte](t)(tr.JSON())
		c := must1[*schedule.Trace](t)(schedule.ParseTrace(js))
		f(c)
		return c
	}
	cases := []struct {
		name string
		tr   *schedule.Trace
		want string
	}{
		{"decision too small", bad(func(c *schedule.Trace) { c.Insts[0].Decision = []int64{2, 2} }), "covers 4 < extent 12"},
		{"decision arity", bad(func(c *schedule.Trace) { c.Insts[0].Decision = []int64{12} }), "want 2"},
		{"inner too big", bad(func(c *schedule.Trace) { c.Insts[0].Decision = []int64{1, 12} }), "innermost 12 > 4"},
		{"categorical index", bad(func(c *schedule.Trace) {
			for i := range c.Insts {
				if c.Insts[i].Op == "sample_categorical" {
					c.Insts[i].Decision = []int64{7}
				}
			}
		}), "not an index"},
		{"unknown op", bad(func(c *schedule.Trace) { c.Insts[2].Op = "swizzle" }), "unknown primitive"},
		{"unknown loop", bad(func(c *schedule.Trace) { c.Insts[2].Args = []string{"nope"} }), `no loop "nope"`},
		{"unknown ref", bad(func(c *schedule.Trace) { c.Insts[2].Ints[0].Ref = "t99" }), "unknown sampled value"},
		{"wrong outputs", bad(func(c *schedule.Trace) { c.Insts[2].Outputs = []string{"x", "y"} }), "trace says"},
		{"other def", bad(func(c *schedule.Trace) { c.Def = "attention" }), "trace is for"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := schedule.Replay(def, c.tr)
			if err == nil || !errors.Is(err, schedule.ErrReplay) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrReplay containing %q", err, c.want)
			}
		})
	}
	for _, js := range []string{`{`, `{"def": 3}`, `{"insts": [{"op": "split", "ints": [true]}]}`, `{"insts": [], "extra": 1}`, `{"insts": []} {"insts": []}`, `{"insts": []} x`} {
		if _, err := schedule.ParseTrace([]byte(js)); err == nil {
			t.Errorf("ParseTrace(%s) succeeded", js)
		}
	}
}

// FuzzTraceReplay: any bytes either fail to parse or replay, or replay to a
// nest that prints and interprets without panicking.
func FuzzTraceReplay(f *testing.F) {
	def, err := schedtest.Linear(6, 16, 8, false)
	if err != nil {
		f.Fatal(err)
	}
	s, _ := schedule.New(def, 1)
	if _, err := schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 3, NR: 8, NC: 8, KC: 4, Parallel: true}); err != nil {
		f.Fatal(err)
	}
	js, _ := s.Trace().JSON()
	f.Add(js)
	s2 := sampledGEMM(f, def, 5)
	js2, _ := s2.Trace().JSON()
	f.Add(js2)
	if seeds, err := filepath.Glob(filepath.Join("testdata", "traces", "*.json")); err == nil {
		for _, p := range seeds {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := schedule.ParseTrace(data)
		if err != nil {
			return
		}
		r, err := schedule.Replay(def, tr)
		if err != nil {
			if !errors.Is(err, schedule.ErrReplay) && !errors.Is(err, schedule.ErrIllegal) {
				t.Fatalf("untyped replay error: %v", err)
			}
			return
		}
		n := r.Nest()
		_ = n.String()
		sameResult(t, def, n, nil)
	})
}
