// decay.c: scalar-decay linear attention, one head at a time: recurrent step, recurrent and chunked
// forward, the chunked backward, and the implicit mixing matrix. See decay.h for the equations.
// Nothing here threads: the mixers split (batch, head) across threads and call in. The chunked forward
// allocates its gathered-rows scratch once per call (one head of one sequence), never per chunk.
#include "10_hybrids/decay.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "09_gdn/gdn.h"
#include "check.h"
#include "mathx.h"
#include "rng.h"

void decay_step(float *o, float *S, const float *q, const float *k, const float *v, float g, int dk, int dv) {
    float a = expf(g);
    for (int c = 0; c < dv; c++) o[c] = 0.0f;
    for (int r = 0; r < dk; r++) {
        float *Sr = S + (size_t)r * dv;
        for (int c = 0; c < dv; c++) Sr[c] = a * Sr[c] + k[r] * v[c];   // S = a S + k v^T
        for (int c = 0; c < dv; c++) o[c] += q[r] * Sr[c];               // o = S^T q
    }
}

void decay_recurrent_forward(float *o, size_t ldo, float *S, const float *q, const float *k, size_t ldqk,
                             const float *v, size_t ldv, const float *g, size_t ldg, int T, int dk, int dv) {
    for (int t = 0; t < T; t++)
        decay_step(o + t * ldo, S, q + t * ldqk, k + t * ldqk, v + t * ldv, g[t * ldg], dk, dv);
}

// The decays inside one chunk of n tokens t0 .. t0+n-1, with Gamma_i = g_t0 + ... + g_{t0+i}:
//   Dm (n, n) lower triangle: Dm[i][j] = exp(Gamma_i - Gamma_j), j <= i (Dm[n-1][j] carries token j's
//             contribution to the state out of the chunk)
//   eg (n):   eg[i] = exp(Gamma_i), how much of the state entering the chunk is left at token i
// built as running products of the per-token factors exp(g): n exponentials, not n^2/2, and every
// entry <= 1 (no difference of large cumulative sums). Row i is row i-1 times exp(g_i): independent
// multiplies across the row, not one long dependent chain.
static void chunk_decays(float *Dm, float *eg, const float *g, size_t ldg, int t0, int n) {
    for (int i = 0; i < n; i++) {
        float e = expf(g[(size_t)(t0 + i) * ldg]);
        float *row = Dm + (size_t)i * DECAY_MAX_CHUNK;
        const float *prev = row - DECAY_MAX_CHUNK;
        for (int j = 0; j < i; j++) row[j] = prev[j] * e;
        row[i] = 1.0f;
        eg[i] = i ? eg[i - 1] * e : e;
    }
}

// Per chunk of n tokens the forward is four small matrix products (mathx's packed matmul) on the
// chunk's rows gathered into contiguous scratch:
//   P (n, n)   = Q K^T * Dm, lower triangle      the intra-chunk scores, decayed
//   O (n, dv)  = (Q * eg) S + P V                inter (the carried state) + intra
//   S (dk, dv) = eg_last S + (K * DL)^T V        the state carried to the next chunk
// P is stored by row blocks of TRI_BLOCK rows, each only as wide as its diagonal block reaches (block
// I: rows [I b, I b + b) x columns [0, (I+1) b), contiguous), so both products with it skip the zero
// blocks above the diagonal (3/8 of their work at n = 64). Chapter 9's delta rule does the same.
enum { TRI_BLOCK = 16 };

void decay_chunked_forward(float *o, size_t ldo, float *S, const float *q, const float *k, size_t ldqk,
                           const float *v, size_t ldv, const float *g, size_t ldg, int T, int dk, int dv, int C) {
    CHECK(C > 0 && C <= DECAY_MAX_CHUNK, "decay: chunk %d outside 1..%d", C, DECAY_MAX_CHUNK);
    float Dm[DECAY_MAX_CHUNK * DECAY_MAX_CHUNK], eg[DECAY_MAX_CHUNK], P[DECAY_MAX_CHUNK * DECAY_MAX_CHUNK];
    // scratch for the whole call (one head of one sequence), not per chunk
    float *Qc = mallocCheck(sizeof(float) * (size_t)C * (2 * (size_t)dk + 2 * (size_t)dv));
    float *Kc = Qc + (size_t)C * dk;   // (C, dk) the chunk's keys, then (dk, C) the decayed keys transposed
    float *Vc = Kc + (size_t)C * dk;   // (C, dv)
    float *Oc = Vc + (size_t)C * dv;   // (C, dv)
    for (int t0 = 0; t0 < T; t0 += C) {
        int n = T - t0 < C ? T - t0 : C;
        for (int i = 0; i < n; i++) {
            size_t t = (size_t)(t0 + i);
            memcpy(Qc + (size_t)i * dk, q + t * ldqk, sizeof(float) * dk);
            memcpy(Kc + (size_t)i * dk, k + t * ldqk, sizeof(float) * dk);
            memcpy(Vc + (size_t)i * dv, v + t * ldv, sizeof(float) * dv);
        }
        chunk_decays(Dm, eg, g, ldg, t0, n);
        // intra scores, row block by row block: P_I (rows, w) = (Q_I K[0:w]^T) * Dm, 0 above the diagonal
        for (int r0 = 0, I = 0; r0 < n; r0 += TRI_BLOCK, I++) {
            int rows = n - r0 < TRI_BLOCK ? n - r0 : TRI_BLOCK, w = r0 + rows;
            float *PI = P + (size_t)TRI_BLOCK * TRI_BLOCK * I * (I + 1) / 2;
            matmul_nt(PI, Qc + (size_t)r0 * dk, Kc, rows, dk, w, 0);
            for (int r = 0; r < rows; r++) {
                const float *Di = Dm + (size_t)(r0 + r) * DECAY_MAX_CHUNK;
                for (int j = 0; j < w; j++) PI[(size_t)r * w + j] = j <= r0 + r ? PI[(size_t)r * w + j] * Di[j] : 0.0f;
            }
        }
        // O (n, dv) = (Q * eg) S   (inter: the whole past before this chunk through the state)
        //           + P V          (intra)
        for (int i = 0; i < n; i++)
            for (int r = 0; r < dk; r++) Qc[(size_t)i * dk + r] *= eg[i];
        matmul(Oc, Qc, S, n, dk, dv, 0);
        for (int r0 = 0, I = 0; r0 < n; r0 += TRI_BLOCK, I++) {
            int rows = n - r0 < TRI_BLOCK ? n - r0 : TRI_BLOCK, w = r0 + rows;
            matmul(Oc + (size_t)r0 * dv, P + (size_t)TRI_BLOCK * TRI_BLOCK * I * (I + 1) / 2, Vc, rows, w, dv, 1);
        }
        for (int i = 0; i < n; i++) memcpy(o + (size_t)(t0 + i) * ldo, Oc + (size_t)i * dv, sizeof(float) * dv);
        // carry the state: S = exp(Gamma_last) S + (K * DL)^T V, with Kt (dk, n) the decayed keys transposed
        const float *DL = Dm + (size_t)(n - 1) * DECAY_MAX_CHUNK;
        float *Kt = Kc;
        for (int j = 0; j < n; j++)
            for (int r = 0; r < dk; r++) Kt[(size_t)r * n + j] = k[(size_t)(t0 + j) * ldqk + r] * DL[j];
        for (size_t x = 0; x < (size_t)dk * dv; x++) S[x] *= eg[n - 1];
        matmul(S, Kt, Vc, dk, n, dv, 1);
    }
    free(Qc);
}

size_t decay_backward_scratch_floats(int T, int dk, int dv, int C) {
    size_t n_chunks = (size_t)((T + C - 1) / C);
    return (n_chunks + 2) * (size_t)dk * dv + (size_t)dk + (size_t)dv;
}

void decay_chunked_backward(float *dq, float *dk_, float *dv_, float *dg, const float *do_, size_t ldo,
                            const float *q, const float *k, size_t ldqk, const float *v, size_t ldv,
                            const float *g, size_t ldg, int T, int dk, int dv, int C, float *scratch) {
    CHECK(C > 0 && C <= DECAY_MAX_CHUNK, "decay: chunk %d outside 1..%d", C, DECAY_MAX_CHUNK);
    int n_chunks = (T + C - 1) / C;
    size_t SS = (size_t)dk * dv;
    float *states = scratch;                  // (n_chunks, dk, dv): the state entering each chunk
    float *dS = states + n_chunks * SS;       // (dk, dv) dL/d(state leaving the chunk)
    float *dSp = dS + SS;                     // (dk, dv) dL/d(state entering the chunk)
    float *u = dSp + SS;                      // (dk)
    float *w = u + dk;                        // (dv)
    float Dm[DECAY_MAX_CHUNK * DECAY_MAX_CHUNK], eg[DECAY_MAX_CHUNK], dGam[DECAY_MAX_CHUNK];

    // 1. The states at chunk starts, rebuilt by the forward's carry (cheaper than saving them).
    memset(states, 0, SS * sizeof(float));
    for (int c = 0; c + 1 < n_chunks; c++) {
        int t0 = c * C, n = C;   // only full chunks are ever carried past
        float *S = states + (size_t)(c + 1) * SS;
        memcpy(S, states + (size_t)c * SS, SS * sizeof(float));
        chunk_decays(Dm, eg, g, ldg, t0, n);
        const float *DL = Dm + (size_t)(n - 1) * DECAY_MAX_CHUNK;
        for (int r = 0; r < dk; r++) {
            float *Sr = S + (size_t)r * dv;
            for (int cc = 0; cc < dv; cc++) Sr[cc] *= eg[n - 1];
            for (int j = 0; j < n; j++) {
                float wj = DL[j] * k[(size_t)(t0 + j) * ldqk + r];
                const float *vj = v + (size_t)(t0 + j) * ldv;
                for (int cc = 0; cc < dv; cc++) Sr[cc] += wj * vj[cc];
            }
        }
    }

    // 2. Chunks in reverse, carrying dS (the final state is not an output: dS starts at zero).
    memset(dS, 0, SS * sizeof(float));
    for (int c = n_chunks - 1; c >= 0; c--) {
        int t0 = c * C, n = T - t0 < C ? T - t0 : C;
        const float *S = states + (size_t)c * SS, *DL = Dm + (size_t)(n - 1) * DECAY_MAX_CHUNK;
        chunk_decays(Dm, eg, g, ldg, t0, n);
        for (int i = 0; i < n; i++) dGam[i] = 0.0f;

        // intra: o_i += sum_{j<=i} a_ij v_j,  a_ij = (q_i . k_j) exp(Gamma_i - Gamma_j)
        for (int i = 0; i < n; i++) {
            const float *qi = q + (size_t)(t0 + i) * ldqk, *doi = do_ + (size_t)(t0 + i) * ldo;
            float *dqi = dq + (size_t)(t0 + i) * ldqk;
            for (int j = 0; j <= i; j++) {
                const float *kj = k + (size_t)(t0 + j) * ldqk, *vj = v + (size_t)(t0 + j) * ldv;
                float *dkj = dk_ + (size_t)(t0 + j) * ldqk, *dvj = dv_ + (size_t)(t0 + j) * ldv;
                float D = Dm[(size_t)i * DECAY_MAX_CHUNK + j];
                float aij = dot_f32(qi, kj, dk) * D;
                float da = dot_f32(doi, vj, dv);           // dL/da_ij
                for (int cc = 0; cc < dv; cc++) dvj[cc] += aij * doi[cc];
                float dqk = da * D;                     // dL/d(q_i . k_j)
                for (int r = 0; r < dk; r++) {
                    dqi[r] += dqk * kj[r];
                    dkj[r] += dqk * qi[r];
                }
                dGam[i] += da * aij;                    // d a_ij / d Gamma_i = a_ij
                dGam[j] -= da * aij;                    // d a_ij / d Gamma_j = -a_ij
            }
        }

        // inter: o_i += exp(Gamma_i) S^T q_i, so dq_i += exp(Gamma_i) S do_i and dS_prev += exp(Gamma_i) q_i do_i^T
        float eL = eg[n - 1];
        for (size_t x = 0; x < SS; x++) dSp[x] = eL * dS[x];   // S_next = exp(Gamma_last) S + ...
        float sdot = 0.0f;                                     // <S, dS_next>
        for (size_t x = 0; x < SS; x++) sdot += S[x] * dS[x];
        dGam[n - 1] += eL * sdot;
        for (int i = 0; i < n; i++) {
            const float *qi = q + (size_t)(t0 + i) * ldqk, *doi = do_ + (size_t)(t0 + i) * ldo;
            float *dqi = dq + (size_t)(t0 + i) * ldqk;
            for (int r = 0; r < dk; r++) u[r] = dot_f32(S + (size_t)r * dv, doi, dv);   // u = S do_i
            for (int r = 0; r < dk; r++) dqi[r] += eg[i] * u[r];
            dGam[i] += eg[i] * dot_f32(qi, u, dk);
            for (int r = 0; r < dk; r++) {
                float wr = eg[i] * qi[r];
                float *dr = dSp + (size_t)r * dv;
                for (int cc = 0; cc < dv; cc++) dr[cc] += wr * doi[cc];
            }
        }

        // state carry: S_next += sum_j exp(Gamma_last - Gamma_j) k_j v_j^T
        for (int j = 0; j < n; j++) {
            const float *kj = k + (size_t)(t0 + j) * ldqk, *vj = v + (size_t)(t0 + j) * ldv;
            float *dkj = dk_ + (size_t)(t0 + j) * ldqk, *dvj = dv_ + (size_t)(t0 + j) * ldv;
            float ej = DL[j];
            for (int r = 0; r < dk; r++) u[r] = dot_f32(dS + (size_t)r * dv, vj, dv);   // u = dS v_j
            for (int cc = 0; cc < dv; cc++) w[cc] = 0.0f;                            // w = dS^T k_j
            for (int r = 0; r < dk; r++) {
                const float *dr = dS + (size_t)r * dv;
                for (int cc = 0; cc < dv; cc++) w[cc] += kj[r] * dr[cc];
            }
            for (int r = 0; r < dk; r++) dkj[r] += ej * u[r];
            for (int cc = 0; cc < dv; cc++) dvj[cc] += ej * w[cc];
            float kdv = ej * dot_f32(kj, u, dk);   // exp(...) k_j^T dS v_j
            dGam[n - 1] += kdv;
            dGam[j] -= kdv;
        }

        // Gamma_i = g_t0 + ... + g_{t0+i}: dg is the reverse cumulative sum of dGamma
        if (dg) {
            float acc = 0.0f;
            for (int i = n - 1; i >= 0; i--) {
                acc += dGam[i];
                dg[(size_t)(t0 + i) * ldg] += acc;
            }
        }
        memcpy(dS, dSp, SS * sizeof(float));
    }
}

void decay_matrix(float *D, const float *g, size_t ldg, int T) {
    for (int t = 0; t < T; t++) {
        float *row = D + (size_t)t * T, acc = 0.0f;   // acc = g_{s+1} + ... + g_t
        for (int s = t; s >= 0; s--) {
            row[s] = expf(acc);
            acc += g[(size_t)s * ldg];
        }
        for (int s = t + 1; s < T; s++) row[s] = 0.0f;
    }
}

void decay_mixing_matrix(float *A, const float *q, const float *k, size_t ldqk, const float *g, size_t ldg,
                         int T, int dk) {
    decay_matrix(A, g, ldg, T);
    for (int t = 0; t < T; t++)
        for (int s = 0; s <= t; s++) A[(size_t)t * T + s] *= dot_f32(q + (size_t)t * ldqk, k + (size_t)s * ldqk, dk);
}

// ---- benchmark pair -------------------------------------------------------------------------------

double decay_prefill_seconds(int B, int T, int H, int dh, int C, int reps) {
    CHECK(B > 0 && T > 0 && H > 0 && dh > 0 && C >= 0 && C <= DECAY_MAX_CHUNK && reps > 0,
          "decay_prefill_seconds: bad sizes");
    size_t N = (size_t)B * T, E = (size_t)H * dh, nv = N * E;   // rows (b, t) of H heads
    float *q = mallocCheck(sizeof(float) * 4 * nv), *k = q + nv, *v = k + nv, *o = v + nv;
    float *g = mallocCheck(sizeof(float) * N * H), *S = mallocCheck(sizeof(float) * (size_t)dh * dh);
    Rng rng;
    rng_seed(&rng, 10);
    linear_bench_inputs(q, NULL, g, N * H, dh, &rng);
    double *sec = mallocCheck(sizeof(double) * (size_t)reps);
    for (int rep = -1; rep < reps; rep++) {   // rep -1 warms up
        double t0 = linear_bench_now();
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                size_t off = (size_t)b * T * E + (size_t)h * dh;
                const float *gh = g + (size_t)b * T * H + h;
                memset(S, 0, sizeof(float) * (size_t)dh * dh);
                if (C == 0) decay_recurrent_forward(o + off, E, S, q + off, k + off, E, v + off, E, gh, H, T, dh, dh);
                else decay_chunked_forward(o + off, E, S, q + off, k + off, E, v + off, E, gh, H, T, dh, dh, C);
            }
        if (rep >= 0) sec[rep] = linear_bench_now() - t0;
    }
    double med = linear_bench_median(sec, reps);
    free(sec);
    free(q);
    free(g);
    free(S);
    return med;
}
