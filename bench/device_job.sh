#!/usr/bin/env bash
# A bench command longer than one call of the lent GPU machine allows (10 minutes), run as one process:
#
#   bash bench/device_job.sh start python3 bench/bench.py run ... --out /tmp/bench-job/out   # returns at once
#   bash bench/device_job.sh wait 560      # follows it up to 560 s, copies its JSON and log to $OUT; repeat
#
# `start` launches the command in its own process session, so it outlives the call that started it; each `wait`
# call copies what the job has written so far (a cut-off job keeps its finished steps) and returns early once the
# job ends, with the job's exit status. Issue the `wait` calls back to back: the machine goes back after 30 s idle.
set -u
J=/tmp/bench-job
OUT=${OUT:-$J/copy}
noise='it/s\]|s/it\]|Registered <class|UserWarning|warnings.warn|Inserted [0-9]+ quantizers|warn_rank_0'
case "${1:-}" in
  start)
    shift
    [ -f $J/pid ] && kill -0 "$(cat $J/pid)" 2>/dev/null && { echo "a job is already running (pid $(cat $J/pid))"; exit 1; }
    rm -rf $J; mkdir -p $J
    printf '%q ' "$@" > $J/command
    setsid nohup bash -c "$(cat $J/command) > $J/log 2>&1; echo \$? > $J/rc" < /dev/null > /dev/null 2>&1 &
    echo $! > $J/pid
    echo "started pid $(cat $J/pid): $(cat $J/command)"
    ;;
  wait)
    limit=${2:-560}
    [ -f $J/pid ] || { echo "no job was started on this machine (it may be a fresh one)"; exit 2; }
    while [ ! -f $J/rc ] && [ $SECONDS -lt "$limit" ]; do sleep 5; done
    mkdir -p "$OUT"
    grep -v -E "$noise" $J/log > "$OUT/job.log"
    find $J/out -maxdepth 1 -name '*.json' -exec cp {} "$OUT/" \; 2>/dev/null
    tail -n 40 "$OUT/job.log"
    if [ -f $J/rc ]; then echo "job finished, exit status $(cat $J/rc)"; exit "$(cat $J/rc)"; fi
    echo "job still running after ${limit}s: call wait again"
    ;;
  *) echo "usage: $0 start COMMAND... | wait SECONDS"; exit 2 ;;
esac
