// train: trains a tiny decoder-only model on a synthetic task and writes its weights as safetensors.
//
//   ./train --mixer mha --task recall --layers 2 --heads 1 --steps 1500 --out data/weights/x.safetensors
//
// The weights file carries everything a chapter needs to use the model without retraining: the
// geometry (with the mixer of each layer), the task and its vocabulary, the seed, the final held-out
// loss and accuracy, and the loss curve (tensor "meta.loss_curve"). Same flags, same bytes. The format:
// data/weights/README.md.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli.h"
#include "model.h"
#include "06_swa/swa.h"
#include "registry.h"
#include "05_mla/mla.h"
#include "07_dsa/dsa.h"
#include "11_compressed/compressed.h"
#include "tasks.h"
#include "train.h"

#define CURVE_POINTS 200

// "--loss-plot x.png" -> path "x", png only; ".svg" -> svg only.
static void split_plot_path(const char *arg, char *stem, size_t cap, int *png, int *svg) {
    size_t n = strlen(arg);
    *png = n > 4 && strcmp(arg + n - 4, ".png") == 0;
    *svg = n > 4 && strcmp(arg + n - 4, ".svg") == 0;
    if (!*png && !*svg) die_user("--loss-plot: expected a file name ending in .png or .svg, got '%s'", arg);
    if (n - 4 >= cap) die_user("--loss-plot: path too long");
    memcpy(stem, arg, n - 4);
    stem[n - 4] = '\0';
}

// "LO,HI" with 0 < LO <= HI, or a user error naming the flag.
static void parse_range(const char *flag, const char *arg, double *lo, double *hi) {
    char *end;
    *lo = strtod(arg, &end);
    if (end == arg || *end != ',') die_user("%s: expected LO,HI (two positive numbers), got '%s'", flag, arg);
    const char *second = end + 1;
    *hi = strtod(second, &end);
    if (end == second || *end != '\0' || !(*lo > 0.0) || !(*hi >= *lo) || !isfinite(*hi))
        die_user("%s: expected LO,HI with 0 < LO <= HI, got '%s'", flag, arg);
}

// What a --mixer list asks for, checked once: which mixer each layer gets and what that implies.
typedef enum { KV_NONE, KV_ALL, KV_ONE, KV_CHOICE, KV_V4 } KvRule;   // how --kv-heads is decided
typedef struct {
    const MixerOps *ops[GEOM_MAX_LAYERS];
    int linear[GEOM_MAX_LAYERS];   // 1: a fixed-state layer
    int linear_kind;               // LinearKind of the linear layers (0: none)
    KvRule kv_rule;
    const char *attn_name;         // the attention mixer's name ("" without attention)
    int has_mla, has_dsa, has_gated;
    int has_v4, has_csa;           // DeepSeek V4 layers (csa, hca, v4swa), one family that mixes freely
    char short_name[64];           // "mha", or "gdn,gdn,gdn,gated" as given
} MixerPlan;

static void plan_parse(MixerPlan *p, const char *list, int layers) {
    static const struct { const char *name; int linear_kind; KvRule kv; } known[] = {
        {"mha", 0, KV_ALL}, {"gqa", 0, KV_CHOICE}, {"mqa", 0, KV_ONE}, {"mla", 0, KV_ALL}, {"dsa", 0, KV_ALL},
        {"gated", 0, KV_CHOICE}, {"gdn", LINEAR_GDN, KV_NONE}, {"kda", LINEAR_KDA, KV_NONE},
        {"lightning", LINEAR_LIGHTNING, KV_NONE}, {"mamba2", LINEAR_MAMBA2, KV_NONE},
        {"csa", 0, KV_V4}, {"hca", 0, KV_V4}, {"v4swa", 0, KV_V4},
    };
    memset(p, 0, sizeof *p);
    p->attn_name = "";
    if (!*list) die_user("--mixer: empty list");
    snprintf(p->short_name, sizeof p->short_name, "%s", list);
    char names[GEOM_MAX_LAYERS][16];
    int n = 0;
    for (const char *s = list; ; ) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0 || len >= sizeof names[0]) die_user("--mixer '%s': expected names separated by commas", list);
        if (n >= layers) die_user("--mixer '%s': more names than --layers %d", list, layers);
        memcpy(names[n], s, len);
        names[n++][len] = '\0';
        if (!e) break;
        s = e + 1;
    }
    if (layers % n) die_user("--mixer '%s': %d names do not divide --layers %d (the list repeats over the layers)", list, n, layers);
    for (int l = 0; l < layers; l++) {
        const char *nm = names[l % n];
        size_t k = 0;
        while (k < sizeof known / sizeof known[0] && strcmp(known[k].name, nm)) k++;
        if (k == sizeof known / sizeof known[0] || !mixer_by_name(nm))
            die_user("--mixer: unknown mixer '%s' (mha|gqa|mqa|mla|dsa|gated|gdn|kda|lightning|mamba2|csa|hca|v4swa)", nm);
        p->ops[l] = mixer_by_name(nm);
        if (known[k].linear_kind) {
            if (p->linear_kind && p->linear_kind != known[k].linear_kind)
                die_user("--mixer '%s': one kind of linear layer per model", list);
            p->linear_kind = known[k].linear_kind;
            p->linear[l] = 1;
            continue;
        }
        int v4 = known[k].kv == KV_V4;
        if (*p->attn_name && strcmp(p->attn_name, nm) && !(v4 && p->has_v4))
            die_user("--mixer '%s': one kind of attention layer per model (%s and %s)", list, p->attn_name, nm);
        p->has_v4 |= v4;
        p->has_csa |= !strcmp(nm, "csa");
        p->attn_name = known[k].name;
        p->kv_rule = known[k].kv;
        p->has_mla |= !strcmp(nm, "mla") || !strcmp(nm, "dsa");
        p->has_dsa |= !strcmp(nm, "dsa");
        p->has_gated |= !strcmp(nm, "gated");
    }
    if (p->has_dsa && p->linear_kind) die_user("--mixer '%s': dsa layers do not mix with linear layers here", list);
    if (p->has_v4 && p->linear_kind) die_user("--mixer '%s': DeepSeek V4 layers do not mix with linear layers here", list);
}

// Index of word in "a|b|c", or a user error naming the flag.
static int parse_word(const char *flag, const char *word, const char *choices) {
    int i = 0;
    for (const char *s = choices; ; i++) {
        const char *e = strchr(s, '|');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (strlen(word) == len && !strncmp(word, s, len)) return i;
        if (!e) break;
        s = e + 1;
    }
    die_user("%s: expected %s, got '%s'", flag, choices, word);
    return -1;
}

int main(int argc, char **argv) {
    int task_kind = 0, layers = 2, d_model = 64, heads = 4, kv_heads = 0, d_ff = 0;
    int steps = 1000, batch = 32, seq_len = 0, warmup = -1, pairs = 8, pairs_min = 0, gap = 0, log_y = 0, quiet = 0;
    double lr = 3e-3, wd = 0.1, copy_frac = 0.5, rotary_fraction = 0.0;
    const char *mixer_list = "mha", *corpus = NULL, *out = NULL, *loss_plot = NULL, *pattern = "global";
    const char *gate = NULL, *qk_norm = NULL;
    int bos = 0, curriculum = 0, n_keys = 16, n_values = 16;
    double lr_min_frac = 0.1, slope_scale = 0.0;
    const char *a_init = NULL, *dt_init = NULL;
    int window = 0, topk = 4, index_heads = 4, index_dim = 16, dense_steps = -1;
    int csa_ratio = 4, hca_ratio = 16, head_dim = 0, sinks = 0, kv_shared = 0;
    int linear_heads = 0, linear_key_heads = 0, linear_key_dim = 0, linear_value_dim = 0, conv = -1;
    CliOpt opts[] = {
        {"--mixer", OPT_STRING, &mixer_list, "M[,M...]", "token mixer of each layer, a comma list cycled over the layers (default mha). "
         "Attention: mha (kv heads = heads), gqa, mqa (1 kv head), mla (latent d_model/2), dsa (MLA + a top-k lightning indexer), "
         "gated (Qwen3-Next gated attention). Linear: gdn (Gated DeltaNet), kda (Kimi Delta Attention), lightning (MiniMax-01), "
         "mamba2. DeepSeek V4 (one shared K = V head, a raw window, learned sinks): csa (compressed entries + a top-k "
         "indexer), hca (heavily compressed, all entries), v4swa (the window only); they mix, e.g. v4swa,csa,hca. "
         "Example: gdn,gdn,gdn,gated with --layers 4 is Qwen3-Next's 3:1 hybrid", 0, 0},
        {"--task", OPT_CHOICE, &task_kind, "recall|induction|corpus|backcopy|topics", "what to learn (default recall); backcopy: a bigram stream where a trigger's successor repeats the token before it; topics: a topic token, a stream from that topic's bigram chain, then a copy of its end", 0, 0},
        {"--corpus", OPT_STRING, &corpus, "FILE", "train on this text file, char level (with --task corpus)", 0, 0},
        {"--layers", OPT_INT, &layers, "N", "number of blocks (default 2)", 1, 64},
        {"--d-model", OPT_INT, &d_model, "N", "model width (default 64)", 2, 4096},
        {"--heads", OPT_INT, &heads, "N", "query heads per attention layer (default 4)", 1, 256},
        {"--kv-heads", OPT_INT, &kv_heads, "N", "key/value heads for gqa and gated (default heads/2)", 1, 256},
        {"--pattern", OPT_STRING, &pattern, "P", "layer pattern: global (default), local, R (R local layers per global one), gemma2|gemma3|olmo3|gpt-oss", 0, 0},
        {"--window", OPT_INT, &window, "W", "sliding window of the local layers (keys seen, itself included); for csa/hca/v4swa "
         "the raw window every layer keeps (default 8)", 1, 1 << 20},
        {"--gate", OPT_STRING, &gate, "G", "gated: output gate none|elementwise|headwise (default elementwise)", 0, 0},
        {"--qk-norm", OPT_STRING, &qk_norm, "N", "gated: RMSNorm of q and k heads none|rms|zero (weight 1+w; default zero)", 0, 0},
        {"--rotary-fraction", OPT_DOUBLE, &rotary_fraction, "F", "gated: fraction of head_dim RoPE rotates (default 0.25)", 0.0, 1.0},
        {"--linear-heads", OPT_INT, &linear_heads, "N", "linear layers: value heads (default heads)", 1, 256},
        {"--linear-key-heads", OPT_INT, &linear_key_heads, "N", "linear layers: query/key heads (default linear heads)", 1, 256},
        {"--linear-key-dim", OPT_INT, &linear_key_dim, "N", "linear layers: key head dim, the state's rows (default d_model/heads)", 1, 4096},
        {"--linear-value-dim", OPT_INT, &linear_value_dim, "N", "linear layers: value head dim, the state's columns (default d_model/heads)", 1, 4096},
        {"--a-init", OPT_STRING, &a_init, "LO,HI", "gdn, kda, mamba2: A = exp(A_log) starts uniform in [LO, HI] (default 1,16)", 0, 0},
        {"--dt-init", OPT_STRING, &dt_init, "LO,HI", "gdn, kda, mamba2: dt starts log-uniform in [LO, HI]; the decay per token is exp(-A dt) (default 0.001,0.1)", 0, 0},
        {"--slope-scale", OPT_DOUBLE, &slope_scale, "X", "lightning: MiniMax's fixed decay slopes times X (default 1)", 1e-6, 1e6},
        {"--conv", OPT_INT, &conv, "K", "linear layers: short causal conv width, 0 for none (default 4; lightning has none)", 0, 64},
        {"--d-ff", OPT_INT, &d_ff, "N", "SwiGLU hidden width (default 2 * d_model)", 1, 65536},
        {"--steps", OPT_INT, &steps, "N", "optimizer steps; 0 writes the untrained model (default 1000)", 0, 10000000},
        {"--batch", OPT_INT, &batch, "N", "sequences per step (default 32)", 1, 4096},
        {"--seq-len", OPT_INT, &seq_len, "N", "tokens per sequence (default 32; corpus 64)", 6, 4096},
        {"--lr", OPT_DOUBLE, &lr, "X", "peak learning rate (default 3e-3)", 1e-7, 1.0},
        {"--warmup", OPT_INT, &warmup, "N", "linear warmup steps (default 5% of steps)", 0, 10000000},
        {"--lr-min-frac", OPT_DOUBLE, &lr_min_frac, "X", "the cosine ends at lr * X (default 0.1)", 0.0, 1.0},
        {"--weight-decay", OPT_DOUBLE, &wd, "X", "AdamW weight decay on matrices (default 0.1)", 0.0, 10.0},
        {"--pairs", OPT_INT, &pairs, "N", "recall: key-value pairs per sequence (default 8)", 1, 26},
        {"--keys", OPT_INT, &n_keys, "N", "recall: distinct keys A.. (default 16)", 1, 26},
        {"--values", OPT_INT, &n_values, "N", "recall: distinct values 0..9 a.. (default 16)", 2, 36},
        {"--pairs-min", OPT_INT, &pairs_min, "N", "recall: vary the pair count per sample in [N, --pairs] (default: always --pairs)", 1, 26},
        {"--curriculum", OPT_INT, &curriculum, "N", "recall with --pairs-min: the largest pair count grows from --pairs-min to --pairs over the first N steps (default 0: off)", 0, 10000000},
        {"--gap", OPT_INT, &gap, "N", "recall: filler tokens between the pairs and the queries (default 0)", 0, 4096},
        {"--bos", OPT_FLAG, &bos, NULL, "start every sample with a beginning-of-sequence token <s> (where attention sinks form)", 0, 0},
        {"--copy-frac", OPT_DOUBLE, &copy_frac, "X", "recall: fraction of training samples that are copies (default 0.5)", 0.0, 0.99},
        {"--topk", OPT_INT, &topk, "K", "dsa: keys each query attends to (index_topk, default 4)", 1, 1 << 20},
        {"--index-heads", OPT_INT, &index_heads, "N", "dsa: lightning indexer heads (default 4)", 1, 256},
        {"--index-dim", OPT_INT, &index_dim, "N", "dsa: width of the indexer's heads and shared key (default 16)", 2, 4096},
        {"--dense-steps", OPT_INT, &dense_steps, "N", "dsa: dense warm-up steps before the sparse ones (default steps/4)", 0, 10000000},
        {"--csa-ratio", OPT_INT, &csa_ratio, "M", "csa: tokens per compressed entry (overlapping groups, each entry mixes 2M; default 4, as V4)", 2, 512},
        {"--hca-ratio", OPT_INT, &hca_ratio, "M", "hca: tokens per compressed entry (default 16; V4 uses 128)", 2, 512},
        {"--head-dim", OPT_INT, &head_dim, "N", "csa/hca/v4swa: width of the one shared K = V head and of each query head (default 2 * d_model / heads)", 2, 1024},
        {"--sinks", OPT_FLAG, &sinks, NULL, "mha/gqa/mqa/gated: a learned sink logit per head in the softmax denominator (gpt-oss); "
         "csa/hca/v4swa always have them, as V4", 0, 0},
        {"--kv-shared", OPT_INT, &kv_shared, "N", "mha/gqa/mqa: the last N layers compute only queries and read the K/V of the last "
         "earlier layer of the same kind (Gemma 3n / 4 cross-layer KV sharing)", 1, 255},
        {"--out", OPT_STRING, &out, "FILE", "weights to write (.safetensors), required", 0, 0},
        {"--loss-plot", OPT_STRING, &loss_plot, "FILE", "also draw the loss curve (FILE.png or FILE.svg)", 0, 0},
        {"--log-y", OPT_FLAG, &log_y, NULL, "loss plot on a log y axis", 0, 0},
        {"--quiet", OPT_FLAG, &quiet, NULL, "no progress lines", 0, 0},
    };
    CliSpec spec = {
        .prog = "train",
        .summary = "Train a tiny decoder-only model (token embedding, pre-norm token mixer + SwiGLU blocks, RoPE) on a synthetic task.",
        .usage_extra = "examples:\n  ./train --mixer mha --task recall --heads 1 --steps 1500 --out data/weights/ch02_recall.safetensors\n"
                       "  ./train --mixer gdn,gdn,gdn,gated --layers 4 --task recall --out hybrid.safetensors",
        .flags = CLI_SEED,
        .opts = opts, .n_opts = (int)(sizeof opts / sizeof opts[0]),
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    static const char *task_names[] = {"recall", "induction", "corpus", "backcopy", "topics"};

    // ---- the mixer of each layer ------------------------------------------------------------------
    MixerPlan plan;
    plan_parse(&plan, mixer_list, layers);

    // ---- validate the combination before any work -------------------------------------------------
    if (!out) die_user("missing --out FILE (the .safetensors weights to write)");
    if (corpus && task_kind != TASK_CORPUS) die_user("--corpus: only with --task corpus");
    if (pairs_min && task_kind != TASK_RECALL) die_user("--pairs-min: only with --task recall");
    if (curriculum && !pairs_min) die_user("--curriculum: only with --pairs-min (a range of pair counts)");
    if (curriculum > steps) die_user("--curriculum %d: more than --steps %d", curriculum, steps);
    if (d_model % heads) die_user("--d-model %d is not divisible by --heads %d", d_model, heads);
    if ((d_model / heads) % 2) die_user("head_dim = d_model / heads = %d must be even (RoPE rotates pairs)", d_model / heads);
    if (plan.kv_rule == KV_ALL) {
        if (kv_heads && kv_heads != heads) die_user("--kv-heads %d: %s has one kv head per query head (%d); use --mixer gqa", kv_heads, plan.attn_name, heads);
        kv_heads = heads;
    } else if (plan.kv_rule == KV_ONE) {
        if (kv_heads && kv_heads != 1) die_user("--kv-heads %d: mqa has exactly 1 kv head; use --mixer gqa", kv_heads);
        kv_heads = 1;
    } else if (plan.kv_rule == KV_V4) {
        if (kv_heads && kv_heads != 1) die_user("--kv-heads %d: DeepSeek V4 layers keep exactly 1 shared K = V head", kv_heads);
        kv_heads = 1;
    } else if (plan.kv_rule == KV_CHOICE) {
        if (!kv_heads) kv_heads = heads >= 2 ? heads / 2 : 1;
    } else {
        if (kv_heads) die_user("--kv-heads: the model has no attention layer");
        kv_heads = heads;
    }
    if (heads % kv_heads) die_user("--heads %d is not divisible by --kv-heads %d", heads, kv_heads);
    if (!plan.has_gated && (gate || qk_norm || rotary_fraction > 0.0))
        die_user("%s: only with a gated layer (--mixer gated)", gate ? "--gate" : qk_norm ? "--qk-norm" : "--rotary-fraction");
    if (!plan.linear_kind && (linear_heads || linear_key_heads || linear_key_dim || linear_value_dim || conv >= 0))
        die_user("--linear-*/--conv: only with a linear layer (--mixer gdn|kda|lightning|mamba2)");
    if ((a_init || dt_init) && (!plan.linear_kind || plan.linear_kind == LINEAR_LIGHTNING))
        die_user("%s: only with gdn, kda or mamba2 layers (their decays are learned)", a_init ? "--a-init" : "--dt-init");
    if (slope_scale > 0.0 && plan.linear_kind != LINEAR_LIGHTNING) die_user("--slope-scale: only with lightning layers");
    double a_range[2] = {0, 0}, dt_range[2] = {0, 0};
    if (a_init) parse_range("--a-init", a_init, &a_range[0], &a_range[1]);
    if (dt_init) parse_range("--dt-init", dt_init, &dt_range[0], &dt_range[1]);
    if (!seq_len) seq_len = task_kind == TASK_CORPUS ? 64 : 32;
    int local_per_global;
    if (swa_parse_pattern(pattern, &local_per_global) != 0)
        die_user("--pattern: expected global, local, a ratio R or gemma2|gemma3|olmo3|gpt-oss, got '%s'", pattern);
    if (plan.has_v4 && local_per_global != 0) die_user("--pattern: DeepSeek V4 layers say their own kind (--mixer v4swa,csa,hca)");
    if (local_per_global != 0 && !window) die_user("--pattern %s: local layers need --window W", pattern);
    if (local_per_global == 0 && window && !plan.has_v4) die_user("--window: only with a --pattern that has local layers");
    if (!plan.has_v4 && head_dim) die_user("--head-dim: only with DeepSeek V4 layers (--mixer csa|hca|v4swa)");
    if (sinks && (plan.has_v4 || plan.has_mla || !*plan.attn_name))
        die_user("--sinks: only with mha, gqa, mqa or gated layers%s", plan.has_v4 ? " (V4 layers always have sinks)" : "");
    if (kv_shared && (plan.kv_rule == KV_V4 || plan.has_mla || plan.has_gated || plan.linear_kind))
        die_user("--kv-shared: only with mha, gqa or mqa layers");
    if (kv_shared >= layers) die_user("--kv-shared %d: must be below --layers %d (some layer must produce K/V)", kv_shared, layers);
    if (local_per_global != 0 && plan.linear_kind) die_user("--pattern: sliding windows and linear layers do not mix here");
    if (!d_ff) d_ff = 2 * d_model;
    check_writable("--out", out);
    if (loss_plot) {
        char stem[1024];
        int png, svg;
        split_plot_path(loss_plot, stem, sizeof stem, &png, &svg);
        check_writable("--loss-plot", loss_plot);
    }

    Task task;
    if ((n_keys != 16 || n_values != 16) && task_kind != TASK_RECALL) die_user("--keys/--values: only with --task recall");
    if (task_kind == TASK_RECALL) task_recall(&task, seq_len, pairs, n_keys, n_values, gap, copy_frac);
    else if (task_kind == TASK_INDUCTION) task_induction(&task, seq_len, 26);
    else if (task_kind == TASK_BACKCOPY) task_backcopy(&task, seq_len, 16, 3);
    else if (task_kind == TASK_TOPICS) task_topics(&task, seq_len, 16, 4);
    else task_corpus(&task, seq_len, corpus);
    if (pairs_min) task_recall_vary_pairs(&task, pairs_min);
    if (bos) task_set_bos(&task);

    ModelGeometry g;
    char name[96];
    snprintf(name, sizeof name, "tiny-%s-%s", plan.short_name, task_names[task_kind]);
    geometry_init(&g, name, layers, d_model, heads, kv_heads);
    g.vocab_size = task.vocab_size;
    g.d_ff = d_ff;
    g.max_seq_len = seq_len;
    g.dtype_bytes = 4;   // the tiny models compute and cache in fp32
    if (plan.has_mla) {
        // DeepSeek-V3's proportions at tiny size (chapters/05_mla/mla.h): latent d/2, RoPE key dh/2
        mla_geometry_tiny(&g, layers, d_model, heads);
        snprintf(g.name, sizeof g.name, "%s", name);
        g.q_lora_rank = 0;
        g.vocab_size = task.vocab_size;
        g.d_ff = d_ff;
        g.max_seq_len = seq_len;
        g.dtype_bytes = 4;
    }
    if (plan.has_dsa) {   // chapter 7: DeepSeek-V3.2's lightning indexer on top of that MLA
        g.index_n_heads = index_heads;
        g.index_head_dim = index_dim;
        g.index_topk = topk;
    }
    if (plan.has_gated) {   // chapter 8: Qwen3-Next's gated attention
        g.attn_output_gate = gate ? parse_word("--gate", gate, "none|elementwise|headwise") : GATE_ELEMENTWISE;
        g.qk_norm = qk_norm ? parse_word("--qk-norm", qk_norm, "none|rms|zero") : QK_NORM_ZERO_CENTRED;
        g.partial_rotary_factor = rotary_fraction > 0.0 ? rotary_fraction : 0.25;
        double rot = g.partial_rotary_factor * g.head_dim;
        if (rot != (double)(int)rot || (int)rot % 2)
            die_user("--rotary-fraction %g: %g of head_dim %d must be an even number of dims", g.partial_rotary_factor, rot, g.head_dim);
    }
    if (plan.linear_kind) {   // chapters 9-10: fixed-state layers
        g.linear_kind = plan.linear_kind;
        g.linear_num_value_heads = linear_heads ? linear_heads : heads;
        g.linear_num_key_heads = linear_key_heads ? linear_key_heads : g.linear_num_value_heads;
        g.linear_key_head_dim = linear_key_dim ? linear_key_dim : d_model / heads;
        g.linear_value_head_dim = linear_value_dim ? linear_value_dim : d_model / heads;
        if (plan.linear_kind == LINEAR_LIGHTNING) {
            if (conv > 0) die_user("--conv %d: lightning layers have no short conv", conv);
            g.linear_conv_kernel_dim = 0;
            if (g.linear_num_key_heads != g.linear_num_value_heads || g.linear_key_head_dim != g.linear_value_head_dim)
                die_user("--linear-key-heads/--linear-key-dim: lightning layers have as many key heads and dims as value ones");
        } else {
            g.linear_conv_kernel_dim = conv >= 0 ? conv : 4;
            if (g.linear_conv_kernel_dim < 2)
                die_user("--conv %d: %s layers need a short conv of width >= 2", g.linear_conv_kernel_dim, geometry_linear_name(&g));
            if (plan.linear_kind == LINEAR_KDA && g.linear_num_key_heads != g.linear_num_value_heads)
                die_user("--linear-key-heads %d: KDA has one key head per value head (%d)", g.linear_num_key_heads, g.linear_num_value_heads);
        }
        g.state_dtype_bytes = 4;
        g.linear_a_init_min = a_range[0];
        g.linear_a_init_max = a_range[1];
        g.linear_dt_init_min = dt_range[0];
        g.linear_dt_init_max = dt_range[1];
        g.linear_slope_scale = slope_scale;
        if (g.linear_num_value_heads % g.linear_num_key_heads)
            die_user("--linear-heads %d is not divisible by --linear-key-heads %d", g.linear_num_value_heads, g.linear_num_key_heads);
        for (int l = 0; l < layers; l++)
            if (plan.linear[l]) g.layer_kind[l] = LAYER_LINEAR;
        if (!*plan.attn_name) {   // no attention layer: the head fields describe the linear heads
            g.n_heads = g.n_kv_heads = g.linear_num_value_heads;
            g.head_dim = g.linear_value_head_dim;
        }
    }
    if (plan.has_v4) {   // chapter 11: DeepSeek V4's layers
        if (!head_dim) head_dim = 2 * d_model / heads;
        if (head_dim % 8) die_user("--head-dim %d: must be a multiple of 8 (a quarter of it rotates, in pairs)", head_dim);
        v4_geometry_tiny(&g, layers, d_model, heads, head_dim, window ? window : 8);
        snprintf(g.name, sizeof g.name, "%s", name);
        g.vocab_size = task.vocab_size;
        g.d_ff = d_ff;
        g.max_seq_len = seq_len;
        if (plan.has_csa) {
            g.index_n_heads = index_heads;
            g.index_head_dim = index_dim;
            g.index_topk = topk;
            if (index_dim % 2) die_user("--index-dim %d: must be even (RoPE pairs)", index_dim);
        }
        for (int l = 0; l < layers; l++) {
            if (plan.ops[l] == &csa_mixer) v4_set_layer(&g, l, csa_ratio, 1);
            else if (plan.ops[l] == &hca_mixer) v4_set_layer(&g, l, hca_ratio, 0);
        }
    }
    if (sinks) g.attention_sinks = SINKS_FULL | SINKS_SLIDING;
    g.num_kv_shared_layers = kv_shared;
    if ((plan.has_dsa || plan.has_csa) && dense_steps > steps) die_user("--dense-steps %d: more than --steps %d", dense_steps, steps);
    if (plan.has_dsa && local_per_global != 0) die_user("--pattern: dsa layers are global (no sliding window)");
    if (local_per_global != 0) swa_set_pattern(&g, local_per_global, window);
    if (!strcmp(pattern, "gemma3")) swa_set_gemma3_rope(&g);   // RoPE base 1e4 on local layers, 1e6 on global
    char why[256];
    if (!geometry_validate(&g, why, sizeof why)) die_user("model geometry: %s", why);
    Model *m = model_new(&g, plan.ops, a.seed);

    TrainConfig tc;
    train_config_default(&tc, steps, batch, a.seed);
    tc.lr = lr;
    tc.weight_decay = wd;
    if (warmup >= 0) tc.warmup = warmup;
    tc.min_lr_frac = lr_min_frac;
    tc.curriculum = curriculum;
    tc.progress = !quiet;
    if (!quiet && local_per_global != 0) {
        char pat[GEOM_MAX_LAYERS + 1];
        printf("train: layer pattern %s (L: local, window %d; G: global)\n", swa_pattern_string(pat, sizeof pat, &g), window);
    }
    if (!quiet && *plan.attn_name)
        printf("train: %s, %d layers, d_model %d, query heads %d (kv %d), head_dim %d, d_ff %d, vocab %d, %zu params; "
               "%d steps x %d x %d tokens\n", name, layers, d_model, heads, kv_heads, g.head_dim, d_ff,
               g.vocab_size, m->n_params, steps, batch, seq_len);
    else if (!quiet)
        printf("train: %s, %d layers, d_model %d, no attention layer, d_ff %d, vocab %d, %zu params; %d steps x %d x %d "
               "tokens\n", name, layers, d_model, d_ff, g.vocab_size, m->n_params, steps, batch, seq_len);
    if (!quiet && plan.linear_kind)
        printf("train: %s layers with %d value heads (%d key heads), state %d x %d per head, conv %d\n",
               geometry_linear_name(&g), g.linear_num_value_heads, g.linear_num_key_heads, g.linear_key_head_dim,
               g.linear_value_head_dim, g.linear_conv_kernel_dim);
    TrainResult r;
    if (!quiet && plan.has_v4) {
        char kinds[GEOM_MAX_LAYERS * 8] = "";
        for (int l = 0; l < layers; l++) {
            char one[24];
            snprintf(one, sizeof one, "%s%s", l ? "," : "", plan.ops[l]->name);
            if (g.compress_ratios[l]) snprintf(one + strlen(one), sizeof one - strlen(one), "(m %d)", g.compress_ratios[l]);
            strncat(kinds, one, sizeof kinds - strlen(kinds) - 1);
        }
        printf("train: DeepSeek V4 layers %s, raw window %d, one K = V head of %d, learned sinks%s\n", kinds,
               g.sliding_window, g.head_dim, plan.has_csa ? "; CSA indexer trained toward the attention (KL)" : "");
    }
    if (plan.has_dsa || plan.has_csa) dsa_train(m, &task, &tc, dense_steps >= 0 ? dense_steps : steps / 4, &r);
    else train_run(m, &task, &tc, &r);

    ModelInfo info;
    memset(&info, 0, sizeof info);
    snprintf(info.task, sizeof info.task, "%s", task.name);
    info.task_config = task_config_json(&task);
    info.vocab = task_vocab_json(&task);
    info.seed = a.seed;
    info.steps = steps;
    info.loss = r.eval_loss;
    info.accuracy = r.eval_accuracy;
    info.n_curve = train_loss_curve(&r, CURVE_POINTS, &info.curve);
    info.n_corpus = task_corpus_heldout(&task, &info.corpus);   // so the chapters can draw a --corpus model
    model_save(m, &info, out);

    char sz[32];
    FILE *f = fopen(out, "rb");
    long bytes = 0;
    if (f) { fseek(f, 0, SEEK_END); bytes = ftell(f); fclose(f); }
    printf("train: held-out loss %.4f, accuracy %.2f%% (%d samples); %d steps in %.1f s (%.0f tokens/s)\n",
           r.eval_loss, 100.0 * r.eval_accuracy, tc.eval_samples, steps, r.seconds, r.tokens_per_s);
    printf("train: wrote %s (%s)\n", out, fmt_bytes(sz, sizeof sz, (double)bytes));
    if (loss_plot && info.n_curve > 0) {
        char stem[1024], title[200], sub[300];
        int png, svg;
        split_plot_path(loss_plot, stem, sizeof stem, &png, &svg);
        snprintf(title, sizeof title, "Training loss: %d-layer %s (%d head%s, d_model %d) on %s", layers,
                 plan.short_name, heads, heads == 1 ? "" : "s", d_model, task.name);
        snprintf(sub, sizeof sub, "AdamW, lr %g with warmup and cosine decay, batch %d x %d tokens, seed %llu; "
                 "held-out accuracy %.1f%%", lr, batch, seq_len, (unsigned long long)a.seed, 100.0 * r.eval_accuracy);
        train_plot_loss(info.curve, info.n_curve, title, sub, stem, png, svg, log_y);
        printf("train: wrote %s\n", loss_plot);
    }
    model_info_free(&info);
    train_result_free(&r);
    model_free(m);
    task_free(&task);
    free(a.pos);
    return 0;
}
