// attention.c: the softmax-attention core (see attention.h for what it computes and in which order).
//
// One query position runs in three phases over blocks of ATTN_BLOCK keys:
//   1. scores: s_hk = (q_h . k_k) * scale for every key, reading each key row once for all the query
//      heads that share it (a GQA group reads its KV head once), and the per-head maximum;
//   2. values: per block, e_hk = exp(s_hk - M_h) (eight keys at a time), their sum L_hb, and the
//      weighted sum of values o_hb = sum_k e_hk v_k, reading each value row once;
//   3. merge: L_h and o_h from the blocks' sums in block order, then o_h / L_h and p_hk = e_hk / L_h.
// A long decode step gives each thread a contiguous range of blocks for phases 1 and 2 (so two threads
// read the cache at twice the rate) and splits phase 3 over heads; nothing a thread computes depends on
// which thread computes it.
#include "attention.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "simd.h"

void attn_keys_span(AttnKeys *keys, int lo, int hi, int base, int cap) {
    CHECK(lo >= base && hi >= lo - 1 && cap > 0 && hi - lo + 1 <= cap, "attn_keys_span: keys %d..%d, base %d, %d rows",
          lo, hi, base, cap);
    int n = hi - lo + 1, r0 = (lo - base) % cap;   // one modulo per query, none per key
    int first = cap - r0 < n ? cap - r0 : n;
    keys->n = n;
    keys->rows = NULL;
    keys->k1 = keys->v1 = NULL;
    keys->start[0] = r0;
    keys->len[0] = first;
    keys->start[1] = 0;
    keys->len[1] = n - first;
}

void attn_keys_list(AttnKeys *keys, const int *rows, int n) {
    keys->n = n;
    keys->rows = rows;
    keys->k1 = keys->v1 = NULL;
    keys->start[0] = keys->start[1] = 0;
    keys->len[0] = n;
    keys->len[1] = 0;
}

// Where key k's key head 0 and value head 0 sit (add g * k_head / v_head for KV head g).
static inline const float *key_at(const AttnKeys *ks, int k) {
    if (k < ks->len[0]) return ks->k + (size_t)(ks->rows ? ks->rows[k] : ks->start[0] + k) * ks->k_stride;
    return (ks->k1 ? ks->k1 : ks->k) + (size_t)(ks->start[1] + (k - ks->len[0])) * ks->k_stride;
}
static inline const float *value_at(const AttnKeys *ks, int k) {
    if (k < ks->len[0]) return ks->v + (size_t)(ks->rows ? ks->rows[k] : ks->start[0] + k) * ks->v_stride;
    return (ks->v1 ? ks->v1 : ks->v) + (size_t)(ks->start[1] + (k - ks->len[0])) * ks->v_stride;
}

static int n_blocks(int n) { return (n + ATTN_BLOCK - 1) / ATTN_BLOCK; }

enum { ATTN_MAX_THREADS = 64 };

size_t attn_scratch_floats(const AttnHeads *h, int n) {
    size_t H = (size_t)h->n_heads, nb = (size_t)n_blocks(n > 0 ? n : 1);
    // scores (H, n), block sums (nb, H, 1 + dv), the heads' maxima, one row per thread
    return H * (size_t)(n > 0 ? n : 1) + nb * H * (1 + (size_t)h->dv) + (size_t)ATTN_MAX_THREADS * H;
}

// The heads of KV heads g0..g1-1: h0 .. h0 + nh - 1.
typedef struct {
    int grp, h0, nh, g0, g1;
} HeadRange;

static HeadRange head_range(const AttnHeads *h, int g0, int g1) {
    CHECK(h->n_kv_heads > 0 && h->n_heads % h->n_kv_heads == 0 && 0 <= g0 && g0 < g1 && g1 <= h->n_kv_heads,
          "attention: heads %d / %d KV heads, range %d..%d", h->n_heads, h->n_kv_heads, g0, g1);
    int grp = h->n_heads / h->n_kv_heads;
    return (HeadRange){grp, g0 * grp, (g1 - g0) * grp, g0, g1};
}

// Phase 1 for keys k0..k1-1: s[a*n + k] for the nh heads (a = h - h0); mx[a] = max(mx[a], their max).
// dot_f32(q_u, k, dk) * scale for the nq <= 8 queries q_u = q + u*dk at once: the same eight-lane
// chain per query, but the queries' chains interleaved, so a wide key (MLA's 544) is not one long chain
// of dependent multiply-adds, and each chunk of the key is loaded once for all of them.
static void dots_multi(float *out, size_t out_stride, const float *q, int nq, const float *k, int dk, float scale) {
    if (nq == 8) {   // eight named accumulators: kept in registers across the loop
        const float *q0 = q, *q1 = q0 + dk, *q2 = q1 + dk, *q3 = q2 + dk, *q4 = q3 + dk, *q5 = q4 + dk, *q6 = q5 + dk,
                    *q7 = q6 + dk;
        v8f a0 = v8_zero(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        int c = 0;
        for (; c + 8 <= dk; c += 8) {
            v8f kv = v8_load(k + c);
            a0 = v8_fma(v8_load(q0 + c), kv, a0);
            a1 = v8_fma(v8_load(q1 + c), kv, a1);
            a2 = v8_fma(v8_load(q2 + c), kv, a2);
            a3 = v8_fma(v8_load(q3 + c), kv, a3);
            a4 = v8_fma(v8_load(q4 + c), kv, a4);
            a5 = v8_fma(v8_load(q5 + c), kv, a5);
            a6 = v8_fma(v8_load(q6 + c), kv, a6);
            a7 = v8_fma(v8_load(q7 + c), kv, a7);
        }
        if (c == dk) {
            out[0] = v8_sum(a0) * scale;
            out[out_stride] = v8_sum(a1) * scale;
            out[2 * out_stride] = v8_sum(a2) * scale;
            out[3 * out_stride] = v8_sum(a3) * scale;
            out[4 * out_stride] = v8_sum(a4) * scale;
            out[5 * out_stride] = v8_sum(a5) * scale;
            out[6 * out_stride] = v8_sum(a6) * scale;
            out[7 * out_stride] = v8_sum(a7) * scale;
            return;
        }
    }
    for (int u = 0; u < nq; u++) out[(size_t)u * out_stride] = dot_f32(q + (size_t)u * dk, k, dk) * scale;
}

static void phase_scores(float *s, float *mx, int n, const float *q, const AttnKeys *ks, const AttnHeads *h,
                         HeadRange hr, int k0, int k1) {
    int dk = h->dk;
    for (int k = k0; k < k1; k++) {
        const float *krow = key_at(ks, k);
        for (int g = hr.g0; g < hr.g1; g++) {
            const float *kk = krow + (size_t)g * ks->k_head;
            for (int j = 0; j < hr.grp; j += 8) {
                int hh = g * hr.grp + j, nq = hr.grp - j < 8 ? hr.grp - j : 8;
                dots_multi(s + (size_t)(hh - hr.h0) * n + k, (size_t)n, q + (size_t)hh * dk, nq, kk, dk, h->scale);
            }
        }
    }
    for (int a = 0; a < hr.nh; a++) {
        const float *sa = s + (size_t)a * n;
        v8f m = v8_set1(-INFINITY);
        int k = k0;
        for (; k + 8 <= k1; k += 8) m = v8_max(v8_load(sa + k), m);
        if (k < k1) m = v8_max(v8_load_partial(sa + k, k1 - k, -INFINITY), m);
        float t[8], best = mx[a];
        v8_store(t, m);
        for (int l = 0; l < 8; l++) best = t[l] > best ? t[l] : best;
        mx[a] = best;
    }
}

// Phase 2 for block b (keys k0..k1-1): e = exp(s - M) in place; part[a] = {L_ab, o_ab (dv)}.
static void phase_values(float *part, float *s, int n, const float *M, const AttnKeys *ks, const AttnHeads *h,
                         HeadRange hr, int k0, int k1) {
    int dv = h->dv;
    for (int a = 0; a < hr.nh; a++) {
        float *sa = s + (size_t)a * n;
        v8f m = v8_set1(M[a]), acc = v8_zero();
        int k = k0;
        for (; k + 8 <= k1; k += 8) {
            v8f e = v8_exp(v8_sub(v8_load(sa + k), m));
            v8_store(sa + k, e);
            acc = v8_add(acc, e);
        }
        if (k < k1) {
            v8f e = v8_exp(v8_sub(v8_load_partial(sa + k, k1 - k, -INFINITY), m));   // padding lanes: exp(-inf) = 0
            v8_store_partial(sa + k, e, k1 - k);
            acc = v8_add(acc, e);
        }
        float *pa = part + (size_t)a * (1 + dv);
        pa[0] = v8_sum(acc);
        memset(pa + 1, 0, sizeof(float) * (size_t)dv);
    }
    // o_ab += e_ak v_k, key after key (one FMA chain per element, in key order), in one of two loop
    // orders with the same arithmetic:
    //  - every head its own KV head (MHA) and several of them: row after row, each row's heads in
    //    turn, so the cache streams through once in address order (a decode step's memory traffic);
    //  - otherwise the accumulators sit in registers while a tile of VTILE keys streams past: up to four
    //    heads sharing a KV head (GQA, MLA's absorbed form) times sixteen dims, so each value row is
    //    loaded once for the heads that read it.
    if (hr.grp == 1 && hr.g1 - hr.g0 > 1) {
        for (int k = k0; k < k1; k++) {
            const float *vrow = value_at(ks, k);
            for (int g = hr.g0; g < hr.g1; g++) {
                int a = g - hr.g0;
                axpy_f32(part + (size_t)a * (1 + dv) + 1, s[(size_t)a * n + k], vrow + (size_t)g * ks->v_head, dv);
            }
        }
        return;
    }
    enum { VTILE = 64 };
    const float *vrows[VTILE];
    for (int t0 = k0; t0 < k1; t0 += VTILE) {
        int nt = k1 - t0 < VTILE ? k1 - t0 : VTILE;
        for (int t = 0; t < nt; t++) vrows[t] = value_at(ks, t0 + t);
        for (int g = hr.g0; g < hr.g1; g++)
            for (int j0 = 0; j0 < hr.grp; j0 += 4) {
                int ht = hr.grp - j0 < 4 ? hr.grp - j0 : 4, a0 = (g - hr.g0) * hr.grp + j0;
                const float *e[4];
                float *acc_at[4];
                for (int u = 0; u < 4; u++) {
                    int a = a0 + (u < ht ? u : 0);
                    e[u] = s + (size_t)a * n + t0;
                    acc_at[u] = part + (size_t)a * (1 + dv) + 1;
                }
                size_t voff = (size_t)g * ks->v_head;
                int c = 0;
                for (; c + 16 <= dv; c += 16) {
                    v8f x0[4], x1[4];
                    for (int u = 0; u < 4; u++) {
                        x0[u] = v8_load(acc_at[u] + c);
                        x1[u] = v8_load(acc_at[u] + c + 8);
                    }
                    for (int t = 0; t < nt; t++) {
                        const float *vv = vrows[t] + voff + c;
                        v8f v0 = v8_load(vv), v1 = v8_load(vv + 8);
                        for (int u = 0; u < 4; u++) {   // ht < 4: the extra lanes redo head a0, never stored
                            v8f w = v8_set1(e[u][t]);
                            x0[u] = v8_fma(w, v0, x0[u]);
                            x1[u] = v8_fma(w, v1, x1[u]);
                        }
                    }
                    for (int u = 0; u < ht; u++) {
                        v8_store(acc_at[u] + c, x0[u]);
                        v8_store(acc_at[u] + c + 8, x1[u]);
                    }
                }
                for (; c < dv; c++)
                    for (int u = 0; u < ht; u++) {
                        float x = acc_at[u][c];
                        for (int t = 0; t < nt; t++) x = fmaf(e[u][t], vrows[t][voff + c], x);
                        acc_at[u][c] = x;
                    }
            }
    }
}

// Phase 3 for head a: L and o are block 0's sums, plus each later block's in order, plus the sink's
// term last; then o and p are normalised.
static void phase_merge(float *o, float *p, size_t p_stride, float *psink, const float *part, const float *s, int n,
                        int nb, const float *M, const AttnHeads *h, HeadRange hr, int a) {
    int dv = h->dv, hh = hr.h0 + a;
    size_t stride = (size_t)hr.nh * (1 + dv);
    float *oh = o + (size_t)hh * dv;
    float L = 0.0f;
    if (nb > 0) {
        const float *p0 = part + (size_t)a * (1 + dv);
        L = p0[0];
        memcpy(oh, p0 + 1, sizeof(float) * (size_t)dv);
    } else {
        memset(oh, 0, sizeof(float) * (size_t)dv);
    }
    for (int b = 1; b < nb; b++) {
        const float *pb = part + (size_t)b * stride + (size_t)a * (1 + dv);
        L += pb[0];
        for (int c = 0; c < dv; c++) oh[c] += pb[1 + c];
    }
    float es = 0.0f;
    if (h->sink) {
        es = exp_v8_scalar(h->sink[hh] - M[a]);
        L += es;
    }
    float inv = L > 0.0f ? 1.0f / L : 0.0f;   // L = 0 only for a query with no keys and no sink
    v8f iv = v8_set1(inv);
    int c = 0;
    for (; c + 8 <= dv; c += 8) v8_store(oh + c, v8_mul(v8_load(oh + c), iv));
    for (; c < dv; c++) oh[c] *= inv;
    if (psink) psink[a] = es * inv;
    if (p) {
        float *pa = p + (size_t)a * p_stride;
        const float *sa = s + (size_t)a * n;
        int k = 0;
        for (; k + 8 <= n; k += 8) v8_store(pa + k, v8_mul(v8_load(sa + k), iv));
        for (; k < n; k++) pa[k] = sa[k] * inv;
    }
}

// dst (T x T) = src^T, in 8 x 8 tiles (registers), the edges one by one: a column-by-column copy
// writes one cache line per element.
static void transpose_square(float *dst, const float *src, int T) {
    int T8 = T / 8 * 8;
    for (int i = 0; i < T8; i += 8)
        for (int j = 0; j < T8; j += 8) {
            v8f in[8], out[8];
            for (int r = 0; r < 8; r++) in[r] = v8_load(src + (size_t)(i + r) * T + j);
            v8_transpose(out, in);
            for (int r = 0; r < 8; r++) v8_store(dst + (size_t)(j + r) * T + i, out[r]);
        }
    for (int i = 0; i < T; i++)
        for (int j = i < T8 ? T8 : 0; j < T; j++) dst[(size_t)j * T + i] = src[(size_t)i * T + j];
    for (int i = T8; i < T; i++)
        for (int j = 0; j < T8; j++) dst[(size_t)j * T + i] = src[(size_t)i * T + j];
}

// Dot products of x (d) with n vectors stored transposed: t[c * t_stride + k] is dim c of vector k
// (k = 0..n-1; t readable up to the next multiple of 8), times scale, into out (n); returns their max.
// Eight vectors at a time, lane l of accumulator A_{c%8} gathering dims c = l, l+8, ... of each one:
// exactly the FMA chains and the join tree of dot_f32, so these are the same bits as dot_f32(x, .)
// * scale (training scores keys this way: with head dims of 16 or 32, one join per eight keys instead
// of one per key).
static float dots_transposed(float *out, const float *x, const float *t, size_t t_stride, int n, int d, float scale) {
    v8f sc = v8_set1(scale), mx = v8_set1(-INFINITY);
    for (int k = 0; k < n; k += 8) {
        v8f A0 = v8_zero(), A1 = A0, A2 = A0, A3 = A0, A4 = A0, A5 = A0, A6 = A0, A7 = A0;
        const float *tk = t + k;
        int c = 0;
        for (; c + 8 <= d; c += 8, tk += 8 * t_stride) {
            A0 = v8_fma(v8_set1(x[c]), v8_load(tk), A0);
            A1 = v8_fma(v8_set1(x[c + 1]), v8_load(tk + t_stride), A1);
            A2 = v8_fma(v8_set1(x[c + 2]), v8_load(tk + 2 * t_stride), A2);
            A3 = v8_fma(v8_set1(x[c + 3]), v8_load(tk + 3 * t_stride), A3);
            A4 = v8_fma(v8_set1(x[c + 4]), v8_load(tk + 4 * t_stride), A4);
            A5 = v8_fma(v8_set1(x[c + 5]), v8_load(tk + 5 * t_stride), A5);
            A6 = v8_fma(v8_set1(x[c + 6]), v8_load(tk + 6 * t_stride), A6);
            A7 = v8_fma(v8_set1(x[c + 7]), v8_load(tk + 7 * t_stride), A7);
        }
        // the last d % 8 dims go to lanes 0.. (dot_f32's zero-padded tail adds exact zeros to the others)
        if (c < d) A0 = v8_fma(v8_set1(x[c]), v8_load(tk), A0);
        if (c + 1 < d) A1 = v8_fma(v8_set1(x[c + 1]), v8_load(tk + t_stride), A1);
        if (c + 2 < d) A2 = v8_fma(v8_set1(x[c + 2]), v8_load(tk + 2 * t_stride), A2);
        if (c + 3 < d) A3 = v8_fma(v8_set1(x[c + 3]), v8_load(tk + 3 * t_stride), A3);
        if (c + 4 < d) A4 = v8_fma(v8_set1(x[c + 4]), v8_load(tk + 4 * t_stride), A4);
        if (c + 5 < d) A5 = v8_fma(v8_set1(x[c + 5]), v8_load(tk + 5 * t_stride), A5);
        if (c + 6 < d) A6 = v8_fma(v8_set1(x[c + 6]), v8_load(tk + 6 * t_stride), A6);
        v8f r = v8_add(v8_add(v8_add(A0, A4), v8_add(A2, A6)), v8_add(v8_add(A1, A5), v8_add(A3, A7)));
        r = v8_mul(r, sc);
        if (n - k < 8) {   // lanes past the last vector are not results
            float tmp[8];
            v8_store(tmp, r);
            for (int l = n - k; l < 8; l++) tmp[l] = -INFINITY;
            r = v8_load(tmp);
            v8_store_partial(out + k, r, n - k);
        } else {
            v8_store(out + k, r);
        }
        mx = v8_max(r, mx);
    }
    float m[8], best = -INFINITY;
    v8_store(m, mx);
    for (int l = 0; l < 8; l++) best = m[l] > best ? m[l] : best;
    return best;
}

// cols (d, Tp) = the first d floats of T rows (row j at x + j*stride), transposed, zero past T.
static void transpose_rows(float *cols, int Tp, const float *x, size_t stride, int T, int d) {
    for (int c = 0; c < d; c++) {
        float *row = cols + (size_t)c * Tp;
        for (int j = 0; j < T; j++) row[j] = x[(size_t)j * stride + c];
        for (int j = T; j < Tp; j++) row[j] = 0.0f;
    }
}

void attn_query(float *o, float *p, size_t p_stride, float *psink, const float *q, const AttnKeys *keys,
                const AttnHeads *h, int g0, int g1, float *scratch) {
    HeadRange hr = head_range(h, g0, g1);
    int n = keys->n, nb = n_blocks(n), H = h->n_heads;
    CHECK(n >= 0, "attention: %d keys", n);
    // scratch: scores (nh, n) | block sums (nb, nh, 1 + dv) | per-thread maxima (threads, nh)
    float *s = scratch;
    float *part = s + (size_t)H * (size_t)(n > 0 ? n : 1);
    float *tmax = part + (size_t)(nb > 0 ? nb : 1) * H * (1 + (size_t)h->dv);
    int threads = 1;
    if (n >= ATTN_PAR_MIN && !omp_in_parallel()) {
        threads = omp_get_max_threads();
        if (threads > nb) threads = nb;
        if (threads > ATTN_MAX_THREADS) threads = ATTN_MAX_THREADS;
    }
    float M[256];
    CHECK(hr.nh <= 256, "attention: %d heads in one call (at most 256)", hr.nh);
    if (threads == 1) {
        // one thread: the same three phases, without entering a parallel region (that costs a few
        // microseconds, and training calls this once per query position)
        for (int a = 0; a < hr.nh; a++) M[a] = -INFINITY;
        for (int b = 0; b < nb; b++) {
            int k0 = b * ATTN_BLOCK, k1 = k0 + ATTN_BLOCK < n ? k0 + ATTN_BLOCK : n;
            phase_scores(s, M, n, q, keys, h, hr, k0, k1);
        }
        if (h->sink)
            for (int a = 0; a < hr.nh; a++) M[a] = h->sink[hr.h0 + a] > M[a] ? h->sink[hr.h0 + a] : M[a];
        for (int b = 0; b < nb; b++) {
            int k0 = b * ATTN_BLOCK, k1 = k0 + ATTN_BLOCK < n ? k0 + ATTN_BLOCK : n;
            phase_values(part + (size_t)b * hr.nh * (1 + h->dv), s, n, M, keys, h, hr, k0, k1);
        }
        for (int a = 0; a < hr.nh; a++) phase_merge(o, p, p_stride, psink, part, s, n, nb, M, h, hr, a);
        return;
    }
    #pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int b0 = (int)((long)nb * t / nt), b1 = (int)((long)nb * (t + 1) / nt);
        float *mx = tmax + (size_t)t * hr.nh;
        for (int a = 0; a < hr.nh; a++) mx[a] = -INFINITY;
        for (int b = b0; b < b1; b++) {
            int k0 = b * ATTN_BLOCK, k1 = k0 + ATTN_BLOCK < n ? k0 + ATTN_BLOCK : n;
            phase_scores(s, mx, n, q, keys, h, hr, k0, k1);
        }
        #pragma omp barrier
        // the maximum is exact, so it does not matter which thread saw which key
        #pragma omp single
        for (int a = 0; a < hr.nh; a++) {
            float best = -INFINITY;
            for (int u = 0; u < nt; u++) best = tmax[(size_t)u * hr.nh + a] > best ? tmax[(size_t)u * hr.nh + a] : best;
            if (h->sink && h->sink[hr.h0 + a] > best) best = h->sink[hr.h0 + a];
            M[a] = best;
        }
        for (int b = b0; b < b1; b++) {
            int k0 = b * ATTN_BLOCK, k1 = k0 + ATTN_BLOCK < n ? k0 + ATTN_BLOCK : n;
            phase_values(part + (size_t)b * hr.nh * (1 + h->dv), s, n, M, keys, h, hr, k0, k1);
        }
        #pragma omp barrier
        #pragma omp for schedule(static)
        for (int a = 0; a < hr.nh; a++) phase_merge(o, p, p_stride, psink, part, s, n, nb, M, h, hr, a);
    }
}

void attn_query_backward(float *dq, float *dk, float *dv, float *dsink, const float *d_o, const float *p,
                         size_t p_stride, const float *psink, const float *q, const AttnKeys *keys,
                         const AttnHeads *h, int g0, int g1, float *scratch) {
    HeadRange hr = head_range(h, g0, g1);
    int n = keys->n, dkw = h->dk, dvw = h->dv;
    CHECK(!keys->k1 && !keys->v1, "attention backward: keys in one buffer only (dk and dv share its rows)");
    float *dp = scratch;
    for (int g = hr.g0; g < hr.g1; g++)
        for (int j = 0; j < hr.grp; j++) {
            int hh = g * hr.grp + j, a = hh - hr.h0;
            const float *pa = p + (size_t)a * p_stride, *go = d_o + (size_t)hh * dvw, *qh = q + (size_t)hh * dkw;
            float *gq = dq + (size_t)hh * dkw;
            // o = sum_k p_k v_k  =>  dp_k = do . v_k;  softmax: ds_k = p_k (dp_k - sum_k p_k dp_k)
            for (int k = 0; k < n; k++)
                dp[k] = dot_f32(go, value_at(keys, k) + (size_t)g * keys->v_head, dvw);
            v8f acc = v8_zero();
            int k = 0;
            for (; k + 8 <= n; k += 8) acc = v8_fma(v8_load(pa + k), v8_load(dp + k), acc);
            if (k < n) acc = v8_fma(v8_load_partial(pa + k, n - k, 0.0f), v8_load_partial(dp + k, n - k, 0.0f), acc);
            float sum = v8_sum(acc);
            // the sink's logit has no value: its dp is 0, so d sink = p_sink (0 - sum)
            if (h->sink && dsink) dsink[hh] -= psink[a] * sum;
            // s_k = (q . k_k) * scale  =>  dq += gs_k k_k, dk_k += gs_k q;  and dv_k += p_k do
            for (k = 0; k < n; k++) {
                size_t r = (size_t)(k < keys->len[0] ? (keys->rows ? keys->rows[k] : keys->start[0] + k)
                                                     : keys->start[1] + (k - keys->len[0]));
                float gs = pa[k] * (dp[k] - sum) * h->scale;
                axpy_f32(gq, gs, keys->k + r * keys->k_stride + (size_t)g * keys->k_head, dkw);
                axpy_f32(dk + r * keys->k_stride + (size_t)g * keys->k_head, gs, qh, dkw);
                axpy_f32(dv + r * keys->v_stride + (size_t)g * keys->v_head, pa[k], go, dvw);
            }
        }
}

// ---- training: B sequences -------------------------------------------------------------------------

static int first_key(int i, int W) { return W > 0 && i - W + 1 > 0 ? i - W + 1 : 0; }

// The keys query i of sequence b reads: a span, or the rows sel marks (into rows, T of them).
static void batch_keys(AttnKeys *ks, int *rows, const AttnBatch *a, int b, int i) {
    size_t row0 = (size_t)b * a->T;
    ks->k = a->k + row0 * a->k_stride;
    ks->v = a->v + row0 * a->v_stride;
    ks->k_stride = a->k_stride;
    ks->k_head = a->k_head;
    ks->v_stride = a->v_stride;
    ks->v_head = a->v_head;
    if (a->sel) {
        const unsigned char *m = a->sel + (row0 + (size_t)i) * a->T;
        int n = 0;
        for (int j = 0; j <= i; j++)
            if (m[j]) rows[n++] = j;
        attn_keys_list(ks, rows, n);
    } else {
        attn_keys_span(ks, first_key(i, a->window), i, 0, a->T);
    }
}

// Sequence b, KV head g, all T queries, causal or windowed: keys transposed once (kt, dk x Tp), then
// per query the scores of phase 1 in the transposed form, and phases 2 and 3 as attn_query runs them.
// One query head against n <= ATTN_BLOCK keys (one block), everything in registers: the same
// arithmetic as phases 2 and 3 of a single block (exponentials and their eight-lane sum, o = the
// key-ordered FMA chain from zero, the sink last, then o and p times 1/L), fused so a training step's
// tens of thousands of short rows pay no per-phase overhead. s (n): the scores in, e out; p (n): the
// weights; vrows: value row k at v + k*v_stride.
static void query_one_block(float *o, float *p, float *psink, float *s, int n, float M, const float *sink,
                            const float *v, size_t v_stride, int dv) {
    v8f m = v8_set1(M), acc = v8_zero();
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        v8f e = v8_exp(v8_sub(v8_load(s + k), m));
        v8_store(s + k, e);
        acc = v8_add(acc, e);
    }
    if (k < n) {
        v8f e = v8_exp(v8_sub(v8_load_partial(s + k, n - k, -INFINITY), m));
        v8_store_partial(s + k, e, n - k);
        acc = v8_add(acc, e);
    }
    float L = v8_sum(acc), es = 0.0f;
    if (sink) {
        es = exp_v8_scalar(*sink - M);
        L += es;
    }
    float inv = L > 0.0f ? 1.0f / L : 0.0f;
    v8f iv = v8_set1(inv);
    int c = 0;
    for (; c + 32 <= dv; c += 32) {   // four independent chains per key (one per 8 dims)
        v8f x0 = v8_zero(), x1 = v8_zero(), x2 = v8_zero(), x3 = v8_zero();
        for (k = 0; k < n; k++) {
            v8f w = v8_set1(s[k]);
            const float *vv = v + (size_t)k * v_stride + c;
            x0 = v8_fma(w, v8_load(vv), x0);
            x1 = v8_fma(w, v8_load(vv + 8), x1);
            x2 = v8_fma(w, v8_load(vv + 16), x2);
            x3 = v8_fma(w, v8_load(vv + 24), x3);
        }
        v8_store(o + c, v8_mul(x0, iv));
        v8_store(o + c + 8, v8_mul(x1, iv));
        v8_store(o + c + 16, v8_mul(x2, iv));
        v8_store(o + c + 24, v8_mul(x3, iv));
    }
    for (; c + 16 <= dv; c += 16) {
        v8f x0 = v8_zero(), x1 = v8_zero();
        for (k = 0; k < n; k++) {
            v8f w = v8_set1(s[k]);
            const float *vv = v + (size_t)k * v_stride + c;
            x0 = v8_fma(w, v8_load(vv), x0);
            x1 = v8_fma(w, v8_load(vv + 8), x1);
        }
        v8_store(o + c, v8_mul(x0, iv));
        v8_store(o + c + 8, v8_mul(x1, iv));
    }
    for (; c + 8 <= dv; c += 8) {
        v8f x0 = v8_zero();
        for (k = 0; k < n; k++) x0 = v8_fma(v8_set1(s[k]), v8_load(v + (size_t)k * v_stride + c), x0);
        v8_store(o + c, v8_mul(x0, iv));
    }
    for (; c < dv; c++) {
        float x = 0.0f;
        for (k = 0; k < n; k++) x = fmaf(s[k], v[(size_t)k * v_stride + c], x);
        o[c] = x * inv;
    }
    for (k = 0; k + 8 <= n; k += 8) v8_store(p + k, v8_mul(v8_load(s + k), iv));
    for (; k < n; k++) p[k] = s[k] * inv;
    if (psink) *psink = es * inv;
}

// Sequence b, KV head g, all T queries, causal or windowed: keys transposed once (kt, dk x Tp), then
// per query the scores of phase 1 in the transposed form, and phases 2 and 3 as attn_query runs them.
static void forward_span(float *o, size_t o_stride, float *P, float *psink, const AttnBatch *a, const AttnHeads *h,
                         int b, int g, float *work) {
    int T = a->T, dk = h->dk, dv = h->dv;
    HeadRange hr = head_range(h, g, g + 1);
    int Tp = (T + 7) / 8 * 8 + 8;
    size_t TT = (size_t)T * T;
    float *kt = work, *s = kt + (size_t)dk * Tp, *part = s + (size_t)hr.nh * T;
    transpose_rows(kt, Tp, a->k + (size_t)b * T * a->k_stride + (size_t)g * a->k_head, a->k_stride, T, dk);
    AttnKeys ks = {.k = a->k + (size_t)b * T * a->k_stride, .v = a->v + (size_t)b * T * a->v_stride,
                   .k_stride = a->k_stride, .k_head = a->k_head, .v_stride = a->v_stride, .v_head = a->v_head};
    float M[256], sk[256];
    for (int i = 0; i < T; i++) {
        int lo = first_key(i, a->window), n = i - lo + 1, nb = n_blocks(n);
        size_t r = (size_t)b * T + i;
        const float *q = a->q + r * a->q_stride;
        float *P0 = P + ((size_t)b * h->n_heads + hr.h0) * TT + (size_t)i * T;   // head h0, row i
        for (int j = 0; j < hr.nh; j++) {
            int hh = hr.h0 + j;
            float *Prow = P0 + (size_t)j * TT;
            memset(Prow, 0, sizeof(float) * (size_t)lo);   // keys not read: exactly 0
            memset(Prow + i + 1, 0, sizeof(float) * (size_t)(T - i - 1));
            M[j] = dots_transposed(s + (size_t)j * n, q + (size_t)hh * dk, kt + lo, (size_t)Tp, n, dk, h->scale);
            if (h->sink && h->sink[hh] > M[j]) M[j] = h->sink[hh];
            if (nb == 1)
                query_one_block(o + r * o_stride + (size_t)hh * dv, Prow + lo, sk + j, s + (size_t)j * n, n, M[j],
                                h->sink ? h->sink + hh : NULL, ks.v + (size_t)lo * a->v_stride + (size_t)g * a->v_head,
                                a->v_stride, dv);
        }
        if (nb > 1) {
            attn_keys_span(&ks, lo, i, 0, T);
            for (int bl = 0; bl < nb; bl++) {
                int k0 = bl * ATTN_BLOCK, k1 = k0 + ATTN_BLOCK < n ? k0 + ATTN_BLOCK : n;
                phase_values(part + (size_t)bl * hr.nh * (1 + dv), s, n, M, &ks, h, hr, k0, k1);
            }
            for (int j = 0; j < hr.nh; j++)
                phase_merge(o + r * o_stride, P0 + (size_t)j * TT + lo - (size_t)j * TT, TT, sk, part, s, n, nb, M, h, hr, j);
        }
        if (psink)
            for (int j = 0; j < hr.nh; j++) psink[((size_t)b * h->n_heads + hr.h0 + j) * T + i] = sk[j];
    }
}

void attn_batch_forward(float *o, size_t o_stride, float *P, float *psink, const AttnBatch *a, const AttnHeads *h) {
    int B = a->B, T = a->T, H = h->n_heads, G = h->n_kv_heads, grp = H / G;
    size_t TT = (size_t)T * T;
    CHECK(grp <= 256, "attention: %d query heads per KV head (at most 256)", grp);
    int Tp = (T + 7) / 8 * 8 + 8;
    size_t span_work = (size_t)h->dk * Tp + (size_t)grp * T + (size_t)n_blocks(T) * grp * (1 + (size_t)h->dv);
    #pragma omp parallel
    {
        float *scratch = mallocCheck(sizeof(float) * (attn_scratch_floats(h, T) + (size_t)grp * (T + 1) + span_work));
        float *pbuf = scratch + attn_scratch_floats(h, T), *sbuf = pbuf + (size_t)grp * T, *work = sbuf + grp;
        int *rows = mallocCheck(sizeof(int) * (size_t)T);
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < G; g++) {
                if (!a->sel) {
                    forward_span(o, o_stride, P, psink, a, h, b, g, work);
                    continue;
                }
                // a key set per query (DSA): attn_query, then the weights scattered to their keys
                for (int i = 0; i < T; i++) {
                    AttnKeys ks;
                    batch_keys(&ks, rows, a, b, i);
                    size_t r = (size_t)b * T + i;
                    float *P0 = P + ((size_t)b * H + (size_t)g * grp) * TT + (size_t)i * T;   // head g*grp, row i
                    attn_query(o + r * o_stride, pbuf, (size_t)T, psink ? sbuf : NULL, a->q + r * a->q_stride, &ks, h,
                               g, g + 1, scratch);
                    for (int j = 0; j < grp; j++) {
                        float *Prow = P0 + (size_t)j * TT;
                        memset(Prow, 0, sizeof(float) * (size_t)T);   // keys not read: exactly 0
                        for (int k = 0; k < ks.n; k++) Prow[ks.rows[k]] = pbuf[(size_t)j * T + k];
                        if (psink) psink[((size_t)b * H + (size_t)g * grp + j) * T + i] = sbuf[j];
                    }
                }
            }
        free(scratch);
        free(rows);
    }
}

// dst (d) += sum_k coef[k] * rows[k] (row k at x + k*stride), k = 0..n-1, in a fixed order: 32 dims at
// a time with the keys dealt into two partial sums (k % 2), or 8 at a time into four (k % 4), joined in
// a fixed tree and added to dst. Several independent FMA chains, each coefficient broadcast once for
// all the dims it scales.
static void axpy_rows(float *dst, const float *coef, const float *x, size_t stride, int n, int d) {
    int c = 0;
    for (; c + 32 <= d; c += 32) {
        v8f a0 = v8_zero(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int k = 0;
        for (; k + 2 <= n; k += 2) {
            const float *r = x + (size_t)k * stride + c, *r2 = r + stride;
            v8f w = v8_set1(coef[k]), w2 = v8_set1(coef[k + 1]);
            a0 = v8_fma(w, v8_load(r), a0);
            a1 = v8_fma(w, v8_load(r + 8), a1);
            a2 = v8_fma(w, v8_load(r + 16), a2);
            a3 = v8_fma(w, v8_load(r + 24), a3);
            b0 = v8_fma(w2, v8_load(r2), b0);
            b1 = v8_fma(w2, v8_load(r2 + 8), b1);
            b2 = v8_fma(w2, v8_load(r2 + 16), b2);
            b3 = v8_fma(w2, v8_load(r2 + 24), b3);
        }
        if (k < n) {
            const float *r = x + (size_t)k * stride + c;
            v8f w = v8_set1(coef[k]);
            a0 = v8_fma(w, v8_load(r), a0);
            a1 = v8_fma(w, v8_load(r + 8), a1);
            a2 = v8_fma(w, v8_load(r + 16), a2);
            a3 = v8_fma(w, v8_load(r + 24), a3);
        }
        v8_store(dst + c, v8_add(v8_load(dst + c), v8_add(a0, b0)));
        v8_store(dst + c + 8, v8_add(v8_load(dst + c + 8), v8_add(a1, b1)));
        v8_store(dst + c + 16, v8_add(v8_load(dst + c + 16), v8_add(a2, b2)));
        v8_store(dst + c + 24, v8_add(v8_load(dst + c + 24), v8_add(a3, b3)));
    }
    for (; c + 8 <= d; c += 8) {
        v8f s0 = v8_zero(), s1 = v8_zero(), s2 = v8_zero(), s3 = v8_zero();
        int k = 0;
        for (; k + 4 <= n; k += 4) {
            const float *r = x + (size_t)k * stride + c;
            s0 = v8_fma(v8_set1(coef[k]), v8_load(r), s0);
            s1 = v8_fma(v8_set1(coef[k + 1]), v8_load(r + stride), s1);
            s2 = v8_fma(v8_set1(coef[k + 2]), v8_load(r + 2 * stride), s2);
            s3 = v8_fma(v8_set1(coef[k + 3]), v8_load(r + 3 * stride), s3);
        }
        if (k < n) s0 = v8_fma(v8_set1(coef[k]), v8_load(x + (size_t)k * stride + c), s0);
        if (k + 1 < n) s1 = v8_fma(v8_set1(coef[k + 1]), v8_load(x + (size_t)(k + 1) * stride + c), s1);
        if (k + 2 < n) s2 = v8_fma(v8_set1(coef[k + 2]), v8_load(x + (size_t)(k + 2) * stride + c), s2);
        v8_store(dst + c, v8_add(v8_load(dst + c), v8_add(v8_add(s0, s1), v8_add(s2, s3))));
    }
    for (; c < d; c++) {
        float t = 0.0f;
        for (int k = 0; k < n; k++) t = fmaf(coef[k], x[(size_t)k * stride + c], t);
        dst[c] += t;
    }
}

// Sequence b, KV head g, causal or windowed: the backward of forward_span for its T queries. Per head:
// first every query row (dp from the values transposed once, so eight keys at a time; the softmax's
// ds; dq), keeping gs = ds * scale transposed (gst[k][i]); then every key row, whose dk and dv are sums
// over the queries that read it: dk_k += sum_i gs_ik q_i, dv_k += sum_i p_ik do_i, each accumulated
// in registers (axpy_rows) instead of one load-add-store per query.
static void backward_span(float *dq, float *dk, float *dv, float *dsink_b, const float *d_o, size_t do_stride,
                          const float *P, const float *psink, const AttnBatch *a, const AttnHeads *h, int b, int g,
                          float *work) {
    int T = a->T, W = a->window, dkw = h->dk, dvw = h->dv, grp = h->n_heads / h->n_kv_heads, h0 = g * grp;
    int Tp = (T + 7) / 8 * 8 + 8;
    size_t TT = (size_t)T * T, row0 = (size_t)b * T;
    float *vt = work, *dp = vt + (size_t)dvw * Tp, *gs = dp + Tp, *gst = gs + TT, *pt = gst + TT;
    const float *kb = a->k + row0 * a->k_stride + (size_t)g * a->k_head;
    const float *vb = a->v + row0 * a->v_stride + (size_t)g * a->v_head;
    float *dkb = dk + row0 * a->k_stride + (size_t)g * a->k_head, *dvb = dv + row0 * a->v_stride + (size_t)g * a->v_head;
    transpose_rows(vt, Tp, vb, a->v_stride, T, dvw);
    for (int j = 0; j < grp; j++) {
        int hh = h0 + j;
        const float *Ph = P + ((size_t)b * h->n_heads + hh) * TT;
        const float *qb = a->q + row0 * a->q_stride + (size_t)hh * dkw, *gob = d_o + row0 * do_stride + (size_t)hh * dvw;
        for (int i = 0; i < T; i++) {
            int lo = first_key(i, W), n = i - lo + 1;
            const float *p = Ph + (size_t)i * T + lo, *go = gob + (size_t)i * do_stride;
            // o = sum_k p_k v_k  =>  dp_k = do . v_k;  softmax: ds_k = p_k (dp_k - sum_k p_k dp_k)
            dots_transposed(dp, go, vt + lo, (size_t)Tp, n, dvw, 1.0f);
            v8f acc = v8_zero();
            int k = 0;
            for (; k + 8 <= n; k += 8) acc = v8_fma(v8_load(p + k), v8_load(dp + k), acc);
            if (k < n) acc = v8_fma(v8_load_partial(p + k, n - k, 0.0f), v8_load_partial(dp + k, n - k, 0.0f), acc);
            float sum = v8_sum(acc);
            if (h->sink && dsink_b) dsink_b[hh] -= psink[((size_t)b * h->n_heads + hh) * T + i] * sum;
            v8f vs = v8_set1(sum), sc = v8_set1(h->scale);
            for (k = 0; k + 8 <= n; k += 8)
                v8_store(dp + k, v8_mul(v8_mul(v8_load(p + k), v8_sub(v8_load(dp + k), vs)), sc));
            for (; k < n; k++) dp[k] = p[k] * (dp[k] - sum) * h->scale;
            // s_k = (q . k_k) * scale  =>  dq += gs_k k_k (now), dk_k += gs_k q (below)
            axpy_rows(dq + (row0 + i) * a->q_stride + (size_t)hh * dkw, dp, kb + (size_t)lo * a->k_stride, a->k_stride,
                      n, dkw);
            float *gsi = gs + (size_t)i * T;   // row i of gs (T x T): this query's gs at its keys, 0 elsewhere
            memset(gsi, 0, sizeof(float) * (size_t)lo);
            memcpy(gsi + lo, dp, sizeof(float) * (size_t)n);
            memset(gsi + i + 1, 0, sizeof(float) * (size_t)(T - i - 1));
        }
        transpose_square(gst, gs, T);
        transpose_square(pt, Ph, T);
        // key k is read by queries k .. k + W - 1 (all later ones without a window)
        for (int k = 0; k < T; k++) {
            int cnt = W > 0 && k + W < T ? W : T - k;
            axpy_rows(dkb + (size_t)k * a->k_stride, gst + (size_t)k * T + k, qb + (size_t)k * a->q_stride, a->q_stride,
                      cnt, dkw);
            axpy_rows(dvb + (size_t)k * a->v_stride, pt + (size_t)k * T + k, gob + (size_t)k * do_stride, do_stride, cnt,
                      dvw);
        }
    }
}

void attn_batch_backward(float *dq, float *dk, float *dv, float *dsink, const float *d_o, size_t do_stride,
                         const float *P, const float *psink, const AttnBatch *a, const AttnHeads *h) {
    int B = a->B, T = a->T, H = h->n_heads, G = h->n_kv_heads, grp = H / G;
    size_t TT = (size_t)T * T;
    int Tp = (T + 7) / 8 * 8 + 8;
    // each (b, head) adds its sink gradient into its own slot; the slots meet below in batch order
    float *dsink_b = h->sink && dsink ? callocCheck((size_t)B * H, sizeof(float)) : NULL;
    #pragma omp parallel
    {
        size_t nbuf = (size_t)T + (size_t)grp * (T + 1) + (size_t)h->dv * Tp + (size_t)Tp + 3 * TT;
        float *buf = mallocCheck(sizeof(float) * nbuf);
        float *dp = buf, *pbuf = buf + T, *sbuf = pbuf + (size_t)grp * T, *work = sbuf + grp;
        int *rows = mallocCheck(sizeof(int) * (size_t)T);
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < G; g++) {
                if (!a->sel) {
                    backward_span(dq, dk, dv, dsink_b ? dsink_b + (size_t)b * H : NULL, d_o, do_stride, P, psink, a, h,
                                  b, g, work);
                    continue;
                }
                for (int i = 0; i < T; i++) {
                    AttnKeys ks;
                    batch_keys(&ks, rows, a, b, i);
                    size_t r = (size_t)b * T + i, row0 = (size_t)b * T;
                    const float *P0 = P + ((size_t)b * H + (size_t)g * grp) * TT + (size_t)i * T;
                    for (int j = 0; j < grp; j++) {
                        for (int k = 0; k < ks.n; k++) pbuf[(size_t)j * T + k] = P0[(size_t)j * TT + ks.rows[k]];
                        if (psink) sbuf[j] = psink[((size_t)b * H + (size_t)g * grp + j) * T + i];
                    }
                    attn_query_backward(dq + r * a->q_stride, dk + row0 * a->k_stride, dv + row0 * a->v_stride,
                                        dsink_b ? dsink_b + (size_t)b * H : NULL, d_o + r * do_stride, pbuf, (size_t)T,
                                        sbuf, a->q + r * a->q_stride, &ks, h, g, g + 1, dp);
                }
            }
        free(buf);
        free(rows);
    }
    if (dsink_b) {
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < H; hh++) dsink[hh] += dsink_b[(size_t)b * H + hh];
        free(dsink_b);
    }
}
