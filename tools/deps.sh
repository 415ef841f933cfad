#!/bin/sh
# Checks the Debian packages this project needs, prints what it found, and installs what is missing
# with apt-get (through sudo when not root). `tools/deps.sh --golden` adds PyTorch for `make golden`,
# `--arm` the ARM cross compiler and qemu for `make arm-check`, `--fuzz` clang with libFuzzer and its
# OpenMP runtime for `make fuzz`.
set -e
need="gcc make pkg-config libcairo2-dev libstb-dev libcjson-dev libcriterion-dev libopenblas-dev fonts-dejavu-core pngcheck librsvg2-bin"
[ "${1:-}" = "--golden" ] && need="python3 python3-torch python3-numpy"
[ "${1:-}" = "--arm" ] && need="gcc-aarch64-linux-gnu qemu-user"
[ "${1:-}" = "--fuzz" ] && need="clang libclang-rt-14-dev libomp-dev"
# Without Debian's package tools (macOS, another distribution) say what is needed instead of failing
# somewhere in the build. Debian and Ubuntu on arm64 (Raspberry Pi OS, Graviton, a Linux VM on an Apple
# Silicon laptop) have every package above, and the build picks the plain-C kernels there by itself.
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: this machine has no apt-get/dpkg, so nothing is installed automatically. The build needs:" >&2
    echo "  a C11 compiler with OpenMP, make, pkg-config, cairo, cJSON, Criterion, stb_image_write.h (as" >&2
    echo "  Debian's libstb-dev ships it: header + libstb), OpenBLAS (bench only), DejaVu fonts, pngcheck, rsvg-convert." >&2
    if [ "$(uname -s)" = Darwin ]; then
        echo "  Homebrew: brew install gcc make pkg-config cairo cjson criterion openblas pngcheck librsvg" >&2
        echo "            brew install --cask font-dejavu; then build with 'make CC=gcc-14' (Apple's clang has no OpenMP)." >&2
        echo "  Homebrew has no libstb: the simplest route on a Mac is a Debian 12 arm64 VM or container." >&2
    fi
    [ "${1:-}" = "--golden" ] && echo "  make golden and make bench also need python3 with torch and numpy." >&2
    exit 1
fi
missing=""
for p in $need; do
    v=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$p" 2>/dev/null || true)
    case "$v" in
        installed*) printf '  \342\234\223 %-18s %s\n' "$p" "${v#installed }" ;;
        *) printf '  \342\234\227 %-18s missing\n' "$p"; missing="$missing $p" ;;
    esac
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
if ! $sudo apt-get update -qq || ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing; then
    echo "deps: could not install:$missing. Run: sudo apt-get install$missing" >&2
    exit 1
fi
