//! Results: per packet type, counts and an HdrHistogram of latency (from
//! the first transmission to the verified reply, retransmissions
//! included, as a NAS experiences it). Printed as text, written as JSON
//! and as HdrHistogram percentile distributions (.hgrm).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::sim::{Kind, Outcome};

#[derive(Debug)]
pub struct PerKind {
    pub latency_us: Histogram<u64>,
    pub sent: u64,
    pub retransmits: u64,
    pub accepts: u64,
    pub rejects: u64,
    pub acknowledged: u64,
    pub invalid: u64,
    pub timeouts: u64,
}

impl Default for PerKind {
    fn default() -> Self {
        PerKind {
            // 1 µs to 60 s at 3 significant figures.
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            sent: 0,
            retransmits: 0,
            accepts: 0,
            rejects: 0,
            acknowledged: 0,
            invalid: 0,
            timeouts: 0,
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub kinds: BTreeMap<Kind, PerKind>,
    pub elapsed: Duration,
    /// Storm: time until every subscriber was authenticated and started.
    pub all_started_after: Option<Duration>,
    /// Storm: time until every subscriber was authenticated.
    pub all_authenticated_after: Option<Duration>,
}

impl Report {
    pub fn kind(&mut self, kind: Kind) -> &mut PerKind {
        self.kinds.entry(kind).or_default()
    }

    pub fn record(&mut self, kind: Kind, outcome: &Outcome, latency: Duration) {
        let k = self.kind(kind);
        match outcome {
            Outcome::Accept(_) => k.accepts += 1,
            Outcome::Reject => k.rejects += 1,
            Outcome::Acknowledged => k.acknowledged += 1,
            Outcome::Invalid(_) => k.invalid += 1,
            Outcome::TimedOut => {
                k.timeouts += 1;
                return;
            }
        }
        let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
        k.latency_us.saturating_record(us);
    }

    pub fn invalid(&self) -> u64 {
        self.kinds.values().map(|k| k.invalid).sum()
    }

    pub fn timeouts(&self) -> u64 {
        self.kinds.values().map(|k| k.timeouts).sum()
    }

    pub fn text(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<15} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "type",
            "done",
            "per sec",
            "accept",
            "reject",
            "retrans",
            "timeout",
            "invalid",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        for (kind, k) in &self.kinds {
            let h = &k.latency_us;
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let done = h.len() + k.timeouts;
            let _ = writeln!(
                out,
                "{:<15} {:>9} {:>9.0} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                kind.name(),
                done,
                done as f64 / secs,
                k.accepts + k.acknowledged,
                k.rejects,
                k.retransmits,
                k.timeouts,
                k.invalid,
                ms(0.5),
                ms(0.9),
                ms(0.99),
                ms(0.999),
                h.max() as f64 / 1000.0
            );
        }
        let _ = writeln!(out, "elapsed {:.3} s", secs);
        let failed_logins = self
            .kinds
            .get(&Kind::Auth)
            .map_or(0, |k| k.timeouts + k.rejects);
        if let (Some(t), true) = (self.all_authenticated_after, failed_logins > 0) {
            let _ = writeln!(
                out,
                "storm: every login answered or given up after {:.3} s; {failed_logins} subscribers never authenticated",
                t.as_secs_f64()
            );
        } else if let Some(t) = self.all_authenticated_after {
            let _ = writeln!(
                out,
                "storm: every subscriber authenticated after {:.3} s",
                t.as_secs_f64()
            );
        }
        if let (Some(t), 0) = (self.all_started_after, failed_logins) {
            let _ = writeln!(
                out,
                "storm: every subscriber authenticated and started after {:.3} s",
                t.as_secs_f64()
            );
        }
        out
    }

    pub fn json(&self) -> String {
        #[derive(Serialize)]
        struct KindJson {
            kind: &'static str,
            done: u64,
            per_second: f64,
            accepts: u64,
            rejects: u64,
            acknowledged: u64,
            retransmits: u64,
            timeouts: u64,
            invalid: u64,
            p50_us: u64,
            p90_us: u64,
            p99_us: u64,
            p999_us: u64,
            max_us: u64,
        }
        #[derive(Serialize)]
        struct ReportJson {
            elapsed_s: f64,
            all_started_after_s: Option<f64>,
            all_authenticated_after_s: Option<f64>,
            kinds: Vec<KindJson>,
        }
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let kinds = self
            .kinds
            .iter()
            .map(|(kind, k)| {
                let h = &k.latency_us;
                let done = h.len() + k.timeouts;
                KindJson {
                    kind: kind.name(),
                    done,
                    per_second: done as f64 / secs,
                    accepts: k.accepts,
                    rejects: k.rejects,
                    acknowledged: k.acknowledged,
                    retransmits: k.retransmits,
                    timeouts: k.timeouts,
                    invalid: k.invalid,
                    p50_us: h.value_at_quantile(0.5),
                    p90_us: h.value_at_quantile(0.9),
                    p99_us: h.value_at_quantile(0.99),
                    p999_us: h.value_at_quantile(0.999),
                    max_us: h.max(),
                }
            })
            .collect();
        serde_json::to_string_pretty(&ReportJson {
            elapsed_s: secs,
            all_started_after_s: self.all_started_after.map(|d| d.as_secs_f64()),
            all_authenticated_after_s: self.all_authenticated_after.map(|d| d.as_secs_f64()),
            kinds,
        })
        .expect("plain data serialises")
    }

    /// HdrHistogram's classic percentile distribution, one section per type
    /// (values in milliseconds).
    pub fn hgrm(&self) -> String {
        let mut out = String::new();
        for (kind, k) in &self.kinds {
            let h = &k.latency_us;
            let _ = writeln!(out, "# {}", kind.name());
            let _ = writeln!(
                out,
                "{:>12} {:>14} {:>10} {:>14}\n",
                "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
            );
            for v in h.iter_quantiles(5) {
                let q = v.quantile_iterated_to();
                let inv = if q < 1.0 {
                    format!("{:>14.2}", 1.0 / (1.0 - q))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "{:>12.3} {:>14.12} {:>10} {inv}",
                    v.value_iterated_to() as f64 / 1000.0,
                    q,
                    v.count_since_last_iteration()
                );
            }
            let _ = writeln!(
                out,
                "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]\n#[Max     = {:>12.3}, Total count    = {:>12}]\n",
                h.mean() / 1000.0,
                h.stdev() / 1000.0,
                h.max() as f64 / 1000.0,
                h.len()
            );
        }
        out
    }
}
