#!/usr/bin/env python3
"""golden_attention.py: PyTorch reference values for chapter 3's attention (MHA / GQA / MQA, sliding window).

Written from the equations (SPEC sections 1-2: MHA, GQA/MQA, masks), not from the C code:
    q = x Wq^T, k = x Wk^T, v = x Wv^T            W in PyTorch layout (out, in), no biases
    q, k <- RoPE, half-split pairs (i, i + dh/2), every dim rotates, freq_i = theta^(-2i/dh)
    KV head g serves query heads g*(H/G) .. (g+1)*(H/G)-1   (torch.repeat_interleave)
    P = softmax(q k^T / sqrt(dh) + mask), mask: causal j <= i, and i - W < j under a window W
    out = concat_heads(P v) Wo^T
plus the gradients of loss = sum(out * R) for a random R (autograd).

Everything is computed in float64 from float32 inputs, then stored as F32 in
tests/golden/attention.safetensors (written with struct + json only, atomically). Tensor names are
"<case>.<name>"; each case's geometry is in the metadata as "<case>.<key>".

Run:  /usr/bin/python3 tests/reference/golden_attention.py   (from the repository root)
"""
import math
import os
import sys

import torch

from safetensors_io import write_safetensors

CASES = [
    # name, B, T, d, H, G, dh, theta, window (0: causal)
    ("gqa", 1, 8, 32, 4, 2, 8, 10000.0, 0),
    ("mha", 1, 8, 32, 4, 4, 8, 10000.0, 0),
    ("mqa_local", 2, 8, 32, 4, 1, 8, 100.0, 3),
]


def rope_half(x, theta):
    """x (B, heads, T, dh): rotate pairs (i, i + dh/2) of the token at position t by t * theta^(-2i/dh)."""
    T, dh = x.shape[-2], x.shape[-1]
    half = dh // 2
    freq = theta ** (-torch.arange(half, dtype=torch.float64) * 2.0 / dh)          # (half,)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]          # (T, half)
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def attention(x, wq, wk, wv, wo, H, G, dh, theta, window):
    B, T, _ = x.shape
    q = (x @ wq.T).view(B, T, H, dh).transpose(1, 2)      # (B, H, T, dh)
    k = (x @ wk.T).view(B, T, G, dh).transpose(1, 2)      # (B, G, T, dh)
    v = (x @ wv.T).view(B, T, G, dh).transpose(1, 2)
    q, k = rope_half(q, theta), rope_half(k, theta)
    k = k.repeat_interleave(H // G, dim=1)                # (B, H, T, dh)
    v = v.repeat_interleave(H // G, dim=1)
    s = q @ k.transpose(-1, -2) / math.sqrt(dh)           # (B, H, T, T)
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = j <= i
    if window > 0:
        visible = visible & (j > i - window)
    s = s.masked_fill(~visible, float("-inf"))
    P = torch.softmax(s, dim=-1)
    o = (P @ v).transpose(1, 2).reshape(B, T, H * dh)     # (B, T, H*dh)
    return o @ wo.T, P


def main():
    root = os.environ.get("ATTN_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    out_path = os.path.join(root, "tests", "golden", "attention.safetensors")
    gen = torch.Generator().manual_seed(20240603)
    tensors, meta = [], {"source": "tests/reference/golden_attention.py", "torch": torch.__version__,
                         "rope": "half-split (i, i + dh/2), all dims"}
    for name, B, T, d, H, G, dh, theta, window in CASES:
        def randn(*shape, std):
            # draw in float32 (what the C test reads), then compute in float64 from exactly those values
            return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std).to(torch.float64)
        x = randn(B, T, d, std=1.0)
        # larger than training init so the attention rows are far from uniform
        wq = randn(H * dh, d, std=0.5)
        wk = randn(G * dh, d, std=0.5)
        wv = randn(G * dh, d, std=0.3)
        wo = randn(d, H * dh, std=0.3)
        R = randn(B, T, d, std=1.0)
        leaves = [t.requires_grad_() for t in (x, wq, wk, wv, wo)]
        out, P = attention(x, wq, wk, wv, wo, H, G, dh, theta, window)
        (out * R).sum().backward()
        for tname, t in [("x", x), ("wq", wq), ("wk", wk), ("wv", wv), ("wo", wo), ("R", R),
                         ("out", out), ("P", P)]:
            tensors.append((name + "." + tname, t))
        for tname, t in zip(["dx", "dwq", "dwk", "dwv", "dwo"], leaves):
            tensors.append((name + "." + tname, t.grad))
        for key, val in [("B", B), ("T", T), ("d_model", d), ("n_heads", H), ("n_kv_heads", G),
                         ("head_dim", dh), ("rope_theta", theta), ("sliding_window", window)]:
            meta[name + "." + key] = str(val)
    write_safetensors(out_path, tensors, meta)
    print("wrote %s (%d tensors)" % (out_path, len(tensors)), file=sys.stderr)


if __name__ == "__main__":
    main()
