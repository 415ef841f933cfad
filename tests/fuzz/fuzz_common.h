// fuzz_common.h: what the libFuzzer targets share: an input handed to a loader as a file, and the
// promise every loader makes about a bad input (a message naming it, never a crash or an exit; the
// programs print it through die_user, which keeps it on one line whatever it echoes).
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_path[256];
static void fuzz_remove_file(void) { unlink(fuzz_path); }

// Writes data to a file of this process (in /dev/shm when it exists, removed at exit) and returns its
// path: the loaders read files, and a file is how a user hands them input.
static inline const char *fuzz_file(const uint8_t *data, size_t size, const char *ext) {
    char *path = fuzz_path;
    if (!path[0]) atexit(fuzz_remove_file);
    snprintf(path, sizeof fuzz_path, "%s/attn-fuzz-%ld%s", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
             (long)getpid(), ext);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) abort();
    return path;
}

// A rejection must say why: an empty message is a bug the fuzzer reports.
static inline void fuzz_rejected(const char *err) {
    if (!err[0]) abort();
}
