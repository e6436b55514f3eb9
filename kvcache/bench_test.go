package kvcache

import (
	"fmt"
	"testing"
)

// BenchmarkManager measures the bookkeeping cost of the hot operations
// (no storage): appending and committing one decode token, forking and freeing a
// 512-token sequence, a fork whose first append copies a block, and adding
// a 512-token prompt found in the prefix cache.
func BenchmarkManager(b *testing.B) {
	for _, bs := range []int{16, 128} {
		newManager := func(b *testing.B) *Manager {
			m, err := NewManager(Config{Layout: Layout{NumBlocks: 1 << 14, BlockSize: bs, NumLayers: 1, NumKVHeads: 1, HeadDim: 1, DType: F16}})
			if err != nil {
				b.Fatal(err)
			}
			return m
		}
		prompt := seq(0, 512)

		b.Run(fmt.Sprintf("op=append+commit,block=%d", bs), func(b *testing.B) {
			m := newManager(b)
			const seqs, maxLen = 64, 2048
			for i := range seqs {
				if _, err := m.Add(SeqID(i), seq(int32(i*10000), int32(i*10000+1)), nil); err != nil {
					b.Fatal(err)
				}
			}
			lens := make([]int, seqs)
			i := 0
			for b.Loop() {
				id := SeqID(i % seqs)
				if err := m.Append(id, int32(i)); err != nil {
					b.Fatal(err)
				}
				if err := m.Commit(id, lens[id]+2); err != nil {
					b.Fatal(err)
				}
				if lens[id]++; lens[id] == maxLen {
					lens[id] = 0
					if err := m.Truncate(id, 1); err != nil {
						b.Fatal(err)
					}
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})

		b.Run(fmt.Sprintf("op=fork+free,block=%d,len=512", bs), func(b *testing.B) {
			m := newManager(b)
			if _, err := m.Add(0, prompt, nil); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := m.Fork(0, 1); err != nil {
					b.Fatal(err)
				}
				if err := m.Free(1); err != nil {
					b.Fatal(err)
				}
			}
		})

		b.Run(fmt.Sprintf("op=fork+cow+free,block=%d,len=513", bs), func(b *testing.B) {
			m := newManager(b)
			if _, err := m.Add(0, seq(0, 513), nil); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := m.Fork(0, 1); err != nil {
					b.Fatal(err)
				}
				if err := m.Append(1, 7); err != nil {
					b.Fatal(err)
				}
				if err := m.Free(1); err != nil {
					b.Fatal(err)
				}
			}
		})

		b.Run(fmt.Sprintf("op=add-cached+free,block=%d,len=512", bs), func(b *testing.B) {
			m := newManager(b)
			if _, err := m.Add(0, prompt, nil); err != nil {
				b.Fatal(err)
			}
			if err := m.Commit(0, len(prompt)); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := m.Add(1, prompt, nil); err != nil {
					b.Fatal(err)
				}
				if err := m.Free(1); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*float64(len(prompt))/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
