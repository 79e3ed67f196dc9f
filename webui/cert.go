package webui

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pen-lb/pen-appliance/pen/config"
)

// CertLifetime is how long a generated certificate is valid.
const CertLifetime = 10 * 365 * 24 * time.Hour

// EnsureCert makes sure certFile (and keyFile, which may be the same
// file) exist: when the certificate is missing it generates a self-signed
// one for hosts, reusing the key file if that exists, else making a new
// ECDSA P-256 key. Files are written atomically, the key with mode 0600.
// It reports whether it generated a certificate.
func EnsureCert(certFile, keyFile string, hosts []string, now time.Time) (bool, error) {
	if keyFile == "" {
		keyFile = certFile
	}
	if _, err := os.Stat(certFile); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("admin certificate: %w", err)
	}
	var key *ecdsa.PrivateKey
	if keyFile != certFile {
		if data, err := os.ReadFile(keyFile); err == nil {
			k, err := parseKey(data)
			if err != nil {
				return false, fmt.Errorf("admin certificate %s is missing and key %s is unusable: %w", certFile, keyFile, err)
			}
			key = k
		} else if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("admin key: %w", err)
		}
	}
	fresh := key == nil
	if fresh {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return false, fmt.Errorf("generating admin key: %w", err)
		}
	}
	certPEM, err := selfSigned(key, hosts, now)
	if err != nil {
		return false, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return false, fmt.Errorf("encoding admin key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.MkdirAll(filepath.Dir(certFile), 0o755); err != nil {
		return false, fmt.Errorf("admin certificate: %w", err)
	}
	if keyFile == certFile {
		return true, config.WriteFileAtomic(certFile, append(certPEM, keyPEM...), 0o600)
	}
	if fresh {
		if err := os.MkdirAll(filepath.Dir(keyFile), 0o755); err != nil {
			return false, fmt.Errorf("admin key: %w", err)
		}
		if err := config.WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
			return false, err
		}
	}
	return true, config.WriteFileAtomic(certFile, certPEM, 0o644)
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no private key in PEM data")
		}
		if b.Type != "PRIVATE KEY" && b.Type != "EC PRIVATE KEY" {
			continue
		}
		if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
			if ek, ok := k.(*ecdsa.PrivateKey); ok {
				return ek, nil
			}
			return nil, errors.New("only ECDSA keys can be reused for a generated certificate")
		}
		return x509.ParseECPrivateKey(b.Bytes)
	}
}

func selfSigned(key *ecdsa.PrivateKey, hosts []string, now time.Time) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("admin certificate serial: %w", err)
	}
	cn := "pen admin"
	if len(hosts) > 0 {
		cn = hosts[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"pen appliance (self-signed)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CertLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating admin certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// certHosts are the names a generated certificate is for: the host name,
// localhost, and the machine's addresses now.
func certHosts(hostname string) []string {
	hosts := []string{}
	if hostname != "" {
		hosts = append(hosts, hostname)
	}
	hosts = append(hosts, "localhost", "127.0.0.1", "::1")
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() {
				hosts = append(hosts, p.Addr().String())
			}
		}
	}
	return hosts
}

// certStore serves the admin certificate and reloads it when its files
// change (a certificate renewed by hand needs no restart).
type certStore struct {
	mu       sync.Mutex
	certFile string
	keyFile  string
	cert     *tls.Certificate
	stamp    string
}

func fileStamp(paths ...string) string {
	s := ""
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return s
}

// load (re)reads the files if they changed since the last load.
func (c *certStore) load(certFile, keyFile string) (*tls.Certificate, error) {
	if keyFile == "" {
		keyFile = certFile
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	stamp := fileStamp(certFile, keyFile)
	if c.cert != nil && c.certFile == certFile && c.keyFile == keyFile && c.stamp == stamp {
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading admin certificate: %w", err)
	}
	c.certFile, c.keyFile, c.cert, c.stamp = certFile, keyFile, &cert, stamp
	return c.cert, nil
}

func (c *certStore) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	certFile, keyFile, cur := c.certFile, c.keyFile, c.cert
	c.mu.Unlock()
	if cert, err := c.load(certFile, keyFile); err == nil {
		return cert, nil
	}
	return cur, nil // keep serving the last good one
}

// certUsable reports why the admin listener could not serve TLS with
// certFile and keyFile, or nil: existing files must hold a matching pair,
// and missing ones must be creatable (EnsureCert generates them when the
// listener opens). Errors name the files, never their contents.
func certUsable(certFile, keyFile string) error {
	if keyFile == "" {
		keyFile = certFile
	}
	_, err := os.Stat(certFile)
	switch {
	case err == nil:
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return fmt.Errorf("admin_tls %s %s: not a usable certificate and key: %w", certFile, keyFile, err)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("admin_tls: %w", err)
	}
	if keyFile != certFile {
		if data, err := os.ReadFile(keyFile); err == nil {
			if _, err := parseKey(data); err != nil {
				return fmt.Errorf("admin_tls: certificate %s is missing and key %s is unusable: %w", certFile, keyFile, err)
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("admin_tls: %w", err)
		} else if err := creatable(keyFile); err != nil {
			return err
		}
	}
	return creatable(certFile)
}

// creatable reports why file could not be created, or nil: the nearest
// directory above it that exists must be a directory pen may write to.
func creatable(file string) error {
	dir := filepath.Dir(file)
	for {
		fi, err := os.Stat(dir)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("admin_tls: %s cannot be created: %s is not a directory", file, dir)
			}
			if err := unix.Access(dir, unix.W_OK); err != nil {
				return fmt.Errorf("admin_tls: %s cannot be created in %s: %w", file, dir, err)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("admin_tls: %s cannot be created: %w", file, err)
		}
		up := filepath.Dir(dir)
		if up == dir {
			return fmt.Errorf("admin_tls: %s cannot be created", file)
		}
		dir = up
	}
}
