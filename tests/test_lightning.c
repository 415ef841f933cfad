// test_lightning.c: chapter 10's Lightning attention (MiniMax-01) against PyTorch golden values (forward,
// pre-norm output, every gradient), finite differences, decode against the forward, the decode cache
// against the KV-cache formula, the mixing matrix against the pre-norm output, and the decay profile.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "10_hybrids/lightning.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "rng.h"
#include "safetensors.h"

// n_layers layers, all Lightning, H heads of dh over d_model d; fp32 cache and state.
static void make_geom(ModelGeometry *g, int n_layers, int d, int H, int dh) {
    geometry_init(g, "test lightning", n_layers, d, H, H);
    for (int l = 0; l < n_layers; l++) g->layer_kind[l] = LAYER_LINEAR;
    lightning_geometry_set(g, H, dh);
    g->dtype_bytes = 4;
    g->state_dtype_bytes = 4;
    char why[256];
    cr_assert(geometry_validate(g, why, sizeof why), "geometry: %s", why);
}

// The pre-norm output o (B,T,H*dh) recomputed from the mixing matrix and v of each batch element 0:
// o_t = sum_s A[h][t][s] v_s. Checked against `want` (batch 0 rows).
static void check_mixing_matrix(const Mixer *m, const float *act, const float *params, const float *want, int T,
                                int H, int dh, const float *qkv) {
    float *A = mallocCheck(sizeof(float) * (size_t)H * T * T);
    cr_assert_eq(lightning_mixer.n_mix_heads(m->g, m->layer), H);
    lightning_mixer.mixing_matrix(m, A, act, params, T);
    size_t ld = 3 * (size_t)H * dh;
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < dh; c++) {
                double acc = 0;
                for (int s = 0; s < T; s++) acc += (double)A[((size_t)h * T + t) * T + s] * qkv[s * ld + h * 3 * dh + 2 * dh + c];
                float w = want[(size_t)t * H * dh + h * dh + c];
                cr_assert(fabs(acc - w) < 1e-5 * fmax(1, fabs(w)), "A v: h %d t %d c %d: %g vs %g", h, t, c, acc, (double)w);
            }
    free(A);
}

// ---- golden values from an independent PyTorch implementation (tests/reference/golden_linear.py) ---

static void golden_case(const SafeTensors *st, const char *cs) {
    int B = test_golden_int(st, cs, "B"), T = test_golden_int(st, cs, "T"), d = test_golden_int(st, cs, "d_model");
    int H = test_golden_int(st, cs, "heads"), dh = test_golden_int(st, cs, "head_dim"), layer = test_golden_int(st, cs, "layer");
    ModelGeometry g;
    make_geom(&g, test_golden_int(st, cs, "n_layers"), d, H, dh);
    Mixer m = {.ops = &lightning_mixer, .g = &g, .layer = layer};
    size_t np = mixer_n_params(&lightning_mixer, &g, layer), nx = (size_t)B * T * d, E = (size_t)H * dh;
    float *params = mallocCheck(sizeof(float) * np), *dparams = callocCheck(np, sizeof(float));
    ParamTensor t[8];
    int n = lightning_mixer.param_tensors(&g, layer, t, 8);
    test_golden_params(params, st, cs, t, n);
    int64_t sx[3] = {B, T, d}, so[3] = {B, T, (int64_t)E};
    const float *x = test_golden(st, cs, "x", 3, sx), *R = test_golden(st, cs, "R", 3, sx), *gout = test_golden(st, cs, "out", 3, sx);
    const float *go = test_golden(st, cs, "o", 3, so);

    float *out = mallocCheck(sizeof(float) * nx), *dx = callocCheck(nx, sizeof(float));
    float *act = mallocCheck(sizeof(float) * lightning_mixer.act_floats(&g, layer, B, T));
    lightning_mixer.forward(&m, out, act, x, params, B, T);
    test_assert_close("out", out, gout, nx, 1e-5f);
    lightning_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    test_assert_close("dx", dx, test_golden(st, cs, "dx", 3, sx), nx, 1e-4f);
    test_golden_dparams(st, cs, dparams, t, n, 1e-4f);
    // The mixing matrix reproduces PyTorch's pre-norm output. The post-SiLU q,k,v of batch 0 are
    // recomputed here from x and qkv_proj (act's layout is the mixer's business).
    float *qkv = mallocCheck(sizeof(float) * (size_t)T * 3 * E);
    for (int r = 0; r < T; r++)
        for (size_t o = 0; o < 3 * E; o++) {
            double s = 0;
            for (int c = 0; c < d; c++) s += (double)x[(size_t)r * d + c] * params[t[0].offset + o * d + c];
            qkv[r * 3 * E + o] = (float)(s / (1 + exp(-s)));
        }
    check_mixing_matrix(&m, act, params, go, T, H, dh, qkv);

    // decode, every sequence: equals PyTorch's (recurrent) outputs; the cache never grows
    test_decode_fixed_state(&m, params, x, gout, B, T, 1e-5f);
    free(params), free(dparams), free(out), free(dx), free(act), free(qkv);
}

Test(lightning, matches_pytorch_golden) {
    SafeTensors st;
    test_golden_load(&st, "linear.safetensors", "golden_linear.py");
    golden_case(&st, "lightning_a");
    golden_case(&st, "lightning_b");
    st_free(&st);
}

// ---- backward against central finite differences ---------------------------------------------------

Test(lightning, backward_matches_finite_differences) {
    int B = 2, T = 19;   // T > DECAY_CHUNK: the state crosses a chunk boundary
    ModelGeometry g;
    make_geom(&g, 3, 8, 2, 3);
    Mixer m = {.ops = &lightning_mixer, .g = &g, .layer = 0};   // layer 0: the strongest decay
    Rng rng;
    rng_seed(&rng, 11);
    size_t np = mixer_n_params(&lightning_mixer, &g, 0), nx = (size_t)B * T * g.d_model;
    float *params = test_randn(&rng, np, 0.5f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    ParamTensor t[8];
    int n = lightning_mixer.param_tensors(&g, 0, t, 8);
    cr_assert_eq(n, 4);
    for (int k = 0; k < t[2].shape[0]; k++) params[t[2].offset + k] = 1.0f + 0.2f * rng_normal(&rng);   // norm
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * lightning_mixer.act_floats(&g, 0, B, T));
    float *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    lightning_mixer.forward(&m, out, act, x, params, B, T);
    lightning_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    for (int i = 0; i < n; i++) {
        double e = test_mixer_fd_rel_error(&m, params + t[i].offset, dparams + t[i].offset, test_tensor_size(&t[i]), out, x,
                                           params, R, B, T);
        cr_expect(e < 2e-3, "d%s: relative error %.3g", t[i].name, e);
    }
    double e = test_mixer_fd_rel_error(&m, x, dx, nx, out, x, params, R, B, T);
    cr_expect(e < 2e-3, "dx: relative error %.3g", e);

    // backward accumulates: a second call adds the same gradient again
    float *dx2 = mallocCheck(sizeof(float) * nx), *dp2 = mallocCheck(sizeof(float) * np);
    memcpy(dx2, dx, sizeof(float) * nx);
    memcpy(dp2, dparams, sizeof(float) * np);
    lightning_mixer.forward(&m, out, act, x, params, B, T);
    lightning_mixer.backward(&m, dx2, dp2, R, act, x, params, B, T);
    for (size_t i = 0; i < nx; i++) cr_assert(fabsf(dx2[i] - 2 * dx[i]) <= 1e-5f * fmaxf(1, fabsf(dx[i])));
    for (size_t i = 0; i < np; i++) cr_assert(fabsf(dp2[i] - 2 * dparams[i]) <= 1e-5f * fmaxf(1, fabsf(dparams[i])));
    free(params), free(x), free(R), free(out), free(act), free(dparams), free(dx), free(dx2), free(dp2);
}

// ---- decode, cache accounting, decay ------------------------------------------------------------------

Test(lightning, decode_equals_forward_and_cache_is_the_formula) {
    int T = 40;
    ModelGeometry g;
    make_geom(&g, 4, 32, 4, 8);
    g.layer_kind[3] = LAYER_GLOBAL;   // a hybrid: three Lightning layers and one softmax layer
    Mixer m = {.ops = &lightning_mixer, .g = &g, .layer = 1};
    Rng rng;
    rng_seed(&rng, 12);
    size_t np = mixer_n_params(&lightning_mixer, &g, 1), nx = (size_t)T * g.d_model;
    float *params = mallocCheck(sizeof(float) * np), *x = test_randn(&rng, nx, 1.0f);
    lightning_mixer.init(&m, params, &rng);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * lightning_mixer.act_floats(&g, 1, 1, T));
    lightning_mixer.forward(&m, out, act, x, params, 1, T);
    MixerCache *c = lightning_mixer.cache_new(&m, T);
    float step[32];
    double formula = kvcache_fixed_bytes(&g) / geometry_count(&g, LAYER_LINEAR);
    cr_assert_eq(formula, 4.0 * 4 * 8 * 8);   // H dk dv fp32, no conv
    for (int t = 0; t < T; t++) {
        lightning_mixer.decode(&m, c, step, x + (size_t)t * g.d_model, params);
        test_assert_close("decode", step, out + (size_t)t * g.d_model, (size_t)g.d_model, 1e-5f);
        cr_assert_eq((double)lightning_mixer.cache_bytes(c), formula, "measured cache bytes equal the formula");
    }
    lightning_mixer.cache_free(c);
    free(params), free(x), free(out), free(act);
}

Test(lightning, slopes_follow_minimax) {
    ModelGeometry g;
    make_geom(&g, 5, 32, 4, 8);
    // base 2^(-8/4) = 1/4: head h has (1/4)^(h+1) times (1 - l/(L-1+1e-5) + 1e-5)
    cr_assert(fabs(lightning_slope(&g, 0, 0) - 0.25 * (1 + 1e-5)) < 1e-12);
    cr_assert(fabs(lightning_slope(&g, 0, 3) - pow(0.25, 4) * (1 + 1e-5)) < 1e-12);
    cr_assert(fabs(lightning_slope(&g, 2, 1) - 0.0625 * (1 - 2 / (4 + 1e-5) + 1e-5)) < 1e-12);
    double last = lightning_slope(&g, 4, 0);
    cr_assert(last > 0 && last < 1e-5, "the last layer barely decays: %g", last);
    ModelGeometry one;
    make_geom(&one, 1, 16, 2, 8);   // L = 1 stays finite
    cr_assert(isfinite(lightning_slope(&one, 0, 0)) && lightning_slope(&one, 0, 0) > 0);
    float prof[4 * 10];
    lightning_decay_profile(prof, &g, 0, 10);
    for (int h = 0; h < 4; h++) {
        cr_assert_eq(prof[h * 10], 1.0f);
        cr_assert(fabs(prof[h * 10 + 7] - exp(-7 * lightning_slope(&g, 0, h))) < 1e-6);
    }
}
