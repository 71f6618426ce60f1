//! Starting one instance: the systemd socket-activation hand-off done right.
//!
//! The protocol wants the shared socket at fd 3, `LISTEN_FDS=1`, `LISTEN_FDNAMES`, and
//! `LISTEN_PID` set to the *child's* pid, which exists only after `fork`. `std::process::Command`
//! builds the environment before forking and offers no hook to edit it afterwards, so herd does
//! the final step itself: everything (program path, argv, envp, a fixed buffer for
//! `LISTEN_PID=…`) is allocated before the fork, and the `pre_exec` hook, running in the child,
//! only writes digits into that buffer, moves fds into place and calls `execve`. No allocation
//! happens between fork and exec, which is what makes this safe in a multi-threaded parent.
//!
//! The same hook sets `PR_SET_PDEATHSIG` so an instance dies with herd even on SIGKILL, and
//! checks the parent is still herd to close the race where herd died before the `prctl`. The
//! signal fires when the *thread* that forked exits, so spawns happen on the runtime's worker
//! threads (slot actors), which live as long as herd, and never from `spawn_blocking`.
//! Instances run in their own process group so signals reach their children too.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::process::Stdio;

use herd_config::ServiceSpec;

/// The fd the shared listening socket gets in an instance (systemd's `SD_LISTEN_FDS_START`).
pub const LISTEN_FD: RawFd = 3;
/// The fd of the readiness pipe in `notify` mode, right after the listen fds.
pub const READY_FD: RawFd = 4;
/// Length of the `LISTEN_PID=` buffer: the prefix, up to 20 digits and a NUL.
const PID_BUF: usize = 40;

/// What a new instance gets besides its service's spec.
pub struct Launch<'a> {
    /// The service.
    pub spec: &'a ServiceSpec,
    /// The slot (worker id), exported as `HERD_INSTANCE`.
    pub slot: usize,
    /// The shared listening socket, if the service has one.
    pub listener: Option<&'a OwnedFd>,
    /// The port of the shared socket, exported as `PORT`.
    pub port: Option<u16>,
    /// The write end of the readiness pipe, in `notify` mode.
    pub ready_pipe: Option<OwnedFd>,
    /// Variables herd adds (the sidecar API's), after the service's own.
    pub extra_env: &'a [(String, String)],
}

/// Everything the child needs, prepared before the fork.
struct ChildExec {
    program: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    pid_buf: Box<[u8; PID_BUF]>,
    fills_pid: bool,
    fds: Vec<(RawFd, RawFd)>,
    parent: libc::pid_t,
}

// SAFETY: the raw pointers point into the CStrings and the boxed buffer owned by the same
// struct; they are only dereferenced by `execve` in the forked child.
unsafe impl Send for ChildExec {}
// SAFETY: as above; the parent never reads or writes through the pointers.
unsafe impl Sync for ChildExec {}

impl ChildExec {
    /// Runs in the child between fork and exec: async-signal-safe calls only, no allocation.
    fn exec(&mut self) -> io::Result<()> {
        // SAFETY: plain syscalls on values prepared before the fork.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != self.parent {
                libc::_exit(1);
            }
            for &(src, dst) in &self.fds {
                if libc::dup2(src, dst) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        if self.fills_pid {
            // SAFETY: getpid is async-signal-safe.
            let pid = unsafe { libc::getpid() };
            write_pid_var(&mut self.pid_buf, pid);
        }
        // SAFETY: all pointers are valid NUL-terminated strings and NULL-terminated arrays.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.env_ptrs.as_ptr(),
            );
        }
        Err(io::Error::last_os_error())
    }
}

/// Writes `LISTEN_PID=<pid>\0` into `buf` without allocating.
fn write_pid_var(buf: &mut [u8; PID_BUF], pid: libc::pid_t) {
    const PREFIX: &[u8] = b"LISTEN_PID=";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 20];
    let mut n = pid.unsigned_abs() as u64;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
}

fn cstring(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

/// Variables herd owns in an instance's environment; inherited values are dropped.
const OWNED_VARS: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "HERD_READY_FD",
    "HERD_SERVICE",
    "HERD_INSTANCE",
    "PORT",
    "APP_PORT",
];

/// The environment of an instance, `LISTEN_PID` excluded (it is filled in the child).
pub fn environment(launch: &Launch<'_>) -> Vec<(OsString, OsString)> {
    let spec = launch.spec;
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            !OWNED_VARS.iter().any(|o| k == *o)
                && !spec.env.contains_key(&*k)
                && !launch.extra_env.iter().any(|(e, _)| *e == k)
        })
        .collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
    env.extend(
        launch
            .extra_env
            .iter()
            .filter(|(k, _)| !spec.env.contains_key(k))
            .map(|(k, v)| (k.into(), v.into())),
    );
    env.push(("HERD_SERVICE".into(), spec.name.clone().into()));
    env.push(("HERD_INSTANCE".into(), launch.slot.to_string().into()));
    if let Some(port) = launch.port {
        env.push(("PORT".into(), port.to_string().into()));
        // Dapr's name for the port the app serves on.
        env.push(("APP_PORT".into(), port.to_string().into()));
    }
    if launch.listener.is_some() {
        env.push(("LISTEN_FDS".into(), "1".into()));
        env.push(("LISTEN_FDNAMES".into(), spec.name.clone().into()));
    }
    if launch.ready_pipe.is_some() {
        env.push(("HERD_READY_FD".into(), READY_FD.to_string().into()));
    }
    env
}

/// Forks and execs one instance with piped stdout/stderr, in its own process group.
pub fn spawn(launch: Launch<'_>) -> io::Result<tokio::process::Child> {
    let spec = launch.spec;
    let argv: Vec<CString> = spec
        .command
        .iter()
        .map(|a| cstring(a.clone().into_bytes()))
        .collect::<io::Result<_>>()?;
    let mut env: Vec<CString> = environment(&launch)
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstring(kv)
        })
        .collect::<io::Result<_>>()?;
    let pid_buf = Box::new([0u8; PID_BUF]);
    let fills_pid = launch.listener.is_some();

    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter_mut().map(|e| e.as_ptr()).collect();
    if fills_pid {
        env_ptrs.push(pid_buf.as_ptr().cast());
    }
    env_ptrs.push(std::ptr::null());

    let mut fds = Vec::new();
    if let Some(l) = launch.listener {
        fds.push((l.as_raw_fd(), LISTEN_FD));
    }
    if let Some(p) = &launch.ready_pipe {
        fds.push((p.as_raw_fd(), READY_FD));
    }
    for &(src, _) in &fds {
        // dup2 onto 3 and 4 in order must not clobber a source; sources are duplicated above
        // the target range by `high_fd` before they get here.
        debug_assert!(src > READY_FD, "fd {src} must be above the target range");
    }

    let mut exec = ChildExec {
        program: argv[0].clone(),
        _argv: argv,
        argv_ptrs,
        _env: env,
        env_ptrs,
        pid_buf,
        fills_pid,
        fds,
        parent: std::process::id() as libc::pid_t,
    };

    let mut cmd = tokio::process::Command::new(&spec.command[0]);
    cmd.current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: `ChildExec::exec` only makes async-signal-safe calls and does not allocate.
    unsafe {
        cmd.pre_exec(move || exec.exec());
    }
    let child = cmd.spawn();
    drop(launch.ready_pipe);
    child
}

/// Duplicates `fd` to a descriptor above the range instances receive (3, 4), close-on-exec.
pub fn high_fd(fd: &OwnedFd) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we take ownership of.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh, open descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_var_is_written_without_allocation() {
        let mut buf = [0xffu8; PID_BUF];
        write_pid_var(&mut buf, 4_194_304);
        let end = buf.iter().position(|&b| b == 0).unwrap();
        assert_eq!(&buf[..end], b"LISTEN_PID=4194304");
        write_pid_var(&mut buf, 7);
        let end = buf.iter().position(|&b| b == 0).unwrap();
        assert_eq!(&buf[..end], b"LISTEN_PID=7");
    }
}
