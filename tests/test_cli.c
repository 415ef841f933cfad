// test_cli.c: every chapter program rejects bad input with one clear line and exit 2, prints --help,
// and never leaves a half-written file behind.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "helpers.h"

static const char *chapters[] = {"ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch09", "ch10", "ch11"};
#define N_CHAPTERS (int)(sizeof chapters / sizeof chapters[0])

// Runs PROG ARGS, expects exit 2 and exactly one line of output that contains `needle`.
static void expect_one_line_error(const char *prog, const char *args, const char *needle) {
    char out[8192];
    int rc = test_run(out, sizeof out, prog, args);
    cr_expect_eq(rc, 2, "%s %s: exit %d, expected 2; output: %s", prog, args, rc, out);
    cr_expect_eq(test_count_lines(out), 1, "%s %s: expected one line, got: %s", prog, args, out);
    cr_expect(strstr(out, needle) != NULL, "%s %s: message lacks '%s': %s", prog, args, needle, out);
    cr_expect(strncmp(out, prog, strlen(prog)) == 0, "%s %s: message should start with the program name: %s", prog, args, out);
}

Test(cli, help_exits_zero_with_usage) {
    for (int i = 0; i < N_CHAPTERS; i++) {
        char out[8192];
        int rc = test_run(out, sizeof out, chapters[i], "--help");
        cr_expect_eq(rc, 0, "%s --help exit %d", chapters[i], rc);
        cr_expect(strstr(out, "usage:") && strstr(out, "--out") && strstr(out, "--format") && strstr(out, "--seed"),
                  "%s --help lacks the common flags: %s", chapters[i], out);
    }
}

Test(cli, bad_flags_give_one_line_and_exit_2) {
    for (int i = 0; i < N_CHAPTERS; i++) {
        const char *p = chapters[i];
        expect_one_line_error(p, "--bogus", "unknown option '--bogus'");
        expect_one_line_error(p, "--seed abc", "--seed: expected a non-negative integer");
        expect_one_line_error(p, "--seed -3", "--seed");
        expect_one_line_error(p, "--format jpg", "--format: expected one of png|svg|both");
        expect_one_line_error(p, "--out", "--out: missing value");
        expect_one_line_error(p, "--out=", "--out: empty folder name");
        expect_one_line_error(p, "stray", "unexpected argument 'stray'");
        expect_one_line_error(p, "--help=yes", "--help takes no value");
    }
}

// Chapters 2 onwards draw trained models: a missing or corrupt weights file is named in one line,
// and nothing is written.
Test(cli, bad_weights_are_named_and_nothing_is_written) {
    char dir[256], bad[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(bad, sizeof bad, "%s/corrupt.safetensors", dir);
    FILE *f = fopen(bad, "wb");
    cr_assert(f);
    fputs("\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ", f);
    fclose(f);
    for (int i = 1; i < N_CHAPTERS; i++) {
        char out_dir[400], args[1200];
        // ch10 and ch11 draw a folder of models: the next test and test_ch11.c
        if (!strcmp(chapters[i], "ch10") || !strcmp(chapters[i], "ch11")) continue;
        snprintf(out_dir, sizeof out_dir, "%s/out-%s", dir, chapters[i]);
        snprintf(args, sizeof args, "--out %s --weights %s/missing.safetensors", out_dir, dir);
        expect_one_line_error(chapters[i], args, "missing.safetensors");
        snprintf(args, sizeof args, "--out %s --weights %s", out_dir, bad);
        expect_one_line_error(chapters[i], args, "corrupt.safetensors");
        cr_expect_eq(test_count_files(out_dir), 0, "%s wrote files before failing", chapters[i]);
    }
}

// Chapters 9 and 10 compare several models from --weights-dir: a missing folder or a corrupt model in it
// is named in one line before any figure is written.
Test(cli, bad_weights_dir_is_named_and_nothing_is_written) {
    char dir[256], bad[512], src[1024], dst[1024];
    test_tmpdir(dir, sizeof dir);
    // a copy of the shipped models with one of them corrupted
    snprintf(bad, sizeof bad, "%s/w", dir);
    cr_assert_eq(mkdir(bad, 0777), 0);
    static const char *models[] = {"ch09_attention", "ch09_gdn", "ch09_hybrid", "ch10_kda", "ch10_lightning",
                                   "ch10_mamba2", "ch10_kimi", "ch10_minimax", "ch10_nemotron"};
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        snprintf(dst, sizeof dst, "%s/%s.safetensors", bad, models[k]);
        FILE *f = fopen(dst, "wb");
        cr_assert(f);
        if (k == 0 || k == 6) {
            fputs("\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ", f);
        } else {
            snprintf(src, sizeof src, "%s/data/weights/%s.safetensors", test_root(), models[k]);
            FILE *in = fopen(src, "rb");
            cr_assert(in, "cannot read %s", src);
            char buf[65536];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, f);
            fclose(in);
        }
        fclose(f);
    }
    static const char *progs[] = {"ch09", "ch10"};
    for (int i = 0; i < 2; i++) {
        char out_dir[400], args[1200];
        snprintf(out_dir, sizeof out_dir, "%s/out-%s", dir, progs[i]);
        snprintf(args, sizeof args, "--out %s --weights-dir %s/nowhere", out_dir, dir);
        expect_one_line_error(progs[i], args, "nowhere");
        snprintf(args, sizeof args, "--out %s --weights-dir %s", out_dir, bad);
        expect_one_line_error(progs[i], args, "ch09_attention.safetensors");
        cr_expect_eq(test_count_files(out_dir), 0, "%s wrote files before failing", progs[i]);
    }
}

Test(cli, out_that_is_a_file_is_rejected_before_writing) {
    char dir[256], file[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(file, sizeof file, "%s/not-a-folder", dir);
    FILE *f = fopen(file, "w");
    cr_assert(f);
    fputs("x", f);
    fclose(f);
    for (int i = 0; i < N_CHAPTERS; i++) {
        char args[600];
        snprintf(args, sizeof args, "--out %s/sub", file);
        expect_one_line_error(chapters[i], args, "is not a folder");
    }
    cr_expect_eq(test_count_files(dir), 1, "nothing but the file may exist");
}

Test(cli, unwritable_out_is_rejected) {
    // /proc refuses new folders even for root, so this is unwritable on any Linux machine.
    for (int i = 0; i < N_CHAPTERS; i++) expect_one_line_error(chapters[i], "--out /proc/attn-test/figs", "--out '/proc/attn-test/figs'");
}

// A figure whose final name is taken by a folder cannot be renamed into place: the program must fail
// with one line and leave no temp file behind.
Test(cli, failed_write_leaves_no_partial_file) {
    char dir[256], blocker[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(blocker, sizeof blocker, "%s/01_heads.png", dir);
    cr_assert_eq(mkdir(blocker, 0777), 0);
    char out[8192], args[600];
    snprintf(args, sizeof args, "--out %s --format png", dir);
    int rc = test_run(out, sizeof out, "ch03", args);
    cr_expect_eq(rc, 2, "exit %d: %s", rc, out);
    cr_expect(strstr(out, "01_heads.png") != NULL, "message should name the file: %s", out);
    cr_expect(!test_has_tmp_files(dir), "a temp file was left in %s", dir);
}

Test(cli, format_selects_files) {
    char dir[256], out[8192], args[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(args, sizeof args, "--out %s --format svg", dir);
    cr_assert_eq(test_run(out, sizeof out, "ch02", args), 0, "%s", out);
    char p[600];
    struct stat st;
    snprintf(p, sizeof p, "%s/02_mask_gallery.svg", dir);
    cr_expect_eq(stat(p, &st), 0, "missing %s", p);
    snprintf(p, sizeof p, "%s/02_mask_gallery.png", dir);
    cr_expect_neq(stat(p, &st), 0, "--format svg wrote %s", p);
}

Test(check, fmt_bytes_uses_binary_units) {
    char b[32];
    cr_expect_str_eq(fmt_bytes(b, sizeof b, 512), "512 B");
    cr_expect_str_eq(fmt_bytes(b, sizeof b, 1536), "1.50 KiB");
    cr_expect_str_eq(fmt_bytes(b, sizeof b, 131072), "128 KiB");
    cr_expect_str_eq(fmt_bytes(b, sizeof b, 16.0 * 1024 * 1024 * 1024), "16.0 GiB");
}

Test(check, atomic_write_replaces_whole_file) {
    char dir[256], p[512];
    test_tmpdir(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/a.bin", dir);
    atomic_write_all(p, "hello", 5);
    atomic_write_all(p, "hi", 2);
    FILE *f = fopen(p, "rb");
    cr_assert(f);
    char buf[16] = {0};
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cr_expect_eq(n, 2);
    cr_expect_str_eq(buf, "hi");
    cr_expect(!test_has_tmp_files(dir));
}

// The figures a chapter writes are valid files: every PNG passes pngcheck and every SVG renders with
// rsvg-convert (both installed by `make test`'s dependency step).
Test(cli, chapter_figures_pass_pngcheck_and_render) {
    char dir[256], out[8192], args[400], cmd[1200];
    test_tmpdir(dir, sizeof dir);
    snprintf(args, sizeof args, "--out %s", dir);
    cr_assert_eq(test_run(out, sizeof out, "ch02", args), 0, "%s", out);
    cr_expect_geq(test_count_files(dir), 8, "ch02 wrote %d files", test_count_files(dir));
    snprintf(cmd, sizeof cmd, "pngcheck -q %s/*.png > /dev/null", dir);
    cr_expect_eq(system(cmd), 0, "pngcheck failed on %s", dir);
    snprintf(cmd, sizeof cmd, "for f in %s/*.svg; do rsvg-convert \"$f\" > /dev/null || exit 1; done", dir);
    cr_expect_eq(system(cmd), 0, "an SVG in %s does not render", dir);
}
