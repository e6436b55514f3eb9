package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	// ErrTimeout is a child that did not answer within the limit (it is
	// killed).
	ErrTimeout = errors.New("timeout")
	// ErrExited is a child that ended while a reply was awaited.
	ErrExited = errors.New("harness exited")
)

// Proc is one running harness and its reply stream.
type Proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *tailBuffer
	exited chan struct{}
	grace  time.Duration
	key    string // environment it was started with
	loads  int    // candidates it has loaded
}

// Start runs exe on the job file with env (nil: the parent's) and waits
// for its "ready" line. grace is how long Close waits for a clean exit.
func Start(ctx context.Context, exe, job string, env []string, timeout, grace time.Duration) (*Proc, error) {
	cmd := exec.CommandContext(ctx, exe, job)
	cmd.Env = env
	cmd.WaitDelay = 2 * time.Second
	h := &Proc{cmd: cmd, lines: make(chan string, 4), stderr: &tailBuffer{max: 4 << 10}, exited: make(chan struct{}), grace: grace}
	if h.grace <= 0 {
		h.grace = 2 * time.Second
	}
	cmd.Stderr = h.stderr
	var err error
	if h.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start harness: %w", err)
	}
	go func() {
		rd := bufio.NewReaderSize(stdout, 1<<16)
		for {
			s, err := rd.ReadString('\n')
			if err != nil {
				break
			}
			h.lines <- strings.TrimSuffix(s, "\n")
		}
		close(h.lines)
		cmd.Wait()
		close(h.exited)
	}()
	line, err := h.Expect(ctx, timeout)
	if err != nil {
		h.Kill()
		return nil, fmt.Errorf("harness setup: %w", err)
	}
	if line != "ready" {
		h.Kill()
		return nil, fmt.Errorf("harness setup: unexpected reply %q", line)
	}
	return h, nil
}

// Call sends one command and waits for its reply line.
func (h *Proc) Call(ctx context.Context, cmd string, timeout time.Duration) (string, error) {
	io.WriteString(h.stdin, cmd+"\n") // a dead harness is reported by Expect
	return h.Expect(ctx, timeout)
}

// Expect waits for the next reply line; on a timeout or a cancelled
// context the child is killed.
func (h *Proc) Expect(ctx context.Context, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-h.lines:
		if ok {
			return line, nil
		}
		<-h.exited
		return "", fmt.Errorf("%w: %s%s", ErrExited, exitReason(h.cmd.ProcessState), h.stderr.tail())
	case <-t.C:
		h.Kill()
		return "", fmt.Errorf("%w: no reply within %v", ErrTimeout, timeout)
	case <-ctx.Done():
		h.Kill()
		return "", ctx.Err()
	}
}

func exitReason(ps *os.ProcessState) string {
	if ps == nil {
		return "unknown exit"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("killed by signal %s (%s)", unix.SignalName(ws.Signal()), ws.Signal())
	}
	return fmt.Sprintf("exited with status %d", ps.ExitCode())
}

// Kill ends the child; draining the reply stream lets the reader
// goroutine reach EOF and reap the process.
func (h *Proc) Kill() {
	if h.cmd.Process != nil {
		h.cmd.Process.Kill()
	}
	for range h.lines {
	}
	<-h.exited
}

// Close asks the child to quit, and kills it if it does not within the
// grace period (a GPU child may need seconds to tear its context down).
func (h *Proc) Close() {
	io.WriteString(h.stdin, "quit\n")
	h.stdin.Close()
	drained := make(chan struct{})
	go func() {
		for range h.lines {
		}
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(h.grace):
		h.cmd.Process.Kill()
		<-drained
	}
	<-h.exited
}

// tailBuffer keeps the last max bytes written (the child's stderr, which
// also receives whatever candidates print).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) tail() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(bytes.TrimSpace(t.buf))
	if s == "" {
		return ""
	}
	return "; stderr: " + s
}
