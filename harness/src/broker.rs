//! The embedded Kafka-protocol broker (tansu 0.6, in-memory storage), run as
//! the `sandbox broker` command so that it is one more child process of the
//! sandbox: its own logs, its own pid, stopped like any other component.
//!
//! Memory storage, not PostgreSQL storage: a sandbox's topics are as ephemeral
//! as the sandbox; it costs less CPU per idle consumer (shared/KAFKA.md measured
//! ~5 % against ~12 % of a core) and needs no schema the crate does not ship.
//! Its caveats: a fetch lists every batch of the partition (so producers batch:
//! one message per batch, KAFKA.md rule 3, made the broker's work grow with
//! every event published), and a fetch from inside a batch skips the rest of
//! it (so consumers resume up to a batch early: `bank::kit::kafka::resume_from`).

use std::net::SocketAddr;

use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use url::Url;

use crate::error::{Error, Result};

/// Serves on `listen` and tells clients to reach it at `advertise` (`host:port`;
/// default the listen address). In a container the two differ: it listens on
/// 0.0.0.0 and is reached by its service name.
pub async fn run(listen: SocketAddr, advertise: Option<&str>) -> Result<()> {
    let url = Url::parse(&format!("tcp://{listen}")).map_err(|e| Error::Usage(format!("bad listen address: {e}")))?;
    let advertised = match advertise {
        None => url.clone(),
        Some(a) => Url::parse(&format!("tcp://{a}"))
            .ok()
            .filter(|u| u.host_str().is_some() && u.port().is_some())
            .ok_or_else(|| Error::Usage(format!("--advertise `{a}` is not a host:port")))?,
    };
    let storage = Url::parse("memory://tansu/").map_err(|e| Error::Kafka(e.to_string()))?;
    let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
        .node_id(0)
        .cluster_id("bank-sandbox")
        .incarnation_id(uuid::Uuid::now_v7())
        .advertised_listener(advertised.clone())
        .storage(storage)
        .listener(url)
        .silent(true)
        .build()
        .await
        .map_err(|e| Error::Kafka(format!("cannot build the broker: {e:?}")))?;
    eprintln!("broker listening on {listen}, advertised as {}", advertised.authority());
    // No clean shutdown in tansu: `sandbox broker` ends the process on SIGTERM (signals::terminated).
    broker.serve(tokio::time::Instant::now()).await.map_err(|e| Error::Kafka(format!("broker failed: {e:?}")))
}
