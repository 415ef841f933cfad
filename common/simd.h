// simd.h: eight floats at a time, written once, compiled two ways.
//
// The kernels (matmul in mathx.c, the attention core in attention.c) are written against the type
// v8f and the handful of operations below. On a CPU with AVX2 and FMA (x86-64-v3, chosen by the
// Makefile) v8f is an __m256 and each operation one instruction; everywhere else (ARM laptops and
// boards, older x86, `make PORTABLE=1`) v8f is a struct of eight floats and each operation a loop over
// the lanes. Every operation is defined lane by lane with one IEEE rounding per step (v8_fma is a
// fused multiply-add, fmaf in the plain build), so the two builds compute the same bits wherever they
// run the same sequence of operations: the order of every sum is fixed here, not by the compiler.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__) && !defined(ATTN_PORTABLE)
#define SIMD_AVX2 1
#include <immintrin.h>
typedef __m256 v8f;
static inline v8f v8_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void v8_store(float *p, v8f a) { _mm256_storeu_ps(p, a); }
static inline v8f v8_set1(float x) { return _mm256_set1_ps(x); }
static inline v8f v8_zero(void) { return _mm256_setzero_ps(); }
static inline v8f v8_add(v8f a, v8f b) { return _mm256_add_ps(a, b); }
static inline v8f v8_sub(v8f a, v8f b) { return _mm256_sub_ps(a, b); }
static inline v8f v8_mul(v8f a, v8f b) { return _mm256_mul_ps(a, b); }
static inline v8f v8_div(v8f a, v8f b) { return _mm256_div_ps(a, b); }
// a * b + c with one rounding
static inline v8f v8_fma(v8f a, v8f b, v8f c) { return _mm256_fmadd_ps(a, b, c); }
// a > b ? a : b and a < b ? a : b per lane (so a NaN in a gives b, as the instructions do)
static inline v8f v8_max(v8f a, v8f b) { return _mm256_max_ps(a, b); }
static inline v8f v8_min(v8f a, v8f b) { return _mm256_min_ps(a, b); }
// round to the nearest integer, ties to even (the default rounding mode), as nearbyintf
static inline v8f v8_round(v8f a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// a, with the lanes where x is NaN replaced by x
static inline v8f v8_nan_from(v8f a, v8f x) { return _mm256_blendv_ps(a, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
// 2^n for integral n in [-126, 127], as a float built from its exponent bits
static inline v8f v8_pow2i(v8f n) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)): the one order in which eight partial sums meet
static inline float v8_sum(v8f a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));   // a_l + a_{l+4}
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                           // (0+4)+(2+6), (1+5)+(3+7)
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
// o[q] = lane q of r[0..7]: an 8x8 transpose (r and o may not alias)
static inline void v8_transpose(v8f o[8], const v8f r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    o[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    o[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    o[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    o[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    o[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    o[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    o[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    o[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#else
#define SIMD_AVX2 0
typedef struct { float f[8]; } v8f;
static inline v8f v8_load(const float *p) { v8f r; memcpy(r.f, p, sizeof r.f); return r; }
static inline void v8_store(float *p, v8f a) { memcpy(p, a.f, sizeof a.f); }
static inline v8f v8_set1(float x) { v8f r; for (int l = 0; l < 8; l++) r.f[l] = x; return r; }
static inline v8f v8_zero(void) { return v8_set1(0.0f); }
static inline v8f v8_add(v8f a, v8f b) { for (int l = 0; l < 8; l++) a.f[l] += b.f[l]; return a; }
static inline v8f v8_sub(v8f a, v8f b) { for (int l = 0; l < 8; l++) a.f[l] -= b.f[l]; return a; }
static inline v8f v8_mul(v8f a, v8f b) { for (int l = 0; l < 8; l++) a.f[l] *= b.f[l]; return a; }
static inline v8f v8_div(v8f a, v8f b) { for (int l = 0; l < 8; l++) a.f[l] /= b.f[l]; return a; }
static inline v8f v8_fma(v8f a, v8f b, v8f c) { for (int l = 0; l < 8; l++) c.f[l] = fmaf(a.f[l], b.f[l], c.f[l]); return c; }
static inline v8f v8_max(v8f a, v8f b) { for (int l = 0; l < 8; l++) a.f[l] = a.f[l] > b.f[l] ? a.f[l] : b.f[l]; return a; }
static inline v8f v8_min(v8f a, v8f b) { for (int l = 0; l < 8; l++) a.f[l] = a.f[l] < b.f[l] ? a.f[l] : b.f[l]; return a; }
static inline v8f v8_round(v8f a) { for (int l = 0; l < 8; l++) a.f[l] = nearbyintf(a.f[l]); return a; }
static inline v8f v8_nan_from(v8f a, v8f x) { for (int l = 0; l < 8; l++) if (x.f[l] != x.f[l]) a.f[l] = x.f[l]; return a; }
static inline v8f v8_pow2i(v8f n) {
    for (int l = 0; l < 8; l++) {
        uint32_t bits = (uint32_t)((int32_t)n.f[l] + 127) << 23;
        memcpy(&n.f[l], &bits, sizeof bits);
    }
    return n;
}
static inline float v8_sum(v8f a) {
    return ((a.f[0] + a.f[4]) + (a.f[2] + a.f[6])) + ((a.f[1] + a.f[5]) + (a.f[3] + a.f[7]));
}
static inline void v8_transpose(v8f o[8], const v8f r[8]) {
    for (int q = 0; q < 8; q++)
        for (int l = 0; l < 8; l++) o[q].f[l] = r[l].f[q];
}
#endif

// The first n (< 8) floats of p into the low lanes, `fill` in the others; and the store back.
static inline v8f v8_load_partial(const float *p, int n, float fill) {
    float t[8];
    for (int l = 0; l < 8; l++) t[l] = l < n ? p[l] : fill;
    return v8_load(t);
}
static inline void v8_store_partial(float *p, v8f a, int n) {
    float t[8];
    v8_store(t, a);
    for (int l = 0; l < n; l++) p[l] = t[l];
}

// e^x per lane, the same bits in both builds (the plain one runs these steps lane by lane):
//   n = round(x log2 e);  r = x - n ln 2 (ln 2 in two parts, so r is exact to ~1 ulp);
//   e^r by its Taylor polynomial to r^7 (|r| <= ln2 / 2: relative error below 1e-8), times 2^n.
// Inputs below -87 give exactly 0 (e^-87 is 1.6e-38, next to FLT_MIN), -inf among them; inputs above
// 88 give e^88 (softmax only ever asks for x <= 0); a NaN stays NaN.
static inline v8f v8_exp(v8f x) {
    const v8f lo = v8_set1(-87.0f), hi = v8_set1(88.0f);
    v8f in = x;
    x = v8_min(v8_max(x, lo), hi);
    v8f n = v8_round(v8_mul(x, v8_set1(1.44269504088896341f)));
    v8f r = v8_fma(n, v8_set1(-0.693145751953125f), x);    // ln 2, high part
    r = v8_fma(n, v8_set1(-1.428606765330187e-06f), r);      // ln 2, low part
    v8f p = v8_set1(1.0f / 5040.0f);
    p = v8_fma(p, r, v8_set1(1.0f / 720.0f));
    p = v8_fma(p, r, v8_set1(1.0f / 120.0f));
    p = v8_fma(p, r, v8_set1(1.0f / 24.0f));
    p = v8_fma(p, r, v8_set1(1.0f / 6.0f));
    p = v8_fma(p, r, v8_set1(0.5f));
    p = v8_fma(p, r, v8_set1(1.0f));
    p = v8_fma(p, r, v8_set1(1.0f));
    v8f e = v8_mul(p, v8_pow2i(n));
    // 0 where the input was at or below lo: keep = min((in - lo) * 3e38, 1) is 0 there and 1 above
    // (the smallest step above -87 is ~8e-6); a NaN input gives a NaN keep, so NaN stays NaN
    v8f keep = v8_min(v8_mul(v8_max(v8_sub(in, lo), v8_zero()), v8_set1(3.0e38f)), v8_set1(1.0f));
    return v8_mul(e, v8_nan_from(keep, in));
}

// 1 / (1 + e^-x) per lane.
static inline v8f v8_sigmoid(v8f x) {
    v8f one = v8_set1(1.0f);
    return v8_div(one, v8_add(one, v8_exp(v8_sub(v8_zero(), x))));
}

// The scalar form of v8_exp, lane for lane the same bits (for the odd value next to a vector of them).
static inline float exp_v8_scalar(float x) {
    float t[8] = {x, x, x, x, x, x, x, x};
    v8_store(t, v8_exp(v8_load(t)));
    return t[0];
}

// a . b over n floats: lane l sums a[c] b[c] for c = l, l + 8, l + 16, ... in order with one fused
// multiply-add each, then v8_sum joins the eight lanes. Every dot product of the attention core and of
// the linear-attention cores is this one, so a forward, a decode step and a chunked prefill score a
// key identically.
static inline float dot_f32(const float *a, const float *b, int n) {
    v8f acc = v8_zero();
    int c = 0;
    for (; c + 8 <= n; c += 8) acc = v8_fma(v8_load(a + c), v8_load(b + c), acc);
    if (c < n) acc = v8_fma(v8_load_partial(a + c, n - c, 0.0f), v8_load_partial(b + c, n - c, 0.0f), acc);
    return v8_sum(acc);
}

// y[0..n) += alpha * x[0..n), one fused multiply-add per element.
static inline void axpy_f32(float *y, float alpha, const float *x, int n) {
    v8f a = v8_set1(alpha);
    int c = 0;
    for (; c + 8 <= n; c += 8) v8_store(y + c, v8_fma(a, v8_load(x + c), v8_load(y + c)));
    for (; c < n; c++) y[c] = fmaf(alpha, x[c], y[c]);
}
