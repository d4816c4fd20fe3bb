//! Accounting (SPEC §4), split like the rest: [`event`] turns packets into
//! events without IO; the writer thread in `server::writer` batches them
//! into `radacct` through the store and acknowledges only what is durable.

pub mod event;
pub mod spool;

pub use event::{unique_id, AcctEvent, AcctKind, AcctParseError};
