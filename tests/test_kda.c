// test_kda.c: chapter 10's Kimi Delta Attention: PyTorch golden values (tests/reference/golden_gdn.py,
// recurrent form), finite differences for every parameter tensor and dx, cached decode (the recurrent
// form) against the chunked forward, the cache formula and the implicit mixing matrix. The shared core's
// chunked == recurrent check with per-channel decays is in test_gdn.c (core_case with g_dim = dk).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "09_gdn/gdn.h"
#include "10_hybrids/kda.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "rng.h"
#include "safetensors.h"

static void make_geom(ModelGeometry *g, int d, int H, int dk, int dv, int K) {
    test_linear_geom(g, "test kda", LINEAR_KDA, d, H, H, dk, dv, K);
}

// Random matrices N(0, std^2); A_log, dt_bias as initialised; o_norm 1 + N(0, 0.2^2).
static float *random_params(const ModelGeometry *g, Rng *r, float std) {
    Mixer m = {.ops = &kda_mixer, .g = g, .layer = 0};
    size_t np = mixer_n_params(&kda_mixer, g, 0);
    float *p = test_randn(r, np, std), *init = mallocCheck(np * sizeof(float));
    kda_mixer.init(&m, init, r);
    ParamTensor t[16];
    int n = kda_mixer.param_tensors(g, 0, t, 16);
    for (int i = 0; i < n; i++) {
        size_t sz = test_tensor_size(&t[i]);
        if (!strcmp(t[i].name, "A_log") || !strcmp(t[i].name, "dt_bias"))
            memcpy(p + t[i].offset, init + t[i].offset, sz * sizeof(float));
        if (!strcmp(t[i].name, "o_norm"))
            for (size_t k = 0; k < sz; k++) p[t[i].offset + k] = 1.0f + 0.2f * rng_normal(r);
    }
    free(init);
    return p;
}

Test(kda, gradients_match_finite_differences) {
    int B = 2, T = KDA_CHUNK + 3;   // two chunks
    ModelGeometry g;
    make_geom(&g, 10, 2, 8, 3, 3);
    Mixer m = {.ops = &kda_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 21);
    size_t np = mixer_n_params(&kda_mixer, &g, 0), nx = (size_t)B * T * g.d_model;
    // The l2norm of q and k bends sharply for short vectors and the finite-difference step is 1e-2, so
    // this check is loose (1.5e-2); matches_pytorch_golden holds the same gradients to 1e-4.
    float *params = random_params(&g, &rng, 1.0f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * kda_mixer.act_floats(&g, 0, B, T));
    float *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    kda_mixer.forward(&m, out, act, x, params, B, T);
    kda_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    ParamTensor t[16];
    int n = kda_mixer.param_tensors(&g, 0, t, 16);
    cr_assert_eq(n, 13);
    for (int i = 0; i < n; i++) {
        double e = test_mixer_fd_rel_error(&m, params + t[i].offset, dparams + t[i].offset, test_tensor_size(&t[i]), out,
                                           x, params, R, B, T);
        cr_expect(e < 1.5e-2, "d%s: relative error %.3g", t[i].name, e);
    }
    double e = test_mixer_fd_rel_error(&m, x, dx, nx, out, x, params, R, B, T);
    cr_expect(e < 1.5e-2, "dx: relative error %.3g", e);
    free(params); free(x); free(R); free(out); free(act); free(dparams); free(dx);
}

Test(kda, decode_equals_forward_and_cache_formula) {
    int B = 2, T = 2 * KDA_CHUNK + 5;
    ModelGeometry g;
    make_geom(&g, 16, 2, 4, 6, 4);
    Mixer m = {.ops = &kda_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 22);
    size_t nx = (size_t)B * T * g.d_model;
    float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, nx, 1.0f);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * kda_mixer.act_floats(&g, 0, B, T));
    kda_mixer.forward(&m, out, act, x, params, B, T);
    double fixed = kvcache_fixed_bytes(&g) / geometry_count(&g, LAYER_LINEAR);
    cr_assert_eq(fixed, 4.0 * (2 * 4 * 6 + 3 * (2 * 2 * 4 + 2 * 6)));
    for (int b = 0; b < B; b++) {
        MixerCache *c = kda_mixer.cache_new(&m, T);
        float step[16];
        double worst = 0;
        for (int t = 0; t < T; t++) {
            kda_mixer.decode(&m, c, step, x + ((size_t)b * T + t) * g.d_model, params);
            worst = test_worst(worst, test_rel_err(step, out + ((size_t)b * T + t) * g.d_model, (size_t)g.d_model));
            cr_assert_eq((double)kda_mixer.cache_bytes(c), fixed, "cache bytes %zu, formula %.0f",
                         kda_mixer.cache_bytes(c), fixed);
        }
        cr_expect(worst < 1e-5, "sequence %d: decode vs forward relative error %.3g", b, worst);
        kda_mixer.cache_free(c);
    }
    // gates: beta in (0,1), per-channel decays in (0,1); states recomputed from the probe
    float *beta = mallocCheck(sizeof(float) * T * 2), *alpha = mallocCheck(sizeof(float) * T * 2 * 4);
    kda_gates(&m, beta, alpha, act, T);
    for (int i = 0; i < T * 2; i++) cr_assert(beta[i] > 0 && beta[i] < 1);
    for (int i = 0; i < T * 8; i++) cr_assert(alpha[i] > 0 && alpha[i] < 1);
    free(params); free(x); free(out); free(act); free(beta); free(alpha);
}

Test(kda, matches_pytorch_golden) {
    char key[96];
    SafeTensors st;
    test_golden_load(&st, "gdn.safetensors", "golden_gdn.py");
    int B = test_golden_int(&st, "kda", "B"), T = test_golden_int(&st, "kda", "T"), d = test_golden_int(&st, "kda", "d_model");
    int H = test_golden_int(&st, "kda", "Hv"), dk = test_golden_int(&st, "kda", "dk"), dv = test_golden_int(&st, "kda", "dv");
    ModelGeometry g;
    make_geom(&g, d, H, dk, dv, test_golden_int(&st, "kda", "K"));
    Mixer m = {.ops = &kda_mixer, .g = &g, .layer = 0};
    size_t np = mixer_n_params(&kda_mixer, &g, 0), nx = (size_t)B * T * d;
    float *params = mallocCheck(sizeof(float) * np), *dparams = callocCheck(np, sizeof(float));
    ParamTensor t[16];
    int n = kda_mixer.param_tensors(&g, 0, t, 16);
    test_golden_params(params, &st, "kda", t, n);
    int64_t sx[3] = {B, T, d}, so[3] = {T, H, dv};
    const float *x = test_golden(&st, "kda", "x", 3, sx), *R = test_golden(&st, "kda", "R", 3, sx);
    float *out = mallocCheck(sizeof(float) * nx), *dx = callocCheck(nx, sizeof(float));
    float *act = mallocCheck(sizeof(float) * kda_mixer.act_floats(&g, 0, B, T));
    kda_mixer.forward(&m, out, act, x, params, B, T);
    double e = test_rel_err(out, test_golden(&st, "kda", "out", 3, sx), nx);
    cr_expect(e < 1e-5, "out: relative error %.3g", e);
    // mixing matrix: o_t = sum_s A_ts v_s against the reference's pre-norm output of sequence 0
    DeltaDims z = {.B = 1, .T = T, .Hk = H, .Hv = H, .dk = dk, .dv = dv, .g_dim = dk};
    DeltaProbe p;
    delta_probe_carve(&p, act, &z);
    cr_assert_eq(kda_mixer.n_mix_heads(&g, 0), H);
    float *A = mallocCheck(sizeof(float) * (size_t)H * T * T), *Av = callocCheck((size_t)T * H * dv, sizeof(float));
    kda_mixer.mixing_matrix(&m, A, act, params, T);
    for (int h = 0; h < H; h++)
        for (int t0 = 0; t0 < T; t0++)
            for (int s = 0; s < T; s++)
                for (int c = 0; c < dv; c++)
                    Av[((size_t)t0 * H + h) * dv + c] += A[((size_t)h * T + t0) * T + s] * p.v[((size_t)s * H + h) * dv + c];
    e = test_rel_err(Av, test_golden(&st, "kda", "o0", 3, so), (size_t)T * H * dv);
    cr_expect(e < 1e-5, "A v vs reference o: relative error %.3g", e);

    kda_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    e = test_rel_err(dx, test_golden(&st, "kda", "dx", 3, sx), nx);
    cr_expect(e < 1e-4, "dx: relative error %.3g", e);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "d%.47s", t[i].name);
        e = test_rel_err(dparams + t[i].offset, test_golden(&st, "kda", key, t[i].ndim, t[i].shape), test_tensor_size(&t[i]));
        cr_expect(e < 1e-4, "%s: relative error %.3g", key, e);
    }
    free(params); free(dparams); free(out); free(dx); free(act); free(A); free(Av);
    st_free(&st);
}
