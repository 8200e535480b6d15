//! The audit of generations and their objects: each generation's image rows
//! against its status and charge, its hold against the ledger, and the
//! objects found under its id (listed by prefix, checked again at the end).

use std::collections::HashMap;

use uuid::Uuid;

use super::{Filter, Violation};
use crate::{AppState, Error, db::audit::GenRow, storage::ImageKey};

/// Checks a generation's rows and the objects found under its id.
pub(super) fn check_generation(
    g: &GenRow,
    keys: &[String],
    ledger: bool,
    out: &mut Vec<Violation>,
) {
    for img in &g.images {
        let of = |kind, msg: String, key: &str| Violation {
            image_id: Some(img.id),
            ..Violation::of(kind, g, msg).key(key)
        };
        if g.status != "completed" {
            let msg = format!("a {} generation has an image row", g.status);
            out.push(of("image_of_unfinished", msg, &img.key));
            continue;
        }
        let objects = [
            (Some(&img.key), "image"),
            (img.thumbnail.as_ref(), "thumbnail"),
        ];
        for (key, what) in objects {
            if let Some(key) = key.filter(|k| !keys.contains(k)) {
                let msg = format!("the {what}'s S3 object is missing");
                out.push(of("missing_object", msg, key));
            }
        }
        if img.thumbnail_pending == Some(true) {
            let msg = "its image has had no thumbnail for over an hour".to_string();
            out.push(of("thumbnail_overdue", msg, &img.key));
        }
    }
    if g.images.is_empty() && g.status == "completed" && !g.image_deleted {
        out.push(Violation::of(
            "image_missing",
            g,
            "a completed generation has no image row",
        ));
    }
    let delivered = g.hold.as_ref().and_then(|h| h.delivered);
    let rows = g.images.len();
    if let Some(d) = delivered
        .filter(|d| rows > 0 && rows < usize::try_from(*d).unwrap_or(0) && !g.image_deleted)
    {
        let msg = format!("{rows} image rows, {d} charged");
        out.push(Violation::of("image_missing", g, msg));
    }
    if let Some(delivered) = delivered.filter(|d| g.images.len() > usize::try_from(*d).unwrap_or(0))
    {
        let msg = format!("{} image rows, {delivered} charged", g.images.len());
        out.push(Violation::of("uncharged_image", g, msg));
    }
    if g.is_open() && g.batch_cancelled {
        let msg = format!("{}, its batch cancelled over an hour ago", g.status);
        out.push(Violation::of("open_in_cancelled_batch", g, msg));
    }
    if g.overdue {
        let msg = format!("{} past the deadline plus one reconciler run", g.status);
        out.push(Violation::of("overdue", g, msg));
    }
    check_hold(g, ledger, out);
    check_objects(g, keys, out);
}

/// Checks a generation's credit hold against its status.
fn check_hold(g: &GenRow, ledger: bool, out: &mut Vec<Violation>) {
    let Some(h) = &g.hold else {
        out.push(Violation::of("hold_missing", g, "no credit hold"));
        return;
    };
    let msg = |what: &str| {
        format!(
            "{} generation, {} {} hold: {what}",
            g.status, h.kind, h.state
        )
    };
    match (g.status.as_str(), h.state.as_str()) {
        ("queued" | "pending" | "processing", _) => {}
        (_, "held") => out.push(Violation::of("open_hold", g, msg("still held"))),
        ("completed", "captured") => {
            let once = match (h.kind.as_str(), ledger) {
                // All of it on free slots: nothing to capture.
                ("credits", _) if h.amount == 0 => g.ledger_capture.is_none(),
                ("credits", true) => g.ledger_capture == Some(i64::from(h.amount)),
                ("credits", false) => h.capture_state.is_some(),
                _ => g.ledger_capture.is_none(),
            };
            if !once {
                let what = format!("ledger capture {:?}", g.ledger_capture);
                out.push(Violation::of("capture", g, msg(&what)));
            }
        }
        ("completed", _) => out.push(Violation::of("hold_not_captured", g, msg("not captured"))),
        (_, "captured") => out.push(Violation::of("hold_not_released", g, msg("charged"))),
        _ => {}
    }
}

/// Objects under a generation's id: fine if open, or if it is one of the
/// completed generation's images or a thumbnail a row names (or is making); an
/// object of a failed or cancelled one is reported as such, anything else is an orphan.
pub(super) fn check_objects(g: &GenRow, keys: &[String], out: &mut Vec<Violation>) {
    let prefix = format!("users/{}/images/{}.", g.user_id, g.id);
    for key in keys {
        let known = g.images.iter().any(|img| {
            // A thumbnail being made is stored before its row names it.
            let thumbnail_to_be = img.thumbnail_pending.is_some()
                && *key == crate::storage::Storage::thumbnail_key(&img.key);
            img.key == *key || img.thumbnail.as_ref() == Some(key) || thumbnail_to_be
        });
        let v = if !key.starts_with(&prefix) {
            orphan(key, "under another user's prefix")
        } else if g.is_open() || known {
            continue;
        } else if g.status == "completed" {
            orphan(key, "no image row has this key")
        } else {
            let msg = format!("an object of a {} generation", g.status);
            Violation::of("object_of_unfinished", g, msg).key(key)
        };
        out.push(Violation {
            generation_id: Some(g.id),
            ..v
        });
    }
}

pub(super) fn orphan(key: &str, why: &str) -> Violation {
    let user = key
        .strip_prefix("users/")
        .and_then(|r| r.split('/').next())
        .and_then(|u| Uuid::parse_str(u).ok());
    Violation {
        user_id: user,
        ..Violation::new("orphan_object", format!("orphan object: {why}")).key(key)
    }
}

/// Whether a finding is about objects and image rows (which a deletion under
/// way removes in steps, so they are not checked for its user).
pub(super) fn is_object_finding(kind: &str) -> bool {
    matches!(
        kind,
        "missing_object" | "orphan_object" | "object_of_unfinished"
    )
}

/// Drops object findings that no longer hold (the store moved on during the run).
pub(super) async fn recheck_objects(
    st: &AppState,
    violations: &mut Vec<Violation>,
) -> Result<(), Error> {
    let mut kept = Vec::with_capacity(violations.len());
    for v in violations.drain(..) {
        let expect_present = match v.kind {
            "missing_object" => false,
            "orphan_object" | "object_of_unfinished" => true,
            _ => {
                kept.push(v);
                continue;
            }
        };
        let key = v.key.as_deref().unwrap_or_default();
        if st.storage.exists(key).await? == expect_present {
            kept.push(v);
        }
    }
    *violations = kept;
    Ok(())
}

/// Image objects in the bucket, by the generation id in their key.
#[derive(Debug, Default)]
pub(super) struct Objects {
    /// Image and thumbnail keys, by the generation id their name starts with.
    pub(super) by_generation: HashMap<Uuid, Vec<String>>,
    /// Keys under `users/*/images/` that are not `{userId}/images/{generationId}.{ext}`.
    pub(super) unparsed: Vec<String>,
    /// Objects listed, of any kind (uploads and exports too).
    pub(super) count: usize,
}

pub(super) async fn list_objects(st: &AppState, filter: &Filter) -> Result<Objects, Error> {
    let prefix = filter
        .user
        .map_or_else(|| "users/".to_string(), |u| format!("users/{u}/"));
    let since = filter.since.map_or(i64::MIN, |t| t.timestamp());
    let mut objects = Objects::default();
    st.storage
        .list(&prefix, |key, modified| {
            if modified < since {
                return;
            }
            match ImageKey::parse(key).map(|k| k.map(|k| k.generation_id)) {
                None => {}
                Some(Ok(id)) => objects
                    .by_generation
                    .entry(id)
                    .or_default()
                    .push(key.into()),
                Some(Err(())) => objects.unparsed.push(key.into()),
            }
            objects.count += 1;
        })
        .await?;
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::audit::{Hold, ImageRow};

    fn image(key: &str, thumbnail: Option<&str>) -> ImageRow {
        ImageRow {
            id: Uuid::new_v4(),
            key: key.into(),
            thumbnail: thumbnail.map(Into::into),
            thumbnail_pending: None,
        }
    }

    fn completed(user: Uuid, id: Uuid, key: &str) -> GenRow {
        GenRow {
            id,
            user_id: user,
            status: "completed".into(),
            images: vec![image(key, None)],
            hold: Some(Hold {
                kind: "credits".into(),
                state: "captured".into(),
                amount: 10,
                capture_state: Some("done".into()),
                delivered: Some(1),
            }),
            ledger_capture: Some(10),
            overdue: false,
            image_deleted: false,
            batch_cancelled: false,
        }
    }

    #[test]
    fn image_keys_are_recognised() {
        let (u, g) = (Uuid::new_v4(), Uuid::new_v4());
        let key = |thumbnail| ImageKey {
            user_id: u,
            generation_id: g,
            thumbnail,
        };
        let parse = |k: String| ImageKey::parse(&k);
        assert_eq!(
            parse(format!("users/{u}/images/{g}.webp")),
            Some(Ok(key(false)))
        );
        assert_eq!(
            parse(format!("users/{u}/images/{g}.thumb.webp")),
            Some(Ok(key(true)))
        );
        assert_eq!(
            parse(format!("users/{u}/images/{g}.3.png")),
            Some(Ok(key(false)))
        );
        assert_eq!(
            parse(format!("users/{u}/images/{g}.3.thumb.webp")),
            Some(Ok(key(true)))
        );
        assert_eq!(parse(format!("users/{u}/images/junk.png")), Some(Err(())));
        assert_eq!(parse(format!("users/junk/images/{g}.png")), Some(Err(())));
        assert_eq!(parse(format!("users/{u}/uploads/{g}.png")), None);
    }

    #[test]
    fn a_completed_generation_needs_its_object_and_one_capture() {
        let (u, g) = (Uuid::new_v4(), Uuid::new_v4());
        let key = format!("users/{u}/images/{g}.png");
        let row = completed(u, g, &key);
        let mut out = Vec::new();
        check_generation(&row, std::slice::from_ref(&key), true, &mut out);
        assert_eq!(out, []);

        let stale = format!("users/{u}/images/{g}.jpg");
        check_generation(&row, std::slice::from_ref(&stale), true, &mut out);
        let kinds: Vec<_> = out.iter().map(|v| (v.kind, v.key.clone())).collect();
        assert_eq!(
            kinds,
            [
                ("missing_object", Some(key.clone())),
                ("orphan_object", Some(stale))
            ]
        );

        out.clear();
        let uncharged = GenRow {
            ledger_capture: None,
            ..row.clone()
        };
        check_generation(&uncharged, std::slice::from_ref(&key), true, &mut out);
        assert_eq!(out.iter().map(|v| v.kind).collect::<Vec<_>>(), ["capture"]);
        assert!(
            out[0]
                .to_string()
                .starts_with(&format!("capture user={u} generation={g}"))
        );

        // No image row: a violation, unless the user deleted the image.
        out.clear();
        let lost = GenRow {
            images: Vec::new(),
            ..row.clone()
        };
        check_generation(&lost, &[], true, &mut out);
        assert_eq!(
            out.iter().map(|v| v.kind).collect::<Vec<_>>(),
            ["image_missing"]
        );
        out.clear();
        let deleted = GenRow {
            image_deleted: true,
            ..lost
        };
        check_generation(&deleted, &[], true, &mut out);
        assert_eq!(out, []);
    }

    #[test]
    fn a_thumbnail_its_row_names_is_expected_and_not_an_orphan() {
        let (u, g) = (Uuid::new_v4(), Uuid::new_v4());
        let key = format!("users/{u}/images/{g}.png");
        let thumb = format!("users/{u}/images/{g}.thumb.webp");
        let row = GenRow {
            images: vec![image(&key, Some(&thumb))],
            ..completed(u, g, &key)
        };
        let mut out = Vec::new();
        check_generation(&row, &[key.clone(), thumb.clone()], true, &mut out);
        assert_eq!(out, []);

        check_generation(&row, std::slice::from_ref(&key), true, &mut out);
        let found: Vec<_> = out.iter().map(|v| (v.kind, v.key.clone())).collect();
        assert_eq!(found, [("missing_object", Some(thumb.clone()))]);

        // A thumbnail its row does not name (e.g. left by a backfill racing a delete) is an orphan.
        out.clear();
        check_generation(
            &completed(u, g, &key),
            &[key, thumb.clone()],
            true,
            &mut out,
        );
        let found: Vec<_> = out.iter().map(|v| (v.kind, v.key.clone())).collect();
        assert_eq!(found, [("orphan_object", Some(thumb))]);
    }

    #[test]
    fn every_output_needs_its_object_and_a_charge() {
        let (u, g) = (Uuid::new_v4(), Uuid::new_v4());
        let keys: Vec<String> = (0..3)
            .map(|i| crate::storage::Storage::key(u, g, i, "webp"))
            .collect();
        let thumb = crate::storage::Storage::thumbnail_key(&keys[2]);
        let mut row = completed(u, g, &keys[0]);
        row.images = vec![
            image(&keys[0], None),
            image(&keys[1], None),
            image(&keys[2], Some(&thumb)),
        ];
        row.hold.as_mut().unwrap().delivered = Some(3);
        let mut all = keys.clone();
        all.push(thumb.clone());
        let mut out = Vec::new();
        check_generation(&row, &all, true, &mut out);
        assert_eq!(out, []);

        check_generation(&row, &keys[..2], true, &mut out);
        let found: Vec<_> = out.iter().map(|v| (v.kind, v.key.clone())).collect();
        assert_eq!(
            found,
            [
                ("missing_object", Some(keys[2].clone())),
                ("missing_object", Some(thumb))
            ]
        );

        out.clear();
        row.hold.as_mut().unwrap().delivered = Some(2);
        check_generation(&row, &all, true, &mut out);
        assert_eq!(
            out.iter().map(|v| v.kind).collect::<Vec<_>>(),
            ["uncharged_image"]
        );

        // Charged for four, three rows: one lost, unless the user deleted it.
        out.clear();
        row.hold.as_mut().unwrap().delivered = Some(4);
        check_generation(&row, &all, true, &mut out);
        assert_eq!(
            out.iter().map(|v| v.kind).collect::<Vec<_>>(),
            ["image_missing"]
        );
        out.clear();
        row.image_deleted = true;
        check_generation(&row, &all, true, &mut out);
        assert_eq!(out, []);
    }
}
