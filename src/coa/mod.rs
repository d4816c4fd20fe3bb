//! Change of Authorization (RFC 5176): CoA-Request and Disconnect-Request
//! to the NAS of a live session. `packet` builds and checks the bytes
//! (sans-IO), `client` does one exchange over UDP, and [`act`] finds a
//! user's open sessions in the store, sends to each session's NAS and
//! logs every result to `radius_logs`. Used by `shardius coa|disconnect`,
//! the admin API and the expiry/suspension job.

pub mod client;
pub mod packet;

use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Utc};

pub use client::{Retry, SendError};
pub use packet::{Action, Answer, AnswerError, Target};

use crate::proto::Secret;
use crate::store::{LogEntry, NasRecord, NasType, SessionRow, Store, StoreError};

/// What to change on a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Disconnect,
    /// A new speed: Mikrotik-Rate-Limit on a MikroTik NAS; on a generic
    /// NAS Filter-Id (`filter_id`, else the rate string itself).
    Speed {
        rate_limit: String,
        filter_id: Option<String>,
    },
}

impl From<crate::policy::fup::SpeedChange> for Change {
    fn from(s: crate::policy::fup::SpeedChange) -> Change {
        Change::Speed {
            rate_limit: s.rate_limit,
            filter_id: Some(s.filter_id),
        }
    }
}

impl Change {
    /// The request for a NAS of `nas_type`.
    pub fn action(&self, nas_type: NasType) -> Action {
        match (self, nas_type) {
            (Change::Disconnect, _) => Action::Disconnect,
            (Change::Speed { rate_limit, .. }, NasType::Mikrotik) => {
                Action::RateLimit(rate_limit.clone())
            }
            (
                Change::Speed {
                    rate_limit,
                    filter_id,
                },
                _,
            ) => Action::FilterId(filter_id.clone().unwrap_or_else(|| rate_limit.clone())),
        }
    }

    pub fn kind(&self) -> CoaKind {
        match self {
            Change::Disconnect => CoaKind::Disconnect,
            Change::Speed { .. } => CoaKind::Coa,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoaKind {
    Coa,
    Disconnect,
}

impl CoaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CoaKind::Coa => "coa",
            CoaKind::Disconnect => "disconnect",
        }
    }
}

/// How a CoA or Disconnect exchange ended (the metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoaResult {
    Ack,
    Nak,
    Timeout,
    /// The answer failed its Response Authenticator or Message-Authenticator
    /// check (usually a wrong secret on one side).
    BadResponse,
    /// Not sent: the session's NAS is not configured, a socket error.
    Error,
}

impl CoaResult {
    pub const ALL: [CoaResult; 5] = [
        CoaResult::Ack,
        CoaResult::Nak,
        CoaResult::Timeout,
        CoaResult::BadResponse,
        CoaResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CoaResult::Ack => "ack",
            CoaResult::Nak => "nak",
            CoaResult::Timeout => "timeout",
            CoaResult::BadResponse => "bad_response",
            CoaResult::Error => "error",
        }
    }
}

/// One session's result.
#[derive(Debug)]
pub struct Report {
    pub kind: CoaKind,
    pub username: String,
    pub session_id: String,
    /// Where the request went (`ip:port`), or the session's NAS address
    /// when it could not be sent.
    pub nas: String,
    /// The session's NAS address as radacct has it, for radius_logs.
    pub nas_ip: Option<IpAddr>,
    pub outcome: Result<Answer, String>,
    pub result: CoaResult,
}

impl Report {
    /// `alice session=81a00003 nas=10.0.0.1:1700 disconnect: ACK`
    pub fn line(&self) -> String {
        let what = match &self.outcome {
            Ok(a) => a.describe(),
            Err(e) => e.clone(),
        };
        format!(
            "{} session={} nas={} {}: {what}",
            self.username,
            self.session_id,
            self.nas,
            self.kind.as_str()
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        let (answer, error_cause, error) = match &self.outcome {
            Ok(Answer::Ack) => ("ack", None, None),
            Ok(Answer::Nak { error_cause }) => ("nak", *error_cause, None),
            Err(e) => (self.result.as_str(), None, Some(e.clone())),
        };
        serde_json::json!({
            "line": self.line(),
            "username": self.username,
            "session_id": self.session_id,
            "nas": self.nas,
            "kind": self.kind.as_str(),
            "result": answer,
            "error_cause": error_cause,
            "error_cause_name": error_cause.map(crate::proto::dict::error_cause::name),
            "error": error,
        })
    }
}

/// Sends `change` to one session's NAS.
pub fn act_on_session(
    session: &SessionRow,
    nas_devices: &[NasRecord],
    change: &Change,
    retry: Retry,
    now: DateTime<Utc>,
) -> Report {
    let kind = change.kind();
    let mut report = Report {
        kind,
        username: session.username.clone(),
        session_id: session.session_id.clone(),
        nas: session.nas_ip.clone(),
        nas_ip: session.nas_ip.parse().ok(),
        outcome: Err(String::new()),
        result: CoaResult::Error,
    };
    // The session's NAS address is the entry's own or one of its other
    // NAS-IP-Addresses; requests go to the entry's address.
    let Some(nas) = report
        .nas_ip
        .and_then(|ip| nas_devices.iter().find(|n| n.has_address(ip)))
    else {
        report.outcome = Err(format!(
            "error: NAS {} is not configured (nas add)",
            session.nas_ip
        ));
        return report;
    };
    let to = SocketAddr::new(nas.ip_address, nas.coa_port);
    report.nas = to.to_string();
    // radacct holds them in stored form: back to the bytes the NAS sent.
    let user_name = crate::text::unstored(&session.username);
    let acct_session_id = crate::text::unstored(&session.session_id);
    let target = Target {
        user_name: &user_name,
        acct_session_id: &acct_session_id,
        // The NAS-IP-Address the NAS itself reported for the session.
        nas_ip: match report.nas_ip {
            Some(IpAddr::V4(v4)) => Some(v4),
            _ => None,
        },
        framed_ip: session.framed_ip.as_deref().and_then(|ip| ip.parse().ok()),
    };
    let secret = Secret::new(nas.secret.as_bytes());
    let action = change.action(nas.nas_type);
    let sent = client::send(
        to,
        &secret,
        &target,
        &action,
        now.timestamp().max(0) as u32,
        retry,
    );
    (report.result, report.outcome) = match sent {
        Ok(a @ Answer::Ack) => (CoaResult::Ack, Ok(a)),
        Ok(a @ Answer::Nak { .. }) => (CoaResult::Nak, Ok(a)),
        Err(e @ SendError::Timeout { .. }) => (CoaResult::Timeout, Err(e.to_string())),
        Err(SendError::BadAnswer(e)) => (CoaResult::BadResponse, Err(e.to_string())),
        Err(e) => (CoaResult::Error, Err(format!("error: {e}"))),
    };
    report
}

/// Sends `change` to every open session of `user` (or only `session`),
/// logs each result to `radius_logs`, and returns the reports (empty when
/// the user has no open session).
pub fn act(
    store: &mut dyn Store,
    user: &str,
    session: Option<&str>,
    change: &Change,
    retry: Retry,
) -> Result<Vec<Report>, StoreError> {
    let sessions: Vec<SessionRow> = store
        .sessions(Some(user), false, 1000)?
        .into_iter()
        .filter(|s| session.is_none_or(|id| s.session_id == id))
        .collect();
    if sessions.is_empty() {
        return Ok(Vec::new());
    }
    let nas = store.nas_devices()?;
    let reports: Vec<Report> = sessions
        .iter()
        .map(|s| act_on_session(s, &nas, change, retry, Utc::now()))
        .collect();
    log_reports(store, &reports);
    Ok(reports)
}

/// Writes one `radius_logs` row per report; best effort, like all logging.
pub fn log_reports(store: &mut dyn Store, reports: &[Report]) {
    let entries: Vec<LogEntry> = reports
        .iter()
        .map(|r| LogEntry {
            at: Utc::now(),
            nas_ip: r.nas_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            username: r.username.clone(),
            event: r.kind.as_str(),
            result: r.result.as_str(),
            reason: match r.outcome {
                Ok(Answer::Nak {
                    error_cause: Some(c),
                }) => Some(crate::proto::dict::error_cause::name(c)),
                _ => None,
            },
            shard: 0,
        })
        .collect();
    if let Err(e) = store.write_logs(&entries) {
        tracing::warn!("cannot write CoA results to radius_logs: {e}");
    }
}

/// Checks a MikroTik rate limit: `rx/tx` with speeds like `2M` or `512k`,
/// optionally followed by MikroTik's burst fields (passed through as given).
pub fn validate_rate_limit(rate: &str) -> Result<(), String> {
    let first = rate.split_whitespace().next().unwrap_or("");
    let (rx, tx) = first
        .split_once('/')
        .ok_or_else(|| format!("{rate:?} is not rx/tx, e.g. 2M/10M"))?;
    for speed in [rx, tx] {
        crate::policy::speed::parse_kbps(speed).map_err(|e| format!("{speed:?}: {e}"))?;
    }
    if rate.len() > 128 {
        return Err("longer than 128 characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_checked() {
        assert!(validate_rate_limit("2M/10M").is_ok());
        assert!(validate_rate_limit("512k/2M 1M/4M 384k/1500k 16/16").is_ok());
        assert!(validate_rate_limit("10M").is_err());
        assert!(validate_rate_limit("2X/10M").is_err());
        assert!(validate_rate_limit("").is_err());
    }

    #[test]
    fn a_speed_change_is_a_rate_limit_on_mikrotik_and_a_filter_id_elsewhere() {
        let change = Change::Speed {
            rate_limit: "2M/10M".into(),
            filter_id: None,
        };
        assert_eq!(
            change.action(NasType::Mikrotik),
            Action::RateLimit("2M/10M".into())
        );
        assert_eq!(
            change.action(NasType::Generic),
            Action::FilterId("2M/10M".into())
        );
        let named = Change::Speed {
            rate_limit: "2M/10M".into(),
            filter_id: Some("fup-1".into()),
        };
        assert_eq!(
            named.action(NasType::Generic),
            Action::FilterId("fup-1".into())
        );
        assert_eq!(
            Change::Disconnect.action(NasType::Generic),
            Action::Disconnect
        );
    }
}
