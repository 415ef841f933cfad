// model.h: the tiny decoder-only language model every chapter's trained figures come from.
//
//   x = tok_emb[tokens]                          (B,T,d)  no absolute positions: attention uses RoPE
//   for each layer L:                            pre-norm blocks
//       x += mixer_L(rmsnorm(x) * norm1)          the token mixer: MHA/GQA, MLA, SWA, ... (mixer.h)
//       x += w_down (silu(w_gate h) * w_up h),  h = rmsnorm(x) * norm2      (SwiGLU MLP)
//   logits = lm_head (rmsnorm(x) * norm_f)       (B,T,vocab), lm_head untied from tok_emb
//   loss = mean cross-entropy over the positions whose target is >= 0 (-1 means "not scored")
//
// llm.c style memory: one arena for parameters, one for their gradients, one for activations (sized
// for the largest B,T seen so far), carved into tensors; forward and backward never allocate.
// A hybrid model is a per-layer list of mixers.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "geometry.h"
#include "mixer.h"

#define MODEL_NORM_EPS 1e-5f
#define MODEL_MAX_TENSORS (8 + 32 * GEOM_MAX_LAYERS)

// One named parameter tensor (the safetensors name), where it lives in the parameter arena.
typedef struct {
    char name[96];          // "tok_emb", "layers.0.norm1", "layers.0.mixer.wq", "lm_head", ...
    int ndim;
    int64_t shape[4];
    size_t offset, size;    // in floats
    int decay;              // 1 for matrices: AdamW's weight decay applies (not to norm gains)
} ModelTensor;

// Offsets (in floats) of one layer's parameters; the same offsets index the gradient arena.
typedef struct {
    size_t norm1;           // (d)
    size_t mixer;           // the mixer's slice, laid out by its param_tensors
    size_t norm2;           // (d)
    size_t w_gate, w_up;    // (d_ff, d)
    size_t w_down;          // (d, d_ff)
} LayerParams;

// What forward saves per layer for backward (pointers into the activation arena), N = B*T rows.
typedef struct {
    float *resid;           // (N,d)  residual stream entering the layer
    float *xn1, *rstd1;     // (N,d), (N)  rmsnorm before the mixer: the mixer's input
    float *mix_act;         // the mixer's own saved activations
    float *resid_mid;       // (N,d)  after the mixer's residual add
    float *xn2, *rstd2;     // (N,d), (N)  rmsnorm before the MLP
    float *gate, *up, *h;   // (N,d_ff)  h = silu(gate) * up
} LayerActs;

typedef struct {
    ModelGeometry g;
    Mixer mixers[GEOM_MAX_LAYERS];   // .ops per layer, .g points at this struct's g
    ModelTensor tensors[MODEL_MAX_TENSORS];
    int n_tensors;
    size_t tok_emb, norm_f, lm_head; // offsets: (vocab,d), (d), (vocab,d)
    LayerParams layer[GEOM_MAX_LAYERS];
    size_t n_params;
    float *params, *grads;           // (n_params); grads allocated on first backward
    // activations of the last forward, for (B,T)
    int B, T;
    float *acts;
    size_t acts_cap;                 // floats allocated
    int act_B, act_T;                // the (B,T) the arena is currently laid out for
    LayerActs la[GEOM_MAX_LAYERS];
    float *resid_f, *xf, *rstd_f;    // (N,d) final residual, (N,d) its rmsnorm, (N)
    float *logits, *probs;           // (N,vocab)
    float *d_resid, *d_xn, *d_h, *d_gate, *d_up, *d_logits, *scratch;   // backward/forward scratch
    int *tokens, *targets;           // (N) copies of the last inputs
    size_t tokens_cap;               // N the tokens buffer holds
    float loss;                      // mean cross-entropy of the last forward with targets; -1 without
    int n_scored;                    // positions with a target >= 0
} Model;

// A new model of geometry g with mixers[l] at layer l (n_layers of them), parameters initialised
// deterministically from seed. Exits with a user error if the geometry is impossible.
Model *model_new(const ModelGeometry *g, const MixerOps *const *mixers, uint64_t seed);
void model_free(Model *m);
// Re-initialises every parameter from seed (what model_new does).
void model_init_params(Model *m, uint64_t seed);
const ModelTensor *model_find_tensor(const Model *m, const char *name);

// Forward over tokens (B,T). targets (B,T) may be NULL (no loss: m->loss = -1). Fills m->logits.
void model_forward(Model *m, const int *tokens, const int *targets, int B, int T);
void model_zero_grad(Model *m);
// Accumulates d loss / d params into m->grads (after a forward with targets).
void model_backward(Model *m);
// Of the last forward: positions with target >= 0 whose argmax logit equals the target.
void model_count_correct(const Model *m, int *correct, int *scored);

// Mixing matrices of layer `layer` after a forward with B = 1: A (n_mix_heads, T, T).
int model_n_mix_heads(const Model *m, int layer);
void model_mixing_matrix(const Model *m, int layer, float *A);

// ---- decode: one token at a time against per-layer caches ---------------------------------------
typedef struct {
    const Model *m;
    MixerCache *layer[GEOM_MAX_LAYERS];
    int pos, max_T;
    float *x, *xn, *mix_out, *gate, *up, *h, *mlp_out;   // one token's work space
} ModelCache;
ModelCache *model_cache_new(const Model *m, int max_T);
void model_cache_free(ModelCache *c);
size_t model_cache_bytes(const ModelCache *c);          // sum of the mixers' cache_bytes
// Appends token at the next position; logits (vocab) equal the full forward's at that position.
void model_decode(ModelCache *c, float *logits, int token);

// ---- weights files ------------------------------------------------------------------------------
// What a weights file records besides the tensors. Strings are malloc'd (model_info_free).
typedef struct {
    char task[16];          // "recall", "induction", "corpus" ("" if none)
    char *task_config;      // JSON object of the task's knobs (tasks.h), NULL if none
    char *vocab;            // JSON array of token names, NULL if none
    uint64_t seed;          // initialisation and batching seed
    int steps;              // optimizer steps taken
    double loss, accuracy;  // final held-out metrics (NAN: not measured)
    float *curve;           // (2, n_curve): row 0 step, row 1 training loss; NULL if none
    int n_curve;
    unsigned char *corpus;  // a --corpus model's held-out text (tensor meta.corpus_heldout); NULL if none
    long n_corpus;
} ModelInfo;
void model_info_free(ModelInfo *info);

// Writes every parameter, the non-parameter tensors "meta.loss_curve" and "meta.corpus_heldout" (when
// info has them) and __metadata__ (format, geometry JSON with the mixer of each layer, task, task_config,
// vocab, seed, steps, loss, accuracy) atomically. The format is documented in data/weights/README.md.
void model_save(const Model *m, const ModelInfo *info, const char *path);
// Finds a mixer by the name stored in the file (chapters/registry.h: mixer_by_name).
typedef const MixerOps *(*MixerLookup)(const char *name);
// Strict load (formats 1 and 2): geometry from the metadata, every tensor present with its exact shape
// and finite, no unknown tensors besides "meta.*" (and format 1's "train.*"). Returns NULL with a
// one-line message naming the file in err ("x.safetensors: tensor 'lm_head' missing"). info may be NULL.
Model *model_load(const char *path, MixerLookup lookup, ModelInfo *info, char *err, size_t cap);
// The geometry (with mixer names) as JSON (malloc'd), and back (0, or -1 with a message).
char *model_geometry_json(const ModelGeometry *g, const MixerOps *const *mixers);
int model_geometry_from_json(ModelGeometry *g, char names[][48], const char *json, char *err, size_t cap);
