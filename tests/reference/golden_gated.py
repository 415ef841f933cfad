#!/usr/bin/env python3
"""golden_gated.py: PyTorch reference values for chapter 8's gated attention (Qwen3-Next).

Written from the equations (SPEC section 6; Hugging Face transformers Qwen3NextAttention as the statement
of the facts), not from the C code. Weights in PyTorch layout (out, in), no biases, H query heads, G KV
heads of head_dim dh, gw gate channels per head (dh: elementwise, 1: headwise):
    per head h, rows of Wq: the first dh make q_h, the next gw make the gate g_h
    k = x Wk^T, v = x Wv^T
    q_h, k_g <- x * rsqrt(mean(x^2) + 1e-6) * gain, gain = 1 + q_norm (zero-centred) or q_norm (rms)
    q_h, k_g <- RoPE on their first rot = dh * fraction dims: rotate_half over those dims
                (pairs (i, i + rot/2), angle t * theta^(-2i/rot)); dims rot.. pass through
    P_h = softmax(q_h k_g^T / sqrt(dh) + mask) (causal; i - W < j under a window W), g = h // (H/G)
    o_h = P_h v_g * sigmoid(g_h) (headwise: one scalar per head), out = concat_h(o_h) Wo^T
Plus the gradients of loss = sum(out * R) for a random R (autograd).

Computed in float64 from float32 inputs, stored as F32 in tests/golden/gated.safetensors. Tensor names
"<case>.<name>" (wq, wk, wv, wo, q_norm, k_norm; gradients "d<name>"; "gates" = sigmoid(g) of batch 0,
(T, H*gw)); each case's geometry is in the metadata as "<case>.<key>".

Run:  /usr/bin/python3 tests/reference/golden_gated.py   (from the repository root)
"""
import os
import sys

import torch

from safetensors_io import write_safetensors

EPS = 1e-6

GATES = {"none": 0, "elementwise": 1, "headwise": 2}
NORMS = {"none": 0, "rms": 1, "zero": 2}

CASES = [
    # name, B, T, d, H, G, dh, gate, qk_norm, rotary fraction, theta, window (0: causal)
    ("elementwise", 2, 7, 24, 4, 2, 8, "elementwise", "zero", 0.25, 100.0, 0),
    ("headwise", 1, 8, 20, 4, 1, 8, "headwise", "rms", 0.5, 1000.0, 0),
    ("local", 2, 6, 16, 2, 2, 6, "elementwise", "zero", 1.0 / 3.0, 50.0, 3),
]


def head_rmsnorm(x, gain):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + EPS) * gain


def partial_rope(x, rot, theta):
    """x (B, heads, T, dh): rotate_half on x[..., :rot] at each token's position, the rest untouched."""
    T = x.shape[-2]
    if rot == 0:
        return x
    inv_freq = theta ** (-torch.arange(0, rot, 2, dtype=torch.float64) / rot)          # (rot/2,)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]            # (T, rot/2)
    cos = torch.cat([ang.cos(), ang.cos()], dim=-1)                                     # (T, rot)
    sin = torch.cat([ang.sin(), ang.sin()], dim=-1)
    xr, xp = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = torch.cat([-xr[..., half:], xr[..., :half]], dim=-1)                      # rotate_half
    return torch.cat([xr * cos + rotated * sin, xp], dim=-1)


def gated_attention(x, W, H, G, dh, gate, norm, rot, theta, window):
    B, T, _ = x.shape
    gw = dh if gate == "elementwise" else 1 if gate == "headwise" else 0
    qg = (x @ W["wq"].T).view(B, T, H, dh + gw)
    q, g = qg[..., :dh], qg[..., dh:]                                                   # (B,T,H,dh), (B,T,H,gw)
    k = (x @ W["wk"].T).view(B, T, G, dh)
    v = (x @ W["wv"].T).view(B, T, G, dh)
    if norm != "none":
        qgain = 1.0 + W["q_norm"] if norm == "zero" else W["q_norm"]
        kgain = 1.0 + W["k_norm"] if norm == "zero" else W["k_norm"]
        q, k = head_rmsnorm(q, qgain), head_rmsnorm(k, kgain)
    q = partial_rope(q.transpose(1, 2), rot, theta)                                    # (B,H,T,dh)
    k = partial_rope(k.transpose(1, 2), rot, theta)                                    # (B,G,T,dh)
    v = v.transpose(1, 2)
    k = k.repeat_interleave(H // G, dim=1)                                              # query head h reads h // (H/G)
    v = v.repeat_interleave(H // G, dim=1)
    s = q @ k.transpose(-1, -2) / dh ** 0.5
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = j <= i
    if window > 0:
        visible = visible & (j > i - window)
    P = torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1)
    o = (P @ v).transpose(1, 2)                                                         # (B,T,H,dh)
    sig = torch.sigmoid(g)
    if gw:
        o = o * sig                                                                     # (.., gw) broadcasts for headwise
    out = o.reshape(B, T, H * dh) @ W["wo"].T
    return out, P, sig[0].reshape(T, H * gw)


def main():
    root = os.environ.get("ATTN_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    out_path = os.path.join(root, "tests", "golden", "gated.safetensors")
    gen = torch.Generator().manual_seed(20250911)
    tensors, meta = [], {"source": "tests/reference/golden_gated.py", "torch": torch.__version__,
                         "rope": "half-split rotate_half on the first rot dims of each head", "rms_eps": str(EPS)}
    for name, B, T, d, H, G, dh, gate, norm, frac, theta, window in CASES:
        rot = round(dh * frac)
        gw = dh if gate == "elementwise" else 1 if gate == "headwise" else 0

        def randn(*shape, std, mean=0.0):
            # drawn in float32 (what the C test reads), computed in float64 from exactly those values
            return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean).to(torch.float64)
        x = randn(B, T, d, std=1.0)
        W = {"wq": randn(H * (dh + gw), d, std=0.4), "wk": randn(G * dh, d, std=0.4),
             "wv": randn(G * dh, d, std=0.4), "wo": randn(d, H * dh, std=0.3)}
        if norm != "none":
            base = 0.0 if norm == "zero" else 1.0      # gains away from their start, so they are exercised
            W["q_norm"] = randn(dh, std=0.2, mean=base)
            W["k_norm"] = randn(dh, std=0.2, mean=base)
        R = randn(B, T, d, std=1.0)
        x.requires_grad_()
        for t in W.values():
            t.requires_grad_()
        out, P, gates = gated_attention(x, W, H, G, dh, gate, norm, rot, theta, window)
        (out * R).sum().backward()
        tensors.append((name + ".x", x))
        tensors += [(name + "." + k, t) for k, t in W.items()]
        tensors += [(name + ".R", R), (name + ".out", out), (name + ".P", P), (name + ".gates", gates),
                    (name + ".dx", x.grad)]
        tensors += [(name + ".d" + k, t.grad) for k, t in W.items()]
        for key, val in [("B", B), ("T", T), ("d_model", d), ("n_heads", H), ("n_kv_heads", G), ("head_dim", dh),
                         ("attn_output_gate", GATES[gate]), ("qk_norm", NORMS[norm]),
                         ("partial_rotary_factor", repr(frac)), ("rotary_dims", rot), ("rope_theta", theta),
                         ("sliding_window", window)]:
            meta[name + "." + key] = str(val)
    write_safetensors(out_path, tensors, meta)
    print("wrote %s (%d tensors)" % (out_path, len(tensors)), file=sys.stderr)


if __name__ == "__main__":
    main()
