#!/usr/bin/env python3
"""golden_gdn.py: PyTorch reference values for Gated DeltaNet (chapter 9) and Kimi Delta Attention (chapter 10).

Written from the equations (SPEC sections 7 and 8; transformers qwen3_next / kimi_linear and fla's
naive recurrences as the statement of the facts), not from the C code, in the RECURRENT form
(token by token), float64. Weights in PyTorch layout (out, in), no biases.

Gated DeltaNet ("gdn."):
    [q | k | v] = x [in_proj_q; in_proj_k; in_proj_v]^T, causal depthwise conv1d (C,1,K) + SiLU
    z = x in_proj_z^T, b = x in_proj_b^T, a = x in_proj_a^T
    q <- q / sqrt(|q|^2 + 1e-6) / sqrt(dk),  k <- k / sqrt(|k|^2 + 1e-6)      (per key head)
    beta = sigmoid(b),  g = -exp(A_log) softplus(a + dt_bias)                  (per value head)
    value head h reads key head h // (Hv/Hk)
    S <- exp(g) S;  u = beta (v - S^T k);  S <- S + k u^T;  o = S^T q
    y = o / sqrt(mean(o^2) + 1e-6) * norm * silu(z)  per head;  out = y out_proj^T
KDA ("kda."), key heads = value heads = H:
    [q | k | v] = x [q_proj; k_proj; v_proj]^T, conv1d + SiLU, l2norms as above
    g (H, dk) = -exp(A_log[h]) softplus(f_b_proj(f_a_proj x) + dt_bias)        (per key channel)
    beta = sigmoid(b_proj x),  gate = g_b_proj(g_a_proj x)
    S <- Diag(exp(g)) S;  u = beta (v - S^T k);  S <- S + k u^T;  o = S^T q
    y = RMSNorm(o) * o_norm * sigmoid(gate);  out = y o_proj^T
Stored: x, R, every weight, out, o0 (sequence 0's pre-norm output (T, Hv, dv)), and the gradients of
sum(out * R) (autograd) as "d<name>" and dx. Metadata "<case>.<key>" holds the sizes.

Run:  /usr/bin/python3 tests/reference/golden_gdn.py   (from the repository root)
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

from safetensors_io import write_safetensors

EPS = 1e-6


def conv_silu(x, w):
    """x (B,T,C), w (C,1,K): causal depthwise conv (left zero padding) then SiLU."""
    T, C, K = x.shape[1], x.shape[2], w.shape[2]
    y = F.conv1d(x.transpose(1, 2), w, padding=K - 1, groups=C)[..., :T]
    return F.silu(y.transpose(1, 2))


def l2n(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + EPS)


def recurrence(q, k, v, beta, g):
    """q, k (B,T,H,dk); v (B,T,H,dv); beta (B,T,H); g (B,T,H,dk) log-decays. Token by token."""
    B, T, H, dk = q.shape
    dv = v.shape[-1]
    S = torch.zeros(B, H, dk, dv, dtype=q.dtype)
    outs = []
    for t in range(T):
        S = S * torch.exp(g[:, t]).unsqueeze(-1)
        kt = k[:, t]
        pred = torch.einsum("bhkv,bhk->bhv", S, kt)
        u = beta[:, t].unsqueeze(-1) * (v[:, t] - pred)
        S = S + kt.unsqueeze(-1) * u.unsqueeze(-2)
        outs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t]))
    return torch.stack(outs, dim=1)


def rms(o):
    return o / torch.sqrt((o * o).mean(-1, keepdim=True) + EPS)


def gdn(x, W, Hk, Hv, dk, dv):
    B, T, _ = x.shape
    mixed = conv_silu(x @ torch.cat([W["in_proj_q"], W["in_proj_k"], W["in_proj_v"]]).T, W["conv1d"])
    q = mixed[..., :Hk * dk].reshape(B, T, Hk, dk)
    k = mixed[..., Hk * dk:2 * Hk * dk].reshape(B, T, Hk, dk)
    v = mixed[..., 2 * Hk * dk:].reshape(B, T, Hv, dv)
    q = l2n(q) / math.sqrt(dk)
    k = l2n(k)
    rep = Hv // Hk
    q = q.repeat_interleave(rep, dim=2)
    k = k.repeat_interleave(rep, dim=2)
    z = (x @ W["in_proj_z"].T).reshape(B, T, Hv, dv)
    beta = torch.sigmoid(x @ W["in_proj_b"].T)
    g = -torch.exp(W["A_log"]) * F.softplus(x @ W["in_proj_a"].T + W["dt_bias"])     # (B,T,Hv)
    o = recurrence(q, k, v, beta, g.unsqueeze(-1).expand(B, T, Hv, dk))
    y = rms(o) * W["norm"] * F.silu(z)
    return y.reshape(B, T, Hv * dv) @ W["out_proj"].T, o


def kda(x, W, H, dk, dv):
    B, T, _ = x.shape
    mixed = conv_silu(x @ torch.cat([W["q_proj"], W["k_proj"], W["v_proj"]]).T, W["conv1d"])
    q = l2n(mixed[..., :H * dk].reshape(B, T, H, dk)) / math.sqrt(dk)
    k = l2n(mixed[..., H * dk:2 * H * dk].reshape(B, T, H, dk))
    v = mixed[..., 2 * H * dk:].reshape(B, T, H, dv)
    f = (x @ W["f_a_proj"].T) @ W["f_b_proj"].T + W["dt_bias"]
    g = -torch.exp(W["A_log"]).unsqueeze(-1) * F.softplus(f.reshape(B, T, H, dk))
    beta = torch.sigmoid(x @ W["b_proj"].T)
    gate = ((x @ W["g_a_proj"].T) @ W["g_b_proj"].T).reshape(B, T, H, dv)
    o = recurrence(q, k, v, beta, g)
    y = rms(o) * W["o_norm"] * torch.sigmoid(gate)
    return y.reshape(B, T, H * dv) @ W["o_proj"].T, o


def main():
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden", "gdn.safetensors")
    gen = torch.Generator().manual_seed(20250514)

    def randn(*shape, std, mean=0.0):
        # drawn in float32 (what the C test reads), computed in float64 from exactly those values
        return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean).to(torch.float64)

    def unif(*shape, lo, hi):
        return (torch.rand(*shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo).to(torch.float64)

    def inv_softplus_dt(n):
        dt = torch.exp(unif(n, lo=math.log(1e-3), hi=math.log(1e-1)))
        return (dt + torch.log(-torch.expm1(-dt))).float().double()

    tensors, meta = [], {"source": "tests/reference/golden_gdn.py", "torch": torch.__version__, "eps": str(EPS)}

    def run(name, fn, W, x, R, sizes):
        x.requires_grad_()
        for t in W.values():
            t.requires_grad_()
        out, o = fn(x, W)
        (out * R).sum().backward()
        tensors.extend([(name + ".x", x), (name + ".R", R), (name + ".out", out), (name + ".o0", o[0]),
                        (name + ".dx", x.grad)])
        tensors.extend((name + "." + k, t) for k, t in W.items())
        tensors.extend((name + ".d" + k, t.grad) for k, t in W.items())
        for key, val in sizes.items():
            meta[name + "." + key] = str(val)

    # Gated DeltaNet: T = 21 spans two chunks of 16; Hv = 2 Hk
    B, T, d, Hk, Hv, dk, dv, K = 2, 21, 16, 2, 4, 4, 5, 4
    Cc = 2 * Hk * dk + Hv * dv
    W = {"in_proj_q": randn(Hk * dk, d, std=0.4), "in_proj_k": randn(Hk * dk, d, std=0.4),
         "in_proj_v": randn(Hv * dv, d, std=0.4), "in_proj_z": randn(Hv * dv, d, std=0.4),
         "in_proj_b": randn(Hv, d, std=0.4), "in_proj_a": randn(Hv, d, std=0.4),
         "conv1d": randn(Cc, 1, K, std=0.5), "A_log": torch.log(unif(Hv, lo=1.0, hi=16.0)).float().double(),
         "dt_bias": inv_softplus_dt(Hv), "norm": randn(dv, std=0.2, mean=1.0),
         "out_proj": randn(d, Hv * dv, std=0.3)}
    x, R = randn(B, T, d, std=1.0), randn(B, T, d, std=1.0)
    run("gdn", lambda x, W: gdn(x, W, Hk, Hv, dk, dv), W, x, R,
        {"B": B, "T": T, "d_model": d, "Hk": Hk, "Hv": Hv, "dk": dk, "dv": dv, "K": K})

    # KDA: H key = value heads, low rank r = dv (Kimi Linear: head_v_dim)
    B, T, d, H, dk, dv, K = 2, 19, 16, 2, 4, 6, 3
    Cc, r = 2 * H * dk + H * dv, 6
    W = {"q_proj": randn(H * dk, d, std=0.4), "k_proj": randn(H * dk, d, std=0.4), "v_proj": randn(H * dv, d, std=0.4),
         "f_a_proj": randn(r, d, std=0.4), "g_a_proj": randn(r, d, std=0.4), "b_proj": randn(H, d, std=0.4),
         "f_b_proj": randn(H * dk, r, std=0.4), "g_b_proj": randn(H * dv, r, std=0.4),
         "conv1d": randn(Cc, 1, K, std=0.5), "A_log": torch.log(unif(H, lo=1.0, hi=16.0)).float().double(),
         "dt_bias": inv_softplus_dt(H * dk), "o_norm": randn(dv, std=0.2, mean=1.0),
         "o_proj": randn(d, H * dv, std=0.3)}
    x, R = randn(B, T, d, std=1.0), randn(B, T, d, std=1.0)
    run("kda", lambda x, W: kda(x, W, H, dk, dv), W, x, R,
        {"B": B, "T": T, "d_model": d, "Hk": H, "Hv": H, "dk": dk, "dv": dv, "K": K})

    write_safetensors(out_path, tensors, meta)
    print("wrote %s (%d tensors)" % (out_path, len(tensors)), file=sys.stderr)


if __name__ == "__main__":
    main()
