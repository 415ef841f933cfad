// heatmap.h: attention matrices as pictures.
//
// Two outputs:
//  - heatmap_raw_png: stb_image_write PNG, one flat block of cell_px x cell_px pixels per cell, the
//    exact data and nothing else (for zooming into a 256 x 256 attention map, or for scripts);
//  - heatmap_figure: an annotated cairo figure (SVG and/or PNG): title, token labels on both axes,
//    colorbar, values printed in the cells for small matrices (T <= 16), and several panels (heads, or
//    steps of a computation) side by side.
// Colour: viridis for [0,1] data such as attention probabilities; a diverging blue-white-red map for
// signed data (scores, activations), centred on zero.
//
// Rules the toolkit applies to every figure:
//  - hatching means one thing: masked, i.e. not computed (future tokens, keys outside a window, keys
//    the DSA selector dropped). Cells that hold no value for another reason are `blank`: flat light
//    grey, no hatching, explained by the figure's blank_label. A key line under the panels says so;
//  - panels of one unit (the same colorbar label and kind) share one colour range and one colorbar, so
//    panels that are compared are read on one scale;
//  - panels in a row that share their row labels show them once (first column); panels in a column
//    that share column labels show them once (bottom row); thinned token labels say "every 2nd";
//  - the canvas stays within HEATMAP_MAX_WIDTH so its text is at least PLOT_MIN_TEXT_PX when the PNG is
//    shown 900 px wide (values printed in cells at least HEATMAP_MIN_VALUE_PX, else left out).
#pragma once

#define HEATMAP_MAX_WIDTH 1230.0
#define HEATMAP_MIN_VALUE_PX 6.0

typedef struct {
    const float *values;           // (rows, cols) row-major
    const unsigned char *mask;     // (rows, cols): 0 = masked, not computed (hatched); NULL = none masked
    const unsigned char *blank;    // (rows, cols): 1 = no value here (flat grey, blank_label); NULL = none
    int rows, cols;
    const char *title;             // panel title: "head 0", "Q = X W_q"
    const char **row_labels;       // rows entries (token strings) or NULL for indices
    const char **col_labels;       // cols entries or NULL
    const char *xlabel, *ylabel;   // "key j", "query i" (NULL: none)
    float vmin, vmax;              // colour range; vmin == vmax: the range of the panel's unit applies
    int diverging;                 // 1: signed data, diverging map centred on 0
    const char *colorbar_label;    // the panel's unit (NULL: the figure's); panels of one unit share a scale
    const char *op_after;          // text drawn on an arrow to the next panel ("softmax", "/ sqrt(d)")
} HeatPanel;

typedef struct {
    const char *title;
    const char *subtitle;          // one line under the title (may be NULL)
    const char *claim;             // one-line claim for the SVG's <desc> and the contact sheet (NULL: subtitle)
    const HeatPanel *panels;
    int n_panels;
    int panels_per_row;            // 0: all in one row (wrapped when wider than HEATMAP_MAX_WIDTH)
    float vmin, vmax;              // colour range of panels without their own; else fitted to the data
    int diverging;                 // shared default for panels
    int show_values;               // -1: auto (when rows and cols <= 16), 0: never, 1: always
    const char *colorbar_label;    // "attention weight", "score": the unit of panels without their own
    const char *blank_label;       // what blank cells mean ("not rotated: no position"), when any are blank
    const char *note;              // footnote (may be NULL)
    int cell_px;                   // 0: chosen from the matrix size
} HeatmapFigure;

void heatmap_figure(const HeatmapFigure *f, const char *path_no_ext, int png, int svg);

// The figure as laid out (for tests; drawing uses the same layout).
#define HEATMAP_INFO_MAX 64
typedef struct {
    double width, height;
    int n_colorbars;
    float vmin[HEATMAP_INFO_MAX], vmax[HEATMAP_INFO_MAX];   // each panel's colour range
    int show_row_labels[HEATMAP_INFO_MAX], show_col_labels[HEATMAP_INFO_MAX];
    int row_step[HEATMAP_INFO_MAX];                          // 1: every row labelled, 2: every 2nd, ...
    char ylabel[HEATMAP_INFO_MAX][160];                       // each panel's y label as drawn
    int has_key;                                              // the masked / blank key line is drawn
    int title_fits, subtitle_fits;
    double min_text_px;                                       // at 900 px display width, values excluded
    double min_value_px;                                      // values in cells (0 when none are printed)
} HeatmapInfo;
void heatmap_figure_info(const HeatmapFigure *f, HeatmapInfo *info);

// Raw PNG (atomic write): cell (i,j) is a cell_px square coloured with viridis over [vmin,vmax]
// (diverging map when diverging); masked cells (mask[i*cols+j]==0) are mid grey.
void heatmap_raw_png(const char *path, const float *values, const unsigned char *mask, int rows,
                     int cols, int cell_px, float vmin, float vmax, int diverging);

// Colormaps (exposed for tests and for other figures): t in [0,1] -> RGB bytes.
void colormap_viridis(float t, unsigned char rgb[3]);
void colormap_diverging(float t, unsigned char rgb[3]);
