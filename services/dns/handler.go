package main

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/rserpool/rsp/events"
)

// zone is the DNS zone served.
const zone = "rsp."

// handler answers the queries of the zone from the pool caches.
type handler struct {
	caches *cacheSet
	ttl    uint32
	max    int
	log    *slog.Logger
}

func (h *handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := h.answer(req)
	if err := w.WriteMsg(m); err != nil {
		h.log.Debug("write", "err", err)
	}
}

// answer builds the reply to req.
func (h *handler) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeNotImplemented)
		if len(req.Question) != 1 {
			m.SetRcode(req, dns.RcodeFormatError)
		}
		return m
	}
	m.SetReply(req)
	q := req.Question[0]
	labels := dns.SplitDomainName(q.Name)
	if len(labels) == 0 || !strings.EqualFold(labels[len(labels)-1], "rsp") || q.Qclass != dns.ClassINET {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	labels = labels[:len(labels)-1]
	if len(labels) == 0 { // the apex
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, h.soa())
		} else {
			m.Ns = append(m.Ns, h.soa())
		}
		return m
	}
	scope := strings.ToLower(labels[len(labels)-1])
	if _, ok := h.caches.clients[scope]; !ok {
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
		return m
	}
	labels = labels[:len(labels)-1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch {
	case len(labels) == 0: // <scope>.rsp.: exists, holds nothing
		return h.nodata(m)
	case len(labels) == 1: // <pool>.<scope>.rsp.
		return h.addresses(ctx, m, q, scope, labels[0], "")
	case len(labels) == 2 && strings.HasPrefix(labels[0], "_") && (strings.EqualFold(labels[1], "_tcp") || strings.EqualFold(labels[1], "_udp")):
		return h.srv(ctx, m, q, scope, labels[0][1:], strings.ToLower(labels[1][1:]))
	case len(labels) == 2: // <pe_id>.<pool>.<scope>.rsp.
		return h.addresses(ctx, m, q, scope, labels[1], labels[0])
	}
	return h.nxdomain(m)
}

func (h *handler) soa() dns.RR {
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: h.ttl},
		Ns:  "ns." + zone, Mbox: "hostmaster." + zone, Serial: 1,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: h.ttl,
	}
}

func (h *handler) nxdomain(m *dns.Msg) *dns.Msg {
	m.Rcode = dns.RcodeNameError
	m.Ns = append(m.Ns, h.soa())
	return m
}

func (h *handler) nodata(m *dns.Msg) *dns.Msg {
	m.Ns = append(m.Ns, h.soa())
	return m
}

// pool returns the pool's picker and members; !ok when m already holds the
// answer: NXDOMAIN for a pool without members, SERVFAIL when its cache
// could not be filled.
func (h *handler) pool(ctx context.Context, m *dns.Msg, scope, pool string) (pick func(n int) []events.Element, all []events.Element, ok bool) {
	if events.CheckPool(pool) != nil {
		h.nxdomain(m)
		return nil, nil, false
	}
	pc, err := h.caches.get(ctx, scope, pool)
	if err != nil {
		m.Rcode = dns.RcodeServerFailure
		m.Authoritative = false
		return nil, nil, false
	}
	all = pc.Members()
	if len(all) == 0 {
		h.nxdomain(m)
		return nil, nil, false
	}
	return func(n int) []events.Element { return pc.Pick(n, nil) }, all, true
}

// addresses answers <pool>.<scope>.rsp. (peID "") with the IPs of the PEs
// picked by the policy, or <pe_id>.<pool>.<scope>.rsp. with that PE's.
func (h *handler) addresses(ctx context.Context, m *dns.Msg, q dns.Question, scope, pool, peID string) *dns.Msg {
	pick, all, ok := h.pool(ctx, m, scope, pool)
	if !ok {
		return m
	}
	var els []events.Element
	if peID == "" {
		els = pick(h.max)
	} else {
		for _, e := range all {
			if strings.EqualFold(e.PEID, peID) {
				els = append(els, e)
			}
		}
		if len(els) == 0 {
			return h.nxdomain(m)
		}
	}
	seen := map[netip.Addr]bool{}
	for _, e := range els {
		for _, t := range e.Transports {
			if t.Proto != "tcp" && t.Proto != "udp" {
				continue
			}
			ip, _, ok := hostPort(t.Addr)
			if !ok || seen[ip] {
				continue
			}
			if rr := h.addrRR(q.Name, q.Qtype, ip); rr != nil && len(m.Answer) < h.max {
				seen[ip] = true
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	if len(m.Answer) == 0 {
		return h.nodata(m)
	}
	return m
}

// srv answers _<pool>._<proto>.<scope>.rsp. with a SRV record per PE picked
// (its first transport of proto), priority its rank, and the A/AAAA of the
// targets as additionals.
func (h *handler) srv(ctx context.Context, m *dns.Msg, q dns.Question, scope, pool, proto string) *dns.Msg {
	pick, _, ok := h.pool(ctx, m, scope, pool)
	if !ok {
		return m
	}
	if q.Qtype != dns.TypeSRV && q.Qtype != dns.TypeANY {
		return h.nodata(m)
	}
	for _, e := range pick(h.max) {
		target := dns.Fqdn(e.PEID + "." + pool + "." + scope + "." + zone[:len(zone)-1])
		if _, ok := dns.IsDomainName(target); !ok {
			continue
		}
		for _, t := range e.Transports {
			if t.Proto != proto {
				continue
			}
			ip, port, ok := hostPort(t.Addr)
			if !ok {
				continue
			}
			m.Answer = append(m.Answer, &dns.SRV{
				Hdr:      dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: h.ttl},
				Priority: uint16(len(m.Answer)), Weight: 1, Port: port, Target: target,
			})
			qt := dns.TypeA
			if ip.Is6() {
				qt = dns.TypeAAAA
			}
			m.Extra = append(m.Extra, h.addrRR(target, qt, ip))
			break
		}
	}
	if len(m.Answer) == 0 {
		return h.nodata(m)
	}
	return m
}

// addrRR is the A (or AAAA) record of ip named name, nil if ip is not of
// type qtype (A, AAAA or ANY).
func (h *handler) addrRR(name string, qtype uint16, ip netip.Addr) dns.RR {
	hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: h.ttl}
	switch {
	case ip.Is4() && (qtype == dns.TypeA || qtype == dns.TypeANY):
		hdr.Rrtype = dns.TypeA
		return &dns.A{Hdr: hdr, A: net.IP(ip.AsSlice())}
	case ip.Is6() && (qtype == dns.TypeAAAA || qtype == dns.TypeANY):
		hdr.Rrtype = dns.TypeAAAA
		return &dns.AAAA{Hdr: hdr, AAAA: net.IP(ip.AsSlice())}
	}
	return nil
}

// hostPort splits a transport addr HOST:PORT whose HOST is an IP, in the
// forms the registration accepts (net.SplitHostPort's: an IPv4 address may
// be in brackets too).
func hostPort(addr string) (netip.Addr, uint16, bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	return ip.Unmap().WithZone(""), uint16(n), true
}
