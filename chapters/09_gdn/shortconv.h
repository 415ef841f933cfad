// shortconv.h: the short causal depthwise convolution + SiLU that Gated DeltaNet, KDA and Mamba-2 put
// in front of their recurrence. Each channel c sees only its own last K inputs (K = 4 in Qwen3-Next,
// Kimi Linear and Mamba-2), so a token gets a little local context before the state update, and decode
// keeps just the last K-1 inputs per channel: the "conv state" of the cache.
//
//   y[b][t][c] = silu(pre[b][t][c]),  pre[b][t][c] = sum_{k=0}^{K-1} w[c][k] * x[b][t-(K-1)+k][c]
//
// with x before t = 0 taken as 0 (left padding). w (C,K) is PyTorch's Conv1d weight (C,1,K) with
// groups = C and no bias, so tap K-1 multiplies the current token.
#pragma once

// y, pre, x (B,T,C); w (C,K). pre is the pre-activation, saved for backward.
void shortconv_forward(float *y, float *pre, const float *x, const float *w, int B, int T, int C, int K);
// Accumulates dx (B,T,C) += dL/dx and dw (C,K) += dL/dw given dy (B,T,C).
void shortconv_backward(float *dx, float *dw, const float *dy, const float *pre, const float *x,
                        const float *w, int B, int T, int C, int K);
// One decode token: y (C) from x (C). state (K-1, C) holds the last K-1 inputs, oldest first (zeros
// at the start of a sequence); it is shifted by one and x appended, in place.
void shortconv_step(float *y, float *state, const float *x, const float *w, int C, int K);
