package ref

import (
	"encoding/binary"
	"fmt"
	"math"

	"llmir/ir"
	"llmir/kvcache"
)

// RoundBF16 rounds every element of x to the nearest bfloat16 value (ties to
// even), in place, and returns x. The references compute in float64 over
// float32 storage; a caller validating a bf16 kernel rounds the reference's
// inputs (and, where the kernel stores them, its intermediates) with this.
// The rounding itself is ir.RoundFloat, the project's one implementation.
func RoundBF16(x []float32) []float32 { return roundSlice(x, ir.BF16) }

// RoundF16 is RoundBF16 for IEEE half precision (overflow goes to ±Inf).
func RoundF16(x []float32) []float32 { return roundSlice(x, ir.F16) }

func roundSlice(x []float32, t ir.ElemType) []float32 {
	for i, v := range x {
		x[i] = float32(ir.RoundFloat(float64(v), t))
	}
	return x
}

// Storage formats of the paged pool. ir rounds but exposes no bit patterns,
// and llmir/target (which has Encode/Decode for f32/f16/bf16) is out of
// reach of kernels, so the bit-level conversions live here, once. Each
// encoder first rounds with ir.RoundFloat (for f16/bf16) so that only the
// exact conversion of an already-representable value is written here.

// encodeElem writes v in dtype d's little-endian format at b.
func encodeElem(d kvcache.DType, b []byte, v float64) {
	switch d {
	case kvcache.F32:
		binary.LittleEndian.PutUint32(b, math.Float32bits(float32(v)))
	case kvcache.BF16:
		f := float32(ir.RoundFloat(v, ir.BF16))
		bits := math.Float32bits(f) >> 16
		if f != f {
			bits |= 0x40 // a quiet NaN stays a NaN after truncation
		}
		binary.LittleEndian.PutUint16(b, uint16(bits))
	case kvcache.F16:
		binary.LittleEndian.PutUint16(b, f16Bits(ir.RoundFloat(v, ir.F16)))
	case kvcache.FP8E4M3:
		b[0] = fp8E4M3Bits(v)
	}
}

// decodeElem reads one element of dtype d at b.
func decodeElem(d kvcache.DType, b []byte) float64 {
	switch d {
	case kvcache.F32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
	case kvcache.BF16:
		return float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16))
	case kvcache.F16:
		return f16Value(binary.LittleEndian.Uint16(b))
	case kvcache.FP8E4M3:
		return fp8E4M3Value(b[0])
	}
	return math.NaN()
}

// f16Bits encodes a value that is already exactly representable in f16.
func f16Bits(v float64) uint16 {
	var sign uint16
	if math.Signbit(v) {
		sign = 0x8000
		v = -v
	}
	switch {
	case math.IsNaN(v):
		return 0x7e00
	case math.IsInf(v, 0):
		return sign | 0x7c00
	case v < 0x1p-14: // subnormal (or zero): v = m · 2⁻²⁴
		return sign | uint16(v*0x1p24)
	}
	frac, exp := math.Frexp(v) // v = frac · 2^exp, frac in [0.5, 1)
	e := exp - 1               // v = (2·frac) · 2^e, 2·frac in [1, 2)
	mant := uint16((2*frac - 1) * 1024)
	return sign | uint16(e+15)<<10 | mant
}

func f16Value(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	switch exp {
	case 0x1f:
		if mant != 0 {
			return math.NaN()
		}
		return math.Inf(int(sign))
	case 0:
		return sign * mant * 0x1p-24
	}
	return sign * (1 + mant/1024) * math.Ldexp(1, exp-15)
}

// fp8E4M3Value decodes OCP float8 E4M3 ("e4m3fn": bias 7, no infinities,
// S.1111.111 is NaN, largest finite 448).
func fp8E4M3Value(b byte) float64 {
	sign := 1.0
	if b&0x80 != 0 {
		sign = -1
	}
	exp := int(b>>3) & 0xf
	mant := float64(b & 7)
	if exp == 0xf && b&7 == 7 {
		return math.NaN()
	}
	if exp == 0 {
		return sign * mant / 8 * 0x1p-6
	}
	return sign * (1 + mant/8) * math.Ldexp(1, exp-7)
}

// fp8E4M3Bits rounds to the nearest E4M3 value, ties to the even code.
// Magnitudes past 448 saturate to ±448 (the type has no infinity; vLLM's
// fp8 cache conversion saturates too) and NaN stays NaN. The search over
// the 127 finite magnitudes is slow but obviously right, which is the
// point of a reference.
func fp8E4M3Bits(v float64) byte {
	if math.IsNaN(v) {
		return 0x7f
	}
	var sign byte
	if math.Signbit(v) {
		sign = 0x80
		v = -v
	}
	best := byte(0)
	bestErr := math.Inf(1)
	for c := byte(0); c <= 0x7e; c++ {
		e := math.Abs(fp8E4M3Value(c) - v)
		if e < bestErr || (e == bestErr && c&1 == 0) {
			best, bestErr = c, e
		}
	}
	return sign | best
}

// dtypeOf maps an LLMIR element type to the pool's storage type.
func dtypeOf(t ir.ElemType) (kvcache.DType, error) {
	switch t {
	case ir.F32:
		return kvcache.F32, nil
	case ir.F16:
		return kvcache.F16, nil
	case ir.BF16:
		return kvcache.BF16, nil
	}
	return 0, fmt.Errorf("%w: no paged pool storage for element type %s", ErrUnsupported, t)
}
