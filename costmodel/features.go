package costmodel

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"llmir/schedule"
)

// Device is what the features and the roofline know of the machine. Callers
// fill it from their target (search does it from the CPU fingerprint and
// its roofline probes); zero fields take the defaults of DefaultDevice.
type Device struct {
	VectorBits int     // widest vector in bits (512 with AVX-512); 0: scalar
	Threads    int     // threads the kernel runs with
	L1, L2     int64   // per-core data cache bytes
	LLC        int64   // last-level cache bytes
	PeakGFLOPs float64 // measured FMA peak at Threads (GFLOP/s)
	ReadGBs    float64 // measured read bandwidth at Threads (GB/s)
}

// DefaultDevice is used for every zero field of a Device: a 2-core AVX-512
// machine like the one llmir is developed on.
var DefaultDevice = Device{VectorBits: 512, Threads: 1, L1: 48 << 10, L2: 2 << 20, LLC: 32 << 20, PeakGFLOPs: 100, ReadGBs: 25}

func (d Device) withDefaults() Device {
	def := DefaultDevice
	if d.VectorBits <= 0 {
		d.VectorBits = 32 // scalar: one f32 lane
	}
	if d.Threads <= 0 {
		d.Threads = def.Threads
	}
	if d.L1 <= 0 {
		d.L1 = def.L1
	}
	if d.L2 <= 0 {
		d.L2 = def.L2
	}
	if d.LLC <= 0 {
		d.LLC = def.LLC
	}
	if d.PeakGFLOPs <= 0 {
		d.PeakGFLOPs = def.PeakGFLOPs * float64(d.Threads)
	}
	if d.ReadGBs <= 0 {
		d.ReadGBs = def.ReadGBs
	}
	return d
}

// lanes is the number of f32 lanes of one vector.
func (d Device) lanes() float64 { return math.Max(float64(d.VectorBits)/32, 1) }

// TopBuffers is how many buffers (by bytes touched) get access features.
const TopBuffers = 4

// Feature names, in vector order. doc.go documents each one.
var globalFeatureNames = []string{
	"log_flops", "log_special_ops", "log_ideal_bytes",
	"log_traffic_l1", "log_traffic_l2", "log_traffic_dram",
	"log_ai_ideal", "log_ai_dram",
	"log_loads_global", "log_loads_local", "log_loads_register", "log_loads_shared",
	"log_stores_global", "log_stores_local", "log_stores_register", "log_stores_shared",
	"vec_lanes", "vec_util", "vec_loops", "log_unroll",
	"log_parallel_extent", "par_balance", "par_thread_frac",
	"depth", "blocks", "log_inner_extent",
	"fit_l1", "fit_l2", "fit_llc",
	"ws_over_l1", "ws_over_l2", "ws_over_llc",
	"log_roofline_seconds", "log_scratch_bytes", "acc_vregs",
}

// LoopLevels is how many of the main block's innermost loops get per-level
// features (innermost first).
const LoopLevels = 6

var loopFeatureNames = []string{"log_extent", "kind", "moves_output", "fp_over_l1", "fp_over_l2"}

var bufferFeatureNames = []string{
	"log_bytes", "log_unique_bytes", "log_cache_lines", "log_inner_stride",
	"contiguous", "log_reuse_distance", "log_reuse_count", "reuse_level",
	"written", "log_dram_traffic",
}

// FeatureNames lists the names of the feature vector's entries: the global
// features, "loopN.<name>" for each of the LoopLevels loops, "bufN.<name>"
// for each of the TopBuffers buffers, the work features, then
// "knobN.<name>" for each of the MaxKnobs sampling steps.
func FeatureNames() []string {
	names := slices.Clone(globalFeatureNames)
	for l := range LoopLevels {
		for _, n := range loopFeatureNames {
			names = append(names, fmt.Sprintf("loop%d.%s", l, n))
		}
	}
	for b := range TopBuffers {
		for _, n := range bufferFeatureNames {
			names = append(names, fmt.Sprintf("buf%d.%s", b, n))
		}
	}
	names = append(names, workFeatureNames...)
	for k := range MaxKnobs {
		for _, n := range knobFeatureNames {
			names = append(names, fmt.Sprintf("knob%d.%s", k, n))
		}
	}
	return names
}

// NumFeatures is the length of every feature vector.
var NumFeatures = len(globalFeatureNames) + LoopLevels*len(loopFeatureNames) + TopBuffers*len(bufferFeatureNames) +
	len(workFeatureNames) + MaxKnobs*len(knobFeatureNames)

// FeatureVersion changes whenever the meaning of the vector changes; a
// serialized model trained on another version is rejected.
// Version 2 added the work and knob features (ScheduleFeatures), version 3
// the kind feature.
const FeatureVersion = 3

// lg is the log transform for counts and sizes: log2(1+x), 0 at 0.
func lg(x float64) float64 { return math.Log2(1 + math.Max(x, 0)) }

// Analysis is the intermediate result of feature extraction, kept so that
// the roofline model and tests can read real quantities (not logs).
type Analysis struct {
	FLOPs        float64        // float operations (one per +, -, *, /, min, max; reduce += counts one)
	SpecialOps   float64        // element-wise function calls (exp, silu…)
	IdealBytes   float64        // each parameter read or written once
	TrafficL1    float64        // bytes brought into L1 (from L2)
	TrafficL2    float64        // bytes brought into L2 (from LLC)
	TrafficDRAM  float64        // bytes brought into the LLC (from memory)
	VecLanes     float64        // f32 lanes of the main block's vectorized loop (1: none)
	VecUtil      float64        // VecLanes over the device's lanes, at most 1
	ParallelExt  float64        // iterations of the main block's parallel loops
	ParBalance   float64        // work of the average thread over the busiest one
	ThreadFrac   float64        // threads with work over threads available
	RooflineTime float64        // seconds the roofline predicts (see Roofline)
	Buffers      []BufferAccess // by bytes touched, largest first

	LoadsByScope, StoresByScope map[schedule.Scope]float64 // element accesses
	VecLoops                    int                        // vectorized loops around the main block
	Unroll                      float64                    // product of its unrolled extents
	Depth, Blocks               int                        // main block's loop depth; blocks in the nest
	InnerExtent                 float64                    // mean extent of the main block's innermost loop
	Fit                         [3]float64                 // share of main loop levels whose subtree fits L1, L2, LLC
	WSOver                      [3]float64                 // log2(working set / cache) for L1, L2, LLC
	Levels                      []LoopLevel                // main block's loops, innermost first
	ScratchBytes                float64                    // local/shared scratch buffers
	AccVRegs                    float64                    // register buffers in vector registers

	dev Device // with defaults filled
}

// LoopLevel is one loop around the main block.
type LoopLevel struct {
	Extent      float64 // mean extent
	Kind        schedule.LoopKind
	MovesOutput bool    // the block's store address moves with it (not a reduction loop)
	Footprint   float64 // distinct bytes its whole subtree touches (register buffers excluded)
}

// BufferAccess is how the nest touches one buffer.
type BufferAccess struct {
	Name        string
	Scope       schedule.Scope
	Bytes       float64 // bytes loaded and stored, every access counted
	UniqueBytes float64 // distinct bytes touched
	CacheLines  float64 // cache-line touches of the innermost access streams
	InnerStride float64 // bytes between consecutive innermost iterations
	ReuseDist   float64 // bytes touched between two uses of an element (0: no reuse)
	ReuseCount  float64 // iterations of the loop that carries the reuse
	ReuseLevel  float64 // depth of that loop over the nest depth (0: no reuse)
	Written     bool
	DRAMTraffic float64 // bytes this buffer brings from memory
}

// Features is the fixed-length feature vector of a lowered nest on a
// device. dims are the runtime extents of the dynamic dims (nil: their
// buckets). Deterministic: the same nest gives the same vector.
func Features(n *schedule.Nest, dev Device, dims []int64) ([]float64, error) {
	a, err := Analyze(n, dev, dims)
	if err != nil {
		return nil, err
	}
	return a.vector(), nil
}

// Analyze computes the quantities the features are made of.
func Analyze(n *schedule.Nest, dev Device, dims []int64) (*Analysis, error) {
	dev = dev.withDefaults()
	if dims == nil {
		for _, d := range n.Dims {
			dims = append(dims, d.Extent)
		}
	}
	if len(dims) != len(n.Dims) {
		return nil, fmt.Errorf("features of %s: %d runtime dims for %d dynamic dims", n.Name, len(dims), len(n.Dims))
	}
	for i, d := range dims {
		if d < 1 || d > n.Dims[i].Extent {
			return nil, fmt.Errorf("features of %s: dim %s = %d outside 1..%d", n.Name, n.Dims[i].Name, d, n.Dims[i].Extent)
		}
	}
	w := &walker{n: n, dev: dev, dims: dims, env: map[string]int64{}, relevant: map[string]bool{},
		loops: map[string]*loopStat{}, blocks: map[*schedule.Block]*blockStat{}}
	collectExtentVars(n.Body, w.relevant)
	if err := w.visit(n.Body, 1, nil); err != nil {
		return nil, fmt.Errorf("features of %s: %w", n.Name, err)
	}
	return w.analyze()
}

// loopStat accumulates, over the weighted walk, how often a loop is entered
// and how many iterations it runs in all.
type loopStat struct {
	loop    *schedule.Loop
	entries float64
	iters   float64
}

func (l *loopStat) mean() float64 {
	if l.entries == 0 {
		return 0
	}
	return l.iters / l.entries
}

type blockStat struct {
	block *schedule.Block
	path  []*schedule.Loop
	iters float64
	order int
}

type walker struct {
	n        *schedule.Nest
	dev      Device
	dims     []int64
	env      map[string]int64
	relevant map[string]bool
	loops    map[string]*loopStat
	blocks   map[*schedule.Block]*blockStat
}

// collectExtentVars marks the loop variables some extent depends on
// (split tails): only those are enumerated in the walk.
func collectExtentVars(ss []schedule.Stmt, rel map[string]bool) {
	for _, s := range ss {
		if l, ok := s.(*schedule.Loop); ok {
			for _, v := range schedule.Vars(l.Extent) {
				rel[v] = true
			}
			collectExtentVars(l.Body, rel)
		}
	}
}

// visit walks the nest with weights instead of enumerating it: a loop whose
// variable no extent depends on multiplies its body's weight by its
// extent; one that extents depend on is evaluated at each value when
// short, else at its first value (weight E-1) and its last (weight 1),
// which is exact for the min(f, E - o*f) tails splits produce and keeps
// the walk linear in the nest's size for any shape.
func (w *walker) visit(ss []schedule.Stmt, weight float64, path []*schedule.Loop) error {
	for _, s := range ss {
		switch s := s.(type) {
		case *schedule.Loop:
			e, err := evalInt(s.Extent, w.env, w.dims)
			if err != nil {
				return fmt.Errorf("loop %s extent %s: %w", s.Name, s.Extent, err)
			}
			if e <= 0 {
				continue
			}
			st := w.loops[s.Name]
			if st == nil {
				st = &loopStat{loop: s}
				w.loops[s.Name] = st
			}
			st.entries += weight
			st.iters += weight * float64(e)
			p := append(slices.Clone(path), s)
			if !w.relevant[s.Name] {
				if err := w.visit(s.Body, weight*float64(e), p); err != nil {
					return err
				}
				continue
			}
			type point struct {
				v int64
				w float64
			}
			var pts []point
			if e <= 8 {
				for v := range e {
					pts = append(pts, point{v, 1})
				}
			} else {
				pts = []point{{0, float64(e - 1)}, {e - 1, 1}}
			}
			for _, pt := range pts {
				w.env[s.Name] = pt.v
				if err := w.visit(s.Body, weight*pt.w, p); err != nil {
					return err
				}
			}
			delete(w.env, s.Name)
		case *schedule.Block:
			st := w.blocks[s]
			if st == nil {
				st = &blockStat{block: s, path: slices.Clone(path), order: len(w.blocks)}
				w.blocks[s] = st
			}
			st.iters += weight
		}
	}
	return nil
}

// access is one load or store of a block, with its physical address as an
// expression of loop variables.
type access struct {
	blk     *blockStat
	buf     *schedule.Buffer
	addr    schedule.Expr
	store   bool
	es      float64   // element size in bytes
	strides []float64 // elements per iteration of each path loop
	ext     []float64 // mean extent of each path loop
	uniq    []float64 // distinct elements under each path level (subtree of path[l])
}

func dtypeSize(d schedule.DType) float64 {
	if d == schedule.F32 {
		return 4
	}
	return 2
}

// linearAddr is the row-major physical element offset of idx in buf.
func linearAddr(buf *schedule.Buffer, idx []schedule.Expr) schedule.Expr {
	phys := buf.PhysIndex(idx)
	shape := buf.PhysShape()
	var addr schedule.Expr = schedule.C(0)
	for d, e := range phys {
		addr = schedule.Add(schedule.Mul(addr, shape[d]), e)
	}
	return addr
}

// countOps counts float operations and loads of a block value; loads are
// returned with their indices, which are not counted as float work.
func countOps(e schedule.Expr, flops, special *float64, loads *[]schedule.Load) {
	switch x := e.(type) {
	case schedule.Load:
		*loads = append(*loads, x)
	case schedule.Bin:
		*flops++
		countOps(x.A, flops, special, loads)
		countOps(x.B, flops, special, loads)
	case schedule.Call:
		*special++
		for _, a := range x.Args {
			countOps(a, flops, special, loads)
		}
	}
}

func (w *walker) bufSize(b *schedule.Buffer) float64 {
	n := 1.0
	for _, s := range b.PhysShape() {
		v, err := evalInt(s, nil, w.dims)
		if err != nil {
			return math.Inf(1)
		}
		n *= float64(max(v, 1))
	}
	return n
}

func (w *walker) analyze() (*Analysis, error) {
	a := &Analysis{dev: w.dev, VecLanes: 1, VecUtil: 1 / w.dev.lanes(), ParBalance: 1, ThreadFrac: 1 / float64(w.dev.Threads)}
	blocks := make([]*blockStat, 0, len(w.blocks))
	for _, b := range w.blocks {
		blocks = append(blocks, b)
	}
	slices.SortFunc(blocks, func(x, y *blockStat) int { return cmp.Compare(x.order, y.order) })
	var accs []*access
	var main *blockStat
	mainWork := -1.0
	loadsByScope := map[schedule.Scope]float64{}
	storesByScope := map[schedule.Scope]float64{}
	for _, b := range blocks {
		var fl, sp float64
		var loads []schedule.Load
		countOps(b.block.Value, &fl, &sp, &loads)
		if b.block.Reduce {
			fl++
		}
		a.FLOPs += fl * b.iters
		a.SpecialOps += sp * b.iters
		if work := (fl + sp) * b.iters; work > mainWork {
			main, mainWork = b, work
		}
		binds := map[string]schedule.Expr{}
		for i, ax := range b.block.Axes {
			binds[ax.Name] = b.block.Binds[i]
		}
		add := func(bufName string, idx []schedule.Expr, store bool) error {
			buf := w.n.Buffer(bufName)
			if buf == nil {
				return fmt.Errorf("block %s accesses unknown buffer %s", b.block.Name, bufName)
			}
			sub := make([]schedule.Expr, len(idx))
			for i, e := range idx {
				sub[i] = schedule.Subst(e, binds)
			}
			ac := &access{blk: b, buf: buf, addr: linearAddr(buf, sub), store: store, es: dtypeSize(buf.DType)}
			if store {
				storesByScope[buf.Scope] += b.iters
			} else {
				loadsByScope[buf.Scope] += b.iters
			}
			accs = append(accs, ac)
			return nil
		}
		for _, ld := range loads {
			if err := add(ld.Buf, ld.Index, false); err != nil {
				return nil, err
			}
		}
		if b.block.Reduce {
			if err := add(b.block.Buf, b.block.Index, false); err != nil {
				return nil, err
			}
		}
		if err := add(b.block.Buf, b.block.Index, true); err != nil {
			return nil, err
		}
	}
	for _, ac := range accs {
		if err := w.strides(ac); err != nil {
			return nil, err
		}
	}
	// Footprint of each loop's subtree: per buffer the largest set of
	// distinct elements one access touches under it (accesses of one buffer
	// mostly overlap: out read and written, a tile loaded then stored).
	foot := map[string]map[string]float64{}
	for _, ac := range accs {
		if ac.buf.Scope == schedule.Register {
			continue
		}
		for l, lp := range ac.blk.path {
			m := foot[lp.Name]
			if m == nil {
				m = map[string]float64{}
				foot[lp.Name] = m
			}
			m[ac.buf.Name] = max(m[ac.buf.Name], ac.uniq[l]*ac.es)
		}
	}
	footOf := func(loop string) float64 {
		// Summed in buffer-name order: float sums in map order would make
		// the features differ in the last bit from run to run.
		m := foot[loop]
		names := make([]string, 0, len(m))
		for name := range m {
			names = append(names, name)
		}
		slices.Sort(names)
		s := 0.0
		for _, name := range names {
			s += m[name]
		}
		return s
	}
	// Traffic into a cache of size c: each access reloads, per entry of the
	// outermost loop whose subtree fits, the lines it touches under it.
	traffic := func(ac *access, c float64) float64 {
		if ac.buf.Scope == schedule.Register {
			return 0
		}
		for l, lp := range ac.blk.path {
			if footOf(lp.Name) <= c {
				return w.loops[lp.Name].entries * ac.lines(l) * 64
			}
		}
		// Not even the innermost loop fits: every iteration streams.
		return ac.blk.iters * math.Max(ac.es, 64*math.Min(1, ac.innerStrideBytes()/64))
	}
	l1, l2, llc := float64(w.dev.L1), float64(w.dev.L2), float64(w.dev.LLC)
	perBuf := map[string]*BufferAccess{}
	heaviest := map[string]struct {
		bytes float64
		store bool
	}{}
	var order []string
	for _, ac := range accs {
		ba := perBuf[ac.buf.Name]
		if ba == nil {
			ba = &BufferAccess{Name: ac.buf.Name, Scope: ac.buf.Scope}
			perBuf[ac.buf.Name] = ba
			order = append(order, ac.buf.Name)
		}
		tl1, tl2, tdram := traffic(ac, l1), traffic(ac, l2), traffic(ac, llc)
		a.TrafficL1 += tl1
		a.TrafficL2 += tl2
		a.TrafficDRAM += tdram
		ba.DRAMTraffic += tdram
		bytes := ac.blk.iters * ac.es
		if h := heaviest[ac.buf.Name]; bytes > h.bytes || (bytes == h.bytes && h.store && !ac.store) {
			// The buffer's stride and reuse are those of its heaviest
			// access, a load on ties (a packed copy's store walks the
			// layout in the copy's order, the consumer in its own).
			heaviest[ac.buf.Name] = struct {
				bytes float64
				store bool
			}{bytes, ac.store}
			ba.InnerStride = ac.innerStrideBytes()
			ba.ReuseDist, ba.ReuseCount, ba.ReuseLevel = w.reuse(ac, accs)
		}
		ba.Bytes += bytes
		if len(ac.blk.path) > 0 {
			ba.UniqueBytes = max(ba.UniqueBytes, w.loops[ac.blk.path[0].Name].entries*ac.uniq[0]*ac.es)
			ba.CacheLines += ac.blk.iters / math.Max(ac.inner(), 1) * math.Ceil(math.Max(ac.inner()*ac.innerStrideBytes(), ac.es)/64)
		} else {
			ba.UniqueBytes = max(ba.UniqueBytes, ac.es)
			ba.CacheLines++
		}
		ba.Written = ba.Written || ac.store
	}
	for _, name := range order {
		ba := perBuf[name]
		buf := w.n.Buffer(name)
		if buf.Param >= 0 {
			ba.UniqueBytes = math.Min(ba.UniqueBytes, w.bufSize(buf)*dtypeSize(buf.DType))
			a.IdealBytes += w.bufSize(buf) * dtypeSize(buf.DType)
		}
		a.Buffers = append(a.Buffers, *ba)
	}
	slices.SortStableFunc(a.Buffers, func(x, y BufferAccess) int { return cmp.Compare(y.Bytes, x.Bytes) })
	a.LoadsByScope, a.StoresByScope = loadsByScope, storesByScope
	a.Blocks = len(blocks)
	for _, buf := range w.n.Buffers {
		switch {
		case buf.Param >= 0:
		case buf.Scope == schedule.Register:
			a.AccVRegs += w.bufSize(buf) * dtypeSize(buf.DType) / (4 * w.dev.lanes())
		default:
			a.ScratchBytes += w.bufSize(buf) * dtypeSize(buf.DType)
		}
	}
	if main != nil {
		w.mainLoops(a, main, accs, footOf)
	}
	a.RooflineTime = rooflineSeconds(a, w.dev)
	return a, nil
}

// strides fills the access's per-loop strides (by finite differences of
// the address, so packed layouts with // and % work) and the distinct
// elements under each loop level.
func (w *walker) strides(ac *access) error {
	path := ac.blk.path
	ac.strides = make([]float64, len(path))
	ac.ext = make([]float64, len(path))
	for l, lp := range path {
		ac.ext[l] = w.loops[lp.Name].mean()
	}
	ac.uniq = make([]float64, len(path)+1)
	base, err := evalInt(ac.addr, nil, w.dims)
	if err != nil {
		return fmt.Errorf("address of %s in block %s: %w", ac.buf.Name, ac.blk.block.Name, err)
	}
	for l, lp := range path {
		v, err := evalInt(ac.addr, map[string]int64{lp.Name: 1}, w.dims)
		if err != nil {
			return fmt.Errorf("address of %s in block %s: %w", ac.buf.Name, ac.blk.block.Name, err)
		}
		ac.strides[l] = float64(v - base)
	}
	size := w.bufSize(ac.buf)
	ac.uniq[len(path)] = 1
	for l := len(path) - 1; l >= 0; l-- {
		u := ac.uniq[l+1]
		if ac.strides[l] != 0 {
			u *= math.Max(w.loops[path[l].Name].mean(), 1)
		}
		ac.uniq[l] = math.Min(u, size)
	}
	return nil
}

// inner is the mean extent of the access's innermost loop (1: none).
func (ac *access) inner() float64 {
	if len(ac.ext) == 0 {
		return 1
	}
	return ac.ext[len(ac.ext)-1]
}

func (ac *access) innerStrideBytes() float64 {
	if len(ac.strides) == 0 {
		return 0
	}
	return math.Abs(ac.strides[len(ac.strides)-1]) * ac.es
}

// lines is the number of cache lines the access touches under path level
// l: the distinct elements, packed into lines along the loop with the
// smallest non-zero stride.
func (ac *access) lines(l int) float64 {
	best, ext := 0.0, 1.0
	for m := l; m < len(ac.strides); m++ {
		if s := math.Abs(ac.strides[m]) * ac.es; s > 0 && (best == 0 || s < best) {
			best = s
			ext = ac.ext[m]
		}
	}
	u := ac.uniq[l]
	if best == 0 || best >= 64 {
		return math.Max(u, 1)
	}
	ext = math.Max(ext, 1)
	return math.Max(u/ext*math.Ceil(ext*best/64), 1)
}

// reuse finds the innermost loop that carries reuse of the access (its
// address does not move with it): the bytes the block touches in one of
// its iterations (the reuse distance), its extent and its relative depth.
func (w *walker) reuse(ac *access, accs []*access) (dist, count, level float64) {
	path := ac.blk.path
	for l := len(path) - 1; l >= 0; l-- {
		if ac.strides[l] != 0 || ac.ext[l] <= 1 {
			continue
		}
		for _, o := range accs {
			if o.blk == ac.blk && o.buf.Scope != schedule.Register && !o.store {
				dist += o.uniq[l+1] * o.es
			}
		}
		return dist, ac.ext[l], float64(l+1) / float64(len(path))
	}
	return 0, 0, 0
}

// mainLoops reads the loop structure of the block doing the most work.
func (w *walker) mainLoops(a *Analysis, main *blockStat, accs []*access, footOf func(string) float64) {
	path := main.path
	a.Depth = len(path)
	unroll, par := 1.0, 1.0
	hasPar := false
	for _, lp := range path {
		e := w.loops[lp.Name].mean()
		switch lp.Kind {
		case schedule.Vectorized:
			a.VecLoops++
			es := 4.0
			if b := w.n.Buffer(main.block.Buf); b != nil {
				es = dtypeSize(b.DType)
			}
			a.VecLanes = e * es / 4
		case schedule.Unrolled:
			unroll *= e
		case schedule.Parallel, schedule.Bound:
			par *= e
			hasPar = true
		}
	}
	var store *access
	for _, ac := range accs {
		if ac.blk == main && ac.store {
			store = ac
		}
	}
	for l := len(path) - 1; l >= 0; l-- {
		lv := LoopLevel{Extent: w.loops[path[l].Name].mean(), Kind: path[l].Kind, Footprint: footOf(path[l].Name)}
		lv.MovesOutput = store != nil && store.strides[l] != 0
		a.Levels = append(a.Levels, lv)
	}
	a.VecUtil = math.Min(a.VecLanes/w.dev.lanes(), 1)
	a.Unroll = unroll
	if hasPar {
		t := float64(w.dev.Threads)
		a.ParallelExt = par
		a.ParBalance = (par / t) / math.Ceil(par/t)
		a.ThreadFrac = math.Min(par, t) / t
	}
	if len(path) > 0 {
		a.InnerExtent = w.loops[path[len(path)-1].Name].mean()
		for i, c := range []int64{w.dev.L1, w.dev.L2, w.dev.LLC} {
			fit := 0
			for _, lp := range path {
				if footOf(lp.Name) <= float64(c) {
					fit++
				}
			}
			a.Fit[i] = float64(fit) / float64(len(path))
			a.WSOver[i] = math.Log2(math.Max(footOf(path[0].Name), 1) / float64(c))
		}
	}
}

// vector is the feature vector in FeatureNames order.
func (a *Analysis) vector() []float64 {
	v := make([]float64, 0, NumFeatures)
	scopes := []schedule.Scope{schedule.Global, schedule.Local, schedule.Register, schedule.Shared}
	v = append(v, lg(a.FLOPs), lg(a.SpecialOps), lg(a.IdealBytes),
		lg(a.TrafficL1), lg(a.TrafficL2), lg(a.TrafficDRAM),
		lg(a.FLOPs/math.Max(a.IdealBytes, 1)), lg(a.FLOPs/math.Max(a.TrafficDRAM, 1)))
	for _, s := range scopes {
		v = append(v, lg(a.LoadsByScope[s]))
	}
	for _, s := range scopes {
		v = append(v, lg(a.StoresByScope[s]))
	}
	v = append(v, a.VecLanes, a.VecUtil, float64(a.VecLoops), lg(a.Unroll),
		lg(a.ParallelExt), a.ParBalance, a.ThreadFrac,
		float64(a.Depth), float64(a.Blocks), lg(a.InnerExtent),
		a.Fit[0], a.Fit[1], a.Fit[2],
		a.WSOver[0], a.WSOver[1], a.WSOver[2],
		math.Log2(math.Max(a.RooflineTime, 1e-12)), lg(a.ScratchBytes), a.AccVRegs)
	for l := range LoopLevels {
		if l >= len(a.Levels) {
			v = append(v, make([]float64, len(loopFeatureNames))...)
			continue
		}
		lv := a.Levels[l]
		moves := 0.0
		if lv.MovesOutput {
			moves = 1
		}
		v = append(v, lg(lv.Extent), float64(lv.Kind)+1, moves,
			math.Log2(math.Max(lv.Footprint, 1)/float64(a.dev.L1)), math.Log2(math.Max(lv.Footprint, 1)/float64(a.dev.L2)))
	}
	for i := range TopBuffers {
		if i >= len(a.Buffers) {
			v = append(v, make([]float64, len(bufferFeatureNames))...)
			continue
		}
		b := a.Buffers[i]
		contig, written := 0.0, 0.0
		if b.InnerStride > 0 && b.InnerStride <= 4 {
			contig = 1
		}
		if b.Written {
			written = 1
		}
		v = append(v, lg(b.Bytes), lg(b.UniqueBytes), lg(b.CacheLines), lg(b.InnerStride),
			contig, lg(b.ReuseDist), lg(b.ReuseCount), b.ReuseLevel, written, lg(b.DRAMTraffic))
	}
	// Work features from the nest's own counts; knob features need the
	// trace (ScheduleFeatures) and stay zero here.
	v = append(v, 0, lg(a.FLOPs), lg(a.IdealBytes), lg(a.FLOPs/math.Max(a.IdealBytes, 1)), 0, 0)
	v = append(v, make([]float64, MaxKnobs*len(knobFeatureNames))...)
	return v
}

// evalInt evaluates an index or extent expression; loop variables missing
// from env are 0 and dynamic dims take their runtime extents.
func evalInt(e schedule.Expr, env map[string]int64, dims []int64) (int64, error) {
	switch x := e.(type) {
	case schedule.Int:
		return x.V, nil
	case schedule.Var:
		return env[x.Name], nil
	case schedule.Dyn:
		if x.Index < 0 || x.Index >= len(dims) {
			return 0, fmt.Errorf("dynamic dim %s (index %d) has no runtime extent", x.Name, x.Index)
		}
		return dims[x.Index], nil
	case schedule.Bin:
		a, err := evalInt(x.A, env, dims)
		if err != nil {
			return 0, err
		}
		b, err := evalInt(x.B, env, dims)
		if err != nil {
			return 0, err
		}
		switch x.Op {
		case schedule.OpAdd:
			return a + b, nil
		case schedule.OpSub:
			return a - b, nil
		case schedule.OpMul:
			return a * b, nil
		case schedule.OpFloorDiv, schedule.OpDiv:
			if b == 0 {
				return 0, fmt.Errorf("division by zero in %s", e)
			}
			q := a / b
			if a%b != 0 && (a < 0) != (b < 0) {
				q--
			}
			return q, nil
		case schedule.OpMod:
			if b == 0 {
				return 0, fmt.Errorf("modulo by zero in %s", e)
			}
			m := a % b
			if m != 0 && (m < 0) != (b < 0) {
				m += b
			}
			return m, nil
		case schedule.OpMin:
			return min(a, b), nil
		case schedule.OpMax:
			return max(a, b), nil
		}
	}
	return 0, fmt.Errorf("%s is not an integer expression", e)
}
