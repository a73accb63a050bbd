# shellcheck shell=bash
# shellcheck disable=SC2034 # scenario_failed is read by the sourcing scripts
# Assertions shared by the suites under tests/systemd: each prints one line, "ok" or
# "FAIL [scenario]", and a failure marks the scenario the sourcing script is in
# ($current) as failed ($scenario_failed), without stopping it, so every check of a
# scenario is reported.

current=""
scenario_failed=0

fail() {
  echo "  FAIL [$current]: $*"
  scenario_failed=1
}
ok() { echo "  ok   $*"; }

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
  if [[ $2 == "$3" ]]; then ok "$1 = $2"; else fail "$1 = '$2', expected '$3'"; fi
}
# expect_match WHAT TEXT REGEX
expect_match() {
  if [[ $2 =~ $3 ]]; then ok "$1 ~ /$3/"; else fail "$1 does not match /$3/: '$2'"; fi
}
