//! The validated tenant specification: the desired state of one business's bot.
//!
//! Owns `TenantSpec` and its newtypes, the stable spec hash, and the field classes that decide
//! whether a change is hot-reloaded or needs a worker restart. It does not parse TOML (that is
//! `load.rs` and `validate.rs`); every value here has already been checked, so holders never
//! re-check.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A tenant id: the file stem, `^[a-z0-9][a-z0-9-]{0,62}$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

/// Why a string is not a tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    /// The id is empty.
    #[error("tenant id is empty")]
    Empty,
    /// The id is longer than 63 characters.
    #[error("tenant id `{0}` is longer than 63 characters")]
    TooLong(String),
    /// The id does not start with a lowercase letter or digit.
    #[error("tenant id `{0}` must start with a lowercase letter or a digit")]
    BadStart(String),
    /// The id holds a character other than `a-z`, `0-9` and `-`.
    #[error("tenant id `{0}` may only contain lowercase letters, digits and `-`")]
    BadChar(String),
}

impl TenantId {
    /// Checks `s` against `^[a-z0-9][a-z0-9-]{0,62}$`.
    pub fn parse(s: &str) -> Result<Self, TenantIdError> {
        let mut chars = s.chars();
        let Some(first) = chars.next() else {
            return Err(TenantIdError::Empty);
        };
        if s.len() > 63 {
            return Err(TenantIdError::TooLong(s.to_owned()));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(TenantIdError::BadStart(s.to_owned()));
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(TenantIdError::BadChar(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = TenantIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A phone number in E.164 form: `+` then 8 to 15 digits, the first not zero.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Phone(String);

impl Phone {
    /// Checks E.164 form; `None` when `s` is not a valid number.
    pub fn parse(s: &str) -> Option<Self> {
        let digits = s.strip_prefix('+')?;
        let ok = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        ok.then(|| Self(s.to_owned()))
    }

    /// The number with its leading `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits only, as WhatsApp uses them in chat ids (`255712345678@c.us`).
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bot template a tenant runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    /// Appointments: salons, clinics, garages.
    Booking,
    /// Shops: prices and orders.
    Ecommerce,
    /// Customer support: problems and questions.
    Support,
}

impl Template {
    /// Every template, in file-format spelling order.
    pub const ALL: [Template; 3] = [Template::Booking, Template::Ecommerce, Template::Support];

    /// The spelling used in tenant files.
    pub fn as_str(self) -> &'static str {
        match self {
            Template::Booking => "booking",
            Template::Ecommerce => "ecommerce",
            Template::Support => "support",
        }
    }
}

/// The language the bot answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Swahili.
    Sw,
    /// English.
    En,
}

impl Language {
    /// Every language, in file-format spelling order.
    pub const ALL: [Language; 2] = [Language::Sw, Language::En];

    /// The spelling used in tenant files.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Sw => "sw",
            Language::En => "en",
        }
    }
}

/// A weekday, Monday first (the order of `[hours]` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Monday to Sunday.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The key used in the `[hours]` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
            Weekday::Sun => "sun",
        }
    }
}

/// Minutes since local midnight, `0..=1440` (1440 only as the end of a range: `18:00-24:00`).
pub type Minute = u16;

/// One opening range on a day, `start < end`, in local minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpenRange {
    /// First open minute.
    pub start: Minute,
    /// First closed minute after the range (exclusive end).
    pub end: Minute,
}

/// Opening hours for a week. A day missing from the map is closed; a tenant with no `[hours]`
/// table has `TenantSpec::hours == None` and is always open.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WeeklyHours {
    /// Sorted, non-overlapping ranges per day; an empty vector means closed that day.
    pub days: BTreeMap<Weekday, Vec<OpenRange>>,
}

/// Reply limits of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limits {
    /// Replies per minute for the whole tenant (1..=600, default 10).
    pub replies_per_minute: u32,
    /// Replies per contact per ten minutes (1..=600, default 20).
    pub replies_per_contact_per_10min: u32,
    /// This tenant's own worker memory limit in bytes (the process tree's PSS), overriding
    /// the daemon's `worker.memory_max`. Left out of the serialized form when unset, so the
    /// spec hash of files without it does not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            replies_per_minute: 10,
            replies_per_contact_per_10min: 20,
            memory_max: None,
        }
    }
}

/// A reply text the tenant file may override, per language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKey {
    /// The numbered menu (any message no keyword matches).
    Menu,
    /// The booking prompt (booking template, booking keywords).
    Booking,
    /// The price prompt (ecommerce template).
    Price,
    /// The order prompt (ecommerce template).
    Order,
    /// The problem prompt (support template).
    Problem,
    /// Answer to menu item 1.
    Menu1,
    /// Answer to menu item 2.
    Menu2,
    /// Answer to menu item 3.
    Menu3,
    /// Answer to menu item 4.
    Menu4,
    /// Outside business hours; may use `{opens}`.
    Closed,
    /// First refusal by a rate limit.
    SlowDown,
    /// A chat's queue is full.
    PleaseWait,
    /// Confirmation of an opt-out ("stop", "acha").
    OptedOut,
    /// Confirmation of an opt-in after an opt-out ("start", "anza").
    OptedIn,
}

impl ReplyKey {
    /// Every key, in a stable order.
    pub const ALL: [ReplyKey; 14] = [
        ReplyKey::Menu,
        ReplyKey::Booking,
        ReplyKey::Price,
        ReplyKey::Order,
        ReplyKey::Problem,
        ReplyKey::Menu1,
        ReplyKey::Menu2,
        ReplyKey::Menu3,
        ReplyKey::Menu4,
        ReplyKey::Closed,
        ReplyKey::SlowDown,
        ReplyKey::PleaseWait,
        ReplyKey::OptedOut,
        ReplyKey::OptedIn,
    ];

    /// The key as written in `[replies]` (`sw.menu`, `en.menu_1`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyKey::Menu => "menu",
            ReplyKey::Booking => "booking",
            ReplyKey::Price => "price",
            ReplyKey::Order => "order",
            ReplyKey::Problem => "problem",
            ReplyKey::Menu1 => "menu_1",
            ReplyKey::Menu2 => "menu_2",
            ReplyKey::Menu3 => "menu_3",
            ReplyKey::Menu4 => "menu_4",
            ReplyKey::Closed => "closed",
            ReplyKey::SlowDown => "slow_down",
            ReplyKey::PleaseWait => "please_wait",
            ReplyKey::OptedOut => "opted_out",
            ReplyKey::OptedIn => "opted_in",
        }
    }

    /// The placeholders this text may use besides `{business}`.
    pub fn extra_placeholders(self) -> &'static [&'static str] {
        match self {
            ReplyKey::Closed => &["opens"],
            _ => &[],
        }
    }
}

/// The validated desired state of one tenant. Built only by the loader, so every field holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSpec {
    /// The file stem.
    pub id: TenantId,
    /// Shown to customers as `{business}`.
    pub business_name: String,
    /// The WhatsApp number that will be linked.
    pub phone: Phone,
    /// Which bot answers.
    pub template: Template,
    /// Which language it answers in.
    pub language: Language,
    /// `false` = paused: worker stopped, session kept.
    pub enabled: bool,
    /// IANA time zone name, checked against the bundled tz database.
    pub timezone: String,
    /// Opening hours; `None` = always open.
    pub hours: Option<WeeklyHours>,
    /// Reply limits.
    pub limits: Limits,
    /// Reply overrides, already placeholder-checked.
    pub replies: BTreeMap<Language, BTreeMap<ReplyKey, String>>,
    /// Any new value restarts the worker once.
    pub restart: Option<String>,
    /// Mark a chat read on the phone after the bot answers it (default on). Left out of the
    /// serialized form while on, so specs written before the field hash as they did.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub mark_read: bool,
}

fn yes() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_true(value: &bool) -> bool {
    *value
}

/// A 256-bit digest of a spec's canonical JSON form, as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpecHash(pub String);

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a change between two specs requires of a running worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Nothing a worker sees changed.
    None,
    /// Only bot fields changed: SIGHUP, browser and session stay up.
    Reload,
    /// A process field changed: stop and start the worker.
    Restart,
}

/// How a field change is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldClass {
    /// Applied by SIGHUP to the running worker.
    HotReload,
    /// Needs a new worker process.
    Restart,
    /// Decides whether a worker runs at all (handled by the planner, not by reload/restart).
    Lifecycle,
}

impl TenantSpec {
    /// The stable hash of this spec. Serialization goes through ordered maps and a fixed field
    /// order, so equal specs hash equally across runs, hosts and versions that keep the format.
    pub fn hash(&self) -> SpecHash {
        // INVARIANT: TenantSpec holds only strings, numbers, bools, enums and BTreeMaps, which
        // serde_json serializes without error.
        #[allow(clippy::expect_used)]
        let bytes = serde_json::to_vec(self).expect("tenant spec serializes to JSON");
        SpecHash(hex::encode(Sha256::digest(&bytes)))
    }

    /// The fields that differ between `self` (old) and `new`, by file name, with their class.
    pub fn diff(&self, new: &TenantSpec) -> Vec<(&'static str, FieldClass)> {
        let mut out = Vec::new();
        let mut check = |name: &'static str, class: FieldClass, differs: bool| {
            if differs {
                out.push((name, class));
            }
        };
        check(
            "business_name",
            FieldClass::HotReload,
            self.business_name != new.business_name,
        );
        check("phone", FieldClass::Restart, self.phone != new.phone);
        check(
            "template",
            FieldClass::HotReload,
            self.template != new.template,
        );
        check(
            "language",
            FieldClass::HotReload,
            self.language != new.language,
        );
        check(
            "enabled",
            FieldClass::Lifecycle,
            self.enabled != new.enabled,
        );
        check(
            "timezone",
            FieldClass::HotReload,
            self.timezone != new.timezone,
        );
        check("hours", FieldClass::HotReload, self.hours != new.hours);
        check("limits", FieldClass::HotReload, self.limits != new.limits);
        check(
            "replies",
            FieldClass::HotReload,
            self.replies != new.replies,
        );
        check("restart", FieldClass::Restart, self.restart != new.restart);
        check(
            "mark_read",
            FieldClass::HotReload,
            self.mark_read != new.mark_read,
        );
        // `id` never differs: specs are compared per tenant id.
        out
    }

    /// Reload, restart or nothing, for a worker running `self` when the desired spec is `new`.
    /// `enabled` is not part of this answer: starting and stopping is the planner's business.
    pub fn change_kind(&self, new: &TenantSpec) -> ChangeKind {
        self.diff(new)
            .iter()
            .fold(ChangeKind::None, |acc, (_, class)| match class {
                FieldClass::Restart => ChangeKind::Restart,
                FieldClass::HotReload => acc.max(ChangeKind::Reload),
                FieldClass::Lifecycle => acc,
            })
    }
}

#[cfg(test)]
impl TenantSpec {
    /// An enabled booking bot in Swahili on Dar es Salaam time, with no hours, the default
    /// limits and replies, and no restart token: the unit tests' tenant.
    pub(crate) fn for_tests(id: TenantId, business_name: String, phone: Phone) -> Self {
        TenantSpec {
            id,
            business_name,
            phone,
            template: Template::Booking,
            language: Language::Sw,
            enabled: true,
            timezone: "Africa/Dar_es_Salaam".to_owned(),
            hours: None,
            limits: Limits::default(),
            replies: BTreeMap::new(),
            restart: None,
            mark_read: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TenantSpec {
        TenantSpec::for_tests(
            TenantId::parse("mama-asha").unwrap(),
            "Mama Asha Salon".to_owned(),
            Phone::parse("+255712345678").unwrap(),
        )
    }

    #[track_caller]
    fn check(change: impl FnOnce(&mut TenantSpec), field: &str, kind: ChangeKind) {
        let old = spec();
        let mut new = spec();
        change(&mut new);
        assert_eq!(old.change_kind(&new), kind, "changing {field}");
        let diff = old.diff(&new);
        assert_eq!(diff.len(), 1, "changing {field}: {diff:?}");
        assert_eq!(diff[0].0, field);
        assert_ne!(old.hash(), new.hash(), "changing {field} changes the hash");
    }

    #[test]
    fn equal_specs_need_nothing_and_hash_equally() {
        assert_eq!(spec().change_kind(&spec()), ChangeKind::None);
        assert!(spec().diff(&spec()).is_empty());
        assert_eq!(spec().hash(), spec().hash());
    }

    #[test]
    fn bot_fields_are_hot_reloaded() {
        use ChangeKind::Reload;
        check(|s| s.business_name = "Asha".into(), "business_name", Reload);
        check(|s| s.template = Template::Support, "template", Reload);
        check(|s| s.language = Language::En, "language", Reload);
        check(|s| s.timezone = "Africa/Nairobi".into(), "timezone", Reload);
        check(|s| s.hours = Some(WeeklyHours::default()), "hours", Reload);
        check(|s| s.limits.replies_per_minute = 11, "limits", Reload);
        check(
            |s| s.limits.replies_per_contact_per_10min = 5,
            "limits",
            Reload,
        );
        check(
            |s| {
                s.replies
                    .entry(Language::Sw)
                    .or_default()
                    .insert(ReplyKey::Menu, "Karibu".into());
            },
            "replies",
            Reload,
        );
        check(|s| s.mark_read = false, "mark_read", Reload);
    }

    #[test]
    fn process_fields_restart_the_worker() {
        use ChangeKind::Restart;
        check(
            |s| s.phone = Phone::parse("+255700000001").unwrap(),
            "phone",
            Restart,
        );
        check(
            |s| s.restart = Some("2026-11-28".into()),
            "restart",
            Restart,
        );
    }

    #[test]
    fn enabled_is_lifecycle_and_needs_no_reload_or_restart() {
        check(|s| s.enabled = false, "enabled", ChangeKind::None);
        let mut new = spec();
        new.enabled = false;
        assert_eq!(spec().diff(&new), vec![("enabled", FieldClass::Lifecycle)]);
    }

    #[test]
    fn a_restart_field_wins_over_reload_fields() {
        let mut new = spec();
        new.business_name = "Asha".into();
        new.phone = Phone::parse("+255700000001").unwrap();
        assert_eq!(spec().change_kind(&new), ChangeKind::Restart);
    }

    #[test]
    fn the_hash_is_stable_across_versions() {
        // A changed hash restarts nothing by itself, but it is stored and compared across
        // daemon versions: this value may only change with a deliberate format change.
        // It is the SHA-256 of the canonical JSON below, computed independently.
        let canonical = r#"{"id":"mama-asha","business_name":"Mama Asha Salon","phone":"+255712345678","template":"booking","language":"sw","enabled":true,"timezone":"Africa/Dar_es_Salaam","hours":null,"limits":{"replies_per_minute":10,"replies_per_contact_per_10min":20},"replies":{},"restart":null}"#;
        assert_eq!(serde_json::to_string(&spec()).unwrap(), canonical);
        assert_eq!(
            spec().hash().0,
            "8b1054fc60f6c90f3b62e618a1f6cbe20ab2ce08c4aaef049c07425681832026"
        );
        // `mark_read` appears only when off; a stored spec without it reads as on.
        let off = TenantSpec {
            mark_read: false,
            ..spec()
        };
        let json = serde_json::to_string(&off).unwrap();
        assert!(
            json.ends_with(r#""restart":null,"mark_read":false}"#),
            "{json}"
        );
        let read: TenantSpec = serde_json::from_str(canonical).unwrap();
        assert!(read.mark_read);
    }
}
