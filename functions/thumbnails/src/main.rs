//! Lambda entry point: the thumbnail and blurhash of an output the bucket
//! reports stored (its `Object Created` event through EventBridge; see
//! `picture::thumbnail::for_object`). An image whose row is not committed yet,
//! or a fault, fails the invocation: Lambda retries it, and the reconciler
//! makes what the retries could not.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};

/// The part of S3's `Object Created` detail this function reads.
#[derive(Deserialize, Serialize)]
struct ObjectCreated {
    object: Object,
}

#[derive(Deserialize, Serialize)]
struct Object {
    key: String,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    picture::runtime::run_job(
        "thumbnails",
        "datasource",
        |state, event: EventBridgeEvent<ObjectCreated>| async move {
            picture::thumbnail::for_object(&state, &event.detail.object.key).await
        },
    )
    .await
}
