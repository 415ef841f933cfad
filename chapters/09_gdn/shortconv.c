// shortconv.c: causal depthwise conv (kernel K) + SiLU, forward, backward and one decode step.
// Threads split channels into blocks; every output element is summed in a fixed order (taps k = 0..K-1,
// then b, t for dw), so results do not depend on OMP_NUM_THREADS.
#include "09_gdn/shortconv.h"

#include <math.h>
#include <stddef.h>

#define SC_BLOCK 32   // channels per thread task: long enough for SIMD, short enough to spread out

void shortconv_forward(float *y, float *pre, const float *x, const float *w, int B, int T, int C, int K) {
    int nblk = (C + SC_BLOCK - 1) / SC_BLOCK;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int blk = 0; blk < nblk; blk++) {
            int c0 = blk * SC_BLOCK, c1 = c0 + SC_BLOCK < C ? c0 + SC_BLOCK : C;
            for (int t = 0; t < T; t++) {
                float *p = pre + ((size_t)b * T + t) * C;
                float *yo = y + ((size_t)b * T + t) * C;
                for (int c = c0; c < c1; c++) p[c] = 0.0f;
                // tap k reads token t-(K-1)+k; taps before the sequence start read zeros (skipped)
                for (int k = 0; k < K; k++) {
                    int s = t - (K - 1) + k;
                    if (s < 0) continue;
                    const float *xs = x + ((size_t)b * T + s) * C;
                    for (int c = c0; c < c1; c++) p[c] += w[(size_t)c * K + k] * xs[c];
                }
                for (int c = c0; c < c1; c++) yo[c] = p[c] / (1.0f + expf(-p[c]));
            }
        }
    }
}

// d silu(p)/dp = s (1 + p (1 - s)), s = sigmoid(p)
static inline float silu_grad(float p) {
    float s = 1.0f / (1.0f + expf(-p));
    return s * (1.0f + p * (1.0f - s));
}

void shortconv_backward(float *dx, float *dw, const float *dy, const float *pre, const float *x,
                        const float *w, int B, int T, int C, int K) {
    int nblk = (C + SC_BLOCK - 1) / SC_BLOCK;
    // One task per channel block owns dx[., ., block] and dw[block, .]: no two threads write the same
    // element, and each sum runs over b, then t, then k in the same order on any thread count.
    #pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * SC_BLOCK, c1 = c0 + SC_BLOCK < C ? c0 + SC_BLOCK : C;
        float dp[SC_BLOCK];
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < T; t++) {
                size_t row = ((size_t)b * T + t) * C;
                for (int c = c0; c < c1; c++) dp[c - c0] = dy[row + c] * silu_grad(pre[row + c]);
                for (int k = 0; k < K; k++) {
                    int s = t - (K - 1) + k;
                    if (s < 0) continue;
                    size_t srow = ((size_t)b * T + s) * C;
                    for (int c = c0; c < c1; c++) {
                        dx[srow + c] += w[(size_t)c * K + k] * dp[c - c0];
                        dw[(size_t)c * K + k] += dp[c - c0] * x[srow + c];
                    }
                }
            }
        }
    }
}

void shortconv_step(float *y, float *state, const float *x, const float *w, int C, int K) {
    for (int c = 0; c < C; c++) {
        // same tap order as the forward: the K-1 stored inputs (oldest first), then the new token
        float p = 0.0f;
        for (int k = 0; k < K - 1; k++) p += w[(size_t)c * K + k] * state[(size_t)k * C + c];
        p += w[(size_t)c * K + K - 1] * x[c];
        y[c] = p / (1.0f + expf(-p));
    }
    // shift the window by one token: drop the oldest, append x
    for (int k = 0; k + 1 < K - 1; k++)
        for (int c = 0; c < C; c++) state[(size_t)k * C + c] = state[(size_t)(k + 1) * C + c];
    if (K > 1)
        for (int c = 0; c < C; c++) state[(size_t)(K - 2) * C + c] = x[c];
}
