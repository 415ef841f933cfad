// chapter.c: loading and drawing the tiny trained models the chapters show.
#include "chapter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "registry.h"
#include "train.h"

void trained_load(Trained *t, const char *path) {
    memset(t, 0, sizeof *t);
    t->path = path;
    char err[1024];
    t->model = model_load(path, mixer_by_name, &t->info, err, sizeof err);
    if (!t->model) die_user("%s", err);
    if (!t->info.task_config || task_from_json(&t->task, t->info.task_config, err, sizeof err) != 0)
        die_user("%s: no usable task in its metadata (%s)", path, t->info.task_config ? err : "missing");
    const MixerOps *ops[GEOM_MAX_LAYERS];
    for (int l = 0; l < t->model->g.n_layers; l++) ops[l] = t->model->mixers[l].ops;
    t->untrained = model_new(&t->model->g, ops, t->info.seed);
    t->n_tokens = t->task.seq_len;
    if (t->n_tokens > 1024) die_user("%s: example of %d tokens is longer than the chapters draw (1024)", path, t->n_tokens);
    task_example(&t->task, t->tokens, t->targets);
    for (int i = 0; i < t->n_tokens; i++) t->labels[i] = task_token_str(&t->task, t->tokens[i]);
}

void trained_free(Trained *t) {
    model_free(t->model);
    model_free(t->untrained);
    model_info_free(&t->info);
    task_free(&t->task);
}

int trained_attention(Trained *t, int untrained, int layer, float *A) {
    Model *m = untrained ? t->untrained : t->model;
    model_forward(m, t->tokens, NULL, 1, t->n_tokens);
    model_mixing_matrix(m, layer, A);
    return model_n_mix_heads(m, layer);
}

const char *trained_caption(const Trained *t, char *buf, int cap) {
    snprintf(buf, (size_t)cap, "%s accuracy %.1f%% on held-out samples after %d training steps",
             t->task.name, 100.0 * t->info.accuracy, t->info.steps);
    return buf;
}

void trained_plot_curve(const Trained *t, const CliArgs *a, const char *name, const char *title) {
    if (!t->info.curve || t->info.n_curve < 2) return;
    char path[1024], sub[512], cap[160];
    snprintf(sub, sizeof sub, "%s; model %s", trained_caption(t, cap, sizeof cap), t->model->g.name);
    train_plot_loss(t->info.curve, t->info.n_curve, title, sub, path_join(path, sizeof path, a->out, name),
                    a->png, a->svg, 1);
}
