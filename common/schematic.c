// schematic.c: boxes, arrows and to-scale tensors laid out in a grid of rows and lanes.
//
// Layout: every item is measured (a tensor's bar at the figure's one scale, its label above it), cells
// of one row and lane hold their items side by side, a lane is as wide as its widest cell, a row as tall
// as its tallest item, items sit on their row's bottom edge. When the figure would be wider than
// SCHEM_MAX_WIDTH the scale shrinks, so text stays readable at 900 px. Then one drawing function
// paints it for SVG and PNG alike.
#include "schematic.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "plot.h"

#define SC_MARGIN 20.0
#define BAR_H 16.0
#define NAME_FONT 12.0
#define SHAPE_FONT 11.0
#define OP_FONT 12.5
#define DETAIL_FONT 11.0
#define TEXT_FONT 11.0
#define TEXT_WRAP 260.0
#define TAG_FONT 11.0
#define KEY_FONT 11.0
#define ROW_GAP 44.0
#define LANE_GAP 44.0
#define ITEM_GAP 18.0
#define MIN_BAR 2.5
#define MAX_BAR 560.0
#define LABEL_GAP 5.0
#define BADGE_R 9.0
#define MAX_ITEMS 160
#define MAX_ARROWS 320
#define MAX_MARKS 32
#define MAX_ROWS 32
#define MAX_LANES 8

typedef enum { IT_TENSOR, IT_OP, IT_TEXT, IT_CELLS } ItemKind;

typedef struct {
    ItemKind kind;
    int row, lane, span;
    char name[96], shape[160], detail[160];
    char lines[8][PLOT_LINE_CHARS];   // text items, wrapped
    int n_lines;
    long elems;
    int parts, color, flags, badge;
    int n_cells;
    float *shade;
    unsigned char *sel;
    // layout
    double w, h;               // the item's block: label and body (bar or box)
    double body_w, body_h;     // the bar or box
    double label_w, tag_w, badge_w;
    double x, y;               // block top-left
    double bx, by;             // body top-left
    double label_y;            // top of the name and shape line
} Item;

typedef struct {
    int a, pa, b, pb, link;
    char label[96];
} Arrow;

typedef struct {
    int item, per_part, color;
    long start, len;
    char label[96];
} Mark;

struct Schematic {
    char title[256], subtitle[400], claim[400], note[800];
    Item item[MAX_ITEMS];
    int n;
    Arrow arrow[MAX_ARROWS];
    int na;
    Mark mark[MAX_MARKS];
    int nm;
    // layout
    double scale, w, h, head_h, note_h, key_y, key_h;
    int title_fits, subtitle_fits;
};

Schematic *schem_new(const char *title, const char *subtitle, const char *claim) {
    Schematic *s = callocCheck(1, sizeof *s);
    snprintf(s->title, sizeof s->title, "%s", title ? title : "");
    snprintf(s->subtitle, sizeof s->subtitle, "%s", subtitle ? subtitle : "");
    snprintf(s->claim, sizeof s->claim, "%s", claim ? claim : "");
    return s;
}

void schem_free(Schematic *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        free(s->item[i].shade);
        free(s->item[i].sel);
    }
    free(s);
}

void schem_note(Schematic *s, const char *note) { snprintf(s->note, sizeof s->note, "%s", note ? note : ""); }

static Item *new_item(Schematic *s, ItemKind kind, int row, int lane) {
    CHECK(s->n < MAX_ITEMS, "schematic: more than %d items", MAX_ITEMS);
    CHECK(row >= 0 && row < MAX_ROWS && lane >= 0 && lane < MAX_LANES, "schematic: cell (%d, %d) out of range", row, lane);
    Item *it = &s->item[s->n++];
    memset(it, 0, sizeof *it);
    it->kind = kind;
    it->row = row;
    it->lane = lane;
    it->span = 1;
    it->parts = 1;
    return it;
}

int schem_tensor(Schematic *s, int row, int lane, const char *name, const char *shape, long elems, int parts,
                 int color, int flags) {
    CHECK(elems > 0 && parts >= 1 && elems % parts == 0, "schematic: tensor '%s' of %ld numbers in %d parts", name, elems, parts);
    Item *it = new_item(s, IT_TENSOR, row, lane);
    snprintf(it->name, sizeof it->name, "%s", name ? name : "");
    snprintf(it->shape, sizeof it->shape, "%s", shape ? shape : "");
    it->elems = elems;
    it->parts = parts;
    it->color = color;
    it->flags = flags;
    return s->n - 1;
}

int schem_op(Schematic *s, int row, int lane, const char *name, const char *detail) {
    Item *it = new_item(s, IT_OP, row, lane);
    snprintf(it->name, sizeof it->name, "%s", name ? name : "");
    snprintf(it->detail, sizeof it->detail, "%s", detail ? detail : "");
    return s->n - 1;
}

int schem_text(Schematic *s, int row, int lane, const char *text) {
    Item *it = new_item(s, IT_TEXT, row, lane);
    snprintf(it->detail, sizeof it->detail, "%s", text ? text : "");
    return s->n - 1;
}

int schem_cells(Schematic *s, int row, int lane, const char *name, const char *shape, int n, const float *shade,
                const unsigned char *selected, int color) {
    CHECK(n > 0 && n <= 256, "schematic: %d cells", n);
    Item *it = new_item(s, IT_CELLS, row, lane);
    snprintf(it->name, sizeof it->name, "%s", name ? name : "");
    snprintf(it->shape, sizeof it->shape, "%s", shape ? shape : "");
    it->n_cells = n;
    it->parts = n;
    it->color = color;
    it->shade = mallocCheck(sizeof(float) * (size_t)n);
    it->sel = mallocCheck((size_t)n);
    for (int i = 0; i < n; i++) {
        it->shade[i] = shade ? shade[i] : 0.15f;
        it->sel[i] = selected ? selected[i] != 0 : 0;
    }
    return s->n - 1;
}

void schem_span(Schematic *s, int item, int n_lanes) {
    CHECK(item >= 0 && item < s->n && n_lanes >= 1 && s->item[item].lane + n_lanes <= MAX_LANES, "schematic: bad span");
    s->item[item].span = n_lanes;
}

void schem_mark(Schematic *s, int item, long start, long len, int per_part, int color, const char *label) {
    CHECK(s->nm < MAX_MARKS && item >= 0 && item < s->n && s->item[item].kind == IT_TENSOR, "schematic: bad mark");
    const Item *it = &s->item[item];
    long span = per_part ? it->elems / it->parts : it->elems;
    CHECK(start >= 0 && len > 0 && start + len <= span, "schematic: mark [%ld, %ld) outside %ld", start, start + len, span);
    s->mark[s->nm++] = (Mark){.item = item, .per_part = per_part, .color = color, .start = start, .len = len};
    snprintf(s->mark[s->nm - 1].label, sizeof s->mark[0].label, "%s", label ? label : "");
}

void schem_badge(Schematic *s, int item, int number) {
    CHECK(item >= 0 && item < s->n, "schematic: bad badge");
    s->item[item].badge = number;
}

static void add_arrow(Schematic *s, int a, int pa, int b, int pb, const char *label, int link) {
    CHECK(s->na < MAX_ARROWS && a >= 0 && a < s->n && b >= 0 && b < s->n, "schematic: bad arrow");
    CHECK(pa < s->item[a].parts && pb < s->item[b].parts, "schematic: arrow to a part that does not exist");
    Arrow *r = &s->arrow[s->na++];
    *r = (Arrow){.a = a, .pa = pa, .b = b, .pb = pb, .link = link};
    snprintf(r->label, sizeof r->label, "%s", label ? label : "");
}

void schem_arrow(Schematic *s, int a, int pa, int b, int pb, const char *label) { add_arrow(s, a, pa, b, pb, label, 0); }
void schem_link(Schematic *s, int a, int pa, int b, int pb) { add_arrow(s, a, pa, b, pb, NULL, 1); }

// ---- layout ----------------------------------------------------------------------------------------------
static void wrap_text(Item *it, cairo_t *cr) {
    plot_font(cr, TEXT_FONT, 0);
    it->n_lines = plot_wrap_lines(cr, it->detail, TEXT_WRAP, it->lines, 8);
}

static double label_width(cairo_t *cr, const Item *it) {
    plot_font(cr, NAME_FONT, PLOT_BOLD);
    double w = plot_text_width(cr, it->name);
    if (it->shape[0]) {
        plot_font(cr, SHAPE_FONT, 0);
        w += (it->name[0] ? 7 : 0) + plot_text_width(cr, it->shape);
    }
    return w;
}

static void measure(Schematic *s, Item *it, cairo_t *cr) {
    it->badge_w = it->badge ? 2 * BADGE_R + 8 : 0;
    it->tag_w = 0;
    switch (it->kind) {
    case IT_TENSOR:
        it->body_w = fmax(MIN_BAR, it->elems * s->scale);
        it->body_h = BAR_H;
        if (it->flags & SCHEM_CACHED) {
            plot_font(cr, TAG_FONT, PLOT_BOLD);
            it->tag_w = 6 + plot_text_width(cr, "cached");
        }
        it->label_w = label_width(cr, it);
        it->w = 2 * it->badge_w + fmax(it->label_w, it->body_w + 2 * it->tag_w);
        it->h = NAME_FONT + LABEL_GAP + BAR_H;
        break;
    case IT_CELLS: {
        double cell = fmin(14, 420.0 / it->n_cells);
        it->body_w = cell * it->n_cells;
        it->body_h = BAR_H;
        it->label_w = label_width(cr, it);
        it->w = 2 * it->badge_w + fmax(it->label_w, it->body_w);
        it->h = NAME_FONT + LABEL_GAP + BAR_H;
        break;
    }
    case IT_OP: {
        plot_font(cr, OP_FONT, PLOT_BOLD);
        double w = plot_text_width(cr, it->name);
        plot_font(cr, DETAIL_FONT, 0);
        w = fmax(w, plot_text_width(cr, it->detail));
        it->body_w = w + 20;
        it->body_h = it->detail[0] ? 40 : 28;
        it->label_w = 0;
        it->w = 2 * it->badge_w + it->body_w;
        it->h = it->body_h;
        break;
    }
    case IT_TEXT: {
        wrap_text(it, cr);
        plot_font(cr, TEXT_FONT, 0);
        double w = 0;
        for (int k = 0; k < it->n_lines; k++) w = fmax(w, plot_text_width(cr, it->lines[k]));
        it->body_w = w;
        it->body_h = it->n_lines ? (it->n_lines - 1) * 14.0 + TEXT_FONT : 0;
        it->label_w = 0;
        it->w = 2 * it->badge_w + w;
        it->h = it->body_h;
        break;
    }
    }
}

// Places every item for the current scale; returns the canvas width.
static double place(Schematic *s, cairo_t *cr) {
    int rows = 0, lanes = 0;
    for (int i = 0; i < s->n; i++) {
        measure(s, &s->item[i], cr);
        if (s->item[i].row + 1 > rows) rows = s->item[i].row + 1;
        if (s->item[i].lane + s->item[i].span > lanes) lanes = s->item[i].lane + s->item[i].span;
    }
    double cell_w[MAX_ROWS][MAX_LANES] = {{0}}, lane_w[MAX_LANES] = {0}, row_h[MAX_ROWS] = {0};
    for (int i = 0; i < s->n; i++) {
        const Item *it = &s->item[i];
        if (it->span == 1) cell_w[it->row][it->lane] += (cell_w[it->row][it->lane] > 0 ? ITEM_GAP : 0) + it->w;
        row_h[it->row] = fmax(row_h[it->row], it->h);
    }
    for (int r = 0; r < rows; r++)
        for (int l = 0; l < lanes; l++) lane_w[l] = fmax(lane_w[l], cell_w[r][l]);
    // an item spanning lanes widens the last of them when it does not fit
    for (int i = 0; i < s->n; i++) {
        const Item *it = &s->item[i];
        if (it->span == 1) continue;
        double have = (it->span - 1) * LANE_GAP;
        for (int l = it->lane; l < it->lane + it->span; l++) have += lane_w[l];
        if (have < it->w) lane_w[it->lane + it->span - 1] += it->w - have;
    }
    double lane_x[MAX_LANES], x = SC_MARGIN;
    for (int l = 0; l < lanes; l++) {
        lane_x[l] = x;
        x += lane_w[l] + LANE_GAP;
    }
    double width = x - LANE_GAP + SC_MARGIN;
    // rows: a gap for the arrows, more when an arrow into the row carries a label
    double row_y[MAX_ROWS], y = SC_MARGIN + s->head_h + (s->head_h > 0 ? 24 : 0);
    for (int r = 0; r < rows; r++) {
        double gap = 0;
        if (r > 0) {
            gap = ROW_GAP;
            for (int k = 0; k < s->na; k++)
                if (s->arrow[k].label[0] && s->item[s->arrow[k].b].row == r) gap = ROW_GAP + 8;
        }
        y += gap;
        row_y[r] = y;
        y += row_h[r];
    }
    // items: side by side in their cell, the group centred in its lanes, bottoms on the row's bottom edge
    double used[MAX_ROWS][MAX_LANES] = {{0}};
    for (int i = 0; i < s->n; i++) {
        Item *it = &s->item[i];
        double x0 = lane_x[it->lane], x1 = lane_x[it->lane + it->span - 1] + lane_w[it->lane + it->span - 1];
        double start;
        if (it->span > 1) {
            start = (x0 + x1 - it->w) / 2;
        } else {
            start = x0 + (lane_w[it->lane] - cell_w[it->row][it->lane]) / 2 + used[it->row][it->lane];
            used[it->row][it->lane] += it->w + ITEM_GAP;
        }
        it->x = start;
        it->y = row_y[it->row] + row_h[it->row] - it->h;
        // the body centred in the block; a badge hangs on its left (the block keeps room on both sides)
        it->bx = it->x + (it->w - it->body_w) / 2;
        it->by = it->y + it->h - it->body_h;
        it->label_y = it->y;
        if ((it->flags & SCHEM_LABEL_BELOW) && (it->kind == IT_TENSOR || it->kind == IT_CELLS)) {
            it->by = it->y;
            it->label_y = it->y + it->body_h + LABEL_GAP;
        }
    }
    s->key_y = y + 22;
    return width;
}

// The key line: what the outline and each mark colour mean, and the scale of the bars.
static void key_text(const Schematic *s, char *buf, size_t cap) {
    char scale[96] = "";
    int any_tensor = 0, any_cached = 0;
    for (int i = 0; i < s->n; i++) {
        any_tensor |= s->item[i].kind == IT_TENSOR;
        any_cached |= s->item[i].kind == IT_TENSOR && (s->item[i].flags & SCHEM_CACHED);
    }
    if (any_tensor) {
        double per100 = 100.0 / s->scale;
        snprintf(scale, sizeof scale, "bars to scale: 100 pt = %.0f numbers per token", per100);
    }
    snprintf(buf, cap, "%s%s%s", scale, any_cached && scale[0] ? "   " : "",
             any_cached ? "outlined: cached per token (what decode keeps)" : "");
}

static void layout(Schematic *s, cairo_t *cr) {
    long max_elems = 1;
    for (int i = 0; i < s->n; i++)
        if (s->item[i].kind == IT_TENSOR && s->item[i].elems > max_elems) max_elems = s->item[i].elems;
    s->scale = MAX_BAR / (double)max_elems;
    s->w = 640;
    for (int iter = 0; iter < 12; iter++) {
        // one line each, so the height does not depend on the width still being decided
        s->head_h = plot_title_block_fit(cr, s->title, s->subtitle, 0, 0, 1e6, 0, NULL, NULL);
        double w = place(s, cr);
        if (w <= SCHEM_MAX_WIDTH || iter == 11) {
            // the title and subtitle may widen the canvas (up to the maximum) to stay on one line
            plot_font(cr, 18, PLOT_BOLD);
            double tw = plot_text_width(cr, s->title) + 2 * SC_MARGIN;
            plot_font(cr, 13, 0);
            tw = fmax(tw, plot_text_width(cr, s->subtitle) + 2 * SC_MARGIN);
            s->w = ceil(fmax(fmax(w, 640), fmin(tw, SCHEM_MAX_WIDTH)));
            break;
        }
        s->scale *= fmax(0.5, (SCHEM_MAX_WIDTH - 2 * SC_MARGIN) / (w - 2 * SC_MARGIN) * 0.98);
    }
    s->head_h = plot_title_block_fit(cr, s->title, s->subtitle, 0, 0, s->w - 2 * SC_MARGIN, 0, &s->title_fits,
                                     &s->subtitle_fits);
    double content_w = place(s, cr);
    // centre the content on the canvas
    double dx = floor((s->w - content_w) / 2);
    for (int i = 0; i < s->n; i++) {
        s->item[i].x += dx;
        s->item[i].bx += dx;
    }
    s->key_h = 0;
    char key[300];
    key_text(s, key, sizeof key);
    if (key[0] || s->nm > 0) s->key_h = KEY_FONT + 4;
    s->note_h = plot_note_block(cr, s->note, 0, 0, s->w - 2 * SC_MARGIN, 0);
    s->h = ceil(s->key_y + s->key_h + (s->note_h > 0 ? 12 + s->note_h : 0) + SC_MARGIN);
}

// ---- drawing ---------------------------------------------------------------------------------------------
static void part_x(const Item *it, int part, double *x) {
    *x = part < 0 ? it->bx + it->body_w / 2 : it->bx + (part + 0.5) * it->body_w / it->parts;
}

static void darken(double rgb[3], double f) {
    for (int k = 0; k < 3; k++) rgb[k] *= f;
}

static void draw_label(cairo_t *cr, const Item *it) {
    double lw = it->label_w, cx = it->bx + it->body_w / 2;
    double x = cx - lw / 2;
    // keep the label inside the item's block
    double lo = it->x, hi = it->x + it->w;
    if (x < lo) x = lo;
    if (x + lw > hi) x = hi - lw;
    plot_font(cr, NAME_FONT, PLOT_BOLD);
    plot_set_hex(cr, 0x222222);
    plot_text(cr, x, it->label_y, 0, 0, it->name);
    if (it->shape[0]) {
        double nw = plot_text_width(cr, it->name);
        plot_font(cr, SHAPE_FONT, 0);
        plot_set_hex(cr, 0x444444);
        plot_text(cr, x + nw + (it->name[0] ? 7 : 0), it->label_y + (NAME_FONT - SHAPE_FONT) * 0.729, 0, 0, it->shape);
    }
}

static void draw_tensor(cairo_t *cr, const Schematic *s, const Item *it, int index) {
    double rgb[3];
    palette_rgb(it->color, rgb);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_rectangle(cr, it->bx, it->by, it->body_w, it->body_h);
    cairo_fill(cr);
    double pw = it->body_w / it->parts;
    // marks: a range of each head (or of the whole tensor) in another colour
    for (int k = 0; k < s->nm; k++) {
        const Mark *m = &s->mark[k];
        if (m->item != index) continue;
        double mr[3];
        palette_rgb(m->color, mr);
        cairo_set_source_rgb(cr, mr[0], mr[1], mr[2]);
        double unit = it->body_w / (double)it->elems;
        int reps = m->per_part ? it->parts : 1;
        long span = m->per_part ? it->elems / it->parts : it->elems;
        for (int p = 0; p < reps; p++) {
            double base = it->bx + p * span * unit;
            cairo_rectangle(cr, base + m->start * unit, it->by, fmax(0.8, m->len * unit), it->body_h);
        }
        cairo_fill(cr);
    }
    if ((it->flags & SCHEM_HIGHLIGHT_FIRST) && it->parts > 1) {
        darken(rgb, 0.55);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, it->bx, it->by, pw, it->body_h);
        cairo_fill(cr);
    }
    // separators between heads, thinned to at least 3 pt apart
    if (it->parts > 1) {
        int step = 1;
        while (pw * step < 3) step++;
        cairo_set_source_rgb(cr, 1, 1, 1);
        cairo_set_line_width(cr, pw >= 6 ? 1.0 : 0.6);
        for (int p = step; p < it->parts; p += step) {
            cairo_move_to(cr, it->bx + p * pw, it->by);
            cairo_line_to(cr, it->bx + p * pw, it->by + it->body_h);
        }
        cairo_stroke(cr);
    }
    if (it->flags & SCHEM_CACHED) {
        plot_set_hex(cr, 0x222222);
        cairo_set_line_width(cr, 2.2);
        cairo_rectangle(cr, it->bx - 1.1, it->by - 1.1, it->body_w + 2.2, it->body_h + 2.2);
        cairo_stroke(cr);
        plot_font(cr, TAG_FONT, PLOT_BOLD);
        plot_set_hex(cr, 0x222222);
        plot_text(cr, it->bx + it->body_w + 6, it->by + it->body_h / 2, 0, 0.5, "cached");
    }
    draw_label(cr, it);
}

static void draw_cells(cairo_t *cr, const Item *it) {
    double rgb[3];
    palette_rgb(it->color, rgb);
    double cw = it->body_w / it->n_cells;
    for (int i = 0; i < it->n_cells; i++) {
        double t = it->sel[i] ? 1.0 : fmax(0, fmin(1, it->shade[i]));
        cairo_set_source_rgb(cr, 1 - t * (1 - rgb[0]), 1 - t * (1 - rgb[1]), 1 - t * (1 - rgb[2]));
        cairo_rectangle(cr, it->bx + i * cw, it->by, cw, it->body_h);
        cairo_fill(cr);
    }
    plot_set_hex(cr, 0xBBBBBB);
    cairo_set_line_width(cr, 0.6);
    for (int i = 0; i <= it->n_cells; i++) {
        cairo_move_to(cr, it->bx + i * cw, it->by);
        cairo_line_to(cr, it->bx + i * cw, it->by + it->body_h);
    }
    cairo_rectangle(cr, it->bx, it->by, it->body_w, it->body_h);
    cairo_stroke(cr);
    draw_label(cr, it);
}

static void draw_op(cairo_t *cr, const Item *it) {
    double r = 5, x = it->bx, y = it->by, w = it->body_w, h = it->body_h;
    cairo_new_sub_path(cr);
    cairo_arc(cr, x + w - r, y + r, r, -M_PI / 2, 0);
    cairo_arc(cr, x + w - r, y + h - r, r, 0, M_PI / 2);
    cairo_arc(cr, x + r, y + h - r, r, M_PI / 2, M_PI);
    cairo_arc(cr, x + r, y + r, r, M_PI, 3 * M_PI / 2);
    cairo_close_path(cr);
    plot_set_hex(cr, 0xF4F4F4);
    cairo_fill_preserve(cr);
    plot_set_hex(cr, 0x777777);
    cairo_set_line_width(cr, 1.2);
    cairo_stroke(cr);
    plot_font(cr, OP_FONT, PLOT_BOLD);
    plot_set_hex(cr, 0x222222);
    plot_text(cr, x + w / 2, y + (it->detail[0] ? 8 : h / 2 - OP_FONT * 0.729 / 2), 0.5, 0, it->name);
    if (it->detail[0]) {
        plot_font(cr, DETAIL_FONT, 0);
        plot_set_hex(cr, 0x444444);
        plot_text(cr, x + w / 2, y + 24, 0.5, 0, it->detail);
    }
}

static void draw_text_item(cairo_t *cr, const Item *it) {
    plot_font(cr, TEXT_FONT, PLOT_ITALIC);
    plot_set_hex(cr, 0x444444);
    for (int k = 0; k < it->n_lines; k++) plot_text(cr, it->bx, it->by + k * 14.0, 0, 0, it->lines[k]);
}

static void arrow_head(cairo_t *cr, double x, double y, double dx, double dy) {
    double n = hypot(dx, dy);
    if (n == 0) return;
    dx /= n;
    dy /= n;
    cairo_move_to(cr, x, y);
    cairo_line_to(cr, x - 9 * dx + 4.5 * dy, y - 9 * dy - 4.5 * dx);
    cairo_line_to(cr, x - 9 * dx - 4.5 * dy, y - 9 * dy + 4.5 * dx);
    cairo_close_path(cr);
    cairo_fill(cr);
}

// Elbows share a horizontal trunk when they fan out of one source or into one target; different trunks
// into one row run at different heights so that they never share a segment. An arrow's trunk is its
// target's when the target has several incoming arrows, else its source's; the rank orders the row's
// trunks left to right.
static int arrow_elbow(const Schematic *s, int k) {
    const Arrow *r = &s->arrow[k];
    return !r->link && s->item[r->a].row != s->item[r->b].row;
}

static int trunk_of(const Schematic *s, int k, double *x) {
    const Arrow *r = &s->arrow[k];
    int fan_in = 0;
    for (int j = 0; j < s->na; j++) fan_in += arrow_elbow(s, j) && s->arrow[j].b == r->b;
    if (fan_in > 1) { *x = s->item[r->b].bx; return 1000 + r->b; }
    *x = s->item[r->a].bx;
    return r->a;
}

static int elbow_rank(const Schematic *s, const Arrow *r) {
    int me = (int)(r - s->arrow), row = s->item[r->b].row;
    double mx;
    int mine = trunk_of(s, me, &mx), rank = 0;
    int seen[MAX_ARROWS], n_seen = 0;
    for (int k = 0; k < s->na; k++) {
        if (!arrow_elbow(s, k) || s->item[s->arrow[k].b].row != row) continue;
        double x;
        int t = trunk_of(s, k, &x);
        int dup = t == mine;
        for (int j = 0; j < n_seen && !dup; j++) dup = seen[j] == t;
        if (dup) continue;
        seen[n_seen++] = t;
        if (x < mx || (x == mx && t < mine)) rank++;
    }
    return rank;
}

static void draw_arrow(cairo_t *cr, const Schematic *s, const Arrow *r) {
    const Item *a = &s->item[r->a], *b = &s->item[r->b];
    double xa, xb;
    part_x(a, r->pa, &xa);
    part_x(b, r->pb, &xb);
    cairo_set_dash(cr, NULL, 0, 0);
    if (r->link) {
        // a link lands on the bar itself (the KV head it reads), through the target's label
        double rgb[3];
        palette_rgb(a->color, rgb);
        cairo_set_source_rgba(cr, rgb[0], rgb[1], rgb[2], 0.75);
        cairo_set_line_width(cr, 1.0);
        cairo_move_to(cr, xa, a->by + a->body_h);
        cairo_line_to(cr, xb, b->by);
        cairo_stroke(cr);
        return;
    }
    plot_set_hex(cr, 0x555555);
    cairo_set_line_width(cr, 1.4);
    if (a->row == b->row) {   // sideways
        int right = b->bx > a->bx;
        double x0 = right ? a->bx + a->body_w + 4 : a->bx - 4, x1 = right ? b->x - 4 : b->x + b->w + 4;
        double y = b->by + b->body_h / 2;
        cairo_move_to(cr, x0, y);
        cairo_line_to(cr, x1 + (right ? -7 : 7), y);
        cairo_stroke(cr);
        arrow_head(cr, x1, y, right ? 1 : -1, 0);
        if (r->label[0]) {
            plot_font(cr, TEXT_FONT, PLOT_ITALIC);
            plot_set_hex(cr, 0x444444);
            plot_text(cr, (x0 + x1) / 2, y - 6, 0.5, 1, r->label);
        }
        return;
    }
    // into a tensor: onto its label when the arrow's x falls on the label, else onto the bar
    double lx0 = b->bx + b->body_w / 2 - b->label_w / 2 - 4, lx1 = lx0 + b->label_w + 8;
    int onto_bar = (b->flags & SCHEM_LABEL_BELOW) || (r->pb >= 0 && (xb < lx0 || xb > lx1));
    double y0 = a->by + a->body_h + 3, y1 = (onto_bar ? b->by : b->y) - 4;
    if (a->flags & SCHEM_LABEL_BELOW) y0 = a->label_y + NAME_FONT + 3;
    int rank = elbow_rank(s, r);
    double ym = (b->y - 4) - 12 - 7 * rank;
    if (ym < y0 + 6) ym = (y0 + y1) / 2;
    cairo_move_to(cr, xa, y0);
    if (fabs(xa - xb) > 1.5) {
        cairo_line_to(cr, xa, ym);
        cairo_line_to(cr, xb, ym);
    }
    cairo_line_to(cr, xb, y1 - 7);
    cairo_stroke(cr);
    arrow_head(cr, xb, y1, 0, 1);
    if (r->label[0]) {
        plot_font(cr, TEXT_FONT, PLOT_ITALIC);
        plot_set_hex(cr, 0x444444);
        // beside the first vertical stretch; on its left when the right would leave the canvas
        double ly = (y0 + (fabs(xa - xb) > 1.5 ? ym : y1)) / 2 - 4;
        if (xa + 6 + plot_text_width(cr, r->label) > s->w - SC_MARGIN / 2) plot_text(cr, xa - 6, ly, 1, 0.5, r->label);
        else plot_text(cr, xa + 6, ly, 0, 0.5, r->label);
    }
}

static void draw_badge(cairo_t *cr, const Item *it) {
    double cx = it->bx - 8 - BADGE_R, cy = it->by + it->body_h / 2;
    cairo_new_sub_path(cr);
    cairo_arc(cr, cx, cy, BADGE_R, 0, 2 * M_PI);
    plot_set_hex(cr, 0xD55E00);
    cairo_fill(cr);
    char num[8];
    snprintf(num, sizeof num, "%d", it->badge);
    plot_font(cr, 11.5, PLOT_BOLD);
    cairo_set_source_rgb(cr, 1, 1, 1);
    plot_text(cr, cx, cy, 0.5, 0.5, num);
}

static void draw_key(cairo_t *cr, const Schematic *s) {
    double x = SC_MARGIN, y = s->key_y;
    plot_font(cr, KEY_FONT, 0);
    // each mark colour once
    for (int k = 0; k < s->nm; k++) {
        int seen = 0;
        for (int j = 0; j < k; j++) seen |= !strcmp(s->mark[j].label, s->mark[k].label) && s->mark[j].color == s->mark[k].color;
        if (seen || !s->mark[k].label[0]) continue;
        double rgb[3];
        palette_rgb(s->mark[k].color, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, x, y, 12, 12);
        cairo_fill(cr);
        plot_set_hex(cr, 0x333333);
        plot_text(cr, x + 17, y + 6, 0, 0.5, s->mark[k].label);
        x += 17 + plot_text_width(cr, s->mark[k].label) + 22;
    }
    char key[300];
    key_text(s, key, sizeof key);
    plot_set_hex(cr, 0x333333);
    plot_text(cr, x, y + 6, 0, 0.5, key);
}

static void draw_schematic(cairo_t *cr, double w, double h, const void *ctx) {
    const Schematic *s = ctx;
    (void)h;
    plot_title_block(cr, s->title, s->subtitle, SC_MARGIN, SC_MARGIN, w - 2 * SC_MARGIN, 1);
    for (int k = 0; k < s->na; k++)
        if (s->arrow[k].link) draw_arrow(cr, s, &s->arrow[k]);
    for (int i = 0; i < s->n; i++) {
        const Item *it = &s->item[i];
        if (it->kind == IT_TENSOR) draw_tensor(cr, s, it, i);
        else if (it->kind == IT_CELLS) draw_cells(cr, it);
        else if (it->kind == IT_OP) draw_op(cr, it);
        else draw_text_item(cr, it);
        if (it->badge) draw_badge(cr, it);
    }
    for (int k = 0; k < s->na; k++)
        if (!s->arrow[k].link) draw_arrow(cr, s, &s->arrow[k]);
    if (s->key_h > 0) draw_key(cr, s);
    plot_note_block(cr, s->note, SC_MARGIN, s->h - SC_MARGIN - s->note_h, w - 2 * SC_MARGIN, 1);
}

void schem_write(Schematic *s, const char *path_no_ext, int png, int svg) {
    cairo_t *cr = plot_measure_context();
    layout(s, cr);
    cairo_destroy(cr);
    plot_write_figure_meta(path_no_ext, png, svg, s->w, s->h, draw_schematic, s, s->title,
                           s->claim[0] ? s->claim : s->subtitle);
}

void schem_info(Schematic *s, SchemInfo *info) {
    cairo_t *cr = plot_measure_context();
    layout(s, cr);
    cairo_destroy(cr);
    memset(info, 0, sizeof *info);
    info->width = s->w;
    info->height = s->h;
    info->pt_per_elem = s->scale;
    info->n_items = s->n < SCHEM_INFO_MAX ? s->n : SCHEM_INFO_MAX;
    for (int i = 0; i < info->n_items; i++) {
        const Item *it = &s->item[i];
        info->item[i] = (SchemBox){it->bx, it->by, it->bx + it->body_w, it->by + it->body_h};
        if (it->kind == IT_TENSOR || it->kind == IT_CELLS) {
            double cx = it->bx + it->body_w / 2, x = cx - it->label_w / 2;
            double lo = it->x, hi = it->x + it->w;
            if (x < lo) x = lo;
            if (x + it->label_w > hi) x = hi - it->label_w;
            info->text[i] = (SchemBox){x, it->label_y, x + it->label_w, it->label_y + NAME_FONT};
        } else {
            info->text[i] = info->item[i];
        }
        if (it->kind == IT_TENSOR) info->bar_len[i] = it->body_w;
    }
    info->min_text_px = fmin(fmin(TAG_FONT, KEY_FONT), fmin(TEXT_FONT, SHAPE_FONT)) * 900.0 / s->w;
}
