//! Client traffic through a lab's VIP, and what the client sees of a failover.

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

/// Waits for one datagram on `sock` until `deadline`; `None` when none came (or the socket
/// reported an error, like an ICMP port unreachable). Waits with poll(2), whose timeout is a
/// high-resolution timer: `SO_RCVTIMEO` counts in jiffies, and a 1 ms receive timeout blocks
/// 8 ms on a kernel with HZ=250, which would space a "once a millisecond" client's requests
/// 8 ms apart exactly while nothing answers them.
#[must_use]
pub fn recv_until(sock: &UdpSocket, buf: &mut [u8], deadline: Instant) -> Option<usize> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).expect("a short wait");
        let mut fds = [PollFd::new(sock, PollFlags::IN)];
        // EINTR: wait again for what is left.
        if poll(&mut fds, Some(&timeout)).unwrap_or(0) > 0 {
            return sock.recv(buf).ok();
        }
        if left.is_zero() {
            return None;
        }
    }
}

/// What a client that asks once a millisecond saw: how many requests it sent, and each answer
/// (time, answering element).
#[derive(Debug, Default)]
pub struct Probed {
    pub sent: usize,
    pub answers: Vec<(Instant, String)>,
}

impl Probed {
    /// Requests that got no answer.
    #[must_use]
    pub fn lost(&self) -> usize {
        self.sent.saturating_sub(self.answers.len())
    }
}

/// Asks the VIP once a millisecond, on the millisecond, from one client socket (one flow)
/// until `done` holds for the answers so far or `limit` passes; returns (time, answering
/// element) per answer.
#[must_use]
pub fn probe_until(
    sock: &UdpSocket,
    limit: Duration,
    done: impl Fn(&[(Instant, String)]) -> bool,
) -> Vec<(Instant, String)> {
    probe_counted(sock, limit, done).answers
}

/// [`probe_until`], counting the requests sent too.
#[must_use]
pub fn probe_counted(
    sock: &UdpSocket,
    limit: Duration,
    done: impl Fn(&[(Instant, String)]) -> bool,
) -> Probed {
    let start = Instant::now();
    let mut probed = Probed::default();
    let mut buf = [0u8; 64];
    let mut next = start;
    while start.elapsed() < limit && !done(&probed.answers) {
        let _ = sock.send(b"ping");
        probed.sent += 1;
        next = (next + Duration::from_millis(1)).max(Instant::now());
        while Instant::now() < next && !done(&probed.answers) {
            if let Some(n) = recv_until(sock, &mut buf, next) {
                probed
                    .answers
                    .push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        }
    }
    probed
}

/// Probes the VIP on one thread while `inject` runs on this one, from once the probing is
/// under way until 5 answers in a row come from elements `settled` accepts (or 5 s pass);
/// returns every answer and how many requests were sent. The gap is then what the client saw,
/// whatever the injection itself cost.
pub fn around_until(
    sock: &UdpSocket,
    settled: impl Fn(&str) -> bool + Sync,
    inject: impl FnOnce(),
) -> Probed {
    let progress = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let prober = s.spawn(|| {
            probe_counted(sock, Duration::from_secs(5), |a| {
                progress.store(a.len(), std::sync::atomic::Ordering::Relaxed);
                a.len() >= 5 && a[a.len() - 5..].iter().all(|(_, e)| settled(e))
            })
        });
        // Until 20 answers came, or the prober gave up (no answer at all: nothing to inject into).
        while progress.load(std::sync::atomic::Ordering::Relaxed) < 20 && !prober.is_finished() {
            std::thread::yield_now();
        }
        inject();
        prober.join().expect("prober")
    })
}

/// [`around_until`] `to` answers 5 times in a row.
#[must_use]
pub fn around(sock: &UdpSocket, to: &str, inject: impl FnOnce()) -> Vec<(Instant, String)> {
    around_until(sock, |e| e == to, inject).answers
}

/// [`around_until`] elements other than `from` answer 5 times in a row: for a failover whose
/// successor is not known in advance.
#[must_use]
pub fn around_away(sock: &UdpSocket, from: &str, inject: impl FnOnce()) -> Vec<(Instant, String)> {
    around_until(sock, |e| e != from, inject).answers
}

/// The gap between the last answer from `from` and the first later answer `next` accepts.
fn gap_until(answers: &[(Instant, String)], from: &str, next: impl Fn(&str) -> bool) -> Duration {
    let last_from = answers
        .iter()
        .rposition(|(_, e)| e == from)
        .expect("answers from the old element");
    let first = answers[last_from..]
        .iter()
        .find(|(_, e)| next(e))
        .expect("answers from the new element");
    first.0 - answers[last_from].0
}

/// The gap between the last answer from `from` and the first later answer from another element.
#[must_use]
pub fn gap_away(answers: &[(Instant, String)], from: &str) -> Duration {
    gap_until(answers, from, |e| e != from)
}

/// The gap between the last answer from `from` and the first later answer from `to`.
#[must_use]
pub fn gap(answers: &[(Instant, String)], from: &str, to: &str) -> Duration {
    gap_until(answers, from, |e| e == to)
}

/// [`gap`], printed with `what` and checked against `bound`; on failure the panic carries
/// `log()` (the daemon's log).
#[track_caller]
pub fn gap_within(
    answers: &[(Instant, String)],
    from: &str,
    to: &str,
    bound: Duration,
    what: &str,
    log: impl FnOnce() -> String,
) -> Duration {
    let g = gap(answers, from, to);
    println!(
        "{what}: client-visible gap {:.1} ms (bound {bound:?})",
        g.as_secs_f64() * 1e3
    );
    assert!(g <= bound, "{what}: gap {g:?} over {bound:?}\n{}", log());
    g
}

/// Sends one request per millisecond for `span`, then collects late answers for 100 ms;
/// returns (requests sent, answers by element).
#[must_use]
pub fn exchange(sock: &UdpSocket, span: Duration) -> (usize, std::collections::BTreeMap<String, usize>) {
    exchange_while(sock, |elapsed| elapsed < span, Duration::from_millis(100))
}

/// Sends one request per millisecond for as long as `go_on` holds for the time since the
/// start, then waits for the answers still due, until every request has one or `late` has
/// passed (on a busy machine an answer can come long after its round trip: late is not lost);
/// returns (requests sent, answers by element).
#[must_use]
pub fn exchange_while(
    sock: &UdpSocket,
    go_on: impl Fn(Duration) -> bool,
    late: Duration,
) -> (usize, std::collections::BTreeMap<String, usize>) {
    let mut buf = [0u8; 64];
    let mut got = std::collections::BTreeMap::new();
    let (start, mut sent, mut answered) = (Instant::now(), 0, 0);
    let mut next = start;
    // Set once the sending is over: until when late answers count.
    let mut end = None;
    loop {
        let now = Instant::now();
        match end {
            None if !go_on(now - start) => end = Some(now + late),
            Some(end) if now >= end || answered >= sent => break,
            _ => {}
        }
        if end.is_none() && now >= next {
            sock.send(b"ping").expect("send");
            sent += 1;
            next = (next + Duration::from_millis(1)).max(now);
        }
        if let Some(n) = recv_until(sock, &mut buf, end.unwrap_or(next)) {
            *got.entry(String::from_utf8_lossy(&buf[..n]).into_owned())
                .or_insert(0) += 1;
            answered += 1;
        }
    }
    (sent, got)
}

/// One answer per socket: the element that serves its flow.
#[must_use]
pub fn owners(socks: &[UdpSocket]) -> Vec<String> {
    socks
        .iter()
        .map(|s| {
            s.send(b"ping").expect("send");
            let mut buf = [0u8; 16];
            let n = s.recv(&mut buf).expect("answer");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .collect()
}
