// Package squashfs implements a writer for the appliance's root file
// systems: SquashFS 4.0 images with zlib ("gzip") compression, which every
// gokrazy kernel can mount, including the Raspberry Pi kernel that lacks
// zstd and xz.
//
// The writer covers what a root file system of statically linked Go
// programs needs: directories, regular files and symbolic links, all owned
// by root, one modification time for everything, 128 KiB data blocks, no
// fragments, no extended attributes, no NFS export table and no
// de-duplication. Data blocks are compressed in parallel at zlib's fastest
// level (about three times as fast as the default, for 5% more bytes); a
// block that does not shrink is stored as it is.
package squashfs

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

const (
	// BlockSize is the data block size.
	BlockSize = 128 << 10
	blockLog  = 17

	superblockSize = 96
	metaBlockSize  = 8192
	invalid        = ^uint64(0)

	compressionZlib = 1

	flagNoFragments = 0x0010
	flagNoXattrs    = 0x0200

	typeDir     = 1
	typeFile    = 2
	typeSymlink = 3

	uncompressedData = 1 << 24
	uncompressedMeta = 1 << 15
	maxDirEntries    = 256
)

// FS collects a file system tree before Write lays it out.
type FS struct {
	root    *node
	modTime time.Time
	level   int
}

type node struct {
	name     string
	mode     fs.FileMode // permission bits only
	children map[string]*node
	// regular files
	size int64
	open func() (io.ReadCloser, error)
	// symbolic links
	target string
	kind   int

	inode      uint32
	ref        uint64 // inode reference: metadata block << 16 | offset
	blockStart uint64
	blockSizes []uint32
}

// New returns an empty file system whose entries all carry modTime.
func New(modTime time.Time) *FS {
	return &FS{
		root:    &node{kind: typeDir, mode: 0o755, children: make(map[string]*node)},
		modTime: modTime,
		level:   zlib.BestSpeed,
	}
}

func splitPath(p string) ([]string, error) {
	clean := path.Clean("/" + p)
	if clean == "/" {
		return nil, fmt.Errorf("path %q names the root directory", p)
	}
	parts := strings.Split(clean[1:], "/")
	for _, s := range parts {
		if len(s) > 256 {
			return nil, fmt.Errorf("path %q: name longer than 256 bytes", p)
		}
	}
	return parts, nil
}

// parent returns the directory that holds p, creating missing directories
// with mode 0755.
func (f *FS) parent(p string) (*node, string, error) {
	parts, err := splitPath(p)
	if err != nil {
		return nil, "", err
	}
	dir := f.root
	for _, name := range parts[:len(parts)-1] {
		c, ok := dir.children[name]
		if !ok {
			c = &node{name: name, kind: typeDir, mode: 0o755, children: make(map[string]*node)}
			dir.children[name] = c
		}
		if c.kind != typeDir {
			return nil, "", fmt.Errorf("%s: %s is not a directory", p, name)
		}
		dir = c
	}
	return dir, parts[len(parts)-1], nil
}

func (f *FS) add(p string, n *node) error {
	dir, name, err := f.parent(p)
	if err != nil {
		return err
	}
	if old, ok := dir.children[name]; ok {
		if old.kind == typeDir && n.kind == typeDir {
			old.mode = n.mode
			return nil
		}
		return fmt.Errorf("%s already exists", p)
	}
	n.name = name
	dir.children[name] = n
	return nil
}

// Mkdir creates directory p (and its parents) with the given permissions.
func (f *FS) Mkdir(p string, perm fs.FileMode) error {
	return f.add(p, &node{kind: typeDir, mode: perm.Perm(), children: make(map[string]*node)})
}

// File adds the regular file p of size bytes, read through open when Write
// runs.
func (f *FS) File(p string, perm fs.FileMode, size int64, open func() (io.ReadCloser, error)) error {
	if size < 0 || size >= 1<<32 {
		return fmt.Errorf("%s: size %d out of range", p, size)
	}
	return f.add(p, &node{kind: typeFile, mode: perm.Perm(), size: size, open: open})
}

// Bytes adds the regular file p holding b.
func (f *FS) Bytes(p string, perm fs.FileMode, b []byte) error {
	return f.File(p, perm, int64(len(b)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
}

// HostFile adds the regular file p with the contents of the host file
// hostPath.
func (f *FS) HostFile(p string, perm fs.FileMode, hostPath string) error {
	fi, err := os.Stat(hostPath)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", hostPath)
	}
	return f.File(p, perm, fi.Size(), func() (io.ReadCloser, error) { return os.Open(hostPath) })
}

// Symlink adds the symbolic link p pointing to target.
func (f *FS) Symlink(p, target string) error {
	if target == "" {
		return fmt.Errorf("%s: empty link target", p)
	}
	return f.add(p, &node{kind: typeSymlink, mode: 0o777, target: target})
}

func (n *node) sorted() []*node {
	out := make([]*node, 0, len(n.children))
	for _, c := range n.children {
		out = append(out, c)
	}
	// The kernel's lookup stops early, so entries must be in byte order.
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// postOrder visits every node below and including n, children first.
func (n *node) postOrder(visit func(*node) error) error {
	if n.kind == typeDir {
		for _, c := range n.sorted() {
			if err := c.postOrder(visit); err != nil {
				return err
			}
		}
	}
	return visit(n)
}

// Write writes the file system to w at byte offset off and returns its
// size, padded to a multiple of 4 KiB.
func (f *FS) Write(w io.WriterAt, off int64) (int64, error) {
	var count uint32
	if err := f.root.postOrder(func(n *node) error {
		count++
		n.inode = count
		return nil
	}); err != nil {
		return 0, err
	}

	// File data first, right after the superblock.
	pos := uint64(superblockSize)
	if err := f.root.postOrder(func(n *node) error {
		if n.kind != typeFile {
			return nil
		}
		written, err := f.writeData(w, off, pos, n)
		pos += written
		return err
	}); err != nil {
		return 0, err
	}

	// Inodes and directory listings, children before their directory, so
	// that every reference a listing needs is known when it is written.
	inodes := &metaWriter{level: f.level}
	dirs := &metaWriter{level: f.level}
	parents := make(map[*node]uint32)
	f.root.postOrder(func(n *node) error {
		for _, c := range n.children {
			parents[c] = n.inode
		}
		return nil
	})
	parents[f.root] = count + 1
	mtime := uint32(f.modTime.Unix())
	if err := f.root.postOrder(func(n *node) error {
		var body []byte
		le := binary.LittleEndian
		switch n.kind {
		case typeDir:
			block, offset := dirs.pos()
			listing, err := encodeListing(n.sorted())
			if err != nil {
				return fmt.Errorf("directory %s: %w", n.name, err)
			}
			dirs.write(listing)
			if len(listing)+3 > 0xFFFF {
				return fmt.Errorf("directory %s: too many entries", n.name)
			}
			links := uint32(2)
			for _, c := range n.children {
				if c.kind == typeDir {
					links++
				}
			}
			body = make([]byte, 16)
			le.PutUint32(body[0:], uint32(block))
			le.PutUint32(body[4:], links)
			le.PutUint16(body[8:], uint16(len(listing)+3))
			le.PutUint16(body[10:], offset)
			le.PutUint32(body[12:], parents[n])
		case typeFile:
			if n.blockStart >= 1<<32 {
				return fmt.Errorf("file %s lies beyond 4 GiB", n.name)
			}
			body = make([]byte, 16+4*len(n.blockSizes))
			le.PutUint32(body[0:], uint32(n.blockStart))
			le.PutUint32(body[4:], 0xFFFFFFFF) // no fragment
			le.PutUint32(body[8:], 0)
			le.PutUint32(body[12:], uint32(n.size))
			for i, s := range n.blockSizes {
				le.PutUint32(body[16+4*i:], s)
			}
		case typeSymlink:
			body = make([]byte, 8+len(n.target))
			le.PutUint32(body[0:], 1)
			le.PutUint32(body[4:], uint32(len(n.target)))
			copy(body[8:], n.target)
		}
		header := make([]byte, 16)
		le.PutUint16(header[0:], uint16(n.kind))
		le.PutUint16(header[2:], uint16(n.mode))
		// uid and gid index 0: the single id, root
		le.PutUint32(header[8:], mtime)
		le.PutUint32(header[12:], n.inode)
		block, offset := inodes.pos()
		n.ref = block<<16 | uint64(offset)
		inodes.write(header)
		inodes.write(body)
		return nil
	}); err != nil {
		return 0, err
	}

	put := func(b []byte) error {
		if _, err := w.WriteAt(b, off+int64(pos)); err != nil {
			return fmt.Errorf("writing squashfs tables: %w", err)
		}
		pos += uint64(len(b))
		return nil
	}
	inodeTable := pos
	if err := put(inodes.finish()); err != nil {
		return 0, err
	}
	dirTable := pos
	if err := put(dirs.finish()); err != nil {
		return 0, err
	}
	// The id table: one metadata block holding the single id 0, then the
	// index pointing at it.
	idBlock := pos
	ids := &metaWriter{level: f.level}
	ids.write(make([]byte, 4))
	if err := put(ids.finish()); err != nil {
		return 0, err
	}
	idTable := pos
	index := make([]byte, 8)
	binary.LittleEndian.PutUint64(index, idBlock)
	if err := put(index); err != nil {
		return 0, err
	}
	bytesUsed := pos
	if pad := (4096 - pos%4096) % 4096; pad > 0 {
		if err := put(make([]byte, pad)); err != nil {
			return 0, err
		}
	}

	sb := make([]byte, superblockSize)
	le := binary.LittleEndian
	le.PutUint32(sb[0:], 0x73717368) // "hsqs"
	le.PutUint32(sb[4:], count)
	le.PutUint32(sb[8:], mtime)
	le.PutUint32(sb[12:], BlockSize)
	le.PutUint32(sb[16:], 0) // fragments
	le.PutUint16(sb[20:], compressionZlib)
	le.PutUint16(sb[22:], blockLog)
	le.PutUint16(sb[24:], flagNoFragments|flagNoXattrs)
	le.PutUint16(sb[26:], 1) // ids
	le.PutUint16(sb[28:], 4) // version 4.0
	le.PutUint16(sb[30:], 0)
	le.PutUint64(sb[32:], f.root.ref)
	le.PutUint64(sb[40:], bytesUsed)
	le.PutUint64(sb[48:], idTable)
	le.PutUint64(sb[56:], invalid) // xattr id table
	le.PutUint64(sb[64:], inodeTable)
	le.PutUint64(sb[72:], dirTable)
	le.PutUint64(sb[80:], idBlock) // empty fragment table
	le.PutUint64(sb[88:], invalid) // export table
	if _, err := w.WriteAt(sb, off); err != nil {
		return 0, fmt.Errorf("writing squashfs superblock: %w", err)
	}
	return int64(pos), nil
}

// encodeListing encodes a directory's entries: runs of at most 256
// entries whose inodes lie in one metadata block, each run behind a header
// naming that block and a base inode number.
func encodeListing(entries []*node) ([]byte, error) {
	var out []byte
	le := binary.LittleEndian
	for i := 0; i < len(entries); {
		block := entries[i].ref >> 16
		base := entries[i].inode
		j := i
		for j < len(entries) && j-i < maxDirEntries && entries[j].ref>>16 == block &&
			int64(entries[j].inode)-int64(base) <= 32767 && int64(entries[j].inode)-int64(base) >= -32768 {
			j++
		}
		h := make([]byte, 12)
		le.PutUint32(h[0:], uint32(j-i-1))
		le.PutUint32(h[4:], uint32(block))
		le.PutUint32(h[8:], base)
		out = append(out, h...)
		for _, e := range entries[i:j] {
			if len(e.name) == 0 || len(e.name) > 256 {
				return nil, fmt.Errorf("bad name %q", e.name)
			}
			b := make([]byte, 8, 8+len(e.name))
			le.PutUint16(b[0:], uint16(e.ref&0xFFFF))
			le.PutUint16(b[2:], uint16(int16(int64(e.inode)-int64(base))))
			le.PutUint16(b[4:], uint16(e.kind))
			le.PutUint16(b[6:], uint16(len(e.name)-1))
			out = append(out, append(b, e.name...)...)
		}
		i = j
	}
	return out, nil
}

// writeData compresses n's contents block by block to w at off+pos and
// returns the number of bytes written.
func (f *FS) writeData(w io.WriterAt, off int64, pos uint64, n *node) (uint64, error) {
	n.blockStart = pos
	n.blockSizes = nil
	if n.size == 0 {
		return 0, nil
	}
	r, err := n.open()
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", n.name, err)
	}
	defer r.Close()

	workers := runtime.GOMAXPROCS(0)
	start := pos
	remaining := n.size
	for remaining > 0 {
		// Read a batch of blocks, compress them in parallel, write in order.
		var raw [][]byte
		for len(raw) < 2*workers && remaining > 0 {
			size := int64(BlockSize)
			if remaining < size {
				size = remaining
			}
			b := make([]byte, size)
			if _, err := io.ReadFull(r, b); err != nil {
				return 0, fmt.Errorf("reading %s: %w (did it change?)", n.name, err)
			}
			raw = append(raw, b)
			remaining -= size
		}
		out := make([][]byte, len(raw))
		errs := make([]error, len(raw))
		var wg sync.WaitGroup
		sem := make(chan struct{}, workers)
		for i, b := range raw {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				out[i], errs[i] = compress(b, f.level)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return 0, fmt.Errorf("compressing %s: %w", n.name, err)
		}
		for i, c := range out {
			size := uint32(len(c))
			data := c
			if len(c) >= len(raw[i]) {
				data = raw[i]
				size = uint32(len(data)) | uncompressedData
			}
			if _, err := w.WriteAt(data, off+int64(pos)); err != nil {
				return 0, fmt.Errorf("writing %s: %w", n.name, err)
			}
			pos += uint64(len(data))
			n.blockSizes = append(n.blockSizes, size)
		}
	}
	return pos - start, nil
}

func compress(b []byte, level int) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := zlib.NewWriterLevel(&buf, level)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// metaWriter packs a table into metadata blocks: up to 8 KiB of data each,
// compressed when that helps, behind a two-byte length header.
type metaWriter struct {
	level int
	cur   []byte
	out   []byte
}

// pos returns where the next byte goes: the offset of its metadata block
// from the start of the table, and the offset inside the block's data.
func (m *metaWriter) pos() (uint64, uint16) {
	return uint64(len(m.out)), uint16(len(m.cur))
}

func (m *metaWriter) write(p []byte) {
	for len(p) > 0 {
		n := min(metaBlockSize-len(m.cur), len(p))
		m.cur = append(m.cur, p[:n]...)
		p = p[n:]
		if len(m.cur) == metaBlockSize {
			m.flush()
		}
	}
}

func (m *metaWriter) flush() {
	if len(m.cur) == 0 {
		return
	}
	data := m.cur
	header := uint16(len(data)) | uncompressedMeta
	if c, err := compress(m.cur, m.level); err == nil && len(c) < len(m.cur) {
		data = c
		header = uint16(len(c))
	}
	m.out = binary.LittleEndian.AppendUint16(m.out, header)
	m.out = append(m.out, data...)
	m.cur = m.cur[:0:0]
}

// finish flushes the last block and returns the table.
func (m *metaWriter) finish() []byte {
	m.flush()
	return m.out
}
