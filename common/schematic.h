// schematic.h: diagrams of a mechanism drawn from its numbers: boxes, arrows and labelled tensors.
//
// A chapter describes WHAT is computed (x goes through W_q into q, which has 32 heads of 128; k and v
// are cached), from a ModelGeometry, and the toolkit decides WHERE: items sit in a grid of rows (the
// order of the computation, top to bottom) and lanes (parallel paths: queries, keys, values), columns
// as wide as their widest item, arrows routed between them. So the diagram of DeepSeek-V3 and of a
// tiny model come from the same code, and no coordinate is written by hand.
//
// Tensors are drawn to scale: a bar's length is proportional to the numbers it holds per token, with one
// scale for the whole figure (stated in the key line), split into its heads. Cached tensors have a thick
// dark outline and the word "cached"; marks colour a range inside each head (the part RoPE rotates).
#pragma once

// The canvas never passes this width, so its smallest text (11 pt) is at least 8 px at 900 px display;
// the tensors' scale shrinks instead.
#define SCHEM_MAX_WIDTH 1230.0

typedef struct Schematic Schematic;

enum {
    SCHEM_CACHED = 1,          // what decode keeps per token: outlined, tagged "cached"
    SCHEM_HIGHLIGHT_FIRST = 2, // the first part (head 0) drawn darker: the head the arrows follow
    SCHEM_LABEL_BELOW = 4,     // name and shape under the bar (a bar that lines land on from above)
};

// A new, empty diagram (title and subtitle one line each; claim: the SVG's <desc>).
Schematic *schem_new(const char *title, const char *subtitle, const char *claim);
void schem_free(Schematic *s);
void schem_note(Schematic *s, const char *note);

// A tensor of elems numbers per token, split into parts equal parts (heads; 1: none), in row, lane.
// name is bold ("q"), shape says the numbers ("32 heads x 128"). Returns the item's id.
int schem_tensor(Schematic *s, int row, int lane, const char *name, const char *shape, long elems, int parts,
                 int color, int flags);
// An operation: a box with a bold name ("W_q") and an optional detail line ("4096 -> 4096").
int schem_op(Schematic *s, int row, int lane, const char *name, const char *detail);
// A free text in a cell (wrapped at 260 pt).
int schem_text(Schematic *s, int row, int lane, const char *text);
// A row of n token cells (the cache over the context, say): shade[i] in [0,1] colours cell i (NULL: all
// light), selected[i] != 0 fills it with the full colour. name and shape label it like a tensor. Not
// drawn to scale.
int schem_cells(Schematic *s, int row, int lane, const char *name, const char *shape, int n, const float *shade,
                const unsigned char *selected, int color);
// The item spans lanes lane .. lane + n - 1 (centred over them).
void schem_span(Schematic *s, int item, int n_lanes);
// Colours elements [start, start + len) of the tensor, in every part when per_part (RoPE's dims of
// each head), else of the whole tensor; label names the colour in the key line.
void schem_mark(Schematic *s, int item, long start, long len, int per_part, int color, const char *label);
// A numbered badge left of the item (the three changes of gated attention).
void schem_badge(Schematic *s, int item, int number);
// An arrow from item a (part pa, or -1 for the whole item) to item b (part pb or -1), with an optional
// label. Downward between rows; sideways within a row.
void schem_arrow(Schematic *s, int a, int pa, int b, int pb, const char *label);
// A plain thin line from part pa of a to part pb of b (which query head reads which KV head).
void schem_link(Schematic *s, int a, int pa, int b, int pb);

// Writes PATH_NO_EXT.svg / .png (atomic, deterministic).
void schem_write(Schematic *s, const char *path_no_ext, int png, int svg);

// The diagram as laid out (for tests).
#define SCHEM_INFO_MAX 64
typedef struct { double x0, y0, x1, y1; } SchemBox;
typedef struct {
    double width, height;
    double pt_per_elem;                 // the one scale of every tensor
    int n_items;
    SchemBox item[SCHEM_INFO_MAX];      // each item's drawn box (bar or box), canvas points
    SchemBox text[SCHEM_INFO_MAX];      // each item's label block (name and shape, or its text)
    double bar_len[SCHEM_INFO_MAX];     // tensors: drawn length (0 for other items)
    double min_text_px;                 // at 900 px display width
} SchemInfo;
void schem_info(Schematic *s, SchemInfo *info);
