#!/bin/sh
# Checks the Debian packages this project needs, prints what it found, and installs what is missing
# with apt-get (through sudo when not root). `tools/deps.sh --golden` adds PyTorch for `make golden`,
# `tools/deps.sh --fuzz` clang with libFuzzer and its OpenMP runtime for `make fuzz`.
set -e
need="gcc make pkg-config libcairo2-dev libstb-dev libcjson-dev libcriterion-dev libopenblas-dev fonts-dejavu-core pngcheck librsvg2-bin"
[ "$1" = "--golden" ] && need="python3 python3-torch python3-numpy"
[ "$1" = "--fuzz" ] && need="clang libclang-rt-14-dev libomp-dev"
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
