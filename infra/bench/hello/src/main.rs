//! `bench-hello`: the smallest useful `lambda_runtime` function (it echoes its
//! event), built with the release profile of the real functions. Its start-up
//! time is the floor `picture-bench` compares every function's init against.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
