package target

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// Round returns x rounded to the nearest value representable in d (ties to
// even), as the kernel would see it after storage.
func Round(d DType, x float64) float64 {
	switch d {
	case BF16:
		return float64(bf16ToF32(f32ToBF16(float32(x))))
	case F16:
		return float64(f16ToF32(f32ToF16(float32(x))))
	case I32:
		return clampRound(x, math.MinInt32, math.MaxInt32)
	case I8:
		return clampRound(x, -128, 127)
	case U8:
		return clampRound(x, 0, 255)
	}
	return float64(float32(x))
}

// clampRound rounds to the nearest integer (ties to even) within [lo, hi].
func clampRound(x, lo, hi float64) float64 {
	if x != x {
		return 0
	}
	return math.Min(math.Max(math.RoundToEven(x), lo), hi)
}

// Encode writes v in d's little-endian storage format.
func Encode(d DType, v []float64) []byte {
	return AppendEncode(make([]byte, 0, len(v)*d.Size()), d, v)
}

// AppendEncode appends v in d's storage format to dst: a caller encoding
// gigabytes a chunk at a time reuses one buffer instead of faulting in a
// fresh one per chunk.
func AppendEncode(dst []byte, d DType, v []float64) []byte {
	start := len(dst)
	dst = slices.Grow(dst, len(v)*d.Size())[:start+len(v)*d.Size()]
	out := dst[start:]
	switch d {
	case F32:
		for i, x := range v {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(float32(x)))
		}
	case BF16:
		for i, x := range v {
			binary.LittleEndian.PutUint16(out[2*i:], f32ToBF16(float32(x)))
		}
	case F16:
		for i, x := range v {
			binary.LittleEndian.PutUint16(out[2*i:], f32ToF16(float32(x)))
		}
	case I32:
		for i, x := range v {
			binary.LittleEndian.PutUint32(out[4*i:], uint32(int32(Round(I32, x))))
		}
	case I8:
		for i, x := range v {
			out[i] = byte(int8(Round(I8, x)))
		}
	case U8:
		for i, x := range v {
			out[i] = byte(Round(U8, x))
		}
	}
	return dst
}

// Decode reads d's little-endian storage format.
func Decode(d DType, b []byte) ([]float64, error) {
	sz := d.Size()
	if sz == 0 || len(b)%sz != 0 {
		return nil, fmt.Errorf("decode %s: %d bytes", d, len(b))
	}
	out := make([]float64, len(b)/sz)
	for i := range out {
		switch d {
		case F32:
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		case BF16:
			out[i] = float64(bf16ToF32(binary.LittleEndian.Uint16(b[2*i:])))
		case F16:
			out[i] = float64(f16ToF32(binary.LittleEndian.Uint16(b[2*i:])))
		case I32:
			out[i] = float64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		case I8:
			out[i] = float64(int8(b[i]))
		case U8:
			out[i] = float64(b[i])
		}
	}
	return out, nil
}

func f32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if f != f { // keep NaN a NaN (rounding could carry it into Inf)
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

func f32ToF16(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	exp := int32(u>>23&0xff) - 127 + 15
	man := u & 0x7fffff
	switch {
	case u&0x7fffffff > 0x7f800000: // NaN
		return sign | 0x7e00
	case u&0x7fffffff == 0x7f800000 || exp >= 31: // Inf or overflow
		// Values that round up into the overflow range become Inf too.
		return sign | 0x7c00
	case exp <= 0: // subnormal half or zero
		if exp < -10 {
			return sign
		}
		man |= 0x800000
		shift := uint32(14 - exp)
		h := man >> shift
		rem := man & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(exp)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // may carry into the exponent, which is the right result
	}
	return sign | uint16(h)
}

func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: value = man × 2^-24.
		v := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}
