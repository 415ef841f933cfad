// kvq_model.h: a whole tiny model decoding with a quantized KV cache (chapter 12), and what the chapter
// measures on it.
//
// The quantizers live in common/kvquant (encoder, decoder, bytes); the caches that hold their codes are
// GQA's (chapters/03_mha, also under gated attention) and MLA's (chapters/05_mla). Here a model's decode
// cache gets one quantizer in every softmax-attention layer, and three numbers come out per model and
// scheme: recall or induction accuracy from token-by-token decoding, the error of the logits, and the
// error of the attention layers' outputs on the same inputs.
#pragma once
#include <stdint.h>
#include "kvquant.h"
#include "model.h"
#include "tasks.h"

// Quantizes every softmax-attention layer's cache in c (MHA/GQA/MQA, gated attention, MLA) with q, MLA's
// RoPE key with rope_key (NULL: q), before the first token; linear layers keep their fixed state. Returns
// the number of layers quantized (0 when q is NULL: the fp32 cache).
int kvq_model_quantize(ModelCache *c, KvQuant *q, KvQuant *rope_key);

// Bytes one more token adds to m's caches, all layers, in the long run (s NULL: the fp32 cache; rope:
// MLA's RoPE key's scheme, NULL for s).
double kvq_model_bytes_per_token(const Model *m, const KvqScheme *s, const KvqScheme *rope);
// Elements one token adds to m's caches (the same count at one byte per element).
double kvq_model_elems_per_token(const Model *m);

typedef struct {
    double accuracy;    // scored positions where the quantized decode's argmax is the target (0..1)
    double agree;       // scored positions where it is the fp32 model's argmax (0..1)
    double logit_err;   // sqrt(sum ||logits_q - logits||^2 / sum ||logits||^2) over scored positions
    double attn_err;    // the same ratio for the attention layers' outputs, each layer fed the fp32
                        // model's inputs (so it measures the cache alone, not errors compounding)
    int scored;         // positions scored
} KvqEval;

// n_samples held-out samples of task, drawn from seed (the same ones for every quantizer), decoded token
// by token through caches quantized by each of qs[0..nq) (a NULL entry: fp32; MLA's RoPE key by rope_key,
// NULL: the same as the latent) into out[0..nq), against the fp32 forward of the same model. The
// attention error uses the first n_attn samples (it varies little).
void kvq_evaluate(Model *m, const Task *task, KvQuant *const *qs, int nq, KvQuant *rope_key, uint64_t seed,
                  int n_samples, int n_attn, KvqEval *out);
