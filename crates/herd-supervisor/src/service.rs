//! One service: its shared socket, its slots, and the operations that span slots.
//!
//! Operations on one service (reload, restart, scale, stop, start) are serialised by an async mutex
//! over the slot list, so two reloads never interleave; status reads go through a separate
//! snapshot list and never wait for an operation.

use std::sync::{Arc, Mutex};

use herd_config::ServiceSpec;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::shared::{Endpoints, Shared};
use crate::slot::SlotHandle;
use crate::status::ServiceStatus;

/// A running service.
pub struct Service {
    shared: Arc<Shared>,
    spec: Mutex<Arc<ServiceSpec>>,
    slots: tokio::sync::Mutex<Vec<SlotHandle>>,
    cancel: CancellationToken,
}

impl Service {
    /// Starts every slot of `spec`.
    pub(crate) fn start(shared: Arc<Shared>, spec: ServiceSpec, cancel: CancellationToken) -> Self {
        let spec = Arc::new(spec);
        let slots: Vec<SlotHandle> = (0..spec.instances)
            .map(|i| SlotHandle::spawn(shared.clone(), spec.clone(), i, true, cancel.clone()))
            .collect();
        Self {
            shared,
            spec: Mutex::new(spec),
            slots: tokio::sync::Mutex::new(slots),
            cancel,
        }
    }

    /// The addresses the service can be reached at now, updated as instances become ready or
    /// are stopped.
    pub fn endpoints(&self) -> Endpoints {
        self.shared.endpoints()
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The spec the service runs with now.
    pub fn spec(&self) -> Arc<ServiceSpec> {
        self.spec.lock().expect("spec poisoned").clone()
    }

    /// A snapshot of the service and its slots.
    pub fn status(&self) -> ServiceStatus {
        let views = self.shared.views.lock().expect("views poisoned");
        ServiceStatus {
            name: self.shared.name.clone(),
            listen: self.shared.address.map(|a| a.to_string()),
            instances: views
                .iter()
                .map(|v| v.lock().expect("status poisoned").clone())
                .collect(),
        }
    }

    fn check_compatible(&self, spec: &ServiceSpec) -> Result<(), String> {
        let current = self.spec();
        if spec.passthrough != current.passthrough && spec.listen.is_some() {
            return Err(format!(
                "passthrough changed to {}; a reload keeps how the socket is served, restart herd to switch",
                spec.passthrough
            ));
        }
        if spec.listen != current.listen {
            return Err(format!(
                "listen changed from {:?} to {:?}; a reload keeps the socket, restart herd to move it",
                current.listen.map(|a| a.to_string()),
                spec.listen.map(|a| a.to_string())
            ));
        }
        Ok(())
    }

    /// Rolling reload to `spec`: slot by slot, start a new instance, wait until it is ready, then
    /// stop the old one. The first failure aborts, leaving the remaining old instances serving.
    /// Slots are added or removed when `spec.instances` changed. Progress goes to `progress`.
    pub async fn reload(
        &self,
        spec: ServiceSpec,
        progress: &mpsc::Sender<String>,
    ) -> Result<(), String> {
        self.check_compatible(&spec)?;
        let spec = Arc::new(spec);
        let name = self.name().to_string();
        let mut slots = self.slots.lock().await;
        let say = |text: String| async move {
            let _ = progress.send(text).await;
        };
        for (i, slot) in slots.iter().enumerate().take(spec.instances) {
            say(format!("{name}:{i} starting a new instance")).await;
            match slot.replace(spec.clone()).await {
                Ok(r) => {
                    let old = r.old_pid.map_or("none".into(), |p| p.to_string());
                    say(format!(
                        "{name}:{i} new pid {} ready, old pid {old} stopped",
                        r.new_pid
                    ))
                    .await;
                }
                Err(e) => {
                    return Err(format!(
                        "{name}:{i}: {e}; reload aborted, the old instances keep serving"
                    ));
                }
            }
        }
        *self.spec.lock().expect("spec poisoned") = spec.clone();
        self.resize(&mut slots, &spec, progress).await;
        Ok(())
    }

    /// Runs `instances` instances from now on: new slots start (without waiting for them to be
    /// ready), surplus slots stop gracefully, highest first. Lasts until the next reload, which
    /// applies the config's count again.
    pub async fn scale(&self, instances: usize, progress: &mpsc::Sender<String>) {
        let mut slots = self.slots.lock().await;
        let mut spec = (*self.spec()).clone();
        spec.instances = instances;
        let spec = Arc::new(spec);
        *self.spec.lock().expect("spec poisoned") = spec.clone();
        self.resize(&mut slots, &spec, progress).await;
    }

    /// Adds or removes slots until there are `spec.instances`.
    async fn resize(
        &self,
        slots: &mut Vec<SlotHandle>,
        spec: &Arc<ServiceSpec>,
        progress: &mpsc::Sender<String>,
    ) {
        let name = self.name();
        while slots.len() < spec.instances {
            let i = slots.len();
            let _ = progress
                .send(format!("{name}:{i} adding an instance"))
                .await;
            let slot = SlotHandle::spawn(
                self.shared.clone(),
                spec.clone(),
                i,
                false,
                self.cancel.clone(),
            );
            slot.start(spec.clone()).await;
            slots.push(slot);
        }
        while slots.len() > spec.instances {
            let slot = slots.pop().expect("len checked");
            let _ = progress
                .send(format!("{name}:{} removing an instance", slots.len()))
                .await;
            slot.stop().await;
            self.shared.views.lock().expect("views poisoned").pop();
            self.shared.refresh_endpoints();
            // With its command channel closed, a stopped slot actor ends.
            slot.join().await;
        }
    }

    /// Stops every instance, then starts them again with `spec` (not zero-downtime: new
    /// connections wait in the socket's backlog meanwhile). Clears errored states. The number
    /// of instances stays as it is (a reload applies the config's).
    pub async fn restart(&self, mut spec: ServiceSpec) -> Result<(), String> {
        self.check_compatible(&spec)?;
        let slots = self.slots.lock().await;
        spec.instances = slots.len();
        for slot in slots.iter() {
            slot.stop().await;
        }
        let spec = Arc::new(spec);
        *self.spec.lock().expect("spec poisoned") = spec.clone();
        for slot in slots.iter() {
            slot.start(spec.clone()).await;
        }
        Ok(())
    }

    /// Stops every instance gracefully; the service stays stopped until started.
    pub async fn stop(&self) {
        let slots = self.slots.lock().await;
        for slot in slots.iter() {
            slot.stop().await;
        }
    }

    /// Starts stopped or errored instances.
    pub async fn start_all(&self) {
        let spec = self.spec();
        let slots = self.slots.lock().await;
        for slot in slots.iter() {
            slot.start(spec.clone()).await;
        }
    }

    /// Waits for every slot actor after the shutdown token was cancelled.
    pub(crate) async fn join(&self) {
        let mut slots = self.slots.lock().await;
        for slot in slots.drain(..) {
            slot.join().await;
        }
    }
}
