// plot.c: line and bar charts with cairo, and the machinery every figure shares: one drawing
// function, called once per output format, written atomically.
//
// Layout is computed first with a measuring context (text widths decide the margins), then the
// drawing function paints from that layout. Sizes are in points; the SVG uses them as px, the PNG
// renders them at 2x so thin lines and small text stay crisp. The rules listed in plot.h are applied
// here, in the layout, so every chart gets them.
#include "plot.h"

#include <cairo-svg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define FONT_FAMILY "DejaVu Sans"
#define CAP_HEIGHT 0.729   // DejaVu Sans capital height as a fraction of the font size
#define PNG_MAX_PX 2400.0
#define DISPLAY_PX 900.0   // the width a reader sees a PNG at (a README, a screen)

// One colour per mechanism. The first six are Okabe-Ito (colour-blind safe); yellow (#F0E442) is
// unreadable as a line on white, so Gated DeltaNet takes a darker olive of its hue. The rest come from
// Paul Tol's muted scheme, picked so that the mechanisms that share a figure (the linear mixers of
// chapter 10, the attention kinds of chapters 3-8) stay far apart. A test holds every pair apart and
// every colour dark enough to read on white.
static const struct { unsigned char rgb[3]; const char *name; } palette[COLOR_COUNT] = {
    [COLOR_MHA] = {{0x00, 0x72, 0xB2}, "MHA"},                 // blue
    [COLOR_GQA] = {{0xE6, 0x9F, 0x00}, "GQA"},                 // orange
    [COLOR_MQA] = {{0xD5, 0x5E, 0x00}, "MQA"},                 // vermillion
    [COLOR_MLA] = {{0x00, 0x9E, 0x73}, "MLA"},                 // bluish green
    [COLOR_SWA] = {{0xCC, 0x79, 0xA7}, "SWA"},                 // reddish purple
    [COLOR_DSA] = {{0x56, 0xB4, 0xE9}, "DSA"},                 // sky blue
    [COLOR_GATED] = {{0x88, 0x22, 0x55}, "gated attention"},   // wine
    [COLOR_GDN] = {{0xB8, 0xA0, 0x00}, "Gated DeltaNet"},      // dark yellow
    [COLOR_KDA] = {{0x11, 0x77, 0x33}, "KDA"},                 // dark green
    [COLOR_LIGHTNING] = {{0xAA, 0x44, 0x99}, "Lightning"},     // purple
    [COLOR_MAMBA2] = {{0x8C, 0x51, 0x0A}, "Mamba-2"},          // brown
    [COLOR_CSA] = {{0x33, 0x22, 0x88}, "CSA"},                 // indigo
    [COLOR_HCA] = {{0x44, 0xAA, 0x99}, "HCA"},                 // teal
    [COLOR_OTHER] = {{0x55, 0x55, 0x55}, "other"},             // grey
};

static int palette_index(int color) { return ((color % COLOR_COUNT) + COLOR_COUNT) % COLOR_COUNT; }

void palette_rgb(int color, double rgb[3]) {
    int c = palette_index(color);
    for (int k = 0; k < 3; k++) rgb[k] = palette[c].rgb[k] / 255.0;
}

const char *palette_name(int color) { return palette[palette_index(color)].name; }

void plot_set_hex(cairo_t *cr, unsigned hex) {
    cairo_set_source_rgb(cr, ((hex >> 16) & 255) / 255.0, ((hex >> 8) & 255) / 255.0, (hex & 255) / 255.0);
}
#define set_rgb plot_set_hex

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

// dst = line + " " + the word's wn chars (no space after an empty line), cut to PLOT_LINE_CHARS - 1 chars
static void join_word(char dst[PLOT_LINE_CHARS], const char *line, const char *word, size_t wn) {
    size_t k = strlen(line);
    if (k > PLOT_LINE_CHARS - 1) k = PLOT_LINE_CHARS - 1;
    memmove(dst, line, k);
    if (k && k < PLOT_LINE_CHARS - 1) dst[k++] = ' ';
    if (wn > PLOT_LINE_CHARS - 1 - k) wn = PLOT_LINE_CHARS - 1 - k;
    memcpy(dst + k, word, wn);
    dst[k + wn] = '\0';
}

int plot_wrap_lines(cairo_t *cr, const char *s, double maxw, char (*lines)[PLOT_LINE_CHARS], int max_lines) {
    int n = 0;
    char line[PLOT_LINE_CHARS] = "";
    const char *p = s ? s : "";
    while (*p && n < max_lines) {
        while (*p == ' ') p++;
        const char *q = p;
        while (*q && *q != ' ') q++;
        if (q == p) break;
        char trial[PLOT_LINE_CHARS];
        join_word(trial, line, p, (size_t)(q - p));
        if (line[0] && plot_text_width(cr, trial) > maxw) {
            snprintf(lines[n++], PLOT_LINE_CHARS, "%s", line);
            join_word(line, "", p, (size_t)(q - p));
        } else {
            memcpy(line, trial, sizeof line);
        }
        p = q;
    }
    if (line[0] && n < max_lines) snprintf(lines[n++], PLOT_LINE_CHARS, "%s", line);
    return n;
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


// The SVG's <title> and <desc>: what a screen reader says and a search indexes, instead of anonymous
// paths. Inserted right after the opening <svg ...> tag, XML-escaped.
static void membuf_puts_escaped(MemBuf *b, const char *s) {
    for (; s && *s; s++) {
        const char *e = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '"' ? "&quot;" : NULL;
        if (e) CHECK(membuf_write(b, (const unsigned char *)e, (unsigned)strlen(e)) == CAIRO_STATUS_SUCCESS, "out of memory");
        else CHECK(membuf_write(b, (const unsigned char *)s, 1) == CAIRO_STATUS_SUCCESS, "out of memory");
    }
}

static void svg_add_title(MemBuf *b, const char *title, const char *desc) {
    const char *svg = b->n ? memmem(b->data, b->n, "<svg", 4) : NULL;
    const char *end = svg ? memchr(svg, '>', b->n - (size_t)(svg - (const char *)b->data)) : NULL;
    CHECK(end, "cairo wrote an SVG without an <svg> tag");
    size_t at = (size_t)(end - (const char *)b->data) + 1;
    MemBuf out = {0};
    CHECK(membuf_write(&out, b->data, (unsigned)at) == CAIRO_STATUS_SUCCESS, "out of memory");
    static const char t0[] = "\n<title>", t1[] = "</title>\n<desc>", t2[] = "</desc>";
    CHECK(membuf_write(&out, (const unsigned char *)t0, sizeof t0 - 1) == CAIRO_STATUS_SUCCESS, "out of memory");
    membuf_puts_escaped(&out, title);
    CHECK(membuf_write(&out, (const unsigned char *)t1, sizeof t1 - 1) == CAIRO_STATUS_SUCCESS, "out of memory");
    membuf_puts_escaped(&out, desc);
    CHECK(membuf_write(&out, (const unsigned char *)t2, sizeof t2 - 1) == CAIRO_STATUS_SUCCESS, "out of memory");
    CHECK(membuf_write(&out, b->data + at, (unsigned)(b->n - at)) == CAIRO_STATUS_SUCCESS, "out of memory");
    free(b->data);
    *b = out;
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

void plot_write_figure_meta(const char *path_no_ext, int png, int svg, double w, double h, PlotDrawFn draw,
                            const void *ctx, const char *title, const char *desc) {
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
        const char *base = strrchr(path_no_ext, '/');
        base = base ? base + 1 : path_no_ext;
        svg_add_title(&b, title && *title ? title : base, desc ? desc : "");
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

void plot_write_figure(const char *path_no_ext, int png, int svg, double w, double h, PlotDrawFn draw,
                       const void *ctx) {
    plot_write_figure_meta(path_no_ext, png, svg, w, h, draw, ctx, NULL, NULL);
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
    if (a->fmt != AXIS_PLAIN) {
        while (fmax(fabs(dmin), fabs(dmax)) / unit >= 1024) unit *= 1024;
        // up to a few units: quarters of it (256 B, 512 B, 768 B, 1 KiB), not 205 B
        if (unit >= 1024 && fmax(fabs(dmin), fabs(dmax)) / unit < 4) unit /= 4;
    }
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


// ---- title block (shared by every figure) ---------------------------------------------------------------
#define MARGIN 18.0
#define TITLE_FONT 18.0
#define TITLE_MIN 15.0
#define SUB_FONT 13.0
#define SUB_MIN 11.0
#define NOTE_FONT 11.0
#define NOTE_LINE 15.0
#define LABEL_FONT 13.0

// s on one line: the largest size in [lo, hi] (half-point steps) at which it fits maxw; else at lo, cut
// at a word boundary with "...". Writes the line into out (cap bytes), returns the size.
static double fit_one_line(cairo_t *cr, const char *s, double hi, double lo, int style, double maxw, char *out,
                           size_t cap, int *fits) {
    snprintf(out, cap, "%s", s);
    for (double size = hi; size >= lo - 1e-9; size -= 0.5) {
        plot_font(cr, size, style);
        if (plot_text_width(cr, out) <= maxw) {
            *fits = 1;
            return size;
        }
    }
    *fits = 0;
    plot_font(cr, lo, style);
    size_t n = strlen(out);
    char *trial = mallocCheck(cap + 8);
    while (n > 0) {
        while (n > 0 && out[n - 1] != ' ') n--;
        while (n > 0 && out[n - 1] == ' ') n--;
        snprintf(trial, cap + 8, "%.*s ...", (int)n, out);
        if (plot_text_width(cr, trial) <= maxw) break;
    }
    snprintf(out, cap, "%s", n > 0 ? trial : "...");
    free(trial);
    return lo;
}

double plot_title_block_fit(cairo_t *cr, const char *title, const char *subtitle, double x, double y,
                            double maxw, int draw, int *title_fits, int *subtitle_fits) {
    double h = 0;
    char line[1024];
    int fits = 1;
    if (title_fits) *title_fits = 1;
    if (subtitle_fits) *subtitle_fits = 1;
    if (title && *title) {
        double size = fit_one_line(cr, title, TITLE_FONT, TITLE_MIN, PLOT_BOLD, maxw, line, sizeof line, &fits);
        if (!fits && !draw) fprintf(stderr, "%s: warning: figure title cut to one line: \"%s\"\n", g_prog, title);
        if (title_fits) *title_fits = fits;
        plot_font(cr, size, PLOT_BOLD);
        set_rgb(cr, 0x111111);
        if (draw) plot_text(cr, x, y + (TITLE_FONT - size) / 2, 0, 0, line);
        h += TITLE_FONT;
    }
    if (subtitle && *subtitle) {
        if (h > 0) h += 9;
        double size = fit_one_line(cr, subtitle, SUB_FONT, SUB_MIN, 0, maxw, line, sizeof line, &fits);
        if (!fits && !draw)
            fprintf(stderr, "%s: warning: figure subtitle cut to one line (details belong in the README): \"%s\"\n",
                    g_prog, subtitle);
        if (subtitle_fits) *subtitle_fits = fits;
        plot_font(cr, size, 0);
        set_rgb(cr, 0x555555);
        if (draw) plot_text(cr, x, y + h + (SUB_FONT - size) / 2, 0, 0, line);
        h += SUB_FONT;
    }
    return h;
}

double plot_title_block(cairo_t *cr, const char *title, const char *subtitle, double x, double y, double maxw,
                        int draw) {
    return plot_title_block_fit(cr, title, subtitle, x, y, maxw, draw, NULL, NULL);
}

double plot_note_block(cairo_t *cr, const char *note, double x, double y, double maxw, int draw) {
    if (!note || !*note) return 0;
    plot_font(cr, NOTE_FONT, PLOT_ITALIC);
    set_rgb(cr, 0x666666);
    return plot_text_wrapped(cr, note, x, y, maxw, NOTE_LINE, draw);
}

int plot_box_overlap(const PlotBox *a, const PlotBox *b) {
    return a->x0 < b->x1 && b->x0 < a->x1 && a->y0 < b->y1 && b->y0 < a->y1;
}

// The smallest text a title block draws (for PlotInfo.min_text_px).
static double title_min_font(cairo_t *cr, const char *title, const char *subtitle, double maxw) {
    char line[1024];
    int fits;
    double m = INFINITY;
    if (title && *title) m = fmin(m, fit_one_line(cr, title, TITLE_FONT, TITLE_MIN, PLOT_BOLD, maxw, line, sizeof line, &fits));
    if (subtitle && *subtitle) m = fmin(m, fit_one_line(cr, subtitle, SUB_FONT, SUB_MIN, 0, maxw, line, sizeof line, &fits));
    return m;
}

// An axis label as drawn: "log scale" said exactly when the axis is logarithmic, never otherwise.
static void axis_label_text(char *out, size_t cap, const char *label, int log) {
    out[0] = '\0';
    if (!label || !*label) return;
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", label);
    static const char *forms[] = {", log scale", " (log scale)", "; log scale", "log scale"};
    for (size_t k = 0; k < sizeof forms / sizeof forms[0]; k++) {
        char *p;
        while ((p = strstr(tmp, forms[k]))) memmove(p, p + strlen(forms[k]), strlen(p + strlen(forms[k])) + 1);
    }
    size_t n = strlen(tmp);
    if (n >= 2 && !strcmp(tmp + n - 2, "()")) tmp[n - 2] = '\0';   // "x ()" left by "x (log scale)"
    n = strlen(tmp);
    while (n > 0 && tmp[n - 1] == ' ') tmp[--n] = '\0';
    if (!log) snprintf(out, cap, "%s", tmp);
    else if (n > 0 && tmp[n - 1] == ')') snprintf(out, cap, "%.*s, log scale)", (int)(n - 1), tmp);
    else snprintf(out, cap, "%s (log scale)", tmp);
}

static int is_accuracy_chart(const char *value_label) {
    return value_label && strstr(value_label, "accuracy") != NULL;
}

// ---- line chart ----------------------------------------------------------------------------------------
#define LEG_FONT 12.0
#define LEG_ROW 20.0
#define LEG_LINE 15.0        // line pitch inside a wrapped legend entry
#define LEG_PAD 9.0
#define LEG_SAMPLE 30.0
#define LINE_W 2.2          // a series' line width: the tolerance within which two series coincide
#define REF_FONT 11.0
#define LIMIT_FONT 10.5
#define DIRECT_MAX_W 230.0  // a direct label wraps at this width
#define DIRECT_SAMPLE 18.0
#define DASH_SEG 8.0        // coinciding series alternate dashes of this length
#define MAXS 256            // series a chart can take (./kvcache --plot draws one per config given)
#define MAX_LABELS (2 * PLOT_INFO_MAX)

typedef struct {
    int n;
    double *x, *y, *lo, *hi;   // the points drawn: the series cut at x_limit (malloc'd, freed with the layout)
    int cut;                   // 1: the series ends at x_limit with an end marker
    double end_x, end_y;       // that marker, in data units
} SeriesPts;

// A legend entry: one series, or several that coincide within a line width.
typedef struct {
    int member[MAXS], n;
    char text[1024];            // the members' labels joined by " = "
    double w;                   // width of the legend entry (sample + text)
    char lines[6][PLOT_LINE_CHARS];   // the entry's text, wrapped
    int n_lines;
    double lw, lh;              // its size
    double anchor_y, label_y;   // the line's end and the label's top, canvas points
} Entry;

typedef struct {
    char text[256];
    double x, y, ax;            // anchor (ay is always 0: top of capitals at y)
    double size;
    int italic;
    unsigned hex;
    PlotBox box;
} Label;

typedef struct {
    const LineChart *c;
    double w, h;
    Axis ax, ay;
    double x0, x1, y0, y1;        // plot area, y0 top
    double head_h, note_h;
    int title_fits, subtitle_fits;
    char xlabel[512], ylabel[512];
    double ylabel_size;
    SeriesPts pts[MAXS];
    int ns;
    int entry_of[MAXS];           // legend entry of each series (-1: unlabelled)
    Entry *ent;                   // MAXS entries
    int n_ent;
    int legend_pos;               // as resolved
    double leg_x, leg_y, leg_w, leg_h, leg_colw;
    int leg_cols;
    double direct_w;              // right margin taken by direct labels
    double xlabel_y;              // top of the x label's capitals
    Label lab[MAX_LABELS];        // reference and limit labels, placed inside the plot
    int n_lab;
    int n_limits;
    double xmin, xmax, ymin, ymax;
    int fit_x, fit_y;
} LineLayout;

static double sx(const LineLayout *L, double x) { return L->x0 + axis_frac(&L->ax, x) * (L->x1 - L->x0); }
static double sy(const LineLayout *L, double y) { return L->y1 - axis_frac(&L->ay, y) * (L->y1 - L->y0); }

static int point_ok(const LineLayout *L, double x, double y) {
    return isfinite(x) && isfinite(y) && (!L->ax.log || x > 0) && (!L->ay.log || y > 0);
}

// The series cut at its x_limit: points past it dropped, the value at x_limit interpolated in.
static void cut_series(SeriesPts *p, const PlotSeries *s) {
    memset(p, 0, sizeof *p);
    size_t bytes = sizeof(double) * (size_t)(s->n + 1);
    p->x = mallocCheck(bytes);
    p->y = mallocCheck(bytes);
    p->lo = s->ylo ? mallocCheck(bytes) : NULL;
    p->hi = s->yhi ? mallocCheck(bytes) : NULL;
    for (int i = 0; i < s->n; i++) {
        double x = s->x[i];
        if (s->x_limit > 0 && x > s->x_limit) {
            p->cut = 1;
            // a point past the limit: close the line at x_limit when the previous point is before it
            if (i > 0 && s->x[i - 1] < s->x_limit && isfinite(s->y[i]) && isfinite(s->y[i - 1])) {
                double f = (s->x_limit - s->x[i - 1]) / (x - s->x[i - 1]);
                p->x[p->n] = s->x_limit;
                p->y[p->n] = s->y[i - 1] + f * (s->y[i] - s->y[i - 1]);
                if (p->lo) p->lo[p->n] = s->ylo[i - 1] + f * (s->ylo[i] - s->ylo[i - 1]);
                if (p->hi) p->hi[p->n] = s->yhi[i - 1] + f * (s->yhi[i] - s->yhi[i - 1]);
                p->n++;
            }
            break;
        }
        p->x[p->n] = x;
        p->y[p->n] = s->y[i];
        if (p->lo) p->lo[p->n] = s->ylo[i];
        if (p->hi) p->hi[p->n] = s->yhi[i];
        p->n++;
        if (s->x_limit > 0 && x == s->x_limit) p->cut = 1;
    }
    if (p->cut && p->n > 0) {
        p->end_x = p->x[p->n - 1];
        p->end_y = p->y[p->n - 1];
    }
}

static void extend(double *lo, double *hi, double v) {
    if (!isfinite(v)) return;
    if (v < *lo) *lo = v;
    if (v > *hi) *hi = v;
}

// ---- coinciding series --------------------------------------------------------------------------------
// y of the polyline p at canvas x X (canvas units), or NAN when X lies outside it.
static double poly_y_at(const LineLayout *L, const SeriesPts *p, double X) {
    double px = NAN, py = NAN;
    for (int i = 0; i < p->n; i++) {
        if (!point_ok(L, p->x[i], p->y[i])) { px = NAN; continue; }
        double qx = sx(L, p->x[i]), qy = sy(L, p->y[i]);
        if (fabs(qx - X) <= 1e-6) return qy;
        if (isfinite(px) && ((px <= X && X <= qx) || (qx <= X && X <= px)))
            return py + (qy - py) * (X - px) / (qx - px);
        px = qx;
        py = qy;
    }
    return NAN;
}

// Every point of a lies on b's line within a line width (b's extent included).
static int lies_on(const LineLayout *L, const SeriesPts *a, const SeriesPts *b) {
    int any = 0;
    for (int i = 0; i < a->n; i++) {
        if (!point_ok(L, a->x[i], a->y[i])) continue;
        double X = sx(L, a->x[i]), Y = sy(L, a->y[i]);
        double yb = poly_y_at(L, b, X);
        if (!isfinite(yb)) {   // just past b's end: within a line width of its end point
            yb = poly_y_at(L, b, X - LINE_W);
            if (!isfinite(yb)) yb = poly_y_at(L, b, X + LINE_W);
        }
        if (!isfinite(yb) || fabs(yb - Y) > LINE_W) return 0;
        any = 1;
    }
    return any;
}

static int coincide(const LineLayout *L, int a, int b) {
    const SeriesPts *p = &L->pts[a], *q = &L->pts[b];
    if (p->n == 1 && q->n == 1) {
        if (!point_ok(L, p->x[0], p->y[0]) || !point_ok(L, q->x[0], q->y[0])) return 0;
        return hypot(sx(L, p->x[0]) - sx(L, q->x[0]), sy(L, p->y[0]) - sy(L, q->y[0])) <= LINE_W;
    }
    if (p->n < 2 || q->n < 2) return 0;
    // one lying entirely on the other is hidden under it (a model cut at its max context on a longer one)
    return lies_on(L, p, q) || lies_on(L, q, p);
}

// Legend entries: labelled series in order; a series joins the first entry whose first member it
// coincides with. merge 0 makes one entry per labelled series.
static void build_entries(LineLayout *L, int merge) {
    const LineChart *c = L->c;
    L->n_ent = 0;
    for (int s = 0; s < L->ns; s++) {
        L->entry_of[s] = -1;
        const char *lab = c->series[s].label;
        if (!lab || !*lab) continue;
        int e = -1;
        for (int k = 0; merge && k < L->n_ent && e < 0; k++)
            if (coincide(L, L->ent[k].member[0], s)) e = k;
        // a series with no point inside the axes is said to be off the plot, not promised as a line
        int visible = 0;
        for (int i = 0; i < L->pts[s].n && !visible; i++) {
            double x = L->pts[s].x[i], y = L->pts[s].y[i];
            if (!point_ok(L, x, y)) continue;
            double fx = axis_frac(&L->ax, x), fy = axis_frac(&L->ay, y);
            visible = fx >= -1e-6 && fx <= 1 + 1e-6 && fy >= -1e-6 && fy <= 1 + 1e-6;
        }
        const char *off = visible || L->ax.hi <= L->ax.lo ? "" : " (off the plot)";
        if (e < 0) {
            e = L->n_ent++;
            memset(&L->ent[e], 0, sizeof L->ent[e]);
            snprintf(L->ent[e].text, sizeof L->ent[e].text, "%s%s", lab, off);
        } else {
            size_t n = strlen(L->ent[e].text);
            snprintf(L->ent[e].text + n, sizeof L->ent[e].text - n, " = %s%s", lab, off);
        }
        L->ent[e].member[L->ent[e].n++] = s;
        L->entry_of[s] = e;
    }
}

// Members of an entry that look alike (one colour, one dash) draw as one line; otherwise each draws
// every m-th dash of an alternating pattern, so every colour of the entry shows along the line.
static int entry_mixed(const LineLayout *L, const Entry *e) {
    const PlotSeries *s0 = &L->c->series[e->member[0]];
    for (int k = 1; k < e->n; k++) {
        const PlotSeries *s = &L->c->series[e->member[k]];
        if (palette_index(s->color) != palette_index(s0->color) || s->dashed != s0->dashed) return 1;
    }
    return 0;
}

static void series_style(cairo_t *cr, const LineLayout *L, int s) {
    const PlotSeries *ps = &L->c->series[s];
    double rgb[3];
    palette_rgb(ps->color, rgb);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_set_line_width(cr, LINE_W);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    int e = L->entry_of[s];
    if (e >= 0 && L->ent[e].n > 1 && entry_mixed(L, &L->ent[e])) {
        int k = 0, m = L->ent[e].n;
        while (L->ent[e].member[k] != s) k++;
        double dash[2] = {DASH_SEG, DASH_SEG * (m - 1)};
        cairo_set_line_cap(cr, CAIRO_LINE_CAP_BUTT);
        cairo_set_dash(cr, dash, 2, -k * DASH_SEG);
        return;
    }
    static const double dash[2] = {7, 4};
    cairo_set_line_cap(cr, ps->dashed ? CAIRO_LINE_CAP_BUTT : CAIRO_LINE_CAP_ROUND);
    cairo_set_dash(cr, dash, ps->dashed ? 2 : 0, 0);
}

static void marker(cairo_t *cr, int color, double x, double y) {
    double rgb[3];
    palette_rgb(color, rgb);
    cairo_new_sub_path(cr);
    cairo_arc(cr, x, y, 3.6, 0, 2 * M_PI);
    cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_set_line_width(cr, 1.0);
    cairo_set_dash(cr, NULL, 0, 0);
    cairo_stroke(cr);
}

// ---- what may not be covered: lines, markers, bands, references --------------------------------------
static int seg_hits_box(double ax, double ay, double bx, double by, const PlotBox *r) {
    // Liang-Barsky clipping of the segment against the box
    double t0 = 0, t1 = 1, dx = bx - ax, dy = by - ay;
    double p[4] = {-dx, dx, -dy, dy}, q[4] = {ax - r->x0, r->x1 - ax, ay - r->y0, r->y1 - ay};
    for (int k = 0; k < 4; k++) {
        if (p[k] == 0) {
            if (q[k] < 0) return 0;
        } else {
            double t = q[k] / p[k];
            if (p[k] < 0) { if (t > t1) return 0; if (t > t0) t0 = t; }
            else { if (t < t0) return 0; if (t < t1) t1 = t; }
        }
    }
    return t0 <= t1;
}

static int poly_hits_box(const LineLayout *L, const double *x, const double *y, int n, const PlotBox *r) {
    double px = NAN, py = NAN;
    for (int i = 0; i < n; i++) {
        if (!point_ok(L, x[i], y[i])) { px = NAN; continue; }
        double qx = sx(L, x[i]), qy = sy(L, y[i]);
        if (isfinite(px) ? seg_hits_box(px, py, qx, qy, r) : seg_hits_box(qx, qy, qx, qy, r)) return 1;
        px = qx;
        py = qy;
    }
    return 0;
}

// 1 if the box covers any series (its line, markers, band or whiskers), reference line or placed label.
static int box_hits_data(const LineLayout *L, const PlotBox *box, int skip_series, int skip_ref) {
    PlotBox r = {box->x0 - 3, box->y0 - 3, box->x1 + 3, box->y1 + 3};
    for (int s = 0; s < L->ns; s++) {
        if (s == skip_series) continue;
        const SeriesPts *p = &L->pts[s];
        if (poly_hits_box(L, p->x, p->y, p->n, &r)) return 1;
        if (p->lo && poly_hits_box(L, p->x, p->lo, p->n, &r)) return 1;
        if (p->hi && poly_hits_box(L, p->x, p->hi, p->n, &r)) return 1;
        for (int i = 0; p->lo && p->hi && i < p->n; i++) {
            if (!point_ok(L, p->x[i], p->lo[i]) || !point_ok(L, p->x[i], p->hi[i])) continue;
            double X = sx(L, p->x[i]);
            if (seg_hits_box(X, sy(L, p->lo[i]), X, sy(L, p->hi[i]), &r)) return 1;
        }
    }
    const LineChart *c = L->c;
    for (int k = 0; k < c->n_refs; k++) {
        const PlotRef *f = &c->refs[k];
        if (k == skip_ref) continue;
        if (f->n > 0) {
            if (poly_hits_box(L, f->x, f->y, f->n, &r)) return 1;
        } else if (f->vertical) {
            if (point_ok(L, f->value, L->ay.lo) && seg_hits_box(sx(L, f->value), L->y0, sx(L, f->value), L->y1, &r)) return 1;
        } else if (point_ok(L, L->ax.lo, f->value) && seg_hits_box(L->x0, sy(L, f->value), L->x1, sy(L, f->value), &r)) {
            return 1;
        }
    }
    for (int k = 0; k < L->n_lab; k++)
        if (plot_box_overlap(&L->lab[k].box, box)) return 1;
    return 0;
}

// ---- layout ---------------------------------------------------------------------------------------------
// Every entry's text wrapped at wrap_w (a merged entry can be long); returns the widest block. Entry
// widths include the line sample.
static double wrap_entries(LineLayout *L, cairo_t *cr, double wrap_w, double sample) {
    double widest = 0;
    plot_font(cr, LEG_FONT, 0);
    for (int e = 0; e < L->n_ent; e++) {
        Entry *E = &L->ent[e];
        E->n_lines = plot_wrap_lines(cr, E->text, wrap_w, E->lines, 6);
        E->lw = 0;
        for (int k = 0; k < E->n_lines; k++) E->lw = fmax(E->lw, plot_text_width(cr, E->lines[k]));
        E->lh = (E->n_lines - 1) * LEG_LINE + LEG_FONT;
        E->w = sample + 8 + E->lw;
        widest = fmax(widest, E->lw);
    }
    return widest;
}

// Height of legend row r (below the plot: cols entries a row; inside: one).
static double legend_row_h(const LineLayout *L, int r, int cols) {
    double h = 0;
    for (int e = r * cols; e < (r + 1) * cols && e < L->n_ent; e++) h = fmax(h, L->ent[e].lh);
    return h;
}

// Places the plot area, axes and legend frame for one legend mode; returns the mode it settled on
// (an inside legend wider than 60% of the plot goes below, as does a direct label block wider than
// 40% of the canvas).
static int layout_pass(LineLayout *L, cairo_t *cr, int mode) {
    for (int attempt = 0; attempt < 6; attempt++) {
        double maxw = L->w - 2 * MARGIN;
        L->leg_w = L->leg_h = 0;
        L->direct_w = 0;
        if (L->n_ent > 0) {
            if (mode == PLOT_LEGEND_BELOW) {
                double widest = wrap_entries(L, cr, maxw - LEG_SAMPLE - 8, LEG_SAMPLE) + LEG_SAMPLE + 8;
                L->leg_colw = widest + 28;
                L->leg_cols = (int)fmax(1, fmin(L->n_ent, floor((maxw + 28) / L->leg_colw)));
                int rows = (L->n_ent + L->leg_cols - 1) / L->leg_cols;
                L->leg_w = L->leg_cols * L->leg_colw - 28;
                L->leg_h = 0;
                for (int r = 0; r < rows; r++) L->leg_h += legend_row_h(L, r, L->leg_cols) + (r ? LEG_ROW - LEG_FONT : 0);
            } else if (mode == PLOT_LEGEND_DIRECT) {
                L->direct_w = wrap_entries(L, cr, DIRECT_MAX_W, DIRECT_SAMPLE) + DIRECT_SAMPLE + 6 + 14;
                if (L->direct_w > 0.4 * L->w) { mode = PLOT_LEGEND_BELOW; continue; }
            } else {
                double widest = wrap_entries(L, cr, 0.55 * maxw, LEG_SAMPLE) + LEG_SAMPLE + 8;
                L->leg_w = widest + 2 * LEG_PAD;
                L->leg_h = 2 * LEG_PAD;
                for (int e = 0; e < L->n_ent; e++) L->leg_h += L->ent[e].lh + (e ? LEG_ROW - LEG_FONT : 0);
            }
        }
        L->y0 = MARGIN + L->head_h + (L->head_h > 0 ? 22 : 6);
        double bottom = L->h - MARGIN;
        if (L->note_h > 0) bottom -= L->note_h + 12;
        if (mode == PLOT_LEGEND_BELOW && L->leg_h > 0) {
            L->leg_y = bottom - L->leg_h;
            bottom = L->leg_y - 14;
        }
        if (L->xlabel[0]) {
            L->xlabel_y = bottom - LABEL_FONT * CAP_HEIGHT - 3;
            bottom = L->xlabel_y - 10;
        }
        L->y1 = bottom - 9 - TICK_FONT;   // tick labels hang 9 pt below the axis
        if (L->y1 - L->y0 < 220) {        // too little room for the plot: grow the canvas
            L->h += 220 - (L->y1 - L->y0);
            continue;
        }
        axis_setup(&L->ay, cr, L->ymin, L->ymax, L->fit_y, L->y1 - L->y0, 0);
        L->x0 = MARGIN + (L->ylabel[0] ? LABEL_FONT + 12 : 0) + axis_max_label_width(&L->ay, cr) + 10;
        L->x1 = L->w - MARGIN - 16 - L->direct_w;
        axis_setup(&L->ax, cr, L->xmin, L->xmax, L->fit_x, L->x1 - L->x0, 1);
        // the last x label is centred on its tick: keep it on the canvas
        if (L->ax.n_major > 0 && mode != PLOT_LEGEND_DIRECT) {
            char lab[64];
            plot_font(cr, TICK_FONT, 0);
            double half = plot_text_width(cr, plot_format_tick(lab, sizeof lab, L->ax.major[L->ax.n_major - 1], L->ax.fmt)) / 2;
            double xr = L->x0 + axis_frac(&L->ax, L->ax.major[L->ax.n_major - 1]) * (L->x1 - L->x0);
            if (xr + half > L->w - 6) L->x1 -= xr + half - (L->w - 6);
        }
        if (mode != PLOT_LEGEND_BELOW && mode != PLOT_LEGEND_DIRECT && L->leg_w > 0.6 * (L->x1 - L->x0)) {
            mode = PLOT_LEGEND_BELOW;
            continue;
        }
        break;
    }
    if (mode == PLOT_LEGEND_BELOW) {
        L->leg_x = (L->x0 + L->x1) / 2 - L->leg_w / 2;
        if (L->leg_x + L->leg_w > L->w - MARGIN) L->leg_x = L->w - MARGIN - L->leg_w;
        if (L->leg_x < MARGIN) L->leg_x = MARGIN;
    }
    return mode;
}

static PlotBox legend_box_at(const LineLayout *L, int pos) {
    double inset = 10;
    double x = pos == PLOT_LEGEND_TOP_LEFT || pos == PLOT_LEGEND_BOTTOM_LEFT ? L->x0 + inset : L->x1 - inset - L->leg_w;
    double y = pos == PLOT_LEGEND_BOTTOM_RIGHT || pos == PLOT_LEGEND_BOTTOM_LEFT ? L->y1 - inset - L->leg_h : L->y0 + inset;
    return (PlotBox){x, y, x + L->leg_w, y + L->leg_h};
}

// A label of text at one of several candidate anchors: the first that stays inside the plot and covers
// neither data nor another label; the first candidate when none is free.
static void place_label(LineLayout *L, cairo_t *cr, const char *text, double size, int italic, unsigned hex,
                        const double (*cand)[3], int n_cand, int skip_series, int skip_ref) {
    if (L->n_lab >= MAX_LABELS || !text || !*text) return;
    Label *lb = &L->lab[L->n_lab];
    snprintf(lb->text, sizeof lb->text, "%s", text);
    lb->size = size;
    lb->italic = italic;
    lb->hex = hex;
    plot_font(cr, size, italic ? PLOT_ITALIC : 0);
    double tw = plot_text_width(cr, text), th = size * CAP_HEIGHT;
    // the first candidate inside the plot that covers nothing; else the first that covers no other label;
    // else the first inside the plot; else the first, moved into the plot
    int chosen = -1, free_of_labels = -1, inside = -1;
    for (int k = 0; k < n_cand && chosen < 0; k++) {
        double x = cand[k][0] - cand[k][2] * tw, y = cand[k][1];
        PlotBox b = {x - 2, y - 2, x + tw + 2, y + th + 3};
        if (b.x0 < L->x0 || b.x1 > L->x1 + 2 || b.y0 < L->y0 - 2 || b.y1 > L->y1) continue;
        if (inside < 0) inside = k;
        int on_label = 0;
        for (int j = 0; j < L->n_lab; j++) on_label |= plot_box_overlap(&L->lab[j].box, &b);
        if (!on_label && free_of_labels < 0) free_of_labels = k;
        if (!box_hits_data(L, &b, skip_series, skip_ref)) chosen = k;
    }
    if (chosen < 0) chosen = free_of_labels >= 0 ? free_of_labels : inside;
    lb->ax = cand[chosen < 0 ? 0 : chosen][2];
    lb->x = cand[chosen < 0 ? 0 : chosen][0];
    lb->y = cand[chosen < 0 ? 0 : chosen][1];
    if (chosen < 0) {
        lb->x = fmax(L->x0 + 2 + lb->ax * tw, fmin(L->x1 - (1 - lb->ax) * tw, lb->x));
        lb->y = fmax(L->y0 + 2, fmin(L->y1 - th - 3, lb->y));
    }
    double x = lb->x - lb->ax * tw;
    lb->box = (PlotBox){x - 2, lb->y - 2, x + tw + 2, lb->y + th + 3};
    L->n_lab++;
}

static void place_ref_and_limit_labels(LineLayout *L, cairo_t *cr) {
    const LineChart *c = L->c;
    L->n_lab = 0;
    L->n_limits = 0;
    double th = REF_FONT * CAP_HEIGHT;
    for (int k = 0; k < c->n_refs; k++) {
        const PlotRef *f = &c->refs[k];
        double cand[4][3];
        if (f->n > 0) {
            int i = f->n - 1;
            while (i > 0 && !point_ok(L, f->x[i], f->y[i])) i--;
            if (!point_ok(L, f->x[i], f->y[i])) continue;
            double X = fmin(sx(L, f->x[i]), L->x1 - 4), Y = sy(L, f->y[i]);
            double c4[4][3] = {{X, Y - th - 6, 1}, {X, Y + 6, 1}, {L->x0 + 4, sy(L, f->y[0]) - th - 6, 0},
                               {L->x0 + 4, sy(L, f->y[0]) + 6, 0}};
            memcpy(cand, c4, sizeof cand);
        } else if (f->vertical) {
            if (!point_ok(L, f->value, L->ay.lo)) continue;
            double X = sx(L, f->value);
            double c4[4][3] = {{X + 5, L->y0 + 4, 0}, {X - 5, L->y0 + 4, 1}, {X + 5, L->y1 - th - 6, 0},
                               {X - 5, L->y1 - th - 6, 1}};
            memcpy(cand, c4, sizeof cand);
        } else {
            if (!point_ok(L, L->ax.lo, f->value)) continue;
            double Y = sy(L, f->value);
            double c4[4][3] = {{L->x1 - 4, Y - th - 5, 1}, {L->x1 - 4, Y + 5, 1}, {L->x0 + 4, Y - th - 5, 0},
                               {L->x0 + 4, Y + 5, 0}};
            memcpy(cand, c4, sizeof cand);
        }
        place_label(L, cr, f->label, REF_FONT, 1, 0x444444, (const double (*)[3])cand, 4, -1, k);
    }
    for (int s = 0; s < L->ns; s++) {
        const SeriesPts *p = &L->pts[s];
        const PlotSeries *ps = &c->series[s];
        if (!p->cut || !point_ok(L, p->end_x, p->end_y)) continue;
        L->n_limits++;
        double X = sx(L, p->end_x), Y = sy(L, p->end_y), t = LIMIT_FONT * CAP_HEIGHT;
        double cand[6][3] = {{X, Y - t - 12, 0.5}, {X - 6, Y - t - 12, 1}, {X + 6, Y - t - 12, 0},
                             {X + 8, Y - t / 2, 0}, {X - 8, Y - t / 2, 1}, {X, Y + 12, 0.5}};
        // one label per model: a twin of the same colour ending at the same place (the model counted
        // another way) shares the label of the first
        int twin = 0;
        for (int t = 0; t < s && !twin; t++)
            twin = L->pts[t].cut && c->series[t].x_limit == ps->x_limit &&
                   palette_index(c->series[t].color) == palette_index(ps->color);
        if (twin) continue;
        double rgb[3];
        palette_rgb(ps->color, rgb);
        // the label in the series' colour, darkened so light colours stay readable as text
        unsigned hex = ((unsigned)(rgb[0] * 200) << 16) | ((unsigned)(rgb[1] * 200) << 8) | (unsigned)(rgb[2] * 200);
        place_label(L, cr, ps->limit_label && *ps->limit_label ? ps->limit_label : "max", LIMIT_FONT, 0, hex,
                    (const double (*)[3])cand, 6, s, -1);
    }
}

// Direct labels: each entry's label block at the right of the plot, as close to its line's end as
// possible, stacked top to bottom so that no two overlap.
static void place_direct(LineLayout *L) {
    int order[MAXS];
    for (int e = 0; e < L->n_ent; e++) {
        Entry *E = &L->ent[e];
        const SeriesPts *p = &L->pts[E->member[E->n - 1]];
        E->anchor_y = (L->y0 + L->y1) / 2;
        for (int i = p->n - 1; i >= 0; i--)
            if (point_ok(L, p->x[i], p->y[i])) { E->anchor_y = sy(L, p->y[i]); break; }
        order[e] = e;
    }
    for (int i = 1; i < L->n_ent; i++)   // insertion sort by anchor, stable
        for (int j = i; j > 0 && L->ent[order[j]].anchor_y < L->ent[order[j - 1]].anchor_y; j--) {
            int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
        }
    const double gap = 5;
    double prev = -INFINITY;
    for (int i = 0; i < L->n_ent; i++) {
        Entry *E = &L->ent[order[i]];
        E->label_y = fmax(E->anchor_y - E->lh / 2, prev + gap);
        prev = E->label_y + E->lh;
    }
    // pushed past the bottom: shift the stack up from the bottom, never above the canvas's plot top
    double limit = L->y1 + 8;
    for (int i = L->n_ent - 1; i >= 0; i--) {
        Entry *E = &L->ent[order[i]];
        if (E->label_y + E->lh > limit) E->label_y = limit - E->lh;
        limit = E->label_y - gap;
    }
}

static void line_layout(LineLayout *L, const LineChart *c, cairo_t *cr) {
    memset(L, 0, sizeof *L);
    L->c = c;
    L->ent = callocCheck(MAXS, sizeof(Entry));
    L->w = c->width > 0 ? c->width : 900;
    L->h = c->height > 0 ? c->height : 560;
    L->ns = c->n_series;
    for (int s = 0; s < L->ns; s++) cut_series(&L->pts[s], &c->series[s]);
    // the data's extent (lines, spreads, references), then which axes may be logarithmic
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    double pxmin = INFINITY, pxmax = -INFINITY, pymin = INFINITY, pymax = -INFINITY;   // positive only
    for (int s = 0; s < L->ns; s++) {
        const SeriesPts *p = &L->pts[s];
        for (int i = 0; i < p->n; i++) {
            if (!isfinite(p->x[i]) || !isfinite(p->y[i])) continue;
            extend(&xmin, &xmax, p->x[i]);
            if (p->x[i] > 0) extend(&pxmin, &pxmax, p->x[i]);
            double ys[3] = {p->y[i], p->lo ? p->lo[i] : NAN, p->hi ? p->hi[i] : NAN};
            for (int k = 0; k < 3; k++) {
                extend(&ymin, &ymax, ys[k]);
                if (ys[k] > 0) extend(&pymin, &pymax, ys[k]);
            }
        }
    }
    for (int k = 0; k < c->n_refs; k++) {
        const PlotRef *f = &c->refs[k];
        for (int i = 0; i < f->n; i++) {
            extend(&xmin, &xmax, f->x[i]);
            extend(&ymin, &ymax, f->y[i]);
            if (f->y[i] > 0) extend(&pymin, &pymax, f->y[i]);
        }
        if (f->n == 0 && f->vertical) { extend(&xmin, &xmax, f->value); if (f->value > 0) extend(&pxmin, &pxmax, f->value); }
        if (f->n == 0 && !f->vertical) { extend(&ymin, &ymax, f->value); if (f->value > 0) extend(&pymin, &pymax, f->value); }
    }
    L->fit_x = !(c->xmin < c->xmax);
    L->fit_y = !(c->ymin < c->ymax);
    // a log axis is granted when asked and the data (or the given range) span PLOT_LOG_MIN_RATIO
    double lx0 = L->fit_x ? pxmin : c->xmin, lx1 = L->fit_x ? pxmax : c->xmax;
    double ly0 = L->fit_y ? pymin : c->ymin, ly1 = L->fit_y ? pymax : c->ymax;
    L->ax.log = c->logx && lx0 > 0 && lx1 / lx0 >= PLOT_LOG_MIN_RATIO;
    L->ay.log = c->logy && ly0 > 0 && ly1 / ly0 >= PLOT_LOG_MIN_RATIO;
    if (L->ax.log) { xmin = pxmin; xmax = pxmax; }
    if (L->ay.log) { ymin = pymin; ymax = pymax; }
    if (!L->fit_x) { xmin = c->xmin; xmax = c->xmax; }
    if (!L->fit_y) { ymin = c->ymin; ymax = c->ymax; }
    L->xmin = xmin; L->xmax = xmax; L->ymin = ymin; L->ymax = ymax;
    L->ax.fmt = c->xfmt;
    L->ay.fmt = c->yfmt;
    axis_label_text(L->xlabel, sizeof L->xlabel, c->xlabel, L->ax.log);
    axis_label_text(L->ylabel, sizeof L->ylabel, c->ylabel, L->ay.log);
    CHECK(!is_accuracy_chart(c->ylabel) || c->n_refs > 0,
          "figure '%s' plots accuracy without a reference line (chance)", c->title ? c->title : "");

    double maxw = L->w - 2 * MARGIN;
    L->head_h = plot_title_block_fit(cr, c->title, c->subtitle, 0, 0, maxw, 0, &L->title_fits, &L->subtitle_fits);
    L->note_h = plot_note_block(cr, c->note, 0, 0, maxw, 0);
    int mode = c->legend_pos >= 0 && c->legend_pos <= PLOT_LEGEND_BOTTOM_LEFT ? c->legend_pos : 0;
    // one legend entry per series to find the axes, then coinciding series merged, then the final layout
    build_entries(L, 0);
    mode = layout_pass(L, cr, mode);
    int requested = mode;
    for (int pass = 0; pass < 3; pass++) {
        int n_before = L->n_ent;
        build_entries(L, 1);   // merged by the current axes; the layout then wraps the merged entries
        mode = layout_pass(L, cr, requested);
        if (pass > 0 && L->n_ent == n_before) break;
    }
    if (mode == PLOT_LEGEND_DIRECT) {
        // direct labels sit at the right edge: every line must reach it, else they go below
        for (int e = 0; e < L->n_ent && mode == PLOT_LEGEND_DIRECT; e++) {
            const SeriesPts *p = &L->pts[L->ent[e].member[0]];
            double last = -INFINITY;
            for (int i = 0; i < p->n; i++)
                if (point_ok(L, p->x[i], p->y[i])) last = fmax(last, sx(L, p->x[i]));
            if (last < L->x1 - 0.02 * (L->x1 - L->x0)) mode = layout_pass(L, cr, PLOT_LEGEND_BELOW);
        }
    }
    place_ref_and_limit_labels(L, cr);
    if (mode != PLOT_LEGEND_BELOW && mode != PLOT_LEGEND_DIRECT && L->n_ent > 0) {
        // an inside legend goes to the first corner where it covers nothing: asked, then TL, TR, BR, BL
        static const int corners[4] = {PLOT_LEGEND_TOP_LEFT, PLOT_LEGEND_TOP_RIGHT, PLOT_LEGEND_BOTTOM_RIGHT,
                                       PLOT_LEGEND_BOTTOM_LEFT};
        int found = -1;
        for (int k = -1; k < 4 && found < 0; k++) {
            int pos = k < 0 ? mode : corners[k];
            PlotBox b = legend_box_at(L, pos);
            if (!box_hits_data(L, &b, -1, -1)) found = pos;
        }
        if (found >= 0) {
            mode = found;
            PlotBox b = legend_box_at(L, mode);
            L->leg_x = b.x0;
            L->leg_y = b.y0;
        } else {
            mode = layout_pass(L, cr, PLOT_LEGEND_BELOW);
            place_ref_and_limit_labels(L, cr);
        }
    }
    L->legend_pos = mode;
    if (mode == PLOT_LEGEND_DIRECT) place_direct(L);
    // the y label shrinks when it is longer than the plot is tall
    plot_font(cr, LABEL_FONT, 0);
    double tw = plot_text_width(cr, L->ylabel), room = L->y1 - L->y0 + 20;
    L->ylabel_size = tw > room ? LABEL_FONT * room / tw : LABEL_FONT;
}

static void line_layout_free(LineLayout *L) {
    for (int s = 0; s < L->ns; s++) {
        free(L->pts[s].x);
        free(L->pts[s].y);
        free(L->pts[s].lo);
        free(L->pts[s].hi);
    }
    free(L->ent);
}

// ---- drawing -------------------------------------------------------------------------------------------
static void legend_sample(cairo_t *cr, const LineLayout *L, const Entry *E, double x, double ym, double len) {
    for (int k = 0; k < E->n; k++) {
        int s = E->member[k];
        const PlotSeries *ps = &L->c->series[s];
        if (ps->ylo && ps->yhi && !ps->error_bars) {
            double rgb[3];
            palette_rgb(ps->color, rgb);
            cairo_set_source_rgba(cr, rgb[0], rgb[1], rgb[2], 0.2);
            cairo_rectangle(cr, x, ym - 6, len, 12);
            cairo_fill(cr);
        }
        series_style(cr, L, s);
        cairo_move_to(cr, x, ym);
        cairo_line_to(cr, x + len, ym);
        cairo_stroke(cr);
    }
    for (int k = 0; k < E->n; k++) {
        const PlotSeries *ps = &L->c->series[E->member[k]];
        if (ps->markers) {
            marker(cr, ps->color, x + len / 2, ym);
            break;
        }
    }
}

static void draw_legend(cairo_t *cr, const LineLayout *L) {
    if (L->n_ent == 0) return;
    if (L->legend_pos == PLOT_LEGEND_DIRECT) {
        for (int e = 0; e < L->n_ent; e++) {
            const Entry *E = &L->ent[e];
            double xs = L->x1 + 14, ym = E->label_y + LEG_FONT * CAP_HEIGHT / 2;
            // a leader from the line's end when the label had to move
            if (fabs(ym - E->anchor_y) > 2) {
                plot_set_hex(cr, 0x999999);
                cairo_set_line_width(cr, 0.8);
                cairo_set_dash(cr, NULL, 0, 0);
                cairo_move_to(cr, L->x1 + 2, E->anchor_y);
                cairo_line_to(cr, xs - 2, ym);
                cairo_stroke(cr);
            }
            legend_sample(cr, L, E, xs, ym, DIRECT_SAMPLE);
            plot_font(cr, LEG_FONT, 0);
            set_rgb(cr, 0x222222);
            for (int k = 0; k < E->n_lines; k++)
                plot_text(cr, xs + DIRECT_SAMPLE + 6, E->label_y + k * LEG_LINE, 0, 0, E->lines[k]);
        }
        return;
    }
    int below = L->legend_pos == PLOT_LEGEND_BELOW;
    if (!below) {
        cairo_rectangle(cr, L->leg_x, L->leg_y, L->leg_w, L->leg_h);
        cairo_set_source_rgba(cr, 1, 1, 1, 0.92);
        cairo_fill_preserve(cr);
        set_rgb(cr, 0xCCCCCC);
        cairo_set_line_width(cr, 1.0);
        cairo_set_dash(cr, NULL, 0, 0);
        cairo_stroke(cr);
    }
    double pad = below ? 0 : LEG_PAD;
    int cols = below ? L->leg_cols : 1;
    double row_top = L->leg_y + pad;
    for (int e = 0; e < L->n_ent; e++) {
        int col = e % cols;
        if (col == 0 && e > 0) row_top += legend_row_h(L, e / cols - 1, cols) + LEG_ROW - LEG_FONT;
        const Entry *E = &L->ent[e];
        double x = L->leg_x + pad + col * L->leg_colw;
        double ym = row_top + LEG_FONT / 2;   // middle of the entry's first line
        legend_sample(cr, L, E, x, ym, LEG_SAMPLE);
        plot_font(cr, LEG_FONT, 0);
        set_rgb(cr, 0x222222);
        for (int k = 0; k < E->n_lines; k++) plot_text(cr, x + LEG_SAMPLE + 8, ym + k * LEG_LINE, 0, 0.5, E->lines[k]);
    }
}

static void stroke_poly(cairo_t *cr, const LineLayout *L, const double *x, const double *y, int n) {
    int pen = 0;
    for (int i = 0; i < n; i++) {
        if (!point_ok(L, x[i], y[i])) { pen = 0; continue; }
        if (pen) cairo_line_to(cr, sx(L, x[i]), sy(L, y[i]));
        else cairo_move_to(cr, sx(L, x[i]), sy(L, y[i]));
        pen = 1;
    }
    cairo_stroke(cr);
}

static void draw_line_chart(cairo_t *cr, double w, double h, const void *ctx) {
    const LineLayout *L = ctx;
    const LineChart *c = L->c;
    (void)h;
    plot_title_block(cr, c->title, c->subtitle, MARGIN, MARGIN, w - 2 * MARGIN, 1);
    draw_axes(cr, &L->ax, &L->ay, L->x0, L->x1, L->y0, L->y1, 1, 1);
    cairo_save(cr);
    cairo_rectangle(cr, L->x0 - 1, L->y0 - 1, L->x1 - L->x0 + 2, L->y1 - L->y0 + 2);
    cairo_clip(cr);
    // spreads under everything: a band between ylo and yhi
    for (int s = 0; s < L->ns; s++) {
        const SeriesPts *p = &L->pts[s];
        if (!p->lo || !p->hi || c->series[s].error_bars) continue;
        double rgb[3];
        palette_rgb(c->series[s].color, rgb);
        cairo_set_source_rgba(cr, rgb[0], rgb[1], rgb[2], 0.2);
        int first = 1;
        for (int i = 0; i < p->n; i++) {
            if (!point_ok(L, p->x[i], p->hi[i])) continue;
            if (first) cairo_move_to(cr, sx(L, p->x[i]), sy(L, p->hi[i]));
            else cairo_line_to(cr, sx(L, p->x[i]), sy(L, p->hi[i]));
            first = 0;
        }
        for (int i = p->n - 1; i >= 0; i--)
            if (point_ok(L, p->x[i], p->lo[i])) cairo_line_to(cr, sx(L, p->x[i]), sy(L, p->lo[i]));
        cairo_close_path(cr);
        cairo_fill(cr);
    }
    // references: dotted grey
    for (int k = 0; k < c->n_refs; k++) {
        const PlotRef *f = &c->refs[k];
        static const double dots[2] = {2.5, 3};
        plot_set_hex(cr, 0x555555);
        cairo_set_line_width(cr, 1.5);
        cairo_set_line_cap(cr, CAIRO_LINE_CAP_BUTT);
        cairo_set_dash(cr, dots, 2, 0);
        if (f->n > 0) {
            stroke_poly(cr, L, f->x, f->y, f->n);
        } else if (f->vertical) {
            if (!point_ok(L, f->value, L->ay.lo)) continue;
            cairo_move_to(cr, sx(L, f->value), L->y0);
            cairo_line_to(cr, sx(L, f->value), L->y1);
            cairo_stroke(cr);
        } else {
            if (!point_ok(L, L->ax.lo, f->value)) continue;
            cairo_move_to(cr, L->x0, sy(L, f->value));
            cairo_line_to(cr, L->x1, sy(L, f->value));
            cairo_stroke(cr);
        }
    }
    for (int s = 0; s < L->ns; s++) {
        series_style(cr, L, s);
        stroke_poly(cr, L, L->pts[s].x, L->pts[s].y, L->pts[s].n);
    }
    cairo_restore(cr);
    cairo_set_dash(cr, NULL, 0, 0);
    // whiskers, markers and end markers on top (they may sit on the plot's edge)
    for (int s = 0; s < L->ns; s++) {
        const SeriesPts *p = &L->pts[s];
        const PlotSeries *ps = &c->series[s];
        double rgb[3];
        palette_rgb(ps->color, rgb);
        if (p->lo && p->hi && ps->error_bars)
            for (int i = 0; i < p->n; i++) {
                if (!point_ok(L, p->x[i], p->lo[i]) || !point_ok(L, p->x[i], p->hi[i])) continue;
                double X = sx(L, p->x[i]), ya = sy(L, p->lo[i]), yb = sy(L, p->hi[i]);
                cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
                cairo_set_line_width(cr, 1.4);
                cairo_move_to(cr, X, ya); cairo_line_to(cr, X, yb);
                cairo_move_to(cr, X - 4, ya); cairo_line_to(cr, X + 4, ya);
                cairo_move_to(cr, X - 4, yb); cairo_line_to(cr, X + 4, yb);
                cairo_stroke(cr);
            }
        if (ps->markers)
            for (int i = 0; i < p->n; i++) {
                if (!point_ok(L, p->x[i], p->y[i])) continue;
                double fx = axis_frac(&L->ax, p->x[i]), fy = axis_frac(&L->ay, p->y[i]);
                if (fx < -1e-6 || fx > 1 + 1e-6 || fy < -1e-6 || fy > 1 + 1e-6) continue;
                marker(cr, ps->color, sx(L, p->x[i]), sy(L, p->y[i]));
            }
        if (p->cut && point_ok(L, p->end_x, p->end_y)) {
            // the end of a model's context: a bar across the line's end
            double X = sx(L, p->end_x), Y = sy(L, p->end_y);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_set_line_width(cr, 2.6);
            cairo_set_line_cap(cr, CAIRO_LINE_CAP_BUTT);
            cairo_move_to(cr, X, Y - 7);
            cairo_line_to(cr, X, Y + 7);
            cairo_stroke(cr);
        }
    }
    for (int k = 0; k < L->n_lab; k++) {
        const Label *lb = &L->lab[k];
        plot_font(cr, lb->size, lb->italic ? PLOT_ITALIC : 0);
        plot_set_hex(cr, lb->hex);
        plot_text(cr, lb->x, lb->y, lb->ax, 0, lb->text);
    }
    draw_legend(cr, L);
    plot_font(cr, LABEL_FONT, 0);
    set_rgb(cr, 0x222222);
    if (L->xlabel[0]) plot_text(cr, (L->x0 + L->x1) / 2, L->xlabel_y, 0.5, 0, L->xlabel);
    if (L->ylabel[0]) {
        plot_font(cr, L->ylabel_size, 0);
        cairo_save(cr);
        cairo_translate(cr, MARGIN, (L->y0 + L->y1) / 2);
        cairo_rotate(cr, -M_PI / 2);
        plot_text(cr, 0, 0, 0.5, 0, L->ylabel);
        cairo_restore(cr);
    }
    plot_note_block(cr, c->note, MARGIN, L->h - MARGIN - L->note_h, w - 2 * MARGIN, 1);
}

static void check_line_chart(const LineChart *c) {
    CHECK(c && (c->n_series == 0 || c->series), "line chart without series");
    CHECK(c->n_series <= MAXS, "line chart with %d series (at most %d)", c->n_series, MAXS);
    for (int s = 0; s < c->n_series; s++) {
        const PlotSeries *p = &c->series[s];
        CHECK(p->n == 0 || (p->x && p->y), "series %d has no data", s);
        CHECK(!p->ylo == !p->yhi, "series %d has only one side of its spread", s);
    }
    for (int k = 0; k < c->n_refs; k++) CHECK(c->refs[k].n == 0 || (c->refs[k].x && c->refs[k].y), "reference %d has no data", k);
}

void plot_line_chart(const LineChart *c, const char *path_no_ext, int png, int svg) {
    check_line_chart(c);
    cairo_t *cr = plot_measure_context();
    LineLayout *L = mallocCheck(sizeof *L);
    line_layout(L, c, cr);
    cairo_destroy(cr);
    plot_write_figure_meta(path_no_ext, png, svg, L->w, L->h, draw_line_chart, L, c->title,
                           c->claim ? c->claim : c->subtitle);
    line_layout_free(L);
    free(L);
}

void plot_line_chart_info(const LineChart *c, PlotInfo *info) {
    check_line_chart(c);
    cairo_t *cr = plot_measure_context();
    LineLayout *L = mallocCheck(sizeof *L);
    line_layout(L, c, cr);
    memset(info, 0, sizeof *info);
    info->width = L->w;
    info->height = L->h;
    info->plot = (PlotBox){L->x0, L->y0, L->x1, L->y1};
    info->logx = L->ax.log;
    info->logy = L->ay.log;
    info->xlo = L->ax.lo;
    info->xhi = L->ax.hi;
    info->ylo = L->ay.lo;
    info->yhi = L->ay.hi;
    snprintf(info->xlabel, sizeof info->xlabel, "%s", L->xlabel);
    snprintf(info->ylabel, sizeof info->ylabel, "%s", L->ylabel);
    for (int s = 0; s < L->ns && s < PLOT_INFO_MAX; s++) {
        info->drawn_xmax[s] = NAN;
        for (int i = 0; i < L->pts[s].n; i++)
            if (point_ok(L, L->pts[s].x[i], L->pts[s].y[i]))
                info->drawn_xmax[s] = isnan(info->drawn_xmax[s]) ? L->pts[s].x[i] : fmax(info->drawn_xmax[s], L->pts[s].x[i]);
    }
    info->n_legend = L->n_ent;
    for (int e = 0; e < L->n_ent && e < PLOT_INFO_MAX; e++)
        snprintf(info->legend[e], sizeof info->legend[e], "%s", L->ent[e].text);
    info->legend_pos = L->legend_pos;
    if (L->legend_pos != PLOT_LEGEND_DIRECT && L->n_ent > 0)
        info->legend_box = (PlotBox){L->leg_x, L->leg_y, L->leg_x + L->leg_w, L->leg_y + L->leg_h};
    info->legend_covers_data = L->legend_pos != PLOT_LEGEND_BELOW && L->legend_pos != PLOT_LEGEND_DIRECT &&
                               L->n_ent > 0 && box_hits_data(L, &info->legend_box, -1, -1);
    for (int k = 0; k < L->n_lab && info->n_labels < PLOT_INFO_MAX; k++) info->labels[info->n_labels++] = L->lab[k].box;
    if (L->legend_pos == PLOT_LEGEND_DIRECT)
        for (int e = 0; e < L->n_ent && info->n_labels < PLOT_INFO_MAX; e++) {
            const Entry *E = &L->ent[e];
            double x = L->x1 + 14;
            info->labels[info->n_labels++] = (PlotBox){x, E->label_y, x + DIRECT_SAMPLE + 6 + E->lw, E->label_y + E->lh};
        }
    info->n_limits = L->n_limits;
    info->title_fits = L->title_fits;
    info->subtitle_fits = L->subtitle_fits;
    double m = fmin(fmin(TICK_FONT, NOTE_FONT), L->ylabel_size);
    if (L->n_ent > 0) m = fmin(m, LEG_FONT);
    if (L->n_lab > 0) m = fmin(m, L->n_limits ? LIMIT_FONT : REF_FONT);
    m = fmin(m, title_min_font(cr, c->title, c->subtitle, L->w - 2 * MARGIN));
    info->min_text_px = m * DISPLAY_PX / L->w;
    cairo_destroy(cr);
    line_layout_free(L);
    free(L);
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
    int title_fits, subtitle_fits;
    char xlabel[512];
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

// Where a bar's drawing ends on the value axis: the bar, or its whisker when that reaches further.
static double bar_reach(const BarChart *c, int i) {
    double v = c->values[i];
    if (c->hi && isfinite(c->hi[i]) && c->hi[i] > v) v = c->hi[i];
    return v;
}

static void bar_layout(BarLayout *L, const BarChart *c, cairo_t *cr) {
    memset(L, 0, sizeof *L);
    L->c = c;
    L->w = c->width > 0 ? c->width : 900;
    double maxw = L->w - 2 * MARGIN;
    L->head_h = plot_title_block_fit(cr, c->title, c->subtitle, 0, 0, maxw, 0, &L->title_fits, &L->subtitle_fits);
    L->note_h = plot_note_block(cr, c->note, 0, 0, maxw, 0);
    CHECK(!is_accuracy_chart(c->xlabel) || c->n_refs > 0,
          "figure '%s' plots accuracy without a reference line (chance)", c->title ? c->title : "");
    double lab_w = 0, val_w = 0, vmin = INFINITY, vmax = -INFINITY;
    char buf[64];
    for (int i = 0; i < c->n; i++) {
        plot_font(cr, BAR_LABEL_FONT, 0);
        lab_w = fmax(lab_w, plot_text_width(cr, c->labels[i]));
        plot_font(cr, TICK_FONT, PLOT_BOLD);
        bar_value_label(buf, sizeof buf, c, c->values[i]);
        val_w = fmax(val_w, plot_text_width(cr, buf));
        double ends[3] = {c->values[i], c->lo ? c->lo[i] : NAN, c->hi ? c->hi[i] : NAN};
        for (int k = 0; k < 3; k++)
            if (isfinite(ends[k]) && (!c->logx || ends[k] > 0)) extend(&vmin, &vmax, ends[k]);
    }
    for (int k = 0; k < c->n_refs; k++)
        if (!c->logx || c->refs[k].value > 0) extend(&vmin, &vmax, c->refs[k].value);
    L->y0 = MARGIN + L->head_h + (L->head_h > 0 ? 20 : 6);
    if (c->n_refs > 0) L->y0 += REF_FONT + 6;   // room for the reference labels above the bars
    L->y1 = L->y0 + c->n * BAR_PITCH + 6;
    double bottom = L->y1 + 9 + TICK_FONT;
    axis_label_text(L->xlabel, sizeof L->xlabel, c->xlabel, 0);
    if (L->xlabel[0]) {
        L->xlabel_y = bottom + 10;
        bottom = L->xlabel_y + LABEL_FONT;
    }
    if (L->note_h > 0) bottom += 14 + L->note_h;
    L->h = c->height > 0 ? fmax(c->height, bottom + MARGIN) : bottom + MARGIN;
    L->x0 = MARGIN + lab_w + 12;
    L->x1 = L->w - MARGIN - val_w - 12 - (c->hi ? 8 : 0);
    L->ax.fmt = c->fmt;
    if (!(vmin <= vmax)) { vmin = 0; vmax = 1; }
    // a log value axis only when asked and the values span PLOT_LOG_MIN_RATIO
    L->ax.log = c->logx && vmin > 0 && vmax / vmin >= PLOT_LOG_MIN_RATIO;
    axis_label_text(L->xlabel, sizeof L->xlabel, c->xlabel, L->ax.log);
    if (!L->ax.log) {
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

static double bar_x(const BarLayout *L, double v) {
    return L->x0 + fmax(0, fmin(1, axis_frac(&L->ax, v))) * (L->x1 - L->x0);
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
        if (!isfinite(v) || (L->ax.log && v <= 0)) continue;
        double rgb[3];
        palette_rgb(c->colors ? c->colors[i] : COLOR_OTHER, rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        double x0 = L->ax.log ? L->x0 : bar_x(L, 0), xe = bar_x(L, v);
        cairo_rectangle(cr, fmin(x0, xe), yt, fabs(xe - x0), BAR_H);
        cairo_fill(cr);
        double xr = xe;
        if (c->lo && c->hi && isfinite(c->lo[i]) && isfinite(c->hi[i])) {
            double xa = bar_x(L, c->lo[i]), xb = bar_x(L, c->hi[i]);
            set_rgb(cr, 0x222222);
            cairo_set_line_width(cr, 1.4);
            cairo_move_to(cr, xa, ym); cairo_line_to(cr, xb, ym);
            cairo_move_to(cr, xa, ym - 6); cairo_line_to(cr, xa, ym + 6);
            cairo_move_to(cr, xb, ym - 6); cairo_line_to(cr, xb, ym + 6);
            cairo_stroke(cr);
            xr = bar_x(L, bar_reach(c, i));
        }
        plot_font(cr, TICK_FONT, PLOT_BOLD);
        set_rgb(cr, 0x222222);
        bar_value_label(buf, sizeof buf, c, v);
        if (xe >= x0) plot_text(cr, xr + 6, ym, 0, 0.5, buf);
        else plot_text(cr, xe - 6, ym, 1, 0.5, buf);   // a negative bar: its label on the left
    }
    // vertical references over the bars, labelled above them
    for (int k = 0; k < c->n_refs; k++) {
        const PlotRef *f = &c->refs[k];
        if (L->ax.log && f->value <= 0) continue;
        double X = bar_x(L, f->value);
        static const double dots[2] = {2.5, 3};
        plot_set_hex(cr, 0x555555);
        cairo_set_line_width(cr, 1.5);
        cairo_set_dash(cr, dots, 2, 0);
        cairo_move_to(cr, X, L->y0 - 2);
        cairo_line_to(cr, X, L->y1);
        cairo_stroke(cr);
        cairo_set_dash(cr, NULL, 0, 0);
        plot_font(cr, REF_FONT, PLOT_ITALIC);
        plot_set_hex(cr, 0x444444);
        double tw = plot_text_width(cr, f->label);
        // right of the line, unless that runs past the axis or into the label of a reference further right
        int right = X + tw + 4 <= L->x1;
        for (int j = 0; j < c->n_refs; j++) {
            double Xj = bar_x(L, c->refs[j].value);
            if (j != k && Xj > X && X + tw + 8 > Xj) right = 0;
        }
        plot_text(cr, right ? X + 4 : X - 4, L->y0 - REF_FONT - 4, right ? 0 : 1, 0, f->label);
    }
    // the value axis's spine is drawn by draw_axes; redraw the left one over the bars
    set_rgb(cr, 0x444444);
    cairo_set_line_width(cr, 1.2);
    cairo_move_to(cr, L->x0, L->y0);
    cairo_line_to(cr, L->x0, L->y1);
    cairo_stroke(cr);
    plot_font(cr, LABEL_FONT, 0);
    set_rgb(cr, 0x222222);
    if (L->xlabel[0]) plot_text(cr, (L->x0 + L->x1) / 2, L->xlabel_y, 0.5, 0, L->xlabel);
    plot_note_block(cr, c->note, MARGIN, L->h - MARGIN - L->note_h, w - 2 * MARGIN, 1);
}

static void check_bar_chart(const BarChart *c) {
    CHECK(c && (c->n == 0 || (c->labels && c->values)), "bar chart without data");
    CHECK(!c->lo == !c->hi, "bar chart with only one side of its spread");
}

void plot_bar_chart(const BarChart *c, const char *path_no_ext, int png, int svg) {
    check_bar_chart(c);
    cairo_t *cr = plot_measure_context();
    BarLayout L;
    bar_layout(&L, c, cr);
    cairo_destroy(cr);
    plot_write_figure_meta(path_no_ext, png, svg, L.w, L.h, draw_bar_chart, &L, c->title,
                           c->claim ? c->claim : c->subtitle);
}

void plot_bar_chart_info(const BarChart *c, PlotInfo *info) {
    check_bar_chart(c);
    cairo_t *cr = plot_measure_context();
    BarLayout L;
    bar_layout(&L, c, cr);
    memset(info, 0, sizeof *info);
    info->width = L.w;
    info->height = L.h;
    info->plot = (PlotBox){L.x0, L.y0, L.x1, L.y1};
    info->logx = L.ax.log;
    info->title_fits = L.title_fits;
    info->subtitle_fits = L.subtitle_fits;
    double m = fmin(fmin(TICK_FONT, NOTE_FONT), c->n_refs ? REF_FONT : LABEL_FONT);
    m = fmin(m, title_min_font(cr, c->title, c->subtitle, L.w - 2 * MARGIN));
    info->min_text_px = m * DISPLAY_PX / L.w;
    cairo_destroy(cr);
}
