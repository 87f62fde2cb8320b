# Sourced by the CLI test scripts: a scratch directory removed on exit, and
# `check NAME CONDITION...`, which prints ok/FAIL and counts failures in $fail.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
check() {
  local name="$1"; shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=$((fail + 1)); fi
}
