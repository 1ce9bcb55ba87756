//! Finding the `fleet` executable, for the workers that fork it again (`fleet rpc-server`,
//! `fleet proxy`, `fleet mock-llm`).

/// `FLEET_BIN` if set, else this process's own executable if it is `fleet`.
///
/// A program that embeds fleet (its own binary, or a test executable) sets `FLEET_BIN` or gives
/// explicit commands; fleet never guesses a path. Commands whose program is the bare word
/// `fleet` are resolved with this on the node that runs them.
pub fn fleet_executable() -> Option<String> {
    fleet_launcher::process::fleet_executable()
}
