//! Memory per cached subscriber: builds a snapshot of N subscribers shaped
//! like production rows (encrypted password, service, expiry, half with a
//! MAC binding, a tenth with a static IP) and reports the RSS growth.
//!
//! Run: `cargo bench --bench snapshot_memory` (N = 1,000,000);
//! `-- --test` runs it with N = 10,000 as a smoke test.
#![allow(clippy::unwrap_used)] // a benchmark: its set-up may panic

use std::net::Ipv4Addr;

use chrono::NaiveDate;
use shardius::keyfile::PasswordKey;
use shardius::policy::Snapshot;
use shardius::store::SubscriberRecord;

#[allow(unsafe_code)] // sysconf(3): no safe wrapper in std
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm rss");
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--test");
    let n: u32 = if smoke { 10_000 } else { 1_000_000 };
    let key = PasswordKey::from_master(&[3; 32]);
    let password_enc = key.encrypt(b"pass1234");
    let expiry = NaiveDate::from_ymd_opt(2027, 12, 31);
    // Build the records in chunks so their own memory is not counted.
    let mut snapshot = Snapshot::default();
    let before = rss_bytes();
    for chunk in (1..=n).collect::<Vec<_>>().chunks(50_000) {
        let records: Vec<SubscriberRecord> = chunk
            .iter()
            .map(|&i| SubscriberRecord {
                id: i64::from(i),
                username: format!("user{i}"),
                password_enc: password_enc.clone(),
                service_id: Some(1),
                is_active: true,
                expiry_date: expiry,
                mac_address: (i % 2 == 0).then(|| "AA:BB:CC:DD:EE:FF".to_string()),
                static_ip: (i % 10 == 0).then(|| Ipv4Addr::from(0x6440_0000 + i)),
                updated_at: 0,
                password_kind: Default::default(),
                max_sessions: None,
            })
            .collect();
        snapshot.apply_subscribers(&records, &[]);
    }
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / f64::from(n);
    println!(
        "snapshot_memory: {n} subscribers, RSS +{:.1} MiB, {per:.0} bytes per cached subscriber",
        (after - before) as f64 / (1 << 20) as f64
    );
    assert_eq!(snapshot.subscribers.len(), n as usize);
}
