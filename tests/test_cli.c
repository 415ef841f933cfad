// test_cli.c: every chapter program rejects bad input with one clear line and exit 2, prints --help,
// and never leaves a half-written file behind.
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "cli.h"
#include "helpers.h"

static const char *chapters[] = {"ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch09", "ch10", "ch11",
                                  "ch12"};
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
        // ch10, ch11 and ch12 draw folders or lists of models: the next test, test_ch11.c and test_ch12.c
        if (!strcmp(chapters[i], "ch10") || !strcmp(chapters[i], "ch11") || !strcmp(chapters[i], "ch12")) continue;
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
    // a copy of the shipped models with three of them corrupted
    snprintf(bad, sizeof bad, "%s/w", dir);
    cr_assert_eq(mkdir(bad, 0777), 0);
    static const char *models[] = {"ch09_attention", "ch09_gdn", "ch09_hybrid", "ch10_kda", "ch10_lightning",
                                   "ch10_mamba2", "ch10_kimi", "ch10_minimax", "ch10_nemotron"};
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        snprintf(dst, sizeof dst, "%s/%s.safetensors", bad, models[k]);
        FILE *f = fopen(dst, "wb");
        cr_assert(f);
        if (k == 0 || k == 1 || k == 6) {
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
        // ch09 reads only the all-DeltaNet model from the folder, ch10 every model, ch09_attention first
        expect_one_line_error(progs[i], args, i == 0 ? "ch09_gdn.safetensors" : "ch09_attention.safetensors");
        cr_expect_eq(test_count_files(out_dir), 0, "%s wrote files before failing", progs[i]);
    }
}

// Chapter 12 takes lists of models per setting (one per seed): a missing or corrupt one, or a malformed
// list, is named in one line before any figure is written.
Test(cli, ch12_names_a_bad_model_in_its_lists) {
    char dir[256], bad[512], out_dir[400], args[1600];
    test_tmpdir(dir, sizeof dir);
    snprintf(bad, sizeof bad, "%s/corrupt.safetensors", dir);
    FILE *f = fopen(bad, "wb");
    cr_assert(f);
    fputs("\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ", f);
    fclose(f);
    snprintf(out_dir, sizeof out_dir, "%s/out", dir);
    snprintf(args, sizeof args, "--out %s --mla %s/missing.safetensors", out_dir, dir);
    expect_one_line_error("ch12", args, "missing.safetensors");
    snprintf(args, sizeof args, "--out %s --gqa ch04_recall_g2.safetensors,%s", out_dir, bad);
    expect_one_line_error("ch12", args, "corrupt.safetensors");
    snprintf(args, sizeof args, "--out %s --gqa ch05_recall_mla.safetensors", out_dir);
    expect_one_line_error("ch12", args, "--gqa expects gqa models");
    snprintf(args, sizeof args, "--out %s --mla ch03_induction.safetensors", out_dir);
    expect_one_line_error("ch12", args, "--mla expects mla models");
    snprintf(args, sizeof args, "--out %s --mha ch03_induction.safetensors", out_dir);
    expect_one_line_error("ch12", args, "--mha expects recall models, this one learned induction");
    snprintf(args, sizeof args, "--out %s --mha ch04_recall_g4.safetensors,,x", out_dir);
    expect_one_line_error("ch12", args, "--mha: empty file name");
    snprintf(args, sizeof args, "--out %s --samples 0", out_dir);
    expect_one_line_error("ch12", args, "--samples");
    snprintf(args, sizeof args, "--out %s --weights-dir %s/nowhere", out_dir, dir);
    expect_one_line_error("ch12", args, "nowhere");
    cr_expect_eq(test_count_files(out_dir), 0, "ch12 wrote files before failing");
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

// The schematics (drawn by the toolkit in common/schematic.c) are valid files too.
Test(cli, schematic_figures_pass_pngcheck_and_render) {
    char dir[256], out[8192], args[400], cmd[1200];
    test_tmpdir(dir, sizeof dir);
    snprintf(args, sizeof args, "--out %s", dir);
    cr_assert_eq(test_run(out, sizeof out, "ch04", args), 0, "%s", out);
    snprintf(cmd, sizeof cmd, "pngcheck -q %s/06_gqa_schematic.png > /dev/null", dir);
    cr_expect_eq(system(cmd), 0, "pngcheck failed on the schematic in %s", dir);
    snprintf(cmd, sizeof cmd, "rsvg-convert %s/06_gqa_schematic.svg > /dev/null", dir);
    cr_expect_eq(system(cmd), 0, "the schematic's SVG in %s does not render", dir);
}

// figures/README.md (the contact sheet) is what the committed SVGs say: it cannot drift from them.
Test(cli, contact_sheet_is_current) {
    char out[4096], args[1200];
    snprintf(args, sizeof args, "--check %s/figures", test_root());
    cr_expect_eq(test_run(out, sizeof out, "contactsheet", args), 0, "%s", out);
}

Test(cli, contact_sheet_lists_every_svg_with_its_title_and_claim) {
    char dir[256], sub[400], path[600], out[4096], args[600];
    test_tmpdir(dir, sizeof dir);
    snprintf(sub, sizeof sub, "%s/ch42", dir);
    cr_assert(mkdir(sub, 0755) == 0);
    snprintf(path, sizeof path, "%s/01_fig.svg", sub);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\">\n<title>A &amp; B</title>\n"
          "<desc>one | claim</desc></svg>\n", f);
    fclose(f);
    snprintf(args, sizeof args, "%s", dir);
    cr_assert_eq(test_run(out, sizeof out, "contactsheet", args), 0, "%s", out);
    snprintf(path, sizeof path, "%s/README.md", dir);
    f = fopen(path, "r");
    cr_assert(f);
    char buf[8192] = {0};
    cr_assert(fread(buf, 1, sizeof buf - 1, f) > 0);
    fclose(f);
    cr_expect(strstr(buf, "**A & B**<br>one \\| claim | `./ch42` |"), "row missing or wrong:\n%s", buf);
    snprintf(args, sizeof args, "--check %s", dir);
    cr_expect_eq(test_run(out, sizeof out, "contactsheet", args), 0, "%s", out);
    // a figure added since: --check fails
    snprintf(path, sizeof path, "%s/02_new.svg", sub);
    f = fopen(path, "w");
    cr_assert(f);
    fputs("<svg><title>new</title><desc>d</desc></svg>\n", f);
    fclose(f);
    cr_expect_eq(test_run(out, sizeof out, "contactsheet", args), 1, "%s", out);
    cr_expect(!test_has_tmp_files(dir));
}

Test(cli, contact_sheet_on_a_missing_folder_is_one_line_exit_2) {
    char out[4096];
    cr_expect_eq(test_run(out, sizeof out, "contactsheet", "/nonexistent-attention-figures"), 2, "%s", out);
    cr_expect_eq(test_count_lines(out), 1, "%s", out);
}

Test(check, str_escape_keeps_one_line) {
    char b[64];
    cr_expect_str_eq(str_escape(b, sizeof b, "a\nb\tc\x1b[31m\x7f"), "a\\nb\\tc\\x1b[31m\\x7f");
    cr_expect_str_eq(str_escape(b, sizeof b, "plain \xe2\x90\xa3 utf-8"), "plain \xe2\x90\xa3 utf-8");
    cr_expect_str_eq(str_escape(b, 8, "abcdefghij"), "abcd...");
    cr_expect_eq(strlen(str_escape(b, 4, "\n\n\n")), 3, "a cut escape still fits: %s", b);
}

Test(check, strict_integers) {
    long v = 0;
    cr_expect_eq(cli_parse_integer("42", 0, 100, &v), 0);
    cr_expect_eq(v, 42);
    cr_expect_eq(cli_parse_integer("-5", -10, 10, &v), 0);
    cr_expect_eq(v, -5);
    static const char *bad[] = {" 5", "+5", "5 ", "-5", "0x10", "1e3", "", "-", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(cli_parse_integer(bad[i], 0, 1000, &v), -1, "'%s' was accepted", bad[i]);
}

// Killed between opening its temp file and renaming it into place, a program leaves no temp file: the
// SIGINT/SIGTERM handler removes it, then the process still dies of the signal.
Test(check, signal_during_write_leaves_no_temp_file) {
    static const int sigs[] = {SIGTERM, SIGINT};
    for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) {
        char dir[256], path[512];
        test_tmpdir(dir, sizeof dir);
        snprintf(path, sizeof path, "%s/out.safetensors", dir);
        int ready[2];
        cr_assert_eq(pipe(ready), 0);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            signal(sigs[k], SIG_DFL);   // as a fresh program starts
            AtomicFile af;
            atomic_open(&af, path);
            fputs("half a file", af.f);
            fflush(af.f);
            if (write(ready[1], "x", 1) != 1) _exit(3);
            for (;;) pause();
        }
        char c;
        cr_assert_eq(read(ready[0], &c, 1), 1);
        cr_expect(test_has_tmp_files(dir), "the temp file should exist while the write is in flight");
        kill(pid, sigs[k]);
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_expect(WIFSIGNALED(status) && WTERMSIG(status) == sigs[k], "the child should die of signal %d", sigs[k]);
        cr_expect(!test_has_tmp_files(dir), "signal %d left a temp file in %s", sigs[k], dir);
        cr_expect_eq(test_count_files(dir), 0, "nothing may be left in %s", dir);
        close(ready[0]);
        close(ready[1]);
    }
}

// A model trained on the user's own text (--task corpus --corpus FILE) carries its held-out text, so the
// chapters draw it after the file is gone.
Test(cli, corpus_model_is_drawn_without_its_text_file) {
    char dir[256], corpus[512], weights[512], args[2048], out[8192];
    test_tmpdir(dir, sizeof dir);
    snprintf(corpus, sizeof corpus, "%s/text.txt", dir);
    snprintf(weights, sizeof weights, "%s/corpus.safetensors", dir);
    FILE *f = fopen(corpus, "w");
    cr_assert(f);
    for (int i = 0; i < 60; i++) fprintf(f, "the cat sees a dog. a dog runs home.\n");
    fclose(f);
    snprintf(args, sizeof args, "--task corpus --corpus %s --seq-len 16 --d-model 16 --heads 2 --layers 2 --steps 3 "
             "--batch 4 --quiet --out %s", corpus, weights);
    cr_assert_eq(test_run(out, sizeof out, "train", args), 0, "train: %s", out);
    cr_assert_eq(remove(corpus), 0);
    static const char *progs[] = {"ch02", "ch03"};
    for (int i = 0; i < 2; i++) {
        char figs[600];
        snprintf(figs, sizeof figs, "%s/figs-%s", dir, progs[i]);
        snprintf(args, sizeof args, "--weights %s --out %s --format png", weights, figs);
        cr_expect_eq(test_run(out, sizeof out, progs[i], args), 0, "%s %s: %s", progs[i], args, out);
        cr_expect_geq(test_count_files(figs), 4, "%s drew %d files", progs[i], test_count_files(figs));
    }
    snprintf(args, sizeof args, "%s --tokens 1,2,3", weights);
    cr_expect_eq(test_run(out, sizeof out, "infer", args), 0, "infer: %s", out);
}

// Every input is checked before the first figure: a folder of broken config.json files, or an empty
// --weights-dir, fails with one line and leaves the --out folder empty (not even created).
Test(cli, bad_configs_or_weights_dir_fail_before_any_figure) {
    char dir[256], cfg[400], empty[400], src[700], dst[700];
    test_tmpdir(dir, sizeof dir);
    snprintf(cfg, sizeof cfg, "%s/configs", dir);
    snprintf(empty, sizeof empty, "%s/no-models", dir);
    cr_assert_eq(mkdir(cfg, 0777), 0);
    cr_assert_eq(mkdir(empty, 0777), 0);
    snprintf(src, sizeof src, "%s/data/configs", test_root());
    DIR *d = opendir(src);
    cr_assert(d, "cannot list %s", src);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)); ) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json")) continue;
        snprintf(dst, sizeof dst, "%s/%s", cfg, e->d_name);
        FILE *f = fopen(dst, "w");
        cr_assert(f);
        fputs("{\"hidden_size\": ", f);
        fclose(f);
        n++;
    }
    closedir(d);
    cr_assert_geq(n, 10);
    for (int i = 2; i < N_CHAPTERS; i++) {
        char out_dir[500], args[1200];
        snprintf(out_dir, sizeof out_dir, "%s/out-%s", dir, chapters[i]);
        snprintf(args, sizeof args, "--out %s --configs %s", out_dir, cfg);
        expect_one_line_error(chapters[i], args, ".json");
        cr_expect_eq(test_count_files(out_dir), 0, "%s wrote files before reading its configs", chapters[i]);
    }
    static const char *with_dir[] = {"ch04", "ch05", "ch06", "ch09", "ch10"};
    for (size_t i = 0; i < sizeof with_dir / sizeof with_dir[0]; i++) {
        char out_dir[500], args[1200];
        snprintf(out_dir, sizeof out_dir, "%s/out2-%s", dir, with_dir[i]);
        snprintf(args, sizeof args, "--out %s --weights-dir %s", out_dir, empty);
        expect_one_line_error(with_dir[i], args, "no-models/");
        cr_expect_eq(test_count_files(out_dir), 0, "%s wrote files before loading its models", with_dir[i]);
    }
}
