// test_kvquant.c: the cache quantizers of common/kvquant (chapter 12): spellings, the number formats
// against independent definitions, every scheme's round-trip error against its bound, measured bytes
// against the formula, TurboQuant's codebook distortion against the paper's values, the QJL estimator's
// unbiasedness, and ./kvcache's counts with --kv-quant.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "check.h"
#include "helpers.h"
#include "hfconfig.h"
#include "kvcache.h"
#include "kvquant.h"
#include "rng.h"

static const char *ALL_SCHEMES[] = {"fp32", "bf16", "fp16", "fp8", "int8", "int4:32", "int3:8", "int2:5",
                                    "kivi4:8", "kivi2:4", "turbo2", "turbo3", "turbo4", "turbo2+qjl", "turbo4+qjl"};
#define N_ALL (int)(sizeof ALL_SCHEMES / sizeof ALL_SCHEMES[0])

// ---- spellings ----------------------------------------------------------------------------------------

Test(kvquant, parse_spellings_and_errors) {
    KvqScheme s;
    char err[256];
    struct { const char *in, *name; KvqFamily f; int bits, group, qjl; } ok[] = {
        {"fp32", "fp32", KVQ_FP32, 32, 0, 0},     {"bf16", "bf16", KVQ_BF16, 16, 0, 0},
        {"fp8", "fp8", KVQ_FP8, 8, 0, 0},         {"int8", "int8", KVQ_INT8, 8, 0, 0},
        {"int4", "int4:32", KVQ_INT, 4, 32, 0},   {"int2:128", "int2:128", KVQ_INT, 2, 128, 0},
        {"kivi2", "kivi2:32", KVQ_KIVI, 2, 32, 0}, {"kivi4:16", "kivi4:16", KVQ_KIVI, 4, 16, 0},
        {"turbo3", "turbo3", KVQ_TURBO, 3, 0, 0}, {"turbo2+qjl", "turbo2+qjl", KVQ_TURBO, 2, 0, 1},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        cr_assert_eq(kvq_parse(&s, ok[i].in, err, sizeof err), 0, "%s: %s", ok[i].in, err);
        cr_expect_str_eq(s.name, ok[i].name);
        cr_expect(s.family == ok[i].f && s.bits == ok[i].bits && s.group == ok[i].group && s.qjl == ok[i].qjl, "%s", ok[i].in);
        KvqScheme back;
        cr_expect_eq(kvq_parse(&back, s.name, err, sizeof err), 0, "the canonical name '%s' parses", s.name);
    }
    struct { const char *in, *needle; } bad[] = {
        {"int5", "unknown scheme 'int5'"}, {"int1", "unknown scheme 'int1'"}, {"nf4", "unknown scheme 'nf4'"},
        {"", "unknown scheme ''"}, {"int4:0", "group size '0'"}, {"int4:", "group size ''"},
        {"kivi2:x", "group size 'x'"}, {"int4:99999", "group size '99999'"}, {"fp8:32", "fp8 takes no group size"},
        {"turbo3:32", "turbo takes only '+qjl'"}, {"turbo5", "unknown scheme 'turbo5'"}, {"int4x", "unknown scheme"},
        {"fp32 ", "unknown scheme"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(kvq_parse(&s, bad[i].in, err, sizeof err), -1, "'%s' should be refused", bad[i].in);
        cr_expect(strstr(err, bad[i].needle) != NULL, "'%s': message '%s' lacks '%s'", bad[i].in, err, bad[i].needle);
        cr_expect(strchr(err, '\n') == NULL, "one line: %s", err);
    }
}

// ---- number formats -------------------------------------------------------------------------------------

// bf16 by the usual bit trick: add 0x7FFF plus the kept part's lowest bit, drop 16 bits (round to nearest
// even), an independent definition of the same rounding.
static uint16_t bf16_by_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

Test(kvquant, bf16_and_fp16_round_to_nearest_even) {
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < 200000; i++) {
        float x = ldexpf(rng_normal(&r), (int)rng_below(&r, 60) - 30);
        cr_assert_eq(kvq_bf16_from(x), bf16_by_bits(x), "bf16 of %a", x);
#ifdef __FLT16_MAX__
        if (fabsf(x) < 65504.0f) {
            _Float16 h = (_Float16)x;   // the compiler's own conversion
            uint16_t hb;
            memcpy(&hb, &h, 2);
            cr_assert_eq(kvq_fp16_from(x), hb, "fp16 of %a: %04x vs %04x", x, kvq_fp16_from(x), hb);
        }
#endif
    }
    // every finite code decodes and encodes back to itself
    for (uint32_t c = 0; c < 65536; c++) {
        if (((c >> 10) & 0x1F) == 0x1F) continue;   // inf and NaN: never produced (saturating)
        cr_assert_eq(kvq_fp16_from(kvq_fp16_to((uint16_t)c)), c == 0x8000 ? 0x8000 : c, "fp16 code %04x", c);
        if (((c >> 7) & 0xFF) != 0xFF) cr_assert_eq(kvq_bf16_from(kvq_bf16_to((uint16_t)c)), c, "bf16 code %04x", c);
    }
    cr_expect_eq(kvq_fp16_from(1.0f), 0x3C00);
    cr_expect_eq(kvq_fp16_from(65504.0f), 0x7BFF);
    cr_expect_eq(kvq_fp16_from(1e9f), 0x7BFF, "saturates");
    cr_expect_eq(kvq_fp16_from(0x1p-24f), 0x0001, "the smallest subnormal");
    cr_expect_eq(kvq_fp16_from(0x1p-26f), 0x0000, "below half of it: zero");
}

Test(kvquant, fp8_e4m3_is_the_nearest_code) {
    // the 255 non-NaN codes of OCP e4m3 (0x7F and 0xFF are NaN): max 448 = 0x7E
    cr_expect_eq(kvq_fp8_to(0x7E), 448.0f);
    cr_expect_eq(kvq_fp8_to(0x01), 0x1p-9f);
    cr_expect_eq(kvq_fp8_to(0x08), 0x1p-6f);
    cr_expect_eq(kvq_fp8_to(0x38), 1.0f);
    cr_expect_eq(kvq_fp8_from(1000.0f), 0x7E, "saturates at 448");
    cr_expect_eq(kvq_fp8_from(-1000.0f), 0xFE);
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7F) == 0x7F) continue;
        cr_assert_eq(kvq_fp8_from(kvq_fp8_to((uint8_t)c)), c == 0x80 ? 0x80 : c, "code %02x", c);
    }
    Rng r;
    rng_seed(&r, 4);
    for (int i = 0; i < 20000; i++) {
        float x = ldexpf(rng_normal(&r), (int)rng_below(&r, 24) - 14);
        if (fabsf(x) > 448.0f) continue;
        float got = kvq_fp8_to(kvq_fp8_from(x));
        for (int c = 0; c < 256; c++) {   // brute force: no code is nearer
            if ((c & 0x7F) == 0x7F) continue;
            cr_assert(fabsf(x - got) <= fabsf(x - kvq_fp8_to((uint8_t)c)), "%a -> %a, but code %02x = %a is nearer", x,
                      got, c, kvq_fp8_to((uint8_t)c));
        }
    }
}

// ---- round trips within each scheme's bound --------------------------------------------------------------

// n rows of keys like a real model's: unit normal, with channels 3 and 17 (of every vector) 20x larger
// and offset, as the outlier channels KIVI and KVQuant describe.
static float *outlier_rows(Rng *r, int n, int row) {
    float *x = test_randn(r, (size_t)n * row, 1.0f);
    for (int t = 0; t < n; t++)
        for (int j = 0; j < row; j++)
            if (j % 24 == 3 || j % 24 == 17) x[(size_t)t * row + j] = 20.0f * x[(size_t)t * row + j] + 30.0f;
    return x;
}

// The largest |error| a round trip may have at element (t, j): half a quantization step of the range
// that element shares, widened by the fp16 rounding of its zero point and scale.
static double elem_bound(const KvqScheme *s, KvqRole role, const float *x, int n, int row, const int *w, int np,
                         int t, int j) {
    double v = fabs(x[(size_t)t * row + j]);
    int p = 0, off = 0;
    while (p < np - 1 && j >= off + w[p]) off += w[p++];
    int jj = j - off, d = w[p];
    switch (s->family) {
    case KVQ_FP32: return 0.0;
    case KVQ_BF16: return ldexp(v, -8);
    case KVQ_FP16: return ldexp(v, -11) + ldexp(1.0, -25);
    case KVQ_FP8: return ldexp(v, -4) + ldexp(1.0, -10);
    case KVQ_INT8: {
        double amax = 0.0;
        for (int c = 0; c < d; c++) amax = fmax(amax, fabs(x[(size_t)t * row + off + c]));
        return amax / 127.0 * (1 + 0x1p-10) / 2 + 1e-6 * amax;
    }
    default: break;
    }
    // a range: (KIVI keys) one channel over the chunk of G tokens, else one group of one vector; KIVI's
    // last incomplete chunk is exact
    int G = s->group;
    double lo = INFINITY, hi = -INFINITY;
    if (s->family == KVQ_KIVI && role == KVQ_KEY) {
        int c0 = t / G * G;
        if (c0 + G > n) return 0.0;
        for (int u = c0; u < c0 + G; u++) {
            lo = fmin(lo, x[(size_t)u * row + j]);
            hi = fmax(hi, x[(size_t)u * row + j]);
        }
    } else {
        if (s->family == KVQ_KIVI && t >= n / G * G) return 0.0;
        int g0 = jj / G * G, g1 = g0 + G < d ? g0 + G : d;
        for (int c = g0; c < g1; c++) {
            lo = fmin(lo, x[(size_t)t * row + off + c]);
            hi = fmax(hi, x[(size_t)t * row + off + c]);
        }
    }
    double zslack = ldexp(fabs(lo), -10) + ldexp(1.0, -24);   // the zero point rounded down in fp16
    return (hi - lo + zslack) / ((1 << s->bits) - 1) * (1 + 0x1p-10) / 2 + 1e-6 * fmax(fabs(lo), fabs(hi));
}

static void round_trip(const char *name, KvqRole role) {
    KvqScheme s = kvq_scheme(name);
    int w[3] = {24, 24, 40}, np = 3, row = 88, n = 37;   // 37 tokens: KIVI chunks of 4, 8 leave a residual
    Rng r;
    rng_seed(&r, 11);
    float *x = outlier_rows(&r, n, row), *y = mallocCheck(sizeof(float) * (size_t)n * row);
    KvQuant *q = kvq_new(&s, 5);
    KvqStream *st = kvq_stream_new(q, role, w, np, n);
    for (int t = 0; t < n; t++) kvq_put(st, t, x + (size_t)t * row);
    kvq_get(st, y, (size_t)row, 0, n - 1, 1);
    if (s.family == KVQ_FP32) cr_expect(memcmp(x, y, sizeof(float) * (size_t)n * row) == 0, "fp32 is exact");
    if (s.family == KVQ_TURBO) {
        // no per-element bound: check the vectors' mean relative squared error against the codebook's
        double e = 0.0, want = 0.0;
        int nv = 0;
        for (int t = 0; t < n; t++)
            for (int p = 0, off = 0; p < np; off += w[p++], nv++) {
                double num = 0.0, den = 0.0;
                for (int c = off; c < off + w[p]; c++) {
                    double dlt = (double)y[(size_t)t * row + c] - x[(size_t)t * row + c];
                    num += dlt * dlt;
                    den += (double)x[(size_t)t * row + c] * x[(size_t)t * row + c];
                }
                e += num / den;
                want += kvq_turbo_distortion(q, w[p], s.qjl && role == KVQ_KEY ? s.bits - 1 : s.bits);
            }
        e /= nv;
        want /= nv;
        // the QJL sketch adds variance (pi/2 - 1) ||r||^2 on top of the (b-1)-bit codebook's error
        double hi = s.qjl && role == KVQ_KEY ? want * M_PI / 2 * 1.6 : want * 1.6;
        cr_expect(e > 0.4 * want && e < hi, "%s: mean relative squared error %g, codebook predicts %g", name, e, want);
    } else {
        for (int t = 0; t < n; t++)
            for (int j = 0; j < row; j++) {
                double err = fabs((double)y[(size_t)t * row + j] - x[(size_t)t * row + j]);
                double b = elem_bound(&s, role, x, n, row, w, np, t, j);
                cr_assert(err <= b, "%s %s: token %d channel %d: %g -> %g, error %g over its bound %g", name,
                          role == KVQ_KEY ? "key" : "value", t, j, x[(size_t)t * row + j], y[(size_t)t * row + j], err, b);
            }
    }
    kvq_stream_free(st);
    kvq_free(q);
    free(x);
    free(y);
}

Test(kvquant, every_scheme_round_trips_within_its_bound) {
    for (int i = 0; i < N_ALL; i++) {
        round_trip(ALL_SCHEMES[i], KVQ_KEY);
        round_trip(ALL_SCHEMES[i], KVQ_VALUE);
    }
}

// Per-channel ranges are what make KIVI's keys work: with two outlier channels, a per-token group
// stretches its range over them, a per-channel chunk does not.
Test(kvquant, per_channel_keys_beat_per_token_groups_on_outlier_channels) {
    int w[1] = {128}, n = 256;
    Rng r;
    rng_seed(&r, 12);
    float *x = outlier_rows(&r, n, 128), *y = mallocCheck(sizeof(float) * (size_t)n * 128);
    double err[2];
    const char *names[2] = {"int2:32", "kivi2:32"};
    for (int k = 0; k < 2; k++) {
        KvqScheme s = kvq_scheme(names[k]);
        KvQuant *q = kvq_new(&s, 1);
        KvqStream *st = kvq_stream_new(q, KVQ_KEY, w, 1, n);
        for (int t = 0; t < n; t++) kvq_put(st, t, x + (size_t)t * 128);
        kvq_get(st, y, 128, 0, n - 1, 1);
        double e = 0.0;   // on the ordinary channels only
        for (int t = 0; t < n; t++)
            for (int j = 0; j < 128; j++)
                if (j % 24 != 3 && j % 24 != 17) e += fabs(y[(size_t)t * 128 + j] - x[(size_t)t * 128 + j]);
        err[k] = e;
        kvq_stream_free(st);
        kvq_free(q);
    }
    cr_expect(err[1] < 0.3 * err[0], "ordinary channels: KIVI error %g, per-token int2 %g", err[1], err[0]);
    free(x);
    free(y);
}

// ---- bytes ---------------------------------------------------------------------------------------------------

Test(kvquant, measured_bytes_equal_the_formula) {
    int widths[][3] = {{16, 16, 16}, {32, 8, 0}, {128, 0, 0}, {24, 40, 7}};
    int nps[] = {3, 2, 1, 3};
    for (int i = 0; i < N_ALL; i++) {
        KvqScheme s = kvq_scheme(ALL_SCHEMES[i]);
        KvQuant *q = kvq_new(&s, 2);
        for (int k = 0; k < 4; k++)
            for (int role = 0; role < 2; role++)
                for (int cap = 8; cap <= 80; cap += 72) {
                    if (s.family == KVQ_KIVI && cap < 80) continue;   // KIVI keeps every position
                    int row = 0;
                    for (int p = 0; p < nps[k]; p++) row += widths[k][p];
                    KvqStream *st = kvq_stream_new(q, (KvqRole)role, widths[k], nps[k], cap);
                    Rng r;
                    rng_seed(&r, 9);
                    float *x = test_randn(&r, (size_t)row, 1.0f);
                    cr_assert_eq(kvq_stream_held_bytes(st), 0);
                    for (int t = 0; t < 80; t++) {
                        kvq_put(st, t, x);
                        long held = t + 1 < cap ? t + 1 : cap;
                        double want = kvq_stream_bytes_for(&s, widths[k], nps[k], (KvqRole)role, held, 4);
                        cr_assert_eq((double)kvq_stream_held_bytes(st), want, "%s role %d widths %d: %zu B held, formula %g",
                                     s.name, role, k, kvq_stream_held_bytes(st), want);
                    }
                    free(x);
                    kvq_stream_free(st);
                }
        kvq_free(q);
    }
}

Test(kvquant, bytes_per_vector_by_hand) {
    struct { const char *s; int d; KvqRole role; double want; } c[] = {
        {"fp32", 128, KVQ_KEY, 512},      {"bf16", 128, KVQ_VALUE, 256},     {"fp8", 128, KVQ_KEY, 128},
        {"int8", 128, KVQ_KEY, 130},      // codes + one fp16 scale
        {"int4:32", 128, KVQ_KEY, 80},    // 64 B of codes + 4 groups x (zero, scale) fp16
        {"int4:32", 16, KVQ_KEY, 12},     // one partial group: 8 + 4
        {"int3:32", 128, KVQ_VALUE, 64},  // 48 + 16
        {"int2:128", 128, KVQ_KEY, 36},   // 32 + 4
        {"kivi2:32", 128, KVQ_KEY, 48},   // 32 B of codes + 128 channels x 4 B per 32 tokens
        {"kivi2:32", 128, KVQ_VALUE, 48}, // 32 + 4 groups x 4
        {"turbo3", 128, KVQ_KEY, 50},     // 48 + fp16 norm
        {"turbo3+qjl", 128, KVQ_KEY, 52}, // 2-bit indices + 1 sign bit = 48, + norm + residual norm
        {"turbo3+qjl", 128, KVQ_VALUE, 50}, // values take no sketch
        {"turbo2", 512, KVQ_KEY, 130},    // DeepSeek-V3's latent: 128 + 2
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        KvqScheme s = kvq_scheme(c[i].s);
        cr_expect_eq(kvq_vector_bytes(&s, c[i].d, c[i].role), c[i].want, "%s d %d: %g", c[i].s, c[i].d,
                     kvq_vector_bytes(&s, c[i].d, c[i].role));
    }
    // KIVI's residual: 70 tokens of kivi2:32 keys of 128 = 2 chunks (2 x (32 x 32 + 512)) + 6 rows in bf16
    KvqScheme k = kvq_scheme("kivi2:32");
    int w = 128;
    cr_expect_eq(kvq_stream_bytes_for(&k, &w, 1, KVQ_KEY, 70, 2), 2 * (32 * 32 + 512) + 6 * 128 * 2);
    KvqScheme t = kvq_scheme("turbo4+qjl");
    cr_expect_eq(kvq_model_bytes(&t, 64), 4.0 * (16 + 8 + 2 * 64 * 64), "codebooks and two matrices, per model");
}

// ---- TurboQuant ------------------------------------------------------------------------------------------------

// The paper's MSE distortion for unit vectors at 1..4 bits (Theorem 1: about 0.36, 0.117, 0.03, 0.009; the
// Lloyd-Max values for a Gaussian, which the rotated coordinates approach as d grows).
Test(kvquant, turbo_codebook_distortion_matches_the_paper) {
    static const double paper[5] = {0, 0.3634, 0.1175, 0.03454, 0.009497};
    KvqScheme s = kvq_scheme("turbo4");
    KvQuant *q = kvq_new(&s, 1);
    for (int b = 1; b <= 4; b++) {
        double D = kvq_turbo_distortion(q, 256, b);
        cr_expect(fabs(D - paper[b]) < 0.02 * paper[b], "%d bits, d 256: %g vs %g", b, D, paper[b]);
        cr_expect(D <= sqrt(3.0) * M_PI / 2 * pow(4.0, -b), "%d bits: above the paper's upper bound", b);
        // small d: the coordinates' law is narrower than a Gaussian's tails, never worse than the bound
        cr_expect(kvq_turbo_distortion(q, 16, b) <= sqrt(3.0) * M_PI / 2 * pow(4.0, -b));
    }
    kvq_free(q);
}

// The rotation is orthogonal and the working domain preserves inner products: scores from rotated queries
// against rotated codes equal scores from the queries against the decoded vectors.
Test(kvquant, turbo_working_domain_preserves_dot_products) {
    KvqScheme s = kvq_scheme("turbo3+qjl");
    KvQuant *q = kvq_new(&s, 8);
    int w[2] = {32, 8};
    KvqStream *st = kvq_stream_new(q, KVQ_KEY, w, 2, 4);
    Rng r;
    rng_seed(&r, 2);
    float *x = test_randn(&r, 40 * 3, 1.0f), qv[40], qr[40];
    for (int t = 0; t < 3; t++) kvq_put(st, t, x + 40 * t);
    // the three rows decoded both ways: slot t of a 4-row buffer
    float wk[4 * 40], ok[4 * 40];
    kvq_get(st, wk, 40, 0, 2, 0);
    kvq_get(st, ok, 40, 0, 2, 1);
    for (int trial = 0; trial < 10; trial++) {
        for (int j = 0; j < 40; j++) qv[j] = qr[j] = rng_normal(&r);
        kvq_rotate(st, qr, 32, 0);
        kvq_rotate(st, qr + 32, 8, 0);
        for (int t = 0; t < 3; t++) {
            double a = 0, b = 0;
            for (int j = 0; j < 40; j++) {
                a += (double)qr[j] * wk[40 * t + j];
                b += (double)qv[j] * ok[40 * t + j];
            }
            cr_expect(fabs(a - b) < 1e-4 * (1 + fabs(b)), "token %d: %g vs %g", t, a, b);
        }
        // and the inverse undoes the rotation
        kvq_rotate(st, qr, 32, 1);
        kvq_rotate(st, qr + 32, 8, 1);
        for (int j = 0; j < 40; j++) cr_expect(fabsf(qr[j] - qv[j]) < 1e-5f, "Pi^T Pi x = x at %d", j);
    }
    kvq_stream_free(st);
    kvq_free(q);
    free(x);
}

// QJL makes inner products unbiased over the draw of the sketch (and rotation): the mean error of
// q . k~ over many independent draws is 0 within 4 standard errors, where the variance is at most
// pi / (2d) * E||r||^2 * ||q||^2 (the QJL lemma; E||r||^2 = the (b-1)-bit codebook's distortion). The
// same pair through the MSE-only codes shows the bias the sketch removes.
Test(kvquant, qjl_inner_products_are_unbiased) {
    enum { D = 32, N = 3000 };
    Rng r;
    rng_seed(&r, 21);
    float x[D], y[D], k[D];
    for (int j = 0; j < D; j++) x[j] = rng_normal(&r);
    for (int j = 0; j < D; j++) y[j] = x[j] + 0.5f * rng_normal(&r);   // a query aligned with the key
    double exact = 0, xx = 0, yy = 0;
    for (int j = 0; j < D; j++) {
        exact += (double)x[j] * y[j];
        xx += (double)x[j] * x[j];
        yy += (double)y[j] * y[j];
    }
    const char *names[2] = {"turbo2+qjl", "turbo2"};
    double mean[2], var_bound = 0.0;
    for (int v = 0; v < 2; v++) {
        KvqScheme s = kvq_scheme(names[v]);
        double sum = 0.0;
        for (int i = 0; i < N; i++) {
            KvQuant *q = kvq_new(&s, 1000 + (uint64_t)i);   // a fresh rotation and sketch per draw
            int w = D;
            KvqStream *st = kvq_stream_new(q, KVQ_KEY, &w, 1, 1);
            kvq_put(st, 0, x);
            kvq_get(st, k, D, 0, 0, 1);
            double e = 0.0;
            for (int j = 0; j < D; j++) e += (double)y[j] * k[j];
            sum += e - exact;
            if (v == 0 && i == 0) var_bound = M_PI / (2.0 * D) * kvq_turbo_distortion(q, D, 1) * xx * yy;
            kvq_stream_free(st);
            kvq_free(q);
        }
        mean[v] = sum / N;
    }
    double tol = 4.0 * sqrt(var_bound / N);
    cr_expect(fabs(mean[0]) < tol, "QJL: mean error %g over %d draws, tolerance %g (exact %g)", mean[0], N, tol, exact);
    cr_expect(fabs(mean[1]) > 2 * tol, "the MSE codes alone should be visibly biased: mean error %g, tolerance %g",
              mean[1], tol);
}

// ---- ./kvcache with a quantized cache ---------------------------------------------------------------------

// The float formats through the quantized path give exactly the plain formula at that element size, for
// every shipped config (every layer kind and family), per token and in total.
Test(kvquant, kvcache_float_schemes_equal_the_dtype_formula) {
    char cmd[1024], path[1024], err[512];
    snprintf(cmd, sizeof cmd, "ls %s/data/configs/*.json", test_root());
    FILE *ls = popen(cmd, "r");
    cr_assert(ls);
    int n = 0;
    while (fgets(path, sizeof path, ls)) {
        path[strcspn(path, "\n")] = '\0';
        ModelGeometry g;
        cr_assert_eq(hfconfig_load(&g, path, err, sizeof err), 0, "%s", err);
        const char *names[3] = {"bf16", "fp32", "fp8"};
        int bytes[3] = {2, 4, 1};
        for (int k = 0; k < 3; k++) {
            KvqScheme s = kvq_scheme(names[k]);
            g.dtype_bytes = bytes[k];
            cr_expect_eq(kvcache_quant_bytes_per_token(&g, &s, NULL), kvcache_bytes_per_token(&g), "%s %s", path, names[k]);
            for (long T = 1; T <= 4 * 1048576L; T *= 7)
                cr_expect_eq(kvcache_quant_total_bytes(&g, &s, NULL, T, 3), kvcache_total_bytes(&g, T, 3), "%s %s at %ld", path,
                             names[k], T);
        }
        n++;
    }
    pclose(ls);
    cr_expect_geq(n, 20, "only %d configs found", n);
}

Test(kvquant, kvcache_quantized_real_models_by_hand) {
    char path[1024], err[512];
    ModelGeometry llama, ds;
    snprintf(path, sizeof path, "%s/data/configs/llama3-70b.json", test_root());
    cr_assert_eq(hfconfig_load(&llama, path, err, sizeof err), 0, "%s", err);
    snprintf(path, sizeof path, "%s/data/configs/deepseek-v3.json", test_root());
    cr_assert_eq(hfconfig_load(&ds, path, err, sizeof err), 0, "%s", err);
    KvqScheme t3 = kvq_scheme("turbo3"), i4 = kvq_scheme("int4:32"), k2 = kvq_scheme("kivi2:32");
    // Llama 3 70B: 80 layers x 8 KV heads x (K and V) x (48 B of 3-bit codes + 2 B norm)
    cr_expect_eq(kvcache_quant_bytes_per_token(&llama, &t3, NULL), 80.0 * 8 * 2 * 50);
    // DeepSeek-V3: 61 layers x (latent 512: 256 + 16 x 4; RoPE key 64: 32 + 2 x 4)
    cr_expect_eq(kvcache_quant_bytes_per_token(&ds, &i4, NULL), 61.0 * (320 + 40));
    // KIVI at 100 tokens: 3 chunks of 32 quantized, 4 tokens in the config's bf16
    llama.dtype_bytes = 2;
    double per_layer = 8 * (3 * (32.0 * 32 + 4.0 * 128) + 3 * 32.0 * (32 + 16) + 2 * 4 * 128 * 2.0);
    cr_expect_eq(kvcache_quant_total_bytes(&llama, &k2, NULL, 100, 1), 80 * per_layer);
    // codebooks and rotations per model: one width (128), turbo3's 8 centroids and its 128 x 128 rotation
    cr_expect_eq(kvcache_quant_model_bytes(&llama, &t3, NULL), 4.0 * (8 + 128 * 128));
    cr_expect_eq(kvcache_quant_model_bytes(&ds, &i4, NULL), 0.0);
}

static void expect_kvq_tool_error(const char *args, const char *needle) {
    char out[4096];
    int rc = test_run(out, sizeof out, "kvcache", args);
    cr_expect_eq(rc, 2, "kvcache %s: exit %d: %s", args, rc, out);
    cr_expect_eq(test_count_lines(out), 1, "kvcache %s: one line expected: %s", args, out);
    cr_expect(strstr(out, needle) != NULL, "kvcache %s: message lacks '%s': %s", args, needle, out);
}

Test(kvquant, kvcache_tool_flag) {
    const char *cfg = "data/configs/llama3-70b.json data/configs/deepseek-v3.json";
    char out[16384], args[512];
    snprintf(args, sizeof args, "%s --kv-quant turbo3", cfg);
    int rc = test_run(out, sizeof out, "kvcache", args);
    cr_assert_eq(rc, 0, "%s", out);
    // 64000 B per token; at 128K: 64000 x 131072 = 8388608000 B
    cr_expect(strstr(out, "(64000 B)") && strstr(out, "(8388608000 B)"), "%s", out);
    cr_expect(strstr(out, "turbo3") && strstr(out, "3.12 bits"), "%s", out);

    snprintf(args, sizeof args, "%s --kv-quant int4:32 --json --context 1000", cfg);
    rc = test_run(out, sizeof out, "kvcache", args);
    cr_assert_eq(rc, 0, "%s", out);
    cJSON *arr = cJSON_Parse(out);
    cr_assert(cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == 2, "%s", out);
    cJSON *ds = cJSON_GetArrayItem(arr, 1);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(ds, "kv_quant")), "int4:32");
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(ds, "kv_bytes_per_token")), 61.0 * 360);
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(ds, "total_bytes")), 1000 * 61.0 * 360);
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(ds, "kv_quant_bits_per_element")), 8.0 * 360 / 576);
    cJSON_Delete(arr);

    // DeepSeek-V3.2's FP8 layout without its scales: the latent in fp8, the RoPE key in bf16
    rc = test_run(out, sizeof out, "kvcache", "data/configs/deepseek-v3.json --kv-quant fp8 --kv-quant-rope bf16 --json");
    cr_assert_eq(rc, 0, "%s", out);
    arr = cJSON_Parse(out);
    cr_assert(cJSON_IsArray(arr), "%s", out);
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "kv_bytes_per_token")),
                 61.0 * (512 + 64 * 2));
    cJSON_Delete(arr);
    expect_kvq_tool_error("data/configs/deepseek-v3.json --kv-quant-rope bf16", "--kv-quant-rope: needs --kv-quant");
    expect_kvq_tool_error("data/configs/deepseek-v3.json --kv-quant fp8 --kv-quant-rope fp4", "--kv-quant-rope: unknown scheme 'fp4'");

    snprintf(args, sizeof args, "%s --kv-quant int5", cfg);
    expect_kvq_tool_error(args, "--kv-quant: unknown scheme 'int5'");
    snprintf(args, sizeof args, "%s --kv-quant int4:0", cfg);
    expect_kvq_tool_error(args, "--kv-quant: 'int4:0': group size '0'");
    snprintf(args, sizeof args, "%s --kv-quant turbo3 --table", cfg);
    expect_kvq_tool_error(args, "--table");
}
