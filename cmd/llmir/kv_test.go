package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// kvRows returns the block-size column of the table rows.
func kvRows(out string) []string {
	var sizes []string
	for _, m := range regexp.MustCompile(`(?m)^\s+(\d+)\s+\d+\s+\d+\.\d+`).FindAllStringSubmatch(out, -1) {
		sizes = append(sizes, m[1])
	}
	return sizes
}

func TestKVSimulateTable(t *testing.T) {
	dir := isolate(t)
	out, _, err := runCLI(t, dir, "kv", "simulate", "--requests", "300")
	if err != nil {
		t.Fatal(err)
	}
	if got := kvRows(out); !slices.Equal(got, []string{"8", "16", "32", "64", "128", "256"}) {
		t.Fatalf("rows for block sizes %v:\n%s", got, out)
	}
	for _, want := range []string{"workload chat (seed 1), 300 requests", "65536 tokens of KV memory at every block size",
		"waste %", "preempt", "prefix hit %", "goal: waste < 4% of used memory on chat at block size 16:", "met"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestKVSimulateJSONAndTraceFiles(t *testing.T) {
	dir := isolate(t)
	out, _, err := runCLI(t, dir, "kv", "simulate", "--workload", "shared-prefix", "--requests", "120",
		"--block-size", "16,64", "--pool-tokens", "32768", "--json", "--save-trace", "saved.csv")
	if err != nil {
		t.Fatal(err)
	}
	var rep kvSimReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(rep.Results) != 2 || rep.Results[0].BlockSize != 16 || rep.Results[1].BlockSize != 64 ||
		rep.Results[0].PoolBlocks != 2048 || rep.Results[1].PoolBlocks != 512 || rep.Requests != 120 || rep.Goal != nil {
		t.Fatalf("report %+v", rep)
	}
	if rep.Results[0].PrefixHitPct < 50 {
		t.Errorf("shared-prefix workload hit only %.1f%% of prompt tokens", rep.Results[0].PrefixHitPct)
	}
	// Replaying the saved trace gives the same numbers.
	out2, _, err := runCLI(t, dir, "kv", "simulate", "--trace", "saved.csv", "--block-size", "16,64", "--pool-tokens", "32768", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep2 kvSimReport
	if err := json.Unmarshal([]byte(out2), &rep2); err != nil {
		t.Fatal(err)
	}
	if rep.Seed == nil || *rep.Seed != 1 || rep2.Seed != nil || rep2.Workload != "" {
		t.Errorf("seed %v for the workload, %v and workload %q for the trace", rep.Seed, rep2.Seed, rep2.Workload)
	}
	if !slices.Equal(rep.Results, rep2.Results) || rep2.Trace != "saved.csv" {
		t.Fatalf("replay of the saved trace differs:\n%+v\n%+v", rep.Results, rep2.Results)
	}

	// A JSON Lines trace, fixed block count.
	jl := `{"arrival": 0, "prompt_len": 30, "output_len": 5}
{"arrival": 1, "prompt_len": 30, "output_len": 5, "prefix_group": 1, "prefix_len": 20}
`
	if err := os.WriteFile(filepath.Join(dir, "t.jsonl"), []byte(jl), 0o644); err != nil {
		t.Fatal(err)
	}
	out3, _, err := runCLI(t, dir, "kv", "simulate", "--trace", "t.jsonl", "--block-size", "4,8", "--pool-blocks", "64")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out3, "64 blocks at every block size") || !slices.Equal(kvRows(out3), []string{"4", "8"}) {
		t.Fatalf("output:\n%s", out3)
	}
}

func TestKVSimulateConfigFromEnv(t *testing.T) {
	dir := isolate(t)
	t.Setenv("LLMIR_BLOCK_SIZE", "32,128")
	out, _, err := runCLI(t, dir, "kv", "simulate", "--requests", "50")
	if err != nil {
		t.Fatal(err)
	}
	if got := kvRows(out); !slices.Equal(got, []string{"32", "128"}) {
		t.Fatalf("LLMIR_BLOCK_SIZE=32,128 gave rows %v", got)
	}
	if strings.Contains(out, "goal:") {
		t.Errorf("goal printed without block size 16:\n%s", out)
	}
}

func TestKVSimulateErrors(t *testing.T) {
	dir := isolate(t)
	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(bad, []byte("arrival,prompt_len,output_len\n0,10,5\n3,x,5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--block-size", "0,16"}, []string{"--block-size", "0"}},
		{[]string{"--block-size", "16,abc"}, []string{"block-size"}},
		{[]string{"--trace", bad, "--workload", "chat"}, []string{"--trace and --workload"}},
		{[]string{"--pool-tokens", "100", "--pool-blocks", "10"}, []string{"--pool-tokens and --pool-blocks"}},
		{[]string{"--pool-tokens", "100"}, []string{"--pool-tokens", "256"}},
		{[]string{"--pool-blocks", "-3"}, []string{"--pool-blocks"}},
		{[]string{"--workload", "sharegpt"}, []string{"--workload", `"sharegpt"`, "chat, long, shared-prefix"}},
		{[]string{"--trace", bad}, []string{bad, "line 3", "prompt_len", `"x"`}},
		{[]string{"--trace", filepath.Join(dir, "none.csv")}, []string{"none.csv"}},
		{[]string{"--watermark", "1.5"}, []string{"--watermark"}},
		{[]string{"--requests", "0"}, []string{"--requests"}},
		{[]string{"--max-seqs", "0"}, []string{"--max-seqs"}},
		{[]string{"extra"}, []string{"unknown command"}},
		{[]string{"--save-trace", filepath.Join(dir, "no-such-dir", "t.csv")}, []string{"--save-trace"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, err := runCLI(t, dir, append([]string{"kv", "simulate"}, tc.args...)...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
