// check.c: error wrappers, atomic files, output folders, byte formatting.
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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
// Temp files in flight, so a Ctrl-C, a kill or an exit between open and rename leaves none behind. The
// signal handler only reads these (unlink is async-signal-safe); a slot is filled before it goes live.
#define MAX_TEMPS 8
static char g_temp[MAX_TEMPS][1100];
static volatile sig_atomic_t g_temp_live[MAX_TEMPS];

static void temps_remove_all(void) {
    for (int i = 0; i < MAX_TEMPS; i++)
        if (g_temp_live[i]) {
            g_temp_live[i] = 0;
            unlink(g_temp[i]);
        }
}

static void on_fatal_signal(int sig) {
    temps_remove_all();
    signal(sig, SIG_DFL);   // then die of the signal as if never caught (the shell sees 128 + sig)
    raise(sig);
}

static void temp_track(const char *tmp) {
    static int installed;
    if (!installed) {
        installed = 1;
        atexit(temps_remove_all);
        static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
        for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_fatal_signal;
            sigemptyset(&sa.sa_mask);
            struct sigaction old;
            // a signal the caller chose to ignore (nohup) stays ignored
            if (sigaction(sigs[k], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
            sigaction(sigs[k], &sa, NULL);
        }
    }
    for (int i = 0; i < MAX_TEMPS; i++)
        if (!g_temp_live[i]) {
            snprintf(g_temp[i], sizeof g_temp[i], "%s", tmp);
            g_temp_live[i] = 1;
            return;
        }
    CHECK(0, "more than %d temp files open at once", MAX_TEMPS);
}

static void temp_forget(const char *tmp) {
    for (int i = 0; i < MAX_TEMPS; i++)
        if (g_temp_live[i] && strcmp(g_temp[i], tmp) == 0) g_temp_live[i] = 0;
}

// An output must be a new name or a regular file: rename would silently replace a device node or a
// FIFO (or fail on a folder) with our bytes.
static void refuse_special(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) die_user("cannot write '%s': it is a folder", path);
    if (!S_ISREG(st.st_mode))
        die_user("cannot write '%s': it exists and is not a regular file (a device, FIFO or socket); refusing to replace it",
                 path);
}

void atomic_tmp_path(char *tmp, size_t cap, const char *path) {
    refuse_special(path);
    int n = snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= cap) die_user("output path too long: '%s'", path);
}

void atomic_rename(const char *tmp, const char *path) {
    if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        temp_forget(tmp);
        die_user("cannot write '%s': %s", path, strerror(e));
    }
    temp_forget(tmp);
}

void atomic_open(AtomicFile *af, const char *path) {
    if (strlen(path) >= sizeof af->path) die_user("output path too long: '%s'", path);
    strcpy(af->path, path);
    atomic_tmp_path(af->tmp, sizeof af->tmp, path);
    temp_track(af->tmp);   // before it exists: a signal in between unlinks nothing, harmlessly
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        int e = errno;
        temp_forget(af->tmp);
        die_user("cannot write '%s': %s", path, strerror(e));
    }
}

void atomic_commit(AtomicFile *af) {
    int bad = ferror(af->f);
    if (fclose(af->f) != 0) bad = 1;
    af->f = NULL;
    if (bad) {
        int e = errno;
        remove(af->tmp);
        temp_forget(af->tmp);
        die_user("cannot write '%s': %s", af->path, e ? strerror(e) : "write error");
    }
    atomic_rename(af->tmp, af->path);
}

void atomic_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    af->f = NULL;
    remove(af->tmp);
    temp_forget(af->tmp);
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
    temp_track(probe);
    FILE *f = fopen(probe, "wb");
    if (!f) {
        int e = errno;
        temp_forget(probe);
        die_user("--out '%s': folder is not writable: %s", dir, strerror(e));
    }
    fclose(f);
    remove(probe);
    temp_forget(probe);
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
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        die_user("%s: '%s' exists and is not a regular file (a device, FIFO or socket); refusing to replace it", flag, path);
    AtomicFile af;
    atomic_open(&af, path);   // exits 2 naming path when it cannot be created
    atomic_abort(&af);
}

FILE *open_regular(const char *path, size_t *size, char *why, size_t cap) {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, cap, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    const char *bad = NULL;
    if (fstat(fd, &st) != 0) bad = strerror(errno);
    else if (S_ISDIR(st.st_mode)) bad = "is a folder, expected a file";
    else if (!S_ISREG(st.st_mode)) bad = "is not a regular file (a device, FIFO or socket)";
    int flags = bad ? 0 : fcntl(fd, F_GETFL);
    if (!bad && (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)) bad = strerror(errno);
    FILE *f = bad ? NULL : fdopen(fd, "rb");
    if (!f) {
        snprintf(why, cap, "%s", bad ? bad : strerror(errno));
        close(fd);
        return NULL;
    }
    if (size) *size = (size_t)st.st_size;
    return f;
}
