//! How the embedded log stores messages: one row per topic per commit (a batch), not one per
//! message. A busy log commits tens of publishes at once; as one row they cost one B-tree insert
//! when written and one remove when every group is past them, where a row per message cost one of
//! each per message (most of the writer's work).
//!
//! `batches`: `(topic, first sequence number)` → `[published at ms: u64][count: u32]`, then per
//! message `[expires at ms, 0 = never: u64][length: u32][data]` (all little-endian). The
//! messages of a row are numbered from its key on, with no gaps; rows of a topic never overlap.
//! Every message of a row was published in the same commit, so the row has one publish time.
//!
//! Files written before this layout kept a row per message in `messages`; opening one moves
//! them into `batches` ([`migrate`]).

use std::ops::Range;

use bytes::Bytes;
use redb::{ReadableTable, Table, TableDefinition, TableHandle, WriteTransaction};

use super::internal;
use crate::error::PubSubError;

/// `(topic, first seq)` → a batch of messages (see the module documentation).
pub(super) const BATCHES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("batches");
/// Before `batches`: `(topic, seq)` → `[published at ms][expires at ms, 0 = never][data]`.
const OLD_MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");

const HEADER: usize = 12;

/// A batch being encoded for one topic.
pub(super) struct Batch {
    row: Vec<u8>,
    count: u32,
}

impl Batch {
    /// An empty batch of messages published at `published` (ms since the epoch).
    pub(super) fn new(published: u64) -> Self {
        let mut row = Vec::with_capacity(4096);
        row.extend_from_slice(&published.to_le_bytes());
        row.extend_from_slice(&0u32.to_le_bytes());
        Self { row, count: 0 }
    }

    /// Appends a message that expires at `expires` (ms since the epoch; 0 = never).
    pub(super) fn push(&mut self, expires: u64, data: &[u8]) {
        self.row.extend_from_slice(&expires.to_le_bytes());
        self.row
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.row.extend_from_slice(data);
        self.count += 1;
        self.row[8..HEADER].copy_from_slice(&self.count.to_le_bytes());
    }

    /// Messages in the batch.
    pub(super) fn len(&self) -> u64 {
        u64::from(self.count)
    }

    /// The encoded row.
    pub(super) fn row(&self) -> &[u8] {
        &self.row
    }
}

/// A stored row, checked: its header and every entry are complete and nothing follows them.
struct Stored<'a> {
    published: u64,
    count: u32,
    entries: &'a [u8],
}

impl<'a> Stored<'a> {
    fn parse(row: &'a [u8]) -> Option<Self> {
        let (published, rest) = row.split_first_chunk::<8>()?;
        let (count, entries) = rest.split_first_chunk::<4>()?;
        let stored = Self {
            published: u64::from_le_bytes(*published),
            count: u32::from_le_bytes(*count),
            entries,
        };
        let mut seen = 0u32;
        let mut rest = entries;
        while !rest.is_empty() {
            let (_, _, after) = entry(rest)?;
            rest = after;
            seen = seen.checked_add(1)?;
        }
        (seen == stored.count).then_some(stored)
    }

    /// `(expires, data)` of each message, in order.
    fn messages(&self) -> impl Iterator<Item = (u64, &'a [u8])> + use<'a> {
        let mut rest = self.entries;
        std::iter::from_fn(move || {
            let (expires, data, after) = entry(rest)?;
            rest = after;
            Some((expires, data))
        })
    }
}

/// The first entry of `bytes`: expires, data, and what follows.
fn entry(bytes: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let (expires, rest) = bytes.split_first_chunk::<8>()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    (rest.len() >= len).then(|| {
        let (data, after) = rest.split_at(len);
        (u64::from_le_bytes(*expires), data, after)
    })
}

fn corrupt(topic: &str, first: u64) -> PubSubError {
    internal(format!(
        "unreadable message batch {first} of topic {topic:?}"
    ))
}

/// Calls `each` for every sequence number of `want`, in order, with the message's body, or
/// `None` when there is none to deliver (removed, or expired by `now`).
pub(super) fn read<T>(
    table: &T,
    topic: &str,
    want: Range<u64>,
    now: u64,
    mut each: impl FnMut(u64, Option<Bytes>),
) -> Result<(), PubSubError>
where
    T: ReadableTable<(&'static str, u64), &'static [u8]>,
{
    if want.is_empty() {
        return Ok(());
    }
    // The row holding `want.start`, if any, is the last one starting at or before it.
    let before = table
        .range((topic, 0)..=(topic, want.start))
        .map_err(internal)?
        .next_back();
    let after = table
        .range((topic, want.start.saturating_add(1))..(topic, want.end))
        .map_err(internal)?;
    let mut next = want.start;
    'rows: for entry in before.into_iter().chain(after) {
        let (k, v) = entry.map_err(internal)?;
        let first = k.value().1;
        let row = Stored::parse(v.value()).ok_or_else(|| corrupt(topic, first))?;
        for (seq, (expires, data)) in (first..).zip(row.messages()) {
            if seq < next {
                continue;
            }
            if seq >= want.end {
                break 'rows;
            }
            for gap in next..seq {
                each(gap, None);
            }
            let live = expires == 0 || expires > now;
            each(seq, live.then(|| Bytes::copy_from_slice(data)));
            next = seq + 1;
        }
    }
    for gap in next..want.end {
        each(gap, None);
    }
    Ok(())
}

/// The oldest sequence number still stored for `topic`, or `head + 1` when none is.
pub(super) fn oldest<T>(table: &T, topic: &str, head: u64) -> Result<u64, PubSubError>
where
    T: ReadableTable<(&'static str, u64), &'static [u8]>,
{
    let first = table
        .range((topic, 0)..=(topic, u64::MAX))
        .map_err(internal)?
        .next()
        .transpose()
        .map_err(internal)?;
    Ok(first.map_or(head + 1, |(k, _)| k.value().1))
}

/// Removes `topic`'s oldest batches (up to `limit`) whose every message is below `below` or
/// which were published before `cutoff`. A row herd cannot read is removed once the row after it
/// could go: nothing of it can be delivered anyway.
pub(super) fn sweep(
    table: &mut Table<'_, (&'static str, u64), &'static [u8]>,
    topic: &str,
    below: u64,
    cutoff: u64,
    limit: usize,
) -> Result<(), PubSubError> {
    // (first, readable) of each row to remove.
    let mut doomed: Vec<(u64, bool)> = Vec::new();
    for entry in table
        .range((topic, 0)..=(topic, u64::MAX))
        .map_err(internal)?
        .take(limit)
    {
        let (k, v) = entry.map_err(internal)?;
        let first = k.value().1;
        let Some(row) = Stored::parse(v.value()) else {
            doomed.push((first, false));
            continue;
        };
        let end = first.saturating_add(u64::from(row.count));
        if end <= below || row.published < cutoff {
            doomed.push((first, true));
        } else {
            break;
        }
    }
    // Unreadable rows right before one that stays, stay: a group may need what they stood for,
    // for all herd can tell.
    while doomed.last().is_some_and(|(_, readable)| !readable) {
        doomed.pop();
    }
    for (first, _) in doomed {
        table.remove((topic, first)).map_err(internal)?;
    }
    Ok(())
}

/// Creates `batches` in a new file, and moves an older file's `messages` into it (a batch of one
/// per message; records too short to hold their header are dropped with a warning).
pub(super) fn migrate(txn: &WriteTransaction) -> Result<(), PubSubError> {
    let mut batches = txn.open_table(BATCHES).map_err(internal)?;
    let has_old = txn
        .list_tables()
        .map_err(internal)?
        .any(|t| t.name() == OLD_MESSAGES.name());
    if !has_old {
        return Ok(());
    }
    {
        let old = txn.open_table(OLD_MESSAGES).map_err(internal)?;
        let mut dropped = 0u64;
        for entry in old.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let (topic, seq) = k.value();
            let record = v.value();
            let (Some(published), Some(expires)) = (record.get(..8), record.get(8..16)) else {
                dropped += 1;
                continue;
            };
            let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
            let mut batch = Batch::new(word(published));
            batch.push(word(expires), &record[16..]);
            batches
                .insert((topic, seq), batch.row())
                .map_err(internal)?;
        }
        if dropped > 0 {
            tracing::warn!("pub/sub log: {dropped} unreadable message records dropped");
        }
    }
    drop(batches);
    txn.delete_table(OLD_MESSAGES).map_err(internal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase};

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("b.redb")).unwrap();
        (dir, db)
    }

    fn put(db: &Database, topic: &str, first: u64, published: u64, bodies: &[(u64, &str)]) {
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(BATCHES).unwrap();
            let mut b = Batch::new(published);
            for (expires, body) in bodies {
                b.push(*expires, body.as_bytes());
            }
            assert_eq!(b.len(), bodies.len() as u64);
            t.insert((topic, first), b.row()).unwrap();
        }
        txn.commit().unwrap();
    }

    fn got(db: &Database, topic: &str, want: Range<u64>, now: u64) -> Vec<(u64, Option<String>)> {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(BATCHES).unwrap();
        let mut out = Vec::new();
        read(&t, topic, want, now, |seq, body| {
            out.push((seq, body.map(|b| String::from_utf8(b.to_vec()).unwrap())));
        })
        .unwrap();
        out
    }

    #[test]
    fn a_range_reads_across_batches_and_reports_gaps_and_expired_messages() {
        let (_dir, db) = db();
        put(&db, "t", 3, 10, &[(0, "a"), (50, "b"), (0, "c")]);
        put(&db, "t", 6, 10, &[(0, "d")]);
        // 7 and 8 are gone (removed); 9 is stored.
        put(&db, "t", 9, 10, &[(0, "e")]);
        put(&db, "u", 1, 10, &[(0, "other")]);
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            got(&db, "t", 2..11, 100),
            vec![
                (2, None),
                (3, s("a")),
                (4, None),
                (5, s("c")),
                (6, s("d")),
                (7, None),
                (8, None),
                (9, s("e")),
                (10, None)
            ]
        );
        // Starting inside a batch, and one message of it.
        assert_eq!(got(&db, "t", 4..6, 20), vec![(4, s("b")), (5, s("c"))]);
        assert_eq!(got(&db, "t", 5..6, 20), vec![(5, s("c"))]);
        assert_eq!(got(&db, "t", 5..5, 20), vec![]);
    }

    #[test]
    fn a_sweep_removes_whole_batches_below_the_floor_or_past_retention() {
        let (_dir, db) = db();
        put(&db, "t", 1, 10, &[(0, "a"), (0, "b")]);
        put(&db, "t", 3, 20, &[(0, "c"), (0, "d")]);
        put(&db, "t", 5, 30, &[(0, "e")]);
        let sweep_at = |below, cutoff| {
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(BATCHES).unwrap();
                sweep(&mut t, "t", below, cutoff, 100).unwrap();
            }
            txn.commit().unwrap();
            let txn = db.begin_read().unwrap();
            let t = txn.open_table(BATCHES).unwrap();
            oldest(&t, "t", 5).unwrap()
        };
        // 4 is still needed: the batch 3–4 stays, so does everything after it.
        assert_eq!(sweep_at(4, 0), 3);
        // Past retention, whatever a group needs.
        assert_eq!(sweep_at(0, 25), 5);
        assert_eq!(sweep_at(6, 0), 6);
    }

    #[test]
    fn rows_herd_did_not_write_are_refused() {
        assert!(Stored::parse(&[0; 11]).is_none());
        let mut b = Batch::new(1);
        b.push(0, b"xyz");
        assert!(Stored::parse(b.row()).is_some());
        let mut longer = b.row().to_vec();
        longer.push(0);
        assert!(Stored::parse(&longer).is_none(), "trailing bytes");
        assert!(
            Stored::parse(&b.row()[..b.row().len() - 1]).is_none(),
            "cut"
        );
        let mut miscounted = b.row().to_vec();
        miscounted[8] = 2;
        assert!(Stored::parse(&miscounted).is_none());
    }
}
