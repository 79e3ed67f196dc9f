package tlsterm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

// newCert writes a certificate for name, signed by ca (self-signed when
// ca is nil), to base.crt and base.key.
func newCert(t *testing.T, base, name string, ca *tls.Certificate, isCA bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:         isCA, BasicConstraintsValid: true,
	}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent = ca.Leaf
		signer = ca.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(base+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(base+".key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	c, err := tls.LoadX509KeyPair(base+".crt", base+".key")
	if err != nil {
		t.Fatal(err)
	}
	c.Leaf, _ = x509.ParseCertificate(der)
	return c
}

// handshake runs a TLS server with cfg on a pipe-like loopback pair and
// returns the certificate name the client saw.
func handshake(t *testing.T, cfg *tls.Config, client *tls.Config) (string, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s := tls.Server(c, cfg)
		s.SetDeadline(time.Now().Add(5 * time.Second))
		s.Handshake()
		s.Write([]byte("x"))
		s.Close()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func TestSNIAndReload(t *testing.T) {
	dir := t.TempDir()
	newCert(t, filepath.Join(dir, "default"), "default.test", nil, false)
	sni := filepath.Join(dir, "sni")
	os.Mkdir(sni, 0o755)
	newCert(t, filepath.Join(sni, "www.example.test"), "www.example.test", nil, false)
	cfg, err := Config(config.TLS{Cert: filepath.Join(dir, "default.crt"), Key: filepath.Join(dir, "default.key"), SNIPath: sni}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"www.example.test": "www.example.test", "other.test": "default.test", "../etc": "default.test"} {
		got, err := handshake(t, cfg, &tls.Config{InsecureSkipVerify: true, ServerName: name})
		if err != nil || got != want {
			t.Errorf("SNI %q: got %q, %v; want %q", name, got, err, want)
		}
	}
	// Replace the default certificate: it is picked up without a restart.
	newCert(t, filepath.Join(dir, "default"), "renewed.test", nil, false)
	deadline := time.Now().Add(3 * reloadCheck)
	for {
		got, _ := handshake(t, cfg, &tls.Config{InsecureSkipVerify: true, ServerName: "other.test"})
		if got == "renewed.test" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificate not reloaded: still %q", got)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := newCert(t, filepath.Join(dir, "ca"), "test CA", nil, true)
	newCert(t, filepath.Join(dir, "server"), "server.test", nil, false)
	cl := newCert(t, filepath.Join(dir, "client"), "client.test", &ca, false)
	cfg, err := Config(config.TLS{Cert: filepath.Join(dir, "server.crt"), Key: filepath.Join(dir, "server.key"),
		RequireClient: true, CAFile: filepath.Join(dir, "ca.crt")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, cfg, &tls.Config{InsecureSkipVerify: true}); err == nil {
		t.Error("a client without a certificate got through -R")
	}
	if _, err := handshake(t, cfg, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cl}}); err != nil {
		t.Errorf("client with a certificate from the CA: %v", err)
	}
}

func TestProtocolAndCiphers(t *testing.T) {
	dir := t.TempDir()
	newCert(t, filepath.Join(dir, "s"), "s.test", nil, false)
	base := config.TLS{Cert: filepath.Join(dir, "s.crt"), Key: filepath.Join(dir, "s.key")}
	cfg, _ := Config(base, nil)
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("default floor %x", cfg.MinVersion)
	}
	t2 := base
	t2.Options = []string{"no_tlsv1.2"}
	cfg, _ = Config(t2, nil)
	if cfg.MinVersion != tls.VersionTLS13 {
		t.Errorf("no_tlsv1.2 floor %x", cfg.MinVersion)
	}
	suites, unknown := cipherSuites("ECDHE-RSA-AES128-GCM-SHA256:HIGH:!aNULL")
	if len(suites) != 1 || len(unknown) != 2 {
		t.Errorf("suites %v unknown %v", suites, unknown)
	}
	if _, err := Config(config.TLS{Cert: filepath.Join(dir, "missing.crt")}, nil); err == nil {
		t.Error("a missing certificate was accepted")
	}
}

// A certificate with a 1024-bit RSA key (Pen's bundled siag.pem has one) is
// served, with a log line saying that clients refuse it; a 2048-bit key
// gives no such line.
func TestWeakRSAKeyServedWithWarning(t *testing.T) {
	dir := t.TempDir()
	for _, bits := range []int{1024, 2048} {
		key, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rsa.test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		pemFile := filepath.Join(dir, fmt.Sprintf("rsa%d.pem", bits))
		b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})...)
		if err := os.WriteFile(pemFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
		var logged bytes.Buffer
		cfg, err := Config(config.TLS{Cert: pemFile}, diag.New(&logged))
		if err != nil {
			t.Fatalf("%d-bit key: %v", bits, err)
		}
		if got, err := handshake(t, cfg, &tls.Config{InsecureSkipVerify: true}); err != nil || got != "rsa.test" {
			t.Errorf("%d-bit key: handshake gave %q, %v", bits, got, err)
		}
		warned := strings.Contains(logged.String(), fmt.Sprintf("has a %d-bit RSA key", bits))
		if warned != (bits < minRSABits) {
			t.Errorf("%d-bit key: log %q", bits, logged.String())
		}
	}
}
