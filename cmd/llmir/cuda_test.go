package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func runCuda(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--db", t.TempDir() + "/t.db"}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestCudaEmit(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
		err  string
	}{
		{[]string{"cuda", "emit", "gemv:M=1,N=4096,K=4096"}, "int llmir_kernel(void *const *bufs, const int64_t *dims)", ""},
		{[]string{"cuda", "emit", "gemv:M=16,N=4096,K=4096"}, "mma.sync.aligned.m16n8k16", ""},
		{[]string{"cuda", "emit", "paged_attention:B=32,QH=32,KVH=8,D=128,BS=16,ctx=4096", "--seed", "3"}, "__shfl_xor_sync", ""},
		{[]string{"cuda", "emit", "rms_norm:M=1,H=4096", "--trace"}, `"op":"sample_categorical"`, ""},
		{[]string{"cuda", "emit", "gemm:M=512,N=4096,K=4096"}, "wgmma.mma_async", ""},
		{[]string{"cuda", "emit", "gemm:M=512,N=4096,K=4096"}, "cp.async.bulk.tensor", ""},
		{[]string{"cuda", "emit", "gemm:M=64,N=4096,K=4096"}, "cp.async.cg.shared.global", ""},
		{[]string{"cuda", "emit", "gemv:M=1,N=4096"}, "", "missing field K"},
		{[]string{"cuda", "emit", "silu_mul:M=1,I=8", "--sms", "0"}, "", "--sms 0"},
		{[]string{"cuda", "emit"}, "", "accepts 1 arg"},
	} {
		out, err := runCuda(t, tc.args...)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err = %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || !strings.Contains(out, tc.want) {
			t.Errorf("%v: err %v, output lacks %q", tc.args, err, tc.want)
		}
	}
}

func TestCudaNeedsNVCC(t *testing.T) {
	if _, err := exec.LookPath("nvcc"); err == nil {
		t.Skip("nvcc present: the GPU commands are exercised by scripts/gpu-check.sh")
	}
	for _, args := range [][]string{{"cuda", "fingerprint"}, {"cuda", "check"}, {"cuda", "bench", "--probe-mib", "0"}} {
		_, err := runCuda(t, append(args, "--nvcc", "/nonexistent/nvcc")...)
		if err == nil || !strings.Contains(err.Error(), "no CUDA toolchain") {
			t.Errorf("%v: err = %v, want the missing toolchain named", args, err)
		}
	}
	// Flags are checked before the toolchain is looked for.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cuda", "check", "--match", "("}, "--match"},
		{[]string{"cuda", "bench", "--match", "no-such-kernel"}, "no kernel of the suite matches"},
		{[]string{"cuda", "bench", "--samples", "-1"}, "must not be negative"},
		{[]string{"cuda", "bench", "--sdpa", "/nonexistent.json"}, "--sdpa"},
		{[]string{"cuda", "bench", "--probe-mib", "-5"}, "--probe-mib -5"},
		{[]string{"cuda", "bench", "--suite", "training"}, "--suite \"training\""},
		{[]string{"cuda", "bench", "--suite", "prefill", "--match", "M=1,"}, "no kernel of the suite matches"},
		{[]string{"cuda", "bench", "--knobs", "bm=128"}, `--knobs: knob point 1: no kernel of the suite has a knob "bm"`},
		{[]string{"cuda", "bench", "--suite", "prefill", "--knobs", "wg_m=128;wg_n=96"}, "knob point 2: wg_n=96 is not in the domain"},
		{[]string{"cuda", "bench", "--knobs", "warps"}, `"warps" is not name=value`},
	} {
		if _, err := runCuda(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}
