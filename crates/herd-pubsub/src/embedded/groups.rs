//! The embedded log's consumption state: per group, the next message to hand out and the
//! deliveries handed out and not yet acknowledged (attempts, when due again).
//!
//! It lives in the writer thread's memory: a claim or an ack changes a map, not a B-tree, and
//! costs no commit. Each group's state is written as one row of `groups` (its next sequence
//! number and its unacknowledged deliveries) into the next commit that writes anyway (a publish
//! batch, a sweep) and when the writer stops. Everything below `next` that is not listed was
//! acknowledged, so a crash, which loses what was not written yet, hands out again what was
//! acknowledged since: at-least-once.
//!
//! Files written before this layout kept the same state in two tables, `cursors` and a row per
//! delivery in `pending`; opening such a file moves them into `groups` ([`load`]).

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};

use super::commit::{Claimed, live_body};
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
        groups.write(txn)?;
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

/// What a claim reads: the topic's messages and its last sequence number.
pub(super) struct Source<'a, M> {
    pub(super) messages: &'a M,
    pub(super) head: u64,
}

impl Groups {
    fn insert(&mut self, topic: &str, group: &str, state: Group) {
        self.topics
            .entry(topic.to_string())
            .or_default()
            .insert(group.to_string(), state);
    }

    /// `group`'s state, created starting at `start` (marked dirty) if it has none.
    fn get_or(&mut self, topic: &str, group: &str, start: u64) -> &mut Group {
        if !self
            .topics
            .get(topic)
            .is_some_and(|g| g.contains_key(group))
        {
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

    /// Hands out up to `max` messages to `group`: deliveries due again first, then new
    /// messages from its next sequence number (a new group starts at the oldest message kept).
    pub(super) fn claim<M>(
        &mut self,
        source: Source<'_, M>,
        topic: &str,
        group: &str,
        max: usize,
        now: u64,
        ack_timeout: u64,
    ) -> Result<Vec<Claimed>, PubSubError>
    where
        M: ReadableTable<(&'static str, u64), &'static [u8]>,
    {
        let messages = source.messages;
        let start = match self.topics.get(topic).and_then(|g| g.get(group)) {
            Some(_) => 0,
            None => oldest(messages, topic, source.head)?,
        };
        let state = self.get_or(topic, group, start);
        let mut out = Vec::new();
        let mut changed = false;
        // Redeliveries first: deliveries whose ack timeout or retry delay has passed.
        let due: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .take(max)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in due {
            changed = true;
            let body = match messages.get((topic, seq)).map_err(internal)? {
                Some(record) => live_body(record.value(), now)?,
                None => None,
            };
            match body {
                Some(data) => {
                    let p = state.pending.get_mut(&seq).expect("listed above");
                    p.attempts += 1;
                    p.due = now + ack_timeout;
                    out.push((seq, p.attempts, data));
                }
                // Removed by retention or expired by its TTL: nothing to redeliver.
                None => {
                    state.pending.remove(&seq);
                }
            }
        }
        // Then new messages.
        if out.len() < max && state.next <= source.head {
            changed = true;
            let mut next = source.head + 1;
            for entry in messages
                .range((topic, state.next)..=(topic, source.head))
                .map_err(internal)?
            {
                let (k, v) = entry.map_err(internal)?;
                let seq = k.value().1;
                if out.len() == max {
                    next = seq;
                    break;
                }
                if let Some(data) = live_body(v.value(), now)? {
                    let p = Pending {
                        attempts: 1,
                        due: now + ack_timeout,
                    };
                    state.pending.insert(seq, p);
                    out.push((seq, 1, data));
                }
            }
            state.next = next;
        }
        if changed {
            state.dirty = true;
            self.dirty = true;
        }
        Ok(out)
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

    /// Per topic, the lowest sequence number some group still needs.
    pub(super) fn floors(&self) -> HashMap<&str, u64> {
        self.topics
            .iter()
            .filter_map(|(topic, groups)| {
                let low = groups.values().map(Group::floor).min()?;
                Some((topic.as_str(), low))
            })
            .collect()
    }

    /// Whether some group changed since it was last written.
    pub(super) fn dirty(&self) -> bool {
        self.dirty
    }

    /// Writes every changed group into `txn`. They count as written only once `txn` commits:
    /// call [`Groups::written`] then.
    pub(super) fn write(&self, txn: &WriteTransaction) -> Result<(), PubSubError> {
        if !self.dirty {
            return Ok(());
        }
        let mut table: Table<(&str, &str), &[u8]> = txn.open_table(GROUPS).map_err(internal)?;
        let mut row = Vec::new();
        for (topic, groups) in &self.topics {
            for (group, state) in groups.iter().filter(|(_, s)| s.dirty) {
                state.encode(&mut row);
                table
                    .insert((topic.as_str(), group.as_str()), row.as_slice())
                    .map_err(internal)?;
            }
        }
        Ok(())
    }

    /// The transaction [`Groups::write`] wrote into committed.
    pub(super) fn written(&mut self) {
        if !self.dirty {
            return;
        }
        for state in self.topics.values_mut().flat_map(|g| g.values_mut()) {
            state.dirty = false;
        }
        self.dirty = false;
    }
}

/// The oldest sequence number still stored for `topic`, or the next one to be used.
fn oldest<M>(messages: &M, topic: &str, head: u64) -> Result<u64, PubSubError>
where
    M: ReadableTable<(&'static str, u64), &'static [u8]>,
{
    let first = messages
        .range((topic, 0)..=(topic, u64::MAX))
        .map_err(internal)?
        .next()
        .transpose()
        .map_err(internal)?;
    Ok(first.map_or(head + 1, |(k, _)| k.value().1))
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
}
