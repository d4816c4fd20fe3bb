//! `/metrics`: everything is read at scrape time from where it already
//! lives: the shards' published counter slots (summed here, so the packet
//! path never touches a shared atomic), the writer's and the log pool's
//! stats, the snapshot and the loader's status. prometheus-client does the
//! text encoding; the shard counters go through a [`Collector`] because
//! they are sums, not metric objects of their own.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::engine::{all_drop_reasons, Counter, DropReason, StatsSlot};
use crate::policy::RejectReason;
use crate::proto::ParseError;
use crate::server::accounting::quota::QuotaStats;
use crate::server::accounting::{AcctMessage, WriterStats};
use crate::server::logpool::LogPoolStats;
use crate::server::Shared;

/// Bucket bounds of the accounting batch size histogram (events per commit).
pub const BATCH_SIZE_BUCKETS: [f64; 10] =
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];
/// Bucket bounds of the accounting commit latency histogram (seconds).
pub const COMMIT_SECONDS_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

pub fn batch_size_histogram() -> Histogram {
    Histogram::new(BATCH_SIZE_BUCKETS)
}

pub fn commit_seconds_histogram() -> Histogram {
    Histogram::new(COMMIT_SECONDS_BUCKETS)
}

/// Where the scrape reads from.
pub struct Sources {
    pub shared: Arc<Shared>,
    pub writer: Arc<WriterStats>,
    pub logs: Arc<LogPoolStats>,
    /// A receiver of the writer queue, only to read its length.
    pub queue: crossbeam_channel::Receiver<AcctMessage>,
    pub quota: Arc<QuotaStats>,
}

/// Builds the registry once; each scrape encodes it anew.
pub fn registry(sources: Arc<Sources>) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "shardius_accounting_batch_size",
        "Accounting events per committed batch",
        sources.writer.batch_size.clone(),
    );
    registry.register(
        "shardius_accounting_commit_seconds",
        "Time to make one accounting batch durable (database or spool)",
        sources.writer.commit_seconds.clone(),
    );
    registry.register_collector(Box::new(ShardCollector(sources)));
    registry
}

/// The Prometheus text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 << 10);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

struct ShardCollector(Arc<Sources>);

impl std::fmt::Debug for ShardCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShardCollector")
    }
}

/// The Message-Authenticator failures among the drop reasons.
fn is_message_authenticator_failure(reason: DropReason) -> bool {
    matches!(
        reason,
        DropReason::BadMessageAuthenticator
            | DropReason::MissingMessageAuthenticator
            | DropReason::Malformed(ParseError::BadMessageAuthenticator)
            | DropReason::Malformed(ParseError::DuplicateMessageAuthenticator)
    )
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// One counter family with a single label.
fn labelled_counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        family
            .encode_family(&[(label, value)])?
            .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
    }
    Ok(())
}

impl Collector for ShardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let slots = &s.shared.stats;
        let sum = |c: Counter| -> u64 { slots.iter().map(|slot| slot.get(c)).sum() };

        labelled_counters(
            &mut encoder,
            "shardius_requests",
            "RADIUS requests received from known NASes, by type",
            "type",
            [
                ("access", sum(Counter::AuthRequests)),
                ("accounting", sum(Counter::AcctRequests)),
                ("status_server", sum(Counter::StatusServer)),
            ],
        )?;
        counter(
            &mut encoder,
            "shardius_access_accepts",
            "Access-Accepts sent",
            sum(Counter::Accepts),
        )?;
        let rejects: Vec<(&str, u64)> = RejectReason::ALL
            .iter()
            .map(|r| (r.metric_label(), sum(Counter::Reject(*r))))
            .collect();
        labelled_counters(
            &mut encoder,
            "shardius_access_rejects",
            "Access-Rejects sent, by reason",
            "reason",
            rejects,
        )?;
        let captive: Vec<(&str, u64)> = crate::engine::CAPTIVE_REASONS
            .iter()
            .map(|r| (r.metric_label(), sum(Counter::Captive(*r))))
            .collect();
        labelled_counters(
            &mut encoder,
            "shardius_portal_logins",
            "Logins accepted into the walled garden, by why (README \"Walled garden\")",
            "reason",
            captive,
        )?;
        let drops: Vec<(&str, u64)> = all_drop_reasons()
            .map(|d| (d.metric_label(), sum(Counter::Dropped(d))))
            .collect();
        labelled_counters(
            &mut encoder,
            "shardius_dropped_packets",
            "Datagrams not answered, by reason (see tuning.md: drop counters)",
            "reason",
            drops,
        )?;
        counter(
            &mut encoder,
            "shardius_unknown_nas_packets",
            "Datagrams from addresses that are not a configured NAS",
            sum(Counter::Dropped(DropReason::UnknownNas)),
        )?;
        counter(
            &mut encoder,
            "shardius_unknown_nas_log_suppressed",
            "unknown NAS log lines not written because the budget of lines a minute was spent",
            s.shared.unknown_nas.suppressed.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_message_authenticator_failures",
            "Requests dropped for a wrong, missing or repeated Message-Authenticator",
            all_drop_reasons()
                .filter(|d| is_message_authenticator_failure(*d))
                .map(|d| sum(Counter::Dropped(d)))
                .sum(),
        )?;
        counter(
            &mut encoder,
            "shardius_duplicates",
            "Retransmissions answered from the duplicate cache",
            sum(Counter::Duplicates),
        )?;
        counter(
            &mut encoder,
            "shardius_radius_log_dropped",
            "radius_logs rows dropped because the log queue was full",
            sum(Counter::LogDropped),
        )?;
        counter(
            &mut encoder,
            "shardius_radius_log_written",
            "radius_logs rows written",
            s.logs.written.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_radius_log_failed",
            "radius_logs rows lost because their insert failed",
            s.logs.failed.load(Ordering::Relaxed),
        )?;
        let per_shard: Vec<(String, u64)> = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let n = slot.get(Counter::AuthRequests)
                    + slot.get(Counter::AcctRequests)
                    + slot.get(Counter::StatusServer);
                (i.to_string(), n)
            })
            .collect();
        labelled_counters(
            &mut encoder,
            "shardius_shard_requests",
            "Requests handled per shard (how SO_REUSEPORT spreads the load)",
            "shard",
            per_shard.iter().map(|(i, n)| (i.as_str(), *n)),
        )?;
        let latency = StatsSlot::latency_histogram(slots.iter());
        encoder
            .encode_descriptor(
                "shardius_auth_latency_seconds",
                "Access-Request handling time in the shard, receive to send",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                latency.sum_seconds,
                latency.count,
                &latency.buckets,
                None,
            )?;

        // Accounting writer.
        let w = &s.writer;
        counter(
            &mut encoder,
            "shardius_accounting_events_written",
            "Accounting events made durable (database or spool)",
            w.events.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_batches_committed",
            "Accounting batches made durable",
            w.batches.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_rows_written",
            "radacct rows upserted (a batch folds events of one session into one row)",
            w.rows.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_backpressure_drops",
            "Accounting-Requests not acknowledged because the writer queue was full",
            sum(Counter::Dropped(DropReason::AccountingBackpressure)),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_nas_ip_mismatch",
            "Accounting-Requests naming a NAS-IP-Address that is not one of their NAS entry's addresses (recorded under the entry's own)",
            sum(Counter::AcctForeignNasIp),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_spooled_batches",
            "Accounting batches acknowledged from the local spool while the database was away",
            w.spooled_batches.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_stalled_batches",
            "Batches that neither the database nor the spool took at first try (spool full)",
            w.stalled_batches.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_overlapped_batches",
            "Batches handed to one of accounting.writer_connections while an earlier batch was still being written",
            w.overlapped_batches.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_lane_rewrites",
            "Batches a writer connection could not write (a refused row, the database away), written again on the writer's own before anything after them was acknowledged",
            w.lane_rewrites.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_replayed_batches",
            "Spool records written to the database after an outage",
            w.replayed_batches.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_events_rejected",
            "Acknowledged events the database refused for their data, set aside in the .rejected file beside the spool",
            w.rejected_events.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_spool_unreadable_bytes",
            "Damaged spool bytes that held no readable record, copied to the .unreadable file beside the spool",
            w.spool_unreadable_bytes.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_counters_clamped",
            "Accounting events whose octet counter exceeded 2^63-1 (Gigawords >= 2^31) and was stored clamped",
            w.clamped_events.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_abandoned_events",
            "Events left unacknowledged at shutdown because neither the database nor the spool took them",
            w.abandoned_events.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_accounting_stale_sessions_closed",
            "Open sessions closed by the stale-session job",
            w.stale_closed.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "shardius_accounting_queue_depth",
            "Accounting events waiting for the writer",
            s.queue.len() as u64,
        )?;
        gauge(
            &mut encoder,
            "shardius_accounting_queue_capacity",
            "Capacity of the writer queue (accounting.queue_capacity)",
            s.shared.config.accounting.queue_capacity as u64,
        )?;
        gauge(
            &mut encoder,
            "shardius_accounting_spool_bytes",
            "Bytes in the accounting spool waiting for the database",
            w.spool_bytes.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "shardius_accounting_spooling",
            "1 while accounting goes to the spool instead of the database",
            u64::from(w.spooling.load(Ordering::Relaxed)),
        )?;

        // Snapshot, database, process.
        let status = s.shared.status();
        gauge(
            &mut encoder,
            "shardius_nas_loaded",
            "NAS devices in the loaded snapshot",
            status.nas as u64,
        )?;
        gauge(
            &mut encoder,
            "shardius_subscribers_cached",
            "Subscribers in the loaded snapshot",
            status.subscribers as u64,
        )?;
        gauge(
            &mut encoder,
            "shardius_snapshot_age_seconds",
            "Seconds since the snapshot was last confirmed current against the database",
            status.snapshot_age.as_secs_f64(),
        )?;
        gauge(
            &mut encoder,
            "shardius_static_ip_conflicts",
            "Static IPs (static_ip, radreply Framed-IP-Address) that several subscribers have, as of the last load",
            s.shared
                .static_ip_conflicts
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        // Address pools: this node's view, refreshed every second.
        let pools = s
            .shared
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts();
        let mut family = encoder.encode_descriptor(
            "shardius_pool_addresses",
            "Addresses (or IPv6 prefixes) of each server-side pool by state, as this node last read them",
            None,
            MetricType::Gauge,
        )?;
        for p in &pools {
            for (state, n) in [
                ("free", p.free),
                ("offered", p.offered),
                ("in_use", p.in_use),
                ("held", p.held),
            ] {
                family
                    .encode_family(&[("pool", p.name.as_str()), ("state", state)])?
                    .encode_gauge(&n)?;
            }
        }
        labelled_counters(
            &mut encoder,
            "shardius_pool_exhausted",
            "Logins rejected with reason \"pool exhausted\", by pool",
            "pool",
            pools.iter().map(|p| (p.name.as_str(), p.exhausted_total)),
        )?;
        counter(
            &mut encoder,
            "shardius_ip_conflicts",
            "Two open sessions found reporting one IPv4 address (counted once per pair while it lasts)",
            s.shared.ip_conflicts.load(Ordering::Relaxed),
        )?;
        // Simultaneous use.
        let sessions = &s.shared.sessions;
        counter(
            &mut encoder,
            "shardius_sessions_replaced",
            "Open sessions a login over its limit had disconnected (over_limit replace)",
            sessions.replaced.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_sessions_replace_unsent",
            "Of those, Disconnects not queued because the CoA queue was full",
            sessions.replace_unsent.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_session_syncs",
            "Reads of every open radacct row into the node's session view (only while some subscriber has a session limit)",
            sessions.syncs.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "shardius_sessions_known",
            "Open sessions in the node's session view after the last sync",
            sessions.known.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut encoder,
            "shardius_database_up",
            "1 when the last query of the loader succeeded",
            u64::from(status.database_up),
        )?;
        if let Some(open) = status.open_sessions {
            gauge(
                &mut encoder,
                "shardius_open_sessions",
                "Open sessions in radacct (refreshed every database.open_sessions_interval_secs)",
                open,
            )?;
        }
        gauge(
            &mut encoder,
            "shardius_shards",
            "Shards (executor threads)",
            status.shards as u64,
        )?;
        gauge(
            &mut encoder,
            "shardius_shards_alive",
            "Shards that published their counters within the last 2 s",
            status.shards_alive as u64,
        )?;
        gauge(
            &mut encoder,
            "shardius_uptime_seconds",
            "Seconds since the server started",
            status.uptime.as_secs_f64(),
        )?;
        s.shared.coa.encode(&mut encoder)?;
        let lead = &s.shared.leadership;
        gauge(
            &mut encoder,
            "shardius_cluster_nodes_alive",
            "Nodes of the cluster whose heartbeat is fresh (cluster.node_dead_after_ms)",
            lead.nodes_alive.load(Ordering::Relaxed),
        )?;
        let mut family = encoder.encode_descriptor(
            "shardius_job_leader",
            "1 if this node leads the singleton job, else 0",
            None,
            MetricType::Gauge,
        )?;
        for job in crate::model::JOBS {
            family
                .encode_family(&[("job", job)])?
                .encode_gauge(&u64::from(lead.leads(job)))?;
        }
        labelled_counters(
            &mut encoder,
            "shardius_job_leader_changes",
            "Changes of a singleton job's leader seen by this node",
            "job",
            crate::model::JOBS.iter().map(|j| (*j, lead.changes(j))),
        )?;
        counter(
            &mut encoder,
            "shardius_fup_tier_changes",
            "Subscribers moved into a higher FUP tier by their usage",
            s.quota.tier_changes.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "shardius_quota_usage_errors",
            "Usage updates that failed after their accounting batch was committed",
            s.quota.usage_errors.load(Ordering::Relaxed),
        )?;
        let mut info = encoder.encode_descriptor(
            "shardius_build",
            "Build information",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}

/// The `/healthz` body and whether it is healthy.
pub fn health(shared: &Shared) -> (bool, String) {
    let status = shared.status();
    let healthy = status.shards_alive == status.shards;
    let word = match (healthy, status.database_up) {
        (false, _) => "unhealthy",
        (true, false) => "degraded",
        (true, true) => "ok",
    };
    let body = serde_json::json!({
        "status": word,
        "shards": status.shards,
        "shards_alive": status.shards_alive,
        "database": if status.database_up { "up" } else { "down" },
        "snapshot_age_seconds": (status.snapshot_age.as_secs_f64() * 10.0).round() / 10.0,
        "nas": status.nas,
        "subscribers": status.subscribers,
        "uptime_seconds": status.uptime.as_secs(),
    })
    .to_string();
    (healthy, body)
}
