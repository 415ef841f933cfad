// test_swa.c: chapter 6, sliding-window attention. The ring-buffer decode and the chunked prefill of
// local layers against the full forward (the reference: it masks a full T x T matrix), alone and in
// mixed local/global stacks; the cache's bytes against common/kvcache's formula; W >= T against plain
// causal attention; the layer-pattern builders against the real models' config.json.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "06_swa/swa.h"
#include "check.h"
#include "helpers.h"
#include "hfconfig.h"
#include "kvcache.h"
#include "model.h"
#include "rng.h"

// ---- helpers ------------------------------------------------------------------------------------

// A geometry of n_layers GQA layers, filled by hand (fp32 cache: dtype_bytes 4).
static void make_geom(ModelGeometry *g, int n_layers, int d, int H, int G, int dh) {
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "test swa");
    g->n_layers = n_layers;
    g->d_model = d;
    g->n_heads = H;
    g->n_kv_heads = G;
    g->head_dim = dh;
    g->vocab_size = 20;
    g->d_ff = 2 * d;
    g->max_seq_len = 64;
    g->attn = ATTN_GQA;
    g->rope_theta = 10000.0;
    g->dtype_bytes = 4;
}

// out (T,d) of one layer's full forward over x (T,d).
static void layer_forward(const Mixer *m, float *out, const float *x, const float *params, int T) {
    float *act = mallocCheck(sizeof(float) * m->ops->act_floats(m->g, m->layer, 1, T));
    m->ops->forward(m, out, act, x, params, 1, T);
    free(act);
}

// Decode and chunked prefill run the forward's attention core on the same keys: the same bits.
static void expect_same_bits(const float *got, const float *want, int n, const char *what, int pos) {
    for (int i = 0; i < n; i++)
        cr_assert(got[i] == want[i], "%s, position %d, dim %d: %.9g vs forward %.9g", what, pos, i, (double)got[i],
                  (double)want[i]);
}

static size_t kv_bytes(const ModelGeometry *g, int tokens) {
    return (size_t)4 * 2 * g->n_kv_heads * g->head_dim * (size_t)tokens;
}

// ---- one local layer: the ring buffer ---------------------------------------------------------------

static void ring_decode_matches_forward(int W, int G) {
    int T = 23, d = 32, H = 4, dh = 8;
    ModelGeometry g;
    make_geom(&g, 1, d, H, G, dh);
    g.layer_kind[0] = LAYER_LOCAL;
    g.sliding_window = W;
    g.rope_local_theta = 300.0;
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 100 + W);
    float *params = test_randn(&rng, mixer_n_params(&gqa_mixer, &g, 0), 0.4f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *full = mallocCheck(sizeof(float) * T * d), *step = mallocCheck(sizeof(float) * d);
    layer_forward(&m, full, x, params, T);
    MixerCache *c = gqa_mixer.cache_new(&m, T);
    for (int t = 0; t < T; t++) {
        gqa_mixer.decode(&m, c, step, &x[t * d], params);
        char what[64];
        snprintf(what, sizeof what, "ring decode W=%d G=%d", W, G);
        expect_same_bits(step, &full[t * d], d, what, t);
        int n = t + 1, held = n < W ? n : W;
        cr_assert_eq(gqa_mixer.cache_bytes(c), kv_bytes(&g, held), "W=%d after %d tokens: %zu bytes", W, n,
                     gqa_mixer.cache_bytes(c));
        cr_assert_eq((double)gqa_mixer.cache_bytes(c), kvcache_total_bytes(&g, n, 1), "W=%d: kvcache formula", W);
    }
    cr_assert_eq(mha_cache_peak_bytes(c), kv_bytes(&g, W < T ? W : T), "decode never holds more than W tokens");
    gqa_mixer.cache_free(c);
    free(params); free(x); free(full); free(step);
}

Test(swa, ring_decode_equals_forward_w1) { ring_decode_matches_forward(1, 2); }
Test(swa, ring_decode_equals_forward_w5) { ring_decode_matches_forward(5, 2); }
Test(swa, ring_decode_equals_forward_w8_mqa) { ring_decode_matches_forward(8, 1); }

// ---- chunked prefill crossing the window edge -------------------------------------------------------

// Feeds x in chunks (a chunk of 1 goes through decode, larger ones through mha_prefill) and checks each
// output against the forward, the bytes held after each chunk, and the peak held while computing.
static void chunked_prefill_matches_forward(int W, const int *chunks, int n_chunks) {
    int T = 0, d = 24, H = 4, G = 2, dh = 6;
    for (int i = 0; i < n_chunks; i++) T += chunks[i];
    ModelGeometry g;
    make_geom(&g, 1, d, H, G, dh);
    if (W) {
        g.layer_kind[0] = LAYER_LOCAL;
        g.sliding_window = W;
    }
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 7 + W);
    float *params = test_randn(&rng, mixer_n_params(&gqa_mixer, &g, 0), 0.4f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float *full = mallocCheck(sizeof(float) * T * d), *out = mallocCheck(sizeof(float) * T * d);
    layer_forward(&m, full, x, params, T);
    MixerCache *c = gqa_mixer.cache_new(&m, T);
    int n = 0, want_peak = 0;
    for (int i = 0; i < n_chunks; i++) {
        int len = chunks[i];
        if (len == 1) gqa_mixer.decode(&m, c, &out[n * d], &x[n * d], params);
        else mha_prefill(&m, c, &out[n * d], &x[n * d], params, len);
        // while computing, a local layer holds the W-1 keys before the chunk plus the chunk's own
        int before = W ? (n < W - 1 ? n : W - 1) : n;
        if (before + len > want_peak) want_peak = before + len;
        n += len;
        char what[64];
        snprintf(what, sizeof what, "W=%d chunk %d (%d tokens)", W, i, len);
        for (int t = n - len; t < n; t++) expect_same_bits(&out[t * d], &full[t * d], d, what, t);
        int held = W && W < n ? W : n;
        cr_assert_eq(gqa_mixer.cache_bytes(c), kv_bytes(&g, held), "%s: %zu bytes after", what, gqa_mixer.cache_bytes(c));
        cr_assert_eq((double)gqa_mixer.cache_bytes(c), kvcache_total_bytes(&g, n, 1), "%s: kvcache formula", what);
        cr_assert_eq(mha_cache_peak_bytes(c), kv_bytes(&g, want_peak), "%s: peak %zu bytes, want %d tokens", what,
                     mha_cache_peak_bytes(c), want_peak);
    }
    gqa_mixer.cache_free(c);
    free(params); free(x); free(full); free(out);
}

Test(swa, chunked_prefill_crossing_window_equals_forward) {
    // W = 5: the first chunk stays inside the window, the second crosses its edge, the third is longer
    // than W, then single decode steps and chunks alternate on a full ring
    int chunks[] = {3, 4, 9, 1, 2, 1, 6, 5};
    chunked_prefill_matches_forward(5, chunks, 8);
}

Test(swa, chunked_prefill_window_1_and_global) {
    int chunks[] = {2, 1, 5, 3};
    chunked_prefill_matches_forward(1, chunks, 4);
    chunked_prefill_matches_forward(0, chunks, 4);   // a global layer: the cache just grows
}

Test(swa, prefill_peak_is_w_minus_1_plus_chunk) {
    // the numbers the SPEC states: 20 tokens into a W = 8 ring, then one chunk of 6 tokens
    int W = 8, c = 6, d = 16;
    ModelGeometry g;
    make_geom(&g, 1, d, 2, 2, 8);
    g.layer_kind[0] = LAYER_LOCAL;
    g.sliding_window = W;
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    float *params = callocCheck(mixer_n_params(&gqa_mixer, &g, 0), sizeof(float));
    float *x = callocCheck((size_t)26 * d, sizeof(float)), *out = mallocCheck(sizeof(float) * 26 * d);
    MixerCache *c0 = gqa_mixer.cache_new(&m, 26);
    mha_prefill(&m, c0, out, x, params, 20);   // one chunk from empty: holds its 20 tokens while computing
    cr_assert_eq(mha_cache_peak_bytes(c0), kv_bytes(&g, 20));
    cr_assert_eq(gqa_mixer.cache_bytes(c0), kv_bytes(&g, W));
    gqa_mixer.cache_free(c0);
    MixerCache *cc = gqa_mixer.cache_new(&m, 26);
    for (int t = 0; t < 20; t++) gqa_mixer.decode(&m, cc, out, x, params);
    cr_assert_eq(mha_cache_peak_bytes(cc), kv_bytes(&g, W));
    mha_prefill(&m, cc, out, x, params, c);
    cr_assert_eq(mha_cache_peak_bytes(cc), kv_bytes(&g, W - 1 + c), "peak while computing: W-1+c = %d tokens", W - 1 + c);
    cr_assert_eq(gqa_mixer.cache_bytes(cc), kv_bytes(&g, W), "after the chunk: W tokens");
    gqa_mixer.cache_free(cc);
    free(params); free(x); free(out);
}

// ---- W >= T is plain causal attention ---------------------------------------------------------------

Test(swa, window_at_least_T_decodes_like_causal) {
    int T = 10, d = 16;
    ModelGeometry gc, gw;
    make_geom(&gc, 1, d, 4, 2, 4);
    Mixer mc = {.ops = &gqa_mixer, .g = &gc, .layer = 0}, mw = {.ops = &gqa_mixer, .g = &gw, .layer = 0};
    Rng rng;
    rng_seed(&rng, 11);
    float *params = test_randn(&rng, mixer_n_params(&gqa_mixer, &gc, 0), 0.5f), *x = test_randn(&rng, (size_t)T * d, 1.0f);
    float oc[16], ow[16];
    for (int W = T; W <= T + 3; W += 3) {
        gw = gc;
        gw.layer_kind[0] = LAYER_LOCAL;
        gw.sliding_window = W;
        MixerCache *cc = gqa_mixer.cache_new(&mc, T), *cw = gqa_mixer.cache_new(&mw, T);
        for (int t = 0; t < T; t++) {
            gqa_mixer.decode(&mc, cc, oc, &x[t * d], params);
            gqa_mixer.decode(&mw, cw, ow, &x[t * d], params);
            cr_assert(!memcmp(oc, ow, sizeof oc), "W=%d position %d: local decode differs from causal", W, t);
            cr_assert_eq(gqa_mixer.cache_bytes(cc), gqa_mixer.cache_bytes(cw));
        }
        gqa_mixer.cache_free(cc);
        gqa_mixer.cache_free(cw);
    }
    free(params); free(x);
}

// ---- mixed local/global stacks in the model ---------------------------------------------------------

// A tiny model with the given local:global ratio: decode logits equal the forward's, and the model's
// cache holds exactly what kvcache_total_bytes says at every length.
static void stack_decode_matches_forward(int n_layers, int ratio, int W) {
    int T = 17;
    ModelGeometry g;
    make_geom(&g, n_layers, 16, 2, 1, 8);
    swa_set_pattern(&g, ratio, W);
    swa_set_gemma3_rope(&g);
    const MixerOps *ops[GEOM_MAX_LAYERS];
    for (int l = 0; l < n_layers; l++) ops[l] = &gqa_mixer;
    Model *m = model_new(&g, ops, 5 + ratio);
    // larger weights than the training init, so attention is far from uniform
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 6.0f;
    Rng rng;
    rng_seed(&rng, 3);
    int tokens[17];
    for (int t = 0; t < T; t++) tokens[t] = (int)rng_below(&rng, (uint32_t)g.vocab_size);
    model_forward(m, tokens, NULL, 1, T);
    float *logits = mallocCheck(sizeof(float) * g.vocab_size);
    ModelCache *c = model_cache_new(m, T);
    for (int t = 0; t < T; t++) {
        model_decode(c, logits, tokens[t]);
        char what[64];
        snprintf(what, sizeof what, "%d layers, ratio %d, W %d", n_layers, ratio, W);
        expect_same_bits(logits, m->logits + (size_t)t * g.vocab_size, g.vocab_size, what, t);
        cr_assert_eq((double)model_cache_bytes(c), kvcache_total_bytes(&m->g, t + 1, 1), "%s: %zu bytes after %d tokens",
                     what, model_cache_bytes(c), t + 1);
    }
    model_cache_free(c);
    model_free(m);
    free(logits);
}

Test(swa, stack_gemma3_pattern_decode_equals_forward) { stack_decode_matches_forward(6, 5, 4); }
Test(swa, stack_gemma2_pattern_decode_equals_forward) { stack_decode_matches_forward(4, 1, 3); }
Test(swa, stack_all_local_decode_equals_forward) { stack_decode_matches_forward(3, SWA_ALL_LOCAL, 5); }

// ---- layer patterns ---------------------------------------------------------------------------------

Test(swa, gemma3_pattern_global_exactly_every_sixth_layer) {
    ModelGeometry g;
    make_geom(&g, 62, 16, 2, 1, 8);
    swa_set_pattern(&g, 5, 1024);
    cr_assert_eq(g.sliding_window, 1024);
    for (int i = 0; i < 62; i++)
        cr_assert_eq(g.layer_kind[i], (i + 1) % 6 == 0 ? LAYER_GLOBAL : LAYER_LOCAL, "layer %d", i);
    cr_assert_eq(geometry_count(&g, LAYER_GLOBAL), 10);
    char s[80];
    swa_pattern_string(s, sizeof s, &g);
    cr_assert(!strncmp(s, "LLLLLGLLLLLG", 12) && !strcmp(s + 54, "LLLLLGLL"), "pattern %s", s);
}

// The builder gives each real model's own layer_types (read from its config.json by hfconfig).
Test(swa, patterns_match_real_configs) {
    static const struct { const char *file, *pattern; } cases[] = {
        {"gemma2-9b.json", "gemma2"}, {"gemma3-27b.json", "gemma3"}, {"olmo3-7b.json", "olmo3"},
        {"gpt-oss-20b.json", "gpt-oss"},
    };
    for (int k = 0; k < 4; k++) {
        char path[1024], err[512];
        snprintf(path, sizeof path, "%s/data/configs/%s", test_root(), cases[k].file);
        ModelGeometry real, built;
        cr_assert_eq(hfconfig_load(&real, path, err, sizeof err), 0, "%s", err);
        built = real;
        int r;
        cr_assert_eq(swa_parse_pattern(cases[k].pattern, &r), 0);
        swa_set_pattern(&built, r, real.sliding_window);
        for (int i = 0; i < real.n_layers; i++)
            cr_assert_eq(built.layer_kind[i], real.layer_kind[i], "%s layer %d", cases[k].file, i);
    }
}

Test(swa, pattern_names_and_ratios) {
    int r = 99;
    cr_assert_eq(swa_parse_pattern("gemma3", &r), 0); cr_assert_eq(r, 5);
    cr_assert_eq(swa_parse_pattern("gemma2", &r), 0); cr_assert_eq(r, 1);
    cr_assert_eq(swa_parse_pattern("olmo3", &r), 0); cr_assert_eq(r, 3);
    cr_assert_eq(swa_parse_pattern("local", &r), 0); cr_assert_eq(r, SWA_ALL_LOCAL);
    cr_assert_eq(swa_parse_pattern("global", &r), 0); cr_assert_eq(r, 0);
    cr_assert_eq(swa_parse_pattern("7", &r), 0); cr_assert_eq(r, 7);
    cr_assert_eq(swa_parse_pattern("3:1", &r), 0); cr_assert_eq(r, 3);
    cr_assert_eq(swa_parse_pattern("3:2", &r), -1);
    cr_assert_eq(swa_parse_pattern("-1", &r), -1);
    cr_assert_eq(swa_parse_pattern("gemma", &r), -1);
    cr_assert_eq(swa_parse_pattern("", &r), -1);
    cr_assert_eq(swa_parse_pattern("999", &r), -1);
    ModelGeometry g;
    make_geom(&g, 8, 16, 2, 1, 8);
    char s[16];
    swa_set_pattern(&g, 3, 4);
    cr_assert_str_eq(swa_pattern_string(s, sizeof s, &g), "LLLGLLLG");
    cr_assert_eq(swa_receptive_field(&g), -1);
    swa_set_pattern(&g, SWA_ALL_LOCAL, 4);
    cr_assert_str_eq(swa_pattern_string(s, sizeof s, &g), "LLLLLLLL");
    cr_assert_eq(swa_receptive_field(&g), 8 * 3);
    swa_make_all_global(&g);
    cr_assert_str_eq(swa_pattern_string(s, sizeof s, &g), "GGGGGGGG");
    swa_set_gemma3_rope(&g);
    cr_assert(g.rope_theta == 1e6 && g.rope_local_theta == 1e4);
}

// ---- memory of the real models ----------------------------------------------------------------------

// Gemma 3 27B, by hand: 62 layers, 16 KV heads x 128 dims, bf16, W 1024, 10 global layers.
Test(swa, gemma3_27b_kv_memory_by_hand) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/data/configs/gemma3-27b.json", test_root());
    ModelGeometry g;
    cr_assert_eq(hfconfig_load(&g, path, err, sizeof err), 0, "%s", err);
    double per_tok_layer = 2.0 * 16 * 128 * 2;   // bytes
    long ctx = 131072;
    double want = per_tok_layer * (10.0 * ctx + 52.0 * 1024);
    cr_assert_eq(kvcache_total_bytes(&g, ctx, 1), want);
    swa_make_all_global(&g);
    cr_assert_eq(kvcache_total_bytes(&g, ctx, 1), per_tok_layer * 62.0 * ctx);
}

// ---- the chapter program rejects bad input before writing anything -----------------------------------

Test(swa, ch06_bad_input_exits_2_with_one_line) {
    static const struct { const char *args, *needle; } cases[] = {
        {"--samples 5", "--samples"},
        {"--samples many", "--samples"},
        {"--weights /nonexistent/x.safetensors", "/nonexistent/x.safetensors"},
        {"--weights-dir /nonexistent", "/nonexistent/ch06_"},
    };
    for (int k = 0; k < 4; k++) {
        char dir[256], args[600], out[8192];
        test_tmpdir(dir, sizeof dir);
        snprintf(args, sizeof args, "--out %s %s", dir, cases[k].args);
        int rc = test_run(out, sizeof out, "ch06", args);
        cr_expect_eq(rc, 2, "ch06 %s: exit %d: %s", cases[k].args, rc, out);
        cr_expect_eq(test_count_lines(out), 1, "ch06 %s: expected one line: %s", cases[k].args, out);
        cr_expect(strstr(out, cases[k].needle) && !strncmp(out, "ch06: ", 6), "ch06 %s: %s", cases[k].args, out);
        cr_expect_eq(test_count_files(dir), 0, "ch06 %s wrote files before failing", cases[k].args);
    }
}
