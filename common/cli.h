// cli.h: the one command-line parser every program shares, so flags mean the same everywhere.
//
// Common flags (each program chooses which it takes through CliSpec.flags):
//   --help              usage and exit 0
//   --out DIR           output folder (chapters: figures/chNN)
//   --format png|svg|both   which figure files to write (default both)
//   --seed N            RNG seed (default 1337)
//   --weights FILE      a safetensors weights file to draw instead of the shipped one
// Programs add their own options through CliOpt. Positional arguments are collected when
// CliSpec.positional names them ("CONFIG.json..."), otherwise they are errors.
// Every bad flag gets one line on stderr naming the flag and what was expected, and exit 2.
#pragma once
#include <stdint.h>
#include <stdio.h>

enum { CLI_OUT = 1, CLI_FORMAT = 2, CLI_SEED = 4, CLI_WEIGHTS = 8 };

typedef enum { OPT_INT, OPT_LONG, OPT_DOUBLE, OPT_STRING, OPT_FLAG, OPT_CHOICE } CliOptType;

typedef struct {
    const char *name;      // "--context"
    CliOptType type;
    void *dst;             // int*, long*, double*, const char**, int* (flag: set to 1), int* (choice index)
    const char *meta;      // "N", "FILE"; for OPT_CHOICE the choices, '|'-separated: "bf16|fp16|fp32|fp8"
    const char *help;
    double min, max;       // numeric range (inclusive) when min < max
} CliOpt;

typedef struct {
    const char *prog;          // "ch02"
    const char *summary;       // one line: what the program does
    const char *usage_extra;   // extra lines printed after the options (examples), or NULL
    unsigned flags;            // which common flags this program takes (CLI_OUT | ...)
    const char *default_out;   // "figures/ch02"
    const char *default_weights;
    const CliOpt *opts;        // program-specific options
    int n_opts;
    const char *positional;    // e.g. "CONFIG.json..." or NULL
    int min_positional;
} CliSpec;

typedef struct {
    const char *out;           // output folder
    int png, svg;              // --format
    uint64_t seed;
    const char *weights;
    int n_pos;
    char **pos;                // positional arguments (malloc'd: free(args.pos) when done)
} CliArgs;

// Parses argv into args and the option destinations. Prints usage on --help (exit 0).
void cli_parse(const CliSpec *spec, CliArgs *args, int argc, char **argv);
void cli_usage(const CliSpec *spec, FILE *f);
// A strict integer: the whole of s is decimal digits with an optional '-' (only when lo < 0), no
// blanks, no '+', inside [lo, hi]. 0, or -1 when s is anything else. Every flag parses through this rule.
int cli_parse_integer(const char *s, long lo, long hi, long *out);
