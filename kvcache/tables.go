package kvcache

import "fmt"

// BlockTables is a consistent snapshot of the block tables of a batch of
// sequences in the CSR form FlashInfer reads: sequence i holds the blocks
// Indices[Indptr[i]:Indptr[i+1]], in token order, and its last block holds
// LastPageLen[i] tokens (1…BlockSize; 0 only for an empty sequence), so its
// length is BlockSize·(blocks−1) + LastPageLen[i].
type BlockTables struct {
	BlockSize   int
	SeqLens     []int32 // tokens per sequence
	Indptr      []int32 // len = number of sequences + 1, Indptr[0] = 0
	Indices     []int32 // physical block ids
	LastPageLen []int32
}

// PadBlock fills the unused tail of each row of a PaddedTable. It is not a
// block id: a kernel that reads it has read past the sequence's length.
const PadBlock int32 = -1

// PaddedTable is the same tables as a dense row-major
// [NumSeqs][MaxBlocks] array, as vLLM's kernels take block_tables; rows
// shorter than MaxBlocks end in PadBlock.
type PaddedTable struct {
	NumSeqs, MaxBlocks int
	Table              []int32
}

// Row returns the row of sequence i, pad included.
func (p PaddedTable) Row(i int) []int32 { return p.Table[i*p.MaxBlocks : (i+1)*p.MaxBlocks] }

// Export snapshots the block tables of the given sequences, in that order,
// under one lock, so the batch is consistent even while other goroutines
// keep appending.
func (m *Manager) Export(ids []SeqID) (BlockTables, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	bs := m.layout.BlockSize
	t := BlockTables{
		BlockSize:   bs,
		SeqLens:     make([]int32, len(ids)),
		Indptr:      make([]int32, 1, len(ids)+1),
		LastPageLen: make([]int32, len(ids)),
	}
	for i, id := range ids {
		s, ok := m.seqs[id]
		if !ok {
			return BlockTables{}, fmt.Errorf("export block tables: sequence %d (batch index %d): %w", id, i, ErrUnknownSequence)
		}
		n := len(s.tokens)
		t.SeqLens[i] = int32(n)
		t.Indices = append(t.Indices, s.blocks...)
		t.Indptr = append(t.Indptr, int32(len(t.Indices)))
		if n > 0 {
			t.LastPageLen[i] = int32(n - (len(s.blocks)-1)*bs)
		}
	}
	return t, nil
}

// Padded converts the CSR tables to a padded table.
func (t BlockTables) Padded() PaddedTable {
	n := len(t.SeqLens)
	p := PaddedTable{NumSeqs: n}
	for i := range n {
		p.MaxBlocks = max(p.MaxBlocks, int(t.Indptr[i+1]-t.Indptr[i]))
	}
	p.Table = make([]int32, n*p.MaxBlocks)
	for i := range n {
		row := p.Row(i)
		k := copy(row, t.Indices[t.Indptr[i]:t.Indptr[i+1]])
		for j := k; j < len(row); j++ {
			row[j] = PadBlock
		}
	}
	return p
}
