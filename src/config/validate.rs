//! Validating one tenant file: walking its TOML table and turning every field into its typed
//! value or into the findings it deserves, all of them, with their positions.
//!
//! Owns the file format's keys (which are known, which are required, what `[limits]`,
//! `[hours]` and `[replies]` hold) and the checks of one field at a time. It does no I/O and
//! knows nothing of other files: reading, size and encoding checks and the checks across
//! files are `load.rs`; the grammars inside one string are `fields.rs`.

use std::collections::BTreeMap;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::fields::{check_placeholders, parse_day_hours, phone_hint};
use crate::config::tenant::{
    Language, Limits, Phone, ReplyKey, Template, TenantId, TenantSpec, Weekday, WeeklyHours,
};
use crate::config::walk::{FileCtx, list, list_all, suggest};

/// The longest `business_name`, in characters.
pub const MAX_BUSINESS_NAME_CHARS: usize = 100;

/// The longest reply text, in characters (WhatsApp's limit for one text message).
pub const MAX_REPLY_CHARS: usize = 4096;

/// What a tenant file may contain at its top level.
const TOP_KEYS: [&str; 11] = [
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
    "mark_read",
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

/// Walks the whole file, recording every finding; returns a spec when every field parsed.
pub(crate) fn validate(ctx: &mut FileCtx<'_>) -> Option<TenantSpec> {
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
    let mark_read = match root.get("mark_read") {
        Some(v) => ctx.boolean("mark_read", v),
        None => Some(true),
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
        mark_read: mark_read?,
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
    find_name(ctx, v.span().start, s, choices, || {
        format!("unknown {key} `{s}`")
    })
}

/// The index of `name` in `names`; otherwise reports `unknown()` at `offset`, followed by the
/// nearest of `names` as a suggestion or, when none is near, by all of them.
fn find_name(
    ctx: &mut FileCtx<'_>,
    offset: usize,
    name: &str,
    names: &[&str],
    unknown: impl FnOnce() -> String,
) -> Option<usize> {
    if let Some(i) = names.iter().position(|n| *n == name) {
        return Some(i);
    }
    let mut msg = unknown();
    match suggest(name, names.iter().copied()) {
        Some(n) => msg.push_str(&format!(", did you mean `{n}`?")),
        None => msg.push_str(&format!(" (expected {})", list(names))),
    }
    ctx.error(offset, msg);
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
        let Some(i) = find_name(ctx, key.span().start, name, &day_names, || {
            format!("unknown day `{name}` in [hours]")
        }) else {
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
        let Some(li) = find_name(ctx, lang_key.span().start, lang_name, &lang_names, || {
            format!("unknown language `{lang_name}` in [replies]")
        }) else {
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
