//! `vnfpool watch`: a live view of the daemon's pools over its control socket.
//!
//! What is shown is a pure function of two successive `Status` answers and the time between
//! them ([`view`]), drawn by [`render`] (a terminal, through ratatui) or [`plain`] (text lines,
//! when stdout is not a terminal). A thread asks the daemon every interval and hands each answer,
//! or the reason there was none, to the thread that draws; the daemon being unreachable is shown
//! and asked again at the next interval, never a reason to exit.

use std::{
    collections::HashMap,
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::mpsc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize as _},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row, Table, Wrap},
};
use tokio::time::Instant;

use crate::control::{self, Request, Response, Status};

/// How many failovers the screen lists, newest first.
const EVENTS: usize = 8;
/// How often the screen looks for a key press or an answer while it waits.
const POLL: Duration = Duration::from_millis(50);

/// Everything the screen shows of one answer, with packet rates against the answer before it.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub pools: Vec<PoolView>,
    /// Failovers of every pool, newest first, at most [`EVENTS`].
    pub events: Vec<EventView>,
}

/// One pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    pub name: String,
    /// `vip:port,port/protocol`.
    pub service: String,
    pub model: String,
    pub generation: u32,
    pub packets: u64,
    /// Packets per second to the VIP since the previous answer; `None` when unknown.
    pub rate: Option<f64>,
    pub policy_violations: u64,
    pub elements: Vec<ElementView>,
}

/// One element.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementView {
    pub name: String,
    pub address: String,
    pub role: String,
    pub health: String,
    pub packets: u64,
    /// Packets per second steered to it since the previous answer; `None` when unknown.
    pub rate: Option<f64>,
    /// For an active: its backup and why.
    pub backup: Option<String>,
    pub policy_violation: bool,
}

/// One failover.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    pub pool: String,
    pub element: String,
    pub reason: String,
    pub detection: Duration,
    pub switch: Duration,
    /// Seconds since the Unix epoch.
    pub at_unix: f64,
}

/// Packets per second between two counter readings `elapsed` apart; `None` without an earlier
/// reading, without time between them, or when the counter went back (a reset).
#[must_use]
pub fn rate(before: Option<u64>, now: u64, elapsed: Duration) -> Option<f64> {
    let delta = now.checked_sub(before?)?;
    if elapsed.is_zero() {
        return None;
    }
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    Some(delta as f64 / elapsed.as_secs_f64())
}

/// What the screen shows for `current`, with rates against `previous`, taken `elapsed` earlier.
/// Pools and elements are matched by name; one that was not in `previous` has no rate yet.
#[must_use]
pub fn view(previous: Option<&Status>, current: &Status, elapsed: Duration) -> View {
    let mut pool_before = HashMap::new();
    let mut element_before = HashMap::new();
    for p in previous.map(|s| s.pools.as_slice()).unwrap_or_default() {
        pool_before.insert(p.name.as_str(), p.packets);
        for e in &p.elements {
            element_before.insert((p.name.as_str(), e.name.as_str()), e.packets);
        }
    }
    let pools = current
        .pools
        .iter()
        .map(|p| {
            let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
            PoolView {
                name: p.name.clone(),
                service: format!("{}:{}/{}", p.vip, ports.join(","), p.protocol),
                model: p.model.clone(),
                generation: p.generation,
                packets: p.packets,
                rate: rate(pool_before.get(p.name.as_str()).copied(), p.packets, elapsed),
                policy_violations: p.policy_violations,
                elements: p
                    .elements
                    .iter()
                    .map(|e| ElementView {
                        name: e.name.clone(),
                        address: e.address.clone(),
                        role: e.role.clone(),
                        health: e.health.clone(),
                        packets: e.packets,
                        rate: rate(
                            element_before.get(&(p.name.as_str(), e.name.as_str())).copied(),
                            e.packets,
                            elapsed,
                        ),
                        backup: e.backup.clone(),
                        policy_violation: e.policy_violation,
                    })
                    .collect(),
            }
        })
        .collect();
    let mut events: Vec<EventView> = current
        .pools
        .iter()
        .flat_map(|p| {
            p.failovers.iter().map(|f| EventView {
                pool: p.name.clone(),
                element: f.element.clone(),
                reason: f.reason.clone(),
                detection: f.detection,
                switch: f.switch,
                at_unix: f.at_unix,
            })
        })
        .collect();
    events.sort_by(|a, b| b.at_unix.total_cmp(&a.at_unix));
    events.truncate(EVENTS);
    View { pools, events }
}

/// Whether the daemon answered the last time it was asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Not asked yet.
    Waiting,
    /// It answered at `at_unix`.
    Up { at_unix: f64 },
    /// No answer since `since_unix`; the last attempt failed with `error`.
    Down { error: String, since_unix: f64 },
}

/// The whole screen: where it asks, how often, the last answer, and whether the daemon answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Screen {
    pub socket: PathBuf,
    pub interval: Duration,
    pub link: Link,
    /// The view of the last answer; kept while the daemon is unreachable.
    pub view: Option<View>,
}

/// One answer (or failure to get one) from the thread that asks.
#[derive(Debug)]
pub struct Update {
    /// When it came, on the monotonic clock: rates are measured between these.
    pub at: Instant,
    pub at_unix: f64,
    pub result: Result<Status, String>,
}

/// The screen and the last answer its rates are measured against.
#[derive(Debug)]
pub struct Watcher {
    pub screen: Screen,
    last: Option<(Status, Instant)>,
}

impl Watcher {
    #[must_use]
    pub fn new(socket: PathBuf, interval: Duration) -> Self {
        Self {
            screen: Screen {
                socket,
                interval,
                link: Link::Waiting,
                view: None,
            },
            last: None,
        }
    }

    /// Takes in an answer, or the failure to get one.
    pub fn apply(&mut self, update: Update) {
        match update.result {
            Ok(status) => {
                let previous = self
                    .last
                    .as_ref()
                    .map(|(s, at)| (s, update.at.saturating_duration_since(*at)));
                self.screen.view = Some(view(
                    previous.map(|(s, _)| s),
                    &status,
                    previous.map(|(_, e)| e).unwrap_or_default(),
                ));
                self.screen.link = Link::Up {
                    at_unix: update.at_unix,
                };
                self.last = Some((status, update.at));
            }
            Err(error) => {
                let since_unix = match self.screen.link {
                    Link::Down { since_unix, .. } => since_unix,
                    _ => update.at_unix,
                };
                self.screen.link = Link::Down { error, since_unix };
            }
        }
    }
}

/// `HH:MM:SS` of a Unix time, UTC.
#[must_use]
pub fn clock(at_unix: f64) -> String {
    let s = Duration::try_from_secs_f64(at_unix).unwrap_or_default().as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A rate as the screen shows it: `-` when unknown, one decimal below 10.
#[must_use]
pub fn format_rate(rate: Option<f64>) -> String {
    match rate {
        None => "-".to_owned(),
        Some(r) if r < 10.0 => format!("{r:.1}"),
        Some(r) => format!("{r:.0}"),
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn humantime_interval(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The line that says whether the daemon answers, and its style.
fn link_line(screen: &Screen) -> (String, Style) {
    match &screen.link {
        Link::Waiting => (
            format!("asking the daemon at {}…", screen.socket.display()),
            Style::new().fg(Color::Yellow),
        ),
        Link::Up { at_unix } => {
            let (pools, elements) = screen.view.as_ref().map_or((0, 0), |v| {
                (
                    v.pools.len(),
                    v.pools.iter().map(|p| p.elements.len()).sum::<usize>(),
                )
            });
            (
                format!(
                    "connected: pools {pools}, elements {elements}; last answer {} UTC",
                    clock(*at_unix)
                ),
                Style::new().fg(Color::Green),
            )
        }
        Link::Down { error, since_unix } => (
            format!(
                "DAEMON UNREACHABLE since {} UTC, retrying every {}{}: {error}",
                clock(*since_unix),
                humantime_interval(screen.interval),
                if screen.view.is_some() {
                    " (below: its last answer)"
                } else {
                    ""
                }
            ),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
    }
}

fn role_style(role: &str) -> Style {
    match role {
        "active" => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        "standby" => Style::new().fg(Color::Cyan),
        "draining" => Style::new().fg(Color::Yellow),
        "out" => Style::new().fg(Color::Red),
        _ => Style::new(),
    }
}

fn health_style(health: &str) -> Style {
    match health {
        "up" => Style::new().fg(Color::Green),
        "down" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        _ => Style::new().fg(Color::DarkGray),
    }
}

fn length(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Draws the screen into `frame`: a title, the link line, a table per pool, the failovers.
pub fn render(frame: &mut Frame, screen: &Screen) {
    let pools = screen
        .view
        .as_ref()
        .map(|v| v.pools.as_slice())
        .unwrap_or_default();
    // The link line may wrap once: an unreachable daemon's error is long.
    let link_lines = if matches!(screen.link, Link::Down { .. }) {
        2
    } else {
        1
    };
    let mut rows = vec![Constraint::Length(1), Constraint::Length(link_lines)];
    rows.extend(
        pools
            .iter()
            .map(|p| Constraint::Length(length(p.elements.len()).saturating_add(3))),
    );
    rows.push(Constraint::Min(3));
    let areas = Layout::vertical(rows).split(frame.area());

    let title = Line::from(vec![
        Span::styled("vnfpool watch", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {}  every {}  q: quit",
            screen.socket.display(),
            humantime_interval(screen.interval)
        )),
    ]);
    frame.render_widget(Paragraph::new(title), areas[0]);
    let (text, style) = link_line(screen);
    frame.render_widget(
        Paragraph::new(Line::styled(text, style)).wrap(Wrap { trim: true }),
        areas[1],
    );

    for (pool, &area) in pools.iter().zip(&areas[2..]) {
        render_pool(frame, pool, area);
    }
    let events = screen
        .view
        .as_ref()
        .map(|v| v.events.as_slice())
        .unwrap_or_default();
    render_events(frame, events, areas[areas.len() - 1]);
}

fn render_pool(frame: &mut Frame, pool: &PoolView, area: Rect) {
    let violations = if pool.policy_violations > 0 {
        format!(" policy violations {} ", pool.policy_violations)
    } else {
        String::new()
    };
    let title = format!(
        " pool {}  {}  {}  generation {}  {} pkt/s {violations}",
        pool.name,
        pool.service,
        pool.model,
        pool.generation,
        format_rate(pool.rate)
    );
    let name_width = pool
        .elements
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let address_width = pool
        .elements
        .iter()
        .map(|e| e.address.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let header = Row::new([
        Cell::from("ELEMENT"),
        Cell::from("ADDRESS"),
        Cell::from("ROLE"),
        Cell::from("HEALTH"),
        Cell::from(Line::from("PKT/S").right_aligned()),
        Cell::from(Line::from("PACKETS").right_aligned()),
        Cell::from("BACKUP"),
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = pool.elements.iter().map(|e| {
        let backup = match (&e.backup, e.policy_violation) {
            (Some(b), true) => Cell::from(format!("{b}  POLICY VIOLATION")).red(),
            (Some(b), false) => Cell::from(b.clone()),
            (None, _) => Cell::from(""),
        };
        Row::new(vec![
            Cell::from(e.name.clone()),
            Cell::from(e.address.clone()),
            Cell::from(e.role.clone()).style(role_style(&e.role)),
            Cell::from(e.health.clone()).style(health_style(&e.health)),
            Cell::from(Line::from(format_rate(e.rate)).right_aligned()),
            Cell::from(Line::from(e.packets.to_string()).right_aligned()),
            backup,
        ])
    });
    let widths = [
        Constraint::Length(length(name_width)),
        Constraint::Length(length(address_width)),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(2)
        .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

fn render_events(frame: &mut Frame, events: &[EventView], area: Rect) {
    let header = Row::new([
        Cell::from("TIME (UTC)"),
        Cell::from("POOL"),
        Cell::from("ELEMENT"),
        Cell::from("REASON"),
        Cell::from(Line::from("DETECTION").right_aligned()),
        Cell::from(Line::from("SWITCH").right_aligned()),
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = events.iter().map(|f| {
        Row::new(vec![
            Cell::from(clock(f.at_unix)),
            Cell::from(f.pool.clone()),
            Cell::from(f.element.clone()),
            Cell::from(f.reason.clone()),
            Cell::from(Line::from(format!("{:.1} ms", millis(f.detection))).right_aligned()),
            Cell::from(Line::from(format!("{:.3} ms", millis(f.switch))).right_aligned()),
        ])
    });
    let widths = [
        Constraint::Length(10),
        Constraint::Length(16),
        Constraint::Length(16),
        Constraint::Length(14),
        Constraint::Length(11),
        Constraint::Length(11),
    ];
    let title = if events.is_empty() {
        " recent failovers: none "
    } else {
        " recent failovers, newest first "
    };
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(2)
        .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

/// The screen as text lines, for a stdout that is not a terminal: the time and the link, then
/// per pool a line, a line per element with its rate, and its failovers, newest first.
#[must_use]
pub fn plain(screen: &Screen) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (link, _) = link_line(screen);
    let _ = writeln!(out, "--- {link}");
    if matches!(screen.link, Link::Down { .. }) {
        // The last answer was printed when it came.
        return out;
    }
    let Some(view) = &screen.view else {
        return out;
    };
    for p in &view.pools {
        let _ = writeln!(
            out,
            "pool {}  {}  {}  generation {}  {} pkt/s  {} packets",
            p.name,
            p.service,
            p.model,
            p.generation,
            format_rate(p.rate),
            p.packets
        );
        for e in &p.elements {
            let backup = e.backup.as_ref().map_or_else(String::new, |b| {
                let flag = if e.policy_violation {
                    "  POLICY VIOLATION"
                } else {
                    ""
                };
                format!("  backup {b}{flag}")
            });
            let _ = writeln!(
                out,
                "  {:<16} {:<39} {:<8} {:<7} {:>10} pkt/s {:>12} packets{backup}",
                e.name,
                e.address,
                e.role,
                e.health,
                format_rate(e.rate),
                e.packets
            );
        }
    }
    for f in &view.events {
        let _ = writeln!(
            out,
            "failover {} UTC  {} {} {}  detection {:.1} ms, switch {:.3} ms",
            clock(f.at_unix),
            f.pool,
            f.element,
            f.reason,
            millis(f.detection),
            millis(f.switch)
        );
    }
    out
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Asks for the status once; an answer that takes longer than `patience` counts as none.
async fn ask(socket: &Path, patience: Duration) -> Result<Status, String> {
    match tokio::time::timeout(patience, control::request(socket, &Request::Status)).await {
        Err(_) => Err(format!("no answer within {}", humantime_interval(patience))),
        Ok(Err(e)) => Err(format!("{:#}", anyhow::Error::from(e))),
        Ok(Ok(Response::Status(status))) => Ok(status),
        Ok(Ok(Response::Error { message })) => Err(message),
        Ok(Ok(other)) => Err(format!("unexpected answer: {other:?}")),
    }
}

/// Asks the daemon every `interval` and sends each outcome, until the receiver is gone.
async fn ask_every(socket: PathBuf, interval: Duration, to: mpsc::Sender<Update>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let patience = interval.max(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let result = ask(&socket, patience).await;
        let update = Update {
            at: Instant::now(),
            at_unix: now_unix(),
            result,
        };
        if to.send(update).is_err() {
            return;
        }
    }
}

/// Waits for a signal; forever if it could not be registered (it then keeps its default
/// action, which ends the process).
async fn signalled(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// On SIGINT, SIGTERM or SIGHUP: leaves the screen (`on_terminal`) and exits with 128 + the
/// signal's number. This runs on the asking thread, not the drawing one, because the drawing
/// one may never come back: when the terminal hangs up (its window closed, tmux killed),
/// crossterm 0.29 reads it again and again inside `event::poll`, getting zero bytes each time.
async fn exit_on_signal(on_terminal: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut hangup = signal(SignalKind::hangup()).ok();
    let code = tokio::select! {
        () = signalled(&mut interrupt) => 130,
        () = signalled(&mut terminate) => 143,
        // No terminal to restore.
        () = signalled(&mut hangup) => std::process::exit(129),
    };
    if on_terminal {
        // Nothing to report it on if this fails.
        let _ = ratatui::try_restore();
    }
    std::process::exit(code);
}

/// Starts the thread that asks the daemon and handles the signals that end the watch.
fn spawn_asker(
    socket: PathBuf,
    interval: Duration,
    on_terminal: bool,
) -> std::io::Result<mpsc::Receiver<Update>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("vnfpool-watch".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(exit_on_signal(on_terminal));
                ask_every(socket, interval, tx).await;
            });
        })?;
    Ok(rx)
}

/// Runs `vnfpool watch`: a live screen on a terminal, text lines otherwise.
#[must_use]
pub fn run(socket: PathBuf, interval: Duration) -> ExitCode {
    let on_terminal = std::io::stdout().is_terminal();
    let updates = match spawn_asker(socket.clone(), interval, on_terminal) {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("vnfpool: starting the watch: {e}");
            return ExitCode::FAILURE;
        }
    };
    let watcher = Watcher::new(socket, interval);
    let result = if on_terminal {
        run_terminal(watcher, &updates)
    } else {
        run_plain(watcher, &updates)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `vnfpool watch | head`: the reader is gone, which is how a pipe ends.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnfpool: watch: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_plain(mut watcher: Watcher, updates: &mpsc::Receiver<Update>) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    for update in updates {
        watcher.apply(update);
        let mut out = stdout.lock();
        out.write_all(plain(&watcher.screen).as_bytes())?;
        out.flush()?;
    }
    Err(std::io::Error::other("the thread asking the daemon stopped"))
}

/// Leaves raw mode and the alternate screen however the screen ends (`ratatui::try_init` also
/// installs a panic hook that does so before the panic message is printed).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        // Nothing to report it on if this fails.
        let _ = ratatui::try_restore();
    }
}

fn is_quit(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && (matches!(key.code, KeyCode::Char('q' | 'Q'))
            || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)))
}

fn run_terminal(mut watcher: Watcher, updates: &mpsc::Receiver<Update>) -> std::io::Result<()> {
    let _restore = Restore;
    let mut terminal = ratatui::try_init()?;
    let mut dirty = true;
    loop {
        if dirty {
            terminal.draw(|frame| render(frame, &watcher.screen))?;
            dirty = false;
        }
        if event::poll(POLL)? {
            match event::read()? {
                Event::Key(key) if is_quit(&key) => return Ok(()),
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        loop {
            match updates.try_recv() {
                Ok(update) => {
                    watcher.apply(update);
                    dirty = true;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(std::io::Error::other("the thread asking the daemon stopped"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::control::{ElementStatus, FailoverStatus, PoolStatus};

    fn element(name: &str, role: &str, health: &str, packets: u64, backup: Option<&str>) -> ElementStatus {
        ElementStatus {
            name: name.into(),
            address: format!("10.10.1.1{}", &name[1..]),
            role: role.into(),
            health: health.into(),
            packets,
            bytes: packets * 100,
            backup: backup.map(Into::into),
            policy_violation: false,
            paths: Vec::new(),
        }
    }

    fn pool(elements: Vec<ElementStatus>, failovers: Vec<FailoverStatus>) -> Status {
        let packets = elements.iter().map(|e| e.packets).sum();
        Status {
            pools: vec![PoolStatus {
                name: "dns".into(),
                vip: "10.10.0.100".into(),
                ports: vec![53, 5353],
                protocol: "udp".into(),
                model: "active-standby".into(),
                generation: 4,
                packets,
                bytes: packets * 100,
                elements,
                failovers,
                budget: None,
                policy_violations: 0,
            }],
            heartbeats: None,
            cluster: None,
            flow_sync: None,
        }
    }

    fn failover(element: &str, at_unix: f64) -> FailoverStatus {
        FailoverStatus {
            element: element.into(),
            reason: "ProbeFailure".into(),
            detection: Duration::from_micros(19_900),
            switch: Duration::from_micros(950),
            at_unix,
        }
    }

    /// e1 carried 1000 packets in half a second before it failed; e2 took over and carried 250.
    fn before_and_after() -> (Status, Status) {
        let before = pool(
            vec![
                element(
                    "e1",
                    "active",
                    "up",
                    5000,
                    Some("e2: no shared risk, site cost 3"),
                ),
                element("e2", "standby", "up", 0, None),
                element("e3", "standby", "up", 0, None),
            ],
            vec![],
        );
        let after = pool(
            vec![
                element("e1", "out", "down", 6000, None),
                element(
                    "e2",
                    "active",
                    "up",
                    250,
                    Some("e3: no shared risk, site cost unknown"),
                ),
                element("e3", "standby", "up", 0, None),
            ],
            // 2026-01-01 12:34:56 UTC
            vec![failover("e1", 1_767_270_896.25)],
        );
        (before, after)
    }

    #[test]
    fn rates_are_deltas_over_the_time_between_answers() {
        assert_eq!(rate(Some(1000), 1500, Duration::from_millis(500)), Some(1000.0));
        assert_eq!(
            rate(None, 1500, Duration::from_millis(500)),
            None,
            "no earlier answer"
        );
        assert_eq!(rate(Some(1000), 1500, Duration::ZERO), None, "no time between");
        assert_eq!(
            rate(Some(1500), 10, Duration::from_secs(1)),
            None,
            "a counter reset"
        );
        assert_eq!(rate(Some(7), 7, Duration::from_secs(1)), Some(0.0));
    }

    #[test]
    fn the_view_matches_elements_by_name_and_lists_failovers_newest_first() {
        let (before, mut after) = before_and_after();
        after.pools[0]
            .failovers
            .insert(0, failover("e3", 1_767_270_000.0));
        after.pools[0]
            .elements
            .push(element("e4", "standby", "unknown", 9, None));
        let v = view(Some(&before), &after, Duration::from_millis(500));
        let p = &v.pools[0];
        assert_eq!(p.service, "10.10.0.100:53,5353/udp");
        let rates: Vec<(&str, Option<f64>)> = p.elements.iter().map(|e| (e.name.as_str(), e.rate)).collect();
        assert_eq!(
            rates,
            [
                ("e1", Some(2000.0)),
                ("e2", Some(500.0)),
                ("e3", Some(0.0)),
                ("e4", None)
            ]
        );
        assert_eq!(p.rate, Some((6250.0 - 5000.0) / 0.5));
        let events: Vec<&str> = v.events.iter().map(|e| e.element.as_str()).collect();
        assert_eq!(events, ["e1", "e3"]);
        // The first answer has no rates.
        assert!(
            view(None, &after, Duration::ZERO).pools[0]
                .elements
                .iter()
                .all(|e| e.rate.is_none())
        );
    }

    #[test]
    fn an_unreachable_daemon_is_said_and_its_last_answer_kept() {
        let (before, _) = before_and_after();
        let mut w = Watcher::new("/run/x.sock".into(), Duration::from_secs(1));
        let t0 = Instant::now();
        w.apply(Update {
            at: t0,
            at_unix: 100.0,
            result: Ok(before),
        });
        for at_unix in [101.0, 102.0] {
            w.apply(Update {
                at: t0,
                at_unix,
                result: Err("connection refused".into()),
            });
        }
        assert_eq!(
            w.screen.link,
            Link::Down {
                error: "connection refused".into(),
                since_unix: 101.0
            },
            "down since the first failure"
        );
        assert!(w.screen.view.is_some());
        let text = plain(&w.screen);
        assert!(
            text.starts_with(
                "--- DAEMON UNREACHABLE since 00:01:41 UTC, retrying every 1s (below: its last answer): \
                 connection refused"
            ),
            "{text}"
        );
    }

    #[test]
    fn plain_lines_have_a_rate_column() {
        let (before, after) = before_and_after();
        let screen = Screen {
            socket: "/run/x.sock".into(),
            interval: Duration::from_secs(1),
            link: Link::Up { at_unix: 45_296.0 },
            view: Some(view(Some(&before), &after, Duration::from_millis(500))),
        };
        let text = plain(&screen);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "--- connected: pools 1, elements 3; last answer 12:34:56 UTC"
        );
        assert_eq!(
            lines[1],
            "pool dns  10.10.0.100:53,5353/udp  active-standby  generation 4  2500 pkt/s  6250 packets"
        );
        assert!(
            lines[2].starts_with("  e1 ") && lines[2].contains(" out ") && lines[2].contains(" 2000 pkt/s ")
        );
        assert!(
            lines[3].contains(" active ")
                && lines[3].contains(" 500 pkt/s ")
                && lines[3].ends_with("250 packets  backup e3: no shared risk, site cost unknown"),
            "{}",
            lines[3]
        );
        assert_eq!(
            lines[5],
            "failover 12:34:56 UTC  dns e1 ProbeFailure  detection 19.9 ms, switch 0.950 ms"
        );
    }

    fn text(backend: &TestBackend) -> Vec<String> {
        let buffer = backend.buffer();
        let width = buffer.area.width as usize;
        buffer
            .content
            .chunks(width)
            .map(|row| row.iter().map(ratatui::buffer::Cell::symbol).collect::<String>())
            .collect()
    }

    #[test]
    fn the_screen_shows_roles_rates_backups_and_failovers() {
        let (before, after) = before_and_after();
        let screen = Screen {
            socket: "/run/vnfpool/vnfpool.sock".into(),
            interval: Duration::from_secs(1),
            link: Link::Up { at_unix: 45_297.0 },
            view: Some(view(Some(&before), &after, Duration::from_millis(500))),
        };
        let mut terminal = Terminal::new(TestBackend::new(110, 14)).expect("terminal");
        terminal.draw(|f| render(f, &screen)).expect("draw");
        let lines = text(terminal.backend());
        let expected = [
            "vnfpool watch  /run/vnfpool/vnfpool.sock  every 1s  q: quit",
            "connected: pools 1, elements 3; last answer 12:34:57 UTC",
            "┌ pool dns  10.10.0.100:53,5353/udp  active-standby  generation 4  2500 pkt/s ───────────────────────────────┐",
            "│ELEMENT  ADDRESS     ROLE      HEALTH        PKT/S       PACKETS  BACKUP                                    │",
            "│e1       10.10.1.11  out       down           2000          6000                                            │",
            "│e2       10.10.1.12  active    up              500           250  e3: no shared risk, site cost unknown     │",
            "│e3       10.10.1.13  standby   up              0.0             0                                            │",
            "└────────────────────────────────────────────────────────────────────────────────────────────────────────────┘",
            "┌ recent failovers, newest first ────────────────────────────────────────────────────────────────────────────┐",
            "│TIME (UTC)  POOL              ELEMENT           REASON            DETECTION       SWITCH                    │",
            "│12:34:56    dns               e1                ProbeFailure        19.9 ms     0.950 ms                    │",
            "│                                                                                                            │",
            "│                                                                                                            │",
            "└────────────────────────────────────────────────────────────────────────────────────────────────────────────┘",
        ];
        for (got, want) in lines.iter().zip(expected) {
            assert_eq!(got.trim_end(), want.trim_end(), "\n{}", lines.join("\n"));
        }
        let active = &terminal.backend().buffer()[(22, 5)];
        assert_eq!(
            (active.symbol(), active.fg),
            ("a", Color::Green),
            "the active stands out"
        );
    }

    #[test]
    fn the_screen_says_when_the_daemon_is_unreachable() {
        let screen = Screen {
            socket: "/run/x.sock".into(),
            interval: Duration::from_millis(500),
            link: Link::Down {
                error: "control socket /run/x.sock: connecting (is the daemon running?)".into(),
                since_unix: 45_296.0,
            },
            view: None,
        };
        let mut terminal = Terminal::new(TestBackend::new(80, 8)).expect("terminal");
        terminal.draw(|f| render(f, &screen)).expect("draw");
        let lines = text(terminal.backend());
        // Wrapped over two lines, the state first.
        assert_eq!(
            lines[1].trim_end(),
            "DAEMON UNREACHABLE since 12:34:56 UTC, retrying every 500ms: control socket",
            "\n{}",
            lines.join("\n")
        );
        assert_eq!(
            lines[2].trim_end(),
            "/run/x.sock: connecting (is the daemon running?)"
        );
        assert!(lines[3].starts_with("┌ recent failovers: none"), "{}", lines[3]);
        assert_eq!(
            terminal.backend().buffer()[(0, 1)].fg,
            Color::Red,
            "the line stands out"
        );
    }
}
