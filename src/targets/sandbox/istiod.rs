//! istiod in the sandbox: Istio's own pilot-discovery, run out of its pod (in the node
//! namespace, against the API server with an admin kubeconfig, as the reference run
//! did) because its webhooks and its xDS/CA address must be known when Istio is
//! installed. The istiod Deployment's pods still decide what runs: when the kubelet
//! starts a pod of image `pilot:<release>` for revision R, [`Supervisor::ensure`]
//! makes istiod <release> serve R (replacing another release of R: an in-place
//! upgrade); when the last pod of R goes, R's istiod stops (a revision uninstalled).
//!
//! Each revision has its own ports; the sandbox registers a revision (and so its
//! ports) before installing it, and tells istioctl the matching webhook URLs and
//! discovery address. What istiod runs with beyond the chart's defaults: its
//! addresses, `ISTIOD_CUSTOM_HOST` (its serving certificate names the addresses it is
//! reached at), and the flags that leave Istio-only Envoy filters out of what it
//! generates (`PILOT_ENABLE_METADATA_EXCHANGE`, `PILOT_ENABLE_ALPN_FILTER`): the
//! proxies run upstream Envoy.

use super::netns::NODE_IP;
use crate::targets::local::procs;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long an istiod may take to answer `/ready` after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where one revision's istiod listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Plain xDS, on loopback (diagnostics).
    pub grpc: u16,
    /// xDS and the CA over TLS, on the node address: what proxies connect to.
    pub secure_grpc: u16,
    /// Webhooks (injection, validation), on loopback for the API server.
    pub webhooks: u16,
    /// Monitoring and debug endpoints (`/debug/config_dump`).
    pub monitoring: u16,
    /// `/ready` and the HTTP debug endpoints.
    pub http: u16,
    pub ctrlz: u16,
}

impl Ports {
    /// The `n`th revision's ports: Istio's own (15010, 15012, 15017, 15014) for the
    /// first, then 100 up for each next.
    pub fn block(n: u16) -> Ports {
        let o = 100 * n;
        Ports {
            grpc: 15010 + o,
            secure_grpc: 15012 + o,
            webhooks: 15017 + o,
            monitoring: 15014 + o,
            http: 18080 + o,
            ctrlz: 9876 + o,
        }
    }

    /// The discovery address proxies of this revision use (meshConfig
    /// `defaultConfig.discoveryAddress`).
    pub fn discovery_address(&self) -> String {
        format!("{NODE_IP}:{}", self.secure_grpc)
    }

    /// The injection webhook URL (chart value `istiodRemote.injectionURL`).
    pub fn injection_url(&self) -> String {
        format!("https://127.0.0.1:{}/inject", self.webhooks)
    }

    /// The validation webhook URL (chart value `base.validationURL`).
    pub fn validation_url(&self) -> String {
        format!("https://127.0.0.1:{}/validate", self.webhooks)
    }
}

/// A revision and what serves it.
struct Revision {
    ports: Ports,
    /// The release running now.
    running: Option<String>,
    /// The istiod pods standing for it.
    pods: BTreeSet<String>,
}

/// Starts and stops istiod processes as the istiod pods come and go.
pub struct Supervisor {
    owner: u64,
    dir: PathBuf,
    kubeconfig: PathBuf,
    /// pilot-discovery by Istio release.
    programs: BTreeMap<String, PathBuf>,
    revisions: tokio::sync::Mutex<BTreeMap<String, Revision>>,
}

fn process_name(rev: &str) -> String {
    format!("istiod-{rev}")
}

impl Supervisor {
    pub fn new(dir: &Path, kubeconfig: &Path, programs: BTreeMap<String, PathBuf>) -> Supervisor {
        Supervisor {
            owner: procs::new_owner(),
            dir: dir.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            programs,
            revisions: Default::default(),
        }
    }

    /// The ports of revision `rev` (allocated on first use).
    pub async fn register(&self, rev: &str) -> Ports {
        let mut revs = self.revisions.lock().await;
        let n = revs.len() as u16;
        revs.entry(rev.to_string())
            .or_insert_with(|| Revision {
                ports: Ports::block(n),
                running: None,
                pods: BTreeSet::new(),
            })
            .ports
    }

    /// The revisions registered and their ports.
    pub async fn revisions(&self) -> Vec<(String, Ports, Option<String>)> {
        self.revisions
            .lock()
            .await
            .iter()
            .map(|(r, v)| (r.clone(), v.ports, v.running.clone()))
            .collect()
    }

    fn command(
        &self,
        rev: &str,
        release: &str,
        ports: Ports,
        pod: &str,
    ) -> Result<Command, String> {
        let program = self.programs.get(release).ok_or_else(|| {
            format!(
                "istiod {release} is not built for this sandbox (built: {})",
                self.programs.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let cwd = self.dir.join(process_name(rev));
        std::fs::create_dir_all(&cwd).map_err(|e| format!("{}: {e}", cwd.display()))?;
        let mut cmd = Command::new(program);
        cmd.current_dir(&cwd)
            .args([
                "discovery".to_string(),
                format!("--kubeconfig={}", self.kubeconfig.display()),
                "--domain=cluster.local".into(),
                format!("--httpAddr=127.0.0.1:{}", ports.http),
                format!("--httpsAddr=127.0.0.1:{}", ports.webhooks),
                format!("--grpcAddr=127.0.0.1:{}", ports.grpc),
                format!("--secureGRPCAddr={NODE_IP}:{}", ports.secure_grpc),
                format!("--monitoringAddr=127.0.0.1:{}", ports.monitoring),
                format!("--ctrlz_port={}", ports.ctrlz),
                "--ctrlz_address=127.0.0.1".into(),
                "--keepaliveMaxServerConnectionAge=30m".into(),
            ])
            .env("REVISION", rev)
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", "istio-system")
            .env("SERVICE_ACCOUNT", "istiod")
            .env("CLUSTER_ID", "Kubernetes")
            .env("PILOT_CERT_PROVIDER", "istiod")
            .env("PILOT_ENABLE_ANALYSIS", "false")
            .env("ISTIOD_CUSTOM_HOST", format!("127.0.0.1,{NODE_IP}"))
            .env_remove("KUBECONFIG");
        for (k, v) in crate::oracle::binary::ENVOY_COMPATIBLE_FLAGS {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    /// istiod `release` serves revision `rev` for `pod`: started, or replacing the
    /// release that served it.
    pub async fn ensure(&self, rev: &str, release: &str, pod: &str) -> Result<(), String> {
        let n = self.revisions.lock().await.len() as u16;
        let mut revs = self.revisions.lock().await;
        let r = revs.entry(rev.to_string()).or_insert_with(|| Revision {
            ports: Ports::block(n),
            running: None,
            pods: BTreeSet::new(),
        });
        r.pods.insert(pod.to_string());
        if r.running.as_deref() == Some(release) {
            return Ok(());
        }
        let name = process_name(rev);
        if r.running.take().is_some() {
            let owner = self.owner;
            let n = name.clone();
            let _ = tokio::task::spawn_blocking(move || {
                procs::stop_named(owner, &n, Duration::from_secs(5))
            })
            .await;
        }
        let mut cmd = self.command(rev, release, r.ports, pod)?;
        let log = self.dir.join(format!("{name}-{release}.log"));
        procs::spawn(self.owner, &name, &mut cmd, &log)
            .map_err(|e| format!("cannot start istiod {release}: {e}"))?;
        r.running = Some(release.to_string());
        Ok(())
    }

    /// Whether istiod `release` serves `rev` and answers `/ready`.
    pub async fn ready(&self, rev: &str, release: &str) -> bool {
        let port = {
            let revs = self.revisions.lock().await;
            match revs.get(rev) {
                Some(r) if r.running.as_deref() == Some(release) => r.ports.http,
                _ => return false,
            }
        };
        let url = format!("http://127.0.0.1:{port}/ready");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .no_proxy()
            .build();
        match client {
            Ok(c) => c
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            Err(_) => false,
        }
    }

    /// Waits until `rev`'s istiod answers `/ready`.
    pub async fn wait_ready(&self, rev: &str, release: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while !self.ready(rev, release).await {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "istiod {release} (revision {rev}) did not answer /ready within {READY_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// `pod` (of `release`) is gone: when no pod stands for `rev` any more and this
    /// release serves it, its istiod stops.
    pub async fn release(&self, rev: &str, release: &str, pod: &str) {
        let mut revs = self.revisions.lock().await;
        let Some(r) = revs.get_mut(rev) else { return };
        r.pods.remove(pod);
        if r.pods.is_empty() && r.running.as_deref() == Some(release) {
            r.running = None;
            let (owner, name) = (self.owner, process_name(rev));
            let _ = tokio::task::spawn_blocking(move || {
                procs::stop_named(owner, &name, Duration::from_secs(5))
            })
            .await;
        }
    }

    /// An istiod that died on its own, with how and the end of its log.
    pub fn casualty(&self) -> Option<String> {
        procs::casualties(self.owner)
            .into_iter()
            .next()
            .map(|(name, how, log)| format!("{name} {how}:\n{}", super::stack::log_tail(&log, 15)))
    }

    /// Its logs, for diagnostics.
    pub fn logs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect()
    }

    /// Stops every istiod.
    pub fn stop(&self, grace: Duration) {
        procs::stop_owner(self.owner, grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_revision_has_istios_ports_and_the_next_ones_do_not_clash() {
        let a = Ports::block(0);
        assert_eq!(
            (a.grpc, a.secure_grpc, a.webhooks, a.monitoring),
            (15010, 15012, 15017, 15014)
        );
        assert_eq!(a.discovery_address(), "10.244.0.1:15012");
        assert_eq!(a.injection_url(), "https://127.0.0.1:15017/inject");
        let b = Ports::block(1);
        let all_a = [
            a.grpc,
            a.secure_grpc,
            a.webhooks,
            a.monitoring,
            a.http,
            a.ctrlz,
        ];
        for p in [
            b.grpc,
            b.secure_grpc,
            b.webhooks,
            b.monitoring,
            b.http,
            b.ctrlz,
        ] {
            assert!(!all_a.contains(&p), "{p}");
        }
    }
}
