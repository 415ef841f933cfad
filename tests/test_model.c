// test_model.c: the tiny model (common/model.c) against finite differences, its own cached decode,
// PyTorch golden values (tests/reference/golden_model.py), the shipped weights' recorded accuracy, and
// every kind of malformed weights file; ./infer and ./train reject bad flags with one line.
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "check.h"
#include "helpers.h"
#include "model.h"
#include "registry.h"
#include "rng.h"
#include "safetensors.h"
#include "tasks.h"
#include "train.h"

// The machine's 2 cores are shared with the other tests (criterion -j2): these tests are small, and
// OpenMP regions over tiny work only wait on each other there, so every suite here runs on one thread.
static void one_thread(void) {
    omp_set_num_threads(1);
    setenv("OMP_NUM_THREADS", "1", 1);   // for the tools the tests run
}
TestSuite(model, .init = one_thread);
TestSuite(model_weights, .init = one_thread);
TestSuite(model_golden, .init = one_thread);
TestSuite(model_shipped, .init = one_thread);
TestSuite(model_tools, .init = one_thread);

// ---- a stub mixer: causal running mean, then a linear map ---------------------------------------
// out_i = W mean_{j<=i} x_j with W (d,d). Simple enough to be obviously right, so the model's own
// plumbing (norms, residuals, MLP, head, loss, embedding) is tested apart from the attention code.
typedef struct MixerCache { int n, d; float *sum; } StubCache;

static int stub_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    (void)layer;
    cr_assert(cap >= 1);
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "w");
    out->ndim = 2;
    out->shape[0] = out->shape[1] = g->d_model;
    return 1;
}
static void stub_init(const Mixer *m, float *p, Rng *rng) {
    rng_fill_normal(rng, p, (long)m->g->d_model * m->g->d_model, 0.1f);
}
static size_t stub_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    (void)layer;
    return (size_t)B * T * g->d_model;
}
static void stub_forward(const Mixer *m, float *out, float *act, const float *x, const float *p, int B, int T) {
    int d = m->g->d_model;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) {
            float *mean = act + ((size_t)b * T + i) * d;
            for (int c = 0; c < d; c++) {
                float s = 0.0f;
                for (int j = 0; j <= i; j++) s += x[((size_t)b * T + j) * d + c];
                mean[c] = s / (float)(i + 1);
            }
            for (int r = 0; r < d; r++) {
                float s = 0.0f;
                for (int c = 0; c < d; c++) s += p[r * d + c] * mean[c];
                out[((size_t)b * T + i) * d + r] = s;
            }
        }
}
static void stub_backward(const Mixer *m, float *dx, float *dp, const float *dout, const float *act,
                          const float *x, const float *p, int B, int T) {
    (void)x;
    int d = m->g->d_model;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) {
            const float *g = dout + ((size_t)b * T + i) * d, *mean = act + ((size_t)b * T + i) * d;
            for (int r = 0; r < d; r++)
                for (int c = 0; c < d; c++) dp[r * d + c] += g[r] * mean[c];
            for (int c = 0; c < d; c++) {
                float dm = 0.0f;
                for (int r = 0; r < d; r++) dm += g[r] * p[r * d + c];
                for (int j = 0; j <= i; j++) dx[((size_t)b * T + j) * d + c] += dm / (float)(i + 1);
            }
        }
}
static MixerCache *stub_cache_new(const Mixer *m, int max_T) {
    (void)max_T;
    StubCache *c = calloc(1, sizeof *c);
    c->d = m->g->d_model;
    c->sum = calloc((size_t)c->d, sizeof(float));
    return c;
}
static void stub_cache_free(MixerCache *c) { free(c->sum); free(c); }
static size_t stub_cache_bytes(const MixerCache *c) { return sizeof(float) * (size_t)c->d; }
static void stub_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *p) {
    int d = m->g->d_model;
    c->n++;
    float mean[64];
    for (int k = 0; k < d; k++) {
        c->sum[k] += x[k];
        mean[k] = c->sum[k] / (float)c->n;
    }
    for (int r = 0; r < d; r++) {
        float s = 0.0f;
        for (int k = 0; k < d; k++) s += p[r * d + k] * mean[k];
        out[r] = s;
    }
}
static int stub_n_mix_heads(const ModelGeometry *g, int layer) { (void)g; (void)layer; return 1; }
static void stub_mixing_matrix(const Mixer *m, float *A, const float *act, const float *p, int T) {
    (void)m; (void)act; (void)p;
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) A[i * T + j] = j <= i ? 1.0f / (float)(i + 1) : 0.0f;
}
static int stub_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    (void)g; (void)layer; (void)why; (void)cap;
    return 1;
}
static const MixerOps stub_mixer = {
    .name = "stub", .validate = stub_validate, .param_tensors = stub_param_tensors, .init = stub_init, .act_floats = stub_act_floats,
    .forward = stub_forward, .backward = stub_backward, .cache_new = stub_cache_new,
    .cache_free = stub_cache_free, .cache_bytes = stub_cache_bytes, .decode = stub_decode,
    .n_mix_heads = stub_n_mix_heads, .mixing_matrix = stub_mixing_matrix,
};

static const MixerOps *test_lookup(const char *name) {
    if (!strcmp(name, "stub")) return &stub_mixer;
    return mixer_by_name(name);
}

// ---- helpers ------------------------------------------------------------------------------------

// A tiny geometry: V 11, d 8, 2 layers, 2 query heads sharing 1 KV head (head_dim 4), d_ff 12.
static void tiny_geom(ModelGeometry *g) {
    geometry_init(g, "test tiny", 2, 8, 2, 1);
    g->vocab_size = 11;
    g->d_ff = 12;
    g->max_seq_len = 16;
    g->dtype_bytes = 4;
}

// Layer 0 `first`, layer 1 `second`: a hybrid, so per-layer mixers are exercised too.
static Model *tiny_model(const MixerOps *first, const MixerOps *second, uint64_t seed) {
    ModelGeometry g;
    tiny_geom(&g);
    const MixerOps *ops[2] = {first, second};
    Model *m = model_new(&g, ops, seed);
    // far from the N(0, 0.02) init, so every path carries a gradient large enough to measure
    Rng r;
    rng_seed(&r, seed + 99);
    for (int i = 0; i < m->n_tensors; i++) {
        const ModelTensor *t = &m->tensors[i];
        for (size_t k = 0; k < t->size; k++)
            m->params[t->offset + k] = (t->ndim == 1 ? 1.0f : 0.0f) + rng_normal(&r) * (t->ndim == 1 ? 0.2f : 0.4f);
    }
    return m;
}

static void random_batch(int *tok, int *tgt, int N, int V, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int n = 0; n < N; n++) {
        tok[n] = (int)rng_below(&r, (uint32_t)V);
        tgt[n] = n % 3 == 1 ? -1 : (int)rng_below(&r, (uint32_t)V);   // some positions not scored
    }
}

// ---- gradients against finite differences --------------------------------------------------------

// For each tensor: the directional derivative along a random unit direction u, analytic (grad . u)
// against central differences of the loss. A missing or wrong term in any backward shows up as a
// relative error far above the float32 noise (~1e-3).
static void gradcheck(const MixerOps *first, const MixerOps *second) {
    enum { B = 2, T = 6 };
    Model *m = tiny_model(first, second, 5);
    int tok[B * T], tgt[B * T];
    random_batch(tok, tgt, B * T, m->g.vocab_size, 17);
    model_forward(m, tok, tgt, B, T);
    model_zero_grad(m);
    model_backward(m);
    float *grad = malloc(sizeof(float) * m->n_params);
    memcpy(grad, m->grads, sizeof(float) * m->n_params);
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < m->n_tensors; i++) {
        const ModelTensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        float *u = malloc(sizeof(float) * t->size), *p0 = malloc(sizeof(float) * t->size);
        memcpy(p0, p, sizeof(float) * t->size);
        double norm = 0.0, ana = 0.0;
        for (size_t k = 0; k < t->size; k++) { u[k] = rng_normal(&r); norm += (double)u[k] * u[k]; }
        for (size_t k = 0; k < t->size; k++) { u[k] /= (float)sqrt(norm); ana += (double)grad[t->offset + k] * u[k]; }
        const float eps = 1e-2f;
        for (size_t k = 0; k < t->size; k++) p[k] = p0[k] + eps * u[k];
        model_forward(m, tok, tgt, B, T);
        double lp = m->loss;
        for (size_t k = 0; k < t->size; k++) p[k] = p0[k] - eps * u[k];
        model_forward(m, tok, tgt, B, T);
        double lm = m->loss;
        memcpy(p, p0, sizeof(float) * t->size);
        double num = (lp - lm) / (2.0 * eps);
        double err = fabs(ana - num) / fmax(fmax(fabs(ana), fabs(num)), 1e-2);
        cr_expect(err < 2e-2, "%s/%s: tensor %s: analytic %.6g vs numeric %.6g (rel err %.3g)",
                  first->name, second->name, t->name, ana, num, err);
        cr_expect(fabs(ana) > 1e-4 || !strcmp(t->name, "tok_emb"),
                  "tensor %s has a vanishing gradient (%g): the check would prove nothing", t->name, ana);
        free(u);
        free(p0);
    }
    free(grad);
    model_free(m);
}

Test(model, gradcheck_stub_mixer) { gradcheck(&stub_mixer, &stub_mixer); }
Test(model, gradcheck_gqa_and_hybrid) { gradcheck(&gqa_mixer, &stub_mixer); }
Test(model, gradcheck_gqa_two_layers) { gradcheck(&gqa_mixer, &gqa_mixer); }

// An unscored position must not change the loss or the gradient; scored ones average.
Test(model, loss_ignores_minus_one_targets) {
    enum { T = 6 };
    Model *m = tiny_model(&stub_mixer, &stub_mixer, 2);
    int tok[T] = {1, 2, 3, 4, 5, 6}, all[T] = {2, 3, 4, 5, 6, 7}, some[T] = {-1, 3, -1, 5, -1, -1};
    model_forward(m, tok, all, 1, T);
    // the per-position losses, from the probabilities
    double l[T];
    for (int i = 0; i < T; i++) l[i] = -log((double)m->probs[i * m->g.vocab_size + all[i]]);
    cr_expect(fabs(m->loss - (l[0] + l[1] + l[2] + l[3] + l[4] + l[5]) / 6) < 1e-5, "mean over all 6");
    model_forward(m, tok, some, 1, T);
    cr_expect_eq(m->n_scored, 2);
    cr_expect(fabs(m->loss - (l[1] + l[3]) / 2) < 1e-5, "mean over the 2 scored: %f vs %f", m->loss, (l[1] + l[3]) / 2);
    model_free(m);
}

// ---- decode and batching ------------------------------------------------------------------------

static void decode_matches(const MixerOps *first, const MixerOps *second) {
    enum { T = 12 };
    Model *m = tiny_model(first, second, 8);
    int tok[T], tgt[T];
    random_batch(tok, tgt, T, m->g.vocab_size, 4);
    model_forward(m, tok, NULL, 1, T);
    int V = m->g.vocab_size;
    ModelCache *c = model_cache_new(m, T);
    float logits[64];
    double worst = 0.0;
    for (int t = 0; t < T; t++) {
        model_decode(c, logits, tok[t]);
        for (int v = 0; v < V; v++) worst = test_worst(worst, fabs(logits[v] - m->logits[t * V + v]));
    }
    cr_expect(worst < 1e-5, "%s/%s: cached decode logits differ from the full forward by %g", first->name,
              second->name, worst);
    cr_expect_eq(c->pos, T);
    model_cache_free(c);
    model_free(m);
}

Test(model, decode_equals_forward_gqa) { decode_matches(&gqa_mixer, &gqa_mixer); }
Test(model, decode_equals_forward_hybrid) { decode_matches(&stub_mixer, &gqa_mixer); }

Test(model, batch_rows_are_independent) {
    enum { B = 3, T = 7 };
    Model *m = tiny_model(&gqa_mixer, &gqa_mixer, 6);
    int tok[B * T], tgt[B * T];
    random_batch(tok, tgt, B * T, m->g.vocab_size, 9);
    int V = m->g.vocab_size;
    model_forward(m, tok, NULL, B, T);
    float *all = malloc(sizeof(float) * B * T * V);
    memcpy(all, m->logits, sizeof(float) * B * T * V);
    for (int b = 0; b < B; b++) {
        model_forward(m, tok + b * T, NULL, 1, T);
        double worst = 0.0;
        for (int k = 0; k < T * V; k++) worst = test_worst(worst, fabs(m->logits[k] - all[b * T * V + k]));
        cr_expect(worst < 1e-6, "row %d of a batch differs from the same sequence alone by %g", b, worst);
    }
    free(all);
    model_free(m);
}

// Shapes in any order reuse or regrow the activation arena; results never depend on what ran before.
Test(model, arena_reuse_across_shapes) {
    static const int shapes[4][2] = {{1, 16}, {16, 1}, {2, 8}, {5, 3}};
    Model *m = tiny_model(&gqa_mixer, &stub_mixer, 3);
    int tok[16], tgt[16];
    random_batch(tok, tgt, 16, m->g.vocab_size, 1);
    for (int s = 0; s < 4; s++) {
        int B = shapes[s][0], T = shapes[s][1], V = m->g.vocab_size;
        Model *fresh = tiny_model(&gqa_mixer, &stub_mixer, 3);
        model_forward(fresh, tok, tgt, B, T);
        model_forward(m, tok, tgt, B, T);
        cr_expect(memcmp(m->logits, fresh->logits, sizeof(float) * B * T * V) == 0, "(B,T) = (%d,%d) differs", B, T);
        cr_expect_eq(m->loss, fresh->loss);
        model_free(fresh);
    }
    model_free(m);
}

Test(model, mixing_matrix_is_causal_and_normalised) {
    enum { T = 9 };
    Model *m = tiny_model(&gqa_mixer, &stub_mixer, 4);
    int tok[T], tgt[T];
    random_batch(tok, tgt, T, m->g.vocab_size, 2);
    model_forward(m, tok, NULL, 1, T);
    cr_assert_eq(model_n_mix_heads(m, 0), 2);
    cr_assert_eq(model_n_mix_heads(m, 1), 1);
    float A[2 * T * T];
    model_mixing_matrix(m, 0, A);
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < T; i++) {
            double s = 0.0;
            for (int j = 0; j < T; j++) {
                float a = A[(h * T + i) * T + j];
                if (j > i) cr_expect_eq(a, 0.0f, "future key %d of query %d has weight %g", j, i, a);
                s += a;
            }
            cr_expect(fabs(s - 1.0) < 1e-5, "head %d row %d sums to %f", h, i, s);
        }
    model_free(m);
}

// ---- weights files ------------------------------------------------------------------------------

static char g_dir[256];

static const char *tmp_path(char *buf, size_t cap, const char *name) {
    if (!g_dir[0]) test_tmpdir(g_dir, sizeof g_dir);
    snprintf(buf, cap, "%s/%s", g_dir, name);
    return buf;
}

// A small saved model with full metadata; returns the model (caller frees).
static Model *saved_model(const char *path) {
    Model *m = tiny_model(&gqa_mixer, &stub_mixer, 12);
    ModelInfo info = {.seed = 12, .steps = 34, .loss = 0.5, .accuracy = 0.75};
    snprintf(info.task, sizeof info.task, "recall");
    info.task_config = strdup("{\"task\":\"recall\"}");
    info.vocab = strdup("[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\"]");
    float curve[6] = {1, 2, 3, 2.5f, 2.0f, 1.5f};
    info.curve = malloc(sizeof curve);
    memcpy(info.curve, curve, sizeof curve);
    info.n_curve = 3;
    model_save(m, &info, path);
    model_info_free(&info);
    return m;
}

Test(model_weights, save_load_roundtrip) {
    char path[512], err[512];
    Model *m = saved_model(tmp_path(path, sizeof path, "rt.safetensors"));
    ModelInfo info;
    Model *l = model_load(path, test_lookup, &info, err, sizeof err);
    cr_assert(l, "load failed: %s", err);
    cr_expect_eq(l->n_params, m->n_params);
    cr_expect(memcmp(l->params, m->params, sizeof(float) * m->n_params) == 0, "parameters differ after a round trip");
    cr_expect_eq(l->mixers[0].ops, &gqa_mixer);
    cr_expect_eq(l->mixers[1].ops, &stub_mixer);
    cr_expect_eq(l->g.n_kv_heads, 1);
    cr_expect_eq(l->g.d_ff, 12);
    cr_expect_str_eq(info.task, "recall");
    cr_expect_eq(info.seed, 12);
    cr_expect_eq(info.steps, 34);
    cr_expect(fabs(info.accuracy - 0.75) < 1e-9 && fabs(info.loss - 0.5) < 1e-9);
    cr_assert_eq(info.n_curve, 3);
    cr_expect(info.curve[2] == 3.0f && info.curve[5] == 1.5f);
    model_info_free(&info);
    model_free(l);
    model_free(m);
}

// Rewrites the valid file at src into dst with one change: a tensor dropped or reshaped, metadata
// replaced. Uses the safetensors writer, so only the model loader's checks are under test.
static void rewrite(const char *src, const char *dst, const char *drop, const char *reshape,
                    const char *meta_key, const char *meta_value, const char *extra_tensor) {
    SafeTensors st;
    char err[512];
    cr_assert_eq(st_load(&st, src, err, sizeof err), 0, "%s", err);
    StWriter *w = stw_new();
    for (int i = 0; i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (reshape && !strcmp(t->name, reshape)) { int64_t s = shape[0]; shape[0] = shape[1]; shape[1] = s; }
        stw_add(w, t->name, t->dtype, t->data, t->ndim, shape);
    }
    if (extra_tensor) {
        float z[2] = {0, 0};
        int64_t s[1] = {2};
        stw_add_f32(w, extra_tensor, z, 1, s);
    }
    for (int i = 0; i < st.n_meta; i++) {
        if (meta_key && !strcmp(st.meta_keys[i], meta_key)) continue;
        stw_meta(w, st.meta_keys[i], st.meta_values[i]);
    }
    if (meta_key && meta_value) stw_meta(w, meta_key, meta_value);
    stw_write(w, dst);
    stw_free(w);
    st_free(&st);
}

// model_load must fail with one line that names the file and contains `needle`.
static void expect_load_error(const char *path, const char *needle) {
    char err[1024] = "";
    ModelInfo info;
    Model *m = model_load(path, test_lookup, &info, err, sizeof err);
    cr_expect(m == NULL, "%s: loaded, expected an error containing '%s'", path, needle);
    if (m) { model_free(m); model_info_free(&info); return; }
    cr_expect(strstr(err, path) != NULL, "message does not name the file: %s", err);
    cr_expect(strstr(err, needle) != NULL, "message lacks '%s': %s", needle, err);
    cr_expect(strchr(err, '\n') == NULL, "message is not one line: %s", err);
}

Test(model_weights, malformed_files_give_clear_errors) {
    char good[512], bad[512];
    model_free(saved_model(tmp_path(good, sizeof good, "good.safetensors")));
    tmp_path(bad, sizeof bad, "bad.safetensors");

    rewrite(good, bad, "lm_head", NULL, NULL, NULL, NULL);
    expect_load_error(bad, "tensor 'lm_head' missing");
    rewrite(good, bad, "layers.1.mixer.w", NULL, NULL, NULL, NULL);
    expect_load_error(bad, "tensor 'layers.1.mixer.w' missing");
    rewrite(good, bad, NULL, "layers.0.mlp.w_up", NULL, NULL, NULL);
    expect_load_error(bad, "layers.0.mlp.w_up");
    expect_load_error(bad, "shape");
    rewrite(good, bad, NULL, NULL, NULL, NULL, "bogus");
    expect_load_error(bad, "unexpected tensor 'bogus'");
    rewrite(good, bad, NULL, NULL, "geometry", NULL, NULL);
    expect_load_error(bad, "metadata 'geometry' missing");
    rewrite(good, bad, NULL, NULL, "geometry", "{\"n_layers\": 2", NULL);
    expect_load_error(bad, "geometry is not a JSON object");
    rewrite(good, bad, NULL, NULL, "format", "something-else/3", NULL);
    expect_load_error(bad, "metadata 'format'");
    rewrite(good, bad, NULL, NULL, "vocab", "[\"a\"]", NULL);
    expect_load_error(bad, "vocab");
    rewrite(good, bad, NULL, NULL, "vocab", "[1,2,3,4,5,6,7,8,9,10,11]", NULL);
    expect_load_error(bad, "token names");

    // geometry edits: take the real JSON and break one field
    SafeTensors st;
    char err[512];
    cr_assert_eq(st_load(&st, good, err, sizeof err), 0, "%s", err);
    char geo[4096];
    snprintf(geo, sizeof geo, "%s", st_meta(&st, "geometry"));
    st_free(&st);
    static const struct { const char *from, *to, *needle; } edits[] = {
        {"\"d_model\":8", "\"d_modelx\":8", "'d_model' missing"},
        {"\"n_kv_heads\":1", "\"n_kv_heads\":0", "'n_kv_heads' 0 out of range"},
        {"\"d_ff\":12", "\"d_ff\":1.5", "'d_ff' is not an integer"},
        {"\"d_ff\":12", "\"d_ff\":13", "layers.0.mlp.w_gate"},
        {"\"stub\"", "\"nosuch\"", "unknown mixer 'nosuch' at layer 1"},
        {"\"n_layers\":2", "\"n_layers\":3", "'layer_kind' must list 3 layers"},
        {"[\"gqa\",\"stub\"]", "[\"gqa\"]", "'mixers' must name"},
        {"\"vocab_size\":11", "\"vocab_size\":100000", "geometry needs"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char edited[4096];
        char *at = strstr(geo, edits[i].from);
        cr_assert(at, "geometry JSON lacks %s: %s", edits[i].from, geo);
        snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - geo), geo, edits[i].to, at + strlen(edits[i].from));
        rewrite(good, bad, NULL, NULL, "geometry", edited, NULL);
        expect_load_error(bad, edits[i].needle);
    }

    // a truncated file, an empty one, a missing one
    FILE *f = fopen(good, "rb");
    cr_assert(f);
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    f = fopen(bad, "wb");
    fwrite(buf, 1, n / 2, f);
    fclose(f);
    expect_load_error(bad, bad);
    f = fopen(bad, "wb");
    fclose(f);
    expect_load_error(bad, "too short");
    tmp_path(bad, sizeof bad, "does-not-exist.safetensors");
    expect_load_error(bad, "cannot open");
}

// ---- PyTorch golden values ----------------------------------------------------------------------

static void golden_case(const char *weights_rel, const char *golden_rel) {
    char wpath[1024], gpath[1024], err[512];
    snprintf(wpath, sizeof wpath, "%s/%s", test_root(), weights_rel);
    snprintf(gpath, sizeof gpath, "%s/%s", test_root(), golden_rel);
    Model *m = model_load(wpath, mixer_by_name, NULL, err, sizeof err);
    cr_assert(m, "%s (run `make weights`)", err);
    SafeTensors st;
    cr_assert_eq(st_load(&st, gpath, err, sizeof err), 0, "%s (run `make golden`)", err);
    const StTensor *tk = st_find(&st, "tokens"), *tg = st_find(&st, "targets");
    cr_assert(tk && tg && tk->dtype == ST_I32 && tk->ndim == 2, "golden file lacks I32 tokens (B,T)");
    int B = (int)tk->shape[0], T = (int)tk->shape[1], V = m->g.vocab_size;
    int *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    memcpy(tok, tk->data, sizeof(int) * B * T);
    memcpy(tgt, tg->data, sizeof(int) * B * T);
    model_forward(m, tok, tgt, B, T);
    model_zero_grad(m);
    model_backward(m);

    int64_t ls[3] = {B, T, V}, one[1] = {1};
    const float *logits = st_get_f32(&st, "logits", 3, ls, err, sizeof err);
    cr_assert(logits, "%s", err);
    double worst = 0.0;
    for (int k = 0; k < B * T * V; k++) worst = test_worst(worst, fabs(m->logits[k] - logits[k]));
    cr_expect(worst < 1e-4, "%s: logits differ from PyTorch by %g", weights_rel, worst);
    const float *loss = st_get_f32(&st, "loss", 1, one, err, sizeof err);
    cr_assert(loss, "%s", err);
    cr_expect(fabs(m->loss - loss[0]) < 1e-5, "%s: loss %.7f vs PyTorch %.7f", weights_rel, m->loss, loss[0]);
    // every parameter's gradient: max abs error relative to the tensor's largest gradient
    for (int i = 0; i < m->n_tensors; i++) {
        const ModelTensor *t = &m->tensors[i];
        char name[128];
        snprintf(name, sizeof name, "grad.%s", t->name);
        const float *ref = st_get_f32(&st, name, t->ndim, t->shape, err, sizeof err);
        cr_assert(ref, "%s", err);
        double scale = 0.0, diff = 0.0;
        for (size_t k = 0; k < t->size; k++) {
            scale = fmax(scale, fabs(ref[k]));
            diff = test_worst(diff, fabs(m->grads[t->offset + k] - ref[k]));
        }
        cr_expect(diff <= 1e-3 * scale + 1e-7, "%s: gradient of %s differs by %g (largest |grad| %g)",
                  weights_rel, t->name, diff, scale);
    }
    free(tok);
    free(tgt);
    st_free(&st);
    model_free(m);
}

Test(model_golden, pytorch_shipped_mha_recall) {
    golden_case("data/weights/ch03_recall.safetensors", "tests/golden/model_golden.safetensors");
}
Test(model_golden, pytorch_gqa) {
    golden_case("tests/golden/model_gqa.safetensors", "tests/golden/model_gqa_golden.safetensors");
}

// ---- the shipped weights ------------------------------------------------------------------------

// Loads a shipped model, rebuilds its task from the metadata and measures accuracy on fresh held-out
// samples (another seed than training's evaluation): it must match what the file records.
static void shipped_accuracy(const char *rel, double min_accuracy, int n_samples) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/%s", test_root(), rel);
    ModelInfo info;
    Model *m = model_load(path, mixer_by_name, &info, err, sizeof err);
    cr_assert(m, "%s (run `make weights`)", err);
    cr_assert(info.task_config && info.vocab && !isnan(info.accuracy), "%s: metadata incomplete", rel);
    Task task;
    cr_assert_eq(task_from_json(&task, info.task_config, err, sizeof err), 0, "%s", err);
    cr_expect_eq(task.vocab_size, m->g.vocab_size);
    double loss, acc;
    train_evaluate(m, &task, 424242, n_samples, &loss, &acc);
    cr_expect(fabs(acc - info.accuracy) < 0.03, "%s: held-out accuracy %.4f, file records %.4f", rel, acc, info.accuracy);
    cr_expect(acc >= min_accuracy, "%s: accuracy %.4f below %.2f", rel, acc, min_accuracy);
    if (info.steps > 0)
        cr_expect(info.n_curve > 10 && info.curve[info.n_curve - 1] == (float)info.steps, "%s: loss curve missing", rel);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    cr_expect(ftell(f) <= 1 << 20, "%s is %ld bytes, over 1 MiB", rel, ftell(f));
    fclose(f);
    task_free(&task);
    model_info_free(&info);
    model_free(m);
}

// Every weights file shipped in data/weights (trained or *_init) loads and measures what it records.
Test(model_shipped, every_file_matches_its_record) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/data/weights", test_root());
    DIR *d = opendir(dir);
    cr_assert(d, "%s missing (run `make weights`)", dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0) continue;
        char rel[600];
        snprintf(rel, sizeof rel, "data/weights/%s", e->d_name);
        shipped_accuracy(rel, 0.0, 128);
        n++;
    }
    closedir(d);
    cr_expect(n >= 6, "only %d weights files in %s", n, dir);
}

// Format 1 (the shipped files) read, written again as format 2 (kinds as names, no attention fields in a
// linear-only model, meta.loss_curve), read back: the same geometry, parameters, record and logits.
Test(model_shipped, every_file_survives_format_2) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/data/weights", test_root());
    DIR *d = opendir(dir);
    cr_assert(d, "%s missing (run `make weights`)", dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)); ) {
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0) continue;
        char path[1500], copy[600], err[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ModelInfo i1, i2;
        Model *m1 = model_load(path, mixer_by_name, &i1, err, sizeof err);
        cr_assert(m1, "%s", err);
        model_save(m1, &i1, tmp_path(copy, sizeof copy, "format2.safetensors"));
        Model *m2 = model_load(copy, mixer_by_name, &i2, err, sizeof err);
        cr_assert(m2, "%s rewritten: %s", e->d_name, err);
        SafeTensors st;
        cr_assert_eq(st_load(&st, copy, err, sizeof err), 0, "%s", err);
        cr_expect_str_eq(st_meta(&st, "format"), "attention-tiny-lm/2");
        const char *geo = st_meta(&st, "geometry");
        cr_expect(strstr(geo, "\"layer_kind\":[\"") != NULL, "%s: layer kinds not written as names: %s", e->d_name, geo);
        int linear_only = geometry_count(&m1->g, LAYER_LINEAR) == m1->g.n_layers;
        cr_expect(linear_only == (strstr(geo, "\"n_heads\"") == NULL), "%s: n_heads written iff the model has attention: %s",
                  e->d_name, geo);
        cr_expect(st_find(&st, "meta.loss_curve") && !st_find(&st, "train.loss_curve"), "%s: loss curve name", e->d_name);
        st_free(&st);
        cr_expect_eq(m2->n_params, m1->n_params);
        cr_expect(memcmp(m1->params, m2->params, sizeof(float) * m1->n_params) == 0, "%s: parameters differ", e->d_name);
        for (int l = 0; l < m1->g.n_layers; l++) cr_expect_eq(m1->mixers[l].ops, m2->mixers[l].ops);
        cr_expect_eq(i1.n_curve, i2.n_curve);
        cr_expect(i1.seed == i2.seed && i1.steps == i2.steps && fabs(i1.accuracy - i2.accuracy) < 1e-6);
        int T = m1->g.max_seq_len < 8 ? m1->g.max_seq_len : 8, tok[8];
        for (int t = 0; t < T; t++) tok[t] = (3 * t + 1) % m1->g.vocab_size;
        model_forward(m1, tok, NULL, 1, T);
        model_forward(m2, tok, NULL, 1, T);
        cr_expect(memcmp(m1->logits, m2->logits, sizeof(float) * (size_t)T * m1->g.vocab_size) == 0,
                  "%s: logits differ after the rewrite", e->d_name);
        model_info_free(&i1);
        model_info_free(&i2);
        model_free(m1);
        model_free(m2);
        n++;
    }
    closedir(d);
    cr_expect_geq(n, 6);
}

Test(model_shipped, ch02_recall) { shipped_accuracy("data/weights/ch02_recall.safetensors", 0.95, 256); }
Test(model_shipped, ch03_recall) { shipped_accuracy("data/weights/ch03_recall.safetensors", 0.95, 256); }
Test(model_shipped, ch03_induction) { shipped_accuracy("data/weights/ch03_induction.safetensors", 0.95, 256); }

// ---- the tools' flags ---------------------------------------------------------------------------

static void expect_one_line_exit2(const char *prog, const char *args, const char *needle) {
    char out[8192];
    int rc = test_run(out, sizeof out, prog, args);
    cr_expect_eq(rc, 2, "%s %s: exit %d, expected 2: %s", prog, args, rc, out);
    cr_expect_eq(test_count_lines(out), 1, "%s %s: expected one line: %s", prog, args, out);
    cr_expect(strstr(out, needle) != NULL, "%s %s: message lacks '%s': %s", prog, args, needle, out);
}

Test(model_tools, train_bad_flags) {
    expect_one_line_exit2("train", "--bogus", "unknown option '--bogus'");
    expect_one_line_exit2("train", "--steps 10", "missing --out");
    expect_one_line_exit2("train", "--mixer xyz --out /tmp/x.safetensors", "--mixer: unknown mixer 'xyz' (mha|gqa|mqa");
    expect_one_line_exit2("train", "--task poetry --out /tmp/x.safetensors", "--task");
    expect_one_line_exit2("train", "--steps -1 --out /tmp/x.safetensors", "--steps");
    expect_one_line_exit2("train", "--lr abc --out /tmp/x.safetensors", "--lr");
    expect_one_line_exit2("train", "--heads 3 --out /tmp/x.safetensors", "not divisible by --heads 3");
    expect_one_line_exit2("train", "--mixer gqa --heads 4 --kv-heads 3 --out /tmp/x.safetensors", "--kv-heads 3");
    expect_one_line_exit2("train", "--mixer mha --heads 4 --kv-heads 2 --out /tmp/x.safetensors", "--kv-heads 2");
    expect_one_line_exit2("train", "--corpus /etc/hostname --out /tmp/x.safetensors", "--corpus");
    expect_one_line_exit2("train", "--task corpus --corpus /nonexistent/file --out /tmp/x.safetensors", "/nonexistent/file");
    expect_one_line_exit2("train", "--pairs 12 --seq-len 20 --out /tmp/x.safetensors", "seq_len");
    expect_one_line_exit2("train", "--loss-plot x.jpg --out /tmp/x.safetensors", "--loss-plot");
    expect_one_line_exit2("train", "--pattern zz --out /tmp/x.safetensors", "--pattern: expected");
    expect_one_line_exit2("train", "--pattern 3 --out /tmp/x.safetensors", "need --window");
    expect_one_line_exit2("train", "--window 4 --out /tmp/x.safetensors", "--window: only with");
    expect_one_line_exit2("train", "--steps 0 --out /proc/attn-test/x.safetensors", "/proc/attn-test/x.safetensors");
    expect_one_line_exit2("train", "--steps 0 --out /tmp", "--out: '/tmp' is a folder");
    expect_one_line_exit2("train", "--steps 0 --out /tmp/x.safetensors --loss-plot /proc/attn-test/l.png", "/proc/attn-test/l.png");
}

Test(model_tools, infer_bad_input) {
    char path[512], args[1200];
    model_free(saved_model(tmp_path(path, sizeof path, "infer.safetensors")));
    expect_one_line_exit2("infer", "--bogus", "unknown option");
    expect_one_line_exit2("infer", "--tokens 1,2", "missing WEIGHTS");
    expect_one_line_exit2("infer", "/nonexistent.safetensors --tokens 1,2", "/nonexistent.safetensors");
    snprintf(args, sizeof args, "%s", "/etc/hostname --tokens 1,2");
    expect_one_line_exit2("infer", args, "/etc/hostname");
    // a weights file of the real registry (gqa only) is needed for the rest
    char real[900];
    snprintf(real, sizeof real, "%s/data/weights/ch03_recall.safetensors", test_root());
    snprintf(args, sizeof args, "%s --tokens 1,2,999", real);
    expect_one_line_exit2("infer", args, "999");
    snprintf(args, sizeof args, "%s --tokens 1,x,3", real);
    expect_one_line_exit2("infer", args, "--tokens");
    snprintf(args, sizeof args, "%s", real);
    expect_one_line_exit2("infer", args, "--tokens");
    snprintf(args, sizeof args, "%s --tokens 1,2 --out /proc/attn-test/x.safetensors", real);
    expect_one_line_exit2("infer", args, "/proc/attn-test/x.safetensors");
    // unknown mixer: the stub model is not in the registry
    snprintf(args, sizeof args, "%s --tokens 1,2", path);
    expect_one_line_exit2("infer", args, "unknown mixer 'stub'");
}
