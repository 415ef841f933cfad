// kda.h: Kimi Delta Attention (Kimi Linear, chapter 10) as a mixer: Gated DeltaNet with one decay per
// key channel instead of one per head, on the same delta-rule core (09_gdn/gdn.h, g_dim = dk).
//
// Per token, from x (d_model), H heads (key heads = value heads), low rank r = dv:
//   [q | k | v] = x [q_proj; k_proj; v_proj]^T, short causal conv (conv1d, kernel K) + SiLU
//   q <- l2norm(q) / sqrt(dk),  k <- l2norm(k)
//   g (H, dk) = -exp(A_log[h]) * softplus(f_b_proj(f_a_proj x) + dt_bias)   (a per-channel forget gate)
//   beta = sigmoid(b_proj x),  gate = g_b_proj(g_a_proj x)
//   S <- Diag(exp(g)) S;  u = beta (v - S^T k);  S <- S + k u^T;  o = S^T q
//   y_h = RMSNorm(o_h) * o_norm * sigmoid(gate_h)   (eps 1e-6),   out = y o_proj^T
// Parameters (PyTorch layout (out, in), no biases; names as fla's KimiDeltaAttention, whose f_proj and
// g_proj are the two-layer low-rank stacks [f_a_proj, f_b_proj] and [g_a_proj, g_b_proj]):
//   q_proj (H*dk, d), k_proj (H*dk, d), v_proj (H*dv, d), f_a_proj (r, d), g_a_proj (r, d), b_proj (H, d),
//   f_b_proj (H*dk, r), g_b_proj (H*dv, r), conv1d (2H*dk + H*dv, 1, K), A_log (H), dt_bias (H*dk),
//   o_norm (dv), o_proj (d, H*dv).
// Init: A ~ U[1,16], A_log = log A; dt_bias = softplus^-1(dt), dt log-uniform in [1e-3, 1e-1] per
// channel; o_norm = 1; matrices N(0, 0.02^2) (o_proj / sqrt(2 n_layers)); conv1d U(+-1/sqrt(K)).
// (fla's g_proj has a bias on its second layer; this one does not.)
// Decode keeps the same fixed state as Gated DeltaNet: H*dk*dv + (K-1)*(2H*dk + H*dv) floats.
#pragma once
#include "mixer.h"

extern const MixerOps kda_mixer;

#define KDA_CHUNK 16

// From the act of a kda forward (sequence 0): S (n_times, dk, dv) state of head `head` after tokens
// times[i]; beta (T, H) write strengths; alpha (T, H, dk) per-channel decays exp(g).
void kda_states_at(const Mixer *m, float *S, const float *act, int T, int head, const int *times, int n_times);
void kda_gates(const Mixer *m, float *beta, float *alpha, const float *act, int T);
// A small Kimi-Linear-shaped geometry: every layer LAYER_LINEAR KDA with n_heads heads of
// dk = dv = d_model / n_heads, K = 4, fp32.
void kda_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads);
