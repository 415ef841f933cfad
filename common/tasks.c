// tasks.c: the synthetic tasks the tiny models learn (recall, induction, corpus).
#include "tasks.h"
#include "check.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// Seeds of the fixed things every build shares: the grammar corpus and the chapter example sample.
#define CORPUS_SEED 20240601u
#define CORPUS_CHARS 120000
#define CORPUS_MAX_BYTES (256 << 20)   // a character-level tiny model needs far less text than this
#define EXAMPLE_SEED 7u
#define BIGRAM_SEED 0xB16A3ull

static void task_clear(Task *t, TaskKind kind, const char *name, int seq_len) {
    memset(t, 0, sizeof *t);
    t->kind = kind;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->seq_len = seq_len;
}

static void vocab_set(Task *t, int id, const char *s) {
    snprintf(t->vocab[id], TASK_TOKEN_CHARS, "%s", s);
}

// ---- copies (the induction task, and half of recall's training batches) ------------------------
// A sample is [prefix p][segment s][segment s again] over n_symbols tokens starting at token `first`,
// with s drawn in [T/4, T/2] and p = T - 2s, so the copy's offset changes from sample to sample and
// only "look up where this token was and copy its successor" works. Tokens of prefix and segment are
// distinct when there are enough symbols, so the lookup is never ambiguous. Scored on the copy.
static void copy_sample(int *tok, int *tgt, int T, int first, int n_symbols, Rng *rng) {
    int smin = (T + 3) / 4, smax = T / 2;
    int s = smin + (int)rng_below(rng, (uint32_t)(smax - smin + 1));
    int p = T - 2 * s;
    int pool[64];
    for (int i = 0; i < n_symbols; i++) pool[i] = i;
    for (int i = 0; i < p + s; i++) {
        if (p + s <= n_symbols) {
            int j = i + (int)rng_below(rng, (uint32_t)(n_symbols - i));
            int tmp = pool[i]; pool[i] = pool[j]; pool[j] = tmp;
            tok[i] = first + pool[i];
        } else {
            tok[i] = first + (int)rng_below(rng, (uint32_t)n_symbols);
        }
    }
    for (int i = 0; i < s; i++) tok[p + s + i] = tok[p + i];
    for (int i = 0; i < T; i++) tgt[i] = -1;
    // inside the copy, the next token is known: it followed this token the first time
    for (int i = p + s; i < T - 1; i++) tgt[i] = tok[i + 1];
}

// ---- recall -------------------------------------------------------------------------------------
// Vocabulary: 0 '.' (filler), 1 ':' (queries start), then n_keys keys "A".., then n_values values
// "0".."9","a"..  Layout of a sample (T = seq_len):
//   k1 v1 k2 v2 ... kP vP  [gap x '.']  ':'  q1 q2 q3 ... (to the end)
// Every query is the key of a random pair (repeats allowed); its target is that pair's value, so the
// answer can only come from recall, never from "the values not asked yet". Other targets are -1.
//
// Why training mixes in copies: answering needs the induction circuit (layer 1 writes "my previous
// token was k" into the value's position, layer 2 finds that position from the query k). On recall
// alone a 2-layer model sits for thousands of steps on the shortcut "answer some value seen so far"
// (about 25% accuracy); on copies of the same tokens the circuit forms within a few hundred steps,
// and recall reuses it. So a fraction copy_frac of the TRAINING samples are copies of key/value
// tokens; held-out samples are always recall.
enum { RECALL_FILL = 0, RECALL_SEP = 1, RECALL_KEY0 = 2 };
static const char *VALUE_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz";

static int recall_n_queries(int seq_len, int n_pairs, int gap) {
    return seq_len - 2 * n_pairs - gap - 1;
}

// 0 if the knobs make sense, else -1 with the reason in why.
static int recall_check(int seq_len, int n_pairs, int n_keys, int n_values, int gap, double copy_frac,
                        char *why, size_t cap) {
    if (n_keys < 1 || n_keys > 26) { snprintf(why, cap, "recall: n_keys must be in [1, 26], got %d", n_keys); return -1; }
    if (n_values < 2 || n_values > 36) { snprintf(why, cap, "recall: n_values must be in [2, 36], got %d", n_values); return -1; }
    if (n_pairs < 1 || n_pairs > n_keys) {
        snprintf(why, cap, "recall: n_pairs must be in [1, n_keys = %d], got %d", n_keys, n_pairs);
        return -1;
    }
    if (gap < 0) { snprintf(why, cap, "recall: gap must be >= 0, got %d", gap); return -1; }
    if (!(copy_frac >= 0.0 && copy_frac < 1.0)) {
        snprintf(why, cap, "recall: copy_frac must be in [0, 1), got %g", copy_frac);
        return -1;
    }
    if (recall_n_queries(seq_len, n_pairs, gap) < 1) {
        snprintf(why, cap, "recall: %d pairs with gap %d need seq_len >= %d (pairs, gap, ':' and one query), got %d",
                 n_pairs, gap, 2 * n_pairs + gap + 2, seq_len);
        return -1;
    }
    return 0;
}

void task_recall(Task *t, int seq_len, int n_pairs, int n_keys, int n_values, int gap, double copy_frac) {
    char why[256];
    if (recall_check(seq_len, n_pairs, n_keys, n_values, gap, copy_frac, why, sizeof why) != 0) die_user("%s", why);
    task_clear(t, TASK_RECALL, "recall", seq_len);
    t->n_pairs = n_pairs;
    t->n_keys = n_keys;
    t->n_values = n_values;
    t->gap = gap;
    t->copy_frac = copy_frac;
    t->vocab_size = RECALL_KEY0 + n_keys + n_values;
    vocab_set(t, RECALL_FILL, ".");
    vocab_set(t, RECALL_SEP, ":");
    for (int k = 0; k < n_keys; k++) {
        char s[2] = {(char)('A' + k), 0};
        vocab_set(t, RECALL_KEY0 + k, s);
    }
    for (int v = 0; v < n_values; v++) {
        char s[2] = {VALUE_CHARS[v], 0};
        vocab_set(t, RECALL_KEY0 + n_keys + v, s);
    }
}

void task_recall_vary_pairs(Task *t, int n_pairs_min) {
    if (t->kind != TASK_RECALL) die_user("--pairs-min: only with --task recall");
    if (n_pairs_min < 1 || n_pairs_min > t->n_pairs)
        die_user("--pairs-min %d: must be in [1, --pairs %d]", n_pairs_min, t->n_pairs);
    t->n_pairs_min = n_pairs_min;
}

// distinct_first: the first queries ask every pair once, in random order (the chapter example, so
// each pair's lookup shows up in the figure); otherwise every query picks a random pair.
static void recall_sample(const Task *t, Rng *rng, TaskSplit split, int distinct_first, int T, int *tok, int *tgt) {
    int P = t->n_pairs;
    if (split == SPLIT_TRAIN && t->copy_frac > 0.0 && rng_uniform(rng) < t->copy_frac) {
        copy_sample(tok, tgt, T, RECALL_KEY0, t->n_keys + t->n_values, rng);
        return;
    }
    if (t->n_pairs_min > 0 && !distinct_first)   // the chapter example keeps the full count
        P = t->n_pairs_min + (int)rng_below(rng, (uint32_t)(t->n_pairs - t->n_pairs_min + 1));
    int keys[26], vals[26];
    // P distinct keys: a partial Fisher-Yates shuffle of 0..n_keys-1
    int pool[26];
    for (int k = 0; k < t->n_keys; k++) pool[k] = k;
    for (int i = 0; i < P; i++) {
        int j = i + (int)rng_below(rng, (uint32_t)(t->n_keys - i));
        int tmp = pool[i]; pool[i] = pool[j]; pool[j] = tmp;
        keys[i] = pool[i];
        vals[i] = (int)rng_below(rng, (uint32_t)t->n_values);
    }
    int vbase = RECALL_KEY0 + t->n_keys, pos = 0;
    for (int i = 0; i < T; i++) { tok[i] = RECALL_FILL; tgt[i] = -1; }
    for (int i = 0; i < P; i++) {
        tok[pos++] = RECALL_KEY0 + keys[i];
        tok[pos++] = vbase + vals[i];
    }
    pos += t->gap;
    tok[pos++] = RECALL_SEP;
    int nq = recall_n_queries(T, P, t->gap);
    int order[26];
    for (int i = 0; i < P; i++) order[i] = i;
    for (int i = P - 1; i > 0 && distinct_first; i--) {
        int j = (int)rng_below(rng, (uint32_t)(i + 1));
        int tmp = order[i]; order[i] = order[j]; order[j] = tmp;
    }
    for (int q = 0; q < nq; q++) {
        int i = distinct_first && q < P ? order[q] : (int)rng_below(rng, (uint32_t)P);
        tok[pos] = RECALL_KEY0 + keys[i];
        tgt[pos] = vbase + vals[i];          // at the key, predict its value
        pos++;
    }
}

// ---- induction ----------------------------------------------------------------------------------
// Vocabulary: n_symbols letters "a".."z","A".."Z"; every sample is a copy (copy_sample above).
static const char *SYMBOL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

static int induction_check(int seq_len, int n_symbols, char *why, size_t cap) {
    if (n_symbols < 2 || n_symbols > 52) {
        snprintf(why, cap, "induction: n_symbols must be in [2, 52], got %d", n_symbols);
        return -1;
    }
    if (seq_len < 6) { snprintf(why, cap, "induction: seq_len must be >= 6, got %d", seq_len); return -1; }
    return 0;
}

void task_induction(Task *t, int seq_len, int n_symbols) {
    char why[256];
    if (induction_check(seq_len, n_symbols, why, sizeof why) != 0) die_user("%s", why);
    task_clear(t, TASK_INDUCTION, "induction", seq_len);
    t->n_symbols = n_symbols;
    t->vocab_size = n_symbols;
    for (int i = 0; i < n_symbols; i++) {
        char s[2] = {SYMBOL_CHARS[i], 0};
        vocab_set(t, i, s);
    }
}

// ---- backcopy -----------------------------------------------------------------------------------
// Vocabulary: n_triggers triggers "X", "Y", "Z", then n_symbols symbols "a".. The chain's row for token a
// has weights exp(6 u), u uniform from a seed fixed per row, so each token has a few likely successors
// (the best up to 400 times likelier than the worst); triggers appear through the chain like any token.
static const char *TRIGGER_CHARS = "XYZ";

static int backcopy_check(int seq_len, int n_symbols, int n_triggers, char *why, size_t cap) {
    if (n_symbols < 2 || n_symbols > 26) { snprintf(why, cap, "backcopy: n_symbols must be in [2, 26], got %d", n_symbols); return -1; }
    if (n_triggers < 1 || n_triggers > 3) { snprintf(why, cap, "backcopy: n_triggers must be in [1, 3], got %d", n_triggers); return -1; }
    if (seq_len < 4) { snprintf(why, cap, "backcopy: seq_len must be >= 4, got %d", seq_len); return -1; }
    return 0;
}

void task_backcopy(Task *t, int seq_len, int n_symbols, int n_triggers) {
    char why[256];
    if (backcopy_check(seq_len, n_symbols, n_triggers, why, sizeof why) != 0) die_user("%s", why);
    task_clear(t, TASK_BACKCOPY, "backcopy", seq_len);
    t->n_symbols = n_symbols;
    t->n_triggers = n_triggers;
    t->vocab_size = n_triggers + n_symbols;
    for (int i = 0; i < n_triggers; i++) {
        char s[2] = {TRIGGER_CHARS[i], 0};
        vocab_set(t, i, s);
    }
    for (int i = 0; i < n_symbols; i++) {
        char s[2] = {(char)('a' + i), 0};
        vocab_set(t, n_triggers + i, s);
    }
}

int task_is_trigger(const Task *t, int token) {
    return t->kind == TASK_BACKCOPY && token >= 0 && token < t->n_triggers;
}

// A successor of token a drawn from fixed chain number `chain` (0: backcopy's; 1 + k: topic k's).
static int bigram_next(int chain, int a, int n, Rng *rng) {
    float w[32], total = 0.0f;
    Rng row;
    rng_seed(&row, (BIGRAM_SEED + (uint64_t)chain) * 64 + (uint64_t)a);
    for (int b = 0; b < n; b++) total += w[b] = expf(6.0f * rng_uniform(&row));
    float u = rng_uniform(rng) * total;
    for (int b = 0; b < n; b++) {
        u -= w[b];
        if (u < 0.0f) return b;
    }
    return n - 1;
}

static void backcopy_sample(const Task *t, Rng *rng, int T, int *tok, int *tgt) {
    int n = t->n_triggers + t->n_symbols;
    tok[0] = (int)rng_below(rng, (uint32_t)n);
    for (int i = 0; i + 1 < T; i++)
        tok[i + 1] = i >= 1 && tok[i] < t->n_triggers ? tok[i - 1] : bigram_next(0, tok[i], n, rng);
    for (int i = 0; i + 1 < T; i++) tgt[i] = tok[i + 1];
    tgt[T - 1] = -1;
}

// ---- topics -------------------------------------------------------------------------------------
// Vocabulary: n_topics topic tokens "T1".., then n_symbols symbols "a".. A sample of T tokens:
//   topic k | stream: p + s symbols from chain 1 + k | copy of the stream's last s symbols
// with s drawn in [L/4, L/2] (L = T - 1) as in the induction task, so the copy's offset varies. Scored:
// every next token inside the stream (its distribution depends on the topic) and inside the copy.
static int topics_check(int seq_len, int n_symbols, int n_topics, char *why, size_t cap) {
    if (n_symbols < 2 || n_symbols > 26) { snprintf(why, cap, "topics: n_symbols must be in [2, 26], got %d", n_symbols); return -1; }
    if (n_topics < 2 || n_topics > 9) { snprintf(why, cap, "topics: n_topics must be in [2, 9], got %d", n_topics); return -1; }
    if (seq_len < 9) { snprintf(why, cap, "topics: seq_len must be >= 9, got %d", seq_len); return -1; }
    return 0;
}

void task_topics(Task *t, int seq_len, int n_symbols, int n_topics) {
    char why[256];
    if (topics_check(seq_len, n_symbols, n_topics, why, sizeof why) != 0) die_user("%s", why);
    task_clear(t, TASK_TOPICS, "topics", seq_len);
    t->n_symbols = n_symbols;
    t->n_topics = n_topics;
    t->vocab_size = n_topics + n_symbols;
    for (int i = 0; i < n_topics; i++) {
        char s[4] = {'T', (char)('1' + i), 0};
        vocab_set(t, i, s);
    }
    for (int i = 0; i < n_symbols; i++) {
        char s[2] = {(char)('a' + i), 0};
        vocab_set(t, n_topics + i, s);
    }
}

static void topics_sample(const Task *t, Rng *rng, int T, int *tok, int *tgt) {
    int K = t->n_topics, L = T - 1;
    int smin = (L + 3) / 4, smax = L / 2;
    int s = smin + (int)rng_below(rng, (uint32_t)(smax - smin + 1)), p = L - 2 * s;
    int topic = (int)rng_below(rng, (uint32_t)K);
    tok[0] = topic;
    tok[1] = K + (int)rng_below(rng, (uint32_t)t->n_symbols);
    for (int i = 1; i < p + s; i++) tok[i + 1] = K + bigram_next(1 + topic, tok[i] - K, t->n_symbols, rng);
    for (int i = 0; i < s; i++) tok[1 + p + s + i] = tok[1 + p + i];
    for (int i = 0; i < T; i++) tgt[i] = -1;
    for (int i = 1; i < p + s; i++) tgt[i] = tok[i + 1];          // the stream: topic-dependent bigrams
    for (int i = 1 + p + s; i + 1 < T; i++) tgt[i] = tok[i + 1];  // the copy: induction
}

void task_topics_layout(const Task *t, const int *tokens, int *topic, int *copy) {
    *topic = t->bos;
    int T = t->seq_len - t->bos, L = T - 1;
    const int *tok = tokens + t->bos;
    // the copy is the longest s in [L/4, L/2] whose last s tokens repeat the s before them
    *copy = t->seq_len;
    for (int s = L / 2; s >= (L + 3) / 4; s--) {
        int p = L - 2 * s, same = 1;
        for (int i = 0; i < s && same; i++) same = tok[1 + p + s + i] == tok[1 + p + i];
        if (same) { *copy = t->bos + 1 + p + s; break; }
    }
}

// ---- beginning of sequence ----------------------------------------------------------------------

static int bos_check(const Task *t, char *why, size_t cap) {
    if (t->vocab_size >= TASK_MAX_VOCAB) {
        snprintf(why, cap, "bos: the vocabulary is full (%d tokens)", t->vocab_size);
        return -1;
    }
    int inner = t->seq_len - 1;
    if (t->kind == TASK_RECALL && recall_n_queries(inner, t->n_pairs, t->gap) < 1) {
        snprintf(why, cap, "bos: %d pairs with gap %d need seq_len >= %d (the BOS token, pairs, gap, ':' and one query), got %d",
                 t->n_pairs, t->gap, 2 * t->n_pairs + t->gap + 3, t->seq_len);
        return -1;
    }
    if (t->kind == TASK_INDUCTION && inner < 6) {
        snprintf(why, cap, "bos: induction needs seq_len >= 7 with the BOS token, got %d", t->seq_len);
        return -1;
    }
    if (t->kind == TASK_BACKCOPY && inner < 4) {
        snprintf(why, cap, "bos: backcopy needs seq_len >= 5 with the BOS token, got %d", t->seq_len);
        return -1;
    }
    if (t->kind == TASK_TOPICS && inner < 9) {
        snprintf(why, cap, "bos: topics needs seq_len >= 10 with the BOS token, got %d", t->seq_len);
        return -1;
    }
    if (t->kind == TASK_CORPUS && inner < 2) {
        snprintf(why, cap, "bos: corpus needs seq_len >= 3 with the BOS token, got %d", t->seq_len);
        return -1;
    }
    return 0;
}

void task_set_bos(Task *t) {
    char why[256];
    if (t->bos) return;
    if (bos_check(t, why, sizeof why) != 0) die_user("%s", why);
    t->bos = 1;
    vocab_set(t, t->vocab_size++, "<s>");
}

// ---- corpus -------------------------------------------------------------------------------------
// The grammar: sentence = subject verb [object | preposition place] '.', with optional adjectives
// and an occasional "and" joining two clauses. Small enough that a 2-layer model learns spelling
// and some word order; the vocabulary is ' ', '.' and 'a'..'z'.
static const char *DETS[] = {"the", "a", "one", "every"};
static const char *ADJS[] = {"small", "big", "red", "old", "quiet", "happy", "green", "lazy"};
static const char *NOUNS[] = {"cat", "dog", "bird", "fox", "child", "farmer", "queen", "robot", "horse", "mouse"};
static const char *PLACES[] = {"house", "river", "tree", "garden", "hill", "market", "bridge"};
static const char *VERBS_T[] = {"sees", "likes", "finds", "chases", "watches", "helps", "follows"};
static const char *VERBS_I[] = {"sleeps", "runs", "sings", "waits", "walks", "hides"};
static const char *PREPS[] = {"near", "over", "under", "behind", "by"};
#define PICK(r, a) (a[rng_below((r), (uint32_t)(sizeof(a) / sizeof(a[0])))])

static void grammar_append(char *buf, long *n, long cap, const char *w) {
    size_t len = strlen(w);
    if (*n + (long)len + 1 >= cap) return;
    if (*n > 0 && buf[*n - 1] != ' ' && w[0] != '.') buf[(*n)++] = ' ';
    memcpy(buf + *n, w, len);
    *n += (long)len;
}

static void grammar_noun_phrase(Rng *r, char *buf, long *n, long cap, int place) {
    grammar_append(buf, n, cap, PICK(r, DETS));
    if (rng_below(r, 3) == 0) grammar_append(buf, n, cap, PICK(r, ADJS));
    grammar_append(buf, n, cap, place ? PICK(r, PLACES) : PICK(r, NOUNS));
}

static void grammar_clause(Rng *r, char *buf, long *n, long cap) {
    grammar_noun_phrase(r, buf, n, cap, 0);
    switch (rng_below(r, 3)) {
    case 0: grammar_append(buf, n, cap, PICK(r, VERBS_T)); grammar_noun_phrase(r, buf, n, cap, 0); break;
    case 1: grammar_append(buf, n, cap, PICK(r, VERBS_I)); grammar_append(buf, n, cap, PICK(r, PREPS));
            grammar_noun_phrase(r, buf, n, cap, 1); break;
    default: grammar_append(buf, n, cap, PICK(r, VERBS_I)); break;
    }
}

static void byte_name(char *s, int b) {
    if (b == ' ') snprintf(s, TASK_TOKEN_CHARS, "\xe2\x90\xa3");   // U+2423 open box: a visible space
    else if (b == '\n') snprintf(s, TASK_TOKEN_CHARS, "\\n");
    else if (b == '\t') snprintf(s, TASK_TOKEN_CHARS, "\\t");
    else if (b > 32 && b < 127) snprintf(s, TASK_TOKEN_CHARS, "%c", b);
    else snprintf(s, TASK_TOKEN_CHARS, "\\x%02x", b);
}

// Vocabulary from a set of bytes (present[b] != 0), in byte order; fills byte_to_id.
static void corpus_vocab(Task *t, const unsigned char *present, int *byte_to_id) {
    t->vocab_size = 0;
    for (int b = 0; b < 256; b++) {
        byte_to_id[b] = -1;
        if (!present[b]) continue;
        byte_to_id[b] = t->vocab_size;
        byte_name(t->vocab[t->vocab_size], b);
        t->byte_of[t->vocab_size] = (unsigned char)b;
        t->vocab_size++;
    }
}

static void corpus_set_text(Task *t, const unsigned char *bytes, long n) {
    unsigned char present[256] = {0};
    int byte_to_id[256];
    if (!t->source[0] || strcmp(t->source, "grammar") == 0) {
        // fixed vocabulary, whatever the generated text happens to use
        present[' '] = present['.'] = 1;
        for (int c = 'a'; c <= 'z'; c++) present[c] = 1;
    } else {
        for (long i = 0; i < n; i++) present[bytes[i]] = 1;
    }
    corpus_vocab(t, present, byte_to_id);
    t->text = mallocCheck(sizeof(int) * (size_t)(n > 0 ? n : 1));
    for (long i = 0; i < n; i++) t->text[i] = byte_to_id[bytes[i]];
    t->text_len = n;
    t->train_len = n - n / 10;        // the last 10% is held out
}

void task_corpus(Task *t, int seq_len, const char *path) {
    if (seq_len < 2) die_user("corpus: seq_len must be >= 2, got %d", seq_len);
    task_clear(t, TASK_CORPUS, "corpus", seq_len);
    unsigned char *bytes;
    long n = 0;
    if (!path) {
        snprintf(t->source, sizeof t->source, "grammar");
        bytes = mallocCheck(CORPUS_CHARS + 64);
        Rng r;
        rng_seed(&r, CORPUS_SEED);
        char *buf = (char *)bytes;
        while (n < CORPUS_CHARS - 80) {
            grammar_clause(&r, buf, &n, CORPUS_CHARS);
            if (rng_below(&r, 5) == 0) {
                grammar_append(buf, &n, CORPUS_CHARS, "and");
                grammar_clause(&r, buf, &n, CORPUS_CHARS);
            }
            grammar_append(buf, &n, CORPUS_CHARS, ".");
        }
    } else {
        snprintf(t->source, sizeof t->source, "%s", path);
        char why[256];
        size_t size;
        FILE *f = open_regular(path, &size, why, sizeof why);
        if (!f) die_user("--corpus '%s': %s", path, why);
        if (size > CORPUS_MAX_BYTES) {
            fclose(f);
            die_user("--corpus '%s': %zu bytes; at most %d MiB of text", path, size, CORPUS_MAX_BYTES >> 20);
        }
        bytes = mallocCheck(size + 1);
        n = (long)fread(bytes, 1, size, f);
        fclose(f);
        if (n != (long)size) die_user("--corpus '%s': short read (did the file change?)", path);
        // both parts must hold at least one window of seq_len + 1 characters
        if (n / 10 < seq_len + 1)
            die_user("--corpus: '%s' has %ld bytes; seq_len %d needs at least %ld (10%% is held out)",
                     path, n, seq_len, 10L * (seq_len + 1));
    }
    corpus_set_text(t, bytes, n);
    free(bytes);
}

static void corpus_sample(const Task *t, Rng *rng, TaskSplit split, int T, int *tok, int *tgt) {
    CHECK(t->text != NULL, "corpus task '%s' has no text (loaded from metadata only)", t->source);
    long lo = split == SPLIT_TRAIN ? 0 : t->train_len;
    long hi = split == SPLIT_TRAIN ? t->train_len : t->text_len;
    long span = hi - lo - T;          // windows of T + 1 characters
    CHECK(span >= 1, "corpus too short for seq_len %d (a model's stored text has no training part)", T);
    long start = lo + (long)(rng_u64(rng) % (uint64_t)span);
    for (int i = 0; i < T; i++) {
        tok[i] = t->text[start + i];
        tgt[i] = t->text[start + i + 1];
    }
}

// ---- shared -------------------------------------------------------------------------------------

void task_free(Task *t) {
    free(t->text);
    t->text = NULL;
}

// The BOS token takes position 0; the task's own sample fills positions 1.. (T - 1 tokens).
static int bos_prefix(const Task *t, int **tokens, int **targets) {
    if (!t->bos) return t->seq_len;
    (*tokens)[0] = t->vocab_size - 1;
    (*targets)[0] = -1;
    (*tokens)++;
    (*targets)++;
    return t->seq_len - 1;
}

void task_sample(const Task *t, Rng *rng, TaskSplit split, int *tokens, int *targets) {
    int T = bos_prefix(t, &tokens, &targets);
    switch (t->kind) {
    case TASK_RECALL: recall_sample(t, rng, split, 0, T, tokens, targets); break;
    case TASK_INDUCTION: copy_sample(tokens, targets, T, 0, t->n_symbols, rng); break;
    case TASK_CORPUS: corpus_sample(t, rng, split, T, tokens, targets); break;
    case TASK_BACKCOPY: backcopy_sample(t, rng, T, tokens, targets); break;
    case TASK_TOPICS: topics_sample(t, rng, T, tokens, targets); break;
    }
}

void task_batch(const Task *t, Rng *rng, TaskSplit split, int *tokens, int *targets, int B) {
    for (int b = 0; b < B; b++)
        task_sample(t, rng, split, tokens + (long)b * t->seq_len, targets + (long)b * t->seq_len);
}

void task_example(const Task *t, int *tokens, int *targets) {
    Rng r;
    rng_seed(&r, EXAMPLE_SEED);
    if (t->kind == TASK_RECALL) {
        int T = bos_prefix(t, &tokens, &targets);
        recall_sample(t, &r, SPLIT_HELDOUT, 1, T, tokens, targets);
        return;
    }
    if (t->kind != TASK_CORPUS || !t->text) {
        task_sample(t, &r, SPLIT_HELDOUT, tokens, targets);
        return;
    }
    // corpus: the first sentence that starts inside the held-out part
    int T = bos_prefix(t, &tokens, &targets);
    long start = t->train_len;
    int dot = -1;
    for (int i = 0; i < t->vocab_size; i++)
        if (strcmp(t->vocab[i], ".") == 0) dot = i;
    for (long i = t->train_len; i + T + 3 < t->text_len; i++) {
        if (t->text[i] == dot) { start = i + 2; break; }
    }
    if (start + T + 1 > t->text_len) start = t->train_len;
    for (int i = 0; i < T; i++) {
        tokens[i] = t->text[start + i];
        targets[i] = t->text[start + i + 1];
    }
}

const char *task_example_phrase(const Task *t) {
    switch (t->kind) {
    case TASK_RECALL: return "a recall example (pairs, then ':' and queried keys)";
    case TASK_INDUCTION: return "an induction example (a segment, then the same segment again)";
    case TASK_BACKCOPY: return "a backcopy example (a bigram stream; after X, Y or Z the token before it repeats)";
    case TASK_TOPICS: return "a topics example (a topic token, its bigram stream, then a copy of the stream's end)";
    default: return task_is_file_corpus(t) ? "a held-out text example" : "a held-out sentence of the grammar corpus";
    }
}

const char *task_token_str(const Task *t, int token) {
    if (token < 0 || token >= t->vocab_size) return "?";
    return t->vocab[token];
}

// ---- metadata -----------------------------------------------------------------------------------

char *task_config_json(const Task *t) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "task", t->name);
    cJSON_AddNumberToObject(o, "seq_len", t->seq_len);
    if (t->bos) cJSON_AddNumberToObject(o, "bos", 1);
    switch (t->kind) {
    case TASK_RECALL:
        cJSON_AddNumberToObject(o, "n_pairs", t->n_pairs);
        cJSON_AddNumberToObject(o, "n_keys", t->n_keys);
        cJSON_AddNumberToObject(o, "n_values", t->n_values);
        cJSON_AddNumberToObject(o, "gap", t->gap);
        cJSON_AddNumberToObject(o, "copy_frac", t->copy_frac);
        if (t->n_pairs_min > 0) cJSON_AddNumberToObject(o, "n_pairs_min", t->n_pairs_min);
        break;
    case TASK_INDUCTION:
        cJSON_AddNumberToObject(o, "n_symbols", t->n_symbols);
        break;
    case TASK_BACKCOPY:
        cJSON_AddNumberToObject(o, "n_symbols", t->n_symbols);
        cJSON_AddNumberToObject(o, "n_triggers", t->n_triggers);
        break;
    case TASK_TOPICS:
        cJSON_AddNumberToObject(o, "n_symbols", t->n_symbols);
        cJSON_AddNumberToObject(o, "n_topics", t->n_topics);
        break;
    case TASK_CORPUS: {
        cJSON_AddStringToObject(o, "source", t->source);
        if (strcmp(t->source, "grammar") != 0) {
            // the bytes of the vocabulary, so token names survive without the file
            cJSON *bytes = cJSON_AddArrayToObject(o, "bytes");
            for (int i = 0; i < t->vocab_size - t->bos; i++) cJSON_AddItemToArray(bytes, cJSON_CreateNumber(t->byte_of[i]));
        }
        break;
    }
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    CHECK(s != NULL, "cJSON_PrintUnformatted failed");
    return s;
}

int task_is_file_corpus(const Task *t) {
    return t->kind == TASK_CORPUS && strcmp(t->source, "grammar") != 0;
}

long task_corpus_heldout(const Task *t, unsigned char **bytes) {
    *bytes = NULL;
    if (!task_is_file_corpus(t) || !t->text || t->text_len <= t->train_len) return 0;
    long n = t->text_len - t->train_len;
    *bytes = mallocCheck((size_t)n);
    for (long i = 0; i < n; i++) (*bytes)[i] = t->byte_of[t->text[t->train_len + i]];
    return n;
}

int task_corpus_attach(Task *t, const unsigned char *bytes, long n, char *err, size_t cap) {
    int id[256];
    for (int b = 0; b < 256; b++) id[b] = -1;
    for (int i = 0; i < t->vocab_size; i++) id[t->byte_of[i]] = i;
    if (n < (long)t->seq_len + 1) {
        snprintf(err, cap, "the stored corpus text has %ld bytes, fewer than seq_len + 1 = %d", n, t->seq_len + 1);
        return -1;
    }
    int *text = mallocCheck(sizeof(int) * (size_t)n);
    for (long i = 0; i < n; i++) {
        text[i] = id[bytes[i]];
        if (text[i] < 0) {
            snprintf(err, cap, "the stored corpus text has byte 0x%02x at %ld, which is not in its vocabulary", bytes[i], i);
            free(text);
            return -1;
        }
    }
    free(t->text);
    t->text = text;
    t->text_len = n;
    t->train_len = 0;
    return 0;
}

char *task_vocab_json(const Task *t) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < t->vocab_size; i++) cJSON_AddItemToArray(a, cJSON_CreateString(t->vocab[i]));
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    CHECK(s != NULL, "cJSON_PrintUnformatted failed");
    return s;
}

// An integer field of o, or -1 with a message.
static int json_int(const cJSON *o, const char *key, int *out, char *err, size_t cap) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    // range first: converting a double outside int's range to int is undefined
    if (!cJSON_IsNumber(v) || !(fabs(v->valuedouble) <= 2e9) || v->valuedouble != floor(v->valuedouble)) {
        snprintf(err, cap, "task config: '%s' missing or not an integer", key);
        return -1;
    }
    *out = (int)v->valuedouble;
    return 0;
}

int task_from_json(Task *t, const char *json, char *err, size_t cap) {
    cJSON *o = cJSON_Parse(json);
    int rc = -1, seq_len = 0;
    if (!cJSON_IsObject(o)) { snprintf(err, cap, "task config is not a JSON object"); goto done; }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "task");
    if (!cJSON_IsString(name)) { snprintf(err, cap, "task config: 'task' missing"); goto done; }
    if (json_int(o, "seq_len", &seq_len, err, cap)) goto done;
    if (seq_len < 2 || seq_len > 1 << 20) { snprintf(err, cap, "task config: seq_len %d out of range", seq_len); goto done; }
    if (!strcmp(name->valuestring, "recall")) {
        int p, k, v, gap;
        if (json_int(o, "n_pairs", &p, err, cap) || json_int(o, "n_keys", &k, err, cap) ||
            json_int(o, "n_values", &v, err, cap) || json_int(o, "gap", &gap, err, cap)) goto done;
        const cJSON *cf = cJSON_GetObjectItemCaseSensitive(o, "copy_frac");
        double copy_frac = cJSON_IsNumber(cf) ? cf->valuedouble : 0.0;
        if (recall_check(seq_len, p, k, v, gap, copy_frac, err, cap)) goto done;
        task_recall(t, seq_len, p, k, v, gap, copy_frac);
        const cJSON *pm = cJSON_GetObjectItemCaseSensitive(o, "n_pairs_min");
        if (pm) {
            if (!cJSON_IsNumber(pm) || pm->valuedouble < 1 || pm->valuedouble > p ||
                pm->valuedouble != floor(pm->valuedouble)) {
                snprintf(err, cap, "task config: n_pairs_min must be an integer in [1, n_pairs = %d]", p);
                goto done;
            }
            t->n_pairs_min = (int)pm->valuedouble;
        }
    } else if (!strcmp(name->valuestring, "induction")) {
        int s;
        if (json_int(o, "n_symbols", &s, err, cap)) goto done;
        if (induction_check(seq_len, s, err, cap)) goto done;
        task_induction(t, seq_len, s);
    } else if (!strcmp(name->valuestring, "backcopy")) {
        int sy, tr;
        if (json_int(o, "n_symbols", &sy, err, cap) || json_int(o, "n_triggers", &tr, err, cap)) goto done;
        if (backcopy_check(seq_len, sy, tr, err, cap)) goto done;
        task_backcopy(t, seq_len, sy, tr);
    } else if (!strcmp(name->valuestring, "topics")) {
        int sy, tp;
        if (json_int(o, "n_symbols", &sy, err, cap) || json_int(o, "n_topics", &tp, err, cap)) goto done;
        if (topics_check(seq_len, sy, tp, err, cap)) goto done;
        task_topics(t, seq_len, sy, tp);
    } else if (!strcmp(name->valuestring, "corpus")) {
        const cJSON *src = cJSON_GetObjectItemCaseSensitive(o, "source");
        if (!cJSON_IsString(src)) { snprintf(err, cap, "task config: corpus 'source' missing"); goto done; }
        if (!strcmp(src->valuestring, "grammar")) {
            task_corpus(t, seq_len, NULL);
        } else {
            const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(o, "bytes");
            if (!cJSON_IsArray(bytes)) { snprintf(err, cap, "task config: corpus 'bytes' missing"); goto done; }
            task_clear(t, TASK_CORPUS, "corpus", seq_len);
            snprintf(t->source, sizeof t->source, "%s", src->valuestring);
            const cJSON *b;
            unsigned char seen[256] = {0};
            cJSON_ArrayForEach(b, bytes) {
                if (!cJSON_IsNumber(b) || b->valuedouble != floor(b->valuedouble) || b->valuedouble < 0 ||
                    b->valuedouble > 255 || seen[b->valueint] || t->vocab_size >= TASK_MAX_VOCAB) {
                    snprintf(err, cap, "task config: corpus 'bytes' must list distinct bytes 0..255");
                    goto done;
                }
                seen[b->valueint] = 1;
                t->byte_of[t->vocab_size] = (unsigned char)b->valueint;
                byte_name(t->vocab[t->vocab_size++], b->valueint);
            }
            if (t->vocab_size < 1) { snprintf(err, cap, "task config: corpus 'bytes' is empty"); goto done; }
        }
    } else {
        snprintf(err, cap, "task config: unknown task '%s' (expected recall, induction, backcopy, topics or corpus)", name->valuestring);
        goto done;
    }
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(o, "bos");
    if (bos) {
        if (!cJSON_IsNumber(bos) || (bos->valuedouble != 0.0 && bos->valuedouble != 1.0)) {
            snprintf(err, cap, "task config: 'bos' must be 0 or 1");
            goto done;
        }
        if (bos->valuedouble == 1.0) {
            if (bos_check(t, err, cap)) { task_free(t); goto done; }
            t->bos = 1;
            vocab_set(t, t->vocab_size++, "<s>");
        }
    }
    rc = 0;
done:
    cJSON_Delete(o);
    return rc;
}
