package cuda

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sourcegraph/conc/pool"

	"llmir/target"
	"llmir/target/internal/harness"
)

// buildTimeout bounds one nvcc run (a whole batch).
const buildTimeout = 5 * time.Minute

// DefaultBatch is how many candidates share one nvcc invocation. nvcc's
// fixed cost (host compiler passes, fatbinary, link) is most of the time of
// a small kernel, so batching divides it; too large a batch loses the
// parallelism across cores and makes a failing batch costly to bisect.
const DefaultBatch = 8

// Flags are the nvcc flags of every build for arch (the shared-object
// part; a candidate adds its own CFlags and LDFlags). See ArchFlag for sm_90.
func Flags(arch string) []string {
	return []string{"-O3", ArchFlag(arch), "-std=c++17", "-shared", "-Xcompiler", "-fPIC"}
}

// ArchFlag is nvcc's target flag for a device of arch. An sm_90 device
// (H100, H200) is built for sm_90a, whose arch-specific features include
// wgmma, which the prefill GEMM uses. It takes the
// -gencode form: nvcc 13 turns -arch=sm_90a into code for compute_90 too,
// whose ptxas pass rejects wgmma. The objects then run on sm_90 devices
// only, the only kind a build for sm_90 is measured on.
func ArchFlag(arch string) string {
	if arch == "sm_90" {
		return "-gencode=arch=compute_90a,code=sm_90a"
	}
	return "-arch=" + arch
}

// Builder compiles CUDA candidates into shared objects with nvcc: many
// candidates per translation unit (each inside its own namespace, each
// exported under a distinct C symbol), batches built in parallel, objects
// kept under a content address of nvcc's version, the flags and the
// sources.
type Builder struct {
	NVCC    string
	Version string
	Flags   []string
	Dir     string
	Jobs    int // parallel nvcc processes (default: cores)
	Batch   int // candidates per translation unit (default DefaultBatch)
}

// Command is the nvcc command line that builds src into so for candidates
// with the given extra flags. Golden-tested: it is the contract with the
// toolchain.
func (b *Builder) Command(src, so string, cflags, ldflags []string) []string {
	return slices.Concat([]string{b.NVCC}, b.Flags, cflags, []string{"-o", so, src}, ldflags)
}

// Unit is one translation unit: the candidates' sources with their
// #include lines hoisted to the top (deduplicated, in first-seen order),
// each body inside namespace llmir_c<i>, and an extern "C" wrapper per
// candidate, named Symbol(i), that calls the candidate's entry. A
// candidate's source defines its entry with C++ linkage: the wrapper gives
// it the batch-unique C name.
func Unit(cands []target.Candidate) string {
	var inc []string
	bodies := make([]string, len(cands))
	for i, c := range cands {
		var body strings.Builder
		for _, line := range strings.SplitAfter(c.Source, "\n") {
			if t := strings.TrimSpace(line); strings.HasPrefix(t, "#include") {
				if !slices.Contains(inc, t) {
					inc = append(inc, t)
				}
				continue
			}
			body.WriteString(line)
		}
		bodies[i] = body.String()
	}
	var u strings.Builder
	u.WriteString("// llmir CUDA batch: one namespace per candidate.\n")
	for _, l := range inc {
		u.WriteString(l + "\n")
	}
	for i, c := range cands {
		fmt.Fprintf(&u, "\n// candidate %s\nnamespace llmir_c%d {\n%s", c.ID, i, bodies[i])
		if !strings.HasSuffix(bodies[i], "\n") {
			u.WriteString("\n")
		}
		fmt.Fprintf(&u, "}  // namespace llmir_c%d\nextern \"C\" int %s(void *const *bufs, const int64_t *dims) { return llmir_c%d::%s(bufs, dims); }\n",
			i, Symbol(i), i, c.Entry)
	}
	return u.String()
}

// Symbol is the exported name of the i-th candidate of a unit.
func Symbol(i int) string { return fmt.Sprintf("llmir_entry_%d", i) }

// key is the content address of a unit.
func (b *Builder) key(unit string, cflags, ldflags []string) string {
	return harness.ContentKey([]string{b.Version}, b.Flags, cflags, []string{"--ld--"}, ldflags, []string{unit})
}

// Build compiles every candidate. Candidates with the same flags are
// batched; a batch that fails is rebuilt one candidate per unit so that
// only the broken candidates get the build_error (with their own
// diagnostics). The returned error is for the infrastructure only.
func (b *Builder) Build(ctx context.Context, cands []target.Candidate) (map[string]target.Built, error) {
	if err := target.CheckIDs(cands); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("build: cache dir: %w", err)
	}
	jobs := b.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	size := b.Batch
	if size <= 0 {
		size = DefaultBatch
	}
	out := make(map[string]target.Built, len(cands))
	groups := map[string][]target.Candidate{}
	var order []string
	for _, c := range cands {
		if c.Entry == "" {
			out[c.ID] = target.Built{Candidate: c, Failure: buildFailure(c, "no entry symbol")}
			continue
		}
		g := strings.Join(c.CFlags, "\x00") + "\x01" + strings.Join(c.LDFlags, "\x00")
		if groups[g] == nil {
			order = append(order, g)
		}
		groups[g] = append(groups[g], c)
	}
	var batches [][]target.Candidate
	for _, g := range order {
		cs := groups[g]
		// Spread a group over the cores rather than filling a few batches.
		n := max(1, min(size, (len(cs)+jobs-1)/jobs))
		for len(cs) > 0 {
			k := min(n, len(cs))
			batches = append(batches, cs[:k])
			cs = cs[k:]
		}
	}
	var mu sync.Mutex
	p := pool.New().WithContext(ctx).WithMaxGoroutines(jobs)
	for _, batch := range batches {
		p.Go(func(ctx context.Context) error {
			res, err := b.buildBatch(ctx, batch)
			if err != nil {
				return err
			}
			if len(batch) > 1 && res[0].Failure != nil {
				// Bisect the simple way: one unit per candidate.
				res = res[:0]
				for _, c := range batch {
					r, err := b.buildBatch(ctx, []target.Candidate{c})
					if err != nil {
						return err
					}
					res = append(res, r[0])
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range res {
				out[r.Candidate.ID] = r
			}
			return nil
		})
	}
	if err := p.Wait(); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	return out, nil
}

func buildFailure(c target.Candidate, msg string) *target.Measurement {
	return &target.Measurement{CandidateID: c.ID, Status: target.StatusBuildError, Error: msg, Threads: 1}
}

// buildBatch builds one unit; the returned Built have the batch-unique
// symbol as their Candidate.Entry. On a compile error every candidate of
// the unit gets the same build_error.
func (b *Builder) buildBatch(ctx context.Context, batch []target.Candidate) ([]target.Built, error) {
	unit := Unit(batch)
	cflags, ldflags := batch[0].CFlags, batch[0].LDFlags
	key := b.key(unit, cflags, ldflags)
	so := filepath.Join(b.Dir, key+".so")
	res := make([]target.Built, len(batch))
	for i, c := range batch {
		c.Entry = Symbol(i)
		res[i] = target.Built{Candidate: c}
	}
	if _, err := os.Stat(so); err == nil {
		for i := range res {
			res[i].Artifact, res[i].Cached = so, true
		}
		return res, nil
	}
	src := filepath.Join(b.Dir, key+".cu")
	if err := os.WriteFile(src, []byte(unit), 0o644); err != nil {
		return nil, fmt.Errorf("batch %s: write source: %w", batch[0].ID, err)
	}
	tmp := fmt.Sprintf("%s.%d.%d.tmp.so", strings.TrimSuffix(so, ".so"), os.Getpid(), time.Now().UnixNano())
	args := b.Command(src, tmp, cflags, ldflags)
	diag, dur, err := runCompiler(ctx, args)
	for i := range res {
		res[i].Duration = dur
	}
	if err != nil {
		os.Remove(tmp)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("batch %s: %w", batch[0].ID, ctx.Err())
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("batch %s: run %s: %w", batch[0].ID, b.NVCC, err)
		}
		msg := fmt.Sprintf("%s: %v\n%s", strings.Join(args, " "), err, diag)
		for i, c := range batch {
			f := buildFailure(c, msg)
			f.Threads = max(c.Threads, 1)
			res[i].Failure = f
		}
		return res, nil
	}
	if err := os.Rename(tmp, so); err != nil {
		return nil, fmt.Errorf("batch %s: %w", batch[0].ID, err)
	}
	for i := range res {
		res[i].Artifact = so
	}
	return res, nil
}

// runCompiler runs nvcc (args[0]) with the build timeout and returns its
// bounded diagnostics.
func runCompiler(ctx context.Context, args []string) (string, time.Duration, error) {
	return harness.RunCompiler(ctx, buildTimeout, args[0], args[1:])
}
