//! `herd startup`: a systemd unit that runs `herd up` for this config at boot, printed, or
//! written to the unit directory with `--install` (as root). herd runs in the foreground under
//! systemd, which restarts it if it fails; `systemctl reload` is `herd reload all`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// Where `--install` writes the unit unless told otherwise.
pub const SYSTEM_UNITS: &str = "/etc/systemd/system";

/// Prints the unit, or writes it as `<dir>/<name>.service` when `install` is set.
pub fn run(config: &Path, name: &str, install: bool, dir: &Path) -> anyhow::Result<ExitCode> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        bail!("{name:?} is not a unit name (letters, digits, -, _, . and @)");
    }
    let config = std::path::absolute(config).context("resolving the config path")?;
    if !config.is_file() {
        bail!("no config file at {}", config.display());
    }
    let exe = std::env::current_exe().context("finding the herd binary")?;
    let user = run_as();
    let text = unit(&exe, &config, user.as_deref());
    if !install {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if dir == Path::new(SYSTEM_UNITS) && uid() != Some(0) {
        bail!("installing into {SYSTEM_UNITS} needs root: sudo herd startup --install");
    }
    let path = dir.join(format!("{name}.service"));
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    println!("enable and start it with: systemctl daemon-reload && systemctl enable --now {name}");
    Ok(ExitCode::SUCCESS)
}

/// The user the unit runs herd as: the one who ran `sudo`, else the current one unless root
/// (no `User=` line: root).
fn run_as() -> Option<String> {
    if let Ok(user) = std::env::var("SUDO_USER")
        && !user.is_empty()
        && user != "root"
    {
        return Some(user);
    }
    let uid = uid()?;
    if uid == 0 {
        return None;
    }
    // The name of that uid in /etc/passwd, else `$USER`.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
        .or_else(|| std::env::var("USER").ok())
}

/// This process's effective uid (the owner of its `/proc` entry).
fn uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The unit text.
fn unit(exe: &Path, config: &Path, user: Option<&str>) -> String {
    let dir: PathBuf = config.parent().map(Path::to_path_buf).unwrap_or_default();
    let quote = |p: &Path| {
        let s = p.display().to_string();
        if s.contains(char::is_whitespace) {
            format!("{s:?}")
        } else {
            s
        }
    };
    let (exe, cfg) = (quote(exe), quote(config));
    let mut text = format!(
        "[Unit]\n\
         Description=herd services of {config}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         WorkingDirectory={dir}\n\
         ExecStart={exe} -c {cfg} up\n\
         ExecReload={exe} -c {cfg} reload all\n\
         ExecStop={exe} -c {cfg} down\n\
         KillMode=mixed\n\
         TimeoutStopSec=60\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         LimitNOFILE=65536\n",
        config = config.display(),
        dir = quote(&dir),
    );
    if let Some(user) = user {
        text.push_str(&format!("User={user}\n"));
    }
    text.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_herd_up_on_this_config() {
        let text = unit(
            Path::new("/usr/local/bin/herd"),
            Path::new("/srv/app/herd.toml"),
            Some("app"),
        );
        assert!(text.contains("\nExecStart=/usr/local/bin/herd -c /srv/app/herd.toml up\n"));
        assert!(
            text.contains("\nExecReload=/usr/local/bin/herd -c /srv/app/herd.toml reload all\n")
        );
        assert!(text.contains("\nWorkingDirectory=/srv/app\n"));
        assert!(text.contains("\nUser=app\n"));
        assert!(text.ends_with("[Install]\nWantedBy=multi-user.target\n"));
        let root = unit(Path::new("/h"), Path::new("/my dir/herd.toml"), None);
        assert!(!root.contains("User="));
        assert!(
            root.contains("ExecStart=/h -c \"/my dir/herd.toml\" up"),
            "{root}"
        );
    }
}
