// test_configs.c: the config families of the article's later models, each against its real config.json
// (numbers worked out by hand in the comments) and against bad values; `./kvcache --set`, `--table`
// (the README table equals the tool's output) and `--layers-plot`; and the overflow class: huge but
// well-formed dims must be one line naming the key and exit 2, never a wrapped byte count.
#include <criterion/criterion.h>
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "geometry.h"
#include "helpers.h"
#include "hfconfig.h"
#include "kvcache.h"

static ModelGeometry load(const char *file) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/data/configs/%s", test_root(), file);
    ModelGeometry g;
    cr_assert_eq(hfconfig_load(&g, path, err, sizeof err), 0, "%s: %s", file, err);
    g.dtype_bytes = 2;
    return g;
}

static ModelGeometry parse_ok(const char *json) {
    ModelGeometry g;
    char err[512];
    cr_assert_eq(hfconfig_parse(&g, json, "ok.json", NULL, err, sizeof err), 0, "%s", err);
    return g;
}

static void expect_error(const char *json, const char *needle1, const char *needle2) {
    ModelGeometry g;
    char err[512];
    int rc = hfconfig_parse(&g, json, "bad.json", NULL, err, sizeof err);
    cr_expect_eq(rc, -1, "accepted: %s", json);
    cr_expect(strchr(err, '\n') == NULL, "not one line: %s", err);
    cr_expect(strstr(err, needle1) != NULL, "error lacks '%s': '%s'", needle1, err);
    if (needle2) cr_expect(strstr(err, needle2) != NULL, "error lacks '%s': '%s'", needle2, err);
}

static int count_csa(const ModelGeometry *g) {
    int n = 0;
    for (int l = 0; l < g->n_layers; l++) n += geometry_layer_is_csa(g, l);
    return n;
}

// ---- DeepSeek V4 ----------------------------------------------------------------------------------

// DeepSeek-V4-Flash at context T, bf16, by hand. compress_ratios [0, 0, 4, 128, ..., 4 | 0 (MTP)]:
// layers 0-1 keep a window of 128 raw entries of 512 (one head, K = V); the 21 CSA layers (m = 4) keep
// the window plus T/4 entries of 512 and T/4 indexer keys of 128; the 20 HCA layers (m = 128) the window
// plus T/128 entries of 512. Fixed: per CSA layer 2 x 8 x 1024 + 2 x 8 x 256 fp32 (compressor and
// indexer compressor buffers), per HCA layer 2 x 128 x 512 fp32.
static double v4_flash_by_hand(double T) {
    double win = T < 128 ? T : 128;
    double elems = 2 * win * 512 + 21 * (win * 512 + (double)((long)T / 4) * (512 + 128)) +
                   20 * (win * 512 + (double)((long)T / 128) * 512);
    double fixed = 21 * (2.0 * 8 * 1024 + 2.0 * 8 * 256) * 4 + 20 * (2.0 * 128 * 512) * 4;
    return elems * 2 + fixed;
}

Test(deepseek_v4, flash_layers_and_cache_by_hand) {
    ModelGeometry g = load("deepseek-v4-flash.json");
    cr_expect_eq(g.n_layers, 43);
    cr_expect_eq(geometry_count(&g, LAYER_LOCAL), 2);
    cr_expect_eq(geometry_count(&g, LAYER_COMPRESSED), 41);
    cr_expect_eq(count_csa(&g), 21);
    cr_expect(g.layer_kind[0] == LAYER_LOCAL && g.layer_kind[2] == LAYER_COMPRESSED && g.compress_ratios[2] == 4 &&
              g.compress_ratios[3] == 128 && g.compress_ratios[42] == 4);
    cr_expect(geometry_layer_is_csa(&g, 2) && !geometry_layer_is_csa(&g, 3));
    cr_expect_eq(g.sliding_window, 128);
    cr_expect_eq(g.head_dim, 512);
    cr_expect_eq(g.kv_one_tensor, 1);
    cr_expect_eq(geometry_layer_has_sinks(&g, 0), 1);
    cr_expect_eq(g.q_lora_rank, 1024);
    cr_expect_eq(geometry_rotary_fraction(&g), 64.0 / 512);
    cr_expect_eq(kvcache_compressor_bytes(&g), 12206080.0);
    long ts[] = {1, 100, 127, 128, 129, 1000, 4096, 131072, 1048576, 1048577};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        cr_expect_eq(kvcache_total_bytes(&g, ts[i], 1), v4_flash_by_hand((double)ts[i]), "T = %ld: %.0f vs %.0f",
                     ts[i], kvcache_total_bytes(&g, ts[i], 1), v4_flash_by_hand((double)ts[i]));
    // per token below the window: every window grows by 512, compressed entries by their share
    cr_expect_eq(kvcache_bytes_per_token(&g), (2 * 512 + 21 * (640.0 / 4) + 20 * (512.0 / 128)) * 2);
}

// V4-Pro: compress_ratios [128, 128, 4, 128, ..., 4 | 0]: 30 CSA (even layers 2..60), 31 HCA.
Test(deepseek_v4, pro_layers) {
    ModelGeometry g = load("deepseek-v4-pro.json");
    cr_expect_eq(g.n_layers, 61);
    cr_expect_eq(geometry_count(&g, LAYER_COMPRESSED), 61);
    cr_expect_eq(count_csa(&g), 30);
    cr_expect(g.compress_ratios[0] == 128 && g.compress_ratios[1] == 128 && g.compress_ratios[60] == 4);
    // at 1M: every layer 128 raw entries; 30 x 262144 x 640 + 31 x 8192 x 512 compressed elements
    double T = 1048576, elems = 61 * 128 * 512.0 + 30 * (T / 4) * 640 + 31 * (T / 128) * 512;
    double fixed = 30 * (2.0 * 8 * 1024 + 2.0 * 8 * 256) * 4 + 31 * (2.0 * 128 * 512) * 4;
    cr_expect_eq(kvcache_total_bytes(&g, 1048576, 1), elems * 2 + fixed);
}

// "At 1M context V4 needs about 10% of V3.2's KV cache", checked with both caches in bf16 (V3.2: 61 MLA
// layers x (512 + 64 + 128 indexer) = 85888 B per token): Pro 10353082368 / 90060095488 = 11.5%, Flash
// 7232045056 / 90060095488 = 8.0%. The claim holds to within its "about"; Pro is 1.15x of 10%.
Test(deepseek_v4, about_ten_percent_of_v32_at_1m) {
    ModelGeometry v32 = load("deepseek-v3.2.json"), pro = load("deepseek-v4-pro.json"), flash = load("deepseek-v4-flash.json");
    double base = kvcache_total_bytes(&v32, 1048576, 1);
    cr_expect_eq(base, 61.0 * 704 * 2 * 1048576);
    double rp = kvcache_total_bytes(&pro, 1048576, 1) / base, rf = kvcache_total_bytes(&flash, 1048576, 1) / base;
    cr_expect(rp > 0.114 && rp < 0.116, "Pro: %.4f of V3.2", rp);
    cr_expect(rf > 0.079 && rf < 0.081, "Flash: %.4f of V3.2", rf);
}

Test(deepseek_v4, bad_values_name_the_key) {
#define V4 "\"num_hidden_layers\": 4, \"hidden_size\": 64, \"num_attention_heads\": 4, \"num_key_value_heads\": 1, " \
           "\"head_dim\": 32, \"qk_rope_head_dim\": 8, \"sliding_window\": 8, \"index_n_heads\": 2, " \
           "\"index_head_dim\": 16, \"index_topk\": 4"
    ModelGeometry g = parse_ok("{" V4 ", \"compress_ratios\": [0, 4, 16, 4, 0]}");   // the fifth: an MTP layer
    cr_expect(g.layer_kind[0] == LAYER_LOCAL && g.layer_kind[1] == LAYER_COMPRESSED && g.compress_ratios[2] == 16);
    cr_expect(geometry_layer_is_csa(&g, 1) && !geometry_layer_is_csa(&g, 2));
    expect_error("{" V4 ", \"compress_ratios\": [0, 4, 1, 4]}", "'compress_ratios' entry 2 is 1", NULL);
    expect_error("{" V4 ", \"compress_ratios\": [0, 4, 16]}", "'compress_ratios' has 3 entries", NULL);
    expect_error("{" V4 ", \"compress_ratios\": [0, 4, -4, 4]}", "'compress_ratios' entry 2", NULL);
    expect_error("{" V4 ", \"compress_ratios\": [0, 4, \"x\", 4]}", "'compress_ratios' entry 2", NULL);
    expect_error("{" V4 ", \"compress_ratios\": 4}", "'compress_ratios' must be an array", NULL);
    expect_error("{\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4, \"head_dim\": 32, "
                 "\"qk_rope_head_dim\": 8, \"compress_ratios\": [4, 4]}", "'sliding_window'", "missing");
    expect_error("{\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4, \"head_dim\": 32, "
                 "\"num_key_value_heads\": 2, \"qk_rope_head_dim\": 8, \"sliding_window\": 8, \"compress_ratios\": [4, 4]}",
                 "'num_key_value_heads' is 2", "one shared KV head");
    expect_error("{\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4, \"head_dim\": 32, "
                 "\"num_key_value_heads\": 1, \"qk_rope_head_dim\": 64, \"sliding_window\": 8, \"compress_ratios\": [4, 4]}",
                 "'qk_rope_head_dim' is 64", NULL);
}

// ---- GLM-5.2: shared indexers -----------------------------------------------------------------------

// 78 MLA layers; indexer_types "full" at layers 0, 1, 2, 6, 10, ..., 74 (21), "shared" elsewhere (57).
// Per token: 78 x (512 + 64) + 21 x 128 = 47616 elements = 95232 B in bf16; with every indexer full it
// would be 78 x 704 x 2 = 109824 B.
Test(glm5, shared_indexer_layers_cache_no_key) {
    ModelGeometry g = load("glm-5.2.json");
    int full = 0;
    for (int l = 0; l < g.n_layers; l++) full += geometry_layer_has_indexer(&g, l);
    cr_expect_eq(full, 21);
    cr_expect(geometry_layer_has_indexer(&g, 6) && !geometry_layer_has_indexer(&g, 3) && !geometry_layer_has_indexer(&g, 77));
    cr_expect_eq(kvcache_elems_per_token_layer(&g, 0), 512 + 64 + 128);
    cr_expect_eq(kvcache_elems_per_token_layer(&g, 3), 512 + 64);
    cr_expect_eq(kvcache_bytes_per_token(&g), 95232.0);
    cr_expect_eq(g.max_seq_len, 1048576);
    cr_expect_eq(g.rope_theta, 8e6);
#define SMALL "\"num_hidden_layers\": 4, \"hidden_size\": 64, \"num_attention_heads\": 4, \"kv_lora_rank\": 16, " \
              "\"qk_rope_head_dim\": 8, \"qk_nope_head_dim\": 8, \"v_head_dim\": 8"
#define IDX "\"index_n_heads\": 2, \"index_head_dim\": 16, \"index_topk\": 4"
    expect_error("{" SMALL ", " IDX ", \"indexer_types\": [\"full\", \"shared\"]}", "'indexer_types'", "4 strings");
    expect_error("{" SMALL ", " IDX ", \"indexer_types\": [\"full\", \"shared\", \"half\", \"full\"]}",
                 "'indexer_types' entry 2", NULL);
    expect_error("{" SMALL ", " IDX ", \"indexer_types\": [\"shared\", \"full\", \"full\", \"full\"]}",
                 "indexer_types entry 0 is 'shared'", "no earlier");
    expect_error("{" SMALL ", \"indexer_types\": [\"full\", \"full\", \"full\", \"full\"]}", "'indexer_types'",
                 "no indexer");
    expect_error("{" SMALL ", " IDX ", \"indexer_types\": \"full\"}", "'indexer_types'", NULL);
}

// ---- Llama 4: chunked local attention ---------------------------------------------------------------

// Maverick: no no_rope_layers in the file, so transformers' default applies: every 4th layer is NoPE and
// global (12), the rest RoPE + chunked (36). A layer holds 2 x 8 x 128 x 2 = 4096 B per token; a chunked
// one at most attention_chunk_size = 8192 tokens.
Test(llama4, chunked_layers_hold_one_chunk) {
    ModelGeometry g = load("llama4-maverick.json");
    cr_expect_eq(geometry_count(&g, LAYER_GLOBAL), 12);
    cr_expect_eq(geometry_count(&g, LAYER_CHUNKED), 36);
    cr_expect(g.layer_kind[3] == LAYER_GLOBAL && g.layer_kind[0] == LAYER_CHUNKED && g.layer_kind[47] == LAYER_GLOBAL);
    cr_expect_eq(g.attention_chunk_size, 8192);
    cr_expect_eq(kvcache_total_bytes(&g, 8000, 1), 48 * 8000 * 4096.0);
    cr_expect_eq(kvcache_total_bytes(&g, 131072, 1), 12 * 131072 * 4096.0 + 36 * 8192 * 4096.0);
    // an explicit list (a Scout fine-tune's file): 1 = RoPE = chunked, 0 = NoPE = global
#define L4 "\"model_type\": \"llama4_text\", \"num_hidden_layers\": 4, \"hidden_size\": 64, \"num_attention_heads\": 4"
    ModelGeometry s = parse_ok("{" L4 ", \"attention_chunk_size\": 16, \"no_rope_layers\": [0, 1, 1, 0]}");
    cr_expect(s.layer_kind[0] == LAYER_GLOBAL && s.layer_kind[1] == LAYER_CHUNKED && s.layer_kind[3] == LAYER_GLOBAL);
    s = parse_ok("{" L4 ", \"attention_chunk_size\": 16, \"no_rope_layer_interval\": 2}");
    cr_expect(s.layer_kind[0] == LAYER_CHUNKED && s.layer_kind[1] == LAYER_GLOBAL);
    s = parse_ok("{\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4, \"attention_chunk_size\": 16,"
                 "\"layer_types\": [\"chunked_attention\", \"full_attention\"]}");
    cr_expect(s.layer_kind[0] == LAYER_CHUNKED && s.layer_kind[1] == LAYER_GLOBAL);
    expect_error("{" L4 ", \"attention_chunk_size\": 0}", "'attention_chunk_size' must be positive", NULL);
    expect_error("{" L4 ", \"attention_chunk_size\": -8}", "'attention_chunk_size'", NULL);
    expect_error("{" L4 ", \"attention_chunk_size\": 16, \"no_rope_layers\": [1, 1]}", "'no_rope_layers' has 2 entries", NULL);
    expect_error("{" L4 ", \"attention_chunk_size\": 16, \"no_rope_layers\": [1, 2, 1, 0]}", "'no_rope_layers' entry 1", NULL);
    expect_error("{" L4 ", \"attention_chunk_size\": 16, \"no_rope_layer_interval\": 0}", "'no_rope_layer_interval'", NULL);
    expect_error("{\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4, \"attention_chunk_size\": 16,"
                 "\"layer_types\": [\"full_attention\", \"full_attention\"]}", "'attention_chunk_size'", "no 'chunked_attention'");
}

// ---- MiMo-V2-Flash: window layers with their own shapes ---------------------------------------------

// 9 full layers (pattern 0) of 4 KV heads x (K 192 + V 128) and 39 window layers (pattern 1, W 128) of 8
// KV heads x (192 + 128): per token 9 x 1280 + 39 x 2560 = 111360 elements = 222720 B.
Test(mimo_v2, window_layers_have_their_own_heads) {
    ModelGeometry g = load("mimo-v2-flash.json");
    cr_expect_eq(geometry_count(&g, LAYER_GLOBAL), 9);
    cr_expect_eq(geometry_count(&g, LAYER_LOCAL), 39);
    cr_expect(g.layer_kind[0] == LAYER_GLOBAL && g.layer_kind[5] == LAYER_GLOBAL && g.layer_kind[6] == LAYER_LOCAL);
    cr_expect_eq(kvcache_elems_per_token_layer(&g, 0), 4 * (192 + 128));
    cr_expect_eq(kvcache_elems_per_token_layer(&g, 1), 8 * (192 + 128));
    cr_expect_eq(kvcache_bytes_per_token(&g), 222720.0);
    cr_expect_eq(kvcache_total_bytes(&g, 131072, 1), 9 * 131072 * 2560.0 + 39 * 128 * 5120.0);
    cr_expect(geometry_layer_has_sinks(&g, 1) && !geometry_layer_has_sinks(&g, 0));   // sinks on window layers only
#define MI "\"num_hidden_layers\": 3, \"hidden_size\": 64, \"num_attention_heads\": 4, \"sliding_window\": 8"
    expect_error("{" MI ", \"hybrid_layer_pattern\": [0, 2, 1]}", "'hybrid_layer_pattern' entry 1", NULL);
    expect_error("{" MI ", \"hybrid_layer_pattern\": [0, 1]}", "'hybrid_layer_pattern' has 2 entries", NULL);
    expect_error("{" MI ", \"hybrid_layer_pattern\": [0, 1, 1], \"swa_num_key_value_heads\": 3}",
                 "'swa_num_attention_heads' (4) is not divisible", NULL);
    expect_error("{\"num_hidden_layers\": 3, \"hidden_size\": 64, \"num_attention_heads\": 4, \"hybrid_layer_pattern\": [0, 1, 1]}",
                 "'hybrid_layer_pattern'", "'sliding_window' is missing");
    expect_error("{" MI ", \"hybrid_layer_pattern\": [0, 1, 1], \"layer_types\": [\"full_attention\", "
                 "\"sliding_attention\", \"sliding_attention\"]}", "'layer_types' and 'hybrid_layer_pattern'", NULL);
}

// ---- Gemma 3n / Gemma 4: KV sharing, global heads, K = V -----------------------------------------------

// Gemma 3n E4B: 35 layers ((4 sliding, 1 full) x 7), the last 15 share. Producing: 16 sliding (W 512) and
// 4 full layers of 2 KV heads x 256: 2048 B per token each. Shared sliding layers read layer 18, shared
// full layers layer 19.
Test(gemma, kv_sharing_counts_only_producing_layers) {
    ModelGeometry g = load("gemma3n-e4b.json");
    cr_expect_eq(g.num_kv_shared_layers, 15);
    cr_expect_eq(geometry_kv_source(&g, 19), 19);
    cr_expect_eq(geometry_kv_source(&g, 20), 18);
    cr_expect_eq(geometry_kv_source(&g, 24), 19);
    cr_expect_eq(geometry_kv_source(&g, 34), 19);
    cr_expect_eq(kvcache_elems_per_token_layer(&g, 20), 0);
    cr_expect_eq(kvcache_bytes_per_token(&g), 20 * 2048.0);
    cr_expect_eq(kvcache_total_bytes(&g, 32768, 1), 4 * 32768 * 2048.0 + 16 * 512 * 2048.0);
    // the same model without sharing: 35 producing layers
    ModelGeometry full = g;
    full.num_kv_shared_layers = 0;
    cr_expect_eq(kvcache_total_bytes(&full, 32768, 1), 7 * 32768 * 2048.0 + 28 * 512 * 2048.0);
#define GM "\"num_hidden_layers\": 4, \"hidden_size\": 64, \"num_attention_heads\": 4, \"sliding_window\": 8, " \
           "\"layer_types\": [\"sliding_attention\", \"full_attention\", \"sliding_attention\", \"full_attention\"]"
    expect_error("{" GM ", \"num_kv_shared_layers\": 4}", "'num_kv_shared_layers' is 4", NULL);
    expect_error("{" GM ", \"num_kv_shared_layers\": -1}", "'num_kv_shared_layers'", NULL);
    expect_error("{" GM ", \"num_kv_shared_layers\": 3}", "num_kv_shared_layers 3", "no earlier non-shared layer");
    ModelGeometry s = parse_ok("{" GM ", \"num_kv_shared_layers\": 2}");
    cr_expect(geometry_kv_source(&s, 2) == 0 && geometry_kv_source(&s, 3) == 1);
}

// Gemma 4 31B: 50 sliding layers of 16 KV heads x 256 and 10 full layers of 4 x 512 (global_head_dim,
// num_global_key_value_heads). attention_k_eq_v: V comes from k_proj, but K is normed and rotated and V
// only normed, so both are cached: per token 50 x 2 x 16 x 256 x 2 + 10 x 2 x 4 x 512 x 2 = 901120 B.
Test(gemma, gemma4_global_layers_have_their_own_shape) {
    ModelGeometry g = load("gemma4-31b.json");
    cr_expect_eq(geometry_count(&g, LAYER_GLOBAL), 10);
    cr_expect_eq(g.attention_k_eq_v, 1);
    cr_expect_eq(kvcache_elems_per_token_layer(&g, 5), 2 * 4 * 512);
    cr_expect_eq(kvcache_elems_per_token_layer(&g, 0), 2 * 16 * 256);
    cr_expect_eq(kvcache_bytes_per_token(&g), 901120.0);
    expect_error("{" GM ", \"num_global_key_value_heads\": 8}", "'num_global_key_value_heads' (8) exceeds", NULL);
    expect_error("{" GM ", \"global_head_dim\": \"512\"}", "'global_head_dim' must be an integer", NULL);
    expect_error("{" GM ", \"attention_k_eq_v\": 1}", "'attention_k_eq_v' must be true or false", NULL);
}

// ---- Ling 2.5: Lightning + MLA by layer_group_size -------------------------------------------------------

// 10 layers, groups of 4: layers 3 and 7 close a group and are MLA, layers 8-9 (after the last whole
// group) are MLA too; the other 6 are Lightning with one 32 x 32 state per head (head_dim 32, 4 heads).
Test(ling, layer_groups_of_lightning_and_mla) {
    ModelGeometry g = parse_ok("{\"model_type\": \"bailing_moe_linear\", \"num_hidden_layers\": 10, \"hidden_size\": 128, "
                               "\"num_attention_heads\": 4, \"head_dim\": 32, \"layer_group_size\": 4, \"kv_lora_rank\": 16, "
                               "\"qk_rope_head_dim\": 8, \"qk_nope_head_dim\": 24, \"v_head_dim\": 32}");
    cr_expect_eq(geometry_count(&g, LAYER_GLOBAL), 4);
    cr_expect(g.layer_kind[3] == LAYER_GLOBAL && g.layer_kind[7] == LAYER_GLOBAL && g.layer_kind[8] == LAYER_GLOBAL &&
              g.layer_kind[0] == LAYER_LINEAR);
    cr_expect_eq(g.linear_kind, LINEAR_LIGHTNING);
    cr_expect_eq(g.attn, ATTN_MLA);
    cr_expect_eq(kvcache_bytes_per_token(&g), 4 * (16 + 8) * 2.0);
    cr_expect_eq(kvcache_state_bytes(&g), 6 * 4 * 32 * 32 * 4.0);
    expect_error("{\"num_hidden_layers\": 4, \"hidden_size\": 64, \"num_attention_heads\": 4, \"layer_group_size\": 0}",
                 "'layer_group_size' must be positive", NULL);
    expect_error("{\"num_hidden_layers\": 4, \"hidden_size\": 64, \"num_attention_heads\": 4, \"layer_group_size\": 2, "
                 "\"attn_type_list\": [0, 1, 0, 1]}", "'layer_group_size' and 'attn_type_list'", NULL);
}

// ---- the plain and windowed ones: published geometry, bytes per token in bf16 by hand ----------------

Test(plain_configs, published_bytes_per_token) {
    static const struct { const char *file; double bytes; int global, local, window; } c[] = {
        {"qwen3-235b-a22b.json", 94 * 2 * 4 * 128 * 2.0, 94, 0, 0},    // use_sliding_window false
        {"olmo3-32b.json", 64 * 2 * 8 * 128 * 2.0, 16, 48, 4096},      // 3 sliding : 1 full
        {"minimax-m2.5.json", 62 * 2 * 8 * 128 * 2.0, 62, 0, 0},       // attn_type_list all 1: no Lightning
        {"trinity-nano.json", 56 * 2 * 2 * 128 * 2.0, 14, 42, 2048},
        // Step 3.5 Flash: 8 KV groups of 128 in both kinds (window layers have 96 query heads, same groups)
        {"step-3.5-flash.json", 45 * 2 * 8 * 128 * 2.0, 12, 33, 512},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        ModelGeometry g = load(c[i].file);
        cr_expect_eq(kvcache_bytes_per_token(&g), c[i].bytes, "%s: %.0f", c[i].file, kvcache_bytes_per_token(&g));
        cr_expect_eq(geometry_count(&g, LAYER_GLOBAL), c[i].global, "%s global", c[i].file);
        cr_expect_eq(geometry_count(&g, LAYER_LOCAL), c[i].local, "%s local", c[i].file);
        cr_expect_eq(g.sliding_window, c[i].window, "%s window", c[i].file);
        cr_expect_eq(g.linear_kind, LINEAR_NONE, "%s", c[i].file);
    }
    ModelGeometry step = load("step-3.5-flash.json");
    cr_expect_eq(step.swa_num_key_value_heads, 8);
    cr_expect_eq(step.attn_output_gate, GATE_HEADWISE);   // use_head_wise_attn_gate
    expect_error("{\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4, "
                 "\"attention_other_setting\": 3}", "'attention_other_setting' must be an object", NULL);
    expect_error("{\"num_hidden_layers\": 2, \"hidden_size\": 64, \"num_attention_heads\": 4, "
                 "\"attention_other_setting\": {\"num_attention_groups\": 0}}", "'attention_other_setting.num_attention_groups'", NULL);
}

// ---- the overflow class: huge but well-formed numbers -------------------------------------------------

static void expect_tool_error(const char *args, const char *needle) {
    char out[8192];
    int rc = test_run(out, sizeof out, "kvcache", args);
    cr_expect_eq(rc, 2, "kvcache %s: exit %d, expected 2; output: %s", args, rc, out);
    cr_expect_eq(test_count_lines(out), 1, "kvcache %s: expected one line, got: %s", args, out);
    cr_expect(strstr(out, needle) != NULL, "kvcache %s: message lacks '%s': %s", args, needle, out);
    cr_expect(strchr(out, '-') == NULL || strstr(out, "B)") == NULL, "kvcache %s printed bytes: %s", args, out);
}

Test(overflow, huge_dims_are_errors_naming_the_key) {
    expect_tool_error("data/configs/deepseek-v3.json --set qk_nope_head_dim=2147483647 --set qk_rope_head_dim=2147483647",
                      "'qk_nope_head_dim' + 'qk_rope_head_dim'");
    expect_tool_error("data/configs/qwen3-next-80b-a3b.json --set linear_num_value_heads=2147483600 "
                      "--set linear_key_head_dim=2147483600", "linear_num_value_heads x linear_key_head_dim");
    expect_tool_error("data/configs/qwen3-next-80b-a3b.json --set linear_num_key_heads=1048576 "
                      "--set linear_num_value_heads=1048576 --set linear_value_head_dim=1 --set linear_key_head_dim=1048576 "
                      "--set linear_conv_kernel_dim=1048576", "linear_conv_kernel_dim");
    expect_tool_error("data/configs/llama3-8b.json --set num_attention_heads=2097152 --set num_key_value_heads=2097152 "
                      "--set head_dim=1073741824", "too large");
    expect_tool_error("data/configs/kimi-linear-48b-a3b.json --set linear_attn_config.num_heads=2147483647 "
                      "--set linear_attn_config.head_dim=2147483647", "linear_num_value_heads");
    // large but representable: a correct (absurd) number, exit 0, no sign of wrapping
    char out[8192];
    cr_expect_eq(test_run(out, sizeof out, "kvcache", "data/configs/deepseek-v3.2.json --json --set index_head_dim=2147483647"), 0);
    cJSON *arr = cJSON_Parse(out);
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "kv_bytes_per_token")),
                 61 * (576.0 + 2147483647.0) * 2);
    cJSON_Delete(arr);
    expect_tool_error("data/configs/llama3-8b.json --set num_hidden_layers=4294967296", "'num_hidden_layers'");
}

// geometry_check_sizes directly: products past 2^50 elements are refused, and the limit sits where it says.
Test(overflow, size_check_bounds) {
    ModelGeometry g;
    char why[256];
    geometry_init(&g, "big", 2, 64, 4, 4);
    g.head_dim = 1 << 24;
    cr_expect(geometry_validate(&g, why, sizeof why), "%s", why);   // 4 x 2^25 elements: fine
    g.n_heads = g.n_kv_heads = 1 << 25;                               // 2^25 x 2^25: past 2^50
    cr_expect(!geometry_validate(&g, why, sizeof why));
    cr_expect(strstr(why, "too large") != NULL, "%s", why);
}

// ---- --set, --table, --layers-plot ------------------------------------------------------------------------

Test(kvcache_set, what_if_without_editing_files) {
    char out[16384];
    // Llama 3 8B with 1 KV head: 32 x 2 x 1 x 128 x 2 = 16384 B per token
    cr_assert_eq(test_run(out, sizeof out, "kvcache", "data/configs/llama3-8b.json --set num_key_value_heads=1"), 0, "%s", out);
    cr_expect(strstr(out, "MQA 32q/1kv x 128") && strstr(out, "(16384 B)"), "%s", out);
    // Gemma 3 27B with a window of 512 at 128K: 10 x 131072 x 8192 + 52 x 512 x 8192
    cr_assert_eq(test_run(out, sizeof out, "kvcache", "data/configs/gemma3-27b.json --set sliding_window=512"), 0, "%s", out);
    char want[64];
    snprintf(want, sizeof want, "(%.0f B)", 10 * 131072 * 8192.0 + 52 * 512 * 8192.0);
    cr_expect(strstr(out, want) != NULL, "%s lacks %s", out, want);
    // --json honours it; nested keys and lists work
    cr_assert_eq(test_run(out, sizeof out, "kvcache", "data/configs/kimi-linear-48b-a3b.json --json "
                          "--set=linear_attn_config.num_heads=16 --set 'layer_types=null'"), 0, "%s", out);
    cJSON *arr = cJSON_Parse(out);
    cr_assert(cJSON_IsArray(arr), "%s", out);
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, 0), "linear_num_value_heads")), 16);
    cJSON_Delete(arr);
    // --plot honours it (the figure is written)
    char dir[256], args[1024];
    test_tmpdir(dir, sizeof dir);
    snprintf(args, sizeof args, "data/configs/llama3-8b.json --set num_key_value_heads=2 --plot %s/kv.svg", dir);
    cr_expect_eq(test_run(out, sizeof out, "kvcache", args), 0, "%s", out);
    snprintf(args, sizeof args, "%s/kv.svg", dir);
    FILE *f = fopen(args, "r");
    cr_expect(f != NULL, "no %s", args);
    if (f) fclose(f);
    remove(args);
    remove(dir);
    // errors name the key, one line, exit 2
    expect_tool_error("data/configs/llama3-8b.json --set num_key_value_heads=3", "num_key_value_heads (3)");
    expect_tool_error("data/configs/llama3-8b.json --set num_key_value_heads=x", "'num_key_value_heads' must be an integer");
    expect_tool_error("data/configs/llama3-8b.json --set no_such_key=1", "'no_such_key'");
    expect_tool_error("data/configs/llama3-8b.json --set num_key_value_heads", "--set: expected key=value");
    expect_tool_error("data/configs/llama3-8b.json --set", "--set: expected key=value");
    expect_tool_error("data/configs/gemma3-27b.json --set sliding_window=-5", "'sliding_window'");
}

// The table in data/configs/README.md is the tool's output, between its two marker lines.
Test(kvcache_table, readme_table_equals_the_tool) {
    static char out[65536];
    cr_assert_eq(test_run(out, sizeof out, "kvcache", "--table data/configs/*.json"), 0, "%s", out);
    char path[1024];
    snprintf(path, sizeof path, "%s/data/configs/README.md", test_root());
    FILE *f = fopen(path, "r");
    cr_assert(f, "no %s", path);
    static char readme[262144];
    size_t n = fread(readme, 1, sizeof readme - 1, f);
    readme[n] = '\0';
    fclose(f);
    const char *begin = "<!-- table: ./kvcache --table data/configs/*.json -->\n", *end = "<!-- end of table -->";
    char *a = strstr(readme, begin), *b = a ? strstr(a, end) : NULL;
    cr_assert(a && b, "README lacks the table markers");
    a += strlen(begin);
    *b = '\0';
    cr_expect_str_eq(a, out, "data/configs/README.md's table is stale: run `make configs-table`");
    cr_expect(strstr(out, "| deepseek-v4-pro.json |") != NULL);
}

Test(kvcache_layers_plot, writes_the_strip_and_checks_its_flag) {
    char out[8192], dir[256], args[1024], png[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(png, sizeof png, "%s/strip.png", dir);
    snprintf(args, sizeof args, "--layers-plot %s data/configs/gemma3n-e4b.json data/configs/deepseek-v4-flash.json", png);
    cr_expect_eq(test_run(out, sizeof out, "kvcache", args), 0, "%s", out);
    FILE *f = fopen(png, "rb");
    unsigned char head[8] = {0};
    cr_assert(f, "no %s", png);
    cr_expect_eq(fread(head, 1, 8, f), 8);
    fclose(f);
    cr_expect(head[1] == 'P' && head[2] == 'N' && head[3] == 'G');
    cr_expect(!test_has_tmp_files(dir));
    remove(png);
    remove(dir);
    expect_tool_error("--layers-plot strip.jpg data/configs/gpt2.json", "--layers-plot");
    expect_tool_error("--layers-plot /nonexistent/dir/strip.png data/configs/gpt2.json", "/nonexistent/dir/strip.png");
}
