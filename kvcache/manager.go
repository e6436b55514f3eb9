package kvcache

import (
	"errors"
	"fmt"
	"math"
	"sync"
)

// Errors the manager returns, wrapped with the operation and sequence;
// check them with errors.Is.
var (
	// ErrCacheFull: not enough free blocks now. From Add it means "admit
	// later"; from Append it is the signal to preempt a sequence. Nothing
	// was changed.
	ErrCacheFull = errors.New("kv cache full")
	// ErrExceedsCapacity: the prompt needs more blocks than the pool can
	// ever give a new sequence (total minus watermark), so waiting will not help.
	ErrExceedsCapacity = errors.New("sequence exceeds kv cache capacity")
	// ErrUnknownSequence: no sequence has this id.
	ErrUnknownSequence = errors.New("unknown sequence")
	// ErrSequenceExists: Add or Fork to an id already in use.
	ErrSequenceExists = errors.New("sequence already exists")
	// ErrOutOfRange: a token position or range outside the sequence.
	ErrOutOfRange = errors.New("token position out of range")
	// ErrReadOnly: a write to a position whose content the sequence did
	// not produce itself (it came from the prefix cache or a fork), or
	// whose block another sequence also reads.
	ErrReadOnly = errors.New("write to read-only kv content")
	// ErrNoStorage: a byte access on a manager built without storage.
	ErrNoStorage = errors.New("kv manager has no storage")
)

// SeqID names a sequence; the caller chooses it.
type SeqID uint64

// Config sets up a Manager.
type Config struct {
	Layout Layout
	// Watermark is the fraction of all blocks that Add keeps free, so that
	// running sequences can grow for a while before anyone is preempted
	// (vLLM uses 0.01). Append may use them.
	Watermark float64
	// DisablePrefixCaching turns off block hashing and reuse.
	DisablePrefixCaching bool
	// Storage allocates the pool's bytes (Layout.PoolBytes) once, so that
	// WriteKV/ReadKV work and copy-on-write copies real data. Without it
	// the manager keeps only the bookkeeping.
	Storage bool
}

// Manager owns a pool of KV blocks and the block tables of the sequences
// that use it. All methods are safe for concurrent use: one mutex guards
// the whole state, and every method is one atomic step (an operation that
// fails changes nothing). Hashing a prompt, the only costly part of Add,
// happens before the lock is taken.
type Manager struct {
	layout          Layout
	watermarkBlocks int
	prefixCaching   bool

	mu     sync.Mutex
	blocks []block
	// free holds blocks with no reader and no cached content, used first.
	free []int32
	// The evictable list: blocks with no reader whose content is still in
	// the prefix index, least recently released at the head.
	lruHead, lruTail int32
	lruLen           int
	index            map[BlockHash]int32
	seqs             map[SeqID]*sequence
	storage          []byte
	counters         counters
}

type block struct {
	ref int32 // number of block-table entries that hold this block
	// cached: index[hash] names this block; its content is immutable
	// and it can be found by a later prompt with the same prefix.
	cached     bool
	hash       BlockHash
	prev, next int32 // evictable-list links, noBlock at the ends
}

type sequence struct {
	tokens []int32
	blocks []int32 // len == ceil(len(tokens)/BlockSize)
	// hashes of the full blocks, len == len(tokens)/BlockSize, when prefix
	// caching is on. They describe this sequence's content, whether or not
	// the block it holds is the one in the index.
	hashes []BlockHash
	salt   []byte
	// committed counts the leading full blocks offered to the prefix
	// index: found there by Add, or published by Commit.
	committed int
	// writableFrom is the first position WriteKV accepts: content before
	// it came from the prefix cache or a fork's source, or was published
	// by Commit, so others may read it.
	writableFrom int
}

type counters struct {
	queryTokens, hitTokens int64
	evictions, cowCopies   int64
}

const noBlock int32 = -1

// NewManager allocates the pool and returns an empty manager.
func NewManager(cfg Config) (*Manager, error) {
	if err := cfg.Layout.Validate(); err != nil {
		return nil, err
	}
	if !(cfg.Watermark >= 0 && cfg.Watermark < 1) {
		return nil, fmt.Errorf("kv manager: watermark %v, want 0 ≤ w < 1", cfg.Watermark)
	}
	n := cfg.Layout.NumBlocks
	m := &Manager{
		layout:          cfg.Layout,
		watermarkBlocks: int(cfg.Watermark * float64(n)),
		prefixCaching:   !cfg.DisablePrefixCaching,
		blocks:          make([]block, n),
		free:            make([]int32, n),
		lruHead:         noBlock,
		lruTail:         noBlock,
		index:           make(map[BlockHash]int32),
		seqs:            make(map[SeqID]*sequence),
	}
	// Lowest ids on top of the stack, so a fresh pool hands out 0, 1, 2…
	for i := range n {
		m.free[i] = int32(n - 1 - i)
		m.blocks[i].prev, m.blocks[i].next = noBlock, noBlock
	}
	if cfg.Storage {
		size := cfg.Layout.PoolBytes()
		if size > math.MaxInt {
			return nil, fmt.Errorf("kv manager: pool of %d bytes does not fit in memory", size)
		}
		m.storage = make([]byte, size)
	}
	return m, nil
}

// Layout returns the pool's layout.
func (m *Manager) Layout() Layout { return m.layout }

// WatermarkBlocks is the number of blocks Add keeps free.
func (m *Manager) WatermarkBlocks() int { return m.watermarkBlocks }

// Admission is Add's verdict on a prompt.
type Admission int

// The three verdicts, as in vLLM's AllocStatus.
const (
	AdmitOK    Admission = iota // fits now
	AdmitLater                  // would eat into the watermark: wait for blocks
	AdmitNever                  // larger than the pool minus the watermark
)

func (a Admission) String() string {
	switch a {
	case AdmitOK:
		return "ok"
	case AdmitLater:
		return "later"
	case AdmitNever:
		return "never"
	}
	return fmt.Sprintf("Admission(%d)", int(a))
}

// CanAdd tells whether Add would accept the prompt now.
func (m *Manager) CanAdd(prompt []int32, salt []byte) Admission {
	hs := m.promptHashes(prompt, salt)
	m.mu.Lock()
	defer m.mu.Unlock()
	a, _ := m.admission(len(prompt), hs)
	return a
}

// AddResult says how much of a new sequence's prompt was found cached.
type AddResult struct {
	// CachedTokens is the length of the prefix whose keys and values are
	// already in the pool: the caller computes only [CachedTokens, len).
	CachedTokens int
}

// Add creates sequence id holding prompt, reusing the longest cached prefix
// of whole blocks (hashed with salt, which separates tenants) and allocating
// the rest. At least the last prompt token is always left to compute, since
// a model needs its output; Commit publishes the computed blocks. It fails
// with ErrCacheFull when admitting would leave fewer free blocks than the
// watermark, and with ErrExceedsCapacity when it never could.
func (m *Manager) Add(id SeqID, prompt []int32, salt []byte) (AddResult, error) {
	hs := m.promptHashes(prompt, salt)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.seqs[id]; ok {
		return AddResult{}, fmt.Errorf("add seq %d: %w", id, ErrSequenceExists)
	}
	a, hit := m.admission(len(prompt), hs)
	switch a {
	case AdmitNever:
		return AddResult{}, fmt.Errorf("add seq %d: %d-token prompt needs %d blocks, pool gives at most %d: %w",
			id, len(prompt), m.blocksFor(len(prompt)), m.layout.NumBlocks-m.watermarkBlocks, ErrExceedsCapacity)
	case AdmitLater:
		return AddResult{}, fmt.Errorf("add seq %d: %d-token prompt needs %d new blocks, %d free, watermark %d: %w",
			id, len(prompt), m.blocksFor(len(prompt))-hit, m.available(), m.watermarkBlocks, ErrCacheFull)
	}
	s := &sequence{
		tokens:       append(make([]int32, 0, len(prompt)), prompt...),
		blocks:       make([]int32, 0, m.blocksFor(len(prompt))),
		salt:         append([]byte(nil), salt...),
		committed:    hit,
		writableFrom: hit * m.layout.BlockSize,
	}
	for _, h := range hs[:hit] {
		b := m.index[h]
		if m.blocks[b].ref == 0 {
			m.lruRemove(b)
		}
		m.blocks[b].ref++
		s.blocks = append(s.blocks, b)
	}
	for range m.blocksFor(len(prompt)) - hit {
		s.blocks = append(s.blocks, m.alloc())
	}
	if m.prefixCaching {
		s.hashes = hs
		m.counters.queryTokens += int64(len(prompt))
		m.counters.hitTokens += int64(hit * m.layout.BlockSize)
	}
	m.seqs[id] = s
	return AddResult{CachedTokens: hit * m.layout.BlockSize}, nil
}

func (m *Manager) promptHashes(prompt []int32, salt []byte) []BlockHash {
	if !m.prefixCaching {
		return nil
	}
	return PrefixHashes(prompt, m.layout.BlockSize, salt)
}

// admission decides on a prompt of n tokens with full-block hashes hs and
// returns the number of leading blocks found in the prefix index.
func (m *Manager) admission(n int, hs []BlockHash) (Admission, int) {
	need := m.blocksFor(n)
	if need > m.layout.NumBlocks-m.watermarkBlocks {
		return AdmitNever, 0
	}
	maxHit := 0
	if n > 0 {
		maxHit = min(len(hs), (n-1)/m.layout.BlockSize)
	}
	hit, revived := 0, 0
	for ; hit < maxHit; hit++ {
		b, ok := m.index[hs[hit]]
		if !ok {
			break
		}
		if m.blocks[b].ref == 0 {
			revived++ // taken off the evictable list, so no longer available
		}
	}
	if m.available()-revived-(need-hit) < m.watermarkBlocks {
		return AdmitLater, hit
	}
	return AdmitOK, hit
}

// Append adds tokens to the end of sequence id, allocating a block at each
// block boundary and first copying the last block if it is shared or
// cached (copy-on-write). All tokens are appended or, with ErrCacheFull,
// none: the caller must then preempt a sequence (free it and recompute it
// later) or wait. Append may use the watermark blocks.
func (m *Manager) Append(id SeqID, tokens ...int32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.seqs[id]
	if !ok {
		return fmt.Errorf("append to seq %d: %w", id, ErrUnknownSequence)
	}
	if len(tokens) == 0 {
		return nil
	}
	bs := m.layout.BlockSize
	old := len(s.tokens)
	need := m.blocksFor(old+len(tokens)) - len(s.blocks)
	cow := old%bs != 0 && m.needsCopy(s.blocks[len(s.blocks)-1])
	if cow {
		need++
	}
	if need > m.available() {
		return fmt.Errorf("append %d tokens to seq %d: need %d blocks, %d free: %w",
			len(tokens), id, need, m.available(), ErrCacheFull)
	}
	if cow {
		last := len(s.blocks) - 1
		src := s.blocks[last]
		dst := m.alloc()
		m.copySlots(dst, src, old%bs)
		m.release(src)
		s.blocks[last] = dst
		m.counters.cowCopies++
	}
	s.tokens = append(s.tokens, tokens...)
	for len(s.blocks) < m.blocksFor(len(s.tokens)) {
		s.blocks = append(s.blocks, m.alloc())
	}
	if m.prefixCaching {
		s.hashes = appendHashes(s.hashes, s.tokens, bs, s.salt)
	}
	return nil
}

// Commit declares that the keys and values of positions [0, end) of
// sequence id are written, publishing its full blocks there in the prefix
// index so later prompts can reuse them, and making them read-only to id.
// Until a block is committed no other sequence can find it, so a prompt
// never hits a block whose content is still being computed. Committing
// less than before is a no-op; with prefix caching off only the range is
// checked.
func (m *Manager) Commit(id SeqID, end int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.seqs[id]
	if !ok {
		return fmt.Errorf("commit seq %d: %w", id, ErrUnknownSequence)
	}
	if end < 0 || end > len(s.tokens) {
		return fmt.Errorf("commit seq %d: %d of %d tokens: %w", id, end, len(s.tokens), ErrOutOfRange)
	}
	if !m.prefixCaching {
		return nil
	}
	full := end / m.layout.BlockSize
	for j := s.committed; j < full; j++ {
		m.register(s.blocks[j], s.hashes[j])
	}
	s.committed = max(s.committed, full)
	s.writableFrom = max(s.writableFrom, full*m.layout.BlockSize)
	return nil
}

// needsCopy: appending into block b would change what someone else reads,
// another sequence or a future prefix hit.
func (m *Manager) needsCopy(b int32) bool { return m.blocks[b].ref > 1 || m.blocks[b].cached }

// Fork creates sequence dst as a copy of src that shares all of src's
// blocks; the first write to a shared partial block copies it.
func (m *Manager) Fork(src, dst SeqID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.seqs[src]
	if !ok {
		return fmt.Errorf("fork seq %d: %w", src, ErrUnknownSequence)
	}
	if _, ok := m.seqs[dst]; ok {
		return fmt.Errorf("fork seq %d into %d: %w", src, dst, ErrSequenceExists)
	}
	for _, b := range s.blocks {
		m.blocks[b].ref++
	}
	m.seqs[dst] = &sequence{
		tokens:       append([]int32(nil), s.tokens...),
		blocks:       append([]int32(nil), s.blocks...),
		hashes:       append([]BlockHash(nil), s.hashes...),
		salt:         s.salt,
		committed:    s.committed,
		writableFrom: len(s.tokens),
	}
	return nil
}

// Truncate keeps the tokens [0, end) of sequence id and releases the blocks
// past them.
func (m *Manager) Truncate(id SeqID, end int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.seqs[id]
	if !ok {
		return fmt.Errorf("truncate seq %d: %w", id, ErrUnknownSequence)
	}
	if end < 0 || end > len(s.tokens) {
		return fmt.Errorf("truncate seq %d to %d of %d tokens: %w", id, end, len(s.tokens), ErrOutOfRange)
	}
	keep := m.blocksFor(end)
	m.releaseAll(s.blocks[keep:])
	s.blocks = s.blocks[:keep]
	s.tokens = s.tokens[:end]
	s.committed = min(s.committed, end/m.layout.BlockSize)
	s.writableFrom = min(s.writableFrom, end)
	if m.prefixCaching {
		s.hashes = s.hashes[:end/m.layout.BlockSize]
	}
	return nil
}

// Free ends sequence id. Its blocks return to the pool; those in the prefix
// index stay findable until evicted.
func (m *Manager) Free(id SeqID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.seqs[id]
	if !ok {
		return fmt.Errorf("free seq %d: %w", id, ErrUnknownSequence)
	}
	m.releaseAll(s.blocks)
	delete(m.seqs, id)
	return nil
}

// Len is the number of tokens in sequence id.
func (m *Manager) Len(id SeqID) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.seqs[id]
	if !ok {
		return 0, fmt.Errorf("len of seq %d: %w", id, ErrUnknownSequence)
	}
	return len(s.tokens), nil
}

// BlockTable returns a copy of sequence id's block table.
func (m *Manager) BlockTable(id SeqID) ([]int32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.seqs[id]
	if !ok {
		return nil, fmt.Errorf("block table of seq %d: %w", id, ErrUnknownSequence)
	}
	return append([]int32(nil), s.blocks...), nil
}

// Slots appends to dst the physical slot (block·BlockSize + offset) of each
// token in [start, end) of sequence id: the slot mapping a kernel that
// writes new keys and values needs.
func (m *Manager) Slots(dst []int32, id SeqID, start, end int) ([]int32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.seqs[id]
	if !ok {
		return dst, fmt.Errorf("slots of seq %d: %w", id, ErrUnknownSequence)
	}
	if start < 0 || start > end || end > len(s.tokens) {
		return dst, fmt.Errorf("slots of seq %d: range [%d, %d) of %d tokens: %w", id, start, end, len(s.tokens), ErrOutOfRange)
	}
	bs := m.layout.BlockSize
	for p := start; p < end; p++ {
		dst = append(dst, s.blocks[p/bs]*int32(bs)+int32(p%bs))
	}
	return dst, nil
}

// WriteKV stores one token's keys or values for one layer
// (NumKVHeads × HeadDim elements, Layout.TokenBytes bytes) at position pos
// of sequence id. Only content the sequence is computing may be written:
// positions from Add's CachedTokens on, or appended after a Fork, not yet
// published by Commit, and only while no other sequence shares the block;
// copy-on-write in Append makes the positions it appends private. Anything
// else is ErrReadOnly.
func (m *Manager) WriteKV(id SeqID, pos, layer int, kv KV, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	off, b, err := m.tokenOffset("write kv", id, pos, layer, kv, len(data))
	if err != nil {
		return err
	}
	if from := m.seqs[id].writableFrom; pos < from {
		return fmt.Errorf("write kv seq %d pos %d: the first %d positions are committed or came from the prefix cache or a fork: %w",
			id, pos, from, ErrReadOnly)
	}
	if m.blocks[b].ref > 1 {
		return fmt.Errorf("write kv seq %d pos %d: block %d has %d readers: %w", id, pos, b, m.blocks[b].ref, ErrReadOnly)
	}
	copy(m.storage[off:], data)
	return nil
}

// ReadKV copies into dst (Layout.TokenBytes bytes) the keys or values of
// one layer stored for position pos of sequence id.
func (m *Manager) ReadKV(dst []byte, id SeqID, pos, layer int, kv KV) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	off, _, err := m.tokenOffset("read kv", id, pos, layer, kv, len(dst))
	if err != nil {
		return err
	}
	copy(dst, m.storage[off:])
	return nil
}

func (m *Manager) tokenOffset(op string, id SeqID, pos, layer int, kv KV, n int) (int64, int32, error) {
	if m.storage == nil {
		return 0, 0, fmt.Errorf("%s seq %d: %w", op, id, ErrNoStorage)
	}
	s, ok := m.seqs[id]
	if !ok {
		return 0, 0, fmt.Errorf("%s seq %d: %w", op, id, ErrUnknownSequence)
	}
	if pos < 0 || pos >= len(s.tokens) {
		return 0, 0, fmt.Errorf("%s seq %d: position %d of %d tokens: %w", op, id, pos, len(s.tokens), ErrOutOfRange)
	}
	l := m.layout
	if layer < 0 || layer >= l.NumLayers || kv > Value {
		return 0, 0, fmt.Errorf("%s seq %d: layer %d kv %d outside %d layers × {K, V}", op, id, layer, kv, l.NumLayers)
	}
	if int64(n) != l.TokenBytes() {
		return 0, 0, fmt.Errorf("%s seq %d: buffer of %d bytes, a token is %d", op, id, n, l.TokenBytes())
	}
	b := s.blocks[pos/l.BlockSize]
	return l.Offset(layer, kv, int(b), pos%l.BlockSize, 0, 0), b, nil
}

// copySlots copies the first n slots of block src into dst, in every layer
// and both halves.
func (m *Manager) copySlots(dst, src int32, n int) {
	if m.storage == nil || n == 0 {
		return
	}
	l := m.layout
	size := int64(n) * l.TokenBytes()
	for layer := range l.NumLayers {
		for kv := Key; kv <= Value; kv++ {
			from := l.Offset(layer, kv, int(src), 0, 0, 0)
			to := l.Offset(layer, kv, int(dst), 0, 0, 0)
			copy(m.storage[to:to+size], m.storage[from:from+size])
		}
	}
}

func (m *Manager) blocksFor(tokens int) int {
	return (tokens + m.layout.BlockSize - 1) / m.layout.BlockSize
}

// available counts blocks alloc can hand out: free ones and evictable ones.
func (m *Manager) available() int { return len(m.free) + m.lruLen }

// alloc takes a block, preferring never-cached free blocks so that cached
// prefixes live as long as possible, then evicting the least recently
// released cached block. Callers have checked available().
func (m *Manager) alloc() int32 {
	var b int32
	if n := len(m.free); n > 0 {
		b = m.free[n-1]
		m.free = m.free[:n-1]
	} else {
		b = m.lruHead
		if b == noBlock {
			panic("kvcache: alloc from an empty pool; caller skipped the availability check")
		}
		m.lruRemove(b)
		delete(m.index, m.blocks[b].hash)
		m.blocks[b].cached = false
		m.counters.evictions++
	}
	m.blocks[b].ref = 1
	return b
}

// register enters block b, which now holds content h, into the prefix
// index, unless another block already holds that content: then b stays a
// private duplicate (block tables are append-only, so it is not swapped).
func (m *Manager) register(b int32, h BlockHash) {
	if _, dup := m.index[h]; dup {
		return
	}
	m.index[h] = b
	m.blocks[b].cached = true
	m.blocks[b].hash = h
}

func (m *Manager) release(b int32) {
	m.blocks[b].ref--
	switch {
	case m.blocks[b].ref > 0:
	case m.blocks[b].cached:
		m.lruPush(b)
	default:
		m.free = append(m.free, b)
	}
}

// releaseAll releases a table's blocks tail first: a sequence's last blocks
// are the least likely to be shared with a later prompt, so they land
// nearest the head of the evictable list and go first.
func (m *Manager) releaseAll(bs []int32) {
	for i := len(bs) - 1; i >= 0; i-- {
		m.release(bs[i])
	}
}

func (m *Manager) lruPush(b int32) {
	m.blocks[b].prev, m.blocks[b].next = m.lruTail, noBlock
	if m.lruTail == noBlock {
		m.lruHead = b
	} else {
		m.blocks[m.lruTail].next = b
	}
	m.lruTail = b
	m.lruLen++
}

func (m *Manager) lruRemove(b int32) {
	p, n := m.blocks[b].prev, m.blocks[b].next
	if p == noBlock {
		m.lruHead = n
	} else {
		m.blocks[p].next = n
	}
	if n == noBlock {
		m.lruTail = p
	} else {
		m.blocks[n].prev = p
	}
	m.blocks[b].prev, m.blocks[b].next = noBlock, noBlock
	m.lruLen--
}
