//! What an instance leaves behind: processes of its group that still run after its first
//! process was reaped. They are stopped like a retiring instance (SIGTERM, SIGKILL of the group
//! `kill_timeout` later), and the slot counts as stopped only once they are gone.

use nix::sys::signal::Signal;
use tokio::task::AbortHandle;

use super::{Slot, Timer};
use crate::instance::{self, Instance, Report};

/// Processes of an instance's group that still run after its first process was reaped.
pub(super) struct Leftover {
    generation: u64,
    /// The group's id: the reaped process's pid.
    pgid: u32,
    /// Reports [`Report::GroupGone`] once none runs.
    watcher: AbortHandle,
}

impl Slot {
    /// The first process of `instance` was reaped; what still runs in its process group is left
    /// of the instance and stops like a retiring one: SIGTERM (unless the group had it; SIGKILL
    /// again if it had that), then SIGKILL `kill_timeout` after the SIGTERM. Returns the note for
    /// the instance's exit event.
    pub(super) fn left_behind(
        &mut self,
        instance: &Instance,
        signalled: Option<Signal>,
    ) -> &'static str {
        if !instance.group_alive() {
            return "";
        }
        let generation = instance.generation;
        match signalled {
            // Nothing survives it; the group is only waiting to be reaped.
            Some(Signal::SIGKILL) => {
                instance.signal(Signal::SIGKILL);
                return "";
            }
            // Its SIGKILL timer is armed.
            Some(_) => {}
            None => {
                instance.signal(Signal::SIGTERM);
                self.timers
                    .insert(Timer::Kill(generation), self.spec.kill_timeout);
            }
        }
        let (pgid, reports) = (instance.pid, self.reports.clone());
        let watcher = self.tasks.spawn(async move {
            instance::group_gone(pgid).await;
            let _ = reports.send(Report::GroupGone { generation }).await;
        });
        self.leftovers.push(Leftover {
            generation,
            pgid,
            watcher,
        });
        "; stopping the processes left in its group"
    }

    /// Takes the leftover group of `generation` out of the list, if it is one.
    fn take_leftover(&mut self, generation: u64) -> Option<Leftover> {
        let pos = self
            .leftovers
            .iter()
            .position(|l| l.generation == generation)?;
        Some(self.leftovers.swap_remove(pos))
    }

    /// No process of a leftover group runs any more.
    pub(super) async fn on_group_gone(&mut self, generation: u64) {
        if let Some(left) = self.take_leftover(generation) {
            self.event(format!("pid {}'s group has ended", left.pgid))
                .await;
            self.notify_stopped();
        }
    }

    /// The SIGKILL timer of `generation` fired and it is a leftover group, not a retiring
    /// instance: the group gets SIGKILL.
    pub(super) async fn kill_leftover(&mut self, generation: u64) {
        if let Some(left) = self.take_leftover(generation) {
            left.watcher.abort();
            instance::signal_group(left.pgid, Signal::SIGKILL);
            self.event(format!(
                "processes of pid {}'s group still running {} after SIGTERM; sent SIGKILL",
                left.pgid,
                humantime::format_duration(self.spec.kill_timeout)
            ))
            .await;
            self.notify_stopped();
        }
    }
}
