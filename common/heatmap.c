// heatmap.c: attention matrices as pictures: colormaps, the raw one-block-per-cell PNG, and the
// annotated multi-panel figure.
//
// The annotated figure is laid out once (colour groups, which panels show their labels, cell size,
// label widths, panel positions, canvas size) with a measuring context, then drawn by one function for
// both SVG and PNG (plot_write_figure_meta).
#include "heatmap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image_write.h>

#include "check.h"
#include "plot.h"

// ---- colormaps -------------------------------------------------------------------------------------
// Viridis (matplotlib's _viridis_data), every 17th of its 256 entries: 16 anchors, linearly
// interpolated. Lightness rises monotonically from dark purple to yellow, so larger = brighter in
// colour and in greyscale.
static const float viridis_anchor[16][3] = {
    {0.267004f, 0.004874f, 0.329415f}, {0.282656f, 0.100196f, 0.422160f}, {0.277134f, 0.185228f, 0.489898f},
    {0.253935f, 0.265254f, 0.529983f}, {0.221989f, 0.339161f, 0.548752f}, {0.190631f, 0.407061f, 0.556089f},
    {0.163625f, 0.471133f, 0.558148f}, {0.139147f, 0.533812f, 0.555298f}, {0.120565f, 0.596422f, 0.543611f},
    {0.134692f, 0.658636f, 0.517649f}, {0.208030f, 0.718701f, 0.472873f}, {0.327796f, 0.773980f, 0.406640f},
    {0.477504f, 0.821444f, 0.318195f}, {0.647257f, 0.858400f, 0.209861f}, {0.824940f, 0.884720f, 0.106217f},
    {0.993248f, 0.906157f, 0.143936f},
};

// ColorBrewer RdBu (11 classes) reversed: blue for negative, red for positive, with the centre made
// pure white so zero reads as "nothing".
static const unsigned char diverging_anchor[11][3] = {
    {5, 48, 97},    {33, 102, 172}, {67, 147, 195}, {146, 197, 222}, {209, 229, 240}, {255, 255, 255},
    {253, 219, 199}, {244, 165, 130}, {214, 96, 77}, {178, 24, 43},  {103, 0, 31},
};

static float clamp01(float t) { return t > 0 ? (t < 1 ? t : 1) : 0; }   // NaN -> 0

void colormap_viridis(float t, unsigned char rgb[3]) {
    float x = clamp01(t) * 15.0f;
    int i = (int)x;
    if (i > 14) i = 14;
    float f = x - (float)i;
    for (int k = 0; k < 3; k++) {
        float v = viridis_anchor[i][k] + f * (viridis_anchor[i + 1][k] - viridis_anchor[i][k]);
        rgb[k] = (unsigned char)lrintf(v * 255.0f);
    }
}

void colormap_diverging(float t, unsigned char rgb[3]) {
    float x = clamp01(t) * 10.0f;
    int i = (int)x;
    if (i > 9) i = 9;
    float f = x - (float)i;
    for (int k = 0; k < 3; k++) {
        float v = diverging_anchor[i][k] + f * ((float)diverging_anchor[i + 1][k] - diverging_anchor[i][k]);
        rgb[k] = (unsigned char)lrintf(v);
    }
}

// Value -> position on the colormap. A diverging map puts zero at its white centre even when the
// range is lopsided (-1..3): each side is stretched separately.
static float value_t(float v, float vmin, float vmax, int diverging) {
    if (diverging && vmin < 0 && vmax > 0)
        return v < 0 ? 0.5f - 0.5f * (v / vmin) : 0.5f + 0.5f * (v / vmax);
    return vmax > vmin ? (v - vmin) / (vmax - vmin) : 0.5f;
}

static void value_rgb(float v, float vmin, float vmax, int diverging, unsigned char rgb[3]) {
    float t = value_t(v, vmin, vmax, diverging);
    if (diverging) colormap_diverging(t, rgb);
    else colormap_viridis(t, rgb);
}

// Widens [lo, hi] to the unmasked finite values of p.
static void data_range(const HeatPanel *p, float *lo, float *hi) {
    for (int i = 0; i < p->rows * p->cols; i++) {
        float v = p->values[i];
        if ((p->mask && !p->mask[i]) || !isfinite(v)) continue;
        if (v < *lo) *lo = v;
        if (v > *hi) *hi = v;
    }
}

// An empty or flat range becomes usable; a diverging one symmetric around zero.
static void finish_range(int diverging, float *lo, float *hi) {
    if (!(*lo <= *hi)) { *lo = 0; *hi = 1; }
    if (diverging) {
        float m = fmaxf(fabsf(*lo), fabsf(*hi));
        if (m == 0) m = 1;
        *lo = -m;
        *hi = m;
    } else if (*lo == *hi) {
        *lo -= 0.5f;
        *hi += 0.5f;
    }
}

// ---- raw PNG ---------------------------------------------------------------------------------------
typedef struct {
    unsigned char *data;
    size_t n, cap;
} Bytes;

static void bytes_write(void *ctx, void *data, int size) {
    Bytes *b = ctx;
    if (b->n + (size_t)size > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->n + (size_t)size) cap *= 2;
        b->data = realloc(b->data, cap);
        CHECK(b->data, "out of memory encoding a PNG");
        b->cap = cap;
    }
    memcpy(b->data + b->n, data, (size_t)size);
    b->n += (size_t)size;
}

void heatmap_raw_png(const char *path, const float *values, const unsigned char *mask, int rows, int cols,
                     int cell_px, float vmin, float vmax, int diverging) {
    CHECK(values && rows > 0 && cols > 0 && cell_px > 0, "heatmap_raw_png: empty matrix or cell size");
    CHECK((double)rows * cell_px * cols * cell_px * 3 < 1e9, "heatmap_raw_png: %d x %d cells of %d px is too big",
          rows, cols, cell_px);
    if (!(vmin < vmax)) {
        HeatPanel p = {.values = values, .mask = mask, .rows = rows, .cols = cols};
        vmin = INFINITY;
        vmax = -INFINITY;
        data_range(&p, &vmin, &vmax);
        finish_range(diverging, &vmin, &vmax);
    }
    int w = cols * cell_px, h = rows * cell_px;
    unsigned char *img = mallocCheck((size_t)w * h * 3);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            unsigned char rgb[3] = {128, 128, 128};   // masked: mid grey
            if (!mask || mask[i * cols + j]) value_rgb(values[i * cols + j], vmin, vmax, diverging, rgb);
            for (int y = i * cell_px; y < (i + 1) * cell_px; y++)
                for (int x = j * cell_px; x < (j + 1) * cell_px; x++) memcpy(&img[((size_t)y * w + x) * 3], rgb, 3);
        }
    Bytes b = {0};
    CHECK(stbi_write_png_to_func(bytes_write, &b, w, h, 3, img, w * 3), "encoding '%s' failed", path);
    atomic_write_all(path, b.data, b.n);
    free(b.data);
    free(img);
}

// ---- annotated figure: layout ---------------------------------------------------------------------------
#define HM_MARGIN 20.0
#define PANEL_TITLE_FONT 13.0
#define PANEL_TITLE_H 24.0     // band above a grid for its title
#define AXIS_FONT 12.0         // xlabel, ylabel, colorbar label
#define LAB_FONT 11.0          // token and index labels
#define CB_FONT 11.0           // colorbar ticks
#define CB_W 14.0              // colorbar width
#define CB_GAP 14.0            // grid to the colorbar it carries
#define PANEL_GAP 40.0
#define ROW_GAP 30.0
#define OP_FONT 12.5
#define KEY_FONT 11.0
#define KEY_H 16.0             // the masked / blank key line
#define MAX_GROUPS 16
#define MASKED_GREY 0xEFEFEF
#define BLANK_GREY 0xD4D4D4

// Panels of one unit: one colour range, one colorbar.
typedef struct {
    const char *label;
    int diverging;
    float vmin, vmax;
    int carrier;               // the panel whose right side carries the colorbar (-1: the shared one)
} ColorGroup;

typedef struct {
    const HeatPanel *p;
    int group;
    float vmin, vmax;
    int diverging;
    int show_values;
    double val_font;
    int val_decimals;          // -1: exponent notation
    int show_rows, show_cols;  // this panel draws its row / column labels (neighbours share theirs)
    int row_step, col_step, col_rotated;
    char xlabel[160], ylabel[160];
    double ylab_w, rowlab_w, collab_h, xlab_h;
    double gw, gh;
    double title_w, ox;        // ox: shift right when the title is wider than the grid's side of the slot
    double cb_w, cb_h;         // the colorbar this panel carries (0 when none)
    double w, h;               // slot
    double x, y;               // slot position on the canvas
    double gx, gy;             // grid position on the canvas
    double op_w;               // width of the arrow gap after this panel (0: no op_after)
    double arrow_x0, arrow_x1;
    int row;
} PanelLayout;

typedef struct {
    const HeatmapFigure *f;
    PanelLayout *pl;
    int n;
    ColorGroup grp[MAX_GROUPS];
    int n_grp;
    double cs;
    double cb_x, cb_y, cb_h;   // the shared colorbar (one group only)
    int any_mask, any_blank;
    double key_h, key_y;
    double w, h, head_h, note_h, content_y;
    int title_fits, subtitle_fits;
} HeatLayout;

static void set_hex(cairo_t *cr, unsigned hex) { plot_set_hex(cr, hex); }

static const char *row_label(const PanelLayout *P, int i, char *buf, int cap) {
    if (P->p->row_labels && P->p->row_labels[i]) return P->p->row_labels[i];
    snprintf(buf, cap, "%d", i);
    return buf;
}

static const char *col_label(const PanelLayout *P, int j, char *buf, int cap) {
    if (P->p->col_labels && P->p->col_labels[j]) return P->p->col_labels[j];
    snprintf(buf, cap, "%d", j);
    return buf;
}

static void format_value(char *buf, int cap, float v, int decimals) {
    if (decimals < 0) snprintf(buf, cap, "%.0e", v);
    else snprintf(buf, cap, "%.*f", decimals, v);
    // "-0.00" would claim a sign the value does not have at this precision
    if (buf[0] == '-' && strspn(buf + 1, "0.") == strlen(buf + 1)) memmove(buf, buf + 1, strlen(buf));
}

// Colorbar ticks: nice values inside [vmin, vmax].
static int colorbar_ticks(float vmin, float vmax, double *t) {
    double all[16];
    int n = plot_nice_ticks(vmin, vmax, all, 6), k = 0;
    double eps = (vmax - vmin) * 1e-6;
    for (int i = 0; i < n; i++)
        if (all[i] >= vmin - eps && all[i] <= vmax + eps) t[k++] = all[i];
    return k;
}

// Width of a colorbar block: bar, tick marks, tick labels, rotated label.
static double colorbar_width(cairo_t *cr, float vmin, float vmax, const char *label) {
    double t[16], w = 0;
    int n = colorbar_ticks(vmin, vmax, t);
    char buf[64];
    plot_font(cr, CB_FONT, 0);
    for (int i = 0; i < n; i++) w = fmax(w, plot_text_width(cr, plot_format_tick(buf, sizeof buf, t[i], AXIS_PLAIN)));
    return CB_W + 8 + w + (label && *label ? 10 + AXIS_FONT : 0) + 4;
}

static int pow2_step(double need, double cs) {
    int s = 1;
    while (s * cs < need && s < (1 << 20)) s *= 2;
    return s;
}

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

// The unit of a panel: its own colorbar label, else the figure's.
static const char *panel_unit(const HeatmapFigure *f, const HeatPanel *p) {
    return p->colorbar_label ? p->colorbar_label : f->colorbar_label;
}

// Colour groups: panels with the same unit and kind share one range. The range is the union of the
// ranges the group's panels ask for; else the figure's; else the data's.
static void heat_groups(HeatLayout *L) {
    const HeatmapFigure *f = L->f;
    L->n_grp = 0;
    for (int i = 0; i < L->n; i++) {
        const HeatPanel *p = &f->panels[i];
        PanelLayout *P = &L->pl[i];
        P->p = p;
        P->diverging = p->diverging || f->diverging;
        const char *unit = panel_unit(f, p);
        int g = -1;
        for (int k = 0; k < L->n_grp && g < 0; k++)
            if (same_str(L->grp[k].label, unit) && L->grp[k].diverging == P->diverging) g = k;
        if (g < 0) {
            CHECK(L->n_grp < MAX_GROUPS, "heatmap_figure: more than %d colour scales", MAX_GROUPS);
            g = L->n_grp++;
            L->grp[g] = (ColorGroup){.label = unit, .diverging = P->diverging, .vmin = INFINITY, .vmax = -INFINITY,
                                     .carrier = -1};
        }
        P->group = g;
        if (p->vmin < p->vmax) {
            L->grp[g].vmin = fminf(L->grp[g].vmin, p->vmin);
            L->grp[g].vmax = fmaxf(L->grp[g].vmax, p->vmax);
        }
    }
    for (int g = 0; g < L->n_grp; g++) {
        ColorGroup *G = &L->grp[g];
        if (G->vmin < G->vmax) continue;
        if (f->vmin < f->vmax) {
            G->vmin = f->vmin;
            G->vmax = f->vmax;
            continue;
        }
        for (int i = 0; i < L->n; i++)
            if (L->pl[i].group == g) data_range(&f->panels[i], &G->vmin, &G->vmax);
        finish_range(G->diverging, &G->vmin, &G->vmax);
    }
    for (int i = 0; i < L->n; i++) {
        L->pl[i].vmin = L->grp[L->pl[i].group].vmin;
        L->pl[i].vmax = L->grp[L->pl[i].group].vmax;
    }
}

// a (right of b in one row) can leave its row labels to b: same rows, same labels, no other y label
static int same_rows(const HeatPanel *a, const HeatPanel *b) {
    return a->rows == b->rows && a->row_labels == b->row_labels && (!a->ylabel || same_str(a->ylabel, b->ylabel));
}

// a (above b in one column) can leave its column labels to b: same columns, labels, x label
static int same_cols(const HeatPanel *a, const HeatPanel *b) {
    return a->cols == b->cols && a->col_labels == b->col_labels && (!a->xlabel || same_str(a->xlabel, b->xlabel));
}

// For ppr panels a row: which panels draw their labels, and which carries each group's colorbar (the
// rightmost of the group in the first row where the group appears).
static void heat_assign(HeatLayout *L, int ppr) {
    for (int i = 0; i < L->n; i++) {
        PanelLayout *P = &L->pl[i];
        int col = i % ppr, below = i + ppr;
        // neighbours share labels only when they also share a unit: a pipeline (scores, then weights)
        // keeps every panel's labels
        P->show_rows = col == 0 || !same_rows(P->p, L->pl[i - 1].p) || P->group != L->pl[i - 1].group;
        P->show_cols = below >= L->n || !same_cols(P->p, L->pl[below].p) || P->group != L->pl[below].group;
    }
    for (int g = 0; g < L->n_grp; g++) {
        L->grp[g].carrier = -1;
        if (L->n_grp == 1) continue;
        int first_row = -1;
        for (int i = 0; i < L->n; i++) {
            if (L->pl[i].group != g) continue;
            if (first_row < 0) first_row = i / ppr;
            if (i / ppr == first_row) L->grp[g].carrier = i;
        }
    }
}

// "query i (every 2nd token labelled)": the axis label says when token labels are thinned.
static void thinned_label(char *out, size_t cap, const char *base, int step, int tokens) {
    if (step > 1 && tokens) {
        char nth[16];
        snprintf(nth, sizeof nth, step == 2 ? "2nd" : step == 3 ? "3rd" : "%dth", step);
        if (base && *base) snprintf(out, cap, "%s (every %s token labelled)", base, nth);
        else snprintf(out, cap, "every %s token labelled", nth);
    } else {
        snprintf(out, cap, "%s", base ? base : "");
    }
}

// Everything that depends on the cell size cs, for one panel (sizes only; positions come later).
static void panel_measure(PanelLayout *P, const HeatLayout *L, int index, cairo_t *cr) {
    const HeatPanel *p = P->p;
    const HeatmapFigure *f = L->f;
    double cs = L->cs;
    P->gw = p->cols * cs;
    P->gh = p->rows * cs;
    char buf[64];
    plot_font(cr, LAB_FONT, 0);
    // token labels as dense as the font allows; indices at least 24 pt apart (0, 4, 8, ... reads better)
    // (a small matrix keeps every index: 0, 1, 2 rows read better whole)
    P->row_step = pow2_step(p->row_labels || p->rows <= 16 ? LAB_FONT * 1.15 : fmax(LAB_FONT * 1.15, 24), cs);
    P->rowlab_w = 0;
    if (P->show_rows) {
        for (int i = 0; i < p->rows; i += P->row_step)
            P->rowlab_w = fmax(P->rowlab_w, plot_text_width(cr, row_label(P, i, buf, sizeof buf)));
        P->rowlab_w += 7;
    }
    double colw = 0;
    for (int j = 0; j < p->cols; j++) colw = fmax(colw, plot_text_width(cr, col_label(P, j, buf, sizeof buf)));
    P->col_rotated = 0;
    if (!p->col_labels) {
        P->col_step = pow2_step(p->cols <= 16 ? colw + 5 : fmax(colw + 5, 24), cs);   // indices stay horizontal
    } else if (colw + 4 <= cs) {
        P->col_step = 1;
    } else {
        P->col_rotated = 1;                       // tokens stand up, thinned by the font's height
        P->col_step = pow2_step(LAB_FONT * 1.15, cs);
        colw = 0;
        for (int j = 0; j < p->cols; j += P->col_step)
            colw = fmax(colw, plot_text_width(cr, col_label(P, j, buf, sizeof buf)));
    }
    thinned_label(P->ylabel, sizeof P->ylabel, P->show_rows ? p->ylabel : NULL, P->show_rows ? P->row_step : 1,
                  p->row_labels != NULL);
    thinned_label(P->xlabel, sizeof P->xlabel, P->show_cols ? p->xlabel : NULL, P->show_cols ? P->col_step : 1,
                  p->col_labels != NULL);
    // a rotated y label longer than its panel is tall would run into the panel's title: keep only its
    // base (the figure's note says when labels are thinned)
    plot_font(cr, AXIS_FONT, 0);
    char *paren = strstr(P->ylabel, " (");
    if (paren && plot_text_width(cr, P->ylabel) > P->gh) *paren = '\0';
    plot_font(cr, LAB_FONT, 0);
    P->collab_h = !P->show_cols ? 0 : P->col_rotated ? colw + 9 : LAB_FONT + 9;
    P->ylab_w = P->ylabel[0] ? AXIS_FONT + 10 : 0;
    P->xlab_h = P->xlabel[0] ? AXIS_FONT + 8 : 0;

    // values in the cells: as many decimals as the range needs, the font shrunk to fit the cell
    P->show_values = f->show_values == 1 || (f->show_values < 0 && p->rows <= 16 && p->cols <= 16);
    if (P->show_values) {
        float m = fmaxf(fabsf(P->vmin), fabsf(P->vmax));
        P->val_decimals = m >= 100 ? 0 : m >= 10 ? 1 : m >= 0.1f ? 2 : -1;
        P->val_font = fmin(11.0, cs * 0.3 + 1);
        plot_font(cr, P->val_font, 0);
        double widest = 0;
        for (int i = 0; i < p->rows * p->cols; i++) {
            if ((p->mask && !p->mask[i]) || (p->blank && p->blank[i])) continue;
            format_value(buf, sizeof buf, p->values[i], P->val_decimals);
            widest = fmax(widest, plot_text_width(cr, buf));
        }
        if (widest > cs - 5) P->val_font *= (cs - 5) / widest;
        if (P->val_font < 6.5) P->show_values = 0;
    }
    plot_font(cr, PANEL_TITLE_FONT, PLOT_BOLD);
    P->title_w = plot_text_width(cr, p->title);
    P->cb_w = P->cb_h = 0;
    const ColorGroup *G = &L->grp[P->group];
    if (G->carrier == index) {
        P->cb_w = CB_GAP + colorbar_width(cr, G->vmin, G->vmax, G->label);
        P->cb_h = fmax(P->gh, 100);
    }
    double left = P->ylab_w + P->rowlab_w, centre = left + P->gw / 2;
    P->ox = fmax(0, P->title_w / 2 - centre);
    P->w = fmax(P->ox + left + P->gw + P->cb_w, P->ox + centre + P->title_w / 2);
    P->h = PANEL_TITLE_H + fmax(P->gh, P->cb_h) + P->collab_h + P->xlab_h;
    plot_font(cr, OP_FONT, PLOT_ITALIC);
    P->op_w = p->op_after && *p->op_after ? fmax(56, plot_text_width(cr, p->op_after) + 24) : 0;
}

// Positions panels in rows of ppr, grids aligned in columns (each column as wide as its widest
// panel) and at the top of each row; returns the content width (panels + shared colorbar).
static double heat_place(HeatLayout *L, int ppr, cairo_t *cr, double *content_h) {
    double *left = callocCheck((size_t)ppr * 3 + 1, sizeof(double)), *right = left + ppr, *gap = right + ppr;
    for (int i = 0; i < L->n; i++) {
        const PanelLayout *P = &L->pl[i];
        int c = i % ppr;
        double l = P->ox + P->ylab_w + P->rowlab_w;
        left[c] = fmax(left[c], l);
        right[c] = fmax(right[c], P->w - l);
        gap[c] = fmax(gap[c], P->op_w);
    }
    int ncols = L->n < ppr ? L->n : ppr;
    double x = 0, y = 0, maxw = 0;
    for (int c = 0; c < ncols; c++) {
        if (gap[c] == 0 && c < ncols - 1) gap[c] = PANEL_GAP;
        double next = x + left[c] + right[c] + gap[c];
        left[c] += x;        // from here on: the grids' x in this column
        x = next;
    }
    maxw = x;
    for (int r0 = 0; r0 < L->n; r0 += ppr) {
        int r1 = r0 + ppr < L->n ? r0 + ppr : L->n;
        double rh = 0;
        for (int i = r0; i < r1; i++) {
            PanelLayout *P = &L->pl[i];
            P->row = r0 / ppr;
            P->gx = left[i - r0];
            P->gy = y + PANEL_TITLE_H;
            P->x = P->gx - (P->ox + P->ylab_w + P->rowlab_w);
            P->y = y;
            rh = fmax(rh, P->h);
        }
        for (int i = r0; i < r1; i++) {
            PanelLayout *P = &L->pl[i];
            P->arrow_x0 = P->x + P->w + 8;
            P->arrow_x1 = i + 1 < r1 ? L->pl[i + 1].x - 8 : P->arrow_x0 + P->op_w - 16;
        }
        y += rh + ROW_GAP;
    }
    free(left);
    *content_h = y - ROW_GAP;
    if (L->n_grp == 1) {
        double gh = 0;
        for (int i = 0; i < L->n && L->pl[i].row == 0; i++) gh = fmax(gh, L->pl[i].gh);
        L->cb_h = fmax(gh, 120);
        L->cb_x = maxw + 24;
        L->cb_y = PANEL_TITLE_H;
        *content_h = fmax(*content_h, L->cb_y + L->cb_h + 6);
        maxw = L->cb_x + colorbar_width(cr, L->grp[0].vmin, L->grp[0].vmax, L->grp[0].label);
    }
    return maxw;
}

// Lays out ppr panels a row with the largest cell size from cs0 down to cs0 / 3 (at least 4 pt) that
// keeps the figure within HEATMAP_MAX_WIDTH (just cs0 when the caller fixed cell_px).
static void heat_fit_cells(HeatLayout *L, int ppr, double cs0, cairo_t *cr, double *content_w, double *content_h) {
    heat_assign(L, ppr);
    L->cs = cs0;
    for (;;) {
        for (int i = 0; i < L->n; i++) panel_measure(&L->pl[i], L, i, cr);
        *content_w = heat_place(L, ppr, cr, content_h);
        if (*content_w + 2 * HM_MARGIN <= HEATMAP_MAX_WIDTH || L->f->cell_px > 0 || L->cs <= fmax(4, cs0 / 3)) return;
        L->cs = fmax(4, floor(L->cs * 0.92));
    }
}

static void heat_layout(HeatLayout *L, const HeatmapFigure *f, cairo_t *cr) {
    memset(L, 0, sizeof *L);
    L->f = f;
    L->n = f->n_panels;
    L->pl = callocCheck((size_t)L->n, sizeof(PanelLayout));
    heat_groups(L);
    for (int i = 0; i < L->n; i++) {
        const HeatPanel *p = &f->panels[i];
        for (int k = 0; k < p->rows * p->cols; k++) {
            if (p->mask && !p->mask[k]) L->any_mask = 1;
            if (p->blank && p->blank[k]) L->any_blank = 1;
        }
    }
    // cell size: about 44 pt for 8 x 8, 8 pt for 64 x 64; at least 34 pt when values are printed
    int nmax = 1, any_values = 0;
    for (int i = 0; i < L->n; i++) {
        const HeatPanel *p = &f->panels[i];
        nmax = p->rows > nmax ? p->rows : nmax;
        nmax = p->cols > nmax ? p->cols : nmax;
        if (f->show_values == 1 || (f->show_values < 0 && p->rows <= 16 && p->cols <= 16)) any_values = 1;
    }
    double cs0 = f->cell_px > 0 ? f->cell_px : round(fmin(48, fmax(4, 44 * pow(nmax / 8.0, -0.82))));
    if (f->cell_px <= 0 && any_values) cs0 = fmax(cs0, 34);
    int ppr = f->panels_per_row > 0 && f->panels_per_row < L->n ? f->panels_per_row : (L->n > 0 ? L->n : 1);
    double content_w = 0, content_h = 0;
    // shrink the cells, then wrap the panels, until the figure fits HEATMAP_MAX_WIDTH
    int wrapped = 0;
    for (;;) {
        heat_fit_cells(L, ppr, cs0, cr, &content_w, &content_h);
        if (content_w + 2 * HM_MARGIN <= HEATMAP_MAX_WIDTH || ppr <= 1) break;
        ppr--;
        wrapped = 1;
    }
    // wrapped rows as even as possible: 16 panels that fit 7 a row go 6 + 6 + 4, not 7 + 7 + 2
    if (wrapped) {
        int balanced = (L->n + (L->n + ppr - 1) / ppr - 1) / ((L->n + ppr - 1) / ppr);
        if (balanced != ppr) heat_fit_cells(L, balanced, cs0, cr, &content_w, &content_h);
    }
    // canvas: content centred; the title may widen it (up to the maximum) to stay on one line
    L->w = fmax(content_w + 2 * HM_MARGIN, 640);
    plot_font(cr, 18, PLOT_BOLD);
    double tw = plot_text_width(cr, f->title) + 2 * HM_MARGIN;
    if (tw > L->w) L->w = fmin(tw, fmax(L->w, HEATMAP_MAX_WIDTH));
    plot_font(cr, 13, 0);
    double sw = plot_text_width(cr, f->subtitle) + 2 * HM_MARGIN;
    if (sw > L->w) L->w = fmin(sw, fmax(L->w, HEATMAP_MAX_WIDTH));
    L->w = ceil(L->w);
    L->head_h = plot_title_block_fit(cr, f->title, f->subtitle, 0, 0, L->w - 2 * HM_MARGIN, 0, &L->title_fits,
                                     &L->subtitle_fits);
    L->note_h = plot_note_block(cr, f->note, 0, 0, L->w - 2 * HM_MARGIN, 0);
    L->key_h = L->any_mask || L->any_blank ? KEY_H : 0;
    L->content_y = HM_MARGIN + L->head_h + (L->head_h > 0 ? 18 : 0);
    L->key_y = L->content_y + content_h + 14;
    L->h = ceil(L->content_y + content_h + (L->key_h > 0 ? 14 + L->key_h : 0) + (L->note_h > 0 ? 14 + L->note_h : 0) +
                HM_MARGIN);
    // move everything to canvas coordinates; whole points keep cell edges on pixel boundaries
    double ox = floor((L->w - content_w) / 2), oy = floor(L->content_y);
    for (int i = 0; i < L->n; i++) {
        PanelLayout *P = &L->pl[i];
        P->x += ox; P->y += oy;
        P->arrow_x0 += ox; P->arrow_x1 += ox;
        P->gx = floor(P->gx + ox); P->gy = floor(P->gy + oy);
        // values too small to read when the PNG is shown 900 px wide are left out
        if (P->show_values && P->val_font * 900.0 / L->w < HEATMAP_MIN_VALUE_PX) P->show_values = 0;
    }
    L->cb_x = floor(L->cb_x + ox);
    L->cb_y = floor(L->cb_y + oy);
}

// ---- annotated figure: drawing -----------------------------------------------------------------------
// Diagonal hatching of the masked cells: lines x + y = k * spacing across the whole grid, clipped to
// the masked cells, so a masked region reads as one continuous hatched area (and the SVG stays small).
static void hatch_cells(cairo_t *cr, const unsigned char *mask, int rows, int cols, double gx, double gy, double cs) {
    cairo_save(cr);
    cairo_new_path(cr);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols;) {
            if (mask[i * cols + j]) { j++; continue; }
            int j1 = j;
            while (j1 < cols && !mask[i * cols + j1]) j1++;
            cairo_rectangle(cr, gx + j * cs, gy + i * cs, (j1 - j) * cs, cs);
            j = j1;
        }
    cairo_clip(cr);
    double gw = cols * cs, gh = rows * cs, spacing = cs >= 12 ? 6 : 3.5;
    set_hex(cr, 0xBDBDBD);
    cairo_set_line_width(cr, cs >= 12 ? 1.0 : 0.7);
    for (double c = ceil((gx + gy) / spacing) * spacing; c < gx + gy + gw + gh; c += spacing) {
        double xa = fmax(gx, c - (gy + gh)), xb = fmin(gx + gw, c - gy);
        if (xb <= xa) continue;
        cairo_move_to(cr, xa, c - xa);
        cairo_line_to(cr, xb, c - xb);
    }
    cairo_stroke(cr);
    cairo_restore(cr);
}

static void draw_colorbar(cairo_t *cr, double x, double y, double h, float vmin, float vmax, int diverging,
                          const char *label) {
    // the gradient is sampled from the same value -> colour mapping as the cells (zero stop included)
    cairo_pattern_t *g = cairo_pattern_create_linear(0, y + h, 0, y);
    enum { N = 32 };
    for (int k = 0; k <= N; k++) {
        float v = vmin + (vmax - vmin) * k / N;
        float vnext = vmin + (vmax - vmin) * (k + 1) / N;
        unsigned char rgb[3];
        value_rgb(v, vmin, vmax, diverging, rgb);
        cairo_pattern_add_color_stop_rgb(g, (double)k / N, rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0);
        if (diverging && k < N && v < 0 && vnext > 0) {
            value_rgb(0, vmin, vmax, diverging, rgb);
            cairo_pattern_add_color_stop_rgb(g, -vmin / (vmax - vmin), rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0);
        }
    }
    cairo_rectangle(cr, x, y, CB_W, h);
    cairo_set_source(cr, g);
    cairo_fill_preserve(cr);
    cairo_pattern_destroy(g);
    set_hex(cr, 0x888888);
    cairo_set_line_width(cr, 0.8);
    cairo_stroke(cr);
    double t[16], labw = 0;
    int n = colorbar_ticks(vmin, vmax, t);
    char buf[64];
    plot_font(cr, CB_FONT, 0);
    for (int i = 0; i < n; i++) {
        double ty = y + h - (t[i] - vmin) / (vmax - vmin) * h;
        set_hex(cr, 0x555555);
        cairo_move_to(cr, x + CB_W, ty);
        cairo_line_to(cr, x + CB_W + 4, ty);
        cairo_stroke(cr);
        set_hex(cr, 0x333333);
        plot_format_tick(buf, sizeof buf, t[i], AXIS_PLAIN);
        plot_text(cr, x + CB_W + 7, ty, 0, 0.5, buf);
        labw = fmax(labw, plot_text_width(cr, buf));
    }
    if (label && *label) {
        cairo_save(cr);
        cairo_translate(cr, x + CB_W + 8 + labw + 10, y + h / 2);
        cairo_rotate(cr, -M_PI / 2);
        plot_font(cr, AXIS_FONT, 0);
        set_hex(cr, 0x222222);
        plot_text(cr, 0, 0, 0.5, 0, label);
        cairo_restore(cr);
    }
}

static void draw_arrow(cairo_t *cr, double x0, double x1, double y, const char *text) {
    set_hex(cr, 0x444444);
    cairo_set_line_width(cr, 1.6);
    cairo_move_to(cr, x0, y);
    cairo_line_to(cr, x1 - 7, y);
    cairo_stroke(cr);
    cairo_move_to(cr, x1, y);
    cairo_line_to(cr, x1 - 9, y - 4.5);
    cairo_line_to(cr, x1 - 9, y + 4.5);
    cairo_close_path(cr);
    cairo_fill(cr);
    plot_font(cr, OP_FONT, PLOT_ITALIC);
    set_hex(cr, 0x222222);
    plot_text(cr, (x0 + x1) / 2, y - 8, 0.5, 1, text);
}

static int cell_is_blank(const HeatPanel *p, int k) { return p->blank && p->blank[k]; }
static int cell_is_masked(const HeatPanel *p, int k) { return p->mask && !p->mask[k]; }

// Colour of cell k: the colormap, the light grey under the hatching of a masked cell, or the flat grey
// of a blank one.
static void cell_rgb(const PanelLayout *P, int k, unsigned char rgb[3]) {
    unsigned hex = cell_is_masked(P->p, k) ? MASKED_GREY : cell_is_blank(P->p, k) ? BLANK_GREY : 0;
    if (hex) {
        rgb[0] = (hex >> 16) & 255; rgb[1] = (hex >> 8) & 255; rgb[2] = hex & 255;
        return;
    }
    value_rgb(P->p->values[k], P->vmin, P->vmax, P->diverging, rgb);
}

static void draw_panel(cairo_t *cr, const HeatLayout *L, const PanelLayout *P, const PanelLayout *next, int index) {
    const HeatPanel *p = P->p;
    double cs = L->cs, gx = P->gx, gy = P->gy;
    char buf[64];
    plot_font(cr, PANEL_TITLE_FONT, PLOT_BOLD);
    set_hex(cr, 0x222222);
    plot_text(cr, gx + P->gw / 2, P->y + 2, 0.5, 0, p->title);

    // cells: flat colour, no antialiasing so neighbouring blocks meet without seams; a run of equal
    // colours in a row (masked cells, mostly) is one rectangle
    cairo_set_antialias(cr, CAIRO_ANTIALIAS_NONE);
    for (int i = 0; i < p->rows; i++)
        for (int j = 0; j < p->cols;) {
            unsigned char rgb[3], nx[3];
            cell_rgb(P, i * p->cols + j, rgb);
            int j1 = j + 1;
            while (j1 < p->cols && (cell_rgb(P, i * p->cols + j1, nx), !memcmp(nx, rgb, 3))) j1++;
            cairo_set_source_rgb(cr, rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0);
            cairo_rectangle(cr, gx + j * cs, gy + i * cs, (j1 - j) * cs, cs);
            cairo_fill(cr);
            j = j1;
        }
    cairo_set_antialias(cr, CAIRO_ANTIALIAS_DEFAULT);
    if (p->mask) hatch_cells(cr, p->mask, p->rows, p->cols, gx, gy, cs);
    // white lines between cells when cells are big enough to read one by one
    if (cs >= 12) {
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_set_line_width(cr, cs >= 24 ? 1.5 : 1.0);
        for (int j = 1; j < p->cols; j++) { cairo_move_to(cr, gx + j * cs, gy); cairo_line_to(cr, gx + j * cs, gy + P->gh); }
        for (int i = 1; i < p->rows; i++) { cairo_move_to(cr, gx, gy + i * cs); cairo_line_to(cr, gx + P->gw, gy + i * cs); }
        cairo_stroke(cr);
    }
    set_hex(cr, 0x999999);
    cairo_set_line_width(cr, 0.8);
    cairo_rectangle(cr, gx - 0.4, gy - 0.4, P->gw + 0.8, P->gh + 0.8);
    cairo_stroke(cr);

    if (P->show_values) {
        plot_font(cr, P->val_font, 0);
        for (int k = 0; k < p->rows * p->cols; k++) {
            if (cell_is_masked(p, k) || cell_is_blank(p, k)) continue;
            unsigned char rgb[3];
            value_rgb(p->values[k], P->vmin, P->vmax, P->diverging, rgb);
            // white text on dark cells, near-black on light ones
            double lum = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0;
            if (lum < 0.55) cairo_set_source_rgb(cr, 1, 1, 1);
            else set_hex(cr, 0x1A1A1A);
            format_value(buf, sizeof buf, p->values[k], P->val_decimals);
            plot_text(cr, gx + (k % p->cols + 0.5) * cs, gy + (k / p->cols + 0.5) * cs, 0.5, 0.5, buf);
        }
    }

    plot_font(cr, LAB_FONT, 0);
    set_hex(cr, 0x333333);
    if (P->show_rows)
        for (int i = 0; i < p->rows; i += P->row_step)
            plot_text(cr, gx - 6, gy + (i + 0.5) * cs, 1, 0.5, row_label(P, i, buf, sizeof buf));
    if (P->show_cols)
        for (int j = 0; j < p->cols; j += P->col_step) {
            double cx = gx + (j + 0.5) * cs;
            if (!P->col_rotated) {
                plot_text(cr, cx, gy + P->gh + 6, 0.5, 0, col_label(P, j, buf, sizeof buf));
            } else {
                cairo_save(cr);
                cairo_translate(cr, cx, gy + P->gh + 6);
                cairo_rotate(cr, -M_PI / 2);
                plot_text(cr, 0, 0, 1, 0.5, col_label(P, j, buf, sizeof buf));
                cairo_restore(cr);
            }
        }
    plot_font(cr, AXIS_FONT, 0);
    set_hex(cr, 0x222222);
    if (P->xlabel[0]) plot_text(cr, gx + P->gw / 2, gy + P->gh + P->collab_h + 2, 0.5, 0, P->xlabel);
    if (P->ylabel[0]) {
        cairo_save(cr);
        cairo_translate(cr, P->x + P->ox, gy + P->gh / 2);
        cairo_rotate(cr, -M_PI / 2);
        plot_text(cr, 0, 0, 0.5, 0, P->ylabel);
        cairo_restore(cr);
    }
    const ColorGroup *G = &L->grp[P->group];
    if (G->carrier == index) draw_colorbar(cr, gx + P->gw + CB_GAP, gy, P->cb_h, G->vmin, G->vmax, G->diverging, G->label);
    if (P->op_w > 0) {
        double h = next && next->row == P->row ? fmin(P->gh, next->gh) : P->gh;
        draw_arrow(cr, P->arrow_x0, P->arrow_x1, gy + h / 2, p->op_after);
    }
}

// The key under the panels: what hatching means (always the same) and what blank cells mean.
static void draw_key(cairo_t *cr, const HeatLayout *L) {
    double x = HM_MARGIN, y = L->key_y, s = 13;
    plot_font(cr, KEY_FONT, 0);
    if (L->any_mask) {
        unsigned char m[1] = {0};
        set_hex(cr, MASKED_GREY);
        cairo_rectangle(cr, x, y, s, s);
        cairo_fill(cr);
        hatch_cells(cr, m, 1, 1, x, y, s);
        set_hex(cr, 0x999999);
        cairo_set_line_width(cr, 0.8);
        cairo_rectangle(cr, x, y, s, s);
        cairo_stroke(cr);
        set_hex(cr, 0x333333);
        static const char txt[] = "hatched: masked, not computed";
        plot_text(cr, x + s + 6, y + s / 2, 0, 0.5, txt);
        x += s + 6 + plot_text_width(cr, txt) + 24;
    }
    if (L->any_blank) {
        set_hex(cr, BLANK_GREY);
        cairo_rectangle(cr, x, y, s, s);
        cairo_fill(cr);
        set_hex(cr, 0x333333);
        char txt[300];
        snprintf(txt, sizeof txt, "grey: %s", L->f->blank_label ? L->f->blank_label : "no value");
        plot_text(cr, x + s + 6, y + s / 2, 0, 0.5, txt);
    }
}

static void draw_heatmap_figure(cairo_t *cr, double w, double h, const void *ctx) {
    const HeatLayout *L = ctx;
    (void)h;
    plot_title_block(cr, L->f->title, L->f->subtitle, HM_MARGIN, HM_MARGIN, w - 2 * HM_MARGIN, 1);
    for (int i = 0; i < L->n; i++) draw_panel(cr, L, &L->pl[i], i + 1 < L->n ? &L->pl[i + 1] : NULL, i);
    if (L->n_grp == 1 && L->n > 0)
        draw_colorbar(cr, L->cb_x, L->cb_y, L->cb_h, L->grp[0].vmin, L->grp[0].vmax, L->grp[0].diverging, L->grp[0].label);
    if (L->key_h > 0) draw_key(cr, L);
    plot_note_block(cr, L->f->note, HM_MARGIN, L->h - HM_MARGIN - L->note_h, w - 2 * HM_MARGIN, 1);
}

static void check_heatmap(const HeatmapFigure *f) {
    CHECK(f && f->n_panels > 0 && f->panels, "heatmap_figure: no panels");
    for (int i = 0; i < f->n_panels; i++)
        CHECK(f->panels[i].values && f->panels[i].rows > 0 && f->panels[i].cols > 0,
              "heatmap_figure: panel %d is empty", i);
}

void heatmap_figure(const HeatmapFigure *f, const char *path_no_ext, int png, int svg) {
    check_heatmap(f);
    cairo_t *cr = plot_measure_context();
    HeatLayout L;
    heat_layout(&L, f, cr);
    cairo_destroy(cr);
    plot_write_figure_meta(path_no_ext, png, svg, L.w, L.h, draw_heatmap_figure, &L, f->title,
                           f->claim ? f->claim : f->subtitle);
    free(L.pl);
}

void heatmap_figure_info(const HeatmapFigure *f, HeatmapInfo *info) {
    check_heatmap(f);
    cairo_t *cr = plot_measure_context();
    HeatLayout L;
    heat_layout(&L, f, cr);
    memset(info, 0, sizeof *info);
    info->width = L.w;
    info->height = L.h;
    info->n_colorbars = L.n_grp;
    double min_font = fmin(fmin(LAB_FONT, CB_FONT), fmin(AXIS_FONT, PANEL_TITLE_FONT));
    if (L.key_h > 0) min_font = fmin(min_font, KEY_FONT);
    if (L.note_h > 0) min_font = fmin(min_font, 11.0);
    if (f->subtitle && *f->subtitle) min_font = fmin(min_font, 11.0);   // the subtitle may shrink to 11
    double min_val = INFINITY;
    for (int i = 0; i < L.n && i < HEATMAP_INFO_MAX; i++) {
        const PanelLayout *P = &L.pl[i];
        info->vmin[i] = P->vmin;
        info->vmax[i] = P->vmax;
        info->show_row_labels[i] = P->show_rows;
        info->show_col_labels[i] = P->show_cols;
        info->row_step[i] = P->row_step;
        snprintf(info->ylabel[i], sizeof info->ylabel[i], "%s", P->ylabel);
        if (P->show_values) min_val = fmin(min_val, P->val_font);
    }
    info->has_key = L.key_h > 0;
    info->title_fits = L.title_fits;
    info->subtitle_fits = L.subtitle_fits;
    info->min_text_px = min_font * 900.0 / L.w;
    info->min_value_px = isfinite(min_val) ? min_val * 900.0 / L.w : 0;
    cairo_destroy(cr);
    free(L.pl);
}
