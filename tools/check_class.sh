#!/bin/sh
# check_class.sh: every submission of a class in one table.
#
#   tools/check_class.sh SUBMISSIONS_DIR [NN]
#
# SUBMISSIONS_DIR holds one folder per student, each a student tree written by `make exercises` and
# worked on. For each, this takes from the submission only the source files that hold exercise regions
# (and its chapters/NN_name/answers.txt), compiles them with the focused tests and everything else from
# THIS tree (so an edited test, checker or Makefile in a submission changes nothing), runs the checker
# of chapter NN (every lab when omitted) and prints one row per student: ok, todo or FAIL per
# exercise. Each student's full report, hints included, is in build/class/NAME.txt; a submission that
# does not compile gets "does not build" and the compiler's messages there. Run it from the top folder.
set -eu

[ $# -ge 1 ] && [ -d "$1" ] || { echo "usage: tools/check_class.sh SUBMISSIONS_DIR [NN]" >&2; exit 2; }
dir=$1; ch=${2:-}
[ -f tools/exercises.txt ] || { echo "check_class: run it from the repository's top folder" >&2; exit 2; }
make -s --no-print-directory build/tests/exercises kvcache > /dev/null
mkdir -p build/class
[ -z "$ch" ] || tools/exercises.sh key "$ch" > /dev/null   # says so when chapter NN has no lab
ids=$(sed -e 's/#.*//' -e 's/[[:space:]]*|.*//' -e 's/[[:space:]]//g' tools/exercises.txt | grep -E "^ex${ch:-[0-9][0-9]}\." || true)
[ -n "$ids" ] || { echo "check_class: no exercises for chapter '$ch'" >&2; exit 2; }

printf '%-16s' student; for id in $ids; do printf ' %-7s' "$id"; done; printf '  passed\n'
status=0
for sub in "$dir"/*/; do
    sub=${sub%/}
    name=$(basename "$sub" | tr -c 'A-Za-z0-9._\n-' '_')
    log=build/class/$name.txt
    printf '%-16s' "$name"
    if ! make -s --no-print-directory SUB="$sub" NAME="$name" "build/class/$name/run" > "$log" 2>&1; then
        echo " does not build: see $log"
        status=1
        continue
    fi
    EX_RUN=build/class/$name/run EX_ROOT=$sub tools/exercises.sh check $ch > "$log" 2>&1 || status=1
    awk -v ids="$ids" '
        /^ex[0-9][0-9]\.[0-9]+ / { v[$1] = $NF == "do" ? "todo" : $NF }
        END {
            n = split(ids, id, "\n")
            for (i = 1; i <= n; i++) { w = v[id[i]] == "" ? "?" : v[id[i]]; printf " %-7s", w; ok += w == "ok" }
            printf "  %d/%d\n", ok, n
        }' "$log"
done
exit $status
