// test_bad_inputs.c: the table of bad inputs (tests/bad_inputs.tsv), one test per row: a program, its
// arguments (inputs built for the row from placeholders), the exit code and a fragment of what it must
// print. A row expecting exit 2 also demands exactly one line, starting with the program's name, and a
// working folder left as it was (no output, no temp file). New rows need no code.
//
// Placeholders in the arguments (each expands to a quoted path):
//   {TMP}                     the row's own empty temp folder
//   {R:path}                  a file of the repository (path relative to its root)
//   {EDIT:path|edit;edit...}  a copy of the weights file at path with edits applied:
//                               geo.KEY=JSON   set a geometry field (geo.KEY alone removes it)
//                               meta.KEY=TEXT  set a metadata string (meta.KEY alone removes it)
//                               tensor.NAME[i]=X  set element i of an F32 tensor (nan, inf allowed)
//                               fill.NAME=X    set every element of an F32 tensor
//                               drop.NAME      remove a tensor
//   {FILE:name|text}          a file with text (\n, \t, \\ and \xNN escapes)
//   {FIFO} or {FIFO:name}     a named pipe (opening it for reading would block); outputs are aimed at
//                             these, never at a real device (a broken build run as root would replace it)
#include <cJSON.h>
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "helpers.h"
#include "safetensors.h"

#define MAX_ROWS 256
#define FIELD 2048

typedef struct {
    char name[128], prog[32], args[FIELD], fragment[512];
    int exit_code, line;
} Row;

// Reads row `index` (0-based, comments and blank lines skipped) of the table into r; returns the
// number of rows when index < 0.
static int table_row(int index, Row *r) {
    char path[1024], buf[8192];
    snprintf(path, sizeof path, "%s/tests/bad_inputs.tsv", test_root());
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot read %s", path);
    int n = 0, line = 0;
    while (fgets(buf, sizeof buf, f)) {
        line++;
        buf[strcspn(buf, "\n")] = '\0';
        if (buf[0] == '#' || buf[0] == '\0') continue;
        if (n++ != index) continue;
        char *field[5];
        int k = 0;
        for (char *p = buf; k < 5; k++) {
            field[k] = p;
            char *tab = strchr(p, '\t');
            if (!tab) { k++; break; }
            *tab = '\0';
            p = tab + 1;
        }
        cr_assert_eq(k, 5, "%s:%d: expected 5 tab-separated fields (name, program, args, exit, fragment)", path, line);
        snprintf(r->name, sizeof r->name, "%.*s", (int)sizeof r->name - 1, field[0]);
        snprintf(r->prog, sizeof r->prog, "%.*s", (int)sizeof r->prog - 1, field[1]);
        snprintf(r->args, sizeof r->args, "%.*s", (int)sizeof r->args - 1, field[2]);
        r->exit_code = atoi(field[3]);
        snprintf(r->fragment, sizeof r->fragment, "%.*s", (int)sizeof r->fragment - 1, field[4]);
        r->line = line;
    }
    fclose(f);
    return n;
}

// \n, \t, \\ and \xNN in s, decoded into out (n bytes); returns n.
static size_t unescape(unsigned char *out, const char *s) {
    size_t n = 0;
    for (const char *p = s; *p; p++) {
        if (*p != '\\' || !p[1]) { out[n++] = (unsigned char)*p; continue; }
        p++;
        if (*p == 'n') out[n++] = '\n';
        else if (*p == 't') out[n++] = '\t';
        else if (*p == 'x' && p[1] && p[2]) {
            char hex[3] = {p[1], p[2], 0};
            out[n++] = (unsigned char)strtol(hex, NULL, 16);
            p += 2;
        } else out[n++] = (unsigned char)*p;
    }
    return n;
}

// Applies one edit to the geometry JSON, the metadata or the tensors being copied.
static void apply_geo(cJSON *geo, const char *key, const char *json) {
    cJSON_DeleteItemFromObjectCaseSensitive(geo, key);
    if (!json) return;
    cJSON *v = cJSON_Parse(json);
    cr_assert(v, "edit geo.%s: '%s' is not JSON", key, json);
    cJSON_AddItemToObject(geo, key, v);
}

typedef struct { const char *name; long index; float value; } SetEdit;   // index -1: every element

// Writes dst: the weights file src with the ';'-separated edits applied.
static void edit_weights(const char *dst, const char *src, char *edits) {
    SafeTensors st;
    char err[1024];
    cr_assert_eq(st_load(&st, src, err, sizeof err), 0, "%s", err);
    cJSON *geo = cJSON_Parse(st_meta(&st, "geometry"));
    cr_assert(geo, "%s: no geometry", src);
    const char *meta_set[32][2];
    int n_meta = 0;
    const char *drop[16];
    int n_drop = 0;
    SetEdit set[16];
    int n_set = 0;
    for (char *e = strtok(edits, ";"); e; e = strtok(NULL, ";")) {
        char *eq = strchr(e, '=');
        if (eq) *eq = '\0';
        const char *val = eq ? eq + 1 : NULL;
        if (!strncmp(e, "geo.", 4)) apply_geo(geo, e + 4, val);
        else if (!strncmp(e, "meta.", 5)) { meta_set[n_meta][0] = e + 5; meta_set[n_meta++][1] = val; }
        else if (!strncmp(e, "drop.", 5)) drop[n_drop++] = e + 5;
        else if (!strncmp(e, "fill.", 5) && val) set[n_set++] = (SetEdit){e + 5, -1, strtof(val, NULL)};
        else if (!strncmp(e, "tensor.", 7) && val && strchr(e, '[')) {
            char *br = strchr(e, '[');
            *br = '\0';
            set[n_set++] = (SetEdit){e + 7, atol(br + 1), strtof(val, NULL)};
        } else cr_assert_fail("unknown edit '%s'", e);
    }
    StWriter *w = stw_new();
    for (int i = 0; i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        int dropped = 0;
        for (int k = 0; k < n_drop; k++) dropped |= !strcmp(drop[k], t->name);
        if (dropped) continue;
        size_t nbytes = t->end - t->begin;
        unsigned char *copy = malloc(nbytes + 1);
        memcpy(copy, t->data, nbytes);
        for (int k = 0; k < n_set; k++) {
            if (strcmp(set[k].name, t->name)) continue;
            cr_assert_eq(t->dtype, ST_F32, "edit of %s: not F32", t->name);
            float *f = (float *)copy;
            size_t n = nbytes / 4;
            if (set[k].index < 0) for (size_t j = 0; j < n; j++) f[j] = set[k].value;
            else { cr_assert((size_t)set[k].index < n); f[set[k].index] = set[k].value; }
        }
        stw_add(w, t->name, t->dtype, copy, t->ndim, t->shape);
        free(copy);
    }
    char *g = cJSON_PrintUnformatted(geo);
    for (int i = 0; i < st.n_meta; i++) {
        const char *key = st.meta_keys[i], *value = st.meta_values[i];
        int edited = 0;
        for (int k = 0; k < n_meta; k++) edited |= !strcmp(meta_set[k][0], key);
        if (!edited) stw_meta(w, key, strcmp(key, "geometry") ? value : g);
    }
    for (int k = 0; k < n_meta; k++)
        if (meta_set[k][1]) stw_meta(w, meta_set[k][0], meta_set[k][1]);
    stw_write(w, dst);
    stw_free(w);
    free(g);
    cJSON_Delete(geo);
    st_free(&st);
}

// Expands the placeholders of args into out, building the inputs in dir.
static void expand(char *out, size_t cap, const char *args, const char *dir) {
    size_t n = 0;
    int made = 0;
    for (const char *p = args; *p; ) {
        if (*p != '{') { cr_assert(n + 1 < cap); out[n++] = *p++; continue; }
        // the placeholder runs to its matching brace (JSON inside may nest braces)
        int depth = 0;
        const char *end = p;
        for (; *end; end++) {
            if (*end == '{') depth++;
            if (*end == '}' && --depth == 0) break;
        }
        cr_assert(*end == '}', "unclosed placeholder in: %s", args);
        char ph[FIELD], path[1200];
        snprintf(ph, sizeof ph, "%.*s", (int)(end - p - 1), p + 1);
        char *arg = strchr(ph, ':');
        if (arg) *arg++ = '\0';
        if (!strcmp(ph, "TMP")) {
            snprintf(path, sizeof path, "%s", dir);
        } else if (!strcmp(ph, "R")) {
            snprintf(path, sizeof path, "%s/%s", test_root(), arg);
        } else if (!strcmp(ph, "FIFO")) {
            snprintf(path, sizeof path, "%s/%s", dir, arg ? arg : "fifo");
            cr_assert_eq(mkfifo(path, 0600), 0);
        } else if (!strcmp(ph, "FILE")) {
            char *bar = strchr(arg, '|');
            cr_assert(bar, "{FILE:name|text}");
            *bar = '\0';
            snprintf(path, sizeof path, "%s/%s", dir, arg);
            unsigned char bytes[FIELD];
            size_t len = unescape(bytes, bar + 1);
            FILE *f = fopen(path, "wb");
            cr_assert(f);
            fwrite(bytes, 1, len, f);
            fclose(f);
        } else if (!strcmp(ph, "EDIT")) {
            char *bar = strchr(arg, '|');
            cr_assert(bar, "{EDIT:path|edits}");
            *bar = '\0';
            char src[1200];
            snprintf(src, sizeof src, "%s/%s", test_root(), arg);
            snprintf(path, sizeof path, "%s/edited-%d.safetensors", dir, made++);
            edit_weights(path, src, bar + 1);
        } else {
            cr_assert_fail("unknown placeholder {%s}", ph);
        }
        int w = snprintf(out + n, cap - n, "'%s'", path);
        cr_assert(w > 0 && (size_t)w < cap - n);
        n += (size_t)w;
        p = end + 1;
    }
    out[n] = '\0';
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}

typedef struct { int index; } Case;

ParameterizedTestParameters(bad_inputs, table) {
    static Case cases[MAX_ROWS];
    Row r;
    int n = table_row(-1, &r);
    cr_assert(n > 0 && n <= MAX_ROWS, "tests/bad_inputs.tsv has %d rows (1..%d)", n, MAX_ROWS);
    for (int i = 0; i < n; i++) cases[i].index = i;
    return cr_make_param_array(Case, cases, (size_t)n);
}

ParameterizedTest(Case *c, bad_inputs, table) {
    setenv("OMP_NUM_THREADS", "1", 1);
    Row r;
    table_row(c->index, &r);
    char dir[256], args[4 * FIELD], out[8192];
    test_tmpdir(dir, sizeof dir);
    expand(args, sizeof args, r.args, dir);
    int before = test_count_files(dir);
    int rc = test_run_limited(out, sizeof out, r.prog, args, 120);   // a blocked program fails its row
    const char *where = r.name;
    cr_expect_eq(rc, r.exit_code, "bad_inputs.tsv:%d %s: %s %s: exit %d, expected %d; output: %s", r.line, where, r.prog,
                 args, rc, r.exit_code, out);
    cr_expect(strstr(out, r.fragment) != NULL, "bad_inputs.tsv:%d %s: output lacks '%s': %s", r.line, where,
              r.fragment, out);
    if (r.exit_code == 2) {
        cr_expect_eq(test_count_lines(out), 1, "bad_inputs.tsv:%d %s: expected one line: %s", r.line, where, out);
        cr_expect(strncmp(out, r.prog, strlen(r.prog)) == 0 && out[strlen(r.prog)] == ':',
                  "bad_inputs.tsv:%d %s: the line should start with '%s:': %s", r.line, where, r.prog, out);
        cr_expect_eq(test_count_files(dir), before, "bad_inputs.tsv:%d %s: a failed run changed %s", r.line, where, dir);
        cr_expect(!test_has_tmp_files(dir), "bad_inputs.tsv:%d %s: a temp file was left in %s", r.line, where, dir);
    }
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);   // the row's inputs (edited weights, FIFOs) go
}
