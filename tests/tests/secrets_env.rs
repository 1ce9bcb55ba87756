//! C12: secrets stay put. An agent runs LLM-chosen tool code as the same user as the node, so
//! it can read its own environment and every same-user `/proc/PID/environ`. Over a real
//! cluster (a head in this process, one `fleet node` process given the cookie in
//! `FLEET_COOKIE`), an agent dumps both; neither the cluster cookie nor the proxy's admin key
//! may appear: the node takes the cookie out of its environment (and blanks it in its
//! `/proc/PID/environ`) at start, and the proxy gets its admin key on stdin.

use fleet_runtime::rollout::job::RolloutJob;
use fleet_tests::cluster::TestCluster;
use std::collections::{BTreeMap, BTreeSet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_finds_neither_the_cookie_nor_the_admin_key_in_any_environment() {
    let cluster = TestCluster::builder()
        .nodes(1)
        .start()
        .await
        .expect("head and a node up");
    let dir = cluster.dir().to_path_buf();
    let cookie = cluster.cookie().to_string();
    let mut job = RolloutJob::demo();
    job.episodes = 2;
    job.batch_size = 2;
    job.workers.replicas = 1;
    job.output = dir.join("trajectories.jsonl");
    // The agent: its own environment, then pid, parent pid and environment of every process it
    // can see; then a reward.
    let script = format!(
        r#"out={dir}/dump-$$.txt
{{ echo "self $$ $PPID"
  env | sed 's/^/env /'
  for p in /proc/[0-9]*; do
    pid=${{p#/proc/}}
    ppid=$(cut -d' ' -f4 "$p/stat" 2>/dev/null)
    echo "proc $pid $ppid"
    tr '\0' '\n' < "$p/environ" 2>/dev/null | sed "s/^/environ $pid /"
  done
}} > "$out" 2>/dev/null
cat > /dev/null
echo 1.0"#,
        dir = dir.display()
    );
    job.agent.builtin = None;
    job.agent.command = Some(vec!["sh".into(), "-c".into(), script]);
    let _ = job
        .run(cluster.scheduler(), "fleet", Default::default())
        .await;

    let dumps: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("dump-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(!dumps.is_empty(), "the agent ran and wrote its dump");
    let secret_vars = ["FLEET_COOKIE", "FLEET_ADMIN_KEY", "FLEET_RPC_TOKEN"];
    for dump in &dumps {
        assert!(
            !dump.contains(&cookie),
            "the cookie is readable by an agent:\n{}",
            dump.lines()
                .filter(|l| l.contains(&cookie))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // The agent's own environment holds no secret variable at all.
        for line in dump.lines().filter_map(|l| l.strip_prefix("env ")) {
            for v in secret_vars {
                assert!(!line.starts_with(&format!("{v}=")), "agent env: {line}");
            }
        }
        // Its parent is the node; the node and the node's children (the proxy, the backend)
        // show no secret value in /proc/PID/environ.
        let self_line = dump.lines().find(|l| l.starts_with("self ")).unwrap();
        let node_pid = self_line.split(' ').nth(2).unwrap().to_string();
        let mut parent: BTreeMap<String, String> = BTreeMap::new();
        for l in dump.lines().filter_map(|l| l.strip_prefix("proc ")) {
            let mut it = l.split(' ');
            if let (Some(pid), Some(ppid)) = (it.next(), it.next()) {
                parent.insert(pid.to_string(), ppid.to_string());
            }
        }
        let ours: BTreeSet<&String> = parent
            .iter()
            .filter(|(pid, ppid)| **pid == node_pid || **ppid == node_pid)
            .map(|(pid, _)| pid)
            .collect();
        assert!(ours.len() >= 3, "the node, its proxy and backend: {ours:?}");
        for l in dump.lines().filter_map(|l| l.strip_prefix("environ ")) {
            let Some((pid, var)) = l.split_once(' ') else {
                continue;
            };
            if !ours.contains(&pid.to_string()) {
                continue;
            }
            for v in secret_vars {
                if let Some(value) = var.strip_prefix(&format!("{v}=")) {
                    assert!(
                        value.trim_matches('\0').is_empty(),
                        "process {pid} (node {node_pid}) shows {v} with a value"
                    );
                }
            }
        }
    }
    drop(cluster);
}
