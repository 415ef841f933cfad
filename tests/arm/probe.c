// probe.c: the kernels on their own, for `make arm-check`. Runs the attention core (forward and
// backward, GQA and a window), the matmul and the SIMD exponential on fixed random inputs and prints a
// hash of every result. The same program built natively (AVX2 or plain C) and for 64-bit ARM (run
// under qemu) must print the same hashes: the kernels compute the same bits on every machine.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "attention.h"
#include "mathx.h"
#include "rng.h"
#include "simd.h"

static uint64_t fnv(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

int main(void) {
    int B = 2, T = 600, H = 4, G = 2, dk = 24, dv = 16;   // T > ATTN_BLOCK: two blocks per late query
    Rng r;
    rng_seed(&r, 3);
    size_t nq = (size_t)B * T * H * dk, nk = (size_t)B * T * G * dk, nv = (size_t)B * T * G * dv;
    float *q = malloc(4 * nq), *k = malloc(4 * nk), *v = malloc(4 * nv), *o = malloc(4 * (size_t)B * T * H * dv);
    float *P = malloc(4 * (size_t)B * H * T * T), *dq = calloc(nq, 4), *dkk = calloc(nk, 4), *dvv = calloc(nv, 4);
    rng_fill_normal(&r, q, (long)nq, 1.0f);
    rng_fill_normal(&r, k, (long)nk, 1.0f);
    rng_fill_normal(&r, v, (long)nv, 1.0f);
    AttnHeads h = {H, G, dk, dv, 0.2f, NULL};
    for (int W = 0; W <= 100; W += 100) {
        AttnBatch a = {.B = B, .T = T, .window = W, .q = q, .q_stride = (size_t)H * dk, .k = k, .k_stride = (size_t)G * dk,
                       .k_head = (size_t)dk, .v = v, .v_stride = (size_t)G * dv, .v_head = (size_t)dv};
        attn_batch_forward(o, (size_t)H * dv, P, NULL, &a, &h);
        attn_batch_backward(dq, dkk, dvv, NULL, o, (size_t)H * dv, P, NULL, &a, &h);
        printf("attention W %3d: o %016llx P %016llx dq %016llx dk %016llx dv %016llx\n", W,
               (unsigned long long)fnv(o, 4 * (size_t)B * T * H * dv), (unsigned long long)fnv(P, 4 * (size_t)B * H * T * T),
               (unsigned long long)fnv(dq, 4 * nq), (unsigned long long)fnv(dkk, 4 * nk), (unsigned long long)fnv(dvv, 4 * nv));
    }
    float *C = malloc(4 * 300 * 200);
    matmul_nt(C, q, k, 300, 24, 200, 0);
    printf("matmul: %016llx\n", (unsigned long long)fnv(C, 4 * 300 * 200));
    float e[1024];
    for (int i = 0; i < 1024; i++) e[i] = exp_v8_scalar(-90.0f + 0.17f * (float)i);
    printf("exp: %016llx\n", (unsigned long long)fnv(e, sizeof e));
    free(q); free(k); free(v); free(o); free(P); free(dq); free(dkk); free(dvv); free(C);
    return 0;
}
