//! House rules checked as tests, over every Rust file of the repository (the workspace's
//! crates and examples, and `bench/loadgen`, a cargo project of its own): each file opens with a
//! `//!` paragraph saying what it is for, and only backend modules name the clients of Redis,
//! PostgreSQL, RabbitMQ and NATS.

use std::path::{Path, PathBuf};

/// Where the Rust files are, relative to the repository root.
const SOURCE_DIRS: &[&str] = &["crates", "examples", "bench", "fuzz"];

/// The client crates of the external backends, as Rust code names them.
const CLIENT_CRATES: &[&str] = &[
    "redis",
    "tokio_postgres",
    "deadpool_postgres",
    "lapin",
    "async_nats",
];

/// The backend modules, without `.rs`: the module file and anything under its folder may name
/// the client crates.
const BACKENDS: &[&str] = &[
    "crates/herd-state/src/redis",
    "crates/herd-state/src/postgres",
    "crates/herd-pubsub/src/nats",
    "crates/herd-pubsub/src/rabbitmq",
    "crates/herd-pubsub/src/redis_streams",
];

/// Other files that may name the client crates, and why.
const ALSO_ALLOWED: &[(&str, &str)] = &[
    (
        "crates/herd-pubsub/tests/conformance.rs",
        "checks what each broker holds with the broker's own client",
    ),
    (
        "crates/herd/tests/it/tidy.rs",
        "this rule, whose messages and examples name the crates",
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n != "target" && n != "node_modules")
            {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The repository root, and every Rust file under it as a path relative to it.
fn repository_files() -> (PathBuf, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root.join(dir), &mut files);
    }
    let relative = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&root).unwrap();
            rel.to_string_lossy().replace('\\', "/")
        })
        .collect();
    (root, relative)
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let (root, files) = repository_files();
    assert!(files.len() > 10, "found only {} files", files.len());
    assert!(
        files.iter().any(|f| f.starts_with("bench/loadgen/")),
        "bench/loadgen's files are checked too"
    );
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(root.join(f))
                .unwrap()
                .starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! opening: {missing:?}"
    );
}

/// Whether `file` may name the client crates: a backend module's file or anything under its
/// folder, or one of [`ALSO_ALLOWED`].
fn may_name_clients(file: &str) -> bool {
    BACKENDS.iter().any(|backend| {
        file.strip_prefix(backend)
            .is_some_and(|rest| rest == ".rs" || rest.starts_with('/'))
    }) || ALSO_ALLOWED.iter().any(|(allowed, _)| *allowed == file)
}

/// The client crates `text` names in code: a path that starts with the crate's name
/// (`redis::cmd`, `use lapin::{...}`), or `use` / `extern crate` of the bare name. Comment lines
/// are skipped; a name the file declares as a module of its own (herd-state's `mod redis;`) or
/// imports as one (`use crate::redis::{self, …}`) means that module there.
fn clients_named(text: &str) -> Vec<(usize, &'static str)> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let declares_module = |name: &str| {
        text.lines().any(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let declared = line
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_prefix(name))
                .is_some_and(|rest| rest.starts_with([';', ' ', '{']));
            let imported = line
                .strip_prefix("use crate::")
                .and_then(|rest| rest.strip_prefix(name))
                .is_some_and(|rest| rest.starts_with(";") || rest.starts_with("::{self"));
            declared || imported
        })
    };
    let mut found = Vec::new();
    for &name in CLIENT_CRATES {
        if declares_module(name) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let as_path = line.match_indices(name).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let starts = before.is_none_or(|c| !is_ident(c) && c != ':');
                starts && line[at + name.len()..].starts_with("::")
            });
            let bare = [format!("use {name};"), format!("extern crate {name}")]
                .iter()
                .any(|form| code.starts_with(form.as_str()));
            if as_path || bare {
                found.push((n + 1, name));
            }
        }
    }
    found
}

#[test]
fn only_backend_modules_name_the_backend_clients() {
    let (root, files) = repository_files();
    let mut offenders = Vec::new();
    let mut allowed_in_use = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let named = clients_named(&text);
        if named.is_empty() {
            continue;
        }
        if may_name_clients(file) {
            allowed_in_use.push(file.clone());
        } else {
            offenders.extend(
                named
                    .iter()
                    .map(|(line, name)| format!("{file}:{line}: {name}")),
            );
        }
    }
    assert!(
        offenders.is_empty(),
        "only the backend modules {BACKENDS:?} (and {ALSO_ALLOWED:?}) may name {CLIENT_CRATES:?}; \
         found:\n{}",
        offenders.join("\n")
    );
    // Every exception still names a client: a stale entry would hide a later one.
    for (allowed, why) in ALSO_ALLOWED {
        assert!(
            allowed_in_use.iter().any(|f| f == allowed),
            "{allowed} ({why}) names no client crate any more: remove it from ALSO_ALLOWED"
        );
    }
    // The rule recognises what the backends do write.
    for backend in BACKENDS {
        assert!(
            allowed_in_use
                .iter()
                .any(|f| may_name_clients(f) && f.starts_with(backend)),
            "backend {backend} names no client crate: is the list out of date?"
        );
    }
}

#[test]
fn client_names_are_recognised_in_code_only() {
    let text = "\
//! Talks to `redis::Client` (a doc comment: not code).
use redis::AsyncCommands;
    let c = lapin::Connection::connect(url);
let url = \"redis://127.0.0.1:6379\";
let x = herd_state::redis::RedisStore::new();
let y = crate::async_nats_helper::run();
use async_nats;
";
    assert_eq!(
        clients_named(text),
        vec![(2, "redis"), (3, "lapin"), (7, "async_nats")]
    );
    let own_module = "mod redis;\npub use redis::{RedisSettings, RedisStore};\n";
    assert!(clients_named(own_module).is_empty());
    assert!(may_name_clients("crates/herd-state/src/redis.rs"));
    assert!(may_name_clients("crates/herd-state/src/redis/script.rs"));
    assert!(may_name_clients("crates/herd-pubsub/src/redis_streams.rs"));
    assert!(!may_name_clients("crates/herd-state/src/redis_helper.rs"));
    assert!(!may_name_clients("crates/herd-api/src/state.rs"));
}
