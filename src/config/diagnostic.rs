//! Diagnostics: one finding about one file, located by `path:line:col`.
//!
//! Owns the `Diagnostic` type, its severity, the text form an operator reads
//! (`path:line:col: error: message`) and the conversion from byte offsets to line and column.
//! It does not decide what is an error; the loaders do.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How bad a finding is. Errors make `flowhq check` exit 78 and keep a tenant on its last
/// applied spec; warnings are shown and change nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look; the file still applies.
    Warning,
    /// The file does not apply.
    Error,
}

/// One finding, located in a file. Line and column are 1-based; column counts characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file the finding is about.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// Error or warning.
    pub severity: Severity,
    /// Lowercase message without a trailing period, possibly with a "did you mean" suggestion.
    pub message: String,
}

impl Diagnostic {
    /// An error at a byte offset of `source`.
    pub fn error_at(
        path: impl Into<PathBuf>,
        source: &str,
        offset: usize,
        msg: impl Into<String>,
    ) -> Self {
        Self::at(path, source, offset, Severity::Error, msg)
    }

    /// A warning at a byte offset of `source`.
    pub fn warning_at(
        path: impl Into<PathBuf>,
        source: &str,
        offset: usize,
        msg: impl Into<String>,
    ) -> Self {
        Self::at(path, source, offset, Severity::Warning, msg)
    }

    /// A finding at a byte offset of `source` (clamped to its length).
    pub fn at(
        path: impl Into<PathBuf>,
        source: &str,
        offset: usize,
        severity: Severity,
        msg: impl Into<String>,
    ) -> Self {
        let (line, col) = line_col(source, offset);
        Self {
            path: path.into(),
            line,
            col,
            severity,
            message: msg.into(),
        }
    }

    /// A finding about a whole file (reported at 1:1).
    pub fn file(path: impl Into<PathBuf>, severity: Severity, msg: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: 1,
            col: 1,
            severity,
            message: msg.into(),
        }
    }

    /// Whether this finding stops the file from applying.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// 1-based line and character column of a byte offset. Offsets past the end, or inside a
/// multi-byte character, are moved back to the nearest character boundary.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_and_in_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        // `=` after "bé " is the 4th character although it is the 5th byte.
        assert_eq!(line_col(src, 6 + "bé ".len()), (2, 4));
        assert_eq!(line_col(src, 10_000), (3, 1));
    }

    #[test]
    fn display_is_path_line_col_severity_message() {
        let d = Diagnostic::error_at("t/a.toml", "x\ny", 2, "unknown field `y`");
        assert_eq!(d.to_string(), "t/a.toml:2:1: error: unknown field `y`");
    }
}
