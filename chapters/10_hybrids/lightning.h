// lightning.h: Lightning attention (MiniMax-01, as in Hugging Face transformers' MiniMaxLightningAttention)
// as a mixer, "lightning".
//
// Per token x (d): [q_h | k_h | v_h] = silu(x Wqkv^T) split per head (each head's three blocks sit side
// by side: qkv_proj rows h*3*dh .. h*3*dh + 3*dh - 1), no 1/sqrt(dh) scale. Each head keeps a state
// KV (dh x dh) that decays by a FIXED factor lambda_h = exp(-s_h) per token:
//   KV_t = lambda_h KV_{t-1} + k_t^T v_t,   o_t = q_t KV_t     (decay.h with g_t = -s_h)
//   s_h = (2^(-8/H))^(h+1) * (1 - l / (L - 1 + 1e-5) + 1e-5)   for head h of H, layer l of L
// (the ALiBi slopes, shrunk towards 0 in deeper layers: the last layer barely forgets; L = 1 is fine).
// Then RMSNorm over ALL heads' outputs together (H*dh wide, eps 1e-6, weight "norm"), times
// sigmoid(x Wgate^T), then out_proj. Training runs the chunked form; decode the recurrent one.
//
// Geometry: H = linear_num_value_heads (= linear_num_key_heads), dh = linear_value_head_dim
// (= linear_key_head_dim), linear_conv_kernel_dim = 0 (no short conv). Decode cache: H*dh*dh floats.
// Parameters (PyTorch layout (out, in), no biases), back to back in this order:
//   qkv_proj (3*H*dh, d), output_gate (H*dh, d), norm (H*dh), out_proj (d, H*dh)
#pragma once
#include "mixer.h"

#define LIGHTNING_NORM_EPS 1e-6f

extern const MixerOps lightning_mixer;

// s_h of head h in layer `layer`: the per-token log-decay is -s_h.
double lightning_slope(const ModelGeometry *g, int layer, int h);
// The decay profile, input independent: prof (H, n_dist), prof[h][r] = exp(-s_h r), the factor by which
// a token r positions back is weighed (times q.k) in head h.
void lightning_decay_profile(float *prof, const ModelGeometry *g, int layer, int n_dist);
// Fills the linear-layer fields of g for Lightning with H heads of dh (Hk = Hv = H, dk = dv = dh, no conv).
void lightning_geometry_set(ModelGeometry *g, int H, int dh);
