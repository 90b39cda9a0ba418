//! Parsers for the values inside tenant-file strings: opening hours, reply placeholders and
//! phone-number hints.
//!
//! Owns the small grammars that live inside one TOML string (`"08:00-12:00, 14:00-18:00"`,
//! `"Karibu {business}"`). Each parser is pure and reports problems as byte offsets into the
//! string, so the loader can point at the exact character. It does not know about files or
//! diagnostics; `validate.rs` turns these findings into `Diagnostic`s.

use crate::config::tenant::{Minute, OpenRange, Phone};
use crate::config::walk::suggest;

/// A problem inside a string value: byte offset into the string and a message.
pub(crate) type Finding = (usize, String);

/// Parses one day of `[hours]`: `closed`, or comma-separated `HH:MM-HH:MM` ranges that do not
/// overlap, each ending after it starts (`24:00` allowed as an end). The ranges come back sorted.
pub(crate) fn parse_day_hours(s: &str) -> Result<Vec<OpenRange>, Vec<Finding>> {
    if s.trim() == "closed" {
        return Ok(Vec::new());
    }
    if s.trim().is_empty() {
        return Err(vec![(
            0,
            "opening hours are empty; write `closed` or ranges such as `08:00-18:00`".to_owned(),
        )]);
    }
    let mut errors = Vec::new();
    let mut ranges: Vec<(usize, &str, OpenRange)> = Vec::new();
    let mut pos = 0;
    for part in s.split(',') {
        let lead = part.len() - part.trim_start().len();
        let at = pos + lead;
        let text = part.trim();
        pos += part.len() + 1;
        if text.is_empty() {
            errors.push((at, "empty range between commas".to_owned()));
        } else if text == "closed" {
            errors.push((
                at,
                "`closed` cannot be combined with opening ranges".to_owned(),
            ));
        } else {
            match parse_range(text) {
                Ok(r) => ranges.push((at, text, r)),
                Err((off, msg)) => errors.push((at + off, msg)),
            }
        }
    }
    ranges.sort_by_key(|(_, _, r)| *r);
    for pair in ranges.windows(2) {
        let (_, prev_text, prev) = pair[0];
        let (at, text, next) = pair[1];
        if next.start < prev.end {
            errors.push((at, format!("range `{text}` overlaps `{prev_text}`")));
        }
    }
    if errors.is_empty() {
        Ok(ranges.into_iter().map(|(_, _, r)| r).collect())
    } else {
        errors.sort_by_key(|(at, _)| *at);
        Err(errors)
    }
}

fn parse_range(text: &str) -> Result<OpenRange, Finding> {
    let Some((a, b)) = text.split_once('-') else {
        return Err((
            0,
            format!("invalid range `{text}`, expected `HH:MM-HH:MM` such as `08:00-18:00`"),
        ));
    };
    let start = parse_time(a.trim(), false).map_err(|msg| (0, msg))?;
    let end_at = a.len() + 1 + (b.len() - b.trim_start().len());
    let end = parse_time(b.trim(), true).map_err(|msg| (end_at, msg))?;
    if end <= start {
        let msg = if end == start {
            format!("range `{text}` is empty")
        } else {
            format!(
                "range `{text}` ends before it starts; hours that cross midnight are written \
                 as two ranges on two days"
            )
        };
        return Err((0, msg));
    }
    Ok(OpenRange { start, end })
}

/// `HH:MM` as minutes; `24:00` only when `is_end`.
fn parse_time(t: &str, is_end: bool) -> Result<Minute, String> {
    let bytes = t.as_bytes();
    let well_formed = bytes.len() == 5
        && bytes[2] == b':'
        && [0, 1, 3, 4].iter().all(|&i| bytes[i].is_ascii_digit());
    if !well_formed {
        return Err(format!(
            "invalid time `{t}`, expected `HH:MM` such as `08:00`"
        ));
    }
    let hour = u16::from(bytes[0] - b'0') * 10 + u16::from(bytes[1] - b'0');
    let minute = u16::from(bytes[3] - b'0') * 10 + u16::from(bytes[4] - b'0');
    if hour == 24 && minute == 0 {
        return if is_end {
            Ok(24 * 60)
        } else {
            Err("`24:00` is only allowed as the end of a range".to_owned())
        };
    }
    if hour > 23 {
        return Err(format!("invalid time `{t}`: hour must be 00 to 23"));
    }
    if minute > 59 {
        return Err(format!("invalid time `{t}`: minute must be 00 to 59"));
    }
    Ok(hour * 60 + minute)
}

/// Checks the `{placeholder}`s of a reply text: `{business}` and the names in `extra` are
/// allowed; an unknown name, an unclosed `{` or an unmatched `}` is a finding.
pub(crate) fn check_placeholders(text: &str, extra: &[&str]) -> Vec<Finding> {
    let mut allowed = vec!["business"];
    allowed.extend_from_slice(extra);
    let mut findings = Vec::new();
    let mut rest = text.char_indices().peekable();
    while let Some((i, c)) = rest.next() {
        match c {
            '{' => {
                let close = text[i + 1..].find(['{', '}']).map(|j| i + 1 + j);
                match close {
                    Some(j) if text.as_bytes()[j] == b'}' => {
                        let name = &text[i + 1..j];
                        if !allowed.contains(&name) {
                            let mut msg = format!("unknown placeholder `{{{name}}}`");
                            match suggest(name, allowed.iter().copied()) {
                                Some(s) => msg.push_str(&format!(", did you mean `{{{s}}}`?")),
                                None => msg.push_str(&format!(
                                    " (this text may use {})",
                                    allowed
                                        .iter()
                                        .map(|a| format!("`{{{a}}}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )),
                            }
                            findings.push((i, msg));
                        }
                        while rest.peek().is_some_and(|(k, _)| *k <= j) {
                            rest.next();
                        }
                    }
                    _ => findings.push((i, "unclosed `{` in reply text".to_owned())),
                }
            }
            '}' => findings.push((i, "unmatched `}` in reply text".to_owned())),
            _ => {}
        }
    }
    findings
}

/// A corrected spelling of a phone number that is almost E.164: spaces, dashes, dots and
/// parentheses removed, and a leading `00` turned into `+`.
pub(crate) fn phone_hint(s: &str) -> Option<Phone> {
    let mut cleaned: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if let Some(rest) = cleaned.strip_prefix("00") {
        cleaned = format!("+{rest}");
    }
    if cleaned == s {
        return None;
    }
    Phone::parse(&cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: Minute, end: Minute) -> OpenRange {
        OpenRange { start, end }
    }

    #[test]
    fn day_hours_accepts_closed_single_and_several_ranges() {
        assert_eq!(parse_day_hours("closed"), Ok(vec![]));
        assert_eq!(parse_day_hours("08:00-18:00"), Ok(vec![r(480, 1080)]));
        assert_eq!(
            parse_day_hours("14:00-24:00, 08:00-12:00"),
            Ok(vec![r(480, 720), r(840, 1440)])
        );
        // Touching ranges do not overlap: the end is exclusive.
        assert_eq!(
            parse_day_hours("08:00-12:00,12:00-13:00"),
            Ok(vec![r(480, 720), r(720, 780)])
        );
    }

    #[test]
    fn day_hours_reports_every_bad_range_at_its_offset() {
        let errs = parse_day_hours("8:00-12:00, 13:00-12:00, 09:00-25:00").unwrap_err();
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].0, 0);
        assert!(errs[0].1.contains("invalid time `8:00`"));
        assert_eq!(errs[1].0, 12);
        assert!(errs[1].1.contains("ends before it starts"));
        assert_eq!(errs[2].0, 31);
        assert!(errs[2].1.contains("hour must be 00 to 23"));
    }

    #[test]
    fn day_hours_rejects_overlaps_and_a_24_start() {
        let errs = parse_day_hours("08:00-12:00,11:00-13:00").unwrap_err();
        assert_eq!(
            errs,
            vec![(12, "range `11:00-13:00` overlaps `08:00-12:00`".to_owned())]
        );
        assert!(parse_day_hours("24:00-24:00").is_err());
        assert!(parse_day_hours("").is_err());
        assert!(parse_day_hours("closed, 08:00-09:00").is_err());
    }

    #[test]
    fn placeholders_allow_business_and_key_specific_names() {
        assert!(check_placeholders("Karibu {business}", &[]).is_empty());
        assert!(check_placeholders("Tunafungua {opens}", &["opens"]).is_empty());
        let f = check_placeholders("Hi {busines}", &[]);
        assert_eq!(
            f,
            vec![(
                3,
                "unknown placeholder `{busines}`, did you mean `{business}`?".to_owned()
            )]
        );
        assert_eq!(check_placeholders("{opens}", &[]).len(), 1);
    }

    #[test]
    fn placeholders_report_unbalanced_braces() {
        assert_eq!(
            check_placeholders("a { b {business}", &[]),
            vec![(2, "unclosed `{` in reply text".to_owned())]
        );
        assert_eq!(
            check_placeholders("a } b", &[]),
            vec![(2, "unmatched `}` in reply text".to_owned())]
        );
        assert_eq!(check_placeholders("end {", &[]).len(), 1);
    }

    #[test]
    fn phone_hint_cleans_common_spellings() {
        assert_eq!(
            phone_hint("+255 712 345 678").map(|p| p.as_str().to_owned()),
            Some("+255712345678".to_owned())
        );
        assert_eq!(
            phone_hint("00255712345678").map(|p| p.as_str().to_owned()),
            Some("+255712345678".to_owned())
        );
        assert_eq!(phone_hint("0712345678"), None);
    }
}
