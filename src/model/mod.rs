//! The data the store hands over and the policy decides about: one type
//! per table row, and the data of quota and fair usage. A leaf: it imports
//! nothing of the crate, so the store depends on it and the policy depends
//! on it, never on each other.

mod cluster;
mod fup;
mod records;

pub use cluster::{
    ClusterView, Fence, LeaseRow, NodeInfo, NodeRow, EXPIRY_JOB, JOBS, QUOTA_JOB,
    STALE_SESSIONS_JOB,
};

pub use fup::{FreeHours, Levels, MonthlyResetCandidate, Period, TierRecord};
pub use records::{
    format_nas_ip_addresses, parse_nas_ip_addresses, Burst, ChangeVersions, ImportBatch,
    LapseAction, LogEntry, LogRow, MaPolicy, NasRecord, NasType, OverLimit, PasswordKind,
    QuotaAction, QuotaSettings, RadreplyRecord, RuleRecord, ServiceRecord, SessionRow, Standing,
    SubscriberRecord, SweepRow, UsageRow, CAPTIVE_CLASS_PREFIX,
};
