//! A reader of the Prometheus text format (version 0.0.4), as the recorder renders it: comment
//! lines (`# HELP`, `# TYPE`), blank lines, and samples `name{label="value",...} value`. The
//! overview reads herd's own `/metrics` through it, so both always show the same numbers.
//! Anything else is an error naming the line.

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with `_bucket`, `_sum`, `_count` for histogram series).
    pub name: String,
    /// Label pairs in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Reads a metric or label name at the start of `s`; returns it and the rest.
fn name(s: &str) -> Option<(&str, &str)> {
    let mut chars = s.char_indices();
    let (_, first) = chars.next()?;
    if !is_name_start(first) {
        return None;
    }
    let end = chars
        .find(|(_, c)| !is_name_char(*c))
        .map_or(s.len(), |(i, _)| i);
    Some(s.split_at(end))
}

/// Reads a quoted label value (after its opening quote); returns it unescaped and the rest.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                other => return Err(format!("bad escape {other:?} in a label value")),
            },
            '\n' => return Err("newline in a label value".into()),
            c => out.push(c),
        }
    }
    Err("unterminated label value".into())
}

fn value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        s => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

fn sample(line: &str) -> Result<Sample, String> {
    let (metric, mut rest) = name(line).ok_or("a sample must start with a metric name")?;
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (key, r) = name(rest).ok_or("a label name was expected")?;
            let r = r
                .trim_start()
                .strip_prefix('=')
                .ok_or("`=` expected after a label name")?;
            let r = r
                .trim_start()
                .strip_prefix('"')
                .ok_or("a quoted label value was expected")?;
            let (v, r) = quoted(r)?;
            if labels.iter().any(|(k, _): &(String, String)| k == key) {
                return Err(format!("label {key:?} repeated"));
            }
            labels.push((key.to_string(), v));
            rest = r.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with('}') {
                return Err("`,` or `}` expected after a label".into());
            }
        }
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("a space must separate the series from its value".into());
    }
    let mut fields = rest.split_ascii_whitespace();
    let v = value(fields.next().ok_or("the value is missing")?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the value".into());
    }
    Ok(Sample {
        name: metric.to_string(),
        labels,
        value: v,
    })
}

/// Every sample of `text`, or the first problem as `line N: why`.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if let Some(t) = comment.strip_prefix("TYPE ") {
                let kind = t.split_ascii_whitespace().nth(1);
                if !matches!(
                    kind,
                    Some("counter" | "gauge" | "histogram" | "summary" | "untyped")
                ) {
                    return Err(format!("line {}: bad TYPE line {line:?}", i + 1));
                }
            }
            continue;
        }
        out.push(sample(line).map_err(|why| format!("line {}: {why}: {line:?}", i + 1))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_labels_escapes_and_special_values_are_read() {
        let text = "# HELP x help\n# TYPE x counter\nx 3\n\
                    y{a=\"1\",b=\"q\\\"\\\\\\n\"} 2.5\n\
                    h_bucket{le=\"+Inf\"} 7 1700000000000\nz{} NaN\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "x");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].label("a"), Some("1"));
        assert_eq!(s[1].label("b"), Some("q\"\\\n"));
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert!(s[3].value.is_nan());
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for bad in [
            "x{a=\"1\" 2",
            "x{a=1} 2",
            "x 2 3 4",
            "x",
            "9x 1",
            "x{a=\"1\",a=\"2\"} 1",
            "x{a=\"\\q\"} 1",
            "x 1e",
            "# TYPE x whatever",
        ] {
            let e = parse(&format!("ok 1\n{bad}\n")).unwrap_err();
            assert!(e.starts_with("line 2:"), "{bad}: {e}");
        }
    }
}
