//! The checker every check writes to: the file's text, to locate a field's
//! line, and the errors found so far.

use crate::config::error::{line_of, ConfigError};

/// Finds the line of `key = ...` within the table that starts at `start`
/// (up to the next `[[service]]` header), or the table's first line.
fn locate(src: &str, start: usize, key: &str) -> usize {
    let first = line_of(src, start);
    for (i, l) in src.lines().enumerate().skip(first - 1) {
        let t = l.trim_start();
        if i + 1 > first && t.starts_with("[[service]]") {
            break;
        }
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return i + 1;
            }
        }
    }
    first
}

/// Collects the errors of one file, each located at its field's line.
pub(super) struct Checker<'a> {
    pub(super) src: &'a str,
    pub(super) file: String,
    pub(super) errors: Vec<ConfigError>,
}

impl Checker<'_> {
    pub(super) fn err(&mut self, start: usize, key: &str, field: String, message: impl Into<String>) {
        let line = Some(locate(self.src, start, key));
        self.errors.push(ConfigError { file: self.file.clone(), line, field, message: message.into() });
    }
}
