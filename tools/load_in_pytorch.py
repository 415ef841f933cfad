"""load_in_pytorch.py: loads a weights file of this project into PyTorch from data/weights/README.md alone
(no code of the project), and checks its logits against ./infer on the same tokens.

    /usr/bin/python3 tools/load_in_pytorch.py data/weights/ch03_recall.safetensors [--tokens 2,20,4,24,1,4]

Handles the attention mixers gqa (mha, mqa), gated and mla, on global and local layers. Exits 0 when the
largest logit difference is below 1e-4, 1 otherwise.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import torch
from torch import nn

DTYPES = {"F32": (torch.float32, 4), "I32": (torch.int32, 4), "U8": (torch.uint8, 1)}


def read_safetensors(path):
    """(tensors by name, metadata): 8-byte header length, JSON header, then the data buffer."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors = {}
    for name, t in header.items():
        dtype, _ = DTYPES[t["dtype"]]
        b, e = t["data_offsets"]
        tensors[name] = torch.frombuffer(bytearray(data[b:e]), dtype=dtype).reshape(t["shape"])
    return tensors, meta


def kind(value, names):
    """A kind written as a name (format 2) or as its integer code (format 1)."""
    return value if isinstance(value, str) else names[value]


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, theta, n_rot, interleaved):
    """x (..., T, n) with positions 0..T-1 along dim -2: turns its first n_rot dims."""
    T = x.shape[-2]
    i = torch.arange(n_rot // 2, dtype=torch.float64)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-2.0 * i / n_rot)
    c, s = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    y = x.clone()
    if interleaved:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        y[..., 0:n_rot:2], y[..., 1:n_rot:2] = a * c - b * s, a * s + b * c
    else:
        a, b = x[..., : n_rot // 2], x[..., n_rot // 2: n_rot]
        y[..., : n_rot // 2], y[..., n_rot // 2: n_rot] = a * c - b * s, a * s + b * c
    return y


def attend(q, k, v, scale, window):
    """q (H,T,d), k, v (H,T,*): causal softmax attention, the last `window` keys when window > 0."""
    T = q.shape[1]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    seen = (j <= i) & ((j > i - window) if window > 0 else True)
    s = (q @ k.transpose(1, 2)) * scale
    return torch.softmax(s.masked_fill(~seen, float("-inf")), dim=-1) @ v


class Gqa(nn.Module):
    """gqa and gated: the gate, the q/k norm and partial RoPE are off for plain gqa."""

    def __init__(self, g, theta, window, gated):
        super().__init__()
        H, G, dh, d = g["n_heads"], g.get("n_kv_heads", g["n_heads"]), g["head_dim"], g["d_model"]
        gate = kind(g.get("attn_output_gate", "none"), ["none", "elementwise", "headwise"]) if gated else "none"
        norm = kind(g.get("qk_norm", "none"), ["none", "rms", "zero_centred"]) if gated else "none"
        self.H, self.G, self.dh, self.theta, self.window, self.norm = H, G, dh, theta, window, norm
        self.gw = {"none": 0, "elementwise": dh, "headwise": 1}[gate]
        f = g.get("partial_rotary_factor", 0) if gated else 0
        self.rot = round(dh * (f if f > 0 else 1.0))
        self.wq = nn.Parameter(torch.empty(H * (dh + self.gw), d))
        self.wk = nn.Parameter(torch.empty(G * dh, d))
        self.wv = nn.Parameter(torch.empty(G * dh, d))
        self.wo = nn.Parameter(torch.empty(d, H * dh))
        if norm != "none":
            self.q_norm = nn.Parameter(torch.empty(dh))
            self.k_norm = nn.Parameter(torch.empty(dh))

    def forward(self, x):
        T, H, G, dh = x.shape[0], self.H, self.G, self.dh
        qg = (x @ self.wq.T).view(T, H, dh + self.gw).transpose(0, 1)
        q, gate = qg[..., :dh], qg[..., dh:]
        k = (x @ self.wk.T).view(T, G, dh).transpose(0, 1)
        v = (x @ self.wv.T).view(T, G, dh).transpose(0, 1)
        if self.norm != "none":
            zc = 1.0 if self.norm == "zero_centred" else 0.0
            q, k = rmsnorm(q, self.q_norm + zc, 1e-6), rmsnorm(k, self.k_norm + zc, 1e-6)
        q, k = rope(q, self.theta, self.rot, False), rope(k, self.theta, self.rot, False)
        k, v = k.repeat_interleave(H // G, 0), v.repeat_interleave(H // G, 0)
        o = attend(q, k, v, dh ** -0.5, self.window)
        if self.gw:
            o = o * torch.sigmoid(gate)
        return o.transpose(0, 1).reshape(T, H * dh) @ self.wo.T


class Mla(nn.Module):
    def __init__(self, g, theta, window):
        super().__init__()
        d, H = g["d_model"], g["n_heads"]
        self.H, self.qr, self.dc = H, g.get("q_lora_rank", 0), g["kv_lora_rank"]
        self.dn, self.dr, self.dv = g.get("qk_nope_head_dim", 0), g.get("qk_rope_head_dim", 0), g["v_head_dim"]
        self.theta, self.window = theta, window
        dqk = self.dn + self.dr
        if self.qr == 0:
            self.wq = nn.Parameter(torch.empty(H * dqk, d))
        else:
            self.wq_a = nn.Parameter(torch.empty(self.qr, d))
            self.q_norm = nn.Parameter(torch.empty(self.qr))
            self.wq_b = nn.Parameter(torch.empty(H * dqk, self.qr))
        self.wkv_a = nn.Parameter(torch.empty(self.dc + self.dr, d))
        self.kv_norm = nn.Parameter(torch.empty(self.dc))
        self.wkv_b = nn.Parameter(torch.empty(H * (self.dn + self.dv), self.dc))
        self.wo = nn.Parameter(torch.empty(d, H * self.dv))

    def forward(self, x):
        T, H, dn, dr, dv, dc = x.shape[0], self.H, self.dn, self.dr, self.dv, self.dc
        q = x @ self.wq.T if self.qr == 0 else rmsnorm(x @ self.wq_a.T, self.q_norm, 1e-6) @ self.wq_b.T
        q = q.view(T, H, dn + dr).transpose(0, 1)
        q = torch.cat([q[..., :dn], rope(q[..., dn:], self.theta, dr, True)], -1)
        ckv_pe = x @ self.wkv_a.T
        ckv = rmsnorm(ckv_pe[:, :dc], self.kv_norm, 1e-6)
        k_pe = rope(ckv_pe[:, dc:], self.theta, dr, True)
        kv = (ckv @ self.wkv_b.T).view(T, H, dn + dv).transpose(0, 1)
        k = torch.cat([kv[..., :dn], k_pe.expand(H, T, dr)], -1)
        o = attend(q, k, kv[..., dn:], (dn + dr) ** -0.5, self.window)
        return o.transpose(0, 1).reshape(T, H * dv) @ self.wo.T


class Layer(nn.Module):
    def __init__(self, g, l):
        super().__init__()
        d, F = g["d_model"], g["d_ff"]
        lk = kind(g.get("layer_kind", ["global"] * g["n_layers"])[l], ["global", "local", "linear", "compressed", "none"])
        local = lk == "local"
        theta = g.get("rope_local_theta", 0) if local and g.get("rope_local_theta", 0) > 0 else g.get("rope_theta", 10000.0)
        window = g.get("sliding_window", 0) if local else 0
        name = g["mixers"][l]
        if name in ("gqa", "mha", "mqa", "gated"):
            self.mixer = Gqa(g, theta, window, name == "gated")
        elif name == "mla":
            self.mixer = Mla(g, theta, window)
        else:
            sys.exit("load_in_pytorch: mixer '%s' is not in this example (gqa, mha, mqa, gated, mla)" % name)
        self.norm1 = nn.Parameter(torch.empty(d))
        self.norm2 = nn.Parameter(torch.empty(d))
        self.mlp = nn.Module()
        self.mlp.w_gate = nn.Parameter(torch.empty(F, d))
        self.mlp.w_up = nn.Parameter(torch.empty(F, d))
        self.mlp.w_down = nn.Parameter(torch.empty(d, F))

    def forward(self, x):
        x = x + self.mixer(rmsnorm(x, self.norm1, 1e-5))
        h = rmsnorm(x, self.norm2, 1e-5)
        return x + (nn.functional.silu(h @ self.mlp.w_gate.T) * (h @ self.mlp.w_up.T)) @ self.mlp.w_down.T


class TinyLM(nn.Module):
    def __init__(self, g):
        super().__init__()
        self.tok_emb = nn.Parameter(torch.empty(g["vocab_size"], g["d_model"]))
        self.layers = nn.ModuleList(Layer(g, l) for l in range(g["n_layers"]))
        self.norm_f = nn.Parameter(torch.empty(g["d_model"]))
        self.lm_head = nn.Parameter(torch.empty(g["vocab_size"], g["d_model"]))

    def forward(self, tokens):
        x = self.tok_emb[tokens]
        for layer in self.layers:
            x = layer(x)
        return rmsnorm(x, self.norm_f, 1e-5) @ self.lm_head.T


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--tokens", default="2,20,4,24,1,4,3,5")
    ap.add_argument("--infer", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "infer"))
    a = ap.parse_args()
    tensors, meta = read_safetensors(a.weights)
    g = json.loads(meta["geometry"])
    model = TinyLM(g)
    params = {k: v for k, v in tensors.items() if not k.startswith(("meta.", "train."))}
    model.load_state_dict(params, strict=True)   # every parameter, nothing else
    tokens = [int(t) % g["vocab_size"] for t in a.tokens.split(",")]
    with torch.no_grad():
        ours = model(torch.tensor(tokens))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run.safetensors")
        subprocess.run([a.infer, a.weights, "--tokens", ",".join(map(str, tokens)), "--out", out], check=True,
                       stdout=subprocess.DEVNULL)
        theirs = read_safetensors(out)[0]["logits"]
    diff = (ours - theirs).abs().max().item()
    ok = diff < 1e-4 and math.isfinite(diff)
    print("%s: %d parameters loaded strictly; logits on %d tokens vs ./infer: largest difference %.2e (%s)"
          % (a.weights, len(params), len(tokens), diff, "ok" if ok else "MISMATCH"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
