#!/bin/sh
# One shard of a scenario, from one replica of docker-compose.yml's `driver` service.
#
#   DRIVERS=4 docker compose --profile load up --scale driver=4 driver
#
# Compose gives every replica the same environment, so the replica cannot be told its shard
# index. It works it out instead: the service's name resolves, on Compose's network, to the
# address of every running replica. Once DRIVERS addresses answer, each replica sorts them and
# takes its own position as its index (1..DRIVERS). All replicas see the same set, so the indices
# are distinct and cover 1..DRIVERS: the shards partition the schedule. FANBENCH_SHARD=i/n skips
# the discovery (one machine per shard, outside Compose).
#
# The shards' schedules must start together, or the merged timeline smears (`fanbench merge`
# warns past 1 s). START_AT (Unix seconds) says when; without it each replica waits for the next
# multiple of 10 s at least 3 s away, which the replicas share unless they found their peers
# either side of one (then merge warns, and you rerun with START_AT).
#
# Settings (environment):
#   DRIVERS         the number of replicas (the N of --scale driver=N); required without FANBENCH_SHARD
#   TARGET          the URL every shard loads (default http://lb:7003, the async API's balancer)
#   SCENARIO        the scenario file (default /scenarios/peak-registration.toml)
#   SHARD_OUT       where shard folders go (default /shards: shard-<i>of<n>/ each)
#   START_AT        when the schedules start, Unix seconds
#   DRIVER_SERVICE  the name that resolves to every replica (default driver)
#   SHARD_WAIT      seconds to wait for the replicas to appear (default 120)
#   FANBENCH        the fanbench binary (default fanbench)
#   SHARD_SELF, SHARD_PEERS   this replica's address and every replica's (space-separated), in
#                   place of the lookups, to try the script outside Compose
#   SHARD_DRY_RUN=1 print the command instead of running it
# Extra arguments go to `fanbench run`.
set -eu

say() { echo "driver-shard: $*" >&2; }
die() { say "$*"; exit 2; }

peers() {
    if [ -n "${SHARD_PEERS:-}" ]; then
        printf '%s\n' $SHARD_PEERS
    else
        getent ahostsv4 "${DRIVER_SERVICE:-driver}" | awk '{ print $1 }'
    fi | sort -u | sort -t . -k1,1n -k2,2n -k3,3n -k4,4n
}

if [ -n "${FANBENCH_SHARD:-}" ]; then
    shard=$FANBENCH_SHARD
else
    : "${DRIVERS:?set DRIVERS to the number of driver replicas (the N of --scale driver=N)}"
    case $DRIVERS in '' | *[!0-9]* | 0) die "DRIVERS must be a positive whole number, not '$DRIVERS'" ;; esac
    self=${SHARD_SELF:-$(getent ahostsv4 "$(hostname)" | awk '{ print $1; exit }')}
    [ -n "$self" ] || die "could not find this container's own address"
    waited=0
    while :; do
        found=$(peers | grep -c . || true)
        [ "$found" -eq "$DRIVERS" ] && break
        [ "$found" -gt "$DRIVERS" ] &&
            die "$found driver replicas answer but DRIVERS=$DRIVERS: give --scale driver=N and DRIVERS=N the same N"
        [ "$waited" -ge "${SHARD_WAIT:-120}" ] &&
            die "only $found of $DRIVERS driver replicas appeared within ${SHARD_WAIT:-120} s"
        sleep 1
        waited=$((waited + 1))
    done
    index=$(peers | grep -n -x -F "$self" | cut -d: -f1)
    [ -n "$index" ] || die "this replica ($self) is not among the replicas found: $(peers | tr '\n' ' ')"
    shard="$index/$DRIVERS"
fi

now=$(date +%s)
start=${START_AT:-$(( (now + 3 + 9) / 10 * 10 ))}
case $start in '' | *[!0-9]*) die "START_AT must be Unix seconds, not '$start'" ;; esac
out="${SHARD_OUT:-/shards}/shard-$(echo "$shard" | sed 's|/|of|')"
set -- "${FANBENCH:-fanbench}" run --quiet --shard "$shard" \
    --target "${TARGET:-http://lb:7003}" --allow-remote \
    --scenario "${SCENARIO:-/scenarios/peak-registration.toml}" --out "$out" "$@"
say "shard $shard; the schedule starts at $start (now $now); results in $out"
if [ "${SHARD_DRY_RUN:-}" = 1 ]; then
    echo "$@"
    exit 0
fi
[ "$start" -gt "$now" ] && sleep $((start - now))
exec "$@"
