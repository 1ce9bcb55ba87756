//! The cookie of a loopback cluster started without one: random, in a file only this user can
//! read, shared by every fleet process of this user on this host.
//!
//! A fixed default cookie would let any local process (any user) join a loopback cluster and
//! ask its nodes to start commands. Instead the first process that needs a loopback cookie
//! (`fleet head`, `fleet run`, `fleet node`, `fleet status`, [`crate::Cluster::head`]) creates
//! `$XDG_RUNTIME_DIR/fleet/cookie`, or `~/.fleet/cookie` where `XDG_RUNTIME_DIR` is not set
//! (directory mode 0700, file mode 0600), and every later one reads it. Creation is atomic (a
//! private temporary file hard-linked into place), so two processes starting together agree.
//! A file that others can read, or that another user owns, is refused rather than trusted.

use fleet_actors::FleetError;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn bad(path: &Path, detail: impl std::fmt::Display) -> FleetError {
    FleetError::bad_request(
        format!("the loopback cookie file {}", path.display()),
        format!("{detail}; or give --cookie-file FILE / FLEET_COOKIE"),
    )
}

/// Where the file is: `$XDG_RUNTIME_DIR/fleet/cookie`, else `$HOME/.fleet/cookie`.
pub fn path() -> Result<PathBuf, FleetError> {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = nonempty("XDG_RUNTIME_DIR") {
        return Ok(PathBuf::from(d).join("fleet").join("cookie"));
    }
    if let Some(h) = nonempty("HOME") {
        return Ok(PathBuf::from(h).join(".fleet").join("cookie"));
    }
    Err(FleetError::bad_request(
        "finding a place for the loopback cookie",
        "neither XDG_RUNTIME_DIR nor HOME is set: give --cookie-file FILE or FLEET_COOKIE",
    ))
}

fn read_checked(path: &Path) -> Result<Option<String>, FleetError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(path, e)),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(bad(
            path,
            format!("it belongs to uid {}, not to this user ({me})", meta.uid()),
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(
            path,
            format!(
                "others can access it (mode {mode:o}): `chmod 600 {}` or delete it",
                path.display()
            ),
        ));
    }
    let c = std::fs::read_to_string(path).map_err(|e| bad(path, e))?;
    let c = c.trim().to_string();
    if c.is_empty() {
        return Err(bad(path, "it is empty: delete it"));
    }
    Ok(Some(c))
}

/// The loopback cookie from [`path`], created if there is none yet.
pub fn load_or_create() -> Result<String, FleetError> {
    load_or_create_at(&path()?)
}

/// The cookie in `path`, created (mode 0600, its directory 0700) if missing.
pub fn load_or_create_at(path: &Path) -> Result<String, FleetError> {
    if let Some(c) = read_checked(path)? {
        return Ok(c);
    }
    let dir = path
        .parent()
        .ok_or_else(|| bad(path, "it has no parent directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| bad(path, format!("creating {}: {e}", dir.display())))?;
    let cookie = format!("{:032x}", rand::random::<u128>());
    let tmp = dir.join(format!(
        ".cookie.{}.{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(cookie.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    let written = write().map_err(|e| bad(path, format!("writing {}: {e}", tmp.display())));
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(bad(path, e)),
    });
    let _ = std::fs::remove_file(&tmp);
    if linked? {
        return Ok(cookie);
    }
    read_checked(path)?.ok_or_else(|| bad(path, "it vanished while being created"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fleet-cookie-test-{name}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_first_call_creates_a_private_random_cookie_and_later_calls_read_it() {
        let d = dir("create");
        let p = d.join("fleet").join("cookie");
        let a = load_or_create_at(&p).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(load_or_create_at(&p).unwrap(), a);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(p.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let other = dir("other");
        assert_ne!(
            load_or_create_at(&other.join("cookie")).unwrap(),
            a,
            "random"
        );
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&other);
    }

    #[test]
    fn a_cookie_file_others_can_read_is_refused() {
        let d = dir("open");
        let p = d.join("cookie");
        load_or_create_at(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_at(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
