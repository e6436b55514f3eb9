package sim

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Request is one line of a trace.
type Request struct {
	// ID seeds the request's token ids, so a preempted request finds its own
	// earlier blocks in the prefix cache. Unique within a trace.
	ID int `json:"id"`
	// Arrival is the decode step at which the request arrives (≥ 0).
	Arrival int `json:"arrival"`
	// PromptLen and OutputLen count tokens (≥ 1).
	PromptLen int `json:"prompt_len"`
	OutputLen int `json:"output_len"`
	// PrefixGroup > 0 makes the first PrefixLen prompt tokens the same for
	// every request of the group (a shared system prompt); 0 is no group.
	PrefixGroup int `json:"prefix_group,omitempty"`
	PrefixLen   int `json:"prefix_len,omitempty"`
}

// ErrBadTrace marks every problem found in a trace's content.
var ErrBadTrace = errors.New("bad trace")

// Validate checks one request's fields and names the first bad one.
func (r Request) Validate() error {
	switch {
	case r.Arrival < 0:
		return fmt.Errorf("field arrival: %d is negative", r.Arrival)
	case r.PromptLen < 1:
		return fmt.Errorf("field prompt_len: %d, want ≥ 1", r.PromptLen)
	case r.OutputLen < 1:
		return fmt.Errorf("field output_len: %d, want ≥ 1", r.OutputLen)
	case r.PrefixGroup < 0:
		return fmt.Errorf("field prefix_group: %d is negative", r.PrefixGroup)
	case r.PrefixLen < 0 || r.PrefixLen > r.PromptLen:
		return fmt.Errorf("field prefix_len: %d, want 0…prompt_len (%d)", r.PrefixLen, r.PromptLen)
	case r.PrefixLen > 0 && r.PrefixGroup == 0:
		return fmt.Errorf("field prefix_len: %d tokens of prefix without a prefix_group", r.PrefixLen)
	}
	return nil
}

// The CSV columns, in the order WriteCSV writes them. ReadCSV takes them
// in any order; id, prefix_group and prefix_len are optional.
var csvColumns = []string{"id", "arrival", "prompt_len", "output_len", "prefix_group", "prefix_len"}

// ReadTraceFile reads a trace from a .csv file or a .jsonl/.ndjson file
// (JSON Lines); other names are read as JSON Lines when the first
// non-blank byte is '{' and as CSV otherwise.
func ReadTraceFile(path string) ([]Request, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	var reqs []Request
	switch ext := strings.ToLower(filepath.Ext(path)); {
	case ext == ".csv":
		reqs, err = ReadCSV(bytes.NewReader(data))
	case ext == ".jsonl" || ext == ".ndjson":
		reqs, err = ReadJSONL(bytes.NewReader(data))
	case bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("{")):
		reqs, err = ReadJSONL(bytes.NewReader(data))
	default:
		reqs, err = ReadCSV(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return reqs, nil
}

// ReadCSV reads a trace with a header row. Lines starting with '#' are
// comments. A missing id is the request's index in the file.
func ReadCSV(r io.Reader) ([]Request, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: empty file, want a header row (%s)", ErrBadTrace, strings.Join(csvColumns, ","))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadTrace, err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		if !slices.Contains(csvColumns, h) {
			line, _ := cr.FieldPos(i)
			return nil, fmt.Errorf("%w: line %d: unknown column %q (want %s)", ErrBadTrace, line, h, strings.Join(csvColumns, ", "))
		}
		if _, dup := col[h]; dup {
			line, _ := cr.FieldPos(i)
			return nil, fmt.Errorf("%w: line %d: column %q twice", ErrBadTrace, line, h)
		}
		col[h] = i
	}
	for _, need := range []string{"arrival", "prompt_len", "output_len"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("%w: header has no %q column", ErrBadTrace, need)
		}
	}
	var reqs []Request
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadTrace, err)
		}
		line, _ := cr.FieldPos(0)
		req := Request{ID: len(reqs)}
		fields := []struct {
			name string
			dst  *int
		}{
			{"id", &req.ID}, {"arrival", &req.Arrival}, {"prompt_len", &req.PromptLen},
			{"output_len", &req.OutputLen}, {"prefix_group", &req.PrefixGroup}, {"prefix_len", &req.PrefixLen},
		}
		for _, f := range fields {
			i, ok := col[f.name]
			if !ok {
				continue
			}
			v, err := strconv.Atoi(strings.TrimSpace(rec[i]))
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: field %s: %q is not an integer", ErrBadTrace, line, f.name, rec[i])
			}
			*f.dst = v
		}
		if err := req.Validate(); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadTrace, line, err)
		}
		reqs = append(reqs, req)
	}
	return reqs, checkTrace(reqs)
}

// jsonRequest has pointers so that a missing required field is an error
// rather than a zero.
type jsonRequest struct {
	ID          *int `json:"id"`
	Arrival     *int `json:"arrival"`
	PromptLen   *int `json:"prompt_len"`
	OutputLen   *int `json:"output_len"`
	PrefixGroup int  `json:"prefix_group"`
	PrefixLen   int  `json:"prefix_len"`
}

// ReadJSONL reads one JSON object per line; blank lines are skipped.
func ReadJSONL(r io.Reader) ([]Request, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var reqs []Request
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.DisallowUnknownFields()
		var j jsonRequest
		if err := dec.Decode(&j); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadTrace, line, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("%w: line %d: more than one JSON value", ErrBadTrace, line)
		}
		req := Request{ID: len(reqs), PrefixGroup: j.PrefixGroup, PrefixLen: j.PrefixLen}
		for _, f := range []struct {
			name string
			src  *int
			dst  *int
		}{{"arrival", j.Arrival, &req.Arrival}, {"prompt_len", j.PromptLen, &req.PromptLen}, {"output_len", j.OutputLen, &req.OutputLen}} {
			if f.src == nil {
				return nil, fmt.Errorf("%w: line %d: field %s is missing", ErrBadTrace, line, f.name)
			}
			*f.dst = *f.src
		}
		if j.ID != nil {
			req.ID = *j.ID
		}
		if err := req.Validate(); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadTrace, line, err)
		}
		reqs = append(reqs, req)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadTrace, err)
	}
	return reqs, checkTrace(reqs)
}

// checkTrace checks what no single line can: that the trace is not empty
// and ids are unique.
func checkTrace(reqs []Request) error {
	if len(reqs) == 0 {
		return fmt.Errorf("%w: no requests", ErrBadTrace)
	}
	seen := make(map[int]int, len(reqs))
	for i, r := range reqs {
		if j, dup := seen[r.ID]; dup {
			return fmt.Errorf("%w: requests %d and %d both have id %d", ErrBadTrace, j+1, i+1, r.ID)
		}
		seen[r.ID] = i
	}
	return nil
}

// WriteCSV writes a trace that ReadCSV reads back unchanged.
func WriteCSV(w io.Writer, reqs []Request) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvColumns); err != nil {
		return err
	}
	for _, r := range reqs {
		rec := []string{strconv.Itoa(r.ID), strconv.Itoa(r.Arrival), strconv.Itoa(r.PromptLen),
			strconv.Itoa(r.OutputLen), strconv.Itoa(r.PrefixGroup), strconv.Itoa(r.PrefixLen)}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
