package events

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestSubjectBuilders(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Subject("default", KindRegister, "echo"), "rsp.default.register.echo"},
		{Subject("s1", KindDeregister, "P"), "rsp.s1.deregister.P"},
		{Subject("s", KindFailure, "p"), "rsp.s.failure.p"},
		{Subject("s", KindResolve, "p"), "rsp.s.resolve.p"},
		{Subject("s", KindChanges, "p"), "rsp.s.changes.p"},
		{OutcomeSubject("default", "echo", "echo-1"), "rsp.default.outcome.echo.echo-1"},
		{Bucket("default"), "rsp_default"},
		{Key("echo", "echo-1"), "echo.echo-1"},
		{MsgID("echo-1", 42), "echo-1-42"},
		{StreamName, "RSP_EVENTS"},
		{QueueGroup, "rsp-nameservers"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if got, want := EventSubjects(), []string{"rsp.*.register.*", "rsp.*.deregister.*", "rsp.*.failure.*"}; !slices.Equal(got, want) {
		t.Errorf("EventSubjects() = %v, want %v", got, want)
	}
	if got, want := ScopeEventSubjects("a"), []string{"rsp.a.register.*", "rsp.a.deregister.*", "rsp.a.failure.*"}; !slices.Equal(got, want) {
		t.Errorf("ScopeEventSubjects(a) = %v, want %v", got, want)
	}
}

func TestSplitKey(t *testing.T) {
	pool, id, ok := SplitKey(Key("echo", "echo-1"))
	if !ok || pool != "echo" || id != "echo-1" {
		t.Fatalf("SplitKey = %q %q %v", pool, id, ok)
	}
	if _, _, ok := SplitKey("nodot"); ok {
		t.Fatal("SplitKey(nodot) ok")
	}
}

func TestParseSubject(t *testing.T) {
	good := []struct {
		subject, scope string
		kind           Kind
		pool           string
	}{
		{"rsp.default.register.echo", "default", KindRegister, "echo"},
		{"rsp.default.deregister.echo", "default", KindDeregister, "echo"},
		{"rsp.s-1.failure.Pool_2", "s-1", KindFailure, "Pool_2"},
		{"rsp.default.resolve.echo", "default", KindResolve, "echo"},
		{"rsp.default.changes.echo", "default", KindChanges, "echo"},
		{"rsp.default.outcome.echo.echo-1", "default", KindOutcome, "echo"},
		{Subject(strings.Repeat("s", 64), KindRegister, strings.Repeat("p", 128)), strings.Repeat("s", 64), KindRegister, strings.Repeat("p", 128)},
	}
	for _, c := range good {
		scope, kind, pool, err := ParseSubject(c.subject)
		if err != nil || scope != c.scope || kind != c.kind || pool != c.pool {
			t.Errorf("ParseSubject(%q) = %q %q %q %v, want %q %q %q", c.subject, scope, kind, pool, err, c.scope, c.kind, c.pool)
		}
	}
	bad := []struct{ subject, field string }{
		{"", "subject"},
		{"rsp", "subject"},
		{"rsp.default.register", "subject"},
		{"nats.default.register.echo", "subject"},
		{"RSP.default.register.echo", "subject"},
		{"rsp.default.register.echo.extra", "subject"},
		{"rsp.default.outcome.echo", "subject"},
		{"rsp.default.outcome.echo.echo-1.x", "subject"},
		{"rsp..register.echo", "scope"},
		{"rsp.Default.register.echo", "scope"},
		{"rsp.*.register.echo", "scope"},
		{"rsp.-s.register.echo", "scope"},
		{Subject(strings.Repeat("s", 65), KindRegister, "echo"), "scope"},
		{"rsp.default.register.", "pool"},
		{"rsp.default.register.*", "pool"},
		{"rsp.default.register.>", "pool"},
		{"rsp.default.register.-echo", "pool"},
		{Subject("default", KindRegister, strings.Repeat("p", 129)), "pool"},
	}
	for _, c := range bad {
		scope, kind, pool, err := ParseSubject(c.subject)
		if err == nil {
			t.Errorf("ParseSubject(%q) = %q %q %q, want an error", c.subject, scope, kind, pool)
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("ParseSubject(%q) = %v, want a %s error", c.subject, err, c.field)
		}
		if scope != "" || kind != "" || pool != "" {
			t.Errorf("ParseSubject(%q) returned parts with its error", c.subject)
		}
	}
}

// Known gaps of ParseSubject (see the report): it accepts any kind and does
// not check the pe_id token of an outcome subject.
func TestParseSubjectKnownGaps(t *testing.T) {
	for _, s := range []string{"rsp.default.bogus.echo", "rsp.default.outcome.echo.-bad", "rsp.default.outcome.echo."} {
		if _, _, _, err := ParseSubject(s); err == nil {
			t.Errorf("ParseSubject(%q) accepted", s)
		}
	}
}

func TestExtensionSubjects(t *testing.T) {
	if got := ServiceSubjects("default", "echo"); got != "rsp.default.svc.echo.>" {
		t.Errorf("ServiceSubjects = %s", got)
	}
	if got := DisconnectSubject("ACCT"); got != "$SYS.ACCOUNT.ACCT.DISCONNECT" {
		t.Errorf("DisconnectSubject = %s", got)
	}
	if tok := strings.Split(DisconnectExport, ".")[DisconnectAccountToken-1]; tok != "*" {
		t.Errorf("token %d of %s is %q, want *", DisconnectAccountToken, DisconnectExport, tok)
	}
	if got := ReportsBucket("default"); got != "rsp_default_reports" {
		t.Errorf("ReportsBucket = %s", got)
	}
}
