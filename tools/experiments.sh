#!/bin/sh
# experiments.sh: trains every setting of tools/experiments.txt over its seeds, measures each model
# (./measure: recall accuracy per pair count, per-head attention statistics, first-token mass) and writes
# the metrics as JSON lines, one file per group: data/experiments/GROUP.jsonl (`make experiments`).
#
# A line of the list is  GROUP|SETTING|SEEDS|TRAIN FLAGS  (SEEDS space separated). Every run is one
# line of GROUP.jsonl: its setting, the exact ./train command (with --seed), and what ./measure found,
# in the list's order, seeds ascending. The models themselves are thrown away: the chapters ship one
# model per setting (make weights), the seeds beyond it ship as these metrics only.
#
# Training is deterministic, so the same list gives the same bytes. Runs are tiny, so JOBS of them run
# side by side on one thread each (two on 2 cores). ONLY=REGEX runs just the groups whose names match.
# KEEP=DIR keeps every model as DIR/GROUP_SETTING_sSEED.safetensors (to look at one, or to check that a
# shipped model is the same bytes as its seed here).
set -eu
BIN=${BINDIR:-.}
OUT=${OUT:-data/experiments}
LIST=${LIST:-tools/experiments.txt}
JOBS=${JOBS:-2}
SAMPLES=${SAMPLES:-256}
export OMP_NUM_THREADS=1
[ -x "$BIN/train" ] && [ -x "$BIN/measure" ] || { echo "experiments: build first (make build)" >&2; exit 2; }
[ -r "$LIST" ] || { echo "experiments: cannot read $LIST" >&2; exit 2; }
mkdir -p "$OUT" ${KEEP:+"$KEEP"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One job per (setting, seed): "INDEX GROUP SETTING SEED FLAGS...", INDEX keeping the list's order.
i=0
grep -v '^[[:space:]]*#' "$LIST" | grep . | while IFS='|' read -r group setting seeds flags; do
    if [ -n "${ONLY:-}" ] && ! echo "$group" | grep -Eq "^(${ONLY})$"; then continue; fi
    for seed in $seeds; do
        i=$((i + 1))
        printf '%06d %s %s %s %s\n' "$i" "$group" "$setting" "$seed" "$flags"
    done
done > "$work/jobs"
n=$(grep -c . "$work/jobs" || true)
[ "$n" -gt 0 ] || { echo "experiments: nothing to run (ONLY=${ONLY:-})" >&2; exit 2; }
echo "experiments: $n runs, $JOBS at a time"

# run INDEX GROUP SETTING SEED FLAGS...: train, measure, keep the metrics line
cat > "$work/run.sh" <<'RUN'
set -u
idx=$1 group=$2 setting=$3 seed=$4
shift 4
w=$WORK/$idx
start=$(date +%s)
if "$BIN/train" "$@" --seed "$seed" --quiet --out "$w.safetensors" > "$w.log" 2>&1 &&
   "$BIN/measure" "$w.safetensors" --samples "$SAMPLES" --setting "$setting" \
       --command "train $* --seed $seed" > "$w.json" 2>> "$w.log"; then
    echo "$group" > "$w.group"
    if [ -n "${KEEP:-}" ]; then mv "$w.safetensors" "$KEEP/${group}_${setting}_s$seed.safetensors"; else rm -f "$w.safetensors"; fi
    echo "  $group $setting seed $seed: $(grep -o 'accuracy [0-9.]*%' "$w.log" | tail -1) ($(( $(date +%s) - start )) s)"
else
    echo "experiments: $group $setting seed $seed failed:" >&2
    cat "$w.log" >&2
    touch "$WORK/FAILED"
fi
RUN
KEEP=${KEEP:-}
[ -z "$KEEP" ] || mkdir -p "$KEEP"
export BIN SAMPLES KEEP WORK="$work"
# shellcheck disable=SC2016
xargs -P "$JOBS" -L 1 sh "$work/run.sh" < "$work/jobs"
[ -e "$work/FAILED" ] && exit 1

# GROUP.jsonl in the list's order, written whole (temp file + rename)
for g in $(cat "$work"/*.group | sort -u); do
    tmp="$OUT/.$g.jsonl.tmp.$$"
    for f in "$work"/*.group; do
        [ "$(cat "$f")" = "$g" ] && cat "${f%.group}.json"
    done > "$tmp"
    mv "$tmp" "$OUT/$g.jsonl"
    echo "experiments: wrote $OUT/$g.jsonl ($(grep -c . "$OUT/$g.jsonl") runs)"
done
