//! Accounting, split like the rest: [`event`] turns packets into events
//! without IO; the writer thread in `server::writer` batches them into
//! `radacct` through the store and acknowledges only what is durable: in
//! the database, in the [`spool`] while the database is away, or, for an
//! event the database refuses for its data, in the [`rejected`] file.

pub mod event;
pub mod rejected;
pub mod spool;

pub use event::{unique_id, AcctEvent, AcctKind, AcctParseError};
