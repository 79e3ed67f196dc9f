#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the module for FUZZTIME (default 10s)
# each. `go test -fuzz` takes one target in one package at a time.
#
# Each new interesting input is minimized for at most FUZZMINIMIZETIME
# (default 2s; Go's default is 60s). Disk images are large inputs: with
# Go's default the workers of FuzzReader (a FAT file system) and
# FuzzReadImage (an uploaded firmware image) spent minutes minimizing and
# ran 0 inputs a second (198 in 150 s); with 2s, 250,000 in 40 s.
#
# Go 1.26's fuzzing coordinator can end a run that found nothing with
# "context deadline exceeded" when -fuzztime expires while a worker is
# busy (go.dev/issue/75804, fixed in Go 1.27); seen in CI under load, in
# FuzzReader while a worker was minimizing a new input and in
# FuzzShortNames. A run that fails that way, and only that way (no
# failing input written, no panic, no other error), is run again, up to
# $tries runs in all; any other failure fails.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-10s}"
FUZZMINIMIZETIME="${FUZZMINIMIZETIME:-2s}"
tries=3
log=$(mktemp)
trap 'rm -f "$log"' EXIT
n=0
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		for try in $(seq "$tries"); do
			echo "fuzz: $pkg $target ($FUZZTIME)"
			if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" "$pkg" 2>&1 | tee "$log"; then
				break
			fi
			if [ "$try" -lt "$tries" ] && grep -q 'context deadline exceeded' "$log" &&
				! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"; then
				echo "fuzz: $target ended with the fuzzing engine's deadline race (go.dev/issue/75804), nothing found; again"
				continue
			fi
			exit 1
		done
		n=$((n+1))
	done
done
echo "fuzz: $n targets fuzzed"
