package cgen

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"llmir/schedule"
)

// ErrUnsupported is returned for nests this backend cannot print (GPU-bound
// loops, names that are not C identifiers).
var ErrUnsupported = errors.New("cgen: unsupported")

// Options controls code generation.
type Options struct {
	Entry      string // name of the exported function
	VectorBits int    // SIMD width from the device fingerprint: 512, 256, 128, or 0 for scalar code
	StackLimit int64  // largest buffer (bytes) put on the stack; larger ones use aligned_alloc. Default 32 KiB.
	MaxUnroll  int64  // largest constant extent an unrolled loop is expanded in full. Default 64.
	// NoVersioning prints register tiles with tails as one generic body
	// (the array fallback for every tile) instead of a full-tile and an
	// edge-tile copy: smaller code, and the baseline for measuring what
	// versioning buys.
	NoVersioning bool
}

// Emit prints the nest as one C translation unit following the CPU kernel
// ABI: int Entry(void *const *bufs, const int64_t *dims).
func Emit(n *schedule.Nest, opt Options) (string, error) {
	if opt.StackLimit == 0 {
		opt.StackLimit = 32 << 10
	}
	if opt.MaxUnroll == 0 {
		opt.MaxUnroll = 64
	}
	switch opt.VectorBits {
	case 0, 128, 256, 512:
	default:
		return "", fmt.Errorf("%w: vector width %d bits (want 0, 128, 256 or 512)", ErrUnsupported, opt.VectorBits)
	}
	if !ident.MatchString(opt.Entry) {
		return "", fmt.Errorf("%w: entry name %q is not a C identifier", ErrUnsupported, opt.Entry)
	}
	n = f32Locals(n)
	g := &gen{n: n, opt: opt, lanes: int64(opt.VectorBits / 32), reg: map[string]*regInfo{}, pin: map[string]int64{}, noVersion: map[string]bool{}, guarded: map[string]bool{}, bcast: map[int64]bool{}, half: map[schedule.DType]bool{}}
	if err := g.checkNames(); err != nil {
		return "", err
	}
	g.planHeap()
	for _, b := range n.Buffers {
		if b.Param < 0 && b.Scope == schedule.Register {
			_, heap := g.heapAt[b.Name]
			g.reg[b.Name] = &regInfo{names: map[string]bool{}, array: heap}
		}
	}
	// Register buffers become locals only if every access has constant
	// indices after unrolling; that is only known after printing, so print
	// until the decisions and the set of locals stop changing.
	var body string
	for pass := 0; pass < 8; pass++ {
		for _, r := range g.reg {
			r.fail, r.vecSeen, r.misaligned = false, false, false
			r.prev, r.names = r.names, map[string]bool{}
		}
		var err error
		body, err = g.function()
		if err != nil {
			return "", err
		}
		stable := true
		for _, r := range g.reg {
			if r.fail && !r.array {
				r.array, stable = true, false
			}
			if r.vecSeen && !r.vector && !r.array {
				r.vector, stable = true, false
			}
			if r.misaligned && !r.array {
				r.array, stable = true, false
			}
			if !maps(r.prev, r.names) {
				stable = false
			}
		}
		if g.versionGain() {
			stable = false
		}
		if stable && pass > 0 {
			break
		}
	}
	return g.header() + body, nil
}

// f32Locals returns n, or a copy of it whose local and register float
// buffers hold f32 where the schedule gave them a 16-bit type (a cache_read
// of a bf16 weight): a copy of a bf16 or f16 value into f32 is exact, the
// kernel's arithmetic is f32 anyway, and a packed panel or register tile
// read many times is then converted once, where it is copied in.
func f32Locals(n *schedule.Nest) *schedule.Nest {
	narrow := func(b *schedule.Buffer) bool {
		return b.Param < 0 && b.Scope != schedule.Global && b.DType.Float() && b.DType != schedule.F32
	}
	if !slices.ContainsFunc(n.Buffers, narrow) {
		return n
	}
	n = n.Clone()
	for i, b := range n.Buffers {
		if narrow(b) {
			c := *b
			c.DType = schedule.F32
			n.Buffers[i] = &c
		}
	}
	return n
}

// vecType reports whether vectors of dt are printed: f32 directly, bf16
// and f16 converted to and from f32 vectors as they are loaded and stored.
func vecType(dt schedule.DType) bool {
	return dt == schedule.F32 || dt == schedule.BF16 || dt == schedule.F16
}

func maps(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

var cKeywords = map[string]bool{"auto": true, "break": true, "case": true, "char": true, "const": true, "continue": true,
	"default": true, "do": true, "double": true, "else": true, "enum": true, "extern": true, "float": true, "for": true,
	"goto": true, "if": true, "inline": true, "int": true, "long": true, "register": true, "restrict": true, "return": true,
	"short": true, "signed": true, "sizeof": true, "static": true, "struct": true, "switch": true, "typedef": true,
	"union": true, "unsigned": true, "void": true, "volatile": true, "while": true, "bufs": true, "dims": true, "rc": true}

func (g *gen) checkNames() error {
	check := func(kind, s string) error {
		if !ident.MatchString(s) || cKeywords[s] || strings.HasPrefix(s, "llmir_") || strings.HasPrefix(s, "d_") {
			return fmt.Errorf("%w: %s name %q cannot be a C identifier", ErrUnsupported, kind, s)
		}
		return nil
	}
	for _, b := range g.n.Buffers {
		if err := check("buffer", b.Name); err != nil {
			return err
		}
	}
	for _, d := range g.n.Dims {
		if !ident.MatchString(d.Name) {
			return fmt.Errorf("%w: dim name %q cannot be a C identifier", ErrUnsupported, d.Name)
		}
	}
	var err error
	g.walkLoops(g.n.Body, nil, func(l *schedule.Loop, _ []*schedule.Loop) {
		if err == nil {
			err = check("loop", l.Name)
		}
		if err == nil && l.Kind == schedule.Bound {
			err = fmt.Errorf("%w: loop %s is bound to GPU axis %s", ErrUnsupported, l.Name, l.Thread)
		}
		if err == nil && l.Kind == schedule.Tensorized {
			err = fmt.Errorf("%w: loop %s is tensorized to %s, a GPU tensor-core instruction (print it with target/cuda/cgen)", ErrUnsupported, l.Name, l.Intrin)
		}
	})
	return err
}

type regInfo struct {
	array      bool // fall back to a stack array
	vector     bool // some access is a vector: locals are one vector per chunk
	names      map[string]bool
	prev       map[string]bool
	fail       bool
	vecSeen    bool
	misaligned bool
}

type gen struct {
	n     *schedule.Nest
	opt   Options
	lanes int64
	reg   map[string]*regInfo
	// heapAt maps a heap buffer to the parallel loop whose region allocates
	// it per thread, or "" for the function entry.
	heapAt map[string]string
	w      strings.Builder
	ind    int
	env    map[string]schedule.Expr
	rg     schedule.Ranges
	// ver names the loop version being printed ("" outside any versioned
	// loop body): each version keeps its own register-promotion decision,
	// so the tail copy falling back to an array leaves the fast copy's
	// locals alone.
	ver string
	// pin maps the printed form of a tail min(C, e) to C inside the full
	// copy of a versioned loop body, where e >= C was tested; every loop
	// extent there is rewritten with it.
	pin map[string]int64
	// dry is set while an owner loop's body is printed only to find its
	// tails; noVersion lists owner loops whose full copy did not keep its
	// register tile out of memory anyway, so versioning them is pure growth.
	dry       *dryRun
	noVersion map[string]bool
	// guarded lists owner loops whose full copy drops the guards of
	// unrolled tails (min(MR, M - i*MR)): worth a version even when both
	// copies keep the tile in registers.
	guarded map[string]bool
	// pf holds the prefetch annotations of the loops whose body is being
	// printed, innermost last.
	pf []*prefetchAt
	// bcast lists the group widths of llmir_bcast<G> helpers the body
	// uses; the header prints only those, so kernels without group
	// broadcasts print as before.
	bcast map[int64]bool
	// half: the 16-bit types loaded or stored as vectors (their
	// conversions are printed in the header).
	half map[schedule.DType]bool
	// transpose says the body uses llmir_transpose (transposeCopy).
	transpose bool
}

func (g *gen) walkLoops(ss []schedule.Stmt, anc []*schedule.Loop, f func(*schedule.Loop, []*schedule.Loop)) {
	for _, s := range ss {
		if l, ok := s.(*schedule.Loop); ok {
			f(l, anc)
			g.walkLoops(l.Body, append(append([]*schedule.Loop{}, anc...), l), f)
		}
	}
}

func cType(d schedule.DType) string {
	switch d {
	case schedule.F32:
		return "float"
	case schedule.I32:
		return "int32_t"
	case schedule.I8:
		return "int8_t"
	case schedule.U8:
		return "uint8_t"
	}
	return "uint16_t"
}

// bytes returns the allocation size of a non-parameter buffer when it is a
// constant.
func (g *gen) bytes(b *schedule.Buffer) (int64, bool) {
	s := b.DType.Size()
	for _, e := range b.PhysShape() {
		c, ok := schedule.Simplify(e).(schedule.Int)
		if !ok {
			return 0, false
		}
		s *= c.V
	}
	return s, true
}

func (g *gen) planHeap() {
	g.heapAt = map[string]string{}
	anc := map[string][]*schedule.Loop{}
	g.walkLoops(g.n.Body, nil, func(l *schedule.Loop, a []*schedule.Loop) {
		anc[l.Name] = append(append([]*schedule.Loop{}, a...), l)
	})
	for _, b := range g.n.Buffers {
		if b.Param >= 0 {
			continue
		}
		sz, ok := g.bytes(b)
		if ok && sz <= g.opt.StackLimit {
			continue
		}
		at := ""
		for _, l := range anc[b.AllocAt] {
			if l.Kind == schedule.Parallel {
				at = l.Name
				break
			}
		}
		g.heapAt[b.Name] = at
	}
}

func (g *gen) line(format string, a ...any) {
	g.w.WriteString(strings.Repeat("  ", g.ind))
	fmt.Fprintf(&g.w, format, a...)
	g.w.WriteByte('\n')
}

func (g *gen) header() string {
	var b strings.Builder
	b.WriteString("// Generated by llmir target/cpu/cgen. Do not edit.\n")
	b.WriteString("#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n#include <math.h>\n\n")
	if g.lanes > 0 {
		fmt.Fprintf(&b, "typedef float llmir_vf __attribute__((vector_size(%d)));\n", g.opt.VectorBits/8)
		b.WriteString("static inline llmir_vf llmir_vload(const float *p) { llmir_vf v; __builtin_memcpy(&v, p, sizeof v); return v; }\n")
		b.WriteString("static inline void llmir_vstore(float *p, llmir_vf v) { __builtin_memcpy(p, &v, sizeof v); }\n")
		// An explicit initializer, not {0} + x: gcc may not fold 0.0f + x
		// (it differs for x = -0.0), which costs an add per broadcast.
		xs := strings.TrimSuffix(strings.Repeat("x, ", int(g.lanes)), ", ")
		fmt.Fprintf(&b, "static inline llmir_vf llmir_splat(float x) { return (llmir_vf){%s}; }\n", xs)
		b.WriteString(hsumC(g.lanes))
		b.WriteString(g.bcastC())
		b.WriteString(g.halfC())
		if g.transpose {
			b.WriteString(transposeC(g.lanes))
		}
	}
	b.WriteString("static inline int64_t llmir_min(int64_t a, int64_t b) { return a < b ? a : b; }\n")
	b.WriteString("static inline int64_t llmir_max(int64_t a, int64_t b) { return a > b ? a : b; }\n")
	b.WriteString("static inline float llmir_silu(float x) { return x / (1.0f + expf(-x)); }\n")
	b.WriteString("static inline float llmir_bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }\n")
	b.WriteString("static inline uint16_t llmir_f32_to_bf16(float f) { uint32_t u; memcpy(&u, &f, 4); if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); u += 0x7fffu + ((u >> 16) & 1u); return (uint16_t)(u >> 16); }\n")
	b.WriteString("static inline float llmir_f16_to_f32(uint16_t h) { _Float16 x; memcpy(&x, &h, 2); return (float)x; }\n")
	b.WriteString("static inline uint16_t llmir_f32_to_f16(float f) { _Float16 h = (_Float16)f; uint16_t u; memcpy(&u, &h, 2); return u; }\n\n")
	return b.String()
}

// hsumC is llmir_hsum for vectors of the given lanes: add the upper half
// to the lower until four lanes are left (one vector add per halving, which
// gcc prints as an extract and an add), then a pairwise sum of the four.
// The halves are vector constructors of lane reads, not memcpy from the
// argument's address: an address-taken vector would keep every
// accumulator that reaches llmir_hsum in memory inside the k loop.
func hsumC(lanes int64) string {
	var b strings.Builder
	for n := lanes / 2; n >= 4; n /= 2 {
		fmt.Fprintf(&b, "typedef float llmir_vf%d __attribute__((vector_size(%d)));\n", n, n*4)
	}
	b.WriteString("static inline float llmir_hsum(llmir_vf v) {")
	half := func(x string, from, n int64) string {
		var el []string
		for i := from; i < from+n; i++ {
			el = append(el, fmt.Sprintf("%s[%d]", x, i))
		}
		return fmt.Sprintf("(llmir_vf%d){%s}", n, strings.Join(el, ", "))
	}
	cur, n := "v", lanes
	for ; n > 4; n /= 2 {
		h := n / 2
		fmt.Fprintf(&b, " llmir_vf%d s%d = %s + %s;", h, h, half(cur, 0, h), half(cur, h, h))
		cur = fmt.Sprintf("s%d", h)
	}
	if n == 4 {
		fmt.Fprintf(&b, " return (%s[0] + %s[2]) + (%s[1] + %s[3]); }\n", cur, cur, cur, cur)
	} else {
		fmt.Fprintf(&b, " return %s[0] + %s[1]; }\n", cur, cur)
	}
	return b.String()
}

// bcastC prints llmir_bcast<G>(p) for each group width G the body uses:
// the G floats at p repeated across the vector. With AVX-512 or AVX it is
// the one-instruction broadcast of a 128- or 256-bit group from memory
// (vbroadcastf32x4, vbroadcastf32x8, vbroadcastf128; 2 floats as one
// double with vbroadcastsd); gcc 12 turns the portable forms (a vector
// initializer or __builtin_shufflevector of a narrower vector) into
// stores to the stack and a reload, so the intrinsic is used where the
// ISA has one and the initializer only as the fallback.
func (g *gen) bcastC() string {
	var gs []int64
	for G := range g.bcast {
		gs = append(gs, G)
	}
	if len(gs) == 0 {
		return ""
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i] < gs[j] })
	var b strings.Builder
	b.WriteString("#include <immintrin.h>\n")
	bits := g.opt.VectorBits
	for _, G := range gs {
		el := make([]string, g.lanes)
		for i := range el {
			el[i] = fmt.Sprintf("p[%d]", int64(i)%G)
		}
		fallback := fmt.Sprintf("return (llmir_vf){%s};", strings.Join(el, ", "))
		var fast, cond string
		switch {
		case bits == 512 && G == 4:
			cond, fast = "__AVX512F__", "return (llmir_vf)_mm512_broadcast_f32x4(_mm_loadu_ps(p));"
		case bits == 512 && G == 8:
			cond, fast = "__AVX512DQ__", "return (llmir_vf)_mm512_broadcast_f32x8(_mm256_loadu_ps(p));"
		case bits == 512 && G == 2:
			cond, fast = "__AVX512F__", "double d; __builtin_memcpy(&d, p, 8); return (llmir_vf)_mm512_set1_pd(d);"
		case bits == 256 && G == 4:
			cond, fast = "__AVX__", "return (llmir_vf)_mm256_broadcast_ps((const __m128 *)p);"
		case bits == 256 && G == 2:
			cond, fast = "__AVX__", "double d; __builtin_memcpy(&d, p, 8); return (llmir_vf)_mm256_set1_pd(d);"
		}
		fmt.Fprintf(&b, "static inline llmir_vf llmir_bcast%d(const float *p) {", G)
		if fast != "" {
			fmt.Fprintf(&b, "\n#if defined(%s)\n  %s\n#else\n  %s\n#endif\n}\n", cond, fast, fallback)
		} else {
			fmt.Fprintf(&b, " %s }\n", fallback)
		}
	}
	return b.String()
}

func (g *gen) function() (string, error) {
	g.w.Reset()
	g.ind = 0
	g.env = map[string]schedule.Expr{}
	g.rg = schedule.Ranges{Vars: map[string]schedule.Interval{}, Dims: map[int]int64{}}
	for j, d := range g.n.Dims {
		g.rg.Dims[j] = d.Extent
	}
	g.line("int %s(void *const *bufs, const int64_t *dims) {", g.opt.Entry)
	g.ind++
	g.line("(void)dims;")
	g.line("int rc = 0;")
	for j, d := range g.n.Dims {
		g.line("const int64_t d_%s = dims[%d];", d.Name, j)
		g.line("if (d_%s < 0 || d_%s > %d) return 2;", d.Name, d.Name, d.Extent)
	}
	for _, p := range g.n.Params() {
		qual := ""
		if g.readOnly(p.Name) {
			qual = "const "
		}
		g.line("%s%s *restrict %s = (%s%s *)__builtin_assume_aligned(bufs[%d], 64);", qual, cType(p.DType), p.Name, qual, cType(p.DType), p.Param)
	}
	var entryHeap []string
	for _, b := range g.n.Buffers {
		if at, ok := g.heapAt[b.Name]; ok && at == "" {
			entryHeap = append(entryHeap, b.Name)
		}
	}
	for _, name := range entryHeap {
		g.heapDecl(name)
	}
	for _, name := range entryHeap {
		g.line("if (!%s) { rc = 1; goto llmir_out; }", name)
	}
	if err := g.allocs(""); err != nil {
		return "", err
	}
	if err := g.stmts(g.n.Body); err != nil {
		return "", err
	}
	if len(entryHeap) > 0 || strings.Contains(g.w.String(), "goto llmir_out") {
		g.line("goto llmir_out;")
		g.ind--
		g.line("llmir_out:")
		g.ind++
	}
	for _, name := range entryHeap {
		g.line("free(%s);", name)
	}
	g.line("return rc;")
	g.ind--
	g.line("}")
	return g.w.String(), nil
}

func (g *gen) readOnly(name string) bool {
	ro := true
	var visit func(ss []schedule.Stmt)
	visit = func(ss []schedule.Stmt) {
		for _, s := range ss {
			switch s := s.(type) {
			case *schedule.Loop:
				visit(s.Body)
			case *schedule.Block:
				if s.Buf == name {
					ro = false
				}
			}
		}
	}
	visit(g.n.Body)
	return ro
}

func (g *gen) heapDecl(name string) {
	b := g.n.Buffer(name)
	size := schedule.Expr(schedule.C(b.DType.Size()))
	for _, e := range b.PhysShape() {
		size = schedule.Mul(size, e)
	}
	sz := g.cInt(g.rg.Simplify(size))
	g.line("%s *restrict %s = (%s *)aligned_alloc(64, ((size_t)(%s) + 63) / 64 * 64 + 64);", cType(b.DType), name, cType(b.DType), sz)
}

// allocs declares the stack buffers and register locals allocated at loop
// at ("" = entry).
func (g *gen) allocs(at string) error {
	for _, b := range g.n.Buffers {
		if b.Param >= 0 || b.AllocAt != at {
			continue
		}
		if _, heap := g.heapAt[b.Name]; heap {
			continue
		}
		if r := g.regOf(b.Name); r != nil && !r.array {
			var names []string
			for nm := range r.prev {
				names = append(names, nm)
			}
			sort.Strings(names)
			typ := "float"
			if r.vector {
				typ = "llmir_vf"
			}
			for i := 0; i < len(names); i += 8 {
				g.line("%s %s;", typ, strings.Join(names[i:min(i+8, len(names))], ", "))
			}
			continue
		}
		sz, _ := g.bytes(b)
		g.line("%s %s[%d] __attribute__((aligned(64)));", cType(b.DType), b.Name, sz/b.DType.Size())
	}
	return nil
}

func (g *gen) stmts(ss []schedule.Stmt) error {
	for _, s := range ss {
		var err error
		switch s := s.(type) {
		case *schedule.Loop:
			err = g.loop(s)
		case *schedule.Block:
			err = g.scalarBlock(s)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (g *gen) simplify(e schedule.Expr) schedule.Expr {
	return g.rg.Simplify(schedule.Subst(e, g.env))
}

func (g *gen) enterVar(name string, ext schedule.Expr) {
	if iv, ok := g.rg.Bound(ext); ok {
		g.rg.Vars[name] = schedule.Interval{Lo: 0, Hi: max(iv.Hi-1, 0)}
	}
}

func (g *gen) loop(l *schedule.Loop) error {
	ext := g.simplify(l.Extent)
	if len(g.pin) > 0 {
		ext = g.rg.Simplify(g.pinned(ext))
	}
	defer delete(g.rg.Vars, l.Name)
	c, isConst := ext.(schedule.Int)
	if l.Kind == schedule.Unrolled && isConst && c.V == g.lanes && g.lanes > 1 && g.hsumLoop(l) {
		return nil
	}
	switch {
	case isConst && c.V <= 0:
		return nil
	case (l.Kind == schedule.Unrolled && isConst && c.V <= g.opt.MaxUnroll) || (isConst && c.V == 1 && l.Kind != schedule.Parallel):
		// A one-iteration loop is always expanded: its variable becomes the
		// constant 0, which keeps register tiles addressable as locals.
		for v := int64(0); v < c.V; v++ {
			g.env[l.Name] = schedule.C(v)
			if err := g.bodyIn(l, "{ // %s = %d", l.Name, v); err != nil {
				return err
			}
		}
		delete(g.env, l.Name)
		return nil
	case l.Kind == schedule.Unrolled && !isConst:
		// A tail-bounded extent such as min(6, M - i0*6): unroll to the
		// constant bound and guard each copy, so register tiles keep
		// constant indices (and stay in registers) on the tail too.
		iv, ok := g.rg.Bound(ext)
		if !ok || iv.Hi > g.opt.MaxUnroll {
			break
		}
		if g.dry != nil {
			g.noteGuard(ext, iv.Hi)
		}
		g.line("{")
		g.ind++
		g.line("const int64_t %s_n = %s;", l.Name, g.cInt(ext))
		for v := int64(0); v < iv.Hi; v++ {
			g.env[l.Name] = schedule.C(v)
			if err := g.bodyIn(l, "if (%d < %s_n) { // %s = %d", v, l.Name, l.Name, v); err != nil {
				return err
			}
		}
		delete(g.env, l.Name)
		g.ind--
		g.line("}")
		return nil
	case l.Kind == schedule.Vectorized:
		if g.dry != nil {
			g.noteVector(ext)
		}
		return g.vectorLoop(l, ext)
	case l.Kind == schedule.Parallel:
		return g.parallelLoop(l, ext)
	}
	if l.Kind == schedule.Unrolled {
		g.line("#pragma GCC unroll 8")
	}
	if l.Kind == schedule.Serial {
		if g.transposeCopy(l, ext) {
			return nil
		}
	}
	g.enterVar(l.Name, ext)
	if err := g.bodyIn(l, "for (int64_t %s = 0; %s < %s; %s++) {", l.Name, l.Name, g.cInt(ext), l.Name); err != nil {
		return err
	}
	return nil
}

// hsumLoop prints an unrolled loop over the lanes of one register vector
// that reduces them into one element (the write-back of a k-vectorized
// rfactor, out[i, j] += out_rf[i, j, l]) as a pairwise horizontal sum,
// llmir_hsum, instead of lanes dependent scalar adds with a lane extract
// each. It reports false, printing nothing, when the loop is not that shape.
// The summation order changes, which a reduction allows.
func (g *gen) hsumLoop(l *schedule.Loop) bool {
	if len(l.Body) != 1 {
		return false
	}
	b, ok := l.Body[0].(*schedule.Block)
	if !ok || !b.Reduce {
		return false
	}
	for _, buf := range g.n.Buffers {
		if buf.Param < 0 && buf.AllocAt == l.Name {
			return false
		}
	}
	defer delete(g.env, l.Name)
	type lane struct {
		in        inst
		dst, name string
		lane      int64
	}
	at := func(v int64) (lane, bool) {
		g.env[l.Name] = schedule.C(v)
		in := g.instantiate(b)
		ld, ok := in.value.(schedule.Load)
		if !ok {
			return lane{}, false
		}
		src := g.resolve(ld.Buf, ld.Index)
		ri := g.regOf(src.buf.Name)
		if ri == nil || ri.array || !ri.vector || src.buf.DType != schedule.F32 {
			return lane{}, false
		}
		for _, e := range src.phys {
			if _, c := e.(schedule.Int); !c {
				return lane{}, false
			}
		}
		name, ln, ok := g.local(src, false)
		if !ok {
			return lane{}, false
		}
		return lane{in: in, dst: g.scalarRef(g.resolve(b.Buf, in.index)), name: name, lane: ln}, true
	}
	first, ok1 := at(0)
	last, ok2 := at(g.lanes - 1)
	// The access is affine in the loop variable, so equal chunks with lanes
	// 0 and lanes-1 at the ends mean lane v is read at v; the destination
	// must not move, and only the first lane may store the init.
	if !ok1 || !ok2 || first.name != last.name || first.lane != 0 || last.lane != g.lanes-1 || first.dst != last.dst || last.in.cond != "" {
		return false
	}
	dst := g.resolve(b.Buf, first.in.index)
	cur := g.scalarLoad(dst)
	sum := "llmir_hsum(" + first.name + ")"
	g.line("{ // %s = 0..%d: horizontal sum", l.Name, g.lanes-1)
	g.ind++
	switch in := first.in; in.cond {
	case "1":
		g.line("%s = %s;", first.dst, g.convertStore(dst.buf, "("+g.cFloat(in.init)+" + "+sum+")"))
	case "":
		g.line("%s = %s;", first.dst, g.convertStore(dst.buf, "("+cur+" + "+sum+")"))
	default:
		g.line("%s = %s;", first.dst, g.convertStore(dst.buf, "(("+in.cond+") ? "+g.cFloat(in.init)+" : "+cur+") + "+sum))
	}
	g.ind--
	g.line("}")
	return true
}

// bodyIn emits the loop body of l inside a C block opened by the line
// format (which ends in "{"), indented, and closes the block.
func (g *gen) bodyIn(l *schedule.Loop, format string, args ...any) error {
	g.line(format, args...)
	g.ind++
	if err := g.body(l); err != nil {
		return err
	}
	g.ind--
	g.line("}")
	return nil
}

func (g *gen) body(l *schedule.Loop) error {
	if len(l.Prefetch) == 0 {
		return g.versionedBody(l)
	}
	return g.prefetchBody(l)
}

func (g *gen) versionedBody(l *schedule.Loop) error {
	ts := g.tails(l)
	if len(ts) == 0 {
		if err := g.allocs(l.Name); err != nil {
			return err
		}
		return g.stmts(l.Body)
	}
	// Loop versioning (Halide's loop partitioning, BLIS's edge tiles):
	// a register tile whose vector loops are bounded by min(C, e) is only
	// promoted to vector locals when the extents are the constant C, so
	// the body is printed twice — once with every such extent pinned to C
	// behind a test that the tile is full, once generic for the edge tiles.
	for _, t := range ts {
		g.pin[t.key] = t.c
	}
	// A test implied by the others is left out: with min(32, e) pinned,
	// min(32, e) >= 16 is 32 >= 16.
	var conds []string
	for _, t := range ts {
		if t.guard {
			g.guarded[l.Name] = true
		}
		if c, ok := g.rg.Simplify(g.pinned(t.e)).(schedule.Int); !t.whole && ok && c.V >= t.c {
			continue
		}
		conds = append(conds, fmt.Sprintf("%s >= %d", g.cInt(t.e), t.c))
	}
	if len(conds) == 0 {
		conds = append(conds, "1")
	}
	outer := g.ver
	defer func() { g.ver = outer }()
	g.line("if (%s) { // full register tile", strings.Join(conds, " && "))
	g.ind++
	g.ver = outer + "/full"
	err := g.allocs(l.Name)
	if err == nil {
		err = g.stmts(l.Body)
	}
	for _, t := range ts {
		delete(g.pin, t.key)
	}
	if err != nil {
		return err
	}
	g.ind--
	g.line("} else { // edge tile")
	g.ind++
	g.ver = outer + "/edge"
	if err := g.allocs(l.Name); err != nil {
		return err
	}
	if err := g.stmts(l.Body); err != nil {
		return err
	}
	g.ind--
	g.line("}")
	return nil
}

// tail is an extent (or part of one) min(c, e) that versioning pins to c.
type tail struct {
	key string // printed form of min(c, e), or of e for a guard
	c   int64
	e   schedule.Expr
	// guard: e is the whole extent of a guarded unrolled loop (bounded by
	// c), pinned to c; the full copy then has no guards at all.
	guard bool
	// whole: e is the whole extent (of a guarded loop or a vector loop),
	// so the test e >= c is never implied by the pins.
	whole bool
}

// tails returns the tails to version the body of l on: the subexpressions
// min(C, e) of the extents of the vector loops printed under l, where l
// allocates a register tile and e depends only on loops outside l's body.
// They are found by printing the body once and discarding the text, so
// inner unrolled loops have substituted their constants and the extents
// are seen as they will be printed. Whether pinning them pays (the full
// copy keeps the tile in registers, the edge copy would not) is only known
// after printing; versionGain turns versioning off where it does not.
func (g *gen) tails(l *schedule.Loop) []tail {
	if g.lanes <= 1 || g.opt.NoVersioning || g.dry != nil || g.noVersion[l.Name] {
		return nil
	}
	owns := false
	for _, b := range g.n.Buffers {
		if _, heap := g.heapAt[b.Name]; b.Param < 0 && b.Scope == schedule.Register && b.AllocAt == l.Name && !heap {
			owns = true
		}
	}
	if !owns {
		return nil
	}
	d := &dryRun{inner: map[string]bool{}, seen: map[string]bool{}}
	g.walkLoops(l.Body, nil, func(s *schedule.Loop, _ []*schedule.Loop) { d.inner[s.Name] = true })
	text, ind, ver := g.w.String(), g.ind, g.ver
	g.dry, g.ver = d, ver+"/dry"
	if err := g.allocs(l.Name); err == nil {
		_ = g.stmts(l.Body) // an error recurs, and is reported, in the real print
	}
	g.dry, g.ver, g.ind = nil, ver, ind
	g.w.Reset()
	g.w.WriteString(text)
	return d.ts
}

// dryRun collects the tails met while printing an owner loop's body.
type dryRun struct {
	inner map[string]bool // loops inside the body
	seen  map[string]bool
	ts    []tail
}

// noteTail records the tails in the extent of a vector loop: every
// subexpression min(C, e) with e fixed for the owner's body. Nested ones
// count too — the second vector of a split tile has the extent
// min(32, N - j*32) - 16, which only becomes constant when the inner min
// is pinned.
func (g *gen) noteTail(ext schedule.Expr) {
	m, ok := ext.(schedule.Bin)
	if !ok {
		return
	}
	g.noteTail(m.A)
	g.noteTail(m.B)
	d := g.dry
	key := m.String()
	if m.Op != schedule.OpMin || d.seen[key] {
		return
	}
	c, ok := m.A.(schedule.Int)
	e := m.B
	if !ok {
		if c, ok = m.B.(schedule.Int); !ok {
			return
		}
		e = m.A
	}
	if c.V <= 0 {
		return
	}
	for v := range d.inner {
		if schedule.UsesVar(e, v) {
			return
		}
	}
	d.seen[key] = true
	d.ts = append(d.ts, tail{key: key, c: c.V, e: e})
}

// noteVector records the tails of a vector loop's extent: its min(C, e)
// parts, or, when it has none but the ranges bound it by a few whole
// vectors, the whole extent pinned to that bound. A loop fused from (rows,
// k group) has the extent min(4, d_M - i1·4)·4, which the bucket (d_M ≤
// 16) folds to 4·d_M - 16·i1 for the last rows, no min left to pin: left
// variable, the accumulators of the full tile fell back to a stack array.
func (g *gen) noteVector(ext schedule.Expr) {
	hasMin := false
	schedule.Visit(ext, func(e schedule.Expr) {
		if m, ok := e.(schedule.Bin); ok && m.Op == schedule.OpMin {
			hasMin = true
		}
	})
	if hasMin {
		g.noteTail(ext)
		return
	}
	iv, ok := g.rg.Bound(ext)
	if !ok || iv.Hi <= 0 || iv.Hi%g.lanes != 0 || iv.Hi > 8*g.lanes {
		return
	}
	g.noteWhole(ext, iv.Hi, false)
}

// noteGuard records the extent of a guarded unrolled loop (bounded by hi)
// as a tail: its min(C, e) parts as noteTail does, or, when it is no min —
// d_M - i*4 once the bucket bounds it by 4 — the whole extent, pinned to
// hi. Every guard inside a full register tile then disappears: gcc does
// not unswitch a k loop with one guard per FMA, and the branches cost as
// much as the FMAs in a decode tile. A min(C, e) guard is a tail like any
// other, versioned only where the full copy gains registers
// (versionGain): the prefill GEMM tile keeps one guard per row of
// min(12, M - i·12) in its k loop. Versioning it anyway (session 11,
// 512×4096×4096, one thread, both sources side by side in 14 interleaved
// rounds of one process) gained nothing: 98.5 ms median against 96.4
// unversioned, best 93.4 both — Zen 5 retires the fused compare-branches
// beside the FMAs.
func (g *gen) noteGuard(ext schedule.Expr, hi int64) {
	if m, ok := ext.(schedule.Bin); ok && m.Op == schedule.OpMin {
		g.noteTail(ext)
		return
	}
	g.noteWhole(ext, hi, true)
}

// noteWhole records a whole extent (no min) bounded by hi as a tail pinned
// to hi, if it is fixed for the owner's body; guard says it bounds a
// guarded unrolled loop.
func (g *gen) noteWhole(ext schedule.Expr, hi int64, guard bool) {
	d := g.dry
	key := ext.String()
	if _, ok := ext.(schedule.Bin); !ok || d.seen[key] || hi <= 0 {
		return
	}
	for v := range d.inner {
		if schedule.UsesVar(ext, v) {
			return
		}
	}
	d.seen[key] = true
	d.ts = append(d.ts, tail{key: key, c: hi, e: ext, guard: guard, whole: true})
}

// pinned replaces the pinned tails in e by their constants.
func (g *gen) pinned(e schedule.Expr) schedule.Expr {
	b, ok := e.(schedule.Bin)
	if !ok {
		return e
	}
	if c, ok := g.pin[b.String()]; ok {
		return schedule.C(c)
	}
	return schedule.Bin{Op: b.Op, A: g.pinned(b.A), B: g.pinned(b.B)}
}

// versionGain marks as not to be versioned every owner loop whose versions
// made no difference: no register buffer it allocates is promoted in the
// full copy while falling back to an array in the edge copy (the pinned
// extents did not make the accesses constant, or the tile was fine
// without them). It reports whether it marked a new one.
func (g *gen) versionGain() bool {
	versioned, gain := map[string]bool{}, map[string]bool{}
	for key, r := range g.reg {
		name, ver, ok := strings.Cut(key, "@")
		if !ok || !strings.HasSuffix(ver, "/full") {
			continue
		}
		at := g.n.Buffer(name).AllocAt
		versioned[at] = true
		if e := g.reg[strings.TrimSuffix(key, "/full")+"/edge"]; e != nil && e.array && !r.array {
			gain[at] = true
		}
		if g.guarded[at] && !r.array {
			gain[at] = true
		}
	}
	changed := false
	for at := range versioned {
		if !gain[at] && !g.noVersion[at] {
			g.noVersion[at], changed = true, true
		}
	}
	return changed
}

// regOf returns the promotion state of register buffer name in the loop
// version being printed, or nil if name is not a register buffer.
func (g *gen) regOf(name string) *regInfo {
	base, ok := g.reg[name]
	if !ok || g.ver == "" {
		return base
	}
	key := name + "@" + g.ver
	r, ok := g.reg[key]
	if !ok {
		_, heap := g.heapAt[name]
		r = &regInfo{names: map[string]bool{}, prev: map[string]bool{}, array: heap}
		g.reg[key] = r
	}
	return r
}

func (g *gen) parallelLoop(l *schedule.Loop, ext schedule.Expr) error {
	var heap []string
	for _, b := range g.n.Buffers {
		if at, ok := g.heapAt[b.Name]; ok && at == l.Name {
			heap = append(heap, b.Name)
		}
	}
	g.enterVar(l.Name, ext)
	if len(heap) == 0 {
		g.line("#pragma omp parallel for schedule(static)")
		if err := g.bodyIn(l, "for (int64_t %s = 0; %s < %s; %s++) {", l.Name, l.Name, g.cInt(ext), l.Name); err != nil {
			return err
		}
		return nil
	}
	// Per-thread scratch: allocated once per thread, not per iteration.
	g.line("{")
	g.ind++
	g.line("int llmir_fail = 0;")
	g.line("#pragma omp parallel")
	g.line("{")
	g.ind++
	for _, name := range heap {
		g.heapDecl(name)
	}
	ok := make([]string, len(heap))
	for i, name := range heap {
		ok[i] = name + " != NULL"
	}
	g.line("const int llmir_ok = %s;", strings.Join(ok, " && "))
	g.line("#pragma omp for schedule(static)")
	g.line("for (int64_t %s = 0; %s < %s; %s++) {", l.Name, l.Name, g.cInt(ext), l.Name)
	g.ind++
	g.line("if (!llmir_ok) {")
	g.line("#pragma omp atomic write")
	g.line("  llmir_fail = 1;")
	g.line("  continue;")
	g.line("}")
	if err := g.body(l); err != nil {
		return err
	}
	g.ind--
	g.line("}")
	for _, name := range heap {
		g.line("free(%s);", name)
	}
	g.ind--
	g.line("}")
	g.line("if (llmir_fail) { rc = 1; goto llmir_out; }")
	g.ind--
	g.line("}")
	return nil
}

// --- expressions -----------------------------------------------------------

func (g *gen) cInt(e schedule.Expr) string {
	switch x := e.(type) {
	case schedule.Int:
		if x.V > math.MaxInt32 || x.V < math.MinInt32 {
			return strconv.FormatInt(x.V, 10) + "LL"
		}
		return strconv.FormatInt(x.V, 10)
	case schedule.Var:
		return x.Name
	case schedule.Dyn:
		return "d_" + x.Name
	case schedule.Bin:
		a, b := g.cInt(x.A), g.cInt(x.B)
		switch x.Op {
		case schedule.OpMin:
			return "llmir_min(" + a + ", " + b + ")"
		case schedule.OpMax:
			return "llmir_max(" + a + ", " + b + ")"
		case schedule.OpFloorDiv:
			return "(" + a + " / " + b + ")"
		}
		return "(" + a + " " + x.Op.String() + " " + b + ")"
	}
	return fmt.Sprintf("/* %s */ 0", e)
}

func cFloatLit(v float64) string {
	switch {
	case math.IsNaN(v):
		return "__builtin_nanf(\"\")"
	case math.IsInf(v, 1):
		return "__builtin_inff()"
	case math.IsInf(v, -1):
		return "(-__builtin_inff())"
	}
	s := strconv.FormatFloat(float64(float32(v)), 'g', 9, 32)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s + "f"
}

// ref is a resolved buffer access.
type ref struct {
	buf  *schedule.Buffer
	phys []schedule.Expr // simplified physical index
}

func (g *gen) resolve(name string, idx []schedule.Expr) ref {
	b := g.n.Buffer(name)
	phys := b.PhysIndex(idx)
	out := make([]schedule.Expr, len(phys))
	for d, e := range phys {
		out[d] = g.rg.Simplify(e)
	}
	return ref{buf: b, phys: out}
}

func (g *gen) offset(r ref) schedule.Expr {
	shape := r.buf.PhysShape()
	var off schedule.Expr = schedule.C(0)
	for d, e := range r.phys {
		off = schedule.Add(schedule.Mul(off, shape[d]), e)
	}
	return g.rg.Simplify(off)
}

// local returns the register local for a constant access, or "" when the
// buffer must be an array.
func (g *gen) local(r ref, vector bool) (name string, lane int64, ok bool) {
	ri := g.regOf(r.buf.Name)
	if ri == nil || ri.array {
		return "", 0, false
	}
	parts := []string{r.buf.Name}
	for d, e := range r.phys {
		c, isConst := e.(schedule.Int)
		if !isConst {
			ri.fail = true
			return "", 0, false
		}
		if d == len(r.phys)-1 && (ri.vector || vector) {
			if vector && c.V%g.lanes != 0 {
				ri.misaligned = true
				return "", 0, false
			}
			parts = append(parts, "v"+strconv.FormatInt(c.V/g.lanes, 10))
			lane = c.V % g.lanes
			continue
		}
		parts = append(parts, strconv.FormatInt(c.V, 10))
	}
	if vector {
		ri.vecSeen = true
	}
	name = strings.Join(parts, "_")
	ri.names[name] = true
	return name, lane, true
}

// scalarRef prints an lvalue/rvalue for one element (without dtype
// conversion).
func (g *gen) scalarRef(r ref) string {
	if name, lane, ok := g.local(r, false); ok {
		if g.regOf(r.buf.Name).vector {
			return fmt.Sprintf("%s[%d]", name, lane)
		}
		return name
	}
	g.notePrefetch(r)
	return fmt.Sprintf("%s[%s]", r.buf.Name, g.cInt(g.offset(r)))
}

func (g *gen) scalarLoad(r ref) string {
	s := g.scalarRef(r)
	switch r.buf.DType {
	case schedule.BF16:
		return "llmir_bf16_to_f32(" + s + ")"
	case schedule.F16:
		return "llmir_f16_to_f32(" + s + ")"
	}
	return s
}

func (g *gen) convertStore(b *schedule.Buffer, v string) string {
	switch b.DType {
	case schedule.BF16:
		return "llmir_f32_to_bf16(" + v + ")"
	case schedule.F16:
		return "llmir_f32_to_f16(" + v + ")"
	}
	return v
}

func (g *gen) cFloat(e schedule.Expr) string {
	switch x := e.(type) {
	case schedule.Float:
		return cFloatLit(x.V)
	case schedule.Int, schedule.Var, schedule.Dyn:
		return "(float)(" + g.cInt(e) + ")"
	case schedule.Load:
		return g.scalarLoad(g.resolve(x.Buf, x.Index))
	case schedule.Call:
		f := schedule.Funcs[x.Fn]
		args := make([]any, len(x.Args))
		for i, a := range x.Args {
			args[i] = g.cFloat(a)
		}
		return fmt.Sprintf(f.C, args...)
	case schedule.Bin:
		if !isFloatExpr(x) {
			return "(float)(" + g.cInt(x) + ")"
		}
		a, b := g.cFloat(x.A), g.cFloat(x.B)
		switch x.Op {
		case schedule.OpMin:
			return "fminf(" + a + ", " + b + ")"
		case schedule.OpMax:
			return "fmaxf(" + a + ", " + b + ")"
		case schedule.OpAdd, schedule.OpSub, schedule.OpMul, schedule.OpDiv:
			return "(" + a + " " + x.Op.String() + " " + b + ")"
		}
	}
	return fmt.Sprintf("/* %s */ 0.0f", e)
}

func isFloatExpr(e schedule.Expr) bool {
	switch e := e.(type) {
	case schedule.Float, schedule.Load, schedule.Call:
		return true
	case schedule.Bin:
		return e.Op == schedule.OpDiv || isFloatExpr(e.A) || isFloatExpr(e.B)
	}
	return false
}

// --- blocks ---------------------------------------------------------------

// inst is a block with its axes replaced by their bindings and unrolled
// loop variables by constants.
type inst struct {
	b     *schedule.Block
	index []schedule.Expr
	value schedule.Expr
	init  schedule.Expr
	cond  string // init condition: "" never, "1" always, else C text
}

func (g *gen) instantiate(b *schedule.Block) inst {
	m := map[string]schedule.Expr{}
	for i, a := range b.Axes {
		m[a.Name] = schedule.Subst(b.Binds[i], g.env)
	}
	sub := func(e schedule.Expr) schedule.Expr {
		return g.simplifyFloat(schedule.Subst(schedule.Subst(e, m), g.env))
	}
	in := inst{b: b, value: sub(b.Value)}
	for _, e := range b.Index {
		in.index = append(in.index, g.rg.Simplify(schedule.Subst(schedule.Subst(e, m), g.env)))
	}
	if b.Reduce && b.Init != nil {
		in.init = sub(b.Init)
		var conds []string
		always := true
		for _, v := range schedule.ReductionOnlyVars(b) {
			e := g.simplify(schedule.V(v))
			if c, ok := e.(schedule.Int); ok {
				if c.V != 0 {
					return in // never first
				}
				continue
			}
			always = false
			conds = append(conds, g.cInt(e)+" == 0")
		}
		if always {
			in.cond = "1"
		} else {
			in.cond = strings.Join(conds, " && ")
		}
	}
	return in
}

func (g *gen) simplifyFloat(e schedule.Expr) schedule.Expr {
	return g.rg.Simplify(e)
}

func (g *gen) scalarBlock(b *schedule.Block) error {
	in := g.instantiate(b)
	dst := g.resolve(b.Buf, in.index)
	lv := g.scalarRef(dst)
	val := g.cFloat(in.value)
	cur := g.scalarLoad(dst)
	switch {
	case !b.Reduce:
		g.line("%s = %s;", lv, g.convertStore(dst.buf, val))
	case in.cond == "1":
		g.line("%s = %s;", lv, g.convertStore(dst.buf, "("+g.cFloat(in.init)+" + "+val+")"))
	case in.cond == "":
		g.line("%s = %s;", lv, g.convertStore(dst.buf, "("+cur+" + "+val+")"))
	default:
		g.line("%s = %s;", lv, g.convertStore(dst.buf, "(("+in.cond+") ? "+g.cFloat(in.init)+" : "+cur+") + "+val))
	}
	return nil
}

// --- vector loops -----------------------------------------------------------

// vecOK reports whether every block of the loop can be printed with vector
// operations over variable v: f32 data, every access either independent of
// v (broadcast) or stride 1 in v in the last physical dimension, and only
// + - * / in the value.
func (g *gen) vecOK(l *schedule.Loop) bool {
	if g.lanes == 0 {
		return false
	}
	v := l.Name
	for _, s := range l.Body {
		b, ok := s.(*schedule.Block)
		if !ok {
			return false
		}
		in := g.instantiate(b)
		dst := g.resolve(b.Buf, in.index)
		if k := g.stride(dst, v); k != 1 || !vecType(dst.buf.DType) {
			return false
		}
		good := g.vecValueOK(in.value, v)
		if in.init != nil && schedule.UsesVar(in.init, v) {
			good = false
		}
		if !good {
			return false
		}
	}
	return true
}

func (g *gen) vecValueOK(e schedule.Expr, v string) bool {
	switch x := e.(type) {
	case schedule.Float:
		return true
	case schedule.Load:
		r := g.resolve(x.Buf, x.Index)
		k := g.stride(r, v)
		return k == 0 || (k == 1 && vecType(r.buf.DType)) || (g.group(r, v) > 0 && r.buf.DType == schedule.F32)
	case schedule.Bin:
		if !isFloatExpr(x) {
			return !schedule.UsesVar(x, v)
		}
		switch x.Op {
		case schedule.OpAdd, schedule.OpSub, schedule.OpMul, schedule.OpDiv:
			return g.vecValueOK(x.A, v) && g.vecValueOK(x.B, v)
		}
		return false
	case schedule.Int, schedule.Var, schedule.Dyn:
		return !schedule.UsesVar(x, v)
	}
	return false
}

// group returns G when r reads a group broadcast in v: the last physical
// index is base + v % G with base independent of v (and G dividing the
// lanes), the other dims independent of v. Lanes l and l + G then read the
// same element, so the vector is the G floats at base repeated: a loop
// fused from (rows of a, G k steps) reads w[j, k] this way
// (recipe.GEMVOuter with KG > 1). It returns 0 otherwise.
func (g *gen) group(r ref, v string) int64 {
	last := len(r.phys) - 1
	for d, e := range r.phys {
		if d < last && schedule.UsesVar(e, v) {
			return 0
		}
	}
	e := r.phys[last]
	if !schedule.UsesVar(e, v) {
		return 0
	}
	base := schedule.Subst(e, map[string]schedule.Expr{v: schedule.C(0)})
	for G := int64(2); G < g.lanes; G *= 2 {
		if g.lanes%G != 0 {
			continue
		}
		rest := g.rg.Simplify(schedule.Sub(schedule.Sub(e, base), schedule.Mod(schedule.V(v), schedule.C(G))))
		if c, ok := rest.(schedule.Int); ok && c.V == 0 {
			return G
		}
	}
	return 0
}

// stride returns 0 if r does not depend on v, 1 if v walks the last
// physical dimension with stride 1 and nothing else, and -1 otherwise.
func (g *gen) stride(r ref, v string) int {
	for d, e := range r.phys {
		c, ok := g.rg.Coeff(e, v)
		if !ok {
			return -1
		}
		if d < len(r.phys)-1 && c != 0 {
			return -1
		}
		if d == len(r.phys)-1 {
			switch c {
			case 0:
				return 0
			case 1:
				return 1
			default:
				return -1
			}
		}
	}
	return 0
}

func (g *gen) vectorLoop(l *schedule.Loop, ext schedule.Expr) error {
	g.enterVar(l.Name, ext)
	if !g.vecOK(l) {
		g.line("#pragma GCC ivdep")
		if err := g.bodyIn(l, "for (int64_t %s = 0; %s < %s; %s++) {", l.Name, l.Name, g.cInt(ext), l.Name); err != nil {
			return err
		}
		return nil
	}
	W := g.lanes
	v := l.Name
	if c, ok := ext.(schedule.Int); ok {
		full := c.V / W
		if full <= 8 {
			for q := int64(0); q < full; q++ {
				if err := g.vectorBody(l, schedule.C(q*W)); err != nil {
					return err
				}
			}
		} else {
			g.line("for (int64_t %s = 0; %s < %d; %s += %d) {", v, v, full*W, v, W)
			g.ind++
			if err := g.vectorBody(l, schedule.V(v)); err != nil {
				return err
			}
			g.ind--
			g.line("}")
		}
		if c.V%W != 0 {
			if err := g.bodyIn(l, "for (int64_t %s = %d; %s < %d; %s++) {", v, full*W, v, c.V, v); err != nil {
				return err
			}
		}
		return nil
	}
	g.line("{")
	g.ind++
	g.line("const int64_t %s_n = %s;", v, g.cInt(ext))
	g.line("int64_t %s = 0;", v)
	g.line("for (; %s + %d <= %s_n; %s += %d) {", v, W, v, v, W)
	g.ind++
	if err := g.vectorBody(l, schedule.V(v)); err != nil {
		return err
	}
	g.ind--
	g.line("}")
	if err := g.bodyIn(l, "for (; %s < %s_n; %s++) {", v, v, v); err != nil {
		return err
	}
	g.ind--
	g.line("}")
	return nil
}

// vectorBody prints the loop's blocks once with lanes base..base+W-1.
func (g *gen) vectorBody(l *schedule.Loop, base schedule.Expr) error {
	v := l.Name
	for _, s := range l.Body {
		b := s.(*schedule.Block)
		in := g.instantiate(b)
		dst := g.resolve(b.Buf, in.index)
		at := func(r ref) ref {
			out := ref{buf: r.buf, phys: make([]schedule.Expr, len(r.phys))}
			for d, e := range r.phys {
				out.phys[d] = g.rg.Simplify(schedule.Subst(e, map[string]schedule.Expr{v: base}))
			}
			return out
		}
		lval, rval := g.vecRef(at(dst))
		var vexpr func(e schedule.Expr) string
		vexpr = func(e schedule.Expr) string {
			switch x := e.(type) {
			case schedule.Float:
				return "llmir_splat(" + cFloatLit(x.V) + ")"
			case schedule.Load:
				r := g.resolve(x.Buf, x.Index)
				if g.stride(r, v) == 0 {
					return "llmir_splat(" + g.scalarLoad(r) + ")"
				}
				if G := g.group(r, v); G > 0 {
					// base is a multiple of the lanes, so the group starts
					// at lane 0 of the chunk.
					br := at(r)
					g.notePrefetch(br)
					g.bcast[G] = true
					return fmt.Sprintf("llmir_bcast%d(&%s[%s])", G, br.buf.Name, g.cInt(g.offset(br)))
				}
				_, rv := g.vecRef(at(r))
				return rv
			case schedule.Bin:
				if !isFloatExpr(x) {
					return "llmir_splat((float)(" + g.cInt(x) + "))"
				}
				return "(" + vexpr(x.A) + " " + x.Op.String() + " " + vexpr(x.B) + ")"
			}
			return "llmir_splat((float)(" + g.cInt(e) + "))"
		}
		val := vexpr(in.value)
		var res string
		switch {
		case !b.Reduce:
			res = val
		case in.cond == "1":
			res = "(" + vexpr(in.init) + " + " + val + ")"
		case in.cond == "":
			res = "(" + rval + " + " + val + ")"
		default:
			g.line("if (%s) {", in.cond)
			g.line("  %s;", lval(vexpr(in.init)+" + "+val))
			g.line("} else {")
			g.line("  %s;", lval(rval+" + "+val))
			g.line("}")
			continue
		}
		g.line("%s;", lval(res))
	}
	return nil
}

// vecRef returns a store printer and a load expression for the vector
// starting at r.
func (g *gen) vecRef(r ref) (func(string) string, string) {
	if name, _, ok := g.local(r, true); ok {
		return func(v string) string { return name + " = " + v }, name
	}
	g.notePrefetch(r)
	p := fmt.Sprintf("&%s[%s]", r.buf.Name, g.cInt(g.offset(r)))
	load, store := g.vecMem(r.buf.DType)
	return func(v string) string { return store + "(" + p + ", " + v + ")" }, load + "(" + p + ")"
}

// vecMem names the vector load and store of a buffer of dt: f32 as it is,
// bf16 and f16 converted to and from f32 lanes (recorded for the header).
func (g *gen) vecMem(dt schedule.DType) (load, store string) {
	switch dt {
	case schedule.BF16:
		g.half[dt] = true
		return "llmir_vload_bf16", "llmir_vstore_bf16"
	case schedule.F16:
		g.half[dt] = true
		return "llmir_vload_f16", "llmir_vstore_f16"
	}
	return "llmir_vload", "llmir_vstore"
}

// widenU16 is, per vector size in bytes, the instructions that load lanes
// 16-bit values and zero-extend them to 32 bits (vpmovzxwd), and the ISA
// macro that guards them.
var widenU16 = map[int]struct{ isa, vec, shift, widen, load string }{
	64: {"__AVX512F__", "__m512i", "_mm512_slli_epi32", "_mm512_cvtepu16_epi32", "_mm256_loadu_si256"},
	32: {"__AVX2__", "__m256i", "_mm256_slli_epi32", "_mm256_cvtepu16_epi32", "_mm_loadu_si128"},
	16: {"__SSE4_1__", "__m128i", "_mm_slli_epi32", "_mm_cvtepu16_epi32", "_mm_loadl_epi64"},
}

// halfC prints the vector conversions of the 16-bit types the kernel
// loads or stores as vectors: bf16 widened by a shift, rounded to nearest
// even on the way back (a NaN kept quiet), as the scalar helpers do; f16
// through _Float16 vectors (vcvtph2ps / vcvtps2ph).
func (g *gen) halfC() string {
	var b strings.Builder
	bytes := g.opt.VectorBits / 8
	if g.half[schedule.BF16] {
		fmt.Fprintf(&b, "typedef uint16_t llmir_vu16 __attribute__((vector_size(%d)));\n", bytes/2)
		fmt.Fprintf(&b, "typedef uint32_t llmir_vu32 __attribute__((vector_size(%d)));\n", bytes)
		// gcc splits __builtin_convertvector of 16-bit lanes into halves
		// (extract, two widenings, insert: 5 instructions for 1); the
		// ISA's own widening load is used where the width has one.
		if w, ok := widenU16[bytes]; ok {
			fmt.Fprintf(&b, "#if defined(%s)\n#include <immintrin.h>\n", w.isa)
			fmt.Fprintf(&b, "static inline llmir_vf llmir_vload_bf16(const uint16_t *p) { %s u = %s(%s(%s((const void *)p)), 16); llmir_vf f; __builtin_memcpy(&f, &u, sizeof f); return f; }\n#else\n", w.vec, w.shift, w.widen, w.load)
		}
		b.WriteString("static inline llmir_vf llmir_vload_bf16(const uint16_t *p) { llmir_vu16 h; __builtin_memcpy(&h, p, sizeof h); llmir_vu32 u = __builtin_convertvector(h, llmir_vu32) << 16; llmir_vf f; __builtin_memcpy(&f, &u, sizeof f); return f; }\n")
		if _, ok := widenU16[bytes]; ok {
			b.WriteString("#endif\n")
		}
		b.WriteString("static inline void llmir_vstore_bf16(uint16_t *p, llmir_vf v) { llmir_vu32 u; __builtin_memcpy(&u, &v, sizeof u); llmir_vu32 nan = (llmir_vu32)((u & 0x7fffffffu) > 0x7f800000u); llmir_vu32 r = ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16 & ~nan) | (((u >> 16) | 0x40u) & nan); llmir_vu16 h = __builtin_convertvector(r, llmir_vu16); __builtin_memcpy(p, &h, sizeof h); }\n")
	}
	if g.half[schedule.F16] {
		fmt.Fprintf(&b, "typedef _Float16 llmir_vhf __attribute__((vector_size(%d)));\n", bytes/2)
		b.WriteString("static inline llmir_vf llmir_vload_f16(const uint16_t *p) { llmir_vhf h; __builtin_memcpy(&h, p, sizeof h); return __builtin_convertvector(h, llmir_vf); }\n")
		b.WriteString("static inline void llmir_vstore_f16(uint16_t *p, llmir_vf v) { llmir_vhf h = __builtin_convertvector(v, llmir_vhf); __builtin_memcpy(p, &h, sizeof h); }\n")
	}
	return b.String()
}

// --- software prefetch --------------------------------------------------------

// prefetchAt collects, while a loop body with prefetch annotations is
// printed, the addresses the iteration Dist ahead will read.
type prefetchAt struct {
	loop  string
	dist  map[string]int64 // buffer → iterations ahead
	scope map[string]bool  // loop variables declared at the top of the body
	seen  map[string]bool
	lines []string
}

// prefetchBody prints the body of a loop annotated by Schedule.Prefetch:
// the body is printed first (so unrolled inner loops have substituted their
// constants and every access is seen as printed), then a
// __builtin_prefetch of each distinct address the annotated buffers are
// read at, with the loop variable advanced by the distance, is put at the
// top of the body. Addresses that use a variable of an inner, not unrolled
// loop are skipped: they are not in scope there. One prefetch per access
// rather than per cache line keeps the printer simple; the decode recipe
// reads one 64-byte line per row per iteration, so they coincide. Reading
// past the end of the buffer is harmless: a prefetch never faults.
func (g *gen) prefetchBody(l *schedule.Loop) error {
	p := &prefetchAt{loop: l.Name, dist: map[string]int64{}, scope: map[string]bool{}, seen: map[string]bool{}}
	for _, a := range l.Prefetch {
		p.dist[a.Buf] = a.Dist
	}
	for v := range g.rg.Vars {
		p.scope[v] = true
	}
	p.scope[l.Name] = true
	g.pf = append(g.pf, p)
	start, ind := g.w.Len(), g.ind
	err := g.versionedBody(l)
	g.pf = g.pf[:len(g.pf)-1]
	if err != nil {
		return err
	}
	text := g.w.String()
	g.w.Reset()
	g.w.WriteString(text[:start])
	g.ind = ind
	for _, ln := range p.lines {
		g.line("%s", ln)
	}
	g.w.WriteString(text[start:])
	return nil
}

// notePrefetch records the prefetch of access r for every enclosing
// annotated loop that prefetches its buffer.
func (g *gen) notePrefetch(r ref) {
	for _, p := range g.pf {
		d, ok := p.dist[r.buf.Name]
		if !ok {
			continue
		}
		off := g.offset(r)
		if !schedule.UsesVar(off, p.loop) {
			continue
		}
		inScope := true
		for _, v := range schedule.Vars(off) {
			inScope = inScope && p.scope[v]
		}
		if !inScope {
			continue
		}
		off = g.lineStart(off, r.buf.DType.Size())
		ahead := g.rg.Simplify(schedule.Subst(off, map[string]schedule.Expr{p.loop: schedule.Add(schedule.V(p.loop), schedule.C(d))}))
		ln := fmt.Sprintf("__builtin_prefetch(&%s[%s], 0, 3);", r.buf.Name, g.cInt(ahead))
		if !p.seen[ln] {
			p.seen[ln] = true
			p.lines = append(p.lines, ln)
		}
	}
}

// lineStart rounds an element offset down to the start of its 64-byte line
// when that is known from the expression: every variable's coefficient is a
// multiple of the elements per line (the base pointer is 64-byte aligned),
// so only the constant term decides the line. The outer-product decode
// recipe reads w[j, k0·16 + k1] for 16 unrolled k1: sixteen accesses, one
// line, so one prefetch instead of sixteen. Otherwise off is kept.
func (g *gen) lineStart(off schedule.Expr, size int64) schedule.Expr {
	per := 64 / size
	zero := map[string]schedule.Expr{}
	for _, v := range schedule.Vars(off) {
		c, ok := g.rg.Coeff(off, v)
		if !ok || c%per != 0 {
			return off
		}
		zero[v] = schedule.C(0)
	}
	c, ok := g.rg.Simplify(schedule.Subst(off, zero)).(schedule.Int)
	if !ok || c.V < 0 || c.V%per == 0 {
		return off
	}
	return g.rg.Simplify(schedule.Sub(off, schedule.C(c.V%per)))
}
