//! One running process of a slot, and the tasks that watch it.
//!
//! Starting an instance spawns three kinds of watcher into the slot's task set: an exit watcher
//! that owns the `Child` and reports its status, pumps that forward stdout and stderr to the
//! [`LogHub`], and a readiness watcher. Watchers report to the slot actor by message, tagged with
//! the instance's generation number, so a late message about an old process is recognised and
//! never confused with its successor in the same slot.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_config::{ReadyMode, ServiceSpec};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::logs::{LogLine, MAX_LINE, Stream};
use crate::shared::Shared;
use crate::spawn::{self, Launch};
use crate::{procfs, readiness};

/// Messages from watchers to the slot actor.
#[derive(Debug)]
pub enum Report {
    /// The process exited; the text says how.
    Exited {
        /// Generation of the instance.
        generation: u64,
        /// `exit code 1`, `killed by SIGKILL`, …
        how: String,
    },
    /// Nothing herd forwarded to the stopping instance awaits an answer any more (or the wait
    /// timed out): it may get SIGTERM.
    Drained {
        /// Generation of the instance.
        generation: u64,
    },
    /// The instance became ready.
    Ready {
        /// Generation of the instance.
        generation: u64,
    },
    /// The instance did not become ready.
    NotReady {
        /// Generation of the instance.
        generation: u64,
        /// Why.
        reason: String,
    },
    /// No process is left in the process group of an instance whose first process exited.
    GroupGone {
        /// Generation of the instance.
        generation: u64,
    },
}

/// A live process in a slot.
pub struct Instance {
    /// Generation number, unique within the slot.
    pub generation: u64,
    /// Process id (and process group id).
    pub pid: u32,
    /// The loopback port only this instance is reached at: the one it binds itself
    /// (`port = "auto"`) or its private socket's (a proxied `listen`).
    pub port: Option<u16>,
    /// When it was spawned.
    pub started: Instant,
    /// Whether it has been seen ready.
    pub ready: bool,
    /// Last CPU sample: when, and total ticks then.
    pub cpu_sample: Option<(Instant, u64)>,
    /// CPU use over the last interval, percent of one core.
    pub cpu_percent: f32,
    /// Resident memory at the last sample.
    pub rss: u64,
    readiness: AbortHandle,
}

impl Instance {
    /// Spawns the process for `slot` of `spec` and its watchers.
    pub fn start(
        shared: &Arc<Shared>,
        spec: &ServiceSpec,
        slot: usize,
        generation: u64,
        tasks: &mut JoinSet<()>,
        reports: &mpsc::Sender<Report>,
    ) -> std::io::Result<Self> {
        let (ready_rx, ready_tx) = match spec.ready.mode {
            ReadyMode::Notify => {
                let (rx, tx) = readiness::pipe()?;
                (Some(rx), Some(tx))
            }
            _ => (None, None),
        };
        let own_port = if spec.own_port {
            Some(readiness::free_port()?)
        } else {
            None
        };
        // A proxied service's instance gets a socket of its own; herd's copy closes once the
        // instance has it, so the socket dies with the instance and a connect to it is refused.
        let private = if shared.private_sockets() {
            Some(crate::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?)
        } else {
            None
        };
        let mut child = spawn::spawn(Launch {
            spec,
            slot,
            listener: private.as_ref().map(|b| &b.fd).or(shared.listener.as_ref()),
            port: own_port.or(shared.port()),
            ready_pipe: ready_tx,
            extra_env: &shared.extra_env,
        })?;
        let pid = child.id().expect("a just-spawned child has a pid");
        // Where this instance alone is reached: its own port or its private socket.
        let port = own_port.or(private.as_ref().map(|b| b.addr.port()));
        let inode = match &private {
            Some(b) => Some(b.inode),
            None => shared.listener.as_ref().map(|_| shared.socket_inode),
        };
        drop(private);

        if let Some(out) = child.stdout.take() {
            tasks.spawn(pump(out, shared.clone(), slot, Stream::Out));
        }
        if let Some(err) = child.stderr.take() {
            tasks.spawn(pump(err, shared.clone(), slot, Stream::Err));
        }
        let tx = reports.clone();
        tasks.spawn(async move {
            let how = match child.wait().await {
                Ok(status) => describe(status),
                Err(e) => format!("lost track of the process: {e}"),
            };
            let _ = tx.send(Report::Exited { generation, how }).await;
        });

        let tx = reports.clone();
        let timeout = spec.ready.timeout;
        let mode = spec.ready.mode.clone();
        let readiness = tasks.spawn(async move {
            // A socket herd bound always accepts a connection: there, `listen` readiness is the
            // instance accepting on it, seen from /proc.
            let outcome = match (mode, ready_rx, port, inode) {
                (_, Some(rx), _, _) => readiness::notified(rx, timeout).await,
                (ReadyMode::Http { path }, _, Some(port), _) => {
                    readiness::http_ok(port, &path, timeout).await
                }
                (_, _, _, Some(inode)) => readiness::accepting(pid, inode, timeout).await,
                (_, _, Some(port), None) => readiness::connects(port, timeout).await,
                _ => Ok(()),
            };
            let report = match outcome {
                Ok(()) => Report::Ready { generation },
                Err(reason) => Report::NotReady { generation, reason },
            };
            let _ = tx.send(report).await;
        });

        Ok(Self {
            generation,
            pid,
            port,
            started: Instant::now(),
            ready: false,
            cpu_sample: None,
            cpu_percent: 0.0,
            rss: 0,
            readiness,
        })
    }

    /// Sends `signal` to the instance's process group.
    pub fn signal(&self, signal: Signal) {
        signal_group(self.pid, signal);
    }

    /// Stops watching readiness (the process has exited).
    pub fn forget(&self) {
        self.readiness.abort();
    }

    /// Whether a process of the instance's group still runs (zombies left out). Asked once its
    /// first process was reaped: while any member lives the kernel gives the group's id (that
    /// pid) to no new process, so the group is still the instance's.
    pub fn group_alive(&self) -> bool {
        group_alive(self.pid)
    }

    /// How long the process has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Refreshes memory and CPU figures from `/proc`.
    pub fn sample(&mut self) {
        let now = Instant::now();
        if let Some(rss) = procfs::rss_bytes(self.pid) {
            self.rss = rss;
        }
        if let Some(ticks) = procfs::cpu_ticks(self.pid) {
            if let Some((then, before)) = self.cpu_sample {
                let secs = now.duration_since(then).as_secs_f64();
                if secs > 0.0 {
                    let used =
                        ticks.saturating_sub(before) as f64 / procfs::ticks_per_second() as f64;
                    self.cpu_percent = (used / secs * 100.0) as f32;
                }
            }
            self.cpu_sample = Some((now, ticks));
        }
    }
}

/// Sends `signal` to process group `pgid`.
pub fn signal_group(pgid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid as i32), signal);
}

/// Whether a process of group `pgid` still runs (zombies left out).
fn group_alive(pgid: u32) -> bool {
    // Asking the kernel first spares the read of /proc in the common case: nobody is left.
    let member = !matches!(
        killpg(Pid::from_raw(pgid as i32), None),
        Err(nix::errno::Errno::ESRCH)
    );
    member && procfs::group_runs(pgid)
}

/// Waits until no process of group `pgid` runs, looking every 50 ms at most.
pub async fn group_gone(pgid: u32) {
    let mut interval = Duration::from_millis(2);
    while group_alive(pgid) {
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

/// `exit code 3` or `killed by SIGKILL`.
pub fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => "ended".to_string(),
    }
}

/// Forwards one output stream line by line; a line longer than [`MAX_LINE`] is split.
async fn pump(reader: impl AsyncRead + Unpin, shared: Arc<Shared>, slot: usize, stream: Stream) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                let text = String::from_utf8_lossy(&buf).into_owned();
                shared
                    .logs
                    .send(LogLine::now(&shared.name, Some(slot), stream, text))
                    .await;
            }
        }
    }
}
