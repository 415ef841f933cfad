// model.c: embeddings, pre-norm blocks around a per-layer mixer, SwiGLU MLP, LM head, cross-entropy;
// forward, backward, cached decode, and the safetensors weights files.
#include "model.h"
#include "check.h"
#include "mathx.h"
#include "rng.h"
#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_FORMAT "attention-tiny-lm/2"
#define MODEL_FORMAT_1 "attention-tiny-lm/1"   // integer kind codes, train.loss_curve: still read
// The largest head count or per-head width a weights file may declare: any two multiplied stay in int.
#define MODEL_MAX_DIM (1 << 14)
// Elementwise loops go parallel past this many elements (below it a parallel region costs more).
#define ELEMS_PAR_MIN (1L << 15)

// ---- parameters ---------------------------------------------------------------------------------

static size_t add_tensor(Model *m, size_t *off, const char *name, int ndim, int64_t s0, int64_t s1, int decay) {
    CHECK(m->n_tensors < MODEL_MAX_TENSORS, "too many parameter tensors");
    ModelTensor *t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = s0;
    t->shape[1] = s1;
    t->size = (size_t)s0 * (size_t)(ndim > 1 ? s1 : 1);
    t->offset = *off;
    t->decay = decay;
    *off += t->size;
    return t->offset;
}

// Lays out every tensor (names, shapes, offsets) without allocating; returns the total floats.
static size_t model_layout_params(Model *m) {
    const ModelGeometry *g = &m->g;
    int64_t V = g->vocab_size, d = g->d_model, F = g->d_ff;
    size_t off = 0;
    char name[96];
    m->n_tensors = 0;
    m->tok_emb = add_tensor(m, &off, "tok_emb", 2, V, d, 1);
    for (int l = 0; l < g->n_layers; l++) {
        LayerParams *lp = &m->layer[l];
        snprintf(name, sizeof name, "layers.%d.norm1", l);
        lp->norm1 = add_tensor(m, &off, name, 1, d, 0, 0);
        // the mixer's tensors, back to back in its own order, with its own offsets
        ParamTensor pt[32];
        int n = m->mixers[l].ops->param_tensors(g, l, pt, 32);
        lp->mixer = off;
        size_t mix_size = mixer_n_params(m->mixers[l].ops, g, l);
        for (int i = 0; i < n; i++) {
            CHECK(m->n_tensors < MODEL_MAX_TENSORS, "too many parameter tensors");
            ModelTensor *t = &m->tensors[m->n_tensors++];
            memset(t, 0, sizeof *t);
            snprintf(t->name, sizeof t->name, "layers.%d.mixer.%.47s", l, pt[i].name);
            t->ndim = pt[i].ndim;
            t->size = 1;
            for (int k = 0; k < pt[i].ndim; k++) {
                t->shape[k] = pt[i].shape[k];
                t->size *= (size_t)pt[i].shape[k];
            }
            t->offset = lp->mixer + pt[i].offset;
            t->decay = pt[i].ndim >= 2;
            CHECK(pt[i].offset + t->size <= mix_size, "mixer %s: tensor %s outside its slice",
                  m->mixers[l].ops->name, pt[i].name);
        }
        off += mix_size;
        snprintf(name, sizeof name, "layers.%d.norm2", l);
        lp->norm2 = add_tensor(m, &off, name, 1, d, 0, 0);
        snprintf(name, sizeof name, "layers.%d.mlp.w_gate", l);
        lp->w_gate = add_tensor(m, &off, name, 2, F, d, 1);
        snprintf(name, sizeof name, "layers.%d.mlp.w_up", l);
        lp->w_up = add_tensor(m, &off, name, 2, F, d, 1);
        snprintf(name, sizeof name, "layers.%d.mlp.w_down", l);
        lp->w_down = add_tensor(m, &off, name, 2, d, F, 1);
    }
    m->norm_f = add_tensor(m, &off, "norm_f", 1, d, 0, 0);
    m->lm_head = add_tensor(m, &off, "lm_head", 2, V, d, 1);
    return off;
}

static void fill_const(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

void model_init_params(Model *m, uint64_t seed) {
    // GPT-2 style: N(0, 0.02) everywhere, the projections back into the residual stream scaled by
    // 1/sqrt(2 n_layers), norm gains 1. One RNG stream in a fixed order, so a seed is a model.
    const ModelGeometry *g = &m->g;
    size_t V = (size_t)g->vocab_size, d = (size_t)g->d_model, F = (size_t)g->d_ff;
    float resid_std = 0.02f / sqrtf(2.0f * (float)g->n_layers);
    Rng rng;
    rng_seed(&rng, seed);
    float *p = m->params;
    rng_fill_normal(&rng, p + m->tok_emb, (long)(V * d), 0.02f);
    for (int l = 0; l < g->n_layers; l++) {
        const LayerParams *lp = &m->layer[l];
        fill_const(p + lp->norm1, d, 1.0f);
        m->mixers[l].ops->init(&m->mixers[l], p + lp->mixer, &rng);
        fill_const(p + lp->norm2, d, 1.0f);
        rng_fill_normal(&rng, p + lp->w_gate, (long)(F * d), 0.02f);
        rng_fill_normal(&rng, p + lp->w_up, (long)(F * d), 0.02f);
        rng_fill_normal(&rng, p + lp->w_down, (long)(d * F), resid_std);
    }
    fill_const(p + m->norm_f, d, 1.0f);
    rng_fill_normal(&rng, p + m->lm_head, (long)(V * d), 0.02f);
}

// A model with its tensors laid out and parameters allocated (uninitialised).
static Model *model_create(const ModelGeometry *g, const MixerOps *const *mixers) {
    Model *m = callocCheck(1, sizeof *m);
    m->g = *g;
    for (int l = 0; l < g->n_layers; l++) {
        CHECK(mixers[l] != NULL, "layer %d has no mixer", l);
        m->mixers[l] = (Mixer){.ops = mixers[l], .g = &m->g, .layer = l};
    }
    // cross-layer KV sharing: each source layer and its readers get one KvShare (mixer.h)
    for (int l = 0; l < g->n_layers; l++) {
        int src = geometry_kv_source(g, l);
        if (src == l) continue;
        CHECK(src >= 0 && mixers[l]->kv_sharing && mixers[src]->kv_sharing,
              "layer %d reads layer %d's K/V, but mixer '%s' or '%s' cannot share KV", l, src, mixers[l]->name,
              mixers[src]->name);
        if (!m->mixers[src].kv_share) m->mixers[src].kv_share = callocCheck(1, sizeof(KvShare));
        m->mixers[l].kv_share = m->mixers[src].kv_share;
    }
    m->n_params = model_layout_params(m);
    m->params = mallocCheck(sizeof(float) * m->n_params);
    m->loss = -1.0f;
    return m;
}

// 0 if every dimension is in a range the code can multiply without overflow (two fields' product stays
// below 2^31, so no int size inside a mixer can wrap) and the model's own dimensions are usable, else -1
// with the reason naming the key. The mixers check the rest (mixer_check).
static int model_check_geometry(const ModelGeometry *g, char *why, size_t cap) {
    static const struct { const char *key; size_t off; int lo, hi; } range[] = {
        {"n_layers", offsetof(ModelGeometry, n_layers), 1, GEOM_MAX_LAYERS},
        {"d_model", offsetof(ModelGeometry, d_model), 1, 1 << 16},
        {"d_ff", offsetof(ModelGeometry, d_ff), 1, 1 << 20},
        {"vocab_size", offsetof(ModelGeometry, vocab_size), 1, 1 << 20},
        {"max_seq_len", offsetof(ModelGeometry, max_seq_len), 1, 1 << 20},
        {"n_heads", offsetof(ModelGeometry, n_heads), 1, MODEL_MAX_DIM},
        {"n_kv_heads", offsetof(ModelGeometry, n_kv_heads), 1, MODEL_MAX_DIM},
        {"head_dim", offsetof(ModelGeometry, head_dim), 1, MODEL_MAX_DIM},
        {"q_lora_rank", offsetof(ModelGeometry, q_lora_rank), 0, MODEL_MAX_DIM},
        {"kv_lora_rank", offsetof(ModelGeometry, kv_lora_rank), 0, MODEL_MAX_DIM},
        {"qk_nope_head_dim", offsetof(ModelGeometry, qk_nope_head_dim), 0, MODEL_MAX_DIM},
        {"qk_rope_head_dim", offsetof(ModelGeometry, qk_rope_head_dim), 0, MODEL_MAX_DIM},
        {"v_head_dim", offsetof(ModelGeometry, v_head_dim), 0, MODEL_MAX_DIM},
        {"sliding_window", offsetof(ModelGeometry, sliding_window), 0, 1 << 20},
        {"index_n_heads", offsetof(ModelGeometry, index_n_heads), 0, MODEL_MAX_DIM},
        {"index_head_dim", offsetof(ModelGeometry, index_head_dim), 0, MODEL_MAX_DIM},
        {"index_topk", offsetof(ModelGeometry, index_topk), 0, 1 << 20},
        {"linear_num_key_heads", offsetof(ModelGeometry, linear_num_key_heads), 0, MODEL_MAX_DIM},
        {"linear_num_value_heads", offsetof(ModelGeometry, linear_num_value_heads), 0, MODEL_MAX_DIM},
        {"linear_key_head_dim", offsetof(ModelGeometry, linear_key_head_dim), 0, MODEL_MAX_DIM},
        {"linear_value_head_dim", offsetof(ModelGeometry, linear_value_head_dim), 0, MODEL_MAX_DIM},
        {"linear_conv_kernel_dim", offsetof(ModelGeometry, linear_conv_kernel_dim), 0, 64},
    };
    for (size_t i = 0; i < sizeof range / sizeof range[0]; i++) {
        int v = *(const int *)((const char *)g + range[i].off);
        if (v < range[i].lo || v > range[i].hi) {
            snprintf(why, cap, "'%s' %d out of range [%d, %d]", range[i].key, v, range[i].lo, range[i].hi);
            return -1;
        }
    }
    // RoPE turns pair i by pos * theta^(-2i/n): a base below 1 would make those angles overflow.
    if (!(g->rope_theta >= 1.0 && isfinite(g->rope_theta))) {
        snprintf(why, cap, "'rope_theta' %g must be a finite number >= 1", g->rope_theta);
        return -1;
    }
    if (!(g->rope_local_theta == 0.0 || (g->rope_local_theta >= 1.0 && isfinite(g->rope_local_theta)))) {
        snprintf(why, cap, "'rope_local_theta' %g must be 0 (same as rope_theta) or a finite number >= 1", g->rope_local_theta);
        return -1;
    }
    if (!(g->partial_rotary_factor >= 0.0 && g->partial_rotary_factor <= 1.0)) {
        snprintf(why, cap, "'partial_rotary_factor' %g must be in (0, 1] (0: all dims)", g->partial_rotary_factor);
        return -1;
    }
    return geometry_validate(g, why, cap) ? 0 : -1;
}

// 0 if mixers[l] can run layer l for every layer (MixerOps.validate), else -1 with the reason.
static int mixer_check(const ModelGeometry *g, const MixerOps *const *mixers, char *why, size_t cap) {
    for (int l = 0; l < g->n_layers; l++) {
        char r[384];
        CHECK(mixers[l] && mixers[l]->validate, "layer %d: mixer without a validate hook", l);
        if (!mixers[l]->validate(g, l, r, sizeof r)) {
            snprintf(why, cap, "layer %d (mixer '%s'): %s", l, mixers[l]->name, r);
            return -1;
        }
    }
    return 0;
}

Model *model_new(const ModelGeometry *g, const MixerOps *const *mixers, uint64_t seed) {
    char why[512];
    if (model_check_geometry(g, why, sizeof why) != 0 || mixer_check(g, mixers, why, sizeof why) != 0)
        die_user("model geometry: %s", why);
    Model *m = model_create(g, mixers);
    model_init_params(m, seed);
    return m;
}

void model_free(Model *m) {
    if (!m) return;
    for (int l = 0; l < m->g.n_layers; l++)   // each KvShare once: by its source layer
        if (m->mixers[l].kv_share && geometry_kv_source(&m->g, l) == l) free(m->mixers[l].kv_share);
    free(m->params);
    free(m->grads);
    free(m->acts);
    free(m->tokens);
    free(m);
}

const ModelTensor *model_find_tensor(const Model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

// ---- activations --------------------------------------------------------------------------------

// Carves the activation arena for (B,T) into the pointers of m (with base NULL it only counts);
// returns the floats needed. Every piece starts on a 64-byte boundary.
static size_t model_layout_acts(Model *m, int B, int T, float *base) {
    const ModelGeometry *g = &m->g;
    size_t N = (size_t)B * T, d = (size_t)g->d_model, F = (size_t)g->d_ff, V = (size_t)g->vocab_size;
    size_t off = 0;
#define PIECE(ptr, n) do { if (base) (ptr) = base + off; off += ((n) + 15) & ~(size_t)15; } while (0)
    for (int l = 0; l < g->n_layers; l++) {
        LayerActs *a = &m->la[l];
        PIECE(a->resid, N * d);
        PIECE(a->xn1, N * d);
        PIECE(a->rstd1, N);
        PIECE(a->mix_act, m->mixers[l].ops->act_floats(g, l, B, T));
        PIECE(a->resid_mid, N * d);
        PIECE(a->xn2, N * d);
        PIECE(a->rstd2, N);
        PIECE(a->gate, N * F);
        PIECE(a->up, N * F);
        PIECE(a->h, N * F);
    }
    PIECE(m->resid_f, N * d);
    PIECE(m->xf, N * d);
    PIECE(m->rstd_f, N);
    PIECE(m->logits, N * V);
    PIECE(m->probs, N * V);
    PIECE(m->d_resid, N * d);
    PIECE(m->d_xn, N * d);
    PIECE(m->d_h, N * F);
    PIECE(m->d_gate, N * F);
    PIECE(m->d_up, N * F);
    PIECE(m->d_logits, N * V);
    PIECE(m->scratch, N * (d > V ? d : V));
#undef PIECE
    return off;
}

// Lays the arena out for (B,T); allocates only when it must grow (never in a steady training loop).
static void model_reserve(Model *m, int B, int T) {
    if (m->act_B == B && m->act_T == T) return;
    size_t need = model_layout_acts(m, B, T, NULL);
    if (need > m->acts_cap) {
        free(m->acts);
        m->acts = mallocCheck(sizeof(float) * need);
        m->acts_cap = need;
    }
    if ((size_t)B * T > m->tokens_cap) {
        free(m->tokens);
        m->tokens = mallocCheck(sizeof(int) * 2 * (size_t)B * T);
        m->tokens_cap = (size_t)B * T;
    }
    m->targets = m->tokens + (size_t)B * T;
    model_layout_acts(m, B, T, m->acts);
    m->act_B = B;
    m->act_T = T;
}

// ---- forward ------------------------------------------------------------------------------------

// out = a + b, elementwise over n
static void add_into(float *out, const float *a, const float *b, long n) {
    #pragma omp parallel for if(n >= ELEMS_PAR_MIN) schedule(static)
    for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void model_forward(Model *m, const int *tokens, const int *targets, int B, int T) {
    const ModelGeometry *g = &m->g;
    CHECK(B >= 1 && T >= 1, "model_forward: B %d, T %d", B, T);
    CHECK(T <= g->max_seq_len, "model_forward: T %d exceeds max_seq_len %d", T, g->max_seq_len);
    model_reserve(m, B, T);
    m->B = B;
    m->T = T;
    int L = g->n_layers, d = g->d_model, F = g->d_ff, V = g->vocab_size, N = B * T;
    const float *P = m->params;
    memcpy(m->tokens, tokens, sizeof(int) * (size_t)N);
    if (targets) memcpy(m->targets, targets, sizeof(int) * (size_t)N);

    // token embedding: row tokens[n] of tok_emb (V,d) -> resid (N,d)
    float *x = m->la[0].resid;
    for (int n = 0; n < N; n++) {
        CHECK(tokens[n] >= 0 && tokens[n] < V, "token %d at position %d outside vocab %d", tokens[n], n, V);
        memcpy(x + (size_t)n * d, P + m->tok_emb + (size_t)tokens[n] * d, sizeof(float) * (size_t)d);
    }
    for (int l = 0; l < L; l++) {
        const LayerParams *lp = &m->layer[l];
        LayerActs *a = &m->la[l];
        float *next = l + 1 < L ? m->la[l + 1].resid : m->resid_f;
        // x += mixer(rmsnorm(x))
        rmsnorm_forward(a->xn1, a->rstd1, a->resid, P + lp->norm1, N, d, MODEL_NORM_EPS);
        m->mixers[l].ops->forward(&m->mixers[l], m->scratch, a->mix_act, a->xn1, P + lp->mixer, B, T);
        add_into(a->resid_mid, a->resid, m->scratch, (long)N * d);
        // x += w_down (silu(w_gate h) * (w_up h)), h = rmsnorm(x)
        rmsnorm_forward(a->xn2, a->rstd2, a->resid_mid, P + lp->norm2, N, d, MODEL_NORM_EPS);
        linear_forward(a->gate, a->xn2, P + lp->w_gate, NULL, N, d, F);   // (N,F)
        linear_forward(a->up, a->xn2, P + lp->w_up, NULL, N, d, F);       // (N,F)
        swiglu_forward(a->h, a->gate, a->up, (long)N * F);
        linear_forward(m->scratch, a->h, P + lp->w_down, NULL, N, F, d);  // (N,d)
        add_into(next, a->resid_mid, m->scratch, (long)N * d);
    }
    rmsnorm_forward(m->xf, m->rstd_f, m->resid_f, P + m->norm_f, N, d, MODEL_NORM_EPS);
    linear_forward(m->logits, m->xf, P + m->lm_head, NULL, N, d, V);      // (N,V)

    m->loss = -1.0f;
    m->n_scored = 0;
    if (!targets) return;
    // softmax per row, and each row's -log p(target) through log-sum-exp (no log of a rounded 0)
    float *row_loss = m->scratch;   // (N)
    #pragma omp parallel for if((long)N * V >= ELEMS_PAR_MIN) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *lg = m->logits + (size_t)n * V;
        float *p = m->probs + (size_t)n * V;
        float maxv = lg[0];
        for (int v = 1; v < V; v++) maxv = lg[v] > maxv ? lg[v] : maxv;
        // exponentials eight at a time (v8_exp), summed in eight lanes joined by v8_sum
        v8f mv = v8_set1(maxv), acc = v8_zero();
        for (int v = 0; v < V; v += 8) {
            int r = V - v < 8 ? V - v : 8;
            v8f e = v8_exp(v8_sub(v8_load_partial(lg + v, r, -INFINITY), mv));
            v8_store_partial(p + v, e, r);
            acc = v8_add(acc, e);
        }
        float sum = v8_sum(acc), inv = 1.0f / sum;
        for (int v = 0; v < V; v++) p[v] *= inv;
        int t = targets[n];
        CHECK(t < V, "target %d at position %d outside vocab %d", t, n, V);
        row_loss[n] = t >= 0 ? logf(sum) + maxv - lg[t] : 0.0f;
    }
    // the mean over scored positions, summed in row order (same bits for any thread count)
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        total += row_loss[n];
        m->n_scored++;
    }
    m->loss = m->n_scored ? (float)(total / m->n_scored) : 0.0f;
}

void model_count_correct(const Model *m, int *correct, int *scored) {
    CHECK(m->loss >= 0.0f, "model_count_correct needs a forward with targets first");
    int N = m->B * m->T, V = m->g.vocab_size;
    *correct = *scored = 0;
    for (int n = 0; n < N; n++) {
        int t = m->targets[n];
        if (t < 0) continue;
        const float *lg = m->logits + (size_t)n * V;
        int best = 0;
        for (int v = 1; v < V; v++)
            if (lg[v] > lg[best]) best = v;
        (*scored)++;
        *correct += best == t;
    }
}

// ---- backward -----------------------------------------------------------------------------------

void model_zero_grad(Model *m) {
    if (!m->grads) m->grads = mallocCheck(sizeof(float) * m->n_params);
    memset(m->grads, 0, sizeof(float) * m->n_params);
}

void model_backward(Model *m) {
    const ModelGeometry *g = &m->g;
    CHECK(m->loss >= 0.0f, "model_backward needs a forward with targets first");
    if (!m->grads) model_zero_grad(m);
    int L = g->n_layers, d = g->d_model, F = g->d_ff, V = g->vocab_size;
    int B = m->B, T = m->T, N = B * T;
    const float *P = m->params;
    float *G = m->grads;
    size_t Nd = (size_t)N * d, NF = (size_t)N * F;

    // loss = (1/n) sum_scored -log p[target]  =>  dlogits = (p - onehot(target)) / n on scored rows
    float inv = m->n_scored ? 1.0f / (float)m->n_scored : 0.0f;
    #pragma omp parallel for if((long)N * V >= ELEMS_PAR_MIN) schedule(static)
    for (int n = 0; n < N; n++) {
        float *dl = m->d_logits + (size_t)n * V;
        const float *p = m->probs + (size_t)n * V;
        int t = m->targets[n];
        for (int v = 0; v < V; v++) dl[v] = t >= 0 ? p[v] * inv : 0.0f;
        if (t >= 0) dl[t] -= inv;
    }
    // LM head and the final norm; d_resid carries d loss / d (residual stream) from here down
    float *dxf = m->scratch;
    memset(dxf, 0, sizeof(float) * Nd);
    linear_backward(dxf, G + m->lm_head, NULL, m->d_logits, m->xf, P + m->lm_head, N, d, V);
    memset(m->d_resid, 0, sizeof(float) * Nd);
    rmsnorm_backward(m->d_resid, G + m->norm_f, dxf, m->resid_f, P + m->norm_f, m->rstd_f, N, d);

    for (int l = L - 1; l >= 0; l--) {
        const LayerParams *lp = &m->layer[l];
        const LayerActs *a = &m->la[l];
        // MLP: out = w_down h; h = silu(gate) * up
        memset(m->d_h, 0, sizeof(float) * NF);
        linear_backward(m->d_h, G + lp->w_down, NULL, m->d_resid, a->h, P + lp->w_down, N, F, d);
        swiglu_backward(m->d_gate, m->d_up, m->d_h, a->gate, a->up, (long)NF);
        memset(m->d_xn, 0, sizeof(float) * Nd);
        linear_backward(m->d_xn, G + lp->w_gate, NULL, m->d_gate, a->xn2, P + lp->w_gate, N, d, F);
        linear_backward(m->d_xn, G + lp->w_up, NULL, m->d_up, a->xn2, P + lp->w_up, N, d, F);
        // the residual add passes d_resid through; the norm's branch adds to it
        rmsnorm_backward(m->d_resid, G + lp->norm2, m->d_xn, a->resid_mid, P + lp->norm2, a->rstd2, N, d);
        // mixer
        memset(m->d_xn, 0, sizeof(float) * Nd);
        m->mixers[l].ops->backward(&m->mixers[l], m->d_xn, G + lp->mixer, m->d_resid, a->mix_act, a->xn1,
                                   P + lp->mixer, B, T);
        rmsnorm_backward(m->d_resid, G + lp->norm1, m->d_xn, a->resid, P + lp->norm1, a->rstd1, N, d);
    }
    // embedding: rows of tok_emb gather; their gradients scatter-add, in row order
    for (int n = 0; n < N; n++) {
        float *gr = G + m->tok_emb + (size_t)m->tokens[n] * d;
        const float *dr = m->d_resid + (size_t)n * d;
        for (int i = 0; i < d; i++) gr[i] += dr[i];
    }
}

// ---- mixing matrices ----------------------------------------------------------------------------

int model_n_mix_heads(const Model *m, int layer) {
    CHECK(layer >= 0 && layer < m->g.n_layers, "layer %d out of range", layer);
    return m->mixers[layer].ops->n_mix_heads(&m->g, layer);
}

void model_mixing_matrix(const Model *m, int layer, float *A) {
    CHECK(layer >= 0 && layer < m->g.n_layers, "layer %d out of range", layer);
    CHECK(m->act_B > 0, "model_mixing_matrix needs a forward first");
    const Mixer *mx = &m->mixers[layer];
    mx->ops->mixing_matrix(mx, A, m->la[layer].mix_act, m->params + m->layer[layer].mixer, m->T);
}

// ---- decode -------------------------------------------------------------------------------------

ModelCache *model_cache_new(const Model *m, int max_T) {
    CHECK(max_T >= 1, "model_cache_new: max_T %d", max_T);
    ModelCache *c = callocCheck(1, sizeof *c);
    c->m = m;
    c->max_T = max_T;
    for (int l = 0; l < m->g.n_layers; l++) c->layer[l] = m->mixers[l].ops->cache_new(&m->mixers[l], max_T);
    size_t d = (size_t)m->g.d_model, F = (size_t)m->g.d_ff;
    c->x = mallocCheck(sizeof(float) * (4 * d + 3 * F));
    c->xn = c->x + d;
    c->mix_out = c->xn + d;
    c->mlp_out = c->mix_out + d;
    c->gate = c->mlp_out + d;
    c->up = c->gate + F;
    c->h = c->up + F;
    return c;
}

void model_cache_free(ModelCache *c) {
    if (!c) return;
    for (int l = 0; l < c->m->g.n_layers; l++) c->m->mixers[l].ops->cache_free(c->layer[l]);
    free(c->x);
    free(c);
}

size_t model_cache_bytes(const ModelCache *c) {
    size_t total = 0;
    for (int l = 0; l < c->m->g.n_layers; l++) total += c->m->mixers[l].ops->cache_bytes(c->layer[l]);
    return total;
}

void model_decode(ModelCache *c, float *logits, int token) {
    const Model *m = c->m;
    const ModelGeometry *g = &m->g;
    int d = g->d_model, F = g->d_ff, V = g->vocab_size;
    const float *P = m->params;
    CHECK(c->pos < c->max_T, "model_decode: cache full (%d tokens)", c->max_T);
    CHECK(token >= 0 && token < V, "model_decode: token %d outside vocab %d", token, V);
    // the same blocks as model_forward, on one row
    memcpy(c->x, P + m->tok_emb + (size_t)token * d, sizeof(float) * (size_t)d);
    for (int l = 0; l < g->n_layers; l++) {
        const LayerParams *lp = &m->layer[l];
        rmsnorm_forward(c->xn, NULL, c->x, P + lp->norm1, 1, d, MODEL_NORM_EPS);
        KvShare *share = m->mixers[l].kv_share;
        if (share && geometry_kv_source(g, l) == l) share->cache = c->layer[l];   // this cache, for its readers
        m->mixers[l].ops->decode(&m->mixers[l], c->layer[l], c->mix_out, c->xn, P + lp->mixer);
        for (int i = 0; i < d; i++) c->x[i] = c->x[i] + c->mix_out[i];
        rmsnorm_forward(c->xn, NULL, c->x, P + lp->norm2, 1, d, MODEL_NORM_EPS);
        linear_forward(c->gate, c->xn, P + lp->w_gate, NULL, 1, d, F);
        linear_forward(c->up, c->xn, P + lp->w_up, NULL, 1, d, F);
        swiglu_forward(c->h, c->gate, c->up, F);
        linear_forward(c->mlp_out, c->h, P + lp->w_down, NULL, 1, F, d);
        for (int i = 0; i < d; i++) c->x[i] = c->x[i] + c->mlp_out[i];
    }
    rmsnorm_forward(c->xn, NULL, c->x, P + m->norm_f, 1, d, MODEL_NORM_EPS);
    linear_forward(logits, c->xn, P + m->lm_head, NULL, 1, d, V);
    c->pos++;
}

// ---- geometry <-> JSON --------------------------------------------------------------------------
// Format 2 writes every kind as a name and only the fields a model uses (data/weights/README.md lists
// them with their defaults); the reader also takes format 1's integer codes and full field list.

static const char *const ATTN_NAMES[] = {"gqa", "mla", NULL};
static const char *const LAYER_NAMES[] = {"global", "local", "linear", "compressed", "none", NULL};
static const char *const LINEAR_NAMES[] = {"none", "gdn", "kda", "lightning", "mamba2", NULL};
static const char *const GATE_NAMES[] = {"none", "elementwise", "headwise", NULL};
static const char *const QK_NORM_NAMES[] = {"none", "rms", "zero_centred", NULL};

// Which kinds of layer the model has: attention with its own head_dim (gqa, gated), MLA, linear.
static void mixer_families(const ModelGeometry *g, const MixerOps *const *mixers, int *gqa, int *mla, int *linear) {
    *gqa = *mla = *linear = 0;
    for (int l = 0; l < g->n_layers; l++) {
        if (g->layer_kind[l] == LAYER_LINEAR) *linear = 1;
        else if (!strcmp(mixers[l]->name, "mla") || !strcmp(mixers[l]->name, "dsa")) *mla = 1;
        else *gqa = 1;
    }
}

// Recipe fields of the linear layers, written only when set (older files lack them: 0, the defaults).
static const struct { const char *key; size_t off; } GEO_DOUBLES[] = {
    {"linear_a_init_min", offsetof(ModelGeometry, linear_a_init_min)},
    {"linear_a_init_max", offsetof(ModelGeometry, linear_a_init_max)},
    {"linear_dt_init_min", offsetof(ModelGeometry, linear_dt_init_min)},
    {"linear_dt_init_max", offsetof(ModelGeometry, linear_dt_init_max)},
    {"linear_slope_scale", offsetof(ModelGeometry, linear_slope_scale)},
};

char *model_geometry_json(const ModelGeometry *g, const MixerOps *const *mixers) {
    int gqa, mla, linear;
    mixer_families(g, mixers, &gqa, &mla, &linear);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", g->name);
    cJSON_AddNumberToObject(o, "n_layers", g->n_layers);
    cJSON_AddNumberToObject(o, "d_model", g->d_model);
    cJSON_AddNumberToObject(o, "vocab_size", g->vocab_size);
    cJSON_AddNumberToObject(o, "d_ff", g->d_ff);
    cJSON_AddNumberToObject(o, "max_seq_len", g->max_seq_len);
    cJSON_AddNumberToObject(o, "dtype_bytes", g->dtype_bytes);
    cJSON_AddNumberToObject(o, "rope_theta", g->rope_theta);
    if (g->rope_local_theta > 0.0) cJSON_AddNumberToObject(o, "rope_local_theta", g->rope_local_theta);
    if (gqa || mla) {   // a linear-only model has no attention heads: their fields would mislead
        cJSON_AddStringToObject(o, "attn", ATTN_NAMES[g->attn]);
        cJSON_AddNumberToObject(o, "n_heads", g->n_heads);
    }
    if (gqa) {
        cJSON_AddNumberToObject(o, "n_kv_heads", g->n_kv_heads);
        cJSON_AddNumberToObject(o, "head_dim", g->head_dim);
    }
    if (mla) {
        cJSON_AddNumberToObject(o, "q_lora_rank", g->q_lora_rank);
        cJSON_AddNumberToObject(o, "kv_lora_rank", g->kv_lora_rank);
        cJSON_AddNumberToObject(o, "qk_nope_head_dim", g->qk_nope_head_dim);
        cJSON_AddNumberToObject(o, "qk_rope_head_dim", g->qk_rope_head_dim);
        cJSON_AddNumberToObject(o, "v_head_dim", g->v_head_dim);
    }
    if (g->sliding_window > 0) cJSON_AddNumberToObject(o, "sliding_window", g->sliding_window);
    if (g->index_n_heads > 0) {
        cJSON_AddNumberToObject(o, "index_n_heads", g->index_n_heads);
        cJSON_AddNumberToObject(o, "index_head_dim", g->index_head_dim);
        cJSON_AddNumberToObject(o, "index_topk", g->index_topk);
    }
    if (g->attn_output_gate) cJSON_AddStringToObject(o, "attn_output_gate", GATE_NAMES[g->attn_output_gate]);
    if (g->qk_norm) cJSON_AddStringToObject(o, "qk_norm", QK_NORM_NAMES[g->qk_norm]);
    if (g->partial_rotary_factor > 0.0) cJSON_AddNumberToObject(o, "partial_rotary_factor", g->partial_rotary_factor);
    if (g->linear_kind) {
        cJSON_AddStringToObject(o, "linear_kind", LINEAR_NAMES[g->linear_kind]);
        cJSON_AddNumberToObject(o, "linear_num_key_heads", g->linear_num_key_heads);
        cJSON_AddNumberToObject(o, "linear_num_value_heads", g->linear_num_value_heads);
        cJSON_AddNumberToObject(o, "linear_key_head_dim", g->linear_key_head_dim);
        cJSON_AddNumberToObject(o, "linear_value_head_dim", g->linear_value_head_dim);
        cJSON_AddNumberToObject(o, "linear_conv_kernel_dim", g->linear_conv_kernel_dim);
        cJSON_AddNumberToObject(o, "state_dtype_bytes", geometry_state_dtype_bytes(g));
        // for readers of the metadata (derived from the four dims above; ignored on load)
        cJSON_AddNumberToObject(o, "linear_state_elems", (double)geometry_linear_state_elems(g));
    }
    // chapter 11's model options, written only when set
    if (g->num_kv_shared_layers) cJSON_AddNumberToObject(o, "num_kv_shared_layers", g->num_kv_shared_layers);
    if (g->attention_sinks) cJSON_AddNumberToObject(o, "attention_sinks", g->attention_sinks);
    if (g->kv_one_tensor) cJSON_AddNumberToObject(o, "kv_one_tensor", g->kv_one_tensor);
    for (size_t i = 0; i < sizeof GEO_DOUBLES / sizeof GEO_DOUBLES[0]; i++) {
        double v = *(const double *)((const char *)g + GEO_DOUBLES[i].off);
        if (v != 0.0) cJSON_AddNumberToObject(o, GEO_DOUBLES[i].key, v);
    }
    cJSON *kinds = cJSON_AddArrayToObject(o, "layer_kind");
    cJSON *names = cJSON_AddArrayToObject(o, "mixers");
    int compressed = 0, indexers = 0;
    for (int l = 0; l < g->n_layers; l++) {
        cJSON_AddItemToArray(kinds, cJSON_CreateString(LAYER_NAMES[g->layer_kind[l]]));
        cJSON_AddItemToArray(names, cJSON_CreateString(mixers[l]->name));
        compressed |= g->compress_ratios[l] != 0;
        indexers |= g->indexer_types[l] != 0;
    }
    // DeepSeek V4's per-layer fields (chapter 11), only when set
    if (compressed || indexers) {
        cJSON *cr = cJSON_AddArrayToObject(o, "compress_ratios"), *it = cJSON_AddArrayToObject(o, "indexer_types");
        for (int l = 0; l < g->n_layers; l++) {
            cJSON_AddItemToArray(cr, cJSON_CreateNumber(g->compress_ratios[l]));
            cJSON_AddItemToArray(it, cJSON_CreateNumber(g->indexer_types[l]));
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    CHECK(s != NULL, "cJSON_PrintUnformatted failed");
    return s;
}

// Integer field: required ones must be present; optional ones default to 0.
static int geo_int(const cJSON *o, const char *key, int required, long *out, char *err, size_t cap) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = 0;
    if (!v) {
        if (required) snprintf(err, cap, "geometry: '%s' missing", key);
        return required ? -1 : 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2e9) {
        snprintf(err, cap, "geometry: '%s' is not an integer", key);
        return -1;
    }
    *out = (long)v->valuedouble;
    return 0;
}

// A kind: one of names (format 2) or its index (format 1's integer code); absent: 0 (the first name).
static int kind_of(const cJSON *v, const char *key, const char *const *names, int *out, char *err, size_t cap) {
    int n = 0;
    while (names[n]) n++;
    *out = 0;
    if (!v) return 0;
    if (cJSON_IsString(v))
        for (int k = 0; k < n; k++)
            if (!strcmp(v->valuestring, names[k])) { *out = k; return 0; }
    if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && v->valuedouble >= 0 && v->valuedouble < n) {
        *out = (int)v->valuedouble;
        return 0;
    }
    char list[128] = "";
    for (int k = 0; k < n; k++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? "|" : "", names[k]);
    snprintf(err, cap, "geometry: '%s' must be one of %s", key, list);
    return -1;
}

// A real field: absent gives def; present must be a finite number.
static int geo_real(const cJSON *o, const char *key, double def, double *out, char *err, size_t cap) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = def;
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) {
        snprintf(err, cap, "geometry: '%s' is not a finite number", key);
        return -1;
    }
    *out = v->valuedouble;
    return 0;
}

int model_geometry_from_json(ModelGeometry *g, char names[][48], const char *json, char *err, size_t cap) {
    memset(g, 0, sizeof *g);
    cJSON *o = cJSON_Parse(json);
    int rc = -1;
    if (!cJSON_IsObject(o)) { snprintf(err, cap, "geometry is not a JSON object"); goto done; }
    static const struct { const char *key; int required; size_t off; } ints[] = {
        {"n_layers", 1, offsetof(ModelGeometry, n_layers)},
        {"d_model", 1, offsetof(ModelGeometry, d_model)},
        {"n_heads", 0, offsetof(ModelGeometry, n_heads)},
        {"n_kv_heads", 0, offsetof(ModelGeometry, n_kv_heads)},
        {"head_dim", 0, offsetof(ModelGeometry, head_dim)},
        {"vocab_size", 1, offsetof(ModelGeometry, vocab_size)},
        {"d_ff", 1, offsetof(ModelGeometry, d_ff)},
        {"max_seq_len", 1, offsetof(ModelGeometry, max_seq_len)},
        {"q_lora_rank", 0, offsetof(ModelGeometry, q_lora_rank)},
        {"kv_lora_rank", 0, offsetof(ModelGeometry, kv_lora_rank)},
        {"qk_nope_head_dim", 0, offsetof(ModelGeometry, qk_nope_head_dim)},
        {"qk_rope_head_dim", 0, offsetof(ModelGeometry, qk_rope_head_dim)},
        {"v_head_dim", 0, offsetof(ModelGeometry, v_head_dim)},
        {"sliding_window", 0, offsetof(ModelGeometry, sliding_window)},
        {"index_n_heads", 0, offsetof(ModelGeometry, index_n_heads)},
        {"index_head_dim", 0, offsetof(ModelGeometry, index_head_dim)},
        {"index_topk", 0, offsetof(ModelGeometry, index_topk)},
        {"dtype_bytes", 0, offsetof(ModelGeometry, dtype_bytes)},
        {"linear_num_key_heads", 0, offsetof(ModelGeometry, linear_num_key_heads)},
        {"linear_num_value_heads", 0, offsetof(ModelGeometry, linear_num_value_heads)},
        {"linear_key_head_dim", 0, offsetof(ModelGeometry, linear_key_head_dim)},
        {"linear_value_head_dim", 0, offsetof(ModelGeometry, linear_value_head_dim)},
        {"linear_conv_kernel_dim", 0, offsetof(ModelGeometry, linear_conv_kernel_dim)},
        {"state_dtype_bytes", 0, offsetof(ModelGeometry, state_dtype_bytes)},
        {"num_kv_shared_layers", 0, offsetof(ModelGeometry, num_kv_shared_layers)},
        {"attention_sinks", 0, offsetof(ModelGeometry, attention_sinks)},
        {"kv_one_tensor", 0, offsetof(ModelGeometry, kv_one_tensor)},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        long v;
        if (geo_int(o, ints[i].key, ints[i].required, &v, err, cap)) goto done;
        *(int *)((char *)g + ints[i].off) = (int)v;
    }
    int attn, gate, norm, lin;
    if (kind_of(cJSON_GetObjectItemCaseSensitive(o, "attn"), "attn", ATTN_NAMES, &attn, err, cap) ||
        kind_of(cJSON_GetObjectItemCaseSensitive(o, "attn_output_gate"), "attn_output_gate", GATE_NAMES, &gate, err, cap) ||
        kind_of(cJSON_GetObjectItemCaseSensitive(o, "qk_norm"), "qk_norm", QK_NORM_NAMES, &norm, err, cap) ||
        kind_of(cJSON_GetObjectItemCaseSensitive(o, "linear_kind"), "linear_kind", LINEAR_NAMES, &lin, err, cap))
        goto done;
    g->attn = (AttnKind)attn;
    g->attn_output_gate = gate;
    g->qk_norm = norm;
    g->linear_kind = lin;
    if (geo_real(o, "partial_rotary_factor", 0.0, &g->partial_rotary_factor, err, cap) ||
        geo_real(o, "rope_theta", 10000.0, &g->rope_theta, err, cap) ||
        geo_real(o, "rope_local_theta", 0.0, &g->rope_local_theta, err, cap))
        goto done;
    for (size_t i = 0; i < sizeof GEO_DOUBLES / sizeof GEO_DOUBLES[0]; i++) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, GEO_DOUBLES[i].key);
        if (!d) continue;
        if (!cJSON_IsNumber(d) || !(d->valuedouble > 0.0) || !isfinite(d->valuedouble)) {
            snprintf(err, cap, "geometry: '%s' must be a positive number", GEO_DOUBLES[i].key);
            goto done;
        }
        *(double *)((char *)g + GEO_DOUBLES[i].off) = d->valuedouble;
    }
    if (!g->dtype_bytes) g->dtype_bytes = 4;
    // Attention fields a model without them leaves out (format 2): every head its own K and V; a
    // head as wide as MLA's query-key head, or as a linear layer's value head.
    if (!cJSON_GetObjectItemCaseSensitive(o, "n_heads")) g->n_heads = g->linear_num_value_heads;
    if (!cJSON_GetObjectItemCaseSensitive(o, "n_kv_heads")) g->n_kv_heads = g->n_heads;
    if (!cJSON_GetObjectItemCaseSensitive(o, "head_dim"))
        g->head_dim = g->attn == ATTN_MLA ? g->qk_nope_head_dim + g->qk_rope_head_dim : g->linear_value_head_dim;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    if (cJSON_IsString(name)) snprintf(g->name, sizeof g->name, "%s", name->valuestring);
    if (g->n_layers < 1 || g->n_layers > GEOM_MAX_LAYERS) {
        snprintf(err, cap, "geometry: n_layers %d out of range [1, %d]", g->n_layers, GEOM_MAX_LAYERS);
        goto done;
    }
    const cJSON *kinds = cJSON_GetObjectItemCaseSensitive(o, "layer_kind");
    if (kinds) {
        if (!cJSON_IsArray(kinds) || cJSON_GetArraySize(kinds) != g->n_layers) {
            snprintf(err, cap, "geometry: 'layer_kind' must list %d layers", g->n_layers);
            goto done;
        }
        for (int l = 0; l < g->n_layers; l++) {
            int k;
            if (kind_of(cJSON_GetArrayItem(kinds, l), "layer_kind", LAYER_NAMES, &k, err, cap) || k > LAYER_COMPRESSED) {
                snprintf(err, cap, "geometry: bad layer_kind at layer %d (global|local|linear)", l);
                goto done;
            }
            g->layer_kind[l] = (unsigned char)k;
        }
    }
    static const struct { const char *key; int max; } lists[] = {{"compress_ratios", 65535}, {"indexer_types", INDEXER_NONE}};
    for (int k = 0; k < 2; k++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, lists[k].key);
        if (!arr) continue;
        if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != g->n_layers) {
            snprintf(err, cap, "geometry: '%s' must list %d layers", lists[k].key, g->n_layers);
            goto done;
        }
        for (int l = 0; l < g->n_layers; l++) {
            const cJSON *e = cJSON_GetArrayItem(arr, l);
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 ||
                e->valuedouble > lists[k].max) {
                snprintf(err, cap, "geometry: bad %s at layer %d", lists[k].key, l);
                goto done;
            }
            if (k == 0) g->compress_ratios[l] = (unsigned short)e->valueint;
            else g->indexer_types[l] = (unsigned char)e->valueint;
        }
    }
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(o, "mixers");
    if (!cJSON_IsArray(mx) || cJSON_GetArraySize(mx) != g->n_layers) {
        snprintf(err, cap, "geometry: 'mixers' must name the mixer of each of the %d layers", g->n_layers);
        goto done;
    }
    for (int l = 0; l < g->n_layers; l++) {
        const cJSON *s = cJSON_GetArrayItem(mx, l);
        if (!cJSON_IsString(s) || strlen(s->valuestring) >= 48) {
            snprintf(err, cap, "geometry: mixer of layer %d is not a name", l);
            goto done;
        }
        snprintf(names[l], 48, "%s", s->valuestring);
    }
    rc = 0;
done:
    cJSON_Delete(o);
    return rc;
}

// ---- weights files ------------------------------------------------------------------------------

void model_info_free(ModelInfo *info) {
    if (!info) return;
    free(info->task_config);
    free(info->vocab);
    free(info->curve);
    free(info->corpus);
    memset(info, 0, sizeof *info);
}

void model_save(const Model *m, const ModelInfo *info, const char *path) {
    StWriter *w = stw_new();
    for (int i = 0; i < m->n_tensors; i++) {
        const ModelTensor *t = &m->tensors[i];
        stw_add_f32(w, t->name, m->params + t->offset, t->ndim, t->shape);
    }
    const MixerOps *ops[GEOM_MAX_LAYERS];
    for (int l = 0; l < m->g.n_layers; l++) ops[l] = m->mixers[l].ops;
    char *geo = model_geometry_json(&m->g, ops);
    char buf[64];
    stw_meta(w, "format", MODEL_FORMAT);
    stw_meta(w, "geometry", geo);
    free(geo);
    if (info) {
        if (info->curve && info->n_curve > 0) {
            int64_t shape[2] = {2, info->n_curve};
            stw_add_f32(w, "meta.loss_curve", info->curve, 2, shape);
            stw_meta(w, "loss_curve", "tensor meta.loss_curve (2, n): row 0 optimizer step, row 1 training loss (mean since the previous point)");
        }
        if (info->corpus && info->n_corpus > 0) {
            int64_t shape[1] = {info->n_corpus};
            stw_add(w, "meta.corpus_heldout", ST_U8, info->corpus, 1, shape);
        }
        if (info->task[0]) stw_meta(w, "task", info->task);
        if (info->task_config) stw_meta(w, "task_config", info->task_config);
        if (info->vocab) stw_meta(w, "vocab", info->vocab);
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)info->seed);
        stw_meta(w, "seed", buf);
        snprintf(buf, sizeof buf, "%d", info->steps);
        stw_meta(w, "steps", buf);
        if (!isnan(info->loss)) { snprintf(buf, sizeof buf, "%.6f", info->loss); stw_meta(w, "loss", buf); }
        if (!isnan(info->accuracy)) { snprintf(buf, sizeof buf, "%.6f", info->accuracy); stw_meta(w, "accuracy", buf); }
    }
    stw_write(w, path);
    stw_free(w);
}

// Index of the first NaN or inf among x[0..n), or n when every value is finite.
static size_t first_non_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return n;
}

// A metadata number: the whole string a decimal number (no blanks, no sign for seed and steps) in
// [lo, hi]. 0, or -1 with a message naming the key.
static int meta_number(const SafeTensors *st, const char *key, int integer, double lo, double hi, double *out,
                       char *err, size_t cap) {
    const char *s = st_meta(st, key);
    if (!s) return 0;
    char *end;
    errno = 0;
    double v = integer ? (double)strtoull(s, &end, 10) : strtod(s, &end);
    int digits_first = (s[0] >= '0' && s[0] <= '9') || (!integer && s[0] == '-' && s[1] >= '0' && s[1] <= '9');
    if (!digits_first || *end || errno || !(v >= lo && v <= hi)) {
        if (integer) snprintf(err, cap, "%s: metadata '%s' must be a non-negative integer, got '%.40s'", st->path, key, s);
        else snprintf(err, cap, "%s: metadata '%s' must be a number in [%g, %g], got '%.40s'", st->path, key, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static char *dup_str(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = mallocCheck(n);
    memcpy(d, s, n);
    return d;
}

// Fills info from the file's metadata; -1 with a message on a malformed value.
static int load_info(const SafeTensors *st, ModelInfo *info, int vocab_size, char *err, size_t cap) {
    memset(info, 0, sizeof *info);
    info->loss = info->accuracy = NAN;
    const char *s;
    if ((s = st_meta(st, "task"))) snprintf(info->task, sizeof info->task, "%s", s);
    info->task_config = dup_str(st_meta(st, "task_config"));
    if ((s = st_meta(st, "vocab"))) {
        cJSON *a = cJSON_Parse(s);
        int ok = cJSON_IsArray(a) && cJSON_GetArraySize(a) == vocab_size;
        const cJSON *item;
        if (ok) cJSON_ArrayForEach(item, a) ok &= cJSON_IsString(item);
        cJSON_Delete(a);
        if (!ok) {
            snprintf(err, cap, "%s: metadata 'vocab' must be a JSON array of %d token names", st->path, vocab_size);
            return -1;
        }
        info->vocab = dup_str(s);
    }
    double v;
    if (meta_number(st, "seed", 1, 0, 18446744073709551615.0, &v, err, cap)) return -1;
    if ((s = st_meta(st, "seed"))) info->seed = strtoull(s, NULL, 10);   // exact, not through a double
    if (meta_number(st, "steps", 1, 0, 2147483647.0, &v, err, cap)) return -1;
    if (st_meta(st, "steps")) info->steps = (int)v;
    if (meta_number(st, "loss", 0, 0, HUGE_VAL, &v, err, cap)) return -1;
    if (st_meta(st, "loss")) info->loss = v;
    if (meta_number(st, "accuracy", 0, 0, 1, &v, err, cap)) return -1;
    if (st_meta(st, "accuracy")) info->accuracy = v;
    const StTensor *txt = st_find(st, "meta.corpus_heldout");
    if (txt) {
        if (txt->dtype != ST_U8 || txt->ndim != 1) {
            snprintf(err, cap, "%s: tensor 'meta.corpus_heldout' must be U8 of shape [n]", st->path);
            return -1;
        }
        info->n_corpus = (long)txt->shape[0];
        info->corpus = mallocCheck((size_t)(info->n_corpus > 0 ? info->n_corpus : 1));
        memcpy(info->corpus, txt->data, (size_t)info->n_corpus);
    }
    const StTensor *c = st_find(st, "meta.loss_curve");
    if (!c) c = st_find(st, "train.loss_curve");   // format 1's name
    if (c) {
        if (c->dtype != ST_F32 || c->ndim != 2 || c->shape[0] != 2) {
            snprintf(err, cap, "%s: tensor '%s' must be F32 of shape [2, n]", st->path, c->name);
            return -1;
        }
        size_t n = (size_t)c->shape[1];
        if (n > (size_t)INT_MAX / 2 || first_non_finite((const float *)c->data, 2 * n) < 2 * n) {
            snprintf(err, cap, "%s: tensor '%s' holds a non-finite value or too many points", st->path, c->name);
            return -1;
        }
        info->n_curve = (int)n;
        info->curve = mallocCheck(sizeof(float) * 2 * (n > 0 ? n : 1));
        memcpy(info->curve, c->data, sizeof(float) * 2 * n);
    }
    return 0;
}

Model *model_load(const char *path, MixerLookup lookup, ModelInfo *info, char *err, size_t cap) {
    SafeTensors st;
    if (info) {
        memset(info, 0, sizeof *info);
        info->loss = info->accuracy = NAN;
    }
    if (st_load(&st, path, err, cap) != 0) return NULL;
    Model *m = NULL;
    ModelGeometry g;
    char names[GEOM_MAX_LAYERS][48], why[512];
    const MixerOps *ops[GEOM_MAX_LAYERS];
    const char *fmt = st_meta(&st, "format");
    const char *geo = st_meta(&st, "geometry");
    if (!fmt || (strcmp(fmt, MODEL_FORMAT) != 0 && strcmp(fmt, MODEL_FORMAT_1) != 0)) {
        snprintf(err, cap, "%s: metadata 'format' is %s%s%s, expected '%s' or '%s' (not a weights file of this project?)",
                 path, fmt ? "'" : "", fmt ? fmt : "missing", fmt ? "'" : "", MODEL_FORMAT, MODEL_FORMAT_1);
        goto fail;
    }
    if (!geo) { snprintf(err, cap, "%s: metadata 'geometry' missing", path); goto fail; }
    if (model_geometry_from_json(&g, names, geo, why, sizeof why) != 0) {
        snprintf(err, cap, "%s: %s", path, why);
        goto fail;
    }
    if (model_check_geometry(&g, why, sizeof why) != 0) {
        snprintf(err, cap, "%s: geometry: %s", path, why);
        goto fail;
    }
    for (int l = 0; l < g.n_layers; l++) {
        ops[l] = lookup(names[l]);
        if (!ops[l]) { snprintf(err, cap, "%s: unknown mixer '%s' at layer %d", path, names[l], l); goto fail; }
    }
    if (mixer_check(&g, ops, why, sizeof why) != 0) {
        snprintf(err, cap, "%s: geometry: %s", path, why);
        goto fail;
    }
    for (int l = 0; l < g.n_layers; l++)
        if (geometry_kv_source(&g, l) != l && !(ops[l]->kv_sharing && ops[geometry_kv_source(&g, l)]->kv_sharing)) {
            snprintf(err, cap, "%s: geometry: layer %d shares K/V across layers, which mixer '%s' cannot do", path, l,
                     names[l]);
            goto fail;
        }
    // The tensors must hold every parameter: refuse before allocating for a geometry the file can't back.
    {
        Model *lay = callocCheck(1, sizeof *lay);
        lay->g = g;
        for (int l = 0; l < g.n_layers; l++) lay->mixers[l] = (Mixer){.ops = ops[l], .g = &lay->g, .layer = l};
        size_t n = model_layout_params(lay);
        free(lay);
        if (n * sizeof(float) > st.file_size) {
            snprintf(err, cap, "%s: geometry needs %zu parameters but the file has only %zu bytes", path, n, st.file_size);
            goto fail;
        }
    }
    m = model_create(&g, ops);
    for (int i = 0; i < m->n_tensors; i++) {
        const ModelTensor *t = &m->tensors[i];
        if (!st_find(&st, t->name)) { snprintf(err, cap, "%s: tensor '%s' missing", path, t->name); goto fail; }
        const float *src = st_get_f32(&st, t->name, t->ndim, t->shape, err, cap);
        if (!src) goto fail;
        // A NaN or inf weight poisons every output it touches (and NaN compares false, so checks
        // downstream would pass it): refuse it here, naming where it is.
        size_t bad = first_non_finite(src, t->size);
        if (bad < t->size) {
            snprintf(err, cap, "%s: tensor '%s' holds a non-finite value (%g) at element %zu", path, t->name,
                     (double)src[bad], bad);
            goto fail;
        }
        memcpy(m->params + t->offset, src, sizeof(float) * t->size);
    }
    for (int i = 0; i < st.n_tensors; i++) {
        const char *n = st.tensors[i].name;
        if (strncmp(n, "train.", 6) != 0 && strncmp(n, "meta.", 5) != 0 && !model_find_tensor(m, n)) {
            snprintf(err, cap, "%s: unexpected tensor '%s' (not part of this geometry)", path, n);
            goto fail;
        }
    }
    if (info && load_info(&st, info, g.vocab_size, err, cap) != 0) goto fail;
    st_free(&st);
    return m;
fail:
    if (info) model_info_free(info);
    model_free(m);
    st_free(&st);
    return NULL;
}
