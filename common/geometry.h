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

// What each layer is. Global attention sees every past token; local (sliding-window) attention sees the
// last sliding_window tokens; linear layers keep a fixed-size state; compressed layers (DeepSeek V4)
// keep one entry per group of tokens.
typedef enum {
    LAYER_GLOBAL = 0,
    LAYER_LOCAL = 1,
    LAYER_LINEAR = 2,
    LAYER_COMPRESSED = 3,
} LayerKind;

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
    int v_head_dim;           // d_v
    // sliding windows
    int sliding_window;       // W: a local layer sees exactly W keys, itself included; 0: none
    unsigned char layer_kind[GEOM_MAX_LAYERS]; // LayerKind per layer
    double rope_theta;        // RoPE base of global layers (10000 if absent)
    double rope_local_theta;  // RoPE base of local layers (Gemma 3: 1e4); 0: same as rope_theta
    // DeepSeek Sparse Attention lightning indexer (0 when absent)
    int index_n_heads, index_head_dim, index_topk;
    // linear-attention / state-space layers: state per layer in elements (filled by later chapters)
    long linear_state_elems;
    int dtype_bytes;          // bytes per cached element (bf16: 2)
} ModelGeometry;

// Fills defaults for a plain MHA/GQA model of the given size: every layer global, head_dim =
// d_model / n_heads, rope_theta 10000, dtype_bytes 2 (bf16).
void geometry_init(ModelGeometry *g, const char *name, int n_layers, int d_model, int n_heads,
                   int n_kv_heads);
// Checks that the geometry is possible; on failure writes a one-line reason into why and returns 0.
int geometry_validate(const ModelGeometry *g, char *why, size_t cap);
// Number of layers of one kind.
int geometry_count(const ModelGeometry *g, LayerKind kind);
// "MHA", "GQA", "MQA" or "MLA": the attention kind the way the article names it (from n_kv_heads).
const char *geometry_attn_name(const ModelGeometry *g);
