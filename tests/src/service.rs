//! A lab element's service as a separate process (`vnfpool-lab-service`), which a test can
//! freeze with SIGSTOP; killed on drop.

use std::{path::Path, process::Command};

use crate::lab::Lab;

/// An element service process (see the `vnfpool-lab-service` binary), killed on drop.
pub struct ServiceProc(std::process::Child);

impl ServiceProc {
    /// Starts element `i`'s UDP service on `port` (the VIP's, for traffic, and the element's
    /// own address, for health checks) and waits until it is bound.
    #[must_use]
    pub fn start(binary: &Path, lab: &Lab, i: usize, port: u16) -> Self {
        use std::io::BufRead as _;
        let e = &lab.elements[i];
        let mut child = Command::new("ip")
            .args(["netns", "exec", e.netns.name()])
            .arg(binary)
            .args(["--name", &e.name])
            .args(["--udp", &format!("{}:{port}", lab.vip), "--udp", &format!("{}:{port}", e.addr)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("service process");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
        assert_eq!(line.trim(), "ready", "service of {}", e.name);
        Self(child)
    }

    /// Sends `sig` (as `kill` takes it: `-STOP`, `-CONT`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([sig, &self.0.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill {sig}");
    }
}

impl Drop for ServiceProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

