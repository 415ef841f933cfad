// chapter.h: what the chapter programs share when they draw a trained tiny model.
//
// A weights file (data/weights/*.safetensors) carries the model, the task it learned (with its
// vocabulary, so figures can label axes with real tokens), its held-out accuracy and its loss curve.
// These helpers load one, rebuild its untrained twin (same seed, step 0) for contrast, run the task's
// fixed example through both, and draw the training curve.
#pragma once
#include "cli.h"
#include "model.h"
#include "tasks.h"

typedef struct {
    const char *path;
    Model *model;           // the trained model
    Model *untrained;       // the same geometry and seed before any training step
    ModelInfo info;         // task, seed, steps, accuracy, loss curve
    Task task;              // rebuilt from the file's metadata
    int n_tokens;           // length of the example
    int tokens[1024], targets[1024];
    const char *labels[1024];   // token names of the example, for axis labels
} Trained;

// Loads path (exits with one line naming the file if it is missing or malformed).
void trained_load(Trained *t, const char *path);
void trained_free(Trained *t);

// ---- checks a chapter runs before its first figure, so a bad input leaves nothing written -----------
// Exits with one line naming t's file unless every layer's mixer is one of `mixers` ("gqa|gated"; mha
// and mqa are gqa) and, when kind >= 0, t learned that task: a figure built for one mechanism or task
// never draws another as if it were. what: the figure, for the message.
void trained_require(const Trained *t, const char *mixers, int kind, const char *what);
// trained_load, trained_require and trained_free: for models a chapter loads only later.
void trained_check(const char *path, const char *mixers, int kind, const char *what);
// Reads every listed config.json (dir/name, the list NULL-terminated) and exits with one line naming
// the first that is missing or malformed.
void chapter_check_configs(const char *dir, ...) __attribute__((sentinel));
// Attention of layer `layer` on the task's example: A (n_heads, T, T), for the trained model or its
// untrained twin. Returns the number of heads.
int trained_attention(Trained *t, int untrained, int layer, float *A);
// Accuracy (%) in words, e.g. "held-out recall accuracy 99.8% after 2000 steps".
const char *trained_caption(const Trained *t, char *buf, int cap);
// The training-loss figure NAME under the chapter's --out folder.
void trained_plot_curve(const Trained *t, const CliArgs *a, const char *name, const char *title);

// ---- which head to draw --------------------------------------------------------------------------
// How far back a token-mixing matrix A (T,T) reaches: the mean distance t - s over its causal part,
// weighted by |A[t][s]| (signed matrices of linear layers count by magnitude). 0 for a zero matrix.
double chapter_mixing_reach(const float *A, int T);
// Of n_heads matrices A (n_heads, T, T), the one that reaches furthest back (the first on a tie).
int chapter_furthest_head(const float *A, int n_heads, int T);

// What head A (T,T) mostly does on the example tok (T), in words and with the measured share, e.g.
// "previous token 53%": the largest of its mean weight on the first token, on the previous token and on
// the token after an earlier copy of the current one ("induction"), or "other" when none
// reaches 30%. Written to buf (returned).
const char *chapter_head_role(const float *A, const int *tok, int T, char *buf, int cap);

#define CHAPTER_ROLE_CHARS 48
// The roles of layer `layer`'s heads on t's example (chapter_head_role): roles[h]; A (n_heads, T, T)
// gets the layer's attention. Returns how many different roles (by their words) the heads take.
int chapter_layer_roles(Trained *t, int layer, float *A, char (*roles)[CHAPTER_ROLE_CHARS]);
// The layer whose heads take the most different roles (the first on a tie): the layer to draw when a
// figure is about heads attending differently. *n_roles (may be NULL) gets that count.
int chapter_most_varied_layer(Trained *t, int *n_roles);

// ---- state capacity (chapters 9 and 10) -------------------------------------------------------------
// The accuracies come from the capacity experiment's metrics over seeds (metrics.h; ./measure measured each
// model at exactly n pairs for every n).

typedef struct {
    const char *label;      // legend text
    const double *acc;      // (n_hi - n_lo + 1) accuracies in 0..1
    const double *acc_lo, *acc_hi;   // NULL, or a spread over seeds per count (a shaded band)
    int color, dashed;
} CapacityCurve;

typedef struct {
    const char *name, *title, *subtitle, *claim, *note;
    int n_lo, n_hi;
    const CapacityCurve *curves;
    int n;
    double chance;          // a uniform guess among the task's values: 1 / n_values
    int one_over_n;         // also the 1/n line: answering with one of the n values the sample showed
    int legend_pos;         // LegendPos
} CapacityPlot;
// Accuracy (%) vs number of pairs, one line per model, the chance line (and 1/n); the figure p->name
// under --out. Prints the numbers as a table.
void chapter_capacity_plot(const CliArgs *a, const CapacityPlot *p);

// The accuracy of guessing: 1 / n_values for recall, 1 / n_symbols for induction, 1 / vocab otherwise.
double chapter_chance(const Task *t);

// ---- seeds: what `make experiments` measured (data/experiments/GROUP.jsonl) ---------------------------
// Every setting of an accuracy comparison is trained from several seeds; the chapters ship one model per
// setting and read the others' metrics from these files (one JSON object per run, tools/experiments.sh).
#define CHAPTER_EXPERIMENTS "data/experiments"
#define CHAPTER_MAX_SEEDS 16
typedef struct {
    int n;                  // runs of the setting
    double mean, lo, hi;    // over them (lo..hi: min..max)
    double v[CHAPTER_MAX_SEEDS];   // each run's number, in the file's order (the first CHAPTER_MAX_SEEDS)
} SeedStat;
// The number `key` of every run of `setting` in path, or element `index` of the array `key` when
// index >= 0 (e.g. "first_by_layer", layer 0). Exits with one line naming the file if it is missing or
// malformed, or has no run of that setting with that number.
SeedStat chapter_seeds(const char *path, const char *setting, const char *key, int index);

// ---- real models' memory ------------------------------------------------------------------------
// Reads DIR/FILE (a Hugging Face config.json) into g with a display name, counted in bf16 (2 bytes per
// number, how these models are served). Exits with one line naming the file on any problem.
void chapter_config(ModelGeometry *g, const char *dir, const char *file, const char *display_name);

typedef struct {
    ModelGeometry g;
    const char *label;      // legend text; NULL: "NAME: X/token" (kvcache_bytes_per_token)
    int color, dashed;
} MemoryCurve;

typedef struct {
    const char *name, *title, *subtitle, *claim, *note;   // note NULL: where the numbers come from
    const MemoryCurve *curves;
    int n;
    long max_context;       // the x axis runs 0 .. max_context tokens
    int legend_pos;         // LegendPos
    int log_axes;           // 1: log-log from 1K tokens, for ranges a linear axis would bury (the note says why)
} MemoryPlot;
// KV cache (windows and fixed state included) vs context, on linear axes unless log_axes, one line per curve, each
// ending at its model's max_position_embeddings with a marker (never drawn past it); the figure p->name
// under --out. Also prints a table of the same numbers.
void chapter_memory_plot(const CliArgs *a, const MemoryPlot *p);

// The same model with plain MHA: every query head caching its own key and value (for MLA, a key of
// qk_nope_head_dim and a value of v_head_dim), bf16, the same max_position_embeddings. The dashed
// "as MHA" curves.
void chapter_mha_twin(ModelGeometry *twin, const ModelGeometry *src, const char *name);
