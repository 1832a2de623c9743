//! Helpers for tests that need providers: fixed behaviours and a simulator on a free port.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::{ChannelBehaviour, Latency, SimConfig, Simulator};

/// A provider that always takes `ms` milliseconds and never fails.
pub fn fixed(ms: u64) -> ChannelBehaviour {
    ChannelBehaviour {
        latency: Latency::Fixed {
            value: Duration::from_millis(ms),
        },
        error_rate: 0.0,
        rate_limit: None,
        outages: vec![],
    }
}

/// The same behaviour on every channel.
pub fn all(behaviour: ChannelBehaviour) -> SimConfig {
    SimConfig {
        email: behaviour.clone(),
        sms: behaviour.clone(),
        push: behaviour,
    }
}

/// Starts a simulator on a free loopback port for the rest of the runtime; returns its base URL.
pub async fn spawn(config: SimConfig) -> String {
    let sim = Simulator::new(config).expect("a valid provider configuration");
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("a free loopback port");
    let url = format!("http://{}", listener.local_addr().expect("a bound address"));
    tokio::spawn(crate::run(listener, sim, std::future::pending()));
    url
}

/// The ledger summary of the simulator at `url`.
pub async fn summary(http: &reqwest::Client, url: &str) -> crate::Summary {
    http.get(format!("{url}/ledger/summary"))
        .send()
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("a ledger summary")
}

/// Every delivery in the ledger of the simulator at `url`, read from its NDJSON.
pub async fn ledger(http: &reqwest::Client, url: &str) -> Vec<crate::Delivery> {
    let text = http
        .get(format!("{url}/ledger"))
        .send()
        .await
        .expect("the simulator answers")
        .text()
        .await
        .expect("a ledger");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a ledger line"))
        .collect()
}
