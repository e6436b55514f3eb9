package cpu

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

// buildTimeout bounds one gcc run; a pathological unroll can make gcc run
// for minutes, which is a failure of that candidate, not of the batch.
const buildTimeout = 3 * time.Minute

// Builder compiles candidates into shared objects with gcc, in parallel,
// into a content-addressed cache: the file name is a hash of the gcc
// version, the flags and the source, so rebuilding the same source is free
// and a gcc upgrade never reuses stale objects.
type Builder struct {
	GCC     string
	Version string
	Flags   []string
	Dir     string // where objects are kept
	Jobs    int    // parallel gcc processes (default: cores)
}

// Key is the content address of a candidate's object.
func (b *Builder) Key(c target.Candidate) string {
	return harness.ContentKey([]string{b.Version}, b.Flags, c.CFlags, []string{"--ld--"}, c.LDFlags, BaseLDFlags, []string{c.Source})
}

// Build compiles every candidate. Compile errors are per candidate
// (Built.Failure with StatusBuildError and gcc's diagnostics); the returned
// error is for the infrastructure only.
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
	// Candidates with the same content address are compiled once: a
	// search often proposes the same code under two traces.
	byKey := map[string][]target.Candidate{}
	var keys []string
	out := make(map[string]target.Built, len(cands))
	for _, c := range cands {
		if c.Entry == "" {
			out[c.ID] = target.Built{Candidate: c, Failure: &target.Measurement{
				CandidateID: c.ID, Status: target.StatusBuildError, Error: "no entry symbol", Threads: max(c.Threads, 1)}}
			continue
		}
		k := b.Key(c)
		if byKey[k] == nil {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], c)
	}
	var mu sync.Mutex
	p := pool.New().WithContext(ctx).WithMaxGoroutines(jobs)
	for _, k := range keys {
		group := byKey[k]
		p.Go(func(ctx context.Context) error {
			r, err := b.buildOne(ctx, group[0])
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for _, c := range group {
				rc := r
				rc.Candidate = c
				if r.Failure != nil {
					f := *r.Failure
					f.CandidateID, f.Threads = c.ID, max(c.Threads, 1)
					rc.Failure = &f
				}
				out[c.ID] = rc
			}
			return nil
		})
	}
	if err := p.Wait(); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	return out, nil
}

func (b *Builder) buildOne(ctx context.Context, c target.Candidate) (target.Built, error) {
	r := target.Built{Candidate: c}
	key := b.Key(c)
	so := filepath.Join(b.Dir, key+".so")
	if _, err := os.Stat(so); err == nil {
		r.Artifact, r.Cached = so, true
		return r, nil
	}
	src := filepath.Join(b.Dir, key+".c")
	if err := os.WriteFile(src, []byte(c.Source), 0o644); err != nil {
		return r, fmt.Errorf("candidate %s: write source: %w", c.ID, err)
	}
	// gcc writes to a private name and the result is renamed into place, so
	// a concurrent build of the same source (two IDs, or two processes)
	// never sees half an object.
	tmp := fmt.Sprintf("%s.%d.%d.tmp", so, os.Getpid(), time.Now().UnixNano())
	args := slices.Concat(b.Flags, c.CFlags, []string{"-o", tmp, src}, c.LDFlags, BaseLDFlags)
	diag, dur, err := runGCC(ctx, b.GCC, args)
	r.Duration = dur
	if err != nil {
		os.Remove(tmp)
		if ctx.Err() != nil {
			return r, fmt.Errorf("candidate %s: %w", c.ID, ctx.Err())
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) && !errors.Is(err, context.DeadlineExceeded) {
			return r, fmt.Errorf("candidate %s: run %s: %w", c.ID, b.GCC, err)
		}
		r.Failure = &target.Measurement{
			CandidateID: c.ID,
			Status:      target.StatusBuildError,
			Error:       fmt.Sprintf("gcc %s: %v\n%s", strings.Join(args, " "), err, diag),
			Threads:     max(c.Threads, 1),
		}
		return r, nil
	}
	if err := os.Rename(tmp, so); err != nil {
		return r, fmt.Errorf("candidate %s: %w", c.ID, err)
	}
	r.Artifact = so
	return r, nil
}

// runGCC runs gcc with the build timeout and returns its (bounded)
// diagnostics.
func runGCC(ctx context.Context, gcc string, args []string) (string, time.Duration, error) {
	return harness.RunCompiler(ctx, buildTimeout, gcc, args)
}
