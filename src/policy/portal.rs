//! The walled garden (README "Walled garden"): a subscriber who is expired
//! or disabled (or, later, over a quota) is accepted into a captive state
//! instead of rejected, when their service says `portal`: a portal pool,
//! Mikrotik-Address-List or Filter-Id for the NAS's firewall, a low speed
//! and a short Session-Timeout, so the subscriber's browser lands on a
//! payment page instead of their router reporting a wrong password.
//!
//! Pure: [`Portal`] is what `[portal]` says, checked once; [`sweep_move`]
//! decides what the expiry job does with one live session; the shell
//! (`server::jobs`) reads the sessions and sends the requests.

use serde::Deserialize;

use crate::model::{LapseAction, NasType, QuotaAction, Standing};
use crate::proto::dict::{attr, mikrotik, vendor};

use super::speed::parse_kbps;
use super::vendor_speed::{self, Rate, VendorSpeeds};
use super::RejectReason;

/// `[portal]` as written in the configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalConfig {
    /// A shardius pool or a router pool name (Framed-Pool) for captive
    /// logins; empty: the service's own addressing.
    pub pool: String,
    /// Mikrotik-Address-List on MikroTik NASes (the router's firewall
    /// redirects that list to the payment page); empty: not sent.
    pub address_list: String,
    /// Filter-Id on every other NAS type but accel-ppp (whose Filter-Id is
    /// its shaper's); empty: not sent.
    pub filter_id: String,
    /// The captive speed (e.g. "512k", "1M").
    pub download: String,
    pub upload: String,
    /// Session-Timeout of a captive login: it logs in again soon, and gets
    /// its full service once renewed. 0: not sent.
    pub session_timeout_secs: u32,
    /// A session whose subscriber expires or is suspended while online:
    /// "coa" moves it into the portal (speed, address list or Filter-Id),
    /// "disconnect" ends it (its next login lands in the portal).
    pub online: OnlineMove,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            pool: String::new(),
            address_list: "expired".into(),
            filter_id: "portal".into(),
            download: "512k".into(),
            upload: "512k".into(),
            session_timeout_secs: 300,
            online: OnlineMove::Coa,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnlineMove {
    #[default]
    Coa,
    Disconnect,
}

/// `[portal]`, checked: what a captive login and a move into the portal
/// carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Portal {
    pub pool: Option<String>,
    pub address_list: Option<String>,
    pub filter_id: Option<String>,
    pub download_kbps: u32,
    pub upload_kbps: u32,
    /// Mikrotik-Rate-Limit "upload/download".
    pub rate_limit: String,
    pub session_timeout: Option<u32>,
    pub online: OnlineMove,
}

impl Default for Portal {
    fn default() -> Self {
        Portal::from_config(&PortalConfig::default()).expect("the defaults are valid")
    }
}

impl Portal {
    /// Err: which setting is wrong and why.
    pub fn from_config(c: &PortalConfig) -> Result<Portal, String> {
        let text = |key: &str, v: &str| -> Result<Option<String>, String> {
            let v = v.trim();
            if v.len() > 253 || v.chars().any(char::is_control) {
                return Err(format!(
                    "portal.{key}: at most 253 characters, no control characters"
                ));
            }
            Ok((!v.is_empty()).then(|| v.to_owned()))
        };
        let speed = |key: &str, v: &str| match parse_kbps(v) {
            Ok(0) => Err(format!("portal.{key}: must be above 0")),
            Ok(k) => Ok(k),
            Err(e) => Err(format!("portal.{key}: {e}")),
        };
        let download_kbps = speed("download", &c.download)?;
        let upload_kbps = speed("upload", &c.upload)?;
        Ok(Portal {
            pool: text("pool", &c.pool)?,
            address_list: text("address_list", &c.address_list)?,
            filter_id: text("filter_id", &c.filter_id)?,
            download_kbps,
            upload_kbps,
            rate_limit: super::rate_limit(upload_kbps, download_kbps, None),
            session_timeout: (c.session_timeout_secs > 0).then_some(c.session_timeout_secs),
            online: c.online,
        })
    }

    /// The captive speed for NAS types with their own attributes: named
    /// `portal` for templates that name a policy.
    pub fn rate(&self) -> Rate {
        Rate {
            download_kbps: self.download_kbps,
            upload_kbps: self.upload_kbps,
            name: "portal".into(),
            tier: 0,
        }
    }
}

/// The attributes that put a session into the walled garden on a NAS of
/// `nas_type`, the same in the Access-Accept of a captive login and in the
/// CoA that moves a live session: the captive speed (Mikrotik-Rate-Limit,
/// the vendor's own attributes, or on a generic NAS the Filter-Id), and
/// the NAS's captive marker: Mikrotik-Address-List on MikroTik, Filter-Id
/// on the others but accel-ppp (whose Filter-Id is its shaper's speed).
/// Err: a `[speeds]` template the portal cannot fill.
pub fn attributes(
    portal: &Portal,
    nas_type: NasType,
    speeds: &VendorSpeeds,
) -> Result<Vec<(u32, u8, Vec<u8>)>, String> {
    let mut out = Vec::new();
    match nas_type {
        NasType::Mikrotik => {
            out.push((
                vendor::MIKROTIK,
                mikrotik::RATE_LIMIT,
                portal.rate_limit.as_bytes().to_vec(),
            ));
            if let Some(list) = &portal.address_list {
                out.push((
                    vendor::MIKROTIK,
                    mikrotik::ADDRESS_LIST,
                    list.as_bytes().to_vec(),
                ));
            }
            return Ok(out);
        }
        t if vendor_speed::by_vendor(t) => {
            out = vendor_speed::attributes(t, &portal.rate(), speeds)?;
        }
        _ => {}
    }
    if nas_type != NasType::AccelPpp {
        // A generic NAS knows speeds only by Filter-Id: the rate itself
        // when no portal filter is named.
        let filter = portal
            .filter_id
            .as_deref()
            .or((nas_type == NasType::Generic).then_some(portal.rate_limit.as_str()));
        if let Some(f) = filter {
            out.push((0, attr::FILTER_ID, f.as_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// Why a subscriber is captive, as logged and counted.
pub fn captive_reason(standing: Standing) -> Option<RejectReason> {
    match standing {
        Standing::Disabled => Some(RejectReason::Disabled),
        Standing::Expired => Some(RejectReason::Expired),
        Standing::OverQuota => Some(RejectReason::QuotaExceeded),
        Standing::Valid | Standing::Deleted => None,
    }
}

/// What a subscriber's service says for each way of lapsing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceActions {
    pub on_expired: LapseAction,
    pub on_disabled: LapseAction,
    /// None: the service has no quota (any more).
    pub quota: Option<QuotaAction>,
}

/// What the service says a lapsed subscriber's login gets.
pub fn lapse_action(
    reason: RejectReason,
    on_expired: LapseAction,
    on_disabled: LapseAction,
) -> LapseAction {
    match reason {
        RejectReason::Expired => on_expired,
        RejectReason::Disabled => on_disabled,
        _ => LapseAction::Reject,
    }
}

/// What the expiry job does with one live session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// Nothing: in the right state already.
    Stay,
    /// A CoA into the captive state, recorded as moved.
    IntoPortal(RejectReason),
    /// A Disconnect-Request.
    Disconnect,
}

/// Decides a live session's move: `standing` is its subscriber's now,
/// `captive` whether it is in the walled garden, `actions` the service's
/// (None: the subscriber or service is not known, so `reject`). A quota
/// that throttles is the quota job's (a speed by CoA): for the sweep such
/// a subscriber is in good standing.
///
/// Leaving the portal is always a Disconnect: a captive session may hold
/// an address of the portal pool, which no CoA can change, and MikroTik
/// cannot take a dynamic address-list entry back by CoA; the router dials
/// again within seconds and gets its full service.
pub fn sweep_move(
    standing: Standing,
    captive: bool,
    actions: Option<ServiceActions>,
    online: OnlineMove,
) -> Move {
    let actions = actions.unwrap_or_default();
    let action = match standing {
        Standing::OverQuota => match actions.quota {
            Some(QuotaAction::Reject) => Some(LapseAction::Reject),
            Some(QuotaAction::Portal) => Some(LapseAction::Portal),
            Some(QuotaAction::Throttle) | None => None,
        },
        other => {
            captive_reason(other).map(|r| lapse_action(r, actions.on_expired, actions.on_disabled))
        }
    };
    let (Some(action), Some(reason)) = (action, captive_reason(standing)) else {
        return match (standing, captive) {
            (Standing::Deleted, _) | (_, true) => Move::Disconnect,
            _ => Move::Stay,
        };
    };
    match (action, captive) {
        (LapseAction::Reject, _) => Move::Disconnect,
        (LapseAction::Portal, true) => Move::Stay,
        (LapseAction::Portal, false) => match online {
            OnlineMove::Coa => Move::IntoPortal(reason),
            OnlineMove::Disconnect => Move::Disconnect,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTAL: Option<ServiceActions> = Some(ServiceActions {
        on_expired: LapseAction::Portal,
        on_disabled: LapseAction::Portal,
        quota: Some(QuotaAction::Portal),
    });
    const REJECT: Option<ServiceActions> = None;

    #[test]
    fn the_sweep_moves_lapsed_sessions_in_and_renewed_ones_out() {
        use Standing::*;
        let coa = OnlineMove::Coa;
        assert_eq!(
            sweep_move(Expired, false, PORTAL, coa),
            Move::IntoPortal(RejectReason::Expired)
        );
        assert_eq!(
            sweep_move(Disabled, false, PORTAL, coa),
            Move::IntoPortal(RejectReason::Disabled)
        );
        assert_eq!(sweep_move(Expired, true, PORTAL, coa), Move::Stay);
        assert_eq!(
            sweep_move(Expired, false, PORTAL, OnlineMove::Disconnect),
            Move::Disconnect
        );
        // Renewed: out of the portal; never captive: left alone.
        assert_eq!(sweep_move(Valid, true, PORTAL, coa), Move::Disconnect);
        assert_eq!(sweep_move(Valid, false, PORTAL, coa), Move::Stay);
        // `reject` services and deleted subscribers: cut, as before.
        assert_eq!(sweep_move(Expired, false, REJECT, coa), Move::Disconnect);
        assert_eq!(sweep_move(Expired, true, REJECT, coa), Move::Disconnect);
        assert_eq!(sweep_move(Deleted, true, PORTAL, coa), Move::Disconnect);
        // Each reason by its own setting.
        let only_expired = Some(ServiceActions {
            on_expired: LapseAction::Portal,
            ..ServiceActions::default()
        });
        assert_eq!(
            sweep_move(Disabled, false, only_expired, coa),
            Move::Disconnect
        );
        assert_eq!(
            sweep_move(Expired, false, only_expired, coa),
            Move::IntoPortal(RejectReason::Expired)
        );
    }

    #[test]
    fn a_quota_that_captures_or_rejects_is_the_sweeps_and_a_throttle_is_not() {
        use Standing::*;
        let coa = OnlineMove::Coa;
        let quota = |action| {
            Some(ServiceActions {
                quota: Some(action),
                ..ServiceActions::default()
            })
        };
        assert_eq!(
            sweep_move(OverQuota, false, quota(QuotaAction::Portal), coa),
            Move::IntoPortal(RejectReason::QuotaExceeded)
        );
        assert_eq!(
            sweep_move(OverQuota, true, quota(QuotaAction::Portal), coa),
            Move::Stay
        );
        assert_eq!(
            sweep_move(OverQuota, false, quota(QuotaAction::Reject), coa),
            Move::Disconnect
        );
        // A throttle (or a quota since removed) is a speed, not the sweep's;
        // a captive session of such a subscriber leaves the garden.
        for q in [
            quota(QuotaAction::Throttle),
            Some(ServiceActions::default()),
        ] {
            assert_eq!(sweep_move(OverQuota, false, q, coa), Move::Stay);
            assert_eq!(sweep_move(OverQuota, true, q, coa), Move::Disconnect);
        }
        // The reset: back in good standing, out of the garden.
        assert_eq!(
            sweep_move(Valid, true, quota(QuotaAction::Portal), coa),
            Move::Disconnect
        );
    }

    #[test]
    fn the_configuration_is_checked() {
        let p = Portal::default();
        assert_eq!(p.rate_limit, "512k/512k");
        assert_eq!(p.address_list.as_deref(), Some("expired"));
        assert_eq!(p.pool, None);
        let bad = |c: PortalConfig| Portal::from_config(&c).unwrap_err();
        let base = PortalConfig::default;
        assert!(bad(PortalConfig {
            download: "fast".into(),
            ..base()
        })
        .contains("portal.download"));
        assert!(bad(PortalConfig {
            upload: "0".into(),
            ..base()
        })
        .contains("above 0"));
        assert!(bad(PortalConfig {
            filter_id: "a\u{0}b".into(),
            ..base()
        })
        .contains("portal.filter_id"));
        let p = Portal::from_config(&PortalConfig {
            address_list: " ".into(),
            session_timeout_secs: 0,
            download: "2M".into(),
            ..base()
        })
        .unwrap();
        assert_eq!((p.address_list, p.session_timeout), (None, None));
        assert_eq!(p.rate_limit, "512k/2000k");
    }
}
