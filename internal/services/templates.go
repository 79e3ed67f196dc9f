package services

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

// A Template makes the configuration of a new service.
type Template struct {
	Kind  string // "http", "https", "dns", "tcp", "dsr"
	Title string
	Port  int // the default port
	// TLS: the service needs a certificate and key (uploaded into the
	// service's CertDir).
	TLS bool
	// Interface: the service needs a network interface and a virtual
	// address (DSR).
	Interface bool
}

// Templates are the kinds of service the admin UI offers.
var Templates = []Template{
	{Kind: "http", Title: "HTTP", Port: 80},
	{Kind: "https", Title: "HTTPS (TLS termination)", Port: 443, TLS: true},
	{Kind: "dns", Title: "DNS over UDP", Port: 53},
	{Kind: "tcp", Title: "TCP", Port: 0},
	{Kind: "dsr", Title: "Direct server return (DSR)", Port: 80, Interface: true},
}

// TemplateOf returns the template of a kind.
func TemplateOf(kind string) (Template, bool) {
	for _, t := range Templates {
		if t.Kind == kind {
			return t, true
		}
	}
	return Template{}, false
}

// Params fill a template.
type Params struct {
	Port      int
	Interface string     // DSR: the interface
	VIP       netip.Addr // DSR: the virtual address
}

// Render returns the configuration of service name made from t: Pen's
// commands, autowrite on (so that every change through the control
// socket is saved), no servers yet. For TLS it names the certificate and
// key files in the service's CertDir below l.Dir.
func (l Layout) Render(t Template, name string, p Params) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	if p.Port < 1 || p.Port > 65535 {
		return "", fmt.Errorf("port %d: give a port from 1 to 65535", p.Port)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Service %s, made from the %s template.\n", name, t.Title)
	switch t.Kind {
	case "http":
		fmt.Fprintf(&b, "listen %d\nhttp\n", p.Port)
	case "https":
		dir := filepath.Join(l.ServiceDir(name), CertDir)
		fmt.Fprintf(&b, "listen %d\nhttp\nssl_cert %s\nssl_key %s\n", p.Port, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	case "dns":
		fmt.Fprintf(&b, "udp\nlisten %d\n", p.Port)
	case "tcp":
		fmt.Fprintf(&b, "listen %d\n", p.Port)
	case "dsr":
		if err := ValidName(p.Interface); err != nil || len(p.Interface) > 15 {
			return "", fmt.Errorf("interface %q: give a network interface's name", p.Interface)
		}
		if !p.VIP.IsValid() {
			return "", fmt.Errorf("give the virtual address (VIP) the service answers on")
		}
		fmt.Fprintf(&b, "dsr_if %s\nlisten %s\n", p.Interface, netip.AddrPortFrom(p.VIP, uint16(p.Port)))
	default:
		return "", fmt.Errorf("no template %q", t.Kind)
	}
	b.WriteString("autowrite\n")
	return b.String(), nil
}
