#!/bin/sh
# ch11_toy.sh: writes data/ch11_toy.csv, the accuracies behind chapter 11's toy comparison (figures 08, 09).
#
# The shipped seed (1337) is read from data/weights/ch11_*.safetensors, which `make weights` trains; every
# other seed is trained here with exactly the shipped model's command (tools/make_weights.sh), only --seed
# changed. Training is deterministic, so the same seeds give the same file, byte for byte. Each training
# takes 3 to 5 minutes of one core; run `make build` first.
#   SEEDS='1 2'   the other seeds (default 1 2)
#   KEEP=DIR      keep the trained models in DIR as SETTING_SEED.safetensors and reuse the ones already there
#   TRAIN=0       train nothing: take the models in KEEP, list the missing ones as comments
# A row of the current file for the same setting and seed is kept, not retrained (delete the file to redo all).
set -eu
BIN=${BINDIR:-.}
SEEDS=${SEEDS:-1 2}
OUT=${OUT:-data/ch11_toy.csv}
TRAIN=${TRAIN:-1}
export OMP_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
KEEP=${KEEP:-$tmp}
mkdir -p "$KEEP"
touch "$tmp/old"
[ -f "$OUT" ] && cp "$OUT" "$tmp/old"

LIST=1 ONLY='ch11_(mla|dsa|csa|hca|window)' sh tools/make_weights.sh > "$tmp/jobs"
[ "$(grep -c . "$tmp/jobs")" -eq 5 ] || { echo "ch11_toy: expected 5 ch11 settings in tools/make_weights.sh" >&2; exit 1; }

accuracy() {  # the accuracy a weights file records in its header
    grep -ao '"accuracy":"[0-9.]*"' "$1" | head -1 | sed 's/.*:"\(.*\)"/\1/'
}

{
    echo "# chapter 11's toy comparison: held-out recall accuracy of every setting and seed, written by"
    echo "# tools/ch11_toy.sh. Seed 1337 is the shipped model in data/weights/; every other seed is the same"
    echo "# command with only --seed changed (OMP_NUM_THREADS=1; any thread count gives the same bytes):"
    while IFS='|' read -r name flags; do echo "#   $name: ./train $flags"; done < "$tmp/jobs"
    echo "setting,seed,accuracy"
} > "$tmp/csv"
while IFS='|' read -r name flags; do
    key=${name#ch11_}
    echo "$key,1337,$(accuracy "data/weights/$name.safetensors")" >> "$tmp/csv"
    for seed in $SEEDS; do
        if grep -q "^$key,$seed," "$tmp/old"; then
            grep "^$key,$seed," "$tmp/old" | head -1 >> "$tmp/csv"
            continue
        fi
        model="$KEEP/${key}_$seed.safetensors"
        if [ ! -f "$model" ] && [ "$TRAIN" = 0 ]; then
            echo "# $key,$seed: not trained yet" >> "$tmp/csv"
            continue
        fi
        start=$(date +%s)
        # shellcheck disable=SC2086
        [ -f "$model" ] || "$BIN/train" $(echo "$flags" | sed "s/--seed [0-9]*/--seed $seed/") --quiet --out "$model" > /dev/null
        acc=$(accuracy "$model")
        echo "$key,$seed,$acc" >> "$tmp/csv"
        echo "  $key seed $seed: accuracy $acc ($(( $(date +%s) - start )) s)"
    done
done < "$tmp/jobs"
mv "$tmp/csv" "$OUT"
echo "ch11_toy: wrote $OUT"
