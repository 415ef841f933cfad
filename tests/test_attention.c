// test_attention.c: the one attention core (common/attention.c) on its own: a decode step reproduces the
// training forward bit for bit (also across blocks of ATTN_BLOCK keys and through a ring buffer), the
// thread count never changes a bit, both equal a double-precision reference, a learned sink takes its
// share of every row, and the backward (sink included) matches finite differences.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "check.h"
#include "helpers.h"
#include "rng.h"

// Causal (window W > 0: the last W keys) attention of query i in double precision, one head h of a
// batch laid out as AttnBatch describes with B = 1: o (dv).
static void reference_query(double *o, double *p, const AttnBatch *a, const AttnHeads *h, int i, int hh) {
    int lo = a->window > 0 && i - a->window + 1 > 0 ? i - a->window + 1 : 0, g = hh / (h->n_heads / h->n_kv_heads);
    double mx = h->sink ? h->sink[hh] : -INFINITY, sum = 0.0;
    double *s = malloc(sizeof(double) * (size_t)(i + 1));
    for (int j = lo; j <= i; j++) {
        double d = 0.0;
        for (int c = 0; c < h->dk; c++)
            d += (double)a->q[(size_t)i * a->q_stride + (size_t)hh * h->dk + c] *
                 a->k[(size_t)j * a->k_stride + (size_t)g * a->k_head + c];
        s[j] = d * h->scale;
        if (s[j] > mx) mx = s[j];
    }
    for (int j = lo; j <= i; j++) sum += exp(s[j] - mx);
    if (h->sink) sum += exp(h->sink[hh] - mx);
    for (int c = 0; c < h->dv; c++) o[c] = 0.0;
    for (int j = lo; j <= i; j++) {
        double w = exp(s[j] - mx) / sum;
        if (p) p[j - lo] = w;
        for (int c = 0; c < h->dv; c++) o[c] += w * a->v[(size_t)j * a->v_stride + (size_t)g * a->v_head + c];
    }
    free(s);
}

typedef struct {
    AttnHeads h;
    AttnBatch a;
    float *q, *k, *v, *sink;
} Case;

// One sequence of T tokens: H query heads of dk, G KV heads of dk / dv, random contents.
static Case case_new(int T, int H, int G, int dk, int dv, int W, int with_sink, uint64_t seed) {
    Case c;
    memset(&c, 0, sizeof c);
    Rng rng;
    rng_seed(&rng, seed);
    c.q = test_randn(&rng, (size_t)T * H * dk, 1.0f);
    c.k = test_randn(&rng, (size_t)T * G * dk, 1.0f);
    c.v = test_randn(&rng, (size_t)T * G * dv, 1.0f);
    c.sink = with_sink ? test_randn(&rng, (size_t)H, 1.0f) : NULL;
    c.h = (AttnHeads){.n_heads = H, .n_kv_heads = G, .dk = dk, .dv = dv, .scale = 1.0f / sqrtf((float)dk), .sink = c.sink};
    c.a = (AttnBatch){.B = 1, .T = T, .window = W, .q = c.q, .q_stride = (size_t)H * dk, .k = c.k,
                      .k_stride = (size_t)G * dk, .k_head = (size_t)dk, .v = c.v, .v_stride = (size_t)G * dv,
                      .v_head = (size_t)dv};
    return c;
}

static void case_free(Case *c) {
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->sink);
}

// The batch forward, then every query again through attn_query (what decode runs): o, P and the sink's
// weight must be the same bits; and both must be close to the double-precision reference.
static void decode_reproduces_forward(int T, int H, int G, int dk, int dv, int W, int with_sink) {
    Case c = case_new(T, H, G, dk, dv, W, with_sink, 100 + T + W);
    size_t TT = (size_t)T * T;
    float *o = mallocCheck(sizeof(float) * (size_t)T * H * dv), *P = mallocCheck(sizeof(float) * H * TT);
    float *ps = mallocCheck(sizeof(float) * (size_t)H * T);
    attn_batch_forward(o, (size_t)H * dv, P, with_sink ? ps : NULL, &c.a, &c.h);
    float *work = mallocCheck(sizeof(float) * attn_scratch_floats(&c.h, T));
    float *od = mallocCheck(sizeof(float) * (size_t)H * dv), *pd = mallocCheck(sizeof(float) * (size_t)H * T);
    float *sd = mallocCheck(sizeof(float) * (size_t)H);
    double *ref = malloc(sizeof(double) * (size_t)dv);
    for (int i = 0; i < T; i++) {
        int lo = W > 0 && i - W + 1 > 0 ? i - W + 1 : 0, n = i - lo + 1;
        AttnKeys ks = {.k = c.k, .v = c.v, .k_stride = c.a.k_stride, .k_head = c.a.k_head, .v_stride = c.a.v_stride,
                       .v_head = c.a.v_head};
        attn_keys_span(&ks, lo, i, 0, T);
        attn_query(od, pd, (size_t)T, with_sink ? sd : NULL, c.q + (size_t)i * H * dk, &ks, &c.h, 0, G, work);
        for (int hh = 0; hh < H; hh++) {
            for (int e = 0; e < dv; e++)
                cr_assert(od[hh * dv + e] == o[((size_t)i * H + hh) * dv + e],
                          "T %d W %d query %d head %d dim %d: decode %.9g forward %.9g", T, W, i, hh, e,
                          (double)od[hh * dv + e], (double)o[((size_t)i * H + hh) * dv + e]);
            for (int k = 0; k < n; k++)
                cr_assert(pd[(size_t)hh * T + k] == P[hh * TT + (size_t)i * T + lo + k], "T %d query %d head %d key %d: weight",
                          T, i, hh, lo + k);
            if (with_sink) cr_assert(sd[hh] == ps[(size_t)hh * T + i], "query %d head %d: sink weight", i, hh);
            if (i % 97 == 0 || i == T - 1) {
                reference_query(ref, NULL, &c.a, &c.h, i, hh);
                for (int e = 0; e < dv; e++)
                    cr_assert(fabs(ref[e] - od[hh * dv + e]) <= 2e-5 * fmax(1.0, fabs(ref[e])),
                              "query %d head %d dim %d: %.9g, double reference %.9g", i, hh, e, (double)od[hh * dv + e], ref[e]);
            }
        }
    }
    free(o); free(P); free(ps); free(work); free(od); free(pd); free(sd); free(ref);
    case_free(&c);
}

Test(attention, decode_equals_forward_short) { decode_reproduces_forward(40, 4, 2, 16, 16, 0, 0); }
Test(attention, decode_equals_forward_odd_widths) { decode_reproduces_forward(33, 3, 1, 12, 20, 0, 0); }
Test(attention, decode_equals_forward_window) { decode_reproduces_forward(50, 4, 4, 8, 8, 7, 0); }
Test(attention, decode_equals_forward_with_sink) { decode_reproduces_forward(30, 4, 2, 16, 8, 0, 1); }
// past ATTN_BLOCK keys a query's sums are made block by block and merged in block order
Test(attention, decode_equals_forward_across_blocks) { decode_reproduces_forward(ATTN_BLOCK * 2 + 77, 2, 1, 16, 16, 0, 0); }
Test(attention, decode_equals_forward_window_across_blocks) {
    decode_reproduces_forward(ATTN_BLOCK + 300, 2, 2, 8, 8, ATTN_BLOCK + 100, 0);
}

// A ring buffer holding positions lo..hi wraps once: the two runs must name exactly those rows in order.
Test(attention, ring_spans_are_two_runs) {
    AttnKeys ks;
    int cap = 10, base = 3;
    for (int lo = 3; lo < 30; lo++)
        for (int hi = lo - 1; hi < lo + cap; hi++) {
            attn_keys_span(&ks, lo, hi, base, cap);
            cr_assert_eq(ks.n, hi - lo + 1);
            cr_assert_eq(ks.len[0] + ks.len[1], ks.n);
            for (int k = 0; k < ks.n; k++) {
                int row = k < ks.len[0] ? ks.start[0] + k : ks.start[1] + (k - ks.len[0]);
                cr_assert_eq(row, (lo + k - base) % cap, "lo %d hi %d key %d: row %d", lo, hi, k, row);
            }
        }
}

// A long decode step is split over threads by blocks and merged in block order: 1 and 2 threads give
// the same bits. The keys sit in a ring that wraps, so the step reads two runs.
Test(attention, threads_do_not_change_a_long_step) {
    int H = 4, G = 2, dk = 32, dv = 16, cap = ATTN_PAR_MIN + 3 * ATTN_BLOCK + 5, base = 0;
    Rng rng;
    rng_seed(&rng, 77);
    float *k = test_randn(&rng, (size_t)cap * G * dk, 1.0f), *v = test_randn(&rng, (size_t)cap * G * dv, 1.0f);
    float *q = test_randn(&rng, (size_t)H * dk, 2.0f);
    AttnHeads h = {.n_heads = H, .n_kv_heads = G, .dk = dk, .dv = dv, .scale = 1.0f / sqrtf((float)dk)};
    AttnKeys ks = {.k = k, .v = v, .k_stride = (size_t)G * dk, .k_head = (size_t)dk, .v_stride = (size_t)G * dv,
                   .v_head = (size_t)dv};
    int lo = 2 * cap - ATTN_PAR_MIN - 900, hi = lo + cap - 1;   // wraps: rows lo % cap .. cap-1, then 0 ..
    attn_keys_span(&ks, lo, hi, base, cap);
    cr_assert(ks.len[1] > 0, "the span should wrap");
    float *work = mallocCheck(sizeof(float) * attn_scratch_floats(&h, cap));
    float o1[64], o2[64];
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    attn_query(o1, NULL, 0, NULL, q, &ks, &h, 0, G, work);
    omp_set_num_threads(2);
    attn_query(o2, NULL, 0, NULL, q, &ks, &h, 0, G, work);
    omp_set_num_threads(saved);
    cr_assert(memcmp(o1, o2, sizeof(float) * (size_t)H * dv) == 0, "1 and 2 threads differ");
    // and the answer is right: head 0 against a double-precision sum over the same rows
    double mx = -INFINITY, sum = 0.0, ref[16] = {0};
    double *s = malloc(sizeof(double) * (size_t)cap);
    for (int j = 0; j < cap; j++) {
        int row = (lo + j - base) % cap;
        double d = 0.0;
        for (int c = 0; c < dk; c++) d += (double)q[c] * k[(size_t)row * G * dk + c];
        s[j] = d * h.scale;
        mx = fmax(mx, s[j]);
    }
    for (int j = 0; j < cap; j++) sum += exp(s[j] - mx);
    for (int j = 0; j < cap; j++) {
        int row = (lo + j - base) % cap;
        for (int c = 0; c < dv; c++) ref[c] += exp(s[j] - mx) / sum * v[(size_t)row * G * dv + c];
    }
    for (int c = 0; c < dv; c++) cr_assert(fabs(ref[c] - o1[c]) < 1e-5, "dim %d: %.9g vs %.9g", c, (double)o1[c], ref[c]);
    free(s); free(k); free(v); free(q); free(work);
}

// With a learned sink a row's weights on the real keys sum to 1 - p_sink < 1, and the sink's weight is
// exp(sink - M) / L against the double-precision reference.
Test(attention, sink_takes_its_share) {
    int T = 12, H = 3;
    Case c = case_new(T, H, 1, 8, 8, 0, 1, 9);
    c.sink[1] = 4.0f;   // one head with a strong sink
    float *o = mallocCheck(sizeof(float) * (size_t)T * H * 8), *P = mallocCheck(sizeof(float) * H * T * T);
    float *ps = mallocCheck(sizeof(float) * (size_t)H * T);
    attn_batch_forward(o, (size_t)H * 8, P, ps, &c.a, &c.h);
    double p[16];
    for (int hh = 0; hh < H; hh++)
        for (int i = 0; i < T; i++) {
            double row = 0.0, ref_row = 0.0, ref_o[8];
            for (int j = 0; j < T; j++) row += P[((size_t)hh * T + i) * T + j];
            reference_query(ref_o, p, &c.a, &c.h, i, hh);
            for (int j = 0; j <= i; j++) ref_row += p[j];
            cr_assert(fabs(row + ps[(size_t)hh * T + i] - 1.0) < 1e-5, "head %d row %d: keys %.7f + sink %.7f", hh, i, row,
                      (double)ps[(size_t)hh * T + i]);
            cr_assert(fabs(row - ref_row) < 1e-5, "head %d row %d: %.7f vs reference %.7f", hh, i, row, ref_row);
            cr_assert(row < 1.0, "head %d row %d gives all of its weight to the keys", hh, i);
        }
    cr_assert(ps[(size_t)1 * T + 0] > 0.9f, "a sink logit of 4 against one key should take most of the row");
    free(o); free(P); free(ps);
    case_free(&c);
}

// loss = sum(o * R) in double; the backward's dq, dk, dv and dsink against central differences.
static double loss_of(Case *c, const float *R, float *o, float *P, float *ps) {
    attn_batch_forward(o, (size_t)c->h.n_heads * c->h.dv, P, c->sink ? ps : NULL, &c->a, &c->h);
    double L = 0.0;
    for (int i = 0; i < c->a.T * c->h.n_heads * c->h.dv; i++) L += (double)o[i] * R[i];
    return L;
}

static double fd_rel_error(Case *c, float *v, const float *ana, int n, const float *R, float *o, float *P, float *ps) {
    double num2 = 0.0, den2 = 0.0;
    for (int i = 0; i < n; i++) {
        float keep = v[i];
        v[i] = keep + 1e-2f;
        double lp = loss_of(c, R, o, P, ps);
        v[i] = keep - 1e-2f;
        double lm = loss_of(c, R, o, P, ps);
        v[i] = keep;
        double num = (lp - lm) / 2e-2;
        num2 += (num - ana[i]) * (num - ana[i]);
        den2 += (double)ana[i] * ana[i];
    }
    return sqrt(num2 / (den2 > 0 ? den2 : 1.0));
}

static void backward_matches_fd(int W, int with_sink) {
    int T = 9, H = 4, G = 2, dk = 8, dv = 8;
    Case c = case_new(T, H, G, dk, dv, W, with_sink, 55 + W);
    Rng rng;
    rng_seed(&rng, 3);
    float *R = test_randn(&rng, (size_t)T * H * dv, 1.0f);
    float *o = mallocCheck(sizeof(float) * (size_t)T * H * dv), *P = mallocCheck(sizeof(float) * H * T * T);
    float *ps = mallocCheck(sizeof(float) * (size_t)H * T);
    loss_of(&c, R, o, P, ps);
    float *dq = calloc((size_t)T * H * dk, sizeof(float)), *dk_ = calloc((size_t)T * G * dk, sizeof(float));
    float *dv_ = calloc((size_t)T * G * dv, sizeof(float)), *dsink = calloc((size_t)H, sizeof(float));
    attn_batch_backward(dq, dk_, dv_, dsink, R, (size_t)H * dv, P, with_sink ? ps : NULL, &c.a, &c.h);
    cr_assert(fd_rel_error(&c, c.q, dq, T * H * dk, R, o, P, ps) < 2e-3, "dq");
    cr_assert(fd_rel_error(&c, c.k, dk_, T * G * dk, R, o, P, ps) < 2e-3, "dk");
    cr_assert(fd_rel_error(&c, c.v, dv_, T * G * dv, R, o, P, ps) < 2e-3, "dv");
    if (with_sink) cr_assert(fd_rel_error(&c, c.sink, dsink, H, R, o, P, ps) < 2e-3, "dsink");
    free(R); free(o); free(P); free(ps); free(dq); free(dk_); free(dv_); free(dsink);
    case_free(&c);
}

Test(attention, backward_matches_finite_differences) { backward_matches_fd(0, 0); }
Test(attention, backward_window_matches_finite_differences) { backward_matches_fd(3, 0); }
Test(attention, backward_sink_matches_finite_differences) { backward_matches_fd(0, 1); }

// The training backward splits (sequence, KV head) over threads: 1 and 2 threads give the same bits.
Test(attention, backward_thread_count_independent) {
    int T = 20, H = 4, G = 2, dk = 16, dv = 16, B = 3;
    Rng rng;
    rng_seed(&rng, 8);
    float *q = test_randn(&rng, (size_t)B * T * H * dk, 1.0f), *k = test_randn(&rng, (size_t)B * T * G * dk, 1.0f);
    float *v = test_randn(&rng, (size_t)B * T * G * dv, 1.0f), *R = test_randn(&rng, (size_t)B * T * H * dv, 1.0f);
    AttnHeads h = {.n_heads = H, .n_kv_heads = G, .dk = dk, .dv = dv, .scale = 0.25f};
    AttnBatch a = {.B = B, .T = T, .q = q, .q_stride = (size_t)H * dk, .k = k, .k_stride = (size_t)G * dk,
                   .k_head = (size_t)dk, .v = v, .v_stride = (size_t)G * dv, .v_head = (size_t)dv};
    float *o = mallocCheck(sizeof(float) * (size_t)B * T * H * dv), *P = mallocCheck(sizeof(float) * B * H * T * T);
    size_t nq = (size_t)B * T * H * dk, nk = (size_t)B * T * G * dk;
    float *g1 = calloc(nq + 2 * nk, sizeof(float)), *g2 = calloc(nq + 2 * nk, sizeof(float));
    int saved = omp_get_max_threads();
    for (int t = 1; t <= 2; t++) {
        omp_set_num_threads(t);
        float *g = t == 1 ? g1 : g2;
        attn_batch_forward(o, (size_t)H * dv, P, NULL, &a, &h);
        attn_batch_backward(g, g + nq, g + nq + nk, NULL, R, (size_t)H * dv, P, NULL, &a, &h);
    }
    omp_set_num_threads(saved);
    cr_assert(memcmp(g1, g2, sizeof(float) * (nq + 2 * nk)) == 0, "1 and 2 threads give different gradients");
    free(q); free(k); free(v); free(R); free(o); free(P); free(g1); free(g2);
}

// Keys from two buffers (a list of rows of one, then a run of the other: compressed entries, then the
// raw recent tokens) give the same bits as the same keys copied into one buffer in that order.
Test(attention, two_buffers_equal_one) {
    int H = 2, dk = 16, dv = 8, na = 40, nb = 9;
    Rng rng;
    rng_seed(&rng, 12);
    float *ka = test_randn(&rng, (size_t)na * dk, 1.0f), *va = test_randn(&rng, (size_t)na * dv, 1.0f);
    float *kb = test_randn(&rng, (size_t)nb * dk, 1.0f), *vb = test_randn(&rng, (size_t)nb * dv, 1.0f);
    float *q = test_randn(&rng, (size_t)H * dk, 1.0f), *sink = test_randn(&rng, (size_t)H, 1.0f);
    int rows[5] = {3, 7, 8, 20, 39};
    AttnHeads h = {.n_heads = H, .n_kv_heads = 1, .dk = dk, .dv = dv, .scale = 0.25f, .sink = sink};
    // the two-buffer form: rows of a, then rows 2..8 of b
    AttnKeys two = {.k = ka, .v = va, .k_stride = (size_t)dk, .k_head = (size_t)dk, .v_stride = (size_t)dv,
                    .v_head = (size_t)dv, .n = 5 + 7, .rows = rows, .start = {0, 2}, .len = {5, 7}, .k1 = kb, .v1 = vb};
    // the same keys in one buffer
    float *kc = mallocCheck(sizeof(float) * 12 * dk), *vc = mallocCheck(sizeof(float) * 12 * dv);
    for (int i = 0; i < 12; i++) {
        const float *ks = i < 5 ? ka + (size_t)rows[i] * dk : kb + (size_t)(2 + i - 5) * dk;
        const float *vs = i < 5 ? va + (size_t)rows[i] * dv : vb + (size_t)(2 + i - 5) * dv;
        memcpy(kc + (size_t)i * dk, ks, sizeof(float) * dk);
        memcpy(vc + (size_t)i * dv, vs, sizeof(float) * dv);
    }
    AttnKeys one = {.k = kc, .v = vc, .k_stride = (size_t)dk, .k_head = (size_t)dk, .v_stride = (size_t)dv,
                    .v_head = (size_t)dv};
    attn_keys_span(&one, 0, 11, 0, 12);
    float *work = mallocCheck(sizeof(float) * attn_scratch_floats(&h, 12));
    float o1[16], o2[16], p1[24], p2[24], s1[2], s2[2];
    attn_query(o1, p1, 12, s1, q, &two, &h, 0, 1, work);
    attn_query(o2, p2, 12, s2, q, &one, &h, 0, 1, work);
    cr_assert(memcmp(o1, o2, sizeof(float) * H * dv) == 0 && memcmp(p1, p2, sizeof p1) == 0 && memcmp(s1, s2, sizeof s1) == 0,
              "two buffers and one buffer differ");
    free(ka); free(va); free(kb); free(vb); free(q); free(sink); free(kc); free(vc); free(work);
}
