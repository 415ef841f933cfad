// test_mla.c: chapter 5's multi-head latent attention against PyTorch golden values (forward, attention
// weights, cache contents, gradients), finite differences, its own two cached decode paths (naive and
// absorbed), the KV-cache formula of common/kvcache, and the shared decoupled RoPE key.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "05_mla/mla.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "mathx.h"
#include "rng.h"
#include "safetensors.h"

// ---- helpers ------------------------------------------------------------------------------------

// A one-layer MLA geometry, filled by hand; W > 0 makes the layer a sliding-window (local) layer.
static void make_geom(ModelGeometry *g, int d, int H, int qr, int dc, int dn, int dr, int dv, double theta, int W) {
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "test mla");
    g->n_layers = 1;
    g->d_model = d;
    g->n_heads = H;
    g->n_kv_heads = H;
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
    g->dtype_bytes = 4;
    if (W) {
        g->layer_kind[0] = LAYER_LOCAL;
        g->sliding_window = W;
    }
}

// The usual small test geometry: d 32, H 4, dc 16, dn 8, dr 4, dv 6 (dn != dv catches mixed-up slices).
static void small_geom(ModelGeometry *g, int qr, int W) { make_geom(g, 32, 4, qr, 16, 8, 4, 6, 10000.0, W); }

// Random parameters: matrices N(0, std^2), norm gains 1 + N(0, 0.2^2) (away from 1, so they matter).
static float *random_params(const ModelGeometry *g, Rng *r, float std) {
    size_t np = mixer_n_params(&mla_mixer, g, 0);
    float *p = test_randn(r, np, std);
    ParamTensor t[8];
    int n = mla_mixer.param_tensors(g, 0, t, 8);
    for (int i = 0; i < n; i++)
        if (t[i].ndim == 1)
            for (int k = 0; k < t[i].shape[0]; k++) p[t[i].offset + k] = 1.0f + 0.2f * rng_normal(r);
    return p;
}

// out (B,T,d) and optionally P (B,H,T,T) from one forward.
static void run_forward(const Mixer *m, float *out, float *P, const float *x, const float *params, int B, int T) {
    float *act = mallocCheck(sizeof(float) * mla_mixer.act_floats(m->g, 0, B, T));
    mla_mixer.forward(m, out, act, x, params, B, T);
    if (P) memcpy(P, act, sizeof(float) * (size_t)B * m->g->n_heads * T * T);   // P leads act (mla.c)
    free(act);
}

// ---- golden values from an independent PyTorch implementation (tests/reference/golden_mla.py) -----

static void golden_case(const SafeTensors *st, const char *cs) {
    int B = test_golden_int(st, cs, "B"), T = test_golden_int(st, cs, "T"), d = test_golden_int(st, cs, "d_model");
    int H = test_golden_int(st, cs, "n_heads"), dc = test_golden_int(st, cs, "kv_lora_rank"), dr = test_golden_int(st, cs, "qk_rope_head_dim");
    char k[96];
    snprintf(k, sizeof k, "%s.rope_theta", cs);
    ModelGeometry g;
    make_geom(&g, d, H, test_golden_int(st, cs, "q_lora_rank"), dc, test_golden_int(st, cs, "qk_nope_head_dim"), dr,
              test_golden_int(st, cs, "v_head_dim"), atof(st_meta(st, k)), test_golden_int(st, cs, "sliding_window"));
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};

    // parameters, by the mixer's own names and shapes
    size_t np = mixer_n_params(&mla_mixer, &g, 0), nx = (size_t)B * T * d;
    float *params = mallocCheck(sizeof(float) * np), *dparams = callocCheck(np, sizeof(float));
    ParamTensor t[8];
    int n = mla_mixer.param_tensors(&g, 0, t, 8);
    test_golden_params(params, st, cs, t, n);
    int64_t sx[3] = {B, T, d}, sP[4] = {B, H, T, T};
    const float *x = test_golden(st, cs, "x", 3, sx), *R = test_golden(st, cs, "R", 3, sx);

    // forward and attention weights
    float *out = mallocCheck(sizeof(float) * nx), *dx = callocCheck(nx, sizeof(float));
    float *act = mallocCheck(sizeof(float) * mla_mixer.act_floats(&g, 0, B, T));
    mla_mixer.forward(&m, out, act, x, params, B, T);
    test_assert_close("out", out, test_golden(st, cs, "out", 3, sx), nx, 1e-5f);
    test_assert_close("P", act, test_golden(st, cs, "P", 4, sP), (size_t)B * H * T * T, 1e-5f);

    // gradients of sum(out * R)
    mla_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    test_assert_close("dx", dx, test_golden(st, cs, "dx", 3, sx), nx, 1e-4f);
    test_golden_dparams(st, cs, dparams, t, n, 1e-4f);

    // decode, both paths, sequence 0: outputs, and the cache holds PyTorch's c_kv and k_pe
    int64_t sc[3] = {B, T, dc}, sr[3] = {B, T, dr};
    const float *gc = test_golden(st, cs, "c_kv", 3, sc), *gr = test_golden(st, cs, "k_pe", 3, sr), *gout = test_golden(st, cs, "out", 3, sx);
    for (int path = 0; path <= 1; path++) {
        MixerCache *c = mla_mixer.cache_new(&m, T);
        mla_set_decode_path(c, path);
        float step[64];
        cr_assert(d <= 64);
        for (int pos = 0; pos < T; pos++) {
            mla_mixer.decode(&m, c, step, x + (size_t)pos * d, params);
            test_assert_close(path ? "absorbed decode" : "naive decode", step, gout + (size_t)pos * d, (size_t)d, 1e-5f);
            test_assert_close("cache c_kv", mla_cache_latent(c, pos), gc + (size_t)pos * dc, (size_t)dc, 1e-5f);
            test_assert_close("cache k_pe", mla_cache_rope_key(c, pos), gr + (size_t)pos * dr, (size_t)dr, 1e-5f);
        }
        mla_mixer.cache_free(c);
    }
    free(params); free(dparams); free(out); free(dx); free(act);
}

Test(mla, matches_pytorch_golden) {
    SafeTensors st;
    test_golden_load(&st, "mla.safetensors", "golden_mla.py");
    const char *cases[] = {"direct_q", "q_lora", "local"};
    for (int i = 0; i < 3; i++) golden_case(&st, cases[i]);
    st_free(&st);
}

// ---- backward against central finite differences ---------------------------------------------------

static void gradcheck(int qr, int W) {
    int B = 2, T = 5;
    ModelGeometry g;
    make_geom(&g, 12, 2, qr, 6, 4, 4, 3, 100.0, W);   // small: every parameter is perturbed twice
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 17 + qr + 10 * W);
    size_t np = mixer_n_params(&mla_mixer, &g, 0), nx = (size_t)B * T * g.d_model;
    float *params = random_params(&g, &rng, 0.4f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * mla_mixer.act_floats(&g, 0, B, T));
    float *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    mla_mixer.forward(&m, out, act, x, params, B, T);
    mla_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);

    ParamTensor t[8];
    int n = mla_mixer.param_tensors(&g, 0, t, 8);
    cr_assert_eq(n, qr ? 7 : 5);
    for (int i = 0; i < n; i++) {
        double e = test_mixer_fd_rel_error(&m, params + t[i].offset, dparams + t[i].offset, test_tensor_size(&t[i]), out,
                                           x, params, R, B, T);
        cr_expect(e < 2e-3, "q_lora %d W %d d%s: relative error %.3g", qr, W, t[i].name, e);
    }
    double e = test_mixer_fd_rel_error(&m, x, dx, nx, out, x, params, R, B, T);
    cr_expect(e < 2e-3, "q_lora %d W %d dx: relative error %.3g", qr, W, e);

    // backward accumulates: a second call adds the same gradient again
    float *dx2 = mallocCheck(sizeof(float) * nx);
    memcpy(dx2, dx, sizeof(float) * nx);
    mla_mixer.backward(&m, dx2, dparams, R, act, x, params, B, T);
    for (size_t i = 0; i < nx; i++) cr_assert(fabsf(dx2[i] - 2 * dx[i]) <= 1e-5f * fmaxf(1, fabsf(dx[i])));
    free(params); free(x); free(R); free(out); free(act); free(dparams); free(dx); free(dx2);
}

Test(mla, gradcheck_direct_query) { gradcheck(0, 0); }
Test(mla, gradcheck_query_low_rank) { gradcheck(8, 0); }
Test(mla, gradcheck_local_window) { gradcheck(8, 2); }

// ---- both decode paths equal the full forward, and each other ----------------------------------------

static void decode_matches_forward(int qr, int W, int dr) {
    int T = 12;
    ModelGeometry g;
    make_geom(&g, 32, 4, qr, 16, 8, dr, 6, 10000.0, W);
    int d = g.d_model;
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 31 + qr + W);
    float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *full = mallocCheck(sizeof(float) * T * d), *naive = mallocCheck(sizeof(float) * d);
    float *absorbed = mallocCheck(sizeof(float) * d);
    run_forward(&m, full, NULL, x, params, 1, T);
    MixerCache *cn = mla_mixer.cache_new(&m, T), *ca = mla_mixer.cache_new(&m, T);
    cr_assert_eq(mla_decode_path(ca), 1, "the default decode path is the absorbed one");
    mla_set_decode_path(cn, 0);
    cr_assert_eq(mla_decode_path(cn), 0);
    for (int t = 0; t < T; t++) {
        mla_mixer.decode(&m, cn, naive, &x[t * d], params);
        mla_mixer.decode(&m, ca, absorbed, &x[t * d], params);
        for (int i = 0; i < d; i++) {
            float want = full[t * d + i], tol = 1e-5f * fmaxf(1, fabsf(want));
            // the naive path runs the forward's arithmetic on the cached latents: the same bits
            cr_assert(naive[i] == want, "q_lora %d W %d pos %d dim %d: naive %.9g forward %.9g", qr, W, t, i,
                      (double)naive[i], (double)want);
            cr_assert(fabsf(absorbed[i] - want) <= tol, "q_lora %d W %d pos %d dim %d: absorbed %.9g forward %.9g", qr,
                      W, t, i, (double)absorbed[i], (double)want);
            cr_assert(fabsf(absorbed[i] - naive[i]) <= tol, "q_lora %d W %d pos %d dim %d: absorbed %.9g naive %.9g",
                      qr, W, t, i, (double)absorbed[i], (double)naive[i]);
        }
    }
    mla_mixer.cache_free(cn);
    mla_mixer.cache_free(ca);
    free(params); free(x); free(full); free(naive); free(absorbed);
}

Test(mla, decode_equals_forward_direct_query) { decode_matches_forward(0, 0, 4); }
Test(mla, decode_equals_forward_query_low_rank) { decode_matches_forward(24, 0, 4); }
Test(mla, decode_equals_forward_local_ring_buffer) { decode_matches_forward(24, 4, 4); }
// Kimi Linear's MLA layers use no RoPE at all: qk_rope_head_dim = 0, the cache is the latent alone.
Test(mla, decode_equals_forward_without_rope_key) { decode_matches_forward(0, 0, 0); }

// Switching path mid-sequence reads the same cache: nothing path-specific is stored.
Test(mla, decode_path_can_switch_mid_sequence) {
    int T = 9;
    ModelGeometry g;
    small_geom(&g, 0, 0);
    int d = g.d_model;
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 77);
    float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *full = mallocCheck(sizeof(float) * T * d), *step = mallocCheck(sizeof(float) * d);
    run_forward(&m, full, NULL, x, params, 1, T);
    MixerCache *c = mla_mixer.cache_new(&m, T);
    for (int t = 0; t < T; t++) {
        mla_set_decode_path(c, t % 2);
        mla_mixer.decode(&m, c, step, &x[t * d], params);
        test_assert_close("switching decode", step, full + (size_t)t * d, (size_t)d, 1e-5f);
    }
    mla_mixer.cache_free(c);
    free(params); free(x); free(full); free(step);
}

// ---- the cache holds what the formula says --------------------------------------------------------

Test(mla, cache_bytes_equal_kvcache_formula) {
    for (int W = 0; W <= 5; W += 5) {
        ModelGeometry g;
        small_geom(&g, 24, W);
        Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
        Rng rng;
        rng_seed(&rng, 3);
        float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, 32, 1.0f), out[32];
        cr_assert_eq(kvcache_elems_per_token_layer(&g, 0), 16 + 4, "MLA caches kv_lora_rank + qk_rope_head_dim");
        for (int path = 0; path <= 1; path++) {
            MixerCache *c = mla_mixer.cache_new(&m, 20);
            mla_set_decode_path(c, path);
            cr_assert_eq(mla_mixer.cache_bytes(c), 0);
            for (int n = 1; n <= 20; n++) {
                mla_mixer.decode(&m, c, out, x, params);
                double want = kvcache_total_bytes(&g, n, 1);
                cr_assert_eq((double)mla_mixer.cache_bytes(c), want, "W %d path %d after %d tokens: %zu bytes, formula %.0f",
                             W, path, n, mla_mixer.cache_bytes(c), want);
            }
            mla_mixer.cache_free(c);
        }
        free(params); free(x);
    }
}

// ---- the decoupled RoPE key is one key shared by every head ----------------------------------------

Test(mla, rope_key_is_shared_by_all_heads) {
    int T = 6, H = 4;
    ModelGeometry g;
    small_geom(&g, 0, 0);
    int d = g.d_model, dc = g.kv_lora_rank, dr = g.qk_rope_head_dim, dn = g.qk_nope_head_dim, dv = g.v_head_dim;
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 123);
    float *p1 = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    size_t np = mixer_n_params(&mla_mixer, &g, 0);
    float *p2 = mallocCheck(sizeof(float) * np);
    memcpy(p2, p1, sizeof(float) * np);
    // change head 2's rows of wkv_b (both its W_UK and its W_UV)
    ParamTensor t[8];
    int n = mla_mixer.param_tensors(&g, 0, t, 8);
    const ParamTensor *wkv_b = test_find_param(t, n, "wkv_b");
    cr_assert(wkv_b && wkv_b->shape[0] == H * (dn + dv) && wkv_b->shape[1] == dc);
    float *rows = p2 + wkv_b->offset + (size_t)2 * (dn + dv) * dc;
    for (int i = 0; i < (dn + dv) * dc; i++) rows[i] += 0.5f * rng_normal(&rng);

    MixerCache *c1 = mla_mixer.cache_new(&m, T), *c2 = mla_mixer.cache_new(&m, T);
    float o1[32], o2[32];
    double diff = 0;
    for (int pos = 0; pos < T; pos++) {
        mla_mixer.decode(&m, c1, o1, x + (size_t)pos * d, p1);
        mla_mixer.decode(&m, c2, o2, x + (size_t)pos * d, p2);
        for (int i = 0; i < d; i++) diff += fabs(o1[i] - o2[i]);
        cr_assert(!memcmp(mla_cache_rope_key(c1, pos), mla_cache_rope_key(c2, pos), sizeof(float) * dr),
                  "position %d: k_pe in the cache depends on a head's up-projection", pos);
        cr_assert(!memcmp(mla_cache_latent(c1, pos), mla_cache_latent(c2, pos), sizeof(float) * dc),
                  "position %d: c_kv in the cache depends on a head's up-projection", pos);
    }
    cr_assert(diff > 1e-3, "changing head 2's up-projection should change the output (diff %g)", diff);
    // and the cache is the same size whatever H is: no per-head entry
    ModelGeometry g8 = g;
    g8.n_heads = g8.n_kv_heads = 8;
    Mixer m8 = {.ops = &mla_mixer, .g = &g8, .layer = 0};
    float *p8 = random_params(&g8, &rng, 0.3f);
    MixerCache *c8 = mla_mixer.cache_new(&m8, T);
    for (int pos = 0; pos < T; pos++) mla_mixer.decode(&m8, c8, o1, x + (size_t)pos * d, p8);
    cr_assert_eq(mla_mixer.cache_bytes(c8), mla_mixer.cache_bytes(c1));
    mla_mixer.cache_free(c1);
    mla_mixer.cache_free(c2);
    mla_mixer.cache_free(c8);
    free(p1); free(p2); free(p8); free(x);
}

// ---- parameters, mixing matrix, thread count ---------------------------------------------------------

Test(mla, parameter_names_shapes_and_init) {
    ModelGeometry g;
    small_geom(&g, 24, 0);   // d 32, H 4, q_lora 24, dc 16, dn 8, dr 4, dv 6
    ParamTensor t[8];
    int n = mla_mixer.param_tensors(&g, 0, t, 8);
    const char *names[7] = {"wq_a", "q_norm", "wq_b", "wkv_a", "kv_norm", "wkv_b", "wo"};
    int64_t shapes[7][2] = {{24, 32}, {24, 0}, {48, 24}, {20, 32}, {16, 0}, {56, 16}, {32, 24}};
    cr_assert_eq(n, 7);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq(t[i].name, names[i]);
        cr_assert_eq(t[i].ndim, shapes[i][1] ? 2 : 1, "%s ndim", names[i]);
        cr_assert_eq(t[i].shape[0], shapes[i][0], "%s rows", names[i]);
        if (shapes[i][1]) cr_assert_eq(t[i].shape[1], shapes[i][1], "%s cols", names[i]);
        cr_assert_eq(t[i].offset, off, "%s offset", names[i]);
        off += test_tensor_size(&t[i]);
    }
    cr_assert_eq(mixer_n_params(&mla_mixer, &g, 0), off);
    g.q_lora_rank = 0;
    n = mla_mixer.param_tensors(&g, 0, t, 8);
    cr_assert_eq(n, 5);
    cr_assert_str_eq(t[0].name, "wq");
    cr_assert(t[0].shape[0] == 48 && t[0].shape[1] == 32);

    // init: norm gains exactly 1, matrices small and not zero
    g.q_lora_rank = 24;
    n = mla_mixer.param_tensors(&g, 0, t, 8);
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    float *p = callocCheck(off, sizeof(float));
    Rng rng;
    rng_seed(&rng, 1);
    mla_mixer.init(&m, p, &rng);
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (size_t k = 0; k < test_tensor_size(&t[i]); k++) {
            float v = p[t[i].offset + k];
            if (t[i].ndim == 1) cr_assert_eq(v, 1.0f, "%s[%zu] = %g", t[i].name, k, (double)v);
            ss += (double)v * v;
        }
        if (t[i].ndim == 2) {
            double rms = sqrt(ss / test_tensor_size(&t[i]));
            cr_assert(rms > 0.005 && rms < 0.03, "%s rms %g", t[i].name, rms);
        }
    }
    free(p);
}

Test(mla, mixing_matrix_is_batch0_attention) {
    int T = 7, B = 2;
    ModelGeometry g;
    small_geom(&g, 0, 3);
    int d = g.d_model, H = g.n_heads;
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 9);
    float *params = random_params(&g, &rng, 0.5f), *x = test_randn(&rng, (size_t)B * T * d, 1.0f);
    float *P = mallocCheck(sizeof(float) * H * T * T), *A = mallocCheck(sizeof(float) * H * T * T);
    float *out = mallocCheck(sizeof(float) * B * T * d);
    float *act = mallocCheck(sizeof(float) * mla_mixer.act_floats(&g, 0, B, T));
    cr_assert_eq(mla_mixer.n_mix_heads(&g, 0), H);
    mla_attention_probs(P, x, params, &m, T);
    mla_mixer.forward(&m, out, act, x, params, B, T);
    mla_mixer.mixing_matrix(&m, A, act, params, T);
    cr_assert(!memcmp(A, P, sizeof(float) * H * T * T), "mixing_matrix is not batch 0's P");
    for (int h = 0; h < H; h++)
        for (int i = 0; i < T; i++) {
            double sum = 0;
            for (int j = 0; j < T; j++) {
                float p = P[(h * T + i) * T + j];
                if (j <= i && j > i - 3) cr_assert(p > 0, "h%d (%d,%d) visible but p=%g", h, i, j, (double)p);
                else cr_assert(p == 0.0f, "h%d (%d,%d) masked but p=%g", h, i, j, (double)p);
                sum += p;
            }
            cr_assert(fabs(sum - 1) < 1e-5, "h%d row %d sums to %.9g", h, i, sum);
        }
    free(params); free(x); free(P); free(A); free(out); free(act);
}

Test(mla, same_bits_for_any_thread_count) {
    int T = 9, B = 2;
    ModelGeometry g;
    small_geom(&g, 24, 0);
    int d = g.d_model;
    size_t np = mixer_n_params(&mla_mixer, &g, 0), nx = (size_t)B * T * d;
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 4);
    float *params = random_params(&g, &rng, 0.3f), *x = test_randn(&rng, nx, 1.0f);
    float *out[2], *dx[2], *dp[2];
    float *act = mallocCheck(sizeof(float) * mla_mixer.act_floats(&g, 0, B, T));
    int keep = omp_get_max_threads();
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k ? 3 : 1);
        out[k] = mallocCheck(sizeof(float) * nx);
        dx[k] = callocCheck(nx, sizeof(float));
        dp[k] = callocCheck(np, sizeof(float));
        mla_mixer.forward(&m, out[k], act, x, params, B, T);
        mla_mixer.backward(&m, dx[k], dp[k], x, act, x, params, B, T);   // dout = x: any fixed tensor
    }
    omp_set_num_threads(keep);
    cr_assert(!memcmp(out[0], out[1], sizeof(float) * nx), "forward depends on the thread count");
    cr_assert(!memcmp(dx[0], dx[1], sizeof(float) * nx), "dx depends on the thread count");
    cr_assert(!memcmp(dp[0], dp[1], sizeof(float) * np), "dparams depend on the thread count");
    for (int k = 0; k < 2; k++) { free(out[k]); free(dx[k]); free(dp[k]); }
    free(params); free(x); free(act);
}

// ---- the tiny geometry helper and the timing helper -------------------------------------------------

Test(mla, tiny_geometry_and_decode_timing) {
    ModelGeometry g;
    mla_geometry_tiny(&g, 2, 64, 4);
    char why[256];
    cr_assert(geometry_validate(&g, why, sizeof why), "%s", why);
    cr_assert_eq(g.attn, ATTN_MLA);
    cr_assert(g.kv_lora_rank == 32 && g.qk_rope_head_dim == 8 && g.qk_nope_head_dim == 16 && g.v_head_dim == 16 &&
              g.q_lora_rank == 48 && g.head_dim == 24);
    cr_assert_eq(kvcache_elems_per_token_layer(&g, 1), 40);
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    float *params = mallocCheck(sizeof(float) * mixer_n_params(&mla_mixer, &g, 0));
    Rng rng;
    rng_seed(&rng, 2);
    mla_mixer.init(&m, params, &rng);
    for (int path = 0; path <= 1; path++) {
        double s = mla_decode_seconds_per_token(&g, params, 64, path, 3, 1);
        cr_assert(s > 0 && s < 1.0, "path %d: %g s per token", path, s);
    }
    free(params);
}
