#!/usr/bin/env python3
"""golden_linear.py: PyTorch reference values for chapter 10's scalar-decay linear mixers, Lightning attention
(MiniMax-01) and Mamba-2 (SSD).

Written from the equations (SPEC sections 9 and 10; transformers' MiniMaxLightningAttention and
state-spaces/mamba mamba2.py step() as statements of the facts), token by token in the RECURRENT form, so
nothing here resembles the C code's chunked form. Weights in PyTorch layout (out, in), no biases.

Lightning, H heads of dh, layer l of L:
    s_h = (2^(-8/H))^(h+1) * (1 - l/(L-1+1e-5) + 1e-5),  lambda_h = exp(-s_h)
    [q_h | k_h | v_h] = silu(x qkv_proj^T) reshaped (T, H, 3*dh)
    KV_h <- lambda_h KV_h + k_h^T v_h,  o_h = q_h KV_h           (KV_h is dh x dh, starts at 0)
    out = (RMSNorm(concat_h o_h; eps 1e-6) * norm * sigmoid(x output_gate^T)) out_proj^T
Mamba-2, Hv heads of P, G groups of state N, conv width K:
    [z | xBC | dt] = x in_proj^T;  xBC <- silu(causal depthwise conv(xBC) with conv1d (CD, K), no bias)
    [x | B | C] = xBC;  Delta = softplus(dt + dt_bias);  A = -exp(A_log);  head h uses group h // (Hv/G)
    h_t = exp(Delta A) h_{t-1} + (Delta x_t) B_t^T  (P x N);  y_t = h_t C_t + D x_t
    out = (RMSNorm_per_group(y * silu(z); eps 1e-5) * norm) out_proj^T     (groups of Hv*P/G channels)
Plus the gradients of loss = sum(out * R) for a random R (autograd), and the pre-norm outputs
("o" for Lightning, "y" for Mamba-2).

Everything is computed in float64 from float32 inputs, then stored as F32 in tests/golden/linear.safetensors.
Tensor names are "<case>.<name>" (weights under the mixers' names, gradients as "d<name>"); each case's
geometry is in the metadata as "<case>.<key>".

Run:  /usr/bin/python3 tests/reference/golden_linear.py   (from the repository root)
"""
import math
import os
import sys

import torch

from safetensors_io import write_safetensors

LIGHTNING_CASES = [
    # name, B, T, d, H, dh, layer, n_layers
    ("lightning_a", 2, 21, 24, 3, 8, 1, 3),
    ("lightning_b", 1, 18, 16, 2, 5, 0, 1),
]
MAMBA2_CASES = [
    # name, B, T, d, H, P, G, N, K
    ("mamba2_a", 2, 21, 24, 4, 6, 2, 5, 4),
    ("mamba2_b", 1, 19, 16, 2, 4, 1, 6, 3),
]


def rmsnorm(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


def lightning(x, W, H, dh, layer, L, slope_scale=1.0):
    B, T, _ = x.shape
    s = torch.tensor([(2.0 ** (-8.0 / H)) ** (h + 1) * (1.0 - layer / (L - 1 + 1e-5) + 1e-5) * slope_scale
                      for h in range(H)], dtype=torch.float64)
    lam = torch.exp(-s)                                                   # (H,)
    qkv = torch.nn.functional.silu(x @ W["qkv_proj"].T).view(B, T, H, 3 * dh)
    q, k, v = qkv[..., :dh], qkv[..., dh:2 * dh], qkv[..., 2 * dh:]       # (B, T, H, dh)
    KV = torch.zeros(B, H, dh, dh, dtype=torch.float64)
    outs = []
    for t in range(T):
        KV = lam[None, :, None, None] * KV + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhi,bhij->bhj", q[:, t], KV))
    o = torch.stack(outs, dim=1).reshape(B, T, H * dh)                    # pre-norm output
    y = rmsnorm(o, 1e-6) * W["norm"] * torch.sigmoid(x @ W["output_gate"].T)
    return y @ W["out_proj"].T, o


def mamba2(x, W, H, P, G, N, K):
    B, T, _ = x.shape
    HP, GN = H * P, G * N
    proj = x @ W["in_proj"].T
    z, xbc, dt = proj[..., :HP], proj[..., HP:2 * HP + 2 * GN], proj[..., 2 * HP + 2 * GN:]
    # causal depthwise conv: tap j of channel c multiplies the token K-1-j steps back
    pad = torch.nn.functional.pad(xbc, (0, 0, K - 1, 0))
    conv = sum(W["conv1d"][:, j] * pad[:, j:j + T] for j in range(K))
    xbc = torch.nn.functional.silu(conv)
    xs, Bm, Cm = xbc[..., :HP].view(B, T, H, P), xbc[..., HP:HP + GN].view(B, T, G, N), xbc[..., HP + GN:].view(B, T, G, N)
    delta = torch.nn.functional.softplus(dt + W["dt_bias"])              # (B, T, H)
    A = -torch.exp(W["A_log"])                                            # (H,)
    grp = torch.arange(H) // (H // G)
    Bh, Ch = Bm[:, :, grp], Cm[:, :, grp]                                 # (B, T, H, N)
    h = torch.zeros(B, H, P, N, dtype=torch.float64)
    ys = []
    for t in range(T):
        dA = torch.exp(delta[:, t] * A)                                   # (B, H)
        h = dA[:, :, None, None] * h + (delta[:, t, :, None] * xs[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]) + W["D"][:, None] * xs[:, t])
    y = torch.stack(ys, dim=1).reshape(B, T, HP)                          # pre-norm output
    gz = (y * torch.nn.functional.silu(z)).view(B, T, G, HP // G)
    nrm = rmsnorm(gz, 1e-5).reshape(B, T, HP) * W["norm"]
    return nrm @ W["out_proj"].T, y


def main():
    root = os.environ.get("ATTN_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    out_path = os.path.join(root, "tests", "golden", "linear.safetensors")
    gen = torch.Generator().manual_seed(20260101)
    tensors, meta = [], {"source": "tests/reference/golden_linear.py", "torch": torch.__version__}

    def randn(*shape, std, mean=0.0):
        # drawn in float32 (what the C test reads), computed in float64 from exactly those values
        return (torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean).to(torch.float64)

    def rand(*shape, lo, hi):
        return (torch.rand(*shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo).to(torch.float64)

    def finish(name, x, W, R, out, pre, pre_name, keys):
        (out * R).sum().backward()
        tensors.append((name + ".x", x))
        tensors.extend((name + "." + k, t) for k, t in W.items())
        tensors.extend([(name + ".R", R), (name + ".out", out), (name + "." + pre_name, pre), (name + ".dx", x.grad)])
        tensors.extend((name + ".d" + k, t.grad) for k, t in W.items())
        for key, val in keys:
            meta[name + "." + key] = str(val)

    for name, B, T, d, H, dh, layer, L in LIGHTNING_CASES:
        E = H * dh
        x = randn(B, T, d, std=1.0).requires_grad_()
        W = {"qkv_proj": randn(3 * E, d, std=0.4), "output_gate": randn(E, d, std=0.4),
             "norm": randn(E, std=0.2, mean=1.0), "out_proj": randn(d, E, std=0.3)}
        for t in W.values():
            t.requires_grad_()
        R = randn(B, T, d, std=1.0)
        out, o = lightning(x, W, H, dh, layer, L)
        finish(name, x, W, R, out, o, "o", [("B", B), ("T", T), ("d_model", d), ("heads", H), ("head_dim", dh),
                                           ("layer", layer), ("n_layers", L)])

    for name, B, T, d, H, P, G, N, K in MAMBA2_CASES:
        HP, CD = H * P, H * P + 2 * G * N
        x = randn(B, T, d, std=1.0).requires_grad_()
        # dt_bias: the reference init, dt log-uniform in [1e-3, 1e-1] through the inverse softplus;
        # stored in float32 first so both sides start from the same numbers
        dt0 = torch.exp(rand(H, lo=math.log(1e-3), hi=math.log(1e-1)))
        W = {"in_proj": randn(HP + CD + H, d, std=0.4), "conv1d": rand(CD, K, lo=-0.6, hi=0.6),
             "dt_bias": (dt0 + torch.log(-torch.expm1(-dt0))).float().double(),
             "A_log": torch.log(rand(H, lo=1.0, hi=16.0)).float().double(),
             "D": randn(H, std=0.5, mean=1.0), "norm": randn(HP, std=0.2, mean=1.0),
             "out_proj": randn(d, HP, std=0.3)}
        for t in W.values():
            t.requires_grad_()
        R = randn(B, T, d, std=1.0)
        out, y = mamba2(x, W, H, P, G, N, K)
        finish(name, x, W, R, out, y, "y", [("B", B), ("T", T), ("d_model", d), ("heads", H), ("head_dim", P),
                                           ("groups", G), ("state", N), ("conv", K)])

    write_safetensors(out_path, tensors, meta)
    print("wrote %s (%d tensors)" % (out_path, len(tensors)), file=sys.stderr)


if __name__ == "__main__":
    main()
