package kvcache

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestManagerConcurrent has goroutines add, append, fork, truncate and free
// their own sequences, all sharing one prompt prefix (so they contend for
// the same cached and shared blocks), while another goroutine takes stats
// and snapshots. Each worker checks that its sequences always read what it
// wrote. Run with -race.
func TestManagerConcurrent(t *testing.T) {
	const workers, rounds = 4, 150
	m, err := NewManager(Config{
		Layout:    Layout{NumBlocks: 48, BlockSize: 4, NumLayers: 1, NumKVHeads: 2, HeadDim: 1, DType: F32},
		Watermark: 0.05,
		Storage:   true,
	})
	if err != nil {
		t.Fatal(err)
	}
	system := seq(1000, 1010) // shared by every prompt: 2 full blocks
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	done := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- concurrentWorker(m, w, rounds, system)
		}()
	}
	var watcher sync.WaitGroup
	watcher.Add(1)
	go func() {
		defer watcher.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if st := m.Stats(); st.UsedBlocks+st.FreeBlocks != st.TotalBlocks {
				errs <- fmt.Errorf("stats %+v: used + free != total", st)
				return
			}
			if err := m.CheckInvariants(); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(done)
	watcher.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	st := m.Stats()
	if st.UsedBlocks != 0 || st.Sequences != 0 {
		t.Fatalf("after every sequence was freed: %+v", st)
	}
	if st.PrefixHitTokens == 0 {
		t.Fatalf("no prefix hits although every prompt shares a prefix: %+v", st)
	}
	if err := m.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func concurrentWorker(m *Manager, w, rounds int, system []int32) error {
	r := rand.New(rand.NewPCG(uint64(w), 11))
	base := SeqID(w * 1000)
	buf := make([]byte, m.Layout().TokenBytes())
	// write stores positions [from, len) and then commits them.
	write := func(id SeqID, s *shadowSeq, from int) error {
		for kv := Key; kv <= Value; kv++ {
			c := s.content(0, kv)
			for p := from; p < len(s.tokens); p++ {
				data := append(c[p], c[p]...) // two heads
				if err := m.WriteKV(id, p, 0, kv, data); err != nil {
					return err
				}
			}
		}
		return m.Commit(id, len(s.tokens))
	}
	verify := func(id SeqID, s *shadowSeq) error {
		for kv := Key; kv <= Value; kv++ {
			for p, want := range s.content(0, kv) {
				if err := m.ReadKV(buf, id, p, 0, kv); err != nil {
					return err
				}
				if !bytes.Equal(buf, append(want, want...)) {
					return fmt.Errorf("worker %d seq %d pos %d reads %x, wrote %x", w, id, p, buf, want)
				}
			}
		}
		return nil
	}
	for round := range rounds {
		id := base + SeqID(round)
		s := &shadowSeq{tokens: cat(system, seq(int32(w*10), int32(w*10+r.IntN(6))))}
		res, err := m.Add(id, s.tokens, nil)
		if errors.Is(err, ErrCacheFull) {
			continue
		}
		if err != nil {
			return err
		}
		if err := write(id, s, res.CachedTokens); err != nil {
			return err
		}
		fork := id + 500
		if err := m.Fork(id, fork); err != nil {
			return err
		}
		f := &shadowSeq{tokens: append([]int32(nil), s.tokens...)}
		for _, x := range []struct {
			id SeqID
			s  *shadowSeq
		}{{id, s}, {fork, f}} {
			start := int32(r.IntN(50))
			more := seq(start, start+1+int32(r.IntN(5)))
			if err := m.Append(x.id, more...); errors.Is(err, ErrCacheFull) {
				continue
			} else if err != nil {
				return err
			}
			from := len(x.s.tokens)
			x.s.tokens = append(x.s.tokens, more...)
			if err := write(x.id, x.s, from); err != nil {
				return err
			}
		}
		end := r.IntN(len(f.tokens) + 1)
		if err := m.Truncate(fork, end); err != nil {
			return err
		}
		f.tokens = f.tokens[:end]
		for _, x := range []struct {
			id SeqID
			s  *shadowSeq
		}{{id, s}, {fork, f}} {
			if err := verify(x.id, x.s); err != nil {
				return err
			}
			if _, err := m.Export([]SeqID{x.id}); err != nil {
				return err
			}
			if err := m.Free(x.id); err != nil {
				return err
			}
		}
	}
	return nil
}
