// test_metrics.c: reading the metrics of `make experiments` (chapters/metrics.c), and the committed
// metrics against the list that made them (tools/experiments.txt).
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "metrics.h"

// Writes text to DIR/NAME.
static void write_file(const char *dir, const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

#define RUN(setting, seed, acc, pairs) \
    "{\"setting\":\"" setting "\",\"command\":\"train --x --seed " #seed "\",\"seed\":" #seed ",\"accuracy\":" acc \
    ",\"recall_by_pairs\":[" pairs "]}\n"

Test(metrics, mean_min_max_over_the_seeds_of_one_setting) {
    char dir[256];
    test_tmpdir(dir, sizeof dir);
    write_file(dir, "g.jsonl", RUN("a", 1, "0.9", "1,0.5,0.2") RUN("b", 1, "0.1", "0,0,0") "\n"
                               RUN("a", 2, "0.6", "1,1,0.8") RUN("a", 3, "0.3", "0.7,0.3,0.2"));
    SeedRuns r;
    metrics_load(&r, dir, "g", "a");
    cr_assert_eq(r.n_seeds, 3);
    cr_assert_eq(r.n_pairs, 3);
    cr_assert(r.seeds[0] == 1 && r.seeds[1] == 2 && r.seeds[2] == 3);
    cr_assert_float_eq(r.accuracy[1], 0.6, 1e-12);
    cr_assert_float_eq(r.mean[0], 0.9, 1e-12);
    cr_assert_float_eq(r.lo[0], 0.7, 1e-12);
    cr_assert_float_eq(r.hi[1], 1.0, 1e-12);
    cr_assert_float_eq(r.mean[2], 0.4, 1e-12);
    cr_assert_float_eq(r.lo[2], 0.2, 1e-12);
    cr_assert_str_eq(r.command, "train --x --seed 1");
    cr_assert_eq(metrics_solved(&r, 1, 0.9), 2);
    cr_assert_eq(metrics_solved(&r, 3, 0.8), 1);
    metrics_load(&r, dir, "g", "b");
    cr_assert_eq(r.n_seeds, 1);
    cr_assert_float_eq(r.hi[2], 0.0, 1e-12);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

// The folder of a bad file, removed at exit (metrics_load exits the test's process).
static char bad_dir[256];
static void remove_bad_dir(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", bad_dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", bad_dir);
}

// Each bad file: metrics_load exits 2 (one line naming the file; the bad-input table checks the wording).
static void load_bad(const char *text, const char *setting) {
    test_tmpdir(bad_dir, sizeof bad_dir);
    atexit(remove_bad_dir);
    write_file(bad_dir, "g.jsonl", text);
    cr_assert(freopen("/dev/null", "w", stderr), "cannot silence stderr");
    SeedRuns r;
    metrics_load(&r, bad_dir, "g", setting);
}
Test(metrics, missing_setting_exits_2, .exit_code = 2) { load_bad(RUN("a", 1, "0.5", "1,0.5"), "b"); }
Test(metrics, missing_file_exits_2, .exit_code = 2) {
    SeedRuns r;
    cr_assert(freopen("/dev/null", "w", stderr), "cannot silence stderr");
    metrics_load(&r, "/nonexistent-folder", "g", "a");
}
Test(metrics, malformed_line_exits_2, .exit_code = 2) { load_bad(RUN("a", 1, "0.5", "1,0.5") "{\"setting\":", "a"); }
Test(metrics, pair_counts_that_differ_exit_2, .exit_code = 2) {
    load_bad(RUN("a", 1, "0.5", "1,0.5") RUN("a", 2, "0.5", "1,0.5,0.2"), "a");
}
Test(metrics, accuracy_outside_0_1_exits_2, .exit_code = 2) { load_bad(RUN("a", 1, "0.5", "1,1.5"), "a"); }

// Every line of tools/experiments.txt (GROUP|SETTING|SEEDS|FLAGS) has one run per seed in the committed
// data/experiments/GROUP.jsonl, made by exactly "train FLAGS --seed S": the figures draw what the list says.
Test(metrics, committed_metrics_match_the_list) {
    char path[1024], line[4096];
    snprintf(path, sizeof path, "%s/tools/experiments.txt", test_root());
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot read %s", path);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/data/experiments", test_root());
    int settings = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0] == '#' || line[0] == 0) continue;
        char *group = strtok(line, "|"), *setting = strtok(NULL, "|"), *seeds = strtok(NULL, "|"), *flags = strtok(NULL, "");
        cr_assert(group && setting && seeds && flags, "experiments.txt: a line without 4 fields");
        SeedRuns r;
        metrics_load(&r, dir, group, setting);
        int k = 0;
        for (char *s = strtok(seeds, " "); s; s = strtok(NULL, " "), k++) {
            cr_assert(k < r.n_seeds, "%s %s: seed %s has no run", group, setting, s);
            cr_expect_eq(r.seeds[k], atoi(s), "%s %s: run %d is seed %d, expected %s", group, setting, k, r.seeds[k], s);
        }
        cr_expect_eq(k, r.n_seeds, "%s %s: %d runs, the list has %d seeds", group, setting, r.n_seeds, k);
        char want[1200];
        snprintf(want, sizeof want, "train %s --seed %d", flags, r.seeds[0]);
        cr_expect_str_eq(r.command, want, "%s %s: made by another command", group, setting);
        settings++;
    }
    fclose(f);
    cr_assert_gt(settings, 0);
}
