// check.h: error wrappers for programmer errors and clear one-line messages for user errors.
//
// Two kinds of failure, two kinds of message:
//  - internal (out of memory, a write that fails mid-file): print file:line and a hint, exit 1;
//  - user input (a flag, a config.json, a weights file, an --out folder): print ONE line naming the
//    input and what is wrong ("ch02: --seed: expected a non-negative integer, got 'abc'"), exit 2.
#pragma once
#include <stddef.h>
#include <stdio.h>

// The program name used as the prefix of every message ("ch02", "kvcache"); set once in main.
extern const char *g_prog;

// User error: "PROG: " + formatted message + newline on stderr, then exit(2). The message is escaped
// (str_escape) as a whole, so whatever user string it echoes, it stays one line.
_Noreturn void die_user(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Internal error with location; use through the macros below.
_Noreturn void die_internal(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// s with every control byte escaped ("\n", "\t", "\xHH") into buf (cut with "..." when it does not
// fit); returns buf. For anything that echoes a user's string outside die_user (which applies it).
const char *str_escape(char *buf, size_t cap, const char *s);

void *malloc_check_(size_t size, const char *file, int line);
void *calloc_check_(size_t n, size_t size, const char *file, int line);
#define mallocCheck(size) malloc_check_((size), __FILE__, __LINE__)
#define callocCheck(n, size) calloc_check_((n), (size), __FILE__, __LINE__)
#define CHECK(cond, ...) do { if (!(cond)) die_internal(__FILE__, __LINE__, __VA_ARGS__); } while (0)

// ---- atomic files -------------------------------------------------------------------------------
// Every output is written to "PATH.tmp.PID" and renamed into place on success, so a reader never sees
// a half-written figure or weights file, and a failure leaves nothing behind.
typedef struct {
    FILE *f;
    char path[1024];
    char tmp[1060];
} AtomicFile;

// Opens the temp file; on failure prints a user error naming path (e.g. "cannot write
// 'figures/ch02/x.png': Permission denied") and exits 2.
void atomic_open(AtomicFile *af, const char *path);
// Flushes, checks for write errors, renames into place. On error removes the temp file and exits.
void atomic_commit(AtomicFile *af);
// Removes the temp file (used when the caller gives up).
void atomic_abort(AtomicFile *af);
// Writes a whole buffer atomically.
void atomic_write_all(const char *path, const void *data, size_t n);
// A temp path for libraries that want a filename (cairo's SVG surface); then call atomic_rename.
void atomic_tmp_path(char *tmp, size_t cap, const char *path);
void atomic_rename(const char *tmp, const char *path);

// Creates DIR and its parents (mkdir -p) and proves it writable by creating and deleting a probe
// file; on failure prints one user error naming DIR and exits 2 before anything is written.
void ensure_out_dir(const char *dir);
// Fails now, with one line naming flag and path, if the file `path` cannot be written later (missing
// folder, no permission, a folder of that name), instead of after the work is done. Creates nothing.
void check_writable(const char *flag, const char *path);
// Opens path for reading only if it is a regular file (checked without blocking: a FIFO is refused,
// not waited on; so are folders and devices) and sets *size (if size). NULL with the reason in why
// ("is a folder, expected a file", "cannot open: No such file or directory"); the caller names the input.
FILE *open_regular(const char *path, size_t *size, char *why, size_t cap);
// Joins dir + "/" + name into buf (exits on overflow).
const char *path_join(char *buf, size_t cap, const char *dir, const char *name);

// Human-readable byte size into buf: "512 B", "1.50 KiB", "3.25 GiB" (binary units).
const char *fmt_bytes(char *buf, size_t cap, double bytes);
