//! Schema migrations at deploy time: the handler of a CloudFormation custom
//! resource. On `Create` and `Update` it applies pending migrations; on
//! `Delete` it does nothing (data outlives stacks). Either way it reports the
//! outcome to CloudFormation's pre-signed `ResponseURL`, so a failed migration
//! fails (and rolls back) the deployment instead of hanging it.

use serde::Deserialize;
use serde_json::json;

use crate::otel::http::SendTraced;

/// The fields of a CloudFormation custom resource request that we use.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceEvent {
    pub request_type: String,
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
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
    let body = json!({
        "Status": status,
        "Reason": reason,
        "PhysicalResourceId": event.physical_resource_id.clone().unwrap_or_else(|| "picture-schema".into()),
        "StackId": event.stack_id,
        "RequestId": event.request_id,
        "LogicalResourceId": event.logical_resource_id,
        "Data": {"Applied": applied},
    });
    // The pre-signed URL is signed without a content type, so none is sent.
    http.put(&event.response_url)
        .timeout(std::time::Duration::from_secs(30))
        .body(body.to_string())
        .send_traced("cloudformation")
        .await?
        .error_for_status()?;
    Ok(())
}
