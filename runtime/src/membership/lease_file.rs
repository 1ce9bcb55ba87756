//! The node's lease, made visible to its workers' process-group guards as a file.
//!
//! A stopped node process cannot fence. Its children's guards (see `fleet_launcher::process`'s
//! `watch_lease`) read this file every half lease and kill their group when it did not change:
//! the node rewrites it (a counter, written to a temporary file and renamed) every quarter
//! lease, from a thread of its own, but only while its lease from the head holds. So the
//! children of a SIGSTOPped node, or of a node whose lease lapsed, end on their own within
//! about one lease, even though the node does nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    /// The lease holds until then; `None`: not a member.
    until: Option<Instant>,
    /// How often to rewrite the file.
    every: Duration,
}

/// The node's lease file and the thread that refreshes it (which ends when this is dropped).
#[derive(Debug)]
pub(crate) struct LeaseFile {
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

impl LeaseFile {
    /// Creates `dir/lease` and starts its refresher thread.
    pub(crate) fn start(dir: &std::path::Path) -> std::io::Result<LeaseFile> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("lease");
        std::fs::write(&path, "0")?;
        let state = Arc::new(Mutex::new(State {
            until: None,
            every: Duration::from_millis(100),
        }));
        let weak: Weak<Mutex<State>> = Arc::downgrade(&state);
        let file = path.clone();
        std::thread::Builder::new()
            .name("fleet-lease-file".into())
            .spawn(move || refresh(weak, file))?;
        Ok(LeaseFile { path, state })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admitted with `lease`: the lease holds for `lease` from now, and new guards watch the
    /// file every half lease.
    pub(crate) fn admitted(&self, lease: Duration) {
        {
            let mut s = self.lock();
            s.until = Some(Instant::now() + lease);
            s.every = (lease / 4).max(Duration::from_millis(10));
        }
        fleet_launcher::process::watch_lease(Some((self.path.clone(), lease / 2)));
    }

    /// The head acknowledged a beat sent at `sent`: the lease holds until `sent + lease`.
    pub(crate) fn renewed(&self, until: Instant) {
        let mut s = self.lock();
        if s.until.is_some_and(|u| u < until) {
            s.until = Some(until);
        }
    }

    /// Not a member any more (fenced or left): the file stops changing.
    pub(crate) fn lapsed(&self) {
        self.lock().until = None;
    }
}

fn refresh(state: Weak<Mutex<State>>, file: PathBuf) {
    let tmp = file.with_extension("tmp");
    let mut n = 0u64;
    loop {
        let Some(state) = state.upgrade() else {
            return;
        };
        let (until, every) = {
            let s = state.lock().unwrap_or_else(|p| p.into_inner());
            (s.until, s.every)
        };
        drop(state);
        if until.is_some_and(|u| Instant::now() < u) {
            n += 1;
            if std::fs::write(&tmp, n.to_string()).is_ok() {
                let _ = std::fs::rename(&tmp, &file);
            }
        }
        std::thread::sleep(every);
    }
}
