// test_metrics.c: reading the metrics of `make experiments` (chapters/metrics.c), and the committed
// metrics against the list that made them (tools/experiments.txt).
#include <cJSON.h>
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
// data/experiments/GROUP.jsonl, in the list's order, made by exactly "train FLAGS --seed S": the figures
// draw what the list says. (Any task: only the setting, seed and command of each run are read here.)
Test(metrics, committed_metrics_match_the_list) {
    char path[1024], line[4096];
    snprintf(path, sizeof path, "%s/tools/experiments.txt", test_root());
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot read %s", path);
    int settings = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0] == '#' || line[0] == 0) continue;
        char *group = strtok(line, "|"), *setting = strtok(NULL, "|"), *seeds = strtok(NULL, "|"), *flags = strtok(NULL, "");
        cr_assert(group && setting && seeds && flags, "experiments.txt: a line without 4 fields");
        char jpath[1024], run[8192];
        snprintf(jpath, sizeof jpath, "%s/data/experiments/%s.jsonl", test_root(), group);
        FILE *j = fopen(jpath, "r");
        cr_assert(j, "%s %s: no %s", group, setting, jpath);
        char *save = NULL;
        int want = atoi(strtok_r(seeds, " ", &save)), found = 0;
        while (fgets(run, sizeof run, j)) {
            cJSON *r = cJSON_Parse(run);
            cr_assert(cJSON_IsObject(r), "%s: a line is not a JSON object", jpath);
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "setting");
            const cJSON *sd = cJSON_GetObjectItemCaseSensitive(r, "seed");
            const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(r, "command");
            if (cJSON_IsString(st) && strcmp(st->valuestring, setting) == 0) {
                cr_assert(want >= 0, "%s %s: more runs than the list's seeds", group, setting);
                cr_expect(cJSON_IsNumber(sd) && sd->valueint == want, "%s %s: run %d is not seed %d", group, setting, found,
                          want);
                char expect[1200];
                snprintf(expect, sizeof expect, "train %s --seed %d", flags, want);
                cr_expect(cJSON_IsString(cmd) && strcmp(cmd->valuestring, expect) == 0,
                          "%s %s seed %d: made by another command than the list's", group, setting, want);
                found++;
                const char *next = strtok_r(NULL, " ", &save);
                want = next ? atoi(next) : -1;
            }
            cJSON_Delete(r);
        }
        fclose(j);
        cr_expect_eq(want, -1, "%s %s: the list's seed %d has no run", group, setting, want);
        settings++;
    }
    fclose(f);
    cr_assert_gt(settings, 0);
}
