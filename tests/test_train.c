// test_train.c: the optimizer pieces against hand-computed values, the synthetic tasks' structure,
// that training lowers the loss and gives the same bytes for 1 and 2 threads, and the train/infer
// tools end to end on a tiny model.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "check.h"
#include "headstats.h"
#include "helpers.h"
#include "model.h"
#include "registry.h"
#include "safetensors.h"
#include "tasks.h"
#include "train.h"

// The 2 cores are shared with the other tests (criterion -j2); OpenMP regions over tiny work only
// wait on each other there, so these suites run on one thread. The thread test sets its own counts.
static void one_thread(void) {
    omp_set_num_threads(1);
    setenv("OMP_NUM_THREADS", "1", 1);   // for the tools the tests run
}
TestSuite(train_optim, .init = one_thread);
TestSuite(train_loop, .init = one_thread);
TestSuite(train_tasks, .init = one_thread);
TestSuite(train_tools, .init = one_thread);

// ---- schedule, clipping, AdamW ------------------------------------------------------------------

Test(train_optim, warmup_then_cosine) {
    TrainConfig c;
    train_config_default(&c, 100, 1, 0);
    c.lr = 1.0;
    c.warmup = 10;
    c.min_lr_frac = 0.1;
    cr_expect(fabs(train_lr_at(&c, 0) - 0.1) < 1e-12, "first warmup step: lr/warmup");
    cr_expect(fabs(train_lr_at(&c, 4) - 0.5) < 1e-12);
    cr_expect(fabs(train_lr_at(&c, 10) - 1.0) < 1e-12, "cosine starts at the peak");
    cr_expect(fabs(train_lr_at(&c, 99) - 0.1) < 1e-12, "last step at lr * min_lr_frac, got %g", train_lr_at(&c, 99));
    // halfway through the cosine: the mean of peak and floor
    double mid = train_lr_at(&c, 10 + 89 / 2) + train_lr_at(&c, 10 + 89 - 89 / 2);
    cr_expect(fabs(mid / 2 - 0.55) < 1e-3, "cosine midpoint %g", mid / 2);
    for (int s = 11; s < 100; s++) cr_expect(train_lr_at(&c, s) <= train_lr_at(&c, s - 1) + 1e-15);
}

Test(train_optim, global_norm_clip) {
    float g[3] = {3, 0, 4};
    cr_expect(fabs(train_clip_grad_norm(g, 3, 10.0) - 5.0) < 1e-9);
    cr_expect(g[0] == 3 && g[2] == 4, "below the limit nothing changes");
    cr_expect(fabs(train_clip_grad_norm(g, 3, 1.0) - 5.0) < 1e-9);
    cr_expect(fabs(g[0] - 0.6f) < 1e-7 && fabs(g[2] - 0.8f) < 1e-7, "scaled to norm 1: %g %g", g[0], g[2]);
}

static void tiny_geometry(ModelGeometry *g, int vocab, int T) {
    geometry_init(g, "test train", 2, 16, 2, 1);
    g->vocab_size = vocab;
    g->d_ff = 32;
    g->max_seq_len = T;
    g->dtype_bytes = 4;
}

// Two AdamW steps on fixed gradients against the update written out in double: decay applies to a
// matrix (lm_head), not to a norm gain (norm_f).
Test(train_optim, adamw_matches_the_formula) {
    ModelGeometry g;
    tiny_geometry(&g, 10, 8);
    const MixerOps *ops[2] = {&gqa_mixer, &gqa_mixer};
    Model *m = model_new(&g, ops, 1);
    model_zero_grad(m);
    TrainConfig c;
    train_config_default(&c, 10, 1, 0);
    c.weight_decay = 0.5;
    AdamW o;
    adamw_init(&o, m->n_params);
    const ModelTensor *head = model_find_tensor(m, "lm_head"), *norm = model_find_tensor(m, "norm_f");
    cr_assert(head && norm && head->decay && !norm->decay);
    size_t idx[2] = {head->offset + 3, norm->offset + 1};
    double p[2], mo[2] = {0, 0}, v[2] = {0, 0}, wd[2] = {0.5, 0.0};
    for (int k = 0; k < 2; k++) p[k] = m->params[idx[k]];
    double grads[2][2] = {{0.3, -0.1}, {-2.0, 0.05}};   // [step][element]
    double lrs[2] = {0.01, 0.02};
    for (int s = 0; s < 2; s++) {
        for (int k = 0; k < 2; k++) m->grads[idx[k]] = (float)grads[s][k];
        adamw_step(&o, m, lrs[s], &c);
        for (int k = 0; k < 2; k++) {
            double gr = grads[s][k];
            mo[k] = 0.9 * mo[k] + 0.1 * gr;
            v[k] = 0.95 * v[k] + 0.05 * gr * gr;
            double mh = mo[k] / (1 - pow(0.9, s + 1)), vh = v[k] / (1 - pow(0.95, s + 1));
            p[k] -= lrs[s] * (mh / (sqrt(vh) + 1e-8) + wd[k] * p[k]);
            cr_expect(fabs(m->params[idx[k]] - p[k]) < 1e-6 * fmax(1.0, fabs(p[k])),
                      "step %d element %d: %.8f vs %.8f", s, k, m->params[idx[k]], p[k]);
        }
    }
    adamw_free(&o);
    model_free(m);
}

Test(train_optim, loss_curve_windows) {
    float losses[10];
    for (int i = 0; i < 10; i++) losses[i] = (float)(i + 1);
    TrainResult r = {.losses = losses, .steps = 10};
    float *c;
    int n = train_loss_curve(&r, 4, &c);
    cr_assert_eq(n, 4);
    float steps[4] = {2, 5, 7, 10}, means[4] = {1.5f, 4.0f, 6.5f, 9.0f};
    for (int i = 0; i < 4; i++) {
        cr_expect_eq(c[i], steps[i], "point %d step %g", i, c[i]);
        cr_expect(fabs(c[4 + i] - means[i]) < 1e-6, "point %d mean %g", i, c[4 + i]);
    }
    free(c);
}

// ---- training -----------------------------------------------------------------------------------

Test(train_loop, a_few_steps_lower_the_loss) {
    // recall answers are always values (16 of the 34 tokens): even the first steps must find that
    Task task;
    task_recall(&task, 16, 4, 16, 16, 0, 0.0);
    ModelGeometry g;
    tiny_geometry(&g, task.vocab_size, 16);
    const MixerOps *ops[2] = {&gqa_mixer, &gqa_mixer};
    Model *m = model_new(&g, ops, 3);
    double before, after, acc;
    train_evaluate(m, &task, 99, 64, &before, &acc);
    cr_expect(fabs(before - log(34.0)) < 0.05, "an untrained model is uniform: loss %g vs ln 34", before);
    TrainConfig c;
    train_config_default(&c, 60, 16, 3);
    c.lr = 1e-2;
    c.progress = 0;
    c.eval_samples = 64;
    TrainResult r;
    train_run(m, &task, &c, &r);
    train_evaluate(m, &task, 99, 64, &after, &acc);
    cr_expect(after < log(16.0) + 0.1, "60 steps: held-out loss %g -> %g", before, after);
    cr_expect(r.losses[59] < r.losses[0], "training loss %g -> %g", r.losses[0], r.losses[59]);
    train_result_free(&r);
    model_free(m);
    task_free(&task);
}

// The whole training step (batches, forward, backward, clip, AdamW) for 1 and for 2 threads, at a
// size where the matmuls and the attention really run in parallel: the weights must be identical.
Test(train_threads, same_bytes_for_1_and_2_threads) {
    Task task;
    task_recall(&task, 32, 8, 16, 16, 0, 0.5);
    ModelGeometry g;
    geometry_init(&g, "thread test", 2, 64, 4, 2);
    g.vocab_size = task.vocab_size;
    g.d_ff = 128;
    g.max_seq_len = 32;
    const MixerOps *ops[2] = {&gqa_mixer, &gqa_mixer};
    float *w[2];
    size_t n = 0;
    for (int k = 0; k < 2; k++) {
        omp_set_num_threads(k + 1);
        Model *m = model_new(&g, ops, 11);
        TrainConfig c;
        train_config_default(&c, 4, 16, 11);
        c.progress = 0;
        c.eval_samples = 16;
        TrainResult r;
        train_run(m, &task, &c, &r);
        n = m->n_params;
        w[k] = malloc(sizeof(float) * n);
        memcpy(w[k], m->params, sizeof(float) * n);
        train_result_free(&r);
        model_free(m);
    }
    cr_expect(memcmp(w[0], w[1], sizeof(float) * n) == 0, "weights after 4 steps differ between 1 and 2 threads");
    free(w[0]);
    free(w[1]);
    task_free(&task);
}

// ---- tasks --------------------------------------------------------------------------------------

Test(train_tasks, recall_structure) {
    Task t;
    task_recall(&t, 32, 8, 16, 16, 2, 0.5);
    cr_assert_eq(t.vocab_size, 34);
    cr_expect_str_eq(task_token_str(&t, 0), ".");
    cr_expect_str_eq(task_token_str(&t, 1), ":");
    cr_expect_str_eq(task_token_str(&t, 2), "A");
    cr_expect_str_eq(task_token_str(&t, 18), "0");
    cr_expect_str_eq(task_token_str(&t, 33), "f");
    cr_expect_str_eq(task_token_str(&t, 34), "?");
    Rng r;
    rng_seed(&r, 1);
    int tok[32], tgt[32], copies = 0;
    for (int s = 0; s < 200; s++) {
        TaskSplit split = s % 2 ? SPLIT_TRAIN : SPLIT_HELDOUT;
        task_sample(&t, &r, split, tok, tgt);
        if (tok[18] != 1) {   // no ':' after 8 pairs + gap 2: a copy sample
            cr_expect_eq(split, SPLIT_TRAIN, "a held-out sample must be recall");
            copies++;
            continue;
        }
        int value_of[16], seen = 0;
        for (int k = 0; k < 16; k++) value_of[k] = -1;
        for (int i = 0; i < 8; i++) {
            int k = tok[2 * i] - 2, v = tok[2 * i + 1];
            cr_assert(k >= 0 && k < 16 && v >= 18 && v < 34, "pair %d: %d %d", i, tok[2 * i], v);
            cr_expect_eq(value_of[k], -1, "key %d repeated", k);
            value_of[k] = v;
            cr_expect_eq(tgt[2 * i], -1);
            cr_expect_eq(tgt[2 * i + 1], -1);
        }
        cr_expect(tok[16] == 0 && tok[17] == 0, "gap of 2 fillers");
        for (int i = 19; i < 32; i++) {
            int k = tok[i] - 2;
            cr_assert(k >= 0 && k < 16 && value_of[k] >= 0, "query %d is not a key of this sample", tok[i]);
            cr_expect_eq(tgt[i], value_of[k], "query at %d answered with %d, paired with %d", i, tgt[i], value_of[k]);
            seen++;
        }
        cr_expect_eq(seen, 13);
    }
    cr_expect(copies > 30 && copies < 70, "about half of the 100 training samples are copies, got %d", copies);
    char *js = task_config_json(&t), err[256];
    Task u;
    cr_assert_eq(task_from_json(&u, js, err, sizeof err), 0, "%s", err);
    cr_expect(u.n_pairs == 8 && u.gap == 2 && u.copy_frac == 0.5 && u.vocab_size == 34 && u.seq_len == 32);
    free(js);
}

Test(train_tasks, induction_copies_its_segment) {
    Task t;
    task_induction(&t, 32, 26);
    Rng r;
    rng_seed(&r, 2);
    int tok[32], tgt[32];
    for (int s = 0; s < 50; s++) {
        task_sample(&t, &r, SPLIT_TRAIN, tok, tgt);
        int first = 0;
        while (first < 32 && tgt[first] < 0) first++;
        cr_assert(first < 31, "nothing scored");
        int len = 32 - first;   // the copy runs to the end: segment length
        cr_expect(len >= 8 && len <= 16, "segment length %d", len);
        for (int i = first; i < 32; i++) cr_expect_eq(tok[i], tok[i - len], "position %d is not a copy", i);
        for (int i = first; i < 31; i++) cr_expect_eq(tgt[i], tok[i + 1]);
        cr_expect_eq(tgt[31], -1);
        for (int i = 0; i < first; i++) cr_expect_eq(tgt[i], -1);
    }
}

Test(train_tasks, corpus_grammar_and_file) {
    Task t;
    task_corpus(&t, 64, NULL);
    cr_expect_eq(t.vocab_size, 28);
    cr_expect_str_eq(task_token_str(&t, 0), "\xe2\x90\xa3");
    cr_expect_str_eq(task_token_str(&t, 1), ".");
    int a[64], at[64], b[64], bt[64];
    Rng r1, r2;
    rng_seed(&r1, 5);
    rng_seed(&r2, 5);
    task_sample(&t, &r1, SPLIT_TRAIN, a, at);
    task_sample(&t, &r2, SPLIT_TRAIN, b, bt);
    cr_expect(memcmp(a, b, sizeof a) == 0 && memcmp(at, bt, sizeof at) == 0, "same seed, same window");
    for (int i = 0; i < 63; i++) cr_expect_eq(at[i], a[i + 1], "targets are the next character");
    int ex[64], ext[64];
    task_example(&t, ex, ext);
    cr_expect_eq(ex[0] != 0 && ex[0] != 1, 1, "the example starts at a word");
    task_free(&t);

    char dir[256], path[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/text.txt", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    for (int i = 0; i < 60; i++) fputs("abc ab\n", f);
    fclose(f);
    task_corpus(&t, 16, path);
    cr_expect_eq(t.vocab_size, 5, "bytes \\n ' ' a b c");
    cr_expect_str_eq(task_token_str(&t, 0), "\\n");
    char *js = task_config_json(&t), err[256];
    Task u;
    cr_assert_eq(task_from_json(&u, js, err, sizeof err), 0, "%s", err);
    cr_expect_eq(u.vocab_size, 5);
    cr_expect_str_eq(task_token_str(&u, 4), "c");
    free(js);
    task_free(&t);
}

Test(train_tasks, bad_config_json) {
    Task t;
    char err[256];
    cr_expect_eq(task_from_json(&t, "{\"task\":\"poetry\",\"seq_len\":8}", err, sizeof err), -1);
    cr_expect(strstr(err, "unknown task 'poetry'"), "%s", err);
    cr_expect_eq(task_from_json(&t, "{\"task\":\"recall\",\"seq_len\":8,\"n_pairs\":8,\"n_keys\":16,\"n_values\":16,\"gap\":0}",
                                err, sizeof err), -1);
    cr_expect(strstr(err, "seq_len"), "%s", err);
    cr_expect_eq(task_from_json(&t, "[1]", err, sizeof err), -1);
}

// ---- the tools end to end -----------------------------------------------------------------------

Test(train_tools, train_then_infer) {
    char dir[256], args[1024], out[16384];
    test_tmpdir(dir, sizeof dir);
    snprintf(args, sizeof args, "--task induction --d-model 16 --heads 2 --steps 20 --batch 4 --seq-len 12 "
             "--out %s/m.safetensors --loss-plot %s/loss.svg", dir, dir);
    int rc = test_run(out, sizeof out, "train", args);
    cr_assert_eq(rc, 0, "train failed: %s", out);
    cr_expect(strstr(out, "step 20/20") && strstr(out, "held-out loss"), "progress and metrics: %s", out);
    // not a terminal: about one progress line per 10% of the steps
    int lines = 0;
    for (const char *p = out; (p = strstr(p, "step ")); p++) lines++;
    cr_expect(lines >= 9 && lines <= 12, "%d progress lines: %s", lines, out);
    cr_expect(!test_has_tmp_files(dir), "a temp file was left behind");
    cr_expect_eq(test_count_files(dir), 2, "weights and loss.svg");

    snprintf(args, sizeof args, "%s/m.safetensors --tokens 0,1,2,3,0,1 --out %s/run.safetensors", dir, dir);
    rc = test_run(out, sizeof out, "infer", args);
    cr_assert_eq(rc, 0, "infer failed: %s", out);
    cr_expect(strstr(out, "predicted"), "%s", out);
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/run.safetensors", dir);
    SafeTensors st;
    cr_assert_eq(st_load(&st, path, err, sizeof err), 0, "%s", err);
    int64_t ls[2] = {6, 26}, as[3] = {2, 6, 6};
    cr_expect(st_get_f32(&st, "logits", 2, ls, err, sizeof err) != NULL, "%s", err);
    const float *A = st_get_f32(&st, "attn.1", 3, as, err, sizeof err);
    cr_assert(A, "%s", err);
    for (int i = 0; i < 6; i++) {
        double s = 0;
        for (int j = 0; j < 6; j++) s += A[i * 6 + j];
        cr_expect(fabs(s - 1.0) < 1e-5, "attention row %d sums to %g", i, s);
    }
    st_free(&st);

    // same command, same bytes
    char first[512], second[512];
    snprintf(first, sizeof first, "%s/m.safetensors", dir);
    snprintf(args, sizeof args, "--task induction --d-model 16 --heads 2 --steps 20 --batch 4 --seq-len 12 "
             "--quiet --out %s/m2.safetensors", dir);
    cr_assert_eq(test_run(out, sizeof out, "train", args), 0, "%s", out);
    snprintf(second, sizeof second, "%s/m2.safetensors", dir);
    FILE *f1 = fopen(first, "rb"), *f2 = fopen(second, "rb");
    cr_assert(f1 && f2);
    int same = 1, c1, c2;
    do {
        c1 = fgetc(f1);
        c2 = fgetc(f2);
        if (c1 != c2) same = 0;
    } while (same && c1 != EOF);
    fclose(f1);
    fclose(f2);
    cr_expect(same, "two runs of the same command wrote different weights");
}

// Chapters 9-10 train one model at many pair counts: the count varies per sample, inside the bounds,
// covering every count; the chapter's fixed example keeps the full count; the knob survives the JSON.
Test(train_tasks, recall_with_varying_pair_counts) {
    Task t;
    task_recall(&t, 40, 12, 16, 16, 0, 0.0);
    task_recall_vary_pairs(&t, 3);
    Rng r;
    rng_seed(&r, 7);
    int tok[40], tgt[40], seen[13] = {0};
    for (int s = 0; s < 400; s++) {
        task_sample(&t, &r, SPLIT_HELDOUT, tok, tgt);
        int p = 0;
        while (tok[p] != 1) p++;          // ':' follows 2 * n_pairs tokens
        cr_assert(p % 2 == 0, "':' at odd position %d", p);
        int n = p / 2;
        cr_assert(n >= 3 && n <= 12, "pair count %d outside [3, 12]", n);
        seen[n]++;
        for (int i = p + 1; i < 40; i++) cr_expect(tgt[i] >= 18, "every query is scored");
    }
    for (int n = 3; n <= 12; n++) cr_expect(seen[n] > 10, "count %d drawn only %d times", n, seen[n]);
    task_example(&t, tok, tgt);
    cr_expect_eq(tok[24], 1, "the example keeps all 12 pairs");
    char *js = task_config_json(&t), err[256];
    Task u;
    cr_assert_eq(task_from_json(&u, js, err, sizeof err), 0, "%s", err);
    cr_expect_eq(u.n_pairs_min, 3);
    free(js);
    cr_expect_eq(task_from_json(&u, "{\"task\":\"recall\",\"seq_len\":40,\"n_pairs\":8,\"n_keys\":16,\"n_values\":16,"
                                "\"gap\":0,\"n_pairs_min\":9}", err, sizeof err), -1);
    cr_expect(strstr(err, "n_pairs_min"), "%s", err);
}

// The --mixer list and the flags that belong to one kind of layer: one line naming the problem.
Test(train_tools, mixer_list_errors) {
    static const struct { const char *args, *needle; } cases[] = {
        {"--mixer gdn,xyz --layers 2", "unknown mixer 'xyz'"},
        {"--mixer gdn,gated --layers 3", "do not divide --layers 3"},
        {"--mixer mha,gqa", "one kind of attention layer"},
        {"--mixer gdn,mamba2", "one kind of linear layer"},
        {"--mixer mha --gate none", "--gate: only with a gated layer"},
        {"--mixer mha --conv 4", "only with a linear layer"},
        {"--mixer gated --gate sideways", "--gate: expected none|elementwise|headwise"},
        {"--mixer gated --heads 4 --d-model 32 --rotary-fraction 0.3", "--rotary-fraction"},
        {"--mixer mha --task induction --pairs-min 2", "--pairs-min: only with --task recall"},
        {"--mixer mha --pairs 4 --pairs-min 6", "--pairs-min 6"},
        {"--mixer gdn,gdn --layers 2 --pattern 1 --window 4", "linear layers do not mix"},
        {"--mixer mamba2 --conv 0", "need a short conv"},
        {"--mixer lightning --linear-key-dim 8", "lightning layers have as many"},
        {"--mixer kda --linear-key-heads 2", "KDA has one key head per value head"},
    };
    char dir[256], args[1024], out[4096];
    test_tmpdir(dir, sizeof dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, "%s --steps 1 --out %s/m.safetensors", cases[i].args, dir);
        int rc = test_run(out, sizeof out, "train", args);
        cr_expect_eq(rc, 2, "'%s' exited %d: %s", cases[i].args, rc, out);
        cr_expect(strstr(out, cases[i].needle) != NULL, "'%s': expected '%s' in: %s", cases[i].args, cases[i].needle, out);
        cr_expect_eq(test_count_lines(out), 1, "'%s': one line, got: %s", cases[i].args, out);
    }
    cr_expect_eq(test_count_files(dir), 0, "nothing written");
}

// ---- experiment options: BOS, backcopy, curriculum, recipe flags, head statistics ---------------------

// With a BOS token every sample (both splits and the example) is "<s>" (unscored) followed by the task's
// own sample of seq_len - 1 tokens, drawn from the same random stream; the option survives the JSON.
Test(train_tasks, bos_starts_every_sample) {
    Task t[3], plain[3];
    task_recall(&t[0], 33, 8, 16, 16, 0, 0.5);
    task_recall(&plain[0], 32, 8, 16, 16, 0, 0.5);
    task_induction(&t[1], 33, 26);
    task_induction(&plain[1], 32, 26);
    task_backcopy(&t[2], 33, 16, 3);
    task_backcopy(&plain[2], 32, 16, 3);
    for (int k = 0; k < 3; k++) {
        task_set_bos(&t[k]);
        cr_assert_eq(t[k].vocab_size, plain[k].vocab_size + 1);
        int bos = t[k].vocab_size - 1;
        cr_expect_str_eq(task_token_str(&t[k], bos), "<s>");
        Rng r1, r2;
        rng_seed(&r1, 11);
        rng_seed(&r2, 11);
        int tok[33], tgt[33], ptok[32], ptgt[32];
        for (int s = 0; s < 40; s++) {
            TaskSplit split = s % 2 ? SPLIT_TRAIN : SPLIT_HELDOUT;
            task_sample(&t[k], &r1, split, tok, tgt);
            task_sample(&plain[k], &r2, split, ptok, ptgt);
            cr_assert(tok[0] == bos && tgt[0] == -1, "%s: position 0 is %d (target %d)", t[k].name, tok[0], tgt[0]);
            cr_assert(memcmp(tok + 1, ptok, sizeof ptok) == 0 && memcmp(tgt + 1, ptgt, sizeof ptgt) == 0,
                      "%s: the rest is the task's own sample", t[k].name);
            for (int i = 1; i < 33; i++) cr_assert(tok[i] != bos, "%s: BOS inside the sample", t[k].name);
        }
        task_example(&t[k], tok, tgt);
        task_example(&plain[k], ptok, ptgt);
        cr_expect(tok[0] == bos && memcmp(tok + 1, ptok, sizeof ptok) == 0, "%s: the example too", t[k].name);
        char *js = task_config_json(&t[k]), err[256];
        Task u;
        cr_assert_eq(task_from_json(&u, js, err, sizeof err), 0, "%s", err);
        cr_expect(u.bos == 1 && u.vocab_size == t[k].vocab_size, "%s: bos lost in %s", t[k].name, js);
        free(js);
        js = task_config_json(&plain[k]);
        cr_expect(strstr(js, "bos") == NULL, "no key without the option: %s", js);
        free(js);
    }
    Task u;
    char err[256];
    cr_expect_eq(task_from_json(&u, "{\"task\":\"induction\",\"seq_len\":32,\"n_symbols\":26,\"bos\":2}", err, sizeof err), -1);
    cr_expect(strstr(err, "bos"), "%s", err);
}

// After a trigger the stream repeats the token before it; elsewhere it follows one fixed bigram chain
// (the same successor counts from two independent streams, far from uniform). Scored on every next token.
Test(train_tasks, backcopy_triggers_repeat_the_token_before) {
    Task t;
    task_backcopy(&t, 32, 16, 3);
    cr_assert_eq(t.vocab_size, 19);
    cr_expect_str_eq(task_token_str(&t, 0), "X");
    cr_expect_str_eq(task_token_str(&t, 3), "a");
    cr_expect(task_is_trigger(&t, 2) && !task_is_trigger(&t, 3));
    int count[2][19] = {{0}}, triggers = 0, tok[32], tgt[32];
    for (int run = 0; run < 2; run++) {
        Rng r;
        rng_seed(&r, 100 + (uint64_t)run);
        for (int s = 0; s < 1500; s++) {
            task_sample(&t, &r, SPLIT_TRAIN, tok, tgt);
            for (int i = 0; i < 31; i++) {
                cr_assert_eq(tgt[i], tok[i + 1], "the target is the next token");
                if (i >= 1 && task_is_trigger(&t, tok[i])) {
                    cr_assert_eq(tok[i + 1], tok[i - 1], "after trigger %d at %d: %d, not %d", tok[i], i, tok[i + 1], tok[i - 1]);
                    triggers++;
                } else if (tok[i] == 3) {
                    count[run][tok[i + 1]]++;   // successors of "a" come from its bigram row
                }
            }
            cr_assert_eq(tgt[31], -1);
        }
    }
    cr_expect(triggers > 2 * 1500 * 31 / 19 / 4, "triggers are common enough to learn from: %d", triggers);
    int n0 = 0, n1 = 0, best = 0;
    for (int b = 0; b < 19; b++) {
        n0 += count[0][b];
        n1 += count[1][b];
        if (count[0][b] > count[0][best]) best = b;
    }
    cr_assert(n0 > 500 && n1 > 500);
    cr_expect(count[0][best] > 3 * n0 / 19, "a bigram row is far from uniform: best %d of %d", count[0][best], n0);
    for (int b = 0; b < 19; b++) {
        double p0 = (double)count[0][b] / n0, p1 = (double)count[1][b] / n1;
        cr_expect(fabs(p0 - p1) < 0.06, "successor %d of 'a': %.3f vs %.3f in another stream", b, p0, p1);
    }
    char *js = task_config_json(&t), err[256];
    Task u;
    cr_assert_eq(task_from_json(&u, js, err, sizeof err), 0, "%s", err);
    cr_expect(u.kind == TASK_BACKCOPY && u.n_triggers == 3 && u.n_symbols == 16 && u.vocab_size == 19);
    free(js);
}

// The curriculum raises the largest pair count from pairs_min (step 0) to n_pairs (its last step), never
// down; without one, or without a pair range, every step has the full count.
Test(train_loop, curriculum_grows_the_pair_count) {
    Task t;
    task_recall(&t, 48, 16, 16, 16, 0, 0.5);
    TrainConfig c;
    train_config_default(&c, 100, 4, 1);
    for (int s = 0; s < 100; s++) cr_assert_eq(train_curriculum_pairs(&c, &t, s), 16, "off: full count");
    c.curriculum = 31;
    cr_expect_eq(train_curriculum_pairs(&c, &t, 0), 16, "no pair range: the curriculum does nothing");
    task_recall_vary_pairs(&t, 1);
    cr_expect_eq(train_curriculum_pairs(&c, &t, 0), 1);
    cr_expect_eq(train_curriculum_pairs(&c, &t, 15), 8);
    cr_expect_eq(train_curriculum_pairs(&c, &t, 30), 16);
    for (int s = 1; s < 100; s++) {
        int a = train_curriculum_pairs(&c, &t, s - 1), b = train_curriculum_pairs(&c, &t, s);
        cr_assert(b >= a && b >= 1 && b <= 16, "step %d: %d after %d", s, b, a);
    }
    // the batches of step 0 hold exactly one pair
    Task stage = t;
    stage.n_pairs = train_curriculum_pairs(&c, &t, 0);
    Rng r;
    rng_seed(&r, 3);
    int tok[48], tgt[48];
    for (int s = 0; s < 50; s++) {
        task_sample(&stage, &r, SPLIT_HELDOUT, tok, tgt);
        cr_expect_eq(tok[2], 1, "one pair, then ':'");
    }
}

// The statistics of common/headstats.h on heads whose answers are known.
Test(train_tasks, head_statistics_of_known_heads) {
    enum { T = 8 };
    int tok[T] = {5, 6, 7, 5, 6, 7, 5, 9};   // token 5 repeats at 3 and 6, 6 at 4, 7 at 5
    float prev[T * T] = {0}, first[T * T] = {0}, ind[T * T] = {0}, unif[T * T] = {0};
    for (int t = 0; t < T; t++) {
        prev[t * T + (t ? t - 1 : 0)] = 1.0f;
        first[t * T] = 1.0f;
        for (int s = 0; s <= t; s++) unif[t * T + s] = 1.0f / (t + 1);
    }
    // induction: rows 3..6 read the token after their first copy (1, 2, 3, 4); the others the token itself
    for (int t = 0; t < T; t++) ind[t * T + (t >= 3 && t <= 6 ? t - 2 : t)] = 1.0f;
    HeadStats s[4];
    memset(s, 0, sizeof s);
    headstats_add(&s[0], prev, tok, T, 1);
    headstats_add(&s[1], first, tok, T, 1);
    headstats_add(&s[2], ind, tok, T, 1);
    headstats_add(&s[3], unif, tok, T, 1);
    double m[4][HS_N];
    for (int k = 0; k < 4; k++) headstats_mean(&s[k], m[k]);
    cr_expect_eq(s[0].rows, T - 1);
    cr_expect(m[0][HS_PREV] == 1.0 && m[0][HS_DISTANCE] == 1.0 && m[0][HS_ENTROPY] == 0.0 && m[0][HS_FIRST] == 1.0 / 7);
    cr_expect(m[1][HS_FIRST] == 1.0 && fabs(m[1][HS_DISTANCE] - 4.0) < 1e-12, "first-token head: distance (1+..+7)/7");
    cr_expect_eq(s[2].induction_rows, 4, "rows 3..6 have an earlier copy (row 7's token 9 does not)");
    cr_expect(m[2][HS_INDUCTION] == 1.0 && m[0][HS_INDUCTION] == 0.0, "induction %g, prev head %g", m[2][HS_INDUCTION], m[0][HS_INDUCTION]);
    cr_expect(fabs(m[3][HS_FIRST] - headstats_uniform_first(T, 1)) < 1e-7);
    double ent = 0.0;
    for (int t = 1; t < T; t++) ent += log(t + 1.0);
    cr_expect(fabs(m[3][HS_ENTROPY] - ent / 7) < 1e-6, "uniform rows: ln(t+1)");
}

// The recipe flags reach the weights file's geometry and come back on load; bad values are one line.
Test(train_tools, recipe_flags) {
    static const struct { const char *args, *needle; } cases[] = {
        {"--mixer gdn --a-init 2,1", "--a-init: expected LO,HI with 0 < LO <= HI"},
        {"--mixer gdn --dt-init 0.1", "--dt-init: expected LO,HI"},
        {"--mixer mha --a-init 1,2", "--a-init: only with gdn, kda or mamba2"},
        {"--mixer lightning --dt-init 0.1,1", "--dt-init: only with gdn, kda or mamba2"},
        {"--mixer gdn --slope-scale 2", "--slope-scale: only with lightning"},
        {"--mixer gdn --curriculum 10", "--curriculum: only with --pairs-min"},
        {"--mixer gdn --pairs-min 1 --curriculum 10", "--curriculum 10: more than --steps 1"},
        {"--mixer mha --pairs 8 --seq-len 18 --bos", "bos: 8 pairs with gap 0 need seq_len >= 19"},
        {"--mixer mha --lr-min-frac 2", "--lr-min-frac"},
    };
    char dir[256], args[1024], out[4096];
    test_tmpdir(dir, sizeof dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, "%s --steps 1 --out %s/m.safetensors", cases[i].args, dir);
        int rc = test_run(out, sizeof out, "train", args);
        cr_expect_eq(rc, 2, "'%s' exited %d: %s", cases[i].args, rc, out);
        cr_expect(strstr(out, cases[i].needle) != NULL, "'%s': expected '%s' in: %s", cases[i].args, cases[i].needle, out);
        cr_expect_eq(test_count_lines(out), 1, "'%s': one line, got: %s", cases[i].args, out);
    }
    cr_expect_eq(test_count_files(dir), 0, "nothing written");

    snprintf(args, sizeof args, "--mixer mamba2 --layers 1 --d-model 16 --heads 2 --a-init 2,3 --dt-init 0.05,0.2 "
             "--steps 0 --quiet --out %s/m.safetensors", dir);
    cr_assert_eq(test_run(out, sizeof out, "train", args), 0, "%s", out);
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    Model *m = model_load(path, mixer_by_name, NULL, err, sizeof err);
    cr_assert(m, "%s", err);
    cr_expect(m->g.linear_a_init_min == 2.0 && m->g.linear_a_init_max == 3.0 && m->g.linear_dt_init_min == 0.05 &&
              m->g.linear_dt_init_max == 0.2, "the ranges are in the geometry");
    model_free(m);
}

// measure end to end: a BOS backcopy model before training attends almost uniformly, so its first-token
// weight is near what uniform attention gives; every head of both layers is reported.
Test(train_tools, measure_reports_heads) {
    char dir[256], args[1024], out[16384];
    test_tmpdir(dir, sizeof dir);
    snprintf(args, sizeof args, "--task backcopy --bos --d-model 16 --heads 2 --steps 0 --quiet --out %s/m.safetensors", dir);
    cr_assert_eq(test_run(out, sizeof out, "train", args), 0, "%s", out);
    snprintf(args, sizeof args, "%s/m.safetensors --samples 16", dir);
    cr_assert_eq(test_run(out, sizeof out, "measure", args), 0, "%s", out);
    cr_expect(strstr(out, "\"task\":\"backcopy\"") && strstr(out, "\"trigger_accuracy\":") &&
              strstr(out, "\"layer\":1,\"head\":1") && strstr(out, "\"first_dormant\":"), "%s", out);
    const char *u = strstr(out, "\"uniform_first\":"), *f = strstr(out, "\"first\":");
    cr_assert(u && f, "%s", out);
    double uf = atof(u + 16), ff = atof(f + 8);
    cr_expect(fabs(ff - uf) < 0.2 * uf, "untrained head: first %g vs uniform %g", ff, uf);
    cr_expect_eq(test_run(out, sizeof out, "measure", "/nonexistent.safetensors"), 2, "%s", out);
}

// Topics: the topic token first, a stream whose successors follow that topic's own chain (two topics'
// chains differ), then a copy of the stream's end; scored inside the stream and inside the copy; the
// layout helper finds the parts, with and without BOS.
Test(train_tasks, topics_stream_then_copy) {
    Task t;
    task_topics(&t, 32, 16, 4);
    cr_assert_eq(t.vocab_size, 20);
    cr_expect_str_eq(task_token_str(&t, 0), "T1");
    cr_expect_str_eq(task_token_str(&t, 4), "a");
    Rng r;
    rng_seed(&r, 21);
    int tok[33], tgt[33], succ[2][16] = {{0}}, n[2] = {0, 0};
    for (int smp = 0; smp < 2000; smp++) {
        task_sample(&t, &r, SPLIT_TRAIN, tok, tgt);
        cr_assert(tok[0] >= 0 && tok[0] < 4, "topic first");
        int topic, copy;
        task_topics_layout(&t, tok, &topic, &copy);
        cr_assert_eq(topic, 0);
        int s = 32 - copy;
        cr_assert(s >= 8 && s <= 15, "copy of %d tokens", s);
        for (int i = 1; i < 32; i++) cr_assert(tok[i] >= 4, "symbols after the topic");
        for (int i = copy; i < 32; i++) cr_assert_eq(tok[i], tok[i - s], "position %d is a copy", i);
        cr_expect_eq(tgt[0], -1);
        cr_expect_eq(tgt[copy - 1], -1, "the copy's first token is not predictable");
        cr_expect_eq(tgt[31], -1);
        for (int i = 1; i < 31; i++)
            if (i != copy - 1) cr_assert_eq(tgt[i], tok[i + 1], "scored next token at %d", i);
        if (tok[0] < 2)   // successors of "a" inside the stream, by topic
            for (int i = 1; i + 1 < copy; i++)
                if (tok[i] == 4) { succ[tok[0]][tok[i + 1] - 4]++; n[tok[0]]++; }
    }
    cr_assert(n[0] > 300 && n[1] > 300);
    double tv = 0.0;   // total variation distance between the two topics' rows for "a"
    for (int b = 0; b < 16; b++) tv += 0.5 * fabs((double)succ[0][b] / n[0] - (double)succ[1][b] / n[1]);
    cr_expect(tv > 0.3, "topics 1 and 2 follow different chains (distance %.2f)", tv);
    char *js = task_config_json(&t), err[256];
    Task u;
    cr_assert_eq(task_from_json(&u, js, err, sizeof err), 0, "%s", err);
    cr_expect(u.kind == TASK_TOPICS && u.n_topics == 4 && u.vocab_size == 20);
    free(js);
    task_set_bos(&t);   // with BOS everything moves one position right
    task_sample(&t, &r, SPLIT_HELDOUT, tok, tgt);
    int topic, copy;
    task_topics_layout(&t, tok, &topic, &copy);
    cr_expect(topic == 1 && tok[1] < 4 && copy > 1 && copy < 32 && tok[copy] == tok[copy - (32 - copy)]);
}
