//! The one error type handlers return, rendered as RFC 9457 problem JSON with
//! a stable `code` ([`ErrorCode`]), and the one mapping of domain errors
//! ([`crate::Error`]) and codes to HTTP statuses. Transient faults answer 503
//! with `Retry-After`; internal failures are logged here and leave only a
//! generic `INTERNAL` answer: no SQL, stack trace or upstream body escapes.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    error::Resource,
    error_code::ErrorCode,
    telemetry::{self, metric},
};

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldError {
    /// The field as the client wrote it (`prompt`, `settings.width`, `prompts[2].prompt`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error answer: status, stable code, detail, extra members.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status (the code's own unless overridden).
    pub status: StatusCode,
    /// The stable code; its title is the problem's `title`.
    pub code: ErrorCode,
    /// What happened this time (the code's default message unless given).
    pub detail: String,
    /// Further members of the document (`errors`, `required`, `limit`, …).
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

/// The problem document as sent.
#[derive(Serialize)]
struct Document<'a> {
    r#type: &'static str,
    title: &'static str,
    status: u16,
    code: ErrorCode,
    detail: &'a str,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

/// The HTTP status a code answers with.
fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    match code {
        C::ValidationFailed | C::MalformedJson | C::MalformedRequest => StatusCode::BAD_REQUEST,
        C::Unauthenticated | C::InvalidSignature => StatusCode::UNAUTHORIZED,
        C::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
        C::NotFound
        | C::GenerationNotFound
        | C::ImageNotFound
        | C::ModelNotFound
        | C::UploadNotFound
        | C::BatchNotFound
        | C::ExportNotFound
        | C::PackNotFound
        | C::PurchaseNotFound => StatusCode::NOT_FOUND,
        C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        C::UploadNotReady
        | C::GenerationNotCancellable
        | C::IdempotencyInProgress
        | C::IdempotencyKeyReused
        | C::PurchaseNotAvailable => StatusCode::CONFLICT,
        C::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        C::ContentRefused | C::ProviderRejectedInput => StatusCode::UNPROCESSABLE_ENTITY,
        C::TooManyInFlight | C::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        C::ProviderError | C::RelayFailed => StatusCode::BAD_GATEWAY,
        C::RateLimitUnavailable
        | C::ModerationUnavailable
        | C::ProviderBusy
        | C::PaymentProviderUnavailable
        | C::CreditServiceUnavailable
        | C::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        C::Internal | C::GenerationFailed | C::NoOutput | C::Timeout | C::OutputCopyFailed => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl Problem {
    /// The answer for `code`: its status, title and default message.
    pub fn of(code: ErrorCode) -> Self {
        Problem {
            status: status_of(code),
            code,
            detail: code.message().to_string(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// Says what happened this time instead of the code's default message.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Answers with another status than the code's own.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a member to the problem document.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.extra.insert(key.to_string(), value);
        self
    }

    /// Asks the client to retry after `secs` seconds (`Retry-After`).
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400 `VALIDATION_FAILED` listing the invalid fields.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.len() {
            1 => "1 field is invalid.".to_string(),
            n => format!("{n} fields are invalid."),
        };
        Problem::of(ErrorCode::ValidationFailed)
            .detail(detail)
            .with("errors", errors)
    }

    /// 400 `MALFORMED_JSON`.
    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Problem::of(ErrorCode::MalformedJson).detail(detail)
    }

    /// 404 with the resource's own code.
    pub fn not_found(what: Resource) -> Self {
        Problem::of(what.code())
    }

    /// 413 `PAYLOAD_TOO_LARGE`.
    pub fn payload_too_large(limit: usize) -> Self {
        Problem::of(ErrorCode::PayloadTooLarge)
            .detail(format!("The request body exceeds {limit} bytes."))
    }

    /// 402 `INSUFFICIENT_CREDITS` with what is required and what is there.
    pub fn insufficient_credits(required: i64, balance: i64, free_remaining: i32) -> Self {
        Problem::of(ErrorCode::InsufficientCredits)
            .detail(format!(
                "This generation needs {required} credits; your balance is {balance}."
            ))
            .with("required", required)
            .with("balance", balance)
            .with("freeGenerationsRemaining", free_remaining)
    }

    /// 503 `SERVICE_UNAVAILABLE`: a dependency did not answer in time or failed on its side.
    pub fn unavailable() -> Self {
        Problem::of(ErrorCode::ServiceUnavailable).retry_after(2)
    }

    /// The problem document as JSON.
    pub fn body(&self) -> Value {
        serde_json::to_value(Document {
            r#type: "about:blank",
            title: self.code.title(),
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
            extra: &self.extra,
        })
        .unwrap_or(Value::Null)
    }

    /// The `field` of each entry of `errors`, in order (for tests of the parsers).
    #[cfg(test)]
    pub fn error_fields(&self) -> Vec<String> {
        self.body()["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["field"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<crate::Error> for Problem {
    /// The HTTP answer to a domain error.
    fn from(err: crate::Error) -> Self {
        use crate::Error as E;
        use ErrorCode as C;
        match err {
            E::InsufficientCredits {
                required,
                balance,
                free_remaining,
            } => {
                telemetry::count(metric::INSUFFICIENT_CREDITS, 1);
                Problem::insufficient_credits(required, balance, free_remaining)
            }
            E::TooManyInFlight { open, retry_after } => {
                telemetry::count(metric::TOO_MANY_IN_FLIGHT, 1);
                Problem::of(C::TooManyInFlight)
                    .detail(format!(
                        "You have {open} generations running; retry when one has finished."
                    ))
                    .retry_after(retry_after)
            }
            E::TooManyQueued { queued, limit } => {
                telemetry::count(metric::TOO_MANY_IN_FLIGHT, 1);
                Problem::of(C::TooManyInFlight)
                    .detail(format!(
                        "At most {limit} batch items may wait at once; you have {queued} waiting. Retry when some have run."
                    ))
                    .with("limit", limit)
            }
            E::NotFound(what) => Problem::not_found(what),
            E::InputRefused => Problem::of(C::ProviderRejectedInput),
            E::ProviderBusy => Problem::of(C::ProviderBusy).retry_after(5),
            E::IdempotencyKeyTaken => Problem::of(C::IdempotencyInProgress),
            E::ProviderRefused(e) => {
                tracing::error!(error = %e, "provider refused to start a generation");
                Problem::of(C::ProviderError)
            }
            E::UploadNotReady => Problem::of(C::UploadNotReady),
            E::UploadUnusable(message) => {
                Problem::validation(vec![FieldError::new("sourceImageId", message)])
            }
            E::NotCancellable(status) => Problem::of(C::GenerationNotCancellable)
                .detail(format!("The generation is already {}.", status.as_str())),
            E::Credits(e) => {
                tracing::error!(error = %e, "credit service failed");
                Problem::of(C::CreditServiceUnavailable)
            }
            E::ContentRefused { categories, term } => {
                let detail = match &term {
                    Some(t) => format!(
                        "The request contains \"{t}\", which is not allowed here; please rephrase."
                    ),
                    None => {
                        "The request was refused by content moderation; please rephrase.".into()
                    }
                };
                let problem = Problem::of(C::ContentRefused)
                    .detail(detail)
                    .with("categories", categories);
                match term {
                    Some(t) => problem.with("term", t),
                    None => problem,
                }
            }
            E::ModerationUnavailable => Problem::of(C::ModerationUnavailable).retry_after(5),
            E::PurchaseNotAvailable => Problem::of(C::PurchaseNotAvailable),
            E::IdempotencyKeyReused => Problem::of(C::IdempotencyKeyReused),
            E::Stripe(e) if e.is_transient() => {
                tracing::warn!(error = %e, "payment provider unavailable: answered 503");
                Problem::of(C::PaymentProviderUnavailable).retry_after(5)
            }
            E::Stripe(e) => {
                tracing::error!(error = %e, "payment provider refused");
                Problem::of(C::ProviderError).detail("The payment provider refused this request.")
            }
            e if e.is_transient() => {
                tracing::warn!(error = %e, "transient failure: answered 503");
                Problem::unavailable()
            }
            e => {
                tracing::error!(error = %e, "internal error");
                Problem::of(C::Internal)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9457_with_code_and_extras() {
        let p = Problem::insufficient_credits(10, 4, 0);
        let body = p.body();
        assert_eq!(body["status"], 402);
        assert_eq!(body["code"], "INSUFFICIENT_CREDITS");
        assert_eq!(body["required"], 10);
        assert_eq!(body["balance"], 4);
        assert_eq!(
            body["detail"],
            "This generation needs 10 credits; your balance is 4."
        );
        let res = p.into_response();
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn transient_faults_answer_503_with_retry_after() {
        let p: Problem = crate::Error::TimedOut("copy").into();
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p.code, ErrorCode::ServiceUnavailable);
        let res = p.into_response();
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let p: Problem = crate::Error::Internal("relation \"x\" does not exist".into()).into();
        assert_eq!(p.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!p.body().to_string().contains("relation"));
    }
}
