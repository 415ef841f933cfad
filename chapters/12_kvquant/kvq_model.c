// kvq_model.c: a tiny model's decode cache quantized in every attention layer, and its measurements.
#include "12_kvquant/kvq_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "05_mla/mla.h"
#include "08_gated/gated.h"
#include "check.h"
#include "kvcache.h"

// 1 for a layer whose cache is GQA's (plain or gated attention), 2 for MLA's, 0 otherwise.
static int attention_kind(const MixerOps *ops) {
    if (ops == &gqa_mixer || ops == &gated_mixer) return 1;
    return ops == &mla_mixer ? 2 : 0;
}

int kvq_model_quantize(ModelCache *c, KvQuant *q, KvQuant *rope_key) {
    int n = 0;
    for (int l = 0; q && l < c->m->g.n_layers; l++) {
        int kind = attention_kind(c->m->mixers[l].ops);
        if (kind == 1) mha_cache_set_quant(c->layer[l], q);
        if (kind == 2) mla_cache_set_quant(c->layer[l], q, rope_key);
        n += kind != 0;
    }
    return n;
}

double kvq_model_bytes_per_token(const Model *m, const KvqScheme *s, const KvqScheme *rope) {
    ModelGeometry g = m->g;
    g.dtype_bytes = 4;
    return s ? kvcache_quant_bytes_per_token(&g, s, rope) : kvcache_bytes_per_token(&g);
}

double kvq_model_elems_per_token(const Model *m) {
    ModelGeometry g = m->g;
    g.dtype_bytes = 1;
    return kvcache_bytes_per_token(&g);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) best = x[i] > x[best] ? i : best;
    return best;
}

// sqrt(num / den) accumulators of one quantizer's errors and hits.
typedef struct {
    double logit_num, logit_den, attn_num, attn_den;
    long correct, agree;
} Tally;

void kvq_evaluate(Model *m, const Task *task, KvQuant *const *qs, int nq, KvQuant *rope_key, uint64_t seed,
                  int n_samples, int n_attn, KvqEval *out) {
    const ModelGeometry *g = &m->g;
    int T = task->seq_len, V = g->vocab_size, d = g->d_model, L = g->n_layers;
    int *tokens = mallocCheck(sizeof(int) * 2 * (size_t)T), *targets = tokens + T;
    float *ref = mallocCheck(sizeof(float) * (size_t)T * V), *logits = mallocCheck(sizeof(float) * (size_t)V);
    // per layer: the fp32 model's mixer inputs and the plain cache's outputs for the whole sample
    float *xn = mallocCheck(sizeof(float) * 2 * (size_t)L * T * d), *o_ref = xn + (size_t)L * T * d;
    float *o_q = mallocCheck(sizeof(float) * (size_t)d);
    Tally *tl = callocCheck((size_t)nq, sizeof *tl);
    long scored = 0;
    Rng rng;
    rng_seed(&rng, seed);
    for (int s = 0; s < n_samples; s++) {
        task_sample(task, &rng, SPLIT_HELDOUT, tokens, targets);
        model_forward(m, tokens, NULL, 1, T);   // the fp32 reference (decode equals it bit for bit)
        memcpy(ref, m->logits, sizeof(float) * (size_t)T * V);
        for (int t = 0; t < T; t++) scored += targets[t] >= 0;

        // every attention layer alone: the fp32 model's inputs through a plain cache, then a quantized one
        for (int l = 0; s < n_attn && l < L; l++) {
            const Mixer *mx = &m->mixers[l];
            int kind = attention_kind(mx->ops);
            if (!kind) continue;
            float *xl = xn + (size_t)l * T * d, *ol = o_ref + (size_t)l * T * d;
            const float *params = m->params + m->layer[l].mixer;
            memcpy(xl, m->la[l].xn1, sizeof(float) * (size_t)T * d);
            MixerCache *plain = mx->ops->cache_new(mx, T);
            for (int t = 0; t < T; t++) mx->ops->decode(mx, plain, ol + (size_t)t * d, xl + (size_t)t * d, params);
            mx->ops->cache_free(plain);
            for (int k = 0; k < nq; k++) {
                if (!qs[k]) continue;   // fp32: no error by construction
                MixerCache *quant = mx->ops->cache_new(mx, T);
                if (kind == 1) mha_cache_set_quant(quant, qs[k]);
                else mla_cache_set_quant(quant, qs[k], rope_key);
                for (int t = 0; t < T; t++) {
                    mx->ops->decode(mx, quant, o_q, xl + (size_t)t * d, params);
                    const float *o = ol + (size_t)t * d;
                    for (int i = 0; i < d; i++) {
                        tl[k].attn_num += ((double)o_q[i] - o[i]) * ((double)o_q[i] - o[i]);
                        tl[k].attn_den += (double)o[i] * o[i];
                    }
                }
                mx->ops->cache_free(quant);
            }
        }

        // the whole model, token by token, every attention layer quantized (fp32: decode equals the
        // forward bit for bit, a tested property, so the forward's logits stand in for it)
        for (int k = 0; k < nq; k++) {
            if (!qs[k]) {
                for (int t = 0; t < T; t++)
                    if (targets[t] >= 0) {
                        int a = argmax(ref + (size_t)t * V, V);
                        tl[k].correct += a == targets[t];
                        tl[k].agree++;
                    }
                continue;
            }
            ModelCache *c = model_cache_new(m, T);
            kvq_model_quantize(c, qs[k], rope_key);
            for (int t = 0; t < T; t++) {
                model_decode(c, logits, tokens[t]);
                if (targets[t] < 0) continue;
                const float *r = ref + (size_t)t * V;
                for (int i = 0; i < V; i++) {
                    tl[k].logit_num += ((double)logits[i] - r[i]) * ((double)logits[i] - r[i]);
                    tl[k].logit_den += (double)r[i] * r[i];
                }
                int a = argmax(logits, V);
                tl[k].correct += a == targets[t];
                tl[k].agree += a == argmax(r, V);
            }
            model_cache_free(c);
        }
    }
    for (int k = 0; k < nq; k++) {
        out[k].scored = (int)scored;
        out[k].accuracy = scored ? (double)tl[k].correct / scored : 0.0;
        out[k].agree = scored ? (double)tl[k].agree / scored : 0.0;
        out[k].logit_err = tl[k].logit_den > 0 ? sqrt(tl[k].logit_num / tl[k].logit_den) : 0.0;
        out[k].attn_err = tl[k].attn_den > 0 ? sqrt(tl[k].attn_num / tl[k].attn_den) : 0.0;
    }
    free(tokens);
    free(ref);
    free(logits);
    free(xn);
    free(o_q);
    free(tl);
}
