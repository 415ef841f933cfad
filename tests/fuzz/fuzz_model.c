// fuzz_model.c: a weights file on arbitrary bytes, read the way the chapters read it (common/train.c's
// train_load_model: the model, its task and stored text, the example's forward) and the way ./infer
// does (common/model.c's model_load), then what a program does with one that loads: the forward on a
// few tokens, every layer's mixing matrix, and cached decode of the same tokens. A bad file must be
// refused with a message; a loaded one must run without a memory error or an internal error (which
// would exit and be reported).
#include "fuzz_common.h"
#include "model.h"
#include "registry.h"
#include "train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[1024];
    ModelInfo info;
    Task task;
    const char *path = fuzz_file(data, size, ".safetensors");
    Model *m = train_load_model(path, mixer_by_name, &info, &task, err, sizeof err);
    if (m) task_free(&task);
    else {
        fuzz_rejected(err);
        m = model_load(path, mixer_by_name, &info, err, sizeof err);
    }
    if (!m) {
        fuzz_rejected(err);
        return 0;
    }
    const ModelGeometry *g = &m->g;
    int T = g->max_seq_len < 6 ? g->max_seq_len : 6, tok[6];
    for (int t = 0; t < T; t++) tok[t] = (7 * t + 1) % g->vocab_size;
    model_forward(m, tok, NULL, 1, T);
    for (int l = 0; l < g->n_layers; l++) {
        float *A = malloc(sizeof(float) * (size_t)model_n_mix_heads(m, l) * T * T + 1);
        if (!A) abort();
        model_mixing_matrix(m, l, A);
        free(A);
    }
    ModelCache *c = model_cache_new(m, T);
    float *logits = malloc(sizeof(float) * (size_t)g->vocab_size);
    if (!logits) abort();
    for (int t = 0; t < T; t++) model_decode(c, logits, tok[t]);
    free(logits);
    model_cache_free(c);
    model_info_free(&info);
    model_free(m);
    return 0;
}
