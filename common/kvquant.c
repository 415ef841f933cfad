// kvquant.c: the cache quantizers of kvquant.h: number formats, per-vector and per-group integer codes,
// KIVI's per-channel key chunks, and TurboQuant's rotation + Lloyd-Max codebook (+ QJL sketch).
//
// One slot per held token: the codes of every vector of the row, each vector's own scales and zero
// points in front of its codes. KIVI's key chunks keep their per-channel zero and scale apart (one pair
// per channel per chunk of G tokens), and the tokens of the chunk being filled stay in full precision.
#include "kvquant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"

// ---- schemes --------------------------------------------------------------------------------------

static void scheme_name(KvqScheme *s) {
    static const char *fixed[] = {[KVQ_FP32] = "fp32", [KVQ_BF16] = "bf16", [KVQ_FP16] = "fp16", [KVQ_FP8] = "fp8",
                                  [KVQ_INT8] = "int8"};
    if (s->family <= KVQ_INT8) snprintf(s->name, sizeof s->name, "%s", fixed[s->family]);
    else if (s->family == KVQ_INT) snprintf(s->name, sizeof s->name, "int%d:%d", s->bits, s->group);
    else if (s->family == KVQ_KIVI) snprintf(s->name, sizeof s->name, "kivi%d:%d", s->bits, s->group);
    else snprintf(s->name, sizeof s->name, "turbo%d%s", s->bits, s->qjl ? "+qjl" : "");
}

int kvq_parse(KvqScheme *s, const char *text, char *err, size_t cap) {
    memset(s, 0, sizeof *s);
    static const struct { const char *name; KvqFamily family; int bits; } fixed[] = {
        {"fp32", KVQ_FP32, 32}, {"bf16", KVQ_BF16, 16}, {"fp16", KVQ_FP16, 16}, {"fp8", KVQ_FP8, 8},
        {"int8", KVQ_INT8, 8},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        size_t n = strlen(fixed[i].name);
        if (strncmp(text, fixed[i].name, n) != 0) continue;
        if (text[n] == ':') {
            snprintf(err, cap, "'%s': %s takes no group size (only int2..4 and kivi2..4 do)", text, fixed[i].name);
            return -1;
        }
        if (text[n] != '\0') break;
        s->family = fixed[i].family;
        s->bits = fixed[i].bits;
        scheme_name(s);
        return 0;
    }
    const char *rest = NULL;
    if (strncmp(text, "int", 3) == 0) s->family = KVQ_INT, rest = text + 3;
    else if (strncmp(text, "kivi", 4) == 0) s->family = KVQ_KIVI, rest = text + 4;
    else if (strncmp(text, "turbo", 5) == 0) s->family = KVQ_TURBO, rest = text + 5;
    if (!rest || rest[0] < '2' || rest[0] > '4') {
        snprintf(err, cap, "unknown scheme '%s' (expected %s)", text, KVQ_SCHEMES_HELP);
        return -1;
    }
    s->bits = rest[0] - '0';
    rest++;
    if (s->family == KVQ_TURBO) {
        if (strcmp(rest, "+qjl") == 0) s->qjl = 1;
        else if (rest[0] != '\0') {
            snprintf(err, cap, "unknown scheme '%s' (turbo takes only '+qjl' after its bits: turbo3, turbo3+qjl)", text);
            return -1;
        }
    } else {
        s->group = KVQ_DEFAULT_GROUP;
        if (rest[0] == ':') {
            char *end;
            long g = strtol(rest + 1, &end, 10);
            if (rest[1] < '0' || rest[1] > '9' || *end != '\0' || g < 1 || g > KVQ_MAX_GROUP) {
                snprintf(err, cap, "'%s': group size '%s' is not an integer in 1..%d", text, rest + 1, KVQ_MAX_GROUP);
                return -1;
            }
            s->group = (int)g;
        } else if (rest[0] != '\0') {
            snprintf(err, cap, "unknown scheme '%s' (expected %s)", text, KVQ_SCHEMES_HELP);
            return -1;
        }
    }
    scheme_name(s);
    return 0;
}

KvqScheme kvq_scheme(const char *text) {
    KvqScheme s;
    char err[256];
    CHECK(kvq_parse(&s, text, err, sizeof err) == 0, "kvq_scheme: %s", err);
    return s;
}

// ---- number formats ---------------------------------------------------------------------------------
// A binary float format with M mantissa bits, EB exponent bits, normals down to 2^emin and magnitudes up
// to max (saturating: these caches clip rather than overflow to infinity).

typedef struct { int M, EB, emin; double max; } Format;
static const Format BF16 = {7, 8, -126, 3.3895313892515355e38}, FP16 = {10, 5, -14, 65504.0}, E4M3 = {3, 4, -6, 448.0};

// x rounded to the format (round to nearest, ties to even), as a double (exact).
static double format_round(double x, const Format *f) {
    double a = fabs(x);
    if (a == 0.0 || isnan(a)) return a == 0.0 ? x : 0.0;
    int e;
    frexp(a, &e);
    int E = e - 1 < f->emin ? f->emin : e - 1;     // below the normals the step stays 2^(emin - M)
    double step = ldexp(1.0, E - f->M);
    double r = nearbyint(a / step) * step;          // a / step is exact (a power of two)
    if (r > f->max) r = f->max;
    return copysign(r, x);
}

static uint32_t format_pack(double r, const Format *f) {
    uint32_t sign = signbit(r) ? 1u : 0u, e_field, mant;
    double a = fabs(r);
    if (a == 0.0) return sign << (f->M + f->EB);
    int e;
    frexp(a, &e);
    if (e - 1 < f->emin) {
        e_field = 0;
        mant = (uint32_t)ldexp(a, f->M - f->emin);
    } else {
        e_field = (uint32_t)(e - 1 - f->emin + 1);
        mant = (uint32_t)ldexp(ldexp(a, -(e - 1)) - 1.0, f->M);
    }
    return sign << (f->M + f->EB) | e_field << f->M | mant;
}

uint16_t kvq_bf16_from(float x) { return isnan(x) ? 0x7FC0 : (uint16_t)format_pack(format_round(x, &BF16), &BF16); }
float kvq_bf16_to(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

uint16_t kvq_fp16_from(float x) { return isnan(x) ? 0x7E00 : (uint16_t)format_pack(format_round(x, &FP16), &FP16); }
float kvq_fp16_to(uint16_t h) {
    uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
    float a;
    if (e == 0) {
        a = (float)m * 0x1p-24f;   // subnormal: m * 2^-24, exact
    } else {
        uint32_t u = (e + 112u) << 23 | m << 13;   // rebias 15 -> 127
        memcpy(&a, &u, sizeof a);
    }
    return h & 0x8000 ? -a : a;
}

uint8_t kvq_fp8_from(float x) { return isnan(x) ? 0x7F : (uint8_t)format_pack(format_round(x, &E4M3), &E4M3); }
float kvq_fp8_to(uint8_t b) {
    uint32_t e = (b >> 3) & 0xF, m = b & 7;
    float a;
    if (e == 0) {
        a = (float)m * 0x1p-9f;
    } else {
        uint32_t u = (e + 120u) << 23 | m << 20;   // rebias 7 -> 127
        memcpy(&a, &u, sizeof a);
    }
    return b & 0x80 ? -a : a;
}

// The next fp16 above (dir > 0) or below (dir < 0) the one with bits h.
static uint16_t fp16_step(uint16_t h, int dir) {
    int neg = (h & 0x8000) != 0, mag = h & 0x7FFF;
    if (mag == 0) return dir > 0 ? 0x0001 : 0x8001;
    if ((dir > 0) != neg) return (uint16_t)(h + 1);   // away from zero
    return (uint16_t)(h - 1);
}
// The smallest fp16 >= x and the largest fp16 <= x (within +-65504): a scale rounded up and a zero point
// rounded down keep every value of a group inside the range its codes cover.
static uint16_t fp16_up(double x) {
    uint16_t h = kvq_fp16_from((float)x);
    while ((double)kvq_fp16_to(h) < x && (h & 0x7FFF) < 0x7BFF) h = fp16_step(h, 1);
    return h;
}
static uint16_t fp16_down(double x) {
    uint16_t h = kvq_fp16_from((float)x);
    while ((double)kvq_fp16_to(h) > x && (h & 0x7FFF) < 0x7BFF) h = fp16_step(h, -1);
    return h;
}

// ---- bit packing: element j's B-bit code at bits j*B .. j*B+B-1 of its area, least significant first --

static void bits_put(unsigned char *area, size_t j, int B, unsigned v) {
    size_t bit = j * (size_t)B;
    unsigned char *p = area + bit / 8;
    int sh = (int)(bit % 8);
    p[0] |= (unsigned char)(v << sh);
    if (sh + B > 8) p[1] |= (unsigned char)(v >> (8 - sh));
}

static unsigned bits_get(const unsigned char *area, size_t j, int B) {
    size_t bit = j * (size_t)B;
    const unsigned char *p = area + bit / 8;
    int sh = (int)(bit % 8);
    unsigned v = (unsigned)p[0] >> sh;
    if (sh + B > 8) v |= (unsigned)p[1] << (8 - sh);
    return v & ((1u << B) - 1);
}

// All d codes of an area at once into u (d bytes): whole bytes at a time when B divides 8, so a decode
// step does not pay a shift and two loads per element.
static void bits_unpack(unsigned char *u, const unsigned char *area, int d, int B) {
    int j = 0;
    if (B == 4)
        for (; j + 2 <= d; j += 2) {
            unsigned char c = area[j / 2];
            u[j] = c & 15;
            u[j + 1] = c >> 4;
        }
    else if (B == 2)
        for (; j + 4 <= d; j += 4) {
            unsigned char c = area[j / 4];
            u[j] = c & 3;
            u[j + 1] = (c >> 2) & 3;
            u[j + 2] = (c >> 4) & 3;
            u[j + 3] = c >> 6;
        }
    for (; j < d; j++) u[j] = (unsigned char)bits_get(area, (size_t)j, B);
}

static size_t code_bytes(int d, int B) { return ((size_t)d * (size_t)B + 7) / 8; }
static int n_groups(int d, int G) { return (d + G - 1) / G; }

// ---- asymmetric integer codes for a run of values sharing one zero point and scale ------------------------

// z (fp16, down) and s (fp16, up) for values x[0], x[stride], ... (n of them) at B bits.
static void asym_range(uint16_t *z, uint16_t *s, const float *x, size_t stride, int n, int B) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < n; i++) {
        float v = x[(size_t)i * stride];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *z = fp16_down(lo);
    *s = fp16_up(((double)hi - kvq_fp16_to(*z)) / (double)((1 << B) - 1));
}

static unsigned asym_code(float x, float z, float s, int B) {
    if (s <= 0.0f) return 0;
    double c = nearbyint(((double)x - z) / s);
    double top = (double)((1 << B) - 1);
    return (unsigned)(c < 0 ? 0 : c > top ? top : c);
}

// ---- TurboQuant: a rotation, Lloyd-Max codebooks for the rotated coordinates, the QJL sketch --------------

enum { TURBO_MAX_BITS = 4 };

typedef struct {
    int d;
    float *rot;                                  // (d, d) Pi, orthogonal: y = Pi x
    float *sketch;                               // (d, d) S with N(0,1) entries (QJL), or NULL
    float cb[TURBO_MAX_BITS + 1][16];            // centroids at 1..4 bits, ascending
    float bd[TURBO_MAX_BITS + 1][15];            // the boundaries between them (midpoints)
    double dist[TURBO_MAX_BITS + 1];             // per-coordinate mean squared error of each codebook
} TurboCodec;

// The Lloyd-Max quantizer with K levels for one coordinate of a uniform point on the unit sphere in d
// dims: density ~ (1 - y^2)^((d-3)/2) on [-1, 1] (TurboQuant, Lemma 1), discretised on a fine grid.
// Alternates the two optimality conditions: boundaries halfway between centroids, each centroid the mean
// of its cell. Returns the per-coordinate mean squared error.
static double lloyd_max(int d, int K, float *centroid, float *boundary) {
    enum { NG = 1 << 15 };
    // for large d the law is close to N(0, 1/d): past 12 standard deviations nothing is left
    double a = d > 144 ? 12.0 / sqrt((double)d) : 1.0, h = 2.0 * a / NG, ex = 0.5 * (d - 3);
    double *x = mallocCheck(sizeof(double) * (NG + 3 * (NG + 1)));
    double *P0 = x + NG, *P1 = P0 + NG + 1, *P2 = P1 + NG + 1;   // prefix sums of w, w y, w y^2
    P0[0] = P1[0] = P2[0] = 0.0;
    for (int i = 0; i < NG; i++) {
        x[i] = -a + (i + 0.5) * h;
        double w = exp(ex * log1p(-x[i] * x[i]));
        P0[i + 1] = P0[i] + w;
        P1[i + 1] = P1[i] + w * x[i];
        P2[i + 1] = P2[i] + w * x[i] * x[i];
    }
    double total = P0[NG];
    double c[16], b[17];
    for (int k = 0, i = 0; k < K; k++) {   // start from the quantiles (k + 1/2) / K
        while (i < NG - 1 && P0[i + 1] < (k + 0.5) / K * total) i++;
        c[k] = x[i];
    }
    for (int it = 0; it < 2000; it++) {
        double moved = 0.0;
        b[0] = -a - h;
        b[K] = a + h;
        for (int k = 1; k < K; k++) b[k] = 0.5 * (c[k - 1] + c[k]);
        for (int k = 0; k < K; k++) {
            // cell k holds the grid points with b[k] <= y < b[k+1]
            int lo = (int)ceil((b[k] + a) / h - 0.5), hi = (int)ceil((b[k + 1] + a) / h - 0.5);
            lo = lo < 0 ? 0 : lo > NG ? NG : lo;
            hi = hi < 0 ? 0 : hi > NG ? NG : hi;
            double m = P0[hi] - P0[lo];
            if (m <= 0.0) continue;
            double nc = (P1[hi] - P1[lo]) / m;
            moved = fabs(nc - c[k]) > moved ? fabs(nc - c[k]) : moved;
            c[k] = nc;
        }
        if (moved < 1e-12 * a) break;
    }
    double err = 0.0;
    for (int k = 1; k < K; k++) b[k] = 0.5 * (c[k - 1] + c[k]);
    b[0] = -a - h;
    b[K] = a + h;
    for (int k = 0; k < K; k++) {
        int lo = (int)ceil((b[k] + a) / h - 0.5), hi = (int)ceil((b[k + 1] + a) / h - 0.5);
        lo = lo < 0 ? 0 : lo > NG ? NG : lo;
        hi = hi < 0 ? 0 : hi > NG ? NG : hi;
        err += (P2[hi] - P2[lo]) - 2.0 * c[k] * (P1[hi] - P1[lo]) + c[k] * c[k] * (P0[hi] - P0[lo]);
        centroid[k] = (float)c[k];
        if (k > 0) boundary[k - 1] = (float)b[k];
    }
    free(x);
    return err / total;
}

// A fit depends only on (d, K), so each is made once per process (under a lock: models evaluated on
// several threads may ask for the same fit at once).
typedef struct {
    int d, K;
    float c[16], b[15];
    double err;
} LloydFit;
static LloydFit lloyd_memo[64];
static int lloyd_n;

static double lloyd_max_memo(int d, int K, float *centroid, float *boundary) {
    double err = -1.0;
    #pragma omp critical(kvq_lloyd_memo)
    {
        for (int i = 0; i < lloyd_n && err < 0; i++)
            if (lloyd_memo[i].d == d && lloyd_memo[i].K == K) {
                memcpy(centroid, lloyd_memo[i].c, sizeof(float) * (size_t)K);
                memcpy(boundary, lloyd_memo[i].b, sizeof(float) * (size_t)(K - 1));
                err = lloyd_memo[i].err;
            }
        if (err < 0) {
            err = lloyd_max(d, K, centroid, boundary);
            if (lloyd_n < (int)(sizeof lloyd_memo / sizeof lloyd_memo[0])) {
                LloydFit *f = &lloyd_memo[lloyd_n++];
                f->d = d;
                f->K = K;
                f->err = err;
                memcpy(f->c, centroid, sizeof(float) * (size_t)K);
                memcpy(f->b, boundary, sizeof(float) * (size_t)(K - 1));
            }
        }
    }
    return err;
}

// A random orthogonal d x d matrix: a Gaussian matrix's rows made orthonormal by Gram-Schmidt (twice, in
// double, so the float result is orthogonal to rounding).
static void random_rotation(float *rot, int d, Rng *rng) {
    double *m = mallocCheck(sizeof(double) * (size_t)d * d);
    for (size_t i = 0; i < (size_t)d * d; i++) m[i] = rng_normal(rng);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < d; i++) {
            double *ri = m + (size_t)i * d;
            for (int j = 0; j < i; j++) {
                const double *rj = m + (size_t)j * d;
                double p = 0.0;
                for (int c = 0; c < d; c++) p += ri[c] * rj[c];
                for (int c = 0; c < d; c++) ri[c] -= p * rj[c];
            }
            double n = 0.0;
            for (int c = 0; c < d; c++) n += ri[c] * ri[c];
            n = 1.0 / sqrt(n);
            for (int c = 0; c < d; c++) ri[c] *= n;
        }
    for (size_t i = 0; i < (size_t)d * d; i++) rot[i] = (float)m[i];
    free(m);
}

static TurboCodec *turbo_codec_new(int d, int qjl, uint64_t seed) {
    CHECK(d >= 2, "turbo: vectors of %d dims (a rotation needs at least 2)", d);
    TurboCodec *c = callocCheck(1, sizeof *c);
    c->d = d;
    Rng rng;
    rng_seed(&rng, seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)d));
    c->rot = mallocCheck(sizeof(float) * (size_t)d * d);
    random_rotation(c->rot, d, &rng);
    if (qjl) {
        c->sketch = mallocCheck(sizeof(float) * (size_t)d * d);
        rng_fill_normal(&rng, c->sketch, (long)d * d, 1.0f);
    }
    for (int b = 1; b <= TURBO_MAX_BITS; b++) c->dist[b] = lloyd_max_memo(d, 1 << b, c->cb[b], c->bd[b]);
    return c;
}

static void turbo_codec_free(TurboCodec *c) {
    if (!c) return;
    free(c->rot);
    free(c->sketch);
    free(c);
}

// y = Pi x (inverse 0) or Pi^T x (inverse 1), d floats, y and x distinct.
static void turbo_turn(const TurboCodec *c, float *y, const float *x, int inverse) {
    int d = c->d;
    if (!inverse) {
        for (int i = 0; i < d; i++) {
            const float *r = c->rot + (size_t)i * d;
            float acc = 0.0f;
            for (int j = 0; j < d; j++) acc += r[j] * x[j];
            y[i] = acc;
        }
    } else {
        memset(y, 0, sizeof(float) * (size_t)d);
        for (int i = 0; i < d; i++) {
            const float *r = c->rot + (size_t)i * d;
            for (int j = 0; j < d; j++) y[j] += r[j] * x[i];
        }
    }
}

static unsigned turbo_bucket(const TurboCodec *c, int B, float y) {
    unsigned k = 0;
    for (int i = 0; i < (1 << B) - 1; i++) k += y >= c->bd[B][i];
    return k;
}

// ---- a scheme with its per-model constants ---------------------------------------------------------------

enum { KVQ_MAX_WIDTHS = 16 };

struct KvQuant {
    KvqScheme s;
    uint64_t seed;
    TurboCodec *codec[KVQ_MAX_WIDTHS];
    int n_codecs;
};

KvQuant *kvq_new(const KvqScheme *s, uint64_t seed) {
    KvQuant *q = callocCheck(1, sizeof *q);
    q->s = *s;
    q->seed = seed;
    return q;
}

void kvq_free(KvQuant *q) {
    if (!q) return;
    for (int i = 0; i < q->n_codecs; i++) turbo_codec_free(q->codec[i]);
    free(q);
}

const KvqScheme *kvq_scheme_of(const KvQuant *q) { return &q->s; }

static TurboCodec *codec_for(KvQuant *q, int d) {
    for (int i = 0; i < q->n_codecs; i++)
        if (q->codec[i]->d == d) return q->codec[i];
    CHECK(q->n_codecs < KVQ_MAX_WIDTHS, "kvquant: more than %d vector widths in one model", KVQ_MAX_WIDTHS);
    q->codec[q->n_codecs] = turbo_codec_new(d, q->s.qjl, q->seed);
    return q->codec[q->n_codecs++];
}

double kvq_turbo_distortion(KvQuant *q, int d, int bits) {
    CHECK(bits >= 1 && bits <= TURBO_MAX_BITS, "kvq_turbo_distortion: %d bits", bits);
    return codec_for(q, d)->dist[bits] * d;
}

// ---- bytes ------------------------------------------------------------------------------------------------

// Bytes one vector of width d takes in its token's slot (KIVI keys: codes only; their ranges live per chunk).
static size_t slot_vector_bytes(const KvqScheme *s, int d, KvqRole role) {
    switch (s->family) {
    case KVQ_FP32: return 4 * (size_t)d;
    case KVQ_BF16:
    case KVQ_FP16: return 2 * (size_t)d;
    case KVQ_FP8: return (size_t)d;
    case KVQ_INT8: return 2 + (size_t)d;
    case KVQ_INT: return 4 * (size_t)n_groups(d, s->group) + code_bytes(d, s->bits);
    case KVQ_KIVI:
        return role == KVQ_KEY ? code_bytes(d, s->bits) : 4 * (size_t)n_groups(d, s->group) + code_bytes(d, s->bits);
    case KVQ_TURBO: return 2 + (s->qjl && role == KVQ_KEY ? 2 : 0) + code_bytes(d, s->bits);
    }
    return 0;
}

double kvq_vector_bytes(const KvqScheme *s, int d, KvqRole role) {
    double b = (double)slot_vector_bytes(s, d, role);
    if (s->family == KVQ_KIVI && role == KVQ_KEY) b += 4.0 * d / s->group;   // z and s per channel per chunk
    return b;
}

double kvq_stream_bytes_for(const KvqScheme *s, const int *w, int n_parts, KvqRole role, long n, int full_bytes) {
    double total = 0.0;
    for (int p = 0; p < n_parts; p++) {
        if (s->family != KVQ_KIVI) {
            total += (double)n * kvq_vector_bytes(s, w[p], role);
            continue;
        }
        long chunks = n / s->group, rest = n % s->group;
        double quantized = (double)chunks * s->group * (double)slot_vector_bytes(s, w[p], role);
        if (role == KVQ_KEY) quantized += (double)chunks * 4.0 * w[p];
        total += quantized + (double)rest * w[p] * full_bytes;
    }
    return total;
}

double kvq_model_bytes(const KvqScheme *s, int d) {
    if (s->family != KVQ_TURBO) return 0.0;
    double centroids = (double)(1 << s->bits) + (s->qjl ? (double)(1 << (s->bits - 1)) : 0.0);
    return 4.0 * (centroids + (double)d * d * (s->qjl ? 2 : 1));
}

// ---- streams ----------------------------------------------------------------------------------------------

struct KvqStream {
    KvqScheme s;
    KvqRole role;
    int n_parts, row;           // vectors per row, floats per row
    int *w, *off;               // (n_parts) widths, float offsets in a row
    size_t *boff, slot_bytes;   // (n_parts) byte offsets in a slot; bytes per slot
    int cap, n;                 // slots; positions appended
    unsigned char *slots;       // (cap, slot_bytes)
    TurboCodec **codec;         // (n_parts) turbo: the codec of each vector's width
    int qjl;                    // turbo keys carry the QJL sketch
    uint16_t *chunk_zs;         // KIVI keys: (chunks, row, 2) zero point and scale per channel, fp16
    float *resid;               // KIVI: (G, row) the chunk being filled, full precision
    float *tmp;                 // (3 * the widest vector) scratch for turning and encoding
    unsigned char *codes;       // (the widest vector) one vector's codes, unpacked
};

KvqStream *kvq_stream_new(KvQuant *q, KvqRole role, const int *w, int n_parts, int cap) {
    CHECK(n_parts >= 1 && cap >= 1, "kvq_stream_new: %d parts, %d slots", n_parts, cap);
    KvqStream *s = callocCheck(1, sizeof *s);
    s->s = q->s;
    s->role = role;
    s->n_parts = n_parts;
    s->cap = cap;
    s->qjl = q->s.family == KVQ_TURBO && q->s.qjl && role == KVQ_KEY;
    s->w = mallocCheck(sizeof(int) * 2 * (size_t)n_parts);
    s->off = s->w + n_parts;
    s->boff = mallocCheck(sizeof(size_t) * (size_t)n_parts);
    s->codec = callocCheck((size_t)n_parts, sizeof *s->codec);
    int widest = 1;
    for (int p = 0; p < n_parts; p++) {
        CHECK(w[p] >= 1, "kvq_stream_new: part %d of width %d", p, w[p]);
        s->w[p] = w[p];
        s->off[p] = s->row;
        s->boff[p] = s->slot_bytes;
        s->row += w[p];
        s->slot_bytes += slot_vector_bytes(&s->s, w[p], role);
        widest = w[p] > widest ? w[p] : widest;
        if (s->s.family == KVQ_TURBO) s->codec[p] = codec_for(q, w[p]);
    }
    s->slots = callocCheck((size_t)cap, s->slot_bytes);
    s->tmp = mallocCheck(sizeof(float) * 3 * (size_t)widest);
    s->codes = mallocCheck((size_t)widest);
    if (s->s.family == KVQ_KIVI) {
        s->resid = mallocCheck(sizeof(float) * (size_t)s->s.group * (size_t)s->row);
        if (role == KVQ_KEY) s->chunk_zs = mallocCheck(sizeof(uint16_t) * 2 * ((size_t)cap / s->s.group + 1) * (size_t)s->row);
    }
    return s;
}

void kvq_stream_free(KvqStream *s) {
    if (!s) return;
    free(s->w);
    free(s->boff);
    free(s->codec);
    free(s->slots);
    free(s->tmp);
    free(s->codes);
    free(s->resid);
    free(s->chunk_zs);
    free(s);
}

int kvq_row_floats(const KvqStream *s) { return s->row; }

// intB:G (and KIVI's values): per group, [z | s] (fp16) in front, then the codes of the whole vector.
static void encode_groups(unsigned char *slot, const float *x, int d, int B, int G) {
    int ng = n_groups(d, G);
    unsigned char *codes = slot + 4 * (size_t)ng;
    memset(codes, 0, code_bytes(d, B));
    for (int g = 0; g < ng; g++) {
        int lo = g * G, n = d - lo < G ? d - lo : G;
        uint16_t zs[2];
        asym_range(&zs[0], &zs[1], x + lo, 1, n, B);
        memcpy(slot + 4 * (size_t)g, zs, 4);
        float z = kvq_fp16_to(zs[0]), sc = kvq_fp16_to(zs[1]);
        for (int j = lo; j < lo + n; j++) bits_put(codes, (size_t)j, B, asym_code(x[j], z, sc, B));
    }
}

static void decode_groups(float *y, unsigned char *u, const unsigned char *slot, int d, int B, int G) {
    int ng = n_groups(d, G);
    bits_unpack(u, slot + 4 * (size_t)ng, d, B);
    for (int g = 0; g < ng; g++) {
        int lo = g * G, hi = d < lo + G ? d : lo + G;
        uint16_t zs[2];
        memcpy(zs, slot + 4 * (size_t)g, 4);
        float z = kvq_fp16_to(zs[0]), sc = kvq_fp16_to(zs[1]);
        for (int j = lo; j < hi; j++) y[j] = z + (float)u[j] * sc;
    }
}

// turbo: [norm | (qjl) residual norm] (fp16), then B (or B-1 index + 1 sign) bits per coordinate.
static void encode_turbo(const KvqStream *s, unsigned char *slot, const float *x, int p) {
    const TurboCodec *c = s->codec[p];
    int d = c->d, B = s->qjl ? s->s.bits - 1 : s->s.bits;
    float *u = s->tmp, *y = u + d, *r = y + d;
    double nn = 0.0;
    for (int j = 0; j < d; j++) nn += (double)x[j] * x[j];
    double norm = sqrt(nn);
    size_t head = s->qjl ? 4 : 2;
    unsigned char *codes = slot + head;
    memset(slot, 0, head + code_bytes(d, s->s.bits));
    uint16_t h = kvq_fp16_from((float)norm);
    memcpy(slot, &h, 2);
    if (norm == 0.0) return;   // a zero vector: norm 0 decodes to zeros whatever the codes
    for (int j = 0; j < d; j++) u[j] = (float)(x[j] / norm);
    turbo_turn(c, y, u, 0);
    for (int j = 0; j < d; j++) {
        unsigned k = turbo_bucket(c, B, y[j]);
        bits_put(codes, (size_t)j, B, k);
        r[j] = y[j] - c->cb[B][k];
    }
    if (!s->qjl) return;
    double rr = 0.0;
    for (int j = 0; j < d; j++) rr += (double)r[j] * r[j];
    uint16_t g = kvq_fp16_from((float)sqrt(rr));
    memcpy(slot + 2, &g, 2);
    // the sign bits sit after the d index codes: bit (d*B + i) is sign((S r)_i) >= 0
    for (int i = 0; i < d; i++) {
        const float *srow = c->sketch + (size_t)i * d;
        float acc = 0.0f;
        for (int j = 0; j < d; j++) acc += srow[j] * r[j];
        if (acc >= 0.0f) bits_put(codes, (size_t)d * B + (size_t)i, 1, 1);
    }
}

// The working domain: norm * (c[idx] + sqrt(pi/2)/d * ||r|| * S^T z), z = +-1, the rotated vector.
static void decode_turbo(const KvqStream *s, float *y, const unsigned char *slot, int p) {
    const TurboCodec *c = s->codec[p];
    int d = c->d, B = s->qjl ? s->s.bits - 1 : s->s.bits;
    uint16_t h;
    memcpy(&h, slot, 2);
    float norm = kvq_fp16_to(h);
    const unsigned char *codes = slot + (s->qjl ? 4 : 2);
    bits_unpack(s->codes, codes, d, B);
    for (int j = 0; j < d; j++) y[j] = c->cb[B][s->codes[j]];
    if (s->qjl) {
        uint16_t g;
        memcpy(&g, slot + 2, 2);
        float a = (float)(sqrt(M_PI / 2.0) / d) * kvq_fp16_to(g);
        for (int i = 0; i < d; i++) {
            float zi = bits_get(codes, (size_t)d * B + (size_t)i, 1) ? a : -a;
            const float *srow = c->sketch + (size_t)i * d;
            for (int j = 0; j < d; j++) y[j] += zi * srow[j];
        }
    }
    for (int j = 0; j < d; j++) y[j] *= norm;
}

// One vector of a slot, every family but KIVI's keys.
static void encode_vector(const KvqStream *s, unsigned char *slot, const float *x, int p) {
    int d = s->w[p];
    switch (s->s.family) {
    case KVQ_FP32: memcpy(slot, x, sizeof(float) * (size_t)d); break;
    case KVQ_BF16:
        for (int j = 0; j < d; j++) {
            uint16_t h = kvq_bf16_from(x[j]);
            memcpy(slot + 2 * (size_t)j, &h, 2);
        }
        break;
    case KVQ_FP16:
        for (int j = 0; j < d; j++) {
            uint16_t h = kvq_fp16_from(x[j]);
            memcpy(slot + 2 * (size_t)j, &h, 2);
        }
        break;
    case KVQ_FP8:
        for (int j = 0; j < d; j++) slot[j] = kvq_fp8_from(x[j]);
        break;
    case KVQ_INT8: {
        float amax = 0.0f;
        for (int j = 0; j < d; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        uint16_t h = fp16_up((double)amax / 127.0);
        memcpy(slot, &h, 2);
        float sc = kvq_fp16_to(h);
        for (int j = 0; j < d; j++) {
            double c = sc > 0.0f ? nearbyint((double)x[j] / sc) : 0.0;
            slot[2 + j] = (unsigned char)(signed char)(c > 127 ? 127 : c < -127 ? -127 : c);
        }
        break;
    }
    case KVQ_INT:
    case KVQ_KIVI: encode_groups(slot, x, d, s->s.bits, s->s.group); break;
    case KVQ_TURBO: encode_turbo(s, slot, x, p); break;
    }
}

static void decode_vector(const KvqStream *s, float *y, const unsigned char *slot, int p) {
    int d = s->w[p];
    switch (s->s.family) {
    case KVQ_FP32: memcpy(y, slot, sizeof(float) * (size_t)d); break;
    case KVQ_BF16:
        for (int j = 0; j < d; j++) {
            uint16_t h;
            memcpy(&h, slot + 2 * (size_t)j, 2);
            y[j] = kvq_bf16_to(h);
        }
        break;
    case KVQ_FP16:
        for (int j = 0; j < d; j++) {
            uint16_t h;
            memcpy(&h, slot + 2 * (size_t)j, 2);
            y[j] = kvq_fp16_to(h);
        }
        break;
    case KVQ_FP8:
        for (int j = 0; j < d; j++) y[j] = kvq_fp8_to(slot[j]);
        break;
    case KVQ_INT8: {
        uint16_t h;
        memcpy(&h, slot, 2);
        float sc = kvq_fp16_to(h);
        for (int j = 0; j < d; j++) y[j] = (float)(signed char)slot[2 + j] * sc;
        break;
    }
    case KVQ_INT:
    case KVQ_KIVI: decode_groups(y, s->codes, slot, d, s->s.bits, s->s.group); break;
    case KVQ_TURBO: decode_turbo(s, y, slot, p); break;
    }
}

// KIVI: the chunk of G tokens ending at position last is complete: keys get one zero point and scale per
// channel over the chunk's tokens, values are coded token by token.
static void kivi_flush(KvqStream *s, int last) {
    int G = s->s.group, B = s->s.bits, first = last - G + 1;
    for (int t = 0; t < G; t++) {
        unsigned char *slot = s->slots + (size_t)((first + t) % s->cap) * s->slot_bytes;
        const float *x = s->resid + (size_t)t * s->row;
        for (int p = 0; p < s->n_parts; p++) {
            if (s->role == KVQ_VALUE) encode_groups(slot + s->boff[p], x + s->off[p], s->w[p], B, G);
            else memset(slot + s->boff[p], 0, code_bytes(s->w[p], B));
        }
    }
    if (s->role == KVQ_VALUE) return;
    uint16_t *zs = s->chunk_zs + (size_t)(first / G) * 2 * s->row;
    for (int p = 0; p < s->n_parts; p++)
        for (int j = 0; j < s->w[p]; j++) {
            int col = s->off[p] + j;
            asym_range(&zs[2 * col], &zs[2 * col + 1], s->resid + col, (size_t)s->row, G, B);
            float z = kvq_fp16_to(zs[2 * col]), sc = kvq_fp16_to(zs[2 * col + 1]);
            for (int t = 0; t < G; t++) {
                unsigned char *codes = s->slots + (size_t)((first + t) % s->cap) * s->slot_bytes + s->boff[p];
                bits_put(codes, (size_t)j, B, asym_code(s->resid[(size_t)t * s->row + col], z, sc, B));
            }
        }
}

void kvq_put(KvqStream *s, int pos, const float *row) {
    CHECK(pos == s->n, "kvq_put: position %d, expected %d (positions arrive in order)", pos, s->n);
    if (s->s.family == KVQ_KIVI) {
        CHECK(pos < s->cap, "kvq_put: KIVI holds every position, and %d exceeds its %d slots", pos, s->cap);
        memcpy(s->resid + (size_t)(pos % s->s.group) * s->row, row, sizeof(float) * (size_t)s->row);
        s->n++;
        if (s->n % s->s.group == 0) kivi_flush(s, pos);
        return;
    }
    unsigned char *slot = s->slots + (size_t)(pos % s->cap) * s->slot_bytes;
    for (int p = 0; p < s->n_parts; p++) encode_vector(s, slot + s->boff[p], row + s->off[p], p);
    s->n++;
}

void kvq_get(const KvqStream *s, float *rows, size_t stride, int lo, int hi, int original) {
    CHECK(lo >= 0 && hi < s->n && lo >= s->n - s->cap, "kvq_get: positions %d..%d, %d appended, %d slots", lo, hi,
          s->n, s->cap);
    int G = s->s.group, B = s->s.bits;
    int full = s->s.family == KVQ_KIVI ? s->n / G * G : s->n;   // positions below this are coded
    for (int pos = lo; pos <= hi; pos++) {
        float *y = rows + (size_t)(pos % s->cap) * stride;
        if (pos >= full) {
            memcpy(y, s->resid + (size_t)(pos % G) * s->row, sizeof(float) * (size_t)s->row);
            continue;
        }
        const unsigned char *slot = s->slots + (size_t)(pos % s->cap) * s->slot_bytes;
        for (int p = 0; p < s->n_parts; p++) {
            float *yp = y + s->off[p];
            if (s->s.family == KVQ_KIVI && s->role == KVQ_KEY) {
                const uint16_t *zs = s->chunk_zs + (size_t)(pos / G) * 2 * s->row + 2 * (size_t)s->off[p];
                bits_unpack(s->codes, slot + s->boff[p], s->w[p], B);
                for (int j = 0; j < s->w[p]; j++) yp[j] = kvq_fp16_to(zs[2 * j]) + (float)s->codes[j] * kvq_fp16_to(zs[2 * j + 1]);
                continue;
            }
            decode_vector(s, yp, slot + s->boff[p], p);
            if (original && s->s.family == KVQ_TURBO) {
                memcpy(s->tmp, yp, sizeof(float) * (size_t)s->w[p]);
                turbo_turn(s->codec[p], yp, s->tmp, 1);
            }
        }
    }
}

void kvq_rotate(const KvqStream *s, float *x, int d, int inverse) {
    if (s->s.family != KVQ_TURBO) return;
    for (int p = 0; p < s->n_parts; p++)
        if (s->w[p] == d) {
            memcpy(s->tmp, x, sizeof(float) * (size_t)d);
            turbo_turn(s->codec[p], x, s->tmp, inverse);
            return;
        }
    CHECK(0, "kvq_rotate: no vectors of width %d in this stream", d);
}

size_t kvq_stream_held_bytes(const KvqStream *s) {
    if (s->s.family != KVQ_KIVI) return (size_t)(s->n < s->cap ? s->n : s->cap) * s->slot_bytes;
    size_t chunks = (size_t)(s->n / s->s.group), rest = (size_t)(s->n % s->s.group);
    size_t meta = s->role == KVQ_KEY ? chunks * 2 * sizeof(uint16_t) * (size_t)s->row : 0;
    return chunks * (size_t)s->s.group * s->slot_bytes + meta + rest * sizeof(float) * (size_t)s->row;
}
