//! The error collector every section of `herd.toml` is checked through, and the readers of
//! values that several sections share (durations, addresses, files, balancing, breakers).
//!
//! A [`Checker`] never stops at the first problem: each check pushes onto one list, so a user
//! fixes a file in one pass. It knows the file being checked and its directory, which relative
//! paths are resolved against. Section modules (`service.rs`, `gateway.rs`, `api.rs`, ...) take
//! a `&mut Checker` and import nothing from each other or from `validate.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{Balance, BreakerConfig, Trip};
use crate::raw::RawBreaker;
use crate::source::{ConfigError, KeyPath, Source};

/// Collects the problems found in one file, with the file and its directory at hand.
pub(crate) struct Checker<'a> {
    source: &'a Source,
    base: PathBuf,
    errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    /// A checker for `source`, resolving relative paths against the directory that holds it.
    pub(crate) fn new(source: &'a Source) -> Self {
        let base = source
            .path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base).unwrap_or(base);
        Checker {
            source,
            base,
            errors: Vec::new(),
        }
    }

    /// The absolute directory of the config file.
    pub(crate) fn base(&self) -> &Path {
        &self.base
    }

    /// How many problems were found so far (a section compares counts to tell whether one of
    /// its entries was clean).
    pub(crate) fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// Every problem found, if there was one.
    pub(crate) fn finish(self) -> Result<(), Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }

    /// The file being checked.
    pub(crate) fn source(&self) -> &Source {
        self.source
    }

    /// Records a problem at `path`.
    pub(crate) fn err(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.errors.push(self.source.error(path, message));
    }

    /// A duration such as `"500ms"`, or `default` when unset (or, after an error, wrong).
    pub(crate) fn duration(
        &mut self,
        path: &KeyPath,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(text) => match crate::duration::parse(text) {
                Ok(d) => d,
                Err(e) => {
                    self.err(
                        path,
                        format!("not a duration: {text:?} ({e}); write e.g. \"500ms\" or \"5s\""),
                    );
                    default
                }
            },
        }
    }

    /// A `balance` value: `round_robin` (default), `least_request` or `p2c_ewma`.
    pub(crate) fn balance(&mut self, path: &KeyPath, value: Option<&str>) -> Balance {
        match value {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_request") => Balance::LeastRequest,
            Some("p2c_ewma") => Balance::P2cEwma,
            Some(other) => {
                self.err(
                    path,
                    format!(
                        "unknown balancing {other:?}: use \"round_robin\", \"least_request\" or \"p2c_ewma\""
                    ),
                );
                Balance::RoundRobin
            }
        }
    }

    /// A file path relative to the config file's directory, which must exist.
    pub(crate) fn file(&mut self, path: &KeyPath, name: &str) -> PathBuf {
        let p = self.base.join(name);
        if !p.is_file() {
            self.err(path, format!("no such file: {}", p.display()));
        }
        p
    }

    /// A directory named relative to the config file; it must exist.
    pub(crate) fn directory(&mut self, path: &KeyPath, name: &str) -> Option<PathBuf> {
        let p = self.base.join(name);
        if p.is_dir() {
            Some(p)
        } else {
            self.err(path, format!("no such directory: {}", p.display()));
            None
        }
    }

    /// An `IP:PORT` address.
    pub(crate) fn address(&mut self, path: &KeyPath, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(
                    path,
                    format!("not an address: {text:?}; write IP:PORT, e.g. \"127.0.0.1:8000\""),
                );
                None
            }
        }
    }

    /// A per-endpoint breaker table (`breaker = { ... }` on an upstream or a service).
    pub(crate) fn breaker(&mut self, at: &KeyPath, raw: Option<&RawBreaker>) -> BreakerConfig {
        let d = BreakerConfig::default();
        let Some(raw) = raw else {
            return d;
        };
        let trip = match raw.trip.as_deref().map(Trip::parse) {
            None => d.trip.clone(),
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                self.err(&at.key("trip"), e.to_string());
                d.trip.clone()
            }
        };
        let max_requests = raw.max_requests.unwrap_or(d.max_requests);
        if max_requests == 0 {
            self.err(&at.key("maxRequests"), "must be at least 1");
        }
        BreakerConfig {
            trip,
            timeout: self.duration(&at.key("timeout"), raw.timeout.as_deref(), d.timeout),
            interval: self.duration(&at.key("interval"), raw.interval.as_deref(), d.interval),
            max_requests: max_requests.max(1),
        }
    }
}

/// A `name:port` endpoint: a DNS name (letters, digits, `-` and `.`, lower-cased) and a port.
pub(crate) fn host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.');
    Some((host.to_ascii_lowercase(), port.parse::<u16>().ok()?)).filter(|_| valid_host)
}
