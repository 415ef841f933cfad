// safetensors.c: a strict reader and a byte-deterministic writer of the safetensors format.
//
// The reader trusts nothing in the file: every field of the header is checked before a pointer into
// the data buffer is handed out, and every failure is one line "PATH: problem" (never a crash), so a
// learner who points a chapter at the wrong file is told what is wrong with it.
#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"

// Tensor data is little-endian in the file and the reader hands out pointers into it unconverted.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

// The reference (Rust) implementation refuses headers above this size; so do we.
#define ST_MAX_HEADER 100000000ull
// Largest integer a JSON number can carry exactly (cJSON keeps numbers as doubles).
#define ST_MAX_JSON_INT 9007199254740992.0

static const char *const dtype_names[] = {"F32", "F16", "BF16", "F64", "I32", "I64", "U8", "I8", "BOOL"};
static const size_t dtype_sizes[] = {4, 2, 2, 8, 4, 8, 1, 1, 1};
#define N_DTYPES (int)(sizeof dtype_sizes / sizeof dtype_sizes[0])

size_t st_dtype_size(StDtype d) {
    CHECK((unsigned)d < (unsigned)N_DTYPES, "unknown StDtype %d", (int)d);
    return dtype_sizes[d];
}

const char *st_dtype_name(StDtype d) {
    CHECK((unsigned)d < (unsigned)N_DTYPES, "unknown StDtype %d", (int)d);
    return dtype_names[d];
}

// ---- small helpers ------------------------------------------------------------------------------

// Writes "PATH: message" into err and returns -1, so a check reads `return fail(...)`.
__attribute__((format(printf, 4, 5)))
static int fail(char *err, size_t cap, const char *path, const char *fmt, ...) {
    if (!err || !cap) return -1;
    int n = snprintf(err, cap, "%s: ", path);
    if (n >= 0 && (size_t)n < cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, cap - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

// A name as it may appear inside a one-line message: control bytes become '?', long names are cut.
static const char *shown(char *buf, size_t cap, const char *s) {
    size_t n = 0;
    for (; s[n] && n + 1 < cap; n++) buf[n] = ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) ? '?' : s[n];
    buf[n] = '\0';
    if (s[n] && cap > 4) strcpy(buf + cap - 4, "...");
    return buf;
}

// "[16,32]"
static const char *shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, i ? "," : "", shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

// Index of the first byte of s[0..n) that breaks UTF-8 (overlong forms and surrogates included), or n.
static size_t utf8_check(const unsigned char *s, size_t n) {
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
        if (!len || len > n - i) return i;
        uint32_t cp = len == 1 ? c : c & (0x7Fu >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

// A JSON number that is an exact non-negative integer.
static int json_uint(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= ST_MAX_JSON_INT)) return 0;   // also rejects NaN and inf
    uint64_t u = (uint64_t)v;
    if ((double)u != v) return 0;
    *out = u;
    return 1;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// The first key (in sorted order) that appears twice among the members of obj, or NULL.
// cJSON keeps duplicate keys; sorting finds them in n log n even in a hostile 100 MB header.
static const char *find_duplicate_key(const cJSON *obj) {
    int n = cJSON_GetArraySize(obj), i = 0;
    if (n < 2) return NULL;
    const char **keys = mallocCheck((size_t)n * sizeof *keys);
    for (const cJSON *c = obj->child; c; c = c->next) keys[i++] = c->string;
    qsort(keys, (size_t)n, sizeof *keys, cmp_str_ptr);
    const char *dup = NULL;
    for (i = 1; i < n && !dup; i++)
        if (!strcmp(keys[i - 1], keys[i])) dup = keys[i];
    free(keys);
    return dup;
}

// ---- reader -------------------------------------------------------------------------------------

// One header entry {"dtype": ..., "shape": [...], "data_offsets": [begin, end]} into t, checked
// against the size of the data buffer.
static int parse_tensor(StTensor *t, const cJSON *entry, size_t buffer_size, const char *path,
                        char *err, size_t cap) {
    char nm[200], s1[200], s2[200];
    shown(nm, sizeof nm, entry->string);
    size_t name_len = strlen(entry->string);
    if (name_len >= sizeof t->name)
        return fail(err, cap, path, "tensor '%s': name is %zu bytes, this reader keeps at most %zu",
                    nm, name_len, sizeof t->name - 1);
    memcpy(t->name, entry->string, name_len + 1);
    if (!cJSON_IsObject(entry)) return fail(err, cap, path, "tensor '%s' is not an object", nm);

    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (const cJSON *f = entry->child; f; f = f->next) {
        const cJSON **slot = !strcmp(f->string, "dtype") ? &dtype
                           : !strcmp(f->string, "shape") ? &shape
                           : !strcmp(f->string, "data_offsets") ? &offsets : NULL;
        if (!slot)
            return fail(err, cap, path, "tensor '%s': unknown field '%s' (expected dtype, shape, data_offsets)",
                        nm, shown(s1, sizeof s1, f->string));
        if (*slot) return fail(err, cap, path, "tensor '%s': duplicate field '%s'", nm, f->string);
        *slot = f;
    }

    if (!dtype) return fail(err, cap, path, "tensor '%s': missing dtype", nm);
    if (!cJSON_IsString(dtype)) return fail(err, cap, path, "tensor '%s': dtype is not a string", nm);
    int d = -1;
    for (int k = 0; k < N_DTYPES; k++)
        if (!strcmp(dtype->valuestring, dtype_names[k])) d = k;
    if (d < 0)
        return fail(err, cap, path, "tensor '%s': unknown dtype '%s' (expected one of F32 F16 BF16 F64 I32 I64 U8 I8 BOOL)",
                    nm, shown(s1, sizeof s1, dtype->valuestring));
    t->dtype = (StDtype)d;

    if (!shape) return fail(err, cap, path, "tensor '%s': missing shape", nm);
    if (!cJSON_IsArray(shape))
        return fail(err, cap, path, "tensor '%s': shape is not an array of non-negative integers", nm);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return fail(err, cap, path, "tensor '%s': shape has %d dims, at most %d are supported", nm, ndim, ST_MAX_DIMS);
    t->ndim = ndim;
    int i = 0, has_zero = 0;
    for (const cJSON *s = shape->child; s; s = s->next, i++) {
        uint64_t v;
        if (!json_uint(s, &v))
            return fail(err, cap, path, "tensor '%s': shape is not an array of non-negative integers (dim %d)", nm, i);
        t->shape[i] = (int64_t)v;
        has_zero |= v == 0;
    }
    // bytes = product of dims * element size, refusing anything that overflows 64 bits
    uint64_t bytes = dtype_sizes[d];
    for (i = 0; i < ndim && !has_zero; i++)
        if (__builtin_mul_overflow(bytes, (uint64_t)t->shape[i], &bytes))
            return fail(err, cap, path, "tensor '%s': shape %s is too large", nm,
                        shape_str(s1, sizeof s1, ndim, t->shape));
    if (has_zero) bytes = 0;

    if (!offsets) return fail(err, cap, path, "tensor '%s': missing data_offsets", nm);
    uint64_t begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 || !json_uint(offsets->child, &begin) ||
        !json_uint(offsets->child->next, &end))
        return fail(err, cap, path, "tensor '%s': data_offsets is not [begin, end] with non-negative integers", nm);
    if (begin > end)
        return fail(err, cap, path, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] has begin > end",
                    nm, begin, end);
    if (end > buffer_size)
        return fail(err, cap, path, "tensor '%s': data_offsets end %" PRIu64 " is beyond the data buffer (%zu bytes)",
                    nm, end, buffer_size);
    if (bytes != end - begin)
        return fail(err, cap, path, "tensor '%s': shape %s of %s needs %" PRIu64 " bytes, data_offsets [%" PRIu64
                    ", %" PRIu64 "] hold %" PRIu64, nm, shape_str(s2, sizeof s2, ndim, t->shape), dtype_names[d],
                    bytes, begin, end, end - begin);
    t->begin = (size_t)begin;
    t->end = (size_t)end;
    return 0;
}

static int parse_metadata(SafeTensors *st, const cJSON *m, const char *path, char *err, size_t cap) {
    char s1[200];
    if (!cJSON_IsObject(m)) return fail(err, cap, path, "__metadata__ is not an object of string values");
    const char *dup = find_duplicate_key(m);
    if (dup) return fail(err, cap, path, "__metadata__: duplicate key '%s'", shown(s1, sizeof s1, dup));
    int n = cJSON_GetArraySize(m);
    st->meta_keys = callocCheck((size_t)n, sizeof(char *));
    st->meta_values = callocCheck((size_t)n, sizeof(char *));
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            return fail(err, cap, path, "__metadata__: value of '%s' is not a string", shown(s1, sizeof s1, c->string));
        size_t kn = strlen(c->string) + 1, vn = strlen(c->valuestring) + 1;
        st->meta_keys[st->n_meta] = memcpy(mallocCheck(kn), c->string, kn);
        st->meta_values[st->n_meta] = memcpy(mallocCheck(vn), c->valuestring, vn);
        st->n_meta++;
    }
    return 0;
}

// Orders tensors by where their bytes start (then end, then position in the header).
static int cmp_tensor_offsets(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x < y ? -1 : x > y;
}

// The spec's layout rule: sorted by offset, each tensor starts exactly where the previous one ended and
// the last one ends at the end of the buffer (no overlaps, no holes).
static int check_coverage(const SafeTensors *st, size_t buffer_size, const char *path, char *err, size_t cap) {
    char s1[200], s2[200];
    const StTensor **order = mallocCheck((size_t)(st->n_tensors ? st->n_tensors : 1) * sizeof *order);
    for (int i = 0; i < st->n_tensors; i++) order[i] = &st->tensors[i];
    qsort(order, (size_t)st->n_tensors, sizeof *order, cmp_tensor_offsets);
    size_t pos = 0;
    int rc = 0;
    for (int i = 0; i < st->n_tensors && !rc; i++) {
        const StTensor *t = order[i];
        if (t->begin < pos)
            rc = fail(err, cap, path, "tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap",
                      shown(s1, sizeof s1, order[i - 1]->name), order[i - 1]->begin, order[i - 1]->end,
                      shown(s2, sizeof s2, t->name), t->begin, t->end);
        else if (t->begin > pos)
            rc = fail(err, cap, path, "bytes [%zu, %zu) of the data buffer belong to no tensor (the buffer must be fully covered)",
                      pos, t->begin);
        pos = t->end;
    }
    if (!rc && pos != buffer_size)
        rc = fail(err, cap, path, "bytes [%zu, %zu) of the data buffer belong to no tensor (the buffer must be fully covered)",
                  pos, buffer_size);
    free(order);
    return rc;
}

// Validates the header of st->file (already read) and fills the tensor table and metadata.
static int parse_header(SafeTensors *st, size_t header_len, const char *path, char *err, size_t cap) {
    char s1[200];
    const char *hdr = (const char *)st->file + 8;
    size_t bad = utf8_check((const unsigned char *)hdr, header_len);
    if (bad < header_len) return fail(err, cap, path, "header is not valid UTF-8 (byte %zu)", bad);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, header_len, &end, 0);
    if (!root)
        return fail(err, cap, path, "header is not valid JSON (error near byte %td of %zu)",
                    end ? end - hdr : (ptrdiff_t)0, header_len);
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = fail(err, cap, path, "header is not a JSON object");
        goto done;
    }
    if (hdr[0] != '{') {
        rc = fail(err, cap, path, "header does not start with '{'");
        goto done;
    }
    // after the object only the writer's padding may follow
    for (const char *p = end; p < hdr + header_len; p++)
        if (!strchr(" \t\r\n", *p) || !*p) {
            rc = fail(err, cap, path, "header has bytes after the JSON object (byte %td)", p - hdr);
            goto done;
        }
    const char *dup = find_duplicate_key(root);
    if (dup) {
        rc = fail(err, cap, path, "duplicate tensor name '%s'", shown(s1, sizeof s1, dup));
        goto done;
    }

    size_t buffer_size = st->file_size - 8 - header_len;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
    if (meta && (rc = parse_metadata(st, meta, path, err, cap))) goto done;
    int n = cJSON_GetArraySize(root) - (meta != NULL);
    st->tensors = callocCheck((size_t)n, sizeof *st->tensors);
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e == meta) continue;
        StTensor *t = &st->tensors[st->n_tensors++];
        if ((rc = parse_tensor(t, e, buffer_size, path, err, cap))) goto done;
    }
    if ((rc = check_coverage(st, buffer_size, path, err, cap))) goto done;

    // The data buffer is 8-byte aligned (see st_load), so a tensor is aligned for its element type
    // unless its offset is not a multiple of the element size; give those an aligned copy.
    const unsigned char *buffer = st->file + 8 + header_len;
    size_t copy_bytes = 0;
    for (int i = 0; i < n; i++) {
        StTensor *t = &st->tensors[i];
        t->data = buffer + t->begin;
        if (t->begin % dtype_sizes[t->dtype]) copy_bytes += (t->end - t->begin + 7) / 8 * 8;
    }
    if (copy_bytes) {
        unsigned char *dst = st->copies = mallocCheck(copy_bytes);
        for (int i = 0; i < n; i++) {
            StTensor *t = &st->tensors[i];
            if (t->begin % dtype_sizes[t->dtype] == 0) continue;
            memcpy(dst, t->data, t->end - t->begin);
            t->data = dst;
            dst += (t->end - t->begin + 7) / 8 * 8;
        }
    }
done:
    cJSON_Delete(root);
    return rc;
}

int st_load(SafeTensors *st, const char *path, char *err, size_t cap) {
    memset(st, 0, sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    if (err && cap) err[0] = '\0';
    char why[256];
    size_t size;
    FILE *f = open_regular(path, &size, why, sizeof why);
    if (!f) return fail(err, cap, path, "%s", why);
    unsigned char len8[8];
    if (size < 8) {
        fclose(f);
        return fail(err, cap, path, "file is %zu bytes, too short for the 8-byte header length", size);
    }
    if (fread(len8, 1, 8, f) != 8) {
        fclose(f);
        return fail(err, cap, path, "read error");
    }
    uint64_t header_len = 0;
    for (int k = 7; k >= 0; k--) header_len = header_len << 8 | len8[k];
    int rc = 0;
    if (header_len == 0)
        rc = fail(err, cap, path, "header length is 0");
    else if (header_len > ST_MAX_HEADER)
        rc = fail(err, cap, path, "header length %" PRIu64 " is absurd (limit %llu)", header_len, ST_MAX_HEADER);
    else if (header_len > size - 8)
        rc = fail(err, cap, path, "header length %" PRIu64 " exceeds file size %zu", header_len, size);
    if (rc) {
        fclose(f);
        return rc;
    }

    // Place the file so its data buffer (offset 8 + header_len) starts on an 8-byte boundary: then
    // every tensor written by an aligning writer (PyTorch's) can be read in place as float/double.
    size_t pad = (size_t)((8 - (8 + header_len) % 8) % 8);
    unsigned char *alloc = mallocCheck(pad + size + 1);
    st->file_alloc = alloc;
    st->file = alloc + pad;
    st->file_size = size;
    memcpy(st->file, len8, 8);
    size_t got = fread(st->file + 8, 1, size - 8, f);
    fclose(f);
    if (got != size - 8) {
        st_free(st);
        return fail(err, cap, path, "read error (file shrank while reading?)");
    }
    st->file[size] = '\0';   // a terminator after the last byte, so no parser can walk off the end
    if (parse_header(st, (size_t)header_len, path, err, cap)) {
        st_free(st);
        return -1;
    }
    return 0;
}

void st_free(SafeTensors *st) {
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->meta_keys);
    free(st->meta_values);
    free(st->tensors);
    free(st->copies);
    free(st->file_alloc);
    memset(st, 0, sizeof *st);
}

const StTensor *st_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

const float *st_get_f32(const SafeTensors *st, const char *name, int ndim, const int64_t *shape,
                        char *err, size_t cap) {
    char nm[200], have[200], want[200];
    shown(nm, sizeof nm, name);
    const StTensor *t = st_find(st, name);
    if (!t) {
        fail(err, cap, st->path, "no tensor '%s' (expected F32 %s)", nm, shape_str(want, sizeof want, ndim, shape));
        return NULL;
    }
    shape_str(have, sizeof have, t->ndim, t->shape);
    shape_str(want, sizeof want, ndim, shape);
    if (t->dtype != ST_F32) {
        fail(err, cap, st->path, "tensor '%s' has dtype %s and shape %s, expected F32 with shape %s",
             nm, dtype_names[t->dtype], have, want);
        return NULL;
    }
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        fail(err, cap, st->path, "tensor '%s' has shape %s, expected %s", nm, have, want);
        return NULL;
    }
    return (const float *)(const void *)t->data;
}

const char *st_meta(const SafeTensors *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta_keys[i], key)) return st->meta_values[i];
    return NULL;
}

// ---- writer -------------------------------------------------------------------------------------

typedef struct {
    char name[160];
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    unsigned char *data;   // (nbytes) our own copy
} StwTensor;

struct StWriter {
    StwTensor *tensors;
    int n_tensors, cap_tensors;
    char **meta_keys, **meta_values;
    int n_meta, cap_meta;
};

static void *realloc_check(void *p, size_t n) {
    p = realloc(p, n);
    CHECK(p, "out of memory growing a buffer to %zu bytes", n);
    return p;
}

static char *strdup_check(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(mallocCheck(n), s, n);
}

StWriter *stw_new(void) {
    return callocCheck(1, sizeof(StWriter));
}

void stw_add(StWriter *w, const char *name, StDtype dtype, const void *data, int ndim,
             const int64_t *shape) {
    size_t len = strlen(name);
    CHECK(len < sizeof w->tensors->name, "tensor name '%.40s...' longer than %zu bytes", name,
          sizeof w->tensors->name - 1);
    CHECK(strcmp(name, "__metadata__") != 0, "'__metadata__' is not a tensor name");
    CHECK(utf8_check((const unsigned char *)name, len) == len, "tensor name is not UTF-8");
    CHECK(ndim >= 0 && ndim <= ST_MAX_DIMS, "tensor '%s': ndim %d outside [0, %d]", name, ndim, ST_MAX_DIMS);
    for (int i = 0; i < w->n_tensors; i++)
        CHECK(strcmp(w->tensors[i].name, name) != 0, "tensor '%s' added twice", name);
    uint64_t bytes = st_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        CHECK(shape[i] >= 0, "tensor '%s': negative dim %" PRId64, name, shape[i]);
        CHECK(!__builtin_mul_overflow(bytes, (uint64_t)shape[i], &bytes), "tensor '%s' too large", name);
    }
    CHECK(bytes == 0 || data, "tensor '%s': NULL data", name);

    if (w->n_tensors == w->cap_tensors) {
        w->cap_tensors = w->cap_tensors ? 2 * w->cap_tensors : 16;
        w->tensors = realloc_check(w->tensors, (size_t)w->cap_tensors * sizeof *w->tensors);
    }
    StwTensor *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, len + 1);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = (size_t)bytes;
    t->data = mallocCheck(t->nbytes);
    if (bytes) memcpy(t->data, data, t->nbytes);
}

void stw_add_f32(StWriter *w, const char *name, const float *data, int ndim, const int64_t *shape) {
    stw_add(w, name, ST_F32, data, ndim, shape);
}

void stw_meta(StWriter *w, const char *key, const char *value) {
    CHECK(utf8_check((const unsigned char *)key, strlen(key)) == strlen(key), "metadata key is not UTF-8");
    CHECK(utf8_check((const unsigned char *)value, strlen(value)) == strlen(value),
          "metadata value of '%s' is not UTF-8", key);
    for (int i = 0; i < w->n_meta; i++)
        CHECK(strcmp(w->meta_keys[i], key) != 0, "metadata key '%s' set twice", key);
    if (w->n_meta == w->cap_meta) {
        w->cap_meta = w->cap_meta ? 2 * w->cap_meta : 8;
        w->meta_keys = realloc_check(w->meta_keys, (size_t)w->cap_meta * sizeof(char *));
        w->meta_values = realloc_check(w->meta_values, (size_t)w->cap_meta * sizeof(char *));
    }
    w->meta_keys[w->n_meta] = strdup_check(key);
    w->meta_values[w->n_meta] = strdup_check(value);
    w->n_meta++;
}

// A growing string for the header.
typedef struct {
    char *s;
    size_t n, cap;
} Text;

static void text_put(Text *t, const char *s, size_t n) {
    if (t->n + n + 1 > t->cap) {
        while (t->n + n + 1 > t->cap) t->cap = t->cap ? 2 * t->cap : 256;
        t->s = realloc_check(t->s, t->cap);
    }
    memcpy(t->s + t->n, s, n);
    t->n += n;
    t->s[t->n] = '\0';
}

__attribute__((format(printf, 2, 3)))
static void text_printf(Text *t, const char *fmt, ...) {
    char buf[128];   // only used for short pieces: numbers and fixed keys
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    CHECK(n >= 0 && (size_t)n < sizeof buf, "text_printf piece too long");
    text_put(t, buf, (size_t)n);
}

// A JSON string literal: quotes, backslashes and control bytes escaped, other UTF-8 bytes as they are.
static void text_json_string(Text *t, const char *s) {
    text_put(t, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"') text_put(t, "\\\"", 2);
        else if (*p == '\\') text_put(t, "\\\\", 2);
        else if (*p == '\n') text_put(t, "\\n", 2);
        else if (*p == '\t') text_put(t, "\\t", 2);
        else if (*p == '\r') text_put(t, "\\r", 2);
        else if (*p < 0x20) text_printf(t, "\\u%04x", *p);
        else text_put(t, (const char *)p, 1);
    }
    text_put(t, "\"", 1);
}

void stw_write(StWriter *w, const char *path) {
    // header: {"__metadata__":{...},"name":{"dtype":"F32","shape":[r,c],"data_offsets":[b,e]},...}
    Text h = {0};
    text_put(&h, "{", 1);
    if (w->n_meta) {
        text_put(&h, "\"__metadata__\":{", 16);
        for (int i = 0; i < w->n_meta; i++) {
            if (i) text_put(&h, ",", 1);
            text_json_string(&h, w->meta_keys[i]);
            text_put(&h, ":", 1);
            text_json_string(&h, w->meta_values[i]);
        }
        text_put(&h, "}", 1);
    }
    size_t offset = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        const StwTensor *t = &w->tensors[i];
        if (i || w->n_meta) text_put(&h, ",", 1);
        text_json_string(&h, t->name);
        text_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtype_names[t->dtype]);
        for (int d = 0; d < t->ndim; d++) text_printf(&h, "%s%" PRId64, d ? "," : "", t->shape[d]);
        text_printf(&h, "],\"data_offsets\":[%zu,%zu]}", offset, offset + t->nbytes);
        offset += t->nbytes;
    }
    text_put(&h, "}", 1);
    // pad with spaces so the data buffer starts at a multiple of 8 bytes (8 + header length)
    while (h.n % 8) text_put(&h, " ", 1);

    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)h.n >> (8 * k));
    AtomicFile af;
    atomic_open(&af, path);
    fwrite(len8, 1, 8, af.f);
    fwrite(h.s, 1, h.n, af.f);
    for (int i = 0; i < w->n_tensors; i++)
        if (w->tensors[i].nbytes) fwrite(w->tensors[i].data, 1, w->tensors[i].nbytes, af.f);
    free(h.s);
    atomic_commit(&af);   // checks for write errors; on one, removes the temp file and exits 2
}

void stw_free(StWriter *w) {
    if (!w) return;
    for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].data);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->tensors);
    free(w->meta_keys);
    free(w->meta_values);
    free(w);
}
