// test_figure_rules.c: the rules the figure toolkit applies to every figure (common/plot.h,
// heatmap.h, schematic.h): one colour per mechanism, coinciding series share a legend entry, labels and
// legends never cover each other or the data, no line past a model's maximum context, log axes only
// when the data need them, a chance line on accuracy charts, one-line titles, readable text at 900 px,
// one colour scale per unit, one meaning for hatching, tensors to scale, SVG <title> and <desc>.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "heatmap.h"
#include "helpers.h"
#include "plot.h"
#include "schematic.h"

// ---- palette -----------------------------------------------------------------------------------------
static double lin(double c) { return c <= 0.04045 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4); }

static void to_lab(const double rgb[3], double lab[3]) {
    double r = lin(rgb[0]), g = lin(rgb[1]), b = lin(rgb[2]);
    double x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, y = 0.2126 * r + 0.7152 * g + 0.0722 * b,
           z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    double f[3] = {x, y, z};
    for (int k = 0; k < 3; k++) f[k] = f[k] > 0.008856 ? cbrt(f[k]) : 7.787 * f[k] + 16.0 / 116;
    lab[0] = 116 * f[1] - 16;
    lab[1] = 500 * (f[0] - f[1]);
    lab[2] = 200 * (f[1] - f[2]);
}

Test(figure_rules, palette_colours_are_distinct_and_readable_on_white) {
    for (int a = 0; a < COLOR_COUNT; a++) {
        double ra[3], la[3];
        palette_rgb(a, ra);
        to_lab(ra, la);
        // contrast against white (WCAG): a line or a label in this colour stays visible
        double y = 0.2126 * lin(ra[0]) + 0.7152 * lin(ra[1]) + 0.0722 * lin(ra[2]);
        cr_assert(1.05 / (y + 0.05) >= 2.0, "%s is too light on white (contrast %.2f)", palette_name(a), 1.05 / (y + 0.05));
        cr_assert(palette_name(a)[0], "colour %d has no name", a);
        for (int b = 0; b < a; b++) {
            double rb[3], lb[3];
            palette_rgb(b, rb);
            to_lab(rb, lb);
            double de = sqrt(pow(la[0] - lb[0], 2) + pow(la[1] - lb[1], 2) + pow(la[2] - lb[2], 2));
            cr_assert(de >= 15, "%s and %s are too alike (delta E %.1f)", palette_name(a), palette_name(b), de);
            cr_assert(strcmp(palette_name(a), palette_name(b)), "two colours named %s", palette_name(a));
        }
    }
    // every mechanism the chapters draw has its own entry
    static const int mech[] = {COLOR_MHA, COLOR_GQA, COLOR_MQA, COLOR_MLA, COLOR_SWA, COLOR_DSA, COLOR_GATED,
                               COLOR_GDN, COLOR_KDA, COLOR_LIGHTNING, COLOR_MAMBA2, COLOR_CSA, COLOR_HCA};
    for (size_t i = 0; i < sizeof mech / sizeof mech[0]; i++)
        for (size_t j = 0; j < i; j++) cr_assert_neq(mech[i], mech[j]);
}

// ---- line charts ---------------------------------------------------------------------------------------
static const double X8[8] = {0, 1, 2, 3, 4, 5, 6, 7};
static const double Y8[8] = {0, 10, 20, 30, 40, 50, 60, 70};
static const double Z8[8] = {70, 60, 50, 40, 30, 20, 10, 0};

Test(figure_rules, identical_series_share_one_legend_entry) {
    PlotSeries s[2] = {
        {.label = "A", .x = X8, .y = Y8, .n = 8, .color = COLOR_MHA},
        {.label = "B", .x = X8, .y = Y8, .n = 8, .color = COLOR_MLA, .dashed = 1},
    };
    LineChart c = {.title = "t", .series = s, .n_series = 2};
    PlotInfo info;
    plot_line_chart_info(&c, &info);
    cr_assert_eq(info.n_legend, 1, "two identical series gave %d legend entries", info.n_legend);
    cr_assert_str_eq(info.legend[0], "A = B");
    // far apart: two entries
    s[1].y = Z8;
    plot_line_chart_info(&c, &info);
    cr_assert_eq(info.n_legend, 2);
    // a series that lies on a longer one (a model cut at its max context) shares its entry
    s[1].y = Y8;
    s[1].n = 4;
    plot_line_chart_info(&c, &info);
    cr_assert_eq(info.n_legend, 1);
    // within a line width is the same line; a few line widths apart is not
    double near[8], apart[8];
    for (int i = 0; i < 8; i++) {
        near[i] = Y8[i] + 0.05;   // 0.05 of 70 on a ~300 pt axis: far below a line width
        apart[i] = Y8[i] + 4.0;   // 4 of 70: over ten points
    }
    s[1] = (PlotSeries){.label = "B", .x = X8, .y = near, .n = 8, .color = COLOR_MLA};
    plot_line_chart_info(&c, &info);
    cr_assert_eq(info.n_legend, 1);
    s[1].y = apart;
    plot_line_chart_info(&c, &info);
    cr_assert_eq(info.n_legend, 2);
}

Test(figure_rules, direct_labels_never_overlap) {
    enum { N = 7 };
    double y[N][8];
    char labels[N][64];
    PlotSeries s[N];
    for (int k = 0; k < N; k++) {
        // seven lines ending within a few units of each other, with labels of one to three lines
        for (int i = 0; i < 8; i++) y[k][i] = 10 * k + i * (50.0 - 10 * k) / 7 + 0.7 * k;
        snprintf(labels[k], sizeof labels[k], k % 2 ? "series %d with a label long enough to wrap onto a second line" : "series %d", k);
        s[k] = (PlotSeries){.label = labels[k], .x = X8, .y = y[k], .n = 8, .color = k};
    }
    LineChart c = {.title = "t", .series = s, .n_series = N, .legend_pos = PLOT_LEGEND_DIRECT};
    PlotInfo info;
    plot_line_chart_info(&c, &info);
    cr_assert_eq(info.legend_pos, PLOT_LEGEND_DIRECT);
    cr_assert_eq(info.n_labels, N);
    for (int a = 0; a < info.n_labels; a++) {
        cr_assert(info.labels[a].x1 <= info.width && info.labels[a].y0 >= 0 && info.labels[a].y1 <= info.height,
                  "label %d leaves the canvas", a);
        for (int b = 0; b < a; b++)
            cr_assert(!plot_box_overlap(&info.labels[a], &info.labels[b]), "direct labels %d and %d overlap", a, b);
    }
}

Test(figure_rules, a_legend_never_covers_data) {
    // data filling the top-left and top-right corners; the legend is asked for top-left
    static const double x[4] = {0, 1, 9, 10}, y1[4] = {100, 90, 90, 100}, y2[4] = {0, 5, 5, 0};
    PlotSeries s[2] = {{.label = "up here", .x = x, .y = y1, .n = 4, .color = COLOR_MHA},
                       {.label = "down there", .x = x, .y = y2, .n = 4, .color = COLOR_GQA}};
    LineChart c = {.title = "t", .series = s, .n_series = 2, .legend_pos = PLOT_LEGEND_TOP_LEFT};
    PlotInfo info;
    plot_line_chart_info(&c, &info);
    cr_assert(!info.legend_covers_data, "the legend covers a line");
    cr_assert_neq(info.legend_pos, PLOT_LEGEND_TOP_LEFT, "the legend stayed on the data");
    // a reference line is data too, and its label never sits on a line
    PlotRef ref = {.label = "chance (1/16)", .value = 50};
    c.refs = &ref;
    c.n_refs = 1;
    plot_line_chart_info(&c, &info);
    cr_assert(!info.legend_covers_data);
    cr_assert_eq(info.n_labels, 1);
}

Test(figure_rules, no_line_past_a_models_max_context) {
    static const double x[5] = {0, 1024, 2048, 3072, 4096}, y[5] = {0, 1, 2, 3, 4};
    PlotSeries s[2] = {{.label = "short context", .x = x, .y = y, .n = 5, .color = COLOR_MHA, .x_limit = 1536,
                        .limit_label = "max context 1.5K"},
                       {.label = "long context", .x = x, .y = y, .n = 5, .color = COLOR_GQA, .dashed = 1}};
    LineChart c = {.title = "t", .series = s, .n_series = 2};
    PlotInfo info;
    plot_line_chart_info(&c, &info);
    cr_assert_eq(info.n_limits, 1, "no end marker at the model's max context");
    cr_assert_float_eq(info.drawn_xmax[0], 1536, 1e-9, "drawn to %g, past its limit", info.drawn_xmax[0]);
    cr_assert_float_eq(info.drawn_xmax[1], 4096, 1e-9);
    cr_assert_eq(info.n_labels, 1, "the end marker is labelled");
}

Test(figure_rules, log_axes_only_when_asked_and_needed) {
    static const double x[4] = {1, 10, 100, 1000}, narrow[4] = {1, 2, 4, 8}, wide[4] = {1, 1e2, 1e4, 1e6};
    PlotSeries s = {.label = "s", .x = x, .y = narrow, .n = 4, .color = COLOR_MHA};
    LineChart c = {.title = "t", .series = &s, .n_series = 1, .logx = 1, .logy = 1, .xlabel = "tokens (log scale)",
                   .ylabel = "bytes (KiB, log scale)"};
    PlotInfo info;
    plot_line_chart_info(&c, &info);
    cr_assert(info.logx, "x spans 1000x and asked for log");
    cr_assert(!info.logy, "y spans 8x: a log axis would only flatten it");
    cr_assert_str_eq(info.ylabel, "bytes (KiB)", "a linear axis must not say log scale");
    cr_assert_str_eq(info.xlabel, "tokens (log scale)");
    s.y = wide;
    plot_line_chart_info(&c, &info);
    cr_assert(info.logy);
    c.logx = c.logy = 0;
    c.xlabel = "tokens";
    plot_line_chart_info(&c, &info);
    cr_assert(!info.logx && !info.logy, "log axes only when asked");
    c.logy = 1;
    c.ylabel = "bytes";
    plot_line_chart_info(&c, &info);
    cr_assert_str_eq(info.ylabel, "bytes (log scale)", "a log axis says so");
}

Test(figure_rules, accuracy_chart_without_chance_line_is_an_error, .exit_code = 1) {
    freopen("/dev/null", "w", stderr);
    PlotSeries s = {.label = "s", .x = X8, .y = Y8, .n = 8};
    LineChart c = {.title = "t", .ylabel = "held-out accuracy (%)", .series = &s, .n_series = 1};
    PlotInfo info;
    plot_line_chart_info(&c, &info);
}

Test(figure_rules, accuracy_bar_chart_without_chance_line_is_an_error, .exit_code = 1) {
    freopen("/dev/null", "w", stderr);
    const char *labels[1] = {"a"};
    const double v[1] = {50};
    BarChart b = {.title = "t", .xlabel = "recall accuracy (%)", .labels = labels, .values = v, .n = 1};
    PlotInfo info;
    plot_bar_chart_info(&b, &info);
}

Test(figure_rules, spreads_and_error_bars_set_the_range) {
    static const double lo[8] = {-5, 5, 15, 25, 35, 45, 55, 65}, hi[8] = {5, 15, 25, 35, 45, 55, 65, 95};
    PlotSeries s = {.label = "mean of 3 seeds", .x = X8, .y = Y8, .n = 8, .ylo = lo, .yhi = hi};
    PlotRef ref = {.label = "chance", .value = 6.25};
    LineChart c = {.title = "t", .ylabel = "accuracy (%)", .series = &s, .n_series = 1, .refs = &ref, .n_refs = 1};
    PlotInfo info;
    plot_line_chart_info(&c, &info);
    cr_assert(info.yhi >= 95 && info.ylo <= -5, "the axis [%g, %g] cuts the band", info.ylo, info.yhi);
    s.error_bars = 1;
    plot_line_chart_info(&c, &info);
    cr_assert(info.yhi >= 95);
    const char *labels[2] = {"a", "b"};
    const double v[2] = {40, 60}, blo[2] = {30, 50}, bhi[2] = {55, 99};
    BarChart b = {.title = "t", .xlabel = "accuracy (%)", .labels = labels, .values = v, .lo = blo, .hi = bhi, .n = 2,
                  .refs = &ref, .n_refs = 1};
    plot_bar_chart_info(&b, &info);
    cr_assert(info.width > 0);
}

Test(figure_rules, titles_and_subtitles_are_one_line) {
    PlotSeries s = {.label = "s", .x = X8, .y = Y8, .n = 8};
    LineChart c = {.title = "A title that fits", .subtitle = "and a subtitle that fits too", .series = &s, .n_series = 1};
    PlotInfo info;
    plot_line_chart_info(&c, &info);
    cr_assert(info.title_fits && info.subtitle_fits);
    double h = info.plot.y0;
    char longsub[600];
    memset(longsub, 0, sizeof longsub);
    for (int i = 0; i < 40; i++) strcat(longsub, "details ");
    c.subtitle = longsub;
    freopen("/dev/null", "w", stderr);   // the cut is reported on stderr
    plot_line_chart_info(&c, &info);
    cr_assert(!info.subtitle_fits, "a subtitle of 320 characters cannot fit one line at 900 pt");
    cr_assert_float_eq(info.plot.y0, h, 1e-9, "a long subtitle took more than one line");
}

Test(figure_rules, chart_text_is_readable_at_900px) {
    PlotSeries s[2] = {{.label = "A", .x = X8, .y = Y8, .n = 8}, {.label = "B", .x = X8, .y = Z8, .n = 8}};
    PlotRef ref = {.label = "ref", .value = 35};
    LineChart c = {.title = "t", .subtitle = "s", .note = "n", .xlabel = "x", .ylabel = "y", .series = s, .n_series = 2,
                   .refs = &ref, .n_refs = 1};
    PlotInfo info;
    plot_line_chart_info(&c, &info);
    cr_assert(info.min_text_px >= PLOT_MIN_TEXT_PX, "smallest text %.1f px at 900 px", info.min_text_px);
}

// ---- heatmaps ---------------------------------------------------------------------------------------------
Test(figure_rules, panels_of_one_unit_share_one_scale) {
    enum { T = 6 };
    float small[T * T], big[T * T], p[T * T];
    for (int i = 0; i < T * T; i++) {
        small[i] = 0.03f * sinf((float)i);
        big[i] = 2.5f * cosf((float)i);
        p[i] = (float)(i % T) / T;
    }
    HeatPanel panels[3] = {
        {.values = small, .rows = T, .cols = T, .title = "small", .diverging = 1},
        {.values = big, .rows = T, .cols = T, .title = "big", .diverging = 1},
        {.values = p, .rows = T, .cols = T, .title = "weights", .colorbar_label = "attention weight"},
    };
    HeatmapFigure f = {.title = "t", .panels = panels, .n_panels = 2, .colorbar_label = "A[t][s]", .show_values = 0};
    HeatmapInfo info;
    heatmap_figure_info(&f, &info);
    cr_assert_eq(info.n_colorbars, 1);
    cr_assert(info.vmin[0] == info.vmin[1] && info.vmax[0] == info.vmax[1], "compared panels on different scales");
    cr_assert(info.vmax[0] >= 2.4f, "the shared scale must hold the larger panel");
    // a panel of another unit gets its own scale
    f.n_panels = 3;
    heatmap_figure_info(&f, &info);
    cr_assert_eq(info.n_colorbars, 2);
    cr_assert(info.vmax[2] <= 1.0f && info.vmin[2] >= 0.0f);
}

Test(figure_rules, hatching_means_masked_and_is_keyed) {
    enum { T = 5 };
    float v[T * T];
    unsigned char causal[T * T], blank[T * T];
    for (int i = 0; i < T * T; i++) {
        v[i] = 0.2f;
        causal[i] = i % T <= i / T;
        blank[i] = i % T == T - 1;
    }
    HeatPanel p = {.values = v, .rows = T, .cols = T, .title = "p"};
    HeatmapFigure f = {.title = "t", .panels = &p, .n_panels = 1, .show_values = 0};
    HeatmapInfo info;
    heatmap_figure_info(&f, &info);
    cr_assert(!info.has_key, "nothing masked or blank: no key");
    p.mask = causal;
    heatmap_figure_info(&f, &info);
    cr_assert(info.has_key, "masked cells without the key that says what hatching means");
    p.mask = NULL;
    p.blank = blank;
    f.blank_label = "no value";
    heatmap_figure_info(&f, &info);
    cr_assert(info.has_key);
}

Test(figure_rules, big_panel_grids_stay_readable_and_say_when_labels_thin) {
    enum { T = 48, N = 12 };
    static float v[T * T];
    static const char *tok[T];
    for (int i = 0; i < T; i++) tok[i] = i % 2 ? "a" : "B";
    for (int i = 0; i < T * T; i++) v[i] = (float)(i % 7) / 7;
    HeatPanel panels[N];
    for (int k = 0; k < N; k++)
        panels[k] = (HeatPanel){.values = v, .rows = T, .cols = T, .title = "head", .row_labels = tok, .col_labels = tok,
                                .xlabel = "key j", .ylabel = "query i"};
    HeatmapFigure f = {.title = "twelve heads", .panels = panels, .n_panels = N, .panels_per_row = 4, .vmin = 0, .vmax = 1,
                       .show_values = 0};
    HeatmapInfo info;
    heatmap_figure_info(&f, &info);
    cr_assert(info.width <= HEATMAP_MAX_WIDTH, "canvas %.0f pt wide", info.width);
    cr_assert(info.min_text_px >= PLOT_MIN_TEXT_PX, "smallest text %.1f px at 900 px", info.min_text_px);
    // labels shared along rows and columns of panels
    for (int k = 0; k < N; k++) {
        cr_assert_eq(info.show_row_labels[k], k % 4 == 0, "panel %d", k);
        cr_assert_eq(info.show_col_labels[k], k >= N - 4, "panel %d", k);
    }
    // thinned token labels are said to be thinned
    cr_assert(info.row_step[0] > 1);
    cr_assert(strstr(info.ylabel[0], "every") && strstr(info.ylabel[0], "token labelled"), "ylabel '%s'", info.ylabel[0]);
}

// ---- schematics ------------------------------------------------------------------------------------------
Test(figure_rules, schematic_tensors_are_to_scale_and_labels_do_not_overlap) {
    Schematic *s = schem_new("MHA for one token", "d 4096, 32 heads of 128", "claim");
    int x = schem_tensor(s, 0, 0, "x", "4096", 4096, 1, COLOR_OTHER, 0);
    int q = schem_tensor(s, 1, 0, "q", "32 heads x 128", 4096, 32, COLOR_MHA, 0);
    int k = schem_tensor(s, 1, 1, "k", "8 heads x 128", 1024, 8, COLOR_GQA, SCHEM_CACHED);
    int v = schem_tensor(s, 1, 1, "v", "8 heads x 128", 1024, 8, COLOR_GQA, SCHEM_CACHED);
    int r = schem_tensor(s, 1, 2, "k_rope", "64", 64, 1, COLOR_MLA, SCHEM_CACHED);
    int op = schem_op(s, 2, 0, "attention", "softmax over the cache");
    schem_span(s, x, 3);
    schem_span(s, op, 3);
    schem_arrow(s, x, -1, q, -1, NULL);
    schem_arrow(s, q, 0, op, -1, "head 0");
    SchemInfo info;
    schem_info(s, &info);
    cr_assert_float_eq(info.bar_len[q] / info.bar_len[k], 4.0, 1e-9, "4096 vs 1024 numbers drawn %g : %g",
                       info.bar_len[q], info.bar_len[k]);
    cr_assert_float_eq(info.bar_len[x], info.bar_len[q], 1e-9);
    cr_assert_float_eq(info.bar_len[k] / info.pt_per_elem, 1024, 1e-6);
    cr_assert(info.bar_len[r] >= 2.0, "a tiny tensor stays visible");
    cr_assert(info.width <= SCHEM_MAX_WIDTH && info.min_text_px >= PLOT_MIN_TEXT_PX, "%.0f pt wide, text %.1f px",
              info.width, info.min_text_px);
    for (int a = 0; a < info.n_items; a++)
        for (int b = 0; b < a; b++) {
            const SchemBox *p = &info.text[a], *o = &info.text[b];
            int overlap = p->x0 < o->x1 && o->x0 < p->x1 && p->y0 < o->y1 && o->y0 < p->y1;
            cr_assert(!overlap, "the labels of items %d and %d overlap", a, b);
            const SchemBox *pa = &info.item[a], *pb = &info.item[b];
            cr_assert(!(pa->x0 < pb->x1 && pb->x0 < pa->x1 && pa->y0 < pb->y1 && pb->y0 < pa->y1),
                      "items %d and %d overlap", a, b);
        }
    (void)v;
    schem_free(s);
}

// ---- SVG <title> and <desc> --------------------------------------------------------------------------------
Test(figure_rules, svgs_carry_title_and_desc) {
    char dir[256], base[512], path[600];
    test_tmpdir(dir, sizeof dir);
    PlotSeries s = {.label = "s", .x = X8, .y = Y8, .n = 8};
    LineChart c = {.title = "KV cache <grows> & grows", .claim = "MHA caches 2 x heads x dims \"per token\"",
                   .series = &s, .n_series = 1};
    plot_line_chart(&c, path_join(base, sizeof base, dir, "fig"), 0, 1);
    snprintf(path, sizeof path, "%s.svg", base);
    FILE *f = fopen(path, "rb");
    cr_assert(f);
    char buf[4096] = {0};
    cr_assert(fread(buf, 1, sizeof buf - 1, f) > 0);
    fclose(f);
    cr_assert(strstr(buf, "<title>KV cache &lt;grows&gt; &amp; grows</title>"), "no escaped <title> in the SVG head");
    cr_assert(strstr(buf, "<desc>MHA caches 2 x heads x dims &quot;per token&quot;</desc>"), "no <desc> in the SVG head");
    char *t = strstr(buf, "<title>"), *svg = strstr(buf, "<svg");
    cr_assert(svg && t > svg, "<title> must sit inside <svg>");
    // a heatmap and a schematic carry theirs as well
    float v[4] = {0, 1, 2, 3};
    HeatPanel p = {.values = v, .rows = 2, .cols = 2, .title = "p"};
    HeatmapFigure h = {.title = "heat", .claim = "a claim", .panels = &p, .n_panels = 1, .show_values = 0};
    heatmap_figure(&h, path_join(base, sizeof base, dir, "heat"), 0, 1);
    Schematic *sc = schem_new("schematic", "sub", "its claim");
    schem_tensor(sc, 0, 0, "x", "8", 8, 1, COLOR_OTHER, 0);
    schem_write(sc, path_join(base, sizeof base, dir, "sch"), 0, 1);
    schem_free(sc);
    static const char *want[2][2] = {{"heat.svg", "<desc>a claim</desc>"}, {"sch.svg", "<desc>its claim</desc>"}};
    for (int k = 0; k < 2; k++) {
        f = fopen(path_join(path, sizeof path, dir, want[k][0]), "rb");
        cr_assert(f);
        memset(buf, 0, sizeof buf);
        cr_assert(fread(buf, 1, sizeof buf - 1, f) > 0);
        fclose(f);
        cr_assert(strstr(buf, want[k][1]), "%s has no %s", want[k][0], want[k][1]);
    }
    cr_assert(!test_has_tmp_files(dir));
}
