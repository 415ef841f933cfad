// cli.c: the shared command-line parser. Accepts "--flag value" and "--flag=value".
#include "cli.h"
#include "check.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *opt_meta(const CliOpt *o) {
    if (o->meta) return o->meta;
    switch (o->type) {
    case OPT_INT: case OPT_LONG: return "N";
    case OPT_DOUBLE: return "X";
    case OPT_STRING: return "VALUE";
    default: return "";
    }
}

void cli_usage(const CliSpec *s, FILE *f) {
    fprintf(f, "usage: %s [options]%s%s\n%s\n\noptions:\n", s->prog, s->positional ? " " : "",
            s->positional ? s->positional : "", s->summary);
    fprintf(f, "  %-26s %s\n", "--help", "show this help and exit");
    if (s->flags & CLI_OUT) {
        char d[128];
        snprintf(d, sizeof d, "output folder (default %s)", s->default_out ? s->default_out : ".");
        fprintf(f, "  %-26s %s\n", "--out DIR", d);
    }
    if (s->flags & CLI_FORMAT) fprintf(f, "  %-26s %s\n", "--format png|svg|both", "figure files to write (default both)");
    if (s->flags & CLI_SEED) fprintf(f, "  %-26s %s\n", "--seed N", "random seed (default 1337)");
    if (s->flags & CLI_WEIGHTS) {
        char d[256];
        snprintf(d, sizeof d, "safetensors weights to draw (default %s)",
                 s->default_weights ? s->default_weights : "none");
        fprintf(f, "  %-26s %s\n", "--weights FILE", d);
    }
    for (int i = 0; i < s->n_opts; i++) {
        const CliOpt *o = &s->opts[i];
        char left[64];
        if (o->type == OPT_FLAG) snprintf(left, sizeof left, "%s", o->name);
        else snprintf(left, sizeof left, "%s %s", o->name, opt_meta(o));
        fprintf(f, "  %-26s %s\n", left, o->help ? o->help : "");
    }
    if (s->usage_extra) fprintf(f, "\n%s\n", s->usage_extra);
}

// Whether s is a plain decimal number: an optional '-' (when minus_ok), digits, and (when real) an
// optional fraction and exponent. No blanks, no '+', no hex, no inf/nan: what strtol and strtod would
// quietly accept besides (" -5", "+5", "0x10") is refused.
static int is_decimal(const char *s, int minus_ok, int real) {
    const char *p = s;
    if (*p == '-' && minus_ok) p++;
    int digits = 0;
    while (*p >= '0' && *p <= '9') p++, digits++;
    if (real && *p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++, digits++;
    }
    if (!digits) return 0;
    if (real && (*p == 'e' || *p == 'E')) {
        p++;
        if (*p == '-' || *p == '+') p++;
        if (*p < '0' || *p > '9') return 0;
        while (*p >= '0' && *p <= '9') p++;
    }
    return *p == '\0';
}

int cli_parse_integer(const char *s, long lo, long hi, long *out) {
    if (!is_decimal(s, lo < 0, 0)) return -1;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || *end || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

// Parses an integer in [lo, hi]; dies naming the flag otherwise.
static long parse_long(const char *flag, const char *v, double lo, double hi) {
    char *end;
    errno = 0;
    long x = is_decimal(v, 1, 0) ? strtol(v, &end, 10) : 0;
    if (!is_decimal(v, 1, 0) || errno) die_user("%s: expected an integer, got '%s'", flag, v);
    if (lo < hi && (x < lo || x > hi)) die_user("%s: %ld is out of range [%.0f, %.0f]", flag, x, lo, hi);
    return x;
}

static double parse_double(const char *flag, const char *v, double lo, double hi) {
    char *end;
    errno = 0;
    double x = is_decimal(v, 1, 1) ? strtod(v, &end) : 0.0;
    if (!is_decimal(v, 1, 1) || errno || !isfinite(x)) die_user("%s: expected a number, got '%s'", flag, v);
    if (lo < hi && (x < lo || x > hi)) die_user("%s: %g is out of range [%g, %g]", flag, x, lo, hi);
    return x;
}

static int parse_choice(const char *flag, const char *v, const char *choices) {
    int idx = 0;
    const char *p = choices;
    size_t n = strlen(v);
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) return idx;
        idx++;
        if (!bar) break;
        p = bar + 1;
    }
    die_user("%s: expected one of %s, got '%s'", flag, choices, v);
}

void cli_parse(const CliSpec *s, CliArgs *a, int argc, char **argv) {
    g_prog = s->prog;
    memset(a, 0, sizeof *a);
    a->out = s->default_out ? s->default_out : ".";
    a->png = a->svg = 1;
    a->seed = 1337;
    a->weights = s->default_weights;
    a->pos = mallocCheck(sizeof(char *) * (size_t)(argc + 1));   // the caller frees it
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (arg[0] == '-' && arg[1] != '\0') die_user("unknown option '%s' (try --help)", arg);
            if (!s->positional) die_user("unexpected argument '%s' (try --help)", arg);
            a->pos[a->n_pos++] = arg;
            continue;
        }
        // split "--name=value"
        char name[64];
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (nlen >= sizeof name) die_user("unknown option '%s' (try --help)", arg);
        memcpy(name, arg, nlen);
        name[nlen] = '\0';
        const char *inline_val = eq ? eq + 1 : NULL;
        if (strcmp(name, "--help") == 0) {
            if (inline_val) die_user("--help takes no value");
            cli_usage(s, stdout);
            exit(0);
        }
        // find the option and whether it takes a value
        const CliOpt *opt = NULL;
        for (int k = 0; k < s->n_opts; k++)
            if (strcmp(s->opts[k].name, name) == 0) opt = &s->opts[k];
        int common = ((s->flags & CLI_OUT) && !strcmp(name, "--out")) ||
                     ((s->flags & CLI_FORMAT) && !strcmp(name, "--format")) ||
                     ((s->flags & CLI_SEED) && !strcmp(name, "--seed")) ||
                     ((s->flags & CLI_WEIGHTS) && !strcmp(name, "--weights"));
        if (!opt && !common) die_user("unknown option '%s' (try --help)", name);
        if (opt && opt->type == OPT_FLAG) {
            if (inline_val) die_user("%s takes no value", name);
            *(int *)opt->dst = 1;
            continue;
        }
        const char *v = inline_val;
        if (!v) {
            if (i + 1 >= argc) die_user("%s: missing value", name);
            v = argv[++i];
        }
        if (!common) {
            switch (opt->type) {
            case OPT_INT: *(int *)opt->dst = (int)parse_long(name, v, opt->min < opt->max ? opt->min : -2147483647.0, opt->min < opt->max ? opt->max : 2147483647.0); break;
            case OPT_LONG: *(long *)opt->dst = parse_long(name, v, opt->min, opt->max); break;
            case OPT_DOUBLE: *(double *)opt->dst = parse_double(name, v, opt->min, opt->max); break;
            case OPT_STRING:
                if (!*v) die_user("%s: empty value", name);
                *(const char **)opt->dst = v;
                break;
            case OPT_CHOICE: *(int *)opt->dst = parse_choice(name, v, opt->meta); break;
            case OPT_FLAG: break;
            }
        } else if (!strcmp(name, "--out")) {
            if (!*v) die_user("--out: empty folder name");
            a->out = v;
        } else if (!strcmp(name, "--format")) {
            int c = parse_choice(name, v, "png|svg|both");
            a->png = c != 1;
            a->svg = c != 0;
        } else if (!strcmp(name, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long x = is_decimal(v, 0, 0) ? strtoull(v, &end, 10) : 0;
            if (!is_decimal(v, 0, 0) || errno)   // strtoull alone would take " -5" as 2^64 - 5
                die_user("--seed: expected a non-negative integer below 2^64, got '%s'", v);
            a->seed = x;
        } else if (!strcmp(name, "--weights")) {
            if (!*v) die_user("--weights: empty file name");
            a->weights = v;
        }
    }
    if (a->n_pos < s->min_positional)
        die_user("missing %s (try --help)", s->positional ? s->positional : "argument");
}
