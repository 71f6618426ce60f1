//! The Node.js sample (`examples/node-hello`) under herd: `server.listen({ fd: 3 })`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::util::{Herd, get, node_available, workers_seen};

#[test]
fn node_hello_runs_as_a_cluster_and_reloads() {
    if !node_available() {
        eprintln!("skipped: node is not on PATH");
        return;
    }
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/node-hello/server.js");
    let herd = Herd::start(&format!(
        r#"
[[service]]
name = "node-hello"
command = ["node", "{}"]
instances = 2
listen = "127.0.0.1:0"
env = {{ HELLO_DELAY_MS = "20", HELLO_DRAIN_MS = "200" }}
"#,
        server.display()
    ));
    let addr = herd.addr("node-hello");
    let workers = workers_seen(addr, 6, 6);
    assert_eq!(workers, BTreeSet::from([0, 1]));
    let before = herd.pids("node-hello");
    let out = herd.cli(&["reload", "node-hello"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = herd.pids("node-hello");
    assert!(after.iter().all(|p| !before.contains(p)));
    let r = get(addr, "/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["message"], "Hello from distributed node");
}
