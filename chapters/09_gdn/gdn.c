// gdn.c: Gated DeltaNet: the delta-rule core (recurrent and chunked forms, backward through time), the
// parameter tables of the linear mixers, the layer around the core that KDA shares (projections, conv,
// q/k norm, gates, gated output norm, decode cache, chapter probes), and the "gdn" mixer on top of it.
//
// Dims throughout: d = d_model, Hk key heads, Hv value heads, dk, dv head dims, K conv kernel,
// Cc = 2*Hk*dk + Hv*dv conv channels, N = B*T rows.
#include "09_gdn/gdn.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "09_gdn/shortconv.h"
#include "check.h"
#include "mathx.h"
#include "rng.h"

// ================================================================================================
// The delta-rule core
// ================================================================================================

// One value head of one sequence: where its token-0 inputs start (strides come from DeltaDims).
typedef struct {
    const float *q, *k, *v, *beta, *g;
    float *o;
} HeadSeq;

static HeadSeq head_seq(const float *q, const float *k, const float *v, const float *beta, const float *g,
                        float *o, const DeltaDims *z, int b, int h) {
    int kh = h / (z->Hv / z->Hk);   // the key head this value head reads
    size_t r0 = (size_t)b * z->T;   // row of token 0
    return (HeadSeq){
        .q = q + r0 * z->qk_stride + (size_t)kh * z->dk,
        .k = k + r0 * z->qk_stride + (size_t)kh * z->dk,
        .v = v + r0 * z->v_stride + (size_t)h * z->dv,
        .beta = beta + r0 * z->Hv + h,
        .g = g + (r0 * z->Hv + h) * z->g_dim,
        .o = o ? o + r0 * z->Hv * z->dv + (size_t)h * z->dv : NULL,
    };
}

static void check_dims(const DeltaDims *z) {
    CHECK(z->B > 0 && z->T > 0 && z->Hk > 0 && z->Hv > 0 && z->Hv % z->Hk == 0 && z->dk > 0 && z->dv > 0 &&
              (z->g_dim == 1 || z->g_dim == z->dk),
          "delta rule: impossible dims B %d T %d Hk %d Hv %d dk %d dv %d g_dim %d", z->B, z->T, z->Hk, z->Hv, z->dk,
          z->dv, z->g_dim);
}

// One token of the recurrence on S (dk, dv); r (dv) scratch receives v - S'^T k (S' the decayed state),
// o (dv) the output (may be NULL). Shared by the recurrent form, decode and the backward's recompute.
// Two passes over S, each row c once with contiguous inner loops over dv: decay + r, then update + o.
// (Row c is final before it is read, and every sum runs over c in order: the same bits as four passes.)
static void token_step(float *o, float *S, float *r, const float *q, const float *k, const float *v, float beta,
                       const float *g, int g_dim, int dk, int dv) {
    // EXERCISE ex09.1 begin: decay S, then the delta rule: write beta (v - S^T k) under key k; o = S^T q (if o)
    // EXERCISE ex09.1 stub: (void)S; (void)r; (void)q; (void)k; (void)v; (void)beta; (void)g; (void)g_dim; (void)dk;
    // EXERCISE ex09.1 stub: if (o) for (int e = 0; e < dv; e++) o[e] = 0.0f;
    for (int e = 0; e < dv; e++) r[e] = v[e];
    for (int c = 0; c < dk; c++) {
        float a = expf(g[g_dim == 1 ? 0 : c]), kc = k[c];
        float *Sc = S + (size_t)c * dv;
        for (int e = 0; e < dv; e++) {
            Sc[e] *= a;              // S' = Diag(a) S
            r[e] -= Sc[e] * kc;      // r = v - S'^T k
        }
    }
    if (o)
        for (int e = 0; e < dv; e++) o[e] = 0.0f;
    for (int c = 0; c < dk; c++) {
        float kc = k[c], qc = o ? q[c] : 0.0f;
        float *Sc = S + (size_t)c * dv;
        for (int e = 0; e < dv; e++) Sc[e] += kc * (beta * r[e]);   // S += k u^T, u = beta r
        if (o)
            for (int e = 0; e < dv; e++) o[e] += Sc[e] * qc;        // o = S^T q
    }
    // EXERCISE ex09.1 end
}

void delta_rule_recurrent(float *o, float *S, const float *q, const float *k, const float *v, const float *beta,
                          const float *g, const DeltaDims *z) {
    check_dims(z);
    size_t SS = (size_t)z->dk * z->dv;
    #pragma omp parallel
    {
        float *Sl = S ? NULL : mallocCheck(sizeof(float) * SS);
        float *r = mallocCheck(sizeof(float) * (size_t)z->dv);
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < z->B; b++)
            for (int h = 0; h < z->Hv; h++) {
                HeadSeq s = head_seq(q, k, v, beta, g, o, z, b, h);
                float *Sh = S ? S + ((size_t)b * z->Hv + h) * SS : Sl;
                if (!S) memset(Sh, 0, sizeof(float) * SS);
                for (int t = 0; t < z->T; t++)
                    token_step(s.o + (size_t)t * z->Hv * z->dv, Sh, r, s.q + (size_t)t * z->qk_stride,
                               s.k + (size_t)t * z->qk_stride, s.v + (size_t)t * z->v_stride, s.beta[(size_t)t * z->Hv],
                               s.g + (size_t)t * z->Hv * z->g_dim, z->g_dim, z->dk, z->dv);
            }
        free(Sl);
        free(r);
    }
}

int delta_rule_n_chunks(int T, int C) { return (T + C - 1) / C; }

// ---- the chunked form ---------------------------------------------------------------------------
//
// Per chunk of L <= C tokens the delta rule becomes a handful of small dense matrix products (mathx's
// packed matmul). With X = [q; k] (2L, dk) the chunk's queries and keys stacked, G the cumulative
// log-decay from the chunk start and S0 (dk, dv) the state entering the chunk:
//   M  = q k^T, decayed, j <= i  (L, L)   the intra-chunk scores
//   A  = beta_i k_i . k_j, decayed, j < i (L, L)
//   Y  = [q e^G; k e^G] S0       (2L, dv) what the entering state gives each query and key
//   U  = (I + A)^-1 beta (v - (k e^G)^T S0)   the chunk's updates; (I + A)^-1 is the UT transform,
//                                (L, dv)  applied by block forward substitution (ut_solve). WY form:
//                                         U = U~ - W S0, U~ = (I+A)^-1 beta v, W = (I+A)^-1 beta k e^G;
//                                         applying (I+A)^-1 last saves one product.
//   o  = (q e^G)^T S0 + M U      (L, dv)  = rows 0..L-1 of Y, plus M U
//   S1 = Diag(e^G_last) S0 + (k e^(G_last - G))^T U      the state carried to the next chunk

// Above this many nats of decay inside one chunk (in any channel), KDA's per-channel decayed products
// are computed exactly, one exp per term, instead of factored as (q_i e^G_i) . (k_j e^-G_j). The
// factored form needs e^-G to stay finite and far from overflow: e^60 ~ 1e26, so even the (discarded,
// j > i) products of unit q, k stay below ~1e28. Gated DeltaNet's single decay per head never needs
// this: its L x L decays are running products of the per-token factors, all <= 1.
#define DELTA_FACTOR_MAX_SPAN 60.0f

// The lower-triangular L x L matrices (M, A) are stored by row blocks of TRI_BLOCK rows, each block
// only as wide as its diagonal block reaches: block I holds rows [I b, I b + rows) x columns
// [0, min((I+1) b, L)), contiguous. Products with them then skip the zero blocks above the diagonal
// (3/8 of the work at L = 64), and every block is still a plain row-major matmul operand.
enum { TRI_BLOCK = 16 };
static size_t tri_offset(int I) { return (size_t)TRI_BLOCK * TRI_BLOCK * I * (I + 1) / 2; }   // blocks before I are full
static int tri_width(int I, int L) { return (I + 1) * TRI_BLOCK < L ? (I + 1) * TRI_BLOCK : L; }
// row i of a block-stored triangle (its width is tri_width(i / TRI_BLOCK, L) >= i + 1)
static float *tri_row(float *Tri, int i, int L) {
    int I = i / TRI_BLOCK;
    return Tri + tri_offset(I) + (size_t)(i - I * TRI_BLOCK) * tri_width(I, L);
}
// Tri (L, L) = the lower block triangle of X Y^T, X (L, d), Y (L, d)
static void tri_matmul_nt(float *Tri, const float *X, const float *Y, int L, int d) {
    for (int I = 0, r0 = 0; r0 < L; I++, r0 += TRI_BLOCK) {
        int rows = L - r0 < TRI_BLOCK ? L - r0 : TRI_BLOCK;
        matmul_nt(Tri + tri_offset(I), X + (size_t)r0 * d, Y, rows, d, tri_width(I, L), 0);
    }
}
// Out (L, n) (+)= Tri (L, L) B (L, n)
static void tri_matmul(float *Out, const float *Tri, const float *B, int L, int n, int accumulate) {
    for (int I = 0, r0 = 0; r0 < L; I++, r0 += TRI_BLOCK) {
        int rows = L - r0 < TRI_BLOCK ? L - r0 : TRI_BLOCK;
        matmul(Out + (size_t)r0 * n, Tri + tri_offset(I), B, rows, tri_width(I, L), n, accumulate);
    }
}

// One thread's scratch for the chunked forward, carved once per call (not per chunk or head).
typedef struct {
    float *X;      // (2C, dk)  [q; k] of the chunk, then scaled in place to [q e^G; k e^G]
    float *Kd;     // (C, dk)   right factor of the intra products: k, or k e^-G (KDA, factored)
    float *Kt;     // (dk, C)   the keys decayed to the chunk end, transposed: k e^(G_last - G)
    float *V;      // (C, dv)   the chunk's values
    float *M;      // (C, C)    block-stored triangle: q_i . k_j decayed, j <= i
    float *A;      // (C, C)    block-stored triangle: beta_i k_i . k_j decayed, j < i
    float *Tm;     // (C, C)    room for the UT transforms (I + A_II)^-1 of the diagonal blocks, block I at I b^2
    float *Z;      // (b, dv)   one block row of A U
    float *Y;      // (2C, dv)  [q e^G; k e^G] S0; rows 0..L-1 become the outputs
    float *R;      // (C, dv)   beta (v - (k e^G)^T S0)
    float *U;      // (C, dv)   the updates u_i
    float *G;      // (C, gd)   cumulative log-decay from the chunk start
    float *E;      // (C, gd)   e^G
    float *D;      // (C, C)    gd 1 only: D_ij = e^(G_i - G_j), j <= i (row-major, ld L)
    float *beta;   // (C)
    float *S;      // (dk, dv)  the state entering the chunk
} ChunkScratch;

static size_t chunk_scratch_floats(const DeltaDims *z, int C) {
    size_t c = (size_t)C, dk = (size_t)z->dk, dv = (size_t)z->dv, gd = (size_t)z->g_dim;
    return 4 * c * dk + 5 * c * dv + 4 * c * c + 2 * c * gd + c + dk * dv + (size_t)TRI_BLOCK * dv;
}

static ChunkScratch chunk_scratch_carve(float *p, const DeltaDims *z, int C) {
    size_t c = (size_t)C, dk = (size_t)z->dk, dv = (size_t)z->dv, gd = (size_t)z->g_dim;
    ChunkScratch w;
    w.X = p;                 p += 2 * c * dk;
    w.Kd = p;                p += c * dk;
    w.Kt = p;                p += c * dk;
    w.V = p;                 p += c * dv;
    w.M = p;                 p += c * c;
    w.A = p;                 p += c * c;
    w.Tm = p;                p += c * c;
    w.Z = p;                 p += (size_t)TRI_BLOCK * dv;
    w.Y = p;                 p += 2 * c * dv;
    w.R = p;                 p += c * dv;
    w.U = p;                 p += c * dv;
    w.G = p;                 p += c * gd;
    w.E = p;                 p += c * gd;
    w.D = p;                 p += c * c;
    w.beta = p;              p += c;
    w.S = p;
    return w;
}

// Gated DeltaNet (one decay per head): M, A from the raw q, k, then X scaled by e^G.
// D_ij = e^(G_i - G_j) = a_{j+1} ... a_i with a_t = e^(g_t): L exponentials, every entry <= 1, and
// each row is the previous one times a_i (independent multiplies, not one long chain).
static void chunk_products_scalar(ChunkScratch *w, const float *g, size_t sg, int L, int dk) {
    float *D = w->D, *eG = w->E, *a = w->G, *X = w->X;   // a (L) reuses G
    for (int t = 0; t < L; t++) a[t] = expf(g[(size_t)t * sg]);
    for (int i = 0; i < L; i++) {
        float *Di = D + (size_t)i * L;
        const float *Dp = Di - L;   // row i - 1
        for (int j = 0; j < i; j++) Di[j] = Dp[j] * a[i];
        Di[i] = 1.0f;
        eG[i] = i ? eG[i - 1] * a[i] : a[0];
    }
    tri_matmul_nt(w->M, X, w->Kd, L, dk);                     // q k^T
    tri_matmul_nt(w->A, X + (size_t)L * dk, w->Kd, L, dk);    // k k^T
    for (int i = 0; i < L; i++) {
        const float *Di = D + (size_t)i * L;
        float *Mi = tri_row(w->M, i, L), *Ai = tri_row(w->A, i, L);
        int width = tri_width(i / TRI_BLOCK, L);
        for (int j = 0; j < width; j++) {
            Mi[j] = j <= i ? Mi[j] * Di[j] : 0.0f;
            Ai[j] = j < i ? w->beta[i] * Ai[j] * Di[j] : 0.0f;
        }
    }
    for (int i = 0; i < L; i++)
        for (int c = 0; c < dk; c++) {
            X[(size_t)i * dk + c] *= eG[i];
            X[(size_t)(L + i) * dk + c] *= eG[i];
        }
}

// KDA (one decay per key channel): e^(G_i[c] - G_j[c]) differs per channel, so it cannot leave the
// dot product; split it as e^G_i[c] e^-G_j[c] and the decayed dot products are one matrix product
// (q e^G)(k e^-G)^T, safe while the chunk's decay span stays under DELTA_FACTOR_MAX_SPAN (else exact).
// Returns whether it factored (then Kd holds k e^-G).
static int chunk_products_channel(ChunkScratch *w, int L, int dk) {
    float *X = w->X, *E = w->E;
    float span = 0.0f;
    for (int c = 0; c < dk; c++) span = fmaxf(span, -w->G[(size_t)(L - 1) * dk + c]);
    for (size_t x = 0; x < (size_t)L * dk; x++) E[x] = expf(w->G[x]);
    int factored = span <= DELTA_FACTOR_MAX_SPAN;
    if (factored) {
        for (size_t x = 0; x < (size_t)L * dk; x++) w->Kd[x] /= E[x];   // k e^-G
        for (int i = 0; i < L; i++)
            for (int c = 0; c < dk; c++) {
                X[(size_t)i * dk + c] *= E[(size_t)i * dk + c];
                X[(size_t)(L + i) * dk + c] *= E[(size_t)i * dk + c];
            }
        tri_matmul_nt(w->M, X, w->Kd, L, dk);                     // (q e^G)(k e^-G)^T
        tri_matmul_nt(w->A, X + (size_t)L * dk, w->Kd, L, dk);    // (k e^G)(k e^-G)^T
    }
    for (int i = 0; i < L; i++) {
        float *Mi = tri_row(w->M, i, L), *Ai = tri_row(w->A, i, L);
        int width = tri_width(i / TRI_BLOCK, L);
        for (int j = 0; j < width; j++) {
            float sq = 0.0f, sk = 0.0f;
            if (factored) {
                sq = Mi[j], sk = Ai[j];
            } else if (j <= i) {   // exact: sum_c a[c] b[c] e^(G_i[c] - G_j[c]) term by term
                for (int c = 0; c < dk; c++) {
                    float d = expf(w->G[(size_t)i * dk + c] - w->G[(size_t)j * dk + c]) * w->Kd[(size_t)j * dk + c];
                    sq += X[(size_t)i * dk + c] * d;
                    sk += X[(size_t)(L + i) * dk + c] * d;
                }
            }
            Mi[j] = j <= i ? sq : 0.0f;
            Ai[j] = j < i ? w->beta[i] * sk : 0.0f;
        }
    }
    if (!factored)
        for (int i = 0; i < L; i++)
            for (int c = 0; c < dk; c++) {
                X[(size_t)i * dk + c] *= E[(size_t)i * dk + c];
                X[(size_t)(L + i) * dk + c] *= E[(size_t)i * dk + c];
            }
    return factored;
}

// The UT transform of one diagonal block: Tm (n, n) = (I + Ad)^-1 for Ad (n, n, row stride lda)
// strictly lower triangular. Row r of (I + Ad) Tm = I reads Tm_r = e_r - sum_{j<r} Ad_rj Tm_j, and
// Tm_j is zero right of column j, so the rows come out in order (forward substitution).
static void ut_transform(float *Tm, const float *Ad, int lda, int n) {
    for (int r = 0; r < n; r++) {
        float *Tr = Tm + (size_t)r * n;
        for (int c = 0; c < n; c++) Tr[c] = c == r ? 1.0f : 0.0f;
        for (int j = 0; j < r; j++) {
            float a = Ad[(size_t)r * lda + j];
            for (int c = 0; c <= j; c++) Tr[c] -= a * Tm[(size_t)j * n + c];
        }
    }
}

// U (L, dv) = (I + A)^-1 R for A (L, L) strictly lower triangular (block-stored), by forward
// substitution over the row blocks I of TRI_BLOCK rows:
//   U_I = (I + A_II)^-1 (R_I - sum_{J<I} A_IJ U_J)
// U starts at zero, so A's whole block row times U[0 : w_I] is exactly the sum over the solved blocks
// (the diagonal block meets zero rows). R is overwritten.
static void ut_solve(float *U, float *R, float *A, float *Tm, float *Z, int L, int dv) {
    memset(U, 0, sizeof(float) * (size_t)L * dv);
    for (int I = 0, r0 = 0; r0 < L; I++, r0 += TRI_BLOCK) {
        int n = L - r0 < TRI_BLOCK ? L - r0 : TRI_BLOCK, width = tri_width(I, L);
        float *Ablk = tri_row(A, r0, L), *TmI = Tm + (size_t)I * TRI_BLOCK * TRI_BLOCK, *RI = R + (size_t)r0 * dv;
        ut_transform(TmI, Ablk + r0, width, n);   // A_II: the last n columns of the block row
        if (I > 0) {
            matmul(Z, Ablk, U, n, width, dv, 0);   // sum_{J<I} A_IJ U_J   (n, width) x (width, dv)
            for (size_t x = 0; x < (size_t)n * dv; x++) RI[x] -= Z[x];
        }
        matmul(U + (size_t)r0 * dv, TmI, RI, n, n, dv, 0);
    }
}

// One value head of one sequence in chunks. S starts at 0; S_chunks (n_chunks, dk, dv) or NULL.
static void head_chunked(HeadSeq s, float *S_chunks, const DeltaDims *z, int C, ChunkScratch w) {
    const int dk = z->dk, dv = z->dv, gd = z->g_dim, T = z->T;
    const size_t sqk = (size_t)z->qk_stride, sv = (size_t)z->v_stride, so = (size_t)z->Hv * dv;
    const size_t sb = (size_t)z->Hv, sg = (size_t)z->Hv * gd, SS = (size_t)dk * dv;
    memset(w.S, 0, sizeof(float) * SS);
    for (int t0 = 0, ci = 0; t0 < T; t0 += C, ci++) {
        int L = T - t0 < C ? T - t0 : C;
        if (S_chunks) memcpy(S_chunks + (size_t)ci * SS, w.S, sizeof(float) * SS);
        // 1. the chunk's rows, contiguous: X = [q; k] (2L, dk), Kd = k (L, dk), V (L, dv), beta (L)
        for (int i = 0; i < L; i++) {
            size_t t = (size_t)(t0 + i);
            memcpy(w.X + (size_t)i * dk, s.q + t * sqk, sizeof(float) * dk);
            memcpy(w.X + (size_t)(L + i) * dk, s.k + t * sqk, sizeof(float) * dk);
            memcpy(w.Kd + (size_t)i * dk, s.k + t * sqk, sizeof(float) * dk);
            memcpy(w.V + (size_t)i * dv, s.v + t * sv, sizeof(float) * dv);
            w.beta[i] = s.beta[t * sb];
        }
        // 2. the decayed products M, A, and X <- [q e^G; k e^G]
        int factored = 0;
        if (gd == 1) {
            chunk_products_scalar(&w, s.g + (size_t)t0 * sg, sg, L, dk);
        } else {
            for (int i = 0; i < L; i++)
                for (int c = 0; c < gd; c++)
                    w.G[(size_t)i * gd + c] = (i ? w.G[(size_t)(i - 1) * gd + c] : 0.0f) + s.g[(size_t)(t0 + i) * sg + c];
            factored = chunk_products_channel(&w, L, dk);
        }
        // 3. the entering state seen by every query and key: Y (2L, dv) = [q e^G; k e^G] S0
        matmul(w.Y, w.X, w.S, 2 * L, dk, dv, 0);
        // 4. U = (I + A)^-1 R, R = beta (v - (k e^G)^T S0): row i of (I + A) U = R is the delta rule's
        //    u_i = beta_i (v_i - S_{i-1}^T k_i) with S_{i-1} written out through the chunk's earlier u_j
        for (int i = 0; i < L; i++) {
            const float *Vi = w.V + (size_t)i * dv, *Yk = w.Y + (size_t)(L + i) * dv;
            float *Ri = w.R + (size_t)i * dv;
            for (int e = 0; e < dv; e++) Ri[e] = w.beta[i] * (Vi[e] - Yk[e]);
        }
        ut_solve(w.U, w.R, w.A, w.Tm, w.Z, L, dv);
        // 5. o = (q e^G)^T S0 + M U, accumulated onto the first L rows of Y, then written out
        tri_matmul(w.Y, w.M, w.U, L, dv, 1);
        for (int i = 0; i < L; i++) memcpy(s.o + (size_t)(t0 + i) * so, w.Y + (size_t)i * dv, sizeof(float) * dv);
        // 6. carry the state: S1 = Diag(e^G_last) S0 + (k e^(G_last - G))^T U   (dk, L) x (L, dv); the
        //    decayed keys are written transposed, Kt (dk, L), so the product is a plain matmul. The
        //    decay from token j to the chunk end is D[L-1][j] (one per head), or per channel
        //    e^G_last (k_j e^-G_j) when Kd holds the factored keys, else exp of the difference.
        float *Kt = w.Kt;
        const float *Gl = w.G + (size_t)(L - 1) * gd, *El = w.E + (size_t)(L - 1) * gd;
        const float *DL = w.D + (size_t)(L - 1) * L;
        for (int j = 0; j < L; j++) {
            const float *kj = s.k + (size_t)(t0 + j) * sqk, *kdj = w.Kd + (size_t)j * dk;
            for (int c = 0; c < dk; c++)
                Kt[(size_t)c * L + j] = gd == 1   ? kj[c] * DL[j]
                                        : factored ? kdj[c] * El[c]
                                                   : kj[c] * expf(Gl[c] - w.G[(size_t)j * gd + c]);
        }
        for (int c = 0; c < dk; c++) {
            float a = El[gd == 1 ? 0 : c];
            for (int e = 0; e < dv; e++) w.S[(size_t)c * dv + e] *= a;
        }
        matmul(w.S, Kt, w.U, dk, L, dv, 1);
    }
}

void delta_rule_chunked(float *o, float *S_chunks, const float *q, const float *k, const float *v, const float *beta,
                        const float *g, const DeltaDims *z, int C) {
    check_dims(z);
    CHECK(C > 0, "delta rule: chunk %d", C);
    size_t per_head = (size_t)delta_rule_n_chunks(z->T, C) * z->dk * z->dv;
    #pragma omp parallel
    {
        float *scr = mallocCheck(sizeof(float) * chunk_scratch_floats(z, C));
        ChunkScratch w = chunk_scratch_carve(scr, z, C);
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < z->B; b++)
            for (int h = 0; h < z->Hv; h++)
                head_chunked(head_seq(q, k, v, beta, g, o, z, b, h),
                             S_chunks ? S_chunks + ((size_t)b * z->Hv + h) * per_head : NULL, z, C, w);
        free(scr);
    }
}

// Backward of one value head through time. dS carries dL/dS from later tokens; per chunk the states
// are recomputed from the saved entering state. Per token, S' = Diag(a) S_prev, r = v - S'^T k,
// u = beta r, S = S' + k u^T, o = S^T q; backward in reverse:
//   dS += q do^T; dq = S do; du = dS^T k; dk += dS u; dbeta = du . r; dv = beta du; dr' = -beta du
//   dS' = dS + k dr'^T; dk += S' dr'; dg_c = sum_e dS'[c][e] S'[c][e]; dS_prev = Diag(a) dS'.
static void head_backward(float *dq, float *dk, float *dv, float *dbeta, float *dg, const float *d_o,
                          const float *S_chunks, HeadSeq s, const DeltaDims *z, int C, float *scr) {
    const int Dk = z->dk, Dv = z->dv, gd = z->g_dim, T = z->T;
    const size_t sqk = (size_t)z->qk_stride, sv = (size_t)z->v_stride, so = (size_t)z->Hv * Dv;
    const size_t sb = (size_t)z->Hv, sg = (size_t)z->Hv * gd, SS = (size_t)Dk * Dv;
    float *St = scr;                           // (C+1, dk, dv) states after each token of the chunk
    float *R = St + (size_t)(C + 1) * SS;      // (C, dv) r = v - S'^T k per token
    float *dS = R + (size_t)C * Dv;            // (dk, dv)
    float *du = dS + SS;                       // (dv)
    float *dr = du + Dv;                       // (dv)
    float *a = dr + Dv;                        // (dk)
    memset(dS, 0, sizeof(float) * SS);
    int nc = delta_rule_n_chunks(T, C);
    for (int ci = nc - 1; ci >= 0; ci--) {
        int t0 = ci * C, L = T - t0 < C ? T - t0 : C;
        memcpy(St, S_chunks + (size_t)ci * SS, sizeof(float) * SS);
        for (int i = 0; i < L; i++) {
            size_t t = (size_t)(t0 + i);
            memcpy(St + (size_t)(i + 1) * SS, St + (size_t)i * SS, sizeof(float) * SS);
            token_step(NULL, St + (size_t)(i + 1) * SS, R + (size_t)i * Dv, NULL, s.k + t * sqk, s.v + t * sv,
                       s.beta[t * sb], s.g + t * sg, gd, Dk, Dv);
        }
        for (int i = L - 1; i >= 0; i--) {
            size_t t = (size_t)(t0 + i);
            const float *q = s.q + t * sqk, *k = s.k + t * sqk, *doo = d_o + t * so, *r = R + (size_t)i * Dv;
            const float *Sp = St + (size_t)i * SS, *Sn = St + (size_t)(i + 1) * SS;
            float beta = s.beta[t * sb];
            for (int c = 0; c < Dk; c++) a[c] = expf(s.g[t * sg + (gd == 1 ? 0 : c)]);
            float *dqt = dq + t * sqk, *dkt = dk + t * sqk, *dvt = dv + t * sv;
            for (int c = 0; c < Dk; c++) {
                float acc = 0.0f;
                for (int e = 0; e < Dv; e++) {
                    dS[(size_t)c * Dv + e] += q[c] * doo[e];
                    acc += Sn[(size_t)c * Dv + e] * doo[e];
                }
                dqt[c] += acc;
            }
            for (int e = 0; e < Dv; e++) du[e] = 0.0f;
            for (int c = 0; c < Dk; c++) {
                float acc = 0.0f;
                for (int e = 0; e < Dv; e++) {
                    du[e] += dS[(size_t)c * Dv + e] * k[c];
                    acc += dS[(size_t)c * Dv + e] * (beta * r[e]);
                }
                dkt[c] += acc;
            }
            float db = 0.0f;
            for (int e = 0; e < Dv; e++) {
                db += du[e] * r[e];
                dvt[e] += beta * du[e];
                dr[e] = -beta * du[e];
            }
            dbeta[t * sb] += db;
            float dgs = 0.0f;
            for (int c = 0; c < Dk; c++) {
                float acck = 0.0f, accg = 0.0f;
                for (int e = 0; e < Dv; e++) {
                    float sd = a[c] * Sp[(size_t)c * Dv + e];        // S'[c][e]
                    float dsd = dS[(size_t)c * Dv + e] + k[c] * dr[e];
                    acck += sd * dr[e];
                    accg += dsd * sd;
                    dS[(size_t)c * Dv + e] = a[c] * dsd;
                }
                dkt[c] += acck;
                if (gd == 1) dgs += accg;
                else dg[t * sg + c] += accg;
            }
            if (gd == 1) dg[t * sg] += dgs;
        }
    }
}

static size_t backward_scratch_floats(const DeltaDims *z, int C) {
    size_t SS = (size_t)z->dk * z->dv;
    return (size_t)(C + 1) * SS + (size_t)C * z->dv + SS + 2 * (size_t)z->dv + (size_t)z->dk;
}

void delta_rule_backward(float *dq, float *dk, float *dv, float *dbeta, float *dg, const float *d_o,
                         const float *S_chunks, const float *q, const float *k, const float *v, const float *beta,
                         const float *g, const DeltaDims *z, int C) {
    check_dims(z);
    int ratio = z->Hv / z->Hk;
    size_t per_head = (size_t)delta_rule_n_chunks(z->T, C) * z->dk * z->dv;
    // One task per (sequence, key head): its value heads run in order, so the dq, dk they share are
    // summed in the same order on any thread count.
    #pragma omp parallel
    {
        float *scr = mallocCheck(sizeof(float) * backward_scratch_floats(z, C));
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < z->B; b++)
            for (int kh = 0; kh < z->Hk; kh++)
                for (int h = kh * ratio; h < (kh + 1) * ratio; h++) {
                    HeadSeq s = head_seq(q, k, v, beta, g, NULL, z, b, h);
                    HeadSeq d = head_seq(dq, dk, dv, dbeta, dg, NULL, z, b, h);
                    head_backward((float *)d.q, (float *)d.k, (float *)d.v, (float *)d.beta, (float *)d.g,
                                  d_o + (size_t)b * z->T * z->Hv * z->dv + (size_t)h * z->dv,
                                  S_chunks + ((size_t)b * z->Hv + h) * per_head, s, z, C, scr);
                }
        free(scr);
    }
}

// ---- benchmark pair -------------------------------------------------------------------------------

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double linear_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double linear_bench_median(double *sec, int n) {
    qsort(sec, (size_t)n, sizeof(double), cmp_double);
    return sec[n / 2];
}

void linear_bench_inputs(float *qkv, float *beta, float *g, size_t rows, int dh, Rng *rng) {
    size_t nv = rows * dh;
    float *q = qkv, *k = qkv + nv;
    rng_fill_normal(rng, qkv, (long)(3 * nv), 1.0f);
    for (size_t r = 0; r < rows; r++) {   // unit q, k as after the l2norm; beta in (0,1), g < 0
        float nq = 0, nk = 0;
        for (int c = 0; c < dh; c++) nq += q[r * dh + c] * q[r * dh + c], nk += k[r * dh + c] * k[r * dh + c];
        for (int c = 0; c < dh; c++) q[r * dh + c] /= sqrtf(nq * dh), k[r * dh + c] /= sqrtf(nk);
        if (beta) beta[r] = rng_uniform(rng);
        g[r] = -0.1f * rng_uniform(rng);
    }
}

double gdn_prefill_seconds(int B, int T, int H, int dh, int C, int reps) {
    CHECK(B > 0 && T > 0 && H > 0 && dh > 0 && C >= 0 && reps > 0, "gdn_prefill_seconds: bad sizes");
    DeltaDims z = {.B = B, .T = T, .Hk = H, .Hv = H, .dk = dh, .dv = dh, .g_dim = 1, .qk_stride = H * dh,
                   .v_stride = H * dh};
    size_t N = (size_t)B * T, nv = N * H * dh;
    float *q = mallocCheck(sizeof(float) * 4 * nv), *k = q + nv, *v = k + nv, *o = v + nv;
    float *beta = mallocCheck(sizeof(float) * 2 * N * H), *g = beta + N * H;
    Rng rng;
    rng_seed(&rng, 9);
    linear_bench_inputs(q, beta, g, N * H, dh, &rng);
    double *sec = mallocCheck(sizeof(double) * (size_t)reps);
    for (int rep = -1; rep < reps; rep++) {   // rep -1 warms up
        double t0 = linear_bench_now();
        if (C == 0) delta_rule_recurrent(o, NULL, q, k, v, beta, g, &z);
        else delta_rule_chunked(o, NULL, q, k, v, beta, g, &z, C);
        if (rep >= 0) sec[rep] = linear_bench_now() - t0;
    }
    double med = linear_bench_median(sec, reps);
    free(sec);
    free(q);
    free(beta);
    return med;
}

// ================================================================================================
// Parameter tables
// ================================================================================================

int param_table(ParamTensor *out, int cap, const ParamSpec *spec, int n) {
    CHECK(n <= cap, "param_table: %d tensors (%s, ...), room for %d", n, spec[0].name, cap);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        snprintf(out[i].name, sizeof out[i].name, "%s", spec[i].name);
        out[i].ndim = spec[i].ndim;
        size_t size = 1;
        for (int j = 0; j < spec[i].ndim; j++) {
            out[i].shape[j] = spec[i].shape[j];
            size *= (size_t)spec[i].shape[j];
        }
        out[i].offset = off;
        off += size;
    }
    return n;
}

void param_table_init(float *params, const ParamSpec *spec, int n, const ModelGeometry *g, Rng *rng) {
    enum { CAP = 16 };
    ParamTensor t[CAP];
    param_table(t, CAP, spec, n);
    int L = g->n_layers > 0 ? g->n_layers : 1;
    for (int i = 0; i < n; i++) {
        const ParamSpec *s = &spec[i];
        long size = 1;
        for (int j = 0; j < s->ndim; j++) size *= (long)s->shape[j];
        float *p = params + t[i].offset;
        switch (s->init) {
        case INIT_NORMAL: rng_fill_normal(rng, p, size, 0.02f); break;
        case INIT_OUT: rng_fill_normal(rng, p, size, 0.02f / sqrtf(2.0f * (float)L)); break;
        case INIT_ONES:
            for (long j = 0; j < size; j++) p[j] = 1.0f;
            break;
        case INIT_CONV: {
            float bound = 1.0f / sqrtf((float)s->shape[s->ndim - 1]);
            for (long j = 0; j < size; j++) p[j] = bound * (2.0f * rng_uniform(rng) - 1.0f);
            break;
        }
        case INIT_DECAY:
            CHECK(i + 1 < n && spec[i + 1].init == INIT_WITH_PREV, "param_table_init: %s needs dt_bias after it",
                  s->name);
            delta_init_decay(p, params + t[i + 1].offset, (int)size, (int)(spec[i + 1].shape[0]), g, rng);
            break;
        case INIT_WITH_PREV: break;   // filled with the tensor before it
        }
    }
}

// ================================================================================================
// The layer's pieces (Gated DeltaNet and KDA)
// ================================================================================================

void delta_qk_norm_forward(float *qn, float *kn, float *rq, float *rk, const float *conv, int N, int conv_ch,
                           int Hk, int dk) {
    float scale = 1.0f / sqrtf((float)dk);
    for (int r = 0; r < N; r++)
        for (int h = 0; h < Hk; h++)
            for (int which = 0; which < 2; which++) {
                const float *x = conv + (size_t)r * conv_ch + (size_t)which * Hk * dk + (size_t)h * dk;
                float *y = (which ? kn : qn) + ((size_t)r * Hk + h) * dk;
                float ss = 0.0f;
                for (int c = 0; c < dk; c++) ss += x[c] * x[c];
                float inv = 1.0f / sqrtf(ss + GDN_L2NORM_EPS);
                (which ? rk : rq)[(size_t)r * Hk + h] = inv;
                float f = which ? inv : inv * scale;
                for (int c = 0; c < dk; c++) y[c] = x[c] * f;
            }
}

// y = s x r, r = (x.x + eps)^-1/2:  dx = s (r dy - r^3 x (x.dy))
void delta_qk_norm_backward(float *dconv, const float *dqn, const float *dkn, const float *conv, const float *rq,
                            const float *rk, int N, int conv_ch, int Hk, int dk) {
    float scale = 1.0f / sqrtf((float)dk);
    for (int r = 0; r < N; r++)
        for (int h = 0; h < Hk; h++)
            for (int which = 0; which < 2; which++) {
                size_t off = (size_t)r * conv_ch + (size_t)which * Hk * dk + (size_t)h * dk;
                const float *x = conv + off, *dy = (which ? dkn : dqn) + ((size_t)r * Hk + h) * dk;
                float inv = (which ? rk : rq)[(size_t)r * Hk + h], s = which ? 1.0f : scale;
                float xdy = 0.0f;
                for (int c = 0; c < dk; c++) xdy += x[c] * dy[c];
                for (int c = 0; c < dk; c++) dconv[off + c] += s * (inv * dy[c] - inv * inv * inv * x[c] * xdy);
            }
}

static inline float gate_act(float x, int sigmoid_gate) { return sigmoid_gate ? sigmoidf_(x) : siluf_(x); }
static inline float gate_grad(float x, int sigmoid_gate) {
    float s = sigmoidf_(x);
    return sigmoid_gate ? s * (1.0f - s) : s * (1.0f + x * (1.0f - s));
}

void delta_gated_norm_forward(float *y, float *rstd, const float *o, const float *gate, int gate_stride,
                              const float *w, int N, int H, int dv, int sigmoid_gate) {
    for (int r = 0; r < N; r++)
        for (int h = 0; h < H; h++) {
            size_t off = ((size_t)r * H + h) * dv;
            const float *gt = gate + (size_t)r * gate_stride + (size_t)h * dv;
            float ss = 0.0f;
            for (int e = 0; e < dv; e++) ss += o[off + e] * o[off + e];
            float rs = 1.0f / sqrtf(ss / (float)dv + GDN_NORM_EPS);
            rstd[(size_t)r * H + h] = rs;
            for (int e = 0; e < dv; e++) y[off + e] = o[off + e] * rs * w[e] * gate_act(gt[e], sigmoid_gate);
        }
}

// n = o rstd; y = n w act(gate): dn = dy w act; dw += dy n act; dgate += dy n w act';
// do = rstd (dn - n mean(dn n)). dw sums over rows in row order on one thread (deterministic).
void delta_gated_norm_backward(float *d_o, float *dgate, float *dw, const float *dy, const float *o,
                               const float *rstd, const float *gate, int gate_stride, const float *w, int N,
                               int H, int dv, int sigmoid_gate) {
    for (int r = 0; r < N; r++)
        for (int h = 0; h < H; h++) {
            size_t off = ((size_t)r * H + h) * dv;
            size_t goff = (size_t)r * gate_stride + (size_t)h * dv;
            float rs = rstd[(size_t)r * H + h], mean = 0.0f;
            for (int e = 0; e < dv; e++) {
                float n = o[off + e] * rs, ga = gate_act(gate[goff + e], sigmoid_gate);
                float dn = dy[off + e] * w[e] * ga;
                dw[e] += dy[off + e] * n * ga;
                dgate[goff + e] += dy[off + e] * n * w[e] * gate_grad(gate[goff + e], sigmoid_gate);
                mean += dn * n;
            }
            mean /= (float)dv;
            for (int e = 0; e < dv; e++) {
                float n = o[off + e] * rs, dn = dy[off + e] * w[e] * gate_act(gate[goff + e], sigmoid_gate);
                d_o[off + e] += rs * (dn - n * mean);
            }
        }
}

// ---- batch 0 probes -------------------------------------------------------------------------------

size_t delta_probe_carve(DeltaProbe *p, float *act, const DeltaDims *z) {
    size_t used = 0, T = (size_t)z->T;
    p->q = take_floats(act, &used, T * z->Hk * z->dk);
    p->k = take_floats(act, &used, T * z->Hk * z->dk);
    p->v = take_floats(act, &used, T * z->Hv * z->dv);
    p->beta = take_floats(act, &used, T * z->Hv);
    p->g = take_floats(act, &used, T * z->Hv * z->g_dim);
    return used;
}

void delta_probe_fill(DeltaProbe *p, const float *q, const float *k, const float *v, const float *beta,
                      const float *g, const DeltaDims *z) {
    size_t qd = (size_t)z->Hk * z->dk, vd = (size_t)z->Hv * z->dv;
    for (int t = 0; t < z->T; t++) {
        memcpy(p->q + t * qd, q + (size_t)t * z->qk_stride, sizeof(float) * qd);
        memcpy(p->k + t * qd, k + (size_t)t * z->qk_stride, sizeof(float) * qd);
        memcpy(p->v + t * vd, v + (size_t)t * z->v_stride, sizeof(float) * vd);
    }
    memcpy(p->beta, beta, sizeof(float) * (size_t)z->T * z->Hv);
    memcpy(p->g, g, sizeof(float) * (size_t)z->T * z->Hv * z->g_dim);
}

// The probe as a one-sequence DeltaDims with contiguous rows.
static DeltaDims probe_dims(const DeltaDims *z, int dv) {
    DeltaDims y = *z;
    y.B = 1;
    y.dv = dv;
    y.qk_stride = z->Hk * z->dk;
    y.v_stride = z->Hv * dv;
    return y;
}

void delta_probe_mixing_matrix(float *A, const DeltaProbe *p, const DeltaDims *z) {
    int T = z->T, H = z->Hv;
    DeltaDims y = probe_dims(z, T);   // values are T wide: one-hot e_s for token s, in every head
    float *eye = callocCheck((size_t)T * H * T, sizeof(float)), *o = mallocCheck(sizeof(float) * (size_t)T * H * T);
    for (int s = 0; s < T; s++)
        for (int h = 0; h < H; h++) eye[((size_t)s * H + h) * T + s] = 1.0f;
    delta_rule_recurrent(o, NULL, p->q, p->k, eye, p->beta, p->g, &y);
    for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++)
            memcpy(A + ((size_t)h * T + t) * T, o + ((size_t)t * H + h) * T, sizeof(float) * (size_t)T);
    free(eye);
    free(o);
}

void delta_probe_states(float *S, const DeltaProbe *p, const DeltaDims *z, int head, const int *times, int n_times) {
    CHECK(head >= 0 && head < z->Hv, "delta probe: head %d of %d", head, z->Hv);
    DeltaDims y = probe_dims(z, z->dv);
    HeadSeq s = head_seq(p->q, p->k, p->v, p->beta, p->g, NULL, &y, 0, head);
    size_t SS = (size_t)z->dk * z->dv;
    float *St = callocCheck(SS, sizeof(float)), *r = mallocCheck(sizeof(float) * (size_t)z->dv);
    int last = -1;
    for (int i = 0; i < n_times; i++) last = times[i] > last ? times[i] : last;
    CHECK(last < z->T, "delta probe: time %d of %d tokens", last, z->T);
    for (int t = 0; t <= last; t++) {
        token_step(NULL, St, r, NULL, s.k + (size_t)t * y.qk_stride, s.v + (size_t)t * y.v_stride,
                   s.beta[(size_t)t * y.Hv], s.g + (size_t)t * y.Hv * y.g_dim, y.g_dim, y.dk, y.dv);
        for (int i = 0; i < n_times; i++)
            if (times[i] == t) memcpy(S + (size_t)i * SS, St, sizeof(float) * SS);
    }
    free(St);
    free(r);
}


// ================================================================================================
// The layer around the core (Gated DeltaNet and KDA)
// ================================================================================================

DeltaLayer delta_layer_of(const ModelGeometry *g, const char *who, int per_channel_decay, int sigmoid_gate, int chunk) {
    DeltaLayer z = {.d = g->d_model, .Hk = g->linear_num_key_heads, .Hv = g->linear_num_value_heads,
                    .dk = g->linear_key_head_dim, .dv = g->linear_value_head_dim, .K = g->linear_conv_kernel_dim,
                    .sigmoid_gate = sigmoid_gate, .chunk = chunk};
    CHECK(z.d > 0 && z.K >= 2 && z.Hk > 0 && z.Hv % z.Hk == 0 && z.dk > 0 && z.dv > 0,
          "%s: impossible geometry d %d K %d Hk %d Hv %d dk %d dv %d (validate first)", who, z.d, z.K, z.Hk, z.Hv,
          z.dk, z.dv);
    z.Cc = 2 * z.Hk * z.dk + z.Hv * z.dv;
    z.g_dim = per_channel_decay ? z.dk : 1;
    return z;
}

DeltaDims delta_layer_dims(const DeltaLayer *z, int B, int T) {
    return (DeltaDims){.B = B, .T = T, .Hk = z->Hk, .Hv = z->Hv, .dk = z->dk, .dv = z->dv, .g_dim = z->g_dim,
                       .qk_stride = z->Hk * z->dk, .v_stride = z->Cc};
}

size_t delta_act_carve(DeltaAct *a, float *act, const DeltaLayer *z, int B, int T) {
    size_t N = (size_t)B * T, used = 0, hk = (size_t)z->Hk * z->dk, hv = (size_t)z->Hv * z->dv;
    DeltaDims dd = delta_layer_dims(z, B, T);
    used += delta_probe_carve(&a->probe, act, &dd);
    a->mixed = take_floats(act, &used, N * z->Cc);
    a->pre = take_floats(act, &used, N * z->Cc);
    a->conv = take_floats(act, &used, N * z->Cc);
    a->qn = take_floats(act, &used, N * hk);
    a->kn = take_floats(act, &used, N * hk);
    a->rq = take_floats(act, &used, N * z->Hk);
    a->rk = take_floats(act, &used, N * z->Hk);
    a->beta = take_floats(act, &used, N * z->Hv);
    a->g = take_floats(act, &used, N * z->Hv * z->g_dim);
    a->o = take_floats(act, &used, N * hv);
    a->rstd = take_floats(act, &used, N * z->Hv);
    a->y = take_floats(act, &used, N * hv);
    a->S_chunks = take_floats(act, &used, (size_t)B * z->Hv * delta_rule_n_chunks(T, z->chunk) * z->dk * z->dv);
    return used;
}

void delta_layer_in(DeltaAct *a, float *conv_state, const float *x, const DeltaWeights *w, const DeltaLayer *z,
                    int B, int T) {
    int N = B * T;
    linear_forward(a->mixed, x, w->qkv, NULL, N, z->d, z->Cc);
    if (conv_state) shortconv_step(a->conv, conv_state, a->mixed, w->conv, z->Cc, z->K);
    else shortconv_forward(a->conv, a->pre, a->mixed, w->conv, B, T, z->Cc, z->K);
    delta_qk_norm_forward(a->qn, a->kn, a->rq, a->rk, a->conv, N, z->Cc, z->Hk, z->dk);
}

static inline float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

void delta_gates_forward(DeltaAct *a, const float *b, int b_stride, const float *ga, int a_stride,
                         const DeltaWeights *w, const DeltaLayer *z, int N) {
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z->Hv; h++) {
            a->beta[(size_t)r * z->Hv + h] = sigmoidf_(b[(size_t)r * b_stride + h]);
            float A = expf(w->A_log[h]);
            for (int c = 0; c < z->g_dim; c++) {
                size_t j = (size_t)h * z->g_dim + c;   // channel c of head h in a row of a, and in dt_bias
                a->g[(size_t)r * z->Hv * z->g_dim + j] = -A * softplusf(ga[(size_t)r * a_stride + j] + w->dt_bias[j]);
            }
        }
}

void delta_layer_out(float *out, DeltaAct *a, float *S, const float *gate, int gate_stride, const DeltaWeights *w,
                     const DeltaLayer *z, int B, int T) {
    int N = B * T;
    DeltaDims dd = delta_layer_dims(z, B, T);
    const float *v = a->conv + 2 * z->Hk * z->dk;
    if (S) {
        delta_rule_recurrent(a->o, S, a->qn, a->kn, v, a->beta, a->g, &dd);
    } else {
        delta_rule_chunked(a->o, a->S_chunks, a->qn, a->kn, v, a->beta, a->g, &dd, z->chunk);
        delta_probe_fill(&a->probe, a->qn, a->kn, v, a->beta, a->g, &dd);
    }
    delta_gated_norm_forward(a->y, a->rstd, a->o, gate, gate_stride, w->norm, N, z->Hv, z->dv, z->sigmoid_gate);
    linear_forward(out, a->y, w->out, NULL, N, z->Hv * z->dv, z->d);
}

void delta_grads_new(DeltaGrads *d, const DeltaLayer *z, int N, size_t n_mine) {
    size_t hk = (size_t)N * z->Hk * z->dk, hv = (size_t)N * z->Hv * z->dv, cc = (size_t)N * z->Cc, used = 0;
    size_t n = 2 * hv + 2 * cc + 2 * hk + (size_t)N * z->Hv * (1 + z->g_dim) + n_mine;
    float *block = callocCheck(n, sizeof(float));
    d->dy = take_floats(block, &used, hv);   // the start of the block
    d->d_o = take_floats(block, &used, hv);
    d->dconv = take_floats(block, &used, cc);
    d->dmixed = take_floats(block, &used, cc);
    d->dqn = take_floats(block, &used, hk);
    d->dkn = take_floats(block, &used, hk);
    d->dbeta = take_floats(block, &used, (size_t)N * z->Hv);
    d->dg = take_floats(block, &used, (size_t)N * z->Hv * z->g_dim);
    d->mine = take_floats(block, &used, n_mine);
}

void delta_layer_out_backward(DeltaGrads *d, float *dgate, DeltaWeights *dw, const float *dout, const DeltaAct *a,
                              const float *gate, int gate_stride, const DeltaWeights *w, const DeltaLayer *z, int B,
                              int T) {
    int N = B * T, hv = z->Hv * z->dv;
    DeltaDims dd = delta_layer_dims(z, B, T);
    linear_backward(d->dy, dw->out, NULL, dout, a->y, w->out, N, hv, z->d);
    delta_gated_norm_backward(d->d_o, dgate, dw->norm, d->dy, a->o, a->rstd, gate, gate_stride, w->norm, N, z->Hv,
                              z->dv, z->sigmoid_gate);
    size_t v_col = 2 * (size_t)z->Hk * z->dk;
    delta_rule_backward(d->dqn, d->dkn, d->dconv + v_col, d->dbeta, d->dg, d->d_o, a->S_chunks, a->qn, a->kn,
                        a->conv + v_col, a->beta, a->g, &dd, z->chunk);
}

// beta = sigmoid(b): dbeta/db = beta (1 - beta). g = -A softplus(a + dt_bias), A = exp(A_log):
// dg/dA_log = g, dg/da = dg/d dt_bias = -A sigmoid(a + dt_bias). Parameter sums run in row order.
void delta_gates_backward(float *db, int b_stride, float *da, int a_stride, DeltaWeights *dw, const DeltaGrads *d,
                          const DeltaAct *a, const float *ga, const DeltaWeights *w, const DeltaLayer *z, int N) {
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z->Hv; h++) {
            size_t ih = (size_t)r * z->Hv + h;
            db[(size_t)r * b_stride + h] += d->dbeta[ih] * a->beta[ih] * (1.0f - a->beta[ih]);
            float A = expf(w->A_log[h]);
            for (int c = 0; c < z->g_dim; c++) {
                size_t j = (size_t)h * z->g_dim + c, i = ih * z->g_dim + c;
                float dsp = d->dg[i] * -A * sigmoidf_(ga[(size_t)r * a_stride + j] + w->dt_bias[j]);
                da[(size_t)r * a_stride + j] += dsp;
                dw->dt_bias[j] += dsp;
                dw->A_log[h] += d->dg[i] * a->g[i];
            }
        }
}

void delta_layer_in_backward(float *dx, DeltaWeights *dw, DeltaGrads *d, const DeltaAct *a, const float *x,
                             const DeltaWeights *w, const DeltaLayer *z, int B, int T) {
    int N = B * T;
    delta_qk_norm_backward(d->dconv, d->dqn, d->dkn, a->conv, a->rq, a->rk, N, z->Cc, z->Hk, z->dk);
    shortconv_backward(d->dmixed, dw->conv, d->dconv, a->pre, a->mixed, w->conv, B, T, z->Cc, z->K);
    linear_backward(dx, dw->qkv, NULL, d->dmixed, x, w->qkv, N, z->d, z->Cc);
}

void delta_cache_init(DeltaCache *c, const DeltaLayer *z, int max_T, size_t n_mine) {
    CHECK(max_T > 0, "delta-rule layer: cache for %d tokens", max_T);
    c->z = *z;
    c->max_T = max_T;
    c->n = 0;
    size_t n_state = (size_t)z->Hv * z->dk * z->dv, n_conv = (size_t)(z->K - 1) * z->Cc;
    size_t n_step = delta_act_carve(&c->a, NULL, z, 1, 1), used = 0;
    float *block = callocCheck(n_state + n_conv + n_step + n_mine, sizeof(float));
    c->S = take_floats(block, &used, n_state);   // the start of the block
    c->conv_state = take_floats(block, &used, n_conv);
    delta_act_carve(&c->a, block + used, z, 1, 1);
    used += n_step;
    c->mine = take_floats(block, &used, n_mine);
}

void delta_cache_release(DeltaCache *c) { free(c->S); }

size_t delta_cache_bytes(const DeltaCache *c) {
    const DeltaLayer *z = &c->z;
    return sizeof(float) * ((size_t)z->Hv * z->dk * z->dv + (size_t)(z->K - 1) * z->Cc);
}

int delta_n_mix_heads(const ModelGeometry *g, int layer) {
    (void)layer;
    return g->linear_num_value_heads;
}

// The probe at the front of a forward's act, and its one-sequence dims.
static DeltaDims probe_of(DeltaProbe *p, const float *act, const DeltaLayer *z, int T) {
    DeltaDims dd = delta_layer_dims(z, 1, T);
    delta_probe_carve(p, (float *)act, &dd);
    return dd;
}

void delta_layer_mixing_matrix(float *A, const float *act, const DeltaLayer *z, int T) {
    DeltaProbe p;
    DeltaDims dd = probe_of(&p, act, z, T);
    delta_probe_mixing_matrix(A, &p, &dd);
}

void delta_layer_states_at(float *S, const float *act, const DeltaLayer *z, int T, int head, const int *times,
                           int n_times) {
    DeltaProbe p;
    DeltaDims dd = probe_of(&p, act, z, T);
    delta_probe_states(S, &p, &dd, head, times, n_times);
}

void delta_layer_gates(float *beta, float *alpha, const float *act, const DeltaLayer *z, int T) {
    DeltaProbe p;
    probe_of(&p, act, z, T);
    memcpy(beta, p.beta, sizeof(float) * (size_t)T * z->Hv);
    for (size_t i = 0; i < (size_t)T * z->Hv * z->g_dim; i++) alpha[i] = expf(p.g[i]);
}

void delta_geometry_tiny(ModelGeometry *g, const char *name, LinearKind kind, int n_layers, int d_model, int n_heads,
                         int n_key_heads) {
    geometry_init(g, name, n_layers, d_model, n_heads, n_heads);
    int dh = d_model / n_heads;
    for (int l = 0; l < n_layers && l < GEOM_MAX_LAYERS; l++) g->layer_kind[l] = LAYER_LINEAR;
    g->linear_kind = kind;
    g->linear_num_value_heads = n_heads;
    g->linear_num_key_heads = n_key_heads;
    g->linear_key_head_dim = dh;
    g->linear_value_head_dim = dh;
    g->linear_conv_kernel_dim = 4;
    g->state_dtype_bytes = 4;
    g->dtype_bytes = 4;
}

// ================================================================================================
// The "gdn" mixer: the layer above, with [z | b | a] = x [in_proj_z; in_proj_b; in_proj_a]^T giving
// the output gate z (silu), beta = sigmoid(b) and one decay per value head from a.
// ================================================================================================

static DeltaLayer dims_of(const ModelGeometry *g) { return delta_layer_of(g, "gdn", 0, 0, GDN_CHUNK); }

int delta_layer_validate(const ModelGeometry *g, int layer, const char *who, int kind, char *why, size_t cap) {
    if (!mixer_validate_linear(g, layer, who, kind, why, cap)) return 0;
    if (g->linear_conv_kernel_dim < 2)
        return mixer_fail(why, cap, "linear_conv_kernel_dim %d: mixer '%s' needs a short conv of width >= 2",
                          g->linear_conv_kernel_dim, who);
    return 1;
}

static int gdn_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    return delta_layer_validate(g, layer, "gdn", LINEAR_GDN, why, cap);
}

// P2 = Hv*dv + 2*Hv: the width of a row of [z | b | a].
static int zba_width(const DeltaLayer *z) { return z->Hv * z->dv + 2 * z->Hv; }

enum { IN_Q, IN_K, IN_V, IN_Z, IN_B, IN_A, CONV, A_LOG, DT_BIAS, NORM, OUT, N_SLOTS };

static void specs(ParamSpec s[N_SLOTS], const DeltaLayer *z) {
    int hk = z->Hk * z->dk, hv = z->Hv * z->dv;
    ParamSpec t[N_SLOTS] = {
        [IN_Q] = {"in_proj_q", 2, {hk, z->d}, INIT_NORMAL},   [IN_K] = {"in_proj_k", 2, {hk, z->d}, INIT_NORMAL},
        [IN_V] = {"in_proj_v", 2, {hv, z->d}, INIT_NORMAL},   [IN_Z] = {"in_proj_z", 2, {hv, z->d}, INIT_NORMAL},
        [IN_B] = {"in_proj_b", 2, {z->Hv, z->d}, INIT_NORMAL}, [IN_A] = {"in_proj_a", 2, {z->Hv, z->d}, INIT_NORMAL},
        [CONV] = {"conv1d", 3, {z->Cc, 1, z->K}, INIT_CONV},   [A_LOG] = {"A_log", 1, {z->Hv}, INIT_DECAY},
        [DT_BIAS] = {"dt_bias", 1, {z->Hv}, INIT_WITH_PREV},   [NORM] = {"norm", 1, {z->dv}, INIT_ONES},
        [OUT] = {"out_proj", 2, {z->d, hv}, INIT_OUT},
    };
    memcpy(s, t, sizeof t);
}

// The shared weights, and in_proj_z/b/a as one (P2, d) matrix.
typedef struct { DeltaWeights l; float *w_zba; } Weights;

static Weights weights_at(const DeltaLayer *z, float *p) {
    ParamSpec s[N_SLOTS];
    ParamTensor t[N_SLOTS];
    specs(s, z);
    param_table(t, N_SLOTS, s, N_SLOTS);
    return (Weights){.l = {.qkv = p + t[IN_Q].offset, .conv = p + t[CONV].offset, .A_log = p + t[A_LOG].offset,
                           .dt_bias = p + t[DT_BIAS].offset, .norm = p + t[NORM].offset, .out = p + t[OUT].offset},
                     .w_zba = p + t[IN_Z].offset};
}

static int gdn_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    (void)layer;
    DeltaLayer z = dims_of(g);
    ParamSpec s[N_SLOTS];
    specs(s, &z);
    return param_table(out, cap, s, N_SLOTS);
}

void decay_init_ranges(const ModelGeometry *g, double a[2], double dt[2]) {
    a[0] = g->linear_a_init_min > 0.0 ? g->linear_a_init_min : 1.0;
    a[1] = g->linear_a_init_max > 0.0 ? g->linear_a_init_max : 16.0;
    dt[0] = g->linear_dt_init_min > 0.0 ? g->linear_dt_init_min : 1e-3;
    dt[1] = g->linear_dt_init_max > 0.0 ? g->linear_dt_init_max : 1e-1;
}

// A_log = log(U[1,16]); dt_bias = softplus^-1(dt), dt log-uniform in [1e-3, 1e-1]: the decay of a head
// starts between exp(-16 * 0.1) and exp(-1e-3) per token, a spread of memory lengths.
void delta_init_decay(float *A_log, float *dt_bias, int n_heads, int n_dt, const ModelGeometry *g, Rng *rng) {
    double a[2], dt[2];
    decay_init_ranges(g, a, dt);
    float alo = (float)a[0], aspan = (float)(a[1] - a[0]);
    float lo = logf((float)dt[0]), span = logf((float)dt[1]) - lo;
    for (int h = 0; h < n_heads; h++) A_log[h] = logf(alo + aspan * rng_uniform(rng));
    for (int i = 0; i < n_dt; i++) {
        float d = expf(lo + span * rng_uniform(rng));
        dt_bias[i] = d + logf(-expm1f(-d));   // softplus(dt_bias) = dt
    }
}

static void gdn_init(const Mixer *m, float *params, Rng *rng) {
    DeltaLayer z = dims_of(m->g);
    ParamSpec s[N_SLOTS];
    specs(s, &z);
    param_table_init(params, s, N_SLOTS, m->g, rng);
}

// ---- activations ------------------------------------------------------------------------------------

typedef struct {
    DeltaAct l;        // the shared ones, first (see gdn.h)
    float *zba;        // (N, P2) [z | b | a]
} Act;

static size_t act_carve(Act *a, float *act, const DeltaLayer *z, int B, int T) {
    size_t used = delta_act_carve(&a->l, act, z, B, T);
    a->zba = take_floats(act, &used, (size_t)B * T * zba_width(z));
    return used;
}

static size_t gdn_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    (void)layer;
    DeltaLayer z = dims_of(g);
    Act a;
    return act_carve(&a, NULL, &z, B, T);
}

// Forward and decode: conv_state and S NULL for a training forward over (B,T), the cache's for decode.
static void run(float *out, DeltaAct *a, float *zba, float *conv_state, float *S, const float *x, const Weights *w,
                const DeltaLayer *z, int B, int T) {
    int N = B * T, P2 = zba_width(z), hv = z->Hv * z->dv;
    delta_layer_in(a, conv_state, x, &w->l, z, B, T);
    linear_forward(zba, x, w->w_zba, NULL, N, z->d, P2);
    delta_gates_forward(a, zba + hv, P2, zba + hv + z->Hv, P2, &w->l, z, N);
    delta_layer_out(out, a, S, zba, P2, &w->l, z, B, T);
}

static void gdn_forward(const Mixer *m, float *out, float *act, const float *x, const float *params, int B, int T) {
    DeltaLayer z = dims_of(m->g);
    Weights w = weights_at(&z, (float *)params);   // read only
    Act a;
    act_carve(&a, act, &z, B, T);
    run(out, &a.l, a.zba, NULL, NULL, x, &w, &z, B, T);
}

static void gdn_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                         const float *x, const float *params, int B, int T) {
    DeltaLayer z = dims_of(m->g);
    int N = B * T, P2 = zba_width(&z), hv = z.Hv * z.dv;
    Weights w = weights_at(&z, (float *)params), dw = weights_at(&z, dparams);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);   // read only
    DeltaGrads d;
    delta_grads_new(&d, &z, N, (size_t)N * P2);
    float *dzba = d.mine;   // (N, P2)
    delta_layer_out_backward(&d, dzba, &dw.l, dout, &a.l, a.zba, P2, &w.l, &z, B, T);
    delta_gates_backward(dzba + hv, P2, dzba + hv + z.Hv, P2, &dw.l, &d, &a.l, a.zba + hv + z.Hv, &w.l, &z, N);
    delta_layer_in_backward(dx, &dw.l, &d, &a.l, x, &w.l, &z, B, T);
    linear_backward(dx, dw.w_zba, NULL, dzba, x, w.w_zba, N, z.d, P2);
    free(d.dy);
}

// ---- decode: a fixed state, whatever the context ---------------------------------------------------

struct MixerCache {
    DeltaCache d;      // state, conv state, the step's shared scratch
    float *zba;        // (P2)
};

static MixerCache *gdn_cache_new(const Mixer *m, int max_T) {
    DeltaLayer z = dims_of(m->g);
    MixerCache *c = mallocCheck(sizeof *c);
    delta_cache_init(&c->d, &z, max_T, (size_t)zba_width(&z));
    c->zba = c->d.mine;
    return c;
}

static void gdn_cache_free(MixerCache *c) {
    if (!c) return;
    delta_cache_release(&c->d);
    free(c);
}

static size_t gdn_cache_bytes(const MixerCache *c) { return delta_cache_bytes(&c->d); }

static void gdn_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    (void)m;
    DeltaCache *d = &c->d;
    CHECK(d->n < d->max_T, "gdn decode: cache is full (%d tokens)", d->max_T);
    Weights w = weights_at(&d->z, (float *)params);
    run(out, &d->a, c->zba, d->conv_state, d->S, x, &w, &d->z, 1, 1);
    d->n++;
}

// ---- what the chapters draw ---------------------------------------------------------------------------

static void gdn_mixing_matrix(const Mixer *m, float *A, const float *act, const float *params, int T) {
    (void)params;
    DeltaLayer z = dims_of(m->g);
    delta_layer_mixing_matrix(A, act, &z, T);
}

void gdn_states_at(const Mixer *m, float *S, const float *act, int T, int head, const int *times, int n_times) {
    DeltaLayer z = dims_of(m->g);
    delta_layer_states_at(S, act, &z, T, head, times, n_times);
}

void gdn_gates(const Mixer *m, float *beta, float *alpha, const float *act, int T) {
    DeltaLayer z = dims_of(m->g);
    delta_layer_gates(beta, alpha, act, &z, T);
}

void gdn_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads) {
    delta_geometry_tiny(g, "tiny-gdn", LINEAR_GDN, n_layers, d_model, n_heads, n_heads / 2 > 0 ? n_heads / 2 : 1);
}

const MixerOps gdn_mixer = {
    .name = "gdn",
    .validate = gdn_validate,
    .param_tensors = gdn_param_tensors,
    .init = gdn_init,
    .act_floats = gdn_act_floats,
    .forward = gdn_forward,
    .backward = gdn_backward,
    .cache_new = gdn_cache_new,
    .cache_free = gdn_cache_free,
    .cache_bytes = gdn_cache_bytes,
    .decode = gdn_decode,
    .n_mix_heads = delta_n_mix_heads,
    .mixing_matrix = gdn_mixing_matrix,
};
