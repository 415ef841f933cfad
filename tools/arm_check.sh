#!/bin/sh
# arm_check.sh: builds the kernels' probe (tests/arm/probe.c) for this machine and for 64-bit ARM, runs
# the ARM one under qemu, and checks both print the same hashes (`make arm-check`; needs Debian's
# gcc-aarch64-linux-gnu and qemu-user, which `tools/deps.sh --arm` installs).
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
src="tests/arm/probe.c common/attention.c common/mathx.c common/check.c common/rng.c"
flags="-std=c11 -D_GNU_SOURCE -O2 -ffp-contract=off -fopenmp -Icommon"
# shellcheck disable=SC2086
${CC:-gcc} $flags $(tools/cpu_flags.sh) $src -lm -o "$tmp/native"
# shellcheck disable=SC2086
aarch64-linux-gnu-gcc -static $flags $src -lm -o "$tmp/arm" 2> "$tmp/ld.log" || { cat "$tmp/ld.log" >&2; exit 1; }
OMP_NUM_THREADS=2 "$tmp/native" > "$tmp/native.txt"
OMP_NUM_THREADS=2 qemu-aarch64 "$tmp/arm" > "$tmp/arm.txt"
if cmp -s "$tmp/native.txt" "$tmp/arm.txt"; then
    sed 's/^/  same on ARM: /' "$tmp/native.txt"
else
    echo "arm_check: the ARM build computed different bits:" >&2
    diff "$tmp/native.txt" "$tmp/arm.txt" >&2
    exit 1
fi
