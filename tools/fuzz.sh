#!/bin/sh
# fuzz.sh: runs each libFuzzer target of tests/fuzz for SECONDS seconds, one after the other on one core,
# starting from the seed corpus in the repository (tests/fuzz/corpus/TARGET, and data/configs for the
# config reader). New inputs the fuzzer keeps go to build/fuzz/corpus/TARGET, logs to build/fuzz/TARGET.log.
# A crash, a sanitizer report, a leak or an exit stops here with the input saved as build/fuzz/crash-*;
# turn it into a case of the normal tests (tests/bad_inputs.tsv) before fixing it.
#
#   tools/fuzz.sh SECONDS [TARGET...]      (make fuzz FUZZ_SECONDS=300)
set -e
secs=${1:-60}
shift || true
targets=${*:-"safetensors config model"}
dir=build/fuzz
for t in $targets; do
    mkdir -p "$dir/corpus/$t"
    seeds="tests/fuzz/corpus/$t"
    [ "$t" = config ] && seeds="$seeds data/configs"
    dict=tests/fuzz/model.dict
    [ "$t" = config ] && dict=tests/fuzz/config.dict
    printf 'fuzz %-12s %4s s ... ' "$t" "$secs"
    if OMP_NUM_THREADS=1 "$dir/fuzz_$t" "$dir/corpus/$t" $seeds -dict="$dict" -max_total_time="$secs" \
            -max_len=16384 -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
            -artifact_prefix="$dir/crash-$t-" > "$dir/$t.log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/$t.log")
        cov=$(grep -o 'cov: [0-9]*' "$dir/$t.log" | tail -1)
        echo "$runs inputs, $cov, no crash"
    else
        echo "FAILED (build/fuzz/$t.log):"
        grep -E 'ERROR|SUMMARY|runtime error|internal error|deadly signal|fuzz target exited|Test unit written' "$dir/$t.log" | head -8
        exit 1
    fi
done
