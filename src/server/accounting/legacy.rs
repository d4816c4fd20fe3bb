//! Sessions open across the upgrade to FreeRADIUS's `acctuniqueid`.
//!
//! Up to schema version 8 shardius keyed a session by its own MD5
//! ([`crate::accounting::event::legacy_unique_id`]); since then by
//! FreeRADIUS's ([`crate::accounting::event::freeradius_unique_id`]), so a
//! session has one row whichever of the two servers records it. A session
//! that was open when shardius was upgraded has its row under the old key:
//! its later Interims and Stop must land there, not on a second row.
//!
//! Every event carries both keys. Before a batch is written, the writer
//! asks the database which keys exist for the sessions it has not seen
//! since it started, and writes an event under the old key when only that
//! one names a row. The answer per session is remembered, so in steady
//! state no query is made: a session is looked up once per writer life,
//! with its first Interim or Stop (a Start begins a session, which then
//! has no old row). Old nodes of a cluster being upgraded one by one keep
//! writing old keys, and the new nodes keep finding them, as long as they
//! run: nothing here depends on when the schema changed.

use std::collections::{HashMap, HashSet};

use crate::accounting::{AcctEvent, AcctKind};
use crate::store::Result;

/// More sessions than this remembered: start again (each is looked up
/// once more, with its next event). 32 bytes per entry: 128 MiB at most.
const MAX_KNOWN: usize = 4 << 20;

/// Per session (its FreeRADIUS key): `None` when it is written under that
/// key, `Some(old key)` when under its schema-8 key.
#[derive(Default)]
pub struct LegacyKeys {
    known: HashMap<u128, Option<u128>>,
}

fn key(hex: &str) -> Option<u128> {
    (hex.len() == 32)
        .then(|| u128::from_str_radix(hex, 16).ok())
        .flatten()
}

impl LegacyKeys {
    /// Sets each row's `unique_id` to the key it is written under.
    /// `existing` answers which of the given keys name a radacct row.
    ///
    /// An event moves to its old key only when that key names a row and
    /// its own does not, at most one event of a batch per old key, and
    /// never onto a key another row of the batch is written under (an
    /// event spooled by the old version): the batch keeps one row per
    /// key, as the upsert needs.
    pub fn resolve(
        &mut self,
        rows: &mut [AcctEvent],
        existing: impl FnOnce(&[&str]) -> Result<HashSet<String>>,
    ) -> Result<()> {
        if self.known.len() > MAX_KNOWN {
            self.known.clear();
        }
        let mut ask: Vec<&str> = Vec::new();
        for e in rows.iter() {
            if let Some(old) = candidate(e) {
                if key(&e.unique_id).is_some_and(|k| !self.known.contains_key(&k)) {
                    ask.push(&e.unique_id);
                    ask.push(old);
                }
            }
        }
        let found = if ask.is_empty() {
            HashSet::new()
        } else {
            existing(&ask)?
        };
        // Each row's decision first; the set of keys the batch writes is
        // built only when some row moves (in steady state none does).
        let mut moves: Vec<(usize, String)> = Vec::new();
        for (i, e) in rows.iter().enumerate() {
            let Some(old) = candidate(e) else {
                if e.kind == AcctKind::Start {
                    if let Some(k) = key(&e.unique_id) {
                        self.known.insert(k, None);
                    }
                }
                continue;
            };
            let Some(new_key) = key(&e.unique_id) else {
                continue;
            };
            let decision = match self.known.get(&new_key) {
                Some(d) => *d,
                None => {
                    let d = (!found.contains(&e.unique_id) && found.contains(old))
                        .then(|| key(old))
                        .flatten();
                    self.known.insert(new_key, d);
                    d
                }
            };
            if decision.is_some() {
                moves.push((i, old.to_owned()));
            }
        }
        if moves.is_empty() {
            return Ok(());
        }
        let mut taken: HashSet<String> = rows.iter().map(|e| e.unique_id.clone()).collect();
        for (i, old) in moves {
            if taken.insert(old.clone()) {
                rows[i].unique_id = old;
            }
        }
        Ok(())
    }
}

/// The old key of an event that may belong to a session open across the
/// upgrade: not a Start or NAS reboot, carrying an old key it is not
/// already written under.
fn candidate(e: &AcctEvent) -> Option<&str> {
    match (e.kind, e.legacy_id.as_deref()) {
        (AcctKind::Start | AcctKind::NasReboot, _) | (_, None) => None,
        (_, Some(old)) if old == e.unique_id => None,
        (_, Some(old)) => Some(old),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::event::test_event;

    /// An event of the current version: FreeRADIUS key `new`, old key `old`.
    fn ev(kind: AcctKind, new: char, old: char) -> AcctEvent {
        let mut e = test_event(kind, "s", 60, 100);
        e.unique_id = new.to_string().repeat(32);
        e.legacy_id = Some(old.to_string().repeat(32));
        e
    }

    fn k(c: char) -> String {
        c.to_string().repeat(32)
    }

    #[test]
    fn a_session_with_only_an_old_row_continues_on_it_and_is_asked_for_once() {
        let mut keys = LegacyKeys::default();
        let db: HashSet<String> = [k('a')].into();
        let mut asked = 0;
        for _ in 0..3 {
            let mut rows = vec![ev(AcctKind::Interim, 'b', 'a')];
            keys.resolve(&mut rows, |ids| {
                asked += 1;
                assert_eq!(ids, [k('b'), k('a')]);
                Ok(db.clone())
            })
            .unwrap();
            assert_eq!(rows[0].unique_id, k('a'));
        }
        assert_eq!(asked, 1, "remembered after the first lookup");
        // Written under the old key once: as such never asked again.
        let mut again = vec![ev(AcctKind::Stop, 'b', 'a')];
        again[0].unique_id = k('a');
        keys.resolve(&mut again, |_| panic!("no lookup")).unwrap();
        assert_eq!(again[0].unique_id, k('a'));
    }

    #[test]
    fn new_sessions_and_sessions_on_their_freeradius_row_keep_their_key() {
        let mut keys = LegacyKeys::default();
        // A Start is never looked up, and its session is then known.
        let mut start = vec![ev(AcctKind::Start, 'c', 'd')];
        keys.resolve(&mut start, |_| panic!("no lookup for a Start"))
            .unwrap();
        assert_eq!(start[0].unique_id, k('c'));
        let mut interim = vec![ev(AcctKind::Interim, 'c', 'd')];
        keys.resolve(&mut interim, |_| panic!("known")).unwrap();
        assert_eq!(interim[0].unique_id, k('c'));
        // Both keys exist (FreeRADIUS wrote the new one): the new one.
        let mut both = vec![ev(AcctKind::Interim, 'e', 'f')];
        keys.resolve(&mut both, |_| Ok([k('e'), k('f')].into()))
            .unwrap();
        assert_eq!(both[0].unique_id, k('e'));
        // Neither: the new one (a session whose Start was lost).
        let mut none = vec![ev(AcctKind::Stop, '1', '2')];
        keys.resolve(&mut none, |_| Ok(HashSet::new())).unwrap();
        assert_eq!(none[0].unique_id, k('1'));
    }

    #[test]
    fn a_batch_never_gets_two_rows_under_one_key() {
        let mut keys = LegacyKeys::default();
        // An event spooled by the old version (keyed 'a', no legacy_id)
        // and two current events that both name old key 'a'.
        let mut spooled = test_event(AcctKind::Interim, "s", 30, 50);
        spooled.unique_id = k('a');
        let mut rows = vec![
            spooled,
            ev(AcctKind::Interim, 'b', 'a'),
            ev(AcctKind::Interim, 'c', 'a'),
        ];
        keys.resolve(&mut rows, |_| Ok([k('a')].into())).unwrap();
        let ids: HashSet<&str> = rows.iter().map(|e| e.unique_id.as_str()).collect();
        assert_eq!(ids.len(), 3, "{ids:?}");
        let mut two = vec![
            ev(AcctKind::Interim, '3', '5'),
            ev(AcctKind::Interim, '4', '5'),
        ];
        keys.resolve(&mut two, |_| Ok([k('5')].into())).unwrap();
        assert_eq!(
            (two[0].unique_id.as_str(), two[1].unique_id.as_str()),
            (k('5').as_str(), k('4').as_str())
        );
    }

    #[test]
    fn a_failed_lookup_changes_nothing_and_is_asked_again() {
        let mut keys = LegacyKeys::default();
        let mut rows = vec![ev(AcctKind::Interim, 'b', 'a')];
        let err = keys.resolve(&mut rows, |_| {
            Err(crate::store::StoreError::Unavailable("down".into()))
        });
        assert!(err.is_err());
        assert_eq!(rows[0].unique_id, k('b'));
        keys.resolve(&mut rows, |_| Ok([k('a')].into())).unwrap();
        assert_eq!(rows[0].unique_id, k('a'));
    }
}
