//! The durable trajectory output of a rollout job: one JSON line per accepted episode, appended
//! as it completes.
//!
//! The file is opened (and so checked) before any worker starts. Each line is written whole and
//! flushed to the OS as the episode is accepted, so a crash, SIGKILL or OOM kill of the driver
//! loses only the episodes in flight; [`Output::sync`] (at every policy version and at the end)
//! makes it durable on disk. A resumed job reads the file back: the episodes it holds are
//! skipped, the policy version continues after the last one recorded, and a torn last line (the
//! process died mid-write) is cut off before anything is appended.
//!
//! Each line: `{"task_index", "sample", "group_id", "episode_id", "task", "worker",
//! "admitted_version", "attempts", "latency_ms", "session_id", "discount", "turns"}`.
//! `(task_index, sample)` names the episode within the job: `sample` counts the `group_size`
//! episodes of one task, which share `group_id`.

use super::controller::Episode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Which episode of the job a line is: `(task_index, sample)`.
pub type EpisodeKey = (u64, u32);

/// What a resumed output already holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resumed {
    /// Episodes already written.
    pub done: BTreeSet<EpisodeKey>,
    /// The highest policy version recorded, if any line was.
    pub last_version: Option<u64>,
    /// Bytes of a torn last line that were cut off.
    pub torn_bytes: u64,
}

/// The open output file.
#[derive(Debug)]
pub struct Output {
    path: PathBuf,
    file: File,
    written: u64,
}

/// Why the output cannot be used; every message names the path and what to do.
pub fn describe(path: &Path, what: &str, e: &std::io::Error) -> String {
    format!("the output {}: {what}: {e}", path.display())
}

/// The checks of [`Output::open`] that change nothing, for a driver to run before it starts a
/// cluster: not a directory, its directory can exist, and an existing non-empty file only with
/// `resume` or `overwrite`.
pub fn check(path: &Path, resume: bool, overwrite: bool) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!(
            "the output {} is a directory; give a file path such as {}",
            path.display(),
            path.join("trajectories.jsonl").display()
        ));
    }
    let exists_nonempty = std::fs::metadata(path)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if exists_nonempty && !resume && !overwrite {
        return Err(format!(
            "the output {} already holds trajectories; pass --resume to continue that job, --overwrite to replace it, or --output to write elsewhere",
            path.display()
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The nearest existing ancestor must be a writable directory.
        let mut d = dir;
        while !d.exists() {
            match d.parent() {
                Some(p) if !p.as_os_str().is_empty() => d = p,
                _ => break,
            }
        }
        if d.exists() && !d.is_dir() {
            return Err(format!(
                "the output {}: {} is not a directory",
                path.display(),
                d.display()
            ));
        }
    }
    Ok(())
}

impl Output {
    /// Opens `path` for the job. Without `resume` an existing non-empty file is an error (it
    /// would be overwritten) unless `overwrite`; with `resume` it is read back and appended to.
    /// A directory, a missing parent that cannot be created, or a file that cannot be written is
    /// an error here, before any work starts.
    pub fn open(path: &Path, resume: bool, overwrite: bool) -> Result<(Output, Resumed), String> {
        if path.is_dir() {
            return Err(format!(
                "the output {} is a directory; give a file path such as {}",
                path.display(),
                path.join("trajectories.jsonl").display()
            ));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| describe(path, "cannot create its directory", &e))?;
        }
        let exists_nonempty = std::fs::metadata(path)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        if exists_nonempty && !resume && !overwrite {
            return Err(format!(
                "the output {} already holds trajectories; pass --resume to continue that job, --overwrite to replace it, or --output to write elsewhere",
                path.display()
            ));
        }
        let mut resumed = Resumed::default();
        let file = if resume && exists_nonempty {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| describe(path, "cannot open it to resume", &e))?;
            let keep = read_back(&mut f, &mut resumed)
                .map_err(|e| format!("the output {} cannot be resumed: {e}", path.display()))?;
            let len = f
                .metadata()
                .map_err(|e| describe(path, "cannot read it", &e))?
                .len();
            if keep < len {
                resumed.torn_bytes = len - keep;
                f.set_len(keep)
                    .map_err(|e| describe(path, "cannot cut its torn last line", &e))?;
            }
            f.seek(SeekFrom::End(0))
                .map_err(|e| describe(path, "cannot seek", &e))?;
            f
        } else {
            File::create(path).map_err(|e| describe(path, "cannot create it", &e))?
        };
        Ok((
            Output {
                path: path.to_path_buf(),
                file,
                written: 0,
            },
            resumed,
        ))
    }

    /// Appends one accepted episode (a no-op for a rejected one) and flushes it to the OS.
    pub fn append(&mut self, key: EpisodeKey, ep: &Episode) -> Result<(), String> {
        let Some(line) = line(key, ep) else {
            return Ok(());
        };
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        // One write of the whole line: a crash leaves whole lines and at most one torn one.
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .map_err(|e| describe(&self.path, "cannot append to it", &e))?;
        self.written += 1;
        Ok(())
    }

    /// Makes everything written so far durable (fsync).
    pub fn sync(&mut self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| describe(&self.path, "cannot sync it", &e))
    }

    /// Lines written by this run.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The output line of an accepted episode.
pub fn line(key: EpisodeKey, ep: &Episode) -> Option<Value> {
    let t = ep.trajectory.as_ref()?;
    Some(json!({
        "task_index": key.0,
        "sample": key.1,
        "group_id": key.0,
        "episode_id": ep.episode_id,
        "task": ep.task,
        "worker": ep.worker,
        "admitted_version": ep.admitted_version,
        "attempts": ep.attempts,
        "latency_ms": ep.latency_ms,
        "session_id": t.get("session_id"),
        "discount": t.get("discount"),
        "turns": t.get("turns"),
    }))
}

/// Reads complete lines back; returns the byte length of the valid prefix (a torn or
/// unparsable *last* line is dropped; an unparsable line before the end is an error).
fn read_back(f: &mut File, into: &mut Resumed) -> Result<u64, String> {
    f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(&mut *f);
    let mut keep = 0u64;
    let mut buf = Vec::new();
    let mut lineno = 0;
    let mut bad: Option<(usize, String)> = None;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        lineno += 1;
        if let Some((at, why)) = bad.take() {
            return Err(format!(
                "line {at} is not a trajectory line ({why}) and more lines follow it; fix or move the file"
            ));
        }
        let complete = buf.ends_with(b"\n");
        let parsed = serde_json::from_slice::<Value>(&buf)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                let ti = v.get("task_index").and_then(Value::as_u64);
                let s = v.get("sample").and_then(Value::as_u64).unwrap_or(0);
                let ver = v.get("admitted_version").and_then(Value::as_u64);
                match ti {
                    Some(ti) => Ok((ti, s as u32, ver)),
                    None => Err("no task_index: not written by this version of fleet".into()),
                }
            });
        match (parsed, complete) {
            (Ok((ti, s, ver)), true) => {
                into.done.insert((ti, s));
                if let Some(v) = ver {
                    into.last_version = Some(into.last_version.map_or(v, |l| l.max(v)));
                }
                keep += n as u64;
            }
            (Ok(_), false) | (Err(_), false) => break, // torn last line
            (Err(why), true) => bad = Some((lineno, why)),
        }
    }
    if let Some((at, why)) = bad {
        // The bad line is the last one: treat it as torn.
        tracing::warn!(line = at, reason = %why, "dropping an unreadable last line of the output");
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: u64, version: u64) -> Episode {
        Episode {
            episode_id: id,
            task: json!({"id": id}),
            worker: "r/0".into(),
            admitted_version: version,
            latency_ms: 1,
            latency_us: 1000,
            overhead_us: 0,
            attempts: 1,
            trajectory: Some(json!({"session_id": "s", "discount": 1.0, "turns": []})),
            rejected: None,
            rejected_kind: None,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fleet-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("out.jsonl")
    }

    #[test]
    fn a_resumed_output_knows_its_episodes_and_cuts_a_torn_last_line() {
        let p = tmp("torn");
        {
            let (mut o, r) = Output::open(&p, false, false).unwrap();
            assert_eq!(r, Resumed::default());
            o.append((0, 0), &ep(0, 0)).unwrap();
            o.append((1, 0), &ep(1, 2)).unwrap();
        }
        // A crash mid-write.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"task_index\": 2, \"sam").unwrap();
        drop(f);
        let (mut o, r) = Output::open(&p, true, false).unwrap();
        assert_eq!(r.done, BTreeSet::from([(0, 0), (1, 0)]));
        assert_eq!(r.last_version, Some(2));
        assert!(r.torn_bytes > 0);
        o.append((2, 0), &ep(2, 3)).unwrap();
        drop(o);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 3);
        for l in text.lines() {
            serde_json::from_str::<Value>(l).unwrap();
        }
    }

    #[test]
    fn an_existing_output_is_not_overwritten_without_being_asked() {
        let p = tmp("exists");
        std::fs::write(&p, "{\"task_index\":0}\n").unwrap();
        let e = Output::open(&p, false, false).unwrap_err();
        assert!(e.contains("--resume") && e.contains("--overwrite"), "{e}");
        Output::open(&p, false, true).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }

    #[test]
    fn a_directory_or_an_unwritable_path_is_refused_before_anything_runs() {
        let p = tmp("dir");
        let dir = p.parent().unwrap();
        let e = Output::open(dir, false, false).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        let e = Output::open(Path::new("/proc/nope/x.jsonl"), false, false).unwrap_err();
        assert!(e.contains("/proc/nope/x.jsonl"), "{e}");
    }

    #[test]
    fn rejected_episodes_are_not_written() {
        let p = tmp("rejected");
        let (mut o, _) = Output::open(&p, false, false).unwrap();
        let mut e = ep(0, 0);
        e.trajectory = None;
        e.rejected = Some("agent failed".into());
        o.append((0, 0), &e).unwrap();
        assert_eq!(o.written(), 0);
    }
}
