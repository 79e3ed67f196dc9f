package services

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// TestTemplates: every template makes a configuration pen's grammar
// accepts, with the parameters it needs, and refuses bad ones.
func TestTemplates(t *testing.T) {
	l := Layout{Dir: t.TempDir(), Run: t.TempDir()}
	// The HTTPS template names its certificate's files; the grammar
	// checks them.
	tlsDir := filepath.Join(l.ServiceDir("site"), CertDir)
	os.MkdirAll(tlsDir, 0o700)
	cert, key := testPair(t)
	os.WriteFile(filepath.Join(tlsDir, "cert.pem"), cert, 0o600)
	os.WriteFile(filepath.Join(tlsDir, "key.pem"), key, 0o600)
	p := Params{Port: 8443, Interface: "eth1", VIP: netip.MustParseAddr("192.0.2.10")}
	want := map[string]string{
		"http":  "listen 8443\nhttp\n",
		"https": "ssl_cert " + filepath.Join(tlsDir, "cert.pem"),
		"dns":   "udp\nlisten 8443\n",
		"tcp":   "listen 8443\n",
		"dsr":   "dsr_if eth1\nlisten 192.0.2.10:8443\n",
	}
	for _, tm := range Templates {
		text, err := l.Render(tm, "site", p)
		if err != nil {
			t.Errorf("%s: %v", tm.Kind, err)
			continue
		}
		if !strings.Contains(text, want[tm.Kind]) || !strings.HasSuffix(text, "autowrite\n") {
			t.Errorf("%s:\n%s", tm.Kind, text)
		}
		in := config.New(config.Default(), config.Process{}, nil)
		if _, err := in.ExecLines("pen.cfg", []byte(text), config.FromFile); err != nil {
			t.Errorf("%s: pen refuses the template: %v\n%s", tm.Kind, err, text)
		}
	}
	dsr, _ := TemplateOf("dsr")
	for _, bad := range []Params{{Port: 0}, {Port: 70000}, {Port: 80, Interface: "eth/0", VIP: p.VIP}, {Port: 80, Interface: "eth0"}} {
		if _, err := l.Render(dsr, "site", bad); err == nil {
			t.Errorf("dsr with %+v accepted", bad)
		}
	}
	if _, err := l.Render(Templates[0], "../x", p); err == nil {
		t.Error("a template rendered for the name ../x")
	}
}

func testPair(t *testing.T) (cert, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}
