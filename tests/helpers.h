// helpers.h: what several test files share: running the project's programs and finding its files,
// random inputs, closeness checks, and reading golden values (tests/golden/*.safetensors).
#pragma once
#include <stddef.h>

#include "mixer.h"
#include "rng.h"
#include "safetensors.h"

// Folder of the built programs (ATTN_BINDIR, set by `make test-run`) and of the repository (ATTN_ROOT).
const char *test_bindir(void);
const char *test_root(void);
// Runs "BINDIR/PROG ARGS" through sh; captures stdout+stderr (truncated to cap) into out and returns
// the exit status (or -1 if it died on a signal).
int test_run(char *out, size_t cap, const char *prog, const char *args);
// The same, killed after `seconds` (exit status 124 then), so a program that blocks fails its test
// instead of hanging the suite.
int test_run_limited(char *out, size_t cap, const char *prog, const char *args, int seconds);
// Number of lines in s (a final line without '\n' counts).
int test_count_lines(const char *s);
// A fresh empty temp folder (mkdtemp) under /tmp; the path is written into buf.
const char *test_tmpdir(char *buf, size_t cap);
// 1 if folder dir holds any file whose name contains ".tmp." (a half-written output).
int test_has_tmp_files(const char *dir);
// Number of entries in dir (0 if it does not exist).
int test_count_files(const char *dir);

// Gradient checks through the mixer interface. The loss is sum(out * R) over a forward of x (B,T,d),
// accumulated in double; the error is ||num - ana|| / ||ana|| for one tensor v (n floats, a slice of
// params or x), num by central differences of step 1e-2.
double test_mixer_loss(const Mixer *m, float *out, const float *x, const float *params, const float *R, int B, int T);
double test_mixer_fd_rel_error(const Mixer *m, float *v, const float *ana, size_t n, float *out, const float *x,
                               const float *params, const float *R, int B, int T);

// ---- mixer tests ------------------------------------------------------------------------------------
// n floats from N(0, std^2) (malloc'd).
float *test_randn(Rng *r, size_t n, float std);
// Floats in one parameter tensor, and the tensor called name among t[0..n) (the test fails without it).
size_t test_tensor_size(const ParamTensor *t);
const ParamTensor *test_find_param(const ParamTensor *t, int n, const char *name);
// The larger of worst and d, where a NaN wins and stays (fmax would drop it, so a NaN result would
// pass "worst < tol"). Start from 0 and fold every difference in.
double test_worst(double worst, double d);
// ||a - b|| / ||b|| in double.
double test_rel_err(const float *a, const float *b, size_t n);
// Asserts |got - want| <= tol * max(1, |want|) element by element; what names the tensor.
void test_assert_close(const char *what, const float *got, const float *want, size_t n, float tol);
// Asserts |got - want| <= tol * max(1, max |want|): float32 rounding scales with the tensor's magnitude,
// and a small element can be the difference of large terms, so the scale is the tensor's, not the element's.
void test_assert_close_scaled(const char *what, const float *got, const float *want, size_t n, float tol);
// A one-layer geometry of one linear layer (fp32 state and cache) filled by hand: Hk key heads, Hv value
// heads of dk, dv, conv K; the attention fields say Hv heads of dv.
void test_linear_geom(ModelGeometry *g, const char *name, LinearKind kind, int d, int Hk, int Hv, int dk, int dv,
                      int K);

// ---- golden values from the independent PyTorch implementations (tests/reference/golden_*.py) -------
// A golden file holds cases: metadata "CASE.key" and tensors "CASE.name". These assert that the entry
// exists (and that a tensor has the given shape).
const char *test_golden_meta(const SafeTensors *st, const char *cs, const char *key);
int test_golden_int(const SafeTensors *st, const char *cs, const char *key);
const float *test_golden(const SafeTensors *st, const char *cs, const char *name, int ndim, const int64_t *shape);
// Loads tests/golden/file (st_free it after); a missing file fails, naming the script that writes it.
void test_golden_load(SafeTensors *st, const char *file, const char *script);
// A mixer's parameters from the case's tensors of the same names: params + t[i].offset = CASE.<name>.
void test_golden_params(float *params, const SafeTensors *st, const char *cs, const ParamTensor *t, int n);
// Every gradient against the case's CASE.d<name>, with test_assert_close at tol.
void test_golden_dparams(const SafeTensors *st, const char *cs, const float *dparams, const ParamTensor *t, int n,
                         float tol);

// Decodes every sequence of x (B,T,d) one token at a time through m's cache and checks each step's output
// against want (B,T,d) with test_assert_close (tolerance tol), and that the cache never changes size
// (a fixed-state mixer: Lightning, Mamba-2).
void test_decode_fixed_state(const Mixer *m, const float *params, const float *x, const float *want, int B, int T, float tol);
