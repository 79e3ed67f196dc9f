package firmware

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/pen-lb/pen-appliance/internal/firmware/firmwaretest"
)

// fakeGokrazy is gokrazy's update API as far as Install uses it.
type fakeGokrazy struct {
	mu       sync.Mutex
	written  map[string][]byte
	calls    []string
	corrupt  string // answer a wrong hash for this destination
	password string
}

func (g *fakeGokrazy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, p, ok := r.BasicAuth(); !ok || u != "gokrazy" || p != g.password {
		http.Error(w, "no", http.StatusUnauthorized)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, r.Method+" "+r.URL.Path)
	switch {
	case r.Method == "PUT" && strings.HasPrefix(r.URL.Path, "/update/"):
		b, _ := io.ReadAll(r.Body)
		dest := strings.TrimPrefix(r.URL.Path, "/update/")
		g.written[dest] = b
		sum := crc32.ChecksumIEEE(b)
		if dest == g.corrupt {
			sum++
		}
		fmt.Fprintf(w, "%08x", sum)
	case r.Method == "POST" && r.URL.Path == "/update/switch":
	default:
		http.NotFound(w, r)
	}
}

func TestInstall(t *testing.T) {
	g := &fakeGokrazy{written: map[string][]byte{}, password: "pw"}
	ts := httptest.NewServer(g)
	defer ts.Close()
	api := &API{BaseURL: ts.URL, Password: "pw"}
	boot := firmwaretest.BootFS(firmwaretest.Cmdline(firmwaretest.GUID, 2), true)
	disk, root := firmwaretest.Disk(firmwaretest.GUID, firmwaretest.AMD64Root, boot, 300001, 1)
	running, _ := ParseRoot(firmwaretest.Cmdline(firmwaretest.GUID, 3))
	check := func(img *Image) error {
		return img.Check(running, []byte(firmwaretest.Cmdline(firmwaretest.GUID, 3)), true, "amd64")
	}

	img, err := Install(context.Background(), api, bytes.NewReader(disk), check)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"PUT /update/root", "PUT /update/boot", "PUT /update/mbr", "POST /update/switch"}; strings.Join(g.calls, ",") != strings.Join(want, ",") {
		t.Errorf("calls %q, want %q", g.calls, want)
	}
	if !bytes.Equal(g.written["root"], root) || len(root) != 303104 {
		t.Errorf("root: %d bytes written, want the %d of the file system", len(g.written["root"]), len(root))
	}
	// The boot partition up to the end of its data, in 64 KiB steps.
	if want := disk[firmwaretest.BootStart : firmwaretest.BootStart+64<<10]; !bytes.Equal(g.written["boot"], want) {
		t.Errorf("boot: %d bytes written, want %d", len(g.written["boot"]), len(want))
	}
	if !bytes.Equal(g.written["mbr"], disk[:446]) {
		t.Errorf("mbr: %d bytes written", len(g.written["mbr"]))
	}
	if want := int64(firmwaretest.RootStart + len(root)); img.Read != want {
		t.Errorf("read %d bytes of the image, want %d (up to the end of root A's file system)", img.Read, want)
	}

	// Refusals happen before anything is written.
	refuse := func(name string, disk []byte, check func(*Image) error, want string) {
		t.Helper()
		g.calls = nil
		_, err := Install(context.Background(), api, bytes.NewReader(disk), check)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
		if len(g.calls) != 0 {
			t.Errorf("%s: the appliance was sent %q", name, g.calls)
		}
	}
	other := "60c24cc1-f3f9-427a-8199-99999999" + "0001"
	otherHost, _ := firmwaretest.Disk(other, firmwaretest.AMD64Root, firmwaretest.BootFS(firmwaretest.Cmdline(other, 2), true), 300001, 2)
	refuse("hostname", otherHost, check, "another hostname")
	arm, _ := firmwaretest.Disk(firmwaretest.GUID, "b921b045-1df0-41c3-af44-4c6f280d3fae", boot, 300001, 3)
	refuse("architecture", arm, check, "another architecture")
	pi, _ := firmwaretest.Disk(firmwaretest.GUID, firmwaretest.AMD64Root, firmwaretest.BootFS(firmwaretest.Cmdline(firmwaretest.GUID, 2), false), 300001, 4)
	refuse("board", pi, check, "another board")
	refuse("not an image", make([]byte, 1<<20), nil, "not a disk image")
	refuse("truncated", disk[:firmwaretest.BootStart+4096], nil, "boot partition")
	noSquash := bytes.Clone(disk)
	copy(noSquash[firmwaretest.RootStart:], "xxxx")
	refuse("no squashfs", noSquash, nil, "SquashFS")

	// A hash mismatch stops before the switch.
	for _, dest := range []string{"root", "boot"} {
		g.calls, g.corrupt = nil, dest
		if _, err := Install(context.Background(), api, bytes.NewReader(disk), nil); err == nil || !strings.Contains(err.Error(), "CRC-32") {
			t.Errorf("corrupt %s: %v", dest, err)
		}
		for _, c := range g.calls {
			if c == "POST /update/switch" {
				t.Errorf("corrupt %s: switched anyway (%q)", dest, g.calls)
			}
		}
	}
	g.corrupt = ""
	// A wrong password.
	api.Password = "wrong"
	if _, err := Install(context.Background(), api, bytes.NewReader(disk), nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong password: %v", err)
	}
}
