// geometry.h: ONE description of a model's attention geometry, used everywhere.
//
// The Hugging Face config reader (hfconfig) fills it from a real model's config.json; the tiny models
// are built from it; the KV-cache calculator (kvcache) reads it. So "what the formula says" and "what
// the running code allocates" come from one definition, and a test holds them equal.
// Field names follow the Hugging Face config.json keys.
#pragma once
#include <stddef.h>

#define GEOM_MAX_LAYERS 256

// What attention a model's attention layers use.
typedef enum {
    ATTN_GQA = 0,    // MHA (n_kv_heads == n_heads), GQA (1 < n_kv_heads < n_heads), MQA (n_kv_heads == 1)
    ATTN_MLA = 1,    // multi-head latent attention (DeepSeek-V2/V3): caches kv_lora_rank + qk_rope_head_dim
} AttnKind;

// Output gate of gated attention (Qwen3-Next): o_h <- o_h * sigmoid(g_h) before Wo.
typedef enum {
    GATE_NONE = 0,
    GATE_ELEMENTWISE = 1,     // one gate per channel of each head (Qwen3-Next)
    GATE_HEADWISE = 2,        // one scalar gate per head (the gated-attention paper's cheaper variant)
} GateKind;

// Normalisation of each query and key head before RoPE.
typedef enum {
    QK_NORM_NONE = 0,
    QK_NORM_RMS = 1,          // RMSNorm with weight w (Qwen3)
    QK_NORM_ZERO_CENTRED = 2, // RMSNorm with weight 1 + w, w initialised to 0 (Qwen3-Next)
} QkNormKind;

// What the linear (fixed-state) layers of a hybrid are. One model has one kind of linear layer.
// All of them keep, per value head, a state of linear_key_head_dim x linear_value_head_dim elements:
//   Gated DeltaNet  q,k heads linear_num_key_heads, v heads linear_num_value_heads (Qwen3-Next)
//   KDA             the same with a per-channel decay (Kimi Linear: key heads = value heads)
//   Lightning       key heads = value heads = n_heads, dk = dv = head_dim, no conv (MiniMax-01)
//   Mamba-2         key heads = n_groups (B, C), value heads = mamba_num_heads, dk = ssm_state_size N,
//                   dv = mamba_head_dim P (Nemotron-H)
typedef enum {
    LINEAR_NONE = 0,
    LINEAR_GDN = 1,
    LINEAR_KDA = 2,
    LINEAR_LIGHTNING = 3,
    LINEAR_MAMBA2 = 4,
} LinearKind;

// What each layer is. Global attention sees every past token; local (sliding-window) attention sees the
// last sliding_window tokens; chunked attention (Llama 4) sees only the tokens of its own chunk of
// attention_chunk_size; linear layers keep a fixed-size state; compressed layers (DeepSeek V4) keep one
// entry per group of compress_ratios[l] tokens next to a window of raw tokens.
typedef enum {
    LAYER_GLOBAL = 0,
    LAYER_LOCAL = 1,
    LAYER_LINEAR = 2,
    LAYER_COMPRESSED = 3,
    LAYER_NONE = 4,           // no token mixer, so no cache: an MLP- or MoE-only layer (Nemotron-H '-', 'E')
    LAYER_CHUNKED = 5,        // Llama 4's chunked local attention: a layer holds at most one chunk
} LayerKind;

// A layer's DeepSeek-Sparse-Attention indexer (GLM-5.x "indexer_types"; DeepSeek V4's CSA layers).
// Only meaningful when index_n_heads > 0. The default (0) is a layer with its own indexer, which caches
// one indexer key of index_head_dim per token (per compressed entry in a compressed layer).
typedef enum {
    INDEXER_FULL = 0,         // "full": runs its own indexer and caches its keys
    INDEXER_SHARED = 1,       // "shared": reuses the top-k of the last earlier full layer; caches no key
    INDEXER_NONE = 2,         // no indexer at all (DeepSeek V4's HCA and pure-window layers)
} IndexerType;

// Learned attention sinks (gpt-oss, MiMo-V2, DeepSeek V4): a per-head logit that joins the softmax
// denominator only, p_j = exp(l_j) / (exp(s_h) + sum_i exp(l_i)). A parameter, not a cached token:
// sinks cost no cache. Bit flags by the kind of layer that has them.
enum { SINKS_FULL = 1, SINKS_SLIDING = 2 };

typedef struct {
    char name[96];            // "Llama 3 8B", "tiny-mha-recall"
    int n_layers;             // num_hidden_layers
    int d_model;              // hidden_size
    int n_heads;              // num_attention_heads
    int n_kv_heads;           // num_key_value_heads (== n_heads for MHA)
    int head_dim;             // head_dim (else hidden_size / num_attention_heads)
    int vocab_size;
    int d_ff;                 // intermediate_size (MLP hidden width)
    int max_seq_len;          // max_position_embeddings
    AttnKind attn;
    // MLA (DeepSeek): all zero unless attn == ATTN_MLA
    int q_lora_rank;          // 0: queries are projected directly (x Wq)
    int kv_lora_rank;         // d_c, the cached latent width
    int qk_nope_head_dim;     // d_n
    int qk_rope_head_dim;     // d_r, the decoupled RoPE key shared by all heads
    int v_head_dim;           // d_v (MLA); for MHA/GQA the V width when it differs from head_dim (MiMo-V2)
    // sliding windows
    int sliding_window;       // W: a local layer sees exactly W keys, itself included; 0: none
    unsigned char layer_kind[GEOM_MAX_LAYERS]; // LayerKind per layer
    double rope_theta;        // RoPE base of global layers (10000 if absent)
    double rope_local_theta;  // RoPE base of local layers (Gemma 3: 1e4); 0: same as rope_theta
    // DeepSeek Sparse Attention lightning indexer (0 when absent); which layers have one: indexer_types
    int index_n_heads, index_head_dim, index_topk;
    unsigned char indexer_types[GEOM_MAX_LAYERS]; // IndexerType per layer (0: own indexer, when any)
    // Attention layers whose K/V shapes differ from the model's n_kv_heads x head_dim (0: the same).
    // V rows are v_head_dim wide when set (MiMo-V2: K 192, V 128), else head_dim.
    int swa_num_key_value_heads;   // MiMo-V2: KV heads of the sliding-window layers
    int swa_head_dim;              // MiMo-V2: K width of the sliding-window layers
    int swa_v_head_dim;            // MiMo-V2: V width of the sliding-window layers
    int num_global_key_value_heads;// Gemma 4: KV heads of the full-attention layers
    int global_head_dim;           // Gemma 4: K and V width of the full-attention layers
    int attention_k_eq_v;          // Gemma 4: full layers take V from k_proj. K is normed and rotated, V only
                                   // normed, so the cache still holds both (counted as two tensors)
    int kv_one_tensor;             // DeepSeek V4: one cached entry serves as K and V (head_dim elements)
    // Llama 4 chunked attention: tokens attend within their chunk of attention_chunk_size (LAYER_CHUNKED)
    int attention_chunk_size;
    // Cross-layer KV sharing (Gemma 3n / Gemma 4): the last num_kv_shared_layers layers compute only
    // queries and read the K/V of the last earlier non-shared layer of the same kind (geometry_kv_source).
    // They cache nothing.
    int num_kv_shared_layers;
    int attention_sinks;           // SINKS_FULL | SINKS_SLIDING: learned sink logits (no cache cost)
    // DeepSeek V4 compressed attention (LAYER_COMPRESSED). Every such layer keeps the last sliding_window
    // raw tokens plus one entry per group of compress_ratios[l] tokens; all entries are one shared KV
    // head of head_dim with K = V (one tensor). A compressed layer with an indexer (indexer_types FULL,
    // index_n_heads > 0) is CSA: overlapping groups (each entry mixes 2m tokens, V4: m = 4) and the
    // indexer's own compressed key of index_head_dim per entry, from which it picks index_topk entries.
    // Without an indexer it is HCA: disjoint groups (V4: m = 128), all entries attended.
    unsigned short compress_ratios[GEOM_MAX_LAYERS]; // m per layer; 0 for every other kind
    // gated attention (Qwen3-Next); zero (and 1.0) for plain attention
    int attn_output_gate;     // GateKind
    int qk_norm;              // QkNormKind
    double partial_rotary_factor; // fraction of head_dim that RoPE rotates (0 means 1.0; Qwen3-Next 0.25)
    // linear-attention / state-space layers (layer_kind LAYER_LINEAR); zero when there are none
    int linear_kind;          // LinearKind
    int linear_num_key_heads;    // heads of q and k (Mamba-2: n_groups of B and C)
    int linear_num_value_heads;  // heads of v and of the state (Mamba-2: mamba_num_heads)
    int linear_key_head_dim;     // dk (Mamba-2: ssm_state_size N)
    int linear_value_head_dim;   // dv (Mamba-2: mamba_head_dim P)
    int linear_conv_kernel_dim;  // width of the short causal conv on q,k,v (0: none, Lightning)
    // how the decays start (training recipes; 0 means the published default): A = exp(A_log) uniform in
    // [linear_a_init_min, linear_a_init_max] (1, 16) and dt log-uniform in [linear_dt_init_min,
    // linear_dt_init_max] (1e-3, 1e-1) for Gated DeltaNet, KDA and Mamba-2; Lightning's fixed slopes
    // times linear_slope_scale (1)
    double linear_a_init_min, linear_a_init_max;
    double linear_dt_init_min, linear_dt_init_max;
    double linear_slope_scale;
    int state_dtype_bytes;    // bytes per element of the recurrent state (fp32: 4; 0 means 4)
    int dtype_bytes;          // bytes per cached element (bf16: 2)
} ModelGeometry;

// Fills defaults for a plain MHA/GQA model of the given size: every layer global, head_dim =
// d_model / n_heads, rope_theta 10000, dtype_bytes 2 (bf16).
void geometry_init(ModelGeometry *g, const char *name, int n_layers, int d_model, int n_heads,
                   int n_kv_heads);
// Checks that the geometry is possible; on failure writes a one-line reason into why and returns 0.
int geometry_validate(const ModelGeometry *g, char *why, size_t cap);
// The size part of geometry_validate: every per-token and per-state element count the cache formulas
// multiply must fit in checked 64-bit arithmetic below 2^50; else a reason naming the keys and 0.
int geometry_check_sizes(const ModelGeometry *g, char *why, size_t cap);
// Number of layers of one kind.
int geometry_count(const ModelGeometry *g, LayerKind kind);
// Per linear layer: elements of the recurrent state, Hv * dk * dv (0 without linear layers).
long geometry_linear_state_elems(const ModelGeometry *g);
// Per linear layer: elements of the short-conv state, the last K-1 inputs of the conv channels,
// (2 * Hk * dk + Hv * dv) * (K - 1) (0 without a conv). Stored in dtype_bytes like the KV cache.
long geometry_linear_conv_elems(const ModelGeometry *g);
// Bytes per element of the recurrent state (state_dtype_bytes, 4 when unset).
int geometry_state_dtype_bytes(const ModelGeometry *g);
// "Gated DeltaNet", "KDA", "Lightning", "Mamba-2" ("" for LINEAR_NONE).
const char *geometry_linear_name(const ModelGeometry *g);
// The fraction of head_dim RoPE rotates (partial_rotary_factor, 1.0 when unset).
double geometry_rotary_fraction(const ModelGeometry *g);

// One attention layer's K/V shape: KV heads, K width and V width per head (the swa_* fields for local
// layers, the global_* fields for global and chunked layers, else n_kv_heads x head_dim / v_head_dim).
void geometry_layer_kv(const ModelGeometry *g, int layer, int *kv_heads, int *k_dim, int *v_dim);
// The layer whose K/V `layer` reads: itself, or for the last num_kv_shared_layers layers, the last
// earlier non-shared layer of the same kind (Gemma 3n: sliding layers read layer 18, full ones 19).
int geometry_kv_source(const ModelGeometry *g, int layer);
// 1 if the layer caches an indexer key (DSA "full" layers and CSA layers), else 0.
int geometry_layer_has_indexer(const ModelGeometry *g, int layer);
// 1 if a compressed layer is CSA (it has an indexer, its groups overlap), 0 if HCA.
int geometry_layer_is_csa(const ModelGeometry *g, int layer);
// 1 if the layer has learned attention sinks.
int geometry_layer_has_sinks(const ModelGeometry *g, int layer);

// "MHA", "GQA", "MQA" or "MLA": the attention kind the way the article names it (from n_kv_heads).
const char *geometry_attn_name(const ModelGeometry *g);
// The "all-attention version" of a hybrid, for comparisons: out is in with every linear layer replaced
// by the model's own (global) attention layer and the linear fields cleared; LAYER_NONE layers stay
// (they hold no mixer). The name gets " (all attention)". in and out may be the same geometry.
void geometry_all_attention(const ModelGeometry *in, ModelGeometry *out);
