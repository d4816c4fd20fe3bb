//! The cluster tables on both stores: leases change hands only when free
//! or expired, every change of hands bumps the epoch, and a write fenced
//! by an old epoch commits nothing. Also: a single SQLite node leads every
//! job, and a hostile node name is refused before it reaches a table.

use std::time::{Duration, Instant};

use crate::common::server::{Backend, Install};
use chrono::Utc;
use shardius::model::{Fence, Levels, NodeInfo, JOBS};
use shardius::store::{self, DatabaseUrl, Store};

fn open(backend: Backend) -> (Install, Box<dyn Store>) {
    let install = Install::empty_on(backend);
    let mut store = store::open(&DatabaseUrl::parse(&install.db_url).unwrap()).unwrap();
    store.migrate().unwrap();
    (install, store)
}

fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.into(),
        listen: "auth=127.0.0.2:1812,acct=127.0.0.2:1813".into(),
        version: "test".into(),
        snapshot_age_ms: 12,
        spool_bytes: 34,
    }
}

fn fence(job: &'static str, node: &str, epoch: i64) -> Fence {
    Fence {
        job,
        node: node.into(),
        epoch,
    }
}

fn leases_change_hands_only_when_free_and_old_epochs_are_fenced_off(backend: Backend) {
    let (_install, mut store) = open(backend);
    let ttl = Duration::from_secs(30);
    store.heartbeat(&node("node-a"), true).unwrap();
    store.heartbeat(&node("node-b"), true).unwrap();

    // a takes the free lease; b is refused while it lasts; a renews it
    // without a new epoch.
    let a = store
        .acquire_lease("stale-sessions", "node-a", ttl)
        .unwrap();
    assert_eq!((a.holder.as_str(), a.epoch), ("node-a", 1));
    let b = store
        .acquire_lease("stale-sessions", "node-b", ttl)
        .unwrap();
    assert_eq!((b.holder.as_str(), b.epoch), ("node-a", 1), "b is refused");
    let renewed = store
        .acquire_lease("stale-sessions", "node-a", ttl)
        .unwrap();
    assert_eq!((renewed.holder.as_str(), renewed.epoch), ("node-a", 1));
    assert!(renewed.expires_at >= a.expires_at);

    // a's fence holds: its fenced writes commit.
    let a1 = fence("stale-sessions", "node-a", 1);
    assert!(store.record_run(&a1, 3).unwrap());
    assert_eq!(
        store
            .close_stale_fenced(&a1, Utc::now() - chrono::Duration::hours(1))
            .unwrap(),
        Some(0)
    );
    // A fence in b's name, or at another epoch, does not.
    assert!(!store
        .record_run(&fence("stale-sessions", "node-b", 1), 1)
        .unwrap());
    assert!(!store
        .record_run(&fence("stale-sessions", "node-a", 2), 1)
        .unwrap());

    // Releasing someone else's lease does nothing; a's own release frees it
    // and b takes it at the next epoch; a's old fence is now dead.
    store.release_lease("stale-sessions", "node-b").unwrap();
    let still = store
        .acquire_lease("stale-sessions", "node-b", ttl)
        .unwrap();
    assert_eq!(still.holder, "node-a");
    store.release_lease("stale-sessions", "node-a").unwrap();
    let b = store
        .acquire_lease("stale-sessions", "node-b", ttl)
        .unwrap();
    assert_eq!((b.holder.as_str(), b.epoch), ("node-b", 2));
    assert!(
        !store.record_run(&a1, 1).unwrap(),
        "a's epoch is fenced off"
    );
    assert_eq!(
        store
            .close_stale_fenced(&a1, Utc::now() - chrono::Duration::hours(1))
            .unwrap(),
        None
    );
    assert!(store
        .record_run(&fence("stale-sessions", "node-b", 2), 0)
        .unwrap());

    // An expired lease is taken over at a new epoch: a holds "expiry" for
    // 300 ms and does not renew; b's attempts succeed once it ran out
    // (the positive signal), and a's fence dies with it.
    let short = store
        .acquire_lease("expiry", "node-a", Duration::from_millis(300))
        .unwrap();
    assert_eq!((short.holder.as_str(), short.epoch), ("node-a", 1));
    let started = Instant::now();
    let taken = loop {
        let l = store.acquire_lease("expiry", "node-b", ttl).unwrap();
        if l.holder == "node-b" {
            break l;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(taken.epoch, 2);
    assert!(!store.record_run(&fence("expiry", "node-a", 1), 1).unwrap());
    // ...and a coming back (a SIGSTOPped node continued) cannot take it
    // back while b renews.
    let back = store.acquire_lease("expiry", "node-a", ttl).unwrap();
    assert_eq!((back.holder.as_str(), back.epoch), ("node-b", 2));

    // The view: both nodes, as written, and the leases as they are.
    let view = store.cluster_view().unwrap();
    let names: Vec<&str> = view.nodes.iter().map(|n| n.info.name.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"]);
    assert_eq!(view.nodes[0].info, node("node-a"));
    assert!(view.nodes[0].heartbeat_at <= view.now);
    let holders: Vec<(&str, &str, i64)> = view
        .leases
        .iter()
        .map(|l| (l.job.as_str(), l.holder.as_str(), l.epoch))
        .collect();
    assert!(holders.contains(&("stale-sessions", "node-b", 2)));
    assert!(holders.contains(&("expiry", "node-b", 2)));
}

/// Node names are data: quotes, SQL and non-ASCII round-trip as written;
/// a NUL (which PostgreSQL text cannot hold) is a clear error, not a panic.
fn hostile_node_names_are_data_or_a_clean_error(backend: Backend) {
    let (install, mut store) = open(backend);
    let nasty = "n'; DROP TABLE cluster_leases; --\u{e9}\u{1F600}";
    store.heartbeat(&node(nasty), true).unwrap();
    let lease = store
        .acquire_lease("quota-reset", nasty, Duration::from_secs(30))
        .unwrap();
    assert_eq!(lease.holder, nasty);
    let view = store.cluster_view().unwrap();
    assert_eq!(view.nodes.len(), 1);
    assert_eq!(view.nodes[0].info.name, nasty);
    assert_eq!(view.leases.len(), 1, "the table is still there");
    // An unknown job name is a row like any other, not a crash.
    let odd = store
        .acquire_lease("no-such-job", nasty, Duration::from_secs(1))
        .unwrap();
    assert_eq!(odd.holder, nasty);
    // A row written by someone else with terminal escapes and a line
    // break (our own nodes refuse such names at start): `cluster status`
    // prints it escaped on one line; JSON keeps it as written.
    let forged = "evil\u{1b}[2J\nradius-9             alive";
    store.heartbeat(&node(forged), true).unwrap();
    let table = install.ok(&["cluster", "status"]);
    assert!(!table.contains('\u{1b}'), "{table:?}");
    assert!(!table.contains("\nradius-9"), "{table:?}");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("evil")).count(),
        1,
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&install.ok(&["cluster", "status", "--json"])).unwrap();
    assert!(json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == forged));
    if backend == Backend::Postgres {
        assert!(store.heartbeat(&node("nul\0name"), false).is_err());
        // The connection survives the refused write.
        assert_eq!(store.cluster_view().unwrap().nodes.len(), 2);
    }
}

/// Two nodes that read the same totals race to raise a subscriber's FUP
/// level: the compare-and-set lets exactly one win (and send the CoA).
fn a_tier_crossing_seen_by_two_nodes_is_won_once(backend: Backend) {
    let (install, _store) = open(backend);
    let url = DatabaseUrl::parse(&install.db_url).unwrap();
    let (mut a, mut b) = (store::open(&url).unwrap(), store::open(&url).unwrap());
    let row_a = a.add_usage(&[("alice".into(), 1000)]).unwrap().remove(0);
    let row_b = b.add_usage(&[("alice".into(), 1000)]).unwrap().remove(0);
    let zero = Levels::default();
    assert_eq!((row_a.levels, row_b.levels), (zero, zero));
    let one = Levels {
        daily: 1,
        monthly: 0,
    };
    assert!(a.raise_fup_levels("alice", row_a.levels, one).unwrap());
    assert!(
        !b.raise_fup_levels("alice", row_b.levels, one).unwrap(),
        "the second node's raise from stale levels loses"
    );
    // From what is stored now, the next tier is raised once more.
    let two = Levels {
        daily: 2,
        monthly: 1,
    };
    assert!(b.raise_fup_levels("alice", one, two).unwrap());
    let usage = a.usage("alice").unwrap().unwrap();
    assert_eq!((usage.daily_bytes, usage.levels), (2000, two));
    // A subscriber with no usage row has nothing to raise.
    assert!(!a.raise_fup_levels("nobody", zero, one).unwrap());
}

/// Raised levels wait as pending until the quota leader records them as
/// applied under its fence; a stale fence or levels that moved meanwhile
/// record nothing; a reset clears both.
fn tier_changes_are_pending_until_the_leader_applies_them(backend: Backend) {
    let (_install, mut store) = open(backend);
    let ttl = Duration::from_secs(30);
    let zero = Levels::default();
    let one = Levels {
        daily: 1,
        monthly: 0,
    };
    let two = Levels {
        daily: 2,
        monthly: 1,
    };
    store
        .add_usage(&[("alice".into(), 10), ("bob".into(), 10)])
        .unwrap();
    assert!(store.pending_tier_changes(100).unwrap().is_empty());
    assert!(store.raise_fup_levels("alice", zero, one).unwrap());
    assert_eq!(
        store.pending_tier_changes(100).unwrap(),
        [("alice".to_string(), zero, one)]
    );
    let lease = store.acquire_lease("quota-reset", "node-a", ttl).unwrap();
    let fence = Fence {
        job: "quota-reset",
        node: "node-a".into(),
        epoch: lease.epoch,
    };
    let stale = Fence {
        epoch: lease.epoch + 1,
        ..fence.clone()
    };
    assert!(!store.mark_tier_applied(&stale, "alice", one).unwrap());
    // Levels moved since they were read: nothing recorded.
    assert!(!store.mark_tier_applied(&fence, "alice", two).unwrap());
    assert!(store.mark_tier_applied(&fence, "alice", one).unwrap());
    assert!(store.pending_tier_changes(100).unwrap().is_empty());
    // The next tier is pending from the applied one.
    assert!(store.raise_fup_levels("alice", one, two).unwrap());
    assert_eq!(
        store.pending_tier_changes(100).unwrap(),
        [("alice".to_string(), one, two)]
    );
    assert!(store.mark_tier_applied(&fence, "alice", two).unwrap());
    // The daily reset clears the daily level and its applied twin.
    let today = chrono::Local::now().date_naive();
    let reset = store.reset_daily(today).unwrap().unwrap();
    assert_eq!(reset, [("alice".to_string(), two)]);
    assert!(store.pending_tier_changes(100).unwrap().is_empty());
    // The limit holds (alice kept her monthly tier through the daily reset).
    let after_reset = Levels {
        daily: 0,
        monthly: 1,
    };
    assert!(store.raise_fup_levels("alice", after_reset, two).unwrap());
    assert!(store.raise_fup_levels("bob", zero, one).unwrap());
    assert_eq!(store.pending_tier_changes(1).unwrap().len(), 1);
    assert_eq!(store.pending_tier_changes(100).unwrap().len(), 2);
}

/// Two nodes add usage for the same subscribers at once, half of them new
/// to subscriber_usage: every byte counts exactly once, whichever node
/// inserts a row and whichever adds to it, and each call answers with a
/// row for every subscriber it was given.
fn usage_added_by_two_nodes_at_once_counts_every_byte_once(backend: Backend) {
    let (install, mut store) = open(backend);
    let url = DatabaseUrl::parse(&install.db_url).unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    // The even ones have a row already.
    let existing: Vec<(String, u64)> = names.iter().step_by(2).map(|n| (n.clone(), 5)).collect();
    store.add_usage(&existing).unwrap();
    let rounds = 25;
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (url, names) = (url.clone(), names.clone());
            std::thread::spawn(move || {
                let mut node = store::open(&url).unwrap();
                for _ in 0..rounds {
                    let batch: Vec<(String, u64)> = names.iter().map(|n| (n.clone(), 1)).collect();
                    let rows = node.add_usage(&batch).unwrap();
                    let mut got: Vec<&str> = rows.iter().map(|r| r.username.as_str()).collect();
                    got.sort_unstable();
                    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
                    want.sort_unstable();
                    assert_eq!(got, want, "a row back for every subscriber");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let rows = store.add_usage(&[]).unwrap();
    assert!(rows.is_empty());
    let totals = store
        .add_usage(&names.iter().map(|n| (n.clone(), 0)).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(totals.len(), names.len());
    for row in totals {
        let i: usize = row.username["user".len()..].parse().unwrap();
        let want = 2 * rounds + if i % 2 == 0 { 5 } else { 0 };
        assert_eq!(
            (row.daily_bytes, row.monthly_bytes),
            (want, want),
            "{}",
            row.username
        );
    }
}

on_both_backends!(
    usage_added_by_two_nodes_at_once_counts_every_byte_once,
    tier_changes_are_pending_until_the_leader_applies_them,
    leases_change_hands_only_when_free_and_old_epochs_are_fenced_off,
    hostile_node_names_are_data_or_a_clean_error,
    a_tier_crossing_seen_by_two_nodes_is_won_once,
);

/// A single node on the embedded store leads every job, says so in
/// `cluster status --json` and in `/metrics`; a node name with a control
/// character is refused at start with the setting named.
#[test]
fn one_sqlite_node_leads_every_job_and_bad_node_names_are_refused() {
    let install = Install::new();
    let err = install.fails(&["serve", "--node-name", "edge\u{1b}[2Jone"]);
    assert!(err.contains("cluster.node_name"), "{err}");
    let err = install.fails(&["serve", "--node-name", &"x".repeat(129)]);
    assert!(err.contains("cluster.node_name"), "{err}");

    let mut server = install.serve_with(&["--shards", "1", "--node-name", "edge-1"]);
    let started = Instant::now();
    let status = loop {
        let out = install.ok(&["cluster", "status", "--json"]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        if JOBS.iter().all(|j| v["leaders"][j] == "edge-1") {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no leader: {out}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{status}");
    assert_eq!(nodes[0]["name"], "edge-1");
    assert_eq!(nodes[0]["alive"], true);
    for job in JOBS {
        let series = format!("shardius_job_leader{{job=\"{job}\"}}");
        assert_eq!(server.metric(&series), 1.0, "{series}");
    }
    assert_eq!(server.metric("shardius_cluster_nodes_alive"), 1.0);
    // The human form names the node and every job.
    let text = install.ok(&["cluster", "status"]);
    assert!(text.contains("edge-1"), "{text}");
    for job in JOBS {
        assert!(text.contains(job), "{text}");
    }
    let _ = server.wait_for_log("leader of stale-sessions: edge-1", Duration::from_secs(5));
    let (clean, log) = server.stop();
    assert!(clean, "{log}");
}
