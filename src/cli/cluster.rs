//! `shardius cluster status [--json]`: the nodes registered on this
//! database (alive or dead by heartbeat age), who leads each singleton
//! job, and each node's snapshot age and spool backlog.

use clap::Subcommand;

use crate::config::Config;
use crate::model::{ClusterView, JOBS};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Nodes, their heartbeat, snapshot age and spool backlog, and the leader of each job
    #[command(after_help = "A node is alive while its heartbeat is younger than \
        cluster.node_dead_after_ms; a job's leader is the holder of its unexpired lease \
        (none: no node holds it right now, e.g. just after its leader died). \
        --json prints one object: {\"nodes\": [{\"name\", \"alive\", ...}], \
        \"leaders\": {\"stale-sessions\": NAME or null, \"expiry\": ..., \"quota-reset\": ...}}.")]
    Status {
        /// One JSON object instead of the table
        #[arg(long)]
        json: bool,
    },
}

pub fn run(store: &mut dyn Store, config: &Config, cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status { json } => {
            let view = store.cluster_view()?;
            let dead_after =
                chrono::Duration::milliseconds(config.cluster.node_dead_after_ms as i64);
            if json {
                println!("{}", to_json(&view, dead_after));
            } else {
                print!("{}", to_table(&view, dead_after));
            }
            Ok(())
        }
    }
}

/// The holder of each job's lease while it is unexpired.
fn leaders(view: &ClusterView) -> Vec<(&'static str, Option<&str>)> {
    JOBS.iter().map(|job| (*job, view.leader(job))).collect()
}

fn to_json(view: &ClusterView, dead_after: chrono::Duration) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = view
        .nodes
        .iter()
        .map(|n| {
            let age = view.now - n.heartbeat_at;
            serde_json::json!({
                "name": n.info.name,
                "alive": view.is_alive(n, dead_after),
                "heartbeat_age_ms": age.num_milliseconds().max(0),
                "listen": n.info.listen,
                "version": n.info.version,
                "started_at": n.started_at.to_rfc3339(),
                "snapshot_age_ms": n.info.snapshot_age_ms,
                "spool_bytes": n.info.spool_bytes,
            })
        })
        .collect();
    let leaders: serde_json::Map<String, serde_json::Value> = leaders(view)
        .into_iter()
        .map(|(job, holder)| {
            (
                job.to_owned(),
                holder.map_or(serde_json::Value::Null, Into::into),
            )
        })
        .collect();
    let epochs: serde_json::Map<String, serde_json::Value> = view
        .leases
        .iter()
        .map(|l| (l.job.clone(), l.epoch.into()))
        .collect();
    serde_json::json!({ "nodes": nodes, "leaders": leaders, "epochs": epochs })
}

fn to_table(view: &ClusterView, dead_after: chrono::Duration) -> String {
    let mut out = String::new();
    out.push_str("NODE                 STATE  HEARTBEAT  SNAPSHOT  SPOOL      LISTEN\n");
    for n in &view.nodes {
        let age = view.now - n.heartbeat_at;
        out.push_str(&format!(
            "{:<20} {:<6} {:>7.1}s  {:>7.1}s  {:>9}  {}\n",
            crate::text::printable(&n.info.name),
            if view.is_alive(n, dead_after) {
                "alive"
            } else {
                "dead"
            },
            age.num_milliseconds().max(0) as f64 / 1000.0,
            n.info.snapshot_age_ms.max(0) as f64 / 1000.0,
            n.info.spool_bytes,
            crate::text::printable(&n.info.listen)
        ));
    }
    if view.nodes.is_empty() {
        out.push_str("(no node has registered: is a server running on this database?)\n");
    }
    out.push('\n');
    for (job, holder) in leaders(view) {
        out.push_str(&format!(
            "leader of {job}: {}\n",
            holder.map_or("none".into(), crate::text::printable)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LeaseRow, NodeInfo, NodeRow};
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn dead_nodes_and_expired_leases_show_as_such() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let node = |name: &str, age_ms: i64| NodeRow {
            info: NodeInfo {
                name: name.into(),
                listen: String::new(),
                version: "0".into(),
                snapshot_age_ms: 0,
                spool_bytes: 0,
            },
            started_at: now,
            heartbeat_at: now - Duration::milliseconds(age_ms),
        };
        let view = ClusterView {
            now,
            nodes: vec![node("a", 100), node("b", 9000)],
            leases: vec![
                LeaseRow {
                    job: "expiry".into(),
                    holder: "a".into(),
                    epoch: 3,
                    expires_at: now + Duration::seconds(2),
                },
                LeaseRow {
                    job: "stale-sessions".into(),
                    holder: "b".into(),
                    epoch: 1,
                    expires_at: now - Duration::seconds(1),
                },
            ],
        };
        let json = to_json(&view, Duration::seconds(5));
        assert_eq!(json["nodes"][0]["alive"], true);
        assert_eq!(json["nodes"][1]["alive"], false);
        assert_eq!(json["leaders"]["expiry"], "a");
        assert!(json["leaders"]["stale-sessions"].is_null());
        assert!(json["leaders"]["quota-reset"].is_null());
        let table = to_table(&view, Duration::seconds(5));
        assert!(table.contains("leader of expiry: a\n"), "{table}");
        assert!(
            table.contains("leader of stale-sessions: none\n"),
            "{table}"
        );
    }
}
