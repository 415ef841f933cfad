// mixer.c: what every mixer shares.
#include "mixer.h"

#include <stdio.h>
#include <string.h>

#include "check.h"

size_t mixer_n_params(const MixerOps *ops, const ModelGeometry *g, int layer) {
    ParamTensor t[32];
    int n = ops->param_tensors(g, layer, t, 32);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t sz = 1;
        for (int k = 0; k < t[i].ndim; k++) sz *= (size_t)t[i].shape[k];
        total += sz;
    }
    return total;
}

int mixer_param_list(ParamTensor *out, int cap, const char *const *names, const int64_t *rows, const int64_t *cols,
                     int n) {
    size_t off = 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (rows[i] == 0) continue;
        CHECK(k < cap, "param_tensors: tensor %s does not fit in %d", names[i], cap);
        memset(&out[k], 0, sizeof out[k]);
        snprintf(out[k].name, sizeof out[k].name, "%s", names[i]);
        out[k].ndim = cols[i] ? 2 : 1;
        out[k].shape[0] = rows[i];
        out[k].shape[1] = cols[i];
        out[k].offset = off;
        off += (size_t)(rows[i] * (cols[i] ? cols[i] : 1));
        k++;
    }
    return k;
}
