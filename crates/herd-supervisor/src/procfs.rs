//! What herd reads about its instances from `/proc`: memory, CPU time, whether an instance
//! is accepting on the shared socket, and whether a process of its group still runs.
//!
//! These are small reads of in-memory kernel files, cheap enough to do from the slot actor on
//! its one-second tick without a blocking-thread hop.
//!
//! Accept detection is how `ready.mode = "listen"` works on a shared socket, where connecting
//! to the address tells nothing about one particular instance. An event-loop server (Node,
//! tokio, asyncio, Go) registers the socket in an epoll set, which `/proc/<pid>/fdinfo` lists
//! with the target's inode; a blocking server parks a thread in `accept`, which `wchan` shows.

use std::fs;

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// User plus system CPU time of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // Fields 14 and 15 of stat are the 12th and 13th after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second, for converting [`cpu_ticks`].
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// Whether a process other than a zombie is in process group `pgid`. A zombie is left out: an
/// orphan's zombie waits for whoever adopted it (herd itself when it runs as pid 1) and runs
/// nothing. Reads every process's `stat`, so it is for the rare group that outlived its first
/// process.
pub fn group_runs(pgid: u32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| state_and_group(&stat))
        .any(|(state, group)| group == pgid && state != 'Z')
}

/// The state letter and process group of a `/proc/<pid>/stat` text.
fn state_and_group(stat: &str) -> Option<(char, u32)> {
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Then the parent's pid, then the process group.
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}

/// Whether `pid` is accepting connections on the socket with inode `socket_inode`.
pub fn is_accepting(pid: u32, socket_inode: u64) -> bool {
    epoll_watches(pid, socket_inode) || blocked_in_accept(pid)
}

fn epoll_watches(pid: u32, socket_inode: u64) -> bool {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    for entry in entries.flatten() {
        let is_epoll = fs::read_link(entry.path())
            .map(|target| target.as_os_str() == "anon_inode:[eventpoll]")
            .unwrap_or(false);
        if !is_epoll {
            continue;
        }
        let fdinfo = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        if let Ok(info) = fs::read_to_string(fdinfo)
            && fdinfo_watches(&info, socket_inode)
        {
            return true;
        }
    }
    false
}

/// Whether an epoll fdinfo text has a `tfd:` line whose target inode is `inode`.
fn fdinfo_watches(info: &str, inode: u64) -> bool {
    info.lines()
        .filter(|l| l.starts_with("tfd:"))
        .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("ino:")))
        .any(|hex| u64::from_str_radix(hex, 16) == Ok(inode))
}

fn blocked_in_accept(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks
        .flatten()
        .any(|t| fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w.contains("accept")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_cpu() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 1024 * 1024);
        assert!(cpu_ticks(me).is_some());
        assert!(rss_bytes(u32::MAX).is_none());
    }

    #[test]
    fn parses_state_and_group_from_stat() {
        let stat = "4242 (a (b) c) S 1 4240 4240 0 -1 4194560 105 0 0 0 0 0 0 0 20 0 1 0";
        assert_eq!(state_and_group(stat), Some(('S', 4240)));
        assert_eq!(state_and_group("7 (x) Z 1 7 7"), Some(('Z', 7)));
        assert_eq!(state_and_group("7 (x)"), None);
    }

    #[test]
    fn sees_a_group_run_until_its_processes_are_killed() {
        use std::os::unix::process::CommandExt;
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = shell.id();
        assert!(group_runs(pgid));
        let group = nix::unistd::Pid::from_raw(pgid as i32);
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
        // The shell stays a zombie until waited for, and a zombie runs nothing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while group_runs(pgid) {
            assert!(
                std::time::Instant::now() < deadline,
                "group {pgid} still runs"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        shell.wait().unwrap();
    }

    #[test]
    fn parses_epoll_fdinfo() {
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n\
                    tfd:        7 events:       19 data:                7  pos:0 ino:2f1a sdev:8\n\
                    tfd:        3 events:       19 data:                3  pos:0 ino:1a5 sdev:8\n";
        assert!(fdinfo_watches(info, 0x1a5));
        assert!(fdinfo_watches(info, 0x2f1a));
        assert!(!fdinfo_watches(info, 0x1057));
    }

    #[test]
    fn sees_an_epoll_registration_of_a_listener() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std_listener.as_raw_fd();
        let inode = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
        let me = std::process::id();
        let before = epoll_watches(me, inode);
        std_listener.set_nonblocking(true).unwrap();
        let _guard = rt.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
        assert!(!before, "not registered before tokio took it");
        assert!(epoll_watches(me, inode), "registered once tokio owns it");
        drop(listener);
    }
}
