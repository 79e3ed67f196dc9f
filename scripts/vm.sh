#!/usr/bin/env bash
# vm.sh boots the pc image of the pen appliance in qemu for a person to try
# (`make vm`). It builds a fresh image into images/vm-pc.img first (set
# PEN_VM_REUSE=1 to boot the existing one and keep its /perm), then runs
# qemu with the serial console on this terminal: Ctrl-A X quits.
#
# Networking is qemu's user mode, restricted so that the VM reaches nothing
# but what is forwarded (set PEN_VM_NET=open to let it out, e.g. for NTP):
# host ports on 127.0.0.1 go to the guest's pen, gokrazy and admin ports,
# and the guest's 10.0.2.100:8000 (the backend in pen's default
# configuration) goes to 127.0.0.1:${PEN_VM_BACKEND:-8000} on the host.
# qemu runs under software emulation; PEN_VM_KVM=1 uses KVM where it works.
set -euo pipefail
cd "$(dirname "$0")/.."

pen_port=${PEN_VM_PEN_PORT:-10080}
pen_tls_port=${PEN_VM_PEN_TLS_PORT:-10443}
gokrazy_port=${PEN_VM_GOKRAZY_PORT:-19080}
admin_port=${PEN_VM_ADMIN_PORT:-18443}
admin_http_port=${PEN_VM_ADMIN_HTTP_PORT:-18080}
backend=${PEN_VM_BACKEND:-8000}

code=/usr/share/OVMF/OVMF_CODE_4M.fd
vars=/usr/share/OVMF/OVMF_VARS_4M.fd
for f in "$code" "$vars"; do
	[ -r "$f" ] || { echo "vm: $f missing; install the Debian package ovmf (scripts/deps.sh does)" >&2; exit 1; }
done
for p in qemu-system-x86_64 socat; do
	command -v "$p" >/dev/null || { echo "vm: $p missing; run scripts/deps.sh" >&2; exit 1; }
done

mkdir -p images
img=images/vm-pc.img
pwfile=images/vm-password
if [ ! -s "$pwfile" ]; then
	(umask 077; head -c 15 /dev/urandom | base64 | tr -d '/+=' > "$pwfile")
fi
password=$(cat "$pwfile")
if [ "${PEN_VM_REUSE:-0}" != 1 ] || [ ! -f "$img" ]; then
	[ -x bin/penimage ] || go build -o bin/ ./image/cmd/penimage
	bin/penimage build -board pc -o "$img" -password "$password" ${PEN_VM_CONFIG:+-config "$PEN_VM_CONFIG"}
fi
varscopy=images/vm-OVMF_VARS.fd
[ -f "$varscopy" ] || cp "$vars" "$varscopy"

restrict=on
[ "${PEN_VM_NET:-}" = open ] && restrict=off
netdev="user,id=n0,restrict=$restrict"
netdev+=",hostfwd=tcp:127.0.0.1:$pen_port-:80,hostfwd=tcp:127.0.0.1:$pen_tls_port-:443"
netdev+=",hostfwd=tcp:127.0.0.1:$gokrazy_port-:9080"
netdev+=",hostfwd=tcp:127.0.0.1:$admin_port-:8443,hostfwd=tcp:127.0.0.1:$admin_http_port-:8080"
netdev+=",guestfwd=tcp:10.0.2.100:8000-cmd:socat - TCP:127.0.0.1:$backend"

accel=()
[ "${PEN_VM_KVM:-0}" = 1 ] && accel=(-accel kvm)

cat <<EOF

pen appliance VM: qemu, UEFI (OVMF), image $img. Ctrl-A X quits.
  pen, HTTP          http://127.0.0.1:$pen_port/     -> guest port 80
  pen, HTTPS         https://127.0.0.1:$pen_tls_port/    -> guest port 443
  gokrazy status     http://127.0.0.1:$gokrazy_port/     -> guest port 9080 (user gokrazy, password $password)
  admin UI, HTTPS    https://127.0.0.1:$admin_port/    -> guest port 8443
  admin UI, HTTP     http://127.0.0.1:$admin_http_port/     -> guest port 8080
  pen's default backend, 10.0.2.100:8000 in the guest, is 127.0.0.1:$backend here;
  start one with: python3 -m http.server $backend --bind 127.0.0.1
  network: restrict=$restrict (PEN_VM_NET=open lets the VM reach other hosts)

EOF

exec qemu-system-x86_64 "${accel[@]}" -machine q35 -m 1024 -smp 2 \
	-nographic -nodefaults -serial mon:stdio \
	-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code" \
	-drive "if=pflash,format=raw,unit=1,file=$varscopy" \
	-drive "file=$img,format=raw,if=virtio" \
	-netdev "$netdev" -device virtio-net-pci,netdev=n0
