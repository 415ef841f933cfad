// train.c: the training loop of the tiny models and its optimizer.
#include "train.h"
#include "check.h"
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// Seeds derived from the training seed, so batches and held-out samples are separate streams.
#define BATCH_STREAM 0xB47C4ull
#define HELDOUT_STREAM 0x4E1D07ull
#define EVAL_BATCH 64
#define ADAMW_PAR_MIN (1L << 15)

void train_config_default(TrainConfig *c, int steps, int batch, uint64_t seed) {
    memset(c, 0, sizeof *c);
    c->steps = steps;
    c->batch = batch;
    c->lr = 3e-3;
    c->min_lr_frac = 0.1;
    c->warmup = steps / 20;
    c->weight_decay = 0.1;
    c->grad_clip = 1.0;
    c->beta1 = 0.9;
    c->beta2 = 0.95;
    c->eps = 1e-8;
    c->seed = seed;
    c->eval_samples = 512;
    c->progress = 1;
}

void train_result_free(TrainResult *r) {
    free(r->losses);
    r->losses = NULL;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- schedule, clipping, AdamW ------------------------------------------------------------------

double train_lr_at(const TrainConfig *c, int step) {
    if (c->warmup > 0 && step < c->warmup) return c->lr * (double)(step + 1) / (double)c->warmup;
    int span = c->steps - c->warmup;
    double progress = span > 1 ? (double)(step - c->warmup) / (double)(span - 1) : 1.0;
    if (progress > 1.0) progress = 1.0;
    double lo = c->lr * c->min_lr_frac;
    return lo + 0.5 * (1.0 + cos(M_PI * progress)) * (c->lr - lo);
}

int train_curriculum_pairs(const TrainConfig *c, const Task *task, int step) {
    if (c->curriculum <= 0 || task->kind != TASK_RECALL || task->n_pairs_min <= 0 || step >= c->curriculum - 1)
        return task->n_pairs;
    int lo = task->n_pairs_min, span = task->n_pairs - lo;
    return lo + (int)((long)span * step / (c->curriculum - 1));
}

double train_clip_grad_norm(float *g, size_t n, double max_norm) {
    // the one reduction of the step: summed in order in double, by one thread
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    double norm = sqrt(ss);
    if (max_norm > 0.0 && norm > max_norm) {
        float s = (float)(max_norm / norm);
        for (size_t i = 0; i < n; i++) g[i] *= s;
    }
    return norm;
}

void adamw_init(AdamW *o, size_t n_params) {
    o->n = n_params;
    o->t = 0;
    o->m = callocCheck(n_params, sizeof(float));
    o->v = callocCheck(n_params, sizeof(float));
}

void adamw_free(AdamW *o) {
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

void adamw_step(AdamW *o, Model *model, double lr, const TrainConfig *c) {
    CHECK(o->n == model->n_params, "adamw: state for %zu params, model has %zu", o->n, model->n_params);
    o->t++;
    float b1 = (float)c->beta1, b2 = (float)c->beta2, eps = (float)c->eps;
    float c1 = (float)(1.0 - pow(c->beta1, (double)o->t)), c2 = (float)(1.0 - pow(c->beta2, (double)o->t));
    float flr = (float)lr;
    for (int k = 0; k < model->n_tensors; k++) {
        const ModelTensor *t = &model->tensors[k];
        // decoupled weight decay: p -= lr * wd * p, separate from the adaptive step, matrices only
        float wd = t->decay ? (float)c->weight_decay : 0.0f;
        float *p = model->params + t->offset, *g = model->grads + t->offset;
        float *m = o->m + t->offset, *v = o->v + t->offset;
        long n = (long)t->size;
        #pragma omp parallel for if(n >= ADAMW_PAR_MIN) schedule(static)
        for (long i = 0; i < n; i++) {
            m[i] = b1 * m[i] + (1.0f - b1) * g[i];
            v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
            float mhat = m[i] / c1, vhat = v[i] / c2;
            p[i] -= flr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
        }
    }
}

// ---- evaluation ---------------------------------------------------------------------------------

void train_evaluate(Model *m, const Task *task, uint64_t seed, int n_samples, double *loss, double *accuracy) {
    int T = task->seq_len;
    int *tok = mallocCheck(sizeof(int) * (size_t)EVAL_BATCH * T);
    int *tgt = mallocCheck(sizeof(int) * (size_t)EVAL_BATCH * T);
    Rng rng;
    rng_seed(&rng, seed);
    double loss_sum = 0.0;
    long correct = 0, scored = 0;
    for (int done = 0; done < n_samples; done += EVAL_BATCH) {
        int B = n_samples - done < EVAL_BATCH ? n_samples - done : EVAL_BATCH;
        task_batch(task, &rng, SPLIT_HELDOUT, tok, tgt, B);
        model_forward(m, tok, tgt, B, T);
        int c, s;
        model_count_correct(m, &c, &s);
        loss_sum += (double)m->loss * s;   // m->loss is the mean over this batch's s positions
        correct += c;
        scored += s;
    }
    *loss = scored ? loss_sum / (double)scored : 0.0;
    *accuracy = scored ? (double)correct / (double)scored : 0.0;
    free(tok);
    free(tgt);
}

Model *train_load_model(const char *path, MixerLookup lookup, ModelInfo *info, Task *task, char *err, size_t cap) {
    memset(task, 0, sizeof *task);
    Model *m = model_load(path, lookup, info, err, cap);
    if (!m) return NULL;
    const ModelGeometry *g = &m->g;
    char why[512];
    int *tok = NULL;
    if (!info->task_config) {
        snprintf(err, cap, "%s: metadata 'task_config' missing (not trained by ./train?)", path);
        goto fail;
    }
    if (task_from_json(task, info->task_config, why, sizeof why) != 0) {
        snprintf(err, cap, "%s: metadata 'task_config': %s", path, why);
        goto fail;
    }
    if (task_is_file_corpus(task)) {   // its text comes from the file, not from the path it was read at
        if (!info->corpus) {
            snprintf(err, cap, "%s: a --corpus model without its text (tensor 'meta.corpus_heldout' missing; retrain it)", path);
            goto fail;
        }
        if (task_corpus_attach(task, info->corpus, info->n_corpus, why, sizeof why) != 0) {
            snprintf(err, cap, "%s: tensor 'meta.corpus_heldout': %s", path, why);
            goto fail;
        }
    }
    if (task->vocab_size > g->vocab_size) {
        snprintf(err, cap, "%s: metadata 'task_config' describes %d tokens but the model's vocab_size is %d", path,
                 task->vocab_size, g->vocab_size);
        goto fail;
    }
    if (task->seq_len > g->max_seq_len) {
        snprintf(err, cap, "%s: metadata 'task_config' has seq_len %d but the model's max_seq_len is %d", path,
                 task->seq_len, g->max_seq_len);
        goto fail;
    }
    int T = task->seq_len;
    tok = mallocCheck(sizeof(int) * 2 * (size_t)T);
    task_example(task, tok, tok + T);
    model_forward(m, tok, NULL, 1, T);
    for (size_t i = 0; i < (size_t)T * g->vocab_size; i++)
        if (!isfinite(m->logits[i])) {
            snprintf(err, cap, "%s: the model's logits on its example are not finite (weights too large for float32)", path);
            goto fail;
        }
    free(tok);
    return m;
fail:
    free(tok);
    task_free(task);
    model_info_free(info);
    model_free(m);
    return NULL;
}

// ---- the loop -----------------------------------------------------------------------------------

static void fmt_duration(char *buf, size_t cap, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

static void progress_line(char *buf, size_t cap, int step, int steps, float loss, double tok_s, double eta) {
    char e[32];
    fmt_duration(e, sizeof e, eta);
    snprintf(buf, cap, "step %*d/%d  loss %.4f  %.0fK tok/s  ETA %s", (int)snprintf(NULL, 0, "%d", steps),
             step, steps, loss, tok_s / 1000.0, e);
}

void train_run(Model *m, const Task *task, const TrainConfig *c, TrainResult *r) {
    memset(r, 0, sizeof *r);
    CHECK(c->batch >= 1 && c->steps >= 0, "train_run: batch %d, steps %d", c->batch, c->steps);
    int B = c->batch, T = task->seq_len;
    CHECK(T <= m->g.max_seq_len, "task seq_len %d exceeds the model's max_seq_len %d", T, m->g.max_seq_len);
    CHECK(task->vocab_size <= m->g.vocab_size, "task vocab %d exceeds the model's %d", task->vocab_size,
          m->g.vocab_size);
    int *tok = mallocCheck(sizeof(int) * (size_t)B * T), *tgt = mallocCheck(sizeof(int) * (size_t)B * T);
    r->steps = c->steps;
    r->losses = mallocCheck(sizeof(float) * (size_t)(c->steps > 0 ? c->steps : 1));
    AdamW opt;
    adamw_init(&opt, m->n_params);
    Rng rng;
    rng_seed(&rng, c->seed ^ BATCH_STREAM);
    int tty = c->progress && isatty(STDOUT_FILENO);
    int every = c->steps >= 10 ? c->steps / 10 : 1;
    double t0 = now_seconds(), last_print = 0.0;
    char line[160];
    // the hot loop: batches into fixed buffers, the model's arenas, the optimizer's state; no allocation
    Task stage = *task;   // the task of this step: fewer pairs early under a curriculum
    for (int step = 0; step < c->steps; step++) {
        stage.n_pairs = train_curriculum_pairs(c, task, step);
        task_batch(&stage, &rng, SPLIT_TRAIN, tok, tgt, B);
        model_forward(m, tok, tgt, B, T);
        model_zero_grad(m);
        model_backward(m);
        if (c->grad_clip > 0.0) train_clip_grad_norm(m->grads, m->n_params, c->grad_clip);
        adamw_step(&opt, m, train_lr_at(c, step), c);
        r->losses[step] = m->loss;
        if (!c->progress) continue;
        double el = now_seconds() - t0;
        double tok_s = (double)(step + 1) * B * T / (el > 1e-9 ? el : 1e-9);
        double eta = el / (step + 1) * (c->steps - step - 1);
        if (tty && (el - last_print > 0.1 || step + 1 == c->steps)) {
            progress_line(line, sizeof line, step + 1, c->steps, m->loss, tok_s, eta);
            printf("\r%s\033[K", line);
            fflush(stdout);
            last_print = el;
        } else if (!tty && ((step + 1) % every == 0 || step + 1 == c->steps)) {
            progress_line(line, sizeof line, step + 1, c->steps, m->loss, tok_s, eta);
            printf("%s\n", line);
            fflush(stdout);
        }
    }
    if (tty && c->steps > 0) printf("\n");
    r->seconds = now_seconds() - t0;
    r->tokens_per_s = r->seconds > 0 ? (double)c->steps * B * T / r->seconds : 0.0;
    adamw_free(&opt);
    free(tok);
    free(tgt);
    train_evaluate(m, task, c->seed ^ HELDOUT_STREAM, c->eval_samples, &r->eval_loss, &r->eval_accuracy);
}

// ---- the loss curve -----------------------------------------------------------------------------

int train_loss_curve(const TrainResult *r, int max_points, float **curve) {
    int n = r->steps < max_points ? r->steps : max_points;
    *curve = mallocCheck(sizeof(float) * 2 * (size_t)(n > 0 ? n : 1));
    // point i averages steps (i*S/n, (i+1)*S/n], so every step falls in exactly one window
    for (int i = 0; i < n; i++) {
        long a = (long)i * r->steps / n, b = (long)(i + 1) * r->steps / n;
        double s = 0.0;
        for (long k = a; k < b; k++) s += r->losses[k];
        (*curve)[i] = (float)b;
        (*curve)[n + i] = (float)(s / (double)(b - a));
    }
    return n;
}

void train_plot_loss(const float *curve, int n, const char *title, const char *subtitle,
                     const char *path_no_ext, int png, int svg, int logy) {
    double *x = mallocCheck(sizeof(double) * (size_t)(n > 0 ? n : 1));
    double *y = mallocCheck(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++) {
        x[i] = curve[i];
        y[i] = curve[n + i];
    }
    PlotSeries s = {.label = "training loss (mean over each window of steps)", .x = x, .y = y, .n = n,
                    .color = COLOR_MHA};
    LineChart ch = {
        .title = title, .subtitle = subtitle,
        .xlabel = "optimizer step", .ylabel = logy ? "cross-entropy (nats, log scale)" : "cross-entropy (nats)",
        .logy = logy, .series = &s, .n_series = 1, .legend_pos = 1,
    };
    plot_line_chart(&ch, path_no_ext, png, svg);
    free(x);
    free(y);
}
