//! Change of Authorization (RFC 5176): CoA-Request and Disconnect-Request
//! to the NAS of a live session, without IO. [`packet`] builds and checks
//! the bytes; [`client`] is the state machine that keeps many requests in
//! flight, retransmits and gives up, on a clock passed in; this module
//! turns a session and a change into a request ([`prepare`]) and an
//! outcome into a [`Report`] and its radius_logs row. The shell drives it
//! (the jobs thread, `shardius coa|disconnect`).

pub mod client;
pub mod packet;

use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, Utc};

pub use client::{CoaClient, Outcome, RequestId, Retry, Transmit};
pub use packet::{Action, Answer, AnswerError, Target};

use crate::model::{LogEntry, NasType, SessionRow};
use crate::policy::vendor_speed::{Rate, VendorSpeeds};
use crate::proto::Secret;

/// What to change on a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Disconnect,
    /// A new speed: Mikrotik-Rate-Limit on a MikroTik NAS; on a generic
    /// NAS Filter-Id (`filter_id`, else the rate string itself).
    Speed {
        rate_limit: String,
        filter_id: Option<String>,
        /// The same speed for NAS types with their own attributes
        /// (`policy::vendor_speed`).
        rate: Rate,
    },
    /// Into the walled garden (`policy::portal::attributes`).
    Portal(std::sync::Arc<crate::policy::portal::Portal>),
}

impl From<crate::policy::fup::SpeedChange> for Change {
    fn from(s: crate::policy::fup::SpeedChange) -> Change {
        Change::Speed {
            rate_limit: s.rate_limit,
            filter_id: Some(s.filter_id),
            rate: s.rate,
        }
    }
}

impl Change {
    /// The request for a NAS of `nas_type`. Err: its speed attributes
    /// need what this change has not (a policy name for a speed given by
    /// hand).
    pub fn action(&self, nas_type: NasType, speeds: &VendorSpeeds) -> Result<Action, String> {
        Ok(match (self, nas_type) {
            (Change::Disconnect, _) => Action::Disconnect,
            (Change::Portal(portal), t) => {
                Action::Attributes(crate::policy::portal::attributes(portal, t, speeds)?)
            }
            (Change::Speed { rate_limit, .. }, NasType::Mikrotik) => {
                Action::RateLimit(rate_limit.clone())
            }
            (Change::Speed { rate, .. }, t) if crate::policy::vendor_speed::by_vendor(t) => {
                Action::Attributes(crate::policy::vendor_speed::attributes(t, rate, speeds)?)
            }
            (
                Change::Speed {
                    rate_limit,
                    filter_id,
                    ..
                },
                _,
            ) => Action::FilterId(filter_id.clone().unwrap_or_else(|| rate_limit.clone())),
        })
    }

    pub fn kind(&self) -> CoaKind {
        match self {
            Change::Disconnect => CoaKind::Disconnect,
            Change::Speed { .. } | Change::Portal { .. } => CoaKind::Coa,
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

/// How one session's request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    Done(Outcome),
    /// Not sent: the session's NAS is not configured, the request does not
    /// fit, a socket error.
    NotSent(String),
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
    pub ended: Ended,
}

impl Report {
    /// The report of `session`'s request to `nas` (or its NAS address).
    pub fn new(
        kind: CoaKind,
        session: &SessionRow,
        nas: Option<SocketAddr>,
        ended: Ended,
    ) -> Report {
        Report {
            kind,
            username: session.username.clone(),
            session_id: session.session_id.clone(),
            nas: nas.map_or_else(|| session.nas_ip.clone(), |a| a.to_string()),
            nas_ip: session.nas_ip.parse().ok(),
            ended,
        }
    }

    /// The metric label of how it ended.
    pub fn result(&self) -> CoaResult {
        match &self.ended {
            Ended::Done(Outcome::Answer(Answer::Ack)) => CoaResult::Ack,
            Ended::Done(Outcome::Answer(Answer::Nak { .. })) => CoaResult::Nak,
            Ended::Done(Outcome::TimedOut { .. }) => CoaResult::Timeout,
            Ended::Done(Outcome::BadAnswer(_)) => CoaResult::BadResponse,
            Ended::NotSent(_) => CoaResult::Error,
        }
    }

    /// `ACK`, `NAK Session-Context-Not-Found (503)`, `timeout: no answer
    /// to 3 tries`, `answer does not verify ... (wrong secret?)`, `error: ...`.
    fn what(&self) -> String {
        match &self.ended {
            Ended::Done(Outcome::Answer(a)) => a.describe(),
            Ended::Done(Outcome::TimedOut { tries }) => {
                format!("timeout: no answer to {tries} tries")
            }
            Ended::Done(Outcome::BadAnswer(e)) => e.to_string(),
            Ended::NotSent(e) => format!("error: {e}"),
        }
    }

    /// `alice session=81a00003 nas=10.0.0.1:1700 disconnect: ACK` (the
    /// session's text as radacct has it, made safe to print).
    pub fn line(&self) -> String {
        crate::text::printable(&format!(
            "{} session={} nas={} {}: {}",
            self.username,
            self.session_id,
            self.nas,
            self.kind.as_str(),
            self.what()
        ))
        .into_owned()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let (error_cause, error) = match &self.ended {
            Ended::Done(Outcome::Answer(Answer::Nak { error_cause })) => (*error_cause, None),
            Ended::Done(Outcome::Answer(Answer::Ack)) => (None, None),
            _ => (None, Some(self.what())),
        };
        serde_json::json!({
            "line": self.line(),
            "username": self.username,
            "session_id": self.session_id,
            "nas": self.nas,
            "kind": self.kind.as_str(),
            "result": self.result().as_str(),
            "error_cause": error_cause,
            "error_cause_name": error_cause.map(crate::proto::dict::error_cause::name),
            "error": error,
        })
    }

    /// Its `radius_logs` row, at `at`.
    pub fn log_entry(&self, at: DateTime<Utc>) -> LogEntry {
        LogEntry {
            at,
            nas_ip: self.nas_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            username: self.username.as_str().into(),
            event: self.kind.as_str(),
            result: self.result().as_str(),
            reason: match self.ended {
                Ended::Done(Outcome::Answer(Answer::Nak {
                    error_cause: Some(c),
                })) => Some(crate::proto::dict::error_cause::name(c)),
                _ => None,
            },
            shard: 0,
        }
    }
}

/// What a CoA needs of a session's NAS.
#[derive(Clone, Debug)]
pub struct NasTarget {
    /// The NAS entry's address and CoA port.
    pub addr: SocketAddr,
    pub secret: Secret,
    pub nas_type: NasType,
}

/// A request ready for [`CoaClient::send`].
pub struct Prepared {
    pub to: SocketAddr,
    pub secret: Secret,
    pub user_name: Vec<u8>,
    pub acct_session_id: Vec<u8>,
    pub nas_ip: Option<std::net::Ipv4Addr>,
    pub framed_ip: Option<std::net::Ipv4Addr>,
    pub action: Action,
}

impl Prepared {
    pub fn target(&self) -> Target<'_> {
        Target {
            user_name: &self.user_name,
            acct_session_id: &self.acct_session_id,
            nas_ip: self.nas_ip,
            framed_ip: self.framed_ip,
        }
    }
}

/// The request that applies `change` to `session`, sent to its NAS as
/// `find_nas` knows it (by the NAS address radacct has: the entry's own or
/// one of its other NAS-IP-Addresses); the report of why not otherwise.
pub fn prepare(
    session: &SessionRow,
    find_nas: impl Fn(IpAddr) -> Option<NasTarget>,
    change: &Change,
    speeds: &VendorSpeeds,
    service_of: impl Fn(&[u8]) -> Option<String>,
) -> Result<Prepared, Report> {
    let nas_ip = session.nas_ip.parse::<IpAddr>().ok();
    let Some(nas) = nas_ip.and_then(find_nas) else {
        return Err(Report::new(
            change.kind(),
            session,
            None,
            Ended::NotSent(format!(
                "NAS {} is not configured (nas add)",
                session.nas_ip
            )),
        ));
    };
    // A speed given by hand names no service: the subscriber's, where the
    // caller knows it, fills policy-name templates.
    let named;
    let change = match change {
        Change::Speed { rate, .. } if rate.name.is_empty() => {
            match service_of(&crate::text::unstored(&session.username)) {
                Some(name) => {
                    let mut c = change.clone();
                    if let Change::Speed { rate, .. } = &mut c {
                        rate.name = name;
                    }
                    named = c;
                    &named
                }
                None => change,
            }
        }
        _ => change,
    };
    let action = match change.action(nas.nas_type, speeds) {
        Ok(a) => a,
        Err(e) => {
            return Err(Report::new(
                change.kind(),
                session,
                Some(nas.addr),
                Ended::NotSent(format!("a {} NAS: {e}", nas.nas_type.as_str())),
            ))
        }
    };
    Ok(Prepared {
        to: nas.addr,
        secret: nas.secret,
        // radacct holds them in stored form: back to the bytes the NAS sent.
        user_name: crate::text::unstored(&session.username).into_owned(),
        acct_session_id: crate::text::unstored(&session.session_id).into_owned(),
        // The NAS-IP-Address the NAS itself reported for the session.
        nas_ip: match nas_ip {
            Some(IpAddr::V4(v4)) => Some(v4),
            _ => None,
        },
        framed_ip: session.framed_ip.as_deref().and_then(|ip| ip.parse().ok()),
        action,
    })
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
        let speeds = VendorSpeeds::default();
        let change = Change::Speed {
            rate_limit: "2M/10M".into(),
            filter_id: None,
            rate: Rate::from_rate_limit("2M/10M").unwrap(),
        };
        assert_eq!(
            change.action(NasType::Mikrotik, &speeds),
            Ok(Action::RateLimit("2M/10M".into()))
        );
        assert_eq!(
            change.action(NasType::Generic, &speeds),
            Ok(Action::FilterId("2M/10M".into()))
        );
        // Other vendors: their own attributes; a policy name a speed
        // given by hand does not have is an error, not a wrong policy.
        assert_eq!(
            change.action(NasType::AccelPpp, &speeds),
            Ok(Action::Attributes(vec![(0, 11, b"10000/2000".to_vec())]))
        );
        assert!(change.action(NasType::Cisco, &speeds).is_err());
        let named = Change::Speed {
            rate_limit: "2M/10M".into(),
            filter_id: Some("fup-1".into()),
            rate: Rate {
                name: "gold".into(),
                ..Rate::from_rate_limit("2M/10M").unwrap()
            },
        };
        assert_eq!(
            named.action(NasType::Generic, &speeds),
            Ok(Action::FilterId("fup-1".into()))
        );
        assert!(named.action(NasType::Cisco, &speeds).is_ok());
        assert_eq!(
            Change::Disconnect.action(NasType::Generic, &speeds),
            Ok(Action::Disconnect)
        );
    }
}
