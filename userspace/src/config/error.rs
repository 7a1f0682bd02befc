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
        let message = e.message().lines().next().unwrap_or("invalid TOML").to_string();
        let field = e
            .span()
            .and_then(|s| src.get(s.start..s.end))
            .filter(|t| !t.contains('\n') && t.len() < 64)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        Self { file: path.display().to_string(), line, field, message }
    }
}
