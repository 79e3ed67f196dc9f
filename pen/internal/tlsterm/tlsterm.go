// Package tlsterm implements pen's TLS termination settings: it maps Pen's
// SSL options (-E, -K, -G, -A, -R, -L, -Z and the ssl_* commands) onto a
// crypto/tls server configuration, serves per-name certificates from an
// SNI directory, staples OCSP responses, and reloads certificates when
// their files change, without a restart.
//
// Where Pen follows OpenSSL, Go's TLS stack decides some things itself:
// SSLv2/SSLv3 do not exist, renegotiation is never allowed (so
// ssl_client_renegotiation_interval has nothing to limit), the server's
// cipher preference is always applied, and TLS 1.3 cipher suites are not
// configurable. The oldest protocol accepted is TLS 1.2 unless -L or
// ssl_option lowers or raises it explicitly.
package tlsterm

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pen-lb/pen-appliance/pen/config"
	"github.com/pen-lb/pen-appliance/pen/diag"
)

// reloadCheck bounds how often certificate files are checked for changes.
const reloadCheck = 5 * time.Second

// maxOCSP is the largest OCSP response read (Pen's OCSP_RESP_MAX).
const maxOCSP = 10000

// Config builds the server's tls.Config from Pen's settings. The returned
// configuration reloads its certificates by itself.
func Config(t config.TLS, log *diag.Logger) (*tls.Config, error) {
	if !t.Enabled() {
		return nil, errors.New("no certificate (-E) given")
	}
	key := t.Key
	if key == "" {
		key = t.Cert
	}
	def := &certFile{cert: t.Cert, key: key, ocsp: t.OCSPResponse}
	if err := def.load(); err != nil {
		return nil, err
	}
	def.warnWeak(log)
	s := &store{def: def, sniPath: t.SNIPath, names: map[string]*sniEntry{}, log: log}
	cfg := &tls.Config{
		GetCertificate: s.getCertificate,
		MinVersion:     tls.VersionTLS12,
		Renegotiation:  tls.RenegotiateNever,
	}
	switch t.Protocol {
	case "tls1":
		cfg.MinVersion = tls.VersionTLS10
	case "ssl3":
		cfg.MinVersion = tls.VersionTLS10 // SSLv3 does not exist here; TLS 1.0 is the floor
	}
	for _, o := range t.Options {
		switch o {
		case "no_tlsv1":
			cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS11)
		case "no_tlsv1.1":
			cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS12)
		case "no_tlsv1.2":
			cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS13)
		}
	}
	if t.Ciphers != "" {
		suites, unknown := cipherSuites(t.Ciphers)
		if len(unknown) > 0 && log != nil {
			log.Printf("ssl_ciphers: ignoring %s (not OpenSSL names of cipher suites Go supports)", strings.Join(unknown, ":"))
		}
		if len(suites) > 0 {
			cfg.CipherSuites = suites
		}
	}
	if t.RequireClient {
		pool, err := clientCAs(t.CAFile, t.CADir)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if t.SNIPath != "" {
		// Per-name CA files (NAME.ca) verify client certificates for
		// that name.
		base := cfg.Clone()
		cfg.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			cf := s.sni(hi.ServerName)
			if cf == nil || cf.caPool() == nil || !t.RequireClient {
				return nil, nil
			}
			c := base.Clone()
			c.ClientCAs = cf.caPool()
			return c, nil
		}
	}
	return cfg, nil
}

// clientCAs loads the CAs that sign client certificates: -G file, -A
// directory, or the system's roots when neither is given (as Pen's default
// verify paths).
func clientCAs(file, dir string) (*x509.CertPool, error) {
	if file == "" && dir == "" {
		return x509.SystemCertPool()
	}
	pool := x509.NewCertPool()
	if file != "" {
		pem, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no certificates", file)
		}
	}
	if dir != "" {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("CA directory: %w", err)
		}
		for _, e := range entries {
			if e.IsDir() {
				continue
			}
			if pem, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
				pool.AppendCertsFromPEM(pem)
			}
		}
	}
	return pool, nil
}

// certFile is a certificate with its key and optional OCSP response and
// CA file, reloaded when any of them changes.
type certFile struct {
	cert, key, ocsp, ca string

	mu      sync.Mutex
	c       *tls.Certificate
	pool    *x509.CertPool
	checked time.Time
	stamp   string
}

func stampOf(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

func (f *certFile) load() error {
	c, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return fmt.Errorf("loading certificate %s and key %s: %w", f.cert, f.key, err)
	}
	if f.ocsp != "" {
		if b, err := os.ReadFile(f.ocsp); err == nil && len(b) <= maxOCSP {
			c.OCSPStaple = b
		}
	}
	var pool *x509.CertPool
	if f.ca != "" {
		if pem, err := os.ReadFile(f.ca); err == nil {
			pool = x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
		}
	}
	f.c, f.pool = &c, pool
	f.stamp = stampOf(f.cert, f.key, f.ocsp, f.ca)
	f.checked = time.Now()
	return nil
}

// get returns the certificate, reloading it when its files changed. A
// reload that fails keeps the certificate that works.
func (f *certFile) get(log *diag.Logger) *tls.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.checked) >= reloadCheck {
		f.checked = time.Now()
		if st := stampOf(f.cert, f.key, f.ocsp, f.ca); st != f.stamp {
			old, oldPool, oldStamp := f.c, f.pool, f.stamp
			if err := f.load(); err != nil {
				if log != nil {
					log.Printf("TLS: keeping the old certificate: %v", err)
				}
				f.c, f.pool, f.stamp = old, oldPool, oldStamp
			} else if log != nil {
				log.Printf("TLS: reloaded %s", f.cert)
				f.warnWeak(log)
			}
		}
	}
	return f.c
}

// minRSABits is the smallest RSA key that current clients accept: browsers
// and OpenSSL 3 clients that check certificates (at OpenSSL's default
// security level) refuse 1024-bit keys.
const minRSABits = 2048

// warnWeak logs that the certificate's key is one that many clients refuse.
// pen serves it anyway, as Go's TLS allows, so that a configuration that
// worked with an older Pen (whose bundled test certificate has a 1024-bit
// key) still starts.
func (f *certFile) warnWeak(log *diag.Logger) {
	if log == nil || f.c == nil || f.c.Leaf == nil {
		return
	}
	if k, ok := f.c.Leaf.PublicKey.(*rsa.PublicKey); ok && k.N.BitLen() < minRSABits {
		log.Printf("TLS: %s has a %d-bit RSA key, which browsers and clients that check certificates refuse; use a %d-bit RSA or an ECDSA key", f.cert, k.N.BitLen(), minRSABits)
	}
}

func (f *certFile) caPool() *x509.CertPool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pool
}

type store struct {
	def     *certFile
	sniPath string
	log     *diag.Logger

	mu    sync.Mutex
	names map[string]*sniEntry
}

// sniEntry is a name's certificate, or the time its files were found
// missing: misses are remembered briefly, so that an unknown name is not
// looked up on every handshake, yet files added later are found.
type sniEntry struct {
	cf   *certFile
	miss time.Time
}

// maxNames bounds the SNI cache; clients choose the names.
const maxNames = 10000

func (s *store) getCertificate(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cf := s.sni(hi.ServerName); cf != nil {
		return cf.get(s.log), nil
	}
	return s.def.get(s.log), nil
}

// validName accepts server names fit to be file names: DNS labels only.
func validName(n string) bool {
	if n == "" || len(n) > 253 || strings.HasPrefix(n, ".") || strings.Contains(n, "..") {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// sni returns the certificate for a server name from the SNI directory
// (NAME.crt, NAME.key, optional NAME.ocsp and NAME.ca), or nil.
func (s *store) sni(name string) *certFile {
	if s.sniPath == "" {
		return nil
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if !validName(name) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.names[name]; ok {
		if e.cf != nil || time.Since(e.miss) < reloadCheck {
			return e.cf
		}
	}
	base := filepath.Join(s.sniPath, name)
	cf := &certFile{cert: base + ".crt", key: base + ".key", ocsp: base + ".ocsp", ca: base + ".ca"}
	if err := cf.load(); err != nil {
		cf = nil
	}
	if len(s.names) >= maxNames {
		clear(s.names)
	}
	s.names[name] = &sniEntry{cf: cf, miss: time.Now()}
	return cf
}
