//! The per-shard request engine, without IO (quinn-proto style): the shard
//! loop hands it a datagram, its source, the current snapshot and the
//! time; it returns what to send and what happened. Everything it keeps
//! (duplicate cache, counters, rate limits) is shard-local.

mod dedup;
mod stats;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};

pub use dedup::{DuplicateCache, RequestKey};
pub use stats::{
    all_drop_reasons, Counter, DropReason, ShardStats, StatsSlot, CAPTIVE_REASONS, COUNTERS,
};

use crate::accounting::{AcctEvent, AcctKind};
use crate::auth::Method;
use crate::keyfile::PasswordKey;
use crate::policy::sessions::SessionGate;
use crate::policy::{answer_access_request, AuthContext, RejectReason, Snapshot};
use crate::pool::AddressSource;
use crate::proto::authenticator::{check_message_authenticator, verify_request_authenticator};
use crate::proto::dict::attr;
use crate::proto::{Code, MessageAuthenticatorCheck, Packet, PacketBuf, PacketWriter};

/// Which listener a datagram arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    Auth,
    Acct,
}

/// What happened to one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Accepted {
        method: Method,
        /// The NAS the request speaks for: the registered NAS behind a
        /// trusted proxy, else the one it came from (radius_logs, logs).
        nas: IpAddr,
        /// Accepted into the walled garden, and why (expired, disabled).
        captive: Option<RejectReason>,
    },
    Rejected {
        method: Method,
        reason: RejectReason,
        nas: IpAddr,
    },
    /// A retransmission answered from the duplicate cache.
    Duplicate,
    /// Accepted, but the address from a server-side pool is being claimed
    /// in the database: nothing to send yet; hand the same datagram to
    /// [`Engine::handle_again`] shortly.
    AddressPending {
        method: Method,
    },
    /// An Accounting-Request to hand to the writer: the Accounting-Response
    /// is in the buffer but must not be sent before the event is durable;
    /// take the event with [`Engine::take_accounting`].
    AccountingQueued,
    StatusServer,
    /// No answer. `log` is set for the first unknown-NAS packet from an
    /// address per minute, so the operator sees it without a log flood.
    Dropped {
        reason: DropReason,
        log: bool,
    },
}

/// The engine's answer: `reply` bytes are in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handled {
    pub reply_len: Option<usize>,
    pub event: Event,
    /// Where the request's User-Name is in the datagram, if it parsed and
    /// has one: the shell logs it without parsing the datagram again.
    pub user_name: Option<Span>,
}

impl Handled {
    /// The request's User-Name in `datagram` (the one handled); empty when
    /// it has none.
    pub fn user_name<'d>(&self, datagram: &'d [u8]) -> &'d [u8] {
        self.user_name
            .map(|span| span.of_datagram(datagram))
            .unwrap_or_default()
    }
}

/// A byte range of the datagram a [`Handled`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    start: u16,
    end: u16,
}

impl Span {
    fn of(range: std::ops::Range<usize>) -> Option<Span> {
        Some(Span {
            start: u16::try_from(range.start).ok()?,
            end: u16::try_from(range.end).ok()?,
        })
    }

    /// The bytes of `datagram` (the one handled) this span covers; empty
    /// if it is some other, shorter datagram.
    fn of_datagram(self, datagram: &[u8]) -> &[u8] {
        datagram
            .get(usize::from(self.start)..usize::from(self.end))
            .unwrap_or_default()
    }
}

/// Time as the engine sees it: monotonic for windows, local wall clock for
/// expiry dates. Passed in, never read inside.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub local: NaiveDateTime,
    pub utc: DateTime<Utc>,
}

const UNKNOWN_NAS_LOG_EVERY: Duration = Duration::from_secs(60);
/// Slots of the per-shard table of recently logged unknown sources.
const UNKNOWN_NAS_LOG_TABLE: usize = 4096;

/// What a datagram is judged against: the current snapshot, the password
/// key and the time.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub snapshot: &'a Snapshot,
    pub key: &'a PasswordKey,
    pub now: Now,
    /// The highest accounting ticket of this shard the writer has made
    /// durable and acknowledged.
    pub committed: u64,
    /// Server-side address pools (`&NoPools` when there are none).
    pub pools: &'a dyn AddressSource,
    /// The node's open sessions, for session limits (`&NoLimits`: none
    /// enforced).
    pub sessions: &'a dyn SessionGate,
}

/// One shard's request engine.
pub struct Engine {
    dedup: DuplicateCache,
    pub stats: ShardStats,
    unknown_nas_logged: RecentlyLogged,
    /// Registered NASes whose foreign NAS-IP-Address was logged lately.
    foreign_nas_ip_logged: RecentlyLogged,
    /// xorshift64* state: MPPE salts and Class cookies (not secrets; they
    /// only need to differ between replies).
    rng: u64,
    /// Tickets number this shard's accounting events for the writer.
    last_ticket: u64,
    /// The accounting event of the last `AccountingQueued`.
    queued: Option<QueuedAccounting>,
    /// Set while a parked request is handled again: it was counted once.
    again: bool,
    /// The User-Name span of the request being handled, for its Handled.
    user_name: Option<Span>,
}

/// An accounting event waiting to be handed to the writer.
#[derive(Debug)]
pub struct QueuedAccounting {
    pub event: AcctEvent,
    /// This shard's sequence number: its reply may be sent (and a
    /// retransmission answered) once the writer has committed it.
    pub ticket: u64,
    pub key: RequestKey,
    /// The NAS-IP-Address the packet named when it is not one of its NAS
    /// entry's addresses (the event is recorded under the entry's own).
    pub foreign_nas_ip: Option<ForeignNasIp>,
}

/// An Accounting-Request naming a NAS-IP-Address its NAS entry does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForeignNasIp {
    pub claimed: IpAddr,
    /// Set for the first such packet from the entry per minute.
    pub log: bool,
}

impl Engine {
    pub fn new(dedup_window: Duration, dedup_capacity: usize, seed: u64) -> Self {
        Engine {
            dedup: DuplicateCache::new(dedup_window, dedup_capacity),
            stats: ShardStats::default(),
            unknown_nas_logged: RecentlyLogged::new(UNKNOWN_NAS_LOG_TABLE),
            foreign_nas_ip_logged: RecentlyLogged::new(256),
            rng: seed | 1,
            last_ticket: 0,
            queued: None,
            again: false,
            user_name: None,
        }
    }

    fn next_entropy(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Handles one datagram received on `port` from `src`.
    pub fn handle(
        &mut self,
        port: Port,
        src: SocketAddr,
        datagram: &[u8],
        ctx: &Context<'_>,
        out: &mut PacketBuf,
    ) -> Handled {
        self.user_name = None;
        let mut handled = self.handle_inner(port, src, datagram, ctx, out);
        handled.user_name = self.user_name.take();
        match handled.event {
            Event::AddressPending { .. } => {}
            Event::Accepted { captive, .. } => {
                self.stats.incr(Counter::Accepts);
                if let Some(reason) = captive {
                    self.stats.incr(Counter::Captive(reason));
                }
            }
            Event::Rejected { reason, .. } => self.stats.incr(Counter::Reject(reason)),
            Event::Duplicate => self.stats.incr(Counter::Duplicates),
            Event::AccountingQueued => {}
            Event::StatusServer => self.stats.incr(Counter::StatusServer),
            Event::Dropped { reason, .. } => self.stats.incr(Counter::Dropped(reason)),
        }
        handled
    }

    /// Handles an Access-Request again that was `AddressPending`: the same
    /// as [`Engine::handle`], but not counted as another request.
    pub fn handle_again(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        ctx: &Context<'_>,
        out: &mut PacketBuf,
    ) -> Handled {
        self.again = true;
        let handled = self.handle(Port::Auth, src, datagram, ctx, out);
        self.again = false;
        handled
    }

    fn handle_inner(
        &mut self,
        port: Port,
        src: SocketAddr,
        datagram: &[u8],
        ctx: &Context<'_>,
        out: &mut PacketBuf,
    ) -> Handled {
        let Context {
            snapshot,
            key,
            now,
            committed,
            pools,
            sessions,
        } = *ctx;
        let packet = match Packet::parse(datagram) {
            Ok(p) => p,
            Err(e) => return dropped(DropReason::Malformed(e)),
        };
        self.user_name = packet.attr_range(attr::USER_NAME).and_then(Span::of);
        let Some(nas) = snapshot.nas.get(&src.ip()) else {
            let log = self.should_log_unknown(src.ip(), now.mono);
            return Handled {
                user_name: None,
                reply_len: None,
                event: Event::Dropped {
                    reason: DropReason::UnknownNas,
                    log,
                },
            };
        };
        let code = packet.code();
        match (port, code) {
            (Port::Auth, Code::ACCESS_REQUEST) if self.again => {}
            (Port::Auth, Code::ACCESS_REQUEST) => self.stats.incr(Counter::AuthRequests),
            (Port::Acct, Code::ACCOUNTING_REQUEST) => self.stats.incr(Counter::AcctRequests),
            (_, Code::STATUS_SERVER) => {}
            _ => return dropped(DropReason::UnexpectedCode),
        }

        let key_for_dedup = RequestKey {
            src,
            code: code.0,
            identifier: packet.identifier(),
            authenticator: *packet.authenticator(),
        };
        if code != Code::STATUS_SERVER {
            // RFC 5997 §3: Status-Server is never answered from the cache.
            if let Some(cached) = self.dedup.get(now.mono, &key_for_dedup) {
                if cached.ticket > committed {
                    return dropped(DropReason::AccountingInProgress);
                }
                let reply = cached.reply;
                out[..reply.len()].copy_from_slice(reply);
                return Handled {
                    user_name: None,
                    reply_len: Some(reply.len()),
                    event: Event::Duplicate,
                };
            }
        }

        // Behind a trusted proxy, the NAS the request names: its type,
        // Message-Authenticator policy and sessions. The proxy's secret
        // still signs every packet of the hop.
        let speaks_for = snapshot.speaks_for(nas, &packet);
        match check_message_authenticator(&packet, &nas.secret, None) {
            // Only an Access-Request arms `auto` (as FreeRADIUS does): a
            // Status-Server must carry one anyway (RFC 5997 §3), and an
            // Accounting-Request with one says nothing about how the NAS
            // (or a proxy that health-checks us) sends Access-Requests.
            MessageAuthenticatorCheck::Valid if code == Code::ACCESS_REQUEST => {
                speaks_for.note_message_authenticator()
            }
            MessageAuthenticatorCheck::Valid => {}
            MessageAuthenticatorCheck::Invalid => {
                return dropped(DropReason::BadMessageAuthenticator)
            }
            MessageAuthenticatorCheck::Absent => {
                // RFC 5997 §3 and RFC 3579 §3.2 require it on Status-Server and EAP.
                let required = code == Code::STATUS_SERVER
                    || (code == Code::ACCESS_REQUEST
                        && (speaks_for.requires_message_authenticator()
                            || packet.attr(attr::EAP_MESSAGE).is_some()));
                if required {
                    return dropped(DropReason::MissingMessageAuthenticator);
                }
            }
        }

        if code == Code::STATUS_SERVER {
            let reply_code = match port {
                Port::Auth => Code::ACCESS_ACCEPT,
                Port::Acct => Code::ACCOUNTING_RESPONSE,
            };
            let mut w =
                PacketWriter::new(out, reply_code, packet.identifier(), packet.authenticator());
            if w.message_authenticator().is_err() || w.proxy_states(&packet).is_err() {
                return dropped(DropReason::ReplyTooLong);
            }
            let len = w.finish_response(packet.authenticator(), &nas.secret).len();
            return Handled {
                user_name: None,
                reply_len: Some(len),
                event: Event::StatusServer,
            };
        }

        if code == Code::ACCOUNTING_REQUEST {
            if !verify_request_authenticator(&packet, &nas.secret) {
                return dropped(DropReason::BadRequestAuthenticator);
            }
            // Accounting belongs to the NAS entry it came from (source
            // address and secret): a NAS-IP-Address that is not one of the
            // entry's addresses would write sessions, or close them with
            // Accounting-On/Off, in another NAS's name.
            let (nas_ip, foreign) =
                AcctEvent::nas_ip_of(&packet, speaks_for.ip, |ip| speaks_for.has_address(ip));
            let foreign_nas_ip = foreign.map(|claimed| {
                self.stats.incr(Counter::AcctForeignNasIp);
                ForeignNasIp {
                    claimed,
                    log: self.foreign_nas_ip_logged.first_in_window(nas.ip, now.mono),
                }
            });
            let mut event =
                match AcctEvent::from_packet(&packet, nas_ip, src.ip().to_canonical(), now.utc) {
                    Ok(e) => e,
                    Err(_) => return dropped(DropReason::AccountingUnsupported),
                };
            if event.kind == AcctKind::NasReboot {
                event.nas_addresses = match foreign {
                    // A NAS behind a proxy that is not registered: its
                    // reboot closes the sessions under its own address
                    // (none: they are recorded under the proxy's), never
                    // those of every NAS behind the proxy.
                    Some(claimed) if nas.is_proxy => vec![claimed],
                    _ => speaks_for.addresses(),
                };
            }
            // The response is built now and sent by the writer once the
            // event is durable (RFC 2866 §2: only after recording it).
            let mut w = PacketWriter::new(
                out,
                Code::ACCOUNTING_RESPONSE,
                packet.identifier(),
                packet.authenticator(),
            );
            if w.proxy_states(&packet).is_err() {
                return dropped(DropReason::ReplyTooLong);
            }
            let len = w.finish_response(packet.authenticator(), &nas.secret).len();
            self.last_ticket += 1;
            self.dedup
                .insert_ticketed(now.mono, key_for_dedup, &out[..len], self.last_ticket);
            self.queued = Some(QueuedAccounting {
                event,
                ticket: self.last_ticket,
                key: key_for_dedup,
                foreign_nas_ip,
            });
            return Handled {
                user_name: None,
                reply_len: Some(len),
                event: Event::AccountingQueued,
            };
        }

        let ctx = AuthContext {
            nas,
            speaks_for,
            snapshot,
            key,
            now_local: now.local,
            entropy: self.next_entropy(),
            pools,
            now_mono: now.mono,
            sessions,
        };
        let outcome = match answer_access_request(&ctx, &packet, out) {
            Ok(Ok(o)) => o,
            // Not cached: a retransmission meanwhile is evaluated again.
            Ok(Err(pending)) => {
                return Handled {
                    user_name: None,
                    reply_len: None,
                    event: Event::AddressPending {
                        method: pending.method,
                    },
                }
            }
            Err(_) => return dropped(DropReason::ReplyTooLong),
        };
        self.dedup
            .insert(now.mono, key_for_dedup, &out[..outcome.reply_len]);
        Handled {
            user_name: None,
            reply_len: Some(outcome.reply_len),
            event: match outcome.result {
                Ok(()) => Event::Accepted {
                    method: outcome.method,
                    nas: speaks_for.ip,
                    captive: outcome.captive,
                },
                Err(reason) => Event::Rejected {
                    method: outcome.method,
                    reason,
                    nas: speaks_for.ip,
                },
            },
        }
    }

    fn should_log_unknown(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.unknown_nas_logged.first_in_window(ip, now)
    }

    /// How many unknown sources the shard remembers having logged: bounded
    /// by the table size however many addresses send.
    pub fn unknown_nas_remembered(&self) -> usize {
        self.unknown_nas_logged.len()
    }

    /// The event of the last `AccountingQueued`, for the writer.
    pub fn take_accounting(&mut self) -> Option<QueuedAccounting> {
        self.queued.take()
    }

    /// The writer queue refused `queued`: forget its cached reply, so the
    /// NAS's retransmission is evaluated afresh, and count the drop.
    pub fn accounting_refused(&mut self, key: &RequestKey) {
        self.dedup.remove(key);
        self.stats
            .incr(Counter::Dropped(DropReason::AccountingBackpressure));
    }
}

/// The unknown sources a shard logged within the last minute, in a fixed
/// direct-mapped table: a flood of spoofed sources costs one hash and one
/// slot per packet and never more memory. A collision evicts the older
/// address, which may then be reported again within its minute; the shell
/// bounds the log lines process-wide.
struct RecentlyLogged {
    slots: Box<[Option<(IpAddr, Instant)>]>,
}

impl RecentlyLogged {
    fn new(size: usize) -> Self {
        RecentlyLogged {
            slots: vec![None; size.next_power_of_two()].into_boxed_slice(),
        }
    }

    /// True for the first packet from `ip` in its window: log it.
    fn first_in_window(&mut self, ip: IpAddr, now: Instant) -> bool {
        let mask = self.slots.len() - 1;
        let slot = &mut self.slots[(ip_hash(ip) >> 32) as usize & mask];
        if let Some((seen, at)) = slot {
            if *seen == ip && now.duration_since(*at) < UNKNOWN_NAS_LOG_EVERY {
                return false;
            }
        }
        *slot = Some((ip, now));
        true
    }

    fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

/// A cheap 64-bit hash of an address (Fibonacci hashing of its folded
/// bits): enough to spread addresses over table slots. Written by hand:
/// the std hasher is keyed per process and slower than this needs.
pub fn ip_hash(ip: IpAddr) -> u64 {
    let bits = match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let b = u128::from(v6);
            (b as u64) ^ ((b >> 64) as u64).rotate_left(17)
        }
    };
    bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (bits >> 29)
}

fn dropped(reason: DropReason) -> Handled {
    Handled {
        user_name: None,
        reply_len: None,
        event: Event::Dropped { reason, log: false },
    }
}
