//! What the bot answers, without a store: every row of the three templates in both languages,
//! the numbered menu, overrides, and business hours (midnight ends, closed days, several ranges
//! a day, time zones far from UTC), through the public `preview` of the pipeline's text step.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use flowhq::config::tenant::{OpenRange, ReplyKey, Weekday, WeeklyHours};
use flowhq::config::{Language, Template, TenantSpec};
use flowhq::worker::bot::hours::{self, NextOpen, Opening};
use flowhq::worker::bot::{preview, reply};
use jiff::Timestamp;
use jiff::civil::date;
use jiff::tz::TimeZone;

use crate::support::records;

const B: &str = "Mama Asha";

fn spec(template: Template, language: Language) -> TenantSpec {
    TenantSpec {
        template,
        language,
        ..records::spec("mama-asha", B)
    }
}

fn now() -> Timestamp {
    "2026-11-30T09:00:00Z".parse().unwrap()
}

#[test]
fn every_template_row_answers_with_the_original_text_in_both_languages() {
    use Language::{En, Sw};
    use Template::{Booking, Ecommerce, Support};
    let rows: &[(Template, Language, &str, &str)] = &[
        // Booking: intent keywords in both languages, case-insensitive substrings.
        (
            Booking,
            Sw,
            "Nataka booking",
            "Karibu Mama Asha. Tafadhali taja huduma unayotaka na tarehe (mf: Facial, 26 Feb).",
        ),
        (
            Booking,
            Sw,
            "miadi kesho",
            "Karibu Mama Asha. Tafadhali taja huduma unayotaka na tarehe (mf: Facial, 26 Feb).",
        ),
        (
            Booking,
            Sw,
            "Huduma",
            "Karibu Mama Asha. Tafadhali taja huduma unayotaka na tarehe (mf: Facial, 26 Feb).",
        ),
        (
            Booking,
            Sw,
            "SERVICE please",
            "Karibu Mama Asha. Tafadhali taja huduma unayotaka na tarehe (mf: Facial, 26 Feb).",
        ),
        (
            Booking,
            Sw,
            "Habari",
            "Karibu Mama Asha. Andika: 1) Booking 2) Huduma 3) Bei 4) Mawasiliano",
        ),
        (
            Booking,
            Sw,
            "",
            "Karibu Mama Asha. Andika: 1) Booking 2) Huduma 3) Bei 4) Mawasiliano",
        ),
        (
            Booking,
            En,
            "I want to BOOK",
            "Welcome to Mama Asha. Please tell us what service you want and the date (e.g., Facial, Feb 26).",
        ),
        (
            Booking,
            En,
            "services?",
            "Welcome to Mama Asha. Please tell us what service you want and the date (e.g., Facial, Feb 26).",
        ),
        (
            Booking,
            En,
            "miadi",
            "Welcome to Mama Asha. Please tell us what service you want and the date (e.g., Facial, Feb 26).",
        ),
        (
            Booking,
            En,
            "hello",
            "Welcome to Mama Asha. Reply with: 1) Booking 2) Services 3) Prices 4) Contact",
        ),
        // Ecommerce: price before order.
        (
            Ecommerce,
            Sw,
            "bei gani?",
            "Karibu Mama Asha. Tafadhali taja bidhaa unayotaka kujua bei.",
        ),
        (
            Ecommerce,
            Sw,
            "Price",
            "Karibu Mama Asha. Tafadhali taja bidhaa unayotaka kujua bei.",
        ),
        (
            Ecommerce,
            Sw,
            "gharama ya order",
            "Karibu Mama Asha. Tafadhali taja bidhaa unayotaka kujua bei.",
        ),
        (
            Ecommerce,
            Sw,
            "nataka kuagiza",
            "Karibu Mama Asha. Tafadhali taja bidhaa na idadi unayotaka.",
        ),
        (
            Ecommerce,
            Sw,
            "ORDER",
            "Karibu Mama Asha. Tafadhali taja bidhaa na idadi unayotaka.",
        ),
        (
            Ecommerce,
            Sw,
            "mambo",
            "Karibu Mama Asha. Andika: 1) Orodha ya bidhaa 2) Bei 3) Agiza 4) Usafiri",
        ),
        (
            Ecommerce,
            En,
            "Prices?",
            "Welcome to Mama Asha. Please tell us which product you want to know the price for.",
        ),
        (
            Ecommerce,
            En,
            "price of my order",
            "Welcome to Mama Asha. Please tell us which product you want to know the price for.",
        ),
        (
            Ecommerce,
            En,
            "I want to order",
            "Welcome to Mama Asha. Please tell us what product and quantity you want to order.",
        ),
        (
            Ecommerce,
            En,
            "bei",
            "Welcome to Mama Asha. Reply with: 1) Products 2) Prices 3) Order 4) Delivery",
        ),
        (
            Ecommerce,
            En,
            "hi",
            "Welcome to Mama Asha. Reply with: 1) Products 2) Prices 3) Order 4) Delivery",
        ),
        // Support: the problem prompt names no business.
        (
            Support,
            Sw,
            "nina shida",
            "Samahani kwa usumbufu. Tafadhali elezea shida yako kwa undani tutakusaidia.",
        ),
        (
            Support,
            Sw,
            "Tatizo la malipo",
            "Samahani kwa usumbufu. Tafadhali elezea shida yako kwa undani tutakusaidia.",
        ),
        (
            Support,
            Sw,
            "problem",
            "Samahani kwa usumbufu. Tafadhali elezea shida yako kwa undani tutakusaidia.",
        ),
        (
            Support,
            Sw,
            "habari",
            "Karibu Mama Asha. Andika: 1) Shida 2) Maswali 3) Mawasiliano 4) Saa za kazi",
        ),
        (
            Support,
            En,
            "I have an ISSUE",
            "Sorry for the inconvenience. Please describe your issue in detail and we will help you.",
        ),
        (
            Support,
            En,
            "problems",
            "Sorry for the inconvenience. Please describe your issue in detail and we will help you.",
        ),
        (
            Support,
            En,
            "shida",
            "Welcome to Mama Asha. Reply with: 1) Issues 2) Questions 3) Contact 4) Working hours",
        ),
        (
            Support,
            En,
            "hello",
            "Welcome to Mama Asha. Reply with: 1) Issues 2) Questions 3) Contact 4) Working hours",
        ),
    ];
    for (template, language, body, want) in rows {
        let got = preview(&spec(*template, *language), body, now());
        assert_eq!(&got, want, "{template:?} {language:?} {body:?}");
    }
}

/// A numbered item's expected answer: exactly the reply to an original keyword, or a text of
/// its own that starts like this.
enum Item {
    Keyword(&'static str),
    Own(&'static str),
}

#[test]
fn numbered_menu_answers_give_what_each_menu_item_promises() {
    use Item::{Keyword, Own};
    let expected: &[(Template, Language, [Item; 4])] = &[
        (
            Template::Booking,
            Language::Sw,
            [
                Keyword("booking"),
                Own("Huduma za"),
                Own("Bei zetu"),
                Own("Unaweza kuwasiliana"),
            ],
        ),
        (
            Template::Booking,
            Language::En,
            [
                Keyword("book"),
                Own("Services at"),
                Own("Our prices"),
                Own("You can reach"),
            ],
        ),
        (
            Template::Ecommerce,
            Language::Sw,
            [
                Own("Bidhaa za"),
                Keyword("bei"),
                Keyword("agiza"),
                Own("Usafiri"),
            ],
        ),
        (
            Template::Ecommerce,
            Language::En,
            [
                Own("Products at"),
                Keyword("price"),
                Keyword("order"),
                Own("Delivery"),
            ],
        ),
        (
            Template::Support,
            Language::Sw,
            [
                Keyword("shida"),
                Own("Tafadhali andika swali"),
                Own("Unaweza kuwasiliana"),
                Own("Saa za kazi za Mama Asha"),
            ],
        ),
        (
            Template::Support,
            Language::En,
            [
                Keyword("problem"),
                Own("Please write your question"),
                Own("You can reach"),
                Own("Working hours of Mama Asha"),
            ],
        ),
    ];
    let keys = [
        ReplyKey::Menu1,
        ReplyKey::Menu2,
        ReplyKey::Menu3,
        ReplyKey::Menu4,
    ];
    for (template, language, items) in expected {
        let s = spec(*template, *language);
        let menu = preview(&s, "hello", now());
        for (i, item) in items.iter().enumerate() {
            let body = format!(" {} \n", i + 1);
            let got = preview(&s, &body, now());
            match item {
                Keyword(word) => {
                    let original = preview(&s, word, now());
                    assert_eq!(got, original, "{template:?} {language:?} {body:?}");
                }
                Own(start) => {
                    assert!(
                        got.starts_with(start),
                        "{template:?} {language:?} {body:?}: {got}"
                    );
                    assert!(
                        got.contains(B),
                        "{template:?} {language:?} item {}: {got}",
                        i + 1
                    );
                }
            }
            assert!(!got.contains('{'), "unsubstituted placeholder: {got}");
            assert_ne!(got, menu);
            assert_eq!(reply::classify(*template, *language, &body), keys[i]);
        }
    }
}

#[test]
fn the_support_hours_item_lists_the_tenants_week() {
    let mut s = spec(Template::Support, Language::En);
    assert_eq!(
        preview(&s, "4", now()),
        "Working hours of Mama Asha: open every day, around the clock."
    );
    s.hours = Some(week(&[
        (Weekday::Mon, &[(480, 1020)]),
        (Weekday::Tue, &[(480, 1020)]),
        (Weekday::Wed, &[(480, 1020)]),
        (Weekday::Thu, &[(480, 1020)]),
        (Weekday::Fri, &[(480, 1020)]),
        (Weekday::Sat, &[(540, 780)]),
    ]));
    s.language = Language::Sw;
    // 09:00 UTC is 12:00 in Dar es Salaam on a Monday: open.
    assert_eq!(
        preview(&s, "4", now()),
        "Saa za kazi za Mama Asha: Jumatatu–Ijumaa 08:00–17:00; Jumamosi 09:00–13:00; \
         Jumapili imefungwa."
    );
}

#[test]
fn opt_out_words_are_whole_messages_and_confirmed_in_the_tenants_language() {
    let sw = spec(Template::Booking, Language::Sw);
    let en = spec(Template::Booking, Language::En);
    assert!(preview(&sw, " ACHA ", now()).starts_with("Umejiondoa."));
    assert!(preview(&en, "stop", now()).starts_with("You have unsubscribed."));
    // Not the whole message: an ordinary (menu) answer.
    assert!(preview(&en, "stop it", now()).starts_with("Welcome to Mama Asha. Reply with"));
    for word in reply::OPT_OUT_WORDS {
        assert_eq!(
            reply::opt_command(word),
            Some(reply::OptCommand::Out),
            "{word}"
        );
    }
}

#[test]
fn overrides_replace_the_text_and_substitute_placeholders() {
    let mut s = spec(Template::Booking, Language::Sw);
    s.replies.insert(
        Language::Sw,
        BTreeMap::from([
            (
                ReplyKey::Menu,
                "Habari! {business} hapa. Tuma 1 kwa miadi.".to_owned(),
            ),
            (
                ReplyKey::Closed,
                "{business} tumefunga; tunafungua {opens}.".to_owned(),
            ),
        ]),
    );
    // An English override does not apply to a Swahili tenant.
    s.replies.insert(
        Language::En,
        BTreeMap::from([(ReplyKey::Menu, "EN {business}".to_owned())]),
    );
    assert_eq!(
        preview(&s, "mambo", now()),
        "Habari! Mama Asha hapa. Tuma 1 kwa miadi."
    );
    s.hours = Some(week(&[(Weekday::Tue, &[(480, 1020)])]));
    assert_eq!(
        preview(&s, "mambo", now()),
        "Habari! Mama Asha hapa. Tuma 1 kwa miadi.\n\nMama Asha tumefunga; tunafungua kesho saa 08:00."
    );
}

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

/// The instant of a local wall time in `tz`.
fn local(tz: &str, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Timestamp {
    TimeZone::get(tz)
        .unwrap()
        .to_timestamp(date(y, mo, d).at(h, mi, 0, 0))
        .unwrap()
}

fn open_at(hours: &WeeklyHours, tz: &str, at: Timestamp) -> Opening {
    hours::opening(Some(hours), &TimeZone::get(tz).unwrap(), at)
}

const DAR: &str = "Africa/Dar_es_Salaam";

#[test]
fn a_range_ending_at_midnight_is_open_until_the_last_minute() {
    // 2026-11-30 is a Monday.
    let h = week(&[(Weekday::Mon, &[(1080, 1440)]), (Weekday::Wed, &[(0, 360)])]);
    assert_eq!(
        open_at(&h, DAR, local(DAR, 2026, 11, 30, 23, 59)),
        Opening::Open
    );
    assert_eq!(
        open_at(&h, DAR, local(DAR, 2026, 11, 30, 18, 0)),
        Opening::Open
    );
    assert_eq!(
        open_at(&h, DAR, local(DAR, 2026, 12, 1, 0, 0)),
        Opening::Closed {
            next: Some(NextOpen {
                days_ahead: 1,
                day: Weekday::Wed,
                minute: 0
            })
        }
    );
    assert_eq!(
        open_at(&h, DAR, local(DAR, 2026, 12, 2, 0, 0)),
        Opening::Open
    );
    assert_eq!(
        hours::describe_week(Some(&h), Language::En),
        "Monday 18:00–24:00; Tuesday closed; Wednesday 00:00–06:00; Thursday–Sunday closed"
    );
}

#[test]
fn closed_days_are_skipped_to_the_next_opening_day() {
    let h = week(&[
        (Weekday::Mon, &[(480, 1020)]),
        (Weekday::Fri, &[(480, 1020)]),
        (Weekday::Sat, &[]),
    ]);
    // Friday 17:00 (the exclusive end): closed, next Monday 08:00.
    let friday_close = local(DAR, 2026, 12, 4, 17, 0);
    let next = NextOpen {
        days_ahead: 3,
        day: Weekday::Mon,
        minute: 480,
    };
    assert_eq!(
        open_at(&h, DAR, friday_close),
        Opening::Closed { next: Some(next) }
    );
    let mut s = spec(Template::Booking, Language::Sw);
    s.hours = Some(h.clone());
    assert_eq!(
        preview(&s, "habari", friday_close),
        "Karibu Mama Asha. Andika: 1) Booking 2) Huduma 3) Bei 4) Mawasiliano\n\n\
         Samahani, Mama Asha imefungwa kwa sasa. Tutafunguliwa Jumatatu saa 08:00."
    );
    s.language = Language::En;
    assert!(
        preview(&s, "hello", friday_close).ends_with("We open again Monday at 08:00."),
        "{}",
        preview(&s, "hello", friday_close)
    );
    // Monday after closing: next Friday, four days ahead; a Monday-only week wraps to 7 days.
    assert_eq!(
        open_at(&h, DAR, local(DAR, 2026, 11, 30, 18, 0)),
        Opening::Closed {
            next: Some(NextOpen {
                days_ahead: 4,
                day: Weekday::Fri,
                minute: 480
            })
        }
    );
    let mondays = week(&[(Weekday::Mon, &[(480, 1020)])]);
    assert_eq!(
        open_at(&mondays, DAR, local(DAR, 2026, 11, 30, 18, 0)),
        Opening::Closed {
            next: Some(NextOpen {
                days_ahead: 7,
                day: Weekday::Mon,
                minute: 480
            })
        }
    );
    // A week with no range at all.
    assert_eq!(
        open_at(&WeeklyHours::default(), DAR, friday_close),
        Opening::Closed { next: None }
    );
}

#[test]
fn several_ranges_a_day_have_a_lunch_break() {
    let h = week(&[(Weekday::Mon, &[(480, 720), (840, 1080)])]);
    assert_eq!(
        open_at(&h, DAR, local(DAR, 2026, 11, 30, 11, 59)),
        Opening::Open
    );
    let noon = local(DAR, 2026, 11, 30, 12, 0);
    assert_eq!(
        open_at(&h, DAR, noon),
        Opening::Closed {
            next: Some(NextOpen {
                days_ahead: 0,
                day: Weekday::Mon,
                minute: 840
            })
        }
    );
    assert_eq!(
        open_at(&h, DAR, local(DAR, 2026, 11, 30, 14, 0)),
        Opening::Open
    );
    let mut s = spec(Template::Ecommerce, Language::En);
    s.hours = Some(h);
    assert!(preview(&s, "price", noon).ends_with("We open again today at 14:00."));
    s.language = Language::Sw;
    assert!(preview(&s, "bei", noon).ends_with("Tutafunguliwa leo saa 14:00."));
}

#[test]
fn hours_are_read_in_the_tenants_time_zone_far_from_utc() {
    let h = week(&[(Weekday::Mon, &[(480, 1020)])]);
    // Kiritimati is UTC+14: Monday 09:00 there is Sunday 19:00 UTC.
    let kiritimati = "Pacific/Kiritimati";
    let at = local(kiritimati, 2026, 11, 30, 9, 0);
    assert_eq!(at.to_string(), "2026-11-29T19:00:00Z");
    assert_eq!(open_at(&h, kiritimati, at), Opening::Open);
    assert!(matches!(open_at(&h, "UTC", at), Opening::Closed { .. }));
    // Los Angeles is UTC-8 in winter: Sunday 23:00 there is Monday 07:00 UTC.
    let la = "America/Los_Angeles";
    let at = local(la, 2026, 11, 29, 23, 0);
    assert_eq!(at.to_string(), "2026-11-30T07:00:00Z");
    assert_eq!(
        open_at(&h, la, at),
        Opening::Closed {
            next: Some(NextOpen {
                days_ahead: 1,
                day: Weekday::Mon,
                minute: 480
            })
        }
    );
    // Across the DST change (2027-03-14 in the US) local 08:00 is still the opening time.
    let h = week(&[(Weekday::Mon, &[(480, 1020)])]);
    assert_eq!(open_at(&h, la, local(la, 2027, 3, 15, 8, 0)), Opening::Open);
    assert_eq!(
        local(la, 2027, 3, 15, 8, 0).to_string(),
        "2027-03-15T15:00:00Z"
    );
    let mut s = spec(Template::Support, Language::En);
    s.timezone = la.to_owned();
    s.hours = Some(h);
    assert!(preview(&s, "hello", at).ends_with("We open again tomorrow at 08:00."));
}
