//! Business hours: whether a tenant is open at an instant in its own time zone, when it opens
//! next, and both said in words (Swahili or English).
//!
//! Owns the arithmetic over `WeeklyHours` (local minutes per weekday, ranges may end at 24:00)
//! and the wording of `{opens}` and of the support template's working-hours answer. It does not
//! read the clock (callers pass the instant) and does not decide what the bot does when closed.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::config::tenant::{Language, Minute, Weekday, WeeklyHours};

/// The next opening, relative to the instant asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextOpen {
    /// 0 = later today, 1 = tomorrow, up to 7 = the same weekday next week.
    pub days_ahead: u8,
    /// The weekday it opens on.
    pub day: Weekday,
    /// The local minute it opens at.
    pub minute: Minute,
}

/// Open or closed at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Within an opening range.
    Open,
    /// Outside every range; `next` is `None` when the week has no opening range at all.
    Closed {
        /// When it opens next.
        next: Option<NextOpen>,
    },
}

fn weekday_of(day: jiff::civil::Weekday) -> Weekday {
    match day {
        jiff::civil::Weekday::Monday => Weekday::Mon,
        jiff::civil::Weekday::Tuesday => Weekday::Tue,
        jiff::civil::Weekday::Wednesday => Weekday::Wed,
        jiff::civil::Weekday::Thursday => Weekday::Thu,
        jiff::civil::Weekday::Friday => Weekday::Fri,
        jiff::civil::Weekday::Saturday => Weekday::Sat,
        jiff::civil::Weekday::Sunday => Weekday::Sun,
    }
}

fn index_of(day: Weekday) -> usize {
    Weekday::ALL.iter().position(|d| *d == day).unwrap_or(0)
}

/// Whether `hours` are open at `now` in `tz`. `None` hours mean always open.
pub fn opening(hours: Option<&WeeklyHours>, tz: &TimeZone, now: Timestamp) -> Opening {
    let Some(hours) = hours else {
        return Opening::Open;
    };
    let local = now.to_zoned_datetime(tz.clone());
    let today = weekday_of(local.weekday());
    // Minutes are at most 1439 here, so the cast cannot truncate.
    let minute = (local.hour() as u16) * 60 + local.minute() as u16;
    let ranges = |day: Weekday| hours.days.get(&day).map(Vec::as_slice).unwrap_or(&[]);
    if ranges(today)
        .iter()
        .any(|r| r.start <= minute && minute < r.end)
    {
        return Opening::Open;
    }
    if let Some(r) = ranges(today).iter().find(|r| r.start > minute) {
        return Opening::Closed {
            next: Some(NextOpen {
                days_ahead: 0,
                day: today,
                minute: r.start,
            }),
        };
    }
    let start = index_of(today);
    for ahead in 1..=7u8 {
        let day = Weekday::ALL[(start + usize::from(ahead)) % 7];
        if let Some(r) = ranges(day).first() {
            // A range that ends at midnight and one that starts at 00:00 the next day are one
            // stretch; the caller only reaches here when closed, so the first start is right.
            return Opening::Closed {
                next: Some(NextOpen {
                    days_ahead: ahead,
                    day,
                    minute: r.start,
                }),
            };
        }
    }
    Opening::Closed { next: None }
}

/// The weekday's full name.
pub fn day_name(day: Weekday, language: Language) -> &'static str {
    match (language, day) {
        (Language::Sw, Weekday::Mon) => "Jumatatu",
        (Language::Sw, Weekday::Tue) => "Jumanne",
        (Language::Sw, Weekday::Wed) => "Jumatano",
        (Language::Sw, Weekday::Thu) => "Alhamisi",
        (Language::Sw, Weekday::Fri) => "Ijumaa",
        (Language::Sw, Weekday::Sat) => "Jumamosi",
        (Language::Sw, Weekday::Sun) => "Jumapili",
        (Language::En, Weekday::Mon) => "Monday",
        (Language::En, Weekday::Tue) => "Tuesday",
        (Language::En, Weekday::Wed) => "Wednesday",
        (Language::En, Weekday::Thu) => "Thursday",
        (Language::En, Weekday::Fri) => "Friday",
        (Language::En, Weekday::Sat) => "Saturday",
        (Language::En, Weekday::Sun) => "Sunday",
    }
}

/// `HH:MM` for a local minute (1440 is `24:00`).
pub fn clock_time(minute: Minute) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// The `{opens}` text: "leo saa 14:00" / "today at 14:00", "kesho saa 08:00" / "tomorrow at
/// 08:00", "Jumatatu saa 08:00" / "Monday at 08:00"; "hivi karibuni" / "soon" when the week
/// has no opening range.
pub fn describe_next(next: Option<NextOpen>, language: Language) -> String {
    let Some(next) = next else {
        return match language {
            Language::Sw => "hivi karibuni".to_owned(),
            Language::En => "soon".to_owned(),
        };
    };
    let time = clock_time(next.minute);
    let day = match (next.days_ahead, language) {
        (0, Language::Sw) => "leo",
        (0, Language::En) => "today",
        (1, Language::Sw) => "kesho",
        (1, Language::En) => "tomorrow",
        (_, language) => day_name(next.day, language),
    };
    match language {
        Language::Sw => format!("{day} saa {time}"),
        Language::En => format!("{day} at {time}"),
    }
}

/// The week in words, consecutive days with equal hours merged: "Monday–Friday 08:00–17:00;
/// Saturday 09:00–13:00; Sunday closed". Always open when `hours` is `None`.
pub fn describe_week(hours: Option<&WeeklyHours>, language: Language) -> String {
    let Some(hours) = hours else {
        return match language {
            Language::Sw => "tuko wazi kila siku, saa zote".to_owned(),
            Language::En => "open every day, around the clock".to_owned(),
        };
    };
    let closed = match language {
        Language::Sw => "imefungwa",
        Language::En => "closed",
    };
    let text_of = |day: Weekday| {
        let ranges = hours.days.get(&day).map(Vec::as_slice).unwrap_or(&[]);
        if ranges.is_empty() {
            closed.to_owned()
        } else {
            ranges
                .iter()
                .map(|r| format!("{}–{}", clock_time(r.start), clock_time(r.end)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < 7 {
        let first = Weekday::ALL[i];
        let text = text_of(first);
        let mut j = i;
        while j + 1 < 7 && text_of(Weekday::ALL[j + 1]) == text {
            j += 1;
        }
        let days = if i == j {
            day_name(first, language).to_owned()
        } else {
            format!(
                "{}–{}",
                day_name(first, language),
                day_name(Weekday::ALL[j], language)
            )
        };
        parts.push(format!("{days} {text}"));
        i = j + 1;
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tenant::OpenRange;

    fn week(days: &[(Weekday, &[(u16, u16)])]) -> WeeklyHours {
        WeeklyHours {
            days: days
                .iter()
                .map(|(d, rs)| {
                    (
                        *d,
                        rs.iter()
                            .map(|&(start, end)| OpenRange { start, end })
                            .collect(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn the_week_merges_equal_neighbouring_days() {
        let w = week(&[
            (Weekday::Mon, &[(480, 1020)]),
            (Weekday::Tue, &[(480, 1020)]),
            (Weekday::Sat, &[(540, 780)]),
        ]);
        assert_eq!(
            describe_week(Some(&w), Language::En),
            "Monday–Tuesday 08:00–17:00; Wednesday–Friday closed; Saturday 09:00–13:00; Sunday closed"
        );
    }

    #[test]
    fn next_opening_is_worded_relative_to_today() {
        let next = |days_ahead| {
            Some(NextOpen {
                days_ahead,
                day: Weekday::Mon,
                minute: 480,
            })
        };
        assert_eq!(describe_next(next(0), Language::En), "today at 08:00");
        assert_eq!(describe_next(next(1), Language::Sw), "kesho saa 08:00");
        assert_eq!(describe_next(next(3), Language::Sw), "Jumatatu saa 08:00");
        assert_eq!(describe_next(None, Language::En), "soon");
    }
}
