#!/usr/bin/env python3
"""bench_train.py: PyTorch CPU eager training of the same tiny model as ./train, for a tokens/s comparison.

    /usr/bin/python3 tests/reference/bench_train.py [--heads 4] [--layers 2] [--d-model 64] [--d-ff 128]
        [--batch 32] [--seq-len 32] [--steps 100] [--threads N]

Same model (golden_model.py's forward, float32), same optimizer (AdamW betas (0.9, 0.95), eps 1e-8,
weight decay 0.1 on matrices only, global-norm clip 1.0), recall batches of the same shape (made up
front, so batch generation is not timed). Prints the tokens/s of the optimizer steps after a warm-up.
"""
import argparse
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_model  # noqa: E402


def recall_batches(n, B, T, vocab, n_pairs=8, n_keys=16, n_values=16, seed=0):
    rng = random.Random(seed)
    key0, val0 = 2, 2 + n_keys
    out = []
    for _ in range(n):
        toks = torch.zeros(B, T, dtype=torch.long)
        tgts = torch.full((B, T), -1, dtype=torch.long)
        for b in range(B):
            keys = rng.sample(range(n_keys), n_pairs)
            vals = [rng.randrange(n_values) for _ in keys]
            pos = 0
            for k, v in zip(keys, vals):
                toks[b, pos], toks[b, pos + 1] = key0 + k, val0 + v
                pos += 2
            toks[b, pos] = 1
            pos += 1
            for i in rng.sample(range(n_pairs), n_pairs):
                if pos + 2 > T:
                    break
                toks[b, pos], tgts[b, pos], toks[b, pos + 1] = key0 + keys[i], val0 + vals[i], val0 + vals[i]
                pos += 2
        out.append((toks, tgts))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=0)
    ap.add_argument("--d-ff", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d, H = a.d_model, a.heads
    G = a.kv_heads or H
    F = a.d_ff or 2 * d
    V = 2 + 16 + 16
    dh = d // H
    geo = {"n_layers": a.layers, "n_heads": H, "n_kv_heads": G, "head_dim": dh, "rope_theta": 10000.0}

    def param(*shape, std=0.02, ones=False):
        t = torch.ones(shape) if ones else torch.randn(shape) * std
        return t.requires_grad_(True)

    p = {"tok_emb": param(V, d), "norm_f": param(d, ones=True), "lm_head": param(V, d)}
    for l in range(a.layers):
        pre = "layers.%d." % l
        p[pre + "norm1"] = param(d, ones=True)
        p[pre + "mixer.wq"] = param(H * dh, d)
        p[pre + "mixer.wk"] = param(G * dh, d)
        p[pre + "mixer.wv"] = param(G * dh, d)
        p[pre + "mixer.wo"] = param(d, H * dh)
        p[pre + "norm2"] = param(d, ones=True)
        p[pre + "mlp.w_gate"] = param(F, d)
        p[pre + "mlp.w_up"] = param(F, d)
        p[pre + "mlp.w_down"] = param(d, F)
    decay = [t for t in p.values() if t.dim() >= 2]
    no_decay = [t for t in p.values() if t.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    warm = 10
    batches = recall_batches(a.steps + warm, a.batch, a.seq_len, V)

    def step(toks, tgts):
        _, loss, _ = golden_model.forward(p, geo, toks, tgts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(p.values()), 1.0)
        opt.step()
        return loss.item()

    for i in range(warm):
        step(*batches[i])
    t0 = time.perf_counter()
    for i in range(warm, warm + a.steps):
        loss = step(*batches[i])
    el = time.perf_counter() - t0
    tok = a.steps * a.batch * a.seq_len
    print("bench_train (PyTorch %s eager, %d threads): %d layers, d_model %d, %d heads (%d kv), d_ff %d, "
          "batch %d x %d: %.0f tokens/s (%.2f ms/step, last loss %.4f)"
          % (torch.__version__, a.threads, a.layers, d, H, G, F, a.batch, a.seq_len, tok / el,
             1000 * el / a.steps, loss))


if __name__ == "__main__":
    main()
