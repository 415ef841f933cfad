// test_safetensors.c: the writer's bytes are exactly the format's, files round-trip, and every kind of
// malformed file is refused with one line "PATH: problem" instead of a crash.
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "helpers.h"
#include "safetensors.h"

// ---- helpers ------------------------------------------------------------------------------------

// Every test writes into its own fresh temp folder, removed afterwards (also when the test fails).
static char g_dir[256];

static void setup(void) {
    test_tmpdir(g_dir, sizeof g_dir);
    cr_assert(g_dir[0], "cannot create a temp folder");
}

static void teardown(void) {
    DIR *d = opendir(g_dir);
    if (!d) return;
    struct dirent *e;
    char p[600];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            remove(p);   // files, and the empty folder of the failed-rename test
        }
    closedir(d);
    rmdir(g_dir);
}

TestSuite(st_writer, .init = setup, .fini = teardown);
TestSuite(st_roundtrip, .init = setup, .fini = teardown);
TestSuite(st_get, .init = setup, .fini = teardown);
TestSuite(st_malformed, .init = setup, .fini = teardown);

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert(f, "cannot create %s", path);
    if (n) cr_assert_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

// Reads a whole file into a malloc'd buffer; *n gets its size.
static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)size + 1);
    cr_assert_eq(fread(p, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *n = (size_t)size;
    return p;
}

// A safetensors file from a header exactly as given (no padding added) and data_n bytes of data
// (byte i = i), with the 8-byte length prefix = header_len unless len_override is non-zero.
static void write_raw(const char *path, const char *header, size_t data_n, uint64_t len_override) {
    size_t hn = strlen(header);
    uint64_t len = len_override ? len_override : hn;
    unsigned char *buf = malloc(8 + hn + data_n + 1);
    for (int k = 0; k < 8; k++) buf[k] = (unsigned char)(len >> (8 * k));
    memcpy(buf + 8, header, hn);
    for (size_t i = 0; i < data_n; i++) buf[8 + hn + i] = (unsigned char)i;
    write_file(path, buf, 8 + hn + data_n);
    free(buf);
}

// Loading PATH must fail with one line that starts with "PATH: " and contains phrase.
static void expect_load_fails(const char *path, const char *phrase) {
    SafeTensors st;
    char err[1024];
    int rc = st_load(&st, path, err, sizeof err);
    cr_assert_eq(rc, -1, "%s: loaded, expected an error containing '%s'", path, phrase);
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s: ", path);
    cr_expect(strncmp(err, prefix, strlen(prefix)) == 0, "message should start with the path: %s", err);
    cr_expect(strstr(err, phrase) != NULL, "message lacks '%s': %s", phrase, err);
    cr_expect(strchr(err, '\n') == NULL, "message should be one line: %s", err);
    cr_expect(st.tensors == NULL && st.file == NULL && st.n_tensors == 0, "a failed load leaves nothing allocated");
    st_free(&st);   // harmless after a failure
}

// One test per malformed header: the header text, the data buffer size, the phrase of the message.
static void expect_header_fails(const char *header, size_t data_n, const char *phrase) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    write_raw(path, header, data_n, 0);
    expect_load_fails(path, phrase);
}

#define BAD_HEADER(test_name, header, data_n, phrase) \
    Test(st_malformed, test_name) { expect_header_fails(header, data_n, phrase); }

// ---- the writer's bytes -------------------------------------------------------------------------

// A file built by hand from the format description: length 80 (79 bytes of JSON + 1 space of padding,
// so the data starts at 88 = 11 * 8), then two little-endian floats 1.0 and -2.0.
Test(st_writer, exact_bytes_of_a_tiny_file) {
    static const char header[] = "{\"__metadata__\":{\"a\":\"b\"},\"x\":{\"dtype\":\"F32\",\"shape\":[2],"
                                 "\"data_offsets\":[0,8]}} ";
    static const unsigned char len8[8] = {80, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned char data[8] = {0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0};
    cr_assert_eq(strlen(header), 80);
    unsigned char expected[96];
    memcpy(expected, len8, 8);
    memcpy(expected + 8, header, 80);
    memcpy(expected + 88, data, 8);

    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/tiny.safetensors", dir);
    StWriter *w = stw_new();
    float x[2] = {1.0f, -2.0f};
    int64_t shape[1] = {2};
    stw_add_f32(w, "x", x, 1, shape);
    stw_meta(w, "a", "b");
    stw_write(w, path);
    stw_free(w);

    size_t n;
    unsigned char *got = read_file(path, &n);
    cr_assert_eq(n, sizeof expected, "file is %zu bytes, expected %zu", n, sizeof expected);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], expected[i], "byte %zu is 0x%02x, expected 0x%02x", i, got[i], expected[i]);
    free(got);
    cr_expect_eq(test_count_files(dir), 1, "only the file itself, no temp file left");
}

Test(st_writer, no_metadata_and_no_tensors) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/empty.safetensors", dir);
    StWriter *w = stw_new();
    stw_write(w, path);
    stw_free(w);
    size_t n;
    unsigned char *got = read_file(path, &n);
    // "{}" padded to 8
    static const unsigned char expected[16] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    cr_assert_eq(n, 16);
    cr_expect(memcmp(got, expected, 16) == 0, "empty file bytes differ");
    free(got);
    SafeTensors st;
    char err[512];
    cr_assert_eq(st_load(&st, path, err, sizeof err), 0, "%s", err);
    cr_expect_eq(st.n_tensors, 0);
    cr_expect_eq(st.n_meta, 0);
    st_free(&st);
}

// Names of any length pad to a multiple of 8, and the same inputs give the same bytes.
Test(st_writer, padding_and_determinism) {
    const char *dir = g_dir;
    char p1[512], p2[512];
    for (int len = 1; len <= 12; len++) {
        char name[16];
        memset(name, 'a' + len, (size_t)len);
        name[len] = '\0';
        unsigned char *files[2];
        size_t sizes[2];
        for (int k = 0; k < 2; k++) {
            snprintf(k ? p2 : p1, sizeof p1, "%s/f%d_%d.safetensors", dir, len, k);
            StWriter *w = stw_new();
            float v[3] = {0.25f * (float)len, 1.0f, 2.0f};
            int64_t shape[2] = {1, 3};
            stw_meta(w, "len", name);
            stw_add_f32(w, name, v, 2, shape);
            stw_write(w, k ? p2 : p1);
            stw_free(w);
            files[k] = read_file(k ? p2 : p1, &sizes[k]);
        }
        uint64_t n = 0;
        for (int k = 7; k >= 0; k--) n = n << 8 | files[0][k];
        cr_expect_eq(n % 8, 0, "header length %llu is not a multiple of 8", (unsigned long long)n);
        cr_expect_eq(sizes[0], 8 + n + 12, "file size %zu != 8 + %llu + 12", sizes[0], (unsigned long long)n);
        for (uint64_t i = 8; i < 8 + n; i++)   // padding is spaces, after the closing brace
            if (files[0][i] == '}') cr_expect(i == 7 + n || files[0][i + 1] == '}' || files[0][i + 1] == ',' ||
                                              files[0][i + 1] == ' ', "odd byte after '}' at %llu", (unsigned long long)i);
        cr_expect_eq(files[0][7 + n] == ' ' || files[0][7 + n] == '}', 1);
        cr_expect_eq(sizes[0], sizes[1]);
        cr_expect(memcmp(files[0], files[1], sizes[0]) == 0, "same inputs, different bytes (len %d)", len);
        free(files[0]);
        free(files[1]);
    }
}

// ---- round trip ---------------------------------------------------------------------------------

Test(st_roundtrip, every_dtype_shapes_bytes_and_metadata) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", dir);

    float emb[12], after[4];
    for (int i = 0; i < 12; i++) emb[i] = 0.5f * (float)i - 1.0f;
    for (int i = 0; i < 4; i++) after[i] = 1.0f / (float)(i + 3);
    int64_t ids[5] = {-1, 0, 1, INT64_MAX, INT64_MIN};
    uint8_t mask[3] = {1, 0, 255};
    uint16_t half[2] = {0x3c00, 0xc000};     // F16 1.0, -2.0
    uint16_t bf[3] = {0x3f80, 0x4000, 0x0000};
    double dbl[2] = {3.141592653589793, -1e300};
    int32_t scalar[1] = {-7};
    int8_t i8[3] = {-128, 0, 127};
    uint8_t bools[2] = {1, 0};
    struct { const char *name; StDtype dtype; const void *data; int ndim; int64_t shape[3]; size_t bytes; } in[] = {
        {"emb", ST_F32, emb, 2, {3, 4}, sizeof emb},
        {"ids", ST_I64, ids, 1, {5}, sizeof ids},
        {"mask", ST_U8, mask, 1, {3}, sizeof mask},
        {"blk.0.after_u8", ST_F32, after, 2, {2, 2}, sizeof after},   // begin 3 + 48 + 40: not a multiple of 4
        {"half", ST_F16, half, 1, {2}, sizeof half},
        {"bf", ST_BF16, bf, 2, {1, 3}, sizeof bf},
        {"dbl", ST_F64, dbl, 1, {2}, sizeof dbl},
        {"scalar", ST_I32, scalar, 0, {0}, sizeof scalar},
        {"empty", ST_F32, NULL, 2, {0, 4}, 0},
        {"i8", ST_I8, i8, 1, {3}, sizeof i8},
        {"bools", ST_BOOL, bools, 1, {2}, sizeof bools},
    };
    int n_in = (int)(sizeof in / sizeof in[0]);
    const char *note = "tab\there \"quoted\" back\\slash\nnew line \x01 caf\xc3\xa9";
    StWriter *w = stw_new();
    for (int i = 0; i < n_in; i++) stw_add(w, in[i].name, in[i].dtype, in[i].data, in[i].ndim, in[i].shape);
    stw_meta(w, "config", "{\"d_model\": 4}");
    stw_meta(w, "note", note);
    stw_write(w, path);
    stw_free(w);

    SafeTensors st;
    char err[512];
    cr_assert_eq(st_load(&st, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq(st.n_tensors, n_in);
    size_t header_len = 0;
    for (int k = 7; k >= 0; k--) header_len = header_len << 8 | st.file[k];
    cr_expect_eq((uintptr_t)(st.file + 8 + header_len) % 8, 0, "data buffer not 8-byte aligned in memory");
    size_t offset = 0;
    for (int i = 0; i < n_in; i++) {
        const StTensor *t = &st.tensors[i];
        cr_expect_str_eq(t->name, in[i].name, "tensors keep the order they were added in");
        cr_expect_eq(t->dtype, in[i].dtype, "%s dtype", t->name);
        cr_expect_eq(t->ndim, in[i].ndim, "%s ndim", t->name);
        for (int d = 0; d < in[i].ndim; d++) cr_expect_eq(t->shape[d], in[i].shape[d], "%s dim %d", t->name, d);
        cr_expect_eq(t->begin, offset, "%s begin", t->name);
        cr_expect_eq(t->end, offset + in[i].bytes, "%s end", t->name);
        offset += in[i].bytes;
        if (in[i].bytes) cr_expect(memcmp(t->data, in[i].data, in[i].bytes) == 0, "%s bytes differ", t->name);
        cr_expect_eq((uintptr_t)t->data % st_dtype_size(t->dtype), 0, "%s not aligned for its dtype", t->name);
        cr_expect_eq(st_find(&st, in[i].name), t);
    }
    cr_expect_eq(st.file_size, 8 + header_len + offset, "file = 8 + header + exactly the tensor bytes");
    cr_expect_eq(st.tensors[3].begin % 4, 3, "the test must exercise a misaligned F32 tensor");

    int64_t s22[2] = {2, 2};
    const float *a = st_get_f32(&st, "blk.0.after_u8", 2, s22, err, sizeof err);
    cr_assert(a, "%s", err);
    cr_expect_eq((uintptr_t)a % _Alignof(float), 0);
    for (int i = 0; i < 4; i++) cr_expect_eq(a[i], after[i]);
    int64_t s34[2] = {3, 4};
    const float *e = st_get_f32(&st, "emb", 2, s34, err, sizeof err);
    cr_assert(e, "%s", err);
    for (int i = 0; i < 12; i++) cr_expect_eq(e[i], emb[i]);
    int64_t s04[2] = {0, 4};
    cr_expect(st_get_f32(&st, "empty", 2, s04, err, sizeof err) != NULL, "%s", err);

    cr_expect_eq(st.n_meta, 2);
    cr_expect_str_eq(st.meta_keys[0], "config");
    cr_expect_str_eq(st_meta(&st, "config"), "{\"d_model\": 4}");
    cr_expect_str_eq(st_meta(&st, "note"), note);
    cr_expect_null(st_meta(&st, "absent"));
    cr_expect_null(st_find(&st, "__metadata__"));
    cr_expect_null(st_find(&st, "absent"));
    st_free(&st);
    cr_expect_null(st.file);
}

// A file laid out the way Python's json.dumps would write it (spaces after ':' and ',', keys in another
// order, no padding: the data starts at an odd offset in the file) still loads, aligned in memory.
Test(st_roundtrip, foreign_layout_and_unaligned_data_in_the_file) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/py.safetensors", dir);
    const char *header = "{\"w\": {\"data_offsets\": [0, 24], \"dtype\": \"F32\", \"shape\": [2, 3]}, "
                         "\"__metadata__\": {\"format\": \"pt\"}, \"b\": {\"shape\": [3], \"dtype\": \"F32\", "
                         "\"data_offsets\": [24, 36]}}\n";
    size_t hn = strlen(header);
    float v[9];
    for (int i = 0; i < 9; i++) v[i] = (float)i * 1.5f - 3.0f;
    unsigned char buf[512];
    for (int k = 0; k < 8; k++) buf[k] = (unsigned char)((uint64_t)hn >> (8 * k));
    memcpy(buf + 8, header, hn);
    memcpy(buf + 8 + hn, v, sizeof v);
    cr_assert_neq((8 + hn) % 4, 0, "the data should start unaligned in this file");
    write_file(path, buf, 8 + hn + sizeof v);

    SafeTensors st;
    char err[512];
    cr_assert_eq(st_load(&st, path, err, sizeof err), 0, "%s", err);
    int64_t s23[2] = {2, 3}, s3[1] = {3};
    const float *w = st_get_f32(&st, "w", 2, s23, err, sizeof err);
    const float *b = st_get_f32(&st, "b", 1, s3, err, sizeof err);
    cr_assert(w && b, "%s", err);
    cr_expect_eq((uintptr_t)w % 4, 0);
    cr_expect_eq((uintptr_t)b % 4, 0);
    for (int i = 0; i < 6; i++) cr_expect_eq(w[i], v[i]);
    for (int i = 0; i < 3; i++) cr_expect_eq(b[i], v[6 + i]);
    cr_expect_str_eq(st_meta(&st, "format"), "pt");
    cr_expect_str_eq(st.tensors[0].name, "w");
    cr_expect_str_eq(st.tensors[1].name, "b");
    st_free(&st);
}

// ---- st_get_f32 refusals ------------------------------------------------------------------------

Test(st_get, wrong_shape_dtype_or_name) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/g.safetensors", dir);
    float wq[6] = {0};
    int32_t idx[2] = {0};
    int64_t s23[2] = {2, 3}, s2[1] = {2};
    StWriter *w = stw_new();
    stw_add_f32(w, "blk.0.wq", wq, 2, s23);
    stw_add(w, "idx", ST_I32, idx, 1, s2);
    stw_write(w, path);
    stw_free(w);

    SafeTensors st;
    char err[512];
    cr_assert_eq(st_load(&st, path, err, sizeof err), 0, "%s", err);
    char prefix[600];
    snprintf(prefix, sizeof prefix, "%s: ", path);

    int64_t s32[2] = {3, 2};
    cr_expect_null(st_get_f32(&st, "blk.0.wq", 2, s32, err, sizeof err));
    cr_expect(strncmp(err, prefix, strlen(prefix)) == 0, "%s", err);
    cr_expect(strstr(err, "tensor 'blk.0.wq' has shape [2,3], expected [3,2]"), "%s", err);

    int64_t s6[1] = {6};
    cr_expect_null(st_get_f32(&st, "blk.0.wq", 1, s6, err, sizeof err));
    cr_expect(strstr(err, "tensor 'blk.0.wq' has shape [2,3], expected [6]"), "%s", err);

    cr_expect_null(st_get_f32(&st, "idx", 1, s2, err, sizeof err));
    cr_expect(strstr(err, "tensor 'idx' has dtype I32") && strstr(err, "expected F32") && strstr(err, "[2]"), "%s", err);

    cr_expect_null(st_get_f32(&st, "blk.1.wq", 2, s23, err, sizeof err));
    cr_expect(strstr(err, "no tensor 'blk.1.wq'"), "%s", err);
    cr_expect(strchr(err, '\n') == NULL);
    st_free(&st);
}

// ---- malformed files ----------------------------------------------------------------------------

Test(st_malformed, file_shorter_than_8_bytes) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/short.safetensors", dir);
    write_file(path, "\x05\0\0\0\0", 5);
    expect_load_fails(path, "too short");
}

Test(st_malformed, header_length_zero) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/zero.safetensors", dir);
    write_file(path, "\0\0\0\0\0\0\0\0{}", 10);
    expect_load_fails(path, "header length is 0");
}

Test(st_malformed, header_length_absurd) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/absurd.safetensors", dir);
    write_raw(path, "{}", 0, 0xFFFFFFFFFFFFFFF0ull);
    expect_load_fails(path, "header length 18446744073709551600 is absurd");
    write_raw(path, "{}", 0, 100000001ull);
    expect_load_fails(path, "header length 100000001 is absurd");
}

Test(st_malformed, header_length_past_end_of_file) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/past.safetensors", dir);
    write_raw(path, "{}      ", 0, 9);
    expect_load_fails(path, "header length 9 exceeds file size 16");
}

Test(st_malformed, nul_byte_after_object) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/nul.safetensors", dir);
    write_file(path, "\x04\0\0\0\0\0\0\0{} \0", 12);
    expect_load_fails(path, "bytes after the JSON object (byte 3)");
}

Test(st_malformed, missing_file_and_directory) {
    const char *dir = g_dir;
    char path[512];
    snprintf(path, sizeof path, "%s/nope.safetensors", dir);
    expect_load_fails(path, "cannot open: No such file");
    expect_load_fails(dir, "is a folder");
    // a FIFO is refused at once: opening it for reading would wait for a writer forever
    char fifo[512];
    snprintf(fifo, sizeof fifo, "%s/fifo.safetensors", dir);
    unlink(fifo);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    expect_load_fails(fifo, "not a regular file");
    expect_load_fails("/dev/zero", "not a regular file");
    unlink(fifo);
}

BAD_HEADER(not_json, "{\"x\": {\"dtype\": ", 0, "header is not valid JSON")
BAD_HEADER(not_utf8, "{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "not valid UTF-8 (byte 2)")
BAD_HEADER(not_an_object, "[1, 2, 3]", 0, "header is not a JSON object")
BAD_HEADER(string_not_object, "\"{}\"", 0, "header is not a JSON object")
BAD_HEADER(leading_whitespace, " {}", 0, "header does not start with '{'")
BAD_HEADER(bytes_after_object, "{}  x", 0, "bytes after the JSON object (byte 4)")
BAD_HEADER(entry_not_object, "{\"w\": [0, 4]}", 4, "tensor 'w' is not an object")
BAD_HEADER(entry_name_with_newline_stays_one_line, "{\"a\\nb\": 3}", 0, "tensor 'a?b' is not an object")
BAD_HEADER(missing_dtype, "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'w': missing dtype")
BAD_HEADER(unknown_dtype, "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
           "tensor 'w': unknown dtype 'F8_E4M3'")
BAD_HEADER(dtype_not_string, "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
           "tensor 'w': dtype is not a string")
BAD_HEADER(missing_shape, "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'w': missing shape")
BAD_HEADER(shape_not_array, "{\"w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16,
           "tensor 'w': shape is not an array")
BAD_HEADER(shape_negative, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-2],\"data_offsets\":[0,16]}}", 16,
           "tensor 'w': shape is not an array of non-negative integers (dim 1)")
BAD_HEADER(shape_fraction, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 10,
           "tensor 'w': shape is not an array of non-negative integers (dim 0)")
BAD_HEADER(shape_string, "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
           "tensor 'w': shape is not an array of non-negative integers")
BAD_HEADER(shape_too_many_dims, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
           "tensor 'w': shape has 9 dims, at most 8")
BAD_HEADER(shape_overflows, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
           "tensor 'w': shape [4294967296,4294967296] is too large")
BAD_HEADER(missing_offsets, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'w': missing data_offsets")
BAD_HEADER(offsets_one_number, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 4,
           "tensor 'w': data_offsets is not [begin, end]")
BAD_HEADER(offsets_three_numbers, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
           "tensor 'w': data_offsets is not [begin, end]")
BAD_HEADER(offsets_negative, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
           "tensor 'w': data_offsets is not [begin, end]")
BAD_HEADER(offsets_not_array, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"begin\":0}}}", 4,
           "tensor 'w': data_offsets is not [begin, end]")
BAD_HEADER(offsets_begin_after_end, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
           "tensor 'w': data_offsets [8, 4] has begin > end")
BAD_HEADER(offsets_beyond_buffer, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
           "tensor 'w': data_offsets end 8 is beyond the data buffer (4 bytes)")
BAD_HEADER(offsets_huge, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1e300,1e300]}}", 1,
           "tensor 'w': data_offsets is not [begin, end]")
BAD_HEADER(size_mismatch, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
           "tensor 'w': shape [2,3] of F32 needs 24 bytes, data_offsets [0, 20] hold 20")
BAD_HEADER(size_mismatch_dtype, "{\"w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16,
           "tensor 'w': shape [4] of F16 needs 8 bytes")
BAD_HEADER(overlapping_tensors, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
           "tensors 'a' [0, 8) and 'b' [4, 12) overlap")
BAD_HEADER(same_offsets_twice, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                               "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
           "tensors 'a' [0, 4) and 'b' [0, 4) overlap")
BAD_HEADER(empty_tensor_inside_another, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                        "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8,
           "overlap")
BAD_HEADER(gap_between_tensors, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12,
           "bytes [4, 8) of the data buffer belong to no tensor")
BAD_HEADER(gap_at_start, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
           "bytes [0, 4) of the data buffer belong to no tensor")
BAD_HEADER(uncovered_tail, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 7,
           "bytes [4, 7) of the data buffer belong to no tensor")
BAD_HEADER(data_without_tensors, "{}", 3, "bytes [0, 3) of the data buffer belong to no tensor")
BAD_HEADER(metadata_not_object, "{\"__metadata__\":[\"a\",\"b\"]}", 0, "__metadata__ is not an object")
BAD_HEADER(metadata_null, "{\"__metadata__\":null}", 0, "__metadata__ is not an object")
BAD_HEADER(metadata_value_not_string, "{\"__metadata__\":{\"lr\":0.001}}", 0, "__metadata__: value of 'lr' is not a string")
BAD_HEADER(metadata_value_object, "{\"__metadata__\":{\"cfg\":{\"d\":\"4\"}}}", 0,
           "__metadata__: value of 'cfg' is not a string")
BAD_HEADER(metadata_duplicate_key, "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "__metadata__: duplicate key 'k'")
BAD_HEADER(duplicate_tensor_name, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                  "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
           "duplicate tensor name 'w'")
BAD_HEADER(duplicate_metadata_object, "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
           "duplicate tensor name '__metadata__'")
BAD_HEADER(unknown_field, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"offsets\":[0,4]}}", 4,
           "tensor 'w': unknown field 'offsets'")
BAD_HEADER(duplicate_field, "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
           "tensor 'w': duplicate field 'dtype'")

Test(st_malformed, name_longer_than_159_bytes) {
    char name[161], header[400];
    memset(name, 'n', 160);
    name[160] = '\0';
    snprintf(header, sizeof header, "{\"%s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", name);
    expect_header_fails(header, 1, "name is 160 bytes, this reader keeps at most 159");
    // 159 is fine
    name[159] = '\0';
    const char *dir = g_dir;
    char path[512], err[512];
    snprintf(header, sizeof header, "{\"%s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", name);
    snprintf(path, sizeof path, "%s/ok.safetensors", dir);
    write_raw(path, header, 1, 0);
    SafeTensors st;
    cr_expect_eq(st_load(&st, path, err, sizeof err), 0, "%s", err);
    st_free(&st);
}

// A valid file cut at every length, and one with a byte too many: an error each time, never a crash.
Test(st_malformed, truncated_at_every_length) {
    const char *dir = g_dir;
    char path[512], cut[512];
    snprintf(path, sizeof path, "%s/full.safetensors", dir);
    snprintf(cut, sizeof cut, "%s/cut.safetensors", dir);
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint8_t b[3] = {7, 8, 9};
    int64_t s23[2] = {2, 3}, s3[1] = {3};
    StWriter *w = stw_new();
    stw_meta(w, "k", "v");
    stw_add_f32(w, "a", a, 2, s23);
    stw_add(w, "b", ST_U8, b, 1, s3);
    stw_write(w, path);
    stw_free(w);
    size_t n;
    unsigned char *full = read_file(path, &n);
    SafeTensors st;
    char err[512];
    cr_assert_eq(st_load(&st, path, err, sizeof err), 0, "%s", err);
    st_free(&st);
    for (size_t len = 0; len < n; len++) {
        write_file(cut, full, len);
        int rc = st_load(&st, cut, err, sizeof err);
        cr_assert_eq(rc, -1, "cut at %zu of %zu bytes: loaded", len, n);
        cr_expect(strncmp(err, cut, strlen(cut)) == 0 && !strchr(err, '\n'), "cut at %zu: %s", len, err);
    }
    unsigned char *longer = malloc(n + 1);
    memcpy(longer, full, n);
    longer[n] = 0;
    write_file(cut, longer, n + 1);
    expect_load_fails(cut, "belong to no tensor");
    free(longer);
    free(full);
}

// ---- writer failures ----------------------------------------------------------------------------

static void quiet_stderr(void) { cr_redirect_stderr(); }

// The folder of the output is a regular file: a user error, exit 2 (so .fini does not run: atexit).
Test(st_writer, unwritable_path_exits_2, .exit_code = 2, .init = quiet_stderr) {
    atexit(teardown);
    StWriter *w = stw_new();
    float x[1] = {1};
    int64_t s1[1] = {1};
    stw_add_f32(w, "x", x, 1, s1);
    stw_write(w, "/dev/null/w.safetensors");
    cr_assert_fail("stw_write should have exited");
}

// The output path is an existing folder: the temp file is written, the rename fails; the child must
// exit 2 and leave neither the temp file nor anything else behind.
Test(st_writer, failed_rename_leaves_no_file) {
    const char *dir = g_dir;
    char target[512];
    snprintf(target, sizeof target, "%s/out.safetensors", dir);
    cr_assert_eq(mkdir(target, 0777), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(3);
        StWriter *w = stw_new();
        float x[4] = {1, 2, 3, 4};
        int64_t s4[1] = {4};
        stw_add_f32(w, "x", x, 1, s4);
        stw_write(w, target);
        _exit(0);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 2, "child status %d, expected exit 2", status);
    cr_expect_eq(test_has_tmp_files(dir), 0, "a temp file was left behind");
    cr_expect_eq(test_count_files(dir), 1, "only the pre-existing folder may remain");
    cr_expect_eq(test_count_files(target), 0, "nothing may be written into the folder");
}
