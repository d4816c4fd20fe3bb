//! Policy, without IO: the snapshot the shards answer from, and the
//! Access-Request decision and reply (README "What a login gets").

mod authorize;
pub mod fup;
pub mod mac;
pub mod portal;
pub mod rules;
pub mod sessions;
mod snapshot;
pub mod speed;
pub mod vendor_speed;

pub use authorize::{answer_access_request, AuthContext, AuthOutcome, RejectReason};
pub use snapshot::{rate_limit, Nas, Preferences, ReplyAttr, Service, Snapshot, Subscriber};
