package ipam

import (
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The project's target: an allocate+release with 10,000 allocations in the
// store costs at most twice what it costs with 10.
var existingCounts = []int{10, 1000, 10000}

// prefill allocates n addresses in one transaction, as n ADDs would.
func prefill(b *testing.B, s *Store, p Pool, n int) {
	b.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error {
		nb, err := networkBucket(tx, p.Network)
		if err != nil {
			return err
		}
		for i := range n {
			if _, err := allocate(nb, p, ctr(fmt.Sprintf("existing-%d", i)), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAllocateRelease is one ADD and one DEL against an open store:
// two write transactions, each synced to disk.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, n := range existingCounts {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) {
			s := openTemp(b)
			p := pool(b, "bench", "10.0.0.0/16")
			prefill(b, s, p, n)
			b.ResetTimer()
			for i := range b.N {
				o := ctr(fmt.Sprintf("bench-%d", i))
				if _, err := s.Allocate(p, o, nil); err != nil {
					b.Fatal(err)
				}
				if _, _, err := s.Release(p.Network, o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAllocateReleaseReopen is the same as a plugin process does it:
// each operation opens the store, takes the lock, and closes it.
func BenchmarkAllocateReleaseReopen(b *testing.B) {
	for _, n := range existingCounts {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) {
			s := openTemp(b)
			path := s.Path()
			p := pool(b, "bench", "10.0.0.0/16")
			prefill(b, s, p, n)
			s.Close()
			b.ResetTimer()
			for i := range b.N {
				o := ctr(fmt.Sprintf("bench-%d", i))
				for _, op := range []func(*Store) error{
					func(s *Store) error { _, err := s.Allocate(p, o, nil); return err },
					func(s *Store) error { _, _, err := s.Release(p.Network, o); return err },
				} {
					s, err := Open(path, 5*time.Second)
					if err != nil {
						b.Fatal(err)
					}
					if err := op(s); err != nil {
						b.Fatal(err)
					}
					s.Close()
				}
			}
		})
	}
}
