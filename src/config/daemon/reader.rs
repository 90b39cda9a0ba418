//! Reading one key of the daemon's config: the environment first (`FLOWHQ_<KEY>`,
//! `FLOWHQ_<SECTION>_<KEY>`, `DATABASE_URL`), then the file, then the key's default. A bad value
//! becomes a diagnostic at its `path:line:col`, or naming its variable (`$FLOWHQ_...`).
//!
//! Owns the kinds of value (string, path, duration, size, number, boolean, integer, argv) and
//! the check that every table of the file is one the table of keys knows. It knows no key:
//! which keys exist, their defaults and their cross-checks are `keys.rs`.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::keys::{Key, allowed, sections};
use super::{Capacity, parse_bytes, parse_duration};
use crate::config::diagnostic::{Diagnostic, Severity};
use crate::config::walk::{FileCtx, int_value};

/// Where a value came from, for pointing at it.
pub(super) enum Origin {
    File(usize),
    Env(String),
}

/// A value found in the environment or the file.
enum Found<'v, 'i> {
    File(&'v Spanned<DeValue<'i>>),
    Env(String, String),
}

/// The file's tables and the environment, with the findings about both.
pub(super) struct Reader<'s, 'e> {
    /// Findings about the file.
    pub(super) ctx: FileCtx<'s>,
    /// Reads one environment variable.
    pub(super) env: &'e dyn Fn(&str) -> Option<String>,
    /// Findings about environment variables, in the order the keys were read.
    pub(super) env_diags: Vec<Diagnostic>,
    /// The file's top-level table (empty without a file).
    pub(super) root: DeTable<'s>,
}

impl Reader<'_, '_> {
    /// Records `msg` at the value's position in the file, or against its variable.
    pub(super) fn report(&mut self, origin: &Origin, msg: String) {
        match origin {
            Origin::File(at) => self.ctx.error(*at, msg),
            Origin::Env(var) => {
                self.env_diags
                    .push(Diagnostic::file(format!("${var}"), Severity::Error, msg))
            }
        }
    }

    /// The table at `section` in the file (empty when absent or not a table).
    pub(super) fn section(&self, section: &[&str]) -> Option<&Spanned<DeValue<'_>>> {
        let mut table = &self.root;
        let mut found = None;
        for name in section {
            let v = table.get(*name)?;
            let DeValue::Table(t) = v.get_ref() else {
                return None;
            };
            table = t;
            found = Some(v);
        }
        found
    }

    /// Looks `k` up: environment first, then the file.
    fn find(&self, k: &Key) -> Option<Found<'_, '_>> {
        let mut var = String::from("FLOWHQ");
        for part in k.section.iter().chain([&k.name]) {
            var.push('_');
            var.push_str(&part.to_ascii_uppercase());
        }
        if let Some(v) = (self.env)(&var) {
            return Some(Found::Env(var, v));
        }
        if k.section.is_empty()
            && k.name == "database_url"
            && let Some(v) = (self.env)("DATABASE_URL")
        {
            return Some(Found::Env("DATABASE_URL".to_owned(), v));
        }
        let table = if k.section.is_empty() {
            &self.root
        } else {
            match self.section(k.section)?.get_ref() {
                DeValue::Table(t) => t,
                _ => return None,
            }
        };
        table.get(k.name).map(Found::File)
    }

    /// A string-typed value with its origin; a file value of another type is reported.
    pub(super) fn text(&mut self, k: &Key) -> Option<(String, Origin)> {
        let found = match self.find(k)? {
            Found::Env(var, v) => return Some((v, Origin::Env(var))),
            Found::File(v) => match v.get_ref() {
                DeValue::String(s) => Ok((s.to_string(), Origin::File(v.span().start))),
                other => Err((v.span().start, other.type_str())),
            },
        };
        match found {
            Ok(t) => Some(t),
            Err((at, ty)) => {
                let name = k.path();
                self.ctx
                    .error(at, format!("`{name}` must be a string, found {ty}"));
                None
            }
        }
    }

    /// A string value read with `parse`; a value it refuses is reported.
    pub(super) fn parsed<T>(
        &mut self,
        k: &Key,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<(T, Origin)> {
        let (s, origin) = self.text(k)?;
        match parse(&s) {
            Ok(v) => Some((v, origin)),
            Err(msg) => {
                let name = k.path();
                self.report(&origin, format!("`{name}`: {msg}"));
                None
            }
        }
    }

    /// A string value read with `parse`, or the key's default (read with `parse` too).
    pub(super) fn value<T>(&mut self, k: &Key, parse: impl Fn(&str) -> Result<T, String>) -> T {
        match self.parsed(k, &parse) {
            Some((v, _)) => v,
            None => k.default_value(parse),
        }
    }

    /// A path that must not be empty, or the key's default.
    pub(super) fn path(&mut self, k: &Key) -> PathBuf {
        self.value(k, parse_path)
    }

    /// A path that must not be empty, or `default` (derived from another key).
    pub(super) fn path_or(&mut self, k: &Key, default: PathBuf) -> PathBuf {
        self.parsed(k, parse_path).map_or(default, |(p, _)| p)
    }

    /// A path that may be unset; an empty value unsets it.
    pub(super) fn opt_path(&mut self, k: &Key) -> Option<PathBuf> {
        self.text(k)
            .and_then(|(s, _)| (!s.is_empty()).then(|| PathBuf::from(s)))
    }

    /// A duration, or the key's default (whose origin points nowhere).
    pub(super) fn duration(&mut self, k: &Key) -> (Duration, Origin) {
        self.parsed(k, parse_duration)
            .unwrap_or_else(|| (k.default_value(parse_duration), Origin::File(0)))
    }

    /// A duration that must not be zero.
    pub(super) fn positive(&mut self, k: &Key) -> Duration {
        let (d, origin) = self.duration(k);
        if d.is_zero() {
            let name = k.path();
            self.report(&origin, format!("`{name}` must be longer than zero"));
            return k.default_value(parse_duration);
        }
        d
    }

    /// A number (float or integer in the file).
    pub(super) fn number(&mut self, k: &Key) -> (f64, Origin) {
        let name = k.path();
        let parsed = match self.find(k) {
            None => return (k.default_value(str::parse::<f64>), Origin::File(0)),
            Some(Found::Env(var, v)) => match v.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => Ok((n, Origin::Env(var))),
                _ => Err((Origin::Env(var), format!("`{name}`: `{v}` is not a number"))),
            },
            Some(Found::File(v)) => match v.get_ref() {
                DeValue::Float(f) => match f.as_str().replace('_', "").parse::<f64>() {
                    Ok(n) if n.is_finite() => Ok((n, Origin::File(v.span().start))),
                    _ => Err((
                        Origin::File(v.span().start),
                        format!("`{name}` must be a finite number"),
                    )),
                },
                DeValue::Integer(i) => match int_value(i) {
                    // Integers in a config file are small; the conversion is exact below 2^53.
                    #[allow(clippy::cast_precision_loss)]
                    Some(n) => Ok((n as f64, Origin::File(v.span().start))),
                    None => Err((
                        Origin::File(v.span().start),
                        format!("`{name}` is out of range"),
                    )),
                },
                other => Err((
                    Origin::File(v.span().start),
                    format!("`{name}` must be a number, found {}", other.type_str()),
                )),
            },
        };
        match parsed {
            Ok(n) => n,
            Err((origin, msg)) => {
                self.report(&origin, msg);
                (k.default_value(str::parse::<f64>), Origin::File(0))
            }
        }
    }

    /// A boolean (`true`/`false`; in the environment also `1`/`0`, `yes`/`no`, empty).
    pub(super) fn boolean(&mut self, k: &Key) -> bool {
        let name = k.path();
        let default = k.default_value(str::parse::<bool>);
        match self.find(k) {
            None => default,
            Some(Found::Env(var, v)) => match v.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                other => {
                    let msg = format!("`{name}`: `{other}` is not `true` or `false`");
                    self.report(&Origin::Env(var), msg);
                    default
                }
            },
            Some(Found::File(v)) => match v.get_ref() {
                DeValue::Boolean(b) => *b,
                other => {
                    let msg = format!(
                        "`{name}` must be `true` or `false`, found {}",
                        other.type_str()
                    );
                    self.ctx.error(v.span().start, msg);
                    default
                }
            },
        }
    }

    /// A byte size: an integer, or a string such as `800MiB`, `1G`, `10485760`.
    pub(super) fn bytes(&mut self, k: &Key) -> Option<(u64, Origin)> {
        if let Some(Found::File(v)) = self.find(k)
            && let DeValue::Integer(i) = v.get_ref()
        {
            let at = v.span().start;
            return match int_value(i).and_then(|n| u64::try_from(n).ok()) {
                Some(n) => Some((n, Origin::File(at))),
                None => {
                    let name = k.path();
                    self.ctx
                        .error(at, format!("`{name}` must be a positive size"));
                    None
                }
            };
        }
        self.parsed(k, parse_bytes)
    }

    /// An integer within `range` (both ends included), or the key's default.
    pub(super) fn integer(&mut self, k: &Key, range: (u32, u32)) -> u32 {
        let name = k.path();
        let default = k.default_value(str::parse::<u32>);
        let (n, origin) = match self.find(k) {
            None => return default,
            Some(Found::Env(var, v)) => (v.trim().parse::<i64>().ok(), Origin::Env(var)),
            Some(Found::File(v)) => match v.get_ref() {
                DeValue::Integer(i) => (int_value(i), Origin::File(v.span().start)),
                other => {
                    let msg = format!("`{name}` must be an integer, found {}", other.type_str());
                    self.ctx.error(v.span().start, msg);
                    return default;
                }
            },
        };
        match n.and_then(|n| u32::try_from(n).ok()) {
            Some(n) if (range.0..=range.1).contains(&n) => n,
            _ => {
                let msg = format!(
                    "`{name}` must be an integer between {} and {}",
                    range.0, range.1
                );
                self.report(&origin, msg);
                default
            }
        }
    }

    /// `"auto"` or a number of tenants (the `capacity` keys); `Auto` when unset or refused.
    pub(super) fn capacity(&mut self, k: &Key) -> Capacity {
        let (text, origin) = match self.find(k) {
            None => return Capacity::Auto,
            Some(Found::Env(var, v)) => (v, Origin::Env(var)),
            Some(Found::File(v)) => {
                let at = Origin::File(v.span().start);
                match v.get_ref() {
                    DeValue::Integer(i) => {
                        (int_value(i).map_or(String::new(), |n| n.to_string()), at)
                    }
                    DeValue::String(s) => (s.to_string(), at),
                    other => {
                        let msg = format!(
                            "`{}` must be \"auto\" or an integer, found {}",
                            k.path(),
                            other.type_str()
                        );
                        self.report(&at, msg);
                        return Capacity::Auto;
                    }
                }
            }
        };
        Capacity::parse(&text).unwrap_or_else(|msg| {
            self.report(&origin, format!("`{}` {msg}", k.path()));
            Capacity::Auto
        })
    }

    /// An argv: an array of strings in the file; in the environment a TOML array
    /// (`["/usr/bin/flowhq", "worker"]`) or words separated by spaces.
    pub(super) fn argv(&mut self, k: &Key) -> Option<(Vec<String>, Origin)> {
        let name = k.path();
        let (items, origin) = match self.find(k)? {
            Found::Env(var, v) => {
                let t = v.trim();
                if t.starts_with('[') {
                    match DeValue::parse(t) {
                        Ok(parsed) => (string_array(parsed.get_ref()), Origin::Env(var)),
                        Err(_) => (None, Origin::Env(var)),
                    }
                } else {
                    let words = t.split_whitespace().map(str::to_owned).collect();
                    (Some(words), Origin::Env(var))
                }
            }
            Found::File(v) => (string_array(v.get_ref()), Origin::File(v.span().start)),
        };
        match items {
            Some(items) if !items.is_empty() && !items[0].is_empty() => Some((items, origin)),
            Some(_) => {
                self.report(&origin, format!("`{name}` is empty; it needs a program"));
                None
            }
            None => {
                self.report(
                    &origin,
                    format!("`{name}` must be an array of strings, like [\"/usr/bin/flowhq\", \"worker\"]"),
                );
                None
            }
        }
    }

    /// Reports every key of the file that no row of the table knows, and every section that is
    /// not a table.
    pub(super) fn check_sections(&mut self) {
        let mut findings = Vec::new();
        for path in sections() {
            let name = path.join(".");
            let mut table = &self.root;
            let mut value = None;
            for part in path {
                value = table.get(*part);
                match value.map(|v| v.get_ref()) {
                    Some(DeValue::Table(t)) => table = t,
                    _ => break,
                }
            }
            match value.map(|v| (v.span().start, v.get_ref())) {
                None => {}
                Some((_, DeValue::Table(t))) => findings.push(Ok((t.clone(), allowed(path), name))),
                Some((at, other)) => findings.push(Err((
                    at,
                    format!("`{name}` must be a table, found {}", other.type_str()),
                ))),
            }
        }
        let root = self.root.clone();
        self.ctx.unknown_keys(&root, &allowed(&[]), "");
        for finding in findings {
            match finding {
                Ok((t, keys, name)) => self.ctx.unknown_keys(&t, &keys, &format!("[{name}]")),
                Err((at, msg)) => self.ctx.error(at, msg),
            }
        }
    }
}

/// A path, which must not be empty.
fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("path is empty".to_owned())
    } else {
        Ok(PathBuf::from(s))
    }
}

fn string_array(v: &DeValue<'_>) -> Option<Vec<String>> {
    let DeValue::Array(items) = v else {
        return None;
    };
    items
        .iter()
        .map(|i| i.get_ref().as_str().map(str::to_owned))
        .collect()
}
