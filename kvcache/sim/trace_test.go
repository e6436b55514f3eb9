package sim

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var smallTrace = []Request{
	{ID: 1, Arrival: 0, PromptLen: 12, OutputLen: 20},
	{ID: 2, Arrival: 0, PromptLen: 30, OutputLen: 8},
	{ID: 3, Arrival: 2, PromptLen: 45, OutputLen: 10, PrefixGroup: 1, PrefixLen: 40},
	{ID: 4, Arrival: 3, PromptLen: 41, OutputLen: 6, PrefixGroup: 1, PrefixLen: 40},
	{ID: 5, Arrival: 9, PromptLen: 60, OutputLen: 12, PrefixGroup: 1, PrefixLen: 40},
}

func TestReadTraceFiles(t *testing.T) {
	dir := t.TempDir()
	jsonl, err := os.ReadFile("../testdata/traces/small.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	csvData, err := os.ReadFile("../testdata/traces/small.csv")
	if err != nil {
		t.Fatal(err)
	}
	// Files without a known extension are sniffed.
	for name, data := range map[string][]byte{"sniffed-jsonl.txt": jsonl, "sniffed-csv.txt": csvData} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range []string{
		"../testdata/traces/small.csv", "../testdata/traces/small.jsonl",
		filepath.Join(dir, "sniffed-jsonl.txt"), filepath.Join(dir, "sniffed-csv.txt"),
	} {
		got, err := ReadTraceFile(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !slices.Equal(got, smallTrace) {
			t.Errorf("%s:\n got %+v\nwant %+v", path, got, smallTrace)
		}
	}
	if _, err := ReadTraceFile(filepath.Join(dir, "missing.csv")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestCSVRoundTrip(t *testing.T) {
	for _, w := range Workloads() {
		trace := w.Generate(300, 5)
		var buf bytes.Buffer
		if err := WriteCSV(&buf, trace); err != nil {
			t.Fatal(err)
		}
		got, err := ReadCSV(&buf)
		if err != nil {
			t.Fatalf("%s: %v", w.Name, err)
		}
		if !slices.Equal(got, trace) {
			t.Fatalf("%s: CSV round trip changed the trace", w.Name)
		}
	}
}

func TestTraceErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		name, format, in string
		want             []string // substrings of the error
	}{
		{"empty csv", "csv", "", []string{"empty file"}},
		{"unknown column", "csv", "arrival,prompt_len,output_len,temperature\n", []string{"line 1", `"temperature"`}},
		{"duplicate column", "csv", "arrival,prompt_len,output_len,arrival\n", []string{"line 1", `"arrival" twice`}},
		{"missing column", "csv", "arrival,prompt_len\n1,2\n", []string{`no "output_len"`}},
		{"not a number", "csv", "arrival,prompt_len,output_len\n0,10,5\n1,ten,5\n", []string{"line 3", "prompt_len", `"ten"`}},
		{"zero output", "csv", "# comment\narrival,prompt_len,output_len\n0,10,0\n", []string{"line 3", "output_len"}},
		{"prefix longer than prompt", "csv", "arrival,prompt_len,output_len,prefix_group,prefix_len\n0,10,5,1,11\n", []string{"line 2", "prefix_len"}},
		{"prefix without group", "csv", "arrival,prompt_len,output_len,prefix_len\n0,10,5,4\n", []string{"line 2", "prefix_group"}},
		{"negative arrival", "csv", "arrival,prompt_len,output_len\n-1,10,5\n", []string{"line 2", "arrival"}},
		{"duplicate id", "csv", "id,arrival,prompt_len,output_len\n7,0,10,5\n7,1,10,5\n", []string{"id 7"}},
		{"header only", "csv", "arrival,prompt_len,output_len\n", []string{"no requests"}},
		{"wrong field count", "csv", "arrival,prompt_len,output_len\n0,10\n", []string{"line 2"}},
		{"unknown field", "jsonl", `{"arrival":0,"prompt_len":3,"output_len":2,"temp":1}`, []string{"line 1", `"temp"`}},
		{"missing field", "jsonl", "\n" + `{"arrival":0,"prompt_len":3}`, []string{"line 2", "output_len is missing"}},
		{"bad json", "jsonl", `{"arrival":0,"prompt_len":3,"output_len":2}` + "\n{oops\n", []string{"line 2"}},
		{"two values", "jsonl", `{"arrival":0,"prompt_len":3,"output_len":2} {}`, []string{"line 1", "more than one"}},
		{"string length", "jsonl", `{"arrival":0,"prompt_len":"3","output_len":2}`, []string{"line 1", "prompt_len"}},
		{"empty jsonl", "jsonl", "\n\n", []string{"no requests"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			read := ReadCSV
			if tc.format == "jsonl" {
				read = ReadJSONL
			}
			_, err := read(strings.NewReader(tc.in))
			if !errors.Is(err, ErrBadTrace) {
				t.Fatalf("error %v, want ErrBadTrace", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
