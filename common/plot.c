// plot.c: line and bar charts with cairo, and the machinery every figure shares: one drawing
// function, called once per output format, written atomically.
//
// Layout is computed first with a measuring context (text widths decide the margins), then the
// drawing function paints from that layout. Sizes are in points; the SVG uses them as px, the PNG
// renders them at 2x so thin lines and small text stay crisp.
#include "plot.h"

#include <cairo-svg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define FONT_FAMILY "DejaVu Sans"
#define CAP_HEIGHT 0.729   // DejaVu Sans capital height as a fraction of the font size
#define PNG_MAX_PX 2400.0

// Okabe-Ito, one colour per mechanism. Yellow (#F0E442) is unreadable as a line on white, so LINEAR
// takes a darker olive of the same hue.
static const unsigned char palette[COLOR_COUNT][3] = {
    [COLOR_MHA] = {0x00, 0x72, 0xB2},    // blue
    [COLOR_GQA] = {0xE6, 0x9F, 0x00},    // orange
    [COLOR_MQA] = {0xD5, 0x5E, 0x00},    // vermillion
    [COLOR_MLA] = {0x00, 0x9E, 0x73},    // bluish green
    [COLOR_SWA] = {0xCC, 0x79, 0xA7},    // reddish purple
    [COLOR_DSA] = {0x56, 0xB4, 0xE9},    // sky blue
    [COLOR_LINEAR] = {0xB8, 0xA0, 0x00}, // dark yellow
    [COLOR_OTHER] = {0x55, 0x55, 0x55},  // grey
};

void palette_rgb(int color, double rgb[3]) {
    int c = ((color % COLOR_COUNT) + COLOR_COUNT) % COLOR_COUNT;
    for (int k = 0; k < 3; k++) rgb[k] = palette[c][k] / 255.0;
}

// ---- text -----------------------------------------------------------------------------------------
// Fixed font options: no hinting, unhinted metrics, greyscale antialiasing. Hinted metrics would
// round advances to whole device pixels, so the 2x PNG and the SVG would lay text out differently.
static void cr_setup(cairo_t *cr) {
    cairo_font_options_t *fo = cairo_font_options_create();
    cairo_font_options_set_hint_style(fo, CAIRO_HINT_STYLE_NONE);
    cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_OFF);
    cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_GRAY);
    cairo_set_font_options(cr, fo);
    cairo_font_options_destroy(fo);
    plot_font(cr, 12, 0);
}

// fontconfig (under cairo) keeps its parsed configuration for the life of the process and never frees
// it; LeakSanitizer calls this hook, when it exists, for its default suppressions, so the sanitizer
// build (make sanitize) of every program that draws a figure reports only leaks of our own;
// print_suppressions=0 keeps the note about it out of the programs' output.
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfontconfig.so\n"; }
const char *__lsan_default_options(void);
const char *__lsan_default_options(void) { return "print_suppressions=0"; }

cairo_t *plot_measure_context(void) {
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
    cairo_t *cr = cairo_create(s);
    cairo_surface_destroy(s);   // cr holds its own reference
    cr_setup(cr);
    return cr;
}

void plot_font(cairo_t *cr, double size, int style) {
    cairo_select_font_face(cr, FONT_FAMILY,
                           (style & PLOT_ITALIC) ? CAIRO_FONT_SLANT_OBLIQUE : CAIRO_FONT_SLANT_NORMAL,
                           (style & PLOT_BOLD) ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

double plot_text_width(cairo_t *cr, const char *s) {
    if (!s || !*s) return 0;
    cairo_text_extents_t e;
    cairo_text_extents(cr, s, &e);
    return e.x_advance;
}

static double font_size(cairo_t *cr) {
    cairo_matrix_t m;
    cairo_get_font_matrix(cr, &m);
    return m.yy != 0 ? fabs(m.yy) : hypot(m.xx, m.yx);
}

void plot_text(cairo_t *cr, double x, double y, double ax, double ay, const char *s) {
    if (!s || !*s) return;
    double cap = CAP_HEIGHT * font_size(cr);
    cairo_move_to(cr, x - ax * plot_text_width(cr, s), y + (1.0 - ay) * cap);
    cairo_show_text(cr, s);
}

double plot_text_wrapped(cairo_t *cr, const char *s, double x, double y, double maxw, double line_h,
                         int draw) {
    if (!s || !*s) return 0;
    char line[2048], trial[2048];
    int n_lines = 0;
    line[0] = '\0';
    const char *p = s;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        const char *q = p;
        while (*q && *q != ' ') q++;
        size_t wl = (size_t)(q - p), ll = strlen(line);
        if (ll + 1 + wl >= sizeof trial) {   // absurdly long text: break here, cut the word
            if (ll && draw) plot_text(cr, x, y + n_lines * line_h, 0, 0, line);
            n_lines += ll > 0;
            line[0] = '\0';
            ll = 0;
            if (wl >= sizeof line) wl = sizeof line - 1;
        }
        memcpy(trial, line, ll);
        size_t tl = ll;
        if (ll) trial[tl++] = ' ';
        memcpy(trial + tl, p, wl);
        trial[tl + wl] = '\0';
        if (ll && plot_text_width(cr, trial) > maxw) {
            if (draw) plot_text(cr, x, y + n_lines * line_h, 0, 0, line);
            n_lines++;
            memcpy(line, p, wl);
            line[wl] = '\0';
        } else {
            memcpy(line, trial, tl + wl + 1);
        }
        p = q;
    }
    if (line[0]) {
        if (draw) plot_text(cr, x, y + n_lines * line_h, 0, 0, line);
        n_lines++;
    }
    // the last line needs only its capitals and descenders, not a full line gap
    return n_lines ? (n_lines - 1) * line_h + font_size(cr) : 0;
}

// ---- writing ----------------------------------------------------------------------------------------
typedef struct {
    unsigned char *data;
    size_t n, cap;
} MemBuf;

static cairo_status_t membuf_write(void *closure, const unsigned char *data, unsigned int len) {
    MemBuf *b = closure;
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->n + len) cap *= 2;
        unsigned char *p = realloc(b->data, cap);
        if (!p) return CAIRO_STATUS_NO_MEMORY;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->n, data, len);
    b->n += len;
    return CAIRO_STATUS_SUCCESS;
}

// cairo names the SVG's top group after a process-wide surface counter ("surface17"), so the bytes
// would depend on how many surfaces the program made before. Renumber it: one figure, one "surface1".
static void svg_normalize_ids(MemBuf *b) {
    static const char key[] = "<g id=\"surface";
    size_t kl = sizeof key - 1;
    for (size_t i = 0; i + kl < b->n; i++) {
        if (memcmp(b->data + i, key, kl) != 0) continue;
        size_t d0 = i + kl, d1 = d0;
        while (d1 < b->n && b->data[d1] >= '0' && b->data[d1] <= '9') d1++;
        if (d1 == d0 || d1 >= b->n || b->data[d1] != '"') return;
        b->data[d0] = '1';
        memmove(b->data + d0 + 1, b->data + d1, b->n - d1);
        b->n -= d1 - d0 - 1;
        return;
    }
}

static void render(cairo_surface_t *s, double scale, double w, double h, PlotDrawFn draw, const void *ctx,
                   const char *path) {
    cairo_t *cr = cairo_create(s);
    cr_setup(cr);
    cairo_scale(cr, scale, scale);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    draw(cr, w, h, ctx);
    CHECK(cairo_status(cr) == CAIRO_STATUS_SUCCESS, "drawing '%s': %s", path,
          cairo_status_to_string(cairo_status(cr)));
    cairo_destroy(cr);
}

void plot_write_figure(const char *path_no_ext, int png, int svg, double w, double h, PlotDrawFn draw,
                       const void *ctx) {
    char path[1100];
    CHECK(w >= 1 && h >= 1 && w < 1e5 && h < 1e5, "figure size %g x %g", w, h);
    if (svg) {
        if (snprintf(path, sizeof path, "%s.svg", path_no_ext) >= (int)sizeof path)
            die_user("output path too long: '%s.svg'", path_no_ext);
        MemBuf b = {0};
        cairo_surface_t *s = cairo_svg_surface_create_for_stream(membuf_write, &b, w, h);
        cairo_svg_surface_set_document_unit(s, CAIRO_SVG_UNIT_PX);
        render(s, 1.0, w, h, draw, ctx, path);
        cairo_surface_finish(s);
        CHECK(cairo_surface_status(s) == CAIRO_STATUS_SUCCESS, "writing '%s': %s", path,
              cairo_status_to_string(cairo_surface_status(s)));
        cairo_surface_destroy(s);
        svg_normalize_ids(&b);
        atomic_write_all(path, b.data, b.n);
        free(b.data);
    }
    if (png) {
        if (snprintf(path, sizeof path, "%s.png", path_no_ext) >= (int)sizeof path)
            die_user("output path too long: '%s.png'", path_no_ext);
        double scale = fmin(2.0, PNG_MAX_PX / w);
        if (scale < 1.0) scale = 1.0;
        int pw = (int)ceil(w * scale - 1e-9), ph = (int)ceil(h * scale - 1e-9);
        cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, pw, ph);
        CHECK(cairo_surface_status(s) == CAIRO_STATUS_SUCCESS, "%d x %d image for '%s': %s", pw, ph, path,
              cairo_status_to_string(cairo_surface_status(s)));
        render(s, scale, w, h, draw, ctx, path);
        MemBuf b = {0};
        cairo_status_t st = cairo_surface_write_to_png_stream(s, membuf_write, &b);
        CHECK(st == CAIRO_STATUS_SUCCESS, "encoding '%s': %s", path, cairo_status_to_string(st));
        cairo_surface_destroy(s);
        atomic_write_all(path, b.data, b.n);
        free(b.data);
    }
}

// ---- ticks ---------------------------------------------------------------------------------------------
int plot_nice_ticks(double lo, double hi, double *ticks, int cap) {
    if (!isfinite(lo) || !isfinite(hi) || !isfinite(hi - lo) || cap < 2) return 0;
    if (hi < lo) { double t = lo; lo = hi; hi = t; }
    if (hi == lo) {
        double d = lo == 0 ? 1 : fabs(lo) * 0.1;
        lo -= d;
        hi += d;
    }
    // steps 1, 2, 5 x 10^e, from the densest that could fit upward; the first with <= cap ticks wins
    int e = (int)floor(log10((hi - lo) / (cap - 1)));
    static const int mant[3] = {1, 2, 5};
    for (;; e++) {
        for (int k = 0; k < 3; k++) {
            double step = mant[k] * pow(10.0, e);
            double first = floor(lo / step + 1e-9), last = ceil(hi / step - 1e-9);
            int n = (int)(last - first) + 1;
            if (n > cap) continue;
            for (int i = 0; i < n; i++) {
                // integer multiples divided by a power of ten, so 0.3 prints as 0.3, not 0.30000000000000004
                double m = (first + i) * mant[k];
                double t = e >= 0 ? m * pow(10.0, e) : m / pow(10.0, -e);
                ticks[i] = fabs(t) < step * 1e-9 ? 0.0 : t;
            }
            return n;
        }
    }
}

// Up to 3 significant digits, trailing zeros dropped: 1.5, 12, 128, 0.25.
static void fmt_short(char *buf, int cap, double v) {
    double a = fabs(v);
    const char *f = a >= 100 ? "%.0f" : a >= 10 ? "%.1f" : "%.2f";
    snprintf(buf, cap, f, v);
    if (strchr(buf, '.')) {
        char *end = buf + strlen(buf) - 1;
        while (*end == '0') *end-- = '\0';
        if (*end == '.') *end = '\0';
    }
    if (!strcmp(buf, "-0")) strcpy(buf, "0");
}

const char *plot_format_tick(char *buf, int cap, double v, AxisFormat fmt) {
    if (cap <= 0) return buf;
    if (!isfinite(v)) {
        snprintf(buf, cap, "%g", v);
        return buf;
    }
    if (fmt == AXIS_BYTES || fmt == AXIS_TOKENS) {
        static const char *bytes[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
        static const char *tokens[] = {"", "K", "M", "G", "T", "P", "E"};
        int u = 0;
        double x = v;
        while (fabs(x) >= 1024.0 && u < 6) { x /= 1024.0; u++; }
        char num[64];
        fmt_short(num, sizeof num, x);
        if (fmt == AXIS_BYTES) snprintf(buf, cap, "%s %s", num, bytes[u]);
        else snprintf(buf, cap, "%s%s", num, tokens[u]);
        return buf;
    }
    // plain: %g, with the exponent written compactly (1e6, 2e-5)
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%g", v == 0 ? 0.0 : v);
    char *e = strchr(tmp, 'e');
    if (e) {
        char mant[64];
        snprintf(mant, sizeof mant, "%.*s", (int)(e - tmp), tmp);
        int ex = atoi(e + 1);
        snprintf(buf, cap, "%se%d", mant, ex);
    } else {
        snprintf(buf, cap, "%s", tmp);
    }
    return buf;
}

// ---- axes ------------------------------------------------------------------------------------------
#define MAX_TICKS 64

typedef struct {
    double lo, hi;              // shown range in data units
    int log;
    AxisFormat fmt;
    double major[MAX_TICKS];    // labelled ticks
    int n_major;
    double minor[MAX_TICKS];    // unlabelled ticks (log axes)
    int n_minor;
} Axis;

static double axis_frac(const Axis *a, double v) {
    if (a->log) return (log(v) - log(a->lo)) / (log(a->hi) - log(a->lo));
    return (v - a->lo) / (a->hi - a->lo);
}

static int is_pow2(double v) {
    int e;
    return v > 0 && frexp(v, &e) == 0.5;
}

static const double TICK_FONT = 11.5;

// Do the labels of a's major ticks fit along len points without overlapping?
static int ticks_fit(const Axis *a, cairo_t *cr, double len, int horizontal) {
    if (a->n_major > 10) return 0;
    plot_font(cr, TICK_FONT, 0);
    double prev_pos = 0, prev_half = 0;
    for (int i = 0; i < a->n_major; i++) {
        char lab[64];
        plot_format_tick(lab, sizeof lab, a->major[i], a->fmt);
        double pos = axis_frac(a, a->major[i]) * len;
        double half = horizontal ? plot_text_width(cr, lab) / 2 : TICK_FONT * 0.8;
        if (i > 0 && pos - prev_pos < prev_half + half + (horizontal ? 12 : 6)) return 0;
        prev_pos = pos;
        prev_half = half;
    }
    return 1;
}

// Log ticks: base^(k*step) inside [lo,hi]; minor ticks at every power in between when step > 1.
static void log_ticks_pow(Axis *a, double base, int step) {
    double lb = log(base);
    int k0 = (int)ceil(log(a->lo) / lb - 1e-9), k1 = (int)floor(log(a->hi) / lb + 1e-9);
    a->n_major = a->n_minor = 0;
    for (int k = k0; k <= k1; k++) {
        double v = pow(base, k);
        if (k % step == 0) {
            if (a->n_major < MAX_TICKS) a->major[a->n_major++] = v;
        } else if (a->n_minor < MAX_TICKS) {
            a->minor[a->n_minor++] = v;
        }
    }
    // one decade apart: minor ticks at 2..9 x 10^k
    if (base == 10 && step == 1) {
        for (int k = k0 - 1; k <= k1; k++)
            for (int m = 2; m <= 9; m++) {
                double v = m * pow(10.0, k);
                if (v >= a->lo && v <= a->hi && a->n_minor < MAX_TICKS) a->minor[a->n_minor++] = v;
            }
    }
}

// Log ticks at 1, 2, 5 x 10^k (for ranges of a few decades).
static void log_ticks_125(Axis *a) {
    int k0 = (int)floor(log10(a->lo)), k1 = (int)ceil(log10(a->hi));
    a->n_major = a->n_minor = 0;
    for (int k = k0; k <= k1; k++)
        for (int m = 1; m <= 9; m++) {
            double v = m * pow(10.0, k);
            if (v < a->lo * (1 - 1e-9) || v > a->hi * (1 + 1e-9)) continue;
            if ((m == 1 || m == 2 || m == 5) && a->n_major < MAX_TICKS) a->major[a->n_major++] = v;
            else if (a->n_minor < MAX_TICKS) a->minor[a->n_minor++] = v;
        }
}

// Sets the range (when fitted) and picks the densest tick set whose labels fit in len points.
// dmin, dmax: the data's extent (positive values only on a log axis).
static void axis_setup(Axis *a, cairo_t *cr, double dmin, double dmax, int fitted, double len, int horizontal) {
    if (!(dmin <= dmax)) { dmin = a->log ? 1 : 0; dmax = a->log ? 10 : 1; }
    if (a->log) {
        double base = (a->fmt != AXIS_PLAIN || (is_pow2(dmin) && is_pow2(dmax) && dmax / dmin >= 4)) ? 2 : 10;
        if (fitted) {
            if (dmax == dmin) { dmin /= base; dmax *= base; }
            double pad = 0.04 * (log(dmax) - log(dmin));
            a->lo = dmin * exp(-pad);
            a->hi = dmax * exp(pad);
        } else {
            a->lo = dmin;
            a->hi = dmax;
        }
        static const int steps2[] = {1, 2, 5, 10, 20, 50}, steps10[] = {1, 2, 3, 5, 10, 20};
        const int *steps = base == 2 ? steps2 : steps10;
        int decades = (int)ceil(log10(a->hi / a->lo));
        if (base == 10 && decades <= 3) {
            log_ticks_125(a);
            if (a->n_major >= 2 && ticks_fit(a, cr, len, horizontal)) return;
        }
        for (int i = 0; i < 6; i++) {
            log_ticks_pow(a, base, steps[i]);
            if (a->n_major >= 2 && ticks_fit(a, cr, len, horizontal)) return;
        }
        if (a->n_major >= 2) return;
        // less than two powers inside the range: plain nice ticks, drawn at their log positions
        double t[MAX_TICKS];
        a->n_minor = 0;
        for (int cap = 8; cap >= 2; cap--) {
            int n = plot_nice_ticks(a->lo, a->hi, t, cap);
            a->n_major = 0;
            for (int i = 0; i < n; i++)
                if (t[i] >= a->lo && t[i] <= a->hi) a->major[a->n_major++] = t[i];
            if (ticks_fit(a, cr, len, horizontal)) return;
        }
        return;
    }
    if (fitted) {
        // start a non-negative quantity at zero unless that would squash the data
        if (dmin > 0 && dmin <= 0.5 * dmax) dmin = 0;
        if (dmax < 0 && dmax >= 0.5 * dmin) dmax = 0;
    }
    // bytes and tokens tick at round numbers of their binary unit: 200 MiB, not 191 MiB
    double unit = 1;
    if (a->fmt != AXIS_PLAIN)
        while (fmax(fabs(dmin), fabs(dmax)) / unit >= 1024) unit *= 1024;
    double t[MAX_TICKS];
    for (int cap = 10; cap >= 2; cap--) {
        int n = plot_nice_ticks(dmin / unit, dmax / unit, t, cap);
        for (int i = 0; i < n; i++) t[i] *= unit;
        if (fitted) {
            a->lo = t[0];
            a->hi = t[n - 1];
        } else {
            a->lo = dmin;
            a->hi = dmax;
        }
        a->n_major = a->n_minor = 0;
        double eps = (a->hi - a->lo) * 1e-9;
        for (int i = 0; i < n; i++)
            if (t[i] >= a->lo - eps && t[i] <= a->hi + eps) a->major[a->n_major++] = t[i];
        if (ticks_fit(a, cr, len, horizontal)) return;
    }
}

static void set_rgb(cairo_t *cr, unsigned hex) {
    cairo_set_source_rgb(cr, ((hex >> 16) & 255) / 255.0, ((hex >> 8) & 255) / 255.0, (hex & 255) / 255.0);
}

// Gridlines, spines, ticks and tick labels of a plot area [x0,x1] x [y0,y1] (y0 top).
static void draw_axes(cairo_t *cr, const Axis *ax, const Axis *ay, double x0, double x1, double y0, double y1,
                      int grid_x, int grid_y) {
    cairo_set_line_width(cr, 1.0);
    // minor gridlines, then major
    for (int pass = 0; pass < 2; pass++) {
        set_rgb(cr, pass ? 0xDDDDDD : 0xF0F0F0);
        const double *vx = pass ? ax->major : ax->minor, *vy = pass ? ay->major : ay->minor;
        int nx = pass ? ax->n_major : ax->n_minor, ny = pass ? ay->n_major : ay->n_minor;
        if (grid_x)
            for (int i = 0; i < nx; i++) {
                double x = x0 + axis_frac(ax, vx[i]) * (x1 - x0);
                cairo_move_to(cr, x, y0);
                cairo_line_to(cr, x, y1);
            }
        if (grid_y)
            for (int i = 0; i < ny; i++) {
                double y = y1 - axis_frac(ay, vy[i]) * (y1 - y0);
                cairo_move_to(cr, x0, y);
                cairo_line_to(cr, x1, y);
            }
        cairo_stroke(cr);
    }
    // spines: left and bottom
    set_rgb(cr, 0x444444);
    cairo_set_line_width(cr, 1.2);
    cairo_move_to(cr, x0, y0);
    cairo_line_to(cr, x0, y1);
    cairo_line_to(cr, x1, y1);
    cairo_stroke(cr);
    // tick marks: major 5 pt, minor 3 pt, outward
    cairo_set_line_width(cr, 1.0);
    for (int i = 0; i < ax->n_major + ax->n_minor; i++) {
        int major = i < ax->n_major;
        double v = major ? ax->major[i] : ax->minor[i - ax->n_major];
        double x = x0 + axis_frac(ax, v) * (x1 - x0);
        cairo_move_to(cr, x, y1);
        cairo_line_to(cr, x, y1 + (major ? 5 : 3));
    }
    for (int i = 0; i < ay->n_major + ay->n_minor; i++) {
        int major = i < ay->n_major;
        double v = major ? ay->major[i] : ay->minor[i - ay->n_major];
        double y = y1 - axis_frac(ay, v) * (y1 - y0);
        cairo_move_to(cr, x0, y);
        cairo_line_to(cr, x0 - (major ? 5 : 3), y);
    }
    cairo_stroke(cr);
    plot_font(cr, TICK_FONT, 0);
    set_rgb(cr, 0x333333);
    char lab[64];
    for (int i = 0; i < ax->n_major; i++) {
        double x = x0 + axis_frac(ax, ax->major[i]) * (x1 - x0);
        plot_text(cr, x, y1 + 9, 0.5, 0, plot_format_tick(lab, sizeof lab, ax->major[i], ax->fmt));
    }
    for (int i = 0; i < ay->n_major; i++) {
        double y = y1 - axis_frac(ay, ay->major[i]) * (y1 - y0);
        plot_text(cr, x0 - 8, y, 1, 0.5, plot_format_tick(lab, sizeof lab, ay->major[i], ay->fmt));
    }
}

static double axis_max_label_width(const Axis *a, cairo_t *cr) {
    plot_font(cr, TICK_FONT, 0);
    double w = 0;
    char lab[64];
    for (int i = 0; i < a->n_major; i++)
        w = fmax(w, plot_text_width(cr, plot_format_tick(lab, sizeof lab, a->major[i], a->fmt)));
    return w;
}

// ---- title block (shared by the charts) ---------------------------------------------------------------
#define MARGIN 18.0
#define TITLE_FONT 18.0
#define TITLE_LINE 23.0
#define SUB_FONT 13.0
#define SUB_LINE 18.0
#define NOTE_FONT 11.0
#define NOTE_LINE 15.0
#define LABEL_FONT 13.0

double plot_title_block(cairo_t *cr, const char *title, const char *subtitle, double x, double y, double maxw,
                        int draw) {
    double h = 0;
    if (title && *title) {
        plot_font(cr, TITLE_FONT, PLOT_BOLD);
        set_rgb(cr, 0x111111);
        h += plot_text_wrapped(cr, title, x, y, maxw, TITLE_LINE, draw);
    }
    if (subtitle && *subtitle) {
        if (h > 0) h += 9;
        plot_font(cr, SUB_FONT, 0);
        set_rgb(cr, 0x555555);
        h += plot_text_wrapped(cr, subtitle, x, y + h, maxw, SUB_LINE, draw);
    }
    return h;
}

double plot_note_block(cairo_t *cr, const char *note, double x, double y, double maxw, int draw) {
    if (!note || !*note) return 0;
    plot_font(cr, NOTE_FONT, PLOT_ITALIC);
    set_rgb(cr, 0x666666);
    return plot_text_wrapped(cr, note, x, y, maxw, NOTE_LINE, draw);
}

// ---- line chart ----------------------------------------------------------------------------------------
#define LEG_FONT 12.0
#define LEG_ROW 20.0
#define LEG_PAD 9.0
#define LEG_SAMPLE 30.0

typedef struct {
    const LineChart *c;
    double w, h;
    Axis ax, ay;
    double x0, x1, y0, y1;        // plot area, y0 top
    double head_h, note_h;
    int legend_pos;               // as resolved: inside (0, 1, 2) or below (3)
    double leg_x, leg_y, leg_w, leg_h, leg_colw;
    int leg_cols;
    double xlabel_y;              // top of the x label's capitals
} LineLayout;

static int point_ok(const LineLayout *L, double x, double y) {
    return isfinite(x) && isfinite(y) && (!L->ax.log || x > 0) && (!L->ay.log || y > 0);
}

static double legend_entry_width(cairo_t *cr, const PlotSeries *s) {
    plot_font(cr, LEG_FONT, 0);
    return LEG_SAMPLE + 8 + plot_text_width(cr, s->label);
}

static void line_layout(LineLayout *L, const LineChart *c, cairo_t *cr) {
    memset(L, 0, sizeof *L);
    L->c = c;
    L->w = c->width > 0 ? c->width : 900;
    L->h = c->height > 0 ? c->height : 560;
    L->ax.log = c->logx;
    L->ay.log = c->logy;
    L->ax.fmt = c->xfmt;
    L->ay.fmt = c->yfmt;
    // the data's extent, positive values only on log axes
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int n_legend = 0;
    double leg_entry_w = 0;
    for (int s = 0; s < c->n_series; s++) {
        const PlotSeries *ps = &c->series[s];
        for (int i = 0; i < ps->n; i++) {
            double x = ps->x[i], y = ps->y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            if (!(c->logx && x <= 0)) { xmin = fmin(xmin, x); xmax = fmax(xmax, x); }
            if (!(c->logy && y <= 0)) { ymin = fmin(ymin, y); ymax = fmax(ymax, y); }
        }
        if (ps->label && *ps->label) {
            n_legend++;
            leg_entry_w = fmax(leg_entry_w, legend_entry_width(cr, ps));
        }
    }
    int fit_x = !(c->xmin < c->xmax) || (c->logx && c->xmin <= 0);
    int fit_y = !(c->ymin < c->ymax) || (c->logy && c->ymin <= 0);
    if (!fit_x) { xmin = c->xmin; xmax = c->xmax; }
    if (!fit_y) { ymin = c->ymin; ymax = c->ymax; }

    double maxw = L->w - 2 * MARGIN;
    L->head_h = plot_title_block(cr, c->title, c->subtitle, 0, 0, maxw, 0);
    L->note_h = plot_note_block(cr, c->note, 0, 0, maxw, 0);
    L->legend_pos = c->legend_pos >= 0 && c->legend_pos <= 3 ? c->legend_pos : 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        // legend size
        L->leg_w = L->leg_h = 0;
        if (n_legend > 0) {
            if (L->legend_pos == 3) {
                L->leg_colw = leg_entry_w + 28;
                L->leg_cols = (int)fmax(1, fmin(n_legend, floor(maxw / L->leg_colw)));
                int rows = (n_legend + L->leg_cols - 1) / L->leg_cols;
                L->leg_w = L->leg_cols * L->leg_colw - 28;
                L->leg_h = rows * LEG_ROW;
            } else {
                L->leg_w = leg_entry_w + 2 * LEG_PAD;
                L->leg_h = n_legend * LEG_ROW + 2 * LEG_PAD - (LEG_ROW - LEG_FONT);
            }
        }
        // vertical: title block, plot, tick labels, x label, legend below, note
        L->y0 = MARGIN + L->head_h + (L->head_h > 0 ? 22 : 6);
        double bottom = L->h - MARGIN;
        if (L->note_h > 0) bottom -= L->note_h + 12;
        if (L->legend_pos == 3 && L->leg_h > 0) {
            L->leg_y = bottom - L->leg_h;
            bottom = L->leg_y - 14;
        }
        if (c->xlabel && *c->xlabel) {
            L->xlabel_y = bottom - LABEL_FONT * CAP_HEIGHT - 3;
            bottom = L->xlabel_y - 10;
        }
        L->y1 = bottom - 9 - TICK_FONT;   // tick labels hang 9 pt below the axis
        if (L->y1 - L->y0 < 220) {        // too little room for the plot: grow the canvas
            L->h += 220 - (L->y1 - L->y0);
            attempt--;
            continue;
        }
        // y ticks depend only on the height; then the left margin on their labels
        axis_setup(&L->ay, cr, ymin, ymax, fit_y, L->y1 - L->y0, 0);
        L->x0 = MARGIN + (c->ylabel && *c->ylabel ? LABEL_FONT + 12 : 0) + axis_max_label_width(&L->ay, cr) + 10;
        L->x1 = L->w - MARGIN - 16;
        axis_setup(&L->ax, cr, xmin, xmax, fit_x, L->x1 - L->x0, 1);
        // the last x label is centred on its tick: keep it on the canvas
        if (L->ax.n_major > 0) {
            char lab[64];
            plot_font(cr, TICK_FONT, 0);
            double half = plot_text_width(cr, plot_format_tick(lab, sizeof lab, L->ax.major[L->ax.n_major - 1], L->ax.fmt)) / 2;
            double xr = L->x0 + axis_frac(&L->ax, L->ax.major[L->ax.n_major - 1]) * (L->x1 - L->x0);
            if (xr + half > L->w - 6) L->x1 -= xr + half - (L->w - 6);
        }
        // a legend inside the plot must leave most of the plot visible
        if (L->legend_pos != 3 && L->leg_w > 0.6 * (L->x1 - L->x0)) {
            L->legend_pos = 3;
            continue;
        }
        break;
    }
    if (L->legend_pos == 3) {
        L->leg_x = (L->x0 + L->x1) / 2 - L->leg_w / 2;
        if (L->leg_x < MARGIN) L->leg_x = MARGIN;
    } else {
        double inset = 10;
        L->leg_x = L->legend_pos == 0 ? L->x0 + inset : L->x1 - inset - L->leg_w;
        L->leg_y = L->legend_pos == 2 ? L->y1 - inset - L->leg_h : L->y0 + inset;
    }
}

static void series_style(cairo_t *cr, const PlotSeries *s) {
    double rgb[3];
    palette_rgb(s->color, rgb);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_set_line_width(cr, 2.2);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    cairo_set_line_cap(cr, s->dashed ? CAIRO_LINE_CAP_BUTT : CAIRO_LINE_CAP_ROUND);
    static const double dash[2] = {7, 4};
    cairo_set_dash(cr, dash, s->dashed ? 2 : 0, 0);
}

static void marker(cairo_t *cr, const PlotSeries *s, double x, double y) {
    double rgb[3];
    palette_rgb(s->color, rgb);
    cairo_new_sub_path(cr);
    cairo_arc(cr, x, y, 3.6, 0, 2 * M_PI);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_set_line_width(cr, 1.0);
    cairo_set_dash(cr, NULL, 0, 0);
    cairo_stroke(cr);
}

static void draw_legend(cairo_t *cr, const LineChart *c, const LineLayout *L) {
    if (L->leg_w <= 0) return;
    if (L->legend_pos != 3) {
        cairo_rectangle(cr, L->leg_x, L->leg_y, L->leg_w, L->leg_h);
        cairo_set_source_rgba(cr, 1, 1, 1, 0.92);
        cairo_fill_preserve(cr);
        set_rgb(cr, 0xCCCCCC);
        cairo_set_line_width(cr, 1.0);
        cairo_set_dash(cr, NULL, 0, 0);
        cairo_stroke(cr);
    }
    double pad = L->legend_pos == 3 ? 0 : LEG_PAD;
    int k = 0;
    for (int s = 0; s < c->n_series; s++) {
        const PlotSeries *ps = &c->series[s];
        if (!ps->label || !*ps->label) continue;
        int col = L->legend_pos == 3 ? k % L->leg_cols : 0, row = L->legend_pos == 3 ? k / L->leg_cols : k;
        double x = L->leg_x + pad + col * L->leg_colw;
        double ym = L->leg_y + pad + row * LEG_ROW + LEG_FONT / 2;   // middle of this entry's row
        series_style(cr, ps);
        cairo_move_to(cr, x, ym);
        cairo_line_to(cr, x + LEG_SAMPLE, ym);
        cairo_stroke(cr);
        if (ps->markers) marker(cr, ps, x + LEG_SAMPLE / 2, ym);
        plot_font(cr, LEG_FONT, 0);
        set_rgb(cr, 0x222222);
        plot_text(cr, x + LEG_SAMPLE + 8, ym, 0, 0.5, ps->label);
        k++;
    }
}

static void draw_line_chart(cairo_t *cr, double w, double h, const void *ctx) {
    const LineLayout *L = ctx;
    const LineChart *c = L->c;
    (void)h;
    plot_title_block(cr, c->title, c->subtitle, MARGIN, MARGIN, w - 2 * MARGIN, 1);
    draw_axes(cr, &L->ax, &L->ay, L->x0, L->x1, L->y0, L->y1, 1, 1);
    // series, clipped to the plot area (markers may sit on its edge)
    cairo_save(cr);
    cairo_rectangle(cr, L->x0 - 1, L->y0 - 1, L->x1 - L->x0 + 2, L->y1 - L->y0 + 2);
    cairo_clip(cr);
    for (int s = 0; s < c->n_series; s++) {
        const PlotSeries *ps = &c->series[s];
        series_style(cr, ps);
        int pen = 0;
        for (int i = 0; i < ps->n; i++) {
            if (!point_ok(L, ps->x[i], ps->y[i])) { pen = 0; continue; }
            double x = L->x0 + axis_frac(&L->ax, ps->x[i]) * (L->x1 - L->x0);
            double y = L->y1 - axis_frac(&L->ay, ps->y[i]) * (L->y1 - L->y0);
            if (pen) cairo_line_to(cr, x, y);
            else cairo_move_to(cr, x, y);
            pen = 1;
        }
        cairo_stroke(cr);
    }
    cairo_restore(cr);
    for (int s = 0; s < c->n_series; s++) {
        const PlotSeries *ps = &c->series[s];
        if (!ps->markers) continue;
        for (int i = 0; i < ps->n; i++) {
            if (!point_ok(L, ps->x[i], ps->y[i])) continue;
            double fx = axis_frac(&L->ax, ps->x[i]), fy = axis_frac(&L->ay, ps->y[i]);
            if (fx < -1e-6 || fx > 1 + 1e-6 || fy < -1e-6 || fy > 1 + 1e-6) continue;
            marker(cr, ps, L->x0 + fx * (L->x1 - L->x0), L->y1 - fy * (L->y1 - L->y0));
        }
    }
    draw_legend(cr, c, L);
    // axis labels
    plot_font(cr, LABEL_FONT, 0);
    set_rgb(cr, 0x222222);
    if (c->xlabel) plot_text(cr, (L->x0 + L->x1) / 2, L->xlabel_y, 0.5, 0, c->xlabel);
    if (c->ylabel && *c->ylabel) {
        // a label longer than the plot is tall would run into the title: shrink it to fit
        double size = LABEL_FONT, tw = plot_text_width(cr, c->ylabel), room = L->y1 - L->y0 + 20;
        if (tw > room) plot_font(cr, size * room / tw, 0);
        cairo_save(cr);
        cairo_translate(cr, MARGIN, (L->y0 + L->y1) / 2);
        cairo_rotate(cr, -M_PI / 2);
        plot_text(cr, 0, 0, 0.5, 0, c->ylabel);
        cairo_restore(cr);
    }
    plot_note_block(cr, c->note, MARGIN, L->h - MARGIN - L->note_h, w - 2 * MARGIN, 1);
}

void plot_line_chart(const LineChart *c, const char *path_no_ext, int png, int svg) {
    CHECK(c && (c->n_series == 0 || c->series), "line chart without series");
    for (int s = 0; s < c->n_series; s++)
        CHECK(c->series[s].n == 0 || (c->series[s].x && c->series[s].y), "series %d has no data", s);
    cairo_t *cr = plot_measure_context();
    LineLayout L;
    line_layout(&L, c, cr);
    cairo_destroy(cr);
    plot_write_figure(path_no_ext, png, svg, L.w, L.h, draw_line_chart, &L);
}

// ---- bar chart -----------------------------------------------------------------------------------------
#define BAR_H 22.0
#define BAR_PITCH 32.0
#define BAR_LABEL_FONT 12.5

typedef struct {
    const BarChart *c;
    double w, h;
    Axis ax, ay;                  // ay is empty: bars are categories
    double x0, x1, y0, y1;
    double head_h, note_h, xlabel_y;
} BarLayout;

static void bar_value_label(char *buf, int cap, const BarChart *c, double v) {
    if (c->fmt == AXIS_PLAIN) {
        char tmp[64];
        fmt_short(tmp, sizeof tmp, v);
        // fmt_short keeps 3 significant digits only below 100; large plain values print whole
        if (fabs(v) >= 1000) snprintf(tmp, sizeof tmp, "%.0f", v);
        snprintf(buf, cap, "%s", tmp);
    } else {
        plot_format_tick(buf, cap, v, c->fmt);
    }
}

static void bar_layout(BarLayout *L, const BarChart *c, cairo_t *cr) {
    memset(L, 0, sizeof *L);
    L->c = c;
    L->w = c->width > 0 ? c->width : 900;
    double maxw = L->w - 2 * MARGIN;
    L->head_h = plot_title_block(cr, c->title, c->subtitle, 0, 0, maxw, 0);
    L->note_h = plot_note_block(cr, c->note, 0, 0, maxw, 0);
    double lab_w = 0, val_w = 0, vmin = INFINITY, vmax = -INFINITY;
    char buf[64];
    for (int i = 0; i < c->n; i++) {
        plot_font(cr, BAR_LABEL_FONT, 0);
        lab_w = fmax(lab_w, plot_text_width(cr, c->labels[i]));
        plot_font(cr, TICK_FONT, PLOT_BOLD);
        bar_value_label(buf, sizeof buf, c, c->values[i]);
        val_w = fmax(val_w, plot_text_width(cr, buf));
        if (isfinite(c->values[i]) && (!c->logx || c->values[i] > 0)) {
            vmin = fmin(vmin, c->values[i]);
            vmax = fmax(vmax, c->values[i]);
        }
    }
    L->y0 = MARGIN + L->head_h + (L->head_h > 0 ? 20 : 6);
    L->y1 = L->y0 + c->n * BAR_PITCH + 6;
    double bottom = L->y1 + 9 + TICK_FONT;
    if (c->xlabel && *c->xlabel) {
        L->xlabel_y = bottom + 10;
        bottom = L->xlabel_y + LABEL_FONT;
    }
    if (L->note_h > 0) bottom += 14 + L->note_h;
    L->h = c->height > 0 ? fmax(c->height, bottom + MARGIN) : bottom + MARGIN;
    L->x0 = MARGIN + lab_w + 12;
    L->x1 = L->w - MARGIN - val_w - 12;
    L->ax.log = c->logx;
    L->ax.fmt = c->fmt;
    if (!(vmin <= vmax)) { vmin = 0; vmax = 1; }
    if (!c->logx) {
        axis_setup(&L->ax, cr, fmin(vmin, 0), vmax, 1, L->x1 - L->x0, 1);   // linear bars start at zero
    } else {
        // a log bar has no zero: start the axis a power of the base below the smallest value, so the
        // shortest bar stays visible, and end it at the power above the largest
        double lb = log(c->fmt == AXIS_PLAIN ? 10.0 : 2.0);
        double lo = exp(lb * (floor(log(vmin) / lb + 1e-9) - 1)), hi = exp(lb * ceil(log(vmax) / lb - 1e-9));
        if (hi <= vmax) hi *= exp(lb);
        axis_setup(&L->ax, cr, lo, hi, 0, L->x1 - L->x0, 1);
    }
}

static void draw_bar_chart(cairo_t *cr, double w, double h, const void *ctx) {
    const BarLayout *L = ctx;
    const BarChart *c = L->c;
    (void)h;
    plot_title_block(cr, c->title, c->subtitle, MARGIN, MARGIN, w - 2 * MARGIN, 1);
    draw_axes(cr, &L->ax, &L->ay, L->x0, L->x1, L->y0, L->y1, 1, 0);
    char buf[64];
    for (int i = 0; i < c->n; i++) {
        double v = c->values[i];
        double yt = L->y0 + 6 + i * BAR_PITCH + (BAR_PITCH - BAR_H) / 2;
        double ym = yt + BAR_H / 2;
        plot_font(cr, BAR_LABEL_FONT, 0);
        set_rgb(cr, 0x222222);
        plot_text(cr, L->x0 - 10, ym, 1, 0.5, c->labels[i]);
        if (!isfinite(v) || (c->logx && v <= 0)) continue;
        double f = fmax(0, fmin(1, axis_frac(&L->ax, v)));
        double rgb[3];
        palette_rgb(c->colors ? c->colors[i] : COLOR_OTHER, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        double x0 = L->x0 + (c->logx ? 0 : axis_frac(&L->ax, 0) * (L->x1 - L->x0));
        double xe = L->x0 + f * (L->x1 - L->x0);
        cairo_rectangle(cr, fmin(x0, xe), yt, fabs(xe - x0), BAR_H);
        cairo_fill(cr);
        plot_font(cr, TICK_FONT, PLOT_BOLD);
        set_rgb(cr, 0x222222);
        bar_value_label(buf, sizeof buf, c, v);
        if (xe >= x0) plot_text(cr, xe + 6, ym, 0, 0.5, buf);
        else plot_text(cr, xe - 6, ym, 1, 0.5, buf);   // a negative bar: its label on the left
    }
    // the value axis's spine is drawn by draw_axes; redraw the left one over the bars
    set_rgb(cr, 0x444444);
    cairo_set_line_width(cr, 1.2);
    cairo_move_to(cr, L->x0, L->y0);
    cairo_line_to(cr, L->x0, L->y1);
    cairo_stroke(cr);
    plot_font(cr, LABEL_FONT, 0);
    set_rgb(cr, 0x222222);
    if (c->xlabel) plot_text(cr, (L->x0 + L->x1) / 2, L->xlabel_y, 0.5, 0, c->xlabel);
    plot_note_block(cr, c->note, MARGIN, L->h - MARGIN - L->note_h, w - 2 * MARGIN, 1);
}

void plot_bar_chart(const BarChart *c, const char *path_no_ext, int png, int svg) {
    CHECK(c && (c->n == 0 || (c->labels && c->values)), "bar chart without data");
    cairo_t *cr = plot_measure_context();
    BarLayout L;
    bar_layout(&L, c, cr);
    cairo_destroy(cr);
    plot_write_figure(path_no_ext, png, svg, L.w, L.h, draw_bar_chart, &L);
}
