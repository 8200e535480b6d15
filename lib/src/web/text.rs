//! Text taken from a request: no control characters (Unicode category Cc).
//! PostgreSQL refuses NUL outright, and the others have no business in an
//! identifier, URL, query parameter or header; free text (a prompt) may keep
//! its tabs and line breaks.

use super::problem::FieldError;

/// What a text field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// Free text (prompts, styles): tab, newline and carriage return are allowed.
    Free,
    /// Identifiers, URLs, query parameters: no control character at all.
    Strict,
}

/// The message of a field refused for a control character.
pub const CONTROL: &str = "must not contain control characters";

impl Text {
    /// Whether `s` holds no control character this kind of text forbids.
    pub fn allows(self, s: &str) -> bool {
        s.chars()
            .all(|c| !c.is_control() || (self == Text::Free && matches!(c, '\t' | '\n' | '\r')))
    }

    /// `Ok(())` if `value` is allowed, else the error for `field`.
    pub fn check(self, field: &str, value: &str) -> Result<(), FieldError> {
        if self.allows(value) {
            Ok(())
        } else {
            Err(FieldError::new(field, CONTROL))
        }
    }
}

/// Query parameters `(name, value)` with a control character become absent,
/// each with an error in `errors`; the others are returned as they are.
pub fn query_params<const N: usize>(
    errors: &mut Vec<FieldError>,
    params: [(&str, Option<String>); N],
) -> [Option<String>; N] {
    params.map(|(name, value)| {
        value.filter(|v| match Text::Strict.check(name, v) {
            Ok(()) => true,
            Err(e) => {
                errors.push(e);
                false
            }
        })
    })
}

/// A positive integer query parameter from 1 to `max` (`default` when absent); an
/// error naming `field` otherwise. Pagination's `page` and `limit` use it.
pub fn int_param(
    errors: &mut Vec<FieldError>,
    field: &str,
    raw: Option<&str>,
    default: i64,
    max: i64,
) -> i64 {
    match raw.map(str::parse::<i64>) {
        None => default,
        Some(Ok(n)) if (1..=max).contains(&n) => n,
        Some(_) => {
            errors.push(FieldError::new(
                field,
                format!("must be an integer from 1 to {max}"),
            ));
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_keeps_tabs_and_line_breaks_only() {
        assert!(Text::Free.allows("a\tb\r\nc ünïcode ✓"));
        for bad in [
            "a\u{0}b",
            "\u{1b}[31m",
            "\u{7f}",
            "\u{85}",
            "\u{9f}",
            "\u{8}",
        ] {
            assert!(!Text::Free.allows(bad), "{bad:?}");
            assert!(!Text::Strict.allows(bad), "{bad:?}");
        }
        for bad in ["a\tb", "a\nb", "a\rb"] {
            assert!(!Text::Strict.allows(bad), "{bad:?}");
        }
        // Format characters (Cf) and separators are not control characters.
        assert!(Text::Strict.allows("a\u{200b}b\u{2028}c"));
    }

    #[test]
    fn dirty_query_params_are_dropped_with_an_error_each() {
        let mut errors = Vec::new();
        let [a, b, c] = query_params(
            &mut errors,
            [
                ("a", Some("1".into())),
                ("b", Some("x\u{0}".into())),
                ("c", None),
            ],
        );
        assert_eq!((a.as_deref(), b, c), (Some("1"), None, None));
        assert_eq!(errors, [FieldError::new("b", CONTROL)]);
    }
}
