//! The stable error codes clients and stored generations carry: each with its
//! problem title and default message, declared once in [`codes!`]. The domain
//! records them on failed generations (`generations.error_code` and
//! `error_message`); the HTTP edge (`web::problem`) adds the status.

use serde::{Serialize, Serializer};

/// Declares [`ErrorCode`] from rows of `Variant = "CODE", "Title", "Default message."`.
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $title:literal, $message:literal;)*) => {
        /// A stable, documented error code (`code` of a problem, `error.code` of a generation).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as clients see it, e.g. `"GENERATION_NOT_FOUND"`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// A short summary that is the same for every occurrence (the problem's `title`).
            pub const fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)* }
            }

            /// What is said when nothing more specific is known (the problem's `detail`,
            /// a failed generation's `error.message`).
            pub const fn message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message,)* }
            }
        }
    };
}

codes! {
    /// A field of the request is invalid (`errors` lists them).
    ValidationFailed = "VALIDATION_FAILED", "Validation failed", "The request has invalid fields.";
    /// The body is not the JSON the route takes.
    MalformedJson = "MALFORMED_JSON", "Malformed JSON", "The body is not valid JSON.";
    /// The request's path, query or headers could not be read.
    MalformedRequest = "MALFORMED_REQUEST", "Bad request", "The request could not be read.";
    /// No valid bearer token.
    Unauthenticated = "UNAUTHENTICATED", "Unauthenticated", "A valid bearer token is required.";
    /// A webhook delivery's signature is missing or wrong.
    InvalidSignature = "INVALID_SIGNATURE", "Invalid signature", "The webhook signature is missing or invalid.";
    /// No such route.
    NotFound = "NOT_FOUND", "Not found", "Route not found.";
    /// The route does not take this method.
    MethodNotAllowed = "METHOD_NOT_ALLOWED", "Method not allowed", "This route does not take that method.";
    /// The body is larger than the route takes.
    PayloadTooLarge = "PAYLOAD_TOO_LARGE", "Payload too large", "The request body is too large.";
    /// No such generation of the caller's.
    GenerationNotFound = "GENERATION_NOT_FOUND", "Not found", "Generation not found.";
    /// No such image of the caller's.
    ImageNotFound = "IMAGE_NOT_FOUND", "Not found", "Image not found.";
    /// No such model in the catalog (or no longer offered).
    ModelNotFound = "MODEL_NOT_FOUND", "Not found", "This model is not offered.";
    /// No such upload of the caller's (unknown, another user's, or expired).
    UploadNotFound = "UPLOAD_NOT_FOUND", "Not found", "Upload not found.";
    /// No such batch of the caller's.
    BatchNotFound = "BATCH_NOT_FOUND", "Not found", "Batch not found.";
    /// No such export of the caller's.
    ExportNotFound = "EXPORT_NOT_FOUND", "Not found", "Export not found.";
    /// No such credit pack on sale.
    PackNotFound = "PACK_NOT_FOUND", "Not found", "Credit pack not found.";
    /// No such purchase of the caller's.
    PurchaseNotFound = "PURCHASE_NOT_FOUND", "Not found", "Purchase not found.";
    /// The upload URL was handed out but nothing was PUT with it yet.
    UploadNotReady = "UPLOAD_NOT_READY", "Conflict", "Nothing was uploaded with this id yet: PUT the image to its upload URL first.";
    /// The generation has already ended.
    GenerationNotCancellable = "GENERATION_NOT_CANCELLABLE", "Conflict", "The generation has already ended.";
    /// A request with this `Idempotency-Key` is still running.
    IdempotencyInProgress = "IDEMPOTENCY_IN_PROGRESS", "Conflict", "A request with this Idempotency-Key is still running; retry shortly.";
    /// This `Idempotency-Key` came with another body before.
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED", "Conflict", "This Idempotency-Key was used with another request body.";
    /// Credits are not sold here.
    PurchaseNotAvailable = "PURCHASE_NOT_AVAILABLE", "Conflict", "Credits are not sold here: they come from the account service.";
    /// The caller has fewer credits than the request needs.
    InsufficientCredits = "INSUFFICIENT_CREDITS", "Insufficient credits", "Your balance does not cover this request.";
    /// Too many generations running or queued for the caller.
    TooManyInFlight = "TOO_MANY_IN_FLIGHT", "Too many generations in flight", "You have too many generations running; retry when one has finished.";
    /// Over the route's rate limit.
    RateLimited = "RATE_LIMITED", "Too many requests", "Too many requests; retry shortly.";
    /// The rate limit cannot be checked (writes fail closed).
    RateLimitUnavailable = "RATE_LIMIT_UNAVAILABLE", "Service unavailable", "The rate limit cannot be checked right now; retry shortly.";
    /// The content of the request or of an output is refused by moderation.
    ContentRefused = "CONTENT_REFUSED", "Content refused", "The image provider's safety checker refused this image; nothing was charged. Try another prompt.";
    /// The moderation provider cannot answer, and nothing is allowed without it.
    ModerationUnavailable = "MODERATION_UNAVAILABLE", "Moderation unavailable", "Requests cannot be checked right now; nothing was charged. Please retry shortly.";
    /// The image provider refused the model version or the input.
    ProviderRejectedInput = "PROVIDER_REJECTED_INPUT", "Input refused", "The image provider refused this model version or input.";
    /// The image provider is throttling or unreachable; nothing was charged.
    ProviderBusy = "PROVIDER_BUSY", "Image provider busy", "The image provider is busy; nothing was charged. Please retry shortly.";
    /// A provider (images or payments) failed on its side or refused the request.
    ProviderError = "PROVIDER_ERROR", "Provider error", "The image provider could not start this generation.";
    /// The payment provider did not answer; nothing was charged.
    PaymentProviderUnavailable = "PAYMENT_PROVIDER_UNAVAILABLE", "Payment provider unavailable", "The payment provider did not answer; nothing was charged. Please retry shortly.";
    /// The credit balance cannot be checked right now.
    CreditServiceUnavailable = "CREDIT_SERVICE_UNAVAILABLE", "Credit service unavailable", "Your credit balance cannot be checked right now; please retry shortly.";
    /// A dependency did not answer in time or failed on its side.
    ServiceUnavailable = "SERVICE_UNAVAILABLE", "Service unavailable", "A service this request depends on is not answering; retry shortly.";
    /// A bug or a misconfiguration on our side.
    Internal = "INTERNAL", "Internal error", "Something went wrong on our side.";
    /// The dev gateway could not pass a browser's upload on to the local S3 server (local only).
    RelayFailed = "RELAY_FAILED", "Upload relay failed", "The upload could not be relayed to the local S3 server.";
    /// The provider could not make the image (a failed generation).
    GenerationFailed = "GENERATION_FAILED", "Generation failed", "The image provider could not generate this image.";
    /// The provider finished without an image (a failed generation).
    NoOutput = "NO_OUTPUT", "Generation failed", "The provider returned no image.";
    /// The generation ran past its deadline (a failed generation).
    Timeout = "TIMEOUT", "Generation failed", "The generation took too long.";
    /// The output cannot be stored, now or ever (a failed generation).
    OutputCopyFailed = "OUTPUT_COPY_FAILED", "Generation failed", "The generated image could not be stored.";
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_screaming_snake_case_with_a_title_and_message() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} declared twice");
            assert!(s.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{s}");
            assert!(
                !code.title().is_empty() && code.message().ends_with('.'),
                "{s}"
            );
        }
        assert_eq!(
            serde_json::to_value(ErrorCode::ModelNotFound).unwrap(),
            "MODEL_NOT_FOUND"
        );
    }
}
