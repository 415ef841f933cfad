// kvcache.h: how many bytes a model's decode cache holds, from its ModelGeometry alone.
//
// Per token per layer, in elements (DeepSeek-V2 paper, Table 1):
//   MHA 2*H*dh;  GQA 2*G*dh;  MQA 2*dh;  MLA kv_lora_rank + qk_rope_head_dim (+ index_head_dim for DSA).
// A local (sliding-window) layer holds min(context, W) tokens, a chunked layer min(context, chunk); a
// compressed layer (DeepSeek V4) min(context, W) raw tokens plus floor(context / m) compressed entries;
// a linear layer holds a fixed state; an MLP-only or KV-shared layer holds nothing of its own.
// The tiny models' decode code allocates exactly these bytes (a test holds them equal).
#pragma once
#include "geometry.h"
#include "kvquant.h"

// Elements one cached token (or one compressed entry) adds to one layer: K and V (or the MLA latent, or
// DeepSeek V4's single K = V entry) plus the layer's indexer key. 0 for linear, MLP-only and KV-shared
// layers.
long kvcache_elems_per_token_layer(const ModelGeometry *g, int layer);
// Bytes one more token adds across all layers while the context is below every window and chunk (every
// attention layer still grows); a compressed layer adds its entries' share, elems / m per token.
double kvcache_bytes_per_token(const ModelGeometry *g);
// Bytes that do not grow with context, all layers: kvcache_state_bytes(g) + kvcache_conv_bytes(g) +
// kvcache_compressor_bytes(g).
double kvcache_fixed_bytes(const ModelGeometry *g);
// The recurrent-state part of the fixed bytes: linear layers x Hv*dk*dv x state_dtype_bytes (fp32 unless
// the config says otherwise).
double kvcache_state_bytes(const ModelGeometry *g);
// The short-conv part of the fixed bytes: linear layers x (2*Hk*dk + Hv*dv)*(K-1) x dtype_bytes.
double kvcache_conv_bytes(const ModelGeometry *g);
// The compressor buffers of compressed layers (DeepSeek V4's reference decode): per layer the projected
// tokens of the group being filled and their gate scores, 2 x (c*m) x (c*d) fp32 with c = 2 for CSA
// (overlapping groups keep the previous group too) and 1 for HCA, plus the same for a CSA layer's
// indexer compressor (d = index_head_dim, m = that layer's ratio, c = 2).
double kvcache_compressor_bytes(const ModelGeometry *g);
// Cache elements one layer holds for one sequence of `context` tokens (its fixed state excluded).
double kvcache_layer_elems(const ModelGeometry *g, int layer, long context);
// Total cache bytes for batch sequences of `context` tokens each, windows and fixed state included.
double kvcache_total_bytes(const ModelGeometry *g, long context, long batch);

// ---- a quantized cache (chapter 12) --------------------------------------------------------------------
// The same counts with every cached vector coded by s (kvquant.h): per layer one key and one value vector
// per KV head (one vector when K = V), MLA's latent and RoPE key as two key vectors (the RoPE key coded
// by rope, NULL: by s), an indexer key as a key vector; codes plus their scales and zero points.
// Bytes one more token adds, all layers (kvcache_bytes_per_token's counterpart; KIVI's per-chunk ranges
// shared out over their G tokens).
double kvcache_quant_bytes_per_token(const ModelGeometry *g, const KvqScheme *s, const KvqScheme *rope);
// Total for batch sequences of context tokens (kvcache_total_bytes's counterpart): each layer's held
// tokens coded by s, KIVI's last (held mod G) tokens in dtype_bytes; the fixed state is not quantized.
double kvcache_quant_total_bytes(const ModelGeometry *g, const KvqScheme *s, const KvqScheme *rope, long context,
                                 long batch);
// Bytes per model, not per token: s's codebooks and matrices for each vector width the model caches.
double kvcache_quant_model_bytes(const ModelGeometry *g, const KvqScheme *s, const KvqScheme *rope);
