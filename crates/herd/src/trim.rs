//! Giving back the pages of code that only start-up ran, once herd is up.
//!
//! herd's executable and its shared libraries are mapped from their files. The kernel maps a
//! page of them when code first touches it, and with it up to 64 KB of neighbours already in the
//! page cache (`fault_around_bytes`). By the time every instance is ready, start-up (argument and
//! config parsing, validation, binding, the first spawns) has left several megabytes of code and
//! read-only data mapped that a running herd does not touch again; they count in its resident set
//! until memory pressure makes the kernel take them back.
//!
//! [`release`] takes them back at once: every read-only mapping of the executable or a shared
//! library that holds file contents only is unmapped with `madvise(MADV_DONTNEED)`. The page
//! cache keeps the pages, and whatever herd runs from then on is mapped again by a minor fault on
//! first use, so the resident set becomes what herd actually uses. A mapping with any anonymous
//! page (a page written after mapping, such as relocated read-only data) is left alone: dropping
//! it would lose those writes.

use std::ffi::c_void;

/// A range of the address space, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: usize,
    end: usize,
}

/// The mappings of `smaps` (the text of `/proc/self/smaps`) that can be dropped: not writable,
/// backed by `exe` or a shared library, resident, and with no anonymous page. Returns each with
/// its resident size in kB.
fn droppable(smaps: &str, exe: &str) -> Vec<(Range, u64)> {
    let mut found = Vec::new();
    // The mapping being read, while its fields follow: its range, whether it qualifies so far,
    // its resident kB and its anonymous kB (`None` until seen).
    let mut current: Option<(Range, bool, u64, Option<u64>)> = None;
    let finish = |c: Option<(Range, bool, u64, Option<u64>)>, found: &mut Vec<_>| {
        if let Some((range, true, rss, Some(0))) = c
            && rss > 0
        {
            found.push((range, rss));
        }
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            finish(current.take(), &mut found);
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("");
            let library = path.starts_with('/') && (path.ends_with(".so") || path.contains(".so."));
            let eligible = perms.starts_with('r')
                && perms.as_bytes().get(1) == Some(&b'-')
                && (path == exe || library);
            current = Some((Range { start, end }, eligible, 0, None));
            continue;
        }
        let Some((_, eligible, rss, anonymous)) = current.as_mut() else {
            continue;
        };
        if !*eligible {
            continue;
        }
        let kb = words.next().and_then(|w| w.parse::<u64>().ok());
        match first {
            "Rss:" => *rss = kb.unwrap_or(0),
            "Anonymous:" => *anonymous = kb,
            _ => {}
        }
    }
    finish(current, &mut found);
    found
}

/// Unmaps the resident file-only pages of herd's code and read-only data (see the module
/// docs); returns the kB that were resident in them.
pub fn release() -> u64 {
    let (Ok(smaps), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/smaps"),
        std::fs::read_link("/proc/self/exe"),
    ) else {
        return 0;
    };
    let mut released = 0;
    for (range, kb) in droppable(&smaps, &exe.to_string_lossy()) {
        // SAFETY: the range is a whole mapping of this process, read-only and holding only
        // file contents (no anonymous page), so unmapping its pages loses nothing: any later
        // access maps the same file contents again. No Rust reference is invalidated, since the
        // contents read back are the same bytes.
        let rc = unsafe {
            libc::madvise(
                range.start as *mut c_void,
                range.end - range.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            released += kb;
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5600a000-5600b000 r--p 00000000 fd:01 42 /usr/bin/herd
Size:                  4 kB
Rss:                   4 kB
Anonymous:             0 kB
5600b000-5600f000 r-xp 00001000 fd:01 42 /usr/bin/herd
Rss:                  16 kB
Anonymous:             0 kB
5600f000-56010000 r--p 00005000 fd:01 42 /usr/bin/herd
Rss:                   4 kB
Anonymous:             4 kB
56010000-56011000 rw-p 00006000 fd:01 42 /usr/bin/herd
Rss:                   4 kB
Anonymous:             0 kB
7f000000-7f001000 r-xp 00000000 fd:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                   4 kB
Anonymous:             0 kB
7f001000-7f002000 r--p 00000000 fd:01 9 /var/lib/herd/data.db
Rss:                   4 kB
Anonymous:             0 kB
7f002000-7f003000 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7f003000-7f004000 r-xp 00000000 fd:01 8 /usr/lib/libgcc_s.so.1
Rss:                   0 kB
Anonymous:             0 kB
7f004000-7f005000 r-xp 00000000 fd:01 8 /usr/lib/libz.so
Rss:                   8 kB
";

    #[test]
    fn only_read_only_file_pages_of_code_are_dropped() {
        let found = droppable(SMAPS, "/usr/bin/herd");
        let range = |start, end| Range { start, end };
        assert_eq!(
            found,
            vec![
                (range(0x5600a000, 0x5600b000), 4),
                (range(0x5600b000, 0x5600f000), 16),
                (range(0x7f000000, 0x7f001000), 4),
            ],
            // Left: relocated read-only data (anonymous pages), writable data, a data file, the
            // vdso, a mapping with nothing resident, and one whose anonymous size is not known.
        );
    }

    #[test]
    fn releasing_keeps_the_process_running() {
        let before = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(
            !droppable(&before, &exe.to_string_lossy()).is_empty(),
            "a running test binary has resident code"
        );
        release();
        // Code and data read after the release are there and unchanged.
        let text = format!("{:?}", std::hint::black_box(vec![1u32, 2, 3]));
        assert_eq!(text, "[1, 2, 3]");
        let parsed: serde_json::Value = serde_json::from_str(r#"{"a":[1,2]}"#).unwrap();
        assert_eq!(parsed["a"][1], 2);
    }
}
