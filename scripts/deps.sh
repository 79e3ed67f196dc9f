#!/usr/bin/env bash
# deps.sh installs every Debian package and Go tool that `make test`,
# `make bench`, `make image` and `make vm` need on a fresh Debian machine.
# It is idempotent: what is already there is left alone.
set -euo pipefail

packages=(
	# servers and load tools for integration tests and benchmarks
	nginx-light haproxy wrk dnsperf dnsmasq dnsutils curl socat psmisc
	# network namespaces
	iproute2 ethtool tcpdump
	# SYN scans of the tarpit (pen/dsr)
	nmap hping3
	# image checks and VM boots; the arm64 image's EFI loader comes from
	# the arm64 build of systemd-boot-efi (multiarch, see below)
	qemu-system-x86 qemu-system-arm qemu-efi-aarch64 ovmf systemd-boot-efi
	systemd-boot-efi:arm64
	squashfs-tools dosfstools mtools e2fsprogs fdisk
	# browser tests
	chromium
	openssl ca-certificates
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# systemd-boot-efi:arm64 (systemd-bootaa64.efi for the arm64 image) is an
# arm64 package: let dpkg install arm64 packages next to amd64 ones.
if [ "$(dpkg --print-architecture)" != arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
	echo "deps: adding dpkg architecture arm64"
	$SUDO dpkg --add-architecture arm64
fi

if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's packaging may start nginx, haproxy and dnsmasq as services on
# their default ports. The tests and benchmarks run their own instances on
# ports they pick, so those services are left alone: stopping processes by
# name would also stop other people's on a shared machine.

GOBIN="$(go env GOPATH)/bin"
if [ ! -x "$GOBIN/staticcheck" ]; then
	echo "deps: installing staticcheck"
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
# The boards' kernel and firmware modules are data the Go build never
# imports, so go test does not fetch them; the board and kernel tests read
# them from the module cache.
echo "deps: go mod download"
(cd "$(dirname "$0")/.." && go mod download)
echo "deps: ok"
