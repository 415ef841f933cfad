// test_dsa.c: chapter 7's DeepSeek Sparse Attention against PyTorch golden values (indexer scores,
// selection, sparse attention, gradients, the indexer's KL and its gradient), against chapter 5's MLA
// when every key is selected, a brute-force selector, finite differences, its cached decode, and the
// KV-cache formula of common/kvcache.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "05_mla/mla.h"
#include "07_dsa/dsa.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "mathx.h"
#include "rng.h"
#include "safetensors.h"

// ---- helpers ------------------------------------------------------------------------------------

static void make_geom(ModelGeometry *g, int d, int H, int qr, int dc, int dn, int dr, int dv, double theta, int Hi,
                      int di, int topk) {
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "test dsa");
    g->n_layers = 1;
    g->d_model = d;
    g->n_heads = g->n_kv_heads = H;
    g->head_dim = dn + dr;
    g->vocab_size = 16;
    g->d_ff = 4 * d;
    g->max_seq_len = 64;
    g->attn = ATTN_MLA;
    g->q_lora_rank = qr;
    g->kv_lora_rank = dc;
    g->qk_nope_head_dim = dn;
    g->qk_rope_head_dim = dr;
    g->v_head_dim = dv;
    g->rope_theta = theta;
    g->index_n_heads = Hi;
    g->index_head_dim = di;
    g->index_topk = topk;
    g->dtype_bytes = 4;
}

// d 32, H 4, dc 16, dn 8, dr 4, dv 6; indexer 3 heads x 8, top-k as given.
static void small_geom(ModelGeometry *g, int qr, int topk) { make_geom(g, 32, 4, qr, 16, 8, 4, 6, 1000.0, 3, 8, topk); }

// Random parameters: matrices N(0, std^2), norm gains 1 + N(0, 0.2^2), the LayerNorm bias N(0, 0.2^2).
static float *random_params(const ModelGeometry *g, Rng *r, float std) {
    size_t np = mixer_n_params(&dsa_mixer, g, 0);
    float *p = test_randn(r, np, std);
    ParamTensor t[24];
    int n = dsa_mixer.param_tensors(g, 0, t, 24);
    for (int i = 0; i < n; i++)
        if (t[i].ndim == 1)
            for (int k = 0; k < t[i].shape[0]; k++)
                p[t[i].offset + k] = (strstr(t[i].name, "bias") ? 0.0f : 1.0f) + 0.2f * rng_normal(r);
    return p;
}

static float *forward_act(const Mixer *m, float *out, const float *x, const float *params, int B, int T) {
    float *act = mallocCheck(sizeof(float) * m->ops->act_floats(m->g, 0, B, T));
    m->ops->forward(m, out, act, x, params, B, T);
    return act;
}

// The attended mask (B,T,T) of a forward over x (B,T,d).
static void attended_of(const Mixer *m, unsigned char *mask, const float *x, const float *params, int B, int T) {
    float *out = mallocCheck(sizeof(float) * (size_t)B * T * m->g->d_model);
    float *act = forward_act(m, out, x, params, B, T);
    dsa_attended(m, mask, act, B, T);
    free(out);
    free(act);
}

// ---- golden values from an independent PyTorch implementation (tests/reference/golden_dsa.py) -----

static void golden_case(const SafeTensors *st, const char *cs) {
    int B = test_golden_int(st, cs, "B"), T = test_golden_int(st, cs, "T"), d = test_golden_int(st, cs, "d_model");
    int H = test_golden_int(st, cs, "n_heads"), di = test_golden_int(st, cs, "index_head_dim");
    char k[96];
    snprintf(k, sizeof k, "%s.rope_theta", cs);
    double theta = atof(st_meta(st, k));
    snprintf(k, sizeof k, "%s.phase", cs);
    dsa_set_phase(strcmp(st_meta(st, k), "dense") == 0 ? DSA_DENSE : DSA_SPARSE);
    dsa_set_kl_coef(1.0f);
    ModelGeometry g;
    make_geom(&g, d, H, test_golden_int(st, cs, "q_lora_rank"), test_golden_int(st, cs, "kv_lora_rank"),
              test_golden_int(st, cs, "qk_nope_head_dim"), test_golden_int(st, cs, "qk_rope_head_dim"), test_golden_int(st, cs, "v_head_dim"),
              theta, test_golden_int(st, cs, "index_n_heads"), di, test_golden_int(st, cs, "index_topk"));
    Mixer m = {.ops = &dsa_mixer, .g = &g, .layer = 0};

    size_t np = mixer_n_params(&dsa_mixer, &g, 0), nx = (size_t)B * T * d, TT = (size_t)T * T;
    float *params = mallocCheck(sizeof(float) * np), *dparams = callocCheck(np, sizeof(float));
    ParamTensor t[24];
    int n = dsa_mixer.param_tensors(&g, 0, t, 24);
    test_golden_params(params, st, cs, t, n);
    int64_t sx[3] = {B, T, d}, sP[4] = {B, H, T, T}, sI[3] = {B, T, T}, sk[3] = {B, T, di}, s1[1] = {1};
    const float *x = test_golden(st, cs, "x", 3, sx), *R = test_golden(st, cs, "R", 3, sx);
    const float *gI = test_golden(st, cs, "I", 3, sI), *gatt = test_golden(st, cs, "att", 3, sI), *gout = test_golden(st, cs, "out", 3, sx);

    // forward: output, attention weights (exactly 0 off the selected set), the indexer scores
    float *out = mallocCheck(sizeof(float) * nx), *dx = callocCheck(nx, sizeof(float));
    float *act = forward_act(&m, out, x, params, B, T);
    test_assert_close("out", out, gout, nx, 2e-5f);
    test_assert_close("P", act, test_golden(st, cs, "P", 4, sP), (size_t)B * H * TT, 2e-5f);
    double kl = dsa_index_kl(&m, act, B, T);
    float want_kl = *test_golden(st, cs, "kl", 1, s1);
    cr_assert(fabs(kl - want_kl) <= 1e-5 * fmax(1, fabs(want_kl)), "%s: KL %.9g want %.9g", cs, kl, (double)want_kl);
    // the indexer scores and the selected set
    float *I = mallocCheck(sizeof(float) * B * TT);
    unsigned char *mask = mallocCheck(B * TT);
    dsa_index_scores(&m, I, act, B, T);
    dsa_attended(&m, mask, act, B, T);
    test_assert_close("I", I, gI, B * TT, 2e-5f);
    for (size_t i = 0; i < B * TT; i++)
        cr_assert_eq(mask[i], gatt[i] != 0.0f, "%s: attended[%zu] = %d, PyTorch %g", cs, i, mask[i], (double)gatt[i]);
    free(I); free(mask);

    // gradients: sum(out * R) for x and MLA's weights, the indexer's KL for the indexer's
    dsa_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    test_assert_close("dx", dx, test_golden(st, cs, "dx", 3, sx), nx, 1e-4f);
    test_golden_dparams(st, cs, dparams, t, n, 1e-4f);

    // decode, one cache per sequence: outputs and the cached indexer keys
    const float *gik = test_golden(st, cs, "ik", 3, sk);
    for (int b = 0; b < B; b++) {
        MixerCache *c = dsa_mixer.cache_new(&m, T);
        float step[64];
        cr_assert(d <= 64);
        for (int pos = 0; pos < T; pos++) {
            size_t row = (size_t)b * T + pos;
            dsa_mixer.decode(&m, c, step, x + row * d, params);
            test_assert_close("decode", step, gout + row * d, (size_t)d, 2e-5f);
            test_assert_close("cache index key", dsa_cache_index_key(c, pos), gik + row * di, (size_t)di, 1e-5f);
        }
        dsa_mixer.cache_free(c);
    }
    free(params); free(dparams); free(out); free(dx); free(act);
}

Test(dsa, matches_pytorch_golden) {
    SafeTensors st;
    test_golden_load(&st, "dsa.safetensors", "golden_dsa.py");
    const char *cases[] = {"q_lora", "direct_q", "dense_warmup"};
    for (int i = 0; i < 3; i++) golden_case(&st, cases[i]);
    st_free(&st);
}

// ---- with k >= T, DSA is chapter 5's MLA ---------------------------------------------------------------

static void equals_dense_mla(int qr) {
    int B = 2, T = 9;
    ModelGeometry g;
    small_geom(&g, qr, T);   // top-k = T: every key is selected
    int d = g.d_model;
    Mixer md = {.ops = &dsa_mixer, .g = &g, .layer = 0}, mm = {.ops = &mla_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 5 + qr);
    float *pd = random_params(&g, &rng, 0.3f);   // the MLA slice leads, with MLA's layout
    size_t np_mla = mixer_n_params(&mla_mixer, &g, 0), nx = (size_t)B * T * d;
    float *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *od = mallocCheck(sizeof(float) * nx), *om = mallocCheck(sizeof(float) * nx);
    dsa_set_phase(DSA_SPARSE);
    float *ad = forward_act(&md, od, x, pd, B, T), *am = forward_act(&mm, om, x, pd, B, T);
    test_assert_close("out vs MLA", od, om, nx, 1e-6f);
    test_assert_close("P vs MLA", ad, am, (size_t)B * g.n_heads * T * T, 1e-6f);

    float *dxd = callocCheck(nx, sizeof(float)), *dxm = callocCheck(nx, sizeof(float));
    float *gd = callocCheck(mixer_n_params(&dsa_mixer, &g, 0), sizeof(float)), *gm = callocCheck(np_mla, sizeof(float));
    dsa_mixer.backward(&md, dxd, gd, R, ad, x, pd, B, T);
    mla_mixer.backward(&mm, dxm, gm, R, am, x, pd, B, T);
    test_assert_close("dx vs MLA", dxd, dxm, nx, 1e-5f);
    test_assert_close("dMLA params vs MLA", gd, gm, np_mla, 1e-5f);

    MixerCache *cd = dsa_mixer.cache_new(&md, T), *cm = mla_mixer.cache_new(&mm, T);
    float sd[32], sm[32];
    for (int t = 0; t < T; t++) {
        dsa_mixer.decode(&md, cd, sd, x + (size_t)t * d, pd);
        mla_mixer.decode(&mm, cm, sm, x + (size_t)t * d, pd);
        test_assert_close("decode vs MLA", sd, sm, (size_t)d, 1e-6f);
    }
    dsa_mixer.cache_free(cd);
    mla_mixer.cache_free(cm);
    free(pd); free(x); free(R); free(od); free(om); free(ad); free(am); free(dxd); free(dxm); free(gd); free(gm);
}

Test(dsa, equals_dense_mla_when_topk_covers_context_direct_query) { equals_dense_mla(0); }
Test(dsa, equals_dense_mla_when_topk_covers_context_query_low_rank) { equals_dense_mla(24); }

// ---- the selector ------------------------------------------------------------------------------------

// Brute force: key j is selected iff fewer than k keys rank before it (larger score, or equal score
// and lower index).
static int brute_selected(const float *s, int n, int k, int j) {
    int before = 0;
    for (int i = 0; i < n; i++)
        if (s[i] > s[j] || (s[i] == s[j] && i < j)) before++;
    return before < k;
}

Test(dsa, selector_matches_brute_force_and_breaks_ties_to_lower_index) {
    Rng rng;
    rng_seed(&rng, 99);
    int sel[300], work[300];
    float s[300];
    for (int trial = 0; trial < 400; trial++) {
        int n = 1 + (int)rng_below(&rng, 300), k = 1 + (int)rng_below(&rng, (uint32_t)n + 3);
        int levels = trial % 3 == 0 ? 3 : trial % 3 == 1 ? 20 : 0;   // many ties, some, none
        for (int i = 0; i < n; i++) s[i] = levels ? (float)rng_below(&rng, (uint32_t)levels) : rng_normal(&rng);
        int got = dsa_select_topk(sel, work, s, n, k);
        cr_assert_eq(got, k < n ? k : n, "n %d k %d: %d selected", n, k, got);
        for (int i = 1; i < got; i++) cr_assert(sel[i - 1] < sel[i], "selection not ascending");
        int m = 0;
        for (int j = 0; j < n; j++) {
            int want = brute_selected(s, n, k, j), has = m < got && sel[m] == j;
            cr_assert_eq(has, want, "trial %d n %d k %d key %d: selected %d, brute force %d", trial, n, k, j, has, want);
            m += has;
        }
    }
    // all equal: the k lowest indices
    for (int i = 0; i < 10; i++) s[i] = 0.5f;
    cr_assert_eq(dsa_select_topk(sel, work, s, 10, 3), 3);
    cr_assert(sel[0] == 0 && sel[1] == 1 && sel[2] == 2);
}

// ---- sparsity: at most k keys, none in the future ------------------------------------------------------

Test(dsa, attends_at_most_k_past_keys_the_indexer_chose) {
    int T = 16, topk = 4, d = 32;
    ModelGeometry g;
    small_geom(&g, 24, topk);
    Mixer m = {.ops = &dsa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 11);
    float *params = random_params(&g, &rng, 0.4f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *out = mallocCheck(sizeof(float) * T * d), *I = mallocCheck(sizeof(float) * T * T);
    unsigned char mask[16 * 16];
    dsa_set_phase(DSA_SPARSE);
    float *act = forward_act(&m, out, x, params, 1, T);
    dsa_index_scores(&m, I, act, 1, T);
    dsa_attended(&m, mask, act, 1, T);
    for (int i = 0; i < T; i++) {
        int count = 0;
        for (int j = 0; j < T; j++) {
            count += mask[i * T + j];
            if (j > i) {
                cr_assert_eq(mask[i * T + j], 0, "query %d selected future key %d", i, j);
                cr_assert_eq(I[i * T + j], 0.0f);
            } else {
                cr_assert_eq(mask[i * T + j], brute_selected(&I[i * T], i + 1, topk, j), "query %d key %d", i, j);
            }
            for (int h = 0; h < g.n_heads; h++) {
                float p = act[((size_t)h * T + i) * T + j];
                if (!mask[i * T + j]) cr_assert_eq(p, 0.0f, "head %d: weight %g on unselected key (%d,%d)", h, (double)p, i, j);
            }
        }
        cr_assert_eq(count, i + 1 < topk ? i + 1 : topk, "query %d attends to %d keys", i, count);
        for (int h = 0; h < g.n_heads; h++) {
            double sum = 0;
            for (int j = 0; j < T; j++) sum += act[((size_t)h * T + i) * T + j];
            cr_assert(fabs(sum - 1) < 1e-5, "head %d row %d sums to %g", h, i, sum);
        }
    }
    // the learned set is not a window: some query skips a more recent key for an older one
    int non_window = 0;
    for (int i = topk; i < T; i++) non_window += !mask[i * T + i - 1] || !mask[i * T + i];
    cr_assert(non_window > 0, "every selection was the last k keys");
    // the window phase attends exactly to the last k keys
    dsa_set_phase(DSA_WINDOW);
    attended_of(&m, mask, x, params, 1, T);
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) cr_assert_eq(mask[i * T + j], j <= i && j > i - topk, "window (%d,%d)", i, j);
    dsa_set_phase(DSA_DENSE);
    attended_of(&m, mask, x, params, 1, T);
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) cr_assert_eq(mask[i * T + j], j <= i, "dense (%d,%d)", i, j);
    free(params); free(x); free(out); free(I); free(act);
}

// ---- cached decode equals the full forward, every phase ---------------------------------------------

static void decode_matches_forward(int qr, DsaPhase phase) {
    int T = 14, topk = 5;
    ModelGeometry g;
    small_geom(&g, qr, topk);
    int d = g.d_model;
    Mixer m = {.ops = &dsa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 41 + qr + phase);
    float *params = random_params(&g, &rng, 0.4f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *full = mallocCheck(sizeof(float) * T * d), step[32];
    dsa_set_phase(phase);
    float *act = forward_act(&m, full, x, params, 1, T);
    MixerCache *c = dsa_mixer.cache_new(&m, T);
    for (int t = 0; t < T; t++) {
        dsa_mixer.decode(&m, c, step, x + (size_t)t * d, params);
        for (int i = 0; i < d; i++) {
            float want = full[t * d + i];
            cr_assert(fabsf(step[i] - want) <= 1e-5f * fmaxf(1, fabsf(want)), "q_lora %d phase %d pos %d dim %d: decode %.9g forward %.9g",
                      qr, phase, t, i, (double)step[i], (double)want);
        }
    }
    dsa_mixer.cache_free(c);
    free(params); free(x); free(full); free(act);
}

Test(dsa, decode_equals_forward_sparse_direct_query) { decode_matches_forward(0, DSA_SPARSE); }
Test(dsa, decode_equals_forward_sparse_query_low_rank) { decode_matches_forward(24, DSA_SPARSE); }
Test(dsa, decode_equals_forward_dense_and_window_phases) {
    decode_matches_forward(24, DSA_DENSE);
    decode_matches_forward(24, DSA_WINDOW);
}

// ---- the cache holds what the formula says ---------------------------------------------------------

Test(dsa, cache_bytes_equal_kvcache_formula) {
    ModelGeometry g;
    small_geom(&g, 24, 4);   // dc 16 + dr 4 + di 8 = 28 floats per token
    Mixer m = {.ops = &dsa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 3);
    float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, 32, 1.0f), out[32];
    cr_assert_eq(kvcache_elems_per_token_layer(&g, 0), 16 + 4 + 8, "DSA caches kv_lora_rank + qk_rope_head_dim + index_head_dim");
    dsa_set_phase(DSA_SPARSE);
    MixerCache *c = dsa_mixer.cache_new(&m, 20);
    cr_assert_eq(dsa_mixer.cache_bytes(c), 0);
    for (int n = 1; n <= 20; n++) {
        dsa_mixer.decode(&m, c, out, x, params);
        cr_assert_eq((double)dsa_mixer.cache_bytes(c), kvcache_total_bytes(&g, n, 1), "after %d tokens: %zu bytes", n,
                     dsa_mixer.cache_bytes(c));
    }
    dsa_mixer.cache_free(c);
    free(params); free(x);
}

// ---- backward against central finite differences ---------------------------------------------------

typedef struct {
    const Mixer *m;
    const float *x, *params, *R;
    int B, T;
    int kl;                     // 1: the loss is the indexer's mean KL; 0: sum(out * R)
    const unsigned char *want;  // (B*T*T) the attended set the analytic gradient used
} FdCase;

// The loss at the current parameters; fails if the attended set moved (the loss would jump).
static double fd_loss(const FdCase *f) {
    int d = f->m->g->d_model;
    size_t nx = (size_t)f->B * f->T * d;
    float *out = mallocCheck(sizeof(float) * nx);
    float *act = forward_act(f->m, out, f->x, f->params, f->B, f->T);
    double l = 0;
    if (f->kl) {
        l = dsa_index_kl(f->m, act, f->B, f->T);
    } else {
        for (size_t i = 0; i < nx; i++) l += (double)out[i] * f->R[i];
    }
    size_t nm = (size_t)f->B * f->T * f->T;
    unsigned char *mask = mallocCheck(nm);
    dsa_attended(f->m, mask, act, f->B, f->T);
    cr_assert(!memcmp(mask, f->want, nm), "the selection changed under a finite-difference step");
    free(mask); free(out); free(act);
    return l;
}

static double fd_loss_of(const void *f) { return fd_loss(f); }

static double fd_rel_error(const FdCase *f, float *v, const float *ana, size_t n, float h) {
    return test_fd_rel_error_fn(fd_loss_of, f, v, ana, n, h);
}

// kl 0: d sum(out*R) for x and MLA's weights (the KL switched off); kl 1: d KL for the indexer's
// weights (dout = 0).
static void gradcheck(int qr, DsaPhase phase, int kl) {
    int B = 2, T = 6;
    ModelGeometry g;
    make_geom(&g, 12, 2, qr, 6, 4, 4, 3, 100.0, 2, 6, 3);
    Mixer m = {.ops = &dsa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 17 + qr + 10 * phase + 100 * kl);
    size_t np = mixer_n_params(&dsa_mixer, &g, 0), nx = (size_t)B * T * g.d_model;
    float *params = random_params(&g, &rng, 0.5f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *zero = callocCheck(nx, sizeof(float)), *out = mallocCheck(sizeof(float) * nx);
    float *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    dsa_set_phase(phase);
    dsa_set_kl_coef(kl ? 1.0f : 0.0f);
    omp_set_num_threads(1);   // hundreds of tiny forwards: thread start-up would dominate
    float *act = forward_act(&m, out, x, params, B, T);
    dsa_mixer.backward(&m, dx, dparams, kl ? zero : R, act, x, params, B, T);
    unsigned char *want = mallocCheck((size_t)B * T * T);
    dsa_attended(&m, want, act, B, T);

    FdCase f = {.m = &m, .x = x, .params = params, .R = R, .B = B, .T = T, .kl = kl, .want = want};
    ParamTensor t[24];
    int n = dsa_mixer.param_tensors(&g, 0, t, 24), checked = 0;
    for (int i = 0; i < n; i++) {
        int is_index = strncmp(t[i].name, "indexer.", 8) == 0;
        if (is_index != kl) {
            // the other loss's tensors get nothing from this one
            for (size_t k = 0; k < test_tensor_size(&t[i]); k++)
                cr_assert_eq(dparams[t[i].offset + k], 0.0f, "kl %d: d%s[%zu] = %g, expected 0", kl, t[i].name, k,
                             (double)dparams[t[i].offset + k]);
            continue;
        }
        double e = fd_rel_error(&f, params + t[i].offset, dparams + t[i].offset, test_tensor_size(&t[i]), kl ? 2e-3f : 1e-2f);
        cr_expect(e < 5e-3, "q_lora %d phase %d kl %d d%s: relative error %.3g", qr, phase, kl, t[i].name, e);
        checked++;
    }
    cr_assert_eq(checked, kl ? 5 : (qr ? 7 : 5));
    if (!kl) {
        double e = fd_rel_error(&f, x, dx, nx, 1e-2f);
        cr_expect(e < 5e-3, "q_lora %d phase %d dx: relative error %.3g", qr, phase, e);
    } else {
        for (size_t i = 0; i < nx; i++) cr_assert_eq(dx[i], 0.0f, "the indexer's loss must not reach x");
    }
    dsa_set_kl_coef(1.0f);
    free(params); free(x); free(R); free(zero); free(out); free(dparams); free(dx); free(act); free(want);
}

Test(dsa, gradcheck_main_path_sparse) {
    gradcheck(0, DSA_SPARSE, 0);
    gradcheck(8, DSA_SPARSE, 0);
}
Test(dsa, gradcheck_indexer_kl_dense_warmup) {
    gradcheck(0, DSA_DENSE, 1);
    gradcheck(8, DSA_DENSE, 1);
}
Test(dsa, gradcheck_indexer_kl_sparse) { gradcheck(8, DSA_SPARSE, 1); }

// ---- thread count does not change a bit -------------------------------------------------------------

Test(dsa, results_do_not_depend_on_thread_count) {
    int B = 3, T = 10;
    ModelGeometry g;
    small_geom(&g, 24, 4);
    Mixer m = {.ops = &dsa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 8);
    size_t np = mixer_n_params(&dsa_mixer, &g, 0), nx = (size_t)B * T * g.d_model;
    float *params = random_params(&g, &rng, 0.4f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *res[2][3];
    dsa_set_phase(DSA_SPARSE);
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run ? 2 : 1);
        res[run][0] = mallocCheck(sizeof(float) * nx);
        res[run][1] = callocCheck(nx, sizeof(float));
        res[run][2] = callocCheck(np, sizeof(float));
        float *act = forward_act(&m, res[run][0], x, params, B, T);
        dsa_mixer.backward(&m, res[run][1], res[run][2], R, act, x, params, B, T);
        free(act);
    }
    cr_assert(!memcmp(res[0][0], res[1][0], sizeof(float) * nx), "forward differs between 1 and 2 threads");
    cr_assert(!memcmp(res[0][1], res[1][1], sizeof(float) * nx), "dx differs between 1 and 2 threads");
    cr_assert(!memcmp(res[0][2], res[1][2], sizeof(float) * np), "dparams differ between 1 and 2 threads");
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 3; k++) free(res[r][k]);
    free(params); free(x); free(R);
}

// ---- parameters -------------------------------------------------------------------------------------

Test(dsa, parameters_are_mla_then_indexer) {
    ModelGeometry g;
    small_geom(&g, 24, 4);
    ParamTensor t[24], tm[16];
    int n = dsa_mixer.param_tensors(&g, 0, t, 24), nm = mla_mixer.param_tensors(&g, 0, tm, 16);
    cr_assert_eq(n, nm + 5);
    for (int i = 0; i < nm; i++) {
        cr_assert_str_eq(t[i].name, tm[i].name);
        cr_assert_eq(t[i].offset, tm[i].offset);
    }
    const char *names[5] = {"indexer.wq_b", "indexer.wk", "indexer.k_norm", "indexer.k_norm_bias", "indexer.weights_proj"};
    int64_t rows[5] = {3 * 8, 8, 8, 8, 3}, cols[5] = {24, 32, 0, 0, 32};
    size_t off = mixer_n_params(&mla_mixer, &g, 0);
    for (int i = 0; i < 5; i++) {
        const ParamTensor *p = &t[nm + i];
        cr_assert_str_eq(p->name, names[i]);
        cr_assert_eq(p->shape[0], rows[i]);
        cr_assert_eq(p->ndim, cols[i] ? 2 : 1);
        if (cols[i]) cr_assert_eq(p->shape[1], cols[i]);
        cr_assert_eq(p->offset, off);
        off += test_tensor_size(p);
    }
    cr_assert_eq(mixer_n_params(&dsa_mixer, &g, 0), off);
    g.q_lora_rank = 0;
    n = dsa_mixer.param_tensors(&g, 0, t, 24);
    cr_assert_str_eq(t[n - 5].name, "indexer.wq");
    cr_assert_eq(t[n - 5].shape[1], 32);
}

// ---- the two-stage trainer --------------------------------------------------------------------------

Test(dsa, two_stage_training_runs_both_phases_and_ends_sparse) {
    Task task;
    task_recall(&task, 12, 2, 4, 4, 0, 0.5);
    ModelGeometry g;
    dsa_geometry_tiny(&g, 1, 16, 2, 2, 4, 3);
    g.vocab_size = task.vocab_size;
    g.d_ff = 32;
    g.max_seq_len = 12;
    g.dtype_bytes = 4;
    const MixerOps *ops[1] = {&dsa_mixer};
    Model *m = model_new(&g, ops, 7);
    TrainConfig tc;
    train_config_default(&tc, 12, 4, 7);
    tc.progress = 0;
    tc.eval_samples = 8;
    TrainResult r;
    omp_set_num_threads(1);
    dsa_set_phase(DSA_DENSE);
    dsa_train(m, &task, &tc, 5, &r);
    cr_assert_eq(dsa_phase(), DSA_SPARSE, "training must leave the sparse phase on");
    cr_assert_eq(r.steps, 12);
    for (int i = 0; i < 12; i++) cr_assert(isfinite(r.losses[i]) && r.losses[i] > 0, "loss %d = %g", i, (double)r.losses[i]);
    cr_assert(isfinite(r.eval_loss) && r.eval_accuracy >= 0 && r.eval_accuracy <= 1);
    // the indexer's parameters moved (its only gradient is the KL)
    const ModelTensor *t = model_find_tensor(m, "layers.0.mixer.indexer.wk");
    cr_assert(t, "indexer tensor missing from the model");
    Model *fresh = model_new(&g, ops, 7);
    cr_assert(memcmp(m->params + t->offset, fresh->params + t->offset, sizeof(float) * t->size) != 0,
              "the indexer did not train");
    model_free(fresh);
    train_result_free(&r);
    model_free(m);
    task_free(&task);
}

// ---- the chapter program's own input errors ----------------------------------------------------------

Test(dsa, ch07_rejects_missing_weights_and_bad_sweep_with_one_line) {
    char out[8192], dir[256], args[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(args, sizeof args, "--out %s --weights %s/none.safetensors", dir, dir);
    int rc = test_run(out, sizeof out, "ch07", args);
    cr_expect_eq(rc, 2, "missing weights: exit %d: %s", rc, out);
    cr_expect_eq(test_count_lines(out), 1, "missing weights: %s", out);
    cr_expect(strstr(out, "none.safetensors") != NULL, "the message should name the file: %s", out);
    rc = test_run(out, sizeof out, "ch07", "--max-context 100");
    cr_expect_eq(rc, 2, "--max-context 100: exit %d: %s", rc, out);
    cr_expect(strstr(out, "--max-context") != NULL, "%s", out);
    cr_expect_eq(test_count_files(dir), 0, "nothing may be written: %d files", test_count_files(dir));
}
