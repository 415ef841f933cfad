// test_ch11.c: chapter 11's programs: ./train's flags for DeepSeek V4's layers, learned sinks and KV
// sharing, and ./ch11's answers to missing or mismatched inputs (one line, exit 2, nothing written).
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

TestSuite(ch11_tools);

Test(ch11_tools, train_bad_flags) {
    test_expect_one_line_exit2("train", "--mixer mla --sinks --out /tmp/x.safetensors", "--sinks: only with");
    test_expect_one_line_exit2("train", "--mixer csa --sinks --out /tmp/x.safetensors", "V4 layers always have sinks");
    test_expect_one_line_exit2("train", "--mixer mha --kv-shared 2 --layers 2 --out /tmp/x.safetensors", "--kv-shared 2: must be below");
    test_expect_one_line_exit2("train", "--mixer mla --kv-shared 1 --layers 2 --out /tmp/x.safetensors", "--kv-shared: only with");
    test_expect_one_line_exit2("train", "--mixer mha --head-dim 32 --out /tmp/x.safetensors", "--head-dim: only with");
    test_expect_one_line_exit2("train", "--mixer csa,mla --out /tmp/x.safetensors", "one kind of attention layer");
    test_expect_one_line_exit2("train", "--mixer csa --kv-heads 2 --out /tmp/x.safetensors", "exactly 1 shared K = V head");
    test_expect_one_line_exit2("train", "--mixer hca --pattern 3 --window 4 --out /tmp/x.safetensors", "--pattern: DeepSeek V4");
    test_expect_one_line_exit2("train", "--mixer csa --head-dim 12 --out /tmp/x.safetensors", "--head-dim 12");
    test_expect_one_line_exit2("train", "--mixer csa --csa-ratio 1 --out /tmp/x.safetensors", "--csa-ratio");
    test_expect_one_line_exit2("train", "--mixer csa --dense-steps 50 --steps 10 --out /tmp/x.safetensors", "--dense-steps 50");
    // the local layer 0 has no earlier local layer to share with
    test_expect_one_line_exit2("train", "--mixer mha --layers 4 --pattern 1 --window 4 --kv-shared 3 --out /tmp/x.safetensors",
                               "no earlier non-shared layer");
}

Test(ch11_tools, ch11_rejects_missing_weights_and_data_with_one_line) {
    char out[8192], dir[256], args[2400];
    test_tmpdir(dir, sizeof dir);
    snprintf(args, sizeof args, "--out %s --weights-dir %s", dir, dir);
    int rc = test_run(out, sizeof out, "ch11", args);
    cr_expect_eq(rc, 2, "missing weights: exit %d: %s", rc, out);
    cr_expect_eq(test_count_lines(out), 1, "missing weights: %s", out);
    cr_expect(strstr(out, "ch11_mla.safetensors") != NULL, "the message should name the file: %s", out);
    snprintf(args, sizeof args, "--out %s --weights-dir %s/data/weights --toy %s/none.csv", dir, test_root(), dir);
    rc = test_run(out, sizeof out, "ch11", args);
    cr_expect_eq(rc, 2, "missing data: exit %d: %s", rc, out);
    cr_expect(strstr(out, "none.csv") != NULL, "%s", out);
    // a data file that does not match the shipped model is refused, naming the row it wants
    char csv[400];
    snprintf(csv, sizeof csv, "%s/toy.csv", dir);
    FILE *f = fopen(csv, "w");
    cr_assert(f);
    fprintf(f, "setting,seed,accuracy\nmla,1,0.5\ndsa,1,0.5\ncsa,1,0.5\nhca,1,0.5\nwindow,1,0.5\n");
    fclose(f);
    snprintf(args, sizeof args, "--out %s --weights-dir %s/data/weights --toy %s --decode-times %s/data/ch11_decode.csv", dir,
             test_root(), csv, test_root());
    rc = test_run(out, sizeof out, "ch11", args);
    cr_expect_eq(rc, 2, "mismatched data: exit %d: %s", rc, out);
    cr_expect(strstr(out, "no row 'mla,1337,") != NULL, "%s", out);
    f = fopen(csv, "w");
    fprintf(f, "mla,1337\n");
    fclose(f);
    rc = test_run(out, sizeof out, "ch11", args);
    cr_expect(rc == 2 && strstr(out, "toy.csv:1: expected") != NULL, "malformed line: %s", out);
    remove(csv);
    cr_expect_eq(test_count_files(dir), 0, "nothing may be written: %d files", test_count_files(dir));
    rmdir(dir);
}
