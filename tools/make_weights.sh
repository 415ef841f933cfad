#!/bin/sh
# make_weights.sh: retrains every shipped tiny model (`make weights` runs this after `make build`).
#
# Training is deterministic: the same command writes the same bytes on every run and for any
# OMP_NUM_THREADS, so a diff of data/weights/ after this script means the code changed, not luck.
# The models are tiny, so two trainings side by side on one thread each use 2 cores far better than
# one training on two threads. The "untrained" model of every figure is rebuilt by the chapters from
# the seed stored in each file, so it is not shipped.
set -eu
BIN=${BINDIR:-.}
OUT=data/weights
JOBS=${JOBS:-2}
mkdir -p "$OUT" tests/golden
export OMP_NUM_THREADS=1
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

# name | flags. Every recall model of the chapter-4/5 comparison uses the same data, steps and seed (they
# give figures their geometry and chapter 12 its models; the accuracy comparison itself is the ablation
# group of tools/experiments.txt, over seeds, with fewer steps).
RECALL="--task recall --layers 2 --d-model 64 --heads 4 --steps 4000 --seed 1337"
# Chapter 6, the toy Gemma 3 ablation: same copy task (each copied token's key lies 8..16 tokens back),
# data, steps and seed; only the layer pattern (local:global ratio) and the window change. These are seed
# 1337 of the swa group of tools/experiments.txt.
SWA="--mixer mha --task induction --seq-len 32 --layers 4 --d-model 32 --heads 2 --batch 16 --steps 2500 --seed 1337"
# Chapters 9 and 10: every mixer and hybrid on one recall task with 1 to 16 pairs per sequence, so one
# model can be measured at every count. Every linear layer keeps one head with a state of about 48 numbers
# (3 x 16; Lightning must be square: 7 x 7), small on purpose so the capacity limit falls inside 16 pairs.
# Measured at 6000 steps, all DeltaNet: with 4 x 16 it still recalled 16 pairs at 98%; with 3 x 16 it falls
# from 100% (1 pair) to about a third (16 pairs); with 2 x 16 or 4 x 4 it never learned the lookup at all.
# 6000 steps because at 3000 the hybrids whose linear layers learn slowly were still on the plateau.
# Attention layers of the Qwen3-Next style models are gated attention with half of each 16-dim head
# rotating (a quarter, 4 dims, was too little position for these tiny heads to learn recall).
CAP="--task recall --pairs 16 --pairs-min 1 --seq-len 48 --d-model 64 --heads 4 --steps 6000 --seed 1337"
LIN="--linear-heads 1 --linear-key-heads 1 --linear-key-dim 3 --linear-value-dim 16"
LIGHT="--linear-heads 1 --linear-key-dim 7 --linear-value-dim 7"
MAMBA="--linear-heads 1 --linear-key-heads 1 --linear-key-dim 3 --linear-value-dim 16"
GATE="--rotary-fraction 0.5"
# Chapter 8: gated attention and its ungated twin, same data, steps and seed (2 heads of 32: with 4 heads
# of 16 only 4 dims would rotate under partial RoPE). One layer on backcopy with <s> first, 10000 steps:
# there the ungated model grows a first-token sink (at 2 layers and 3000 steps neither model did). Its
# seeds are the sink group of tools/experiments.txt; this is their seed 1337.
GATED="--mixer gated --layers 1 --d-model 64 --heads 2 --kv-heads 1 --qk-norm zero --rotary-fraction 0.25 --task backcopy --bos --seq-len 33 --steps 10000 --seed 1337"
# Chapters 3-5, heads that differ: the topics task (a topic token, a stream from that topic's bigram
# chain, then a copy of its end) gives layer 0 reasons for a topic (first-token) head and previous-token
# heads; induction or recall alone made every head of a layer alike.
TOPICS="--task topics --seq-len 33 --layers 2 --d-model 64 --heads 4 --steps 3000 --seed 1337"
cat > "$log/jobs" <<JOBS
ch02_recall|--mixer mha --task recall --layers 2 --d-model 64 --heads 1 --steps 2000 --seed 1337
ch03_induction|--mixer mha --task induction --layers 2 --d-model 64 --heads 4 --steps 800 --seed 1337
ch03_recall|--mixer mha --task recall --layers 2 --d-model 64 --heads 4 --steps 2000 --seed 1337
ch03_topics|--mixer mha $TOPICS
ch04_topics_gqa|--mixer gqa --kv-heads 2 $TOPICS
ch05_topics_mla|--mixer mla $TOPICS
ch04_recall_g4|--mixer mha $RECALL
ch04_recall_g2|--mixer gqa --kv-heads 2 $RECALL
ch04_recall_g1|--mixer mqa $RECALL
ch05_recall_mla|--mixer mla $RECALL
ch06_global|$SWA
ch06_1to1_w4|$SWA --pattern 1 --window 4
ch06_3to1_w4|$SWA --pattern 3 --window 4
ch06_3to1_w8|$SWA --pattern 3 --window 8
ch06_local_w4|$SWA --pattern local --window 4
ch06_local_w8|$SWA --pattern local --window 8
ch06_local_w12|$SWA --pattern local --window 12
ch06_local_w16|$SWA --pattern local --window 16
ch07_dsa_recall|--mixer dsa --task recall --pairs 4 --layers 2 --d-model 64 --heads 4 --topk 4 --index-heads 4 --index-dim 16 --steps 4000 --dense-steps 1000 --seed 1337
ch08_gated|$GATED --gate elementwise
ch08_ungated|$GATED --gate none
ch09_attention|--mixer gated --layers 4 $GATE $CAP
ch09_gdn|--mixer gdn --layers 4 $LIN $CAP
ch09_hybrid|--mixer gdn,gdn,gdn,gated --layers 4 $LIN $GATE $CAP
ch10_kda|--mixer kda --layers 4 $LIN $CAP
ch10_lightning|--mixer lightning --layers 4 $LIGHT $CAP
ch10_mamba2|--mixer mamba2 --layers 4 $MAMBA $CAP
ch10_kimi|--mixer kda,kda,kda,mla --layers 4 $LIN $CAP
ch10_nemotron|--mixer mamba2,mamba2,gqa,mamba2,mamba2 --layers 5 $MAMBA $CAP
ch10_minimax|--mixer lightning,lightning,lightning,lightning,lightning,lightning,lightning,gqa --layers 8 $LIGHT $CAP
JOBS
[ -f tools/weights_extra.txt ] && cat tools/weights_extra.txt >> "$log/jobs"
# ONLY=REGEX retrains just the models whose names match (e.g. `make weights ONLY='ch09|ch10'`).
if [ -n "${ONLY:-}" ]; then
    grep -E "^(${ONLY})[^|]*\|" "$log/jobs" > "$log/jobs.only" || true
    mv "$log/jobs.only" "$log/jobs"
fi

run() {  # name flags...
    name=$1; shift
    start=$(date +%s)
    if "$BIN/train" "$@" --quiet --out "$OUT/$name.safetensors" > "$log/$name.out" 2>&1; then
        echo "  $name: $(grep -o 'accuracy [0-9.]*%' "$log/$name.out" | tail -1) ($(( $(date +%s) - start )) s)"
    else
        echo "make_weights: training $name failed:" >&2; cat "$log/$name.out" >&2; touch "$log/FAILED"
    fi
}

echo "make_weights: $(grep -c . "$log/jobs") models, $JOBS at a time"
n=0
while IFS='|' read -r name flags; do
    [ -z "$name" ] && continue
    # shellcheck disable=SC2086
    run "$name" $flags &
    n=$((n + 1))
    if [ $((n % JOBS)) -eq 0 ]; then wait; fi
done < "$log/jobs"
wait
[ -e "$log/FAILED" ] && exit 1
[ -n "${ONLY:-}" ] && { echo "make_weights: done (ONLY=$ONLY)"; exit 0; }
# Input of the PyTorch golden test (tests/reference/golden_model.py): a small GQA model (4 query heads
# sharing 2 KV heads), briefly trained so its gradients are not those of a random model.
"$BIN/train" --mixer gqa --task recall --layers 2 --d-model 32 --heads 4 --kv-heads 2 --steps 300 --seed 7 \
    --quiet --out tests/golden/model_gqa.safetensors > /dev/null
echo "make_weights: done"
