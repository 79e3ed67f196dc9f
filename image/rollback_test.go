package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pen-lb/pen-appliance/image/internal/partition"
	"github.com/pen-lb/pen-appliance/internal/firmware"
	"github.com/pen-lb/pen-appliance/internal/testenv"
)

// trialTimeout is the trial's deadline in the rollback test, set on the
// broken build's kernel command line (the default is 60 s).
const trialTimeout = "30s"

// TestRollbackPC updates a running pc appliance (v1) to a build whose pen
// fails at start (v2: image/testdata/failpen stands in for pen), through
// gokrazy's update API as an OTA client or the firmware page does. v2
// boots on trial; the power is cut during the trial (qemu killed) and
// the VM started again; v2 boots a second time, is still not healthy at
// the deadline, and the appliance returns to v1 by itself: gokrazy reports
// v1's build, pen serves, and the firmware state and the serial console
// record the rollback.
func TestRollbackPC(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	qemu := testenv.NeedProgram(t, "qemu-system-x86_64", "qemu-system-x86")
	testenv.NeedProgram(t, "socat", "socat")
	const code, vars = "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	testenv.NeedFile(t, code, "ovmf")
	testenv.NeedFile(t, vars, "ovmf")
	v1 := buildTestImage(t, "pc")

	// v2: the broken build, an hour later, with a short trial.
	dir := t.TempDir()
	v2time := v1.time.Add(time.Hour)
	v2path := filepath.Join(dir, "v2.img")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := Build(ctx, Options{
		Board: v1.board, Output: v2path, Hostname: testHostname, Password: testPassword,
		Config: testConfig, Size: testSize, ModuleDir: moduleRoot(t), Time: v2time,
		PenPackage: "./image/testdata/failpen",
	}); err != nil {
		t.Fatalf("building the broken image: %v", err)
	}
	setCmdlineArg(t, v2path, Cmdline(v1.board, testHostname), "pen.trial_timeout="+trialTimeout)

	// The appliance's disk: a copy of v1 that the VM writes to.
	disk := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("cp", "--sparse=always", v1.path, disk).CombinedOutput(); err != nil {
		t.Fatalf("copying the image: %v %s", err, out)
	}
	varsCopy := filepath.Join(dir, "OVMF_VARS.fd")
	b, err := os.ReadFile(vars)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(varsCopy, b, 0o644)
	machine := []string{
		"-machine", "q35",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,unit=1,file=" + varsCopy,
	}
	vm := startVM(t, qemu, machine, disk)
	start := time.Now()
	vm.waitFor(t, 4*time.Minute, "v1 serving", func() error { return vm.serving(v1.time) })
	t.Logf("v1 serving after %.1fs", time.Since(start).Seconds())

	// The update, as an OTA client sends it.
	api := &firmware.API{BaseURL: fmt.Sprintf("http://127.0.0.1:%d", vm.gokrazy), Password: testPassword,
		Client: &http.Client{Timeout: 3 * time.Minute}}
	f, err := os.Open(v2path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pushed := time.Now()
	img, err := firmware.Install(ctx, api, f, nil)
	if err != nil {
		t.Fatalf("installing v2: %v\n%s", err, vm.diagnose())
	}
	t.Logf("v2 written (root %d bytes, boot %d bytes, read %d of the image) in %.1fs", img.RootSize, len(img.Boot), img.Read, time.Since(pushed).Seconds())
	api.Post(ctx, "/reboot?kexec=off&wait_per_signal=5s")

	// v2 boots on trial; cut the power during the trial.
	vm.waitFor(t, 3*time.Minute, "the trial of v2", func() error {
		if !vm.consoleHas("trial of v2-broken") && !vm.consoleHas("boot 1 of at most") {
			return fmt.Errorf("no trial on the console")
		}
		return nil
	})
	time.Sleep(5 * time.Second)
	vm.powerCut(t)
	t.Logf("power cut during the trial, %.1fs after the update was written", time.Since(pushed).Seconds())
	vm = startVM(t, qemu, machine, disk)

	// Boot 2 of the trial, then the rollback and a boot of v1, with no
	// action from outside.
	rollbackStart := time.Now()
	vm.waitFor(t, 3*time.Minute, "the second trial boot", func() error {
		if !vm.consoleHas("boot 2 of at most") {
			return fmt.Errorf("no second trial boot on the console")
		}
		return nil
	})
	vm.waitFor(t, 4*time.Minute, "v1 serving again", func() error {
		if !vm.consoleHas("ROLLBACK from") {
			return fmt.Errorf("no rollback yet")
		}
		return vm.serving(v1.time)
	})
	t.Logf("back on v1 and serving %.1fs after the VM restarted (trial timeout %s)", time.Since(rollbackStart).Seconds(), trialTimeout)
	for _, want := range []string{
		"root= points to root A again; rebooting",
		"was rolled back at",
	} {
		if !vm.consoleHas(want) {
			t.Errorf("the serial console lacks %q\n%s", want, vm.diagnose())
		}
	}
	// The state on /perm, which the admin UI's firmware page and
	// pen_appliance_rollbacks_total read.
	vm.powerCut(t)
	st := readFirmwareState(t, disk)
	if st.Rollbacks != 1 || st.Good.Root != 2 || st.Good.BuildTime != v1.time.UTC().Format(time.RFC3339) || st.Trial != nil ||
		st.LastUpdate == nil || st.LastUpdate.Result != firmware.ResultRolledBack || st.LastUpdate.To.BuildTime != v2time.UTC().Format(time.RFC3339) {
		t.Errorf("firmware state after the rollback: %+v, last update %+v", st, st.LastUpdate)
	} else {
		t.Logf("last update: %s, %s", st.LastUpdate.Result, st.LastUpdate.Reason)
	}
}

// readFirmwareState reads /perm/appliance/firmware.json from the disk.
func readFirmwareState(t *testing.T, disk string) firmware.State {
	t.Helper()
	debugfs := testenv.NeedProgram(t, "debugfs", "e2fsprogs")
	layout, err := partition.NewLayout(testSize)
	if err != nil {
		t.Fatal(err)
	}
	perm := extract(t, disk, layout.Part(partition.Perm), "perm.ext4")
	out, err := exec.Command(debugfs, "-R", "cat /appliance/firmware.json", perm).Output()
	if err != nil {
		t.Fatalf("debugfs: %v", err)
	}
	var st firmware.State
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("firmware.json: %v\n%s", err, out)
	}
	return st
}

// setCmdlineArg adds arg to the kernel command line in the image's boot
// partition (cmdline.txt and the loader entry), using up some of the
// padding so that nothing moves.
func setCmdlineArg(t *testing.T, path, cmdline, arg string) {
	t.Helper()
	trimmed := strings.TrimRight(cmdline, " ")
	patched := trimmed + " " + arg + strings.Repeat(" ", len(cmdline)-len(trimmed)-len(arg)-1)
	layout, err := partition.NewLayout(testSize)
	if err != nil {
		t.Fatal(err)
	}
	boot := layout.Part(partition.Boot)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 32<<20)
	n, _ := f.ReadAt(b, boot.Offset())
	b = b[:n]
	if c := bytes.Count(b, []byte(cmdline)); c != 2 {
		t.Fatalf("the command line occurs %d times in the boot partition, want 2", c)
	}
	b = bytes.ReplaceAll(b, []byte(cmdline), []byte(patched))
	if _, err := f.WriteAt(b, boot.Offset()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// testVM is a qemu running an appliance disk, writable, with pen's,
// gokrazy's and the admin UI's ports forwarded and a backend on the host.
type testVM struct {
	cmd                 *exec.Cmd
	exited              chan error
	serial              string
	args                []string
	out                 string // qemu's own output
	killed              bool
	pen, gokrazy, admin int
	token               string
	client              *http.Client
}

func startVM(t *testing.T, qemu string, machine []string, disk string) *testVM {
	t.Helper()
	socat := testenv.NeedProgram(t, "socat", "socat")
	vm := &testVM{token: "pen-appliance rollback test " + rand.Text(), client: &http.Client{Timeout: 5 * time.Second}}
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, vm.token) })}
	go srv.Serve(backend)
	t.Cleanup(func() { srv.Close() })
	ports := freePorts(t, 3)
	vm.pen, vm.gokrazy, vm.admin = ports[0], ports[1], ports[2]
	netdev := fmt.Sprintf("user,id=n0,restrict=on,"+
		"hostfwd=tcp:127.0.0.1:%d-:80,hostfwd=tcp:127.0.0.1:%d-:%d,hostfwd=tcp:127.0.0.1:%d-:8443,"+
		"guestfwd=tcp:%s:%d-cmd:%s - TCP:%s",
		vm.pen, vm.gokrazy, GokrazyHTTPPort, vm.admin, guestBackendAddr, guestBackendPort, socat, backend.Addr())
	vm.serial = filepath.Join(t.TempDir(), "serial.log")
	vm.args = append(append([]string{}, machine...),
		"-m", "1024", "-smp", "2",
		"-nographic", "-nodefaults", "-monitor", "none",
		"-serial", "file:"+vm.serial,
		"-drive", "file="+disk+",format=raw,if=virtio",
		"-netdev", netdev,
		"-device", "virtio-net-pci,netdev=n0",
	)
	vm.cmd = exec.Command(qemu, vm.args...)
	vm.out = filepath.Join(filepath.Dir(vm.serial), "qemu.out")
	out, err := os.Create(vm.out)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	vm.cmd.Stdout, vm.cmd.Stderr = out, out
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := vm.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	vm.exited = make(chan error, 1)
	go func() { vm.exited <- vm.cmd.Wait() }()
	t.Cleanup(func() { vm.powerCut(t) })
	return vm
}

// powerCut kills qemu and its children at once (SIGKILL).
func (vm *testVM) powerCut(t *testing.T) {
	if vm.killed {
		return
	}
	vm.killed = true
	syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL)
	err := <-vm.exited
	vm.exited <- err
}

func (vm *testVM) console() []byte { b, _ := os.ReadFile(vm.serial); return b }

func (vm *testVM) consoleHas(s string) bool { return bytes.Contains(vm.console(), []byte(s)) }

func (vm *testVM) diagnose() string {
	lines := strings.Split(string(vm.console()), "\n")
	if len(lines) > 100 {
		lines = lines[len(lines)-100:]
	}
	out, _ := os.ReadFile(vm.out)
	return fmt.Sprintf("qemu %s\n%s\nserial console (last %d lines):\n%s", strings.Join(vm.args, " "), out, len(lines), strings.Join(lines, "\n"))
}

func (vm *testVM) waitFor(t *testing.T, limit time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-vm.exited:
			vm.exited <- err
			t.Fatalf("qemu exited (%v) while waiting for %s\n%s", err, what, vm.diagnose())
		default:
		}
		if last = check(); last == nil {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("no %s within %v: %v\n%s", what, limit, last, vm.diagnose())
}

// serving checks that gokrazy reports the build of time built and that
// pen forwards to the backend.
func (vm *testVM) serving(built time.Time) error {
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", vm.gokrazy), nil)
	req.SetBasicAuth("gokrazy", testPassword)
	req.Header.Set("Accept", "application/json")
	resp, err := vm.client.Do(req)
	if err != nil {
		return err
	}
	var st struct{ BuildTimestamp string }
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if want := built.UTC().Format(time.RFC3339); st.BuildTimestamp != want {
		return fmt.Errorf("gokrazy runs build %s, want %s", st.BuildTimestamp, want)
	}
	resp, err = vm.client.Get(fmt.Sprintf("http://127.0.0.1:%d/", vm.pen))
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != vm.token {
		return fmt.Errorf("pen answered HTTP %d %q", resp.StatusCode, body)
	}
	return nil
}
