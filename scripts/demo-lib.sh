# Shared by the demo scripts (sourced): sections, lines, and checks that
# print ok or FAIL and count failures in $failures.
failures=0
if [ -t 1 ]; then bold=$'\e[1m'; green=$'\e[32m'; red=$'\e[31m'; off=$'\e[0m'; else bold= green= red= off=; fi
section() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
say() { printf '   %s\n' "$*"; }
indent() { sed "s/^/   /"; }
# check DESCRIPTION COMMAND...: runs the command, prints ok or FAIL (with its output).
check() {
	local desc=$1 out
	shift
	if out=$("$@" 2>&1); then
		printf '   %sok%s    %s\n' "$green" "$off" "$desc"
	else
		printf '   %sFAIL%s  %s\n' "$red" "$off" "$desc"
		printf '%s\n' "$out" | sed 's/^/         /'
		failures=$((failures + 1))
	fi
}
# fails COMMAND...: succeeds when the command fails (for "must not reach").
fails() { ! "$@"; }
