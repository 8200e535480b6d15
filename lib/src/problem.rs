//! The one error type handlers return, rendered as RFC 9457 problem JSON with
//! a stable `code`. Internal failures are logged here and leave only a
//! generic `INTERNAL` answer: no SQL, stack trace or upstream body escapes.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value, json};

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
        }
    }

    /// Adds a member to the problem document.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extra.insert(key.to_string(), json!(value));
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
        res
    }
}

impl From<crate::Error> for Problem {
    fn from(err: crate::Error) -> Self {
        tracing::error!(error = %err, "internal error");
        Problem::internal()
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
    fn internal_errors_hide_their_cause() {
        let p: Problem = crate::Error::Internal("relation \"x\" does not exist".into()).into();
        assert_eq!(p.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!p.body().to_string().contains("relation"));
    }
}
