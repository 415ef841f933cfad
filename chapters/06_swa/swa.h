// swa.h: sliding-window attention (chapter 6): where the local layers go, their RoPE bases, and what
// they save.
//
// The attention itself is the chapter-3 mixer (03_mha/mha.c): a LAYER_LOCAL layer attends to the last
// sliding_window keys, itself included (i - W < j <= i), and decodes against a ring buffer of W rows,
// so its cache stops growing at W tokens. This chapter decides which layers are local:
//   Gemma 2     1 local : 1 global, W 4096          (layer i global iff (i+1) % 2 == 0)
//   Gemma 3     5 local : 1 global, W 1024          (layer i global iff (i+1) % 6 == 0)
//               local RoPE base 1e4, global 1e6
//   OLMo 3      3 local : 1 global, W 4096
//   gpt-oss     1 local : 1 global, W 128
#pragma once
#include <stddef.h>
#include "geometry.h"

// local_per_global R of a pattern: R local layers, then one global, repeated. 0 means every layer
// global (plain causal attention), SWA_ALL_LOCAL every layer local.
#define SWA_ALL_LOCAL (-1)

// Sets g->layer_kind for R local layers per global one (layer i global iff (i+1) % (R+1) == 0) and
// g->sliding_window = window (left as is when R == 0, which makes no layer local).
void swa_set_pattern(ModelGeometry *g, int local_per_global, int window);
// Parses a pattern name: "gemma2" (1), "gemma3" (5), "olmo3" (3), "gpt-oss" (1), "local"
// (SWA_ALL_LOCAL), "global" (0), or a ratio "R" / "R:1" with 0 <= R <= 255. Returns 0, or -1 when s
// is none of these.
int swa_parse_pattern(const char *s, int *local_per_global);
// Gemma 3's per-layer RoPE bases: 1e6 on global layers (long-range positions must stay distinct),
// 1e4 on local ones (they never see more than W positions apart).
void swa_set_gemma3_rope(ModelGeometry *g);
// Turns every local layer into a global one: the same model counted without windows.
void swa_make_all_global(ModelGeometry *g);
// The layer pattern as letters, 'L' local and 'G' global ("LLLLLG..."), into buf.
const char *swa_pattern_string(char *buf, size_t cap, const ModelGeometry *g);
// "5:1", "all local" or "all global" for a local_per_global value.
const char *swa_ratio_name(char *buf, size_t cap, int local_per_global);
// How many positions back a token's information can reach through the whole stack: each local layer
// moves it at most W-1 positions, so a stack of only local layers reaches n_local * (W-1); any global
// layer reaches everything (returned as -1).
long swa_receptive_field(const ModelGeometry *g);
