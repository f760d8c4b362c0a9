//! `vnfpool`: thin entry point; the work is in the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    vnfpool_daemon::entry::main()
}
