// measure: the numbers behind the trained-model figures, one JSON line per weights file.
//
//   ./measure data/weights/ch10_kda.safetensors [--samples 128]
//
// For every model: its stored held-out accuracy and loss. For a recall model: the accuracy at every pair
// count 1..n_pairs on fresh held-out samples (what chapters 9 and 10 plot). For every softmax-attention
// layer, per head, the statistics of common/headstats.h (first, prev, self, induction, distance,
// entropy) averaged over held-out samples of the model's own task, and each layer's mean first-token
// weight beside what uniform causal attention would give ("uniform_first"). For the backcopy task
// also the accuracy on the trigger positions (the only ones that need attention) and each head's
// first-token and previous-token weight on trigger rows ("active") and on the other rows ("dormant").
// For the topics task the accuracy on the stream and on the copy, and each head's weight on the topic
// token ("topic", rows after it).
// Linear layers mix with signed matrices and are skipped. The same file and flags print the same bytes.
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli.h"
#include "headstats.h"
#include "model.h"
#include "registry.h"
#include "tasks.h"
#include "train.h"

#define MEASURE_SEED 0x3EA5E7ULL   // one held-out stream for every model

// Backcopy: a head's statistics on trigger rows and on the other rows.
typedef struct { HeadStats active, dormant; } SplitStats;

static void backcopy_add(SplitStats *s, const float *A, const int *tok, int T, const Task *task, int t0) {
    for (int t = t0; t < T; t++) headstats_add_row(task_is_trigger(task, tok[t]) ? &s->active : &s->dormant, A, tok, T, t);
}

// Numbers rounded to 6 decimals: enough for any figure, and the same text on every machine.
static cJSON *num(double x) { return cJSON_CreateNumber(round(x * 1e6) / 1e6); }

static void add_recall_by_pairs(cJSON *o, Model *m, const Task *task, int n_samples) {
    cJSON *a = cJSON_AddArrayToObject(o, "recall_by_pairs");
    for (int n = 1; n <= task->n_pairs; n++) {
        Task fixed = *task;   // the same vocabulary and length, exactly n pairs
        fixed.n_pairs = n;
        fixed.n_pairs_min = 0;
        double loss, acc;
        train_evaluate(m, &fixed, MEASURE_SEED + (uint64_t)n, n_samples, &loss, &acc);
        cJSON_AddItemToArray(a, num(acc));
    }
}

static void measure_file(const char *path, int n_samples, const char *setting, const char *command) {
    char err[1024];
    ModelInfo info;
    Model *m = model_load(path, mixer_by_name, &info, err, sizeof err);
    if (!m) die_user("%s", err);
    Task task;
    if (!info.task_config || task_from_json(&task, info.task_config, err, sizeof err) != 0)
        die_user("%s: no usable task in its metadata (%s)", path, info.task_config ? err : "missing");
    if (task.kind == TASK_CORPUS && !task.text) die_user("%s: its text corpus is not stored in the file", path);
    const ModelGeometry *g = &m->g;
    int T = task.seq_len, L = g->n_layers, V = g->vocab_size;
    cJSON *o = cJSON_CreateObject();
    if (setting) cJSON_AddStringToObject(o, "setting", setting);
    if (command) cJSON_AddStringToObject(o, "command", command);
    cJSON_AddStringToObject(o, "model", g->name);
    cJSON_AddStringToObject(o, "task", task.name);
    cJSON_AddNumberToObject(o, "seed", (double)info.seed);
    cJSON_AddNumberToObject(o, "steps", info.steps);
    cJSON_AddItemToObject(o, "accuracy", num(info.accuracy));
    cJSON_AddItemToObject(o, "loss", num(info.loss));
    if (task.kind == TASK_RECALL) add_recall_by_pairs(o, m, &task, n_samples);

    int n_attn = 0, maxH = 0;
    for (int l = 0; l < L; l++)
        if (g->layer_kind[l] != LAYER_LINEAR) {
            n_attn++;
            if (model_n_mix_heads(m, l) > maxH) maxH = model_n_mix_heads(m, l);
        }
    int bc = task.kind == TASK_BACKCOPY, t0 = 1 + task.bos;   // backcopy rows after the first real token
    HeadStats *hs = callocCheck((size_t)L * (maxH ? maxH : 1), sizeof(HeadStats));
    SplitStats *ss = callocCheck((size_t)L * (maxH ? maxH : 1), sizeof(SplitStats));
    float *A = mallocCheck(sizeof(float) * (size_t)(maxH ? maxH : 1) * T * T);
    int *tok = mallocCheck(sizeof(int) * (size_t)T), *tgt = mallocCheck(sizeof(int) * (size_t)T);
    long trig_ok = 0, trig_n = 0, part_ok[2] = {0, 0}, part_n[2] = {0, 0};
    int tp = task.kind == TASK_TOPICS;
    double *topic_w = callocCheck((size_t)L * (maxH ? maxH : 1), sizeof(double));
    long topic_rows = 0;
    Rng rng;
    rng_seed(&rng, MEASURE_SEED);
    for (int i = 0; i < n_samples && (n_attn > 0 || bc || tp); i++) {
        task_sample(&task, &rng, SPLIT_HELDOUT, tok, tgt);
        model_forward(m, tok, NULL, 1, T);
        for (int t = t0; bc && t < T; t++) {
            if (!task_is_trigger(&task, tok[t]) || tgt[t] < 0) continue;
            const float *lg = m->logits + (size_t)t * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (lg[v] > lg[best]) best = v;
            trig_ok += best == tgt[t];
            trig_n++;
        }
        int topic = 0, copy = T;
        if (tp) {
            task_topics_layout(&task, tok, &topic, &copy);
            for (int t = 0; t < T; t++) {
                if (tgt[t] < 0) continue;
                const float *lg = m->logits + (size_t)t * V;
                int best = 0;
                for (int v = 1; v < V; v++)
                    if (lg[v] > lg[best]) best = v;
                part_ok[t >= copy] += best == tgt[t];
                part_n[t >= copy]++;
            }
            topic_rows += T - 1 - topic;
        }
        for (int l = 0; l < L; l++) {
            if (g->layer_kind[l] == LAYER_LINEAR) continue;
            model_mixing_matrix(m, l, A);
            for (int h = 0; tp && h < model_n_mix_heads(m, l); h++)
                for (int t = topic + 1; t < T; t++) topic_w[l * maxH + h] += A[(size_t)h * T * T + (size_t)t * T + topic];
            for (int h = 0; h < model_n_mix_heads(m, l); h++) {
                headstats_add(&hs[l * maxH + h], A + (size_t)h * T * T, tok, T, 1);
                if (bc) backcopy_add(&ss[l * maxH + h], A + (size_t)h * T * T, tok, T, &task, t0);
            }
        }
    }
    if (bc) cJSON_AddItemToObject(o, "trigger_accuracy", num(trig_n ? (double)trig_ok / (double)trig_n : 0.0));
    if (tp) {
        cJSON_AddItemToObject(o, "stream_accuracy", num(part_n[0] ? (double)part_ok[0] / (double)part_n[0] : 0.0));
        cJSON_AddItemToObject(o, "copy_accuracy", num(part_n[1] ? (double)part_ok[1] / (double)part_n[1] : 0.0));
    }
    if (n_attn > 0) {
        cJSON_AddItemToObject(o, "uniform_first", num(headstats_uniform_first(T, 1)));
        cJSON *heads = cJSON_AddArrayToObject(o, "heads"), *fl = cJSON_AddArrayToObject(o, "first_by_layer");
        for (int l = 0; l < L; l++) {
            if (g->layer_kind[l] == LAYER_LINEAR) continue;
            int H = model_n_mix_heads(m, l);
            double f = 0.0;
            for (int h = 0; h < H; h++) {
                double mean[HS_N];
                headstats_mean(&hs[l * maxH + h], mean);
                cJSON *e = cJSON_CreateObject();
                cJSON_AddNumberToObject(e, "layer", l);
                cJSON_AddNumberToObject(e, "head", h);
                for (int k = 0; k < HS_N; k++) cJSON_AddItemToObject(e, headstats_names[k], num(mean[k]));
                if (tp) cJSON_AddItemToObject(e, "topic", num(topic_rows ? topic_w[l * maxH + h] / (double)topic_rows : 0.0));
                if (bc) {
                    double act[HS_N], dor[HS_N];
                    headstats_mean(&ss[l * maxH + h].active, act);
                    headstats_mean(&ss[l * maxH + h].dormant, dor);
                    cJSON_AddItemToObject(e, "first_active", num(act[HS_FIRST]));
                    cJSON_AddItemToObject(e, "prev_active", num(act[HS_PREV]));
                    cJSON_AddItemToObject(e, "first_dormant", num(dor[HS_FIRST]));
                    cJSON_AddItemToObject(e, "prev_dormant", num(dor[HS_PREV]));
                }
                cJSON_AddItemToArray(heads, e);
                f += mean[HS_FIRST];
            }
            cJSON_AddItemToArray(fl, num(f / H));
        }
    }
    char *text = cJSON_PrintUnformatted(o);
    CHECK(text != NULL, "cJSON_PrintUnformatted failed");
    printf("%s\n", text);
    free(text);
    cJSON_Delete(o);
    free(hs);
    free(ss);
    free(topic_w);
    free(A);
    free(tok);
    free(tgt);
    task_free(&task);
    model_info_free(&info);
    model_free(m);
}

int main(int argc, char **argv) {
    int n_samples = 128;
    const char *setting = NULL, *command = NULL;
    CliOpt opts[] = {
        {"--samples", OPT_INT, &n_samples, "N", "held-out samples per measurement (default 128)", 1, 1 << 20},
        {"--setting", OPT_STRING, &setting, "NAME", "a name for the experiment's setting, copied into the output", 0, 0},
        {"--command", OPT_STRING, &command, "TEXT", "the command that trained the model, copied into the output", 0, 0},
    };
    CliSpec spec = {
        .prog = "measure",
        .summary = "Measure trained tiny models: recall accuracy per pair count and per-head attention statistics "
                   "(first-token, previous-token and induction weight, distance, entropy), one JSON line per file.",
        .usage_extra = "example:\n  ./measure data/weights/ch03_induction.safetensors --samples 64",
        .opts = opts, .n_opts = (int)(sizeof opts / sizeof opts[0]),
        .positional = "WEIGHTS...", .min_positional = 1,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    for (int i = 0; i < a.n_pos; i++) measure_file(a.pos[i], n_samples, setting, command);
    free(a.pos);
    return 0;
}
