//! The store's files: one directory per node, objects written under a temporary name and
//! renamed into place only when complete and verified, so a reader never sees a partial
//! object, and directories of dead nodes swept away.
//!
//! ```text
//! <root>/<node>/owner.pid        the pid of the process that owns this directory
//! <root>/<node>/objects/<id>     complete objects (the path handed to same-node consumers)
//! <root>/<node>/tmp/<id>.<n>.part writes in progress
//! ```
//!
//! A node process that is SIGKILLed cannot clean up after itself, and on `/dev/shm` its
//! objects would hold memory until reboot; so every store, when it starts, removes the
//! sibling directories whose `owner.pid` names a process that no longer exists.

use super::catalog::Entry;
use super::errors::StoreError;
use super::object::{Checksum, Hasher, ObjectId, ObjectRef};
use super::Inner;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The directory name of a node (its id with `#` and path separators replaced).
pub fn node_dir_name(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Creates `<root>/<node>/{objects,tmp}` with mode 0700 and writes `owner.pid`.
pub fn create_node_dir(root: &Path, node: &str) -> Result<PathBuf, StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = root.join(node_dir_name(node));
    for d in [root.to_path_buf(), dir.join("objects"), dir.join("tmp")] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|e| StoreError::io(format!("creating {}", d.display()), root, e))?;
    }
    std::fs::write(dir.join("owner.pid"), std::process::id().to_string())
        .map_err(|e| StoreError::io("writing owner.pid", &dir, e))?;
    Ok(dir)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes the node directories under `root` whose owner process is gone; returns how many.
pub fn remove_stale_dirs(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let dir = e.path();
        let Ok(text) = std::fs::read_to_string(dir.join("owner.pid")) else {
            continue;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            continue;
        };
        if pid > 0 && !pid_alive(pid) && std::fs::remove_dir_all(&dir).is_ok() {
            tracing::info!(dir = %dir.display(), pid, "removed the store directory of a node process that is gone");
            removed += 1;
        }
    }
    removed
}

/// What a writer produces: a new object, or a copy of one from another node.
#[derive(Debug)]
pub(crate) enum Target {
    New { name: String, owner: String },
    Copy(ObjectRef),
}

/// Writes one object into the store, hashing as it goes; see [`ObjectWriter::commit`].
///
/// It is a plain [`std::io::Write`] for synchronous code (an engine writing weights straight
/// into the store, with no copy in between). Dropped without `commit`, it removes its
/// temporary file and gives its reserved bytes back.
#[derive(Debug)]
pub struct ObjectWriter {
    inner: Arc<Inner>,
    id: ObjectId,
    target: Target,
    file: Option<std::fs::File>,
    tmp: PathBuf,
    hasher: Hasher,
    written: u64,
    reserved: u64,
    ttl: Option<Duration>,
    what: String,
    committed: bool,
}

/// How much a writer of unknown length reserves at a time.
const RESERVE_STEP: u64 = 64 << 20;

impl ObjectWriter {
    pub(crate) fn create(
        inner: Arc<Inner>,
        target: Target,
        size_hint: Option<u64>,
        ttl: Option<Duration>,
    ) -> Result<ObjectWriter, StoreError> {
        inner.check_open("writing an object")?;
        let (id, what) = match &target {
            Target::New { name, .. } => (ObjectId::generate(), format!("object {name:?}")),
            Target::Copy(obj) => (
                obj.id,
                format!("a copy of object {} ({:?})", obj.id, obj.name),
            ),
        };
        let reserved = size_hint.unwrap_or(0);
        inner.catalog().reserve(&what, reserved)?;
        let n = rand::random::<u32>();
        let tmp = inner.dir.join("tmp").join(format!("{id}.{n:08x}.part"));
        let file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) => {
                inner.catalog().unreserve(reserved);
                return Err(StoreError::io(
                    format!("creating {}", tmp.display()),
                    &inner.dir,
                    e,
                ));
            }
        };
        Ok(ObjectWriter {
            inner,
            id,
            target,
            file: Some(file),
            tmp,
            hasher: Hasher::default(),
            written: 0,
            reserved,
            ttl,
            what,
            committed: false,
        })
    }

    /// The id the object will have.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes `buf` whole, growing the reservation first if needed (a typed error when the
    /// budget is full).
    pub fn write_chunk(&mut self, buf: &[u8]) -> Result<(), StoreError> {
        let need = self.written + buf.len() as u64;
        if need > self.reserved {
            let mut c = self.inner.catalog();
            let short = need - self.reserved;
            let step = short.max(RESERVE_STEP);
            match c.reserve(&self.what, step) {
                Ok(()) => self.reserved += step,
                Err(_) => {
                    c.stats.refused_full = c.stats.refused_full.saturating_sub(1);
                    c.reserve(&self.what, short)?;
                    self.reserved += short;
                }
            }
        }
        let file = self.file.as_mut().ok_or_else(|| StoreError::BadRequest {
            what: self.what.clone(),
            detail: "the writer is already committed".into(),
        })?;
        file.write_all(buf)
            .map_err(|e| StoreError::io(format!("writing {}", self.what), &self.inner.dir, e))?;
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        Ok(())
    }

    /// Finishes the object: checks it (a copy must match its reference's size and checksum),
    /// renames it into place and enters it in the catalog. Returns its reference and path.
    pub fn commit(mut self) -> Result<(ObjectRef, PathBuf), StoreError> {
        let Some(file) = self.file.take() else {
            return Err(StoreError::BadRequest {
                what: self.what.clone(),
                detail: "the writer is already committed".into(),
            });
        };
        drop(file);
        let checksum = self.hasher.finish();
        let inner = self.inner.clone();
        let obj = match &self.target {
            Target::New { name, owner } => ObjectRef {
                id: self.id,
                name: name.clone(),
                size: self.written,
                checksum,
                owner: owner.clone(),
                node: inner.node.clone(),
                url: inner.url.clone(),
            },
            Target::Copy(obj) => {
                if self.written != obj.size || checksum != obj.checksum {
                    let detail = if self.written != obj.size {
                        format!("{} bytes arrived", self.written)
                    } else {
                        format!("the bytes hash to {checksum}")
                    };
                    return Err(StoreError::Corrupt {
                        id: obj.id,
                        from: obj.url.clone(),
                        detail,
                        expected_size: obj.size,
                        expected: obj.checksum,
                    });
                }
                obj.clone()
            }
        };
        let path = inner.object_path(&self.id);
        std::fs::rename(&self.tmp, &path).map_err(|e| {
            StoreError::io(format!("renaming {} into place", self.what), &inner.dir, e)
        })?;
        let holder = match &self.target {
            Target::New { owner, .. } => owner.clone(),
            Target::Copy(_) => "fetch".to_string(),
        };
        let entry = Entry {
            obj: obj.clone(),
            path: path.clone(),
            expires: self.ttl.map(|t| Instant::now() + t),
            holder,
        };
        let reserved = std::mem::take(&mut self.reserved);
        self.committed = true;
        let committed = {
            let mut c = inner.catalog();
            let r = c.commit(reserved, entry).map(|e| e.path.clone());
            if r.is_ok() {
                match self.target {
                    Target::New { .. } => c.stats.puts += 1,
                    Target::Copy(_) => {
                        c.stats.fetches += 1;
                        c.stats.fetched_bytes += self.written;
                    }
                }
            }
            r
        };
        if self.ttl.is_some() {
            inner.sweep_wake.notify_one();
        }
        match committed {
            Ok(p) => Ok((obj, p)),
            // The same id arrived twice at once: the first copy stays (same bytes, checked).
            Err(_) => Ok((obj, path)),
        }
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_chunk(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if !self.committed {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.tmp);
            self.inner.catalog().unreserve(self.reserved);
        }
    }
}

/// The checksum and length of a file, read in `chunk`-sized pieces.
pub fn checksum_file(path: &Path, chunk: usize) -> std::io::Result<(u64, Checksum)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; chunk.max(4096)];
    let mut h = Hasher::default();
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, h.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_become_flat_directory_names() {
        assert_eq!(node_dir_name("node0#0000beef"), "node0-0000beef");
        assert_eq!(node_dir_name("../x/y"), "..-x-y");
    }

    #[test]
    fn directories_of_dead_owners_are_removed_and_live_ones_kept() {
        let root = std::env::temp_dir().join(format!(
            "fleet-store-unit-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let live = create_node_dir(&root, "live#1").unwrap();
        let dead = root.join("dead-2");
        std::fs::create_dir_all(dead.join("objects")).unwrap();
        // A pid above the kernel's pid_max cannot be running.
        std::fs::write(dead.join("owner.pid"), "2147483646").unwrap();
        assert_eq!(remove_stale_dirs(&root), 1);
        assert!(live.exists() && !dead.exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
