//! Buying credits end to end (staging, the `ledger` provider): a Stripe
//! simulator of the test's own delivers signed events to the test's API;
//! each purchase, refund and dispute moves the balance once whatever the
//! deliveries (duplicated, concurrent, late, lost, out of order), and the
//! audit is clean at the end.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    common::{Stack, own_database},
    private::{PrivateStripe, STRIPE_KEY, STRIPE_SECRET, free_port},
};

/// A staging API on `db` (the shared test database if `None`) with a Stripe simulator of its own.
async fn shop(db: Option<&str>) -> (Stack, PrivateStripe) {
    let port = free_port();
    let stripe_url = format!("http://127.0.0.1:{port}");
    let mut settings = vec![
        ("APP_ENV", "staging"),
        ("CREDITS_PROVIDER", "ledger"),
        ("STRIPE_API_BASE_URL", stripe_url.as_str()),
        ("STRIPE_SECRET_KEY", STRIPE_KEY),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("RATE_LIMIT_GENERATE_PER_MINUTE", "1000"),
        ("RATE_LIMIT_READS_PER_MINUTE", "1000"),
    ];
    if let Some(db) = db {
        settings.push(("DATABASE_URL", db));
    }
    let s = Stack::with(&settings).await;
    let stripe = PrivateStripe::start(port, &format!("{}/api/v1/payments/webhook", s.base)).await;
    (s, stripe)
}

async fn balance(s: &Stack, user: Uuid) -> i64 {
    let (status, b) = s
        .call(Method::GET, "/api/v1/credits/balance", Some(user), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    b["balance"].as_i64().unwrap()
}

/// Waits until the user's balance is `want` (deliveries are asynchronous), then checks it stays.
async fn balance_becomes(s: &Stack, user: Uuid, want: i64) {
    let end = Instant::now() + Duration::from_secs(15);
    while balance(s, user).await != want {
        assert!(
            Instant::now() < end,
            "balance {} never became {want}",
            balance(s, user).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(balance(s, user).await, want, "the balance moved again");
}

/// Starts buying `pack` as `user`; the session id.
async fn checkout(s: &Stack, user: Uuid, pack: &str) -> String {
    let (status, c) = s
        .call(
            Method::POST,
            "/api/v1/credits/checkout",
            Some(user),
            Some(json!({"packId": pack})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert!(
        c["checkoutUrl"]
            .as_str()
            .unwrap()
            .contains(c["sessionId"].as_str().unwrap())
    );
    c["sessionId"].as_str().unwrap().to_string()
}

/// The customer pays (or the bank answers) at the simulator; the session's PaymentIntent.
async fn pay(stripe: &PrivateStripe, session: &str, outcome: &str, deliver: bool) -> String {
    let (status, paid) = stripe
        .call(
            Method::POST,
            &format!("/_sim/checkout/sessions/{session}/pay"),
            Some(json!({"outcome": outcome, "deliver": deliver})),
        )
        .await;
    assert_eq!(status, 200, "{paid}");
    paid["session"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn purchase_status(s: &Stack, user: Uuid, session: &str) -> (StatusCode, Value) {
    s.call(
        Method::GET,
        &format!("/api/v1/credits/checkout/{session}"),
        Some(user),
        None,
    )
    .await
}

/// The events the simulator recorded of `kind`, newest first.
async fn events(stripe: &PrivateStripe, kind: &str) -> Vec<Value> {
    let (_, list) = stripe.call(Method::GET, "/_sim/events", None).await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

async fn assert_audit_clean(s: &Stack, user: Uuid) {
    let filter = picture::audit::Filter {
        since: None,
        user: Some(user),
    };
    let report = picture::audit::inspect(&s.state, &filter).await.unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.checked.purchases > 0);
}

#[tokio::test]
async fn a_user_out_of_free_generations_buys_credits_and_generates_on() {
    let (s, stripe) = shop(None).await;
    let user = Uuid::new_v4();
    for i in 0..3 {
        let (status, g) = s
            .generate(user, &format!("free {i} [sim:slow=50]"), true)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{g}");
    }
    let (status, p) = s.generate(user, "one more", false).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::PAYMENT_REQUIRED, Some("INSUFFICIENT_CREDITS"))
    );

    let (status, packs) = s
        .call(Method::GET, "/api/v1/credits/packs", Some(user), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = &packs[0];
    assert_eq!(
        (
            first["id"].as_str(),
            first["credits"].as_i64(),
            first["priceCents"].as_i64(),
            first["currency"].as_str()
        ),
        (Some("credits-100"), Some(100), Some(499), Some("eur")),
        "{packs}"
    );
    let session = checkout(&s, user, "credits-100").await;
    let (status, open) = purchase_status(&s, user, &session).await;
    assert_eq!(
        (status, open["status"].as_str()),
        (StatusCode::OK, Some("open")),
        "{open}"
    );
    // Only its owner sees it.
    let (status, p) = purchase_status(&s, Uuid::new_v4(), &session).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("PURCHASE_NOT_FOUND"))
    );

    pay(&stripe, &session, "paid", true).await;
    balance_becomes(&s, user, 100).await;
    let (_, granted) = purchase_status(&s, user, &session).await;
    assert_eq!(
        (granted["status"].as_str(), granted["credits"].as_i64()),
        (Some("granted"), Some(100))
    );
    let (status, g) = s.generate(user, "paid for [sim:slow=50]", true).await;
    assert_eq!(
        (status, g["charge"].as_str()),
        (StatusCode::CREATED, Some("credits")),
        "{g}"
    );
    assert_eq!(balance(&s, user).await, 90);

    // The ledger lists the purchase and the capture, newest first.
    let (status, t) = s
        .call(
            Method::GET,
            "/api/v1/credits/transactions?limit=1",
            Some(user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(
        (
            t["data"][0]["kind"].as_str(),
            t["data"][0]["delta"].as_i64()
        ),
        (Some("capture"), Some(-10))
    );
    let next = t["nextCursor"].as_str().unwrap();
    let (_, t) = s
        .call(
            Method::GET,
            &format!("/api/v1/credits/transactions?cursor={next}"),
            Some(user),
            None,
        )
        .await;
    assert_eq!(
        (
            t["data"][0]["kind"].as_str(),
            t["data"][0]["reference"].as_str(),
            t["data"][0]["delta"].as_i64()
        ),
        (Some("purchase"), Some(session.as_str()), Some(100)),
        "{t}"
    );
    assert_audit_clean(&s, user).await;
}

#[tokio::test]
async fn duplicate_concurrent_and_late_deliveries_grant_once() {
    let (s, stripe) = shop(None).await;
    let user = Uuid::new_v4();
    let session = checkout(&s, user, "credits-100").await;
    pay(&stripe, &session, "paid", true).await;
    balance_becomes(&s, user, 100).await;
    let event = events(&stripe, "checkout.session.completed")
        .await
        .into_iter()
        .find(|e| e["object_id"] == session.as_str())
        .expect("the completion event");
    let id = event["id"].as_str().unwrap();
    let path = format!("/_sim/events/{id}/redeliver");
    let redeliveries = (0..10).map(|_| stripe.call(Method::POST, &path, None));
    for (status, r) in futures::future::join_all(redeliveries).await {
        assert_eq!(
            (status, r["delivery"]["status_code"].as_i64()),
            (200, Some(200)),
            "{r}"
        );
    }
    // The same event an hour later: Stripe signs each delivery anew.
    let (_, full) = stripe
        .call(Method::GET, &format!("/v1/events/{id}"), None)
        .await;
    let body = serde_json::to_vec(&full).unwrap();
    let header =
        picture::stripe::signature::sign(STRIPE_SECRET, chrono::Utc::now().timestamp(), &body);
    let res = s
        .http
        .post(format!("{}/api/v1/payments/webhook", s.base))
        .header("stripe-signature", header)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    balance_becomes(&s, user, 100).await;
    assert_audit_clean(&s, user).await;
}

#[tokio::test]
async fn bad_or_stale_signatures_are_400_and_record_nothing() {
    let (s, stripe) = shop(None).await;
    let user = Uuid::new_v4();
    let session = checkout(&s, user, "credits-100").await;
    pay(&stripe, &session, "paid", false).await;
    let event = &events(&stripe, "checkout.session.completed").await[0];
    let (_, full) = stripe
        .call(
            Method::GET,
            &format!("/v1/events/{}", event["id"].as_str().unwrap()),
            None,
        )
        .await;
    let body = serde_json::to_vec(&full).unwrap();
    let now = chrono::Utc::now().timestamp();
    for header in [
        Some(picture::stripe::signature::sign("whsec_wrong", now, &body)),
        Some(picture::stripe::signature::sign(
            STRIPE_SECRET,
            now - 301,
            &body,
        )),
        Some("t=1,v1=00".to_string()),
        None,
    ] {
        let mut req = s
            .http
            .post(format!("{}/api/v1/payments/webhook", s.base))
            .body(body.clone());
        if let Some(h) = &header {
            req = req.header("stripe-signature", h);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{header:?}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "INVALID_SIGNATURE"
        );
    }
    assert_eq!(balance(&s, user).await, 0);
    let db = s.state.db.get().await.unwrap();
    let row = db
        .query_one(
            "SELECT status, payment_intent FROM purchases WHERE session_id = $1",
            &[&session],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        ("open".into(), None)
    );
}

#[tokio::test]
async fn a_lost_webhook_is_granted_by_the_success_page_or_the_reconciler_once() {
    let (db, name, server) = own_database("payments").await;
    let (s, stripe) = shop(Some(&db)).await;
    let user = Uuid::new_v4();
    // The success page asks: Stripe says paid, so it grants.
    let first = checkout(&s, user, "credits-100").await;
    pay(&stripe, &first, "paid", false).await;
    let (status, p) = purchase_status(&s, user, &first).await;
    assert_eq!(
        (status, p["status"].as_str()),
        (StatusCode::OK, Some("granted")),
        "{p}"
    );
    let again = futures::future::join_all((0..5).map(|_| purchase_status(&s, user, &first))).await;
    assert!(again.iter().all(|(_, p)| p["status"] == "granted"));
    assert_eq!(balance(&s, user).await, 100);

    // Nobody asks: the reconciler finds the paid session at Stripe.
    let second = checkout(&s, user, "credits-500").await;
    pay(&stripe, &second, "paid", false).await;
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!(report.purchases.granted, 1, "{report:?}");
    let report = picture::reconcile::sweep(&s.state).await.unwrap();
    assert_eq!(report.purchases.granted, 0, "{report:?}");
    assert_eq!(balance(&s, user).await, 600);

    // An async payment that fails grants nothing; one that succeeds grants once.
    let failing = checkout(&s, user, "credits-100").await;
    pay(&stripe, &failing, "async_failed", true).await;
    let succeeding = checkout(&s, user, "credits-100").await;
    pay(&stripe, &succeeding, "async_succeeded", true).await;
    balance_becomes(&s, user, 700).await;
    let (_, p) = purchase_status(&s, user, &failing).await;
    assert_eq!(p["status"], "failed", "{p}");
    assert_audit_clean(&s, user).await;

    // `make usage` counts what was sold (this database holds only these purchases).
    let window = picture::usage::Window {
        since: chrono::Utc::now() - chrono::TimeDelta::hours(1),
        until: chrono::Utc::now() + chrono::TimeDelta::minutes(1),
    };
    let report = picture::usage::report(&**s.state.db.get().await.unwrap(), window, 1.1)
        .await
        .unwrap();
    let sales = &report.revenue.sales;
    assert_eq!(sales.len(), 1, "{sales:?}");
    assert_eq!(
        (
            sales[0].currency.as_str(),
            sales[0].purchases,
            sales[0].credits_sold,
            sales[0].gross_cents,
            sales[0].net_cents
        ),
        ("eur", 3, 700, 2997, 2997)
    );
    assert_eq!(report.revenue.net_usd_per_credit, Some(0.047096));
    assert!(report.revenue.margin_usd.is_some());
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["revenue"]["marginUsd"].is_number(), "{json}");
    drop(s);
    crate::common::drop_database(&server, &name).await;
}

#[tokio::test]
async fn refunds_and_disputes_take_back_their_share_once_in_any_order() {
    let (s, stripe) = shop(None).await;
    let user = Uuid::new_v4();
    // A full refund takes the 100 back.
    let full = checkout(&s, user, "credits-100").await;
    let pi = pay(&stripe, &full, "paid", true).await;
    balance_becomes(&s, user, 100).await;
    let (status, r) = stripe
        .post_form("/v1/refunds", &[("payment_intent", &pi)])
        .await;
    assert_eq!(status, 200, "{r}");
    balance_becomes(&s, user, 0).await;

    // A partial refund (2.50 of 4.99) takes its share: 50; the rest of it the other 50.
    let partial = checkout(&s, user, "credits-100").await;
    let pi = pay(&stripe, &partial, "paid", true).await;
    balance_becomes(&s, user, 100).await;
    stripe
        .post_form("/v1/refunds", &[("payment_intent", &pi), ("amount", "250")])
        .await;
    balance_becomes(&s, user, 50).await;
    stripe
        .post_form("/v1/refunds", &[("payment_intent", &pi)])
        .await;
    balance_becomes(&s, user, 0).await;

    // A refund delivered before the completion still ends at the right balance.
    let early = checkout(&s, user, "credits-100").await;
    let pi = pay(&stripe, &early, "paid", false).await;
    stripe
        .post_form("/v1/refunds", &[("payment_intent", &pi), ("amount", "100")])
        .await;
    balance_becomes(&s, user, -20).await;
    let completed = events(&stripe, "checkout.session.completed")
        .await
        .into_iter()
        .find(|e| e["object_id"] == early.as_str())
        .unwrap();
    let id = completed["id"].as_str().unwrap();
    stripe
        .call(Method::POST, &format!("/_sim/events/{id}/redeliver"), None)
        .await;
    balance_becomes(&s, user, 80).await;

    // A dispute takes back what the purchase still holds (80); won, it gives it back.
    let (status, d) = stripe
        .call(
            Method::POST,
            &format!("/_sim/payment_intents/{pi}/dispute"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{d}");
    balance_becomes(&s, user, 0).await;
    let dispute = d["dispute"]["id"].as_str().unwrap();
    stripe
        .call(
            Method::POST,
            &format!("/_sim/disputes/{dispute}/close"),
            Some(json!({"status": "won"})),
        )
        .await;
    balance_becomes(&s, user, 80).await;
    assert_audit_clean(&s, user).await;
}

#[tokio::test]
async fn a_session_that_disagrees_with_its_pack_grants_nothing() {
    let (s, stripe) = shop(None).await;
    let user = Uuid::new_v4();
    let session = checkout(&s, user, "credits-100").await;
    // What we recorded and what Stripe charged differ (a pack edited behind the API's back, say).
    let db = s.state.db.get().await.unwrap();
    db.execute(
        "UPDATE purchases SET amount_cents = 1 WHERE session_id = $1",
        &[&session],
    )
    .await
    .unwrap();
    pay(&stripe, &session, "paid", true).await;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, p) = purchase_status(&s, user, &session).await;
        if p["status"] == "failed" {
            break;
        }
        assert!(Instant::now() < end, "{p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(balance(&s, user).await, 0);
    let mismatch: bool = db
        .query_one(
            "SELECT mismatch FROM purchases WHERE session_id = $1",
            &[&session],
        )
        .await
        .unwrap()
        .get(0);
    assert!(mismatch);
}

#[tokio::test]
async fn bad_requests_and_the_audit_of_a_deleted_grant() {
    let (s, stripe) = shop(None).await;
    let user = Uuid::new_v4();
    for (body, field) in [
        (json!({}), "packId"),
        (json!({"packId": 5}), "packId"),
        (json!({"packId": "credits-100", "extra": 1}), "extra"),
        (json!({"packId": "a\u{0}b"}), "packId"),
    ] {
        let (status, p) = s
            .call(
                Method::POST,
                "/api/v1/credits/checkout",
                Some(user),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, p["errors"][0]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{body}: {p}"
        );
    }
    let (status, p) = s
        .call(
            Method::POST,
            "/api/v1/credits/checkout",
            Some(user),
            Some(json!({"packId": "credits-7"})),
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("PACK_NOT_FOUND"))
    );
    let (status, _) = purchase_status(&s, user, "cs_..%2F..").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A grant deleted behind the API's back is flagged.
    let session = checkout(&s, user, "credits-100").await;
    pay(&stripe, &session, "paid", true).await;
    balance_becomes(&s, user, 100).await;
    let db = s.state.db.get().await.unwrap();
    db.execute(
        "DELETE FROM credit_transactions WHERE session_id = $1 AND kind = 'purchase'",
        &[&session],
    )
    .await
    .unwrap();
    let filter = picture::audit::Filter {
        since: None,
        user: Some(user),
    };
    let report = picture::audit::inspect(&s.state, &filter).await.unwrap();
    let kinds: Vec<_> = report.violations.iter().map(|v| v.kind).collect();
    assert!(
        kinds.contains(&"purchase_grant") && kinds.contains(&"ledger"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn credits_sold_elsewhere_are_not_for_sale_here() {
    let s = Stack::with(&[
        ("CREDITS_PROVIDER", "manacore"),
        ("MANA_CREDITS_URL", "http://127.0.0.1:9"),
        ("MANA_CORE_SERVICE_KEY", "k"),
        ("STRIPE_SECRET_KEY", STRIPE_KEY),
    ])
    .await;
    let user = Uuid::new_v4();
    let (status, packs) = s
        .call(Method::GET, "/api/v1/credits/packs", Some(user), None)
        .await;
    assert_eq!((status, packs), (StatusCode::OK, json!([])));
    let (status, p) = s
        .call(
            Method::POST,
            "/api/v1/credits/checkout",
            Some(user),
            Some(json!({"packId": "credits-100"})),
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("PURCHASE_NOT_AVAILABLE"))
    );
}

/// Two refunds made in the same second have no order Stripe tells: whatever
/// order deliveries list them in, together they take back exactly their share
/// (a delivery that listed the second first took 49 + 50 = 99 of 100).
#[tokio::test]
async fn refunds_in_the_same_second_take_their_share_in_any_order() {
    let (s, stripe) = shop(None).await;
    let user = Uuid::new_v4();
    let session = checkout(&s, user, "credits-100").await;
    let pi = pay(&stripe, &session, "paid", true).await;
    balance_becomes(&s, user, 100).await;
    let refund = |id: &str, amount: i64| json!({"id": id, "amount": amount, "created": 1_800_000_000, "status": "succeeded"});
    let charge = |refunds: Vec<Value>| -> picture::stripe::objects::Charge {
        serde_json::from_value(
            json!({"id": "ch_same_second", "amount": 499, "payment_intent": pi,
            "refunds": {"object": "list", "data": refunds}}),
        )
        .unwrap()
    };
    // The first delivery knows the 2.50 refund; the second lists both, the later one first by id.
    let (a, b) = (format!("re_{user}_a"), format!("re_{user}_b"));
    let first = charge(vec![refund(&b, 250)]);
    picture::purchases::refunded(&s.state, &first)
        .await
        .unwrap();
    balance_becomes(&s, user, 50).await;
    let both = charge(vec![refund(&a, 249), refund(&b, 250)]);
    picture::purchases::refunded(&s.state, &both).await.unwrap();
    picture::purchases::refunded(&s.state, &both).await.unwrap();
    balance_becomes(&s, user, 0).await;
}
