//! [`ConfigError`]: a config problem located at file, line and field.

use std::{fmt, path::Path};

/// A config problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `service[web].health.timeout`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

impl ConfigError {
    pub(super) fn io(path: &Path, e: std::io::Error) -> Self {
        Self {
            file: path.display().to_string(),
            line: None,
            field: String::new(),
            message: format!("cannot read: {e}"),
        }
    }

    pub(super) fn syntax(path: &Path, src: &str, e: &toml::de::Error) -> Self {
        let line = e.span().map(|s| line_of(src, s.start));
        // The toml message ends with its own rendering of the source; keep the first line.
        let message = plain(e.message().lines().next().unwrap_or("invalid TOML"));
        let field = e.span().and_then(|s| key_at(src, s.start)).unwrap_or_default();
        Self { file: path.display().to_string(), line, field, message }
    }
}

/// The dotted key (`daemon.conn_table_size`) whose line holds `offset`:
/// the last table header above it and the key left of its `=`.
fn key_at(src: &str, offset: usize) -> Option<String> {
    let before = src.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = src[line_start..].lines().next()?;
    let key = line.split_once('=').map(|(k, _)| k.trim().trim_matches('"')).filter(|k| !k.is_empty())?;
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// serde's and toml's messages in an operator's words, with a guess at a
/// misspelt key or value.
fn plain(msg: &str) -> String {
    let quoted = |s: &str| -> Vec<String> { s.split('`').skip(1).step_by(2).map(String::from).collect() };
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            return format!("expected {expected}, found {found}");
        }
    }
    for (prefix, what) in [("unknown field ", "key"), ("unknown variant ", "value")] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let names = quoted(rest);
            let Some((given, known)) = names.split_first() else { break };
            return match closest(given, known) {
                Some(k) => format!("unknown {what} `{given}`: did you mean `{k}`?"),
                None if known.is_empty() => format!("unknown {what} `{given}`"),
                None => format!("unknown {what} `{given}` (one of: {})", known.join(", ")),
            };
        }
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return format!("missing key {rest} (it has no default)");
    }
    if msg.starts_with("invalid") || msg.starts_with("expected") || msg.starts_with("unexpected") {
        return format!("not valid TOML here: {msg}");
    }
    msg.to_string()
}

/// The known name within two edits of `given`, if one is.
fn closest<'a>(given: &str, known: &'a [String]) -> Option<&'a str> {
    known.iter().map(|k| (edits(given, k), k)).filter(|(d, _)| *d <= 2).min_by_key(|(d, _)| *d).map(|(_, k)| k.as_str())
}

/// Levenshtein distance.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
