#!/bin/sh
# bench_train.sh: training throughput of ./train against the same model in PyTorch CPU eager
# (tests/reference/bench_train.py, Debian's python3-torch), same config, same machine, one after the
# other in this script. Prints tokens/s of both and the ratio. Run by `make bench`.
set -eu
BIN=${BINDIR:-.}
PY=${PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "bench_train: skipped (no python3-torch; 'tools/deps.sh --golden' installs it)"
    exit 0
fi
steps=${STEPS:-150}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '\ntraining throughput: ./train vs PyTorch %s CPU eager (same model, AdamW, batch 32, %s steps)\n' \
    "$("$PY" -c 'import torch; print(torch.__version__)')" "$steps"
printf '%-44s %4s %12s %12s %8s\n' "model" "thr" "ours tok/s" "torch tok/s" "ratio"
# heads layers d_model kv_heads seq_len: the three small shapes of the first benchmark, and the shape the
# chapters' capacity models train at (d_model 128 would be chapter 9's at twice the width; T 128)
for cfg in "1 2 64 1 32" "4 2 64 4 32" "4 2 64 2 32" "4 2 128 4 128"; do
    set -- $cfg
    heads=$1 layers=$2 d=$3 kv=$4 T=$5
    n=$steps
    [ "$T" -ge 128 ] && n=$(( steps / 3 > 10 ? steps / 3 : 10 ))
    for thr in 1 2; do
        ours=$(OMP_NUM_THREADS=$thr "$BIN/train" --mixer gqa --task recall --heads "$heads" --kv-heads "$kv" \
                 --layers "$layers" --d-model "$d" --seq-len "$T" --steps "$n" --quiet --out "$tmp/w.safetensors" \
               | sed -n 's/.*(\([0-9]*\) tokens\/s).*/\1/p')
        torch=$(OMP_NUM_THREADS=$thr "$PY" tests/reference/bench_train.py --heads "$heads" --kv-heads "$kv" \
                  --layers "$layers" --d-model "$d" --seq-len "$T" --steps "$n" --threads "$thr" \
                | sed -n 's/.*: \([0-9]*\) tokens\/s.*/\1/p')
        printf '%-44s %4s %12s %12s %7sx\n' "$layers layers, d $d, $heads heads ($kv kv), T $T" "$thr" "$ours" "$torch" \
            "$(awk -v a="$ours" -v b="$torch" 'BEGIN { printf "%.2f", a / b }')"
    done
done
