package cgen

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"llmir/schedule"
)

// ErrUnsupported is wrapped by errors about nests this printer cannot print
// (a schedule problem, reported as a build failure of the candidate).
var ErrUnsupported = errors.New("cuda cgen: unsupported")

// Options configures Emit.
type Options struct {
	// Entry is the host function's name (the ABI entry).
	Entry string
	// Kernel is the __global__ function's name (default "llmir_nest").
	Kernel string
}

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Emit prints the nest as CUDA C++: one __global__ kernel and the host
// entry `int <Entry>(void *const *bufs, const int64_t *dims)` that checks
// the dynamic dims, derives the launch from the bound loops and launches.
func Emit(n *schedule.Nest, opt Options) (string, error) {
	if opt.Entry == "" {
		opt.Entry = "llmir_kernel"
	}
	if opt.Kernel == "" {
		opt.Kernel = "llmir_nest"
	}
	g := &gen{n: n, opt: opt, anc: map[string][]*schedule.Loop{}, loops: map[string]*schedule.Loop{},
		priv: map[string]*private{}, frag: map[string]*fragInfo{}, env: map[string]schedule.Expr{}}
	if err := g.prepare(); err != nil {
		return "", fmt.Errorf("emit %s: %w", n.Name, err)
	}
	body, err := g.kernelBody()
	if err != nil {
		return "", fmt.Errorf("emit %s: %w", n.Name, err)
	}
	return g.source(body), nil
}

type private struct {
	buf    *schedule.Buffer
	thread []string // per dim: the thread part of the index (printed, threads renamed to their axes)
	ext    []int64  // per dim: the per-thread extent
}

// fragInfo is an accumulator of mma instructions: per thread, MT×NT
// fragments of 4 floats (rows g and g+8, columns 2t and 2t+1 of each 16×8
// tile).
type fragInfo struct {
	rows, cols int64 // per-warp tile
}

type gen struct {
	n     *schedule.Nest
	opt   Options
	anc   map[string][]*schedule.Loop // loop -> its ancestors
	loops map[string]*schedule.Loop
	// launch
	grid     [3]string // host expressions
	gridMax  [3]int64
	gridExpr [3]schedule.Expr // non-nil when every loop on the axis has the same dim-only extent
	threads  [3]int64
	mma      bool
	priv     map[string]*private
	frag     map[string]*fragInfo
	reds     int // cross-thread reductions through shared memory
	redDecl  []string
	// printing state
	b      strings.Builder
	depth  int
	rg     schedule.Ranges
	env    map[string]schedule.Expr // loop variables rewritten (fragment lanes)
	thr    []*schedule.Loop         // enclosing threadIdx-bound loops
	guards int                      // enclosing thread guards
	remap  *remapCtx
	inMMA  bool
}

type remapCtx struct {
	buf    string
	mv, nv string // the loops walking the fragment's rows and columns
}

var axes = []string{"x", "y", "z"}

func axisIndex(thread string) (block bool, i int) {
	kind, a, _ := strings.Cut(thread, ".")
	return kind == "blockIdx", slices.Index(axes, a)
}

func (g *gen) errf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, a...))
}

func (g *gen) illegal(format string, a ...any) error {
	return fmt.Errorf("%w: %s", schedule.ErrIllegal, fmt.Sprintf(format, a...))
}

func walkLoops(ss []schedule.Stmt, anc []*schedule.Loop, f func(*schedule.Loop, []*schedule.Loop), fb func(*schedule.Block, []*schedule.Loop)) {
	for _, s := range ss {
		switch s := s.(type) {
		case *schedule.Loop:
			f(s, anc)
			walkLoops(s.Body, append(append([]*schedule.Loop{}, anc...), s), f, fb)
		case *schedule.Block:
			if fb != nil {
				fb(s, anc)
			}
		}
	}
}

func ranges(n *schedule.Nest, anc []*schedule.Loop) schedule.Ranges {
	r := schedule.Ranges{Vars: map[string]schedule.Interval{}, Dims: map[int]int64{}}
	for j, d := range n.Dims {
		r.Dims[j] = d.Extent
	}
	for _, l := range anc {
		if iv, ok := r.Bound(l.Extent); ok {
			r.Vars[l.Name] = schedule.Interval{Lo: 0, Hi: max(iv.Hi-1, 0)}
		}
	}
	return r
}

// prepare checks names and scopes and derives the launch, the private
// (per-thread) shape of register buffers and the mma accumulators.
func (g *gen) prepare() error {
	for _, b := range g.n.Buffers {
		if !ident.MatchString(b.Name) || strings.HasPrefix(b.Name, "llmir_") || strings.HasPrefix(b.Name, "d_") {
			return g.errf("buffer name %q cannot be a C identifier", b.Name)
		}
	}
	for _, d := range g.n.Dims {
		if !ident.MatchString(d.Name) {
			return g.errf("dim name %q cannot be a C identifier", d.Name)
		}
	}
	var err error
	hasTX := false
	blockDims := [3][]schedule.Expr{}
	walkLoops(g.n.Body, nil, func(l *schedule.Loop, anc []*schedule.Loop) {
		if err != nil {
			return
		}
		g.anc[l.Name] = anc
		g.loops[l.Name] = l
		if !ident.MatchString(l.Name) || strings.HasPrefix(l.Name, "llmir_") || strings.HasPrefix(l.Name, "d_") {
			err = g.errf("loop name %q cannot be a C identifier", l.Name)
			return
		}
		r := ranges(g.n, anc)
		iv, ok := r.Bound(l.Extent)
		switch l.Kind {
		case schedule.Parallel:
			err = g.errf("loop %s is parallel (a CPU loop kind); bind it to a GPU axis", l.Name)
		case schedule.Tensorized:
			g.mma = true
		case schedule.Bound:
			isBlock, i := axisIndex(l.Thread)
			if i < 0 || !ok {
				err = g.errf("loop %s bound to %s has no bounded extent", l.Name, l.Thread)
				return
			}
			for _, a := range anc {
				if a.Kind == schedule.Bound && strings.HasPrefix(a.Thread, "threadIdx") && isBlock {
					err = g.illegal("loop %s is bound to %s inside loop %s bound to %s", l.Name, l.Thread, a.Name, a.Thread)
					return
				}
			}
			if isBlock {
				g.gridMax[i] = max(g.gridMax[i], iv.Hi)
				blockDims[i] = append(blockDims[i], l.Extent)
			} else {
				g.threads[i] = max(g.threads[i], iv.Hi)
				hasTX = hasTX || i == 0
			}
		}
	}, nil)
	if err != nil {
		return err
	}
	for i := range 3 {
		g.grid[i] = fmt.Sprint(max(g.gridMax[i], 1))
		// A grid axis whose loops all have the same extent in dims only is
		// launched at the runtime extent, so it needs no guard.
		if len(blockDims[i]) > 0 {
			e := blockDims[i][0]
			same := len(schedule.Vars(e)) == 0
			for _, o := range blockDims[i][1:] {
				same = same && o.String() == e.String()
			}
			if _, isInt := e.(schedule.Int); same && !isInt {
				g.gridExpr[i] = e
				g.grid[i] = g.hostInt(e)
			}
		}
		g.threads[i] = max(g.threads[i], 1)
	}
	if g.mma {
		if hasTX && g.threads[0] != 32 {
			return g.errf("a tensorized region needs blockDim.x = 32 (the warp's lanes), loops bound to threadIdx.x have up to %d", g.threads[0])
		}
		g.threads[0] = 32
	}
	if t := g.threads[0] * g.threads[1] * g.threads[2]; t > 1024 {
		return g.illegal("%d threads per block (%d×%d×%d) exceed 1024", t, g.threads[0], g.threads[1], g.threads[2])
	}
	for _, p := range g.n.Params() {
		sz := int64(1)
		for _, e := range p.Shape {
			iv, ok := ranges(g.n, nil).Bound(e)
			if !ok {
				return g.errf("parameter %s has an unbounded shape", p.Name)
			}
			sz *= max(iv.Hi, 1)
		}
		if sz >= 1<<31 {
			return g.errf("parameter %s has %d elements; 32-bit indexing holds 2^31", p.Name, sz)
		}
	}
	return g.prepareBuffers()
}

// accesses lists every access of buffer name: the block, its ancestors
// and the index in loop variables.
type access struct {
	blk   *schedule.Block
	anc   []*schedule.Loop
	idx   []schedule.Expr
	store bool
}

func (g *gen) accessesOf(name string) []access {
	var out []access
	walkLoops(g.n.Body, nil, func(*schedule.Loop, []*schedule.Loop) {}, func(b *schedule.Block, anc []*schedule.Loop) {
		m := map[string]schedule.Expr{}
		for i, a := range b.Axes {
			m[a.Name] = b.Binds[i]
		}
		r := ranges(g.n, anc)
		full := func(idx []schedule.Expr) []schedule.Expr {
			o := make([]schedule.Expr, len(idx))
			for d, e := range idx {
				o[d] = r.Simplify(schedule.Subst(e, m))
			}
			return o
		}
		if b.Buf == name {
			out = append(out, access{blk: b, anc: anc, idx: full(b.Index), store: true})
		}
		visit := func(x schedule.Expr) {
			if ld, ok := x.(schedule.Load); ok && ld.Buf == name {
				out = append(out, access{blk: b, anc: anc, idx: full(ld.Index)})
			}
		}
		schedule.Visit(b.Value, visit)
		if b.Init != nil {
			schedule.Visit(b.Init, visit)
		}
	})
	return out
}

// threadVars are the loops bound to threadIdx axes among anc below the
// loop named at (all of anc when at is "").
func threadVars(anc []*schedule.Loop, at string) map[string]string {
	out := map[string]string{}
	below := at == ""
	for _, a := range anc {
		if below && a.Kind == schedule.Bound && strings.HasPrefix(a.Thread, "threadIdx") {
			out[a.Name] = a.Thread
		}
		if a.Name == at {
			below = true
		}
	}
	return out
}

func (g *gen) prepareBuffers() error {
	for _, b := range g.n.Buffers {
		if b.Param >= 0 {
			continue
		}
		switch b.Scope {
		case schedule.Global:
			return g.errf("buffer %s is a global scratch buffer; cache it in shared or register scope and compute_at it under the block loops", b.Name)
		case schedule.Shared:
			if b.AllocAt == "" {
				return g.illegal("shared buffer %s is allocated at the kernel entry, outside every block-bound loop (compute_at it under the blockIdx loops)", b.Name)
			}
			chain := append(append([]*schedule.Loop{}, g.anc[b.AllocAt]...), g.loops[b.AllocAt])
			blockBound := false
			for _, a := range chain {
				if a.Kind == schedule.Bound && strings.HasPrefix(a.Thread, "threadIdx") {
					return g.illegal("shared buffer %s is allocated inside loop %s bound to %s; shared memory belongs to the whole block", b.Name, a.Name, a.Thread)
				}
				blockBound = blockBound || (a.Kind == schedule.Bound && strings.HasPrefix(a.Thread, "blockIdx"))
			}
			if !blockBound && g.gridMax != [3]int64{} {
				return g.illegal("shared buffer %s is allocated at loop %s, outside every block-bound loop", b.Name, b.AllocAt)
			}
			if _, err := g.constSize(b); err != nil {
				return err
			}
		case schedule.Register, schedule.Local:
			if b.AllocAt == "" {
				return g.errf("register buffer %s is allocated at the kernel entry; compute_at it under the block loops", b.Name)
			}
			if err := g.preparePrivate(b); err != nil {
				return err
			}
		}
	}
	smem := int64(0)
	for _, b := range g.n.Buffers {
		if b.Param < 0 && b.Scope == schedule.Shared {
			sz, _ := g.constSize(b)
			smem += sz * b.DType.Size()
		}
	}
	if smem > 48<<10 {
		return g.errf("shared buffers take %d bytes; static shared memory holds 48 KiB (smaller tiles)", smem)
	}
	// mma accumulators
	var err error
	walkLoops(g.n.Body, nil, func(l *schedule.Loop, _ []*schedule.Loop) {
		if err != nil || l.Kind != schedule.Tensorized {
			return
		}
		roles, e := schedule.TensorRegion(g.n, l, l.Intrin)
		if e != nil {
			err = e
			return
		}
		p := g.priv[roles.C.Buf]
		if p == nil || len(p.ext) != 2 || p.ext[0]%16 != 0 || p.ext[1]%8 != 0 {
			err = g.errf("mma accumulator %s must be a per-thread register tile of whole 16×8 tiles", roles.C.Buf)
			return
		}
		g.frag[roles.C.Buf] = &fragInfo{rows: p.ext[0], cols: p.ext[1]}
	}, nil)
	return err
}

// allocShape is the physical shape as allocated: a shared tile whose rows
// are a multiple of 32 bytes gets 16 bytes of padding per row, so that the
// rows a warp's mma fragment loads touch (g rows × t words) fall in
// distinct banks (without it, rows 0, 2, 4, 6 share banks: 4-way
// conflicts) while 16-byte vector stores stay aligned.
func (g *gen) allocShape(b *schedule.Buffer) []schedule.Expr {
	shape := b.PhysShape()
	if b.Scope != schedule.Shared || len(shape) < 2 {
		return shape
	}
	last, ok := schedule.Simplify(shape[len(shape)-1]).(schedule.Int)
	if !ok || (last.V*b.DType.Size())%32 != 0 {
		return shape
	}
	out := append([]schedule.Expr{}, shape...)
	out[len(out)-1] = schedule.C(last.V + 16/b.DType.Size())
	return out
}

func (g *gen) constSize(b *schedule.Buffer) (int64, error) {
	sz := int64(1)
	for _, e := range g.allocShape(b) {
		v, ok := schedule.Simplify(e).(schedule.Int)
		if !ok {
			return 0, g.errf("buffer %s has shape %s, not constant (compute_at it to a tile)", b.Name, e)
		}
		sz *= v.V
	}
	return sz, nil
}

// preparePrivate splits every index of a register buffer into a thread part
// (the terms in loops bound to threadIdx below its allocation) and a
// per-thread rest: threads own disjoint slices, so each holds only its own
// slice, as registers.
func (g *gen) preparePrivate(b *schedule.Buffer) error {
	if b.Layout != nil {
		return g.errf("register buffer %s has a packed layout", b.Name)
	}
	p := &private{buf: b, thread: make([]string, len(b.Shape)), ext: make([]int64, len(b.Shape))}
	for d := range p.thread {
		p.thread[d] = "?"
	}
	for _, a := range g.accessesOf(b.Name) {
		tv := threadVars(a.anc, b.AllocAt)
		r := ranges(g.n, a.anc)
		zero := map[string]schedule.Expr{}
		ren := map[string]schedule.Expr{}
		for v, axis := range tv {
			zero[v] = schedule.C(0)
			ren[v] = schedule.V(axis)
		}
		for d, e := range a.idx {
			rest := r.Simplify(schedule.Subst(e, zero))
			th := schedule.Simplify(schedule.Subst(schedule.Sub(e, rest), ren)).String()
			if p.thread[d] != "?" && p.thread[d] != th {
				return g.errf("register buffer %s: block %s indexes dimension %d by threads as %s, another access as %s (threads must own the same slices)", b.Name, a.blk.Name, d, th, p.thread[d])
			}
			p.thread[d] = th
			iv, ok := r.Bound(rest)
			if !ok || iv.Lo < 0 {
				return g.errf("register buffer %s: index %s of block %s is not bounded", b.Name, rest, a.blk.Name)
			}
			p.ext[d] = max(p.ext[d], iv.Hi+1)
		}
	}
	g.priv[b.Name] = p
	return nil
}

func (g *gen) line(format string, a ...any) {
	g.b.WriteString(strings.Repeat("  ", g.depth+1))
	fmt.Fprintf(&g.b, format, a...)
	g.b.WriteString("\n")
}

func cType(d schedule.DType) string {
	switch d {
	case schedule.BF16:
		return "__nv_bfloat16"
	case schedule.F16:
		return "__half"
	case schedule.I32:
		return "int32_t"
	case schedule.I8:
		return "int8_t"
	case schedule.U8:
		return "uint8_t"
	}
	return "float"
}

func (g *gen) readOnly(name string) bool {
	ro := true
	walkLoops(g.n.Body, nil, func(*schedule.Loop, []*schedule.Loop) {}, func(b *schedule.Block, _ []*schedule.Loop) {
		ro = ro && b.Buf != name
	})
	return ro
}

func (g *gen) kernelBody() (string, error) {
	g.rg = ranges(g.n, nil)
	if g.mma {
		g.line("const int llmir_g = threadIdx.x >> 2, llmir_t = threadIdx.x & 3; // mma fragment row, column pair")
	}
	for _, b := range g.n.Buffers {
		if b.Param < 0 && b.Scope == schedule.Shared {
			sz, _ := g.constSize(b)
			g.line("__shared__ __align__(16) %s %s[%d];", cType(b.DType), b.Name, sz)
		}
	}
	if err := g.allocs(""); err != nil {
		return "", err
	}
	if _, _, err := g.stmts(g.n.Body); err != nil {
		return "", err
	}
	return g.b.String(), nil
}

// allocs declares the register buffers allocated at loop at.
func (g *gen) allocs(at string) error {
	for _, b := range g.n.Buffers {
		if b.Param >= 0 || b.AllocAt != at || (b.Scope != schedule.Register && b.Scope != schedule.Local) {
			continue
		}
		p := g.priv[b.Name]
		if f := g.frag[b.Name]; f != nil {
			g.line("float %s[%d]; // mma accumulators: %d×%d per warp, 4 per lane and 16×8 tile", b.Name, f.rows*f.cols/32, f.rows, f.cols)
			continue
		}
		sz := int64(1)
		for _, e := range p.ext {
			sz *= e
		}
		g.line("__align__(16) %s %s[%d];", cType(b.DType), b.Name, sz)
	}
	return nil
}

func (g *gen) source(body string) string {
	var s strings.Builder
	s.WriteString(prelude)
	if g.mma {
		s.WriteString(mmaHelpers)
	}
	fmt.Fprintf(&s, "\n// %s\n", strings.ReplaceAll(strings.TrimSpace(g.n.String()), "\n", "\n// "))
	var params []string
	for _, p := range g.n.Params() {
		c := ""
		if g.readOnly(p.Name) {
			c = "const "
		}
		params = append(params, fmt.Sprintf("%s%s *__restrict__ %s", c, cType(p.DType), p.Name))
	}
	for _, d := range g.n.Dims {
		params = append(params, "int d_"+d.Name)
	}
	threads := g.threads[0] * g.threads[1] * g.threads[2]
	fmt.Fprintf(&s, "\n__global__ void __launch_bounds__(%d) %s(%s) {\n", threads, g.opt.Kernel, strings.Join(params, ", "))
	for _, d := range g.redDecl {
		s.WriteString("  " + d + "\n")
	}
	s.WriteString(body)
	s.WriteString("}\n")
	fmt.Fprintf(&s, "\nint %s(void *const *bufs, const int64_t *dims) {\n", g.opt.Entry)
	if len(g.n.Dims) == 0 {
		s.WriteString("  (void)dims;\n")
	}
	for j, d := range g.n.Dims {
		fmt.Fprintf(&s, "  if (dims[%d] < 0 || dims[%d] > %d) return 2; // %s outside its bucket\n", j, j, d.Extent, d.Name)
		fmt.Fprintf(&s, "  const int d_%s = (int)dims[%d];\n", d.Name, j)
	}
	fmt.Fprintf(&s, "  const dim3 grid(%s, %s, %s), block(%d, %d, %d);\n", g.grid[0], g.grid[1], g.grid[2], g.threads[0], g.threads[1], g.threads[2])
	if g.gridExpr != [3]schedule.Expr{} {
		s.WriteString("  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return 0; // nothing to compute\n")
	}
	var args []string
	for i, p := range g.n.Params() {
		c := ""
		if g.readOnly(p.Name) {
			c = "const "
		}
		args = append(args, fmt.Sprintf("(%s%s *)bufs[%d]", c, cType(p.DType), i))
	}
	for _, d := range g.n.Dims {
		args = append(args, "d_"+d.Name)
	}
	fmt.Fprintf(&s, "  %s<<<grid, block>>>(%s);\n", g.opt.Kernel, strings.Join(args, ", "))
	s.WriteString("  return (int)cudaGetLastError();\n}\n")
	return s.String()
}

// stmts prints a statement list. Outside thread-bound loops every thread
// of the block runs the list, so barriers go between a statement that
// writes a shared buffer and a later one that reads it (or writes what an
// earlier one read). It returns the shared buffers read and written since
// the last barrier.
func (g *gen) stmts(ss []schedule.Stmt) (map[string]bool, map[string]bool, error) {
	pr, pw := map[string]bool{}, map[string]bool{}
	uniform := len(g.thr) == 0
	for _, s := range ss {
		r, w := g.sharedAccess(s)
		if uniform && (meets(r, pw) || meets(w, pr) || meets(w, pw)) {
			if g.guards > 0 {
				return nil, nil, g.errf("a barrier is needed under a thread guard (a tail of a thread-bound loop)")
			}
			g.line("__syncthreads();")
			pr, pw = map[string]bool{}, map[string]bool{}
		}
		var err error
		switch s := s.(type) {
		case *schedule.Loop:
			err = g.loop(s)
		case *schedule.Block:
			err = g.blockStmt(s)
		}
		if err != nil {
			return nil, nil, err
		}
		for k := range r {
			pr[k] = true
		}
		for k := range w {
			pw[k] = true
		}
	}
	return pr, pw, nil
}

func meets(a, b map[string]bool) bool {
	for k := range a {
		if b[k] {
			return true
		}
	}
	return false
}

// sharedAccess lists the shared buffers a statement reads and writes.
func (g *gen) sharedAccess(s schedule.Stmt) (map[string]bool, map[string]bool) {
	r, w := map[string]bool{}, map[string]bool{}
	add := func(b *schedule.Block) {
		if buf := g.n.Buffer(b.Buf); buf != nil && buf.Scope == schedule.Shared {
			w[b.Buf] = true
		}
		f := func(x schedule.Expr) {
			if ld, ok := x.(schedule.Load); ok {
				if buf := g.n.Buffer(ld.Buf); buf != nil && buf.Scope == schedule.Shared {
					r[ld.Buf] = true
				}
			}
		}
		schedule.Visit(b.Value, f)
		if b.Init != nil {
			schedule.Visit(b.Init, f)
		}
		if b.Reduce {
			f(schedule.Load{Buf: b.Buf})
		}
	}
	switch s := s.(type) {
	case *schedule.Block:
		add(s)
	case *schedule.Loop:
		walkLoops(s.Body, nil, func(*schedule.Loop, []*schedule.Loop) {}, func(b *schedule.Block, _ []*schedule.Loop) { add(b) })
	}
	return r, w
}

func (g *gen) enter(l *schedule.Loop) schedule.Ranges {
	old := g.rg
	r := schedule.Ranges{Vars: map[string]schedule.Interval{}, Dims: old.Dims}
	for k, v := range old.Vars {
		r.Vars[k] = v
	}
	if iv, ok := old.Bound(l.Extent); ok {
		r.Vars[l.Name] = schedule.Interval{Lo: 0, Hi: max(iv.Hi-1, 0)}
	}
	g.rg = r
	return old
}

func (g *gen) loop(l *schedule.Loop) error {
	ext := g.rg.Simplify(l.Extent)
	iv, ok := g.rg.Bound(ext)
	if !ok {
		return g.errf("loop %s has unbounded extent %s", l.Name, ext)
	}
	old := g.enter(l)
	defer func() { g.rg = old }()
	switch l.Kind {
	case schedule.Bound:
		return g.bound(l, ext, iv.Hi)
	case schedule.Vectorized:
		return g.vector(l, ext, iv.Hi)
	case schedule.Tensorized:
		return g.tensorized(l)
	}
	if rc := g.remapOf(l); rc != nil {
		return g.remapLoop(l, rc)
	}
	if l.Kind == schedule.Unrolled {
		g.line("#pragma unroll")
	}
	g.line("for (int %s = 0; %s < %s; ++%s) {", l.Name, l.Name, g.cInt(ext), l.Name)
	g.depth++
	if err := g.allocs(l.Name); err != nil {
		return err
	}
	pr, pw, err := g.stmts(l.Body)
	if err != nil {
		return err
	}
	// The next iteration's writes must wait for this one's reads.
	if len(g.thr) == 0 && iv.Hi > 1 {
		r, w := g.sharedAccess(l)
		if meets(pr, w) || meets(pw, r) {
			if g.guards > 0 {
				return g.errf("loop %s needs a barrier under a thread guard", l.Name)
			}
			g.line("__syncthreads();")
		}
	}
	g.depth--
	g.line("}")
	return nil
}

func (g *gen) bound(l *schedule.Loop, ext schedule.Expr, hi int64) error {
	isBlock, i := axisIndex(l.Thread)
	g.line("{ // %s: %s", l.Name, l.Thread)
	g.depth++
	g.line("const int %s = %s; (void)%s;", l.Name, l.Thread, l.Name)
	guard := true
	if c, ok := ext.(schedule.Int); ok && ((isBlock && c.V == g.gridMax[i] && g.gridExpr[i] == nil) || (!isBlock && c.V == g.threads[i])) {
		guard = false
	}
	if isBlock && g.gridExpr[i] != nil && ext.String() == g.gridExpr[i].String() {
		guard = false
	}
	if !isBlock {
		g.thr = append(g.thr, l)
		defer func() { g.thr = g.thr[:len(g.thr)-1] }()
	}
	if red := schedule.CrossThreadReduction(l); red != nil {
		err := g.crossThread(l, red, ext, hi)
		g.depth--
		g.line("}")
		return err
	}
	if guard {
		g.line("if (%s < %s) {", l.Name, g.cInt(ext))
		g.depth++
		if !isBlock {
			g.guards++
			defer func() { g.guards-- }()
		}
	}
	if err := g.allocs(l.Name); err != nil {
		return err
	}
	if _, _, err := g.stmts(l.Body); err != nil {
		return err
	}
	if guard {
		g.depth--
		g.line("}")
	}
	g.depth--
	g.line("}")
	return nil
}

// crossThread prints a reduction whose loop is bound to threadIdx.x: each
// thread computes its term, a shuffle tree sums a warp's terms, shared
// memory sums the warps' when the extent exceeds 32, and thread 0 stores.
func (g *gen) crossThread(l *schedule.Loop, b *schedule.Block, ext schedule.Expr, hi int64) error {
	_, i := axisIndex(l.Thread)
	if i != 0 {
		return g.errf("cross-thread reduction loop %s is bound to %s; bind it to threadIdx.x (the lanes of a warp)", l.Name, l.Thread)
	}
	if hi != g.threads[0] {
		return g.errf("cross-thread reduction loop %s has %d threads, the block has %d along x", l.Name, hi, g.threads[0])
	}
	if rv := schedule.ReductionOnlyVars(b); len(rv) != 1 || rv[0] != l.Name {
		return g.errf("cross-thread reduction block %s also reduces over loops %v", b.Name, rv)
	}
	if hi > 32 && g.guards > 0 {
		return g.errf("cross-thread reduction loop %s (%d threads, through shared memory) under a thread guard", l.Name, hi)
	}
	in := g.instantiate(b)
	val, err := g.cFloat(in.Value)
	if err != nil {
		return err
	}
	g.line("float llmir_r = %s < %s ? %s : 0.0f;", l.Name, g.cInt(ext), val)
	w := min(hi, 32)
	g.line("#pragma unroll")
	g.line("for (int o = %d; o > 0; o >>= 1) llmir_r += __shfl_xor_sync(0xffffffffu, llmir_r, o);", w/2)
	if hi > 32 {
		id := g.reds
		g.reds++
		rows := g.threads[1] * g.threads[2]
		g.redDecl = append(g.redDecl, fmt.Sprintf("__shared__ float llmir_red%d[%d][%d];", id, rows, hi/32))
		g.line("if ((threadIdx.x & 31) == 0) llmir_red%d[threadIdx.z * %d + threadIdx.y][threadIdx.x >> 5] = llmir_r;", id, g.threads[1])
		g.line("__syncthreads();")
		g.line("llmir_r = threadIdx.x < %d ? llmir_red%d[threadIdx.z * %d + threadIdx.y][threadIdx.x] : 0.0f;", hi/32, id, g.threads[1])
		g.line("#pragma unroll")
		g.line("for (int o = 16; o > 0; o >>= 1) llmir_r += __shfl_xor_sync(0xffffffffu, llmir_r, o);")
		g.line("__syncthreads();")
	}
	dst, err := g.ref(b.Buf, in.Index)
	if err != nil {
		return err
	}
	prev := dst
	if b.Init != nil {
		if prev, err = g.cFloat(in.Init); err != nil {
			return err
		}
	} else {
		prev = g.load(b.Buf, dst)
	}
	g.line("if (threadIdx.x == 0) %s = %s;", dst, g.store(b.Buf, fmt.Sprintf("%s + llmir_r", prev)))
	return nil
}

// inst is a block with its axes substituted by their bindings.
type inst struct {
	Index       []schedule.Expr
	Value, Init schedule.Expr
}

func (g *gen) instantiate(b *schedule.Block) inst {
	m := map[string]schedule.Expr{}
	for i, a := range b.Axes {
		m[a.Name] = b.Binds[i]
	}
	for k, v := range g.env {
		m[k] = v
	}
	sub := func(e schedule.Expr) schedule.Expr {
		e = schedule.Subst(e, m)
		if len(g.env) > 0 {
			e = schedule.Subst(e, g.env)
		}
		return g.rg.Simplify(e)
	}
	in := inst{Value: sub(b.Value)}
	for _, e := range b.Index {
		in.Index = append(in.Index, sub(e))
	}
	if b.Init != nil {
		in.Init = sub(b.Init)
	}
	return in
}

// block prints one store, guarding it when not every thread may run it.
func (g *gen) blockStmt(b *schedule.Block) error {
	buf := g.n.Buffer(b.Buf)
	if buf.Scope == schedule.Global || buf.Scope == schedule.Shared {
		bound := map[int]bool{}
		for _, t := range g.thr {
			_, i := axisIndex(t.Thread)
			bound[i] = true
		}
		for i := range 3 {
			if g.threads[i] > 1 && !bound[i] && !(i == 0 && (g.remap != nil || g.inMMA)) {
				return g.errf("block %s stores to %s %s on every thread along threadIdx.%s (bind one of its loops to it)", b.Name, buf.Scope, b.Buf, axes[i])
			}
		}
	}
	in := g.instantiate(b)
	dst, err := g.ref(b.Buf, in.Index)
	if err != nil {
		return err
	}
	val, err := g.cFloat(in.Value)
	if err != nil {
		return err
	}
	if !b.Reduce {
		g.line("%s = %s;", dst, g.store(b.Buf, val))
		return nil
	}
	prev := g.load(b.Buf, dst)
	if b.Init != nil {
		iv, err := g.cFloat(in.Init)
		if err != nil {
			return err
		}
		var first []string
		for _, v := range schedule.ReductionOnlyVars(b) {
			first = append(first, fmt.Sprintf("%s == 0", g.cInt(g.rg.Simplify(schedule.Subst(schedule.V(v), g.env)))))
		}
		if len(first) > 0 {
			prev = fmt.Sprintf("(%s ? %s : %s)", strings.Join(first, " && "), iv, prev)
		} else {
			prev = iv
		}
	}
	g.line("%s = %s;", dst, g.store(b.Buf, fmt.Sprintf("%s + %s", prev, val)))
	return nil
}

// load converts an element reference to float.
func (g *gen) load(buf, ref string) string {
	switch g.n.Buffer(buf).DType {
	case schedule.BF16:
		return "__bfloat162float(" + ref + ")"
	case schedule.F16:
		return "__half2float(" + ref + ")"
	case schedule.F32:
		return ref
	}
	return "(float)" + ref
}

// store converts a float to the buffer's storage type.
func (g *gen) store(buf, v string) string {
	switch g.n.Buffer(buf).DType {
	case schedule.BF16:
		return "__float2bfloat16_rn(" + v + ")"
	case schedule.F16:
		return "__float2half_rn(" + v + ")"
	case schedule.F32:
		return v
	}
	return "(" + cType(g.n.Buffer(buf).DType) + ")(" + v + ")"
}

// offset is the flat element offset of buf[idx] (before private
// reduction), or the per-thread offset for register buffers.
func (g *gen) offset(name string, idx []schedule.Expr) (schedule.Expr, error) {
	b := g.n.Buffer(name)
	if b == nil {
		return nil, g.errf("unknown buffer %s", name)
	}
	if p := g.priv[name]; p != nil {
		if g.frag[name] != nil {
			return nil, g.errf("mma accumulator %s is read or written outside a tensorized region or a 16×8 loop pair over its tiles", name)
		}
		zero := g.threadZero(p.buf.AllocAt)
		var off schedule.Expr = schedule.C(0)
		for d, e := range idx {
			rest := schedule.Subst(e, zero)
			off = schedule.Add(schedule.Mul(off, schedule.C(p.ext[d])), rest)
		}
		return g.rg.Simplify(off), nil
	}
	phys := b.PhysIndex(idx)
	shape := g.allocShape(b)
	var off schedule.Expr = schedule.C(0)
	for d, e := range phys {
		off = schedule.Add(schedule.Mul(off, shape[d]), e)
	}
	return g.rg.Simplify(off), nil
}

// threadZero maps the enclosing threadIdx-bound loop variables below the
// allocation at to 0 (the per-thread rest of a private index).
func (g *gen) threadZero(at string) map[string]schedule.Expr {
	outer := map[string]bool{at: true}
	for _, a := range g.anc[at] {
		outer[a.Name] = true
	}
	m := map[string]schedule.Expr{}
	for _, t := range g.thr {
		if !outer[t.Name] {
			m[t.Name] = schedule.C(0)
		}
	}
	return m
}

func (g *gen) ref(name string, idx []schedule.Expr) (string, error) {
	if g.frag[name] != nil && g.remap != nil && g.remap.buf == name {
		return g.fragRef(name, idx, g.remap.mv, g.remap.nv, "llmir_e")
	}
	off, err := g.offset(name, idx)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s[%s]", name, g.cInt(off)), nil
}

// fragRef is the register of accumulator element idx where loops mv and nv
// walk a 16×8 tile's rows and columns as the lane's element e.
func (g *gen) fragRef(name string, idx []schedule.Expr, mv, nv, e string) (string, error) {
	f := g.frag[name]
	zero := g.threadZero(g.priv[name].buf.AllocAt)
	if mv != "" {
		zero[mv] = schedule.C(0)
		zero[nv] = schedule.C(0)
	}
	if len(idx) != 2 {
		return "", g.errf("accumulator %s has rank %d", name, len(idx))
	}
	r0 := g.rg.Simplify(schedule.Subst(idx[0], zero))
	c0 := g.rg.Simplify(schedule.Subst(idx[1], zero))
	fi := g.rg.Simplify(schedule.Add(schedule.Mul(schedule.FloorDiv(r0, schedule.C(16)), schedule.C(f.cols/8*4)), schedule.Mul(schedule.FloorDiv(c0, schedule.C(8)), schedule.C(4))))
	return fmt.Sprintf("%s[%s + %s]", name, g.cInt(fi), e), nil
}

var cOps = map[schedule.Op]string{schedule.OpAdd: "+", schedule.OpSub: "-", schedule.OpMul: "*", schedule.OpDiv: "/", schedule.OpFloorDiv: "/", schedule.OpMod: "%"}

func (g *gen) cInt(e schedule.Expr) string {
	switch x := e.(type) {
	case schedule.Int:
		return fmt.Sprint(x.V)
	case schedule.Var:
		return x.Name
	case schedule.Dyn:
		return "d_" + x.Name
	case schedule.Bin:
		switch x.Op {
		case schedule.OpMin:
			return fmt.Sprintf("min(%s, %s)", g.cInt(x.A), g.cInt(x.B))
		case schedule.OpMax:
			return fmt.Sprintf("max(%s, %s)", g.cInt(x.A), g.cInt(x.B))
		}
		return fmt.Sprintf("(%s %s %s)", g.cInt(x.A), cOps[x.Op], g.cInt(x.B))
	}
	return "/*?*/0"
}

// hostInt prints a dims-only expression for the host (d_ locals there).
func (g *gen) hostInt(e schedule.Expr) string { return g.cInt(e) }

func cFloatLit(v float64) string {
	s := fmt.Sprintf("%g", v)
	if !strings.ContainsAny(s, ".eEn") {
		s += ".0"
	}
	return s + "f"
}

func (g *gen) cFloat(e schedule.Expr) (string, error) {
	return g.cFloatWith(e, nil)
}

// cFloatWith prints a value; loads found in sub are printed as given
// (vector lanes).
func (g *gen) cFloatWith(e schedule.Expr, sub map[string]string) (string, error) {
	switch x := e.(type) {
	case schedule.Float:
		return cFloatLit(x.V), nil
	case schedule.Int, schedule.Var, schedule.Dyn:
		return "(float)" + g.cInt(x), nil
	case schedule.Load:
		if s, ok := sub[x.String()]; ok {
			return s, nil
		}
		r, err := g.ref(x.Buf, x.Index)
		if err != nil {
			return "", err
		}
		return g.load(x.Buf, r), nil
	case schedule.Call:
		f, ok := schedule.Funcs[x.Fn]
		if !ok {
			return "", g.errf("unknown function %s", x.Fn)
		}
		args := make([]any, len(x.Args))
		for i, a := range x.Args {
			s, err := g.cFloatWith(a, sub)
			if err != nil {
				return "", err
			}
			args[i] = s
		}
		return fmt.Sprintf(f.C, args...), nil
	case schedule.Bin:
		if !isFloat(x) {
			return "(float)" + g.cInt(x), nil
		}
		a, err := g.cFloatWith(x.A, sub)
		if err != nil {
			return "", err
		}
		b, err := g.cFloatWith(x.B, sub)
		if err != nil {
			return "", err
		}
		switch x.Op {
		case schedule.OpMin:
			return fmt.Sprintf("fminf(%s, %s)", a, b), nil
		case schedule.OpMax:
			return fmt.Sprintf("fmaxf(%s, %s)", a, b), nil
		}
		return fmt.Sprintf("(%s %s %s)", a, cOps[x.Op], b), nil
	}
	return "", g.errf("cannot print %s", e)
}

func isFloat(e schedule.Expr) bool {
	switch x := e.(type) {
	case schedule.Float, schedule.Load, schedule.Call:
		return true
	case schedule.Bin:
		return x.Op == schedule.OpDiv || isFloat(x.A) || isFloat(x.B)
	}
	return false
}

const prelude = `#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <math.h>

__device__ __forceinline__ float llmir_silu(float x) { return x / (1.0f + expf(-x)); }
`

const mmaHelpers = `
// Two bf16 in one 32-bit register, the first in the low half (mma operand order).
__device__ __forceinline__ uint32_t llmir_pack(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}
__device__ __forceinline__ void llmir_mma(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// Fragments straight from shared memory: each lane passes one row address.
__device__ __forceinline__ void llmir_ldmatrix_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"((uint32_t)__cvta_generic_to_shared(p)) : "memory");
}
__device__ __forceinline__ void llmir_ldmatrix_x2(uint32_t &r0, uint32_t &r1, const void *p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1) : "r"((uint32_t)__cvta_generic_to_shared(p)) : "memory");
}
`
