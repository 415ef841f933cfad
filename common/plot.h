// plot.h: line charts and bar charts with cairo. One drawing function per figure; the same code
// writes SVG and PNG (the caller picks which through the png/svg flags, usually from --format).
//
// Colours: one colour-blind safe palette (Okabe-Ito), and one fixed colour per mechanism so MHA is the
// same blue in every chapter's figures.
#pragma once

typedef enum {
    COLOR_MHA = 0, COLOR_GQA, COLOR_MQA, COLOR_MLA, COLOR_SWA, COLOR_DSA, COLOR_LINEAR, COLOR_OTHER,
    COLOR_COUNT
} PaletteColor;
// RGB in [0,1] of a palette entry (index taken modulo COLOR_COUNT).
void palette_rgb(int color, double rgb[3]);

typedef enum { AXIS_PLAIN = 0, AXIS_BYTES = 1, AXIS_TOKENS = 2 } AxisFormat;
// AXIS_BYTES labels ticks 1 KiB, 4 MiB, 2 GiB; AXIS_TOKENS labels 1K, 32K, 1M (powers of two, K=1024).

typedef struct {
    const char *label;     // legend text (may carry the exact number: "Llama 3 8B: 128 KiB/token")
    const double *x, *y;   // n points
    int n;
    int color;             // PaletteColor (or any index)
    int dashed;            // 1: dashed line (e.g. "the same model counted as MHA")
    int markers;           // 1: draw a dot at each point
} PlotSeries;

typedef struct {
    const char *title;
    const char *subtitle;  // smaller line under the title (may be NULL)
    const char *xlabel, *ylabel;   // with units: "context length (tokens)", "KV cache (bytes, bf16)"
    int logx, logy;
    AxisFormat xfmt, yfmt;
    double xmin, xmax, ymin, ymax; // all zero: fit the data
    const PlotSeries *series;
    int n_series;
    const char *note;      // footnote under the plot (may be NULL)
    int legend_pos;        // 0 top-left, 1 top-right, 2 bottom-right, 3 below the plot
    int width, height;     // pixels/points; 0: 900 x 560
} LineChart;

// Writes PATH_NO_EXT.svg and/or PATH_NO_EXT.png atomically (temp file + rename).
void plot_line_chart(const LineChart *c, const char *path_no_ext, int png, int svg);

// Horizontal bar chart: one bar per label, value printed at the bar's end (formatted with yfmt).
typedef struct {
    const char *title, *subtitle, *xlabel;
    const char **labels;
    const double *values;
    const int *colors;     // PaletteColor per bar (NULL: all COLOR_OTHER)
    int n;
    AxisFormat fmt;
    int logx;
    const char *note;
    int width, height;
} BarChart;
void plot_bar_chart(const BarChart *c, const char *path_no_ext, int png, int svg);

// Tick helpers (exposed for tests): "nice" linear ticks covering [lo,hi]; returns the count (<= cap).
int plot_nice_ticks(double lo, double hi, double *ticks, int cap);
// Formats a tick value per AxisFormat into buf.
const char *plot_format_tick(char *buf, int cap, double v, AxisFormat fmt);

// ---- shared by plot.c and heatmap.c (and any figure with its own drawing function) ----------------
#include <cairo.h>

// A figure is one function that draws on cr over a width x height canvas (points). The same function
// draws the SVG and the PNG: plot_write_figure calls it once per requested format, on a surface the
// caller never sees (SVG in px units; PNG at 2x, less when that would pass ~2400 px wide), and writes
// PATH_NO_EXT.svg / .png atomically. Output bytes do not depend on what the process drew before.
typedef void (*PlotDrawFn)(cairo_t *cr, double width, double height, const void *ctx);
void plot_write_figure(const char *path_no_ext, int png, int svg, double width, double height,
                       PlotDrawFn draw, const void *ctx);

// A context for measuring text before the canvas size is known (same font settings as the real
// surfaces, so measured widths match what is drawn). Free with cairo_destroy.
cairo_t *plot_measure_context(void);

// Text in the figures' one font, DejaVu Sans. style: 0, or PLOT_BOLD | PLOT_ITALIC.
enum { PLOT_BOLD = 1, PLOT_ITALIC = 2 };
void plot_font(cairo_t *cr, double size, int style);
double plot_text_width(cairo_t *cr, const char *s);
// Draws s so that its anchor sits at (x, y): ax 0 / 0.5 / 1 = left / centre / right edge,
// ay 0 / 0.5 / 1 = top of capitals / middle of capitals / baseline.
void plot_text(cairo_t *cr, double x, double y, double ax, double ay, const char *s);
// Greedy word wrap of s into lines at most maxw wide, from top y, line_h apart; draws when draw != 0
// (left-aligned at x). Returns the block's height (0 for NULL or empty s).
double plot_text_wrapped(cairo_t *cr, const char *s, double x, double y, double maxw, double line_h,
                         int draw);
// The figures' title (bold 18) and optional subtitle (13, grey), wrapped to maxw with the top of the
// first line at y; and the footnote (11, italic grey). Both return their height, drawing when draw.
double plot_title_block(cairo_t *cr, const char *title, const char *subtitle, double x, double y, double maxw,
                        int draw);
double plot_note_block(cairo_t *cr, const char *note, double x, double y, double maxw, int draw);
