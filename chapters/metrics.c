// metrics.c: reading data/experiments/GROUP.jsonl (see metrics.h).
#include "metrics.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

// A number field of a run in [0, 1], or the file's one-line error.
static double unit_number(const cJSON *run, const char *key, const char *path, int line) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(run, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble <= 1.0))
        die_user("%s: line %d: '%s' must be a number in [0, 1]", path, line, key);
    return v->valuedouble;
}

// Adds one run (a parsed line) of the wanted setting to r.
static void add_run(SeedRuns *r, const cJSON *run, const char *path, int line) {
    if (r->n_seeds == METRICS_MAX_SEEDS) die_user("%s: more than %d runs of setting '%s'", path, METRICS_MAX_SEEDS, r->setting);
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(run, "seed");
    const cJSON *pairs = cJSON_GetObjectItemCaseSensitive(run, "recall_by_pairs");
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(run, "command");
    if (!cJSON_IsNumber(seed) || seed->valuedouble < 0 || seed->valuedouble != floor(seed->valuedouble))
        die_user("%s: line %d: 'seed' must be a non-negative integer", path, line);
    int n = cJSON_IsArray(pairs) ? cJSON_GetArraySize(pairs) : 0;
    if (n < 1 || n > METRICS_MAX_PAIRS)
        die_user("%s: line %d: 'recall_by_pairs' must be an array of 1 to %d accuracies", path, line, METRICS_MAX_PAIRS);
    if (r->n_seeds > 0 && n != r->n_pairs)
        die_user("%s: line %d: %d pair counts, but the setting's first run has %d", path, line, n, r->n_pairs);
    int s = r->n_seeds++;
    r->n_pairs = n;
    r->seeds[s] = (int)seed->valuedouble;
    r->accuracy[s] = unit_number(run, "accuracy", path, line);
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(pairs, i);
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble <= 1.0))
            die_user("%s: line %d: recall_by_pairs[%d] must be a number in [0, 1]", path, line, i);
        r->acc[s][i] = v->valuedouble;
    }
    if (s == 0 && cJSON_IsString(cmd)) snprintf(r->command, sizeof r->command, "%s", cmd->valuestring);
}

void metrics_each_run(const char *path, const char *setting, void (*each)(const cJSON *run, int line, void *ctx),
                      void *ctx) {
    char why[256];
    FILE *f = open_regular(path, NULL, why, sizeof why);
    if (!f) die_user("%s: %s (make experiments writes it)", path, why);
    char buf[8192];
    int line = 0;
    while (fgets(buf, sizeof buf, f)) {
        line++;
        size_t len = strlen(buf);
        if (len == sizeof buf - 1 && buf[len - 1] != '\n') {
            fclose(f);
            die_user("%s: line %d is longer than %zu bytes", path, line, sizeof buf - 2);
        }
        if (strspn(buf, " \t\r\n") == len) continue;
        cJSON *run = cJSON_Parse(buf);
        if (!cJSON_IsObject(run)) {
            cJSON_Delete(run);
            fclose(f);
            die_user("%s: line %d is not a JSON object", path, line);
        }
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(run, "setting");
        if (!cJSON_IsString(st)) {
            cJSON_Delete(run);
            fclose(f);
            die_user("%s: line %d has no 'setting'", path, line);
        }
        if (strcmp(st->valuestring, setting) == 0) each(run, line, ctx);
        cJSON_Delete(run);
    }
    fclose(f);
}

typedef struct {
    SeedRuns *r;
    const char *path;
} LoadCtx;

static void load_one(const cJSON *run, int line, void *ctx) {
    LoadCtx *c = ctx;
    add_run(c->r, run, c->path, line);
}

void metrics_load(SeedRuns *r, const char *dir, const char *group, const char *setting) {
    memset(r, 0, sizeof *r);
    snprintf(r->group, sizeof r->group, "%s", group);
    snprintf(r->setting, sizeof r->setting, "%s", setting);
    char name[128], path[1024];
    snprintf(name, sizeof name, "%s.jsonl", group);
    path_join(path, sizeof path, dir, name);
    LoadCtx c = {.r = r, .path = path};
    metrics_each_run(path, setting, load_one, &c);
    if (r->n_seeds == 0) die_user("%s: no run of setting '%s'", path, setting);
    for (int i = 0; i < r->n_pairs; i++) {
        double sum = 0.0, lo = 1.0, hi = 0.0;
        for (int s = 0; s < r->n_seeds; s++) {
            sum += r->acc[s][i];
            lo = fmin(lo, r->acc[s][i]);
            hi = fmax(hi, r->acc[s][i]);
        }
        r->mean[i] = sum / r->n_seeds;
        r->lo[i] = lo;
        r->hi[i] = hi;
    }
}

int metrics_solved(const SeedRuns *r, int n, double frac) {
    CHECK(n >= 1 && n <= r->n_pairs, "metrics_solved: pair count %d outside 1..%d", n, r->n_pairs);
    int k = 0;
    for (int s = 0; s < r->n_seeds; s++) k += r->acc[s][n - 1] >= frac;
    return k;
}
