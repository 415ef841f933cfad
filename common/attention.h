// attention.h: the one softmax-attention core. MHA/GQA/MQA and sliding windows (chapters 3, 4, 6),
// MLA in both its naive and absorbed forms (chapter 5), DSA's selected keys (chapter 7), gated
// attention (chapter 8) and the attention layers of the hybrids all call it, in training (forward and
// backward), in decode and in chunked prefill. So every path does the same arithmetic, and a decode
// step reproduces the full forward bit for bit.
//
// One query position, H query heads, G key/value heads (query head h reads KV head h / (H/G)):
//   s_hk = (q_h . k_k) * scale                      for the n keys k the query reads, in order
//   p_hk = exp(s_hk - M_h) / L_h,  M_h = max(max_k s_hk, sink_h),  L_h = sum_k exp(s_hk - M_h) [+ exp(sink_h - M_h)]
//   o_h  = sum_k p_hk v_k
// The learned sink (gpt-oss, optional) is a logit in the denominator only: a row may give less than 1
// to the real keys.
//
// The fixed order of every sum (the "documented order"; threads and builds never change it):
//   - a dot product: dot_f32 in simd.h (eight lanes over the head dims, FMA, one join tree);
//   - keys are cut into blocks of ATTN_BLOCK (by their index 0..n-1 in reading order); within a block
//     the exponentials are added in eight lanes (key k into lane k % 8) and joined by the tree, and
//     o_h gets e_hk v_k one key after the other (FMA); the blocks' sums then meet in block order, the
//     sink's term last;
//   - o_h = (sum) * (1 / L_h), p_hk = e_hk * (1 / L_h).
// A long decode (n >= ATTN_PAR_MIN keys) spreads its blocks over threads and merges them in block order
// (the flash-decoding idea): the bits do not depend on the thread count.
//
// Where keys live: row r of K holds the G key heads of one token, head g at k + r*k_stride + g*k_head
// (dk floats); V the same with v_stride, v_head (dv floats). V may alias K (MLA's absorbed form reads
// its cached latent as both). Which rows a query reads: at most two contiguous runs (a ring buffer
// wraps once, so no modulo per key) or an explicit list of rows (DSA's top-k).
#pragma once
#include <stddef.h>

enum { ATTN_BLOCK = 512, ATTN_PAR_MIN = 4096 };

typedef struct {
    int n_heads, n_kv_heads;   // H, G (H % G == 0)
    int dk, dv;                // width of one query/key head and of one value head
    float scale;               // usually 1/sqrt(dk); MLA's absorbed form keeps 1/sqrt(dn + dr)
    const float *sink;         // (H) learned sink logits, or NULL
} AttnHeads;

// The n keys come in two segments, read in this order:
//   segment 0, keys 0 .. len[0]-1: rows start[0], start[0]+1, ... of (k, v), or, when rows is not
//              NULL, the rows rows[0 .. len[0]-1] of (k, v) (DSA's top-k);
//   segment 1, keys len[0] .. n-1: rows start[1], start[1]+1, ... of (k1, v1), or of (k, v) when k1 is
//              NULL (the wrapped part of a ring buffer; or a second buffer, e.g. raw recent tokens after
//              compressed entries). Both buffers share the strides.
typedef struct {
    const float *k, *v;
    size_t k_stride, k_head;   // floats between rows, and between the key heads of a row
    size_t v_stride, v_head;
    int n;                     // keys the query reads: len[0] + len[1]
    int start[2], len[2];
    const int *rows;           // segment 0 as a list of rows, or NULL
    const float *k1, *v1;      // segment 1's buffer, or NULL for (k, v)
} AttnKeys;

// Keys of one query: positions lo..hi of a buffer whose position j sits in row (j - base) % cap (a
// ring of cap rows; base 0 and cap > hi is a plain array), as at most two runs of (k, v).
void attn_keys_span(AttnKeys *keys, int lo, int hi, int base, int cap);
// Keys of one query: the n rows of (k, v) listed in rows, in that order.
void attn_keys_list(AttnKeys *keys, const int *rows, int n);

// Floats of scratch attn_query needs for n keys (scores, block sums) and H heads of dv.
size_t attn_scratch_floats(const AttnHeads *h, int n);

// One query position: o (H*dv) from q (H*dk), heads g0 <= g < g1 of the G KV heads only (g0 = 0,
// g1 = G: all). p (may be NULL): head h's weights for the n keys at p + (h - h0)*p_stride (h0 = the
// first head of g0). psink (may be NULL, with a sink): head h's weight on the sink. Threads split the
// blocks when n >= ATTN_PAR_MIN and the caller is not already in a parallel region.
void attn_query(float *o, float *p, size_t p_stride, float *psink, const float *q, const AttnKeys *keys,
                const AttnHeads *h, int g0, int g1, float *scratch);

// Its backward for heads g0..g1-1 of one query position, given the weights p it produced (same layout)
// and d_o (H*dv): dq (H*dk) +=, the key and value rows of dk / dv (laid out as keys->k / keys->v, same
// strides) +=, dsink (H) += (when the heads have a sink; psink as forward wrote it). scratch: n floats.
void attn_query_backward(float *dq, float *dk, float *dv, float *dsink, const float *d_o, const float *p,
                         size_t p_stride, const float *psink, const float *q, const AttnKeys *keys,
                         const AttnHeads *h, int g0, int g1, float *scratch);

// ---- training: B sequences of T tokens -------------------------------------------------------------
// Causal self-attention (the last `window` keys when window > 0; or, when sel is given, exactly the
// keys sel marks: sel (B,T,T), sel[b][i][j] != 0 when query i reads key j <= i).
// Row r = b*T + i of q holds the H query heads (q + r*q_stride + h*dk); K and V rows as in AttnKeys.
typedef struct {
    int B, T, window;
    const unsigned char *sel;
    const float *q;
    size_t q_stride;
    const float *k, *v;
    size_t k_stride, k_head, v_stride, v_head;
} AttnBatch;

// o (row r at o + r*o_stride, H*dv), P (B,H,T,T): the weights, exactly 0 on keys not read; psink
// (B,H,T) the sink's weight (NULL without a sink). Threads split (b, KV head).
void attn_batch_forward(float *o, size_t o_stride, float *P, float *psink, const AttnBatch *a, const AttnHeads *h);
// Accumulates dq (laid out as q), dk, dv (as k, v) and dsink (H) from d_o (as o) and the forward's P.
void attn_batch_backward(float *dq, float *dk, float *dv, float *dsink, const float *d_o, size_t do_stride,
                         const float *P, const float *psink, const AttnBatch *a, const AttnHeads *h);
