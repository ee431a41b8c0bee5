//! A live status line on a terminal, as cargo and docker draw one: what runs now (each
//! platform's `go build`, each upload with its bytes and rate), redrawn a few times a second
//! under the log. Only on a terminal: a redirected log or an Actions log keeps one line per
//! step, and nothing here is ever written there.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(150);

static ENABLED: AtomicBool = AtomicBool::new(false);
static STATE: Mutex<State> = Mutex::new(State {
    tasks: Vec::new(),
    next: 0,
    drawn: false,
    width: 100,
});

struct State {
    tasks: Vec<Entry>,
    next: u64,
    /// Whether the status line is on the screen now, to be cleared before a log line.
    drawn: bool,
    width: usize,
}

struct Entry {
    id: u64,
    label: String,
    start: Instant,
    total: Option<u64>,
    done: Arc<AtomicU64>,
}

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Turns the status line on, `width` columns wide, and starts redrawing it. Call once, and
/// only when stderr is a terminal.
pub fn enable(width: usize) {
    state().width = width.max(20);
    if ENABLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("progress".into())
        .spawn(|| {
            loop {
                std::thread::sleep(TICK);
                let mut s = state();
                // Stopped by `finish`; a later `enable` starts a new thread.
                if !ENABLED.load(Ordering::SeqCst) {
                    return;
                }
                let line = render(&s, Instant::now());
                let mut err = std::io::stderr().lock();
                let _ = match &line {
                    Some(line) => write!(err, "\r\x1b[K{line}"),
                    None if s.drawn => write!(err, "\r\x1b[K"),
                    None => Ok(()),
                };
                let _ = err.flush();
                s.drawn = line.is_some();
            }
        });
}

/// Clears the status line and stops drawing it: before results go to stdout, which may be
/// the same terminal, and at exit.
pub fn finish() {
    if !ENABLED.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut s = state();
    if s.drawn {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
        s.drawn = false;
    }
}

/// The width of the terminal on stderr, if it is one.
#[allow(unsafe_code, reason = "TIOCGWINSZ has no safe wrapper in std")]
pub fn terminal_width() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct passed, which lives across the
    // call; fd 2 is not closed while kobuild runs.
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Something running, shown on the status line until dropped.
pub struct Task {
    id: Option<u64>,
    done: Arc<AtomicU64>,
}

impl Task {
    /// Bytes done so far, for a task given a size or moving bytes.
    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            state().tasks.retain(|t| t.id != id);
        }
    }
}

/// Shows `label` (and, with `total`, how much of it is done) while the task lives. Costs
/// nothing when the status line is off.
pub fn task(label: impl FnOnce() -> String, total: Option<u64>) -> Task {
    let done = Arc::new(AtomicU64::new(0));
    if !ENABLED.load(Ordering::Relaxed) {
        return Task { id: None, done };
    }
    let mut s = state();
    let id = s.next;
    s.next += 1;
    s.tasks.push(Entry {
        id,
        label: label(),
        start: Instant::now(),
        total,
        done: done.clone(),
    });
    Task { id: Some(id), done }
}

/// Runs `write` (a log line) with the status line cleared, so that it never mixes with the
/// log; the next tick draws it again below.
pub fn around_write<T>(write: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return write();
    }
    let mut s = state();
    if s.drawn {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        s.drawn = false;
    }
    write()
}

/// The status line: every task with its time, and its bytes and rate where it moves bytes,
/// cut to the terminal's width. `None` when nothing runs.
fn render(s: &State, now: Instant) -> Option<String> {
    if s.tasks.is_empty() {
        return None;
    }
    let mut line = String::new();
    for t in &s.tasks {
        if !line.is_empty() {
            line.push_str(" · ");
        }
        let secs = now.duration_since(t.start).as_secs_f64();
        let done = t.done.load(Ordering::Relaxed);
        let _ = write!(line, "{} {secs:.1}s", t.label);
        if done > 0 || t.total.is_some() {
            let _ = write!(line, " {}", mb(done));
            if let Some(total) = t.total {
                let _ = write!(line, "/{}", mb(total));
            }
            if secs > 0.0 {
                let _ = write!(line, " {}/s", mb((done as f64 / secs) as u64));
            }
        }
    }
    let shown: String = line.chars().take(s.width - 1).collect();
    Some(shown)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_each_task_with_time_bytes_and_rate() {
        let start = Instant::now();
        let done = Arc::new(AtomicU64::new(2_000_000));
        let s = State {
            tasks: vec![
                Entry {
                    id: 0,
                    label: "go build linux/amd64".into(),
                    start,
                    total: None,
                    done: Arc::new(AtomicU64::new(0)),
                },
                Entry {
                    id: 1,
                    label: "upload sha256:0123abcd".into(),
                    start,
                    total: Some(8_000_000),
                    done,
                },
            ],
            next: 2,
            drawn: false,
            width: 200,
        };
        let line = render(&s, start + Duration::from_secs(2)).unwrap();
        assert_eq!(
            line,
            "go build linux/amd64 2.0s · upload sha256:0123abcd 2.0s 2.0 MB/8.0 MB 1.0 MB/s"
        );
        let narrow = State { width: 20, ..s };
        assert_eq!(render(&narrow, start).unwrap().chars().count(), 19);
        let idle = State {
            tasks: Vec::new(),
            ..narrow
        };
        assert_eq!(render(&idle, start), None);
    }

    #[test]
    fn a_task_costs_nothing_while_off() {
        let t = task(|| unreachable!("not formatted while off"), None);
        t.add(5);
        assert!(t.id.is_none());
    }
}
