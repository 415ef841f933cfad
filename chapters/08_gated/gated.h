// gated.h: gated attention as in Qwen3-Next (chapter 8) as a mixer, "gated".
//
// GQA attention (chapter 4's core and KV cache, chapters/03_mha/mha.h) with three changes:
//   output gate  the query projection also emits a gate g; o_h <- o_h * sigmoid(g_h) before Wo.
//                attn_output_gate GATE_ELEMENTWISE: one gate per channel, q_proj rows per head are
//                [q_h (dh) | g_h (dh)] (Qwen3-Next's layout); GATE_HEADWISE: one scalar per head,
//                [q_h (dh) | g_h (1)]; GATE_NONE: no gate (the ungated twin).
//   QK norm      every query and key head is RMS-normalised before RoPE: qk_norm QK_NORM_RMS
//                y = x * rsqrt(mean(x^2) + eps) * w (w starts at 1), QK_NORM_ZERO_CENTRED the same
//                with (1 + w) (w starts at 0, Qwen3-Next), QK_NORM_NONE: off.
//   partial RoPE only the first rot = head_dim * partial_rotary_factor dims of each head rotate
//                (Hugging Face: q[..., :rot] gets rotate_half, pairs (i, i + rot/2), frequencies
//                theta^(-2i/rot)); the other head_dim - rot dims carry no position at all.
// Parameters (PyTorch layout (out, in), no biases), back to back in this order:
//   wq (H*(dh+gw), d) with gw = dh, 1 or 0 per the gate, wk (G*dh, d), wv (G*dh, d), wo (d, H*dh),
//   then q_norm (dh), k_norm (dh) when qk_norm is on, then sinks (H) when the layer has learned sinks
//   (geometry_layer_has_sinks, chapter 11: one logit per head in the softmax denominator only).
// With GATE_NONE, QK_NORM_NONE and rotary fraction 1 the parameters and the numbers are gqa_mixer's.
// The cache is GQA's: 2 * G * dh per token (the gate is recomputed from the query, never cached).
#pragma once
#include "mixer.h"

#define GATED_NORM_EPS 1e-6f   // Qwen3-Next's rms_norm_eps

extern const MixerOps gated_mixer;

// Gate channels per head: head_dim (elementwise), 1 (headwise), 0 (none).
int gated_gate_width(const ModelGeometry *g);
// Dims of each head that RoPE rotates: head_dim * geometry_rotary_fraction(g).
int gated_rotary_dims(const ModelGeometry *g);
// Partial RoPE of one head vector x (head_dim) at position pos, as forward applies it (inverse = 1:
// the backward rotation); dims rot.. are left untouched.
void gated_rope(float *x, int pos, const ModelGeometry *g, int layer, int inverse);
// The gate values sigmoid(g) of batch element 0 from a forward's act at (B,T): gates (T, H * gw),
// row t = [head 0's gw values | head 1's | ...]. Nothing is written when the gate is off.
void gated_gate_values(const Mixer *m, float *gates, const float *act, int B, int T);
// The weight each row gave its sink in a forward at (B,T): (B,H,T) inside act, or NULL without sinks.
const float *gated_sink_weights(const Mixer *m, const float *act, int B, int T);
