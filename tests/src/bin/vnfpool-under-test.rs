//! The `vnfpool` command, built in this crate too so that integration tests can spawn it
//! (`CARGO_BIN_EXE_vnfpool-under-test`); the same code as the daemon crate's binary.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vnfpool_daemon::entry::main()
}
