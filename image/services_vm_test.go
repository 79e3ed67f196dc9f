package image

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"html"
	"io"
	"math/big"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// TestServicesPC boots an image built with two services (-config of a
// directory: main, HTTP on 80 with the admin UI, and dns, DNS on 53/udp)
// and adds a third through the admin UI, from the HTTPS template with an
// uploaded certificate. All three serve backends on the host; a bad
// upload to one of them (refused by the grammar, and one refused when pen
// cannot bind its listener) leaves all three serving.
//
// Unlike the other boot tests the user network is not restricted: qemu's
// guestfwd carries TCP only, so the guest reaches the DNS backend on the
// host's loopback interface at 10.0.2.2.
func TestServicesPC(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	qemu := testenv.NeedProgram(t, "qemu-system-x86_64", "qemu-system-x86")
	socat := testenv.NeedProgram(t, "socat", "socat")
	const code, vars = "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	testenv.NeedFile(t, code, "ovmf")
	testenv.NeedFile(t, vars, "ovmf")
	started := time.Now()

	// Backends on the host: HTTP (through guestfwd) and DNS over UDP.
	token := "pen-appliance services test " + rand.Text()
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, token) })}
	go srv.Serve(web)
	t.Cleanup(func() { srv.Close() })
	dnsBackend, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dnsBackend.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := dnsBackend.ReadFrom(buf)
			if err != nil {
				return
			}
			dnsBackend.WriteTo(append([]byte("answer to "), buf[:n]...), from)
		}
	}()
	dnsPort := dnsBackend.LocalAddr().(*net.UDPAddr).Port

	// The image: -config of a directory.
	dir := t.TempDir()
	cfgDir := filepath.Join(dir, "config")
	os.MkdirAll(cfgDir, 0o755)
	mainCfg := string(testConfig) + "admin_listen 8443\nadmin_tls /perm/pen/admin-cert.pem /perm/pen/admin-key.pem\n" +
		"admin_password_file /perm/gokr-pw.txt /etc/gokr-pw.txt\nautowrite\n"
	os.WriteFile(filepath.Join(cfgDir, "main.cfg"), []byte(mainCfg), 0o644)
	os.WriteFile(filepath.Join(cfgDir, "dns.cfg"), []byte(fmt.Sprintf("udp\nlisten 53\nblacklist 2\nserver 0 address 10.0.2.2 port %d\nautowrite\n", dnsPort)), 0o644)
	mainText, svcs, err := LoadConfigs(cfgDir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := boards.Lookup("pc")
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := Build(ctx, Options{Board: b, Output: disk, Hostname: testHostname, Password: testPassword,
		Config: mainText, Services: svcs, Size: testSize, ModuleDir: moduleRoot(t), Time: time.Now().Truncate(time.Second)}); err != nil {
		t.Fatal(err)
	}
	built := time.Since(started)
	varsCopy := filepath.Join(dir, "OVMF_VARS.fd")
	if out, err := exec.Command("cp", vars, varsCopy).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}

	ports := freePorts(t, 4)
	httpPort, httpsPort, adminPort, dnsHostPort := ports[0], ports[1], ports[2], ports[3]
	netdev := fmt.Sprintf("user,id=n0,"+
		"hostfwd=tcp:127.0.0.1:%d-:80,hostfwd=tcp:127.0.0.1:%d-:443,hostfwd=tcp:127.0.0.1:%d-:8443,hostfwd=udp:127.0.0.1:%d-:53,"+
		"guestfwd=tcp:%s:%d-cmd:%s - TCP:%s",
		httpPort, httpsPort, adminPort, dnsHostPort, guestBackendAddr, guestBackendPort, socat, web.Addr())
	serial := filepath.Join(dir, "serial.log")
	cmd := exec.Command(qemu, "-machine", "q35",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
		"-drive", "if=pflash,format=raw,unit=1,file="+varsCopy,
		"-m", "1024", "-smp", "2", "-nographic", "-nodefaults", "-monitor", "none",
		"-serial", "file:"+serial,
		"-drive", "file="+disk+",format=raw,if=virtio",
		"-netdev", netdev, "-device", "virtio-net-pci,netdev=n0")
	var qemuOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &qemuOut, &qemuOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	boot := time.Now()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	diagnose := func() string {
		log, _ := os.ReadFile(serial)
		lines := strings.Split(string(log), "\n")
		if len(lines) > 100 {
			lines = lines[len(lines)-100:]
		}
		return fmt.Sprintf("qemu: %s\nserial console (last %d lines):\n%s", qemuOut.Bytes(), len(lines), strings.Join(lines, "\n"))
	}
	waitFor := func(what string, limit time.Duration, check func() error) {
		t.Helper()
		deadline := time.Now().Add(limit)
		var last error
		for time.Now().Before(deadline) {
			select {
			case err := <-exited:
				exited <- err
				t.Fatalf("qemu exited (%v) while waiting for %s\n%s", err, what, diagnose())
			default:
			}
			if last = check(); last == nil {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatalf("no %s within %v: %v\n%s", what, limit, last, diagnose())
	}

	insecure := &tls.Config{InsecureSkipVerify: true} // the appliance's own self-signed certificates
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: insecure, DisableKeepAlives: true}}
	through := func(url string) error {
		resp, err := plain.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != token {
			return fmt.Errorf("HTTP %d %q", resp.StatusCode, body)
		}
		return nil
	}
	httpOK := func() error { return through(fmt.Sprintf("http://127.0.0.1:%d/", httpPort)) }
	httpsOK := func() error { return through(fmt.Sprintf("https://127.0.0.1:%d/", httpsPort)) }
	dnsOK := func() error {
		c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", dnsHostPort))
		if err != nil {
			return err
		}
		defer c.Close()
		q := "query " + rand.Text()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(q)); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "answer to "+q {
			return fmt.Errorf("answer %q", buf[:n])
		}
		return nil
	}
	waitFor("HTTP on 80", 3*time.Minute, httpOK)
	// The first query may come before DHCP has configured the VM's
	// network: pen then blacklists the server for 2 s (blacklist 2).
	waitFor("DNS on 53/udp", time.Minute, dnsOK)
	up := time.Since(boot)

	// The admin UI: log in, add the HTTPS service from its template.
	jar, _ := cookiejar.New(nil)
	admin := &http.Client{Timeout: 20 * time.Second, Jar: jar, Transport: &http.Transport{TLSClientConfig: insecure},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := fmt.Sprintf("https://127.0.0.1:%d", adminPort)
	request := func(method, path, ctype string, body io.Reader) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := admin.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	hidden := regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
	_, loginPage := request("GET", "/login", "", nil)
	m := hidden.FindStringSubmatch(loginPage[strings.Index(loginPage, `name="token"`)-30:])
	if m == nil {
		t.Fatalf("no login token:\n%s", loginPage)
	}
	if code, body := request("POST", "/login", "application/x-www-form-urlencoded",
		strings.NewReader(url.Values{"token": {m[2]}, "password": {testPassword}, "next": {"/services"}}.Encode())); code != http.StatusSeeOther {
		t.Fatalf("login: HTTP %d\n%s", code, body)
	}
	csrf := func() string {
		_, page := request("GET", "/services", "", nil)
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no CSRF token on /services:\n%s", page)
		}
		return m[1]
	}
	post := func(path string, f url.Values) (int, string) {
		f.Set("csrf", csrf())
		return request("POST", path, "application/x-www-form-urlencoded", strings.NewReader(f.Encode()))
	}
	multi := func(path string, fields map[string]string, files map[string][]byte) (int, string) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("csrf", csrf())
		for k, v := range fields {
			mw.WriteField(k, v)
		}
		for k, v := range files {
			w, _ := mw.CreateFormFile(k, k+".pem")
			w.Write(v)
		}
		mw.Close()
		return request("POST", path, mw.FormDataContentType(), &body)
	}
	cert, key := selfSigned(t)
	if code, body := multi("/services/add", map[string]string{"name": "https", "kind": "https", "port": "443"},
		map[string][]byte{"cert": cert, "key": key}); code != http.StatusSeeOther {
		t.Fatalf("adding the HTTPS service: HTTP %d\n%s", code, body)
	}
	running := func(name string) func() error {
		return func() error {
			_, page := request("GET", "/services", "", nil)
			if !strings.Contains(page, `id="service-`+name+`" data-state="running"`) {
				return fmt.Errorf("service %s is not running", name)
			}
			return nil
		}
	}
	waitFor("the HTTPS service running", 30*time.Second, running("https"))
	waitFor("the HTTPS service's pen answering", 30*time.Second, func() error {
		if code, body := request("GET", "/healthz/https", "", nil); code != http.StatusOK {
			return fmt.Errorf("/healthz/https: HTTP %d %s", code, body)
		}
		return nil
	})
	if code, _ := request("GET", "/services/open/https", "", nil); code != http.StatusSeeOther {
		t.Fatalf("opening https: HTTP %d", code)
	}
	if code, body := post("/servers/add", url.Values{"address": {guestBackendAddr}, "port": {fmt.Sprint(guestBackendPort)}}); code != http.StatusSeeOther {
		t.Fatalf("adding https's server: HTTP %d\n%s", code, body)
	}
	waitFor("HTTPS on 443", 30*time.Second, httpsOK)

	// Bad uploads: one the grammar refuses (to dns), one pen cannot put
	// into effect (https: a listener on an address the VM does not have).
	upload := func(service, text string) (int, string) {
		request("GET", "/services/open/"+service+"?page=config", "", nil)
		code, page := multi("/config/upload", nil, map[string][]byte{"file": []byte(text)})
		if code != http.StatusOK || !strings.Contains(page, `id="confirm-apply"`) {
			return code, page
		}
		form := page[strings.Index(page, `id="confirm"`):]
		form = form[:strings.Index(form, "</form>")]
		f := url.Values{}
		for _, m := range hidden.FindAllStringSubmatch(form, -1) {
			f.Set(m[1], html.UnescapeString(m[2]))
		}
		return request("POST", "/config/apply", "application/x-www-form-urlencoded", strings.NewReader(f.Encode()))
	}
	if code, page := upload("dns", "udp\nlisten 53\nno_such_command\n"); code != http.StatusBadRequest || !strings.Contains(page, "no_such_command") {
		t.Errorf("a bad upload to dns: HTTP %d\n%s", code, page)
	}
	if code, page := upload("https", "listen 192.0.2.1:443\n"); code != http.StatusBadRequest {
		t.Errorf("an upload to https with a listener pen cannot open: HTTP %d\n%s", code, page)
	}
	for what, check := range map[string]func() error{"HTTP on 80": httpOK, "HTTPS on 443": httpsOK, "DNS on 53/udp": dnsOK} {
		if err := check(); err != nil {
			t.Errorf("%s after the bad uploads: %v", what, err)
		}
	}
	for _, name := range []string{"main", "dns", "https"} {
		if err := running(name)(); err != nil {
			t.Error(err)
		}
		if code, body := request("GET", "/healthz/"+name, "", nil); code != http.StatusOK {
			t.Errorf("/healthz/%s: HTTP %d %s", name, code, body)
		}
	}
	if _, metrics := request("GET", "/metrics", "", nil); !strings.Contains(metrics, `service="https"`) || !strings.Contains(metrics, `service="dns"`) {
		t.Errorf("/metrics lacks the services' labels")
	}
	t.Logf("image built in %.1fs; HTTP and DNS answered %.1fs after qemu started; the whole test took %.1fs",
		built.Seconds(), up.Seconds(), time.Since(started).Seconds())
}

// selfSigned makes a certificate and key for localhost, in PEM.
func selfSigned(t *testing.T) (cert, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}
