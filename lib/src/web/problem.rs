//! The one error type handlers return, rendered as RFC 9457 problem JSON with
//! a stable `code`, and the one mapping of domain errors ([`crate::Error`]) to
//! HTTP answers. Transient faults answer 503 with `Retry-After`; internal
//! failures are logged here and leave only a generic `INTERNAL` answer: no
//! SQL, stack trace or upstream body escapes.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::telemetry::{self, metric};

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error answer: status, stable code, human title and detail, extra members.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            code,
            title,
            detail: detail.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// Adds a member to the problem document.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extra.insert(key.to_string(), json!(value));
        self
    }

    /// Asks the client to retry after `secs` seconds (`Retry-After`).
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.len() {
            1 => "1 field is invalid.".to_string(),
            n => format!("{n} fields are invalid."),
        };
        Problem::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
            "Validation failed",
            detail,
        )
        .with("errors", errors)
    }

    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            "Malformed JSON",
            detail,
        )
    }

    pub fn unauthenticated() -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Unauthenticated",
            "A valid bearer token is required.",
        )
    }

    pub fn invalid_signature() -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_SIGNATURE",
            "Invalid signature",
            "The webhook signature is missing or invalid.",
        )
    }

    pub fn not_found(code: &'static str, what: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            code,
            "Not found",
            format!("{what} not found."),
        )
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, code, "Conflict", detail)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "Payload too large",
            format!("The request body exceeds {limit} bytes."),
        )
    }

    pub fn insufficient_credits(required: i64, balance: i64, free_remaining: i32) -> Self {
        Problem::new(
            StatusCode::PAYMENT_REQUIRED,
            "INSUFFICIENT_CREDITS",
            "Insufficient credits",
            format!("This generation needs {required} credits; your balance is {balance}."),
        )
        .with("required", required)
        .with("balance", balance)
        .with("freeGenerationsRemaining", free_remaining)
    }

    pub fn provider_error(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_GATEWAY,
            "PROVIDER_ERROR",
            "Image provider error",
            detail,
        )
    }

    pub fn credit_service_unavailable() -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "CREDIT_SERVICE_UNAVAILABLE",
            "Credit service unavailable",
            "Your credit balance cannot be checked right now; please retry shortly.",
        )
    }

    /// A dependency did not answer in time or failed on its side: retry shortly.
    pub fn unavailable() -> Self {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "Service unavailable",
            "A service this request depends on is not answering; retry shortly.",
        )
        .retry_after(2)
    }

    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Internal error",
            "Something went wrong on our side.",
        )
    }

    /// The problem document as JSON.
    pub fn body(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("type".into(), json!("about:blank"));
        doc.insert("title".into(), json!(self.title));
        doc.insert("status".into(), json!(self.status.as_u16()));
        doc.insert("code".into(), json!(self.code));
        doc.insert("detail".into(), json!(self.detail));
        doc.extend(self.extra.clone());
        Value::Object(doc)
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
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_IN_FLIGHT",
                    "Too many generations in flight",
                    format!("You have {open} generations running; retry when one has finished."),
                )
                .retry_after(retry_after)
            }
            E::TooManyQueued { queued, limit } => {
                telemetry::count(metric::TOO_MANY_IN_FLIGHT, 1);
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOO_MANY_IN_FLIGHT",
                    "Too many generations queued",
                    format!(
                        "At most {limit} batch items may wait at once; you have {queued} waiting. Retry when some have run."
                    ),
                )
                .with("limit", limit)
            }
            E::BatchNotFound => Problem::not_found("BATCH_NOT_FOUND", "Batch"),
            E::InputRefused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "PROVIDER_REJECTED_INPUT",
                "Input refused",
                "The image provider refused this model version or input.",
            ),
            E::ProviderBusy => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PROVIDER_BUSY",
                "Image provider busy",
                "The image provider is busy; nothing was charged. Please retry shortly.",
            )
            .retry_after(5),
            E::IdempotencyKeyTaken => Problem::conflict(
                "IDEMPOTENCY_IN_PROGRESS",
                "A request with this Idempotency-Key is still running; retry shortly.",
            ),
            E::ProviderRefused(e) => {
                tracing::error!(error = %e, "provider refused to start a generation");
                Problem::provider_error("The image provider could not start this generation.")
            }
            E::GenerationNotFound => Problem::not_found("GENERATION_NOT_FOUND", "Generation"),
            E::UploadNotFound => Problem::not_found("UPLOAD_NOT_FOUND", "Upload"),
            E::UploadNotReady => Problem::conflict(
                "UPLOAD_NOT_READY",
                "Nothing was uploaded with this id yet: PUT the image to its upload URL first.",
            ),
            E::UploadUnusable(message) => {
                Problem::validation(vec![FieldError::new("sourceImageId", message)])
            }
            E::NotCancellable(status) => Problem::conflict(
                "GENERATION_NOT_CANCELLABLE",
                format!("The generation is already {}.", status.as_str()),
            ),
            E::Credits(e) => {
                tracing::error!(error = %e, "credit service failed");
                Problem::credit_service_unavailable()
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
                let problem = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "CONTENT_REFUSED",
                    "Content refused",
                    detail,
                )
                .with("categories", categories);
                match term {
                    Some(t) => problem.with("term", t),
                    None => problem,
                }
            }
            E::ModerationUnavailable => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "MODERATION_UNAVAILABLE",
                "Moderation unavailable",
                "Requests cannot be checked right now; nothing was charged. Please retry shortly.",
            )
            .retry_after(5),
            E::PurchaseNotAvailable => Problem::conflict(
                "PURCHASE_NOT_AVAILABLE",
                "Credits are not sold here: they come from the account service.",
            ),
            E::PackNotFound => Problem::not_found("PACK_NOT_FOUND", "Credit pack"),
            E::PurchaseNotFound => Problem::not_found("PURCHASE_NOT_FOUND", "Purchase"),
            E::IdempotencyKeyReused => Problem::conflict(
                "IDEMPOTENCY_KEY_REUSED",
                "This Idempotency-Key was used with another request body.",
            ),
            E::Stripe(e) if e.is_transient() => {
                tracing::warn!(error = %e, "payment provider unavailable: answered 503");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "PAYMENT_PROVIDER_UNAVAILABLE",
                    "Payment provider unavailable",
                    "The payment provider did not answer; nothing was charged. Please retry shortly.",
                )
                .retry_after(5)
            }
            E::Stripe(e) => {
                tracing::error!(error = %e, "payment provider refused");
                Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "PROVIDER_ERROR",
                    "Payment provider error",
                    "The payment provider refused this request.",
                )
            }
            e if e.is_transient() => {
                tracing::warn!(error = %e, "transient failure: answered 503");
                Problem::unavailable()
            }
            e => {
                tracing::error!(error = %e, "internal error");
                Problem::internal()
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
        assert_eq!(p.code, "SERVICE_UNAVAILABLE");
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
