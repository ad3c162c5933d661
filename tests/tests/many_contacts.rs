//! A profile with 1,000 queues on one relay (issue 18): `sync` asks for all of them over one
//! connection, many commands to a block. This counts records; times are in the benchmark.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use tidings_client::net::RelayConnection;
use tidings_client::profile::Profile;
use tidings_client::relay::{Connector, QuicConnector, RelayLink};
use tidings_client::store::KdfParams;
use tidings_protocol::address::RelayAddress;
use tidings_protocol::command::{Command, Reply, Request};
use tidings_protocol::ids::EntityId;
use tidings_protocol::keys::AuthSecretKey;
use tidings_relay::clock::SystemClock;
use tidings_relay::config::Config;
use tidings_relay::server::Relay;

const NOW: u64 = 1_900_000_000;

/// The real connector, except that closing does not wait for the close to go out (which
/// takes up to 300 ms a connection), so that making 1,000 invitations takes seconds.
struct QuickClose;

/// A real connection that is dropped instead of closed politely.
struct Quick(RelayConnection);

impl Connector for QuickClose {
    type Link = Quick;
    async fn connect(&self, address: &RelayAddress) -> tidings_client::Result<Quick> {
        Ok(Quick(QuicConnector.connect(address).await?))
    }
}

impl RelayLink for Quick {
    fn signed(
        &mut self,
        entity: EntityId,
        command: Command,
        key: &AuthSecretKey,
    ) -> tidings_client::Result<Request> {
        RelayLink::signed(&mut self.0, entity, command, key)
    }
    fn unsigned(&mut self, entity: EntityId, command: Command) -> Request {
        RelayLink::unsigned(&mut self.0, entity, command)
    }
    fn batch(
        &mut self,
        requests: Vec<Request>,
    ) -> impl Future<Output = tidings_client::Result<Vec<Reply>>> {
        RelayLink::batch(&mut self.0, requests)
    }
    fn next_push(
        &mut self,
        timeout: Duration,
    ) -> impl Future<Output = tidings_client::Result<Option<Reply>>> {
        RelayLink::next_push(&mut self.0, timeout)
    }
    async fn close(self) {}
}

/// Records the relay receives during one `sync` of `p`.
async fn records_of_one_sync(relay: &Relay, p: &mut Profile) -> Result<u64> {
    let before = relay.stats().records_received.load(Ordering::Relaxed);
    let report = p.sync(&QuicConnector, NOW).await?;
    ensure!(report.error.is_none(), "sync failed: {:?}", report.error);
    Ok(relay.stats().records_received.load(Ordering::Relaxed) - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_of_1000_queues_sends_a_handful_of_records() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::loopback(&dir.path().join("relay"));
    // One address makes all 1,000 queues here.
    config.new_queues_per_address_per_hour = 2_000;
    let relay = Relay::start(config, Arc::new(SystemClock)).await?;
    let address = relay.address().to_string();
    let mut p = Profile::init(
        &dir.path().join("minister"),
        b"minister passphrase",
        &address,
        KdfParams::INSECURE_TEST_ONLY,
    )?;
    // Each invitation is a queue this profile receives on, fetched by every sync like a
    // contact's.
    let mut made = 0;
    let mut counts = Vec::new();
    for target in [10, 1_000] {
        while made < target {
            p.invite(&QuickClose, Some(&format!("family {made}")), NOW)
                .await?;
            made += 1;
        }
        counts.push((target, records_of_one_sync(&relay, &mut p).await?));
    }
    let (small, large) = (counts[0].1, counts[1].1);
    eprintln!("records sent by one sync: {counts:?}");
    // 100 times the queues; the records grow by the number of blocks the `Get`s fill
    // (about 110 a block), not by the number of queues.
    ensure!(
        large <= small + 12,
        "a sync of 1,000 queues sent {large} records, one of 10 sent {small}"
    );
    ensure!(large < 1_000 / 50, "{large} records for 1,000 queues");
    relay.shutdown().await?;
    Ok(())
}
