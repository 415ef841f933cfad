#!/usr/bin/env python3
"""golden_dsa.py: PyTorch reference values for chapter 7's DeepSeek Sparse Attention (DeepSeek-V3.2).

Written from the equations (SPEC section 5; DeepSeek-V3.2-Exp inference/model.py class Indexer as the
statement of the facts), not from the C code. MLA as in golden_mla.py (weights (out, in), no biases):
    c_q = RMSNorm(x Wq_a^T) * q_norm,  q = c_q Wq_b^T   (q_lora_rank > 0; else q = x Wq^T)
    [c_kv | k_pe] = x Wkv_a^T, c_kv <- RMSNorm * kv_norm, RoPE on q_pe and k_pe (interleaved pairs)
    k_h = [c_kv W_UK[h]^T | k_pe], v_h = c_kv W_UV[h]^T, scale (dn+dr)^-0.5
The lightning indexer (Hi heads of width di; ri = min(dr, di) rounded down to even rotated dims):
    qI = c_q WqI^T (x WqI^T without q_lora), (T, Hi, di); RoPE on the first ri dims of each head
    kI = LayerNorm(x WkI^T) * k_norm + k_norm_bias (eps 1e-6), (T, di); RoPE on its first ri dims
    w  = x Ww^T * Hi^-0.5 * di^-0.5, (T, Hi)
    I[t, s] = sum_h w[t, h] * relu(qI[t, h] . kI[s]),  s <= t
Selector (phase "sparse"): the k = min(topk, t+1) keys with the largest I[t, :t+1]; MLA logits outside
get -inf. Phase "dense": every s <= t.
The indexer's loss: p = sum_h P_h / H (detached), q = softmax of I over the attended keys,
    KL = mean over the B*T queries of sum_s p_s (log p_s - log q_s)
with x and c_q detached (only the indexer's weights get its gradient).
Stored: x, weights, R, I (0 above the diagonal), att (1 where attended), P, out, ik (the indexer keys
decode caches), kl, and the gradients: d<name> of sum(out * R) for the MLA weights and x, and d<name>
of KL for the indexer weights ("indexer.*"). float64 compute from float32 inputs, stored as F32 in
tests/golden/dsa.safetensors (struct + json, atomic write). Per-case geometry in the metadata.

Run:  /usr/bin/python3 tests/reference/golden_dsa.py   (from the repository root)
"""
import os
import sys

import torch

from safetensors_io import write_safetensors

RMS_EPS = 1e-6
LN_EPS = 1e-6

CASES = [
    # name, phase, B, T, d, H, q_lora, dc, dn, dr, dv, theta, Hi, di, topk
    ("q_lora", "sparse", 1, 10, 32, 4, 24, 16, 8, 4, 6, 100.0, 3, 8, 4),
    ("direct_q", "sparse", 2, 8, 24, 2, 0, 10, 4, 6, 5, 500.0, 2, 4, 3),
    ("dense_warmup", "dense", 1, 9, 32, 4, 24, 16, 8, 4, 6, 100.0, 3, 8, 4),
]


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + RMS_EPS) * w


def layernorm(x, w, b):
    mu = x.mean(dim=-1, keepdim=True)
    var = (x - mu).pow(2).mean(dim=-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + LN_EPS) * w + b


def rope_interleaved(x, theta, n_rot):
    """x (..., T, D): rotate pairs (2i, 2i+1), i < n_rot/2, of position t by t * theta^(-2i/n_rot)."""
    if n_rot == 0:
        return x
    T = x.shape[-2]
    freq = theta ** (-torch.arange(0, n_rot, 2, dtype=torch.float64) / n_rot)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    r = x[..., :n_rot]
    x0, x1 = r[..., 0::2], r[..., 1::2]
    rot = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
    return torch.cat([rot, x[..., n_rot:]], dim=-1)


def dsa(x, W, phase, H, qr, dc, dn, dr, dv, theta, Hi, di, topk):
    B, T, _ = x.shape
    ri = min(dr, di - di % 2)
    # MLA projections
    if qr > 0:
        cq = rmsnorm(x @ W["wq_a"].T, W["q_norm"])
        q = cq @ W["wq_b"].T
    else:
        cq = None
        q = x @ W["wq"].T
    q = q.view(B, T, H, dn + dr).transpose(1, 2)
    q = torch.cat([q[..., :dn], rope_interleaved(q[..., dn:], theta, dr)], dim=-1)
    kv_a = x @ W["wkv_a"].T
    c_kv = rmsnorm(kv_a[..., :dc], W["kv_norm"])
    k_pe = rope_interleaved(kv_a[..., dc:], theta, dr)
    wkv_b = W["wkv_b"].view(H, dn + dv, dc)
    k_nope = torch.einsum("btc,hnc->bhtn", c_kv, wkv_b[:, :dn])
    v = torch.einsum("btc,hvc->bhtv", c_kv, wkv_b[:, dn:])
    k = torch.cat([k_nope, k_pe[:, None].expand(B, H, T, dr)], dim=-1)
    s = q @ k.transpose(-1, -2) * (dn + dr) ** -0.5

    # the lightning indexer, on detached inputs
    xi = x.detach()
    qin = cq.detach() if qr > 0 else xi
    qI = (qin @ W["indexer.wq_b" if qr > 0 else "indexer.wq"].T).view(B, T, Hi, di).transpose(1, 2)
    qI = rope_interleaved(qI, theta, ri)                                   # (B, Hi, T, di)
    kI = layernorm(xi @ W["indexer.wk"].T, W["indexer.k_norm"], W["indexer.k_norm_bias"])
    kI = rope_interleaved(kI, theta, ri)                                   # (B, T, di)
    wI = (xi @ W["indexer.weights_proj"].T) * Hi ** -0.5 * di ** -0.5     # (B, T, Hi)
    dots = torch.einsum("bhtc,bsc->bhts", qI, kI)                          # (B, Hi, T, T)
    I = torch.einsum("bth,bhts->bts", wI, torch.relu(dots))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    # no query-key dot may sit at ReLU's kink, where float32 and float64 could disagree on the side
    assert dots.detach().abs().masked_fill(~causal, 1.0).min().item() > 1e-4, "a dot near 0: change the seed"
    I = I.masked_fill(~causal, 0.0)

    att = causal.expand(B, T, T).clone()
    if phase == "sparse":
        att = torch.zeros(B, T, T, dtype=torch.bool)
        Id = I.detach()
        for b in range(B):
            for t in range(T):
                n = t + 1
                kk = min(topk, n)
                row = Id[b, t, :n]
                order = sorted(range(n), key=lambda j: (-row[j].item(), j))   # ties: lower index first
                if kk < n:
                    # an exact tie (both 0: every head's ReLU is off) is broken by index, the same in C;
                    # a near-tie could be broken differently by float32 and float64: avoid those
                    a, c = row[order[kk - 1]].item(), row[order[kk]].item()
                    assert (a == 0.0 and c == 0.0) or a - c > 1e-4 * max(1.0, abs(c)), \
                        "near-tie at the selection boundary (b %d t %d: %g vs %g): change the seed" % (b, t, a, c)
                att[b, t, order[:kk]] = True

    P = torch.softmax(s.masked_fill(~att[:, None], float("-inf")), dim=-1)
    o = (P @ v).transpose(1, 2).reshape(B, T, H * dv)
    out = o @ W["wo"].T

    # the indexer's KL toward the head-summed, L1-normalised main attention (a constant target)
    p = P.detach().sum(dim=1) / H                                          # (B, T, T)
    logq = torch.log_softmax(I.masked_fill(~att, float("-inf")), dim=-1)
    terms = torch.where(p > 0, p * (torch.log(torch.where(p > 0, p, torch.ones_like(p))) - logq),
                        torch.zeros_like(p))
    kl = terms.sum() / (B * T)
    return out, P, I, att, kI, kl


def main():
    root = os.environ.get("ATTN_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    out_path = os.path.join(root, "tests", "golden", "dsa.safetensors")
    gen = torch.Generator().manual_seed(20250929)
    tensors, meta = [], {"source": "tests/reference/golden_dsa.py", "torch": torch.__version__,
                         "rope": "interleaved pairs; MLA on q_pe/k_pe, the indexer on its first min(dr, di) dims",
                         "rms_eps": str(RMS_EPS), "ln_eps": str(LN_EPS),
                         "grads": "d<mla weight> and dx: of sum(out * R); d<indexer.*>: of the mean KL"}
    for name, phase, B, T, d, H, qr, dc, dn, dr, dv, theta, Hi, di, topk in CASES:
        def randn(*shape, std, mean=0.0):
            return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean).to(torch.float64)
        x = randn(B, T, d, std=1.0)
        W = {}
        if qr > 0:
            W["wq_a"] = randn(qr, d, std=0.4)
            W["q_norm"] = randn(qr, std=0.2, mean=1.0)
            W["wq_b"] = randn(H * (dn + dr), qr, std=0.4)
        else:
            W["wq"] = randn(H * (dn + dr), d, std=0.4)
        W["wkv_a"] = randn(dc + dr, d, std=0.4)
        W["kv_norm"] = randn(dc, std=0.2, mean=1.0)
        W["wkv_b"] = randn(H * (dn + dv), dc, std=0.4)
        W["wo"] = randn(d, H * dv, std=0.3)
        W["indexer.wq_b" if qr > 0 else "indexer.wq"] = randn(Hi * di, qr if qr > 0 else d, std=0.5)
        W["indexer.wk"] = randn(di, d, std=0.5)
        W["indexer.k_norm"] = randn(di, std=0.2, mean=1.0)
        W["indexer.k_norm_bias"] = randn(di, std=0.2)
        W["indexer.weights_proj"] = randn(Hi, d, std=0.5)
        R = randn(B, T, d, std=1.0)
        x.requires_grad_()
        for t in W.values():
            t.requires_grad_()
        out, P, I, att, kI, kl = dsa(x, W, phase, H, qr, dc, dn, dr, dv, theta, Hi, di, topk)
        main_loss = (out * R).sum()
        mla_w = [k for k in W if not k.startswith("indexer.")]
        idx_w = [k for k in W if k.startswith("indexer.")]
        g_main = torch.autograd.grad(main_loss, [x] + [W[k] for k in mla_w], retain_graph=True)
        g_idx = torch.autograd.grad(kl, [W[k] for k in idx_w])
        for k in idx_w:   # the main loss must not reach the indexer
            gk = torch.autograd.grad(main_loss, W[k], retain_graph=True, allow_unused=True)[0]
            assert gk is None or gk.abs().max().item() == 0.0
        tensors.append((name + ".x", x))
        tensors += [(name + "." + k, t) for k, t in W.items()]
        tensors += [(name + ".R", R), (name + ".out", out), (name + ".P", P), (name + ".I", I),
                    (name + ".att", att.to(torch.float64)), (name + ".ik", kI),
                    (name + ".kl", kl.reshape(1)), (name + ".dx", g_main[0])]
        tensors += [(name + ".d" + k, g) for k, g in zip(mla_w, g_main[1:])]
        tensors += [(name + ".d" + k, g) for k, g in zip(idx_w, g_idx)]
        for key, val in [("phase", phase), ("B", B), ("T", T), ("d_model", d), ("n_heads", H),
                         ("q_lora_rank", qr), ("kv_lora_rank", dc), ("qk_nope_head_dim", dn),
                         ("qk_rope_head_dim", dr), ("v_head_dim", dv), ("rope_theta", theta),
                         ("index_n_heads", Hi), ("index_head_dim", di), ("index_topk", topk)]:
            meta[name + "." + key] = str(val)
    write_safetensors(out_path, tensors, meta)
    print("wrote %s (%d tensors)" % (out_path, len(tensors)), file=sys.stderr)


if __name__ == "__main__":
    main()
