#!/usr/bin/env bash
# Prepare a clean Debian root for tests/test_wheel.py: a machine that never
# built SPDK, on which the manylinux wheel must install and run.
#
# debootstrap --variant=minbase with python3 and pip only (their Depends, no
# Recommends: no compiler, no -dev package, nothing under /usr/local), and the
# cffi and pycparser wheels from PyPI for the Pythons the tests install the
# wheel into, so that no test needs the network. The tests never write into
# the root: they run in an overlay of it.
#
# Idempotent: a second run with everything in place does nothing.
set -euo pipefail

usage() {
	cat <<EOF
usage: $0 [--force]

Builds the clean root and the cffi wheels into the cache directory.

  --force   rebuild even if the cache looks complete

Environment:
  PYSPDK_ROOTFS_DIR     cache directory (default /var/cache/pyspdk-root)
  PYSPDK_ROOTFS_MIRROR  Debian mirror (default http://deb.debian.org/debian)
EOF
}

DIR=${PYSPDK_ROOTFS_DIR:-/var/cache/pyspdk-root}
MIRROR=${PYSPDK_ROOTFS_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# The root's Python and the other CPythons the tests install the wheel into.
WHEEL_PYTHONS=(3.10 3.11 3.12 3.13)
# Platforms cffi publishes for x86_64 Linux (pip download takes no "and older").
WHEEL_PLATFORMS=(manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_28_x86_64)
# Bump when the layout changes: the stamp then no longer matches.
LAYOUT=1
FORCE=0

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

stamp() { printf 'layout=%s suite=%s pythons=%s\n' "$LAYOUT" "$SUITE" "${WHEEL_PYTHONS[*]}"; }

already_done() {
	[[ $FORCE -eq 0 && -f "$DIR/stamp" && -x "$DIR/rootfs/usr/bin/python3" && -d "$DIR/wheels" ]] &&
		[[ "$(cat "$DIR/stamp")" == "$(stamp)" ]]
}

bootstrap() {
	local new="$DIR/rootfs.new"
	rm -rf "$new"
	log "debootstrap $SUITE (minbase, python3 and pip) from $MIRROR"
	debootstrap --variant=minbase --include=python3,python3-pip \
		--keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
		"$SUITE" "$new" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 ||
		die "debootstrap failed: see $DIR/debootstrap.log"
	rm -f "$new"/var/cache/apt/archives/*.deb
	rm -rf "$new"/var/lib/apt/lists/*
	rm -rf "$DIR/rootfs"
	mv "$new" "$DIR/rootfs"
}

# What makes the root a fair test: a compiler or SPDK there would let a
# broken wheel pass.
check_clean() {
	local root="$DIR/rootfs" found
	for found in cc gcc c++ g++ ld pkg-config; do
		[[ ! -e "$root/usr/bin/$found" ]] || die "the root has $found: not a clean machine"
	done
	# shellcheck disable=SC2016  # ${Package} is dpkg-query's, not the shell's
	found=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package}\n' | grep -E -- '-dev$' || true)
	[[ -z "$found" ]] || die "the root has -dev packages: $found"
	found=$(find "$root/usr/local" -name 'libspdk*' -print -quit)
	[[ -z "$found" ]] || die "the root has an SPDK library: $found"
}

download_wheels() {
	local version platform_args=() p
	for p in "${WHEEL_PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
	rm -rf "$DIR/wheels"
	mkdir -p "$DIR/wheels"
	for version in "${WHEEL_PYTHONS[@]}"; do
		log "downloading cffi and pycparser for CPython $version"
		python3 -m pip download --disable-pip-version-check --quiet --only-binary=:all: \
			--implementation cp --python-version "$version" "${platform_args[@]}" \
			-d "$DIR/wheels" "cffi>=1.17" pycparser >>"$DIR/pip.log" 2>&1 ||
			die "pip download failed: see $DIR/pip.log"
	done
}

main() {
	if already_done; then
		log "clean root ready in $DIR ($(cat "$DIR/rootfs/etc/debian_version"), $(find "$DIR/wheels" -name '*.whl' | wc -l) wheels)"
		exit 0
	fi
	[[ $EUID -eq 0 ]] || die "debootstrap needs root"
	command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
	python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip: it downloads the cffi wheels"
	mkdir -p "$DIR"
	rm -f "$DIR/stamp"
	bootstrap
	check_clean
	download_wheels
	stamp >"$DIR/stamp"
	log "clean root ready in $DIR ($(cat "$DIR/rootfs/etc/debian_version"), $(find "$DIR/wheels" -name '*.whl' | wc -l) wheels)"
}

main
