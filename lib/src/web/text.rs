//! Text taken from a request: no control characters (Unicode category Cc).
//! PostgreSQL refuses NUL outright, and the others have no business in an
//! identifier, URL, query parameter or header; free text (a prompt) may keep
//! its tabs and line breaks.

use serde_json::{Map, Value};

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

/// Collects every problem of a body at once.
pub struct Checker<'a> {
    body: &'a Map<String, Value>,
    /// The fields looked at: the request's known fields ([`Checker::unknown_fields`]).
    known: Vec<&'a str>,
    /// What was found so far.
    pub errors: Vec<FieldError>,
}

impl<'a> Checker<'a> {
    /// A checker of a request body, which must be a JSON object; no problem found yet.
    pub fn of(body: &'a Value) -> Result<Self, Vec<FieldError>> {
        match body {
            Value::Object(body) => Ok(Checker {
                body,
                known: Vec::new(),
                errors: Vec::new(),
            }),
            _ => Err(vec![FieldError::new("body", "must be a JSON object")]),
        }
    }

    /// `check`'s value of `field`, or an error if the field is absent or null.
    pub fn required<T>(
        &mut self,
        field: &'a str,
        check: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<T> {
        if self.field(field).is_none() {
            self.fail(field, "is required");
            return None;
        }
        check(self)
    }

    /// The value of `field` (absent and `null` alike are `None`), which is now a known field.
    pub fn field(&mut self, field: &'a str) -> Option<&'a Value> {
        self.known.push(field);
        self.body.get(field).filter(|v| !v.is_null())
    }

    /// Fails, first, every field of the body that no check looked at: the
    /// request's fields are those its parser reads, never a list beside it.
    pub fn unknown_fields(&mut self) {
        let unknown: Vec<FieldError> = self
            .body
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .map(|k| FieldError::new(k.clone(), "is not a known field"))
            .collect();
        self.errors.splice(0..0, unknown);
    }

    /// Records a problem of `field`.
    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// A string of `min` to `max` characters with no control character `kind` forbids.
    pub fn string(&mut self, field: &'a str, kind: Text, min: usize, max: usize) -> Option<String> {
        match self.field(field)? {
            Value::String(s) if !kind.allows(s) => {
                self.fail(field, CONTROL);
                None
            }
            Value::String(s) if (min..=max).contains(&s.chars().count()) => Some(s.clone()),
            Value::String(_) => {
                self.fail(field, format!("must be {min} to {max} characters"));
                None
            }
            _ => {
                self.fail(field, "must be a string");
                None
            }
        }
    }

    /// An integer from `min` to `max`.
    pub fn int(&mut self, field: &'a str, min: i64, max: i64) -> Option<i64> {
        match self.field(field)? {
            Value::Number(n) => match n.as_i64().filter(|v| (min..=max).contains(v)) {
                Some(v) => Some(v),
                None => {
                    self.fail(field, format!("must be an integer from {min} to {max}"));
                    None
                }
            },
            _ => {
                self.fail(field, "must be an integer");
                None
            }
        }
    }

    /// A number from `min` to `max`.
    pub fn number(&mut self, field: &'a str, min: f64, max: f64) -> Option<f64> {
        match self.field(field)? {
            Value::Number(n) => match n.as_f64().filter(|v| (min..=max).contains(v)) {
                Some(v) => Some(v),
                None => {
                    self.fail(field, format!("must be a number from {min} to {max}"));
                    None
                }
            },
            _ => {
                self.fail(field, "must be a number");
                None
            }
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
