//! Crash images of a file: what a store's file can look like after the process or the machine
//! died while one commit was being written.
//!
//! A test snapshots the file before and after the commit under test (`before`, `after`, both
//! taken while the store is open, as a crash would leave it) and opens each image. Three kinds:
//!
//! - **torn**: the commit's writes reached the disk in file order up to an offset and no
//!   further (`after` up to it, `before` from it on) — a crash during the commit's write-out;
//! - **truncated**: `after` cut at an offset inside the commit's region (a file system that lost
//!   the file's tail);
//! - **flipped**: `after` with one byte of the commit's region changed (bit rot, a torn sector);
//! - **ungrown**: when the commit grew the file, `after` cut back to `before`'s length (the crash
//!   came before the new length reached the disk).
//!
//! Torn and ungrown images are what a crash leaves; [`Damage::is_crash`] tells them apart.
//!
//! Offsets are every byte where `before` and `after` differ when there are at most `budget` of
//! them; otherwise the first and last byte of every changed run plus an even sample of the rest,
//! `budget` in all (images between two changed bytes are identical, so run edges matter most).

use std::sync::{Arc, Mutex, OnceLock};

/// How one image was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The commit written up to this offset.
    Torn(usize),
    /// The file cut at this offset.
    Truncated(usize),
    /// This byte xor-ed with the mask.
    Flipped(usize, u8),
    /// The file cut back to its length before the commit.
    Ungrown(usize),
}

impl Damage {
    /// A crash can leave this (torn or ungrown): a store must recover every earlier commit.
    pub fn is_crash(&self) -> bool {
        matches!(self, Damage::Torn(_) | Damage::Ungrown(_))
    }
}

/// One damaged copy of the file.
#[derive(Debug, Clone)]
pub struct Image {
    /// What was done.
    pub damage: Damage,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

/// The offsets where `after` differs from `before` (bytes past `before`'s end count as changed).
pub fn changed(before: &[u8], after: &[u8]) -> Vec<usize> {
    (0..after.len())
        .filter(|&i| before.get(i) != Some(&after[i]))
        .collect()
}

/// At most `budget` of the changed offsets: every run's edges first, then an even sample.
pub fn sample(changed: &[usize], budget: usize) -> Vec<usize> {
    if changed.len() <= budget {
        return changed.to_vec();
    }
    let mut picked = Vec::new();
    for (i, &at) in changed.iter().enumerate() {
        let starts = i == 0 || changed[i - 1] + 1 != at;
        let ends = i + 1 == changed.len() || changed[i + 1] != at + 1;
        if starts || ends {
            picked.push(at);
        }
    }
    let rest = budget.saturating_sub(picked.len()).max(1);
    let step = changed.len().div_ceil(rest);
    picked.extend(changed.iter().step_by(step.max(1)));
    picked.sort_unstable();
    picked.dedup();
    picked.truncate(budget.max(1));
    picked
}

/// The torn, truncated and flipped images of the commit that turned `before` into `after`, at
/// `budget` offsets each.
pub fn images(before: &[u8], after: &[u8], budget: usize) -> Vec<Image> {
    let offsets = sample(&changed(before, after), budget);
    let mut out = Vec::with_capacity(offsets.len() * 3 + 1);
    if after.len() > before.len() {
        out.push(Image {
            damage: Damage::Ungrown(before.len()),
            bytes: after[..before.len()].to_vec(),
        });
    }
    for (n, &at) in offsets.iter().enumerate() {
        let mut torn = after[..at].to_vec();
        torn.extend((at..after.len()).map(|i| before.get(i).copied().unwrap_or(0)));
        out.push(Image {
            damage: Damage::Torn(at),
            bytes: torn,
        });
        out.push(Image {
            damage: Damage::Truncated(at),
            bytes: after[..at].to_vec(),
        });
        // Alternate a single-bit flip with a whole-byte one.
        let mask = if n % 2 == 0 { 0x01 } else { 0xff };
        let mut flipped = after.to_vec();
        flipped[at] ^= mask;
        out.push(Image {
            damage: Damage::Flipped(at, mask),
            bytes: flipped,
        });
    }
    out
}

/// The log lines written while it is alive, by a subscriber made with [`Log::subscriber`].
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    /// A subscriber writing every event at `WARN` and above into this log; use it with
    /// `tracing::subscriber::with_default` or `WithSubscriber::with_subscriber`.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let log = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || LogWriter(log.clone()))
            .finish()
    }

    /// The lines written so far that contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        let text = self.0.lock().expect("log poisoned");
        String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

struct LogWriter(Log);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .0
            .lock()
            .expect("log poisoned")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

/// Records every panic of the process, on any thread (a store's writer thread, tokio's blocking
/// pool, where a panic would otherwise surface only as an error), for [`take_panics`]. Installs
/// the hook once; the default hook still prints.
pub fn record_panics() {
    let panics = PANICS.get_or_init(|| Mutex::new(Vec::new()));
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            panics
                .lock()
                .expect("panics poisoned")
                .push(info.to_string());
            default(info);
        }));
    });
}

/// The panics recorded since the last call.
pub fn take_panics() -> Vec<String> {
    PANICS
        .get()
        .map(|p| std::mem::take(&mut *p.lock().expect("panics poisoned")))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_images_mix_the_two_files_at_the_offset() {
        let before = [0u8, 0, 0, 0, 0, 0];
        let after = [0u8, 1, 1, 0, 1, 0, 7];
        assert_eq!(changed(&before, &after), vec![1, 2, 4, 6]);
        let all = images(&before, &after, 10);
        assert_eq!(all.len(), 13);
        assert_eq!(all[0].damage, Damage::Ungrown(6));
        assert_eq!(all[0].bytes, after[..6]);
        let all = &all[1..];
        let torn = &all[3];
        assert_eq!(torn.damage, Damage::Torn(2));
        assert_eq!(torn.bytes, vec![0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(all[4].bytes, vec![0, 1]);
        assert_eq!(all[5].damage, Damage::Flipped(2, 0xff));
        assert_eq!(all[5].bytes[2], 0xfe);
    }

    #[test]
    fn samples_keep_run_edges_within_budget() {
        let changed: Vec<usize> = (0..1000).chain(5000..5100).collect();
        let picked = sample(&changed, 50);
        assert!(picked.len() <= 50);
        for edge in [0, 999, 5000, 5099] {
            assert!(picked.contains(&edge), "{edge} missing");
        }
    }
}
