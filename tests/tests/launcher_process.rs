//! Supervised child processes (`fleet_launcher::process`) with real processes: output capture,
//! spawn errors, readiness that fails at once on exit, TERM -> KILL stops, and no orphans,
//! including when the supervising process itself is SIGKILLed.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use fleet_launcher::process::{wait_ready, ChildHandle, ChildSpec, ProcessError, ReadinessProbe};
use fleet_tests::{free_port, pid_alive, wait_until, PipedChild};

const SERVER: &str = env!("CARGO_BIN_EXE_fleet-test-server");

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fleet-launcher-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn sh(label: &str, script: &str) -> ChildSpec {
    ChildSpec::new(label, "/bin/sh").args(["-c", script])
}

/// Waits until some tail line satisfies `parse`.
async fn tail_line<T>(child: &ChildHandle, mut parse: impl FnMut(&str) -> Option<T>) -> T {
    wait_until("a tail line", Duration::from_secs(10), || {
        let found = child.tail().iter().find_map(|l| parse(l));
        async move { found }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; tail: {:?}", child.tail()))
}

#[tokio::test]
async fn output_lines_reach_the_tail_and_the_log_file() {
    let dir = temp_dir("logs");
    let child =
        ChildHandle::spawn(sh("test/out", "echo out-1; echo err-1 >&2; echo out-2").log_dir(&dir))
            .await
            .expect("spawn");
    let info = tokio::time::timeout(Duration::from_secs(10), child.exited())
        .await
        .expect("exits");
    assert_eq!((info.code, info.signal), (Some(0), None));
    let expected: HashSet<&str> = ["out-1", "err-1", "out-2"].into();
    let tail: HashSet<String> = child.tail().into_iter().collect();
    assert_eq!(tail, expected.iter().map(|s| s.to_string()).collect());
    assert_eq!(info.tail.len(), 3, "{:?}", info.tail);
    // stdout lines keep their order.
    let outs: Vec<&String> = info.tail.iter().filter(|l| l.starts_with("out")).collect();
    assert_eq!(outs, vec!["out-1", "out-2"]);

    let path = dir.join("test_out.log");
    assert_eq!(child.log_path(), Some(path.as_path()));
    let logged = std::fs::read_to_string(&path).expect("log file exists");
    let logged: HashSet<&str> = logged.lines().collect();
    assert_eq!(logged, expected);

    // Append mode: a second child with the same label adds to the file.
    let again = ChildHandle::spawn(sh("test/out", "echo out-3").log_dir(&dir))
        .await
        .expect("spawn");
    again.exited().await;
    let logged = std::fs::read_to_string(&path).expect("log file");
    assert_eq!(logged.lines().count(), 4, "{logged}");
    assert_eq!(logged.lines().last(), Some("out-3"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_tail_keeps_only_the_last_lines() {
    let child = ChildHandle::spawn(
        sh("test/tail", "for i in 1 2 3 4 5 6; do echo line-$i; done").tail_lines(3),
    )
    .await
    .expect("spawn");
    let info = child.exited().await;
    assert_eq!(info.tail, vec!["line-4", "line-5", "line-6"]);
}

#[tokio::test]
async fn env_is_explicit_and_clear_env_drops_the_inherited_one() {
    let script = r#"echo "A=$A HOME=${HOME:-unset}""#;
    let cleared = ChildHandle::spawn(sh("test/env", script).clear_env(true).env("A", "1"))
        .await
        .expect("spawn");
    assert_eq!(cleared.exited().await.tail, vec!["A=1 HOME=unset"]);
    if std::env::var_os("HOME").is_some() {
        let inherited = ChildHandle::spawn(sh("test/env", script).env("A", "2"))
            .await
            .expect("spawn");
        let tail = inherited.exited().await.tail;
        assert!(
            tail[0].starts_with("A=2 HOME=") && !tail[0].ends_with("unset"),
            "{tail:?}"
        );
    }
}

#[tokio::test]
async fn a_missing_or_non_executable_program_is_a_typed_spawn_error() {
    let missing = "/nonexistent/fleet-no-such-binary";
    let err = ChildHandle::spawn(ChildSpec::new("test/missing", missing))
        .await
        .expect_err("no such program");
    match &err {
        ProcessError::Spawn {
            label,
            program,
            source,
        } => {
            assert_eq!(label, "test/missing");
            assert_eq!(program, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Spawn, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(missing) && msg.contains("test/missing"),
        "{msg}"
    );
    assert!(!err.retryable());

    let dir = temp_dir("noexec");
    let script = dir.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
    let err = ChildHandle::spawn(ChildSpec::new("test/noexec", script.to_string_lossy()))
        .await
        .expect_err("not executable");
    match &err {
        ProcessError::Spawn { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{err}")
        }
        other => panic!("expected Spawn, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn wait_ready_returns_once_the_server_answers() {
    let port = free_port();
    let spec = ChildSpec::new("test/ready", SERVER)
        .args(["--port", "{port0}"])
        .with_ports(&[port])
        .expect("one port");
    let child = ChildHandle::spawn(spec).await.expect("spawn");
    wait_ready(
        &ReadinessProbe::http(port, "/health").deadline(Duration::from_secs(20)),
        &child,
    )
    .await
    .expect("ready");
    assert!(child.is_running());
    let line = tail_line(&child, |l| {
        l.starts_with("listening on").then(|| l.to_string())
    })
    .await;
    assert_eq!(line, format!("listening on 127.0.0.1:{port}"));
}

#[tokio::test]
async fn a_child_that_exits_during_readiness_fails_the_wait_at_once_with_code_and_tail() {
    let port = free_port(); // nothing will ever listen here
    let child = ChildHandle::spawn(sh(
        "test/dies",
        "echo starting; echo 'fatal: bad config' >&2; sleep 0.3; exit 7",
    ))
    .await
    .expect("spawn");
    // The probe would wait a minute; the exit must end it long before the test's bound.
    let probe = ReadinessProbe::http(port, "/health").deadline(Duration::from_secs(60));
    let err = tokio::time::timeout(Duration::from_secs(20), wait_ready(&probe, &child))
        .await
        .expect("the exit ends the wait")
        .expect_err("never ready");
    match &err {
        ProcessError::ExitedBeforeReady {
            label,
            pid,
            code,
            signal,
            tail,
        } => {
            assert_eq!(label, "test/dies");
            assert_eq!(*pid, child.pid());
            assert_eq!((*code, *signal), (Some(7), None));
            assert!(tail.iter().any(|l| l == "fatal: bad config"), "{tail:?}");
        }
        other => panic!("expected ExitedBeforeReady, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("exit code 7") && msg.contains("fatal: bad config"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_child_that_never_answers_is_not_ready_by_the_deadline_with_the_tail() {
    let port = free_port();
    let child = ChildHandle::spawn(sh("test/silent", "echo 'still loading'; exec sleep 100"))
        .await
        .expect("spawn");
    tail_line(&child, |l| (l == "still loading").then_some(())).await;
    let probe = ReadinessProbe::http(port, "/health").deadline(Duration::from_millis(300));
    let err = wait_ready(&probe, &child).await.expect_err("not ready");
    match &err {
        ProcessError::NotReady {
            last, tail, url, ..
        } => {
            assert!(last.contains("refused"), "{last}");
            assert_eq!(tail, &vec!["still loading".to_string()]);
            assert_eq!(url, &format!("http://127.0.0.1:{port}/health"));
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(err.retryable());
    assert!(
        child.is_running(),
        "a readiness timeout does not kill the child"
    );
}

#[tokio::test]
async fn stop_terminates_with_term_when_the_child_obeys() {
    let child = ChildHandle::spawn(ChildSpec::new("test/obeys", "sleep").args(["100"]))
        .await
        .expect("spawn");
    let info = child.stop(Duration::from_secs(20)).await.expect("stops");
    assert_eq!((info.code, info.signal), (None, Some(libc::SIGTERM)));
    assert!(!pid_alive(child.pid()));
}

#[tokio::test]
async fn stop_sends_term_then_kill_to_a_child_that_ignores_term() {
    let child = ChildHandle::spawn(sh(
        "test/stubborn",
        r#"trap "" TERM; echo armed; sleep 100"#,
    ))
    .await
    .expect("spawn");
    tail_line(&child, |l| (l == "armed").then_some(())).await;
    let info = child.stop(Duration::from_millis(300)).await.expect("stops");
    assert_eq!(
        (info.code, info.signal),
        (None, Some(libc::SIGKILL)),
        "{info}"
    );
    assert_eq!(info.tail, vec!["armed"]);
    // Idempotent: a second stop reports the same exit and signals nothing.
    assert_eq!(
        child.stop(Duration::from_millis(300)).await.expect("again"),
        info
    );
    assert_eq!(child.exit_status(), Some(info));
}

#[tokio::test]
async fn no_orphans_after_stop_or_drop_of_twenty_children() {
    let mut children = Vec::new();
    let mut pids = Vec::new();
    for i in 0..20 {
        let spec = if i % 2 == 0 {
            ChildSpec::new(format!("orphans/{i}"), "sleep").args(["1000"])
        } else {
            // A grandchild in the same process group, announced on stdout.
            sh(
                &format!("orphans/{i}"),
                "sleep 1000 & echo grandchild $!; wait",
            )
        };
        let child = ChildHandle::spawn(spec).await.expect("spawn");
        pids.push(child.pid());
        if i % 2 == 1 {
            let grandchild = tail_line(&child, |l| {
                l.strip_prefix("grandchild ")
                    .and_then(|p| p.parse::<u32>().ok())
            })
            .await;
            pids.push(grandchild);
        }
        children.push(child);
    }
    assert_eq!(pids.len(), 30);
    assert!(pids.iter().all(|&p| pid_alive(p)), "all started");

    // Stop the first half, drop the second half without stopping.
    let rest = children.split_off(10);
    for child in &children {
        child.stop(Duration::from_secs(5)).await.expect("stops");
    }
    drop(rest);
    drop(children);
    wait_until(
        "every child and grandchild gone",
        Duration::from_secs(20),
        || {
            let alive: Vec<u32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
            async move { alive.is_empty().then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| {
        let alive: Vec<u32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
        panic!("{e}: still alive {alive:?}")
    });
}

#[tokio::test]
async fn a_leader_that_exits_takes_its_group_along() {
    let child = ChildHandle::spawn(sh("test/leader", "sleep 1000 & echo grandchild $!; exit 4"))
        .await
        .expect("spawn");
    let info = child.exited().await;
    assert_eq!(info.code, Some(4));
    let grandchild: u32 = info
        .tail
        .iter()
        .find_map(|l| l.strip_prefix("grandchild ").and_then(|p| p.parse().ok()))
        .expect("grandchild pid printed");
    wait_until(
        "the grandchild gone",
        Duration::from_secs(10),
        || async move { (!pid_alive(grandchild)).then_some(()) },
    )
    .await
    .expect("group killed after the leader exited");
}

/// Env var that turns this test binary into a supervisor for
/// `children_die_when_their_supervisor_is_sigkilled`.
const SUPERVISOR_ENV: &str = "FLEET_TEST_PDEATHSIG_SUPERVISOR";

/// Not a test on its own: when [`SUPERVISOR_ENV`] is set, it plays a node that supervises three
/// children and prints their pids, then waits to be killed. Spawns happen at different times
/// and from a runtime whose worker threads come and go, which is exactly when a parent-death
/// signal tied to the wrong thread would fire early.
#[test]
fn pdeathsig_supervisor_helper() {
    if std::env::var_os(SUPERVISOR_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..3 {
            let child = ChildHandle::spawn(
                ChildSpec::new(format!("pdeathsig/{i}"), "/bin/sh")
                    .args(["-c", "sleep 1000 & echo grandchild $!; wait"]),
            )
            .await
            .expect("spawn");
            let grandchild = tail_line(&child, |l| {
                l.strip_prefix("grandchild ").map(str::to_string)
            })
            .await;
            println!("child {} {}", child.pid(), grandchild);
            // Keep the handles: this process is killed, not dropped.
            handles.push(child);
            // Let a spawn_blocking thread come and go between spawns.
            tokio::task::spawn_blocking(|| ())
                .await
                .expect("blocking task");
        }
        println!("supervising");
        std::future::pending::<()>().await;
    });
}

#[tokio::test]
async fn children_die_when_their_supervisor_is_sigkilled() {
    let exe = std::env::current_exe().expect("test binary");
    let mut supervisor = PipedChild::spawn(
        "supervisor",
        Command::new(exe)
            .args([
                "pdeathsig_supervisor_helper",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SUPERVISOR_ENV, "1"),
    )
    .expect("supervisor starts");
    supervisor
        .wait_for_stdout(Duration::from_secs(30), |l| {
            (l.trim() == "supervising").then_some(())
        })
        .await
        .expect("supervisor starts its children");
    let pids: Vec<u32> = supervisor
        .stdout_lines()
        .iter()
        // libtest may print "test ... " before the first line.
        .filter_map(|l| l.split_once("child ").map(|(_, rest)| rest))
        .flat_map(|rest| {
            rest.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    assert_eq!(pids.len(), 6, "three children and three grandchildren");
    assert!(pids.iter().all(|&p| pid_alive(p)));

    // SAFETY: kill of the supervisor's pid only (not its group), which this test started.
    unsafe {
        libc::kill(supervisor.pid() as i32, libc::SIGKILL);
    }
    wait_until("the supervisor gone", Duration::from_secs(10), || {
        let gone = supervisor.try_wait().is_some();
        async move { gone.then_some(()) }
    })
    .await
    .expect("supervisor killed");
    // The children die of their parent-death signal, their grandchildren of the group guard.
    wait_until(
        "every child and grandchild gone",
        Duration::from_secs(20),
        || {
            let alive: Vec<u32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
            async move { alive.is_empty().then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| {
        let alive: Vec<u32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
        panic!("{e}: still alive {alive:?} of {pids:?}")
    });
}

#[tokio::test]
async fn stop_delivers_term_before_kill() {
    // The shell notes the TERM and keeps running; only the KILL after the grace ends it.
    let child = ChildHandle::spawn(sh(
        "test/term-then-kill",
        r#"trap 'echo got-term' TERM; echo armed; while :; do sleep 0.05; done"#,
    ))
    .await
    .expect("spawn");
    tail_line(&child, |l| (l == "armed").then_some(())).await;
    let info = child.stop(Duration::from_secs(2)).await.expect("stops");
    assert_eq!(info.signal, Some(libc::SIGKILL), "{info}");
    // dash also reports the TERMed `sleep` as "Terminated".
    let events: Vec<&String> = info.tail.iter().filter(|l| *l != "Terminated").collect();
    assert_eq!(events, vec!["armed", "got-term"]);
}

#[tokio::test]
async fn an_unfilled_port_placeholder_is_refused_at_spawn() {
    let err = ChildHandle::spawn(ChildSpec::new("test/ports", SERVER).args(["--port", "{port}"]))
        .await
        .expect_err("{port} was never filled");
    match &err {
        ProcessError::Placeholder { label, source } => {
            assert_eq!(label, "test/ports");
            assert_eq!((source.index, source.available), (0, 0));
        }
        other => panic!("expected Placeholder, got {other:?}"),
    }
    assert!(err.to_string().contains("{port}"), "{err}");
}
