// metrics.h: the metrics `make experiments` writes (tools/experiments.sh: data/experiments/GROUP.jsonl,
// one trained model a line: its setting, seed, ./train command, held-out accuracy and recall accuracy
// at each pair count), read back for the figures that compare settings over several seeds.
//
// The chapters ship one model per setting (data/weights); these lines are every seed's result, so a
// figure can draw the mean and the spread instead of one lucky or unlucky run.
#pragma once

#include <cJSON.h>

#define METRICS_MAX_SEEDS 16
#define METRICS_MAX_PAIRS 64

typedef struct {
    char group[64], setting[64];
    int n_seeds;
    int seeds[METRICS_MAX_SEEDS];               // ascending, as the file lists them
    double accuracy[METRICS_MAX_SEEDS];         // held-out accuracy of each seed (0..1)
    int n_pairs;                                // recall measured at 1..n_pairs pairs
    double acc[METRICS_MAX_SEEDS][METRICS_MAX_PAIRS];   // (n_seeds, n_pairs) recall accuracy (0..1)
    double mean[METRICS_MAX_PAIRS], lo[METRICS_MAX_PAIRS], hi[METRICS_MAX_PAIRS];   // over seeds: mean, min, max
    char command[1024];                         // the first seed's ./train command
} SeedRuns;

// Reads every run of `setting` from DIR/GROUP.jsonl. Exits with one line naming the file when it is
// missing or malformed, holds no run of that setting, more than METRICS_MAX_SEEDS, or runs that disagree
// on the pair counts.
void metrics_load(SeedRuns *r, const char *dir, const char *group, const char *setting);
// How many seeds recall at least `frac` (0..1) of the queries with n pairs (1 <= n <= r->n_pairs).
int metrics_solved(const SeedRuns *r, int n, double frac);
// Calls each(run, line, ctx) for every run (line) of `setting` in the JSON-lines file at path, blank lines
// skipped. Exits with one line naming the file when it cannot be opened, or a line is too long, is not a
// JSON object or has no 'setting'. Both readers of the experiments' files go through it.
void metrics_each_run(const char *path, const char *setting, void (*each)(const cJSON *run, int line, void *ctx),
                      void *ctx);
