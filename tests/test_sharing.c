// test_sharing.c: chapter 11's options of the attention mixers and of the model: learned attention
// sinks (gqa and gated: PyTorch golden values, rows that sum to 1 with the sink, decode = forward,
// finite differences) and cross-layer KV sharing (Gemma 3n / 4: readers have no K/V weights and no cache,
// decode = forward, bytes = kvcache's formula, finite differences through the shared K/V, weights files),
// and a whole DeepSeek V4-style model (window, CSA and HCA layers) decoded against its forward.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "03_mha/mha.h"
#include "07_dsa/dsa.h"
#include "08_gated/gated.h"
#include "11_compressed/compressed.h"
#include "check.h"
#include "helpers.h"
#include "kvcache.h"
#include "model.h"
#include "registry.h"
#include "rng.h"
#include "safetensors.h"

static void one_thread(void) { omp_set_num_threads(1); }
TestSuite(sinks, .init = one_thread);
TestSuite(kv_sharing, .init = one_thread);
TestSuite(v4_model, .init = one_thread);

// ---- learned sinks ----------------------------------------------------------------------------------

static void gqa_geom(ModelGeometry *g, int d, int H, int G, int dh, int W) {
    geometry_init(g, "test sinks", 1, d, H, G);
    g->head_dim = dh;
    g->max_seq_len = 64;
    g->vocab_size = 8;
    g->dtype_bytes = 4;
    g->attention_sinks = SINKS_FULL | SINKS_SLIDING;
    if (W) {
        g->sliding_window = W;
        g->layer_kind[0] = LAYER_LOCAL;
    }
}

static void gqa_golden_case(const SafeTensors *st, const char *cs) {
    int B = test_golden_int(st, cs, "B"), T = test_golden_int(st, cs, "T"), d = test_golden_int(st, cs, "d_model");
    int H = test_golden_int(st, cs, "n_heads");
    ModelGeometry g;
    gqa_geom(&g, d, H, test_golden_int(st, cs, "n_kv_heads"), test_golden_int(st, cs, "head_dim"),
             test_golden_int(st, cs, "sliding_window"));
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    size_t np = mixer_n_params(&gqa_mixer, &g, 0), nx = (size_t)B * T * d;
    ParamTensor t[8];
    int n = gqa_mixer.param_tensors(&g, 0, t, 8);
    cr_assert_eq(n, 5, "wq, wk, wv, wo and sinks");
    cr_assert_str_eq(t[4].name, "sinks");
    float *params = mallocCheck(sizeof(float) * np), *dparams = callocCheck(np, sizeof(float));
    test_golden_params(params, st, cs, t, n);
    int64_t sx[3] = {B, T, d}, ss[3] = {B, H, T};
    const float *x = test_golden(st, cs, "x", 3, sx), *R = test_golden(st, cs, "R", 3, sx), *gout = test_golden(st, cs, "out", 3, sx);
    float *out = mallocCheck(sizeof(float) * nx), *dx = callocCheck(nx, sizeof(float));
    float *act = mallocCheck(sizeof(float) * gqa_mixer.act_floats(&g, 0, B, T));
    gqa_mixer.forward(&m, out, act, x, params, B, T);
    test_assert_close("out", out, gout, nx, 2e-5f);
    test_assert_close("psink", mha_act_sink_weights(&m, act, B, T), test_golden(st, cs, "psink", 3, ss), (size_t)B * H * T,
                      2e-5f);
    gqa_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    test_assert_close("dx", dx, test_golden(st, cs, "dx", 3, sx), nx, 1e-4f);
    test_golden_dparams(st, cs, dparams, t, n, 1e-4f);
    for (int b = 0; b < B; b++) {
        MixerCache *c = gqa_mixer.cache_new(&m, T);
        float step[64];
        for (int p = 0; p < T; p++) {
            gqa_mixer.decode(&m, c, step, x + ((size_t)b * T + p) * d, params);
            cr_assert(!memcmp(step, out + ((size_t)b * T + p) * d, sizeof(float) * (size_t)d), "%s: decode at %d differs", cs, p);
        }
        gqa_mixer.cache_free(c);
    }
    free(params); free(dparams); free(out); free(dx); free(act);
}

Test(sinks, gqa_matches_pytorch_golden) {
    SafeTensors st;
    test_golden_load(&st, "compressed.safetensors", "golden_compressed.py");
    gqa_golden_case(&st, "gqa_sinks");
    gqa_golden_case(&st, "gqa_sinks_window");
    st_free(&st);
}

// With a sink a row gives less than 1 to the tokens: the rest is exactly the sink's weight.
Test(sinks, rows_and_sink_sum_to_one) {
    int T = 9, d = 16;
    ModelGeometry g;
    gqa_geom(&g, d, 4, 2, 4, 0);
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 12);
    float *params = test_randn(&rng, mixer_n_params(&gqa_mixer, &g, 0), 0.5f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *out = mallocCheck(sizeof(float) * (size_t)T * d), *act = mallocCheck(sizeof(float) * gqa_mixer.act_floats(&g, 0, 1, T));
    gqa_mixer.forward(&m, out, act, x, params, 1, T);
    const float *ps = mha_act_sink_weights(&m, act, 1, T);
    double least = 1.0;
    for (int h = 0; h < 4; h++)
        for (int i = 0; i < T; i++) {
            double s = ps[h * T + i];
            for (int j = 0; j < T; j++) s += act[((size_t)h * T + i) * T + j];
            cr_assert(fabs(s - 1.0) < 1e-5, "head %d row %d: tokens + sink = %.7f", h, i, s);
            least = fmin(least, 1.0 - ps[h * T + i]);
        }
    cr_assert(least < 0.99, "some row must give visibly less than 1 to the tokens (least %.3f)", least);
    free(params); free(x); free(out); free(act);
}

// Gated attention with sinks: decode equals the forward, and the sink's gradient is right.
Test(sinks, gated_decode_and_gradient) {
    int B = 2, T = 7, d = 16;
    ModelGeometry g;
    gqa_geom(&g, d, 2, 1, 8, 0);
    g.attn_output_gate = GATE_ELEMENTWISE;
    g.qk_norm = QK_NORM_ZERO_CENTRED;
    g.partial_rotary_factor = 0.5;
    Mixer m = {.ops = &gated_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 21);
    size_t np = mixer_n_params(&gated_mixer, &g, 0), nx = (size_t)B * T * d;
    ParamTensor t[8];
    int n = gated_mixer.param_tensors(&g, 0, t, 8);
    const ParamTensor *ts = test_find_param(t, n, "sinks");
    float *params = test_randn(&rng, np, 0.5f), *x = test_randn(&rng, nx, 1.0f), *R = test_randn(&rng, nx, 1.0f);
    float *out = mallocCheck(sizeof(float) * nx), *dparams = callocCheck(np, sizeof(float)), *dx = callocCheck(nx, sizeof(float));
    float *act = mallocCheck(sizeof(float) * gated_mixer.act_floats(&g, 0, B, T));
    gated_mixer.forward(&m, out, act, x, params, B, T);
    cr_assert(gated_sink_weights(&m, act, B, T) != NULL);
    gated_mixer.backward(&m, dx, dparams, R, act, x, params, B, T);
    double e = test_mixer_fd_rel_error(&m, params + ts->offset, dparams + ts->offset, test_tensor_size(ts), out, x, params, R, B, T);
    cr_expect(e < 5e-3, "dsinks: relative error %.3g", e);
    e = test_mixer_fd_rel_error(&m, x, dx, nx, out, x, params, R, B, T);
    cr_expect(e < 5e-3, "dx: relative error %.3g", e);
    gated_mixer.forward(&m, out, act, x, params, B, T);
    MixerCache *c = gated_mixer.cache_new(&m, T);
    float step[16];
    for (int p = 0; p < T; p++) {
        gated_mixer.decode(&m, c, step, x + (size_t)p * d, params);
        cr_assert(!memcmp(step, out + (size_t)p * d, sizeof step), "gated with sinks: decode at %d differs", p);
    }
    gated_mixer.cache_free(c);
    free(params); free(x); free(R); free(out); free(dparams); free(dx); free(act);
}

// ---- cross-layer KV sharing ---------------------------------------------------------------------------

// 5 layers local, global, local, global, global with the last 2 shared: layer 3 (global) reads layer 1,
// layer 4 (global) reads layer 1 too; with 3 shared, layer 2 (local) reads layer 0.
static Model *shared_model(int n_shared, int sinks, uint64_t seed) {
    ModelGeometry g;
    geometry_init(&g, "test kv sharing", 5, 16, 4, 2);
    g.vocab_size = 11;
    g.d_ff = 24;
    g.max_seq_len = 16;
    g.dtype_bytes = 4;
    g.sliding_window = 3;
    g.layer_kind[0] = g.layer_kind[2] = LAYER_LOCAL;
    g.num_kv_shared_layers = n_shared;
    if (sinks) g.attention_sinks = SINKS_FULL | SINKS_SLIDING;
    const MixerOps *ops[5] = {&gqa_mixer, &gqa_mixer, &gqa_mixer, &gqa_mixer, &gqa_mixer};
    Model *m = model_new(&g, ops, seed);
    Rng r;
    rng_seed(&r, seed + 99);
    for (int i = 0; i < m->n_tensors; i++) {
        const ModelTensor *t = &m->tensors[i];
        for (size_t k = 0; k < t->size; k++)
            m->params[t->offset + k] = (t->ndim == 1 ? 1.0f : 0.0f) + rng_normal(&r) * (t->ndim == 1 ? 0.2f : 0.4f);
    }
    return m;
}

Test(kv_sharing, readers_have_no_kv_weights) {
    Model *m = shared_model(3, 0, 1);
    cr_assert_eq(geometry_kv_source(&m->g, 2), 0);
    cr_assert_eq(geometry_kv_source(&m->g, 3), 1);
    cr_assert_eq(geometry_kv_source(&m->g, 4), 1);
    cr_assert(model_find_tensor(m, "layers.1.mixer.wk") && model_find_tensor(m, "layers.1.mixer.wv"));
    for (int l = 2; l < 5; l++) {
        char name[64];
        snprintf(name, sizeof name, "layers.%d.mixer.wk", l);
        cr_assert(!model_find_tensor(m, name), "layer %d reads another layer's K/V: no %s", l, name);
        snprintf(name, sizeof name, "layers.%d.mixer.wq", l);
        cr_assert(model_find_tensor(m, name));
    }
    model_free(m);
}

static void decode_matches_forward(int n_shared, int sinks) {
    enum { T = 13 };
    Model *m = shared_model(n_shared, sinks, 8);
    int V = m->g.vocab_size, tok[T];
    Rng r;
    rng_seed(&r, 4);
    for (int t = 0; t < T; t++) tok[t] = (int)rng_below(&r, (uint32_t)V);
    model_forward(m, tok, NULL, 1, T);
    ModelCache *c = model_cache_new(m, T);
    float logits[16];
    for (int t = 0; t < T; t++) {
        model_decode(c, logits, tok[t]);
        cr_assert(!memcmp(logits, m->logits + (size_t)t * V, sizeof(float) * (size_t)V),
                  "%d shared layers: decode logits at %d differ from the forward", n_shared, t);
        cr_assert_eq((double)model_cache_bytes(c), kvcache_total_bytes(&m->g, t + 1, 1),
                     "%d shared layers after %d tokens: %zu bytes, formula %.0f", n_shared, t + 1, model_cache_bytes(c),
                     kvcache_total_bytes(&m->g, t + 1, 1));
    }
    model_cache_free(c);
    model_free(m);
}

Test(kv_sharing, decode_equals_forward_and_bytes_equal_formula) {
    decode_matches_forward(0, 0);
    decode_matches_forward(2, 0);
    decode_matches_forward(3, 1);
}

// Fewer bytes than the same model without sharing: only the producing layers hold K/V.
Test(kv_sharing, shared_layers_hold_nothing) {
    Model *a = shared_model(0, 0, 3), *b = shared_model(3, 0, 3);
    ModelCache *ca = model_cache_new(a, 10), *cb = model_cache_new(b, 10);
    float logits[16];
    for (int t = 0; t < 10; t++) {
        model_decode(ca, logits, t % 11);
        model_decode(cb, logits, t % 11);
    }
    // per token per layer 2 x 2 KV heads x 4 dims x 4 bytes; layers 0, 2 hold the window of 3
    cr_assert_eq(model_cache_bytes(ca), (size_t)64 * (3 + 10 + 3 + 10 + 10));
    cr_assert_eq(model_cache_bytes(cb), (size_t)64 * (3 + 10));
    model_cache_free(ca);
    model_cache_free(cb);
    model_free(a);
    model_free(b);
}

// Directional derivatives of the loss for every tensor: the source layer's wk and wv get gradients from
// its readers too.
Test(kv_sharing, gradcheck_through_the_shared_kv) {
    enum { B = 2, T = 7 };
    Model *m = shared_model(3, 1, 5);
    int tok[B * T], tgt[B * T];
    Rng r;
    rng_seed(&r, 17);
    for (int n = 0; n < B * T; n++) {
        tok[n] = (int)rng_below(&r, 11);
        tgt[n] = (int)rng_below(&r, 11);
    }
    test_model_gradcheck(m, tok, tgt, B, T, "mixer", 9);
    model_free(m);
}

// A model with sharing and sinks survives its weights file; a file that asks a mixer without sharing
// to share is refused with one line.
Test(kv_sharing, weights_file_round_trip) {
    char dir[256], path[512], err[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/shared.safetensors", dir);
    Model *m = shared_model(3, 1, 2);
    model_save(m, NULL, path);
    Model *l = model_load(path, mixer_by_name, NULL, err, sizeof err);
    cr_assert(l, "%s", err);
    cr_assert_eq(l->g.num_kv_shared_layers, 3);
    cr_assert_eq(l->g.attention_sinks, SINKS_FULL | SINKS_SLIDING);
    cr_assert_eq(l->n_params, m->n_params);
    cr_assert(!memcmp(l->params, m->params, sizeof(float) * m->n_params));
    model_free(l);
    model_free(m);
    remove(path);
    rmdir(dir);
}

// ---- a DeepSeek V4-style model ----------------------------------------------------------------------

static Model *v4_model(uint64_t seed) {
    ModelGeometry g;
    v4_geometry_tiny(&g, 3, 16, 2, 8, 4);
    g.vocab_size = 11;
    g.d_ff = 24;
    g.max_seq_len = 32;
    g.index_n_heads = 2;
    g.index_head_dim = 4;
    g.index_topk = 2;
    v4_set_layer(&g, 1, 2, 1);   // CSA, m 2
    v4_set_layer(&g, 2, 5, 0);   // HCA, m 5
    const MixerOps *ops[3] = {v4_mixer_of(&g, 0), v4_mixer_of(&g, 1), v4_mixer_of(&g, 2)};
    Model *m = model_new(&g, ops, seed);
    Rng r;
    rng_seed(&r, seed + 7);
    for (int i = 0; i < m->n_tensors; i++) {
        const ModelTensor *t = &m->tensors[i];
        for (size_t k = 0; k < t->size; k++)
            m->params[t->offset + k] = (t->ndim == 1 ? 1.0f : 0.0f) + rng_normal(&r) * (t->ndim == 1 ? 0.2f : 0.4f);
    }
    return m;
}

Test(v4_model, decode_equals_forward_and_bytes_equal_formula) {
    enum { T = 21 };
    Model *m = v4_model(3);
    cr_assert_str_eq(m->mixers[0].ops->name, "v4swa");
    cr_assert_str_eq(m->mixers[1].ops->name, "csa");
    cr_assert_str_eq(m->mixers[2].ops->name, "hca");
    int V = m->g.vocab_size, tok[T];
    for (int t = 0; t < T; t++) tok[t] = (t * 7 + 3) % V;
    dsa_set_phase(DSA_SPARSE);
    model_forward(m, tok, NULL, 1, T);
    ModelCache *c = model_cache_new(m, T);
    float logits[16];
    for (int t = 0; t < T; t++) {
        model_decode(c, logits, tok[t]);
        cr_assert(!memcmp(logits, m->logits + (size_t)t * V, sizeof(float) * (size_t)V), "decode logits at %d differ", t);
        cr_assert_eq((double)model_cache_bytes(c), kvcache_total_bytes(&m->g, t + 1, 1), "after %d tokens: %zu vs %.0f",
                     t + 1, model_cache_bytes(c), kvcache_total_bytes(&m->g, t + 1, 1));
    }
    model_cache_free(c);
    model_free(m);
}

Test(v4_model, weights_file_round_trip) {
    char dir[256], path[512], err[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/v4.safetensors", dir);
    Model *m = v4_model(4);
    model_save(m, NULL, path);
    Model *l = model_load(path, mixer_by_name, NULL, err, sizeof err);
    cr_assert(l, "%s", err);
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(l->g.compress_ratios[k], m->g.compress_ratios[k]);
        cr_assert_eq(l->g.indexer_types[k], m->g.indexer_types[k]);
        cr_assert_eq(l->g.layer_kind[k], m->g.layer_kind[k]);
        cr_assert_eq(l->mixers[k].ops, m->mixers[k].ops);
    }
    cr_assert_eq(l->g.kv_one_tensor, 1);
    cr_assert(!memcmp(l->params, m->params, sizeof(float) * m->n_params));
    model_free(l);
    model_free(m);
    remove(path);
    rmdir(dir);
}
