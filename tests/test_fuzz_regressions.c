// test_fuzz_regressions.c: the fuzz targets (tests/fuzz) run in the normal build on every input of their
// seed corpus and on every input a fuzzer ever found to crash or exit (tests/fuzz/regressions/TARGET),
// so a fixed bug stays fixed without clang or a fuzzing run.
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define LLVMFuzzerTestOneInput fuzz_safetensors_one
#include "fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_config_one
#include "fuzz/fuzz_config.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_model_one
#include "fuzz/fuzz_model.c"
#undef LLVMFuzzerTestOneInput

// Runs one_input on every file of the folder rel (relative to the repository); returns how many.
static int run_dir(const char *rel, int (*one_input)(const uint8_t *, size_t)) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", test_root(), rel);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)); ) {
        if (e->d_name[0] == '.') continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        cr_assert(f, "cannot read %s", path);
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *data = malloc((size_t)size + 1);
        cr_assert(data && fread(data, 1, (size_t)size, f) == (size_t)size);
        fclose(f);
        cr_expect_eq(one_input(data, (size_t)size), 0, "%s", path);   // a crash or an exit fails the test
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

Test(fuzz_regressions, safetensors) {
    int n = run_dir("tests/fuzz/corpus/safetensors", fuzz_safetensors_one) +
            run_dir("tests/fuzz/regressions/safetensors", fuzz_safetensors_one);
    cr_expect_geq(n, 4);
}

Test(fuzz_regressions, config) {
    int n = run_dir("tests/fuzz/corpus/config", fuzz_config_one) + run_dir("tests/fuzz/regressions/config", fuzz_config_one) +
            run_dir("data/configs", fuzz_config_one);
    cr_expect_geq(n, 20);
}

Test(fuzz_regressions, model, .timeout = 120) {
    setenv("OMP_NUM_THREADS", "1", 1);
    int n = run_dir("tests/fuzz/corpus/model", fuzz_model_one) + run_dir("tests/fuzz/regressions/model", fuzz_model_one);
    cr_expect_geq(n, 10);
}
