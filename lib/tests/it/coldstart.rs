//! What the first request of an instance opens early (`AppState::open_early`),
//! alongside its own first steps: the parts each function needs, and the
//! database connection handed to the first checkout. A dependency that is
//! down then fails at most the first request, and the next one tries again.

use std::time::Duration;

use picture::{
    api,
    db::{self, Db},
    state::Early,
};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::common::{self, Stack};

#[test]
fn each_function_opens_what_its_requests_need() {
    let all = Early {
        db: true,
        runtime_table: true,
    };
    // Reads count after their answer: a function of reads alone (or public) needs no table first.
    let db_only = Early {
        db: true,
        runtime_table: false,
    };
    for (routes, early) in [
        (api::status::routes(), db_only),
        (api::history::routes(), db_only),
        (api::generate::routes(), all),
        (api::uploads::routes(), all),
        (api::webhook::routes(), all),
        (api::models::routes(), db_only),
    ] {
        assert_eq!(routes.early(), early, "{}", routes.table()[0].function);
    }
}

fn pool(url: &str) -> Db {
    Db::new(db::pool(url, 4, None, false).unwrap())
}

#[tokio::test]
async fn the_first_checkout_takes_the_connection_opened_early() {
    let db = pool(&common::env(&[])["DATABASE_URL"]);
    db.open_early();
    let first = db.get().await.unwrap();
    first.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(
        db.pool().status().size,
        1,
        "one connection, not a second one"
    );
    drop(first);
    let _again = db.get().await.unwrap();
    assert_eq!(db.pool().status().size, 1);
}

/// A TCP gate in front of PostgreSQL: the first connection is closed after
/// `first_after` without a word, the others are passed through. Returns its port.
async fn gate(first_after: Duration) -> u16 {
    let target = url::Url::parse(&common::env(&[])["DATABASE_URL"]).unwrap();
    let upstream = format!(
        "{}:{}",
        target.host_str().unwrap(),
        target.port().unwrap_or(5432)
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((mut client, _)) = listener.accept().await {
            accepted += 1;
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if accepted == 1 {
                    tokio::time::sleep(first_after).await;
                    return; // dropped: the connection is closed
                }
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

fn through(port: u16) -> String {
    let mut url = url::Url::parse(&common::env(&[])["DATABASE_URL"]).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(port)).unwrap();
    url.to_string()
}

#[tokio::test]
async fn a_failed_early_connection_fails_only_the_checkout_that_waited_for_it() {
    // Still being opened when the first request asks: it gets that attempt's error
    // (one wait, not two in a row), and the next checkout connects.
    let db = pool(&through(gate(Duration::from_millis(300)).await));
    db.open_early();
    assert!(db.get().await.is_err());
    let _next = db.get().await.expect("the next checkout connects");

    // Already failed when the first request asks: that request connects itself.
    let db = pool(&through(gate(Duration::ZERO).await));
    db.open_early();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _own = db
        .get()
        .await
        .expect("an earlier failure is not handed out");
}

#[tokio::test]
async fn a_database_down_at_the_first_request_fails_only_that_request() {
    // The first request starts the early connection and then waits for it
    // (the gate closes it after 300 ms): 503 for that request alone, and the
    // next one connects. Nothing else breaks, and nothing retries in a loop.
    let url = through(gate(Duration::from_millis(300)).await);
    let s = Stack::with(&[("DATABASE_URL", &url)]).await;
    let balance = || {
        s.call(
            Method::GET,
            "/api/v1/credits/balance",
            Some(Uuid::new_v4()),
            None,
        )
    };
    let (status, p) = balance().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    let (status, p) = balance().await;
    assert_eq!(status, StatusCode::OK, "{p}");
}
