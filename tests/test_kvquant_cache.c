// test_kvquant_cache.c: quantized KV caches in the GQA and MLA decode paths (chapter 12): fp32 codes give
// the plain cache's bits, a quantized step equals attention over the decoded rows (so the rotation trick
// of the working domain is exact), MLA's absorbed path equals its naive path on the same codes, and the
// bytes a quantized cache reports equal ./kvcache's formula for every scheme, token after token.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "05_mla/mla.h"
#include "12_kvquant/kvq_model.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "kvquant.h"
#include "registry.h"
#include "rng.h"

static const char *SCHEMES[] = {"bf16", "fp16", "fp8", "int8", "int4:8", "int3:16", "int2:5", "kivi4:4",
                                "kivi2:8", "turbo2", "turbo3", "turbo4+qjl", "turbo2+qjl"};
#define N_SCHEMES (int)(sizeof SCHEMES / sizeof SCHEMES[0])

static void gqa_geom(ModelGeometry *g, int H, int G, int dh, int W) {
    geometry_init(g, "test gqa", 1, 32, H, G);
    g->head_dim = dh;
    g->max_seq_len = 64;
    g->dtype_bytes = 4;
    if (W) {
        g->layer_kind[0] = LAYER_LOCAL;
        g->sliding_window = W;
    }
}

static float *init_params(const MixerOps *ops, const ModelGeometry *g, uint64_t seed) {
    Mixer m = {.ops = ops, .g = g, .layer = 0};
    float *p = mallocCheck(sizeof(float) * mixer_n_params(ops, g, 0));
    Rng r;
    rng_seed(&r, seed);
    ops->init(&m, p, &r);
    for (size_t i = 0; i < mixer_n_params(ops, g, 0); i++) p[i] *= 8.0f;   // sharper attention than at init
    return p;
}

// ---- lossless codes change nothing ---------------------------------------------------------------------

static void gqa_fp32_is_bitwise(int W) {
    ModelGeometry g;
    gqa_geom(&g, 4, 2, 16, W);
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    float *params = init_params(&gqa_mixer, &g, 3);
    Rng r;
    rng_seed(&r, 4);
    int T = 24;
    float *x = test_randn(&r, (size_t)T * 32, 1.0f), a[32], b[32];
    KvqScheme s = kvq_scheme("fp32");
    KvQuant *q = kvq_new(&s, 1);
    MixerCache *plain = gqa_mixer.cache_new(&m, T), *coded = gqa_mixer.cache_new(&m, T);
    mha_cache_set_quant(coded, q);
    for (int t = 0; t < T; t++) {
        gqa_mixer.decode(&m, plain, a, x + 32 * t, params);
        gqa_mixer.decode(&m, coded, b, x + 32 * t, params);
        cr_assert(memcmp(a, b, sizeof a) == 0, "W %d step %d: fp32 codes changed the output", W, t);
        cr_assert_eq(gqa_mixer.cache_bytes(plain), gqa_mixer.cache_bytes(coded), "W %d step %d", W, t);
    }
    gqa_mixer.cache_free(plain);
    gqa_mixer.cache_free(coded);
    kvq_free(q);
    free(params);
    free(x);
}

Test(kvquant_cache, gqa_fp32_codes_equal_the_plain_cache_bit_for_bit) {
    gqa_fp32_is_bitwise(0);
    gqa_fp32_is_bitwise(5);   // a ring buffer
}

Test(kvquant_cache, mla_fp32_codes_equal_the_plain_cache_bit_for_bit) {
    ModelGeometry g;
    mla_geometry_tiny(&g, 1, 32, 4);
    g.max_seq_len = 64;
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    float *params = init_params(&mla_mixer, &g, 5);
    Rng r;
    rng_seed(&r, 6);
    int T = 20;
    float *x = test_randn(&r, (size_t)T * 32, 1.0f), a[32], b[32];
    KvqScheme s = kvq_scheme("fp32");
    KvQuant *q = kvq_new(&s, 1);
    for (int path = 0; path <= 1; path++) {
        MixerCache *plain = mla_mixer.cache_new(&m, T), *coded = mla_mixer.cache_new(&m, T);
        mla_cache_set_quant(coded, q, NULL);
        mla_set_decode_path(plain, path);
        mla_set_decode_path(coded, path);
        for (int t = 0; t < T; t++) {
            mla_mixer.decode(&m, plain, a, x + 32 * t, params);
            mla_mixer.decode(&m, coded, b, x + 32 * t, params);
            cr_assert(memcmp(a, b, sizeof a) == 0, "path %d step %d: fp32 codes changed the output", path, t);
            cr_assert_eq(mla_mixer.cache_bytes(plain), mla_mixer.cache_bytes(coded));
        }
        mla_mixer.cache_free(plain);
        mla_mixer.cache_free(coded);
    }
    kvq_free(q);
    free(params);
    free(x);
}

// The shipped models decode to the same logits with fp32 codes in every attention layer (plain GQA,
// MLA, gated attention, and the hybrid whose DeltaNet layers keep their state).
Test(kvquant_cache, shipped_models_with_fp32_codes_decode_the_same_bits) {
    static const char *files[] = {"ch04_recall_g2", "ch05_recall_mla", "ch09_attention", "ch09_hybrid"};
    static const int quantized[] = {2, 2, 2, 1};
    KvqScheme s = kvq_scheme("fp32");
    KvQuant *q = kvq_new(&s, 1);
    for (int f = 0; f < 4; f++) {
        char path[1024], err[512];
        snprintf(path, sizeof path, "%s/data/weights/%s.safetensors", test_root(), files[f]);
        Model *m = model_load(path, mixer_by_name, NULL, err, sizeof err);
        cr_assert(m, "%s", err);
        int V = m->g.vocab_size, T = 16;
        float *a = mallocCheck(sizeof(float) * 2 * (size_t)V), *b = a + V;
        ModelCache *plain = model_cache_new(m, T), *coded = model_cache_new(m, T);
        cr_expect_eq(kvq_model_quantize(coded, q, NULL), quantized[f], "%s: attention layers", files[f]);
        for (int t = 0; t < T; t++) {
            model_decode(plain, a, (3 * t + 1) % V);
            model_decode(coded, b, (3 * t + 1) % V);
            cr_assert(memcmp(a, b, sizeof(float) * (size_t)V) == 0, "%s step %d", files[f], t);
        }
        model_cache_free(plain);
        model_cache_free(coded);
        model_free(m);
        free(a);
    }
    kvq_free(q);
}

// ---- a quantized step is attention over the decoded rows ----------------------------------------------------

// Double-precision softmax attention of H query heads over t+1 rows of G KV heads (dh each).
static void attention_ref(double *o, const float *q, const float *K, const float *V, int n, int H, int G, int dh) {
    for (int h = 0; h < H; h++) {
        int g = h / (H / G);
        double *s = mallocCheck(sizeof(double) * (size_t)n), mx = -INFINITY, L = 0.0;
        for (int j = 0; j < n; j++) {
            double d = 0.0;
            for (int c = 0; c < dh; c++) d += (double)q[h * dh + c] * K[(size_t)j * G * dh + g * dh + c];
            s[j] = d / sqrt((double)dh);
            mx = fmax(mx, s[j]);
        }
        for (int c = 0; c < dh; c++) o[h * dh + c] = 0.0;
        for (int j = 0; j < n; j++) {
            double e = exp(s[j] - mx);
            L += e;
            for (int c = 0; c < dh; c++) o[h * dh + c] += e * V[(size_t)j * G * dh + g * dh + c];
        }
        for (int c = 0; c < dh; c++) o[h * dh + c] /= L;
        free(s);
    }
}

Test(kvquant_cache, gqa_quantized_step_is_attention_over_the_decoded_rows) {
    enum { H = 4, G = 2, DH = 16, T = 40 };
    ModelGeometry g;
    gqa_geom(&g, H, G, DH, 0);
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    for (int i = 0; i < N_SCHEMES; i++) {
        KvqScheme s = kvq_scheme(SCHEMES[i]);
        KvQuant *q = kvq_new(&s, 7), *q2 = kvq_new(&s, 7);   // the same seed: the same rotation and codebook
        MixerCache *c = mha_cache_new_with_scratch(&m, T, 0);
        mha_cache_set_quant(c, q);
        int w[G] = {DH, DH};
        KvqStream *rk = kvq_stream_new(q2, KVQ_KEY, w, G, T), *rv = kvq_stream_new(q2, KVQ_VALUE, w, G, T);
        Rng r;
        rng_seed(&r, 8);
        float *K = mallocCheck(sizeof(float) * 2 * T * G * DH), *V = K + T * G * DH;
        float qv[H * DH], k[G * DH], v[G * DH], o[H * DH];
        double want[H * DH];
        for (int t = 0; t < T; t++) {
            for (int j = 0; j < H * DH; j++) qv[j] = 2.0f * rng_normal(&r);
            for (int j = 0; j < G * DH; j++) k[j] = rng_normal(&r) + (j % DH == 3 ? 8.0f : 0.0f);
            for (int j = 0; j < G * DH; j++) v[j] = rng_normal(&r);
            mha_cache_step(c, o, qv, k, v, H, DH, NULL);
            kvq_put(rk, t, k);
            kvq_put(rv, t, v);
            kvq_get(rk, K, G * DH, 0, t, 1);
            kvq_get(rv, V, G * DH, 0, t, 1);
            attention_ref(want, qv, K, V, t + 1, H, G, DH);
            for (int j = 0; j < H * DH; j++)
                cr_assert(fabs(o[j] - want[j]) <= 2e-5 * (1 + fabs(want[j])), "%s step %d dim %d: %.8g vs %.8g", s.name, t,
                          j, o[j], want[j]);
        }
        free(K);
        kvq_stream_free(rk);
        kvq_stream_free(rv);
        gqa_mixer.cache_free(c);
        kvq_free(q);
        kvq_free(q2);
    }
}

// MLA's two paths read the same codes: the naive one the decoded latents, the absorbed one the latents in
// the codes' working domain with its query and output turned; they must agree for every scheme.
Test(kvquant_cache, mla_absorbed_equals_naive_on_the_same_codes) {
    ModelGeometry g;
    mla_geometry_tiny(&g, 1, 32, 4);
    g.max_seq_len = 64;
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    float *params = init_params(&mla_mixer, &g, 9);
    Rng r;
    rng_seed(&r, 10);
    int T = 24;
    float *x = test_randn(&r, (size_t)T * 32, 1.0f), a[32], b[32];
    KvqScheme bf = kvq_scheme("bf16");
    KvQuant *rope_bf16 = kvq_new(&bf, 1);
    for (int i = 0; i < 2 * N_SCHEMES; i++) {   // then again with the RoPE key in bf16
        KvqScheme s = kvq_scheme(SCHEMES[i % N_SCHEMES]);
        KvQuant *q = kvq_new(&s, 11), *rope = i < N_SCHEMES ? NULL : rope_bf16;
        MixerCache *naive = mla_mixer.cache_new(&m, T), *absorbed = mla_mixer.cache_new(&m, T);
        mla_cache_set_quant(naive, q, rope);
        mla_cache_set_quant(absorbed, q, rope);
        mla_set_decode_path(naive, 0);
        for (int t = 0; t < T; t++) {
            mla_mixer.decode(&m, naive, a, x + 32 * t, params);
            mla_mixer.decode(&m, absorbed, b, x + 32 * t, params);
            test_assert_close_scaled(s.name, b, a, 32, 2e-5f);
        }
        mla_mixer.cache_free(naive);
        mla_mixer.cache_free(absorbed);
        kvq_free(q);
    }
    kvq_free(rope_bf16);
    free(params);
    free(x);
}

// ---- bytes: what the caches hold is what ./kvcache counts -------------------------------------------------------

Test(kvquant_cache, quantized_model_cache_bytes_equal_the_formula) {
    static const char *files[] = {"ch03_recall", "ch04_recall_g1", "ch05_recall_mla", "ch09_hybrid"};
    for (int f = 0; f < 4; f++) {
        char path[1024], err[512];
        snprintf(path, sizeof path, "%s/data/weights/%s.safetensors", test_root(), files[f]);
        Model *m = model_load(path, mixer_by_name, NULL, err, sizeof err);
        cr_assert(m, "%s", err);
        ModelGeometry g = m->g;
        g.dtype_bytes = 4;   // KIVI's residual tokens stay fp32 in these caches
        int T = m->g.max_seq_len;
        float *logits = mallocCheck(sizeof(float) * (size_t)m->g.vocab_size);
        for (int i = 0; i < N_SCHEMES; i++) {
            KvqScheme s = kvq_scheme(SCHEMES[i]);
            KvQuant *q = kvq_new(&s, 1);
            ModelCache *c = model_cache_new(m, T);
            kvq_model_quantize(c, q, NULL);
            for (int t = 0; t < T; t++) {
                model_decode(c, logits, t % m->g.vocab_size);
                double want = kvcache_quant_total_bytes(&g, &s, NULL, t + 1, 1);
                cr_assert_eq((double)model_cache_bytes(c), want, "%s %s after %d tokens: %zu B, formula %.0f", files[f],
                             s.name, t + 1, model_cache_bytes(c), want);
            }
            // and the long-run rate is the formula's bytes per token
            if (s.family != KVQ_KIVI)
                cr_expect_eq(kvq_model_bytes_per_token(m, &s, NULL) * T + kvcache_fixed_bytes(&g), (double)model_cache_bytes(c));
            model_cache_free(c);
            kvq_free(q);
        }
        free(logits);
        model_free(m);
    }
}

// MLA with its RoPE key in bf16 and the latent coded: the cache counts both, as the formula does.
Test(kvquant_cache, mla_rope_key_in_its_own_format_is_counted) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/data/weights/ch05_recall_mla.safetensors", test_root());
    Model *m = model_load(path, mixer_by_name, NULL, err, sizeof err);
    cr_assert(m, "%s", err);
    ModelGeometry g = m->g;
    g.dtype_bytes = 4;
    float *logits = mallocCheck(sizeof(float) * (size_t)m->g.vocab_size);
    KvqScheme bf = kvq_scheme("bf16"), k2 = kvq_scheme("kivi2:8"), t3 = kvq_scheme("turbo3");
    KvQuant *rope = kvq_new(&bf, 1), *q[2] = {kvq_new(&k2, 1), kvq_new(&t3, 1)};
    const KvqScheme *sc[2] = {&k2, &t3};
    for (int i = 0; i < 2; i++) {
        ModelCache *c = model_cache_new(m, 32);
        kvq_model_quantize(c, q[i], rope);
        for (int t = 0; t < 32; t++) {
            model_decode(c, logits, t % m->g.vocab_size);
            cr_assert_eq((double)model_cache_bytes(c), kvcache_quant_total_bytes(&g, sc[i], &bf, t + 1, 1), "%s step %d",
                         sc[i]->name, t);
        }
        model_cache_free(c);
    }
    // per token, turbo3: 2 layers x (latent 32: 12 + 2; RoPE key 8 in bf16: 16)
    cr_expect_eq(kvq_model_bytes_per_token(m, &t3, &bf), 2.0 * (14 + 16));
    kvq_free(rope);
    kvq_free(q[0]);
    kvq_free(q[1]);
    free(logits);
    model_free(m);
}

// A window layer's quantized ring stops growing at W tokens, like the fp32 one.
Test(kvquant_cache, quantized_ring_buffer_holds_w_tokens) {
    ModelGeometry g;
    gqa_geom(&g, 4, 2, 16, 6);
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    float *params = init_params(&gqa_mixer, &g, 12);
    Rng r;
    rng_seed(&r, 13);
    float *x = test_randn(&r, 32, 1.0f), out[32];
    KvqScheme s = kvq_scheme("int4:8");
    KvQuant *q = kvq_new(&s, 1);
    MixerCache *c = gqa_mixer.cache_new(&m, 30);
    mha_cache_set_quant(c, q);
    for (int t = 0; t < 30; t++) {
        gqa_mixer.decode(&m, c, out, x, params);
        cr_assert_eq((double)gqa_mixer.cache_bytes(c), kvcache_quant_total_bytes(&g, &s, NULL, t + 1, 1), "step %d", t);
    }
    cr_expect_eq(gqa_mixer.cache_bytes(c), 6 * 2 * 2 * (size_t)(8 + 2 * 4), "6 tokens x K,V x 2 heads x 16 B");
    gqa_mixer.cache_free(c);
    kvq_free(q);
    free(params);
    free(x);
}
