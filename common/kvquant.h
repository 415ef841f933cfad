// kvquant.h: quantizers for cached key and value vectors (chapter 12), each an encoder, a decoder and
// exact byte accounting: codes plus the scales and zero points stored beside them per token, per group
// or per chunk; codebooks, rotations and sketch matrices are per model, never per token.
//
// The schemes (the spelling kvq_parse accepts and kvq_scheme_name prints):
//   fp32             the cache as the tiny models keep it: lossless, 32 bits per element
//   bf16, fp16       round to nearest even: 16 bits
//   fp8              OCP float8 e4m3 (4 exponent bits, 3 mantissa bits, max 448, saturating): 8 bits
//   int8             per vector (one head's key, value or latent), symmetric: scale = absmax / 127 (fp16),
//                    code = round(x / scale) in [-127, 127]: 8 bits + 16 per vector
//   intB[:G]         B = 2, 3, 4; asymmetric per group of G channels of one vector (default 32): zero z =
//                    the group's min, scale s = (max - z) / (2^B - 1), both fp16, code = round((x - z) / s)
//                    in [0, 2^B - 1]: B bits + 32 per group
//   kiviB[:G]        KIVI (Liu et al., 2024): keys per CHANNEL, values per token. A key channel's z and s
//                    cover a chunk of G tokens (default 32), so a channel with large values (an outlier
//                    channel) gets its own range instead of stretching every token's; values as intB:G.
//                    The tokens of the chunk being filled (at most G - 1) stay in full precision, as
//                    KIVI's residual; they are counted at the cache's element size.
//   turboB[+qjl]     TurboQuant (Zandieh et al., 2025) with B = 2, 3, 4: a vector's norm (fp16) is kept,
//                    the unit vector is turned by a fixed random orthogonal matrix Pi, after which every
//                    coordinate follows the same known law (a coordinate of a uniform point on the sphere
//                    in d dims: density ~ (1 - y^2)^((d-3)/2)), and each coordinate gets the B-bit
//                    Lloyd-Max codebook of that law. "+qjl" (keys only: it is an inner-product
//                    estimator) spends one of the B bits on QJL (Zandieh et al., 2024): B-1 bits as above,
//                    then the residual r = y - Q(y) is kept as sign(S r) (S a fixed d x d Gaussian matrix)
//                    and its norm (fp16), decoded as sqrt(pi/2) / d * ||r|| * S^T sign(S r), which makes
//                    q . k unbiased over the draw of S.
// Scales and zero points are rounded outward in fp16 (the scale up, the zero point down), so every value
// of a group stays inside the range its codes cover: a round trip is off by at most half a step.
//
// A stream (KvqStream) holds one cached tensor of a decode cache: per token one row of vectors (GQA's
// keys: n_kv_heads vectors of head_dim; MLA's row: c_kv (kv_lora_rank) and k_pe (qk_rope_head_dim)).
// kvq_get decodes rows into floats in the scheme's working domain: the vectors themselves, or, for turbo,
// the rotated vectors Pi x. Scores need no un-rotation, because (Pi q) . (Pi k) = q . k: the caller
// turns its queries with kvq_rotate, attends, and turns the weighted sum of values back with the
// inverse rotation. So a decode step pays O(d) per cached vector, not a d x d product.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef enum { KVQ_FP32, KVQ_BF16, KVQ_FP16, KVQ_FP8, KVQ_INT8, KVQ_INT, KVQ_KIVI, KVQ_TURBO } KvqFamily;
typedef enum { KVQ_KEY = 0, KVQ_VALUE = 1 } KvqRole;

typedef struct {
    KvqFamily family;
    int bits;          // bits of one element's code: 32, 16, 8 for the float formats and int8; B otherwise
    int group;         // KVQ_INT: channels per group; KVQ_KIVI: tokens per key chunk and channels per value group
    int qjl;           // KVQ_TURBO: keys spend one bit on the QJL residual sketch
    char name[32];     // the canonical spelling: "int4:32", "kivi2:32", "turbo3+qjl"
} KvqScheme;

enum { KVQ_DEFAULT_GROUP = 32, KVQ_MAX_GROUP = 4096 };

// Parses "int4:32", "turbo3+qjl", ... Returns 0, or -1 with one line in err naming the text and what
// would be right.
int kvq_parse(KvqScheme *s, const char *text, char *err, size_t cap);
// The scheme for a spelling known to be right (internal error otherwise).
KvqScheme kvq_scheme(const char *text);
// What the flag accepts, for help texts and error messages.
#define KVQ_SCHEMES_HELP "fp32, bf16, fp16, fp8, int8, int2|int3|int4[:G], kivi2|kivi3|kivi4[:G], turbo2|turbo3|turbo4[+qjl]"

// ---- bytes ----------------------------------------------------------------------------------------
// Bytes one token's vector of width d adds in the long run: codes plus the scales and zero points
// stored with it (KIVI keys: their chunk's per-channel z and s, shared by G tokens, so 4d/G).
double kvq_vector_bytes(const KvqScheme *s, int d, KvqRole role);
// Exact bytes of a stream that holds n tokens of vectors of widths w[0..n_parts): KIVI's last n mod G
// tokens are kept in full precision at full_bytes per element (4 in this project's caches, the model's
// dtype in ./kvcache).
double kvq_stream_bytes_for(const KvqScheme *s, const int *w, int n_parts, KvqRole role, long n, int full_bytes);
// Bytes per model, not per token, for vectors of width d: turbo's codebooks (fp32 centroids), its
// rotation and (with +qjl) the sketch matrix, d x d fp32 each. 0 for the other schemes.
double kvq_model_bytes(const KvqScheme *s, int d);

// ---- the number formats (exposed for tests) ---------------------------------------------------------
uint16_t kvq_bf16_from(float x);
float kvq_bf16_to(uint16_t h);
uint16_t kvq_fp16_from(float x);      // round to nearest even, saturating at +-65504
float kvq_fp16_to(uint16_t h);
uint8_t kvq_fp8_from(float x);        // e4m3, round to nearest even, saturating at +-448
float kvq_fp8_to(uint8_t b);

// ---- a scheme with its per-model constants ----------------------------------------------------------
// Every cache of a model shares one KvQuant: turbo's rotation, codebooks and sketch for each vector width
// are built once (from seed, deterministically) when a stream first needs them. The streams of one
// KvQuant are made from one thread (separate KvQuants may live on separate threads); a KvQuant must
// outlive its streams.
typedef struct KvQuant KvQuant;
KvQuant *kvq_new(const KvqScheme *s, uint64_t seed);
void kvq_free(KvQuant *q);
const KvqScheme *kvq_scheme_of(const KvQuant *q);
// Turbo's relative mean squared error E||x - x~||^2 / ||x||^2 for vectors of width d at `bits` bits (no
// QJL), from the fitted codebook: d times the per-coordinate distortion of the Lloyd-Max quantizer.
double kvq_turbo_distortion(KvQuant *q, int d, int bits);

// ---- a stream of cached rows ------------------------------------------------------------------------
typedef struct KvqStream KvqStream;
// Rows of n_parts vectors of widths w[], for up to cap tokens held at once (position pos in slot
// pos % cap: a ring buffer when the cache is a window). KIVI needs every position kept (cap >= the
// positions a sequence reaches), since its key chunks span tokens.
KvqStream *kvq_stream_new(KvQuant *q, KvqRole role, const int *w, int n_parts, int cap);
void kvq_stream_free(KvqStream *s);
// Floats in one row (the sum of the widths).
int kvq_row_floats(const KvqStream *s);
// Appends the row of position pos (positions arrive in order: pos is the number appended so far).
void kvq_put(KvqStream *s, int pos, const float *row);
// Decodes positions lo..hi (held ones) into rows: position pos to rows + (pos % cap) * stride, in the
// working domain (original = 0) or as the vectors themselves (original = 1: turbo un-rotates them).
void kvq_get(const KvqStream *s, float *rows, size_t stride, int lo, int hi, int original);
// x (d floats) <- Pi x (inverse 0) or Pi^T x (inverse 1) for the stream's vectors of width d: turbo only,
// nothing for the other schemes (so a lossless scheme leaves every bit where it was).
void kvq_rotate(const KvqStream *s, float *x, int d, int inverse);
// Bytes the stream holds now, measured from what it stores (its slots, chunk metadata and full-precision
// residual rows in use); equals kvq_stream_bytes_for(.., n held, 4).
size_t kvq_stream_held_bytes(const KvqStream *s);
