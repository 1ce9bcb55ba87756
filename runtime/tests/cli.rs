//! The `fleet` binary's command line, exercised as a user would run it.
//!
//! This file also makes `cargo test --workspace` build `target/<profile>/fleet`, which the
//! multi-process tests in `fleet-tests` start.

use std::process::Command;

#[test]
fn help_lists_every_subcommand() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleet"))
        .arg("--help")
        .output()
        .expect("run fleet --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["node", "bench", "proxy", "mock-llm", "rpc-server"] {
        assert!(
            text.contains(sub),
            "`fleet --help` does not mention `{sub}`:\n{text}"
        );
    }
}
