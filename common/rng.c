// rng.c: xorshift64* seeded through splitmix64, so nearby seeds give unrelated streams.
#include "rng.h"
#include <math.h>

void rng_seed(Rng *r, uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    r->s = z ? z : 0x2545F4914F6CDD1Dull;
}

uint64_t rng_u64(Rng *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

uint32_t rng_below(Rng *r, uint32_t n) { return (uint32_t)((rng_u64(r) >> 32) * (uint64_t)n >> 32); }

float rng_uniform(Rng *r) { return (float)(rng_u64(r) >> 40) / 16777216.0f; }

float rng_normal(Rng *r) {
    // Box-Muller; u1 in (0,1] so the log is finite
    double u1 = ((double)(rng_u64(r) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(rng_u64(r) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void rng_fill_normal(Rng *r, float *x, long n, float std) {
    for (long i = 0; i < n; i++) x[i] = rng_normal(r) * std;
}
