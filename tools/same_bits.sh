#!/bin/sh
# same_bits.sh FAST_BINDIR PLAIN_BINDIR: the fast (AVX2/FMA) and the plain-C build must train the same
# models to the same bytes. Run by `make test` after both test suites; exits 1 on the first difference.
set -eu
fast=$1 plain=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common="--task recall --layers 2 --d-model 32 --heads 4 --seq-len 24 --batch 8 --steps 25 --seed 5 --quiet"
for case in "gqa --kv-heads 2" "mla" "dsa --topk 3 --dense-steps 10" "gdn,gated --linear-heads 2" "mamba2,gqa --linear-heads 2" "lightning,mha"; do
    name=$(echo "$case" | cut -d' ' -f1)
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 "$fast/train" --mixer $case $common --out "$tmp/fast.safetensors" > /dev/null
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=2 "$plain/train" --mixer $case $common --out "$tmp/plain.safetensors" > /dev/null
    if ! cmp -s "$tmp/fast.safetensors" "$tmp/plain.safetensors"; then
        echo "same_bits: $name: the plain-C build (2 threads) trained different bytes than the fast build (1 thread)" >&2
        exit 1
    fi
    printf '  \342\234\223 %-14s same weights from the fast and the plain-C build\n' "$name"
done
