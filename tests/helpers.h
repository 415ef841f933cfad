// helpers.h: what several test files share: running the project's programs and finding its files.
#pragma once
#include <stddef.h>

#include "mixer.h"

// Folder of the built programs (ATTN_BINDIR, set by `make test-run`) and of the repository (ATTN_ROOT).
const char *test_bindir(void);
const char *test_root(void);
// Runs "BINDIR/PROG ARGS" through sh; captures stdout+stderr (truncated to cap) into out and returns
// the exit status (or -1 if it died on a signal).
int test_run(char *out, size_t cap, const char *prog, const char *args);
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
