package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/boards"
	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// updateConfig is the configuration of the update test's first build:
// the boot tests' pen plus the admin UI as the appliance's default
// configuration has it (certificate made on first boot, on /perm; the
// appliance password; changes saved to /perm/pen/pen.cfg at once).
var updateConfig = []byte(string(testConfig) + "admin_listen 8443\n" +
	"admin_tls /perm/pen/admin-cert.pem /perm/pen/admin-key.pem\n" +
	"admin_password_file /perm/gokr-pw.txt /etc/gokr-pw.txt\nautowrite\n")

// lockedBuffer collects a process's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// updateVM is a qemu process running a disk image, with its ports forwarded to
// the host's loopback interface.
type updateVM struct {
	t                   *testing.T
	args                []string
	qemu                string
	cmd                 *exec.Cmd
	runs                int
	serial              string
	out                 *lockedBuffer
	exited              chan error
	pen, gokrazy, admin int
	backendToken        string
}

// bootForUpdate boots the image img of board (pc: OVMF; arm64: qemu's virt
// machine with QEMU_EFI.fd) in qemu under software emulation, from a
// writable sparse copy of img, so that the VM can lose its power (powerCut)
// and be started again on the same disk and ports.
func bootForUpdate(t *testing.T, board, img string) *updateVM {
	socat := testenv.NeedProgram(t, "socat", "socat")
	var machine []string
	v := &updateVM{t: t, out: new(lockedBuffer), backendToken: "pen-appliance update test " + GeneratePassword()}
	switch board {
	case "pc":
		v.qemu = testenv.NeedProgram(t, "qemu-system-x86_64", "qemu-system-x86")
		const code, vars = "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
		testenv.NeedFile(t, code, "ovmf")
		testenv.NeedFile(t, vars, "ovmf")
		varsCopy := filepath.Join(t.TempDir(), "OVMF_VARS.fd")
		b, err := os.ReadFile(vars)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(varsCopy, b, 0o644); err != nil {
			t.Fatal(err)
		}
		machine = []string{
			"-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
			"-drive", "if=pflash,format=raw,unit=1,file=" + varsCopy,
		}
	case "arm64":
		v.qemu = testenv.NeedProgram(t, "qemu-system-aarch64", "qemu-system-arm")
		const firmware = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"
		testenv.NeedFile(t, firmware, "qemu-efi-aarch64")
		machine = []string{"-machine", "virt", "-cpu", "cortex-a72", "-bios", firmware}
	default:
		t.Fatalf("no VM for board %s", board)
	}
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("cp", "--sparse=always", img, disk).CombinedOutput(); err != nil {
		t.Fatalf("copying the image: %v %s", err, out)
	}

	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, v.backendToken)
	})}
	go srv.Serve(backend)
	t.Cleanup(func() { srv.Close() })

	ports := freePorts(t, 3)
	v.pen, v.gokrazy, v.admin = ports[0], ports[1], ports[2]
	netdev := fmt.Sprintf("user,id=n0,restrict=on,"+
		"hostfwd=tcp:127.0.0.1:%d-:80,hostfwd=tcp:127.0.0.1:%d-:%d,hostfwd=tcp:127.0.0.1:%d-:8443,"+
		"guestfwd=tcp:%s:%d-cmd:%s - TCP:%s",
		v.pen, v.gokrazy, GokrazyHTTPPort, v.admin,
		guestBackendAddr, guestBackendPort, socat, backend.Addr())
	v.serial = filepath.Join(dir, "serial.log")
	v.args = append(machine,
		"-m", "1024", "-smp", "2",
		"-nographic", "-nodefaults", "-monitor", "none",
		"-serial", "file:"+v.serial,
		"-drive", "file="+disk+",format=raw,if=virtio",
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev=n0",
	)
	t.Cleanup(v.stop)
	v.start()
	return v
}

// start runs qemu; a previous run's serial console is kept as
// serial.log.N.
func (v *updateVM) start() {
	v.t.Helper()
	if _, err := os.Stat(v.serial); err == nil {
		v.runs++
		os.Rename(v.serial, fmt.Sprintf("%s.%d", v.serial, v.runs))
	}
	cmd := exec.Command(v.qemu, v.args...)
	cmd.Stdout, cmd.Stderr = v.out, v.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		v.t.Fatal(err)
	}
	v.cmd = cmd
	v.exited = make(chan error, 1)
	go func() { v.exited <- cmd.Wait() }()
}

// stop kills qemu (and its socat children) at once, as a power cut would.
func (v *updateVM) stop() {
	if v.cmd == nil {
		return
	}
	syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL)
	<-v.exited
	v.cmd = nil
}

// powerCut kills qemu and starts it again on the same disk and ports.
func (v *updateVM) powerCut() {
	v.t.Helper()
	v.stop()
	v.start()
}

func (v *updateVM) diagnose() string {
	var b strings.Builder
	fmt.Fprintf(&b, "qemu %s\n%s", strings.Join(v.args, " "), v.out.String())
	log, _ := os.ReadFile(v.serial)
	lines := strings.Split(string(log), "\n")
	if len(lines) > 100 {
		lines = lines[len(lines)-100:]
	}
	fmt.Fprintf(&b, "\nserial console (last %d lines):\n%s\n", len(lines), strings.Join(lines, "\n"))
	return b.String()
}

// waitFor calls check every second until it succeeds, for at most limit.
func (v *updateVM) waitFor(what string, limit time.Duration, check func() error) time.Duration {
	v.t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < limit {
		select {
		case err := <-v.exited:
			v.exited <- err
			v.t.Fatalf("qemu exited (%v) while waiting for %s\n%s", err, what, v.diagnose())
		default:
		}
		if last = check(); last == nil {
			return time.Since(start)
		}
		time.Sleep(time.Second)
	}
	v.t.Fatalf("no %s within %v: %v\n%s", what, limit, last, v.diagnose())
	return 0
}

// status reads gokrazy's status as JSON.
func (v *updateVM) status() (hostname, build string, err error) {
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", v.gokrazy), nil)
	req.SetBasicAuth("gokrazy", testPassword)
	req.Header.Set("Accept", "application/json")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var st struct{ Hostname, BuildTimestamp string }
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st.Hostname, st.BuildTimestamp, err
}

func (v *updateVM) penAnswers() error {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/", v.pen))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != v.backendToken {
		return fmt.Errorf("HTTP %d %q", resp.StatusCode, body)
	}
	return nil
}

// adminCert returns the SHA-256 of the admin UI's certificate.
func (v *updateVM) adminCert() (string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", fmt.Sprintf("127.0.0.1:%d", v.admin), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return fmt.Sprintf("%x", sha256.Sum256(c.ConnectionState().PeerCertificates[0].Raw)), nil
}

var hiddenInput = regexp.MustCompile(`name="(token|csrf)" value="([^"]+)"`)

// adminSession logs in to the admin UI with password and returns a client
// holding the session and the session's CSRF token.
func (v *updateVM) adminSession(password string) (*http.Client, string, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	base := fmt.Sprintf("https://127.0.0.1:%d", v.admin)
	get := func(path string) (string, error) {
		resp, err := c.Get(base + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return string(b), fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
		}
		return string(b), err
	}
	page, err := get("/login")
	if err != nil {
		return nil, "", err
	}
	m := hiddenInput.FindStringSubmatch(page)
	if m == nil {
		return nil, "", fmt.Errorf("no login token in %q", page)
	}
	resp, err := c.PostForm(base+"/login", url.Values{"token": {m[2]}, "password": {password}})
	if err != nil {
		return nil, "", err
	}
	resp.Body.Close()
	page, err = get("/servers")
	if err != nil {
		return nil, "", fmt.Errorf("after logging in: %w", err)
	}
	m = hiddenInput.FindStringSubmatch(page)
	if m == nil || m[1] != "csrf" {
		return nil, "", fmt.Errorf("not logged in: /servers has no CSRF token")
	}
	return c, m[2], nil
}

func (v *updateVM) adminConfig(c *http.Client) (string, error) {
	resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/config/download", v.admin))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /config/download: HTTP %d", resp.StatusCode)
	}
	return string(b), err
}

// TestUpdatePC updates a running pc appliance with penimage update: build
// v1, boot it, add a server in the admin UI, then have penimage build v2
// for the appliance's hostname and push it. The VM must come back on v2
// with the added server, the same admin certificate and the same password.
// The pc test first cuts the VM's power during the root upload (v1 must
// boot and serve) and, in the update that follows, right after the switch
// (v2 must boot, and penimage report it). Then an update to a build whose
// pen fails must end in the appliance's rollback to v2, which penimage
// reports with exit status 1.
func TestUpdatePC(t *testing.T) { testUpdate(t, "pc") }

// TestUpdateARM64 is TestUpdatePC for the arm64 board on qemu's virt
// machine.
func TestUpdateARM64(t *testing.T) { testUpdate(t, "arm64") }

func testUpdate(t *testing.T, board string) {
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	b, err := boards.Lookup(board)
	if err != nil {
		t.Fatal(err)
	}
	testenv.NeedFile(t, b.EFILoader.Source, b.EFILoader.DebianPackage)
	dir := t.TempDir()
	v1 := filepath.Join(dir, "v1.img")
	v1Time := time.Now().Add(-time.Minute).Truncate(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := Build(ctx, Options{
		Board: b, Output: v1, Hostname: testHostname, Password: testPassword, Config: updateConfig,
		Size: testSize, ModuleDir: moduleRoot(t), Version: "v1-update-test", Time: v1Time,
	}); err != nil {
		t.Fatalf("building v1: %v", err)
	}
	penimage := filepath.Join(dir, "penimage")
	if out, err := exec.Command("go", "build", "-o", penimage, "./cmd/penimage").CombinedOutput(); err != nil {
		t.Fatalf("building penimage: %v\n%s", err, out)
	}
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	v := bootForUpdate(t, board, v1)
	started := time.Now()
	v.waitFor("gokrazy's status on v1", 4*time.Minute, func() error {
		h, build, err := v.status()
		if err == nil && (h != testHostname || build != buildTimestamp(v1Time)) {
			t.Fatalf("status: hostname %q, build %q", h, build)
		}
		return err
	})
	v.waitFor("pen on v1", time.Minute, v.penAnswers)
	var cert string
	v.waitFor("admin UI on v1", time.Minute, func() (err error) { cert, err = v.adminCert(); return err })
	t.Logf("v1 up in %.1fs", time.Since(started).Seconds())

	// A change in the admin UI, saved to /perm/pen/pen.cfg by autowrite.
	admin, csrf, err := v.adminSession(testPassword)
	if err != nil {
		t.Fatalf("admin UI login: %v\n%s", err, v.diagnose())
	}
	resp, err := admin.PostForm(fmt.Sprintf("https://127.0.0.1:%d/servers/add", v.admin),
		url.Values{"csrf": {csrf}, "address": {"10.0.2.100"}, "port": {"8001"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	added := regexp.MustCompile(`\nserver 1 .*address 10\.0\.2\.100 port 8001 `)
	if cfg, err := v.adminConfig(admin); err != nil || !added.MatchString(cfg) {
		t.Fatalf("after adding a server in the admin UI, the configuration is %q, %v", cfg, err)
	}

	// The update, as a user runs it.
	updateArgs := []string{"update", "-board", board, "-target", fmt.Sprintf("http://127.0.0.1:%d", v.gokrazy),
		"-password-file", pwFile, "-version", "v2-update-test", "-watch", "10s"}
	var stdout, stderr lockedBuffer
	// runUntil runs penimage with args; when its progress shows marker, it
	// cuts the VM's power after delay (unless delay < 0) and starts it
	// again. It returns when penimage exits.
	runUntil := func(args []string, marker string, delay time.Duration) error {
		stdout.Reset()
		stderr.Reset()
		cmd := exec.Command(penimage, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if delay < 0 {
			return <-done
		}
		for !strings.Contains(stderr.String(), marker) {
			select {
			case err := <-done:
				t.Fatalf("penimage exited (%v) before %q:\n%s%s", err, marker, stderr.String(), stdout.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		time.Sleep(delay)
		v.powerCut()
		t.Logf("power cut %v after %q", delay, marker)
		return <-done
	}
	if board == "pc" {
		// A power cut during the root upload: the update fails without a
		// switch, and v1 boots and serves.
		err := runUntil(updateArgs, "uploading root: ", 200*time.Millisecond)
		if err == nil || !strings.Contains(stderr.String(), "nothing was switched") {
			t.Fatalf("penimage update with a power cut during the root upload: %v\n%s%s", err, stderr.String(), stdout.String())
		}
		t.Logf("penimage update with a power cut during the root upload: %v\n%s", err, stderr.String())
		v.waitFor("v1 after the power cut during the upload", 4*time.Minute, func() error {
			_, build, err := v.status()
			if err == nil && build != buildTimestamp(v1Time) {
				t.Fatalf("after a power cut during the root upload the VM runs build %s, not v1's %s", build, buildTimestamp(v1Time))
			}
			return err
		})
		v.waitFor("pen on v1 after the power cut", time.Minute, v.penAnswers)
	}
	updateStart := time.Now()
	if board == "pc" {
		// A power cut right after the switch, while the appliance stops
		// its services to reboot: it boots v2, and penimage, still
		// polling, sees it and reports the update.
		err = runUntil(updateArgs, "switched to the new root partition", 0)
	} else {
		err = runUntil(updateArgs, "", -1)
	}
	if err != nil {
		t.Fatalf("penimage update: %v\nstdout:\n%s\nstderr:\n%s\n%s", err, stdout.String(), stderr.String(), v.diagnose())
	}
	took := time.Since(updateStart)
	t.Logf("penimage update took %.1fs (including the build and 10s of watching):\n%s%s", took.Seconds(), stderr.String(), stdout.String())
	if !strings.Contains(stdout.String(), "it runs pen v2-update-test") {
		t.Errorf("penimage update printed %q; want it to say it runs pen v2-update-test", stdout.String())
	}
	for _, want := range []string{"uploading root: ", "uploading boot: ", "uploading mbr: ", "verified", "answers with the new build"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("penimage update's progress lacks %q", want)
		}
	}

	// Back on v2, with /perm as it was.
	_, build, err := v.status()
	if err != nil || build == buildTimestamp(v1Time) {
		t.Fatalf("after the update gokrazy reports build %q, %v (v1 was %s)", build, err, buildTimestamp(v1Time))
	}
	log, _ := os.ReadFile(v.serial)
	if !bytes.Contains(log[bytes.LastIndex(log, []byte("Linux version")):], []byte("/PARTNROFF=2 ")) {
		t.Errorf("the updated appliance does not run from root B\n%s", v.diagnose())
	}
	v.waitFor("pen on v2", time.Minute, v.penAnswers)
	var cert2 string
	v.waitFor("admin UI on v2", time.Minute, func() (err error) { cert2, err = v.adminCert(); return err })
	if cert2 != cert {
		t.Errorf("the admin certificate changed with the update: %s, was %s", cert2, cert)
	}
	admin, _, err = v.adminSession(testPassword)
	if err != nil {
		t.Fatalf("admin UI login with the same password after the update: %v", err)
	}
	if cfg, err := v.adminConfig(admin); err != nil || !added.MatchString(cfg) {
		t.Errorf("after the update, the configuration is %q, %v; want the server added before", cfg, err)
	}
	if board != "pc" {
		return
	}

	// v3, whose pen fails at start (image/testdata/failpen, never shipped),
	// with a trial of 10 s: penimage update -image reports the rollback to
	// v2 and exits 1, and v2 serves again.
	v3 := filepath.Join(dir, "v3.img")
	v3Time := time.Now().Add(time.Minute).Truncate(time.Second)
	if _, err := Build(ctx, Options{
		Board: b, Output: v3, Hostname: testHostname, Password: testPassword, Config: updateConfig,
		Size: testSize, ModuleDir: moduleRoot(t), Version: "v3-broken", Time: v3Time,
		PenPackage: "./image/testdata/failpen", KernelArgs: []string{"pen.trial_timeout=10s"},
	}); err != nil {
		t.Fatalf("building v3: %v", err)
	}
	updateStart = time.Now()
	err = runUntil([]string{"update", "-target", fmt.Sprintf("http://127.0.0.1:%d", v.gokrazy),
		"-password-file", pwFile, "-image", v3}, "", -1)
	t.Logf("penimage update to the broken v3 took %.1fs:\n%s%s", time.Since(updateStart).Seconds(), stderr.String(), stdout.String())
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("penimage update to the broken v3: %v; want exit status 1\n%s", err, v.diagnose())
	}
	if want := "rolled back: http://127.0.0.1:" + fmt.Sprint(v.gokrazy) + " runs its old build " + build + " again"; !strings.HasPrefix(stdout.String(), want) {
		t.Errorf("penimage update printed %q; want %q", stdout.String(), want)
	}
	if _, now, err := v.status(); err != nil || now != build {
		t.Errorf("after the rollback gokrazy reports build %q, %v; want v2's %s", now, err, build)
	}
	v.waitFor("pen on v2 after the rollback", time.Minute, v.penAnswers)
}
