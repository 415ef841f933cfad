// helpers.c: process and file helpers for the tests.
#include "helpers.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

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
