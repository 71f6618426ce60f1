//! Command-line options of `loadgen run` and `loadgen serve` (`--name value` pairs).

use std::time::Duration;

/// What `loadgen run` sends, how fast and for how long.
pub struct RunArgs {
    /// `http://host:port/path?query`.
    pub url: String,
    /// Requests per second over all connections.
    pub rate: f64,
    /// Length of the measured run (after the warm-up).
    pub duration: Duration,
    /// Time run at the same rate before measuring starts.
    pub warmup: Duration,
    /// Keep-alive connections, each with its own share of the schedule.
    pub conns: usize,
    /// HTTP method.
    pub method: String,
    /// The request body (empty: none).
    pub body: Vec<u8>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// The status an answer must have to count as good (default: any 2xx).
    pub expect: Option<u16>,
    /// Printed in the result line.
    pub label: String,
    /// A header given a value unique to each request: `name` and a prefix, the value being the
    /// prefix followed by the request's number in the schedule (`Idempotency-Key: run1-17`).
    pub unique_header: Option<(String, String)>,
    /// Where each request's outcome goes (warm-up included), one line each: its number and its status
    /// (or `error`), so a script can check what the server did with every answered request.
    pub record: Option<std::path::PathBuf>,
}

/// Where `loadgen serve` listens when no socket is handed over on fd 3.
pub struct ServeArgs {
    /// Port on 127.0.0.1 (default `$PORT`, else 3000).
    pub port: u16,
}

type Error = Box<dyn std::error::Error>;

fn pairs(argv: &[String]) -> Result<Vec<(&str, &str)>, Error> {
    let mut out = Vec::new();
    let mut it = argv.iter();
    while let Some(name) = it.next() {
        let key = name
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument `{name}`"))?;
        let value = it.next().ok_or_else(|| format!("{name} needs a value"))?;
        out.push((key, value.as_str()));
    }
    Ok(out)
}

fn seconds(key: &str, v: &str) -> Result<Duration, Error> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("--{key}: `{v}` is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err(format!("--{key}: {v} is out of range").into());
    }
    Ok(Duration::from_secs_f64(s))
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, Error> {
    v.parse()
        .map_err(|_| format!("--{key}: `{v}` is not a valid number").into())
}

impl RunArgs {
    /// Reads `loadgen run`'s options.
    pub fn parse(argv: &[String]) -> Result<Self, Error> {
        let mut a = RunArgs {
            url: String::new(),
            rate: 0.0,
            duration: Duration::ZERO,
            warmup: Duration::ZERO,
            conns: 16,
            method: "GET".into(),
            body: Vec::new(),
            headers: Vec::new(),
            expect: None,
            label: "run".into(),
            unique_header: None,
            record: None,
        };
        for (key, v) in pairs(argv)? {
            match key {
                "url" => a.url = v.to_string(),
                "rate" => a.rate = number(key, v)?,
                "duration" => a.duration = seconds(key, v)?,
                "warmup" => a.warmup = seconds(key, v)?,
                "conns" => a.conns = number(key, v)?,
                "method" => a.method = v.to_string(),
                "body-bytes" => a.body = json_body(number(key, v)?),
                "body-file" => {
                    a.body = std::fs::read(v).map_err(|e| format!("--body-file {v}: {e}"))?
                }
                "header" => {
                    let (n, val) = v
                        .split_once(':')
                        .ok_or_else(|| format!("--header `{v}`: expected `name: value`"))?;
                    a.headers
                        .push((n.trim().to_string(), val.trim().to_string()));
                }
                "expect" => a.expect = Some(number(key, v)?),
                "unique-header" => {
                    let (n, prefix) = v
                        .split_once(':')
                        .ok_or_else(|| format!("--unique-header `{v}`: expected `name: prefix`"))?;
                    a.unique_header = Some((n.trim().to_string(), prefix.trim().to_string()));
                }
                "record" => a.record = Some(v.into()),
                "label" => a.label = v.to_string(),
                _ => return Err(format!("unknown option --{key}").into()),
            }
        }
        if a.url.is_empty() || a.rate <= 0.0 || a.duration.is_zero() || a.conns == 0 {
            return Err("run needs --url, --rate > 0, --duration > 0 and --conns > 0".into());
        }
        Ok(a)
    }
}

/// A JSON object of exactly `n` bytes (at least 12): `{"pad":"xxx…"}`.
pub fn json_body(n: usize) -> Vec<u8> {
    let fill = n.saturating_sub(10).max(2);
    format!("{{\"pad\":\"{}\"}}", "x".repeat(fill)).into_bytes()
}

impl ServeArgs {
    /// Reads `loadgen serve`'s options.
    pub fn parse(argv: &[String]) -> Result<Self, Error> {
        let mut port = std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(3000);
        for (key, v) in pairs(argv)? {
            match key {
                "port" => port = number(key, v)?,
                _ => return Err(format!("unknown option --{key}").into()),
            }
        }
        Ok(ServeArgs { port })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_body_has_the_asked_length() {
        for n in [12, 100, 1024] {
            let b = super::json_body(n);
            assert_eq!(b.len(), n);
            assert!(b.starts_with(b"{\"pad\":\"") && b.ends_with(b"\"}"));
        }
    }
}
