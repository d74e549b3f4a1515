//! The stub backend: answers every request with JSON saying who answered (service,
//! version, pod, namespace, from the environment) and what it received (method, path,
//! host, headers, body, the port), like the Gateway API conformance echo server. A
//! request can tell it to answer slowly or with a given status ([`controls`]); it
//! records what it received ([`seen`]). The same code is the `meshcheck-stub` binary,
//! the container image of the cluster targets and the app process of every pod on the
//! local target.

pub mod controls;
pub mod fork_server;
pub mod seen;
mod serve;

pub use controls::{Controls, DELAY_HEADER, DELAY_PARAM, STATUS_HEADER, STATUS_PARAM};
pub use seen::{Seen, ID_HEADER};
pub use serve::{main_with_args, serve, HELP};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who a stub is. Read from SERVICE_NAME, VERSION, POD_NAME, NAMESPACE.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    pub service: String,
    pub version: String,
    pub pod: String,
    pub namespace: String,
}

impl Identity {
    pub fn from_env() -> Identity {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Identity {
            service: var("SERVICE_NAME"),
            version: var("VERSION"),
            pod: var("POD_NAME"),
            namespace: var("NAMESPACE"),
        }
    }
}

/// The stub's answer: its identity and the request as it arrived.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Echo {
    #[serde(flatten)]
    pub identity: Identity,
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: String,
    pub host: String,
    /// Lower-case header name -> values in arrival order.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The request body (at most 64 KiB, lossy UTF-8).
    #[serde(default)]
    pub body: String,
    /// The port the request arrived on.
    #[serde(default)]
    pub port: u16,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(|s| s.as_str())
    }
}
