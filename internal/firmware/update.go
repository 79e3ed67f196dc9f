package firmware

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// An update is a whole disk image as `penimage build` writes it; of it the
// appliance needs the MBR's boot code (446 bytes), the boot partition and
// root A, which come in that order. Image is what ReadImage learnt.
type Image struct {
	MBR      []byte // bytes 0 to 445 of the disk
	DiskGUID string // GUID of partition 1: derived from the hostname
	RootType string // type GUID of the root partitions: names the architecture
	Boot     []byte // the boot file system, without its zero tail
	Cmdline  []byte // its cmdline.txt
	Loader   bool   // whether it has loader/entries/gokrazy.conf (UEFI boards)
	RootSize int64  // bytes of root A's SquashFS file system
	// Read counts the bytes read from the image.
	Read int64
}

// Root partition type GUIDs by GOARCH (as gokrazy and the image builder
// write them).
var RootTypes = map[string]string{
	"amd64": "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
	"arm64": "b921b045-1df0-41c3-af44-4c6f280d3fae",
}

const (
	sectorSize = 512
	maxBoot    = 128 << 20
	maxRoot    = 500 << 20
)

type countingReader struct {
	r io.Reader
	n *int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// ReadImage reads an update image from r: the partition table, the boot
// partition (kept), and the first 4 KiB of root A. Then it calls check,
// which may refuse the image before anything is written, and root with a
// reader of root A's file system, and returns. It reads no further than
// the end of root A's file system.
func ReadImage(r io.Reader, check func(*Image) error, root func(*Image, io.Reader) error) (*Image, error) {
	img := &Image{}
	r = countingReader{r, &img.Read}
	head := make([]byte, 34*sectorSize)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, fmt.Errorf("reading the partition table: %w", err)
	}
	if head[510] != 0x55 || head[511] != 0xaa || string(head[512:520]) != "EFI PART" {
		return nil, errors.New("not a disk image of the appliance: no MBR and GPT")
	}
	img.MBR = bytes.Clone(head[:446])
	le := binary.LittleEndian
	type part struct{ start, end int64 }
	var parts [4]part
	for i := range parts {
		e := head[2*sectorSize+128*i:]
		parts[i] = part{int64(le.Uint64(e[32:])) * sectorSize, (int64(le.Uint64(e[40:])) + 1) * sectorSize}
		if i == 0 {
			img.DiskGUID = guidString(e[16:32])
		}
		if i == 1 {
			img.RootType = guidString(e[0:16])
		}
	}
	boot, rootA := parts[0], parts[1]
	if boot.start < int64(len(head)) || boot.end <= boot.start || boot.end-boot.start > maxBoot || rootA.start < boot.end || rootA.end-rootA.start > maxRoot+(1<<20) {
		return nil, errors.New("not a disk image of the appliance: unexpected partition layout")
	}
	if _, err := io.CopyN(io.Discard, r, boot.start-int64(len(head))); err != nil {
		return nil, fmt.Errorf("reading up to the boot partition: %w", err)
	}
	var err error
	if img.Boot, err = readTrimmed(r, boot.end-boot.start); err != nil {
		return nil, fmt.Errorf("reading the boot partition: %w", err)
	}
	fsys, err := newBootFS(bytes.NewReader(img.Boot))
	if err != nil {
		return nil, fmt.Errorf("the boot partition: %w", err)
	}
	if img.Cmdline, err = fsys.readFile(CmdlineFile); err != nil {
		return nil, err
	}
	_, _, lerr := fsys.extent(LoaderEntry)
	img.Loader = lerr == nil
	if _, err := io.CopyN(io.Discard, r, rootA.start-boot.end); err != nil {
		return nil, fmt.Errorf("reading up to root A: %w", err)
	}
	super := make([]byte, 4096)
	if _, err := io.ReadFull(r, super); err != nil {
		return nil, fmt.Errorf("reading root A: %w", err)
	}
	if string(super[:4]) != "hsqs" {
		return nil, errors.New("root A holds no SquashFS file system")
	}
	used := int64(le.Uint64(super[40:]))
	img.RootSize = (used + 4095) &^ 4095
	if used < 4096 || img.RootSize > rootA.end-rootA.start {
		return nil, fmt.Errorf("root A's file system claims %d bytes", used)
	}
	if check != nil {
		if err := check(img); err != nil {
			return img, err
		}
	}
	rest := io.LimitReader(r, img.RootSize-int64(len(super)))
	if err := root(img, io.MultiReader(bytes.NewReader(super), rest)); err != nil {
		return img, err
	}
	if n, _ := io.Copy(io.Discard, rest); n > 0 {
		return img, fmt.Errorf("the root upload stopped %d bytes short", n)
	}
	return img, nil
}

// readTrimmed reads n bytes and returns them without the trailing zeros
// (in 64 KiB steps).
func readTrimmed(r io.Reader, n int64) ([]byte, error) {
	const chunk = 64 << 10
	var buf bytes.Buffer
	end := 0
	b := make([]byte, chunk)
	for n > 0 {
		k := min(int64(chunk), n)
		if _, err := io.ReadFull(r, b[:k]); err != nil {
			return nil, err
		}
		buf.Write(b[:k])
		if !allZero(b[:k]) {
			end = buf.Len()
		}
		n -= k
	}
	return buf.Bytes()[:end], nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Check refuses an image that is not for this appliance: root is the
// running root= (its GUID derives from the hostname), bootCmdline the
// running boot partition's cmdline.txt, loader whether that has a loader
// entry, and goarch the running architecture.
func (img *Image) Check(root Root, bootCmdline []byte, loader bool, goarch string) error {
	host, _ := os.Hostname()
	if root.GUID == "" || !strings.EqualFold(img.DiskGUID, root.GUID) {
		return fmt.Errorf("the image was built for another hostname (its partitions are %s, this appliance's %s): build it with -hostname %s", img.DiskGUID, root.GUID, host)
	}
	if want := RootTypes[goarch]; !strings.EqualFold(img.RootType, want) {
		return fmt.Errorf("the image is for another architecture (root partition type %s, this appliance runs %s)", img.RootType, goarch)
	}
	if c1, c2 := consoles(img.Cmdline), consoles(bootCmdline); strings.Join(c1, " ") != strings.Join(c2, " ") || img.Loader != loader {
		return fmt.Errorf("the image is for another board (consoles %q, UEFI loader %v; this appliance: %q, %v)", c1, img.Loader, c2, loader)
	}
	r, err := ParseRoot(string(img.Cmdline))
	if err != nil {
		return err
	}
	if r.GUID != root.GUID {
		return errors.New("the image's command line names another disk")
	}
	return nil
}

// consoles returns the console= arguments of a command line.
func consoles(cmdline []byte) []string {
	var out []string
	for _, f := range bytes.Fields(cmdline) {
		if bytes.HasPrefix(f, []byte("console=")) {
			out = append(out, string(f))
		}
	}
	return out
}

// API is a client of gokrazy's update API (docs: GOKRAZY-IMAGE.md §5).
type API struct {
	BaseURL  string // e.g. http://127.0.0.1:9080
	Password string
	Client   *http.Client
}

// LocalAPI is the appliance's own gokrazy API on the loopback interface,
// with the port and password gokrazy reads at boot.
func LocalAPI() (*API, error) {
	port := "80"
	if b, err := os.ReadFile("/etc/http-port.txt"); err == nil {
		port = strings.TrimSpace(string(b))
	}
	if _, err := strconv.Atoi(port); err != nil {
		return nil, fmt.Errorf("/etc/http-port.txt: %q", port)
	}
	var pw []byte
	var err error
	for _, p := range []string{"/perm/gokr-pw.txt", "/etc/gokr-pw.txt", "/gokr-pw.txt"} {
		if pw, err = os.ReadFile(p); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gokrazy's password: %w", err)
	}
	return &API{BaseURL: "http://127.0.0.1:" + port, Password: strings.TrimSpace(string(pw))}, nil
}

func (a *API) do(ctx context.Context, method, path string, body io.Reader, hdr map[string]string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth("gokrazy", a.Password)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := a.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

// Put streams r to PUT /update/<dest> and compares the CRC-32 the
// appliance returns with that of what was sent.
func (a *API) Put(ctx context.Context, dest string, r io.Reader) error {
	h := crc32.NewIEEE()
	body, err := a.do(ctx, "PUT", "/update/"+dest, io.TeeReader(r, h), map[string]string{"X-Gokrazy-Update-Hash": "crc32"})
	if err != nil {
		return err
	}
	got := strings.TrimSpace(string(body))
	if want := fmt.Sprintf("%08x", h.Sum32()); got != want {
		if strings.HasPrefix(got, "<!DOCTYPE html>") {
			return fmt.Errorf("/update/%s: not implemented by the appliance", dest)
		}
		return fmt.Errorf("/update/%s: the appliance received data with CRC-32 %q, sent %s", dest, got, want)
	}
	return nil
}

// Post sends POST path (e.g. /update/switch, /reboot).
func (a *API) Post(ctx context.Context, path string) error {
	_, err := a.do(ctx, "POST", path, nil, nil)
	return err
}

// Install reads an update image from r (see ReadImage), refuses it if
// check says so, and writes it through a: root A's file system to the
// inactive root partition, the boot partition, the MBR's boot code, then
// switches the next boot to the new root. Nothing is switched after a
// failure. The caller reboots.
func Install(ctx context.Context, a *API, r io.Reader, check func(*Image) error) (*Image, error) {
	img, err := ReadImage(r, check, func(img *Image, root io.Reader) error {
		if err := a.Put(ctx, "root", root); err != nil {
			return fmt.Errorf("writing the root file system: %w", err)
		}
		return nil
	})
	if err != nil {
		return img, err
	}
	if err := a.Put(ctx, "boot", bytes.NewReader(img.Boot)); err != nil {
		return img, fmt.Errorf("writing the boot partition: %w", err)
	}
	if err := a.Put(ctx, "mbr", bytes.NewReader(img.MBR)); err != nil && !strings.Contains(err.Error(), "not implemented") {
		return img, fmt.Errorf("writing the MBR: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := a.Post(ctx, "/update/switch"); err != nil {
		return img, fmt.Errorf("switching: %w", err)
	}
	return img, nil
}
