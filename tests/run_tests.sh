#!/bin/sh
# Runs each test binary given as an argument, prints its output, and sums the
# "RESULT <p> passed, <f> failed" lines. A binary that exits non-zero without a RESULT line
# (a crash) counts as one failure. The last line is "N passed, N failed"; exit 1 on any failure.
# MG_TEST_WRAP: a command put in front of each binary (make test-valgrind: valgrind and its options).
passed=0; failed=0
for t in "$@"; do
    echo "== $t"
    out=$(${MG_TEST_WRAP} "$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -1)
    if [ -z "$line" ]; then
        echo "!! $t exited with $rc and printed no RESULT line"; failed=$((failed + 1)); continue
    fi
    p=$(echo "$line" | sed -n 's/^RESULT \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p')
    f=$(echo "$line" | sed -n 's/^RESULT \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "!! $t exited with $rc"; fi
    passed=$((passed + p)); failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
