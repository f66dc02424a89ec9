//! Peer processes (reference agents, third-party client drivers) that print one JSON event per
//! line on stdout. Tests wait for events with a deadline; the process is stopped on drop.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Peer {
    name: String,
    child: Child,
    events: mpsc::Receiver<Value>,
    /// Every event seen so far, in order.
    pub seen: Vec<Value>,
}

impl Peer {
    pub fn spawn(name: &str, mut command: Command) -> Peer {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = mpsc::channel();
        let label = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(event) => {
                        if tx.send(event).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("[{label}] {line}"),
                }
            }
        });
        Peer {
            name: name.to_owned(),
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// The next event for which `want` holds, waiting at most `deadline`.
    pub fn wait_for(
        &mut self,
        deadline: Duration,
        what: &str,
        want: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if want(&event) {
                        return event;
                    }
                }
                Err(_) => panic!(
                    "{}: no {what} within {deadline:?}; events so far: {:#?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// The next event named `event`.
    pub fn wait_event(&mut self, deadline: Duration, event: &str) -> Value {
        self.wait_for(deadline, event, |e| e["event"] == event)
    }

    /// Events received so far without waiting.
    pub fn drain(&mut self) -> &[Value] {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        &self.seen
    }

    /// SIGTERM, then wait (SIGKILL after a bound).
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}
