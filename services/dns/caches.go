package main

import (
	"container/list"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/rserpool/rsp/clients/rspclient"
)

// cacheSet holds a PoolCache per (scope, pool), made on first use, at most
// max of them (least recently used goes first); a cache of a pool without
// members goes emptyTTL after its last use.
type cacheSet struct {
	ctx      context.Context // the caches' lifetime
	clients  map[string]*rspclient.Client
	max      int
	emptyTTL time.Duration
	log      *slog.Logger

	mu  sync.Mutex
	m   map[cacheKey]*list.Element // of *cacheSlot
	lru *list.List                 // front: most recently used
}

type cacheKey struct{ scope, pool string }

type cacheSlot struct {
	key   cacheKey
	ready chan struct{} // closed once pc or err is set
	pc    *rspclient.PoolCache
	err   error
	used  time.Time // guarded by cacheSet.mu
}

func newCacheSet(ctx context.Context, clients map[string]*rspclient.Client, max int, emptyTTL time.Duration, log *slog.Logger) *cacheSet {
	return &cacheSet{ctx: ctx, clients: clients, max: max, emptyTTL: emptyTTL, log: log, m: map[cacheKey]*list.Element{}, lru: list.New()}
}

// get returns the cache of pool in scope (a served scope), filling it
// first if needed; the wait is bounded by the client's timeout.
func (cs *cacheSet) get(ctx context.Context, scope, pool string) (*rspclient.PoolCache, error) {
	k := cacheKey{scope, pool}
	cs.mu.Lock()
	if e, ok := cs.m[k]; ok {
		s := e.Value.(*cacheSlot)
		select {
		case <-s.ready:
			if s.err != nil || isDone(s.pc) {
				cs.removeLocked(e) // failed or stopped following: fill again
				goto fill
			}
		default:
		}
		s.used = time.Now()
		cs.lru.MoveToFront(e)
		cs.mu.Unlock()
		select {
		case <-s.ready:
			return s.pc, s.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
fill:
	s := &cacheSlot{key: k, ready: make(chan struct{}), used: time.Now()}
	cs.m[k] = cs.lru.PushFront(s)
	for cs.lru.Len() > cs.max {
		cs.removeLocked(cs.lru.Back())
	}
	cs.mu.Unlock()
	s.pc, s.err = cs.clients[scope].Cache(cs.ctx, pool)
	close(s.ready)
	if s.err != nil {
		cs.log.Warn("cache", "scope", scope, "pool", pool, "err", s.err)
		cs.mu.Lock()
		if e, ok := cs.m[k]; ok && e.Value.(*cacheSlot) == s {
			cs.lru.Remove(e)
			delete(cs.m, k)
		}
		cs.mu.Unlock()
		return nil, s.err
	}
	cs.log.Debug("cache", "scope", scope, "pool", pool, "members", s.pc.Len())
	return s.pc, nil
}

func isDone(pc *rspclient.PoolCache) bool {
	select {
	case <-pc.Done():
		return true
	default:
		return false
	}
}

// removeLocked drops a slot and closes its cache (once filled) in the
// background.
func (cs *cacheSet) removeLocked(e *list.Element) {
	s := e.Value.(*cacheSlot)
	cs.lru.Remove(e)
	delete(cs.m, s.key)
	go func() {
		<-s.ready
		if s.pc != nil {
			s.pc.Close()
		}
	}()
}

// sweep drops the caches of pools without members unused for emptyTTL,
// until ctx ends.
func (cs *cacheSet) sweep(ctx context.Context) {
	t := time.NewTicker(max(cs.emptyTTL/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cs.mu.Lock()
			for e := cs.lru.Back(); e != nil; {
				prev := e.Prev()
				s := e.Value.(*cacheSlot)
				select {
				case <-s.ready:
					if now.Sub(s.used) > cs.emptyTTL && (s.pc == nil || s.pc.Len() == 0) {
						cs.removeLocked(e)
					}
				default:
				}
				e = prev
			}
			cs.mu.Unlock()
		}
	}
}

// len is the number of caches held.
func (cs *cacheSet) len() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.lru.Len()
}

// closeAll closes every cache.
func (cs *cacheSet) closeAll() {
	cs.mu.Lock()
	var slots []*cacheSlot
	for e := cs.lru.Front(); e != nil; e = e.Next() {
		slots = append(slots, e.Value.(*cacheSlot))
	}
	cs.lru.Init()
	clear(cs.m)
	cs.mu.Unlock()
	for _, s := range slots {
		<-s.ready
		if s.pc != nil {
			s.pc.Close()
		}
	}
}
