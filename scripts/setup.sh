#!/usr/bin/env bash
# Installs everything vnfpool needs to build and test, skipping what is already there.
# Safe to run again: every step checks before it acts.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages and the tests need CAP_BPF/CAP_NET_ADMIN)" >&2
    exit 1
fi

# --- Debian packages -------------------------------------------------------------------------
# bpftool: inspect pinned maps; iproute2/ethtool/iputils-ping: the network-namespace lab;
# util-linux: nsenter (the daemon in a lab namespace) and setpriv (as a user with only the unit's
# capabilities); systemd: systemd-analyze, which checks packaging/vnfpool.service (a container
# image may lack it; nothing here starts it); tmux: the pseudo-terminal that tests
# `vnfpool watch`'s screen (tests/tests/watch.rs). The cluster (issue #15): etcd-server (the
# tests start their own etcd on free ports and never use a system one), protobuf-compiler and
# libprotobuf-dev (etcd-client's build runs protoc on etcd's protos and the well-known types),
# bird2 (the lab's BGP router and the nodes' route exporters). The Debian package
# (`cargo xtask dist`, tests/tests/package.rs): dpkg-dev (dpkg-shlibdeps: its dependencies) and
# binutils (strip).
debs=(bpftool iproute2 ethtool iputils-ping util-linux systemd tmux
      etcd-server protobuf-compiler libprotobuf-dev bird2 dpkg-dev binutils)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    # Installing etcd-server or bird2 would start their system services where an init runs them;
    # nothing here needs those (the tests start their own), so keep them from starting.
    policy=/usr/sbin/policy-rc.d
    policy_ours=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && policy_ours=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if [ "$policy_ours" -eq 1 ]; then rm -f "$policy"; fi
else
    log "Debian packages present"
fi

# --- Rust toolchains ---------------------------------------------------------------------------
# Userspace: stable (default). eBPF: the preinstalled nightly with rust-src for -Z build-std=core.
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    log "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
else
    log "nightly rust-src present"
fi

# --- bpf-linker, built against the nightly's own libLLVM (see shared/TOOLCHAIN.md) ------------
BPF_LINKER_VERSION=0.13.0
if command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -qx "bpf-linker $BPF_LINKER_VERSION"; then
    log "bpf-linker $BPF_LINKER_VERSION present"
else
    sysroot="$(rustc +nightly --print sysroot)"
    llvm="$(cd "$sysroot/lib" && ls libLLVM.so.*-rust-* | head -n1)"
    llvm_major="$(sed -E 's/^libLLVM\.so\.([0-9]+).*/\1/' <<<"$llvm")"
    # A lasting prefix: bpf-linker records $prefix/lib as its RUNPATH and needs the soname there.
    prefix="${XDG_DATA_HOME:-$HOME/.local/share}/vnfpool/rust-llvm"
    mkdir -p "$prefix/lib"
    ln -sf "$sysroot/lib/$llvm" "$prefix/lib/libLLVM.so"
    ln -sf "$sysroot/lib/$llvm" "$prefix/lib/$llvm"
    log "building bpf-linker $BPF_LINKER_VERSION against $llvm (a few minutes)"
    LLVM_PREFIX="$prefix" cargo +nightly install bpf-linker --version "$BPF_LINKER_VERSION" \
        --no-default-features --features "llvm-$llvm_major" --locked --force
fi
bpf-linker --version | grep -qx "bpf-linker $BPF_LINKER_VERSION" || {
    echo "setup.sh: bpf-linker $BPF_LINKER_VERSION does not run outside cargo" >&2
    exit 1
}

# --- cargo-fuzz: `cargo xtask fuzz` (libFuzzer targets in fuzz/, built with the nightly) -----
CARGO_FUZZ_VERSION=0.13.2
if cargo +nightly fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    log "cargo-fuzz $CARGO_FUZZ_VERSION present"
else
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION (under a minute)"
    cargo +nightly install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --force
fi

# --- bpffs -------------------------------------------------------------------------------------
if ! mountpoint -q /sys/fs/bpf; then
    log "mounting bpffs at /sys/fs/bpf"
    mount -t bpf bpf /sys/fs/bpf
fi

log "ready: $(rustc --version), $(rustc +nightly --version), $(bpf-linker --version), $(cargo +nightly fuzz --version), $(bpftool version | head -n1)"
