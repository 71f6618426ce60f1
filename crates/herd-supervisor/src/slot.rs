//! The slot actor: one task per instance slot that owns its processes and decides their fate.
//!
//! A slot holds at most three kinds of process: the `current` instance serving traffic, a
//! `candidate` started to replace it (rolling reload, memory limit), and `retiring` instances
//! that were sent SIGTERM and are draining. An instance whose first process exited while others
//! of its process group still run leaves those `leftovers`, stopped like a retiring instance
//! (SIGTERM, SIGKILL of the group `kill_timeout` later); the slot is stopped only once they
//! are gone too. Everything that happens to them arrives as a message
//! (commands from the service, reports from watchers, timers from a `DelayQueue`), and the actor
//! handles one at a time, so the state machine needs no locks. The only shared state is the
//! [`InstanceStatus`] snapshot it publishes after each message.
//!
//! Replacement order is the zero-downtime rule: the candidate must become ready before the
//! current instance is retired; if it fails, it is killed and the current one keeps serving.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_config::ServiceSpec;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

mod leftover;

use crate::backoff::{Decision, RestartTracker};
use crate::instance::{Instance, Report};
use crate::shared::Shared;
use crate::status::{InstanceState, InstanceStatus};

/// How often memory and CPU are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The outcome of a successful replacement.
#[derive(Debug, Clone, Copy)]
pub struct Replaced {
    /// The process that was retired, if one was running.
    pub old_pid: Option<u32>,
    /// The new, ready process.
    pub new_pid: u32,
}

type ReplaceReply = oneshot::Sender<Result<Replaced, String>>;

enum Command {
    Replace(Arc<ServiceSpec>, ReplaceReply),
    Stop(oneshot::Sender<()>),
    Start(Arc<ServiceSpec>),
}

enum Msg {
    Command(Command),
    Report(Report),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Restart,
    Kill(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Backoff,
    Errored,
    Stopped,
}

/// The service's handle on one slot actor.
pub struct SlotHandle {
    commands: mpsc::Sender<Command>,
    join: JoinHandle<()>,
}

impl SlotHandle {
    /// Starts the actor for slot `index`; it starts an instance at once when `run` is set.
    pub fn spawn(
        shared: Arc<Shared>,
        spec: Arc<ServiceSpec>,
        index: usize,
        run: bool,
        cancel: CancellationToken,
    ) -> Self {
        let (commands, command_rx) = mpsc::channel(8);
        let (reports, report_rx) = mpsc::channel(64);
        let status = Arc::new(Mutex::new(InstanceStatus::new(index)));
        shared
            .views
            .lock()
            .expect("views poisoned")
            .push(status.clone());
        let actor = Slot {
            tracker: RestartTracker::new(spec.restart),
            shared,
            spec,
            index,
            status: status.clone(),
            current: None,
            candidate: None,
            retiring: Vec::new(),
            leftovers: Vec::new(),
            phase: Phase::Stopped,
            restart_timer: None,
            timers: DelayQueue::new(),
            stop_waiters: Vec::new(),
            tasks: JoinSet::new(),
            reports,
            next_generation: 0,
            restarts: 0,
            last_exit: None,
            shutting_down: false,
        };
        let join = tokio::spawn(actor.run(command_rx, report_rx, cancel, run));
        Self { commands, join }
    }

    /// Starts a replacement with `spec`; resolves once it is ready and the old one has exited.
    pub async fn replace(&self, spec: Arc<ServiceSpec>) -> Result<Replaced, String> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Replace(spec, tx)).await?;
        rx.await.map_err(|_| "the slot shut down".to_string())?
    }

    /// Stops the slot's processes gracefully; resolves when all have exited.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Starts the slot with `spec` if it is stopped or errored, forgetting its crash history.
    pub async fn start(&self, spec: Arc<ServiceSpec>) {
        let _ = self.send(Command::Start(spec)).await;
    }

    async fn send(&self, c: Command) -> Result<(), String> {
        self.commands
            .send(c)
            .await
            .map_err(|_| "the slot shut down".to_string())
    }

    /// Closes the command channel, which ends a stopped actor, and waits for the actor.
    pub async fn join(self) {
        let Self { commands, join, .. } = self;
        drop(commands);
        let _ = join.await;
    }
}

struct Retiring {
    instance: Instance,
    reply: Option<(ReplaceReply, Replaced)>,
    /// Waiting for its requests to be answered before SIGTERM.
    draining: bool,
    /// The last signal its group was sent: SIGTERM (with its SIGKILL timer armed) or SIGKILL.
    signalled: Option<Signal>,
}

struct Slot {
    shared: Arc<Shared>,
    spec: Arc<ServiceSpec>,
    index: usize,
    status: Arc<Mutex<InstanceStatus>>,
    current: Option<Instance>,
    candidate: Option<(Instance, Option<ReplaceReply>)>,
    retiring: Vec<Retiring>,
    leftovers: Vec<leftover::Leftover>,
    phase: Phase,
    tracker: RestartTracker,
    restart_timer: Option<delay_queue::Key>,
    timers: DelayQueue<Timer>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    tasks: JoinSet<()>,
    reports: mpsc::Sender<Report>,
    next_generation: u64,
    restarts: u32,
    last_exit: Option<String>,
    shutting_down: bool,
}

impl Slot {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut reports: mpsc::Receiver<Report>,
        cancel: CancellationToken,
        run: bool,
    ) {
        if run {
            self.phase = Phase::Running;
            self.start_current().await;
        }
        self.publish();
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while self.tasks.try_join_next().is_some() {}
            if self.shutting_down && self.idle() {
                break;
            }
            let event = tokio::select! {
                Some(r) = reports.recv() => Some(Msg::Report(r)),
                c = commands.recv(), if !self.shutting_down => match c {
                    Some(c) => Some(Msg::Command(c)),
                    None => {
                        // The service dropped this slot: stop and end.
                        self.shutting_down = true;
                        self.stop_all("instance removed").await;
                        None
                    }
                },
                Some(t) = poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    self.on_timer(t.into_inner()).await;
                    None
                }
                _ = sample.tick() => {
                    self.sample().await;
                    None
                }
                _ = cancel.cancelled(), if !self.shutting_down => {
                    self.shutting_down = true;
                    self.stop_all("herd is shutting down").await;
                    None
                }
            };
            match event {
                Some(Msg::Report(r)) => self.on_report(r).await,
                Some(Msg::Command(c)) => self.on_command(c).await,
                None => {}
            }
            self.publish();
        }
        self.publish();
    }

    fn idle(&self) -> bool {
        self.current.is_none()
            && self.candidate.is_none()
            && self.retiring.is_empty()
            && self.leftovers.is_empty()
    }

    async fn event(&self, text: String) {
        self.shared
            .logs
            .event(&self.shared.name, Some(self.index), text)
            .await;
    }

    async fn launch(&mut self) -> Result<Instance, String> {
        self.next_generation += 1;
        match Instance::start(
            &self.shared,
            &self.spec,
            self.index,
            self.next_generation,
            &mut self.tasks,
            &self.reports,
        ) {
            Ok(inst) => {
                self.event(format!("started pid {}", inst.pid)).await;
                Ok(inst)
            }
            Err(e) => {
                let msg = format!("cannot start {}: {e}", self.spec.command[0]);
                self.event(msg.clone()).await;
                Err(msg)
            }
        }
    }

    async fn start_current(&mut self) {
        match self.launch().await {
            Ok(inst) => self.current = Some(inst),
            Err(e) => {
                self.last_exit = Some(e);
                self.crashed(Duration::ZERO).await;
            }
        }
    }

    /// The current instance is gone unexpectedly: back off and restart, or give up.
    async fn crashed(&mut self, uptime: Duration) {
        let jitter = fastrand::f64();
        match self.tracker.on_exit(uptime, Instant::now(), jitter) {
            Decision::RestartAfter(delay) => {
                self.phase = Phase::Backoff;
                self.restarts += 1;
                metrics::counter!("herd_instance_restarts_total", "service" => self.shared.name.clone(), "reason" => "exit")
                    .increment(1);
                self.restart_timer = Some(self.timers.insert(Timer::Restart, delay));
                self.event(format!(
                    "restarting in {}",
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                ))
                .await;
            }
            Decision::GiveUp => {
                self.phase = Phase::Errored;
                let p = self.spec.restart;
                let text = format!(
                    "errored: {} restarts within {}; not restarting (run `herd restart {}` to try again)",
                    p.max_restarts,
                    humantime::format_duration(p.window),
                    self.shared.name
                );
                tracing::error!(service = %self.shared.name, instance = self.index, "{text}");
                self.event(text).await;
            }
        }
    }

    fn cancel_restart(&mut self) {
        if let Some(key) = self.restart_timer.take() {
            self.timers.try_remove(&key);
        }
    }

    /// Stops `instance`. One with an address of its own has left the endpoints (published
    /// here, before anything else); it gets SIGTERM once no request herd forwarded to it awaits
    /// an answer (at most `kill_timeout` later, see [`Slot::on_drained`]). Others get SIGTERM
    /// now. SIGKILL follows `kill_timeout` after SIGTERM.
    fn retire(&mut self, instance: Instance, reply: Option<(ReplaceReply, Replaced)>) {
        let generation = instance.generation;
        let draining = match instance.port {
            Some(port) => {
                self.publish();
                let reports = self.reports.clone();
                let limit = self.spec.kill_timeout;
                self.tasks.spawn(async move {
                    // A timeout still ends in SIGTERM: the requests left get the app's goodbye.
                    let _ = crate::readiness::drained(port, limit).await;
                    let _ = reports.send(Report::Drained { generation }).await;
                });
                true
            }
            None => false,
        };
        self.retiring.push(Retiring {
            instance,
            reply,
            draining,
            signalled: None,
        });
        if !draining {
            self.terminate(generation);
        }
    }

    /// Sends SIGTERM to the retiring instance of `generation` and arms its SIGKILL timer.
    fn terminate(&mut self, generation: u64) {
        if let Some(r) = self
            .retiring
            .iter_mut()
            .find(|r| r.instance.generation == generation)
        {
            r.draining = false;
            r.signalled = Some(Signal::SIGTERM);
            r.instance.signal(Signal::SIGTERM);
            self.timers
                .insert(Timer::Kill(generation), self.spec.kill_timeout);
        }
    }

    /// Nothing herd forwarded to a retiring instance awaits an answer: SIGTERM, unless it
    /// exited meanwhile or was already signalled.
    fn on_drained(&mut self, generation: u64) {
        let waiting = self
            .retiring
            .iter()
            .any(|r| r.instance.generation == generation && r.draining);
        if waiting {
            self.terminate(generation);
        }
    }

    async fn stop_all(&mut self, why: &str) {
        self.phase = Phase::Stopped;
        self.cancel_restart();
        if let Some((cand, reply)) = self.candidate.take() {
            if let Some(reply) = reply {
                let _ = reply.send(Err(format!("replacement abandoned: {why}")));
            }
            cand.signal(Signal::SIGKILL);
            self.retiring.push(Retiring {
                instance: cand,
                reply: None,
                draining: false,
                signalled: Some(Signal::SIGKILL),
            });
        }
        if let Some(cur) = self.current.take() {
            self.event(format!("stopping pid {} ({why})", cur.pid))
                .await;
            self.retire(cur, None);
        }
        self.notify_stopped();
    }

    fn notify_stopped(&mut self) {
        if self.idle() {
            for w in self.stop_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    async fn on_command(&mut self, c: Command) {
        match c {
            Command::Stop(reply) => {
                self.stop_waiters.push(reply);
                self.stop_all("stop requested").await;
            }
            Command::Start(spec) => {
                self.tracker.reset(spec.restart);
                self.spec = spec;
                if self.current.is_none() && self.candidate.is_none() {
                    self.cancel_restart();
                    self.phase = Phase::Running;
                    self.start_current().await;
                }
            }
            Command::Replace(spec, reply) => {
                if self.phase == Phase::Stopped {
                    let _ = reply.send(Err("the instance is stopped".into()));
                    return;
                }
                if self.candidate.is_some() {
                    let _ = reply.send(Err("a replacement is already starting".into()));
                    return;
                }
                self.tracker.reset(spec.restart);
                self.spec = spec;
                match self.launch().await {
                    Ok(inst) => self.candidate = Some((inst, Some(reply))),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    async fn on_report(&mut self, r: Report) {
        match r {
            Report::Ready { generation } => self.on_ready(generation).await,
            Report::NotReady { generation, reason } => self.on_not_ready(generation, reason).await,
            Report::Exited { generation, how } => self.on_exit(generation, how).await,
            Report::Drained { generation } => self.on_drained(generation),
            Report::GroupGone { generation } => self.on_group_gone(generation).await,
        }
    }

    async fn on_ready(&mut self, generation: u64) {
        if let Some(cur) = self.current.as_mut().filter(|c| c.generation == generation) {
            cur.ready = true;
            let pid = cur.pid;
            self.event(format!("pid {pid} ready")).await;
            return;
        }
        let is_candidate = self
            .candidate
            .as_ref()
            .is_some_and(|(c, _)| c.generation == generation);
        if !is_candidate {
            return;
        }
        let (mut new, reply) = self.candidate.take().expect("checked above");
        new.ready = true;
        let new_pid = new.pid;
        self.cancel_restart();
        self.phase = Phase::Running;
        let old = self.current.replace(new);
        let report = Replaced {
            old_pid: old.as_ref().map(|o| o.pid),
            new_pid,
        };
        // Take the old instance out of the endpoint list before it is told to stop.
        self.publish();
        match old {
            Some(old) => {
                self.event(format!(
                    "pid {new_pid} ready; stopping pid {} it replaces",
                    old.pid
                ))
                .await;
                self.retire(old, reply.map(|r| (r, report)));
            }
            None => {
                self.event(format!("pid {new_pid} ready")).await;
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(report));
                }
            }
        }
    }

    async fn on_not_ready(&mut self, generation: u64, reason: String) {
        if let Some(cur) = self.current.as_ref().filter(|c| c.generation == generation) {
            // The exit report that follows the kill goes down the crash path.
            self.event(format!("pid {} {reason}; killing it", cur.pid))
                .await;
            cur.signal(Signal::SIGKILL);
            return;
        }
        if self
            .candidate
            .as_ref()
            .is_some_and(|(c, _)| c.generation == generation)
        {
            let (cand, reply) = self.candidate.take().expect("checked above");
            self.event(format!("replacement pid {} {reason}; killing it", cand.pid))
                .await;
            if let Some(reply) = reply {
                let _ = reply.send(Err(format!("new instance {reason}")));
            }
            cand.signal(Signal::SIGKILL);
            self.retiring.push(Retiring {
                instance: cand,
                reply: None,
                draining: false,
                signalled: Some(Signal::SIGKILL),
            });
        }
    }

    async fn on_exit(&mut self, generation: u64, how: String) {
        if let Some(pos) = self
            .retiring
            .iter()
            .position(|r| r.instance.generation == generation)
        {
            let r = self.retiring.swap_remove(pos);
            r.instance.forget();
            let left = self.left_behind(&r.instance, r.signalled);
            self.event(format!("pid {} stopped ({how}){left}", r.instance.pid))
                .await;
            if let Some((reply, report)) = r.reply {
                let _ = reply.send(Ok(report));
            }
        } else if self
            .current
            .as_ref()
            .is_some_and(|c| c.generation == generation)
        {
            let cur = self.current.take().expect("checked above");
            cur.forget();
            let left = self.left_behind(&cur, None);
            self.event(format!("pid {} exited ({how}){left}", cur.pid))
                .await;
            self.last_exit = Some(how);
            // A starting replacement takes over; otherwise this is a crash.
            if self.phase == Phase::Running && self.candidate.is_none() {
                self.crashed(cur.uptime()).await;
            }
        } else if self
            .candidate
            .as_ref()
            .is_some_and(|(c, _)| c.generation == generation)
        {
            let (cand, reply) = self.candidate.take().expect("checked above");
            cand.forget();
            let left = self.left_behind(&cand, None);
            self.event(format!(
                "replacement pid {} exited before it was ready ({how}){left}",
                cand.pid
            ))
            .await;
            if let Some(reply) = reply {
                let _ = reply.send(Err(format!(
                    "new instance exited before it was ready ({how})"
                )));
            }
            if self.current.is_none() && self.phase == Phase::Running {
                self.crashed(cand.uptime()).await;
            }
        }
        self.notify_stopped();
    }

    async fn on_timer(&mut self, t: Timer) {
        match t {
            Timer::Restart => {
                self.restart_timer = None;
                if self.phase == Phase::Backoff {
                    self.phase = Phase::Running;
                    self.start_current().await;
                }
            }
            Timer::Kill(generation) => {
                if let Some(r) = self
                    .retiring
                    .iter_mut()
                    .find(|r| r.instance.generation == generation)
                {
                    let pid = r.instance.pid;
                    r.signalled = Some(Signal::SIGKILL);
                    r.instance.signal(Signal::SIGKILL);
                    self.event(format!(
                        "pid {pid} still running {} after SIGTERM; sent SIGKILL",
                        humantime::format_duration(self.spec.kill_timeout)
                    ))
                    .await;
                } else {
                    self.kill_leftover(generation).await;
                }
            }
        }
    }

    async fn sample(&mut self) {
        if let Some(c) = self.current.as_mut() {
            c.sample();
            let labels = [
                ("service", self.shared.name.clone()),
                ("instance", self.index.to_string()),
            ];
            metrics::gauge!("herd_instance_memory_bytes", &labels).set(c.rss as f64);
            metrics::gauge!("herd_instance_cpu_percent", &labels).set(f64::from(c.cpu_percent));
        }
        let Some(limit) = self.spec.max_memory else {
            return;
        };
        let over = self
            .current
            .as_ref()
            .filter(|c| c.ready && c.rss > limit && self.candidate.is_none())
            .map(|c| (c.pid, c.rss));
        if let Some((pid, rss)) = over {
            if self.phase != Phase::Running || self.shutting_down {
                return;
            }
            self.event(format!(
                "pid {pid} uses {} MB, above max_memory {} MB; replacing it",
                rss / 1_000_000,
                limit / 1_000_000
            ))
            .await;
            self.restarts += 1;
            metrics::counter!("herd_instance_restarts_total", "service" => self.shared.name.clone(), "reason" => "memory")
                .increment(1);
            if let Ok(inst) = self.launch().await {
                self.candidate = Some((inst, None));
            }
        }
    }

    fn publish(&self) {
        let state = if self.shutting_down || self.phase == Phase::Stopped {
            if self.idle() {
                InstanceState::Stopped
            } else {
                InstanceState::Stopping
            }
        } else {
            match self.phase {
                Phase::Backoff => InstanceState::Backoff,
                Phase::Errored => InstanceState::Errored,
                _ => match &self.current {
                    Some(c) if c.ready => InstanceState::Ready,
                    _ => InstanceState::Starting,
                },
            }
        };
        let mut s = self.status.lock().expect("status poisoned");
        s.state = state;
        s.pid = self.current.as_ref().map(|c| c.pid);
        s.port = self.current.as_ref().and_then(|c| c.port);
        s.uptime_ms = self.current.as_ref().map(|c| c.uptime().as_millis() as u64);
        s.restarts = self.restarts;
        s.cpu_percent = self.current.as_ref().map_or(0.0, |c| c.cpu_percent);
        s.memory_bytes = self.current.as_ref().map_or(0, |c| c.rss);
        s.last_exit.clone_from(&self.last_exit);
        drop(s);
        self.shared.refresh_endpoints();
    }
}
