// train.h: training the tiny models: AdamW, warmup + cosine learning rate, global-norm clipping,
// seeded batches, progress, the loss curve.
//
// Everything is a function of the seed: batches come from one RNG stream, the optimizer is
// elementwise, and the model's kernels split outputs (never reductions) across threads, so the same
// command gives the same weights, byte for byte, for any OMP_NUM_THREADS.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include "model.h"
#include "tasks.h"

typedef struct {
    int steps;              // optimizer steps (0: just evaluate the initial model)
    int batch;              // sequences per step (each task->seq_len tokens)
    double lr;              // peak learning rate
    double min_lr_frac;     // the cosine ends at lr * min_lr_frac
    int warmup;             // steps of linear warmup from lr / warmup to lr
    double weight_decay;    // AdamW decoupled decay, on matrices only (ModelTensor.decay)
    double grad_clip;       // clip the global gradient norm to this (0: off)
    double beta1, beta2, eps;
    uint64_t seed;          // the batches' RNG stream
    int curriculum;         // recall with a pair range: over the first `curriculum` steps the largest pair
                            // count of the training batches grows from n_pairs_min to n_pairs (0: off)
    int eval_samples;       // held-out samples for the final loss and accuracy
    int progress;           // print progress (a live line on a terminal, else ~every 10%)
} TrainConfig;

// lr 3e-3, min_lr_frac 0.1, warmup 5% of steps, weight_decay 0.1, grad_clip 1, betas (0.9, 0.95),
// eps 1e-8, eval_samples 512, progress on.
void train_config_default(TrainConfig *c, int steps, int batch, uint64_t seed);

typedef struct {
    float *losses;          // (steps) training loss of every step
    int steps;
    double eval_loss, eval_accuracy;   // on held-out samples, after training
    double seconds, tokens_per_s;      // wall time of the optimizer steps
} TrainResult;
void train_result_free(TrainResult *r);

// Trains m on task (B = c->batch, T = task->seq_len) and evaluates it on held-out samples.
void train_run(Model *m, const Task *task, const TrainConfig *c, TrainResult *r);
// Mean loss and accuracy over n_samples held-out samples drawn with seed (scored positions only).
void train_evaluate(Model *m, const Task *task, uint64_t seed, int n_samples, double *loss, double *accuracy);

// A weights file written by ./train, with the task it learned rebuilt from its metadata: what every
// chapter draws from. Beyond model_load's checks, the task must fit the model (its tokens inside
// vocab_size, its seq_len within max_seq_len) and the model's logits on the task's example must be
// finite (finite weights can still overflow float32). NULL with one line naming the file in err.
Model *train_load_model(const char *path, MixerLookup lookup, ModelInfo *info, Task *task, char *err, size_t cap);

// ---- the pieces, exposed for tests ----------------------------------------------------------------
// The largest pair count of the training batches at step (0-based) under c->curriculum: n_pairs_min at
// step 0, rising linearly to task->n_pairs at step curriculum - 1 and after; task->n_pairs without one.
int train_curriculum_pairs(const TrainConfig *c, const Task *task, int step);
// Learning rate at step (0-based): linear warmup over c->warmup steps, then cosine to lr * min_lr_frac.
double train_lr_at(const TrainConfig *c, int step);
// Scales g (n) so its L2 norm is at most max_norm; returns the norm before clipping (summed in order).
double train_clip_grad_norm(float *g, size_t n, double max_norm);

typedef struct {
    float *m, *v;           // (n_params) first and second moments
    size_t n;
    long t;                 // steps taken (bias correction)
} AdamW;
void adamw_init(AdamW *o, size_t n_params);
void adamw_free(AdamW *o);
// One AdamW update of every tensor of model with its gradients, at learning rate lr.
void adamw_step(AdamW *o, Model *model, double lr, const TrainConfig *c);

// The loss curve downsampled to at most max_points: curve (2, n) with row 0 the step (1-based, the
// last step of each window) and row 1 the mean loss over the window. Returns n; *curve is malloc'd.
int train_loss_curve(const TrainResult *r, int max_points, float **curve);
// The training-loss figure (title, axes, optional log y) as PATH_NO_EXT.png and/or .svg.
void train_plot_loss(const float *curve, int n, const char *title, const char *subtitle,
                     const char *path_no_ext, int png, int svg, int logy);
