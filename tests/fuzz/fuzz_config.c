// fuzz_config.c: the Hugging Face config reader (common/hfconfig.c) and the cache formulas
// (common/kvcache.c) on arbitrary text: a config is either refused with one line, or describes a
// geometry whose every byte count is a finite, non-negative number.
#include <math.h>

#include "fuzz_common.h"
#include "hfconfig.h"
#include "kvcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = '\0';
    ModelGeometry g;
    char err[1024];
    int rc = hfconfig_parse(&g, text, "fuzz.json", NULL, err, sizeof err);
    free(text);
    if (rc != 0) {
        fuzz_rejected(err);
        return 0;
    }
    static const long contexts[] = {1, 4096, 1L << 20, 1L << 40};
    double b[] = {kvcache_bytes_per_token(&g), kvcache_fixed_bytes(&g), kvcache_state_bytes(&g), kvcache_conv_bytes(&g)};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (!(b[i] >= 0.0) || !isfinite(b[i])) abort();
    for (size_t i = 0; i < sizeof contexts / sizeof contexts[0]; i++) {
        double t = kvcache_total_bytes(&g, contexts[i], 8);
        if (!(t >= 0.0) || !isfinite(t)) abort();
    }
    for (int l = 0; l < g.n_layers; l++)
        if (kvcache_elems_per_token_layer(&g, l) < 0) abort();
    return 0;
}
