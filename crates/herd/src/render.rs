//! How the CLI prints status: a table like `pm2 ls`.

use std::time::Duration;

use herd_supervisor::{InstanceState, ServiceStatus};

/// The lower-case name of a state, as `herd ls` and the overview show it.
pub fn state_name(s: InstanceState) -> &'static str {
    match s {
        InstanceState::Starting => "starting",
        InstanceState::Ready => "ready",
        InstanceState::Backoff => "backoff",
        InstanceState::Errored => "errored",
        InstanceState::Stopping => "stopping",
        InstanceState::Stopped => "stopped",
    }
}

/// `4s`, `3m`, `2h`, `5d`.
pub fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `12.3 MB`.
pub fn memory(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.1} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// The `herd ls` table.
pub fn table(services: &[ServiceStatus]) -> String {
    let mut rows = vec![
        [
            "SERVICE", "ID", "PID", "STATE", "UPTIME", "RESTARTS", "CPU", "MEMORY", "LISTEN",
        ]
        .map(String::from),
    ];
    for s in services {
        for i in &s.instances {
            rows.push([
                s.name.clone(),
                i.id.to_string(),
                i.pid.map_or("-".into(), |p| p.to_string()),
                state_name(i.state).to_string(),
                i.uptime_ms
                    .map_or("-".into(), |ms| uptime(Duration::from_millis(ms))),
                i.restarts.to_string(),
                format!("{:.0}%", i.cpu_percent),
                memory(i.memory_bytes),
                i.port
                    .map(|p| format!("127.0.0.1:{p}"))
                    .or_else(|| s.listen.clone())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_supervisor::InstanceStatus;

    #[test]
    fn table_has_a_row_per_instance() {
        let mut a = InstanceStatus::new(0);
        a.pid = Some(42);
        a.state = InstanceState::Ready;
        a.uptime_ms = Some(125_000);
        a.memory_bytes = 12_345_678;
        let s = ServiceStatus {
            name: "hello".into(),
            listen: Some("127.0.0.1:8000".into()),
            instances: vec![a, InstanceStatus::new(1)],
        };
        let t = table(&[s]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SERVICE"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "hello",
                "0",
                "42",
                "ready",
                "2m",
                "0",
                "0%",
                "12.3",
                "MB",
                "127.0.0.1:8000"
            ]
        );
        assert!(lines[2].contains("stopped"));
    }
}
