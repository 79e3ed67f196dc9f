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
	# image checks and VM boots
	qemu-system-x86 qemu-system-arm qemu-efi-aarch64 ovmf systemd-boot-efi
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

if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's packaging starts these daemons where it can; the tests start
# their own instances on their own ports, so stop any system copies.
for svc in nginx haproxy dnsmasq; do
	$SUDO pkill -x "$svc" 2>/dev/null || true
done

GOBIN="$(go env GOPATH)/bin"
if [ ! -x "$GOBIN/staticcheck" ]; then
	echo "deps: installing staticcheck"
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
echo "deps: ok"
