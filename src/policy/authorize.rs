//! The Access-Request decision, in the order README "What a login gets"
//! lists, as a pure function: the packet, its NAS, the snapshot, the
//! password key and the clock go in; a signed
//! Access-Accept or Access-Reject comes out in the caller's buffer,
//! together with the reason for the log and the counters.

use std::net::IpAddr;
use std::time::Instant;

use chrono::{NaiveDate, NaiveDateTime};
use zeroize::Zeroize;

use super::mac;
use super::portal;
use super::rules;
use super::sessions::{LoginId, SessionGate};
use super::snapshot::{Nas, Service, Snapshot, Subscriber};
use crate::auth::{chap, mschapv2, pap, Method};
use crate::keyfile::{PasswordKey, MAX_STORED_PASSWORD};
use crate::model::{LapseAction, NasType, PasswordKind, QuotaAction, CAPTIVE_CLASS_PREFIX};
use crate::policy::vendor_speed;
use crate::pool::{pool_names, AddressSource, Offer, PoolAddr, PoolKind};
use crate::proto::dict::{attr, mikrotik, ms, vendor};
use crate::proto::{Code, EncodeError, Packet, PacketBuf, PacketWriter};

/// Why an Access-Request was rejected. Each has its own log reason and
/// counter label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    UnknownUser,
    BadPassword,
    Disabled,
    Expired,
    MacMismatch,
    /// MS-CHAPv1, EAP: recognised but not supported.
    UnsupportedMethod,
    /// No User-Password, CHAP-Password or MS-CHAP2-Response.
    NoCredentials,
    /// The stored password does not decrypt with the configured key.
    DecryptFailed,
    /// A CHAP-Challenge shorter than 5 octets (RFC 2865 §5.40): an empty
    /// or tiny challenge would let responses be precomputed.
    BadChapChallenge,
    /// The service's server-side pool has no address left for a newcomer.
    PoolExhausted,
    /// CHAP for a subscriber whose password is known only by its NT hash
    /// (imported from a FreeRADIUS NT-Password): CHAP needs the password.
    ChapNeedsCleartext,
    /// The subscriber's session limit is reached (README "Simultaneous use").
    SimultaneousUse,
    /// The subscriber is at their service's byte quota, which rejects
    /// (README "Quota and fair usage").
    QuotaExceeded,
}

impl RejectReason {
    /// The reason as logged (`reason=...`) and stored in radius_logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownUser => "unknown user",
            RejectReason::BadPassword => "bad password",
            RejectReason::Disabled => "disabled",
            RejectReason::Expired => "expired",
            RejectReason::MacMismatch => "mac mismatch",
            RejectReason::UnsupportedMethod => "unsupported auth method",
            RejectReason::NoCredentials => "no credentials",
            RejectReason::DecryptFailed => "password decrypt failed",
            RejectReason::BadChapChallenge => "bad chap challenge",
            RejectReason::PoolExhausted => "pool exhausted",
            RejectReason::ChapNeedsCleartext => "chap needs the cleartext password",
            RejectReason::SimultaneousUse => "simultaneous use",
            RejectReason::QuotaExceeded => "quota exceeded",
        }
    }

    /// The metric label (`reason="..."`).
    pub fn metric_label(self) -> &'static str {
        match self {
            RejectReason::UnknownUser => "unknown_user",
            RejectReason::BadPassword => "bad_password",
            RejectReason::Disabled => "disabled",
            RejectReason::Expired => "expired",
            RejectReason::MacMismatch => "mac_mismatch",
            RejectReason::UnsupportedMethod => "unsupported_method",
            RejectReason::NoCredentials => "no_credentials",
            RejectReason::DecryptFailed => "decrypt_failed",
            RejectReason::BadChapChallenge => "bad_chap_challenge",
            RejectReason::PoolExhausted => "pool_exhausted",
            RejectReason::ChapNeedsCleartext => "chap_needs_cleartext",
            RejectReason::SimultaneousUse => "simultaneous_use",
            RejectReason::QuotaExceeded => "quota",
        }
    }

    pub const ALL: [RejectReason; 13] = [
        RejectReason::UnknownUser,
        RejectReason::BadPassword,
        RejectReason::Disabled,
        RejectReason::Expired,
        RejectReason::MacMismatch,
        RejectReason::UnsupportedMethod,
        RejectReason::NoCredentials,
        RejectReason::DecryptFailed,
        RejectReason::BadChapChallenge,
        RejectReason::PoolExhausted,
        RejectReason::ChapNeedsCleartext,
        RejectReason::SimultaneousUse,
        RejectReason::QuotaExceeded,
    ];

    fn mschap_error(self) -> mschapv2::ErrorCode {
        match self {
            RejectReason::Disabled => mschapv2::ErrorCode::AccountDisabled,
            RejectReason::Expired => mschapv2::ErrorCode::PasswordExpired,
            RejectReason::MacMismatch
            | RejectReason::SimultaneousUse
            | RejectReason::QuotaExceeded => mschapv2::ErrorCode::NoDialinPermission,
            _ => mschapv2::ErrorCode::AuthenticationFailure,
        }
    }
}

/// What the decision needs besides the packet.
pub struct AuthContext<'a> {
    /// The entry the packet came from: its secret signs the hop.
    pub nas: &'a Nas,
    /// The NAS the request speaks for (a NAS behind a trusted proxy, else
    /// `nas`): its type decides the reply attributes.
    pub speaks_for: &'a Nas,
    pub snapshot: &'a Snapshot,
    pub key: &'a PasswordKey,
    /// The server's local wall-clock time (expiry dates are local days).
    pub now_local: NaiveDateTime,
    /// Fresh per request: MPPE salts and the Class cookie.
    pub entropy: u64,
    /// Server-side pools (README "Address pools").
    pub pools: &'a dyn AddressSource,
    /// The monotonic clock, for the pools' view and session reservations.
    pub now_mono: Instant,
    /// The node's open sessions, for subscribers with a session limit.
    pub sessions: &'a dyn SessionGate,
}

/// The outcome: the reply in the caller's buffer and what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthOutcome {
    pub reply_len: usize,
    pub method: Method,
    pub result: Result<(), RejectReason>,
    /// Accepted into the walled garden, and why.
    pub captive: Option<RejectReason>,
}

/// An accepted login waits for the database to confirm its address: no
/// reply yet; ask again with the same request once it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPending {
    pub method: Method,
}

/// Decides an Access-Request (already parsed and authenticated as coming
/// from `ctx.nas`) and writes the signed reply into `out`.
pub fn answer_access_request(
    ctx: &AuthContext<'_>,
    packet: &Packet<'_>,
    out: &mut PacketBuf,
) -> Result<Result<AuthOutcome, AddressPending>, EncodeError> {
    let method = Method::of(packet);
    let user_name = packet.attr(attr::USER_NAME).unwrap_or_default();
    let mut decision = decide(ctx, packet, method, user_name);
    if let Ok(accepted) = &mut decision {
        match addresses(ctx, accepted) {
            Ok(Some(a)) => {
                accepted.addresses = a;
                // Last, so only a login that gets its Access-Accept holds
                // a place (a reservation) under the limit.
                if !admitted(ctx, packet, accepted) {
                    decision = Err(RejectReason::SimultaneousUse);
                }
            }
            Ok(None) => return Ok(Err(AddressPending { method })),
            Err(reason) => decision = Err(reason),
        }
    }
    let request_auth = packet.authenticator();
    let secret = &ctx.nas.secret;
    let (code, result) = match &decision {
        Ok(_) => (Code::ACCESS_ACCEPT, Ok(())),
        Err(reason) => (Code::ACCESS_REJECT, Err(*reason)),
    };
    let captive = decision.as_ref().ok().and_then(|a| a.captive);
    let mut w = PacketWriter::new(out, code, packet.identifier(), request_auth);
    // BlastRADIUS: Message-Authenticator first in every reply.
    w.message_authenticator()?;
    match decision {
        Ok(accept) if accept.captive.is_some() => {
            write_captive_accept(ctx, packet, &accept, &mut w)?
        }
        Ok(accept) => write_accept(ctx, packet, &accept, &mut w)?,
        Err(reason) => {
            if method == Method::MsChapV2 {
                write_mschap_error(packet, reason, &mut w)?;
            }
        }
    }
    w.proxy_states(packet)?;
    let reply_len = w.finish_response(request_auth, secret).len();
    Ok(Ok(AuthOutcome {
        reply_len,
        method,
        result,
        captive,
    }))
}

/// The addresses of the service's server-side pools, one per kind:
/// `Ok(None)` while a claim is in flight, `PoolExhausted` when a pool has
/// none for this subscriber. A static IP or a radreply Framed-IP-Address
/// takes the place of the IPv4 pool: that pool is not asked at all (an
/// offer would claim an address the login never uses).
fn addresses<'s>(
    ctx: &AuthContext<'s>,
    accepted: &Accepted<'s>,
) -> Result<Option<PoolAddresses<'s>>, RejectReason> {
    let mut out = PoolAddresses::default();
    // A captive login takes the portal's pool when there is one, and then
    // never its static IP.
    let portal_pool = accepted.captive.and(ctx.snapshot.portal.pool.as_deref());
    let Some(field) = portal_pool.or(accepted.service.and_then(|s| s.pool_name.as_deref())) else {
        return Ok(Some(out));
    };
    let subscriber = accepted.subscriber;
    let fixed_v4 = || {
        portal_pool.is_none() && subscriber.static_ip.is_some()
            || ctx
                .snapshot
                .reply_attributes(&subscriber.username)
                .iter()
                .any(|a| a.vendor == 0 && a.ty == attr::FRAMED_IP_ADDRESS)
    };
    // Usernames are stored as text, so this is the stored name (borrowed;
    // a lossy conversion only ever names the same subscriber the same way).
    let user = String::from_utf8_lossy(&subscriber.username);
    let mut pending = false;
    for name in pool_names(field) {
        let Some(kind) = ctx.pools.kind(name) else {
            out.router_pool.get_or_insert(name);
            continue;
        };
        if kind == PoolKind::Ipv4 && fixed_v4() {
            continue;
        }
        match ctx.pools.offer(name, &user, ctx.now_mono) {
            Offer::Ready(a) => match kind {
                PoolKind::Ipv4 => out.ipv4 = Some(a),
                PoolKind::Ipv6Framed => out.framed6 = Some(a),
                PoolKind::Ipv6Delegated => out.delegated6 = Some(a),
            },
            Offer::Pending => pending = true,
            Offer::Exhausted => return Err(RejectReason::PoolExhausted),
            // Removed since `kind` was asked: the router's name, as before.
            Offer::NotAPool => {
                out.router_pool.get_or_insert(name);
            }
        }
    }
    Ok((!pending).then_some(out))
}

/// Whether the subscriber's session limit, if any, lets this login in.
fn admitted(ctx: &AuthContext<'_>, packet: &Packet<'_>, accepted: &Accepted<'_>) -> bool {
    let subscriber = accepted.subscriber;
    let Some(limit) = subscriber.session_limit(accepted.service) else {
        return true;
    };
    let login = LoginId {
        nas: ctx.speaks_for.ip,
        station: packet.attr(attr::CALLING_STATION_ID).unwrap_or_default(),
    };
    ctx.sessions
        .admit(&subscriber.username, limit, login, ctx.now_mono)
}

/// What an accepted request carries into the reply.
struct Accepted<'s> {
    subscriber: &'s Subscriber,
    service: Option<&'s Service>,
    mschap: Option<mschapv2::Success>,
    addresses: PoolAddresses<'s>,
    /// In the walled garden, and why (expired, disabled).
    captive: Option<RejectReason>,
}

/// What the service's pools give this login.
#[derive(Default)]
struct PoolAddresses<'s> {
    ipv4: Option<PoolAddr>,
    framed6: Option<PoolAddr>,
    delegated6: Option<PoolAddr>,
    /// The first pool name that is not a shardius pool: Framed-Pool
    /// (borrowed from the snapshot's service).
    router_pool: Option<&'s str>,
}

impl PoolAddresses<'_> {
    /// The IPv4 address of the service's IPv4 pool, if it gave one.
    fn ipv4_addr(&self) -> Option<std::net::Ipv4Addr> {
        self.ipv4.and_then(|a| match a.ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }
}

fn decide<'s>(
    ctx: &AuthContext<'s>,
    packet: &Packet<'_>,
    method: Method,
    user_name: &[u8],
) -> Result<Accepted<'s>, RejectReason> {
    match method {
        Method::Eap | Method::MsChapV1 => return Err(RejectReason::UnsupportedMethod),
        Method::None => return Err(RejectReason::NoCredentials),
        Method::Pap | Method::Chap | Method::MsChapV2 => {}
    }
    let subscriber = ctx
        .snapshot
        .subscriber(user_name)
        .ok_or(RejectReason::UnknownUser)?;
    let mut plain = [0u8; MAX_STORED_PASSWORD];
    let verified = match ctx.key.decrypt(&subscriber.password_enc, &mut plain) {
        Ok(stored) => verify_credentials(
            ctx,
            packet,
            method,
            user_name,
            match subscriber.password_kind {
                PasswordKind::Cleartext => Stored::Cleartext(stored),
                PasswordKind::NtHash => match <&[u8; 16]>::try_from(stored) {
                    Ok(hash) => Stored::NtHash(hash),
                    Err(_) => Stored::Unusable,
                },
            },
        ),
        Err(_) => Err(RejectReason::DecryptFailed),
    };
    plain.zeroize();
    let mschap = verified?;
    let service = ctx.snapshot.service(subscriber.service_id);
    let lapsed = subscriber.lapsed(ctx.now_local.date());
    // A lapsed subscriber is rejected, or, if the service says so,
    // accepted into the walled garden; so is one at a byte quota that
    // rejects or captures (a throttle is the quota tier's speed).
    let captive = match lapsed {
        None => match service.filter(|s| s.has_quota()).and_then(|s| {
            let fup = ctx.snapshot.fup.get(&s.id)?;
            fup.over_quota(*ctx.snapshot.fup_levels.get(&*subscriber.username)?)
        }) {
            Some(QuotaAction::Reject) => return Err(RejectReason::QuotaExceeded),
            Some(QuotaAction::Portal) => Some(RejectReason::QuotaExceeded),
            Some(QuotaAction::Throttle) | None => None,
        },
        Some(reason) => {
            let (on_expired, on_disabled) =
                service.map_or_else(Default::default, |s| (s.on_expired, s.on_disabled));
            match portal::lapse_action(reason, on_expired, on_disabled) {
                LapseAction::Reject => return Err(reason),
                LapseAction::Portal => Some(reason),
            }
        }
    };
    if let Some(bound) = subscriber.mac {
        let calling = packet.attr(attr::CALLING_STATION_ID).and_then(mac::parse);
        if calling != Some(bound) {
            return Err(RejectReason::MacMismatch);
        }
    }
    Ok(Accepted {
        subscriber,
        service,
        mschap,
        addresses: PoolAddresses::default(),
        captive,
    })
}

/// What the subscriber's decrypted password field holds.
enum Stored<'a> {
    Cleartext(&'a [u8]),
    NtHash(&'a [u8; 16]),
    /// An NT hash that is not 16 bytes: no password matches it.
    Unusable,
}

/// Checks the credentials; for MS-CHAPv2 returns what the accept carries.
fn verify_credentials(
    ctx: &AuthContext<'_>,
    packet: &Packet<'_>,
    method: Method,
    user_name: &[u8],
    stored: Stored<'_>,
) -> Result<Option<mschapv2::Success>, RejectReason> {
    let bad = RejectReason::BadPassword;
    match method {
        Method::Pap => {
            let hidden = packet
                .attr(attr::USER_PASSWORD)
                .ok_or(RejectReason::NoCredentials)?;
            let (secret, ra) = (&ctx.nas.secret, packet.authenticator());
            match stored {
                Stored::Cleartext(password) => pap::verify(hidden, secret, ra, password),
                Stored::NtHash(hash) => pap::verify_nt_hash(hidden, secret, ra, hash),
                Stored::Unusable => false,
            }
            .then_some(None)
            .ok_or(bad)
        }
        Method::Chap => {
            let response = packet
                .attr(attr::CHAP_PASSWORD)
                .ok_or(RejectReason::NoCredentials)?;
            // RFC 2865 §5.3: without CHAP-Challenge the Request Authenticator
            // is the challenge; §5.40: a CHAP-Challenge has at least 5 octets.
            let challenge = match packet.attr(attr::CHAP_CHALLENGE) {
                Some(c) if c.len() < 5 => return Err(RejectReason::BadChapChallenge),
                Some(c) => c,
                None => packet.authenticator(),
            };
            let Stored::Cleartext(password) = stored else {
                return Err(RejectReason::ChapNeedsCleartext);
            };
            chap::verify(response, challenge, password)
                .then_some(None)
                .ok_or(bad)
        }
        Method::MsChapV2 => {
            let challenge = packet
                .vendor_attr(vendor::MICROSOFT, ms::CHAP_CHALLENGE)
                .ok_or(RejectReason::NoCredentials)?;
            let response = packet
                .vendor_attr(vendor::MICROSOFT, ms::CHAP2_RESPONSE)
                .and_then(mschapv2::Response::parse)
                .ok_or(RejectReason::NoCredentials)?;
            match stored {
                Stored::Cleartext(password) => {
                    mschapv2::verify(challenge, &response, user_name, password)
                }
                Stored::NtHash(hash) => {
                    mschapv2::verify_hash(challenge, &response, user_name, hash)
                }
                Stored::Unusable => None,
            }
            .map(Some)
            .ok_or(bad)
        }
        Method::MsChapV1 | Method::Eap => Err(RejectReason::UnsupportedMethod),
        Method::None => Err(RejectReason::NoCredentials),
    }
}

/// The Access-Accept attributes of README "What a login gets", in a fixed order. A radreply
/// row naming an attribute replaces the one shardius would generate.
fn write_accept(
    ctx: &AuthContext<'_>,
    packet: &Packet<'_>,
    accepted: &Accepted<'_>,
    w: &mut PacketWriter<'_>,
) -> Result<(), EncodeError> {
    let subscriber = accepted.subscriber;
    let extra = ctx
        .snapshot
        .login_reply(&subscriber.username, accepted.service);
    let extra = &*extra;
    let overridden =
        |vendor_id: u32, ty: u8| extra.iter().any(|a| a.vendor == vendor_id && a.ty == ty);
    let prefs = &ctx.snapshot.preferences;

    write_mschap_success(ctx, packet, accepted, w)?;
    if let Some(service) = accepted.service {
        // A subscriber already in a FUP tier gets the tier's speed, and an
        // open bandwidth rule multiplies it.
        let tier = ctx.snapshot.fup_tier(&subscriber.username, service.id);
        let rule = match &*ctx.snapshot.rules {
            [] => None,
            rules => rules::active(rules, service.id, ctx.now_local),
        };
        let speed = rules::effective_speed(service, tier, rule);
        match ctx.speaks_for.nas_type {
            NasType::Mikrotik if !overridden(vendor::MIKROTIK, mikrotik::RATE_LIMIT) => {
                w.vendor_attr(
                    vendor::MIKROTIK,
                    mikrotik::RATE_LIMIT,
                    speed.rate_limit.as_bytes(),
                )?;
            }
            NasType::Generic if !overridden(0, attr::FILTER_ID) => {
                w.attr(attr::FILTER_ID, speed.filter.as_bytes())?;
            }
            other if vendor_speed::by_vendor(other) => {
                let rate = vendor_speed::Rate {
                    download_kbps: speed.download_kbps,
                    upload_kbps: speed.upload_kbps,
                    name: service.name.clone(),
                    tier: speed.tier,
                };
                // A service always has a name, so no template fails here.
                let attrs = vendor_speed::attributes(other, &rate, &ctx.snapshot.speeds)
                    .unwrap_or_default();
                for (v, ty, value) in attrs.iter().filter(|(v, ty, _)| !overridden(*v, *ty)) {
                    if *v == 0 {
                        w.attr(*ty, value)?;
                    } else {
                        w.vendor_attr(*v, *ty, value)?;
                    }
                }
            }
            _ => {}
        }
    }
    let framed_ip = subscriber
        .static_ip
        .or(accepted.addresses.ipv4_addr())
        .filter(|_| !overridden(0, attr::FRAMED_IP_ADDRESS));
    if let Some(ip) = framed_ip {
        w.attr_ipv4(attr::FRAMED_IP_ADDRESS, ip)?;
    }
    let has_framed_ip = framed_ip.is_some() || overridden(0, attr::FRAMED_IP_ADDRESS);
    if let Some(pool) = accepted.addresses.router_pool {
        if !has_framed_ip && !overridden(0, attr::FRAMED_POOL) {
            w.attr(attr::FRAMED_POOL, pool.as_bytes())?;
        }
    }
    write_ipv6_prefixes(accepted, w, |ty| overridden(0, ty))?;
    if !overridden(0, attr::ACCT_INTERIM_INTERVAL) {
        w.attr_u32(attr::ACCT_INTERIM_INTERVAL, prefs.interim_interval_secs)?;
    }
    if let Some(idle) = accepted.service.and_then(|s| s.idle_timeout) {
        if !overridden(0, attr::IDLE_TIMEOUT) {
            w.attr_u32(attr::IDLE_TIMEOUT, idle)?;
        }
    }
    if prefs.expiry_hard_cut && !overridden(0, attr::SESSION_TIMEOUT) {
        if let Some(secs) = subscriber
            .expiry_date
            .map(|d| seconds_until_end_of(d, ctx.now_local))
        {
            w.attr_u32(attr::SESSION_TIMEOUT, secs)?;
        }
    }
    if !overridden(0, attr::CLASS) {
        w.attr(
            attr::CLASS,
            &class_cookie(b"SHD1", subscriber.id, ctx.entropy),
        )?;
    }
    for a in extra {
        if a.vendor == 0 {
            w.attr(a.ty, &a.value)?;
        } else {
            w.vendor_attr(a.vendor, a.ty, &a.value)?;
        }
    }
    Ok(())
}

/// MS-CHAP2-Success and the MPPE keys, for an MS-CHAPv2 login.
fn write_mschap_success(
    ctx: &AuthContext<'_>,
    packet: &Packet<'_>,
    accepted: &Accepted<'_>,
    w: &mut PacketWriter<'_>,
) -> Result<(), EncodeError> {
    if let Some(ok) = &accepted.mschap {
        let salt = ctx.entropy.to_be_bytes();
        ok.write_accept_attributes(
            w,
            &ctx.nas.secret,
            packet.authenticator(),
            [salt[6], salt[7]],
        )?;
    }
    Ok(())
}

/// The IPv6 prefixes of shardius pools, but those `skip` names.
fn write_ipv6_prefixes(
    accepted: &Accepted<'_>,
    w: &mut PacketWriter<'_>,
    skip: impl Fn(u8) -> bool,
) -> Result<(), EncodeError> {
    for (prefix, ty) in [
        (accepted.addresses.framed6, attr::FRAMED_IPV6_PREFIX),
        (accepted.addresses.delegated6, attr::DELEGATED_IPV6_PREFIX),
    ] {
        if let Some(value) = prefix.and_then(|p| p.ipv6_prefix_value()) {
            if !skip(ty) {
                w.attr(ty, &value)?;
            }
        }
    }
    Ok(())
}

/// The Access-Accept of a login into the walled garden: the portal's
/// speed and captive marker (`portal::attributes`), an address of the
/// portal pool (or the service's addressing), the portal's
/// Session-Timeout and a Class that marks the session captive. Neither
/// the subscriber's radreply nor the service's reply attributes: they could
/// undo the captivity (a Framed-IP-Address, a rate limit).
fn write_captive_accept(
    ctx: &AuthContext<'_>,
    packet: &Packet<'_>,
    accepted: &Accepted<'_>,
    w: &mut PacketWriter<'_>,
) -> Result<(), EncodeError> {
    let portal = &ctx.snapshot.portal;
    write_mschap_success(ctx, packet, accepted, w)?;
    // The portal's speed is a plain rate, so no template can fail on it;
    // a `[speeds]` template that needs more sends nothing.
    let attrs = portal::attributes(portal, ctx.speaks_for.nas_type, &ctx.snapshot.speeds)
        .unwrap_or_default();
    for (v, ty, value) in &attrs {
        if *v == 0 {
            w.attr(*ty, value)?;
        } else {
            w.vendor_attr(*v, *ty, value)?;
        }
    }
    let static_ip = accepted
        .subscriber
        .static_ip
        .filter(|_| portal.pool.is_none());
    if let Some(ip) = accepted.addresses.ipv4_addr().or(static_ip) {
        w.attr_ipv4(attr::FRAMED_IP_ADDRESS, ip)?;
    } else if let Some(pool) = accepted.addresses.router_pool {
        w.attr(attr::FRAMED_POOL, pool.as_bytes())?;
    }
    write_ipv6_prefixes(accepted, w, |_| false)?;
    w.attr_u32(
        attr::ACCT_INTERIM_INTERVAL,
        ctx.snapshot.preferences.interim_interval_secs,
    )?;
    if let Some(secs) = portal.session_timeout {
        w.attr_u32(attr::SESSION_TIMEOUT, secs)?;
    }
    let class = class_cookie(CAPTIVE_CLASS_PREFIX, accepted.subscriber.id, ctx.entropy);
    w.attr(attr::CLASS, &class)
}

/// Seconds from `now` to the end of `last_day` (local midnight after it), at least 1.
fn seconds_until_end_of(last_day: NaiveDate, now: NaiveDateTime) -> u32 {
    let end = last_day
        .succ_opt()
        .unwrap_or(last_day)
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists");
    (end - now).num_seconds().clamp(1, i64::from(u32::MAX)) as u32
}

/// Class: an opaque cookie the NAS echoes in accounting (RFC 2865 §5.25):
/// `prefix` ("SHD1", or "SHDP" for a captive login), the subscriber id and
/// 32 bits of per-request entropy.
fn class_cookie(prefix: &[u8; 4], subscriber_id: i64, entropy: u64) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..4].copy_from_slice(prefix);
    c[4..12].copy_from_slice(&subscriber_id.to_be_bytes());
    c[12..].copy_from_slice(&(entropy as u32).to_be_bytes());
    c
}

/// MS-CHAP-Error in an MS-CHAPv2 reject, when the request was well formed.
fn write_mschap_error(
    packet: &Packet<'_>,
    reason: RejectReason,
    w: &mut PacketWriter<'_>,
) -> Result<(), EncodeError> {
    let challenge = packet
        .vendor_attr(vendor::MICROSOFT, ms::CHAP_CHALLENGE)
        .and_then(|c| <&[u8; 16]>::try_from(c).ok());
    let response = packet
        .vendor_attr(vendor::MICROSOFT, ms::CHAP2_RESPONSE)
        .and_then(mschapv2::Response::parse);
    if let (Some(challenge), Some(response)) = (challenge, response) {
        let value = mschapv2::ErrorValue::new(response.ident, reason.mschap_error(), challenge);
        w.vendor_attr(vendor::MICROSOFT, ms::CHAP_ERROR, value.as_bytes())?;
    }
    Ok(())
}
