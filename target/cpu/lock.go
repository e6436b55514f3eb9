package cpu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The protocol says: measure one candidate at a time per device, and never
// build while measuring. Every Target, in this process or another one on
// the machine (two tuners, or test binaries of several packages), shares
// one CPU, so the rule is enforced with an flock on a machine-wide file.
// Each acquisition opens its own descriptor, and flocks of two descriptions
// conflict even within one process, so the same lock orders goroutines too.
// Builds take it shared (they may overlap each other); a measurement or a
// roofline probe takes it exclusive. The reference outputs are computed
// under the exclusive lock too: they are CPU work that would otherwise run
// beside another batch's timed calls.

// DeviceLockPath is the machine-wide lock file.
func DeviceLockPath() string { return filepath.Join(os.TempDir(), "llmir-cpu-device.lock") }

// lockDevice waits (cancellably) for the device and returns the release.
func lockDevice(ctx context.Context, exclusive bool) (func(), error) {
	f, err := os.OpenFile(DeviceLockPath(), os.O_CREATE|os.O_RDONLY, 0o666) // flock needs no write access
	if err != nil {
		return nil, fmt.Errorf("device lock: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	// flock has no timeout: poll without blocking so that a cancelled
	// context stops the wait.
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("device lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("device lock: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return func() {
		f.Close() // closing the descriptor releases the flock
	}, nil
}
