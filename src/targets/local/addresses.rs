//! The local target's addresses: loopback blocks 127.A.B.0/24, each held with an
//! exclusive flock on a lock file per block so that concurrent runs (and other
//! meshcheck versions, which claim one block the same way) stay apart. The node is .1
//! of the first block; pods and the apps behind sidecars (a pod's "localhost") take
//! .10-.249 of as many blocks as they need, pods first.

use super::TargetError;
use std::net::Ipv4Addr;

/// Addresses per block (.10-.249).
pub const PER_BLOCK: usize = 240;
const FIRST_HOST: usize = 10;
/// Random tries per block before giving up.
const TRIES: usize = 64;

/// The blocks a run holds (released when dropped).
pub struct Blocks {
    prefixes: Vec<[u8; 3]>,
    _locks: Vec<std::fs::File>,
}

impl Blocks {
    /// Claims enough blocks for `addresses` pod and app addresses.
    pub fn claim(addresses: usize) -> Result<Blocks, TargetError> {
        let need = addresses.div_ceil(PER_BLOCK).max(1);
        let mut out = Blocks {
            prefixes: Vec::with_capacity(need),
            _locks: Vec::with_capacity(need),
        };
        while out.prefixes.len() < need {
            let (prefix, lock) = claim_one(&out.prefixes)?;
            out.prefixes.push(prefix);
            out._locks.push(lock);
        }
        Ok(out)
    }

    /// The node address (.1 of the first block).
    pub fn node(&self) -> Ipv4Addr {
        let [a, b, c] = self.prefixes[0];
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The `k`-th pod or app address.
    pub fn address(&self, k: usize) -> Ipv4Addr {
        let [a, b, c] = self.prefixes[(k / PER_BLOCK).min(self.prefixes.len() - 1)];
        Ipv4Addr::new(a, b, c, (FIRST_HOST + k % PER_BLOCK) as u8)
    }
}

/// Takes one free 127.A.B.0/24 block other than `taken`.
fn claim_one(taken: &[[u8; 3]]) -> Result<([u8; 3], std::fs::File), TargetError> {
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join("meshcheck-blocks");
    std::fs::create_dir_all(&dir).map_err(|source| TargetError::Io {
        what: format!("cannot create {}", dir.display()),
        source,
    })?;
    for _ in 0..TRIES {
        let (a, b) = (fastrand::u8(32..=250), fastrand::u8(1..=250));
        if taken.contains(&[127, a, b]) {
            continue;
        }
        let path = dir.join(format!("127.{a}.{b}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| TargetError::Io {
                what: format!("cannot open {}", path.display()),
                source,
            })?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(([127, a, b], file));
        }
    }
    Err(TargetError::Unavailable {
        target: "local".into(),
        why: format!("no free 127.x.y.0/24 address block after {TRIES} tries"),
    })
}

/// What one pod costs on the local target, in KiB of memory (proportional set size):
/// its stub process (~0.4 MiB measured, most of it shared text) and its share of a
/// sidecar host Envoy (~0.1 MiB per pod), rounded up with room for meshcheck's own
/// bookkeeping.
pub const POD_KIB: u64 = 1024;
/// What the run needs besides its pods (gateway and sidecar host Envoys, meshcheck).
pub const BASE_KIB: u64 = 512 * 1024;

/// The most pods this machine's available memory allows, and why: None when the
/// available memory cannot be read (then there is no limit).
pub fn pod_limit() -> Option<(usize, String)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let avail_kib = mem_available_kib(&text)?;
    Some(limit_for(avail_kib))
}

fn mem_available_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn limit_for(avail_kib: u64) -> (usize, String) {
    let n = avail_kib.saturating_sub(BASE_KIB) / POD_KIB;
    (
        n as usize,
        format!(
            "{} MiB of memory available (MemAvailable), {} MiB kept for the gateways and \
             sidecar hosts, about {} MiB per pod (its stub process and its share of a sidecar host)",
            avail_kib / 1024,
            BASE_KIB / 1024,
            POD_KIB / 1024
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_follows_available_memory() {
        let info = "MemTotal:       24000000 kB\nMemAvailable:    2621440 kB\n";
        let avail = mem_available_kib(info).unwrap();
        assert_eq!(avail, 2_621_440);
        let (n, why) = limit_for(avail);
        assert_eq!(n, 2048);
        assert!(why.contains("2560 MiB"), "{why}");
        assert_eq!(limit_for(100).0, 0);
        assert_eq!(mem_available_kib("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn addresses_fill_blocks_in_turn() {
        let b = Blocks::claim(PER_BLOCK + 1).unwrap();
        assert_eq!(b.prefixes.len(), 2);
        let [a0, b0, c0] = b.prefixes[0];
        assert_eq!(b.node(), Ipv4Addr::new(a0, b0, c0, 1));
        assert_eq!(b.address(0), Ipv4Addr::new(a0, b0, c0, 10));
        assert_eq!(b.address(PER_BLOCK - 1), Ipv4Addr::new(a0, b0, c0, 249));
        let [a1, b1, c1] = b.prefixes[1];
        assert_eq!(b.address(PER_BLOCK), Ipv4Addr::new(a1, b1, c1, 10));
        assert_ne!(b.prefixes[0], b.prefixes[1]);
    }
}
