// decay.h: the one core behind Lightning attention (MiniMax-01) and Mamba-2 (SSD): linear attention
// whose state decays by a SCALAR per head and token.
//
// One head of one sequence, T tokens, keys/queries of dk, values of dv, per-token log-decays g_t <= 0,
// G_t = g_0 + ... + g_t:
//
//   o_t = sum_{s<=t} (q_t . k_s) exp(G_t - G_s) v_s                         (the attention form)
//
// The same thing two more ways:
//   recurrent   S_t = exp(g_t) S_{t-1} + k_t v_t^T,  o_t = S_t^T q_t        (S is dk x dv; decode)
//   chunked     split T into chunks of C tokens; with Gamma the cumulative g inside the chunk,
//               o_i = sum_{j<=i in chunk} (q_i . k_j) exp(Gamma_i - Gamma_j) v_j   (intra, a C x C block)
//                   + exp(Gamma_i) S_prev^T q_i                                      (inter, the carried state)
//               S_next = exp(Gamma_last) S_prev + sum_j exp(Gamma_last - Gamma_j) k_j v_j^T
// Lightning: g_t = -s_h (a constant per head and layer), q,k,v = silu(x Wqkv).
// Mamba-2:   g_t = Delta_t A_h, q = C, k = B, v = Delta x (and the D x skip outside this core).
//
// Rows are strided, so the callers hand in views straight into their activation buffers: row t of q is
// q + t * ldqk (k shares ldqk), of v is v + t * ldv, of o is o + t * ldo, and g_t is g[t * ldg]
// (ldg = 0: one constant decay, Lightning). The state S is (dk, dv) row-major.
#pragma once
#include <stddef.h>

#define DECAY_CHUNK 16        // chunk length of the blocked form in the mixers (MiniMax: 256, Mamba-2: 256)
#define DECAY_MAX_CHUNK 64    // the largest chunk the functions below accept

// One recurrent step: S = exp(g) S + k v^T, then o (dv) = S^T q. This is the decode step.
void decay_step(float *o, float *S, const float *q, const float *k, const float *v, float g, int dk, int dv);

// The whole sequence, recurrent form. S (dk,dv): state on entry (zeros for a fresh sequence), final state
// on return. o rows are overwritten.
void decay_recurrent_forward(float *o, size_t ldo, float *S, const float *q, const float *k, size_t ldqk,
                             const float *v, size_t ldv, const float *g, size_t ldg, int T, int dk, int dv);

// The same outputs and final state from the chunked form (chunk C <= DECAY_MAX_CHUNK; T need not be a
// multiple of C: the last chunk is shorter).
void decay_chunked_forward(float *o, size_t ldo, float *S, const float *q, const float *k, size_t ldqk,
                           const float *v, size_t ldv, const float *g, size_t ldg, int T, int dk, int dv, int C);

// Backward of decay_chunked_forward from a zero initial state, given do_ (T rows of dv, stride ldo).
// Accumulates dq, dk (stride ldqk), dv (stride ldv) and dg (stride ldg; may be NULL when the decay is
// not learned). scratch holds decay_backward_scratch_floats(T, dk, dv, C) floats.
size_t decay_backward_scratch_floats(int T, int dk, int dv, int C);
void decay_chunked_backward(float *dq, float *dk_, float *dv_, float *dg, const float *do_, size_t ldo,
                            const float *q, const float *k, size_t ldqk, const float *v, size_t ldv,
                            const float *g, size_t ldg, int T, int dk, int dv, int C, float *scratch);

// The implicit T x T mixing matrix of the head: A (T,T), A[t][s] = (q_t . k_s) exp(G_t - G_s) for
// s <= t, 0 above the diagonal; o_t = sum_s A[t][s] v_s. The decay is summed from g directly (no
// difference of two long cumulative sums, which would lose precision).
void decay_mixing_matrix(float *A, const float *q, const float *k, size_t ldqk, const float *g, size_t ldg,
                         int T, int dk);

// ---- benchmark pair: the two forward forms on the same inputs ---------------------------------------
// Seconds per call of decay_recurrent_forward (C = 0) or decay_chunked_forward (chunk C) over a batch of
// B sequences of T tokens with H heads of dk = dv = dh, random unit q, k and g in (-0.1, 0], every
// (sequence, head) in turn on the calling thread; median of reps calls.
double decay_prefill_seconds(int B, int T, int H, int dh, int C, int reps);

// The decay alone: D (T,T), D[t][s] = exp(G_t - G_s) for s <= t, 0 above the diagonal.
void decay_matrix(float *D, const float *g, size_t ldg, int T);
