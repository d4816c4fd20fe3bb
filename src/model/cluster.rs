//! The rows of the cluster tables: nodes, job leases and the fence a
//! leader's writes carry.

use chrono::{DateTime, Utc};

/// Stale-session cleanup.
pub const STALE_SESSIONS_JOB: &str = "stale-sessions";
/// Disconnects of expired, disabled and deleted subscribers.
pub const EXPIRY_JOB: &str = "expiry";
/// Usage resets and FUP tier CoAs.
pub const QUOTA_JOB: &str = "quota-reset";
/// The singleton jobs: each runs on the one node holding its lease.
pub const JOBS: [&str; 3] = [STALE_SESSIONS_JOB, EXPIRY_JOB, QUOTA_JOB];

/// What a node writes with each heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// The listen addresses, `auth=...,acct=...`.
    pub listen: String,
    pub version: String,
    pub snapshot_age_ms: i64,
    pub spool_bytes: i64,
}

/// A row of `cluster_nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub info: NodeInfo,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
}

/// A row of `cluster_leases`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub job: String,
    pub holder: String,
    pub epoch: i64,
    pub expires_at: DateTime<Utc>,
}

/// The proof a leader's write carries: it commits only while `node`
/// still holds `job`'s lease at `epoch`, unexpired, by the database's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub job: &'static str,
    pub node: String,
    pub epoch: i64,
}

/// The cluster as the database sees it, at `now` (the database's clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub now: DateTime<Utc>,
    pub nodes: Vec<NodeRow>,
    pub leases: Vec<LeaseRow>,
}

impl ClusterView {
    /// Whether `node`'s heartbeat is at most `dead_after` old.
    pub fn is_alive(&self, node: &NodeRow, dead_after: chrono::Duration) -> bool {
        self.now - node.heartbeat_at <= dead_after
    }

    /// The holder of `job`'s lease while it is unexpired.
    pub fn leader(&self, job: &str) -> Option<&str> {
        self.leases
            .iter()
            .find(|l| l.job == job && l.expires_at > self.now)
            .map(|l| l.holder.as_str())
    }
}
