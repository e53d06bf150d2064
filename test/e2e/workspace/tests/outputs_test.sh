#!/bin/bash
# Checks the outputs of //gen, //cc and //tree. Arguments are runfiles-relative paths.
set -euo pipefail

words_upper=$1 words_summary=$2 big_input_upper=$3 big_input_digest=$4 big_output=$5
hello_output=$6 tree=$7 tree_listing=$8 tree_consumer=$9

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
expect_eq() { [[ "$1" == "$2" ]] || fail "$3: expected [$2], got [$1]"; }
size() { wc -c < "$1" | tr -d ' '; }

expect_eq "$(head -n 1 "$words_upper")" "WORD-0001" "words_upper first line"
expect_eq "$(size "$words_upper")" 2000 "words_upper size"
expect_eq "$(cat "$words_summary")" $'200\nWORD-0001\nWORD-0200' "words_summary"

expect_eq "$(size "$big_input_upper")" 40960 "big_input_upper size"
expect_eq "$(head -n 1 "$big_input_upper")" "BIG-INPUT LINE 00000 AAAAAAAAAAAAAAAAAA" "big_input_upper first line"
expect_eq "$(head -n 1 "$big_input_digest")" 40960 "big_input_digest size line"
expect_eq "$(sed -n 2p "$big_input_digest" | wc -c | tr -d ' ')" 65 "big_input_digest sha256 line"

expect_eq "$(size "$big_output")" 5242880 "big_output size"
expect_eq "$(head -n 3 "$big_output" | tr '\n' ' ')" "1 2 3 " "big_output head"

expect_eq "$(cat "$hello_output")" $'Hello, reapi!\n40960 d138670b' "hello_output"

[[ -d "$tree" ]] || fail "$tree is not a directory"
expect_eq "$(cat "$tree/a.txt")" "alpha" "tree/a.txt"
expect_eq "$(size "$tree/b.txt")" 292 "tree/b.txt size"
expect_eq "$(cat "$tree/sub/nested/deep.txt")" "deep file" "tree/sub/nested/deep.txt"
[[ -x "$tree/bin/tool.sh" ]] || fail "tree/bin/tool.sh is not executable"
expect_eq "$("$tree/bin/tool.sh")" "tree tool ran" "tree/bin/tool.sh output"

expect_eq "$(cat "$tree_listing")" "./a.txt 6
./b.txt 292
./bin/tool.sh 29
./sub/copy.txt 24
./sub/nested/deep.txt 10" "tree_listing"
expect_eq "$(cat "$tree_consumer")" $'alpha\n100\ndeep file\ntree tool ran' "tree_consumer"

if [[ $failures -ne 0 ]]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all checks passed"
