//! The fuzz corpora, replayed on stable: every file under `fuzz/corpus/<target>/` goes through
//! the same entry point as the cargo-fuzz target of that name, so CI checks every input the
//! fuzzers kept (and every crash they found, saved there as a regression) without nightly.
//! `control_proto` is replayed by the binary's own unit tests (its types live there).

use std::path::{Path, PathBuf};

type Entry = fn(&[u8]);

fn expressions(data: &[u8]) {
    herd_resilience::fuzzing::trip(data);
    herd_config::fuzzing::retry(data);
    herd_config::fuzzing::match_rule(data);
}

/// Each target and its entry point, as in `fuzz/fuzz_targets/<target>.rs`.
const TARGETS: &[(&str, Entry)] = &[
    ("config_toml", herd_config::fuzzing::config),
    ("component_yaml", herd_config::fuzzing::resources),
    ("dapr_bodies", herd_api::fuzzing::request),
    ("metadata_query", herd_api::fuzzing::query),
    ("cloudevent", herd_api::fuzzing::cloudevent),
    ("trace_context", herd_telemetry::fuzzing::trace_context),
    ("expressions", expressions),
    ("state_recovery", herd_state::fuzzing::recover),
    ("log_recovery", herd_pubsub::fuzzing::recover),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_fuzz_target_has_a_corpus_replayed_here() {
    let targets: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|f| Some(f.file_stem()?.to_string_lossy().into_owned()))
        .filter(|t| t != "control_proto")
        .collect();
    assert!(targets.len() >= TARGETS.len());
    for target in &targets {
        assert!(
            TARGETS.iter().any(|(name, _)| name == target),
            "fuzz target {target} is not replayed"
        );
    }
}

#[test]
fn every_fuzz_corpus_file_replays() {
    herd_testkit::crash::record_panics();
    for (target, entry) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "fuzz/corpus/{target} is empty");
        for file in corpus {
            let data = std::fs::read(&file).unwrap();
            let replayed = std::panic::catch_unwind(|| entry(&data));
            // A panic on another thread (a store's writer) would not fail the call itself.
            let panics = herd_testkit::crash::take_panics();
            assert!(
                replayed.is_ok() && panics.is_empty(),
                "{}: {panics:?}",
                file.display()
            );
        }
    }
}
