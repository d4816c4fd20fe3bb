# Sourced by the bench scripts. settle_disk: sync, then wait (up to 60 s)
# until no task has waited on I/O over the last 10 s. Writeback left by an
# earlier scenario slows PostgreSQL's commits: bench/acct-pg.sh gave
# 22,796 interims/s idle and 9,243/s with a 3 GB write going on, and
# 6,949/s right after the 5-minute embedded load in a compare run
# (2026-12-07; tuning.md, "Accounting and PostgreSQL").
# Sets settled: "N% after S s", the pressure it stopped at and its wait.
# (A run's own fsyncs count as I/O waits too: read it before a run.)
settle_disk() {
    sync
    local waited=0 p
    p=$(io_pressure)
    while [ "$waited" -lt 60 ] && [ "$p" != "?" ] && awk -v p="$p" 'BEGIN { exit !(p > 1.0) }'; do
        sleep 1
        waited=$((waited + 1))
        p=$(io_pressure)
    done
    settled="$p% after ${waited} s"
}
# The share of the last 10 s in which some task waited on I/O (%), "?"
# without pressure stall information.
io_pressure() {
    awk '/^some/ { split($2, a, "="); print a[2]; found = 1 } END { if (!found) print "?" }' \
        /proc/pressure/io 2>/dev/null || echo "?"
}
