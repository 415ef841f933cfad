// infer: runs a trained tiny model on a token sequence and dumps what it computed.
//
//   ./infer data/weights/ch03_recall.safetensors --tokens 2,20,4,24,1,4 [--out run.safetensors]
//
// Prints the top prediction at every position (token names from the file's vocabulary) and, with
// --out, writes a safetensors file with "logits" (T, vocab) and "attn.L" (heads, T, T) for every
// layer L: the matrices the chapters draw, for any input you choose.
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli.h"
#include "model.h"
#include "registry.h"
#include "safetensors.h"

// "3,17,5" -> tokens; every id must be inside the vocabulary. Returns the count.
static int parse_tokens(const char *s, int *out, int cap, int vocab, int max_T) {
    int n = 0;
    for (const char *p = s; ; ) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[32];
        long v;
        if (len == 0 || len >= sizeof item) die_user("--tokens: expected comma-separated token ids like 3,17,5, got '%s'", s);
        memcpy(item, p, len);
        item[len] = '\0';
        if (cli_parse_integer(item, -2147483647L, 2147483647L, &v) != 0)
            die_user("--tokens: expected comma-separated token ids like 3,17,5, got '%s'", s);
        if (v < 0 || v >= vocab)
            die_user("--tokens: token %ld at position %d is outside the vocabulary (ids 0..%d)", v, n, vocab - 1);
        if (n >= cap || n >= max_T)
            die_user("--tokens: more than %d tokens (the model's max_seq_len)", max_T);
        out[n++] = (int)v;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

// Prints s left-aligned in `width` columns, counting UTF-8 characters, not bytes ("␣" is 3 bytes).
static void print_padded(const char *raw, int width) {
    char s[64];
    str_escape(s, sizeof s, raw);   // token names come from the file: no control bytes to the terminal
    int cols = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) cols += (*p & 0xC0) != 0x80;
    printf("%s%*s", s, width > cols ? width - cols : 0, "");
}

int main(int argc, char **argv) {
    const char *tokens_arg = NULL, *out = NULL;
    CliOpt opts[] = {
        {"--tokens", OPT_STRING, &tokens_arg, "IDS", "comma-separated token ids, e.g. 3,17,5 (required)", 0, 0},
        {"--out", OPT_STRING, &out, "FILE", "write logits and attention maps to this .safetensors file", 0, 0},
    };
    CliSpec spec = {
        .prog = "infer",
        .summary = "Run a trained tiny model on a token sequence: top prediction per position, logits and attention maps.",
        .usage_extra = "example:\n  ./infer data/weights/ch03_recall.safetensors --tokens 2,20,4,24,1,4 --out /tmp/run.safetensors",
        .opts = opts, .n_opts = 2,
        .positional = "WEIGHTS", .min_positional = 1,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    if (a.n_pos > 1) die_user("expected one WEIGHTS file, got %d arguments", a.n_pos);
    if (!tokens_arg) die_user("missing --tokens (comma-separated token ids, e.g. --tokens 3,17,5)");
    if (out) check_writable("--out", out);

    char err[1024];
    ModelInfo info;
    Model *m = model_load(a.pos[0], mixer_by_name, &info, err, sizeof err);
    if (!m) die_user("%s", err);
    const ModelGeometry *g = &m->g;
    int V = g->vocab_size;
    int *tok = mallocCheck(sizeof(int) * (size_t)g->max_seq_len);
    int T = parse_tokens(tokens_arg, tok, g->max_seq_len, V, g->max_seq_len);
    model_forward(m, tok, NULL, 1, T);
    for (size_t i = 0; i < (size_t)T * V; i++)
        if (!isfinite(m->logits[i]))
            die_user("%s: the model's logits are not finite on these tokens (weights too large for float32)", a.pos[0]);

    // token names from the file's vocabulary (ids when it has none)
    cJSON *vocab = info.vocab ? cJSON_Parse(info.vocab) : NULL;
    char idbuf[2][16];
    #define NAME(i, slot) (vocab ? cJSON_GetArrayItem(vocab, (i))->valuestring \
                                 : (snprintf(idbuf[slot], sizeof idbuf[slot], "%d", (i)), idbuf[slot]))
    char name[200], task[64], heads[96];
    int n_linear = geometry_count(g, LAYER_LINEAR);
    if (n_linear == g->n_layers)
        snprintf(heads, sizeof heads, "%s value heads %d (key heads %d)", geometry_linear_name(g), g->linear_num_value_heads,
                 g->linear_num_key_heads);
    else
        snprintf(heads, sizeof heads, "query heads %d (kv %d)%s", g->n_heads, g->n_kv_heads, n_linear ? ", with linear layers" : "");
    printf("infer: %s, %d layers, d_model %d, %s, task %s; %d tokens\n", str_escape(name, sizeof name, g->name),
           g->n_layers, g->d_model, heads, info.task[0] ? str_escape(task, sizeof task, info.task) : "?", T);
    printf("  %4s  %-8s  %-10s  %s\n", "pos", "token", "predicted", "p");
    for (int t = 0; t < T; t++) {
        const float *lg = m->logits + (size_t)t * V;
        int best = 0;
        for (int v = 1; v < V; v++)
            if (lg[v] > lg[best]) best = v;
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += exp((double)lg[v] - lg[best]);
        printf("  %4d  ", t);
        print_padded(NAME(tok[t], 0), 8);
        printf("  ");
        print_padded(NAME(best, 1), 10);
        printf("  %.3f\n", 1.0 / sum);
    }

    if (out) {
        StWriter *w = stw_new();
        int64_t ls[2] = {T, V};
        stw_add_f32(w, "logits", m->logits, 2, ls);
        for (int l = 0; l < g->n_layers; l++) {
            int H = model_n_mix_heads(m, l);
            float *A = mallocCheck(sizeof(float) * (size_t)H * T * T);
            model_mixing_matrix(m, l, A);
            char name[32];
            snprintf(name, sizeof name, "attn.%d", l);
            int64_t as[3] = {H, T, T};
            stw_add_f32(w, name, A, 3, as);
            free(A);
        }
        int64_t ts[1] = {T};
        stw_add(w, "tokens", ST_I32, tok, 1, ts);
        stw_meta(w, "weights", a.pos[0]);
        stw_meta(w, "tokens", tokens_arg);
        if (info.vocab) stw_meta(w, "vocab", info.vocab);
        stw_write(w, out);
        stw_free(w);
        printf("infer: wrote %s (logits %d x %d, attn.0..%d)\n", out, T, V, g->n_layers - 1);
    }
    cJSON_Delete(vocab);
    model_info_free(&info);
    model_free(m);
    free(tok);
    free(a.pos);
    return 0;
}
