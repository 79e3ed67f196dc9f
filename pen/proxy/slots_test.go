package proxy

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// penStoreConn is how Pen's store_conn picks a slot: from the one taken
// last on, the first free one, round to 0 at the end of the table.
func penStoreConn(used []bool, last *int) int {
	i := *last
	for {
		if !used[i] {
			used[i] = true
			*last = i
			return i
		}
		i = (i + 1) % len(used)
		if i == *last {
			return -1
		}
	}
}

// TestSlotsAsPen takes and gives back slots at random, tables of 1 to 200
// slots, and wants Pen's slot every time.
func TestSlotsAsPen(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 3))
		n := 1 + r.IntN(200)
		var s slots
		used, last := make([]bool, n), 0
		var held []int
		for step := range 2000 {
			if len(held) > 0 && r.IntN(2) == 0 {
				k := r.IntN(len(held))
				i := held[k]
				held = append(held[:k], held[k+1:]...)
				s.give(int32(i))
				used[i] = false
				continue
			}
			got, want := int(s.take(n)), penStoreConn(used, &last)
			if got != want {
				t.Fatalf("seed %d step %d (table of %d, %d held): took %d, Pen takes %d", seed, step, n, len(held), got, want)
			}
			if got >= 0 {
				held = append(held, got)
			}
		}
	}
}

// TestSlotsShared: loops on several cores take and give back slots at
// once; no slot is ever held twice, and the count of slots in use ends
// at 0.
func TestSlotsShared(t *testing.T) {
	const n, workers, rounds = 100, 8, 20000
	var s slots
	var holder [n]atomic.Int32
	var wg sync.WaitGroup
	var bad atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []int32
			for i := range rounds {
				if len(mine) > 8 || (len(mine) > 0 && i%3 == 0) {
					x := mine[0]
					mine = mine[1:]
					holder[x].Store(0)
					s.give(x)
					continue
				}
				x := s.take(n)
				if x < 0 {
					continue
				}
				if !holder[x].CompareAndSwap(0, int32(w+1)) {
					bad.Add(1)
				}
				mine = append(mine, x)
			}
			for _, x := range mine {
				holder[x].Store(0)
				s.give(x)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d slots were taken while held", bad.Load())
	}
	if u := s.used.Load(); u != 0 {
		t.Errorf("%d slots in use after every one was given back", u)
	}
}
