//! Walking a span-preserving TOML table by hand, so that every finding in a file is reported.
//!
//! Owns the per-file diagnostic sink (`FileCtx`), unknown-key checks with "did you mean"
//! suggestions, type-mismatch messages and the mapping from a string value to the byte offset of
//! its contents. It deliberately knows no field of any file format; `validate.rs` (tenant files)
//! and `daemon/keys.rs` (the daemon config) decide what each key means. serde's derive is not used for
//! these files because it stops at the first error and would hide the next ones.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::diagnostic::{Diagnostic, Severity};

/// The findings about one file, with the text they point into.
#[derive(Debug)]
pub(crate) struct FileCtx<'s> {
    /// The path as given by the caller (relative stays relative).
    pub(crate) path: &'s Path,
    /// The text the spans point into (after a byte-order mark was removed).
    pub(crate) src: &'s str,
    /// Findings so far.
    pub(crate) diags: Vec<Diagnostic>,
    /// Where syntax errors are. The parser recovers an unreadable value as an empty
    /// placeholder; a finding about it at the very same place would only repeat the syntax
    /// error, so it is not recorded.
    syntax_at: BTreeSet<usize>,
}

impl<'s> FileCtx<'s> {
    /// A sink for findings about `path`, whose text is `src`.
    pub(crate) fn new(path: &'s Path, src: &'s str) -> Self {
        Self {
            path,
            src,
            diags: Vec::new(),
            syntax_at: BTreeSet::new(),
        }
    }

    /// Records an error at a byte offset.
    pub(crate) fn error(&mut self, offset: usize, msg: impl Into<String>) {
        if self.syntax_at.contains(&offset) {
            return;
        }
        self.diags
            .push(Diagnostic::error_at(self.path, self.src, offset, msg));
    }

    /// Records a warning at a byte offset.
    pub(crate) fn warning(&mut self, offset: usize, msg: impl Into<String>) {
        if self.syntax_at.contains(&offset) {
            return;
        }
        self.diags
            .push(Diagnostic::warning_at(self.path, self.src, offset, msg));
    }

    /// Records a finding about the whole file (1:1).
    pub(crate) fn file_error(&mut self, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::file(self.path, Severity::Error, msg));
    }

    /// Records TOML syntax errors from `DeTable::parse_recoverable`.
    pub(crate) fn syntax_errors(&mut self, errors: &[toml::de::Error]) {
        for err in errors {
            let span = err.span().unwrap_or(0..0);
            let mut msg = lowercase_first(err.message());
            // The parser names no key in this message; the span covers it.
            if msg == "duplicate key"
                && let Some(key) = self.src.get(span.clone()).filter(|k| !k.is_empty())
            {
                msg = format!("duplicate key `{key}`");
            }
            self.diags
                .push(Diagnostic::error_at(self.path, self.src, span.start, msg));
            self.syntax_at.insert(span.start);
        }
    }

    /// Reports every key of `table` that is not in `allowed`. `context` names the table for
    /// nested tables (`in [limits]`); it is empty at the top level.
    pub(crate) fn unknown_keys(&mut self, table: &DeTable<'_>, allowed: &[&str], context: &str) {
        for key in table.keys() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            let mut msg = format!("unknown field `{name}`");
            if !context.is_empty() {
                msg.push_str(" in ");
                msg.push_str(context);
            }
            match suggest(name, allowed.iter().copied()) {
                Some(s) => msg.push_str(&format!(", did you mean `{s}`?")),
                None => msg.push_str(&format!(" (expected one of {})", list(allowed))),
            }
            self.error(key.span().start, msg);
        }
    }

    /// Reports that `key` holds a value of the wrong type.
    pub(crate) fn wrong_type(&mut self, key: &str, value: &Spanned<DeValue<'_>>, expected: &str) {
        let found = value.get_ref().type_str();
        let mut msg = format!("`{key}` must be {expected}, found {found}");
        if let DeValue::String(s) = value.get_ref() {
            let t = s.trim();
            if t == "true" || t == "false" || t.parse::<i64>().is_ok() {
                msg.push_str(&format!(", did you mean `{t}` without quotes?"));
            }
        }
        self.error(value.span().start, msg);
    }

    /// The string in `value`, or a type error naming `key`.
    pub(crate) fn string<'v>(
        &mut self,
        key: &str,
        value: &'v Spanned<DeValue<'_>>,
    ) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.wrong_type(key, value, "a string");
                None
            }
        }
    }

    /// The boolean in `value`, or a type error naming `key`.
    pub(crate) fn boolean(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(key, value, "`true` or `false`");
                None
            }
        }
    }

    /// The table in `value`, or a type error naming `key`.
    pub(crate) fn table<'v, 'i>(
        &mut self,
        key: &str,
        value: &'v Spanned<DeValue<'i>>,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(key, value, "a table");
                None
            }
        }
    }

    /// The integer in `value` if it lies in `range`, or an error naming `key`.
    pub(crate) fn integer_in(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let DeValue::Integer(i) = value.get_ref() else {
            self.wrong_type(key, value, "an integer");
            return None;
        };
        match int_value(i) {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    value.span().start,
                    format!(
                        "`{key}` must be between {} and {}, found {i}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// The byte offset of character `at` (a byte index into the decoded string `value`) in the
    /// source, when the string is written without escapes; otherwise the start of the value.
    pub(crate) fn offset_in_string(&self, span: Range<usize>, value: &str, at: usize) -> usize {
        let Some(raw) = self.src.get(span.clone()) else {
            return span.start;
        };
        let plain = (raw.starts_with('"') && !raw.starts_with("\"\"\""))
            || (raw.starts_with('\'') && !raw.starts_with("'''"));
        // `get`, not indexing: an unterminated string can end inside a multi-byte character.
        if plain && raw.len() >= 2 && raw.get(1..raw.len() - 1) == Some(value) {
            span.start + 1 + at
        } else {
            span.start
        }
    }
}

/// The value of a TOML integer, when it fits in an `i64`.
pub(crate) fn int_value(i: &toml::de::DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(i.as_str(), i.radix()).ok()
}

/// The closest candidate to `input` when it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// "`a`, `b` or `c`".
pub(crate) fn list(items: &[&str]) -> String {
    join(items, "or")
}

/// "`a`, `b` and `c`".
pub(crate) fn list_all(items: &[&str]) -> String {
    join(items, "and")
}

fn join(items: &[&str], conjunction: &str) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("`{s}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} {conjunction} {last}", rest.join(", ")),
    }
}

/// Parser messages start with a capital letter in some versions; ours are lowercase.
fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggest_finds_typos_and_refuses_unrelated_words() {
        let fields = ["business_name", "phone", "template", "timezone"];
        assert_eq!(suggest("bussiness_name", fields), Some("business_name"));
        assert_eq!(suggest("tmezone", fields), Some("timezone"));
        assert_eq!(suggest("colour", fields), None);
    }

    #[test]
    fn list_joins_with_commas_and_or() {
        assert_eq!(list(&["a"]), "`a`");
        assert_eq!(list(&["a", "b", "c"]), "`a`, `b` or `c`");
    }

    #[test]
    fn offset_in_string_points_inside_plain_strings_only() {
        let src = "a = \"08:00\"\nb = \"x\\ty\"\n";
        let ctx = FileCtx::new(Path::new("f.toml"), src);
        assert_eq!(ctx.offset_in_string(4..11, "08:00", 3), 8);
        // An escaped string cannot be mapped character by character: point at its start.
        assert_eq!(ctx.offset_in_string(16..22, "x\ty", 2), 16);
    }
}
