//! The statements and transactions of PostgreSQL as client spans (see
//! [`crate::otel`]). The table modules take `impl Sql`, whose methods are
//! tokio-postgres's, each run in a span named after the statement's operation
//! and the module that runs it (`SELECT generations`), with its text; a
//! transaction is [`Tx`], spanning BEGIN to COMMIT (or the rollback of a drop).

use std::{future::Future, ops::Deref, panic::Location, pin::Pin};

use tokio_postgres::{
    Error, GenericClient, Row, RowStream,
    types::{BorrowToSql, ToSql},
};
use tracing::{Instrument, Span, instrument::Instrumented};

/// A statement in its span (a concrete type: spawned futures stay `Send`).
pub type Traced<'a, T> = Instrumented<Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>>;

/// A statement's parameters.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The statements the table modules run, each in a client span.
pub trait Sql {
    fn execute<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Traced<'a, u64>;
    fn query<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Traced<'a, Vec<Row>>;
    fn query_one<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Traced<'a, Row>;
    fn query_opt<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Traced<'a, Option<Row>>;
    /// The rows as a stream (the span ends once the first answer arrives).
    fn query_raw<'a, P, I>(&'a self, sql: &'a str, params: I) -> Traced<'a, RowStream>
    where
        P: BorrowToSql,
        P: 'a,
        I: IntoIterator<Item = P> + Sync + Send + 'a,
        I::IntoIter: ExactSizeIterator;
}

impl<C: GenericClient> Sql for C {
    #[track_caller]
    fn execute<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Traced<'a, u64> {
        GenericClient::execute(self, sql, params).instrument(span(sql, Location::caller()))
    }

    #[track_caller]
    fn query<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Traced<'a, Vec<Row>> {
        GenericClient::query(self, sql, params).instrument(span(sql, Location::caller()))
    }

    #[track_caller]
    fn query_one<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Traced<'a, Row> {
        GenericClient::query_one(self, sql, params).instrument(span(sql, Location::caller()))
    }

    #[track_caller]
    fn query_opt<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Traced<'a, Option<Row>> {
        GenericClient::query_opt(self, sql, params).instrument(span(sql, Location::caller()))
    }

    #[track_caller]
    fn query_raw<'a, P, I>(&'a self, sql: &'a str, params: I) -> Traced<'a, RowStream>
    where
        P: BorrowToSql,
        P: 'a,
        I: IntoIterator<Item = P> + Sync + Send + 'a,
        I::IntoIter: ExactSizeIterator,
    {
        GenericClient::query_raw(self, sql, params).instrument(span(sql, Location::caller()))
    }
}

/// The span of one statement run from `caller` (a table module).
fn span(sql: &str, caller: &Location<'_>) -> Span {
    let span = tracing::info_span!(
        target: crate::otel::TARGET,
        "sql",
        otel.name = tracing::field::Empty,
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = tracing::field::Empty,
        db.query.text = sql,
        code.file.path = caller.file(),
        code.line.number = caller.line(),
    );
    if !span.is_disabled() {
        let op = sql.split_whitespace().next().unwrap_or_default();
        let op = op.to_ascii_uppercase();
        let module = std::path::Path::new(caller.file())
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        span.record("otel.name", format!("{op} {module}"));
        span.record("db.operation.name", op);
    }
    span
}

/// A transaction in a client span that ends with it.
pub struct Tx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    span: Span,
}

impl<'a> Tx<'a> {
    /// Begins a transaction on `conn`.
    pub async fn begin(conn: &'a mut deadpool_postgres::Client) -> Result<Tx<'a>, Error> {
        let span = tracing::info_span!(
            target: crate::otel::TARGET,
            "transaction",
            otel.name = "transaction",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = "postgresql",
        );
        let tx = conn.transaction().instrument(span.clone()).await?;
        Ok(Tx { tx, span })
    }

    /// Commits it.
    pub async fn commit(self) -> Result<(), Error> {
        let Tx { tx, span } = self;
        let done = tx.commit().instrument(span.clone()).await;
        if done.is_err() {
            span.record("otel.status_code", "error");
        }
        done
    }
}

impl<'a> Deref for Tx<'a> {
    type Target = tokio_postgres::Transaction<'a>;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}
