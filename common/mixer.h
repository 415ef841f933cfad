// mixer.h: the one interface every token mixer implements (MHA/GQA, MLA, SWA, DSA, gated attention,
// Gated DeltaNet, KDA, Lightning, Mamba-2, CSA/HCA). The model (common/model.c) calls only this, so a
// new mechanism plugs in without changing the model; a hybrid is a layer pattern over several mixers.
//
// A mixer maps x (B,T,d_model) -> out (B,T,d_model) and owns:
//   parameters (a slice of the model's parameter arena, described by named tensors),
//   activations saved by forward for backward (a slice of the activation arena, act_floats long),
//   a decode cache/state (allocated by cache_new, its size measured by cache_bytes),
//   the token-mixing matrix it applied (softmax weights, or the implicit matrix of a linear layer).
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "geometry.h"
#include "rng.h"

typedef struct {
    char name[48];        // "wq", "wk", ... (the model prefixes "layers.L.mixer.")
    int ndim;
    int64_t shape[4];
    size_t offset;        // in floats, inside the mixer's parameter slice
} ParamTensor;

typedef struct Mixer Mixer;
typedef struct MixerCache MixerCache;   // mechanism-private

typedef struct {
    const char *name;     // "gqa", "mla", ...
    // Whether this mixer can run layer `layer` of g: 1 if so, else 0 with a one-line reason naming the
    // geometry key at fault ("qk_rope_head_dim 3 must be even (RoPE rotates pairs)"). model_new and
    // model_load ask it for every layer before anything else touches g, so a weights file whose
    // metadata is impossible for its mixer is a user error naming the file, never a CHECK inside the
    // mixer. Every other function here may assume it returned 1.
    int (*validate)(const ModelGeometry *g, int layer, char *why, size_t cap);
    // Parameter tensors of layer `layer`: fills out[0..n) (n <= cap) and returns n. The parameter
    // count is the sum of their sizes; tensors are laid out back to back in this order.
    int (*param_tensors)(const ModelGeometry *g, int layer, ParamTensor *out, int cap);
    // Initial values (called once, before training), deterministic given rng.
    void (*init)(const Mixer *m, float *params, Rng *rng);
    // Floats of activation memory forward needs to save for backward at (B,T).
    size_t (*act_floats)(const ModelGeometry *g, int layer, int B, int T);
    // out (B,T,d) = mixer(x (B,T,d)); saves what backward needs in act.
    void (*forward)(const Mixer *m, float *out, float *act, const float *x, const float *params,
                    int B, int T);
    // Accumulates: dx += d out/d x . dout; dparams += d out/d params . dout.
    void (*backward)(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                     const float *x, const float *params, int B, int T);
    // Decode: a cache for up to max_T tokens; one step appends token x (d) at the next position and
    // writes out (d). Must equal forward at that position.
    MixerCache *(*cache_new)(const Mixer *m, int max_T);
    void (*cache_free)(MixerCache *c);
    size_t (*cache_bytes)(const MixerCache *c);   // bytes of cached K/V/latents/state held now
    void (*decode)(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params);
    // Mixing matrix of batch element 0 from a forward's act: A (n_mix_heads, T, T), A[h][i][j] is how
    // much token j contributes to token i in head h.
    int (*n_mix_heads)(const ModelGeometry *g, int layer);
    void (*mixing_matrix)(const Mixer *m, float *A, const float *act, const float *params, int T);
} MixerOps;

struct Mixer {
    const MixerOps *ops;
    const ModelGeometry *g;
    int layer;
};

// Total floats of a mixer's parameters (sum of its tensors).
size_t mixer_n_params(const MixerOps *ops, const ModelGeometry *g, int layer);

// ---- for validate ---------------------------------------------------------------------------------
// Writes the formatted reason into why and returns 0, so a check reads `return mixer_fail(...)`.
int mixer_fail(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// The layer_kind name of layer `layer` ("global", "local", "linear", "compressed", "none").
const char *mixer_layer_kind_name(const ModelGeometry *g, int layer);
// Checks shared by the attention mixers: layer `layer` is global (or local when local_ok) attention,
// the geometry's attn is `attn`, n_heads is a positive multiple of n_kv_heads. who: the mixer's name.
int mixer_validate_attention(const ModelGeometry *g, int layer, const char *who, int attn, int local_ok,
                             char *why, size_t cap);
// Checks shared by the linear mixers: layer `layer` is a linear layer, linear_kind is `kind`, the four
// state dims are positive and linear_num_value_heads is a multiple of linear_num_key_heads.
int mixer_validate_linear(const ModelGeometry *g, int layer, const char *who, int kind, char *why, size_t cap);
