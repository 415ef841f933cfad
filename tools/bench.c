// bench.c: how fast the project's own kernels are, next to a reference implementation.
//
//   ./bench [--quick]
//
// Each section is one function that prints one table; add a section by writing bench_<name>() and
// listing it in SECTIONS. Times are the median of several repetitions; each repetition runs the
// operation enough times to last a few milliseconds.
// The chapters' headers come before cblas.h: OpenBLAS pulls in <complex.h>, whose macro I would break
// dsa.h's parameter named I.
#include "03_mha/mha.h"
#include "05_mla/mla.h"
#include "07_dsa/dsa.h"
#include "09_gdn/gdn.h"
#include "10_hybrids/decay.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "cli.h"
#include "geometry.h"
#include "kvquant.h"
#include "mathx.h"
#include "mixer.h"
#include "registry.h"
#include "rng.h"
#include "simd.h"

typedef struct {
    int quick;
} BenchOpts;

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Both libraries get the same thread count.
static void set_threads(int n) {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

// ---- section: matmul vs OpenBLAS ----------------------------------------------------------------

typedef enum { OP_NT, OP_NN, OP_TN } MatmulOp;

typedef struct {
    const char *what;   // where the chapters use this shape
    MatmulOp op;
    int M, K, N;
} MatmulShape;

// The shapes the chapters run: tiny-model linear layers (tokens B*T, width C -> OC), attention
// scores and weighted values at T = 256 with head_dim 32, a weight gradient, one decode-step
// projection (a single token: matrix-vector), and one large square.
static const MatmulShape MATMUL_SHAPES[] = {
    {"qkv proj 512x64->192", OP_NT, 512, 64, 192},
    {"mlp up 512x128->512", OP_NT, 512, 128, 512},
    {"proj 2048x256->256", OP_NT, 2048, 256, 256},
    {"attn QK^T T=256 dh=32", OP_NT, 256, 32, 256},
    {"attn PV T=256 dh=32", OP_NN, 256, 256, 32},
    {"dW 256x2048->256", OP_TN, 256, 2048, 256},
    {"decode 1x1024->1024", OP_NT, 1, 1024, 1024},
    {"square 1024 (nt)", OP_NT, 1024, 1024, 1024},
    {"square 1024 (nn)", OP_NN, 1024, 1024, 1024},
};

static void run_ours(MatmulOp op, float *C, const float *A, const float *B, int M, int K, int N) {
    if (op == OP_NT) matmul_nt(C, A, B, M, K, N, 0);
    else if (op == OP_NN) matmul(C, A, B, M, K, N, 0);
    else matmul_tn(C, A, B, M, K, N, 0);
}

static void run_blas(MatmulOp op, float *C, const float *A, const float *B, int M, int K, int N) {
    // row-major; A (M,K) or (K,M) for tn; B (K,N) or (N,K) for nt
    enum CBLAS_TRANSPOSE ta = op == OP_TN ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = op == OP_NT ? CblasTrans : CblasNoTrans;
    int lda = op == OP_TN ? M : K, ldb = op == OP_NT ? K : N;
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
}

// Median seconds per call of one matmul, over reps repetitions of about min_sec each.
static double time_matmul(int blas, MatmulOp op, float *C, const float *A, const float *B, int M, int K, int N,
                          int reps, double min_sec) {
    // warm up, and find how many calls fill min_sec
    int calls = 1;
    for (;;) {
        double t0 = now_sec();
        for (int c = 0; c < calls; c++) {
            if (blas) run_blas(op, C, A, B, M, K, N);
            else run_ours(op, C, A, B, M, K, N);
        }
        double dt = now_sec() - t0;
        if (dt >= min_sec || calls >= (1 << 20)) break;
        calls *= 2;
    }
    double t[32];
    for (int r = 0; r < reps; r++) {
        double t0 = now_sec();
        for (int c = 0; c < calls; c++) {
            if (blas) run_blas(op, C, A, B, M, K, N);
            else run_ours(op, C, A, B, M, K, N);
        }
        t[r] = (now_sec() - t0) / calls;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    return t[reps / 2];
}

// Operands for one shape, the same every time (seeded by the shape's index).
typedef struct { float *A, *B, *C; } Operands;

static Operands operands_make(const MatmulShape *sh, int index) {
    Rng rng;
    rng_seed(&rng, 1000 + (uint64_t)index);
    long asz = (long)sh->M * sh->K, bsz = (long)sh->K * sh->N, csz = (long)sh->M * sh->N;
    Operands op = {mallocCheck(sizeof(float) * asz), mallocCheck(sizeof(float) * bsz), mallocCheck(sizeof(float) * csz)};
    rng_fill_normal(&rng, op.A, asz, 1.0f);
    rng_fill_normal(&rng, op.B, bsz, 1.0f);
    return op;
}

static void operands_free(Operands *op) {
    free(op->A);
    free(op->B);
    free(op->C);
}

enum { MAX_THREADS_BENCH = 2 };

static void bench_matmul(const BenchOpts *o) {
    int reps = o->quick ? 3 : 9;
    double min_sec = o->quick ? 0.005 : 0.03;
    enum { N_SHAPES = (int)(sizeof MATMUL_SHAPES / sizeof MATMUL_SHAPES[0]) };
    static const char *opname[] = {"nt", "nn", "tn"};
    double t_ours[N_SHAPES][MAX_THREADS_BENCH], t_blas[N_SHAPES][MAX_THREADS_BENCH], maxdiff[N_SHAPES];

    // the two must compute the same thing before their speeds mean anything
    set_threads(1);
    for (int s = 0; s < N_SHAPES; s++) {
        const MatmulShape *sh = &MATMUL_SHAPES[s];
        Operands op = operands_make(sh, s);
        long csz = (long)sh->M * sh->N;
        float *ref = mallocCheck(sizeof(float) * csz);
        run_ours(sh->op, op.C, op.A, op.B, sh->M, sh->K, sh->N);
        run_blas(sh->op, ref, op.A, op.B, sh->M, sh->K, sh->N);
        maxdiff[s] = 0.0;
        for (long i = 0; i < csz; i++) {
            double d = fabs((double)op.C[i] - ref[i]);
            if (d > maxdiff[s]) maxdiff[s] = d;
        }
        free(ref);
        operands_free(&op);
    }
    // All of ours first, then all of OpenBLAS: each library's idle threads spin for a while after a
    // call (OpenBLAS for ~0.1 s), and interleaving would charge that spinning to the other library.
    for (int lib = 0; lib < 2; lib++) {
        for (int s = 0; s < N_SHAPES; s++) {
            const MatmulShape *sh = &MATMUL_SHAPES[s];
            Operands op = operands_make(sh, s);
            for (int thr = 1; thr <= MAX_THREADS_BENCH; thr++) {
                set_threads(thr);
                double t = time_matmul(lib, sh->op, op.C, op.A, op.B, sh->M, sh->K, sh->N, reps, min_sec);
                if (lib) t_blas[s][thr - 1] = t;
                else t_ours[s][thr - 1] = t;
            }
            operands_free(&op);
        }
    }

    printf("matmul: our packed AVX2/FMA kernel vs OpenBLAS cblas_sgemm, GFLOP/s (median of %d)\n", reps);
    printf("%-26s %-3s %5s %5s %5s %3s %9s %9s %7s %10s\n", "shape", "op", "M", "K", "N", "thr", "ours", "openblas",
           "ratio", "max|diff|");
    double worst = 1e30;
    for (int s = 0; s < N_SHAPES; s++) {
        const MatmulShape *sh = &MATMUL_SHAPES[s];
        double flops = 2.0 * sh->M * sh->K * sh->N;
        for (int thr = 1; thr <= MAX_THREADS_BENCH; thr++) {
            double ratio = t_blas[s][thr - 1] / t_ours[s][thr - 1];
            if (ratio < worst) worst = ratio;
            printf("%-26s %-3s %5d %5d %5d %3d %9.1f %9.1f %6.2fx %10.2e\n", sh->what, opname[sh->op], sh->M, sh->K,
                   sh->N, thr, flops / t_ours[s][thr - 1] * 1e-9, flops / t_blas[s][thr - 1] * 1e-9, ratio, maxdiff[s]);
        }
    }
    printf("worst ratio ours/OpenBLAS: %.2fx (target >= 0.50x)\n\n", worst);
    fflush(stdout);
}

// ---- section: MLA decode, naive vs absorbed ------------------------------------------------------

// Contexts the decode sections measure: 1K, 4K, 16K, 32K, 64K (--quick: 1K, 4K).
static const int DECODE_CONTEXTS[] = {1024, 4096, 16384, 32768, 65536};

static int decode_n_contexts(const BenchOpts *o) {
    return o->quick ? 2 : (int)(sizeof DECODE_CONTEXTS / sizeof DECODE_CONTEXTS[0]);
}

// A registered mixer (chapters/registry.h), or an internal error.
static const MixerOps *mixer_by_name_bench(const char *name) {
    const MixerOps *ops = mixer_by_name(name);
    CHECK(ops != NULL, "mixer '%s' is not registered", name);
    return ops;
}

// One MLA layer's parameters (n floats) for g, initialised by the mixer itself.
static float *mixer_params_new(const MixerOps *ops, const ModelGeometry *g, uint64_t seed) {
    Mixer m = {.ops = ops, .g = g, .layer = 0};
    float *params = mallocCheck(sizeof(float) * mixer_n_params(ops, g, 0));
    Rng rng;
    rng_seed(&rng, seed);
    ops->init(&m, params, &rng);
    return params;
}

static void bench_mla_decode(const BenchOpts *o) {
    ModelGeometry g;
    mla_geometry_tiny(&g, 1, 1024, 16);   // d 1024, 16 heads: dn = dv = 64, dr = 32, dc = 512
    g.q_lora_rank = 0;
    g.max_seq_len = DECODE_CONTEXTS[decode_n_contexts(o) - 1] + 1;
    float *params = mixer_params_new(&mla_mixer, &g, 5);
    printf("mla_decode: one MLA layer (d 1024, 16 heads, kv_lora_rank %d, rope %d), ms per decoded token, "
           "1 thread\n", g.kv_lora_rank, g.qk_rope_head_dim);
    printf("%10s %12s %12s %8s\n", "context", "naive", "absorbed", "ratio");
    // The naive path rebuilds every head's keys and values from all T latents: it grows as T * H *
    // (dn+dv) * dc. Beyond 16K it is measured only if the last step predicts it stays under ~2 s.
    double naive_prev = 0.0;
    int ctx_prev = 0;
    for (int i = 0; i < decode_n_contexts(o); i++) {
        int T = DECODE_CONTEXTS[i];
        int reps = T >= 65536 ? 1 : (o->quick ? 2 : 3);
        double absorbed = 1e3 * mla_decode_seconds_per_token(&g, params, T, 1, reps, 1);
        double predicted = ctx_prev ? naive_prev * T / ctx_prev : 0.0;   // ms
        double naive = -1.0;
        if (T <= 16384 || predicted <= 2000.0) naive = 1e3 * mla_decode_seconds_per_token(&g, params, T, 0, reps, 1);
        if (naive >= 0.0) {
            printf("%10d %12.3f %12.3f %7.1fx\n", T, naive, absorbed, naive / absorbed);
            naive_prev = naive;
            ctx_prev = T;
        } else {
            printf("%10d %12s %12.3f %8s   (naive skipped: ~%.0f ms predicted)\n", T, "-", absorbed, "-", predicted);
        }
        fflush(stdout);
    }
    printf("\n");
    free(params);
}

// ---- section: the machine's read bandwidth ---------------------------------------------------------

// GB/s of a streaming read of a buffer far larger than the caches, on `threads` threads (each sums its
// own contiguous part): what a decode step that reads its whole cache once can hope for. Measured here,
// in the same process, so the decode rows below are fractions of THIS machine's memory speed.
static double read_bandwidth(int threads, int reps) {
    size_t n = (size_t)1 << 27;   // 512 MiB of floats
    float *buf = mallocCheck(sizeof(float) * n);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = 1.0f;   // touch every page (on the threads that will read it)
    double best = 1e30;
    volatile float sink = 0.0f;
    for (int r = 0; r < reps; r++) {
        double t0 = now_sec();
        float total = 0.0f;
        #pragma omp parallel num_threads(threads) reduction(+ : total)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            size_t lo = n / 32 * t / nt * 32, hi = n / 32 * (t + 1) / nt * 32;
            v8f a0 = v8_zero(), a1 = a0, a2 = a0, a3 = a0;
            for (size_t i = lo; i < hi; i += 32) {
                a0 = v8_add(a0, v8_load(buf + i));
                a1 = v8_add(a1, v8_load(buf + i + 8));
                a2 = v8_add(a2, v8_load(buf + i + 16));
                a3 = v8_add(a3, v8_load(buf + i + 24));
            }
            total += v8_sum(v8_add(v8_add(a0, a1), v8_add(a2, a3)));
        }
        sink += total;
        double dt = now_sec() - t0;
        if (dt < best) best = dt;
    }
    free(buf);
    return sizeof(float) * (double)n / best * 1e-9;
}

static double g_bandwidth[3];   // GB/s on 1 and 2 threads ([0] unused)

static void bench_bandwidth(const BenchOpts *o) {
    int reps = o->quick ? 2 : 5;
    for (int t = 1; t <= MAX_THREADS_BENCH; t++) g_bandwidth[t] = read_bandwidth(t, reps);
    printf("bandwidth: streaming read of 512 MiB in this process (best of %d): 1 thread %.1f GB/s, 2 threads %.1f GB/s\n\n",
           reps, g_bandwidth[1], g_bandwidth[2]);
    fflush(stdout);
}

// ---- section: decode time per token vs context, five mechanisms --------------------------------------

// Seconds per decode step of one mixer layer on `threads` threads: `warm` untimed steps (caches, page
// faults), then `reps` timed ones. With context > 0 (the gqa mixer only) the cache first acts as if
// `context` tokens had been decoded, filled with random keys and values (mha_cache_fill_random:
// prefilling 64K tokens would cost T^2/2 dot products); a fixed-state mixer costs the same at any context.
static double decode_seconds_per_token(const MixerOps *ops, const ModelGeometry *g, const float *params, int context,
                                       int warm, int reps, uint64_t seed, int threads) {
    CHECK(context == 0 || ops == &gqa_mixer, "only the gqa cache can be filled to a context");
    int d = g->d_model, steps = warm + reps;
    Mixer m = {.ops = ops, .g = g, .layer = 0};
    MixerCache *c = ops->cache_new(&m, context + steps + 1);
    float *x = mallocCheck(sizeof(float) * (size_t)steps * d), *out = mallocCheck(sizeof(float) * d);
    Rng rng;
    rng_seed(&rng, seed);
    rng_fill_normal(&rng, x, (long)steps * d, 1.0f);
    if (context > 0) mha_cache_fill_random(c, context, &rng);
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    for (int w = 0; w < warm; w++) ops->decode(&m, c, out, x + (size_t)w * d, params);
    double t1 = now_sec();
    for (int r = 0; r < reps; r++) ops->decode(&m, c, out, x + (size_t)(warm + r) * d, params);
    double result = (now_sec() - t1) / reps;
    omp_set_num_threads(saved);
    free(x);
    free(out);
    ops->cache_free(c);
    return result;
}

// A gqa layer with `context` tokens already cached.
static double gqa_decode_seconds_per_token(const ModelGeometry *g, const float *params, int context, int reps,
                                           int threads) {
    return decode_seconds_per_token(&gqa_mixer, g, params, context, 1, reps, 7, threads);
}

static void print_ms(double sec) {
    if (sec < 0.0) printf(" %12s", "-");
    else printf(" %12.3f", 1e3 * sec);
}

// Least-squares slope of log(t) against log(T) over the points with T >= from: t ~ T^p.
static double fit_exponent(const int *T, const double *t, int n, int from) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (T[i] < from || t[i] <= 0.0) continue;
        double x = log((double)T[i]), y = log(t[i]);
        sx += x; sy += y; sxx += x * x; sxy += x * y;
        m++;
    }
    return m >= 2 ? (m * sxy - sx * sy) / (m * sxx - sx * sx) : 0.0;
}

enum { MECH_FULL, MECH_SWA, MECH_MLA, MECH_DSA, MECH_DSA_ATTN, MECH_DSA_INDEX, MECH_GDN, N_MECH };

static void bench_attn_decode(const BenchOpts *o) {
    int n_ctx = decode_n_contexts(o), max_ctx = DECODE_CONTEXTS[n_ctx - 1];
    int reps = o->quick ? 2 : 4;

    ModelGeometry full, swa, mla, dsa, lin;
    geometry_init(&full, "mha", 1, 1024, 16, 16);   // head_dim 64
    full.max_seq_len = max_ctx + reps + 2;
    swa = full;
    swa.layer_kind[0] = LAYER_LOCAL;
    swa.sliding_window = 1024;
    mla_geometry_tiny(&mla, 1, 1024, 16);            // dc 512, dr 32
    mla.q_lora_rank = 0;
    mla.max_seq_len = max_ctx + 1;
    // DeepSeek-V3.2's per-head widths with fewer heads, as chapter 7's decode figure: 8 attention heads,
    // 4 indexer heads of 128, top-2048
    dsa_geometry_tiny(&dsa, 1, 1024, 8, 4, 128, 2048);
    dsa.dtype_bytes = 4;
    dsa.max_seq_len = max_ctx + 1;
    // a Gated DeltaNet layer of the same width (the hybrid section's): a fixed state, any context
    geometry_init(&lin, "gdn", 1, 1024, 16, 16);
    lin.layer_kind[0] = LAYER_LINEAR;
    lin.linear_kind = LINEAR_GDN;
    lin.linear_num_key_heads = 8;
    lin.linear_num_value_heads = 16;
    lin.linear_key_head_dim = lin.linear_value_head_dim = 64;
    lin.linear_conv_kernel_dim = 4;
    lin.state_dtype_bytes = 4;
    float *p_full = mixer_params_new(&gqa_mixer, &full, 11);
    float *p_swa = mixer_params_new(&gqa_mixer, &swa, 11);
    float *p_mla = mixer_params_new(&mla_mixer, &mla, 12);
    float *p_dsa = mixer_params_new(&dsa_mixer, &dsa, 13);
    const MixerOps *gdn = mixer_by_name_bench("gdn");
    float *p_lin = mixer_params_new(gdn, &lin, 14);
    double w_full = 4.0 * mixer_n_params(&gqa_mixer, &full, 0), w_mla = 4.0 * mixer_n_params(&mla_mixer, &mla, 0);
    double w_dsa = 4.0 * mixer_n_params(&dsa_mixer, &dsa, 0), w_lin = 4.0 * mixer_n_params(gdn, &lin, 0);
    double state_lin = 4.0 * (geometry_linear_state_elems(&lin) + geometry_linear_conv_elems(&lin));

    printf("attn_decode: one layer at d_model 1024, ms per decoded token (mean of %d steps), the bytes the step\n"
           "  must read (its cache + its weights, fp32) per second, and that as a fraction of the read bandwidth\n"
           "  measured above for the same thread count.\n", reps);
    printf("  full: MHA 16 heads x 64 (8 KiB per token); swa: the same with sliding_window 1024; mla: absorbed,\n"
           "  16 heads, dc 512 + dr 32 (2.1 KiB per token); dsa: 8 heads, dc 512 + dr 32, indexer 4 x 128 (0.5 KiB per\n"
           "  token), top-%d; gdn: Gated DeltaNet, 16 value heads of 64x64 state. Caches hold random contents:\n"
           "  a step's cost does not depend on them.\n", dsa.index_topk);
    static const char *names[N_MECH] = {"full", "swa", "mla", "dsa", "dsa attention", "dsa indexer", "gdn"};
    double t[N_MECH][MAX_THREADS_BENCH + 1][8];
    for (int thr = 1; thr <= MAX_THREADS_BENCH; thr++)
        for (int i = 0; i < n_ctx; i++) {
            int T = DECODE_CONTEXTS[i];
            t[MECH_FULL][thr][i] = gqa_decode_seconds_per_token(&full, p_full, T, reps, thr);
            t[MECH_SWA][thr][i] = gqa_decode_seconds_per_token(&swa, p_swa, T, reps, thr);
            t[MECH_MLA][thr][i] = mla_decode_seconds_per_token(&mla, p_mla, T, 1, reps, thr);
            double ix = 0.0;
            t[MECH_DSA][thr][i] = dsa_decode_seconds_per_token(&dsa, p_dsa, T, reps, thr, &ix);
            t[MECH_DSA_INDEX][thr][i] = ix;
            t[MECH_DSA_ATTN][thr][i] = t[MECH_DSA][thr][i] - ix;
            t[MECH_GDN][thr][i] = decode_seconds_per_token(gdn, &lin, p_lin, 0, 4, reps * 4, 9, thr);
        }
    for (int mech = 0; mech < N_MECH; mech++) {
        if (mech == MECH_DSA_ATTN || mech == MECH_DSA_INDEX) continue;
        printf("%-6s %9s %10s %9s %7s %10s %9s %7s %8s\n", names[mech], "context", "1 thr ms", "GB/s", "of bw",
               "2 thr ms", "GB/s", "of bw", "2 vs 1");
        for (int i = 0; i < n_ctx; i++) {
            int T = DECODE_CONTEXTS[i];
            double bytes;
            switch (mech) {
            case MECH_FULL: bytes = 8192.0 * T + w_full; break;
            case MECH_SWA: bytes = 8192.0 * (T < swa.sliding_window ? T : swa.sliding_window) + w_full; break;
            case MECH_MLA: bytes = 4.0 * (mla.kv_lora_rank + mla.qk_rope_head_dim) * T + w_mla; break;
            case MECH_DSA: {
                int k = T + 1 < dsa.index_topk ? T + 1 : dsa.index_topk;
                bytes = 4.0 * dsa.index_head_dim * T + 4.0 * (dsa.kv_lora_rank + dsa.qk_rope_head_dim) * k + w_dsa;
                break;
            }
            default: bytes = state_lin + w_lin; break;
            }
            printf("%6s %9d", "", T);
            for (int thr = 1; thr <= MAX_THREADS_BENCH; thr++) {
                double sec = t[mech][thr][i], gbs = bytes / sec * 1e-9;
                printf(" %10.3f %9.1f %6.2fx", 1e3 * sec, gbs, gbs / g_bandwidth[thr]);
            }
            printf(" %7.2fx\n", t[mech][1][i] / t[mech][2][i]);
        }
        fflush(stdout);
    }
    // the mla step does H * (2 dc + dr) multiply-adds per cached latent: it is bound by arithmetic, not
    // by memory (its row is 16 times narrower than full attention's for about as many multiply-adds)
    double flops = 2.0 * mla.n_heads * (2.0 * mla.kv_lora_rank + mla.qk_rope_head_dim) * DECODE_CONTEXTS[n_ctx - 1];
    printf("mla at %dK: %.2f GFLOP per step, %.1f GFLOP/s on 1 thread, %.1f on 2: arithmetic, not memory, bounds it\n",
           DECODE_CONTEXTS[n_ctx - 1] / 1024, flops * 1e-9, flops / t[MECH_MLA][1][n_ctx - 1] * 1e-9,
           flops / t[MECH_MLA][2][n_ctx - 1] * 1e-9);
    int from = n_ctx > 2 ? DECODE_CONTEXTS[1] : DECODE_CONTEXTS[0];
    printf("\ntime ~ context^p, fitted over %dK..%dK tokens (1 thread)    p     theory\n", from / 1024,
           DECODE_CONTEXTS[n_ctx - 1] / 1024);
    static const char *theory[N_MECH] = {"1 (reads every cached token)", "0 past W (reads the last W)",
                                         "1 (every latent, for every head)", "between: attention 0, indexer 1",
                                         "0 (top-k keys, however long the context)", "1 (scores every token)",
                                         "0 (a fixed state)"};
    for (int mech = 0; mech < N_MECH; mech++)
        printf("  %-20s %37.2f     %s\n", names[mech], fit_exponent(DECODE_CONTEXTS, t[mech][1], n_ctx, from),
               theory[mech]);
    printf("\n");
    free(p_full);
    free(p_swa);
    free(p_mla);
    free(p_dsa);
    free(p_lin);
}

// ---- section: the 3:1 hybrid's decode vs all-attention ------------------------------------------

static void bench_hybrid_decode(const BenchOpts *o) {
    int n_ctx = decode_n_contexts(o), max_ctx = DECODE_CONTEXTS[n_ctx - 1];
    int reps = o->quick ? 4 : 16;
    // Qwen3-Next's proportions at d_model 1024: attention GQA 8 query heads, 2 KV heads of 128 (its
    // 16 / 2 x 256, halved twice); DeltaNet 8 key heads, 16 value heads of 64, conv 4.
    ModelGeometry att, lin;
    geometry_init(&att, "attention", 1, 1024, 8, 2);
    att.head_dim = 128;
    att.dtype_bytes = 4;
    att.max_seq_len = max_ctx + reps + 1;
    lin = att;
    lin.layer_kind[0] = LAYER_LINEAR;
    lin.linear_kind = LINEAR_GDN;
    lin.linear_num_key_heads = 8;
    lin.linear_num_value_heads = 16;
    lin.linear_key_head_dim = lin.linear_value_head_dim = 64;
    lin.linear_conv_kernel_dim = 4;
    lin.state_dtype_bytes = 4;
    float *p_att = mixer_params_new(&gqa_mixer, &att, 21);
    float *p_lin = mixer_params_new(mixer_by_name_bench("gdn"), &lin, 22);
    double t_lin = decode_seconds_per_token(mixer_by_name_bench("gdn"), &lin, p_lin, 0, 8, reps * 4, 9, 1);
    printf("hybrid_decode: ms per decoded token of 4 layers' token mixers, d_model 1024, ONE thread\n"
           "  attention layer: GQA 8 heads, 2 KV heads of 128 (cache filled with random keys/values);\n"
           "  Gated DeltaNet layer: 8 key / 16 value heads of 64, conv 4: %.3f ms at any context (fixed state).\n"
           "  all-attention = 4 attention layers; hybrid = 3 DeltaNet + 1 attention (Qwen3-Next's 3:1)\n",
           1e3 * t_lin);
    printf("%10s %14s %14s %14s %8s\n", "context", "attn layer", "all-attention", "hybrid 3:1", "speedup");
    for (int i = 0; i < n_ctx; i++) {
        int T = DECODE_CONTEXTS[i];
        double t_att = gqa_decode_seconds_per_token(&att, p_att, T, reps, 1);
        double all = 4.0 * t_att, hyb = 3.0 * t_lin + t_att;
        printf("%10d", T);
        print_ms(t_att);
        printf("  ");
        print_ms(all);
        printf("  ");
        print_ms(hyb);
        printf(" %7.2fx\n", all / hyb);
        fflush(stdout);
    }
    printf("the hybrid pays a constant DeltaNet step and one growing attention layer: towards 4x at long context.\n\n");
    free(p_att);
    free(p_lin);
}

// ---- section: decode with a quantized KV cache (chapter 12) ---------------------------------------

// Seconds per decode step of a gqa layer whose cache holds `context` tokens, quantized by q (NULL: the
// plain fp32 cache), ONE thread: the median of reps steps, each timed alone (a busy machine delays some).
static double quant_decode_seconds(const ModelGeometry *g, const float *params, KvQuant *q, int context, int reps) {
    Mixer m = {.ops = &gqa_mixer, .g = g, .layer = 0};
    MixerCache *c = gqa_mixer.cache_new(&m, context + reps + 2);
    if (q) mha_cache_set_quant(c, q);
    int d = g->d_model;
    float *x = mallocCheck(sizeof(float) * (size_t)(reps + 1) * d), *out = mallocCheck(sizeof(float) * d);
    Rng rng;
    rng_seed(&rng, 31);
    rng_fill_normal(&rng, x, (long)(reps + 1) * d, 1.0f);
    mha_cache_fill_random(c, context, &rng);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    gqa_mixer.decode(&m, c, out, x, params);   // warm-up
    double t[16];
    CHECK(reps <= 16, "at most 16 repetitions");
    for (int r = 0; r < reps; r++) {
        double t0 = now_sec();
        gqa_mixer.decode(&m, c, out, x + (size_t)(r + 1) * d, params);
        t[r] = now_sec() - t0;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    double sec = t[reps / 2];
    omp_set_num_threads(saved);
    free(x);
    free(out);
    gqa_mixer.cache_free(c);
    return sec;
}

static void bench_kvquant_decode(const BenchOpts *o) {
    static const char *const SCHEMES[] = {"fp32", "bf16", "int8", "int4:32", "turbo4"};
    enum { NS = sizeof SCHEMES / sizeof SCHEMES[0] };
    int n_ctx = decode_n_contexts(o), max_ctx = DECODE_CONTEXTS[n_ctx - 1];
    int reps = o->quick ? 3 : 7;
    ModelGeometry g;
    geometry_init(&g, "gqa", 1, 1024, 16, 4);   // GQA 16 heads, 4 KV heads of 64: 2 KiB per token in fp32
    g.max_seq_len = max_ctx + reps + 2;
    float *params = mixer_params_new(&gqa_mixer, &g, 41);
    KvQuant *q[NS];
    for (int i = 0; i < NS; i++) {
        KvqScheme s = kvq_scheme(SCHEMES[i]);
        q[i] = kvq_new(&s, 1);
    }
    printf("kvquant_decode: one GQA layer (d_model 1024, 16 heads, 4 KV heads of 64), ms per decoded token (median\n"
           "  of %d steps), ONE thread: the plain fp32 cache against caches that keep codes (common/kvquant) and\n"
           "  decode the held rows into fp32 before the attention core reads them; in brackets: bytes per token kept.\n",
           reps);
    printf("%10s %10s", "context", "plain");
    for (int i = 0; i < NS; i++) {
        char h[40];
        KvqScheme s = kvq_scheme(SCHEMES[i]);
        int w[4] = {64, 64, 64, 64};
        snprintf(h, sizeof h, "%s [%.0f B]", SCHEMES[i], kvq_stream_bytes_for(&s, w, 4, KVQ_KEY, 1, 4) +
                 kvq_stream_bytes_for(&s, w, 4, KVQ_VALUE, 1, 4));
        printf(" %16s", h);
    }
    printf("\n");
    for (int c = 0; c < n_ctx; c++) {
        int T = DECODE_CONTEXTS[c];
        double plain = quant_decode_seconds(&g, params, NULL, T, reps);
        printf("%10d %10.3f", T, 1e3 * plain);
        for (int i = 0; i < NS; i++) {
            // turbo's encoder turns every vector (a 64 x 64 product): filling 64K tokens costs seconds
            if (T > 16384 && !strncmp(SCHEMES[i], "turbo", 5)) {
                printf(" %16s", "-");
                continue;
            }
            double t = quant_decode_seconds(&g, params, q[i], T, reps);
            printf(" %9.3f %5.2fx", 1e3 * t, t / plain);
        }
        printf("\n");
        fflush(stdout);
    }
    printf("each step decodes every held row (reads the codes, writes fp32) before the core reads them again: fewer\n"
           "bytes at rest, more traffic per step. Scoring straight from the codes (KIVI's and TurboQuant's fused\n"
           "kernels) is what turns the smaller cache into speed; this one does not.\n\n");
    for (int i = 0; i < NS; i++) kvq_free(q[i]);
    free(params);
}

// ---- sections: linear-attention prefill, recurrent vs chunked (Gated DeltaNet; Lightning, Mamba-2) ----

// Tokens per second of one core's recurrent form and its chunked form at C = 16 and 64, over B sequences
// of H heads of 64, T up to 4096, ONE thread (the cores never thread; this keeps matmul on one thread too).
static void prefill_table(const BenchOpts *o, const char *what, double (*seconds)(int, int, int, int, int, int),
                          const char *note) {
    static const int TS[] = {256, 1024, 4096};
    int n = o->quick ? 2 : 3, B = 4, H = 8, dh = 64, reps = o->quick ? 2 : 3;
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    printf("%s over %d sequences, %d heads of %d, ONE thread, tokens per second (median of %d)\n", what, B, H, dh,
           reps);
    printf("%10s %14s %14s %14s %10s\n", "T", "recurrent", "chunked 16", "chunked 64", "best/rec");
    for (int i = 0; i < n; i++) {
        int T = TS[i];
        double tr = seconds(B, T, H, dh, 0, reps);
        double t16 = seconds(B, T, H, dh, 16, reps);
        double t64 = seconds(B, T, H, dh, 64, reps);
        double best = t16 < t64 ? t16 : t64;
        printf("%10d %14.0f %14.0f %14.0f %9.2fx\n", T, B * T / tr, B * T / t16, B * T / t64, tr / best);
        fflush(stdout);
    }
    omp_set_num_threads(threads);
    printf("%s\n\n", note);
}

static void bench_gdn_prefill(const BenchOpts *o) {
    prefill_table(o, "gdn_prefill: the delta-rule core (Gated DeltaNet, KDA)", gdn_prefill_seconds,
                  "the chunked form turns token-by-token rank-1 updates into small matrix products (packed matmul);\n"
                  "it does more multiply-adds (C x C blocks, the UT transform), paid back by the products' speed.");
}

static void bench_decay_prefill(const BenchOpts *o) {
    prefill_table(o, "decay_prefill: the scalar-decay core (Lightning, Mamba-2)", decay_prefill_seconds,
                  "without the delta rule the recurrence is already cheap (one pass over S per token); the chunked\n"
                  "form still wins by moving the work into matrix products, as it does on GPUs with tensor cores.");
}

// ---- sections -----------------------------------------------------------------------------------

typedef struct {
    const char *name;
    void (*run)(const BenchOpts *);
} BenchSection;

static const BenchSection SECTIONS[] = {
    {"bandwidth", bench_bandwidth},
    {"matmul", bench_matmul},
    {"mla_decode", bench_mla_decode},
    {"attn_decode", bench_attn_decode},
    {"hybrid_decode", bench_hybrid_decode},
    {"kvquant_decode", bench_kvquant_decode},
    {"gdn_prefill", bench_gdn_prefill},
    {"decay_prefill", bench_decay_prefill},
};

int main(int argc, char **argv) {
    BenchOpts o = {0};
    const CliOpt opts[] = {
        {"--quick", OPT_FLAG, &o.quick, NULL, "fewer and shorter repetitions (a smoke test, a few seconds)", 0, 0},
    };
    const CliSpec spec = {
        .prog = "bench",
        .summary = "Times the project's kernels against reference implementations (matmul vs OpenBLAS).",
        .usage_extra = "Results depend on the machine and its load; run on an idle machine for real numbers.",
        .opts = opts,
        .n_opts = (int)(sizeof opts / sizeof opts[0]),
    };
    CliArgs args;
    cli_parse(&spec, &args, argc, argv);
    double load[1] = {0.0};
    int have_load = getloadavg(load, 1) == 1;
    printf("bench: OpenMP max threads %d, load average %.2f; OpenBLAS %s\n", omp_get_max_threads(),
           have_load ? load[0] : 0.0, openblas_get_config());
    // Two threads on a busy 2-core machine wait for each other at every join: the numbers then say
    // more about the scheduler than about the kernels.
    if (have_load && load[0] > 0.5)
        printf("warning: the machine is busy (load %.2f); the 2-thread rows will be unreliable\n", load[0]);
    printf("\n");
    for (size_t i = 0; i < sizeof SECTIONS / sizeof SECTIONS[0]; i++) SECTIONS[i].run(&o);
    free(args.pos);
    return 0;
}
