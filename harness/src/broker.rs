//! The embedded Kafka-protocol broker (tansu 0.6, in-memory storage), run as
//! the `sandbox broker` command so that it is one more child process of the
//! sandbox: its own logs, its own pid, stopped like any other component.
//!
//! Memory storage, not PostgreSQL storage: a sandbox's topics are as ephemeral
//! as the sandbox; it costs less CPU per idle consumer (shared/KAFKA.md measured
//! ~5 % against ~12 % of a core) and needs no schema the crate does not ship.
//! Its one caveat (resume in the middle of a batch) is why producers send one
//! message per batch (KAFKA.md rule 3).

use std::net::SocketAddr;

use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use url::Url;

use crate::error::{Error, Result};

pub async fn run(listen: SocketAddr) -> Result<()> {
    let url = Url::parse(&format!("tcp://{listen}")).map_err(|e| Error::Other(format!("bad listen address: {e}")))?;
    let storage = Url::parse("memory://tansu/").map_err(|e| Error::Other(e.to_string()))?;
    let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
        .node_id(0)
        .cluster_id("bank-sandbox")
        .incarnation_id(uuid::Uuid::now_v7())
        .advertised_listener(url.clone())
        .storage(storage)
        .listener(url)
        .silent(true)
        .build()
        .await
        .map_err(|e| Error::Other(format!("cannot build the broker: {e:?}")))?;
    eprintln!("broker listening on {listen}");
    // No clean shutdown in tansu: the process ends on SIGTERM's default action.
    broker.serve(tokio::time::Instant::now()).await.map_err(|e| Error::Other(format!("broker failed: {e:?}")))
}
