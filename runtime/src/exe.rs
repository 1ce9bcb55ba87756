//! Finding the `fleet` executable, for the workers that fork it again (`fleet rpc-server`,
//! `fleet proxy`, `fleet mock-llm`).

/// `FLEET_BIN` if set, else this process's own executable if it is `fleet`.
///
/// A program that embeds fleet (its own binary, or a test executable) sets `FLEET_BIN` or gives
/// explicit commands; fleet never guesses a path.
pub fn fleet_executable() -> Option<String> {
    if let Ok(p) = std::env::var("FLEET_BIN") {
        if !p.is_empty() {
            return Some(p);
        }
    }
    let exe = std::env::current_exe().ok()?;
    (exe.file_name()?.to_str()? == "fleet").then(|| exe.to_string_lossy().into_owned())
}
