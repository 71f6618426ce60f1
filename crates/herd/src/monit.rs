//! `herd monit`: the dashboard's overview in the terminal, redrawn every second until `q`,
//! Esc or Ctrl-C. It asks the running herd over the control socket, so it needs no admin
//! listener. When stdout is not a terminal, or with `--once`, it prints one snapshot and ends.

mod text;

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, terminal};
use tokio::sync::mpsc;

use crate::control::client;

/// How often the screen is redrawn.
const REFRESH: Duration = Duration::from_secs(1);

/// Runs `herd monit` against the herd on `data_dir`.
pub async fn run(data_dir: &Path, once: bool) -> anyhow::Result<ExitCode> {
    if once || !std::io::stdout().is_terminal() {
        let overview = client::overview(data_dir).await?;
        let mut stdout = std::io::stdout();
        return match stdout.write_all(text::render(&overview).as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
            other => other.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        };
    }
    // Fail before taking over the terminal when no herd answers.
    client::overview(data_dir).await?;
    let _screen = Screen::enter()?;
    let mut quit = keys();
    loop {
        let page = match client::overview(data_dir).await {
            Ok(o) => text::render(&o),
            Err(e) => format!("herd monit: {e:#}\n\nretrying every second; q quits\n"),
        };
        draw(&page)?;
        tokio::select! {
            _ = quit.recv() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// The terminal in raw mode on the alternate screen; restored when dropped, however `run` ends.
struct Screen;

impl Screen {
    fn enter() -> std::io::Result<Self> {
        terminal::enable_raw_mode()?;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        Ok(Screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

/// Redraws the screen with `page`, cut to the terminal's size.
fn draw(page: &str) -> std::io::Result<()> {
    let (cols, rows) = terminal::size().unwrap_or((80, 24));
    let mut frame = String::from("\x1b[H");
    let footer = "q quits";
    for line in page.lines().take(usize::from(rows).saturating_sub(1)) {
        frame.extend(line.chars().take(usize::from(cols)));
        // Clear what the previous frame left on this line; raw mode needs the carriage return.
        frame.push_str("\x1b[K\r\n");
    }
    frame.push_str("\x1b[J");
    frame.push_str(footer);
    let mut stdout = std::io::stdout();
    stdout.write_all(frame.as_bytes())?;
    stdout.flush()
}

/// A receiver that gets a message when the user asks to quit (q, Esc, Ctrl-C). Keys are read
/// on a thread of their own, which ends once the receiver is gone.
fn keys() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        while !tx.is_closed() {
            if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
                continue;
            }
            let Ok(Event::Key(key)) = event::read() else {
                continue;
            };
            let ctrl_c =
                key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
            let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c;
            if key.kind == KeyEventKind::Press && quit {
                let _ = tx.blocking_send(());
                return;
            }
        }
    });
    rx
}
