// check.c: error wrappers, atomic files, output folders, byte formatting.
#include "check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *g_prog = "attention";

// The one escape every echoed string goes through: a control byte (newline, tab, ESC, ...) becomes
// "\n", "\t" or "\xHH", so a user string can never split a message over lines or drive the terminal.
// Writes at most 4 characters and a NUL into out; returns how many characters.
static int escape_byte(char out[5], unsigned char c) {
    if (c == '\n') return snprintf(out, 5, "\\n");
    if (c == '\t') return snprintf(out, 5, "\\t");
    if (c == '\r') return snprintf(out, 5, "\\r");
    if (c < 0x20 || c == 0x7f) return snprintf(out, 5, "\\x%02x", c);
    out[0] = (char)c;
    out[1] = '\0';
    return 1;
}

const char *str_escape(char *buf, size_t cap, const char *s) {
    size_t n = 0;
    if (!cap) return buf;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[5];
        int k = escape_byte(e, *p);
        if (n + (size_t)k + 4 > cap) {   // keep room for "..." and the NUL
            size_t dots = cap - 1 - n < 3 ? cap - 1 - n : 3;
            memcpy(buf + n, "...", dots);
            n += dots;
            break;
        }
        memcpy(buf + n, e, (size_t)k);
        n += (size_t)k;
    }
    buf[n] = '\0';
    return buf;
}

// "PROG: " + the formatted message, escaped as a whole, + one newline: one line whatever it echoes.
static void print_message(const char *head, const char *fmt, va_list ap) {
    char msg[8192], esc[8192];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "%s: %s%s\n", g_prog, head, str_escape(esc, sizeof esc, msg));
}

void die_user(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_message("", fmt, ap);
    va_end(ap);
    exit(2);
}

void die_internal(const char *file, int line, const char *fmt, ...) {
    char head[512];
    snprintf(head, sizeof head, "internal error at %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    print_message(head, fmt, ap);
    va_end(ap);
    exit(1);
}

void *malloc_check_(size_t size, const char *file, int line) {
    void *p = malloc(size ? size : 1);
    if (!p) die_internal(file, line, "out of memory allocating %zu bytes", size);
    return p;
}

void *calloc_check_(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) die_internal(file, line, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

// ---- atomic files -------------------------------------------------------------------------------
void atomic_tmp_path(char *tmp, size_t cap, const char *path) {
    int n = snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= cap) die_user("output path too long: '%s'", path);
}

void atomic_rename(const char *tmp, const char *path) {
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        die_user("cannot write '%s': %s", path, strerror(e));
    }
}

void atomic_open(AtomicFile *af, const char *path) {
    if (strlen(path) >= sizeof af->path) die_user("output path too long: '%s'", path);
    strcpy(af->path, path);
    atomic_tmp_path(af->tmp, sizeof af->tmp, path);
    af->f = fopen(af->tmp, "wb");
    if (!af->f) die_user("cannot write '%s': %s", path, strerror(errno));
}

void atomic_commit(AtomicFile *af) {
    int bad = ferror(af->f);
    if (fclose(af->f) != 0) bad = 1;
    af->f = NULL;
    if (bad) {
        int e = errno;
        remove(af->tmp);
        die_user("cannot write '%s': %s", af->path, e ? strerror(e) : "write error");
    }
    atomic_rename(af->tmp, af->path);
}

void atomic_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    af->f = NULL;
    remove(af->tmp);
}

void atomic_write_all(const char *path, const void *data, size_t n) {
    AtomicFile af;
    atomic_open(&af, path);
    if (n && fwrite(data, 1, n, af.f) != n) {
        atomic_abort(&af);
        die_user("cannot write '%s': %s", path, strerror(errno));
    }
    atomic_commit(&af);
}

// ---- folders ------------------------------------------------------------------------------------
void ensure_out_dir(const char *dir) {
    char buf[1024];
    if (!dir || !*dir) die_user("--out: empty folder name");
    if (strlen(dir) >= sizeof buf) die_user("--out: folder name too long");
    strcpy(buf, dir);
    // mkdir -p: create each prefix in turn
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            struct stat st;
            if (stat(buf, &st) != 0) {
                if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                    die_user("--out '%s': cannot create folder '%s': %s", dir, buf, strerror(errno));
            } else if (!S_ISDIR(st.st_mode)) {
                die_user("--out '%s': '%s' exists and is not a folder", dir, buf);
            }
            *p = c;
            if (c == '\0') break;
        }
    }
    char probe[1100];
    snprintf(probe, sizeof probe, "%s/.write-probe.%ld", dir, (long)getpid());
    FILE *f = fopen(probe, "wb");
    if (!f) die_user("--out '%s': folder is not writable: %s", dir, strerror(errno));
    fclose(f);
    remove(probe);
}

const char *path_join(char *buf, size_t cap, const char *dir, const char *name) {
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) die_user("path too long: '%s/%s'", dir, name);
    return buf;
}

const char *fmt_bytes(char *buf, size_t cap, double b) {
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (b >= 1024.0 && u < 5) { b /= 1024.0; u++; }
    if (u == 0) snprintf(buf, cap, "%.0f B", b);
    else if (b >= 100) snprintf(buf, cap, "%.0f %s", b, unit[u]);
    else if (b >= 10) snprintf(buf, cap, "%.1f %s", b, unit[u]);
    else snprintf(buf, cap, "%.2f %s", b, unit[u]);
    return buf;
}

void check_writable(const char *flag, const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) die_user("%s: '%s' is a folder, expected a file name", flag, path);
    AtomicFile af;
    atomic_open(&af, path);   // exits 2 naming path when it cannot be created
    atomic_abort(&af);
}
