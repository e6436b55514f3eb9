package kvcache

// Stats is a snapshot of the pool's occupancy and of the prefix cache's
// history. Every block is either used (some block table holds it) or free;
// CachedBlocks of the free ones still hold a reusable prefix.
type Stats struct {
	TotalBlocks  int
	UsedBlocks   int
	FreeBlocks   int
	CachedBlocks int // free blocks still in the prefix index (evictable)
	Sequences    int
	// SlotsUsed counts distinct token slots holding data in used blocks;
	// a slot shared by forked sequences counts once.
	SlotsUsed int
	// SlotsAllocated is UsedBlocks × BlockSize.
	SlotsAllocated int
	// PrefixQueryTokens and PrefixHitTokens sum prompt tokens offered to
	// Add and those found cached.
	PrefixQueryTokens, PrefixHitTokens int64
	Evictions                          int64 // cached blocks reclaimed for new data
	CoWCopies                          int64 // blocks copied on write
}

// Utilization is the fraction of blocks in use.
func (s Stats) Utilization() float64 { return ratio(int64(s.UsedBlocks), int64(s.TotalBlocks)) }

// Fragmentation is the internal fragmentation: the fraction of allocated
// slots that hold no token (the unfilled tail of each sequence's last block).
func (s Stats) Fragmentation() float64 {
	return ratio(int64(s.SlotsAllocated-s.SlotsUsed), int64(s.SlotsAllocated))
}

// PrefixHitRate is the fraction of prompt tokens found in the cache.
func (s Stats) PrefixHitRate() float64 { return ratio(s.PrefixHitTokens, s.PrefixQueryTokens) }

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Stats returns the current statistics. It walks every block table once.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	bs := m.layout.BlockSize
	free := len(m.free) + m.lruLen
	st := Stats{
		TotalBlocks:       m.layout.NumBlocks,
		UsedBlocks:        m.layout.NumBlocks - free,
		FreeBlocks:        free,
		CachedBlocks:      m.lruLen,
		Sequences:         len(m.seqs),
		SlotsAllocated:    (m.layout.NumBlocks - free) * bs,
		PrefixQueryTokens: m.counters.queryTokens,
		PrefixHitTokens:   m.counters.hitTokens,
		Evictions:         m.counters.evictions,
		CoWCopies:         m.counters.cowCopies,
	}
	// Full blocks are full in every table that holds them, except that a
	// block shared before a Truncate can be partial in one table and full
	// in another: a block holds as many tokens as its fullest view.
	// Only a shared partial block needs the walk over whole tables.
	st.SlotsUsed = st.SlotsAllocated
	var shared map[int32]int
	for _, s := range m.seqs {
		n := len(s.tokens) % bs
		if n == 0 {
			continue
		}
		b := s.blocks[len(s.blocks)-1]
		if m.blocks[b].ref == 1 {
			st.SlotsUsed -= bs - n
			continue
		}
		if shared == nil {
			shared = make(map[int32]int)
		}
		shared[b] = max(shared[b], n)
	}
	if shared != nil {
		for _, s := range m.seqs {
			for i, b := range s.blocks {
				if _, ok := shared[b]; ok && (i+1)*bs <= len(s.tokens) {
					shared[b] = bs
				}
			}
		}
	}
	for _, f := range shared {
		st.SlotsUsed -= bs - f
	}
	return st
}
