// contactsheet: writes FIGURES/README.md, every figure as a thumbnail with its title, its one-line claim
// and the command that regenerates it, so a reader sees the whole set at once.
//
//   ./contactsheet figures            (run by `make figures` after the chapter programs)
//   ./contactsheet --check figures    exit 1 if figures/README.md is not what the SVGs say
//
// The SVGs are the source: every figure writes its title into <title> and its claim into <desc>
// (common/plot.c), so the sheet cannot drift from the figures, and a test runs --check.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli.h"

#define MAX_FIGS 512

typedef struct {
    char dir[64], base[128];   // "ch03", "05_mha_schematic"
    char title[512], desc[1024];
    int has_png;
} Figure;

// Text between <tag> and </tag> in s, XML entities decoded, into out ("" when absent).
static void tag_text(const char *s, const char *tag, char *out, size_t cap) {
    char open[32], close[32];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    out[0] = '\0';
    const char *a = strstr(s, open), *b = a ? strstr(a, close) : NULL;
    if (!a || !b) return;
    a += strlen(open);
    size_t n = 0;
    static const struct { const char *ent; char c; } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}};
    while (a < b && n + 1 < cap) {
        int hit = 0;
        for (size_t k = 0; k < sizeof ents / sizeof ents[0] && !hit; k++)
            if (!strncmp(a, ents[k].ent, strlen(ents[k].ent))) {
                out[n++] = ents[k].c;
                a += strlen(ents[k].ent);
                hit = 1;
            }
        if (!hit) {
            out[n++] = *a == '\n' ? ' ' : *a;
            a++;
        }
    }
    out[n] = '\0';
}

static char *slurp(const char *path, size_t max) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = mallocCheck(max + 1);
    size_t n = fread(buf, 1, max, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Entries of dir, sorted: its folders (want_dirs) or its .svg files; returns the count (-1 when dir
// cannot be read), names malloc'd.
static int list_dir(const char *dir, char **names, int cap, int want_dirs) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
        DIR *sub = opendir(path);
        int is_dir = sub != NULL;
        if (sub) closedir(sub);
        size_t len = strlen(e->d_name);
        if (want_dirs ? is_dir : (!is_dir && len > 4 && !strcmp(e->d_name + len - 4, ".svg"))) {
            names[n] = mallocCheck(len + 1);
            memcpy(names[n++], e->d_name, len + 1);
        }
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, by_name);
    return n;
}

// Markdown-safe: table cells cannot hold '|'.
static void put_cell(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '|') fputc('\\', f);
        fputc(*s, f);
    }
}

static void write_sheet(FILE *f, const Figure *fig, int n) {
    fputs("# Figures\n\n"
          "Every figure the chapter programs draw: a thumbnail (click for the full PNG; each has an SVG beside it),\n"
          "its title and one-line claim, and the command that regenerates it. This file is written by\n"
          "`./contactsheet figures` (part of `make figures`) from the figures' own SVG `<title>` and `<desc>`, and\n"
          "a test checks that it is current. The chapters' `_raw.png` files (one flat block per matrix cell) are\n"
          "not listed.\n",
          f);
    const char *dir = "";
    for (int i = 0; i < n; i++) {
        const Figure *g = &fig[i];
        if (strcmp(g->dir, dir)) {
            dir = g->dir;
            int is_chapter = !strncmp(dir, "ch", 2) && strlen(dir) == 4;
            fprintf(f, "\n## %s\n\n", dir);
            if (is_chapter) fprintf(f, "Regenerate: `make %s && ./%s` (writes every figure of the chapter).\n\n", dir, dir);
            fputs("| figure | title and claim | command |\n|---|---|---|\n", f);
        }
        int is_chapter = !strncmp(g->dir, "ch", 2) && strlen(g->dir) == 4;
        if (g->has_png) fprintf(f, "| <a href=\"%s/%s.png\"><img src=\"%s/%s.png\" width=\"240\"></a><br>`%s` | ", g->dir,
                                g->base, g->dir, g->base, g->base);
        else fprintf(f, "| [`%s`](%s/%s.svg) | ", g->base, g->dir, g->base);
        fputs("**", f);
        put_cell(f, g->title);
        fputs("**<br>", f);
        put_cell(f, g->desc);
        if (is_chapter) fprintf(f, " | `./%s` |\n", g->dir);
        else fputs(" | see the README |\n", f);
    }
}

int main(int argc, char **argv) {
    int check = 0;
    CliOpt opts[] = {
        {.name = "--check", .type = OPT_FLAG, .dst = &check, .help = "compare with FIGURES/README.md instead of writing it; exit 1 when it differs"},
    };
    CliSpec spec = {
        .prog = "contactsheet",
        .summary = "Write FIGURES/README.md: every figure as a thumbnail with its title, claim and the command that regenerates it.",
        .opts = opts, .n_opts = 1, .positional = "FIGURES", .min_positional = 1,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    if (a.n_pos != 1) die_user("expected one folder of figures, got %d arguments", a.n_pos);
    const char *root = a.pos[0];
    static Figure fig[MAX_FIGS];
    int n = 0;
    char *dirs[256];
    int nd = list_dir(root, dirs, 256, 1);
    if (nd < 0) die_user("cannot read the figures folder '%s'", root);
    for (int d = 0; d < nd; d++) {
        char path[2048], *files[MAX_FIGS];
        snprintf(path, sizeof path, "%s/%s", root, dirs[d]);
        int nf = list_dir(path, files, MAX_FIGS, 0);
        for (int k = 0; k < nf; k++) {
            if (n >= MAX_FIGS) die_user("%s: more than %d figures", root, MAX_FIGS);
            Figure *g = &fig[n];
            snprintf(g->dir, sizeof g->dir, "%s", dirs[d]);
            snprintf(g->base, sizeof g->base, "%.*s", (int)(strlen(files[k]) - 4), files[k]);
            snprintf(path, sizeof path, "%s/%s/%s", root, dirs[d], files[k]);
            // the title and desc sit right after the opening <svg ...> tag: the head of the file suffices
            char *svg = slurp(path, 16384);
            if (!svg) die_user("cannot read '%s'", path);
            tag_text(svg, "title", g->title, sizeof g->title);
            tag_text(svg, "desc", g->desc, sizeof g->desc);
            free(svg);
            if (!g->title[0]) die_user("%s: no <title> (figures are written by common/plot.c with one)", path);
            snprintf(path, sizeof path, "%s/%s/%s.png", root, dirs[d], g->base);
            FILE *png = fopen(path, "rb");
            g->has_png = png != NULL;
            if (png) fclose(png);
            n++;
            free(files[k]);
        }
        free(dirs[d]);
    }
    char out[2048];
    snprintf(out, sizeof out, "%s/README.md", root);
    if (check) {
        // render into memory and compare byte for byte
        char *want = NULL;
        size_t want_n = 0;
        FILE *m = open_memstream(&want, &want_n);
        CHECK(m, "out of memory");
        write_sheet(m, fig, n);
        fclose(m);
        char *have = slurp(out, 1 << 22);
        int same = have && strlen(have) == want_n && !memcmp(have, want, want_n);
        if (!same) fprintf(stderr, "contactsheet: %s is not current: run ./contactsheet %s\n", out, root);
        free(have);
        free(want);
        free(a.pos);
        return same ? 0 : 1;
    }
    AtomicFile af;
    atomic_open(&af, out);
    write_sheet(af.f, fig, n);
    atomic_commit(&af);
    printf("contactsheet: wrote %s (%d figures)\n", out, n);
    free(a.pos);
    return 0;
}
