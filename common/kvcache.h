// kvcache.h: how many bytes a model's decode cache holds, from its ModelGeometry alone.
//
// Per token per layer, in elements (DeepSeek-V2 paper, Table 1):
//   MHA 2*H*dh;  GQA 2*G*dh;  MQA 2*dh;  MLA kv_lora_rank + qk_rope_head_dim (+ index_head_dim for DSA).
// A local (sliding-window) layer holds min(context, W) tokens; a linear layer holds a fixed state; an
// MLP-only layer (LAYER_NONE, Nemotron-H) holds nothing.
// The tiny models' decode code allocates exactly these bytes (a test holds them equal).
#pragma once
#include "geometry.h"

// Elements one token adds to one attention layer's cache (0 for linear and MLP-only layers).
long kvcache_elems_per_token_layer(const ModelGeometry *g, int layer);
// Bytes one token adds across all layers when every layer still grows (context below any window).
double kvcache_bytes_per_token(const ModelGeometry *g);
// Bytes that do not grow with context (linear / state-space state), all layers:
// kvcache_state_bytes(g) + kvcache_conv_bytes(g).
double kvcache_fixed_bytes(const ModelGeometry *g);
// The recurrent-state part of the fixed bytes: linear layers x Hv*dk*dv x state_dtype_bytes (fp32 unless
// the config says otherwise).
double kvcache_state_bytes(const ModelGeometry *g);
// The short-conv part of the fixed bytes: linear layers x (2*Hk*dk + Hv*dv)*(K-1) x dtype_bytes.
double kvcache_conv_bytes(const ModelGeometry *g);
// Total cache bytes for batch sequences of `context` tokens each, windows and fixed state included.
double kvcache_total_bytes(const ModelGeometry *g, long context, long batch);
