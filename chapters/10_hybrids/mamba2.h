// mamba2.h: the Mamba-2 (SSD) mixer of state-spaces/mamba (mamba2.py, ssd_minimal.py) with the layout of
// Hugging Face's Mamba2 / NemotronH mixer, "mamba2".
//
// Per token x (d), with Hv heads of P channels, G groups (of B and C) of state size N, conv width K:
//   [z (Hv*P) | xBC (Hv*P + 2*G*N) | dt (Hv)] = x Win^T
//   xBC <- silu(causal depthwise conv_K(xBC)),  split [x (Hv*P) | B (G*N) | C (G*N)]
//   Delta = softplus(dt + dt_bias),  A_h = -exp(A_log_h)          (per head and token)
//   head h uses group h / (Hv/G); its state h_t (N x P) evolves as
//     h_t = exp(Delta_t A_h) h_{t-1} + B_t (Delta_t x_t)^T,   y_t = h_t^T C_t + D_h x_t
//   i.e. decay.h with g_t = Delta_t A_h, k = B, q = C, v = Delta x.
//   out = (RMSNorm_per_group(y * silu(z)) * norm) Wout^T     (gate BEFORE the norm, the opposite of GDN;
//         the norm runs separately over each group's Hv/G heads, eps 1e-5, as RMSNormGated(group_size))
// The conv has no bias here (the reference conv1d has one). Training runs the chunked (SSD) form.
//
// Geometry: Hk = linear_num_key_heads = n_groups G, Hv = linear_num_value_heads = mamba heads,
// dk = linear_key_head_dim = state size N, dv = linear_value_head_dim = head dim P,
// K = linear_conv_kernel_dim (>= 2). Decode cache: Hv*N*P state + (K-1)*(Hv*P + 2*G*N) conv floats.
// Parameters, back to back in this order (PyTorch layout (out, in)):
//   in_proj (2*Hv*P + 2*G*N + Hv, d), conv1d (Hv*P + 2*G*N, K), dt_bias (Hv), A_log (Hv), D (Hv),
//   norm (Hv*P), out_proj (d, Hv*P)
#pragma once
#include "mixer.h"

#define MAMBA2_NORM_EPS 1e-5f

extern const MixerOps mamba2_mixer;

// Fills the linear-layer fields of g for Mamba-2: H heads of head_dim P, G groups of state size N, conv K.
void mamba2_geometry_set(ModelGeometry *g, int H, int P, int G, int N, int K);

// The decay of batch 0 in a forward's act: D (Hv, T, T), D[h][t][s] = exp(G_t - G_s) = the product of
// exp(Delta_u A_h) over u = s+1 .. t, for s <= t (0 above the diagonal). Input dependent.
void mamba2_decay_matrix(float *D, const Mixer *m, const float *act, int T);
// The decay profile seen from the last token of one sequence x (T, d): prof (Hv, T),
// prof[h][r] = exp(G_{T-1} - G_{T-1-r}), how much of token T-1-r is left in head h's state at T-1.
// Runs its own forward (allocates; not for hot paths).
void mamba2_decay_profile(float *prof, const Mixer *m, const float *x, const float *params, int T);
