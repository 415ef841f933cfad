#!/usr/bin/env python3
"""golden_model.py: an independent PyTorch implementation of the tiny model (common/model.c +
chapters/03_mha/mha.c), written from the equations, that records golden values for tests/test_model.c.

Model (per layer, pre-norm):  x += Attn(RMSNorm(x) * norm1);  x += W_down(silu(W_gate h) * W_up h),
h = RMSNorm(x) * norm2; logits = lm_head(RMSNorm(x) * norm_f). RMSNorm eps 1e-5. Attention: q = x Wq^T,
k = x Wk^T, v = x Wv^T split into H query heads and G key/value heads (query head h reads KV head
h // (H/G)), RoPE with half-split pairs (i, i + dh/2) over the whole head, base rope_theta, scores
q k^T / sqrt(dh) with a causal mask, softmax, out = concat(P v) Wo^T. Loss: mean cross-entropy over
positions whose target is not -1.

For every model file it is given (a shipped weights file and a small GQA model), it runs a fixed batch
of token sequences in float64 and writes tests/golden/<name>_golden.safetensors holding the tokens,
targets, logits, loss and the gradient of the loss with respect to every parameter ("grad.<name>").
Safetensors are parsed and written with struct + json only.

Run through tests/reference/make_golden.py (uses /usr/bin/python3 with torch).
"""
import json
import math
import os
import struct
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EPS = 1e-5


# ---- safetensors, by hand ----------------------------------------------------------------------
def st_read(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    tensors = {}
    for name, e in header.items():
        dtype = {"F32": torch.float32, "I32": torch.int32}[e["dtype"]]
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:end]), dtype=dtype)
        tensors[name] = t.reshape(e["shape"]).clone()
    return tensors, meta


def st_write(path, tensors, meta):
    """tensors: list of (name, dtype string, shape, bytes)."""
    header, off, blobs = {"__metadata__": meta}, 0, []
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(blob)]}
        off += len(blob)
        blobs.append(blob)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def f32_bytes(t):
    return t.detach().to(torch.float32).contiguous().numpy().tobytes()


def i32_bytes(t):
    return t.to(torch.int32).contiguous().numpy().tobytes()


# ---- the model, from the equations --------------------------------------------------------------
def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def rope(x, theta):
    """x (B, heads, T, dh); half-split pairs (i, i + dh/2), pair i turns by pos * theta^(-2i/dh)."""
    T, dh = x.shape[-2], x.shape[-1]
    half = dh // 2
    freq = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / dh)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]       # (T, half)
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def attention(x, p, pre, geo):
    B, T, _ = x.shape
    H, G, dh = geo["n_heads"], geo["n_kv_heads"], geo["head_dim"]
    q = (x @ p[pre + "wq"].T).view(B, T, H, dh).transpose(1, 2)      # (B,H,T,dh)
    k = (x @ p[pre + "wk"].T).view(B, T, G, dh).transpose(1, 2)      # (B,G,T,dh)
    v = (x @ p[pre + "wv"].T).view(B, T, G, dh).transpose(1, 2)
    q, k = rope(q, geo["rope_theta"]), rope(k, geo["rope_theta"])
    k = k.repeat_interleave(H // G, dim=1)                           # query head h reads KV head h // (H/G)
    v = v.repeat_interleave(H // G, dim=1)
    s = q @ k.transpose(-1, -2) / math.sqrt(dh)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    P = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
    o = (P @ v).transpose(1, 2).reshape(B, T, H * dh)
    return o @ p[pre + "wo"].T, P


def forward(p, geo, tokens, targets):
    x = p["tok_emb"][tokens]                                          # (B,T,d)
    probs = []
    for l in range(geo["n_layers"]):
        pre = "layers.%d." % l
        a, P = attention(rmsnorm(x, p[pre + "norm1"]), p, pre + "mixer.", geo)
        probs.append(P)
        x = x + a
        h = rmsnorm(x, p[pre + "norm2"])
        x = x + (torch.nn.functional.silu(h @ p[pre + "mlp.w_gate"].T) * (h @ p[pre + "mlp.w_up"].T)) @ p[pre + "mlp.w_down"].T
    logits = rmsnorm(x, p["norm_f"]) @ p["lm_head"].T                 # (B,T,V)
    loss = None
    if targets is not None:
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                 ignore_index=-1)
    return logits, loss, probs


def load_model(path, dtype=torch.float64):
    tensors, meta = st_read(path)
    geo = json.loads(meta["geometry"])
    assert all(m == "gqa" for m in geo["mixers"]), geo["mixers"]
    params = {k: v.to(dtype).requires_grad_(True) for k, v in tensors.items() if not k.startswith(("train.", "meta."))}
    return params, geo, meta


# ---- a fixed batch ------------------------------------------------------------------------------
def recall_batch(vocab, T):
    """Two recall sequences ("A 3 C 7 ... : C A C ..."), built from the file's vocabulary names: the
    pairs, ':', then keys to answer (target: the key's value), as tasks.c lays them out."""
    idx = {s: i for i, s in enumerate(vocab)}
    rows = [("HBDAKFPC", "3a71f0c9"), ("CIEGMNLO", "e2b4d6f8")]
    order = [5, 2, 7, 0, 3, 6, 1, 2, 4, 5, 0, 7, 7, 1, 6, 3]
    toks, tgts = [], []
    for keys, vals in rows:
        t = []
        for k, v in zip(keys, vals):
            t += [idx[k], idx[v]]
        t.append(idx[":"])
        y = [-1] * len(t)
        for i in order[:T - len(t)]:
            t.append(idx[keys[i]])
            y.append(idx[vals[i]])
        toks.append(t)
        tgts.append(y)
    return torch.tensor(toks), torch.tensor(tgts)


def golden(path, out):
    p, geo, meta = load_model(path)
    vocab = json.loads(meta["vocab"])
    T = min(geo["max_seq_len"], 32)
    tokens, targets = recall_batch(vocab, T)
    logits, loss, _ = forward(p, geo, tokens, targets)
    loss.backward()
    items = [("tokens", "I32", tokens.shape, i32_bytes(tokens)),
             ("targets", "I32", targets.shape, i32_bytes(targets)),
             ("logits", "F32", logits.shape, f32_bytes(logits)),
             ("loss", "F32", (1,), f32_bytes(loss.reshape(1)))]
    for name in sorted(p):
        items.append(("grad." + name, "F32", p[name].shape, f32_bytes(p[name].grad)))
    st_write(out, items, {"source": os.path.relpath(path, ROOT), "generator": "tests/reference/golden_model.py",
                          "dtype": "computed in float64, stored as F32"})
    print("golden_model: %s -> %s (loss %.6f)" % (os.path.relpath(path, ROOT), os.path.relpath(out, ROOT), loss.item()))


CASES = [
    ("data/weights/ch03_recall.safetensors", "tests/golden/model_golden.safetensors"),
    ("tests/golden/model_gqa.safetensors", "tests/golden/model_gqa_golden.safetensors"),
]

if __name__ == "__main__":
    torch.manual_seed(0)
    for src, dst in CASES:
        src_path = os.path.join(ROOT, src)
        if not os.path.exists(src_path):
            sys.exit("golden_model: %s missing (run `make weights` first)" % src)
        golden(src_path, os.path.join(ROOT, dst))
