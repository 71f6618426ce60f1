//! The embedded log's consumption state: per group, the next message to hand out and the
//! deliveries handed out and not yet acknowledged (attempts, when due again).
//!
//! It lives in memory behind one lock that the consumers and the writer thread share: a claim
//! or an ack changes a map, not a B-tree, costs no commit and never waits for one. A claim
//! ([`claim`]) reads a snapshot (a read transaction) first, reserves under the lock only what
//! that snapshot holds, and reads the bodies after releasing it; a settle is one change under
//! the lock. The writer takes the lock only to encode the groups changed since its last commit
//! ([`Groups::take_changed`], which counts them as written: a change after it marks the group
//! dirty again) into the commit it is making anyway (a publish batch, a sweep, its last one
//! when it stops); a commit that fails marks them dirty again ([`Groups::unwritten`]). Each
//! group's state is one row of `groups` (its next sequence number and its unacknowledged
//! deliveries). Everything below `next` that is not listed was acknowledged, so a crash, which
//! loses what was not written yet, hands out again what was acknowledged since: at-least-once.
//!
//! A group's floor (the lowest message it still needs) only rises: a claim adds deliveries at
//! or above `next` and settles remove them. The sweep takes the floors and the changed rows
//! under one lock and removes messages below the floors in the commit that carries those rows,
//! so no group, on disk or in memory, needs a message that commit removes, and a claim that
//! reads an older snapshot reserves nothing it removes. A new group starts at the oldest
//! message of its claim's snapshot, which a concurrent sweep may be removing: that group is
//! handed those messages once, as if it had claimed before the sweep.
//!
//! Files written before this layout kept the same state in two tables, `cursors` and a row per
//! delivery in `pending`; opening such a file moves them into `groups` ([`load`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use redb::{
    Database, ReadableDatabase, ReadableTable, Table, TableDefinition, TableHandle,
    WriteTransaction,
};

use super::batches::{self, BATCHES};
use super::commit::{Claimed, HEADS, now_ms};
use super::internal;
use crate::error::PubSubError;

/// `(topic, group)` → `[next: u64]` then, per delivery not yet acknowledged, `[seq: u64]
/// [attempts: u32]` (all little-endian).
const GROUPS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("groups");
/// Before `groups`: `(topic, group)` → the next sequence number to hand out.
const OLD_CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cursors");
/// Before `groups`: `(topic, group, seq)` → `(deliveries so far, visible again at ms)`.
const OLD_PENDING: TableDefinition<(&str, &str, u64), (u32, u64)> = TableDefinition::new("pending");

/// A delivery handed out and not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    /// Deliveries so far.
    attempts: u32,
    /// Handed out again from this time (ms since the epoch) on.
    due: u64,
}

/// One group's state.
#[derive(Debug, Default, PartialEq, Eq)]
struct Group {
    /// The next sequence number to hand out for the first time.
    next: u64,
    pending: BTreeMap<u64, Pending>,
    /// Changed since it was last written.
    dirty: bool,
}

impl Group {
    /// The lowest sequence number this group still needs.
    fn floor(&self) -> u64 {
        self.pending
            .keys()
            .next()
            .map_or(self.next, |&s| s.min(self.next))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(8 + 12 * self.pending.len());
        out.extend_from_slice(&self.next.to_le_bytes());
        for (seq, p) in &self.pending {
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&p.attempts.to_le_bytes());
        }
    }

    /// A row as written by [`Group::encode`], its deliveries due at once (they were handed to
    /// consumers of an earlier run); `None` when it is not one.
    fn decode(bytes: &[u8]) -> Option<Group> {
        let (next, rest) = bytes.split_first_chunk::<8>()?;
        if rest.len() % 12 != 0 {
            return None;
        }
        let pending = rest
            .chunks_exact(12)
            .map(|c| {
                let (seq, attempts) = c.split_at(8);
                let seq = u64::from_le_bytes(seq.try_into().expect("8 bytes"));
                let attempts = u32::from_le_bytes(attempts.try_into().expect("4 bytes"));
                (seq, Pending { attempts, due: 0 })
            })
            .collect();
        Some(Group {
            next: u64::from_le_bytes(*next),
            pending,
            dirty: false,
        })
    }
}

/// Every group's state, by topic then group.
#[derive(Default)]
pub(super) struct Groups {
    topics: HashMap<String, HashMap<String, Group>>,
    /// Some group is dirty.
    dirty: bool,
}

/// Reads every group's state, moving a file's older layout (`cursors`, `pending`) into
/// `groups` on the way. Run once, at open, in the transaction that readies the file.
pub(super) fn load(txn: &WriteTransaction) -> Result<Groups, PubSubError> {
    let mut groups = Groups::default();
    {
        let table = txn.open_table(GROUPS).map_err(internal)?;
        for entry in table.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let (topic, group) = k.value();
            match Group::decode(v.value()) {
                Some(state) => groups.insert(topic, group, state),
                // Not a row herd wrote: the group starts again at the oldest message kept.
                None => tracing::warn!(
                    "pub/sub log: unreadable state of group {group:?} on topic {topic:?}; it \
                     starts again at the oldest message kept"
                ),
            }
        }
    }
    let names: Vec<String> = txn
        .list_tables()
        .map_err(internal)?
        .map(|t| t.name().to_string())
        .collect();
    let has = |t: &str| names.iter().any(|n| n == t);
    if has(OLD_CURSORS.name()) || has(OLD_PENDING.name()) {
        migrate(txn, &mut groups)?;
        write(txn, &groups.take_changed())?;
    }
    Ok(groups)
}

/// Moves the older layout's cursors and pending rows into `groups`, then drops its tables.
fn migrate(txn: &WriteTransaction, groups: &mut Groups) -> Result<(), PubSubError> {
    {
        let cursors = txn.open_table(OLD_CURSORS).map_err(internal)?;
        for entry in cursors.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let (topic, group) = k.value();
            groups.get_or(topic, group, v.value()).next = v.value();
        }
        let pending = txn.open_table(OLD_PENDING).map_err(internal)?;
        for entry in pending.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let (topic, group, seq) = k.value();
            let state = groups.get_or(topic, group, seq + 1);
            state.next = state.next.max(seq + 1);
            let attempts = v.value().0;
            state.pending.insert(seq, Pending { attempts, due: 0 });
        }
    }
    txn.delete_table(OLD_CURSORS).map_err(internal)?;
    txn.delete_table(OLD_PENDING).map_err(internal)?;
    for group in groups.topics.values_mut().flat_map(|g| g.values_mut()) {
        group.dirty = true;
    }
    groups.dirty = true;
    Ok(())
}

/// What a claim hands out, decided under the lock ([`Groups::reserve`]) and read after it: the
/// deliveries due again (sequence number, attempt) and the new messages' sequence numbers.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Reserved {
    pub(super) due: Vec<(u64, u32)>,
    pub(super) new: std::ops::Range<u64>,
}

/// A changed group's row, encoded by [`Groups::take_changed`] for the commit the writer is
/// making: topic, group, row.
pub(super) type Row = (String, String, Vec<u8>);

impl Groups {
    fn insert(&mut self, topic: &str, group: &str, state: Group) {
        self.topics
            .entry(topic.to_string())
            .or_default()
            .insert(group.to_string(), state);
    }

    /// Whether `group` has state (groups are never removed).
    pub(super) fn has(&self, topic: &str, group: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|g| g.contains_key(group))
    }

    /// `group`'s state, created starting at `start` (marked dirty) if it has none.
    fn get_or(&mut self, topic: &str, group: &str, start: u64) -> &mut Group {
        if !self.has(topic, group) {
            let state = Group {
                next: start,
                pending: BTreeMap::new(),
                dirty: true,
            };
            self.insert(topic, group, state);
            self.dirty = true;
        }
        self.topics
            .get_mut(topic)
            .and_then(|g| g.get_mut(group))
            .expect("just inserted")
    }

    /// Reserves up to `max` deliveries for `group` in a snapshot that holds `topic`'s messages
    /// `snapshot.0..=snapshot.1` (oldest kept, last published): deliveries due again first
    /// (attempt counted, due again after `ack_timeout`), then new messages from the group's next
    /// sequence number on (pending from now on). A group without state starts at the oldest
    /// message kept; one whose next message was removed (retention) skips to it.
    ///
    /// Only what the snapshot holds is reserved: a delivery above its head was handed out from
    /// a newer snapshot and is left for a claim that can read it. The caller reads the messages
    /// after the lock is released and hands what it finds no more (removed, expired) to
    /// [`Groups::forget`].
    pub(super) fn reserve(
        &mut self,
        topic: &str,
        group: &str,
        (oldest, head): (u64, u64),
        max: usize,
        now: u64,
        ack_timeout: u64,
    ) -> Reserved {
        let state = self.get_or(topic, group, oldest);
        let mut changed = false;
        if state.next < oldest {
            // Everything below the oldest message kept is gone for good (sweeps remove a
            // prefix), in this snapshot and every later one.
            state.next = oldest;
            changed = true;
        }
        let mut due = Vec::new();
        for (&seq, p) in state.pending.range_mut(..=head) {
            if due.len() == max {
                break;
            }
            if p.due <= now {
                p.attempts += 1;
                p.due = now + ack_timeout;
                due.push((seq, p.attempts));
            }
        }
        let room = (max - due.len()) as u64;
        let first = state.next;
        let end = head.saturating_add(1).min(first.saturating_add(room));
        let new = first..end.max(first);
        for seq in new.clone() {
            let p = Pending {
                attempts: 1,
                due: now + ack_timeout,
            };
            state.pending.insert(seq, p);
        }
        state.next = new.end;
        if changed || !due.is_empty() || !new.is_empty() {
            state.dirty = true;
            self.dirty = true;
        }
        Reserved { due, new }
    }

    /// Drops `seqs` from `group`'s deliveries: reserved, then found removed (by retention) or
    /// expired (by its TTL), so there is nothing to deliver. Both are final, so this holds
    /// whatever changed since the reservation.
    pub(super) fn forget(&mut self, topic: &str, group: &str, seqs: &[u64]) {
        let Some(state) = self.topics.get_mut(topic).and_then(|g| g.get_mut(group)) else {
            return;
        };
        for seq in seqs {
            if state.pending.remove(seq).is_some() {
                state.dirty = true;
                self.dirty = true;
            }
        }
    }

    /// Settles `seq` for `group`: `None` acknowledges it, `Some(at)` makes it due again at `at`.
    /// A delivery not pending (settled already) is left alone.
    pub(super) fn settle(&mut self, topic: &str, group: &str, seq: u64, retry_at: Option<u64>) {
        let Some(state) = self.topics.get_mut(topic).and_then(|g| g.get_mut(group)) else {
            return;
        };
        match retry_at {
            None => {
                if state.pending.remove(&seq).is_some() {
                    state.dirty = true;
                    self.dirty = true;
                }
            }
            // When it is due is not written: after a restart every delivery is due at once.
            Some(at) => {
                if let Some(p) = state.pending.get_mut(&seq) {
                    p.due = at;
                }
            }
        }
    }

    /// Per topic, the lowest sequence number some group still needs. A group's floor only
    /// rises (claims add deliveries at or above `next`; settles remove them), so messages below
    /// it are never needed by that group again.
    pub(super) fn floors(&self) -> HashMap<String, u64> {
        self.topics
            .iter()
            .filter_map(|(topic, groups)| {
                let low = groups.values().map(Group::floor).min()?;
                Some((topic.clone(), low))
            })
            .collect()
    }

    /// Encodes every group changed since it was last taken and counts it as written: a change
    /// after this marks the group dirty again, for the next commit. When the commit the rows go
    /// into fails, hand them to [`Groups::unwritten`].
    pub(super) fn take_changed(&mut self) -> Vec<Row> {
        if !self.dirty {
            return Vec::new();
        }
        let mut rows = Vec::new();
        for (topic, groups) in &mut self.topics {
            for (group, state) in groups.iter_mut().filter(|(_, s)| s.dirty) {
                let mut row = Vec::new();
                state.encode(&mut row);
                state.dirty = false;
                rows.push((topic.clone(), group.clone(), row));
            }
        }
        self.dirty = false;
        rows
    }

    /// The commit `rows` ([`Groups::take_changed`]) went into failed: their groups are dirty
    /// again, so the next commit writes their state as it is then.
    pub(super) fn unwritten(&mut self, rows: &[Row]) {
        for (topic, group, _) in rows {
            if let Some(state) = self.topics.get_mut(topic).and_then(|g| g.get_mut(group)) {
                state.dirty = true;
                self.dirty = true;
            }
        }
    }
}

/// Writes `rows` ([`Groups::take_changed`]) into `txn`.
pub(super) fn write(txn: &WriteTransaction, rows: &[Row]) -> Result<(), PubSubError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut table: Table<(&str, &str), &[u8]> = txn.open_table(GROUPS).map_err(internal)?;
    for (topic, group, row) in rows {
        table
            .insert((topic.as_str(), group.as_str()), row.as_slice())
            .map_err(internal)?;
    }
    Ok(())
}

/// Hands out up to `max` messages of `topic` to `group`: deliveries due again first, then new
/// messages from its next sequence number (a new group starts at the oldest message kept).
///
/// Runs on the caller's side, never on the writer thread: the messages come from a read
/// transaction, which sees the last commit and does not wait for one in progress, so only
/// committed messages are handed out. `groups` is locked only to reserve (and, for messages
/// found expired, to drop them), never while reading.
pub(super) fn claim(
    db: &Database,
    groups: &Mutex<Groups>,
    topic: &str,
    group: &str,
    max: usize,
    ack_timeout: u64,
) -> Result<Vec<Claimed>, PubSubError> {
    let now = now_ms();
    // The snapshot first: what is reserved below is what it holds.
    let txn = db.begin_read().map_err(internal)?;
    let messages = txn.open_table(BATCHES).map_err(internal)?;
    let head = txn
        .open_table(HEADS)
        .map_err(internal)?
        .get(topic)
        .map_err(internal)?
        .map_or(0, |v| v.value());
    let oldest = batches::oldest(&messages, topic, head)?;
    let mut out = Vec::new();
    while out.len() < max {
        let reserved = lock(groups).reserve(
            topic,
            group,
            (oldest, head),
            max - out.len(),
            now,
            ack_timeout,
        );
        if reserved.due.is_empty() && reserved.new.is_empty() {
            break;
        }
        // Reserved and not there to deliver: removed by retention, or expired.
        let mut gone = Vec::new();
        for (seq, attempt) in reserved.due {
            batches::read(
                &messages,
                topic,
                seq..seq + 1,
                now,
                |seq, body| match body {
                    Some(data) => out.push((seq, attempt, data)),
                    None => gone.push(seq),
                },
            )?;
        }
        batches::read(
            &messages,
            topic,
            reserved.new,
            now,
            |seq, body| match body {
                Some(data) => out.push((seq, 1, data)),
                None => gone.push(seq),
            },
        )?;
        if gone.is_empty() {
            break;
        }
        lock(groups).forget(topic, group, &gone);
    }
    Ok(out)
}

/// The groups' state, locked. Critical sections change maps and encode rows; nothing waits
/// for the disk under it.
pub(super) fn lock(groups: &Mutex<Groups>) -> MutexGuard<'_, Groups> {
    groups.lock().expect("poisoned")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reads_back_as_written_with_its_deliveries_due_at_once() {
        let mut group = Group {
            next: 42,
            ..Group::default()
        };
        group.pending.insert(
            7,
            Pending {
                attempts: 3,
                due: 99,
            },
        );
        group.pending.insert(
            40,
            Pending {
                attempts: 1,
                due: 5,
            },
        );
        let mut row = Vec::new();
        group.encode(&mut row);
        let back = Group::decode(&row).unwrap();
        assert_eq!(back.next, 42);
        assert_eq!(
            back.pending
                .iter()
                .map(|(s, p)| (*s, *p))
                .collect::<Vec<_>>(),
            vec![
                (
                    7,
                    Pending {
                        attempts: 3,
                        due: 0
                    }
                ),
                (
                    40,
                    Pending {
                        attempts: 1,
                        due: 0
                    }
                ),
            ]
        );
        assert_eq!(back.floor(), 7);
    }

    #[test]
    fn rows_herd_did_not_write_are_refused() {
        assert_eq!(Group::decode(&[1, 2, 3]), None);
        assert_eq!(Group::decode(&[0; 8 + 5]), None);
        assert!(Group::decode(&[0; 8]).is_some());
    }

    #[test]
    fn a_claim_reserves_only_what_its_snapshot_holds() {
        let mut groups = Groups::default();
        // Messages 3..=5 kept: a new group starts at 3.
        let r = groups.reserve("t", "g", (3, 5), 2, 1000, 50);
        assert_eq!((r.due, r.new), (vec![], 3..5));
        // Both due again: a snapshot with head 3 (older than the claim that handed out 4)
        // reserves 3 only, and nothing new.
        groups.settle("t", "g", 4, Some(0));
        groups.settle("t", "g", 3, Some(0));
        let r = groups.reserve("t", "g", (3, 3), 8, 1000, 50);
        assert_eq!((r.due, r.new), (vec![(3, 2)], 5..5));
        let r = groups.reserve("t", "g", (3, 5), 8, 1000, 50);
        assert_eq!((r.due, r.new), (vec![(4, 2)], 5..6));
        // Retention removed up to 9: the group skips to the oldest kept.
        let r = groups.reserve("t", "g", (10, 10), 8, 1000, 50);
        assert_eq!((r.due, r.new), (vec![], 10..11));
        // Found expired or removed: dropped, so the floor rises.
        groups.forget("t", "g", &[3, 4, 5]);
        assert_eq!(groups.floors()["t"], 10);
    }

    #[test]
    fn a_group_changed_after_its_row_was_taken_is_written_again() {
        let mut groups = Groups::default();
        groups.reserve("t", "g", (1, 3), 8, 1000, 50);
        let rows = groups.take_changed();
        assert_eq!(rows.len(), 1);
        assert!(groups.take_changed().is_empty(), "counted as written");
        // An ack after the rows were taken (the commit is under way): dirty again.
        groups.settle("t", "g", 2, None);
        let again = groups.take_changed();
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].2, rows[0].2);
        // A retry's due time is not written; it changes nothing on disk.
        groups.settle("t", "g", 1, Some(5));
        assert!(groups.take_changed().is_empty());
        // The commit of `again` failed: written by the next one.
        groups.unwritten(&again);
        assert_eq!(groups.take_changed(), again);
    }
}
