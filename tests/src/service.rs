//! A lab element's service as a separate process (`vnfpool-lab-service`), which a test can
//! freeze with SIGSTOP; killed on drop.

use std::{path::Path, process::Command};

use crate::lab::Lab;

/// An element service process (see the `vnfpool-lab-service` binary), killed on drop.
pub struct ServiceProc(Option<std::process::Child>);

impl ServiceProc {
    /// Starts element `i`'s UDP service on `port` (the VIP's, for traffic, and the element's
    /// own address, for health checks) and a TCP listener on the element's address and `port`
    /// (for TCP checks), and waits until they are bound.
    #[must_use]
    pub fn start(binary: &Path, lab: &Lab, i: usize, port: u16) -> Self {
        use std::io::BufRead as _;
        let e = &lab.elements[i];
        let mut child = Command::new("ip")
            .args(["netns", "exec", e.netns.name()])
            .arg(binary)
            .args(["--name", &e.name])
            .args([
                "--udp",
                &format!("{}:{port}", lab.vip),
                "--udp",
                &format!("{}:{port}", e.addr),
            ])
            .args(["--tcp", &format!("{}:{port}", e.addr)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("service process");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        assert_eq!(line.trim(), "ready", "service of {}", e.name);
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
}

impl Drop for ServiceProc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
