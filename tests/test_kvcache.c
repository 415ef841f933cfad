// test_kvcache.c: the one geometry, the KV-cache formula and the Hugging Face config reader, against
// published numbers and hand arithmetic (written out in the comments), plus every way a config or a flag
// can be wrong: each must give one line naming the file and the key, and the tool must exit 2.
#include <criterion/criterion.h>
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "geometry.h"
#include "helpers.h"
#include "hfconfig.h"
#include "kvcache.h"

// ---- helpers ------------------------------------------------------------------------------------

static ModelGeometry load_config(const char *file) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/data/configs/%s", test_root(), file);
    ModelGeometry g;
    int rc = hfconfig_load(&g, path, err, sizeof err);
    cr_assert_eq(rc, 0, "%s: %s", file, err);
    return g;
}

// Parses json and expects an error whose message contains every needle (NULL-terminated list).
static void expect_parse_error(const char *json, const char *needle1, const char *needle2) {
    ModelGeometry g;
    char err[512];
    int rc = hfconfig_parse(&g, json, "bad.json", NULL, err, sizeof err);
    cr_expect_eq(rc, -1, "accepted: %s", json);
    cr_expect(strncmp(err, "bad.json: ", 10) == 0, "error does not start with the file: '%s'", err);
    cr_expect(strchr(err, '\n') == NULL, "error is not one line: '%s'", err);
    cr_expect(strstr(err, needle1) != NULL, "error lacks '%s': '%s'", needle1, err);
    if (needle2) cr_expect(strstr(err, needle2) != NULL, "error lacks '%s': '%s'", needle2, err);
}

static ModelGeometry parse_ok(const char *json) {
    ModelGeometry g;
    char err[512];
    cr_assert_eq(hfconfig_parse(&g, json, "ok.json", NULL, err, sizeof err), 0, "%s", err);
    return g;
}

// ---- published numbers ----------------------------------------------------------------------------

// KV bytes per token in bf16 (2 B per element), every layer counted, from each model's published
// hyperparameters: layers x 2 (K and V) x KV heads x head_dim x 2 B, or layers x (d_c + d_r [+ d_I]) x 2 B.
static const struct {
    const char *file;
    double bytes;
    int global, local, window;
} published[] = {
    {"gpt2.json", 36864, 12, 0, 0},                     // 12 x 2 x 12 x 64 x 2 (MHA, 768 / 12 = 64)
    {"olmo2-7b.json", 524288, 32, 0, 0},                // 32 x 2 x 32 x 128 x 2 (MHA)
    {"llama3-8b.json", 131072, 32, 0, 0},               // 32 x 2 x 8 x 128 x 2 = 128 KiB
    {"llama3-70b.json", 327680, 80, 0, 0},              // 80 x 2 x 8 x 128 x 2 = 320 KiB
    {"qwen3-4b.json", 147456, 36, 0, 0},                // 36 x 2 x 8 x 128 x 2
    {"mistral-small-3.1-24b.json", 163840, 40, 0, 0},   // 40 x 2 x 8 x 128 x 2 (text_config)
    {"smollm3-3b.json", 73728, 36, 0, 0},               // 36 x 2 x 4 x 128 x 2
    {"deepseek-v3.json", 70272, 61, 0, 0},              // 61 x (512 + 64) x 2
    {"kimi-k2.json", 70272, 61, 0, 0},                  // 61 x (512 + 64) x 2
    {"deepseek-v3.2.json", 85888, 61, 0, 0},            // 61 x (512 + 64 + 128) x 2 (indexer key)
    {"sarvam-30b.json", 19456, 19, 0, 0},               // 19 x 2 x 4 x 64 x 2
    {"sarvam-105b.json", 36864, 32, 0, 0},              // 32 x (512 + 64) x 2
    {"gemma2-9b.json", 344064, 21, 21, 4096},           // 42 x 2 x 8 x 256 x 2, alternating local/global
    {"gemma3-27b.json", 507904, 10, 52, 1024},          // 62 x 2 x 16 x 128 x 2, 5 local : 1 global
    {"olmo3-7b.json", 524288, 8, 24, 4096},             // 32 x 2 x 32 x 128 x 2, 3 local : 1 global
    {"gpt-oss-20b.json", 49152, 12, 12, 128},           // 24 x 2 x 8 x 64 x 2, alternating
};

Test(kvcache, published_bytes_per_token_of_every_shipped_config) {
    for (size_t i = 0; i < sizeof published / sizeof published[0]; i++) {
        ModelGeometry g = load_config(published[i].file);
        g.dtype_bytes = 2;
        cr_expect_eq(kvcache_bytes_per_token(&g), published[i].bytes, "%s: %.0f B/token, expected %.0f",
                     published[i].file, kvcache_bytes_per_token(&g), published[i].bytes);
        cr_expect_eq(geometry_count(&g, LAYER_GLOBAL), published[i].global, "%s global layers", published[i].file);
        cr_expect_eq(geometry_count(&g, LAYER_LOCAL), published[i].local, "%s local layers", published[i].file);
        cr_expect_eq(g.sliding_window, published[i].window, "%s sliding_window", published[i].file);
        cr_expect_eq(kvcache_fixed_bytes(&g), 0.0, "%s has no fixed state", published[i].file);
    }
}

Test(kvcache, headline_numbers_and_attention_kinds) {
    ModelGeometry g = load_config("llama3-8b.json");
    cr_expect_eq(kvcache_bytes_per_token(&g), 32.0 * 2 * 8 * 128 * 2);   // 131072 B = 128 KiB
    cr_expect_str_eq(geometry_attn_name(&g), "GQA");
    cr_expect_eq(g.dtype_bytes, 2);                                        // "bfloat16"
    g = load_config("deepseek-v3.json");
    cr_expect_eq(kvcache_bytes_per_token(&g), 61.0 * 576 * 2);             // 70272 B
    cr_expect_str_eq(geometry_attn_name(&g), "MLA");
    cr_expect_eq(g.kv_lora_rank, 512);
    cr_expect_eq(g.q_lora_rank, 1536);
    cr_expect_eq(g.head_dim, 192);                                         // qk_nope 128 + qk_rope 64
    g = load_config("gpt2.json");                                          // n_layer / n_head / n_embd
    cr_expect_eq(kvcache_bytes_per_token(&g), 12.0 * 2 * 768 * 2);         // 36864 B
    cr_expect_str_eq(geometry_attn_name(&g), "MHA");
    cr_expect_eq(g.d_ff, 3072);                                            // GPT-2: 4 x n_embd
    cr_expect_eq(g.max_seq_len, 1024);                                     // n_positions
    g = load_config("olmo2-7b.json");                                      // "float32": 4 B per element
    cr_expect_eq(g.dtype_bytes, 4);
    cr_expect_eq(kvcache_bytes_per_token(&g), 32.0 * 2 * 32 * 128 * 4);
    g = load_config("sarvam-30b.json");                                    // transformers 4.56 "dtype"
    cr_expect_eq(g.dtype_bytes, 4);
    g = load_config("mistral-small-3.1-24b.json");                         // text_config + root torch_dtype
    cr_expect_eq(g.n_layers, 40);
    cr_expect_eq(g.rope_theta, 1e9);
    cr_expect_str_eq(g.name, "mistral-small-3.1-24b");                     // no _name_or_path: basename
}

// Gemma 3 27B at 128K, by hand: one layer's token = 2 x 16 x 128 x 2 B = 8192 B. Layers 5, 11, ..., 59
// are global (10 of them) and hold all 131072 tokens; the other 52 hold the last 1024.
//   10 x 131072 x 8192 = 10737418240;  52 x 1024 x 8192 = 436207616;  sum 11173625856 B (10.4 GiB),
// against 62 x 131072 x 8192 = 66571993088 B (62 GiB) if every layer were global.
Test(kvcache, gemma3_27b_windowed_total_by_hand) {
    ModelGeometry g = load_config("gemma3-27b.json");
    cr_expect_eq(g.layer_kind[5], LAYER_GLOBAL);
    cr_expect_eq(g.layer_kind[4], LAYER_LOCAL);
    cr_expect_eq(g.layer_kind[61], LAYER_LOCAL);
    cr_expect_eq(g.rope_theta, 1e6);          // Gemma3TextConfig defaults (absent from the file)
    cr_expect_eq(g.rope_local_theta, 1e4);
    cr_expect_eq(kvcache_total_bytes(&g, 131072, 1), 11173625856.0);
    cr_expect_eq(kvcache_total_bytes(&g, 131072, 3), 3 * 11173625856.0);
    // below the window every layer still grows: exactly bytes_per_token x context
    cr_expect_eq(kvcache_total_bytes(&g, 1000, 1), 1000 * 507904.0);
    cr_expect_eq(kvcache_total_bytes(&g, 1024, 1), 1024 * 507904.0);
    // one token past the window: only the 10 global layers grow
    cr_expect_eq(kvcache_total_bytes(&g, 1025, 1), 1024 * 507904.0 + 10 * 8192.0);
}

// gpt-oss-20b at 1M: 12 global layers x 1048576 x (2 x 8 x 64 x 2 = 2048 B) + 12 local x 128 x 2048 B.
Test(kvcache, gpt_oss_windowed_total_by_hand) {
    ModelGeometry g = load_config("gpt-oss-20b.json");
    cr_expect_eq(kvcache_total_bytes(&g, 1048576, 1), 12.0 * 1048576 * 2048 + 12.0 * 128 * 2048);
}

// The reductions of the DeepSeek-V2 paper's Table 1 with one model size: H = 32, dh = 128, 32 layers.
Test(kvcache, mha_gqa_mqa_mla_reductions) {
    ModelGeometry mha, gqa, mqa;
    geometry_init(&mha, "mha", 32, 4096, 32, 32);
    geometry_init(&gqa, "gqa", 32, 4096, 32, 8);
    geometry_init(&mqa, "mqa", 32, 4096, 32, 1);
    cr_expect_eq(kvcache_elems_per_token_layer(&mha, 0), 2 * 32 * 128);
    cr_expect_eq(kvcache_elems_per_token_layer(&gqa, 0), 2 * 8 * 128);
    cr_expect_eq(kvcache_elems_per_token_layer(&mqa, 0), 2 * 128);
    cr_expect_eq(kvcache_bytes_per_token(&mha), 524288.0);   // 32 x 8192 x 2
    cr_expect_eq(kvcache_bytes_per_token(&mha) / kvcache_bytes_per_token(&gqa), 4.0);    // H / G
    cr_expect_eq(kvcache_bytes_per_token(&mha) / kvcache_bytes_per_token(&mqa), 32.0);   // H
    cr_expect_str_eq(geometry_attn_name(&mha), "MHA");
    cr_expect_str_eq(geometry_attn_name(&mqa), "MQA");
    // MLA with d_c = 4 dh and d_r = dh / 2 caches 4.5 dh: "equal to GQA with only 2.25 groups".
    ModelGeometry mla = mha;
    mla.attn = ATTN_MLA;
    mla.kv_lora_rank = 4 * 128;
    mla.qk_rope_head_dim = 64;
    mla.qk_nope_head_dim = 128;
    mla.v_head_dim = 128;
    char why[256];
    cr_assert(geometry_validate(&mla, why, sizeof why), "%s", why);
    cr_expect_eq(kvcache_elems_per_token_layer(&mla, 0), (long)(2 * 2.25 * 128));
    // dtype and batch scale everything linearly
    mqa.dtype_bytes = 1;
    cr_expect_eq(kvcache_total_bytes(&mqa, 4096, 5), 5 * 4096 * 32.0 * 256);
}

Test(kvcache, linear_layers_add_fixed_state) {
    ModelGeometry g;
    geometry_init(&g, "hybrid", 4, 64, 4, 2);   // head_dim 16; layer: 2 x 2 x 16 = 64 elements per token
    g.layer_kind[0] = g.layer_kind[1] = g.layer_kind[2] = LAYER_LINEAR;
    // Gated DeltaNet: 2 key heads, 4 value heads, dk 8, dv 10, conv kernel 4
    g.linear_kind = LINEAR_GDN;
    g.linear_num_key_heads = 2; g.linear_num_value_heads = 4;
    g.linear_key_head_dim = 8; g.linear_value_head_dim = 10; g.linear_conv_kernel_dim = 4;
    char why[256];
    cr_assert(geometry_validate(&g, why, sizeof why), "%s", why);
    cr_expect_eq(geometry_linear_state_elems(&g), 4 * 8 * 10);
    cr_expect_eq(geometry_linear_conv_elems(&g), (2 * 2 * 8 + 4 * 10) * 3);
    double fixed = 3 * (4 * 8 * 10 * 4.0 + (2 * 2 * 8 + 4 * 10) * 3 * 2.0);   // fp32 state, bf16 conv
    cr_expect_eq(kvcache_elems_per_token_layer(&g, 0), 0);
    cr_expect_eq(kvcache_bytes_per_token(&g), 64 * 2.0);
    cr_expect_eq(kvcache_fixed_bytes(&g), fixed);
    cr_expect_eq(kvcache_total_bytes(&g, 100, 2), 2 * (100 * 64 * 2.0 + fixed));
}

// ---- geometry_validate -----------------------------------------------------------------------------

static void expect_invalid(const ModelGeometry *g, const char *needle) {
    char why[256] = "";
    cr_expect_eq(geometry_validate(g, why, sizeof why), 0, "accepted a geometry that should fail on %s", needle);
    cr_expect(strstr(why, needle) != NULL, "reason lacks '%s': '%s'", needle, why);
}

Test(geometry, validate_names_the_problem) {
    ModelGeometry ok, g;
    geometry_init(&ok, "ok", 4, 64, 4, 2);
    char why[256];
    cr_assert(geometry_validate(&ok, why, sizeof why), "%s", why);
    g = ok; g.n_layers = 0; expect_invalid(&g, "num_hidden_layers");
    g = ok; g.n_layers = GEOM_MAX_LAYERS + 1; expect_invalid(&g, "num_hidden_layers");
    g = ok; g.n_heads = 6; g.n_kv_heads = 4; expect_invalid(&g, "not divisible by num_key_value_heads");
    g = ok; g.n_kv_heads = 8; expect_invalid(&g, "exceeds num_attention_heads");
    g = ok; g.d_model = -1; expect_invalid(&g, "hidden_size");
    g = ok; g.head_dim = 0; expect_invalid(&g, "head_dim");
    g = ok; g.kv_lora_rank = 512; expect_invalid(&g, "MLA fields");
    g = ok; g.attn = ATTN_MLA; expect_invalid(&g, "kv_lora_rank");
    g = ok; g.layer_kind[2] = LAYER_LOCAL; expect_invalid(&g, "sliding_window");
    g = ok; g.layer_kind[1] = LAYER_LINEAR; expect_invalid(&g, "no linear layer kind");
    g = ok; g.linear_kind = LINEAR_GDN; expect_invalid(&g, "linear_num_key_heads");
    g = ok; g.partial_rotary_factor = 0.2; expect_invalid(&g, "partial_rotary_factor");   // int(3.2) = 3 dims: odd
    g = ok; g.index_n_heads = 64; expect_invalid(&g, "index_head_dim");
    g = ok; g.dtype_bytes = 0; expect_invalid(&g, "dtype_bytes");
    g = ok; g.layer_kind[3] = LAYER_CHUNKED + 1; expect_invalid(&g, "unknown kind");
    g = ok; for (int l = 0; l < 4; l++) g.layer_kind[l] = LAYER_NONE;
    expect_invalid(&g, "MLP-only");
    g = ok; g.layer_kind[1] = LAYER_NONE;   // one MLP-only layer: fine, and it caches nothing
    cr_expect(geometry_validate(&g, why, sizeof why), "%s", why);
    cr_expect_eq(kvcache_elems_per_token_layer(&g, 1), 0);
    cr_expect_eq(kvcache_bytes_per_token(&g), 3 * 2 * 2 * 16 * 2.0);
}

// ---- the config reader -----------------------------------------------------------------------------

#define BASE "\"num_hidden_layers\": 4, \"hidden_size\": 64, \"num_attention_heads\": 4"

Test(hfconfig, keys_defaults_and_patterns) {
    ModelGeometry g = parse_ok("{" BASE "}");
    cr_expect_eq(g.n_kv_heads, 4);              // default: num_attention_heads (MHA)
    cr_expect_eq(g.head_dim, 16);               // hidden_size / num_attention_heads
    cr_expect_eq(g.dtype_bytes, 2);             // no torch_dtype: bf16
    cr_expect_str_eq(g.name, "ok");             // the label's basename without .json
    g = parse_ok("{" BASE ", \"_name_or_path\": \"org/model\", \"torch_dtype\": \"float16\", \"head_dim\": 32}");
    cr_expect_str_eq(g.name, "org/model");
    cr_expect_eq(g.head_dim, 32);
    // Qwen2-style: the window is switched off
    g = parse_ok("{" BASE ", \"sliding_window\": 4096, \"use_sliding_window\": false}");
    cr_expect_eq(g.sliding_window, 0);
    cr_expect_eq(geometry_count(&g, LAYER_GLOBAL), 4);
    // ... and on, with max_window_layers: layers from 2 on slide
    g = parse_ok("{" BASE ", \"sliding_window\": 64, \"use_sliding_window\": true, \"max_window_layers\": 2}");
    cr_expect(g.layer_kind[0] == LAYER_GLOBAL && g.layer_kind[1] == LAYER_GLOBAL && g.layer_kind[2] == LAYER_LOCAL);
    // Mistral 7B v0.1: a window and no pattern means every layer slides
    g = parse_ok("{" BASE ", \"sliding_window\": 64}");
    cr_expect_eq(geometry_count(&g, LAYER_LOCAL), 4);
    // Gemma 3's sliding_window_pattern: layer l is global iff (l + 1) % N == 0
    g = parse_ok("{" BASE ", \"sliding_window\": 64, \"sliding_window_pattern\": 2}");
    cr_expect(g.layer_kind[0] == LAYER_LOCAL && g.layer_kind[1] == LAYER_GLOBAL && g.layer_kind[3] == LAYER_GLOBAL);
    g = parse_ok("{" BASE ", \"sliding_window\": 8, \"layer_types\": [\"full_attention\", \"sliding_attention\","
                 "\"sliding_attention\", \"full_attention\"]}");
    cr_expect(g.layer_kind[0] == LAYER_GLOBAL && g.layer_kind[1] == LAYER_LOCAL && g.layer_kind[3] == LAYER_GLOBAL);
    // transformers 5: rope_parameters per layer type
    g = parse_ok("{" BASE ", \"rope_parameters\": {\"full_attention\": {\"rope_theta\": 1000000.0},"
                 "\"sliding_attention\": {\"rope_theta\": 10000.0}}}");
    cr_expect_eq(g.rope_theta, 1e6);
    cr_expect_eq(g.rope_local_theta, 1e4);
    // nested text_config wins over the top level; torch_dtype comes from the top level
    g = parse_ok("{\"num_hidden_layers\": 99, \"torch_dtype\": \"float32\", \"text_config\": {" BASE "}}");
    cr_expect_eq(g.n_layers, 4);
    cr_expect_eq(g.dtype_bytes, 4);
    // MQA spelled the old way
    g = parse_ok("{" BASE ", \"multi_query\": true}");
    cr_expect_eq(g.n_kv_heads, 1);
}

Test(hfconfig, bad_configs_name_file_and_key) {
    expect_parse_error("{\"hidden_size\": 64, \"num_attention_heads\": 4}", "key 'num_hidden_layers' is missing", NULL);
    expect_parse_error("{\"num_hidden_layers\": 4, \"num_attention_heads\": 4}", "'hidden_size'", "missing");
    expect_parse_error("{\"num_hidden_layers\": 0, \"hidden_size\": 64, \"num_attention_heads\": 4}",
                       "num_hidden_layers", "0");
    expect_parse_error("{\"num_hidden_layers\": 300, \"hidden_size\": 64, \"num_attention_heads\": 4}",
                       "num_hidden_layers", "256");
    expect_parse_error("{" BASE ", \"num_key_value_heads\": 3}", "num_attention_heads (4) is not divisible",
                       "num_key_value_heads (3)");
    expect_parse_error("{\"num_hidden_layers\": 4, \"hidden_size\": \"64\", \"num_attention_heads\": 4}",
                       "key 'hidden_size' must be an integer", "string");
    expect_parse_error("{\"num_hidden_layers\": 4.5, \"hidden_size\": 64, \"num_attention_heads\": 4}",
                       "num_hidden_layers", "4.5");
    expect_parse_error("{\"num_hidden_layers\": 4, \"hidden_size\": 66, \"num_attention_heads\": 4}",
                       "not divisible", "head_dim");
    expect_parse_error("{" BASE ", \"torch_dtype\": \"int4\"}", "torch_dtype", "int4");
    expect_parse_error("{" BASE ", \"layer_types\": [\"full_attention\"]}", "layer_types", "1 entries");
    expect_parse_error("{" BASE ", \"layer_types\": [\"sliding_attention\", \"full_attention\", \"full_attention\","
                       "\"full_attention\"]}", "sliding_window", "missing");
    expect_parse_error("{" BASE ", \"kv_lora_rank\": 512, \"v_head_dim\": 128}", "qk_rope_head_dim", "missing");
    expect_parse_error("{" BASE ", \"index_n_heads\": 64}", "index_head_dim", "missing");
    expect_parse_error("{" BASE ", \"text_config\": 3}", "text_config", "object");
    expect_parse_error("[1, 2]", "JSON object", NULL);
    expect_parse_error("{" BASE ",\n \"vocab_size\": }", "invalid JSON", "line 2");
    expect_parse_error("", "invalid JSON", NULL);
}

Test(hfconfig, unsupported_families_are_errors_not_wrong_numbers) {
    // Linear-attention keys are read now (see the hybrid tests below); incomplete ones are errors.
    expect_parse_error("{" BASE ", \"linear_num_value_heads\": 32}", "key 'linear_num_key_heads' is missing", NULL);
    // 'linear_attention' layers with no sizes, in a family whose linear layer is not Lightning
    expect_parse_error("{" BASE ", \"layer_types\": [\"linear_attention\", \"linear_attention\", "
                       "\"linear_attention\", \"full_attention\"]}", "'layer_types'", "no linear-layer sizes");
    expect_parse_error("{" BASE ", \"layers_block_type\": [\"mamba\"], \"compress_ratios\": [4, 128]}",
                       "'layers_block_type'", "not supported yet");
    // Mamba keys without Nemotron-H's pattern (Jamba, Falcon-H1, ...): the layout is unknown
    expect_parse_error("{" BASE ", \"mamba_d_state\": 128}", "'mamba_d_state'", "not supported yet");
    expect_parse_error("{" BASE ", \"attn_layer_period\": 8}", "'attn_layer_period'", "not supported yet");
    expect_parse_error("{" BASE ", \"layers_block_type\": [\"mamba\"]}", "'layers_block_type'", "not supported yet");
    expect_parse_error("{" BASE ", \"attention_chunk_size\": 8192}", "'attention_chunk_size'", "which layers are chunked");
    expect_parse_error("{" BASE ", \"index_kpool\": 4}", "'index_kpool'", "not supported yet");
    // harmless zeros and nulls are not "present"
    parse_ok("{" BASE ", \"num_kv_shared_layers\": 0, \"compress_ratios\": null}");
}

Test(hfconfig, file_errors_name_the_file) {
    ModelGeometry g;
    char err[512];
    cr_expect_eq(hfconfig_load(&g, "/nonexistent/model.json", err, sizeof err), -1);
    cr_expect(strstr(err, "/nonexistent/model.json: cannot open") != NULL, "%s", err);
    char dir[256], path[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/broken.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("{\n  \"num_hidden_layers\": 4,\n  oops\n}\n", f);
    fclose(f);
    cr_expect_eq(hfconfig_load(&g, path, err, sizeof err), -1);
    cr_expect(strstr(err, path) && strstr(err, "invalid JSON at line 3"), "%s", err);
    remove(path);
    remove(dir);
}

// ---- hybrids: linear layers from real configs ---------------------------------------------------------

// Each hybrid's published geometry, and its cache worked out by hand from those numbers (bf16 KV and conv
// state, fp32 recurrent state):
//   per token = attention layers x 2 x G x dh x 2 B      (MLA: x (d_c + d_r) x 2 B)
//   state     = linear layers x Hv x dk x dv x 4 B
//   conv      = linear layers x (2 Hk dk + Hv dv) x (K - 1) x 2 B
static const struct {
    const char *file;
    int layers, attention, linear, mlp_only, kind, hk, hv, dk, dv, conv;
    double per_token, state, conv_bytes;
} hybrids[] = {
    // Qwen3-Next-80B-A3B: 12 gated GQA layers (16q/2kv x 256) and 36 Gated DeltaNet (Hk 16, Hv 32, 128 x 128)
    {"qwen3-next-80b-a3b.json", 48, 12, 36, 0, LINEAR_GDN, 16, 32, 128, 128, 4,
     12 * 2 * 2 * 256 * 2.0, 36 * 32 * 128 * 128 * 4.0, 36 * (2 * 16 * 128 + 32 * 128) * 3 * 2.0},
    // Qwen3.5-9B: 8 gated GQA layers (16q/4kv x 256), 24 Gated DeltaNet with Qwen3-Next's sizes
    {"qwen3.5-9b.json", 32, 8, 24, 0, LINEAR_GDN, 16, 32, 128, 128, 4,
     8 * 2 * 4 * 256 * 2.0, 24 * 32 * 128 * 128 * 4.0, 24 * (2 * 16 * 128 + 32 * 128) * 3 * 2.0},
    // Kimi Linear 48B: 7 MLA layers (512 + 64), 20 KDA (32 heads x 128, conv 4 on q, k, v)
    {"kimi-linear-48b-a3b.json", 27, 7, 20, 0, LINEAR_KDA, 32, 32, 128, 128, 4,
     7 * (512 + 64) * 2.0, 20 * 32 * 128 * 128 * 4.0, 20 * (3 * 32 * 128) * 3 * 2.0},
    // MiniMax-Text-01: 10 softmax layers (64q/8kv x 128), 70 lightning (64 heads, 128 x 128 state, no conv)
    {"minimax-text-01.json", 80, 10, 70, 0, LINEAR_LIGHTNING, 64, 64, 128, 128, 0,
     10 * 2 * 8 * 128 * 2.0, 70 * 64 * 128 * 128 * 4.0, 0},
    // Nemotron 3 Nano: 6 GQA (32q/2kv x 128), 23 Mamba-2 (64 heads x 64, N 128, 8 groups), 23 MoE-only
    {"nemotron-3-nano-30b-a3b.json", 52, 6, 23, 23, LINEAR_MAMBA2, 8, 64, 128, 64, 4,
     6 * 2 * 2 * 128 * 2.0, 23 * 64 * 128 * 64 * 4.0, 23 * (2 * 8 * 128 + 64 * 64) * 3 * 2.0},
};

Test(hybrid, published_configs_parse_to_published_numbers) {
    for (size_t i = 0; i < sizeof hybrids / sizeof hybrids[0]; i++) {
        const char *f = hybrids[i].file;
        ModelGeometry g = load_config(f);
        cr_expect_eq(g.n_layers, hybrids[i].layers, "%s layers", f);
        cr_expect_eq(geometry_count(&g, LAYER_GLOBAL), hybrids[i].attention, "%s attention layers", f);
        cr_expect_eq(geometry_count(&g, LAYER_LINEAR), hybrids[i].linear, "%s linear layers", f);
        cr_expect_eq(geometry_count(&g, LAYER_NONE), hybrids[i].mlp_only, "%s MLP-only layers", f);
        cr_expect_eq(g.linear_kind, hybrids[i].kind, "%s linear kind", f);
        cr_expect_eq(g.linear_num_key_heads, hybrids[i].hk, "%s Hk", f);
        cr_expect_eq(g.linear_num_value_heads, hybrids[i].hv, "%s Hv", f);
        cr_expect_eq(g.linear_key_head_dim, hybrids[i].dk, "%s dk", f);
        cr_expect_eq(g.linear_value_head_dim, hybrids[i].dv, "%s dv", f);
        cr_expect_eq(g.linear_conv_kernel_dim, hybrids[i].conv, "%s conv", f);
        cr_expect_eq(g.dtype_bytes, 2, "%s is bf16", f);
        cr_expect_eq(geometry_state_dtype_bytes(&g), 4, "%s state is fp32", f);
        cr_expect_eq(kvcache_bytes_per_token(&g), hybrids[i].per_token, "%s: %.0f B/token, expected %.0f", f,
                     kvcache_bytes_per_token(&g), hybrids[i].per_token);
        cr_expect_eq(kvcache_state_bytes(&g), hybrids[i].state, "%s: state %.0f, expected %.0f", f,
                     kvcache_state_bytes(&g), hybrids[i].state);
        cr_expect_eq(kvcache_conv_bytes(&g), hybrids[i].conv_bytes, "%s: conv %.0f, expected %.0f", f,
                     kvcache_conv_bytes(&g), hybrids[i].conv_bytes);
        cr_expect_eq(kvcache_fixed_bytes(&g), hybrids[i].state + hybrids[i].conv_bytes, "%s fixed", f);
        // the fixed state is paid once per sequence, on top of the growing part
        cr_expect_eq(kvcache_total_bytes(&g, 1000, 2),
                     2 * (1000 * hybrids[i].per_token + hybrids[i].state + hybrids[i].conv_bytes), "%s total", f);
    }
}

Test(hybrid, layer_placement_and_attention_details) {
    // Qwen3-Next: full_attention_interval 4, so layers 3, 7, ..., 47 are gated attention
    ModelGeometry g = load_config("qwen3-next-80b-a3b.json");
    cr_expect(g.layer_kind[0] == LAYER_LINEAR && g.layer_kind[2] == LAYER_LINEAR && g.layer_kind[3] == LAYER_GLOBAL &&
              g.layer_kind[47] == LAYER_GLOBAL);
    cr_expect_eq(g.attn_output_gate, GATE_ELEMENTWISE);   // implicit: q_proj is always 2x wide
    cr_expect_eq(g.qk_norm, QK_NORM_ZERO_CENTRED);
    cr_expect_eq(geometry_rotary_fraction(&g), 0.25);    // 64 of 256 dims rotate
    cr_expect_str_eq(geometry_linear_name(&g), "Gated DeltaNet");
    // Qwen3.5: nested text_config, explicit layer_types, partial_rotary_factor inside rope_parameters
    g = load_config("qwen3.5-9b.json");
    cr_expect(g.layer_kind[3] == LAYER_GLOBAL && g.layer_kind[4] == LAYER_LINEAR && g.layer_kind[31] == LAYER_GLOBAL);
    cr_expect_eq(g.attn_output_gate, GATE_ELEMENTWISE);
    cr_expect_eq(geometry_rotary_fraction(&g), 0.25);
    cr_expect_eq(g.rope_theta, 1e7);
    // Kimi Linear: full_attn_layers [4, 8, ..., 24, 27] are 1-based, so 0-based layers 3, ..., 23, 26 are MLA
    g = load_config("kimi-linear-48b-a3b.json");
    cr_expect_str_eq(geometry_attn_name(&g), "MLA");
    cr_expect(g.layer_kind[3] == LAYER_GLOBAL && g.layer_kind[23] == LAYER_GLOBAL && g.layer_kind[26] == LAYER_GLOBAL);
    cr_expect(g.layer_kind[0] == LAYER_LINEAR && g.layer_kind[24] == LAYER_LINEAR && g.layer_kind[25] == LAYER_LINEAR);
    cr_expect_eq(g.max_seq_len, 1048576);   // model_max_length
    // MiniMax-Text-01: attn_type_list 0 = lightning, 1 = softmax; RoPE on rotary_dim 64 of 128
    g = load_config("minimax-text-01.json");
    cr_expect(g.layer_kind[6] == LAYER_LINEAR && g.layer_kind[7] == LAYER_GLOBAL && g.layer_kind[79] == LAYER_GLOBAL);
    cr_expect_eq(geometry_rotary_fraction(&g), 0.5);
    // Nemotron 3 Nano: "MEMEM*E..." -> layer 0 Mamba-2, 1 MoE-only, 5 attention
    g = load_config("nemotron-3-nano-30b-a3b.json");
    cr_expect(g.layer_kind[0] == LAYER_LINEAR && g.layer_kind[1] == LAYER_NONE && g.layer_kind[5] == LAYER_GLOBAL);
    cr_expect_eq(g.attn_output_gate, GATE_NONE);
}

// Kimi Linear's claim (README / tech report): "reducing KV cache usage by up to 75%" at 1M context,
// against the same model with MLA in every layer ("full MLA"). Compared here: Kimi Linear's whole cache at
// 1048576 tokens (7 MLA layers x 576 x 2 B per token, plus the fixed KDA state of 43417600 B) against
// the all-MLA version of the same geometry (27 MLA layers, no fixed state):
//   Kimi Linear:  7 x 576 x 2 x 1048576 + 43417600 = 8499134464 B  (7.92 GiB)
//   all MLA:     27 x 576 x 2 x 1048576             = 32614907904 B (30.4 GiB)
//   ratio 0.26059, i.e. 73.9% smaller. Not quite 75% because 7 of 27 layers are MLA (the 3:1 hybrid
//   rounds to 20:7) and the KDA state adds 0.13% at 1M; "up to 75%" is the 3:1 ratio's limit.
Test(hybrid, kimi_linear_kv_is_about_75_percent_smaller_than_all_mla_at_1m) {
    ModelGeometry kimi = load_config("kimi-linear-48b-a3b.json"), mla;
    geometry_all_attention(&kimi, &mla);
    char why[256];
    cr_assert(geometry_validate(&mla, why, sizeof why), "%s", why);
    cr_expect_eq(geometry_count(&mla, LAYER_GLOBAL), 27);
    cr_expect_eq(kvcache_fixed_bytes(&mla), 0.0);
    double ours = kvcache_total_bytes(&kimi, 1048576, 1), full = kvcache_total_bytes(&mla, 1048576, 1);
    cr_expect_eq(ours, 7.0 * 576 * 2 * 1048576 + 43417600.0);
    cr_expect_eq(full, 27.0 * 576 * 2 * 1048576);
    double saved = 1.0 - ours / full;
    cr_expect(saved > 0.7393 && saved < 0.7395, "Kimi Linear saves %.4f of the all-MLA cache at 1M", saved);
    cr_expect(saved < 0.75, "cannot beat the 3:1 limit with 7 MLA layers of 27");
}

Test(hybrid, all_attention_version_replaces_linear_layers_only) {
    ModelGeometry g = load_config("nemotron-3-nano-30b-a3b.json"), a;
    geometry_all_attention(&g, &a);
    cr_expect_eq(geometry_count(&a, LAYER_GLOBAL), 29);   // 6 attention + 23 former Mamba-2
    cr_expect_eq(geometry_count(&a, LAYER_NONE), 23);     // MoE-only layers stay
    cr_expect_eq(geometry_count(&a, LAYER_LINEAR), 0);
    cr_expect_eq(a.linear_kind, LINEAR_NONE);
    cr_expect_eq(kvcache_bytes_per_token(&a), 29 * 2 * 2 * 128 * 2.0);
    cr_expect_eq(kvcache_fixed_bytes(&a), 0.0);
    cr_expect_str_eq(a.name, "nemotron-3-nano-30b-a3b (all attention)");
    // in place
    geometry_all_attention(&g, &g);
    cr_expect_eq(geometry_count(&g, LAYER_GLOBAL), 29);
    // a plain model is its own all-attention version, bytes-wise
    ModelGeometry l = load_config("llama3-8b.json");
    geometry_all_attention(&l, &a);
    cr_expect_eq(kvcache_bytes_per_token(&a), kvcache_bytes_per_token(&l));
}

Test(hybrid, small_configs_of_each_layout) {
    // Qwen-style with only full_attention_interval (no layer_types): layer l is full iff (l+1) % 2 == 0
    ModelGeometry g = parse_ok("{" BASE ", \"full_attention_interval\": 2, \"linear_num_key_heads\": 2,"
                               "\"linear_num_value_heads\": 4, \"linear_key_head_dim\": 8, \"linear_value_head_dim\": 8,"
                               "\"linear_conv_kernel_dim\": 4, \"mamba_ssm_dtype\": \"bfloat16\"}");
    cr_expect(g.layer_kind[0] == LAYER_LINEAR && g.layer_kind[1] == LAYER_GLOBAL && g.layer_kind[3] == LAYER_GLOBAL);
    cr_expect_eq(g.state_dtype_bytes, 2);   // mamba_ssm_dtype
    cr_expect_eq(kvcache_state_bytes(&g), 2 * 4 * 8 * 8 * 2.0);
    cr_expect_eq(g.attn_output_gate, GATE_NONE);   // not a Qwen3-Next model type, no attn_output_gate
    // qwen3_next without layer_types or interval: Qwen3NextConfig's default interval 4
    g = parse_ok("{" BASE ", \"model_type\": \"qwen3_next\", \"linear_num_key_heads\": 2, \"linear_num_value_heads\": 4,"
                 "\"linear_key_head_dim\": 8, \"linear_value_head_dim\": 8, \"linear_conv_kernel_dim\": 4}");
    cr_expect(g.layer_kind[2] == LAYER_LINEAR && g.layer_kind[3] == LAYER_GLOBAL);
    // transformers' MiniMax with layer_types: lightning, sizes from the attention heads
    g = parse_ok("{" BASE ", \"model_type\": \"minimax\", \"layer_types\": [\"linear_attention\", \"full_attention\","
                 "\"linear_attention\", \"full_attention\"]}");
    cr_expect_eq(g.linear_kind, LINEAR_LIGHTNING);
    cr_expect_eq(kvcache_fixed_bytes(&g), 2 * 4 * 16 * 16 * 4.0);
    // ... and without: MiniMaxConfig alternates, starting with full attention
    g = parse_ok("{" BASE ", \"model_type\": \"minimax\"}");
    cr_expect(g.layer_kind[0] == LAYER_GLOBAL && g.layer_kind[1] == LAYER_LINEAR);
    // attn_output_gate on another family
    g = parse_ok("{" BASE ", \"attn_output_gate\": true, \"partial_rotary_factor\": 0.5}");
    cr_expect_eq(g.attn_output_gate, GATE_ELEMENTWISE);
    cr_expect_eq(geometry_rotary_fraction(&g), 0.5);
}

#define MAMBA "\"mamba_num_heads\": 4, \"mamba_head_dim\": 8, \"ssm_state_size\": 16, \"n_groups\": 2, \"conv_kernel\": 4"
#define KDA(lists) "\"linear_attn_config\": {\"num_heads\": 4, \"head_dim\": 16, \"short_conv_kernel_size\": 4, " lists "}"

Test(hybrid, bad_hybrid_configs_name_the_key) {
    // wrong types
    expect_parse_error("{" BASE ", \"hybrid_override_pattern\": 5, " MAMBA "}", "'hybrid_override_pattern'", "string");
    expect_parse_error("{" BASE ", \"linear_attn_config\": [1, 2]}", "'linear_attn_config'", "object");
    expect_parse_error("{" BASE ", \"attn_type_list\": \"0001\"}", "'attn_type_list'", "array");
    expect_parse_error("{" BASE ", " KDA("\"kda_layers\": [1, \"2\"]") "}", "'linear_attn_config.kda_layers'", "entry 1");
    expect_parse_error("{" BASE ", \"linear_attn_config\": {\"num_heads\": \"32\", \"head_dim\": 16, "
                       "\"short_conv_kernel_size\": 4, \"kda_layers\": [1]}}", "'linear_attn_config.num_heads'", "integer");
    expect_parse_error("{" BASE ", \"full_attention_interval\": 2, \"linear_num_key_heads\": 2.5, "
                       "\"linear_num_value_heads\": 4, \"linear_key_head_dim\": 8, \"linear_value_head_dim\": 8, "
                       "\"linear_conv_kernel_dim\": 4}", "'linear_num_key_heads'", "2.5");
    expect_parse_error("{" BASE ", \"mamba_ssm_dtype\": \"int8\"}", "'mamba_ssm_dtype'", "int8");
    // pattern length and characters
    expect_parse_error("{" BASE ", \"hybrid_override_pattern\": \"M*M\", " MAMBA "}", "'hybrid_override_pattern'",
                       "3 characters but num_hidden_layers is 4");
    expect_parse_error("{" BASE ", \"hybrid_override_pattern\": \"M*MX\", " MAMBA "}", "character 3 is 'X'", NULL);
    expect_parse_error("{" BASE ", \"hybrid_override_pattern\": \"M*M-\"}", "'mamba_num_heads' is missing", NULL);
    expect_parse_error("{" BASE ", \"attn_type_list\": [0, 0, 1]}", "'attn_type_list' has 3 entries", NULL);
    expect_parse_error("{" BASE ", \"attn_type_list\": [0, 0, 2, 1]}", "'attn_type_list' entry 2 is 2", NULL);
    // KDA layer numbers are 1-based: 0 and 5 are out of range for 4 layers; a layer cannot be both
    expect_parse_error("{" BASE ", " KDA("\"kda_layers\": [1, 2, 5]") "}", "'linear_attn_config.kda_layers'",
                       "is 5, out of range");
    expect_parse_error("{" BASE ", " KDA("\"kda_layers\": [0, 1]") "}", "'linear_attn_config.kda_layers'", "is 0");
    expect_parse_error("{" BASE ", " KDA("\"kda_layers\": [1, 2, 3], \"full_attn_layers\": [3, 4]") "}",
                       "'linear_attn_config.full_attn_layers' lists layer 3", "already listed");
    expect_parse_error("{" BASE ", \"linear_attn_config\": {\"num_heads\": 4, \"short_conv_kernel_size\": 4, "
                       "\"kda_layers\": [1]}}", "'linear_attn_config.head_dim' is missing", NULL);
    // two layouts at once, or a layout next to layer_types
    expect_parse_error("{" BASE ", \"attn_type_list\": [0, 0, 0, 1], \"hybrid_override_pattern\": \"MMM*\", " MAMBA "}",
                       "'attn_type_list' and 'hybrid_override_pattern'", NULL);
    expect_parse_error("{" BASE ", \"attn_type_list\": [0, 0, 0, 1], \"layer_types\": [\"full_attention\", "
                       "\"full_attention\", \"full_attention\", \"full_attention\"]}", "'layer_types' and 'attn_type_list'",
                       NULL);
    // Qwen-style sizes but no way to tell which layers are linear
    expect_parse_error("{" BASE ", \"linear_num_key_heads\": 2, \"linear_num_value_heads\": 4, \"linear_key_head_dim\": 8,"
                       "\"linear_value_head_dim\": 8, \"linear_conv_kernel_dim\": 4}", "'full_attention_interval'", NULL);
    expect_parse_error("{" BASE ", \"rotary_dim\": 40}", "'rotary_dim' is 40", NULL);
    // Value heads must group over key heads, like GQA (geometry_validate, through the reader)
    expect_parse_error("{" BASE ", \"full_attention_interval\": 2, \"linear_num_key_heads\": 3, "
                       "\"linear_num_value_heads\": 4, \"linear_key_head_dim\": 8, \"linear_value_head_dim\": 8, "
                       "\"linear_conv_kernel_dim\": 4}", "linear_num_value_heads (4) is not divisible", NULL);
}

// ---- the kvcache tool ---------------------------------------------------------------------------

static void expect_tool_error(const char *args, const char *needle) {
    char out[8192];
    int rc = test_run(out, sizeof out, "kvcache", args);
    cr_expect_eq(rc, 2, "kvcache %s: exit %d, expected 2; output: %s", args, rc, out);
    cr_expect_eq(test_count_lines(out), 1, "kvcache %s: expected one line, got: %s", args, out);
    cr_expect(strncmp(out, "kvcache: ", 9) == 0, "kvcache %s: message lacks the program name: %s", args, out);
    cr_expect(strstr(out, needle) != NULL, "kvcache %s: message lacks '%s': %s", args, needle, out);
}

Test(kvcache_tool, bad_flags_and_configs_exit_2_with_one_line) {
    const char *cfg = "data/configs/llama3-8b.json";
    char args[1024];
    expect_tool_error("", "missing CONFIG.json");
    expect_tool_error("--bogus data/configs/llama3-8b.json", "unknown option '--bogus'");
    snprintf(args, sizeof args, "%s --context abc", cfg);
    expect_tool_error(args, "--context: expected an integer");
    snprintf(args, sizeof args, "%s --context 0", cfg);
    expect_tool_error(args, "--context");
    snprintf(args, sizeof args, "%s --batch -2", cfg);
    expect_tool_error(args, "--batch");
    snprintf(args, sizeof args, "%s --dtype int4", cfg);
    expect_tool_error(args, "--dtype: expected one of bf16|fp16|fp32|fp8");
    snprintf(args, sizeof args, "%s --plot out.jpg", cfg);
    expect_tool_error(args, "--plot");
    expect_tool_error("data/configs/no-such-model.json", "data/configs/no-such-model.json: cannot open");
    // a config of an unsupported family, written to a temp file
    char dir[256], path[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/deepseek-v4.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("{" BASE ", \"sliding_window\": 8, \"qk_rope_head_dim\": 4, \"compress_ratios\": [4, 1, 4, 128]}", f);
    fclose(f);
    snprintf(args, sizeof args, "%s %s", cfg, path);
    expect_tool_error(args, "deepseek-v4.json: key 'compress_ratios' entry 1 is 1");
    remove(path);
    remove(dir);
}

Test(kvcache_tool, table_json_and_plot) {
    char out[16384];
    int rc = test_run(out, sizeof out, "kvcache", "data/configs/llama3-8b.json data/configs/gemma3-27b.json");
    cr_assert_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "llama3-8b") && strstr(out, "(131072 B)") && strstr(out, "(17179869184 B)"), "%s", out);
    cr_expect(strstr(out, "62 (10/52, W 1024)") && strstr(out, "(11173625856 B)"), "%s", out);

    rc = test_run(out, sizeof out, "kvcache",
                  "data/configs/deepseek-v3.json data/configs/olmo2-7b.json --json --context 1000 --batch 3 --dtype fp8");
    cr_assert_eq(rc, 0, "%s", out);
    cJSON *arr = cJSON_Parse(out);
    cr_assert(cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == 2, "not a JSON array of 2: %s", out);
    cJSON *ds = cJSON_GetArrayItem(arr, 0);
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(ds, "kv_bytes_per_token")), 61.0 * 576);
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(ds, "total_bytes")), 3 * 1000 * 61.0 * 576);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(ds, "attention")), "MLA");
    cJSON *olmo = cJSON_GetArrayItem(arr, 1);   // float32 in its config, fp8 by the flag
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(olmo, "kv_bytes_per_token")), 32.0 * 2 * 32 * 128);
    cJSON_Delete(arr);

    char dir[256], args[1024], svg[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(svg, sizeof svg, "%s/kv.svg", dir);
    snprintf(args, sizeof args, "data/configs/gpt-oss-20b.json data/configs/llama3-8b.json --plot %s", svg);
    rc = test_run(out, sizeof out, "kvcache", args);
    cr_expect_eq(rc, 0, "%s", out);
    FILE *f = fopen(svg, "r");
    cr_expect(f != NULL, "no %s", svg);
    if (f) {
        char head[256] = "";
        size_t n = fread(head, 1, sizeof head - 1, f);
        head[n] = '\0';
        fclose(f);
        cr_expect(strstr(head, "<svg") || strstr(head, "<?xml"), "not an SVG: %s", head);
    }
    cr_expect(!test_has_tmp_files(dir), "a temp file was left in %s", dir);
    cr_expect_eq(test_count_files(dir), 1, "expected only kv.svg in %s", dir);
    remove(svg);
    remove(dir);
}

Test(kvcache_tool, hybrids_print_the_fixed_state_apart) {
    char out[16384];
    int rc = test_run(out, sizeof out, "kvcache",
                      "data/configs/qwen3-next-80b-a3b.json data/configs/minimax-text-01.json --context 1000");
    cr_assert_eq(rc, 0, "%s", out);
    // 36 x 32 x 128 x 128 x 4 B = 72 MiB fp32 state; 36 x 8192 x 3 x 2 B = 1.69 MiB bf16 conv state
    cr_expect(strstr(out, "qwen3-next-80b-a3b: fixed state: 73.7 MiB (recurrent state fp32 72.0 MiB + conv state "
                          "16-bit 1.69 MiB) in 36 Gated DeltaNet layers"), "%s", out);
    cr_expect(strstr(out, "minimax-text-01: fixed state: 280 MiB (recurrent state fp32 280 MiB + no conv state)"),
              "%s", out);
    cr_expect(strstr(out, "48 (12/0, 36 linear)") && strstr(out, "gated + Gated DeltaNet"), "%s", out);
    // total at 1000 tokens = 1000 x 24576 + 77266944
    cr_expect(strstr(out, "(101842944 B)"), "%s", out);

    rc = test_run(out, sizeof out, "kvcache", "data/configs/nemotron-3-nano-30b-a3b.json --json --dtype fp16");
    cr_assert_eq(rc, 0, "%s", out);
    cJSON *arr = cJSON_Parse(out);
    cr_assert(cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == 1, "not a JSON array of 1: %s", out);
    cJSON *o = cJSON_GetArrayItem(arr, 0);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(o, "linear_kind")), "Mamba-2");
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "mlp_only_layers")), 23);
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "recurrent_state_bytes")), 23 * 64 * 128 * 64 * 4.0);
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "conv_state_bytes")), 23 * 6144 * 3 * 2.0);
    cr_expect_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "kv_bytes_per_token")), 6 * 2 * 2 * 128 * 2.0);
    cJSON_Delete(arr);

    rc = test_run(out, sizeof out, "kvcache", "--help");
    cr_expect_eq(rc, 0, "%s", out);
    cr_expect(strstr(out, "fixed state"), "--help does not mention the fixed state: %s", out);
}
