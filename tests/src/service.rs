//! A lab element's service as a separate process (`vnfpool-lab-service`), which a test can
//! freeze with SIGSTOP; killed on drop, unless detached for a lab that outlives its process.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
};

use crate::lab::Lab;

/// An element service process (see the `vnfpool-lab-service` binary), killed on drop.
pub struct ServiceProc(Option<std::process::Child>);

/// A service process left running by [`ServiceProc::detach`]: its pid, and the pid of the
/// process that holds its standard input open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Detached {
    pub pid: u32,
    pub holder: u32,
}

impl ServiceProc {
    /// Starts element `i`'s UDP service on `port` (the VIP's, for traffic, and the element's
    /// own address, for health checks) and a TCP listener on the element's address and `port`
    /// (for TCP checks), and waits until they are bound.
    #[must_use]
    pub fn start(binary: &Path, lab: &Lab, i: usize, port: u16) -> Self {
        let e = &lab.elements[i];
        Self::start_in(
            binary,
            e.netns.name(),
            &e.name,
            &[(lab.vip, port).into(), (e.addr, port).into()],
            &[(e.addr, port).into()],
            None,
        )
    }

    /// Starts a service named `name` in the namespace `netns`, answering on the `udp` and `tcp`
    /// addresses, and waits until they are bound. Its error output goes to this process's, or
    /// is appended to `log` (for a service that outlives this process).
    #[must_use]
    pub fn start_in(
        binary: &Path,
        netns: &str,
        name: &str,
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
        log: Option<&Path>,
    ) -> Self {
        use std::io::BufRead as _;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns])
            .arg(binary)
            .args(["--name", name]);
        for a in udp {
            command.args(["--udp", &a.to_string()]);
        }
        for a in tcp {
            command.args(["--tcp", &a.to_string()]);
        }
        let stderr = log.map_or_else(Stdio::inherit, |path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_or_else(|e| panic!("opening {}: {e}", path.display()), Stdio::from)
        });
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("service process");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        assert_eq!(line.trim(), "ready", "service of {name}");
        Self(Some(child))
    }

    /// A stand-in for a service that was stopped: owns no process.
    #[must_use]
    pub fn dead() -> Self {
        Self(None)
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("a running service").id()
    }

    /// Sends `sig` (as `kill` takes it: `-STOP`, `-CONT`).
    pub fn signal(&self, sig: &str) {
        let child = self.0.as_ref().expect("a running service");
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig}");
    }

    /// Leaves the service running after this process exits: its standard input (whose end
    /// would stop it) passes to a `sleep infinity` that holds it open. Stop it by killing
    /// both. `None` for a stand-in ([`Self::dead`]).
    #[must_use]
    #[expect(
        clippy::zombie_processes,
        reason = "the holder is meant to outlive this process, which never waits for it"
    )]
    pub fn detach(mut self) -> Option<Detached> {
        let mut child = self.0.take()?;
        let holder = Command::new("sleep")
            .arg("infinity")
            .stdin(Stdio::null())
            .stdout(Stdio::from(child.stdin.take().expect("stdin")))
            .stderr(Stdio::null())
            .spawn()
            .expect("a process to hold the service's stdin");
        Some(Detached {
            pid: child.id(),
            holder: holder.id(),
        })
    }
}

impl Drop for ServiceProc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
