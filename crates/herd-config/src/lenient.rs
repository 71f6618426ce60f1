//! The first stage of loading, reporting every problem serde finds rather than the first.
//!
//! Serde stops at the first error. So when the file as a whole does not deserialize into
//! [`RawConfig`], it is read again piece by piece: the top-level tables together, then each
//! element of a top-level array of tables (`[[service]]`, `[[route]]`, ...) on its own. Within a
//! piece, every key serde refuses (unknown, or of the wrong type) is reported, taken out of the
//! parsed document, and the piece is deserialized again, until it goes through. A table that
//! lacks a required key is reported and taken out as a whole (its own missing keys are not
//! reported twice when herd took them out).
//!
//! Taking an array element out shifts the indexes after it, which the second stage uses to
//! place its errors; so the result says whether the document is `whole` (only keys were taken
//! out), and validation runs only then. A user sees every serde problem at once, and with
//! those fixed (or when all were keys that could simply be left out) every validation problem
//! at once as well.

use std::ops::Range;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::raw::RawConfig;
use crate::source::{ConfigError, KeyPath, Segment, Source};

/// Most keys taken out of one piece before giving up on it.
const MAX_ROUNDS: usize = 200;

/// What the first stage read: the raw config and every problem found. Validation is only
/// meaningful when `whole` is set (no table was taken out).
pub(crate) struct Read {
    /// The config as far as it could be read.
    pub raw: RawConfig,
    /// Problems, in file order.
    pub errors: Vec<ConfigError>,
    /// No table or array element had to be taken out.
    pub whole: bool,
}

/// Reads `source` into a [`RawConfig`]; `Err` only for TOML syntax errors (every one the parser
/// reports), after which nothing can be read.
pub(crate) fn read(source: &Source) -> Result<Read, Vec<ConfigError>> {
    let (doc, syntax) = DeTable::parse_recoverable(&source.text);
    if !syntax.is_empty() {
        return Err(syntax.iter().map(|e| toml_error(source, e, None)).collect());
    }
    if let Ok(raw) = attempt::<RawConfig>(&doc) {
        return Ok(Read {
            raw,
            errors: Vec::new(),
            whole: true,
        });
    }
    let mut read = Read {
        raw: RawConfig::default(),
        errors: Vec::new(),
        whole: true,
    };
    let mut rest = doc;
    let names: Vec<String> = rest
        .get_ref()
        .iter()
        .filter(|(_, value)| is_array_of_tables(value.get_ref()))
        .map(|(key, _)| key.get_ref().to_string())
        .collect();
    let mut arrays = Vec::new();
    for name in names {
        if let Some((key, value)) = rest.get_mut().remove_entry(name.as_str()) {
            arrays.push((key, value));
        }
    }
    if let Some(raw) = lenient::<RawConfig>(source, rest, &|p| p, &mut read) {
        read.raw = raw;
    }
    // Elements in file order per array; each key is one array.
    for (key, value) in arrays {
        let DeValue::Array(items) = value.into_inner() else {
            continue;
        };
        for (index, item) in items.iter().enumerate() {
            let mut one = DeArray::new();
            one.push(item.clone());
            let mut table = DeTable::new();
            table.insert(key.clone(), Spanned::new(item.span(), DeValue::Array(one)));
            let doc = Spanned::new(item.span(), table);
            let renumber = |mut path: KeyPath| {
                if let Some(Segment::Index(i)) = path.0.get_mut(1) {
                    *i = index;
                }
                path
            };
            let before = count_elements(&read.raw);
            if let Some(part) = lenient::<RawConfig>(source, doc, &renumber, &mut read) {
                append(&mut read.raw, part);
            }
            if count_elements(&read.raw) != before + 1 {
                read.whole = false;
            }
        }
    }
    read.errors
        .sort_by_key(|e| (e.line.is_none(), e.line, e.column));
    Ok(read)
}

/// `[[name]]` tables: an array whose every item is a table.
fn is_array_of_tables(value: &DeValue<'_>) -> bool {
    matches!(value, DeValue::Array(a) if !a.is_empty() && a.iter().all(|v| v.get_ref().is_table()))
}

/// Deserializes `doc` as `T`, with the path of the failing key when it does not.
///
/// toml places every error it raises at the span of what it refused: the value, the key of an
/// unknown field, or the table lacking a key (for a `[table]`, its header). The path is that of
/// the deepest key, value or array item in `doc` whose span holds the error's.
fn attempt<T: DeserializeOwned>(
    doc: &Spanned<DeTable<'_>>,
) -> Result<T, (KeyPath, toml::de::Error)> {
    T::deserialize(doc.clone().into_deserializer()).map_err(|e| {
        let mut path = e
            .span()
            .and_then(|span| path_in_table(doc.get_ref(), &span))
            .unwrap_or_default();
        path.reverse();
        (KeyPath(path), e)
    })
}

/// Whether `outer` holds `inner`.
fn holds(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The path (innermost segment first) to what in `table` holds `span`. A table's own span can
/// be its header only, so every child is searched, not only those whose spans hold `span`.
fn path_in_table(table: &DeTable<'_>, span: &Range<usize>) -> Option<Vec<Segment>> {
    table.iter().find_map(|(key, value)| {
        let mut path = path_in_value(value.get_ref(), span)
            .or_else(|| (holds(&value.span(), span) || holds(&key.span(), span)).then(Vec::new))?;
        path.push(Segment::Key(key.get_ref().to_string()));
        Some(path)
    })
}

fn path_in_value(value: &DeValue<'_>, span: &Range<usize>) -> Option<Vec<Segment>> {
    match value {
        DeValue::Table(t) => path_in_table(t, span),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            let mut path = path_in_value(item.get_ref(), span)
                .or_else(|| holds(&item.span(), span).then(Vec::new))?;
            path.push(Segment::Index(index));
            Some(path)
        }),
        _ => None,
    }
}

/// Deserializes `doc` as `T`, reporting and taking out what serde refuses until the rest goes
/// through; `None` when nothing of it could be kept. `rename` turns a path in `doc` into the
/// path in the file.
fn lenient<T: DeserializeOwned>(
    source: &Source,
    mut doc: Spanned<DeTable<'_>>,
    rename: &dyn Fn(KeyPath) -> KeyPath,
    read: &mut Read,
) -> Option<T> {
    let mut taken: Vec<KeyPath> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let (mut path, error) = match attempt::<T>(&doc) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let message = error.message();
        if let Some(field) = quoted_after(message, "unknown field `") {
            if path.0.last() != Some(&Segment::Key(field.clone())) {
                path.0.push(Segment::Key(field));
            }
            read.errors
                .push(toml_error(source, &error, Some(rename(path.clone()))));
        } else if let Some(field) = quoted_after(message, "missing field `") {
            // The table lacks a key: report it unless herd took that key out itself, then
            // take out the table.
            if !taken.contains(&path.key(&field)) {
                read.errors
                    .push(toml_error(source, &error, Some(rename(path.clone()))));
            }
        } else {
            read.errors
                .push(toml_error(source, &error, Some(rename(path.clone()))));
        }
        if path.0.is_empty() || !take_out(doc.get_mut(), &path.0) {
            read.whole = false;
            return None;
        }
        if matches!(path.0.last(), Some(Segment::Index(_))) {
            read.whole = false;
        }
        taken.push(path);
    }
    read.whole = false;
    None
}

/// The text between `prefix` and the next backtick in `message`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest[..rest.find('`')?].to_string())
}

/// Removes the key or element at `path` from `table`; false when there is none.
fn take_out(table: &mut DeTable<'_>, path: &[Segment]) -> bool {
    let Some((Segment::Key(first), rest)) = path.split_first() else {
        return false;
    };
    if rest.is_empty() {
        return table.remove(first.as_str()).is_some();
    }
    match table.get_mut(first.as_str()) {
        Some(value) => take_out_of(value.get_mut(), rest),
        None => false,
    }
}

fn take_out_of(value: &mut DeValue<'_>, path: &[Segment]) -> bool {
    match (value, path.split_first()) {
        (DeValue::Table(t), Some(_)) => take_out(t, path),
        (DeValue::Array(a), Some((Segment::Index(i), rest))) => {
            if rest.is_empty() {
                if *i >= a.len() {
                    return false;
                }
                let items = std::mem::replace(a, DeArray::new());
                *a = items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(n, item)| (n != *i).then_some(item))
                    .collect();
                return true;
            }
            match a.get_mut(*i) {
                Some(item) => take_out_of(item.get_mut(), rest),
                None => false,
            }
        }
        _ => false,
    }
}

/// The entries of every top-level array of tables.
fn count_elements(raw: &RawConfig) -> usize {
    raw.service.len()
        + raw.route.len()
        + raw.upstream.len()
        + raw.component.len()
        + raw.subscription.len()
}

/// Adds the array elements of `part` (a document holding one element) to `raw`. An array of
/// tables that is not listed here is a key `RawConfig` does not have, reported as unknown.
fn append(raw: &mut RawConfig, part: RawConfig) {
    raw.service.extend(part.service);
    raw.route.extend(part.route);
    raw.upstream.extend(part.upstream);
    raw.component.extend(part.component);
    raw.subscription.extend(part.subscription);
}

/// A parser or serde error, placed by its span (else by `path`), with its key.
pub(crate) fn toml_error(
    source: &Source,
    error: &toml::de::Error,
    path: Option<KeyPath>,
) -> ConfigError {
    let at = error
        .span()
        .map(|s| source.position_of(s.start))
        .or_else(|| path.as_ref().and_then(|p| source.position(p)));
    ConfigError {
        file: source.path.clone(),
        line: at.map(|(line, _)| line),
        column: at.map(|(_, column)| column),
        key: path.filter(|p| !p.0.is_empty()).map(|p| p.to_string()),
        message: error.message().trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use crate::{ConfigErrors, Source, parse};

    fn errors(text: &str) -> ConfigErrors {
        parse(Arc::new(Source {
            path: PathBuf::from("/tmp/herd.toml"),
            text: text.to_string(),
        }))
        .expect_err("config should be refused")
    }

    /// (line, column, key) of every error.
    fn places(errs: &ConfigErrors) -> Vec<(usize, usize, String)> {
        errs.0
            .iter()
            .map(|e| {
                (
                    e.line.expect("a line"),
                    e.column.expect("a column"),
                    e.key.clone().expect("a key"),
                )
            })
            .collect()
    }

    #[test]
    fn serde_and_validation_problems_all_come_out_with_line_and_column() {
        let text = r#"data_dir = 7

[[service]]
name = "web"
command = "node server.js"
instancez = 2

[[service]]
name = "api"
command = ["true"]
instances = 0
restart = { window = 5, max_restarts = 3 }

[gateway]
bogus = 1
"#;
        let errs = errors(text);
        let shown = errs.to_string();
        assert_eq!(
            places(&errs),
            vec![
                (1, 12, "data_dir".to_string()),
                (6, 1, "service[0].instancez".to_string()),
                (12, 22, "service[1].restart.window".to_string()),
                (15, 1, "gateway.bogus".to_string()),
                (5, 1, "service[0].command".to_string()),
                (11, 1, "service[1].instances".to_string()),
            ],
            "{shown}"
        );
        assert!(
            shown.contains(
                "/tmp/herd.toml:5:1: service[0].command: must be an array, the program and its arguments (run without a shell): command = [\"node\", \"server.js\"]"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("/tmp/herd.toml:6:1: service[0].instancez: unknown field `instancez`"),
            "{shown}"
        );
    }

    #[test]
    fn a_shell_command_line_is_suggested_as_sh_c() {
        let errs = errors("[[service]]\nname = \"a\"\ncommand = \"node a.js | tee out\"\n");
        assert!(
            errs.to_string()
                .ends_with(r#"command = ["sh", "-c", "node a.js | tee out"]"#),
            "{errs}"
        );
    }

    #[test]
    fn a_table_missing_a_required_key_is_reported_with_the_other_tables() {
        // The second service lacks `name`; it is left out, so validation (which places its
        // errors by index) waits until that is fixed, but every serde problem shows now.
        let text = "[[service]]\nname = \"a\"\ncommand = [\"true\"]\nlisten = 8000\n\n[[service]]\ncommand = [\"true\"]\n\n[[route]]\npath_prefix = \"/\"\nservise = \"a\"\n";
        let errs = errors(text);
        let keys: Vec<String> = places(&errs).into_iter().map(|(_, _, k)| k).collect();
        assert_eq!(
            keys,
            vec!["service[0].listen", "service[1]", "route[0].servise"],
            "{errs}"
        );
        assert!(errs.0[1].message.contains("missing field `name`"), "{errs}");
    }

    #[test]
    fn a_wrong_required_key_is_reported_once() {
        let errs = errors("[[service]]\nname = 5\ncommand = [\"true\"]\n");
        assert_eq!(errs.0.len(), 1, "{errs}");
        assert_eq!(errs.0[0].key.as_deref(), Some("service[0].name"));
        assert_eq!((errs.0[0].line, errs.0[0].column), (Some(2), Some(8)));
    }

    #[test]
    fn every_syntax_error_is_reported() {
        let errs = errors("a = \nb = [1,\n");
        assert!(!errs.0.is_empty());
        assert!(
            errs.0
                .iter()
                .all(|e| e.line.is_some() && e.column.is_some()),
            "{errs}"
        );
    }
}
