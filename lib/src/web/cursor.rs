//! The opaque cursors of newest-first lists (`?cursor=` → `nextCursor`):
//! base64url of the last item's `createdAt` (microseconds) and id.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::problem::FieldError;
pub use crate::db::Cursor;

/// Latest `createdAt` a cursor may carry (9999-12-31T23:59:59.999999Z): PostgreSQL refuses
/// timestamps far beyond it, and nothing listed is older than the epoch.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// The cursor of the page after the one ending at `last`.
pub fn encode((at, id): Cursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_micros()))
}

/// A cursor from a previous page, if `raw` is one.
pub fn decode(raw: &str) -> Option<Cursor> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    let (micros, id) = text.split_once('|')?;
    let micros = micros
        .parse()
        .ok()
        .filter(|m| (0..=MAX_MICROS).contains(m))?;
    Some((
        DateTime::<Utc>::from_timestamp_micros(micros)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// The `nextCursor` of a page read with one row more than `limit` (that row
/// only says a next page exists): drops it and names the page's last row;
/// `None` on the last page.
pub fn next_page<T>(rows: &mut Vec<T>, limit: i64, key: impl Fn(&T) -> Cursor) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(|r| encode(key(r)))
}

/// The query of a list walked by cursor: `?limit=` (1 to 100, 20 by default)
/// and `?cursor=`; a list with parameters of its own flattens it into its query.
#[derive(Debug, serde::Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

impl PageQuery {
    /// The limit and the cursor, or 400 `VALIDATION_FAILED` naming what is wrong.
    pub fn read(self) -> Result<(i64, Option<Cursor>), super::Problem> {
        let mut errors = Vec::new();
        let page = self.read_into(&mut errors);
        match errors.is_empty() {
            true => Ok(page),
            false => Err(super::Problem::validation(errors)),
        }
    }

    /// The limit and the cursor, each problem added to `errors` (for a list
    /// with parameters of its own beside these).
    pub fn read_into(self, errors: &mut Vec<FieldError>) -> (i64, Option<Cursor>) {
        let [limit, cursor] =
            super::text::query_params(errors, [("limit", self.limit), ("cursor", self.cursor)]);
        let limit = super::text::int_param(errors, "limit", limit.as_deref(), 20, 100);
        (limit, param(errors, cursor.as_deref()))
    }
}

/// The `cursor` query parameter: none (or empty) for the first page; a
/// field error in `errors` when it is not a cursor from a previous page.
fn param(errors: &mut Vec<FieldError>, raw: Option<&str>) -> Option<Cursor> {
    let raw = raw.filter(|c| !c.is_empty())?;
    let cursor = decode(raw);
    if cursor.is_none() {
        errors.push(FieldError::new(
            "cursor",
            "is not a cursor from a previous page",
        ));
    }
    cursor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_next_page_exists_only_past_the_limit() {
        let at = |n: i64| {
            (
                DateTime::<Utc>::from_timestamp_micros(n).unwrap(),
                Uuid::nil(),
            )
        };
        let mut rows = vec![1, 2, 3];
        assert_eq!(next_page(&mut rows, 3, |&n| at(n)), None);
        assert_eq!(rows, [1, 2, 3]);
        assert_eq!(next_page(&mut rows, 2, |&n| at(n)), Some(encode(at(2))));
        assert_eq!(rows, [1, 2]);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = (
            DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            Uuid::new_v4(),
        );
        assert_eq!(decode(&encode(c)), Some(c));
        assert_eq!(decode("not-a-cursor"), None);
        let id = Uuid::nil();
        for micros in [-1, MAX_MICROS + 1, i64::MAX] {
            assert_eq!(
                decode(&URL_SAFE_NO_PAD.encode(format!("{micros}|{id}"))),
                None
            );
        }
        let last = URL_SAFE_NO_PAD.encode(format!("{MAX_MICROS}|{id}"));
        assert!(decode(&last).is_some());
        let mut errors = Vec::new();
        assert_eq!(param(&mut errors, Some("")), None);
        assert!(errors.is_empty());
        assert_eq!(param(&mut errors, Some("nope")), None);
        assert_eq!(errors.len(), 1);
    }
}
