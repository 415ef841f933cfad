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
# Chapters 9 and 10: every mixer and hybrid on one recall task with 1 to 8 pairs per sequence, so one model
# can be measured at every count. Each model is one run of the capacity experiment (tools/experiments.txt,
# which says why these learning rates and slopes): the all-X models have its large state (16 x 16 per
# linear layer; Mamba-2 4 heads of 16 x 16, trained twice as long), the hybrids its small one in their
# linear layers. Seed 1, except Mamba-2: its seed 1 stayed on the shortcut, seed 2 learned the lookup.
# Attention layers of the Qwen3-Next style models are gated attention with half of each 16-dim head
# rotating (a quarter, 4 dims, was too little position for these tiny heads to learn recall).
CAP="--task recall --pairs 8 --pairs-min 1 --seq-len 32 --d-model 64 --heads 4 --steps 1500"
LIN="--linear-heads 1 --linear-key-heads 1 --linear-key-dim 16 --linear-value-dim 16 --lr 1e-3"
LIGHT="--linear-heads 1 --linear-key-dim 16 --linear-value-dim 16 --slope-scale 256 --lr 1e-3"
MAMBA="--linear-heads 4 --linear-key-heads 1 --linear-key-dim 16 --linear-value-dim 16 --lr 3e-3"
LIN_S="--linear-heads 1 --linear-key-heads 1 --linear-key-dim 2 --linear-value-dim 16 --lr 1e-3"
LIGHT_S="--linear-heads 1 --linear-key-dim 4 --linear-value-dim 4 --slope-scale 256 --lr 1e-3"
MAMBA_S="--linear-heads 4 --linear-key-heads 1 --linear-key-dim 2 --linear-value-dim 16 --lr 3e-3"
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
# Chapter 11: the toy comparison of DeepSeek V4's layers against MLA and DSA: the same recall data (8 pairs,
# then 8 filler tokens, so every answer lies beyond the raw window of 8), steps and seed; each V4 model starts
# with a window-only layer as V4 does. DSA's dense warm-up is 6000 of the 8000 steps: with the default 2000
# it ended on the loss plateau (dense MLA left it only at step ~6800 for this seed), and the sparse stage
# never found the pairs (25% held out); with 6000 it leaves the plateau at ~1900 and ends at 100%. The
# other seeds (1, 2) are in data/ch11_toy.csv, written by tools/ch11_toy.sh. The sink model's twin without
# sinks is chapter 4's ch04_recall_g2 (the same command without --sinks).
V4TOY="--task recall --pairs 8 --gap 8 --seq-len 48 --layers 2 --d-model 64 --heads 4 --steps 8000 --seed 1337"
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
ch09_attention|--mixer gated --layers 2 $GATE $CAP --lr 1e-3 --seed 1
ch09_gdn|--mixer gdn --layers 2 $LIN $CAP --seed 1
ch09_hybrid|--mixer gdn,gdn,gdn,gated --layers 4 $LIN_S $GATE $CAP --seed 1
ch10_kda|--mixer kda --layers 2 $LIN $CAP --seed 1
ch10_lightning|--mixer lightning --layers 2 $LIGHT $CAP --seed 1
ch10_mamba2|--mixer mamba2 --layers 2 $MAMBA $CAP --steps 3000 --seed 2
ch10_kimi|--mixer kda,kda,kda,mla --layers 4 $LIN_S $CAP --seed 1
ch10_nemotron|--mixer mamba2,mamba2,gqa,mamba2,mamba2 --layers 5 $MAMBA_S $CAP --seed 1
ch10_minimax|--mixer lightning,lightning,lightning,lightning,lightning,lightning,lightning,gqa --layers 8 $LIGHT_S $CAP --seed 1
ch11_mla|--mixer mla $V4TOY
ch11_dsa|--mixer dsa --topk 8 --dense-steps 6000 $V4TOY
ch11_csa|--mixer v4swa,csa --window 8 --csa-ratio 4 --topk 2 $V4TOY
ch11_hca|--mixer v4swa,hca --window 8 --hca-ratio 8 $V4TOY
ch11_window|--mixer v4swa,v4swa --window 8 $V4TOY
ch11_sinks|--mixer gqa --kv-heads 2 --sinks $RECALL
JOBS
[ -f tools/weights_extra.txt ] && cat tools/weights_extra.txt >> "$log/jobs"
# ONLY=REGEX retrains just the models whose names match (e.g. `make weights ONLY='ch09|ch10'`).
if [ -n "${ONLY:-}" ]; then
    grep -E "^(${ONLY})[^|]*\|" "$log/jobs" > "$log/jobs.only" || true
    mv "$log/jobs.only" "$log/jobs"
fi
# LIST=1 prints the selected "name|flags" lines instead of training (tools/ch11_toy.sh reads them).
if [ -n "${LIST:-}" ]; then cat "$log/jobs"; exit 0; fi

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
