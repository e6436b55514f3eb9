// Package buildinfo says which llmir this binary is: its version and the
// VCS revision it was built from, read once from the Go build information.
// Measurements and benchmark results carry both, so a result can always be
// traced to the code that produced it.
package buildinfo

import (
	"runtime/debug"
	"sync"
)

// version is set at link time (-ldflags "-X llmir/internal/buildinfo.version=…").
var version = ""

// Commit is the VCS revision this binary was built from ("" when the build
// recorded none, as under go test or -buildvcs=false), with "-dirty"
// appended when the tree had uncommitted changes.
func Commit() string { return commit() }

var commit = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
})

// Version is the link-time version, else 0.1.0+<short revision>, else
// 0.1.0-dev.
func Version() string {
	if version != "" {
		return version
	}
	if c := Commit(); c != "" {
		short, dirty := c, ""
		if len(c) > 6 && c[len(c)-6:] == "-dirty" {
			short, dirty = c[:len(c)-6], "-dirty"
		}
		if len(short) > 12 {
			short = short[:12]
		}
		return "0.1.0+" + short + dirty
	}
	return "0.1.0-dev"
}
