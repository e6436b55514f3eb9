package schedule_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"llmir/schedule"
	"llmir/schedule/schedtest"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		must(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./schedule -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from golden file (run with -update after checking):\n--- got ---\n%s--- want ---\n%s", name, got, want)
	}
}

// recipe is a named schedule over the linear (out) or epilogue (acc,
// biased, y) definition.
type recipe struct {
	name     string
	epilogue bool
	apply    func(t testing.TB, s *schedule.Schedule)
}

var recipes = []recipe{
	{"naive", false, func(t testing.TB, s *schedule.Schedule) {}},
	{"split_tail", false, func(t testing.TB, s *schedule.Schedule) {
		must1[[]string](t)(s.Split("i", -1, 4))
		must1[[]string](t)(s.Split("k", 3, 2, 5))
	}},
	{"tile_vectorize", false, func(t testing.TB, s *schedule.Schedule) {
		ls := must1[[]string](t)(s.Tile([]string{"i", "j"}, []int64{4, 16}))
		must(t, s.Reorder(ls[0], ls[1], "k", ls[2], ls[3]))
		must(t, s.Vectorize(ls[3]))
		must(t, s.Unroll(ls[2]))
		must(t, s.Parallel(ls[0]))
	}},
	{"fuse_parallel", false, func(t testing.TB, s *schedule.Schedule) {
		f := must1[string](t)(s.Fuse("i", "j"))
		must(t, s.Parallel(f))
	}},
	{"reorder_k_outer", false, func(t testing.TB, s *schedule.Schedule) {
		must(t, s.Reorder("k", "i", "j"))
		must(t, s.Vectorize("j"))
	}},
	{"cache_write_local", false, func(t testing.TB, s *schedule.Schedule) {
		ls := must1[[]string](t)(s.Tile([]string{"i", "j"}, []int64{3, 8}))
		wb := must1[string](t)(s.CacheWrite("out", schedule.Local))
		must(t, s.ReverseComputeAt(wb, ls[1]))
		must1[string](t)(s.DecomposeReduction("out", "k"))
	}},
	{"cache_read_packed", false, func(t testing.TB, s *schedule.Schedule) {
		js := must1[[]string](t)(s.Split("j", -1, 8))
		must(t, s.Reorder(js[0], "i", "k", js[1]))
		c := must1[string](t)(s.CacheRead("out", "w", schedule.Local, &schedule.Layout{Tile: []int64{4, 0}, Order: []int{0, 2, 1}}))
		must(t, s.ComputeAt(c, js[0]))
	}},
	{"rfactor_parallel", false, func(t testing.TB, s *schedule.Schedule) {
		ks := must1[[]string](t)(s.Split("k", 4, -1))
		must(t, s.Reorder(ks[0], "i", "j", ks[1]))
		rf := must1[string](t)(s.RFactor("out", ks[0], 0))
		must(t, s.Parallel(ks[0]))
		_ = rf
	}},
	{"gemm_microkernel", false, func(t testing.TB, s *schedule.Schedule) {
		must1[map[string]string](t)(schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 3, NR: 8, NC: 16, KC: 8, Parallel: true}))
	}},
	{"gemv_decode", false, func(t testing.TB, s *schedule.Schedule) {
		// rfactor needs a loop without a tail: KV must divide K.
		kv := int64(4)
		for s.Def.Stages[0].RAxes[0].Dim.Extent%kv != 0 {
			kv--
		}
		must1[map[string]string](t)(schedtest.GEMV(s, "out", schedtest.GEMVTiles{JB: 8, KV: kv, MR: 3, JU: 2, Parallel: true}))
	}},
	{"epilogue_inline", true, func(t testing.TB, s *schedule.Schedule) {
		must(t, s.ComputeInline("biased"))
		ls := must1[[]string](t)(s.Loops("acc"))
		must(t, s.ReverseComputeAt("y", ls[1]))
	}},
	{"epilogue_tile_at", true, func(t testing.TB, s *schedule.Schedule) {
		ls := must1[[]string](t)(s.Tile([]string{"i", "j"}, []int64{4, 8}))
		must(t, s.ReverseComputeAt("biased", ls[1]))
		must(t, s.ReverseComputeAt("y", ls[1]))
	}},
}

func recipeDef(t testing.TB, r recipe, m, n, k int64) *schedule.Def {
	if r.epilogue {
		return epilogueDef(t, m, n, k, schedule.F32)
	}
	return linearDef(t, m, n, k, false)
}

// TestRecipesGolden prints every recipe's nest at one odd shape and
// compares with testdata/<name>.nest.
func TestRecipesGolden(t *testing.T) {
	for _, r := range recipes {
		t.Run(r.name, func(t *testing.T) {
			s := must1[*schedule.Schedule](t)(schedule.New(recipeDef(t, r, 10, 24, 12), 1))
			r.apply(t, s)
			got := s.Nest().String()
			if again := s.Nest().String(); again != got {
				t.Fatal("printing twice differs")
			}
			golden(t, r.name+".nest", got)
			if r.name == "gemm_microkernel" {
				js := must1[[]byte](t)(s.Trace().JSON())
				golden(t, filepath.Join("traces", r.name+".json"), string(js)+"\n")
			}
		})
	}
}

// TestRecipesMatchInterpreter: every recipe computes what the unscheduled
// nest computes, at shapes that divide the tiles and shapes that do not
// (1, primes, one past a tile).
func TestRecipesMatchInterpreter(t *testing.T) {
	shapes := [][3]int64{{1, 1, 1}, {10, 24, 12}, {7, 17, 13}, {4, 33, 9}, {13, 41, 29}}
	for _, r := range recipes {
		for _, sh := range shapes {
			t.Run(fmt.Sprintf("%s/%dx%dx%d", r.name, sh[0], sh[1], sh[2]), func(t *testing.T) {
				def := recipeDef(t, r, sh[0], sh[1], sh[2])
				s := must1[*schedule.Schedule](t)(schedule.New(def, 1))
				r.apply(t, s)
				sameResult(t, def, s.Nest(), nil)
			})
		}
	}
}

// TestRandomSchedules draws random legal schedules with the sampling steps,
// checks each against the interpreter, and checks that its trace survives
// JSON and replays to the identical nest.
func TestRandomSchedules(t *testing.T) {
	shapes := [][3]int64{{6, 16, 8}, {7, 13, 11}, {1, 32, 5}, {12, 9, 16}}
	for seed := uint64(0); seed < 60; seed++ {
		sh := shapes[seed%uint64(len(shapes))]
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			def := linearDef(t, sh[0], sh[1], sh[2], false)
			if seed%2 == 1 {
				def = must1[*schedule.Def](t)(schedtest.LinearKN(sh[0], sh[1], sh[2]))
			}
			s := must1[*schedule.Schedule](t)(schedule.New(def, seed))
			must(t, schedtest.Random(s, "out", rand.New(rand.NewPCG(seed, 99))))
			sameResult(t, def, s.Nest(), nil)
			js := must1[[]byte](t)(s.Trace().JSON())
			tr := must1[*schedule.Trace](t)(schedule.ParseTrace(js))
			r := must1[*schedule.Schedule](t)(schedule.Replay(def, tr))
			if got, want := r.Nest().String(), s.Nest().String(); got != want {
				t.Fatalf("replay differs:\n%s\nwant\n%s\ntrace %s", got, want, js)
			}
		})
	}
}

// TestDynamicDim: a kernel for bucket M ≤ 16 is correct at every runtime
// extent up to the bucket.
func TestDynamicDim(t *testing.T) {
	def := linearDef(t, 16, 24, 12, true)
	s := must1[*schedule.Schedule](t)(schedule.New(def, 1))
	must1[map[string]string](t)(schedtest.GEMM(s, "out", schedtest.GEMMTiles{MR: 4, NR: 8, NC: 8, KC: 4}))
	for _, m := range []int64{1, 3, 5, 16} {
		sameResult(t, def, s.Nest(), []int64{m})
	}
	if err := schedule.Interpret(s.Nest(), nil, []int64{17}); err == nil {
		t.Fatal("runtime extent above the bucket was accepted")
	}
}

// TestStorageDTypes: bf16/f16 weights with f32 accumulation.
func TestStorageDTypes(t *testing.T) {
	for _, dt := range []schedule.DType{schedule.BF16, schedule.F16} {
		t.Run(dt.String(), func(t *testing.T) {
			def := epilogueDef(t, 5, 16, 8, dt)
			s := must1[*schedule.Schedule](t)(schedule.New(def, 1))
			must(t, s.ComputeInline("biased"))
			c := must1[string](t)(s.CacheRead("acc", "w", schedule.Local, nil))
			must(t, s.ComputeAt(c, "j"))
			sameResult(t, def, s.Nest(), nil)
			if !strings.Contains(def.String(), "w: "+dt.String()) {
				t.Fatalf("definition does not show the storage type:\n%s", def)
			}
		})
	}
}

func TestDefString(t *testing.T) {
	golden(t, "linear.def", linearDef(t, 512, 4096, 4096, true).String())
	golden(t, "linear_silu.def", epilogueDef(t, 8, 16, 32, schedule.BF16).String())
}

func TestDefErrors(t *testing.T) {
	i, k := schedule.NewAxis("i", schedule.Static(4)), schedule.NewAxis("k", schedule.Static(4))
	a := schedule.Input("a", schedule.F32, schedule.Static(4), schedule.Static(4))
	b := schedule.Input("b", schedule.F32, schedule.Static(4))
	cases := []struct {
		name string
		out  *schedule.Tensor
		ins  []*schedule.Tensor
		want string
	}{
		{"rank", schedule.Compute("o", schedule.F32, []schedule.Axis{i}, a.At(i)), []*schedule.Tensor{a}, "rank 2"},
		{"unknown axis", schedule.Compute("o", schedule.F32, []schedule.Axis{i}, a.At(i, k)), []*schedule.Tensor{a}, "unknown axis k"},
		{"nested sum", schedule.Compute("o", schedule.F32, []schedule.Axis{i}, schedule.Add(b.At(i), schedule.Sum(k, a.At(i, k)))), []*schedule.Tensor{a, b}, "whole body"},
		{"missing input", schedule.Compute("o", schedule.F32, []schedule.Axis{i}, b.At(i)), []*schedule.Tensor{a}, "neither an input"},
		{"unknown function", schedule.Compute("o", schedule.F32, []schedule.Axis{i}, schedule.Fn("erf", b.At(i))), []*schedule.Tensor{b}, "unknown function"},
		{"duplicate name", schedule.Compute("b", schedule.F32, []schedule.Axis{i}, b.At(i)), []*schedule.Tensor{b}, "duplicate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := schedule.NewDef("bad", c.ins, c.out)
			if err == nil || !errors.Is(err, schedule.ErrBadDef) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrBadDef containing %q", err, c.want)
			}
		})
	}
}

// TestMergedLayout: a layout with Merge folds the last physical dims into
// one (row-major), and the simplifier reads the merged index of a loop
// fused from (i1, kk) — (f // 4)·4 + f % 4 — back as f, which is what lets
// the printer vectorize over the fused loop.
func TestMergedLayout(t *testing.T) {
	b := &schedule.Buffer{Name: "a_local", Shape: []schedule.Expr{schedule.C(16), schedule.C(64)},
		Layout: &schedule.Layout{Tile: []int64{0, 4}, Order: []int{1, 0, 2}, Merge: 2}}
	if got := fmt.Sprint(b.PhysShape()); got != "[16 64]" {
		t.Errorf("phys shape %s, want [16 64] (64/4 groups × 16·4)", got)
	}
	f := schedule.V("f")
	r := schedule.Ranges{Vars: map[string]schedule.Interval{"f": {Lo: 0, Hi: 15}, "k0": {Lo: 0, Hi: 15}}}
	i := schedule.FloorDiv(f, schedule.C(4))
	k := schedule.Add(schedule.Mul(schedule.V("k0"), schedule.C(4)), schedule.Mod(f, schedule.C(4)))
	var got []string
	for _, e := range b.PhysIndex([]schedule.Expr{i, k}) {
		got = append(got, r.Simplify(e).String())
	}
	if want := "[k0 f]"; fmt.Sprint(got) != want {
		t.Errorf("phys index %v, want %s", got, want)
	}
	for _, c := range []struct{ in, want schedule.Expr }{
		{schedule.Add(schedule.Mul(schedule.FloorDiv(f, schedule.C(4)), schedule.C(8)), schedule.Mul(schedule.Mod(f, schedule.C(4)), schedule.C(2))), schedule.Mul(f, schedule.C(2))},
		// Coefficients that do not match stay apart.
		{schedule.Add(schedule.Mul(schedule.FloorDiv(f, schedule.C(4)), schedule.C(3)), schedule.Mod(f, schedule.C(4))),
			schedule.Add(schedule.Mul(schedule.FloorDiv(f, schedule.C(4)), schedule.C(3)), schedule.Mod(f, schedule.C(4)))},
	} {
		if g, w := r.Simplify(c.in).String(), r.Simplify(c.want).String(); g != w {
			t.Errorf("Simplify(%s) = %s, want %s", c.in, g, w)
		}
	}
}
