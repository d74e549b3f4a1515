//! The version `envoy --version` reported for the cached Envoy, remembered in a file
//! beside it for as long as the binary is the same file (size, modification time,
//! inode, still executable), so a warm run does not start the 100+ MB binary only to
//! ask it again (0.1-0.3 s on a busy machine). Any change to the file, or an
//! unreadable or foreign stamp, means asking Envoy again.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn stamp_path(binary: &Path) -> PathBuf {
    let mut name = binary.file_name().unwrap_or_default().to_os_string();
    name.push(".version");
    binary.with_file_name(name)
}

/// What identifies the file the version was asked of; None when it cannot be read
/// or is no longer executable.
fn identity(binary: &Path) -> Option<String> {
    let m = fs::metadata(binary).ok()?;
    if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
        return None;
    }
    Some(format!(
        "{} {} {}.{:09} {}",
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.len()
    ))
}

/// The version remembered for `binary`, if the binary is still the file it was asked
/// of.
pub fn remembered(binary: &Path) -> Option<String> {
    let text = fs::read_to_string(stamp_path(binary)).ok()?;
    let (version, id) = text.trim_end().split_once('\n')?;
    (Some(id) == identity(binary).as_deref() && !version.is_empty()).then(|| version.to_string())
}

/// Remembers that `binary`, as it is now, reported `version` (best effort: without
/// the stamp the next run asks Envoy again).
pub fn remember(binary: &Path, version: &str) {
    let Some(id) = identity(binary) else { return };
    let stamp = stamp_path(binary);
    let tmp = stamp.with_extension(format!("version.{}", std::process::id()));
    if fs::write(&tmp, format!("{version}\n{id}\n")).is_ok() && fs::rename(&tmp, &stamp).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("envoy");
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_version_is_remembered_only_for_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let bin = executable(dir.path(), "#!/bin/sh\n");
        assert_eq!(remembered(&bin), None);
        remember(&bin, "1.40.0");
        assert_eq!(remembered(&bin).as_deref(), Some("1.40.0"));
        // Replaced by another file (a new inode, another size): asked again.
        fs::remove_file(&bin).unwrap();
        let bin = executable(dir.path(), "#!/bin/sh\necho other\n");
        assert_eq!(remembered(&bin), None);
        remember(&bin, "1.40.0");
        // No longer executable: asked again (and then refused).
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(remembered(&bin), None);
    }

    #[test]
    fn a_stamp_of_another_shape_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let bin = executable(dir.path(), "#!/bin/sh\n");
        fs::write(stamp_path(&bin), "1.40.0").unwrap();
        assert_eq!(remembered(&bin), None);
        fs::write(stamp_path(&bin), "\n").unwrap();
        assert_eq!(remembered(&bin), None);
    }
}
