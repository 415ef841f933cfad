// plot.h: line charts and bar charts with cairo. One drawing function per figure; the same code
// writes SVG and PNG (the caller picks which through the png/svg flags, usually from --format).
//
// The rules every chart gets from the toolkit, not from each figure:
//  - one colour per mechanism (PaletteColor), the same in every chapter;
//  - series that coincide within a line width share one legend entry ("A = B") and are drawn as one
//    line of alternating dashes in their colours, so no legend entry promises a line nobody can see;
//  - a legend inside the plot never covers data: it moves to a free corner, or below the plot;
//  - direct labels at the line ends (PLOT_LEGEND_DIRECT) are stacked so that no two overlap;
//  - a series with x_limit (a model's max_position_embeddings) stops there, with a marker: no silent
//    extrapolation;
//  - log axes only where asked AND the data span at least PLOT_LOG_MIN_RATIO; the axis label then says
//    "log scale";
//  - a chart of accuracy has a reference line (chance): drawing one without is an internal error;
//  - title and subtitle are one line each (a longer one is shrunk a little, then cut with a warning);
//  - every text is at least PLOT_MIN_TEXT_PX tall when the PNG is shown 900 px wide;
//  - the SVG carries <title> and <desc> (the figure's title and its one-line claim).
#pragma once

// One colour per mechanism. The linear-attention family and the compressed layers each have their
// own; COLOR_OTHER is neutral grey for references and anything that is no mechanism.
typedef enum {
    COLOR_MHA = 0, COLOR_GQA, COLOR_MQA, COLOR_MLA, COLOR_SWA, COLOR_DSA, COLOR_GATED, COLOR_GDN, COLOR_KDA,
    COLOR_LIGHTNING, COLOR_MAMBA2, COLOR_CSA, COLOR_HCA, COLOR_OTHER,
    COLOR_COUNT,
    COLOR_LINEAR = COLOR_GDN,   // "the linear layers" when one colour stands for every fixed-state mixer
} PaletteColor;
// RGB in [0,1] of a palette entry (index taken modulo COLOR_COUNT).
void palette_rgb(int color, double rgb[3]);
// The mechanism's name as figures write it ("MHA", "Gated DeltaNet", ...).
const char *palette_name(int color);

typedef enum { AXIS_PLAIN = 0, AXIS_BYTES = 1, AXIS_TOKENS = 2 } AxisFormat;
// AXIS_BYTES labels ticks 1 KiB, 4 MiB, 2 GiB; AXIS_TOKENS labels 1K, 32K, 1M (powers of two, K=1024).

#define PLOT_LOG_MIN_RATIO 30.0   // a log axis needs data spanning at least this factor (~1.5 decades)
#define PLOT_MIN_TEXT_PX 8.0      // smallest text height (font size) in px at 900 px display width

typedef struct {
    const char *label;     // legend text (may carry the exact number: "Llama 3 8B: 128 KiB/token")
    const double *x, *y;   // n points
    int n;
    int color;             // PaletteColor (or any index)
    int dashed;            // 1: dashed line (e.g. "the same model counted as MHA")
    int markers;           // 1: draw a dot at each point
    // A spread around y, per point (min..max or mean +- sd over seeds); NULL: none. error_bars 0 draws
    // it as a shaded band under the line, 1 as whiskers at each point (scatter charts).
    const double *ylo, *yhi;
    int error_bars;
    // > 0: the series is valid up to x_limit only (a model's max_position_embeddings). Points past it are
    // not drawn; the line ends at x_limit with an end marker labelled limit_label (NULL: "max").
    double x_limit;
    const char *limit_label;
} PlotSeries;

// A reference: a horizontal line at value (chance, 1/n, a budget), a vertical one when vertical, or a
// curve through (x, y) when n > 0. Drawn dotted grey and labelled at its right (or top) end.
typedef struct {
    const char *label;     // "chance (1/16)"
    double value;
    int vertical;
    const double *x, *y;
    int n;
} PlotRef;

typedef enum {
    PLOT_LEGEND_TOP_LEFT = 0, PLOT_LEGEND_TOP_RIGHT = 1, PLOT_LEGEND_BOTTOM_RIGHT = 2, PLOT_LEGEND_BELOW = 3,
    PLOT_LEGEND_DIRECT = 4,          // each line labelled at its right end, in its colour
    PLOT_LEGEND_BOTTOM_LEFT = 5,
} LegendPos;

typedef struct {
    const char *title;
    const char *subtitle;  // one line under the title (may be NULL); details go to the README
    const char *claim;     // the figure's one-line claim: the SVG's <desc> and the contact sheet (NULL: subtitle)
    const char *xlabel, *ylabel;   // with units: "context length (tokens)", "KV cache (bytes, bf16)"
    int logx, logy;        // asked for; granted only when the data span PLOT_LOG_MIN_RATIO
    AxisFormat xfmt, yfmt;
    double xmin, xmax, ymin, ymax; // all zero: fit the data
    const PlotSeries *series;
    int n_series;
    const PlotRef *refs;
    int n_refs;
    const char *note;      // footnote under the plot (may be NULL)
    int legend_pos;        // LegendPos: where asked; an inside legend that would cover data moves
    int width, height;     // pixels/points; 0: 900 x 560
} LineChart;

// Writes PATH_NO_EXT.svg and/or PATH_NO_EXT.png atomically (temp file + rename).
void plot_line_chart(const LineChart *c, const char *path_no_ext, int png, int svg);

// Horizontal bar chart: one bar per label, value printed at the bar's end (formatted with fmt).
typedef struct {
    const char *title, *subtitle, *claim, *xlabel;
    const char **labels;
    const double *values;
    const double *lo, *hi; // NULL, or a spread per bar (over seeds), drawn as whiskers
    const int *colors;     // PaletteColor per bar (NULL: all COLOR_OTHER)
    int n;
    AxisFormat fmt;
    int logx;
    const PlotRef *refs;   // vertical reference lines (chance for an accuracy chart)
    int n_refs;
    const char *note;
    int width, height;
} BarChart;
void plot_bar_chart(const BarChart *c, const char *path_no_ext, int png, int svg);

// ---- what a chart looks like once laid out (for tests; the drawing uses the same layout) -----------
#define PLOT_INFO_MAX 48
typedef struct { double x0, y0, x1, y1; } PlotBox;
typedef struct {
    double width, height;           // canvas, points
    PlotBox plot;                   // the plot area
    int logx, logy;                 // the axes as drawn
    double xlo, xhi, ylo, yhi;      // their ranges
    char xlabel[512], ylabel[512];  // their labels as drawn ("log scale" added or removed)
    double drawn_xmax[PLOT_INFO_MAX];   // the largest x each series is drawn to (NAN: nothing drawn)
    int n_legend;                   // legend entries, or direct labels (coinciding series share one)
    char legend[PLOT_INFO_MAX][1024];
    int legend_pos;                 // as placed
    PlotBox legend_box;             // the legend's frame (zero without a legend box)
    int legend_covers_data;         // 1 if an inside legend box overlaps a line, marker or band
    int n_labels;                   // direct labels, reference labels and limit labels
    PlotBox labels[PLOT_INFO_MAX];
    int n_limits;                   // end markers drawn at x_limit
    int title_fits, subtitle_fits;  // 1 when each is one line without cutting
    double min_text_px;             // smallest font size in px when the PNG is shown 900 px wide
} PlotInfo;
void plot_line_chart_info(const LineChart *c, PlotInfo *info);
void plot_bar_chart_info(const BarChart *c, PlotInfo *info);
// 1 if the two boxes overlap (touching edges do not count).
int plot_box_overlap(const PlotBox *a, const PlotBox *b);

// Tick helpers (exposed for tests): "nice" linear ticks covering [lo,hi]; returns the count (<= cap).
int plot_nice_ticks(double lo, double hi, double *ticks, int cap);
// Formats a tick value per AxisFormat into buf.
const char *plot_format_tick(char *buf, int cap, double v, AxisFormat fmt);

// ---- shared by plot.c, heatmap.c and schematic.c (and any figure with its own drawing function) ------
#include <cairo.h>

// A figure is one function that draws on cr over a width x height canvas (points). The same function
// draws the SVG and the PNG: plot_write_figure calls it once per requested format, on a surface the
// caller never sees (SVG in px units; PNG at 2x, less when that would pass ~2400 px wide), and writes
// PATH_NO_EXT.svg / .png atomically. Output bytes do not depend on what the process drew before.
// The SVG gets <title>title</title> and <desc>desc</desc> (plot_write_figure: the file's base name).
typedef void (*PlotDrawFn)(cairo_t *cr, double width, double height, const void *ctx);
void plot_write_figure_meta(const char *path_no_ext, int png, int svg, double width, double height,
                            PlotDrawFn draw, const void *ctx, const char *title, const char *desc);
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
// Greedy word wrap of s at maxw in the current font into at most max_lines lines of PLOT_LINE_CHARS;
// returns the number of lines (words past the last line are dropped).
#define PLOT_LINE_CHARS 256
int plot_wrap_lines(cairo_t *cr, const char *s, double maxw, char (*lines)[PLOT_LINE_CHARS], int max_lines);
// The figures' title (bold, 18 down to 15) and optional subtitle (13 down to 11, grey), each ONE line
// at most maxw wide with the top of the first at y: too long a line is shrunk within those sizes, then
// cut with "..." and a warning on stderr. *fits (may be NULL) gets 1 if nothing was cut. The footnote
// (11, italic grey) wraps. Both return their height, drawing when draw.
double plot_title_block(cairo_t *cr, const char *title, const char *subtitle, double x, double y, double maxw,
                        int draw);
double plot_title_block_fit(cairo_t *cr, const char *title, const char *subtitle, double x, double y,
                            double maxw, int draw, int *title_fits, int *subtitle_fits);
double plot_note_block(cairo_t *cr, const char *note, double x, double y, double maxw, int draw);
// The hex colour #RRGGBB as the cairo source.
void plot_set_hex(cairo_t *cr, unsigned hex);
