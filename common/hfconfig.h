// hfconfig.h: a Hugging Face config.json -> ModelGeometry.
//
// Reads the keys that decide the attention geometry (num_hidden_layers, hidden_size, num_attention_heads,
// num_key_value_heads, head_dim, the MLA ranks, sliding_window and the layer pattern, the DSA indexer,
// torch_dtype), from "text_config" when the model is multimodal. GPT-2's n_layer / n_head / n_embd /
// n_positions / n_inner are read as aliases. A key that would change the cache in a way ModelGeometry
// cannot describe (Jamba-style state-space layouts, pooled indexer keys, ...) is an error naming the
// key, never a wrong number. Hybrids, chunked (Llama 4), compressed (DeepSeek V4), KV-shared (Gemma 3n /
// 4), shared-indexer (GLM-5.x) and split-shape (MiMo-V2, Gemma 4) layers are read; see hfconfig.c.
//
// Every error is one line that names the input and the key:
//   "data/configs/x.json: key 'num_attention_heads' is missing"
#pragma once
#include <stddef.h>
#include "geometry.h"

// Reads the config.json at path into g. Returns 0 on success; on failure writes one line into err
// (naming path and the key at fault) and returns -1.
int hfconfig_load(ModelGeometry *g, const char *path, char *err, size_t cap);

// The same with overrides applied first: each of sets is "key=value" (value as JSON, else a string;
// "a.b" for a nested key), so a what-if question needs no edited file. An override is validated like
// the file's own values; one of a key the reader never uses is an error naming it.
int hfconfig_load_set(ModelGeometry *g, const char *path, const char *const *sets, int n_sets, char *err, size_t cap);

// The same from JSON text. label names the input in errors (usually a file name); name is the model's
// display name, or NULL for the config's "_name_or_path", else label's basename without ".json".
int hfconfig_parse(ModelGeometry *g, const char *json, const char *label, const char *name, char *err,
                   size_t cap);
