//! The `fleet` binary: every role of a fleet deployment is this one program started with a
//! different subcommand, so a forked "proxy command" is the same binary started again.

fn main() -> std::process::ExitCode {
    fleet_runtime::cli::main()
}
