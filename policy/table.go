package policy

import (
	"slices"
	"strings"
)

const (
	// pruneEvery is how often, in selections, a table drops stale entries.
	pruneEvery = 64
	// keepFor is how many selections an entry outlives its PE's last
	// appearance among the candidates (so a PE excluded from a few
	// resolutions keeps its counters).
	keepFor = 256
)

// entry is the state of one PE.
type entry struct {
	id     string
	rev    uint64
	seen   uint64  // the selection in which the PE was last a candidate
	deg    float64 // degradation counter, reset when rev changes
	credit int64   // smooth weighted round robin
}

// table keeps per-PE state by PE id. It is not safe for concurrent use:
// its picker holds a lock around it.
type table struct {
	ents  []entry // sorted by id
	pos   []int32 // after sync: pos[i] is the entry of cands[i]
	picks uint64
}

// find returns the entry of id.
func (t *table) find(id string) (int, bool) {
	return slices.BinarySearchFunc(t.ents, id, func(e entry, id string) int { return strings.Compare(e.id, id) })
}

// sync counts one selection, maps every candidate to its entry (adding the
// new ones), resets the counters of re-registered PEs and, now and then,
// drops the entries of PEs gone for keepFor selections. Once the members
// are known it does not allocate.
func (t *table) sync(cands []Candidate) {
	t.picks++
	if t.picks%pruneEvery == 0 && len(t.ents) > len(cands) {
		t.ents = slices.DeleteFunc(t.ents, func(e entry) bool { return t.picks-e.seen > keepFor })
	}
	if cap(t.pos) < len(cands) {
		t.pos = make([]int32, len(cands), len(cands)+len(cands)/4)
	}
	t.pos = t.pos[:len(cands)]
	if !t.update(cands) {
		for i := range cands {
			if t.pos[i] < 0 {
				t.ents = append(t.ents, entry{id: cands[i].ID, rev: cands[i].Rev})
			}
		}
		slices.SortFunc(t.ents, func(a, b entry) int { return strings.Compare(a.id, b.id) })
		t.update(cands)
	}
}

// update fills pos (-1 for a candidate without an entry), marks the
// entries seen and resets the counters of re-registered PEs; it reports
// whether every candidate has an entry. Running it twice is harmless.
func (t *table) update(cands []Candidate) bool {
	ents, pos := t.ents, t.pos[:len(cands)]
	all, j := true, 0
	for i := range cands {
		c := &cands[i]
		k := j
		// cands and ents are both sorted by id: the entry is usually next.
		if k >= len(ents) || ents[k].id != c.ID {
			var ok bool
			if k, ok = t.find(c.ID); !ok {
				pos[i], all = -1, false
				continue
			}
		}
		e := &ents[k]
		e.seen = t.picks
		if e.rev != c.Rev {
			e.rev, e.deg = c.Rev, 0
		}
		pos[i], j = int32(k), k+1
	}
	return all
}

// at returns the entry of cands[i] (after sync).
func (t *table) at(i int) *entry { return &t.ents[t.pos[i]] }
