package schedule_test

import (
	"fmt"

	"llmir/schedule"
)

// Example schedules the linear layer into the shape of a hand-written
// microkernel (the worked example of the package documentation).
func Example() {
	M, N, K := schedule.Dynamic("M", 512), schedule.Static(4096), schedule.Static(4096)
	i, j, k := schedule.NewAxis("i", M), schedule.NewAxis("j", N), schedule.NewAxis("k", K)
	a := schedule.Input("a", schedule.F32, M, K)
	w := schedule.Input("w", schedule.F32, N, K)
	out := schedule.Compute("out", schedule.F32, []schedule.Axis{i, j},
		schedule.Sum(k, schedule.Mul(a.At(i, k), w.At(j, k))))
	def, err := schedule.NewDef("linear", []*schedule.Tensor{a, w}, out)
	if err != nil {
		panic(err)
	}
	fmt.Print(def)

	s, _ := schedule.New(def, 1)
	check := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	is, err := s.Split("i", -1, 6)
	check(err)
	js, err := s.Split("j", -1, 8, 32)
	check(err)
	ks, err := s.Split("k", -1, 256)
	check(err)
	check(s.Reorder(js[0], ks[0], is[0], js[1], ks[1], is[1], js[2]))
	rf, err := s.RFactor("out", ks[0], 0)
	check(err)
	pack, err := s.CacheRead(rf, "w", schedule.Local, &schedule.Layout{Tile: []int64{32, 0}, Order: []int{0, 2, 1}})
	check(err)
	check(s.ComputeAt(pack, ks[0]))
	check(s.ReverseComputeAt("out", js[1]))
	check(s.SetScope("out_rf", schedule.Register))
	init, err := s.DecomposeReduction(rf, ks[1])
	check(err)
	for _, b := range []string{init, rf, "out"} {
		ls, err := s.Loops(b)
		check(err)
		check(s.Unroll(ls[len(ls)-2]))
		check(s.Vectorize(ls[len(ls)-1]))
	}
	check(s.Parallel(js[0]))
	loops, _ := s.Loops(rf)
	fmt.Println("microkernel loops:", loops)
	fmt.Println("trace length:", len(s.Trace().Insts))
	// Output:
	// def linear
	//   in a: f32[M<=512, 4096]
	//   in w: f32[4096, 4096]
	//   out out: f32[M<=512, 4096]
	//   out[i, j] = sum(k, a[i, k] * w[j, k])
	// microkernel loops: [j_0 k_0 i_0 j_1 k_1 i_1 j_2]
	// trace length: 17
}
