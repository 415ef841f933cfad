// selfattn.h: one attention head over a sequence, with any mask (chapter 2).
#pragma once

// out (T,dh) = softmax(mask(Q K^T / sqrt(dh))) V with Q = x wq, K = x wk, V = x wv.
//   x (T,d); wq, wk, wv (d,dh); mask (T,T) with 1 = visible, or NULL for bidirectional.
//   P (T,T) receives the attention weights (masked entries are exactly 0). scratch: 3*T*dh + T*T floats.
void selfattn_forward(float *out, float *P, const float *x, const float *wq, const float *wk,
                      const float *wv, const unsigned char *mask, int T, int d, int dh, float *scratch);
