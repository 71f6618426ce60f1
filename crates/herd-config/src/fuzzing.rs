//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: `herd.toml` text
//! and Dapr resource YAML loaded as herd loads them, subscription `match` rules, and retry
//! durations with the backoff they drive. Not part of the API.
//!
//! What must hold: loading never panics, and a refusal is a list of errors that each name the
//! file, with a line inside it when there is one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{ConfigErrors, Source, SubscriptionSpec};

fn check_errors(errors: &ConfigErrors, file: &Path, text: &str) {
    assert!(!errors.0.is_empty(), "a refusal names at least one problem");
    // An upper bound on the lines any reader counts (YAML ends a line at a lone CR too), plus
    // one: an error at the end of the text may name the line after the last.
    let lines = text.matches(['\n', '\r']).count() + 2;
    for e in &errors.0 {
        assert_eq!(e.file, file, "{e}");
        if let Some(line) = e.line {
            assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
        }
        assert!(!e.to_string().is_empty());
    }
}

/// `data` as the text of `herd.toml`.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = PathBuf::from("herd.toml");
    let source = Arc::new(Source {
        path: path.clone(),
        text: text.to_string(),
    });
    if let Err(errors) = crate::parse(source) {
        check_errors(&errors, &path, text);
    }
}

/// `data` as a resource file (components, subscriptions, resiliency) in `[api]
/// resources_path`, next to one service, `web`.
pub fn resources(data: &[u8]) {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "herd-fuzz-yaml-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("resources.yaml");
    std::fs::write(&file, data).expect("write");
    let toml = format!(
        "[api]\nresources_path = [{:?}]\n[[service]]\nname = \"web\"\ncommand = [\"sh\"]\n",
        dir.display().to_string()
    );
    let source = Arc::new(Source {
        path: PathBuf::from("herd.toml"),
        text: toml,
    });
    let mut config = crate::parse(source).expect("the base config is valid");
    let result = crate::load_resources(&mut config, &[]);
    let _ = std::fs::remove_dir_all(&dir);
    match (result, std::str::from_utf8(data)) {
        (Err(errors), Ok(text)) => check_errors(&errors, &file, text),
        (Err(errors), Err(_)) => assert!(errors.0.iter().all(|e| e.file == file)),
        (Ok(_), _) => {}
    }
}

/// A subscription rule's `match` expression: herd reads `event.type == "<type>"`.
pub fn match_rule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(kind) = SubscriptionSpec::parse_match(text) {
        let again = format!("event.type == \"{kind}\"");
        assert_eq!(SubscriptionSpec::parse_match(&again), Some(kind));
    }
}

/// A retry policy's `duration` and `maxInterval` (two lines, Go-style durations as in Dapr's
/// resiliency spec, read as herd's config reads them), then an attempt number: reading them
/// and the delay never panic, and the delay stays within bounds.
pub fn retry(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let mut duration = || {
        lines
            .next()
            .and_then(|l| crate::duration::parse(l.trim()).ok())
    };
    let (Some(initial), Some(max)) = (duration(), duration()) else {
        return;
    };
    let attempt = text.len() as u32;
    for backoff in [
        herd_resilience::Backoff::Constant(initial),
        herd_resilience::Backoff::Exponential { initial, max },
    ] {
        for jitter in [0.0, 0.5, 0.999_999] {
            let d = backoff.delay(attempt, jitter);
            assert!(d <= initial.max(max), "{backoff:?} {attempt}: {d:?}");
        }
        let _ = backoff.delay(u32::MAX, 1.0) + std::time::Duration::ZERO;
    }
}
