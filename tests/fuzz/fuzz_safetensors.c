// fuzz_safetensors.c: the safetensors reader (common/safetensors.c) on arbitrary bytes: every input
// is either a file whose every tensor lies inside it with its exact size, or one line of error.
#include "fuzz_common.h"
#include "safetensors.h"

static volatile unsigned fuzz_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    SafeTensors st;
    char err[1024];
    if (st_load(&st, fuzz_file(data, size, ".safetensors"), err, sizeof err) != 0) {
        fuzz_rejected(err);
        return 0;
    }
    unsigned sum = 0;   // touch every byte the reader says a tensor has (ASan checks each read)
    for (int i = 0; i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        if (t->end < t->begin || (t->end > t->begin && !t->data)) abort();
        for (size_t k = 0; k < t->end - t->begin; k++) sum += t->data[k];
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (st_get_f32(&st, t->name, t->ndim, shape, err, sizeof err) == NULL) fuzz_rejected(err);
    }
    for (int i = 0; i < st.n_meta; i++)
        if (st_meta(&st, st.meta_keys[i]) == NULL) abort();
    st_free(&st);
    fuzz_sink = sum;
    return 0;
}
