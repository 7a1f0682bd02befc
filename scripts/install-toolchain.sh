#!/usr/bin/env bash
# Installs what building and testing veer needs on Debian 12 (bookworm).
# Idempotent: every step checks first and skips what is already in place.
# Why these packages: rustup's toolchains
# have no rust-src, so the eBPF crate is built with Debian's rustc-web,
# which ships a prebuilt `core` for bpfel-unknown-none.
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
LLVM_PREFIX=/usr/lib/llvm-22
# Debian packages: toolchain for the eBPF object (rust-web-clippy lints it
# for its BPF target), tools the tests drive (openssl makes the fleet's TLS
# test certificates), python3 for the layout checks, and what builds and
# checks the Debian package (dpkg-dev, lintian, groff-base, man-db).
PKGS=(rustc-web cargo-web libstd-rust-web-dev-bpf llvm-22-dev rust-web-clippy
      iproute2 ethtool bpftool util-linux curl systemd bird2 \
      etcd-server etcd-client protobuf-compiler libprotobuf-dev nftables python3 openssl \
      dpkg-dev lintian groff-base man-db)
# With --bench: the load generator and the load balancer veer is compared to.
if [[ ${1:-} == --bench ]]; then
    PKGS+=(wrk haproxy)
fi

say() { printf '[veer toolchain] %s\n' "$*"; }
die() { printf '[veer toolchain] error: %s\n' "$*" >&2; exit 1; }

[[ $(uname -s) == Linux ]] || die "veer needs Linux (found $(uname -s))"
if [[ -r /etc/os-release ]]; then
    . /etc/os-release
    if [[ ${ID:-} != debian || ${VERSION_ID:-} != 12 ]]; then
        say "warning: tested on Debian 12; this is ${PRETTY_NAME:-unknown}. Trying anyway."
    fi
fi
command -v apt-get >/dev/null || die "apt-get not found: install ${PKGS[*]} by hand, then bpf-linker ${BPF_LINKER_VERSION}"

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "run as root (or install sudo)"
    SUDO=sudo
fi

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    # Stale package lists hold an older rustc-web (1.85) and no llvm-22: refresh first.
    $SUDO apt-get update -q || die "apt-get update failed"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || die "apt-get install failed for: ${missing[*]}"
else
    say "Debian packages present"
fi

[[ -x /usr/bin/rustc ]] || die "/usr/bin/rustc missing after installing rustc-web"
# rustc and bpf-linker must share one LLVM build ("Invalid record" otherwise).
/usr/bin/rustc -vV | grep -q '^LLVM version: 22\.' \
    || die "/usr/bin/rustc is not built on LLVM 22 ($(/usr/bin/rustc -V)); need rustc-web 1.96 from bookworm-updates/security"
[[ -d /usr/lib/rustlib/bpfel-unknown-none ]] || die "no bpfel core under /usr/lib/rustlib (libstd-rust-web-dev-bpf)"
[[ -e $LLVM_PREFIX/lib/libLLVM.so ]] || ls "$LLVM_PREFIX"/lib/libLLVM*.so* >/dev/null 2>&1 \
    || die "libLLVM not found under $LLVM_PREFIX (llvm-22-dev)"

CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
if [[ -x $CARGO_BIN/bpf-linker ]] && "$CARGO_BIN/bpf-linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    say "bpf-linker $BPF_LINKER_VERSION present"
else
    command -v cargo >/dev/null || die "cargo not found (rustup or cargo-web)"
    say "building bpf-linker $BPF_LINKER_VERSION against LLVM 22 (about 2 minutes)"
    LLVM_PREFIX=$LLVM_PREFIX cargo install "bpf-linker@$BPF_LINKER_VERSION" --locked \
        --no-default-features --features llvm-22 \
        || die "bpf-linker build failed"
fi
say "ok"
