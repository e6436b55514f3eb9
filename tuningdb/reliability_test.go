package tuningdb

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The reliability tests re-execute this test binary as writer processes:
// TestHelperProcess does the writing when helperEnv is set.
const (
	helperEnv     = "LLMIR_TUNINGDB_HELPER"
	helperPathEnv = "LLMIR_TUNINGDB_HELPER_DB"
	helperArgsEnv = "LLMIR_TUNINGDB_HELPER_ARGS" // writer id, batches (0 = until killed), batch size
)

var (
	helperDevice   = testDevice("helper", KindCPU, "x86_64/avx2+fma")
	helperWorkload = testWorkload("helper", 64)
)

// TestHelperProcess is not a test: it is the writer child of the tests below.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	if err := helperWrite(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func helperWrite() error {
	var writer, batches, size int
	if _, err := fmt.Sscan(os.Getenv(helperArgsEnv), &writer, &batches, &size); err != nil {
		return fmt.Errorf("args %q: %w", os.Getenv(helperArgsEnv), err)
	}
	ctx := context.Background()
	// A short busy timeout makes lock contention surface as SQLITE_BUSY,
	// so these tests exercise the retry path and not only SQLite's wait.
	db, err := Open(ctx, os.Getenv(helperPathEnv), Options{BusyTimeout: 10 * time.Millisecond})
	if err != nil {
		return err
	}
	defer db.Close()
	out := bufio.NewWriter(os.Stdout)
	for b := 0; batches == 0 || b < batches; b++ {
		recs := make([]Record, size)
		for i := range recs {
			r := testRecord(helperWorkload, helperDevice, 1, 1e-3*float64(1+i), StatusOK, t0.Add(time.Duration(i)*time.Microsecond))
			r.Trace = []byte(fmt.Sprintf(`{"writer":%d,"batch":%d,"i":%d}`, writer, b, i))
			recs[i] = r
		}
		fmt.Fprintf(out, "start %d\n", b)
		out.Flush()
		res, err := db.RecordBatch(ctx, Batch{Devices: []Device{helperDevice}, Workloads: []Workload{helperWorkload}, Records: recs})
		if err != nil {
			return fmt.Errorf("writer %d batch %d: %w", writer, b, err)
		}
		if res.Inserted != size {
			return fmt.Errorf("writer %d batch %d: inserted %d of %d", writer, b, res.Inserted, size)
		}
		fmt.Fprintf(out, "committed %d\n", b)
		out.Flush()
	}
	return nil
}

func helperCmd(ctx context.Context, path string, writer, batches, size int) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperPathEnv+"="+path,
		fmt.Sprintf("%s=%d %d %d", helperArgsEnv, writer, batches, size))
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// batchCounts counts stored records per (writer, batch).
func batchCounts(t *testing.T, db *DB) map[[2]int]int {
	t.Helper()
	counts := map[[2]int]int{}
	rows, err := db.sql.Query(`SELECT json_extract(trace, '$.writer'), json_extract(trace, '$.batch'), count(*)
		FROM records GROUP BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var w, b, n int
		if err := rows.Scan(&w, &b, &n); err != nil {
			t.Fatal(err)
		}
		counts[[2]int{w, b}] = n
	}
	return counts
}

func TestConcurrentProcesses(t *testing.T) {
	const writers, batches, size = 4, 12, 40
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	// All writers start on a file that does not exist yet, so they also
	// race to create and migrate it.
	path := filepath.Join(t.TempDir(), "shared", "tuning.db")
	cmds := make([]*exec.Cmd, writers)
	outs := make([]*bytes.Buffer, writers)
	for i := range cmds {
		cmds[i] = helperCmd(ctx, path, i, batches, size)
		outs[i] = new(bytes.Buffer)
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("writer %d: %v\n%s", i, err, outs[i])
		}
		if strings.Contains(outs[i].String(), "locked") {
			t.Errorf("writer %d saw a lock error:\n%s", i, outs[i])
		}
	}
	db, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rep, err := db.Verify(ctx)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	if n := countRecords(t, db); n != writers*batches*size {
		t.Errorf("%d records, want %d", n, writers*batches*size)
	}
	counts := batchCounts(t, db)
	for w := range writers {
		for b := range batches {
			if counts[[2]int{w, b}] != size {
				t.Errorf("writer %d batch %d: %d records, want %d", w, b, counts[[2]int{w, b}], size)
			}
		}
	}
}

func TestKilledWriterKeepsCommittedBatches(t *testing.T) {
	// A batch of this size takes tens of milliseconds to write, so a kill
	// a few milliseconds after "start" lands inside its transaction.
	const size, killAfter = 3000, 4
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "tuning.db")
	cmd := helperCmd(ctx, path, 0, 0, size)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	committed := -1
	for sc.Scan() {
		var b int
		if _, err := fmt.Sscanf(sc.Text(), "committed %d", &b); err == nil {
			committed = b
		} else if _, err := fmt.Sscanf(sc.Text(), "start %d", &b); err != nil {
			t.Fatalf("writer said %q", sc.Text())
		} else if b == killAfter {
			break
		}
	}
	time.Sleep(5 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("writer was not killed (%v): %s", err, stderr.String())
	}
	if committed != killAfter-1 {
		t.Fatalf("writer committed batches up to %d, want up to %d: %s", committed, killAfter-1, stderr.String())
	}
	db, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rep, err := db.Verify(ctx)
	if err != nil || !rep.OK() {
		t.Fatalf("verify after SIGKILL: %+v, %v", rep, err)
	}
	counts := batchCounts(t, db)
	for b := 0; b <= committed; b++ {
		if counts[[2]int{0, b}] != size {
			t.Errorf("reported batch %d holds %d records, want %d", b, counts[[2]int{0, b}], size)
		}
	}
	for k, n := range counts {
		if n != size {
			t.Errorf("batch %d is partial: %d of %d records", k[1], n, size)
		}
	}
	// The database takes writes again.
	if _, err := db.RecordBatch(ctx, Batch{Records: []Record{testRecord(helperWorkload, helperDevice, 1, 1, StatusOK, t0.Add(time.Hour))}}); err != nil {
		t.Errorf("write after recovery: %v", err)
	}
}
