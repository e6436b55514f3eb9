package ref

import (
	"errors"
	"fmt"
	"math"
)

// Sentinel errors; check them with errors.Is.
var (
	// ErrShape: operand lengths or shapes that do not fit the op's contract.
	ErrShape = errors.New("shape mismatch")
	// ErrUnknownOp: the evaluator met an op it has no reference for.
	ErrUnknownOp = errors.New("unknown op")
	// ErrUnsupported: a legal op or attribute value the references do not
	// implement (named in the message).
	ErrUnsupported = errors.New("unsupported")
	// ErrIndex: a token id, block id or slot outside its table.
	ErrIndex = errors.New("index out of range")
)

func shapeErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrShape}, args...)...)
}

func needLen(what string, got, want int) error {
	if got != want {
		return shapeErr("%s has %d elements, want %d", what, got, want)
	}
	return nil
}

// Embedding gathers rows of table [vocab, hidden] for ids: out[i] = table[ids[i]].
func Embedding(ids []int64, table []float32, vocab, hidden int) ([]float32, error) {
	if err := needLen("embedding table", len(table), vocab*hidden); err != nil {
		return nil, err
	}
	out := make([]float32, len(ids)*hidden)
	for i, id := range ids {
		if id < 0 || id >= int64(vocab) {
			return nil, fmt.Errorf("embedding: token %d = %d outside vocabulary of %d: %w", i, id, vocab, ErrIndex)
		}
		copy(out[i*hidden:(i+1)*hidden], table[int(id)*hidden:])
	}
	return out, nil
}

// WeightLayout is how a linear weight is stored.
type WeightLayout string

// The two layouts of llmir.linear's weight.
const (
	NK WeightLayout = "nk" // [out, in], as PyTorch stores nn.Linear
	KN WeightLayout = "kn" // [in, out]
)

// Linear computes out[m][n] = Σ_k x[m][k]·W(n, k) + bias[n] for x [m, k],
// with W(n, k) = w[n][k] (NK) or w[k][n] (KN). bias may be nil.
func Linear(x []float32, m, k int, w []float32, n int, layout WeightLayout, bias []float32) ([]float32, error) {
	if err := needLen("linear x", len(x), m*k); err != nil {
		return nil, err
	}
	if err := needLen("linear w", len(w), n*k); err != nil {
		return nil, err
	}
	if bias != nil {
		if err := needLen("linear bias", len(bias), n); err != nil {
			return nil, err
		}
	}
	var wAt func(j, p int) float64
	switch layout {
	case NK, "":
		wAt = func(j, p int) float64 { return float64(w[j*k+p]) }
	case KN:
		wAt = func(j, p int) float64 { return float64(w[p*n+j]) }
	default:
		return nil, fmt.Errorf("linear: weight layout %q: %w", layout, ErrUnsupported)
	}
	out := make([]float32, m*n)
	for i := range m {
		row := x[i*k : (i+1)*k]
		for j := range n {
			var s float64
			for p, xv := range row {
				s += float64(xv) * wAt(j, p)
			}
			if bias != nil {
				s += float64(bias[j])
			}
			out[i*n+j] = float32(s)
		}
	}
	return out, nil
}

// QuantizedLinearInt8 is weight-only int8 linear: out[m][n] =
// Σ_k x[m][k] · w[n][k] · scales[n][k/group]. The weight is symmetric (no
// zero point), [out, in] row-major; scales are [out, in/group]. Per-channel
// scales are group = in.
func QuantizedLinearInt8(x []float32, m, k int, w []int8, scales []float32, n, group int) ([]float32, error) {
	if err := needLen("quantized_linear w", len(w), n*k); err != nil {
		return nil, err
	}
	return quantLinear(x, m, k, n, group, scales, func(j, p int) int { return int(w[j*k+p]) })
}

// QuantizedLinearInt4 is QuantizedLinearInt8 for int4 weights packed two to a
// byte along the input dim, low nibble first: element (n, k) is nibble k%2
// of byte packed[(n·in + k)/2], a two's-complement value in −8…7 (see
// PackInt4). in must be even so that rows start on a byte.
func QuantizedLinearInt4(x []float32, m, k int, packed []byte, scales []float32, n, group int) ([]float32, error) {
	if k%2 != 0 {
		return nil, shapeErr("int4 input dim %d is odd: rows would not start on a byte", k)
	}
	if err := needLen("quantized_linear packed int4 w", len(packed), n*k/2); err != nil {
		return nil, err
	}
	return quantLinear(x, m, k, n, group, scales, func(j, p int) int { return int(int4At(packed, j*k+p)) })
}

func quantLinear(x []float32, m, k, n, group int, scales []float32, wq func(j, p int) int) ([]float32, error) {
	if group <= 0 || k%group != 0 {
		return nil, shapeErr("group size %d does not divide input dim %d", group, k)
	}
	if err := needLen("quantized_linear x", len(x), m*k); err != nil {
		return nil, err
	}
	groups := k / group
	if err := needLen("quantized_linear scales", len(scales), n*groups); err != nil {
		return nil, err
	}
	out := make([]float32, m*n)
	for i := range m {
		for j := range n {
			var s float64
			for p := range k {
				s += float64(x[i*k+p]) * float64(wq(j, p)) * float64(scales[j*groups+p/group])
			}
			out[i*n+j] = float32(s)
		}
	}
	return out, nil
}

// PackInt4 packs values in −8…7 two per byte, low nibble first. An odd
// count leaves the last high nibble zero.
func PackInt4(v []int8) ([]byte, error) {
	out := make([]byte, (len(v)+1)/2)
	for i, x := range v {
		if x < -8 || x > 7 {
			return nil, fmt.Errorf("pack int4: element %d = %d outside −8…7: %w", i, x, ErrIndex)
		}
		out[i/2] |= (byte(x) & 0xf) << (4 * (i % 2))
	}
	return out, nil
}

// UnpackInt4 reads n values packed by PackInt4.
func UnpackInt4(packed []byte, n int) []int8 {
	out := make([]int8, n)
	for i := range out {
		out[i] = int4At(packed, i)
	}
	return out
}

func int4At(packed []byte, i int) int8 {
	nib := packed[i/2] >> (4 * (i % 2)) & 0xf
	return int8(nib<<4) >> 4 // sign-extend the nibble
}

// RMSNorm normalises each row of x [rows, h]: x / sqrt(mean(x²) + eps) · w,
// as Llama's RMSNorm (the mean over the row, eps inside the root).
func RMSNorm(x []float32, rows, h int, w []float32, eps float64) ([]float32, error) {
	if err := needLen("rms_norm x", len(x), rows*h); err != nil {
		return nil, err
	}
	if err := needLen("rms_norm weight", len(w), h); err != nil {
		return nil, err
	}
	out := make([]float32, len(x))
	for r := range rows {
		row := x[r*h : (r+1)*h]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		inv := 1 / math.Sqrt(ss/float64(h)+eps)
		for i, v := range row {
			out[r*h+i] = float32(float64(v) * inv * float64(w[i]))
		}
	}
	return out, nil
}

// LayerNorm normalises each row of x [rows, h]: (x − mean)/sqrt(var + eps)·w + b,
// with the biased (1/h) variance, as torch.nn.LayerNorm.
func LayerNorm(x []float32, rows, h int, w, b []float32, eps float64) ([]float32, error) {
	if err := needLen("layer_norm x", len(x), rows*h); err != nil {
		return nil, err
	}
	if err := needLen("layer_norm weight", len(w), h); err != nil {
		return nil, err
	}
	if err := needLen("layer_norm bias", len(b), h); err != nil {
		return nil, err
	}
	out := make([]float32, len(x))
	for r := range rows {
		row := x[r*h : (r+1)*h]
		var mean float64
		for _, v := range row {
			mean += float64(v)
		}
		mean /= float64(h)
		var vr float64
		for _, v := range row {
			d := float64(v) - mean
			vr += d * d
		}
		inv := 1 / math.Sqrt(vr/float64(h)+eps)
		for i, v := range row {
			out[r*h+i] = float32((float64(v)-mean)*inv*float64(w[i]) + float64(b[i]))
		}
	}
	return out, nil
}

// SiLU is x·sigmoid(x) = x / (1 + e^−x), element-wise.
func SiLU(x []float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		f := float64(v)
		out[i] = float32(f / (1 + math.Exp(-f)))
	}
	return out
}

// GELU is x·Φ(x) with the exact normal CDF Φ(x) = (1 + erf(x/√2))/2, or with
// tanh true the approximation 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))),
// as torch.nn.functional.gelu(approximate="none"|"tanh").
func GELU(x []float32, tanh bool) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		f := float64(v)
		if tanh {
			out[i] = float32(0.5 * f * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(f+0.044715*f*f*f))))
		} else {
			out[i] = float32(0.5 * f * (1 + math.Erf(f/math.Sqrt2)))
		}
	}
	return out
}

// BroadcastShape is the result shape of a trailing broadcast: shapes are
// aligned at their last dims, and a dim of 1 (or a missing leading dim)
// stretches to the other's.
func BroadcastShape(a, b []int) ([]int, error) {
	long, short := a, b
	if len(b) > len(a) {
		long, short = b, a
	}
	out := append([]int(nil), long...)
	off := len(long) - len(short)
	for i, d := range short {
		l := long[off+i]
		switch {
		case d == l || d == 1:
		case l == 1:
			out[off+i] = d
		default:
			return nil, shapeErr("cannot broadcast %v with %v: dim %d is %d against %d", a, b, off+i, l, d)
		}
	}
	return out, nil
}

// Add is a + b element-wise with trailing broadcast; it returns the result
// and its shape.
func Add(a []float32, aShape []int, b []float32, bShape []int) ([]float32, []int, error) {
	return elementwise(a, aShape, b, bShape, func(x, y float64) float64 { return x + y })
}

// Mul is a · b element-wise with trailing broadcast.
func Mul(a []float32, aShape []int, b []float32, bShape []int) ([]float32, []int, error) {
	return elementwise(a, aShape, b, bShape, func(x, y float64) float64 { return x * y })
}

func elementwise(a []float32, aShape []int, b []float32, bShape []int, f func(x, y float64) float64) ([]float32, []int, error) {
	if err := needLen(fmt.Sprintf("operand of shape %v", aShape), len(a), numel(aShape)); err != nil {
		return nil, nil, err
	}
	if err := needLen(fmt.Sprintf("operand of shape %v", bShape), len(b), numel(bShape)); err != nil {
		return nil, nil, err
	}
	shape, err := BroadcastShape(aShape, bShape)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float32, numel(shape))
	idx := make([]int, len(shape))
	for i := range out {
		out[i] = float32(f(float64(a[broadcastIndex(idx, aShape)]), float64(b[broadcastIndex(idx, bShape)])))
		for d := len(idx) - 1; d >= 0; d-- { // odometer increment
			idx[d]++
			if idx[d] < shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out, shape, nil
}

// broadcastIndex maps an index of the result to the flat index of an
// operand of shape s aligned at the trailing dims.
func broadcastIndex(idx, s []int) int {
	off := len(idx) - len(s)
	flat := 0
	for i, d := range s {
		j := idx[off+i]
		if d == 1 {
			j = 0
		}
		flat = flat*d + j
	}
	return flat
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// axisSplit views shape as [outer, len, inner] around axis.
func axisSplit(shape []int, axis int) (outer, n, inner int, err error) {
	if axis < 0 {
		axis += len(shape)
	}
	if axis < 0 || axis >= len(shape) {
		return 0, 0, 0, shapeErr("axis out of range for shape %v", shape)
	}
	return numel(shape[:axis]), shape[axis], numel(shape[axis+1:]), nil
}

// Softmax is exp(x − max) / Σ exp(x − max) along axis (negative counts from
// the end). Subtracting the max keeps exp from overflowing; a lane whose
// elements are all −Inf has no defined softmax and comes out NaN, as in
// PyTorch.
func Softmax(x []float32, shape []int, axis int) ([]float32, error) {
	if err := needLen("softmax x", len(x), numel(shape)); err != nil {
		return nil, err
	}
	outer, n, inner, err := axisSplit(shape, axis)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(x))
	for o := range outer {
		for in := range inner {
			at := func(i int) int { return (o*n+i)*inner + in }
			mx := math.Inf(-1)
			for i := range n {
				mx = math.Max(mx, float64(x[at(i)]))
			}
			var sum float64
			for i := range n {
				sum += math.Exp(float64(x[at(i)]) - mx)
			}
			for i := range n {
				out[at(i)] = float32(math.Exp(float64(x[at(i)])-mx) / sum)
			}
		}
	}
	return out, nil
}

// Argmax is the index of the largest element along axis: the first one on
// ties. NaN counts as larger than every number, and the first NaN wins, as
// torch.argmax and numpy.argmax do (a NaN logit is a bug upstream that the
// result should expose, not hide).
func Argmax(x []float32, shape []int, axis int) ([]int64, error) {
	if err := needLen("argmax x", len(x), numel(shape)); err != nil {
		return nil, err
	}
	outer, n, inner, err := axisSplit(shape, axis)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, shapeErr("argmax over an empty axis of shape %v", shape)
	}
	out := make([]int64, outer*inner)
	for o := range outer {
		for in := range inner {
			best := 0
			bv := x[o*n*inner+in]
			for i := 1; i < n && bv == bv; i++ {
				v := x[(o*n+i)*inner+in]
				if v > bv || v != v {
					best, bv = i, v
				}
			}
			out[o*inner+in] = int64(best)
		}
	}
	return out, nil
}

// AllReduce combines the ranks' buffers element-wise (kind "sum" or "max")
// and returns the one result every rank would hold afterwards.
func AllReduce(ranks [][]float32, kind string) ([]float32, error) {
	if kind != "sum" && kind != "max" {
		return nil, fmt.Errorf("all_reduce kind %q: %w", kind, ErrUnsupported)
	}
	if len(ranks) == 0 {
		return nil, shapeErr("all_reduce over no ranks")
	}
	n := len(ranks[0])
	for r, b := range ranks {
		if err := needLen(fmt.Sprintf("all_reduce rank %d buffer", r), len(b), n); err != nil {
			return nil, err
		}
	}
	out := make([]float32, n)
	for i := range n {
		acc := float64(ranks[0][i])
		for _, b := range ranks[1:] {
			switch kind {
			case "sum":
				acc += float64(b[i])
			case "max":
				acc = math.Max(acc, float64(b[i]))
			}
		}
		out[i] = float32(acc)
	}
	return out, nil
}
