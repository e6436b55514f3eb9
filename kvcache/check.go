package kvcache

import (
	"errors"
	"fmt"
	"slices"
)

// CheckInvariants verifies the manager's bookkeeping and returns every
// violation found, joined. Tests call it after each step; it costs a walk
// over all blocks and tables and rehashes every sequence, so it is not for
// hot paths. It checks that:
//   - each block is in exactly one place: held by tables (ref > 0), on the
//     free stack, or on the evictable list, so free + used = total;
//   - each block's reference count equals the number of table entries
//     naming it, and no table names a block twice;
//   - the prefix index and the blocks' cached flags agree, every evictable
//     block is cached, and the evictable list's links are consistent;
//   - each table has ceil(len/BlockSize) blocks, each sequence's hashes are
//     the chain of its tokens, and a cached block in a table holds exactly
//     the content of that table's prefix.
func (m *Manager) CheckInvariants() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	n := m.layout.NumBlocks
	bs := m.layout.BlockSize

	refs := make([]int32, n)
	for id, s := range m.seqs {
		if want := m.blocksFor(len(s.tokens)); len(s.blocks) != want {
			bad("seq %d: %d tokens in %d blocks, want %d", id, len(s.tokens), len(s.blocks), want)
		}
		seen := make(map[int32]bool, len(s.blocks))
		for _, b := range s.blocks {
			if b < 0 || int(b) >= n {
				bad("seq %d: block id %d outside the pool", id, b)
				continue
			}
			if seen[b] {
				bad("seq %d: block %d twice in one table", id, b)
			}
			seen[b] = true
			refs[b]++
		}
		if s.writableFrom > len(s.tokens) {
			bad("seq %d: writable from position %d of %d", id, s.writableFrom, len(s.tokens))
		}
		if !m.prefixCaching {
			continue
		}
		if s.committed > len(s.hashes) {
			bad("seq %d: %d blocks committed of %d full", id, s.committed, len(s.hashes))
		}
		want := PrefixHashes(s.tokens, bs, s.salt)
		if !slices.Equal(s.hashes, want) {
			bad("seq %d: %d stored block hashes differ from the chain of its %d tokens", id, len(s.hashes), len(s.tokens))
			continue
		}
		for j, h := range want {
			if b := s.blocks[j]; b >= 0 && int(b) < n && m.blocks[b].cached && m.blocks[b].hash != h {
				bad("seq %d: block %d (index %d) is cached as %v but the sequence holds %v there", id, b, j, m.blocks[b].hash, h)
			}
		}
	}

	where := make([]string, n)
	place := func(b int32, p string) {
		if b < 0 || int(b) >= n {
			bad("%s holds block id %d outside the pool", p, b)
			return
		}
		if where[b] != "" {
			bad("block %d is both %s and %s", b, where[b], p)
		}
		where[b] = p
	}
	for b := range n {
		if m.blocks[b].ref != refs[b] {
			bad("block %d: ref count %d, %d table entries", b, m.blocks[b].ref, refs[b])
		}
		if m.blocks[b].ref > 0 {
			place(int32(b), "in use")
		}
	}
	for _, b := range m.free {
		place(b, "on the free stack")
		if b >= 0 && int(b) < n && m.blocks[b].cached {
			bad("block %d: on the free stack but cached", b)
		}
	}
	length := 0
	prev := noBlock
	for b := m.lruHead; b != noBlock && length <= n; b = m.blocks[b].next {
		place(b, "evictable")
		if b < 0 || int(b) >= n {
			break
		}
		if m.blocks[b].prev != prev {
			bad("evictable list: block %d links back to %d, want %d", b, m.blocks[b].prev, prev)
		}
		if !m.blocks[b].cached {
			bad("evictable block %d is not cached", b)
		}
		prev = b
		length++
	}
	if length != m.lruLen || m.lruTail != prev {
		bad("evictable list: %d blocks ending at %d, recorded %d ending at %d", length, prev, m.lruLen, m.lruTail)
	}
	for b := range n {
		if where[b] == "" {
			bad("block %d is lost: not in use, free or evictable", b)
		}
	}

	cached := 0
	for b := range n {
		if m.blocks[b].cached {
			cached++
			if got, ok := m.index[m.blocks[b].hash]; !ok || got != int32(b) {
				bad("block %d is cached as %v but the index does not name it (found %d, %v)", b, m.blocks[b].hash, got, ok)
			}
		}
	}
	if cached != len(m.index) {
		bad("%d cached blocks, %d index entries", cached, len(m.index))
	}
	if !m.prefixCaching && len(m.index) != 0 {
		bad("prefix caching is off but the index has %d entries", len(m.index))
	}
	return errors.Join(errs...)
}
