//! The HTTP connection manager of a gateway filter chain, as istiod 1.30 writes it
//! (pilot/pkg/networking/core/gateway.go buildGatewayConnectionManager and
//! createGatewayHTTPFilterChainOpts, listener_builder.go buildHTTPConnectionManager,
//! with meshConfig's defaults). The local target writes these fields into its Envoy
//! config and the oracle comparison checks each against istiod's (MC405), so a field
//! the model sets differently from istiod is a finding.

use serde_json::{json, Map, Value};

/// The HttpConnectionManager settings of one gateway filter chain (the route
/// configuration and the HTTP filters are planned apart).
#[derive(Debug, Clone, PartialEq)]
pub struct HcmPlan {
    /// The HTTPS server's `name`, else `outbound_<listener>;` (gateway.go: statPrefix
    /// server.Name for TLS servers; buildGatewayListeners: DelimitedStatsPrefix of
    /// the direction and listener name otherwise).
    pub stat_prefix: String,
    /// ProxyHeaders' server name: `istio-envoy` (util.GetProxyHeadersFromProxyConfig).
    pub server_name: String,
    /// `useRemoteAddress: true` for every gateway HTTP server.
    pub use_remote_address: bool,
    /// meshConfig pathNormalization DEFAULT (BASE): normalize_path, escaped slashes
    /// kept unchanged.
    pub normalize_path: bool,
    pub path_with_escaped_slashes_action: &'static str,
    /// meshConfig pathNormalization (listener_builder.go buildHTTPConnectionManager):
    /// decides the three fields around it; the simulation normalizes with it.
    pub path_normalization: super::normalize::PathNormalization,
    pub merge_slashes: bool,
    /// ProxyConfig gatewayTopology.numTrustedProxies (gateway.go
    /// buildGatewayConnectionManager): X-Forwarded-For entries trusted for the client
    /// address.
    pub xff_num_trusted_hops: u32,
    /// Gateways sanitize client certificates and set the current one
    /// (ForwardClientCertDetails_SANITIZE_SET; SetCurrentClientCertDetails with
    /// subject, cert, DNS and URI).
    pub forward_client_cert_details: &'static str,
    pub set_current_client_cert_details: [(&'static str, bool); 4],
    /// Whether Envoy strips the port from the Host before routing and forwarding.
    /// istiod does not set it (the backend sees `host:port` as sent).
    pub strip_any_host_port: bool,
    /// `stream_idle_timeout: 0s`: no idle limit on streams (buildHTTPConnectionManager).
    pub stream_idle_timeout: &'static str,
    /// WebSocket upgrades allowed (buildHTTPConnectionManager).
    pub websocket: bool,
    /// features.Enable100ContinueHeaders (default true): 100-continue proxied.
    pub proxy_100_continue: bool,
}

impl HcmPlan {
    /// A gateway filter chain of listener `listener`, for the HTTPS server named
    /// `server_name` (None or empty for plaintext HTTP and unnamed servers).
    pub fn gateway(listener: &str, server_name: Option<&str>) -> HcmPlan {
        let stat_prefix = match server_name.filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => format!("outbound_{listener};"),
        };
        HcmPlan {
            stat_prefix,
            server_name: "istio-envoy".into(),
            use_remote_address: true,
            normalize_path: true,
            path_with_escaped_slashes_action: "KEEP_UNCHANGED",
            path_normalization: Default::default(),
            merge_slashes: false,
            xff_num_trusted_hops: 0,
            forward_client_cert_details: "SANITIZE_SET",
            set_current_client_cert_details: [
                ("subject", true),
                ("cert", true),
                ("dns", true),
                ("uri", true),
            ],
            strip_any_host_port: false,
            stream_idle_timeout: "0s",
            websocket: true,
            proxy_100_continue: true,
        }
    }

    /// With meshConfig pathNormalization `n` and `hops` trusted proxies.
    pub fn with_mesh(mut self, n: super::normalize::PathNormalization, hops: u32) -> HcmPlan {
        self.path_normalization = n;
        self.normalize_path = n.normalize_path();
        self.merge_slashes = n.merge_slashes();
        // listener_builder.go: KEEP_UNCHANGED unless DECODE_AND_MERGE_SLASHES.
        self.path_with_escaped_slashes_action =
            if n == super::normalize::PathNormalization::DecodeAndMergeSlashes {
                "UNESCAPE_AND_FORWARD"
            } else {
                "KEEP_UNCHANGED"
            };
        self.xff_num_trusted_hops = hops;
        self
    }

    /// These settings as Envoy HttpConnectionManager fields (JSON), every one written
    /// out, so each can be compared with istiod's.
    pub fn envoy_fields(&self) -> Map<String, Value> {
        let details: Map<String, Value> = self
            .set_current_client_cert_details
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let upgrades: Vec<Value> = if self.websocket {
            vec![json!({"upgrade_type": "websocket"})]
        } else {
            Vec::new()
        };
        let v = json!({
            "stat_prefix": self.stat_prefix,
            "codec_type": "AUTO",
            "server_name": self.server_name,
            "use_remote_address": self.use_remote_address,
            "normalize_path": self.normalize_path,
            "merge_slashes": self.merge_slashes,
            "xff_num_trusted_hops": self.xff_num_trusted_hops,
            "path_with_escaped_slashes_action": self.path_with_escaped_slashes_action,
            "strip_any_host_port": self.strip_any_host_port,
            "forward_client_cert_details": self.forward_client_cert_details,
            "set_current_client_cert_details": details,
            "stream_idle_timeout": self.stream_idle_timeout,
            "upgrade_configs": upgrades,
            "proxy_100_continue": self.proxy_100_continue,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}
