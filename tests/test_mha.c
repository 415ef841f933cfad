// test_mha.c: chapter 3's attention mixer (MHA / GQA / MQA, sliding-window layers) against
// finite differences, an independent triple-loop reference, the GQA = MHA-with-repeated-KV identity,
// its own cached decode, the KV-cache formula of common/kvcache, and PyTorch golden values.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "mathx.h"
#include "rng.h"
#include "safetensors.h"

// ---- helpers ------------------------------------------------------------------------------------

// A one-layer geometry, filled by hand so the test does not depend on geometry_init's defaults.
static void make_geom(ModelGeometry *g, int d, int H, int G, int dh) {
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "test gqa %d/%d", H, G);
    g->n_layers = 1;
    g->d_model = d;
    g->n_heads = H;
    g->n_kv_heads = G;
    g->head_dim = dh;
    g->vocab_size = 16;
    g->d_ff = 4 * d;
    g->max_seq_len = 64;
    g->attn = ATTN_GQA;
    g->rope_theta = 10000.0;
    g->dtype_bytes = 4;
    g->layer_kind[0] = LAYER_GLOBAL;
}

static void make_local(ModelGeometry *g, int W) {
    g->layer_kind[0] = LAYER_LOCAL;
    g->sliding_window = W;
}

// Parameter offsets by name, from the mixer's own description (what a model would use).
static size_t param_offset(const ModelGeometry *g, const char *name) {
    ParamTensor t[8];
    int n = gqa_mixer.param_tensors(g, 0, t, 8);
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return t[i].offset;
    cr_assert_fail("no parameter tensor '%s'", name);
    return 0;
}

// out (B,T,d) and optionally P (B,H,T,T) from one forward.
static void run_forward(const Mixer *m, float *out, float *P, const float *x, const float *params, int B, int T) {
    float *act = mallocCheck(sizeof(float) * gqa_mixer.act_floats(m->g, 0, B, T));
    gqa_mixer.forward(m, out, act, x, params, B, T);
    if (P) memcpy(P, act, sizeof(float) * (size_t)B * m->g->n_heads * T * T);   // P leads act (mha.c)
    free(act);
}

// ---- an independent reference: attention written out with plain loops, in double ------------------

// Half-split RoPE of one head vector (i, i + dh/2), written from the formula.
static void ref_rope(double *v, int pos, int dh, double theta) {
    for (int i = 0; i < dh / 2; i++) {
        double a = pos * pow(theta, -2.0 * i / dh), c = cos(a), s = sin(a);
        double x0 = v[i], x1 = v[i + dh / 2];
        v[i] = x0 * c - x1 * s;
        v[i + dh / 2] = x0 * s + x1 * c;
    }
}

// MHA (every head its own K and V) for one sequence x (T,d), keys i-W < j <= i (W = 0: causal).
// out (T,d), P (H,T,T).
static void ref_mha(double *out, double *P, const float *x, const float *wq, const float *wk,
                    const float *wv, const float *wo, int T, int d, int H, int dh, double theta, int W) {
    int D = H * dh;
    double *q = calloc((size_t)T * D, sizeof(double)), *k = calloc((size_t)T * D, sizeof(double));
    double *v = calloc((size_t)T * D, sizeof(double)), *o = calloc((size_t)T * D, sizeof(double));
    for (int t = 0; t < T; t++)
        for (int r = 0; r < D; r++)
            for (int c = 0; c < d; c++) {
                q[t * D + r] += (double)x[t * d + c] * wq[r * d + c];
                k[t * D + r] += (double)x[t * d + c] * wk[r * d + c];
                v[t * D + r] += (double)x[t * d + c] * wv[r * d + c];
            }
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            ref_rope(&q[t * D + h * dh], t, dh, theta);
            ref_rope(&k[t * D + h * dh], t, dh, theta);
        }
    for (int h = 0; h < H; h++)
        for (int i = 0; i < T; i++) {
            double *p = &P[(h * T + i) * T], mx = -INFINITY, sum = 0;
            for (int j = 0; j < T; j++) {
                int visible = j <= i && (W == 0 || j > i - W);
                double s = 0;
                for (int c = 0; c < dh; c++) s += q[i * D + h * dh + c] * k[j * D + h * dh + c];
                p[j] = visible ? s / sqrt((double)dh) : -INFINITY;
                if (p[j] > mx) mx = p[j];
            }
            for (int j = 0; j < T; j++) {
                p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - mx);
                sum += p[j];
            }
            for (int j = 0; j < T; j++) p[j] /= sum;
            for (int j = 0; j < T; j++)
                for (int c = 0; c < dh; c++) o[i * D + h * dh + c] += p[j] * v[j * D + h * dh + c];
        }
    for (int t = 0; t < T; t++)
        for (int r = 0; r < d; r++) {
            double s = 0;
            for (int c = 0; c < D; c++) s += o[t * D + c] * wo[r * D + c];
            out[t * d + r] = s;
        }
    free(q); free(k); free(v); free(o);
}

Test(mha, matches_triple_loop_reference) {
    // G = H (plain MHA), causal and with a window of 3
    int T = 9, d = 24, H = 3, dh = 8;
    for (int W = 0; W <= 3; W += 3) {
        ModelGeometry g;
        make_geom(&g, d, H, H, dh);
        if (W) make_local(&g, W);
        Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
        Rng rng;
        rng_seed(&rng, 11 + W);
        size_t np = mixer_n_params(&gqa_mixer, &g, 0);
        float *params = test_randn(&rng, np, 0.4f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
        float *out = mallocCheck(sizeof(float) * T * d), *P = mallocCheck(sizeof(float) * H * T * T);
        double *rout = mallocCheck(sizeof(double) * T * d), *rP = mallocCheck(sizeof(double) * H * T * T);
        run_forward(&m, out, P, x, params, 1, T);
        ref_mha(rout, rP, x, params + param_offset(&g, "wq"), params + param_offset(&g, "wk"),
                params + param_offset(&g, "wv"), params + param_offset(&g, "wo"), T, d, H, dh, g.rope_theta, W);
        for (int i = 0; i < T * d; i++)
            cr_assert(fabs(out[i] - rout[i]) <= 1e-5 * fmax(1.0, fabs(rout[i])), "W=%d out[%d]: %.9g vs %.9g", W,
                      i, (double)out[i], rout[i]);
        for (int i = 0; i < H * T * T; i++)
            cr_assert(fabs(P[i] - rP[i]) <= 1e-6, "W=%d P[%d]: %.9g vs %.9g", W, i, (double)P[i], rP[i]);
        free(params); free(x); free(out); free(P); free(rout); free(rP);
    }
}

// ---- GQA is MHA whose K/V heads are repeated (repeat_interleave) -----------------------------------

Test(mha, gqa_equals_mha_with_repeated_kv_heads) {
    int T = 10, d = 32, H = 4, dh = 8;
    for (int G = 1; G <= 2; G++) {
        ModelGeometry gg, gm;
        make_geom(&gg, d, H, G, dh);
        make_geom(&gm, d, H, H, dh);
        Mixer mg = {.ops = &gqa_mixer, .g = &gg, .layer = 0}, mm = {.ops = &gqa_mixer, .g = &gm, .layer = 0};
        Rng rng;
        rng_seed(&rng, 100 + G);
        float *pg = test_randn(&rng, mixer_n_params(&gqa_mixer, &gg, 0), 0.4f);
        float *pm = mallocCheck(sizeof(float) * mixer_n_params(&gqa_mixer, &gm, 0));
        // MHA weights: wq, wo copied; head h of wk/wv is the GQA's KV head h / (H/G)
        memcpy(pm + param_offset(&gm, "wq"), pg + param_offset(&gg, "wq"), sizeof(float) * H * dh * d);
        memcpy(pm + param_offset(&gm, "wo"), pg + param_offset(&gg, "wo"), sizeof(float) * d * H * dh);
        const char *kv[2] = {"wk", "wv"};
        for (int w = 0; w < 2; w++)
            for (int h = 0; h < H; h++)
                memcpy(pm + param_offset(&gm, kv[w]) + (size_t)h * dh * d,
                       pg + param_offset(&gg, kv[w]) + (size_t)(h / (H / G)) * dh * d, sizeof(float) * dh * d);
        float *x = test_randn(&rng, (size_t)2 * T * d, 1.0f);
        float *og = mallocCheck(sizeof(float) * 2 * T * d), *om = mallocCheck(sizeof(float) * 2 * T * d);
        float *Pg = mallocCheck(sizeof(float) * 2 * H * T * T), *Pm = mallocCheck(sizeof(float) * 2 * H * T * T);
        run_forward(&mg, og, Pg, x, pg, 2, T);
        run_forward(&mm, om, Pm, x, pm, 2, T);
        test_assert_close_scaled("out", og, om, (size_t)2 * T * d, 1e-6f);
        test_assert_close_scaled("P", Pg, Pm, (size_t)2 * H * T * T, 1e-6f);
        free(pg); free(pm); free(x); free(og); free(om); free(Pg); free(Pm);
    }
}

// ---- backward against central finite differences ---------------------------------------------------

static void gradcheck(int G, int W) {
    int B = 2, T = 5, d = 16, H = 4, dh = 4;
    omp_set_num_threads(1);   // ~2500 tiny forwards: thread start-up would cost more than the work
    ModelGeometry g;
    make_geom(&g, d, H, G, dh);
    if (W) make_local(&g, W);
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 7 + G + 10 * W);
    size_t np = mixer_n_params(&gqa_mixer, &g, 0), nx = (size_t)B * T * d;
    float *params = test_randn(&rng, np, 0.3f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * gqa_mixer.act_floats(&g, 0, B, T));
    float *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    gqa_mixer.forward(&m, out, act, x, params, B, T);
    gqa_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);

    ParamTensor t[8];
    int n = gqa_mixer.param_tensors(&g, 0, t, 8);
    for (int i = 0; i < n; i++) {
        size_t sz = (size_t)(t[i].shape[0] * t[i].shape[1]);
        double e = test_mixer_fd_rel_error(&m, params + t[i].offset, dparams + t[i].offset, sz, out, x, params, R, B, T);
        cr_expect(e < 1e-3, "G=%d W=%d d%s: relative error %.3g", G, W, t[i].name, e);
    }
    double e = test_mixer_fd_rel_error(&m, x, dx, nx, out, x, params, R, B, T);
    cr_expect(e < 1e-3, "G=%d W=%d dx: relative error %.3g", G, W, e);

    // backward accumulates: a second call adds the same gradient again
    float *dx2 = mallocCheck(sizeof(float) * nx);
    memcpy(dx2, dx, sizeof(float) * nx);
    gqa_mixer.backward(&m, dx2, dparams, R, act, x, params, B, T);
    for (size_t i = 0; i < nx; i++) cr_assert(fabsf(dx2[i] - 2 * dx[i]) <= 1e-5f * fmaxf(1, fabsf(dx[i])));
    free(params); free(x); free(R); free(out); free(act); free(dparams); free(dx); free(dx2);
}

Test(mha, gradcheck_mha) { gradcheck(4, 0); }
Test(mha, gradcheck_gqa) { gradcheck(2, 0); }
Test(mha, gradcheck_mqa) { gradcheck(1, 0); }
Test(mha, gradcheck_gqa_local_window) { gradcheck(2, 2); }

// ---- cached decode equals the full forward ---------------------------------------------------------

static void decode_matches_forward(int G, int W) {
    int T = 12, d = 32, H = 4, dh = 8;
    ModelGeometry g;
    make_geom(&g, d, H, G, dh);
    if (W) {
        make_local(&g, W);
        g.rope_local_theta = 500.0;   // a local layer with its own RoPE base (Gemma 3 style)
    }
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 31 + G + W);
    float *params = test_randn(&rng, mixer_n_params(&gqa_mixer, &g, 0), 0.4f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *full = mallocCheck(sizeof(float) * T * d), *step = mallocCheck(sizeof(float) * d);
    run_forward(&m, full, NULL, x, params, 1, T);
    MixerCache *c = gqa_mixer.cache_new(&m, T);
    cr_assert_eq(gqa_mixer.cache_bytes(c), 0);
    for (int t = 0; t < T; t++) {
        gqa_mixer.decode(&m, c, step, &x[t * d], params);
        for (int i = 0; i < d; i++)
            cr_assert(step[i] == full[t * d + i],   // one attention core: the same bits
                      "G=%d W=%d position %d dim %d: decode %.9g forward %.9g", G, W, t, i, (double)step[i],
                      (double)full[t * d + i]);
        int held = W && W < t + 1 ? W : t + 1;   // a local layer's ring buffer stops at W tokens
        cr_assert_eq(gqa_mixer.cache_bytes(c), (size_t)4 * 2 * G * dh * held);
    }
    gqa_mixer.cache_free(c);
    free(params); free(x); free(full); free(step);
}

Test(mha, decode_equals_forward_mha) { decode_matches_forward(4, 0); }
Test(mha, decode_equals_forward_gqa) { decode_matches_forward(2, 0); }
Test(mha, decode_equals_forward_mqa) { decode_matches_forward(1, 0); }
Test(mha, decode_equals_forward_local_w4) { decode_matches_forward(2, 4); }

// ---- masks: window >= T is causal; rows are distributions; masked cells are exactly 0 -------------

Test(mha, window_at_least_T_equals_causal) {
    int T = 8, d = 16, H = 2, G = 1, dh = 8;
    ModelGeometry gc;
    make_geom(&gc, d, H, G, dh);
    Mixer mc = {.ops = &gqa_mixer, .g = &gc, .layer = 0};
    Rng rng;
    rng_seed(&rng, 5);
    float *params = test_randn(&rng, mixer_n_params(&gqa_mixer, &gc, 0), 0.4f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *oc = mallocCheck(sizeof(float) * T * d), *ow = mallocCheck(sizeof(float) * T * d);
    float *Pc = mallocCheck(sizeof(float) * H * T * T), *Pw = mallocCheck(sizeof(float) * H * T * T);
    run_forward(&mc, oc, Pc, x, params, 1, T);
    for (int W = T; W <= T + 5; W += 5) {
        ModelGeometry gw = gc;
        make_local(&gw, W);
        Mixer mw = {.ops = &gqa_mixer, .g = &gw, .layer = 0};
        run_forward(&mw, ow, Pw, x, params, 1, T);
        cr_assert(!memcmp(oc, ow, sizeof(float) * T * d), "W=%d: output differs from causal", W);
        cr_assert(!memcmp(Pc, Pw, sizeof(float) * H * T * T), "W=%d: P differs from causal", W);
    }
    // a local layer uses rope_local_theta: the same as a global layer whose rope_theta is that value
    ModelGeometry gl = gc, gt = gc;
    make_local(&gl, T);
    gl.rope_local_theta = 50.0;
    gt.rope_theta = 50.0;
    Mixer ml = {.ops = &gqa_mixer, .g = &gl, .layer = 0}, mt = {.ops = &gqa_mixer, .g = &gt, .layer = 0};
    run_forward(&ml, ow, NULL, x, params, 1, T);
    run_forward(&mt, oc, NULL, x, params, 1, T);
    cr_assert(!memcmp(oc, ow, sizeof(float) * T * d), "local layer does not use rope_local_theta");
    free(params); free(x); free(oc); free(ow); free(Pc); free(Pw);
}

Test(mha, attention_rows_are_masked_distributions) {
    int T = 10, d = 16, H = 4, G = 2, dh = 4;
    for (int W = 0; W <= 3; W += 3) {
        ModelGeometry g;
        make_geom(&g, d, H, G, dh);
        if (W) make_local(&g, W);
        Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
        Rng rng;
        rng_seed(&rng, 3);
        float *params = test_randn(&rng, mixer_n_params(&gqa_mixer, &g, 0), 1.0f);
        float *x = test_randn(&rng, (size_t)T * d, 1.0f), *P = mallocCheck(sizeof(float) * H * T * T);
        float *A = mallocCheck(sizeof(float) * H * T * T);
        mha_attention_probs(P, x, params, &m, T);
        cr_assert_eq(gqa_mixer.n_mix_heads(&g, 0), H);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double sum = 0;
                for (int j = 0; j < T; j++) {
                    float p = P[(h * T + i) * T + j];
                    int visible = j <= i && (W == 0 || j > i - W);
                    if (visible)
                        cr_assert(p > 0 && p <= 1, "W=%d h%d (%d,%d) visible but p=%g", W, h, i, j, (double)p);
                    else
                        cr_assert(p == 0.0f, "W=%d h%d (%d,%d) masked but p=%g", W, h, i, j, (double)p);
                    sum += p;
                }
                cr_assert(fabs(sum - 1) < 1e-5, "W=%d h%d row %d sums to %.9g", W, h, i, sum);
            }
        // mixing_matrix reads the same P from a batch-2 forward's act (batch 0)
        float *x2 = mallocCheck(sizeof(float) * 2 * T * d), *out = mallocCheck(sizeof(float) * 2 * T * d);
        memcpy(x2, x, sizeof(float) * T * d);
        rng_fill_normal(&rng, x2 + T * d, T * d, 1.0f);
        float *act = mallocCheck(sizeof(float) * gqa_mixer.act_floats(&g, 0, 2, T));
        gqa_mixer.forward(&m, out, act, x2, params, 2, T);
        gqa_mixer.mixing_matrix(&m, A, act, params, T);
        cr_assert(!memcmp(A, P, sizeof(float) * H * T * T), "mixing_matrix is not batch 0's P");
        free(params); free(x); free(P); free(A); free(x2); free(out); free(act);
    }
}

// ---- the cache holds what the formula says --------------------------------------------------------

Test(mha, cache_bytes_equal_kvcache_formula) {
    int cfg[3][3] = {{4, 4, 8}, {4, 2, 8}, {8, 1, 4}};   // H, G, dh
    for (int k = 0; k < 3; k++) {
        ModelGeometry g;
        make_geom(&g, 32, cfg[k][0], cfg[k][1], cfg[k][2]);
        Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
        float *params = callocCheck(mixer_n_params(&gqa_mixer, &g, 0), sizeof(float));
        float *x = callocCheck(32, sizeof(float)), out[32];
        MixerCache *c = gqa_mixer.cache_new(&m, 20);
        for (int n = 1; n <= 20; n++) {
            gqa_mixer.decode(&m, c, out, x, params);
            double want = kvcache_total_bytes(&g, n, 1);
            cr_assert_eq((double)gqa_mixer.cache_bytes(c), want, "%s after %d tokens: %zu bytes, formula %.0f",
                         mha_kind_name(&g), n, gqa_mixer.cache_bytes(c), want);
        }
        gqa_mixer.cache_free(c);
        free(params); free(x);
    }
}

Test(mha, names_and_parameter_shapes) {
    ModelGeometry g;
    make_geom(&g, 32, 8, 2, 4);
    cr_assert_str_eq(mha_kind_name(&g), "GQA");
    g.n_kv_heads = 8;
    cr_assert_str_eq(mha_kind_name(&g), "MHA");
    g.n_kv_heads = 1;
    cr_assert_str_eq(mha_kind_name(&g), "MQA");
    ParamTensor t[8];
    cr_assert_eq(gqa_mixer.param_tensors(&g, 0, t, 8), 4);
    int64_t want[4][2] = {{32, 32}, {4, 32}, {4, 32}, {32, 32}};
    const char *names[4] = {"wq", "wk", "wv", "wo"};
    size_t off = 0;
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(t[i].name, names[i]);
        cr_assert(t[i].ndim == 2 && t[i].shape[0] == want[i][0] && t[i].shape[1] == want[i][1], "%s shape", names[i]);
        cr_assert_eq(t[i].offset, off);
        off += (size_t)(want[i][0] * want[i][1]);
    }
    cr_assert_eq(mixer_n_params(&gqa_mixer, &g, 0), off);
}

// ---- the same bits whatever the thread count --------------------------------------------------------

Test(mha, thread_count_determinism) {
    int B = 3, T = 7, d = 16, H = 4, G = 2, dh = 4;
    ModelGeometry g;
    make_geom(&g, d, H, G, dh);
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 9);
    size_t np = mixer_n_params(&gqa_mixer, &g, 0), nx = (size_t)B * T * d, na = gqa_mixer.act_floats(&g, 0, B, T);
    float *params = test_randn(&rng, np, 0.3f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *res[2][3];
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(r == 0 ? 1 : 3);
        float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * na);
        float *dp = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
        gqa_mixer.forward(&m, out, act, x, params, B, T);
        gqa_mixer.backward(&m, dx, dp, R, act, x, params, B, T);
        res[r][0] = out; res[r][1] = dp; res[r][2] = dx;
        free(act);
    }
    cr_assert(!memcmp(res[0][0], res[1][0], sizeof(float) * nx), "forward depends on thread count");
    cr_assert(!memcmp(res[0][1], res[1][1], sizeof(float) * np), "dparams depend on thread count");
    cr_assert(!memcmp(res[0][2], res[1][2], sizeof(float) * nx), "dx depends on thread count");
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 3; k++) free(res[r][k]);
    free(params); free(x); free(R);
}

// ---- PyTorch golden values (tests/reference/golden_attention.py) -----------------------------------

static void golden_case(const SafeTensors *st, const char *cs, int B, int T, int d, int H, int G, int dh,
                        double theta, int W) {
    // the file describes the same case the test builds
    cr_assert(test_golden_int(st, cs, "B") == B && test_golden_int(st, cs, "T") == T && test_golden_int(st, cs, "d_model") == d &&
              test_golden_int(st, cs, "n_heads") == H && test_golden_int(st, cs, "n_kv_heads") == G &&
              test_golden_int(st, cs, "head_dim") == dh && test_golden_int(st, cs, "sliding_window") == W &&
              test_golden_int(st, cs, "rope_theta") == (int)theta, "%s: golden geometry differs from the test's", cs);
    ModelGeometry g;
    make_geom(&g, d, H, G, dh);
    g.rope_theta = theta;
    if (W) make_local(&g, W);
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    size_t np = mixer_n_params(&gqa_mixer, &g, 0), nx = (size_t)B * T * d;
    float *params = mallocCheck(sizeof(float) * np);
    ParamTensor t[8];
    int n = gqa_mixer.param_tensors(&g, 0, t, 8);
    for (int i = 0; i < n; i++)
        memcpy(params + t[i].offset, test_golden(st, cs, t[i].name, 2, t[i].shape),
               sizeof(float) * (size_t)(t[i].shape[0] * t[i].shape[1]));
    int64_t xs[3] = {B, T, d}, ps[4] = {B, H, T, T};
    const float *x = test_golden(st, cs, "x", 3, xs), *R = test_golden(st, cs, "R", 3, xs);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * gqa_mixer.act_floats(&g, 0, B, T));
    gqa_mixer.forward(&m, out, act, x, params, B, T);
    test_assert_close_scaled("golden out", out, test_golden(st, cs, "out", 3, xs), nx, 1e-5f);
    test_assert_close_scaled("golden P", act, test_golden(st, cs, "P", 4, ps), (size_t)B * H * T * T, 1e-5f);   // P leads act

    float *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    gqa_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    test_assert_close_scaled("golden dx", dx, test_golden(st, cs, "dx", 3, xs), nx, 1e-5f);
    for (int i = 0; i < n; i++) {
        char gname[64];
        snprintf(gname, sizeof gname, "d%.40s", t[i].name);
        test_assert_close_scaled(gname, dparams + t[i].offset, test_golden(st, cs, gname, 2, t[i].shape),
                     (size_t)(t[i].shape[0] * t[i].shape[1]), 1e-5f);
    }
    free(params); free(out); free(act); free(dparams); free(dx);
}

Test(mha, pytorch_golden) {
    char path[1200], err[1200];
    snprintf(path, sizeof path, "%s/tests/golden/attention.safetensors", test_root());
    SafeTensors st;
    cr_assert(st_load(&st, path, err, sizeof err) == 0, "%s (run /usr/bin/python3 tests/reference/golden_attention.py)", err);
    golden_case(&st, "gqa", 1, 8, 32, 4, 2, 8, 10000.0, 0);
    golden_case(&st, "mha", 1, 8, 32, 4, 4, 8, 10000.0, 0);
    golden_case(&st, "mqa_local", 2, 8, 32, 4, 1, 8, 100.0, 3);
    st_free(&st);
}

// The benchmark's shortcut: a cache filled with random K/V counts as holding those tokens (the formula's
// bytes, min(n, W) on a local layer), and decoding after it still works and stays finite.
Test(mha, fill_random_holds_the_formulas_tokens) {
    for (int W = 0; W <= 5; W += 5) {
        ModelGeometry g;
        make_geom(&g, 16, 4, 2, 4);
        if (W) make_local(&g, W);
        Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
        Rng r;
        rng_seed(&r, 3);
        float *params = test_randn(&r, mixer_n_params(&gqa_mixer, &g, 0), 0.2f), *x = test_randn(&r, 16, 1.0f), out[16];
        MixerCache *c = gqa_mixer.cache_new(&m, 40);
        mha_cache_fill_random(c, 20, &r);
        cr_expect_eq(gqa_mixer.cache_bytes(c), (size_t)kvcache_total_bytes(&g, 20, 1), "W %d", W);
        gqa_mixer.decode(&m, c, out, x, params);
        cr_expect_eq(gqa_mixer.cache_bytes(c), (size_t)kvcache_total_bytes(&g, 21, 1), "W %d after decode", W);
        for (int i = 0; i < 16; i++) cr_expect(isfinite(out[i]));
        gqa_mixer.cache_free(c);
        free(params);
        free(x);
    }
}
