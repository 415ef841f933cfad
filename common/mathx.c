// mathx.c: matmul (reference and cache-blocked), linear layer, softmax, masks, norms, RoPE, activations.
//
// The fast matmul is the classic packed GEMM (Goto / BLIS): copy a block of B into NR-wide column
// panels and a block of A into MR-tall row panels, then a 6x16 register-tile kernel walks K. Every
// output element is ONE fused multiply-add chain over k = 0, 1, ..., K-1 starting from 0 (or from C
// when accumulating). Threads only ever split the output tiles, so the bits do not depend on the
// thread count, and since zero padding adds exact zeros, they do not depend on M, N or where a row
// lands in a tile either: a decode step (M = 1) gives the same bits as that row of a full forward.
#include "mathx.h"
#include "check.h"

#include <math.h>
#include <omp.h>
#include <string.h>

// Whether work of this size should be spread over threads. Entering an OpenMP region costs a few
// microseconds even under if(0) (a decode step is about that long), so small calls and calls made
// from inside a parallel region (a chapter's loop over heads) run straight on the calling thread.
static int use_threads(long work, long min_work) {
    return work >= min_work && omp_get_max_threads() > 1 && !omp_in_parallel();
}

// ---- matrix multiply: references ----------------------------------------------------------------

void matmul_ref(float *C, const float *A, const float *B, int M, int K, int N, int accumulate) {
    // C (M,N), A (M,K), B (K,N)
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            float sum = 0.0f;
            for (int k = 0; k < K; k++) sum += A[(long)i * K + k] * B[(long)k * N + j];
            C[(long)i * N + j] = accumulate ? C[(long)i * N + j] + sum : sum;
        }
    }
}

void matmul_nt_ref(float *C, const float *A, const float *B, int M, int K, int N, int accumulate) {
    // C (M,N), A (M,K), B (N,K)
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            float sum = 0.0f;
            for (int k = 0; k < K; k++) sum += A[(long)i * K + k] * B[(long)j * K + k];
            C[(long)i * N + j] = accumulate ? C[(long)i * N + j] + sum : sum;
        }
    }
}

// ---- matrix multiply: packed, blocked, threaded --------------------------------------------------

// Register tile MR x NR = 6 x 16: 12 accumulators of 8 floats, 2 registers of B, 1 broadcast of A,
// out of the 16 AVX2 registers. KC x NR of B (16 KiB) stays in L1 while the kernel runs; the MC x KC
// block of A (96 KiB) and the KC x NC block of B (256 KiB) of one tile stay in that core's L2.
enum { MR = 6, NR = 16, KC = 256, MC = 96, NC = 256 };

// Below this many multiply-adds (~5 us on one core) a second thread saves less than the few
// microseconds a parallel region costs to start (measured: 64x64x64 is faster on one thread).
#define MATMUL_PAR_MIN (1L << 19)

// A matrix seen through strides: element (r, c) is at p[r * rs + c * cs]. This is how one packed
// GEMM serves all three forms: A or B transposed is just the strides swapped.
typedef struct { const float *p; long rs, cs; } StridedMat;

// Ap (MR-row panels, each kc x MR, zero padded) <- A[i0 : i0+mc, k0 : k0+kc]
static void pack_a(float *Ap, StridedMat A, int i0, int mc, int k0, int kc) {
    for (int ip = 0; ip < mc; ip += MR) {
        int m = mc - ip < MR ? mc - ip : MR;
        float *dst = Ap + (long)ip * kc;
        const float *src = A.p + (long)(i0 + ip) * A.rs + (long)k0 * A.cs;
        if (m == MR && A.cs == 1) {
            // row-major A: six row streams, interleaved k by k
            const float *r0 = src, *r1 = r0 + A.rs, *r2 = r1 + A.rs, *r3 = r2 + A.rs, *r4 = r3 + A.rs,
                        *r5 = r4 + A.rs;
            int k = 0;
            for (; k + 8 <= kc; k += 8) {
                // 8x8 transpose of the six rows (two dummies); each 8-wide store leaves two junk floats
                // that the next store (or the next panel, or the Ap slack) overwrites
                v8f in[8] = {v8_load(r0 + k), v8_load(r1 + k), v8_load(r2 + k), v8_load(r3 + k),
                             v8_load(r4 + k), v8_load(r5 + k), v8_zero(), v8_zero()}, o[8];
                v8_transpose(o, in);
                for (int q = 0; q < 8; q++) v8_store(dst + (k + q) * MR, o[q]);
            }
            for (; k < kc; k++) {
                dst[k * MR + 0] = r0[k]; dst[k * MR + 1] = r1[k]; dst[k * MR + 2] = r2[k];
                dst[k * MR + 3] = r3[k]; dst[k * MR + 4] = r4[k]; dst[k * MR + 5] = r5[k];
            }
        } else if (m == MR && A.rs == 1) {
            // A^T (the tn form): the six values of one k are already contiguous
            for (int k = 0; k < kc; k++) memcpy(dst + k * MR, src + (long)k * A.cs, MR * sizeof(float));
        } else {
            for (int k = 0; k < kc; k++)
                for (int r = 0; r < MR; r++) dst[k * MR + r] = r < m ? src[(long)r * A.rs + (long)k * A.cs] : 0.0f;
        }
    }
}

// One NR-column panel: dst (kc x NR, zero padded) <- B[k0 : k0+kc, j0 : j0+n], n <= NR
static void pack_b_panel(float *dst, StridedMat B, int k0, int kc, int j0, int n) {
    if (B.rs == 1 && n == NR) {
        // B^T (the nt form, B is (N,K)): 8x8 in-register transposes, reading rows of the weight
        int k = 0;
        for (; k + 8 <= kc; k += 8) {
            for (int h = 0; h < 2; h++) {
                const float *b = B.p + (long)(j0 + 8 * h) * B.cs + k0 + k;
                long st = B.cs;
                v8f in[8], o[8];
                for (int q = 0; q < 8; q++) in[q] = v8_load(b + q * st);
                v8_transpose(o, in);
                for (int q = 0; q < 8; q++) v8_store(dst + (k + q) * NR + 8 * h, o[q]);
            }
        }
        for (; k < kc; k++)
            for (int c = 0; c < NR; c++) dst[k * NR + c] = B.p[(long)(j0 + c) * B.cs + k0 + k];
        return;
    }
    for (int k = 0; k < kc; k++) {
        const float *src = B.p + (long)(k0 + k) * B.rs + (long)j0 * B.cs;
        for (int c = 0; c < n; c++) dst[k * NR + c] = src[(long)c * B.cs];
        for (int c = n; c < NR; c++) dst[k * NR + c] = 0.0f;
    }
}

// Bp (NR-column panels, each kc x NR) <- B[k0 : k0+kc, j0 : j0+nt]
static void pack_b(float *Bp, StridedMat B, int k0, int kc, int j0, int nt) {
    int full = nt / NR;
    if (B.cs == 1) {
        // row-major B: walk each row once, dealing its 16-float pieces out to the panels
        for (int k = 0; k < kc; k++) {
            const float *src = B.p + (long)(k0 + k) * B.rs + j0;
            for (int jp = 0; jp < full; jp++) memcpy(Bp + ((long)jp * kc + k) * NR, src + jp * NR, NR * sizeof(float));
        }
    } else {
        for (int jp = 0; jp < full; jp++) pack_b_panel(Bp + (long)jp * NR * kc, B, k0, kc, j0 + jp * NR, NR);
    }
    if (full * NR < nt) pack_b_panel(Bp + (long)full * NR * kc, B, k0, kc, j0 + full * NR, nt - full * NR);
}

// C (MR x NR tile, row stride ldc) = (load ? C : 0) + Ap (kc x MR) . Bp (kc x NR), one FMA per k in order.
static void kernel_6x16(float *C, long ldc, const float *Ap, const float *Bp, int kc, int load) {
    v8f c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (load) {
        c00 = v8_load(C + 0 * ldc); c01 = v8_load(C + 0 * ldc + 8);
        c10 = v8_load(C + 1 * ldc); c11 = v8_load(C + 1 * ldc + 8);
        c20 = v8_load(C + 2 * ldc); c21 = v8_load(C + 2 * ldc + 8);
        c30 = v8_load(C + 3 * ldc); c31 = v8_load(C + 3 * ldc + 8);
        c40 = v8_load(C + 4 * ldc); c41 = v8_load(C + 4 * ldc + 8);
        c50 = v8_load(C + 5 * ldc); c51 = v8_load(C + 5 * ldc + 8);
    } else {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = v8_zero();
    }
    for (int k = 0; k < kc; k++) {
        v8f b0 = v8_load(Bp), b1 = v8_load(Bp + 8), a;
        a = v8_set1(Ap[0]); c00 = v8_fma(a, b0, c00); c01 = v8_fma(a, b1, c01);
        a = v8_set1(Ap[1]); c10 = v8_fma(a, b0, c10); c11 = v8_fma(a, b1, c11);
        a = v8_set1(Ap[2]); c20 = v8_fma(a, b0, c20); c21 = v8_fma(a, b1, c21);
        a = v8_set1(Ap[3]); c30 = v8_fma(a, b0, c30); c31 = v8_fma(a, b1, c31);
        a = v8_set1(Ap[4]); c40 = v8_fma(a, b0, c40); c41 = v8_fma(a, b1, c41);
        a = v8_set1(Ap[5]); c50 = v8_fma(a, b0, c50); c51 = v8_fma(a, b1, c51);
        Ap += MR;
        Bp += NR;
    }
    v8_store(C + 0 * ldc, c00); v8_store(C + 0 * ldc + 8, c01);
    v8_store(C + 1 * ldc, c10); v8_store(C + 1 * ldc + 8, c11);
    v8_store(C + 2 * ldc, c20); v8_store(C + 2 * ldc + 8, c21);
    v8_store(C + 3 * ldc, c30); v8_store(C + 3 * ldc + 8, c31);
    v8_store(C + 4 * ldc, c40); v8_store(C + 4 * ldc + 8, c41);
    v8_store(C + 5 * ldc, c50); v8_store(C + 5 * ldc + 8, c51);
}

// A partial tile (m < MR or n < NR) goes through a full 6x16 scratch tile; the padding is zeros, so
// the valid elements see exactly the FMA chain they would see in a full tile.
static void kernel_edge(float *C, long ldc, const float *Ap, const float *Bp, int kc, int load, int m, int n) {
    _Alignas(32) float tile[MR * NR];
    if (load) {
        memset(tile, 0, sizeof tile);
        for (int r = 0; r < m; r++) memcpy(tile + r * NR, C + r * ldc, (size_t)n * sizeof(float));
    }
    kernel_6x16(tile, NR, Ap, Bp, kc, load);
    for (int r = 0; r < m; r++) memcpy(C + r * ldc, tile + r * NR, (size_t)n * sizeof(float));
}

// One output tile C[i0 : i0+mt, j0 : j0+nt] (mt <= MC, nt <= NC), over all of K in KC steps. A tile
// packs its own A and B blocks, so tiles are independent: threads never wait on each other mid-way.
static void gemm_tile(float *C, StridedMat A, StridedMat B, int i0, int mt, int j0, int nt, int K, int N,
                      int accumulate, float *Ap, float *Bp) {
    int n_panels = (nt + NR - 1) / NR;
    for (int pc = 0; pc < K; pc += KC) {
        int kc = K - pc < KC ? K - pc : KC;
        int load = accumulate || pc > 0;   // later K blocks continue the chain from C
        pack_a(Ap, A, i0, mt, pc, kc);
        pack_b(Bp, B, pc, kc, j0, nt);
        for (int jp = 0; jp < n_panels; jp++) {
            int n = nt - jp * NR < NR ? nt - jp * NR : NR;
            const float *bp = Bp + (long)jp * NR * kc;
            for (int ip = 0; ip < mt; ip += MR) {
                int m = mt - ip < MR ? mt - ip : MR;
                float *c = C + (long)(i0 + ip) * N + j0 + jp * NR;
                if (m == MR && n == NR) kernel_6x16(c, N, Ap + (long)ip * kc, bp, kc, load);
                else kernel_edge(c, N, Ap + (long)ip * kc, bp, kc, load, m, n);
            }
        }
    }
}

// A few rows (a decode step is one): packing would copy all of B to use it once, so read B in place.
// Same chains as the packed path, fma(A[i,k], B[k,j], c) for k in order, so the same bits. Columns
// [j0, j1) of C; B is row-major (cs == 1) or transposed (rs == 1, the nt form).
enum { SMALL_M = 4 };
static void gemm_small_m(float *C, StridedMat A, StridedMat B, int M, int K, int N, int accumulate, int j0, int j1) {
    int j = j0;
    for (; j + 8 <= j1; j += 8) {
        v8f c[SMALL_M];
        for (int i = 0; i < M; i++) c[i] = accumulate ? v8_load(C + (long)i * N + j) : v8_zero();
        int k = 0;
        if (B.rs == 1) {
            // B^T: the 8 columns are 8 rows of the weight; transpose 8 k at a time
            const float *b = B.p + (long)j * B.cs;
            long st = B.cs;
            for (; k + 8 <= K; k += 8) {
                v8f in[8], o[8];
                for (int q = 0; q < 8; q++) in[q] = v8_load(b + q * st + k);
                v8_transpose(o, in);
                for (int q = 0; q < 8; q++)
                    for (int i = 0; i < M; i++) c[i] = v8_fma(v8_set1(A.p[i * A.rs + (long)(k + q) * A.cs]), o[q], c[i]);
            }
        }
        for (; k < K; k++) {
            float bk[8];
            for (int q = 0; q < 8; q++) bk[q] = B.p[(long)k * B.rs + (long)(j + q) * B.cs];
            v8f bv = v8_load(bk);
            for (int i = 0; i < M; i++) c[i] = v8_fma(v8_set1(A.p[i * A.rs + (long)k * A.cs]), bv, c[i]);
        }
        for (int i = 0; i < M; i++) v8_store(C + (long)i * N + j, c[i]);
    }
    // the last < 8 columns one by one: a scalar fmaf rounds exactly like one lane of the vector FMA
    for (; j < j1; j++) {
        for (int i = 0; i < M; i++) {
            float acc = accumulate ? C[(long)i * N + j] : 0.0f;
            for (int k = 0; k < K; k++)
                acc = fmaf(A.p[i * A.rs + (long)k * A.cs], B.p[(long)k * B.rs + (long)j * B.cs], acc);
            C[(long)i * N + j] = acc;
        }
    }
}

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

// How the output is cut into tiles; every tile is computed by gemm_tile on one thread.
typedef struct {
    float *C;
    StridedMat A, B;
    int M, K, N, accumulate;
    int mt, nt;     // tile size (rows <= MC, columns <= NC)
    int n_m, n_n;   // tiles down and across
} GemmPlan;

static void gemm_run_tile(const GemmPlan *g, int t, float *Ap, float *Bp) {
    int i0 = (t / g->n_n) * g->mt, j0 = (t % g->n_n) * g->nt;
    int m = g->M - i0 < g->mt ? g->M - i0 : g->mt, n = g->N - j0 < g->nt ? g->N - j0 : g->nt;
    gemm_tile(g->C, g->A, g->B, i0, m, j0, n, g->K, g->N, g->accumulate, Ap, Bp);
}

// C (M,N) (+)= A (M,K) . B (K,N), with A and B given through strides.
static void gemm(float *C, StridedMat A, StridedMat B, int M, int K, int N, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate) memset(C, 0, (size_t)M * N * sizeof(float));
        return;
    }
    int par = use_threads((long)M * N * K, MATMUL_PAR_MIN);
    if (M <= SMALL_M && (B.cs == 1 || B.rs == 1)) {
        int n_chunks = (N + 63) / 64;   // columns in chunks of 64
        if (par) {
            #pragma omp parallel for schedule(dynamic, 1)
            for (int ch = 0; ch < n_chunks; ch++)
                gemm_small_m(C, A, B, M, K, N, accumulate, ch * 64, (ch + 1) * 64 < N ? (ch + 1) * 64 : N);
        } else {
            gemm_small_m(C, A, B, M, K, N, accumulate, 0, N);
        }
        return;
    }
    // Tiles of up to MC x NC. With several threads, cut them smaller until there are about four per
    // thread, so a thread that the OS delays does not hold up the others (dynamic schedule). The
    // tiling never changes the bits: every element is the same chain over k whatever tile it is in.
    GemmPlan g = {C, A, B, M, K, N, accumulate, M < MC ? M : MC, N < NC ? N : NC, 0, 0};
    int want = par ? 4 * omp_get_max_threads() : 1;
    g.n_m = (M + g.mt - 1) / g.mt;
    if (g.n_m * ((N + g.nt - 1) / g.nt) < want) {
        int cols = (want + g.n_m - 1) / g.n_m;
        g.nt = round_up((N + cols - 1) / cols, NR);
        if (g.nt > N) g.nt = N;
    }
    g.n_n = (N + g.nt - 1) / g.nt;
    if (g.n_m * g.n_n < want && M > MR) {
        int rows = (want + g.n_n - 1) / g.n_n;
        g.mt = round_up((M + rows - 1) / rows, MR);
        if (g.mt > M) g.mt = M;
        g.n_m = (M + g.mt - 1) / g.mt;
    }
    if (par) {
        #pragma omp parallel
        {
            // Each thread packs into its own stack: no allocation, nothing shared.
            _Alignas(64) float Ap[MC * KC + 8];   // + 8: slack for pack_a's 8-wide stores
            _Alignas(64) float Bp[KC * NC];
            #pragma omp for schedule(dynamic, 1)
            for (int t = 0; t < g.n_m * g.n_n; t++) gemm_run_tile(&g, t, Ap, Bp);
        }
    } else {
        _Alignas(64) float Ap[MC * KC + 8];
        _Alignas(64) float Bp[KC * NC];
        for (int t = 0; t < g.n_m * g.n_n; t++) gemm_run_tile(&g, t, Ap, Bp);
    }
}

void matmul(float *C, const float *A, const float *B, int M, int K, int N, int accumulate) {
    // A (M,K) row-major: (i,k) at i*K + k; B (K,N): (k,j) at k*N + j
    gemm(C, (StridedMat){A, K, 1}, (StridedMat){B, N, 1}, M, K, N, accumulate);
}

void matmul_nt(float *C, const float *A, const float *B, int M, int K, int N, int accumulate) {
    // B (N,K): (k,j) at j*K + k
    gemm(C, (StridedMat){A, K, 1}, (StridedMat){B, 1, K}, M, K, N, accumulate);
}

void matmul_tn(float *C, const float *A, const float *B, int M, int K, int N, int accumulate) {
    // A (K,M): (i,k) at k*M + i
    gemm(C, (StridedMat){A, 1, M}, (StridedMat){B, N, 1}, M, K, N, accumulate);
}

// ---- linear layer -------------------------------------------------------------------------------

void linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int N, int C, int OC) {
    // out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC); the sum starts from the bias, as in llm.c
    if (bias) {
        for (int n = 0; n < N; n++) memcpy(out + (long)n * OC, bias, (size_t)OC * sizeof(float));
    }
    matmul_nt(out, inp, weight, N, C, OC, bias != NULL);
}

void linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int C, int OC) {
    // dinp (N,C) += dout (N,OC) @ weight (OC,C)
    if (dinp) matmul(dinp, dout, weight, N, OC, C, 1);
    // dweight (OC,C) += dout^T (OC,N) @ inp (N,C)
    if (dweight) matmul_tn(dweight, dout, inp, OC, N, C, 1);
    // dbias (OC) += column sums of dout; rows are summed in order, so no thread splits the sum
    if (dbias) {
        for (int n = 0; n < N; n++) {
            const float *d = dout + (long)n * OC;
            for (int o = 0; o < OC; o++) dbias[o] += d[o];
        }
    }
}

// ---- softmax ------------------------------------------------------------------------------------

void softmax_row(float *p, const float *logits, const unsigned char *mask, int n) {
    float maxv = -INFINITY;
    for (int j = 0; j < n; j++)
        if ((!mask || mask[j]) && logits[j] > maxv) maxv = logits[j];
    // Nothing visible (or every visible logit is -inf): the row attends to nothing.
    if (maxv == -INFINITY) {
        for (int j = 0; j < n; j++) p[j] = 0.0f;
        return;
    }
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        p[j] = (!mask || mask[j]) ? expf(logits[j] - maxv) : 0.0f;
        sum += p[j];
    }
    float inv = 1.0f / sum;   // sum >= 1: the max contributes exp(0)
    for (int j = 0; j < n; j++) p[j] *= inv;
}

void softmax_row_backward(float *dlogits, const float *p, const float *dp, int n) {
    // d logit_j = p_j * (dp_j - sum_k p_k dp_k)
    float dot = 0.0f;
    for (int j = 0; j < n; j++) dot += p[j] * dp[j];
    for (int j = 0; j < n; j++) dlogits[j] = p[j] * (dp[j] - dot);
}

// ---- masks --------------------------------------------------------------------------------------

void mask_fill(unsigned char *mask, MaskKind kind, int T, int param) {
    CHECK(kind != MASK_SLIDING || param >= 1, "sliding window must be >= 1, got %d", param);
    CHECK(kind != MASK_PREFIX_LM || param >= 0, "prefix length must be >= 0, got %d", param);
    for (int i = 0; i < T; i++) {
        for (int j = 0; j < T; j++) {
            int see;
            switch (kind) {
            case MASK_BIDIRECTIONAL: see = 1; break;
            case MASK_CAUSAL: see = j <= i; break;
            case MASK_PREFIX_LM: see = j < param || j <= i; break;
            case MASK_SLIDING: see = j <= i && j > i - param; break;
            default: see = 0; CHECK(0, "unknown mask kind %d", (int)kind);
            }
            mask[(long)i * T + j] = (unsigned char)see;
        }
    }
}

// ---- norms --------------------------------------------------------------------------------------

// Row-wise work is spread over threads only past this many elements.
#define ROWS_PAR_MIN (1L << 16)

// o (d) = x (d) * r * weight, r = 1/sqrt(mean(x^2) + eps); returns r
static float rmsnorm_row(float *o, const float *x, const float *weight, int d, float eps) {
    float ss = 0.0f;
    for (int i = 0; i < d; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / d + eps);
    for (int i = 0; i < d; i++) o[i] = x[i] * r * weight[i];
    return r;
}

void rmsnorm_forward(float *out, float *rstd, const float *x, const float *weight, int N, int d, float eps) {
    // out (N,d), rstd (N), x (N,d), weight (d)
    if (use_threads((long)N * d, ROWS_PAR_MIN)) {
        #pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            float r = rmsnorm_row(out + (long)n * d, x + (long)n * d, weight, d, eps);
            if (rstd) rstd[n] = r;
        }
    } else {
        for (int n = 0; n < N; n++) {
            float r = rmsnorm_row(out + (long)n * d, x + (long)n * d, weight, d, eps);
            if (rstd) rstd[n] = r;
        }
    }
}

// dx (d) += d out / d x for one row. With y_i = x_i r w_i and dr/dx_j = -r^3 x_j / d:
// dx_j += r w_j g_j - r^3 x_j / d * sum_i g_i w_i x_i
static void rmsnorm_row_backward(float *dx, const float *g, const float *x, const float *weight, float r, int d) {
    float dot = 0.0f;
    for (int i = 0; i < d; i++) dot += g[i] * weight[i] * x[i];
    float c = r * r * r * dot / d;
    for (int i = 0; i < d; i++) dx[i] += r * weight[i] * g[i] - c * x[i];
}

void rmsnorm_backward(float *dx, float *dweight, const float *dout, const float *x,
                      const float *weight, const float *rstd, int N, int d) {
    CHECK(rstd != NULL, "rmsnorm_backward needs the rstd saved by the forward");
    if (dx) {
        if (use_threads((long)N * d, ROWS_PAR_MIN)) {
            #pragma omp parallel for schedule(static)
            for (int n = 0; n < N; n++)
                rmsnorm_row_backward(dx + (long)n * d, dout + (long)n * d, x + (long)n * d, weight, rstd[n], d);
        } else {
            for (int n = 0; n < N; n++)
                rmsnorm_row_backward(dx + (long)n * d, dout + (long)n * d, x + (long)n * d, weight, rstd[n], d);
        }
    }
    // dweight sums over rows: one thread, rows in order
    if (dweight) {
        for (int n = 0; n < N; n++) {
            const float *xr = x + (long)n * d, *g = dout + (long)n * d;
            float r = rstd[n];
            for (int i = 0; i < d; i++) dweight[i] += g[i] * xr[i] * r;
        }
    }
}

// o (d) = (x - mean) * r * weight + bias, r = 1/sqrt(var + eps) (biased variance, as in PyTorch)
static void layernorm_row(float *o, float *mean, float *rstd, const float *x, const float *weight,
                          const float *bias, int d, float eps) {
    float m = 0.0f;
    for (int i = 0; i < d; i++) m += x[i];
    m /= d;
    float v = 0.0f;
    for (int i = 0; i < d; i++) v += (x[i] - m) * (x[i] - m);
    v /= d;
    float r = 1.0f / sqrtf(v + eps);
    for (int i = 0; i < d; i++) {
        float y = (x[i] - m) * r * weight[i];
        o[i] = bias ? y + bias[i] : y;
    }
    *mean = m;
    *rstd = r;
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *weight,
                       const float *bias, int N, int d, float eps) {
    // out (N,d), mean (N), rstd (N), x (N,d), weight (d), bias (d)
    if (use_threads((long)N * d, ROWS_PAR_MIN)) {
        #pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            float m, r;
            layernorm_row(out + (long)n * d, &m, &r, x + (long)n * d, weight, bias, d, eps);
            if (mean) mean[n] = m;
            if (rstd) rstd[n] = r;
        }
    } else {
        for (int n = 0; n < N; n++) {
            float m, r;
            layernorm_row(out + (long)n * d, &m, &r, x + (long)n * d, weight, bias, d, eps);
            if (mean) mean[n] = m;
            if (rstd) rstd[n] = r;
        }
    }
}

// dx (d) += for one row; with xhat = (x - mean) r and g' = g w:
// dx += r (g' - mean(g') - xhat mean(g' xhat))
static void layernorm_row_backward(float *dx, const float *g, const float *x, const float *weight, float m,
                                   float r, int d) {
    float gmean = 0.0f, gxmean = 0.0f;
    for (int i = 0; i < d; i++) {
        float gw = g[i] * weight[i];
        gmean += gw;
        gxmean += gw * (x[i] - m) * r;
    }
    gmean /= d;
    gxmean /= d;
    for (int i = 0; i < d; i++) {
        float xhat = (x[i] - m) * r;
        dx[i] += r * (g[i] * weight[i] - gmean - xhat * gxmean);
    }
}

void layernorm_backward(float *dx, float *dweight, float *dbias, const float *dout, const float *x,
                        const float *weight, const float *mean, const float *rstd, int N, int d) {
    CHECK(mean != NULL && rstd != NULL, "layernorm_backward needs the mean and rstd saved by the forward");
    if (dx) {
        if (use_threads((long)N * d, ROWS_PAR_MIN)) {
            #pragma omp parallel for schedule(static)
            for (int n = 0; n < N; n++)
                layernorm_row_backward(dx + (long)n * d, dout + (long)n * d, x + (long)n * d, weight, mean[n],
                                       rstd[n], d);
        } else {
            for (int n = 0; n < N; n++)
                layernorm_row_backward(dx + (long)n * d, dout + (long)n * d, x + (long)n * d, weight, mean[n],
                                       rstd[n], d);
        }
    }
    // dweight and dbias sum over rows: one thread, rows in order
    if (dweight || dbias) {
        for (int n = 0; n < N; n++) {
            const float *xr = x + (long)n * d, *g = dout + (long)n * d;
            float m = mean[n], r = rstd[n];
            for (int i = 0; i < d; i++) {
                if (dweight) dweight[i] += g[i] * (xr[i] - m) * r;
                if (dbias) dbias[i] += g[i];
            }
        }
    }
}

// ---- RoPE ---------------------------------------------------------------------------------------

// The rotation angles depend only on (pos, i, n_rot, theta), and the tiny models ask for the same few
// thousand of them millions of times. Each thread remembers, for its last two (n_rot, theta) pairs,
// cos and sin of the first ROPE_TAB_POS positions, computed by exactly the expression below, so a
// table hit gives the same bits as computing afresh.
#define ROPE_TAB_POS 256
#define ROPE_TAB_HALF 64
typedef struct {
    int n_rot, n_pos;                             // n_pos rows filled (0: empty slot)
    double theta;
    double cs[ROPE_TAB_POS][ROPE_TAB_HALF][2];    // [pos][i] = {cos, sin}
} RopeTable;
static _Thread_local RopeTable rope_tab[2];
static _Thread_local int rope_tab_next;

static void rope_angle(double *c, double *s, int pos, int i, int n_rot, double theta) {
    double freq = pow(theta, -2.0 * i / n_rot);
    double ang = (double)pos * freq;
    *c = cos(ang);
    *s = sin(ang);
}

static const double (*rope_row(int pos, int n_rot, double theta))[2] {
    if (pos < 0 || pos >= ROPE_TAB_POS || n_rot / 2 > ROPE_TAB_HALF) return NULL;
    RopeTable *t = NULL;
    for (int k = 0; k < 2; k++)
        if (rope_tab[k].n_pos && rope_tab[k].n_rot == n_rot && rope_tab[k].theta == theta) t = &rope_tab[k];
    if (!t) {
        t = &rope_tab[rope_tab_next];
        rope_tab_next ^= 1;
        t->n_rot = n_rot;
        t->theta = theta;
        t->n_pos = 0;
    }
    for (; t->n_pos <= pos; t->n_pos++)
        for (int i = 0; i < n_rot / 2; i++)
            rope_angle(&t->cs[t->n_pos][i][0], &t->cs[t->n_pos][i][1], t->n_pos, i, n_rot, theta);
    return t->cs[pos];
}

void rope_apply(float *x, int pos, int n_rot, double theta, RopeStyle style, int inverse) {
    // x (head_dim), rotate the first n_rot dims; pair i turns by pos * theta^(-2i/n_rot).
    // Angles and the rotation are done in double: at pos ~ 1e4 a float angle is already off by ~1e-3.
    CHECK(n_rot % 2 == 0, "rope_apply: n_rot must be even, got %d", n_rot);
    int half = n_rot / 2;
    const double (*row)[2] = rope_row(pos, n_rot, theta);
    for (int i = 0; i < half; i++) {
        double c, s;
        if (row) { c = row[i][0]; s = row[i][1]; }
        else rope_angle(&c, &s, pos, i, n_rot, theta);
        if (inverse) s = -s;
        int a = style == ROPE_INTERLEAVED ? 2 * i : i;
        int b = style == ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
        double x0 = x[a], x1 = x[b];
        x[a] = (float)(x0 * c - x1 * s);
        x[b] = (float)(x0 * s + x1 * c);
    }
}

// ---- activations --------------------------------------------------------------------------------

// Elementwise work is spread over threads past this many elements, in blocks of ELEM_BLOCK.
#define ELEM_PAR_MIN (1L << 17)
#define ELEM_BLOCK 4096L

// Applies fn to [0, n) in blocks: on this thread, or over the team when n is large.
typedef void (*ElemFn)(float *out, const float *a, const float *x, long n);
static void elementwise(ElemFn fn, float *out, const float *a, const float *x, long n) {
    if (use_threads(n, ELEM_PAR_MIN)) {
        long n_blocks = (n + ELEM_BLOCK - 1) / ELEM_BLOCK;
        #pragma omp parallel for schedule(static)
        for (long b = 0; b < n_blocks; b++) {
            long lo = b * ELEM_BLOCK, len = n - lo < ELEM_BLOCK ? n - lo : ELEM_BLOCK;
            fn(out + lo, a ? a + lo : NULL, x + lo, len);
        }
    } else {
        fn(out, a, x, n);
    }
}

static void silu_fwd(float *out, const float *unused, const float *x, long n) {
    (void)unused;
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f v = v8_load(x + i);
        v8_store(out + i, v8_mul(v, v8_sigmoid(v)));
    }
    if (i < n) {
        v8f v = v8_load_partial(x + i, (int)(n - i), 0.0f);
        v8_store_partial(out + i, v8_mul(v, v8_sigmoid(v)), (int)(n - i));
    }
}

// d/dx x s(x) = s (1 + x (1 - s))
static inline v8f silu_grad(v8f x) {
    v8f s = v8_sigmoid(x), one = v8_set1(1.0f);
    return v8_mul(s, v8_add(one, v8_mul(x, v8_sub(one, s))));
}

static void silu_bwd(float *dx, const float *dout, const float *x, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8)
        v8_store(dx + i, v8_add(v8_load(dx + i), v8_mul(v8_load(dout + i), silu_grad(v8_load(x + i)))));
    if (i < n) {
        int r = (int)(n - i);
        v8f g = v8_mul(v8_load_partial(dout + i, r, 0.0f), silu_grad(v8_load_partial(x + i, r, 0.0f)));
        v8_store_partial(dx + i, v8_add(v8_load_partial(dx + i, r, 0.0f), g), r);
    }
}

// h = silu(gate) * up over [0, n): `a` is up, x is gate
static void swiglu_fwd(float *h, const float *up, const float *gate, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f g = v8_load(gate + i);
        v8_store(h + i, v8_mul(v8_mul(g, v8_sigmoid(g)), v8_load(up + i)));
    }
    if (i < n) {
        int r = (int)(n - i);
        v8f g = v8_load_partial(gate + i, r, 0.0f);
        v8_store_partial(h + i, v8_mul(v8_mul(g, v8_sigmoid(g)), v8_load_partial(up + i, r, 0.0f)), r);
    }
}

void swiglu_forward(float *h, const float *gate, const float *up, long n) { elementwise(swiglu_fwd, h, up, gate, n); }

// one block of the backward: dgate, dup from dh, gate, up
static inline void swiglu_bwd8(float *dgate, float *dup, v8f d, v8f g, v8f u, int r) {
    v8f one = v8_set1(1.0f), s = v8_sigmoid(g);
    v8f dg = v8_mul(v8_mul(v8_mul(d, u), s), v8_add(one, v8_mul(g, v8_sub(one, s)))), du = v8_mul(v8_mul(d, g), s);
    if (r == 8) {
        v8_store(dup, du);
        v8_store(dgate, dg);
    } else {
        v8_store_partial(dup, du, r);
        v8_store_partial(dgate, dg, r);
    }
}

// one block of the backward: dgate, dup from dh, gate, up
static void swiglu_bwd_block(float *dgate, float *dup, const float *dh, const float *gate, const float *up, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8)
        swiglu_bwd8(dgate + i, dup + i, v8_load(dh + i), v8_load(gate + i), v8_load(up + i), 8);
    if (i < n) {
        int r = (int)(n - i);
        swiglu_bwd8(dgate + i, dup + i, v8_load_partial(dh + i, r, 0.0f), v8_load_partial(gate + i, r, 0.0f),
                    v8_load_partial(up + i, r, 0.0f), r);
    }
}

void swiglu_backward(float *dgate, float *dup, const float *dh, const float *gate, const float *up, long n) {
    if (use_threads(n, ELEM_PAR_MIN)) {
        long n_blocks = (n + ELEM_BLOCK - 1) / ELEM_BLOCK;
        #pragma omp parallel for schedule(static)
        for (long b = 0; b < n_blocks; b++) {
            long lo = b * ELEM_BLOCK, len = n - lo < ELEM_BLOCK ? n - lo : ELEM_BLOCK;
            swiglu_bwd_block(dgate + lo, dup + lo, dh + lo, gate + lo, up + lo, len);
        }
    } else {
        swiglu_bwd_block(dgate, dup, dh, gate, up, n);
    }
}

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
#define GELU_SCALE 0.7978845608028654f
#define GELU_CUBE 0.044715f

static void gelu_fwd(float *out, const float *unused, const float *x, long n) {
    (void)unused;
    for (long i = 0; i < n; i++) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + tanhf(GELU_SCALE * (v + GELU_CUBE * v * v * v)));
    }
}

// with u = s (x + c x^3), t = tanh u:  d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 c x^2)
static void gelu_bwd(float *dx, const float *dout, const float *x, long n) {
    for (long i = 0; i < n; i++) {
        float v = x[i];
        float t = tanhf(GELU_SCALE * (v + GELU_CUBE * v * v * v));
        float grad = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * GELU_SCALE * (1.0f + 3.0f * GELU_CUBE * v * v);
        dx[i] += dout[i] * grad;
    }
}

void silu_forward(float *out, const float *x, long n) { elementwise(silu_fwd, out, NULL, x, n); }
void silu_backward(float *dx, const float *dout, const float *x, long n) { elementwise(silu_bwd, dx, dout, x, n); }
void gelu_forward(float *out, const float *x, long n) { elementwise(gelu_fwd, out, NULL, x, n); }
void gelu_backward(float *dx, const float *dout, const float *x, long n) { elementwise(gelu_bwd, dx, dout, x, n); }
