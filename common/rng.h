// rng.h: a small seeded random number generator (xorshift64*), passed by pointer, so every result
// depends only on the seed and never on thread count or call timing.
#pragma once
#include <stdint.h>

typedef struct { uint64_t s; } Rng;

void rng_seed(Rng *r, uint64_t seed);          // any seed, including 0, gives a valid state
uint64_t rng_u64(Rng *r);
uint32_t rng_below(Rng *r, uint32_t n);        // uniform integer in [0, n)
float rng_uniform(Rng *r);                     // uniform in [0, 1)
float rng_normal(Rng *r);                      // standard normal (Box-Muller)
void rng_fill_normal(Rng *r, float *x, long n, float std);
