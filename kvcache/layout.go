package kvcache

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// DType is the element type of the cached keys and values.
type DType uint8

// The element types a pool can hold.
const (
	F32 DType = iota + 1
	F16
	BF16
	FP8E4M3
)

var dtypeNames = [...]string{F32: "f32", F16: "f16", BF16: "bf16", FP8E4M3: "fp8e4m3"}

// Size is the byte size of one element, or 0 for an unknown type.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case FP8E4M3:
		return 1
	}
	return 0
}

func (d DType) String() string {
	if int(d) < len(dtypeNames) && dtypeNames[d] != "" {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// ParseDType reads the names String prints.
func ParseDType(s string) (DType, error) {
	for d, name := range dtypeNames {
		if name != "" && strings.EqualFold(s, name) {
			return DType(d), nil
		}
	}
	return 0, fmt.Errorf("unknown kv dtype %q (want f32, f16, bf16 or fp8e4m3)", s)
}

// KV selects the key or the value half of a layer's cache.
type KV uint8

// The two halves of a layer's cache, in their order in the pool.
const (
	Key   KV = 0
	Value KV = 1
)

// Layout is the physical shape of the pool, the contract paged-attention
// kernels read. Per layer, K and V are each a tensor
//
//	[NumBlocks][BlockSize][NumKVHeads][HeadDim] of DType
//
// and the pool is [NumLayers][2 (K, V)][...] of those, row-major, with no
// padding. Offset is the one formula for where an element lives.
type Layout struct {
	NumBlocks  int   // blocks in the pool (per layer and per K/V)
	BlockSize  int   // tokens per block
	NumLayers  int   // transformer layers sharing the block tables
	NumKVHeads int   // key/value heads (fewer than query heads under GQA/MQA)
	HeadDim    int   // elements per head
	DType      DType // element type
}

// ErrInvalidLayout reports a layout with a non-positive dimension, an
// unknown element type, or more blocks than an int32 block index can name.
var ErrInvalidLayout = errors.New("invalid kv layout")

// Validate checks every field and that the pool's byte size fits an int64.
func (l Layout) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"num_blocks", l.NumBlocks}, {"block_size", l.BlockSize}, {"num_layers", l.NumLayers},
		{"num_kv_heads", l.NumKVHeads}, {"head_dim", l.HeadDim},
	} {
		if f.v <= 0 {
			return fmt.Errorf("%w: %s = %d, want > 0", ErrInvalidLayout, f.name, f.v)
		}
	}
	if l.DType.Size() == 0 {
		return fmt.Errorf("%w: dtype %v", ErrInvalidLayout, l.DType)
	}
	// Block indices travel as int32 (CSR arrays), and slot numbers
	// (block*BlockSize+slot) must fit one too.
	if int64(l.NumBlocks)*int64(l.BlockSize) > math.MaxInt32 {
		return fmt.Errorf("%w: %d blocks × %d tokens exceed int32 slot numbers", ErrInvalidLayout, l.NumBlocks, l.BlockSize)
	}
	total := float64(l.NumLayers) * 2 * float64(l.NumBlocks) * float64(l.BlockSize) *
		float64(l.NumKVHeads) * float64(l.HeadDim) * float64(l.DType.Size())
	if total > math.MaxInt64/2 {
		return fmt.Errorf("%w: pool of %.3g bytes is too large", ErrInvalidLayout, total)
	}
	return nil
}

// TokenBytes is the size of one token's keys (or values) in one layer:
// NumKVHeads × HeadDim elements, contiguous in the pool.
func (l Layout) TokenBytes() int64 {
	return int64(l.NumKVHeads) * int64(l.HeadDim) * int64(l.DType.Size())
}

// BlockBytes is the size of one block of keys (or values) in one layer.
func (l Layout) BlockBytes() int64 { return int64(l.BlockSize) * l.TokenBytes() }

// PoolBytes is the size of the whole pool: every layer, K and V.
func (l Layout) PoolBytes() int64 {
	return int64(l.NumLayers) * 2 * int64(l.NumBlocks) * l.BlockBytes()
}

// Offset is the byte offset in the pool of element (head, dim) of the token
// in slot `slot` of block `block`, for the given layer and half. Arguments
// are not checked: callers index with values the manager handed out.
func (l Layout) Offset(layer int, kv KV, block, slot, head, dim int) int64 {
	i := (int64(layer)*2+int64(kv))*int64(l.NumBlocks) + int64(block)
	i = i*int64(l.BlockSize) + int64(slot)
	i = i*int64(l.NumKVHeads) + int64(head)
	i = i*int64(l.HeadDim) + int64(dim)
	return i * int64(l.DType.Size())
}
