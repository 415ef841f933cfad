// test_gdn.c: chapter 9's Gated DeltaNet: the delta-rule core's chunked form against its recurrent
// form (one decay per head and one per channel), the mixer against PyTorch golden values
// (tests/reference/golden_gdn.py), finite differences for every parameter tensor and dx, cached decode
// against the forward, the cache formula, the implicit mixing matrix, and thread-count independence.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "09_gdn/gdn.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "rng.h"
#include "safetensors.h"

static void make_geom(ModelGeometry *g, int d, int Hk, int Hv, int dk, int dv, int K) {
    test_linear_geom(g, "test gdn", LINEAR_GDN, d, Hk, Hv, dk, dv, K);
}

// Random parameters: matrices N(0, std^2), the norm gain 1 + N(0, 0.2^2), A_log, dt_bias as initialised.
static float *random_params(const ModelGeometry *g, Rng *r, float std) {
    Mixer m = {.ops = &gdn_mixer, .g = g, .layer = 0};
    size_t np = mixer_n_params(&gdn_mixer, g, 0);
    float *p = test_randn(r, np, std);
    float *init = mallocCheck(np * sizeof(float));
    gdn_mixer.init(&m, init, r);
    ParamTensor t[16];
    int n = gdn_mixer.param_tensors(g, 0, t, 16);
    for (int i = 0; i < n; i++) {
        size_t sz = (size_t)t[i].shape[0] * (t[i].ndim > 1 ? t[i].shape[1] : 1) * (t[i].ndim > 2 ? t[i].shape[2] : 1);
        if (!strcmp(t[i].name, "A_log") || !strcmp(t[i].name, "dt_bias"))
            memcpy(p + t[i].offset, init + t[i].offset, sz * sizeof(float));
        if (!strcmp(t[i].name, "norm"))
            for (size_t k = 0; k < sz; k++) p[t[i].offset + k] = 1.0f + 0.2f * rng_normal(r);
    }
    free(init);
    return p;
}

// ---- the core: chunked == recurrent -------------------------------------------------------------

static void core_case(int g_dim, int C) {
    DeltaDims z = {.B = 2, .T = 37, .Hk = 2, .Hv = 4, .dk = 8, .dv = 6, .g_dim = g_dim};
    z.qk_stride = z.Hk * z.dk + 3;   // views into wider rows, as in the mixer
    z.v_stride = z.Hv * z.dv + 5;
    if (g_dim > 1) z.g_dim = z.dk;
    Rng r;
    rng_seed(&r, 100 + g_dim + C);
    size_t N = (size_t)z.B * z.T;
    float *q = test_randn(&r, N * z.qk_stride, 1.0f), *k = test_randn(&r, N * z.qk_stride, 1.0f), *v = test_randn(&r, N * z.v_stride, 1.0f);
    for (size_t row = 0; row < N; row++)
        for (int h = 0; h < z.Hk; h++) {
            float *qh = q + row * z.qk_stride + h * z.dk, *kh = k + row * z.qk_stride + h * z.dk, nq = 0, nk = 0;
            for (int c = 0; c < z.dk; c++) nq += qh[c] * qh[c], nk += kh[c] * kh[c];
            for (int c = 0; c < z.dk; c++) qh[c] /= sqrtf(nq * z.dk), kh[c] /= sqrtf(nk);
        }
    float *beta = mallocCheck(N * z.Hv * sizeof(float)), *g = mallocCheck(N * z.Hv * z.g_dim * sizeof(float));
    for (size_t i = 0; i < N * z.Hv; i++) beta[i] = rng_uniform(&r);
    for (size_t i = 0; i < N * z.Hv * z.g_dim; i++) g[i] = -1.5f * rng_uniform(&r);   // strong decays too
    size_t no = N * z.Hv * z.dv;
    float *o1 = mallocCheck(no * sizeof(float)), *o2 = mallocCheck(no * sizeof(float));
    delta_rule_recurrent(o1, NULL, q, k, v, beta, g, &z);
    delta_rule_chunked(o2, NULL, q, k, v, beta, g, &z, C);
    double e = test_rel_err(o2, o1, no), mx = 0, scale = 0;
    for (size_t i = 0; i < no; i++) mx = test_worst(mx, fabs(o2[i] - o1[i])), scale = fmax(scale, fabs(o1[i]));
    cr_expect(e < 1e-5, "g_dim %d C %d: chunked vs recurrent relative error %.3g", z.g_dim, C, e);
    cr_expect(mx < 1e-5 * scale, "g_dim %d C %d: max abs diff %.3g (max |o| %.3g)", z.g_dim, C, mx, scale);
    cr_expect(scale > 0.05, "outputs are not trivially small");
    free(q); free(k); free(v); free(beta); free(g); free(o1); free(o2);
}

Test(gdn, chunked_equals_recurrent) {
    core_case(1, GDN_CHUNK);
    core_case(1, 5);
    core_case(8, GDN_CHUNK);   // per-channel decay (KDA's case)
    core_case(8, 7);
}

// ---- the mixer: gradients, decode, cache, mixing matrix --------------------------------------------

Test(gdn, gradients_match_finite_differences) {
    int B = 2, T = GDN_CHUNK + 4;   // two chunks: the backward crosses a chunk boundary
    ModelGeometry g;
    make_geom(&g, 12, 1, 2, 8, 3, 3);   // Hv = 2 Hk: two value heads share a key head
    Mixer m = {.ops = &gdn_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 7);
    size_t np = mixer_n_params(&gdn_mixer, &g, 0), nx = (size_t)B * T * g.d_model;
    float *params = random_params(&g, &rng, 1.0f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * gdn_mixer.act_floats(&g, 0, B, T));
    float *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    gdn_mixer.forward(&m, out, act, x, params, B, T);
    gdn_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    ParamTensor t[16];
    int n = gdn_mixer.param_tensors(&g, 0, t, 16);
    cr_assert_eq(n, 11);
    for (int i = 0; i < n; i++) {
        double e = test_mixer_fd_rel_error(&m, params + t[i].offset, dparams + t[i].offset, test_tensor_size(&t[i]), out,
                                           x, params, R, B, T);
        cr_expect(e < 3e-3, "d%s: relative error %.3g", t[i].name, e);
    }
    double e = test_mixer_fd_rel_error(&m, x, dx, nx, out, x, params, R, B, T);
    cr_expect(e < 3e-3, "dx: relative error %.3g", e);
    free(params); free(x); free(R); free(out); free(act); free(dparams); free(dx);
}

Test(gdn, decode_equals_forward_and_cache_formula) {
    int B = 2, T = 2 * GDN_CHUNK + 3;
    ModelGeometry g;
    make_geom(&g, 16, 2, 4, 4, 5, 4);
    Mixer m = {.ops = &gdn_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 8);
    size_t nx = (size_t)B * T * g.d_model;
    float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, nx, 1.0f);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * gdn_mixer.act_floats(&g, 0, B, T));
    gdn_mixer.forward(&m, out, act, x, params, B, T);
    double fixed = kvcache_fixed_bytes(&g) / geometry_count(&g, LAYER_LINEAR);
    for (int b = 0; b < B; b++) {
        MixerCache *c = gdn_mixer.cache_new(&m, T);
        float step[16];
        double worst = 0;
        for (int t = 0; t < T; t++) {
            gdn_mixer.decode(&m, c, step, x + ((size_t)b * T + t) * g.d_model, params);
            const float *want = out + ((size_t)b * T + t) * g.d_model;
            double num = 0, den = 0;
            for (int i = 0; i < g.d_model; i++) num += (step[i] - want[i]) * (step[i] - want[i]), den += want[i] * want[i];
            worst = test_worst(worst, sqrt(num / den));
            cr_assert_eq((double)gdn_mixer.cache_bytes(c), fixed, "cache bytes %zu, formula %.0f",
                         gdn_mixer.cache_bytes(c), fixed);
        }
        cr_expect(worst < 1e-5, "sequence %d: decode vs forward relative error %.3g", b, worst);
        gdn_mixer.cache_free(c);
    }
    // the formula itself: state + conv state, fp32
    cr_assert_eq(fixed, 4.0 * (4 * 4 * 5 + 3 * (2 * 2 * 4 + 4 * 5)));
    free(params); free(x); free(out); free(act);
}

Test(gdn, mixing_matrix_reproduces_core_output) {
    int B = 2, T = GDN_CHUNK + 7;
    ModelGeometry g;
    make_geom(&g, 16, 1, 2, 4, 5, 4);
    Mixer m = {.ops = &gdn_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 9);
    size_t nx = (size_t)B * T * g.d_model;
    float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, nx, 1.0f);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * gdn_mixer.act_floats(&g, 0, B, T));
    gdn_mixer.forward(&m, out, act, x, params, B, T);
    int H = gdn_mixer.n_mix_heads(&g, 0), dv = 5;
    cr_assert_eq(H, 2);
    float *A = mallocCheck(sizeof(float) * (size_t)H * T * T);
    gdn_mixer.mixing_matrix(&m, A, act, params, T);
    // sequence 0's core inputs lead act; its core output by the chunked form
    DeltaDims z = {.B = 1, .T = T, .Hk = 1, .Hv = H, .dk = 4, .dv = dv, .g_dim = 1, .qk_stride = 4, .v_stride = H * dv};
    DeltaProbe p;
    delta_probe_carve(&p, act, &z);
    float *o = mallocCheck(sizeof(float) * (size_t)T * H * dv), *Av = callocCheck((size_t)T * H * dv, sizeof(float));
    delta_rule_chunked(o, NULL, p.q, p.k, p.v, p.beta, p.g, &z, GDN_CHUNK);
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++) {
            for (int s = t + 1; s < T; s++) cr_assert_eq(A[((size_t)h * T + t) * T + s], 0.0f, "not causal");
            for (int s = 0; s <= t; s++)
                for (int e = 0; e < dv; e++)
                    Av[((size_t)t * H + h) * dv + e] += A[((size_t)h * T + t) * T + s] * p.v[((size_t)s * H + h) * dv + e];
        }
    double e = test_rel_err(Av, o, (size_t)T * H * dv);
    cr_expect(e < 1e-5, "A v vs o: relative error %.3g", e);

    // the state after the last token, and the gates
    float *S = mallocCheck(sizeof(float) * 2 * 4 * dv), *Sref = mallocCheck(sizeof(float) * H * 4 * dv);
    int times[2] = {T - 1, 3};
    gdn_states_at(&m, S, act, T, 1, times, 2);
    memset(Sref, 0, sizeof(float) * H * 4 * dv);
    delta_rule_recurrent(o, Sref, p.q, p.k, p.v, p.beta, p.g, &z);
    cr_expect(test_rel_err(S, Sref + 4 * dv, 4 * dv) < 1e-6, "state after the last token");
    float *beta = mallocCheck(sizeof(float) * T * H), *alpha = mallocCheck(sizeof(float) * T * H);
    gdn_gates(&m, beta, alpha, act, T);
    for (int i = 0; i < T * H; i++) cr_assert(beta[i] > 0 && beta[i] < 1 && alpha[i] > 0 && alpha[i] < 1);
    free(params); free(x); free(out); free(act); free(A); free(o); free(Av); free(S); free(Sref); free(beta); free(alpha);
}

Test(gdn, results_do_not_depend_on_thread_count) {
    int B = 3, T = 21;
    ModelGeometry g;
    make_geom(&g, 16, 2, 4, 4, 4, 4);
    Mixer m = {.ops = &gdn_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 10);
    size_t np = mixer_n_params(&gdn_mixer, &g, 0), nx = (size_t)B * T * g.d_model, na = gdn_mixer.act_floats(&g, 0, B, T);
    float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, nx, 1.0f);
    float *res[2][3];
    int saved = omp_get_max_threads();
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run ? 2 : 1);
        float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * na);
        float *dp = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
        gdn_mixer.forward(&m, out, act, x, params, B, T);
        gdn_mixer.backward(&m, dx, dp, x, act, x, params, B, T);
        res[run][0] = out, res[run][1] = dp, res[run][2] = dx;
        free(act);
    }
    omp_set_num_threads(saved);
    cr_expect(!memcmp(res[0][0], res[1][0], nx * sizeof(float)), "forward differs");
    cr_expect(!memcmp(res[0][1], res[1][1], np * sizeof(float)), "dparams differ");
    cr_expect(!memcmp(res[0][2], res[1][2], nx * sizeof(float)), "dx differs");
    for (int run = 0; run < 2; run++)
        for (int i = 0; i < 3; i++) free(res[run][i]);
    free(params); free(x);
}

// ---- golden values from an independent PyTorch implementation ----------------------------------------

Test(gdn, matches_pytorch_golden) {
    char key[96];
    SafeTensors st;
    test_golden_load(&st, "gdn.safetensors", "golden_gdn.py");
    int B = test_golden_int(&st, "gdn", "B"), T = test_golden_int(&st, "gdn", "T"), d = test_golden_int(&st, "gdn", "d_model");
    int Hk = test_golden_int(&st, "gdn", "Hk"), Hv = test_golden_int(&st, "gdn", "Hv"), dk = test_golden_int(&st, "gdn", "dk");
    int dv = test_golden_int(&st, "gdn", "dv"), K = test_golden_int(&st, "gdn", "K");
    ModelGeometry g;
    make_geom(&g, d, Hk, Hv, dk, dv, K);
    Mixer m = {.ops = &gdn_mixer, .g = &g, .layer = 0};
    size_t np = mixer_n_params(&gdn_mixer, &g, 0), nx = (size_t)B * T * d;
    float *params = mallocCheck(sizeof(float) * np), *dparams = callocCheck(np, sizeof(float));
    ParamTensor t[16];
    int n = gdn_mixer.param_tensors(&g, 0, t, 16);
    test_golden_params(params, &st, "gdn", t, n);
    int64_t sx[3] = {B, T, d}, so[3] = {T, Hv, dv};
    const float *x = test_golden(&st, "gdn", "x", 3, sx), *R = test_golden(&st, "gdn", "R", 3, sx);
    float *out = mallocCheck(sizeof(float) * nx), *dx = callocCheck(nx, sizeof(float));
    float *act = mallocCheck(sizeof(float) * gdn_mixer.act_floats(&g, 0, B, T));
    gdn_mixer.forward(&m, out, act, x, params, B, T);
    double e = test_rel_err(out, test_golden(&st, "gdn", "out", 3, sx), nx);
    cr_expect(e < 1e-5, "out: relative error %.3g", e);
    // the mixing matrix against the reference's pre-norm output of sequence 0: o_t = sum_s A_ts v_s
    const float *o_ref = test_golden(&st, "gdn", "o0", 3, so);
    DeltaDims z = {.B = 1, .T = T, .Hk = Hk, .Hv = Hv, .dk = dk, .dv = dv, .g_dim = 1};
    DeltaProbe p;
    delta_probe_carve(&p, act, &z);
    float *A = mallocCheck(sizeof(float) * (size_t)Hv * T * T), *Av = callocCheck((size_t)T * Hv * dv, sizeof(float));
    gdn_mixer.mixing_matrix(&m, A, act, params, T);
    for (int h = 0; h < Hv; h++)
        for (int t0 = 0; t0 < T; t0++)
            for (int s = 0; s < T; s++)
                for (int c = 0; c < dv; c++)
                    Av[((size_t)t0 * Hv + h) * dv + c] += A[((size_t)h * T + t0) * T + s] * p.v[((size_t)s * Hv + h) * dv + c];
    e = test_rel_err(Av, o_ref, (size_t)T * Hv * dv);
    cr_expect(e < 1e-5, "A v vs reference o: relative error %.3g", e);

    gdn_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    e = test_rel_err(dx, test_golden(&st, "gdn", "dx", 3, sx), nx);
    cr_expect(e < 1e-4, "dx: relative error %.3g", e);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "d%.47s", t[i].name);
        e = test_rel_err(dparams + t[i].offset, test_golden(&st, "gdn", key, t[i].ndim, t[i].shape), test_tensor_size(&t[i]));
        cr_expect(e < 1e-4, "%s: relative error %.3g", key, e);
    }
    free(params); free(dparams); free(out); free(dx); free(act); free(A); free(Av);
    st_free(&st);
}
