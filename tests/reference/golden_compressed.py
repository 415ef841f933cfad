#!/usr/bin/env python3
"""golden_compressed.py: PyTorch reference values for chapter 11's DeepSeek V4 layers (CSA, HCA and the
window-only layer), and for learned attention sinks in plain GQA attention.

Written from the equations (SPEC sections 11-12; DeepSeek V4's reference inference/model.py, classes
Compressor, Indexer, Attention and sparse_attn, as the statement of the facts), not from the C code.
RoPE: interleaved pairs (2i, 2i+1) on the LAST rd dims of a vector, frequencies theta^(-2i/rd).
One layer, H heads of dh, one shared KV head with K = V:
    q_h  = x Wq^T per head * rsqrt(mean(q_h^2) + eps)         then RoPE at t
    kv_t = RMSNorm(x_t Wkv^T) * kv_norm                        then RoPE at t
Compressor (ratio m; c = 2 overlapping for CSA, 1 for HCA), width e:
    C = x Wc^T, Z = x Wg^T + ape[t mod m]                      (T, c*e)
    entry s: per channel j a softmax over its tokens' Z weighting C: HCA the m tokens of group s
    (channels j); CSA those tokens' channels e + j plus the previous group's channels j (none for s = 0).
    E_s = RMSNorm(entry) * norm, then RoPE at position s*m.   Query t sees entries s < (t+1) // m.
Indexer (CSA): iq = x Wiq^T (Hi, di), RoPE on its last min(rd, di) dims at t; iw = x Wproj^T Hi^-0.5
    di^-0.5; keys from its own overlapping compressor (width di); I[t, s] = sum_h iw_h relu(iq_h . IK_s);
    phase "sparse": top-k visible entries; "dense": all visible entries. x is detached for the indexer.
Attention: keys = raw entries of t-W+1 .. t, then the attended entries; logits q . k * dh^-0.5 with a
    per-head sink logit in the denominator only; o = sum p kv; o's last rd dims rotated back by -t;
    out = o Wo^T.
KL: p = the main weights on the attended entries summed over heads, L1-normalised (detached);
    q = softmax of I over them; mean over the B*T queries (0 for a query with none).
GQA with sinks: the plain GQA mixer of chapter 3 (half-split RoPE on all dims, wq, wk, wv, wo) with a
    per-head sink logit "sinks" in each row's denominator.
Stored per case: x, weights, R, out, sel (entries attended), I, ik (the indexer keys), psink (the sink's
weight per head and query), kl, dx and d<name> (of sum(out * R), and of the KL for "indexer.*").
float64 compute from float32 inputs, written as F32 to tests/golden/compressed.safetensors.

Run:  /usr/bin/python3 tests/reference/golden_compressed.py   (from the repository root)
"""
import os
import sys

import torch

from safetensors_io import write_safetensors

EPS = 1e-6

CASES = [
    # name, kind, phase, B, T, d, H, dh, rd, W, m, Hi, di, topk, theta
    ("csa_sparse", "csa", "sparse", 2, 13, 16, 2, 8, 4, 3, 2, 2, 4, 2, 100.0),
    ("csa_dense", "csa", "dense", 1, 12, 16, 2, 8, 4, 4, 3, 2, 4, 2, 1000.0),
    ("hca", "hca", "-", 2, 14, 16, 2, 8, 2, 4, 4, 0, 0, 0, 100.0),
    ("window", "v4swa", "-", 1, 10, 12, 3, 4, 2, 3, 0, 0, 0, 0, 500.0),
]
GQA_CASES = [
    # name, B, T, d, H, G, dh, window
    ("gqa_sinks", 2, 9, 16, 4, 2, 4, 0),
    ("gqa_sinks_window", 1, 10, 16, 2, 1, 8, 3),
]


def rms(x, w=None):
    y = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + EPS)
    return y * w if w is not None else y


def rope_tail(x, pos, theta, n, inverse=False):
    """x (..., P, e) at positions pos (P): rotate pairs (2i, 2i+1) of the last n dims."""
    if n == 0:
        return x
    freq = theta ** (-torch.arange(0, n, 2, dtype=torch.float64) / n)
    ang = pos.to(torch.float64)[:, None] * freq[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    if inverse:
        sin = -sin
    head, r = x[..., :-n], x[..., -n:]
    x0, x1 = r[..., 0::2], r[..., 1::2]
    rot = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
    return torch.cat([head, rot], dim=-1)


def compress(x, Wc, Wg, ape, norm, m, c, e, theta, rd):
    """(B, T, d) -> entries (B, T//m, e), normed and rotated."""
    B, T, _ = x.shape
    Tc = T // m
    C = x @ Wc.T
    Z = x @ Wg.T + ape[torch.arange(T) % m]
    ents = []
    for s in range(Tc):
        cur = slice(s * m, s * m + m)
        if c == 2:
            cc, zc = C[:, cur, e:], Z[:, cur, e:]
            if s > 0:
                prev = slice(s * m - m, s * m)
                cc = torch.cat([C[:, prev, :e], cc], dim=1)
                zc = torch.cat([Z[:, prev, :e], zc], dim=1)
        else:
            cc, zc = C[:, cur], Z[:, cur]
        ents.append((torch.softmax(zc, dim=1) * cc).sum(dim=1))
    if Tc == 0:
        return x.new_zeros(B, 0, e)
    E = rms(torch.stack(ents, dim=1), norm)
    return rope_tail(E, torch.arange(Tc) * m, theta, rd)


def v4_layer(x, W, kind, phase, H, dh, rd, Wn, m, Hi, di, topk, theta):
    B, T, d = x.shape
    pos = torch.arange(T)
    q = (x @ W["wq"].T).view(B, T, H, dh)
    q = rope_tail(rms(q).transpose(1, 2), pos, theta, rd)                   # (B, H, T, dh)
    kv = rope_tail(rms(x @ W["wkv"].T, W["kv_norm"]), pos, theta, rd)       # (B, T, dh)
    c = 2 if kind == "csa" else 1
    Tc = T // m if m else 0
    E = compress(x, W["compressor.wkv"], W["compressor.wgate"], W["compressor.ape"], W["compressor.norm"],
                 m, c, dh, theta, rd) if m else x.new_zeros(B, 0, dh)
    keys = torch.cat([kv, E], dim=1)                                        # (B, T + Tc, dh): raw, then entries
    vis = torch.zeros(T, max(Tc, 1), dtype=torch.bool)
    for t in range(T):
        vis[t, :(t + 1) // m if m else 0] = True
    vis = vis[:, :Tc]
    sel = vis.expand(B, T, Tc).clone()
    I = x.new_zeros(B, T, Tc)
    IK = x.new_zeros(B, Tc, max(di, 1))
    if kind == "csa":
        xi = x.detach()
        ri = min(rd, di)
        iq = rope_tail((xi @ W["indexer.wq"].T).view(B, T, Hi, di).transpose(1, 2), pos, theta, ri)
        iw = (xi @ W["indexer.weights_proj"].T) * Hi ** -0.5 * di ** -0.5
        IK = compress(xi, W["indexer.compressor.wkv"], W["indexer.compressor.wgate"], W["indexer.compressor.ape"],
                      W["indexer.compressor.norm"], m, 2, di, theta, ri)
        dots = torch.einsum("bhtc,bsc->bhts", iq, IK)
        assert dots.detach().abs().masked_fill(~vis, 1.0).min().item() > 1e-4, "a dot near 0: change the seed"
        I = torch.einsum("bth,bhts->bts", iw, torch.relu(dots)).masked_fill(~vis, 0.0)
        if phase == "sparse":
            sel = torch.zeros(B, T, Tc, dtype=torch.bool)
            for b in range(B):
                for t in range(T):
                    n = (t + 1) // m
                    row = I[b, t, :n].detach()
                    order = sorted(range(n), key=lambda j: (-row[j].item(), j))
                    kk = min(topk, n)
                    if kk < n:
                        a_, c_ = row[order[kk - 1]].item(), row[order[kk]].item()
                        assert (a_ == 0.0 and c_ == 0.0) or a_ - c_ > 1e-4 * max(1.0, abs(c_)), \
                            "near-tie at the selection boundary: change the seed"
                    sel[b, t, order[:kk]] = True
    # the keys each query reads: its raw window, then its entries
    raw = torch.zeros(T, T, dtype=torch.bool)
    for t in range(T):
        raw[t, max(0, t - Wn + 1):t + 1] = True
    read = torch.cat([raw.expand(B, T, T), sel], dim=-1)                    # (B, T, T + Tc)
    logits = torch.einsum("bhtc,bkc->bhtk", q, keys) * dh ** -0.5
    logits = logits.masked_fill(~read[:, None], float("-inf"))
    sink = W["attn_sink"].view(1, H, 1, 1).expand(B, H, T, 1)
    P = torch.softmax(torch.cat([logits, sink], dim=-1), dim=-1)
    psink, P = P[..., -1], P[..., :-1]
    o = torch.einsum("bhtk,bkc->bhtc", P, keys)
    o = rope_tail(o, pos, theta, rd, inverse=True).transpose(1, 2).reshape(B, T, H * dh)
    out = o @ W["wo"].T
    kl = x.new_zeros(())
    if kind == "csa":
        pe = P.detach()[..., T:].sum(dim=1).masked_fill(~sel, 0.0)         # (B, T, Tc)
        tot = pe.sum(dim=-1, keepdim=True)
        has = tot > 0
        p = torch.where(has, pe / torch.where(has, tot, torch.ones_like(tot)), torch.zeros_like(pe))
        logq = torch.log_softmax(I.masked_fill(~sel, float("-inf")), dim=-1)
        terms = torch.where(p > 0, p * (torch.log(torch.where(p > 0, p, torch.ones_like(p))) - logq),
                            torch.zeros_like(p))
        kl = terms.sum() / (B * T)
    return out, sel, I, IK, psink, kl


def gqa_sinks(x, W, H, G, dh, Wn, theta=10000.0):
    """Chapter 3's GQA (half-split RoPE on all dims) with a per-head sink logit."""
    B, T, d = x.shape

    def rope_half(v):
        freq = theta ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
        ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]
        cos, sin = torch.cos(ang), torch.sin(ang)
        a, b = v[..., :dh // 2], v[..., dh // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    q = rope_half((x @ W["wq"].T).view(B, T, H, dh).transpose(1, 2))
    k = rope_half((x @ W["wk"].T).view(B, T, G, dh).transpose(1, 2)).repeat_interleave(H // G, dim=1)
    v = (x @ W["wv"].T).view(B, T, G, dh).transpose(1, 2).repeat_interleave(H // G, dim=1)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    if Wn:
        mask &= ~torch.ones(T, T, dtype=torch.bool).tril(-Wn)
    s = (q @ k.transpose(-1, -2) * dh ** -0.5).masked_fill(~mask, float("-inf"))
    P = torch.softmax(torch.cat([s, W["sinks"].view(1, H, 1, 1).expand(B, H, T, 1)], dim=-1), dim=-1)
    psink, P = P[..., -1], P[..., :-1]
    out = (P @ v).transpose(1, 2).reshape(B, T, H * dh) @ W["wo"].T
    return out, psink


def main():
    root = os.environ.get("ATTN_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    out_path = os.path.join(root, "tests", "golden", "compressed.safetensors")
    gen = torch.Generator().manual_seed(20260411)
    tensors, meta = [], {"source": "tests/reference/golden_compressed.py", "torch": torch.__version__,
                         "rope": "interleaved pairs on the last rd dims (V4); half-split on all dims (gqa)",
                         "eps": str(EPS),
                         "grads": "d<weight> and dx: of sum(out * R); d<indexer.*>: of the mean KL"}

    def randn(*shape, std, mean=0.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean).to(torch.float64)

    for name, kind, phase, B, T, d, H, dh, rd, Wn, m, Hi, di, topk, theta in CASES:
        c = 2 if kind == "csa" else 1
        x = randn(B, T, d, std=1.0)
        W = {"wq": randn(H * dh, d, std=0.5), "wkv": randn(dh, d, std=0.5), "kv_norm": randn(dh, std=0.2, mean=1.0)}
        if m:
            W["compressor.wkv"] = randn(c * dh, d, std=0.5)
            W["compressor.wgate"] = randn(c * dh, d, std=0.5)
            W["compressor.ape"] = randn(m, c * dh, std=0.5)
            W["compressor.norm"] = randn(dh, std=0.2, mean=1.0)
        if kind == "csa":
            W["indexer.wq"] = randn(Hi * di, d, std=0.5)
            W["indexer.weights_proj"] = randn(Hi, d, std=0.5)
            W["indexer.compressor.wkv"] = randn(2 * di, d, std=0.5)
            W["indexer.compressor.wgate"] = randn(2 * di, d, std=0.5)
            W["indexer.compressor.ape"] = randn(m, 2 * di, std=0.5)
            W["indexer.compressor.norm"] = randn(di, std=0.2, mean=1.0)
        W["attn_sink"] = randn(H, std=0.5)
        W["wo"] = randn(d, H * dh, std=0.4)
        R = randn(B, T, d, std=1.0)
        x.requires_grad_()
        for t in W.values():
            t.requires_grad_()
        out, sel, I, IK, psink, kl = v4_layer(x, W, kind, phase, H, dh, rd, Wn, m, Hi, di, topk, theta)
        main_loss = (out * R).sum()
        main_w = [k for k in W if not k.startswith("indexer.")]
        idx_w = [k for k in W if k.startswith("indexer.")]
        g_main = torch.autograd.grad(main_loss, [x] + [W[k] for k in main_w], retain_graph=True)
        g_idx = torch.autograd.grad(kl, [W[k] for k in idx_w]) if idx_w else []
        tensors.append((name + ".x", x))
        tensors += [(name + "." + k, t) for k, t in W.items()]
        tensors += [(name + ".R", R), (name + ".out", out), (name + ".psink", psink), (name + ".dx", g_main[0]),
                    (name + ".kl", kl.reshape(1))]
        if m:
            tensors.append((name + ".sel", sel.to(torch.float64)))
        if kind == "csa":
            tensors += [(name + ".I", I), (name + ".ik", IK)]
        tensors += [(name + ".d" + k, g) for k, g in zip(main_w, g_main[1:])]
        tensors += [(name + ".d" + k, g) for k, g in zip(idx_w, g_idx)]
        for key, val in [("kind", kind), ("phase", phase), ("B", B), ("T", T), ("d_model", d), ("n_heads", H),
                         ("head_dim", dh), ("rotary_dims", rd), ("sliding_window", Wn), ("compress_ratio", m),
                         ("index_n_heads", Hi), ("index_head_dim", di), ("index_topk", topk), ("rope_theta", theta)]:
            meta[name + "." + key] = str(val)

    for name, B, T, d, H, G, dh, Wn in GQA_CASES:
        x = randn(B, T, d, std=1.0)
        W = {"wq": randn(H * dh, d, std=0.5), "wk": randn(G * dh, d, std=0.5), "wv": randn(G * dh, d, std=0.5),
             "wo": randn(d, H * dh, std=0.4), "sinks": randn(H, std=1.0)}
        R = randn(B, T, d, std=1.0)
        x.requires_grad_()
        for t in W.values():
            t.requires_grad_()
        out, psink = gqa_sinks(x, W, H, G, dh, Wn)
        g = torch.autograd.grad((out * R).sum(), [x] + list(W.values()))
        tensors += [(name + ".x", x), (name + ".R", R), (name + ".out", out), (name + ".psink", psink),
                    (name + ".dx", g[0])]
        tensors += [(name + "." + k, t) for k, t in W.items()]
        tensors += [(name + ".d" + k, gk) for k, gk in zip(W, g[1:])]
        for key, val in [("B", B), ("T", T), ("d_model", d), ("n_heads", H), ("n_kv_heads", G), ("head_dim", dh),
                         ("sliding_window", Wn)]:
            meta[name + "." + key] = str(val)
    write_safetensors(out_path, tensors, meta)
    print("wrote %s (%d tensors)" % (out_path, len(tensors)), file=sys.stderr)


if __name__ == "__main__":
    main()
