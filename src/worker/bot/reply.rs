//! What the bot says: keyword rules of the three templates, numbered menu answers, opt-out and
//! opt-in commands, and the reply texts in Swahili and English with the tenant's overrides.
//!
//! Owns the original keyword tables and texts (flowhq-behaviour.md §3, kept verbatim: lower-cased
//! substring matching, first match wins), the texts added since (menu items, closed note, opt-out
//! confirmations) and placeholder substitution. Pure functions only: it does not know the clock,
//! the store or the transport, and it does not decide whether a reply is sent (that is the
//! pipeline in `mod.rs`).

use crate::config::tenant::{Language, ReplyKey, Template, TenantSpec};

/// The whole-message words that opt a contact out (flowhq-behaviour.md §10).
pub const OPT_OUT_WORDS: [&str; 14] = [
    "stop",
    "quit",
    "exit",
    "unsubscribe",
    "end",
    "cancel",
    "bye",
    "goodbye",
    "acha",
    "simama",
    "ondoa",
    "imaliza",
    "kwaheri",
    "tutaonana",
];

/// The whole-message words that opt a contact back in.
pub const OPT_IN_WORDS: [&str; 2] = ["start", "anza"];

/// A contact's command about receiving replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptCommand {
    /// Stop replying to me.
    Out,
    /// Reply to me again.
    In,
}

/// The opt command in `text`, matched on the whole message after trimming and lower-casing
/// (so "stop" opts out, "please stop" does not).
pub fn opt_command(text: &str) -> Option<OptCommand> {
    let word = text.trim().to_lowercase();
    if OPT_OUT_WORDS.contains(&word.as_str()) {
        Some(OptCommand::Out)
    } else if OPT_IN_WORDS.contains(&word.as_str()) {
        Some(OptCommand::In)
    } else {
        None
    }
}

/// Which reply a customer text asks for under `template` in `language`.
///
/// A trimmed "1" to "4" is a numbered menu answer. Otherwise the original rules apply: the text
/// is lower-cased (not trimmed) and searched for keyword substrings in the original order; no
/// match means the menu.
pub fn classify(template: Template, language: Language, text: &str) -> ReplyKey {
    match text.trim() {
        "1" => return ReplyKey::Menu1,
        "2" => return ReplyKey::Menu2,
        "3" => return ReplyKey::Menu3,
        "4" => return ReplyKey::Menu4,
        _ => {}
    }
    let lower = text.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    match (template, language) {
        (Template::Booking, _) => {
            if has(&["book", "booking", "miadi", "huduma", "service"]) {
                return ReplyKey::Booking;
            }
        }
        (Template::Ecommerce, Language::Sw) => {
            if has(&["bei", "price", "gharama"]) {
                return ReplyKey::Price;
            }
            if has(&["order", "agiza"]) {
                return ReplyKey::Order;
            }
        }
        (Template::Ecommerce, Language::En) => {
            if has(&["price"]) {
                return ReplyKey::Price;
            }
            if has(&["order"]) {
                return ReplyKey::Order;
            }
        }
        (Template::Support, Language::Sw) => {
            if has(&["shida", "tatizo", "problem"]) {
                return ReplyKey::Problem;
            }
        }
        (Template::Support, Language::En) => {
            if has(&["problem", "issue"]) {
                return ReplyKey::Problem;
            }
        }
    }
    ReplyKey::Menu
}

/// The keyword reply a numbered menu item names, when the original answered that item's
/// word: booking 1 (booking), ecommerce 2 (price) and 3 (order), support 1 (problem). Such an
/// item answers with exactly that reply's text; the other items have texts of their own.
pub fn menu_alias(template: Template, key: ReplyKey) -> Option<ReplyKey> {
    match (template, key) {
        (Template::Booking, ReplyKey::Menu1) => Some(ReplyKey::Booking),
        (Template::Ecommerce, ReplyKey::Menu2) => Some(ReplyKey::Price),
        (Template::Ecommerce, ReplyKey::Menu3) => Some(ReplyKey::Order),
        (Template::Support, ReplyKey::Menu1) => Some(ReplyKey::Problem),
        _ => None,
    }
}

/// The built-in text for `key`, with `{business}` (and `{opens}` in `closed`, `{hours}` in the
/// support template's fourth menu item) still to substitute. Keys a template never produces
/// (`price` under booking) fall back to that template's menu; a menu item that names a
/// keyword reply ([`menu_alias`]) is that reply's text.
pub fn default_text(template: Template, language: Language, key: ReplyKey) -> &'static str {
    use Language::{En, Sw};
    use ReplyKey as K;
    use Template::{Booking, Ecommerce, Support};
    let key = menu_alias(template, key).unwrap_or(key);
    match (key, language) {
        (K::Closed, Sw) => return "Samahani, {business} imefungwa kwa sasa. Tutafunguliwa {opens}.",
        (K::Closed, En) => return "Sorry, {business} is closed right now. We open again {opens}.",
        (K::SlowDown, Sw) => return "Tafadhali pole pole...",
        (K::SlowDown, En) => return "Please slow down...",
        (K::PleaseWait, Sw) => return "Tafadhali subiri...",
        (K::PleaseWait, En) => return "Please wait...",
        (K::OptedOut, Sw) => {
            return "Umejiondoa. Hutapokea ujumbe zaidi kutoka {business}. Andika ANZA kujiunga tena.";
        }
        (K::OptedOut, En) => {
            return "You have unsubscribed. {business} will not message you again. Reply START to subscribe again.";
        }
        (K::OptedIn, Sw) => return "Karibu tena {business}! Andika ujumbe wowote kuona menyu.",
        (K::OptedIn, En) => return "Welcome back to {business}! Send any message to see the menu.",
        _ => {}
    }
    match (template, language, key) {
        // Booking: the original texts.
        (Booking, Sw, K::Booking) => {
            "Karibu {business}. Tafadhali taja huduma unayotaka na tarehe (mf: Facial, 26 Feb)."
        }
        (Booking, En, K::Booking) => {
            "Welcome to {business}. Please tell us what service you want and the date (e.g., Facial, Feb 26)."
        }
        // Booking: 1) Booking (the booking reply, see `menu_alias`) 2) Services 3) Prices
        // 4) Contact.
        (Booking, Sw, K::Menu2) => {
            "Huduma za {business}: taja huduma unayoipenda nasi tutakutumia maelezo yake."
        }
        (Booking, En, K::Menu2) => {
            "Services at {business}: tell us which service you are interested in and we will send you the details."
        }
        (Booking, Sw, K::Menu3) => {
            "Bei zetu hutegemea huduma. Taja huduma unayotaka na {business} itakutumia bei yake."
        }
        (Booking, En, K::Menu3) => {
            "Our prices depend on the service. Tell us which service you want and {business} will send you the price."
        }
        (Booking, Sw, K::Menu4) => {
            "Unaweza kuwasiliana na {business} hapa hapa WhatsApp. Andika swali lako na mhudumu wetu atakujibu haraka iwezekanavyo."
        }
        (Booking, En, K::Menu4) => {
            "You can reach {business} right here on WhatsApp. Write your question and our staff will answer you as soon as possible."
        }
        (Booking, Sw, _) => "Karibu {business}. Andika: 1) Booking 2) Huduma 3) Bei 4) Mawasiliano",
        (Booking, En, _) => {
            "Welcome to {business}. Reply with: 1) Booking 2) Services 3) Prices 4) Contact"
        }

        // Ecommerce: the original texts.
        (Ecommerce, Sw, K::Price) => {
            "Karibu {business}. Tafadhali taja bidhaa unayotaka kujua bei."
        }
        (Ecommerce, Sw, K::Order) => "Karibu {business}. Tafadhali taja bidhaa na idadi unayotaka.",
        (Ecommerce, En, K::Price) => {
            "Welcome to {business}. Please tell us which product you want to know the price for."
        }
        (Ecommerce, En, K::Order) => {
            "Welcome to {business}. Please tell us what product and quantity you want to order."
        }
        // Ecommerce: 1) Products 2) Prices 3) Order 4) Delivery; 2 and 3 are the price and
        // order replies (`menu_alias`).
        (Ecommerce, Sw, K::Menu1) => {
            "Bidhaa za {business}: taja unachotafuta nasi tutakutumia bidhaa tulizo nazo."
        }
        (Ecommerce, En, K::Menu1) => {
            "Products at {business}: tell us what you are looking for and we will send you what we have in stock."
        }
        (Ecommerce, Sw, K::Menu4) => {
            "Usafiri: tafadhali tuma eneo au anwani yako na {business} itakueleza gharama na muda wa kufikisha."
        }
        (Ecommerce, En, K::Menu4) => {
            "Delivery: please send your area or address and {business} will tell you the delivery cost and time."
        }
        (Ecommerce, Sw, _) => {
            "Karibu {business}. Andika: 1) Orodha ya bidhaa 2) Bei 3) Agiza 4) Usafiri"
        }
        (Ecommerce, En, _) => {
            "Welcome to {business}. Reply with: 1) Products 2) Prices 3) Order 4) Delivery"
        }

        // Support: the original texts (the problem prompt names no business).
        (Support, Sw, K::Problem) => {
            "Samahani kwa usumbufu. Tafadhali elezea shida yako kwa undani tutakusaidia."
        }
        (Support, En, K::Problem) => {
            "Sorry for the inconvenience. Please describe your issue in detail and we will help you."
        }
        // Support: 1) Issues (the problem reply, `menu_alias`) 2) Questions 3) Contact
        // 4) Working hours.
        (Support, Sw, K::Menu2) => "Tafadhali andika swali lako na {business} itakujibu hapa.",
        (Support, En, K::Menu2) => {
            "Please write your question and {business} will answer you right here."
        }
        (Support, Sw, K::Menu3) => {
            "Unaweza kuwasiliana na {business} hapa hapa WhatsApp. Andika ujumbe wako na mhudumu wetu atakujibu haraka iwezekanavyo."
        }
        (Support, En, K::Menu3) => {
            "You can reach {business} right here on WhatsApp. Write your message and our staff will answer you as soon as possible."
        }
        (Support, Sw, K::Menu4) => "Saa za kazi za {business}: {hours}.",
        (Support, En, K::Menu4) => "Working hours of {business}: {hours}.",
        (Support, Sw, _) => {
            "Karibu {business}. Andika: 1) Shida 2) Maswali 3) Mawasiliano 4) Saa za kazi"
        }
        (Support, En, _) => {
            "Welcome to {business}. Reply with: 1) Issues 2) Questions 3) Contact 4) Working hours"
        }
    }
}

/// Values for the placeholders a text may hold besides `{business}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Placeholders<'a> {
    /// When the business opens next (`Jumatatu saa 08:00`, `Monday at 08:00`).
    pub opens: Option<&'a str>,
    /// The week's opening hours in words.
    pub hours: Option<&'a str>,
}

/// The text for `key` in the tenant's language: the tenant's override when it has one, else the
/// built-in text, with placeholders substituted.
pub fn render(spec: &TenantSpec, key: ReplyKey, values: Placeholders<'_>) -> String {
    let own = |key| {
        spec.replies
            .get(&spec.language)
            .and_then(|texts| texts.get(&key))
            .map(String::as_str)
    };
    // A menu item naming a keyword reply gets that reply, override included, unless the item
    // itself is overridden.
    let text = own(key)
        .or_else(|| menu_alias(spec.template, key).and_then(own))
        .unwrap_or_else(|| default_text(spec.template, spec.language, key));
    let mut out = text.replace("{business}", &spec.business_name);
    if let Some(opens) = values.opens {
        out = out.replace("{opens}", opens);
    }
    if let Some(hours) = values.hours {
        out = out.replace("{hours}", hours);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opt_commands_match_the_whole_trimmed_message_only() {
        assert_eq!(opt_command("  STOP \n"), Some(OptCommand::Out));
        assert_eq!(opt_command("Acha"), Some(OptCommand::Out));
        assert_eq!(opt_command("anza"), Some(OptCommand::In));
        assert_eq!(opt_command("Start"), Some(OptCommand::In));
        assert_eq!(opt_command("please stop"), None);
        assert_eq!(opt_command("stopped"), None);
        assert_eq!(opt_command(""), None);
    }

    #[test]
    fn menu_numbers_are_trimmed_but_must_stand_alone() {
        assert_eq!(
            classify(Template::Booking, Language::En, " 3\n"),
            ReplyKey::Menu3
        );
        assert_eq!(
            classify(Template::Booking, Language::En, "5"),
            ReplyKey::Menu
        );
        assert_eq!(
            classify(Template::Booking, Language::En, "1 2"),
            ReplyKey::Menu
        );
    }

    #[test]
    fn menu_items_naming_an_original_keyword_answer_with_its_exact_text() {
        use Language::{En, Sw};
        use Template::{Booking, Ecommerce, Support};
        for language in [Sw, En] {
            for (template, item, keyword) in [
                (Booking, ReplyKey::Menu1, ReplyKey::Booking),
                (Ecommerce, ReplyKey::Menu2, ReplyKey::Price),
                (Ecommerce, ReplyKey::Menu3, ReplyKey::Order),
                (Support, ReplyKey::Menu1, ReplyKey::Problem),
            ] {
                assert_eq!(
                    default_text(template, language, item),
                    default_text(template, language, keyword),
                    "{template:?} {language:?} {item:?}"
                );
            }
            // Items the original never answered keep texts of their own.
            for (template, item) in [
                (Booking, ReplyKey::Menu2),
                (Ecommerce, ReplyKey::Menu1),
                (Ecommerce, ReplyKey::Menu4),
                (Support, ReplyKey::Menu2),
            ] {
                assert_ne!(
                    default_text(template, language, item),
                    default_text(template, language, ReplyKey::Menu)
                );
            }
        }
    }

    #[test]
    fn a_menu_item_naming_a_keyword_follows_that_keywords_override_unless_overridden_itself() {
        use crate::config::tenant::{Phone, TenantId};
        let mut spec = TenantSpec::for_tests(
            TenantId::parse("mama-asha").unwrap(),
            "Mama Asha".to_owned(),
            Phone::parse("+255712345678").unwrap(),
        );
        spec.replies
            .entry(Language::Sw)
            .or_default()
            .insert(ReplyKey::Booking, "Weka miadi na {business}.".to_owned());
        let one = render(&spec, ReplyKey::Menu1, Placeholders::default());
        assert_eq!(one, "Weka miadi na Mama Asha.");
        assert_eq!(
            one,
            render(&spec, ReplyKey::Booking, Placeholders::default())
        );
        spec.replies
            .entry(Language::Sw)
            .or_default()
            .insert(ReplyKey::Menu1, "Moja.".to_owned());
        assert_eq!(
            render(&spec, ReplyKey::Menu1, Placeholders::default()),
            "Moja."
        );
    }

    #[test]
    fn keys_a_template_never_produces_fall_back_to_its_menu() {
        assert_eq!(
            default_text(Template::Booking, Language::En, ReplyKey::Price),
            default_text(Template::Booking, Language::En, ReplyKey::Menu)
        );
    }
}
