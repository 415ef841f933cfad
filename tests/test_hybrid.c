// test_hybrid.c: the shipped hybrid models of chapters 9 and 10, end to end: cached decode (attention
// layers growing a KV cache, linear layers stepping a fixed state) gives the full forward's logits, and
// the bytes the caches hold equal the kvcache formula, token by token.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>

#include "helpers.h"
#include "kvcache.h"
#include "model.h"
#include "registry.h"
#include "rng.h"

static void hybrid_decode_matches(const char *name, int expect_linear, int expect_attention) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/data/weights/%s.safetensors", test_root(), name);
    Model *m = model_load(path, mixer_by_name, NULL, err, sizeof err);
    cr_assert(m, "%s", err);
    cr_expect_eq(geometry_count(&m->g, LAYER_LINEAR), expect_linear, "%s: linear layers", name);
    cr_expect_eq(geometry_count(&m->g, LAYER_GLOBAL), expect_attention, "%s: attention layers", name);
    enum { T = 40 };
    int tok[T];
    Rng r;
    rng_seed(&r, 5);
    for (int t = 0; t < T; t++) tok[t] = (int)rng_below(&r, (uint32_t)m->g.vocab_size);
    model_forward(m, tok, NULL, 1, T);
    int V = m->g.vocab_size;
    ModelCache *c = model_cache_new(m, T);
    float logits[256];
    cr_assert(V <= 256);
    double worst = 0.0, scale = 0.0;
    for (int t = 0; t < T; t++) {
        model_decode(c, logits, tok[t]);
        for (int v = 0; v < V; v++) {
            worst = test_worst(worst, fabs(logits[v] - m->logits[t * V + v]));
            scale = fmax(scale, fabs(m->logits[t * V + v]));
        }
        double want = kvcache_total_bytes(&m->g, t + 1, 1);
        cr_expect_eq((double)model_cache_bytes(c), want, "%s after %d tokens: caches hold %zu bytes, the formula says %.0f",
                     name, t + 1, model_cache_bytes(c), want);
    }
    cr_expect(worst < 1e-4 * fmax(1.0, scale), "%s: cached decode differs from the full forward by %g (logits up to %g)",
              name, worst, scale);
    model_cache_free(c);
    model_free(m);
}

Test(hybrid, qwen3_next_style_decode_equals_forward) { hybrid_decode_matches("ch09_hybrid", 3, 1); }
Test(hybrid, kimi_linear_style_decode_equals_forward) { hybrid_decode_matches("ch10_kimi", 3, 1); }
Test(hybrid, minimax_style_decode_equals_forward) { hybrid_decode_matches("ch10_minimax", 7, 1); }
Test(hybrid, nemotron_style_decode_equals_forward) { hybrid_decode_matches("ch10_nemotron", 4, 1); }
Test(hybrid, all_linear_models_decode_equals_forward) {
    hybrid_decode_matches("ch09_gdn", 4, 0);
    hybrid_decode_matches("ch10_kda", 4, 0);
    hybrid_decode_matches("ch10_lightning", 4, 0);
    hybrid_decode_matches("ch10_mamba2", 4, 0);
}
