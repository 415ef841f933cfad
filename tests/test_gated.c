// test_gated.c: chapter 8's gated attention (Qwen3-Next) against PyTorch golden values (forward,
// attention weights, gate values, gradients, decode), finite differences, its own cached decode, the
// KV-cache formula, the ungated twin = gqa_mixer identity, and what partial RoPE leaves alone.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "08_gated/gated.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "mathx.h"
#include "rng.h"
#include "safetensors.h"

// ---- helpers ------------------------------------------------------------------------------------

// A one-layer geometry filled by hand; W > 0 makes the layer local (sliding window W).
static void make_geom(ModelGeometry *g, int d, int H, int G, int dh, int gate, int norm, double frac, double theta,
                      int W) {
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "test gated");
    g->n_layers = 1;
    g->d_model = d;
    g->n_heads = H;
    g->n_kv_heads = G;
    g->head_dim = dh;
    g->vocab_size = 16;
    g->d_ff = 4 * d;
    g->max_seq_len = 64;
    g->attn = ATTN_GQA;
    g->rope_theta = theta;
    g->dtype_bytes = 4;
    g->attn_output_gate = gate;
    g->qk_norm = norm;
    g->partial_rotary_factor = frac;
    if (W) {
        g->layer_kind[0] = LAYER_LOCAL;
        g->sliding_window = W;
    }
    char why[256];
    cr_assert(geometry_validate(g, why, sizeof why), "test geometry: %s", why);
}

// Random parameters: matrices N(0, std^2); norm weights away from their start (0 or 1) so they matter.
static float *random_params(const ModelGeometry *g, Rng *r, float std) {
    float *p = test_randn(r, mixer_n_params(&gated_mixer, g, 0), std);
    ParamTensor t[8];
    int n = gated_mixer.param_tensors(g, 0, t, 8);
    for (int i = 0; i < n; i++)
        if (t[i].ndim == 1)
            for (int k = 0; k < t[i].shape[0]; k++)
                p[t[i].offset + k] = (g->qk_norm == QK_NORM_RMS ? 1.0f : 0.0f) + 0.2f * rng_normal(r);
    return p;
}

static void run_forward(const Mixer *m, float *out, float *act, const float *x, const float *params, int B, int T) {
    m->ops->forward(m, out, act, x, params, B, T);
}

static float *new_act(const Mixer *m, int B, int T) { return mallocCheck(sizeof(float) * m->ops->act_floats(m->g, 0, B, T)); }

// ---- golden values from an independent PyTorch implementation (tests/reference/golden_gated.py) ----

static void golden_case(const SafeTensors *st, const char *cs) {
    int B = atoi(test_golden_meta(st, cs, "B")), T = atoi(test_golden_meta(st, cs, "T")), d = atoi(test_golden_meta(st, cs, "d_model"));
    int H = atoi(test_golden_meta(st, cs, "n_heads")), dh = atoi(test_golden_meta(st, cs, "head_dim"));
    ModelGeometry g;
    make_geom(&g, d, H, atoi(test_golden_meta(st, cs, "n_kv_heads")), dh, atoi(test_golden_meta(st, cs, "attn_output_gate")),
              atoi(test_golden_meta(st, cs, "qk_norm")), atof(test_golden_meta(st, cs, "partial_rotary_factor")), atof(test_golden_meta(st, cs, "rope_theta")),
              atoi(test_golden_meta(st, cs, "sliding_window")));
    cr_assert_eq(gated_rotary_dims(&g), atoi(test_golden_meta(st, cs, "rotary_dims")), "%s: rotated dims", cs);
    Mixer m = {.ops = &gated_mixer, .g = &g, .layer = 0};
    int gw = gated_gate_width(&g);

    size_t np = mixer_n_params(&gated_mixer, &g, 0), nx = (size_t)B * T * d;
    float *params = mallocCheck(sizeof(float) * np), *dparams = callocCheck(np, sizeof(float));
    ParamTensor t[8];
    int n = gated_mixer.param_tensors(&g, 0, t, 8);
    test_golden_params(params, st, cs, t, n);
    int64_t sx[3] = {B, T, d}, sP[4] = {B, H, T, T}, sg[2] = {T, H * gw};
    const float *x = test_golden(st, cs, "x", 3, sx), *R = test_golden(st, cs, "R", 3, sx), *gout = test_golden(st, cs, "out", 3, sx);

    float *out = mallocCheck(sizeof(float) * nx), *dx = callocCheck(nx, sizeof(float)), *act = new_act(&m, B, T);
    run_forward(&m, out, act, x, params, B, T);
    test_assert_close_scaled("out", out, gout, nx, 1e-5f);
    test_assert_close_scaled("P", act, test_golden(st, cs, "P", 4, sP), (size_t)B * H * T * T, 1e-5f);
    float *gates = mallocCheck(sizeof(float) * (size_t)T * H * gw);
    gated_gate_values(&m, gates, act, B, T);
    test_assert_close_scaled("gates", gates, test_golden(st, cs, "gates", 2, sg), (size_t)T * H * gw, 1e-5f);
    float *A = mallocCheck(sizeof(float) * (size_t)H * T * T);
    gated_mixer.mixing_matrix(&m, A, act, params, T);
    test_assert_close_scaled("mixing matrix", A, test_golden(st, cs, "P", 4, sP), (size_t)H * T * T, 1e-5f);

    gated_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    test_assert_close_scaled("dx", dx, test_golden(st, cs, "dx", 3, sx), nx, 1e-4f);
    for (int i = 0; i < n; i++) {
        char dn[64];
        snprintf(dn, sizeof dn, "d%.47s", t[i].name);
        test_assert_close_scaled(dn, dparams + t[i].offset, test_golden(st, cs, dn, t[i].ndim, t[i].shape), test_tensor_size(&t[i]), 1e-4f);
    }

    // cached decode of every sequence reproduces PyTorch's outputs
    for (int b = 0; b < B; b++) {
        MixerCache *c = gated_mixer.cache_new(&m, T);
        float step[64];
        cr_assert(d <= 64);
        for (int pos = 0; pos < T; pos++) {
            size_t row = ((size_t)b * T + pos) * d;
            gated_mixer.decode(&m, c, step, x + row, params);
            test_assert_close_scaled("decode", step, gout + row, (size_t)d, 1e-5f);
        }
        gated_mixer.cache_free(c);
    }
    free(params); free(dparams); free(out); free(dx); free(act); free(gates); free(A);
}

Test(gated, matches_pytorch_golden) {
    SafeTensors st;
    test_golden_load(&st, "gated.safetensors", "golden_gated.py");
    const char *cases[] = {"elementwise", "headwise", "local"};
    for (int i = 0; i < 3; i++) golden_case(&st, cases[i]);
    st_free(&st);
}

// ---- backward against central finite differences ---------------------------------------------------

static void gradcheck(int G, int gate, int norm, double frac, int W) {
    int B = 2, T = 5;
    ModelGeometry g;
    make_geom(&g, 10, 2, G, 8, gate, norm, frac, 100.0, W);
    Mixer m = {.ops = &gated_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 7 + 3 * gate + 11 * norm + W);
    size_t np = mixer_n_params(&gated_mixer, &g, 0), nx = (size_t)B * T * g.d_model;
    float *params = random_params(&g, &rng, 0.4f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *out = mallocCheck(sizeof(float) * nx), *act = new_act(&m, B, T);
    float *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    run_forward(&m, out, act, x, params, B, T);
    gated_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);

    ParamTensor t[8];
    int n = gated_mixer.param_tensors(&g, 0, t, 8);
    cr_assert_eq(n, norm ? 6 : 4);
    for (int i = 0; i < n; i++) {
        double e = test_mixer_fd_rel_error(&m, params + t[i].offset, dparams + t[i].offset, test_tensor_size(&t[i]), out,
                                           x, params, R, B, T);
        cr_expect(e < 2e-3, "gate %d norm %d W %d d%s: relative error %.3g", gate, norm, W, t[i].name, e);
    }
    double e = test_mixer_fd_rel_error(&m, x, dx, nx, out, x, params, R, B, T);
    cr_expect(e < 2e-3, "gate %d norm %d W %d dx: relative error %.3g", gate, norm, W, e);

    // backward accumulates: a second call adds the same gradient again
    float *dx2 = mallocCheck(sizeof(float) * nx);
    memcpy(dx2, dx, sizeof(float) * nx);
    gated_mixer.backward(&m, dx2, dparams, R, act, x, params, B, T);
    for (size_t i = 0; i < nx; i++) cr_assert(fabsf(dx2[i] - 2 * dx[i]) <= 1e-5f * fmaxf(1, fabsf(dx[i])));
    free(params); free(x); free(R); free(out); free(act); free(dparams); free(dx); free(dx2);
}

Test(gated, gradcheck_elementwise_zero_centred_quarter_rope) { gradcheck(1, GATE_ELEMENTWISE, QK_NORM_ZERO_CENTRED, 0.25, 0); }
Test(gated, gradcheck_headwise_rms_half_rope_window) { gradcheck(2, GATE_HEADWISE, QK_NORM_RMS, 0.5, 3); }
Test(gated, gradcheck_ungated_no_norm) { gradcheck(1, GATE_NONE, QK_NORM_NONE, 1.0, 0); }

// ---- cached decode equals the full forward ----------------------------------------------------------

static void decode_matches_forward(int G, int gate, int norm, double frac, int W) {
    int T = 11;
    ModelGeometry g;
    make_geom(&g, 32, 4, G, 8, gate, norm, frac, 10000.0, W);
    int d = g.d_model;
    Mixer m = {.ops = &gated_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 41 + gate + 5 * W);
    float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *full = mallocCheck(sizeof(float) * T * d), *step = mallocCheck(sizeof(float) * d), *act = new_act(&m, 1, T);
    run_forward(&m, full, act, x, params, 1, T);
    MixerCache *c = gated_mixer.cache_new(&m, T);
    for (int t = 0; t < T; t++) {
        gated_mixer.decode(&m, c, step, x + (size_t)t * d, params);
        for (int i = 0; i < d; i++) {
            float want = full[t * d + i];
            cr_assert(fabsf(step[i] - want) <= 1e-5f * fmaxf(1, fabsf(want)), "gate %d W %d pos %d dim %d: decode %.9g forward %.9g",
                      gate, W, t, i, (double)step[i], (double)want);
        }
    }
    gated_mixer.cache_free(c);
    free(params); free(x); free(full); free(step); free(act);
}

Test(gated, decode_equals_forward_elementwise) { decode_matches_forward(2, GATE_ELEMENTWISE, QK_NORM_ZERO_CENTRED, 0.25, 0); }
Test(gated, decode_equals_forward_headwise) { decode_matches_forward(1, GATE_HEADWISE, QK_NORM_RMS, 0.5, 0); }
Test(gated, decode_equals_forward_local_window) { decode_matches_forward(4, GATE_ELEMENTWISE, QK_NORM_ZERO_CENTRED, 0.25, 4); }

// ---- the cache holds what the formula says: GQA's 2 * G * dh per token, the gate adds nothing ---------

Test(gated, cache_bytes_equal_kvcache_formula) {
    for (int W = 0; W <= 5; W += 5) {
        ModelGeometry g;
        make_geom(&g, 32, 4, 2, 8, GATE_ELEMENTWISE, QK_NORM_ZERO_CENTRED, 0.25, 10000.0, W);
        Mixer m = {.ops = &gated_mixer, .g = &g, .layer = 0};
        Rng rng;
        rng_seed(&rng, 3);
        float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, 32, 1.0f), out[32];
        cr_assert_eq(kvcache_elems_per_token_layer(&g, 0), 2 * 2 * 8, "gated attention caches 2 * G * dh");
        MixerCache *c = gated_mixer.cache_new(&m, 20);
        cr_assert_eq(gated_mixer.cache_bytes(c), 0);
        for (int n = 1; n <= 20; n++) {
            gated_mixer.decode(&m, c, out, x, params);
            double want = kvcache_total_bytes(&g, n, 1);
            cr_assert_eq((double)gated_mixer.cache_bytes(c), want, "W %d after %d tokens: %zu bytes, formula %.0f", W, n,
                         gated_mixer.cache_bytes(c), want);
        }
        gated_mixer.cache_free(c);
        free(params); free(x);
    }
}

// ---- the ungated twin is chapter 4's GQA -------------------------------------------------------------

// GATE_NONE, no QK norm, every dim rotating: the same parameter layout and the same numbers as gqa_mixer
// (forward, attention, gradients, decode). A wrong gate slot, a norm that is not off, a stray rotation
// or a mis-ordered tensor shows up here.
Test(gated, ungated_twin_equals_gqa_mixer) {
    int B = 2, T = 7;
    ModelGeometry g;
    make_geom(&g, 24, 4, 2, 6, GATE_NONE, QK_NORM_NONE, 1.0, 500.0, 0);
    Mixer mg = {.ops = &gated_mixer, .g = &g, .layer = 0}, mq = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    size_t np = mixer_n_params(&gated_mixer, &g, 0), nx = (size_t)B * T * g.d_model;
    cr_assert_eq(np, mixer_n_params(&gqa_mixer, &g, 0));
    ParamTensor tg[8], tq[8];
    int n = gated_mixer.param_tensors(&g, 0, tg, 8);
    cr_assert_eq(n, gqa_mixer.param_tensors(&g, 0, tq, 8));
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq(tg[i].name, tq[i].name);
        cr_assert(tg[i].offset == tq[i].offset && tg[i].shape[0] == tq[i].shape[0] && tg[i].shape[1] == tq[i].shape[1]);
    }
    Rng rng;
    rng_seed(&rng, 99);
    float *params = test_randn(&rng, np, 0.4f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *og = mallocCheck(sizeof(float) * nx), *oq = mallocCheck(sizeof(float) * nx);
    float *ag = new_act(&mg, B, T), *aq = new_act(&mq, B, T);
    run_forward(&mg, og, ag, x, params, B, T);
    run_forward(&mq, oq, aq, x, params, B, T);
    test_assert_close_scaled("out", og, oq, nx, 1e-6f);
    test_assert_close_scaled("P", ag, aq, (size_t)B * g.n_heads * T * T, 1e-6f);
    float *dpg = callocCheck(np, sizeof(float)), *dpq = callocCheck(np, sizeof(float));
    float *dxg = callocCheck(nx, sizeof(float)), *dxq = callocCheck(nx, sizeof(float));
    gated_mixer.backward(&mg, dxg, dpg, R, ag, x, params, B, T);
    gqa_mixer.backward(&mq, dxq, dpq, R, aq, x, params, B, T);
    test_assert_close_scaled("dx", dxg, dxq, nx, 1e-6f);
    test_assert_close_scaled("dparams", dpg, dpq, np, 1e-6f);
    MixerCache *cg = gated_mixer.cache_new(&mg, T), *cq = gqa_mixer.cache_new(&mq, T);
    float sg[24], sq[24];
    for (int t = 0; t < T; t++) {
        gated_mixer.decode(&mg, cg, sg, x + (size_t)t * g.d_model, params);
        gqa_mixer.decode(&mq, cq, sq, x + (size_t)t * g.d_model, params);
        test_assert_close_scaled("decode", sg, sq, (size_t)g.d_model, 1e-6f);
    }
    cr_assert_eq(gated_mixer.cache_bytes(cg), gqa_mixer.cache_bytes(cq));
    gated_mixer.cache_free(cg);
    gqa_mixer.cache_free(cq);
    free(params); free(x); free(R); free(og); free(oq); free(ag); free(aq); free(dpg); free(dpq); free(dxg); free(dxq);
}

// ---- partial RoPE ---------------------------------------------------------------------------------------

// Only the first rot dims turn (pairs (i, i + rot/2), rotate_half as in Hugging Face); the others come out
// bit-for-bit as they went in, at every position.
Test(gated, partial_rope_rotates_only_the_first_dims) {
    ModelGeometry g;
    make_geom(&g, 64, 4, 2, 16, GATE_ELEMENTWISE, QK_NORM_ZERO_CENTRED, 0.25, 10000.0, 0);
    int dh = 16, rot = gated_rotary_dims(&g), half = rot / 2;
    cr_assert_eq(rot, 4);
    Rng rng;
    rng_seed(&rng, 5);
    for (int pos = 0; pos < 40; pos += 3) {
        float x[16], y[16];
        rng_fill_normal(&rng, x, dh, 1.0f);
        memcpy(y, x, sizeof x);
        gated_rope(y, pos, &g, 0, 0);
        for (int c = rot; c < dh; c++) cr_assert_eq(y[c], x[c], "pos %d: untouched dim %d changed", pos, c);
        for (int i = 0; i < half; i++) {
            double ang = pos * pow(10000.0, -2.0 * i / rot), cs = cos(ang), sn = sin(ang);
            double a = x[i] * cs - x[i + half] * sn, b = x[i + half] * cs + x[i] * sn;
            cr_assert(fabs(y[i] - a) < 1e-5 && fabs(y[i + half] - b) < 1e-5, "pos %d pair %d: (%g, %g) want (%g, %g)", pos,
                      i, (double)y[i], (double)y[i + half], a, b);
        }
        gated_rope(y, pos, &g, 0, 1);   // the inverse undoes it
        for (int c = 0; c < dh; c++) cr_assert(fabsf(y[c] - x[c]) < 1e-5f);
    }
}

// The untouched dims carry no position: with the rows of Wq and Wk that feed the rotated dims zeroed,
// the last query sees its keys as a set, so permuting the earlier tokens leaves its output unchanged.
// With those rows left in, the order matters (the test would notice RoPE reaching past rot).
Test(gated, untouched_dims_carry_no_position) {
    int T = 6;
    ModelGeometry g;
    make_geom(&g, 16, 2, 1, 8, GATE_ELEMENTWISE, QK_NORM_NONE, 0.5, 100.0, 0);
    int d = g.d_model, dh = g.head_dim, rot = gated_rotary_dims(&g), gw = gated_gate_width(&g);
    Mixer m = {.ops = &gated_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 8);
    float *params = random_params(&g, &rng, 0.5f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *xp = mallocCheck(sizeof(float) * T * d), *o1 = mallocCheck(sizeof(float) * T * d);
    float *o2 = mallocCheck(sizeof(float) * T * d), *act = new_act(&m, 1, T);
    static const int perm[6] = {3, 0, 4, 1, 2, 5};   // the last token stays last
    for (int t = 0; t < T; t++) memcpy(xp + (size_t)t * d, x + (size_t)perm[t] * d, sizeof(float) * d);
    for (int zero = 0; zero <= 1; zero++) {
        if (zero) {
            ParamTensor t[8];
            gated_mixer.param_tensors(&g, 0, t, 8);
            for (int h = 0; h < g.n_heads; h++)   // wq rows: per head [q_h (dh) | g_h (gw)]
                memset(params + t[0].offset + (size_t)h * (dh + gw) * d, 0, sizeof(float) * (size_t)rot * d);
            for (int h = 0; h < g.n_kv_heads; h++)
                memset(params + t[1].offset + (size_t)h * dh * d, 0, sizeof(float) * (size_t)rot * d);
        }
        run_forward(&m, o1, act, x, params, 1, T);
        run_forward(&m, o2, act, xp, params, 1, T);
        double diff = 0;
        for (int i = 0; i < d; i++) diff = test_worst(diff, fabs(o1[(T - 1) * d + i] - o2[(T - 1) * d + i]));
        if (zero) cr_assert(diff < 1e-5, "rotated dims zeroed: the last output still depends on order (%g)", diff);
        else cr_assert(diff > 1e-3, "with rotated dims the last output should depend on order (%g)", diff);
    }
    free(params); free(x); free(xp); free(o1); free(o2); free(act);
}

// ---- parameters, init, threads ----------------------------------------------------------------------------

Test(gated, parameter_names_shapes_and_init) {
    int shapes[3][2] = {{4 * (8 + 8), 0}, {4 * (8 + 1), 0}, {4 * 8, 0}};   // wq rows per gate kind
    int gates[3] = {GATE_ELEMENTWISE, GATE_HEADWISE, GATE_NONE};
    for (int k = 0; k < 3; k++)
        for (int norm = QK_NORM_NONE; norm <= QK_NORM_ZERO_CENTRED; norm++) {
            ModelGeometry g;
            make_geom(&g, 32, 4, 2, 8, gates[k], norm, 0.25, 10000.0, 0);
            ParamTensor t[8];
            int n = gated_mixer.param_tensors(&g, 0, t, 8);
            const char *names[6] = {"wq", "wk", "wv", "wo", "q_norm", "k_norm"};
            int64_t rows[6] = {shapes[k][0], 16, 16, 32, 8, 8}, cols[6] = {32, 32, 32, 32, 0, 0};
            cr_assert_eq(n, norm ? 6 : 4);
            size_t off = 0;
            for (int i = 0; i < n; i++) {
                cr_assert_str_eq(t[i].name, names[i]);
                cr_assert_eq(t[i].ndim, cols[i] ? 2 : 1);
                cr_assert_eq(t[i].shape[0], rows[i], "%s rows", names[i]);
                if (cols[i]) cr_assert_eq(t[i].shape[1], cols[i]);
                cr_assert_eq(t[i].offset, off);
                off += test_tensor_size(&t[i]);
            }
            cr_assert_eq(mixer_n_params(&gated_mixer, &g, 0), off);
            Mixer m = {.ops = &gated_mixer, .g = &g, .layer = 0};
            float *p = callocCheck(off, sizeof(float));
            Rng rng;
            rng_seed(&rng, 1);
            gated_mixer.init(&m, p, &rng);
            for (int i = 0; i < n; i++) {
                double ss = 0;
                for (size_t j = 0; j < test_tensor_size(&t[i]); j++) {
                    float v = p[t[i].offset + j];
                    // zero-centred norms start at w = 0 (gain 1 + w = 1), RMS norms at w = 1
                    if (t[i].ndim == 1) cr_assert_eq(v, norm == QK_NORM_ZERO_CENTRED ? 0.0f : 1.0f, "%s[%zu]", t[i].name, j);
                    ss += (double)v * v;
                }
                if (t[i].ndim == 2) cr_assert(sqrt(ss / test_tensor_size(&t[i])) > 0.005 && sqrt(ss / test_tensor_size(&t[i])) < 0.03);
            }
            free(p);
        }
}

Test(gated, thread_count_determinism) {
    int B = 3, T = 9;
    ModelGeometry g;
    make_geom(&g, 32, 4, 2, 8, GATE_HEADWISE, QK_NORM_ZERO_CENTRED, 0.25, 10000.0, 0);
    Mixer m = {.ops = &gated_mixer, .g = &g, .layer = 0};
    size_t np = mixer_n_params(&gated_mixer, &g, 0), nx = (size_t)B * T * g.d_model;
    Rng rng;
    rng_seed(&rng, 12);
    float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *out[2], *dx[2], *dp[2];
    int saved = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k ? 2 : 1);
        float *act = new_act(&m, B, T);
        out[k] = mallocCheck(sizeof(float) * nx);
        dx[k] = callocCheck(nx, sizeof(float));
        dp[k] = callocCheck(np, sizeof(float));
        run_forward(&m, out[k], act, x, params, B, T);
        gated_mixer.backward(&m, dx[k], dp[k], R, act, x, params, B, T);
        free(act);
    }
    omp_set_num_threads(saved);
    cr_assert(!memcmp(out[0], out[1], sizeof(float) * nx), "forward differs between 1 and 2 threads");
    cr_assert(!memcmp(dx[0], dx[1], sizeof(float) * nx), "dx differs between 1 and 2 threads");
    cr_assert(!memcmp(dp[0], dp[1], sizeof(float) * np), "dparams differ between 1 and 2 threads");
    for (int k = 0; k < 2; k++) { free(out[k]); free(dx[k]); free(dp[k]); }
    free(params); free(x); free(R);
}
