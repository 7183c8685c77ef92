# Sourced by the benchmarks: `record` latency, measured the same way for every store.
#
#   record_latency BIN DB CALLS WORK [RUN_PREFIX]
#
# Times CALLS `record` calls (process start included) against the store DB, each a new run
# (`RUN_PREFIX-N`, default `bench-N`: a second call on one store takes another prefix) of
# one of 5,000 pipelines with a registry cache import, an inline cache export, an image and a
# cache mount, and prints the median and the 95th percentile in milliseconds: `MEDIAN P95`.
# WORK is a scratch directory.
record_latency() {
    local bin=$1 db=$2 calls=$3 work=$4 prefix=${5:-bench} i start end
    : >"$work/times"
    for i in $(seq 1 "$calls"); do
        start=$(date +%s%N)
        "$bin" --db "$db" record --pipeline "p$((i % 5000))" --run "$prefix-$i" --builder b7 \
            --cache-from "registry.example.com/p1/cache:main@sha256:$(printf '%064x' "$i")" \
            --cache-to type=inline --image "registry.example.com/p1/app:$i" --mount /root/.cache/pip \
            2>/dev/null
        end=$(date +%s%N)
        echo $(((end - start) / 1000)) >>"$work/times"
    done
    sort -n "$work/times" | awk '{a[NR]=$1} END {
        printf "%.2f %.2f\n", a[int((NR+1)/2)] / 1000, a[int(NR*0.95)] / 1000 }'
}
