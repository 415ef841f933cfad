#!/bin/sh
# exercises.sh: the classroom labs. Each chapter's EXERCISES.md asks for three kinds of exercise:
#   implement  a piece of the reference code, marked in place (the reference stays the solution):
#                  // EXERCISE ex05.1 begin: one line saying what the region computes
#                  // EXERCISE ex05.1 stub: C statements the starter runs instead (optional, may repeat)
#                  ...the reference code...
#                  // EXERCISE ex05.1 end
#              A region is a run of whole statements inside one function whose declarations end with it.
#              The student tree keeps the marker lines and replaces the code by EXERCISE_TODO("ex05.1")
#              (common/exercise.h) and the stub, which compile without warnings and fail clearly.
#   compute    a number about a real model, answered by hand in chapters/NN_name/answers.txt
#              ("ex05.3 = 70272") and checked against ./kvcache;
#   predict    a prediction written in answers.txt before running the command the exercise gives.
# tools/exercises.txt lists them all: one line per exercise, the checker's entry (see that file).
#
#   tools/exercises.sh student OUT [NN]   copy the repository to OUT with the regions of chapter NN (all
#                                         when omitted) replaced by their stubs, and empty answers files
#   tools/exercises.sh check [NN|NN.M]... one verdict per exercise, with a hint; exit 1 unless all pass
#   tools/exercises.sh key [NN]           the compute answers, from ./kvcache (for the instructor)
#   tools/exercises.sh stub FILE [NN]     FILE's student form on stdout        (the Makefile uses these)
#   tools/exercises.sh select FILE        FILE with every region as "stub if EXERCISE_STUB names it, else
#                                         the reference", for the self-test
#   tools/exercises.sh lint               the table, the marked regions, the tests and EXERCISES.md agree
#   tools/exercises.sh selftest           what `make exercises-check` proves (see selftest below)
# The checker runs EX_RUN (default build/tests/exercises: the focused tests of tests/test_exercises.c,
# suite exNN_M for exercise exNN.M) and EX_KVCACHE (default ./kvcache); `make check` builds both first.
# It reads the answers from chapters/NN_name/answers.txt (under EX_ROOT when set).
set -eu

TABLE=tools/exercises.txt
RUN=${EX_RUN:-build/tests/exercises}
KVCACHE=${EX_KVCACHE:-./kvcache}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

die() { echo "exercises: $*" >&2; exit 2; }

# ---- the marked regions ---------------------------------------------------------------------------
# transform MODE FILE [NN]: MODE list prints "id<TAB>file<TAB>line<TAB>what" per region; stub writes the
# student form (only chapter NN's regions when given); select writes the self-test form.
transform() {
    awk -v mode="$1" -v file="$2" -v only="${3:-}" '
    function fail(msg) { printf "exercises: %s:%d: %s\n", file, NR, msg > "/dev/stderr"; bad = 1; exit 2 }
    function emit(s) { out[++n_out] = s }
    function rest_after(s, word,   i) { i = index(s, word); s = substr(s, i + length(word)); sub(/^:? ?/, "", s); return s }
    function chapter_dir(id,   cmd, d) {
        cmd = "ls -d chapters/" substr(id, 3, 2) "_* 2>/dev/null"; d = ""
        cmd | getline d; close(cmd)
        return d == "" ? "its chapter" : d
    }
    BEGIN { open = ""; n_out = 0; first_inc = 0; changed = 0 }
    $1 == "#include" && !first_inc { first_inc = n_out + 1 }
    $1 == "//" && $2 == "EXERCISE" && $3 ~ /^ex[0-9][0-9]\.[0-9]+$/ {
        id = $3; verb = $4; sub(/:$/, "", verb)
        ind = $0; sub(/[^ \t].*$/, "", ind)
        if (verb == "begin") {
            if (open != "") fail("EXERCISE " id " begins inside " open)
            if (seen[id]++) fail("EXERCISE " id " marked twice")
            open = id; what = rest_after($0, "begin"); stub = ""; body_started = 0; begin_line = NR
            take = mode == "select" || (mode == "stub" && (only == "" || substr(id, 3, 2) == only))
            if (mode == "list") printf "%s\t%s\t%d\t%s\n", id, file, NR, what
            emit($0)
            next
        }
        if (verb == "stub") {
            if (open != id || body_started) fail("EXERCISE " id " stub: only right after its begin line")
            stub = stub (stub == "" ? "" : " ") rest_after($0, "stub")
            if (!take) emit($0)
            next
        }
        if (verb == "end") {
            if (open != id) fail("EXERCISE " id " ends, but " (open == "" ? "none" : open) " is open")
            if (take) {
                changed = 1
                if (mode == "stub") {
                    emit(ind "EXERCISE_TODO(\"" id "\");   // the starter: replace with your code (" chapter_dir(id) "/EXERCISES.md)")
                    if (stub != "") emit(ind stub)
                } else {
                    emit(ind "}")
                }
            }
            emit($0)
            open = ""
            next
        }
        fail("EXERCISE " id ": expected begin, stub or end, got \"" $4 "\"")
    }
    {
        if (open != "" && take) {
            if (mode == "select" && !body_started)
                emit(ind "if (exercise_stubbed(\"" open "\")) { EXERCISE_TODO(\"" open "\"); " stub " } else {")
            body_started = 1
            if (mode == "select") emit($0)
            next
        }
        if (open != "") body_started = 1
        emit($0)
    }
    END {
        if (bad) exit 2
        if (open != "") { NR = begin_line; fail("EXERCISE " open " has no end line") }
        if (mode == "list") exit 0
        for (i = 1; i <= n_out; i++) {
            if (changed && i == first_inc) print "#include \"exercise.h\""
            print out[i]
        }
    }' "$2"
}

# Every marked source file: the C files of common/ and chapters/ with a begin line.
marked_files() {
    grep -lE '^[[:space:]]*// EXERCISE ex[0-9][0-9]\.[0-9]+ begin' common/*.c chapters/*.c chapters/*/*.c 2>/dev/null || true
}

regions() { for f in $(marked_files); do transform list "$f"; done; }

# ---- the table ------------------------------------------------------------------------------------
# Fields of tools/exercises.txt, '|'-separated, spaces around them ignored:
#   implement: id | implement | title | Criterion suite of its focused tests
#   compute:   id | compute   | title | kvcache arguments | JSON key[/KiB|/MiB|/GiB] | exact or N%
#   predict:   id | predict   | title | the allowed answers, a,b,c
table() {
    if [ ! -f "$TMP/table" ]; then
        [ -f "$TABLE" ] || die "$TABLE is missing: run this from the repository's top folder"
        sed -e 's/#.*//' -e 's/[[:space:]]*|[[:space:]]*/|/g' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$TABLE" |
            grep -v '^$' > "$TMP/table" || true
    fi
    cat "$TMP/table"
}
field() {   # field LINE N: the Nth '|'-separated field
    _f=$1; _n=$2
    while [ "$_n" -gt 1 ]; do
        case $_f in *'|'*) _f=${_f#*|} ;; *) _f= ;; esac
        _n=$((_n - 1))
    done
    printf '%s\n' "${_f%%|*}"
}
# Every entry as a shell variable (E_ex05_3 = "ex05.3|compute|..."), read once at the start, so looking
# one up costs no process.
load_table() {
    table | awk -F'|' '{ v = $0; gsub(/\047/, "\047\\\047\047", v); id = $1; gsub(/[^A-Za-z0-9]/, "_", id); printf "E_%s=\047%s\047\n", id, v }' > "$TMP/entries.sh"
    . "$TMP/entries.sh"
}
entry() {
    case $1 in ex[0-9][0-9].[0-9]*) ;; *) return 0 ;; esac
    eval "printf '%s' \"\${E_${1%%.*}_${1#*.}:-}\""
}
NL='
'


# ids selected by arguments like 05, 05.2, ex05.2 (none: every exercise)
select_ids() {
    if [ $# -eq 0 ]; then table | cut -d'|' -f1; return; fi
    for a in "$@"; do
        a=${a#ex}
        case $a in
        [0-9][0-9]) ids=$(table | cut -d'|' -f1 | grep "^ex$a\." || true)
                    [ -n "$ids" ] || die "chapter $a has no exercises yet (tools/exercises.txt)"
                    printf '%s\n' "$ids" ;;
        [0-9][0-9].[0-9]*) [ -n "$(entry "ex$a")" ] || die "no exercise ex$a (tools/exercises.txt lists them)"
                    echo "ex$a" ;;
        *) die "'$a' is not an exercise: use NN (a chapter) or NN.M, e.g. 05 or 05.2" ;;
        esac
    done
}

chapter_of() { ls -d chapters/"$(printf '%s' "$1" | cut -c3-4)"_* 2>/dev/null | head -1; }

# ---- verdicts ---------------------------------------------------------------------------------------
# Each sets VERDICT (ok, todo or fail) and DETAIL (lines to print under the verdict).

# The focused tests of one implement exercise, run by binary $2 (environment already set by the caller).
# run_tests RUN FILTER: the focused tests matching FILTER; TAP report in $TMP/tap, stderr in $TMP/err,
# exit status in RC.
run_tests() {
    [ -x "$1" ] || die "$1 is missing: run 'make check' (it builds it)"
    RC=0
    : > "$TMP/tap"
    "$1" --filter "$2" --tap="$TMP/tap" -j2 --timeout 60 > "$TMP/out" 2> "$TMP/err" || RC=$?
}

verdict_implement() {
    suite=$(field "$(entry "$1")" 4)
    run_tests "$2" "$suite/*"
    verdict_parse "$1" "$suite" "$RC" "$TMP/tap" "$TMP/err"
}

# verdict_parse ID SUITE RC TAP ERR: the verdict of one exercise from a run of its focused tests.
verdict_parse() {
    id=$1; suite=$2; rc=$3
    # one pass over the run's stderr (a stub says "EXERCISE exNN.M: still the starter's stub (file:line)")
    # and its TAP report: the verdict on the first line, the detail after it. The message of the first
    # failing check is the hint (the focused tests put the failing property and a question there); a
    # crash has no message, only the last check that passed before it.
    awk -v id="$id" -v rc="$rc" -v suite="$suite" '
        FNR == 1 { file++ }
        file == 1 && /^EXERCISE ex[0-9.]+: still the starter.s stub/ {
            if ($2 == id ":") { if (todo == "") { todo = $0; sub(/.*stub \(/, "", todo); sub(/\)$/, "", todo) } }
            else { o = $2; sub(/:$/, "", o); if (!(o in seen)) { seen[o] = 1; others = others (others == "" ? "" : ", ") o } }
            next
        }
        file == 2 && /^ok - / && !/# SKIP/ { passed++ }
        file == 2 && /^not ok - / { failed++; if (name == "") { name = $4; rest = $0; sub(/^not ok - [^ ]+ */, "", rest) } }
        file == 2 && name != "" && msg == "" && /^[ \t]+Assertion failed: / { msg = $0; sub(/^[ \t]+Assertion failed: /, "", msg) }
        END {
            if (todo != "") { print "todo"; print "not started: the starter'"'"'s stub is still at " todo; exit }
            # this check runs the code of another exercise that is still a stub: neither a pass (the stub
            # may hide a slip, e.g. two paths both giving zeros) nor this exercise'"'"'s failure
            if (others != "") { print "todo"; print "waits for " others ": this check runs that code too, and it is still the starter'"'"'s stub. Do " others " first, then check again."; exit }
            if (rc == 0 && failed == 0 && passed > 0) { print "ok"; print passed " check" (passed == 1 ? " passes" : "s pass"); exit }
            print "fail"
            if (passed + failed == 0) { print "no check ran (suite " suite " of tests/test_exercises.c; exit status " rc ")"; exit }
            if (msg != "") print msg
            else if (rest ~ /signal/) print "the code crashed (" rest "): look for an index outside its buffer"
            else if (rest ~ /time/) print "it did not finish in 60 s (" rest "): look for a loop that never ends"
            else print "failed: " rest
        }' "$5" "$4" > "$TMP/verdict"
    out=$(cat "$TMP/verdict")
    VERDICT=${out%%"$NL"*}; DETAIL=${out#*"$NL"}
}

# The answers file: EX_ANSWERS (one file for every chapter) or ROOT/chapters/NN_name/answers.txt, ROOT
# being EX_ROOT (tools/check_class.sh: a student's tree) or this tree.
answers_file() {
    if [ -n "${EX_ANSWERS:-}" ]; then echo "$EX_ANSWERS"; else echo "${EX_ROOT:+$EX_ROOT/}$(chapter_of "$1")/answers.txt"; fi
}
answer_of() {   # the last "id = answer" line of the answers file, answer trimmed
    f=$(answers_file "$1")
    [ -f "$f" ] || return 0
    awk -v id="$1" '{ line = $0; sub(/^[ \t]+/, "", line) }
        index(line, id) == 1 { rest = substr(line, length(id) + 1); if (rest ~ /^[ \t]*=/) { sub(/^[ \t]*=[ \t]*/, "", rest); sub(/[ \t\r]+$/, "", rest); a = rest } }
        END { print a }' "$f"
}

# The calculator's value of a compute exercise, in its unit (asked once per run).
expected_of() {
    if [ -f "$TMP/want.$1" ]; then cat "$TMP/want.$1"; return; fi
    expected_calc "$1" > "$TMP/want.$1"
    cat "$TMP/want.$1"
}
expected_calc() {
    e=$(entry "$1"); args=$(field "$e" 4); key=$(field "$e" 5)
    unit=${key#*/}; [ "$unit" = "$key" ] && unit=B
    key=${key%%/*}
    cfg=${args%% *}; more=""; [ "$cfg" = "$args" ] || more=${args#* }
    [ -x "$KVCACHE" ] || die "$KVCACHE is missing: run 'make check' (it builds it)"
    # shellcheck disable=SC2086
    json=$("$KVCACHE" "data/configs/$cfg" $more --json) || die "$1: ./kvcache data/configs/$cfg $more failed"
    v=$(printf '%s\n' "$json" | sed -n "s/^[[:space:]]*\"$key\":[[:space:]]*\([-0-9.eE+]*\).*/\1/p" | head -1)
    [ -n "$v" ] || die "$1: ./kvcache --json has no \"$key\""
    case $unit in
    B) div=1 ;; KiB) div=1024 ;; MiB) div=1048576 ;; GiB) div=1073741824 ;;
    *) die "$1: unknown unit '$unit' in tools/exercises.txt" ;;
    esac
    awk -v v="$v" -v d="$div" 'BEGIN { x = v / d; if (x == int(x)) printf "%d\n", x; else printf "%.6g\n", x }'
}

verdict_compute() {
    id=$1; e=$(entry "$id"); tol=$(field "$e" 6); f=$(answers_file "$id")
    got=$(answer_of "$id" | tr -d ',_ ')
    if [ -z "$got" ]; then
        VERDICT=todo; DETAIL="not answered: write '$id = <number>' in $f"; return
    fi
    want=$(expected_of "$id")
    k5=$(field "$e" 5); case $k5 in */*) unit=${k5#*/} ;; *) unit=B ;; esac
    DETAIL=$(awk -v got="$got" -v want="$want" -v tol="$tol" -v raw="$(answer_of "$id")" -v unit="$unit" '
    function near(r, f) { return r > f * 0.995 && r < f * 1.005 }
    BEGIN {
        if (got !~ /^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$/) { printf "fail\n\"%s\" is not a number (write digits only, in the unit the exercise asks for)\n", raw; exit }
        g = got + 0; w = want + 0
        if (tol == "exact") ok = g == w
        else { p = tol; sub(/%$/, "", p); ok = (g - w <= w * p / 100 && w - g <= w * p / 100) }
        if (ok) { printf "ok\n%s (%s)\n", got, tol == "exact" ? "exact" : "within " tol; exit }
        printf "fail\nyou wrote %s: not it (%s).", got, tol == "exact" ? "it must be exact" : "tolerance " tol
        if (g != 0 && w != 0) {
            r = g / w; h = ""
            if (near(r, 2) || near(r, 0.5)) h = " It is off by a factor of 2: bytes per element (bf16: 2, fp32: 4), or K and V counted once or twice?"
            else if (near(r, 4) || near(r, 0.25)) h = " It is off by a factor of 4: fp32 (4 bytes) for bf16 (2), and one more factor of 2?"
            else if (near(r, 1024) || near(r, 1/1024) || near(r, 1048576) || near(r, 1/1048576)) h = " It is off by a power of 1024: check the unit (B, KiB, MiB, GiB)."
            else if (unit != "B" && (near(r, 1000/1024) || near(r, 1024/1000) || near(r, 1e6/1048576) || near(r, 1048576/1e6) || near(r, 1e9/1073741824) || near(r, 1073741824/1e9))) h = " Close: KiB, MiB and GiB are powers of 1024, not 1000."
            else if (r > 0.98 && r < 1.02) h = sprintf(" Close: %.2g%% too %s. Is a small term missing or counted twice?", r > 1 ? 100 * (r - 1) : 100 * (1 - r), r > 1 ? "large" : "small")
            else if (r > 1) h = sprintf(" It is %.3g times too large.", r)
            else h = sprintf(" It is %.3g times too small.", 1 / r)
            printf "%s", h
        }
        printf "\n"
    }')
    VERDICT=${DETAIL%%"$NL"*}; DETAIL=${DETAIL#*"$NL"}
    if [ "$VERDICT" = fail ]; then
        DETAIL="$DETAIL
Work it out from the config (EXERCISES.md says which numbers matter), then compare with: ./kvcache data/configs/$(field "$e" 4)"
    fi
}

verdict_predict() {
    id=$1; e=$(entry "$id"); choices=$(field "$e" 4); f=$(answers_file "$id")
    got=$(answer_of "$id")
    if [ -z "$got" ]; then
        VERDICT=todo; DETAIL="not answered: write '$id = <your prediction>' in $f before you run it"; return
    fi
    if [ -n "$choices" ] && ! printf '%s\n' "$choices" | tr ',' '\n' | grep -qx -- "$got"; then
        VERDICT=fail; DETAIL="answer one of: $(printf '%s' "$choices" | sed 's/,/, /g') (you wrote '$got')"; return
    fi
    VERDICT=ok
    DETAIL="prediction recorded ($got): run the command in EXERCISES.md and compare with what it shows"
}

verdict() {
    case $(field "$(entry "$1")" 2) in
    implement) verdict_implement "$1" "$RUN" ;;
    compute) verdict_compute "$1" ;;
    predict) verdict_predict "$1" ;;
    *) die "$1: unknown kind in tools/exercises.txt" ;;
    esac
}

# One exercise's report: "ex05.1  implement  title ........ verdict", then the detail, wrapped and indented.
report() {
    e=$(entry "$1")
    case $VERDICT in ok) word="ok" ;; todo) word="to do" ;; *) word="FAIL" ;; esac
    printf '%s|%s|%s|%s\n' "$1" "$(field "$e" 2)" "$(field "$e" 3)" "$word" |
        awk -F'|' '{ t = $3 " "; while (length(t) < 64) t = t "."; printf "%-7s %-9s  %s %s\n", $1, $2, t, $4 }'
    [ -z "$DETAIL" ] || printf '%s\n' "$DETAIL" | fold -s -w 100 | sed 's/^/        /'
}

check() {
    [ -f "$TABLE" ] || die "$TABLE is missing: run this from the repository's top folder"
    ids=$(select_ids "$@")
    n=0; n_ok=0; last_ch=""
    for id in $ids; do
        ch=$(printf '%s' "$id" | cut -c3-4)
        if [ "$ch" != "$last_ch" ]; then
            [ -n "$last_ch" ] && echo
            echo "chapter $ch: $(chapter_of "$id")/EXERCISES.md"
            last_ch=$ch
        fi
        verdict "$id"
        report "$id"
        n=$((n + 1)); [ "$VERDICT" = ok ] && n_ok=$((n_ok + 1))
    done
    echo
    if [ "$n_ok" -eq "$n" ]; then echo "all $n exercises pass"; return 0; fi
    echo "$n_ok of $n exercises pass"
    return 1
}

key() {
    for id in $(select_ids "$@"); do
        [ "$(field "$(entry "$id")" 2)" = compute ] && echo "$id = $(expected_of "$id")"
    done
    return 0
}

# ---- the student tree ---------------------------------------------------------------------------------
student() {
    [ $# -ge 1 ] || die "usage: tools/exercises.sh student OUT [NN]"
    out=$1; ch=${2:-}
    [ -z "$ch" ] || select_ids "$ch" > /dev/null
    if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
        die "$out already exists and is not empty: remove it or choose another OUT (a student's work is never overwritten)"
    fi
    mkdir -p "$out"
    # the repository's files as committed (no .git: its history holds the solutions), else every file
    # outside build/ that is not a built program
    if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
        git ls-files -z | tar --null -T - -cf - | tar -C "$out" -xf -
    else
        find . -path ./build -prune -o -type f ! -name '*.o' ! -name '*.d' -print | grep -vE '^\./(ch[0-9][0-9]|train|infer|kvcache|contactsheet|bench)$' |
            tar -T - -cf - | tar -C "$out" -xf -
    fi
    n_regions=0
    for f in $(marked_files); do
        transform stub "$f" "$ch" > "$out/$f.tmp"
        mv "$out/$f.tmp" "$out/$f"
    done
    for id in $(select_ids $ch); do
        [ "$(field "$(entry "$id")" 2)" = implement ] && n_regions=$((n_regions + 1))
    done
    for d in $(select_ids $ch | cut -c3-4 | sort -u); do
        dir=$(ls -d chapters/"$d"_* | head -1)
        {
            echo "# Answers to the lab of $dir (EXERCISES.md there). One line per exercise, 'exNN.M = answer':"
            echo "# compute: a number, in the unit the exercise asks for; predict: your prediction, written before"
            echo "# you run anything. Then: make check EX=$d"
            for id in $(select_ids "$d"); do
                [ "$(field "$(entry "$id")" 2)" = implement ] || echo "$id = "
            done
        } > "$out/$dir/answers.txt"
    done
    echo "exercises: wrote $out: ${ch:+chapter $ch, }$n_regions regions to implement, answers.txt in every lab"
    echo "  students start at $( [ -n "$ch" ] && echo "$(ls -d chapters/"$ch"_*)/EXERCISES.md" || echo "chapters/NN_name/EXERCISES.md"), and check with 'make check EX=${ch:-NN}'"
}

# ---- consistency and the self-test ------------------------------------------------------------------
lint() {
    table > /dev/null   # fills $TMP/table
    regions > "$TMP/regions" || die "a marked region is malformed (above)"
    sed -n 's/^Test(\(ex[0-9_]*\),.*/\1/p' tests/test_exercises.c | sort -u > "$TMP/suites"
    : > "$TMP/mentions"
    for md in chapters/*/EXERCISES.md; do
        [ -f "$md" ] && grep -o 'ex[0-9][0-9]\.[0-9]*' "$md" | sort -u | sed "s|^|$md |" >> "$TMP/mentions"
    done
    ls -d chapters/[0-9][0-9]_* > "$TMP/dirs"
    ls data/configs > "$TMP/configs"
    # one pass over everything: the table's own rules, then each id against the code, the tests, the
    # chapter folders, their EXERCISES.md and the configs
    awk -F'|' -v table="$TABLE" '
        function err(m) { print "exercises lint: " m > "/dev/stderr"; bad++ }
        FILENAME ~ /regions$/ { split($0, r, "\t"); marked[r[1]]++; next }
        FILENAME ~ /suites$/ { suite[$0] = 1; next }
        FILENAME ~ /mentions$/ { split($0, m, " "); md = m[1]; mentioned[md SUBSEP m[2]] = 1; has_md[md] = 1; next }
        FILENAME ~ /dirs$/ { d = $0; sub(/^chapters\//, "", d); dir[substr(d, 1, 2)] = $0; next }
        FILENAME ~ /configs$/ { config[$0] = 1; next }
        {
            id = $1; kind = $2; n_rows++
            if (id !~ /^ex[0-9][0-9]\.[0-9]+$/) { err(id ": ids look like ex05.2"); next }
            if (seen[id]++) err(id ": listed twice in " table)
            if ($3 == "") err(id ": no title")
            ch = substr(id, 3, 2); chapters[ch] = 1
            if (!(ch in dir)) { err(id ": no chapters/" ch "_* folder"); next }
            md = dir[ch] "/EXERCISES.md"
            if (!(md in has_md)) err(id ": " md " is missing")
            else if (!((md SUBSEP id) in mentioned)) err(id ": " md " does not mention it")
            if (kind == "implement") {
                implement[id] = 1
                if (marked[id] != 1) err(id ": marked " (marked[id] + 0) " times in the code, not once")
                if (!($4 in suite)) err(id ": no Test(" $4 ", ...) in tests/test_exercises.c")
            } else if (kind == "compute") {
                c = $4; sub(/ .*/, "", c)
                if (!(c in config)) err(id ": no config data/configs/" c)
                if ($6 !~ /^(exact|[0-9.]+%)$/) err(id ": tolerance \"" $6 "\" is not exact or N%")
            } else if (kind == "predict") {
                if ($4 == "") err(id ": list the answers a student may write (a,b,c)")
            } else err(id ": kind \"" kind "\" is not implement, compute or predict")
        }
        END {
            for (id in marked) if (!(id in implement)) err(id ": marked in the code but not an implement exercise of " table)
            for (md in has_md) { ch = md; sub(/^chapters\//, "", ch); ch = substr(ch, 1, 2); if (!(ch in chapters)) err(md ": no exercises in " table) }
            exit bad > 0
        }' "$TMP/regions" "$TMP/suites" "$TMP/mentions" "$TMP/dirs" "$TMP/configs" "$TMP/table"
}

# For every implement exercise, the stub alone (EXERCISE_STUB=id in the select build) fails its checker
# as "not started" and the reference passes it; the student tree with every stub builds (the Makefile
# compiles it with -Werror) and every checker reports its stub; every compute answer is checked by
# ./kvcache (empty: to do; the calculator's value: ok; 1.5 times it: wrong); every prediction is read.
selftest() {
    [ $# -eq 3 ] || die "usage: tools/exercises.sh selftest SELECT_RUN STUDENT_RUN REFERENCE_RUN"
    sel=$1; stu=$2; ref=$3
    lint
    n=0; fails=0
    bad() { echo "exercises self-test: $*" >&2; fails=$((fails + 1)); }
    # the reference and the all-stub student tree: one run of every focused test each, then each
    # exercise's verdict from its own suite's part of the report
    run_tests "$ref" 'ex*/*'; mv "$TMP/tap" "$TMP/ref.tap"; mv "$TMP/err" "$TMP/ref.err"
    run_tests "$stu" 'ex*/*'; mv "$TMP/tap" "$TMP/stu.tap"; mv "$TMP/err" "$TMP/stu.err"
    for id in $(table | awk -F'|' '$2 == "implement" { print $1 }'); do
        suite=$(field "$(entry "$id")" 4)
        EXERCISE_STUB=$id verdict_implement "$id" "$sel"
        [ "$VERDICT" = todo ] || bad "$id: its stub alone should fail its checker as not started, got $VERDICT: $DETAIL"
        for tree in ref stu; do
            awk -v s="$suite" '/^(not )?ok - / { keep = index($0, " - " s "::") > 0 } keep' "$TMP/$tree.tap" > "$TMP/one.tap"
            verdict_parse "$id" "$suite" 0 "$TMP/one.tap" "$TMP/$tree.err"
            want=ok; [ "$tree" = stu ] && want=todo
            [ "$VERDICT" = "$want" ] || bad "$id: in the $([ "$tree" = ref ] && echo reference || echo student tree) its checker says $VERDICT, not $want: $DETAIL"
        done
        n=$((n + 1))
    done
    nc=0
    : > "$TMP/empty"
    key > "$TMP/key"
    awk -F' = ' '{ printf "%s = %.9g\n", $1, $2 * 1.5 }' "$TMP/key" > "$TMP/wrong"
    for id in $(table | awk -F'|' '$2 == "compute" { print $1 }'); do
        EX_ANSWERS=$TMP/empty verdict_compute "$id"
        [ "$VERDICT" = todo ] || bad "$id: an empty answer should be 'to do', got $VERDICT"
        EX_ANSWERS=$TMP/key verdict_compute "$id"
        [ "$VERDICT" = ok ] || bad "$id: the calculator's own answer should pass, got $VERDICT: $DETAIL"
        EX_ANSWERS=$TMP/wrong verdict_compute "$id"
        [ "$VERDICT" = fail ] || bad "$id: 1.5 times the answer should fail, got $VERDICT"
        nc=$((nc + 1))
    done
    np=0
    for id in $(table | awk -F'|' '$2 == "predict" { print $1 }'); do
        EX_ANSWERS=$TMP/empty verdict_predict "$id"
        [ "$VERDICT" = todo ] || bad "$id: an empty prediction should be 'to do', got $VERDICT"
        echo "$id = $(field "$(entry "$id")" 4 | cut -d, -f1)" > "$TMP/pred"
        EX_ANSWERS=$TMP/pred verdict_predict "$id"
        [ "$VERDICT" = ok ] || bad "$id: a listed answer should be recorded, got $VERDICT: $DETAIL"
        np=$((np + 1))
    done
    [ "$fails" -eq 0 ] || exit 1
    echo "  exercises: $n to implement (each stub fails its checker, the reference passes, the all-stub tree builds" \
         "without warnings), $nc computed answers checked by ./kvcache, $np predictions"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in student|check|key|lint|selftest) load_table ;; esac
case $cmd in
student) student "$@" ;;
check) check "$@" ;;
key) key "$@" ;;
stub) [ $# -ge 1 ] || die "usage: tools/exercises.sh stub FILE [NN]"; transform stub "$1" "${2:-}" ;;
select) [ $# -eq 1 ] || die "usage: tools/exercises.sh select FILE"; transform select "$1" ;;
list) regions ;;
lint) lint ;;
selftest) selftest "$@" ;;
*) sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
esac
