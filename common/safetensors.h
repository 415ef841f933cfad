// safetensors.h: the weights format PyTorch users already read (https://huggingface.co/docs/safetensors).
//
// File layout: 8-byte little-endian header length N; N bytes of JSON
//   {"__metadata__": {"key": "string", ...}, "name": {"dtype": "F32", "shape": [r, c],
//    "data_offsets": [begin, end]}, ...}
// then the data buffer; offsets are relative to the buffer's start.
// The reader is strict: header length inside the file, valid JSON object, known dtype, shape
// product * dtype size == end - begin, offsets inside the buffer, tensors not overlapping, buffer fully
// covered. Any violation is a one-line error naming the file and the problem, never a crash.
#pragma once
#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef enum { ST_F32 = 0, ST_F16, ST_BF16, ST_F64, ST_I32, ST_I64, ST_U8, ST_I8, ST_BOOL } StDtype;

typedef struct {
    char name[160];
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t begin, end;              // byte offsets inside the data buffer
    const unsigned char *data;      // points into the loaded file (into SafeTensors.copies if its
                                    // offset was not a multiple of the element size)
} StTensor;

typedef struct {
    char path[1024];
    unsigned char *file;            // the whole file
    size_t file_size;
    StTensor *tensors;
    int n_tensors;
    char **meta_keys, **meta_values;
    int n_meta;
    void *file_alloc;               // what st_free releases: file starts 0..7 bytes into it, chosen so
                                    // the data buffer (file + 8 + header length) is 8-byte aligned
    void *copies;                   // aligned copies of tensors whose offset is not a multiple of their
                                    // element size (a writer without padding); their data points here
} SafeTensors;

// Loads and validates PATH. Returns 0 on success; on failure returns -1 and writes a one-line message
// into err ("data/weights/x.safetensors: header length 9999999 exceeds file size 1234").
int st_load(SafeTensors *st, const char *path, char *err, size_t cap);
void st_free(SafeTensors *st);
const StTensor *st_find(const SafeTensors *st, const char *name);
// The tensor NAME as F32 with exactly this shape; NULL with a message in err if missing, of another
// dtype, or of another shape ("...: tensor 'blk.0.wq' has shape [16,32], expected [32,32]").
const float *st_get_f32(const SafeTensors *st, const char *name, int ndim, const int64_t *shape,
                        char *err, size_t cap);
const char *st_meta(const SafeTensors *st, const char *key);   // NULL when absent

// Writer: collect tensors (copied) and metadata, then write atomically (temp file + rename).
// Tensors are written in the order added; the header is padded with spaces to a multiple of 8.
typedef struct StWriter StWriter;
StWriter *stw_new(void);
void stw_add(StWriter *w, const char *name, StDtype dtype, const void *data, int ndim,
             const int64_t *shape);
void stw_add_f32(StWriter *w, const char *name, const float *data, int ndim, const int64_t *shape);
void stw_meta(StWriter *w, const char *key, const char *value);
void stw_write(StWriter *w, const char *path);   // user error (exit 2) if the path can't be written
void stw_free(StWriter *w);
size_t st_dtype_size(StDtype d);
const char *st_dtype_name(StDtype d);
