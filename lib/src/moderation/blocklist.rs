//! Blocklist matching: a term (one or more words) matches when its words
//! appear in a text as whole words, in order, after both are normalised
//! ([`normalize`]): case folded, accents and other marks stripped,
//! compatibility forms unified (full-width letters, ligatures), digits and
//! symbols read as the letters they stand for (`p0rn`), and everything that
//! is not a letter or digit a word boundary. So "Pórn", "P0RN" and "porn!"
//! match `porn`, while "Scunthorpe" and "Gorey" match nothing.

/// A blocked term as matched: its words, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// The term as configured.
    pub term: String,
    words: Vec<String>,
    /// Its category, reported when it matches.
    pub category: String,
    /// Refused whatever the settings (terms about minors in a sexual context).
    pub always: bool,
}

impl From<crate::db::moderation::TermRow> for Term {
    fn from(r: crate::db::moderation::TermRow) -> Self {
        Term::new(&r.term, &r.category, r.always)
    }
}

impl Term {
    pub fn new(term: &str, category: &str, always: bool) -> Self {
        Term {
            words: words(term),
            term: term.to_string(),
            category: category.to_string(),
            always,
        }
    }
}

/// `text` normalised for matching (see the module's documentation). Symbols
/// stand for letters only inside a word (`p@rn`), never at its edges (`porn!`).
pub fn normalize(text: &str) -> String {
    use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};
    let chars: Vec<char> = text
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    let inside = |i: usize| {
        let word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric());
        i > 0 && word(chars.get(i - 1)) && word(chars.get(i + 1))
    };
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match c {
            '0' => 'o',
            '1' => 'i',
            '3' => 'e',
            '4' => 'a',
            '5' => 's',
            '7' => 't',
            '8' => 'b',
            '@' if inside(i) => 'a',
            '$' if inside(i) => 's',
            '!' | '|' if inside(i) => 'i',
            '+' if inside(i) => 't',
            c if c.is_alphanumeric() => c,
            _ => ' ',
        })
        .collect()
}

fn words(text: &str) -> Vec<String> {
    normalize(text)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The first term of `terms` found in `text` (only `always` terms unless `all`).
pub fn find<'a>(terms: &'a [Term], text: &str, all: bool) -> Option<&'a Term> {
    let text = words(text);
    terms.iter().filter(|t| all || t.always).find(|t| {
        !t.words.is_empty() && text.windows(t.words.len()).any(|w| w == t.words.as_slice())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Vec<Term> {
        vec![
            Term::new("porn", "sexual", false),
            Term::new("child porn", "sexual/minors", true),
            Term::new("gore", "violence/graphic", false),
            Term::new("hentai", "sexual", false),
        ]
    }

    #[test]
    fn capitals_accents_digits_and_symbols_still_match() {
        let terms = list();
        for (text, term) in [
            ("PORN poster", "porn"),
            ("a pórn poster", "porn"),
            ("p0rn", "porn"),
            ("P0RN!", "porn"),
            ("ｐｏｒｎ", "porn"),
            ("gore-fest", "gore"),
            ("g0r3", "gore"),
            ("h3nt@i", "hentai"),
            ("hentai!", "hentai"),
        ] {
            let hit = find(&terms, text, true).map(|t| t.term.as_str());
            assert_eq!(hit, Some(term), "{text}");
        }
        assert_eq!(
            find(&terms, "G0RE", true).unwrap().category,
            "violence/graphic"
        );
    }

    #[test]
    fn words_inside_other_words_do_not_match() {
        let terms = list();
        for text in [
            "a map of Scunthorpe",
            "a Gorey-style cat",
            "pornography-free",
            "gored",
        ] {
            assert_eq!(find(&terms, text, true), None, "{text}");
        }
    }

    #[test]
    fn multi_word_terms_match_in_order_and_always_terms_whatever_the_setting() {
        let terms = list();
        let hit = find(&terms, "Child   P0rn", false).unwrap();
        assert_eq!((hit.term.as_str(), hit.always), ("child porn", true));
        assert_eq!(
            find(&terms, "porn", false),
            None,
            "the others only when enforced"
        );
        assert_eq!(find(&terms, "porn child", false), None);
    }
}
