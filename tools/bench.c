// bench.c: how fast the project's own kernels are, next to a reference implementation.
//
//   ./bench [--quick]
//
// Each section is one function that prints one table; add a section by writing bench_<name>() and
// listing it in SECTIONS. Times are the median of several repetitions; each repetition runs the
// operation enough times to last a few milliseconds.
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "cli.h"
#include "mathx.h"
#include "rng.h"

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

// ---- sections -----------------------------------------------------------------------------------

typedef struct {
    const char *name;
    void (*run)(const BenchOpts *);
} BenchSection;

static const BenchSection SECTIONS[] = {
    {"matmul", bench_matmul},
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
