// mixer.c: what every mixer shares.
#include "mixer.h"

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
