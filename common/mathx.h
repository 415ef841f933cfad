// mathx.h: the numerical building blocks every chapter uses. Row-major float32 throughout.
//
// Every function here gives bit-identical results whatever OMP_NUM_THREADS is: threads split the
// OUTPUT, and each output element is always summed in the same order.
#pragma once
#include <stddef.h>

// ---- matrix multiply ----------------------------------------------------------------------------
// The fast forms (matmul, matmul_nt, matmul_tn) compute every C element as one fused multiply-add
// chain over k = 0..K-1 in order (from 0, or from C when accumulating). So the bits depend on neither
// the thread count nor M: one row computed alone (a decode step, M = 1) equals that row of the full
// product. The _ref forms are plain loops without FMA; the two agree to a few ulps of sum |a b|.
// C (M,N) = A (M,K) @ B (K,N)            [accumulate: C += instead of C =]
void matmul_ref(float *C, const float *A, const float *B, int M, int K, int N, int accumulate);
void matmul(float *C, const float *A, const float *B, int M, int K, int N, int accumulate);
// C (M,N) = A (M,K) @ B^T, B is (N,K): the linear-layer form y = x W^T with W (out,in) as in PyTorch.
void matmul_nt_ref(float *C, const float *A, const float *B, int M, int K, int N, int accumulate);
void matmul_nt(float *C, const float *A, const float *B, int M, int K, int N, int accumulate);
// C (M,N) = A^T @ B, A is (K,M), B is (K,N): the weight-gradient form dW = dy^T x.
void matmul_tn(float *C, const float *A, const float *B, int M, int K, int N, int accumulate);

// Linear layer, llm.c style: out (N,OC) = inp (N,C) @ weight(OC,C)^T + bias(OC) (bias may be NULL).
void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC);
// Backward: dinp += dout @ W; dweight += dout^T @ inp; dbias += sum over rows (each may be NULL).
void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC);

// ---- dot product --------------------------------------------------------------------------------
// dot_f32 (a . b in eight FMA lanes joined by one fixed tree) and axpy_f32 live in simd.h, with the
// vector type they are written in.
#include "simd.h"

// ---- softmax ------------------------------------------------------------------------------------
// One row of n logits -> probabilities. mask[j] != 0 means key j is visible (mask may be NULL: all
// visible). Subtracts the row max first. A fully masked row gives all zeros, never NaN.
void softmax_row(float *p, const float *logits, const unsigned char *mask, int n);
// Backward of softmax for one row: dlogits = p * (dp - sum(p * dp)).
void softmax_row_backward(float *dlogits, const float *p, const float *dp, int n);

// ---- masks --------------------------------------------------------------------------------------
typedef enum { MASK_BIDIRECTIONAL, MASK_CAUSAL, MASK_PREFIX_LM, MASK_SLIDING } MaskKind;
// Fills mask (T,T): mask[i*T+j] = 1 when query i may see key j.
//   bidirectional: all; causal: j <= i; prefix-LM: j < prefix or j <= i (bidirectional inside the
//   first `prefix` tokens, causal after); sliding: i - window < j <= i (exactly `window` keys).
void mask_fill(unsigned char *mask, MaskKind kind, int T, int param);

// ---- norms --------------------------------------------------------------------------------------
// x, out (N,d); weight (d). RMSNorm: out = x / sqrt(mean(x^2) + eps) * weight.
// rstd (N) saves 1/sqrt(...) for backward (may be NULL).
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *weight, int N, int d, float eps);
void rmsnorm_backward(float *dx, float *dweight, const float *dout, const float *x,
                      const float *weight, const float *rstd, int N, int d);
// LayerNorm: out = (x - mean) / sqrt(var + eps) * weight + bias; mean, rstd (N) saved (may be NULL).
void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *weight,
                       const float *bias, int N, int d, float eps);
void layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout, const float *x,
                        const float *weight, const float *mean, const float *rstd, int N, int d);

// ---- RoPE ---------------------------------------------------------------------------------------
// Rotary position embedding on the first n_rot dims of one head vector x (head_dim), at position pos.
// Frequencies theta^(-2i/n_rot). Two conventions exist:
//   ROPE_INTERLEAVED rotates pairs (2i, 2i+1)          (GPT-J, the original RoFormer, DeepSeek's MLA)
//   ROPE_HALF        rotates pairs (i, i + n_rot/2)    (GPT-NeoX, Llama and Hugging Face models)
// inverse = 1 rotates by -angle (the backward of RoPE is its inverse rotation).
typedef enum { ROPE_INTERLEAVED = 0, ROPE_HALF = 1 } RopeStyle;
void rope_apply(float *x, int pos, int n_rot, double theta, RopeStyle style, int inverse);

// ---- activations --------------------------------------------------------------------------------
// sigmoidf_ and siluf_ are the scalar forms (libm's expf); silu_forward/backward and the SwiGLU pair run
// eight at a time on simd.h's v8_exp, the same bits for any n and any thread count.
static inline float sigmoidf_(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }
static inline float siluf_(float x) { return x * sigmoidf_(x); }
void silu_forward(float *out, const float *x, long n);
void silu_backward(float *dx, const float *dout, const float *x, long n);   // dx += ...
// The SwiGLU MLP's gate: h = silu(gate) * up; and its backward (writes, does not accumulate):
// dgate = dh * up * s (1 + gate (1 - s)), dup = dh * gate * s, s = sigmoid(gate).
void swiglu_forward(float *h, const float *gate, const float *up, long n);
void swiglu_backward(float *dgate, float *dup, const float *dh, const float *gate, const float *up, long n);
void gelu_forward(float *out, const float *x, long n);                      // tanh approximation
void gelu_backward(float *dx, const float *dout, const float *x, long n);   // dx += ...
