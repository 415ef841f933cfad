// helpers.c: process and file helpers for the tests.
#include "helpers.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"

const char *test_bindir(void) {
    const char *d = getenv("ATTN_BINDIR");
    return d && *d ? d : ".";
}

const char *test_root(void) {
    const char *d = getenv("ATTN_ROOT");
    return d && *d ? d : ".";
}

int test_run(char *out, size_t cap, const char *prog, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s/%s' %s 2>&1", test_root(), test_bindir(), prog, args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0;
    int c;
    while ((c = fgetc(p)) != EOF)
        if (n + 1 < cap) out[n++] = (char)c;
    if (cap) out[n] = '\0';
    int st = pclose(p);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

int test_count_lines(const char *s) {
    int n = 0;
    for (const char *p = s; *p; p++)
        if (*p == '\n') n++;
    size_t len = strlen(s);
    if (len && s[len - 1] != '\n') n++;
    return n;
}

const char *test_tmpdir(char *buf, size_t cap) {
    snprintf(buf, cap, "/tmp/attn-test-XXXXXX");
    if (!mkdtemp(buf)) buf[0] = '\0';
    return buf;
}

int test_has_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) found = 1;
    closedir(d);
    return found;
}

int test_count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

double test_mixer_loss(const Mixer *m, float *out, const float *x, const float *params, const float *R, int B, int T) {
    float *act = mallocCheck(sizeof(float) * m->ops->act_floats(m->g, m->layer, B, T));
    m->ops->forward(m, out, act, x, params, B, T);
    free(act);
    double l = 0;
    for (int i = 0; i < B * T * m->g->d_model; i++) l += (double)out[i] * R[i];
    return l;
}

double test_mixer_fd_rel_error(const Mixer *m, float *v, const float *ana, size_t n, float *out, const float *x,
                               const float *params, const float *R, int B, int T) {
    const float h = 1e-2f;
    double num2 = 0, den2 = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = v[i];
        v[i] = keep + h;
        double lp = test_mixer_loss(m, out, x, params, R, B, T);
        v[i] = keep - h;
        double lm = test_mixer_loss(m, out, x, params, R, B, T);
        v[i] = keep;
        double num = (lp - lm) / ((double)(keep + h) - (double)(keep - h));
        num2 += (num - ana[i]) * (num - ana[i]);
        den2 += (double)ana[i] * ana[i];
    }
    return sqrt(num2 / (den2 > 0 ? den2 : 1e-30));
}
