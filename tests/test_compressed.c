// test_compressed.c: chapter 11's DeepSeek V4 layers (CSA, HCA, the window-only layer): cached decode
// against the full forward (bit for bit), finite differences of every gradient (the main path and the
// indexer's KL), the cache against common/kvcache's formula, PyTorch golden values
// (tests/reference/golden_compressed.py), the validation reasons, and the thread count.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "07_dsa/dsa.h"
#include "11_compressed/compressed.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "mathx.h"
#include "rng.h"
#include "safetensors.h"

static void one_thread(void) { omp_set_num_threads(1); }
TestSuite(compressed, .init = one_thread);

// ---- helpers ------------------------------------------------------------------------------------

// One layer: d 16, H 2 heads of dh 8 (rd 2), window W, ratio m (0: window only), CSA with an indexer of
// 2 heads x 4, top-k as given.
static void make_geom(ModelGeometry *g, int W, int m, int csa, int topk, int sinks) {
    v4_geometry_tiny(g, 1, 16, 2, 8, W);
    g->max_seq_len = 64;
    g->vocab_size = 8;
    if (csa) {
        g->index_n_heads = 2;
        g->index_head_dim = 4;
        g->index_topk = topk;
    }
    v4_set_layer(g, 0, m, csa);
    if (!sinks) g->attention_sinks = 0;
}

// Random parameters: matrices N(0, std^2), gains 1 + N(0, 0.2^2), ape and sinks N(0, 0.5^2).
static float *random_params(const Mixer *m, Rng *r, float std) {
    size_t np = mixer_n_params(m->ops, m->g, 0);
    float *p = test_randn(r, np, std);
    ParamTensor t[24];
    int n = m->ops->param_tensors(m->g, 0, t, 24);
    for (int i = 0; i < n; i++) {
        size_t sz = test_tensor_size(&t[i]);
        if (strstr(t[i].name, "ape") || strstr(t[i].name, "sink"))
            for (size_t k = 0; k < sz; k++) p[t[i].offset + k] = 0.5f * rng_normal(r);
        else if (t[i].ndim == 1)
            for (size_t k = 0; k < sz; k++) p[t[i].offset + k] = 1.0f + 0.2f * rng_normal(r);
    }
    return p;
}

static float *forward_act(const Mixer *m, float *out, const float *x, const float *params, int B, int T) {
    float *act = mallocCheck(sizeof(float) * m->ops->act_floats(m->g, 0, B, T));
    m->ops->forward(m, out, act, x, params, B, T);
    return act;
}

// ---- decode equals the forward, bit for bit ------------------------------------------------------------

static void decode_matches_forward(const MixerOps *ops, int W, int m, int csa, int topk, DsaPhase phase) {
    int B = 2, T = 23;
    ModelGeometry g;
    make_geom(&g, W, m, csa, topk, 1);
    Mixer mx = {.ops = ops, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 5 + W + 7 * m + phase);
    int d = g.d_model;
    float *params = random_params(&mx, &rng, 0.4f), *x = test_randn(&rng, (size_t)B * T * d, 1.0f);
    float *full = mallocCheck(sizeof(float) * (size_t)B * T * d), step[16];
    dsa_set_phase(phase);
    float *act = forward_act(&mx, full, x, params, B, T);
    for (int b = 0; b < B; b++) {
        MixerCache *c = ops->cache_new(&mx, T);
        for (int t = 0; t < T; t++) {
            ops->decode(&mx, c, step, x + ((size_t)b * T + t) * d, params);
            cr_assert(!memcmp(step, full + ((size_t)b * T + t) * d, sizeof step),
                      "%s W %d m %d phase %d: sequence %d position %d: decode differs from the forward (%.9g vs %.9g)",
                      ops->name, W, m, phase, b, t, (double)step[0], (double)full[((size_t)b * T + t) * d]);
        }
        cr_assert_eq(compressed_cache_entries(c), m ? T / m : 0);
        ops->cache_free(c);
    }
    dsa_set_phase(DSA_SPARSE);
    free(params); free(x); free(full); free(act);
}

Test(compressed, decode_equals_forward_window_only) { decode_matches_forward(&v4swa_mixer, 5, 0, 0, 0, DSA_SPARSE); }
Test(compressed, decode_equals_forward_hca) {
    decode_matches_forward(&hca_mixer, 4, 4, 0, 0, DSA_SPARSE);
    decode_matches_forward(&hca_mixer, 6, 3, 0, 0, DSA_SPARSE);
}
Test(compressed, decode_equals_forward_csa_every_phase) {
    decode_matches_forward(&csa_mixer, 4, 2, 1, 3, DSA_SPARSE);
    decode_matches_forward(&csa_mixer, 5, 3, 1, 2, DSA_SPARSE);
    decode_matches_forward(&csa_mixer, 4, 2, 1, 3, DSA_DENSE);
    decode_matches_forward(&csa_mixer, 4, 2, 1, 3, DSA_WINDOW);
}

// ---- the cache holds what the formula says ---------------------------------------------------------

static void cache_bytes_match(const MixerOps *ops, int W, int m, int csa) {
    ModelGeometry g;
    make_geom(&g, W, m, csa, 2, 1);
    Mixer mx = {.ops = ops, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 3);
    float *params = random_params(&mx, &rng, 0.3f), *x = test_randn(&rng, 16, 1.0f), out[16];
    MixerCache *c = ops->cache_new(&mx, 30);
    cr_assert_eq((double)ops->cache_bytes(c), kvcache_total_bytes(&g, 0, 1), "%s: empty cache", ops->name);
    for (int n = 1; n <= 30; n++) {
        ops->decode(&mx, c, out, x, params);
        cr_assert_eq((double)ops->cache_bytes(c), kvcache_total_bytes(&g, n, 1), "%s after %d tokens: %zu bytes, formula %.0f",
                     ops->name, n, ops->cache_bytes(c), kvcache_total_bytes(&g, n, 1));
    }
    ops->cache_free(c);
    free(params); free(x);
}

Test(compressed, cache_bytes_equal_kvcache_formula) {
    cache_bytes_match(&v4swa_mixer, 6, 0, 0);
    cache_bytes_match(&hca_mixer, 6, 4, 0);
    cache_bytes_match(&csa_mixer, 6, 3, 1);
}

// ---- backward against central finite differences ---------------------------------------------------

typedef struct {
    const Mixer *m;
    const float *x, *params, *R;
    int B, T, kl;
    const unsigned char *want;   // (B*T*Tc) the selection the analytic gradient used
    size_t nsel;
} FdCase;

static double fd_loss(const FdCase *f) {
    int d = f->m->g->d_model;
    size_t nx = (size_t)f->B * f->T * d;
    float *out = mallocCheck(sizeof(float) * nx);
    float *act = forward_act(f->m, out, f->x, f->params, f->B, f->T);
    double l = 0;
    if (f->kl) l = compressed_index_kl(f->m, act, f->B, f->T);
    else
        for (size_t i = 0; i < nx; i++) l += (double)out[i] * f->R[i];
    if (f->nsel) {
        unsigned char *sel = mallocCheck(f->nsel);
        compressed_selected(f->m, sel, act, f->B, f->T);
        cr_assert(!memcmp(sel, f->want, f->nsel), "the selection changed under a finite-difference step");
        free(sel);
    }
    free(out); free(act);
    return l;
}

static double fd_loss_of(const void *f) { return fd_loss(f); }

static double fd_rel_error(const FdCase *f, float *v, const float *ana, size_t n, float h) {
    return test_fd_rel_error_fn(fd_loss_of, f, v, ana, n, h);
}

// kl 0: d sum(out*R) for x and every main weight (indexer weights get nothing); kl 1: d KL for the
// indexer's weights (nothing else gets anything).
static void gradcheck(const MixerOps *ops, int W, int m, int csa, int topk, DsaPhase phase, int kl) {
    int B = 2, T = 11;
    ModelGeometry g;
    make_geom(&g, W, m, csa, topk, 1);
    Mixer mx = {.ops = ops, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 17 + m + 10 * phase + 100 * kl);
    size_t np = mixer_n_params(ops, &g, 0), nx = (size_t)B * T * g.d_model;
    float *params = random_params(&mx, &rng, 0.5f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *zero = callocCheck(nx, sizeof(float)), *out = mallocCheck(sizeof(float) * nx);
    float *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    dsa_set_phase(phase);
    dsa_set_kl_coef(kl ? 1.0f : 0.0f);
    float *act = forward_act(&mx, out, x, params, B, T);
    ops->backward(&mx, dx, dparams, kl ? zero : R, act, x, params, B, T);
    int Tc = m ? T / m : 0;
    size_t nsel = (size_t)B * T * Tc;
    unsigned char *want = mallocCheck(nsel + 1);
    if (nsel) compressed_selected(&mx, want, act, B, T);

    FdCase f = {.m = &mx, .x = x, .params = params, .R = R, .B = B, .T = T, .kl = kl, .want = want, .nsel = nsel};
    ParamTensor t[24];
    int n = ops->param_tensors(&g, 0, t, 24), checked = 0;
    for (int i = 0; i < n; i++) {
        int is_index = strncmp(t[i].name, "indexer.", 8) == 0;
        if (is_index != kl) {
            for (size_t k = 0; k < test_tensor_size(&t[i]); k++)
                cr_assert_eq(dparams[t[i].offset + k], 0.0f, "%s kl %d: d%s[%zu] = %g, expected 0", ops->name, kl, t[i].name,
                             k, (double)dparams[t[i].offset + k]);
            continue;
        }
        double e = fd_rel_error(&f, params + t[i].offset, dparams + t[i].offset, test_tensor_size(&t[i]), kl ? 2e-3f : 1e-2f);
        cr_expect(e < 5e-3, "%s m %d phase %d kl %d d%s: relative error %.3g", ops->name, m, phase, kl, t[i].name, e);
        checked++;
    }
    cr_assert(checked > 0);
    if (!kl) {
        double e = fd_rel_error(&f, x, dx, nx, 1e-2f);
        cr_expect(e < 5e-3, "%s m %d dx: relative error %.3g", ops->name, m, e);
    } else {
        for (size_t i = 0; i < nx; i++) cr_assert_eq(dx[i], 0.0f, "the indexer's loss must not reach x");
    }
    dsa_set_kl_coef(1.0f);
    dsa_set_phase(DSA_SPARSE);
    free(params); free(x); free(R); free(zero); free(out); free(dparams); free(dx); free(act); free(want);
}

Test(compressed, gradcheck_window_only) { gradcheck(&v4swa_mixer, 4, 0, 0, 0, DSA_SPARSE, 0); }
Test(compressed, gradcheck_hca) { gradcheck(&hca_mixer, 3, 3, 0, 0, DSA_SPARSE, 0); }
Test(compressed, gradcheck_csa_main_path) { gradcheck(&csa_mixer, 3, 2, 1, 2, DSA_SPARSE, 0); }
Test(compressed, gradcheck_csa_indexer_kl) {
    gradcheck(&csa_mixer, 3, 2, 1, 2, DSA_SPARSE, 1);
    gradcheck(&csa_mixer, 3, 2, 1, 2, DSA_DENSE, 1);
}

// ---- golden values from an independent PyTorch implementation (tests/reference/golden_compressed.py) ----

static double golden_double(const SafeTensors *st, const char *cs, const char *key) {
    return atof(test_golden_meta(st, cs, key));
}

static void golden_case(const SafeTensors *st, const char *cs) {
    int B = test_golden_int(st, cs, "B"), T = test_golden_int(st, cs, "T"), d = test_golden_int(st, cs, "d_model");
    int H = test_golden_int(st, cs, "n_heads"), dh = test_golden_int(st, cs, "head_dim"), m = test_golden_int(st, cs, "compress_ratio");
    const char *kind = test_golden_meta(st, cs, "kind"), *phase = test_golden_meta(st, cs, "phase");
    int csa = !strcmp(kind, "csa");
    ModelGeometry g;
    v4_geometry_tiny(&g, 1, d, H, dh, test_golden_int(st, cs, "sliding_window"));
    g.partial_rotary_factor = (double)test_golden_int(st, cs, "rotary_dims") / dh;
    g.rope_theta = golden_double(st, cs, "rope_theta");
    g.max_seq_len = T;
    if (csa) {
        g.index_n_heads = test_golden_int(st, cs, "index_n_heads");
        g.index_head_dim = test_golden_int(st, cs, "index_head_dim");
        g.index_topk = test_golden_int(st, cs, "index_topk");
    }
    v4_set_layer(&g, 0, m, csa);
    const MixerOps *ops = v4_mixer_of(&g, 0);
    cr_assert_str_eq(ops->name, kind);
    Mixer mx = {.ops = ops, .g = &g, .layer = 0};
    dsa_set_phase(!strcmp(phase, "dense") ? DSA_DENSE : DSA_SPARSE);
    dsa_set_kl_coef(1.0f);

    size_t np = mixer_n_params(ops, &g, 0), nx = (size_t)B * T * d;
    float *params = mallocCheck(sizeof(float) * np), *dparams = callocCheck(np, sizeof(float));
    ParamTensor t[24];
    int n = ops->param_tensors(&g, 0, t, 24);
    test_golden_params(params, st, cs, t, n);
    int64_t sx[3] = {B, T, d}, ss[3] = {B, H, T}, s1[1] = {1};
    const float *x = test_golden(st, cs, "x", 3, sx), *R = test_golden(st, cs, "R", 3, sx), *gout = test_golden(st, cs, "out", 3, sx);
    float *out = mallocCheck(sizeof(float) * nx), *dx = callocCheck(nx, sizeof(float));
    float *act = forward_act(&mx, out, x, params, B, T);
    test_assert_close("out", out, gout, nx, 2e-5f);
    // the sink's weight per head and query (batch 0)
    int Tc = m ? T / m : 0;
    float *P = mallocCheck(sizeof(float) * (size_t)H * T * (T + Tc)), *psink = mallocCheck(sizeof(float) * (size_t)H * T);
    compressed_attention(&mx, P, psink, act, B, T);
    test_assert_close("psink", psink, test_golden(st, cs, "psink", 3, ss), (size_t)H * T, 2e-5f);
    free(P);
    free(psink);
    if (m) {
        int64_t sl[3] = {B, T, Tc};
        const float *gsel = test_golden(st, cs, "sel", 3, sl);
        unsigned char *sel = mallocCheck((size_t)B * T * Tc + 1);
        compressed_selected(&mx, sel, act, B, T);
        for (size_t i = 0; i < (size_t)B * T * Tc; i++)
            cr_assert_eq(sel[i], gsel[i] != 0.0f, "%s: selected[%zu] = %d, PyTorch %g", cs, i, sel[i], (double)gsel[i]);
        free(sel);
    }
    if (csa) {
        double kl = compressed_index_kl(&mx, act, B, T);
        float want = *test_golden(st, cs, "kl", 1, s1);
        cr_assert(fabs(kl - want) <= 1e-5 * fmax(1, fabs(want)), "%s: KL %.9g want %.9g", cs, kl, (double)want);
    }
    ops->backward(&mx, dx, dparams, R, act, x, params, B, T);
    test_assert_close("dx", dx, test_golden(st, cs, "dx", 3, sx), nx, 1e-4f);
    test_golden_dparams(st, cs, dparams, t, n, 1e-4f);
    // decode, one cache per sequence
    for (int b = 0; b < B; b++) {
        MixerCache *c = ops->cache_new(&mx, T);
        float step[64];
        for (int pos = 0; pos < T; pos++) {
            ops->decode(&mx, c, step, x + ((size_t)b * T + pos) * d, params);
            test_assert_close("decode", step, gout + ((size_t)b * T + pos) * d, (size_t)d, 2e-5f);
        }
        ops->cache_free(c);
    }
    dsa_set_phase(DSA_SPARSE);
    free(params); free(dparams); free(out); free(dx); free(act);
}

Test(compressed, matches_pytorch_golden) {
    SafeTensors st;
    test_golden_load(&st, "compressed.safetensors", "golden_compressed.py");
    const char *cases[] = {"csa_sparse", "csa_dense", "hca", "window"};
    for (int i = 0; i < 4; i++) golden_case(&st, cases[i]);
    st_free(&st);
}
