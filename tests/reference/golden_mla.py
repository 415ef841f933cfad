#!/usr/bin/env python3
"""golden_mla.py: PyTorch reference values for chapter 5's multi-head latent attention (DeepSeek-V2/V3).

Written from the equations (SPEC section 3, DeepSeek-V3 inference/model.py class MLA as the statement of
the facts), not from the C code. Weights in PyTorch layout (out, in), no biases:
    c_q = RMSNorm(x Wq_a^T) * q_norm,  q = c_q Wq_b^T        (q_lora_rank > 0; else q = x Wq^T)
    q_h = [q_nope_h (dn) | q_pe_h (dr)],  q_pe <- RoPE
    [c_kv | k_pe] = x Wkv_a^T,  c_kv <- RMSNorm(c_kv) * kv_norm,  k_pe <- RoPE (one key for all heads)
    per head h, rows of Wkv_b: first dn are W_UK[h], next dv are W_UV[h]
    k_h = [c_kv W_UK[h]^T | k_pe],  v_h = c_kv W_UV[h]^T
    P_h = softmax(q_h k_h^T * (dn+dr)^-0.5 + mask),  mask causal (and i - W < j under a window W)
    out = concat_h(P_h v_h) Wo^T
RMSNorm: y = x / sqrt(mean(x^2) + 1e-6) * w. RoPE: interleaved pairs (2i, 2i+1) (DeepSeek's
view_as_complex convention), pair i of the token at position t turns by t * theta^(-2i/dr).
Plus the gradients of loss = sum(out * R) for a random R (autograd).

Everything is computed in float64 from float32 inputs, then stored as F32 in
tests/golden/mla.safetensors (written with struct + json only, atomically). Tensor names are
"<case>.<name>" (weights under DeepSeek's names, gradients as "d<name>"); each case's geometry is in
the metadata as "<case>.<key>".

Run:  /usr/bin/python3 tests/reference/golden_mla.py   (from the repository root)
"""
import os
import sys

import torch

from safetensors_io import write_safetensors

EPS = 1e-6

CASES = [
    # name, B, T, d, H, q_lora_rank, kv_lora_rank, qk_nope, qk_rope, v_head, theta, window (0: causal)
    ("direct_q", 1, 8, 32, 4, 0, 16, 8, 4, 6, 10000.0, 0),
    ("q_lora", 1, 8, 32, 4, 24, 16, 8, 4, 6, 100.0, 0),
    ("local", 2, 8, 24, 3, 12, 10, 4, 6, 5, 500.0, 3),
]


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + EPS) * w


def rope_interleaved(x, theta):
    """x (..., T, dr): rotate pairs (2i, 2i+1) of the token at position t by t * theta^(-2i/dr)."""
    T, dr = x.shape[-2], x.shape[-1]
    freq = theta ** (-torch.arange(0, dr, 2, dtype=torch.float64) / dr)     # (dr/2,)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]   # (T, dr/2)
    cos, sin = torch.cos(ang), torch.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


def mla(x, W, H, qr, dc, dn, dr, dv, theta, window):
    B, T, _ = x.shape
    if qr > 0:
        q = rmsnorm(x @ W["wq_a"].T, W["q_norm"]) @ W["wq_b"].T
    else:
        q = x @ W["wq"].T
    q = q.view(B, T, H, dn + dr).transpose(1, 2)                          # (B, H, T, dn+dr)
    q = torch.cat([q[..., :dn], rope_interleaved(q[..., dn:], theta)], dim=-1)
    kv_a = x @ W["wkv_a"].T                                               # (B, T, dc+dr)
    c_kv = rmsnorm(kv_a[..., :dc], W["kv_norm"])                          # (B, T, dc)
    k_pe = rope_interleaved(kv_a[..., dc:], theta)                        # (B, T, dr)
    wkv_b = W["wkv_b"].view(H, dn + dv, dc)
    w_uk, w_uv = wkv_b[:, :dn], wkv_b[:, dn:]                             # (H, dn, dc), (H, dv, dc)
    k_nope = torch.einsum("btc,hnc->bhtn", c_kv, w_uk)                    # (B, H, T, dn)
    v = torch.einsum("btc,hvc->bhtv", c_kv, w_uv)                         # (B, H, T, dv)
    k = torch.cat([k_nope, k_pe[:, None].expand(B, H, T, dr)], dim=-1)    # (B, H, T, dn+dr)
    s = q @ k.transpose(-1, -2) * (dn + dr) ** -0.5                       # (B, H, T, T)
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = j <= i
    if window > 0:
        visible = visible & (j > i - window)
    P = torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1)
    o = (P @ v).transpose(1, 2).reshape(B, T, H * dv)
    return o @ W["wo"].T, P, c_kv, k_pe


def main():
    root = os.environ.get("ATTN_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    out_path = os.path.join(root, "tests", "golden", "mla.safetensors")
    gen = torch.Generator().manual_seed(20240605)
    tensors, meta = [], {"source": "tests/reference/golden_mla.py", "torch": torch.__version__,
                         "rope": "interleaved pairs (2i, 2i+1), on q_pe and k_pe only", "rms_eps": str(EPS)}
    for name, B, T, d, H, qr, dc, dn, dr, dv, theta, window in CASES:
        def randn(*shape, std, mean=0.0):
            # drawn in float32 (what the C test reads), computed in float64 from exactly those values
            return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean).to(torch.float64)
        x = randn(B, T, d, std=1.0)
        W = {}
        if qr > 0:
            W["wq_a"] = randn(qr, d, std=0.4)
            W["q_norm"] = randn(qr, std=0.2, mean=1.0)     # gains away from 1, so they are exercised
            W["wq_b"] = randn(H * (dn + dr), qr, std=0.4)
        else:
            W["wq"] = randn(H * (dn + dr), d, std=0.4)
        W["wkv_a"] = randn(dc + dr, d, std=0.4)
        W["kv_norm"] = randn(dc, std=0.2, mean=1.0)
        W["wkv_b"] = randn(H * (dn + dv), dc, std=0.4)
        W["wo"] = randn(d, H * dv, std=0.3)
        R = randn(B, T, d, std=1.0)
        x.requires_grad_()
        for t in W.values():
            t.requires_grad_()
        out, P, c_kv, k_pe = mla(x, W, H, qr, dc, dn, dr, dv, theta, window)
        (out * R).sum().backward()
        tensors.append((name + ".x", x))
        tensors += [(name + "." + k, t) for k, t in W.items()]
        tensors += [(name + ".R", R), (name + ".out", out), (name + ".P", P),
                    (name + ".c_kv", c_kv), (name + ".k_pe", k_pe), (name + ".dx", x.grad)]
        tensors += [(name + ".d" + k, t.grad) for k, t in W.items()]
        for key, val in [("B", B), ("T", T), ("d_model", d), ("n_heads", H), ("q_lora_rank", qr),
                         ("kv_lora_rank", dc), ("qk_nope_head_dim", dn), ("qk_rope_head_dim", dr),
                         ("v_head_dim", dv), ("rope_theta", theta), ("sliding_window", window)]:
            meta[name + "." + key] = str(val)
    write_safetensors(out_path, tensors, meta)
    print("wrote %s (%d tensors)" % (out_path, len(tensors)), file=sys.stderr)


if __name__ == "__main__":
    main()
