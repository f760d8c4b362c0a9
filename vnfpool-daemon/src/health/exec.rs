//! Exec probe: a command (no shell) exits with status 0 within the timeout.

use std::{net::IpAddr, process::Stdio, time::Duration};

use tokio::{
    process::Command,
    time::{self, Instant},
};

use super::ProbeError;

/// Runs `command` with `VNFPOOL_ELEMENT=name` and `VNFPOOL_ELEMENT_ADDRESS=target` added to the
/// daemon's environment, stdin/stdout/stderr on `/dev/null`.
///
/// On timeout the child is killed (SIGKILL) and reaped before this returns. Only the child itself
/// is killed: a command that starts processes of its own must not leave them behind.
///
/// # Errors
///
/// [`ProbeError::Exit`] for a non-zero status or a death by signal, [`ProbeError::TimedOut`],
/// and [`ProbeError::Spawn`]/[`ProbeError::Wait`]/[`ProbeError::EmptyCommand`].
pub async fn probe(
    command: &[String],
    target: IpAddr,
    name: &str,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let deadline = Instant::now() + timeout;
    let Some((program, args)) = command.split_first() else {
        return Err(ProbeError::EmptyCommand);
    };
    let mut child = Command::new(program)
        .args(args)
        .env("VNFPOOL_ELEMENT", name)
        .env("VNFPOOL_ELEMENT_ADDRESS", target.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Also covers the probe future being dropped (shutdown) while the child runs.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ProbeError::Spawn {
            program: program.clone(),
            source,
        })?;

    match time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(ProbeError::Exit {
            program: program.clone(),
            status,
        }),
        Ok(Err(source)) => Err(ProbeError::Wait {
            program: program.clone(),
            source,
        }),
        Err(_elapsed) => {
            // `kill` sends SIGKILL and waits, so no zombie is left; an error means it has exited.
            let _ = child.kill().await;
            Err(ProbeError::TimedOut { after: timeout })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        time::Duration,
    };

    use tokio::time::Instant;

    use crate::{health::check, model::spec::CheckSpec};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const TIMEOUT: Duration = Duration::from_secs(5);

    fn exec(command: &[&str]) -> CheckSpec {
        CheckSpec::Exec {
            command: command.iter().map(|arg| (*arg).to_owned()).collect(),
        }
    }

    #[tokio::test]
    async fn exit_zero_is_healthy() {
        let outcome = check(&exec(&["true"]), LOCALHOST, "e1", TIMEOUT).await;

        assert!(outcome.ok, "{outcome:?}");
    }

    #[tokio::test]
    async fn exit_non_zero_fails() {
        let outcome = check(&exec(&["false"]), LOCALHOST, "e1", TIMEOUT).await;

        assert!(!outcome.ok);
        assert_eq!(
            outcome.detail.as_deref(),
            Some("\"false\" failed: exit status: 1")
        );
    }

    #[tokio::test]
    async fn element_is_in_the_environment_and_arguments_are_not_split() {
        let script = r#"test "$VNFPOOL_ELEMENT" = "e 1" && test "$VNFPOOL_ELEMENT_ADDRESS" = 127.0.0.1"#;

        let outcome = check(&exec(&["sh", "-c", script]), LOCALHOST, "e 1", TIMEOUT).await;
        assert!(outcome.ok, "{outcome:?}");

        let outcome = check(&exec(&["sh", "-c", script]), LOCALHOST, "e2", TIMEOUT).await;
        assert!(!outcome.ok, "{outcome:?}");
    }

    #[tokio::test]
    async fn slow_command_is_killed_at_the_timeout() {
        let timeout = Duration::from_millis(50);
        // A duration no other process uses, to find this child in /proc.
        let seconds = format!("5.{}", std::process::id());
        let start = Instant::now();

        let outcome = check(&exec(&["sleep", &seconds]), LOCALHOST, "e1", timeout).await;

        let elapsed = start.elapsed();
        assert!(!outcome.ok);
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_millis(150),
            "took {elapsed:?}"
        );
        assert_eq!(outcome.detail.as_deref(), Some("no answer within 50ms"));
        assert!(
            !process_exists(&["sleep", &seconds]),
            "the timed-out child is still there"
        );
    }

    /// Whether a live process runs exactly `argv` (a zombie has an empty command line).
    fn process_exists(argv: &[&str]) -> bool {
        let wanted: Vec<u8> = argv.iter().flat_map(|arg| arg.bytes().chain([0])).collect();
        std::fs::read_dir("/proc")
            .expect("listing /proc")
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
            .any(|cmdline| cmdline == wanted)
    }

    #[tokio::test]
    async fn missing_program_and_empty_command_fail() {
        let outcome = check(&exec(&["/nonexistent/check"]), LOCALHOST, "e1", TIMEOUT).await;
        assert!(!outcome.ok);

        let outcome = check(&exec(&[]), LOCALHOST, "e1", TIMEOUT).await;
        assert_eq!(
            outcome.detail.as_deref(),
            Some("the exec check has an empty command")
        );
    }
}
