#!/usr/bin/env bash
# Prepare a QEMU guest whose kernel has ublk, for tests/test_ublk_guest.py,
# and the modules the NVMe checks load (tests/test_nvme_guest.py).
#
# Fetches Debian bookworm-backports' linux-image-6.12.*-amd64-unsigned (it
# has CONFIG_BLK_DEV_UBLK and 9p as modules) without touching the system's
# apt configuration: apt runs with its own sources list, lists and cache
# under the cache directory. Builds an initramfs (busybox-static, the
# modules, an /init that mounts the host's root read-only over 9p and runs
# a script the test left in the writable share) with `busybox cpio`.
# Writes the modules the checks load at run time (uio, uio_pci_generic, the
# kernel's nvme driver, ext4) decompressed into <cache>/modules, for
# `busybox insmod` (the host has no kmod), with their load order in
# <cache>/modules/order.
#
# Idempotent: a second run with everything in place does nothing.
set -euo pipefail

usage() {
	cat <<EOF
usage: $0 [--force]

Builds the guest kernel and initramfs into the cache directory.

  --force   rebuild even if the cache looks complete

Environment:
  PYSPDK_GUEST_DIR   cache directory (default /var/cache/pyspdk-guest)
  PYSPDK_GUEST_MIRROR  Debian mirror (default http://deb.debian.org/debian)
EOF
}

DIR=${PYSPDK_GUEST_DIR:-/var/cache/pyspdk-guest}
MIRROR=${PYSPDK_GUEST_MIRROR:-http://deb.debian.org/debian}
FORCE=0
# Modules the guest loads, dependencies first.
MODULES=(netfs 9pnet 9pnet_virtio 9p ublk_drv)
# Loaded by the checks and benchmarks, not by /init; dependencies first
# (nbd: bench/kernel_peers.py reads nbdkit through /dev/nbd0).
RUN_MODULES=(uio uio_pci_generic nvme-auth nvme-core nvme crc16 crc32c_generic mbcache jbd2 ext4 nbd)
# Bump when the initramfs layout changes: the stamp then no longer matches.
LAYOUT=2

for arg in "$@"; do
	case "$arg" in
	--force) FORCE=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
done

log() { printf 'prepare.sh: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

APT_DIR="$DIR/apt"
APT_OPTS=(
	-o "Dir::Etc::SourceList=$APT_DIR/sources.list"
	-o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
	-o "Dir::State::Lists=$APT_DIR/lists"
	-o "Dir::Cache=$APT_DIR/cache"
	-o "Dir::State::Status=$APT_DIR/status"
	-o "Debug::NoLocking=1"
	-o "APT::Get::List-Cleanup=0"
)

already_done() {
	[[ $FORCE -eq 0 && -f "$DIR/stamp" && -f "$DIR/vmlinuz" && -f "$DIR/initramfs.cpio.gz" ]] &&
		[[ "$(cat "$DIR/stamp")" == "layout=$LAYOUT" ]]
}

# The run-time modules have their own stamp, so that adding one does not
# rebuild the initramfs (nor fetch anything when the kernel package is cached).
modules_done() {
	[[ $FORCE -eq 0 && -f "$DIR/modules/stamp" ]] &&
		[[ "$(cat "$DIR/modules/stamp")" == "${RUN_MODULES[*]}" ]]
}

apt_setup() {
	mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/sources.list.d"
	: >"$APT_DIR/status"
	printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s bookworm-backports main\n' \
		"$MIRROR" >"$APT_DIR/sources.list"
	printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s bookworm main\n' \
		"$MIRROR" >>"$APT_DIR/sources.list"
	log "apt update (private lists in $APT_DIR)"
	apt-get "${APT_OPTS[@]}" update >"$DIR/apt.log" 2>&1 || die "apt-get update failed: see $DIR/apt.log"
}

fetch_packages() {
	local kernel
	kernel=$(apt-cache "${APT_OPTS[@]}" search --names-only '^linux-image-6\.12\.' |
		awk '{print $1}' | grep -E '^linux-image-6\.12\.[^-]+-amd64-unsigned$' | sort -V | tail -n 1)
	[[ -n "$kernel" ]] || die "no linux-image-6.12.*-amd64-unsigned in bookworm-backports"
	log "downloading $kernel and busybox-static"
	mkdir -p "$DIR/debs"
	(cd "$DIR/debs" && rm -f ./*.deb &&
		apt-get "${APT_OPTS[@]}" download "$kernel" busybox-static >>"$DIR/apt.log" 2>&1) ||
		die "apt-get download failed: see $DIR/apt.log"
}

# decompress SOURCE TARGET: a module as the kernel package ships it, made plain.
decompress() {
	case "$1" in
	*.ko.xz) xz -dc "$1" >"$2" ;;
	*.ko.zst) zstd -qdc "$1" >"$2" ;;
	*.ko.gz) gzip -dc "$1" >"$2" ;;
	*) cp "$1" "$2" ;;
	esac
}

# find_module RELEASE NAME: the module's path in the unpacked kernel package.
find_module() {
	local path
	path=$(find "$DIR/kernel/lib/modules/$1" -name "$2.ko*" | head -n 1)
	[[ -n "$path" ]] || die "module $2 not found in kernel $1"
	printf '%s\n' "$path"
}

write_run_modules() {
	local release m out="$DIR/modules.new"
	release=$(basename "$DIR"/kernel/lib/modules/*)
	rm -rf "$out"
	mkdir -p "$out"
	for m in "${RUN_MODULES[@]}"; do
		decompress "$(find_module "$release" "$m")" "$out/$m.ko"
		echo "$m" >>"$out/order"
	done
	echo "${RUN_MODULES[*]}" >"$out/stamp"
	rm -rf "$DIR/modules"
	mv "$out" "$DIR/modules"
}

unpack() {
	rm -rf "$DIR/kernel" "$DIR/busybox"
	mkdir -p "$DIR/kernel" "$DIR/busybox"
	dpkg-deb -x "$DIR"/debs/linux-image-*.deb "$DIR/kernel"
	dpkg-deb -x "$DIR"/debs/busybox-static_*.deb "$DIR/busybox"
	cp "$DIR"/kernel/boot/vmlinuz-* "$DIR/vmlinuz.new"
}

write_init() {
	cat >"$1" <<'EOF'
#!/bin/busybox sh
# Guest init: load the modules, mount the host's root read-only over 9p with
# tmpfs where programs write, run /results/run.sh (left by the test) in it,
# record its exit status, power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/modules/$m.ko" || echo "init: insmod $m failed"; done
mkdir -p /host /results
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /host ||
	{ echo "init: mounting the host root failed"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results /results ||
	{ echo "init: mounting the results share failed"; poweroff -f; }
# /keep: the host's root as it is, for directories the tmpfs below would hide
# (the test lists them in /results/keep: a virtual environment in /tmp, say).
mkdir -p /keep
mount --bind /host /keep
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/shm /host/dev/pts
for d in /host/tmp /host/dev/shm /host/var/tmp /host/run; do mount -t tmpfs tmpfs "$d"; done
if [ -f /results/keep ]; then
	while read -r p; do
		case "$p" in
		/tmp/* | /var/tmp/* | /run/* | /dev/shm/*)
			if [ -d "/keep$p" ]; then mkdir -p "/host$p" && mount --bind "/keep$p" "/host$p"; fi
			;;
		esac
	done </results/keep
fi
mkdir -p /host/tmp/results
mount --bind /results /host/tmp/results
echo "init: userspace up"
chroot /host /bin/sh /tmp/results/run.sh >/results/output 2>&1
echo $? >/results/rc
sync
echo "init: done, rc $(cat /results/rc)"
poweroff -f
EOF
	chmod +x "$1"
}

build_initramfs() {
	local root="$DIR/initramfs" release path m
	rm -rf "$root"
	mkdir -p "$root"/{bin,proc,sys,dev,modules,host,results}
	cp "$DIR/busybox/bin/busybox" "$root/bin/busybox"
	release=$(basename "$DIR"/kernel/lib/modules/*)
	: >"$root/modules.order"
	for m in "${MODULES[@]}"; do
		path=$(find_module "$release" "$m")
		decompress "$path" "$root/modules/$m.ko"
		echo "$m" >>"$root/modules.order"
	done
	write_init "$root/init"
	(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -9 >"$DIR/initramfs.cpio.gz.new")
	mv "$DIR/initramfs.cpio.gz.new" "$DIR/initramfs.cpio.gz"
	mv "$DIR/vmlinuz.new" "$DIR/vmlinuz"
	echo "$release" >"$DIR/release"
	echo "layout=$LAYOUT" >"$DIR/stamp"
	rm -rf "$root"
}

# Only the run-time modules are missing: take them from the cached kernel
# package, or fetch it when it is not there.
modules_only() {
	if ! compgen -G "$DIR/debs/linux-image-*.deb" >/dev/null; then
		apt_setup
		fetch_packages
	fi
	rm -rf "$DIR/kernel"
	mkdir -p "$DIR/kernel"
	dpkg-deb -x "$DIR"/debs/linux-image-*.deb "$DIR/kernel"
	if [[ "$(basename "$DIR"/kernel/lib/modules/*)" != "$(cat "$DIR/release")" ]]; then
		rm -rf "$DIR/kernel"
		die "the kernel package is not the guest's kernel $(cat "$DIR/release"): run $0 --force"
	fi
	write_run_modules
	rm -rf "$DIR/kernel"
}

main() {
	if already_done; then
		if ! modules_done; then
			log "writing the run-time modules into $DIR/modules"
			modules_only
		fi
		log "guest ready in $DIR (kernel $(cat "$DIR/release"))"
		exit 0
	fi
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
	command -v busybox >/dev/null || die "busybox is not installed (apt-get install busybox-static)"
	mkdir -p "$DIR"
	rm -f "$DIR/stamp"
	apt_setup
	fetch_packages
	unpack
	build_initramfs
	write_run_modules
	rm -rf "$DIR/kernel" "$DIR/busybox"
	log "guest ready in $DIR (kernel $(cat "$DIR/release"))"
}

main
