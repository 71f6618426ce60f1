//! What the embedded stores' fuzz entry points share: arbitrary bytes written as a store file of
//! their own, and a runtime to open and use it on. Not part of the API.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `data` to a fresh temporary file named `<prefix>-<pid>-<n>.redb`, runs `check` on it
/// on a current-thread runtime, then removes the file.
pub fn with_file<F, Fut>(prefix: &str, data: &[u8], check: F)
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}.redb",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, data).expect("write");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(check(path.clone()));
    drop(runtime);
    let _ = std::fs::remove_file(&path);
}
