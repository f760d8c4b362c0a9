//! Test guards for network namespaces, and running async code inside one.
//!
//! Names are `vnfp-{pid}-{n}` (at most 15 bytes, so they also fit interface names). Interfaces
//! are created inside the namespaces, never in the test host's, so deleting the namespaces
//! removes everything a test made.

use std::{
    fs::File,
    future::Future,
    os::fd::AsFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh name, unique on this machine while this process lives.
pub(crate) fn unique_name() -> String {
    let name = format!(
        "vnfp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    assert!(name.len() <= 15, "{name} is too long for an interface name");
    name
}

/// Runs `ip args…`, panicking with its stderr if it fails.
#[track_caller]
pub(crate) fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        output.status.success(),
        "ip {}: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace, deleted on drop (with everything in it).
pub(crate) struct NetNs {
    name: String,
}

impl NetNs {
    #[track_caller]
    pub(crate) fn new() -> Self {
        let name = unique_name();
        ip(&["netns", "add", &name]);
        Self { name }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <this namespace> args…`.
    #[track_caller]
    pub(crate) fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs `program args…` inside this namespace (`ip netns exec`).
    #[track_caller]
    pub(crate) fn exec(&self, program_and_args: &[&str]) {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(program_and_args);
        ip(&all);
    }

    /// Runs `body` to completion on a current-thread runtime in a thread that has entered this
    /// namespace, so that the sockets it opens (netlink included) belong to the namespace. A panic
    /// in `body` is re-raised here.
    pub(crate) fn run<F, Fut, T>(&self, body: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                let namespace = File::open(&path).expect("opening the namespace");
                move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network))
                    .expect("entering the namespace (setns)");
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a runtime");
                runtime.block_on(body())
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let deleted = Command::new("ip").args(["netns", "del", &self.name]).status();
        assert!(
            deleted.as_ref().is_ok_and(std::process::ExitStatus::success) || std::thread::panicking(),
            "deleting network namespace {}: {deleted:?}",
            self.name
        );
    }
}
