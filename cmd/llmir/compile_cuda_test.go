package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"llmir/ir"
	"llmir/ir/hf"
	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target/cuda"
	"llmir/target/cuda/cudabench"
	cudakernels "llmir/target/cuda/kernels"
	"llmir/tuningdb"
)

var updateCompileGolden = flag.Bool("update-compile", false, "rewrite cmd/llmir/testdata/compile_cuda")

// testGPU is an H100 as its fingerprint would read (a CI machine has no
// GPU; compile --target cuda only reads records made on one).
func testGPU() tuningdb.Device {
	fp := &cuda.Fingerprint{Name: "NVIDIA H100 80GB HBM3", ComputeCapability: "9.0", Arch: "sm_90", SMs: 132,
		MemoryMiB: 81559, L2Bytes: 50 << 20, Driver: "580.65.06"}
	fp.Toolchain.Compiler, fp.Toolchain.Version = "nvcc", "13.0.48"
	fp.Toolchain.Flags = []string{"-O3", "-arch=sm_90"}
	return cudabench.DeviceOf(fp, cuda.Bandwidth{})
}

// tinyCUDAKernels maps the tuningdb key (threads=1) of every workload of
// llama-tiny bf16 with a CUDA kernel to that kernel.
func tinyCUDAKernels(t *testing.T) (map[string]kernels.Kernel, []ir.Task) {
	t.Helper()
	m, err := hf.ImportPreset("llama-tiny", hf.Options{DType: "bf16"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ir.InferShapes(m); err != nil {
		t.Fatal(err)
	}
	groups, err := ir.Partition(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	tasks := ir.GroupTasks(groups)
	out := map[string]kernels.Kernel{}
	for _, task := range tasks {
		if k, err := cudakernels.FromWorkload(task.Workload); err == nil {
			out[search.WorkloadOf(k, 1).Key] = k
		}
	}
	return out, tasks
}

// TestCompileCUDA compiles llama-tiny for a recorded H100 from a database
// holding one tuned decode linear: the manifest and header match their
// golden files, that workload takes its record (user, exact) and the rest
// their rule-based defaults, and every kernels/*.cu is exactly what the
// workload's generator prints for the manifest's trace.
func TestCompileCUDA(t *testing.T) {
	goldenDir, err := filepath.Abs(filepath.Join("testdata", "compile_cuda")) // before runCLI changes directory
	if err != nil {
		t.Fatal(err)
	}
	dir := isolate(t)
	ctx := context.Background()
	dev := testGPU()
	be, err := cudabench.NewSourceBackend(dev)
	if err != nil {
		t.Fatal(err)
	}
	byKey, tasks := tinyCUDAKernels(t)
	var tuned kernels.Kernel
	for _, task := range tasks {
		if strings.Join(task.Workload.Group, "+") == "llmir.linear" && task.Funcs[0] == "decode" {
			tuned = byKey[mustKey(t, task.Workload)]
			break
		}
	}
	if tuned == nil {
		t.Fatal("llama-tiny has no decode linear with a CUDA kernel")
	}
	hw := be.Hardware(1)
	def, err := search.DefaultSchedule(tuned, hw)
	if err != nil {
		t.Fatal(err)
	}
	defKey, _ := search.TraceKey(def)
	var trace json.RawMessage
	for seed := uint64(1); trace == nil; seed++ {
		s, err := search.SampleSchedule(tuned, hw, seed)
		if err != nil {
			t.Fatal(err)
		}
		if k, _ := search.TraceKey(s); string(k) != string(defKey) {
			trace = k
		}
	}
	wl := search.WorkloadOf(tuned, 1)
	db, err := tuningdb.Open(ctx, filepath.Join(dir, "cuda.db"), tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	_, err = db.RecordBatch(ctx, tuningdb.Batch{Devices: []tuningdb.Device{dev}, Workloads: []tuningdb.Workload{wl},
		Records: []tuningdb.Record{{WorkloadKey: wl.Key, DeviceHash: dev.Hash, CodegenVersion: cudakernels.CodegenVersion,
			Trace: trace, Status: tuningdb.StatusOK, Samples: []float64{2.1e-6, 2e-6, 2.2e-6}, CreatedAt: at}}})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	out, stderr, err := runCLI(t, dir, "compile", "--target", "cuda", "--preset", "llama-tiny", "--dtype", "bf16",
		"--db", "cuda.db", "--no-precompiled", "--gpu", "h100", "-o", "build")
	if err != nil {
		t.Fatalf("compile: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "records of NVIDIA H100 80GB HBM3 (sm_90, device "+dev.Hash[:12]) {
		t.Errorf("stderr does not name the GPU used:\n%s", stderr)
	}
	if !strings.Contains(out, "(1 from the user database, 0 precompiled,") {
		t.Errorf("table:\n%s", out)
	}
	for _, f := range []string{"manifest.json", "llmir_kernels.h"} {
		got, err := os.ReadFile(filepath.Join(dir, "build", f))
		if err != nil {
			t.Fatal(err)
		}
		golden := filepath.Join(goldenDir, f)
		if *updateCompileGolden {
			if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (go test ./cmd/llmir -run CompileCUDA -update-compile)", err)
		}
		if string(got) != string(want) {
			t.Errorf("%s differs from %s (go test ./cmd/llmir -run CompileCUDA -update-compile after checking the change)", f, golden)
		}
	}
	var man struct {
		Target  string `json:"target"`
		Device  string `json:"device"`
		Kernels []struct {
			search.CompiledKernel
			File string `json:"file"`
		} `json:"kernels"`
	}
	data, _ := os.ReadFile(filepath.Join(dir, "build", "manifest.json"))
	if err := json.Unmarshal(data, &man); err != nil {
		t.Fatal(err)
	}
	if man.Target != "cuda" || man.Device != dev.Hash || len(man.Kernels) == 0 {
		t.Fatalf("manifest target %q device %q, %d kernels", man.Target, man.Device, len(man.Kernels))
	}
	for _, mk := range man.Kernels {
		k, ok := byKey[mk.Workload]
		if !ok {
			t.Errorf("%s: workload %s is not one of the model's", mk.Name, mk.Workload)
			continue
		}
		wantFrom, wantLevel := search.FromDefault, "rule"
		if mk.Workload == wl.Key {
			wantFrom, wantLevel = tuningdb.LayerUser, tuningdb.LevelExact.String()
			var compact bytes.Buffer
			if err := json.Compact(&compact, mk.Trace); err != nil || compact.String() != string(trace) {
				t.Errorf("%s: trace %s, want the recorded %s", mk.Name, mk.Trace, trace)
			}
		}
		if mk.From != wantFrom || mk.Level != wantLevel {
			t.Errorf("%s: from %s (%s), want %s (%s)", mk.Name, mk.From, mk.Level, wantFrom, wantLevel)
		}
		if !strings.HasSuffix(mk.File, ".cu") {
			t.Errorf("%s: file %s", mk.Name, mk.File)
		}
		tr, err := schedule.ParseTrace(mk.Trace)
		if err != nil {
			t.Fatal(err)
		}
		d, err := k.Def()
		if err != nil {
			t.Fatal(err)
		}
		s, err := schedule.Replay(d, tr)
		if err != nil {
			t.Fatalf("%s: %v", mk.Name, err)
		}
		src, err := be.Source(k, s, hw, mk.Symbol)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "build", mk.File))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(got), src) || !strings.Contains(string(got), "int "+mk.Symbol+"(void *const *bufs") {
			t.Errorf("%s: %s is not the generator's source for its trace", mk.Name, mk.File)
		}
	}
}

func mustKey(t *testing.T, w ir.Workload) string {
	t.Helper()
	k, err := cudakernels.FromWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	return search.WorkloadOf(k, 1).Key
}

// TestCompileCUDAGPUChoice: --gpu picks a recorded GPU by arch, hash or
// name; an arch nobody recorded compiles defaults; anything else is an
// error naming what is recorded; and without any record compile asks for
// --gpu.
func TestCompileCUDAGPUChoice(t *testing.T) {
	dir := isolate(t)
	ctx := context.Background()
	dev := testGPU()
	db, err := tuningdb.Open(ctx, filepath.Join(dir, "one.db"), tuningdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	byKey, _ := tinyCUDAKernels(t)
	var wl tuningdb.Workload
	var trace json.RawMessage
	for _, k := range byKey {
		wl = search.WorkloadOf(k, 1)
		s, err := search.DefaultSchedule(k, cudakernels.Hardware(cuda.H100))
		if err != nil {
			t.Fatal(err)
		}
		trace, _ = search.TraceKey(s)
		break
	}
	if _, err := db.RecordBatch(ctx, tuningdb.Batch{Devices: []tuningdb.Device{dev}, Workloads: []tuningdb.Workload{wl},
		Records: []tuningdb.Record{{WorkloadKey: wl.Key, DeviceHash: dev.Hash, CodegenVersion: cudakernels.CodegenVersion,
			Trace: trace, Status: tuningdb.StatusOK, Samples: []float64{1e-6}, CreatedAt: time.Now()}}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, tc := range []struct {
		db, gpu string
		stderr  string // in stderr on success
		err     string // in the error
	}{
		{"one.db", "sm_90", "records of NVIDIA H100", ""},
		{"one.db", dev.Hash[:10], "device " + dev.Hash[:12], ""},
		{"one.db", "", "records of NVIDIA H100", ""},
		{"one.db", "sm_80", "no GPU of arch sm_80 recorded; rule-based defaults", ""},
		{"one.db", "A100", "", `--gpu "A100": no recorded GPU matches (recorded: NVIDIA H100 80GB HBM3 sm_90`},
		{"none.db", "", "", "no GPU recorded in the databases; give --gpu ARCH"},
		{"one.db", "sm_90/f32", "", "no workload has a CUDA kernel"},
	} {
		dtype := "bf16"
		if gpu, dt, ok := strings.Cut(tc.gpu, "/"); ok {
			tc.gpu, dtype = gpu, dt
		}
		_, stderr, err := runCLI(t, dir, "compile", "--target", "cuda", "--preset", "llama-tiny", "--dtype", dtype,
			"--db", tc.db, "--no-precompiled", "--gpu", tc.gpu, "-o", "out")
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("--gpu %q: err = %v, want %q", tc.gpu, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("--gpu %q: %v", tc.gpu, err)
		case tc.err == "" && !strings.Contains(stderr, tc.stderr):
			t.Errorf("--gpu %q: stderr lacks %q:\n%s", tc.gpu, tc.stderr, stderr)
		}
	}
}

// TestTuneCUDAWithoutGPU: on a machine without nvcc, tune --target cuda
// fails before measuring, saying what is missing and what still works.
func TestTuneCUDAWithoutGPU(t *testing.T) {
	if _, err := os.Stat("/usr/local/cuda/bin/nvcc"); err == nil {
		t.Skip("this machine has /usr/local/cuda/bin/nvcc")
	}
	dir := isolate(t)
	t.Setenv("PATH", t.TempDir()) // no nvcc, no nvidia-smi
	_, _, err := runCLI(t, dir, "tune", "--target", "cuda", "--preset", "llama-tiny", "--dtype", "bf16", "--trials", "4", "--db", "t.db")
	if err == nil || !strings.Contains(err.Error(), "no CUDA toolchain or GPU") || !strings.Contains(err.Error(), "nvcc") ||
		!strings.Contains(err.Error(), "llmir compile --target cuda") {
		t.Errorf("err = %v, want the missing toolchain named and compile suggested", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "t.db")); err == nil {
		t.Error("the database was created although nothing could be tuned")
	}
}
