// test_figures.c: ticks, tick labels, colormaps, the raw heatmap PNG read back pixel by pixel, and
// the figure writers (files, formats, identical bytes across runs, nothing left behind on failure).
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stb_image.h>

#include "chapter.h"
#include "check.h"
#include "heatmap.h"
#include "helpers.h"
#include "plot.h"

// ---- ticks ---------------------------------------------------------------------------------------------
Test(figures, nice_ticks_cover_the_range_evenly) {
    static const double ranges[][2] = {{0, 1}, {-3.7, 12.2}, {1e-5, 3.2e-5}, {0.001, 1000}, {5, 5},
                                       {-250, -3}, {0, 1.05}, {123456, 987654}};
    for (int cap = 3; cap <= 10; cap++)
        for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
            double lo = ranges[r][0], hi = ranges[r][1], t[16];
            int n = plot_nice_ticks(lo, hi, t, cap);
            cr_assert(n >= 2 && n <= cap, "[%g,%g] cap %d: %d ticks", lo, hi, cap, n);
            cr_assert(t[0] <= lo && t[n - 1] >= hi, "[%g,%g] cap %d: ticks %g..%g do not cover", lo, hi, cap,
                      t[0], t[n - 1]);
            double step = t[1] - t[0];
            cr_assert(step > 0);
            for (int i = 1; i < n; i++)
                cr_assert(fabs((t[i] - t[i - 1]) - step) <= 1e-9 * step, "[%g,%g]: uneven ticks", lo, hi);
            // the step is 1, 2 or 5 times a power of ten
            double m = step / pow(10, floor(log10(step) + 1e-9));
            cr_assert(fabs(m - 1) < 1e-6 || fabs(m - 2) < 1e-6 || fabs(m - 5) < 1e-6, "step %g is not nice", step);
            // and every tick is a multiple of the step
            for (int i = 0; i < n; i++)
                cr_assert(fabs(t[i] / step - round(t[i] / step)) < 1e-6, "tick %g off the step %g", t[i], step);
        }
    double t[8];
    cr_assert_eq(plot_nice_ticks(0, 1, t, 1), 0, "a cap below 2 gives no ticks");
    cr_assert_eq(plot_nice_ticks(0, NAN, t, 6), 0);
    // 0..1 in at most 6 ticks: 0, 0.2, ..., 1 exactly (no 0.30000000000000004)
    cr_assert_eq(plot_nice_ticks(0, 1, t, 6), 6);
    char buf[32];
    cr_assert_str_eq(plot_format_tick(buf, sizeof buf, t[3], AXIS_PLAIN), "0.6");
}

Test(figures, tick_labels) {
    char b[64];
    struct { double v; AxisFormat f; const char *want; } cases[] = {
        {512, AXIS_BYTES, "512 B"},       {0, AXIS_BYTES, "0 B"},
        {1024, AXIS_BYTES, "1 KiB"},      {4096, AXIS_BYTES, "4 KiB"},
        {1536, AXIS_BYTES, "1.5 KiB"},    {1.5 * 1073741824.0, AXIS_BYTES, "1.5 GiB"},
        {256.0 * 1048576, AXIS_BYTES, "256 MiB"}, {1099511627776.0, AXIS_BYTES, "1 TiB"},
        {1024, AXIS_TOKENS, "1K"},        {131072, AXIS_TOKENS, "128K"},
        {1048576, AXIS_TOKENS, "1M"},     {512, AXIS_TOKENS, "512"},
        {1536, AXIS_TOKENS, "1.5K"},      {32768, AXIS_TOKENS, "32K"},
        {0.5, AXIS_PLAIN, "0.5"},         {100, AXIS_PLAIN, "100"},
        {1e6, AXIS_PLAIN, "1e6"},         {2e-5, AXIS_PLAIN, "2e-5"},
        {-0.0, AXIS_PLAIN, "0"},          {-2.5, AXIS_PLAIN, "-2.5"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_str_eq(plot_format_tick(b, sizeof b, cases[i].v, cases[i].f), cases[i].want, "value %g",
                         cases[i].v);
}

// ---- colormaps -------------------------------------------------------------------------------------
static double srgb_to_linear(unsigned char c) {
    double x = c / 255.0;
    return x <= 0.04045 ? x / 12.92 : pow((x + 0.055) / 1.055, 2.4);
}

static double luminance(const unsigned char rgb[3]) {
    return 0.2126 * srgb_to_linear(rgb[0]) + 0.7152 * srgb_to_linear(rgb[1]) + 0.0722 * srgb_to_linear(rgb[2]);
}

static void assert_rgb_near(const unsigned char got[3], unsigned hex, int tol) {
    int want[3] = {(hex >> 16) & 255, (hex >> 8) & 255, hex & 255};
    for (int k = 0; k < 3; k++)
        cr_assert(abs(got[k] - want[k]) <= tol, "got #%02X%02X%02X, want #%06X", got[0], got[1], got[2], hex);
}

Test(figures, viridis_endpoints_and_monotonic_luminance) {
    unsigned char c[3];
    colormap_viridis(0, c);
    assert_rgb_near(c, 0x440154, 1);
    colormap_viridis(1, c);
    assert_rgb_near(c, 0xFDE725, 1);
    colormap_viridis(0.5f, c);        // matplotlib's viridis(0.5) is #21918C
    assert_rgb_near(c, 0x21918C, 2);
    colormap_viridis(0.25f, c);       // viridis(0.25) is #3B528B
    assert_rgb_near(c, 0x3B528B, 2);
    // out of range clamps to the ends
    unsigned char lo[3], hi[3];
    colormap_viridis(-3, c);
    colormap_viridis(0, lo);
    cr_assert(!memcmp(c, lo, 3));
    colormap_viridis(7, c);
    colormap_viridis(1, hi);
    cr_assert(!memcmp(c, hi, 3));
    double prev = -1;
    for (int i = 0; i <= 256; i++) {
        colormap_viridis(i / 256.0f, c);
        double y = luminance(c);
        cr_assert(y >= prev - 1e-4, "luminance drops at t=%g: %g < %g", i / 256.0, y, prev);
        prev = y;
    }
    colormap_viridis(0, lo);
    cr_assert(luminance(hi) > 10 * luminance(lo), "viridis spans dark to light");
}

Test(figures, diverging_centre_is_white) {
    unsigned char c[3], neg[3], pos[3];
    colormap_diverging(0.5f, c);
    cr_assert(c[0] == 255 && c[1] == 255 && c[2] == 255, "centre is #%02X%02X%02X", c[0], c[1], c[2]);
    colormap_diverging(0.0f, neg);
    colormap_diverging(1.0f, pos);
    cr_assert(neg[2] > neg[0] + 50, "negative end is blue");
    cr_assert(pos[0] > pos[2] + 50, "positive end is red");
    // lightness falls away from the centre on both sides
    double prev = luminance(c);
    for (int i = 1; i <= 50; i++) {
        colormap_diverging(0.5f + i / 100.0f, pos);
        colormap_diverging(0.5f - i / 100.0f, neg);
        cr_assert(luminance(pos) <= prev + 1e-4 || i == 1);
        cr_assert(luminance(neg) < luminance(c) && luminance(pos) < luminance(c));
        prev = luminance(pos);
    }
}

// ---- raw PNG -----------------------------------------------------------------------------------------
Test(figures, raw_png_has_exact_blocks) {
    char dir[256], path[512];
    test_tmpdir(dir, sizeof dir);
    cr_assert(dir[0]);
    path_join(path, sizeof path, dir, "raw.png");
    // 3 rows x 2 cols; cell (2,0) masked
    const float v[6] = {0.0f, 1.0f, 0.5f, 0.25f, 0.9f, 0.75f};
    const unsigned char mask[6] = {1, 1, 1, 1, 0, 1};
    heatmap_raw_png(path, v, mask, 3, 2, 4, 0.0f, 1.0f, 0);
    int w, h, n;
    unsigned char *img = stbi_load(path, &w, &h, &n, 3);
    cr_assert(img, "stb_image cannot read %s", path);
    cr_assert_eq(w, 2 * 4);
    cr_assert_eq(h, 3 * 4);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            unsigned char want[3];
            if (mask[i * 2 + j]) colormap_viridis(v[i * 2 + j], want);
            else want[0] = want[1] = want[2] = 128;
            for (int y = i * 4; y < i * 4 + 4; y++)
                for (int x = j * 4; x < j * 4 + 4; x++) {
                    const unsigned char *px = &img[(y * w + x) * 3];
                    cr_assert(!memcmp(px, want, 3), "cell (%d,%d) pixel (%d,%d) is %d,%d,%d", i, j, x, y, px[0], px[1],
                              px[2]);
                }
        }
    // independent of colormap_viridis: the ends of the range are viridis's published end colours
    assert_rgb_near(&img[0], 0x440154, 1);
    assert_rgb_near(&img[4 * 3], 0xFDE725, 1);
    stbi_image_free(img);

    // diverging: zero is white even in a lopsided range, the ends are the map's ends
    const float d[3] = {-1.0f, 0.0f, 3.0f};
    heatmap_raw_png(path, d, NULL, 1, 3, 2, -1.0f, 3.0f, 1);
    img = stbi_load(path, &w, &h, &n, 3);
    cr_assert(img && w == 6 && h == 2);
    unsigned char blue[3], red[3];
    colormap_diverging(0, blue);
    colormap_diverging(1, red);
    cr_assert(!memcmp(&img[0], blue, 3));
    cr_assert(img[2 * 3] == 255 && img[2 * 3 + 1] == 255 && img[2 * 3 + 2] == 255);
    cr_assert(!memcmp(&img[4 * 3], red, 3));
    stbi_image_free(img);
    cr_assert(!test_has_tmp_files(dir));
}

// ---- figure files ----------------------------------------------------------------------------------------
static const double xs[5] = {1024, 4096, 16384, 65536, 262144};
static const double ys[2][5] = {{1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28}, {1 << 17, 1 << 19, 1 << 21, 1 << 23, 1 << 25}};
static const PlotSeries series[2] = {
    {.label = "MHA", .x = xs, .y = ys[0], .n = 5, .color = COLOR_MHA, .markers = 1},
    {.label = "GQA", .x = xs, .y = ys[1], .n = 5, .color = COLOR_GQA, .dashed = 1},
};
static const LineChart chart = {
    .title = "KV cache vs context", .subtitle = "test", .xlabel = "tokens", .ylabel = "bytes",
    .logx = 1, .logy = 1, .xfmt = AXIS_TOKENS, .yfmt = AXIS_BYTES, .series = series, .n_series = 2,
    .note = "a footnote",
};

static unsigned char *slurp(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static void assert_png(const char *path, int want_w) {
    size_t n = 0;
    unsigned char *b = slurp(path, &n);
    cr_assert(b && n > 1000, "%s missing or tiny", path);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    cr_assert(!memcmp(b, sig, 8), "%s: bad PNG signature", path);
    int w, h, comp;
    cr_assert(stbi_info_from_memory(b, (int)n, &w, &h, &comp), "%s: unreadable PNG", path);
    if (want_w) cr_assert_eq(w, want_w, "%s is %d px wide", path, w);
    cr_assert(w <= 2400 && h > 0);
    free(b);
}

static void assert_svg(const char *path) {
    size_t n = 0;
    unsigned char *b = slurp(path, &n);
    cr_assert(b && n > 1000, "%s missing or tiny", path);
    cr_assert(!memcmp(b, "<?xml", 5) && strstr((char *)b, "<svg"), "%s is not SVG", path);
    free(b);
}

static int same_bytes(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

Test(figures, line_chart_writes_png_and_svg_deterministically) {
    char dir[256], base[512], p1[600], p2[600];
    test_tmpdir(dir, sizeof dir);
    plot_line_chart(&chart, path_join(base, sizeof base, dir, "a"), 1, 1);
    snprintf(p1, sizeof p1, "%s.png", base);
    assert_png(p1, 1800);   // 900 pt at 2x
    snprintf(p1, sizeof p1, "%s.svg", base);
    assert_svg(p1);
    // another figure in between must not change the bytes of the next one (cairo's SVG ids)
    const char *labels[2] = {"one", "two"};
    const double values[2] = {3, 5};
    BarChart bars = {.title = "bars", .labels = labels, .values = values, .n = 2};
    plot_bar_chart(&bars, path_join(base, sizeof base, dir, "bars"), 1, 1);
    plot_line_chart(&chart, path_join(base, sizeof base, dir, "b"), 1, 1);
    cr_assert(same_bytes(path_join(p1, sizeof p1, dir, "a.svg"), path_join(p2, sizeof p2, dir, "b.svg")),
              "SVG bytes differ between two runs");
    cr_assert(same_bytes(path_join(p1, sizeof p1, dir, "a.png"), path_join(p2, sizeof p2, dir, "b.png")),
              "PNG bytes differ between two runs");
    // only the requested formats
    plot_line_chart(&chart, path_join(base, sizeof base, dir, "only_svg"), 0, 1);
    struct stat st;
    cr_assert(stat(path_join(p1, sizeof p1, dir, "only_svg.svg"), &st) == 0);
    cr_assert(stat(path_join(p1, sizeof p1, dir, "only_svg.png"), &st) != 0);
    cr_assert(!test_has_tmp_files(dir));
    cr_assert_eq(test_count_files(dir), 2 + 2 + 2 + 1);
}

Test(figures, heatmap_figure_writes_png_and_svg) {
    char dir[256], base[512], p[600];
    test_tmpdir(dir, sizeof dir);
    enum { T = 8 };
    float P[T * T], X[T * 16];
    unsigned char causal[T * T];
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
            causal[i * T + j] = j <= i;
            P[i * T + j] = j <= i ? 1.0f / (i + 1) : 0;
        }
    for (int i = 0; i < T * 16; i++) X[i] = sinf((float)i);
    HeatPanel panels[2] = {
        {.values = X, .rows = T, .cols = 16, .title = "X", .diverging = 1, .op_after = "softmax"},
        {.values = P, .mask = causal, .rows = T, .cols = T, .title = "P", .vmin = 0, .vmax = 1,
         .xlabel = "key j", .ylabel = "query i"},
    };
    HeatmapFigure f = {.title = "test figure", .subtitle = "two panels of different shapes", .panels = panels,
                       .n_panels = 2, .show_values = -1, .colorbar_label = "value"};
    heatmap_figure(&f, path_join(base, sizeof base, dir, "h"), 1, 1);
    snprintf(p, sizeof p, "%s.png", base);
    assert_png(p, 0);
    snprintf(p, sizeof p, "%s.svg", base);
    assert_svg(p);
    // many big panels in one row: the PNG stays within ~2400 px
    static float big[32 * 32];
    HeatPanel many[8];
    for (int k = 0; k < 8; k++) many[k] = (HeatPanel){.values = big, .rows = 32, .cols = 32, .title = "head"};
    HeatmapFigure g = {.title = "wide", .panels = many, .n_panels = 8, .vmin = 0, .vmax = 1, .show_values = -1};
    heatmap_figure(&g, path_join(base, sizeof base, dir, "wide"), 1, 0);
    snprintf(p, sizeof p, "%s.png", base);
    assert_png(p, 0);
    cr_assert(!test_has_tmp_files(dir));
}

// ---- failures: a clean user error (exit 2) and nothing left behind -----------------------------------------
Test(figures, line_chart_into_missing_folder_exits_2, .exit_code = 2) {
    freopen("/dev/null", "w", stderr);
    plot_line_chart(&chart, "/nonexistent-attention-test-dir/fig", 1, 1);
}

Test(figures, heatmap_into_missing_folder_exits_2, .exit_code = 2) {
    freopen("/dev/null", "w", stderr);
    const float v[4] = {0, 1, 2, 3};
    HeatPanel p = {.values = v, .rows = 2, .cols = 2, .title = "p"};
    HeatmapFigure f = {.title = "t", .panels = &p, .n_panels = 1, .show_values = -1};
    heatmap_figure(&f, "/nonexistent-attention-test-dir/fig", 1, 1);
}

Test(figures, raw_png_into_missing_folder_exits_2, .exit_code = 2) {
    freopen("/dev/null", "w", stderr);
    const float v[4] = {0, 1, 2, 3};
    heatmap_raw_png("/nonexistent-attention-test-dir/raw.png", v, NULL, 2, 2, 4, 0, 3, 0);
}

// The target name is taken by a non-empty folder, so the final rename fails after the temp file was
// written: the writer must exit 2 and remove its temp file.
Test(figures, failed_rename_leaves_no_file) {
    char dir[256], base[512], blocker[600], inner[700];
    test_tmpdir(dir, sizeof dir);
    path_join(base, sizeof base, dir, "fig");
    snprintf(blocker, sizeof blocker, "%s.png", base);
    cr_assert(mkdir(blocker, 0755) == 0);
    snprintf(inner, sizeof inner, "%s/keep", blocker);
    FILE *k = fopen(inner, "w");
    cr_assert(k);
    fclose(k);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        plot_line_chart(&chart, base, 1, 0);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "expected exit 2, got status %d", st);
    cr_assert(!test_has_tmp_files(dir), "a temp file was left in %s", dir);
    cr_assert_eq(test_count_files(dir), 1, "only the blocking folder should remain");
}

// ---- what the chapters read and label ---------------------------------------------------------------------

// The seeds' metrics: mean and min..max of one setting's runs, a number or an array element, other
// settings ignored; no run of the setting, or a malformed line, exits 2 with one line.
Test(figures, seed_metrics_mean_and_range_of_one_setting) {
    char dir[256], path[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/g.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("{\"setting\":\"a\",\"accuracy\":0.5,\"first_by_layer\":[0.1,0.9]}\n"
          "{\"setting\":\"b\",\"accuracy\":0.0,\"first_by_layer\":[0.0,0.0]}\n"
          "\n"
          "{\"setting\":\"a\",\"accuracy\":1.0,\"first_by_layer\":[0.3,0.6]}\n", f);
    fclose(f);
    SeedStat s = chapter_seeds(path, "a", "accuracy", -1);
    cr_expect_eq(s.n, 2);
    cr_expect_float_eq(s.mean, 0.75, 1e-12);
    cr_expect_float_eq(s.lo, 0.5, 1e-12);
    cr_expect_float_eq(s.hi, 1.0, 1e-12);
    cr_expect(s.v[0] == 0.5 && s.v[1] == 1.0, "runs in the file's order: %g %g", s.v[0], s.v[1]);
    s = chapter_seeds(path, "a", "first_by_layer", 1);
    cr_expect_float_eq(s.mean, 0.75, 1e-12);
    cr_expect_float_eq(s.lo, 0.6, 1e-12);
    s = chapter_seeds(path, "b", "accuracy", -1);
    cr_expect_eq(s.n, 1);
    remove(path);
    rmdir(dir);
}

// The exit-2 cases leave through exit(): their file and folder go at exit.
static char seeds_dir[256], seeds_path[512];
static void remove_seeds_file(void) {
    remove(seeds_path);
    rmdir(seeds_dir);
}

static const char *seeds_file(const char *text) {
    test_tmpdir(seeds_dir, sizeof seeds_dir);
    snprintf(seeds_path, sizeof seeds_path, "%s/g.jsonl", seeds_dir);
    atexit(remove_seeds_file);
    FILE *f = fopen(seeds_path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    return seeds_path;
}

Test(figures, seed_metrics_without_the_setting_exit_2, .exit_code = 2) {
    chapter_seeds(seeds_file("{\"setting\":\"a\",\"accuracy\":0.5}\n"), "nosuch", "accuracy", -1);
}

Test(figures, seed_metrics_malformed_line_exit_2, .exit_code = 2) {
    chapter_seeds(seeds_file("{\"setting\":\"a\",\"accuracy\":0.5}\n{\"setting\":\"a\",\"accuracy\":\n"), "a",
                  "accuracy", -1);
}

// A head's role is its largest measured share: previous-token, first-token, induction, or other.
Test(figures, head_role_names_the_measured_pattern) {
    enum { T = 8 };
    float A[T * T];
    int tok[T] = {1, 2, 3, 4, 1, 2, 3, 4};
    char buf[CHAPTER_ROLE_CHARS];
    for (int kind = 0; kind < 4; kind++) {
        memset(A, 0, sizeof A);
        A[0] = 1.0f;
        for (int t = 1; t < T; t++) {
            if (kind == 0) A[t * T + t - 1] = 1.0f;                  // previous token
            else if (kind == 1) A[t * T] = 1.0f;                     // first token
            else if (kind == 2) A[t * T + (t >= 4 ? t - 3 : t)] = 1.0f;   // after the earlier copy (t-4)+1
            else for (int s = 0; s <= t; s++) A[t * T + s] = 1.0f / (float)(t + 1);
        }
        chapter_head_role(A, tok, T, buf, sizeof buf);
        static const char *const want[4] = {"previous token 100%", "first token 100%", "induction 100%", "other"};
        cr_expect_str_eq(buf, want[kind], "kind %d", kind);
    }
}
