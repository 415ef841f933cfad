// heatmap.h: attention matrices as pictures.
//
// Two outputs:
//  - heatmap_raw_png: stb_image_write PNG, one flat block of cell_px x cell_px pixels per cell, the
//    exact data and nothing else (for zooming into a 256 x 256 attention map, or for scripts);
//  - heatmap_figure: an annotated cairo figure (SVG and/or PNG): title, token labels on both axes,
//    colorbar, values printed in the cells for small matrices (T <= 16), masked cells hatched grey so
//    they never look like zero, and several panels (heads, or steps of a computation) side by side.
// Colour: viridis for [0,1] data such as attention probabilities; a diverging blue-white-red map for
// signed data (scores, activations), centred on zero.
#pragma once

typedef struct {
    const float *values;           // (rows, cols) row-major
    const unsigned char *mask;     // (rows, cols): 0 = masked (hatched), NULL = none masked
    int rows, cols;
    const char *title;             // panel title: "head 0", "Q = X W_q"
    const char **row_labels;       // rows entries (token strings) or NULL for indices
    const char **col_labels;       // cols entries or NULL
    const char *xlabel, *ylabel;   // "key j", "query i" (NULL: none)
    float vmin, vmax;              // colour range; vmin == vmax: the figure's range applies
    int diverging;                 // 1: signed data, diverging map centred on 0
    const char *op_after;          // text drawn on an arrow to the next panel ("softmax", "/ sqrt(d)")
} HeatPanel;

typedef struct {
    const char *title;
    const char *subtitle;          // smaller line under the title (may be NULL)
    const HeatPanel *panels;
    int n_panels;
    int panels_per_row;            // 0: all in one row
    float vmin, vmax;              // shared colour range when vmin < vmax; else auto per panel
    int diverging;                 // shared default for panels
    int show_values;               // -1: auto (when rows and cols <= 16), 0: never, 1: always
    int colorbar_per_panel;        // 1: each panel its own colorbar; 0: one shared colorbar
    const char *colorbar_label;    // "attention weight", "score"
    const char *note;              // footnote (may be NULL)
    int cell_px;                   // 0: chosen from the matrix size
} HeatmapFigure;

void heatmap_figure(const HeatmapFigure *f, const char *path_no_ext, int png, int svg);

// Raw PNG (atomic write): cell (i,j) is a cell_px square coloured with viridis over [vmin,vmax]
// (diverging map when diverging); masked cells (mask[i*cols+j]==0) are mid grey.
void heatmap_raw_png(const char *path, const float *values, const unsigned char *mask, int rows,
                     int cols, int cell_px, float vmin, float vmax, int diverging);

// Colormaps (exposed for tests and for other figures): t in [0,1] -> RGB bytes.
void colormap_viridis(float t, unsigned char rgb[3]);
void colormap_diverging(float t, unsigned char rgb[3]);
