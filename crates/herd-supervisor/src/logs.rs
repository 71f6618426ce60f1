//! Instance output: merged, prefixed, timestamped, kept in memory, followed, and written to
//! rotating files.
//!
//! Reader tasks turn each instance's stdout and stderr into [`LogLine`]s and send them on one
//! bounded channel. A dedicated writer thread drains it: file writes are blocking I/O and stay off
//! the async runtime. A full channel makes readers wait, which fills the instance's pipe and
//! slows its writes: back-pressure instead of unbounded memory. The writer keeps the last lines
//! in a ring for `herd logs`, and broadcasts each line for `herd logs -f`.
//!
//! Line format: `<RFC 3339 time> <service>:<instance> <mark> <text>` where the mark is `|` for
//! stdout, `!` for stderr and `*` for herd's own events about the instance.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use herd_config::LogSettings;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

/// Lines kept in memory for `herd logs` without `-f`.
const RING: usize = 2000;
/// Capacity of the channel from readers to the writer thread.
const CHANNEL: usize = 4096;
/// Longest line kept whole; longer output is split at this length.
pub const MAX_LINE: usize = 64 * 1024;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The instance's stdout.
    Out,
    /// The instance's stderr.
    Err,
    /// herd, about the instance (start, exit, restart).
    Herd,
}

/// One line of output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 timestamp with milliseconds, UTC.
    pub time: String,
    /// Service name.
    pub service: String,
    /// Slot of the instance, if the line belongs to one.
    pub instance: Option<usize>,
    /// Origin of the line.
    pub stream: Stream,
    /// The text, without the newline.
    pub text: String,
}

impl LogLine {
    /// A line stamped now.
    pub fn now(service: &str, instance: Option<usize>, stream: Stream, text: String) -> Self {
        Self {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            service: service.to_string(),
            instance,
            stream,
            text,
        }
    }

    /// The line as printed and written to files.
    pub fn render(&self) -> String {
        let mark = match self.stream {
            Stream::Out => '|',
            Stream::Err => '!',
            Stream::Herd => '*',
        };
        match self.instance {
            Some(i) => format!("{} {}:{} {mark} {}", self.time, self.service, i, self.text),
            None => format!("{} {} {mark} {}", self.time, self.service, self.text),
        }
    }
}

/// The sending side of the log pipeline, cheap to clone.
#[derive(Clone)]
pub struct LogHub {
    tx: mpsc::Sender<LogLine>,
    recent: Arc<Mutex<VecDeque<LogLine>>>,
    follow: broadcast::Sender<LogLine>,
    dir: PathBuf,
    /// Bumped by [`LogHub::flush`]: the writer reopens its files (and their sizes) when it
    /// changed.
    flushes: Arc<AtomicU64>,
}

impl LogHub {
    /// Starts the writer thread. Lines go to `<dir>/<service>.log` (rotated per `settings`) and,
    /// when `echo` is set, to herd's stdout. The thread ends when every hub clone is dropped.
    pub fn start(
        dir: PathBuf,
        settings: LogSettings,
        echo: bool,
    ) -> io::Result<(Self, std::thread::JoinHandle<()>)> {
        fs::create_dir_all(&dir)?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let recent = Arc::new(Mutex::new(VecDeque::with_capacity(RING)));
        let (follow, _) = broadcast::channel(1024);
        let flushes = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            dir: dir.clone(),
            flushes: flushes.clone(),
            seen_flushes: 0,
            settings,
            echo,
            files: HashMap::new(),
            recent: recent.clone(),
            follow: follow.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("herd-logs".into())
            .spawn(move || writer.run(rx))?;
        Ok((
            Self {
                tx,
                recent,
                follow,
                dir,
                flushes,
            },
            handle,
        ))
    }

    /// Queues a line, waiting while the writer is behind.
    pub async fn send(&self, line: LogLine) {
        let _ = self.tx.send(line).await;
    }

    /// Records one of herd's own events about an instance.
    pub async fn event(&self, service: &str, instance: Option<usize>, text: String) {
        self.send(LogLine::now(service, instance, Stream::Herd, text))
            .await;
    }

    /// The most recent `n` lines, optionally of one service only.
    pub fn recent(&self, service: Option<&str>, n: usize) -> Vec<LogLine> {
        let ring = self.recent.lock().expect("log ring poisoned");
        let mut lines: Vec<LogLine> = ring
            .iter()
            .rev()
            .filter(|l| service.is_none_or(|s| l.service == s))
            .take(n)
            .cloned()
            .collect();
        lines.reverse();
        lines
    }

    /// A receiver of every line written from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.follow.subscribe()
    }

    /// The live log file of `service`.
    pub fn file_of(&self, service: &str) -> PathBuf {
        self.dir.join(format!("{service}.log"))
    }

    /// Empties the logs of `service` (all services when `None`): the live file is truncated,
    /// rotated files are removed, and the lines kept for `herd logs` are dropped. Returns the
    /// files emptied or removed.
    pub fn flush(&self, service: Option<&str>) -> io::Result<Vec<PathBuf>> {
        self.recent
            .lock()
            .expect("log ring poisoned")
            .retain(|l| service.is_some_and(|s| l.service != s));
        let mut done = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let (stem, rotated) = match name.rsplit_once(".log") {
                Some((stem, "")) => (stem, false),
                Some((stem, n)) if n.starts_with('.') && n[1..].parse::<u32>().is_ok() => {
                    (stem, true)
                }
                _ => continue,
            };
            if service.is_some_and(|s| s != stem) {
                continue;
            }
            if rotated {
                fs::remove_file(&path)?;
            } else {
                OpenOptions::new().write(true).open(&path)?.set_len(0)?;
            }
            done.push(path);
        }
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(done)
    }
}

struct Writer {
    dir: PathBuf,
    flushes: Arc<AtomicU64>,
    seen_flushes: u64,
    settings: LogSettings,
    echo: bool,
    files: HashMap<String, RotatingFile>,
    recent: Arc<Mutex<VecDeque<LogLine>>>,
    follow: broadcast::Sender<LogLine>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<LogLine>) {
        let mut stdout = io::stdout();
        while let Some(line) = rx.blocking_recv() {
            self.write(&line, &mut stdout);
            // Drain what is queued, then flush once: batching without adding latency.
            while let Ok(line) = rx.try_recv() {
                self.write(&line, &mut stdout);
            }
            for f in self.files.values_mut() {
                let _ = f.out.flush();
            }
            if self.echo {
                let _ = stdout.flush();
            }
        }
    }

    fn write(&mut self, line: &LogLine, stdout: &mut io::Stdout) {
        let flushes = self.flushes.load(Ordering::SeqCst);
        if flushes != self.seen_flushes {
            // Files were emptied by `herd flush`: reopen them, so sizes start over.
            self.seen_flushes = flushes;
            self.files.clear();
        }
        let text = line.render();
        if self.echo {
            let _ = writeln!(stdout, "{text}");
        }
        let file = match self.files.get_mut(&line.service) {
            Some(f) => Some(f),
            None => {
                let path = self.dir.join(format!("{}.log", line.service));
                match RotatingFile::open(path, self.settings.clone()) {
                    Ok(f) => Some(self.files.entry(line.service.clone()).or_insert(f)),
                    Err(e) => {
                        tracing::warn!(service = %line.service, "cannot open log file: {e}");
                        None
                    }
                }
            }
        };
        if let Some(f) = file
            && let Err(e) = f.write_line(&text)
        {
            tracing::warn!(service = %line.service, "cannot write log file: {e}");
        }
        {
            let mut ring = self.recent.lock().expect("log ring poisoned");
            if ring.len() == RING {
                ring.pop_front();
            }
            ring.push_back(line.clone());
        }
        let _ = self.follow.send(line.clone());
    }
}

/// An append-only file renamed to `.1`, `.2`, … when it passes the size limit.
struct RotatingFile {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    settings: LogSettings,
}

impl RotatingFile {
    fn open(path: PathBuf, settings: LogSettings) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            out: BufWriter::new(file),
            size,
            settings,
        })
    }

    fn write_line(&mut self, text: &str) -> io::Result<()> {
        let len = text.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.settings.max_size {
            self.rotate()?;
        }
        self.out.write_all(text.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let numbered = |n: u32| -> PathBuf { rotated(&self.path, n) };
        if self.settings.keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            let _ = fs::remove_file(numbered(self.settings.keep));
            for n in (1..self.settings.keep).rev() {
                let _ = fs::rename(numbered(n), numbered(n + 1));
            }
            fs::rename(&self.path, numbered(1))?;
        }
        *self = Self::open(self.path.clone(), self.settings.clone())?;
        Ok(())
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_the_configured_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let settings = LogSettings {
            max_size: 100,
            keep: 2,
        };
        let mut f = RotatingFile::open(path.clone(), settings).unwrap();
        for i in 0..20 {
            f.write_line(&format!("line number {i:03} padded")).unwrap();
        }
        f.out.flush().unwrap();
        let live = fs::read_to_string(&path).unwrap();
        assert!(live.contains("line number 019"));
        assert!(live.len() <= 100);
        assert!(rotated(&path, 1).exists());
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        let older = fs::read_to_string(rotated(&path, 1)).unwrap();
        assert!(older.contains("line number 01"));
    }

    #[tokio::test]
    async fn hub_keeps_recent_lines_per_service_and_broadcasts() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, thread) = LogHub::start(
            dir.path().to_path_buf(),
            LogSettings {
                max_size: 1 << 20,
                keep: 1,
            },
            false,
        )
        .unwrap();
        let mut follow = hub.subscribe();
        hub.send(LogLine::now("a", Some(0), Stream::Out, "one".into()))
            .await;
        hub.send(LogLine::now("b", Some(1), Stream::Err, "two".into()))
            .await;
        let first = follow.recv().await.unwrap();
        assert_eq!(first.text, "one");
        assert_eq!(follow.recv().await.unwrap().text, "two");
        let only_a = hub.recent(Some("a"), 10);
        assert_eq!(only_a.len(), 1);
        assert!(only_a[0].render().ends_with(" a:0 | one"));
        drop(hub);
        thread.join().unwrap();
        let file = fs::read_to_string(dir.path().join("b.log")).unwrap();
        assert!(file.trim_end().ends_with("b:1 ! two"), "{file}");
    }
}
