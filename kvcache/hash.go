package kvcache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

// BlockHash names the content of a full block together with everything
// before it: SHA-256 over the parent block's hash, the block's tokens and,
// for the first block only, the salt. Two blocks with equal hashes are
// treated as holding the same keys and values.
type BlockHash [sha256.Size]byte

func (h BlockHash) String() string { return hex.EncodeToString(h[:8]) }

// HashBlock hashes one full block of tokens. parent is the previous block's
// hash, or nil for the first block, which is the only one the salt enters:
// the chain carries it to every later block.
func HashBlock(parent *BlockHash, tokens []int32, salt []byte) BlockHash {
	// One buffer and one Sum256 call; the array keeps blocks of up to
	// ~500 tokens off the heap.
	var stack [2048]byte
	buf := stack[:0]
	if parent == nil {
		// A tag and the salt's length keep (salt, tokens) pairs from
		// colliding by shifting bytes between the two.
		buf = append(buf, 'S')
		buf = binary.LittleEndian.AppendUint64(buf, uint64(len(salt)))
		buf = append(buf, salt...)
	} else {
		buf = append(buf, 'P')
		buf = append(buf, parent[:]...)
	}
	for _, t := range tokens {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(t))
	}
	return sha256.Sum256(buf)
}

// PrefixHashes returns the chained hashes of the full blocks of tokens
// (len(tokens)/blockSize of them); a trailing partial block has none.
func PrefixHashes(tokens []int32, blockSize int, salt []byte) []BlockHash {
	return appendHashes(nil, tokens, blockSize, salt)
}

// appendHashes extends hs, the hashes of the first len(hs) full blocks of
// tokens, to cover every full block.
func appendHashes(hs []BlockHash, tokens []int32, blockSize int, salt []byte) []BlockHash {
	for j := len(hs); (j+1)*blockSize <= len(tokens); j++ {
		var parent *BlockHash
		if j > 0 {
			parent = &hs[j-1]
		}
		hs = append(hs, HashBlock(parent, tokens[j*blockSize:(j+1)*blockSize], salt))
	}
	return hs
}
