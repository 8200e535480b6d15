//! Secrets from SSM Parameter Store, read once per cold start through the
//! AWS Parameters and Secrets Lambda Extension (an HTTP cache on localhost,
//! so no SDK client is needed). With `SECRETS_SSM_PATH=/picture/prod`, each
//! secret not set in the environment is read from `{path}/{name}`
//! (SecureString, decrypted); without it nothing is fetched.

use std::{collections::HashMap, time::Duration};

use serde::Deserialize;

/// Environment variable ← parameter name under `SECRETS_SSM_PATH`.
pub const SECRETS: [(&str, &str); 7] = [
    ("DATABASE_URL", "database-url"),
    ("REPLICATE_API_TOKEN", "replicate-api-token"),
    ("REPLICATE_WEBHOOK_SECRET", "replicate-webhook-secret"),
    ("MANA_CORE_SERVICE_KEY", "mana-core-service-key"),
    ("STRIPE_SECRET_KEY", "stripe-secret-key"),
    ("STRIPE_WEBHOOK_SECRET", "stripe-webhook-secret"),
    ("OPENAI_API_KEY", "openai-api-key"),
];

/// A secret that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("secret {name}: {reason}")]
pub struct SecretError {
    name: String,
    reason: String,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Parameter")]
    parameter: Parameter,
}

#[derive(Deserialize)]
struct Parameter {
    #[serde(rename = "Value")]
    value: String,
}

/// Fills `vars` with the secrets under `SECRETS_SSM_PATH` that are not set
/// yet; parameters that do not exist are left unset (they may be optional).
pub async fn resolve(
    vars: &mut HashMap<String, String>,
    http: &crate::http_client::HttpClient,
) -> Result<(), SecretError> {
    use crate::config::settings::{
        AWS_SESSION_TOKEN, PARAMETERS_SECRETS_EXTENSION_HTTP_PORT, SECRETS_SSM_PATH, Vars,
    };
    let (path, port, token) = {
        let v = Vars::new(vars);
        (
            v.url(SECRETS_SSM_PATH),
            v.get(PARAMETERS_SECRETS_EXTENSION_HTTP_PORT)
                .unwrap_or_default(),
            v.get(AWS_SESSION_TOKEN).unwrap_or_default(),
        )
    };
    let Some(path) = path else {
        return Ok(());
    };
    for (var, name) in SECRETS {
        if vars.get(var).is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let full = format!("{path}/{name}");
        let fail = |reason: String| SecretError {
            name: full.clone(),
            reason,
        };
        let res = http
            .get()
            .get(format!(
                "http://localhost:{port}/systemsmanager/parameters/get"
            ))
            .query(&[("name", full.as_str()), ("withDecryption", "true")])
            .header("X-Aws-Parameters-Secrets-Token", &token)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| fail(e.without_url().to_string()))?;
        if res.status() == reqwest::StatusCode::NOT_FOUND
            || res.status() == reqwest::StatusCode::BAD_REQUEST
        {
            continue; // ParameterNotFound: an optional secret that is not configured
        }
        let answer: Answer = res
            .error_for_status()
            .map_err(|e| fail(e.without_url().to_string()))?
            .json()
            .await
            .map_err(|e| fail(e.to_string()))?;
        vars.insert(var.to_string(), answer.parameter.value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::{Json, Router, extract::Query, http::HeaderMap, routing::get};
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn reads_missing_secrets_through_the_extension() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = Router::new().route(
            "/systemsmanager/parameters/get",
            get(
                move |Query(q): Query<HashMap<String, String>>, h: HeaderMap| {
                    let log = log.clone();
                    async move {
                        let name = q["name"].clone();
                        log.lock().unwrap().push((
                            name.clone(),
                            q["withDecryption"].clone(),
                            h["x-aws-parameters-secrets-token"]
                                .to_str()
                                .unwrap()
                                .to_string(),
                        ));
                        match name.as_str() {
                            "/picture/prod/replicate-api-token" => Ok(Json(
                                json!({"Parameter": {"Name": name, "Value": "r8_secret"}}),
                            )),
                            _ => Err(axum::http::StatusCode::BAD_REQUEST),
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let mut vars: HashMap<String, String> = [
            ("SECRETS_SSM_PATH", "/picture/prod/"),
            ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", port.as_str()),
            ("AWS_SESSION_TOKEN", "session"),
            ("DATABASE_URL", "postgres://already/set"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        resolve(&mut vars, &crate::http_client::HttpClient::default())
            .await
            .unwrap();
        assert_eq!(vars["REPLICATE_API_TOKEN"], "r8_secret");
        assert_eq!(
            vars["DATABASE_URL"], "postgres://already/set",
            "the environment wins"
        );
        assert!(
            !vars.contains_key("REPLICATE_WEBHOOK_SECRET"),
            "absent parameters stay unset"
        );
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            SECRETS.len() - 1,
            "DATABASE_URL was not fetched: {seen:?}"
        );
        assert!(
            seen.iter()
                .any(|(name, ..)| name == "/picture/prod/stripe-webhook-secret")
        );
        assert!(
            seen.iter()
                .all(|(_, decrypt, token)| decrypt == "true" && token == "session")
        );
    }

    #[tokio::test]
    async fn nothing_is_fetched_without_a_path() {
        let mut vars = HashMap::new();
        resolve(&mut vars, &crate::http_client::HttpClient::default())
            .await
            .unwrap();
        assert!(vars.is_empty());
    }
}
