//! Loading tenant files: one file, a whole directory, and the checks across files.
//!
//! Owns reading `tenants.d/*.toml`, deciding which names count as tenant files, turning each
//! file into a validated `TenantSpec` or into every diagnostic it deserves, and the cross-file
//! rule that a phone number belongs to one tenant. Loading never fails as a whole: unreadable
//! files and directories become diagnostics too. It does not watch the directory (that is
//! `source`) and keeps no state between calls.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::diagnostic::{Diagnostic, Severity};
use crate::config::fields::{check_placeholders, parse_day_hours, phone_hint};
use crate::config::tenant::{
    Language, Limits, Phone, ReplyKey, Template, TenantId, TenantSpec, Weekday, WeeklyHours,
};
use crate::config::walk::{FileCtx, list, list_all, suggest};

/// Tenant files larger than this are refused before parsing (a tenant file is a few hundred
/// bytes; a huge one is a mistake, and reading it would stall a reload).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The longest `business_name`, in characters.
pub const MAX_BUSINESS_NAME_CHARS: usize = 100;

/// The longest reply text, in characters (WhatsApp's limit for one text message).
pub const MAX_REPLY_CHARS: usize = 4096;

/// What a tenant file may contain at its top level.
const TOP_KEYS: [&str; 10] = [
    "business_name",
    "phone",
    "template",
    "language",
    "enabled",
    "timezone",
    "hours",
    "limits",
    "replies",
    "restart",
];

/// The smallest per-tenant memory limit: below it no browser can run.
const MIN_MEMORY_MAX: u64 = 64 << 20;

/// Fields without a default.
const REQUIRED: [&str; 5] = ["business_name", "phone", "template", "language", "timezone"];

const LIMIT_KEYS: [&str; 3] = [
    "replies_per_minute",
    "replies_per_contact_per_10min",
    "memory_max",
];

/// Failures to read files and directories. They reach operators as diagnostics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tenant file could not be read.
    #[error("cannot read tenant file {path}")]
    ReadTenantFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tenant directory could not be listed.
    #[error("cannot read tenant directory {path}")]
    ReadTenantDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The outcome of loading one directory of tenant files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedDir {
    /// Every tenant whose file validated, by id.
    pub specs: BTreeMap<TenantId, TenantSpec>,
    /// The file of every tenant file with a valid name, whether it validated or not.
    pub files: BTreeMap<TenantId, PathBuf>,
    /// Every finding, sorted by path, line and column.
    pub diagnostics: Vec<Diagnostic>,
    /// Ids whose file exists but did not validate (including both tenants of a duplicate phone).
    /// A caller keeps these on their last applied spec rather than retiring them.
    pub failed: BTreeSet<TenantId>,
    /// How many tenant files were examined (valid names or not).
    pub checked: usize,
    /// `false` when the directory itself could not be listed. A caller must not retire tenants
    /// because their files seem to be missing from an incomplete listing.
    pub complete: bool,
}

impl LoadedDir {
    /// How many findings are errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// How many findings are warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }
}

/// The outcome of one tenant file: a spec when it has no errors, and all its findings
/// (warnings included) either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutcome {
    /// The validated spec, `None` when any finding is an error.
    pub spec: Option<TenantSpec>,
    /// Every finding about the file, sorted by line and column.
    pub diagnostics: Vec<Diagnostic>,
}

/// Whether `path` names a tenant file: `*.toml`, not a dotfile and not an editor's lock or
/// backup file (`.#x.toml`, `x.toml~`, `.x.toml.swp`, `#x.toml#`). Looks at the name only.
pub fn is_tenant_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.ends_with(".toml")
        && name.len() > ".toml".len()
        && !name.starts_with('.')
        && !name.starts_with('#')
}

/// Loads one tenant file. `Err` holds every finding (warnings too) when any is an error; `Ok`
/// drops warnings, so callers that show them use [`read_tenant`].
pub fn load_file(path: &Path) -> Result<TenantSpec, Vec<Diagnostic>> {
    let outcome = read_tenant(path);
    outcome.spec.ok_or(outcome.diagnostics)
}

/// Reads and validates one tenant file, keeping warnings.
pub fn read_tenant(path: &Path) -> FileOutcome {
    match read_limited(path) {
        Ok(bytes) => parse_tenant(path, &bytes),
        Err(diag) => FileOutcome {
            spec: None,
            diagnostics: vec![diag],
        },
    }
}

/// Validates the bytes of a tenant file named `path` (whose stem is the tenant id). Does no
/// I/O; never panics, whatever the bytes.
pub fn parse_tenant(path: &Path, bytes: &[u8]) -> FileOutcome {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return FileOutcome {
            spec: None,
            diagnostics: vec![too_large(path, bytes.len() as u64)],
        };
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let src = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            // The prefix up to `valid_up_to` is valid UTF-8 by definition.
            let good = std::str::from_utf8(good).unwrap_or_default();
            return FileOutcome {
                spec: None,
                diagnostics: vec![Diagnostic::error_at(
                    path,
                    good,
                    good.len(),
                    "file is not valid UTF-8; save it in the UTF-8 encoding",
                )],
            };
        }
    };
    let mut ctx = FileCtx::new(path, src);
    let spec = validate(&mut ctx);
    let mut diagnostics = ctx.diags;
    diagnostics.sort_by_key(|d| (d.line, d.col));
    let spec = if diagnostics.iter().any(Diagnostic::is_error) {
        None
    } else {
        spec
    };
    FileOutcome { spec, diagnostics }
}

/// Loads every tenant file in `dir`, then applies the cross-file checks. Never fails as a whole.
pub fn load_dir(dir: &Path) -> LoadedDir {
    let mut out = LoadedDir {
        complete: true,
        ..LoadedDir::default()
    };
    let mut paths = match list_dir(dir) {
        Ok(paths) => paths,
        Err(err) => {
            out.complete = false;
            out.diagnostics.push(Diagnostic::file(
                dir,
                Severity::Error,
                crate::error::chain(&err).lowercase_causes().to_string(),
            ));
            return out;
        }
    };
    paths.sort();
    out.checked = paths.len();
    for path in paths {
        let Ok(meta) = fs::metadata(&path) else {
            // A dangling symlink or a file removed while listing: report it like a read error.
            let outcome = read_tenant(&path);
            out.diagnostics.extend(outcome.diagnostics);
            continue;
        };
        if !meta.is_file() {
            out.diagnostics.push(Diagnostic::file(
                &path,
                Severity::Warning,
                "not a regular file, ignored",
            ));
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let outcome = read_tenant(&path);
        out.diagnostics.extend(outcome.diagnostics);
        // A file whose name is not a tenant id has no tenant to keep or fail; `read_tenant`
        // reported the name along with everything else in the file.
        let Ok(id) = TenantId::parse(stem) else {
            continue;
        };
        out.files.insert(id.clone(), path.clone());
        match outcome.spec {
            Some(spec) => {
                out.specs.insert(id, spec);
            }
            None => {
                out.failed.insert(id);
            }
        }
    }
    for (id, diag) in duplicate_phones(&out.specs, &out.files) {
        out.diagnostics.push(diag);
        if out.specs.remove(&id).is_some() {
            out.failed.insert(id);
        }
    }
    out.diagnostics
        .sort_by(|a, b| (&a.path, a.line, a.col).cmp(&(&b.path, b.line, b.col)));
    out
}

/// The cross-file phone check: every tenant whose phone number is also used by another tenant
/// gets an error pointing at its own `phone` value (the file is re-read to locate it; `files`
/// maps ids to their files). Returns the offending tenants with their diagnostics; the daemon
/// treats those tenants as failed.
pub fn duplicate_phones(
    specs: &BTreeMap<TenantId, TenantSpec>,
    files: &BTreeMap<TenantId, PathBuf>,
) -> Vec<(TenantId, Diagnostic)> {
    let mut by_phone: BTreeMap<&Phone, Vec<&TenantId>> = BTreeMap::new();
    for (id, spec) in specs {
        by_phone.entry(&spec.phone).or_default().push(id);
    }
    let mut out = Vec::new();
    for (phone, ids) in by_phone.into_iter().filter(|(_, ids)| ids.len() > 1) {
        for &id in &ids {
            let others: Vec<String> = ids
                .iter()
                .filter(|o| **o != id)
                .map(|o| match files.get(*o) {
                    Some(p) => format!("`{o}` ({})", p.display()),
                    None => format!("`{o}`"),
                })
                .collect();
            let msg = format!(
                "phone `{phone}` is also used by tenant {}; a number can be linked to one tenant only",
                others.join(", ")
            );
            let path = files
                .get(id)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(format!("{id}.toml")));
            out.push((id.clone(), locate_phone(&path, msg)));
        }
    }
    out
}

/// A diagnostic at the `phone` value of `path`, or at 1:1 when the file cannot be re-read.
fn locate_phone(path: &Path, msg: String) -> Diagnostic {
    let bytes = fs::read(path).unwrap_or_default();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    if let Ok(src) = std::str::from_utf8(bytes) {
        let (table, _) = DeTable::parse_recoverable(src);
        if let Some(v) = table.get_ref().get("phone") {
            return Diagnostic::error_at(path, src, v.span().start, msg);
        }
    }
    Diagnostic::file(path, Severity::Error, msg)
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_err = |source| Error::ReadTenantDir {
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = dir.join(entry.file_name());
        if is_tenant_file(&path) {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// Reads at most `MAX_FILE_BYTES + 1` bytes, so a huge file is refused without reading it all.
fn read_limited(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    let read = || -> std::io::Result<Vec<u8>> {
        let file = fs::File::open(path)?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read() {
        Ok(bytes) if bytes.len() as u64 > MAX_FILE_BYTES => {
            let size = fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
            Err(too_large(path, size))
        }
        Ok(bytes) => Ok(bytes),
        Err(source) => {
            let err = Error::ReadTenantFile {
                path: path.to_owned(),
                source,
            };
            Err(Diagnostic::file(
                path,
                Severity::Error,
                crate::error::chain(&err).lowercase_causes().to_string(),
            ))
        }
    }
}

fn too_large(path: &Path, size: u64) -> Diagnostic {
    Diagnostic::file(
        path,
        Severity::Error,
        format!("file is {size} bytes; tenant files are limited to {MAX_FILE_BYTES} bytes"),
    )
}

/// Walks the whole file, recording every finding; returns a spec when every field parsed.
fn validate(ctx: &mut FileCtx<'_>) -> Option<TenantSpec> {
    let (root, syntax) = DeTable::parse_recoverable(ctx.src);
    ctx.syntax_errors(&syntax);
    let root = root.get_ref();
    let id = id_from_file_name(ctx);
    if root.is_empty() && syntax.is_empty() {
        ctx.file_error(format!(
            "tenant file is empty; required fields are {}",
            list_all(&REQUIRED)
        ));
        return None;
    }
    ctx.unknown_keys(root, &TOP_KEYS, "");
    // A syntax error may have swallowed a field, so only a clean parse reports missing fields.
    if syntax.is_empty() {
        for key in REQUIRED {
            if !root.contains_key(key) {
                ctx.file_error(format!("missing required field `{key}`"));
            }
        }
    }

    let business_name = root
        .get("business_name")
        .and_then(|v| business_name(ctx, v));
    let phone = root.get("phone").and_then(|v| phone(ctx, v));
    let template = root
        .get("template")
        .and_then(|v| one_of(ctx, "template", v, &Template::ALL.map(Template::as_str)))
        .map(|i| Template::ALL[i]);
    let language = root
        .get("language")
        .and_then(|v| one_of(ctx, "language", v, &Language::ALL.map(Language::as_str)))
        .map(|i| Language::ALL[i]);
    let enabled = match root.get("enabled") {
        Some(v) => ctx.boolean("enabled", v),
        None => Some(true),
    };
    let timezone = root.get("timezone").and_then(|v| timezone(ctx, v));
    let hours = match root.get("hours") {
        Some(v) => hours(ctx, v).map(Some),
        None => Some(None),
    };
    let limits = match root.get("limits") {
        Some(v) => limits(ctx, v),
        None => Some(Limits::default()),
    };
    let replies = match root.get("replies") {
        Some(v) => replies(ctx, v, template, language),
        None => Some(BTreeMap::new()),
    };
    let restart = match root.get("restart") {
        Some(v) => restart(ctx, v).map(Some),
        None => Some(None),
    };

    Some(TenantSpec {
        id: id?,
        business_name: business_name?,
        phone: phone?,
        template: template?,
        language: language?,
        enabled: enabled?,
        timezone: timezone?,
        hours: hours?,
        limits: limits?,
        replies: replies?,
        restart: restart?,
    })
}

/// The tenant id the file's name gives (the name without `.toml`), or a finding about it.
fn id_from_file_name(ctx: &mut FileCtx<'_>) -> Option<TenantId> {
    let stem = ctx
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match TenantId::parse(&stem) {
        Ok(id) => Some(id),
        Err(err) => {
            ctx.file_error(format!(
                "bad file name: {err}; the file name without `.toml` is the tenant id"
            ));
            None
        }
    }
}

fn business_name(ctx: &mut FileCtx<'_>, v: &Spanned<DeValue<'_>>) -> Option<String> {
    let s = ctx.string("business_name", v)?;
    let n = s.chars().count();
    if s.trim().is_empty() {
        ctx.error(v.span().start, "`business_name` is empty");
        None
    } else if n > MAX_BUSINESS_NAME_CHARS {
        ctx.error(
            v.span().start,
            format!("`business_name` is {n} characters long; at most {MAX_BUSINESS_NAME_CHARS} are allowed"),
        );
        None
    } else if let Some((i, c)) = s.char_indices().find(|(_, c)| c.is_control()) {
        let at = ctx.offset_in_string(v.span(), s, i);
        ctx.error(
            at,
            format!("`business_name` contains the control character {c:?}"),
        );
        None
    } else {
        Some(s.to_owned())
    }
}

fn phone(ctx: &mut FileCtx<'_>, v: &Spanned<DeValue<'_>>) -> Option<Phone> {
    let s = match v.get_ref() {
        DeValue::Integer(i) => {
            ctx.error(
                v.span().start,
                format!("`phone` must be a string, found integer, did you mean `\"+{i}\"`?"),
            );
            return None;
        }
        _ => ctx.string("phone", v)?,
    };
    if let Some(p) = Phone::parse(s) {
        return Some(p);
    }
    let mut msg =
        format!("phone `{s}` is not in E.164 form (`+`, country code and number, 8 to 15 digits)");
    match phone_hint(s) {
        Some(p) => msg.push_str(&format!(", did you mean `{p}`?")),
        None if s.starts_with('0') => {
            msg.push_str("; write the country code instead of the leading 0, e.g. `+255712345678`")
        }
        None => {}
    }
    ctx.error(v.span().start, msg);
    None
}

/// The index of the value of `key` in `choices`, or an error with a suggestion.
fn one_of(
    ctx: &mut FileCtx<'_>,
    key: &str,
    v: &Spanned<DeValue<'_>>,
    choices: &[&str],
) -> Option<usize> {
    let s = ctx.string(key, v)?;
    if let Some(i) = choices.iter().position(|c| *c == s) {
        return Some(i);
    }
    let mut msg = format!("unknown {key} `{s}`");
    match suggest(s, choices.iter().copied()) {
        Some(c) => msg.push_str(&format!(", did you mean `{c}`?")),
        None => msg.push_str(&format!(" (expected {})", list(choices))),
    }
    ctx.error(v.span().start, msg);
    None
}

fn timezone(ctx: &mut FileCtx<'_>, v: &Spanned<DeValue<'_>>) -> Option<String> {
    let s = ctx.string("timezone", v)?;
    match jiff::tz::db().get(s) {
        Ok(tz) => {
            let name = tz.iana_name().unwrap_or(s).to_owned();
            if name != s {
                ctx.warning(
                    v.span().start,
                    format!("time zone `{s}` is spelled `{name}`"),
                );
            }
            Some(name)
        }
        Err(_) => {
            let mut msg = format!("unknown time zone `{s}`");
            let names: Vec<String> = jiff::tz::db()
                .available()
                .map(|n| n.as_str().to_owned())
                .collect();
            match suggest(s, names.iter().map(String::as_str)) {
                Some(c) => msg.push_str(&format!(", did you mean `{c}`?")),
                None => msg.push_str(" (expected an IANA name such as `Africa/Dar_es_Salaam`)"),
            }
            ctx.error(v.span().start, msg);
            None
        }
    }
}

fn hours(ctx: &mut FileCtx<'_>, v: &Spanned<DeValue<'_>>) -> Option<WeeklyHours> {
    let table = ctx.table("hours", v)?;
    let day_names = Weekday::ALL.map(Weekday::as_str);
    let mut week = WeeklyHours::default();
    let mut ok = true;
    for (key, value) in table {
        let name: &str = key.get_ref();
        let Some(i) = day_names.iter().position(|d| *d == name) else {
            let mut msg = format!("unknown day `{name}` in [hours]");
            match suggest(name, day_names) {
                Some(d) => msg.push_str(&format!(", did you mean `{d}`?")),
                None => msg.push_str(&format!(" (expected {})", list(&day_names))),
            }
            ctx.error(key.span().start, msg);
            ok = false;
            continue;
        };
        let Some(s) = ctx.string(&format!("hours.{name}"), value) else {
            ok = false;
            continue;
        };
        match parse_day_hours(s) {
            Ok(ranges) => {
                week.days.insert(Weekday::ALL[i], ranges);
            }
            Err(findings) => {
                ok = false;
                for (at, msg) in findings {
                    let offset = ctx.offset_in_string(value.span(), s, at);
                    ctx.error(offset, format!("hours.{name}: {msg}"));
                }
            }
        }
    }
    if ok && week.days.values().all(Vec::is_empty) {
        ctx.warning(
            v.span().start,
            "[hours] leaves every day closed; the bot will only send the closed reply \
             (remove [hours] to be always open)",
        );
    }
    ok.then_some(week)
}

fn limits(ctx: &mut FileCtx<'_>, v: &Spanned<DeValue<'_>>) -> Option<Limits> {
    let table = ctx.table("limits", v)?;
    ctx.unknown_keys(table, &LIMIT_KEYS, "[limits]");
    let mut limits = Limits::default();
    let mut ok = true;
    if let Some(value) = table.get("memory_max") {
        match ctx.string("limits.memory_max", value) {
            Some(text) => match crate::config::daemon::parse_bytes(text) {
                Ok(bytes) if bytes >= MIN_MEMORY_MAX => limits.memory_max = Some(bytes),
                Ok(_) => {
                    ctx.error(
                        value.span().start,
                        "`limits.memory_max` is below 64MiB; Chromium cannot run in that",
                    );
                    ok = false;
                }
                Err(why) => {
                    ctx.error(value.span().start, format!("`limits.memory_max`: {why}"));
                    ok = false;
                }
            },
            None => ok = false,
        }
    }
    for (key, slot) in LIMIT_KEYS.iter().zip([
        &mut limits.replies_per_minute,
        &mut limits.replies_per_contact_per_10min,
    ]) {
        if let Some(value) = table.get(*key) {
            match ctx.integer_in(&format!("limits.{key}"), value, 1..=600) {
                Some(n) => *slot = u32::try_from(n).unwrap_or(1),
                None => ok = false,
            }
        }
    }
    ok.then_some(limits)
}

fn replies(
    ctx: &mut FileCtx<'_>,
    v: &Spanned<DeValue<'_>>,
    template: Option<Template>,
    language: Option<Language>,
) -> Option<BTreeMap<Language, BTreeMap<ReplyKey, String>>> {
    let table = ctx.table("replies", v)?;
    let lang_names = Language::ALL.map(Language::as_str);
    let key_names = ReplyKey::ALL.map(ReplyKey::as_str);
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (lang_key, lang_value) in table {
        let lang_name: &str = lang_key.get_ref();
        let Some(li) = lang_names.iter().position(|l| *l == lang_name) else {
            let mut msg = format!("unknown language `{lang_name}` in [replies]");
            match suggest(lang_name, lang_names) {
                Some(l) => msg.push_str(&format!(", did you mean `{l}`?")),
                None => msg.push_str(&format!(" (expected {})", list(&lang_names))),
            }
            ctx.error(lang_key.span().start, msg);
            ok = false;
            continue;
        };
        let lang = Language::ALL[li];
        let Some(texts) = ctx.table(&format!("replies.{lang_name}"), lang_value) else {
            ok = false;
            continue;
        };
        if language.is_some_and(|l| l != lang) && !texts.is_empty() {
            ctx.warning(
                lang_key.span().start,
                format!(
                    "replies in `{lang_name}` are not used while `language` is `{}`",
                    language.map_or("", Language::as_str)
                ),
            );
        }
        let mut by_key = BTreeMap::new();
        for (key, value) in texts {
            let name: &str = key.get_ref();
            let Some(ki) = key_names.iter().position(|k| *k == name) else {
                let mut msg = format!("unknown reply `{lang_name}.{name}`");
                match suggest(name, key_names) {
                    Some(k) => msg.push_str(&format!(", did you mean `{lang_name}.{k}`?")),
                    None => msg.push_str(&format!(" (expected one of {})", list(&key_names))),
                }
                ctx.error(key.span().start, msg);
                ok = false;
                continue;
            };
            let reply_key = ReplyKey::ALL[ki];
            let field = format!("replies.{lang_name}.{name}");
            let Some(text) = ctx.string(&field, value) else {
                ok = false;
                continue;
            };
            if !reply_text_ok(ctx, &field, value, text, reply_key) {
                ok = false;
                continue;
            }
            if let Some(t) = template
                && !template_uses(t, reply_key)
            {
                ctx.warning(
                    key.span().start,
                    format!(
                        "reply `{lang_name}.{name}` is not used by the {} template",
                        t.as_str()
                    ),
                );
            }
            by_key.insert(reply_key, text.to_owned());
        }
        out.insert(lang, by_key);
    }
    ok.then_some(out)
}

fn reply_text_ok(
    ctx: &mut FileCtx<'_>,
    field: &str,
    value: &Spanned<DeValue<'_>>,
    text: &str,
    key: ReplyKey,
) -> bool {
    if text.trim().is_empty() {
        ctx.error(value.span().start, format!("`{field}` is empty"));
        return false;
    }
    let n = text.chars().count();
    if n > MAX_REPLY_CHARS {
        ctx.error(
            value.span().start,
            format!("`{field}` is {n} characters long; at most {MAX_REPLY_CHARS} are allowed"),
        );
        return false;
    }
    let findings = check_placeholders(text, key.extra_placeholders());
    for (at, msg) in &findings {
        let offset = ctx.offset_in_string(value.span(), text, *at);
        ctx.error(offset, format!("{field}: {msg}"));
    }
    findings.is_empty()
}

/// Whether a template ever sends the reply `key`.
fn template_uses(template: Template, key: ReplyKey) -> bool {
    match key {
        ReplyKey::Booking => template == Template::Booking,
        ReplyKey::Price | ReplyKey::Order => template == Template::Ecommerce,
        ReplyKey::Problem => template == Template::Support,
        _ => true,
    }
}

fn restart(ctx: &mut FileCtx<'_>, v: &Spanned<DeValue<'_>>) -> Option<String> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Datetime(d) => Some(d.to_string()),
        DeValue::Integer(i) => Some(i.to_string()),
        _ => {
            ctx.wrong_type("restart", v, "a string");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
business_name = "Mama Asha Salon"
phone = "+255712345678"
template = "booking"
language = "sw"
timezone = "Africa/Dar_es_Salaam"
"#;

    fn lines(outcome: &FileOutcome) -> Vec<String> {
        outcome.diagnostics.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn a_minimal_file_gets_the_documented_defaults() {
        let out = parse_tenant(Path::new("t/mama-asha.toml"), GOOD.as_bytes());
        assert_eq!(lines(&out), Vec::<String>::new());
        let spec = out.spec.unwrap();
        assert_eq!(spec.id.as_str(), "mama-asha");
        assert!(spec.enabled);
        assert_eq!(spec.hours, None);
        assert_eq!(spec.limits, Limits::default());
        assert!(spec.replies.is_empty());
        assert_eq!(spec.restart, None);
    }

    #[test]
    fn is_tenant_file_skips_dotfiles_and_editor_files() {
        for good in ["a.toml", "dir/acme-1.toml", "Bad_Name.toml"] {
            assert!(is_tenant_file(Path::new(good)), "{good}");
        }
        for bad in [
            ".a.toml",
            ".#a.toml",
            "a.toml~",
            ".a.toml.swp",
            "#a.toml#",
            "a.yaml",
            ".toml",
            "a.toml.bak",
        ] {
            assert!(!is_tenant_file(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn every_error_of_a_file_is_reported_in_order() {
        let src = "bussiness_name = \"x\"\nphone = \"123\"\ntemplate = \"bookin\"\n";
        let out = parse_tenant(Path::new("a.toml"), src.as_bytes());
        assert_eq!(
            lines(&out),
            vec![
                "a.toml:1:1: error: unknown field `bussiness_name`, did you mean `business_name`?",
                "a.toml:1:1: error: missing required field `business_name`",
                "a.toml:1:1: error: missing required field `language`",
                "a.toml:1:1: error: missing required field `timezone`",
                "a.toml:2:9: error: phone `123` is not in E.164 form (`+`, country code and number, 8 to 15 digits)",
                "a.toml:3:12: error: unknown template `bookin`, did you mean `booking`?",
            ]
        );
        assert!(out.spec.is_none());
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_accepted() {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend(GOOD.replace('\n', "\r\n").bytes());
        let out = parse_tenant(Path::new("a.toml"), &bytes);
        assert!(out.diagnostics.is_empty(), "{:?}", out.diagnostics);
        assert!(out.spec.is_some());
    }

    #[test]
    fn timezone_case_is_corrected_with_a_warning() {
        let src = GOOD.replace("Africa/Dar_es_Salaam", "africa/dar_es_salaam");
        let out = parse_tenant(Path::new("a.toml"), src.as_bytes());
        assert_eq!(out.spec.unwrap().timezone, "Africa/Dar_es_Salaam");
        assert_eq!(out.diagnostics.len(), 1);
        assert_eq!(out.diagnostics[0].severity, Severity::Warning);
    }
}
