//! Tiny helpers for driving the real `herd` binary: a herd in a temp dir, its CLI, polling with
//! deadlines, and a minimal blocking HTTP/1.1 client (keep-alive aware) for load.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `herd` binary under test.
pub fn herd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herd"))
}

/// The `hello` example binary, built on first use beside `herd`.
pub fn hello_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let path = herd_bin().with_file_name("hello");
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "hello"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p hello");
        assert!(status.success(), "building the hello example failed");
    });
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// Polls `f` until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Whether `node` runs here (tests of Node.js apps report themselves skipped otherwise).
pub fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A herd running `herd up` on a config in its own temp dir; killed when dropped.
pub struct Herd {
    /// The temp dir holding herd.toml and the data dir.
    pub dir: tempfile::TempDir,
    /// herd's process.
    pub child: Option<Child>,
    /// Extra environment for `herd up`.
    pub env: Vec<(String, String)>,
}

impl Herd {
    /// A temp dir with `config` written as herd.toml; `{hello}` is replaced by the hello binary.
    pub fn prepare(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = config.replace("{hello}", &hello_bin().to_string_lossy());
        std::fs::write(dir.path().join("herd.toml"), text).expect("write config");
        Herd {
            dir,
            child: None,
            env: Vec::new(),
        }
    }

    /// Writes `config` (placeholders as in [`Herd::prepare`]) and starts herd on it, waiting until
    /// every instance is ready.
    pub fn start(config: &str) -> Self {
        let mut h = Self::prepare(config);
        h.spawn();
        h.wait_all_ready();
        h
    }

    /// Replaces the config file (for reloads).
    pub fn rewrite(&self, config: &str) {
        let text = config.replace("{hello}", &hello_bin().to_string_lossy());
        std::fs::write(self.config(), text).expect("write config");
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("herd.toml")
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join(".herd")
    }

    /// Starts `herd up` without waiting.
    pub fn spawn(&mut self) {
        let out = std::fs::File::create(self.dir.path().join("stdout.log")).unwrap();
        let err = std::fs::File::create(self.dir.path().join("stderr.log")).unwrap();
        let child = Command::new(herd_bin())
            .arg("-c")
            .arg(self.config())
            .arg("up")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn herd");
        self.child = Some(child);
        wait_for("the control socket", Duration::from_secs(20), || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("herd exited during start-up ({status}):\n{}", self.stderr());
            }
            self.try_status()
        });
    }

    /// Runs a CLI verb against this herd.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(herd_bin())
            .arg("-c")
            .arg(self.config())
            .args(args)
            .output()
            .expect("run herd cli")
    }

    /// `herd ls --json`, or `None` when herd does not answer.
    pub fn try_status(&self) -> Option<Vec<Value>> {
        let out = self.cli(&["ls", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice::<Vec<Value>>(&out.stdout).ok()
    }

    /// `herd ls --json`.
    pub fn status(&self) -> Vec<Value> {
        self.try_status().expect("herd answers ls")
    }

    /// The instances of `service` as JSON objects.
    pub fn instances(&self, service: &str) -> Vec<Value> {
        self.status()
            .into_iter()
            .find(|s| s["name"] == service)
            .map(|s| s["instances"].as_array().unwrap().clone())
            .unwrap_or_else(|| panic!("no service {service}"))
    }

    /// Pids of the instances of `service` that have one.
    pub fn pids(&self, service: &str) -> Vec<u32> {
        self.instances(service)
            .iter()
            .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
            .collect()
    }

    /// Waits until every instance of every service is ready.
    pub fn wait_all_ready(&self) {
        wait_for("all instances ready", Duration::from_secs(20), || {
            let s = self.try_status()?;
            s.iter()
                .all(|svc| {
                    svc["instances"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|i| i["state"] == "ready")
                })
                .then_some(())
        });
    }

    /// The bound address of `service`.
    pub fn addr(&self, service: &str) -> SocketAddr {
        let s = self.status();
        let svc = s.iter().find(|s| s["name"] == service).expect("service");
        svc["listen"].as_str().unwrap().parse().unwrap()
    }

    /// The output of `herd logs` (recent lines) as text.
    pub fn logs(&self, service: &str) -> String {
        let out = self.cli(&["logs", service, "-n", "2000"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What herd wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Sends `signal` to herd.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().expect("running").id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
    }

    /// Waits for herd to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        wait_for("herd to exit", limit, || child.try_wait().unwrap())
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A response: status code, headers (lower-cased names) and body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A blocking HTTP/1.1 client on one keep-alive connection, reconnecting when the server closes.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    read_timeout: Duration,
}

impl Client {
    /// A client for `addr`; connects lazily. Waits up to 10 s for an answer.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: None,
            read_timeout: Duration::from_secs(10),
        }
    }

    /// The same client waiting up to `limit` for an answer.
    pub fn read_timeout(mut self, limit: Duration) -> Self {
        self.read_timeout = limit;
        self
    }

    /// `GET path` with extra `headers`.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
        self.request("GET", path, headers, b"")
    }

    /// `method path` with extra `headers` and `body` (sent with a Content-Length when not
    /// empty or when the method carries one).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(self.read_timeout))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let result = self.exchange(method, path, headers, body);
        match &result {
            Ok(r) if r.header("connection") != Some("close") => {}
            _ => self.conn = None,
        }
        result
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let conn = self.conn.as_mut().expect("connected");
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !body.is_empty() || matches!(method, "POST" | "PUT") {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: {}\r\n", self.addr));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        conn.get_mut().write_all(&bytes)?;
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        conn.read_exact(&mut body)?;
        Ok(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// One `GET` on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    Client::new(addr).get(path, &[("Connection", "close")])
}

/// The worker ids seen by `threads` concurrent clients making `each` requests on fresh
/// connections.
pub fn workers_seen(addr: SocketAddr, threads: usize, each: usize) -> BTreeSet<u64> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    (0..each)
                        .map(|_| get(addr, "/").unwrap().json()["worker"].as_u64().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// A free loopback port, below the kernel's ephemeral range (32768 and up on Linux), so that no
/// port the kernel hands out in the meantime — an instance's `port = "auto"`, a private socket,
/// a service's gRPC port, the source port of any connection — can take it before herd binds it.
/// Each call tries the next port of this process's own stretch (spread by process id) and
/// returns the first one that binds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(1_009) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left below the ephemeral range");
        let port = (FIRST + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Hello processes run outside herd, each on a port of its own; killed when dropped.
pub struct Backends {
    /// Their ports, in order.
    pub ports: Vec<u16>,
    ids: Vec<usize>,
    delay_ms: u64,
    children: Vec<Option<Child>>,
}

impl Backends {
    /// `n` backends answering as workers 0..n after `delay_ms`.
    pub fn start(n: usize, delay_ms: u64) -> Self {
        Self::with_ids((0..n).collect(), delay_ms)
    }

    /// One backend answering as worker `id`.
    pub fn start_as(id: usize, delay_ms: u64) -> Self {
        Self::with_ids(vec![id], delay_ms)
    }

    fn with_ids(ids: Vec<usize>, delay_ms: u64) -> Self {
        let ports = ids.iter().map(|_| free_port()).collect();
        let mut b = Self {
            ports,
            children: ids.iter().map(|_| None).collect(),
            ids,
            delay_ms,
        };
        (0..b.ids.len()).for_each(|i| b.restart(i));
        b
    }

    /// Starts backend `i` (again) on its port and waits until it answers.
    pub fn restart(&mut self, i: usize) {
        let child = Command::new(hello_bin())
            .env("PORT", self.ports[i].to_string())
            .env("HERD_INSTANCE", self.ids[i].to_string())
            .env("HELLO_DELAY_MS", self.delay_ms.to_string())
            .env_remove("LISTEN_FDS")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.ports[i]));
        wait_for("a backend to answer", Duration::from_secs(10), || {
            get(addr, "/healthz").ok()
        });
    }

    /// Kills backend `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pid of backend `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].as_ref().expect("running").id()
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        (0..self.children.len()).for_each(|i| self.kill(i));
    }
}
