//! Schema migrations at deploy time: the handler of a CloudFormation custom
//! resource. On `Create` and `Update` it applies pending migrations; on
//! `Delete` it does nothing (data outlives stacks). Either way it reports the
//! outcome to CloudFormation's pre-signed `ResponseURL`, so a failed migration
//! fails (and rolls back) the deployment instead of hanging it.

use serde::{Deserialize, Serialize};

use crate::otel::http::SendTraced;

/// The fields of a CloudFormation custom resource request that we use.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceEvent {
    /// `Create`, `Update` or `Delete`.
    pub request_type: String,
    /// The pre-signed URL to PUT the answer to.
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    /// The stack's ARN, echoed in the answer.
    pub stack_id: String,
    /// This request's id, echoed in the answer.
    pub request_id: String,
    /// The resource's name in the template, echoed in the answer.
    pub logical_resource_id: String,
    /// The id answered before (absent on `Create`); kept across updates.
    #[serde(default)]
    pub physical_resource_id: Option<String>,
}

/// The answer CloudFormation expects at the event's response URL.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Response<'a> {
    /// `SUCCESS` or `FAILED`.
    status: &'a str,
    /// What happened, shown in the stack's events.
    reason: &'a str,
    /// The resource's id (kept across updates).
    physical_resource_id: &'a str,
    /// From the event.
    stack_id: &'a str,
    /// From the event.
    request_id: &'a str,
    /// From the event.
    logical_resource_id: &'a str,
    /// What `Fn::GetAtt` can read.
    data: Applied<'a>,
}

/// The migrations applied by this event, comma-separated.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Applied<'a> {
    /// e.g. `V17__exports,V18__output_moderation`.
    applied: &'a str,
}

/// Handles one request: migrate (unless deleting), then answer CloudFormation.
pub async fn handle(
    http: &reqwest::Client,
    database_url: &str,
    ca_file: Option<&str>,
    event: &CustomResourceEvent,
) -> Result<(), reqwest::Error> {
    let outcome = match event.request_type.as_str() {
        "Delete" => Ok(Vec::new()),
        _ => crate::db::migrate(database_url, ca_file)
            .await
            .map_err(|e| e.to_string()),
    };
    let (status, reason, applied) = match &outcome {
        Ok(applied) => (
            "SUCCESS",
            format!("{} migrations applied", applied.len()),
            applied.join(","),
        ),
        Err(e) => ("FAILED", format!("migration failed: {e}"), String::new()),
    };
    match &outcome {
        Ok(_) => {
            tracing::info!(request_type = %event.request_type, %reason, "deploy-time migration")
        }
        Err(_) => {
            tracing::error!(request_type = %event.request_type, %reason, "deploy-time migration")
        }
    }
    let body = Response {
        status,
        reason: &reason,
        physical_resource_id: event
            .physical_resource_id
            .as_deref()
            .unwrap_or("picture-schema"),
        stack_id: &event.stack_id,
        request_id: &event.request_id,
        logical_resource_id: &event.logical_resource_id,
        data: Applied { applied: &applied },
    };
    // Strings and a string: serialising them cannot fail.
    let body = serde_json::to_string(&body).unwrap_or_default();
    // The pre-signed URL is signed without a content type, so none is sent.
    http.put(&event.response_url)
        .timeout(std::time::Duration::from_secs(30))
        .body(body)
        .send_traced("cloudformation")
        .await?
        .error_for_status()?;
    Ok(())
}
