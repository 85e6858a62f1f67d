#!/usr/bin/env bash
# instructions-per-op.sh TEST_BINARY BENCHMARK [N1 N2]
#
# Counts the instructions one operation of a Go benchmark executes, with
# valgrind's callgrind: the benchmark runs N1 and then N2 times, each in a
# process of its own, and the difference of the two totals divided by
# N2 - N1 is the count per operation, setup and teardown cancelled out.
# Unlike CPU time, the count does not move with the machine's neighbours,
# so a change of a few percent shows from one pair of runs. One processor
# (GOMAXPROCS=1) and no asynchronous preemption (which callgrind's signal
# handling cannot follow) keep the schedule repeatable. cpu.rdtscp=off keeps
# the runtime's lock timing off RDTSCP, an instruction valgrind 3.19 cannot
# run: a contended runtime lock would otherwise end the run part-way.
set -euo pipefail
bin=$1 bench=$2 n1=${3:-1000} n2=${4:-4000}
count() {
	local out
	if ! out=$(GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off GOMAXPROCS=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
		"$bin" -test.run '^$' -test.bench "^${bench}\$" -test.benchtime "${1}x" 2>&1 >/dev/null); then
		printf '%s\n' "$out" | tail -20 >&2
		echo "instructions-per-op: the run of $1 operations failed" >&2
		return 1
	fi
	printf '%s\n' "$out" | sed -n 's/^==[0-9]*== Collected : //p'
}
i1=$(count "$n1")
i2=$(count "$n2")
if [ -z "$i1" ] || [ -z "$i2" ]; then
	echo "instructions-per-op: callgrind counted nothing (is $bench in $bin?)" >&2
	exit 1
fi
echo "$bench: $(( (i2 - i1) / (n2 - n1) )) instructions/op ($n1 runs: $i1, $n2 runs: $i2)"
