//! `ota-server`: see `ota-server --help` and docs/server-api.md.

fn main() -> std::process::ExitCode {
    ota_server::cli::main()
}
