// Package boards describes, as data, each board the appliance image is
// built for: which kernel and firmware modules provide the boot files,
// which of their files go onto the boot partition, the kernel command line
// and serial console, the EFI loader, the target architecture and the
// partition scheme. How images are written is the image package's job.
package boards

import (
	"fmt"
	"sort"
	"strings"
)

// Scheme names a partition table layout.
type Scheme string

// GPTHybridMBR is the only scheme: a GUID partition table with a hybrid MBR
// whose first entry makes the boot partition visible to MBR-only boot
// loaders (the Raspberry Pi's). See package image/partition.
const GPTHybridMBR Scheme = "gpt+hybrid-mbr"

// EFILoader is a UEFI boot loader taken from the build host.
type EFILoader struct {
	// Source is the loader's path on the build host, e.g.
	// "/usr/lib/systemd/boot/efi/systemd-bootx64.efi".
	Source string
	// Target is its path on the boot partition, the removable-media path
	// UEFI firmware starts without any boot entry, e.g.
	// "EFI/BOOT/BOOTX64.EFI".
	Target string
	// DebianPackage provides Source, e.g. "systemd-boot-efi".
	DebianPackage string
}

// ConfigTxt describes the Raspberry Pi firmware's config.txt.
type ConfigTxt struct {
	// From is the file in the kernel module the config starts from.
	From string
	// Replace holds old, new pairs of whole lines to change in it.
	Replace []string
}

// Board is everything that differs between boards.
type Board struct {
	// Name selects the board on the command line, e.g. "rpi".
	Name string
	// Description is a line for people.
	Description string
	// GOARCH is the architecture every program is compiled for.
	GOARCH string
	// KernelModule provides vmlinuz and, where the board needs them,
	// device trees and overlays, e.g. "github.com/gokrazy/kernel.rpi".
	KernelModule string
	// KernelFiles are globs, relative to the kernel module, of the files
	// copied to the boot partition, keeping their relative paths.
	KernelFiles []string
	// FirmwareModule provides boot firmware, e.g.
	// "github.com/gokrazy/firmware"; empty when the board has none.
	FirmwareModule string
	// FirmwareFiles are globs, relative to the firmware module.
	FirmwareFiles []string
	// RequiredBootFiles must be among the copied files; a build fails
	// without them (e.g. the device tree of each supported model).
	RequiredBootFiles []string
	// ConfigTxt, when not nil, writes config.txt for the Pi firmware.
	ConfigTxt *ConfigTxt
	// EFILoader, when not nil, makes the image boot by UEFI: the loader is
	// installed at its removable-media path and reads
	// loader/entries/gokrazy.conf.
	EFILoader *EFILoader
	// SerialConsole is the kernel's serial console, e.g. "ttyS0,115200".
	SerialConsole string
	// Cmdline holds the kernel arguments after console= and root=.
	Cmdline []string
	// Scheme is the partition scheme.
	Scheme Scheme
	// Models are prefixes of the device-tree model strings (as
	// gokrazy.Model returns them) of the hardware the board covers; empty
	// for boards identified by architecture alone.
	Models []string
}

// all lists every board. The kernel command lines follow each kernel
// module's own cmdline.txt; rootwait=30 (Linux 6.5 and later) replaces
// rootdelay=10 so that the kernel mounts the root as soon as the disk
// appears and still panics, and so reboots, when it never does.
var all = []Board{
	{
		Name:        "pc",
		Description: "x86-64 PCs and virtual machines booting by UEFI",
		GOARCH:      "amd64",
		// kernel.amd64's cmdline.txt: root=/dev/sda2 ro init=/gokrazy/init
		// panic=10 oops=panic rootdelay=10 pci=nommconf
		KernelModule:      "github.com/gokrazy/kernel.amd64",
		KernelFiles:       []string{"vmlinuz"},
		RequiredBootFiles: []string{"vmlinuz"},
		EFILoader: &EFILoader{
			Source:        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
			Target:        "EFI/BOOT/BOOTX64.EFI",
			DebianPackage: "systemd-boot-efi",
		},
		SerialConsole: "ttyS0,115200",
		Cmdline:       []string{"ro", "init=/gokrazy/init", "panic=10", "oops=panic", "rootwait=30", "pci=nommconf"},
		Scheme:        GPTHybridMBR,
	},
	{
		Name:        "rpi",
		Description: "Raspberry Pi 3, 3+, 4, 400, CM4, Zero 2 W and 5 (64-bit)",
		GOARCH:      "arm64",
		// kernel.rpi's cmdline.txt: root=/dev/mmcblk0p2 init=/gokrazy/init
		// rootwait panic=10 oops=panic
		KernelModule: "github.com/gokrazy/kernel.rpi",
		KernelFiles:  []string{"vmlinuz", "*.dtb", "overlays/*.dtbo", "overlays/overlay_map.dtb"},
		// The Pi 5 keeps its boot firmware in EEPROM; the others read
		// bootcode.bin (Pi 3), start*.elf and fixup*.dat from here.
		FirmwareModule: "github.com/gokrazy/firmware",
		FirmwareFiles:  []string{"*.bin", "*.dat", "*.elf"},
		RequiredBootFiles: []string{
			"vmlinuz",
			"bootcode.bin", "start.elf", "fixup.dat", "start4.elf", "fixup4.dat",
			"bcm2710-rpi-3-b.dtb",       // Pi 3 B
			"bcm2710-rpi-3-b-plus.dtb",  // Pi 3 B+
			"bcm2710-rpi-zero-2-w.dtb",  // Pi Zero 2 W
			"bcm2711-rpi-4-b.dtb",       // Pi 4 B
			"bcm2711-rpi-400.dtb",       // Pi 400
			"bcm2711-rpi-cm4.dtb",       // Compute Module 4
			"bcm2712-rpi-5-b.dtb",       // Pi 5 (C1 stepping)
			"bcm2712d0-rpi-5-b.dtb",     // Pi 5 (D0 stepping)
			"overlays/overlay_map.dtb",  // lets the firmware map overlays per model
			"overlays/disable-bt.dtbo",  // a commonly used overlay, as a sample
			"overlays/vc4-kms-v3d.dtbo", // likewise
			"overlays/vc4-kms-v3d-pi5.dtbo",
		},
		ConfigTxt: &ConfigTxt{
			// arm_control=0x200 switches the CPU to AArch64; kernel=vmlinuz.
			From: "config.txt",
			// A serial console on the GPIO header (UART0) for debugging.
			Replace: []string{"enable_uart=0", "enable_uart=1"},
		},
		SerialConsole: "serial0,115200",
		Cmdline:       []string{"init=/gokrazy/init", "rootwait", "panic=10", "oops=panic"},
		Scheme:        GPTHybridMBR,
		Models: []string{
			"Raspberry Pi 3 Model B",
			"Raspberry Pi 3 Model A Plus",
			"Raspberry Pi 4 Model B",
			"Raspberry Pi 400",
			"Raspberry Pi Compute Module 4",
			"Raspberry Pi Zero 2 W",
			"Raspberry Pi 5 Model B",
		},
	},
	{
		Name:        "arm64",
		Description: "generic arm64 machines booting by UEFI, such as qemu's virt machine",
		GOARCH:      "arm64",
		// kernel.arm64's cmdline.txt: root=/dev/sda2 ro init=/gokrazy/init
		// panic=10 oops=panic
		KernelModule:      "github.com/gokrazy/kernel.arm64",
		KernelFiles:       []string{"vmlinuz"},
		RequiredBootFiles: []string{"vmlinuz"},
		EFILoader: &EFILoader{
			Source:        "/usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
			Target:        "EFI/BOOT/BOOTAA64.EFI",
			DebianPackage: "systemd-boot-efi:arm64",
		},
		SerialConsole: "ttyAMA0,115200",
		Cmdline:       []string{"ro", "init=/gokrazy/init", "panic=10", "oops=panic", "rootwait=30"},
		Scheme:        GPTHybridMBR,
	},
}

// Names returns the names of all boards, sorted.
func Names() []string {
	names := make([]string, len(all))
	for i, b := range all {
		names[i] = b.Name
	}
	sort.Strings(names)
	return names
}

// All returns every board.
func All() []Board {
	return append([]Board(nil), all...)
}

// Lookup returns the board called name.
func Lookup(name string) (Board, error) {
	for _, b := range all {
		if b.Name == name {
			return b, nil
		}
	}
	return Board{}, fmt.Errorf("unknown board %q (known: %s)", name, strings.Join(Names(), ", "))
}

// ForModel returns the board whose model prefixes match model (the string
// gokrazy.Model returns on the device), or else the board for goarch that
// lists no models.
func ForModel(model, goarch string) (Board, bool) {
	for _, b := range all {
		for _, m := range b.Models {
			if strings.HasPrefix(model, m) {
				return b, true
			}
		}
	}
	for _, b := range all {
		if len(b.Models) == 0 && b.GOARCH == goarch {
			return b, true
		}
	}
	return Board{}, false
}
