// layerstrip.c: the layer strip figure (layerstrip.h).
#include "layerstrip.h"

#include <stdio.h>
#include <string.h>

#include "plot.h"



const char *const layer_strip_names[STRIP_COUNT] = {
    "global attention", "local (sliding window W)", "chunked (Llama 4)", "MLA", "MLA + DSA indexer",
    "MLA + shared indexer (no key)", "CSA (m = 4, indexer)", "HCA (m = 128)", "Gated DeltaNet", "KDA", "Lightning",
    "Mamba-2", "MLP-only (no cache)",
};

StripKind layer_strip_kind(const ModelGeometry *g, int l) {
    switch (g->layer_kind[l]) {
    case LAYER_LOCAL: return STRIP_LOCAL;
    case LAYER_CHUNKED: return STRIP_CHUNKED;
    case LAYER_NONE: return STRIP_MLP;
    case LAYER_COMPRESSED: return geometry_layer_is_csa(g, l) ? STRIP_CSA : STRIP_HCA;
    case LAYER_LINEAR:
        switch (g->linear_kind) {
        case LINEAR_KDA: return STRIP_KDA;
        case LINEAR_LIGHTNING: return STRIP_LIGHTNING;
        case LINEAR_MAMBA2: return STRIP_MAMBA2;
        default: return STRIP_GDN;
        }
    default:
        if (g->index_n_heads > 0 && g->indexer_types[l] == INDEXER_SHARED) return STRIP_DSA_SHARED;
        if (geometry_layer_has_indexer(g, l)) return STRIP_DSA;
        return g->attn == ATTN_MLA ? STRIP_MLA : STRIP_GLOBAL;
    }
}

// A palette colour, or a mix of one with white (t > 0) or black (t < 0), so related kinds share a hue.
static void strip_rgb(StripKind k, double rgb[3]) {
    static const struct { int color; double t; } map[STRIP_COUNT] = {
        [STRIP_GLOBAL] = {COLOR_MHA, 0}, [STRIP_LOCAL] = {COLOR_SWA, 0}, [STRIP_CHUNKED] = {COLOR_MQA, 0},
        [STRIP_MLA] = {COLOR_MLA, 0}, [STRIP_DSA] = {COLOR_DSA, 0}, [STRIP_DSA_SHARED] = {COLOR_DSA, 0.6},
        [STRIP_CSA] = {COLOR_DSA, -0.45}, [STRIP_HCA] = {COLOR_MLA, 0.5}, [STRIP_GDN] = {COLOR_LINEAR, 0},
        [STRIP_KDA] = {COLOR_LINEAR, -0.45}, [STRIP_LIGHTNING] = {COLOR_LINEAR, 0.55},
        [STRIP_MAMBA2] = {COLOR_OTHER, 0}, [STRIP_MLP] = {COLOR_OTHER, 0.8},
    };
    palette_rgb(map[k].color, rgb);
    double t = map[k].t;
    for (int c = 0; c < 3; c++) rgb[c] = t >= 0 ? rgb[c] + (1 - rgb[c]) * t : rgb[c] * (1 + t);
}

typedef struct {
    const ModelGeometry *g;
    int n, max_layers;
    int present[STRIP_COUNT], any_shared;
    double label_w, cell_w, row_h, top, legend_top;
    const char *title, *subtitle;
} Strip;

enum { STRIP_W = 900, STRIP_MARGIN = 24 };

// The row label: "name  (W 1024)" when the model has a window or chunk.
static void strip_label(const ModelGeometry *g, char *buf, size_t cap) {
    if (g->attention_chunk_size > 0) snprintf(buf, cap, "%s (C %d)", g->name, g->attention_chunk_size);
    else if (geometry_count(g, LAYER_LOCAL) + geometry_count(g, LAYER_COMPRESSED) > 0)
        snprintf(buf, cap, "%s (W %d)", g->name, g->sliding_window);
    else snprintf(buf, cap, "%s", g->name);
}

static void strip_hatch(cairo_t *cr, double x, double y, double w, double h) {
    cairo_save(cr);
    cairo_rectangle(cr, x, y, w, h);
    cairo_clip(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_set_line_width(cr, 1.2);
    for (double d = -h; d < w; d += 3.5) {
        cairo_move_to(cr, x + d, y + h);
        cairo_line_to(cr, x + d + h, y);
    }
    cairo_stroke(cr);
    cairo_restore(cr);
}

// The legend: a swatch and a name per kind present, in rows that wrap at the figure's width.
static double strip_legend(cairo_t *cr, const Strip *S, double y, int draw) {
    plot_font(cr, 12, 0);
    double x = STRIP_MARGIN, line = 20;
    for (int k = 0; k <= STRIP_COUNT; k++) {
        if (k < STRIP_COUNT && !S->present[k]) continue;
        if (k == STRIP_COUNT && !S->any_shared) break;
        const char *name = k < STRIP_COUNT ? layer_strip_names[k] : "KV-shared (hatched: reads an earlier layer's K/V)";
        double w = 16 + plot_text_width(cr, name) + 18;
        if (x + w > STRIP_W - STRIP_MARGIN) x = STRIP_MARGIN, y += line;
        if (draw) {
            double rgb[3];
            strip_rgb(k < STRIP_COUNT ? (StripKind)k : STRIP_LOCAL, rgb);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, x, y - 5, 12, 12);
            cairo_fill(cr);
            if (k == STRIP_COUNT) strip_hatch(cr, x, y - 5, 12, 12);
            cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
            plot_text(cr, x + 16, y + 1, 0, 0.5, name);
        }
        x += w;
    }
    return y + line;
}

static void draw_strip(cairo_t *cr, double width, double height, const void *ctx) {
    const Strip *S = ctx;
    (void)height;
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    plot_title_block(cr, S->title, S->subtitle, STRIP_MARGIN, STRIP_MARGIN, width - 2 * STRIP_MARGIN, 1);
    double x0 = STRIP_MARGIN + S->label_w;
    plot_font(cr, 11, 0);
    cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
    for (int l = 0; l < S->max_layers; l += 10) {   // layer index ticks above the first row
        char t[16];
        snprintf(t, sizeof t, "%d", l);
        plot_text(cr, x0 + (l + 0.5) * S->cell_w, S->top - 6, 0.5, 1, t);
    }
    for (int i = 0; i < S->n; i++) {
        const ModelGeometry *g = &S->g[i];
        double y = S->top + i * S->row_h;
        char label[160];
        strip_label(g, label, sizeof label);
        plot_font(cr, 12, 0);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        plot_text(cr, x0 - 8, y + S->row_h * 0.4, 1, 0.5, label);
        double gap = S->cell_w >= 6 ? 1.0 : 0.0;
        for (int l = 0; l < g->n_layers; l++) {
            double rgb[3], cx = x0 + l * S->cell_w, ch = S->row_h * 0.8;
            strip_rgb(layer_strip_kind(g, l), rgb);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, cx, y, S->cell_w - gap, ch);
            cairo_fill(cr);
            if (geometry_kv_source(g, l) != l) strip_hatch(cr, cx, y, S->cell_w - gap, ch);
        }
    }
    strip_legend(cr, S, S->legend_top, 1);
}

void layer_strip_plot(const ModelGeometry *gs, int n, const char *title, const char *subtitle, const char *path_no_ext,
                      int png, int svg) {
    Strip S = {.g = gs, .n = n, .title = title, .subtitle = subtitle};
    cairo_t *cr = plot_measure_context();
    plot_font(cr, 12, 0);
    for (int i = 0; i < n; i++) {
        char label[160];
        strip_label(&gs[i], label, sizeof label);
        double w = plot_text_width(cr, label) + 12;
        if (w > S.label_w) S.label_w = w;
        if (gs[i].n_layers > S.max_layers) S.max_layers = gs[i].n_layers;
        for (int l = 0; l < gs[i].n_layers; l++) {
            S.present[layer_strip_kind(&gs[i], l)] = 1;
            if (geometry_kv_source(&gs[i], l) != l) S.any_shared = 1;
        }
    }
    if (S.label_w > 300) S.label_w = 300;
    S.cell_w = (STRIP_W - 2 * STRIP_MARGIN - S.label_w) / S.max_layers;
    S.row_h = 22;
    double head = plot_title_block(cr, title, subtitle, 0, 0, STRIP_W - 2 * STRIP_MARGIN, 0);
    S.top = STRIP_MARGIN + head + 26;
    S.legend_top = S.top + n * S.row_h + 14;
    double h = strip_legend(cr, &S, S.legend_top, 0) + STRIP_MARGIN;
    cairo_destroy(cr);
    plot_write_figure(path_no_ext, png, svg, STRIP_W, h, draw_strip, &S);
}
