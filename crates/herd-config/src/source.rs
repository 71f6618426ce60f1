//! Config text, key paths, and errors that point into the text.
//!
//! A [`KeyPath`] (`service[1].restart.window`) names a key the way a user reads the file;
//! [`Source::locate`] turns it into a line number by walking a span-preserving parse of the same
//! text. Errors from both loading stages become [`ConfigError`]s that render as
//! `herd.toml:12:1: service[1].restart.window: not a duration: "5 parsecs"` (file, line,
//! column, key).

use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// The text of a config file and where it came from.
#[derive(Debug)]
pub struct Source {
    /// The path as given by the user (shown in messages).
    pub path: PathBuf,
    /// The file's contents.
    pub text: String,
}

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path to a key, such as `service[0].listen`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    /// The path of the `index`th `[[service]]` table.
    pub fn service(index: usize) -> Self {
        KeyPath(vec![Segment::Key("service".into()), Segment::Index(index)])
    }

    /// This path extended by `key`.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.0.clone();
        p.push(Segment::Key(key.to_string()));
        KeyPath(p)
    }

    /// This path extended by an array index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.0.clone();
        p.push(Segment::Index(i));
        KeyPath(p)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if n == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

impl Source {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Source {
                path: path.to_path_buf(),
                text,
            }),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                column: None,
                key: None,
                message: format!("cannot read config file: {e}"),
            }])),
        }
    }

    /// The 1-based line of byte `offset`.
    pub fn line_of(&self, offset: usize) -> usize {
        self.position_of(offset).0
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    pub fn position_of(&self, offset: usize) -> (usize, usize) {
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &self.text[..end];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[start..].chars().count() + 1)
    }

    /// The line where the key at `path` is written, or the nearest enclosing key that is
    /// (a missing key is reported at its table's header).
    pub fn locate(&self, path: &KeyPath) -> Option<usize> {
        self.position(path).map(|(line, _)| line)
    }

    /// The line and column where the key at `path` is written, or where the nearest enclosing
    /// key is.
    pub fn position(&self, path: &KeyPath) -> Option<(usize, usize)> {
        let doc = DeTable::parse(&self.text).ok()?;
        let mut best = None;
        let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
        let mut value: Option<&DeValue<'_>> = None;
        for seg in &path.0 {
            match seg {
                Segment::Key(k) => {
                    let t = match (table, value) {
                        (Some(t), _) => t,
                        (None, Some(DeValue::Table(t))) => t,
                        _ => break,
                    };
                    let Some((key, val)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k)
                    else {
                        break;
                    };
                    best = Some(key.span().start);
                    table = None;
                    value = Some(val.get_ref());
                }
                Segment::Index(i) => {
                    let Some(item) = value.and_then(|v| v.get(*i)) else {
                        break;
                    };
                    best = Some(item.span().start);
                    table = None;
                    value = Some(item.get_ref());
                }
            }
        }
        best.map(|offset| self.position_of(offset))
    }

    /// An error at `path` with `message`.
    pub fn error(&self, path: &KeyPath, message: impl Into<String>) -> ConfigError {
        let at = self.position(path);
        ConfigError {
            file: self.path.clone(),
            line: at.map(|(line, _)| line),
            column: at.map(|(_, column)| column),
            key: Some(path.to_string()),
            message: message.into(),
        }
    }
}

/// A parse error of document `doc` (starting at line `first` of `file`), placed on the file's
/// line. serde_norway's message starts with the path of the key it refused.
pub(crate) fn yaml_error(
    file: &Path,
    doc: &str,
    first: usize,
    error: &serde_norway::Error,
) -> ConfigError {
    let line = error.location().map(|l| file_line(doc, first, l.line()));
    ConfigError {
        file: file.to_path_buf(),
        line: line.or(Some(first)),
        column: None,
        key: None,
        message: error.to_string(),
    }
}

/// The line of the file where line `yaml_line` (1-based) of `doc`, a document starting at line
/// `first`, starts. A YAML parser also ends a line at a lone CR, NEL, LS and PS, which an editor
/// shows within one line; so its line numbers are mapped back to lines ended by LF.
fn file_line(doc: &str, first: usize, yaml_line: usize) -> usize {
    let (mut line, mut newlines) = (1, 0);
    let mut chars = doc.chars().peekable();
    while line < yaml_line {
        let Some(c) = chars.next() else { break };
        match c {
            '\r' if chars.peek() == Some(&'\n') => {
                chars.next();
                newlines += 1;
                line += 1;
            }
            '\n' => {
                newlines += 1;
                line += 1;
            }
            '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => line += 1,
            _ => {}
        }
    }
    first + newlines
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when the problem can be placed.
    pub line: Option<usize>,
    /// 1-based column (in characters) on that line, when known.
    pub column: Option<usize>,
    /// The key path, when the problem belongs to a key.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a config file; loading reports them all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_lines_are_mapped_to_the_lines_an_editor_shows() {
        let doc = "a: 1\nb: x\u{85}y\rz\r\nc: 2\n";
        // YAML lines 1..=5 start on file lines 10, 11, 11, 11, 12.
        let lines: Vec<usize> = (1..=5).map(|l| file_line(doc, 10, l)).collect();
        assert_eq!(lines, vec![10, 11, 11, 11, 12]);
        // Past the end: the line after the last.
        assert_eq!(file_line(doc, 10, 9), 13);
    }
}
