//! Snapshots of services and instances, as `herd ls` and the control API show them.

use serde::{Deserialize, Serialize};

/// Lifecycle state of one instance slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Spawned, not yet ready.
    Starting,
    /// Ready and serving.
    Ready,
    /// Crashed; waiting out the backoff before the next start.
    Backoff,
    /// Crashed too often within the window; not restarted until told.
    Errored,
    /// Being stopped (SIGTERM sent).
    Stopping,
    /// Stopped on request.
    Stopped,
}

/// One slot of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The slot number (worker id), stable across restarts.
    pub id: usize,
    /// Pid of the current process, if one runs.
    pub pid: Option<u32>,
    /// The current process's own port (`port = "auto"` services).
    pub port: Option<u16>,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Milliseconds since the current process started.
    pub uptime_ms: Option<u64>,
    /// Restarts of this slot (crashes, memory limit, failed starts).
    pub restarts: u32,
    /// CPU use over the last sampling interval, percent of one core.
    pub cpu_percent: f32,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
    /// How the previous process of this slot ended, if one did.
    pub last_exit: Option<String>,
}

impl InstanceStatus {
    /// A slot that has not started yet.
    pub fn new(id: usize) -> Self {
        Self {
            id,
            pid: None,
            port: None,
            state: InstanceState::Stopped,
            uptime_ms: None,
            restarts: 0,
            cpu_percent: 0.0,
            memory_bytes: 0,
            last_exit: None,
        }
    }
}

/// One service and its slots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// The bound shared address (with the real port when `listen` asked for port 0).
    pub listen: Option<String>,
    /// The slots in order.
    pub instances: Vec<InstanceStatus>,
}
