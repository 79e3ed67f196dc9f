package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// maximalConfig is the largest configuration there can be: every server
// slot with the longest address and numbers, every access list full of the
// longest entries, weight and prio kept in the lines Pen does not save.
func maximalConfig() string {
	var b strings.Builder
	path := "/" + strings.Repeat("s", 106) // the longest unix socket path
	for i := 0; i < MaxServers; i++ {
		fmt.Fprintf(&b, "server %d acl 9 address %s port 65535 max %d hard %d weight %d prio %d\n", i, path, MaxInt, MaxInt, MaxInt, MaxInt)
	}
	for n := 0; n < 10; n++ {
		for i := 0; i < MaxACLEntries; i++ {
			fmt.Fprintf(&b, "acl %d permit ffff:ffff:ffff:ffff:ffff:ffff:%x:ffff/128\n", n, i)
		}
	}
	return b.String()
}

// MaxConfigSize holds the largest configuration write can produce, so
// that every written file reads back (the admin UI wrote a 1.2 MB file
// it could not upload again).
func TestMaxConfigFits(t *testing.T) {
	in := newTest(t)
	start := time.Now()
	if _, err := in.ExecLines("max.cfg", []byte(maximalConfig()), FromControl); err != nil {
		t.Fatal(err)
	}
	applied := time.Since(start)
	out := in.Render("pen.cfg")
	t.Logf("largest configuration: %d bytes written (MaxConfigSize %d), applied in %v", len(out), MaxConfigSize, applied)
	if len(out) > MaxConfigSize*3/4 {
		t.Errorf("the largest configuration is %d bytes; MaxConfigSize %d leaves too little margin", len(out), MaxConfigSize)
	}
	file := filepath.Join(t.TempDir(), "pen.cfg")
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	again := newTest(t)
	if _, err := again.ExecFile(file, FromFile); err != nil {
		t.Fatalf("the largest configuration does not read back: %v", err)
	}
	if got := again.Render("pen.cfg"); string(got) != string(out) {
		t.Error("the largest configuration reads back different")
	}
}

// A change of 20,000 lines applies at once, and a command that leaves the
// server table alone does not copy it: a change used to cost time in
// proportion to the size of the configuration, and 20,000 of them took
// 35 s.
func TestLargeChangeFast(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&b, "server %d address 127.0.%d.%d port %d weight 2\n", i, i/250, i%250+1, 1000+i)
	}
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&b, "acl %d deny 10.%d.%d.0 255.255.255.0\n", i%10, i/250, i%250)
	}
	in := newTest(t)
	start := time.Now()
	if _, err := in.ExecLines("big", []byte(b.String()), FromWeb); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("applying 25,000 lines took %v", d)
	} else {
		t.Logf("applying 25,000 lines: %v", d)
	}
	servers, acl3 := in.Config().Servers, in.Config().ACLs[3]
	start = time.Now()
	for i := 0; i < 2000; i++ {
		exec(t, in, fmt.Sprintf("blacklist %d", i+1))
		exec(t, in, fmt.Sprintf("acl 4 permit 192.0.2.%d", i%250))
		exec(t, in, "no acl 4")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("6,000 commands with 20,000 servers took %v", d)
	} else {
		t.Logf("6,000 commands with 20,000 servers: %v", d)
	}
	c := in.Config()
	if &c.Servers[0] != &servers[0] || &c.ACLs[3][0] != &acl3[0] {
		t.Error("commands that do not change the server table or acl 3 copied them")
	}
	// A changed table is a copy: the running configuration is never
	// changed in place.
	exec(t, in, "server 5 weight 3")
	exec(t, in, "acl 3 permit 192.0.2.1")
	if servers[5].Weight != 2 || len(acl3) != 500 || in.Config().Servers[5].Weight != 3 || len(in.Config().ACLs[3]) != 501 {
		t.Error("a change wrote into the configuration it replaced")
	}
	// 20,000 removals from the front in one change.
	start = time.Now()
	if _, err := in.ExecLines("x", []byte(strings.Repeat("no server 0\n", 20000)), FromControl); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("20,000 removals took %v", d)
	} else {
		t.Logf("20,000 removals: %v", d)
	}
	if len(in.Config().Servers) != 0 || len(servers) != 20000 || servers[0].Port != 1000 {
		t.Error("removals: wrong table, or the old one was changed")
	}
}

// Removing a slot keeps the order of the others, from either half of the
// table, and their identities.
func TestNoServerKeepsOrder(t *testing.T) {
	in := newTest(t)
	for i := 0; i < 6; i++ {
		exec(t, in, fmt.Sprintf("server %d address 127.0.0.1 port %d", i, 100+i))
	}
	ids := map[int]uint64{}
	for _, s := range in.Config().Servers {
		ids[s.Port] = s.ID()
	}
	exec(t, in, "no server 1")
	exec(t, in, "no server 3")
	if _, err := in.ExecLines("x", []byte("no server 0\nserver 5 address 127.0.0.1 port 200\n"), FromControl); err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, s := range in.Config().Servers {
		got = append(got, s.Port)
		if s.Port < 200 && s.ID() != ids[s.Port] {
			t.Errorf("server with port %d lost its identity", s.Port)
		}
	}
	if fmt.Sprint(got) != "[102 103 105 0 0 200]" {
		t.Errorf("ports after removals: %v", got)
	}
}

// A command line longer than a file's line can be is refused, so that
// write never produces a line it cannot read back.
func TestLongLineRefused(t *testing.T) {
	in := newTest(t)
	line := "ssl_ciphers " + strings.Repeat("HIGH:", MaxLineSize/5)
	if _, err := in.Exec(line, FromWeb); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("a %d-byte line: %v", len(line), err)
	}
	if in.Config().TLS.Ciphers != "" {
		t.Error("the long line was applied")
	}
	exec(t, in, line[:MaxLineSize])
	if _, err := newTest(t).ExecLines("x", in.Render("x"), FromFile); err != nil {
		t.Errorf("the longest line does not read back: %v", err)
	}
}
