// test_mamba2.c: chapter 10's Mamba-2 (SSD) mixer against PyTorch golden values (forward, pre-norm output,
// every gradient), finite differences, decode against the forward, the decode cache (state + conv
// state) against the KV-cache formula, the mixing matrix against the pre-norm output, the decay matrix
// and profile, and the reference initialisation ranges.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "10_hybrids/mamba2.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "rng.h"
#include "safetensors.h"

// n_layers layers, all Mamba-2: H heads of P, G groups of state N, conv K; fp32 cache and state.
static void make_geom(ModelGeometry *g, int n_layers, int d, int H, int P, int G, int N, int K) {
    geometry_init(g, "test mamba2", n_layers, d, 2, 2);
    for (int l = 0; l < n_layers; l++) g->layer_kind[l] = LAYER_LINEAR;
    mamba2_geometry_set(g, H, P, G, N, K);
    g->dtype_bytes = 4;
    g->state_dtype_bytes = 4;
    char why[256];
    cr_assert(geometry_validate(g, why, sizeof why), "geometry: %s", why);
}

// The post-conv x (T, H*P) of sequence 0, recomputed here in double from in_proj and conv1d:
// xs_t = silu(sum_j conv[c][j] * (x in_proj^T)[t-(K-1)+j][HP + c]) for the first HP conv channels.
static double *post_conv_x(const float *x, const float *params, const ParamTensor *t, int n, int T, int d, int HP,
                           int K) {
    const float *in = params + test_find_param(t, n, "in_proj")->offset, *cw = params + test_find_param(t, n, "conv1d")->offset;
    double *xs = mallocCheck(sizeof(double) * (size_t)T * HP);
    for (int r = 0; r < T; r++)
        for (int c = 0; c < HP; c++) {
            double p = 0;
            for (int j = 0; j < K; j++) {
                int s = r - (K - 1) + j;
                if (s < 0) continue;
                double a = 0;
                for (int i = 0; i < d; i++) a += (double)x[(size_t)s * d + i] * in[(size_t)(HP + c) * d + i];
                p += cw[(size_t)c * K + j] * a;
            }
            xs[(size_t)r * HP + c] = p / (1 + exp(-p));
        }
    return xs;
}

// sum_s A[h][t][s] xs_s must equal the pre-norm output y_t (batch 0 rows of want).
static void check_mixing_matrix(const Mixer *m, const float *act, const float *params, const float *want,
                                const double *xs, int T, int H, int P) {
    float *A = mallocCheck(sizeof(float) * (size_t)H * T * T);
    cr_assert_eq(mamba2_mixer.n_mix_heads(m->g, m->layer), H);
    mamba2_mixer.mixing_matrix(m, A, act, params, T);
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++) {
            for (int s = t + 1; s < T; s++) cr_assert_eq(A[((size_t)h * T + t) * T + s], 0.0f, "causal");
            for (int p = 0; p < P; p++) {
                double acc = 0;
                for (int s = 0; s <= t; s++) acc += (double)A[((size_t)h * T + t) * T + s] * xs[(size_t)s * H * P + h * P + p];
                float w = want[(size_t)t * H * P + h * P + p];
                cr_assert(fabs(acc - w) < 2e-5 * fmax(1, fabs(w)), "A x: h %d t %d p %d: %g vs %g", h, t, p, acc, (double)w);
            }
        }
    free(A);
}

// ---- golden values from an independent PyTorch implementation (tests/reference/golden_linear.py) ---

static void golden_case(const SafeTensors *st, const char *cs) {
    int B = test_golden_int(st, cs, "B"), T = test_golden_int(st, cs, "T"), d = test_golden_int(st, cs, "d_model");
    int H = test_golden_int(st, cs, "heads"), P = test_golden_int(st, cs, "head_dim"), K = test_golden_int(st, cs, "conv");
    ModelGeometry g;
    make_geom(&g, 2, d, H, P, test_golden_int(st, cs, "groups"), test_golden_int(st, cs, "state"), K);
    Mixer m = {.ops = &mamba2_mixer, .g = &g, .layer = 1};
    size_t np = mixer_n_params(&mamba2_mixer, &g, 1), nx = (size_t)B * T * d, HP = (size_t)H * P;
    float *params = mallocCheck(sizeof(float) * np), *dparams = callocCheck(np, sizeof(float));
    ParamTensor t[8];
    int n = mamba2_mixer.param_tensors(&g, 1, t, 8);
    cr_assert_eq(n, 7);
    test_golden_params(params, st, cs, t, n);
    int64_t sx[3] = {B, T, d}, sy[3] = {B, T, (int64_t)HP};
    const float *x = test_golden(st, cs, "x", 3, sx), *R = test_golden(st, cs, "R", 3, sx), *gout = test_golden(st, cs, "out", 3, sx);
    const float *gy = test_golden(st, cs, "y", 3, sy);

    float *out = mallocCheck(sizeof(float) * nx), *dx = callocCheck(nx, sizeof(float));
    float *act = mallocCheck(sizeof(float) * mamba2_mixer.act_floats(&g, 1, B, T));
    mamba2_mixer.forward(&m, out, act, x, params, B, T);
    test_assert_close("out", out, gout, nx, 1e-5f);
    mamba2_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    test_assert_close("dx", dx, test_golden(st, cs, "dx", 3, sx), nx, 1e-4f);
    test_golden_dparams(st, cs, dparams, t, n, 1e-4f);
    double *xs = post_conv_x(x, params, t, n, T, d, (int)HP, K);
    check_mixing_matrix(&m, act, params, gy, xs, T, H, P);

    // decode, every sequence: equals PyTorch's (recurrent) outputs; the cache never grows
    test_decode_fixed_state(&m, params, x, gout, B, T, 1e-5f);
    free(params), free(dparams), free(out), free(dx), free(act), free(xs);
}

Test(mamba2, matches_pytorch_golden) {
    SafeTensors st;
    test_golden_load(&st, "linear.safetensors", "golden_linear.py");
    golden_case(&st, "mamba2_a");
    golden_case(&st, "mamba2_b");
    st_free(&st);
}

// ---- backward against central finite differences ---------------------------------------------------

Test(mamba2, backward_matches_finite_differences) {
    int B = 2, T = 19;   // T > DECAY_CHUNK: the state crosses a chunk boundary
    ModelGeometry g;
    make_geom(&g, 1, 8, 4, 3, 2, 3, 3);   // 2 heads per group: shared B, C gradients
    Mixer m = {.ops = &mamba2_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 21);
    size_t np = mixer_n_params(&mamba2_mixer, &g, 0), nx = (size_t)B * T * g.d_model;
    float *params = mallocCheck(sizeof(float) * np), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    mamba2_mixer.init(&m, params, &rng);
    ParamTensor t[8];
    int n = mamba2_mixer.param_tensors(&g, 0, t, 8);
    // larger weights than the init so every path carries gradient; dt_bias near -2.5 so decays are clear but not extreme
    const ParamTensor *in = test_find_param(t, n, "in_proj"), *out_p = test_find_param(t, n, "out_proj");
    rng_fill_normal(&rng, params + in->offset, (long)test_tensor_size(in), 0.3f);
    rng_fill_normal(&rng, params + out_p->offset, (long)test_tensor_size(out_p), 0.5f);
    const ParamTensor *Dp = test_find_param(t, n, "D"), *nw = test_find_param(t, n, "norm"), *db = test_find_param(t, n, "dt_bias");
    for (int k = 0; k < Dp->shape[0]; k++) params[Dp->offset + k] = 1.0f + 0.5f * rng_normal(&rng);
    for (int k = 0; k < nw->shape[0]; k++) params[nw->offset + k] = 1.0f + 0.2f * rng_normal(&rng);
    for (int k = 0; k < db->shape[0]; k++) params[db->offset + k] = -2.5f + 0.3f * rng_normal(&rng);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * mamba2_mixer.act_floats(&g, 0, B, T));
    float *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    mamba2_mixer.forward(&m, out, act, x, params, B, T);
    mamba2_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    // The helper's step is 1e-2; softplus, exp(Delta A), SiLU and the group norm make the central
    // difference's truncation error about 2e-3 here (it falls as step^2: 1e-4 at step 1e-3). A wrong
    // term is off by far more; the golden test checks every gradient to 1e-4.
    for (int i = 0; i < n; i++) {
        double e = test_mixer_fd_rel_error(&m, params + t[i].offset, dparams + t[i].offset, test_tensor_size(&t[i]), out, x,
                                           params, R, B, T);
        cr_expect(e < 5e-3, "d%s: relative error %.3g", t[i].name, e);
    }
    double e = test_mixer_fd_rel_error(&m, x, dx, nx, out, x, params, R, B, T);
    cr_expect(e < 5e-3, "dx: relative error %.3g", e);

    // backward accumulates: a second call adds the same gradient again
    float *dx2 = mallocCheck(sizeof(float) * nx), *dp2 = mallocCheck(sizeof(float) * np);
    memcpy(dx2, dx, sizeof(float) * nx);
    memcpy(dp2, dparams, sizeof(float) * np);
    mamba2_mixer.forward(&m, out, act, x, params, B, T);
    mamba2_mixer.backward(&m, dx2, dp2, R, act, x, params, B, T);
    for (size_t i = 0; i < nx; i++) cr_assert(fabsf(dx2[i] - 2 * dx[i]) <= 1e-5f * fmaxf(1, fabsf(dx[i])));
    for (size_t i = 0; i < np; i++) cr_assert(fabsf(dp2[i] - 2 * dparams[i]) <= 1e-5f * fmaxf(1, fabsf(dparams[i])));
    free(params), free(x), free(R), free(out), free(act), free(dparams), free(dx), free(dx2), free(dp2);
}

// ---- decode, cache accounting, decay, init --------------------------------------------------------------

Test(mamba2, decode_equals_forward_and_cache_is_the_formula) {
    int T = 40, d = 32, H = 4, P = 8, G = 2, N = 6, K = 4;
    ModelGeometry g;
    make_geom(&g, 4, d, H, P, G, N, K);
    g.layer_kind[2] = LAYER_GLOBAL;   // a hybrid: three Mamba-2 layers and one attention layer
    Mixer m = {.ops = &mamba2_mixer, .g = &g, .layer = 1};
    Rng rng;
    rng_seed(&rng, 22);
    size_t np = mixer_n_params(&mamba2_mixer, &g, 1), nx = (size_t)T * d;
    float *params = mallocCheck(sizeof(float) * np), *x = test_randn(&rng, nx, 1.0f);
    mamba2_mixer.init(&m, params, &rng);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * mamba2_mixer.act_floats(&g, 1, 1, T));
    mamba2_mixer.forward(&m, out, act, x, params, 1, T);
    MixerCache *c = mamba2_mixer.cache_new(&m, T);
    float step[32];
    double formula = kvcache_fixed_bytes(&g) / geometry_count(&g, LAYER_LINEAR);
    cr_assert_eq(formula, 4.0 * (H * N * P + (K - 1) * (H * P + 2 * G * N)));   // state + conv state, fp32
    for (int t = 0; t < T; t++) {
        mamba2_mixer.decode(&m, c, step, x + (size_t)t * d, params);
        test_assert_close("decode", step, out + (size_t)t * d, (size_t)d, 1e-5f);
        cr_assert_eq((double)mamba2_mixer.cache_bytes(c), formula, "measured cache bytes equal the formula");
    }
    mamba2_mixer.cache_free(c);

    // decay matrix and profile of the same input: products of per-token factors in (0, 1)
    float *D = mallocCheck(sizeof(float) * (size_t)H * T * T), *prof = mallocCheck(sizeof(float) * (size_t)H * T);
    mamba2_decay_matrix(D, &m, act, T);
    mamba2_decay_profile(prof, &m, x, params, T);
    for (int h = 0; h < H; h++) {
        const float *Dh = D + (size_t)h * T * T;
        for (int t = 0; t < T; t++) {
            cr_assert_eq(Dh[t * T + t], 1.0f);
            for (int s = t + 1; s < T; s++) cr_assert_eq(Dh[t * T + s], 0.0f);
            for (int s = 1; s <= t; s++) {
                cr_assert(Dh[t * T + s - 1] < Dh[t * T + s] && Dh[t * T + s - 1] > 0.0f, "decays with distance");
                // exp(G_t - G_s) = exp(G_t - G_u) exp(G_u - G_s) for s <= u <= t
                float chain = Dh[t * T + s] * Dh[s * T + s - 1];
                cr_assert(fabsf(chain - Dh[t * T + s - 1]) < 1e-5f, "decay factorises");
            }
        }
        for (int r = 0; r < T; r++)
            cr_assert(fabsf(prof[(size_t)h * T + r] - Dh[(T - 1) * T + (T - 1 - r)]) < 1e-6f, "profile = last row");
    }
    free(D), free(prof), free(params), free(x), free(out), free(act);
}

Test(mamba2, init_follows_the_reference) {
    ModelGeometry g;
    make_geom(&g, 2, 16, 8, 4, 1, 4, 4);
    Mixer m = {.ops = &mamba2_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 23);
    size_t np = mixer_n_params(&mamba2_mixer, &g, 0);
    float *p = mallocCheck(sizeof(float) * np), *p2 = mallocCheck(sizeof(float) * np);
    mamba2_mixer.init(&m, p, &rng);
    rng_seed(&rng, 23);
    mamba2_mixer.init(&m, p2, &rng);
    cr_assert(memcmp(p, p2, sizeof(float) * np) == 0, "deterministic given the rng");
    ParamTensor t[8];
    int n = mamba2_mixer.param_tensors(&g, 0, t, 8);
    const ParamTensor *A = test_find_param(t, n, "A_log"), *db = test_find_param(t, n, "dt_bias"), *D = test_find_param(t, n, "D");
    for (int h = 0; h < 8; h++) {
        float a = expf(p[A->offset + h]), u = p[db->offset + h], dt = u > 20 ? u : log1pf(expf(u));
        cr_assert(a >= 1.0f - 1e-5f && a <= 16.0f + 1e-4f, "A %g in [1, 16]", (double)a);
        cr_assert(dt >= 1e-3f * 0.999f && dt <= 0.1f * 1.001f, "softplus(dt_bias) %g in [1e-3, 1e-1]", (double)dt);
        cr_assert_eq(p[D->offset + h], 1.0f);
    }
    free(p), free(p2);
}

Test(mamba2, results_do_not_depend_on_thread_count) {
    int B = 3, T = 21;
    ModelGeometry g;
    make_geom(&g, 1, 16, 4, 4, 2, 4, 4);
    Mixer m = {.ops = &mamba2_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 24);
    size_t np = mixer_n_params(&mamba2_mixer, &g, 0), nx = (size_t)B * T * g.d_model, na = mamba2_mixer.act_floats(&g, 0, B, T);
    float *params = mallocCheck(sizeof(float) * np), *x = test_randn(&rng, nx, 1.0f);
    mamba2_mixer.init(&m, params, &rng);
    float *out[2], *dx[2], *dp[2], *act = mallocCheck(sizeof(float) * na);
    int threads = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k == 0 ? 1 : 3);
        out[k] = mallocCheck(sizeof(float) * nx), dx[k] = callocCheck(nx, sizeof(float)), dp[k] = callocCheck(np, sizeof(float));
        mamba2_mixer.forward(&m, out[k], act, x, params, B, T);
        mamba2_mixer.backward(&m, dx[k], dp[k], x, act, x, params, B, T);
    }
    omp_set_num_threads(threads);
    cr_assert(memcmp(out[0], out[1], sizeof(float) * nx) == 0, "forward");
    cr_assert(memcmp(dx[0], dx[1], sizeof(float) * nx) == 0, "dx");
    cr_assert(memcmp(dp[0], dp[1], sizeof(float) * np) == 0, "dparams");
    for (int k = 0; k < 2; k++) free(out[k]), free(dx[k]), free(dp[k]);
    free(params), free(x), free(act);
}
