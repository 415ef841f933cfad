#!/usr/bin/env python3
"""trained_linear.py: runs a TRAINED model with linear layers (Gated DeltaNet, KDA, Lightning, Mamba-2)
through the independent PyTorch implementations of golden_gdn.py and golden_linear.py (the papers'
recurrences, token by token, float64) and compares its logits at every position with the C model's
(./infer). Evidence that a model which failed to learn failed in training, not in its recurrence.

The tiny model around the mixers, from the equations (common/model.h): x = tok_emb[tokens]; per layer
x += mixer(RMSNorm(x) * norm1), x += w_down(silu(w_gate h) * w_up h) with h = RMSNorm(x) * norm2;
logits = RMSNorm(x) * norm_f @ lm_head^T; RMSNorm eps 1e-5.

Run:  /usr/bin/python3 tests/reference/trained_linear.py WEIGHTS.safetensors... [--infer ./infer]
Prints the largest |difference| of the logits relative to their largest magnitude, per file; exits 1 if
any exceeds 1e-4.
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from golden_gdn import gdn, kda          # noqa: E402
from golden_linear import lightning, mamba2   # noqa: E402
from golden_model import st_read       # noqa: E402

EPS = 1e-5


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def mixer(kind, x, W, geo, layer):
    Hk, Hv = geo["linear_num_key_heads"], geo["linear_num_value_heads"]
    dk, dv = geo["linear_key_head_dim"], geo["linear_value_head_dim"]
    if kind == "gdn":
        return gdn(x, W, Hk, Hv, dk, dv)[0]
    if kind == "kda":
        return kda(x, W, Hv, dk, dv)[0]
    if kind == "lightning":
        return lightning(x, W, Hv, dv, layer, geo["n_layers"], geo.get("linear_slope_scale", 1.0))[0]
    if kind == "mamba2":
        return mamba2(x, W, Hv, dv, Hk, dk, geo["linear_conv_kernel_dim"])[0]
    sys.exit("trained_linear: layer %d is '%s'; only all-linear models are supported" % (layer, kind))


def forward(p, geo, tokens):
    x = p["tok_emb"][tokens]
    for l, kind in enumerate(geo["mixers"]):
        pre = "layers.%d." % l
        W = {k[len(pre + "mixer."):]: v for k, v in p.items() if k.startswith(pre + "mixer.")}
        x = x + mixer(kind, rmsnorm(x, p[pre + "norm1"]), W, geo, l)
        h = rmsnorm(x, p[pre + "norm2"])
        x = x + (F.silu(h @ p[pre + "mlp.w_gate"].T) * (h @ p[pre + "mlp.w_up"].T)) @ p[pre + "mlp.w_down"].T
    return rmsnorm(x, p["norm_f"]) @ p["lm_head"].T


def c_logits(infer, path, tokens):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "run.safetensors")
        subprocess.run([infer, path, "--tokens", ",".join(str(t) for t in tokens), "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        t, _ = st_read(out)
        return t["logits"].double()


def main():
    args = sys.argv[1:]
    infer = "./infer"
    if "--infer" in args:
        i = args.index("--infer")
        infer = args[i + 1]
        del args[i:i + 2]
    if not args:
        sys.exit(__doc__)
    worst = 0.0
    gen = torch.Generator().manual_seed(3)
    for path in args:
        tensors, meta = st_read(path)
        geo = json.loads(meta["geometry"])
        p = {k: v.double() for k, v in tensors.items() if not k.startswith("train.")}
        T = geo["max_seq_len"]
        tokens = torch.randint(0, geo["vocab_size"], (T,), generator=gen)
        want = forward(p, geo, tokens[None])[0]
        got = c_logits(infer, path, tokens.tolist())
        err = (got - want).abs().max().item() / want.abs().max().item()
        worst = max(worst, err)
        print("%s: %s, %d tokens: max |C - PyTorch| / max |logit| = %.2e" % (path, ",".join(geo["mixers"]), T, err))
    sys.exit(1 if worst > 1e-4 else 0)


if __name__ == "__main__":
    main()
