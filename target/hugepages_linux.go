package target

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// makeFloat64s is make([]float64, n), asking the kernel to back a large
// slice with transparent huge pages before anything touches it: first
// touching a 128256×4096 table's 4 GiB of float64 4 KiB at a time cost
// most of the time it took to make its problem on a virtual machine.
// The advice is a hint; if the kernel refuses it nothing changes.
func makeFloat64s(n int64) []float64 {
	v := make([]float64, n)
	if n*8 >= hugePageMin {
		const huge = 2 << 20
		b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), n*8)
		off := int64((huge - uintptr(unsafe.Pointer(&b[0]))%huge) % huge)
		if whole := (n*8 - off) / huge * huge; whole > 0 {
			_ = unix.Madvise(b[off:off+whole], unix.MADV_HUGEPAGE)
		}
	}
	return v
}
