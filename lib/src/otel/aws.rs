//! S3 and DynamoDB calls as client spans: an interceptor of the AWS SDK that
//! opens one span per attempt sent (`S3.PutObject`, `DynamoDB.UpdateItem`, …)
//! and closes it with the attempt's outcome. Added to a client only while
//! tracing is on.

use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        interceptors::{
            Intercept,
            context::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef},
        },
        orchestrator::Metadata,
        runtime_components::RuntimeComponents,
    },
};
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use tracing::Span;

/// What a client works on: its bucket or its table.
#[derive(Debug, Clone)]
pub enum Resource {
    /// An S3 bucket, by name.
    Bucket(String),
    /// A DynamoDB table, by name.
    Table(String),
}

/// The interceptor; one per client.
#[derive(Debug)]
pub struct AwsSpans(pub Resource);

/// The span of the attempt in flight.
#[derive(Debug, Clone)]
struct Attempt(Span);

impl Storable for Attempt {
    type Storer = StoreReplace<Self>;
}

impl Intercept for AwsSpans {
    fn name(&self) -> &'static str {
        "AwsSpans"
    }

    fn read_before_transmit(
        &self,
        ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let req = ctx.request();
        // A presigned URL is made, not sent: no call to trace.
        if req.uri().contains("X-Amz-Signature=") {
            return Ok(());
        }
        let Some(op) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let host = ::http::Uri::try_from(req.uri())
            .ok()
            .and_then(|u| u.host().map(str::to_string));
        let span = tracing::info_span!(
            target: super::TARGET,
            "aws",
            otel.name = format!("{}.{}", op.service(), op.name()),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "aws-api",
            rpc.service = op.service(),
            rpc.method = op.name(),
            server.address = host,
            aws.s3.bucket = tracing::field::Empty,
            aws.dynamodb.table_names = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            aws.request_id = tracing::field::Empty,
        );
        match &self.0 {
            Resource::Bucket(b) => span.record("aws.s3.bucket", b.as_str()),
            Resource::Table(t) => span.record("aws.dynamodb.table_names", t.as_str()),
        };
        cfg.interceptor_state().store_put(Attempt(span));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Attempt(span)) = cfg.load::<Attempt>().cloned() else {
            return Ok(());
        };
        cfg.interceptor_state().unset::<Attempt>();
        let status = ctx.response().map(|res| {
            let id = ["x-amz-request-id", "x-amzn-requestid"]
                .iter()
                .find_map(|h| res.headers().get(*h));
            if let Some(id) = id {
                span.record("aws.request_id", id);
            }
            res.status().as_u16()
        });
        if let Some(status) = status {
            span.record("http.response.status_code", status);
        }
        let failed = matches!(ctx.output_or_error(), Some(Err(_)));
        if failed && status.is_none_or(|s| s >= 500) {
            span.record("otel.status_code", "error");
        }
        Ok(())
    }
}
