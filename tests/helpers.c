// helpers.c: process, file, closeness and golden-value helpers for the tests.
#include "helpers.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"

const char *test_bindir(void) {
    const char *d = getenv("ATTN_BINDIR");
    return d && *d ? d : ".";
}

const char *test_root(void) {
    const char *d = getenv("ATTN_ROOT");
    return d && *d ? d : ".";
}

static int run_command(char *out, size_t cap, const char *cmd) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0;
    int c;
    while ((c = fgetc(p)) != EOF)
        if (n + 1 < cap) out[n++] = (char)c;
    if (cap) out[n] = '\0';
    int st = pclose(p);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

int test_run(char *out, size_t cap, const char *prog, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s/%s' %s 2>&1", test_root(), test_bindir(), prog, args);
    return run_command(out, cap, cmd);
}

int test_run_limited(char *out, size_t cap, const char *prog, const char *args, int seconds) {
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cd '%s' && timeout -k 5 %d '%s/%s' %s 2>&1", test_root(), seconds, test_bindir(), prog, args);
    return run_command(out, cap, cmd);
}

void test_expect_one_line_exit2(const char *prog, const char *args, const char *needle) {
    char out[8192];
    int rc = test_run(out, sizeof out, prog, args);
    cr_expect_eq(rc, 2, "%s %s: exit %d, expected 2: %s", prog, args, rc, out);
    cr_expect_eq(test_count_lines(out), 1, "%s %s: expected one line: %s", prog, args, out);
    cr_expect(strstr(out, needle) != NULL, "%s %s: message lacks '%s': %s", prog, args, needle, out);
}

int test_count_lines(const char *s) {
    int n = 0;
    for (const char *p = s; *p; p++)
        if (*p == '\n') n++;
    size_t len = strlen(s);
    if (len && s[len - 1] != '\n') n++;
    return n;
}

// Under ATTN_TMP when set (make test makes one folder per run and removes it afterwards), else /tmp.
const char *test_tmpdir(char *buf, size_t cap) {
    const char *root = getenv("ATTN_TMP");
    snprintf(buf, cap, "%s/attn-test-XXXXXX", root && *root ? root : "/tmp");
    if (!mkdtemp(buf)) buf[0] = '\0';
    return buf;
}

int test_has_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) found = 1;
    closedir(d);
    return found;
}

int test_count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

double test_mixer_loss(const Mixer *m, float *out, const float *x, const float *params, const float *R, int B, int T) {
    float *act = mallocCheck(sizeof(float) * m->ops->act_floats(m->g, m->layer, B, T));
    m->ops->forward(m, out, act, x, params, B, T);
    free(act);
    double l = 0;
    for (int i = 0; i < B * T * m->g->d_model; i++) l += (double)out[i] * R[i];
    return l;
}

typedef struct {
    const Mixer *m;
    float *out;
    const float *x, *params, *R;
    int B, T;
} MixerLoss;

static double mixer_loss(const void *ctx) {
    const MixerLoss *c = ctx;
    return test_mixer_loss(c->m, c->out, c->x, c->params, c->R, c->B, c->T);
}

double test_mixer_fd_rel_error(const Mixer *m, float *v, const float *ana, size_t n, float *out, const float *x,
                               const float *params, const float *R, int B, int T) {
    MixerLoss c = {m, out, x, params, R, B, T};
    return test_fd_rel_error_fn(mixer_loss, &c, v, ana, n, 1e-2f);
}

double test_fd_rel_error_fn(double (*loss)(const void *ctx), const void *ctx, float *v, const float *ana, size_t n,
                            float h) {
    double num2 = 0, den2 = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = v[i];
        v[i] = keep + h;
        double lp = loss(ctx);
        v[i] = keep - h;
        double lm = loss(ctx);
        v[i] = keep;
        double num = (lp - lm) / ((double)(keep + h) - (double)(keep - h));
        num2 += (num - ana[i]) * (num - ana[i]);
        den2 += (double)ana[i] * ana[i];
    }
    return sqrt(num2 / (den2 > 0 ? den2 : 1e-30));
}

void test_model_gradcheck(Model *m, const int *tok, const int *tgt, int B, int T, const char *filter, uint64_t seed) {
    model_forward(m, tok, tgt, B, T);
    model_zero_grad(m);
    model_backward(m);
    float *grad = mallocCheck(sizeof(float) * m->n_params);
    memcpy(grad, m->grads, sizeof(float) * m->n_params);
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        const ModelTensor *t = &m->tensors[i];
        if (filter && !strstr(t->name, filter)) continue;
        float *p = m->params + t->offset;
        float *u = mallocCheck(sizeof(float) * t->size), *p0 = mallocCheck(sizeof(float) * t->size);
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
        cr_expect(err < 2e-2, "%s: tensor %s: analytic %.6g vs numeric %.6g (rel err %.3g)", m->g.name, t->name, ana, num,
                  err);
        cr_expect(fabs(ana) > 1e-4 || !strcmp(t->name, "tok_emb"),
                  "tensor %s has a vanishing gradient (%g): the check would prove nothing", t->name, ana);
        free(u);
        free(p0);
    }
    free(grad);
}

float *test_randn(Rng *r, size_t n, float std) {
    float *x = mallocCheck(n * sizeof(float));
    rng_fill_normal(r, x, (long)n, std);
    return x;
}

size_t test_tensor_size(const ParamTensor *t) {
    size_t s = 1;
    for (int j = 0; j < t->ndim; j++) s *= (size_t)t->shape[j];
    return s;
}

const ParamTensor *test_find_param(const ParamTensor *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    cr_assert_fail("no parameter '%s'", name);
    return NULL;
}

double test_worst(double worst, double d) {
    if (isnan(worst)) return worst;
    return d <= worst ? worst : d;
}

double test_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-30));
}

void test_assert_close(const char *what, const float *got, const float *want, size_t n, float tol) {
    for (size_t i = 0; i < n; i++)
        cr_assert(fabsf(got[i] - want[i]) <= tol * fmaxf(1.0f, fabsf(want[i])), "%s[%zu]: got %.9g want %.9g", what,
                  i, (double)got[i], (double)want[i]);
}

void test_assert_close_scaled(const char *what, const float *got, const float *want, size_t n, float tol) {
    float scale = 1.0f;
    for (size_t i = 0; i < n; i++) scale = fmaxf(scale, fabsf(want[i]));
    for (size_t i = 0; i < n; i++)
        cr_assert(fabsf(got[i] - want[i]) <= tol * scale, "%s[%zu]: got %.9g want %.9g (scale %.3g)", what, i,
                  (double)got[i], (double)want[i], (double)scale);
}

void test_linear_geom(ModelGeometry *g, const char *name, LinearKind kind, int d, int Hk, int Hv, int dk, int dv,
                      int K) {
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name);
    g->n_layers = 1;
    g->d_model = d;
    g->n_heads = Hv;
    g->n_kv_heads = Hv;
    g->head_dim = dv;
    g->vocab_size = 16;
    g->d_ff = 4 * d;
    g->max_seq_len = 64;
    g->layer_kind[0] = LAYER_LINEAR;
    g->linear_kind = kind;
    g->linear_num_key_heads = Hk;
    g->linear_num_value_heads = Hv;
    g->linear_key_head_dim = dk;
    g->linear_value_head_dim = dv;
    g->linear_conv_kernel_dim = K;
    g->state_dtype_bytes = 4;
    g->dtype_bytes = 4;
}

const char *test_golden_meta(const SafeTensors *st, const char *cs, const char *key) {
    char k[96];
    snprintf(k, sizeof k, "%s.%s", cs, key);
    const char *v = st_meta(st, k);
    cr_assert(v, "golden: metadata '%s' missing", k);
    return v;
}

int test_golden_int(const SafeTensors *st, const char *cs, const char *key) {
    return (int)strtod(test_golden_meta(st, cs, key), NULL);
}

const float *test_golden(const SafeTensors *st, const char *cs, const char *name, int ndim, const int64_t *shape) {
    char k[96], err[512];
    snprintf(k, sizeof k, "%s.%s", cs, name);
    const float *p = st_get_f32(st, k, ndim, shape, err, sizeof err);
    cr_assert(p, "golden: %s", err);
    return p;
}

void test_golden_load(SafeTensors *st, const char *file, const char *script) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/tests/golden/%s", test_root(), file);
    cr_assert_eq(st_load(st, path, err, sizeof err), 0, "%s (run tests/reference/%s)", err, script);
}

void test_golden_params(float *params, const SafeTensors *st, const char *cs, const ParamTensor *t, int n) {
    for (int i = 0; i < n; i++)
        memcpy(params + t[i].offset, test_golden(st, cs, t[i].name, t[i].ndim, t[i].shape),
               sizeof(float) * test_tensor_size(&t[i]));
}

void test_golden_dparams(const SafeTensors *st, const char *cs, const float *dparams, const ParamTensor *t, int n,
                         float tol) {
    for (int i = 0; i < n; i++) {
        char dn[64];
        snprintf(dn, sizeof dn, "d%.47s", t[i].name);
        test_assert_close(dn, dparams + t[i].offset, test_golden(st, cs, dn, t[i].ndim, t[i].shape),
                          test_tensor_size(&t[i]), tol);
    }
}

void test_decode_fixed_state(const Mixer *m, const float *params, const float *x, const float *want, int B, int T, float tol) {
    int d = m->g->d_model;
    float *step = mallocCheck(sizeof(float) * (size_t)d);
    for (int b = 0; b < B; b++) {
        MixerCache *c = m->ops->cache_new(m, T);
        size_t bytes0 = m->ops->cache_bytes(c);
        for (int pos = 0; pos < T; pos++) {
            size_t row = ((size_t)b * T + pos) * d;
            m->ops->decode(m, c, step, x + row, params);
            test_assert_close("decode", step, want + row, (size_t)d, tol);
            cr_assert_eq(m->ops->cache_bytes(c), bytes0, "%s: the cache grew at position %d", m->ops->name, pos);
        }
        m->ops->cache_free(c);
    }
    free(step);
}
