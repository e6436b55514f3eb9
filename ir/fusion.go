package ir

// Kernel groups: the fusion half of turning a module into workloads.
//
// Partition splits each function into groups. A group covers one kernel op,
// or a fusion pattern's ops together with the views inside it, and lists
// the alternatives a tuner chooses between: the fused kernels first, then
// "unfused" (one workload per op, exactly the workloads Tasks lists). Fused
// or not is therefore decided by measurement, never by rule: the pass only
// says what is legal.
//
// Design choice: a pattern is matched only where every intermediate value
// it swallows has no user outside the group (or, for rms_norm feeding
// several linears, where all its users are those linears, each fused kernel
// recomputing the norm). A group never has to write an intermediate out for
// someone else, so its fused workload's outputs are exactly the group's
// external results, and the groups of a function form a partition that can
// run in a topological order. Epilogue patterns are matched before the
// prologue: a linear claimed by an epilogue cannot take the norm too, and a
// norm with any claimed user stays unfused (it would be materialised
// anyway). Only bias-free linears with the default "nk" weight layout fuse,
// which are the ones the fused kernels implement.

import (
	"fmt"
	"sort"
	"strings"
)

// GroupAttr is the discardable op attribute the fuse pass writes:
// "<pattern>#<n>", n being the group's index in its function's partition.
const GroupAttr = "llmir.group"

// The fusion patterns, as Group.Pattern spells them.
const (
	PatternNormLinear = "rms_norm+linear"       // rms_norm prologue into each linear it feeds
	PatternRopeAppend = "linear+rope+append_kv" // k projection, rope, append to the paged cache
	PatternGateUp     = "gate_up+silu_mul"      // gate and up linears sharing x, silu(gate)·up
	PatternLinearAdd  = "linear+add"            // linear with the residual add as epilogue
)

// Alternative is one way to compute a group: its kernels' workloads in
// execution order.
type Alternative struct {
	Name      string // "fused" or "unfused"
	Workloads []Workload
}

// Group is one kernel group of a function.
//
// Fused workloads list their operands in a fixed order per pattern:
//
//	rms_norm+linear        x, norm weight, linear weight             → y
//	linear+rope+append_kv  x, w_k, positions, cache, v, slot_mapping → cache
//	gate_up+silu_mul       x, w_gate, w_up                           → silu(x·w_gateᵀ)·(x·w_upᵀ)
//	linear+add             x, w, residual                            → x·wᵀ + residual
//
// and carry the codegen attributes of their member ops (a key that two
// members set to different values is prefixed with the member's index in
// Workload.Group, "0.weight_layout").
type Group struct {
	Func         string
	Pattern      string        // "" for a single op; else one of the Pattern constants
	Ops          []string      // the ops it covers, for display ("%5 = llmir.linear", …)
	Alternatives []Alternative // fused first (when Pattern != ""), "unfused" (one workload per op) last
}

// fusedKernel is one kernel of a fused alternative, before shapes are known.
type fusedKernel struct {
	members []*Op // kernel ops in execution order: Workload.Group
	inputs  []*Value
	outputs []*Value
}

// match is one group of a function, before shapes are known.
type match struct {
	pattern string
	ops     []*Op // every op covered (kernels and internal views), program order
	fused   []fusedKernel
}

// kernels lists the group's kernel ops (views left out), program order.
func (g *match) kernels() []*Op {
	var out []*Op
	for _, op := range g.ops {
		if def, ok := LookupOp(op.Name); ok && def.Traits&NotAKernel == 0 {
			out = append(out, op)
		}
	}
	return out
}

// funcFusion holds one function's use lists and the ops already claimed.
type funcFusion struct {
	f       *Func
	index   map[*Op]int
	users   map[*Value][]*Op
	claimed map[*Op]bool
}

func newFuncFusion(f *Func) *funcFusion {
	ff := &funcFusion{f: f, index: map[*Op]int{}, users: map[*Value][]*Op{}, claimed: map[*Op]bool{}}
	for i, op := range f.Body {
		ff.index[op] = i
		for _, v := range op.Operands {
			ff.users[v] = append(ff.users[v], op)
		}
	}
	return ff
}

// soleUser returns the one op that uses v, or nil when v has no use, several
// uses, or is returned from the function.
func (ff *funcFusion) soleUser(v *Value) *Op {
	if us := ff.users[v]; len(us) == 1 && us[0].Name != ReturnName {
		return us[0]
	}
	return nil
}

// plainLinear reports whether op is an unclaimed llmir.linear the fused
// kernels implement: no bias, weight [out, in].
func (ff *funcFusion) plainLinear(op *Op) bool {
	return op != nil && op.Name == "llmir.linear" && !ff.claimed[op] && len(op.Operands) == 2 &&
		op.Attrs.Str("weight_layout", "nk") == "nk" && op.Operands[0] != op.Operands[1]
}

func sameType(a, b *Value) bool { return a.Type.String() == b.Type.String() }

func (ff *funcFusion) sorted(ops ...*Op) []*Op {
	out := append([]*Op(nil), ops...)
	sort.Slice(out, func(i, j int) bool { return ff.index[out[i]] < ff.index[out[j]] })
	return out
}

func (ff *funcFusion) claim(g *match) *match {
	for _, op := range g.ops {
		ff.claimed[op] = true
	}
	return g
}

// gateUp matches mul(silu(x·w_gateᵀ), x·w_upᵀ) (either operand order).
func (ff *funcFusion) gateUp(mul *Op) *match {
	if mul.Name != "llmir.mul" || ff.claimed[mul] {
		return nil
	}
	a, b := mul.Operands[0], mul.Operands[1]
	if a == b || !sameType(a, mul.Result()) || !sameType(b, mul.Result()) {
		return nil
	}
	for _, p := range [][2]*Value{{a, b}, {b, a}} {
		silu, up := p[0].Def, p[1].Def
		if silu == nil || silu.Name != "llmir.silu" || ff.claimed[silu] || ff.soleUser(p[0]) != mul {
			continue
		}
		gate := silu.Operands[0].Def
		if !ff.plainLinear(gate) || ff.soleUser(silu.Operands[0]) != silu {
			continue
		}
		if !ff.plainLinear(up) || up == gate || ff.soleUser(p[1]) != mul || up.Operands[0] != gate.Operands[0] {
			continue
		}
		return ff.claim(&match{
			pattern: PatternGateUp,
			ops:     ff.sorted(gate, up, silu, mul),
			fused: []fusedKernel{{
				members: []*Op{gate, up, silu, mul},
				inputs:  []*Value{gate.Operands[0], gate.Operands[1], up.Operands[1]},
				outputs: []*Value{mul.Result()},
			}},
		})
	}
	return nil
}

// linearAdd matches add(residual, x·wᵀ) (either operand order; when both
// are linears, the later one takes the epilogue).
func (ff *funcFusion) linearAdd(add *Op) *match {
	if add.Name != "llmir.add" || ff.claimed[add] {
		return nil
	}
	var best *Op
	var residual *Value
	for i, v := range add.Operands {
		lin, other := v.Def, add.Operands[1-i]
		if !ff.plainLinear(lin) || ff.soleUser(v) != add || other == v {
			continue
		}
		if !sameType(v, add.Result()) || !sameType(other, add.Result()) {
			continue
		}
		if best == nil || ff.index[lin] > ff.index[best] {
			best, residual = lin, other
		}
	}
	if best == nil {
		return nil
	}
	return ff.claim(&match{
		pattern: PatternLinearAdd,
		ops:     ff.sorted(best, add),
		fused: []fusedKernel{{
			members: []*Op{best, add},
			inputs:  []*Value{best.Operands[0], best.Operands[1], residual},
			outputs: []*Value{add.Result()},
		}},
	})
}

// ropeAppend matches append_kv(cache, rope(reshape(x·w_kᵀ), positions), v,
// slots): the k projection written to the cache already rotated.
func (ff *funcFusion) ropeAppend(ak *Op) *match {
	if ak.Name != "llmir.append_kv" || ff.claimed[ak] {
		return nil
	}
	k := ak.Operands[1]
	rope := k.Def
	if rope == nil || rope.Name != "llmir.rope" || ff.claimed[rope] || ff.soleUser(k) != ak {
		return nil
	}
	var views []*Op
	consumer, v := rope, rope.Operands[0]
	for {
		if ff.soleUser(v) != consumer || v.Def == nil {
			return nil
		}
		d := v.Def
		if d.Name == "llmir.reshape" && !ff.claimed[d] {
			views = append(views, d)
			consumer, v = d, d.Operands[0]
			continue
		}
		if !ff.plainLinear(d) {
			return nil
		}
		lin := d
		return ff.claim(&match{
			pattern: PatternRopeAppend,
			ops:     ff.sorted(append([]*Op{lin, rope, ak}, views...)...),
			fused: []fusedKernel{{
				members: []*Op{lin, rope, ak},
				inputs:  []*Value{lin.Operands[0], lin.Operands[1], rope.Operands[1], ak.Operands[0], ak.Operands[2], ak.Operands[3]},
				outputs: []*Value{ak.Result()},
			}},
		})
	}
}

// normLinear matches an rms_norm all of whose users are linears reading it
// as x: one fused kernel per linear, each recomputing the norm.
func (ff *funcFusion) normLinear(norm *Op) *match {
	if norm.Name != "llmir.rms_norm" || ff.claimed[norm] {
		return nil
	}
	us := ff.users[norm.Result()]
	if len(us) == 0 {
		return nil
	}
	seen := map[*Op]bool{}
	for _, u := range us {
		if !ff.plainLinear(u) || u.Operands[0] != norm.Result() || seen[u] {
			return nil
		}
		seen[u] = true
	}
	g := &match{pattern: PatternNormLinear, ops: ff.sorted(append([]*Op{norm}, us...)...)}
	for _, lin := range g.ops[1:] {
		g.fused = append(g.fused, fusedKernel{
			members: []*Op{norm, lin},
			inputs:  []*Value{norm.Operands[0], norm.Operands[1], lin.Operands[1]},
			outputs: []*Value{lin.Result()},
		})
	}
	return ff.claim(g)
}

// matchFunc partitions f into groups in a topological order (ties broken by
// the position of each group's first op).
func matchFunc(f *Func) ([]*match, error) {
	ff := newFuncFusion(f)
	var groups []*match
	for _, pat := range []func(*Op) *match{ff.gateUp, ff.linearAdd, ff.ropeAppend, ff.normLinear} {
		for _, op := range f.Body {
			if g := pat(op); g != nil {
				groups = append(groups, g)
			}
		}
	}
	for _, op := range f.Body {
		def, ok := LookupOp(op.Name)
		if !ok || def.Traits&NotAKernel != 0 || ff.claimed[op] {
			continue
		}
		groups = append(groups, ff.claim(&match{ops: []*Op{op}}))
	}
	return ff.order(groups)
}

// order sorts groups topologically (Kahn), always taking the ready group
// whose first op comes first.
func (ff *funcFusion) order(groups []*match) ([]*match, error) {
	of := map[*Op]int{}
	for gi, g := range groups {
		for _, op := range g.ops {
			of[op] = gi
		}
	}
	preds := make([]map[int]bool, len(groups))
	succs := make([][]int, len(groups))
	// dep records that group gi reads v, looking through views that belong
	// to no group (a reshape between two groups).
	var dep func(gi int, v *Value)
	dep = func(gi int, v *Value) {
		if v.Def == nil {
			return
		}
		pi, ok := of[v.Def]
		if !ok {
			for _, x := range v.Def.Operands {
				dep(gi, x)
			}
			return
		}
		if pi != gi && !preds[gi][pi] {
			preds[gi][pi] = true
			succs[pi] = append(succs[pi], gi)
		}
	}
	for gi, g := range groups {
		preds[gi] = map[int]bool{}
		for _, op := range g.ops {
			for _, v := range op.Operands {
				dep(gi, v)
			}
		}
	}
	first := func(gi int) int { return ff.index[groups[gi].ops[0]] }
	var ready []int
	for gi := range groups {
		if len(preds[gi]) == 0 {
			ready = append(ready, gi)
		}
	}
	out := make([]*match, 0, len(groups))
	for len(ready) > 0 {
		sort.Slice(ready, func(i, j int) bool { return first(ready[i]) < first(ready[j]) })
		gi := ready[0]
		ready = ready[1:]
		out = append(out, groups[gi])
		for _, si := range succs[gi] {
			delete(preds[si], gi)
			if len(preds[si]) == 0 {
				ready = append(ready, si)
			}
		}
	}
	if len(out) != len(groups) {
		return nil, errorf(ff.f.Loc, "@%s: kernel groups depend on each other in a cycle", ff.f.Name)
	}
	return out, nil
}

// funcEnv is the extent of each symbolic dim of f: its llmir.dims
// attribute, overridden by dims (as Tasks does).
func funcEnv(f *Func, dims map[string]int64) map[string]int64 {
	env := map[string]int64{}
	if a, ok := f.Attrs.Get(DimsAttr); ok {
		if d, ok := a.(DictAttr); ok {
			for _, e := range d {
				if v, ok := e.Value.(IntAttr); ok {
					env[e.Name] = v.V
				}
			}
		}
	}
	for k, v := range dims {
		env[k] = v
	}
	return env
}

// workload is the fused kernel's workload: operand signatures as for a
// single op, the member ops' names and codegen attributes.
func (k fusedKernel) workload(env map[string]int64) (Workload, error) {
	names := make([]string, len(k.members))
	for i, op := range k.members {
		names[i] = op.Name
	}
	joined := strings.Join(names, "+")
	w, err := workloadOf(&Op{Name: joined, Operands: k.inputs, Results: k.outputs, Loc: k.members[0].Loc}, &OpDef{Name: joined}, env)
	if err != nil {
		return w, err
	}
	w.Group = names
	type setting struct {
		member int
		value  string
	}
	byName := map[string][]setting{}
	var order []string
	for i, op := range k.members {
		def, _ := LookupOp(op.Name)
		for _, ad := range def.Attrs {
			if a, ok := op.Attrs.Get(ad.Name); ok && ad.Codegen {
				if byName[ad.Name] == nil {
					order = append(order, ad.Name)
				}
				byName[ad.Name] = append(byName[ad.Name], setting{i, a.String()})
			}
		}
	}
	for _, name := range order {
		ss := byName[name]
		clash := false
		for _, s := range ss[1:] {
			clash = clash || s.value != ss[0].value
		}
		if w.Attrs == nil {
			w.Attrs = map[string]string{}
		}
		if !clash {
			w.Attrs[name] = ss[0].value
			continue
		}
		for _, s := range ss {
			w.Attrs[fmt.Sprintf("%d.%s", s.member, name)] = s.value
		}
	}
	return w, nil
}

// opNames gives each op result its printed SSA name (%N, or %N#i).
func opNames(f *Func) map[*Op]string {
	out := map[*Op]string{}
	next := 0
	for _, op := range f.Body {
		if op.Name == ReturnName || len(op.Results) == 0 {
			continue
		}
		out[op] = fmt.Sprintf("%%%d", next)
		if len(op.Results) > 1 {
			out[op] += fmt.Sprintf(":%d", len(op.Results))
		}
		next++
	}
	return out
}

// Partition splits every function of m into kernel groups (program order),
// with the same dims handling as Tasks: dims gives the actual extent of
// each symbolic dim, missing ones come from each function's llmir.dims.
func Partition(m *Module, dims map[string]int64) ([]Group, error) {
	var out []Group
	for _, f := range m.Funcs {
		env := funcEnv(f, dims)
		ms, err := matchFunc(f)
		if err != nil {
			return nil, err
		}
		names := opNames(f)
		for _, g := range ms {
			grp := Group{Func: f.Name, Pattern: g.pattern}
			for _, op := range g.ops {
				grp.Ops = append(grp.Ops, names[op]+" = "+op.Name)
			}
			if len(g.fused) > 0 {
				alt := Alternative{Name: "fused"}
				for _, k := range g.fused {
					w, err := k.workload(env)
					if err != nil {
						return nil, fmt.Errorf("@%s: %s: %w", f.Name, g.pattern, err)
					}
					alt.Workloads = append(alt.Workloads, w)
				}
				grp.Alternatives = append(grp.Alternatives, alt)
			}
			alt := Alternative{Name: "unfused"}
			for _, op := range g.kernels() {
				def, _ := LookupOp(op.Name)
				w, err := workloadOf(op, def, env)
				if err != nil {
					return nil, fmt.Errorf("@%s: %w", f.Name, err)
				}
				alt.Workloads = append(alt.Workloads, w)
			}
			grp.Alternatives = append(grp.Alternatives, alt)
			out = append(out, grp)
		}
	}
	return out, nil
}

// GroupTasks lists the distinct workloads of all alternatives of groups,
// in first-occurrence order, with occurrence counts and functions, like
// Tasks: a tuner measures each once and compares alternatives by sums.
func GroupTasks(groups []Group) []Task {
	var tasks []Task
	index := map[string]int{}
	for _, g := range groups {
		for _, alt := range g.Alternatives {
			for _, w := range alt.Workloads {
				key := w.Key()
				i, seen := index[key]
				if !seen {
					i = len(tasks)
					index[key] = i
					tasks = append(tasks, Task{Workload: w})
				}
				t := &tasks[i]
				t.Count++
				if len(t.Funcs) == 0 || t.Funcs[len(t.Funcs)-1] != g.Func {
					t.Funcs = append(t.Funcs, g.Func)
				}
			}
		}
	}
	return tasks
}

// Fuse is the "fuse" pass: it annotates every op of a fused group with
// llmir.group = "<pattern>#<n>" (n: the group's index in its function's
// partition) and removes stale annotations. Attributes only, so the module
// still prints, parses and passes through mlir-opt unchanged otherwise.
func Fuse(m *Module) error {
	for _, f := range m.Funcs {
		for _, op := range f.Body {
			if _, ok := op.Attrs.Get(GroupAttr); ok {
				as := append(Attrs(nil), op.Attrs...)
				as.Delete(GroupAttr)
				op.Attrs = as
			}
		}
		ms, err := matchFunc(f)
		if err != nil {
			return err
		}
		for n, g := range ms {
			if g.pattern == "" {
				continue
			}
			for _, op := range g.ops {
				// A copy: importers may share one Attrs slice between ops.
				as := append(Attrs(nil), op.Attrs...)
				as.Set(GroupAttr, StrAttr(fmt.Sprintf("%s#%d", g.pattern, n)))
				op.Attrs = as
			}
		}
	}
	return nil
}

// The group annotation is accepted on every op: it is discardable (MLIR's
// dialect-prefixed attribute convention) and never part of a workload key.
func init() {
	for _, d := range opDefs {
		if d.attr(GroupAttr) == nil {
			d.Attrs = append(d.Attrs, AttrDef{Name: GroupAttr, Kind: KindStr})
		}
	}
}
